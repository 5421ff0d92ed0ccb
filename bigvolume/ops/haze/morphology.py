"""The object's morphology in 6-neighbour steps (a radius-r city-block ball): dilation, erosion, and level auto's
growth over partial volume, which only takes voxels whose air neighbourhood is above the air."""
from __future__ import annotations

import numpy as np

from .denoise import exact_in_int32, on_threads


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Outside the array counts as background."""
    for _ in range(steps):
        grown = mask.copy()
        for axis in range(3):
            _shift_or(grown, mask, axis)
        mask = grown
    return mask


def grow_over_partial_volume(obj: np.ndarray, voxels: np.ndarray, floor: float, steps: int, rows) -> np.ndarray:
    """``obj`` dilated by ``steps`` 6-neighbour steps, each step only onto the voxels whose
    :func:`air_neighbourhood_passes` (so it follows partial-volume edges and dim tissue, and stops at pure air,
    however close to the object). Only voxels in slices ``rows`` (start, stop) are tested and grown: the caller needs
    the result exact on fewer. Each voxel's test depends on ``obj`` and ``voxels`` alone, so any split into slabs
    gives the same result."""
    air, grown = ~obj, obj.copy()
    settled = obj.copy()  # grown, or tested and failed (the test would say the same again)
    passes_at = PackedNeighbourhood(voxels, air, floor) if exact_in_int32(voxels.dtype) else None
    flat_settled = settled.reshape(-1)
    frontier = dilate(grown, 1)
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
        passes = passes_at(points) if passes_at else air_neighbourhood_passes(voxels, air, points, floor)
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


def air_neighbourhood_passes(voxels: np.ndarray, air: np.ndarray, points: np.ndarray, floor: float) -> np.ndarray:
    """Bool per flat index in ``points`` (air voxels): does the [1 2 1]^3-weighted mean of ``voxels`` over the air
    voxels of its 3x3x3 neighbourhood (edges repeated) reach ``floor``? The denoised copy without the object's voxels:
    a pure-air voxel next to the object is not lifted by them, a partial-volume or dim voxel stays above the air.
    Sums in float64 in a fixed order: the same bits for a voxel wherever it is computed."""
    total, weight, _ = _neighbourhood_sums(voxels, air, points)
    return total >= floor * weight


def sided_means(voxels: np.ndarray, obj: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(air side, object side) per flat index in ``points`` (air voxels with an object voxel among their 26
    neighbours): the [1 2 1]^3-weighted means of ``voxels`` over the voxels of the 3x3x3 neighbourhood (edges
    repeated) that are not in ``obj`` and over those that are. Unlike the denoised copy, neither side is blurred into
    the other: across the object's edge they differ by its contrast, across a cut through a plateau by little."""
    object_total, object_weight, total = _neighbourhood_sums(voxels, obj, points, everything=True)
    return (total - object_total) / (64 - object_weight), object_total / object_weight


