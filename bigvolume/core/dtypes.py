"""Pixel types: the precision filters compute in, and the safe conversion back to the output type."""
from __future__ import annotations

import numpy as np


def work_dtype(dtype: np.dtype) -> np.dtype:
    """float32 is exact enough for 8/16-bit integers and float32; wider types keep float64."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize <= 2 or dtype == np.float32 else np.dtype(np.float64)


def cast_to(values: np.ndarray, dtype: np.dtype, overwrite: bool = False,
            out: np.ndarray | None = None) -> np.ndarray:
    """Convert filtered values to ``dtype``: integers rounded and clamped to the type's range (no wrap-around).
    ``overwrite``: ``values`` is a temporary that may be rounded in place (no float copies). ``out``: an array of
    ``dtype`` and ``values``'s shape to write the result into (returned)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub" and values.dtype != dtype:
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        in_place = overwrite and values.dtype.kind == "f"
        values = np.rint(values, out=values if in_place else None)
        if info is not None:
            values = np.clip(values, info.min, info.max, out=values)
    if out is None:
        return values.astype(dtype, copy=values.dtype != dtype)
    np.copyto(out, values, casting="unsafe")
    return out
