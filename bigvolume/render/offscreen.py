"""Offscreen volume rendering: the render window that works here (Mesa EGL, then OSMesa), the camera that
frames a volume, and the renderers (engines) a preview can be drawn with.

"vtk" (plain VTK ray casting) lives here. Other layers register more with :func:`register_renderer`: the slicer
layer registers "slicer" (Slicer's own displayable managers, from slicer-core) when
:mod:`bigvolume.slicer.offscreen_render` is imported, which the command line does. Volumes are placed in RAS by
their IJKToRAS matrix (spacing, origin and direction respected); the camera frames the volume's bounds from a fixed
oblique direction (anterior, a little right and superior)."""
from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import vtkLogger, vtkUnsignedCharArray
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPiecewiseFunction
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkRenderingCore import (vtkColorTransferFunction, vtkRenderer, vtkVolume, vtkVolumeProperty)
from vtkmodules import vtkRenderingOpenGL2  # OpenGL render windows (and the OpenGL overrides of vtkRenderer)
from vtkmodules.vtkRenderingVolumeOpenGL2 import vtkSmartVolumeMapper

from ..core.errors import BigVolumeError
from ..core.geometry import Geometry
from ..core.volume import Volume
from ..ops.precision import Window
from .transfer import (LABEL_COLORS, LABEL_OPACITY, TransferFunction, float_shift, label_places,
                       opacity_unit_distance, transfer_function)
from .volumes import DEFAULT_SIZE, preview_volume, scalar_voxels

BACKGROUND = (0.10, 0.10, 0.14)  # the render's background (RGB 0..1)
# The fixed oblique view: the camera looks from this direction (RAS: anterior, a little right and superior) with
# superior up, a 30 degree perspective like Slicer's 3D view.
VIEW_DIRECTION = (0.5, 1.0, 0.25)
VIEW_UP = (0.0, 0.0, 1.0)
VIEW_ANGLE = 30.0
# Render windows tried in order (the first that renders wins; VTK_DEFAULT_OPENGL_WINDOW, when set, goes first):
# Mesa EGL and OSMesa (Linux, no display needed), then the desktop's own window, offscreen (Windows, macOS: VTK has
# neither EGL nor OSMesa there). A class this VTK build lacks is skipped.
WINDOW_CLASSES = ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow", "vtkWin32OpenGLRenderWindow",
                  "vtkCocoaRenderWindow")


_window_class = None


@contextlib.contextmanager
def quiet_vtk(level=vtkLogger.VERBOSITY_OFF):
    """Silence VTK's log (below ``level``: all of it by default) while trying render windows or tearing Slicer
    objects down (expected warnings)."""
    previous = vtkLogger.GetCurrentVerbosityCutoff()
    vtkLogger.SetStderrVerbosity(level)
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
        with quiet_vtk():
            for name in dict.fromkeys(names):
                window_class = getattr(vtkRenderingOpenGL2, name, None)
                if window_class is not None and _renders(window_class):
                    _window_class = window_class
                    break
        if _window_class is None:
            tried = ", ".join(name for name in dict.fromkeys(names) if hasattr(vtkRenderingOpenGL2, name))
            remedy = ("install Mesa's EGL or OSMesa (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri, or libosmesa6; "
                      "`make system-packages`)") if sys.platform.startswith("linux") else \
                "this needs OpenGL 3.2 from the graphics driver (a remote session may have none)"
            raise BigVolumeError(f"offscreen rendering is not available (tried {tried or 'no render window'}): "
                                 f"{remedy}")
    window = _window_class()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)
    return window


def read_pixels(window, size) -> np.ndarray:
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
    """Point ``camera`` (a vtkCamera, or any object with its methods, such as the scene's camera node) at the centre
    of the volume's bounds from ``direction`` (RAS), as close as the perspective allows with all eight corners of the
    bounds in view (``aspect``: the view's width / height; the view angle is the vertical one, as in VTK)."""
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


def render_vtk(volume: Volume, size, transfer: TransferFunction, camera: Camera) -> np.ndarray:
    window = offscreen_render_window()
    try:
        window.SetSize(*size)
        renderer = vtkRenderer()
        renderer.SetBackground(*BACKGROUND)
        window.AddRenderer(renderer)
        mapper = vtkSmartVolumeMapper()  # GPU ray casting where OpenGL allows, else CPU ray casting
        mapper.SetInputData(_image_data(scalar_voxels(volume)))
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
        return read_pixels(window, size)
    finally:
        window.Finalize()


@dataclass(frozen=True)
class Renderer:
    """An engine that draws a volume: ``render(volume, size, transfer, camera)`` returns an (h, w, 3) uint8 array;
    ``available()`` says whether it can run here, and "auto" takes the available one of highest ``preference``."""

    render: Callable[[Volume, tuple, TransferFunction, Camera], np.ndarray]
    available: Callable[[], bool] = lambda: True
    preference: int = 0
    needs: str = ""  # what it needs, said when it is named but cannot run here


RENDERERS: dict[str, Renderer] = {}


def register_renderer(name: str, render, available: Callable[[], bool] | None = None, preference: int = 0,
                      needs: str = "") -> None:
    """Make ``render`` selectable as ``engine=name`` (layers above render register theirs: bigvolume.slicer)."""
    RENDERERS[name] = Renderer(render, available or (lambda: True), preference, needs)


register_renderer("vtk", render_vtk)


