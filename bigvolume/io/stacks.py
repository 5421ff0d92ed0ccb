"""Image stacks (one 2D TIFF/PNG/JPEG/BMP file per slice): finding the slices, checking them from their headers,
and reading them slab by slab with crop, grayscale conversion and a parallel decoder, as a SlabReader that the
streaming resampler (bigvolume.engine.stream) consumes like any volume file.
"""
from __future__ import annotations

import contextlib
import glob as globbing
import re
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

from ..core.errors import BigVolumeError, VolumeFileError
from ..core.geometry import Geometry, orientation_direction, orthonormal
from .files import readable_reason
from .library_output import LIBJPEG_DAMAGE, give_back, library_quiet, output_captured, refuse_jpeg_damage
from .slab_readers import SlabReader
from .tiff_tags import (ASSOCIATED_ALPHA, JPEG, MIN_IS_BLACK, MIN_IS_WHITE, OLD_JPEG, PACKBITS, PALETTE, RGB,
                        SEPARATED, UNASSOCIATED_ALPHA, YCBCR, TiffLayout, deflate_damage, exif_orientation,
                        imagej_calibration, imagej_images, tiff_layout)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
# Files that sit among the slices but are not slices: Skyscan/Bruker reconstruction aids (spr = spot reference).
NOT_SLICES = re.compile(r"(spr\.bmp|_spr\.bmp|thumbs\.db)$", re.IGNORECASE)
LUMINANCE_WEIGHTS = (0.2126, 0.7152, 0.0722)  # Rec. 709
PRINTF_FIELD = re.compile(r"%(0?)(\d*)d")


# A slice number: digits, or a decimal (``z_0.25.tif``, a position in mm) read as one number so that 0.25 sorts
# before 0.5. Not a dotted run like ``1.2.3``, whose parts stay integers. Decimals of one width order alike
# either way; only mixed widths (0.25 and 0.5) need this. A minus after a separator is a sign (``z_-0.5``), one
# after a letter or digit is a separator (``scan-0001``).
SIGN = r"(?:(?<=[_\s=(\[])-|^-)?"
SLICE_NUMBER = re.compile(SIGN + r"(?<![\d.])\d+\.\d+(?!\.?\d)|" + SIGN + r"\d+")


def _number(text: str) -> int | Decimal:
    return Decimal(text) if "." in text else int(text)


def natural_key(path) -> list:
    """Sort key that orders ``s2`` before ``s10`` and ``z_0.25`` before ``z_0.5``."""
    # isdecimal/\d are ASCII-or-Unicode decimal digits, what int() reads: superscript two (U+00B2) is no number
    parts = SLICE_NUMBER.split(Path(path).name)
    numbers = SLICE_NUMBER.findall(Path(path).name)
    key: list = []
    for k, text in enumerate(parts):
        key.append(text.lower())
        if k < len(numbers):
            key.append(_number(numbers[k]))
    return key


def _is_slice_file(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
            and not NOT_SLICES.search(path.name))


def _numbering_key(name: str) -> str:
    """Names that differ only in their numbers share a key (``scan_0001.tif`` -> ``scan_#.tif``; ``z_0.5.tif``
    and ``z_1.tif`` -> ``z_#.tif``)."""
    return SLICE_NUMBER.sub("#", name.lower())


def _slice_number(name: str) -> int | Decimal | None:
    numbers = SLICE_NUMBER.findall(Path(name).stem)
    return _number(numbers[-1]) if numbers else None


@dataclass
class SliceList:
    files: list[Path]
    skipped: list[Path] = field(default_factory=list)          # files present but not taken as slices
    # the slice numbers on either side of each gap (a jump beyond the numbering's usual step)
    gaps: list[tuple[int | Decimal, int | Decimal]] = field(default_factory=list)
    repeats: list[list[Path]] = field(default_factory=list)    # slices that share a number (s1 and s01)
    decimal_numbers: bool = False                               # z_0.25.tif: positions, perhaps rounded
    step: int | Decimal = 1                                     # the usual step between slice numbers
    reordered: bool = False                                     # a list given out of natural order: sorted

    def describe_gaps(self) -> str:
        """The missing numbers (``4, 7-8``; ``6-12 in steps of 3``), or the numbers on either side of a gap where
        the missing ones cannot be told: rounded positions (not a guessed 1.666) or a jump off the step (9 to 13
        in steps of 3)."""
        parts = []
        for a, b in self.gaps:
            if self.decimal_numbers or (b - a) % self.step:
                parts.append(f"between {a} and {b}")
            else:
                low, high = a + self.step, b - self.step
                parts.append(f"{low}" if low == high else f"{low}-{high}" +
                             (f" in steps of {self.step}" if self.step != 1 else ""))
        return ", ".join(parts)

    def describe_repeats(self) -> str:
        shown = "; ".join(" and ".join(p.name for p in same) for same in self.repeats[:3])
        return shown + (f" (and {len(self.repeats) - 3} more)" if len(self.repeats) > 3 else "")


def _printf_regex(pattern: str) -> re.Pattern:
    parts = PRINTF_FIELD.split(pattern)
    regex, index = "", 0
    while index < len(parts):
        regex += re.escape(parts[index])
        if index + 2 < len(parts):
            zero, width = parts[index + 1], parts[index + 2]
            regex += rf"\d{{{width}}}" if zero and width else r"\d+"
        index += 3
    return re.compile(regex + "$")


