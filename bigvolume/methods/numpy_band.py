"""The default backend: the kernel tables as band matrix products (BLAS) for Lanczos, tap by tap for the other methods.
It equals vtkImageResize (the definition of the Lanczos kernel, bigvolume.methods.vtk_resize) to float rounding and
is the fastest on the CPU. See bigvolume.methods.backends for the protocol it implements."""
from __future__ import annotations

import contextlib
import time

import numpy as np

from ..core.dtypes import cast_to
from ..core.memory import MAX_SLAB_BYTES
from .kernels import AxisKernel, ResampleKernels, apply_axis, apply_separable, axis_operator, identity_kernel

# Inputs per band-matrix block along y (the middle axis): products over whole rows waste least with smaller blocks
# (16 MiB float32 slabs, 1024^2 slices, one thread: 18-19 ms at 16-48 against 31 ms at 96; along x, 96 stays best).
Y_BLOCK_INPUTS = 48


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
        self.timings = timings  # seconds per pass (convert, x, y, z, cast), when given (benchmarks)
        self._converted = None
        self._buffers: dict = {}      # results reused slab after slab (no page faults of fresh arrays)
        self._split_products = False  # set by running(): BLAS kept to one thread, products split over ours
        self.slice_bytes = 0          # the x-reduced slice before the y product (band products)
        nk, nj, ni = kernels.input_shape[:3]
        if kernels.band and not kernels.skip_xy:
            kernel_i, kernel_j = kernels.xy_kernels
            # y first: along the middle axis the products are (outputs x taps) @ (taps x whole rows), which BLAS
            # runs two to three times faster than those along x, where each image row is a short vector; x then
            # runs on the y-reduced slab (a 2 GiB uint16 volume at x2: 1.5x faster x/y, at x4 2.3x; see
            # benchmarks/stream.py --passes).
            self._along_j = axis_operator(kernel_j, nj, "sum", kernels.work_dtype, block_inputs=Y_BLOCK_INPUTS)
            self._along_i = axis_operator(kernel_i, ni, "sum", kernels.work_dtype)
            self.slice_bytes = kernel_j.size_out * ni * int(np.prod(kernels.input_shape[3:])) * \
                kernels.work_dtype.itemsize
        # tap by tap: a few float copies of a slice per thread
        self.thread_bytes = 3 * nj * ni * int(np.prod(kernels.input_shape[3:])) * 4 \
            if kernels.xy_kernels is not None and not kernels.band else 0

    def new_buffer(self, reader, slices: int):
        if getattr(reader, "hands_out_views", False):
            return None  # an array in memory: its slabs are read in place
        # A decoding reader fills float buffers directly: the conversion then runs on its threads, not here.
        converting = self.k.convert_to is not None and reader.converts_on_read
        return reader.new_buffer(slices, self.k.convert_to if converting else None)

    def new_window(self, slices: int):
        return np.empty((slices,) + self.k.reduced_shape, self.k.window_dtype)

    def drop_front(self, window, start: int, stop: int) -> None:
        window[:stop - start] = window[start:stop]  # numpy handles the overlap

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

    def emit(self, block, out_dtype, sink) -> None:
        with self._timed("cast"):
            block = cast_to(block, out_dtype, overwrite=True)  # the z sums are this slab's own temporary
        with self._timed("hand-off to the writer"):
            sink.write(block)

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

    def _buffer(self, name: str, shape):
        """A reused work buffer of ``shape`` (the last slab is shorter: a view of the first rows)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[1:] != tuple(shape[1:]) or buffer.shape[0] < shape[0]:
            buffer = self._buffers[name] = np.empty(shape, self.k.work_dtype)
        return buffer[:shape[0]]

    def _convert(self, slab, pool=None):
        """Integer slabs to the filter's float type, in one reused buffer, split over the filter threads."""
        convert_to = self.k.convert_to
        if convert_to is None or slab.dtype == convert_to:
            return slab
        if self._converted is None or self._converted.shape[0] < slab.shape[0]:
            self._converted = np.empty(slab.shape, convert_to)
        converted = self._converted[:slab.shape[0]]
        parts = min(self.threads, slab.shape[0]) if pool is not None else 1
        bounds = np.linspace(0, slab.shape[0], parts + 1).astype(int)

        def part(n):
            np.copyto(converted[bounds[n]:bounds[n + 1]], slab[bounds[n]:bounds[n + 1]], casting="unsafe")
        list(pool.map(part, range(parts))) if parts > 1 else part(0)
        return converted

    def reduce_xy(self, slab, pool=None):
        with self._timed("convert"):
            slab = self._convert(slab, pool)
        k = self.k
        if k.skip_xy:
            return slab
        if k.band:
            pool, parts = self._band_pool(pool), self.threads
            kernel_i, kernel_j = k.xy_kernels
            shape_y = slab.shape[:1] + (kernel_j.size_out,) + slab.shape[2:]
            with self._timed("y"):
                along_y = self._along_j(slab, 1, pool, parts, out=self._buffer("y", shape_y))
            with self._timed("x"):
                # the engine copies the result into its z window before the next slab: the buffer may be reused
                return self._along_i(along_y, 2, pool, parts,
                                     out=self._buffer("x", shape_y[:2] + (kernel_i.size_out,) + shape_y[3:]))
        kernel_i, kernel_j = k.xy_kernels
        with self._timed("x and y"):
            return apply_separable(slab, (kernel_i, kernel_j, identity_kernel(slab.shape[0])), k.reduce,
                                   k.window_dtype, self.threads)

    def reduce_z(self, window, kernel: AxisKernel, pool=None):
        """Band products are split over ``pool``'s threads while running() keeps BLAS to one; the tap-by-tap
        methods split the slice's rows over them (numpy releases the GIL)."""
        with self._timed("z"):
            return self._reduce_z(window, kernel, pool)

    def _reduce_z(self, window, kernel: AxisKernel, pool=None):
        k = self.k
        if k.band:
            return axis_operator(kernel, -1, "sum", k.work_dtype)(window, 0, self._band_pool(pool), self.threads)
        height = window.shape[1]
        if pool is None or self.threads <= 1 or height < 2 * self.threads:
            return apply_axis(window, kernel, 0, k.reduce, k.work_dtype)
        bounds = np.linspace(0, height, self.threads + 1).astype(int)
        parts = pool.map(lambda j: apply_axis(window[:, bounds[j]:bounds[j + 1]], kernel, 0, k.reduce,
                                               k.work_dtype), range(self.threads))
        return np.concatenate(list(parts), axis=1)


class NumpyBackend:
    """The default backend (see the module docstring). ``timings``: a dict the stages add the seconds of each pass
    to (convert, x, y, z, cast, hand-off to the writer), for benchmarks."""

    name = "numpy"
    streams = True

    def __init__(self, timings: dict | None = None):
        self.timings = timings

    def stages(self, kernels: ResampleKernels, reader, threads: int) -> NumpyStages:
        return NumpyStages(kernels, reader, threads, self.timings)
