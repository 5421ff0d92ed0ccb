"""Haze removal's memory (bigvolume.ops.haze.api): the working set the slab plan counts against what the passes
hold (tracemalloc), on wide-and-thin and tall-and-narrow volumes of 8-, 16-bit and float voxels; what does not fit
said before the first slab, what this machine cannot hold refused in one line, --no-stream over the limit said;
the denoised copy and the partial-volume test by rows of a slice give the same bits as by whole slices."""
import logging
import tracemalloc

import numpy as np
import pytest

from bigvolume.core.errors import BigVolumeError
from bigvolume.core.memory import current_rss
from bigvolume.core.progress import Progress
from bigvolume.engine.plan import FIXED_OVERHEAD
from bigvolume.io import files as io
from bigvolume.io import slab_readers
from bigvolume.io.slabs import open_slabs
from bigvolume.ops.haze import HazeOptions, api, denoise, dehaze, dehaze_file, find_threshold, morphology
from bigvolume.ops.haze.pipeline import HazePipeline
from test_haze import oblique, smooth_blobs

pytestmark = pytest.mark.core

SHAPES = {"wide-thin-uint8": ((3, 700, 900), np.uint8), "uint16": ((24, 260, 300), np.uint16),
          "float32": ((12, 300, 280), np.float32), "tall-narrow-uint16": ((300, 30, 40), np.uint16)}


def volume_of(shape, dtype, seed=0):
    values = smooth_blobs(shape, seed)  # 0 .. 1000 and noise
    if np.dtype(dtype) == np.uint8:
        values = values / 4
    return oblique(np.rint(values).astype(dtype) if np.dtype(dtype).kind in "iu" else values.astype(dtype))


@pytest.fixture(autouse=True)
def copied_reads(monkeypatch):
    monkeypatch.setenv("BIGVOLUME_MAPPED_READ", "never")  # slabs read into buffers: the plan's case, and traced


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("options", [HazeOptions(), HazeOptions(level=5, close=1)], ids=["auto", "level5-close"])
def test_the_planned_working_set_holds_what_the_passes_allocate(tmp_path, name, options):
    shape, dtype = SHAPES[name]
    path = io.write_volume(volume_of(shape, dtype), tmp_path / "in.nhdr")
    with open_slabs(path) as source:
        threshold = find_threshold(source, options.level)
        for room in (8 * 2**20, 64 * 2**20):  # slabs of 1 slice (over the limit), and of several
            plan = api._slab_plan(source, options, current_rss() + FIXED_OVERHEAD + room)
            tracemalloc.start()
            try:
                HazePipeline(source, options, threshold, plan.slab_slices, 0).run(options.fill, lambda *args: None,
                                                                                  Progress())
                traced = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            planned = plan.working_bytes - FIXED_OVERHEAD
            # (the plan counts RSS, ALLOCATOR_SLACK over what is traced; of the engine's FIXED_OVERHEAD, 1 MiB for
            # the bookkeeping of hundreds of slabs of a narrow volume: labels joined, progress)
            assert traced <= planned + 2**20, f"{name}, {plan.describe()}: traced {traced}"
            assert planned < 4 * traced + 2 * 2**20 * 26 * denoise.SMOOTH_THREADS, "planned far more than used"


def test_what_a_run_in_memory_needs_decides_to_stream(tmp_path, caplog):
    """2 slices of 1500^2: input and output fit the limit, the passes' slices do not: it streams, and says so."""
    path = io.write_volume(volume_of((2, 1500, 1500), np.uint8), tmp_path / "wide.nhdr")
    caplog.set_level(logging.WARNING, "bigvolume")
    report = dehaze_file(path, tmp_path / "out.nhdr", memory_limit=current_rss() + 2 * 1500 * 1500 * 2 + 2**20)
    assert report.streamed
    expected, _, _ = dehaze(io.read_volume(path))
    np.testing.assert_array_equal(io.read_volume(tmp_path / "out.nhdr").array, expected.array)


def test_a_slice_over_the_limit_is_said_before_the_first_slab_is_read(tmp_path, caplog, monkeypatch):
    path = io.write_volume(volume_of((3, 700, 900), np.uint8), tmp_path / "wide.nhdr")
    said_before_reading = []
    original = slab_readers.SlabReader.read

    def read(self, k0, k1, out=None):
        said_before_reading.append(any("one slice of 900 x 700" in r.getMessage() for r in caplog.records))
        return original(self, k0, k1, out)

    monkeypatch.setattr(slab_readers.SlabReader, "read", read)
    caplog.set_level(logging.WARNING, "bigvolume")
    report = dehaze_file(path, tmp_path / "out.nhdr", stream=True, memory_limit="64MB")
    assert said_before_reading and all(said_before_reading)
    note = next(n for n in report.notes if "one slice of" in n)
    assert str(path) in note and "615.23 KiB" in note and "more than the memory limit 61.04 MiB" in note
    assert "streaming one slice at a time" in note and "needs buffers of about" in note
    assert "this program holds" in note  # (what it holds named apart from what the slice needs)
    assert sum("one slice at a time" in r.getMessage() for r in caplog.records) == 1  # (not the planner's too)