def find_slices(source, reverse: bool = False) -> SliceList:
    """The slice files of ``source``: a folder, a glob (``"scans/*.tif"``), a printf pattern
    (``scans/rec_%04d.png``), a list of files, or one file whose numbered siblings are the stack. Natural order
    (or reversed), a list's too (``reordered`` says when that is not the order given); files with another naming
    pattern or that are not slices are skipped (and listed); gaps in the numbering are listed."""
    skipped: list[Path] = []
    given = None
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise VolumeFileError(f"{missing[0]}: no such slice file" + (f" (and {len(missing) - 1} more)"
                                                                         if len(missing) > 1 else ""))
        given = list(files)
        files.sort(key=natural_key)
    else:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            candidates = [p for p in path.iterdir() if p.is_file() or p.is_symlink()]
        elif path.is_file():  # an archetype: its siblings numbered the same way (even in a folder named "scan[1]")
            key = _numbering_key(path.name)
            candidates = [p for p in path.parent.iterdir() if _numbering_key(p.name) == key]
        elif PRINTF_FIELD.search(path.name):
            folder = path.parent
            if not folder.is_dir():
                raise VolumeFileError(f"{folder}: no such folder")
            matcher = _printf_regex(path.name)
            candidates = [p for p in folder.iterdir() if matcher.match(p.name)]
        elif any(c in text for c in "*?["):
            candidates = [Path(p) for p in globbing.glob(text)]
        else:
            raise VolumeFileError(f"{source}: no such file or folder")
        files = [p for p in candidates if _is_slice_file(p)]
        # (a link to nothing is listed too: a slice whose file went missing)
        skipped = [p for p in candidates if (p.is_file() or p.is_symlink()) and p not in files
                   and not p.name.startswith(".")]
        groups = Counter(_numbering_key(p.name) for p in files)
        if len(groups) > 1:  # several naming patterns: the stack is the largest group
            main_key = groups.most_common(1)[0][0]
            skipped += [p for p in files if _numbering_key(p.name) != main_key]
            files = [p for p in files if _numbering_key(p.name) == main_key]
        files.sort(key=natural_key)
    if not files:
        raise VolumeFileError(f"{source}: no image slices found ({', '.join(IMAGE_SUFFIXES)})")
    if reverse:
        files.reverse()
    numbers = [_slice_number(p.name) for p in files]
    decimal = any(isinstance(n, Decimal) for n in numbers)
    step, gaps = _gaps(numbers, decimal)
    return SliceList(files, sorted(skipped, key=natural_key), gaps, _repeats(files), decimal, step,
                     reordered=given is not None and files != given)


def _repeats(files: list[Path]) -> list[list[Path]]:
    """Files that share a slice number: zero-padded and plain numbers, or two series numbered alike."""
    by_number: dict[int | Decimal, list[Path]] = {}
    for path in files:
        number = _slice_number(path.name)
        if number is not None:
            by_number.setdefault(number, []).append(path)
    return [same for _, same in sorted(by_number.items()) if len(same) > 1]


def _gaps(numbers: list, decimal: bool) -> tuple[int | Decimal, list[tuple[int | Decimal, int | Decimal]]]:
    """The usual step between the slice numbers and the numbers on either side of each longer jump."""
    numbers = sorted(n for n in numbers if n is not None)
    if len(numbers) < 3:
        return 1, []
    steps = Counter(b - a for a, b in zip(numbers, numbers[1:]))
    step = steps.most_common(1)[0][0] or 1
    if decimal:  # positions are rounded (0.333, 0.667, 1.0): a gap is a missing step, not a jitter
        return step, [(a, b) for a, b in zip(numbers, numbers[1:]) if b - a >= step * Decimal("1.5")]
    return step, [(a, b) for a, b in zip(numbers, numbers[1:]) if b - a > step]


@dataclass
class StackInfo:
    """What the slice headers say (no pixel decoded)."""

    slices: SliceList
    width: int
    height: int
    dtype: np.dtype
    components: int
    pixel_spacing: tuple[float, float] | None  # from the headers (TIFF resolution, PNG pHYs...), None if absent
    slice_spacing: float | None = None          # from the headers too (ImageJ's "spacing="), None if absent
    spacing_source: str = "the headers"         # where the pixel size came from, for the notes
    min_is_white: bool = False                  # TIFFs whose 0 is white: read as stored, not inverted

    @property
    def files(self) -> list[Path]:
        return self.slices.files

    @property
    def depth(self) -> int:
        return len(self.slices.files)

    def describe(self) -> str:
        kind = f"{self.components}-component " if self.components > 1 else ""
        spacing = (f"pixel size {self.pixel_spacing[0]:g} x {self.pixel_spacing[1]:g} from {self.spacing_source}"
                   if self.pixel_spacing else "no pixel size in the headers")
        return f"{self.depth} slices of {self.width}x{self.height} {kind}{self.dtype}, {spacing}"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAY, PNG_GRAY_ALPHA = 0, 4  # IHDR colour types
PNG_METRE = 1                    # the pHYs unit of pixels per metre (0: an aspect ratio only)


def _png_chunks(path: Path, wanted: tuple[bytes, ...], past_pixels: bool = False) -> dict[bytes, bytes]:
    """The chunks named in ``wanted`` among those before a PNG's pixel data (IDAT), or in the whole file with
    ``past_pixels``; empty for anything else."""
    found: dict[bytes, bytes] = {}
    try:
        with open(path, "rb", buffering=0) as file:  # (a buffer re-read at each seek: 4x slower past the pixels)
            if file.read(8) != PNG_SIGNATURE:
                return found
            while len(head := file.read(8)) == 8:
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IDAT" and not past_pixels or kind == b"IEND":
                    break
                if kind in wanted:
                    found[kind] = file.read(length)
                else:
                    file.seek(length, 1)
                file.seek(4, 1)  # the chunk's CRC
    except OSError:
        pass
    return found


def _png_unreadable(path: Path) -> str | None:
    """Why SimpleITK could not read a valid PNG (it says "Unknown PixelType: unsigned_char(1)"), None if not known."""
    chunks = _png_chunks(path, (b"IHDR", b"tRNS"))
    colour_type = chunks[b"IHDR"][9] if len(chunks.get(b"IHDR", b"")) == 13 else None
    if colour_type == PNG_GRAY_ALPHA:
        return ("a PNG of gray + alpha samples, which SimpleITK cannot read; save the slices without the alpha "
                "channel (gray) or as RGBA")
    if colour_type == PNG_GRAY and b"tRNS" in chunks:  # libpng expands the transparent gray to gray + alpha
        return ("a gray PNG with a transparent colour (tRNS chunk), which SimpleITK reads as gray + alpha and cannot "
                "read; save the slices without transparency")
    return None


