"""Pixel types: the precision filters compute in, and the safe conversion back to the output type."""
from __future__ import annotations

import numpy as np

from .errors import BigVolumeError


def native(dtype) -> np.dtype:
    """``dtype`` in this machine's byte order: what the writers and VTK take (a '>f4' asked for as an output type
    was written as big-endian bytes under a header that said little)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


# 64-bit integers up to 2^48 come through a double-precision filter as integers do (a constant exactly, at every
# factor and method); beyond, the sums' rounding shows: 2^52 - 1 came out 3 off, 2^62 + 1 as 2^62 even at factor 1,
# and near 2^63 a mean rounded past the type's maximum.
FILTER_EXACT_LIMIT = 2**48


def check_exact_in_float64(values: np.ndarray, method: str) -> None:
    """Refuse 64-bit integers that a filter computing in float64 would change (see FILTER_EXACT_LIMIT)."""
    if values.dtype.kind not in "iu" or values.dtype.itemsize != 8 or not values.size:
        return
    low, high = int(values.min()), int(values.max())
    if high > FILTER_EXACT_LIMIT or low < -FILTER_EXACT_LIMIT:
        raise BigVolumeError(f"64-bit integer values up to {max(high, -low)} lie beyond 2^48, where the {method} "
                             "filter (in double precision) rounds away their last bits; choose --method nearest or "
                             "max, which pick values, or convert the volume to float64 knowing it rounds them")


LABEL_MAP_VALUES = 16  # an integer volume with at most this many distinct values is a label map or mask, not an image


def label_values(values: np.ndarray) -> np.ndarray | None:
    """The distinct values of integer ``values`` (a subsample) when they are at most LABEL_MAP_VALUES: a label map
    or mask, not an intensity image; None otherwise (and for floats)."""
    if values.dtype.kind not in "iub" or not values.size:
        return None
    flat = values.ravel()
    if np.unique(flat[::max(1, flat.size // 2**16)]).size > LABEL_MAP_VALUES:  # an image shows many values early
        return None
    distinct = np.unique(flat)
    return distinct if distinct.size <= LABEL_MAP_VALUES else None


def values_text(values, shown: int = 6) -> str:
    """``0, 3, 7`` or ``0, 1, 2, 3, 4, 5, ...``: a few values of a list."""
    return ", ".join(f"{v:g}" for v in values[:shown]) + (", ..." if len(values) > shown else "")


def work_dtype(dtype: np.dtype) -> np.dtype:
    """float32 is exact enough for 8/16-bit integers and float32; wider types keep float64."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize <= 2 or dtype == np.float32 else np.dtype(np.float64)


def cast_to(values: np.ndarray, dtype: np.dtype, overwrite: bool = False,
            out: np.ndarray | None = None, finite: bool = False) -> np.ndarray:
    """Convert filtered values to ``dtype``: integers rounded and clamped to the type's range (no wrap-around), NaN
    to 0. ``overwrite``: ``values`` is a temporary that may be rounded in place (no float copies). ``out``: an array
    of ``dtype`` and ``values``'s shape to write the result into (returned). ``finite``: the caller knows there is no
    NaN (an integer input filtered): the pass that looks for it is skipped (a third of the cast's time)."""
    dtype = np.dtype(dtype)
    saturated = []  # (mask, value): values beyond a bound that the float type cannot hold exactly
    if dtype.kind in "iu" and values.dtype.kind == "f":
        low, high = clamp_bounds(dtype, values.dtype)
        info = np.iinfo(dtype)
        # int32's maximum is no float32: values beyond the nearest one below it get the type's maximum itself
        if int(high) < info.max:
            saturated.append((values > high, info.max))
        if int(low) > info.min:
            saturated.append((values < low, info.min))
        values = np.rint(values, out=values if overwrite else None)
        values = np.clip(values, low, high, out=values)
        if not finite:
            np.copyto(values, 0, where=np.isnan(values))  # NaN has no integer: 0, decided here, not by the cast
    elif dtype.kind in "iu" and values.dtype.kind in "iu" and not np.can_cast(values.dtype, dtype):
        values = np.clip(values, *clamp_bounds(dtype, values.dtype))
    elif dtype.kind == "b" and values.dtype.kind == "f":
        values = np.rint(values, out=values if overwrite else None)
    if out is None:
        out = values.astype(dtype, copy=values.dtype != dtype)
    else:
        np.copyto(out, values, casting="unsafe")
    for mask, bound in saturated:
        out[mask] = bound
    return out


def clamp_bounds(dtype: np.dtype, source: np.dtype):
    """The range of integer ``dtype`` as values of ``source`` that convert into it exactly: a float type cannot hold
    every integer (int32's maximum is 2**31 in float32, which the cast wraps to -2**31), so its bounds are the
    nearest floats inside the range."""
    info = np.iinfo(dtype)
    if source.kind in "iu":
        limits = np.iinfo(source)
        return max(info.min, limits.min), min(info.max, limits.max)
    low, high = source.type(info.min), source.type(info.max)
    if int(high) > info.max:
        high = np.nextafter(high, source.type(0))
    if int(low) < info.min:
        low = np.nextafter(low, source.type(0))
    return low, high
