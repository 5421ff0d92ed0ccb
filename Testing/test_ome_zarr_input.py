"""OME-Zarr as input (bigvolume.io.zarr_input): pyramids written with zarr itself (Testing/zarr_stores.py) read at
any level with their exact geometry, streamed by every command, and damaged stores refused in one line."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bigvolume as bv
from bigvolume.core.geometry import Geometry
from bigvolume.io import files as io
from bigvolume.io.slabs import open_slabs
from bigvolume.io.zarr_input import (ZarrSlabReader, choose_level, open_pyramid, preview_level, read_region)
from bigvolume.testing.zarr_stores import write_ome_zarr

zarr = pytest.importorskip("zarr")
from zarr_stores import (bioformats2raw_store, block_means, chunk_files, decimate, legacy_store,  # noqa: E402
                         subsample, write_store)  # (needs zarr)

BIGVOLUME = [sys.executable, "-m", "bigvolume"]


def run(*args, cwd=None):
    return subprocess.run(BIGVOLUME + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300)


def rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def phantom(shape=(30, 41, 52), dtype=np.uint16, seed=0):
    """Smooth structure plus noise, so a resample has something to get wrong."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    array = 1500 + 1000 * np.cos(6 * i) * np.sin(5 * j + 2 * k) + rng.normal(0, 40, shape)
    return np.clip(array, 0, 4000).astype(dtype)


GEOMETRIES = {
    "anisotropic": Geometry((52, 41, 30), (0.5, 0.6, 2.0), (10.0, -5.0, 3.25)),
    "rotated": Geometry((52, 41, 30), (0.7, 0.4, 1.1), (-3.0, 8.5, 1.0), rotation(3)),
    "flipped": Geometry((52, 41, 30), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.diag([1.0, -1.0, -1.0])),
}


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_every_level_reads_with_its_exact_geometry(tmp_path, version, name):
    geometry, array = GEOMETRIES[name], phantom()
    store = write_store(tmp_path / "x.ome.zarr", array, geometry, version=version, factors=(3, 9))
    pyramid = open_pyramid(store)
    assert pyramid.version == version and len(pyramid.levels) == 3
    for level, factor in enumerate((1, 3, 9)):
        volume = bv.read_volume(store, level=level)
        expected = subsample(array, factor) if factor > 1 else array
        np.testing.assert_array_equal(volume.array, expected)
        assert volume.geometry.isclose(geometry.downsampled(factor) if factor > 1 else geometry, atol=1e-9)
        # The same level through its own folder, and from the header alone
        assert io.read_volume(store / str(level)).geometry == volume.geometry
        assert io.read_geometry(store, level=level) == (volume.geometry, np.dtype(np.uint16), 1)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_a_channel_axis_becomes_components(tmp_path, version):
    array = np.random.default_rng(1).integers(0, 255, (20, 21, 22, 3), dtype=np.uint8)
    geometry = Geometry((22, 21, 20), (0.3, 0.3, 0.9), (1.0, 2.0, 3.0))
    store = write_store(tmp_path / "rgb.ome.zarr", array, geometry, version=version, factors=(3,))
    volume = bv.read_volume(store)
    assert volume.components == 3 and volume.geometry.isclose(geometry)
    np.testing.assert_array_equal(volume.array, array)
    with open_slabs(store, level=1) as reader:
        np.testing.assert_array_equal(reader.read(2, 5), subsample(array, 3)[2:5])


def test_sharded_store_reads_the_same(tmp_path):
    array, geometry = phantom(), GEOMETRIES["rotated"]
    store = write_store(tmp_path / "s.ome.zarr", array, geometry, chunks=4, shards=(16, 16, 16), factors=(3,))
    assert open_pyramid(store).levels[0].stored_block == (16, 16, 16)
    np.testing.assert_array_equal(bv.read_volume(store).array, array)


@pytest.mark.parametrize("names", [("x", "y", "z"), ("c", "x", "z", "y"), ("X", "Y", "Z")])
def test_a_plain_zarr_array_whose_space_axes_are_not_z_y_x_is_refused(tmp_path, names):
    """Named x y z, it was read as z y x (transposed, silently)."""
    shape = (9, 10, 11) if len(names) == 3 else (1, 9, 10, 11)
    stored = zarr.create_array(str(tmp_path / "xyz.zarr"), shape=shape, chunks=(4,) * len(shape), dtype="uint16",
                               dimension_names=names)
    stored[...] = 7
    done = run("resample", tmp_path / "xyz.zarr", tmp_path / "out.nrrd", "--factor", "2")
    assert done.returncode == 1 and "this tool reads them in the order z, y, x" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.nrrd").exists()


def test_a_plain_zarr_array_reads_on_a_unit_grid(tmp_path):
    array = phantom((9, 10, 11))
    stored = zarr.create_array(str(tmp_path / "plain.zarr"), shape=array.shape, chunks=(4, 4, 4), dtype=array.dtype)
    stored[...] = array
    pyramid = open_pyramid(tmp_path / "plain.zarr")
    assert "unit spacing" in pyramid.note
    volume = bv.read_volume(tmp_path / "plain.zarr")
    np.testing.assert_array_equal(volume.array, array)
    assert volume.geometry == Geometry((11, 10, 9))
    # The command says the grid is a guess, once, and still writes the result.
    done = run("resample", tmp_path / "plain.zarr", tmp_path / "out.nrrd", "--factor", "2")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("unit spacing") == 1, done.stderr
    assert (tmp_path / "out.nrrd").is_file()


def test_a_roi_reads_only_its_box_with_its_geometry(tmp_path):
    array, geometry = phantom(), GEOMETRIES["rotated"]
    store = write_store(tmp_path / "x.ome.zarr", array, geometry, factors=(3,))
    # A ROI given as LPS points: the cells of voxels (k 4..11, j 7..19, i 30..44) shrunk a little
    inner = np.array([[i, j, k] for i in (30 - 0.4, 43 + 0.4) for j in (7 - 0.4, 18 + 0.4) for k in (4 - 0.4, 10 + 0.4)])
    corners = [geometry.physical_point(p) for p in inner]
    box = geometry.index_box(corners)
    assert box == ((4, 11), (7, 19), (30, 44))
    region = read_region(store, 0, box)
    np.testing.assert_array_equal(region.array, array[4:11, 7:19, 30:44])
    assert region.geometry.isclose(geometry.cropped(box))
    np.testing.assert_allclose(region.geometry.origin, geometry.physical_point((30, 7, 4)), atol=1e-9)
    # The same place at level 1: its box covers the same region
    level1 = open_pyramid(store).levels[1].geometry
    coarse = read_region(store, 1, level1.index_box(corners))
    low = coarse.geometry.physical_point((-0.5, -0.5, -0.5))
    assert all(np.linalg.solve(geometry.ijk_to_lps()[:3, :3], low - geometry.origin) <= [29.6, 6.6, 3.6])
    with pytest.raises(ValueError, match="outside the volume"):
        geometry.index_box([geometry.physical_point((-10, -10, -10))])
    # A ROI whose faces lie on cell boundaries (as placed on a grid, rounded by the LPS round trip) takes the cells
    # inside, no more: the top face took the cell above it (a 10-voxel ROI read 11).
    for low, high in (((30, 7, 4), (40, 17, 14)), ((0, 0, 0), (5, 3, 2))):
        faces = np.array([[i, j, k] for i in (low[0] - 0.5, high[0] - 0.5) for j in (low[1] - 0.5, high[1] - 0.5)
                          for k in (low[2] - 0.5, high[2] - 0.5)])
        box = geometry.index_box([geometry.physical_point(p) for p in faces])
        assert box == tuple(zip(low[::-1], high[::-1])), box


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_resample_from_zarr_equals_resample_of_the_source(tmp_path, version, stream):
    array, geometry = phantom(), GEOMETRIES["rotated"]
    source = io.write_volume(bv.Volume(array, geometry), tmp_path / "source.nrrd")
    store = write_store(tmp_path / "x.ome.zarr", array, geometry, version=version, factors=(3,))
    for name, path in (("from_source", source), ("from_zarr", store)):
        result = run("resample", path, tmp_path / f"{name}.nrrd", "--factor", "2", "3", "2.5", stream)
        assert result.returncode == 0, result.stderr
    expected, got = bv.read_volume(tmp_path / "from_source.nrrd"), bv.read_volume(tmp_path / "from_zarr.nrrd")
    np.testing.assert_array_equal(got.array, expected.array)
    assert got.geometry.isclose(expected.geometry, atol=1e-9)


