"""Where a volume file keeps its voxels: data files, byte offsets, encoding and byte order, read from the header.

SimpleITK gives the geometry and pixel type, or bigvolume.io.nrrd_geometry for a plain NRRD, to the same bits (so
streamed and in-memory reads agree on them); this module only answers "which bytes, in which files, in which form", which is what reading by slab and memory-mapping need:

- NRRD / NHDR: attached or detached data, ``data file: LIST``, printf patterns (``scan%04d.raw 1 200 1``),
  ``byte skip`` (including -1, data at the end of the file), ``line skip``, both endians, raw, gzip or bzip2.
- NIfTI-1 (``.nii``, ``.nii.gz``): either byte order; scaling by ``scl_slope``/``scl_inter`` when SimpleITK
  reads the file as float (the fields read as ITK does: :func:`nifti_scaling`).
- MetaImage (``.mha``, ``.mhd``): LOCAL, one data file, LIST or a pattern; ``HeaderSize`` (including -1);
  either byte order; zlib-compressed data (one stream).

Raw data files are checked here, before any work: a missing file or one shorter than the header says is refused
with the file name and the expected and actual sizes. Anything else (ASCII/hex NRRD, vector NIfTI, NIfTI-2, ...) gets
``None``: it is read whole by SimpleITK.
"""
from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import VolumeFileError

# Encodings we can read piece by piece; the value is the decoder family (see bigvolume.io.slabs).
STREAM_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}

# Deflate (gzip, zlib) cannot expand data more than about 1032 times.
DEFLATE_MAX_RATIO = 1032

# More data files than any volume we read has slices: a header asking for more is mistyped (and listing them
# would take minutes).
MAX_DATA_FILES = 1 << 20

# NIfTI datatype codes -> numpy types (scalar types only: vector NIfTI stores components as planes).
NIFTI_TYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8,
               512: np.uint16, 768: np.uint32, 1024: np.int64, 1280: np.uint64}


@dataclass(frozen=True)
class DataFile:
    path: Path
    offset: int            # bytes before the data (raw) or before the compressed stream (compressed)
    decoded_skip: int = 0  # bytes to drop after decompression (NRRD byte skip on compressed data, NIfTI gz offset)


@dataclass(frozen=True)
class VoxelLayout:
    """The voxel bytes of a volume: ``files`` in order, each holding an equal share of ``total_bytes``."""

    files: tuple[DataFile, ...]
    encoding: str              # "raw", "gzip", "bzip2" or "zlib"
    stored_dtype: np.dtype     # one component as stored, with its byte order
    total_bytes: int
    scale: tuple[float, float] | None = None  # NIfTI (slope, intercept) applied after reading
    # NRRD with components on another axis than the fastest (e.g. ``kinds: domain domain domain list``): the file's
    # array shape in numpy order and the axis holding the components. Such files are read whole and the axis moved
    # last (as SimpleITK does); they cannot be read slab by slab.
    permuted: tuple[tuple[int, ...], int] | None = None

    @property
    def bytes_per_file(self) -> int:
        return self.total_bytes // len(self.files)

    @property
    def is_single_native_raw(self) -> bool:
        """One uncompressed file in this machine's byte order, no scaling: can be memory-mapped as is."""
        return (self.encoding == "raw" and len(self.files) == 1 and self.scale is None
                and self.stored_dtype.isnative and self.permuted is None)

    @property
    def reads_in_slabs(self) -> bool:
        return self.permuted is None


def voxel_layout(path, dtype: np.dtype, components: int, voxels: int) -> VoxelLayout | None:
    """The layout of ``path``'s voxels (``dtype``/``components``/``voxels`` as SimpleITK reports them), or None when
    the file cannot be read piece by piece. Raises VolumeFileError for missing or too short raw data files."""
    path = Path(path)
    name = path.name.lower()
    total = int(voxels) * int(components) * np.dtype(dtype).itemsize
    if name.endswith((".nrrd", ".nhdr")):
        layout = _nrrd_layout(path, np.dtype(dtype), total)
    elif name.endswith((".nii", ".nii.gz")):
        layout = _nifti_layout(path, np.dtype(dtype), components, total)
    elif name.endswith((".mha", ".mhd")):
        layout = _metaimage_layout(path, np.dtype(dtype), total)
    else:
        layout = None
    if layout is not None:
        _check_data_files(path, layout)
    return layout


