"""The default backend: the kernel tables as band matrix products (BLAS) for Lanczos, tap by tap for the other methods.
It equals vtkImageResize (the definition of the Lanczos kernel, bigvolume.methods.vtk_resize) to float rounding and
is the fastest on the CPU. See bigvolume.methods.backends for the protocol it implements."""
from __future__ import annotations

import contextlib
import time

import numpy as np

from ..core.dtypes import cast_to, work_dtype
from ..core.memory import MAX_SLAB_BYTES
from .kernels import X_BLOCK_OUTPUTS, X_PRODUCT_ROWS, AxisKernel, ResampleKernels, apply_axis, axis_operator

# Inputs per band-matrix block along y (the middle axis), products over whole rows of one slice at a time: smaller
# blocks multiply fewer zeros, and products this small run on OpenBLAS's unpacked "small matrix" kernels (see
# X_BLOCK_OUTPUTS). One thread, CPU ms per slice of the y pass, 24 inputs against 16: x2 1024^2 0.78 -> 0.70, 2048^2
# 4.29 -> 2.90, 512^2 0.23 -> 0.20; x3 0.95 -> 0.83, 2048^2 2.80 -> 2.24; x4 0.59 -> 0.47, 2048^2 2.42 -> 1.98
# (12 and 32 slower than both at every factor).
Y_BLOCK_INPUTS = 16
# Input bytes the tap-by-tap methods filter at a time (a few slices: they and their y results stay in cache).
GROUP_BYTES = 2**20
# Float bytes of the slices a thread converts and runs through the y and x band products at a time (at least one
# slice): 512^2 uint16 slices, one thread, x/y CPU seconds of 16-slice slabs against whole-slab passes: 1 MiB 0.8x,
# 4 MiB 0.7x (fewer calls per slice); 1024^2 slices: 0.8x either way.
BAND_GROUP_BYTES = 4 * 2**20
# Output voxels below which the final cast runs on the loop's thread alone (splitting costs more than it saves).
CAST_SPLIT_VOXELS = 2**16


