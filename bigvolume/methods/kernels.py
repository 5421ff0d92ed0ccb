"""Per-axis resampling kernels on the block-centred grid, and a slab-by-slab numpy engine that applies them.

Each method becomes, along each axis, a small table: for every output voxel, the input indices it reads (clamped
to the volume, i.e. the border voxel is repeated, as vtkImageResize does) and their weights (rows sum to one).
Applying the three tables one axis after the other is a separable filter and resample in one. Two engines apply
them: tap by tap (apply_separable, one output slice at a time, so its extra memory is a few input slices whatever
the volume size), and as band matrices (BandMatrix: each run of outputs is one matrix product over the inputs its
taps read), which BLAS runs several times faster for the wide Lanczos kernel; the streaming loop and the GPU use it.
"""
from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..core.dtypes import cast_to, work_dtype
from ..core.geometry import block_centres, output_size
from ..core.progress import Progress

# Lobes of the Lanczos window (vtk: window half-width): as many as vtk's kernel, at most 32 input voxels wide, holds,
# up to 8: 8 at factor 2, 5 at 3, 4 at 4, fewer above (see below). benchmarks/lanczos_lobes.py, 256^3 zone plate,
# PSNR vs ideal at factor 2: 4 lobes 27.35 dB, 6 lobes 29.19, 8 lobes 30.46 (the pyramid issue asks 30), for 1.2x the
# wall time (1.3x CPU) of 4 lobes; factor 3: 31.76 -> 32.77 dB for 1.7x; at factor 4 (32 taps either way) 3 lobes
# 34.8 dB / 7.2 % aliasing, 4 lobes 36.3 dB / 5.0 %; there, Kaiser, Blackman and Hamming windows scored lower.
LANCZOS_LOBES = 8
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# How vtkImageSincInterpolator (which bigvolume.methods.vtk_resize runs) evaluates its kernel, so that the Lanczos table
# equals vtkImageResize to float rounding for every factor: at most 32 taps (above factor 4 it drops lobes: 3 up
# to 5.33, 2 up to 8, then 1), tabulated every 1/256 voxel in float32, renormalised per table offset, and read by
# linear interpolation, which samples the kernel up to 2/256 voxel off when a centre falls between table steps
# (0.1-0.2 % of the range at factors such as 2.2 or 3.2; none at integer and half-integer factors).
SINC_TABLE_DIVISIONS = 256
SINC_KERNEL_SIZE_MAX = 32
VTK_FLOOR_TOL = 7.62939453125e-06  # VTK_INTERPOLATE_FLOOR_TOL
VTK_FLOOR_BIAS = 103079215104.0     # vtkInterpolationMath::Floor's bias: 1.5 * 2**36
# Inputs per band-matrix block on the CPU (BandMatrix): about 50 outputs per matrix product at factor 2, 25 at
# factor 4. Larger blocks multiply more zeros, smaller ones make BLAS products too small (measured on 2048^2
# slices: 64-128 within a few percent of each other, 1024 2-3x slower).
CPU_BLOCK_INPUTS = 96
# Along x (the last axis) on the CPU: 16 outputs per block (one AVX-512 register of float32), products of at most
# 128 image rows. Such products stay under the size up to which OpenBLAS multiplies without packing (its "small
# matrix" kernels): one thread, CPU ms per slice of the x pass, 96 inputs per block and whole slices against these:
# x2 1024^2 1.05 -> 0.63, 2048^2 4.63 -> 2.76; x3 0.66 -> 0.37 (48 inputs), 2048^2 4.28 -> 1.81; x4 0.38 -> 0.31
# (64 inputs), 2048^2 1.57 -> 1.04; 512^2 within 0.03 ms.
X_BLOCK_OUTPUTS = 16
X_PRODUCT_ROWS = 128


@dataclass(frozen=True)
class AxisKernel:
    index: np.ndarray   # (n_out, taps) input indices, clamped to [0, n_in - 1]
    weight: np.ndarray  # (n_out, taps) weights; zero for taps outside the support

    @property
    def size_out(self) -> int:
        return self.index.shape[0]

    def runs(self, dtype, reduce: str) -> list:
        """How apply_axis computes the rows (strided runs, gathered rows); see _taps_in_runs. Kept per type."""
        cache = self.__dict__.setdefault("_runs", {})  # a frozen dataclass: its __dict__ still takes a cache
        key = (np.dtype(dtype).str, reduce)
        if key not in cache:
            cache[key] = _taps_in_runs(self, np.dtype(dtype), reduce)
        return cache[key]

    def is_identity(self, n_in: int) -> bool:
        return (self.index.shape == (n_in, 1) and np.array_equal(self.index[:, 0], np.arange(n_in))
                and np.all(self.weight == 1.0))


