"""MRML side of OME-Zarr pyramids: "look at the whole, then cut the region" for data of any size. The finest level
that fits a memory budget goes into a volume node; then a Markups ROI placed on it is read at full resolution (or at
a chosen level): only the chunks it touches are read. And the other way: a pyramid made (``bigvolume.pyramid``) from a
volume file, an image stack, an OME-Zarr store or a loaded volume node.

The voxels are read slab by slab (a z band of stored chunks at a time, for progress and cancel) straight into the
node's own image memory: no second copy. Geometry: the level's LPS grid from the metadata (direction included)
becomes the node's IJKToRAS; a ROI gives the box of voxels whose cells it touches (a rotated ROI: the box around
it), with that box's grid.

No Qt here: this file runs inside Slicer (module widget, Python console) and outside it on a plain MRML scene from
the ``slicer-core`` package (tests, batch scripts).
"""
from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

from slicer.util import arrayFromVolume, arrayFromVolumeModified, vtkMatrixFromArray

import bigvolume
from bigvolume import DEFAULT_METHOD, BigVolumeError, Cancelled, Progress, open_pyramid
from bigvolume.slicer import (DEFAULT_CHUNKS, DEFAULT_OME_ZARR_VERSION, OME_ZARR_VERSIONS, STREAMABLE_METHODS,
                              ZarrSlabReader, choose_level, default_memory_limit, format_bytes, level_size_text)
from bigvolume.slicer.volume_nodes import (check_storable_dtype, dimensions_text, label_safe_method, numbers_text,
                                           remove_node_and_display, roi_corners_lps, volume_from_node)

FIT = "fit"  # the level choice "the finest level that fits the budget"
SCALAR_CLASS = "vtkMRMLScalarVolumeNode"
VECTOR_CLASS = "vtkMRMLVectorVolumeNode"
# What "Create pyramid" offers: the core's OME-Zarr versions and the methods that run block by block, the core's
# defaults first.
PYRAMID_VERSIONS = sorted(OME_ZARR_VERSIONS, key=lambda version: version != DEFAULT_OME_ZARR_VERSION)
PYRAMID_METHODS = sorted(STREAMABLE_METHODS, key=lambda method: method != DEFAULT_METHOD)
# Bytes read between two progress reports (and chances to cancel), rounded to whole z bands of stored chunks.
STEP_BYTES = 64 * 2**20


@dataclass
class LoadResult:
    """What one load did, for the panel's status line and for scripts."""

    outputNode: object
    path: str
    level: int
    box: tuple                 # ((k0, k1), (j0, j1), (i0, i1)) of the level read
    dimensions: tuple
    spacing: tuple
    bytes: int
    seconds: float
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        region = "" if self.box is None else " (ROI box)"
        lines = [f"level {self.level}{region}: {dimensions_text(self.dimensions)}, spacing "
                 f"{numbers_text(self.spacing)}, {format_bytes(self.bytes)}, {self.seconds:.2f} s"]
        return "\n".join(lines + list(self.notes))


