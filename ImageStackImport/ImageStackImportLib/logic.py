"""MRML side of image stack import: plan from the slice headers (what the panel shows before anything is read),
then stream the slices through ``bigvolume``'s anti-aliased resampler straight into a volume node's own voxel
memory (no second full copy), with an optional crop from a Markups ROI, rotated ones included.

Memory: the node's vtkImageData is allocated once with the output's dimensions, type and components, and the
streamed output slices are written into a numpy view of it (``bigvolume.engine.stream.ArraySink``). A rotated ROI
needs one more buffer: its axis-aligned bounding box is imported first, then resampled into the ROI's frame by
vtkImageReslice, whose output becomes the node's image data without a copy.

No Qt here: this file runs inside Slicer (module widget, Python console) and outside it on a plain MRML scene from
the ``slicer-core`` package (tests, batch scripts).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

from slicer.util import arrayFromVolume, arrayFromVolumeModified, vtkMatrixFromArray

from bigvolume import (BigVolumeError, Cancelled, DEFAULT_METHOD, Geometry, import_stack, METHODS as ALL_METHODS,
                       plan_stack_import, Progress)
from bigvolume.slicer import (ArraySink, default_memory_limit, DEFAULT_STACK_ORIENTATION, factors_for_size,
                              format_bytes, IMAGE_SUFFIXES, LPS_TO_RAS, physical_memory, Roi, stack_direction,
                              STACK_ORIENTATIONS, stack_origin, StackImport, StackInfo, STREAMABLE_METHODS,
                              validate_factors, vtk_image_to_array)
from bigvolume.slicer.core_notes import core_notes
from bigvolume.slicer.preview_nodes import show_preview
from bigvolume.slicer.volume_nodes import (check_storable_dtype, dimensions_text, label_safe_method, numbers_text,
                                           remove_node_and_display, roi_box, roi_corners_lps)

# Choices of the panel's combo boxes: value given to the Logic -> label shown.
GRAY_CHOICES = {
    "luminance": "Luminance (Rec. 709)",
    "channel:0": "Channel 0 (red)",
    "channel:1": "Channel 1 (green)",
    "channel:2": "Channel 2 (blue)",
    "keep": "Keep RGB (vector volume)",
}
BITS_CHOICES = {"keep": "Keep", "8": "8 bits (robust window)", "16": "16 bits (robust window)"}
# The core's methods that downsample slices as they are read (fft needs the whole volume): name -> what it does.
METHODS = {name: text for name, text in ALL_METHODS.items() if name in STREAMABLE_METHODS}
# The low-resolution preview: at most this many bytes, box-averaged (the cheapest anti-aliased method: a preview
# only has to show where things are, to place a ROI for the full-resolution import).
PREVIEW_BUDGET_BYTES = 64 * 2**20
PREVIEW_METHOD = "mean"
# A rotated ROI is resampled with a Lanczos-windowed sinc of this half width (output voxels); the box read around
# it gets this margin so that the kernel has real voxels near the ROI's faces.
ROI_INTERPOLATION_MARGIN = 3
# Cosines closer than this to 0 or 1 count as parallel/perpendicular: the ROI is axis-aligned with the stack.
AXIS_TOLERANCE = 1e-6
SCALAR_CLASS = "vtkMRMLScalarVolumeNode"
VECTOR_CLASS = "vtkMRMLVectorVolumeNode"


@dataclass(frozen=True)
class RoiFrame:
    """The output grid of a rotated ROI: voxel axes along the ROI's axes (each ROI axis matched to the stack axis
    it is closest to, sign included, so a slightly rotated ROI looks like an unrotated import), the spacing of the
    imported output along the matched stack axis, and the grid centred on the ROI."""

    ijkToRas: np.ndarray
    dimensions: tuple

    @property
    def geometry(self) -> Geometry:
        return Geometry.from_ijk_to_ras(self.ijkToRas, self.dimensions)


@dataclass
class ImportPlan:
    """An import planned from the slice headers; nothing decoded yet. ``stack`` is the core plan
    (bigvolume.ops.stack_import.StackImport); it holds decoder threads: ``close()`` it (or use ``with``) when done."""

    stack: StackImport
    source: object
    settings: dict                      # what it was planned with: spacing (resolved), factor, roi (indices), ...
    fullGeometry: Geometry              # the whole stack at full resolution (LPS), where ROIs are converted
    frame: RoiFrame | None = None       # a rotated ROI: the output grid in the ROI's frame
    roiNotes: list = field(default_factory=list)
    description: str = ""

    # --- what the headers say ---------------------------------------------------------------------------------
    @property
    def info(self) -> StackInfo:
        return self.stack.info

    @property
    def spacing(self) -> tuple:
        """The spacing used (x, y, z in mm): the one given, else the headers' pixel size (z = x), else 1."""
        return self.stack.reader.geometry.spacing

    @property
    def headerSpacing(self) -> tuple | None:
        """The headers' pixel size with their slice spacing (ImageJ's) or z = x, or None when the headers carry none
        (the panel warns)."""
        pixel = self.info.pixel_spacing
        if pixel is None:
            return None
        between = self.info.slice_spacing if self.info.slice_spacing is not None else pixel[0]
        return float(pixel[0]), float(pixel[1]), float(between)

    @property
    def indexRoi(self) -> Roi:
        """The box of slice indices read (the bounding box, plus an interpolation margin, of a rotated ROI)."""
        return self.stack.reader.roi

    # --- what the import will produce ------------------------------------------------------------------------
    @property
    def components(self) -> int:
        return self.stack.reader.components

    @property
    def outputClassName(self) -> str:
        return VECTOR_CLASS if self.components > 1 else SCALAR_CLASS

    @property
    def outputGeometry(self) -> Geometry:
        return self.frame.geometry if self.frame is not None else self.stack.output_geometry

    @property
    def outputIjkToRas(self) -> np.ndarray:
        return self.frame.ijkToRas if self.frame is not None else self.stack.output_geometry.ijk_to_ras()

    @property
    def outputDimensions(self) -> tuple:
        return self.outputGeometry.dimensions

    @property
    def outputBytes(self) -> int:
        return self.outputGeometry.voxel_count * self.components * self.stack.out_dtype.itemsize

    @property
    def notes(self) -> list:
        return list(self.stack.notes) + list(self.roiNotes)

    def close(self) -> None:
        self.stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class ImportResult:
    """What one import did, for the panel's status line and for scripts."""

    outputNode: object
    source: object
    inputDimensions: tuple     # the box of the stack read, full resolution
    outputDimensions: tuple
    outputSpacing: tuple
    outputBytes: int
    seconds: float
    notes: list = field(default_factory=list)
    rotated: bool = False
    streamPlan: object = None  # how the slices were streamed (bigvolume StreamPlan)
    nhdrReport: object = None  # the NHDR also saved (bigvolume StackImportReport), if asked

    def summary(self) -> str:
        text = (f"{dimensions_text(self.inputDimensions)} -> {dimensions_text(self.outputDimensions)}, spacing "
                f"{numbers_text(self.outputSpacing)} mm, {format_bytes(self.outputBytes)}, {self.seconds:.2f} s")
        lines = [text]
        if self.rotated:
            lines.append("Resampled into the rotated ROI's frame (Lanczos).")
        if self.nhdrReport is not None:
            how = " (points into the slice files, no pixel copied)" if self.nhdrReport.zero_copy else ""
            lines.append(f"Saved {self.nhdrReport.output_path}{how}")
        return "\n".join(lines + list(self.notes))


