"""The OMEZarrPyramid panel (the checks every module passes are in test_slicer_modules.py): its widgets and their
bindings read from the .ui file, its choices from the Lib, and the real Widget class driven with the stand-ins of
slicer_gui_standins on a slicer-core scene: settings kept across leaving and re-entering, Load using them."""
import numpy as np
import pytest
import vtk

from slicer_module_checks import SlicerModule

MODULE = SlicerModule("OMEZarrPyramid")
REQUIRED_WIDGETS = {
    "pyramidPathLineEdit": "ctkPathLineEdit", "memoryBudgetSpinBox": "QDoubleSpinBox", "levelComboBox": "QComboBox",
    "infoLabel": "QLabel", "roiSelector": "qMRMLNodeComboBox", "roiLevelComboBox": "QComboBox",
    "loadLevelButton": "QPushButton", "loadRoiButton": "QPushButton", "cancelButton": "QPushButton",
    "progressBar": "QProgressBar", "statusLabel": "QLabel",
    # Create a pyramid
    "createFromComboBox": "QComboBox", "createInputPathLineEdit": "ctkPathLineEdit",
    "createInputVolumeSelector": "qMRMLNodeComboBox", "createOutputPathLineEdit": "ctkPathLineEdit",
    "createLevelsSpinBox": "QSpinBox", "createChunksSpinBox": "QSpinBox", "createMethodComboBox": "QComboBox",
    "createVersionComboBox": "QComboBox", "stackVoxelSizeSpinBox": "QDoubleSpinBox",
    "createOverwriteCheckBox": "QCheckBox", "createButton": "QPushButton", "createInputFolderButton": "QToolButton",
}


