"""OME-Zarr pyramids (bigvolume.ops.pyramid, `bigvolume pyramid`): valid OME-Zarr 0.5 and 0.4 read back by zarr and
ngff-zarr; each level's grid and metadata coherent; level 0 the input bit for bit, level 1 `resample` of the input,
deeper levels `resample` of the level before; the same bytes on a 2-process LocalCluster; kill -9 then --resume
gives the same pyramid; Ctrl-C leaves nothing; refusals touch nothing."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("dask")

import bigvolume as bv  # noqa: E402
from bigvolume.io.ome_zarr import level_geometry, parse_multiscales, read_attributes  # noqa: E402
from bigvolume.ops.pyramid import ANISOTROPY, RECORDS, plan_levels, pyramid  # noqa: E402
from bigvolume.testing import quality  # noqa: E402
from test_stacks import write_stack  # noqa: E402

BIGVOLUME = [sys.executable, "-m", "bigvolume"]
ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, **kwargs):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    return subprocess.run(BIGVOLUME + [str(a) for a in args], capture_output=True, text=True, env=environment,
                          **kwargs)


def smooth_volume(shape, dtype=np.uint16, seed=0):
    """A volume with structure at every scale (noise on a smooth field), in ``dtype``'s range."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(0, 6, n) for n in shape], indexing="ij")
    field = np.sin(x * 1.3 + y) * np.cos(z * 0.7 - y * 0.4) + 0.3 * rng.standard_normal(shape)
    if np.dtype(dtype).kind == "f":
        return (100.0 * field).astype(dtype)
    return np.clip(20000 + 9000 * field, 0, 65535).astype(dtype)


def write_input(folder: Path, array, spacing=(0.3, 0.3, 0.9), origin=(-12.5, 40.25, 7.0), direction=None,
                name="in.nrrd"):
    volume = bv.Volume(array, bv.Geometry(array.shape[::-1], spacing, origin,
                                          np.eye(3) if direction is None else direction))
    bv.write_volume(volume, folder / name)
    return folder / name


def levels_of(store: Path):
    root = zarr.open_group(str(store), mode="r")
    layout = parse_multiscales(read_attributes(store), store)
    arrays = [root[path] for path in layout.paths]
    return layout, arrays


def read_nrrd(path):
    return bv.read_volume(path)


# --- the plan --------------------------------------------------------------------------------------------------------

def test_levels_halve_every_axis_until_one_chunk():
    steps = plan_levels((1000, 600, 300), (1.0, 1.0, 1.0), chunks=128)
    assert steps == [(2.0, 2.0, 2.0)] * 3  # 1000 -> 500 -> 250 -> 125 fits 128
    assert plan_levels((100, 100, 100), (1.0, 1.0, 1.0), chunks=128) == []
    assert len(plan_levels((1000, 600, 300), (1.0, 1.0, 1.0), chunks=128, levels=2)) == 1
    # a single-voxel axis is never reduced
    assert all(step[2] == 1.0 for step in plan_levels((512, 512, 1), (1.0, 1.0, 1.0), chunks=64))


def test_a_coarse_axis_waits_until_the_others_catch_up():
    steps = plan_levels((1024, 1024, 256), (0.25, 0.25, 1.0), chunks=64)
    assert steps[:3] == [(2.0, 2.0, 1.0), (2.0, 2.0, 1.0), (2.0, 2.0, 2.0)]
    spacing = np.array([0.25, 0.25, 1.0])
    for step in steps:
        spacing = spacing * step
        assert spacing.max() / spacing.min() < 2 * ANISOTROPY


# --- the pyramid -----------------------------------------------------------------------------------------------------

SHAPES = [(37, 70, 101), (64, 64, 64), (21, 45, 33)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_anisotropic_uint16_levels_are_coherent_and_equal_resample(tmp_path, shape):
    array = smooth_volume(shape)
    source = write_input(tmp_path, array)
    geometry = bv.read_geometry(source)[0]
    report = pyramid(source, tmp_path / "out.ome.zarr", chunks=16)
    layout, arrays = levels_of(tmp_path / "out.ome.zarr")
    assert len(arrays) == len(report.levels) >= 3
    assert layout.unit == "millimeter" and layout.version == "0.5"
    np.testing.assert_array_equal(arrays[0][:], array)  # level 0: the input, bit for bit
    factors, expected = np.ones(3), geometry
    for n, level in enumerate(report.levels):
        data = arrays[n][:]
        if n:  # each level is the block-centred grid of its step on the level before
            factors = factors * np.asarray(level.step)
            expected = expected.downsampled(level.step)
        back = level_geometry(layout, n, data.shape)
        assert back.isclose(expected, rtol=1e-9, atol=1e-9), (n, back, expected)
        assert back.dimensions == expected.dimensions
        # which is scale = s0 f, translation = t0 + s0 (f - 1) / 2 with the cumulative factor f
        spacing0, origin0 = np.asarray(geometry.spacing), np.asarray(geometry.origin)
        np.testing.assert_allclose(layout.scales[n][::-1], spacing0 * factors, rtol=1e-12)
        np.testing.assert_allclose(layout.translations[n][::-1], origin0 + spacing0 * (factors - 1) / 2, atol=1e-9)
        assert layout.factors[n] == pytest.approx(tuple(factors))
        assert arrays[n].chunks == tuple(min(16, s) for s in data.shape)
        if n == 0:
            continue
        # level 1 is `bigvolume resample` of the input; level n resample of level n-1 (the metadata says so)
        assert layout.sources[n] == str(n - 1)
        previous = source if n == 1 else tmp_path / f"level{n - 1}.nrrd"
        if n > 1:
            bv.write_volume(bv.Volume.from_array(arrays[n - 1][:]), previous)
        bv.resample_file(previous, tmp_path / "ref.nrrd", tuple(level.step), stream=True)
        reference = read_nrrd(tmp_path / "ref.nrrd").array
        assert reference.shape == data.shape
        assert np.abs(reference.astype(np.int64) - data).max() <= 1, n
    assert read_attributes(tmp_path / "out.ome.zarr")["bigvolume"]["all_chunks_written"] is True


def test_float_input_level_one_within_1e4_of_the_range(tmp_path):
    array = smooth_volume((40, 52, 66), np.float32)
    source = write_input(tmp_path, array, spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0))
    report = pyramid(source, tmp_path / "f.ome.zarr", chunks=16, ome_zarr_version="0.4")
    _, arrays = levels_of(tmp_path / "f.ome.zarr")
    np.testing.assert_array_equal(arrays[0][:], array)
    reference = bv.downsample_array(array, report.levels[1].step)
    tolerance = 1e-4 * float(array.max() - array.min())
    assert np.abs(arrays[1][:] - reference).max() <= tolerance


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_valid_ome_zarr_read_back_by_ngff_zarr(tmp_path, version):
    ngff_zarr = pytest.importorskip("ngff_zarr")
    array = smooth_volume((30, 41, 57))
    source = write_input(tmp_path, array)
    store = tmp_path / "v.ome.zarr"
    report = pyramid(source, store, chunks=16, ome_zarr_version=version)
    root = zarr.open_group(str(store), mode="r")
    assert root.metadata.zarr_format == (3 if version == "0.5" else 2)
    if version == "0.5":
        from ome_zarr_models.v05.image import Image
        assert (store / "0" / "zarr.json").is_file()
        assert json.loads((store / "0" / "zarr.json").read_text())["dimension_names"] == ["z", "y", "x"]
    else:
        from ome_zarr_models.v04.image import Image
        assert (store / "0" / "0" / "0" / "0").is_file()  # "/" separated chunk keys
    Image.from_zarr(root)  # raises on invalid metadata
    multiscales = ngff_zarr.from_ngff_zarr(str(store))
    assert len(multiscales.images) == len(report.levels)
    for image, level in zip(multiscales.images, report.levels):
        geometry = level.geometry
        assert image.scale == pytest.approx(dict(zip("zyx", geometry.spacing[::-1])))
        assert image.translation == pytest.approx(dict(zip("zyx", geometry.origin[::-1])))
        assert tuple(image.data.shape) == geometry.shape
    np.testing.assert_array_equal(np.asarray(multiscales.images[0].data), array)


