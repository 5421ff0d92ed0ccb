"""Haze removal's entry points: :func:`haze_mask`, :func:`dehaze` (in memory) and :func:`dehaze_file` (whole or
streamed), with the slab plan within the memory limit and the notes on the volume's shape."""
from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path

import numpy as np

from ...core.errors import BigVolumeError, naming
from ...core.memory import current_rss, format_bytes, physical_memory
from ...core.progress import Progress, ProgressCallback, as_progress
from ...core.volume import Volume
from ...engine.plan import (FIXED_OVERHEAD, READ_AHEAD, StreamPlan, in_memory_limit, plan_input, plan_slabs,
                            read_whole_note)
from ...engine.sinks import file_sinks
from ...io import files as io
from ...io.slabs import ArraySlabReader, open_slabs
from . import denoise
from .compression import CompressedSizes
from .morphology import PackedNeighbourhood
from .options import HazeOptions
from .pipeline import HazePipeline, check_fill
from .report import DehazeReport, make_report
from .threshold import HazeThreshold, check_scalar, find_threshold

logger = logging.getLogger("bigvolume")


SLAB_VOXELS = 16 * 2**20               # slabs of about this size at most (larger ones gain nothing) ...
LABEL_CACHE_BYTES = 256 * 2**20        # ... and keep up to this much of the first passes' labels for the last
# RSS over the arrays the passes hold (tracemalloc): blocks freed on the filter threads that glibc's arenas keep
# (1001 x 777 uint16, slabs of 4-16 slices: 1.3-1.5; with MALLOC_MMAP_THRESHOLD_=131072, 1.0)
ALLOCATOR_SLACK = 1.3
# A slab labelled, bytes a voxel: its dark voxels, SimpleITK's uint8 copy and uint32 labels, the bools looked up
LABEL_BYTES = 8


def _working_set(dtype, plane: int, slices: int, views: bool, options: HazeOptions) -> tuple[int, int]:
    """(bytes per slice of the slab, fixed bytes) the passes hold at their peak beside the label cache, the last
    pass's, as measured (RSS of streamed runs at slabs of 4 and 16 slices, uint8, uint16, float32; Testing/
    test_haze_memory.py): a slice of the slab, ``4 + 6 x itemsize`` bytes a voxel (the slabs read ahead, the one
    before still in the window, the halo reader's copy, the object's bools, the filled slab) or, where the reader
    hands out views of an array in memory, the labelling or the filled slab; fixed, the window's halos (their voxels,
    copied, and six bool masks: object, air, grown, settled, frontier and its points; closing's copy; level auto on
    other than 8- or 16-bit integers: the partial-volume test's sums at the frontier), the slabs' halo slices, and
    what each filter thread holds (the denoised copy's chunk, the partial-volume test's packed box). ``plane``:
    voxels a slice."""
    itemsize = np.dtype(dtype).itemsize
    halo = options.halo
    denoise_halo = denoise.DENOISE_HALO if options.denoise else 0
    copies = 0 if views else 1
    per_slice = plane * (4 + 6 * itemsize if copies else max(LABEL_BYTES, 4 + 2 * itemsize))
    window = (6 + (1 if options.close else 0) + (copies * itemsize if options.denoise else 0)
              + (8 if options.denoise and not denoise.exact_in_int32(dtype) else 0))
    halo_slices = min(2 * halo, max(0, slices - 1))  # the window's halos, as far as the volume goes
    fixed = plane * (copies * ((READ_AHEAD + 4) * denoise_halo + halo) * itemsize + halo + halo_slices * window)
    if options.denoise:
        box = 4 * 3 * PackedNeighbourhood.CHUNK_VOXELS  # int32, and its padding: at most 2 slices a slice
        fixed += denoise.SMOOTH_THREADS * max(denoise.smooth_chunk_bytes(dtype), box)
    return int(ALLOCATOR_SLACK * per_slice), int(ALLOCATOR_SLACK * fixed)


def _slab_plan(source, options: HazeOptions, memory_limit: float) -> StreamPlan:
    """Slices per slab within the memory limit (the engine's planner, :func:`_working_set`); at most SLAB_VOXELS
    voxels a slab. SimpleITK (the labelling) is loaded first: its library's 90 MiB count as held, for an input it
    reads (.mha, .nii) and for one it does not alike."""
    _load_labelling(options)
    per_slice, fixed = _working_set(source.dtype, source.slice_bytes // source.dtype.itemsize, source.slices,
                                    source.hands_out_views, options)
    return plan_slabs(source.slices, source.slice_bytes, per_slice, fixed, memory_limit,
                      max_slab_bytes=SLAB_VOXELS * source.dtype.itemsize, min_slabs=1,
                      alignment=source.slab_alignment)


