"""Precision reduction: map a robust intensity window onto a smaller integer type (e.g. 16 -> 8 bits).

The window comes from percentiles of a sample (so one hot pixel or a dark border does not waste the output
range); values outside it are clipped, and the clipped share is reported.

Values are kept as they are (no stretching) when stretching would only hurt (:func:`keeps_values`): integer data whose
type already fits the output type (8-bit data asked for 8 bits: stretching would clip it and the file would grow) or,
with no window asked for, whose values do (a uint16 label map asked for 8 bits), and a 16-bit output whose window
fits in it (Hounsfield units stay Hounsfield units). Float data whose values are all integers (a NIfTI's int16 scaled
by scl_slope 1, scl_inter -1024) count as integer data.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.errors import BigVolumeError, naming
from ..core.memory import default_threads, format_bytes
from ..core.progress import ProgressCallback, as_progress
from ..core.volume import Volume
from ..engine.loop import SlabStage, run_slabs
from ..engine.plan import READ_AHEAD, in_memory_limit, plan_input, plan_slabs
from ..engine.sinks import ArraySink, file_sink
from ..io.slab_writers import check_stream_output, writes_in_slabs
from ..io.slabs import ArraySlabReader, open_slabs

BITS_TO_DTYPE = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16)}
SIGNED_BITS_TO_DTYPE = {8: np.dtype(np.int8), 16: np.dtype(np.int16)}
DEFAULT_PERCENTILES = (0.1, 99.9)
SAMPLE_VOXELS = 2_000_000
SLAB_VOXELS = 16 * 2**20  # voxels read and written at a time
MAP_CHUNK_VOXELS = 2 ** 18  # voxels mapped at a time by one thread: 2 MiB of float64, in cache
logger = logging.getLogger("bigvolume")


def window_text(low: float, high: float) -> str:
    """``low .. high`` with 6 significant digits, or the fewest more that tell two different ends apart (1 ..
    1.0000000000000002 and a window 3e9 .. 3.000003e9 were printed "1 .. 1" and "3e+09 .. 3e+09")."""
    for digits in range(6, 18):  # 17 digits tell any two doubles apart
        ends = [f"{float(value):.{digits}g}" for value in (low, high)]
        if ends[0] != ends[1] or low == high:
            break
    return f"{ends[0]} .. {ends[1]}"


@dataclass(frozen=True)
class Window:
    low: float
    high: float

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high < self.low:
            raise BigVolumeError(f"invalid intensity window {self.low} .. {self.high}")


def _percentiles(values: np.ndarray, percentiles) -> tuple[float, float]:
    """numpy interpolates percentiles in the values' own type: between far-apart signed integers the difference
    wrapped around (an int16 window of -32742.5 .. 20000 for values -20000 and 20000). In double precision."""
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        values = values.astype(np.float64)
    return tuple(float(v) for v in np.percentile(values, percentiles))  # type: ignore[return-value]


def robust_window(sample: np.ndarray, percentiles=DEFAULT_PERCENTILES) -> Window:
    """The ``percentiles`` of the finite values of ``sample``."""
    values = np.asarray(sample).ravel()
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        raise BigVolumeError("no finite voxel values to choose an intensity window from")
    low, high = _percentiles(values, percentiles)
    if high <= low:  # the percentiles meet (a few voxels in a sea of one value): the values' full range
        low, high = values.min(), values.max()
    return Window(float(low), float(high))


HISTOGRAM_BINS = 256


def robust_histogram(values: np.ndarray, percentiles=DEFAULT_PERCENTILES, *, integer: bool = False,
                     bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin edges of the finite, non-empty ``values`` over their ``percentiles`` range (the full range when
    the percentiles meet, e.g. a small object in a sea of zeros; one unit when all values are equal); values outside
    go to the end bins. ``integer`` data spanning fewer values than ``bins`` get one bin per value (edges at
    half-integers), so no bin falls between two integers."""
    low, high = _percentiles(values, percentiles)
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
    # each slice's sample copied at once: a strided view would keep its whole slice until the stack (memory growing
    # as the volume's size to the 2/3: 1.8 GiB for a 39 GiB input)
    return np.stack([source.read(k, k + 1)[0, ::step, ::step].copy() for k in range(0, shape[0], step)])


