"""Previews: a volume rendering and three orthogonal mid-slices of a volume in one PNG, and side-by-side comparisons
(before / after) labelled with each volume's name, dimensions, spacing and size.

- The transfer function comes from the data's histogram (:func:`transfer_function`): robust percentiles and
  multi-level Otsu thresholds on a subsample, classified CT-like or MR-like. The same plain-data curves drive the
  batch renderer here and the Slicer display nodes (:mod:`bigvolume.slicer.preview_nodes`).
- Rendering is offscreen (:func:`render_volume`): through Slicer's own volume rendering (the slicer-core package's
  displayable managers, GPU ray casting) when ``slicer`` is importable outside the Slicer application, else plain
  VTK ray casting with the same transfer function; Mesa EGL first, then OSMesa (:func:`offscreen_render_window`).
- Volumes are placed in RAS by their IJKToRAS matrix (spacing, origin and direction respected); the camera frames the
  volume's bounds from a fixed oblique direction (anterior, a little right and superior).
- Large files are never loaded whole for a preview: they are downsampled (the default anti-aliased method, streamed
  from disk when they do not fit in memory) to at most :data:`PREVIEW_DIMENSION` voxels per axis first.

No Slicer import at module level: ``slicer`` is imported only when the Slicer renderer is used.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import vtkLogger, vtkUnsignedCharArray
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPiecewiseFunction
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkRenderingCore import (vtkColorTransferFunction, vtkRenderer, vtkTextProperty, vtkTextRenderer,
                                         vtkVolume, vtkVolumeProperty)
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (the text renderer's implementation)
from vtkmodules import vtkRenderingOpenGL2  # OpenGL render windows (and the OpenGL overrides of vtkRenderer)
from vtkmodules.vtkRenderingVolumeOpenGL2 import vtkSmartVolumeMapper

from ..io import files as io
from ..core.errors import BigVolumeError
from ..core.geometry import Geometry
from ..ops.haze import multi_otsu
from ..core.memory import format_bytes
from ..ops.precision import Window, apply_window, robust_histogram, robust_window, subsample
from ..ops.resample import DEFAULT_METHOD, downsample_array, resample, resample_file
from ..io.stacks import LUMINANCE_WEIGHTS
from ..core.volume import Volume
from ..slicer.volume_nodes import dimensions_text, numbers_text

PREVIEW_DIMENSION = 256        # a preview never renders more voxels than this along an axis
DEFAULT_SIZE = (512, 512)      # the volume rendering's width and height in pixels
SAMPLE_VOXELS = 2_000_000      # voxels the histogram is taken from
FILLED_SHARE = 0.2             # one exact value in more than this share of the voxels is a fill, i.e. background
WINDOW_PERCENTILES = (0.5, 99.5)  # the slices' intensity window
HU_AIR = -500.0                # 1st percentile at or below this: Hounsfield units with air (-1000) around
WIDE_RANGE = 4096              # integer data spanning more than 12 bits: CT/micro-CT, not MR (12-bit magnitudes)
OPACITY_UNIT_FRACTION = 1 / 200  # opacity is per this fraction of the volume's diagonal: same look at any scale
CT_LIKE, MR_LIKE = "CT-like", "MR-like"
BACKGROUND = (0.10, 0.10, 0.14)  # the render's background (RGB 0..1)
CANVAS = (26, 26, 36)          # the picture's background (RGB 0..255)
TEXT = (0.92, 0.92, 0.92)
# The fixed oblique view: the camera looks from this direction (RAS: anterior, a little right and superior) with
# superior up, a 30 degree perspective like Slicer's 3D view.
VIEW_DIRECTION = (0.5, 1.0, 0.25)
VIEW_UP = (0.0, 0.0, 1.0)
VIEW_ANGLE = 30.0
# Render windows tried in order (the first that renders wins; VTK_DEFAULT_OPENGL_WINDOW, when set, goes first).
WINDOW_CLASSES = ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow")


# --- the transfer function ------------------------------------------------------------------------------------------
@dataclass
class TransferFunction:
    """Colour and opacity curves of a volume rendering, as plain data: ``colors`` are ``(value, r, g, b)`` with
    r, g, b in 0..1, ``opacities`` are ``(value, opacity)``, both with ascending values. ``window`` is the robust
    intensity window of the slices; ``kind`` is CT_LIKE or MR_LIKE and ``reason`` says why."""

    kind: str
    colors: list
    opacities: list
    window: Window
    reason: str = ""

    def fill(self, volume_property, unit_distance: float = 1.0) -> None:
        """Put these curves into a vtkVolumeProperty (also the one a vtkMRMLVolumePropertyNode holds): the existing
        transfer function objects are refilled in place, so whatever observes them (Slicer's views) sees the change."""
        colors = volume_property.GetRGBTransferFunction(0)
        colors.RemoveAllPoints()
        for value, red, green, blue in self.colors:
            colors.AddRGBPoint(value, red, green, blue)
        opacities = volume_property.GetScalarOpacity(0)
        opacities.RemoveAllPoints()
        for value, opacity in self.opacities:
            opacities.AddPoint(value, opacity)
        volume_property.SetInterpolationTypeToLinear()
        volume_property.ShadeOn()
        volume_property.SetAmbient(0.30)
        volume_property.SetDiffuse(0.75)
        volume_property.SetSpecular(0.20)
        volume_property.SetSpecularPower(12.0)
        volume_property.SetScalarOpacityUnitDistance(unit_distance)


def opacity_unit_distance(geometry: Geometry) -> float:
    """The length (mm) the opacities apply to: a fixed fraction of the volume's diagonal, so a volume looks the same
    whatever its physical scale (a 5 mm micro-CT sample or a 300 mm CT) and whatever its voxel size (before/after)."""
    return float(np.linalg.norm(geometry.extent)) * OPACITY_UNIT_FRACTION


def _gray(array: np.ndarray) -> np.ndarray:
    """Scalar voxels: vector volumes become their Rec. 709 luminance (RGB) or their first component."""
    if array.ndim == 3:
        return array
    if array.shape[3] >= 3:
        return array[..., :3].astype(np.float32) @ np.asarray(LUMINANCE_WEIGHTS, np.float32)
    return array[..., 0]


def _otsu(counts: np.ndarray, edges: np.ndarray, classes: int) -> list[float]:
    """Multi-level Otsu thresholds (values) of a histogram."""
    if np.count_nonzero(counts) < classes:  # nearly constant: evenly spaced thresholds
        return [float(edges[0] + (edges[-1] - edges[0]) * (c + 1) / classes) for c in range(classes - 1)]
    return [float(edges[cut]) for cut in multi_otsu(counts, classes)]


def _filled_value(values: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> float | None:
    """The value of the fullest bin when one exact value fills more than FILLED_SHARE of the voxels: padding, air
    set to one value (``bigvolume dehaze``), the outside of a synthetic object. It is background, whatever Otsu says
    of the rest (which its spike would otherwise pull about)."""
    peak = int(np.argmax(counts))
    in_peak = values[(values >= edges[peak]) & (values <= edges[peak + 1])]
    value = float(np.median(in_peak))
    return value if np.count_nonzero(values == value) > FILLED_SHARE * values.size else None


def _ascending(points) -> list:
    """Points with strictly increasing values (a transfer function ignores repeated ones)."""
    result = []
    for point in sorted(points, key=lambda p: p[0]):
        if result and point[0] <= result[-1][0]:
            point = (math.nextafter(result[-1][0], math.inf),) + tuple(point[1:])
        result.append(tuple(float(v) for v in point))
    return result


def transfer_function(source, sample_voxels: int = SAMPLE_VOXELS) -> TransferFunction:
    """Colour and opacity curves for a Volume or an array (k, j, i[, c]), from the histogram of a subsample.

    CT-like when the 1st percentile is Hounsfield air (<= -500) or when integer data span more than 12 bits
    (micro-CT, CT): three Otsu classes (air, tissue, dense) give air transparent, tissue faint and reddish, dense
    material opaque and ivory. MR-like otherwise: two Otsu classes (background, object), the background transparent
    and the opacity ramping up through the object's intensities to the 99.5th percentile (signed data: from 0).
    One exact value filling more than a fifth of the volume (padding, cleared air) is always transparent."""
    array = source.array if isinstance(source, Volume) else np.asarray(source)
    sample = _gray(subsample(array, sample_voxels))
    values = np.asarray(sample, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise BigVolumeError("the volume has no finite voxel values: there is nothing to render")
    counts, edges = robust_histogram(values, (0.1, 99.9))
    low, high = float(edges[0]), float(edges[-1])
    p1, p99, p995 = np.percentile(values, [1, 99, 99.5])
    filled = _filled_value(values, counts, edges)
    window = robust_window(values, WINDOW_PERCENTILES)
    if window.high <= window.low:
        window = Window(low, high)
    top = float(p995) if p995 > low else high
    integer = np.dtype(array.dtype).kind in "iub"
    if p1 <= HU_AIR and p99 >= 0:
        kind, reason = CT_LIKE, f"1st percentile {p1:g}: Hounsfield air"
    elif integer and high - low > WIDE_RANGE:
        kind, reason = CT_LIKE, f"intensities span {high - low:.0f} (> {WIDE_RANGE}): CT / micro-CT range"
    else:
        kind, reason = MR_LIKE, f"intensities span {high - low:.6g}, no Hounsfield air"

    def clear_up_to(threshold: float) -> float:
        """The threshold below which everything is transparent: above a fill value, if there is one."""
        if filled is not None and threshold <= filled < top:
            return math.nextafter(filled, math.inf) + 1e-3 * (high - low)
        return threshold

    if kind == CT_LIKE:
        air, dense = _otsu(counts, edges, 3)
        if p1 <= HU_AIR:
            air = max(air, -400.0)  # lung and air stay clear in Hounsfield data
        air = clear_up_to(air)
        dense = max(dense, air + 1e-6 * (high - low))
        top = max(top, dense)
        colors = [(low, 0.0, 0.0, 0.0), (air, 0.55, 0.25, 0.15), (dense, 0.90, 0.70, 0.55), (top, 1.0, 0.97, 0.90)]
        # Tissue nearly clear (a body is many opacity units thick), dense material opaque.
        opacities = [(low, 0.0), (air, 0.0), (air + 0.25 * (dense - air), 0.008), (dense - 0.15 * (dense - air), 0.012),
                     (dense, 0.15), (dense + 0.5 * (top - dense), 0.6), (top, 0.85)]
    else:
        background = _otsu(counts, edges, 2)[0]
        if low < 0.0:  # signed data (filtered, difference, test patterns) has no dark background: show what is > 0
            background = max(background, 0.0)
        background = clear_up_to(background)
        above = values[values >= background]
        middle = float(np.median(above)) if above.size else background
        top = max(top, middle)
        colors = [(low, 0.0, 0.0, 0.0), (background, 0.45, 0.30, 0.25), (middle, 0.85, 0.72, 0.62),
                  (top, 1.0, 1.0, 0.96)]
        opacities = [(low, 0.0), (background, 0.0), (middle, 0.10), (top, 0.5)]
    return TransferFunction(kind, _ascending(colors), _ascending(opacities), window, reason)


# --- offscreen rendering --------------------------------------------------------------------------------------------
_window_class = None


@contextlib.contextmanager
def _quiet_vtk():
    """Silence VTK's log while trying render windows or tearing Slicer objects down (expected warnings)."""
    previous = vtkLogger.GetCurrentVerbosityCutoff()
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
    try:
        yield
    finally:
        vtkLogger.SetStderrVerbosity(previous)


def _renders(window_class) -> bool:
    """Whether a window of this class really renders: a 4x4 frame must come back in its background colour."""
    window = window_class()
    try:
        window.SetOffScreenRendering(1)
        window.SetSize(4, 4)
        window.Initialize()
        if not window.GetInitialized():  # no OpenGL behind it (rendering now would crash, not raise)
            return False
        renderer = vtkRenderer()
        renderer.SetBackground(1.0, 0.0, 0.0)
        window.AddRenderer(renderer)
        window.Render()
        pixels = vtkUnsignedCharArray()
        window.GetPixelData(0, 0, 3, 3, 0, pixels, 0)
        rgb = numpy_support.vtk_to_numpy(pixels).reshape(-1, 3)
        return rgb.shape[0] == 16 and bool(np.all(rgb == (255, 0, 0)))
    except Exception:  # a failing OpenGL set-up can raise from the wrapped call
        return False
    finally:
        window.Finalize()


def offscreen_render_window():
    """A new offscreen vtkRenderWindow of the first kind that renders here: Mesa EGL, then OSMesa (the choice is
    made once per process). Raises BigVolumeError naming what to install when none works."""
    global _window_class
    if _window_class is None:
        names = list(WINDOW_CLASSES)
        wanted = os.environ.get("VTK_DEFAULT_OPENGL_WINDOW")
        if wanted:
            names.insert(0, wanted)
        with _quiet_vtk():
            for name in dict.fromkeys(names):
                window_class = getattr(vtkRenderingOpenGL2, name, None)
                if window_class is not None and _renders(window_class):
                    _window_class = window_class
                    break
        if _window_class is None:
            raise BigVolumeError(
                f"offscreen rendering is not available (tried {', '.join(dict.fromkeys(names))}): install Mesa's EGL "
                "or OSMesa (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri, or libosmesa6; `make system-packages`)")
    window = _window_class()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)
    return window


def _read_pixels(window, size) -> np.ndarray:
    width, height = size
    pixels = vtkUnsignedCharArray()
    window.GetPixelData(0, 0, width - 1, height - 1, 0, pixels, 0)
    return numpy_support.vtk_to_numpy(pixels).reshape(height, width, 3)[::-1].copy()  # OpenGL rows go up


def ras_bounds(geometry: Geometry) -> np.ndarray:
    """(min, max) corners in RAS of the box through the outermost voxel centres (what a ray caster draws)."""
    corners = np.array([[i, j, k, 1.0] for i in (0, geometry.dimensions[0] - 1)
                        for j in (0, geometry.dimensions[1] - 1) for k in (0, geometry.dimensions[2] - 1)])
    ras = (geometry.ijk_to_ras() @ corners.T).T[:, :3]
    return np.array([ras.min(axis=0), ras.max(axis=0)])


def frame_camera(camera, geometry: Geometry, direction=VIEW_DIRECTION, view_up=VIEW_UP,
                 view_angle: float = VIEW_ANGLE, aspect: float = 1.0) -> None:
    """Point ``camera`` (a vtkCamera or a vtkMRMLCameraNode: the same methods) at the centre of the volume's bounds
    from ``direction`` (RAS), as close as the perspective allows with all eight corners of the bounds in view
    (``aspect``: the view's width / height; the view angle is the vertical one, as in VTK)."""
    low, high = ras_bounds(geometry)
    centre = (low + high) / 2.0
    towards = np.asarray(direction, float) / np.linalg.norm(direction)  # from the centre to the camera
    up = np.asarray(view_up, float) - np.dot(view_up, towards) * towards
    up /= np.linalg.norm(up)
    right = np.cross(up, towards)
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1])
                        for z in (low[2], high[2])]) - centre
    tangent = math.tan(math.radians(view_angle) / 2.0)
    # A corner q is in view when its sideways offsets fit the frustum at its depth: |q.right| <= (d - q.towards) *
    # tangent * aspect and |q.up| <= (d - q.towards) * tangent.
    needed = corners @ towards + np.maximum(np.abs(corners @ right) / (tangent * aspect), np.abs(corners @ up) / tangent)
    distance = max(float(needed.max()) * 1.04, 1e-6)
    camera.SetViewAngle(view_angle)
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre + distance * towards))
    camera.SetViewUp(*up)