class ImageStackImportLogic:
    """Import image stacks into volume nodes. Plain Python (no ScriptedLoadableModuleLogic base) so that it imports
    without Slicer's application; the module file mixes it with ScriptedLoadableModuleLogic."""

    def __init__(self):
        self.lastResult: ImportResult | None = None
        self._checked: set = set()  # sources whose every header was checked (see _checkKey)

    # --- the input ----------------------------------------------------------------------------------------------
    @staticmethod
    def resolveSource(file=None, folder=None, pattern=None):
        """The ``source`` for planImport from the panel's fields: a pattern (glob such as ``*.tif`` or printf such
        as ``rec_%04d.png``; relative ones are looked up in the folder, else in the file's folder) wins over a
        slice file (whose numbered siblings are the stack), which wins over a folder."""
        file, folder, pattern = (_pathText(value) for value in (file, folder, pattern))
        if pattern:
            path = Path(pattern).expanduser()
            if path.is_absolute():
                return str(path)
            base = folder or (str(Path(file).parent) if file else "")
            if not base:
                raise BigVolumeError(f"pattern {pattern}: choose the folder to look in (or a slice file)")
            return str(Path(base).expanduser() / path)
        if file:
            return Path(file).expanduser()
        if folder:
            return Path(folder).expanduser()
        raise BigVolumeError("choose a slice file or a folder of slices")

    @staticmethod
    def droppedSource(paths) -> tuple[str, str]:
        """(file, folder) for paths dropped on the panel: a folder, or an image file (an archetype: its numbered
        siblings are the stack). Raises BigVolumeError when nothing dropped is either."""
        for text in paths:
            path = Path(str(text))
            if path.is_dir():
                return "", str(path)
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                return str(path), ""
        raise BigVolumeError(f"drop a folder of slices or a slice file ({', '.join(IMAGE_SUFFIXES)})")

    @staticmethod
    def defaultNodeName(source) -> str:
        """The folder's name, or the slice file name without its numbers ("scan_0001.tif" -> "scan")."""
        if isinstance(source, ImportPlan):
            source = source.source
        if isinstance(source, (list, tuple)):
            source = source[0] if source else "stack"
        path = Path(str(source))
        if path.is_dir():
            return path.name or "stack"
        stem = path.name
        for suffix in IMAGE_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[:-len(suffix)]
                break
        stem = re.sub(r"%0?\d*d|[*?]|\[[^\]]*\]|\d+", "", stem).strip(" _-.")
        return stem or path.parent.name or "stack"

    @classmethod
    def defaultNhdrPath(cls, source) -> Path:
        """Where "also save as NHDR" writes when no path is given: "<name>.nhdr" beside the slices' folder (so the
        NHDR lists the slice files by relative paths, and adds no file among the slices)."""
        if isinstance(source, ImportPlan):
            source = source.source
        first = source[0] if isinstance(source, (list, tuple)) and source else source
        path = Path(str(first)).expanduser().absolute()
        folder = path if path.is_dir() else path.parent
        parent = folder.parent if folder.parent != folder else folder
        return parent / f"{cls.defaultNodeName(source)}.nhdr"

    @classmethod
    def nhdrPathFor(cls, text, source) -> Path:
        """The path typed in the panel, or the default one when it is empty."""
        text = _pathText(text)
        return Path(text).expanduser() if text else cls.defaultNhdrPath(source)

    # --- planning -----------------------------------------------------------------------------------------------
    def planImport(self, source, spacing=None, factor=1.0, roi=None, gray="luminance", bits=None, reverse=False,
                   method=DEFAULT_METHOD, threads=None, checkAll=None, origin=None, orientation=None) -> ImportPlan:
        """Plan an import from the slice headers alone (no pixel decoded) and describe it for the panel.

        source: a folder, a glob ("scans/*.tif"), a printf pattern ("scans/rec_%04d.png"), a list of files, or one
        slice file whose numbered siblings are the stack. spacing: (x, y, z) mm; None: the headers' pixel size with
        z = x, else 1 (the description says so). factor: one or three (x, y, z) downsampling factors >= 1.
        roi: None (whole stack), slice indices (x0, x1, y0, y1, z0, z1) half-open or a bigvolume Roi, or a
        vtkMRMLMarkupsROINode (see ``roiFromNode``). gray: "luminance", "channel:N" or "keep" (RGB kept as a vector
        volume). bits: None/"keep", 8 or 16 (robust intensity window). reverse: reverse the slice order.
        checkAll: check every slice header (None: the first time this source is planned, and when its folder
        changed since). orientation: a code of bigvolume.io.stacks.STACK_ORIENTATIONS (default LPS, the identity: the
        directions towards which columns, rows and slices increase) or a 3x3 direction matrix; origin: the LPS
        position (mm) of the centre of the stack's first pixel, default (0, 0, 0).

        Returns an ImportPlan (close it when done): ``.description`` is the paragraph the panel shows (dimensions,
        spacing, bytes, estimated peak memory, and warnings: no pixel size in the headers, gaps, skipped files,
        ROI clipped, too big for this computer)."""
        settings = {"spacing": _spacingOrNone(spacing), "factor": factor, "gray": _grayValue(gray),
                    "bits": _bitsValue(bits), "reverse": bool(reverse), "method": method, "threads": threads,
                    "origin": None if origin is None else tuple(float(v) for v in origin),
                    "orientation": orientation}
        key = _checkKey(source, settings["reverse"])
        if checkAll is None:
            checkAll = key is None or key not in self._checked
        core = dict(settings)
        isNode = roi is not None and hasattr(roi, "GetObjectToWorldMatrix")
        with core_notes(quiet=True):  # (said in the description instead)
            stack = plan_stack_import(source, roi=None if isNode else _indexRoi(roi), check_all=checkAll, **core)
        if checkAll and key is not None:
            self._checked.add(key)
        fullGeometry = Geometry((stack.info.width, stack.info.height, stack.info.depth),
                                stack.reader.geometry.spacing, stack_origin(origin), stack_direction(orientation))
        core["spacing"] = stack.reader.geometry.spacing  # as resolved from the headers: the same for the ROI plan
        frame, roiNotes = None, []
        if isNode:
            try:
                index, rotation, roiNotes = self.roiFromNode(roi, fullGeometry, factor)
                if index != Roi.whole(stack.info):
                    wholeStack = stack
                    with core_notes(quiet=True):
                        stack = plan_stack_import(source, roi=index, check_all=False, **core)
                    stack.notes = list(wholeStack.notes)  # gaps, skipped files, where the spacing came from
                    wholeStack.close()
                if rotation is not None:
                    frame = _roiFrame(*rotation, fullGeometry, stack.output_geometry.spacing)
            except BaseException:
                stack.close()
                raise
        settings.update(spacing=tuple(core["spacing"]), roi=_roiTuple(stack.reader.roi))
        plan = ImportPlan(stack, source, settings, fullGeometry, frame, roiNotes)
        plan.description = self._describe(plan)
        return plan

    def describeImport(self, source, **planArguments) -> str:
        """planImport's description alone (the plan is closed)."""
        with self.planImport(source, **planArguments) as plan:
            return plan.description

    @staticmethod
    def _describe(plan: ImportPlan) -> str:
        stack = plan.stack
        lines = [stack.describe(with_notes=False)]
        roi, info = plan.indexRoi, plan.info
        if roi != Roi.whole(info):
            lines.append(f"reads columns {roi.x0}-{roi.x1 - 1}, rows {roi.y0}-{roi.y1 - 1}, slices {roi.z0}-"
                         f"{roi.z1 - 1} of the {info.width}x{info.height}x{info.depth} stack")
        if plan.frame is not None:
            boxBytes = stack.output_bytes
            peak = boxBytes + plan.outputBytes + stack.estimated_working_bytes(default_memory_limit())
            lines.append(f"rotated ROI: that box is resampled (Lanczos) into the ROI's frame: output "
                         f"{dimensions_text(plan.outputDimensions)}, spacing {numbers_text(plan.outputGeometry.spacing)}, "
                         f"{format_bytes(plan.outputBytes)}; peak memory about {format_bytes(peak)}")
            total = physical_memory()
            if total and boxBytes + plan.outputBytes > 0.8 * total:
                lines.append(f"warning: the box and the output ({format_bytes(boxBytes + plan.outputBytes)}) will "
                             f"not fit in this machine's memory ({format_bytes(total)}): downsample more")
        if plan.headerSpacing is None and not any("no pixel size" in note for note in stack.notes):
            lines.append("warning: the slice headers carry no pixel size: check the spacing")
        return "\n".join(lines + plan.notes)

    # --- ROI from a Markups ROI node ----------------------------------------------------------------------------
    @staticmethod
    def roiCornersRas(roiNode) -> np.ndarray:
        """The 8 corners (rows, RAS) of a Markups ROI, rotated and under a linear transform included."""
        return roi_corners_lps(roiNode) @ LPS_TO_RAS.T

    @staticmethod
    def roiFromNode(roiNode, fullGeometry: Geometry, factor=1.0):
        """(index Roi, rotation or None, notes) for reading a Markups ROI out of the stack whose full-resolution grid
        is ``fullGeometry``: the ROI's corners go RAS -> LPS -> stack IJK; the voxels whose centres lie inside their
        axis-aligned bounding box are read (clamped to the stack). An axis-aligned ROI whose faces lie between the
        voxel centres of slices x0-1 and x0 ... x1-1 and x1 reads exactly x0..x1 (half-open).

        A rotated ROI (its axes not parallel to the stack's) also returns ``rotation`` = (ObjectToWorld, size): the
        box then gets a margin of ROI_INTERPOLATION_MARGIN output voxels for the interpolation into its frame."""
        objectToWorld, size = roi_box(roiNode)  # (refuses an unplaced or inside-out ROI)
        name = roiNode.GetName()
        rotated = not _isAxisAligned(objectToWorld, fullGeometry)
        margin = np.zeros(3, int)
        if rotated:
            factors = np.asarray(validate_factors(factor))
            margin = np.ceil(ROI_INTERPOLATION_MARGIN * factors).astype(int) + 1
        index, clipped = _indexBox(roi_corners_lps(roiNode) @ LPS_TO_RAS.T, fullGeometry, margin, name)
        notes = []
        if clipped:
            notes.append(f"ROI {name} extends beyond the stack: "
                         + ("the part outside is filled with 0" if rotated else "clipped to the stack"))
        return index, ((objectToWorld, size) if rotated else None), notes

    @staticmethod
    def initializeRoi(roiNode, plan: ImportPlan) -> None:
        """Make ``roiNode`` an unrotated box around the whole stack (a starting point to shrink)."""
        geometry = plan.fullGeometry
        ijkToRas = geometry.ijk_to_ras()
        low = ijkToRas[:3, :3] @ np.full(3, -0.5) + ijkToRas[:3, 3]
        high = ijkToRas[:3, :3] @ (np.asarray(geometry.dimensions) - 0.5) + ijkToRas[:3, 3]
        wasModifying = roiNode.StartModify()
        try:
            roiNode.SetAndObserveObjectToNodeMatrix(vtk.vtkMatrix4x4())
            roiNode.SetCenter(*((low + high) / 2))
            roiNode.SetSize(*np.abs(high - low))
        finally:
            roiNode.EndModify(wasModifying)

    # --- preview ------------------------------------------------------------------------------------------------
    @staticmethod
    def previewFactor(planOrInfo, budgetBytes=PREVIEW_BUDGET_BYTES) -> float:
        """The smallest uniform factor (rounded up to 0.01) whose output of the whole stack (ROI ignored) fits in
        ``budgetBytes``; 1 when the stack already does. Takes an ImportPlan, a bigvolume StackImport or StackInfo
        (for StackInfo the slices' own type and components are counted)."""
        if isinstance(planOrInfo, ImportPlan):
            planOrInfo = planOrInfo.stack
        if isinstance(planOrInfo, StackImport):
            info = planOrInfo.info
            bytesPerVoxel = planOrInfo.reader.components * planOrInfo.out_dtype.itemsize
        elif isinstance(planOrInfo, StackInfo):
            info = planOrInfo
            bytesPerVoxel = info.components * np.dtype(info.dtype).itemsize
        else:
            raise TypeError(f"previewFactor takes an ImportPlan, StackImport or StackInfo, not {type(planOrInfo)}")
        try:
            factor = factors_for_size(Geometry((info.width, info.height, info.depth)), bytesPerVoxel,
                                      float(budgetBytes))[0]
        except ValueError as error:
            raise BigVolumeError(f"preview: {error}") from None
        return max(1.0, math.ceil(factor * 100 - 1e-9) / 100)

    def importPreview(self, source, outputVolumeNode=None, *, scene=None, budgetBytes=PREVIEW_BUDGET_BYTES,
                      progress=None, name=None, spacing=None, gray="luminance", bits=None, reverse=False,
                      threads=None, origin=None, orientation=None):
        """A quick low-resolution load of the whole stack (at most ``budgetBytes``, box-averaged), in the same
        physical space as the full-resolution import: place a ROI on it, then importToNode with that ROI."""
        arguments = {"spacing": spacing, "gray": gray, "bits": bits, "reverse": reverse, "threads": threads,
                     "method": PREVIEW_METHOD, "origin": origin, "orientation": orientation}
        with self.planImport(source, **arguments) as plan:
            factor = self.previewFactor(plan, budgetBytes)
            name = name or f"{self.defaultNodeName(source)} preview"
        return self.importToNode(source, outputVolumeNode, scene=scene, progress=progress, name=name, factor=factor,
                                 **arguments)

    # --- the work -----------------------------------------------------------------------------------------------
    def importToNode(self, source, outputVolumeNode=None, *, scene=None, progress=None, name=None, nhdrPath=None,
                     memoryLimit=None, **planArguments):
        """Import the stack into a volume node and return the node.

        source: an ImportPlan from planImport (used as is and left open), or what planImport takes, with its
        settings as keyword arguments (spacing, factor, roi, gray, bits, reverse, method, threads).
        outputVolumeNode None: a new vtkMRMLScalarVolumeNode (vtkMRMLVectorVolumeNode when RGB is kept), named
        ``name`` (default: the stack's name), is added to ``scene``. The node gets the output's IJKToRAS (the
        stack's LPS grid in RAS, or the rotated ROI's frame) and no parent transform.

        The voxels are streamed into the node's own memory (no second full copy). nhdrPath: also write the
        full-resolution streamable NHDR there (``saveNhdr``). progress: ``callback(fraction, message)``; returning
        False cancels: bigvolume.Cancelled is raised, a node created here is removed, a given node is left as it
        was and no NHDR is left behind. Details of the run are in ``self.lastResult``."""
        started = time.perf_counter()
        self.lastResult = None
        ownPlan = not isinstance(source, ImportPlan)
        if not ownPlan and planArguments:
            raise TypeError(f"settings are taken from the plan; got {', '.join(planArguments)} as well")
        plan = self.planImport(source, **planArguments) if ownPlan else source
        try:
            return self._importPlan(plan, outputVolumeNode, scene, progress, name, nhdrPath, memoryLimit, started)
        finally:
            if ownPlan:
                plan.close()

    def _importPlan(self, plan: ImportPlan, outputVolumeNode, scene, progress, name, nhdrPath, memoryLimit,
                    started):
        stack = plan.stack
        check_storable_dtype(stack.out_dtype)
        self._checkOutputNode(outputVolumeNode, plan)
        if outputVolumeNode is None and scene is None:
            raise BigVolumeError("give a scene or an output volume node to import into")
        scene = outputVolumeNode.GetScene() if outputVolumeNode is not None else scene
        if nhdrPath is not None:
            nhdrPath = Path(nhdrPath)
            _checkNhdrPath(nhdrPath)
        for note in plan.notes:
            logging.info(note)

        steps = _Spans(progress, [1.0, 0.25 if plan.frame is not None else 0.0, 1.0 if nhdrPath else 0.0])
        created = outputVolumeNode is None
        node = outputVolumeNode
        previous = None
        if not created:
            matrix = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(matrix)
            previous = (node.GetImageData(), matrix, node.GetTransformNodeID())
        nhdrReport = None
        try:
            if created:
                node = scene.AddNewNodeByClass(plan.outputClassName,
                                               scene.GenerateUniqueName(name or self.defaultNodeName(plan.source)))
            image = _allocateImage(stack.output_geometry.dimensions, stack.out_dtype, plan.components)
            if not created and node.GetDisplayNode() is not None:
                image.GetPointData().GetScalars().Fill(0)  # shown while it fills: no uninitialized memory
            if plan.frame is None:
                node.SetAndObserveImageData(image)
                target = arrayFromVolume(node)  # the node's own voxels: the sink writes into them
            else:
                target = vtk_image_to_array(image)     # the bounding box, resampled into the ROI's frame below
            sink = ArraySink(target)
            streamPlan = stack.run(sink, memory_limit=memoryLimit, threads=plan.settings.get("threads"),
                                   progress=steps[0])
            if sink.filled != target.shape[0]:
                raise RuntimeError(f"the import produced {sink.filled} of {target.shape[0]} slices")
            del target, sink
            if plan.frame is not None:
                image = _resliceIntoFrame(image, stack.output_geometry, plan.frame, steps[1],
                                          plan.settings.get("threads"))
                node.SetAndObserveImageData(image)
            node.SetIJKToRASMatrix(vtkMatrixFromArray(plan.outputIjkToRas))
            node.SetAndObserveTransformNodeID(None)
            if nhdrPath is not None:
                nhdrReport = self.saveNhdr(plan, nhdrPath, memoryLimit=memoryLimit, progress=steps[2])
            steps.finishing()  # a last chance to cancel
        except BaseException:
            if created and node is not None:
                remove_node_and_display(node)
            elif previous is not None:
                node.SetAndObserveImageData(previous[0])
                node.SetIJKToRASMatrix(previous[1])
                node.SetAndObserveTransformNodeID(previous[2])
            if nhdrReport is not None:
                _removeNhdr(nhdrReport)
            raise
        arrayFromVolumeModified(node)
        if node.GetScene() is not None and node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()

        notes = plan.notes  # after the run: with the core's NaN note, as the command line says it
        window = stack.window_note(streamPlan)
        if window is not None:
            notes.append(f"Reduced to {window}")
        if nhdrReport is not None and not nhdrReport.zero_copy:
            notes.append("The NHDR has its own raw copy of the slices (they are compressed, cropped, converted "
                         "or not TIFF).")
        self.lastResult = ImportResult(
            node, plan.source, stack.reader.geometry.dimensions, plan.outputDimensions,
            plan.outputGeometry.spacing, plan.outputBytes, time.perf_counter() - started, notes,
            rotated=plan.frame is not None, streamPlan=streamPlan, nhdrReport=nhdrReport)
        if progress is not None:
            progress(1.0, "done")  # what it returns no longer matters: the output is complete
        return node

    @staticmethod
    def _checkOutputNode(outputVolumeNode, plan: ImportPlan) -> None:
        if outputVolumeNode is None:
            return
        className = outputVolumeNode.GetClassName()
        wanted = (VECTOR_CLASS,) if plan.components > 1 else (SCALAR_CLASS, "vtkMRMLLabelMapVolumeNode")
        if className not in wanted:
            kind = f"a vector volume ({plan.components} components)" if plan.components > 1 else "a scalar volume"
            raise BigVolumeError(f"output {outputVolumeNode.GetName()} is a {className}, but this import makes {kind}:"
                                 " choose another output, or none to create one")
        resampled = any(f != 1 for f in plan.stack.factors)
        if resampled and label_safe_method(outputVolumeNode, plan.stack.method)[0] != plan.stack.method:
            raise BigVolumeError(f"output {outputVolumeNode.GetName()} is a label map, but {plan.stack.method} would "
                                 "invent labels as it downsamples: import with method nearest or max, or into a "
                                 "scalar volume")

    # --- 3D preview ----------------------------------------------------------------------------------------------
    @staticmethod
    def showPreview(volumeNode, renderingLogic=None):
        """Volume rendering of an imported volume with a transfer function from its histogram; returns the display
        node (bigvolume.slicer.preview_nodes). renderingLogic: Slicer's volume rendering logic (the user's default rendering
        method); None: GPU ray casting."""
        return show_preview(volumeNode, rendering_logic=renderingLogic)

    # --- NHDR ---------------------------------------------------------------------------------------------------
    def saveNhdr(self, source, path, spacing=None, roi=None, gray="luminance", reverse=False, threads=None,
                 memoryLimit=None, progress=None, origin=None, orientation=None):
        """Write the full-resolution streamable NHDR of the stack (bigvolume.ops.stack_import.import_stack with
        nhdr_only): an NHDR listing the original slice files when they are uncompressed single-block TIFFs read
        whole without gray conversion (no pixel copied), otherwise one raw file written slice by slice.
        ``source`` may be an ImportPlan: its spacing, index ROI, gray and order are used. Returns the core's
        StackImportReport."""
        if isinstance(source, ImportPlan):
            settings = source.settings
            source, spacing, roi, gray, reverse = (source.source, settings["spacing"], settings["roi"],
                                                   settings["gray"], settings["reverse"])
            threads = threads or settings.get("threads")
            origin, orientation = settings.get("origin"), settings.get("orientation")
        elif roi is not None and hasattr(roi, "GetObjectToWorldMatrix"):
            with self.planImport(source, spacing=spacing, roi=roi, gray=gray, reverse=reverse, origin=origin,
                                 orientation=orientation) as plan:
                spacing, roi = plan.settings["spacing"], plan.settings["roi"]
        with core_notes(quiet=True):
            return import_stack(source, Path(path), spacing=spacing, roi=_indexRoi(roi), gray=_grayValue(gray),
                                reverse=bool(reverse), threads=threads, memory_limit=memoryLimit, nhdr_only=True,
                                origin=origin, orientation=orientation, progress=progress)