def _png_shifted(path: Path) -> str | None:
    """A PNG whose values its reader changes silently: an sBIT chunk giving fewer significant bits than the samples
    have (libpng, under SimpleITK, shifts the values down by the rest: 16-bit 128 with sBIT 12 reads 8), or gray
    samples of 2 or 4 bits (libpng scales them to 0-255: 4-bit 15 reads 255; 1-bit reads 0 and 255, a bilevel
    image, as a TIFF's does)."""
    chunks = _png_chunks(path, (b"IHDR", b"sBIT"))
    header, significant = chunks.get(b"IHDR", b""), chunks.get(b"sBIT", b"")
    if len(header) != 13:
        return None
    depth = header[8]
    if header[9] == PNG_GRAY and depth in (2, 4) and significant[:1] != bytes([depth]):
        return (f"a PNG of {depth}-bit gray samples, which its reader scales to 0-255 ({(1 << depth) - 1} would "
                f"read 255); save the slices as 8-bit")
    if not significant:
        return None
    if header[9] == 3:  # a palette: sBIT describes the palette's 8-bit colours, not the indices
        depth = 8
    if all(bits >= depth for bits in significant):
        return None
    shift = depth - min(significant)
    example = 1 << (depth - 1)  # the middle value, as stored and as read
    return (f"a PNG whose sBIT chunk says {'/'.join(map(str, significant))} significant bits of {depth}: its reader "
            f"shifts the values down by the rest ({example} would read {example >> shift}); save the slices without "
            "the sBIT chunk")


def _png_pixel_size(path: Path) -> tuple[float, float] | None:
    """The pixel size (x, y) in mm of a PNG's pHYs chunk (pixels per metre), which SimpleITK does not read."""
    data = _png_chunks(path, (b"pHYs",)).get(b"pHYs", b"")
    if len(data) != 9:
        return None
    per_metre_x, per_metre_y, unit = struct.unpack(">IIB", data)
    if unit != PNG_METRE or not per_metre_x or not per_metre_y:
        return None
    return 1000 / per_metre_x, 1000 / per_metre_y


BMP_ROWS_AS_STORED = (0, 3, 6)  # compressions BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: no run-length coding


BMP_BITFIELDS = 3
BMP_RUN_LENGTH = (1, 2)  # BI_RLE8, BI_RLE4
BMP_STANDARD_MASKS = (0x00FF0000, 0x0000FF00, 0x000000FF)  # red, green, blue of a 32-bit BI_BITFIELDS pixel


BMP_NEWER_HEADERS = {108: 4, 124: 5}  # header size: BMP version (with colour-space fields), which ITK cannot read


def _bmp_misread(path: Path) -> str | None:
    """A 32-bit BMP whose bit-field masks are not the usual ones: ITK's reader ignores the masks (red and blue
    swapped, silently). A version 4 or 5 BMP, which it cannot read at all ("no reader knows this kind of file")."""
    with open(path, "rb") as file:
        head = file.read(66)
    if len(head) >= 18 and head[:2] == b"BM" and struct.unpack("<I", head[14:18])[0] in BMP_NEWER_HEADERS:
        version = BMP_NEWER_HEADERS[struct.unpack("<I", head[14:18])[0]]
        return (f"a version {version} BMP (with colour-space information, as GIMP and ImageMagick write it), which "
                "SimpleITK's BMP reader cannot read; save the slices as TIFF or PNG, or as BMP without colour-space "
                "information (GIMP: Compatibility Options, Do not write color space information)")
    if len(head) >= 30 and head[:2] == b"BM" and struct.unpack("<I", head[14:18])[0] == 12 \
            and struct.unpack("<H", head[24:26])[0] <= 8:
        return ("an OS/2 BMP with a colour palette, whose 3-byte entries its reader takes as 4 (wrong colours); save "
                "the slices as PNG or TIFF")
    if len(head) >= 34 and head[:2] == b"BM" and struct.unpack("<I", head[14:18])[0] >= 40 \
            and struct.unpack("<I", head[30:34])[0] in BMP_RUN_LENGTH:
        return ("a run-length compressed BMP (RLE), whose reader leaves skipped pixels as whatever memory held and "
                "can write past its rows; save the slices uncompressed, or as PNG or TIFF")
    if len(head) < 66 or head[:2] != b"BM" or struct.unpack("<I", head[14:18])[0] < 40:  # masks at 54 from here on
        return None
    bits, compression = struct.unpack("<HI", head[28:34])
    masks = struct.unpack("<III", head[54:66])
    if bits == 32 and compression == BMP_BITFIELDS and masks != BMP_STANDARD_MASKS:
        return (f"a 32-bit BMP with the colour masks {', '.join(f'{m:#010x}' for m in masks)} (red, green, blue), "
                "which its reader ignores (colours swapped); save the slices as PNG or TIFF")
    return None


def _bmp_fourth_byte_unused(path: Path) -> bool:
    """A 32-bit BMP without an alpha mask (BI_RGB, or BI_BITFIELDS with three masks): its fourth byte is padding,
    which its reader gives as a fourth channel (often 0: all transparent)."""
    with open(path, "rb") as file:
        head = file.read(34)
    return (len(head) == 34 and head[:2] == b"BM" and struct.unpack("<I", head[14:18])[0] >= 40
            and struct.unpack("<H", head[28:30])[0] == 32 and struct.unpack("<I", head[30:34])[0] in (0, BMP_BITFIELDS))


def _bmp_truncation(path: Path, size: int) -> str | None:
    """A BMP shorter than its header says. Its decoder reads a short file without an error, leaving the missing
    rows as whatever memory held."""
    with open(path, "rb") as file:
        head = file.read(34)
    if len(head) < 26 or head[:2] != b"BM":
        return None
    declared, pixels_at, info_size = struct.unpack("<I4xII", head[2:18])
    if info_size == 12:  # the old OS/2 header: 16-bit width and height, no compression
        width, height, bits, compression = *struct.unpack("<HH2xH", head[18:26]), 0
    elif info_size >= 40 and len(head) == 34:
        width, height, bits, compression = struct.unpack("<ii2xHI", head[18:34])
    else:
        return None
    if compression in BMP_ROWS_AS_STORED:  # each row padded to 4 bytes
        needed = pixels_at + (bits * abs(width) + 31) // 32 * 4 * abs(height)
    else:
        needed = declared
    return f"the BMP needs {needed} bytes but has {size} (truncated?)" if size < needed else None


JPEG_END = b"\xff\xd9"  # the end-of-image marker


def _jpeg_truncation(path: Path, size: int) -> str | None:
    """A JPEG whose image never reaches its end-of-image marker. Its decoder fills the missing rows with gray (128)
    without an error. Most files end with the marker (zero padding allowed); others carry data after it (a camera's
    trailer, a second picture): for those the markers are walked from the start."""
    with open(path, "rb") as file:
        file.seek(max(size - 4096, 0))
        tail = file.read()
    if tail.rstrip(b"\0").endswith(JPEG_END):
        return None
    if _jpeg_end_offset(path.read_bytes()) is not None:
        return None
    return "the JPEG does not end with its end-of-image marker (FFD9): truncated?"