@dataclass
class Camera:
    """The direction the camera looks from (RAS), the view-up vector and the perspective angle in degrees."""

    direction: tuple = VIEW_DIRECTION
    view_up: tuple = VIEW_UP
    view_angle: float = VIEW_ANGLE


def render_volume(volume: Volume, size=DEFAULT_SIZE, transfer: TransferFunction | None = None,
                  camera: Camera | None = None, engine: str = "auto") -> np.ndarray:
    """An offscreen volume rendering of ``volume`` as an (h, w, 3) uint8 array.

    transfer: the curves (default: :func:`transfer_function` of this volume). camera: where it looks from (default:
    the fixed oblique view). engine: "slicer" (Slicer's displayable managers from slicer-core, GPU ray casting),
    "vtk" (plain VTK ray casting) or "auto" (slicer when importable outside the Slicer application, else vtk).
    Volumes larger than :data:`PREVIEW_DIMENSION` along an axis are downsampled first."""
    width, height = (int(v) for v in size)
    if width < 16 or height < 16:
        raise BigVolumeError(f"a rendering needs at least 16x16 pixels, got {width}x{height}")
    volume = preview_volume(volume)
    transfer = transfer or transfer_function(volume)
    camera = camera or Camera()
    if engine == "auto":
        engine = "slicer" if _slicer_core_available() else "vtk"
    if engine == "slicer":
        return _render_slicer(volume, (width, height), transfer, camera)
    if engine == "vtk":
        return _render_vtk(volume, (width, height), transfer, camera)
    raise BigVolumeError(f"unknown rendering engine {engine!r}; choose auto, slicer or vtk")


