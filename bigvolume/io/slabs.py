"""Reading a volume file a slab of z slices at a time, into buffers the caller owns, so that memory stays bounded
whatever the file size.

:func:`open_slabs` picks the reader from the file's :class:`~bigvolume.io.layout.VoxelLayout`: raw and compressed
data are read piece by piece (:mod:`bigvolume.io.slab_readers`), a DICOM series one file per slice
(:mod:`bigvolume.io.dicom`), an OME-Zarr level chunk by chunk (:mod:`bigvolume.io.zarr_input`); anything else is
read whole by SimpleITK once (``streams`` is False; the caller says so to the user).
"""
from __future__ import annotations

from pathlib import Path

from . import dicom, zarr_input
from . import files as io
from .layout import voxel_layout
# The readers' types, for the engine and the operations: they read slabs through this module.
from .slab_readers import ArraySlabReader, SlabReader, layout_reader

__all__ = ["ArraySlabReader", "SlabReader", "WholeVolumeReader", "open_slabs"]


class WholeVolumeReader(SlabReader):
    """Formats that cannot be read piece by piece: read once, whole, then served slab by slab."""

    streams = False

    def __init__(self, path, geometry, dtype, components):
        super().__init__(path, geometry, dtype, components)
        self._volume = None

    def _read_into(self, k0, k1, out):
        if self._volume is None:
            self._volume = io.read_volume(self.path)
        out[...] = self._volume.array[k0:k1]

    def close(self) -> None:
        self._volume = None


def open_slabs(path, series: str | None = None, level: int | None = None) -> SlabReader:
    """A slab reader for ``path`` (of an OME-Zarr store: of ``level``); refuses missing or short data files before
    anything is read."""
    path = Path(path)
    if zarr_input.accepts(path, series):
        return zarr_input.open_slabs(path, level)
    io.check_no_level(path, level)
    if dicom.accepts(path, series):
        return dicom.open_slabs(path, series)
    geometry, dtype, components = io.read_geometry(path)
    layout = voxel_layout(path, dtype, components, geometry.voxel_count)
    if layout is None or not layout.reads_in_slabs:
        return WholeVolumeReader(path, geometry, dtype, components)
    return layout_reader(path, geometry, dtype, components, layout)