class OMEZarrPyramidLogic:
    """Open OME-Zarr pyramids into volume nodes. Plain Python (no ScriptedLoadableModuleLogic base) so that it imports
    without Slicer's application; the module file mixes it with ScriptedLoadableModuleLogic."""

    def __init__(self):
        self.lastResult: LoadResult | None = None
        self.lastPyramid = None  # the report of the last createPyramid (bigvolume.PyramidReport)
        self._opened: dict = {}  # path -> (metadata time stamp, Pyramid): the panel asks on every change

    # --- the pyramid ----------------------------------------------------------------------------------------------
    def openPyramid(self, path):
        """The store's levels and their geometries (metadata only; cached while the store's metadata is unchanged).
        Raises BigVolumeError in one line for a path that is not a readable OME-Zarr store."""
        path = Path(str(path)).expanduser()
        stamp = tuple(f.stat().st_mtime_ns for f in (path / "zarr.json", path / ".zattrs", path / ".zarray")
                      if f.is_file())
        cached = self._opened.get(str(path))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        pyramid = open_pyramid(path)
        self._opened[str(path)] = (stamp, pyramid)
        return pyramid

    @staticmethod
    def budgetBytes(budgetGB: float = 0.0) -> int:
        """The memory budget: ``budgetGB`` GB, or (0) a quarter of this machine's memory."""
        return int(budgetGB * 1e9) if budgetGB > 0 else int(default_memory_limit())

    @staticmethod
    def chosenLevel(pyramid, budgetBytes: int, level=FIT) -> int:
        """``level`` (a number, or FIT: the finest level whose voxels fit ``budgetBytes``), checked against the
        pyramid and the budget."""
        if str(level) == FIT:
            return choose_level(pyramid.levels, budgetBytes)
        chosen = pyramid.level(int(level))
        if chosen.nbytes > budgetBytes:
            raise BigVolumeError(f"level {chosen.index} needs {format_bytes(chosen.nbytes)}, more than the budget of "
                                 f"{format_bytes(budgetBytes)}: raise the budget or choose a coarser level")
        return chosen.index

    @staticmethod
    def roiBox(pyramid, roiNode, level: int = 0) -> tuple:
        """The voxel box of ``level`` that a Markups ROI covers (the box around a rotated ROI)."""
        geometry = pyramid.level(int(level)).geometry
        try:
            return geometry.index_box(roi_corners_lps(roiNode))
        except ValueError:
            raise BigVolumeError(f"ROI {roiNode.GetName()} lies outside the pyramid") from None

    def describe(self, pyramid, budgetBytes: int, level=FIT, roiNode=None, roiLevel: int = 0) -> str:
        """What the panel shows: the levels with their sizes, the one Load would read, and what the ROI covers."""
        lines = [f"OME-Zarr {pyramid.version}, {len(pyramid.levels)} level{'s' * (len(pyramid.levels) != 1)}"
                 + (f", unit {pyramid.unit}" if pyramid.unit else "")]
        try:
            chosen = self.chosenLevel(pyramid, budgetBytes, level)
        except BigVolumeError as error:
            chosen, lines = None, lines + [f"Load level: {error}"]
        for item in pyramid.levels:
            mark = "  <- Load level" if item.index == chosen else ""
            lines.append(f"  {level_size_text(item)}, spacing {numbers_text(item.geometry.spacing)}{mark}")
        if pyramid.note:
            lines.append(pyramid.note)
        if roiNode is not None:
            try:
                box = self.roiBox(pyramid, roiNode, roiLevel)
                reading = pyramid.level(int(roiLevel))
                size = int(np.prod([b - a for a, b in box])) * reading.components * reading.dtype.itemsize
                dims = tuple(b - a for a, b in box)[::-1]
                over = " (more than the budget)" if size > budgetBytes else ""
                lines.append(f"ROI at level {reading.index}: {dimensions_text(dims)}, {format_bytes(size)}{over}")
            except (BigVolumeError, ValueError) as error:
                lines.append(f"ROI: {error}")
        return "\n".join(lines)

    # --- creating -------------------------------------------------------------------------------------------------
    def createPyramid(self, source, outputPath, levels: int | None = None, chunks: int = DEFAULT_CHUNKS,
                      method: str = DEFAULT_METHOD, omeZarrVersion: str = DEFAULT_OME_ZARR_VERSION,
                      memoryBudgetBytes: int | None = None, stackVoxelSize=None,
                      overwrite: bool = False, resume: bool = False, progress=None, tempFolder=None):
        """Write the multiscale OME-Zarr pyramid of ``source`` to ``outputPath`` with ``bigvolume.pyramid`` (Dask's
        local threads) and return its report (also in ``self.lastPyramid``).

        source: a volume file or DICOM series, an image stack (folder, glob or printf pattern), an OME-Zarr/Zarr store
        (all read slab by slab, never whole), or a scalar volume node of the scene (written first to a temporary
        NHDR in ``tempFolder``, default the system's, removed after; its grid is its IJKToRAS: a node under a
        transform is refused, harden the transform first). levels: levels in all (None or 0: until the coarsest
        fits one chunk). memoryBudgetBytes: what the run may hold (default a quarter of this computer's memory).
        stackVoxelSize: a stack's voxel size in micrometres, one number or (x, y, z); None or 0: the slices' own
        pixel size. The units written: a file's millimetres, a stack's micrometres, a store's own.

        Refused in one line, nothing touched: an existing output (unless ``overwrite``), an output inside the
        input, a disk too small. Cancel (``progress`` returning False) or an error removes the staging folder
        ``outputPath.partial``: no partial pyramid is left; ``resume`` continues one an earlier crash left (file,
        stack and store inputs)."""
        self.lastPyramid = None
        if not str(outputPath or ""):
            raise BigVolumeError("choose where to write the pyramid (a folder name such as scan.ome.zarr)")
        stack = {}
        if stackVoxelSize:
            size = tuple(float(v) for v in np.atleast_1d(stackVoxelSize))
            stack["spacing"] = size * 3 if len(size) == 1 else size
        options = dict(levels=int(levels) if levels else None, chunks=int(chunks), method=method,
                       ome_zarr_version=omeZarrVersion, overwrite=overwrite, resume=resume, progress=progress,
                       memory_limit=int(memoryBudgetBytes) if memoryBudgetBytes else None)
        if not hasattr(source, "GetImageData"):
            if not str(source or ""):
                raise BigVolumeError("choose the input: a volume file, an image stack's folder or an OME-Zarr store")
            self.lastPyramid = bigvolume.pyramid(str(source), str(outputPath), **options, **stack)
            return self.lastPyramid
        node = source
        if node.GetImageData() is None or node.GetImageData().GetPointData().GetScalars() is None:
            raise BigVolumeError(f"{node.GetName()}: the volume has no voxels")
        if node.GetTransformNodeID():
            raise BigVolumeError(f"{node.GetName()}: under a transform; harden it first (Data module) so that the "
                                 "pyramid's geometry is where the volume is shown")
        if stack:
            raise BigVolumeError("the stack voxel size is for image stacks; a volume node carries its own spacing")
        if resume:
            raise BigVolumeError(f"{node.GetName()}: a loaded volume is copied afresh for each run, so its pyramid "
                                 "cannot resume; start again with overwrite")
        options["method"], notes = label_safe_method(node, method)
        for note in notes:
            logging.info(note)
        with tempfile.TemporaryDirectory(prefix="OMEZarrPyramid-", dir=tempFolder) as folder:
            # A detached header, uncompressed: the pyramid streams it back. Named for the node (the pyramid's
            # metadata carries the name), in characters any file system takes.
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", node.GetName() or "").strip("._") or "volume"
            if re.fullmatch(r"(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", stem):
                stem += "_"  # a device name on Windows ("NUL.nhdr" is the null device), whatever its suffix
            copy = Path(folder) / f"{stem}.nhdr"
            bigvolume.write_volume(volume_from_node(node), copy, compress=False)
            try:
                self.lastPyramid = bigvolume.pyramid(str(copy), str(outputPath), **options)
            except BigVolumeError as error:  # about the temporary copy: say it of the node
                raise type(error)(str(error).replace(str(copy), node.GetName())) from None
        self.lastPyramid.notes[:0] = notes
        return self.lastPyramid

    # --- loading --------------------------------------------------------------------------------------------------
    def loadLevel(self, path, level=FIT, budgetBytes: int | None = None, outputNode=None, scene=None, name=None,
                  progress=None):
        """Load one level whole (FIT: the finest that fits ``budgetBytes``, default a quarter of this machine's
        memory) into ``outputNode`` or a new volume node of ``scene``. Returns the node."""
        pyramid = self.openPyramid(path)
        budget = self.budgetBytes() if budgetBytes is None else int(budgetBytes)
        chosen = self.chosenLevel(pyramid, budget, level)
        box = tuple((0, n) for n in pyramid.level(chosen).geometry.shape)
        return self._load(pyramid, chosen, box, None, outputNode, scene, name, progress)

    def loadRoi(self, path, roiNode, level: int = 0, budgetBytes: int | None = None, outputNode=None, name=None,
                progress=None):
        """Load the box of ``level`` (0: full resolution) that the Markups ROI ``roiNode`` covers, into
        ``outputNode`` or a new volume node of the ROI's scene. Refused when the box exceeds ``budgetBytes``."""
        pyramid = self.openPyramid(path)
        budget = self.budgetBytes() if budgetBytes is None else int(budgetBytes)
        reading = pyramid.level(int(level))
        box = self.roiBox(pyramid, roiNode, reading.index)
        size = int(np.prod([b - a for a, b in box])) * reading.components * reading.dtype.itemsize
        if size > budget:
            raise BigVolumeError(f"ROI {roiNode.GetName()} at level {reading.index} needs {format_bytes(size)}, more "
                                 f"than the budget of {format_bytes(budget)}: shrink it or choose a coarser level")
        return self._load(pyramid, reading.index, box, roiNode, outputNode, roiNode.GetScene(), name, progress)

    def _load(self, pyramid, level, box, roiNode, outputNode, scene, name, progress):
        started = time.perf_counter()
        reading = pyramid.level(level)
        check_storable_dtype(reading.dtype)
        className = VECTOR_CLASS if reading.components > 1 else SCALAR_CLASS
        if outputNode is not None and outputNode.GetClassName() != className:
            raise BigVolumeError(f"output {outputNode.GetName()} is a {outputNode.GetClassName()}; this level needs a "
                                 f"{className}: choose another output, or none to create one")
        if outputNode is None and scene is None:
            raise BigVolumeError("give a scene or an output volume node to load into")
        geometry = reading.geometry.cropped(box)
        steps = Progress(progress)
        created = outputNode is None
        node = outputNode
        previous = None if created else (node.GetImageData(), _ijkToRas(node), node.GetTransformNodeID())
        try:
            if created:
                base = name or f"{pyramid.store.name.split('.')[0] or 'pyramid'} level {level}"
                if roiNode is not None and not name:
                    base += f" {roiNode.GetName()}"
                node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(base))
            image = vtk.vtkImageData()
            image.SetDimensions(*geometry.dimensions)
            image.AllocateScalars(numpy_support.get_vtk_array_type(reading.dtype), reading.components)
            node.SetAndObserveImageData(image)
            target = arrayFromVolume(node)  # the node's own voxels: the slabs are read into them
            with ZarrSlabReader(pyramid, level) as reader:
                _readBox(reader, box, target, steps)
            del target
            node.SetIJKToRASMatrix(vtkMatrixFromArray(geometry.ijk_to_ras()))
            node.SetAndObserveTransformNodeID(None)  # the store's coordinates (a given node's transform moved it)
            steps(1.0, "loaded")  # a last chance to cancel
        except BaseException:
            if created and node is not None:
                remove_node_and_display(node)
            elif previous is not None:
                node.SetAndObserveImageData(previous[0])
                node.SetIJKToRASMatrix(previous[1])
                node.SetAndObserveTransformNodeID(previous[2])
            raise
        arrayFromVolumeModified(node)
        if node.GetScene() is not None and node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        notes = []
        if roiNode is None and str(level) != "0" and len(pyramid.levels) > 1:
            notes.append(f"Level {level} of {len(pyramid.levels)}: place a ROI and load it at full resolution.")
        if roiNode is not None:
            whole = reading.geometry.index_box(roi_corners_lps(roiNode), clip=False)
            if whole != tuple(box):
                notes.append(f"ROI {roiNode.GetName()} reaches beyond the volume: only the part inside was loaded "
                             f"({dimensions_text(geometry.dimensions)} voxels of level {level}).")
        if pyramid.note:
            notes.append(pyramid.note)
        self.lastResult = LoadResult(node, str(pyramid.store), level, None if roiNode is None else box,
                                     geometry.dimensions, geometry.spacing,
                                     geometry.voxel_count * reading.components * reading.dtype.itemsize,
                                     time.perf_counter() - started, notes)
        return node


def _readBox(reader, box, target: np.ndarray, progress: Progress) -> None:
    """Read ``box`` into ``target`` in whole z bands of chunks (each chunk decoded once), reporting progress (which
    raises Cancelled when the user cancels) after each."""
    (k0, k1), rows, columns = box
    band = reader.slab_alignment
    slice_bytes = max(1, target[0].nbytes)
    per_step = max(1, STEP_BYTES // (slice_bytes * band)) * band
    start = k0
    while start < k1:
        end = min(k1, (start // band) * band + per_step)
        reader.read_box(((start, end), rows, columns), target[start - k0:end - k0])
        progress((end - k0) / (k1 - k0) * 0.99, f"reading level {reader.level.index}")
        start = end


def _ijkToRas(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


__all__ = ["FIT", "PYRAMID_VERSIONS", "PYRAMID_METHODS", "LoadResult", "OMEZarrPyramidLogic", "BigVolumeError",
           "Cancelled"]
