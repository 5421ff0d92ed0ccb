"""Pixel types: the precision filters compute in, and the safe conversion back to the output type."""
from __future__ import annotations

import numpy as np


def work_dtype(dtype: np.dtype) -> np.dtype:
    """float32 is exact enough for 8/16-bit integers and float32; wider types keep float64."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize <= 2 or dtype == np.float32 else np.dtype(np.float64)


def cast_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert filtered values to ``dtype``: integers rounded and clamped to the type's range (no wrap-around)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        if values.dtype == dtype:
            return values
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        values = np.rint(values)
        if info is not None:
            values = np.clip(values, info.min, info.max)
        return values.astype(dtype)
    return values.astype(dtype, copy=False)