def _slicer_core_available() -> bool:
    """slicer-core importable, and not inside the Slicer application (whose views must not be disturbed)."""
    try:
        import slicer
    except ImportError:
        return False
    return not hasattr(slicer, "app") and hasattr(slicer, "vtkMRMLVolumeRenderingDisplayableManager")


def _vtk_matrix(array) -> vtkMatrix4x4:
    matrix = vtkMatrix4x4()
    matrix.DeepCopy(np.asarray(array, float).ravel())
    return matrix


def _image_data(array: np.ndarray) -> vtkImageData:
    """The voxels as a vtkImageData with unit spacing at the origin (the IJKToRAS matrix places it)."""
    array = np.ascontiguousarray(array)
    image = vtkImageData()
    image.SetDimensions(*array.shape[::-1])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def _render_vtk(volume: Volume, size, transfer: TransferFunction, camera: Camera) -> np.ndarray:
    window = offscreen_render_window()
    try:
        window.SetSize(*size)
        renderer = vtkRenderer()
        renderer.SetBackground(*BACKGROUND)
        window.AddRenderer(renderer)
        mapper = vtkSmartVolumeMapper()  # GPU ray casting where OpenGL allows, else CPU ray casting
        mapper.SetInputData(_image_data(_scalar_array(volume)))
        mapper.SetAutoAdjustSampleDistances(0)  # one still frame: full quality, half a voxel as Slicer samples
        mapper.SetSampleDistance(min(volume.geometry.spacing) / 2.0)
        prop = vtkVolumeProperty()
        prop.SetColor(vtkColorTransferFunction())
        prop.SetScalarOpacity(vtkPiecewiseFunction())
        transfer.fill(prop, opacity_unit_distance(volume.geometry))
        actor = vtkVolume()
        actor.SetMapper(mapper)
        actor.SetProperty(prop)
        actor.SetUserMatrix(_vtk_matrix(volume.geometry.ijk_to_ras()))
        renderer.AddVolume(actor)
        frame_camera(renderer.GetActiveCamera(), volume.geometry, camera.direction, camera.view_up, camera.view_angle,
                     size[0] / size[1])
        renderer.ResetCameraClippingRange()
        window.Render()
        return _read_pixels(window, size)
    finally:
        window.Finalize()


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
            with _quiet_vtk():  # logics warn about observers they drop on the way out: expected
                view_logic.SetMRMLScene(None)
                rendering.SetMRMLScene(None)
                colors.SetMRMLScene(None)
                application.SetMRMLScene(None)
                scene.Clear(1)