def dtype_for_bits(bits: int, signed: bool = False) -> np.dtype:
    table = SIGNED_BITS_TO_DTYPE if signed else BITS_TO_DTYPE
    if bits not in table:
        raise BigVolumeError(f"bits must be one of {', '.join(map(str, table))}, got {bits}")
    return table[bits]


def full_range(dtype) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def window_map(window: Window, output_range) -> tuple[float, float]:
    """(scale, offset) of the linear map that takes ``window`` onto ``output_range`` (low, high): out = scale * value
    + offset (:func:`apply_window` computes it as (value - window.low) * scale + low, which does not cancel when the
    window is narrow and far from 0). A window of one value maps everything onto the range's low end."""
    span = window.high - window.low
    with np.errstate(over="ignore"):
        scale = (float(output_range[1]) - output_range[0]) / span if span > 0 else 0.0
    if not (np.isfinite(span) and np.isfinite(scale)):
        raise BigVolumeError(f"the intensity window {window_text(window.low, window.high)} is too "
                             f"{'wide' if not np.isfinite(span) else 'narrow'} to map onto "
                             f"{output_range[0]} .. {output_range[1]}")
    return scale, float(output_range[0]) - window.low * scale


def apply_window(values: np.ndarray, window: Window, dtype, output_range=None, pool=None, *,
                 count_fractions: bool = False):
    """``values`` mapped linearly from ``window`` onto ``output_range`` (default: the full range of the integer
    ``dtype``), rounded and clipped to it; NaN goes to the range's low end (not counted as clipped). Returns the
    result and how many values were clipped, and with ``count_fractions`` how many mapped values were not whole
    numbers before rounding (an identity map that should have had none). Mapped in chunks of MAP_CHUNK_VOXELS
    (float64 temporaries that stay in cache, not eight passes over slab-sized ones), over ``pool``'s threads when
    given."""
    low, high = output_range if output_range is not None else full_range(dtype)
    scale, _ = window_map(window, (low, high))
    source = np.ravel(values)  # a view when contiguous
    result = np.empty(np.shape(values), np.dtype(dtype))
    target = result.reshape(-1)
    floating = source.dtype.kind == "f"

    def one_chunk(start: int) -> tuple[int, int]:
        mapped = source[start:start + MAP_CHUNK_VOXELS].astype(np.float64)
        if scale == 0.0:  # a window of one value (a constant volume): a step there, values beyond it clipped
            clipped = int(np.count_nonzero(mapped != window.low)) - int(np.count_nonzero(np.isnan(mapped)))
            mapped = np.where(mapped > window.high, float(high), np.where(np.isnan(mapped), np.nan, float(low)))
        else:
            # values outside the window are the clipped ones (counted as mapped, those within half a step of the
            # range were not: uniform uint16 to 8 bits, 200 values outside, "clipped 0")
            clipped = int(np.count_nonzero(mapped < window.low)) + int(np.count_nonzero(mapped > window.high))
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float64: infinite, clipped below
                mapped -= window.low
                mapped *= scale
            mapped += low
        if floating:  # NaN has no place in an integer type (a cast would give an arbitrary value and a warning)
            mapped[np.isnan(mapped)] = low
        fractions = 0
        if count_fractions:  # (on the chunk in cache; infinities are whole, and clipped)
            fractions = int(np.count_nonzero(np.rint(mapped) != mapped))
        np.rint(mapped, out=mapped)
        np.clip(mapped, low, high, out=mapped)
        target[start:start + MAP_CHUNK_VOXELS] = mapped
        return clipped, fractions

    starts = range(0, source.size, MAP_CHUNK_VOXELS)
    counts = list(pool.map(one_chunk, starts) if pool is not None and len(starts) > 1 else map(one_chunk, starts))
    clipped = sum(count for count, _ in counts)
    if count_fractions:
        return result, clipped, sum(fractions for _, fractions in counts)
    return result, clipped


