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

from slicer import vtkMRMLScalarVolumeNode

# The core package `bigvolume` and `bigvolume_slicer` (what the panels share) are installed beside this file in the
# extension; run from source (the module folder in Slicer's "Additional module paths"), they are in the repository
# root. That folder goes first on sys.path: a pip-installed bigvolume must not shadow the copy bundled here.
_HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = next((folder for folder in (_HERE, os.path.dirname(_HERE))
                if os.path.isfile(os.path.join(folder, "bigvolume", "__init__.py"))), None)
sys.path[:0] = [BUNDLED] if BUNDLED and sys.path[:1] != [BUNDLED] else []

from bigvolume_slicer import (ParameterNodeGui, PanelProgress, PathFields, _, followSceneImports, limits,  # noqa: E402
                              reenterModule, rememberPaths, settleTimer, translate)

from AntiAliasedResampleLib import CLI_MODULE, DEFAULT_METHOD, METHODS, Cancelled  # noqa: E402
from AntiAliasedResampleLib import AntiAliasedResampleLogic as AntiAliasedResampleLibLogic  # noqa: E402

# Where the input comes from (the combo box shows these texts; the parameter node stores them).
FROM_SCENE = "Volume in the scene"
FROM_FILE = "File on disk (too big to load)"
# Path fields the panel keeps in the parameter node itself (bigvolume_slicer.PathFields): parameter -> widget.
PATH_FIELDS = {"inputFile": "inputFilePathLineEdit"}
# Parameters no widget shows: what the panel records in the node itself.
RECORDED_PARAMETERS = ("spacingSource",)


#
# AntiAliasedResample
#


class AntiAliasedResample(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Anti-Aliased Resample")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Utilities")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBigVolume developers"]
        self.parent.helpText = _("""
Downsample a volume without aliasing: every output voxel is a band-limited (Lanczos by default) estimate of the
input block it covers, instead of one picked voxel (moire, staircases, flickering thin structures).
The geometry is exact: output spacing = factor x input spacing, the output grid is centred on the input blocks
(nothing shifts by half a voxel), the direction is unchanged and the output stays under the input's transform.
Choose a factor (per axis, isotropic) or a target spacing. Label maps are always resampled by a label-safe method.
Works on scalar, label map and vector/RGB volumes; the input volume is never modified.
A volume file too big to load ("Input from: File on disk") is resampled from disk, a slab of slices at a time when
it would not fit within the memory limit, and only the result is loaded; it can be kept beside the input file.
""")
        self.parent.acknowledgementText = _("""
Part of the SlicerBigVolume extension. The resampling is done by its Qt-free core package <code>bigvolume</code>
(numpy, VTK and SimpleITK), also usable from plain Python and its own command line.
""")


#
# AntiAliasedResampleParameterNode
#


