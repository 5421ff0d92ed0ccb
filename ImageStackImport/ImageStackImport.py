import logging
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

from slicer import vtkMRMLMarkupsROINode

# The core package `bigvolume` and `bigvolume_slicer` (what the panels share) are installed beside this file in the
# extension; run from source (the module folder in Slicer's "Additional module paths"), they are in the repository
# root. That folder goes first on sys.path: a pip-installed bigvolume must not shadow the copy bundled here.
_HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = next((folder for folder in (_HERE, os.path.dirname(_HERE))
                if os.path.isfile(os.path.join(folder, "bigvolume", "__init__.py"))), None)
sys.path[:0] = [BUNDLED] if BUNDLED and sys.path[:1] != [BUNDLED] else []

from bigvolume_slicer import (ParameterNodeGui, PanelProgress, PathFields, ScratchFolders, TextFields, _,  # noqa: E402
                              followSceneImports, RoiFollower, connectPathText, limits, reenterModule, rememberPaths,
                              settleTimer, translate)

from ImageStackImportLib import (BITS_CHOICES, DEFAULT_METHOD, DEFAULT_STACK_ORIENTATION, GRAY_CHOICES,  # noqa: E402
                                 METHODS, STACK_ORIENTATIONS, BigVolumeError, Cancelled)
from ImageStackImportLib import ImageStackImportLogic as ImageStackImportLibLogic  # noqa: E402

# Path fields the panel keeps in the parameter node itself (bigvolume_slicer.PathFields): parameter -> widget.
PATH_FIELDS = {"inputFile": "fileLineEdit", "inputFolder": "folderLineEdit", "nhdrPath": "nhdrPathLineEdit"}
# Text fields the panel keeps in the parameter node itself (bigvolume_slicer.TextFields; Slicer 5.8's QLineEdit
# connector moves the cursor to the end at each keystroke): parameter -> widget.
TEXT_FIELDS = {"pattern": "patternLineEdit"}
# Parameters no widget shows: what the panel records in the node itself.
RECORDED_PARAMETERS = ("spacingSource",)


#
# ImageStackImport
#


class ImageStackImport(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Image Stack Import")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Utilities")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBigVolume developers"]
        self.parent.helpText = _("""
Import a stack of 2D image files (TIFF, PNG, JPEG, BMP: one file per slice, as microscopes, micro-CT and
serial-section scanners write them) as a volume, without ever holding more than the output in memory.
Choose a folder, one slice (its numbered siblings are the stack) or a pattern. Everything is planned from the
slice headers first: the panel shows the output size, spacing and memory before anything is read.
The slices are cropped (optional Markups ROI, rotated ones included), converted to gray or kept RGB, reduced to
8/16 bits if asked, and downsampled without aliasing while they are read, straight into the volume's memory.
Workflow for huge stacks: Preview (low resolution), place a ROI on it, then Import that ROI at full resolution.
Also save as NHDR: a full-resolution streamable header that points into uncompressed TIFF slices (no copy).
""")
        self.parent.acknowledgementText = _("""
Part of the SlicerBigVolume extension. The reading and resampling are done by its Qt-free core package
<code>bigvolume</code> (numpy, VTK and SimpleITK), also usable from plain Python and its own command line
(<code>bigvolume import-stack</code>).
""")


#
# ImageStackImportParameterNode
#