@dataclass(frozen=True)
class SampleValues:
    """What the statistics pass (:func:`subsample`, the one the percentile window is taken from) saw of a volume's
    values: the finite minimum and maximum, and whether every finite value is an integer."""

    low: float
    high: float
    integers: bool

    @classmethod
    def of(cls, sample: np.ndarray) -> "SampleValues | None":
        """The statistics of ``sample``; None when it holds no finite value."""
        values = np.asarray(sample).ravel()
        if values.dtype.kind == "f":
            values = values[np.isfinite(values)]
        if values.size == 0:
            return None
        integers = values.dtype.kind in "iub" or bool(np.all(np.floor(values) == values))
        return cls(float(values.min()), float(values.max()), integers)


def keeps_values(input_dtype, output_dtype, window: Window | None, stretch: bool = False,
                 values: SampleValues | None = None) -> bool:
    """Whether a precision reduction keeps the input's values (identity) instead of stretching a window onto the
    output type. Never with ``stretch``, nor for input whose values are not integers: an integer type, or float
    data whose ``values`` (the statistics pass) are all integers (a NIfTI's int16 with scl_slope 1, scl_inter -1024).
    With no window asked for: when every value of the input type fits the output type (uint8 -> uint8 or int16:
    stretching would clip and grow the file) or when the values seen fit it (a uint16 label map 0 .. 5 -> uint8:
    stretching merged its rare top label into the one below). With a window:
    when the output has 16 bits and the window fits in it (Hounsfield units with ``--window -1024 3071`` keep their
    values; values outside the window are clipped to it)."""
    input_dtype = np.dtype(input_dtype)
    if stretch:
        return False
    if input_dtype.kind not in "iu" and not (input_dtype.kind == "f" and values is not None and values.integers):
        return False
    low, high = full_range(output_dtype)
    if window is None:
        if input_dtype.kind in "iu":
            input_low, input_high = full_range(input_dtype)
            if low <= input_low and input_high <= high:
                return True
        return values is not None and low <= values.low and values.high <= high
    return np.dtype(output_dtype).itemsize == 2 and low <= window.low and window.high <= high


def kept_range(input_dtype, output_dtype, window: Window | None) -> tuple[Window, tuple[int, int]]:
    """Window and output range of the identity map of :func:`keeps_values`: the window's integers (with no window:
    those of the output type, within the input type's when it is an integer one) onto the same integers."""
    if window is None:
        low, high = full_range(output_dtype)
        if np.dtype(input_dtype).kind in "iu":
            input_low, input_high = full_range(input_dtype)
            low, high = max(low, input_low), min(high, input_high)
        return Window(float(low), float(high)), (low, high)
    # the window's integers onto themselves: -100.9 .. 100 mapped onto -100 .. 100 was no identity
    integers = (int(np.ceil(window.low)), int(np.floor(window.high)))
    if integers[0] > integers[1]:
        raise BigVolumeError(f"the intensity window {window_text(window.low, window.high)} holds no integer, and the "
                             "input's integer values are kept as they are: give a window around them, or --stretch "
                             "to map this one onto the full range")
    return Window(*map(float, integers)), integers


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
    output_range: tuple | None = None  # what the window maps onto (default: the type's full range)
    kept_values: bool = False          # identity map (see keeps_values)

    def __post_init__(self):
        if self.output_range is None:
            self.output_range = full_range(self.dtype)

    def intensity_map(self) -> tuple[float, float]:
        """(scale, offset): output value = scale * input value + offset, inside the window (previews use it to
        draw the output with the input's window)."""
        return window_map(self.window, self.output_range)

    def summary(self) -> str:
        where = f"{self.output_path}: " if self.output_path else ""
        low, high = self.output_range
        if self.kept_values:
            mapping = f"values kept ({window_text(self.window.low, self.window.high)}, no stretching)"
        else:
            mapping = f"window {window_text(self.window.low, self.window.high)} -> {low} .. {high}"
        text = (f"{where}{self.dtype}, {mapping}; clipped {self.clipped} of {self.voxels} "
                f"voxels ({100 * self.clipped_fraction:.3f} %)")
        if self.input_bytes:
            text += f"; {format_bytes(self.input_bytes)} -> {format_bytes(self.output_bytes)} on disk"
        if self.seconds:
            text += f"; {self.seconds:.2f} s"
        return text


