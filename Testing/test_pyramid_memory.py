"""Memory of `bigvolume pyramid` (bigvolume.ops.pyramid): level 0's pass is planned against the memory limit before
any voxel is read; rows of chunks (or shards) too large for it are read and written in pieces, with the same
bytes as whole rows; what cannot fit (a compressed stream's row, a limit below what the program holds) is said up
front in one note; --workers whose limit cannot hold one task are refused before the cluster starts; --resume
continues a run written in pieces."""
import hashlib
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("dask")

from bigvolume.core.errors import BigVolumeError  # noqa: E402
from bigvolume.core.memory import current_rss, parse_size  # noqa: E402
from bigvolume.engine.plan import FIXED_OVERHEAD  # noqa: E402
from bigvolume.ops import pyramid as pyramid_module  # noqa: E402
from bigvolume.core.geometry import Geometry  # noqa: E402
from bigvolume.engine.loop import run_slabs  # noqa: E402
from bigvolume.ops.pyramid import RECORDS, pyramid  # noqa: E402
from bigvolume.testing.zarr_stores import write_ome_zarr  # noqa: E402
from test_pyramid import run_cli, smooth_volume, write_input  # noqa: E402
from test_stacks import write_stack  # noqa: E402

MiB = 2**20


def stored_hashes(store: Path) -> dict:
    """Every stored file of every level (chunks, shards, metadata): its bytes' hash."""
    return {str(path.relative_to(store)): hashlib.sha1(path.read_bytes()).hexdigest()
            for path in sorted(Path(store).rglob("*")) if path.is_file() and RECORDS not in path.parts}


