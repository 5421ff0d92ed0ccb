"""MRML side of haze removal: read a scalar volume node's voxels without copying, let ``bigvolume.ops.haze`` find the
noisy air around the object and set it to one value (optionally reduce the precision after), and put the result in
an output volume node on the input's exact grid. ``previewMask`` shows the haze mask as a label map first.

No Qt here: this file runs inside Slicer (module Widget, Python console, ``Slicer --no-main-window``) and outside it
on a plain MRML scene from the ``slicer-core`` package (tests, batch scripts).
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass

import numpy as np

import bigvolume
from bigvolume import BigVolumeError, Cancelled, dehaze, haze_mask, HazeOptions, Progress, reduce_bits
from bigvolume.slicer import AUTO, DEFAULT_DILATE, format_bytes, LEVELS
from bigvolume.slicer.volume_nodes import (check_output_node, check_storable_dtype, fill_volume_node, given_or_new_node,
                                    volume_from_node)

# What each level means: auto (the default) classifies a denoised copy with a threshold above the noise of the air;
# 1-5 are MRIcroGL's table on the raw voxels: multi-level Otsu into that many classes, the darkest ones are air.
LEVEL_CHOICES = {AUTO: "Automatic: a denoised copy, the threshold above the noise of the air (CT, noisy backgrounds)"}
LEVEL_CHOICES.update({level: f"{classes} classes, the darkest {air} {'is' if air == 1 else 'are'} air"
                      for level, (classes, air) in sorted(LEVELS.items())})
AIR_CHOICES = {
    "border": "Dark voxels connected to the volume border (dark cavities inside the object stay)",
    "all": "Every dark voxel (also cavities, sinuses, air inside the object)",
}
FILL_CHOICES = {"minimum": "The image minimum", "value": "A given value"}
BITS_CHOICES = {"keep": "Keep the input type", "8": "8 bits (uint8, robust window)",
                "16": "16 bits (uint16, robust window)"}
MASK_LABEL = 1  # the haze mask label map: 1 = haze (set to the fill value), 0 = object
MASK_SUFFIX = " haze mask"  # a new mask is "<input> haze mask"


@dataclass
class HazeRemovalResult:
    """What one run did, for the result line of the panel and for scripts."""

    outputNode: object
    report: object            # bigvolume.ops.haze.DehazeReport
    reduceReport: object      # bigvolume.ops.precision.ReduceReport, or None when the type was kept
    seconds: float

    def summary(self) -> str:
        report = self.report
        lines = [f"Voxels changed: {100.0 * report.changed_fraction:.2f} % (set to {report.fill_value:g}); "
                 f"{report.threshold.describe()}"]
        if report.warning:
            lines.append(f"Warning: {inPanelTerms(report.warning)}")
        for name, before, after in (("gzip", report.gzip_before, report.gzip_after),
                                    ("zstd", report.zstd_before, report.zstd_after)):
            if before and after:
                lines.append(f"Compressed ({name}): {format_bytes(before)} -> {format_bytes(after)}, "
                             f"{before / after:.2f}x smaller")
        if self.reduceReport is not None:  # with its notes (values kept, NaN set, ...), as the command line says them
            lines.append(self.reduceReport.summary())
            lines += list(self.reduceReport.notes)
        lines += [inPanelTerms(note) for note in report.notes]
        lines.append(f"{self.seconds:.2f} s")
        return "\n".join(lines)


def inPanelTerms(text: str) -> str:
    """The core's advice in the panel's words: its Level and Air settings, not the command line's options."""
    text = re.sub(r"\(--level (\d)\)", r"(Level: \1)", text)
    text = text.replace("(--mask-out writes the haze mask)", "(Preview mask shows the haze mask)")
    return text.replace("a fixed --level", "a fixed Level").replace("--air all", "Air: all")