# --- progress -------------------------------------------------------------------------------------------------
class _Spans:
    """Sub-progress objects for consecutive steps in proportion to their weights, over 0..0.98 of ``callback``
    (the rest is ``finishing`` and the final 1.0)."""

    FINISHING = 0.98

    def __init__(self, callback, weights):
        self.progress = Progress(callback)
        total = sum(weights) or 1.0
        self.spans, start = [], 0.0
        for weight in weights:
            end = start + self.FINISHING * weight / total
            self.spans.append(self.progress.sub(start, end))
            start = end

    def __getitem__(self, index):
        return self.spans[index]

    def finishing(self):
        self.progress(self.FINISHING, "finishing")


# --- ROI geometry ---------------------------------------------------------------------------------------------
def _stackAxesRas(geometry: Geometry) -> np.ndarray:
    """Unit vectors (columns) of the stack's I, J, K axes in RAS."""
    return LPS_TO_RAS @ geometry.direction


def _unitColumns(matrix) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(matrix, axis=0)
    return matrix / norms, norms


def _isAxisAligned(objectToWorld, geometry: Geometry) -> bool:
    axes, _ = _unitColumns(objectToWorld[:3, :3])
    cosines = np.abs(_stackAxesRas(geometry).T @ axes)
    return bool(np.all(np.max(cosines, axis=0) > 1 - AXIS_TOLERANCE))