def _render_slicer(volume: Volume, size, transfer: TransferFunction, camera: Camera) -> np.ndarray:
    """Slicer's own volume rendering: a volume node with a GPU ray-cast display node carrying our curves
    (preview_nodes, the code the Slicer modules use), a 3D view node, and that view's displayable managers drawing
    into an offscreen render window."""
    import slicer
    from vtkmodules.vtkRenderingUI import vtkGenericRenderWindowInteractor

    from ..slicer.preview_nodes import show_volume_rendering
    from ..slicer.volume_nodes import fill_volume_node

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
            fill_volume_node(node, Volume(_scalar_array(volume), volume.geometry))
            show_volume_rendering(node, transfer)
            camera_node = group.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager").GetCameraNode()
            frame_camera(camera_node, volume.geometry, camera.direction, camera.view_up, camera.view_angle,
                         size[0] / size[1])
            renderer.ResetCameraClippingRange()
            window.Render()
            return _read_pixels(window, size)
        finally:
            with _quiet_vtk():
                if group is not None:
                    group.SetMRMLDisplayableNode(None)
                del managers, group
                window.Finalize()


# --- preview volumes and slices -------------------------------------------------------------------------------------
def preview_factors(geometry: Geometry, limit: int = PREVIEW_DIMENSION) -> tuple[float, float, float]:
    """Per-axis factors that bring every axis to at most ``limit`` voxels (1 where it already is)."""
    return tuple(max(1.0, n / limit) for n in geometry.dimensions)  # type: ignore[return-value]


def preview_volume(volume: Volume, limit: int = PREVIEW_DIMENSION) -> Volume:
    """``volume`` itself when small enough, else downsampled by the default anti-aliased method."""
    factors = preview_factors(volume.geometry, limit)
    if factors == (1.0, 1.0, 1.0):
        return volume
    return resample(volume, factors, method=DEFAULT_METHOD)


def _scalar_array(volume: Volume) -> np.ndarray:
    """What gets rendered: one value per voxel, in a type the ray casters take (booleans as bytes)."""
    array = _gray(np.asarray(volume.array))
    return array.view(np.uint8) if array.dtype == np.bool_ else array


