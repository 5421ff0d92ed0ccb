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

from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode

# The core package `bigvolume` and `bigvolume_slicer` (what the panels share) are installed beside this file in the
# extension; run from source (the module folder in Slicer's "Additional module paths"), they are in the repository
# root. That folder goes first on sys.path: a pip-installed bigvolume must not shadow the copy bundled here.
_HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = next((folder for folder in (_HERE, os.path.dirname(_HERE))
                if os.path.isfile(os.path.join(folder, "bigvolume", "__init__.py"))), None)
sys.path[:0] = [BUNDLED] if BUNDLED and sys.path[:1] != [BUNDLED] else []

from bigvolume_slicer import (ParameterNodeGui, PanelProgress, _, followSceneImports, limits,  # noqa: E402
                              reenterModule, settleTimer, translate)

from HazeRemovalLib import (AIR_CHOICES, AUTO, BITS_CHOICES, DEFAULT_DILATE, FILL_CHOICES,  # noqa: E402
                            LEVEL_CHOICES, Cancelled)
from HazeRemovalLib import HazeRemovalLogic as HazeRemovalLibLogic  # noqa: E402


#
# HazeRemoval
#


class HazeRemoval(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Haze Removal")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Utilities")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBigVolume developers"]
        self.parent.helpText = _("""
Set the noisy air ("haze") around a head or specimen to one value, without touching the object, so that the volume
compresses: random noise in the air costs most of a compressed file. A threshold separates dark air from the object:
level "auto" (the default) classifies a denoised copy and sets the threshold above the noise of the air (CT, noisy
backgrounds); levels 1-5 are MRIcroGL's Remove Haze multi-level Otsu thresholds on the voxels themselves (5 removes
the least). By default only dark voxels connected to the volume border are air, so dark cavities inside the object
stay ("Air: all" takes every dark voxel). The object is grown by the dilation so partial-volume edges survive
(with auto, only over voxels brighter than the air). The preview and the result say when little or nothing would be
removed, and why.
"Preview mask" shows the haze as a label map over the input before anything is changed; Apply writes a new volume
(the input is never modified) and reports the voxels changed and the compressed size before and after.
Optionally the result is reduced to 8 or 16 bits through a robust intensity window.
""")
        self.parent.acknowledgementText = _("""
Part of the SlicerBigVolume extension. The haze removal is done by its Qt-free core package <code>bigvolume</code>
(numpy, VTK and SimpleITK), also usable from plain Python and its own command line (<code>bigvolume dehaze</code>).
The levels follow MRIcroGL's Remove Haze (Chris Rorden).
""")


#
# HazeRemovalParameterNode
#


# The level combo box's values: "auto", then "1" .. "5" (Choice needs one type; the core reads "5" as 5).
LEVELS_OFFERED = [str(level) for level in LEVEL_CHOICES]


def levelHint(level: str) -> str:
    """What a level of the combo box means (LEVEL_CHOICES is keyed by "auto" and the integers 1-5)."""
    return LEVEL_CHOICES.get(level if level == AUTO else int(level), "")