def _indexBox(cornersRas, geometry: Geometry, margin, name):
    """Voxels whose centres are inside the corners' bounding box in stack IJK (at least the nearest one), grown by
    ``margin``, clamped to the stack; and whether the box had to be clipped."""
    lps = cornersRas @ LPS_TO_RAS.T
    ijkToLps = geometry.ijk_to_lps()
    ijk = np.linalg.solve(ijkToLps[:3, :3], (lps - ijkToLps[:3, 3]).T).T
    low, high = ijk.min(axis=0), ijk.max(axis=0)
    start = np.ceil(low - 1e-6).astype(int)
    stop = np.floor(high + 1e-6).astype(int) + 1
    empty = stop <= start
    start[empty] = np.floor((low[empty] + high[empty]) / 2 + 0.5).astype(int)
    stop[empty] = start[empty] + 1
    dims = np.asarray(geometry.dimensions)
    if np.any(stop <= 0) or np.any(start >= dims):
        raise BigVolumeError(f"ROI {name} is outside the stack")
    clipped = bool(np.any(start < 0) or np.any(stop > dims))
    start, stop = np.maximum(start - margin, 0), np.minimum(stop + margin, dims)
    return Roi(int(start[0]), int(stop[0]), int(start[1]), int(stop[1]), int(start[2]), int(stop[2])), clipped


