"""A voxel array together with the grid it lives on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import native
from .errors import BigVolumeError
from .geometry import Geometry


class _MemoryOwner:
    """Lends numpy the memory of ``view`` (``__array_interface__``) and holds ``owner``, which owns that memory."""

    def __init__(self, view: np.ndarray, owner):
        self.__array_interface__ = view.__array_interface__
        self.owner = owner


def owned_view(view: np.ndarray, owner) -> np.ndarray:
    """``view`` (of memory owned by ``owner``: a SimpleITK image, ...) as a plain array that keeps ``owner`` alive
    with no copy. Its ``base`` is an object that is not an array, where numpy stops collapsing the bases of views
    (a view of a view gets its base's base): every array made from it (``np.asarray``, slices) holds the owner."""
    return np.asarray(_MemoryOwner(view, owner))


def check_volume_array(array: np.ndarray) -> None:
    """Refuse an array that is no volume: (k, j, i) or (k, j, i, components) of real numbers (a complex one lost its
    imaginary part on the way to the GPU)."""
    if array.ndim not in (3, 4) or array.ndim == 4 and array.shape[3] == 0 or array.dtype.kind not in "biuf":
        raise BigVolumeError(f"an array of shape {array.shape} and type {array.dtype}: a volume is (k, j, i) or (k, j, "
                             "i, components) of real numbers")


@dataclass
class Volume:
    """``array`` has shape ``(k, j, i)`` for scalar volumes or ``(k, j, i, components)`` for vector/RGB ones,
    matching ``geometry.dimensions`` reversed (the layout of Slicer's arrayFromVolume)."""

    array: np.ndarray
    geometry: Geometry
    # Keeps alive whatever owns the array's memory (e.g. a SimpleITK image viewed without a copy).
    owner: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.array = np.asanyarray(self.array)  # (a memory map stays one)
        shape = self.array.shape
        if len(shape) not in (3, 4) or tuple(shape[:3]) != self.geometry.shape:
            raise ValueError(f"array shape {shape} does not match the geometry's dimensions "
                             f"{self.geometry.dimensions} (expected (k, j, i) = {self.geometry.shape}"
                             " plus an optional component axis)")
        if len(shape) == 4 and shape[3] == 0:
            raise ValueError(f"array shape {shape}: a component axis of 0 holds no voxel values")
        if len(shape) == 4 and shape[3] == 1:  # one component: a scalar volume (every reader and filter expects it)
            self.array = self.array[..., 0]
        if not self.array.dtype.isnative:  # big-endian voxels (nibabel, np.fromfile('>i2')): VTK, SimpleITK and
            # the NRRD writer take bytes as this machine's order, so they are converted once, here
            self.array = self.array.astype(native(self.array.dtype))

    @property
    def components(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    @classmethod
    def from_array(cls, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                   direction=None) -> "Volume":
        array = np.asarray(array)
        geometry = Geometry(tuple(array.shape[:3][::-1]), spacing, origin,
                            np.eye(3) if direction is None else direction)
        return cls(array, geometry)
