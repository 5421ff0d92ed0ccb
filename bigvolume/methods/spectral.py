"""The ideal band limit: cut the spectrum at the output grid's Nyquist frequency and evaluate the band-limited
signal exactly at the output sample positions (trigonometric interpolation, one axis at a time).

It treats the volume as periodic, needs the whole volume and complex intermediates in memory, and is the
reference every other method is scored against (bigvolume.testing.quality).
"""
from __future__ import annotations

import numpy as np

from ..core.dtypes import check_exact_in_float64, work_dtype


def _complex_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.complex64) if np.dtype(dtype) == np.float32 else np.dtype(np.complex128)


def band_limit_axis(data: np.ndarray, axis: int, factor: float, positions: np.ndarray) -> np.ndarray:
    """Band-limit ``data`` along ``axis`` to 0.5/factor cycles per voxel and sample it at ``positions`` (input
    index coordinates)."""
    n = data.shape[axis]
    if factor == 1.0 and len(positions) == n and np.array_equal(positions, np.arange(n)):
        return data
    spectrum = np.fft.rfft(data, axis=axis)
    kept = min(int(np.floor(n / (2.0 * factor) + 1e-9)), n // 2)
    spectrum = np.take(spectrum, np.arange(kept + 1), axis=axis)
    weights = np.full(kept + 1, 2.0)
    weights[0] = 1.0
    if n % 2 == 0 and kept == n // 2:
        weights[kept] = 1.0  # the Nyquist term appears once in a real spectrum
    basis = np.exp(2j * np.pi * np.outer(positions, np.arange(kept + 1)) / n) * (weights / n)
    basis = basis.astype(_complex_dtype(data.dtype))
    result = np.tensordot(basis, spectrum, axes=([1], [axis])).real
    return np.moveaxis(result, 0, axis)


def band_limited_sample(array: np.ndarray, factors, positions) -> np.ndarray:
    """``array`` (k, j, i[, c]); ``factors`` and ``positions`` in I, J, K order. Returns floats."""
    check_exact_in_float64(array, "fft")
    data = array.astype(work_dtype(array.dtype))
    for ijk_axis in (2, 1, 0):  # K first: the slowest axis shrinks the data most cheaply
        data = band_limit_axis(data, 2 - ijk_axis, factors[ijk_axis], np.asarray(positions[ijk_axis], float))
    return data


def low_pass(array: np.ndarray, factors) -> np.ndarray:
    """``array`` band-limited to the output Nyquist of ``factors`` (I, J, K order), kept on the input grid."""
    check_exact_in_float64(array, "fft")
    data = array.astype(work_dtype(array.dtype))
    axes = (0, 1, 2)
    spectrum = np.fft.rfftn(data, axes=axes)
    shape = data.shape[:3]
    mask = np.ones(spectrum.shape[:3], dtype=bool)
    for axis in axes:
        factor = factors[2 - axis]
        freq = np.fft.rfftfreq(shape[axis]) if axis == 2 else np.fft.fftfreq(shape[axis])
        keep = np.abs(freq) <= 0.5 / factor + 1e-12
        view = [None, None, None]
        view[axis] = slice(None)
        mask &= keep[tuple(view)]
    if spectrum.ndim == 4:
        mask = mask[..., None]
    return np.fft.irfftn(spectrum * mask, s=shape, axes=axes).astype(data.dtype, copy=False)