@dataclass(frozen=True)
class _Mapping:
    """What :func:`_choose_mapping` chose: ``window`` onto ``output_range``, the identity when ``kept`` (``why``: what
    the note says of the values)."""

    window: Window
    output_range: tuple
    kept: bool = False
    why: str = ""
    seen: "SampleValues | None" = None  # when keeping rested on the values a subsample saw (no window given)
    whole: bool = False                 # kept float values, taken for integers from a subsample: checked, every one
    restarted: bool = False             # stretched after kept float values turned out to hold fractions


class _Fractions(Exception):
    """Kept float values (a subsample showed only integers) hold fractions: the reduction starts again, stretched."""


class _ReduceStage(SlabStage):
    """Maps every slab through ``window`` onto ``dtype``; NaN voxels go to the bottom of the range. Counts the
    clipped and NaN voxels. ``whole``: the map keeps float values taken for integers; a fraction raises _Fractions."""

    def __init__(self, window: Window, dtype: np.dtype, output_range, whole: bool = False):
        self.window, self.dtype, self.output_range, self.whole = window, dtype, output_range, whole
        self.clipped = self.nan = 0

    def push(self, k0, k1, slab, pool, sink) -> None:
        if slab.dtype.kind == "f":  # apply_window sets NaN to the bottom of the range; counted for the report
            self.nan += int(np.count_nonzero(np.isnan(slab)))
        if self.whole:
            mapped, count, fractions = apply_window(slab, self.window, self.dtype, self.output_range, pool,
                                                    count_fractions=True)
            if fractions:
                raise _Fractions(fractions)
        else:
            mapped, count = apply_window(slab, self.window, self.dtype, self.output_range, pool)
        self.clipped += count
        sink.write(mapped)


def _reduce_slabs(reader, mapping: _Mapping, dtype: np.dtype, sink, memory_limit: float,
                  progress, name) -> tuple[int, int]:
    """Every slab of ``reader`` reduced (see _ReduceStage) into ``sink``, on the slab engine; returns (clipped
    voxels, NaN voxels)."""
    voxels = reader.slice_bytes // reader.dtype.itemsize
    # per slice: the slabs read and the output block (the map's float64 temporaries are per chunk, not per slab)
    per_slice = voxels * (READ_AHEAD + 1) * reader.dtype.itemsize + voxels * np.dtype(dtype).itemsize
    plan = plan_slabs(reader.slices, reader.slice_bytes, per_slice, 0, memory_limit,
                      max_slab_bytes=SLAB_VOXELS * reader.dtype.itemsize, alignment=reader.slab_alignment)
    if plan.note and name is not None:  # said before the work, as resample does: a run killed for memory has
        logger.warning(f"{name}: {plan.note}")  # said why (not of an array in memory: its limit is ours, not asked)
    stage = _ReduceStage(mapping.window, dtype, mapping.output_range, mapping.whole)
    run_slabs(reader, stage, sink, plan.slab_slices, threads=default_threads(), progress=progress,
              message="reducing precision, slab")
    return stage.clipped, stage.nan


def _given_window(window) -> Window | None:
    if window is None:
        return window
    if not isinstance(window, Window):
        window = Window(*map(float, window))
    if not window.low < window.high:  # a one-value window would send every voxel to one end
        raise BigVolumeError(f"the intensity window {window.low:g} .. {window.high:g} holds one value: give LOW < HIGH")
    return window