def test_resample_of_a_level_folder_uses_that_level(tmp_path):
    array, geometry = phantom(), GEOMETRIES["anisotropic"]
    store = write_store(tmp_path / "x.ome.zarr", array, geometry, factors=(3,))
    result = run("resample", store / "1", tmp_path / "out.nrrd", "--factor", "2")
    assert result.returncode == 0, result.stderr
    expected = bv.resample(bv.Volume(subsample(array, 3), geometry.downsampled(3)), 2)
    got = bv.read_volume(tmp_path / "out.nrrd")
    np.testing.assert_array_equal(got.array, expected.array)
    assert got.geometry.isclose(expected.geometry, atol=1e-9)


def test_streaming_from_zarr_keeps_memory_bounded(tmp_path):
    """Peak memory of a streamed run from a 96 MiB store grows by far less than the input (16 MiB of buffers)."""
    array = np.zeros((192, 512, 512), np.uint16)
    array[:, 100:400, 100:400] = 1000
    store = write_store(tmp_path / "big.ome.zarr", array, Geometry((512, 512, 192)), chunks=64, factors=())
    del array
    script = textwrap.dedent(f"""
        import resource
        import zarr  # its modules are not the run's memory
        import bigvolume as bv
        from bigvolume.core.memory import current_rss
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        report = bv.resample_file(r"{store}", r"{tmp_path / 'out.nhdr'}", 4, stream=True,
                                  memory_limit=current_rss() + 16 * 2**20)
        assert report.stream_plan.slabs > 1
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split()[-1])
    assert growth < 40 * 2**20, f"peak grew by {growth / 2**20:.0f} MiB for a 96 MiB input"


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("version, shards", [("0.5", None), ("0.4", None), ("0.5", (16, 16, 16))])
def test_a_corrupt_chunk_is_one_line_naming_it_and_nothing_is_written(tmp_path, version, shards):
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], version=version,
                        chunks=4 if shards else 8, shards=shards, factors=(3,))
    victim = chunk_files(store)[len(chunk_files(store)) // 2]
    victim.write_bytes(b"not a compressed chunk" * 3)
    key = victim.relative_to(store).as_posix()
    for stream in ("--stream", "--no-stream"):
        result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2", stream)
        assert result.returncode != 0
        line = _one_line(result.stderr)
        assert f"chunk {key} " in line and str(store) in line and "corrupt" in line, line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ome.zarr"]


@pytest.mark.parametrize("version, shards, promised", [("0.5", (16, 16, 16), True), ("0.5", (16, 16, 16), False),
                                                      ("0.5", None, False), ("0.4", None, True)])
def test_an_empty_chunk_or_shard_file_is_refused_naming_it(tmp_path, version, shards, promised):
    """A chunk or shard file cut to 0 bytes (a copy interrupted, a full disk): zarr read a whole empty shard as
    absent, so in-memory reads gave fill-value voxels with exit 0, in our own pyramids too; streamed reads failed
    on a checksum without naming the shard. No stored object is ever 0 bytes: one line naming it, whoever wrote
    the store and whatever it promises."""
    array = phantom()
    store = write_store(tmp_path / "x.ome.zarr", array, GEOMETRIES["anisotropic"], version=version,
                        chunks=4 if shards else 8, shards=shards, factors=(3,), all_chunks_written=promised)
    victim = chunk_files(store)[1]
    victim.write_bytes(b"")
    key = victim.relative_to(store).as_posix()
    with pytest.raises(bv.BigVolumeError, match=f"chunk {key} is an empty file"):
        bv.read_volume(store)
    for stream in ("--stream", "--no-stream"):
        result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2", stream)
        assert result.returncode != 0
        assert f"chunk {key} is an empty file" in _one_line(result.stderr)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ome.zarr"]


def test_a_corrupt_shard_streamed_is_one_line_run_after_run(tmp_path):
    """A corrupt inner chunk of a shard, streamed: the shard's other chunk tasks still ran on zarr's event loop when
    the error was raised, failed at exit once zarr's thread pool was shut down, and asyncio printed their tracebacks
    beside the one-line error, in about 1 run in 4 (timing). Six runs here: each must be one line."""
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], chunks=4,
                        shards=(16, 16, 16), factors=(3,))
    files = chunk_files(store)
    files[len(files) // 2].write_bytes(b"not a compressed chunk" * 3)
    for _ in range(6):
        result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2", "--stream")
        assert result.returncode != 0 and "is corrupt or unreadable" in _one_line(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ome.zarr"]


def test_a_missing_chunk_is_refused_only_when_the_store_promises_every_chunk(tmp_path):
    array = phantom()
    promised = write_store(tmp_path / "all.ome.zarr", array, GEOMETRIES["anisotropic"], factors=(3,),
                           all_chunks_written=True)
    plain = write_store(tmp_path / "some.ome.zarr", array, GEOMETRIES["anisotropic"], factors=(3,))
    for store in (promised, plain):
        victim = chunk_files(store)[5]
        key = victim.relative_to(store).as_posix()
        victim.unlink()
    result = run("resample", promised, tmp_path / "out.nrrd", "--factor", "2")
    assert result.returncode != 0 and not (tmp_path / "out.nrrd").exists()
    line = _one_line(result.stderr)
    assert f"chunk {key} is missing" in line and str(promised) in line
    # Without the promise a missing chunk is the fill value (the Zarr rule)
    volume = bv.read_volume(plain)
    assert (volume.array == 0).any() and not (array == 0).any()
    np.testing.assert_array_equal(volume.array[volume.array != 0], array[volume.array != 0])


def test_bad_levels_and_stores_are_one_line(tmp_path):
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], factors=(3,))
    with pytest.raises(bv.VolumeFileError, match=r"level 5 does not exist; this pyramid has levels 0 to 1"):
        bv.read_volume(store, level=5)
    nrrd = io.write_volume(bv.Volume.from_array(phantom((4, 5, 6))), tmp_path / "v.nrrd")
    with pytest.raises(bv.VolumeFileError, match="only an OME-Zarr pyramid has levels"):
        bv.read_volume(nrrd, level=1)
    with pytest.raises(bv.VolumeFileError, match="only an OME-Zarr pyramid has levels"):
        open_slabs(nrrd, level=0)
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    with pytest.raises(bv.VolumeFileError, match="no OME-Zarr multiscales"):
        bv.read_volume(tmp_path / "group.zarr")
    (tmp_path / "empty.ome.zarr").mkdir()
    with pytest.raises(bv.VolumeFileError, match=r"empty.ome.zarr: not a Zarr store \(no zarr.json"):
        bv.read_geometry(tmp_path / "empty.ome.zarr")
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(bv.VolumeFileError, match="broken.zarr: not a readable Zarr store"):
        bv.read_volume(tmp_path / "broken.zarr")
    result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2", "--level", "7")
    assert result.returncode != 0 and "level 7 does not exist" in _one_line(result.stderr)
    assert not (tmp_path / "out.nrrd").exists()


def test_choose_level_and_preview_level(tmp_path):
    geometry = Geometry((600, 520, 300), (0.5, 0.5, 1.0))
    store = write_store(tmp_path / "x.ome.zarr", np.zeros(geometry.shape, np.uint8), geometry, chunks=64,
                        factors=(3, 9))
    levels = open_pyramid(store).levels
    sizes = [level.nbytes for level in levels]
    assert choose_level(levels, sizes[0]) == 0
    assert choose_level(levels, sizes[0] - 1) == 1
    assert choose_level(levels, sizes[2]) == 2
    with pytest.raises(bv.BigVolumeError, match="does not fit"):
        choose_level(levels, sizes[2] - 1)
    # level 1 is 200x173x100: the z axis is below 256 but so is a third of level 0's 300
    assert preview_level(levels) == 0
    assert preview_level(levels, minimum=100) == 1
    assert preview_level(levels, minimum=20) == 2


def test_reader_checks_and_boxes(tmp_path):
    array = phantom()
    store = write_store(tmp_path / "x.ome.zarr", array, GEOMETRIES["flipped"], factors=(3,))
    with ZarrSlabReader(open_pyramid(store), 1) as reader:
        level = subsample(array, 3)
        np.testing.assert_array_equal(reader.read(0, reader.slices), level)
        np.testing.assert_array_equal(reader.read_box(((1, 3), (2, 9), (0, 4))), level[1:3, 2:9, 0:4])
        with pytest.raises(ValueError, match="outside"):
            reader.read_box(((0, 99), (0, 1), (0, 1)))


def test_level_options_read_that_level(tmp_path):
    array, geometry = phantom(), GEOMETRIES["rotated"]
    store = write_store(tmp_path / "x.ome.zarr", array, geometry, factors=(3,))
    outputs = {}
    for name, args in (("folder", [store / "1"]), ("level", [store, "--level", "1"]),
                       ("alias", [store, "--pyramid-level", "1"])):
        result = run("resample", *args, tmp_path / f"{name}.nrrd", "--factor", "2")
        assert result.returncode == 0, result.stderr
        outputs[name] = bv.read_volume(tmp_path / f"{name}.nrrd")
    for name in ("level", "alias"):
        np.testing.assert_array_equal(outputs[name].array, outputs["folder"].array)
        assert outputs[name].geometry == outputs["folder"].geometry
    assert outputs["folder"].geometry.isclose(geometry.downsampled(3).downsampled(2), atol=1e-9)
    # dehaze keeps --level for its threshold: the pyramid's level is --pyramid-level
    result = run("dehaze", store, tmp_path / "dehazed.nrrd", "--pyramid-level", "1", "--level", "2")
    assert result.returncode in (0, 3), result.stderr
    assert bv.read_volume(tmp_path / "dehazed.nrrd").geometry.isclose(geometry.downsampled(3), atol=1e-9)
    result = run("reduce-bits", store, tmp_path / "bits.nrrd", "--bits", "8", "--level", "1")
    assert result.returncode == 0, result.stderr
    assert bv.read_volume(tmp_path / "bits.nrrd").geometry.isclose(geometry.downsampled(3), atol=1e-9)


def test_preview_of_a_pyramid_names_the_level_it_draws(tmp_path):
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], factors=(3,))
    for args, level in (([], 0), (["--level", "1"], 1)):
        result = run("preview", store, tmp_path / f"p{level}.png", *args)
        assert result.returncode == 0, result.stderr
        assert f"x.ome.zarr (level {level})" in result.stdout and (tmp_path / f"p{level}.png").is_file()


def test_slabs_are_whole_chunks_where_they_can_be():
    """A slab that cuts a chunk has it decoded again for the next slab: the planner rounds a slab of at least one
    chunk down to whole chunks; a smaller one is kept (memory, and the soft limits, decide)."""
    from bigvolume.core.memory import current_rss
    from bigvolume.engine.plan import plan_slabs

    roomy = current_rss() + 2**30
    assert plan_slabs(1000, 10, 1000, 0, roomy).slab_slices == 125  # 8 slabs, unaligned
    assert plan_slabs(1000, 10, 1000, 0, roomy, alignment=64).slab_slices == 64  # 125 -> 64
    assert plan_slabs(1000, 10, 1000, 0, roomy, alignment=48).slab_slices == 96
    assert plan_slabs(512, 10, 1000, 0, roomy, alignment=128).slab_slices == 64  # below one chunk: kept
    assert plan_slabs(512, 10, 1000, 0, roomy, alignment=16, max_slab_bytes=300).slab_slices == 16  # 30 -> 16
    assert plan_slabs(40, 10, 1000, 0, roomy, alignment=16, min_slabs=1).slab_slices == 40  # the whole volume


def test_a_streamed_read_of_a_zarr_level_plans_whole_chunks(tmp_path):
    store = write_store(tmp_path / "x.ome.zarr", phantom((100, 20, 20)), Geometry((20, 20, 100)), chunks=6,
                        factors=())
    report = bv.resample_file(store, tmp_path / "out.nrrd", 2, stream=True)
    assert report.stream_plan.slab_slices == 12  # 13 (a slab count of 8) -> 12
    with open_slabs(store) as reader:
        assert reader.slab_alignment == 6


def test_a_store_written_by_ngff_zarr_reads_with_its_own_geometry(tmp_path):
    """An independent writer (ngff-zarr, the reference tool; levels nested as scale1/image): every level's grid is
    the scale and translation ngff-zarr gives it, level 0's voxels are the array."""
    nz = pytest.importorskip("ngff_zarr")
    array = phantom((20, 24, 28))
    image = nz.to_ngff_image(array, dims=("z", "y", "x"), scale={"z": 2.0, "y": 0.5, "x": 0.25},
                             translation={"z": 3.0, "y": -1.0, "x": 5.0})
    multiscales = nz.to_multiscales(image, scale_factors=[2, 4])
    nz.to_ngff_zarr(str(tmp_path / "ngff.ome.zarr"), multiscales, version="0.5")
    pyramid = open_pyramid(tmp_path / "ngff.ome.zarr")
    assert len(pyramid.levels) == len(multiscales.images) == 3
    for level, written in zip(pyramid.levels, multiscales.images):
        geometry = level.geometry
        assert geometry.shape == written.data.shape
        assert geometry.spacing == tuple(written.scale[axis] for axis in "xyz")
        assert geometry.origin == pytest.approx(tuple(written.translation[axis] for axis in "xyz"), abs=1e-12)
        assert io.read_geometry(tmp_path / "ngff.ome.zarr" / level.path)[0] == geometry  # nested level folder
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "ngff.ome.zarr").array, array)



