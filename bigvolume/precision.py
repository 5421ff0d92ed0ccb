"""Precision reduction: map a robust intensity window onto a smaller integer type (e.g. 16 -> 8 bits).

The window comes from percentiles of a sample (so one hot pixel or a dark border does not waste the output
range); values outside it are clipped, and the clipped share is reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BigVolumeError, naming
from .memory import format_bytes
from .progress import ProgressCallback, as_progress
from .volume import Volume

BITS_TO_DTYPE = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16)}
SIGNED_BITS_TO_DTYPE = {8: np.dtype(np.int8), 16: np.dtype(np.int16)}
DEFAULT_PERCENTILES = (0.1, 99.9)
SAMPLE_VOXELS = 2_000_000
SLAB_VOXELS = 16 * 2**20  # voxels converted at a time (bounds the float64 temporaries)


@dataclass(frozen=True)
class Window:
    low: float
    high: float

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high < self.low:
            raise BigVolumeError(f"invalid intensity window {self.low} .. {self.high}")


def robust_window(sample: np.ndarray, percentiles=DEFAULT_PERCENTILES) -> Window:
    """The ``percentiles`` of the finite values of ``sample``."""
    values = np.asarray(sample).ravel()
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        raise BigVolumeError("no finite voxel values to choose an intensity window from")
    low, high = np.percentile(values, percentiles)
    return Window(float(low), float(high))


HISTOGRAM_BINS = 256


def robust_histogram(values: np.ndarray, percentiles=DEFAULT_PERCENTILES, *, integer: bool = False,
                     bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin edges of the finite, non-empty ``values`` over their ``percentiles`` range (the full range when
    the percentiles meet, e.g. a small object in a sea of zeros; one unit when all values are equal); values outside
    go to the end bins. ``integer`` data spanning fewer values than ``bins`` get one bin per value (edges at
    half-integers), so no bin falls between two integers."""
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1.0
    if integer and high - low + 1 <= bins:
        edges = np.arange(np.floor(low), np.floor(high) + 2) - 0.5
    else:
        edges = np.linspace(low, high, bins + 1)
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), edges)
    return counts, edges


def subsample(source, max_voxels: int = SAMPLE_VOXELS) -> np.ndarray:
    """Every s-th voxel along each axis of ``source`` (an array (k, j, i) or a slab reader, read one slice at a time
    in order), s chosen so that at most about ``max_voxels`` are kept: statistics of huge volumes in little time."""
    if isinstance(source, np.ndarray):
        shape = source.shape[:3]
    else:
        shape = (source.slices,) + tuple(source.slice_shape[:2])
    step = max(1, int(np.ceil((int(np.prod(shape)) / max(1, max_voxels)) ** (1 / 3))))
    if isinstance(source, np.ndarray):
        return np.asarray(source[::step, ::step, ::step])
    return np.stack([source.read(k, k + 1)[0, ::step, ::step] for k in range(0, shape[0], step)])


def dtype_for_bits(bits: int, signed: bool = False) -> np.dtype:
    table = SIGNED_BITS_TO_DTYPE if signed else BITS_TO_DTYPE
    if bits not in table:
        raise BigVolumeError(f"bits must be one of {', '.join(map(str, table))}, got {bits}")
    return table[bits]


def apply_window(values: np.ndarray, window: Window, dtype) -> tuple[np.ndarray, int]:
    """``values`` mapped linearly from ``window`` onto the full range of the integer ``dtype`` (rounded, clipped);
    returns the result and how many values were clipped."""
    info = np.iinfo(np.dtype(dtype))
    span = window.high - window.low
    scale = (float(info.max) - info.min) / span if span > 0 else 0.0
    mapped = (np.asarray(values, np.float64) - window.low) * scale + info.min
    clipped = int(np.count_nonzero((mapped < info.min - 0.5) | (mapped > info.max + 0.5)))
    np.rint(mapped, out=mapped)
    np.clip(mapped, info.min, info.max, out=mapped)
    return mapped.astype(dtype), clipped


@dataclass
class ReduceReport:
    window: Window
    dtype: np.dtype
    clipped: int
    clipped_fraction: float
    voxels: int = 0
    notes: list = field(default_factory=list)
    output_path: Path | None = None
    seconds: float = 0.0
    input_bytes: int = 0    # on disk, for files
    output_bytes: int = 0

    def summary(self) -> str:
        where = f"{self.output_path}: " if self.output_path else ""
        text = (f"{where}{self.dtype}, window {self.window.low:.6g} .. {self.window.high:.6g} -> "
                f"{np.iinfo(self.dtype).min} .. {np.iinfo(self.dtype).max}; clipped {self.clipped} of {self.voxels} "
                f"voxels ({100 * self.clipped_fraction:.3f} %)")
        if self.input_bytes:
            text += f"; {format_bytes(self.input_bytes)} -> {format_bytes(self.output_bytes)} on disk"
        if self.seconds:
            text += f"; {self.seconds:.2f} s"
        return text