@parameterNodeWrapper
class ImageStackImportParameterNode:
    """
    inputFile, inputFolder - one slice file (its numbered siblings are the stack) or a folder ("": none).
    nhdrPath - where "save as NHDR" writes ("": beside the slices).
    pattern - optional glob or printf pattern of the slice files (relative: in the folder).
    reverse - read the slices last to first.
    spacingX, spacingY, spacingZ - voxel size in mm (filled from the headers when the input changes).
    spacingSource - the input (file, folder, pattern) the spacing was last filled from ("": none yet). Kept
        in the node, not the panel: a fresh node (a new or closed scene) refills its spacing from the headers, a node
        loaded with a scene keeps the spacing it was saved with.
    orientation - where columns, rows and slices increase towards (bigvolume.io.stacks.STACK_ORIENTATIONS; LPS default).
    originX, originY, originZ - LPS position in mm of the centre of the first slice's first pixel.
    roi - optional Markups ROI to import (rotated ones included).
    gray - RGB slices: "luminance", "channel:N" or "keep" (a vector volume).
    bits - "keep", "8" or "16".
    factorX, factorY, factorZ - downsampling factors (>= 1).
    method - how the slices are downsampled (a key of ImageStackImportLib.METHODS; nearest or max keep labels).
    saveNhdr - also write the full-resolution streamable NHDR.
    show3D - after Import or Preview, volume-render the result (transfer function from its histogram).
    """

    inputFile: str = ""
    inputFolder: str = ""
    nhdrPath: str = ""
    pattern: str = ""
    reverse: bool = False
    spacingX: Annotated[float, WithinRange(limits.MIN_SPACING, limits.MAX_SPACING)] = 1.0
    spacingY: Annotated[float, WithinRange(limits.MIN_SPACING, limits.MAX_SPACING)] = 1.0
    spacingZ: Annotated[float, WithinRange(limits.MIN_SPACING, limits.MAX_SPACING)] = 1.0
    spacingSource: str = ""
    orientation: Annotated[str, Choice(list(STACK_ORIENTATIONS))] = DEFAULT_STACK_ORIENTATION
    originX: float = 0.0
    originY: float = 0.0
    originZ: float = 0.0
    roi: vtkMRMLMarkupsROINode
    gray: Annotated[str, Choice(list(GRAY_CHOICES))] = "luminance"
    bits: Annotated[str, Choice(list(BITS_CHOICES))] = "keep"
    factorX: Annotated[float, WithinRange(limits.MIN_FACTOR, limits.MAX_FACTOR)] = 1.0
    factorY: Annotated[float, WithinRange(limits.MIN_FACTOR, limits.MAX_FACTOR)] = 1.0
    factorZ: Annotated[float, WithinRange(limits.MIN_FACTOR, limits.MAX_FACTOR)] = 1.0
    method: Annotated[str, Choice(list(METHODS))] = DEFAULT_METHOD
    saveNhdr: bool = False
    show3D: bool = False


#
# Drag and drop onto the panel
#


class _DropFilter(qt.QObject):
    """Event filter of the module panel: accepts dragged files and folders and hands their local paths over."""

    def __init__(self, onDropped):
        qt.QObject.__init__(self)
        self.onDropped = onDropped

    def eventFilter(self, watched, event):
        if event.type() in (qt.QEvent.DragEnter, qt.QEvent.DragMove) and event.mimeData().hasUrls():
            event.acceptProposedAction()
            return True
        if event.type() == qt.QEvent.Drop and event.mimeData().hasUrls():
            paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
            if paths:
                event.acceptProposedAction()
                self.onDropped(paths)
                return True
        return False


#
# ImageStackImportWidget
#


class ImageStackImportWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._gui = None  # the widgets' binding to the parameter node (made in setup)
        self._paths = None
        self._texts = None
        self._progress = None  # the run state, progress bar and Cancel button (made in setup)
        self._canImport = False
        self._roi = None  # follows the chosen ROI (made in setup)
        self._planTimer = None
        self._dropFilter = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ImageStackImport.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = ImageStackImportLogic()
        self._gui = ParameterNodeGui(self.ui, afterBind=self._labelChoices)
        self._paths = PathFields({name: getattr(self.ui, widget) for name, widget in PATH_FIELDS.items()})
        self._roi = RoiFollower(self, self.schedulePlan)
        self._texts = TextFields({name: getattr(self.ui, widget) for name, widget in TEXT_FIELDS.items()})

        # Planning reads every slice header the first time: wait until the user stops typing or dragging the ROI.
        self._planTimer = settleTimer(self.updatePlan)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        followSceneImports(self)  # a fresh wrapper after each scene import

        connectPathText(self.ui.fileLineEdit, self.onFileChanged)
        connectPathText(self.ui.folderLineEdit, self.onFolderChanged)
        self.ui.roiSelector.connect("nodeAddedByUser(vtkMRMLNode*)", self.onRoiAdded)
        for factor in (1, 2, 4, 8):
            getattr(self.ui, f"factor{factor}Button").connect("clicked()", lambda f=factor: self.setFactor(f))
        self.ui.previewButton.connect("clicked(bool)", self.onPreviewButton)
        self.ui.importButton.connect("clicked(bool)", self.onImportButton)
        self._progress = PanelProgress(self.ui.progressBar, self.ui.cancelButton, onChange=self._updateButtons)
        self.ui.cancelButton.connect("clicked(bool)", self._progress.cancel)
        self.ui.spacingWarningLabel.hide()

        # A folder or a slice file dropped anywhere on the panel (outside its text fields) becomes the input.
        self._dropFilter = _DropFilter(self.onDropped)
        self.parent.setAcceptDrops(True)
        self.parent.installEventFilter(self._dropFilter)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._planTimer is not None:
            self._planTimer.stop()
        if self._dropFilter is not None:
            self.parent.removeEventFilter(self._dropFilter)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # The widgets stay bound to the parameter node (once per node: see ParameterNodeGui); a run stops.
        if self._progress.running:
            self._progress.cancel()

    def onSceneStartClose(self, caller, event) -> None:
        if self._progress.running:  # the run's nodes are leaving: stop it (it leaves no node and no file)
            self._progress.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[ImageStackImportParameterNode]) -> None:
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = self._gui.bind(inputParameterNode)
        self._paths.bind(self._parameterNode)
        self._texts.bind(self._parameterNode)
        if self._parameterNode:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def _labelChoices(self, parameterNode) -> None:
        """Readable labels after each binding: connectGui fills the combo boxes with the Choice values (and reads
        them by index); the methods keep their names, with what each does as its tooltip."""
        for comboBox, labels in ((self.ui.grayComboBox, GRAY_CHOICES), (self.ui.bitsComboBox, BITS_CHOICES)):
            for index, value in enumerate(labels):
                comboBox.setItemText(index, _(labels[value]))
        for index, name in enumerate(METHODS):
            self.ui.methodComboBox.setItemData(index, METHODS[name], qt.Qt.ToolTipRole)

    # --- inputs ---------------------------------------------------------------------------------------------------
    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self._paths.show()
        self._texts.show()
        self._roi.follow(self._parameterNode.roi if self._parameterNode else None)  # a moved ROI: plan again
        self.schedulePlan()

    def schedulePlan(self, caller=None, event=None) -> None:
        if self._planTimer is not None:
            self._planTimer.start()

    def onFileChanged(self, path) -> None:
        if path:
            self.ui.folderLineEdit.currentPath = ""
        self.schedulePlan()

    def onFolderChanged(self, path) -> None:
        if path:
            self.ui.fileLineEdit.currentPath = ""
        self.schedulePlan()

    def onDropped(self, paths) -> None:
        try:
            file, folder = self.logic.droppedSource(paths)
        except BigVolumeError as error:
            self.ui.statusLabel.text = str(error)
            return
        self.ui.fileLineEdit.currentPath = file
        self.ui.folderLineEdit.currentPath = folder

    def setFactor(self, factor) -> None:
        p = self._parameterNode
        if p:
            p.factorX = p.factorY = p.factorZ = float(factor)

    def onRoiAdded(self, roiNode) -> None:
        """A ROI created from the selector starts as a box around the whole stack."""
        if roiNode.GetDisplayNode() is None:
            roiNode.CreateDefaultDisplayNodes()
        try:
            with self.logic.planImport(self._source(), **self._settings(roi=False)) as plan:
                self.logic.initializeRoi(roiNode, plan)
        except Exception as error:  # no stack chosen yet: the user places the ROI
            logging.info(f"ROI left for the user to place: {error}")

    def _source(self):
        p = self._parameterNode
        return self.logic.resolveSource(p.inputFile, p.inputFolder, p.pattern)

    def _settings(self, spacing=True, factor=True, roi=True) -> dict:
        p = self._parameterNode
        settings = {"gray": p.gray, "bits": p.bits, "reverse": p.reverse, "orientation": p.orientation,
                    "origin": (p.originX, p.originY, p.originZ)}
        if spacing:
            settings["spacing"] = (p.spacingX, p.spacingY, p.spacingZ)
        if factor:  # with how it downsamples (a preview has its own factor and method)
            settings["factor"] = (p.factorX, p.factorY, p.factorZ)
            settings["method"] = p.method
        if roi:
            settings["roi"] = p.roi
        return settings

    def updatePlan(self) -> None:
        """Describe the import in the info box (from the headers only); on a new input (one the node's spacing was
        not filled from), fill the spacing first."""
        if self._planTimer is not None:
            self._planTimer.stop()
        p = self._parameterNode
        if p is None or self._progress.running:
            return
        # The input the spacing belongs to; not the slice order, which changes neither pixel size nor slice distance.
        fields = repr((p.inputFile, p.inputFolder, p.pattern))
        if p.spacingSource == repr((p.inputFile, p.inputFolder, p.pattern, p.reverse)):  # saved with the order in it
            p.spacingSource = fields
        ok, headerSpacing = False, ()
        try:
            source = self._source()
            if fields != p.spacingSource:
                with self.logic.planImport(source, gray="keep", reverse=p.reverse) as plan:
                    p.spacingX, p.spacingY, p.spacingZ = plan.spacing
                p.spacingSource = fields
            with self.logic.planImport(source, **self._settings()) as plan:
                text, headerSpacing = plan.description, plan.headerSpacing
            ok = True
        except Exception as error:  # say why instead of failing on Import
            text = str(error)
        if self._planTimer is not None:
            self._planTimer.stop()  # the spacing just filled in needs no second plan
        self.ui.infoTextEdit.setPlainText(text)
        self.ui.spacingWarningLabel.visible = ok and headerSpacing is None
        self._canImport = ok
        self._updateButtons()

    # --- running --------------------------------------------------------------------------------------------------
    def _updateButtons(self) -> None:
        self.ui.previewButton.enabled = self._canImport and not self._progress.running
        self.ui.importButton.enabled = self._canImport and not self._progress.running

    def onPreviewButton(self) -> None:
        self._run(preview=True)

    def onImportButton(self) -> None:
        self._run(preview=False)

    def _run(self, preview: bool) -> None:
        p = self._parameterNode
        if self._progress.running or PanelProgress.refused(self.ui.statusLabel):  # never inside another run
            return
        with self._progress.task(self.ui.statusLabel, _("Image stack import failed.")):
            source = self._source()
            if preview:
                node = self.logic.importPreview(source, scene=slicer.mrmlScene, progress=self._progress,
                                                **self._settings(factor=False, roi=False))
            else:
                nhdrPath = self.logic.nhdrPathFor(p.nhdrPath, source) if p.saveNhdr else None
                node = self.logic.importToNode(source, scene=slicer.mrmlScene, progress=self._progress,
                                               nhdrPath=nhdrPath, **self._settings())
            self.ui.statusLabel.text = self.logic.lastResult.summary()
            rememberPaths(self.ui.fileLineEdit, self.ui.folderLineEdit,
                          *([self.ui.nhdrPathLineEdit] if p.saveNhdr and not preview else []))
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            if p.show3D:  # volume rendering (the user's default method, our curves), the 3D views fitted to it
                self.logic.showPreview(node, renderingLogic=slicer.modules.volumerendering.logic())
                for index in range(slicer.app.layoutManager().threeDViewCount):
                    slicer.app.layoutManager().threeDWidget(index).threeDView().resetFocalPoint()


