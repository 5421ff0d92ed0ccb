"""A backend on an array module: CuPy on a CUDA GPU, or numpy to test the same code on the CPU. Same kernels and grid as
the CPU path: every axis goes through :func:`bigvolume.methods.kernels.axis_operator`, the band matrices of the
kernel tables (cuBLAS products on the GPU, in larger blocks than on the CPU); ``max`` and one-tap tables
(``nearest``) go through the tap-by-tap engine with ``xp``.

On CUDA, slabs are read into pinned host buffers, uploaded on a copy stream while the previous slab is filtered on
the compute stream, the z window stays on the device, and finished output blocks come back on a third stream and
reach the writer one slab later, so transfers overlap the filtering. CuPy is imported by the caller
(bigvolume.engine.gpu), only when a CUDA device is asked for.
"""
from __future__ import annotations

import contextlib
from collections import deque

import numpy as np

from ..core.dtypes import cast_to
from ..core.memory import MAX_SLAB_BYTES
from .kernels import CPU_BLOCK_INPUTS, AxisKernel, ResampleKernels, axis_operator

# Inputs per band-matrix block on the GPU: larger products than the CPU's (bigvolume.methods.kernels.CPU_BLOCK_INPUTS)
# keep the device busy; an axis of thousands of voxels still does not multiply thousands of zeros per output.
GPU_BLOCK_INPUTS = 1024
GPU_MAX_SLAB_BYTES = 256 * 2**20  # larger slabs than the CPU's: fewer launches and synchronisations