def _jpeg_segments(path: Path):
    """(marker, data) of a JPEG's header segments, up to its scan (within its first 256 KiB: an EXIF segment with
    its thumbnail takes up to 64)."""
    try:
        with open(path, "rb") as file:
            data = file.read(1 << 18)
    except OSError:
        return
    position = 2 if data[:2] == b"\xff\xd8" else len(data)
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker, length = data[position + 1], int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # the scan starts: the header segments are behind
            break
        yield marker, data[position + 4:position + 2 + length]
        position += 2 + length


def _jpeg_ycck(path: Path) -> str | None:
    """A JPEG whose Adobe segment says its four channels are YCCK (transform 2): its reader takes them for CMYK
    and the colours come out garbled."""
    for marker, segment in _jpeg_segments(path):
        if marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12 and segment[11] == 2:
            return ("a JPEG of YCCK colours (Adobe transform 2), which its reader takes for CMYK (garbled colours); "
                    "save the slices as RGB or gray")
    return None


EXIF_APP1 = 0xE1, b"Exif\0\0"  # the JPEG segment and its start that hold the EXIF block
# EXIF/TIFF Orientation values that mirror the picture: (rows reversed, columns reversed) to show it as meant
MIRRORED = {2: (False, True), 3: (True, True), 4: (True, False)}


def _exif_mirroring(path: Path) -> tuple[bool, bool] | None:
    """How to flip a JPEG or PNG slice to how its EXIF Orientation says it is seen (its reader ignores the tag;
    a TIFF's reader, libtiff, applies Orientation 2-4 itself): (rows reversed, columns reversed), None when
    already so. Orientation 5-8 (stored rotated or transposed) is refused, as in a TIFF."""
    suffix = path.suffix.lower()
    if suffix == ".png":  # (eXIf before the pixels by the PNG standard; some writers append it)
        block = _png_chunks(path, (b"eXIf",), past_pixels=True).get(b"eXIf")
    elif suffix in (".jpg", ".jpeg"):
        block = next((data[6:] for marker, data in _jpeg_segments(path)
                      if marker == EXIF_APP1[0] and data.startswith(EXIF_APP1[1])), None)
    else:
        return None
    orientation = exif_orientation(block) if block else 1
    if orientation in TIFF_TRANSPOSED:
        raise VolumeFileError(f"{path}: " + _transposed_text(suffix[1:].upper(), f"EXIF Orientation {orientation}",
                                                             "which the import does not turn"))
    return MIRRORED.get(orientation)


def _jpeg_end_offset(data: bytes) -> int | None:
    """Where the first image's end-of-image marker is, walking its segments and scans; None when the data stop
    before it. In a scan's coded data 0xFF is followed by 00 (a stuffed byte) or a restart marker D0-D7."""
    position = 2 if data[:2] == b"\xff\xd8" else None
    while position is not None and position + 2 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == 0xD9:
            return position
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
        elif position + 4 > len(data):
            return None
        else:
            position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
            if marker == 0xDA:  # start of scan: skip its coded data to the next real marker
                while True:
                    position = data.find(b"\xff", position)
                    if position < 0 or position + 1 >= len(data):
                        return None
                    following = data[position + 1]
                    if following == 0 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                        position += 1 if following == 0xFF else 2
                        continue
                    break
    return None


def _truncation(path: Path, layout: TiffLayout | None) -> str | None:
    """A slice cut short, found from its header and size: BMP and JPEG decoders do not say so, libtiff says it late
    (when the pixels are decoded) and on stderr."""
    if layout is not None:
        if layout.data_end > layout.file_size:
            return (f"the TIFF's pixel data end at byte {layout.data_end} but the file has {layout.file_size} bytes "
                    "(truncated?)")
        return None
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
        if suffix == ".bmp":
            return _bmp_truncation(path, size)
        if suffix in (".jpg", ".jpeg"):
            return _jpeg_truncation(path, size)
    except OSError:
        return None  # the reader says what is wrong
    return None


# TIFF codecs whose decoder, in libtiff, only warns of damaged data and returns what it made of them; and its words
# for damage (libtiff: "module: Warning, message.").
WARNING_ONLY_CODECS = {PACKBITS: "PackBits", OLD_JPEG: "JPEG", JPEG: "JPEG"}
DAMAGE_WARNING = re.compile(r"^(?:PackBitsDecode|JPEGLib): Warning, ((?:Discarding|Corrupt JPEG data)[^\n]*)\n?",
                            re.MULTILINE)


RGBA_FALLBACK_ADVICE = ("save the slices as plain (strip) TIFFs, e.g. with ImageJ's File > Save As > Image "
                        "Sequence")


TIFF_TRANSPOSED = (5, 6, 7, 8)  # Orientation values whose rows are the picture's columns


def _tiff_stored_otherwise(path: Path, layout: TiffLayout) -> str | None:
    """A TIFF whose first image is not the picture's raster as the readers give it: a preview first (its full
    image later in the file), rows stored as the picture's columns (Orientation 5-8: the readers mirror it but
    do not transpose it), or an ImageJ stack of several images behind one directory (the readers see the first)."""
    images = imagej_images(path)
    if images > 1:
        return (f"an ImageJ TIFF of {images} images (a stack in one file), of which SimpleITK reads only the first; "
                "save the stack as an image sequence (ImageJ: File > Save As > Image Sequence), one slice per file")
    if layout.reduced:
        return ("a TIFF whose first image is a reduced-resolution preview (NewSubfileType 1); save the slices with "
                "the full image first")
    if layout.orientation in TIFF_TRANSPOSED:
        return _transposed_text("TIFF", f"Orientation {layout.orientation}",
                                "which its reader would mirror without turning")
    return None


def _transposed_text(what: str, tag: str, why: str) -> str:
    return f"a {what} stored rotated or transposed ({tag}), {why}; save the slices as shown (Orientation 1, top-left)"


def _rgba_fallback_cause(layout: TiffLayout) -> str:
    """Why ITK hands a TIFF to libtiff's 8-bit RGBA reader, as far as its layout says (" (tiled, Orientation 2)")."""
    causes = (["tiled"] if layout.tiled else []) + (["one plane per sample"] if layout.planar != 1 else []) \
        + ([f"Orientation {layout.orientation}"] if layout.orientation != 1 else [])
    return f" ({', '.join(causes)})" if causes else ""