def _given_percentiles(percentiles) -> tuple[float, float] | None:
    """None (not asked for: the default DEFAULT_PERCENTILES, and integer values that fit are kept), or two
    percentiles 0 <= LO < HI <= 100."""
    if percentiles is None:
        return None
    low, high = map(float, percentiles)
    if not 0.0 <= low < high <= 100.0:
        raise BigVolumeError(f"--percentiles {low:g} {high:g}: give two percentiles 0 <= LO < HI <= 100 (the window "
                             "runs from the LO-th to the HI-th)")
    return low, high


def _given_mapping(window, percentiles) -> tuple[Window | None, tuple[float, float] | None]:
    """The window or the percentiles asked for, not both: with both, the percentiles were dropped silently."""
    window, percentiles = _given_window(window), _given_percentiles(percentiles)
    if window is not None and percentiles is not None:
        raise BigVolumeError("give an intensity window or percentiles, not both (the window sets the range itself)")
    return window, percentiles


FLOAT64_INTEGERS = 2**53  # every integer up to here is a float64; beyond, neighbours share one (2^60 + 1 -> 2^60)
MAP_ERROR_STEPS = 1e-3    # the most a 64-bit integer may move, in output steps, when converted to float64


def _check_exact_enough(input_dtype, window: Window, output_range) -> None:
    """Refuse a 64-bit integer input whose window lies where float64, which maps it, holds too few integers: 2^60 +
    0 .. 255 to 8 bits came out 0 or 255 ("window 1.15292e+18 .. 1.15292e+18", exit 0). Only values in the window
    (or within a step of it) land between the range's ends, so the window's far end bounds their error: half a float64
    step there, scaled. Far-apart values (-2^62 and 2^62) map well and are not refused."""
    input_dtype = np.dtype(input_dtype)
    if input_dtype.kind not in "iu" or input_dtype.itemsize != 8:
        return
    far = max(abs(window.low), abs(window.high))
    if far <= FLOAT64_INTEGERS:
        return
    span = window.high - window.low
    scale = (float(output_range[1]) - output_range[0]) / span if span > 0 else np.inf  # (one value: no step at all)
    if np.spacing(far) / 2 * scale > MAP_ERROR_STEPS:
        raise BigVolumeError(f"{input_dtype} values near {far:.6g} lie beyond 2^53, where double precision, in which "
                             f"reduce-bits maps them, holds only every {np.spacing(far):.0f}th integer: too coarse for "
                             f"the window {window_text(window.low, window.high)} (values closer than that merge or "
                             "land in the wrong level); subtract an offset first, or convert the volume to float64 "
                             "knowing it rounds them")


def _choose_mapping(source, input_dtype, dtype, window, percentiles, stretch: bool) -> _Mapping:
    """The map of a reduction: the identity when :func:`keeps_values` (decided from the types, else from the
    statistics pass over a subsample of ``source``, the one the percentile window needs; what rested on the subsample
    is checked on every voxel while mapping, see _Mapping), else the given window or the ``percentiles`` of that
    subsample stretched onto the type's full range. A window that cannot be mapped is refused here, before any voxel
    is written."""
    window, percentiles = _given_mapping(window, percentiles)
    input_dtype, dtype = np.dtype(input_dtype), np.dtype(dtype)
    sample = values = None
    if percentiles is not None:  # a percentile window asked for is stretched onto the range (it was dropped when
        # the input type fit the output: uint8 with --percentiles 10 90 to 8 bits kept its values)
        window = robust_window(subsample(source), percentiles)
        window_map(window, full_range(dtype))
        _check_exact_enough(input_dtype, window, full_range(dtype))
        return _Mapping(window, full_range(dtype))
    by_type = not stretch and keeps_values(input_dtype, dtype, window)
    if not stretch and not by_type and (window is None or (input_dtype.kind == "f" and dtype.itemsize == 2)):
        sample = subsample(source)
        values = SampleValues.of(sample)
    if by_type or keeps_values(input_dtype, dtype, window, stretch, values):
        why = []
        if input_dtype.kind == "f":
            why.append("all integers")
        seen = values if window is None and not by_type else None  # kept for the values seen, not their type
        if seen is not None:
            why.append(window_text(values.low, values.high))
        return _Mapping(*kept_range(input_dtype, dtype, window), True, ", ".join(why), seen, input_dtype.kind == "f")
    if window is None:
        window = robust_window(subsample(source) if sample is None else sample, DEFAULT_PERCENTILES)
    window_map(window, full_range(dtype))  # too wide or too narrow for the output: refused now, naming the file
    _check_exact_enough(input_dtype, window, full_range(dtype))
    return _Mapping(window, full_range(dtype))


