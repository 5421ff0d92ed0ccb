"""Resampling on the slab engine (bigvolume.engine): a volume is read a slab of z slices at a time and
resampled with the per-axis kernel tables of bigvolume.kernels, so memory stays bounded whatever the volume size and
each input byte is read once. Files and arrays in memory go through the same loop (an array is read as slabs in
place), on whichever backend the caller gives (bigvolume.backends: numpy/BLAS by default, an array module such as
CuPy).

Per slab, the backend reduces every slice in x and y. The reduced slices go into a z window that keeps the z
kernel's margin from one slab to the next; the output slices whose kernel support is complete are then computed
along z over the window and handed to the sink.

The same tables also compute any output block on its own (:func:`resample_block`): a block reads the input region
it needs (its halo is the kernels' support) and is independent of every other block, for a scheduler that runs
blocks out of order or in parallel (the next step: Dask). Put together, blocks equal the streamed result: exactly
for the tap-by-tap methods (each output is the same sequence of numpy operations), to float rounding for Lanczos
(BLAS rounds a product differently with the shape of the matrices it is given: slab and block sizes, thread
splits; a few units in the last place of float32, integers within 1).

Integer inputs are converted to float per slab (into one reused buffer) and rounded once, at the end: results
agree with vtkImageResize (the definition of the Lanczos kernel) to float rounding (integers within 1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.dtypes import check_exact_in_float64
from ..core.errors import BigVolumeError
from ..core.progress import ProgressCallback
from ..io.slabs import ArraySlabReader, SlabReader
from ..methods.backends import Stages
from ..methods.kernels import SEPARABLE_METHODS, AxisKernel, ResampleKernels
from ..methods.numpy_band import NumpyBackend
from .loop import run_slabs
from .plan import StreamPlan, in_memory_limit, plan_slabs
from .sinks import ArraySink, file_sink

STREAMABLE_METHODS = SEPARABLE_METHODS
WINDOW_SLABS = 4    # slabs the z window holds beyond the kernel's margin (see ResampleStage.push)
READ_SLABS = 3      # input slab buffers at once: the one filtered and those read ahead (bigvolume.engine)

__all__ = ["STREAMABLE_METHODS", "ArraySink", "ResampleStage", "StreamPlan", "downsample_in_memory", "estimate_stream",
           "output_blocks", "resample_block", "stream_downsample", "stream_to_file"]


def resample_kernels(reader: SlabReader, factors, method: str) -> ResampleKernels:
    if method not in STREAMABLE_METHODS:
        raise BigVolumeError(f"method {method!r} needs the whole volume in memory and cannot stream; "
                             f"streaming methods: {', '.join(STREAMABLE_METHODS)}")
    shape = reader.geometry.shape + reader.slice_shape[2:]
    return ResampleKernels.for_factors(method, shape, reader.dtype, factors)


class ResampleStage:
    """The engine's stage for resampling: x/y per slab on the backend, then z over a window of reduced slices."""

    def __init__(self, kernels: ResampleKernels, stages: Stages, out_dtype):
        self.k, self.stages, self.out_dtype = kernels, stages, np.dtype(out_dtype)
        self.rows = kernels.z_kernel.size_out
        self.next_row = 0
        self.window = None
        self.lo = self.hi = 0

    def plan(self, reader: SlabReader, memory_limit: float) -> StreamPlan:
        """The largest slab whose buffers, with what the process already holds, stay under ``memory_limit``."""
        k, stages = self.k, self.stages
        reduced_slice = int(np.prod(k.reduced_shape)) * k.window_dtype.itemsize
        work_slice = int(np.prod(k.reduced_shape)) * k.work_dtype.itemsize
        out_rows_per_slice = k.z_kernel.size_out / reader.slices + 1e-9
        float_slice = 0 if k.convert_to is None else \
            reader.slice_bytes // reader.dtype.itemsize * k.convert_to.itemsize
        converting = k.convert_to is not None and reader.converts_on_read  # see NumpyStages.new_buffer
        read_slice = 0 if reader.holds_input else float_slice if converting else reader.slice_bytes
        per_slice = (READ_SLABS * read_slice  # filtered + read ahead (views of an array held: nothing)
                     + stages.slice_bytes     # the backend's own (a converted copy, the y-reduced slab)
                     + (1 + WINDOW_SLABS) * reduced_slice                 # x/y result, then its places in the window
                     + int(3 * work_slice * out_rows_per_slice))          # z sums and the cast output block
        # (the window never holds more than the volume's slices: 34 reduced slices counted for a 2-slice 8000^2
        # volume announced twice the buffers it used)
        fixed = stages.threads * stages.thread_bytes + min(k.z_span + 2, reader.slices) * reduced_slice
        plan = plan_slabs(reader.slices, reader.slice_bytes, per_slice, fixed, memory_limit,
                          max_slab_bytes=stages.max_slab_bytes, alignment=reader.slab_alignment)
        # Room for WINDOW_SLABS slabs behind the kernel's margin, but never more than the whole volume: the window
        # holds input slices only (keep_from .. k1, within 0 .. nk)
        nk, slab, span = reader.slices, plan.slab_slices, k.z_span
        plan.window_slices = min(WINDOW_SLABS * slab + span + 1, nk)
        return plan

    def start(self, plan: StreamPlan) -> None:
        self.window = self.stages.new_window(plan.window_slices)
        self.window_slices = plan.window_slices

    def new_buffer(self, reader, slices):
        return self.stages.new_buffer(reader, slices)

    def running(self, sink):
        return self.stages.running(sink)

    def push(self, k0: int, k1: int, slab, pool, sink) -> None:
        # The reduced slices lo .. hi-1, in order. Slices no output slice needs any more are dropped from the front
        # only when the next slab does not fit behind them: the window holds several slabs, so the copy that drops
        # them happens once every few slabs instead of once per slab.
        k, stages = self.k, self.stages
        if k.convert_to is not None and self.out_dtype.kind != "f":  # 64-bit integers may not come through
            check_exact_in_float64(slab, k.method)                  # (a float output rounds more itself)
        lo, hi = self.lo, self.hi
        keep_from = min(int(k.z_kernel.index[self.next_row].min()), hi) if self.next_row < self.rows else hi
        if hi - lo + (k1 - k0) > self.window_slices and keep_from > lo:
            stages.drop_front(self.window, keep_from - lo, hi - lo, pool)
            lo = keep_from
        if hi - lo + (k1 - k0) > self.window_slices:
            raise RuntimeError("z window too small for the kernel")
        # The backend writes the reduced slices into their place in the window; numpy skips the copy when it did.
        place = self.window[hi - lo:k1 - lo]
        place[...] = stages.reduce_xy(slab, pool, out=place)
        self.lo, self.hi = lo, k1
        first_row = self.next_row
        while self.next_row < self.rows and k.z_need[self.next_row] < k1:
            self.next_row += 1
        if self.next_row > first_row:
            rows = slice(first_row, self.next_row)
            kernel = AxisKernel(k.z_kernel.index[rows] - keep_from, k.z_kernel.weight[rows])
            block = stages.reduce_z(self.window[keep_from - lo:k1 - lo], kernel, pool)
            stages.emit(block, self.out_dtype, sink, pool)

    def check_complete(self) -> None:
        if self.next_row != self.rows:
            raise RuntimeError(f"streaming produced {self.next_row} of {self.rows} output slices")


