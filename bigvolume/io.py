"""Reading and writing volumes with their geometry and pixel type.

Formats: NRRD (``.nrrd``; ``.nhdr`` + raw or gzip data file), NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``,
``.mhd`` + data file). SimpleITK does the reading and writing (Slicer and SimpleITK read each other's NRRD exactly);
the array of a read volume is a view of the SimpleITK image, not a copy.

Every write goes first into a hidden temporary folder inside the destination folder, under the final file names
(so a detached header keeps pointing at the right data file), and is moved into place when complete, data files
first and header last: an output appears whole or not at all.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import VolumeFileError
from .geometry import Geometry
from .volume import Volume

WRITE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
# Formats whose writer compresses on request (NIfTI compresses by its .gz suffix).
COMPRESSIBLE_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def volume_suffix(path) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def _first_line(error: Exception) -> str:
    """ITK exceptions span many lines with source locations; keep the sentence that matters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    meaningful = [line for line in lines if not line.startswith(("sitk::ERROR", "/", "itk::"))]
    return (meaningful or lines or ["unknown error"])[-1][:300]


def _open_3d(path: Path, read):
    """Run ``read()`` (a SimpleITK image or a reader that has read the header) and check it is a 3D volume;
    every failure becomes one VolumeFileError naming the file."""
    if not path.exists():
        raise VolumeFileError(f"{path}: no such file")
    if path.is_dir():
        raise VolumeFileError(f"{path}: is a folder, not a volume file")
    try:
        source = read()
    except RuntimeError as error:
        raise VolumeFileError(f"{path}: not a readable volume ({_first_line(error)})") from None
    if source.GetDimension() != 3:
        raise VolumeFileError(f"{path}: is a {source.GetDimension()}D image; a 3D volume is needed")
    geometry = Geometry(source.GetSize(), source.GetSpacing(), source.GetOrigin(),
                        np.array(source.GetDirection()).reshape(3, 3))
    return source, geometry


def read_volume(path) -> Volume:
    """Read a 3D volume (scalar or multi-component). Raises VolumeFileError naming the file and the problem.

    Uncompressed little-endian NRRD/NHDR and NIfTI voxels are memory-mapped read-only (no copy, no read time: the
    page cache serves them); everything else is read by SimpleITK and viewed without a copy."""
    path = Path(path)
    geometry, dtype, components = read_geometry(path)
    mapped = _memory_map(path, geometry, dtype, components)
    if mapped is not None:
        return Volume(mapped, geometry, owner=mapped)
    image, geometry = _open_3d(path, lambda: sitk.ReadImage(str(path)))
    return Volume(sitk.GetArrayViewFromImage(image), geometry, owner=image)


# NIfTI datatype codes -> numpy types (scalar types only: vector NIfTI stores components as planes).
NIFTI_TYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8,
               512: np.uint16, 768: np.uint32, 1024: np.int64, 1280: np.uint64}


def _nifti_data_offset(path: Path, dtype: np.dtype, components: int) -> int | None:
    with open(path, "rb") as handle:
        header = handle.read(352)
    if len(header) < 348 or components != 1 or np.frombuffer(header, "<i4", 1, 0)[0] != 348:
        return None  # NIfTI-2, big-endian or vector data: SimpleITK knows best
    dims = np.frombuffer(header, "<i2", 8, 40)
    code = int(np.frombuffer(header, "<i2", 1, 70)[0])
    offset, slope, intercept = (float(v) for v in np.frombuffer(header, "<f4", 3, 108))
    if dims[0] != 3 or np.dtype(NIFTI_TYPES.get(code, np.void)) != dtype or slope not in (0.0, 1.0) \
            or intercept != 0.0 or offset < 348 or offset != int(offset):
        return None
    return int(offset)


def _nrrd_raw_data(path: Path) -> tuple[Path, int] | None:
    """(data file, byte offset) of a raw little-endian NRRD, or None for anything more elaborate."""
    fields, offset = {}, 0
    with open(path, "rb") as handle:
        if not handle.readline().startswith(b"NRRD"):
            return None
        offset = handle.tell()
        for line in handle:
            offset += len(line)
            text = line.decode("latin-1").strip()
            if not text:
                break
            if ":" in text and not text.startswith("#"):
                key, value = text.split(":", 1)
                fields[key.strip().lower()] = value.lstrip("=").strip()
    if fields.get("encoding") != "raw" or fields.get("endian", "little") != "little" or \
            fields.get("line skip", "0") != "0" or "data file" in fields and " " in fields["data file"].strip():
        return None
    skip = int(fields.get("byte skip", "0"))
    if skip < 0:
        return None
    if "data file" in fields or "datafile" in fields:
        data = path.parent / (fields.get("data file") or fields["datafile"])
        return data, skip
    return path, offset + skip