def _neighbourhood_sums(voxels: np.ndarray, mask: np.ndarray, points: np.ndarray, everything: bool = False):
    """The [1 2 1]^3-weighted sum of ``voxels`` over the voxels of each point's 3x3x3 neighbourhood (edges repeated)
    that are set in ``mask``, their total weight (of 64), and (``everything``; else None) the weighted sum over all."""
    shape = mask.shape
    index_type = np.int32 if mask.size < 2**31 else np.int64
    k, j, i = (c.astype(index_type) for c in np.unravel_index(points, shape))
    offsets = []  # per axis: (flat offset of the neighbour at -1, 0, +1, edges repeated)
    for coordinate, n, stride in ((k, shape[0], shape[1] * shape[2]), (j, shape[1], shape[2]), (i, shape[2], 1)):
        offsets.append([np.clip(coordinate + d, 0, n - 1) * index_type(stride) for d in (-1, 0, 1)])
    del k, j, i
    flat_voxels, flat_mask = voxels.reshape(-1), mask.reshape(-1)
    # Neighbours grouped by weight (8 the voxel, 4 faces, 2 edges, 1 corners): one sum and one count per group
    # (float32 holds the sums of up to 27 8- or 16-bit integers exactly).
    exact32 = voxels.dtype.kind in "iub" and voxels.dtype.itemsize <= 2
    totals = np.zeros((4, points.size), np.float32 if exact32 else np.float64)
    counts = np.zeros((4, points.size), np.int8)
    all_totals = np.zeros_like(totals) if everything else None
    for dk in range(3):
        for dj in range(3):
            row = offsets[0][dk] + offsets[1][dj]
            for di in range(3):
                group = (dk != 1) + (dj != 1) + (di != 1)  # 0: the voxel, 1: a face, 2: an edge, 3: a corner
                index = row + offsets[2][di]
                in_mask = flat_mask[index]
                values = flat_voxels[index]
                totals[group] += values * in_mask if exact32 else np.where(in_mask, values, 0)  # NaN * 0 is NaN
                counts[group] += in_mask
                if everything:
                    all_totals[group] += values

    def weighted(groups):
        return 8 * groups[0].astype(np.float64) + 4 * groups[1] + 2 * groups[2] + groups[3]
    weight = 8 * counts[0].astype(np.int32) + 4 * counts[1] + 2 * counts[2] + counts[3]
    return weighted(totals), weight, weighted(all_totals) if everything else None


class PackedNeighbourhood:
    """:func:`air_neighbourhood_passes` for 8- and 16-bit integers, the same answers, faster: each air voxel packed
    as value * 256 + 1 (other voxels 0) in int32, so one gather per neighbour gives both the value and the weight:
    the [1 2 1]^3-weighted sum holds 64 x the weighted sum of the air neighbours' values in its high bits and their
    total weight (at most 64) in the low 8, exactly. Packed by chunks of slices, each chunk with the points in it, on
    :data:`.denoise.SMOOTH_THREADS` threads; only the box round a chunk's points is packed (the points hug the
    object's surface: packing the whole slices cost more than the gathers), one voxel wider each side, edges repeated.
    Packed again at each call (each dilation step): measured on the 512^3 head, keeping the boxes for the next step
    cost more than packing again (the boxes of a window no longer fit the cache: packing is bound by memory
    writes), and so did one box for the whole window, boxes of sums along i (9 gathers a point, not 27) and taking
    the complement of the object box by box instead of one air array."""

    CHUNK_SLICES = 8
    # A box of a chunk's points packs at most about this many voxels: fewer slices a chunk where slices are large,
    # rows of one slice where one slice is larger (8 slices of 1001 x 777 packed 31 MiB a thread; 20000^2, 16 GB)
    CHUNK_VOXELS = 2**19  # (2**21 ran at the same speed, holding 4x as much a thread)

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
        first, last = int(points[0]) // self.plane, int(points[-1]) // self.plane
        nj, ni = self.air.shape[1:]
        if self.plane <= self.CHUNK_VOXELS:
            starts = [k * self.plane for k in range(first, last + 1,
                                                    max(1, min(self.CHUNK_SLICES, self.CHUNK_VOXELS // self.plane)))]
        else:  # (each point's sum is exact: any split into chunks gives the same answers)
            rows = max(1, self.CHUNK_VOXELS // ni)
            starts = [k * self.plane + j * ni for k in range(first, last + 1) for j in range(0, nj, rows)]
        bounds = np.searchsorted(points, np.array(starts + [(last + 1) * self.plane], np.int64))
        sums = np.empty(points.size, np.int32)

        def chunk(n: int) -> None:
            p0, p1 = bounds[n], bounds[n + 1]
            if p1 > p0:
                sums[p0:p1] = self._sums(points[p0:p1])

        on_threads(chunk, range(len(starts)))
        weight = sums & 255
        sums >>= 8  # floors: the value sum, also when it is negative
        return sums.astype(np.float64) >= self.floor * weight


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Outside the array counts as foreground, so a closing never eats the object where it meets the border."""
    for _ in range(steps):
        mask = ~dilate(~mask, 1)
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
