"""What SimpleITK does not read from a TIFF: the stored sample layout (to tell a lossy 8-bit RGBA fallback from the
file's own samples) and ImageJ's calibration. A reader of the first image directory's few tags, classic TIFF and
BigTIFF, either byte order; no pixel is decoded."""
from __future__ import annotations

import struct
from pathlib import Path

# TIFF tags read from a slice's first directory; value types and their struct codes (SHORT, LONG, RATIONAL as two
# LONGs, ASCII, LONG8).
_TIFF_BITS, _TIFF_SAMPLES, _TIFF_DESCRIPTION, _TIFF_X_RESOLUTION, _TIFF_Y_RESOLUTION = 258, 277, 270, 282, 283
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
            found = {}
            for n in range(entries):
                entry = table[n * entry_size:(n + 1) * entry_size]
                tag, kind, count, offset = struct.unpack(order + entry_format, entry)
                if tag not in tags or kind not in _TIFF_TYPES:
                    continue
                code, size = _TIFF_TYPES[kind]
                count = min(count, 1 << 16)  # a description, or one value per sample: never more
                raw = entry[entry_size - inline:]
                if count * size > inline:
                    handle.seek(offset)
                    raw = handle.read(count * size)
                found[tag] = raw[:count] if kind == 2 else struct.unpack(order + code * count, raw[:count * size])
            return found
    except (OSError, struct.error, OverflowError):
        return None


def tiff_samples(path: Path) -> tuple[int, int] | None:
    """(SamplesPerPixel, BitsPerSample) of a TIFF's first image; None when the file is not a readable TIFF."""
    found = _first_directory(path, (_TIFF_SAMPLES, _TIFF_BITS))
    if found is None:
        return None
    return found.get(_TIFF_SAMPLES, (1,))[0], found.get(_TIFF_BITS, (1,))[0]


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