@pytest.mark.parametrize("dims", [("c", "z", "y", "x"), ("t", "c", "z", "y", "x"), ("t", "z", "y", "x")],
                         ids=["czyx", "tczyx", "tzyx"])
@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_singleton_time_and_channel_axes_read_as_a_scalar_volume(tmp_path, dims, version):
    """bioformats2raw writes every image as t c z y x; ngff-zarr keeps a c of size 1: one channel is a scalar volume
    (it was refused with numpy's "could not broadcast"), read, streamed and pyramided like z y x."""
    nz = pytest.importorskip("ngff_zarr")
    array = phantom((20, 24, 28))
    image = nz.to_ngff_image(array.reshape((1,) * (len(dims) - 3) + array.shape), dims=dims,
                             scale={"z": 2.0, "y": 0.5, "x": 0.25}, translation={"z": 3.0, "y": -1.0, "x": 5.0})
    nz.to_ngff_zarr(str(tmp_path / "s.ome.zarr"), nz.to_multiscales(image, scale_factors=[2], chunks=8),
                    version=version)
    volume = bv.read_volume(tmp_path / "s.ome.zarr")
    assert volume.components == 1 and volume.array.shape == array.shape
    np.testing.assert_array_equal(volume.array, array)
    assert volume.geometry.isclose(Geometry((28, 24, 20), (0.25, 0.5, 2.0), (5.0, -1.0, 3.0)))
    with open_slabs(tmp_path / "s.ome.zarr") as reader:
        np.testing.assert_array_equal(reader.read(3, 9), array[3:9])
        np.testing.assert_array_equal(reader.read_box(((2, 7), (1, 20), (4, 9))), array[2:7, 1:20, 4:9])
    result = run("resample", tmp_path / "s.ome.zarr", tmp_path / "r.nrrd", "--factor", "2", "--stream",
                 "--memory-limit", "1MB", "--quiet")
    assert result.returncode == 0, result.stderr
    expected = bv.resample(bv.Volume(array, volume.geometry), 2)
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "r.nrrd").array, expected.array)
    bv.pyramid(tmp_path / "s.ome.zarr", tmp_path / "p.ome.zarr", chunks=8, levels=2)
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "p.ome.zarr").array, array)



