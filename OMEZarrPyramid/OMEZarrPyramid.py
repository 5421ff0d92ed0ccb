import os
import sys
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode

# The core package `bigvolume` and `bigvolume_slicer` (what the panels share) are installed beside this file in the
# extension; run from source (the module folder in Slicer's "Additional module paths"), they are in the repository
# root. That folder goes first on sys.path: a pip-installed bigvolume must not shadow the copy bundled here.
_HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = next((folder for folder in (_HERE, os.path.dirname(_HERE))
                if os.path.isfile(os.path.join(folder, "bigvolume", "__init__.py"))), None)
sys.path[:0] = [BUNDLED] if BUNDLED and sys.path[:1] != [BUNDLED] else []

from bigvolume_slicer import (ParameterNodeGui, PanelProgress, PathFields, ScratchFolders, _, limits,  # noqa: E402
                              followSceneImports, RoiFollower, reenterModule, rememberPaths, settleTimer, translate)

from OMEZarrPyramidLib import FIT, PYRAMID_METHODS, PYRAMID_VERSIONS, Cancelled  # noqa: E402
from OMEZarrPyramidLib import OMEZarrPyramidLogic as OMEZarrPyramidLibLogic  # noqa: E402


#
# OMEZarrPyramid
#


class OMEZarrPyramid(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("OME-Zarr Pyramid")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Utilities")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBigVolume developers"]
        self.parent.helpText = _("""
Create a multiscale OME-Zarr pyramid (NGFF 0.5 or 0.4) from a volume file, an image stack, a Zarr store or a loaded
volume: anti-aliased levels written chunk by chunk on Dask, in bounded memory, so inputs larger than this computer's
memory go through. Open a pyramid of any size (this one, or one written by <code>bigvolume pyramid</code>):
load the finest level that fits a memory budget to look at the whole, place a Markups ROI on it, then load the
ROI's region at full resolution (or at a chosen level). Only the chunks the region touches are read. The geometry
(spacing, origin, orientation) comes from the pyramid's metadata, in LPS as OME-Zarr viewers expect.
Needs the zarr package (version 3, Python 3.11 or newer): <code>pip install zarr</code> in Slicer's Python.
""")
        self.parent.acknowledgementText = _("""
Part of the SlicerBigVolume extension. Reading is done by its Qt-free core package <code>bigvolume</code>, also usable
from plain Python (<code>bigvolume.read_volume("x.ome.zarr", level=K)</code>) and its own command line.
""")


#
# OMEZarrPyramidParameterNode
#


# Path fields the panel keeps in the parameter node itself (bigvolume_slicer.PathFields): parameter -> widget.
PATH_FIELDS = {"pyramidPath": "pyramidPathLineEdit", "createInputPath": "createInputPathLineEdit",
               "createOutputPath": "createOutputPathLineEdit"}
# The level combo boxes' values: text, as a combo box holds it (Choice needs one type).
LEVELS_OFFERED = [FIT] + [str(level) for level in range(limits.MAX_PYRAMID_LEVELS)]
ROI_LEVELS_OFFERED = [str(level) for level in range(limits.MAX_PYRAMID_LEVELS)]
# What "Create a pyramid" reads: a file, stack or store on disk, or a volume of the scene.
CREATE_FROM = ["file", "volume"]
CREATE_FROM_LABELS = {"file": "A file, stack or store on disk", "volume": "A volume of the scene"}


def levelLabel(level: str) -> str:
    if level == FIT:
        return _("Finest that fits the budget")
    return _("Level 0 (full resolution)") if level == "0" else _("Level {level}").format(level=level)


