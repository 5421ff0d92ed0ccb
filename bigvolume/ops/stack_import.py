"""Importing an image stack as a volume: plan from the headers (sizes, spacing, memory) before any pixel is
decoded, then stream the slices through the same anti-aliased resampler as volume files (crop, gray, bit depth
and downsampling while reading), into a file or into an array the caller owns (a Slicer volume node's voxels).

Also writes a full-resolution streamable NHDR: when the slices are uncompressed TIFFs with one contiguous pixel
block at the same offset in every file, the NHDR lists the original files (``data file: LIST`` + ``byte skip``)
and no pixel is copied; otherwise one raw file is written slice by slice.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import dicom
from ..io import files as io
from ..core.errors import BigVolumeError, VolumeFileError
from ..core.geometry import Geometry, validate_factors
from ..core.memory import default_memory_limit, format_bytes, memory_bytes, physical_memory
from .precision import Window, WindowedSink, dtype_for_bits, full_range, robust_window
from ..core.progress import ProgressCallback, as_progress
from ..core.memory import default_threads
from .resample import DEFAULT_METHOD, check_method, choose_factors, logger, nan_note
from ..io.slab_writers import nrrd_header
from ..io.stacks import Roi, StackInfo, StackSlabReader, find_slices, probe_stack
from ..engine.sinks import NanCountingSink
from ..engine.stream import STREAMABLE_METHODS, StreamPlan, estimate_stream, stream_downsample, stream_to_file

WINDOW_SAMPLE_SLICES = 16


@dataclass
class StackImport:
    """An import planned from the slice headers; nothing decoded yet. ``run`` does the work."""

    info: StackInfo
    reader: StackSlabReader
    factors: tuple[float, float, float]
    method: str
    out_dtype: np.dtype
    bits: int | None
    notes: list[str] = field(default_factory=list)
    window: Window | None = None

    @property
    def output_geometry(self) -> Geometry:
        return self.reader.geometry.downsampled(self.factors)

    @property
    def output_bytes(self) -> int:
        return self.output_geometry.voxel_count * self.reader.components * self.out_dtype.itemsize

    def estimated_working_bytes(self, memory_limit: float) -> int:
        """Buffers of the streaming run besides the output: the streaming plan's own, plus one decoded slice per
        decoder thread."""
        return self._stream_plan(memory_limit).working_bytes + self.reader.threads * self.reader.slice_bytes

    def _stream_plan(self, memory_limit: float, threads: int | None = None) -> StreamPlan:
        return estimate_stream(self.reader, self.factors, self.method,
                               out_dtype=self.out_dtype if self.bits is None else np.float32,
                               threads=threads or self.reader.threads, memory_limit=memory_limit)

    def note_limit(self, memory_limit: float, threads: int | None = None, name=None) -> None:
        """Before the work, both doors: a limit the stream's buffers cannot keep is said (it was computed and said
        by neither; a run killed for memory then says why)."""
        note = self._stream_plan(memory_limit, threads).note
        if note:
            note = f"{name or self.info.files[0].parent}: {note}"
            if note not in self.notes:  # (a plan run twice)
                self.notes.append(note)
            logger.warning(note)

    def describe(self, memory_limit: float | None = None, with_notes: bool = True, to_file: bool = False) -> str:
        """The plan in words. ``to_file``: the import writes a file (the command line), so only the working buffers
        count; otherwise both figures (loaded into memory, as the Slicer panel does, or written to a file)."""
        limit = _limit(memory_limit)
        g = self.output_geometry
        working_bytes = self.estimated_working_bytes(limit)
        working = format_bytes(working_bytes)
        memory = (f"working memory about {working} (the output is written slice by slice, never held whole)"
                  if to_file else
                  f"peak memory about {format_bytes(self.output_bytes + working_bytes)} "
                  f"when loaded, {working} when written to a file")
        if working_bytes > limit:  # (a dry run showed 294 MiB beside a 244 MiB limit without a word)
            memory += f"; more than the memory limit {format_bytes(limit)}"
        text = (f"{self.info.describe()}\n"
                f"output {'x'.join(map(str, g.dimensions))}, spacing {' '.join(f'{s:g}' for s in g.spacing)}, "
                f"{format_bytes(self.output_bytes)} ({self.out_dtype}"
                f"{', RGB' if self.reader.components > 1 else ''}); {memory}")
        total = physical_memory()
        if total and self.output_bytes > 0.8 * total:
            text += f"\nwarning: the output ({format_bytes(self.output_bytes)}) will not fit in this machine's memory " \
                    f"({format_bytes(total)}): write it to a file, or downsample more"
        return "\n".join([text] + (self.notes if with_notes else []))

    def choose_window(self) -> Window | None:
        """For a bit-depth reduction: the robust intensity window of a sample of slices (decoded once)."""
        if self.bits is None:
            return None
        if self.window is None:
            depth = self.reader.slices
            picks = sorted(set(np.linspace(0, depth - 1, min(WINDOW_SAMPLE_SLICES, depth)).round().astype(int)))
            sample = [self.reader.read(k, k + 1)[0][::4, ::4] for k in picks]
            self.window = robust_window(np.stack(sample))
        return self.window

    def run(self, sink, *, memory_limit: float | None = None, threads: int | None = None,
            progress: ProgressCallback | None = None) -> StreamPlan:
        """Decode, crop, convert and downsample every slice in order, handing output slices to ``sink.write``. As
        ``import_stack``: the NaN note joins ``notes``, the window's clipped voxels the returned plan
        (``window_note``)."""
        counting = _CountingSinks(self, self.choose_window())
        self.note_limit(_limit(memory_limit), threads or default_threads())
        stream_plan = stream_downsample(self.reader, self.factors, self.method, counting.wrap(sink),
                                        out_dtype=self.out_dtype if counting.window is None else np.float32,
                                        threads=threads or default_threads(),
                                        memory_limit=_limit(memory_limit), progress=progress)
        counting.finish(stream_plan)
        return stream_plan

    def window_note(self, stream_plan: StreamPlan | None) -> str | None:
        """What a run's bit-depth reduction did: its output type, window and clipped voxels (None without one)."""
        if self.window is None or stream_plan is None:
            return None
        clipped, total = stream_plan.clipped_voxels or 0, self.output_geometry.voxel_count
        return (f"{self.out_dtype}, window {self.window.low:.6g} .. {self.window.high:.6g}, clipped {clipped} of "
                f"{total} voxels ({100 * clipped / max(1, total):.3f} %)")

    def close(self) -> None:
        self.reader.close()