def _through_rgba_reader(layout: TiffLayout, components: int, dtype: np.dtype) -> bool:
    """Whether SimpleITK reads this TIFF (as ``components`` x ``dtype``) through libtiff's 8-bit RGBA reader: ITK
    does for the TIFFs it cannot read itself (tiled, planar, not 8/16/32-bit, mirrored...)."""
    return components == 4 and dtype == np.uint8 and (
        layout.tiled or layout.planar != 1 or (layout.samples, layout.bits, layout.sample_format) != (4, 8, 1)
        or layout.photometric == SEPARATED)  # (CMYK strips too)


def rgba_fallback_channels(layout: TiffLayout) -> int | None:
    """The channels of libtiff's 8-bit RGBA reading that are the TIFF's own samples, or None when that reading
    changes them. Kept: 8-bit gray (1 channel), RGB (3), RGB with associated alpha (4), YCbCr as RGB (3, the
    colour conversion every viewer makes), 1-bit gray as 0 and 255 (1). The reader gives 4 channels for each."""
    if layout.sample_format != 1 or layout.bits not in (1, 8):
        return None
    if layout.bits == 1:
        return 1 if (layout.photometric, layout.samples) == (MIN_IS_BLACK, 1) else None
    return {(MIN_IS_BLACK, 1, ()): 1, (RGB, 3, ()): 3, (RGB, 4, (ASSOCIATED_ALPHA,)): 4,
            (YCBCR, 3, ()): 3}.get((layout.photometric, layout.samples, layout.extra_samples))


def _rgba_fallback_change(layout: TiffLayout) -> tuple[str, str]:
    """(what libtiff's 8-bit RGBA reading does to samples that rgba_fallback_channels does not keep, what to do)."""
    if layout.bits > 8 or layout.sample_format == 3:
        return "lose its values", RGBA_FALLBACK_ADVICE
    if layout.sample_format == 2:
        return "lose their sign", RGBA_FALLBACK_ADVICE
    if layout.photometric == MIN_IS_WHITE:
        return "invert its values", "save the slices as 8-bit gray (MinIsBlack) TIFFs"
    if layout.photometric == PALETTE:
        return "cut its colour map to 8 bits", "save the slices as 8-bit palette strips, or as RGB or gray"
    if layout.bits < 8 and layout.bits != 1:
        return f"scale its {layout.bits}-bit values to 0-255", "save the slices as 8-bit TIFFs"
    if layout.photometric == SEPARATED:
        return "convert its CMYK inks to RGB", "convert the slices to RGB or gray"
    if UNASSOCIATED_ALPHA in layout.extra_samples:
        return "multiply its colours by alpha", "save the slices without the alpha channel"
    return (f"turn its {layout.samples} samples per pixel into red, green, blue and alpha",
            "save them as gray (one sample per pixel) or RGB strips")


def _tiff_misread(layout: TiffLayout, components: int, dtype: np.dtype) -> str | None:
    """Why SimpleITK's reading of a TIFF (as ``components`` x ``dtype``) would not give the samples it stores; None
    when it gives them (or converts them as intended: a palette's colours, a bilevel image's 0 and 255)."""
    stored = layout.describe_samples()
    if _through_rgba_reader(layout, components, dtype):
        if rgba_fallback_channels(layout) is not None:
            return None
        change, advice = _rgba_fallback_change(layout)
        return (f"a TIFF of {stored} samples{_rgba_fallback_cause(layout)}, which SimpleITK reads only through "
                f"libtiff's 8-bit RGBA reader: it would {change}; {advice}")
    if layout.photometric == PALETTE:
        return None  # ITK gives the colour map's 16-bit colours (RGB, or gray when the map is gray)
    if layout.samples != components:
        if layout.samples == 2 and layout.extra_samples:
            what, advice = "gray + alpha samples (2 per pixel)", "save the slices without the alpha channel (gray)"
        else:
            what, advice = f"{layout.samples} samples per pixel", "save them as gray (one sample per pixel) or RGB"
        channels = "one channel" if components == 1 else f"{components} channels"
        return f"a TIFF of {what}, which SimpleITK reads as {channels} of interleaved samples; {advice}"
    if layout.dtype is not None and layout.dtype != dtype:
        advice = ("convert the slices to 32-bit float" if layout.dtype == np.float16 else
                  "convert the slices to a type SimpleITK reads (8, 16, 32-bit integer or 32-bit float)")
        return f"a TIFF of {stored} samples, which SimpleITK reads as {dtype}; {advice}"
    return None


def _slice_header(path: Path):
    """((width, height, dtype, components), pixel spacing, MinIsWhite) of one slice from its header; slices cut
    short or that SimpleITK would misread are refused."""
    import SimpleITK as sitk
    layout = tiff_layout(path) if path.suffix.lower() in (".tif", ".tiff") else None
    truncated = _truncation(path, layout)
    if truncated:
        raise VolumeFileError(f"{path}: {truncated}")
    suffix = path.suffix.lower()
    _exif_mirroring(path)  # (refuses a JPEG or PNG stored transposed)
    misread = (_png_shifted(path) if suffix == ".png" else _bmp_misread(path) if suffix == ".bmp" else
               _jpeg_ycck(path) if suffix in (".jpg", ".jpeg") else
               _tiff_stored_otherwise(path, layout) if layout is not None else None)
    if misread:
        raise VolumeFileError(f"{path}: {misread}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with library_quiet():  # ITK's TIFF fallback warning, libtiff's: we say it in our words below
            reader.ReadImageInformation()
    except RuntimeError as error:
        why = (_png_unreadable(path) if path.suffix.lower() == ".png" else
               _tiff_unreadable(layout) if layout is not None else None)
        raise VolumeFileError(f"{path}: {why or f'not a readable image ({readable_reason(error)})'}") from None
    size = reader.GetSize()
    if len(size) == 3 and size[2] != 1:
        raise VolumeFileError(f"{path}: has {size[2]} pages or slices; a stack of single 2D images is expected")
    components = reader.GetNumberOfComponents()
    dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID(), components)).dtype)
    misread = _tiff_misread(layout, components, dtype) if layout is not None else None
    if misread:
        raise VolumeFileError(f"{path}: {misread}")
    if layout is not None and _through_rgba_reader(layout, components, dtype):
        components = rgba_fallback_channels(layout)  # its own samples; the decoder drops the rest
    elif suffix == ".bmp" and components == 4 and _bmp_fourth_byte_unused(path):
        components = 3  # (the reader gives the pad byte as a fourth channel: dropped)
    min_is_white = layout is not None and layout.photometric == MIN_IS_WHITE  # (its stored values are read)
    return (int(size[0]), int(size[1]), dtype, components), reader.GetSpacing()[:2], min_is_white