def test_the_panel_has_its_widgets_and_bindings():
    widgets = MODULE.ui_widgets()
    wrong = {name: (widgets.get(name), cls) for name, cls in REQUIRED_WIDGETS.items() if widgets.get(name) != cls}
    assert not wrong, f"missing or of the wrong class (found, expected): {wrong}"
    assert MODULE.ui_parameter_bindings() == {
        "memoryBudgetSpinBox": "memoryBudgetGB", "levelComboBox": "level", "roiSelector": "roi",
        "roiLevelComboBox": "roiLevel", "createFromComboBox": "createFrom", "createInputVolumeSelector":
        "createInputVolume", "createLevelsSpinBox": "createLevels", "createChunksSpinBox": "createChunks",
        "createMethodComboBox": "createMethod", "createVersionComboBox": "createVersion",
        "stackVoxelSizeSpinBox": "stackVoxelSizeUm", "createOverwriteCheckBox": "createOverwrite"}
    assert MODULE.path_fields() == {"pyramidPath": "pyramidPathLineEdit", "createInputPath": "createInputPathLineEdit",
                                    "createOutputPath": "createOutputPathLineEdit"}
    filters = {name: MODULE.ui_properties(name)["filters"].findtext("set") for name in (
        "pyramidPathLineEdit", "createInputPathLineEdit", "createOutputPathLineEdit")}
    # ctkPathLineEdit's Browse: a folder dialog for Dirs alone, else a file dialog; Files|Writable a save dialog.
    assert filters["pyramidPathLineEdit"] == "ctkPathLineEdit::Dirs|ctkPathLineEdit::Readable"  # a store: a folder
    assert "Files" in filters["createInputPathLineEdit"]  # a volume file (the folder button: a stack, DICOM, store)
    # A new store: a name typed in a save dialog (a folder dialog returns only folders that exist, all refused)
    assert filters["createOutputPathLineEdit"] == "ctkPathLineEdit::Files|ctkPathLineEdit::Writable"
    types = [s.text for s in MODULE.ui_properties("roiSelector")["nodeTypes"].iter("string")]
    assert types == ["vtkMRMLMarkupsROINode"]
    types = [s.text for s in MODULE.ui_properties("createInputVolumeSelector")["nodeTypes"].iter("string")]
    assert types == ["vtkMRMLScalarVolumeNode"]
    # Both node selectors follow the scene (the .ui's connections)
    connected = {c.findtext("receiver") for c in MODULE.ui_root().iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert {"roiSelector", "createInputVolumeSelector"} <= connected
    used = MODULE.ui_attribute_uses() | set(MODULE.ui_parameter_bindings()) | set(MODULE.path_fields().values())
    assert not set(REQUIRED_WIDGETS) - used


def test_choices_and_defaults():
    FIT, = MODULE.import_lib("FIT")
    fields = MODULE.wrapper_fields()
    assert fields["level"][1].endswith("Choice(LEVELS_OFFERED)]") and fields["level"][2] == "FIT"
    assert fields["roiLevel"][1].endswith("Choice(ROI_LEVELS_OFFERED)]") and fields["roiLevel"][2] == "'0'"
    assert MODULE.assignment("LEVELS_OFFERED") == "[FIT] + [str(level) for level in range(limits.MAX_PYRAMID_LEVELS)]"
    assert fields["memoryBudgetGB"][2] == "0.0" and MODULE.within_range("memoryBudgetGB")[0] == 0.0  # 0: automatic
    assert FIT == "fit"
    # Create a pyramid: the core's defaults (lanczos, OME-Zarr 0.5, 128-voxel chunks, levels until one chunk)
    versions, methods = MODULE.import_lib("PYRAMID_VERSIONS", "PYRAMID_METHODS")
    from bigvolume.engine.stream import STREAMABLE_METHODS
    from bigvolume.io.ome_zarr import DEFAULT_OME_ZARR_VERSION
    from bigvolume.ops.pyramid import DEFAULT_CHUNKS
    assert set(methods) == set(STREAMABLE_METHODS) and methods[0] == "lanczos"
    assert versions[0] == DEFAULT_OME_ZARR_VERSION and set(versions) == {"0.5", "0.4"}
    assert fields["createMethod"][2] == "'lanczos'" and fields["createVersion"][2] == "'0.5'"
    assert fields["createChunks"][2] == str(DEFAULT_CHUNKS) and fields["createLevels"][2] == "0"
    assert fields["createFrom"][2] == "'file'" and fields["createOverwrite"][2] == "False"
    assert fields["stackVoxelSizeUm"][2] == "0.0"


# --- the real widget with the stand-ins -----------------------------------------------------------------------------
@pytest.fixture
def pyramid(tmp_path):
    pytest.importorskip("zarr")
    from bigvolume.core.geometry import Geometry
    from zarr_stores import write_store

    array = np.random.default_rng(4).integers(0, 4000, (30, 36, 40), dtype=np.uint16)
    geometry = Geometry((40, 36, 30), (0.4, 0.7, 1.5), (1.0, 2.0, 3.0))
    return write_store(tmp_path / "p.ome.zarr", array, geometry, factors=(3, 9)), array, geometry


@pytest.mark.parametrize("version", [(5, 8), (5, 10)], ids=["slicer-5.8", "slicer-5.10"])
def test_settings_survive_reentry_and_load_uses_them(pyramid, version, monkeypatch, tmp_path):
    import slicer
    import slicer_gui_standins as standins

    path, array, geometry = pyramid
    app = standins.install(monkeypatch, tmp_path, version)
    try:
        widget = standins.open_panel(standins.load_module(MODULE, monkeypatch), MODULE.name)
        assert not widget.ui.loadLevelButton.enabled  # no store yet
        widget.ui.pyramidPathLineEdit.currentPath = str(path)
        widget.ui.levelComboBox.currentIndex = 3  # "fit", "0", "1", "2": level 2
        widget.ui.roiLevelComboBox.currentIndex = 1  # level 1
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
        roi.SetCenter(-8.0, -10.0, 12.0)
        roi.SetSize(6.0, 6.0, 9.0)
        widget.ui.roiSelector.setCurrentNode(roi)
        for _ in range(2):
            standins.leave_and_come_back(widget)
            app.settle()
        p = widget._parameterNode
        assert (p.pyramidPath, p.level, p.roiLevel, p.roi) == (str(path), "2", "1", roi)
        assert "<- Load level" in widget.ui.infoLabel.text and "ROI at level 1" in widget.ui.infoLabel.text
        widget.ui.loadLevelButton.click()
        assert widget.logic.lastResult is not None, widget.ui.statusLabel.text
        assert widget.logic.lastResult.level == 2
        assert widget.logic.lastResult.dimensions == geometry.downsampled(9).dimensions
        widget.ui.loadRoiButton.click()
        result = widget.logic.lastResult
        assert result.level == 1 and result.box is not None, widget.ui.statusLabel.text
        from slicer.util import arrayFromVolume
        (k0, k1), (j0, j1), (i0, i1) = result.box
        from zarr_stores import subsample
        np.testing.assert_array_equal(arrayFromVolume(result.outputNode), subsample(array, 3)[k0:k1, j0:j1, i0:i1])
        # A path that is no store is said on the panel, not raised from the timer
        widget.ui.pyramidPathLineEdit.currentPath = str(tmp_path)
        app.settle()
        assert "not a Zarr store" in widget.ui.infoLabel.text
    finally:
        standins.close_panels()


@pytest.mark.parametrize("version", [(5, 8), (5, 10)], ids=["slicer-5.8", "slicer-5.10"])
def test_create_survives_reentry_then_opens_the_new_pyramid(version, monkeypatch, tmp_path):
    """A user's path: a file and an output chosen, other settings changed, another module and back, Create; the new
    store is then the one the panel opens, and its level 1 is bigvolume.resample's of the file. Then from a volume of
    the scene, and Overwrite."""
    pytest.importorskip("zarr")
    import slicer
    import slicer_gui_standins as standins

    from bigvolume import Geometry, Volume, read_volume, resample, write_volume

    array = np.random.default_rng(7).integers(0, 3000, (20, 40, 36), dtype=np.uint16)
    geometry = Geometry((36, 40, 20), (0.5, 0.5, 1.0), (-4.0, 2.5, 10.0))
    source = write_volume(Volume(array, geometry), tmp_path / "in.nrrd")
    output = tmp_path / "out.ome.zarr"
    app = standins.install(monkeypatch, tmp_path, version)
    try:
        widget = standins.open_panel(standins.load_module(MODULE, monkeypatch), MODULE.name)
        assert not widget.ui.createButton.enabled  # no input, no output yet
        widget.ui.createInputPathLineEdit.currentPath = str(source)
        widget.ui.createOutputPathLineEdit.currentPath = str(output)
        widget.ui.createChunksSpinBox.value = 16
        widget.ui.createVersionComboBox.currentIndex = 1  # 0.4
        widget.ui.createLevelsSpinBox.value = 3
        for _ in range(2):
            standins.leave_and_come_back(widget)
            app.settle()
        p = widget._parameterNode
        assert (p.createInputPath, p.createOutputPath, p.createChunks, p.createVersion, p.createLevels) == (
            str(source), str(output), 16, "0.4", 3)
        widget.ui.createButton.click()
        report = widget.logic.lastPyramid
        assert report is not None, widget.ui.statusLabel.text
        assert (output / ".zattrs").is_file() and not (tmp_path / "out.ome.zarr.partial").exists()
        assert len(report.levels) == 3 and str(output) in widget.ui.statusLabel.text
        assert p.pyramidPath == str(output)  # opened: Load level reads it
        for field in (widget.ui.createInputPathLineEdit, widget.ui.createOutputPathLineEdit):  # recent paths
            assert ("addCurrentPathToHistory", ()) in field.calls
        widget.ui.levelComboBox.currentIndex = 2  # level 1
        widget.ui.loadLevelButton.click()
        loaded = slicer.util.arrayFromVolume(widget.logic.lastResult.outputNode)
        expected = resample(read_volume(source), report.levels[1].factors).array
        np.testing.assert_allclose(loaded.astype(float), expected.astype(float), atol=1)

        # From a volume of the scene, over the store just written
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scene volume")
        slicer.util.updateVolumeFromArray(node, array[:, ::-1].copy())
        widget.ui.createFromComboBox.currentIndex = 1
        widget.ui.createInputVolumeSelector.setCurrentNode(node)
        widget.ui.createButton.click()
        assert "exists" in widget.ui.statusLabel.text  # refused: Overwrite is off
        widget.ui.createOverwriteCheckBox.checked = True
        widget.ui.createButton.click()
        assert widget.logic.lastPyramid is not None, widget.ui.statusLabel.text
        widget.ui.levelComboBox.currentIndex = 1  # level 0
        widget.ui.loadLevelButton.click()
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(widget.logic.lastResult.outputNode),
                                      array[:, ::-1])
    finally:
        standins.close_panels()