def _roiFrame(objectToWorld, size, fullGeometry: Geometry, outputSpacing) -> RoiFrame:
    """The output grid in a rotated ROI's frame (see RoiFrame); spacing per stack axis."""
    roiAxes, norms = _unitColumns(objectToWorld[:3, :3])
    lengths = np.asarray(size) * norms  # world lengths of the ROI's edges
    cosines = _stackAxesRas(fullGeometry).T @ roiAxes  # [stack axis, ROI axis]
    order = max(itertools.permutations(range(3)), key=lambda p: sum(abs(cosines[d, p[d]]) for d in range(3)))
    directions = np.empty((3, 3))
    dimensions = []
    for d, a in enumerate(order):
        directions[:, d] = math.copysign(1.0, cosines[d, a]) * roiAxes[:, a]
        dimensions.append(max(1, int(math.floor(lengths[a] / outputSpacing[d] + 0.5 + 1e-9))))
    spacing = np.asarray(outputSpacing, float)
    ijkToRas = np.eye(4)
    ijkToRas[:3, :3] = directions * spacing
    ijkToRas[:3, 3] = objectToWorld[:3, 3] - ijkToRas[:3, :3] @ ((np.asarray(dimensions) - 1) / 2.0)
    return RoiFrame(ijkToRas, tuple(dimensions))