def data_files_named(path) -> list[Path]:
    """The data files a NRRD or MetaImage header names (without checking them); [] for other formats."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nrrd", ".nhdr")):
            fields, _, trailing = read_nrrd_header(path)
            spec = fields.get("data file", fields.get("datafile"))
        elif name.endswith((".mha", ".mhd")):
            _, _, trailing, exact = _read_metaimage_header(path)
            spec = exact.get("ElementDataFile")
            spec = None if spec is not None and spec.upper() == "LOCAL" else spec
        else:
            return []
    except (OSError, VolumeFileError, UnicodeError):
        return []
    return (_expand_file_list(path, spec, trailing) or []) if spec else []


def _check_data_files(header: Path, layout: VoxelLayout) -> None:
    for data in layout.files:
        which = "" if data.path == header else f"data file {data.path} "
        if not data.path.is_file():
            raise VolumeFileError(f"{header}: {which or 'data file'} does not exist")
        actual = data.path.stat().st_size
        if layout.encoding == "raw":
            needed = data.offset + layout.bytes_per_file
            if actual < needed:
                raise VolumeFileError(
                    f"{header}: {which}too short: expected {needed} bytes ({layout.bytes_per_file} bytes of "
                    f"voxels after {data.offset} bytes of header/skip), the file has {actual} bytes")
        elif actual <= data.offset:
            raise VolumeFileError(f"{header}: {which}has no compressed data after byte {data.offset} "
                                  f"(the file has {actual} bytes)")
        elif layout.encoding in ("gzip", "zlib") and \
                layout.bytes_per_file + data.decoded_skip > (actual - data.offset) * DEFLATE_MAX_RATIO + 1024:
            # Refused before a buffer of that size is allocated (a mistyped or damaged size in the header).
            raise VolumeFileError(f"{header}: the header says {layout.bytes_per_file} bytes of voxels, more than "
                                  f"the {actual - data.offset} compressed bytes of {which or 'the file '}can hold")


def _header_int(path: Path, name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise VolumeFileError(f"{path}: the header's {name} is not a whole number: {text[:40]!r}") from None


def _with_order(dtype: np.dtype, big_endian: bool) -> np.dtype:
    return dtype.newbyteorder(">" if big_endian else "<") if dtype.itemsize > 1 else dtype


def _expand_file_list(header: Path, spec: str, trailing_lines: list[str]) -> list[Path] | None:
    """Files of a detached header: one name, ``LIST`` (names on the following lines) or ``fmt min max step``."""
    tokens = spec.split()
    if tokens and tokens[0] == "LIST":
        names = [line.strip() for line in trailing_lines if line.strip()]
    elif len(tokens) >= 4 and "%" in tokens[0]:
        try:
            first, last, step = int(tokens[1]), int(tokens[2]), int(tokens[3])
        except ValueError:
            return None
        if step == 0:
            return None
        stop = last + (1 if step > 0 else -1)
        if len(range(first, stop, step)) > MAX_DATA_FILES:
            return None  # a mutated or mistyped range: SimpleITK's header reader refuses it
        try:
            names = [tokens[0] % number for number in range(first, stop, step)]
        except (TypeError, ValueError):
            return None
    else:
        names = [spec.strip()]
    if any(len(name) > 4096 or any(ord(c) < 32 for c in name) for name in names):
        raise VolumeFileError(f"{header}: the header names a data file whose name holds control characters (a "
                              "damaged header?)")
    return [Path(name) if os.path.isabs(name) else header.parent / name for name in names]


def _skip_lines(path: Path, offset: int, lines: int) -> int:
    if lines <= 0:
        return offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        for _ in range(lines):
            if not handle.readline():
                break
        return handle.tell()


def _header_text(raw_line: bytes) -> str:
    """A header line as text: UTF-8, as our writers store non-ASCII file names (teem, in SimpleITK and Slicer, hands
    the bytes to the file system, which on Linux and macOS spells names in UTF-8), else Latin-1 (any byte is one)."""
    try:
        return raw_line.decode("utf-8")
    except UnicodeDecodeError:
        return raw_line.decode("latin-1")


def read_nrrd_header(path: Path) -> tuple[dict[str, str], int, list[str]]:
    """NRRD fields (lower-case keys), the byte offset just past the header, and the lines after ``data file:``
    (the names of a ``LIST``)."""
    pairs, offset, trailing = read_nrrd_fields(path)
    return {key.strip().lower(): value.strip() for key, value in pairs}, offset, trailing


def read_nrrd_fields(path: Path) -> tuple[list[tuple[str, str]], int, list[str]]:
    """Like :func:`read_nrrd_header`, the fields as (key, value) pairs in the header's order, repeats included, as
    written (the text before and after the first colon of the line)."""
    pairs: list[tuple[str, str]] = []
    trailing: list[str] = []
    with open(path, "rb") as handle:
        magic = handle.readline()
        if not magic.startswith(b"NRRD"):
            raise VolumeFileError(f"{path}: not a NRRD file: no NRRD magic line")
        offset = len(magic)
        in_list = False
        for number, raw_line in enumerate(handle, start=2):
            offset += len(raw_line)
            line = _header_text(raw_line).rstrip("\r\n")
            if in_list:
                trailing.append(line)
                continue
            if not line:
                break
            # As teem reads a header: only an empty line ends it (a line of spaces ended it here, and the voxels
            # were read from the wrong byte), and every other line is a comment, a key/value pair or a field.
            if not line.strip():
                raise VolumeFileError(f"{path}: header line {number} holds only spaces: a NRRD header ends at an "
                                      "empty line")
            if line.startswith("#") or _is_key_value_pair(line):
                continue
            if ":" not in line:
                raise VolumeFileError(f"{path}: header line {number} is not a NRRD field (no ': '): {line[:60]!r}")
            key, value = line.split(":", 1)
            pairs.append((key, value))
            if key.strip().lower() in ("data file", "datafile") and value.split()[:1] == ["LIST"]:
                in_list = True
    return pairs, offset, trailing


def _is_key_value_pair(line: str) -> bool:
    """NRRD ``key:=value`` lines carry metadata, not fields."""
    return ":=" in line and (": " not in line or line.index(":=") < line.index(": "))


def _nrrd_layout(path: Path, dtype: np.dtype, total: int) -> VoxelLayout | None:
    fields, header_end, trailing = read_nrrd_header(path)
    encoding = STREAM_ENCODINGS.get(fields.get("encoding", "").lower())
    if encoding is None:
        return None
    big = fields.get("endian", "little").lower() == "big"
    byte_skip = _header_int(path, "byte skip", fields.get("byte skip", fields.get("byteskip", "0")))
    line_skip = _header_int(path, "line skip", fields.get("line skip", fields.get("lineskip", "0")))
    spec = fields.get("data file", fields.get("datafile"))
    paths = [path] if spec is None else _expand_file_list(path, spec, trailing)
    if not paths:
        return None
    per_file = total // len(paths)
    if per_file * len(paths) != total:
        raise VolumeFileError(f"{path}: {len(paths)} data files cannot share {total} bytes of voxels equally")
    if byte_skip < -1 or byte_skip == -1 and encoding != "raw":
        raise VolumeFileError(f"{path}: byte skip {byte_skip} is not valid with {fields.get('encoding')} encoding")
    permuted = _nrrd_component_axis(path, fields, total // dtype.itemsize)
    if permuted is False:
        return None
    files = []
    for data_path in paths:
        start = header_end if spec is None else 0
        if data_path.is_file():
            start = _skip_lines(data_path, start, line_skip)
        if encoding == "raw":
            if byte_skip == -1:
                size = data_path.stat().st_size if data_path.is_file() else per_file
                files.append(DataFile(data_path, max(size - per_file, 0)))
            else:
                files.append(DataFile(data_path, start + byte_skip))
        else:
            files.append(DataFile(data_path, start, decoded_skip=byte_skip))
    return VoxelLayout(tuple(files), encoding, _with_order(dtype, big), total, permuted=permuted)


# NRRD axis kinds that are positions in space or time; any other kind (list, vector, RGB-color, ...) holds values.
NRRD_DOMAIN_KINDS = ("domain", "space", "time")


def nrrd_sizes(path: Path, fields: dict[str, str]) -> list[int]:
    """The ``sizes`` of a NRRD header, checked against ``dimension``; VolumeFileError in plain words otherwise."""
    try:
        dimension = int(fields.get("dimension", ""))
        sizes = [int(size) for size in fields.get("sizes", "").split()]
    except ValueError:
        raise VolumeFileError(f"{path}: the NRRD header's dimension or sizes are not whole numbers") from None
    if len(sizes) != dimension or any(size < 1 for size in sizes):
        raise VolumeFileError(f"{path}: the NRRD header's sizes ({fields.get('sizes', '')}) do not match its "
                              f"dimension ({dimension})")
    return sizes


def _nrrd_component_axis(path: Path, fields: dict[str, str], values: int):
    """None when the components (if any) are the fastest axis (stored interleaved); for a 4D file whose value axis
    is elsewhere, ``(numpy shape, numpy axis of the components)``; False when it cannot be told (SimpleITK reads)."""
    sizes = nrrd_sizes(path, fields)
    if len(sizes) == 3:
        return None
    if len(sizes) != 4 or int(np.prod(sizes, dtype=np.int64)) != values:
        return False
    kinds = fields.get("kinds", "").split()
    if len(kinds) == 4:
        ranges = [axis for axis, kind in enumerate(kinds) if kind.lower() not in NRRD_DOMAIN_KINDS]
    else:  # no kinds: the axis without a space direction holds the values
        directions = re.findall(r"\([^)]*\)|none", fields.get("space directions", ""))
        ranges = [axis for axis, text in enumerate(directions) if text == "none"] if len(directions) == 4 else []
    if len(ranges) != 1:
        return False
    if ranges[0] == 0 or sizes[ranges[0]] == 1:  # one value per voxel: the bytes of a 3D volume, wherever the axis
        return None
    return tuple(sizes[::-1]), len(sizes) - 1 - ranges[0]


def _nifti_layout(path: Path, dtype: np.dtype, components: int, total: int) -> VoxelLayout | None:
    compressed = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
            header = handle.read(348)
    except OSError as error:
        raise VolumeFileError(f"{path}: cannot read the NIfTI header ({error})") from None
    if len(header) < 348:
        return None
    for order in "<>":
        if np.frombuffer(header, order + "i4", 1, 0)[0] == 348:
            break
    else:
        return None  # NIfTI-2 (540) or not NIfTI: SimpleITK decides
    dims = np.frombuffer(header, order + "i2", 8, 40)
    code = int(np.frombuffer(header, order + "i2", 1, 70)[0])
    vox_offset, slope, intercept = (float(v) for v in np.frombuffer(header, order + "f4", 3, 108))
    if components != 1:
        if nifti_scaling(slope, intercept) != (1.0, 0.0):
            raise VolumeFileError(f"{path}: an RGB NIfTI with scl_slope {slope:g} and scl_inter {intercept:g}, "
                                  "which SimpleITK reads as uninitialised memory; refused")
        return None
    if dims[0] < 3 or any(d > 1 for d in dims[4:dims[0] + 1]) or code not in NIFTI_TYPES \
            or not 348 <= vox_offset < 2**40 or vox_offset != int(vox_offset):
        return None
    stored = np.dtype(NIFTI_TYPES[code])
    scale = None
    slope, intercept = nifti_scaling(slope, intercept)
    if (slope, intercept) != (1.0, 0.0):
        if dtype.kind != "f":
            return None  # SimpleITK keeps integers when it applies the scaling itself: let it
        scale = (slope, intercept)
    elif stored != dtype:
        return None
    total_stored = total // dtype.itemsize * stored.itemsize
    if compressed:
        files = (DataFile(path, 0, decoded_skip=int(vox_offset)),)
    else:
        files = (DataFile(path, int(vox_offset)),)
    return VoxelLayout(files, "gzip" if compressed else "raw", _with_order(stored, order == ">"), total_stored,
                       scale)


def nifti_scaling(slope: float, intercept: float) -> tuple[float, float]:
    """The (slope, intercept) a NIfTI reader applies, as ITK (and so SimpleITK and Slicer) reads them: a non-finite
    field counts as 0 (nifti1_io; nibabel writes NaN for "no scaling"), and a slope of 0, or smaller than double
    precision's epsilon (1e-20: every voxel became the intercept), as 1. Unscaled: (1, 0)."""
    slope, intercept = (value if np.isfinite(value) else 0.0 for value in (slope, intercept))
    return (slope if abs(slope) >= np.finfo(np.float64).eps else 1.0), intercept