def gaussian_sigma(factor: float) -> float:
    """Blur (in input voxels) whose combination with the input's own sampling has an FWHM of ``factor`` voxels
    (the rule of ngff-zarr / ITK multiscale pyramids)."""
    return math.sqrt(max(factor * factor - 1.0, 0.0)) / FWHM_PER_SIGMA


# Variance of linear interpolation's tent, averaged over where a centre falls between voxels.
TENT_VARIANCE = 1.0 / 6.0


def _blur_before_linear(sigma: float) -> float:
    """The Gaussian that, followed by linear interpolation, spreads as much as ``sigma`` alone (none below)."""
    return math.sqrt(max(sigma * sigma - TENT_VARIANCE, 0.0))


def _gaussian_then_linear(offsets: np.ndarray, sigma: float) -> np.ndarray:
    """Weights at ``offsets`` (input index - output centre) of a Gaussian blur followed by linear interpolation:
    the Gaussian convolved with the tent, in closed form (the second difference of the Gaussian's second
    integral). Its taps' centroid is the centre at every sub-voxel offset; the Gaussian sampled alone drifted
    towards the nearest voxel when sigma is below a voxel (0.13 voxel at factor 1.3, 0.33 at 1.1)."""
    if sigma == 0.0:
        return np.clip(1.0 - np.abs(offsets), 0.0, None)
    erf = np.vectorize(math.erf, otypes=[float])

    def second_integral(u):
        z = u / sigma
        return u * 0.5 * (1.0 + erf(z / math.sqrt(2.0))) + sigma * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    weight = second_integral(offsets + 1.0) - 2.0 * second_integral(offsets) + second_integral(offsets - 1.0)
    return np.clip(weight, 0.0, None)  # rounding leaves about -1e-17 far out


def _window(centres: np.ndarray, radius: float) -> np.ndarray:
    """All input indices within ``radius`` of each centre, as an (n_out, taps) table (unclamped)."""
    first = np.floor(centres - radius).astype(np.int64)
    taps = int(math.ceil(2 * radius)) + 2
    return first[:, None] + np.arange(taps)[None, :]


