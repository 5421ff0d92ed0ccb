"""The previews' "slicer" rendering engine: Slicer's own volume rendering (the slicer-core package's displayable
managers, GPU ray casting) drawing offscreen, outside the Slicer application.

Importing this module registers the engine with bigvolume.render (:func:`~bigvolume.render.offscreen.register_renderer`),
preferred by ``engine="auto"`` where slicer-core is importable; the command line imports it. ``slicer`` itself is
imported only when the engine runs.
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
from vtkmodules.vtkRenderingCore import vtkRenderer

from ..core.volume import Volume
from ..render.offscreen import (BACKGROUND, Camera, frame_camera, offscreen_render_window, quiet_vtk, read_pixels,
                                register_renderer)
from ..render.transfer import TransferFunction
from ..render.volumes import scalar_voxels
from .preview_nodes import show_volume_rendering
from .volume_nodes import fill_volume_node


def slicer_core_available() -> bool:
    """slicer-core importable, and not inside the Slicer application (whose views must not be disturbed)."""
    try:
        import slicer
    except ImportError:
        return False
    return not hasattr(slicer, "app") and hasattr(slicer, "vtkMRMLVolumeRenderingDisplayableManager")


@contextlib.contextmanager
def slicer_core_scene():
    """An MRML scene set up the way Slicer's application sets up its own, with the logics volume rendering needs
    (application, colours, volume rendering, one 3D view logic), from the slicer-core package; everything is torn
    down on leaving. Yields a namespace with ``scene``, ``application`` and ``view_logic``."""
    import types

    import slicer
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    application.SetViewLogics(vtkCollection())
    application.SetSliceLogics(vtkCollection())
    # Python holds every logic: the application logic keeps only weak pointers to them.
    colors = slicer.vtkMRMLColorLogic()  # display nodes look their colour tables up here
    colors.SetMRMLApplicationLogic(application)
    colors.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colors)
    rendering = slicer.vtkSlicerVolumeRenderingLogic()
    view_logic = slicer.vtkMRMLViewLogic()
    with tempfile.TemporaryDirectory(prefix="bigvolume-preview-") as share:
        try:
            # The volume rendering logic reads presets.xml from its share folder when it gets a scene (and registers
            # its node classes then); slicer-core ships none and our curves come from the data: an empty preset scene.
            Path(share, "presets.xml").write_text('<MRML version="Slicer4.4.0" userTags=""></MRML>\n')
            rendering.SetModuleShareDirectory(share)
            rendering.SetMRMLApplicationLogic(application)
            rendering.SetMRMLScene(scene)
            application.SetModuleLogic("VolumeRendering", rendering)
            view_logic.SetMRMLApplicationLogic(application)
            application.GetViewLogics().AddItem(view_logic)
            view_logic.SetMRMLScene(scene)
            yield types.SimpleNamespace(scene=scene, application=application, view_logic=view_logic)
        finally:
            with quiet_vtk():  # logics warn about observers they drop on the way out: expected
                view_logic.SetMRMLScene(None)
                rendering.SetMRMLScene(None)
                colors.SetMRMLScene(None)
                application.SetMRMLScene(None)
                scene.Clear(1)


def render_slicer(volume: Volume, size, transfer: TransferFunction, camera: Camera) -> np.ndarray:
    """Slicer's own volume rendering: a volume node with a GPU ray-cast display node carrying our curves
    (preview_nodes, the code the Slicer modules use), a 3D view node, and that view's displayable managers drawing
    into an offscreen render window."""
    import slicer
    from vtkmodules.vtkRenderingUI import vtkGenericRenderWindowInteractor

    window = offscreen_render_window()
    managers = group = None
    with slicer_core_scene() as slicer_scene:
        try:
            window.SetSize(*size)
            renderer = vtkRenderer()
            window.AddRenderer(renderer)
            interactor = vtkGenericRenderWindowInteractor()  # the camera manager wants one; nothing interacts
            interactor.SetRenderWindow(window)
            interactor.Initialize()
            # Displayable managers made here, not by the process-wide factory (whose application logic Slicer owns).
            group = slicer.vtkMRMLDisplayableManagerGroup()
            group.SetRenderer(renderer)
            managers = [slicer.vtkMRMLCameraDisplayableManager(), slicer.vtkMRMLViewDisplayableManager(),
                        slicer.vtkMRMLVolumeRenderingDisplayableManager()]
            for manager in managers:
                manager.SetMRMLApplicationLogic(slicer_scene.application)
                group.AddDisplayableManager(manager)
            view = slicer_scene.view_logic.AddViewNode("1")
            view.SetBoxVisible(0)
            view.SetAxisLabelsVisible(0)
            view.SetBackgroundColor(*BACKGROUND)
            view.SetBackgroundColor2(*BACKGROUND)
            group.SetMRMLDisplayableNode(view)

            node = slicer_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "preview")
            fill_volume_node(node, Volume(scalar_voxels(volume), volume.geometry))
            show_volume_rendering(node, transfer)
            camera_node = group.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager").GetCameraNode()
            frame_camera(camera_node, volume.geometry, camera.direction, camera.view_up, camera.view_angle,
                         size[0] / size[1])
            renderer.ResetCameraClippingRange()
            window.Render()
            return read_pixels(window, size)
        finally:
            with quiet_vtk():
                if group is not None:
                    group.SetMRMLDisplayableNode(None)
                del managers, group
                window.Finalize()


register_renderer("slicer", render_slicer, slicer_core_available, preference=1,
                  needs="slicer-core (pip install slicer-core), outside the Slicer application")