# TIFF codecs newer than SimpleITK's libtiff: its reader then knows no TIFF at all ("no reader knows this kind of file")
# or fails at the pixels.
NEWER_TIFF_CODECS = {34712: "JPEG 2000", 34887: "LERC", 34925: "LZMA", 34933: "PNG", 34934: "JPEG XR",
                     50000: "ZSTD", 50001: "WebP", 50002: "JPEG XL", 52546: "JPEG XL"}


def _tiff_unreadable(layout: TiffLayout, header: bool = True) -> str | None:
    """Why SimpleITK cannot read a TIFF, when its layout says: a codec newer than its libtiff, or (for a header
    that failed, ``header``) samples that ITK hands to libtiff's 8-bit RGBA reader (tiled, planar, mirrored) and
    that reader refuses (32-bit). Pixels that fail otherwise are damaged: the reader's words say it better."""
    codec = NEWER_TIFF_CODECS.get(layout.compression)
    if codec is not None:
        return (f"a TIFF compressed with {codec}, which SimpleITK's TIFF reader cannot decode; save the slices "
                "uncompressed, or with LZW or Deflate")
    cause = _rgba_fallback_cause(layout) if header else ""
    if cause:
        return (f"a TIFF of {layout.describe_samples()} samples{cause}, which SimpleITK reads only through libtiff's "
                f"8-bit RGBA reader, and that cannot read them; {RGBA_FALLBACK_ADVICE}")
    return None


def _check_decodable(path: Path) -> None:
    """The slice's pixels decoded once: a header can be read where its codec cannot (a TIFF compressed with LZMA,
    ZSTD or WebP, which SimpleITK's libtiff lacks), and --dry-run would have promised an import that fails."""
    import SimpleITK as sitk
    try:
        with library_quiet(), output_captured(1) as printed:  # (libjpeg's words come on stdout)
            sitk.ReadImage(str(path))
    except RuntimeError as error:
        layout = tiff_layout(path) if path.suffix.lower() in (".tif", ".tiff") else None
        why = _tiff_unreadable(layout, header=False) if layout is not None else None
        raise VolumeFileError(f"{path}: {why or f'cannot decode ({readable_reason(error)})'}") from None
    refuse_jpeg_damage(path, printed.text, 1)
    if path.suffix.lower() in (".tif", ".tiff"):
        _refuse_deflate_damage(path, tiff_layout(path))


def _refuse_deflate_damage(path: Path, layout: TiffLayout | None, decoded: np.ndarray | None = None) -> None:
    damage = deflate_damage(path, layout, decoded) if layout is not None else None
    if damage:
        raise VolumeFileError(f"{path}: {damage}; the slice would be read garbled")


PIXEL_SIZE_RTOL = 1e-4  # slices whose header pixel sizes differ more are not one stack


def _lengths_text(lengths) -> str:
    """``0.2 x 0.2 mm`` for a pixel size, ``3 mm`` for a slice spacing."""
    return "none given" if lengths is None else " x ".join(f"{v:.6g}" for v in np.atleast_1d(lengths)) + " mm"


def _tidy(values) -> tuple[float, ...]:  # TIFF stores resolution as a rational: 0.25000000375 -> 0.25
    return tuple(float(f"{v:.7g}") for v in values)


def _header_spacing(path: Path, reader_spacing) -> tuple[tuple[float, float] | None, float | None, str]:
    """(pixel size (x, y), slice spacing, where from) in mm as a slice's headers give them, None where they give
    none: ImageJ's calibration first (SimpleITK reads its pixel size only in inch and cm, its slice spacing never),
    then the reader's (``reader_spacing``), then a PNG's pHYs chunk (which SimpleITK does not read)."""
    calibration = imagej_calibration(path) if path.suffix.lower() in (".tif", ".tiff") else None
    if calibration is not None:
        pixel, between = calibration
        return _tidy(pixel), _tidy([between])[0] if between else None, "ImageJ's calibration in the TIFF"
    if _tidy(reader_spacing) != (1.0, 1.0):  # readers report 1 when the file says nothing
        return _tidy(reader_spacing), None, "the headers"
    pixel = _png_pixel_size(path) if path.suffix.lower() == ".png" else None
    return (None, None, "the headers") if pixel is None else (_tidy(pixel), None, "the PNG's pHYs chunk")


def _same_length(a, b) -> bool:
    return a == b or a is not None and b is not None and np.allclose(a, b, rtol=PIXEL_SIZE_RTOL, atol=0)


def _zero_text(min_is_white: bool) -> str:
    return "MinIsWhite (0 is white)" if min_is_white else "MinIsBlack (0 is black)"


def probe_stack(slices: SliceList, check_all: bool = True) -> StackInfo:
    """Read the first slice's header and check every other slice's header (not its pixels) against it: size, type,
    components, MinIsWhite, pixel size and slice spacing; slices that differ are named. With ``check_all``, the
    first slice is decoded too."""
    first, reader_spacing, min_is_white = _slice_header(slices.files[0])
    pixel, between, source = _header_spacing(slices.files[0], reader_spacing)
    if check_all:
        _check_decodable(slices.files[0])
        odd = []
        for path in slices.files[1:]:
            layout, its_reader_spacing, its_white = _slice_header(path)
            its_pixel, its_between, _ = _header_spacing(path, its_reader_spacing)
            if layout != first:
                odd.append(f"{path.name} is {_describe_layout(layout)}")
            elif its_white != min_is_white:  # stored values are read: one kind would come out inverted
                odd.append(f"{path.name} is {_zero_text(its_white)}, the first {_zero_text(min_is_white)}")
            elif not _same_length(its_pixel, pixel):
                odd.append(f"{path.name} has pixels of {_lengths_text(its_pixel)}, the first {_lengths_text(pixel)}")
            elif not _same_length(its_between, between):
                odd.append(f"{path.name} has a slice spacing of {_lengths_text(its_between)}, the first "
                           f"{_lengths_text(between)}")
        if odd:
            more = f" (and {len(odd) - 3} more)" if len(odd) > 3 else ""
            raise VolumeFileError(f"{slices.files[0].parent}: slices differ from the first "
                                  f"({slices.files[0].name}: {_describe_layout(first)}): {'; '.join(odd[:3])}{more}")
    width, height, dtype, components = first
    return StackInfo(slices, width, height, dtype, components, pixel, between, source, min_is_white)


