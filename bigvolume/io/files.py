"""Reading and writing volumes with their geometry and pixel type.

Formats: NRRD (``.nrrd``; ``.nhdr`` + raw or gzip data file), NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``,
``.mhd`` + data file). SimpleITK does the reading and writing (Slicer and SimpleITK read each other's NRRD exactly);
the array of a read volume is a view of the SimpleITK image, not a copy. A plain NRRD's header is read without
SimpleITK (bigvolume.io.nrrd_geometry, the same numbers), and its voxels by our readers: then SimpleITK is not loaded.

Every write goes first into a hidden temporary folder inside the destination folder, under the final file names
(so a detached header keeps pointing at the right data file), and is moved into place when complete, data files
first and header last: an output appears whole or not at all.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import dicom, zarr_input
from ..core.errors import VolumeFileError
from ..core.memory import format_bytes
from ..core.progress import interrupt_as_flag
from ..core.geometry import Geometry, header_geometry, orthonormal
from .nrrd_geometry import nrrd_geometry
from .layout import (check_metaimage_header, data_files_named, nifti_data_end, nifti_header_size, nrrd_sizes,
                     read_nrrd_header, voxel_layout)
from .slab_readers import check_compressed_file, read_with_layout
from .library_output import library_quiet
from ..core.volume import Volume, owned_view

logger = logging.getLogger("bigvolume")

if TYPE_CHECKING:  # SimpleITK is imported where it is used: it costs about 90 MiB, and plain NRRDs do without it
    import SimpleITK as sitk

WRITE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
# Formats whose writer compresses on request (NIfTI compresses by its .gz suffix).
COMPRESSIBLE_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


_IMAGE_IOS = {".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO", ".nii": "NiftiImageIO", ".nii.gz": "NiftiImageIO",
              ".mha": "MetaImageIO", ".mhd": "MetaImageIO"}


def _image_io(path) -> str:
    """The SimpleITK ImageIO for a name whose suffix is not in lower case (ITK's MetaImage reader knew no A.MHA);
    empty (ITK chooses) otherwise."""
    name = Path(path).name
    suffix = volume_suffix(path)
    return _IMAGE_IOS.get(suffix, "") if not name.endswith(suffix) else ""


def volume_suffix(path) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


# Library wording that says nothing to a user: exception wrappers, source locations, class names with addresses,
# NrrdIO's function-name prefixes.
_LIBRARY_NOISE = re.compile(r"^(?:ITK ERROR: |sitk::ERROR: |Description: )?(?:\w+\(0x[0-9a-f]+\): )?"
                            r"(?:\[nrrd\] \w+: |\w+: (?=[a-z]))*")
_SOURCE_LOCATION = re.compile(r"(?:/[^\s:]+)+\.(?:cxx|cpp|h|hxx|c)(?::\d+)*:?")


def readable_reason(error: Exception) -> str:
    """ITK exceptions span many lines with source locations and class names; keep the sentence that matters, in
    words a user can read (never a library's source path or class name)."""
    lines = []
    for line in str(error).splitlines():
        line = line.strip()
        if not line or line.startswith("Exception thrown in SimpleITK") or _SOURCE_LOCATION.fullmatch(line):
            continue
        line = _SOURCE_LOCATION.sub("", _LIBRARY_NOISE.sub("", line)).strip(" :")
        if line and "itk::" not in line and "sitk" not in line.lower():
            lines.append(line)
    if not lines:
        return "its header could not be read"
    # NrrdIO stacks "trouble reading" lines above the cause: the most specific is the last that is not one of them.
    specific = [line for line in lines if "trouble" not in line]
    text = (specific or lines)[-1]
    if text.startswith("Unable to determine ImageIO reader"):
        return "no reader knows this kind of file"
    return text[:300]


def _not_3d(path: Path, size) -> VolumeFileError:
    if len(size) == 4:
        return VolumeFileError(f"{path}: is a 4D image ({size[3]} components or time points of {size[0]}x{size[1]}"
                               f"x{size[2]}); a 3D volume is needed")
    return VolumeFileError(f"{path}: is a {len(size)}D image; a 3D volume is needed")


def _why_unreadable(path: Path, error: Exception) -> VolumeFileError:
    """A plain-words reason SimpleITK could not read ``path``'s header: what our own header reading finds, or the
    cleaned-up cause."""
    missing = [data for data in data_files_named(path) if not data.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return VolumeFileError(f"{path}: data file {missing[0]} does not exist{more}")
    if path.name.lower().endswith(".gz"):  # a damaged stream can hide the header: say so rather than "unreadable"
        try:
            check_compressed_file(path, "gzip")
        except VolumeFileError as damaged:
            return damaged
    if path.name.lower().endswith((".nrrd", ".nhdr")):
        try:
            fields, _, _ = read_nrrd_header(path)
            sizes = nrrd_sizes(path, fields)
        except VolumeFileError as ours:
            reason = str(ours)[len(str(path)) + 2:] if str(ours).startswith(f"{path}: ") else str(ours)
            return VolumeFileError(f"{path}: not a readable volume ({reason})")
        except (OSError, UnicodeError):
            sizes = []
        if len(sizes) > 3:
            return _not_3d(path, sizes)
    if path.name.lower().endswith((".nii", ".nii.gz")) and nifti_header_size(path) == 540:
        return VolumeFileError(f"{path}: a NIfTI-2 file, which SimpleITK cannot read; save it as NIfTI-1 (e.g. "
                               "nibabel.Nifti1Image) or NRRD")
    return VolumeFileError(f"{path}: not a readable volume ({readable_reason(error)})")


def _open_3d(path: Path, read):
    """Run ``read()`` (a SimpleITK image or a reader that has read the header) and check it is a 3D volume;
    every failure becomes one VolumeFileError naming the file."""
    if not path.exists():
        raise VolumeFileError(f"{path}: no such file")
    if path.is_dir():
        raise VolumeFileError(f"{path}: is a folder, not a volume file")
    check_metaimage_header(path)
    try:
        with library_quiet():
            source = read()
    except RuntimeError as error:
        raise _why_unreadable(path, error) from None
    size, spacing, origin, direction = (source.GetSize(), source.GetSpacing(), source.GetOrigin(),
                                        np.array(source.GetDirection()).reshape(source.GetDimension(), -1))
    if len(size) == 4 and size[3] == 1 and np.allclose(direction[:3, 3], 0) and np.allclose(direction[3, :3], 0):
        # a 3D volume written as 4D with one time point (sizes 4 5 6 1): the 3D volume it is
        size, spacing, origin, direction = size[:3], spacing[:3], origin[:3], direction[:3, :3]
    elif len(size) != 3:
        raise _not_3d(path, size)
    return source, header_geometry(path, size, spacing, origin, direction)


def check_no_level(path: Path, level) -> None:
    """Refuse a level asked of a file that has none."""
    if level is not None:
        raise VolumeFileError(f"{path}: level {level} asked for, but only an OME-Zarr pyramid has levels")


def read_volume(path, series: str | None = None, level: int | None = None) -> Volume:
    """Read a 3D volume (scalar or multi-component). Raises VolumeFileError naming the file and the problem.
    A DICOM folder or file is read as its series (``series``: the UID, when the folder holds several). An OME-Zarr
    store (or a Zarr array) is read at ``level`` (default: level 0, or the level whose folder ``path`` names).

    Voxels stored uncompressed in one file in this machine's byte order (NRRD/NHDR, NIfTI, MetaImage) are
    memory-mapped read-only (no copy, no read time: the page cache serves them). Every other layout the streamed
    path reads (compressed, several files, byte-swapped, scaled; bigvolume.io.layout) is read by the same readers, so
    both paths give the same voxels and refuse the same damaged files (truncated or corrupt compressed data: their
    checksums are verified); only what those do not cover is read by SimpleITK, after a check of its compressed
    data. Missing or too short data files are refused before reading."""
    path = Path(path)
    if zarr_input.accepts(path, series):
        return zarr_input.read_volume(path, level)
    check_no_level(path, level)
    if dicom.accepts(path, series):
        return dicom.read_volume(path, series)
    geometry, dtype, components = read_geometry(path)
    layout = voxel_layout(path, dtype, components, geometry.voxel_count)
    if layout is not None and layout.is_single_native_raw:
        data = layout.files[0]
        shape = geometry.shape + ((components,) if components > 1 else ())
        mapped = np.memmap(data.path, dtype=dtype, mode="r", offset=data.offset, shape=shape)
        return Volume(mapped, geometry, owner=mapped)
    if layout is not None:
        return Volume(read_with_layout(path, geometry, dtype, components, layout), geometry)
    if path.name.lower().endswith(".gz"):
        check_compressed_file(path, "gzip", nifti_data_end(path))
    import SimpleITK as sitk
    with _without_siblings(path) as alone:
        image, geometry = _open_3d(path, lambda: sitk.ReadImage(str(alone), imageIO=_image_io(path)))
    _refuse_complex(path, image.GetPixelID())
    voxels = sitk.GetArrayViewFromImage(image)
    if image.GetDimension() == 4:  # one time point (see _open_3d)
        voxels = voxels[0]
    return Volume(owned_view(voxels, image), geometry, owner=image)


@contextlib.contextmanager
def _without_siblings(path: Path):
    """``path``, or a name for it alone in a temporary folder: ITK's NIfTI reader, given ``scan.nii.gz``, reads the
    voxels of a ``scan.nii`` beside it when there is one (while the header comes from the file given)."""
    if not path.name.lower().endswith(".nii.gz") or not path.with_name(path.name[:-3]).exists():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="bigvolume-") as folder:
        alone = Path(folder) / "volume.nii.gz"
        try:
            alone.symlink_to(path.resolve())
        except OSError:  # no symbolic links here (Windows without developer mode): a copy of the compressed file
            shutil.copyfile(path, alone)
        yield alone


def read_geometry(path, series: str | None = None, level: int | None = None) -> tuple[Geometry, np.dtype, int]:
    """Geometry, pixel type and component count from the header alone (no voxel data read); of an OME-Zarr
    store, of ``level``."""
    path = Path(path)
    if zarr_input.accepts(path, series):
        return zarr_input.read_geometry(path, level)
    check_no_level(path, level)
    if dicom.accepts(path, series):
        return dicom.read_geometry(path, series)
    if volume_suffix(path) in (".nrrd", ".nhdr"):
        plain = nrrd_geometry(path)
        if plain is not None:
            return plain
    import SimpleITK as sitk

    def read_header():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.SetImageIO(_image_io(path))
        reader.ReadImageInformation()
        return reader
    reader, geometry = _open_3d(path, read_header)
    _refuse_complex(path, reader.GetPixelID())
    components = reader.GetNumberOfComponents()
    dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID(), components)).dtype)
    return geometry, dtype, components


