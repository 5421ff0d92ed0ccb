"""3D previews in Slicer: volume rendering of a volume node with the histogram-derived transfer function
of bigvolume.render.transfer, and a before/after arrangement (input and output in two linked 3D views).

Duck-typed on MRML (only node and scene methods are called; nodes are made by class name through the scene), so this
file imports nothing from Slicer: the modules' Logics call it inside Slicer, tests call it on a slicer-core scene,
and the previews' slicer engine (bigvolume.slicer.offscreen_render) uses it. What needs the Slicer application (resetting
the 3D views' cameras) stays in the module files.
"""
from __future__ import annotations

import dataclasses

from ..core.errors import BigVolumeError
from ..render.compare import IntensityMap, compare_display
from ..render.transfer import TransferFunction, opacity_unit_distance, transfer_function
from ..render.volumes import load_preview_source
from .volume_nodes import geometry_from_node, volume_from_node

DISPLAY_CLASS = "vtkMRMLGPURayCastVolumeRenderingDisplayNode"
PROPERTY_CLASS = "vtkMRMLVolumePropertyNode"
# The two 3D views of Slicer's "Dual 3D" layout, by singleton tag (their view node IDs are vtkMRMLViewNode1 and 2).
BEFORE_VIEW, AFTER_VIEW = "1", "2"


def node_transfer_function(volume_node) -> TransferFunction:
    """The preview transfer function of a volume node's voxels (histogram of a subsample; the node is only read); a
    label map node's labels in its colour table's colours."""
    _check_volume(volume_node)
    try:
        transfer = transfer_function(volume_from_node(volume_node))
    except BigVolumeError as error:  # (all NaN, ...): said as the other preview errors, naming the node
        raise BigVolumeError(f"3D preview: {volume_node.GetName()}: {error}") from None
    return _in_label_colors(volume_node, transfer)


def _in_label_colors(volume_node, transfer: TransferFunction) -> TransferFunction:
    """A label map node's labels coloured as its colour table colours them, as Slicer's volume rendering does
    (vtkSlicerVolumeRenderingLogic::SetLabelMapToVolumeProp) and its slice views show them; our own colours where
    the table has none. Other nodes, and voxels not taken for labels, keep the transfer function's colours."""
    display = volume_node.GetDisplayNode()
    table = display.GetColorNode() if display is not None else None
    if not transfer.labels or table is None or not volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        return transfer
    labels = set(transfer.labels)

    def colour(value, rest):
        rgba = [0.0, 0.0, 0.0, 0.0]
        if value in labels and float(value).is_integer() and table.GetColor(int(value), rgba):
            return tuple(float(c) for c in rgba[:3])
        return tuple(rest)
    return dataclasses.replace(transfer, colors=[(value,) + colour(value, rest) for value, *rest in transfer.colors])


def _check_volume(volume_node) -> None:
    if volume_node is None or volume_node.GetScene() is None:
        raise BigVolumeError("3D preview: the volume is in no scene")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise BigVolumeError(f"3D preview: {volume_node.GetName()} has no voxels")


