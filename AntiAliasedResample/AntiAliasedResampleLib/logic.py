"""MRML side of anti-aliased downsampling: read a volume node's voxels without copying, let ``bigvolume`` resample
them onto the block-centred grid, and put the result in an output volume node with the exact geometry. A file too big
to load is resampled from disk instead (streamed a slab at a time when it would not fit in memory) and only the small
result is loaded (``processFile``).

No Qt here: this file runs inside Slicer (module Widget, Python console, ``Slicer --no-main-window``) and outside it
on a plain MRML scene from the ``slicer-core`` package (tests, batch scripts).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import bigvolume
from bigvolume import BigVolumeError, Cancelled, Progress
from bigvolume.slicer import (atomic_output, check_method, check_output_path, default_memory_limit, DEVICE_METHODS,
                              DEVICES, format_bytes, label_note, memory_bytes, nan_note, read_geometry, volume_suffix)
from bigvolume.slicer.core_notes import core_notes
from bigvolume.slicer.preview_nodes import show_preview
from bigvolume.slicer.volume_nodes import (LABEL_SAFE_METHODS, check_output_node, check_storable_dtype,
                                    dimensions_text, fill_volume_node, geometry_from_node, given_or_new_node,
                                    is_label_map, label_safe_method, numbers_text, remove_node_and_display,
                                    volume_from_node)

# Volume classes whose voxels slicer.util.arrayFromVolume reads as (k, j, i) or (k, j, i, components).
SUPPORTED_INPUT_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLVectorVolumeNode")
METHODS = dict(bigvolume.METHODS)
DEFAULT_METHOD = bigvolume.DEFAULT_METHOD
# Files the input-file mode reads (what bigvolume.io.files reads); the result is saved as "<stem>_resampled.nhdr": a
# detached raw data file, which Slicer and bigvolume both stream and memory-map.
INPUT_FILE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
SAVED_SUFFIX = "_resampled.nhdr"
# The scripted CLI module (BigVolumeResampleCLI/ in the extension) that runs the same resample in its own process,
# on an NVIDIA GPU when CuPy finds one: slicer.modules.<CLI_MODULE> once installed. Its methods and devices:
CLI_MODULE = "bigvolumeresamplecli"
CLI_METHODS = DEVICE_METHODS
CLI_DEVICES = DEVICES


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
    # Input-file mode only: the file read, where the result was saved (None: it was temporary), and how it was
    # streamed (a bigvolume StreamPlan; None: read whole).
    inputPath: object = None
    savedPath: object = None
    streamPlan: object = None

    @property
    def factors(self) -> tuple:
        return tuple(o / i for o, i in zip(self.outputSpacing, self.inputSpacing))

    @property
    def streamed(self) -> bool:
        return self.streamPlan is not None

    def summary(self) -> str:
        text = (f"{dimensions_text(self.inputDimensions)} -> {dimensions_text(self.outputDimensions)}, "
                f"spacing {numbers_text(self.outputSpacing)} mm, "
                f"{format_bytes(self.inputBytes)} -> {format_bytes(self.outputBytes)}, "
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
        return geometry_from_node(volumeNode)

    @classmethod
    def volumeFromNode(cls, volumeNode) -> bigvolume.Volume:
        """A bigvolume.Volume viewing the node's voxels (no copy: never write into ``volume.array``)."""
        cls.checkInput(volumeNode)
        return volume_from_node(volumeNode)

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
        return is_label_map(volumeNode)

    @classmethod
    def effectiveMethod(cls, inputVolumeNode, method: str, outputVolumeNode=None) -> tuple[str, list]:
        """The method actually used, and notes for the user when it differs from the one asked for: label-safe
        when the input or the output is a label map (a scalar volume smoothed into a given label map got labels
        that are in neither)."""
        check_method(method)
        labelled = next((node for node in (inputVolumeNode, outputVolumeNode)
                         if node is not None and is_label_map(node)), inputVolumeNode)
        return label_safe_method(labelled, method)

    # --- planning ---------------------------------------------------------------------------------------------
    @classmethod
    def outputGeometry(cls, inputVolumeNode, factor=2.0, spacing=None, isotropic=False) -> bigvolume.Geometry:
        """The grid a run with these settings would produce, without touching any voxel (for previews)."""
        with core_notes(quiet=True):  # (a run says them)
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
        with core_notes(quiet=True):  # the panel plans at every change of a setting; a run says them
            output = cls._plannedGeometry(volume, factor, spacing, isotropic)
        bytesPerVoxel = volume.dtype.itemsize * volume.components
        return (f"{dimensions_text(volume.geometry.dimensions)} -> {dimensions_text(output.dimensions)}, spacing "
                f"{numbers_text(output.spacing)} mm, "
                f"{format_bytes(volume.nbytes)} -> {format_bytes(output.voxel_count * bytesPerVoxel)}")

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
        method, notes = self.effectiveMethod(inputVolumeNode, method, outputVolumeNode)
        self._checkOutputNode(inputVolumeNode, outputVolumeNode)
        for note in notes:
            logging.info(note)

        volume = self.volumeFromNode(inputVolumeNode)
        check_storable_dtype(volume.dtype)
        labels = label_note(inputVolumeNode.GetName(), volume.array, method)  # (a scalar volume holding labels)
        notes = notes + ([labels] if labels else [])
        steps = Progress(progress)
        with core_notes() as logged:  # what the command line prints as notes: an axis kept, a spacing not reached
            result = bigvolume.resample(volume, None if spacing is not None else factor, spacing=spacing,
                                        isotropic=isotropic, method=method, threads=threads or None,
                                        progress=steps.sub(0.0, 0.95))
        notes = notes + logged
        steps(0.95, "updating the output volume")  # a last chance to cancel before any node is touched
        if result.dtype.kind == "f":  # said as the file mode and the command line say it
            nan = int(np.count_nonzero(np.isnan(result.array)))
            if nan:
                notes = notes + [nan_note(nan, result.geometry.voxel_count, method)]

        with given_or_new_node(outputVolumeNode, inputVolumeNode.GetScene(), inputVolumeNode.GetClassName(),
                               f"{inputVolumeNode.GetName()} resampled") as outputVolumeNode:
            self._fillOutputNode(outputVolumeNode, result, inputVolumeNode)

        self.lastResult = ResampleResult(
            outputVolumeNode, volume.geometry.dimensions, result.geometry.dimensions, volume.geometry.spacing,
            result.geometry.spacing, method, volume.nbytes, result.nbytes, time.perf_counter() - started, notes)
        if progress is not None:
            progress(1.0, "done")  # what it returns no longer matters: the output is complete
        return outputVolumeNode

    # --- the same resample out of process, through the CLI module ---------------------------------------------------
    def cliParameters(self, inputVolumeNode, outputVolumeNode=None, factor=2.0, spacing=None, isotropic=False,
                      method=DEFAULT_METHOD, device="auto") -> dict:
        """Parameters for ``slicer.cli.run(slicer.modules.bigvolumeresamplecli, None, parameters)``, which runs the
        resample in its own process (on an NVIDIA GPU when CuPy finds one; device "cpu" or "cuda" to choose).
        factor, spacing, isotropic and method as for ``process``: the grid becomes per-axis factors (the CLI takes
        factors only), label maps get a label-safe method. ``outputVolumeNode`` None: a node of the input's class
        named "<input> resampled" is added to the scene for the CLI to fill. Raises BigVolumeError, before any node
        is added, on settings the CLI cannot run."""
        self.checkInput(inputVolumeNode)
        method, notes = self.effectiveMethod(inputVolumeNode, method, outputVolumeNode)
        for note in notes:
            logging.info(note)
        if method not in CLI_METHODS:
            raise BigVolumeError(f"method {method} needs the whole volume in memory and does not run in the CLI "
                                 f"module; choose one of {', '.join(CLI_METHODS)}")
        if device not in CLI_DEVICES:
            raise BigVolumeError(f"unknown device {device!r}; choose one of {', '.join(CLI_DEVICES)}")
        self._checkOutputNode(inputVolumeNode, outputVolumeNode)
        volume = self.volumeFromNode(inputVolumeNode)
        check_storable_dtype(volume.dtype)
        factors = bigvolume.choose_factors(volume.geometry, volume.dtype.itemsize * volume.components,
                                           None if spacing is not None else factor, spacing, isotropic)
        with given_or_new_node(outputVolumeNode, inputVolumeNode.GetScene(), inputVolumeNode.GetClassName(),
                               f"{inputVolumeNode.GetName()} resampled") as outputVolumeNode:
            # Under the input's parent transform, as process puts it: the CLI reads and writes the volumes in their
            # own coordinates, and the result without it showed away from its input by that transform.
            outputVolumeNode.SetAndObserveTransformNodeID(inputVolumeNode.GetTransformNodeID())
        # A SEM float-vector is one "I,J,K" string; full precision, so the CLI's grid is the one planned here.
        return {"inputVolume": inputVolumeNode, "outputVolume": outputVolumeNode,
                "factor": ",".join(format(f, ".17g") for f in factors), "method": method, "device": device}

    @staticmethod
    def discardCliOutput(outputVolumeNode) -> None:
        """Remove the output node ``cliParameters`` made for a CLI run that was then cancelled or failed (it holds no
        voxels), with its display and storage nodes."""
        remove_node_and_display(outputVolumeNode)

    @staticmethod
    def cliResultText(status: str, deviceUsed: str = "", summary: str = "", errorText: str = "") -> str:
        """The result line for a finished CLI run, from its node's status string and returned values."""
        if status == "Completed":
            return f"{summary}\nRan on {deviceUsed or 'an unknown device'} (CLI module)"
        if status == "Cancelled":
            return "Cancelled"
        lines = [line for line in errorText.splitlines() if line.strip()]
        return f"Failed ({status}): {lines[-1] if lines else 'no error message'}"

    # --- 3D preview ----------------------------------------------------------------------------------------------
    @staticmethod
    def showPreview(outputVolumeNode, inputVolumeNode=None, renderingLogic=None):
        """Volume rendering of the output with a transfer function from its histogram; with the input, before/after:
        input and output in two linked 3D views ("Dual 3D" layout), both with the input's transfer function.
        renderingLogic: Slicer's volume rendering logic (the display node of the user's default rendering method);
        None: GPU ray casting. Returns the output's volume rendering display node (bigvolume.slicer.preview_nodes)."""
        return show_preview(outputVolumeNode, inputVolumeNode, rendering_logic=renderingLogic)

    # --- input files too big to load ----------------------------------------------------------------------------
    @staticmethod
    def defaultMemoryLimit() -> int:
        """Bytes the input-file mode may hold at once when no limit is given: a quarter of this computer's memory."""
        return default_memory_limit()

    @staticmethod
    def savedPathFor(inputPath) -> Path:
        """Where ``saveBesideInput`` puts the result: "<input stem>_resampled.nhdr" in the input file's folder."""
        path = _inputFilePath(inputPath)
        return path.with_name(_fileStem(path) + SAVED_SUFFIX)

    @staticmethod
    def fileGeometry(inputPath) -> bigvolume.Geometry:
        """The grid of a volume file, read from its header alone (no voxel is read)."""
        return read_geometry(_inputFilePath(inputPath))[0]

    @classmethod
    def describeFilePlan(cls, inputPath, factor=2.0, spacing=None, isotropic=False, memoryLimit=None, stream=None,
                         method=DEFAULT_METHOD) -> str:
        """One line for a file, from its header alone: input grid -> output grid, sizes, and whether it will be
        streamed from disk under which memory limit. Raises BigVolumeError (naming the file) on a missing or
        unreadable file, missing or short data files and invalid settings."""
        with core_notes(quiet=True):  # the panel plans at every change of a setting; a run says them
            return cls._planFile(inputPath, factor, spacing, isotropic, memoryLimit, stream, method).describe()

    def processFile(self, inputPath, outputVolumeNode=None, factor=2.0, spacing=None, isotropic=False,
                    method=DEFAULT_METHOD, threads=None, progress=None, *, scene=None, memoryLimit=None, stream=None,
                    saveBesideInput=False, outputPath=None, tempFolder=None):
        """Downsample the volume file ``inputPath`` from disk, without loading it, and load only the result into
        ``outputVolumeNode``; return that node.

        factor, spacing, isotropic, method, threads, progress: as for ``process``. The file cannot say it is a label
        map: give a label map ``outputVolumeNode`` to get a label-safe method. ``outputVolumeNode`` None: a new
        scalar (or, for multi-component files, vector) volume named "<file stem> resampled" is added to ``scene``.
        The result takes the file's geometry, under no transform.

        memoryLimit: bytes (or a size such as "2GB") the resampling may hold at once; None: a quarter of this
        computer's memory. stream: None streams (reads the file a slab of slices at a time) when the input and
        output together would exceed the limit; True always; False never.

        saveBesideInput: keep the result as "<input stem>_resampled.nhdr" (+ .raw) beside the input, and give the
        node a storage node pointing at it. outputPath: keep it there instead (a relative path is taken from the
        input's folder). Otherwise the result is written to a temporary folder inside ``tempFolder`` (default: the
        system's) and removed once loaded.

        The input file is only read. On cancel (bigvolume.Cancelled) or error no node is created, a given node is
        left as it was, and no file is left behind. Details of the run are in ``self.lastResult``.
        """
        started = time.perf_counter()
        self.lastResult = None
        method, notes = self.effectiveMethod(outputVolumeNode, method)
        with core_notes(quiet=True):  # (resample_file plans again, and says them)
            plan = self._planFile(inputPath, factor, spacing, isotropic, memoryLimit, stream, method)
        path = plan.input_path
        check_storable_dtype(plan.dtype)
        self._checkFileOutputNode(outputVolumeNode, plan, path)
        if outputVolumeNode is None and scene is None:
            raise BigVolumeError("give a scene or an output volume node to load the result into")
        scene = outputVolumeNode.GetScene() if outputVolumeNode is not None else scene
        savedPath = None
        if outputPath:
            savedPath = Path(outputPath) if Path(outputPath).is_absolute() else path.parent / outputPath
        elif saveBesideInput:
            savedPath = self.savedPathFor(path)
        if savedPath is not None:
            check_output_path(savedPath, inputs=[path])  # before the long run: format, folder, not the input
        if tempFolder is not None and not Path(tempFolder).is_dir():
            raise BigVolumeError(f"temporary folder {tempFolder} does not exist")
        for note in notes:
            logging.info(note)

        steps = Progress(progress)
        created = outputVolumeNode is None
        try:
            with contextlib.ExitStack() as stack:
                logged = stack.enter_context(core_notes())  # what the command line prints as notes
                # Written under its final name in a private folder: beside the input (moved into place only when
                # loaded, so a cancel or error leaves nothing) or in the temporary folder (deleted on leaving).
                if savedPath is not None:
                    workPath = stack.enter_context(atomic_output(savedPath))
                else:
                    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="AntiAliasedResample-",
                                                                             dir=tempFolder))
                    workPath = Path(folder) / (_fileStem(path) + SAVED_SUFFIX)
                try:
                    report = bigvolume.resample_file(
                        path, workPath, None if spacing is not None else factor, spacing=spacing,
                        isotropic=isotropic, method=method, threads=threads or None, stream=stream,
                        memory_limit=plan.memory_limit, progress=steps.sub(0.0, 0.9))
                except BigVolumeError as error:
                    if savedPath is None:
                        raise
                    # Name the file the user asked for, not its staging copy.
                    raise type(error)(str(error).replace(str(workPath), str(savedPath))) from None
                steps(0.9, "loading the result")  # a last chance to cancel before any node is touched
                result = bigvolume.read_volume(workPath)
                outputBytes = result.nbytes
                if created:
                    className = "vtkMRMLVectorVolumeNode" if plan.components > 1 else "vtkMRMLScalarVolumeNode"
                    outputVolumeNode = scene.AddNewNodeByClass(
                        className, scene.GenerateUniqueName(f"{_fileStem(path)} resampled"))
                self._fillOutputNode(outputVolumeNode, result)
                del result  # the voxels were copied; unmap the file before it is moved or deleted (Windows)
        except BaseException:
            if created and outputVolumeNode is not None:
                remove_node_and_display(outputVolumeNode)
            raise
        if savedPath is not None:
            _pointStorageAt(outputVolumeNode, savedPath)

        notes = notes + [note for note in dict.fromkeys(logged + report.notes) if note not in notes]
        if report.stream_plan is not None:
            notes.append(f"Read from disk: {report.stream_plan.describe()}.")
        if savedPath is not None:
            notes.append(f"Saved as {savedPath}")
        self.lastResult = ResampleResult(
            outputVolumeNode, report.input_geometry.dimensions, report.output_geometry.dimensions,
            report.input_geometry.spacing, report.output_geometry.spacing, method, plan.input_bytes, outputBytes,
            time.perf_counter() - started, notes, inputPath=path, savedPath=savedPath, streamPlan=report.stream_plan)
        if progress is not None:
            progress(1.0, "done")  # what it returns no longer matters: the output is complete
        return outputVolumeNode

    @staticmethod
    def _planFile(inputPath, factor, spacing, isotropic, memoryLimit, stream, method) -> bigvolume.FilePlan:
        """The core's plan (and streaming decision) for this file; also refuses missing or short data files."""
        return bigvolume.plan_file(_inputFilePath(inputPath), None if spacing is not None else factor,
                                   spacing=spacing, isotropic=isotropic, method=method, stream=stream,
                                   memory_limit=None if memoryLimit is None else _memoryLimitBytes(memoryLimit))

    @staticmethod
    def _checkFileOutputNode(outputVolumeNode, plan, path) -> None:
        if outputVolumeNode is None:
            return
        if outputVolumeNode.GetClassName() not in SUPPORTED_INPUT_CLASSES:
            raise BigVolumeError(f"output {outputVolumeNode.GetName()}: {outputVolumeNode.GetClassName()} cannot "
                                 "hold the result")
        if outputVolumeNode.IsA("vtkMRMLVectorVolumeNode") != (plan.components > 1):
            kind = f"a vector ({plan.components} components)" if plan.components > 1 else "a scalar"
            raise BigVolumeError(f"output {outputVolumeNode.GetName()} is a {outputVolumeNode.GetClassName()}, but "
                                 f"{path.name} needs {kind} volume output: choose 'Create new volume' "
                                 "(no output node) instead")

    # --- helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def _checkOutputNode(inputVolumeNode, outputVolumeNode) -> None:
        check_output_node(inputVolumeNode, outputVolumeNode)
        if outputVolumeNode is None:
            return
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
    def _fillOutputNode(outputVolumeNode, result: bigvolume.Volume, inputVolumeNode=None) -> None:
        """Copy ``result`` into the node with its exact grid. With an input node the output goes under its
        transform and looks like it; without (a file) it sits where the file says, under no transform."""
        fill_volume_node(outputVolumeNode, result, inputVolumeNode)