@parameterNodeWrapper
class HazeRemovalParameterNode:
    """
    inputVolume - the grayscale volume to remove the haze from (never modified).
    level - "auto" (the default: a denoised copy, the threshold above the air's noise) or "1"-"5", MRIcroGL's levels
        (see LEVEL_CHOICES: how many Otsu classes, how many of them are air); text, as a combo box holds it.
    air - "border" (dark voxels connected to the volume border) or "all" (every dark voxel).
    dilate - voxels the object mask is grown by.
    largestOnly - keep only the largest connected object.
    close - close gaps in the object up to this many voxels (0: off).
    fillMode - "minimum" (the image minimum) or "value" (fillValue).
    fillValue - what the haze becomes in "value" mode.
    bits - "keep", "8" or "16": reduce the precision after the haze removal.
    maskVolume - the label map the preview fills; none: a new one is created.
    outputVolume - where to put the result; none: a new volume is created.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    level: Annotated[str, Choice(LEVELS_OFFERED)] = AUTO
    air: Annotated[str, Choice(list(AIR_CHOICES))] = "border"
    dilate: Annotated[int, WithinRange(0, limits.MAX_RADIUS)] = DEFAULT_DILATE
    largestOnly: bool = False
    close: Annotated[int, WithinRange(0, limits.MAX_RADIUS)] = 0
    fillMode: Annotated[str, Choice(list(FILL_CHOICES))] = "minimum"
    fillValue: Annotated[float, WithinRange(-1000000000.0, 1000000000.0)] = 0.0
    bits: Annotated[str, Choice(list(BITS_CHOICES))] = "keep"
    maskVolume: vtkMRMLLabelMapVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode


#
# HazeRemovalWidget
#


class HazeRemovalWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._gui = None  # the widgets' binding to the parameter node (made in setup)
        self._progress = None  # the run state, progress bar and Cancel button (made in setup)
        self._previewShown = False     # once previewed, a change of settings updates the mask
        self._previewedSettings = None
        self._previewTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HazeRemoval.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = HazeRemovalLogic()
        self._gui = ParameterNodeGui(self.ui, afterBind=self._labelChoices)

        # A mask takes a moment on big volumes: wait until the user stops turning a spin box.
        self._previewTimer = settleTimer(self.updatePreview)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        followSceneImports(self)  # a fresh wrapper after each scene import

        self.ui.previewButton.connect("clicked(bool)", self.onPreviewButton)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self._progress = PanelProgress(self.ui.progressBar, self.ui.cancelButton, onChange=self.onParameterNodeModified)
        self.ui.cancelButton.connect("clicked(bool)", self._progress.cancel)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._previewTimer is not None:
            self._previewTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # The widgets stay bound to the parameter node (once per node: see ParameterNodeGui); a run stops.
        if self._progress.running:
            self._progress.cancel()

    def onSceneStartClose(self, caller, event) -> None:
        if self._progress.running:  # the run's nodes are leaving: stop it (it leaves no node behind)
            self._progress.cancel()
        self.setParameterNode(None)
        self._previewShown = False

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            # The first grayscale volume (label maps are scalar volume nodes too, but have no haze).
            for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
                if node.GetClassName() == "vtkMRMLScalarVolumeNode":
                    self._parameterNode.inputVolume = node
                    break

    def setParameterNode(self, inputParameterNode: Optional[HazeRemovalParameterNode]) -> None:
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = self._gui.bind(inputParameterNode)
        if self._parameterNode:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def _labelChoices(self, parameterNode) -> None:
        """Readable labels after each binding: connectGui fills the combo boxes with the Choice values (and reads
        them by index). The levels keep their short names, with what each means as its tooltip."""
        for comboBox, labels in ((self.ui.airComboBox, AIR_CHOICES), (self.ui.fillModeComboBox, FILL_CHOICES),
                                 (self.ui.bitsComboBox, BITS_CHOICES)):
            for index, value in enumerate(labels):
                comboBox.setItemText(index, _(labels[value]))
        for index, level in enumerate(LEVELS_OFFERED):
            self.ui.levelComboBox.setItemText(index, _("auto") if level == AUTO else level)
            self.ui.levelComboBox.setItemData(index, _(levelHint(level)), qt.Qt.ToolTipRole)

    # --- settings -----------------------------------------------------------------------------------------------
    def _settings(self) -> dict:
        p = self._parameterNode
        return {"level": p.level, "air": p.air, "dilate": p.dilate, "largestOnly": p.largestOnly, "close": p.close,
                "fill": "min" if p.fillMode == "minimum" else p.fillValue}

    def _maskSettings(self) -> tuple:
        """What the mask depends on (not the fill, the precision or the nodes it goes into)."""
        p = self._parameterNode
        settings = self._settings()
        del settings["fill"]
        return (p.inputVolume.GetID() if p.inputVolume else None,) + tuple(settings.values())

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        self.ui.levelHintLabel.text = _(levelHint(p.level))
        self.ui.fillValueSpinBox.enabled = p.fillMode == "value"
        reason = ""
        if not p.inputVolume:
            reason = _("Select an input volume.")
        elif p.outputVolume and p.outputVolume == p.inputVolume:
            reason = _("Select an output volume other than the input.")
        running = self._progress.running
        self.ui.previewButton.enabled = bool(p.inputVolume) and not running
        self.ui.applyButton.enabled = not reason and not running
        self.ui.applyButton.toolTip = reason or _("Remove the haze into the output volume.")
        if self._previewShown and self._maskSettings() != self._previewedSettings and not running:
            self._previewTimer.start()

    # --- preview ------------------------------------------------------------------------------------------------
    def onPreviewButton(self) -> None:
        self._previewShown = True
        self.updatePreview()

    def updatePreview(self) -> None:
        """Show the haze mask of the current settings over the input (a label map layer in the slice views)."""
        if self._previewTimer is not None:
            self._previewTimer.stop()
        p = self._parameterNode
        if p is None or not p.inputVolume or self._progress.running or PanelProgress.refused():
            return  # (a settle timer may fire while another panel's run processes events)
        self._previewedSettings = self._maskSettings()
        try:
            with slicer.util.tryWithErrorDisplay(_("Haze mask preview failed."), waitCursor=True):
                maskNode = self.logic.previewMask(p.inputVolume, maskNode=p.maskVolume, **self._settings())
                p.maskVolume = maskNode
                self.ui.previewLabel.text = self.logic.describeMask(maskNode)
                slicer.util.setSliceViewerLayers(background=p.inputVolume, label=maskNode, labelOpacity=0.5)
        except Exception as error:  # already shown by tryWithErrorDisplay
            self.ui.previewLabel.text = f"Failed: {error}"
            self._previewShown = False

    # --- running ------------------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        p = self._parameterNode
        if self._progress.running or PanelProgress.refused(self.ui.resultLabel):  # never inside another run
            return
        with self._progress.task(self.ui.resultLabel, _("Haze removal failed.")):
            outputNode = self.logic.process(p.inputVolume, p.outputVolume, bits=p.bits, progress=self._progress,
                                            **self._settings())
            p.outputVolume = outputNode
            self.ui.resultLabel.text = self.logic.lastResult.summary()
            self._previewShown = False  # the mask overlay made its point; show the result alone
            slicer.util.setSliceViewerLayers(background=outputNode, label=None)


#
# HazeRemovalLogic
#


class HazeRemovalLogic(ScriptedLoadableModuleLogic, HazeRemovalLibLogic):
    """The Qt-free logic of HazeRemovalLib (which does the work; see its ``previewMask`` and ``process``) plus the
    module's parameter node. Usable from the Python console:

        logic = slicer.util.getModuleLogic("HazeRemoval")
        maskNode = logic.previewMask(getNode("MRHead"))  # level "auto"; or level=1 .. 5
        outputNode = logic.process(getNode("MRHead"), bits=8)
        print(logic.lastResult.summary())
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        HazeRemovalLibLogic.__init__(self)

    def getParameterNode(self):
        return HazeRemovalParameterNode(super().getParameterNode())


