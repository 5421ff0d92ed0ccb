"""Helpers that the Slicer modules' Logics share about volume nodes and their text: checks, node <-> Volume
conversion with the exact grid, display copying, removal of a run's own nodes.

Duck-typed on MRML nodes (only their methods are called) so that this file imports nothing from Slicer: the Logics
call it inside Slicer and on a slicer-core scene alike.
"""
from __future__ import annotations

import contextlib

import numpy as np
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import VTK_LONG_LONG, VTK_UNSIGNED_LONG_LONG
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from ..core.errors import BigVolumeError
from ..core.geometry import LPS_TO_RAS, Geometry
from ..core.text import dimensions_text, numbers_text  # noqa: F401  (the modules' Logics take them from here)
from ..core.volume import Volume
from ..ops.resample import LABEL_SAFE_METHODS  # noqa: F401  (the modules' Logics take it from here)
from ..methods.vtk_resize import vtk_image_to_array


def check_storable_dtype(dtype) -> None:
    """Refuse up front a voxel type a Slicer volume cannot hold (before a possibly long run, not after)."""
    try:
        vtk_type = numpy_support.get_vtk_array_type(np.dtype(dtype))
    except TypeError:
        raise BigVolumeError(f"voxel type {np.dtype(dtype)} cannot be stored in a Slicer volume") from None
    if vtk_type in (VTK_LONG_LONG, VTK_UNSIGNED_LONG_LONG):  # (Slicer's histograms know neither: uint64 failed there)
        raise BigVolumeError(f"Slicer volumes cannot hold 64-bit integer voxels ({np.dtype(dtype)}): cast the input "
                             "to a 32-bit integer or float type first (Volumes module, or Cast Scalar Volume)")




def is_label_map(node) -> bool:
    return node is not None and node.IsA("vtkMRMLLabelMapVolumeNode")


def label_safe_method(node, method: str) -> tuple[str, list[str]]:
    """The method a run on (or into) ``node`` uses, and a note when it is not the one asked for: a label map gets
    'nearest' instead of a smoothing kernel, which would invent labels that are not in the input."""
    if is_label_map(node) and method not in LABEL_SAFE_METHODS:
        return "nearest", [f"Label map: used 'nearest' instead of '{method}' (a smoothing kernel would invent labels "
                           "that are not in the input)."]
    return method, []


def check_output_node(input_node, output_node) -> None:
    """The checks every Logic makes on its output node before any work: none needs a scene to add one to, and a
    given one must not be the input (the input is never modified)."""
    if output_node is None:
        if input_node.GetScene() is None:
            raise BigVolumeError(f"{input_node.GetName()} is in no scene: give an output volume node")
        return
    if output_node is input_node or (output_node.GetID() is not None and output_node.GetID() == input_node.GetID()
                                     and output_node.GetScene() == input_node.GetScene()):  # (IDs repeat by scene)
        raise BigVolumeError("the output volume must differ from the input volume (the input is never modified)")


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


@contextlib.contextmanager
def given_or_new_node(node, scene, class_name: str, name: str):
    """Yields ``node``, or, when it is None, a new ``class_name`` node named ``name`` (made unique) added to
    ``scene``; a node created here is removed again if the block raises (a cancel or an error leaves no node)."""
    created = node is None
    if created:
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    try:
        yield node
    except BaseException:
        if created:
            remove_node_and_display(node)
        raise


# --- node <-> bigvolume.Volume --------------------------------------------------------------------------------------
def _matrix_to_array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _array_to_matrix(array) -> vtkMatrix4x4:
    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def node_ijk_to_ras(node) -> vtkMatrix4x4:
    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def _extent_start(node) -> tuple[int, int, int]:
    return tuple(node.GetImageData().GetExtent()[0::2])


def geometry_from_node(node) -> Geometry:
    """The node's grid (LPS, as the core wants it) of its voxels as stored, first voxel first: IJK are the image
    data's extent indices (Slicer's ShiftImageDataExtentToZeroStart moves the origin by the start), so an extent
    that does not start at 0 moves the grid's origin there (it was read as if it started at 0: the result lay that
    many voxels away). A matrix that places no grid (a zero or repeated axis, NaN) is refused in one line naming
    the node (a ValueError before)."""
    matrix = _matrix_to_array(node_ijk_to_ras(node))
    matrix[:3, 3] += matrix[:3, :3] @ np.asarray(_extent_start(node), float)
    try:
        return Geometry.from_ijk_to_ras(matrix, node.GetImageData().GetDimensions())
    except ValueError as error:
        raise BigVolumeError(f"{node.GetName()}: its IJK to RAS matrix places no grid ({error})") from None