@functools.lru_cache(maxsize=64)
def _sinc_table(factor: float, lobes: int) -> tuple[np.ndarray, int]:
    """vtk's half-kernel table (value at distance ``t / 256`` voxels, plus 4 zeros) and its number of taps."""
    taps = 2 * int(factor * lobes + 1.0 - VTK_FLOOR_TOL)
    while lobes > 1 and 2 * lobes * factor > SINC_KERNEL_SIZE_MAX:
        lobes, taps = lobes - 1, SINC_KERNEL_SIZE_MAX
    factor = min(factor, SINC_KERNEL_SIZE_MAX / 2)
    half, step = taps // 2, SINC_TABLE_DIVISIONS
    x = np.arange(half * step) / (factor * lobes * step)
    table = np.where(x < 1.0, np.sinc(x) * np.sinc(lobes * x), 0.0).astype(np.float32).astype(np.float64)
    table = np.concatenate([table, np.zeros(4)])
    # The taps of a centre at sub-voxel offset o read table[t * 256 + o] on one side, table[s * 256 - o] on the
    # other: each such set sums to one (o = 0 and o = 128 are their own mirror).
    ends = np.arange(half) * step
    table[ends] /= 2.0 * table[ends].sum() - table[0]
    for offset in range(1, step // 2):
        rows = np.concatenate([ends + offset, ends + step - offset])
        table[rows] /= table[rows].sum()
    table[ends + step // 2] /= 2.0 * table[ends + step // 2].sum()
    return table, taps


def _lanczos_taps(centres: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Input indices (unclamped) and weights of the Lanczos kernel at ``centres``, as vtk computes them."""
    table, taps = _sinc_table(float(factor), LANCZOS_LOBES)  # LANCZOS_LOBES read here: benchmarks vary it
    # vtkInterpolationMath::Floor: positions in fixed point, 16 bits after the point, rounded to the nearest (the
    # bias leaves 16 bits; the tolerance is half a step): 16.749999999999996 is 16.75, table row 192, not 191.
    shifted = centres + (VTK_FLOOR_BIAS + VTK_FLOOR_TOL)
    base = np.floor(shifted) - VTK_FLOOR_BIAS
    steps = (shifted - np.floor(shifted)) * SINC_TABLE_DIVISIONS  # exact: a multiple of 1/256 of a table step
    offset = steps.astype(np.int64)
    fraction = (steps - offset)[:, None]
    relative = np.arange(taps) + 1 - taps // 2
    position = relative * SINC_TABLE_DIVISIONS - offset[:, None]
    weight = (1.0 - fraction) * table[np.abs(position)] + fraction * table[np.abs(position + 1)]
    return base.astype(np.int64)[:, None] + relative, weight


def axis_kernel(method: str, n_in: int, factor: float, n_out: int) -> AxisKernel:
    centres = block_centres(n_out, factor)
    if factor == 1.0 and n_out == n_in and method != "max" or method == "nearest":
        index = np.floor(centres + 0.5).astype(np.int64)[:, None]
        weight = np.ones_like(index, dtype=np.float64)
    elif method in ("mean", "max"):
        index = _window(centres, factor / 2.0)
        low, high = centres - factor / 2.0, centres + factor / 2.0
        overlap = np.minimum(high[:, None], index + 0.5) - np.maximum(low[:, None], index - 0.5)
        weight = np.clip(overlap, 0.0, None) / factor
        weight[weight < 1e-9] = 0.0
    elif method == "gaussian":
        sigma = _blur_before_linear(gaussian_sigma(factor))
        index = _window(centres, math.ceil(3.0 * sigma) + 1)
        weight = _gaussian_then_linear(index - centres[:, None], sigma)
    elif method == "lanczos":
        index, weight = _lanczos_taps(centres, factor)
    else:
        raise ValueError(f"no separable kernel for method {method!r}")
    weight = weight / weight.sum(axis=1, keepdims=True)
    return AxisKernel(np.clip(index, 0, n_in - 1), weight)


# Rows a strided run covers at least; shorter runs (kernel ends, where the table clamps onto the border voxel) are
# gathered. Each strided run costs a few numpy calls per tap.
MIN_STRIDED_ROWS = 4


def _taps_in_runs(kernel: AxisKernel, dtype: np.dtype, reduce: str) -> list:
    """The table's rows as runs computed alike: ``(r0, r1, stride, taps)`` where every row reads its used taps
    ``stride`` inputs after the previous row's with the same weights (``taps``: (first input, weight) per used
    tap, in table order), so each tap is one strided view of the input; or ``(r0, r1, None, None)``: rows
    gathered by index. Weights are compared in ``dtype``, the type they multiply in, so a run computes exactly
    what gathering computes (for ``max``, only which taps are used matters)."""
    index, weight = kernel.index, kernel.weight
    rows = index.shape[0]
    used = weight > 0 if reduce == "max" else weight.astype(dtype) != 0
    same = np.ones(rows, bool)  # row r continues row r-1's pattern
    stride = np.zeros(rows, np.int64)
    if rows > 1:
        values = weight.astype(dtype) if reduce != "max" else used
        same[1:] = (values[1:] == values[:-1]).all(axis=1)
        steps = index[1:] - index[:-1]
        first = steps[np.arange(rows - 1), np.argmax(used[1:], axis=1)]
        same[1:] &= ((steps == first[:, None]) | ~used[1:]).all(axis=1) & (first > 0)
        stride[1:] = first
    same[0] = False
    runs, r0 = [], 0
    for r in range(1, rows + 1):  # a run ends where a row breaks the pattern or the stride changes
        if r < rows and same[r] and (r == r0 + 1 or stride[r] == stride[r - 1]):
            continue
        if r - r0 >= MIN_STRIDED_ROWS:
            taps = [(int(index[r0, t]), weight[r0, t]) for t in range(index.shape[1]) if used[r0, t]]
            runs.append((r0, r, int(stride[r0 + 1]), taps))
        elif runs and runs[-1][2] is None:
            runs[-1] = (runs[-1][0], r, None, None)
        else:
            runs.append((r0, r, None, None))
        r0 = r
    return runs


def _gather(data, kernel: AxisKernel, axis: int, reduce: str, dtype: np.dtype, xp):
    """The rows of ``kernel`` tap by tap, each tap's inputs gathered by index."""
    index, weight = kernel.index, kernel.weight
    if reduce == "max":
        result = None
        used = index[np.arange(index.shape[0]), np.argmax(weight, axis=1)]
        for tap in range(index.shape[1]):
            rows = np.where(weight[:, tap] > 0, index[:, tap], used)  # unused taps repeat a used one
            taken = xp.take(data, xp.asarray(rows), axis=axis)
            result = taken if result is None else xp.maximum(result, taken, out=result)
        return result
    shape = [1] * data.ndim
    shape[axis] = -1
    result = None
    for tap in range(index.shape[1]):
        w = weight[:, tap].astype(dtype)
        rows = np.flatnonzero(w)  # a zero weight reads nothing (NaN x 0 is NaN), as in the strided runs
        if rows.size == 0:
            continue
        term = xp.take(data, xp.asarray(index[rows, tap]), axis=axis).astype(dtype, copy=False) * \
            xp.asarray(w[rows].reshape(shape))
        if rows.size == w.size:
            result = term if result is None else xp.add(result, term, out=result)
            continue
        if result is None:
            result = xp.zeros(data.shape[:axis] + (index.shape[0],) + data.shape[axis + 1:], dtype)
        cut = [slice(None)] * data.ndim
        cut[axis] = xp.asarray(rows)
        result[tuple(cut)] += term
    return result


def _strided(data, axis: int, start: int, stride: int, count: int):
    """``data``'s inputs start, start + stride, ... (``count`` of them) along ``axis``: a view."""
    cut = [slice(None)] * data.ndim
    cut[axis] = slice(start, start + stride * (count - 1) + 1, stride)
    return data[tuple(cut)]


def _run(data, axis: int, reduce: str, dtype: np.dtype, xp, count: int, stride: int, taps, out):
    """A strided run of rows into ``out`` (of the result's type): the same operations, in the same order, as
    gathering them (so the same values), without the gathered copies; one tap of weight one only copies."""
    if reduce == "max":
        out[...] = _strided(data, axis, taps[0][0], stride, count)
        for start, _ in taps[1:]:
            xp.maximum(out, _strided(data, axis, start, stride, count), out=out)
        return
    if len(taps) == 1 and taps[0][1] == 1.0:  # a pick: converting an input value is exact
        out[...] = _strided(data, axis, taps[0][0], stride, count)
        return
    term = None
    for number, (start, w) in enumerate(taps):
        view = _strided(data, axis, start, stride, count)
        if xp is not np:
            view = view.astype(dtype, copy=False)
        if number == 0:
            target = out
        else:
            term = xp.empty(out.shape, dtype) if term is None else term
            target = term
        if xp is np:
            np.multiply(view, dtype.type(w), out=target, dtype=dtype)  # converts as it goes: no converted copy
        else:
            xp.multiply(view, dtype.type(w), out=target)
        if number:
            xp.add(out, term, out=out)


def apply_axis(data, kernel: AxisKernel, axis: int, reduce: str, dtype: np.dtype, xp=np, out=None):
    """One axis of the separable filter, tap by tap: rows whose taps are a regular stride (mean, Gaussian, nearest
    away from the borders) read strided views of ``data``, the others gather their taps by index; both give the
    same values. The result is ``dtype`` for sums, ``data``'s type for max; ``out``: an array of the result's
    shape to write it into (of another type: cast with bigvolume.core.dtypes.cast_to). ``xp``: the array module
    of ``data`` (numpy, or CuPy for the GPU path: the tables stay numpy)."""
    dtype = np.dtype(dtype)
    result_dtype = data.dtype if reduce == "max" else dtype
    runs = kernel.runs(dtype, reduce)
    if len(runs) == 1 and runs[0][2] is None:
        result = _gather(data, kernel, axis, reduce, dtype, xp)
        return result if out is None else _store(out, result)
    shape = list(data.shape)
    shape[axis] = kernel.size_out
    picks_only = all(stride is not None and len(taps) == 1 and (reduce == "max" or taps[0][1] == 1.0)
                     for _, _, stride, taps in runs)
    direct = out is not None and (out.dtype == result_dtype or picks_only and out.dtype == data.dtype)
    target = out if direct else xp.empty(tuple(shape), result_dtype)
    for r0, r1, stride, taps in runs:
        cut = [slice(None)] * data.ndim
        cut[axis] = slice(r0, r1)
        if stride is None:
            part = AxisKernel(kernel.index[r0:r1], kernel.weight[r0:r1])
            target[tuple(cut)] = _gather(data, part, axis, reduce, dtype, xp)
        else:
            _run(data, axis, reduce, dtype, xp, r1 - r0, stride, taps, target[tuple(cut)])
    return target if out is None or target is out else _store(out, target)


def _store(out, values):
    out[...] = values if out.dtype == values.dtype else cast_to(values, out.dtype, overwrite=True)
    return out


def apply_separable(array: np.ndarray, kernels: tuple[AxisKernel, AxisKernel, AxisKernel], reduce: str = "sum",
                    out_dtype=None, threads: int = 1, progress: Progress | None = None) -> np.ndarray:
    """Resample ``array`` (k, j, i[, c]) with one kernel per IJK axis (``kernels`` in I, J, K order)."""
    kernel_i, kernel_j, kernel_k = kernels
    out_dtype = np.dtype(out_dtype or array.dtype)
    dtype = work_dtype(array.dtype)
    out_shape = (kernel_k.size_out, kernel_j.size_out, kernel_i.size_out) + array.shape[3:]
    out = np.empty(out_shape, dtype=out_dtype)
    skip_j = kernel_j.is_identity(array.shape[1])
    skip_i = kernel_i.is_identity(array.shape[2])
    progress = progress or Progress()

    def one_slice(k: int) -> None:
        plane = apply_axis(array, AxisKernel(kernel_k.index[k:k + 1], kernel_k.weight[k:k + 1]), 0, reduce, dtype)[0]
        if not skip_j:
            plane = apply_axis(plane, kernel_j, 0, reduce, dtype)
        if not skip_i:
            plane = apply_axis(plane, kernel_i, 1, reduce, dtype)
        out[k] = cast_to(plane, out_dtype)

    n_out = out_shape[0]
    chunk = max(1, n_out // (8 * max(threads, 1)))
    starts = range(0, n_out, chunk)

    def one_chunk(start: int) -> int:
        for k in range(start, min(start + chunk, n_out)):
            one_slice(k)
        return min(chunk, n_out - start)

    done = 0
    if threads <= 1:
        for start in starts:
            done += one_chunk(start)
            progress(done / n_out, "resampling")
        return out
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(one_chunk, start) for start in starts]
        try:
            for future in futures:
                done += future.result()
                progress(done / n_out, "resampling")
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return out


class BlockRun(NamedTuple):
    """``count`` equal dense blocks of a band matrix: the k-th maps inputs c0 + k c_step .. + width to outputs
    r0 + k rows .. + rows."""
    r0: int
    rows: int
    c0: int
    width: int
    c_step: int
    count: int
    dense: object      # (rows x width), in the backend's array type
    dense_t: object    # its transpose, contiguous


class BandMatrix:
    """An axis table as dense blocks along the band of its (outputs x inputs) weight matrix: each block maps a
    run of output voxels to the contiguous inputs their taps read. Taps that the table clamps onto the same
    border voxel add up, as they do tap by tap."""

    def __init__(self, kernel: AxisKernel, xp, dtype, block_inputs: int = CPU_BLOCK_INPUTS, batch: bool = True,
                 block_outputs: int | None = None, product_rows: int | None = None, may_hold_nan: bool = False,
                 nan_reads_zero_taps: bool = True):
        """``batch``: equal neighbouring blocks run as one batched product (numpy only; see :meth:`_runs`).
        ``block_outputs``: outputs per block, instead of those of ``block_inputs`` inputs. ``product_rows``: along
        the last axis, at most this many rows of the data per product (see X_BLOCK_OUTPUTS). ``may_hold_nan``:
        the data may hold NaN or infinities (float inputs); see :meth:`apply`."""
        self.xp, self.dtype, self.size_out = xp, np.dtype(dtype), kernel.size_out
        self.product_rows = product_rows
        self.kernel, self.may_hold_nan, self.nan_reads_zero_taps = kernel, may_hold_nan, nan_reads_zero_taps
        self._blocking = (block_inputs, batch, block_outputs, product_rows)
        self._reach = None  # the taps' reach as a band matrix, once a NaN was met
        index, weight = kernel.index, kernel.weight
        step = max(1.0, (index.max() - index.min() + 1) / self.size_out)  # inputs per output voxel
        rows = block_outputs or max(1, int(block_inputs / step))
        self.blocks = []
        for r0 in range(0, self.size_out, rows):
            r1 = min(self.size_out, r0 + rows)
            idx, w = index[r0:r1], weight[r0:r1]
            c0, c1 = int(idx.min()), int(idx.max()) + 1
            dense = np.zeros((r1 - r0, c1 - c0))
            np.add.at(dense, (np.repeat(np.arange(r1 - r0), idx.shape[1]), (idx - c0).ravel()), w.ravel())
            dense = dense.astype(self.dtype)
            self.blocks.append((r0, r1, c0, c1, xp.asarray(dense), xp.asarray(np.ascontiguousarray(dense.T))))
        self.runs = self._runs(batch and xp is np)

    def _runs(self, batch: bool) -> list["BlockRun"]:
        """The blocks as runs of equal blocks at a regular step (the interior of an integer factor's table: one
        dense block, repeated), each run one batched product over overlapping views of the input: the same BLAS
        products, block for block, in a few calls instead of one per block. On 2 cores the filter threads waited
        for the GIL between the ~55 000 calls of a 2 GiB x2 resample. ``batch`` False: one run per block."""
        runs: list[BlockRun] = []
        for r0, r1, c0, c1, dense, dense_t in self.blocks:
            last = runs[-1] if runs and batch else None
            if last is not None and (r1 - r0, c1 - c0) == (last.rows, last.width) and \
                    np.array_equal(dense, last.dense):
                step = c0 - (last.c0 + (last.count - 1) * last.c_step)  # from the run's last block
                if step > 0 and (last.count == 1 or step == last.c_step):
                    runs[-1] = last._replace(count=last.count + 1, c_step=step)
                    continue
            runs.append(BlockRun(r0, r1 - r0, c0, c1 - c0, 0, 1, dense, dense_t))
        return runs

    def apply(self, data, axis: int, pool=None, parts: int = 1, out=None):
        """``data`` (in ``self.dtype``) filtered and resampled along ``axis``. ``pool``/``parts``: split the
        products over that many of the pool's threads (along the leading axes, else the trailing ones), for a BLAS
        kept to one thread (see bigvolume.stream: BLAS's own threads spin and starve the decoding threads).
        ``out``: a C-contiguous array of the result's size and type to write into (a buffer reused slab after slab
        spares the page faults of a fresh one).

        A NaN input makes NaN the outputs whose taps read it, as tap by tap and in vtkImageResize; a block's
        product would spread it over the whole block (NaN x 0), 3-6 times as far. So when the data may hold NaN
        and the result does, the block products run again on the data with NaN as 0, and the outputs the NaN
        reach become NaN; infinities (rarer still) go tap by tap."""
        if not self.may_hold_nan:
            return self._products(data, axis, pool, parts, out)
        xp = self.xp
        with np.errstate(invalid="ignore"):
            if self._reach is None:  # no NaN met yet: look for one in the (smaller) result, not in the data
                result = self._products(data, axis, pool, parts, out)
                if not xp.isnan(xp.sum(result)):  # (an overflow to inf is no NaN: nothing to redo)
                    return result
                out = result
                # where the taps read: whatever their weight for Lanczos (NaN x 0 is NaN in vtkImageResize); the
                # other kernels' zero-weight taps only pad rows to one width, and their tap-by-tap CPU path skips
                # them (a mean's NaN spread to the next block on the array path)
                reads = np.ones(self.kernel.weight.shape) if self.nan_reads_zero_taps else self.kernel.weight != 0
                self._reach = BandMatrix(AxisKernel(self.kernel.index, reads.astype(np.float64)), xp, self.dtype,
                                         *self._blocking)
            if xp.isinf(data).any():
                return apply_axis(data, self.kernel, axis, "sum", self.dtype, xp, out=out)
            nan = xp.isnan(data)
            if not nan.any():
                return self._products(data, axis, pool, parts, out)
            result = self._products(xp.where(nan, self.dtype.type(0), data), axis, pool, parts, out)
            result[self._reach.apply(nan.astype(self.dtype), axis, pool, parts) > 0] = xp.nan
            return result

    def _products(self, data, axis: int, pool=None, parts: int = 1, out=None):
        shape = data.shape
        pre, post = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
        out_shape = shape[:axis] + (self.size_out,) + shape[axis + 1:]
        data = data.reshape(pre, shape[axis], post)
        parts = min(parts, max(pre, post)) if pool is not None else 1
        if out is None and len(self.blocks) == 1 and parts == 1:
            return self._product(data, *self.blocks[0][2:]).reshape(out_shape)
        out = self.xp.empty((pre, self.size_out, post), self.dtype) if out is None else \
            out.reshape(pre, self.size_out, post)
        along_pre = pre >= parts
        length = pre if along_pre else post
        bounds = [length * n // parts for n in range(parts + 1)]  # (np.linspace: 5 % of a thread's time at x2)

        def one_part(number: int) -> None:
            if self.may_hold_nan:  # the pool's threads do not share the caller's error state
                with np.errstate(invalid="ignore"):
                    return part_products(number)
            return part_products(number)

        def part_products(number: int) -> None:
            cut = slice(bounds[number], bounds[number + 1])
            source, target = (data[cut], out[cut]) if along_pre else (data[:, :, cut], out[:, :, cut])
            chunk = self.product_rows
            if post == 1 and chunk and source.shape[0] > chunk and self.xp is np:
                whole = source.shape[0] // chunk * chunk  # as one batched product per run; the rest after
                for run in self.runs:
                    self._run_product(source[:whole], target[:whole], run, chunk)
                source, target = source[whole:], target[whole:]
            if source.shape[0]:
                products(source, target)

        def products(source, target) -> None:
            for run in self.runs:
                if run.count == 1:
                    self._product(source, run.c0, run.c0 + run.width, run.dense, run.dense_t,
                                  out=target[:, run.r0:run.r0 + run.rows])
                else:
                    self._run_product(source, target, run)

        if parts == 1:
            one_part(0)
        else:
            list(pool.map(one_part, range(parts)))
        return out.reshape(out_shape)

    @staticmethod
    def _run_product(data, out, run: "BlockRun", chunk_rows: int | None = None) -> None:
        """The run's blocks as one batched product over strided views (each matrix in it is the one
        :meth:`_product` would have multiplied). Along the last axis, over ``data``'s rows in chunks of
        ``chunk_rows`` (which divides them; default all at once): one product per chunk and block."""
        pre, _, post = data.shape
        s0, s1, s2 = data.strides
        o0, o1, o2 = out.strides
        start, first = data[:, run.c0:], out[:, run.r0:]
        count, rows, width = run.count, run.rows, run.width
        if post == 1:    # along the last axis: (chunk_rows x width) @ (width x rows) per chunk and block
            chunk = chunk_rows or pre
            views = as_strided(start[:, :, 0], (pre // chunk, count, chunk, width),
                               (chunk * s0, run.c_step * s1, s0, s1), writeable=False)
            targets = as_strided(first[:, :, 0], (pre // chunk, count, chunk, rows), (chunk * o0, rows * o1, o0, o1))
            np.matmul(views, run.dense_t, out=targets)
            return
        views = as_strided(start, (count, pre, width, post), (run.c_step * s1, s0, s1, s2), writeable=False)
        targets = as_strided(first, (count, pre, rows, post), (rows * o1, o0, o1, o2))
        np.matmul(run.dense, views, out=targets)

    def _product(self, data, c0, c1, dense, dense_t, out=None):
        """The products of one block, into ``out`` when given (no temporary)."""
        part = data[:, c0:c1]
        pre, _, post = data.shape
        matmul = self.xp.matmul
        if post == 1:    # along the last axis: one (pre x n) @ (n x m) product
            if out is None:
                return matmul(part[:, :, 0], dense_t)[:, :, None]
            return matmul(part[:, :, 0], dense_t, out=out[:, :, 0])
        if pre == 1:     # along the first axis: (m x n) @ (n x post)
            if out is None:
                return matmul(dense, part[0])[None]
            return matmul(dense, part[0], out=out[0])
        return matmul(dense, part, out=out)  # in between: one product per leading index, batched


def axis_operator(kernel: AxisKernel, n_in: int, reduce: str, dtype, xp=np, block_inputs: int = CPU_BLOCK_INPUTS,
                  may_hold_nan: bool = False, nan_reads_zero_taps: bool = True, **blocking):
    """``f(data, axis, pool=None, parts=1, out=None)`` applying one axis table: a band matrix for weighted sums of
    several taps (split over ``parts`` of ``pool``'s threads; written into ``out`` when given; ``blocking``: the
    rest of BandMatrix's block sizes), else the tap-by-tap engine (max, and one-tap tables, which only pick
    voxels); identity tables cost nothing."""
    if kernel.is_identity(n_in):
        return lambda data, axis, pool=None, parts=1, out=None: data
    if reduce == "sum" and kernel.index.shape[1] > 1:
        return BandMatrix(kernel, xp, dtype, block_inputs, may_hold_nan=may_hold_nan,
                          nan_reads_zero_taps=nan_reads_zero_taps, **blocking).apply
    return lambda data, axis, pool=None, parts=1, out=None: apply_axis(data, kernel, axis, reduce, dtype, xp)


# Methods whose kernels are per-axis tables: they stream, run on every backend and split into blocks. fft needs the
# whole volume at once.
SEPARABLE_METHODS = ("lanczos", "gaussian", "mean", "max", "nearest")


def reads_zero_weight_taps(method: str) -> bool:
    """Whether a NaN under a zero-weight tap reaches the output: Lanczos's, as in vtkImageResize (NaN x 0 is NaN);
    the other kernels' zero-weight taps only pad rows to one width."""
    return method == "lanczos"


def identity_kernel(n: int) -> AxisKernel:
    return AxisKernel(np.arange(n)[:, None], np.ones((n, 1)))


class ResampleKernels:
    """Everything a backend needs to resample one input: the three axis tables (I, J, K) and the types the data
    passes through (input, the float it is filtered in, the x/y result kept for the z pass, the z sums).

    Built for a whole volume (:meth:`for_factors`) or for one output block of it (:meth:`block`): a block's tables
    are rows of the volume's, re-indexed into the input region they read, so a block is computed with the weights
    of the whole run."""

    def __init__(self, method: str, kernels: tuple[AxisKernel, AxisKernel, AxisKernel], input_shape,
                 dtype, factors=(1.0, 1.0, 1.0)):
        if method not in SEPARABLE_METHODS:
            raise ValueError(f"method {method!r} has no per-axis tables")
        self.method, self.kernels, self.factors = method, kernels, tuple(float(f) for f in factors)
        self.input_shape = tuple(input_shape)  # (k, j, i[, c]) of the input these tables read
        self.input_dtype = np.dtype(dtype)
        # nearest reads one tap: picked like max's, in the input's own type (a sum in float64 rounded 64-bit integers
        # above 2^53: 2^60 + 1 came out 2^60)
        self.reduce = "max" if method in ("max", "nearest") else "sum"
        nk, nj, ni = self.input_shape[:3]
        kernel_i, kernel_j, self.z_kernel = kernels
        self.skip_xy = kernel_i.is_identity(ni) and kernel_j.is_identity(nj)
        self.xy_kernels = None if self.skip_xy else (kernel_i, kernel_j)
        # Integers are filtered in floating point, rounded once at the end: vtk would round and clamp the x/y
        # result to the input type, and a clamped Lanczos overshoot changes the z sums by far more than 1.
        linear = method in ("lanczos", "gaussian", "mean")
        self.convert_to = work_dtype(self.input_dtype) if linear and self.input_dtype.kind != "f" else None
        filtered = self.input_dtype if self.convert_to is None else self.convert_to
        # Lanczos runs as band products in the filtered type; max and nearest only pick values.
        self.band = method == "lanczos"
        self.nan_reads_zero_taps = reads_zero_weight_taps(method)
        keeps_type = self.band or self.skip_xy or method in ("max", "nearest")
        self.window_dtype = filtered if keeps_type else work_dtype(filtered)
        self.work_dtype = work_dtype(filtered) if self.reduce == "sum" else self.window_dtype
        self.may_hold_nan = self.input_dtype.kind == "f"  # float inputs: the band products look for NaN
        self.z_need = self.z_kernel.index.max(axis=1)  # last input slice each output slice reads
        self.z_span = int((self.z_kernel.index.max(axis=1) - self.z_kernel.index.min(axis=1)).max())
        self.reduced_shape = (kernel_j.size_out, kernel_i.size_out) + self.input_shape[3:]
        self.output_shape = (self.z_kernel.size_out,) + self.reduced_shape

    @classmethod
    def for_factors(cls, method: str, input_shape, dtype, factors) -> "ResampleKernels":
        """The tables of a downsampling of an input of ``input_shape`` (k, j, i[, c]) by ``factors`` (I, J, K)
        onto the block-centred grid."""
        dims_in = tuple(input_shape[:3])[::-1]
        dims_out = tuple(output_size(n, f) for n, f in zip(dims_in, factors))
        tables = tuple(axis_kernel(method, n, float(f), m) for n, f, m in zip(dims_in, factors, dims_out))
        return cls(method, tables, input_shape, dtype, factors)

    def block(self, output_block) -> tuple["ResampleKernels", tuple[slice, slice, slice]]:
        """The tables of the output block ``output_block`` ((z0, z1), (y0, y1), (x0, x1): output voxel ranges,
        half-open) and the input region they read ((k, j, i) slices: the block's range widened by the kernel's
        support, its halo, clamped at the volume's borders)."""
        region, tables = [], []
        for (first, last), kernel in zip(output_block, self.kernels[::-1]):
            if not 0 <= first < last <= kernel.size_out:
                raise ValueError(f"output block {output_block} outside the output grid {self.output_shape[:3]}")
            index, weight = kernel.index[first:last], kernel.weight[first:last]
            low, high = int(index.min()), int(index.max()) + 1
            region.append(slice(low, high))
            tables.append(AxisKernel(index - low, weight))
        shape = tuple(r.stop - r.start for r in region) + self.input_shape[3:]
        return ResampleKernels(self.method, tuple(tables[::-1]), shape, self.input_dtype, self.factors), tuple(region)