@pytest.mark.parametrize("stored", [">u2", ">i4", ">f8", "|b1"])
def test_big_endian_and_boolean_zarr_v2_arrays_read_as_native_numbers(tmp_path, stored):
    """Zarr v2 keeps a big-endian dtype as written (Java tools, N5 conversions): the voxels are read in this
    machine's byte order, so the files written from them hold the right numbers (the streamed resample wrote the
    big-endian bytes under a little-endian header); a boolean mask reads as uint8 0/1."""
    values = phantom((20, 24, 28)).astype(np.float64) * 3 - 20000
    array = values > 0 if stored == "|b1" else values.astype(stored)
    root = zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="w", zarr_format=2)
    level = root.create_array("0", shape=array.shape, chunks=(8, 8, 8), dtype=np.dtype(stored),
                              chunk_key_encoding={"name": "v2", "separator": "."})
    level[:] = array
    axes = [{"name": axis, "type": "space", "unit": "millimeter"} for axis in "zyx"]
    root.attrs.update({"multiscales": [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.25]}]}]}]})
    native = array.astype(np.uint8) if stored == "|b1" else array.astype(np.dtype(stored).newbyteorder("="))
    volume = bv.read_volume(tmp_path / "s.ome.zarr")
    assert volume.array.dtype == native.dtype and volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, native)
    assert io.read_geometry(tmp_path / "s.ome.zarr")[1] == native.dtype
    expected = bv.resample(bv.Volume(native, volume.geometry), 2).array
    for mode in ("--stream", "--no-stream"):
        result = run("resample", tmp_path / "s.ome.zarr", tmp_path / "r.nrrd", "--factor", "2", mode, "--quiet")
        assert result.returncode == 0, result.stderr
        written = bv.read_volume(tmp_path / "r.nrrd").array
        assert written.dtype == native.dtype
        if native.dtype.kind == "f":
            np.testing.assert_allclose(written, expected, rtol=0, atol=1e-9 * np.ptp(native))
        else:
            assert np.abs(written.astype(np.int64) - expected.astype(np.int64)).max() <= 1
        (tmp_path / "r.nrrd").unlink()
    bv.pyramid(tmp_path / "s.ome.zarr", tmp_path / "p.ome.zarr", chunks=8, levels=2)
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "p.ome.zarr").array, native)


def test_a_bioformats2raw_root_reads_its_first_image_and_names_the_others(tmp_path, caplog):
    first, second = phantom((20, 24, 28), seed=1), phantom((10, 12, 14), seed=2)
    store = bioformats2raw_store(tmp_path / "b2r.ome.zarr", [first, second])
    with caplog.at_level("WARNING", logger="bigvolume"):
        volume = bv.read_volume(store)
    np.testing.assert_array_equal(volume.array, first)
    assert volume.geometry.isclose(Geometry((28, 24, 20), (0.00025, 0.0005, 0.002)))
    assert "a bioformats2raw store of 2 images; reading image 0" in caplog.text and str(store / "1") in caplog.text
    np.testing.assert_array_equal(bv.read_volume(store / "1").array, second)
    result = run("resample", store, tmp_path / "r.nrrd", "--factor", "2", "--stream", "--quiet")
    assert result.returncode == 0, result.stderr
    assert bv.read_volume(tmp_path / "r.nrrd").array.shape == (10, 12, 14)

