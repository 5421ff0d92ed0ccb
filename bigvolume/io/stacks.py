"""Image stacks (one 2D TIFF/PNG/JPEG/BMP file per slice): finding the slices, checking them from their headers,
and reading them slab by slab with crop, grayscale conversion and a parallel decoder, as a SlabReader that the
streaming resampler (bigvolume.engine.stream) consumes like any volume file.
"""
from __future__ import annotations

import glob as globbing
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import BigVolumeError, VolumeFileError
from ..core.geometry import Geometry, orientation_direction
from .files import readable_reason
from .slab_readers import SlabReader
from .tiff_tags import imagej_calibration, tiff_samples

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
# Files that sit among the slices but are not slices: Skyscan/Bruker reconstruction aids (spr = spot reference).
NOT_SLICES = re.compile(r"(spr\.bmp|_spr\.bmp|thumbs\.db)$", re.IGNORECASE)
LUMINANCE_WEIGHTS = (0.2126, 0.7152, 0.0722)  # Rec. 709
PRINTF_FIELD = re.compile(r"%(0?)(\d*)d")


def natural_key(path) -> list:
    """Sort key that orders ``s2`` before ``s10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", Path(path).name)]


def _is_slice_file(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
            and not NOT_SLICES.search(path.name))


def _numbering_key(name: str) -> str:
    """Names that differ only in their digits share a key (``scan_0001.tif`` -> ``scan_#.tif``)."""
    return re.sub(r"\d+", "#", name.lower())


def _slice_number(name: str) -> int | None:
    numbers = re.findall(r"\d+", Path(name).stem)
    return int(numbers[-1]) if numbers else None


@dataclass
class SliceList:
    files: list[Path]
    skipped: list[Path] = field(default_factory=list)          # files present but not taken as slices
    gaps: list[tuple[int, int]] = field(default_factory=list)  # missing slice numbers, as inclusive ranges

    def describe_gaps(self) -> str:
        return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.gaps)


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
    (or reversed); files with another naming pattern or that are not slices are skipped (and listed); gaps in the
    numbering are listed."""
    skipped: list[Path] = []
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise VolumeFileError(f"{missing[0]}: no such slice file" + (f" (and {len(missing) - 1} more)"
                                                                         if len(missing) > 1 else ""))
        files.sort(key=natural_key)
    else:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            candidates = [p for p in path.iterdir() if p.is_file()]
        elif PRINTF_FIELD.search(path.name):
            folder = path.parent
            if not folder.is_dir():
                raise VolumeFileError(f"{folder}: no such folder")
            matcher = _printf_regex(path.name)
            candidates = [p for p in folder.iterdir() if matcher.match(p.name)]
        elif any(c in text for c in "*?["):
            candidates = [Path(p) for p in globbing.glob(text)]
        elif path.is_file():  # an archetype: its siblings numbered the same way
            key = _numbering_key(path.name)
            candidates = [p for p in path.parent.iterdir() if _numbering_key(p.name) == key]
        else:
            raise VolumeFileError(f"{source}: no such file or folder")
        files = [p for p in candidates if _is_slice_file(p)]
        skipped = [p for p in candidates if p.is_file() and p not in files and not p.name.startswith(".")]
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
    return SliceList(files, sorted(skipped, key=natural_key), _gaps(files))


def _gaps(files: list[Path]) -> list[tuple[int, int]]:
    numbers = sorted(n for n in (_slice_number(p.name) for p in files) if n is not None)
    if len(numbers) < 3:
        return []
    steps = Counter(b - a for a, b in zip(numbers, numbers[1:]))
    step = steps.most_common(1)[0][0] or 1
    gaps = []
    for a, b in zip(numbers, numbers[1:]):
        if b - a > step:
            gaps.append((a + step, b - step))
    return gaps


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


PNG_GRAY_ALPHA = 4  # the IHDR colour type of gray + alpha samples


def _png_colour_type(path: Path) -> int | None:
    """The colour type in a PNG's IHDR chunk (the byte after the bit depth), None for anything else."""
    try:
        with open(path, "rb") as file:
            head = file.read(26)
    except OSError:
        return None
    return head[25] if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" else None


