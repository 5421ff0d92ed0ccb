"""Comparing volumes of different types or ranges: how a compared volume is drawn beside the first so that the
same tissue looks the same (same curves, curves mapped through a known or fitted intensity map, or its own), and
which voxels it changed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.volume import Volume
from ..ops.precision import Window
from .transfer import WINDOW_PERCENTILES, TransferFunction, gray_voxels, transfer_function
from .volumes import PreviewSource


SAME_RANGE_OVERLAP = 0.5   # windows overlapping this much (intersection / union) show the same tissue alike
FIT_CORRELATION = 0.98     # a fitted linear intensity map is used only when it explains the data this well
FIT_VOXELS = 200_000
IDENTITY_TOLERANCE = 0.1   # a fitted map moving the first window's ends less than this share of its width: the same


@dataclass(frozen=True)
class IntensityMap:
    """A linear intensity transform from one volume's values to another's (value -> scale * value + offset), and
    where it comes from (``how``: "reduce-bits", "fitted", ...)."""

    scale: float
    offset: float
    how: str

    def value(self, value: float) -> float:
        return self.scale * value + self.offset

    def transfer(self, transfer: TransferFunction) -> TransferFunction:
        """The same curves over the mapped values (a positive scale keeps their order)."""
        return transfer.mapped(self.scale, self.offset)

    def is_identity(self, window: Window, tolerance: float = IDENTITY_TOLERANCE) -> bool:
        """Whether the map moves ``window``'s ends by at most ``tolerance`` of its width (values kept, give or take
        what a filter or dehaze changed)."""
        width = window.high - window.low
        return all(abs(self.value(v) - v) <= tolerance * width for v in (window.low, window.high))

    def describe(self) -> str:
        sign = "-" if self.offset < 0 else "+"
        return f"y = {self.scale:.4g} x {sign} {abs(self.offset):.4g}"


@dataclass
class Display:
    """How one volume of a picture is drawn: its transfer function (which carries the slices' window) and a short
    caption saying where the window comes from."""

    transfer: TransferFunction
    caption: str
    how: str = "same"                  # "same" curves as the first volume, "mapped" through an intensity map, "own"
    marked: np.ndarray | None = None   # voxels outlined on its slices (changed by a compared volume)
    marked_by: str = ""

    def rendering_note(self, name: str) -> str:
        """One line saying how the volume ``name`` was rendered, for the picture's foot."""
        if self.how == "own":
            return f"{name}: its own {self.transfer.kind} transfer function ({self.transfer.reason})"
        if self.how == "mapped":
            return f"{name}: the same curves, mapped as its slices' window"
        return f"{name}: the same curves"


def _overlap(a: Window, b: Window) -> float:
    union = max(a.high, b.high) - min(a.low, b.low)
    if union <= 0:
        return 1.0
    return max(0.0, min(a.high, b.high) - max(a.low, b.low)) / union


def fit_intensity_map(first: Volume, other: Volume) -> tuple[IntensityMap | None, float]:
    """The least-squares line from ``first``'s voxel values to ``other``'s on the same grid (a subsample), leaving out
    voxels at the ends of ``other``'s integer type (clipped); returns (map or None, correlation). None when the grids
    differ or the values are not linearly related with a positive slope."""
    a, b = gray_voxels(np.asarray(first.array)), gray_voxels(np.asarray(other.array))
    if a.shape != b.shape:
        return None, 0.0
    step = max(1, int(np.ceil((a.size / FIT_VOXELS) ** (1 / 3))))
    x = np.asarray(a[::step, ::step, ::step], np.float64).ravel()
    y = np.asarray(b[::step, ::step, ::step], np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    if np.dtype(other.dtype).kind in "iu":
        low, high = np.iinfo(other.dtype).min, np.iinfo(other.dtype).max
        keep &= (y > low) & (y < high)
    x, y = x[keep], y[keep]
    if x.size < 16 or x.std() == 0 or y.std() == 0:
        return None, 0.0
    correlation = float(np.corrcoef(x, y)[0, 1])
    scale, offset = np.polyfit(x, y, 1)
    if scale <= 0:
        return None, correlation
    return IntensityMap(float(scale), float(offset), "fitted"), correlation


def compare_display(first: PreviewSource, transfer: TransferFunction, other: PreviewSource,
                    intensity_map: IntensityMap | None = None) -> Display:
    """How ``other`` is drawn beside ``first`` (drawn with ``transfer``) so that the same tissue looks the same:
    through ``intensity_map`` when the transform between them is known (reduce-bits knows its window); on the same
    grid, through a line fitted voxel by voxel when it fits (correlation >= FIT_CORRELATION) and is not the identity
    (a linear rescale, e.g. reduce-bits --stretch, whose window may overlap the first's: drawn with the same curves
    it looked changed everywhere); with ``first``'s own curves when their intensity windows overlap (same range:
    before/after of resample or dehaze); else with ``other``'s own histogram transfer function and robust window."""
    if intensity_map is not None:
        mapped = intensity_map.transfer(transfer)
        return Display(mapped, f"window of {first.name} through {intensity_map.how} ({intensity_map.describe()})",
                       "mapped")
    if first.geometry.isclose(other.geometry):
        fitted, correlation = fit_intensity_map(first.volume, other.volume)
        if fitted is not None and correlation >= FIT_CORRELATION and not fitted.is_identity(transfer.window):
            return Display(fitted.transfer(transfer), f"window of {first.name} through a fitted "
                                                      f"{fitted.describe()} (r {correlation:.3f})", "mapped")
    own = transfer_function(other.volume)
    if _overlap(own.window, transfer.window) >= SAME_RANGE_OVERLAP:
        return Display(transfer, f"same as {first.name}")
    return Display(own, f"its own ({WINDOW_PERCENTILES[0]:g}-{WINDOW_PERCENTILES[1]:g} percentiles): its range "
                        f"differs from {first.name}'s", "own")


def changed_voxels(first: PreviewSource, other: PreviewSource) -> np.ndarray | None:
    """Where ``other`` differs from ``first`` on the same grid (e.g. the haze dehaze set to the fill value), on the
    drawn grids (for a downsampled preview: where the two downsampled copies differ); None when the grids differ or
    nothing changed."""
    a, b = gray_voxels(np.asarray(first.volume.array)), gray_voxels(np.asarray(other.volume.array))
    if a.shape != b.shape or not first.geometry.isclose(other.geometry):
        return None
    changed = a != b
    if np.dtype(a.dtype).kind == "f" or np.dtype(b.dtype).kind == "f":
        changed &= ~(np.isnan(a) & np.isnan(b))
    return changed if changed.any() else None
