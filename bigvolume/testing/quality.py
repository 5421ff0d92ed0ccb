"""Scoring downsampling methods: test volumes, the ideal reference, PSNR and aliasing share.

- The ideal output is the input band-limited at the output grid's Nyquist frequency, sampled on the output grid
  (bigvolume.methods.spectral). It is what a perfect anti-aliasing filter would give.
- PSNR (dB) compares a result with that reference, peak = the reference's value range.
- Aliasing share: the energy that the input's above-Nyquist content puts into a method's output, over the output's
  AC energy: ``|M(x) - M(lowpass(x))|^2 / |M(x) - mean M(x)|^2``. It is ~0 for a perfect filter and ~1 when the
  output is all alias (decimation of a zone plate).
"""
from __future__ import annotations

import math

import numpy as np

from ..core.dtypes import cast_to
from ..core.geometry import Geometry, block_centres, validate_factors
from ..methods.spectral import band_limited_sample, low_pass


def zone_plate(size: int = 256, dtype=np.float32) -> np.ndarray:
    """The 3D zone plate of the Slicer forum thread "Downsampling NRRDs": sin(km r^2 / (2 rm)) windowed by a tanh
    edge, km = 0.7 pi, rm = size / 2, w = rm / 10; values in [-1, 1]. Its local frequency grows with the radius, so
    any aliasing shows up as false rings."""
    centre = size / 2.0
    axis = np.arange(size, dtype=np.float64) - centre
    km, rm = 0.7 * math.pi, centre
    width = rm / 10.0
    out = np.empty((size, size, size), dtype=dtype)
    yx2 = axis[:, None] ** 2 + axis[None, :] ** 2
    for k in range(size):  # slice by slice: bounded memory for large sizes
        r2 = yx2 + axis[k] ** 2
        r = np.sqrt(r2)
        out[k] = np.sin(km * r2 / (2.0 * rm)) * (0.5 * np.tanh((rm - r) / width) + 0.5)
    return out


def smooth_noise(shape=(128, 128, 128), noise: float = 0.01, correlation: float = 12.0, seed: int = 0,
                 dtype=np.float32) -> np.ndarray:
    """A smooth random field in [0, 1] (periodic, so the FFT reference has no wrap-around edge) plus white
    Gaussian noise of standard deviation ``noise``: the statistics of a well-exposed scan."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(shape)
    spectrum = np.fft.rfftn(white)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape[:2]], np.fft.rfftfreq(shape[2]), indexing="ij")
    radius2 = sum(f ** 2 for f in freqs)
    field = np.fft.irfftn(spectrum * np.exp(-2.0 * (math.pi * correlation) ** 2 * radius2 / 4.0), s=shape, axes=(0, 1, 2))
    field = (field - field.min()) / (field.max() - field.min())
    return (field + noise * rng.standard_normal(shape)).astype(dtype)


def microct_phantom(size: int = 256, seed: int = 0) -> np.ndarray:
    """A micro-CT-like uint16 phantom: an ellipsoidal bone shell with a trabecular core of fine random struts,
    a dense thin rod, and noisy air around it."""
    rng = np.random.default_rng(seed)
    c = (size - 1) / 2.0
    z, y, x = np.ogrid[:size, :size, :size]
    ellipsoid = ((x - c) / (0.42 * size)) ** 2 + ((y - c) / (0.33 * size)) ** 2 + ((z - c) / (0.45 * size)) ** 2
    texture = smooth_noise((size, size, size), noise=0.0, correlation=size / 40.0, seed=seed + 1)
    struts = np.abs(texture - 0.5) < 0.04  # thin walls where the random field crosses its median
    volume = np.full((size, size, size), 1200.0, dtype=np.float32)
    volume[(ellipsoid < 1.0) & (ellipsoid > 0.8)] = 24000.0
    volume[(ellipsoid <= 0.8) & struts] = 16000.0
    volume[(ellipsoid <= 0.8) & ~struts] = 5000.0
    rod = ((x - 0.3 * size) ** 2 + (y - 0.55 * size) ** 2 < (0.012 * size) ** 2 + 1) & (ellipsoid < 1.0)
    volume[rod] = 40000.0
    volume += rng.normal(0.0, 600.0, volume.shape).astype(np.float32)
    return np.clip(volume, 0, 65535).astype(np.uint16)


def ideal_downsample(array: np.ndarray, factors, positions=None) -> np.ndarray:
    """The reference: ``array`` band-limited at the output Nyquist and sampled at ``positions`` (per IJK axis, in
    input index coordinates; default the block-centred grid). Float output."""
    factors = validate_factors(factors)
    if positions is None:
        dims = Geometry(array.shape[:3][::-1]).downsampled(factors).dimensions
        positions = [block_centres(m, f) for m, f in zip(dims, factors)]
    return band_limited_sample(array, factors, positions)


def psnr(result: np.ndarray, reference: np.ndarray, peak: float | None = None) -> float:
    result = np.asarray(result, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if result.shape != reference.shape:
        raise ValueError(f"shapes differ: {result.shape} vs {reference.shape}")
    peak = float(reference.max() - reference.min()) if peak is None else peak
    mse = float(np.mean((result - reference) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def band_limited_input(array: np.ndarray, factors) -> np.ndarray:
    """``array`` low-passed at the output Nyquist on its own grid, in its own pixel type (for aliasing_share)."""
    return cast_to(low_pass(array, validate_factors(factors)), array.dtype)


def aliasing_share(method, array: np.ndarray, factors, limited: np.ndarray | None = None) -> float:
    """``method(array) -> downsampled array`` is scored on ``array`` and on its band-limited version
    (``limited``, from :func:`band_limited_input`, may be passed in to score several methods on one input)."""
    full = np.asarray(method(array), dtype=np.float64)
    limited = band_limited_input(array, factors) if limited is None else limited
    limited = np.asarray(method(limited), dtype=np.float64)
    ac_energy = float(np.sum((full - full.mean()) ** 2))
    return float(np.sum((full - limited) ** 2)) / ac_energy if ac_energy > 0 else 0.0