def plan_stack_import(source, *, spacing=None, factor=1.0, roi=None, gray: str | None = "luminance",
                      bits: int | None = None, reverse: bool = False, method: str = DEFAULT_METHOD,
                      threads: int | None = None, check_all: bool = True, origin=None,
                      orientation=None) -> StackImport:
    """Find the slices, check their headers and plan the output.

    source: a folder, a glob, a printf pattern, one slice whose numbered siblings are the stack, or a list of
    slice files (put in natural order too, with a note when that is not the order given; ``reverse`` turns it).
    spacing: (sx, sy, sz) in mm; default: the headers' pixel size (x, y) and z = x, with a note; 1 when the
    headers have none (with a note). factor: one or three (x, y, z) downsampling factors >= 1 (fractional
    allowed). roi: (x0, x1, y0, y1, z0, z1) half-open slice indices, or a Roi. gray: "luminance" (Rec. 709),
    "channel:N", or None/"keep" to keep RGB. bits: 8 or 16 to reduce the bit depth through a robust window.
    orientation: a code from STACK_ORIENTATIONS (any valid code: the directions towards which i, j and k increase,
    in LPS) or a 3x3 direction matrix (columns); default LPS (identity). origin: the LPS position in mm of the
    centre of the stack's first pixel (column 0, row 0, first slice after ``reverse``); default (0, 0, 0). A ROI
    and downsampling move the output's origin along these directions (block-centred grid)."""
    check_method(method)
    if method not in STREAMABLE_METHODS:
        raise BigVolumeError(f"method {method} cannot stream; choose one of {', '.join(STREAMABLE_METHODS)}")
    try:
        slices = find_slices(source, reverse=reverse)
    except VolumeFileError:
        if isinstance(source, (str, os.PathLike)) and dicom.is_dicom(source):
            raise BigVolumeError(f"{source}: a DICOM series, which carries its own geometry: read it as a volume "
                                 "(bigvolume resample, dehaze, reduce-bits and preview take its folder or any one "
                                 "of its files)") from None
        raise
    info = probe_stack(slices, check_all=check_all)
    notes = []
    if slices.reordered:
        notes.append("the slices listed were put in natural order (by the numbers in their names), not the order "
                     "given")
    if slices.gaps:
        notes.append(f"gaps in the slice numbering: {slices.describe_gaps()} missing")
    if info.min_is_white:
        notes.append("the slices are MinIsWhite TIFFs (0 is white): imported with their stored values, not inverted "
                     "(dark where viewers show them light)")
    if slices.repeats:
        notes.append(f"slice numbers repeat: {slices.describe_repeats()}; two stacks in one folder? (give the "
                     "slices as a pattern or list to choose)")
    if slices.skipped:
        names = ", ".join(p.name for p in slices.skipped[:5]) + (" ..." if len(slices.skipped) > 5 else "")
        notes.append(f"skipped {len(slices.skipped)} file(s) that are not slices of this stack: {names}")
    if spacing is None:
        if info.pixel_spacing is None:
            spacing = (1.0, 1.0, 1.0)
            what = ("BMP headers give pixels per metre, mostly a screen default, which is not read"
                    if info.files[0].suffix.lower() == ".bmp" else "the slice headers carry no pixel size")
            notes.append(f"{what}: spacing 1 x 1 x 1 assumed (give the real spacing)")
        elif info.slice_spacing is not None:
            spacing = (*info.pixel_spacing, info.slice_spacing)
            notes.append(f"spacing {spacing[0]:g} x {spacing[1]:g} x {spacing[2]:g} mm from {info.spacing_source}")
        else:
            spacing = (*info.pixel_spacing, info.pixel_spacing[0])
            notes.append(f"spacing {spacing[0]:g} x {spacing[1]:g} from {info.spacing_source}; slice spacing assumed "
                         f"{spacing[2]:g} (give it if it differs)")
    if roi is not None:
        roi = Roi.of(roi)
    reader = StackSlabReader(info, spacing, roi, gray, threads=threads or default_threads(), origin=origin,
                             orientation=orientation)
    try:
        factors = choose_factors(reader.geometry, reader.dtype.itemsize, factor)
        out_dtype = reader.dtype if bits is None else dtype_for_bits(bits)
        if bits is not None and reader.components > 1:
            raise BigVolumeError("bit-depth reduction works on gray slices; choose gray luminance or channel:N")
    except BaseException:
        reader.close()
        raise
    for note in notes:
        logger.warning(note)
    return StackImport(info, reader, factors, method, np.dtype(out_dtype), bits, notes)