def test_a_folder_input_is_chosen_with_its_own_button(monkeypatch, tmp_path):
    """The input field's Browse opens a file dialog (ctkPathLineEdit: Files in its filters); a stack, a DICOM series
    and a Zarr store are folders: the Folder... button asks for one, and Cancel changes nothing."""
    import slicer_gui_standins as standins

    standins.install(monkeypatch, tmp_path, (5, 8))
    try:
        widget = standins.open_panel(standins.load_module(MODULE, monkeypatch), MODULE.name)
        widget.ui.createInputPathLineEdit.currentPath = str(tmp_path / "scan.nrrd")
        standins.QFileDialog.chosen = ""  # Cancel
        widget.ui.createInputFolderButton.click()
        assert widget._parameterNode.createInputPath == str(tmp_path / "scan.nrrd")
        standins.QFileDialog.chosen = str(tmp_path / "stack")
        widget.ui.createInputFolderButton.click()
        assert widget._parameterNode.createInputPath == str(tmp_path / "stack")
        assert standins.QFileDialog.asked[0][1] == str(tmp_path / "scan.nrrd")  # starts from the field's path
        widget.ui.createFromComboBox.currentIndex = 1  # a volume of the scene: no input path, no folder button
        assert not widget.ui.createInputFolderButton.enabled
    finally:
        standins.close_panels()