@pytest.mark.parametrize("version", ["0.1", "0.2", "0.3"])
@pytest.mark.parametrize("shrink", [decimate, block_means])
@pytest.mark.parametrize("shape", [(20, 24, 28), (21, 17, 33)])
def test_ome_zarr_before_0_4_reads_on_a_unit_grid_and_says_so(tmp_path, caplog, version, shrink, shape):
    """OME-Zarr 0.1-0.3 had no scales (and 0.1-0.2 no axes: t c z y x): level 0 on a unit grid with a note, level 1
    scaled by its size (2 along each axis, odd sizes too); it was refused ("no axes", "no scale")."""
    store, levels = legacy_store(tmp_path / "old.ome.zarr", version, phantom(shape, seed=3), shrink)
    with caplog.at_level("WARNING", logger="bigvolume"):
        pyramid = open_pyramid(store)
    assert f"OME-Zarr {version} holds no pixel size" in caplog.text and pyramid.note
    assert pyramid.levels[0].geometry == Geometry(shape[::-1])
    assert pyramid.levels[1].geometry.isclose(Geometry(levels[1].shape[::-1], (2.0, 2.0, 2.0)))
    for number, level in enumerate(levels):
        np.testing.assert_array_equal(bv.read_volume(store, level=number).array, level)
    result = run("resample", store, tmp_path / "r.nrrd", "--factor", "2", "--stream")
    assert result.returncode == 0 and "holds no pixel size" in result.stderr, result.stderr
    assert bv.read_volume(tmp_path / "r.nrrd").geometry.isclose(
        bv.resample(bv.Volume.from_array(levels[0]), 2).geometry)


def test_an_ome_zarr_0_3_store_with_scales_keeps_them(tmp_path, caplog):
    """Some writers of 0.3 stores already wrote 0.4's coordinate transformations: they give the geometry."""
    store, levels = legacy_store(tmp_path / "old.ome.zarr", "0.3", phantom((20, 24, 28), seed=4), decimate)
    root = zarr.open_group(str(store), mode="r+")
    multiscale = root.attrs["multiscales"][0]
    for dataset, factor in zip(multiscale["datasets"], (1, 2)):
        dataset["coordinateTransformations"] = [{"type": "scale", "scale": [1, 1, 3.0 * factor, 0.5 * factor, 0.5 * factor]}]
    root.attrs["multiscales"] = [multiscale]
    with caplog.at_level("WARNING", logger="bigvolume"):
        pyramid = open_pyramid(store)
    assert "no pixel size" not in caplog.text and not pyramid.note
    assert pyramid.levels[0].geometry.isclose(Geometry((28, 24, 20), (0.5, 0.5, 3.0)))
    assert pyramid.levels[1].geometry.isclose(Geometry((14, 12, 10), (1.0, 1.0, 6.0)))


def test_two_space_axes_are_named_in_the_refusal(tmp_path):
    nz = pytest.importorskip("ngff_zarr")
    image = nz.to_ngff_image(phantom((3, 24, 28)), dims=("c", "y", "x"))
    nz.to_ngff_zarr(str(tmp_path / "plane.ome.zarr"), nz.to_multiscales(image, scale_factors=[]), version="0.4")
    with pytest.raises(bv.VolumeFileError, match=r"2 space axes \(y, x\) among c, y, x; this tool reads 3D volumes"):
        bv.read_volume(tmp_path / "plane.ome.zarr")

def test_bigvolume_imports_zarr_only_to_read_a_store(tmp_path):
    nrrd = io.write_volume(bv.Volume.from_array(phantom((4, 5, 6))), tmp_path / "v.nrrd")
    code = (f"import sys, bigvolume as bv; bv.read_volume(r'{nrrd}'); bv.read_geometry(r'{nrrd}'); "
            "print('zarr' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_planning_a_store_leaves_simpleitk_unloaded(tmp_path, version):
    """A Zarr v2 store's .zattrs looked like a DICOM file named without a suffix: SimpleITK (90 MiB) was loaded to
    ask, before the memory plan, which then left slabs of one slice at 256MB."""
    store = write_ome_zarr(tmp_path / "v.ome.zarr", phantom((6, 20, 24)), bv.Geometry((24, 20, 6)), chunks=4,
                           version=version, factors=())
    code = (f"import sys, bigvolume as bv; p = bv.plan_file(r'{store}', 2, memory_limit='256MB'); "
            "print(p.reads_in_slabs, 'SimpleITK' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["True", "False"], (done.stdout, done.stderr)


@pytest.mark.parametrize("shard", [None, 2])
def test_our_pyramids_read_back_and_their_missing_chunks_are_refused(tmp_path, shard):
    """bigvolume.pyramid promises every chunk (all_chunks_written): its stores read back exactly, level 0 is the
    source with its geometry, and a chunk (or shard) deleted afterwards is an error, not fill-value voxels."""
    pytest.importorskip("dask")
    array, geometry = phantom(), GEOMETRIES["rotated"]
    source = io.write_volume(bv.Volume(array, geometry), tmp_path / "source.nrrd")
    store = tmp_path / "ours.ome.zarr"
    bv.pyramid(source, store, chunks=16, shard=shard)
    pyramid = open_pyramid(store)
    assert pyramid.all_chunks_written and len(pyramid.levels) >= 2
    volume = bv.read_volume(store)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.geometry.isclose(geometry, atol=1e-9)
    victim = chunk_files(store, pyramid.levels[0].path)[3]
    key = victim.relative_to(store).as_posix()
    victim.unlink()
    result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2")
    assert result.returncode != 0 and not (tmp_path / "out.nrrd").exists()
    assert f"chunk {key} is missing" in _one_line(result.stderr)


@pytest.mark.parametrize("unit, millimetres", [("micrometer", 1e-3), ("nanometer", 1e-6), ("centimeter", 10.0)])
def test_a_store_in_another_unit_reads_in_millimetres(tmp_path, unit, millimetres):
    # A stack's pyramid is in micrometres; our volumes and Slicer are in mm: 10 um must come out 0.01 mm, not 10 mm.
    geometry = GEOMETRIES["rotated"]
    store = write_store(tmp_path / "um.ome.zarr", phantom(), geometry, factors=(3,), unit=unit)
    expected = Geometry(geometry.dimensions, tuple(s * millimetres for s in geometry.spacing),
                        tuple(o * millimetres for o in geometry.origin), geometry.direction)
    for level, factor in enumerate((1, 3)):
        got = bv.read_volume(store, level=level).geometry
        want = expected.downsampled(factor) if factor > 1 else expected
        assert got.isclose(want, rtol=1e-9, atol=1e-12), (got, want)
    result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2")
    assert result.returncode == 0, result.stderr
    written = io.read_volume(tmp_path / "out.nrrd").geometry
    assert written.isclose(expected.downsampled(2), rtol=1e-6, atol=1e-9), written


def test_without_zarr_the_message_names_the_packages_to_install(monkeypatch):
    """Inside Slicer's Python there is no bigvolume distribution whose extra could be installed: name the packages."""
    from bigvolume.io.ome_zarr import import_zarr

    monkeypatch.setitem(sys.modules, "zarr", None)  # what an absent package looks like to import
    with pytest.raises(bv.BigVolumeError, match=r"pip install 'zarr>=3' 'dask\[array\]' distributed") as error:
        import_zarr()
    assert "bigvolume[" not in str(error.value)


@pytest.mark.parametrize("call", ["read_volume", "read_geometry", "open_slabs", "file_size"])
def test_a_series_uid_given_with_a_store_is_refused_not_ignored(tmp_path, call):
    """read_volume(store, 2) (series is the second parameter) read level 0 without a word."""
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], factors=(3,))
    function = getattr(io, call) if call != "open_slabs" else open_slabs
    with pytest.raises(bv.BigVolumeError, match="applies only to DICOM"):
        function(store, "2")
    function(store, None, 1)  # the level, by its own name, is read