def _stretched(source, input_dtype, dtype, window) -> _Mapping:
    """The map when kept float values turned out to hold fractions: the one ``--stretch`` chooses."""
    return replace(_choose_mapping(source, input_dtype, dtype, window, None, stretch=True), restarted=True)


def _check_reducible(components: int, dtype: np.dtype) -> None:
    if components != 1:
        raise BigVolumeError(f"{components} components per voxel (RGB or vector): precision reduction needs a scalar "
                             "volume")
    if np.dtype(dtype).kind not in "iuf":
        raise BigVolumeError(f"pixel type {np.dtype(dtype)} cannot be reduced")


def _reduce_report(mapping: _Mapping, dtype, input_dtype, clipped, nan, voxels) -> ReduceReport:
    window, (low, high) = mapping.window, mapping.output_range
    notes = [f"{nan} NaN voxels set to the bottom of the range ({low})"] if nan else []
    if mapping.restarted:
        notes.append(f"{np.dtype(input_dtype)} values are not all integers, though those of a subsample were: the "
                     f"window {window_text(window.low, window.high)} is stretched onto {low} .. {high} (as with "
                     "--stretch) instead of keeping the values, which would round their fractions")
    if mapping.kept:
        notes.append(f"{np.dtype(input_dtype)} values{f' ({mapping.why})' if mapping.why else ''} kept as they are in "
                     f"{np.dtype(dtype)} (no stretching"
                     + (f", clipped to the window {window_text(window.low, window.high)})" if clipped else ")")
                     + "; --stretch maps the window onto the full range")
    if mapping.kept and mapping.seen is not None and clipped:
        notes.append(f"{clipped} voxels lie outside {low} .. {high} and were clipped to it: the values were kept "
                     f"because those of a subsample ({window_text(mapping.seen.low, mapping.seen.high)}) fit "
                     f"{np.dtype(dtype)}; a wider output keeps them, --stretch maps a window onto the full range")
    return ReduceReport(window, np.dtype(dtype), clipped, clipped / max(1, voxels), voxels, notes,
                        output_range=(low, high), kept_values=mapping.kept)


def reduce_bits(volume: Volume, bits: int = 8, *, signed: bool = False, window: Window | None = None,
                percentiles=None, stretch: bool = False, progress: ProgressCallback | None = None
                ) -> tuple[Volume, ReduceReport]:
    """``volume`` mapped linearly from an intensity window onto uint8/uint16 (int8/int16 with ``signed``): the
    window is given (a Window or (low, high)) or the ``percentiles`` of a subsample (default DEFAULT_PERCENTILES);
    values outside it are clipped and counted. Integer values that fit the output are kept as they are unless
    ``stretch`` (:func:`keeps_values`; with neither ``window`` nor ``percentiles`` given, also when the values seen
    fit the output type). Geometry unchanged; the input is not modified."""
    dtype = dtype_for_bits(bits, signed)
    _check_reducible(volume.components, volume.dtype)
    mapping = _choose_mapping(volume.array, volume.dtype, dtype, window, percentiles, stretch)
    output = np.empty(volume.array.shape, dtype)
    progress = as_progress(progress)
    try:
        clipped, nan = _reduce_slabs(ArraySlabReader(volume.array, volume.geometry), mapping, dtype,
                                     ArraySink(output), in_memory_limit(), progress, None)
    except _Fractions:  # kept float values that are not all integers: stretched, as the rule says
        mapping = _stretched(volume.array, volume.dtype, dtype, window)
        clipped, nan = _reduce_slabs(ArraySlabReader(volume.array, volume.geometry), mapping, dtype,
                                     ArraySink(output), in_memory_limit(), progress, None)
    return Volume(output, volume.geometry), _reduce_report(mapping, dtype, volume.dtype, clipped, nan, output.size)