def _reduce_slabs(source, window: Window, dtype: np.dtype, write, progress) -> tuple[int, int]:
    """Map every slab of ``source`` through ``window`` onto ``dtype`` and hand it to ``write(k0, block)``; NaN
    voxels go to the bottom of the range. Returns (clipped voxels, NaN voxels)."""
    slices = source.shape[0] if isinstance(source, np.ndarray) else source.slices
    slice_voxels = int(np.prod(source.shape[1:3] if isinstance(source, np.ndarray) else source.slice_shape[:2]))
    slab = max(1, SLAB_VOXELS // max(1, slice_voxels))
    clipped = nan = 0
    for k0 in range(0, slices, slab):
        k1 = min(slices, k0 + slab)
        block = source[k0:k1] if isinstance(source, np.ndarray) else source.read(k0, k1)
        values = block
        if block.dtype.kind == "f":
            missing = np.isnan(block)
            if missing.any():
                nan += int(np.count_nonzero(missing))
                values = np.where(missing, window.low, block)
        mapped, count = apply_window(values, window, dtype)
        clipped += count
        write(k0, mapped)
        progress(k1 / slices, "reducing precision")
    return clipped, nan


def _choose_window(source, window: Window | None, percentiles) -> Window:
    if window is not None:
        return window if isinstance(window, Window) else Window(*map(float, window))
    return robust_window(subsample(source), percentiles)


def _check_reducible(components: int, dtype: np.dtype) -> None:
    if components != 1:
        raise BigVolumeError(f"{components} components per voxel (RGB or vector): precision reduction needs a scalar "
                             "volume")
    if np.dtype(dtype).kind not in "iuf":
        raise BigVolumeError(f"pixel type {np.dtype(dtype)} cannot be reduced")


def _reduce_report(window, dtype, clipped, nan, voxels) -> ReduceReport:
    notes = [f"{nan} NaN voxels set to the bottom of the range ({np.iinfo(dtype).min})"] if nan else []
    return ReduceReport(window, np.dtype(dtype), clipped, clipped / max(1, voxels), voxels, notes)


def reduce_bits(volume: Volume, bits: int = 8, *, signed: bool = False, window: Window | None = None,
                percentiles=DEFAULT_PERCENTILES, progress: ProgressCallback | None = None
                ) -> tuple[Volume, ReduceReport]:
    """``volume`` mapped linearly from an intensity window onto uint8/uint16 (int8/int16 with ``signed``): the
    window is given (a Window or (low, high)) or the ``percentiles`` of a subsample; values outside it are clipped
    and counted. Geometry unchanged; the input is not modified."""
    dtype = dtype_for_bits(bits, signed)
    _check_reducible(volume.components, volume.dtype)
    window = _choose_window(volume.array, window, percentiles)
    output = np.empty(volume.array.shape, dtype)

    def write(k0, block):
        output[k0:k0 + block.shape[0]] = block

    clipped, nan = _reduce_slabs(volume.array, window, dtype, write, as_progress(progress))
    return Volume(output, volume.geometry), _reduce_report(window, dtype, clipped, nan, output.size)


def reduce_bits_file(input_path, output_path, bits: int = 8, *, signed: bool = False, window: Window | None = None,
                     percentiles=DEFAULT_PERCENTILES, stream: bool | None = None, memory_limit: float | None = None,
                     series: str | None = None, progress: ProgressCallback | None = None) -> ReduceReport:
    """Read, reduce the precision, write; streams slab by slab by the rule of
    :func:`bigvolume.resample.plan_file`. The output appears only when complete."""
    from . import io
    from .resample import plan_file
    from .slab_writers import BackgroundWriter, SlabWriter, check_stream_output
    from .slabs import open_slabs

    started = time.perf_counter()
    dtype = dtype_for_bits(bits, signed)
    input_path, output_path = Path(input_path), Path(output_path)
    if window is not None:
        window = _choose_window(None, window, percentiles)
    plan = plan_file(input_path, 1, method="nearest", dtype=dtype, stream=stream, memory_limit=memory_limit,
                     series=series)
    progress = as_progress(progress)
    with naming(input_path):
        _check_reducible(plan.components, plan.dtype)
    io.check_output_path(output_path, inputs=[input_path])
    if not plan.streams:
        volume = io.read_volume(input_path, series)
        with naming(input_path):
            result, report = reduce_bits(volume, bits, signed=signed, window=window, percentiles=percentiles,
                                         progress=progress.sub(0.1, 0.9))
        io.write_volume(result, output_path)
    else:
        check_stream_output(output_path, dtype, 1)
        with open_slabs(input_path, series) as reader, io.atomic_output(output_path) as staging:
            with naming(input_path):
                window = _choose_window(reader, window, percentiles)
            writer = BackgroundWriter(SlabWriter(staging, plan.geometry, dtype))
            try:
                clipped, nan = _reduce_slabs(reader, window, dtype, lambda k0, block: writer.write(block), progress)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        report = _reduce_report(window, dtype, clipped, nan, plan.geometry.voxel_count)
    progress(1.0, "written")
    report.output_path, report.seconds = output_path, time.perf_counter() - started
    report.input_bytes, report.output_bytes = io.file_size(input_path, series), io.file_size(output_path)
    return report