def _read_metaimage_header(path: Path) -> tuple[dict[str, str], int, list[str], dict[str, str]]:
    """MetaImage fields (lower-case keys), the offset just past ``ElementDataFile``, the names of a LIST, and the
    fields under their keys as written (MetaIO's own reading matches keys exactly)."""
    fields: dict[str, str] = {}
    exact: dict[str, str] = {}
    trailing: list[str] = []
    offset = 0
    with open(path, "rb") as handle:
        for raw_line in handle:
            offset += len(raw_line)
            line = _header_text(raw_line).strip()
            if "=" in line:
                key, value = (part.strip() for part in line.split("=", 1))
                fields[key.lower()] = value
                exact[key] = value  # a key written twice: the last counts, as in MetaIO
                if key.lower() == "elementdatafile":
                    if value.split()[:1] == ["LIST"]:
                        trailing = [_header_text(rest) for rest in handle]
                    break
            if offset > 1 << 20:
                break  # no ElementDataFile within the first MiB: not a header we understand
    return fields, offset, trailing, exact


def _metaio_true(value: str) -> bool:
    """A MetaIO boolean as MetaIO reads it: true when it starts with T, t or 1."""
    return value[:1] in ("T", "t", "1")


def _metaimage_layout(path: Path, dtype: np.dtype, total: int) -> VoxelLayout | None:
    fields, offset, trailing, exact = _read_metaimage_header(path)
    spec = exact.get("ElementDataFile")
    if spec is None:
        return None
    if not _metaio_true(exact.get("BinaryData", "True")):
        return None  # voxels written as text: SimpleITK reads them
    orders = {_metaio_true(exact[key]) for key in ("BinaryDataByteOrderMSB", "ElementByteOrderMSB") if key in exact}
    if len(orders) > 1:
        return None  # the two byte-order keys disagree: SimpleITK's choice, not a guess here
    big = orders == {True}
    compressed = _metaio_true(exact.get("CompressedData", "False"))
    header_size = _header_int(path, "HeaderSize", exact.get("HeaderSize", "0"))
    local = spec.upper() == "LOCAL"
    paths = [path] if local else _expand_file_list(path, spec, trailing)
    if not paths or compressed and len(paths) > 1:
        return None
    per_file = total // len(paths)
    if header_size == -1 and compressed:  # the compressed stream ends the file: its length says where it starts
        if "CompressedDataSize" not in exact:
            raise VolumeFileError(f"{path}: HeaderSize = -1 (the data end the file) with compressed data needs "
                                  "CompressedDataSize to say where the data start")
        per_file = _header_int(path, "CompressedDataSize", exact["CompressedDataSize"])
    files = []
    for data_path in paths:
        if header_size == -1:  # the voxels (or their compressed stream) are the file's last bytes
            size = data_path.stat().st_size if data_path.is_file() else per_file
            start = max(size - per_file, 0)
        elif header_size > 0:  # MetaIO seeks there from the file's start, the header file's own included
            start = header_size
        else:
            start = offset if local else 0
        files.append(DataFile(data_path, start))
    return VoxelLayout(tuple(files), "zlib" if compressed else "raw", _with_order(dtype, big), total)



