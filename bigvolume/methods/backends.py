"""Resampling backends: the small public protocol through which the slab engine (bigvolume.engine.stream) filters,
and the registry of backends by name. The caller picks a backend and gives it to the engine; the engine owns the loop, the z window, the
memory plan and the output, the backend only the arithmetic and where the data lives.

- ``numpy`` (bigvolume.methods.numpy_band.NumpyBackend, the default): the kernel tables as band matrix products (BLAS) for Lanczos,
  tap by tap for the other methods. Equals vtkImageResize to float rounding, and is the fastest on the CPU.
- ``vtk`` (bigvolume.methods.vtk_resize.VtkBackend): vtkImageResize itself, the definition of our Lanczos kernel; whole
  arrays only (it is the oracle the tests hold the tables to).
- an array module (bigvolume.methods.array_backend.ArrayBackend): the same tables on CuPy (a CUDA GPU) or, for tests, numpy.

A backend that streams (``streams`` true) returns, from ``stages(kernels, reader, threads)``, an object with the
methods of :class:`Stages`; one that does not implements ``resample_array``.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import ContextManager, Protocol, runtime_checkable

from ..core.errors import BigVolumeError
from ..core.memory import MAX_SLAB_BYTES  # noqa: F401  (part of the backends' contract)
from .kernels import AxisKernel



@runtime_checkable
class Stages(Protocol):
    """What the slab engine asks of a streaming backend, for one input (its :class:`ResampleKernels`)."""

    max_slab_bytes: int     # input bytes per slab at most
    slice_bytes: int        # working bytes per input slice besides the engine's own buffers, a converted copy of
                            # the slab included (planning)
    thread_bytes: int       # working bytes per filter thread (planning)

    def new_buffer(self, reader, slices: int):
        """A buffer the reader fills with ``slices`` slices (or None: the reader hands out views)."""

    def new_window(self, slices: int):
        """The z window: ``slices`` x/y-reduced slices."""

    def drop_front(self, window, start: int, stop: int, pool: ThreadPoolExecutor | None = None) -> None:
        """Move ``window[start:stop]`` to the window's front (``pool``: the filter threads, free meanwhile)."""

    def reduce_xy(self, slab, pool: ThreadPoolExecutor | None, out=None):
        """One slab of input slices filtered and resampled along x and y, returned. ``out``: the slab's place in
        the z window, to write the result into (saves the engine a copy); a backend may ignore it and return an
        array of its own, which the engine then copies there."""

    def reduce_z(self, window, kernel: AxisKernel, pool: ThreadPoolExecutor | None):
        """Output slices from ``window`` along z; ``kernel`` indexes into the window."""

    def emit(self, block, out_dtype, sink, pool: ThreadPoolExecutor | None = None) -> None:
        """Cast ``block`` to ``out_dtype`` and hand it (on the host) to ``sink.write`` (``pool``: the filter
        threads, free meanwhile)."""

    def running(self, sink) -> ContextManager:
        """Context of the whole run; on success everything emitted has reached ``sink`` when it exits."""


BACKENDS = ("numpy", "vtk")
DEFAULT_BACKEND = "numpy"


def get_backend(name: str | None = None):
    """The backend called ``name`` (default: the fastest, numpy)."""
    name = name or DEFAULT_BACKEND
    if name == "numpy":
        from .numpy_band import NumpyBackend
        return NumpyBackend()
    if name == "vtk":
        from .vtk_resize import VtkBackend  # vtk is loaded only when asked for
        return VtkBackend()
    raise BigVolumeError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
