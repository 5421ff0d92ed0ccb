"""MRML side of anti-aliased downsampling: read a volume node's voxels without copying, let ``bigvolume`` resample
them onto the block-centred grid, and put the result in an output volume node with the exact geometry.

No Qt here: this file runs inside Slicer (module Widget, Python console, ``Slicer --no-main-window``) and outside it
on a plain MRML scene from the ``slicer-core`` package (tests, batch scripts).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import vtk
from vtk.util import numpy_support

from slicer.util import arrayFromVolume, arrayFromVTKMatrix, updateVolumeFromArray, vtkMatrixFromArray

import bigvolume
from bigvolume import BigVolumeError, Cancelled
from bigvolume.progress import Progress
from bigvolume.resample import check_method

# Volume classes whose voxels slicer.util.arrayFromVolume reads as (k, j, i) or (k, j, i, components).
SUPPORTED_INPUT_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLVectorVolumeNode")
# Methods that only ever output values present in the input: the only ones allowed on label maps.
LABEL_SAFE_METHODS = ("nearest", "max")
METHODS = dict(bigvolume.METHODS)
DEFAULT_METHOD = bigvolume.DEFAULT_METHOD


@dataclass
class ResampleResult:
    """What one run did, for the result line of the panel and for scripts."""

    outputNode: object
    inputDimensions: tuple
    outputDimensions: tuple
    inputSpacing: tuple
    outputSpacing: tuple
    method: str
    inputBytes: int
    outputBytes: int
    seconds: float
    notes: list = field(default_factory=list)

    @property
    def factors(self) -> tuple:
        return tuple(o / i for o, i in zip(self.outputSpacing, self.inputSpacing))

    def summary(self) -> str:
        text = (f"{_dims(self.inputDimensions)} -> {_dims(self.outputDimensions)}, "
                f"spacing {_numbers(self.outputSpacing)} mm, {_mib(self.inputBytes)} -> {_mib(self.outputBytes)}, "
                f"{self.method}, {self.seconds:.2f} s")
        return "\n".join([text] + list(self.notes))


class AntiAliasedResampleLogic:
    """Downsample volume nodes. Plain Python (no ScriptedLoadableModuleLogic base) so that it imports without
    Slicer's application; the module file mixes it with ScriptedLoadableModuleLogic."""

    def __init__(self):
        self.lastResult: ResampleResult | None = None

    # --- reading nodes ----------------------------------------------------------------------------------------
    @staticmethod
    def geometryFromNode(volumeNode) -> bigvolume.Geometry:
        """The node's grid (LPS, as the core wants it) from its IJKToRAS matrix and image dimensions."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return bigvolume.Geometry.from_ijk_to_ras(arrayFromVTKMatrix(matrix), volumeNode.GetImageData().GetDimensions())

    @classmethod
    def volumeFromNode(cls, volumeNode) -> bigvolume.Volume:
        """A bigvolume.Volume viewing the node's voxels (no copy: never write into ``volume.array``)."""
        cls.checkInput(volumeNode)
        array = arrayFromVolume(volumeNode)
        return bigvolume.Volume(array, cls.geometryFromNode(volumeNode), owner=volumeNode.GetImageData())

    @staticmethod
    def checkInput(volumeNode) -> None:
        if volumeNode is None:
            raise BigVolumeError("no input volume selected")
        if volumeNode.GetClassName() not in SUPPORTED_INPUT_CLASSES:
            raise BigVolumeError(f"{volumeNode.GetName()}: {volumeNode.GetClassName()} is not supported "
                                 f"(scalar, label map and vector/RGB volumes are)")
        image = volumeNode.GetImageData()
        if image is None or image.GetPointData().GetScalars() is None or min(image.GetDimensions()) < 1:
            raise BigVolumeError(f"{volumeNode.GetName()}: the volume has no voxels")

    @staticmethod
    def isLabelMap(volumeNode) -> bool:
        return volumeNode is not None and volumeNode.IsA("vtkMRMLLabelMapVolumeNode")

    @classmethod
    def effectiveMethod(cls, inputVolumeNode, method: str) -> tuple[str, list]:
        """The method actually used, and notes for the user when it differs from the one asked for."""
        check_method(method)
        if cls.isLabelMap(inputVolumeNode) and method not in LABEL_SAFE_METHODS:
            note = (f"Label map: used 'nearest' instead of '{method}' (a smoothing kernel would invent labels "
                    "that are not in the input).")
            return "nearest", [note]
        return method, []

    # --- planning ---------------------------------------------------------------------------------------------
    @classmethod
    def outputGeometry(cls, inputVolumeNode, factor=2.0, spacing=None, isotropic=False) -> bigvolume.Geometry:
        """The grid a run with these settings would produce, without touching any voxel (for previews)."""
        return cls._plannedGeometry(cls.volumeFromNode(inputVolumeNode), factor, spacing, isotropic)

    @staticmethod
    def _plannedGeometry(volume: bigvolume.Volume, factor, spacing, isotropic) -> bigvolume.Geometry:
        factors = bigvolume.choose_factors(volume.geometry, volume.dtype.itemsize * volume.components,
                                           None if spacing is not None else factor, spacing, isotropic)
        return volume.geometry.downsampled(factors)

    @classmethod
    def describePlan(cls, inputVolumeNode, factor=2.0, spacing=None, isotropic=False) -> str:
        """One line: input grid -> output grid and sizes; raises BigVolumeError on invalid settings."""
        volume = cls.volumeFromNode(inputVolumeNode)
        output = cls._plannedGeometry(volume, factor, spacing, isotropic)
        bytesPerVoxel = volume.dtype.itemsize * volume.components
        return (f"{_dims(volume.geometry.dimensions)} -> {_dims(output.dimensions)}, spacing "
                f"{_numbers(output.spacing)} mm, {_mib(volume.nbytes)} -> {_mib(output.voxel_count * bytesPerVoxel)}")

    # --- the work -----------------------------------------------------------------------------------------------
    def process(self, inputVolumeNode, outputVolumeNode=None, factor=2.0, spacing=None, isotropic=False,
                method=DEFAULT_METHOD, threads=None, progress=None):
        """Downsample ``inputVolumeNode`` into ``outputVolumeNode`` and return the output node.

        factor: one number or three (I, J, K), each >= 1; ignored when ``spacing`` (target spacing I, J, K in mm)
        is given. isotropic: with a single factor, one output spacing on all axes (factor x the finest input
        spacing). method: a key of METHODS; label maps always use a label-safe method (see LABEL_SAFE_METHODS).
        threads: None or 0 for all cores. progress: ``callback(fraction, message) -> bool | None``; returning False
        cancels and raises bigvolume.Cancelled.

        ``outputVolumeNode`` None: a new node of the input's class named "<input> resampled" is added to the input's
        scene. The input node is never modified. On cancel or error a node created here is removed again and a
        given output node is left as it was. Details of the run are in ``self.lastResult``.
        """
        started = time.perf_counter()
        self.lastResult = None
        self.checkInput(inputVolumeNode)
        method, notes = self.effectiveMethod(inputVolumeNode, method)
        self._checkOutputNode(inputVolumeNode, outputVolumeNode)
        for note in notes:
            logging.info(note)

        volume = self.volumeFromNode(inputVolumeNode)
        _checkStorableDtype(volume.dtype)
        steps = Progress(progress)
        result = bigvolume.resample(volume, None if spacing is not None else factor, spacing=spacing,
                                    isotropic=isotropic, method=method, threads=threads or None,
                                    progress=steps.sub(0.0, 0.95))
        steps(0.95, "updating the output volume")  # a last chance to cancel before any node is touched

        created = outputVolumeNode is None
        try:
            if created:
                scene = inputVolumeNode.GetScene()
                outputVolumeNode = scene.AddNewNodeByClass(
                    inputVolumeNode.GetClassName(), scene.GenerateUniqueName(f"{inputVolumeNode.GetName()} resampled"))
            self._fillOutputNode(inputVolumeNode, outputVolumeNode, result)
        except BaseException:
            if created and outputVolumeNode is not None:
                _removeNodeAndDisplay(outputVolumeNode)
            raise

        self.lastResult = ResampleResult(
            outputVolumeNode, volume.geometry.dimensions, result.geometry.dimensions, volume.geometry.spacing,
            result.geometry.spacing, method, volume.nbytes, result.nbytes, time.perf_counter() - started, notes)
        if progress is not None:
            progress(1.0, "done")  # what it returns no longer matters: the output is complete
        return outputVolumeNode

    # --- helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def _checkOutputNode(inputVolumeNode, outputVolumeNode) -> None:
        if outputVolumeNode is None:
            if inputVolumeNode.GetScene() is None:
                raise BigVolumeError(f"{inputVolumeNode.GetName()} is in no scene: give an output volume node")
            return
        if outputVolumeNode is inputVolumeNode or (
                outputVolumeNode.GetID() is not None and outputVolumeNode.GetID() == inputVolumeNode.GetID()):
            raise BigVolumeError("the output volume must differ from the input volume (the input is never modified)")
        if outputVolumeNode.GetClassName() not in SUPPORTED_INPUT_CLASSES:
            raise BigVolumeError(f"output {outputVolumeNode.GetName()}: {outputVolumeNode.GetClassName()} cannot "
                                 "hold the result")
        inputIsVector = inputVolumeNode.IsA("vtkMRMLVectorVolumeNode")
        if outputVolumeNode.IsA("vtkMRMLVectorVolumeNode") != inputIsVector:
            kind = "a vector" if inputIsVector else "a scalar"
            raise BigVolumeError(f"output {outputVolumeNode.GetName()} is a {outputVolumeNode.GetClassName()}, but "
                                 f"{inputVolumeNode.GetName()} needs {kind} volume output: choose 'Create new volume' "
                                 "(no output node) instead")

    @staticmethod
    def _fillOutputNode(inputVolumeNode, outputVolumeNode, result: bigvolume.Volume) -> None:
        wasModifying = outputVolumeNode.StartModify()
        try:
            updateVolumeFromArray(outputVolumeNode, result.array)
            outputVolumeNode.SetIJKToRASMatrix(vtkMatrixFromArray(result.geometry.ijk_to_ras()))
            outputVolumeNode.SetAndObserveTransformNodeID(inputVolumeNode.GetTransformNodeID())
        finally:
            outputVolumeNode.EndModify(wasModifying)
        _copyDisplay(inputVolumeNode, outputVolumeNode)