# Slicer's slice views (patient right on screen left): the RAS directions of the screen's x (rightwards) and y (up).
SLICE_VIEWS = {2: ("axial", (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),     # keyed by the RAS axis of the plane's normal
               1: ("coronal", (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
               0: ("sagittal", (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))}


def _mid_planes(volume: Volume, tile: int) -> list[tuple[str, int, int, np.ndarray]]:
    """The three orthogonal mid-planes of the voxel grid (K, J, I) as float32 images turned the way Slicer's slice
    view of their orientation shows them, at one physical scale that fits the volume's largest extent in ``tile``
    pixels: (view name, IJK axis of the plane's normal, index along it, image)."""
    array = _gray(np.asarray(volume.array))
    geometry = volume.geometry
    directions = geometry.ijk_to_ras()[:3, :3] / np.asarray(geometry.spacing)  # unit RAS direction of I, J, K
    scale = tile / max(geometry.extent)  # pixels per mm
    result = []
    for fixed in (2, 1, 0):  # K, J, I
        index = geometry.dimensions[fixed] // 2
        plane = np.take(array, index, axis=2 - fixed)   # numpy axes are (k, j, i)
        rows, cols = [axis for axis in (2, 1, 0) if axis != fixed]  # IJK axes of the plane's rows and columns
        name, screen_x, screen_y = SLICE_VIEWS[int(np.argmax(np.abs(directions[:, fixed])))]
        if abs(directions[:, rows] @ screen_x) > abs(directions[:, cols] @ screen_x):
            plane, rows, cols = plane.T, cols, rows
        if directions[:, cols] @ screen_x < 0:
            plane = plane[:, ::-1]
        if directions[:, rows] @ screen_y > 0:  # image rows run down the screen
            plane = plane[::-1]
        target = (max(1, round(plane.shape[0] * geometry.spacing[rows] * scale)),
                  max(1, round(plane.shape[1] * geometry.spacing[cols] * scale)))
        plane = np.asarray(plane, np.float32)
        factors = (max(1.0, plane.shape[1] / target[1]), max(1.0, plane.shape[0] / target[0]), 1.0)
        if factors != (1.0, 1.0, 1.0):
            plane = np.asarray(downsample_array(np.ascontiguousarray(plane)[None], factors, DEFAULT_METHOD))[0]
        pick_rows = ((np.arange(target[0]) + 0.5) * plane.shape[0] / target[0]).astype(int)
        pick_cols = ((np.arange(target[1]) + 0.5) * plane.shape[1] / target[1]).astype(int)
        result.append((name, fixed, index, plane[pick_rows][:, pick_cols]))
    return result


def slice_label(name: str, fixed: int, index: int, drawn: Geometry, file_geometry: Geometry | None = None) -> str:
    """"axial K 158/316": the plane ``index`` along IJK axis ``fixed`` of the ``drawn`` grid, named by the nearest
    slice of the file's own grid (``file_geometry``; a preview may be drawn from a downsampled copy)."""
    file_geometry = file_geometry or drawn
    voxel = np.append((np.asarray(drawn.dimensions, float) - 1) / 2, 1.0)
    voxel[fixed] = index
    file_voxel = np.linalg.solve(file_geometry.ijk_to_ras(), drawn.ijk_to_ras() @ voxel)
    return f"{name} {'IJK'[fixed]} {int(round(file_voxel[fixed]))}/{file_geometry.dimensions[fixed]}"


MARK_COLOR = np.array([255, 40, 200], np.uint8)  # magenta: far from any gray, on dark air and bright tissue alike
MARK_TINT = 0.35                                  # opacity of the tint inside a marked region (its outline is solid)


def _grow(region: np.ndarray) -> np.ndarray:
    """``region`` grown by one pixel (8 neighbours; the image's edge pixels repeat outwards)."""
    padded = np.pad(region, 1, mode="edge")
    grown = np.zeros_like(region)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy:dy + region.shape[0], dx:dx + region.shape[1]]
    return grown


def mark_region(gray: np.ndarray, region: np.ndarray) -> np.ndarray:
    """An RGB copy of the uint8 ``gray`` image with ``region`` (a boolean image of the same shape) tinted and its
    outline (region pixels with a 4-neighbour outside it) drawn in MARK_COLOR. One-pixel gaps in the region are
    closed first (noise voxels that already had the fill value stay unchanged, and would speckle the tint)."""
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if not region.any():
        return rgb
    region = ~_grow(~_grow(region))  # closing: grow, then shrink
    padded = np.pad(region, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    outline = region & ~inner
    tinted = rgb[region].astype(np.float32) * (1.0 - MARK_TINT) + MARK_COLOR * MARK_TINT
    rgb[region] = np.rint(tinted).astype(np.uint8)
    rgb[outline] = MARK_COLOR
    return rgb


def mid_slices(volume: Volume, window: Window, tile: int, file_geometry: Geometry | None = None,
               marked: np.ndarray | None = None) -> list[tuple[str, np.ndarray]]:
    """The three orthogonal mid-planes of the voxel grid (K, J, I) as uint8 images through ``window``, each turned
    the way Slicer's slice view of its orientation shows it (axial, coronal or sagittal by the plane's normal; patient
    right on screen left, anterior or superior up), all at one physical scale that fits the volume's largest extent in
    ``tile`` pixels. Planes larger than their tile are reduced by the default anti-aliased method, smaller ones are
    enlarged voxel by voxel (the voxel size stays visible). Each is named with its slice in ``file_geometry`` (the
    file's own grid; default: the volume's). ``marked``: a boolean array on the volume's grid whose region is tinted
    and outlined (:func:`mark_region`) on RGB images."""
    planes = _mid_planes(volume, tile)
    marks = (_mid_planes(Volume(np.asarray(marked, np.float32), volume.geometry), tile)
             if marked is not None else [None] * len(planes))
    result = []
    for (name, fixed, index, plane), mark in zip(planes, marks):
        image, _ = apply_window(plane, window, np.uint8)
        if mark is not None:
            image = mark_region(image, mark[3] >= 0.5)
        result.append((slice_label(name, fixed, index, volume.geometry, file_geometry), image))
    return result


# --- comparing volumes of different types or ranges ------------------------------------------------------------------
SAME_RANGE_OVERLAP = 0.5   # windows overlapping this much (intersection / union) show the same tissue alike
FIT_CORRELATION = 0.98     # a fitted linear intensity map is used only when it explains the data this well
FIT_VOXELS = 200_000


@dataclass(frozen=True)
class IntensityMap:
    """A linear intensity transform from one volume's values to another's (value -> scale * value + offset), and
    where it comes from (``how``: "reduce-bits", "fitted", ...)."""

    scale: float
    offset: float
    how: str

    def value(self, value: float) -> float:
        return self.scale * value + self.offset

    def window(self, window: Window) -> Window:
        return Window(*sorted((self.value(window.low), self.value(window.high))))

    def transfer(self, transfer: TransferFunction) -> TransferFunction:
        """The same curves over the mapped values (a positive scale keeps their order)."""
        colors = [(self.value(v),) + tuple(rest) for v, *rest in transfer.colors]
        opacities = [(self.value(v), o) for v, o in transfer.opacities]
        return TransferFunction(transfer.kind, _ascending(colors), _ascending(opacities), self.window(transfer.window),
                                transfer.reason)

    def describe(self) -> str:
        sign = "-" if self.offset < 0 else "+"
        return f"y = {self.scale:.4g} x {sign} {abs(self.offset):.4g}"


@dataclass
class Display:
    """How one volume of a picture is drawn: its transfer function (which carries the slices' window) and a short
    caption saying where the window comes from."""

    transfer: TransferFunction
    caption: str
    how: str = "same"                  # "same" curves as the first volume, "mapped" through an intensity map, "own"
    marked: np.ndarray | None = None   # voxels outlined on its slices (changed by a compared volume)
    marked_by: str = ""

    def rendering_note(self, name: str) -> str:
        """One line saying how the volume ``name`` was rendered, for the picture's foot."""
        if self.how == "own":
            return f"{name}: its own {self.transfer.kind} transfer function ({self.transfer.reason})"
        if self.how == "mapped":
            return f"{name}: the same curves, mapped as its slices' window"
        return f"{name}: the same curves"


def _overlap(a: Window, b: Window) -> float:
    union = max(a.high, b.high) - min(a.low, b.low)
    if union <= 0:
        return 1.0
    return max(0.0, min(a.high, b.high) - max(a.low, b.low)) / union


def fit_intensity_map(first: Volume, other: Volume) -> tuple[IntensityMap | None, float]:
    """The least-squares line from ``first``'s voxel values to ``other``'s on the same grid (a subsample), leaving out
    voxels at the ends of ``other``'s integer type (clipped); returns (map or None, correlation). None when the grids
    differ or the values are not linearly related with a positive slope."""
    a, b = _gray(np.asarray(first.array)), _gray(np.asarray(other.array))
    if a.shape != b.shape:
        return None, 0.0
    step = max(1, int(np.ceil((a.size / FIT_VOXELS) ** (1 / 3))))
    x = np.asarray(a[::step, ::step, ::step], np.float64).ravel()
    y = np.asarray(b[::step, ::step, ::step], np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    if np.dtype(other.dtype).kind in "iu":
        low, high = np.iinfo(other.dtype).min, np.iinfo(other.dtype).max
        keep &= (y > low) & (y < high)
    x, y = x[keep], y[keep]
    if x.size < 16 or x.std() == 0 or y.std() == 0:
        return None, 0.0
    correlation = float(np.corrcoef(x, y)[0, 1])
    scale, offset = np.polyfit(x, y, 1)
    if scale <= 0:
        return None, correlation
    return IntensityMap(float(scale), float(offset), "fitted"), correlation


def compare_display(first: PreviewSource, transfer: TransferFunction, other: PreviewSource,
                    intensity_map: IntensityMap | None = None) -> Display:
    """How ``other`` is drawn beside ``first`` (drawn with ``transfer``) so that the same tissue looks the same:
    through ``intensity_map`` when the transform between them is known (reduce-bits knows its window); with
    ``first``'s own curves when their intensity windows overlap (same range: before/after of resample or dehaze);
    else through a line fitted voxel by voxel when both share a grid and it fits (correlation >= FIT_CORRELATION);
    else with ``other``'s own histogram transfer function and robust window."""
    if intensity_map is not None:
        mapped = intensity_map.transfer(transfer)
        return Display(mapped, f"window of {first.name} through {intensity_map.how} ({intensity_map.describe()})",
                       "mapped")
    own = transfer_function(other.volume)
    if _overlap(own.window, transfer.window) >= SAME_RANGE_OVERLAP:
        return Display(transfer, f"same as {first.name}")
    if first.geometry.isclose(other.geometry):
        fitted, correlation = fit_intensity_map(first.volume, other.volume)
        if fitted is not None and correlation >= FIT_CORRELATION:
            return Display(fitted.transfer(transfer), f"window of {first.name} through a fitted "
                                                      f"{fitted.describe()} (r {correlation:.3f})", "mapped")
    return Display(own, f"its own ({WINDOW_PERCENTILES[0]:g}-{WINDOW_PERCENTILES[1]:g} percentiles): its range "
                        f"differs from {first.name}'s", "own")


def changed_voxels(first: PreviewSource, other: PreviewSource) -> np.ndarray | None:
    """Where ``other`` differs from ``first`` on the same grid (e.g. the haze dehaze set to the fill value), on the
    drawn grids (for a downsampled preview: where the two downsampled copies differ); None when the grids differ or
    nothing changed."""
    a, b = _gray(np.asarray(first.volume.array)), _gray(np.asarray(other.volume.array))
    if a.shape != b.shape or not first.geometry.isclose(other.geometry):
        return None
    changed = a != b
    if np.dtype(a.dtype).kind == "f" or np.dtype(b.dtype).kind == "f":
        changed &= ~(np.isnan(a) & np.isnan(b))
    return changed if changed.any() else None


# --- text and composition -------------------------------------------------------------------------------------------
def text_image(text: str, size: int = 14, color=TEXT, bold: bool = False) -> np.ndarray:
    """``text`` drawn by VTK's FreeType renderer as an (h, w, 4) uint8 RGBA array (no display needed)."""
    prop = vtkTextProperty()
    prop.SetFontFamilyToArial()
    prop.SetFontSize(size)
    prop.SetColor(*color)
    prop.SetBold(bool(bold))
    image = vtkImageData()
    renderer = vtkTextRenderer.GetInstance()
    used = [0, 0]  # the text's own width and height: the image is padded to powers of two (texture sizes)
    if renderer is None or not renderer.RenderString(prop, text, image, used, 72):
        raise BigVolumeError("cannot draw text: VTK's FreeType text renderer is not available")
    width, height, _ = image.GetDimensions()
    rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 4)
    return rgba[:used[1], :used[0]][::-1].copy()  # the text sits at the bottom left; image rows go up


def _paste(canvas: np.ndarray, image: np.ndarray, top: int, left: int) -> None:
    """Put an RGB, RGBA (blended by its alpha) or gray image on the canvas, clipped to it."""
    height = min(image.shape[0], canvas.shape[0] - top)
    width = min(image.shape[1], canvas.shape[1] - left)
    if height <= 0 or width <= 0:
        return
    image = image[:height, :width]
    region = canvas[top:top + height, left:left + width]
    if image.ndim == 2:
        region[...] = image[..., None]
    elif image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        region[...] = np.rint(image[..., :3] * alpha + region * (1.0 - alpha)).astype(np.uint8)
    else:
        region[...] = image


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
    is read. ``series``: the DICOM series UID, when the folder holds several."""
    if isinstance(source, Volume):
        return PreviewSource(name or "volume", source.geometry, source.dtype, source.components, None,
                             preview_volume(source))
    path = Path(source)
    geometry, dtype, components = io.read_geometry(path, series)
    factors = preview_factors(geometry)
    if factors == (1.0, 1.0, 1.0):
        small = io.read_volume(path, series)
    else:
        with tempfile.TemporaryDirectory(prefix="bigvolume-preview-") as folder:
            reduced = Path(folder) / "preview.nhdr"
            resample_file(path, reduced, factors, method=DEFAULT_METHOD, compress=False, memory_limit=memory_limit,
                          series=series)
            read = io.read_volume(reduced)
            small = Volume(np.array(read.array), read.geometry)  # a copy: the temporary file goes away
    return PreviewSource(name or path.name, geometry, np.dtype(dtype), components, io.file_size(path, series),
                         small)


@dataclass
class Panel:
    """One volume's picture and where its parts are: boxes (top, left, height, width) in the panel, or, in a
    PreviewReport, in the whole picture."""

    image: np.ndarray
    render: tuple
    slices: tuple

    def moved(self, left: int) -> "Panel":
        return Panel(self.image, (self.render[0], self.render[1] + left) + self.render[2:],
                     (self.slices[0], self.slices[1] + left) + self.slices[2:])


def preview_panel(source: PreviewSource, transfer: TransferFunction | Display, size=DEFAULT_SIZE,
                  engine: str = "auto", camera: Camera | None = None) -> Panel:
    """One volume's picture: its name and label on top, the volume rendering, the three mid-slices in a column
    beside it (named by the file's own slice indices), and under them a caption: the slices' window and where it
    comes from, and what is marked on them. ``transfer``: a TransferFunction, or a Display (curves, caption,
    marked voxels)."""
    display = transfer if isinstance(transfer, Display) else Display(transfer, "")
    transfer = display.transfer
    width, height = (int(v) for v in size)
    tile = max(32, height // 3)
    render = render_volume(source.volume, (width, height), transfer, camera, engine)
    title = text_image(source.name, 16, bold=True)
    label = text_image(source.label(), 13)
    caption = f"slices: window {transfer.window.low:.6g} .. {transfer.window.high:.6g}"
    if display.caption:
        caption += f"\n  = {display.caption}"
    if display.marked is not None:
        caption += f"\nmagenta: where {display.marked_by} differs (the voxels it changes)"
    caption = text_image(caption, 12, (0.75, 0.75, 0.75))
    header = 8 + title.shape[0] + 4 + label.shape[0] + 8
    body = max(height, 3 * tile)
    canvas = np.empty((header + body + 6 + caption.shape[0] + 4,
                       max(width + 8 + tile, 16 + max(title.shape[1], label.shape[1]), 16 + caption.shape[1]), 3),
                      np.uint8)
    canvas[...] = CANVAS
    _paste(canvas, title, 8, 8)
    _paste(canvas, label, 8 + title.shape[0] + 4, 8)
    _paste(canvas, render, header, 0)
    _paste(canvas, caption, header + body + 6, 8)
    for index, (name, image) in enumerate(mid_slices(source.volume, transfer.window, tile, source.geometry,
                                                     display.marked)):
        top = header + index * tile
        _paste(canvas, image, top + (tile - image.shape[0]) // 2, width + 8 + (tile - image.shape[1]) // 2)
        name = text_image(name, 11, (1.0, 0.85, 0.3))
        backing = np.zeros(name.shape[:2] + (4,), np.uint8)  # a dark band keeps the name legible on any slice
        backing[...] = CANVAS + (190,)
        _paste(canvas, backing, top, width + 8)
        _paste(canvas, name, top, width + 8)
    return Panel(canvas, (header, 0, height, width), (header, width + 8, 3 * tile, tile))


def check_png_path(path, inputs=()) -> Path:
    """Refuse, before any work, a picture path that is not a .png in a writable folder or that names an input."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise BigVolumeError(f"{path}: a preview is a PNG picture; give a name ending in .png")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BigVolumeError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise BigVolumeError(f"{path}: cannot write in {folder}")
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and Path(source).exists() and path.exists() \
                and os.path.samefile(path, source):
            raise BigVolumeError(f"{path}: the picture would overwrite an input")
    return path


@dataclass
class PreviewReport:
    path: Path
    transfer: TransferFunction
    sources: list
    size: tuple
    displays: list = None   # how each source was drawn (Display), in order
    panels: list = None     # each source's Panel, its boxes in the picture's coordinates

    def summary(self) -> str:
        names = " | ".join(source.name for source in self.sources)
        return (f"{self.path}: preview of {names}, {self.size[0]}x{self.size[1]} pixels, "
                f"{self.transfer.kind} transfer function ({self.transfer.reason})")


def write_preview(source, output_png, *, compare=None, size=DEFAULT_SIZE, names=None, engine: str = "auto",
                  camera: Camera | None = None, memory_limit: float | None = None,
                  intensity_maps=None, series: str | None = None) -> PreviewReport:
    """Write ``output_png``: the volume rendering and three mid-slices of ``source`` (a path or a Volume); with
    ``compare`` (another path or Volume, or a list of them) the volumes side by side, each labelled with its name
    (``names``, default the file names), dimensions, spacing and size. ``source`` is drawn with its histogram
    transfer function and robust window; each compared volume so that the same tissue looks the same
    (:func:`compare_display`: the same curves when the ranges agree, else mapped through ``intensity_maps``, one
    IntensityMap or None per compared volume, or through a fitted line, or its own), and the picture says which.
    Voxels that a compared volume on the same grid changes (e.g. the haze dehaze removed) are outlined in magenta on
    ``source``'s slices. ``size``: the rendering's (width, height) per volume. ``memory_limit``: bytes the
    downsampling of a large file may hold (default: a quarter of the machine's memory; beyond it the file is
    streamed). ``series``: the DICOM series UID of ``source`` when its folder holds several. The PNG appears
    whole or not at all."""
    if compare is None:
        compare = []
    elif isinstance(compare, (str, os.PathLike, Volume)):
        compare = [compare]
    sources = [source] + list(compare)
    output_png = check_png_path(output_png, sources)
    names = list(names or [])
    names += [None] * (len(sources) - len(names))
    intensity_maps = list(intensity_maps or [])
    intensity_maps += [None] * (len(compare) - len(intensity_maps))
    loaded = [load_preview_source(item, name, memory_limit, series if index == 0 else None)
              for index, (item, name) in enumerate(zip(sources, names))]
    transfer = transfer_function(loaded[0].volume)
    displays = [Display(transfer, f"its own ({WINDOW_PERCENTILES[0]:g}-{WINDOW_PERCENTILES[1]:g} percentiles)")]
    displays += [compare_display(loaded[0], transfer, other, mapping)
                 for other, mapping in zip(loaded[1:], intensity_maps)]
    for other, display in zip(loaded[1:], displays[1:]):
        if display.how == "same":  # drawn alike: what differs is the data; show where it changed
            displays[0].marked = changed_voxels(loaded[0], other)
            if displays[0].marked is not None:
                displays[0].marked_by = other.name
                break
    panels = [preview_panel(item, display, size, engine, camera) for item, display in zip(loaded, displays)]
    placed = []
    note = f"rendering: {transfer.kind} transfer function of {loaded[0].name} ({transfer.reason})"
    note = "\n".join([note] + [display.rendering_note(other.name)
                                for other, display in zip(loaded[1:], displays[1:])])
    note = text_image(note, 12, (0.7, 0.7, 0.7))
    gap = 16
    height = max(panel.image.shape[0] for panel in panels) + note.shape[0] + 12
    width = max(sum(panel.image.shape[1] for panel in panels) + gap * (len(panels) - 1), note.shape[1] + 16)
    picture = np.empty((height, width, 3), np.uint8)
    picture[...] = CANVAS
    left = 0
    for panel in panels:
        _paste(picture, panel.image, 0, left)
        placed.append(panel.moved(left))
        left += panel.image.shape[1] + gap
    _paste(picture, note, height - note.shape[0] - 6, 8)
    write_png(picture, output_png)
    return PreviewReport(output_png, transfer, loaded, (width, height), displays, placed)


def write_png(picture: np.ndarray, path) -> Path:
    """An (h, w, 3) uint8 picture as a PNG, written under a temporary name and moved into place when complete."""
    path = Path(path)
    image = sitk.GetImageFromArray(np.ascontiguousarray(picture), isVector=True)
    try:
        with io.atomic_output(path) as staging:
            sitk.WriteImage(image, str(staging))
    except RuntimeError as error:
        raise BigVolumeError(f"{path}: cannot write the picture ({str(error).strip().splitlines()[-1]})") from None
    return path