def _pointStorageAt(volumeNode, path: Path) -> None:
    """Let Slicer's Save dialog know where the node's voxels are (uncompressed, as written)."""
    storage = volumeNode.GetStorageNode()
    if storage is None:
        volumeNode.AddDefaultStorageNode(str(path))
        storage = volumeNode.GetStorageNode()
    if storage is not None:
        storage.SetFileName(str(path))
        storage.SetUseCompression(0)


def _inputFilePath(inputPath) -> Path:
    if inputPath is None or str(inputPath).strip() in ("", "."):  # "." is what an empty Path parameter reads back
        raise BigVolumeError("no input file selected")
    return Path(inputPath).expanduser().absolute()  # a storage node needs an absolute file name


def _fileStem(path: Path) -> str:
    """The file name without its volume suffix (two parts for .nii.gz): "scan.nii.gz" -> "scan"."""
    return path.name[:len(path.name) - len(volume_suffix(path))] or path.name


def _memoryLimitBytes(memoryLimit) -> int:
    """None: the automatic limit; a number of bytes; or a size such as "2GB"."""
    return default_memory_limit() if memoryLimit is None else memory_bytes(memoryLimit)








__all__ = ["AntiAliasedResampleLogic", "ResampleResult", "SUPPORTED_INPUT_CLASSES", "LABEL_SAFE_METHODS",
           "METHODS", "DEFAULT_METHOD", "INPUT_FILE_SUFFIXES", "SAVED_SUFFIX", "BigVolumeError", "Cancelled",
           "CLI_MODULE", "CLI_METHODS", "CLI_DEVICES"]