class HazeRemovalLogic:
    """Remove the haze around an object in scalar volume nodes. Plain Python (no ScriptedLoadableModuleLogic base)
    so that it imports without Slicer's application; the module file mixes it with ScriptedLoadableModuleLogic."""

    def __init__(self):
        self.lastResult: HazeRemovalResult | None = None
        self.lastPreviewReport = None  # the core's DehazeReport of the last previewMask (threshold, warning)
        self._previewReports = {}      # mask node ID -> the report of the preview that filled it

    @property
    def lastReport(self):
        """The core's DehazeReport of the last completed run (None before one, or after a cancel or error)."""
        return self.lastResult.report if self.lastResult is not None else None

    # --- inputs and settings ------------------------------------------------------------------------------------
    @staticmethod
    def checkInput(volumeNode) -> None:
        """Refuse, with one line naming the volume, what haze removal cannot work on."""
        if volumeNode is None:
            raise BigVolumeError("no input volume selected")
        name = volumeNode.GetName()
        if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise BigVolumeError(f"{name} is a label map: haze removal needs a grayscale (scalar) volume, a label "
                                 "map has no haze")
        if volumeNode.GetClassName() != "vtkMRMLScalarVolumeNode":
            kind = "an RGB/vector volume" if volumeNode.IsA("vtkMRMLVectorVolumeNode") else volumeNode.GetClassName()
            raise BigVolumeError(f"{name} is {kind}: haze removal needs a grayscale (scalar) volume (convert it "
                                 "with the Vector to Scalar Volume module first)")
        image = volumeNode.GetImageData()
        if image is None or image.GetPointData().GetScalars() is None or min(image.GetDimensions()) < 1:
            raise BigVolumeError(f"{name}: the volume has no voxels")
        if image.GetNumberOfScalarComponents() != 1:
            raise BigVolumeError(f"{name} has {image.GetNumberOfScalarComponents()} components per voxel: haze "
                                 "removal needs a grayscale (scalar) volume")

    @classmethod
    def volumeFromNode(cls, volumeNode) -> bigvolume.Volume:
        """A bigvolume.Volume viewing the node's voxels (no copy: never write into ``volume.array``)."""
        cls.checkInput(volumeNode)
        volume = volume_from_node(volumeNode)
        check_storable_dtype(volume.dtype)
        return volume

    @staticmethod
    def hazeOptions(level=AUTO, air="border", dilate=DEFAULT_DILATE, largestOnly=False, close=0,
                    fill="min") -> HazeOptions:
        """The core's options (which validate them) from the panel's settings. level: "auto" or 1-5. fill: "min"
        (or "minimum", the panel's word) for the image minimum, or a number."""
        if isinstance(fill, str) and fill.strip().lower() in ("min", "minimum"):
            fill = "min"
        return HazeOptions(level=level, air=air, dilate=dilate, largest_only=bool(largestOnly), close=close,
                           fill=fill)

    @staticmethod
    def bitsValue(bits) -> int | None:
        """None for "keep" (or None), else 8 or 16."""
        if bits is None or str(bits) == "keep":
            return None
        if str(bits) not in BITS_CHOICES:
            raise BigVolumeError(f"bits must be one of {', '.join(BITS_CHOICES)}, got {bits!r}")
        return int(bits)

    # --- preview ------------------------------------------------------------------------------------------------
    def previewMask(self, inputVolumeNode, level=AUTO, air="border", dilate=DEFAULT_DILATE, largestOnly=False, close=0,
                    fill="min", maskNode=None):
        """The haze mask of ``inputVolumeNode`` with these settings as a label map (1 = haze, 0 = kept), on the
        input's exact grid and under its transform, to overlay before applying. ``maskNode`` None: a new label map
        "<input> haze mask" is added to the input's scene; a given one is refilled (a second preview reuses it).
        ``fill`` does not change the mask; it is accepted so that one set of settings serves both calls.
        ``self.lastPreviewReport`` holds the core's report of that mask (threshold, and the warning when little or
        nothing, or almost everything, would be removed); ``describeMask`` says it."""
        options = self.hazeOptions(level, air, dilate, largestOnly, close, fill)
        volume = self.volumeFromNode(inputVolumeNode)
        if maskNode is not None and not maskNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise BigVolumeError(f"mask {maskNode.GetName()}: the haze mask goes into a label map volume, not a "
                                 f"{maskNode.GetClassName()}")
        if maskNode is None and inputVolumeNode.GetScene() is None:
            raise BigVolumeError(f"{inputVolumeNode.GetName()} is in no scene: give a mask label map node")
        self.lastPreviewReport = None
        with _namingTheInput(inputVolumeNode):
            mask, self.lastPreviewReport = haze_mask(volume, options, with_report=True)
        labels = np.where(mask, np.uint8(MASK_LABEL), np.uint8(0))
        name = f"{inputVolumeNode.GetName()}{MASK_SUFFIX}"
        with given_or_new_node(maskNode, inputVolumeNode.GetScene(), "vtkMRMLLabelMapVolumeNode", name) as maskNode:
            fill_volume_node(maskNode, bigvolume.Volume(labels, volume.geometry), inputVolumeNode)
        if maskNode.GetName().endswith(MASK_SUFFIX) and maskNode.GetName() != name:  # ours, of another input
            maskNode.SetName(name)
        self._previewReports[maskNode.GetID()] = self.lastPreviewReport
        return maskNode

    def describeMask(self, maskNode) -> str:
        """About a mask from ``previewMask``: how much of the volume is haze; after this logic's last preview, also
        its threshold and, when little, nothing or almost everything would be removed, the warning saying why (one
        line each)."""
        labels = volume_from_node(maskNode).array
        haze = int(np.count_nonzero(labels == MASK_LABEL))
        lines = [f"Haze (label {MASK_LABEL}): {haze} of {labels.size} voxels, {100.0 * haze / labels.size:.1f} %"]
        # the report of the preview that filled this node (another's with the same counts told another threshold),
        # while the mask is as it left it
        report = self._previewReports.get(maskNode.GetID())
        if report is not None and report.haze_voxels == haze and report.voxels == labels.size:
            lines.append(report.threshold.describe())
            if report.warning:
                lines.append(f"Warning: {inPanelTerms(report.warning)}")
            lines += [inPanelTerms(note) for note in report.notes]  # (NaN kept, a threshold lowered, ...)
        return "\n".join(lines)

    # --- the work -----------------------------------------------------------------------------------------------
    def process(self, inputVolumeNode, outputVolumeNode=None, level=AUTO, air="border", dilate=DEFAULT_DILATE,
                largestOnly=False, close=0, fill="min", bits=None, progress=None):
        """Set the haze (noisy air) of ``inputVolumeNode`` to one value and return the output node.

        level: "auto" (the default: a denoised copy, the threshold above the noise of the air) or 1-5 (MRIcroGL's
        levels, see LEVEL_CHOICES; 5 takes the least as air). air: "border" (dark voxels connected to the volume
        border) or "all". dilate: voxels the object mask is grown by, so partial-volume edges stay. The result's summary warns when little or nothing was removed, and says why.
        largestOnly: keep only the largest object. close: close gaps up to this many voxels (0: off). fill: "min"
        (the image minimum) or a number. bits: None/"keep", 8 or 16: reduce the precision after the dehaze (robust
        intensity window). progress: ``callback(fraction, message) -> bool | None``; returning False cancels and
        raises bigvolume.Cancelled.

        ``outputVolumeNode`` None: a new scalar volume "<input> dehazed" is added to the input's scene. The output
        has the input's exact IJKToRAS matrix and parent transform. The input node is never modified. On cancel or
        error a node created here is removed again and a given output node is left as it was. Details of the run
        are in ``self.lastResult`` (``self.lastReport``: the core's DehazeReport).
        """
        started = time.perf_counter()
        self.lastResult = None
        options = self.hazeOptions(level, air, dilate, largestOnly, close, fill)
        bits = self.bitsValue(bits)
        volume = self.volumeFromNode(inputVolumeNode)
        self._checkOutputNode(inputVolumeNode, outputVolumeNode)

        steps = Progress(progress)
        with _namingTheInput(inputVolumeNode):
            result, _, report = dehaze(volume, options, measure_compression=True,
                                       progress=steps.sub(0.0, 0.85 if bits else 0.95))
            reduceReport = None
            if bits:
                result, reduceReport = reduce_bits(result, bits, progress=steps.sub(0.85, 0.95))
        steps(0.95, "updating the output volume")  # a last chance to cancel before any node is touched

        with given_or_new_node(outputVolumeNode, inputVolumeNode.GetScene(), "vtkMRMLScalarVolumeNode",
                               f"{inputVolumeNode.GetName()} dehazed") as outputVolumeNode:
            # Reduced precision remaps the values: the input's window/level would no longer fit.
            fill_volume_node(outputVolumeNode, result, inputVolumeNode, window_level=not bits)

        self.lastResult = HazeRemovalResult(outputVolumeNode, report, reduceReport, time.perf_counter() - started)
        if progress is not None:
            progress(1.0, "done")  # what it returns no longer matters: the output is complete
        return outputVolumeNode

    @staticmethod
    def _checkOutputNode(inputVolumeNode, outputVolumeNode) -> None:
        check_output_node(inputVolumeNode, outputVolumeNode)
        if outputVolumeNode is not None and outputVolumeNode.GetClassName() != "vtkMRMLScalarVolumeNode":
            raise BigVolumeError(f"output {outputVolumeNode.GetName()}: a {outputVolumeNode.GetClassName()} cannot "
                                 "hold the result; choose a scalar volume or 'Create new volume'")


@contextlib.contextmanager
def _namingTheInput(volumeNode):
    """The core's messages say what is wrong with "the volume": name the node the user picked."""
    try:
        yield
    except BigVolumeError as error:
        raise BigVolumeError(f"{volumeNode.GetName()}: {error}") from None


__all__ = ["HazeRemovalLogic", "HazeRemovalResult", "LEVEL_CHOICES", "AIR_CHOICES", "FILL_CHOICES", "BITS_CHOICES",
           "AUTO", "DEFAULT_DILATE", "MASK_LABEL", "BigVolumeError", "Cancelled"]