def _one_blas_thread():
    """A context keeping BLAS to one thread (threadpoolctl), or None when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=1, user_api="blas")


class NumpyStages:
    """The CPU stages: band matrix products for Lanczos (BLAS kept to one thread, products split over the
    engine's filter threads), tap by tap for the other methods."""

    max_slab_bytes = MAX_SLAB_BYTES

    def __init__(self, kernels: ResampleKernels, reader, threads: int, timings: dict | None = None):
        self.k, self.threads = kernels, threads
        # seconds per pass (convert, x, y, z, cast), when given (benchmarks); band products a few slices at a time
        # give convert, y, x as CPU seconds summed over the filter threads
        self.timings = timings
        self._converted = None
        self._buffers: dict = {}      # results reused slab after slab (no page faults of fresh arrays)
        self._split_products = False  # set by running(): BLAS kept to one thread, products split over ours
        self.slice_bytes = 0          # nothing per input slice: each thread's work buffers are thread_bytes
        self.thread_bytes = 0
        nk, nj, ni = kernels.input_shape[:3]
        if kernels.band and not kernels.skip_xy:
            kernel_i, kernel_j = kernels.xy_kernels
            # y first: along the middle axis the products are (outputs x taps) @ (taps x whole rows), which BLAS
            # runs two to three times faster than those along x, where each image row is a short vector; x then
            # runs on the y-reduced slab (a 2 GiB uint16 volume at x2: 1.5x faster x/y, at x4 2.3x; see
            # benchmarks/stream.py --passes).
            self._along_j = axis_operator(kernel_j, nj, "sum", kernels.work_dtype, block_inputs=Y_BLOCK_INPUTS,
                                          may_hold_nan=kernels.may_hold_nan)
            self._along_i = axis_operator(kernel_i, ni, "sum", kernels.work_dtype, block_outputs=X_BLOCK_OUTPUTS,
                                          product_rows=X_PRODUCT_ROWS, may_hold_nan=kernels.may_hold_nan)
        voxels = nj * ni * int(np.prod(kernels.input_shape[3:]))  # per input slice
        self.band_group = 1  # slices a thread converts and filters at a time (band products)
        if kernels.band and not kernels.skip_xy:
            float_slice = voxels * kernels.work_dtype.itemsize
            self.band_group = max(1, BAND_GROUP_BYTES // float_slice)
            # per thread: a converted group and its y result (slabs of fewer slices than threads hold as much)
            self.thread_bytes = self.band_group * (float_slice + float_slice // nj * kernel_j.size_out)
        # tap by tap: a few float copies of the slices a thread filters at a time (GROUP_BYTES of input); integers
        # are converted tap by tap, with no converted copy of the slab
        group = max(1, GROUP_BYTES // max(1, voxels * kernels.input_dtype.itemsize))
        if kernels.xy_kernels is not None and not kernels.band:
            self.thread_bytes = 3 * group * voxels * 4

    def new_buffer(self, reader, slices: int):
        if getattr(reader, "hands_out_views", False):
            return None  # an array in memory: its slabs are read in place
        # A decoding reader fills float buffers directly: the conversion then runs on its threads, not here.
        converting = self.k.convert_to is not None and reader.converts_on_read
        return reader.new_buffer(slices, self.k.convert_to if converting else None)

    def new_window(self, slices: int):
        return np.empty((slices,) + self.k.reduced_shape, self.k.window_dtype)

    def drop_front(self, window, start: int, stop: int, pool=None) -> None:
        kept = stop - start
        if pool is None or self.threads < 2 or start < kept:  # overlapping rows: one copy (numpy handles it)
            window[:kept] = window[start:stop]
            return

        def part(number: int, a: int, b: int) -> None:
            window[a:b] = window[start + a:start + b]
        # Source and destination apart: the copy split over the filter threads, which would otherwise wait on it.
        self._split(part, kept, pool)

    @contextlib.contextmanager
    def _timed(self, name: str):
        if self.timings is None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started

    def emit(self, block, out_dtype, sink, pool=None) -> None:
        with self._timed("cast"):
            block = self._cast(block, np.dtype(out_dtype), pool)
        with self._timed("hand-off to the writer"):
            sink.write(block)

    def _cast(self, block, out_dtype, pool):
        """The z sums (this slab's own temporary: rounded in place) cast to ``out_dtype``, in a fresh array (the
        sink may keep it), split over the filter threads, which would otherwise wait on it."""
        if pool is None or self.threads < 2 or block.dtype == out_dtype or not block.flags.c_contiguous \
                or block.size < CAST_SPLIT_VOXELS:
            return cast_to(block, out_dtype, overwrite=True, finite=not self.k.may_hold_nan)
        out = np.empty(block.shape, out_dtype)
        values, target = block.reshape(-1), out.reshape(-1)
        self._split(lambda number, a, b: cast_to(values[a:b], out_dtype, overwrite=True, out=target[a:b],
                                                 finite=not self.k.may_hold_nan), values.size, pool)
        return out

    @contextlib.contextmanager
    def running(self, sink):
        """Band products run with BLAS kept to one thread and are split over the engine's threads: BLAS's threads
        spin while they wait for work, which took the CPU the decoding threads needed (an image-stack import on 2
        cores spent a third more CPU and ran 15 % slower). Without threadpoolctl, BLAS keeps its own threads."""
        limit = _one_blas_thread() if self.k.band else None
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

    def _buffer(self, name: str, shape, dtype=None):
        """A reused work buffer of ``shape`` (the last slab is shorter: a view of the first rows)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[1:] != tuple(shape[1:]) or buffer.shape[0] < shape[0]:
            buffer = self._buffers[name] = np.empty(shape, dtype or self.k.work_dtype)
        return buffer[:shape[0]]

    def _convert(self, slab, pool=None):
        """Integer slabs to the filter's float type, in one reused buffer, split over the filter threads."""
        convert_to = self.k.convert_to
        if convert_to is None or slab.dtype == convert_to:
            return slab
        if self._converted is None or self._converted.shape[0] < slab.shape[0]:
            self._converted = np.empty(slab.shape, convert_to)
        converted = self._converted[:slab.shape[0]]

        def part(number: int, a: int, b: int) -> None:
            np.copyto(converted[a:b], slab[a:b], casting="unsafe")
        self._split(part, slab.shape[0], pool)
        return converted

    def reduce_xy(self, slab, pool=None, out=None):
        k = self.k
        if k.skip_xy:
            return slab  # the engine's copy into the z window converts it
        if k.band:
            pool = self._band_pool(pool)
            if pool is None or slab.shape[0] >= self.threads:
                return self._reduce_xy_band(slab, pool, out)
            # fewer slices than threads (one-slice slabs, a short last slab): each pass split over the threads
            with self._timed("convert"):
                slab = self._convert(slab, pool)
            kernel_i, kernel_j = k.xy_kernels
            shape_y = slab.shape[:1] + (kernel_j.size_out,) + slab.shape[2:]
            with self._timed("y"):
                along_y = self._along_j(slab, 1, pool, self.threads, out=self._buffer("y", shape_y))
            with self._timed("x"):
                # without ``out``, the engine copies the result into its z window before the next slab: the
                # buffer may be reused
                if out is None:
                    out = self._buffer("x", shape_y[:2] + (kernel_i.size_out,) + shape_y[3:])
                return self._along_i(along_y, 2, pool, self.threads, out=out)
        with self._timed("x and y"):
            return self._reduce_xy_taps(slab, pool, out)

    def _reduce_xy_band(self, slab, pool, out=None):
        """Band products a few slices at a time, each converted, filtered along y then x while it is in cache,
        the slab's slices split over the filter threads: no slab-sized float copy or y result goes through memory
        (see BAND_GROUP_BYTES). Into ``out`` (the engine's z window) when given."""
        k = self.k
        kernel_j = k.xy_kernels[1]
        if out is None:
            out = self._buffer("x", slab.shape[:1] + k.reduced_shape)
        convert = k.convert_to is not None and slab.dtype != k.convert_to
        group = self.band_group
        timings = [] if self.timings is not None else None

        def part(number: int, a: int, b: int) -> None:
            clock = time.thread_time  # this thread's CPU seconds: threads sharing a busy core do not count twice
            spent = [0.0, 0.0, 0.0]
            converted = self._buffer(f"converted {number}", (group,) + slab.shape[1:], k.convert_to) \
                if convert else None
            along_y = self._buffer(f"y {number}", (group, kernel_j.size_out) + slab.shape[2:])
            for s0 in range(a, b, group):
                s1 = min(b, s0 + group)
                started = clock()
                data = slab[s0:s1]
                if convert:
                    data = converted[:s1 - s0]
                    np.copyto(data, slab[s0:s1], casting="unsafe")
                converted_at = clock()
                data = self._along_j(data, 1, out=along_y[:s1 - s0])
                y_at = clock()
                result = self._along_i(data, 2, out=out[s0:s1])
                if result is not out[s0:s1]:
                    out[s0:s1] = result  # an identity x table hands its input back
                spent[0] += converted_at - started
                spent[1] += y_at - converted_at
                spent[2] += clock() - y_at
            if timings is not None:
                timings.append(spent)

        self._split(part, slab.shape[0], pool)
        if timings is not None:  # CPU seconds summed over the threads
            for name, values in zip(("convert", "y", "x"), zip(*timings)):
                self.timings[name] = self.timings.get(name, 0.0) + sum(values)
        return out

    def _reduce_xy_taps(self, slab, pool, out=None):
        """Tap by tap, y then x, a few slices at a time (they stay in cache), the slab's slices split over the
        filter threads; integers are converted tap by tap (apply_axis), with no converted copy of the slab. Into
        ``out`` (the engine's z window) when given."""
        k = self.k
        kernel_i, kernel_j = k.xy_kernels
        skip_j, skip_i = kernel_j.is_identity(slab.shape[1]), kernel_i.is_identity(slab.shape[2])
        dtype = work_dtype(slab.dtype)
        if out is None:
            out = self._buffer("xy", slab.shape[:1] + k.reduced_shape, k.window_dtype)
        group = max(1, GROUP_BYTES // max(1, slab[:1].nbytes))

        def part(number: int, a: int, b: int) -> None:
            for s0 in range(a, b, group):
                s1 = min(b, s0 + group)
                plane = slab[s0:s1]
                if not skip_j:
                    plane = apply_axis(plane, kernel_j, 1, k.reduce, dtype, out=out[s0:s1] if skip_i else None)
                if not skip_i:
                    apply_axis(plane, kernel_i, 2, k.reduce, dtype, out=out[s0:s1])

        self._split(part, slab.shape[0], pool)
        return out

    def _split(self, part, n: int, pool) -> None:
        """``part(number, a, b)`` over 0..n split among the filter threads (numpy releases the GIL); ``number``:
        which part, for buffers of its own."""
        parts = min(self.threads, n) if pool is not None else 1
        bounds = [int(b) for b in np.linspace(0, n, parts + 1)]
        if parts <= 1:
            part(0, 0, n)
        else:
            list(pool.map(lambda p: part(p, bounds[p], bounds[p + 1]), range(parts)))

    def reduce_z(self, window, kernel: AxisKernel, pool=None):
        """Band products are split over ``pool``'s threads while running() keeps BLAS to one; the tap-by-tap
        methods split the slice's rows over them (numpy releases the GIL)."""
        with self._timed("z"):
            return self._reduce_z(window, kernel, pool)

    def _reduce_z(self, window, kernel: AxisKernel, pool=None):
        k = self.k
        if k.band:
            return axis_operator(kernel, -1, "sum", k.work_dtype, may_hold_nan=k.may_hold_nan)(
                window, 0, self._band_pool(pool), self.threads)
        result_dtype = window.dtype if k.reduce == "max" else k.work_dtype
        # a fresh block: emit casts it in place and the sink may keep it
        out = np.empty((kernel.size_out,) + window.shape[1:], result_dtype)

        def part(number: int, a: int, b: int) -> None:
            apply_axis(window[:, a:b], kernel, 0, k.reduce, k.work_dtype, out=out[:, a:b])

        self._split(part, window.shape[1], pool if window.shape[1] >= 2 * self.threads else None)
        return out


class NumpyBackend:
    """The default backend (see the module docstring). ``timings``: a dict the stages add the seconds of each pass
    to (convert, x, y, z, cast, hand-off to the writer), for benchmarks."""

    name = "numpy"
    streams = True

    def __init__(self, timings: dict | None = None):
        self.timings = timings

    def stages(self, kernels: ResampleKernels, reader, threads: int) -> NumpyStages:
        return NumpyStages(kernels, reader, threads, self.timings)