def _memory_map(path: Path, geometry: Geometry, dtype: np.dtype, components: int) -> np.ndarray | None:
    suffix = volume_suffix(path)
    if suffix == ".nii":
        offset = _nifti_data_offset(path, dtype, components)
        located = None if offset is None else (path, offset)
    elif suffix in (".nrrd", ".nhdr"):
        located = _nrrd_raw_data(path)
    else:
        located = None
    if located is None or (dtype.byteorder == ">" and dtype.itemsize > 1):
        return None
    data_path, offset = located
    shape = geometry.shape + ((components,) if components > 1 else ())
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    if not data_path.exists() or data_path.stat().st_size < needed:
        return None  # let SimpleITK report the problem in its words
    return np.memmap(data_path, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=shape)


def read_geometry(path) -> tuple[Geometry, np.dtype, int]:
    """Geometry, pixel type and component count from the header alone (no voxel data read)."""
    path = Path(path)

    def read_header():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return reader
    reader, geometry = _open_3d(path, read_header)
    components = reader.GetNumberOfComponents()
    dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID(), components)).dtype)
    return geometry, dtype, components


def check_output_path(path, inputs=()) -> Path:
    """Refuse, before any work, an output that cannot be written or would overwrite an input."""
    path = Path(path)
    if volume_suffix(path) not in WRITE_SUFFIXES:
        raise VolumeFileError(f"{path}: unsupported output format; use one of {', '.join(WRITE_SUFFIXES)}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise VolumeFileError(f"{path}: the folder {folder} does not exist")
    try:  # really try: permissions, read-only file systems and root all answer truthfully this way
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise VolumeFileError(f"{path}: cannot write in {folder} ({error.strerror or error})") from None
    if path.is_dir():
        raise VolumeFileError(f"{path}: is a folder")
    for source in inputs:
        source = Path(source)
        if source.exists() and (path.resolve() == source.resolve()
                                or (path.exists() and os.path.samefile(path, source))):
            raise VolumeFileError(f"{path}: the output would overwrite the input")
        for data_file in _data_files_of(path):
            if data_file.exists() and os.path.samefile(data_file, source):
                raise VolumeFileError(f"{path}: writing it would overwrite the input's data file {data_file}")
    return path


def _data_files_of(header: Path) -> list[Path]:
    """Data files a detached-header output would create beside ``header``."""
    suffix = volume_suffix(header)
    if suffix not in (".nhdr", ".mhd"):
        return []
    stem = header.with_suffix("")
    return [stem.with_suffix(ext) for ext in (".raw", ".raw.gz", ".zraw")]


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path with the final file name inside a hidden folder next to ``path``; on success move
    every file written there into place, data files first and ``path`` last; on failure remove them all."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=folder))
    try:
        yield staging / path.name
        written = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        if not any(p.name == path.name for p in written):
            raise VolumeFileError(f"{path}: the writer produced no file")
        for item in written:
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def to_sitk(volume: Volume) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array), isVector=volume.array.ndim == 4)
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(tuple(volume.geometry.direction.ravel()))
    return image


def write_volume(volume: Volume, path, compress: bool | None = None) -> Path:
    """Write ``volume`` to ``path`` (format from the suffix). ``compress``: gzip the voxel data; default on for
    ``.nrrd``/``.mha``, off for detached headers (so they stream) and by suffix for NIfTI."""
    path = check_output_path(path)
    suffix = volume_suffix(path)
    if compress is None:
        compress = suffix in (".nrrd", ".mha")
    image = to_sitk(volume)
    try:
        with atomic_output(path) as staging_path:
            sitk.WriteImage(image, str(staging_path), useCompression=bool(compress) and suffix in COMPRESSIBLE_SUFFIXES)
    except RuntimeError as error:
        raise VolumeFileError(f"{path}: cannot write ({_first_line(error)})") from None
    except OSError as error:
        raise VolumeFileError(f"{path}: cannot write ({error.strerror or error})") from None
    return path


def file_size(path) -> int:
    """Bytes on disk of a volume file, its detached data files included."""
    path = Path(path)
    total = path.stat().st_size
    for data_file in _data_files_of(path):
        if data_file.exists():
            total += data_file.stat().st_size
    return total