@dataclass
class StackImportReport:
    output_path: Path
    plan: StackImport
    stream_plan: StreamPlan | None
    zero_copy: bool
    seconds: float

    def summary(self) -> str:
        g = self.plan.output_geometry
        if self.zero_copy:
            size = f"a header of {format_bytes(self.output_path.stat().st_size)}"
            how = (f"it points into the slice files ({format_bytes(io.file_size(self.output_path))} with the header; "
                   "no pixel copied)")
        else:
            size = f"{format_bytes(io.file_size(self.output_path))} on disk"
            how = self.stream_plan.describe() if self.stream_plan else ""
        window = self.plan.window_note(self.stream_plan)
        if window is not None:
            how += f"; {window}"
        return (f"{self.output_path}: {self.plan.info.depth} slices -> {'x'.join(map(str, g.dimensions))}, "
                f"spacing {' '.join(f'{s:g}' for s in g.spacing)}, {size}, {self.seconds:.2f} s; {how}")


class _CountingSinks:
    """What both import paths (into a file, into the caller's array) put before the output: the bit-depth window,
    counting the voxels it clips, and for float slices a NaN count (a NaN spreads over the kernel: an output largely
    NaN is said, not left to be found). ``finish`` records what they counted: the clipped voxels in the stream plan,
    the NaN note in the import's notes (and the log)."""

    def __init__(self, plan: StackImport, window: Window | None):
        self.plan, self.window = plan, window
        self.windowed = self.nan = None

    def wrap(self, writer):
        if self.window is not None:
            writer = self.windowed = WindowedSink(writer, self.window, self.plan.out_dtype)
        if self.plan.reader.dtype.kind == "f":
            writer = self.nan = NanCountingSink(writer)
        return writer

    def finish(self, stream_plan: StreamPlan) -> None:
        if self.windowed is not None:
            stream_plan.clipped_voxels = self.windowed.clipped
        if self.nan is not None and self.nan.nan:
            note = nan_note(self.nan.nan, self.nan.voxels, self.plan.method)
            if self.window is not None:
                note += (f"; with --bits they are written as {full_range(self.plan.out_dtype)[0]}, the bottom of the "
                         "range")
            if note not in self.plan.notes:  # (a plan run twice)
                self.plan.notes.append(note)
            logger.warning(note)


