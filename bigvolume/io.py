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

from . import dicom
from .errors import VolumeFileError
from .geometry import Geometry
from .layout import data_files_named, voxel_layout
from .volume import Volume, owned_view

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
        missing = [data for data in data_files_named(path) if not data.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise VolumeFileError(f"{path}: data file {missing[0]} does not exist{more}") from None
        raise VolumeFileError(f"{path}: not a readable volume ({_first_line(error)})") from None
    if source.GetDimension() != 3:
        raise VolumeFileError(f"{path}: is a {source.GetDimension()}D image; a 3D volume is needed")
    geometry = Geometry(source.GetSize(), source.GetSpacing(), source.GetOrigin(),
                        np.array(source.GetDirection()).reshape(3, 3))
    return source, geometry


def read_volume(path, series: str | None = None) -> Volume:
    """Read a 3D volume (scalar or multi-component). Raises VolumeFileError naming the file and the problem.
    A DICOM folder or file is read as its series (``series``: the UID, when the folder holds several).

    Voxels stored uncompressed in one file in this machine's byte order (NRRD/NHDR, NIfTI, MetaImage) are
    memory-mapped read-only (no copy, no read time: the page cache serves them); everything else is read by
    SimpleITK and viewed without a copy. Missing or too short data files are refused before reading."""
    path = Path(path)
    if dicom.accepts(path, series):
        return dicom.read_volume(path, series)
    geometry, dtype, components = read_geometry(path)
    layout = voxel_layout(path, dtype, components, geometry.voxel_count)
    if layout is not None and layout.is_single_native_raw:
        data = layout.files[0]
        shape = geometry.shape + ((components,) if components > 1 else ())
        mapped = np.memmap(data.path, dtype=dtype, mode="r", offset=data.offset, shape=shape)
        return Volume(mapped, geometry, owner=mapped)
    image, geometry = _open_3d(path, lambda: sitk.ReadImage(str(path)))
    return Volume(owned_view(sitk.GetArrayViewFromImage(image), image), geometry, owner=image)


def read_geometry(path, series: str | None = None) -> tuple[Geometry, np.dtype, int]:
    """Geometry, pixel type and component count from the header alone (no voxel data read)."""
    path = Path(path)
    if dicom.accepts(path, series):
        return dicom.read_geometry(path, series)

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


def file_size(path, series: str | None = None) -> int:
    """Bytes on disk of a volume file, its detached data files included (of a DICOM series: all its files)."""
    path = Path(path)
    if dicom.accepts(path, series):
        return dicom.file_size(path, series)
    total = path.stat().st_size
    for data_file in _data_files_of(path):
        if data_file.exists():
            total += data_file.stat().st_size
    return total