class ArrayStages:
    """The engine's stages (bigvolume.backends.Stages) on the array module ``xp`` (see the module docstring)."""

    thread_bytes = 0

    def __init__(self, kernels: ResampleKernels, reader, xp):
        self.k, self.xp = kernels, xp
        self.threads = 1
        self.cuda = xp.__name__ == "cupy"
        self.max_slab_bytes = MAX_SLAB_BYTES
        self.slice_bytes = 0  # planning: the converted copy and the x-reduced slice before the y product
        nk, nj, ni = kernels.input_shape[:3]
        if kernels.convert_to is not None and not self.cuda:  # on CUDA the converted copy is on the device
            self.slice_bytes += nj * ni * int(np.prod(kernels.input_shape[3:])) * kernels.convert_to.itemsize
        if not kernels.skip_xy:
            kernel_i, kernel_j = kernels.xy_kernels
            self.slice_bytes += nj * kernel_i.size_out * int(np.prod(kernels.input_shape[3:])) * \
                kernels.work_dtype.itemsize
            self._along_i = self._operator(kernel_i, ni)
            self._along_j = self._operator(kernel_j, nj)
        if self.cuda:
            import cupyx
            self._pinned = cupyx.empty_pinned
            self._compute = xp.cuda.Stream(non_blocking=True)
            self._upload_stream = xp.cuda.Stream(non_blocking=True)
            self._download_stream = xp.cuda.Stream(non_blocking=True)
            self._device_slabs = [None, None]   # uploads alternate between two device buffers
            self._consumed = [None, None]       # when the compute stream is done with each
            self._turn = 0
            self._downloads = deque()           # (event, pinned host block, device block) not yet written
            xp.cuda.Device().synchronize()  # the x/y matrices went up on the default stream, which ours do not wait for
            free, _ = xp.cuda.runtime.memGetInfo()
            # about a dozen slab-sized device arrays at once (two uploads, float copies, x/y results, the window)
            self.max_slab_bytes = int(min(GPU_MAX_SLAB_BYTES, free // 16))

    def _operator(self, kernel: AxisKernel, n_in: int):
        # NaN reach as the CPU path has it: Lanczos's band products read every tap, the others' skip zero weights
        return axis_operator(kernel, n_in, self.k.reduce, self.k.work_dtype, self.xp, block_inputs(self.xp),
                             may_hold_nan=self.k.may_hold_nan, nan_reads_zero_taps=self.k.nan_reads_zero_taps)

    # --- the filter ---------------------------------------------------------------------------------------------
    def reduce_xy(self, slab, pool=None, out=None):  # ``out`` unused: the z window lives on the device
        data = self._upload(slab)
        uploaded = data
        if self.k.convert_to is not None:
            data = data.astype(self.k.convert_to)
        if not self.k.skip_xy:
            data = self._along_j(self._along_i(data, 2), 1)
        data = data.astype(self.k.window_dtype, copy=False)
        if data is uploaded and self.cuda:
            data = data.copy()  # the device buffer takes the slab after next
        if self.cuda:
            self._consumed[self._turn ^ 1] = self._compute.record()
        return data

    def reduce_z(self, window, kernel: AxisKernel, pool=None):
        return self._operator(kernel, -1)(window, 0)

    # --- moving data -----------------------------------------------------------------------------------------------
    def new_buffer(self, reader, slices: int):
        if not self.cuda:
            return None if reader.hands_out_views else reader.new_buffer(slices)
        return self._pinned((slices,) + reader.slice_shape, reader.dtype)  # uploads from it run asynchronously

    def new_window(self, slices: int):
        return self.xp.empty((slices,) + self.k.reduced_shape, self.k.window_dtype)

    def drop_front(self, window, start: int, stop: int, pool=None) -> None:
        window[:stop - start] = window[start:stop].copy()  # CuPy does not promise overlapping copies

    def _upload(self, slab):
        """``slab`` on the device. The host waits for the upload alone (so the reader may refill the buffer)
        while the previous slab is still being filtered."""
        if not self.cuda:
            return slab
        turn = self._turn
        buffer = self._device_slabs[turn]
        if buffer is None or buffer.shape[0] < slab.shape[0]:
            buffer = self._device_slabs[turn] = self.xp.empty(slab.shape, slab.dtype)
        buffer = buffer[:slab.shape[0]]
        if self._consumed[turn] is not None:
            self._upload_stream.wait_event(self._consumed[turn])
        buffer.set(slab, stream=self._upload_stream)
        done = self._upload_stream.record()
        done.synchronize()
        self._compute.wait_event(done)
        self._turn ^= 1
        return buffer

    def emit(self, block, out_dtype, sink, pool=None) -> None:
        block = cast_to(block, out_dtype)  # on the device: a smaller download for integer outputs
        if not self.cuda:
            sink.write(block)
            return
        self._download_stream.wait_event(self._compute.record())
        host = self._pinned(block.shape, block.dtype)  # a fresh one per block: the writer may hold it a while
        block.get(stream=self._download_stream, out=host, blocking=False)
        self._downloads.append((self._download_stream.record(), host, block))
        self._write_downloads(sink, keep=1)

    def _write_downloads(self, sink, keep: int) -> None:
        while len(self._downloads) > keep:
            done, host, _ = self._downloads.popleft()
            done.synchronize()
            sink.write(host)

    @contextlib.contextmanager
    def running(self, sink):
        if not self.cuda:
            yield
            return
        try:
            with self._compute:  # the loop's own device work (window updates) joins the compute stream
                yield
                self._write_downloads(sink, keep=0)
        finally:
            self._downloads.clear()


class ArrayBackend:
    """A backend (bigvolume.backends) on the array module ``xp``: CuPy on a CUDA GPU, or numpy to test the same
    code on the CPU."""

    streams = True

    def __init__(self, xp):
        self.xp = xp
        self.name = "cuda" if xp.__name__ == "cupy" else f"array module {xp.__name__}"

    def stages(self, kernels: ResampleKernels, reader, threads: int) -> ArrayStages:
        return ArrayStages(kernels, reader, self.xp)


def block_inputs(xp) -> int:
    return GPU_BLOCK_INPUTS if xp.__name__ == "cupy" else CPU_BLOCK_INPUTS


def block_inputs(xp) -> int:
    return GPU_BLOCK_INPUTS if xp.__name__ == "cupy" else CPU_BLOCK_INPUTS