def _resliceIntoFrame(image, boxGeometry: Geometry, frame: RoiFrame, progress: Progress, threads=None):
    """Resample ``image`` (the imported bounding box, on ``boxGeometry``) onto the ROI frame's grid.

    Lanczos (a 3-lobe windowed sinc) rather than linear: the box was just downsampled without aliasing to exactly
    the output spacing, so it holds detail up to that grid's Nyquist limit; linear interpolation would blur every
    output voxel that falls between input voxels (a triangle kernel, up to one voxel wide), Lanczos keeps it. The
    overshoot at sharp edges is clamped to the voxel type's range by vtkImageReslice. Outside the stack: 0."""
    reslice = vtk.vtkImageReslice()
    reslice.SetInputData(image)
    interpolator = vtk.vtkImageSincInterpolator()
    interpolator.SetWindowFunctionToLanczos()
    interpolator.SetWindowHalfWidth(ROI_INTERPOLATION_MARGIN)
    reslice.SetInterpolator(interpolator)
    reslice.SetResliceAxes(vtkMatrixFromArray(np.linalg.inv(boxGeometry.ijk_to_ras()) @ frame.ijkToRas))
    reslice.SetOutputOrigin(0.0, 0.0, 0.0)
    reslice.SetOutputSpacing(1.0, 1.0, 1.0)
    ni, nj, nk = frame.dimensions
    reslice.SetOutputExtent(0, ni - 1, 0, nj - 1, 0, nk - 1)
    reslice.SetBackgroundLevel(0.0)
    if threads:
        reslice.SetNumberOfThreads(int(threads))
    cancelled = []

    def onProgress(caller, event):
        try:
            progress(caller.GetProgress(), "resampling into the ROI's frame")
        except Cancelled:
            cancelled.append(True)
            caller.SetAbortExecute(1)

    progress(0.0, "resampling into the ROI's frame")
    reslice.AddObserver(vtk.vtkCommand.ProgressEvent, onProgress)
    reslice.Update()
    if cancelled:
        raise Cancelled("cancelled during resampling into the ROI's frame")
    output = vtk.vtkImageData()
    output.ShallowCopy(reslice.GetOutput())  # the voxels are shared, not copied; the filter can go
    output.SetOrigin(0.0, 0.0, 0.0)
    output.SetSpacing(1.0, 1.0, 1.0)
    progress(1.0, "resampled into the ROI's frame")
    return output


