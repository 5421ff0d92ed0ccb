"""Out-of-core downsampling: a volume file is read a slab of z slices at a time and resampled with exactly the
kernels of the in-memory path, so memory stays bounded whatever the volume size and each input byte is read once.

Per slab, every slice is first reduced in x and y with the kernel tables of bigvolume.methods.kernels. The reduced slices go
into a window that keeps the z kernel's margin from one slab to the next; the output slices whose kernel support is
complete are then computed along z over the window. The next slab is read on a thread while this one is filtered,
and finished output slices go to a writer (see bigvolume.io.slab_writers).

Lanczos, whose table reproduces vtkImageResize's kernel (the in-memory engine) to float rounding, runs as band
matrix products (kernels.BandMatrix, BLAS): two to three times faster than vtkImageResize per slab, which matters
because the filter, not reading, bounds a streamed import (benchmarks/stack_import.py). The other methods run tap
by tap.

Integer inputs are converted to float per slab (into one reused buffer) and rounded once, at the end, as in the
in-memory path: results agree to float rounding (integers within 1).
"""
from __future__ import annotations

import contextlib
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.dtypes import cast_to, work_dtype
from ..core.errors import BigVolumeError, VolumeFileError
from ..io.files import atomic_output
from ..methods.kernels import AxisKernel, _apply_axis, apply_separable, axis_kernel, axis_operator
from ..core.memory import current_rss, format_bytes
from ..ops.precision import Window, apply_window
from ..core.progress import ProgressCallback, as_progress
from ..io.slab_writers import BackgroundWriter, SlabWriter, check_stream_output, compresses
from ..io.slabs import SlabReader

STREAMABLE_METHODS = ("lanczos", "gaussian", "mean", "max", "nearest")
# Slabs per volume at least (so reading overlaps filtering and progress moves), and at most this many input bytes
# per slab (larger slabs gain nothing once vtk's threads are busy).
MIN_SLABS = 8
MAX_SLAB_BYTES = 32 * 2**20
FIXED_OVERHEAD = 24 * 2**20
READ_AHEAD = 2      # slabs read ahead of the one being filtered
WINDOW_SLABS = 4    # slabs the z window holds beyond the kernel's margin (see stream_downsample)  # decompression chunks, thread stacks, the output block in flight


@dataclass
class StreamPlan:
    slab_slices: int
    slabs: int
    window_slices: int      # reduced slices the z window holds
    working_bytes: int      # the buffers this plan allocates, at most
    memory_limit: int
    note: str = ""          # set when the limit was too small and the minimum was used instead
    clipped_voxels: int | None = None  # with an intensity window: output voxels clipped to the type's range

    def describe(self) -> str:
        return (f"streamed in {self.slabs} slab{'s' * (self.slabs != 1)} of {self.slab_slices} slice"
                f"{'s' * (self.slab_slices != 1)}, buffers {format_bytes(self.working_bytes)} "
                f"(limit {format_bytes(self.memory_limit)})")


def identity_kernel(n: int) -> AxisKernel:
    return AxisKernel(np.arange(n)[:, None], np.ones((n, 1)))


