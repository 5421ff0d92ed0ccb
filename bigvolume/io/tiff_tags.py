"""What SimpleITK does not read from a TIFF: the stored sample layout (to tell SimpleITK's misreadings, such as a
lossy 8-bit RGBA fallback, from the file's own samples), where its pixel data end, and ImageJ's calibration; and the
EXIF Orientation of JPEG and PNG files (a TIFF directory too). A reader of the first image directory's few tags,
classic TIFF and BigTIFF, either byte order; no pixel is decoded."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# TIFF tags read from a slice's first directory; value types and their struct codes (SHORT, LONG, RATIONAL as two
# LONGs, ASCII, LONG8).
_TIFF_BITS, _TIFF_SAMPLES, _TIFF_DESCRIPTION, _TIFF_X_RESOLUTION, _TIFF_Y_RESOLUTION = 258, 277, 270, 282, 283
_TIFF_COMPRESSION, _TIFF_PHOTOMETRIC, _TIFF_ORIENTATION, _TIFF_PLANAR = 259, 262, 274, 284
_TIFF_STRIP_OFFSETS, _TIFF_STRIP_COUNTS, _TIFF_TILE_OFFSETS, _TIFF_TILE_COUNTS = 273, 279, 324, 325
_TIFF_EXTRA_SAMPLES, _TIFF_SAMPLE_FORMAT = 338, 339
_TIFF_NEW_SUBFILE_TYPE = 254  # bit 0: a reduced-resolution version of another image (a preview)
_TIFF_ROWS_PER_STRIP, _TIFF_PREDICTOR = 278, 317
_TIFF_TYPES = {2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 16: ("Q", 8)}
# ImageJ's length units (its "unit=" line) in millimetres; ImageJ writes micrometres as "micron" or "\u00B5m".
_IMAGEJ_UNITS = {"nm": 1e-6, "nanometer": 1e-6, "micron": 1e-3, "microns": 1e-3, "um": 1e-3, "\\u00b5m": 1e-3,
                 "\\u00B5m": 1e-3, "\u00b5m": 1e-3, "\u03bcm": 1e-3, "mm": 1.0, "millimeter": 1.0, "cm": 10.0,
                 "m": 1000.0, "meter": 1000.0, "inch": 25.4}


def _first_directory(path: Path, tags) -> dict | None:
    """The values of ``tags`` in a TIFF's first directory (classic TIFF or BigTIFF, either byte order): numbers as
    tuples, ASCII as bytes; None when the file is not a TIFF or its directory cannot be read."""
    try:
        with open(path, "rb") as handle:
            return read_directory(handle, tags)
    except OSError:
        return None


def read_directory(handle, tags) -> dict | None:
    """_first_directory of an open binary file, or of TIFF-structured bytes in a BytesIO (EXIF)."""
    try:
        head = handle.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 16:
            return None
        magic = struct.unpack(order + "H", head[2:4])[0]
        if magic == 42:
            count_format, entry_format, first = "H", "HHII", struct.unpack(order + "I", head[4:8])[0]
        elif magic == 43:
            count_format, entry_format, first = "Q", "HHQQ", struct.unpack(order + "Q", head[8:16])[0]
        else:
            return None
        handle.seek(first)
        entries = struct.unpack(order + count_format, handle.read(struct.calcsize(order + count_format)))[0]
        entry_size = struct.calcsize(order + entry_format)
        inline = 4 if magic == 42 else 8  # bytes of an entry's value field (values that fit are in it)
        table = handle.read(entries * entry_size)
        found = {"byte order": order}
        for n in range(entries):
            entry = table[n * entry_size:(n + 1) * entry_size]
            tag, kind, count, offset = struct.unpack(order + entry_format, entry)
            if tag not in tags or kind not in _TIFF_TYPES:
                continue
            code, size = _TIFF_TYPES[kind]
            # a description, one value per sample, strip or tile positions: bounded (a file of more strips has
            # only its first 65536 checked against its size)
            count = min(count, 1 << 16)
            raw = entry[entry_size - inline:]
            if count * size > inline:
                handle.seek(offset)
                raw = handle.read(count * size)
            found[tag] = raw[:count] if kind == 2 else struct.unpack(order + code * count, raw[:count * size])
        return found
    except (OSError, struct.error, OverflowError):
        return None


MIN_IS_WHITE, MIN_IS_BLACK, RGB, PALETTE, SEPARATED, YCBCR = 0, 1, 2, 3, 5, 6  # PhotometricInterpretation values
ASSOCIATED_ALPHA, UNASSOCIATED_ALPHA = 1, 2                                    # ExtraSamples values
OLD_JPEG, JPEG, PACKBITS = 6, 7, 32773  # Compression values
DEFLATE_CODECS = (8, 32946)  # Adobe's and the old code: zlib streams, each ending with its Adler-32
_SAMPLE_KINDS = {1: "u", 2: "i", 3: "f"}  # SampleFormat: unsigned, signed, floating point


@dataclass(frozen=True)
class TiffLayout:
    """How a TIFF's first image stores its samples (the tags' defaults where a tag is absent)."""

    samples: int                   # SamplesPerPixel
    bits: int                      # BitsPerSample (of the first sample)
    sample_format: int             # 1 unsigned, 2 signed, 3 floating point
    photometric: int | None        # PhotometricInterpretation: 0 MinIsWhite, 1 MinIsBlack, 2 RGB, 3 palette...
    extra_samples: tuple[int, ...]  # what the samples beyond the colour ones are (UNASSOCIATED_ALPHA...)
    planar: int                    # 1 contiguous (chunky), 2 one plane per sample
    tiled: bool
    compression: int               # 1: none
    orientation: int               # 1: rows top to bottom, columns left to right
    data_end: int                  # the end of the last strip or tile: the least size of a whole file
    file_size: int
    reduced: bool = False          # NewSubfileType bit 0: a reduced-resolution preview of another image
    pieces: tuple[tuple[int, int], ...] = ()  # (offset, byte count) of each strip or tile (the first 65536)
    rows_per_strip: int = 0        # 0: the whole image in one strip
    predictor: int = 1             # 1 none, 2 horizontal differencing, 3 floating point
    byte_order: str = "<"

    @property
    def dtype(self) -> np.dtype | None:
        """The stored sample type, None when numpy has none (1-bit, 12-bit, ...)."""
        kind = _SAMPLE_KINDS.get(self.sample_format)
        if kind is None or self.bits not in (8, 16, 32, 64) or kind == "f" and self.bits == 8:
            return None
        return np.dtype(f"{kind}{self.bits // 8}")

    def describe_samples(self) -> str:
        """``1 x 8-bit signed``, ``3 x 16-bit``, ``1 x 16-bit floating-point``."""
        kind = {2: " signed", 3: " floating-point"}.get(self.sample_format, "")
        return f"{self.samples} x {self.bits}-bit{kind}"


def tiff_layout(path: Path) -> TiffLayout | None:
    """The sample layout of a TIFF's first image; None when the file is not a readable TIFF."""
    found = _first_directory(path, (_TIFF_SAMPLES, _TIFF_BITS, _TIFF_SAMPLE_FORMAT, _TIFF_PHOTOMETRIC,
                                    _TIFF_EXTRA_SAMPLES, _TIFF_PLANAR, _TIFF_COMPRESSION, _TIFF_ORIENTATION,
                                    _TIFF_STRIP_OFFSETS, _TIFF_STRIP_COUNTS, _TIFF_TILE_OFFSETS, _TIFF_TILE_COUNTS,
                                    _TIFF_NEW_SUBFILE_TYPE, _TIFF_ROWS_PER_STRIP, _TIFF_PREDICTOR))
    if found is None:
        return None
    tiled = _TIFF_TILE_OFFSETS in found
    offsets = found.get(_TIFF_TILE_OFFSETS if tiled else _TIFF_STRIP_OFFSETS, ())
    counts = found.get(_TIFF_TILE_COUNTS if tiled else _TIFF_STRIP_COUNTS, ())
    try:
        file_size = path.stat().st_size
    except OSError:
        return None

    def first(tag, default):
        return found.get(tag, (default,))[0]
    return TiffLayout(samples=first(_TIFF_SAMPLES, 1), bits=first(_TIFF_BITS, 1),
                      sample_format=first(_TIFF_SAMPLE_FORMAT, 1), photometric=first(_TIFF_PHOTOMETRIC, None),
                      extra_samples=tuple(found.get(_TIFF_EXTRA_SAMPLES, ())), planar=first(_TIFF_PLANAR, 1),
                      tiled=tiled, compression=first(_TIFF_COMPRESSION, 1), orientation=first(_TIFF_ORIENTATION, 1),
                      data_end=max((o + c for o, c in zip(offsets, counts)), default=0), file_size=file_size,
                      reduced=bool(first(_TIFF_NEW_SUBFILE_TYPE, 0) & 1), pieces=tuple(zip(offsets, counts)),
                      rows_per_strip=first(_TIFF_ROWS_PER_STRIP, 0), predictor=first(_TIFF_PREDICTOR, 1),
                      byte_order=found["byte order"])