def traced_peak(run) -> int:
    """The most bytes ``run()`` had allocated at once beyond what was allocated before (numpy arrays included):
    what the pass holds, without the allocator's own slack."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# (shape z y x, dtype, options, input kind): rows of 32-64 MiB, larger than the limits below
CASES = [
    ((96, 640, 512), np.uint16, {"chunks": 64}, "nhdr"),
    ((70, 700, 600), np.uint16, {"chunks": (32, 64, 64), "shard": 2}, "nhdr"),
    ((40, 900, 1100), np.uint8, {"chunks": 32}, "nhdr"),
    ((36, 600, 700), np.uint16, {"chunks": 32}, "stack"),
    ((96, 640, 512), np.uint16, {"chunks": 64}, "zarr"),
]


def make_input(folder: Path, shape, dtype, kind) -> Path:
    array = smooth_volume(shape, dtype)
    if kind == "stack":
        write_stack(folder / "stack", array)
        return folder / "stack"
    if kind == "zarr":  # (input chunks of 24 slices: rows of output chunks cut them)
        return write_ome_zarr(folder / "in.ome.zarr", array, Geometry(array.shape[::-1]), chunks=24, factors=())
    return write_input(folder, array, name="in.nhdr")


@pytest.mark.parametrize("slab", [8, 16, 32])
def test_a_zarr_input_read_in_pieces_decodes_each_chunk_row_of_a_piece_once(tmp_path, monkeypatch, slab):
    """A piece of a row read slab by slab through read_box decoded each input chunk once per slab that touched
    it: pyramid from an OME-Zarr at 256MB took 1.8x the time of the same run before pieces (36 s against 20 s),
    now 10.7 s."""
    from bigvolume.io.zarr_input import ZarrSlabReader
    shape = (96, 640, 512)
    source = make_input(tmp_path, shape, np.uint16, "zarr")
    whole = pyramid(source, tmp_path / "whole.ome.zarr", chunks=64)
    boxes, original = [], ZarrSlabReader.read_box

    def read_box(self, box, out=None):
        boxes.append(box)
        return original(self, box, out)

    monkeypatch.setattr(ZarrSlabReader, "read_box", read_box)
    limit = current_rss() + FIXED_OVERHEAD + 64 * 640 * 512 * 2 // 2
    # slabs of a given size (the planned one follows what the process holds): 8, 16 and 32 cut the input's chunk
    # rows of 24 slices, so slabs span two of them
    monkeypatch.setattr(pyramid_module, "run_slabs",
                        lambda reader, stage, sink, planned, **kw: run_slabs(reader, stage, sink, slab, **kw))
    pyramid(source, tmp_path / "pieces.ome.zarr", chunks=64, memory_limit=limit)
    level0 = [box for box in boxes if box[1] != (0, shape[1]) or box[2] != (0, shape[2])]  # (pieces, not slabs)
    assert level0, "not read in pieces"
    assert all(b - a == min(24, shape[0] - a) and a % 24 == 0 for (a, b), _, _ in level0), level0[:5]
    pieces = {(y, x) for _, y, x in level0}
    # each input chunk row once per piece of each output row it lies in (rows of 64 slices: 0-64 and 64-96)
    touched = sum(len(range(z0 // 24, (z1 - 1) // 24 + 1)) for z0, z1 in ((0, 64), (64, 96)))
    assert len(level0) == len(pieces) * touched, (len(level0), len(pieces))
    assert stored_hashes(tmp_path / "pieces.ome.zarr") == stored_hashes(tmp_path / "whole.ome.zarr")


@pytest.mark.parametrize("shape, dtype, options, kind", CASES)
def test_rows_larger_than_the_limit_are_written_in_pieces_within_it_with_the_same_bytes(tmp_path, shape, dtype,
                                                                                         options, kind):
    source = make_input(tmp_path, shape, dtype, kind)
    whole = pyramid(source, tmp_path / "whole.ome.zarr", **options)
    row = options["chunks"] if np.isscalar(options["chunks"]) else options["chunks"][0]
    row_bytes = row * options.get("shard", 1) * shape[1] * shape[2] * np.dtype(dtype).itemsize
    # room for about half a row beside what the program holds
    limit = current_rss() + FIXED_OVERHEAD + row_bytes // 2
    before = current_rss()
    report = {}
    peak = traced_peak(lambda: report.update(r=pyramid(source, tmp_path / "pieces.ome.zarr", memory_limit=limit,
                                                       **options)))
    assert not [note for note in report["r"].notes if "memory limit" in note]  # it fits: nothing to say
    assert peak <= limit - before, f"held {peak / MiB:.1f} MiB, {(limit - before) / MiB:.1f} MiB allowed"
    assert peak < row_bytes  # a whole row was never held
    assert stored_hashes(tmp_path / "pieces.ome.zarr") == stored_hashes(tmp_path / "whole.ome.zarr")
    assert "read back" in report["r"].notes[0] and "in memory" in whole.notes[0]


@pytest.mark.parametrize("shape, chunks, shard, itemsize", [
    ((600, 777, 1001), 128, None, 2), ((600, 777, 1001), 128, 4, 2), ((2, 20000, 20000), 128, None, 1),
    ((30000, 200, 200), 128, None, 2), ((300, 2048, 2048), (64, 128, 256), 2, 2)])
@pytest.mark.parametrize("room", [64 * MiB, 300 * MiB, 2**30])
def test_the_planned_working_set_is_under_the_limit_when_one_piece_fits(shape, chunks, shard, itemsize, room):
    """The plan alone (no voxel read): the largest pieces whose working set fits; the smallest there is, one chunk
    or shard column, when none does."""
    from bigvolume.core.geometry import Geometry

    class Planned:  # what the planner asks of a reader: a file read slice by slice, not a compressed stream
        streams, hands_out_views, path = True, False, Path("in.raw")
        dtype = np.dtype(f"u{itemsize}")
        slice_shape, slices = shape[1:], shape[0]
        slice_bytes = shape[1] * shape[2] * itemsize
        geometry = Geometry(shape[::-1])

    reader = Planned()
    plan = pyramid_module._plan(reader, pyramid_module._chunks3(chunks), shard, None)
    rows = [(z0, min(z0 + plan[0].task_shape[0], shape[0])) for z0 in range(0, shape[0], plan[0].task_shape[0])]
    limit = current_rss() + room
    planned = pyramid_module._plan_level0(reader, plan, rows, list(range(len(rows))), [], 2, limit)
    smallest = pyramid_module._plan_level0(reader, plan, rows, list(range(len(rows))), [], 2, 0)
    tz, ty, tx = plan[0].task_shape
    assert smallest.band == (min(ty, shape[1]), min(tx, shape[2]))  # one chunk (or shard) column
    if smallest.needed <= limit:
        assert planned.needed <= limit
        assert planned.band[0] % ty == 0 or planned.band[0] == shape[1]
        assert planned.band[1] % tx == 0 or planned.band[1] == shape[2]
    else:
        assert planned.band == smallest.band
    if not planned.whole:  # the next larger band would not have fit
        assert planned.needed <= limit or planned.band == smallest.band


def test_a_compressed_row_too_large_for_the_limit_is_said_up_front(tmp_path):
    import bigvolume as bv
    array = smooth_volume((80, 600, 800))
    gz = tmp_path / "gz.nrrd"
    bv.write_volume(bv.Volume(array, bv.Geometry(array.shape[::-1])), gz, compress=True)
    # a row of 64 slices is 59 MiB; the command alone holds about 60-80 MiB
    done = run_cli("pyramid", gz, tmp_path / "out.ome.zarr", "--chunks", "64", "--memory-limit", "120MB")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "memory limit" in line]
    assert len(said) == 1, done.stderr
    assert "64 slices" in said[0] and "MiB" in said[0] and "read front to back" in said[0]
    assert "--chunks" in said[0] and "--shard" in said[0]


def test_a_limit_below_what_the_program_holds_is_said_and_the_pyramid_is_still_right(tmp_path):
    array = smooth_volume((40, 150, 130))
    source = write_input(tmp_path, array, name="in.nhdr")
    reference = pyramid(source, tmp_path / "ref.ome.zarr", chunks=32)
    report = pyramid(source, tmp_path / "tiny.ome.zarr", chunks=32, memory_limit=1e6)
    said = [note for note in report.notes if "memory limit" in note]
    assert said and "this program holds" in said[0] and "chunk column" in said[0]
    assert stored_hashes(tmp_path / "tiny.ome.zarr") == stored_hashes(tmp_path / "ref.ome.zarr")
    assert reference.notes[0] != said[0]


def test_workers_whose_limit_cannot_hold_one_task_are_refused_before_the_cluster_starts(tmp_path):
    pytest.importorskip("distributed")
    source = write_input(tmp_path, smooth_volume((128, 512, 512)), name="in.nhdr")
    # one level-1 task is a shard of 4^3 chunks of 64: it reads all of level 0 (64 MiB) and decodes it, beside the
    # 60-80 MiB a worker holds
    done = run_cli("pyramid", source, tmp_path / "out.ome.zarr", "--workers", "2", "--chunks", "64", "--shard", "4",
                   "--memory-limit", "150MB")
    assert done.returncode == 1
    assert "cannot hold one task of level 1" in done.stderr and "shard of" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.ome.zarr").exists() and not (tmp_path / "out.ome.zarr.partial").exists()


@pytest.mark.parametrize("limit_mib", [60, 150, 300, 900])
@pytest.mark.parametrize("shard", [2, 4])
def test_the_least_worker_limit_a_refusal_asks_for_is_then_accepted(limit_mib, shard):
    """The refusal asked for 276.48 MiB; at 277.52 MiB it asked for 281.38 MiB: the chunk cache grows with the
    limit, so the need at the limit given was no answer."""
    pytest.importorskip("dask")
    from bigvolume.io.slab_readers import ArraySlabReader
    plan = pyramid_module._plan(ArraySlabReader(np.zeros((128, 512, 512), np.uint16)), (64, 64, 64), shard, None)
    asked = limit_mib * 2**20
    try:
        pyramid_module._refuse_tasks_over_worker_limit(plan, np.uint16, "lanczos", asked)
        return  # held
    except BigVolumeError as refused:
        least = parse_size(re.search(r"at least ([\d.]+ [KMG]iB)", str(refused)).group(1).replace(" ", ""))
    least = int(least)
    pyramid_module._refuse_tasks_over_worker_limit(plan, np.uint16, "lanczos", least)  # accepted
    with pytest.raises(BigVolumeError):
        pyramid_module._refuse_tasks_over_worker_limit(plan, np.uint16, "lanczos", least - 2**20)


def test_resume_continues_a_run_written_in_pieces(tmp_path, monkeypatch):
    shape = (96, 640, 512)
    source = write_input(tmp_path, smooth_volume(shape), name="in.nhdr")
    reference = pyramid(source, tmp_path / "ref.ome.zarr", chunks=32)
    limit = current_rss() + FIXED_OVERHEAD + 32 * 640 * 512 * 2 // 2
    boxes, original = [], pyramid_module.Level0Stage._write_row

    def write_row(self, z0, z1):
        boxes.append((z0, self.box))
        if z0 >= 32:  # the second row: a crash after the first was recorded
            raise OSError("disk gone")
        return original(self, z0, z1)

    monkeypatch.setattr(pyramid_module.Level0Stage, "_write_row", write_row)
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(OSError):
        pyramid(source, out, chunks=32, memory_limit=limit, keep_partial=True)
    assert boxes and all(box != ((0, 640), (0, 512)) for _, box in boxes)  # pieces, not whole rows
    monkeypatch.setattr(pyramid_module.Level0Stage, "_write_row", original)
    resumed = pyramid(source, out, chunks=32, memory_limit=limit, resume=True)
    assert resumed.skipped_tasks == 1  # the first row
    assert stored_hashes(out) == stored_hashes(tmp_path / "ref.ome.zarr")