def _limit(memory_limit) -> int:
    """Bytes (or a size text) given, else the automatic limit."""
    return memory_bytes(memory_limit) if memory_limit is not None else default_memory_limit()


def check_nhdr_only(output_path, factor, bits) -> None:
    """``nhdr_only`` writes the slices at full resolution, as they are: a factor or bits would be dropped (they
    were, silently, while a dry run planned them)."""
    if io.volume_suffix(Path(output_path)) != ".nhdr":
        raise BigVolumeError(f"{output_path}: the full-resolution streamable header is a .nhdr file")
    if bits is not None or np.any(np.asarray(validate_factors(factor)) != 1.0):
        raise BigVolumeError("--nhdr-only writes the slices at full resolution, as they are: leave out --factor and "
                             "--bits, or import without --nhdr-only")


def import_stack(source, output_path, *, spacing=None, factor=1.0, roi=None, gray: str | None = "luminance",
                 bits: int | None = None, reverse: bool = False, method: str = DEFAULT_METHOD,
                 threads: int | None = None, memory_limit: float | None = None, compress: bool | None = None,
                 nhdr_only: bool = False, origin=None, orientation=None,
                 progress: ProgressCallback | None = None) -> StackImportReport:
    """Import a stack into ``output_path`` (.nrrd, .nhdr, .nii, .nii.gz). ``nhdr_only``: write the full-resolution
    streamable NHDR (zero-copy when the slices allow it) and nothing else. See plan_stack_import for the rest."""
    started = time.perf_counter()
    output_path = Path(output_path)
    io.check_output_path(output_path)
    if nhdr_only:
        check_nhdr_only(output_path, factor, bits)
    plan = plan_stack_import(source, spacing=spacing, factor=factor, roi=roi, gray=gray, bits=bits, reverse=reverse,
                             method=method, threads=threads, origin=origin, orientation=orientation)
    try:
        if nhdr_only and write_zero_copy_nhdr(plan, output_path):
            return StackImportReport(output_path, plan, None, True, time.perf_counter() - started)
        progress = as_progress(progress)
        counting = _CountingSinks(plan, plan.choose_window())
        plan.note_limit(_limit(memory_limit), name=source)
        stream_plan = stream_to_file(plan.reader, output_path, plan.factors, plan.method, out_dtype=plan.out_dtype,
                                     threads=plan.reader.threads, compress=compress,
                                     memory_limit=_limit(memory_limit), progress=progress,
                                     wrap_sink=counting.wrap,
                                     filter_dtype=None if counting.window is None else np.float32)
        counting.finish(stream_plan)
    finally:
        plan.close()
    return StackImportReport(output_path, plan, stream_plan, False, time.perf_counter() - started)


class _NotZeroCopy(Exception):
    """Why the slice files cannot be listed in an NHDR as they are (the message ends the note)."""


