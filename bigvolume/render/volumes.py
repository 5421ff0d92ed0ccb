"""What a preview draws: a volume made small enough (at most PREVIEW_DIMENSION voxels per axis, by the default
anti-aliased method; a large file is resampled from disk, streamed when it does not fit in memory, and never loaded
whole), with its name and its file's own grid and size for the labels."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import BigVolumeError
from ..core.geometry import Geometry
from ..core.memory import format_bytes
from ..core.text import dimensions_text, numbers_text
from ..core.volume import Volume
from ..io import files as io
from ..io import zarr_input
from ..ops.resample import DEFAULT_METHOD, resample, resample_file
from .transfer import gray_voxels

PREVIEW_DIMENSION = 256        # a preview never renders more voxels than this along an axis
DEFAULT_SIZE = (512, 512)      # the volume rendering's width and height in pixels


def preview_factors(geometry: Geometry, limit: int = PREVIEW_DIMENSION) -> tuple[float, float, float]:
    """Per-axis factors that bring every axis to at most ``limit`` voxels (1 where it already is)."""
    return tuple(max(1.0, n / limit) for n in geometry.dimensions)  # type: ignore[return-value]


def preview_volume(volume: Volume, limit: int = PREVIEW_DIMENSION) -> Volume:
    """``volume`` itself when small enough, else downsampled by the default anti-aliased method."""
    factors = preview_factors(volume.geometry, limit)
    if factors == (1.0, 1.0, 1.0):
        return volume
    return resample(volume, factors, method=DEFAULT_METHOD)


def scalar_voxels(volume: Volume) -> np.ndarray:
    """What gets rendered: one value per voxel, in a type the ray casters take (booleans as bytes; 64-bit integers,
    which a Slicer volume cannot hold, as float64: a picture needs no more than its 53 bits)."""
    array = gray_voxels(np.asarray(volume.array))
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        return array.astype(np.float64)
    return array.view(np.uint8) if array.dtype == np.bool_ else array


@dataclass
class PreviewSource:
    """One volume of a preview: its name and original grid and size for the labels, and the (small) volume drawn."""

    name: str
    geometry: Geometry
    dtype: np.dtype
    components: int
    bytes_on_disk: int | None
    volume: Volume

    def label(self) -> str:
        size = (f"{format_bytes(self.bytes_on_disk)} on disk" if self.bytes_on_disk is not None
                else f"{format_bytes(self.geometry.voxel_count * self.components * self.dtype.itemsize)} in memory")
        kind = f"{self.dtype}" + (f" x{self.components}" if self.components > 1 else "")
        return (f"{dimensions_text(self.geometry.dimensions)} {kind}, spacing "
                f"{numbers_text(self.geometry.spacing)} mm, {size}")


def load_preview_source(source, name: str | None = None, memory_limit: float | None = None,
                        series: str | None = None) -> PreviewSource:
    """A path or a Volume, made small enough to draw. A file larger than a preview needs is resampled from disk into
    a temporary file (streamed when it does not fit in ``memory_limit``, see bigvolume.resample_file) and only that
    is read. ``series``: the DICOM series UID, when the folder holds several. An OME-Zarr pyramid is drawn from
    its coarsest level with at least PREVIEW_DIMENSION voxels per axis (bigvolume.io.zarr_input.preview_level)."""
    if isinstance(source, Volume):
        if source.dtype.kind not in "biuf":  # (complex voxels were drawn by their real part, silently)
            raise BigVolumeError(f"{name or 'volume'}: voxels of type {source.dtype} cannot be drawn; a preview "
                                 "needs real numbers")
        return PreviewSource(name or "volume", source.geometry, source.dtype, source.components, None,
                             preview_volume(_drawable(source)))
    path = Path(source)
    label = path.name
    if zarr_input.accepts(path):  # a pyramid is drawn from its coarsest level that is still big enough
        pyramid = zarr_input.open_pyramid(path)
        path, level = zarr_input.preview_path(path)
        label = f"{pyramid.store.name} (level {level})" if level is not None else label
    geometry, dtype, components = io.read_geometry(path, series)
    factors = preview_factors(geometry)
    if factors == (1.0, 1.0, 1.0):
        small = io.read_volume(path, series)
    else:
        with tempfile.TemporaryDirectory(prefix="bigvolume-preview-") as folder:
            reduced = Path(folder) / "preview.nhdr"
            # float data may hold NaN or inf, which Lanczos spreads 32 voxels (its note then advised a --method
            # preview does not have): a mean reaches its block only
            method = "mean" if np.dtype(dtype).kind == "f" else DEFAULT_METHOD
            resample_file(path, reduced, factors, method=method, compress=False, memory_limit=memory_limit,
                          series=series)
            read = io.read_volume(reduced)
            small = Volume(np.array(read.array), read.geometry)  # a copy: the temporary file goes away
            del read  # its mapping of the file: Windows deletes no mapped file, so the folder could not go
    return PreviewSource(name or label, geometry, np.dtype(dtype), components, io.file_size(path, series),
                         _drawable(small))


def _drawable(volume: Volume) -> Volume:
    """float16 (an OME-Zarr input's type, which VTK and Slicer volumes lack) drawn as float32; others as they are."""
    return Volume(volume.array.astype(np.float32), volume.geometry) if volume.dtype == np.float16 else volume
