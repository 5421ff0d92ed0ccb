"""Previews: a volume rendering and three orthogonal mid-slices of a volume in one PNG, and side-by-side
comparisons (before / after) labelled with each volume's name, dimensions, spacing and size.

The pieces, one job each: :mod:`.transfer` (the histogram transfer function), :mod:`.volumes` (the small volume
drawn), :mod:`.offscreen` (render windows, camera, renderers), :mod:`.slices` (mid-slices), :mod:`.compare` (drawing
compared volumes alike), :mod:`.compose` (text, canvas, PNG). This module puts them together."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import BigVolumeError, naming
from ..core.memory import memory_bytes
from ..core.volume import Volume
from .compare import Display, changed_voxels, compare_display
from .compose import CANVAS, check_png_path, paste, text_image, write_png
from .offscreen import Camera, render_volume
from .slices import mid_slices
from .transfer import WINDOW_PERCENTILES, TransferFunction, transfer_function
from .volumes import DEFAULT_SIZE, PreviewSource, load_preview_source


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
    if transfer.labels:
        caption = (f"slices and rendering: a colour per label ({len(transfer.labels)} labels, "
                   f"{transfer.labels[0]:g} .. {transfer.labels[-1]:g})")
    elif display.caption:
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
    paste(canvas, title, 8, 8)
    paste(canvas, label, 8 + title.shape[0] + 4, 8)
    paste(canvas, render, header, 0)
    paste(canvas, caption, header + body + 6, 8)
    for index, (name, image) in enumerate(mid_slices(source.volume, transfer.window, tile, source.geometry,
                                                     display.marked, transfer.labels)):
        top = header + index * tile
        paste(canvas, image, top + (tile - image.shape[0]) // 2, width + 8 + (tile - image.shape[1]) // 2)
        name = text_image(name, 11, (1.0, 0.85, 0.3))
        backing = np.zeros(name.shape[:2] + (4,), np.uint8)  # a dark band keeps the name legible on any slice
        backing[...] = CANVAS + (190,)
        paste(canvas, backing, top, width + 8)
        paste(canvas, name, top, width + 8)
    return Panel(canvas, (header, 0, height, width), (header, width + 8, 3 * tile, tile))


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


def _naming(source):
    """Errors about a volume's values (no finite value to draw) name its file; a Volume has none to name."""
    return naming(source) if isinstance(source, (str, os.PathLike)) else contextlib.nullcontext()


def thin_note(source: PreviewSource) -> str:
    """A line for the picture's foot when ``source`` is one voxel thick along an axis (a single slice, a line): its
    rendering is a slab of one voxel's thickness."""
    thin = [axis for axis, n in zip("IJK", source.volume.geometry.dimensions) if n == 1]
    if not thin:
        return ""
    return (f"{source.name}: one voxel along {' and '.join(thin)}: rendered as a slab one voxel thick "
            "(see the slices)")


def constant_note(source: PreviewSource) -> str:
    """A line (picture foot and log) when every finite voxel of ``source`` has one value: nothing to render, one
    gray in the slices; the window shown is only a placeholder around that value."""
    array = np.asarray(source.volume.array)
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    if finite.size == 0 or finite.min() != finite.max():
        return ""
    return (f"{source.name}: every voxel{' that is finite' if finite.size < array.size else ''} has the value "
            f"{finite.flat[0]:g} (a constant volume): nothing to render, the slices one gray")


MAX_PICTURE_SIDE = 8192  # pixels of one rendering's side: 100000 x 100000 made VTK abort the process (bad_alloc)


def check_picture_size(size) -> tuple[int, int]:
    """``size`` as (width, height) in pixels, each 16 .. MAX_PICTURE_SIDE; BigVolumeError otherwise."""
    try:
        width, height = (int(value) for value in size)
    except (TypeError, ValueError):
        raise BigVolumeError(f"size must be (width, height) in pixels, got {size!r}") from None
    if not (16 <= width <= MAX_PICTURE_SIDE and 16 <= height <= MAX_PICTURE_SIDE):
        raise BigVolumeError(f"size must be 16 to {MAX_PICTURE_SIDE} pixels a side, got {width}x{height}")
    return width, height


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
    size = check_picture_size(size)
    if memory_limit is not None:
        memory_limit = memory_bytes(memory_limit)  # refused when not positive (0 was taken)
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
    with _naming(sources[0]):
        transfer = transfer_function(loaded[0].volume)
    displays = [Display(transfer, f"its own ({WINDOW_PERCENTILES[0]:g}-{WINDOW_PERCENTILES[1]:g} percentiles)")]
    for item, other, mapping in zip(sources[1:], loaded[1:], intensity_maps):
        with _naming(item):
            displays.append(compare_display(loaded[0], transfer, other, mapping))
    for other, display in zip(loaded[1:], displays[1:]):
        if display.how == "same":  # drawn alike: what differs is the data; show where it changed
            displays[0].marked = changed_voxels(loaded[0], other)
            if displays[0].marked is not None:
                displays[0].marked_by = other.name
                break
    panels = [preview_panel(item, display, size, engine, camera) for item, display in zip(loaded, displays)]
    constant = [line for line in map(constant_note, loaded) if line]
    for line in constant:
        logging.getLogger("bigvolume").warning(line)
    placed = []
    note = f"rendering: {transfer.kind} transfer function of {loaded[0].name} ({transfer.reason})"
    note = "\n".join([note] + [display.rendering_note(other.name)
                                for other, display in zip(loaded[1:], displays[1:])]
                      + [line for line in map(thin_note, loaded) if line] + constant)
    note = text_image(note, 12, (0.7, 0.7, 0.7))
    gap = 16
    height = max(panel.image.shape[0] for panel in panels) + note.shape[0] + 12
    width = max(sum(panel.image.shape[1] for panel in panels) + gap * (len(panels) - 1), note.shape[1] + 16)
    picture = np.empty((height, width, 3), np.uint8)
    picture[...] = CANVAS
    left = 0
    for panel in panels:
        paste(picture, panel.image, 0, left)
        placed.append(panel.moved(left))
        left += panel.image.shape[1] + gap
    paste(picture, note, height - note.shape[0] - 6, 8)
    write_png(picture, output_png)
    return PreviewReport(output_png, transfer, loaded, (width, height), displays, placed)