#
# ImageStackImportLogic
#


class ImageStackImportLogic(ScriptedLoadableModuleLogic, ImageStackImportLibLogic):
    """The Qt-free logic of ImageStackImportLib (which does the work; see its ``planImport`` and ``importToNode``)
    plus the module's parameter node. Usable from the Python console:

        logic = slicer.util.getModuleLogic("ImageStackImport")
        print(logic.describeImport("/data/scan", factor=4))
        volumeNode = logic.importToNode("/data/scan", scene=slicer.mrmlScene, factor=4)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        ImageStackImportLibLogic.__init__(self)

    def getParameterNode(self):
        return ImageStackImportParameterNode(super().getParameterNode())


#
# ImageStackImportTest
#


class ImageStackImportTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        with ScratchFolders("ImageStackImportTest-", slicer.app.temporaryPath) as self._scratch:
            self.setUp()
            self.test_PanelSettingsSurviveLeavingTheModule()
            self.setUp()
            self.test_ImportGeometryAndVoxels()
            self.setUp()
            self.test_CancelLeavesNothing()

    def _writeStack(self):
        import numpy as np
        import SimpleITK as sitk

        folder = self._scratch.new()
        array = np.zeros((12, 16, 20), np.uint16)
        array[3:9, 4:12, 5:15] = 1000
        for k, plane in enumerate(array):
            image = sitk.GetImageFromArray(plane)
            image.SetSpacing((0.5, 0.5))
            sitk.WriteImage(image, os.path.join(folder, f"slice_{k:03d}.tif"))
        return folder, array

    def test_PanelSettingsSurviveLeavingTheModule(self):
        """What a user does: a folder, non-default settings, another module and back, Import; the result used
        them."""
        import numpy as np

        self.delayDisplay("Starting the panel test")
        folder, _array = self._writeStack()
        widget = reenterModule("ImageStackImport")
        widget.ui.folderLineEdit.currentPath = folder
        widget.ui.bitsComboBox.currentIndex = list(BITS_CHOICES).index("8")
        widget.ui.factor2Button.click()
        widget = reenterModule("ImageStackImport")
        self.assertEqual((widget._parameterNode.inputFolder, widget._parameterNode.bits), (folder, "8"))
        widget.updatePlan()  # what the settle timer does after a pause
        widget.ui.importButton.click()
        result = widget.logic.lastResult
        self.assertIsNotNone(result, widget.ui.statusLabel.text)
        node = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        self.assertEqual(node.GetImageData().GetDimensions(), (10, 8, 6))
        self.assertEqual(slicer.util.arrayFromVolume(node).dtype, np.uint8)
        self.delayDisplay("Panel test passed")

    def test_ImportGeometryAndVoxels(self):
        import numpy as np

        self.delayDisplay("Starting the import test")
        folder, array = self._writeStack()
        logic = ImageStackImportLogic()
        with logic.planImport(folder) as plan:
            self.assertIn("12 slices of 20x16 uint16", plan.description)
            self.assertEqual(plan.spacing, (0.5, 0.5, 0.5))
        node = logic.importToNode(folder, scene=slicer.mrmlScene)
        self.assertEqual(node.GetImageData().GetDimensions(), (20, 16, 12))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(node), array))
        node = logic.importToNode(folder, scene=slicer.mrmlScene, factor=2)
        self.assertEqual(node.GetImageData().GetDimensions(), (10, 8, 6))
        for actual, expected in zip(node.GetSpacing(), (1.0, 1.0, 1.0)):
            self.assertAlmostEqual(actual, expected, places=9)
        self.delayDisplay("Import test passed")

    def test_CancelLeavesNothing(self):
        self.delayDisplay("Starting the cancel test")
        folder, _ = self._writeStack()
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(Cancelled):
            ImageStackImportLogic().importToNode(folder, scene=slicer.mrmlScene, progress=lambda f, m: False)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel test passed")