@pytest.mark.parametrize("command, inside", [("resample", "out.nrrd"), ("resample", "0/out.nhdr"),
                                             ("dehaze", "out.nrrd"), ("reduce-bits", "1/out.nii.gz")])
def test_an_output_inside_the_input_store_is_refused(tmp_path, command, inside):
    """resample, dehaze and reduce-bits wrote their output (and a .raw beside an .nhdr) into the input store, as
    foreign objects among its chunks; pyramid already refused it. Whichever level folder names the input."""
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], factors=(3,))
    before = sorted(p.relative_to(store).as_posix() for p in store.rglob("*"))
    options = {"resample": ["--factor", "2"], "reduce-bits": ["--bits", "8"], "dehaze": []}[command]
    for source in (store, store / "0"):
        done = run(command, source, store / inside, *options)
        assert done.returncode == 1 and "inside the input's Zarr store" in _one_line(done.stderr), done.stderr
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*")) == before


def test_a_level_folder_with_another_level_asked_for_is_refused(tmp_path):
    """`resample store/1 --level 0` read level 0 without a word: which did the user mean? The same level twice, or
    either alone, is read."""
    array = phantom()
    store = write_store(tmp_path / "x.ome.zarr", array, GEOMETRIES["anisotropic"], factors=(3,))
    for folder, level in (("1", 0), ("0", 1)):
        done = run("resample", store / folder, tmp_path / "out.nrrd", "--factor", "2", "--level", str(level))
        assert done.returncode == 1 and "the folder of level" in _one_line(done.stderr)
        with pytest.raises(bv.BigVolumeError, match="the folder of level"):
            bv.read_volume(store / folder, level=level)
    assert not (tmp_path / "out.nrrd").exists()
    same = bv.read_volume(store / "1", level=1)
    assert same.geometry == bv.read_volume(store, level=1).geometry == bv.read_volume(store / "1").geometry


def _blosc_store(path, data, zarr_format, cname, chunks=(8, 8, 8)):
    """A one-level 0.4/0.5 store of ``data`` compressed with Blosc (the usual compressor of 0.4 stores)."""
    if zarr_format == 2:
        import numcodecs
        compressor = numcodecs.Blosc(cname=cname)
        keys = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    else:
        compressor = zarr.codecs.BloscCodec(cname=cname)
        keys = {}
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    level = root.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks, compressors=compressor, **keys)
    level[...] = data
    multiscale = {"axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
                  "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 3]}]}]}
    root.attrs.update({"multiscales": [{"version": "0.4", **multiscale}]} if zarr_format == 2 else
                      {"ome": {"version": "0.5", "multiscales": [multiscale]}})
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("cname", ["lz4", "zstd", "blosclz", "zlib"])
@pytest.mark.parametrize("content", ["noise", "smooth"])
def test_a_blosc_chunk_cut_short_is_refused_naming_it(tmp_path, zarr_format, cname, content):
    """Blosc trusts the compressed size in its frame's header: a chunk file cut short (to its 16-byte header, or
    anywhere on incompressible data) decoded without an error, bytes read from beyond the file's buffer (a
    helper: 80 of 80 cut lengths per codec read silently). Its header's size must be the file's."""
    rng = np.random.default_rng(len(cname) + zarr_format)
    data = (rng.integers(0, 65535, (16, 16, 16)) if content == "noise" else phantom((16, 16, 16))).astype(np.uint16)
    store = _blosc_store(tmp_path / "x.ome.zarr", data, zarr_format, cname)
    np.testing.assert_array_equal(bv.read_volume(store).array, data)
    victim = chunk_files(store)[3]
    whole = victim.read_bytes()
    key = victim.relative_to(store).as_posix()
    for keep in (16, len(whole) // 2, len(whole) - 1):
        victim.write_bytes(whole[:keep])
        with pytest.raises(bv.VolumeFileError, match=f"chunk {key} is cut short or damaged: its Blosc header says "
                                                     f"{len(whole)} bytes, the file has {keep}"):
            bv.read_volume(store)
    victim.write_bytes(whole)
    np.testing.assert_array_equal(bv.read_volume(store).array, data)


def _metadata(store, document):
    """The store's root metadata file rewritten by ``document(metadata)``."""
    import json
    name = "zarr.json" if (store / "zarr.json").is_file() else ".zattrs"
    metadata = json.loads((store / name).read_text())
    (store / name).write_text(json.dumps(document(metadata)))


def _datasets(metadata):
    attributes = metadata.get("attributes", metadata)
    multiscales = attributes["ome"]["multiscales"] if "ome" in attributes else attributes["multiscales"]
    return multiscales[0]["datasets"]


def test_level_paths_spelled_otherwise_keep_their_geometry_and_stay_in_the_store(tmp_path):
    """Dataset paths "0/", "1/": a level given by its folder (or --level 1) lost its geometry (a unit grid, "a Zarr
    array without OME-Zarr metadata"); "/0" was opened on the file system (another array than zarr's)."""
    array = phantom()
    store = write_store(tmp_path / "x.ome.zarr", array, GEOMETRIES["anisotropic"], version="0.4", factors=(3,))
    expected = [bv.read_geometry(store, level=n)[0] for n in (0, 1)]

    def spell(pattern):
        def document(metadata):
            for dataset in _datasets(metadata):
                dataset["path"] = pattern.format(dataset["path"])
            return metadata
        return document
    for pattern in ("{}/", "/{}", "./{}"):
        _metadata(store, spell(pattern))
        for level in (0, 1):
            assert bv.read_geometry(store, level=level)[0] == expected[level]
            assert bv.read_geometry(store / str(level))[0] == expected[level]
        np.testing.assert_array_equal(bv.read_volume(store).array, array)
        _metadata(store, lambda m: (_datasets(m).__setitem__(slice(None), [
            dict(d, path=d["path"].strip("/.")) for d in _datasets(m)]), m)[1])


def test_stale_consolidated_metadata_is_not_read(tmp_path):
    """A level rewritten after its metadata was consolidated: the type and shape came from .zmetadata, the voxels
    from the array's own .zarray (float32 2.75 read as uint16 2, exit 0). Each array's own metadata is read."""
    store = write_store(tmp_path / "x.ome.zarr", phantom((8, 8, 8)), Geometry((8, 8, 8)), version="0.4", factors=())
    zarr.consolidate_metadata(str(store))
    root = zarr.open_group(str(store), mode="a", use_consolidated=False)
    del root["0"]
    root.create_array("0", data=np.full((8, 8, 8), 2.75, np.float32), chunk_key_encoding={"name": "v2",
                                                                                            "separator": "/"})
    volume = bv.read_volume(store)
    assert volume.dtype == np.float32 and np.all(volume.array == 2.75)


def test_a_level_of_a_second_image_or_with_contradicting_names_is_refused(tmp_path):
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], factors=(3,))
    # a second image in the multiscales list, whose level folder was read on a unit grid
    zarr.open_group(str(store), mode="a").create_array("b0", data=phantom((4, 4, 4)))

    def second(metadata):
        multiscales = metadata["attributes"]["ome"]["multiscales"]
        multiscales.append(dict(multiscales[0], datasets=[dict(multiscales[0]["datasets"][0], path="b0")]))
        return metadata
    _metadata(store, second)
    with pytest.raises(bv.VolumeFileError, match="a level of another image than the first"):
        bv.read_volume(store / "b0")
    # OME-Zarr 0.5: an array's dimension names must be the axes' names
    level = store / "0" / "zarr.json"
    import json
    metadata = json.loads(level.read_text())
    metadata["dimension_names"] = ["x", "y", "z"]
    level.write_text(json.dumps(metadata))
    with pytest.raises(bv.VolumeFileError, match=r"level 0's dimension names x, y, z contradict the axes z, y, x"):
        bv.read_volume(store)


