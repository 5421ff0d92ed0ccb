"""Precision reduction: map a robust intensity window onto a smaller integer type (e.g. 16 -> 8 bits).

The window comes from percentiles of a sample (so one hot pixel or a dark border does not waste the output
range); values outside it are clipped, and the clipped share is reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BigVolumeError

BITS_TO_DTYPE = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16)}
DEFAULT_PERCENTILES = (0.1, 99.9)


@dataclass(frozen=True)
class Window:
    low: float
    high: float

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high < self.low:
            raise BigVolumeError(f"invalid intensity window {self.low} .. {self.high}")


def robust_window(sample: np.ndarray, percentiles=DEFAULT_PERCENTILES) -> Window:
    """The ``percentiles`` of the finite values of ``sample``."""
    values = np.asarray(sample).ravel()
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        raise BigVolumeError("no finite voxel values to choose an intensity window from")
    low, high = np.percentile(values, percentiles)
    return Window(float(low), float(high))


def dtype_for_bits(bits: int) -> np.dtype:
    if bits not in BITS_TO_DTYPE:
        raise BigVolumeError(f"bits must be one of {', '.join(map(str, BITS_TO_DTYPE))}, got {bits}")
    return BITS_TO_DTYPE[bits]


def apply_window(values: np.ndarray, window: Window, dtype) -> tuple[np.ndarray, int]:
    """``values`` mapped linearly from ``window`` onto the full range of the integer ``dtype`` (rounded, clipped);
    returns the result and how many values were clipped."""
    info = np.iinfo(np.dtype(dtype))
    span = window.high - window.low
    scale = (float(info.max) - info.min) / span if span > 0 else 0.0
    mapped = (np.asarray(values, np.float64) - window.low) * scale + info.min
    clipped = int(np.count_nonzero((mapped < info.min - 0.5) | (mapped > info.max + 0.5)))
    np.rint(mapped, out=mapped)
    np.clip(mapped, info.min, info.max, out=mapped)
    return mapped.astype(dtype), clipped