@parameterNodeWrapper
class AntiAliasedResampleParameterNode:
    """
    inputSource - FROM_SCENE (inputVolume) or FROM_FILE (inputFile, resampled from disk without loading it).
    inputVolume - the volume to downsample (scalar, label map or vector/RGB).
    inputFile - the volume file to downsample in file mode ("": none; kept by the panel, see PATH_FIELDS).
    factor - downsampling factor (>= 1), the same on every axis.
    isotropic - one output spacing on all axes: factor x the finest input spacing.
    useSpacing - use the target spacing (spacingI, spacingJ, spacingK in mm) instead of the factor.
    spacingSource - the input the target spacing was last started from ("file:<path>" or "volume:<node ID>"; "":
        none yet). Kept in the node, not the panel: a fresh node (a new or closed scene) starts its target spacing
        from its input, a node loaded with a scene keeps the spacing it was saved with.
    method - resampling method (a key of bigvolume.METHODS).
    threads - number of threads, 0 for all cores.
    memoryLimitGB - file mode: most memory the resampling may hold (GB, 10^9 bytes); 0: automatic.
    alwaysStream - file mode: read the file a slab at a time even if it would fit in memory.
    outputVolume - where to put the result; none: a new volume is created.
    saveBesideInput - file mode: keep the result as <input stem>_resampled.nhdr beside the input file.
    show3D - after Apply, volume-render the output (the default rendering method, transfer function from its histogram).
    beforeAfter - with show3D: input and output side by side in two 3D views with linked cameras.
    runAsCli - scene mode: run the BigVolumeResampleCLI module (own process, GPU when there is one) instead.
    """

    inputSource: Annotated[str, Choice([FROM_SCENE, FROM_FILE])] = FROM_SCENE
    inputVolume: vtkMRMLScalarVolumeNode
    inputFile: str = ""
    factor: Annotated[float, WithinRange(limits.MIN_FACTOR, limits.MAX_FACTOR)] = 2.0
    isotropic: bool = False
    useSpacing: bool = False
    spacingI: Annotated[float, WithinRange(limits.MIN_SPACING, limits.MAX_SPACING)] = 1.0
    spacingJ: Annotated[float, WithinRange(limits.MIN_SPACING, limits.MAX_SPACING)] = 1.0
    spacingK: Annotated[float, WithinRange(limits.MIN_SPACING, limits.MAX_SPACING)] = 1.0
    spacingSource: str = ""
    method: Annotated[str, Choice(list(METHODS))] = DEFAULT_METHOD
    threads: Annotated[int, WithinRange(0, 1024)] = 0
    memoryLimitGB: Annotated[float, WithinRange(0.0, 65536.0)] = 0.0
    alwaysStream: bool = False
    outputVolume: vtkMRMLScalarVolumeNode
    saveBesideInput: bool = False
    show3D: bool = False
    beforeAfter: bool = False
    runAsCli: bool = False


#
# AntiAliasedResampleWidget
#


class AntiAliasedResampleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._gui = None  # the widgets' binding to the parameter node (made in setup)
        self._paths = None
        self._progress = None  # the run state, progress bar and Cancel button (made in setup)
        self._cliNode = None  # the CLI run in progress
        self._cliOutput = None  # that run's (output node, whether it was made for the run: then removed if it fails)
        self._planTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AntiAliasedResample.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = AntiAliasedResampleLogic()
        self._gui = ParameterNodeGui(self.ui, afterBind=self._labelChoices)
        self._paths = PathFields({name: getattr(self.ui, widget) for name, widget in PATH_FIELDS.items()})
        # The plan reads the input file's header: wait until the user stops typing or turning a spin box.
        self._planTimer = settleTimer(self.updatePlan)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        followSceneImports(self)  # a fresh wrapper after each scene import

        self._progress = PanelProgress(self.ui.progressBar, self.ui.cancelButton, onChange=self._checkCanApply)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        # 0 means "automatic": show what that is on this computer.
        self.ui.memoryLimitSpinBox.specialValueText = _("automatic ({size} GB)").format(
            size=f"{self.logic.defaultMemoryLimit() / 1e9:.1f}")

        self.initializeParameterNode()

    def _labelChoices(self, parameterNode) -> None:
        """After each binding (which refills the combo box from the Choice annotation): the methods' tooltips."""
        for index, name in enumerate(METHODS):
            self.ui.methodComboBox.setItemData(index, METHODS[name], qt.Qt.ToolTipRole)

    def cleanup(self) -> None:
        if self._planTimer is not None:
            self._planTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # The widgets stay bound to the parameter node (once per node: see ParameterNodeGui). An in-process run
        # stops; a CLI run (its own process) goes on while the user is elsewhere.
        if self._progress.running and self._cliNode is None:
            self._progress.cancel()

    def onSceneStartClose(self, caller, event) -> None:
        if self._progress.running:  # the run's nodes are leaving: stop it (it leaves no node and no file)
            self.onCancelButton()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[AntiAliasedResampleParameterNode]) -> None:
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = self._gui.bind(inputParameterNode)
        self._paths.bind(self._parameterNode)
        if self._parameterNode:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _settings(self) -> dict:
        p = self._parameterNode
        spacing = (p.spacingI, p.spacingJ, p.spacingK) if p.useSpacing else None
        # A target spacing sets every axis itself: isotropic (greyed out then) goes with the factor only.
        return {"factor": p.factor, "spacing": spacing, "isotropic": p.isotropic and spacing is None}

    def _fileMode(self) -> bool:
        return bool(self._parameterNode and self._parameterNode.inputSource == FROM_FILE)

    def _fileSettings(self) -> dict:
        """What the file mode adds to _settings: memory limit (None: automatic) and streaming (None: automatic)."""
        p = self._parameterNode
        return {"memoryLimit": p.memoryLimitGB * 1e9 if p.memoryLimitGB > 0 else None,
                "stream": True if p.alwaysStream else None}

    def _showMode(self, fileMode: bool) -> None:
        for widget in (self.ui.inputLabel, self.ui.inputSelector):
            widget.visible = not fileMode
        for widget in (self.ui.inputFileLabel, self.ui.inputFilePathLineEdit, self.ui.memoryLimitLabel,
                       self.ui.memoryLimitSpinBox, self.ui.alwaysStreamLabel, self.ui.alwaysStreamCheckBox,
                       self.ui.saveBesideInputLabel, self.ui.saveBesideInputCheckBox):
            widget.visible = fileMode
        # The CLI module takes volumes from the scene; offered only where it is installed.
        self.ui.runAsCliLabel.visible = self.ui.runAsCliCheckBox.visible = self._cliOffered() and not fileMode

    def _cliOffered(self) -> bool:
        return hasattr(slicer.modules, CLI_MODULE)

    def _checkCanApply(self, caller=None, event=None) -> None:
        """What changes with every setting at once (which fields show, Apply off while running); the plan, which may
        read the input file's header, once the settings settle."""
        p = self._parameterNode
        self._paths.show()
        # A new input volume starts the target spacing. Here, not in a slot of the node selector: that slot would
        # run before the binding's own and modify the node while it still holds the previous input. (A file's
        # spacing is read from its header once the path settles: updatePlan.)
        if p and not self._fileMode() and p.inputVolume is not None:
            source = f"volume:{p.inputVolume.GetID()}"
            if source != p.spacingSource:
                p.spacingSource = source  # first: the modifications below come back here
                self._startSpacingFrom(p.inputVolume.GetSpacing())
        self._showMode(self._fileMode())
        self.ui.spacingWidget.enabled = bool(p and p.useSpacing)
        self.ui.factorSliderWidget.enabled = bool(p and not p.useSpacing)
        self.ui.isotropicCheckBox.enabled = bool(p and not p.useSpacing)
        if self._progress.running:
            self.ui.applyButton.enabled = False
        self._planTimer.start()

    def updatePlan(self) -> bool:
        """Describe the run in the plan line and enable Apply when it can run; returns whether it can."""
        self._planTimer.stop()
        p = self._parameterNode
        fileMode = self._fileMode()
        plan, reason = "", _("Select an input file.") if fileMode else _("Select an input volume.")
        try:  # invalid settings: say why instead of failing on Apply
            if p and fileMode and p.inputFile:
                reason = ""
                source = f"file:{p.inputFile}"
                if source != p.spacingSource:  # a new file: start the target spacing from its header
                    spacing = self.logic.fileGeometry(p.inputFile).spacing
                    p.spacingSource = source
                    self._startSpacingFrom(spacing)
                # The method a label map output would get decides whether the file can stream.
                method, _notes = self.logic.effectiveMethod(p.outputVolume, p.method)
                plan = self.logic.describeFilePlan(p.inputFile, method=method, **self._settings(),
                                                   **self._fileSettings())
                if p.saveBesideInput:
                    plan += "\n" + _("Kept as {path}").format(path=self.logic.savedPathFor(p.inputFile))
            elif p and not fileMode and p.inputVolume:
                reason = ""
                if p.outputVolume and p.outputVolume == p.inputVolume:
                    reason = _("Select an output volume other than the input.")
                plan = self.logic.describePlan(p.inputVolume, **self._settings())
        except Exception as error:
            reason = reason or str(error)
        self.ui.planLabel.text = reason or plan
        canApply = not reason and not self._progress.running
        self.ui.applyButton.enabled = canApply
        self.ui.applyButton.toolTip = reason or (
            _("Downsample the input file from disk and load the result.") if fileMode
            else _("Downsample the input volume."))
        return canApply

    def _startSpacingFrom(self, spacing) -> None:
        """Start the target spacing from factor x the input's spacing, a valid downsampling (never 0: tiny spacings
        keep their digits, see limits.spacingFor)."""
        if self._parameterNode is None or self._parameterNode.useSpacing:
            return
        factor = self._parameterNode.factor
        self._parameterNode.spacingI, self._parameterNode.spacingJ, self._parameterNode.spacingK = (
            limits.spacingFor(factor, s) for s in spacing)

    def onCancelButton(self) -> None:
        self._progress.cancel()
        if self._cliNode:  # a CLI run (own process) never calls the progress callback: stop it through its node
            self._cliNode.Cancel()

    def _startCli(self) -> None:
        """Apply through the CLI module: the Logic makes its parameters (and the output node), Slicer runs it in
        its own process and this panel follows its node's progress and status."""
        p = self._parameterNode
        self.ui.resultLabel.text = ""
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not start the CLI module."), waitCursor=True):
                created = p.outputVolume is None
                params = self.logic.cliParameters(p.inputVolume, p.outputVolume, method=p.method, **self._settings())
                p.outputVolume = params["outputVolume"]
                self._cliOutput = (params["outputVolume"], created)
                self._progress.start()
                self._cliNode = slicer.cli.run(getattr(slicer.modules, CLI_MODULE), None, params,
                                               wait_for_completion=False)
                self.addObserver(self._cliNode, vtk.vtkCommand.ModifiedEvent, self._onCliModified)
        except Exception as error:  # already shown by tryWithErrorDisplay
            self.ui.resultLabel.text = f"Failed: {error}"
            if self._cliNode is not None:
                self.removeObserver(self._cliNode, vtk.vtkCommand.ModifiedEvent, self._onCliModified)
                self._removeCliNode(self._cliNode)
                self._cliNode = None
            self._discardCliOutput()
            self._progress.stop()

    def _onCliModified(self, cliNode, event) -> None:
        self.ui.progressBar.value = cliNode.GetProgress()
        if cliNode.IsBusy():
            return
        self.removeObserver(cliNode, vtk.vtkCommand.ModifiedEvent, self._onCliModified)
        self._cliNode = None
        self.ui.resultLabel.text = self.logic.cliResultText(
            cliNode.GetStatusString(), cliNode.GetParameterAsString("deviceUsed"),
            cliNode.GetParameterAsString("summary"), cliNode.GetErrorText())
        self._progress.stop()
        if cliNode.GetStatus() == cliNode.Completed:
            outputNode, self._cliOutput = self._cliOutput[0], None
            self._showOutput(outputNode)
        else:  # cancelled or failed: the node made for it holds nothing
            self._discardCliOutput()
        # Its output read (or the run failed or was cancelled), the CLI node has done its part: it goes, or each run
        # would leave one in the scene, saved with it. Once its own event is over, not from inside it.
        qt.QTimer.singleShot(0, lambda: self._removeCliNode(cliNode))

    def _discardCliOutput(self) -> None:
        """Remove the output node made for a CLI run that did not complete (not a node the user chose)."""
        (outputNode, created), self._cliOutput = self._cliOutput or (None, False), None
        if not created:
            return
        if self._parameterNode is not None and self._parameterNode.outputVolume is outputNode:
            self._parameterNode.outputVolume = None
        self.logic.discardCliOutput(outputNode)

    @staticmethod
    def _removeCliNode(cliNode) -> None:
        scene = cliNode.GetScene()
        if scene is not None:  # (a scene close may have removed it already)
            scene.RemoveNode(cliNode)

    def onApplyButton(self) -> None:
        p = self._parameterNode
        # Refused inside another run; the settings are checked now, not when their plan last settled.
        if self._progress.running or PanelProgress.refused(self.ui.resultLabel) or not self.updatePlan():
            return
        if p.runAsCli and self._cliOffered() and not self._fileMode():
            self._startCli()
            return
        with self._progress.task(self.ui.resultLabel, _("Resampling failed.")):
            outputNode = self._run()
            p.outputVolume = outputNode
            self.ui.resultLabel.text = self.logic.lastResult.summary()
            self._showOutput(outputNode)

    def _showOutput(self, outputNode) -> None:
        """A run's output in the slice views (a label map as the label layer) and, with "3D preview", rendered."""
        p = self._parameterNode
        if outputNode is None:
            return
        if outputNode.IsA("vtkMRMLLabelMapVolumeNode"):
            slicer.util.setSliceViewerLayers(label=outputNode)
        else:
            slicer.util.setSliceViewerLayers(background=outputNode, fit=True)
        if p is not None and p.show3D:
            self._show3D(outputNode, p.inputVolume if p.beforeAfter and not self._fileMode() else None)

    def _show3D(self, outputNode, inputNode=None) -> None:
        """Volume-render the output (the Logic makes the display nodes); before/after shows the Dual 3D layout with
        the input left and the output right. Then fit each 3D view's camera to what it shows."""
        self.logic.showPreview(outputNode, inputNode, renderingLogic=slicer.modules.volumerendering.logic())
        layoutManager = slicer.app.layoutManager()
        for index in range(layoutManager.threeDViewCount):
            layoutManager.threeDWidget(index).threeDView().resetFocalPoint()

    def _run(self):
        p = self._parameterNode
        settings = dict(method=p.method, threads=p.threads or None, progress=self._progress, **self._settings())
        if not self._fileMode():
            return self.logic.process(p.inputVolume, p.outputVolume, **settings)
        outputNode = self.logic.processFile(p.inputFile, p.outputVolume, saveBesideInput=p.saveBesideInput,
                                            **settings, **self._fileSettings())
        rememberPaths(self.ui.inputFilePathLineEdit)
        return outputNode