def _describe_layout(layout) -> str:
    width, height, dtype, components = layout
    return f"{width}x{height} {dtype}" + (f" x{components}" if components > 1 else "")


@dataclass(frozen=True)
class Roi:
    """A box of slice indices, half-open like Python slices: columns x0..x1-1, rows y0..y1-1, slices z0..z1-1."""

    x0: int
    x1: int
    y0: int
    y1: int
    z0: int
    z1: int

    @classmethod
    def of(cls, values) -> "Roi":
        """(x0, x1, y0, y1, z0, z1) given as numbers: whole ones (10.0 is 10; 10.5 was cut to 10 silently)."""
        if isinstance(values, cls):
            return values
        values = tuple(values)
        if len(values) != 6:
            raise BigVolumeError(f"ROI must be (x0, x1, y0, y1, z0, z1) slice indices, got {values}")
        edges = []
        for value in values:
            try:
                whole = float(value).is_integer() and not isinstance(value, bool)
            except (TypeError, ValueError):
                whole = False
            if not whole:
                raise BigVolumeError(f"ROI edges are whole slice indices (x0, x1, y0, y1, z0, z1), got {values}")
            edges.append(int(float(value)))
        return cls(*edges)

    @classmethod
    def whole(cls, info: StackInfo) -> "Roi":
        return cls(0, info.width, 0, info.height, 0, info.depth)

    def check(self, info: StackInfo) -> "Roi":
        limits = (info.width, info.height, info.depth)
        for axis, (low, high), limit in zip("xyz", ((self.x0, self.x1), (self.y0, self.y1), (self.z0, self.z1)),
                                            limits):
            if not 0 <= low < high <= limit:
                raise BigVolumeError(f"ROI {axis} {low}..{high} is outside the stack's 0..{limit} (or empty)")
        return self

    @property
    def size(self) -> tuple[int, int, int]:
        return self.x1 - self.x0, self.y1 - self.y0, self.z1 - self.z0


def parse_gray(gray: str | None, components: int) -> tuple[str, int | None]:
    """("keep", None), ("luminance", None) or ("channel", N) for the ``gray`` option. Gray slices are kept as they
    are (luminance, the default, and channel 0 are what they hold); another channel of them does not exist."""
    match = re.fullmatch(r"channel:(\d+)", str(gray))
    if gray not in (None, "keep", "luminance") and not match:  # (a typo passed on gray slices)
        raise BigVolumeError(f"gray must be 'luminance', 'channel:N' or 'keep', got {gray!r}")
    if components == 1:
        if match and int(match.group(1)) > 0:
            raise BigVolumeError(f"channel {match.group(1)} does not exist: the slices are gray (one channel)")
        return "keep", None
    if gray in (None, "keep"):
        return "keep", None
    if gray == "luminance":
        if components < 3:
            raise BigVolumeError(f"luminance needs RGB slices; these have {components} components (use channel:N)")
        return "luminance", None
    channel = int(match.group(1))
    if channel >= components:
        raise BigVolumeError(f"channel {channel} does not exist: the slices have {components} components")
    return "channel", channel


# Orientations offered for a stack (the panel's list; any valid code is accepted), the default first. Each code
# names the direction towards which i (columns, left to right), j (rows, top to bottom) and k (slices, in file order)
# increase, in the LPS frame (see bigvolume.core.geometry.orientation_direction). LPS: the identity matrix, what a stack
# gets when nothing is said. LPS/LPI: axial slices seen from the feet (radiological view), slice order towards the
# head / the feet; LIP/LIA: coronal slices; PIL/PIR: sagittal slices, face on the left.
STACK_ORIENTATIONS = ("LPS", "LPI", "LAS", "LAI", "RPS", "RPI", "RAS", "RAI", "LIP", "LIA", "RIP", "RIA",
                      "PIL", "PIR", "AIL", "AIR")
DEFAULT_STACK_ORIENTATION = STACK_ORIENTATIONS[0]


def stack_direction(orientation=None) -> np.ndarray:
    """A stack's direction matrix from an orientation code (see STACK_ORIENTATIONS), a 3x3 matrix (columns: the i,
    j, k unit vectors in LPS) or None (the default, LPS: identity)."""
    if orientation is None:
        orientation = DEFAULT_STACK_ORIENTATION
    try:
        if isinstance(orientation, str):
            return orientation_direction(orientation)
        direction = np.asarray(orientation, dtype=float).reshape(3, 3)
    except ValueError as error:
        raise BigVolumeError(str(error) if isinstance(orientation, str)
                             else f"direction needs 9 numbers (3x3), got {np.size(orientation)}") from None
    if not orthonormal(direction):
        raise BigVolumeError("direction: the three columns must be orthogonal unit vectors")
    return direction


def stack_origin(origin=None) -> tuple[float, float, float]:
    """The physical position (LPS, mm) of the centre of the stack's first pixel; default (0, 0, 0)."""
    if origin is None:
        return (0.0, 0.0, 0.0)
    values = tuple(float(v) for v in np.ravel(origin))
    if len(values) != 3 or not all(np.isfinite(values)):
        raise BigVolumeError(f"origin needs three finite numbers (x y z in LPS, mm), got {origin}")
    return values  # type: ignore[return-value]


