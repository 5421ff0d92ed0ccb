"""The GPU: which device runs a resample (:func:`choose_device`, probing CuPy once), and the anti-aliased resample of
an array on an array module ``xp`` (CuPy on a CUDA GPU, numpy to test the same code here), streamed through the slab
engine with bigvolume.methods.array_backend.ArrayBackend.

CuPy is imported only when a CUDA device is asked for (``pip install -e '.[gpu]'`` in the checkout).
"""
from __future__ import annotations

import functools
import logging

import numpy as np

from ..core.dtypes import cast_to, check_exact_in_float64, native, work_dtype
from ..core.errors import BigVolumeError
from ..core.geometry import Geometry, limited_factors
from ..core.memory import default_threads
from ..core.volume import check_volume_array
from ..methods.array_backend import ArrayBackend, block_inputs
from ..methods.kernels import SEPARABLE_METHODS, axis_kernel, axis_operator, reads_zero_weight_taps
from .stream import downsample_in_memory

logger = logging.getLogger("bigvolume")

DEVICES = ("auto", "cpu", "cuda")
DEVICE_METHODS = SEPARABLE_METHODS  # every method with per-axis tables; fft needs the whole volume


@functools.lru_cache(maxsize=None)
def probe_cuda():
    """(cupy, "") when CuPy imports and sees a CUDA device, else (None, why not). Probed once per process."""
    try:
        import cupy
    except ImportError:
        return None, "cupy not installed"
    except Exception as error:  # a broken CUDA installation fails in many ways
        return None, f"cupy does not load: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        return None, f"CUDA: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    return (cupy, "") if count > 0 else (None, "CUDA sees no GPU")


def choose_device(device: str = "auto", method: str = "lanczos", note: bool = True) -> str:
    """"cpu" or "cuda" for a requested ``device`` (auto, cpu, cuda). auto takes the GPU when there is one and the
    method runs there, else the CPU with a note (unless ``note`` is False: auto as a default nobody asked for);
    cuda without a usable GPU is an error."""
    if device not in DEVICES:
        raise BigVolumeError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    cupy, why = probe_cuda()
    if device == "cuda":
        if cupy is None:
            raise BigVolumeError(f"device cuda: no CUDA device ({why}); install CuPy on a machine with an NVIDIA GPU "
                                 "(pip install cupy-cuda12x, or pip install -e '.[gpu]' in the checkout) or use the CPU "
                                 "(device cpu)")
        if method not in DEVICE_METHODS:
            raise BigVolumeError(f"method {method} needs the whole volume in memory and does not run on the GPU; "
                                 f"GPU methods: {', '.join(DEVICE_METHODS)}")
        return "cuda"
    if cupy is None:
        if note:
            logger.warning(f"no CUDA device ({why}); using the CPU")
        return "cpu"
    if method not in DEVICE_METHODS:
        if note:
            logger.warning(f"method {method} does not run on the GPU; using the CPU")
        return "cpu"
    return "cuda"


def device_name() -> str:
    cupy, why = probe_cuda()
    if cupy is None:
        return f"no CUDA device ({why})"
    properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = properties["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def cuda_module():
    """CuPy, or a BigVolumeError saying why there is no CUDA device."""
    choose_device("cuda")
    return probe_cuda()[0]


def resample_array(array: np.ndarray, factors, method: str, out_dtype=None, *, xp, memory_limit=None,
                   threads: int | None = None, progress=None) -> np.ndarray:
    """``array`` (k, j, i[, c]) downsampled by ``factors`` (I, J, K) on the block-centred grid through the array
    module ``xp`` (None: the CPU backend), streamed slab by slab through the device; a numpy array of ``out_dtype``
    (default: the input's) comes back. ``memory_limit``: host bytes, default what the process holds plus 2 GiB of
    buffers."""
    check_volume_array(array)
    if array.ndim == 4 and array.shape[3] == 1:  # one component: filtered as a scalar volume, as the CPU path does
        return resample_array(array[..., 0], factors, method, out_dtype, xp=xp, memory_limit=memory_limit,
                              threads=threads, progress=progress)[..., None]
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    array = array.astype(native(array.dtype), copy=False)  # (a big-endian input came back big-endian)
    out_dtype = None if out_dtype is None else native(np.dtype(out_dtype))
    factors = limited_factors(factors, array.shape[2::-1])  # as the CPU path (an off-centre voxel otherwise)
    return downsample_in_memory(array, factors, method, out_dtype, threads=threads or default_threads(),
                                memory_limit=memory_limit, progress=progress,
                                backend=None if xp is None else ArrayBackend(xp))


def downsample_on_device(array, factors, method: str = "lanczos", out_dtype=None, xp=None):
    """An array already on the device ((k, j, i[, c]), any ``xp``; default CuPy) downsampled whole, with no
    streaming and no transfers: for data that lives on the GPU, and to time the filter alone."""
    xp = xp or cuda_module()
    if method not in DEVICE_METHODS:
        raise BigVolumeError(f"method {method} does not run on the device; choose one of {', '.join(DEVICE_METHODS)}")
    dims_in = array.shape[2::-1]
    factors = limited_factors(factors, dims_in)  # as the CPU path (an off-centre voxel otherwise)
    dims_out = Geometry(dims_in).downsampled(factors).dimensions
    # as the CPU path (ResampleKernels): nearest picks its one tap like max, in the input's type (a float64 sum
    # rounded 64-bit integers); the sums refuse 64-bit integers float64 would round
    reduce = "max" if method in ("max", "nearest") else "sum"
    if reduce == "sum":
        check_exact_in_float64(array, method)
    dtype = work_dtype(array.dtype) if reduce == "sum" else array.dtype
    data = array.astype(dtype, copy=False)
    for axis, n, f, m in zip((2, 1, 0), dims_in, factors, dims_out):
        operator = axis_operator(axis_kernel(method, n, f, m), n, reduce, dtype, xp, block_inputs(xp),
                                 may_hold_nan=array.dtype.kind == "f",
                                 nan_reads_zero_taps=reads_zero_weight_taps(method))
        data = operator(data, axis)
    return cast_to(data, native(np.dtype(out_dtype or array.dtype)))