def test_odd_levels_chunks_and_level_arguments_are_one_line(tmp_path, caplog):
    import json
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], version="0.4", factors=(3,))
    with pytest.raises(bv.VolumeFileError, match=r"a level is a whole number \(0 to 1\), got '1'"):
        bv.read_volume(store, level="1")
    zarray = json.loads((store / "0" / ".zarray").read_text())
    (store / "0" / ".zarray").write_text(json.dumps(dict(zarray, chunks=[0, 8, 8])))
    with pytest.raises(bv.VolumeFileError, match=r"level 0 has chunks of \(0, 8, 8\) elements"):
        bv.read_volume(store)
    (store / "0" / ".zarray").write_text(json.dumps(zarray))
    import shutil
    for entry in (store / "1").iterdir():  # a copy of the metadata only
        if entry.name not in (".zarray", ".zattrs"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    with caplog.at_level("WARNING", logger="bigvolume"):
        assert np.all(bv.read_volume(store, level=1).array == 0)
    assert "level 1 stores no chunk: every voxel reads as its fill value, 0" in caplog.text
    shutil.rmtree(store / "1")
    with pytest.raises(bv.VolumeFileError, match="level 1's array is missing"):
        bv.read_volume(store)


def test_float16_levels_preview_and_an_unknown_version_is_noted(tmp_path, caplog):
    """float16 (an OME-Zarr type VTK and Slicer volumes lack): preview failed (a TypeError traceback with the vtk
    engine); dehaze's refusal named two files. An OME-Zarr version newer than ours was read by 0.5's rules without
    a word."""
    array = (phantom((16, 16, 16)) / 40).astype(np.float16)
    store = write_store(tmp_path / "h.ome.zarr", array, Geometry((16, 16, 16)), factors=())
    for engine in ("vtk", "auto"):
        report = bv.write_preview(store, tmp_path / f"{engine}.png", engine=engine)
        assert (tmp_path / f"{engine}.png").stat().st_size > 0 and report.path.exists()
    result = run("dehaze", store, tmp_path / "d.nrrd")
    assert result.returncode == 1
    assert _one_line(result.stderr).startswith(f"bigvolume: error: {tmp_path / 'd.nrrd'}: pixel type float16 cannot")
    _metadata(store, lambda m: (m["attributes"]["ome"].__setitem__("version", "0.6"), m)[1])
    with caplog.at_level("WARNING", logger="bigvolume"):
        np.testing.assert_array_equal(bv.read_volume(store).array, array)
    assert "OME-Zarr 0.6 is not a version this tool knows" in caplog.text


def _rewrite(path, change):
    """A JSON metadata file rewritten by ``change(document)`` (in place)."""
    import json
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _flatten_chunk_files(level):
    """Nested chunk files (0/1/2) renamed flat (0.1.2), as a '.' writer names them."""
    import shutil
    for path in chunk_files(level.parent, level.name):
        path.rename(level / ".".join(path.relative_to(level).parts))
    for entry in level.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)


# (store version, how the files and the metadata disagree, array): every voxel read as the fill value, exit 0
KEY_MISMATCHES = {
    # zarr-python 2's NestedDirectoryStore: 0/0/0 files, no dimension_separator in .zarray (read as '.')
    "v2 nested, no separator": ("0.4", lambda level: _rewrite(level / ".zarray",
                                                               lambda m: m.pop("dimension_separator"))),
    "v2 flat, says /": ("0.4", _flatten_chunk_files),
    "v3 c/, says v2 .": ("0.5", lambda level: _rewrite(level / "zarr.json", lambda m: m.__setitem__(
        "chunk_key_encoding", {"name": "v2", "configuration": {"separator": "."}}))),
    "v3 c/, says default .": ("0.5", lambda level: _rewrite(level / "zarr.json", lambda m: m.__setitem__(
        "chunk_key_encoding", {"name": "default", "configuration": {"separator": "."}}))),
}