class StackSlabReader(SlabReader):
    """Slices of a stack as a volume: ROI applied while reading (the reader extracts only the ROI's rows and
    columns), converted to gray if asked, decoded by ``threads`` workers in parallel."""

    def __init__(self, info: StackInfo, spacing, roi: Roi | None = None, gray: str | None = None,
                 threads: int = 2, origin=None, orientation=None):
        self.info = info
        self.roi = (roi or Roi.whole(info)).check(info)
        self.gray, self.channel = parse_gray(gray, info.components)
        components = info.components if self.gray == "keep" else 1
        try:
            spacing = tuple(float(s) for s in np.ravel(spacing))
        except (TypeError, ValueError):
            raise BigVolumeError(f"spacing must be three positive numbers, got {spacing}") from None
        if len(spacing) != 3 or not all(0 < s < np.inf for s in spacing):  # (NaN fails every comparison)
            raise BigVolumeError(f"spacing must be three positive numbers, got {spacing}")
        direction = stack_direction(orientation)
        # ``origin`` is the centre of the stack's first pixel; the ROI starts further along the axes
        corner = np.array(stack_origin(origin), float)
        roi_shift = direction @ (np.array([self.roi.x0, self.roi.y0, self.roi.z0]) * spacing)
        geometry = Geometry(self.roi.size, spacing, tuple(corner + roi_shift), direction)
        dtype = info.dtype if self.gray != "luminance" or info.dtype.kind != "f" else np.dtype(np.float32)
        super().__init__(info.files[self.roi.z0], geometry, dtype, components)
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="bigvolume-decode")

    converts_on_read = True  # _decode copies into ``out`` whatever its type

    def slice_path(self, k: int) -> Path:
        return self.info.files[self.roi.z0 + k]

    @staticmethod
    def _execute(reader, path: Path, layout: TiffLayout | None = None):
        """The slice decoded; refused when its decoder warned of damaged data. libtiff's PackBits and JPEG decoders
        only warn (on stderr) when the data are damaged, and the reader returns the garbled slice as good: those
        slices are decoded one at a time with stderr read (the others, in parallel, as they are). ``layout``: a
        TIFF slice's, read by the caller (else read here)."""
        if layout is None and path.suffix.lower() in (".tif", ".tiff"):
            layout = tiff_layout(path)
        warns_only = layout is not None and layout.compression in WARNING_ONLY_CODECS
        image, failure = None, None
        with output_captured() if warns_only else contextlib.nullcontext() as printed:
            try:
                image = reader.Execute()
            except RuntimeError as error:
                failure = error
        damage = DAMAGE_WARNING.search(printed.text) if warns_only else None
        if warns_only and not damage:  # not the decoder's (another thread's output) goes on
            give_back(printed.text)
        if damage:  # (a literal run cut short leaves the rest of the strip misparsed: the read may fail, later)
            raise VolumeFileError(f"{path}: damaged {WARNING_ONLY_CODECS[layout.compression]} data (the decoder "
                                  f"says: {damage.group(1).strip()}); the slice would be read garbled")
        if failure is not None:
            why = _tiff_unreadable(layout, header=False) if layout is not None else None
            raise VolumeFileError(f"{path}: {why or f'cannot decode ({readable_reason(failure)})'}") from None
        return image

    def _decode(self, k: int, out: np.ndarray) -> None:
        import SimpleITK as sitk
        path = self.slice_path(k)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        layout = tiff_layout(path) if path.suffix.lower() in (".tif", ".tiff") else None  # (read once a slice)
        # a JPEG or PNG mirrored by its EXIF Orientation: flipped here, as libtiff flips a TIFF; the ROI of the
        # picture as seen lies mirrored in the stored raster
        rows, columns = (_exif_mirroring(path) if layout is None else None) or (False, False)
        roi = self.roi
        x0 = self.info.width - roi.x1 if columns else roi.x0
        y0 = self.info.height - roi.y1 if rows else roi.y0
        if (x0, y0, roi.x1 - roi.x0, roi.y1 - roi.y0) != (0, 0, self.info.width, self.info.height):
            reader.SetExtractIndex([x0, y0])
            reader.SetExtractSize([roi.x1 - roi.x0, roi.y1 - roi.y0])
        image = self._execute(reader, path, layout)
        pixels = sitk.GetArrayViewFromImage(image)
        read_channels = image.GetNumberOfComponentsPerPixel()
        if pixels.ndim == 3 + (read_channels > 1):  # a 2D slice reported as a 1-slice volume
            pixels = pixels[0]
        pixels = pixels[::-1 if rows else 1, ::-1 if columns else 1]
        if layout is not None:  # (the whole picture's checksums compare at once)
            whole = pixels.shape[:2] == (self.info.height, self.info.width)
            _refuse_deflate_damage(path, layout, pixels if whole else None)
        if read_channels != self.info.components:  # libtiff's RGBA reader: 4 channels of a gray or RGB slice
            pixels = pixels[..., 0] if self.info.components == 1 else pixels[..., :self.info.components]
        if pixels.shape[:2] != out.shape[:2]:
            raise VolumeFileError(f"{path}: decoded {pixels.shape[1]}x{pixels.shape[0]} pixels, "
                                  f"expected {out.shape[1]}x{out.shape[0]}")
        if self.gray == "keep":
            out[...] = pixels
        elif self.gray == "channel":
            out[...] = pixels[..., self.channel]
        else:  # (16 and 32-bit integers in double precision: float32 rounded 33569.4992 up, 3000000077 down)
            precision = np.float64 if pixels.dtype.itemsize >= 2 and pixels.dtype.kind in "iu" else np.float32
            weights = np.asarray(LUMINANCE_WEIGHTS, precision)
            luminance = pixels[..., :3].astype(precision) @ weights
            if self.dtype.kind != "f":  # integer slices give integer gray values, rounded here from double even
                info = np.iinfo(self.dtype)  # when ``out`` is the filter's float32 buffer (it rounded them later)
                np.clip(np.rint(luminance), info.min, info.max, out=luminance)
            out[...] = luminance

    def _read_into(self, k0: int, k1: int, out: np.ndarray) -> None:
        if not all(self.slice_path(k).suffix.lower() in (".jpg", ".jpeg") for k in range(k0, k1)):
            self._decode_in_parallel(k0, k1, out)
            return
        # JPEG slices: libjpeg only prints (on stdout, through ITK) that a slice's data are corrupt. Read for the
        # whole slab, decoding in parallel; on such words, decoded again one by one to name the damaged slice.
        with output_captured(1) as printed:
            self._decode_in_parallel(k0, k1, out)
        damage = LIBJPEG_DAMAGE.search(printed.text)
        if damage is None:
            give_back(printed.text, 1)
            return
        for k in range(k0, k1):
            with output_captured(1) as printed:
                self._decode(k, out[k - k0])
            refuse_jpeg_damage(self.slice_path(k), printed.text, 1)
        raise VolumeFileError(f"{self.slice_path(k0)} .. {self.slice_path(k1 - 1).name}: damaged JPEG data in one of "
                              f"these slices (the decoder says: {damage.group(1).strip()})")

    def _decode_in_parallel(self, k0: int, k1: int, out: np.ndarray) -> None:
        futures = [self._pool.submit(self._decode, k, out[k - k0]) for k in range(k0, k1)]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
