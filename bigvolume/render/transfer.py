"""The transfer function of a preview, from the data's histogram: robust percentiles and multi-level Otsu
thresholds on a subsample, classified CT-like or MR-like. Plain-data curves: the batch renderers
(:mod:`bigvolume.render.offscreen`) and the Slicer display nodes (:mod:`bigvolume.slicer.preview_nodes`) both draw
with them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.errors import BigVolumeError
from ..core.geometry import Geometry
from ..core.volume import Volume
from ..io.stacks import LUMINANCE_WEIGHTS
from ..ops.haze import multi_otsu
from ..ops.precision import Window, robust_histogram, robust_window, subsample

SAMPLE_VOXELS = 2_000_000      # voxels the histogram is taken from
FILLED_SHARE = 0.2             # one exact value in more than this share of the voxels is a fill, i.e. background
WINDOW_PERCENTILES = (0.5, 99.5)  # the slices' intensity window
HU_AIR = -500.0                # 1st percentile at or below this: Hounsfield units with air (-1000) around
HU_LOWEST = -4096.0            # ... and not below this (padding reaches -3024): lower is no Hounsfield scale
WIDE_RANGE = 4096              # integer data spanning more than 12 bits: CT/micro-CT, not MR (12-bit magnitudes)
OPACITY_UNIT_FRACTION = 1 / 200  # opacity is per this fraction of the volume's diagonal: same look at any scale
LABEL_VALUES = 64              # integer data with at most this many values, its lowest one a fill: a label map
FLOAT32_SAFE = 2.0 ** 64       # |values| drawn as they are: renderers hold voxels and curves in float32
CT_LIKE, MR_LIKE, LABEL_MAP = "CT-like", "MR-like", "label map"
# A label map's colours, one per label in order (then again): distinct hues, all bright enough on black.
LABEL_COLORS = ((0.90, 0.30, 0.25), (0.30, 0.70, 0.35), (0.30, 0.50, 0.95), (0.95, 0.80, 0.20), (0.75, 0.35, 0.85),
                (0.25, 0.80, 0.85), (0.95, 0.55, 0.15), (0.60, 0.85, 0.25), (0.95, 0.45, 0.65), (0.55, 0.40, 0.25),
                (0.70, 0.70, 0.70), (0.40, 0.30, 0.75))
LABEL_OPACITY = 0.5


@dataclass
class TransferFunction:
    """Colour and opacity curves of a volume rendering, as plain data: ``colors`` are ``(value, r, g, b)`` with
    r, g, b in 0..1, ``opacities`` are ``(value, opacity)``, both with ascending values. ``window`` is the robust
    intensity window of the slices; ``kind`` is CT_LIKE or MR_LIKE and ``reason`` says why."""

    kind: str
    colors: list
    opacities: list
    window: Window
    reason: str = ""
    labels: tuple = ()  # a label map's labels (ascending, the background left out): each gets its LABEL_COLORS

    def mapped(self, scale: float, offset: float = 0.0) -> "TransferFunction":
        """The same curves over the values ``scale * value + offset`` (``scale`` > 0 keeps their order)."""
        def value(v):
            return scale * v + offset
        return TransferFunction(self.kind, ascending_points([(value(v),) + tuple(rest) for v, *rest in self.colors]),
                                ascending_points([(value(v), o) for v, o in self.opacities]),
                                Window(*sorted((value(self.window.low), value(self.window.high)))), self.reason,
                                tuple(value(v) for v in self.labels))

    def fill(self, volume_property, unit_distance: float = 1.0) -> None:
        """Put these curves into a vtkVolumeProperty (also the one a scene's volume property node holds): the existing
        transfer function objects are refilled in place, so whatever observes them (Slicer's views) sees the change."""
        colors = volume_property.GetRGBTransferFunction(0)
        colors.RemoveAllPoints()
        for value, red, green, blue in self.colors:
            colors.AddRGBPoint(value, red, green, blue)
        opacities = volume_property.GetScalarOpacity(0)
        opacities.RemoveAllPoints()
        for value, opacity in self.opacities:
            opacities.AddPoint(value, opacity)
        if self.labels:  # a label map's voxels are not blended: a value between two labels would be a third
            volume_property.SetInterpolationTypeToNearest()
        else:
            volume_property.SetInterpolationTypeToLinear()
        volume_property.ShadeOn()
        volume_property.SetAmbient(0.30)
        volume_property.SetDiffuse(0.75)
        volume_property.SetSpecular(0.20)
        volume_property.SetSpecularPower(12.0)
        volume_property.SetScalarOpacityUnitDistance(unit_distance)


def float_shift(largest: float) -> int:
    """The power of two that brings ``largest`` (a magnitude) into 1 .. 2 when it lies beyond FLOAT32_SAFE or below
    its inverse (float64 up to 1.8e308 becomes infinite in float32, float64 down to 5e-324 becomes 0); else 0."""
    if largest == 0.0 or not math.isfinite(largest) or 1.0 / FLOAT32_SAFE <= largest <= FLOAT32_SAFE:
        return 0
    return 1 - math.frexp(largest)[1]


def opacity_unit_distance(geometry: Geometry) -> float:
    """The length (mm) the opacities apply to: a fixed fraction of the volume's diagonal, so a volume looks the same
    whatever its physical scale (a 5 mm micro-CT sample or a 300 mm CT) and whatever its voxel size (before/after)."""
    return float(np.linalg.norm(geometry.extent)) * OPACITY_UNIT_FRACTION


def gray_voxels(array: np.ndarray) -> np.ndarray:
    """Scalar voxels: vector volumes become their Rec. 709 luminance (RGB) or their first component."""
    if array.ndim == 3:
        return array
    if array.shape[3] >= 3:
        return array[..., :3].astype(np.float32) @ np.asarray(LUMINANCE_WEIGHTS, np.float32)
    return array[..., 0]


def label_places(values, labels) -> np.ndarray:
    """Each value's place among a label map's ``labels`` (ascending): 1 for the first, ..., 0 for the background
    (below the first label; NaN too). A value the subsample missed takes the place of the label above it."""
    labels = np.asarray(labels, np.float64)
    values = np.asarray(values)
    places = np.minimum(np.searchsorted(labels, values), labels.size - 1).astype(np.uint16) + 1
    places[~(values >= labels[0])] = 0
    return places


def _otsu(counts: np.ndarray, edges: np.ndarray, classes: int) -> list[float]:
    """Multi-level Otsu thresholds (values) of a histogram."""
    if np.count_nonzero(counts) < classes:  # nearly constant: evenly spaced thresholds
        return [float(edges[0] + (edges[-1] - edges[0]) * (c + 1) / classes) for c in range(classes - 1)]
    return [float(edges[cut]) for cut in multi_otsu(counts, classes)]


def _filled_value(values: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> float | None:
    """The value of the fullest bin when one exact value fills more than FILLED_SHARE of the voxels: padding, air
    set to one value (``bigvolume dehaze``), the outside of a synthetic object. It is background, whatever Otsu says
    of the rest (which its spike would otherwise pull about)."""
    peak = int(np.argmax(counts))
    binned = np.clip(values, edges[0], edges[-1])  # as the histogram counted them: values beyond go to the end bins
    in_peak = values[(binned >= edges[peak]) & (binned <= edges[peak + 1])]
    if in_peak.size == 0:
        return None
    value = float(np.median(in_peak))
    return value if np.count_nonzero(values == value) > FILLED_SHARE * values.size else None


def ascending_points(points) -> list:
    """Points with strictly increasing values (a transfer function ignores repeated ones)."""
    result = []
    for point in sorted(points, key=lambda p: p[0]):
        if result and point[0] <= result[-1][0]:
            point = (math.nextafter(result[-1][0], math.inf),) + tuple(point[1:])
        result.append(tuple(float(v) for v in point))
    return result


def transfer_function(source, sample_voxels: int = SAMPLE_VOXELS) -> TransferFunction:
    """Colour and opacity curves for a Volume or an array (k, j, i[, c]), from the histogram of a subsample.

    CT-like when the 1st percentile is Hounsfield air (<= -500) or when integer data span more than 12 bits
    (micro-CT, CT): three Otsu classes (air, tissue, dense) give air transparent, tissue faint and reddish, dense
    material opaque and ivory. MR-like otherwise: two Otsu classes (background, object), the background transparent
    and the opacity ramping up through the object's intensities to the 99.5th percentile (signed data with values
    above 0: from 0; data all at or below 0 keep their Otsu threshold). A label map (integer data with at most
    LABEL_VALUES values, the lowest of them filling the background; kind LABEL_MAP, its ``labels`` listed) shows
    every label above the background, equally opaque, each in its LABEL_COLORS. One
    exact value filling more than a fifth of the volume (padding, cleared air) is always transparent."""
    array = source.array if isinstance(source, Volume) else np.asarray(source)
    sample = gray_voxels(subsample(array, sample_voxels))
    values = np.asarray(sample, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise BigVolumeError("the volume has no finite voxel values: there is nothing to render")
    counts, edges = robust_histogram(values, (0.1, 99.9))
    low, high = float(edges[0]), float(edges[-1])
    p1, p99, p995 = np.percentile(values, [1, 99, 99.5])
    filled = _filled_value(values, counts, edges)
    window = robust_window(values, WINDOW_PERCENTILES)
    if window.high <= window.low:
        window = Window(low, high)
    top = float(p995) if p995 > low else high
    integer = np.dtype(array.dtype).kind in "iub"
    labels = (integer and filled is not None and filled <= float(values.min())
              and np.unique(values).size <= LABEL_VALUES)
    if labels:
        found = tuple(float(v) for v in np.unique(values) if v > filled)
        if found:  # a label map (whatever its labels' range): every label an object, in its own colour
            # Points at the labels themselves (drawn without interpolation, see fill: no value lies between them):
            # closer points make VTK's lookup tables larger than OpenGL allows (a warning, and a coarser table).
            # The background is clear up to the first label (clear_up_to's 1e-3 of the range took labels 1 and 2
            # of a map whose labels reach 2000).
            colors = [(low, 0.0, 0.0, 0.0), (filled, 0.0, 0.0, 0.0)] + [
                (v,) + LABEL_COLORS[n % len(LABEL_COLORS)] for n, v in enumerate(found)]
            opacities = [(low, 0.0), (filled, 0.0), (found[0], LABEL_OPACITY), (found[-1], LABEL_OPACITY)]
            return TransferFunction(LABEL_MAP, ascending_points(colors), ascending_points(opacities),
                                    Window(filled, found[-1]),
                                    f"{len(found)} labels above the background {filled:g}", found)
    hounsfield = HU_LOWEST <= p1 <= HU_AIR and p99 >= 0
    if hounsfield:
        kind, reason = CT_LIKE, f"1st percentile {p1:g}: Hounsfield air"
    elif integer and high - low > WIDE_RANGE:
        kind, reason = CT_LIKE, f"intensities span {high - low:.0f} (> {WIDE_RANGE}): CT / micro-CT range"
    else:
        kind, reason = MR_LIKE, f"intensities span {high - low:.6g}, no Hounsfield air"
    if values.min() == values.max():  # (the histogram's range is a placeholder then: low .. low + 1)
        reason = f"one value, {values[0]:g}, in every voxel"

    def clear_up_to(threshold: float) -> float:
        """The threshold below which everything is transparent: above a fill value, if there is one."""
        if filled is not None and threshold <= filled < top:
            return math.nextafter(filled, math.inf) + 1e-3 * (high - low)
        return threshold

    if kind == CT_LIKE:
        air, dense = _otsu(counts, edges, 3)
        if hounsfield:
            air = max(air, -400.0)  # lung and air stay clear in Hounsfield data
        air = clear_up_to(air)
        dense = max(dense, air + 1e-6 * (high - low))
        top = max(top, dense)
        colors = [(low, 0.0, 0.0, 0.0), (air, 0.55, 0.25, 0.15), (dense, 0.90, 0.70, 0.55), (top, 1.0, 0.97, 0.90)]
        # Tissue nearly clear (a body is many opacity units thick), dense material opaque.
        opacities = [(low, 0.0), (air, 0.0), (air + 0.25 * (dense - air), 0.008), (dense - 0.15 * (dense - air), 0.012),
                     (dense, 0.15), (dense + 0.5 * (top - dense), 0.6), (top, 0.85)]
    else:
        background = _otsu(counts, edges, 2)[0]
        if labels:  # (a label map whose only label is the fill itself: nothing above it)
            background = filled
        elif low < 0.0 < top:  # signed data (filtered, difference, test patterns) has no dark background: show what
            background = max(background, 0.0)  # is > 0 (when nothing is, e.g. all-negative HU, Otsu's cut stands)
        background = clear_up_to(background)
        above = values[values >= background]
        middle = float(np.median(above)) if above.size else background
        if labels and above.size:  # the lowest label already at the middle's opacity, not faded out near 0
            middle = float(above.min())
        if top <= middle:  # (two-valued data: its object at the 99.5th percentile) a ramp above it, not a step from
            # 0.1 to 0.5 opacity right at it, which drew a resampled copy's 3 % overshoot far more solid and white
            top = middle + 0.5 * (middle - background) if middle > background else middle
        colors = [(low, 0.0, 0.0, 0.0), (background, 0.45, 0.30, 0.25), (middle, 0.85, 0.72, 0.62),
                  (top, 1.0, 1.0, 0.96)]
        opacities = [(low, 0.0), (background, 0.0), (middle, 0.10), (top, 0.5)]
    return TransferFunction(kind, ascending_points(colors), ascending_points(opacities), window, reason)