def deflate_damage(path: Path, layout: TiffLayout, decoded: np.ndarray | None = None) -> str | None:
    """What is wrong with a Deflate TIFF's strips or tiles, None when each zlib stream's Adler-32 agrees. libtiff
    stops inflating a strip once it has the strip's bytes, before the checksum at its end: a damaged strip that
    still inflates is read garbled, without a word. ``decoded``: the whole picture as libtiff gave it, in stored
    order; where those are the strips' bytes (no predictor, strips of whole rows, this machine's byte order) their
    checksums are compared at once. Otherwise, or when one differs, each stream is inflated again to tell: a stream
    that ends without its checksum (a writer that leaves it out) is let through, as libtiff lets it."""
    import zlib
    if layout.compression not in DEFLATE_CODECS:
        return None
    what = "tile" if layout.tiled else "strip"
    try:
        with open(path, "rb") as handle:
            if decoded is not None and _checksums_agree(handle, layout, decoded):
                return None
            for number, (offset, count) in enumerate(layout.pieces):
                handle.seek(offset)
                try:
                    zlib.decompressobj().decompress(handle.read(count))
                except zlib.error as error:
                    return f"{what} {number} of its Deflate data is damaged ({str(error).split(': ')[-1]})"
    except OSError as error:
        return f"cannot be read again ({error.strerror or error})"
    return None