def _refuse_complex(path: Path, pixel_id: int) -> None:
    """Complex voxels (SimpleITK reads a NRRD of kind complex so) have no intensity to filter or window."""
    import SimpleITK as sitk
    if pixel_id in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise VolumeFileError(f"{path}: complex voxels (real and imaginary parts); this tool reads real numbers: "
                              "write the magnitude, or each part, as a volume of its own")


# An output's staging folder is named f".{name}{STAGING_MARK}" and mkdtemp's 8 characters
STAGING_MARK = ".partial-"


def _longest_name(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
        return 255  # (most file systems; NTFS: 255 UTF-16 units)


def leftover_staging(path) -> list[Path]:
    """The staging folders of earlier runs writing ``path`` that were killed (kill -9, a crash, a power cut: nothing
    could remove them), or that another run writing ``path`` is using now."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}{STAGING_MARK}"
    try:
        return sorted(item for item in folder.iterdir() if item.name.startswith(prefix) and item.is_dir())
    except OSError:
        return []


def leftovers_text(path, leftovers: list[Path]) -> str:
    """What to say of :func:`leftover_staging`'s folders: how many, their bytes, their names."""
    held = sum(entry.stat().st_size for item in leftovers for entry in item.rglob("*") if entry.is_file())
    names = ", ".join(item.name for item in leftovers[:3]) + (", ..." if len(leftovers) > 3 else "")
    return (f"{len(leftovers)} staging folder{'s' * (len(leftovers) != 1)} of interrupted runs writing "
            f"{Path(path).name} {'lie' if len(leftovers) != 1 else 'lies'} beside it, holding {format_bytes(held)} "
            f"({names}): remove them unless another run is writing it now")


def check_output_path(path, inputs=()) -> Path:
    """Refuse, before any work, an output that cannot be written or would overwrite an input. Staging folders that
    killed runs left beside it are said (nothing else removes them)."""
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
    longest = _longest_name(folder) - len(f".{STAGING_MARK}12345678")
    if max(len(os.fsencode(written.name)) for written in output_files(path)) > longest:
        raise VolumeFileError(f"{path}: the file name is too long for this folder (at most {longest} bytes here, "
                              "its staging copy's name included)")  # (was an OSError traceback while writing)
    if path.is_dir():
        raise VolumeFileError(f"{path}: is a folder")
    for source in inputs:
        source = Path(source)
        store = zarr_input.store_of(source)
        if store is not None and is_inside(path, store):  # new files in a store are foreign objects in it
            raise VolumeFileError(f"{path}: inside the input's Zarr store {store}; write the output elsewhere")
        for read in input_files(source):
            for written in output_files(path):
                if not same_file(written, read):
                    continue
                if written == path and read == source:
                    raise VolumeFileError(f"{path}: the output would overwrite the input")
                raise VolumeFileError(f"{path}: writing it would overwrite the input's data file {read}")
    owner = _other_header_of(path, [data for data in output_files(path)[1:] if os.path.lexists(data)])
    if owner is not None:
        header, data = owner
        raise VolumeFileError(f"{path}: writing it would replace {data}, the data file of {header}; choose another "
                              "name")
    leftovers = leftover_staging(path)
    if leftovers and (path.resolve(), tuple(leftovers)) not in _leftovers_said:  # (checked again by the writers)
        _leftovers_said.add((path.resolve(), tuple(leftovers)))
        logger.warning(f"{path}: {leftovers_text(path, leftovers)}")
    return path


_leftovers_said: set = set()


def _other_header_of(path: Path, data_files: list[Path]) -> tuple[Path, Path] | None:
    """(header, data file) when a detached header beside ``path``, other than ``path``, names one of ``data_files``
    (x.nhdr's x.raw, which writing x.mhd would replace); a data file no header names (left by a kill) may go."""
    if not data_files:
        return None
    for header in sorted(path.parent.iterdir() if str(path.parent) else Path(".").iterdir()):
        if volume_suffix(header) not in (".nhdr", ".mhd") or same_file(header, path) or not header.is_file():
            continue
        try:
            named = data_files_named(header)
        except (VolumeFileError, OSError, UnicodeError):
            continue
        for data in data_files:
            if any(same_file(data, other) for other in named):
                return header, data
    return None


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links and ``..`` resolved; neither need exist)."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def input_files(path) -> list[Path]:
    """The files a volume consists of: the path itself and every data file its header names (detached NRRD or
    MetaImage data files, LISTs and patterns included)."""
    path = Path(path)
    return [path] + data_files_named(path)