def reduce_bits_file(input_path, output_path, bits: int = 8, *, signed: bool = False, window: Window | None = None,
                     percentiles=None, stretch: bool = False, stream: bool | None = None,
                     memory_limit: float | None = None, series: str | None = None,
                     progress: ProgressCallback | None = None) -> ReduceReport:
    """Read, reduce the precision, write; streams slab by slab by the engine's rule
    (:func:`bigvolume.engine.should_stream`). The output appears only when complete."""
    from ..io import files as io

    started = time.perf_counter()
    dtype = dtype_for_bits(bits, signed)
    input_path, output_path = Path(input_path), Path(output_path)
    with naming(input_path):  # the options first: a typo fails before the file is read
        window, percentiles = _given_mapping(window, percentiles)
    plan = plan_input(input_path, stream=stream, memory_limit=memory_limit, series=series)
    progress = as_progress(progress)
    with naming(input_path):
        _check_reducible(plan.components, plan.dtype)
    io.check_output_path(output_path, inputs=[input_path])
    streams = plan.streams(plan.geometry.voxel_count * dtype.itemsize)
    whole_read_note = "" if streams else plan.whole_read_note(plan.geometry.voxel_count * dtype.itemsize)
    if whole_read_note:  # (--no-stream over the limit was silent)
        logger.warning(whole_read_note)
    if not streams and not writes_in_slabs(output_path):
        volume = io.read_volume(input_path, series)
        with naming(input_path):
            result, report = reduce_bits(volume, bits, signed=signed, window=window, percentiles=percentiles,
                                         stretch=stretch, progress=progress.sub(0.1, 0.9))
        io.write_volume(result, output_path)
    else:  # slab by slab into the file, from the file or (an input that fits) from the array in memory
        check_stream_output(output_path, dtype, 1)
        if streams:
            source, limit, name = open_slabs(input_path, series), plan.memory_limit, input_path
        else:  # memory-mapped raw data: read by the page cache, not copied
            volume = io.read_volume(input_path, series)
            source = ArraySlabReader(volume.array, volume.geometry, threads=default_threads())
            limit = in_memory_limit(volume.array.nbytes)
            name = None  # (the slabs are views of the array: a limit of ours, not the user's, is no news)
        with source as reader:
            with naming(input_path):
                mapping = _choose_mapping(reader, plan.dtype, dtype, window, percentiles, stretch)
            try:
                with file_sink(output_path, plan.geometry, dtype) as writer:
                    clipped, nan = _reduce_slabs(reader, mapping, dtype, writer, limit, progress, name)
            except _Fractions:  # (the file sink aborted: nothing written) stretched, as the rule says
                with naming(input_path):
                    mapping = _stretched(reader, plan.dtype, dtype, window)
                with file_sink(output_path, plan.geometry, dtype) as writer:
                    clipped, nan = _reduce_slabs(reader, mapping, dtype, writer, limit, progress, name)
        report = _reduce_report(mapping, dtype, plan.dtype, clipped, nan, plan.geometry.voxel_count)
    progress(1.0, "written")
    for note in report.notes:
        logger.warning(note)  # the command line prints these on stderr
    report.output_path, report.seconds = output_path, time.perf_counter() - started
    report.input_bytes, report.output_bytes = io.file_size(input_path, series), io.file_size(output_path)
    return report


class WindowedSink:
    """Maps filtered float blocks through an intensity window onto a smaller integer type before ``sink``."""

    def __init__(self, sink, window: Window, dtype):
        self.sink, self.window, self.dtype = sink, window, np.dtype(dtype)
        self.clipped = 0

    def write(self, block: np.ndarray) -> None:
        mapped, clipped = apply_window(block, self.window, self.dtype)
        self.clipped += clipped
        self.sink.write(mapped)