# --- images and nodes -----------------------------------------------------------------------------------------
def _allocateImage(dimensions, dtype, components) -> vtk.vtkImageData:
    image = vtk.vtkImageData()
    image.SetDimensions(*(int(d) for d in dimensions))
    image.AllocateScalars(numpy_support.get_vtk_array_type(np.dtype(dtype)), int(components))
    return image






def _checkNhdrPath(path: Path) -> None:
    if not path.name.lower().endswith(".nhdr"):
        raise BigVolumeError(f"{path}: the NHDR file name must end in .nhdr")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BigVolumeError(f"{path}: the folder {folder} does not exist")


def _removeNhdr(report) -> None:
    """Remove an NHDR written by a run that is then cancelled (and its raw file, not the slices it points into)."""
    path = Path(report.output_path)
    with contextlib.suppress(OSError):
        if not report.zero_copy:
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("data file:"):
                    data = path.parent / line.split(":", 1)[1].strip()
                    if data.is_file():
                        data.unlink()
        path.unlink()




# --- settings -------------------------------------------------------------------------------------------------
def _pathText(value) -> str:
    """'' for None, '' and '.' (what an empty path reads back as), else the stripped text."""
    text = "" if value is None else str(value).strip()
    return "" if text in ("", ".") else text


def _spacingOrNone(spacing):
    if spacing is None:
        return None
    values = tuple(float(s) for s in np.ravel(spacing))
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise BigVolumeError(f"spacing must be three positive numbers (x y z in mm), got {spacing}")
    return values


