"""The slab pipeline on the engine: pass 1 finds the air (dark voxels joined to the border across slabs), an optional
pass the largest object, the last pass closes and dilates the object on a haloed window, fills the haze and hands
each slab to a sink; :class:`Counts` for the report."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.errors import BigVolumeError
from ...core.progress import Progress
from ...engine.loop import SlabStage, run_slabs
from .components import SlabLabels, compact, label, lookup
from .denoise import DENOISE_HALO, auto_dark_voxels, dark_voxels, peel_beside_air
from .morphology import dilate, erode, grow_over_partial_volume, sided_means
from .options import HazeOptions
from .threshold import HazeThreshold


@dataclass
class Counts:
    voxels: int = 0
    haze: int = 0
    changed: int = 0
    object_voxels: int = 0
    nan: int = 0
    nan_filled: int = 0
    air: int = 0          # dark voxels taken as air (before the object is grown)
    border: int = 0       # voxels on the volume's border ...
    border_dark: int = 0  # ... and how many of them are dark (counted with air="border" only)
    enclosed: int = 0     # haze voxels with object on both sides along their slice's rows and columns (sampled)
    haze_above_air: int = 0  # haze voxels brighter than the air (threshold.class_taken_above), when that is known
    edge: int = 0          # level auto: air voxels beside the object, before its growth (sampled) ...
    plateau_edge: int = 0  # ... and how many of them lie on a plateau (pipeline.PLATEAU_CONTRAST)


class _PassStage(SlabStage):
    """One pass of the haze pipeline as a stage of the slab engine (slabs come with ``halo`` slices each side)."""

    def __init__(self, work, slab_slices: int, halo: int):
        self.work, self.slab_slices, self.halo = work, slab_slices, halo

    def new_buffer(self, reader, slices):
        return None  # a fresh block per slab (or a view of an array): the last pass keeps blocks for its halo

    def push(self, k0, k1, extended, pool, sink) -> None:
        self.work(k0 // self.slab_slices, k0, k1, extended, k0 - max(0, k0 - self.halo))


class HazePipeline:
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
        self.counts = Counts()
        self.minimum: float | None = None

    def _each_slab(self, work, progress: Progress, message: str) -> None:
        """One pass on the slab engine: ``work(index, k0, k1, extended block, where the slab starts in it)`` for
        every slab in order, read with the denoised copy's halo (level auto)."""
        halo = DENOISE_HALO if self.options.denoise else 0
        run_slabs(self.source, _PassStage(work, self.slab_slices, halo), None, self.slab_slices,
                  progress=progress, message=message, halo=halo)

    def _dark(self, extended: np.ndarray, lo: int, n: int) -> np.ndarray:
        """The slab's dark voxels: below the threshold themselves (levels 1-5) or in the denoised copy (level auto:
        the copy drops the noise voxels above the threshold; the write pass takes back the voxel its blur grows the
        object by). Level auto: a voxel whose copy a NaN reaches (its 26 neighbours) is not dark, then peeled off the
        object like the blur's layer when it is dark itself and beside the air; a NaN voxel itself stays as it is;
        levels 1-5 count NaN as dark, as before."""
        block = extended[lo:lo + n]
        if not self.options.denoise:
            return dark_voxels(block, self.threshold.value)
        return auto_dark_voxels(extended, lo, n, self.threshold.value)

    # pass 1: statistics, and the dark voxels' labels joined across slabs
    def first_pass(self, progress: Progress) -> None:
        border = self.options.air == "border"
        self.dark_labels = SlabLabels(with_border=True, with_sizes=False) if border else None
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
                labels, count = label(dark)
                air, open_labels = self.dark_labels.add(labels, count, k0 == 0, k1 == self.slices)
                if self._may_cache(labels.size):
                    self._dark_cache[index] = compact(labels, count, air, open_labels)

        self._each_slab(work, progress, "finding the air, slab")
        self.minimum = float(minimum)
        if border:
            self.dark_air = self.dark_labels.roots() == SlabLabels.BORDER

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
            return lookup(np.concatenate([[False, True], self.dark_air[offset + open_labels]]), code)
        labels, _ = label(self._dark(extended, lo, n))
        return lookup(self.dark_labels.slab_lookup(index, self.dark_air), labels)

    # optional pass: the object's components, to keep the largest
    def largest_pass(self, progress: Progress) -> None:
        self.object_labels = SlabLabels(with_border=False, with_sizes=True)
        cache: dict[int, tuple] = {}

        def work(index, k0, k1, extended, lo):
            obj = ~self._air(index, extended, lo, k1 - k0, last_use=False)
            labels, count = label(obj)
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
        labels, _ = self._object_cache.pop(index, None) or label(obj)
        return lookup(self.object_labels.slab_lookup(index, self.keep), labels)

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

                obj = window(2)
                voxels = None  # the window's own values: level auto's peeling and partial-volume growth read them
                if opts.denoise or self.threshold.band_floor is not None:
                    voxels = self.source.read(w0, w1) if self.source.hands_out_views else window(3)
                if opts.denoise:  # the air layer the denoised copy's blur put on the object goes back to the air
                    obj = peel_beside_air(obj, voxels, self.threshold.value)
                    self._count_plateau_edge(obj, voxels, c0 - w0, c1 - w0, w0)
                closed = erode(dilate(obj, opts.close), opts.close)
                if self.threshold.band_floor is None:
                    obj = dilate(closed, opts.dilate)
                else:  # exact on c0-dilate+1 .. c1+dilate-1, all that the slab's last step needs
                    rows = (max(0, c0 - w0 - opts.dilate + 1), min(w1 - w0, c1 - w0 + opts.dilate - 1))
                    obj = grow_over_partial_volume(closed, voxels, self.threshold.band_floor, opts.dilate, rows)
                obj = obj[c0 - w0:c1 - w0]
                self._fill_slab(c0, blocks.pop(out_index), obj, fill, sink)
                if pending:
                    next_w0 = max(0, self.bounds[pending[0]][0] - halo)
                    pieces = [p for p in pieces if p[1] > next_w0]

        self._each_slab(work, progress, "removing haze, slab")

    def _count_plateau_edge(self, obj: np.ndarray, voxels: np.ndarray, lo: int, hi: int, w0: int) -> None:
        """Counts.edge and Counts.plateau_edge for rows ``lo .. hi-1`` of the window (its first slice is ``w0`` of the
        volume): the air voxels beside the peeled object ``obj`` (before its growth) in every n-th slice counted from
        the middle one (PLATEAU_SLICES slices or more, at most every PLATEAU_STRIDE-th), every other one of them (a
        checkerboard), and how many of them lie on a plateau (PLATEAU_CONTRAST, :func:`.morphology.sided_means`):
        there the threshold cuts through one level, not along an edge. Sampled by the voxels' places in the volume,
        and exact with HazeOptions.halo: the same in any split into slabs."""
        mode, level = self.threshold.air_mode, self.threshold.object_level
        if mode is None or level is None:
            return
        columns, plane = obj.shape[2], obj.shape[1] * obj.shape[2]
        points = []
        stride = min(PLATEAU_STRIDE, max(1, self.slices // PLATEAU_SLICES))
        for row in range(lo + (self.slices // 2 - w0 - lo) % stride, hi, stride):
            near = dilate(obj[row:row + 1], 1)[0]
            for other in (row - 1, row + 1):
                if 0 <= other < obj.shape[0]:
                    near |= obj[other]
            beside = np.flatnonzero(near & ~obj[row])
            points.append(row * plane + beside[(beside // columns + beside % columns) % 2 == 0])
        points = np.concatenate(points) if points else np.zeros(0, np.intp)
        if not points.size:
            return
        air_side, object_side = sided_means(voxels, obj, points)
        plateau = ((object_side - air_side < PLATEAU_CONTRAST * (object_side - mode))
                   & (object_side - mode >= PLATEAU_LEVEL * (level - mode)))
        self.counts.edge += int(points.size)
        self.counts.plateau_edge += int(np.count_nonzero(plateau))

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
        if self.threshold.class_taken_above is not None:
            c.haze_above_air += int(np.count_nonzero(haze & (block > self.threshold.class_taken_above)))
        sampled = slice((-k0) % ENCLOSED_STRIDE, None, ENCLOSED_STRIDE)  # every 4th slice of the volume
        c.enclosed += ENCLOSED_STRIDE * enclosed_in_slices(haze[sampled], obj[sampled])
        sink(k0, block, haze, output, obj)

    def run(self, fill_option, sink, progress: Progress) -> float:
        """All passes; returns the fill value used."""
        check_fill(fill_option, self.source.dtype)
        passes = 3 if self.options.largest_only else 2
        self.first_pass(progress.sub(0, 1 / passes))
        if self.options.largest_only:
            self.largest_pass(progress.sub(1 / passes, 2 / passes))
        fill = _fill_value(fill_option, self.minimum, self.source.dtype)
        self.write_pass(fill, sink, progress.sub((passes - 1) / passes, 1))
        return fill


# In-plane erosions of the object before it counts as enclosing: noise specks in the air (up to 2 x 2 voxels) go.
# Two erased walls 2-4 voxels thick: a noisy thin shell's cavity, leaked into the air, went unnoted; on a helper's
# 624 synthetic scans one erosion noted 7 such shells and no other scan that had no warning; the real head MRI's
# notes are the same.
ENCLOSING_WALL = 1
ENCLOSED_STRIDE = 4  # the report's count of enclosed haze samples every 4th slice (all of them cost 30-80 % more time)
# An air voxel beside the object (level auto, before the growth) lies on a plateau when the object side of its 3x3x3
# neighbourhood is brighter than its air side by less than PLATEAU_CONTRAST of the object side's height above the air
# peak's mode, and that height is at least PLATEAU_LEVEL of the object's mean's (HazeThreshold.object_level). Along
# the object's edge the two sides differ by the object's contrast (a share near 1); where the threshold cuts through
# one level, by the gradient and the noise: a specimen whose dim side fell below the threshold under a flat-field
# shading (the threshold then lies 0.37-0.84 of the way up to the object's mean), or dark structure next to the air
# that a threshold near the air cannot tell from it (the real head MRI ch2 without noise: sinus walls, 4 % of its
# edge, at 0.17 of the way: not counted). Measured on 978 synthetic volumes (CT, micro-CT, MRI, uint8; Gaussian,
# Poisson, Rician noise; 3-128 slices) and benchmarks/haze_families.py's 2,700: none on the clean ones, at most 0.1 %
# of the edge where the noise alone made the object's edge ragged (MRI at SNR 2, warned of anyway), 4-44 % on shaded
# micro-CTs cut deeper than 2 voxels.
PLATEAU_CONTRAST = 0.2
PLATEAU_LEVEL = 0.25
PLATEAU_SLICES = 64
PLATEAU_STRIDE = 8


def enclosed_in_slices(haze: np.ndarray, obj: np.ndarray) -> int:
    """How many ``haze`` voxels lie between object voxels both along their row and along their column, in their
    slice: air taken from inside the object (lungs joined to the outside air through the trachea, a sinus, a cavity
    open at one end), as opposed to the air around it, which reaches the slice's edge in some direction. The object
    is first eroded in its slices, so that specks of noise kept in the air do not enclose it."""
    obj = obj.copy()
    for _ in range(ENCLOSING_WALL):
        inner = obj[:, 1:-1, 1:-1].copy()
        for shifted in (obj[:, :-2, 1:-1], obj[:, 2:, 1:-1], obj[:, 1:-1, :-2], obj[:, 1:-1, 2:]):
            inner &= shifted
        obj[:, [0, -1], :] = False
        obj[:, :, [0, -1]] = False
        obj[:, 1:-1, 1:-1] = inner

    def between(axis):
        length = obj.shape[axis]
        first = np.argmax(obj, axis=axis)
        last = length - 1 - np.argmax(np.flip(obj, axis=axis), axis=axis)
        first[~obj.any(axis=axis)] = length  # no object on the line: nothing lies between
        place = np.arange(length).reshape((1, -1, 1) if axis == 1 else (1, 1, -1))
        return (place > np.expand_dims(first, axis)) & (place < np.expand_dims(last, axis))
    return int(np.count_nonzero(haze & between(1) & between(2)))


def check_fill(fill, dtype: np.dtype) -> None:
    """Refuse a fill value that does not fit the pixel type, before any work."""
    if fill != "min":
        _fill_value(fill, 0, dtype)


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
    elif abs(value) > float(np.finfo(dtype).max):  # compared as Python floats: numpy cast 1e39 to float32 (inf)
        raise BigVolumeError(f"fill value {value:g} does not fit the volume's pixel type {dtype}")
    return dtype.type(value)