def _tiff_pixel_block(path: Path, dtype: np.dtype, components: int) -> tuple[int, str]:
    """(offset, byte order) of a single-page TIFF's pixels when they are exactly what the import decodes
    (``components`` x ``dtype`` per pixel, row by row from the top, uncompressed, in one contiguous block);
    otherwise _NotZeroCopy says why."""
    import tifffile
    try:
        with tifffile.TiffFile(path) as tiff:
            if len(tiff.pages) != 1:
                raise _NotZeroCopy("has several pages")
            page = tiff.pages[0]
            if page.compression != 1:
                raise _NotZeroCopy("is compressed")
            if page.is_tiled:
                raise _NotZeroCopy("is tiled")
            if page.samplesperpixel > 1 and page.planarconfig not in (1, None):
                raise _NotZeroCopy("stores one plane per sample")
            # palette, 1-bit, gray + alpha...: SimpleITK decodes something else than the stored samples
            if page.photometric == 3:  # (a gray colour map gives one channel of the stored type: indices != colours)
                raise _NotZeroCopy("is a palette image: the import gives its colours, the file stores indices")
            if page.samplesperpixel != components or page.dtype != dtype:
                raise _NotZeroCopy(f"stores {page.samplesperpixel} x {page.dtype} per pixel, the import decodes "
                                   f"{components} x {dtype}")
            orientation = page.tags.get(274)
            if orientation is not None and orientation.value != 1:  # SimpleITK flips such rows, an NHDR cannot
                raise _NotZeroCopy(f"has the TIFF orientation {orientation.value} (rows not top-down, left-right)")
            if page.fillorder != 1:  # libtiff reverses each byte's bits back, an NHDR cannot
                raise _NotZeroCopy(f"stores the bits of each byte in reverse order (FillOrder {page.fillorder})")
            offsets, counts = page.dataoffsets, page.databytecounts
            if not offsets or any(offsets[i] + counts[i] != offsets[i + 1] for i in range(len(offsets) - 1)):
                raise _NotZeroCopy("has its strips scattered through the file")  # one byte skip cannot say that
            needed = page.imagewidth * page.imagelength * components * dtype.itemsize
            if sum(counts) != needed or offsets[0] + needed > tiff.filehandle.size:
                raise _NotZeroCopy(f"does not hold the {needed} bytes of its pixels")
            return int(offsets[0]), tiff.byteorder
    except (tifffile.TiffFileError, OSError, ValueError) as error:
        raise VolumeFileError(f"{path}: cannot read the TIFF structure ({error})") from None


def write_zero_copy_nhdr(plan: StackImport, output_path: Path) -> bool:
    """Write an NHDR listing the original slice files when they allow it (uncompressed TIFFs of the decoded samples,
    one contiguous pixel block, same offset and byte order everywhere, whole slices, no gray conversion); otherwise
    note why and return False (the caller writes a raw copy)."""
    reader = plan.reader

    def cannot(reason: str) -> bool:
        logger.warning(f"no zero-copy NHDR: {reason}; writing a raw copy of the slices")
        return False
    if reader.gray != "keep":
        return cannot(f"the slices are converted to gray ({reader.gray})")
    if reader.roi.size[:2] != (plan.info.width, plan.info.height):
        return cannot("the slices are cropped")
    files = plan.info.files[reader.roi.z0:reader.roi.z1]
    if any(p.suffix.lower() not in (".tif", ".tiff") for p in files):
        return cannot("only TIFF slices can be listed")
    try:
        import tifffile  # noqa: F401  (optional: without it the NHDR gets its own raw copy)
    except ImportError:
        return cannot("tifffile is not installed")
    blocks = {}
    for path in files:
        try:
            blocks[path] = _tiff_pixel_block(path, reader.dtype, reader.components)
        except _NotZeroCopy as why:
            return cannot(f"{path} {why}")
    if len(set(blocks.values())) > 1:
        return cannot("the pixels start at different offsets (or byte orders) in different slices")
    offset, byte_order = blocks[files[0]]
    folder = output_path.parent if str(output_path.parent) else Path(".")
    names = []
    for path in files:
        try:
            relative = os.path.relpath(path.resolve(), folder.resolve())
        except ValueError:  # another drive or share (Windows): teem takes only names starting with / as absolute
            return cannot("the slices are on another drive than the NHDR")
        if relative.startswith("..") and os.name != "nt":
            names.append(path.resolve().as_posix())
        else:  # forward slashes: the header reads on every system (teem on Windows takes them too)
            names.append(Path(relative).as_posix())
    # each file holds one slice: a 2-D piece, or 3-D with the RGB samples' axis
    pieces = 2 if reader.components == 1 else 3
    header = nrrd_header(reader.geometry, reader.dtype, reader.components, "raw", data_file=f"LIST {pieces}",
                         endian="little" if byte_order == "<" else "big", byte_skip=offset)
    with io.atomic_output(output_path) as staging:
        staging.write_bytes(header + ("\n".join(names) + "\n").encode("utf-8"))
    return True
