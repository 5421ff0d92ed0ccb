"""Haze removal's entry points: :func:`haze_mask`, :func:`dehaze` (in memory) and :func:`dehaze_file` (whole or
streamed), with the slab plan within the memory limit and the notes on the volume's shape."""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from ...core.errors import BigVolumeError, naming
from ...core.memory import format_bytes
from ...core.progress import Progress, ProgressCallback, as_progress
from ...core.volume import Volume
from ...engine.plan import StreamPlan, in_memory_limit, plan_input, plan_slabs
from ...engine.sinks import file_sinks
from ...io import files as io
from ...io.slabs import ArraySlabReader, open_slabs
from .compression import CompressedSizes
from .options import HazeOptions
from .pipeline import HazePipeline
from .report import DehazeReport, make_report
from .threshold import HazeThreshold, check_scalar, find_threshold

logger = logging.getLogger("bigvolume")


SLAB_VOXELS = 16 * 2**20               # slabs of about this size at most (larger ones gain nothing) ...
LABEL_CACHE_BYTES = 256 * 2**20        # ... and keep up to this much of the first passes' labels for the last


def _slab_plan(source, options: HazeOptions, memory_limit: float) -> StreamPlan:
    """Slices per slab within the memory limit (the engine's planner): per slice the input and output blocks, the
    labels (uint32) and the masks of the window, which also holds the halo (level auto: and the input voxels, for
    the partial-volume test); at most SLAB_VOXELS voxels a slab."""
    itemsize = source.dtype.itemsize
    per_slice = source.slice_bytes // itemsize * ((3 if options.denoise else 2) * itemsize + 4 + 8)
    return plan_slabs(source.slices, source.slice_bytes, per_slice, 2 * options.halo * per_slice, memory_limit,
                      max_slab_bytes=SLAB_VOXELS * itemsize, min_slabs=1,
                      alignment=source.slab_alignment)


def _in_memory_pipeline(array: np.ndarray, options: HazeOptions, threshold: HazeThreshold) -> HazePipeline:
    source = ArraySlabReader(array)
    return HazePipeline(source, options, threshold, _slab_plan(source, options, in_memory_limit()).slab_slices,
                        LABEL_CACHE_BYTES)


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


def dehaze_file(input_path, output_path, options: HazeOptions = HazeOptions(), *, mask_out=None, stream=None,
                memory_limit=None, measure_compression: bool = True, series: str | None = None,
                progress: ProgressCallback | None = None) -> DehazeReport:
    """Read, remove haze, write (and the haze mask as a uint8 label volume, 1 = haze, to ``mask_out``). Streams
    slab by slab by the engine's rule (:func:`bigvolume.engine.should_stream`: when input and output would not fit
    in ``memory_limit``, or when asked); the outputs appear only when complete."""
    from ...io.slab_writers import check_stream_output, writes_in_slabs

    started = time.perf_counter()
    if not isinstance(options, HazeOptions):
        raise BigVolumeError(f"options must be HazeOptions, got {type(options).__name__}")
    input_path, output_path = Path(input_path), Path(output_path)
    plan = plan_input(input_path, stream=stream, memory_limit=memory_limit, series=series)
    streams = plan.streams()
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
    with naming(input_path):
        if not streams and not outputs_in_slabs:  # e.g. .mha: SimpleITK writes it from whole arrays
            volume = io.read_volume(input_path, series)
            progress(0.05, "read")
            result, mask, report = dehaze(volume, options, measure_compression=measure_compression,
                                          progress=progress.sub(0.05, 0.9))
            io.write_volumes([(result, output_path)] + ([(Volume(mask.view(np.uint8), volume.geometry), mask_out)]
                                                        if mask_out is not None else []))
        else:  # output slabs go straight to the file: no whole output array, no copy for the writer
            notes = _notes_for(plan.geometry.shape, options)
            with contextlib.ExitStack() as stack:
                if streams:
                    for path, dtype in outputs:
                        check_stream_output(path, dtype, 1)
                    source = stack.enter_context(open_slabs(input_path, series))
                    slab_plan = _slab_plan(source, options, plan.memory_limit)
                    if slab_plan.note:
                        notes.append(slab_plan.note)
                    slab, cache = slab_plan.slab_slices, plan.memory_limit / 4
                else:
                    source = ArraySlabReader(io.read_volume(input_path, series).array)
                    slab, cache = _slab_plan(source, options, in_memory_limit()).slab_slices, LABEL_CACHE_BYTES
                threshold = find_threshold(source, options.level)
                progress(0.02, "threshold")
                pipeline = HazePipeline(source, options, threshold, slab, cache)
                sizes = CompressedSizes(pipeline.slices, source.slice_bytes) if measure_compression else None
                writers = stack.enter_context(file_sinks(outputs, plan.geometry))  # in place together, or neither

                def sink(k0, block, haze, output, obj):
                    writers[0].write(output)
                    if mask_out is not None:
                        writers[1].write(haze.view(np.uint8))
                    if sizes:
                        sizes.add(k0, block, output)

                fill = pipeline.run(options.fill, sink, progress.sub(0.02, 1.0))
            report = make_report(pipeline, threshold, fill, sizes, notes)
            if streams:
                report.streamed = (f"streamed in {len(pipeline.bounds)} slab{'s' * (len(pipeline.bounds) > 1)} "
                                   f"of {pipeline.slab_slices} slices (memory limit "
                                   f"{format_bytes(plan.memory_limit)})")
    progress(1.0, "written")
    for note in report.notes:
        logger.warning(note)  # the command line prints these on stderr
    report.output_path = output_path
    report.seconds = time.perf_counter() - started
    return report