def volume_from_node(node) -> Volume:
    """A Volume viewing the node's voxels, (k, j, i[, c]) as slicer.util.arrayFromVolume gives them (no copy: never
    write into ``volume.array``). The caller checks first that the node holds scalars."""
    image = node.GetImageData()
    return Volume(vtk_image_to_array(image), geometry_from_node(node), owner=image)


def fill_volume_node(node, volume: Volume, source=None, window_level: bool = True) -> None:
    """Copy ``volume`` into ``node`` (its own new image data) with the volume's exact grid. With a ``source`` node
    the result goes under the source's parent transform and gets display nodes that look like the source's (see
    copy_display); when the grid is the source's own, its IJKToRAS matrix is copied as is (bit-exact, no round trip
    through Geometry)."""
    array = np.ascontiguousarray(volume.array)
    check_storable_dtype(array.dtype)
    components = 1 if array.ndim == 3 else array.shape[3]
    image = vtkImageData()
    image.SetDimensions(*volume.geometry.dimensions)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.reshape(-1, components), deep=True))
    if source is not None and not any(_extent_start(source)) and geometry_from_node(source) == volume.geometry:
        ijk_to_ras = node_ijk_to_ras(source)
    else:
        ijk_to_ras = _array_to_matrix(volume.geometry.ijk_to_ras())
    was_modifying = node.StartModify()
    try:
        node.SetAndObserveImageData(image)
        node.SetIJKToRASMatrix(ijk_to_ras)
        node.SetAndObserveTransformNodeID(source.GetTransformNodeID() if source is not None else None)
    finally:
        node.EndModify(was_modifying)
    copy_display(source, node, window_level)


def copy_display(source, target, window_level: bool = True) -> None:
    """Give ``target`` display nodes (if it has none) that look like ``source``'s (if any): colour table,
    interpolation and, with ``window_level``, the window/level (leave it out when the values were remapped).
    Nodes of another class (a label map made from a grayscale volume) keep their own default display."""
    if target.GetScene() is None:
        return
    if target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()
    same_kind = source is not None and source.GetClassName() == target.GetClassName()
    source_display = source.GetDisplayNode() if same_kind else None
    target_display = target.GetDisplayNode()
    if source_display is None or target_display is None:
        return
    was_modifying = target_display.StartModify()
    try:
        if source_display.GetColorNodeID():
            target_display.SetAndObserveColorNodeID(source_display.GetColorNodeID())
        if source_display.IsA("vtkMRMLScalarVolumeDisplayNode") and target_display.IsA(
                "vtkMRMLScalarVolumeDisplayNode"):
            target_display.SetInterpolate(source_display.GetInterpolate())
            if window_level:
                target_display.SetAutoWindowLevel(source_display.GetAutoWindowLevel())
                if not source_display.GetAutoWindowLevel():
                    target_display.SetWindowLevel(source_display.GetWindow(), source_display.GetLevel())
            else:
                target_display.SetAutoWindowLevel(True)
    finally:
        target_display.EndModify(was_modifying)


# --- Markups ROIs -----------------------------------------------------------------------------------------------------
def roi_box(roi_node) -> tuple[np.ndarray, np.ndarray]:
    """(ObjectToWorld 4x4, size) of the box a Markups ROI node selects, rotated or under a linear transform included;
    refuses a ROI not placed yet and an inside-out one (it selects what lies outside its box)."""
    size = np.array(roi_node.GetSize(), float)
    if not (np.all(np.isfinite(size)) and np.all(size > 0)):
        raise BigVolumeError(f"ROI {roi_node.GetName()} has no size yet: place it first")
    if getattr(roi_node, "GetInsideOut", lambda: False)():  # (Slicer's Markups ROI: it selects what lies outside)
        raise BigVolumeError(f"ROI {roi_node.GetName()} is inside out (it stands for what lies outside its box): "
                             "a box cannot be read for it; turn Inside out off")
    return _matrix_to_array(roi_node.GetObjectToWorldMatrix()), size


def roi_corners_lps(roi_node) -> np.ndarray:
    """The 8 corners (rows, LPS) of the box of a Markups ROI node (see roi_box)."""
    object_to_world, size = roi_box(roi_node)
    signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    corners_ras = (signs * size) @ object_to_world[:3, :3].T + object_to_world[:3, 3]
    return corners_ras @ LPS_TO_RAS.T  # RAS -> LPS (the same flip both ways)