@pytest.mark.parametrize("mismatch", list(KEY_MISMATCHES))
@pytest.mark.parametrize("components", [1, 3])
def test_chunk_files_named_by_another_key_encoding_are_refused(tmp_path, mismatch, components):
    """Chunk files named otherwise than the array's key encoding says (nested under a .zarray without
    dimension_separator, as zarr-python 2's NestedDirectoryStore wrote; flat under '/'; a v3 array's c/... under
    another encoding): zarr found no chunk and every voxel read as the fill value, exit 0, in memory and through
    resample. One line naming the encoding and a file found; a sparse store (some chunks missing) still reads."""
    version, damage = KEY_MISMATCHES[mismatch]
    array = phantom()
    if components == 3:
        array = np.stack([array, array // 2, array // 3], axis=-1)
    store = write_store(tmp_path / "x.ome.zarr", array, GEOMETRIES["anisotropic"], version=version, factors=(3,))
    # Sparse, named right: a missing chunk is the fill value, no refusal
    chunk_files(store)[0].unlink()
    sparse = bv.read_volume(store).array
    assert (sparse[:8, :8, :8] == 0).all() and np.array_equal(sparse[8:], array[8:])
    damage(store / "0")
    with pytest.raises(bv.VolumeFileError, match=r"level 0's chunk files do not match the array's key encoding "
                                                 r"\(.+\), found '0/.+'; every voxel would read as the fill value"):
        bv.read_volume(store)
    np.testing.assert_array_equal(bv.read_volume(store, level=1).array, subsample(array, 3))  # (level 1 is fine)
    for stream in ("--stream", "--no-stream"):
        result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2", stream)
        assert result.returncode == 1 and not (tmp_path / "out.nrrd").exists()
        line = _one_line(result.stderr)
        assert str(store) in line and "do not match the array's key encoding" in line, line


@pytest.mark.parametrize("inner", ["blosc", "zstd", "raw"])
@pytest.mark.parametrize("location", ["end", "start"])
@pytest.mark.parametrize("damage", ["append", "append zeros", "cut"])
def test_a_shard_index_without_checksum_pointing_beyond_its_file_is_refused(tmp_path, inner, location, damage):
    """A shard index without crc32c (index_codecs [bytes], as the sharding spec allows): bytes appended to a shard
    (its index at the end read from the wrong place) or the shard cut short gave index entries beyond the file,
    which zarr reads as absent inner chunks: fill-value voxels, exit 0. Refused naming the shard; a shard whose
    index is intact (appended bytes after an index at the start) reads exactly."""
    from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec, ZstdCodec
    codecs = {"blosc": [BytesCodec(), BloscCodec()], "zstd": [BytesCodec(), ZstdCodec()], "raw": [BytesCodec()]}
    array = phantom((40, 36, 32))
    array[:16, :16, :16] = 0  # inner chunks not written: empty index entries
    store = tmp_path / "s.zarr"
    stored = zarr.create_array(str(store), shape=array.shape, dtype=array.dtype, chunks=(32, 32, 32), compressors=None,
                               serializer=ShardingCodec(chunk_shape=(16, 16, 16), codecs=codecs[inner],
                                                        index_codecs=[BytesCodec()], index_location=location))
    stored[...] = array
    np.testing.assert_array_equal(bv.read_volume(store).array, array)
    victim = chunk_files(store, ".")[0]
    whole = victim.read_bytes()
    victim.write_bytes({"append": whole + b"GARBAGE!" * 4, "append zeros": whole + bytes(32),
                        "cut": whole[:-1]}[damage])
    key = victim.relative_to(store).as_posix()
    if location == "start" and damage != "cut":  # the index and every chunk as they were
        np.testing.assert_array_equal(bv.read_volume(store).array, array)
        return
    with pytest.raises(bv.VolumeFileError, match=f"shard {key} is damaged: its index \\(no checksum\\) points "
                                                 "beyond the shard's"):
        bv.read_volume(store)
    result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2")
    assert result.returncode == 1 and f"shard {key} is damaged" in _one_line(result.stderr.split("\n", 1)[1])


def test_a_shard_index_with_a_checksum_is_left_to_zarr(tmp_path):
    """The index check reads each shard's index once more: only where zarr checks nothing (no crc32c)."""
    store = write_store(tmp_path / "x.ome.zarr", phantom(), GEOMETRIES["anisotropic"], chunks=4, shards=(16, 16, 16),
                        factors=())
    with open_slabs(store) as reader:
        assert reader._unchecked_shard_index is None


@pytest.mark.parametrize("version", ["0.5", "0.4", "plain"])
def test_a_pyramid_of_a_store_without_a_unit_names_none(tmp_path, version):
    """A store with no unit reads as written (its numbers); its pyramid said "millimeter", a unit the input never
    named (1000 times another size for a store in micrometres without saying so). No unit in, none out."""
    pytest.importorskip("dask")
    array = phantom()
    geometry = GEOMETRIES["anisotropic"]
    if version == "plain":
        source = tmp_path / "plain.zarr"
        zarr.create_array(str(source), shape=array.shape, chunks=(8, 8, 8), dtype=array.dtype)[...] = array
        geometry = Geometry(array.shape[::-1])
    else:
        source = write_store(tmp_path / "in.ome.zarr", array, geometry, version=version, factors=())
        _metadata(source, lambda m: ([axis.pop("unit") for axis in _multiscale(m)["axes"]], m)[1])
    out = tmp_path / "out.ome.zarr"
    result = run("pyramid", source, out, "--chunks", "8", "--quiet")
    assert result.returncode == 0, result.stderr
    import json
    written = json.loads((out / "zarr.json").read_text())
    axes = _multiscale(written)["axes"]
    assert [axis["name"] for axis in axes] == ["z", "y", "x"] and not any("unit" in axis for axis in axes), axes
    assert open_pyramid(out).unit == ""
    volume = bv.read_volume(out)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.geometry.isclose(geometry, atol=1e-9)


def _multiscale(metadata):
    attributes = metadata.get("attributes", metadata)
    return (attributes["ome"] if "ome" in attributes else attributes)["multiscales"][0]


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
@pytest.mark.parametrize("layout", ["0.4", "plain v2"])
def test_a_v2_array_without_fill_value_reads_missing_chunks_as_0_and_says_so(tmp_path, caplog, dtype, layout):
    """Zarr v2's fill_value null: a missing chunk is undefined by the spec, yet zarr-python 3 writes null itself
    (fill_value=None) and, by default (write_empty_chunks False), leaves chunks of zeros out: read as 0, as zarr
    reads them, with a note naming the level and a chunk (it was silent)."""
    import json
    array = phantom((16, 16, 16)).astype(dtype)
    array[:8, :8, :8] = 0
    if layout == "plain v2":
        store = tmp_path / "plain.zarr"
        level = store
        zarr.create_array(str(store), shape=array.shape, chunks=(8, 8, 8), dtype=dtype, zarr_format=2,
                          fill_value=None)[...] = array  # zarr's own writer: null, chunk 0.0.0 left out
        assert json.loads((store / ".zarray").read_text())["fill_value"] is None and not (store / "0.0.0").exists()
    else:
        store = write_store(tmp_path / "x.ome.zarr", array, Geometry((16, 16, 16)), version="0.4", factors=())
        level = store / "0"
        _rewrite(level / ".zarray", lambda m: m.__setitem__("fill_value", None))
        chunk_files(store)[0].unlink()
    with caplog.at_level("WARNING", logger="bigvolume"):
        np.testing.assert_array_equal(bv.read_volume(store).array, array)
    assert "has no fill value (null) and chunks not written: they read as 0" in caplog.text
    result = run("resample", store, tmp_path / "out.nrrd", "--factor", "2", "--stream")
    assert result.returncode == 0 and result.stderr.count("has no fill value (null)") == 1, result.stderr


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_a_float16_refusal_names_a_way_out_the_command_has(tmp_path, version):
    """dehaze refused float16 with "e.g. resample --type float32", as if it had a --type option: the way out
    is resample's (the input converted first); resample's own refusal names its option."""
    array = (phantom((16, 16, 16)) / 40).astype(np.float16)
    store = write_store(tmp_path / "h.ome.zarr", array, Geometry((16, 16, 16)), version=version, factors=())
    dehaze = _one_line(run("dehaze", store, tmp_path / "d.nrrd").stderr)
    assert dehaze.endswith("convert the input first, e.g. resample --factor 1 --type float32"), dehaze
    resample = _one_line(run("resample", store, tmp_path / "r.nrrd").stderr)
    assert resample.endswith("convert it, e.g. resample --type float32"), resample
    converted = run("resample", store, tmp_path / "c.nrrd", "--factor", "1", "--type", "float32")
    assert converted.returncode == 0, converted.stderr
    assert run("dehaze", tmp_path / "c.nrrd", tmp_path / "d.nrrd").returncode in (0, 3)