#
# AntiAliasedResampleLogic
#


class AntiAliasedResampleLogic(ScriptedLoadableModuleLogic, AntiAliasedResampleLibLogic):
    """The Qt-free logic of AntiAliasedResampleLib (which does the work; see its ``process``) plus the module's
    parameter node. Usable from the Python console:

        logic = slicer.util.getModuleLogic("AntiAliasedResample")
        outputNode = logic.process(getNode("MRHead"), factor=2)
        outputNode = logic.processFile("/data/huge.nhdr", factor=4, memoryLimit="8GB", saveBesideInput=True)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        AntiAliasedResampleLibLogic.__init__(self)

    def processFile(self, inputPath, outputVolumeNode=None, *args, scene=None, tempFolder=None, **kwargs):
        """AntiAliasedResampleLib's processFile, loading into Slicer's scene through Slicer's temporary folder
        unless told otherwise."""
        if scene is None and outputVolumeNode is None:
            scene = slicer.mrmlScene
        if tempFolder is None:
            tempFolder = slicer.app.temporaryPath
        return AntiAliasedResampleLibLogic.processFile(self, inputPath, outputVolumeNode, *args, scene=scene,
                                                       tempFolder=tempFolder, **kwargs)

    def getParameterNode(self):
        return AntiAliasedResampleParameterNode(super().getParameterNode())


#
# AntiAliasedResampleTest
#


class AntiAliasedResampleTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PanelSettingsSurviveLeavingTheModule()
        self.setUp()
        self.test_ScalarGeometry()
        self.setUp()
        self.test_CancelLeavesNothing()
        self.setUp()
        self.test_FileModeStreamsAndSaves()

    def _makeVolume(self):
        import numpy as np

        array = np.zeros((20, 30, 40), dtype=np.int16)
        array[5:15, 10:20, 10:30] = 1000
        node = slicer.util.addVolumeFromArray(array, name="AntiAliasedResampleTestInput")
        node.SetSpacing(0.5, 0.75, 2.0)
        node.SetOrigin(-10.0, 20.0, 5.0)
        return node

    def test_PanelSettingsSurviveLeavingTheModule(self):
        """What a user does: non-default settings, another module and back, Apply; the result used the settings."""
        self.delayDisplay("Starting the panel test")
        inputNode = self._makeVolume()
        widget = reenterModule("AntiAliasedResample")
        widget.ui.inputSourceComboBox.currentIndex = 0  # a volume in the scene
        widget.ui.inputSelector.setCurrentNode(inputNode)
        widget.ui.methodComboBox.currentIndex = list(METHODS).index("max")
        widget.ui.factorSliderWidget.value = 4.0
        widget = reenterModule("AntiAliasedResample")
        self.assertEqual(widget.ui.methodComboBox.currentIndex, list(METHODS).index("max"))
        widget.updatePlan()  # what the settle timer does after a pause
        widget.ui.applyButton.click()
        result = widget.logic.lastResult
        self.assertIsNotNone(result, widget.ui.resultLabel.text)
        self.assertEqual(result.method, "max")
        self.assertEqual(result.outputNode.GetImageData().GetDimensions(), (10, 8, 5))
        for actual, expected in zip(result.outputNode.GetSpacing(), (2.0, 3.0, 8.0)):
            self.assertAlmostEqual(actual, expected, places=9)
        self.delayDisplay("Panel test passed")

    def test_ScalarGeometry(self):
        self.delayDisplay("Starting the geometry test")
        inputNode = self._makeVolume()
        logic = AntiAliasedResampleLogic()
        outputNode = logic.process(inputNode, factor=2.0)
        self.assertEqual(outputNode.GetImageData().GetDimensions(), (20, 15, 10))
        for actual, expected in zip(outputNode.GetSpacing(), (1.0, 1.5, 4.0)):
            self.assertAlmostEqual(actual, expected, places=9)
        # Block-centred: origin + (factor - 1) / 2 * spacing along each axis (IJK = RAS axes here).
        for actual, expected in zip(outputNode.GetOrigin(), (-9.75, 20.375, 6.0)):
            self.assertAlmostEqual(actual, expected, places=9)
        self.assertEqual(outputNode.GetImageData().GetScalarType(), inputNode.GetImageData().GetScalarType())
        self.delayDisplay("Geometry test passed")

    def test_CancelLeavesNothing(self):
        self.delayDisplay("Starting the cancel test")
        inputNode = self._makeVolume()
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(Cancelled):
            AntiAliasedResampleLogic().process(inputNode, factor=2.0, progress=lambda fraction, message: False)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel test passed")

    def test_FileModeStreamsAndSaves(self):
        import shutil
        import tempfile

        import numpy as np

        import bigvolume

        self.delayDisplay("Starting the input-file test")
        folder = tempfile.mkdtemp(dir=slicer.app.temporaryPath)
        try:
            array = np.zeros((20, 30, 40), dtype=np.int16)
            array[5:15, 10:20, 10:30] = 1000
            path = bigvolume.write_volume(bigvolume.Volume.from_array(array, spacing=(0.5, 0.75, 2.0)),
                                          os.path.join(folder, "big.nhdr"))
            logic = AntiAliasedResampleLogic()
            outputNode = logic.processFile(path, factor=2.0, memoryLimit=1, saveBesideInput=True)  # 1 byte: streams
            self.assertEqual(outputNode.GetImageData().GetDimensions(), (20, 15, 10))
            self.assertTrue(logic.lastResult.streamed)
            self.assertEqual(sorted(os.listdir(folder)),
                             ["big.nhdr", "big.raw", "big_resampled.nhdr", "big_resampled.raw"])
            self.assertTrue(os.path.samefile(outputNode.GetStorageNode().GetFileName(),
                                             os.path.join(folder, "big_resampled.nhdr")))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Input-file test passed")