def _grayValue(gray) -> str:
    return "keep" if gray in (None, "", "keep") else str(gray)


def _bitsValue(bits):
    if bits in (None, "", "keep", 0, "0"):
        return None
    try:
        return int(bits)
    except (TypeError, ValueError):
        raise BigVolumeError(f"bits must be 'keep', 8 or 16, got {bits!r}") from None


def _indexRoi(roi):
    return None if roi is None else Roi.of(roi)


def _roiTuple(roi: Roi) -> tuple:
    return (roi.x0, roi.x1, roi.y0, roi.y1, roi.z0, roi.z1)


def _checkKey(source, reverse):
    """Identifies a source whose headers were all checked: the source, the order and its folder's modification
    time (adding, removing or renaming a slice changes it). None when the source cannot be identified."""
    try:
        if isinstance(source, (list, tuple)):
            folder = Path(str(source[0])).parent if source else Path(".")
            name = tuple(str(p) for p in source)
        else:
            path = Path(str(source))
            folder = path if path.is_dir() else path.parent
            name = str(source)
        return (name, reverse, str(folder.resolve()), folder.stat().st_mtime_ns)
    except (OSError, TypeError, ValueError):
        return None






__all__ = ["ImageStackImportLogic", "ImportPlan", "ImportResult", "RoiFrame", "GRAY_CHOICES", "BITS_CHOICES",
           "METHODS", "PREVIEW_BUDGET_BYTES", "PREVIEW_METHOD", "DEFAULT_METHOD", "ROI_INTERPOLATION_MARGIN",
           "BigVolumeError", "Cancelled"]
