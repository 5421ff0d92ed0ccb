import importlib.util
import os
import sys
import time
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from slicer import vtkMRMLScalarVolumeNode

# The core package `bigvolume` is installed beside this file in the extension. Run from source (the module folder
# added to Slicer's "Additional module paths"), it is found in the repository root, the parent of this folder.
if importlib.util.find_spec("bigvolume") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from AntiAliasedResampleLib import DEFAULT_METHOD, METHODS, Cancelled  # noqa: E402
from AntiAliasedResampleLib import AntiAliasedResampleLogic as AntiAliasedResampleLibLogic  # noqa: E402


#
# AntiAliasedResample
#


class AntiAliasedResample(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Anti-Aliased Resample"
        self.parent.categories = ["Utilities"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBigVolume developers"]
        self.parent.helpText = """
Downsample a volume without aliasing: every output voxel is a band-limited (Lanczos by default) estimate of the
input block it covers, instead of one picked voxel (moire, staircases, flickering thin structures).
The geometry is exact: output spacing = factor x input spacing, the output grid is centred on the input blocks
(nothing shifts by half a voxel), the direction is unchanged and the output stays under the input's transform.
Choose a factor (per axis, isotropic) or a target spacing. Label maps are always resampled by a label-safe method.
Works on scalar, label map and vector/RGB volumes; the input volume is never modified.
"""
        self.parent.acknowledgementText = """
Part of the SlicerBigVolume extension. The resampling is done by its Qt-free core package <code>bigvolume</code>
(numpy, VTK and SimpleITK), also usable from plain Python and its own command line.
"""


#
# AntiAliasedResampleParameterNode
#


@parameterNodeWrapper
class AntiAliasedResampleParameterNode:
    """
    inputVolume - the volume to downsample (scalar, label map or vector/RGB).
    factor - downsampling factor (>= 1), the same on every axis.
    isotropic - one output spacing on all axes: factor x the finest input spacing.
    useSpacing - use the target spacing (spacingI, spacingJ, spacingK in mm) instead of the factor.
    method - resampling method (a key of bigvolume.METHODS).
    threads - number of threads, 0 for all cores.
    outputVolume - where to put the result; none: a new volume is created.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    factor: Annotated[float, WithinRange(1.0, 32.0)] = 2.0
    isotropic: bool = False
    useSpacing: bool = False
    spacingI: Annotated[float, WithinRange(0.0001, 10000.0)] = 1.0
    spacingJ: Annotated[float, WithinRange(0.0001, 10000.0)] = 1.0
    spacingK: Annotated[float, WithinRange(0.0001, 10000.0)] = 1.0
    method: Annotated[str, Choice(list(METHODS))] = DEFAULT_METHOD
    threads: Annotated[int, WithinRange(0, 1024)] = 0
    outputVolume: vtkMRMLScalarVolumeNode


#
# AntiAliasedResampleWidget
#


class AntiAliasedResampleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._running = False
        self._cancelRequested = False
        self._lastEventProcessing = 0.0

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AntiAliasedResample.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = AntiAliasedResampleLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.progressBar.hide()

        self.initializeParameterNode()
        # Tooltips after connectGui, which fills the combo box from the Choice annotation.
        for index, name in enumerate(METHODS):
            self.ui.methodComboBox.setItemData(index, METHODS[name], qt.Qt.ToolTipRole)

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
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
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _settings(self) -> dict:
        p = self._parameterNode
        spacing = (p.spacingI, p.spacingJ, p.spacingK) if p.useSpacing else None
        return {"factor": p.factor, "spacing": spacing, "isotropic": p.isotropic}

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        self.ui.spacingWidget.enabled = bool(p and p.useSpacing)
        self.ui.factorSliderWidget.enabled = bool(p and not p.useSpacing)
        self.ui.isotropicCheckBox.enabled = bool(p and not p.useSpacing)
        plan, reason = "", "Select an input volume."
        if p and p.inputVolume:
            reason = ""
            if p.outputVolume and p.outputVolume == p.inputVolume:
                reason = "Select an output volume other than the input."
            try:
                plan = self.logic.describePlan(p.inputVolume, **self._settings())
            except Exception as error:  # invalid settings: say why instead of failing on Apply
                reason = reason or str(error)
        self.ui.planLabel.text = reason or plan
        self.ui.applyButton.enabled = not reason and not self._running
        self.ui.applyButton.toolTip = reason or "Downsample the input volume."

    def onInputChanged(self, node) -> None:
        """Start the target spacing from factor x the input's spacing, a valid downsampling."""
        if node is None or self._parameterNode is None or self._parameterNode.useSpacing:
            return
        factor = self._parameterNode.factor
        self._parameterNode.spacingI, self._parameterNode.spacingJ, self._parameterNode.spacingK = (
            round(factor * s, 4) for s in node.GetSpacing())

    def _onProgress(self, fraction: float, message: str) -> bool:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.progressBar.format = f"{message} %p%"
        now = time.monotonic()
        if now - self._lastEventProcessing > 0.1 and qt.QThread.currentThread() == slicer.app.thread():
            self._lastEventProcessing = now
            slicer.app.processEvents()  # draws the bar and lets the Cancel button be clicked
        return not self._cancelRequested

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self._cancelRequested = False
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        self._checkCanApply()

    def onCancelButton(self) -> None:
        self._cancelRequested = True
        self.ui.cancelButton.enabled = False

    def onApplyButton(self) -> None:
        p = self._parameterNode
        self.ui.resultLabel.text = ""
        self._setRunning(True)
        try:
            with slicer.util.tryWithErrorDisplay("Resampling failed.", waitCursor=True):
                try:
                    outputNode = self.logic.process(p.inputVolume, p.outputVolume, method=p.method,
                                                    threads=p.threads or None, progress=self._onProgress,
                                                    **self._settings())
                except Cancelled:
                    self.ui.resultLabel.text = "Cancelled"
                    return
                p.outputVolume = outputNode
                self.ui.resultLabel.text = self.logic.lastResult.summary()
                if outputNode.IsA("vtkMRMLLabelMapVolumeNode"):
                    slicer.util.setSliceViewerLayers(label=outputNode)
                else:
                    slicer.util.setSliceViewerLayers(background=outputNode, fit=True)
        except Exception as error:  # already shown by tryWithErrorDisplay
            self.ui.resultLabel.text = f"Failed: {error}"
        finally:
            self._setRunning(False)


#
# AntiAliasedResampleLogic
#


class AntiAliasedResampleLogic(ScriptedLoadableModuleLogic, AntiAliasedResampleLibLogic):
    """The Qt-free logic of AntiAliasedResampleLib (which does the work; see its ``process``) plus the module's
    parameter node. Usable from the Python console:

        logic = slicer.util.getModuleLogic("AntiAliasedResample")
        outputNode = logic.process(getNode("MRHead"), factor=2)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        AntiAliasedResampleLibLogic.__init__(self)

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
        self.test_ScalarGeometry()
        self.setUp()
        self.test_CancelLeavesNothing()

    def _makeVolume(self):
        import numpy as np

        array = np.zeros((20, 30, 40), dtype=np.int16)
        array[5:15, 10:20, 10:30] = 1000
        node = slicer.util.addVolumeFromArray(array, name="AntiAliasedResampleTestInput")
        node.SetSpacing(0.5, 0.75, 2.0)
        node.SetOrigin(-10.0, 20.0, 5.0)
        return node

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
