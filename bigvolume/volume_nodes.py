"""Helpers that the Slicer modules' Logics share about volume nodes and their text.

Duck-typed on MRML nodes (only their methods are called) so that this file imports nothing from Slicer: the Logics
call it inside Slicer and on a slicer-core scene alike.
"""
from __future__ import annotations

import numpy as np
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import VTK_LONG_LONG

from .errors import BigVolumeError


def check_storable_dtype(dtype) -> None:
    """Refuse up front a voxel type a Slicer volume cannot hold (before a possibly long run, not after)."""
    try:
        vtk_type = numpy_support.get_vtk_array_type(np.dtype(dtype))
    except TypeError:
        raise BigVolumeError(f"voxel type {np.dtype(dtype)} cannot be stored in a Slicer volume") from None
    if vtk_type == VTK_LONG_LONG:
        raise BigVolumeError("Slicer volumes cannot hold 64-bit signed integer voxels: cast the input to a 32-bit "
                             "integer or float type first (Volumes module, or Cast Scalar Volume)")


def remove_node_and_display(node) -> None:
    """Remove ``node`` from its scene with the display and storage nodes it brought (a run's own output, undone)."""
    scene = node.GetScene()
    if scene is None:
        return
    dependents = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is scene:
            scene.RemoveNode(dependent)


def dimensions_text(dimensions) -> str:
    return "x".join(str(int(d)) for d in dimensions)


def numbers_text(values) -> str:
    return " ".join(f"{v:.6g}" for v in values)