@parameterNodeWrapper
class OMEZarrPyramidParameterNode:
    """
    pyramidPath - the OME-Zarr store (its folder; "": none; kept by the panel, see PATH_FIELDS).
    memoryBudgetGB - the most a loaded level or ROI may take, in GB (0: a quarter of this computer's memory).
    level - the level "Load level" reads: "fit" (the finest that fits the budget) or "0", "1", ...
    roi - the Markups ROI whose region "Load ROI" reads.
    roiLevel - the level "Load ROI" reads: "0" (full resolution), "1", ...
    createFrom - what "Create pyramid" reads: "file" (createInputPath) or "volume" (createInputVolume).
    createInputPath - a volume file, DICOM folder, image stack or Zarr store ("": none; kept by the panel).
    createInputVolume - a scalar volume of the scene.
    createOutputPath - the OME-Zarr store to write ("": none; kept by the panel).
    createLevels - levels in all (0: until the coarsest fits one chunk).
    createChunks - the chunks' edge in voxels.
    createMethod - how a level is computed from the one before (lanczos: anti-aliased).
    createVersion - OME-Zarr "0.5" (Zarr v3) or "0.4" (Zarr v2).
    stackVoxelSizeUm - an image stack's voxel size in micrometres (0: the slices' own pixel size).
    createOverwrite - replace an existing output store.
    """

    pyramidPath: str = ""
    memoryBudgetGB: Annotated[float, WithinRange(0.0, limits.MAX_BUDGET_GB)] = 0.0
    level: Annotated[str, Choice(LEVELS_OFFERED)] = FIT
    roi: vtkMRMLMarkupsROINode
    roiLevel: Annotated[str, Choice(ROI_LEVELS_OFFERED)] = "0"
    createFrom: Annotated[str, Choice(CREATE_FROM)] = "file"
    createInputPath: str = ""
    createInputVolume: vtkMRMLScalarVolumeNode
    createOutputPath: str = ""
    createLevels: Annotated[int, WithinRange(0, limits.MAX_PYRAMID_LEVELS)] = 0
    createChunks: Annotated[int, WithinRange(limits.MIN_CHUNKS, limits.MAX_CHUNKS)] = 128
    createMethod: Annotated[str, Choice(PYRAMID_METHODS)] = "lanczos"
    createVersion: Annotated[str, Choice(PYRAMID_VERSIONS)] = "0.5"
    stackVoxelSizeUm: Annotated[float, WithinRange(0.0, limits.MAX_SPACING)] = 0.0
    createOverwrite: bool = False


#
# OMEZarrPyramidWidget
#


class OMEZarrPyramidWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._gui = None  # the widgets' binding to the parameter node (made in setup)
        self._paths = None
        self._progress = None  # the run state, progress bar and Cancel button (made in setup)
        self._infoTimer = None
        self._roi = None  # follows the chosen ROI (made in setup)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OMEZarrPyramid.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = OMEZarrPyramidLogic()
        self._gui = ParameterNodeGui(self.ui, afterBind=self._labelChoices)
        self._paths = PathFields({name: getattr(self.ui, widget) for name, widget in PATH_FIELDS.items()})
        self._roi = RoiFollower(self, self.onRoiModified)
        # Opening a pyramid reads its metadata: wait until the user stops typing or dragging the ROI.
        self._infoTimer = settleTimer(self.updateInfo)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        followSceneImports(self)  # a fresh wrapper after each scene import

        self.ui.loadLevelButton.connect("clicked(bool)", self.onLoadLevelButton)
        self.ui.loadRoiButton.connect("clicked(bool)", self.onLoadRoiButton)
        self.ui.createButton.connect("clicked(bool)", self.onCreateButton)
        # The field's Browse opens a file dialog (a volume file, a slice, a DICOM file); folders have their own.
        self.ui.createInputFolderButton.connect("clicked(bool)", self.onChooseInputFolder)
        self._progress = PanelProgress(self.ui.progressBar, self.ui.cancelButton, onChange=self.onParameterNodeModified)
        self.ui.cancelButton.connect("clicked(bool)", self._progress.cancel)
        # 0 means "automatic": show what that is on this computer.
        self.ui.memoryBudgetSpinBox.specialValueText = _("automatic ({size} GB)").format(
            size=f"{self.logic.budgetBytes() / 1e9:.1f}")

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._infoTimer is not None:
            self._infoTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # The widgets stay bound to the parameter node (once per node: see ParameterNodeGui); a load stops.
        if self._progress.running:
            self._progress.cancel()

    def onSceneStartClose(self, caller, event) -> None:
        if self._progress.running:  # the load's node is leaving: stop it (it leaves no node behind)
            self._progress.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[OMEZarrPyramidParameterNode]) -> None:
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = self._gui.bind(inputParameterNode)
        self._paths.bind(self._parameterNode)
        if self._parameterNode:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def _labelChoices(self, parameterNode) -> None:
        """Readable labels after each binding (connectGui fills the combo boxes with the Choice values)."""
        for comboBox, values in ((self.ui.levelComboBox, LEVELS_OFFERED), (self.ui.roiLevelComboBox,
                                                                          ROI_LEVELS_OFFERED)):
            for index, value in enumerate(values):
                comboBox.setItemText(index, levelLabel(value))
        for index, value in enumerate(CREATE_FROM):
            self.ui.createFromComboBox.setItemText(index, _(CREATE_FROM_LABELS[value]))

    def _budget(self) -> int:
        return self.logic.budgetBytes(self._parameterNode.memoryBudgetGB)

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:  # (a scene close: its ROI is let go, not kept alive and observed until the next enter)
            self._roi.follow(None)
            return
        self._paths.show()
        self._roi.follow(p.roi)  # a moved or resized ROI changes what "Load ROI" reads
        running = self._progress.running
        self.ui.loadLevelButton.enabled = bool(p.pyramidPath) and not running
        self.ui.loadRoiButton.enabled = bool(p.pyramidPath and p.roi) and not running
        self.ui.loadRoiButton.toolTip = (_("Load the ROI's region at the ROI level.") if p.roi
                                         else _("Select or place a ROI first."))
        fromFile = p.createFrom == "file"
        for widget in (self.ui.createInputPathLineEdit, self.ui.createInputFolderButton, self.ui.createInputPathLabel,
                       self.ui.stackVoxelSizeSpinBox, self.ui.stackVoxelSizeLabel):
            widget.enabled = fromFile
        self.ui.createInputVolumeSelector.enabled = self.ui.createInputVolumeLabel.enabled = not fromFile
        hasInput = bool(p.createInputPath) if fromFile else p.createInputVolume is not None
        self.ui.createButton.enabled = hasInput and bool(p.createOutputPath) and not running
        if not running:
            self._infoTimer.start()

    def onRoiModified(self, caller=None, event=None) -> None:
        if not self._progress.running:
            self._infoTimer.start()

    def updateInfo(self) -> None:
        """The pyramid's levels, the one Load level reads, and what the ROI covers."""
        if self._infoTimer is not None:
            self._infoTimer.stop()
        p = self._parameterNode
        if p is None or self._progress.running:
            return
        if not p.pyramidPath:
            self.ui.infoLabel.text = _("Choose an OME-Zarr store (its folder).")
            return
        try:
            pyramid = self.logic.openPyramid(p.pyramidPath)
            self.ui.infoLabel.text = self.logic.describe(pyramid, self._budget(), p.level, p.roi, int(p.roiLevel))
        except Exception as error:  # a half-typed path, a store being written: said, not raised from a timer
            self.ui.infoLabel.text = str(error)

    # --- creating -----------------------------------------------------------------------------------------------
    def onChooseInputFolder(self) -> None:
        """A stack's, a DICOM series' or a Zarr store's folder as the input (ctkPathLineEdit's Browse opens one
        dialog, for files or for folders, not both)."""
        folder = qt.QFileDialog.getExistingDirectory(
            self.parent, _("Input folder: an image stack, a DICOM series or an OME-Zarr store"),
            self.ui.createInputPathLineEdit.currentPath)
        if folder:
            self.ui.createInputPathLineEdit.currentPath = folder

    def onCreateButton(self) -> None:
        p = self._parameterNode
        if self._progress.running or PanelProgress.refused(self.ui.statusLabel):
            return
        with self._progress.task(self.ui.statusLabel, _("Creating the pyramid failed.")):
            source = p.createInputPath if p.createFrom == "file" else p.createInputVolume
            report = self.logic.createPyramid(
                source, p.createOutputPath, levels=p.createLevels, chunks=p.createChunks, method=p.createMethod,
                omeZarrVersion=p.createVersion, memoryBudgetBytes=self._budget(),
                stackVoxelSize=p.stackVoxelSizeUm if p.createFrom == "file" else None,
                overwrite=p.createOverwrite, progress=self._progress)
            self.ui.statusLabel.text = "\n".join([report.summary()] + list(report.notes))
            rememberPaths(*([self.ui.createInputPathLineEdit] if p.createFrom == "file" else []),
                          self.ui.createOutputPathLineEdit)
            # The next step is to look at it: the new store becomes the one the sections below open.
            p.pyramidPath = str(report.output_path)

    # --- loading ------------------------------------------------------------------------------------------------
    def onLoadLevelButton(self) -> None:
        p = self._parameterNode
        if self._progress.running or PanelProgress.refused(self.ui.statusLabel):  # never inside another run
            return
        with self._progress.task(self.ui.statusLabel, _("Loading the pyramid failed.")):
            node = self.logic.loadLevel(p.pyramidPath, p.level, self._budget(), scene=slicer.mrmlScene,
                                        progress=self._progress)
            self.ui.statusLabel.text = self.logic.lastResult.summary()
            rememberPaths(self.ui.pyramidPathLineEdit)
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    def onLoadRoiButton(self) -> None:
        p = self._parameterNode
        if self._progress.running or PanelProgress.refused(self.ui.statusLabel):
            return
        with self._progress.task(self.ui.statusLabel, _("Loading the ROI failed.")):
            node = self.logic.loadRoi(p.pyramidPath, p.roi, int(p.roiLevel), self._budget(), progress=self._progress)
            self.ui.statusLabel.text = self.logic.lastResult.summary()
            rememberPaths(self.ui.pyramidPathLineEdit)
            slicer.util.setSliceViewerLayers(background=node, fit=True)