def _stage(reader: SlabReader, kernels: ResampleKernels, out_dtype, threads: int, backend) -> ResampleStage:
    backend = backend or NumpyBackend()
    if not getattr(backend, "streams", False):
        raise BigVolumeError(f"backend {backend.name} works on whole volumes in memory and cannot stream")
    return ResampleStage(kernels, backend.stages(kernels, reader, threads), out_dtype)


def estimate_stream(reader: SlabReader, factors, method: str, *, out_dtype=None, threads: int = 1,
                    memory_limit: float, backend=None) -> StreamPlan:
    """The plan :func:`stream_downsample` would follow, without reading anything (for sizes shown before a run)."""
    stage = _stage(reader, resample_kernels(reader, factors, method), out_dtype or reader.dtype, threads, backend)
    return stage.plan(reader, memory_limit)


def stream_downsample(reader: SlabReader, factors, method: str, sink, *, out_dtype=None, threads: int = 1,
                      memory_limit: float, progress: ProgressCallback | None = None, backend=None,
                      timings: dict | None = None, message: str | None = None) -> StreamPlan:
    """Downsample the volume of ``reader`` by ``factors`` (I, J, K), handing finished ``(d, j, i[, c])`` blocks of
    output slices, in order, to ``sink.write``. Returns the plan it followed. ``backend``: what filters
    (bigvolume.methods.backends; default numpy/BLAS; bigvolume.methods.array_backend.ArrayBackend for CuPy).
    ``message``: what progress says (default: the slabs streamed)."""
    kernels = resample_kernels(reader, factors, method)
    stage = _stage(reader, kernels, out_dtype or reader.dtype, threads, backend)
    plan = stage.plan(reader, memory_limit)
    stage.start(plan)
    run_slabs(reader, stage, sink, plan.slab_slices, threads=threads, progress=progress, timings=timings,
              **({} if message is None else {"message": message, "start_message": message}))
    stage.check_complete()
    return plan