def _copyDisplay(inputVolumeNode, outputVolumeNode) -> None:
    """Give the output display nodes (if it has none) that look like the input's: colour table, window/level."""
    if outputVolumeNode.GetScene() is None:
        return
    if outputVolumeNode.GetDisplayNode() is None:
        outputVolumeNode.CreateDefaultDisplayNodes()
    source, target = inputVolumeNode.GetDisplayNode(), outputVolumeNode.GetDisplayNode()
    if source is None or target is None:
        return
    wasModifying = target.StartModify()
    try:
        if source.GetColorNodeID():
            target.SetAndObserveColorNodeID(source.GetColorNodeID())
        if source.IsA("vtkMRMLScalarVolumeDisplayNode") and target.IsA("vtkMRMLScalarVolumeDisplayNode"):
            target.SetInterpolate(source.GetInterpolate())
            target.SetAutoWindowLevel(source.GetAutoWindowLevel())
            if not source.GetAutoWindowLevel():
                target.SetWindowLevel(source.GetWindow(), source.GetLevel())
    finally:
        target.EndModify(wasModifying)


def _removeNodeAndDisplay(node) -> None:
    scene = node.GetScene()
    if scene is None:
        return
    dependents = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is scene:
            scene.RemoveNode(dependent)


def _checkStorableDtype(dtype: np.dtype) -> None:
    """Refuse up front what updateVolumeFromArray would refuse after the (possibly long) resampling."""
    try:
        vtkType = numpy_support.get_vtk_array_type(np.dtype(dtype))
    except TypeError:
        raise BigVolumeError(f"voxel type {np.dtype(dtype)} cannot be stored in a Slicer volume") from None
    if vtkType == vtk.VTK_LONG_LONG:
        raise BigVolumeError("Slicer volumes cannot hold 64-bit signed integer voxels: cast the input to a 32-bit "
                             "integer or float type first (Volumes module, or Cast Scalar Volume)")


def _dims(dimensions) -> str:
    return "x".join(str(int(d)) for d in dimensions)


def _numbers(values) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def _mib(nbytes) -> str:
    return f"{nbytes / 2**20:.2f} MiB"


__all__ = ["AntiAliasedResampleLogic", "ResampleResult", "SUPPORTED_INPUT_CLASSES", "LABEL_SAFE_METHODS",
           "METHODS", "DEFAULT_METHOD", "BigVolumeError", "Cancelled"]