def _load_labelling(options: HazeOptions) -> None:
    if options.air == "border" or options.largest_only:
        import SimpleITK  # noqa: F401


def _label_cache(plan: StreamPlan, cap: float) -> float:
    """What the first passes may keep of their labels for the last: the room the slabs leave under the limit."""
    return max(0.0, min(cap, plan.memory_limit - current_rss() - plan.working_bytes))


def _in_memory_pipeline(array: np.ndarray, options: HazeOptions, threshold: HazeThreshold) -> HazePipeline:
    source = ArraySlabReader(array)
    plan = _slab_plan(source, options, in_memory_limit())
    return HazePipeline(source, options, threshold, plan.slab_slices, _label_cache(plan, LABEL_CACHE_BYTES))


def _notes_for(shape, options: HazeOptions) -> list[str]:
    """What the user should know about this volume's shape."""
    thin = [name for name, n in zip("kji", shape) if n <= 2]
    if thin and options.air == "border":
        return [f"the volume is {min(shape)} voxel{'s' if min(shape) > 1 else ''} thin along {'/'.join(thin)}: "
                "every voxel touches its border, so all dark voxels are air"]
    return []


def _prepare(array: np.ndarray, options: HazeOptions, threshold: HazeThreshold | None) -> HazeThreshold:
    check_scalar(array)
    if not isinstance(options, HazeOptions):
        raise BigVolumeError(f"options must be HazeOptions, got {type(options).__name__}")
    return find_threshold(array, options.level) if threshold is None else threshold


def haze_mask(volume: Volume, options: HazeOptions = HazeOptions(), threshold: HazeThreshold | None = None, *,
              with_report: bool = False):
    """Bool (k, j, i): True where :func:`dehaze` sets the fill value. ``with_report``: (mask, the DehazeReport that
    :func:`dehaze` would give, without compressed sizes: threshold, counts, warning)."""
    threshold = _prepare(volume.array, options, threshold)
    mask = np.empty(volume.array.shape[:3], bool)

    def sink(k0, block, haze, output, obj):
        mask[k0:k0 + haze.shape[0]] = haze

    pipeline = _in_memory_pipeline(volume.array, options, threshold)
    fill = pipeline.run(options.fill, sink, Progress())
    if with_report:
        return mask, make_report(pipeline, threshold, fill, None, _notes_for(volume.array.shape, options))
    return mask


def dehaze(volume: Volume, options: HazeOptions = HazeOptions(), *, measure_compression: bool = True,
           progress: ProgressCallback | None = None) -> tuple[Volume, np.ndarray, DehazeReport]:
    """Haze removed: returns (a new volume, the haze mask, the report). The input is not modified."""
    progress = as_progress(progress)
    threshold = _prepare(volume.array, options, None)
    notes = _notes_for(volume.array.shape, options)
    array = volume.array
    output = np.empty(array.shape, array.dtype)
    mask = np.empty(array.shape, bool)
    pipeline = _in_memory_pipeline(array, options, threshold)
    sizes = CompressedSizes(pipeline.slices, pipeline.source.slice_bytes) if measure_compression else None

    def sink(k0, block, haze, out, obj):
        output[k0:k0 + out.shape[0]] = out
        mask[k0:k0 + haze.shape[0]] = haze
        if sizes:
            sizes.add(k0, block, out)

    fill = pipeline.run(options.fill, sink, progress)
    return Volume(output, volume.geometry), mask, make_report(pipeline, threshold, fill, sizes, notes)


def _note(notes: list, text: str) -> None:
    """Said at once (the command line prints it on stderr), before the work, and kept for the report."""
    notes.append(text)
    logger.warning(text)