def show_volume_rendering(volume_node, transfer: TransferFunction | None = None, view_node_ids=None,
                          rendering_logic=None):
    """Show ``volume_node`` with volume rendering and ``transfer`` (default: the node's own
    :func:`node_transfer_function`); return the display node. ``rendering_logic`` (Slicer's
    vtkSlicerVolumeRenderingLogic; Slicer's modules pass theirs) makes the display node as Slicer does,
    ``CreateDefaultVolumeRenderingNodes``: the user's default rendering method (CPU ray casting where the GPU fails) and
    an existing volume rendering node of the volume reused. Without it, a GPU ray-cast display node is made (or the
    volume's own reused). Either way our curves go into the node's volume property, so a second Apply into the same
    output does not stack renderings. ``view_node_ids``: show it only in these 3D views (None: in every view)."""
    _check_volume(volume_node)
    scene = volume_node.GetScene()
    transfer = transfer or node_transfer_function(volume_node)
    if rendering_logic is not None:
        display = rendering_logic.CreateDefaultVolumeRenderingNodes(volume_node)
        if display is None:
            raise BigVolumeError(f"3D preview: volume rendering could not show {volume_node.GetName()}")
    else:
        display = next((volume_node.GetNthDisplayNode(i) for i in range(volume_node.GetNumberOfDisplayNodes())
                        if volume_node.GetNthDisplayNode(i) is not None
                        and volume_node.GetNthDisplayNode(i).IsA(DISPLAY_CLASS)), None)
    if display is None:
        display = scene.AddNewNodeByClass(DISPLAY_CLASS, scene.GenerateUniqueName(
            f"{volume_node.GetName()} volume rendering"))
        if display is None:  # the VolumeRendering module registers this class with the scene; Slicer always has it
            raise BigVolumeError("3D preview: this scene has no volume rendering (the VolumeRendering module's "
                                 "logic is not set up)")
        volume_node.AddAndObserveDisplayNodeID(display.GetID())
    property_node = display.GetVolumePropertyNode()
    if property_node is None:
        property_node = scene.AddNewNodeByClass(PROPERTY_CLASS, scene.GenerateUniqueName(
            f"{volume_node.GetName()} preview transfer function"))
        display.SetAndObserveVolumePropertyNodeID(property_node.GetID())
    transfer.fill(property_node.GetVolumeProperty(), opacity_unit_distance(geometry_from_node(volume_node)))
    property_node.Modified()
    display.SetViewNodeIDs(list(view_node_ids or []))
    display.SetVisibility(True)
    return display


def dual_view_nodes(scene) -> tuple:
    """The view nodes of the two 3D views of the "Dual 3D" layout. The scene's layout node (Slicer's) is switched to
    that layout, which makes Slicer's layout manager create the views; nodes still missing (a scene without Slicer's
    application) are added as Slicer would name them."""
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        layout.SetViewArrangement(layout.SlicerLayoutDual3DView)
    views = []
    for tag in (BEFORE_VIEW, AFTER_VIEW):
        view = scene.GetSingletonNode(tag, "vtkMRMLViewNode")
        if view is None:
            view = scene.CreateNodeByClass("vtkMRMLViewNode")
            view.SetSingletonTag(tag)
            view.SetLayoutName(tag)
            view.SetLayoutLabel(tag)
            view = scene.AddNode(view)
        views.append(view)
    return tuple(views)


def show_before_after(before_node, after_node, transfer: TransferFunction | None = None,
                      intensity_map: IntensityMap | None = None, rendering_logic=None) -> tuple:
    """``before_node`` (the input) in the left 3D view and ``after_node`` (the output) in the right one of the "Dual
    3D" layout, both with the input's transfer function (so a difference is the data's, not the curves') or, when
    their intensity ranges differ (a reduced bit depth), the output with those curves moved so the same tissue
    looks the same (bigvolume.render.compare.compare_display: through ``intensity_map`` when known, else a fitted line, else
    the output's own), and the two views linked (LinkedControl, same view group: Slicer then moves their cameras
    together). Returns the two display nodes."""
    _check_volume(before_node)
    _check_volume(after_node)
    if before_node.GetScene() is not after_node.GetScene():
        raise BigVolumeError("3D preview: the input and the output are in different scenes")
    transfer = transfer or node_transfer_function(before_node)
    after_transfer = compare_display(load_preview_source(volume_from_node(before_node), before_node.GetName()),
                                     transfer,
                                     load_preview_source(volume_from_node(after_node), after_node.GetName()),
                                     intensity_map).transfer
    before_view, after_view = dual_view_nodes(before_node.GetScene())
    for view in (before_view, after_view):
        view.SetViewGroup(before_view.GetViewGroup())
        view.SetLinkedControl(True)
    before = show_volume_rendering(before_node, transfer, [before_view.GetID()], rendering_logic)
    after = show_volume_rendering(after_node, after_transfer, [after_view.GetID()], rendering_logic)
    return before, after


def show_preview(output_node, before_node=None, rendering_logic=None):
    """What a module does after Apply: the output volume-rendered in every 3D view, or with ``before_node`` the
    before/after arrangement (:func:`show_before_after`). Returns the output's display node. ``rendering_logic``: see
    :func:`show_volume_rendering`."""
    if before_node is None:
        return show_volume_rendering(output_node, rendering_logic=rendering_logic)
    return show_before_after(before_node, output_node, rendering_logic=rendering_logic)[1]