def render_volume(volume: Volume, size=DEFAULT_SIZE, transfer: TransferFunction | None = None,
                  camera: Camera | None = None, engine: str = "auto") -> np.ndarray:
    """An offscreen volume rendering of ``volume`` as an (h, w, 3) uint8 array.

    transfer: the curves (default: :func:`transfer_function` of this volume). camera: where it looks from (default:
    the fixed oblique view). engine: a registered renderer: "vtk" (plain VTK ray casting), "slicer" (Slicer's
    displayable managers from slicer-core, GPU ray casting; registered by bigvolume.slicer.offscreen_render) or
    "auto" (the preferred one that can run here: slicer when registered and slicer-core is importable outside the
    Slicer application, else vtk). Volumes larger than PREVIEW_DIMENSION along an axis are downsampled first."""
    width, height = (int(v) for v in size)
    if width < 16 or height < 16:
        raise BigVolumeError(f"a rendering needs at least 16x16 pixels, got {width}x{height}")
    if engine == "auto":
        engine = max((name for name, renderer in RENDERERS.items() if renderer.available()),
                     key=lambda name: RENDERERS[name].preference)
    if engine not in RENDERERS:
        raise BigVolumeError(f"unknown rendering engine {engine!r}; choose {', '.join(['auto', *RENDERERS])}")
    if not RENDERERS[engine].available():  # named, but it cannot run here (a traceback from its import before)
        raise BigVolumeError(f"the {engine} rendering engine cannot run here: it needs {RENDERERS[engine].needs or '?'}"
                             "; choose auto or vtk")
    volume = preview_volume(volume)
    transfer = transfer or transfer_function(volume)
    if transfer.labels:
        volume, transfer = _label_ranks(volume, transfer)
    volume, transfer = _in_float32_range(_clear_non_finite(volume, transfer), transfer)
    # Errors only: curves over a range above 1e7 (or with points 1 ulp apart) make OpenGL's lookup tables larger than
    # allowed, and VTK warned on stderr, in colour codes, of a coarser table (the picture the same as without)
    with quiet_vtk(vtkLogger.VERBOSITY_ERROR):
        return RENDERERS[engine].render(thickened(volume), (width, height), transfer, camera or Camera())


def _label_ranks(volume: Volume, transfer: TransferFunction) -> tuple[Volume, TransferFunction]:
    """A label map drawn as its labels' places (1, 2, ...; the background 0) with the same colours: the renderers'
    lookup tables sample the curves at a few thousand points over their range, so labels 1, 2 and 3 of a map that
    reaches 2000 shared an entry (one vanished, two took one colour). A value the subsample missed takes the place
    of the label above it, as in the slices (:func:`.transfer.label_places`)."""
    count = len(transfer.labels)
    colors = [(0.0, 0.0, 0.0, 0.0)] + [(float(n + 1),) + LABEL_COLORS[n % len(LABEL_COLORS)] for n in range(count)]
    ranked = TransferFunction(transfer.kind, colors, [(0.0, 0.0), (1.0, LABEL_OPACITY), (float(count), LABEL_OPACITY)],
                              Window(0.0, float(count)), transfer.reason, tuple(float(n) for n in range(1, count + 1)))
    return Volume(label_places(volume.array, transfer.labels), volume.geometry), ranked


def _clear_non_finite(volume: Volume, transfer: TransferFunction) -> Volume:
    """NaN and infinite voxels at the opacity curve's first transparent point: ray casting drew NaN as opaque grey
    blocks and infinities at the curves' ends (a grey box)."""
    array = volume.array
    if array.dtype.kind != "f":
        return volume
    bad = ~np.isfinite(array)
    if not bad.any():
        return volume
    clear = min((value for value, opacity in transfer.opacities if opacity == 0.0), default=None)
    if clear is None:
        clear = transfer.opacities[0][0] - 1.0
    return Volume(np.where(bad, np.asarray(clear, array.dtype), array), volume.geometry)


def _in_float32_range(volume: Volume, transfer: TransferFunction) -> tuple[Volume, TransferFunction]:
    """Float voxels beyond FLOAT32_SAFE (float32 made them infinite: an opaque black box) or all tinier than its
    inverse (float32 made them 0), and the curves with them, scaled by one power of two (exact) so that the largest
    lies in 1 .. 2: drawn like the same object at an ordinary scale."""
    array = volume.array
    if array.dtype.kind != "f" or array.size == 0:
        return volume, transfer
    shift = float_shift(max(abs(float(np.min(array))), abs(float(np.max(array)))))  # finite: non-finite are cleared
    if shift == 0:
        return volume, transfer
    half = shift // 2  # two steps: 2 ** shift itself may lie beyond float64 (a subnormal volume's shift is ~1030)
    return (Volume(np.ldexp(array, shift), volume.geometry),
            transfer.mapped(2.0 ** half).mapped(2.0 ** (shift - half)))


def thickened(volume: Volume) -> Volume:
    """``volume`` with every axis of one voxel repeated to two, half a voxel either side of it: a ray caster sees a
    box of one voxel's thickness (a single slice, a line) where the box through the voxel centres was flat and drew
    nothing."""
    thin = [axis for axis in range(3) if volume.geometry.dimensions[axis] == 1]  # IJK axes
    if not thin:
        return volume
    array = np.asarray(volume.array)
    for axis in thin:
        array = np.repeat(array, 2, axis=2 - axis)
    shift = np.zeros(3)
    shift[thin] = -0.5
    geometry = volume.geometry
    dimensions = tuple(2 if axis in thin else n for axis, n in enumerate(geometry.dimensions))
    return Volume(array, Geometry(dimensions, geometry.spacing, tuple(geometry.physical_point(shift)),
                                  geometry.direction))