#
# HazeRemovalTest
#


class HazeRemovalTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PanelSettingsSurviveLeavingTheModule()
        self.setUp()
        self.test_CavityKeptAndGeometryExact()
        self.setUp()
        self.test_CancelLeavesNothing()

    def _makePhantom(self):
        """A bright shell around two tissues and a dark cavity, in Rician air noise (what the module is for)."""
        import numpy as np

        rng = np.random.default_rng(1)
        k, j, i = np.mgrid[0:32, 0:32, 0:32] - 15.5
        r = np.sqrt(i * i + j * j + k * k)
        air = np.hypot(rng.normal(0.0, 20.0, r.shape), rng.normal(0.0, 20.0, r.shape))
        array = np.where(r < 13, 900.0, air)
        array[r < 10] = np.where(i[r < 10] < 0, 300.0, 600.0)
        array[r < 13] += rng.normal(0.0, 20.0, r.shape)[r < 13]
        array[r < 5] = air[r < 5]
        node = slicer.util.addVolumeFromArray(array.astype(np.int16), name="HazeRemovalTestInput")
        node.SetSpacing(0.5, 0.75, 2.0)
        node.SetOrigin(-10.0, 20.0, 5.0)
        return node

    def test_PanelSettingsSurviveLeavingTheModule(self):
        """What a user does: non-default settings, another module and back, Apply; the result used the settings."""
        import numpy as np

        self.delayDisplay("Starting the panel test")
        inputNode = self._makePhantom()
        widget = reenterModule("HazeRemoval")
        widget.ui.inputSelector.setCurrentNode(inputNode)
        widget.ui.levelComboBox.currentIndex = LEVELS_OFFERED.index("3")  # plain Otsu: the shell is the bright class
        widget.ui.airComboBox.currentIndex = list(AIR_CHOICES).index("all")
        widget.ui.fillModeComboBox.currentIndex = list(FILL_CHOICES).index("value")
        widget.ui.fillValueSpinBox.value = 7.0
        widget.ui.bitsComboBox.currentIndex = list(BITS_CHOICES).index("8")
        widget = reenterModule("HazeRemoval")
        widget.ui.applyButton.click()
        result = widget.logic.lastResult
        self.assertIsNotNone(result, widget.ui.resultLabel.text)
        self.assertEqual(slicer.util.arrayFromVolume(result.outputNode).dtype, np.uint8)  # bits 8 kept
        self.assertIsNotNone(result.reduceReport)
        self.assertEqual((widget._parameterNode.level, widget._parameterNode.air, widget._parameterNode.fillMode),
                         ("3", "all", "value"))
        self.assertIn("level 3", result.summary())  # the run used the level chosen before the visit
        self.delayDisplay("Panel test passed")

    def test_CavityKeptAndGeometryExact(self):
        import numpy as np

        self.delayDisplay("Starting the haze removal test")
        inputNode = self._makePhantom()
        before = slicer.util.arrayFromVolume(inputNode).copy()
        logic = HazeRemovalLogic()
        maskNode = logic.previewMask(inputNode)
        mask = slicer.util.arrayFromVolume(maskNode)
        self.assertEqual(mask[0, 0, 0], 1)      # the corner is air
        self.assertEqual(mask[16, 16, 16], 0)   # the dark cavity inside the shell is not
        outputNode = logic.process(inputNode)
        output = slicer.util.arrayFromVolume(outputNode)
        self.assertEqual(output.dtype, before.dtype)
        self.assertTrue(np.array_equal(output[16, 16, 16], before[16, 16, 16]))
        self.assertEqual(len(np.unique(output[mask == 1])), 1)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(inputNode), before))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVTKMatrix(self._ijkToRas(outputNode)),
                                       slicer.util.arrayFromVTKMatrix(self._ijkToRas(inputNode))))
        self.delayDisplay("Haze removal test passed")

    @staticmethod
    def _ijkToRas(node):
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return matrix

    def test_CancelLeavesNothing(self):
        self.delayDisplay("Starting the cancel test")
        inputNode = self._makePhantom()
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(Cancelled):
            HazeRemovalLogic().process(inputNode, progress=lambda fraction, message: False)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel test passed")