def downsample_in_memory(array: np.ndarray, factors, method: str, out_dtype=None, *, threads: int = 1,
                         memory_limit: float | None = None, progress: ProgressCallback | None = None,
                         backend=None, message: str | None = None) -> np.ndarray:
    """``array`` (k, j, i[, c]) downsampled by ``factors`` (I, J, K) through the same slab loop as a file (the
    array is read in place, slab by slab); a numpy array of ``out_dtype`` (default: the input's) comes back.
    ``memory_limit``: host bytes for the loop's buffers, default what the process holds plus 2 GiB."""
    out_dtype = np.dtype(out_dtype or array.dtype)
    reader = ArraySlabReader(array, threads=threads)
    out = np.empty(reader.geometry.downsampled(factors).shape + array.shape[3:], out_dtype)
    limit = memory_limit if memory_limit is not None else in_memory_limit(array.nbytes)
    stream_downsample(reader, factors, method, ArraySink(out), out_dtype=out_dtype, threads=threads,
                      memory_limit=limit, progress=progress, backend=backend, message=message)
    return out


def output_blocks(output_shape, block_shape):
    """The output blocks ((z0, z1), (y0, y1), (x0, x1)) of a regular grid of ``block_shape`` (k, j, i) voxels
    over ``output_shape`` (the last ones along each axis smaller): what a scheduler hands to resample_block."""
    ranges = [[(a, min(a + b, n)) for a in range(0, n, b)] for n, b in zip(output_shape[:3], block_shape)]
    return [(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]]


def resample_block(read_region, kernels: ResampleKernels, output_block, out_dtype=None, *, backend=None,
                   threads: int = 1, slab_slices: int | None = None) -> np.ndarray:
    """One output block of the resampling ``kernels`` describe, computed on its own: ``output_block`` is
    ((z0, z1), (y0, y1), (x0, x1)), output voxel ranges (half-open); ``read_region(region)`` returns the input
    voxels of ``region`` ((k, j, i) slices, as :meth:`ResampleKernels.block` gives them: the block's halo is the
    kernels' support). Blocks share nothing, so a scheduler may compute them in any order, in parallel; put
    together they equal the streamed result (exactly, or for Lanczos to float rounding: see the module docstring).
    ``slab_slices``: filter the region that many slices at a time (a fixed number: the result depends on the block
    alone), which keeps the x/y pass in the CPU caches (2x faster for 128^3 blocks of Lanczos at x2 than the default,
    the whole region in one slab)."""
    block_kernels, region = kernels.block(output_block)
    # A view is read as it is, slab by slab (each slab converted or copied into the filter's buffers): a copy of the
    # whole region first would double a block's memory for nothing.
    data = np.asarray(read_region(region))
    if data.shape != block_kernels.input_shape:
        raise ValueError(f"read_region returned {data.shape} for the region {region}")
    reader = ArraySlabReader(data)
    out = np.empty(block_kernels.output_shape, np.dtype(out_dtype or kernels.input_dtype))
    stage = _stage(reader, block_kernels, out.dtype, threads, backend)
    # By default the whole region in one slab, z window included: nothing is read twice.
    slab = min(slab_slices or reader.slices, reader.slices)
    window = min(WINDOW_SLABS * slab + block_kernels.z_span + 1, reader.slices)
    stage.start(StreamPlan(slab, -(-reader.slices // slab), 0, 0, window_slices=window))
    run_slabs(reader, stage, ArraySink(out), slab, threads=threads)
    stage.check_complete()
    return out


def stream_to_file(reader: SlabReader, output_path, factors, method: str, *, out_dtype=None, threads: int = 1,
                   compress: bool | None = None, memory_limit: float, progress: ProgressCallback | None = None,
                   backend=None, wrap_sink=None, filter_dtype=None, timings: dict | None = None,
                   message: str | None = None) -> StreamPlan:
    """Stream ``reader``'s volume through :func:`stream_downsample` into ``output_path`` (the engine's file sink:
    written slab by slab to a staging name, moved into place when complete). ``wrap_sink(writer)``: a sink put
    between the filter and the file (e.g. bigvolume.ops.precision.WindowedSink, mapping an intensity window onto
    the smaller ``out_dtype``); the filter then hands it blocks of ``filter_dtype``. ``message``: what progress says
    (default: the slabs streamed)."""
    out_dtype = np.dtype(out_dtype or reader.dtype)
    with file_sink(Path(output_path), reader.geometry.downsampled(factors), out_dtype, reader.components,
                   compress) as writer:
        sink = writer if wrap_sink is None else wrap_sink(writer)
        return stream_downsample(reader, factors, method, sink, out_dtype=filter_dtype or out_dtype,
                                 threads=threads, memory_limit=memory_limit, progress=progress, backend=backend,
                                 timings=timings, message=message)
