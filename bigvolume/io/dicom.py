"""DICOM series as input volumes: a folder, or any one file of a series, is read as its whole series.

GDCM (through SimpleITK's ImageSeriesReader) finds the series in a folder and sorts their files along the slice
normal. The geometry follows SimpleITK's series reader: origin = ImagePositionPatient of the first sorted slice,
in-plane spacing from PixelSpacing, I and J axes from ImageOrientationPatient (oblique too), K = I x J, and the slice
spacing = the distance from the first to the last slice along K / (slices - 1). Unlike SimpleITK we refuse slices that
are not evenly spaced along K (missing slices, gantry tilt, mixed stacks): the volume's grid would be wrong.

Voxels are read one file per slice (rescale slope/intercept applied, in one pixel type that holds every slice's
rescaled values: SimpleITK's series reader uses the first slice's and wraps the others), so a series streams slab by
slab like any raw file: :class:`DicomSlabReader`. The in-memory read is the same reader asked for every slice, so
both paths give the same volume.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import VolumeFileError
from ..core.geometry import Geometry, header_geometry
from ..core.text import numbers_text
from .library_output import output_captured, refuse_jpeg_damage
from .slab_readers import SlabReader
from ..core.volume import Volume, owned_view

if TYPE_CHECKING:  # SimpleITK is imported where it is used: it costs about 90 MiB, and plain NRRDs do without it
    import SimpleITK as sitk

logger = logging.getLogger("bigvolume")

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# Suffixes of the formats we read ourselves: never probed for DICOM.
_OTHER_VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".gz", ".mha", ".mhd", ".raw", ".zraw", ".tif", ".tiff", ".png",
                          ".jpg", ".jpeg", ".bmp")
SPACING_TOLERANCE = 0.1  # largest deviation of a slice from its place on the regular grid, in slice spacings
# Slices of one series: direction cosines (written with a few decimals) and pixel spacings (relative) that agree
ORIENTATION_TOLERANCE = 1e-3
PIXEL_SPACING_TOLERANCE = 1e-4

SERIES_UID_TAG = "0020|000e"
DESCRIPTION_TAG = "0008|103e"


def _has_dicom_preamble(path: Path) -> bool:
    """Part 10 files carry 'DICM' after a 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def is_dicom_file(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(_OTHER_VOLUME_SUFFIXES) or not path.is_file():
        return False
    if name.endswith(DICOM_SUFFIXES) or _has_dicom_preamble(path):
        return True
    # Files written without the Part 10 header and named without a suffix (IM0001) or by their UID
    # (1.2.840.113619.2.55): one was read alone, as SimpleITK's plain reader reads it, not as its series
    # (not hidden files: a Zarr v2 store's .zattrs and .zgroup loaded SimpleITK's 90 MiB before a plan)
    if (path.suffix == "" or path.suffix[1:].isdigit()) and not name.startswith("."):
        import SimpleITK as sitk
        return sitk.ImageFileReader().GetImageIOFromFileName(str(path)) == "GDCMImageIO"
    return False


def is_dicom(path) -> bool:
    """A DICOM file, or a folder holding at least one (other folders are not volumes and stay refused as such)."""
    path = Path(path)
    if path.is_dir():
        return any(is_dicom_file(item) for item in sorted(path.iterdir()))
    return is_dicom_file(path)


def accepts(path, series: str | None) -> bool:
    """Whether ``path`` goes to this module; a series UID given for anything else is refused."""
    if is_dicom(path):
        return True
    if series is not None:
        raise VolumeFileError(f"{path}: not a DICOM series; a series UID (--series) applies only to DICOM")
    return False


@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[Path, ...]  # sorted along the slice normal, as GDCM sorts them
    description: str

    def describe(self) -> str:
        text = f"{self.uid} ({len(self.files)} slice{'s' * (len(self.files) != 1)}"
        return text + (f", {self.description!r})" if self.description else ")")


def _header(path: Path) -> sitk.ImageFileReader:
    import SimpleITK as sitk
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("GDCMImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise VolumeFileError(f"{path}: not a readable DICOM image") from None
    return reader


def _tag(reader: sitk.ImageFileReader, tag: str) -> str:
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""


@functools.lru_cache(maxsize=16)
def _series_in(folder: Path, modified_ns: int) -> tuple[DicomSeries, ...]:
    """Every series in ``folder`` (cached while the folder is unchanged: a command asks several times)."""
    import SimpleITK as sitk
    finder = sitk.ImageSeriesReader()
    series = []
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found": find_series says why, in words
    try:
        uids = finder.GetGDCMSeriesIDs(str(folder))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    for uid in uids:
        files = tuple(Path(name) for name in finder.GetGDCMSeriesFileNames(str(folder), uid))
        if files:
            series.append(DicomSeries(uid, files, _tag(_header(files[0]), DESCRIPTION_TAG)))
    return tuple(series)


def _unreadable_files(folder: Path) -> list[Path]:
    """DICOM-looking files of ``folder`` that GDCM left out of every series (damaged or truncated)."""
    listed = {path.resolve() for item in list_series(folder) for path in item.files}
    return [path for path in sorted(folder.iterdir())
            if is_dicom_file(path) and path.name.upper() != "DICOMDIR" and path.resolve() not in listed]


# (7FE0,0010) Pixel Data, in little- and big-endian byte order; the value representations of an explicit-VR element
# with a 4-byte length (bytes 6-7 reserved)
PIXEL_DATA_TAGS = {"<": b"\xe0\x7f\x10\x00", ">": b"\x7f\xe0\x00\x10"}
LONG_VRS = (b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN")
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data: fragments, each of its own length
PIXEL_DATA_HEADER = 12  # bytes of an explicit-VR Pixel Data element's tag, VR, reserved bytes and length (8 implicit)


def _pixel_data_length(data: bytes) -> int | None:
    """The length the last Pixel Data element of a DICOM file declares (bytes), None when there is none or it is
    encapsulated."""
    for order, tag in PIXEL_DATA_TAGS.items():
        at = data.rfind(tag)
        if at < 0:
            continue
        explicit = data[at + 4:at + 6] in LONG_VRS and data[at + 6:at + 8] == b"\0\0"
        field = data[at + 8:at + 12] if explicit else data[at + 4:at + 8]
        if len(field) < 4:
            return 0
        length = int.from_bytes(field, "little" if order == "<" else "big")
        return None if length == UNDEFINED_LENGTH else length
    return None


def _damaged_image(path: Path) -> bool:
    """Whether a DICOM-looking file that GDCM left out of every series is a damaged image (it holds pixel data, or
    its file meta group is cut short) rather than an object of another kind (a structured report, an RT structure
    set, a presentation state: no pixel data, whole)."""
    try:
        data = path.read_bytes()
    except OSError:
        return True
    if any(tag in data for tag in PIXEL_DATA_TAGS.values()):
        return True
    if data[128:132] != b"DICM":
        return False  # a .dcm file of some other kind (no Part 10 header to check)
    # (0002,0000) UL: the file meta group's length, the first element after the preamble
    if data[132:138] != b"\x02\x00\x00\x00UL" or len(data) < 144:
        return True
    return len(data) < 144 + int.from_bytes(data[140:144], "little")


# (7FE0,0008) Float Pixel Data and (7FE0,0009) Double Float Pixel Data (parametric maps), little-endian
FLOAT_PIXEL_DATA_TAGS = (b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")


def _start_of(path: Path) -> bytes:
    """A DICOM file's first 64 KiB: its header and the start of its pixel data element."""
    with open(path, "rb") as handle:
        return handle.read(1 << 16)


def _why_no_series(folder: Path) -> str:
    """What the DICOM-looking files of a folder where GDCM found no series are, in words (empty when none)."""
    files = [path for path in sorted(folder.iterdir()) if is_dicom_file(path)]
    if not files:
        return ""
    floats = [path for path in files if any(tag in _start_of(path) for tag in FLOAT_PIXEL_DATA_TAGS)]
    if floats:
        return (f": {floats[0].name}{f' and {len(floats) - 1} other file(s)' if len(floats) > 1 else ''} of its "
                f"{len(files)} DICOM file(s) hold float pixel data (a parametric map), which GDCM cannot read")
    return f": GDCM read no image from its {len(files)} DICOM file(s) (damaged, or objects without an image?)"


@functools.lru_cache(maxsize=16)
def _left_out(folder: Path, modified_ns: int) -> tuple[list[Path], list[Path]]:
    """The DICOM-looking files GDCM left out of every series in ``folder``, and the damaged images among them (GDCM
    leaves those out without a word: the series would be short, its end slices gone and the origin moved when the
    first is, or have a gap); cached while the folder is unchanged, as :func:`_series_in` (a command asks several
    times, and each asking read every file's first bytes)."""
    unreadable = _unreadable_files(folder)
    return unreadable, [item for item in unreadable if _damaged_image(item)]


def list_series(folder) -> tuple[DicomSeries, ...]:
    folder = Path(folder)
    return _series_in(folder.resolve(), folder.stat().st_mtime_ns)


_told: set[tuple[Path, str]] = set()


def find_series(path, series: str | None = None) -> DicomSeries:
    """The series that ``path`` (a folder, or one file of the series) stands for; ``series`` (a UID) chooses among
    several in the folder. One file of a multi-file series means its whole series, said once in a note."""
    path = Path(path)
    if not path.exists():
        raise VolumeFileError(f"{path}: no such file or folder")
    folder = path if path.is_dir() else path.parent
    found = list_series(folder)
    if not found:
        raise VolumeFileError(f"{path}: no readable DICOM series{_why_no_series(folder)}")
    unreadable, damaged = _left_out(folder.resolve(), folder.stat().st_mtime_ns)
    if damaged:
        raise VolumeFileError(f"{damaged[0]}: a DICOM image that cannot be read (damaged or truncated?), left out of "
                              f"every series{f' with {len(damaged) - 1} other(s)' if len(damaged) > 1 else ''}: it "
                              "may be a slice of the series, which would be read short; refused (move it away to "
                              "read the others)")
    if unreadable and (folder.resolve(), "unreadable") not in _told:
        _told.add((folder.resolve(), "unreadable"))
        logger.warning(f"{folder}: {len(unreadable)} DICOM file(s) hold no image (reports, structure sets?) and "
                       f"are left out: {', '.join(p.name for p in unreadable[:5])}")
    if path.is_file():
        own = _tag(_header(path), SERIES_UID_TAG)
        if series is not None and own and own != series:  # (the note below would have called it "one file of" it)
            raise VolumeFileError(f"{path}: a file of DICOM series {own}, not of the series {series} asked for: give "
                                  "the folder with --series, or a file of that series")
        uid = series or own
        if series is None and not uid:
            raise VolumeFileError(f"{path}: this DICOM file has no series UID (0020|000e)")
    else:
        uid = series
    if uid is None:
        if len(found) > 1:
            listing = "; ".join(item.describe() for item in found)
            raise VolumeFileError(f"{path}: holds {len(found)} DICOM series; choose one with --series UID "
                                  f"(Python: series=UID): {listing}")
        return found[0]
    chosen = [item for item in found if item.uid == uid]
    if not chosen:
        listing = "; ".join(item.describe() for item in found)
        raise VolumeFileError(f"{path}: no DICOM series {uid} in {folder}; found {listing}")
    if path.is_file() and len(chosen[0].files) > 1 and (path.resolve(), uid) not in _told:
        _told.add((path.resolve(), uid))
        logger.warning(f"{path}: one file of a DICOM series; reading the whole series {uid} "
                       f"({len(chosen[0].files)} slices)")
    return chosen[0]


def _pixel_dtype(reader: sitk.ImageFileReader) -> np.dtype:
    import SimpleITK as sitk
    image = sitk.Image([1, 1, 1], reader.GetPixelID(), reader.GetNumberOfComponents())
    return np.dtype(sitk.GetArrayViewFromImage(image).dtype)


# SOP classes whose geometry lies in functional group sequences (per frame, or shared), which GDCM reads and
# SimpleITK's tags do not show: Enhanced and Legacy Converted Enhanced CT, MR, PET; Enhanced US Volume; X-Ray 3D;
# Breast Tomosynthesis; multi-frame Secondary Capture (what SimpleITK itself writes).
ENHANCED_MULTIFRAME = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2", "1.2.840.10008.5.1.4.1.1.4.1",
                       "1.2.840.10008.5.1.4.1.1.4.4", "1.2.840.10008.5.1.4.1.1.128.1", "1.2.840.10008.5.1.4.1.1.130",
                       "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.13.1.1",
                       "1.2.840.10008.5.1.4.1.1.13.1.2", "1.2.840.10008.5.1.4.1.1.13.1.3",
                       "1.2.840.10008.5.1.4.1.1.12.1.1", "1.2.840.10008.5.1.4.1.1.12.2.1",
                       "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3",
                       "1.2.840.10008.5.1.4.1.1.7.4"}
SOP_CLASS_TAG, PHOTOMETRIC_TAG, PIXEL_SPACING_TAG, ORIENTATION_TAG = "0008|0016", "0028|0004", "0028|0030", "0020|0037"
SLICE_SPACING_TAG, FRAMES_TAG, POSITION_TAG = "0018|0088", "0028|0008", "0020|0032"


def _say_what_was_assumed(series: DicomSeries, headers, spacing) -> None:
    """Notes for what GDCM filled in or changed without a word: MONOCHROME1 values inverted (as ITK and Slicer
    invert them for display: not the modality values), a pixel spacing of 1 x 1 mm and an identity orientation
    where the tags are missing, and a multi-frame file's slice spacing of 1 mm where its frames give none (or are
    not on one regular grid: out of order, uneven, tilted)."""
    where = f"{series.files[0]}" if len(series.files) == 1 else f"{series.files[0].parent} (series {series.uid})"
    inverted = sum(_tag(header, PHOTOMETRIC_TAG) == "MONOCHROME1" for header in headers)
    if inverted:
        logger.warning(f"{where}: {inverted} slice file(s) MONOCHROME1 (brighter is lower): their values are read "
                       "inverted, as ITK and Slicer read them for display, not as the stored modality values")
    enhanced = _tag(headers[0], SOP_CLASS_TAG) in ENHANCED_MULTIFRAME  # (its spacing and axes lie in sequences)
    if not enhanced and tuple(spacing[:2]) == (1.0, 1.0) \
            and not any(header.HasMetaDataKey(PIXEL_SPACING_TAG) for header in headers):
        logger.warning(f"{where}: no PixelSpacing in the files: pixels of 1 x 1 mm assumed")
    if not enhanced and not any(header.HasMetaDataKey(ORIENTATION_TAG) for header in headers):
        logger.warning(f"{where}: no ImageOrientationPatient in the files: the axes are assumed to be L, P, S")
    frames = int(_tag(headers[0], FRAMES_TAG) or 1) if len(headers) == 1 else 1
    # frames off one regular grid: GDCM gives 1 x 1 x 1 from the functional groups, and 1 mm between legacy frames
    if frames > 1 and (tuple(spacing) == (1.0, 1.0, 1.0) if enhanced else
                       spacing[2] == 1.0 and not headers[0].HasMetaDataKey(SLICE_SPACING_TAG)):
        logger.warning(f"{where}: {frames} frames at a spacing of 1 mm, GDCM's default where the file gives none "
                       "or its frames are not on one regular grid (out of order, uneven, tilted): check the "
                       "geometry, or convert the file to one file per slice")


# (0020,0032) ImagePositionPatient, (0028,1052) RescaleIntercept, (0028,1053) RescaleSlope: little-endian tags
FRAME_TAGS = {"position": b"\x20\x00\x32\x00", "intercept": b"\x28\x00\x52\x10",
              "slope": b"\x28\x00\x53\x10"}


def _decimal_strings(data: bytes, tag: bytes) -> list[tuple[float, ...]]:
    """The values of every element ``tag`` (DS, explicit or implicit VR, little endian) anywhere in ``data``: the
    per-frame functional groups of an enhanced multi-frame file hold one per frame, nested in sequences that
    SimpleITK's tags do not show. Occurrences that do not read as numbers are skipped."""
    found, at = [], data.find(tag)
    while at >= 0:
        explicit = data[at + 4:at + 6] == b"DS"
        length = int.from_bytes(data[at + 6:at + 8] if explicit else data[at + 4:at + 8], "little")
        if 0 < length < 256:  # (the value starts 8 bytes after the tag either way)
            try:
                found.append(tuple(float(part) for part in data[at + 8:at + 8 + length].decode("ascii").split("\\")))
            except (UnicodeDecodeError, ValueError):
                pass
        at = data.find(tag, at + 4)
    return found


def _check_frames(path: Path, geometry: Geometry) -> None:
    """A multi-frame file whose frames each carry their own position or rescale (an enhanced CT or MR's per-frame
    functional groups): GDCM reads it on one regular grid from the first frames, with the first frame's rescale.
    Refused when a frame lies off that grid (tilted, uneven, out of order) or the frames are rescaled otherwise."""
    frames = geometry.dimensions[2]
    if frames < 2:
        return
    data = path.read_bytes()
    positions = [p for p in _decimal_strings(data, FRAME_TAGS["position"]) if len(p) == 3]
    if len(positions) >= frames:  # the per-frame groups come last (group 5200, after any top-level position)
        positions = np.array(positions[-frames:])
        axes = np.asarray(geometry.direction, float).reshape(3, 3)
        expected = np.asarray(geometry.origin) + np.outer(np.arange(frames) * geometry.spacing[2], axes[:, 2])
        off = np.linalg.norm(positions - expected, axis=1)
        worst = int(np.argmax(off))
        if off[worst] > SPACING_TOLERANCE * geometry.spacing[2]:
            raise VolumeFileError(f"{path}: frame {worst + 1} of {frames} lies {off[worst]:.3g} mm off the regular "
                                  f"grid of {geometry.spacing[2]:.6g} mm its file is read on (frames tilted, uneven or "
                                  "out of order): refused; convert it to one file per slice")
    for name in ("slope", "intercept"):
        values = {v[0] for v in _decimal_strings(data, FRAME_TAGS[name]) if len(v) == 1}
        if len(values) > 1:
            raise VolumeFileError(f"{path}: its frames are rescaled otherwise (rescale {name} "
                                  f"{numbers_text(sorted(values)[:4])}{' ...' if len(values) > 4 else ''}), and "
                                  "would all be read with the first frame's: refused; convert it to one file per slice")


@functools.lru_cache(maxsize=16)
def _series_geometry(series: DicomSeries) -> tuple[Geometry, np.dtype, int, int]:
    """(geometry, dtype, components, SimpleITK pixel ID) of a series, from the slice headers alone."""
    first = _header(series.files[0])
    components = first.GetNumberOfComponents()
    size = first.GetSize()
    direction = np.array(first.GetDirection()).reshape(3, 3)
    if len(series.files) == 1:  # one file: a single slice or a multi-frame volume, as GDCM reads it
        geometry = header_geometry(series.files[0], size, first.GetSpacing(), first.GetOrigin(), direction)
        _say_what_was_assumed(series, [first], first.GetSpacing())
        _check_frames(series.files[0], geometry)
        return geometry, _pixel_dtype(first), components, first.GetPixelID()
    headers = [first] + [_header(path) for path in series.files[1:]]
    for path, header in zip(series.files, headers):
        if header.GetSize()[:2] != size[:2]:
            raise VolumeFileError(f"{path}: slice of {header.GetSize()[0]}x{header.GetSize()[1]} pixels in a series "
                                  f"of {size[0]}x{size[1]}: not one volume")
        if header.GetNumberOfComponents() != components:
            raise VolumeFileError(f"{path}: slice of {header.GetNumberOfComponents()} samples per pixel in a series "
                                  f"of {components} (RGB beside gray?): not one volume")
        if len(header.GetSize()) > 2 and header.GetSize()[2] != 1:
            raise VolumeFileError(f"{path}: a multi-frame file inside a series of {len(series.files)} files")
        # Each slice read on the first one's grid: another orientation or pixel size would be drawn in the wrong place
        if not np.allclose(np.array(header.GetDirection()).reshape(3, 3), direction, atol=ORIENTATION_TOLERANCE):
            raise VolumeFileError(f"{path}: a slice oriented otherwise than the first of series {series.uid}: not "
                                  "one volume")
        if not np.allclose(header.GetSpacing()[:2], first.GetSpacing()[:2], rtol=PIXEL_SPACING_TOLERANCE, atol=0):
            raise VolumeFileError(f"{path}: pixel spacing {numbers_text(header.GetSpacing()[:2])} mm in a series "
                                  f"of {numbers_text(first.GetSpacing()[:2])} mm: not one volume")
    unplaced = [path for path, header in zip(series.files, headers) if not header.HasMetaDataKey(POSITION_TAG)]
    if unplaced:  # (GDCM puts such a slice at 0, 0, 0: it was "off the grid", and another file was named)
        text = ("a slice without ImagePositionPatient: its place in the volume is unknown" if len(unplaced) == 1 else
                f"{len(unplaced)} of {len(headers)} slices without ImagePositionPatient: their places in the volume "
                "are unknown")
        raise VolumeFileError(f"{unplaced[0]}: {text} (series {series.uid})")
    positions = np.array([header.GetOrigin() for header in headers], dtype=float)
    normal = direction[:, 2]
    count = len(series.files)
    spacing_k = float(np.dot(positions[-1] - positions[0], normal)) / (count - 1)
    if not spacing_k > 0:
        raise VolumeFileError(f"{series.files[0]}: the slices of series {series.uid} do not advance along the "
                              "slice normal (all at one position?)")
    expected = positions[0] + np.outer(np.arange(count) * spacing_k, normal)
    worst = int(np.argmax(np.linalg.norm(positions - expected, axis=1)))
    if np.linalg.norm(positions[worst] - expected[worst]) > SPACING_TOLERANCE * spacing_k:
        unreadable = _unreadable_files(series.files[0].parent)
        why = (f"{len(unreadable)} unreadable DICOM file(s) in the folder, e.g. {unreadable[0].name}" if unreadable
               else "missing slices, gantry tilt or mixed stacks")
        raise VolumeFileError(f"{series.files[worst]}: slice {worst + 1} of {count} of series {series.uid} lies "
                              f"{np.linalg.norm(positions[worst] - expected[worst]):.3g} mm off the regular grid of "
                              f"{spacing_k:.6g} mm ({why}): refused")
    spacing = (first.GetSpacing()[0], first.GetSpacing()[1], spacing_k)
    geometry = Geometry((size[0], size[1], count), spacing, tuple(positions[0]), direction)
    _say_what_was_assumed(series, headers, spacing)
    dtype, pixel_id = _common_pixel_type(headers)
    return geometry, dtype, components, pixel_id


def _common_pixel_type(headers) -> tuple[np.dtype, int]:
    """(dtype, SimpleITK pixel ID) that holds every slice's rescaled values. GDCM gives each slice the type of its
    own rescale slope and intercept; read in the first slice's type (as SimpleITK's series reader does), a later
    slice with another intercept wrapped (uint16 under intercept 0, then -500 HU read as 65036)."""
    import SimpleITK as sitk
    dtypes = {_pixel_dtype(header) for header in headers}
    if len(dtypes) == 1 or headers[0].GetNumberOfComponents() != 1:
        return _pixel_dtype(headers[0]), headers[0].GetPixelID()
    common = np.result_type(*dtypes)
    return common, sitk.GetImageFromArray(np.zeros((1, 1, 1), common)).GetPixelID()


def read_geometry(path, series: str | None = None) -> tuple[Geometry, np.dtype, int]:
    geometry, dtype, components, _ = _series_geometry(find_series(path, series))
    return geometry, dtype, components


class DicomSlabReader(SlabReader):
    """Slices of a series, one file each, read with SimpleITK in the series' common pixel type (rescale applied)."""

    def __init__(self, series: DicomSeries):
        geometry, dtype, components, self._pixel_id = _series_geometry(series)
        super().__init__(series.files[0].parent, geometry, dtype, components)
        self.series = series
        self._whole = None  # a one-file (multi-frame) series is read once

    @property
    def streams(self) -> bool:
        return len(self.series.files) > 1

    def _read_file(self, path: Path) -> np.ndarray:
        import SimpleITK as sitk
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.SetImageIO("GDCMImageIO")
        reader.SetOutputPixelType(self._pixel_id)
        try:  # GDCM's JPEG decoder, like ITK's, only prints that the data are corrupt (on stderr)
            with output_captured(2) as printed:
                image = reader.Execute()
        except RuntimeError:
            raise VolumeFileError(f"{path}: cannot read this DICOM slice (damaged or truncated?)") from None
        refuse_jpeg_damage(path, printed.text, 2, "this DICOM slice")
        self._check_pixel_data(path, reader)
        array = owned_view(sitk.GetArrayViewFromImage(image), image)  # the view must keep its image alive
        expected = int(np.prod(self.slice_shape)) * (1 if self.streams else self.slices)
        if array.size != expected:
            raise VolumeFileError(f"{path}: {array.size} pixels where {expected} were expected")
        return array

    @staticmethod
    def _check_pixel_data(path: Path, reader) -> None:
        """GDCM does not compare an uncompressed Pixel Data element's length with rows x columns x samples x frames:
        what is missing of a short one came back as whatever its buffer held (another slice's rows)."""
        def number(tag, default):
            text = _tag(reader, tag)
            return int(text) if text.isdigit() else default
        bits = number("0028|0100", 0)
        if bits < 8:  # bit-packed (1 bit)
            return
        expected = (number("0028|0010", 0) * number("0028|0011", 0) * number("0028|0002", 1)
                    * number("0028|0008", 1) * (bits // 8))
        with open(path, "rb") as handle:
            # A whole element of ``expected`` bytes ending the file has its tag and length just before them: those
            # bytes alone are read (GDCM has just read the file); anything else (short, encapsulated, followed by
            # other elements) is looked for in the whole file
            start = os.fstat(handle.fileno()).st_size - expected - PIXEL_DATA_HEADER
            handle.seek(max(0, start))
            head = handle.read(PIXEL_DATA_HEADER)
            # the tag at 0 (explicit VR) or at 4 (implicit VR: tag and length only)
            at = max(head.rfind(tag) for tag in PIXEL_DATA_TAGS.values())
            declared = _pixel_data_length(head) if start >= 0 and at in (0, 4) else None
            if declared != expected:
                handle.seek(0)
                declared = _pixel_data_length(handle.read())
        if declared is None:  # encapsulated
            return
        if declared < expected:
            raise VolumeFileError(f"{path}: its pixel data hold {declared} bytes where its rows, columns, samples "
                                  f"and frames need {expected} (damaged or truncated?)")

    def _read_into(self, k0: int, k1: int, out: np.ndarray) -> None:
        if not self.streams:
            if self._whole is None:
                self._whole = np.array(self._read_file(self.series.files[0])).reshape(
                    (self.slices,) + self.slice_shape)
            out[...] = self._whole[k0:k1]
            return
        for k in range(k0, k1):
            out[k - k0] = self._read_file(self.series.files[k]).reshape(self.slice_shape)

    def close(self) -> None:
        self._whole = None


def open_slabs(path, series: str | None = None) -> DicomSlabReader:
    return DicomSlabReader(find_series(path, series))


def read_volume(path, series: str | None = None) -> Volume:
    with open_slabs(path, series) as reader:
        return Volume(reader.read(0, reader.slices), reader.geometry)


def file_size(path, series: str | None = None) -> int:
    """Bytes on disk of the series' files."""
    return sum(item.stat().st_size for item in find_series(path, series).files)
