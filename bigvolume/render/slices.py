"""The three orthogonal mid-slices of a preview, turned the way Slicer's slice views show them, through an
intensity window, with a region marked on them."""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..core.geometry import Geometry
from ..core.volume import Volume
from ..ops.precision import Window, apply_window
from ..ops.resample import DEFAULT_METHOD, downsample_array
from .transfer import LABEL_COLORS, float_shift, gray_voxels, label_places


# Slicer's slice views (patient right on screen left): the RAS directions of the screen's x (rightwards) and y (up).
SLICE_VIEWS = {2: ("axial", (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),     # keyed by the RAS axis of the plane's normal
               1: ("coronal", (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
               0: ("sagittal", (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))}


def _mid_planes(volume: Volume, tile: int, method: str = DEFAULT_METHOD) -> list[tuple[str, int, int, np.ndarray]]:
    """The three orthogonal mid-planes of the voxel grid (K, J, I) as float32 images turned the way Slicer's slice
    view of their orientation shows them, at one physical scale that fits the volume's largest extent in ``tile``
    pixels, reduced by ``method`` where larger: (view name, IJK axis of the plane's normal, index along it,
    image)."""
    array = gray_voxels(np.asarray(volume.array))
    geometry = volume.geometry
    directions = geometry.ijk_to_ras()[:3, :3] / np.asarray(geometry.spacing)  # unit RAS direction of I, J, K
    scale = tile / max(geometry.extent)  # pixels per mm
    # Each plane shown as the view (axial, coronal, sagittal) whose normal is nearest its own, one view each: on an
    # oblique grid two planes' nearest could be the same (two "sagittal" panels, no coronal)
    views = max(itertools.permutations(range(3)),
                key=lambda ras: sum(abs(directions[ras[n], fixed]) for n, fixed in enumerate((2, 1, 0))))
    result = []
    for fixed, view in zip((2, 1, 0), views):  # K, J, I
        index = geometry.dimensions[fixed] // 2
        plane = np.take(array, index, axis=2 - fixed)   # numpy axes are (k, j, i)
        rows, cols = [axis for axis in (2, 1, 0) if axis != fixed]  # IJK axes of the plane's rows and columns
        name, screen_x, screen_y = SLICE_VIEWS[view]
        if abs(directions[:, rows] @ screen_x) > abs(directions[:, cols] @ screen_x):
            plane, rows, cols = plane.T, cols, rows
        if directions[:, cols] @ screen_x < 0:
            plane = plane[:, ::-1]
        if directions[:, rows] @ screen_y > 0:  # image rows run down the screen
            plane = plane[::-1]
        target = (max(1, round(plane.shape[0] * geometry.spacing[rows] * scale)),
                  max(1, round(plane.shape[1] * geometry.spacing[cols] * scale)))
        plane = np.asarray(plane, np.float64 if array.dtype.itemsize == 8 else np.float32)  # float64: no inf
        factors = (max(1.0, plane.shape[1] / target[1]), max(1.0, plane.shape[0] / target[0]), 1.0)
        if factors != (1.0, 1.0, 1.0):
            # NaN and inf reach as far as the kernel: Lanczos's 8 lobes drew a 40 mm NaN block 43 px wide where a
            # finite one took 29 (10 mm of valid data hidden each side); a mean's reach is its block
            reduce = "mean" if method == DEFAULT_METHOD and not np.isfinite(plane).all() else method
            plane = np.asarray(downsample_array(np.ascontiguousarray(plane)[None], factors, reduce))[0]
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
    rgb = gray.copy() if gray.ndim == 3 else np.repeat(gray[..., None], 3, axis=2)  # (a label map's: RGB already)
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


def label_image(plane: np.ndarray, labels) -> np.ndarray:
    """An RGB image of a label map's plane: each label in its LABEL_COLORS by its place among ``labels``
    (:func:`label_places`), the background black."""
    palette = np.rint(255 * np.asarray(((0.0, 0.0, 0.0),) + LABEL_COLORS)).astype(np.uint8)
    places = label_places(plane, labels)
    return palette[np.where(places > 0, (places - 1) % len(LABEL_COLORS) + 1, 0)]


def mid_slices(volume: Volume, window: Window, tile: int, file_geometry: Geometry | None = None,
               marked: np.ndarray | None = None, labels=()) -> list[tuple[str, np.ndarray]]:
    """The three orthogonal mid-planes of the voxel grid (K, J, I) as uint8 images through ``window``, each turned
    the way Slicer's slice view of its orientation shows it (axial, coronal or sagittal by the plane's normal; patient
    right on screen left, anterior or superior up), all at one physical scale that fits the volume's largest extent in
    ``tile`` pixels. Planes larger than their tile are reduced by the default anti-aliased method, smaller ones are
    enlarged voxel by voxel (the voxel size stays visible). Each is named with its slice in ``file_geometry`` (the
    file's own grid; default: the volume's). ``marked``: a boolean array on the volume's grid whose region is tinted
    and outlined (:func:`mark_region`) on RGB images. ``labels`` (a label map's, see TransferFunction): each label
    in its colour instead of the window's grays, planes reduced by picking voxels (an average of two labels is a
    third)."""
    planes = _mid_planes(volume, tile, "nearest" if labels else DEFAULT_METHOD)
    shift = float_shift(max(abs(window.low), abs(window.high)))
    if shift:  # a window of subnormal (or huge) values: its map's scale would overflow; the same picture scaled
        planes = [plane[:3] + (np.ldexp(np.asarray(plane[3], np.float64), shift),) for plane in planes]
        window = Window(math.ldexp(window.low, shift), math.ldexp(window.high, shift))
    marks = (_mid_planes(Volume(np.asarray(marked, np.float32), volume.geometry), tile)
             if marked is not None else [None] * len(planes))
    result = []
    for (name, fixed, index, plane), mark in zip(planes, marks):
        image = label_image(plane, labels) if labels else apply_window(plane, window, np.uint8)[0]
        if mark is not None:
            image = mark_region(image, mark[3] >= 0.5)
        result.append((slice_label(name, fixed, index, volume.geometry, file_geometry), image))
    return result