def _checksums_agree(handle, layout: TiffLayout, decoded: np.ndarray) -> bool:
    """Whether each strip's stored Adler-32 (the last 4 bytes of its zlib stream) is that of its rows in
    ``decoded``; False when they cannot be compared so (then the strips are inflated to tell)."""
    import sys
    import zlib
    native = "<" if sys.byteorder == "little" else ">"
    if (layout.tiled or layout.planar != 1 or layout.predictor != 1 or decoded.dtype != layout.dtype
            or decoded.dtype.itemsize > 1 and layout.byte_order != native or not layout.pieces):
        return False
    rows = decoded.shape[0]
    per_strip = layout.rows_per_strip if 0 < layout.rows_per_strip < rows else rows
    if len(layout.pieces) != -(-rows // per_strip):
        return False
    for number, (offset, count) in enumerate(layout.pieces):
        handle.seek(offset + count - 4)
        stored = handle.read(4)
        strip = np.ascontiguousarray(decoded[number * per_strip:(number + 1) * per_strip])
        if len(stored) != 4 or int.from_bytes(stored, "big") != zlib.adler32(memoryview(strip).cast("B")):
            return False
    return True


def exif_orientation(data: bytes) -> int:
    """The Orientation tag of an EXIF block (a TIFF header and its first directory, as a JPEG's APP1 segment holds
    it after "Exif\\0\\0" and a PNG's eXIf chunk holds it); 1 (top-left) when absent, unreadable or not 1-8."""
    import io
    found = read_directory(io.BytesIO(data), (_TIFF_ORIENTATION,)) or {}
    value = found.get(_TIFF_ORIENTATION, (1,))[0]
    return value if 1 <= value <= 8 else 1


def imagej_images(path: Path) -> int:
    """How many images an ImageJ TIFF holds by its description's ``images=`` (1 when it says nothing): ImageJ writes
    a stack's images one after the other behind a single directory when the file would pass 4 GB."""
    found = _first_directory(path, (_TIFF_DESCRIPTION,))
    text = (found or {}).get(_TIFF_DESCRIPTION, b"").split(b"\0")[0]
    if not text.startswith(b"ImageJ="):
        return 1
    for line in text.splitlines():
        if line.startswith(b"images="):
            try:
                return max(1, int(line[7:]))
            except ValueError:
                return 1
    return 1


def imagej_calibration(path: Path) -> tuple[tuple[float, float], float | None] | None:
    """The pixel size (x, y) and the slice spacing (None when not written) in millimetres that ImageJ wrote into a
    TIFF: its description's ``unit=`` and ``spacing=`` lines and the X/Y resolution (pixels per unit). ImageJ marks
    the resolution unit "none" for units other than inch and cm, so SimpleITK reports no pixel size for them. None
    when the file carries no ImageJ calibration in a length unit."""
    found = _first_directory(path, (_TIFF_DESCRIPTION, _TIFF_X_RESOLUTION, _TIFF_Y_RESOLUTION))
    if not found or _TIFF_DESCRIPTION not in found:
        return None
    raw = found[_TIFF_DESCRIPTION].split(b"\0")[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if not text.startswith("ImageJ="):
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    millimetres = _IMAGEJ_UNITS.get(fields.get("unit", "").strip())
    resolutions = [found.get(tag) for tag in (_TIFF_X_RESOLUTION, _TIFF_Y_RESOLUTION)]
    if millimetres is None or any(r is None or len(r) != 2 or r[0] <= 0 or r[1] <= 0 for r in resolutions):
        return None
    pixel = tuple(millimetres * r[1] / r[0] for r in resolutions)
    try:
        spacing = abs(float(fields["spacing"])) * millimetres if "spacing" in fields else None
    except ValueError:
        spacing = None
    return pixel, (spacing if spacing and spacing > 0 else None)