@pytest.mark.parametrize("stream", [True, False])
def test_what_this_machine_cannot_hold_is_refused_in_one_line(tmp_path, monkeypatch, stream):
    path = io.write_volume(volume_of((3, 200, 240), np.uint16), tmp_path / "in.nhdr")
    monkeypatch.setattr(api, "physical_memory", lambda: 2**20)
    with pytest.raises(BigVolumeError) as refused:
        dehaze_file(path, tmp_path / "out.nhdr", stream=stream, memory_limit="1MB")
    message = str(refused.value)
    assert str(path) in message and "needs about" in message and "more than this machine's memory (1.00 MiB" in message
    assert "memory limit 976.56 KiB" in message and "\n" not in message
    assert not (tmp_path / "out.nhdr").exists()


def test_no_stream_over_the_limit_is_said_before_reading(tmp_path, caplog, monkeypatch):
    path = io.write_volume(volume_of((6, 200, 240), np.uint16), tmp_path / "in.nhdr")
    read_at = []
    original = io.read_volume
    monkeypatch.setattr(io, "read_volume", lambda *args: read_at.append(len(caplog.records)) or original(*args))
    caplog.set_level(logging.WARNING, "bigvolume")
    report = dehaze_file(path, tmp_path / "out.nhdr", stream=False, memory_limit="1MB")
    note = f"{path}: reading it whole (as asked) needs about"
    assert any(n.startswith(note) and n.endswith("more than the memory limit 976.56 KiB") for n in report.notes)
    assert read_at and any(r.getMessage().startswith(note) for r in caplog.records[:read_at[0]])


def test_one_slice_slabs_of_a_volume_that_could_take_more_are_said(tmp_path, caplog):
    path = io.write_volume(volume_of((24, 260, 300), np.uint16), tmp_path / "in.nhdr")
    per_slice, fixed = api._working_set(np.uint16, 260 * 300, 24, False, HazeOptions())
    caplog.set_level(logging.WARNING, "bigvolume")
    report = dehaze_file(path, tmp_path / "out.nhdr", stream=True,
                         memory_limit=current_rss() + FIXED_OVERHEAD + fixed + 1.5 * per_slice)
    assert "of 1 slices" in report.streamed
    assert any("leaves room for slabs of one slice" in n and "would allow slabs of 8" in n for n in report.notes)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_rows_of_a_slice_give_the_bits_of_whole_slices(tmp_path, monkeypatch, dtype):
    """The denoised copy and the partial-volume test of slices larger than a chunk go by rows: the same output."""
    volume = volume_of((5, 90, 70), dtype, seed=3)
    expected, expected_mask, _ = dehaze(volume)
    monkeypatch.setattr(denoise, "SMOOTH_CHUNK_VOXELS", 1000)  # rows of 14 voxels: chunks of some rows
    monkeypatch.setattr(morphology.PackedNeighbourhood, "CHUNK_VOXELS", 500)
    result, mask, _ = dehaze(volume)
    np.testing.assert_array_equal(result.array, expected.array)
    np.testing.assert_array_equal(mask, expected_mask)


@pytest.mark.parametrize("suffix", [".mha", ".nhdr"])
def test_whole_array_outputs_equal_the_streamed_ones(tmp_path, suffix):
    """The .mha branch fills one output array (and a mask only when asked), the result of every other path."""
    volume = volume_of((10, 60, 70), np.uint16, seed=5)
    path = io.write_volume(volume, tmp_path / "in.nhdr")
    expected, expected_mask, _ = dehaze(volume)
    dehaze_file(path, tmp_path / f"out{suffix}")
    dehaze_file(path, tmp_path / f"masked{suffix}", mask_out=tmp_path / f"mask{suffix}")
    for name in ("out", "masked"):
        np.testing.assert_array_equal(io.read_volume(tmp_path / f"{name}{suffix}").array, expected.array)
    np.testing.assert_array_equal(io.read_volume(tmp_path / f"mask{suffix}").array, expected_mask.view(np.uint8))