def _nifti_header(path) -> tuple[bytes, str, int] | None:
    """The first 348 bytes of a NIfTI file (decompressed: all of a NIfTI-1 header), its byte order ("<" or ">") and
    its ``sizeof_hdr`` (348: NIfTI-1, 540: NIfTI-2); None when the file cannot be read or starts like neither."""
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as handle:
            header = handle.read(348)
    except (OSError, EOFError):
        return None  # the integrity check that follows says what is wrong
    if len(header) < 348:
        return None
    for size in (348, 540):
        for order in "<>":
            if np.frombuffer(header, order + "i4", 1, 0)[0] == size:
                return header, order, size
    return None


def nifti_header_size(path) -> int | None:
    """``sizeof_hdr`` of a NIfTI file: 348 (NIfTI-1) or 540 (NIfTI-2); None when it is neither."""
    found = _nifti_header(path)
    return None if found is None else found[2]


def nifti_data_end(path) -> int:
    """Bytes a NIfTI-1 file (decompressed) must hold: ``vox_offset`` plus all voxels of every dimension; 0 when
    ``path`` is not a NIfTI-1 file we can tell this for (NIfTI-2: SimpleITK checks)."""
    found = _nifti_header(path)
    if found is None or found[2] != 348:
        return 0
    header, order, _ = found
    dims = np.frombuffer(header, order + "i2", 8, 40).astype(np.int64)
    bits = int(np.frombuffer(header, order + "i2", 1, 72)[0])
    vox_offset = float(np.frombuffer(header, order + "f4", 1, 108)[0])
    if not 1 <= dims[0] <= 7 or bits <= 0 or not 0 <= vox_offset < 2**40 or (dims[1:dims[0] + 1] < 1).any():
        return 0
    return int(vox_offset) + int(np.prod(dims[1:dims[0] + 1])) * bits // 8