#
# OMEZarrPyramidLogic
#


class OMEZarrPyramidLogic(ScriptedLoadableModuleLogic, OMEZarrPyramidLibLogic):
    """The Qt-free logic of OMEZarrPyramidLib (which does the work; see its ``loadLevel`` and ``loadRoi``) plus the
    module's parameter node. Usable from the Python console:

        logic = slicer.util.getModuleLogic("OMEZarrPyramid")
        overview = logic.loadLevel("/data/scan.ome.zarr", budgetBytes=2e9, scene=slicer.mrmlScene)
        detail = logic.loadRoi("/data/scan.ome.zarr", getNode("R"), level=0)
        print(logic.lastResult.summary())
        report = logic.createPyramid("/data/slices", "/data/scan.ome.zarr", stackVoxelSize=10.0)  # micrometres
        print(report.summary())
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        OMEZarrPyramidLibLogic.__init__(self)

    def getParameterNode(self):
        return OMEZarrPyramidParameterNode(super().getParameterNode())


#
# OMEZarrPyramidTest
#


class OMEZarrPyramidTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        try:
            import zarr  # noqa: F401
        except ImportError:
            self.delayDisplay("zarr is not installed in this Python: nothing to test")
            return
        with ScratchFolders("OMEZarrPyramidTest-", slicer.app.temporaryPath) as self._scratch:
            self.setUp()
            self.test_PanelSettingsSurviveLeavingTheModule()
            self.setUp()
            self.test_OverviewThenRoi()
            self.setUp()
            self.test_CancelLeavesNothing()
            self.setUp()
            self.test_CreateFromVolume()

    def _makePyramid(self):
        """A small anisotropic pyramid (levels 0, x3, x9) with an origin and a direction, in a temporary folder."""
        import numpy as np

        from bigvolume import Geometry
        from bigvolume.slicer import write_ome_zarr

        rng = np.random.default_rng(1)
        array = rng.integers(0, 4000, (30, 36, 40), dtype=np.uint16)
        geometry = Geometry((40, 36, 30), (0.4, 0.7, 1.5), (12.5, -30.25, 7.0), np.diag([1.0, -1.0, 1.0]))
        folder = self._scratch.new()
        return write_ome_zarr(os.path.join(folder, "test.ome.zarr"), array, geometry, factors=(3, 9)), array, geometry

    def test_PanelSettingsSurviveLeavingTheModule(self):
        """What a user does: a pyramid, a budget that excludes level 0, another module and back, Load."""
        self.delayDisplay("Starting the panel test")
        path, array, geometry = self._makePyramid()
        widget = reenterModule("OMEZarrPyramid")
        widget.ui.pyramidPathLineEdit.currentPath = str(path)
        widget.ui.memoryBudgetSpinBox.value = (array.nbytes - 1) / 1e9
        widget = reenterModule("OMEZarrPyramid")
        widget.ui.loadLevelButton.click()
        result = widget.logic.lastResult
        self.assertIsNotNone(result, widget.ui.statusLabel.text)
        self.assertEqual(result.level, 1)  # the finest that fits a budget just below level 0
        self.assertEqual(widget._parameterNode.pyramidPath, str(path))
        self.delayDisplay("Panel test passed")

    def test_OverviewThenRoi(self):
        import numpy as np

        self.delayDisplay("Starting the overview and ROI test")
        path, array, geometry = self._makePyramid()
        logic = OMEZarrPyramidLogic()
        overview = logic.loadLevel(path, "2", 10**9, scene=slicer.mrmlScene)
        self.assertEqual(slicer.util.arrayFromVolume(overview).shape, geometry.downsampled(9).shape)
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
        ras = geometry.ijk_to_ras()
        low, high = ras[:3, :3] @ np.array([9.6, 4.6, 2.6]) + ras[:3, 3], ras[:3, :3] @ np.array(
            [20.4, 15.4, 8.4]) + ras[:3, 3]
        roi.SetCenter(*((low + high) / 2))
        roi.SetSize(*np.abs(high - low))
        detail = logic.loadRoi(path, roi, 0, 10**9)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(detail), array[3:9, 5:16, 10:21]))
        self.delayDisplay("Overview and ROI test passed")

    def test_CancelLeavesNothing(self):
        self.delayDisplay("Starting the cancel test")
        path, _, _ = self._makePyramid()
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(Cancelled):
            OMEZarrPyramidLogic().loadLevel(path, "0", 10**9, scene=slicer.mrmlScene,
                                            progress=lambda fraction, message: False)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel test passed")

    def test_CreateFromVolume(self):
        """A volume of the scene written as a pyramid, then its level 0 loaded back: same voxels, same grid."""
        import numpy as np

        self.delayDisplay("Starting the create test")
        _, array, _ = self._makePyramid()
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "source")
        slicer.util.updateVolumeFromArray(node, array)
        node.SetSpacing(0.4, 0.7, 1.5)
        node.SetOrigin(-12.5, 30.25, 7.0)
        logic = OMEZarrPyramidLogic()
        output = os.path.join(self._scratch.new(), "created.ome.zarr")
        report = logic.createPyramid(node, output, chunks=16)
        self.assertGreaterEqual(len(report.levels), 2)
        loaded = logic.loadLevel(output, "0", 10**9, scene=slicer.mrmlScene)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(loaded), array))
        self.assertTrue(np.allclose(loaded.GetOrigin(), node.GetOrigin()))
        self.assertTrue(np.allclose(loaded.GetSpacing(), node.GetSpacing()))
        self.delayDisplay("Create test passed")