class _Stages:
    """The x/y reduction of one slab and the z kernel, for one method, input type and factor set."""

    def __init__(self, reader: SlabReader, factors, method: str, out_dtype: np.dtype, threads: int):
        if method not in STREAMABLE_METHODS:
            raise BigVolumeError(f"method {method!r} needs the whole volume in memory and cannot stream; "
                                 f"streaming methods: {', '.join(STREAMABLE_METHODS)}")
        self.method, self.threads = method, threads
        self.reduce = "max" if method == "max" else "sum"
        ni, nj, nk = reader.geometry.dimensions
        self.output_geometry = reader.geometry.downsampled(factors)
        mi, mj, mk = self.output_geometry.dimensions
        self.factors = tuple(float(f) for f in factors)
        self.input_dtype = reader.dtype
        # Integers are filtered in floating point, as in the in-memory path: vtk would round and clamp the x/y
        # result to the input type, and a clamped Lanczos overshoot changes the z sums by far more than 1.
        linear = method in ("lanczos", "gaussian", "mean")
        self.convert_to = work_dtype(reader.dtype) if linear and reader.dtype.kind != "f" else None
        self._converted = None
        filtered_dtype = reader.dtype if self.convert_to is None else self.convert_to
        self.skip_xy = (mi, mj) == (ni, nj) and self.factors[:2] == (1.0, 1.0)
        if method == "lanczos" or self.skip_xy or method in ("max", "nearest"):
            self.window_dtype = filtered_dtype  # vtk keeps the type; max and nearest only pick values
        else:
            self.window_dtype = work_dtype(filtered_dtype)
        self.work_dtype = work_dtype(filtered_dtype) if self.reduce == "sum" else self.window_dtype
        self.xy_kernels = None if self.skip_xy else (
            axis_kernel(method, ni, self.factors[0], mi), axis_kernel(method, nj, self.factors[1], mj))
        self.band = method == "lanczos"  # band matrix products; the other methods tap by tap
        self._split_products = False     # set by running(): BLAS kept to one thread, products split over ours
        self.band_between_bytes = 0      # per slice: the x-reduced slice before the y product
        if self.band and not self.skip_xy:
            self._along_i = axis_operator(self.xy_kernels[0], ni, "sum", self.work_dtype)
            self._along_j = axis_operator(self.xy_kernels[1], nj, "sum", self.work_dtype)
            self.band_between_bytes = nj * mi * int(np.prod(reader.slice_shape[2:])) * self.work_dtype.itemsize
        self.z_kernel = axis_kernel(method, nk, self.factors[2], mk)
        self.z_need = self.z_kernel.index.max(axis=1)  # last input slice each output slice reads
        self.z_span = int((self.z_kernel.index.max(axis=1) - self.z_kernel.index.min(axis=1)).max())
        self.reduced_shape = (mj, mi) + reader.slice_shape[2:]

    # How the streaming loop allocates and moves data: host memory here; bigvolume.engine.gpu.ArrayStages overrides
    # these to keep the window on a GPU and overlap transfers with the filtering.
    max_slab_bytes = MAX_SLAB_BYTES

    def new_buffer(self, reader: SlabReader, slices: int):
        # A decoding reader fills float buffers directly: the conversion then runs on its threads, not here.
        converting = self.convert_to is not None and reader.converts_on_read
        return reader.new_buffer(slices, self.convert_to if converting else None)

    def new_window(self, slices: int):
        return np.empty((slices,) + self.reduced_shape, self.window_dtype)

    def drop_front(self, window, start: int, stop: int) -> None:
        window[:stop - start] = window[start:stop]  # numpy handles the overlap

    def emit(self, block, out_dtype, sink) -> None:
        sink.write(cast_to(block, out_dtype))

    @contextlib.contextmanager
    def running(self, sink):
        """Context of the whole loop; on success, everything emitted has reached ``sink`` when it exits. Band
        products run with BLAS kept to one thread and are split over our own ``threads``: BLAS's threads spin while
        they wait for work, which took the CPU the decoding threads needed (an image-stack import on 2 cores spent
        a third more CPU and ran 15 % slower). Without threadpoolctl, BLAS keeps its own threads."""
        limit = _one_blas_thread() if self.band else None
        if limit is None:
            yield
            return
        with limit:
            self._split_products = True
            try:
                yield
            finally:
                self._split_products = False

    def _band_pool(self, pool):
        """``pool`` when the band products are to be split over it (BLAS kept to one thread), else None."""
        return pool if self._split_products and self.threads > 1 else None

    def reduce_xy(self, slab: np.ndarray, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
        if self.convert_to is not None and slab.dtype != self.convert_to:
            if self._converted is None or self._converted.shape[0] < slab.shape[0]:
                self._converted = np.empty(slab.shape, self.convert_to)
            converted = self._converted[:slab.shape[0]]
            np.copyto(converted, slab, casting="unsafe")
            slab = converted
        if self.skip_xy:
            return slab
        if self.band:
            pool, parts = self._band_pool(pool), self.threads
            return self._along_j(self._along_i(slab, 2, pool, parts), 1, pool, parts)
        kernel_i, kernel_j = self.xy_kernels
        return apply_separable(slab, (kernel_i, kernel_j, identity_kernel(slab.shape[0])), self.reduce,
                               self.window_dtype, self.threads)

    def reduce_z(self, window: np.ndarray, first: int, rows: slice,
                 pool: ThreadPoolExecutor | None = None) -> np.ndarray:
        """Output slices ``rows`` from ``window``, the reduced input slices ``first``, ``first + 1``, ... Band
        products are split over ``pool``'s threads while running() keeps BLAS to one; the tap-by-tap methods split
        the slice's rows over them (numpy releases the GIL)."""
        kernel = AxisKernel(self.z_kernel.index[rows] - first, self.z_kernel.weight[rows])
        if self.band:
            return axis_operator(kernel, -1, "sum", self.work_dtype)(window, 0, self._band_pool(pool), self.threads)
        height = window.shape[1]
        if pool is None or self.threads <= 1 or height < 2 * self.threads:
            return _apply_axis(window, kernel, 0, self.reduce, self.work_dtype)
        bounds = np.linspace(0, height, self.threads + 1).astype(int)
        parts = pool.map(lambda j: _apply_axis(window[:, bounds[j]:bounds[j + 1]], kernel, 0, self.reduce,
                                               self.work_dtype), range(self.threads))
        return np.concatenate(list(parts), axis=1)


def _one_blas_thread():
    """A context keeping BLAS to one thread (threadpoolctl), or None when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=1, user_api="blas")


def plan_stream(reader: SlabReader, stages: _Stages, memory_limit: float) -> StreamPlan:
    """The largest slab whose buffers, with what the process already holds, stay under ``memory_limit``."""
    nk = reader.slices
    reduced_slice = int(np.prod(stages.reduced_shape)) * stages.window_dtype.itemsize
    work_slice = int(np.prod(stages.reduced_shape)) * stages.work_dtype.itemsize
    out_rows_per_slice = 1.0 / stages.factors[2] + 1e-9
    float_slice = 0 if stages.convert_to is None else \
        reader.slice_bytes // reader.dtype.itemsize * stages.convert_to.itemsize
    converting = stages.convert_to is not None and reader.converts_on_read  # see _Stages.new_buffer
    per_slice = ((READ_AHEAD + 1) * (float_slice if converting else reader.slice_bytes)  # filtered + read ahead
                 + (0 if converting else float_slice)                     # the converted copy
                 + stages.band_between_bytes                               # x result before y (band products)
                 + (1 + WINDOW_SLABS) * reduced_slice                     # x/y result, then its places in the window
                 + int(3 * work_slice * out_rows_per_slice))              # z sums and the cast output block
    # numpy x/y: a few float copies of a slice per thread
    per_thread = 3 * reader.slice_bytes // reader.dtype.itemsize * 4 \
        if stages.xy_kernels is not None and not stages.band else 0
    fixed = FIXED_OVERHEAD + stages.threads * per_thread + (stages.z_span + 2) * reduced_slice
    in_use = current_rss()
    slab = (int(memory_limit) - in_use - fixed) // per_slice
    note = ""
    if slab < 1:
        slab = 1
        note = (f"memory limit {format_bytes(memory_limit)} leaves no room beside the {format_bytes(in_use)} this "
                f"program already uses; streaming one slice at a time (buffers {format_bytes(fixed + per_slice)})")
    slab = int(min(slab, max(1, -(-nk // MIN_SLABS)), max(1, stages.max_slab_bytes // reader.slice_bytes), nk))
    slabs = -(-nk // slab)
    # Room for WINDOW_SLABS slabs behind the kernel's margin, but never more than the whole volume needs.
    window = min(WINDOW_SLABS * slab + stages.z_span + 1, max(nk, slab + stages.z_span + 1))
    working = fixed + slab * per_slice  # fixed holds the kernel's margin; per_slice the window's slab places
    return StreamPlan(slab, slabs, window, int(working), int(memory_limit), note)


def estimate_stream(reader: SlabReader, factors, method: str, *, out_dtype=None, threads: int = 1,
                    memory_limit: float) -> StreamPlan:
    """The plan :func:`stream_downsample` would follow, without reading anything (for sizes shown before a run)."""
    stages = _Stages(reader, factors, method, np.dtype(out_dtype or reader.dtype), threads)
    return plan_stream(reader, stages, memory_limit)


def stream_downsample(reader: SlabReader, factors, method: str, sink, *, out_dtype=None, threads: int = 1,
                      memory_limit: float, progress: ProgressCallback | None = None, xp=None) -> StreamPlan:
    """Downsample the volume of ``reader`` by ``factors`` (I, J, K), handing finished ``(d, j, i[, c])`` blocks of
    output slices, in order, to ``sink.write``. Returns the plan it followed. ``xp``: filter with that array
    module (CuPy: on the GPU) through bigvolume.engine.gpu instead of vtk and the numpy tables."""
    out_dtype = np.dtype(out_dtype or reader.dtype)
    if xp is None:
        stages = _Stages(reader, factors, method, out_dtype, threads)
    else:
        from .gpu import ArrayStages  # it builds on this module
        stages = ArrayStages(reader, factors, method, out_dtype, threads, xp)
    plan = plan_stream(reader, stages, memory_limit)
    progress = as_progress(progress)
    nk = reader.slices
    mk = stages.output_geometry.dimensions[2]
    # The reduced slices lo .. hi-1, in order. Slices no output slice needs any more are dropped from the front
    # only when the next slab does not fit behind them: the window holds several slabs, so the copy that drops
    # them happens once every few slabs instead of once per slab.
    window = stages.new_window(plan.window_slices)
    lo = hi = 0
    slabs = [(k0, min(k0 + plan.slab_slices, nk)) for k0 in range(0, nk, plan.slab_slices)]
    # READ_AHEAD slabs are read while one is filtered, so a slow slice (or a reader briefly starved of CPU by
    # the filter's threads) does not stall the filter.
    buffers = [stages.new_buffer(reader, plan.slab_slices) for _ in range(min(READ_AHEAD + 1, len(slabs)))]
    progress(0.0, f"streaming {len(slabs)} slabs")
    next_row = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigvolume-reader") as pool, \
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bigvolume-filter") as filter_pool, \
            stages.running(sink):
        pending = deque(pool.submit(reader.read, *slabs[n], buffers[n]) for n in range(len(buffers) - 1))
        try:
            for number, (k0, k1) in enumerate(slabs):
                slab = pending.popleft().result()
                ahead = number + len(buffers) - 1
                if ahead < len(slabs):  # into the buffer the previous slab used, done with
                    pending.append(pool.submit(reader.read, *slabs[ahead], buffers[ahead % len(buffers)]))
                reduced = stages.reduce_xy(slab, filter_pool)
                keep_from = min(int(stages.z_kernel.index[next_row].min()), hi) if next_row < mk else hi
                if hi - lo + (k1 - k0) > plan.window_slices and keep_from > lo:
                    stages.drop_front(window, keep_from - lo, hi - lo)
                    lo = keep_from
                if hi - lo + (k1 - k0) > plan.window_slices:
                    raise RuntimeError("z window too small for the kernel")
                window[hi - lo:k1 - lo] = reduced
                hi = k1
                del reduced
                first_row = next_row
                while next_row < mk and stages.z_need[next_row] < k1:
                    next_row += 1
                if next_row > first_row:
                    block = stages.reduce_z(window[keep_from - lo:hi - lo], keep_from,
                                            slice(first_row, next_row), filter_pool)
                    stages.emit(block, out_dtype, sink)
                progress(k1 / nk, f"slab {number + 1}/{len(slabs)}")
        finally:
            for future in pending:
                future.cancel()
    if next_row != mk:
        raise RuntimeError(f"streaming produced {next_row} of {mk} output slices")
    return plan


class ArraySink:
    """Writes output slices in order into a preallocated ``(k, j, i[, c])`` array (e.g. a volume node's voxels)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.filled = 0

    def write(self, block: np.ndarray) -> None:
        self.array[self.filled:self.filled + block.shape[0]] = block
        self.filled += block.shape[0]


class WindowedSink:
    """Maps filtered float blocks through an intensity window onto a smaller integer type before ``sink``."""

    def __init__(self, sink, window: Window, dtype):
        self.sink, self.window, self.dtype = sink, window, np.dtype(dtype)
        self.clipped = 0

    def write(self, block: np.ndarray) -> None:
        mapped, clipped = apply_window(block, self.window, self.dtype)
        self.clipped += clipped
        self.sink.write(mapped)


def stream_to_file(reader: SlabReader, output_path, factors, method: str, *, out_dtype=None, threads: int = 1,
                   compress: bool | None = None, memory_limit: float,
                   window: Window | None = None, progress: ProgressCallback | None = None, xp=None) -> StreamPlan:
    """Stream ``reader``'s volume through :func:`stream_downsample` into ``output_path`` (written slab by slab to
    a staging name, moved into place when complete). ``window``: filter in float and map this intensity window
    onto the integer ``out_dtype``. ``xp``: the array module to filter with (see stream_downsample)."""
    output_path = Path(output_path)
    out_dtype = np.dtype(out_dtype or reader.dtype)
    output_geometry = reader.geometry.downsampled(factors)
    check_stream_output(output_path, out_dtype, reader.components)
    if not compresses(output_path, compress):
        needed = output_geometry.voxel_count * reader.components * out_dtype.itemsize
        free = shutil.disk_usage(output_path.parent if str(output_path.parent) else ".").free
        if needed > free:
            raise VolumeFileError(f"{output_path}: not enough disk space: the output needs {format_bytes(needed)}, "
                                  f"{format_bytes(free)} are free")
    try:
        with atomic_output(output_path) as staging_path:
            writer = BackgroundWriter(SlabWriter(staging_path, output_geometry, out_dtype, reader.components,
                                                 compress))
            sink = writer if window is None else WindowedSink(writer, window, out_dtype)
            try:
                plan = stream_downsample(reader, factors, method, sink,
                                         out_dtype=out_dtype if window is None else np.float32, threads=threads,
                                         memory_limit=memory_limit, progress=progress, xp=xp)
            except BaseException:
                writer.abort()
                raise
            writer.close()
    except OSError as error:
        raise VolumeFileError(f"{output_path}: cannot write ({error.strerror or error}); nothing was written") \
            from None
    if window is not None:
        plan.clipped_voxels = sink.clipped
    return plan