def test_direction_kept_and_every_chunk_written(tmp_path):
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    array = np.zeros((20, 40, 40), np.uint16)  # all zeros: chunks must be written anyway
    source = write_input(tmp_path, array, direction=direction)
    report = pyramid(source, tmp_path / "d.ome.zarr", chunks=8)
    layout, arrays = levels_of(tmp_path / "d.ome.zarr")
    np.testing.assert_allclose(layout.direction, direction)
    for n, level in enumerate(report.levels):
        assert level_geometry(layout, n, arrays[n].shape).isclose(level.geometry)
        grid = [-(-s // c) for s, c in zip(arrays[n].shape, arrays[n].chunks)]
        files = list((tmp_path / "d.ome.zarr" / str(n) / "c").rglob("*"))
        assert sum(f.is_file() for f in files) == int(np.prod(grid))


@pytest.mark.parametrize("size", [128, 200])
def test_zone_plate_levels_score_30_db_against_the_ideal(tmp_path, size):
    """The isotropic x2 and x4 levels (x4 cascaded from x2) of the seed zone plate, in uint16, at least 30 dB
    against the ideal band limit (ngff-zarr: 17.9 and 24.5 dB): the default Lanczos holds 8 lobes at x2."""
    array = np.rint(quality.zone_plate(size) * 30000 + 32768).astype(np.uint16)
    source = write_input(tmp_path, array, spacing=(1.0, 1.0, 1.0))
    pyramid(source, tmp_path / "zp.ome.zarr", chunks=size // 4, levels=3)
    _, levels = levels_of(tmp_path / "zp.ome.zarr")
    for number, factor in ((1, 2), (2, 4)):
        assert quality.psnr(levels[number][:], quality.ideal_downsample(array.astype(np.float32), factor)) >= 30.0


def test_shards_hold_the_same_data(tmp_path):
    array = smooth_volume((45, 50, 70))
    source = write_input(tmp_path, array)
    plain = pyramid(source, tmp_path / "plain.ome.zarr", chunks=8)
    pyramid(source, tmp_path / "shard.ome.zarr", chunks=8, shard=2)
    _, a = levels_of(tmp_path / "plain.ome.zarr")
    _, b = levels_of(tmp_path / "shard.ome.zarr")
    for n in range(len(plain.levels)):
        assert b[n].chunks == a[n].chunks
        if any(size > chunk for size, chunk in zip(b[n].shape, b[n].chunks)):  # else one chunk: no shard
            assert b[n].shards == tuple(min(2 * c, -(-s // c) * c) for s, c in zip(b[n].shape, b[n].chunks))
        # Shards make larger tasks, so Lanczos blocks are products of other matrix shapes: equal to float rounding
        # (bigvolume.engine.stream), integers within 1 (level 0 is copied: exact).
        difference = np.abs(a[n][:].astype(np.int64) - b[n][:].astype(np.int64))
        assert difference.max() <= (0 if n == 0 else 1)


def test_a_stack_of_slices_in_micrometres(tmp_path):
    array = smooth_volume((24, 33, 47))
    write_stack(tmp_path / "stack", array, name="s_{:03d}.tif", first=0)
    code = run_cli("pyramid", tmp_path / "stack", tmp_path / "s.ome.zarr", "--chunks", "16", "--spacing", "0.5",
                   "0.5", "2", "--origin", "1", "2", "3", "--quiet")
    assert code.returncode == 0, code.stderr
    layout, arrays = levels_of(tmp_path / "s.ome.zarr")
    assert layout.unit == "micrometer"
    np.testing.assert_array_equal(arrays[0][:], array)
    assert layout.scales[0] == (2.0, 0.5, 0.5) and layout.translations[0] == (3.0, 2.0, 1.0)



@pytest.mark.parametrize("unit, scale", [(None, 10.0), ("millimeter", 0.01), ("nanometer", 10000.0)])
def test_a_stack_calibrated_in_its_headers_is_written_in_the_unit_it_names(tmp_path, unit, scale):
    """TIFF resolution (1000 pixels per cm) gives SimpleITK's pixel size in millimetres (0.01): written as 10 in
    micrometres (the stacks' default unit), not as 0.01 micrometres (1000 times too small, as it was)."""
    tifffile = pytest.importorskip("tifffile")
    array = smooth_volume((6, 30, 40))
    (tmp_path / "stack").mkdir()
    for k in range(array.shape[0]):
        tifffile.imwrite(tmp_path / "stack" / f"s_{k}.tif", array[k], resolution=(1000, 1000),
                         resolutionunit="CENTIMETER")
    bv.pyramid(tmp_path / "stack", tmp_path / "s.ome.zarr", chunks=8, levels=2, unit=unit)
    layout, arrays = levels_of(tmp_path / "s.ome.zarr")
    assert layout.unit == (unit or "micrometer")
    assert layout.scales[0] == pytest.approx((scale,) * 3, rel=1e-9)
    assert bv.read_volume(tmp_path / "s.ome.zarr").geometry.spacing == pytest.approx((0.01,) * 3, rel=1e-9)
    imported = bv.import_stack(tmp_path / "stack", tmp_path / "s.nrrd").output_path
    assert bv.read_volume(imported).geometry.isclose(bv.read_volume(tmp_path / "s.ome.zarr").geometry)

def all_levels(store):
    _, arrays = levels_of(store)
    return [a[:] for a in arrays]


def test_a_two_process_local_cluster_writes_the_same_bytes(tmp_path):
    pytest.importorskip("distributed")
    array = smooth_volume((50, 66, 80))
    source = write_input(tmp_path, array)
    pyramid(source, tmp_path / "local.ome.zarr", chunks=16)
    report = pyramid(source, tmp_path / "cluster.ome.zarr", chunks=16, workers=2, memory_limit=2**30)
    assert "LocalCluster of 2" in report.summary()
    for a, b in zip(all_levels(tmp_path / "local.ome.zarr"), all_levels(tmp_path / "cluster.ome.zarr")):
        np.testing.assert_array_equal(a, b)
    assert read_attributes(tmp_path / "local.ome.zarr") == read_attributes(tmp_path / "cluster.ome.zarr")


def test_a_local_cluster_says_nothing_when_the_dashboard_port_is_taken(tmp_path):
    # Two pyramids at once (or any Dask cluster on this machine) hold port 8787: distributed warned about it on
    # stderr, between the user's lines (and broke the Ctrl-C test's one line when two runs shared a machine).
    pytest.importorskip("distributed")
    import socket
    source = write_input(tmp_path, smooth_volume((20, 24, 28)))
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # already held by something else: the same situation
            holder.bind(("", 8787))
            holder.listen()
        done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_an_existing_scheduler_writes_the_same_bytes(tmp_path):
    distributed = pytest.importorskip("distributed")
    array = smooth_volume((40, 50, 44))
    source = write_input(tmp_path, array)
    pyramid(source, tmp_path / "local.ome.zarr", chunks=16)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        report = pyramid(source, tmp_path / "remote.ome.zarr", chunks=16, scheduler=cluster.scheduler_address)
        assert cluster.scheduler_address in report.summary()
    for a, b in zip(all_levels(tmp_path / "local.ome.zarr"), all_levels(tmp_path / "remote.ome.zarr")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("caller_client", [False, True], ids=["no-client", "caller-has-a-client"])
def test_a_worker_killed_mid_run_is_replaced_and_its_tasks_rerun(tmp_path, caller_client):
    """kill -9 of a worker process while level 1's tasks run on the cluster: the nanny starts a new worker, Dask
    reruns the lost tasks (whole chunks written again: the same bytes) and the pyramid equals the local run. Also
    when the caller holds its own client of that scheduler (a notebook's): it is used, and left open."""
    distributed = pytest.importorskip("distributed")
    array = smooth_volume((64, 72, 80))
    source = write_input(tmp_path, array)
    pyramid(source, tmp_path / "local.ome.zarr", chunks=16)
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50))
        client = stack.enter_context(distributed.Client(cluster)) if caller_client else None
        def worker_pids():
            return [nanny.process.process.pid for nanny in cluster.workers.values() if nanny.process]

        pids = worker_pids()
        killed = []

        def kill_a_worker(fraction, message):
            if message.startswith("level 1") and not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(message)
            return True

        pyramid(source, tmp_path / "cluster.ome.zarr", chunks=16, scheduler=cluster.scheduler_address,
                progress=kill_a_worker)
        assert killed, "the run never reached level 1's tasks"
        assert pids[0] not in worker_pids()  # the nanny started a new worker process
        if client is not None:
            assert client.submit(sum, [1, 2]).result() == 3  # still open
    for a, b in zip(all_levels(tmp_path / "local.ome.zarr"), all_levels(tmp_path / "cluster.ome.zarr")):
        np.testing.assert_array_equal(a, b)


def test_level_one_read_back_from_level_zero_under_a_small_memory_limit_is_the_same(tmp_path):
    # The window of input rows does not fit 40 MB: level 1's blocks read level 0 back (through the chunk cache)
    # instead of computing from the rows in memory; same tasks, same bytes.
    array = smooth_volume((70, 90, 85))
    source = write_input(tmp_path, array)
    window = pyramid(source, tmp_path / "window.ome.zarr", chunks=16, shard=2)
    from bigvolume.core.memory import current_rss
    back = pyramid(source, tmp_path / "back.ome.zarr", chunks=16, shard=2, memory_limit=current_rss() + 2**20)
    assert "in memory" in window.notes[0] and "read back" in back.notes[0]
    for a, b in zip(all_levels(tmp_path / "window.ome.zarr"), all_levels(tmp_path / "back.ome.zarr")):
        np.testing.assert_array_equal(a, b)


def test_an_ome_zarr_input_keeps_its_grid_unit_and_voxels(tmp_path):
    array = smooth_volume((26, 37, 52))
    write_stack(tmp_path / "stack", array, name="s_{:03d}.tif", first=0)
    first = pyramid(tmp_path / "stack", tmp_path / "a.ome.zarr", chunks=16, spacing=(0.4, 0.4, 1.1),
                    origin=(5.0, -3.0, 2.0))
    done = run_cli("pyramid", tmp_path / "a.ome.zarr", tmp_path / "b.ome.zarr", "--chunks", "8", "--pyramid-level",
                   "1", "--quiet")
    assert done.returncode == 0, done.stderr
    layout, arrays = levels_of(tmp_path / "b.ome.zarr")
    source_layout, source_arrays = levels_of(tmp_path / "a.ome.zarr")
    assert layout.unit == "micrometer"  # the input's, not millimetres
    np.testing.assert_array_equal(arrays[0][:], source_arrays[1][:])
    assert level_geometry(layout, 0, arrays[0].shape).isclose(first.levels[1].geometry)


# --- faults ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    """A volume whose pyramid takes a few seconds in small chunks (many tasks): time to interrupt it."""
    folder = tmp_path_factory.mktemp("big")
    return write_input(folder, smooth_volume((192, 160, 200)), name="big.nhdr")


def start(*args):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    return subprocess.Popen(BIGVOLUME + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_records(process, staging: Path, level: int, count: int, timeout=120.0) -> None:
    """Until ``count`` tasks of ``level`` are recorded finished (the run is under way, not over)."""
    records = staging / RECORDS / f"level-{level}.done"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if records.is_file() and records.read_text().count("\n") >= count:
            return
        time.sleep(0.005)
    raise AssertionError(f"no {count} records of level {level} (exit {process.poll()})")


def test_kill_then_resume_gives_the_same_pyramid_and_skips_finished_work(tmp_path, big_input):
    clean = run_cli("pyramid", big_input, tmp_path / "clean.ome.zarr", "--chunks", "16", "--threads", "1")
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "out.ome.zarr"
    staging = tmp_path / "out.ome.zarr.partial"
    process = start("pyramid", big_input, out, "--chunks", "16", "--threads", "1")
    wait_for_records(process, staging, 0, 3)
    process.kill()  # kill -9: no cleanup at all
    process.wait()
    assert staging.is_dir() and not out.exists()
    done_before = (staging / RECORDS / "level-0.done").read_text().count("\n")
    resumed = run_cli("pyramid", big_input, out, "--chunks", "16", "--threads", "1", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "finished tasks skipped" in resumed.stdout and done_before >= 3
    assert not staging.exists()
    for a, b in zip(all_levels(tmp_path / "clean.ome.zarr"), all_levels(out)):
        np.testing.assert_array_equal(a, b)
    assert read_attributes(tmp_path / "clean.ome.zarr") == read_attributes(out)
    assert not (out / RECORDS).exists()


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path, big_input):
    before = set(os.listdir(tmp_path))
    process = start("pyramid", big_input, tmp_path / "out.ome.zarr", "--chunks", "16", "--threads", "1")
    wait_for_records(process, tmp_path / "out.ome.zarr.partial", 0, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert set(os.listdir(tmp_path)) == before


def test_ctrl_c_on_a_local_cluster_exits_130_and_leaves_nothing(tmp_path, big_input):
    pytest.importorskip("distributed")
    before = set(os.listdir(tmp_path))
    process = start("pyramid", big_input, tmp_path / "out.ome.zarr", "--chunks", "16", "--workers", "2")
    wait_for_records(process, tmp_path / "out.ome.zarr.partial", 1, 5)  # the workers are computing level 1
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "bigvolume: interrupted; nothing written"
    assert set(os.listdir(tmp_path)) == before


def test_ctrl_c_in_a_terminal_with_workers_exits_130_in_one_line(tmp_path, big_input):
    """A terminal's Ctrl-C goes to the whole process group, the LocalCluster's workers too: each printed its
    KeyboardInterrupt traceback (68 lines) before our line; one arriving while they started made the start fail,
    exit 1 and a 64-104-line traceback (a helper's campaign: 12 of 12). Workers now ignore it (the main process
    stops the run and closes the cluster), and a start cut short is the interrupt: exit 130, our line last."""
    pytest.importorskip("distributed")
    for when in ("running", "starting"):
        before = set(os.listdir(tmp_path))
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
        process = subprocess.Popen(BIGVOLUME + ["pyramid", str(big_input), str(tmp_path / "out.ome.zarr"), "--chunks",
                                                "16", "--workers", "2"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=environment, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        if when == "running":
            wait_for_records(process, tmp_path / "out.ome.zarr.partial", 1, 5)
        else:  # as soon as the workers' processes exist
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(subprocess.run(
                    ["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split()) < 3:
                time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, (when, stderr)
        assert stderr.strip().splitlines()[-1] == "bigvolume: interrupted; nothing written", (when, stderr)
        if when == "running":  # (while they start, a worker's Python may print its own before it ignores it)
            assert stderr.strip() == "bigvolume: interrupted; nothing written", stderr
        assert set(os.listdir(tmp_path)) == before


def test_ctrl_c_with_keep_partial_keeps_the_staging_folder_for_resume(tmp_path, big_input):
    process = start("pyramid", big_input, tmp_path / "out.ome.zarr", "--chunks", "16", "--threads", "1",
                    "--keep-partial")
    wait_for_records(process, tmp_path / "out.ome.zarr.partial", 0, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert (tmp_path / "out.ome.zarr.partial" / RECORDS / "plan.json").is_file()
    assert "nothing written" not in stderr and "out.ome.zarr.partial was kept" in stderr and "--resume" in stderr
    again = run_cli("pyramid", big_input, tmp_path / "out.ome.zarr", "--chunks", "16")
    assert again.returncode == 1 and "--resume" in again.stderr  # not silently restarted


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_refusals_are_one_line_and_touch_nothing(tmp_path, monkeypatch):
    array = smooth_volume((20, 24, 28))
    source = write_input(tmp_path, array)
    pyramid(source, tmp_path / "done.ome.zarr", chunks=8)
    write_stack(tmp_path / "stack", array[:3], name="s_{}.tif", first=0)
    before = snapshot(tmp_path)
    cases = [
        (["pyramid", source, tmp_path / "done.ome.zarr"], "exists"),
        (["pyramid", tmp_path / "missing.nrrd", tmp_path / "new.ome.zarr"], "no such file"),
        (["pyramid", tmp_path / "stack", tmp_path / "stack" / "p.ome.zarr"], "inside the input"),
        (["pyramid", source, tmp_path / "new.ome.zarr", "--ome-zarr-version", "0.4", "--shard", "2"], "Zarr v3"),
        (["pyramid", source, tmp_path / "new.ome.zarr", "--spacing", "1", "1", "1"], "image stacks"),
        (["pyramid", source, tmp_path / "new.nrrd"], "a pyramid is an OME-Zarr folder, not a .nrrd file"),
        (["pyramid", source, tmp_path / "new.nii.gz"], "not a .nii.gz file"),
        (["pyramid", source, tmp_path / "new.tif"], "not a .tif file"),
    ]
    for args, words in cases:
        done = run_cli(*args)
        assert done.returncode == 1, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in done.stderr, done.stderr
        assert snapshot(tmp_path) == before, args
    # a disk too small for the estimate
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(bv.BigVolumeError, match="not enough disk space"):
        pyramid(source, tmp_path / "new.ome.zarr", chunks=8)
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_an_existing_pyramid(tmp_path):
    source = write_input(tmp_path, smooth_volume((20, 24, 28)))
    pyramid(source, tmp_path / "p.ome.zarr", chunks=8, levels=2)
    report = bv.pyramid(source, tmp_path / "p.ome.zarr", chunks=8, overwrite=True)  # the public API
    layout, _ = levels_of(tmp_path / "p.ome.zarr")
    assert len(layout.paths) == len(report.levels) > 2
    assert sorted(os.listdir(tmp_path)) == ["in.nrrd", "p.ome.zarr"]


@pytest.mark.parametrize("kind", ["folder", "file", "cwd", "resume"])
def test_overwrite_never_replaces_what_is_not_a_pyramid(tmp_path, kind, monkeypatch):
    """--overwrite deleted any existing OUT: a folder of the user's files, a file, the working folder ('.', which
    also failed with a repr message). Only a Zarr store is replaced; the rest is refused, untouched."""
    (tmp_path / "in").mkdir()
    source = write_input(tmp_path / "in", smooth_volume((12, 14, 16)))
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "notes" / "thesis.txt").write_text("years of work")
    (work / "table.csv").write_text("1,2")
    monkeypatch.chdir(work)
    output = {"folder": "notes", "file": "table.csv", "cwd": ".", "resume": "notes"}[kind]
    before = snapshot(work)
    with pytest.raises(bv.BigVolumeError, match="not a Zarr store") as error:
        pyramid(source, output, chunks=8, overwrite=kind != "resume", resume=kind == "resume")
    assert "PosixPath" not in str(error.value)
    assert snapshot(work) == before
    result = run_cli("pyramid", source, output, "--overwrite", cwd=work)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(work) == before


@pytest.mark.parametrize("unit, per_millimetre", [("micrometer", 1000.0), ("millimeter", 1.0), ("centimeter", 0.1)])
def test_a_volume_in_millimetres_is_written_in_the_unit_asked_and_reads_back_in_millimetres(tmp_path, unit,
                                                                                           per_millimetre):
    array = smooth_volume((20, 27, 33))
    geometry = bv.Geometry((33, 27, 20), (0.3, 0.35, 0.9), (12.5, -4.0, 7.25))
    bv.write_volume(bv.Volume(array, geometry), tmp_path / "in.nrrd")
    report = pyramid(tmp_path / "in.nrrd", tmp_path / "out.ome.zarr", chunks=8, unit=unit)
    layout, arrays = levels_of(tmp_path / "out.ome.zarr")
    assert layout.unit == unit
    for n, level in enumerate(report.levels):
        written = level_geometry(layout, n, arrays[n].shape)  # the store's numbers, in its unit
        assert np.allclose(written.spacing, np.asarray(level.geometry.spacing) * per_millimetre, rtol=1e-9)
        assert np.allclose(written.origin, np.asarray(level.geometry.origin) * per_millimetre, rtol=1e-9)
        back = bv.read_volume(tmp_path / "out.ome.zarr", level=n).geometry  # our readers: millimetres again
        assert back.isclose(level.geometry, rtol=1e-9, atol=1e-9), (back, level.geometry)


# --- OUT against the whole input, resume against damage and change ----------------------------------------------------

@pytest.fixture
def store_and_file(tmp_path):
    """A folder work/ holding an input volume data/scan.nrrd and its pyramid store.ome.zarr (levels 0-2)."""
    folder = tmp_path / "work"
    (folder / "data").mkdir(parents=True)
    source = write_input(folder / "data", smooth_volume((32, 32, 32)), name="scan.nrrd")
    pyramid(source, folder / "store.ome.zarr", chunks=8, levels=3)
    return folder


OVER_THE_INPUT = [  # (IN, OUT, options): OUT is, holds or is inside the input, whatever path names the level
    ("store.ome.zarr", "store.ome.zarr", ["--pyramid-level", "2"]),
    ("store.ome.zarr/2", "store.ome.zarr", []),
    ("store.ome.zarr", "store.ome.zarr/sub.ome.zarr", ["--pyramid-level", "1"]),
    ("store.ome.zarr/1", "store.ome.zarr/0/x.ome.zarr", []),
    ("data/scan.nrrd", "data", []),
    ("data/scan.nrrd", "../work", []),
    ("store.ome.zarr/2", "../work", []),
]


@pytest.mark.parametrize("source, output, options", OVER_THE_INPUT, ids=lambda v: str(v))
def test_output_over_the_input_is_refused_on_the_command_line(store_and_file, source, output, options):
    folder = store_and_file
    before = snapshot(folder)
    done = run_cli("pyramid", source, output, "--overwrite", "--chunks", "8", *options, cwd=folder)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "the input" in lines[0], done.stderr
    assert snapshot(folder) == before


@pytest.mark.parametrize("source, output", [(a, b) for a, b, options in OVER_THE_INPUT if not options],
                         ids=lambda v: str(v))
def test_output_over_the_input_is_refused_by_the_api(store_and_file, source, output, monkeypatch):
    monkeypatch.chdir(store_and_file)
    before = snapshot(store_and_file)
    with pytest.raises(bv.BigVolumeError, match="the input"):
        pyramid(source, output, chunks=8, overwrite=True)
    assert snapshot(store_and_file) == before


@pytest.mark.parametrize("spacing, seed", [((1.0, 1.0, 1.5), 7), ((1.5, 1.0, 1.0), 15), ((2.0, 3.0, 2.0), 7),
                                           ((0.2, 0.3, 0.3), 0), ((0.5, 0.5, 0.75), 7)])
def test_a_rotated_grid_gets_the_plan_of_the_same_grid_unrotated(tmp_path, spacing, seed):
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation.random(random_state=seed).as_matrix()
    source = write_input(tmp_path, np.zeros((32, 32, 32), np.uint8), spacing=spacing, direction=rotation)
    read = bv.read_geometry(source)[0]
    assert read.spacing != spacing  # the direction vectors' norms carry float noise
    assert plan_levels(read.dimensions, read.spacing, 4) == plan_levels((32, 32, 32), spacing, 4)


class Stop(Exception):
    pass


def interrupted_run(source, output, when, **options):
    """A run stopped (keep_partial) as soon as a progress message starts with ``when``: its staging folder."""
    def progress(_fraction, message):
        if message.startswith(when):
            raise Stop
    with pytest.raises(Stop):
        pyramid(source, output, chunks=8, keep_partial=True, progress=progress, **options)
    return Path(str(output) + ".partial")


def a_chunk_of(level: Path) -> Path:
    return sorted(p for p in level.rglob("*") if p.is_file() and not p.name.startswith((".z", "zarr.json")))[-1]


@pytest.mark.parametrize("options", [{}, {"ome_zarr_version": "0.4"}, {"shard": 2}], ids=["0.5", "0.4", "shard"])
def test_resume_redoes_finished_tasks_whose_chunks_are_missing_or_empty(tmp_path, options):
    source = write_input(tmp_path, smooth_volume((40, 48, 48)))
    pyramid(source, tmp_path / "clean.ome.zarr", chunks=8, **options)
    staging = interrupted_run(source, tmp_path / "out.ome.zarr", "level 2", **options)
    a_chunk_of(staging / "1").unlink()
    a_chunk_of(staging / "0").write_bytes(b"")  # cut to 0 bytes: zarr reads an empty shard as absent
    pyramid(source, tmp_path / "out.ome.zarr", chunks=8, resume=True, **options)
    for a, b in zip(all_levels(tmp_path / "clean.ome.zarr"), all_levels(tmp_path / "out.ome.zarr")):
        np.testing.assert_array_equal(a, b)
    files = lambda store: sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "clean.ome.zarr") == files(tmp_path / "out.ome.zarr")


@pytest.mark.parametrize("damage", ["garbled", "cut short", "one bit"])
@pytest.mark.parametrize("options", [{}, {"ome_zarr_version": "0.4"}, {"shard": 2}], ids=["0.5", "0.4", "shard"])
def test_resume_redoes_finished_tasks_whose_chunks_were_changed(tmp_path, options, damage):
    """A finished task's chunk damaged in the staging folder (rewritten, cut short, a bit flipped in place) was
    published by --resume, exit 0: only its presence and size were checked; a 0.4 chunk carries no checksum, so its
    wrong voxels were read silently, and a 0.5 one failed every later read (a helper's fault campaign: 9 of 30
    damaged chunks). The task is done again now: the result is the clean run's."""
    source = write_input(tmp_path, smooth_volume((40, 48, 48)))
    pyramid(source, tmp_path / "clean.ome.zarr", chunks=8, **options)
    staging = interrupted_run(source, tmp_path / "out.ome.zarr", "level 2", **options)
    for level in ("0", "1"):
        chunk = a_chunk_of(staging / level)
        data = chunk.read_bytes()
        if damage == "garbled":
            chunk.write_bytes(b"x" * 50)
        elif damage == "cut short":
            chunk.write_bytes(data[:len(data) // 2])
        else:
            with open(chunk, "r+b") as file:  # same size; its time changes, as any write's
                file.seek(len(data) // 2)
                file.write(bytes([data[len(data) // 2] ^ 1]))
    done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--resume", *(
        ["--ome-zarr-version", "0.4"] if "ome_zarr_version" in options else ["--shard", "2"] if options else []))
    assert done.returncode == 0, done.stderr
    for a, b in zip(all_levels(tmp_path / "clean.ome.zarr"), all_levels(tmp_path / "out.ome.zarr")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, changed", [("in.nrrd", "in.nrrd"), ("in.nhdr", "in.raw"), ("in.nhdr", "in.nhdr")])
def test_resume_refuses_an_input_changed_since_the_interrupted_run(tmp_path, name, changed):
    array = smooth_volume((40, 48, 48))
    source = write_input(tmp_path, array, name=name)
    staging = interrupted_run(source, tmp_path / "out.ome.zarr", "level 1")
    data = (tmp_path / changed).read_bytes()
    if changed == name:  # same geometry, other voxels
        write_input(tmp_path, array // 2, name=name)
    else:  # the detached data file alone is rewritten (same bytes, a later time)
        (tmp_path / changed).write_bytes(data)
        os.utime(tmp_path / changed, ns=(time.time_ns() + 10**9,) * 2)
    kept = snapshot(staging)
    done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--resume")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "changed" in lines[0], done.stderr
    assert snapshot(staging) == kept and not (tmp_path / "out.ome.zarr").exists()


@pytest.mark.parametrize("clutter", [".DS_Store", "Thumbs.db", "desktop.ini", "._z_003.tif"])
def test_resume_takes_no_file_a_file_browser_wrote_for_a_change_of_the_input(tmp_path, clutter):
    """Looking at the stack's folder in Finder or Explorer between the kill and --resume writes .DS_Store,
    Thumbs.db or desktop.ini there: --resume refused the folder as "changed". The slices are what it stamps."""
    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "scan").mkdir()
    rng = np.random.default_rng(3)
    for k in range(40):
        tifffile.imwrite(tmp_path / "scan" / f"z_{k:03d}.tif", rng.integers(0, 4000, (48, 48)).astype(np.uint16))
    pyramid(tmp_path / "scan", tmp_path / "clean.ome.zarr", chunks=8, spacing=(1, 1, 1))
    interrupted_run(tmp_path / "scan", tmp_path / "out.ome.zarr", "level 1", spacing=(1, 1, 1))
    (tmp_path / "scan" / clutter).write_bytes(b"written by a file browser")
    report = pyramid(tmp_path / "scan", tmp_path / "out.ome.zarr", chunks=8, spacing=(1, 1, 1), resume=True)
    assert report.skipped_tasks > 0
    for a, b in zip(all_levels(tmp_path / "clean.ome.zarr"), all_levels(tmp_path / "out.ome.zarr")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("existing", [False, True])
def test_a_swap_that_fails_leaves_a_staging_folder_resume_finishes_without_recomputing(tmp_path, monkeypatch,
                                                                                        existing):
    """On Windows a folder whose files a virus scanner holds cannot be renamed for a moment: the records were
    removed before the swap, so the staging folder looked as if nothing had finished and --resume recomputed it
    all. The swap is tried again for a moment, and the records go only after it."""
    from bigvolume.ops import pyramid as pyramid_module
    source = write_input(tmp_path, smooth_volume((40, 48, 48)))
    pyramid(source, tmp_path / "clean.ome.zarr", chunks=8)
    output = tmp_path / "out.ome.zarr"
    if existing:
        pyramid(source, output, chunks=8, levels=2)
    real_rename, refusals = Path.rename, []

    def held_by_a_scanner(self, target):
        if self.name.endswith(".partial"):
            refusals.append(self)
            raise PermissionError(13, "[WinError 5] Access is denied", str(self))
        return real_rename(self, target)
    monkeypatch.setattr(pyramid_module.Path, "rename", held_by_a_scanner)
    monkeypatch.setattr(pyramid_module.time, "sleep", lambda seconds: None)
    with pytest.raises(PermissionError):
        pyramid(source, output, chunks=8, overwrite=existing)
    assert len(refusals) == 10  # tried again before giving up
    monkeypatch.setattr(pyramid_module.Path, "rename", real_rename)
    if existing:  # the swap got as far as moving the old store aside
        assert not output.exists()
    report = pyramid(source, output, chunks=8, resume=True)
    assert report.skipped_tasks > 0
    assert not (output / pyramid_module.RECORDS).exists()
    for a, b in zip(all_levels(tmp_path / "clean.ome.zarr"), all_levels(output)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("form", ["printf", "glob", "folder", "one slice"])
def test_resume_refuses_a_stack_slice_changed_since_the_interrupted_run(tmp_path, form):
    """A printf pattern (scan/z_%03d.tif) matched no file when the input was stamped, and one slice standing for its
    numbered siblings stamped itself only: a slice rewritten between the kill and --resume was mixed into the
    pyramid, exit 0."""
    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "scan").mkdir()
    rng = np.random.default_rng(len(form))
    for k in range(40):
        tifffile.imwrite(tmp_path / "scan" / f"z_{k:03d}.tif", rng.integers(0, 4000, (48, 48)).astype(np.uint16))
    source = {"printf": tmp_path / "scan" / "z_%03d.tif", "glob": tmp_path / "scan" / "z_*.tif",
              "folder": tmp_path / "scan", "one slice": tmp_path / "scan" / "z_000.tif"}[form]
    staging = interrupted_run(str(source), tmp_path / "out.ome.zarr", "level 1", spacing=(1, 1, 1))
    changed = tmp_path / "scan" / f"z_{rng.integers(1, 40):03d}.tif"
    tifffile.imwrite(changed, np.zeros((48, 48), np.uint16))
    os.utime(changed, ns=(time.time_ns() + 10**9,) * 2)
    kept = snapshot(staging)
    done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--resume", "--spacing", "1", "1",
                   "1")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and f"{changed.name}: changed" in lines[0], done.stderr
    assert snapshot(staging) == kept and not (tmp_path / "out.ome.zarr").exists()


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_resume_refuses_a_zarr_input_whose_chunks_changed_since_the_interrupted_run(tmp_path, version):
    """A Zarr input was stamped by its top folder and metadata only: chunks rewritten between the kill and --resume
    (same shape) were mixed into the pyramid, exit 0. zarr writes a chunk beside its place and renames it, which
    stamps its folder: every folder of the store is stamped now."""
    import zarr

    array = smooth_volume((40, 48, 48))
    source = tmp_path / "in.ome.zarr"
    pyramid(write_input(tmp_path, array), source, chunks=16, levels=1, ome_zarr_version=version)
    staging = interrupted_run(source, tmp_path / "out.ome.zarr", "level 1")
    zarr.open_array(source / "0", mode="r+")[32:40, :16, :16] = 7  # one chunk's worth, deep in the store
    kept = snapshot(staging)
    done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--resume")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "changed" in lines[0], done.stderr
    assert snapshot(staging) == kept and not (tmp_path / "out.ome.zarr").exists()


def test_a_resumed_run_drops_the_temporary_files_of_writes_a_kill_cut_short(tmp_path):
    source = write_input(tmp_path, smooth_volume((40, 48, 48)))
    staging = interrupted_run(source, tmp_path / "out.ome.zarr", "level 2")
    chunk = a_chunk_of(staging / "0")
    leftover = chunk.with_name(f"{chunk.name}.{'ab' * 16}.partial")  # zarr's name for a chunk being written
    leftover.write_bytes(b"half a chunk")
    pyramid(source, tmp_path / "out.ome.zarr", chunks=8, resume=True)
    assert not list((tmp_path / "out.ome.zarr").rglob("*.partial"))


@pytest.mark.parametrize("name", ["scan[1].nrrd", "scan 50%.nrrd", "scan?.nrrd"])
def test_a_volume_named_like_a_pattern_is_a_volume(tmp_path, name):
    """A file that exists is what it is named: 'scan[1].nrrd' was taken for a stack's glob (no slices found)."""
    source = write_input(tmp_path, smooth_volume((12, 14, 16)), name=name)
    report = pyramid(source, tmp_path / "out.ome.zarr", chunks=8)
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "out.ome.zarr").array,
                                  bv.read_volume(source).array)
    assert len(report.levels) >= 2


def test_a_stack_s_origin_is_in_the_unit_of_its_spacing_wherever_the_spacing_comes_from(tmp_path):
    """--origin 1 2 3 with the spacing from the slices' headers (read in mm) gave a translation of 3000 2000 1000 um;
    the same origin with --spacing given in um gave 3 2 1. Both are in --unit now, as the spacing is."""
    planes = np.random.default_rng(2).integers(0, 4000, (4, 10, 12)).astype(np.uint16)
    write_stack(tmp_path / "stack", planes, name="s_{}.tif", first=0, spacing=(0.005, 0.005))  # 5 um, in mm
    translations = []
    for name, spacing in (("headers", None), ("given", (5.0, 5.0, 5.0))):
        store = tmp_path / f"{name}.ome.zarr"
        pyramid(tmp_path / "stack", store, chunks=8, levels=1, origin=(1.0, 2.0, 3.0), spacing=spacing)
        layout, arrays = levels_of(store)
        geometry = level_geometry(layout, 0, arrays[0].shape)
        assert layout.unit == "micrometer" and np.allclose(geometry.spacing, 5.0)
        translations.append(geometry.origin)
    np.testing.assert_allclose(translations[0], translations[1])
    np.testing.assert_allclose(translations[0], (1.0, 2.0, 3.0))


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (float("nan"), 1.0, 1.0), (-1.0, 1.0, 1.0)])
def test_plan_levels_refuses_a_spacing_that_places_nothing(spacing):
    """With a spacing of 0, NaN or below 0, every step was (1, 1, 1) and the plan grew for ever."""
    with pytest.raises(bv.BigVolumeError, match="positive dimensions and spacings"):
        plan_levels((300, 300, 300), spacing, chunks=64)


def test_ctrl_c_during_the_final_swap_is_held_and_a_swap_left_half_done_is_cleared(tmp_path, monkeypatch):
    """Ctrl-C in the last steps of --overwrite (rename the old OUT aside, the new one in, remove the old) left no OUT
    at all, or the old one as OUT.replaced, over which every later --overwrite failed ('Directory not empty'). The
    swap now finishes whatever Ctrl-C says meanwhile, and an OUT.replaced left by a killed run is cleared."""
    import pathlib
    import signal as signals
    source = write_input(tmp_path, smooth_volume((20, 24, 28)))
    out = tmp_path / "p.ome.zarr"
    pyramid(source, out, chunks=8, levels=2)
    (tmp_path / "p.ome.zarr.replaced" / "0").mkdir(parents=True)  # what a run killed mid-swap leaves
    real_rename = pathlib.Path.rename

    def interrupted_rename(self, target):
        os.kill(os.getpid(), signals.SIGINT)  # Ctrl-C, right in the swap
        return real_rename(self, target)
    monkeypatch.setattr(pathlib.Path, "rename", interrupted_rename)
    report = pyramid(source, out, chunks=8, overwrite=True)
    monkeypatch.setattr(pathlib.Path, "rename", real_rename)
    assert sorted(os.listdir(tmp_path)) == ["in.nrrd", "p.ome.zarr"]
    assert len(levels_of(out)[0].paths) == len(report.levels) > 2


@pytest.mark.parametrize("option, value, said", [("levels", 1.5, "levels must be a whole number of at least 1"),
                                                 ("workers", 0, "workers must be a whole number of at least 1"),
                                                 ("shard", 1.5, "shard must be a whole number of at least 1"),
                                                 ("zstd_level", -100, "zstd_level must be a whole number"),
                                                 ("zstd_level", 100, "zstd_level must be a whole number from 0 to 22"),
                                                 ("memory_limit", 0, "memory limit must be positive"),
                                                 ("threads", 0, "threads must be a whole number of at least 1")])
def test_the_python_door_refuses_what_the_command_line_refuses(tmp_path, option, value, said):
    """levels=1.5 made 2 levels, workers=0 a cluster of none, shard=1.5 a zarr error about a chunk shape nobody
    gave, zstd_level=-100 and memory_limit=0 were taken: the command line's parser refused them, the API did not."""
    source = write_input(tmp_path, smooth_volume((16, 16, 16)))
    with pytest.raises(bv.BigVolumeError, match=re.escape(said)):
        pyramid(source, tmp_path / "out.ome.zarr", **{option: value})
    assert [p.name for p in tmp_path.iterdir()] == [source.name]  # nothing written


@pytest.mark.parametrize("option", [{"gray": "channel:0"}, {"gray": "keep"}, {"reverse": True},
                                    {"spacing": (1, 1, 1)}])
def test_stack_options_given_for_a_volume_file_are_refused(tmp_path, option):
    """--gray channel:0 with a volume file was let through and dropped (the other stack options were refused)."""
    source = write_input(tmp_path, smooth_volume((16, 16, 16)))
    with pytest.raises(bv.BigVolumeError, match=rf"--{next(iter(option))} is for image stacks"):
        pyramid(source, tmp_path / "out.ome.zarr", **option)
    assert [p.name for p in tmp_path.iterdir()] == [source.name]  # nothing written


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shard", [None, 2])
def test_a_damaged_chunk_of_our_pyramid_is_refused_naming_it(tmp_path, seed, shard):
    """Zstd frames carry no checksum unless asked: 20 of 30 chunks of our pyramids with 16 bytes zeroed decoded
    without an error, wrong voxels read silently. OME-Zarr 0.5 pyramids are written with zstd's content checksum."""
    array = smooth_volume((32, 32, 32), seed=seed)
    source = write_input(tmp_path, array)
    out = tmp_path / "p.ome.zarr"
    pyramid(source, out, chunks=8, levels=1, shard=shard)
    np.testing.assert_array_equal(bv.read_volume(out).array, array)
    rng = np.random.default_rng(seed)
    files = sorted(p for p in (out / "0").rglob("*") if p.is_file() and p.name != "zarr.json")
    victim = files[int(rng.integers(len(files)))]
    data = bytearray(victim.read_bytes())
    at = int(rng.integers(16, len(data) - 48))  # inside the compressed data (a shard's index is at its end)
    data[at:at + 16] = bytes(16)
    victim.write_bytes(bytes(data))
    with pytest.raises(bv.VolumeFileError, match=r"p\.ome\.zarr: chunk 0/c/[0-9/]+ is corrupt or unreadable"):
        bv.read_volume(out)


def test_a_sheared_grid_is_refused_before_writing_and_non_unit_columns_become_spacing(tmp_path):
    """A sheared grid was written whole, then refused by every reader of ours ('not a rotation matrix'). Direction
    columns that are not unit vectors (a MetaImage's matrix may give them) go into the spacing: the same grid."""
    array = smooth_volume((12, 14, 16))
    sheared = np.array([[1, 0.3, 0], [0, 1, 0.2], [0, 0, 1]], float)
    source = write_input(tmp_path, array, name="sheared.nhdr")
    header = source.read_text()
    source.write_text(header.replace(header[header.index("space directions"):].split("\n")[0],
                                     "space directions: (0.3,0,0) (0.09,0.3,0) (0,0.18,0.9)"))
    assert not np.allclose(bv.read_geometry(source)[0].direction, np.eye(3))  # (read as written)
    with pytest.raises(bv.BigVolumeError, match="the volume's axes are not at right angles"):
        pyramid(source, tmp_path / "s.ome.zarr")
    assert not (tmp_path / "s.ome.zarr").exists() and not list(tmp_path.glob("*.partial*"))
    del sheared
    (tmp_path / "m.raw").write_bytes(array.astype("<u2").tobytes())
    stretched = tmp_path / "m.mhd"  # a MetaImage whose matrix holds the spacing (columns of length 2)
    stretched.write_text("ObjectType = Image\nNDims = 3\nDimSize = 16 14 12\nElementType = MET_USHORT\n"
                         "ElementSpacing = 1 1 1\nTransformMatrix = 0 2 0 -2 0 0 0 0 2\nOffset = 1 2 3\n"
                         "ElementDataFile = m.raw\n")
    expected = bv.read_geometry(stretched)[0]
    assert not np.allclose(np.linalg.norm(expected.direction, axis=0), 1)
    out = tmp_path / "r.ome.zarr"
    pyramid(stretched, out, levels=2)
    got = bv.read_geometry(out, level=0)[0]
    np.testing.assert_allclose(got.ijk_to_ras(), expected.ijk_to_ras(), atol=1e-9)
    assert got.spacing == pytest.approx((2, 2, 2))
    np.testing.assert_array_equal(bv.read_volume(out).array, array)


def test_resume_of_a_run_stopped_before_its_plan_starts_afresh(tmp_path):
    """A kill or Ctrl-C (--keep-partial) in the 15-160 ms between the staging folder and its plan left a folder that
    a plain rerun sent to --resume, and --resume refused as "made by another run": the two messages pointed at each
    other, and the interrupt's own line had promised that --resume continues it. No task had finished: --resume now
    starts again. A folder holding anything else is still refused."""
    source = write_input(tmp_path, smooth_volume((20, 24, 28)))
    pyramid(source, tmp_path / "clean.ome.zarr", chunks=8)
    staging = tmp_path / "out.ome.zarr.partial"
    for leftover in ([], ["zarr.json", RECORDS + "/"], ["zarr.json", RECORDS + "/", "0/", "1/"]):
        staging.mkdir()
        for name in leftover:
            (staging / name).mkdir() if name.endswith("/") else (staging / name).write_text("{}")
        done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--resume")
        assert done.returncode == 0, (leftover, done.stderr)
        for a, b in zip(all_levels(tmp_path / "clean.ome.zarr"), all_levels(tmp_path / "out.ome.zarr")):
            np.testing.assert_array_equal(a, b)
        shutil.rmtree(tmp_path / "out.ome.zarr")
    staging.mkdir()
    (staging / "notes.txt").write_text("mine")
    done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--resume")
    assert done.returncode == 1 and (staging / "notes.txt").is_file()


def test_resume_takes_the_unit_the_run_wrote_whether_given_or_not(tmp_path):
    """A run without --unit writes a volume file's millimetres: --resume --unit millimeter continues it (it was
    refused as another run's: the plan recorded the option, None, not the unit), and another unit is refused."""
    source = write_input(tmp_path, smooth_volume((40, 48, 48)))
    pyramid(source, tmp_path / "clean.ome.zarr", chunks=8)
    interrupted_run(source, tmp_path / "out.ome.zarr", "level 1")
    other = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--resume", "--unit", "micrometer")
    assert other.returncode == 1 and "another run" in other.stderr
    done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--chunks", "8", "--resume", "--unit", "millimeter")
    assert done.returncode == 0, done.stderr
    assert read_attributes(tmp_path / "clean.ome.zarr") == read_attributes(tmp_path / "out.ome.zarr")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ["lanczos", "mean", "gaussian"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nan_spreading_through_the_levels_is_said(tmp_path, dtype, method, seed):
    """One NaN voxel in 48^3 left level 2 all NaN (lanczos), exit 0 and nothing said; resample says it."""
    rng = np.random.default_rng(seed)
    shape = ((48, 48, 48), (40, 56, 36), (64, 32, 48))[seed]
    array = rng.normal(100, 10, shape).astype(dtype)
    for _ in range(seed + 1):
        array[tuple(rng.integers(8, n - 8) for n in shape)] = np.nan
    source = write_input(tmp_path, array)
    report = pyramid(source, tmp_path / "out.ome.zarr", chunks=16)
    levels = [bv.read_volume(tmp_path / "out.ome.zarr", level=k).array for k in range(len(report.levels))]
    with_nan = [k for k in range(1, len(levels)) if np.isnan(levels[k]).any()]
    said = [note for note in report.notes if "are NaN" in note]
    assert with_nan  # every method here spreads a NaN at least to its block
    first = with_nan[0]
    assert len(said) == 1 and said[0].startswith(f"level {first}: {np.isnan(levels[first]).sum()} of the "
                                                 f"{levels[first].size} output voxels")
    for k in with_nan[1:]:
        assert f"level {k} {100 * np.isnan(levels[k]).mean():.3g} %" in said[0]
    clean = write_input(tmp_path, np.nan_to_num(array, nan=100.0), name="clean.nrrd")
    assert not [n for n in pyramid(clean, tmp_path / "clean.ome.zarr", chunks=16).notes if "NaN" in n]


def test_nan_of_levels_too_large_to_count_is_said_from_the_input(tmp_path, monkeypatch):
    from bigvolume.ops import pyramid as module
    monkeypatch.setattr(module, "NAN_COUNT_BYTES", 0)
    array = np.full((32, 40, 48), 5.0, np.float32)
    array[3, 4, 5] = array[20, 30, 40] = np.nan
    report = pyramid(write_input(tmp_path, array), tmp_path / "out.ome.zarr", chunks=16)
    said = [note for note in report.notes if "NaN" in note]
    assert len(said) == 1 and said[0].startswith("2 input voxels are NaN: the levels' voxels whose lanczos kernel")


def test_nan_spreading_through_the_levels_is_said_on_the_command_line(tmp_path):
    array = np.full((48, 40, 56), 7.0, np.float32)
    array[20, 21, 22] = np.nan
    done = run_cli("pyramid", write_input(tmp_path, array), tmp_path / "out.ome.zarr", "--chunks", "16", timeout=300)
    assert done.returncode == 0, done.stderr
    level1 = bv.read_volume(tmp_path / "out.ome.zarr", level=1).array
    said = [line for line in done.stderr.splitlines() if "are NaN" in line]
    assert len(said) == 1 and said[0].startswith(f"bigvolume: note: level 1: {np.isnan(level1).sum()} of the "
                                                 f"{level1.size} output voxels")


def test_workers_get_the_documented_default_memory_limit(tmp_path, monkeypatch):
    """--help says each worker gets a quarter of this machine's memory by default; dask's "auto" (all of it shared
    out) was what they got, since no limit was passed."""
    from bigvolume.core.memory import default_memory_limit
    from bigvolume.ops import pyramid as pyramid_module

    given = []

    class Recorded(Exception):
        pass

    def recording_runner(workers, address, memory_limit):
        given.append(memory_limit)
        raise Recorded
    monkeypatch.setattr(pyramid_module, "DistributedRunner", recording_runner)
    source = write_input(tmp_path, smooth_volume((20, 24, 24)))
    with pytest.raises(Recorded):
        pyramid(source, tmp_path / "out.ome.zarr", chunks=8, workers=2)
    with pytest.raises(Recorded):
        pyramid(source, tmp_path / "out2.ome.zarr", chunks=8, workers=2, memory_limit="300MB")
    assert given == [default_memory_limit(), 300_000_000]


def test_workers_that_keep_dying_are_one_line_naming_the_limit(tmp_path, monkeypatch):
    """--workers 2 --shard 4 --memory-limit 1GB on a 1001x777 uint16 volume: the nanny killed every worker (a shard
    row did not fit) and the command ended with dask's KilledWorker traceback. Emulated: the runner raises it."""
    distributed = pytest.importorskip("distributed")
    from bigvolume.ops import pyramid as pyramid_module

    class DyingRunner:
        name, distributed = "dask.distributed (emulated)", True

        def __init__(self, workers, address, memory_limit):
            pass

        def __enter__(self):
            raise distributed.scheduler.KilledWorker("write-task", None, 3)

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(pyramid_module, "DistributedRunner", DyingRunner)
    source = write_input(tmp_path, smooth_volume((20, 24, 24)))
    with pytest.raises(bv.BigVolumeError, match=r"out\.ome\.zarr: the Dask workers .* of 300\.00 MiB each") as error:
        pyramid(source, tmp_path / "out.ome.zarr", chunks=8, workers=2, memory_limit="300MiB")
    assert len(str(error.value).splitlines()) == 1
    assert not (tmp_path / "out.ome.zarr").exists() and not (tmp_path / "out.ome.zarr.partial").exists()
