"""Composing a picture: text drawn by VTK's FreeType renderer, images pasted on a canvas, and the PNG written
whole or not at all."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkRenderingCore import vtkTextProperty, vtkTextRenderer
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (the text renderer's implementation)

from ..core.errors import BigVolumeError
from ..io import files as io

CANVAS = (26, 26, 36)          # the picture's background (RGB 0..255)
TEXT = (0.92, 0.92, 0.92)


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


def paste(canvas: np.ndarray, image: np.ndarray, top: int, left: int) -> None:
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


def check_png_path(path, inputs=()) -> Path:
    """Refuse, before any work, a picture path that is not a .png in a writable folder or that names an input."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise BigVolumeError(f"{path}: a preview is a PNG picture; give a name ending in .png")
    if path.is_dir():
        raise BigVolumeError(f"{path}: is a folder; give the picture's file name (ending in .png)")
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