def test_a_scene_close_lets_the_roi_go(monkeypatch, tmp_path):
    """The panel observes the chosen ROI; a scene close removes it: the panel stops observing it then (it kept the
    removed node alive, observed, until the module was entered again)."""
    import slicer
    import slicer_gui_standins as standins

    standins.install(monkeypatch, tmp_path, (5, 8))
    try:
        widget = standins.open_panel(standins.load_module(MODULE, monkeypatch), MODULE.name)
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
        widget.ui.roiSelector.setCurrentNode(roi)
        assert widget.hasObserver(roi, vtk.vtkCommand.ModifiedEvent, widget.onRoiModified)
        widget.parent.isEntered = False  # the user is in another module: nothing binds a new node after the close
        slicer.mrmlScene.Clear(0)
        assert not any(observed[0] is roi for observed in widget.Observations)
        assert widget._roi.roi is None
    finally:
        standins.close_panels()


def test_create_from_a_float_volume_with_nan_shows_the_nan_note(monkeypatch, tmp_path):
    """The pyramid's NaN note (each level spreads the NaN of the one below) reaches the panel's status, beside the
    summary, from a file and from a node of the scene; a clean volume shows none."""
    pytest.importorskip("zarr")
    import slicer
    import slicer_gui_standins as standins

    from bigvolume import Geometry, Volume, write_volume

    array = np.random.default_rng(3).normal(100, 10, (24, 24, 24)).astype(np.float32)
    array[12, 12, 12] = np.nan
    source = write_volume(Volume(array, Geometry((24, 24, 24), (1.0, 1.0, 1.0))), tmp_path / "nan.nrrd")
    app = standins.install(monkeypatch, tmp_path, (5, 8))
    try:
        widget = standins.open_panel(standins.load_module(MODULE, monkeypatch), MODULE.name)
        widget.ui.createChunksSpinBox.value = 8
        widget.ui.createInputPathLineEdit.currentPath = str(source)
        widget.ui.createOutputPathLineEdit.currentPath = str(tmp_path / "nan.ome.zarr")
        app.settle()
        widget.ui.createButton.click()
        assert widget.logic.lastPyramid is not None, widget.ui.statusLabel.text
        lines = widget.ui.statusLabel.text.splitlines()
        assert str(tmp_path / "nan.ome.zarr") in lines[0] and any("are NaN" in line for line in lines[1:]), lines

        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "with nan")
        slicer.util.updateVolumeFromArray(node, array)
        widget.ui.createFromComboBox.currentIndex = 1
        widget.ui.createInputVolumeSelector.setCurrentNode(node)
        widget.ui.createOutputPathLineEdit.currentPath = str(tmp_path / "node.ome.zarr")
        app.settle()
        widget.ui.createButton.click()
        assert any("are NaN" in line for line in widget.ui.statusLabel.text.splitlines()[1:]), \
            widget.ui.statusLabel.text

        slicer.util.updateVolumeFromArray(node, np.nan_to_num(array))
        widget.ui.createOutputPathLineEdit.currentPath = str(tmp_path / "clean.ome.zarr")
        app.settle()
        widget.ui.createButton.click()
        assert widget.logic.lastPyramid is not None and "NaN" not in widget.ui.statusLabel.text, \
            widget.ui.statusLabel.text
    finally:
        standins.close_panels()