def _whole_need(plan, options: HazeOptions, whole_outputs: bool, with_mask: bool) -> int:
    """Bytes a run that reads the input whole holds at most: what the process holds, the input, the passes' slabs
    over it, and where SimpleITK writes the outputs from whole arrays (.mha), the output and the mask (bools) and
    their copies for the writer. (The label cache takes only what room is left.)"""
    shape = plan.geometry.shape
    plane = shape[1] * shape[2]
    slab = max(1, min(shape[0], SLAB_VOXELS // max(1, plane)))
    per_slice, fixed = _working_set(plan.dtype, plane, shape[0], True, options)
    outputs = plan.input_bytes + (plan.geometry.voxel_count if with_mask else 0) if whole_outputs else 0
    # (the writer's copies are made once the passes are done)
    return current_rss() + plan.input_bytes + outputs + max(FIXED_OVERHEAD + fixed + slab * per_slice, outputs)


def _check_machine(path, what: str, need: int, memory_limit: int) -> None:
    """Refuse what this machine's memory cannot hold at all: the run would be killed after its work (or take the
    machine down with it), where over the limit alone it runs, said before."""
    physical = physical_memory()
    if physical and need > physical:
        raise BigVolumeError(f"{path}: {what} needs about {format_bytes(need)}, more than this machine's memory "
                             f"({format_bytes(physical)}; memory limit {format_bytes(memory_limit)}): it cannot run "
                             "here; crop or downsample the volume first (bigvolume resample)")


def _slab_notes(notes: list, path, source, options: HazeOptions, slab_plan: StreamPlan) -> None:
    """Before the first slab: that one slice does not fit the limit (or this machine: refused), and what a run in
    slabs of one slice costs when the volume could be read in larger ones."""
    per_slice, fixed = _working_set(source.dtype, source.slice_bytes // source.dtype.itemsize, source.slices,
                                    source.hands_out_views, options)
    held = current_rss()
    one = held + FIXED_OVERHEAD + fixed + per_slice
    rows, columns = source.slice_shape[:2]
    what = (f"one slice of {columns} x {rows} voxels ({format_bytes(source.slice_bytes)}) with its halo of "
            f"{options.halo} slices each side")
    planned = slab_plan.note
    if one > slab_plan.memory_limit:
        _check_machine(path, what, one, slab_plan.memory_limit)
        # (what the program holds named apart: 130 MiB of libraries read as a 1.5 MiB slice needing 297 MiB)
        _note(notes, f"{path}: {what} needs buffers of about {format_bytes(one - held)} to remove haze, which with "
                     f"the {format_bytes(held)} this program holds is more than the memory limit "
                     f"{format_bytes(slab_plan.memory_limit)}; streaming one slice at a time, over the limit")
        planned = re.sub(r"^memory limit .*? slice at a time \(buffers [^)]*\)(; )?", "", planned)  # said above
    elif slab_plan.slab_slices == 1 < min(source.slices, SLAB_VOXELS * source.dtype.itemsize // source.slice_bytes):
        wider = min(8, source.slices)
        _note(notes, f"{path}: the memory limit {format_bytes(slab_plan.memory_limit)} leaves room for slabs of one "
                     f"slice; each is read and worked on with {2 * options.halo} slices of halo, which is slow: "
                     f"--memory-limit {format_bytes(one + (wider - 1) * per_slice)} would allow slabs of {wider}")
    if planned:
        _note(notes, planned)


def dehaze_file(input_path, output_path, options: HazeOptions = HazeOptions(), *, mask_out=None, stream=None,
                memory_limit=None, measure_compression: bool = True, series: str | None = None,
                progress: ProgressCallback | None = None) -> DehazeReport:
    """Read, remove haze, write (and the haze mask as a uint8 label volume, 1 = haze, to ``mask_out``). Streams
    slab by slab by the engine's rule (:func:`bigvolume.engine.should_stream`: when what a run in memory needs,
    :func:`_whole_need`, would not fit in ``memory_limit``, or when asked); the outputs appear only when complete.
    What does not fit the limit is said before the work; what this machine's memory cannot hold is refused."""
    from ...io.slab_writers import check_stream_output, writes_in_slabs

    started = time.perf_counter()
    if not isinstance(options, HazeOptions):
        raise BigVolumeError(f"options must be HazeOptions, got {type(options).__name__}")
    input_path, output_path = Path(input_path), Path(output_path)
    plan = plan_input(input_path, stream=stream, memory_limit=memory_limit, series=series)
    if plan.components != 1:
        raise BigVolumeError(f"{input_path}: {plan.components} components per voxel (RGB or vector): haze removal "
                             "needs a scalar volume; convert it to gray first")
    io.check_output_path(output_path, inputs=[input_path])
    # (float16 from OME-Zarr: said before the work, naming the output; dehaze has no --type)
    io.check_writable_type(output_path, plan.dtype, "convert the input first, e.g. resample --factor 1 --type float32")
    if mask_out is not None:
        mask_out = Path(mask_out)
        io.check_output_path(mask_out, inputs=[input_path])
        shared = next((a for a in io.output_files(mask_out) for b in io.output_files(output_path)
                       if io.same_file(a, b)), None)
        if shared is not None:
            raise BigVolumeError(f"{mask_out}: the mask and the output {output_path} would both write {shared}")
    progress = as_progress(progress)
    outputs = [(output_path, plan.dtype)] + ([(mask_out, np.dtype(np.uint8))] if mask_out is not None else [])
    outputs_in_slabs = all(writes_in_slabs(path) for path, _ in outputs)
    _load_labelling(options)  # (held from here on: counted in what a run in memory needs)
    need = _whole_need(plan, options, not outputs_in_slabs, mask_out is not None)
    # haze's own need where the outputs can be written in slabs; else (SimpleITK's .mha) streaming is refused as
    # before when input and output do not fit, and a run in memory over the limit is said
    streams = plan.streams(need - plan.input_bytes) if outputs_in_slabs else plan.streams()
    notes: list = []
    with naming(input_path):
        check_fill(options.fill, plan.dtype)  # (before the notes: an error is the one line said)
        for text in _notes_for(plan.geometry.shape, options):
            _note(notes, text)
        with contextlib.ExitStack() as stack:
            if streams:
                for path, dtype in outputs:
                    check_stream_output(path, dtype, 1)
                source = stack.enter_context(open_slabs(input_path, series))
                slab_plan = _slab_plan(source, options, plan.memory_limit)
                _slab_notes(notes, input_path, source, options, slab_plan)
                cache = _label_cache(slab_plan, plan.memory_limit)
            else:
                whole = next((path for path, _ in outputs if not writes_in_slabs(path)), None)
                why = ("as asked" if plan.stream is False else "it cannot be read in slabs" if not plan.reads_in_slabs
                       else f"{whole.name if whole else 'the output'} is written from whole arrays")
                _check_machine(input_path, f"reading it whole ({why})", need, plan.memory_limit)
                whole_note = read_whole_note(input_path, why, need, plan.memory_limit)
                if whole_note:
                    _note(notes, whole_note)
                volume = io.read_volume(input_path, series)
                progress(0.05, "read")
                source = ArraySlabReader(volume.array)
                slab_plan = _slab_plan(source, options, max(plan.memory_limit, in_memory_limit(volume.array.nbytes)))
                cache = _label_cache(slab_plan, LABEL_CACHE_BYTES)
            said = len(notes)
            threshold = find_threshold(source, options.level)
            progress(0.02 if streams else 0.07, "threshold")
            pipeline = HazePipeline(source, options, threshold, slab_plan.slab_slices, cache)
            sizes = CompressedSizes(pipeline.slices, source.slice_bytes) if measure_compression else None
            if outputs_in_slabs:  # output slabs go straight to the file: no whole output array, no copy for the writer
                writers = stack.enter_context(file_sinks(outputs, plan.geometry))  # in place together, or neither

                def write(k0, haze, output):
                    writers[0].write(output)
                    if mask_out is not None:
                        writers[1].write(haze.view(np.uint8))
            else:  # e.g. .mha: SimpleITK writes it from whole arrays (the mask's only when asked for)
                result = np.empty(volume.array.shape, volume.array.dtype)
                mask = np.empty(volume.array.shape, bool) if mask_out is not None else None

                def write(k0, haze, output):
                    result[k0:k0 + output.shape[0]] = output
                    if mask is not None:
                        mask[k0:k0 + haze.shape[0]] = haze

            def sink(k0, block, haze, output, obj):
                write(k0, haze, output)
                if sizes:
                    sizes.add(k0, block, output)

            fill = pipeline.run(options.fill, sink, progress.sub(0.02 if streams else 0.07, 1.0 if outputs_in_slabs
                                                                 else 0.9))
            if not outputs_in_slabs:
                io.write_volumes([(Volume(result, volume.geometry), output_path)] +
                                 ([(Volume(mask.view(np.uint8), volume.geometry), mask_out)] if mask is not None
                                  else []))
        report = make_report(pipeline, threshold, fill, sizes, notes)
        if streams:
            report.streamed = (f"streamed in {len(pipeline.bounds)} slab{'s' * (len(pipeline.bounds) > 1)} "
                               f"of {pipeline.slab_slices} slices (memory limit "
                               f"{format_bytes(plan.memory_limit)})")
    progress(1.0, "written")
    for note in report.notes[said:]:
        logger.warning(note)  # the command line prints these on stderr (those before the work were said then)
    report.output_path = output_path
    report.seconds = time.perf_counter() - started
    return report