def _slice_header(path: Path):
    import SimpleITK as sitk
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's TIFF fallback warning: we say it in our words below
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        if _png_colour_type(path) == PNG_GRAY_ALPHA:  # ITK says "Unknown PixelType: unsigned_char(1)"
            raise VolumeFileError(f"{path}: a PNG of gray + alpha samples, which SimpleITK cannot read; save the "
                                  "slices without the alpha channel (gray) or as RGBA") from None
        raise VolumeFileError(f"{path}: not a readable image ({readable_reason(error)})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    size = reader.GetSize()
    if len(size) == 3 and size[2] != 1:
        raise VolumeFileError(f"{path}: has {size[2]} pages or slices; a stack of single 2D images is expected")
    dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID(),
                                                           reader.GetNumberOfComponents())).dtype)
    if reader.GetNumberOfComponents() == 4 and dtype == np.uint8 and path.suffix.lower() in (".tif", ".tiff"):
        stored = tiff_samples(path)
        if stored is not None and stored[1] > 8:
            raise VolumeFileError(
                f"{path}: a TIFF of {stored[0]} x {stored[1]}-bit samples in a layout (tiled, planar or other) that "
                "SimpleITK reads only as 8-bit RGBA, which would lose its values; save the slices as plain (strip) "
                "TIFFs, e.g. with ImageJ's File > Save As > Image Sequence")
    return (int(size[0]), int(size[1]), dtype, reader.GetNumberOfComponents()), reader.GetSpacing()[:2]


def probe_stack(slices: SliceList, check_all: bool = True) -> StackInfo:
    """Read the first slice's header and check every other slice's header (not its pixels) against it; slices
    that differ are named."""
    first, spacing = _slice_header(slices.files[0])
    if check_all:
        odd = []
        for path in slices.files[1:]:
            layout, _ = _slice_header(path)
            if layout != first:
                odd.append(f"{path.name} is {_describe_layout(layout)}")
        if odd:
            more = f" (and {len(odd) - 3} more)" if len(odd) > 3 else ""
            raise VolumeFileError(f"{slices.files[0].parent}: slices differ from the first "
                                  f"({slices.files[0].name}: {_describe_layout(first)}): {'; '.join(odd[:3])}{more}")
    def tidy(values):  # TIFF stores resolution as a rational: 0.25000000375 -> 0.25
        return tuple(float(f"{v:.7g}") for v in values)

    width, height, dtype, components = first
    if tidy(spacing) != (1.0, 1.0):  # readers report 1 when the file says nothing
        return StackInfo(slices, width, height, dtype, components, tidy(spacing))
    calibration = imagej_calibration(slices.files[0]) if slices.files[0].suffix.lower() in (".tif", ".tiff") else None
    if calibration is None:
        return StackInfo(slices, width, height, dtype, components, None)
    pixel, between = calibration
    return StackInfo(slices, width, height, dtype, components, tidy(pixel),
                     tidy([between])[0] if between else None, "ImageJ's calibration in the TIFF")


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
    """("keep", None), ("luminance", None) or ("channel", N) for the ``gray`` option."""
    if components == 1 or gray in (None, "keep"):
        return "keep", None
    if gray == "luminance":
        if components < 3:
            raise BigVolumeError(f"luminance needs RGB slices; these have {components} components (use channel:N)")
        return "luminance", None
    match = re.fullmatch(r"channel:(\d+)", str(gray))
    if not match:
        raise BigVolumeError(f"gray must be 'luminance' or 'channel:N', got {gray!r}")
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
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
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
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
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

    def _decode(self, k: int, out: np.ndarray) -> None:
        import SimpleITK as sitk
        path = self.slice_path(k)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        roi = self.roi
        if (roi.x0, roi.y0, roi.x1, roi.y1) != (0, 0, self.info.width, self.info.height):
            reader.SetExtractIndex([roi.x0, roi.y0])
            reader.SetExtractSize([roi.x1 - roi.x0, roi.y1 - roi.y0])
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise VolumeFileError(f"{path}: cannot decode ({readable_reason(error)})") from None
        pixels = sitk.GetArrayViewFromImage(image)
        if pixels.ndim == 3 + (self.info.components > 1):  # a 2D slice reported as a 1-slice volume
            pixels = pixels[0]
        if pixels.shape[:2] != out.shape[:2]:
            raise VolumeFileError(f"{path}: decoded {pixels.shape[1]}x{pixels.shape[0]} pixels, "
                                  f"expected {out.shape[1]}x{out.shape[0]}")
        if self.gray == "keep":
            out[...] = pixels
        elif self.gray == "channel":
            out[...] = pixels[..., self.channel]
        else:
            weights = np.asarray(LUMINANCE_WEIGHTS, np.float32)
            luminance = pixels[..., :3].astype(np.float32) @ weights
            if out.dtype.kind == "f":
                out[...] = luminance
            else:
                info = np.iinfo(out.dtype)
                np.clip(np.rint(luminance), info.min, info.max, out=luminance)
                out[...] = luminance

    def _read_into(self, k0: int, k1: int, out: np.ndarray) -> None:
        futures = [self._pool.submit(self._decode, k, out[k - k0]) for k in range(k0, k1)]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