def check_metaimage_header(path) -> None:
    """Refuse, in plain words, MetaImage headers whose dimension fields are malformed: SimpleITK's MetaIO crashes the
    process on some of them (``NDims = -1``) instead of failing."""
    path = Path(path)
    if not path.name.lower().endswith((".mha", ".mhd")):
        return
    try:
        fields, _, _, _ = _read_metaimage_header(path)
    except OSError:
        return  # SimpleITK says what is wrong
    if not fields:
        return

    def numbers(key, kind):
        try:
            return [kind(value) for value in fields.get(key, "").split()]
        except ValueError:
            raise VolumeFileError(f"{path}: not a readable volume (its {key} is not a list of numbers)") from None
    dims = numbers("ndims", int)
    if len(dims) != 1 or not 1 <= dims[0] <= 8:
        raise VolumeFileError(f"{path}: not a readable volume (its NDims is {fields.get('ndims', 'missing')!r}, "
                              "not a dimension from 1 to 8)")
    sizes = numbers("dimsize", int)
    if len(sizes) != dims[0] or min(sizes) < 1:
        raise VolumeFileError(f"{path}: not a readable volume (its DimSize {fields.get('dimsize', '')!r} does not "
                              f"give {dims[0]} positive sizes)")
    channels = numbers("elementnumberofchannels", int)
    if channels and (len(channels) != 1 or not 1 <= channels[0] <= 1024):
        raise VolumeFileError(f"{path}: not a readable volume (its ElementNumberOfChannels is not valid)")
    for key, count in (("elementspacing", dims[0]), ("offset", dims[0]), ("position", dims[0]),
                       ("origin", dims[0]), ("transformmatrix", dims[0] ** 2), ("elementsize", dims[0])):
        if key in fields and len(numbers(key, float)) < count:
            raise VolumeFileError(f"{path}: not a readable volume (its {key} has fewer than {count} numbers)")
