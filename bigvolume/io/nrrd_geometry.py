"""Geometry and pixel type of a plain 3D NRRD, read from its header without SimpleITK.

Loading SimpleITK costs about 90 MiB of memory and a tenth of a second, and the streamed commands (resample, pyramid)
of a NRRD need nothing else from it. So the headers most files have (3 axes, a ``space`` of LPS, RAS or LAS, three
space directions) are read here, computing what ITK's NrrdImageIO computes, in the same order of floating-point
operations, so the numbers are the same to the last bit (the tests compare with SimpleITK on families of headers):

- spacing along an axis = the length of its space direction, sqrt(x*x + y*y + z*z);
- its direction = the space direction times (1 / spacing);
- RAS and LAS headers are turned to LPS by negating the flipped coordinates of every direction and of the origin;
  no ``space origin`` means (0, 0, 0).

Anything else (another magic, field, space, kind or number syntax, 4 axes, a missing data file, ...) returns None,
and SimpleITK reads the header as before, with its own checks and errors.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..core.errors import VolumeFileError
from ..core.geometry import Geometry, header_geometry
from .layout import STREAM_ENCODINGS, data_files_named, read_nrrd_fields

# NRRD type names and their equivalents (the NRRD format's list) -> numpy types.
NRRD_TYPE_NAMES = {
    np.int8: ("signed char", "int8", "int8_t"),
    np.uint8: ("uchar", "unsigned char", "uint8", "uint8_t"),
    np.int16: ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    np.uint16: ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    np.int32: ("int", "signed int", "int32", "int32_t"),
    np.uint32: ("uint", "unsigned int", "uint32", "uint32_t"),
    np.int64: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
               "int64_t"),
    np.uint64: ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    np.float32: ("float",),
    np.float64: ("double",),
}
NRRD_DTYPES = {name: np.dtype(numpy_type) for numpy_type, names in NRRD_TYPE_NAMES.items() for name in names}

# Space -> the LPS coordinates it flips (RAS: x and y; LAS: y).
SPACE_FLIPS = {"left-posterior-superior": (), "lps": (), "right-anterior-superior": (0, 1), "ras": (0, 1),
               "left-anterior-superior": (1,), "las": (1,)}

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_VECTOR = rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)"
_THREE_VECTORS = rf"{_VECTOR} +{_VECTOR} +{_VECTOR}"
_THREE_QUOTED = r'"[^"]*" +"[^"]*" +"[^"]*"'

# The fields read here and the form their values must have: a header with another field, or a value of another form
# (even one NrrdIO would take), goes to SimpleITK. None of the others changes the geometry or the pixel type.
FIELD_FORMS = {
    "type": "|".join(re.escape(name) for name in NRRD_DTYPES),
    "dimension": "3",
    "sizes": r"[1-9]\d* +[1-9]\d* +[1-9]\d*",
    "space": "|".join(SPACE_FLIPS),
    "space directions": _THREE_VECTORS,
    "space origin": _VECTOR,
    "kinds": r"(?:domain|space) +(?:domain|space) +(?:domain|space)",
    "endian": "little|big",
    "encoding": "|".join(STREAM_ENCODINGS),
    "data file": r"[^\s%]+", "datafile": r"[^\s%]+",  # one data file (not a LIST or a pattern)
    "byte skip": r"-1|\d+", "byteskip": r"-1|\d+",
    "line skip": "0", "lineskip": "0",  # NrrdIO skips lines when it reads the header: it can fail there
    "content": r".*", "sample units": r".*",
    "space units": _THREE_QUOTED, "labels": _THREE_QUOTED,
    "measurement frame": _THREE_VECTORS,
    "min": _NUMBER, "max": _NUMBER, "old min": _NUMBER, "oldmin": _NUMBER, "old max": _NUMBER, "oldmax": _NUMBER,
}
REQUIRED_FIELDS = ("type", "dimension", "sizes", "space", "space directions", "encoding")
# NrrdIO parses fields in order: these need ``dimension`` before them, and these ``space``.
PER_AXIS_FIELDS = {"sizes", "space directions", "kinds", "labels"}
SPACE_FIELDS = {"space directions", "space origin", "space units", "measurement frame"}


def _vectors(text: str) -> list[tuple[float, float, float]]:
    return [tuple(float(value) for value in match) for match in re.findall(_VECTOR, text)]


def _in_parsing_order(keys: list[str]) -> bool:
    """Each field once, and after the fields NrrdIO needs to parse it."""
    if len(set(keys)) != len(keys):
        return False
    dimension = keys.index("dimension") if "dimension" in keys else len(keys)
    space = keys.index("space") if "space" in keys else len(keys)
    return all(not (key in PER_AXIS_FIELDS and at < dimension or key in SPACE_FIELDS and at < space)
               for at, key in enumerate(keys))


def _plain_fields(pairs: list[tuple[str, str]]) -> dict[str, str] | None:
    """The fields of a header made only of the fields and forms above, in an order NrrdIO parses; else None."""
    # NrrdIO takes a value as written after ": " (a type "uint16 " is no type): only such lines are read here.
    if not all(value.startswith(" ") and value[1:] == value.strip() for _, value in pairs):
        return None
    fields = {key: value[1:] for key, value in pairs}
    if not (_in_parsing_order([key for key, _ in pairs]) and all(key in fields for key in REQUIRED_FIELDS)
            and all(key in FIELD_FORMS and re.fullmatch(FIELD_FORMS[key], value) for key, value in fields.items())):
        return None
    return fields


def nrrd_geometry(path) -> tuple[Geometry, np.dtype, int] | None:
    """(geometry, dtype, 1) of a plain 3D scalar NRRD header whose data files exist, as SimpleITK would give them;
    None for every other header (read it with SimpleITK)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.readline().rstrip(b"\r\n")
        if magic not in (b"NRRD0004", b"NRRD0005"):
            return None
        pairs, _, _ = read_nrrd_fields(path)
    except (OSError, UnicodeError, VolumeFileError):
        return None
    fields = _plain_fields(pairs)
    if fields is None or NRRD_DTYPES[fields["type"]].itemsize > 1 and "endian" not in fields:
        return None
    if not all(data.is_file() for data in data_files_named(path)):
        return None
    dtype = NRRD_DTYPES[fields["type"]]
    flips = SPACE_FLIPS[fields["space"]]
    directions = _vectors(fields["space directions"])
    origin_text = fields.get("space origin")
    origin = list(_vectors(origin_text)[0]) if origin_text is not None else [0.0, 0.0, 0.0]
    if not all(math.isfinite(value) for value in [*origin, *np.ravel(directions)]):
        return None
    columns = []
    for vector in directions:
        spacing = math.sqrt(vector[0] * vector[0] + vector[1] * vector[1] + vector[2] * vector[2])
        if not spacing > 0 or not math.isfinite(spacing):
            return None
        scale = 1.0 / spacing
        columns.append((spacing, [value * scale for value in vector]))
    direction = np.array([unit for _, unit in columns]).T
    for axis in flips:
        direction[axis] = -direction[axis]
        if origin_text is not None:
            origin[axis] = -origin[axis]
    sizes = [int(size) for size in fields["sizes"].split()]
    return header_geometry(path, sizes, [spacing for spacing, _ in columns], origin, direction), dtype, 1
