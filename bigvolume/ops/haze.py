"""Haze removal: set the noise in the air around an object to one value, so that the volume compresses, without
touching the object.

1. **Threshold**. ``level="auto"`` (the default) also classifies a *denoised copy*: each voxel's [1 2 1] weighted mean
   over its 3x3x3 neighbourhood (:func:`_smooth`; noise sigma / 4.4, edges kept within a voxel). The threshold is the
   lowest multi-level Otsu cut (2, 3 or 4 classes) on that copy's histogram that lies above the noise of the air:
   the air is the darkest prominent histogram peak, and its noise ends :data:`AIR_NOISE_WIDTHS` right half-widths at
   half maximum above its mode (:func:`air_peak`). So the number of classes that are air follows the histogram (CT
   has three populations, air, soft tissue and bone; MRI two), and the cut cannot fall inside the noise (it did with
   a fixed level on CT at -1000 HU with 30 HU noise, and on half-normal air noise). Levels 1-5 keep MRIcroGL's
   meaning (:data:`LEVELS`) on the raw voxels. Both use a 256-bin histogram of a subsample over a robust intensity
   range (:data:`ROBUST_PERCENTILES`). Voxels below the threshold (auto: themselves or in the denoised copy) are
   *dark*. NaN voxels: levels 1-5 count them as dark (in the air they become the fill value, enclosed ones are
   kept); auto never does (no intensity is not air: they are kept, and where a NaN reaches the denoised copy, its 26
   neighbours, the voxel's own value decides).
2. **Air**: by default the dark voxels 6-connected to the volume's border, so dark structures enclosed by the object
   (ventricles, sinuses, marrow, air inside a specimen) stay; ``air="all"``: every dark voxel.
3. **Object** = not air; ``largest_only`` keeps its largest 6-connected component; ``close`` N closes it with a
   radius-N 6-neighbour (city-block) ball, bridging gaps up to 2N voxels wide (sulci opening to the outside);
   then it is dilated by ``dilate`` 6-neighbour steps so partial-volume edges survive. Levels 1-5 take every voxel
   the steps reach (as MRIcroGL), which keeps a ``dilate``-voxel rim of pure air round the object and inside its
   cavities (half of a cavity of radius 8). Auto's steps only take voxels whose [1 2 1]^3 mean over their non-object
   neighbours (:func:`_air_neighbourhood_passes`) is :data:`BAND_WIDTHS` half-widths above the air's mode: partial
   volume and dim tissue next to the object stay, the pure air next to it goes.
4. **Haze** = everything outside that object: set to the image minimum (``fill="min"``) or to a given value.
5. **Report**: when little or nothing was removed, :attr:`DehazeReport.warning` says why (the threshold fell inside
   the air's noise, no dark voxel touches the border, the border is not darker than the object, ...).

Any size: all of this runs slab by slab in z (:class:`_HazePipeline`). Border connectivity and the largest
component are global properties: each slab's dark (or object) voxels are labelled on their own, the labels that meet
across slab boundaries or touch the volume border are joined in a union-find, and a second pass rewrites each slab
from the joined labels: from the first pass's labels kept in 1-2 bytes a voxel (:func:`_compact`) when memory
allows, else labelling again (SimpleITK's labelling is deterministic). The denoised copy of a slab is computed from
the slab plus one slice each side (:class:`bigvolume.engine.HaloReader`, reading forward only); the morphology (and auto's
partial-volume test, from the window's own voxels) runs on a window of the slab plus a halo of ``2 * close + dilate``
slices. In-memory volumes run through the same pipeline, so the
streamed result equals the in-memory one exactly.

Refused with one clear message: constant volumes (all-zero included) and all-NaN ones (nothing to separate),
integer volumes with at most 16 distinct values (label maps and masks have no haze), vector/RGB volumes. A volume
2 voxels thin has every voxel on its border: border air is then all dark voxels (said in the report's notes).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import BigVolumeError, naming
from ..core.memory import format_bytes
from ..core.progress import Progress, ProgressCallback, as_progress
from ..core.volume import Volume, owned_view
from ..engine.loop import HaloReader, SlabStage, run_slabs
from ..engine.plan import StreamPlan, in_memory_limit, plan_input, plan_slabs
from ..engine.sinks import file_sink
from ..io import files as io
from ..io.slabs import ArraySlabReader, open_slabs
from .precision import robust_histogram, subsample

logger = logging.getLogger("bigvolume")

# level -> (classes, how many of the darkest classes are air): MRIcroGL's table (niimath's level 2 acts as level 4).
LEVELS = {1: (4, 3), 2: (3, 2), 3: (2, 1), 4: (3, 1), 5: (4, 1)}
AUTO = "auto"              # the default level: a denoised copy, the air's classes chosen from the histogram
LEVEL_NAMES = (AUTO,) + tuple(LEVELS)
AIR_MODES = ("border", "all")
# Two 6-neighbour dilations (as MRIcroGL; niimath does one). Measured on the real head MRI ch2 with Rician noise
# (benchmarks/haze.py, level 5): 1 dilation changed 1232 voxels of the brain mask ch2bet, more than niimath's 624;
# 2 changed 560, fewer, for a gzip gain of 30.7 % instead of 34.2 %.
DEFAULT_DILATE = 2
MAX_RADIUS = 64            # dilate / close beyond this is a typo, not a wish (each step is a pass over the volume)
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
LITTLE_REMOVED = 0.01      # fewer voxels than this share changed: the report warns and says why
# Fewer object voxels than this share kept while more than half the volume changed: the report warns (no object
# found; noise alone keeps 0.1-0.2 %, a shell whose wall is 0.5 % of the field keeps 0.55 %). A specimen smaller
# than this in its field of view is rare; the warning then only asks to look.
LITTLE_KEPT = 0.004
SAMPLE_VOXELS = 2_000_000
LABEL_MAP_VALUES = 16      # an integer volume with at most this many distinct values is a label map, not an image
COMPRESSION_SAMPLE_BYTES = 8 * 2**20   # compressed-size report: exact up to this size, else from a slice sample
SLAB_VOXELS = 16 * 2**20               # slabs of about this size at most (larger ones gain nothing) ...
LABEL_CACHE_BYTES = 256 * 2**20        # ... and keep up to this much of the first passes' labels for the last


@dataclass(frozen=True)
class HazeOptions:
    """``level``: "auto" (default) or 1-5 (MRIcroGL's table, on the raw voxels)."""

    level: int | str = AUTO
    air: str = "border"
    dilate: int = DEFAULT_DILATE
    largest_only: bool = False
    close: int = 0
    fill: str | float = "min"

    def __post_init__(self):
        level = self.level
        if isinstance(level, str) and level.strip().isdigit():
            level = int(level)  # "5" from a text field or a parameter node
        if isinstance(level, str):
            level = level.strip().lower()
        if not (level == AUTO or (_is_int(level) and level in LEVELS)):
            raise BigVolumeError(f"level must be auto, 1, 2, 3, 4 or 5, got {self.level!r}")
        object.__setattr__(self, "level", level if level == AUTO else int(level))
        if self.air not in AIR_MODES:
            raise BigVolumeError(f"air must be one of {', '.join(AIR_MODES)}, got {self.air!r}")
        for name in ("dilate", "close"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value <= MAX_RADIUS:
                raise BigVolumeError(f"{name} must be a whole number of voxels from 0 to {MAX_RADIUS}, got {value!r}")
        if not isinstance(self.largest_only, (bool, np.bool_)):
            raise BigVolumeError(f"largest_only must be True or False, got {self.largest_only!r}")
        if isinstance(self.fill, str):
            if self.fill != "min":
                try:
                    object.__setattr__(self, "fill", float(self.fill))
                except ValueError:
                    raise BigVolumeError(f"fill must be 'min' or a number, got {self.fill!r}") from None
        elif not _is_number(self.fill):
            raise BigVolumeError(f"fill must be 'min' or a number, got {self.fill!r}")
        if not isinstance(self.fill, str) and not np.isfinite(self.fill):
            raise BigVolumeError(f"fill must be a finite number, got {self.fill!r}")

    @property
    def denoise(self) -> bool:
        """Auto classifies the denoised copy; levels 1-5 the raw voxels."""
        return self.level == AUTO

    @property
    def halo(self) -> int:
        """Slices of context each side of a slab that closing and dilation need to be exact."""
        return 2 * self.close + self.dilate


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


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
    # (:func:`_air_neighbourhood_passes`) reaches this (BAND_WIDTHS half-widths above the air peak's mode), so it keeps
    # partial-volume edges and dim tissue and leaves the pure air next to the object as haze. None (levels 1-5): the
    # dilation takes every voxel it reaches, as MRIcroGL's.
    band_floor: float | None = None

    @property
    def in_noise(self) -> bool:
        """The threshold lies inside the air's noise: noise voxels above it count as object."""
        return self.air_end is not None and self.value < self.air_end

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


def air_peak(counts: np.ndarray) -> tuple[float, float] | None:
    """(mode, end) of the air in a histogram, in bin-edge coordinates (bin b spans b..b+1): the darkest peak of the
    histogram smoothed over PEAK_SMOOTHING_BINS that reaches AIR_PEAK_SHARE of the highest, and its noise's end,
    AIR_NOISE_WIDTHS right half-widths at half maximum above its mode (measured on the unsmoothed counts, at least
    one bin: the right flank, because the left one is often cut by the histogram's range). None when empty."""
    counts = np.asarray(counts, np.float64)
    smooth = np.convolve(counts, np.ones(PEAK_SMOOTHING_BINS) / PEAK_SMOOTHING_BINS, "same")
    if smooth.max() <= 0:
        return None
    reach = PEAK_SMOOTHING_BINS
    peak = next(b for b in range(smooth.size) if smooth[b] >= AIR_PEAK_SHARE * smooth.max()
                and smooth[b] == smooth[max(0, b - reach):b + reach + 1].max())
    low = max(0, peak - PEAK_SMOOTHING_BINS // 2)
    mode = low + int(np.argmax(counts[low:peak + PEAK_SMOOTHING_BINS // 2 + 1]))
    half = mode + 1
    while half < counts.size and counts[half] >= counts[mode] / 2:
        half += 1
    centre = mode + 0.5
    return centre, centre + AIR_NOISE_WIDTHS * max(1.0, half - centre)


def find_threshold(volume_or_array, level: int | str = AUTO, sample_voxels: int = SAMPLE_VOXELS, *,
                   percentiles=ROBUST_PERCENTILES) -> HazeThreshold:
    """The dark/bright threshold for ``level`` ("auto" or 1-5, see :data:`LEVELS`), from a subsample of at most
    about ``sample_voxels`` voxels of a Volume, an array (k, j, i) or a slab reader (auto: of its denoised copy).
    Refuses constant volumes, label maps and vector volumes with a BigVolumeError."""
    level = HazeOptions(level=level).level  # validates the level
    source = volume_or_array.array if isinstance(volume_or_array, Volume) else volume_or_array
    _check_scalar(source)
    sample = subsample(source, sample_voxels)
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if finite.size == 0:
        raise BigVolumeError("the volume has no finite voxel values: there is nothing to threshold")
    low, high = finite.min(), finite.max()
    if low == high:
        raise BigVolumeError(f"every voxel has the value {low:g} (a constant volume): there is no haze to remove")
    integer = sample.dtype.kind in "iub"
    if integer:
        distinct = np.unique(finite[::max(1, finite.size // 2**16)])  # more than a few values early: an image
        distinct = np.unique(finite) if distinct.size <= LABEL_MAP_VALUES else distinct
        if distinct.size <= LABEL_MAP_VALUES:
            raise BigVolumeError(
                f"the volume has only {distinct.size} distinct values ({', '.join(f'{v:g}' for v in distinct[:6])}"
                f"{', ...' if distinct.size > 6 else ''}): it looks like a label map or mask, not an intensity "
                "image; haze removal needs intensities")
    if level == AUTO:
        denoised = _denoised_subsample(source if not isinstance(source, np.ndarray) else ArraySlabReader(source),
                                       sample_voxels)
        finite = denoised[np.isfinite(denoised)]
        counts, edges = robust_histogram(finite, percentiles)
        if np.count_nonzero(counts) < 2:
            raise BigVolumeError("the volume's denoised intensities fall into one histogram bin: they cannot be "
                                 "split into air and object")
        peak = air_peak(counts)
        classes, cuts, position = _auto_cut(counts, peak[1])
        air_classes = 1 + sum(cut < position for cut in cuts)  # the classes below the Otsu cut it was taken from
    else:
        classes, air_classes = LEVELS[level]
        counts, edges = robust_histogram(finite, percentiles, integer=integer)
        if np.count_nonzero(counts) < classes:
            raise BigVolumeError(f"the volume's intensities fall into fewer than {classes} histogram bins: they "
                                 f"cannot be split into the {classes} classes of level {level}")
        cuts = _centre_in_gaps(counts, multi_otsu(counts, classes))
        position = cuts[air_classes - 1]
        peak = air_peak(counts)

    def value(p):
        return float(np.interp(p, np.arange(edges.size), edges))

    threshold = value(position)
    band_floor = None
    if level == AUTO:  # peak[0]: the mode, in bin-edge coordinates
        band_floor = value(peak[0] + BAND_WIDTHS * (peak[1] - peak[0]) / AIR_NOISE_WIDTHS)
    return HazeThreshold(threshold, level, classes, air_classes, tuple(value(p) for p in cuts),
                         (float(edges[0]), float(edges[-1])), int(sample.size),
                         value(peak[0]) if peak else None, value(peak[1]) if peak else None, level == AUTO,
                         band_floor)


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


def _check_scalar(source) -> None:
    components = getattr(source, "components", None)
    if components is None:
        shape = np.shape(source)
        components = shape[3] if len(shape) == 4 else 1
    if components != 1:
        raise BigVolumeError(f"the volume has {components} components per voxel (RGB or vector): haze removal needs "
                             "a scalar volume; convert it to gray first")


def _dark(block: np.ndarray, value: float) -> np.ndarray:
    dark = block < value
    if block.dtype.kind == "f":
        dark |= np.isnan(block)
    return dark


# --- the denoised copy (level auto) ------------------------------------------------------------------------------

DENOISE_HALO = 1  # slices each side the [1 2 1] kernel needs


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """float32 holds 8- and 16-bit integers and float32 exactly; wider types keep their precision in float64."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float32 or dtype.itemsize <= 2 else np.dtype(np.float64)


def _exact_in_int32(dtype: np.dtype) -> bool:
    """8- and 16-bit integers: 64 x their [1 2 1]^3 mean is an integer below 2^22, exact in int32 (and in float32,
    so the integer path gives the float path's values bit for bit, faster)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "iu" and dtype.itemsize <= 2  # (bool volumes take the float path, as before)


SMOOTH_CHUNK_VOXELS = 2**20   # the kernel runs on chunks of slices of about this size: they stay in the cache
# numpy releases the GIL in its loops: chunks run on this many threads (memory-bound work: more gain little)
SMOOTH_THREADS = max(1, min(4, os.cpu_count() or 1))


def _weighted_121(values: np.ndarray, axis: int) -> np.ndarray:
    """(a + c) + b + b along ``axis`` (b the voxel, a and c its neighbours; the edge voxel stands in for the missing
    neighbour): the same operations in the same order for every voxel, so any split into slabs gives the same bits."""
    n = values.shape[axis]
    out = np.empty_like(values)

    def part(start, stop):
        index = [slice(None)] * values.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    if n == 1:
        np.add(values, values, out=out)
    else:
        np.add(values[part(0, n - 2)], values[part(2, n)], out=out[part(1, n - 1)])
        np.add(values[part(0, 1)], values[part(1, 2)], out=out[part(0, 1)])
        np.add(values[part(n - 2, n - 1)], values[part(n - 1, n)], out=out[part(n - 1, n)])
    out += values
    out += values
    return out


def _pairs_121(values: np.ndarray, axis: int) -> np.ndarray:
    """a + 2b + c along ``axis`` (edges repeated) as two neighbour-pair sums: two passes instead of three. Integers
    only, where the order of the additions cannot change the result."""
    n = values.shape[axis]

    def part(array, start, stop):
        index = [slice(None)] * values.ndim
        index[axis] = slice(start, stop)
        return array[tuple(index)]

    shape = list(values.shape)
    shape[axis] = n + 1
    pairs = np.empty(shape, values.dtype)
    np.add(part(values, 0, n - 1), part(values, 1, n), out=part(pairs, 1, n))
    np.add(part(values, 0, 1), part(values, 0, 1), out=part(pairs, 0, 1))
    np.add(part(values, n - 1, n), part(values, n - 1, n), out=part(pairs, n, n + 1))
    return np.add(part(pairs, 0, n), part(pairs, 1, n + 1))


def _smooth_chunks(slices, total: int, lo: int, n: int, work: np.dtype, take) -> None:
    """64 x the [1 2 1]^3 mean of slices ``lo .. lo+n-1`` of a (total, j, i) stack, by chunks of slices on
    :data:`SMOOTH_THREADS` threads: ``slices(a, b)`` gives slices a..b-1 (of any type: the first sums convert to the
    ``work`` dtype as they go, with no converted copy), ``take(c0, c1, chunk)`` receives the result for slices
    lo+c0 .. lo+c1-1. The slice before ``lo`` and after ``lo+n-1`` are used unless the stack ends there (the edge
    slice stands in). Integer work dtypes use neighbour pairs, floats the
    order of :func:`_weighted_121`: every voxel gets the same bits in any chunk or slab."""
    integer = np.dtype(work).kind in "iu"
    plane = 1
    for size in slices(lo, lo + 1).shape[1:]:
        plane *= size
    step = max(1, SMOOTH_CHUNK_VOXELS // max(1, plane))

    def chunk(c0: int) -> None:
        c1 = min(n, c0 + step)
        a0, a1 = lo + c0 - 1, lo + c1 + 1  # the neighbours, edges repeated
        inner = slices(max(0, a0), min(total, a1))
        if a0 < 0 or a1 > total:
            inner = np.concatenate(([inner[:1]] if a0 < 0 else []) + [inner] + ([inner[-1:]] if a1 > total else []))
        if integer:
            pairs = np.add(inner[:-1], inner[1:], dtype=work)
            smooth = _pairs_121(_pairs_121(np.add(pairs[:-1], pairs[1:]), 1), 2)
            del pairs
        else:
            smooth = np.add(inner[:-2], inner[2:], dtype=work)
            smooth += inner[1:-1]
            smooth += inner[1:-1]
            smooth = _weighted_121(_weighted_121(smooth, 1), 2)
        take(c0, c1, smooth)

    _on_threads(chunk, range(0, n, step))


def _smooth(extended: np.ndarray, lo: int, n: int) -> np.ndarray:
    """64 x the [1 2 1]^3 / 64 weighted mean (a small Gaussian, sigma about 0.7 voxel; noise sigma / 4.4) of slices
    ``lo .. lo+n-1`` of ``extended``, which holds the slice before and after them unless the volume ends there (the
    edge slice stands in). Left unscaled: dividing by 64 is exact, comparing with 64 x the threshold is the same."""
    work = _work_dtype(extended.dtype)
    out = np.empty((n,) + extended.shape[1:], work)

    def take(c0, c1, chunk):
        out[c0:c1] = chunk

    chunk_work = np.dtype(np.int32) if _exact_in_int32(extended.dtype) else work
    _smooth_chunks(lambda a, b: extended[a:b], extended.shape[0], lo, n, chunk_work, take)
    return out


def _auto_dark(extended: np.ndarray, lo: int, n: int, value: float) -> np.ndarray:
    """Level auto's dark voxels of slices ``lo .. lo+n-1``: ``voxels < value | _smooth(...) < 64 * value`` (each
    compared as numpy compares them: the copy's float32 with the Python float rounded to float32), chunk by chunk:
    the whole copy is never held. NaN compares False in both."""
    dark = np.empty((n,) + extended.shape[1:], bool)
    work = _work_dtype(extended.dtype)
    limit = work.type(64 * value)
    voxel_limit, all_below = value, False
    if _exact_in_int32(extended.dtype) and np.isfinite(limit):
        # integers: s < limit  <=>  s < ceil(limit), compared in integers (exact, and faster than as floats)
        bound = int(np.clip(np.ceil(np.float64(limit)), -2**31, 2**31 - 1))  # beyond int32: the same as its end
        work, limit = np.dtype(np.int32), np.int32(bound)
        info, bound = np.iinfo(extended.dtype), int(np.ceil(value))
        all_below = bound > info.max
        voxel_limit = extended.dtype.type(min(max(bound, info.min), info.max))

    def take(c0, c1, chunk):
        np.less(chunk, limit, out=dark[c0:c1])
        if all_below:
            dark[c0:c1] = True
        else:
            dark[c0:c1] |= extended[lo + c0:lo + c1] < voxel_limit

    _smooth_chunks(lambda a, b: extended[a:b], extended.shape[0], lo, n, work, take)
    return dark


def _denoised_subsample(source, max_voxels: int) -> np.ndarray:
    """The denoised copy (:func:`_smooth`, scaled back) at the voxels :func:`bigvolume.ops.precision.subsample` takes."""
    shape = (source.slices,) + tuple(source.slice_shape[:2])
    step = max(1, int(np.ceil((int(np.prod(shape)) / max(1, max_voxels)) ** (1 / 3))))
    # Only the sampled voxels with their neighbours (edges repeated), as triples along each axis
    rows, columns = (np.clip(np.arange(0, n, step)[:, None] + np.arange(-1, 2), 0, n - 1).ravel()
                     for n in shape[1:3])
    reader = HaloReader(source, DENOISE_HALO)
    slices = []
    for k in range(0, shape[0], step):
        extended, lo = reader.read(k, k + 1)
        around = np.clip(np.arange(lo - 1, lo + 2), 0, extended.shape[0] - 1)
        # per axis (np.take): the 3 slices, then their rows, then their columns; np.ix_'s one 3-D gather computes
        # every output voxel's address from three index arrays and was slower
        triples = np.take(np.take(extended[around[0]:around[2] + 1] if around[2] - around[0] == 2
                                  else extended[around], rows, axis=1), columns, axis=2)
        slices.append(_triple_centres(triples) / 64)
    return np.stack(slices)


def _triple_centres(triples: np.ndarray) -> np.ndarray:
    """64 x the [1 2 1]^3 mean at the middle voxel of each 3x3x3 block of a (3, 3r, 3c) stack of triples: what
    :func:`_smooth` gives there (integers exactly; floats with its operations in its order: k, then j, then i, each
    (a + c) + b + b), without smoothing the other voxels."""
    work = _work_dtype(triples.dtype)
    sums = np.add(triples[0], triples[2], dtype=np.int32 if _exact_in_int32(triples.dtype) else work)
    sums += triples[1]
    sums += triples[1]
    for axis in (0, 1):
        def third(start):
            return sums[start::3] if axis == 0 else sums[:, start::3]
        middle = np.add(third(0), third(2))
        middle += third(1)
        middle += third(1)
        sums = middle
    return sums.astype(work, copy=False)


# --- labelling across slabs -------------------------------------------------------------------------------------

def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected components of a (k, j, i) bool block: labels 1..n (0 = background), n."""
    image = sitk.GetImageFromArray(mask.view(np.uint8))
    labeller = sitk.ConnectedComponentImageFilter()
    labeller.SetFullyConnected(False)
    labels = labeller.Execute(image)
    return owned_view(sitk.GetArrayViewFromImage(labels), labels), labeller.GetObjectCount()  # no copy


def _join(nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (the smallest member) of every node's component in the graph with edges a[i]-b[i]: hooking roots onto
    the smaller root and pointer jumping, vectorised, until every edge joins two nodes of one root."""
    root = np.arange(nodes, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while True:
        ra, rb = root[a], root[b]
        differ = ra != rb
        if not differ.any():
            return root
        ra, rb = ra[differ], rb[differ]
        low, high = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(root, high, low)
        while True:  # pointer jumping: every node straight to its root
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped


class _SlabLabels:
    """First pass of a labelling over slabs: per slab, how many labels and where they start; the pairs of global
    labels that touch across slab boundaries or (node 0) the volume's border; voxel counts per label."""

    BORDER = 0

    def __init__(self, with_border: bool, with_sizes: bool):
        self.with_border, self.with_sizes = with_border, with_sizes
        self.offsets: list[int] = []
        self.counts: list[int] = []
        self.edges_a: list[np.ndarray] = []
        self.edges_b: list[np.ndarray] = []
        self.sizes: list[np.ndarray] = [np.zeros(1, np.int64)]
        self.next = 1                   # global label of the next slab's label 1
        self._bottom: np.ndarray | None = None  # global labels of the previous slab's last slice

    def add(self, labels: np.ndarray, count: int, first: bool, last: bool) -> tuple[np.ndarray, np.ndarray]:
        """Record slab ``labels`` (1..count); returns its local labels that touch the volume's border, and those
        on its top or bottom face that do not (still open: decided by other slabs)."""
        offset = self.next - 1
        self.offsets.append(offset)
        self.counts.append(count)
        self.next += count
        if self._bottom is not None:  # pairs of labels that touch across the boundary with the previous slab
            top = labels[0].ravel()
            both = (self._bottom > 0) & (top > 0)
            if both.any():
                # one key per (previous global label, this slab's local label): unique without sorting pairs
                keys = np.unique(self._bottom[both] * (count + 1) + top[both])
                self.edges_a.append(keys // (count + 1))
                self.edges_b.append(keys % (count + 1) + offset)
        self._bottom = _global(labels[-1], offset).ravel()
        touching = np.zeros(0, np.int64)
        if self.with_border:
            faces = [labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]]
            faces += [labels[0]] if first else []
            faces += [labels[-1]] if last else []
            touching = _labels_present(faces, count)
            self.edges_a.append(np.full(touching.size, self.BORDER, np.int64))
            self.edges_b.append(touching + offset)
        if self.with_sizes:
            self.sizes.append(np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.int64))
        faces = ([] if first else [labels[0]]) + ([] if last else [labels[-1]])
        return touching, np.setdiff1d(_labels_present(faces, count), touching, assume_unique=True)

    def roots(self) -> np.ndarray:
        a = np.concatenate(self.edges_a) if self.edges_a else np.zeros(0, np.int64)
        b = np.concatenate(self.edges_b) if self.edges_b else np.zeros(0, np.int64)
        return _join(self.next, a, b)

    def slab_lookup(self, index: int, selected: np.ndarray) -> np.ndarray:
        """Bool per local label of slab ``index`` (0 = background: False) from a bool per global label."""
        offset, count = self.offsets[index], self.counts[index]
        return np.concatenate([[False], selected[offset + 1:offset + count + 1]])


def _labels_present(faces, count: int) -> np.ndarray:
    """The labels 1..count found in ``faces`` (arrays of labels), ascending: a presence table, no sort."""
    present = np.zeros(count + 1, bool)
    for face in faces:
        present[face] = True
    present[0] = False
    return np.flatnonzero(present)


def _compact(labels: np.ndarray, count: int, air: np.ndarray, open_labels: np.ndarray):
    """A slab's dark labels reduced to what the second pass needs, in 1 or 2 bytes a voxel instead of 4: code 1 =
    air already (touches the border), 2 + n = the n-th label still open, 0 = anything else (not dark, or dark and
    enclosed within the slab: never air). None when too many labels are open for 2 bytes."""
    if open_labels.size > np.iinfo(np.uint16).max - 2:
        return None
    dtype = np.uint8 if open_labels.size <= np.iinfo(np.uint8).max - 2 else np.uint16
    code = np.zeros(count + 1, dtype)
    code[air] = 1
    code[open_labels] = 2 + np.arange(open_labels.size)
    return _lookup(code, labels), open_labels


LOOKUP_CHUNK = 2**16  # _lookup's chunks: numpy's index conversion and gather stay in the cache


def _lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` (a label or code table, indices in range by construction), by chunks of LOOKUP_CHUNK
    voxels into one output: 2.5-3x faster than fancy indexing over the whole slab, which converts every index to
    intp in a slab-sized temporary before gathering (mode "clip": no bounds check, which costs a third)."""
    out = np.empty(index.shape, table.dtype)
    flat_out, flat_index = out.reshape(-1), index.reshape(-1)
    for start in range(0, flat_index.size, LOOKUP_CHUNK):
        stop = start + LOOKUP_CHUNK
        np.take(table, flat_index[start:stop], out=flat_out[start:stop], mode="clip")
    return out


def _global(labels: np.ndarray, offset: int) -> np.ndarray:
    out = labels.astype(np.int64)
    out[labels > 0] += offset
    return out


# --- morphology (6-neighbour steps; a radius-r city-block ball) ---------------------------------------------------

def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Outside the array counts as background."""
    for _ in range(steps):
        grown = mask.copy()
        for axis in range(3):
            _shift_or(grown, mask, axis)
        mask = grown
    return mask


def _grow_over_partial_volume(obj: np.ndarray, voxels: np.ndarray, floor: float, steps: int, rows) -> np.ndarray:
    """``obj`` dilated by ``steps`` 6-neighbour steps, each step only onto the voxels whose
    :func:`_air_neighbourhood_passes` (so it follows partial-volume edges and dim tissue, and stops at pure air,
    however close to the object). Only voxels in slices ``rows`` (start, stop) are tested and grown: the caller needs
    the result exact on fewer. Each voxel's test depends on ``obj`` and ``voxels`` alone, so any split into slabs
    gives the same result."""
    air, grown = ~obj, obj.copy()
    settled = obj.copy()  # grown, or tested and failed (the test would say the same again)
    passes_at = _PackedNeighbourhood(voxels, air, floor) if _exact_in_int32(voxels.dtype) else None
    flat_settled = settled.reshape(-1)
    frontier = _dilate(grown, 1)
    np.greater(frontier, settled, out=frontier)  # and not settled (air, since the object is grown)
    for step in range(steps):
        frontier[:rows[0]] = False
        frontier[rows[1]:] = False
        points = np.flatnonzero(frontier)
        if step:  # (the later frontiers are marked with settled voxels among them)
            frontier.reshape(-1)[points] = False
            points = points[~flat_settled[points]]
        if not points.size:
            break
        passes = passes_at(points) if passes_at else _air_neighbourhood_passes(voxels, air, points, floor)
        taken = points[passes]
        grown.reshape(-1)[taken] = True
        flat_settled[points] = True
        if step + 1 < steps:
            # The next frontier: the unsettled neighbours of the voxels just taken. The other grown voxels' neighbours
            # in ``rows`` were all tested (settled) in this step; outside ``rows`` nothing is tested. The frontier
            # held just ``points``: cleared point by point, and later ones likewise, not by passes over the window.
            frontier.reshape(-1)[points] = False
            _mark_neighbours(frontier, taken)
    return grown


def _mark_neighbours(mask: np.ndarray, points: np.ndarray) -> None:
    """Set the 6 neighbours of ``points`` (flat indices) in ``mask``; a neighbour beyond the array's edge marks the
    point itself instead (no masking of the points: the caller has them settled)."""
    flat = mask.reshape(-1)
    nk, nj, ni = mask.shape
    index_type = np.int32 if mask.size < 2**31 else np.int64  # (int32 divisions are the faster)
    rest, i = np.divmod(points.astype(index_type), index_type(ni))
    k, j = np.divmod(rest, index_type(nj))
    del rest
    neighbour = np.empty(points.size, np.intp)  # one index buffer for the 6 scatters
    stride = 1
    for coordinate, n in ((i, ni), (j, nj), (k, nk)):
        np.multiply(coordinate < n - 1, stride, out=neighbour)
        neighbour += points
        flat[neighbour] = True
        np.multiply(coordinate > 0, -stride, out=neighbour)
        neighbour += points
        flat[neighbour] = True
        stride *= n


def _air_neighbourhood_passes(voxels: np.ndarray, air: np.ndarray, points: np.ndarray, floor: float) -> np.ndarray:
    """Bool per flat index in ``points`` (air voxels): does the [1 2 1]^3-weighted mean of ``voxels`` over the air
    voxels of its 3x3x3 neighbourhood (edges repeated) reach ``floor``? The denoised copy without the object's voxels:
    a pure-air voxel next to the object is not lifted by them, a partial-volume or dim voxel stays above the air.
    Sums in float64 in a fixed order: the same bits for a voxel wherever it is computed."""
    shape = air.shape
    index_type = np.int32 if air.size < 2**31 else np.int64
    k, j, i = (c.astype(index_type) for c in np.unravel_index(points, shape))
    offsets = []  # per axis: (flat offset of the neighbour at -1, 0, +1, edges repeated)
    for coordinate, n, stride in ((k, shape[0], shape[1] * shape[2]), (j, shape[1], shape[2]), (i, shape[2], 1)):
        offsets.append([np.clip(coordinate + d, 0, n - 1) * index_type(stride) for d in (-1, 0, 1)])
    del k, j, i
    flat_voxels, flat_air = voxels.reshape(-1), air.reshape(-1)
    # Neighbours grouped by weight (8 the voxel, 4 faces, 2 edges, 1 corners): one sum and one count per group
    # (float32 holds the sums of up to 27 8- or 16-bit integers exactly).
    exact32 = voxels.dtype.kind in "iub" and voxels.dtype.itemsize <= 2
    totals = np.zeros((4, points.size), np.float32 if exact32 else np.float64)
    counts = np.zeros((4, points.size), np.int8)
    for dk in range(3):
        for dj in range(3):
            row = offsets[0][dk] + offsets[1][dj]
            for di in range(3):
                group = (dk != 1) + (dj != 1) + (di != 1)  # 0: the voxel, 1: a face, 2: an edge, 3: a corner
                index = row + offsets[2][di]
                is_air = flat_air[index]
                values = flat_voxels[index]
                totals[group] += values * is_air if exact32 else np.where(is_air, values, 0)  # NaN * 0 is NaN
                counts[group] += is_air
    total = 8 * totals[0].astype(np.float64) + 4 * totals[1] + 2 * totals[2] + totals[3]
    weight = 8 * counts[0].astype(np.int32) + 4 * counts[1] + 2 * counts[2] + counts[3]
    return total >= floor * weight


class _PackedNeighbourhood:
    """:func:`_air_neighbourhood_passes` for 8- and 16-bit integers, the same answers, faster: each air voxel packed
    as value * 256 + 1 (other voxels 0) in int32, so one gather per neighbour gives both the value and the weight:
    the [1 2 1]^3-weighted sum holds 64 x the weighted sum of the air neighbours' values in its high bits and their
    total weight (at most 64) in the low 8, exactly. Packed by chunks of slices, each chunk with the points in it, on
    :data:`SMOOTH_THREADS` threads; only the box round a chunk's points is packed (the points hug the object's
    surface: packing the whole slices cost more than the gathers), one voxel wider each side, edges repeated.
    Packed again at each call (each dilation step): measured on the 512^3 head, keeping the boxes for the next step
    cost more than packing again (the boxes of a window no longer fit the cache: packing is bound by memory
    writes), and so did one box for the whole window, boxes of sums along i (9 gathers a point, not 27) and taking
    the complement of the object box by box instead of one air array."""

    CHUNK_SLICES = 8

    def __init__(self, voxels: np.ndarray, air: np.ndarray, floor: float):
        self.voxels, self.air, self.floor = voxels, air, floor
        self.plane = air.shape[1] * air.shape[2]

    def _packed(self, low, high) -> np.ndarray:
        """The packed voxels low[axis] - 1 .. high[axis] + 1 of each axis, the edge voxel repeated beyond the
        window."""
        wanted = [(lo - 1, hi + 2) for lo, hi in zip(low, high)]
        present = [(max(0, w0), min(n, w1)) for (w0, w1), n in zip(wanted, self.air.shape)]
        packed = np.empty([w1 - w0 for w0, w1 in wanted], np.int32)
        inner = packed[tuple(slice(p0 - w0, p1 - w0) for (w0, _), (p0, p1) in zip(wanted, present))]
        source = tuple(slice(p0, p1) for p0, p1 in present)
        np.left_shift(self.voxels[source], 8, out=inner, dtype=np.int32)
        inner |= 1
        inner *= self.air[source]
        for axis, ((w0, w1), (p0, p1)) in enumerate(zip(wanted, present)):  # at most one voxel each side
            # the earlier axes are padded already (all of them), the later ones not yet (their voxels only)
            region = [slice(None)] * axis + [None] + [slice(present[a][0] - wanted[a][0], present[a][1] - wanted[a][0])
                                                     for a in range(axis + 1, 3)]

            def at(position):
                region[axis] = position
                return tuple(region)

            if p0 > w0:
                packed[at(0)] = packed[at(1)]
            if w1 > p1:
                packed[at(-1)] = packed[at(-2)]
        return packed

    def _sums(self, points: np.ndarray) -> np.ndarray:
        """The packed weighted sums at ``points`` (flat indices)."""
        k, rest = np.divmod(points, self.plane)
        k = k.astype(np.int32)
        j, i = np.divmod(rest.astype(np.int32), np.int32(self.air.shape[2]))
        del rest
        low = (int(k[0]), int(j.min()), int(i.min()))  # (points are sorted: k[0] is the lowest)
        high = (int(k[-1]), int(j.max()), int(i.max()))
        packed = self._packed(low, high)
        flat, row, plane = packed.reshape(-1), packed.shape[2], packed.shape[1] * packed.shape[2]
        # each point's corner neighbour (-1, -1, -1): neighbour (dk, dj, di) is then that index in ``flat`` shifted
        # by a fixed offset, so each gather takes from a view, with no index array of its own
        corner = (k - np.int32(low[0])) * np.int32(plane)
        corner += (j - np.int32(low[1])) * np.int32(row)
        corner += i - np.int32(low[2])
        del k, j, i
        corner = corner.astype(np.intp)  # np.take's own index type: converted once, not per gather
        groups = [np.zeros(points.size, np.int32) for _ in range(4)]
        values = np.empty(points.size, np.int32)  # reused by the 27 gathers
        for dk in (-1, 0, 1):
            for dj in (-1, 0, 1):
                for di in (-1, 0, 1):
                    group = (dk != 0) + (dj != 0) + (di != 0)  # 0: the voxel, 1: a face, 2: an edge, 3: a corner
                    shifted = flat[(dk + 1) * plane + (dj + 1) * row + di + 1:]
                    groups[group] += np.take(shifted, corner, out=values)
        groups[0] *= 8
        groups[0] += 4 * groups[1]
        groups[0] += 2 * groups[2]
        groups[0] += groups[3]
        return groups[0]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Bool per flat index in ``points`` (sorted, as np.flatnonzero gives them)."""
        nk = self.air.shape[0]
        starts = list(range(int(points[0]) // self.plane, int(points[-1]) // self.plane + 1, self.CHUNK_SLICES))
        bounds = np.searchsorted(points, np.array(starts + [nk + self.CHUNK_SLICES]) * self.plane)
        sums = np.empty(points.size, np.int32)

        def chunk(n: int) -> None:
            p0, p1 = bounds[n], bounds[n + 1]
            if p1 > p0:
                sums[p0:p1] = self._sums(points[p0:p1])

        _on_threads(chunk, range(len(starts)))
        weight = sums & 255
        sums >>= 8  # floors: the value sum, also when it is negative
        return sums.astype(np.float64) >= self.floor * weight


def _on_threads(work, items) -> None:
    """``work(item)`` for each item, on :data:`SMOOTH_THREADS` threads when there are several (numpy releases the
    GIL in its loops); an item's error is raised here."""
    items = list(items)
    if SMOOTH_THREADS < 2 or len(items) < 2:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(SMOOTH_THREADS) as pool:
        list(pool.map(work, items))


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Outside the array counts as foreground, so a closing never eats the object where it meets the border."""
    for _ in range(steps):
        mask = ~_dilate(~mask, 1)
    return mask


def _shift_or(target: np.ndarray, source: np.ndarray, axis: int) -> None:
    n = source.shape[axis]
    if n < 2:
        return
    def part(array, start, stop):
        index = [slice(None)] * 3
        index[axis] = slice(start, stop)
        return array[tuple(index)]
    part(target, 1, n)[...] |= part(source, 0, n - 1)
    part(target, 0, n - 1)[...] |= part(source, 1, n)


# --- the slab pipeline -------------------------------------------------------------------------------------------

@dataclass
class _Counts:
    voxels: int = 0
    haze: int = 0
    changed: int = 0
    object_voxels: int = 0
    changed_inside_object: int = 0
    nan: int = 0
    nan_filled: int = 0
    air: int = 0          # dark voxels taken as air (before the object is grown)
    border: int = 0       # voxels on the volume's border ...
    border_dark: int = 0  # ... and how many of them are dark (counted with air="border" only)


class _CompressedSizes:
    """gzip (level 6) and, when the ``zstandard`` package is installed, zstd sizes of the raw voxel bytes before and
    after; from every ``step``-th slice when the volume is larger than COMPRESSION_SAMPLE_BYTES (then scaled).
    Compression runs on a thread (zlib and zstd release the GIL), overlapping the pipeline."""

    def __init__(self, slices: int, slice_bytes: int):
        self.step = max(1, int(np.ceil(slices * slice_bytes / COMPRESSION_SAMPLE_BYTES)))
        self.total_bytes, self.sampled_bytes = slices * slice_bytes, 0
        self.compressors = {"gzip": [zlib.compressobj(6), zlib.compressobj(6)]}
        try:
            import zstandard
        except ImportError:
            pass
        else:
            self.compressors["zstd"] = [zstandard.ZstdCompressor().compressobj() for _ in range(2)]
        self.sizes = {name: [0, 0] for name in self.compressors}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="bigvolume-compressed-size")
        self._jobs = []

    def add(self, k0: int, before: np.ndarray, after: np.ndarray) -> None:
        picks = np.arange(-k0 % self.step, before.shape[0], self.step)
        if picks.size:
            data = [np.ascontiguousarray(before[picks]), np.ascontiguousarray(after[picks])]
            self.sampled_bytes += data[0].nbytes
            self._jobs.append(self._thread.submit(self._compress, data))

    def _compress(self, data) -> None:
        for name, pair in self.compressors.items():
            for index in range(2):
                self.sizes[name][index] += len(pair[index].compress(data[index].data))

    def finish(self) -> dict:
        """{"gzip": (before, after), "zstd": ...} in bytes."""
        for job in self._jobs:
            job.result()
        self._thread.shutdown()
        scale = self.total_bytes / max(1, self.sampled_bytes)
        return {name: tuple(round((self.sizes[name][i] + len(pair[i].flush())) * scale) for i in range(2))
                for name, pair in self.compressors.items()}

    def how(self) -> str:
        """How the sizes were measured, when not on every voxel."""
        if self.step == 1:
            return ""
        return (f"estimated from 1 slice in {self.step} ({format_bytes(self.sampled_bytes)} of "
                f"{format_bytes(self.total_bytes)})")


class _PassStage(SlabStage):
    """One pass of the haze pipeline as a stage of the slab engine (slabs come with ``halo`` slices each side)."""

    def __init__(self, work, slab_slices: int, halo: int):
        self.work, self.slab_slices, self.halo = work, slab_slices, halo

    def new_buffer(self, reader, slices):
        return None  # a fresh block per slab (or a view of an array): the last pass keeps blocks for its halo

    def push(self, k0, k1, extended, pool, sink) -> None:
        self.work(k0 // self.slab_slices, k0, k1, extended, k0 - max(0, k0 - self.halo))


class _HazePipeline:
    """Runs haze removal over ``source`` (a slab reader or an in-memory array) in slabs of ``slab_slices``; each
    output slab goes to ``sink(k0, haze, output, object)``."""

    def __init__(self, source, options: HazeOptions, threshold: HazeThreshold, slab_slices: int,
                 cache_bytes: float):
        self.source, self.options, self.threshold = source, options, threshold
        self.slices = source.slices
        self.slab_slices = max(1, min(int(slab_slices), self.slices))
        self.bounds = [(k0, min(k0 + self.slab_slices, self.slices))
                       for k0 in range(0, self.slices, self.slab_slices)]
        self.cache_bytes = cache_bytes  # what the first passes may keep for the last (else it labels again)
        self.counts = _Counts()
        self.minimum: float | None = None

    def _each_slab(self, work, progress: Progress, message: str) -> None:
        """One pass on the slab engine: ``work(index, k0, k1, extended block, where the slab starts in it)`` for
        every slab in order, read with the denoised copy's halo (level auto)."""
        halo = DENOISE_HALO if self.options.denoise else 0
        run_slabs(self.source, _PassStage(work, self.slab_slices, halo), None, self.slab_slices,
                  progress=progress, message=message, halo=halo)

    def _dark(self, extended: np.ndarray, lo: int, n: int) -> np.ndarray:
        """The slab's dark voxels: below the threshold themselves, or (level auto) in the denoised copy. The object
        is then what is bright in both: the copy drops the noise voxels above the threshold, the voxels themselves
        keep the copy's blur from growing the object by a voxel into the air. Level auto: a NaN voxel is not dark
        (no intensity is not air: it stays as it is) and where a NaN reaches the copy (its 26 neighbours) the voxel
        alone decides; levels 1-5 count NaN as dark, as before."""
        block = extended[lo:lo + n]
        if not self.options.denoise:
            return _dark(block, self.threshold.value)
        return _auto_dark(extended, lo, n, self.threshold.value)

    # pass 1: statistics, and the dark voxels' labels joined across slabs
    def first_pass(self, progress: Progress) -> None:
        border = self.options.air == "border"
        self.dark_labels = _SlabLabels(with_border=True, with_sizes=False) if border else None
        self._dark_cache: dict[int, tuple] = {}
        minimum = None

        def work(index, k0, k1, extended, lo):
            nonlocal minimum
            block = extended[lo:lo + k1 - k0]
            finite = block
            if block.dtype.kind == "f":
                nan = np.isnan(block)
                self.counts.nan += int(np.count_nonzero(nan))
                finite = block[np.isfinite(block)]
            if finite.size:
                low = finite.min()
                minimum = low if minimum is None else min(minimum, low)
            if border:
                dark = self._dark(extended, lo, k1 - k0)
                self._count_border(dark, k0 == 0, k1 == self.slices)
                labels, count = _label(dark)
                air, open_labels = self.dark_labels.add(labels, count, k0 == 0, k1 == self.slices)
                if self._may_cache(labels.size):
                    self._dark_cache[index] = _compact(labels, count, air, open_labels)

        self._each_slab(work, progress, "finding the air, slab")
        self.minimum = float(minimum)
        if border:
            self.dark_air = self.dark_labels.roots() == _SlabLabels.BORDER

    def _count_border(self, dark: np.ndarray, first: bool, last: bool) -> None:
        """How many voxels on the volume's border, and how many of them dark (the report's diagnosis)."""
        faces = [dark[:, 0, :], dark[:, -1, :], dark[:, 1:-1, 0], dark[:, 1:-1, -1]]
        inner = dark[:, 1:-1, 1:-1]
        faces += ([inner[0]] if first else []) + ([inner[-1]] if last and (dark.shape[0] > 1 or not first) else [])
        self.counts.border += sum(face.size for face in faces)
        self.counts.border_dark += sum(int(np.count_nonzero(face)) for face in faces)

    def _may_cache(self, nbytes: int) -> bool:
        if nbytes > self.cache_bytes:
            return False
        self.cache_bytes -= nbytes
        return True

    def _air(self, index: int, extended: np.ndarray, lo: int, n: int, last_use: bool = True) -> np.ndarray:
        if self.options.air == "all":
            return self._dark(extended, lo, n)
        cached = self._dark_cache.pop(index, None) if last_use else self._dark_cache.get(index)
        if cached is not None:
            code, open_labels = cached
            offset = self.dark_labels.offsets[index]
            return _lookup(np.concatenate([[False, True], self.dark_air[offset + open_labels]]), code)
        labels, _ = _label(self._dark(extended, lo, n))
        return _lookup(self.dark_labels.slab_lookup(index, self.dark_air), labels)

    # optional pass: the object's components, to keep the largest
    def largest_pass(self, progress: Progress) -> None:
        self.object_labels = _SlabLabels(with_border=False, with_sizes=True)
        cache: dict[int, tuple] = {}

        def work(index, k0, k1, extended, lo):
            obj = ~self._air(index, extended, lo, k1 - k0, last_use=False)
            labels, count = _label(obj)
            self.object_labels.add(labels, count, k0 == 0, k1 == self.slices)
            if self._may_cache(labels.nbytes):
                cache[index] = (labels, count)

        self._each_slab(work, progress, "finding the largest object, slab")
        roots = self.object_labels.roots()
        sizes = np.bincount(roots, weights=np.concatenate(self.object_labels.sizes), minlength=roots.size)
        sizes[0] = 0  # node 0 is no label
        self.keep = roots == int(np.argmax(sizes)) if sizes.max() > 0 else np.zeros(roots.size, bool)
        self._object_cache = cache

    def _object(self, index: int, extended: np.ndarray, lo: int, n: int) -> np.ndarray:
        air = self._air(index, extended, lo, n)
        self.counts.air += int(np.count_nonzero(air))
        obj = ~air
        if not self.options.largest_only:
            return obj
        labels, _ = self._object_cache.pop(index, None) or _label(obj)
        return _lookup(self.object_labels.slab_lookup(index, self.keep), labels)

    # last pass: morphology on a haloed window, fill, hand each slab to the sink
    def write_pass(self, fill, sink, progress: Progress) -> None:
        halo, opts = self.options.halo, self.options
        pieces: list[tuple] = []  # (k0, k1, object, voxels) of the slabs in the window
        blocks: dict[int, np.ndarray] = {}
        pending = list(range(len(self.bounds)))         # slabs not yet written

        def work(index, k0, k1, extended, lo):
            nonlocal pieces
            blocks[index] = extended[lo:lo + k1 - k0]
            pieces.append((k0, k1, self._object(index, extended, lo, k1 - k0), blocks[index]))
            # write every pending slab whose halo below is now available
            while pending and (self.bounds[pending[0]][1] + halo <= k1 or k1 == self.slices):
                out_index = pending.pop(0)
                c0, c1 = self.bounds[out_index]
                w0, w1 = max(0, c0 - halo), min(self.slices, c1 + halo)
                inside = [p for p in pieces if p[1] > w0 and p[0] < w1]

                def window(item):
                    return np.concatenate([p[item][max(w0, p[0]) - p[0]:min(w1, p[1]) - p[0]] for p in inside])

                closed = _erode(_dilate(window(2), opts.close), opts.close)
                if self.threshold.band_floor is None:
                    obj = _dilate(closed, opts.dilate)
                else:  # exact on c0-dilate+1 .. c1+dilate-1, all that the slab's last step needs
                    voxels = self.source.array[w0:w1] if self.source.hands_out_views else window(3)
                    rows = (max(0, c0 - w0 - opts.dilate + 1), min(w1 - w0, c1 - w0 + opts.dilate - 1))
                    obj = _grow_over_partial_volume(closed, voxels, self.threshold.band_floor, opts.dilate, rows)
                obj = obj[c0 - w0:c1 - w0]
                self._fill_slab(c0, blocks.pop(out_index), obj, fill, sink)
                if pending:
                    next_w0 = max(0, self.bounds[pending[0]][0] - halo)
                    pieces = [p for p in pieces if p[1] > next_w0]

        self._each_slab(work, progress, "removing haze, slab")

    def _fill_slab(self, k0: int, block: np.ndarray, obj: np.ndarray, fill, sink) -> None:
        haze = ~obj
        output = np.empty(block.shape, block.dtype)
        if block.dtype.kind in "iu":
            # block * obj + fill * haze: exact in integers (one term is 0) and branch-free, faster than a masked copy
            np.multiply(block, obj, out=output)
            if fill:
                output += np.multiply(haze, fill, dtype=output.dtype)
        else:  # (floats: NaN * 0 is NaN)
            np.copyto(output, block)
            np.copyto(output, fill, where=haze)
        changed = output != block
        if block.dtype.kind == "f":
            nan = np.isnan(block)
            changed &= ~(nan & np.isnan(output))  # a NaN kept is not a change
            self.counts.nan_filled += int(np.count_nonzero(nan & haze))
        c = self.counts
        haze_voxels = int(np.count_nonzero(haze))
        c.voxels += block.size
        c.haze += haze_voxels
        c.object_voxels += block.size - haze_voxels
        c.changed += int(np.count_nonzero(changed))
        # 0 by construction: counted, not assumed
        c.changed_inside_object += int(np.count_nonzero(np.logical_and(changed, obj, out=changed)))
        sink(k0, block, haze, output, obj)

    def run(self, fill_option, sink, progress: Progress) -> float:
        """All passes; returns the fill value used."""
        if fill_option != "min":
            _fill_value(fill_option, 0, self.source.dtype)  # refuse a value that does not fit before any work
        passes = 3 if self.options.largest_only else 2
        self.first_pass(progress.sub(0, 1 / passes))
        if self.options.largest_only:
            self.largest_pass(progress.sub(1 / passes, 2 / passes))
        fill = _fill_value(fill_option, self.minimum, self.source.dtype)
        self.write_pass(fill, sink, progress.sub((passes - 1) / passes, 1))
        return fill


def _fill_value(fill, minimum: float, dtype: np.dtype):
    """The haze value in the volume's pixel type; a given value must fit the type exactly."""
    dtype = np.dtype(dtype)
    if fill == "min":
        return dtype.type(minimum)
    value = float(fill)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if value != np.floor(value) or not info.min <= value <= info.max:
            raise BigVolumeError(f"fill value {value:g} does not fit the volume's pixel type {dtype} "
                                 f"(whole numbers {info.min} .. {info.max})")
    elif abs(value) > np.finfo(dtype).max:
        raise BigVolumeError(f"fill value {value:g} does not fit the volume's pixel type {dtype}")
    return dtype.type(value)


# --- public API ---------------------------------------------------------------------------------------------------

def _slab_plan(source, options: HazeOptions, memory_limit: float) -> StreamPlan:
    """Slices per slab within the memory limit (the engine's planner): per slice the input and output blocks, the
    labels (uint32) and the masks of the window, which also holds the halo (level auto: and the input voxels, for
    the partial-volume test); at most SLAB_VOXELS voxels a slab."""
    itemsize = source.dtype.itemsize
    per_slice = source.slice_bytes // itemsize * ((3 if options.denoise else 2) * itemsize + 4 + 8)
    return plan_slabs(source.slices, source.slice_bytes, per_slice, 2 * options.halo * per_slice, memory_limit,
                      max_slab_bytes=SLAB_VOXELS * itemsize, min_slabs=1,
                      alignment=source.slab_alignment)


def _in_memory_pipeline(array: np.ndarray, options: HazeOptions, threshold: HazeThreshold) -> _HazePipeline:
    source = ArraySlabReader(array)
    return _HazePipeline(source, options, threshold, _slab_plan(source, options, in_memory_limit()).slab_slices,
                         LABEL_CACHE_BYTES)


def _notes_for(shape, options: HazeOptions) -> list[str]:
    """What the user should know about this volume's shape."""
    thin = [name for name, n in zip("kji", shape) if n <= 2]
    if thin and options.air == "border":
        return [f"the volume is {min(shape)} voxel{'s' if min(shape) > 1 else ''} thin along {'/'.join(thin)}: "
                "every voxel touches its border, so all dark voxels are air"]
    return []


def _prepare(array: np.ndarray, options: HazeOptions, threshold: HazeThreshold | None) -> HazeThreshold:
    _check_scalar(array)
    if not isinstance(options, HazeOptions):
        raise BigVolumeError(f"options must be HazeOptions, got {type(options).__name__}")
    return find_threshold(array, options.level) if threshold is None else threshold


def haze_mask(volume: Volume, options: HazeOptions = HazeOptions(), threshold: HazeThreshold | None = None, *,
              with_report: bool = False):
    """Bool (k, j, i): True where :func:`dehaze` sets the fill value. ``with_report``: (mask, the DehazeReport that
    :func:`dehaze` would give, without compressed sizes: threshold, counts, warning)."""
    threshold = _prepare(volume.array, options, threshold)
    mask = np.empty(volume.array.shape[:3], bool)

    def sink(k0, block, haze, output, obj):
        mask[k0:k0 + haze.shape[0]] = haze

    pipeline = _in_memory_pipeline(volume.array, options, threshold)
    fill = pipeline.run(options.fill, sink, Progress())
    if with_report:
        return mask, _report(pipeline, threshold, fill, None, _notes_for(volume.array.shape, options))
    return mask


@dataclass
class DehazeReport:
    threshold: HazeThreshold
    fill_value: float
    voxels: int
    changed: int
    changed_fraction: float
    object_voxels: int
    changed_inside_object: int
    gzip_before: int | None = None
    gzip_after: int | None = None
    zstd_before: int | None = None
    zstd_after: int | None = None
    notes: list = field(default_factory=list)
    haze_voxels: int = 0
    output_path: Path | None = None
    seconds: float = 0.0
    streamed: str = ""  # how a file was streamed; empty when it ran in memory
    sizes_estimated: str = ""  # how the compressed sizes were estimated; empty when measured on every voxel
    warning: str = ""  # why little or nothing was removed; empty when the run removed haze

    def summary(self) -> str:
        where = f"{self.output_path}: " if self.output_path else ""
        text = (f"{where}{100 * self.changed_fraction:.1f} % of {self.voxels} voxels changed "
                f"(set to {self.fill_value:g}); {self.threshold.describe()}; changed inside the object: "
                f"{self.changed_inside_object}")
        sizes = []
        for name, before, after in (("gzip", self.gzip_before, self.gzip_after),
                                    ("zstd", self.zstd_before, self.zstd_after)):
            if before:
                sizes.append(f"{name} {format_bytes(before)} -> {format_bytes(after)} "
                             f"({100 * (after - before) / before:+.0f} %)")
        if sizes:
            text += "\n" + "; ".join(sizes) + (f" ({self.sizes_estimated})" if self.sizes_estimated else "")
        if self.seconds:
            text += f"; {self.seconds:.2f} s" + (f", {self.streamed}" if self.streamed else "")
        if self.warning:
            text += f"\nwarning: {self.warning}"
        return text


def _report(pipeline: _HazePipeline, threshold: HazeThreshold, fill, sizes: _CompressedSizes | None,
            notes: list) -> DehazeReport:
    c = pipeline.counts
    measured = sizes.finish() if sizes is not None else {}
    gzip, zstd = measured.get("gzip", (None, None)), measured.get("zstd", (None, None))
    if c.nan:
        notes.append(f"{c.nan} NaN voxels: {c.nan_filled} in the air set to the fill value, "
                     f"{c.nan - c.nan_filled} inside the object kept")
    warning = _why_little_was_removed(c, threshold, pipeline.options) or _why_almost_all_was_removed(c, threshold)
    if not warning and c.changed < LITTLE_REMOVED * c.voxels <= c.haze:
        notes.append(f"{c.haze - c.changed} of the {c.haze} haze voxels already had the fill value")
    return DehazeReport(threshold, float(fill), c.voxels, c.changed, c.changed / max(1, c.voxels), c.object_voxels,
                        c.changed_inside_object, gzip[0], gzip[1], zstd[0], zstd[1], notes, c.haze,
                        sizes_estimated=sizes.how() if sizes is not None else "", warning=warning)


def _why_little_was_removed(c: _Counts, threshold: HazeThreshold, options: HazeOptions) -> str:
    """Empty when haze was found (at least LITTLE_REMOVED of the voxels, or air that already had one value), else
    one sentence: how little, and the likeliest reason."""
    if c.haze >= LITTLE_REMOVED * c.voxels:
        return ""
    how = (f"nothing was removed" if c.haze == 0 else
           f"little was removed ({100 * c.haze / max(1, c.voxels):.2g} % of the voxels are haze)")
    try_auto = "; the default level auto classifies a denoised copy" if not options.denoise else ""
    if threshold.in_noise:
        return (f"{how}: the threshold {threshold.value:.6g} fell inside the noise of the air (which reaches "
                f"{threshold.air_end:.6g}): noise voxels above it count as object and the dilation grows them over "
                f"the air{try_auto}")
    if options.air == "border" and c.border and c.border_dark < c.border / 2:
        share = 100 * c.border_dark / c.border
        return (f"{how}: only {share:.2g} % of the volume's border is darker than the threshold "
                f"{threshold.value:.6g}: the air is not darker than the object, or the object fills the volume "
                "(--air all also takes dark voxels enclosed by the object)")
    if c.air < LITTLE_REMOVED * c.voxels:
        return (f"{how}: few voxels are darker than the threshold {threshold.value:.6g}: the air is not darker "
                "than the object, or there is little air around it")
    return (f"{how}: the object grown by {options.dilate} voxel{'s' * (options.dilate != 1)} covers nearly all of "
            f"the {c.air} air voxels: the air is a thin layer, or noise in it counts as object{try_auto}")


def _why_almost_all_was_removed(c: _Counts, threshold: HazeThreshold) -> str:
    """Empty unless nearly nothing was kept as object while most of the volume changed: then one sentence."""
    if c.object_voxels >= LITTLE_KEPT * c.voxels or c.changed <= c.voxels / 2:
        return ""
    return (f"almost everything was removed: {100 * c.changed / max(1, c.voxels):.3g} % of the voxels changed and "
            f"only {c.object_voxels} ({100 * c.object_voxels / max(1, c.voxels):.2g} %) were kept as object above "
            f"the threshold {threshold.value:.6g}; unless the volume is nearly all air, no object was found (a "
            "texture or background filling the volume, or a threshold above the object): check the output")


def dehaze(volume: Volume, options: HazeOptions = HazeOptions(), *, measure_compression: bool = True,
           progress: ProgressCallback | None = None) -> tuple[Volume, np.ndarray, DehazeReport]:
    """Haze removed: returns (a new volume, the haze mask, the report). The input is not modified."""
    progress = as_progress(progress)
    threshold = _prepare(volume.array, options, None)
    notes = _notes_for(volume.array.shape, options)
    array = volume.array
    output = np.empty(array.shape, array.dtype)
    mask = np.empty(array.shape, bool)
    pipeline = _in_memory_pipeline(array, options, threshold)
    sizes = _CompressedSizes(pipeline.slices, pipeline.source.slice_bytes) if measure_compression else None

    def sink(k0, block, haze, out, obj):
        output[k0:k0 + out.shape[0]] = out
        mask[k0:k0 + haze.shape[0]] = haze
        if sizes:
            sizes.add(k0, block, out)

    fill = pipeline.run(options.fill, sink, progress)
    return Volume(output, volume.geometry), mask, _report(pipeline, threshold, fill, sizes, notes)


def dehaze_file(input_path, output_path, options: HazeOptions = HazeOptions(), *, mask_out=None, stream=None,
                memory_limit=None, measure_compression: bool = True, series: str | None = None,
                progress: ProgressCallback | None = None) -> DehazeReport:
    """Read, remove haze, write (and the haze mask as a uint8 label volume, 1 = haze, to ``mask_out``). Streams
    slab by slab by the engine's rule (:func:`bigvolume.engine.should_stream`: when input and output would not fit
    in ``memory_limit``, or when asked); the outputs appear only when complete."""
    from ..io.slab_writers import check_stream_output, writes_in_slabs

    started = time.perf_counter()
    if not isinstance(options, HazeOptions):
        raise BigVolumeError(f"options must be HazeOptions, got {type(options).__name__}")
    input_path, output_path = Path(input_path), Path(output_path)
    plan = plan_input(input_path, stream=stream, memory_limit=memory_limit, series=series)
    streams = plan.streams()
    if plan.components != 1:
        raise BigVolumeError(f"{input_path}: {plan.components} components per voxel (RGB or vector): haze removal "
                             "needs a scalar volume; convert it to gray first")
    io.check_output_path(output_path, inputs=[input_path])
    if mask_out is not None:
        mask_out = Path(mask_out)
        io.check_output_path(mask_out, inputs=[input_path])
        if mask_out.resolve() == output_path.resolve():
            raise BigVolumeError(f"{mask_out}: the mask and the output are the same file")
    progress = as_progress(progress)
    outputs = [(output_path, plan.dtype)] + ([(mask_out, np.dtype(np.uint8))] if mask_out is not None else [])
    outputs_in_slabs = all(writes_in_slabs(path) for path, _ in outputs)
    with naming(input_path):
        if not streams and not outputs_in_slabs:  # e.g. .mha: SimpleITK writes it from whole arrays
            volume = io.read_volume(input_path, series)
            progress(0.05, "read")
            result, mask, report = dehaze(volume, options, measure_compression=measure_compression,
                                          progress=progress.sub(0.05, 0.9))
            io.write_volume(result, output_path)
            if mask_out is not None:
                io.write_volume(Volume(mask.view(np.uint8), volume.geometry), mask_out)
        else:  # output slabs go straight to the file: no whole output array, no copy for the writer
            notes = _notes_for(plan.geometry.shape, options)
            with contextlib.ExitStack() as stack:
                if streams:
                    for path, dtype in outputs:
                        check_stream_output(path, dtype, 1)
                    source = stack.enter_context(open_slabs(input_path, series))
                    slab_plan = _slab_plan(source, options, plan.memory_limit)
                    if slab_plan.note:
                        notes.append(slab_plan.note)
                    slab, cache = slab_plan.slab_slices, plan.memory_limit / 4
                else:
                    source = ArraySlabReader(io.read_volume(input_path, series).array)
                    slab, cache = _slab_plan(source, options, in_memory_limit()).slab_slices, LABEL_CACHE_BYTES
                threshold = find_threshold(source, options.level)
                progress(0.02, "threshold")
                pipeline = _HazePipeline(source, options, threshold, slab, cache)
                sizes = _CompressedSizes(pipeline.slices, source.slice_bytes) if measure_compression else None
                writers = [stack.enter_context(file_sink(path, plan.geometry, dtype)) for path, dtype in outputs]

                def sink(k0, block, haze, output, obj):
                    writers[0].write(output)
                    if mask_out is not None:
                        writers[1].write(haze.view(np.uint8))
                    if sizes:
                        sizes.add(k0, block, output)

                fill = pipeline.run(options.fill, sink, progress.sub(0.02, 1.0))
            report = _report(pipeline, threshold, fill, sizes, notes)
            if streams:
                report.streamed = (f"streamed in {len(pipeline.bounds)} slab{'s' * (len(pipeline.bounds) > 1)} "
                                   f"of {pipeline.slab_slices} slices (memory limit "
                                   f"{format_bytes(plan.memory_limit)})")
    progress(1.0, "written")
    for note in report.notes:
        logger.warning(note)  # the command line prints these on stderr
    report.output_path = output_path
    report.seconds = time.perf_counter() - started
    return report