def same_file(a: Path, b: Path) -> bool:
    """Whether two names are one file: the same resolved path (links, ``..``; the file need not exist yet) or, for
    files that exist, the same inode (hard links, a case-insensitive file system)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def output_files(path) -> list[Path]:
    """Every file writing a volume to ``path`` may create: the path, and a detached header's data files."""
    path = Path(path)
    return [path] + _data_files_of(path)


def _data_files_of(header: Path) -> list[Path]:
    """Data files a detached-header output would create beside ``header``."""
    suffix = volume_suffix(header)
    if suffix not in (".nhdr", ".mhd"):
        return []
    stem = header.name[:-len(suffix)]  # scan.v2.nhdr -> scan.v2.raw, as the writers name it (not scan.raw)
    return [header.with_name(stem + ext) for ext in (".raw", ".raw.gz", ".zraw")]


# Outputs this process has put in place, in order: after a Ctrl-C the command line says which are complete.
COMMITTED: list[Path] = []


def committed(path) -> None:
    """Record that the output ``path`` is complete and in place."""
    COMMITTED.append(Path(path))


@contextlib.contextmanager
def _commits_serialised(folder: Path):
    """Hold the destination folder's lock while a run moves its files in: two runs writing the same header and data
    file at once could otherwise interleave their moves and leave one's header over the other's data. An advisory
    lock on the folder itself, so no lock file is left behind; where there is none (Windows, some network file
    systems) the moves go ahead unserialised."""
    try:
        import fcntl
        handle = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(handle)  # releases the lock


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path with the final file name inside a hidden folder next to ``path``; on success move
    every file written there into place, data files first and ``path`` last; on failure remove them all."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    staging = None
    try:
        # A Ctrl-C after the folder is made but before ``staging`` names it would leave it behind: held till then.
        with interrupt_as_flag():
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}{STAGING_MARK}", dir=folder))
        yield staging / path.name
        written = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        if not any(p.name == path.name for p in written):
            raise VolumeFileError(f"{path}: the writer produced no file")
        # A Ctrl-C between two moves would leave data files without their header: the moves finish first, and an
        # interrupt that arrives meanwhile is dropped (the output is then complete: the run has done its work). A
        # kill cannot be held: an old header goes first, so a kill between the moves leaves a missing output, never
        # an old header over new data (read silently: a data file longer than its header says passes).
        with interrupt_as_flag(raise_at_end=False), _commits_serialised(folder):
            if len(written) > 1 and os.path.lexists(path):
                os.unlink(path)
            for item in written:
                os.replace(item, folder / item.name)
            committed(path)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image of ``volume``; direction columns that are not unit vectors (as a MetaImage's matrix may
    give them) go into the spacing, so every format stores the same voxel-to-LPS mapping in the same way (NIfTI
    refused them as a sheared grid, VTK read a MetaImage's spacing without them)."""
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array), isVector=volume.array.ndim == 4)
    spacing, direction = unit_axes(volume.geometry)
    image.SetSpacing(spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(tuple(direction.ravel()))
    return image


def unit_axes(geometry: Geometry) -> tuple[tuple[float, float, float], np.ndarray]:
    """(spacing, direction) of ``geometry`` with unit direction columns: the same voxel-to-LPS mapping."""
    direction = np.asarray(geometry.direction, float)
    lengths = np.linalg.norm(direction, axis=0)
    if np.allclose(lengths, 1.0, rtol=0, atol=1e-12):
        return tuple(geometry.spacing), direction
    return tuple(float(s * n) for s, n in zip(geometry.spacing, lengths)), direction / lengths


def check_geometry_fits(path, geometry: Geometry) -> None:
    """NIfTI stores axes at right angles only: its writer (ITK's) would make a sheared grid's axes orthogonal,
    moving every voxel but the origin, and say nothing of it but a warning on stderr. Refused in one line."""
    path = Path(path)
    if volume_suffix(path) in (".nii", ".nii.gz"):
        direction = unit_axes(geometry)[1]
        if not orthonormal(direction, atol=1e-5):
            raise VolumeFileError(f"{path}: the volume's axes are not at right angles (a sheared grid), which NIfTI "
                                  "cannot store: its geometry would change; write .nrrd, .nhdr or .mha")


def check_writable_type(path, dtype, way_out: str = "convert it, e.g. resample --type float32") -> None:
    """Refuse a voxel type no output format here stores (float16, booleans, complex...) in one line, with the way
    out (``way_out``: for the command at hand; resample's option by default); SimpleITK raised a TypeError."""
    dtype = np.dtype(dtype)
    if not (dtype.kind in "iu" and dtype.itemsize in (1, 2, 4, 8) or dtype.kind == "f" and dtype.itemsize in (4, 8)):
        raise VolumeFileError(f"{path}: pixel type {dtype} cannot be written (NRRD, NIfTI and MetaImage have no such "
                              f"type): {way_out}")


def write_volume(volume: Volume, path, compress: bool | None = None) -> Path:
    """Write ``volume`` to ``path`` (format from the suffix). ``compress``: gzip the voxel data; default on for
    ``.nrrd``/``.mha``, off for detached headers (so they stream) and by suffix for NIfTI."""
    return write_volumes([(volume, path)], compress)[0]


def write_volumes(items, compress: bool | None = None) -> list[Path]:
    """Write each (volume, path) of ``items`` as :func:`write_volume` does, together: every one is written before
    any is put in place (a volume and its mask: a failure writing the second left the first alone)."""
    paths = []
    for volume, path in items:
        path = check_output_path(path)
        check_writable_type(path, volume.array.dtype)
        check_geometry_fits(path, volume.geometry)
        paths.append(path)
    with contextlib.ExitStack() as outputs:  # committed when all are written, the first last
        staged = [outputs.enter_context(atomic_output(path)) for path in paths]
        for (volume, _), path, staging_path in zip(items, paths, staged):
            _write_staged(volume, path, staging_path, compress)
    return paths


def _write_staged(volume: Volume, path: Path, staging_path: Path, compress: bool | None) -> None:
    suffix = volume_suffix(path)
    if compress is None:
        compress = suffix in (".nrrd", ".mha")
    import SimpleITK as sitk
    image = to_sitk(volume)
    try:
        # ITK knows its suffixes in lower case only (A.NII failed, A.NHDR came out attached): written so, then
        # renamed (a detached header names its data file A.raw, written beside it)
        lower = staging_path.with_name(staging_path.name[:-len(suffix)] + suffix)
        sitk.WriteImage(image, str(lower), useCompression=bool(compress) and suffix in COMPRESSIBLE_SUFFIXES)
        if lower != staging_path:
            os.replace(lower, staging_path)
    except RuntimeError as error:
        raise VolumeFileError(f"{path}: cannot write ({readable_reason(error)})") from None
    except OSError as error:
        raise VolumeFileError(f"{path}: cannot write ({error.strerror or error})") from None


def file_size(path, series: str | None = None, level: int | None = None) -> int:
    """Bytes on disk of a volume file, its detached data files included: those its header names (one file, a LIST,
    a printf pattern), else the data files our writers put beside it; of a DICOM series, all its files; of an
    OME-Zarr store, the level's array."""
    path = Path(path)
    if zarr_input.accepts(path, series):
        return zarr_input.file_size(path, level)
    if dicom.accepts(path, series):
        return dicom.file_size(path, series)
    files = dict.fromkeys([path] + (data_files_named(path) or _data_files_of(path)))
    return sum(data_file.stat().st_size for data_file in files if data_file.is_file())
