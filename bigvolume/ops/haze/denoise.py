"""Dark voxels: below the threshold (levels 1-5) or, level auto, also in the denoised copy: each voxel's [1 2 1]^3
weighted mean, computed by chunks of slices on threads, the same bits in any split into slabs."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...engine.loop import HaloReader


def dark_voxels(block: np.ndarray, value: float) -> np.ndarray:
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


def exact_in_int32(dtype: np.dtype) -> bool:
    """8- and 16-bit integers: 64 x their [1 2 1]^3 mean is an integer below 2^22, exact in int32 (and in float32,
    so the integer path gives the float path's values bit for bit, faster)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "iu" and dtype.itemsize <= 2  # (bool volumes take the float path, as before)


SMOOTH_CHUNK_VOXELS = 2**18   # the kernel runs on chunks of slices of about this size: they stay in the cache
# (2**18 against 2**20: 1.0-1.4x faster on 1001 x 777 slices, and a quarter of the memory a thread holds)
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
    """64 x the [1 2 1]^3 mean of slices ``lo .. lo+n-1`` of a (total, j, i) stack, by chunks of about
    :data:`SMOOTH_CHUNK_VOXELS` on :data:`SMOOTH_THREADS` threads: ``slices(a, b)`` gives slices a..b-1 (of any type:
    the first sums convert to the ``work`` dtype as they go, with no converted copy), ``take(c0, c1, r0, r1, chunk)``
    receives the result for slices lo+c0 .. lo+c1-1, rows r0 .. r1-1. The slice before ``lo`` and after ``lo+n-1``
    are used unless the stack ends there (the edge slice stands in). Integer work dtypes use neighbour pairs, floats
    the order of :func:`_weighted_121`: every voxel gets the same bits in any chunk or slab."""
    integer = np.dtype(work).kind in "iu"
    nj, ni = slices(lo, lo + 1).shape[1:3]
    plane = nj * ni
    step = max(1, SMOOTH_CHUNK_VOXELS // max(1, plane))
    # A slice larger than a chunk goes by rows, each with the row before and after it (its result dropped): the
    # chunk's int32 copies stay a chunk's size (whole 20000^2 slices took 9 GB a thread)
    rows = nj if plane <= SMOOTH_CHUNK_VOXELS else max(1, SMOOTH_CHUNK_VOXELS // max(1, ni))

    def chunk(item) -> None:
        c0, r0 = item
        c1, r1 = min(n, c0 + step), min(nj, r0 + rows)
        a0, a1 = lo + c0 - 1, lo + c1 + 1  # the neighbours, edges repeated
        b0, b1 = max(0, r0 - 1), min(nj, r1 + 1)
        inner = slices(max(0, a0), min(total, a1))[:, b0:b1]
        if a0 < 0 or a1 > total:
            inner = np.concatenate(([inner[:1]] if a0 < 0 else []) + [inner] + ([inner[-1:]] if a1 > total else []))
        if integer:
            pairs = np.add(inner[:-1], inner[1:], dtype=work)
            smooth = np.add(pairs[:-1], pairs[1:])
            del pairs  # (before the two passes below: a chunk's int32 copy fewer at the peak)
            smooth = _pairs_121(_pairs_121(smooth, 1), 2)
        else:
            smooth = np.add(inner[:-2], inner[2:], dtype=work)
            smooth += inner[1:-1]
            smooth += inner[1:-1]
            smooth = _weighted_121(_weighted_121(smooth, 1), 2)
        take(c0, c1, r0, r1, smooth[:, r0 - b0:r1 - b0])

    on_threads(chunk, [(c0, r0) for c0 in range(0, n, step) for r0 in range(0, nj, rows)])


def smooth_chunk_bytes(dtype) -> int:
    """What one of :func:`_smooth_chunks`' threads holds at most: a chunk's input, its pair sums and the two passes'
    copies in the work type (about 6 of them; counted for the memory plan)."""
    work = np.dtype(np.int32) if exact_in_int32(dtype) else _work_dtype(dtype)
    return SMOOTH_CHUNK_VOXELS * (np.dtype(dtype).itemsize + 6 * work.itemsize)


def smooth_121(extended: np.ndarray, lo: int, n: int) -> np.ndarray:
    """64 x the [1 2 1]^3 / 64 weighted mean (a small Gaussian, sigma about 0.7 voxel; noise sigma / 4.4) of slices
    ``lo .. lo+n-1`` of ``extended``, which holds the slice before and after them unless the volume ends there (the
    edge slice stands in). Left unscaled: dividing by 64 is exact, comparing with 64 x the threshold is the same."""
    work = _work_dtype(extended.dtype)
    out = np.empty((n,) + extended.shape[1:], work)

    def take(c0, c1, r0, r1, chunk):
        out[c0:c1, r0:r1] = chunk

    chunk_work = np.dtype(np.int32) if exact_in_int32(extended.dtype) else work
    _smooth_chunks(lambda a, b: extended[a:b], extended.shape[0], lo, n, chunk_work, take)
    return out


def auto_dark_voxels(extended: np.ndarray, lo: int, n: int, value: float) -> np.ndarray:
    """Level auto's dark voxels of slices ``lo .. lo+n-1``: dark in the denoised copy, ``smooth_121(...) < 64 *
    value`` (the copy's float32 compared with the Python float rounded to float32, as numpy compares them), chunk
    by chunk: the whole copy is never held. NaN compares False. The voxels' own values do not count here: at low SNR
    a tissue's noise makes some of its voxels dark, they joined up through the tissue and it went with the air (a
    skull under the scalp, zero counts of a PET scan); :func:`peel_beside_air` takes back, after the air is known,
    the one voxel the copy's blur grows the object by."""
    dark = np.empty((n,) + extended.shape[1:], bool)
    work = _work_dtype(extended.dtype)
    limit = work.type(64 * value)
    if exact_in_int32(extended.dtype) and np.isfinite(limit):
        # integers: s < limit  <=>  s < ceil(limit), compared in integers (exact, and faster than as floats)
        work = np.dtype(np.int32)
        limit = np.int32(int(np.clip(np.ceil(np.float64(limit)), -2**31, 2**31 - 1)))  # beyond int32: its end

    def take(c0, c1, r0, r1, chunk):
        np.less(chunk, limit, out=dark[c0:c1, r0:r1])

    _smooth_chunks(lambda a, b: extended[a:b], extended.shape[0], lo, n, work, take)
    return dark


def peel_beside_air(obj: np.ndarray, voxels: np.ndarray, value: float) -> np.ndarray:
    """``obj`` without its voxels that are dark themselves (``voxels < value``) and have a voxel that is not object
    among their 26 neighbours (the [1 2 1]^3 kernel's reach): the air the denoised copy's blur added to the object.
    Once only, after the air was chosen: a tissue's own dark noise voxels never join the air."""
    outside = ~obj
    beside = outside.copy()  # dilated by the 3x3x3 cube, axis by axis
    for axis in range(3):
        grown = beside.copy()
        index = [slice(None)] * 3
        index[axis] = slice(1, None)
        lower = tuple(index)
        index[axis] = slice(None, -1)
        upper = tuple(index)
        grown[lower] |= beside[upper]
        grown[upper] |= beside[lower]
        beside = grown
    beside &= voxels < value  # NaN compares False: it stays
    return np.logical_and(obj, ~beside, out=beside)


def denoised_subsample(source, max_voxels: int) -> np.ndarray:
    """The denoised copy (:func:`smooth_121`, scaled back) at the voxels
    :func:`bigvolume.ops.precision.subsample` takes."""
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
    :func:`smooth_121` gives there (integers exactly; floats with its operations in its order: k, then j, then i, each
    (a + c) + b + b), without smoothing the other voxels."""
    work = _work_dtype(triples.dtype)
    sums = np.add(triples[0], triples[2], dtype=np.int32 if exact_in_int32(triples.dtype) else work)
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


def on_threads(work, items) -> None:
    """``work(item)`` for each item, on :data:`SMOOTH_THREADS` threads when there are several (numpy releases the
    GIL in its loops); an item's error is raised here."""
    items = list(items)
    if SMOOTH_THREADS < 2 or len(items) < 2:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(SMOOTH_THREADS) as pool:
        list(pool.map(work, items))
