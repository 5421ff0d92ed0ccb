"""The dark/bright threshold: multi-level Otsu on a robust histogram of a subsample (levels 1-5 on the raw voxels,
auto on the denoised copy, cut above the air peak's noise), and :class:`HazeThreshold`, what was found."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ...core.dtypes import label_values, values_text
from ...core.errors import BigVolumeError
from ...core.volume import Volume
from ...io.slabs import ArraySlabReader
from ..precision import HISTOGRAM_BINS, robust_histogram, subsample
from .denoise import denoised_subsample
from .morphology import dilate
from .options import AUTO, LEVELS, HazeOptions


# Robust range of the histogram: the 0.1-99.9 percentiles, as precision.DEFAULT_PERCENTILES. Measured against 2-98
# (niimath's) on ch2 with noise, level 5: threshold 32.5 vs 27.5; brain voxels changed 560 vs 430, gzip gain 30.7 %
# vs 29.9 % (2-98 keeps more of the noise next to the head). Uint8 data then gets one bin per value.
ROBUST_PERCENTILES = (0.1, 99.9)
# The air's noise ends this many right half-widths at half maximum above the air peak's mode: 5.9 sigma of a
# Gaussian peak, where about 2 voxels in 10^9 lie above (noise voxels above the threshold become object islands that
# the dilation grows over the air).
AIR_NOISE_WIDTHS = 5
# Level auto's dilation only takes a voxel whose neighbourhood, counting its non-object voxels only, is this many
# half-widths of the denoised air peak above the air's mode (2.4 sigma: about 1 pure-air voxel in 100 passes). The
# band is a few voxels thick, so the pure air kept is a few % of it; a higher bar takes dim tissue next to the object.
# Measured (benchmarks/haze.py, ch2 with Rician sigma 10): 2 half-widths changed 588 brain voxels, 3 changed 884;
# a cavity of radius 8 voxels in 5 % Rician noise lost 99 % with 2, 99.7 % with 3 (the unconditional dilation: 46 %).
BAND_WIDTHS = 2
AIR_PEAK_SHARE = 0.05      # the air peak: the darkest histogram peak at least this share of the highest one
PEAK_SMOOTHING_BINS = 5    # histogram smoothed over this many bins before looking for peaks (sampling noise)
SAMPLE_VOXELS = 2_000_000
# A padding suspect (see PaddingSuspect): one value held by at least PADDING_SHARE of the voxels, below all others
# and beyond the noise of their darkest class (PADDING_NOISE_WIDTHS half-widths below its mode: not the clipped part
# of that class), which is a class of its own (its noise ends below their two-class Otsu cut) holding at least
# PADDING_AIR_SHARE of them, and which borders the padding (the voxels next to it are mostly of that class).
PADDING_SHARE = 0.01
PADDING_NOISE_WIDTHS = 3  # how far below its mode the dark class's noise reaches (3.5 sigma): clipped air lies within
PADDING_AIR_SHARE = 0.10
# A second population inside the air's noise range (see second_population): after the air's dense counts end, the
# smoothed counts rise again to at least RISE times their lowest since, and to a quarter of the peak threshold
# (AIR_PEAK_SHARE), and the voxels from that low on up to the threshold are at least POPULATION_SHARE of all. A
# Gaussian's tail only falls; sampling noise at a quarter of that level is a few % of it. Level auto then lowers the
# threshold to that low. Measured on a helper's 1,200 synthetic scans (CT, micro-CT, MRI, 8-bit; noise, shading,
# artefacts): it fired on 18; on the 14 shaded micro-CTs among them the specimen lost 4-57 % (up to 9,675 voxels
# deeper than 2) before, at most 3 % of its surface layer after, the air still all removed; the 4 others, ring and
# streak artefacts already warned of, kept 0.5-5 points more of their air.
POPULATION_RISE = 2.0
POPULATION_SHARE = 0.005


@dataclass(frozen=True)
class PaddingSuspect:
    """Level auto: many voxels hold one value below all others' noise (a scanner's padding outside its field of view:
    -3024 or -2048 HU, 0 in micro-CT; or the commonest value, a float reconstruction's 0 with the air's noise
    reaching below it), and above it lies a dark class of its own (the air inside the field of view). The padding
    is then the darkest peak, so auto may take it alone as air: the report warns (when little else went) with the
    fixed level that would take the class above too. Not acted on: a masked specimen (bone
    only, the rest padded) has the same histogram, and its darkest class is no air."""

    value: float        # the padding value
    share: float        # of the sampled voxels
    air_end: float      # where the noise of the dark class above it ends (auto's rule on the other voxels)
    air_share: float    # of the other voxels, below air_end
    level: int | None   # the fixed level whose threshold is the lowest above air_end (None: none is)
    level_threshold: float | None


@dataclass
class HazeThreshold:
    value: float          # voxels below this (and NaN) are dark; with ``denoised``, those whose denoised value is
    level: int | str
    classes: int
    air_classes: int
    thresholds: tuple     # the multi-Otsu thresholds of ``classes`` (classes - 1 values, ascending)
    window: tuple = ()    # the histogram's range (low, high)
    sampled: int = 0      # voxels in the subsample
    air_mode: float | None = None   # the air peak's intensity (None: no peak found)
    air_end: float | None = None    # where the air's noise ends (AIR_NOISE_WIDTHS half-widths above the mode)
    denoised: bool = False          # classified on the denoised copy (level auto)
    # Level auto: the dilation only grows the object onto voxels whose mean over their non-object neighbours
    # (:func:`.morphology.air_neighbourhood_passes`) reaches this (BAND_WIDTHS half-widths above the air peak's mode),
    # so it keeps partial-volume edges and dim tissue and leaves the pure air next to the object as haze. None (levels
    # 1-5): the dilation takes every voxel it reaches, as MRIcroGL's.
    band_floor: float | None = None
    padding: PaddingSuspect | None = None
    # Level auto: where the threshold would have been when a second population began below it inside the air's
    # noise range, after a gap (second_population): it was lowered to that gap, and the population kept as object
    lowered_from: float | None = None
    # Levels 1-5: when a class of its own (a peak of the histogram) lies between the air and the threshold, so the
    # level takes that class as air too (levels 1-3 do when the object has two classes: dim tissue beside bright),
    # the valley between the air and that class; None when none does. The air here is the population above a
    # padding or clipping spike.
    class_taken_above: float | None = None
    # Level auto: the object's mean (of the voxels' own values, where the denoised copy is above the threshold), and
    # the noise sigma of the denoised copy, measured on the air from neighbouring voxels (None: not measured, or no
    # noise)
    object_level: float | None = None
    noise: float | None = None

    @property
    def no_class_above(self) -> bool:
        """Level auto found no multi-Otsu cut above the air's noise, so the threshold is the noise's end itself
        (:func:`_auto_cut`'s one "cut"): what lies above it is not a class of its own, and the threshold may cut
        into the object (the report warns)."""
        return self.denoised and self.air_end is not None and self.thresholds == (self.air_end,)

    @property
    def object_sigmas(self) -> float | None:
        """Level auto: how many noise sigmas of the denoised copy the object's mean lies above the threshold. Below
        OBJECT_NOISE_SIGMAS the object's noise reaches the threshold (low signal to noise): its dark noise voxels
        beside the air go with it, and a dim class inside it joins the air through them (the report warns). None
        when not measured."""
        if self.object_level is None or not self.noise:
            return None
        return (self.object_level - self.value) / self.noise

    @property
    def in_noise(self) -> bool:
        """The threshold lies inside the air's noise: noise voxels above it count as object (not when it was lowered
        to a gap inside the noise's measured range: the air ended before it)."""
        return self.air_end is not None and self.value < self.air_end and self.lowered_from is None

    def describe(self) -> str:
        if self.level == AUTO:
            text = (f"threshold {self.value:.6g} (auto, on a denoised copy: {self.classes} classes, darkest "
                    f"{self.air_classes} air")
        else:
            text = (f"threshold {self.value:.6g} (level {self.level}: {self.classes} classes, darkest "
                    f"{self.air_classes} air")
        if self.air_mode is not None:
            text += f"; air peak {self.air_mode:.4g}, its noise up to {self.air_end:.4g}"
        if self.band_floor is not None:
            text += f"; the dilation takes voxels whose surroundings reach {self.band_floor:.4g}"
        return text + ")"


# --- multi-level Otsu -------------------------------------------------------------------------------------------

def multi_otsu(histogram: np.ndarray, classes: int) -> tuple[int, ...]:
    """Bin indices ``t1 < ... < t(classes-1)`` splitting ``histogram`` into ``classes`` runs of bins
    (``[0, t1)``, ``[t1, t2)``, ...) with the largest between-class variance: an exact dynamic program over the
    cumulative sums (the between-class variance is a sum of one term per class, so the best split of the first b
    bins into m classes extends the best splits into m-1)."""
    counts = np.asarray(histogram, np.float64)
    bins = counts.size
    if classes < 2 or bins < classes:
        raise ValueError(f"cannot split {bins} bins into {classes} classes")
    weight = np.concatenate([[0.0], np.cumsum(counts)])
    moment = np.concatenate([[0.0], np.cumsum(counts * np.arange(bins))])
    # term[a, b]: the class made of bins a..b-1 contributes moment^2 / weight (0 when empty).
    w = weight[None, :] - weight[:, None]
    m = moment[None, :] - moment[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(w > 0, m * m / np.where(w > 0, w, 1), 0.0)
    lower = np.tril(np.ones((bins + 1, bins + 1), bool))
    term[lower] = -np.inf  # a class needs at least one bin: a < b
    best = term[0].copy()            # best[b]: first b bins as one class
    choices = []
    for _ in range(classes - 1):
        total = best[:, None] + term  # split at a, the new class is a..b-1
        choice = np.argmax(total, axis=0)
        best = total[choice, np.arange(bins + 1)]
        choices.append(choice)
    cuts, end = [], bins
    for choice in reversed(choices):
        end = int(choice[end])
        cuts.append(end)
    return tuple(reversed(cuts))


def _centre_in_gaps(counts: np.ndarray, cuts) -> list[float]:
    """A cut inside a run of empty bins scores the same anywhere in it; put it in the middle (a cut at the run's
    edge would hug the sampled values, and voxels the sample missed would fall on the wrong side)."""
    positions, previous = [], 0
    for index, cut in enumerate(cuts):
        following = cuts[index + 1] if index + 1 < len(cuts) else counts.size
        low, high = cut, cut
        while low > previous and counts[low - 1] == 0:
            low -= 1
        while high < following and counts[high] == 0:
            high += 1
        positions.append((low + high) / 2 if low > previous and high < following else float(cut))
        previous = cut
    return positions


class AirPeak(NamedTuple):
    """The air in a histogram, in bin-edge coordinates (bin b spans b..b+1)."""
    mode: float    # the air peak's centre
    end: float     # where its noise ends
    width: float   # its noise's right half-width at half maximum (a Gaussian's 1.18 sigma), at least one bin
    # the peak is one value held by most voxels of its bin (padding, clipping: _is_spike); known when air_peak is
    # given the values
    one_value: bool = False


# A peak whose falling edge is this much narrower than its half-width is a plateau (air shaded across the field):
# its noise is the edge's, and it ends beyond the edge, not 5 plateau widths above its mode.
PLATEAU_EDGE_SHARE = 0.35
GAUSSIAN_HALF_WIDTH = 1.1774   # a Gaussian's half-width at half maximum, in sigmas
QUARTILE_SIGMAS = 1.349        # a sharp edge blurred by Gaussian noise falls from 3/4 to 1/4 over this many sigmas
AIR_EDGE_SIGMAS = AIR_NOISE_WIDTHS * GAUSSIAN_HALF_WIDTH  # as far beyond an edge as a peak's noise beyond its mode


def _peak_from(counts: np.ndarray, smooth: np.ndarray, start: int, significant: float) -> AirPeak | None:
    """The darkest peak of ``smooth`` at or above bin ``start`` that reaches ``significant``, and its noise's end."""
    reach = PEAK_SMOOTHING_BINS
    peak = next((b for b in range(start, smooth.size) if smooth[b] >= significant
                 and smooth[b] == smooth[max(start, b - reach):b + reach + 1].max()), None)
    if peak is None:
        return None
    low = max(start, peak - PEAK_SMOOTHING_BINS // 2)
    mode = low + int(np.argmax(counts[low:peak + PEAK_SMOOTHING_BINS // 2 + 1]))
    half = mode + 1
    while half < counts.size and counts[half] >= counts[mode] / 2:
        half += 1
    centre = mode + 0.5
    width = max(1.0, half - centre)
    eighth = half
    while eighth < counts.size and counts[eighth] >= counts[mode] / 8:
        eighth += 1
    if width > 1:
        # the drop near ``eighth`` (a sloping plateau's half-maximum point lies on its slope, far from the drop)
        edge = _edge_near(smooth, eighth, mode)
        if edge.width + 1 < PLATEAU_EDGE_SHARE * width:  # a plateau
            return AirPeak(centre, edge.end, edge.width)
    return AirPeak(centre, centre + AIR_NOISE_WIDTHS * width, width)


def _edge_near(smooth: np.ndarray, guess: int, start: int) -> AirPeak:
    """The falling edge of smoothed counts near bin ``guess`` (not below ``start``): measured against the level
    just before it (a sloping plateau's or tail's level where it drops, not where it began), placed where the
    counts first fall below half that level."""
    before = smooth[max(start, guess - 4 * PEAK_SMOOTHING_BINS):max(start + 1, guess - PEAK_SMOOTHING_BINS)]
    level = float(np.median(before))
    drop = guess
    while drop > start + 1 and smooth[drop - 1] < level / 2:
        drop -= 1
    while drop < smooth.size and smooth[drop] >= level / 2:
        drop += 1
    return _edge(smooth, level, drop, start)


def _edge(counts: np.ndarray, level: float, drop: int, start: int) -> AirPeak:
    """The falling edge of (smoothed) counts at ``level`` whose first bin below half of it is ``drop``: its noise
    from the distance between the last bin at 3/4 of the level and the first below 1/4 (1.35 sigma for Gaussian
    noise on a sharp edge; a floor below 1/4, bright artefacts or partial volume, does not widen it), its end
    AIR_EDGE_SIGMAS sigma beyond the edge (an AirPeak whose mode is ``start``: only its end and width are used).
    Smoothed, because integer data put comb teeth in the counts (a denoised
    copy's values are multiples of 1/64: bins alternately catch more and fewer of them)."""
    upper = drop
    while upper > start and counts[upper - 1] < 0.75 * level:
        upper -= 1
    lower = drop
    while lower < counts.size and counts[lower] >= 0.25 * level:
        lower += 1
    sigma = max(1, lower - upper) / QUARTILE_SIGMAS
    return AirPeak(float(start), drop + AIR_EDGE_SIGMAS * sigma, max(1.0, GAUSSIAN_HALF_WIDTH * sigma))


def _level_after(smooth: np.ndarray, start: int) -> float:
    """The level of (smoothed) counts from bin ``start`` on: the median of the next few bins."""
    return float(np.median(smooth[start:start + 4 * PEAK_SMOOTHING_BINS]))


def _edge_after(smooth: np.ndarray, start: int) -> AirPeak | None:
    """Where dense (smoothed) counts from bin ``start`` on drop for good (the first fall below half their level
    there, :func:`_level_after`), with its end (:func:`_edge`); None when they do not drop within the
    histogram. A tail that falls slowly drops to half its level well before its end: the caller steps on from
    there."""
    level = _level_after(smooth, start)
    below = np.nonzero(smooth[start:] < level / 2)[0]
    if below.size == 0:
        return None
    return _edge_near(smooth, start + int(below[0]), start)


def air_peak(counts: np.ndarray, values: np.ndarray | None = None, edges: np.ndarray | None = None,
             start: int = 0) -> AirPeak | None:
    """The air in a histogram (:class:`AirPeak`; None when it is empty): the darkest peak of the histogram smoothed
    over PEAK_SMOOTHING_BINS that reaches AIR_PEAK_SHARE of the highest, and its noise's end, AIR_NOISE_WIDTHS right
    half-widths at half maximum above its mode (measured on the unsmoothed counts, at least one bin: the right flank,
    because the left one is often cut by the histogram's range; a plateau's flank when the peak is one). ``start``:
    the darkest such peak at or above that bin.

    When the histogram is still as high as a peak where that noise ends, the air goes on (a spike of voxels clipped
    at the type's or the scanner's minimum, or a narrow peak, then air shaded across the field): its end is that of
    the next drop of those dense counts (:func:`_edge_after`, step after step), as long as it stays below the
    two-class Otsu cut (above it lies the object, not more air), and the counts stay dense from the peak on (a gap
    is the end of the air) unless the peak is one value (padding, clipping: :func:`_is_spike`, known when the
    ``values`` the counts were taken of and the bins' ``edges`` are given), from which a thin bridge of voxels between
    it and the air (their values mixed by the denoising) leads on to the air."""
    counts = np.asarray(counts, np.float64)
    smooth = _smoothed(counts)
    if smooth.max() <= 0:
        return None
    significant = AIR_PEAK_SHARE * smooth.max()
    found = _peak_from(counts, smooth, start, significant)
    if found is None:
        return None
    start = int(found.mode)  # where the dense counts the air may go on through began
    found = found._replace(one_value=values is not None and edges is not None and _is_spike(values, edges, found))
    # A spike standing alone (no dense counts right above it: padding below the air) may lead on to the air over a
    # thin bridge; one on top of a population (air around a field-of-view mask of zeros) is that population's peak.
    bridged = found.one_value and not np.all(counts[start + 1:start + 4] >= significant)
    otsu = None
    while True:
        beyond = int(np.ceil(found.end))
        # Dense all the way from the peak to its end, and after it (a spike standing alone: at its end, once). A gap
        # on the way (the counts falling below `significant`) ends the air: what follows is another class. Dense at
        # the end only, and sparse after it: the smoothing of the peak's own tail (a bright class, metal, squeezes
        # air and tissue into a few bins, with the partial-volume voxels between them).
        if beyond >= counts.size:
            return found
        dense = smooth[beyond] if bridged else min(smooth[start:beyond + 1].min(), _level_after(smooth, beyond))
        if dense < significant:
            return found
        # after a spike standing alone, the next population is the air (a peak, perhaps narrow); else dense counts
        # go on to their drop
        following = _peak_from(counts, smooth, beyond, significant) if bridged else _edge_after(smooth, beyond)
        if following is None or following.end <= found.end:
            return found
        if otsu is None:
            otsu = _centre_in_gaps(counts, multi_otsu(counts, 2))[0]
        if following.end > otsu:
            return found
        found, start, bridged = found._replace(end=following.end, width=following.width), beyond, False


def find_threshold(volume_or_array, level: int | str = AUTO, sample_voxels: int = SAMPLE_VOXELS, *,
                   percentiles=ROBUST_PERCENTILES) -> HazeThreshold:
    """The dark/bright threshold for ``level`` ("auto" or 1-5, see :data:`LEVELS`), from a subsample of at most
    about ``sample_voxels`` voxels of a Volume, an array (k, j, i) or a slab reader (auto: of its denoised copy).
    Refuses constant volumes, label maps and vector volumes with a BigVolumeError."""
    level = HazeOptions(level=level).level  # validates the level
    source = volume_or_array.array if isinstance(volume_or_array, Volume) else volume_or_array
    check_scalar(source)
    sample = subsample(source, sample_voxels)
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if finite.size == 0:
        raise BigVolumeError("the volume has no finite voxel values: there is nothing to threshold")
    low, high = finite.min(), finite.max()
    if low == high:
        raise BigVolumeError(f"every voxel has the value {low:g} (a constant volume): there is no haze to remove")
    integer = sample.dtype.kind in "iub"
    labels = label_values(finite)
    if labels is not None:
        raise BigVolumeError(f"the volume has only {labels.size} distinct values ({values_text(labels)}): it looks "
                             "like a label map or mask, not an intensity image; haze removal needs intensities")
    padding = class_taken_above = None
    if level == AUTO:
        denoised = denoised_subsample(source if not isinstance(source, np.ndarray) else ArraySlabReader(source),
                                      sample_voxels)
        padding = _padding_suspect(sample, denoised, finite, integer, percentiles)
        finite = denoised[np.isfinite(denoised)]
        counts, edges = robust_histogram(finite, percentiles)
        if np.count_nonzero(counts) < 2:
            raise BigVolumeError("the volume's denoised intensities fall into one histogram bin: they cannot be "
                                 "split into air and object")
        counts, edges, peak, (classes, cuts, position) = _air_and_cut(finite, counts, edges)
        air_classes = 1 + sum(cut < position for cut in cuts)  # the classes below the Otsu cut it was taken from
    else:
        classes, air_classes = LEVELS[level]
        counts, edges = robust_histogram(finite, percentiles, integer=integer)
        cuts = _level_cuts(counts, level)
        position = cuts[air_classes - 1]
        air = peak = air_peak(counts)
        if air is not None and _lone_spike(counts, air):  # padding or clipping: the air is the population above it
            air = air_peak(counts, start=int(air.mode) + PEAK_SMOOTHING_BINS) or air
        valley = _valley_before_class(counts, air, position) if air is not None else None
        if valley is not None:
            class_taken_above = _bin_value(edges, valley + 0.5)

    def value(p):
        return _bin_value(edges, p)

    band_floor = lowered_from = object_level = noise = None
    if level == AUTO:  # peak[0]: the mode, in bin-edge coordinates
        band_floor = value(peak.end - (AIR_NOISE_WIDTHS - BAND_WIDTHS) * peak.width)
        gap = second_population(counts, peak, position)
        if gap is not None:
            lowered_from, position = value(position), gap
        object_level, noise = _object_level_and_noise(sample, denoised, value(position))
    return HazeThreshold(value(position), level, classes, air_classes, tuple(value(p) for p in cuts),
                         (float(edges[0]), float(edges[-1])), int(sample.size),
                         value(peak[0]) if peak else None, value(peak[1]) if peak else None, level == AUTO,
                         band_floor, padding, lowered_from, class_taken_above, object_level, noise)


# The noise of the denoised copy is this share of the voxels' own: the [1 2 1]^3 / 64 kernel's sqrt(sum of w^2)
DENOISED_NOISE_SHARE = (6 / 16) ** 1.5
MAD_SIGMAS = 1.4826  # a Gaussian's sigma per median absolute deviation
# The object's mean at least this many noise sigmas of the denoised copy above the threshold, or the report warns
# (HazeThreshold.object_sigmas). Rician noise, which the air's measure underrates in the tissue by a third, and a dim
# class near the threshold bring damage below this: measured on 48-96-voxel MRIs (tissue 1000 with a dim class 600 in
# Rician noise), SNR 2.5: 3.0-4.8, 7-20 % of the object removed, up to 16 voxels deep; SNR 3: 4.5-6.6, 1-12 %, up to
# 11 deep; SNR 4: 9.7 or more, at most 1.2 % (its surface). Clean volumes: 7.3 or more, except a 1 % object in a
# volume of 3 slices at SNR 5 (5.7: the denoised copy blurs it with the air on both sides).
OBJECT_NOISE_SIGMAS = 7.0


def _object_level_and_noise(sample: np.ndarray, denoised: np.ndarray, threshold: float) -> tuple:
    """(the object's mean, the noise sigma of the denoised copy), each None when there is nothing to measure. The
    mean is of the raw subsample's values where the denoised one is above ``threshold``: the voxels' own values,
    which the denoised copy's blur does not lower at a thin object's edges. The noise is measured on the voxels of
    the raw subsample that are dark in the denoised one, from the differences of neighbours in the subsample along
    one axis (their median absolute value): shading changes little from one voxel to the next (or the subsample's
    next, a few voxels on), so it does not widen the noise as it widens the air's histogram peak."""
    axis = next((a for a in (2, 1, 0) if sample.shape[a] > 1), None)
    above = sample[denoised >= threshold].astype(np.float64)
    above = above[np.isfinite(above)]
    level = float(above.mean()) if above.size else None
    if axis is None:
        return level, None
    first, second = (tuple(slice(None) if a != axis else part for a in range(3))
                     for part in (slice(None, -1), slice(1, None)))
    dark = denoised < threshold
    steps = np.subtract(sample[second], sample[first], dtype=np.float64)[dark[first] & dark[second]]
    steps = np.abs(steps[np.isfinite(steps)])
    noise = MAD_SIGMAS * float(np.median(steps)) / np.sqrt(2) * DENOISED_NOISE_SHARE if steps.size else None
    return level, noise or None


def second_population(counts: np.ndarray, air: AirPeak, threshold: float) -> float | None:
    """The bin where a second population begins below the threshold inside the air's noise range, after a gap (the
    gap's lowest bin); None when there is none. The noise range is measured from the air peak's width, as if it
    were one Gaussian peak: air spread by shading across the field is wider than its noise, and its range then
    reaches over a gap into the object's dimmest voxels (a shaded specimen), which a threshold above that range
    removes. Looked for after the
    last dense bin (AIR_PEAK_SHARE of the highest) below the range's end: the air, however far it went on, ends
    there; a falling tail follows, and a population shows as counts rising again (POPULATION_RISE, POPULATION_SHARE).
    Not after a peak of one value (padding, clipping): the population above it is the air as often as the object."""
    if air.one_value:
        return None
    smooth = _smoothed(np.asarray(counts, np.float64))
    significant = AIR_PEAK_SHARE * smooth.max()
    end = min(int(np.ceil(air.end)), int(np.floor(threshold)), smooth.size)
    dense = np.nonzero(smooth[int(air.mode):end] >= significant)[0]
    if dense.size == 0:
        return None
    first = int(air.mode) + int(dense[-1]) + 1
    low = first
    for b in range(first, end):
        if smooth[b] < smooth[low]:
            low = b
        elif (smooth[b] >= POPULATION_RISE * smooth[low] and smooth[b] >= significant / 4
              and counts[low:int(np.floor(threshold))].sum() >= POPULATION_SHARE * counts.sum()):
            return float(low)
    return None


# Level auto: how many times the histogram may be narrowed to the range below its cut (see _air_and_cut).
MAX_ZOOMS = 3


def _air_and_cut(values: np.ndarray, counts: np.ndarray, edges: np.ndarray):
    """Level auto on the histogram (``counts``, ``edges``) of the denoised ``values``: (counts, edges, the air peak,
    :func:`_auto_cut`'s (classes, cuts, threshold)), in bin coordinates of the histogram returned: the one given, or
    one narrowed to the range below a cut. Narrowed when a class lies between the air and the cut chosen
    (:func:`_class_between`): to that cut; or when the air is squeezed into a bin (its half-width the one-bin floor,
    and not one value): to the next cut above the one chosen, so the class above the air stays in range."""
    peak = air_peak(counts, values, edges)
    chosen_cut = _auto_cut(counts, peak.end)
    for _ in range(MAX_ZOOMS):
        if peak.one_value:
            break
        _, cuts, position = chosen_cut
        chosen = min((c for c in cuts if c >= peak.end), default=counts.size)
        if _class_between(counts, peak, position):
            high = _bin_value(edges, chosen)
        elif peak.width <= 1:
            high = _bin_value(edges, min((c for c in cuts if c > chosen), default=counts.size))
        else:
            break
        if high >= edges[-1]:
            break
        air_mode = _bin_value(edges, peak.mode)
        narrowed, narrowed_edges = _zoomed_histogram(values, edges[0], high)
        narrowed_peak = air_peak(narrowed, values, narrowed_edges)
        if _bin_value(narrowed_edges, narrowed_peak.end) < air_mode:
            # resolved, the air's bin held two populations (CT air at -1000 HU beside padding at -1024): the air is
            # the one the wider bins found; the darker one lies below the threshold anyway
            start = max(0, int(np.searchsorted(narrowed_edges, air_mode)) - 1 - PEAK_SMOOTHING_BINS)
            narrowed_peak = air_peak(narrowed, values, narrowed_edges, start) or narrowed_peak
        # (nothing may be left above the air in the narrower range, the class between gone into it: the report
        # then warns that the threshold may cut into the object. Keeping the wider bins' cut instead left 80-90 %
        # of the air without a warning where ring artefacts were brighter than the specimen.)
        counts, edges, peak = narrowed, narrowed_edges, narrowed_peak
        chosen_cut = _auto_cut(counts, peak.end)
    return counts, edges, peak, chosen_cut


def _class_between(counts: np.ndarray, air: AirPeak, cut: float) -> bool:
    """A class of its own (a peak of the smoothed counts reaching AIR_PEAK_SHARE of the highest) between the air
    and the cut above it: the cut skipped it, as a class far brighter than the rest (metal, a dense
    inclusion, a few % of the voxels) pulls the multi-Otsu cuts up and squeezes air and tissue into a few bins. The
    threshold, halfway to that cut, would take the class in between."""
    return _valley_before_class(counts, air, cut) is not None


def _valley_before_class(counts: np.ndarray, air: AirPeak, cut: float) -> int | None:
    """The bin of the lowest smoothed count between the air and the first class of its own below ``cut`` (see
    :func:`_class_between`), None when there is none."""
    smooth = _smoothed(counts)
    significant, reach, mode = AIR_PEAK_SHARE * smooth.max(), PEAK_SMOOTHING_BINS, int(air.mode)
    # a peak: rising to it (not the air's falling tail), the highest of the next `reach` bins, and a valley below
    # half its height between it and the air. It may lie below the air's end: squeezed into a few bins, a class
    # next to the air is within the air's 5 (one-bin) half-widths.
    for b in range(mode + 1, min(int(np.floor(cut)), smooth.size)):
        if (smooth[b] >= significant and smooth[b] >= smooth[b - 1] and smooth[b] == smooth[b:b + reach + 1].max()
                and smooth[mode:b].min() < smooth[b] / 2):
            return mode + int(np.argmin(smooth[mode:b]))
    return None


def _smoothed(counts: np.ndarray) -> np.ndarray:
    """``counts`` smoothed over PEAK_SMOOTHING_BINS (sampling noise), the histogram the peaks are looked for in."""
    return np.convolve(counts, np.ones(PEAK_SMOOTHING_BINS) / PEAK_SMOOTHING_BINS, "same")


def _is_spike(values: np.ndarray, edges: np.ndarray, air: AirPeak) -> bool:
    """The air peak is one value held by most voxels of its bin: padding or clipping (what lies above it is the
    air, or the object: not told apart here), not air squeezed into a bin by a bright class."""
    b = min(int(air.mode), edges.size - 2)
    inside = values[(values >= edges[b]) & (values <= edges[b + 1])]
    if inside.size == 0:
        return False
    _, counts = np.unique(inside, return_counts=True)
    return counts.max() >= inside.size / 2


# A bin holding this many times as many voxels as each of its neighbours holds a value of its own (padding, clipping)
LONE_SPIKE_TIMES = 4


def _lone_spike(counts: np.ndarray, air: AirPeak) -> bool:
    """The air peak's bin stands alone (LONE_SPIKE_TIMES its neighbours): one value, padding or clipping, not noise
    spread over bins (with one bin per integer value, :func:`_is_spike` holds for any peak)."""
    mode = int(air.mode)
    neighbours = counts[max(0, mode - 1):mode].tolist() + counts[mode + 1:mode + 2].tolist()
    return counts[mode] > LONE_SPIKE_TIMES * max(neighbours, default=0)


def _zoomed_histogram(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """The histogram of the ``values`` up to ``high`` (those above are left out, not piled into the last bin), in
    as many bins as the full one: the air and the classes next to it, resolved."""
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    kept = values[values <= high]
    counts, _ = np.histogram(np.clip(kept, low, high), edges)
    return counts, edges


def _bin_value(edges: np.ndarray, position: float) -> float:
    """The intensity at ``position`` in bin-edge coordinates (bin b spans edges[b]..edges[b + 1])."""
    return float(np.interp(position, np.arange(edges.size), edges))


def _level_cuts(counts: np.ndarray, level: int) -> list:
    """A fixed level's multi-Otsu cuts (bin coordinates) on the raw voxels' histogram ``counts``."""
    classes = LEVELS[level][0]
    if np.count_nonzero(counts) < classes:
        raise BigVolumeError(f"the volume's intensities fall into fewer than {classes} histogram bins: they "
                             f"cannot be split into the {classes} classes of level {level}")
    return _centre_in_gaps(counts, multi_otsu(counts, classes))


def _padding_suspect(sample: np.ndarray, denoised: np.ndarray, finite: np.ndarray, integer: bool,
                     percentiles) -> PaddingSuspect | None:
    """See :class:`PaddingSuspect`. ``sample`` and ``denoised``: the raw and denoised subsample (k, j, i), voxel for
    voxel; ``finite``: the raw sample's finite values (for the fixed levels)."""
    valid = np.isfinite(sample) & np.isfinite(denoised)
    if not valid.any():
        return None
    values, counts = np.unique(sample[valid], return_counts=True)
    # the lowest value, or the commonest (a float reconstruction's 0 outside its field of view, with the air's
    # noise reaching below it)
    for candidate in dict.fromkeys((values[0], values[np.argmax(counts)])):
        suspect = _padding_at(candidate, sample, denoised, valid, finite, integer, percentiles)
        if suspect is not None:
            return suspect
    return None


# The voxels this many 6-neighbour steps from the padding in the subsample are left out of the others: their denoised
# values ([1 2 1]^3, 26 neighbours: 3 steps) mix in the padding's, in a few fixed proportions that make peaks.
PADDING_MIXED_STEPS = 3


def _padding_at(value: float, sample: np.ndarray, denoised: np.ndarray, valid: np.ndarray, finite: np.ndarray,
                integer: bool, percentiles) -> PaddingSuspect | None:
    """The padding suspect at ``value`` (see :func:`_padding_suspect`), or None."""
    at = valid & (sample == value)
    share = float(at.sum() / valid.sum())
    if share < PADDING_SHARE or np.array_equal(at, valid):
        return None
    others = valid & ~dilate(at, PADDING_MIXED_STEPS)
    if not others.any():
        return None
    others = denoised[others]
    counts, edges = robust_histogram(others, percentiles)
    otsu = _centre_in_gaps(counts, multi_otsu(counts, 2))[0]
    peak = air_peak(counts)
    if peak is None or peak.end >= otsu:
        return None  # no class of its own: the others are one population (a skull-stripped brain, a bone)
    air_end = _bin_value(edges, peak.end)
    # of all the other voxels (those next to the padding count as not air: a volume already cleaned keeps a rim of
    # air there, in its object's shape)
    air_share = float(np.count_nonzero(others < air_end) / np.count_nonzero(valid & ~at))
    if air_share < PADDING_AIR_SHARE:
        return None
    class_starts = _bin_value(edges, peak.mode) - PADDING_NOISE_WIDTHS * peak.width * (edges[1] - edges[0])
    if class_starts <= value:
        return None  # the value lies within the dark class's noise: its clipped part (air at the type's minimum)
    beside = valid & dilate(at, 1) & ~at
    if not beside.any() or not class_starts <= np.median(sample[beside]) < air_end:
        return None  # the dark class does not border the padding: an object does, or a rim of air left by a cleaning
    best = None
    counts, edges = robust_histogram(finite, percentiles, integer=integer)  # the fixed levels' histogram, once
    for level, (_, air_classes) in LEVELS.items():
        try:
            threshold = _bin_value(edges, _level_cuts(counts, level)[air_classes - 1])
        except BigVolumeError:
            continue
        if threshold > air_end and (best is None or threshold < best[1]):
            best = (level, threshold)
    return PaddingSuspect(float(value), share, air_end, air_share, *(best or (None, None)))


def _auto_cut(counts: np.ndarray, air_end: float) -> tuple[int, list, float]:
    """(classes, that split's cuts, the threshold) in bin coordinates: halfway between the end of the air's noise and
    the lowest multi-Otsu cut of 2, 3 or 4 classes above it (as far from the noise as from the classes above: dim
    tissue next to the air, the scalp of an MRI, stays object); the end itself when no cut is above it (no gap)."""
    chosen = None
    for classes in range(2, min(4, np.count_nonzero(counts)) + 1):
        cuts = _centre_in_gaps(counts, multi_otsu(counts, classes))
        for cut in cuts:
            if cut >= air_end and (chosen is None or cut < chosen[2]):
                chosen = (classes, cuts, cut)
    if chosen is None:
        return 2, [air_end], air_end
    classes, cuts, cut = chosen
    return classes, cuts, (air_end + cut) / 2


def check_scalar(source) -> None:
    """A scalar volume of real numbers (a slab reader, or an array (k, j, i)); refused in words otherwise (a 2-D
    array was an IndexError, complex voxels were compared by their real part)."""
    components = getattr(source, "components", None)
    if components is None:
        source = np.asarray(source)  # (no copy for an array or a memory map)
        shape, dtype = source.shape, source.dtype
        if len(shape) not in (3, 4) or dtype.kind not in "biuf":
            raise BigVolumeError(f"an array of shape {shape} and type {dtype}: a volume is (k, j, i) of real numbers")
        components = shape[3] if len(shape) == 4 else 1
    if components != 1:
        raise BigVolumeError(f"the volume has {components} components per voxel (RGB or vector): haze removal needs "
                             "a scalar volume; convert it to gray first")
