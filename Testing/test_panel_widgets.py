"""The modules' real Widget classes driven as a user drives them, on a real slicer-core MRML scene, with the stand-ins
of slicer_gui_standins for the Qt and Slicer parts slicer-core lacks: settings kept across leaving and re-entering a
module with Slicer 5.8's connectGui (no tag returned) and 5.10's, Apply using them, and no re-entrancy during a run."""
import os
import tempfile

import numpy as np
import pytest
import slicer
import slicer.util

import slicer_gui_standins as standins
from slicer_module_checks import SlicerModule, modules_with_panels

MODULES = modules_with_panels()
VERSIONS = {"slicer-5.8": (5, 8), "slicer-5.10": (5, 10)}
each_module = pytest.mark.parametrize("module", MODULES, ids=str)
each_version = pytest.mark.parametrize("version", list(VERSIONS.values()), ids=list(VERSIONS))


@pytest.fixture(autouse=True)
def _close_panels():
    yield
    standins.close_panels()


def bound_combos(widget):
    return {name: w for name, w in vars(widget.ui).items()
            if isinstance(w, standins.ComboBox) and w.property("SlicerParameterName")}


def combo_looks(combo):
    """What the user sees of a combo box: its entries' labels and tooltips."""
    return [(item["text"], item.get(3)) for item in combo.items]


def panel(module, version, monkeypatch, tmp_path):
    app = standins.install(monkeypatch, tmp_path, version)
    return app, standins.open_panel(standins.load_module(module, monkeypatch), module.name)


@each_version
@each_module
def test_every_combo_keeps_its_choice_its_labels_and_tooltips_across_leave_and_enter(module, version, monkeypatch,
                                                                                      tmp_path):
    app, widget = panel(module, version, monkeypatch, tmp_path)
    combos = bound_combos(widget)
    assert len(combos) >= 2
    chosen = {}
    for name, combo in combos.items():
        parameter = combo.property("SlicerParameterName")
        default = getattr(widget._parameterNode, parameter)
        combo.currentIndex = combo.count - 1  # the user picks the last entry
        chosen[parameter] = getattr(widget._parameterNode, parameter)
        assert chosen[parameter] != default, name
    looks = {name: combo_looks(combo) for name, combo in combos.items()}
    for _ in range(3):  # visit another module and come back, three times
        standins.leave_and_come_back(widget)
        app.settle()
    fresh = widget.logic.getParameterNode()  # what a new wrapper reads from the MRML node
    for name, combo in combos.items():
        parameter = combo.property("SlicerParameterName")
        assert getattr(fresh, parameter) == chosen[parameter], (name, getattr(fresh, parameter))
        assert combo.currentIndex == combo.count - 1, name
        assert combo_looks(combo) == looks[name], name  # labels and tooltips survive
    if module.name == "AntiAliasedResample":
        assert all(tip for _, tip in combo_looks(widget.ui.methodComboBox))  # every method explains itself
    if module.name == "HazeRemoval":  # every level explains itself, auto first
        levels = combo_looks(widget.ui.levelComboBox)
        assert levels[0][0] == "auto" and all(tip for _, tip in levels) and len(levels) == 6


@each_version
def test_the_stand_in_reproduces_the_reset_of_the_template_binding_on_slicer_5_8(version, monkeypatch, tmp_path):
    """The template's pattern (connectGui on enter, disconnectGui(what it returned) on exit) loses the combo
    choices on 5.8 and keeps them on 5.10 (but loses the tooltips): the stand-in has the bug the panels avoid."""
    module = SlicerModule("AntiAliasedResample")
    standins.install(monkeypatch, tmp_path, version)
    loaded = standins.load_module(module, monkeypatch)
    ui = standins.child_widget_variables(standins.load_ui(module.ui_file))
    logic = loaded.AntiAliasedResampleLogic()
    wrapper = logic.getParameterNode()
    tag = wrapper.connectGui(ui)
    ui.methodComboBox.setItemData(0, "tooltip", 3)
    ui.methodComboBox.currentIndex = ui.methodComboBox.count - 1
    last = wrapper.method
    wrapper.disconnectGui(tag)
    logic.getParameterNode().connectGui(ui)  # enter() again
    if version < (5, 10):
        assert logic.getParameterNode().method != last  # silently back to a default
    else:
        assert logic.getParameterNode().method == last and ui.methodComboBox.itemData(0, 3) is None


def test_the_stand_in_wrapper_caches_values_until_the_node_is_modified_as_slicer_5_8_1(monkeypatch, tmp_path):
    """Slicer 5.8.1's wrapper (_CachedParameterWrapper) caches every value, node references included, and reads the
    MRML node again only on its ModifiedEvent: so does the stand-in, so that the tests see a panel keeping a stale
    wrapper (a node copied in by a scene load while the nodes it references were not in the scene yet)."""
    app, widget = panel(SlicerModule("AntiAliasedResample"), (5, 8), monkeypatch, tmp_path)
    p, volume = widget._parameterNode, add_volume(phantom(1))
    node = p.parameterNode
    wasModifying = node.StartModify()
    node.SetNodeReferenceID("inputVolume", volume.GetID())
    node.SetParameter("factor", "3.0")
    assert (p.inputVolume, p.factor) == (None, 2.0)  # the cache
    assert widget.logic.getParameterNode().inputVolume is volume  # a new wrapper reads the node
    node.EndModify(wasModifying)
    assert (p.inputVolume, p.factor) == (volume, 3.0)


def test_path_fields_show_no_dot_and_keep_the_restored_history_path(monkeypatch, tmp_path):
    module = SlicerModule("AntiAliasedResample")
    app = standins.install(monkeypatch, tmp_path, (5, 8))
    loaded = standins.load_module(module, monkeypatch)
    widget = loaded.AntiAliasedResampleWidget()
    standins.OPENED.append(widget)

    def load_ui_with_history(path):
        top = standins.load_ui(path)
        top.children["inputFilePathLineEdit"].currentPath = "/data/last.nrrd"  # what CTK restores from its history
        return top

    monkeypatch.setattr(slicer.util, "loadUI", load_ui_with_history)
    widget.setup()
    widget.parent.isEntered = True
    widget.enter()
    assert widget.ui.inputFilePathLineEdit.currentPath == "/data/last.nrrd"
    assert widget._parameterNode.inputFile == "/data/last.nrrd"
    widget.ui.inputFilePathLineEdit.currentPath = str(tmp_path / "other.nrrd")
    standins.leave_and_come_back(widget)
    app.settle()
    assert widget.ui.inputFilePathLineEdit.currentPath == str(tmp_path / "other.nrrd")
    assert widget.logic.getParameterNode().inputFile == str(tmp_path / "other.nrrd")


def test_image_stack_paths_live_in_the_parameter_node(monkeypatch, tmp_path):
    module = SlicerModule("ImageStackImport")
    app, widget = panel(module, (5, 8), monkeypatch, tmp_path)
    assert widget.ui.fileLineEdit.currentPath == "" and widget._parameterNode.inputFolder == ""  # no "."
    widget.ui.folderLineEdit.currentPath = str(tmp_path)
    widget.ui.nhdrPathLineEdit.currentPath = str(tmp_path / "out.nhdr")
    standins.leave_and_come_back(widget)
    fresh = widget.logic.getParameterNode()
    assert (fresh.inputFolder, fresh.inputFile, fresh.nhdrPath) == (str(tmp_path), "", str(tmp_path / "out.nhdr"))


# --- Apply after leaving and re-entering uses the settings -----------------------------------------------------------
def add_volume(array, spacing=(0.5, 0.75, 2.0), name="input"):
    import slicer
    from slicer.util import updateVolumeFromArray

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    updateVolumeFromArray(node, array)
    node.SetSpacing(*spacing)
    node.SetOrigin(-10.0, 20.0, 5.0)
    return node


def phantom(seed=0, shape=(20, 22, 24)):
    rng = np.random.default_rng(seed)
    array = np.abs(rng.normal(0, 20, shape))
    array[4:-4, 4:-4, 4:-4] = 800 + rng.normal(0, 20, (shape[0] - 8, shape[1] - 8, shape[2] - 8))
    return array.astype(np.int16)


def volume_nodes():
    import slicer

    return [n for n in slicer.util.getNodesByClass("vtkMRMLVolumeNode")]


@each_version
def test_resample_apply_after_reentry_uses_the_chosen_method_and_factor(version, monkeypatch, tmp_path):
    app, widget = panel(SlicerModule("AntiAliasedResample"), version, monkeypatch, tmp_path)
    source = add_volume(phantom(1))
    widget.ui.inputSelector.setCurrentNode(source)
    widget.ui.methodComboBox.currentIndex = list(widget.ui.methodComboBox.items).index(
        next(i for i in widget.ui.methodComboBox.items if i["text"] == "max"))
    widget.ui.factorSliderWidget.value = 4.0
    standins.leave_and_come_back(widget)
    app.settle()
    assert widget.ui.applyButton.enabled
    widget.ui.applyButton.click()
    result = widget.logic.lastResult
    assert result is not None and result.method == "max", widget.ui.resultLabel.text
    output = result.outputNode
    assert output.GetImageData().GetDimensions() == (6, 6, 5)
    assert np.allclose(output.GetSpacing(), (2.0, 3.0, 8.0))
    assert np.allclose(output.GetOrigin(), (-10 + 1.5 * 0.5, 20 + 1.5 * 0.75, 5 + 1.5 * 2.0))
    # "max" of each 4x4x4 block: the block maxima of the input (the geometry kept, the values ours).
    expected = phantom(1)[:20, :20, :24].reshape(5, 4, 5, 4, 6, 4).max(axis=(1, 3, 5))
    from slicer.util import arrayFromVolume
    assert np.array_equal(arrayFromVolume(output)[:, :5, :], expected)


@each_version
def test_a_target_spacing_applies_with_isotropic_still_ticked_from_before(version, monkeypatch, tmp_path):
    """Isotropic, then "Use target spacing": Apply went off ("isotropic goes with a factor, not with a spacing") with
    the isotropic box greyed out, so no way back but unticking the spacing first."""
    app, widget = panel(SlicerModule("AntiAliasedResample"), version, monkeypatch, tmp_path)
    widget.ui.inputSelector.setCurrentNode(add_volume(phantom(1)))  # spacing 0.5 0.75 2
    widget.ui.isotropicCheckBox.checked = True
    app.settle()
    assert widget.ui.applyButton.enabled, widget.ui.planLabel.text
    widget.ui.useSpacingCheckBox.checked = True
    for axis, value in zip("IJK", (1.0, 1.5, 4.0)):
        getattr(widget.ui, f"spacing{axis}SpinBox").value = value
    app.settle()
    assert not widget.ui.isotropicCheckBox.enabled and widget._parameterNode.isotropic
    assert widget.ui.applyButton.enabled, widget.ui.planLabel.text
    widget.ui.applyButton.click()
    result = widget.logic.lastResult
    assert result is not None and np.allclose(result.outputSpacing, (1.0, 1.5, 4.0)), widget.ui.resultLabel.text


@each_version
def test_haze_apply_after_reentry_uses_the_chosen_combos(version, monkeypatch, tmp_path):
    app, widget = panel(SlicerModule("HazeRemoval"), version, monkeypatch, tmp_path)
    source = add_volume(phantom(2))
    widget.ui.inputSelector.setCurrentNode(source)
    for name, value in (("airComboBox", "all"), ("fillModeComboBox", "value"), ("bitsComboBox", "8")):
        combo = getattr(widget.ui, name)
        combo.currentIndex = widget._parameterNode.fields[combo.property("SlicerParameterName")][1][0].choices.index(
            value)
    widget.ui.fillValueSpinBox.value = 7.0
    standins.leave_and_come_back(widget)
    widget.ui.applyButton.click()
    result = widget.logic.lastResult
    assert result is not None, widget.ui.resultLabel.text
    from slicer.util import arrayFromVolume
    output = arrayFromVolume(result.outputNode)
    assert output.dtype == np.uint8  # bits 8 kept across the visit
    assert result.reduceReport is not None


# --- no re-entrancy -------------------------------------------------------------------------------------------------
def test_no_event_processing_of_a_run_lets_user_input_in_and_a_second_apply_is_refused(monkeypatch, tmp_path):
    app, widget = panel(SlicerModule("HazeRemoval"), (5, 8), monkeypatch, tmp_path)
    # Another module's panel too: its Apply, clicked during this run, must not nest in it.
    other = standins.open_panel(standins.load_module(SlicerModule("AntiAliasedResample"), monkeypatch),
                                "AntiAliasedResample")
    source = add_volume(phantom(3))
    widget.ui.inputSelector.setCurrentNode(source)
    other.ui.inputSelector.setCurrentNode(source)
    app.settle()
    runs = []
    process = widget.logic.process
    monkeypatch.setattr(widget.logic, "process", lambda *a, **k: runs.append(1) or process(*a, **k))

    def clickApplyAgain():
        app.whileProcessing = None
        widget.onApplyButton()
        other.onApplyButton()

    app.whileProcessing = clickApplyAgain
    widget.ui.applyButton.click()
    assert app.processed >= 1 and all(app.inputBlocked)  # a modal dialog kept user input out
    assert runs == [1] and other.logic.lastResult is None and "in progress" in other.ui.resultLabel.text
    assert widget.logic.lastResult is not None and standins.QProgressDialog.shown == []


def test_a_scene_close_during_a_file_run_cancels_it_leaving_no_node_and_no_file(monkeypatch, tmp_path):
    import bigvolume
    import slicer

    app, widget = panel(SlicerModule("AntiAliasedResample"), (5, 8), monkeypatch, tmp_path)
    folder = tmp_path / "data"
    folder.mkdir()
    path = bigvolume.write_volume(bigvolume.Volume.from_array(phantom(4, (40, 30, 20)), spacing=(0.5, 0.5, 1.0)),
                                  str(folder / "big.nhdr"))
    before = sorted(os.listdir(folder))
    widget.ui.inputSourceComboBox.currentIndex = 1  # file on disk
    widget.ui.inputFilePathLineEdit.currentPath = str(path)
    widget.ui.saveBesideInputCheckBox.checked = True
    widget.ui.alwaysStreamCheckBox.checked = True
    app.settle()
    assert widget.ui.applyButton.enabled, widget.ui.planLabel.text
    app.whileProcessing = lambda: slicer.mrmlScene.Clear(0)  # File > Close Scene, somehow, during the run
    widget.ui.applyButton.click()
    assert widget.ui.resultLabel.text == "Cancelled"
    assert volume_nodes() == [] and sorted(os.listdir(folder)) == before
    assert not widget._progress.running and standins.QProgressDialog.shown == []


# --- the modules' own self-tests ------------------------------------------------------------------------------------
@each_version
@each_module
def test_the_modules_self_tests_pass(module, version, monkeypatch, tmp_path):
    """Each module's ScriptedLoadableModuleTest (what ctest and "Reload and Test" run in Slicer), its panel test
    included: non-default settings, another module and back, Apply."""
    app, widget = panel(module, version, monkeypatch, tmp_path)
    before = set(os.listdir(app.temporaryPath)), set(os.listdir(tempfile.gettempdir()))
    test = getattr(standins.load_module(module, monkeypatch), f"{module.name}Test")()
    result = test.run()
    assert result.wasSuccessful(), [text for _, text in result.errors + result.failures]
    # Its scratch files go too: "Reload and Test" in a user's Slicer must not fill the disk run after run. (In the
    # system's temporary folder only names of this module count: other processes write there meanwhile.)
    assert set(os.listdir(app.temporaryPath)) == before[0]
    assert not {name for name in set(os.listdir(tempfile.gettempdir())) - before[1] if module.name in name}


# --- settle timer, tiny spacings, ranges ---------------------------------------------------------------------------
def test_resample_reads_the_file_header_once_the_path_settles_not_per_keystroke(monkeypatch, tmp_path):
    import bigvolume

    app, widget = panel(SlicerModule("AntiAliasedResample"), (5, 10), monkeypatch, tmp_path)
    path = str(bigvolume.write_volume(bigvolume.Volume.from_array(phantom(5), spacing=(0.3, 0.3, 0.6)),
                                      str(tmp_path / "scan.nhdr")))
    reads = []
    geometry = widget.logic.fileGeometry
    monkeypatch.setattr(widget.logic, "fileGeometry", lambda p: reads.append(p) or geometry(p))
    widget.ui.inputSourceComboBox.currentIndex = 1
    for end in range(1, len(path) + 1):  # typed, one key at a time
        widget.ui.inputFilePathLineEdit.currentPath = path[:end]
    assert reads == [] and not widget.ui.applyButton.enabled
    app.settle()
    assert reads == [path] and widget.ui.applyButton.enabled, widget.ui.planLabel.text
    assert (widget._parameterNode.spacingI, widget._parameterNode.spacingK) == (0.6, 1.2)  # factor 2 x header


@pytest.mark.parametrize("spacing", [(1e-5, 2e-5, 4e-5), (3.3e-6, 1e-6, 1e-6), (0.00004, 0.5, 1.0)])
def test_tiny_spacings_start_a_valid_target_spacing(spacing, monkeypatch, tmp_path):
    """round(factor * spacing, 4) gave 0.0 below 5e-5 mm, which the spacing fields refuse (inside a slot, where the
    error was only logged): the target spacing now keeps 6 decimals and never drops below the smallest allowed."""
    import bigvolume_slicer

    app, widget = panel(SlicerModule("AntiAliasedResample"), (5, 8), monkeypatch, tmp_path)
    widget.ui.inputSelector.setCurrentNode(add_volume(phantom(6), spacing=spacing))
    p = widget._parameterNode
    for actual, original in zip((p.spacingI, p.spacingJ, p.spacingK), spacing):
        assert actual >= bigvolume_slicer.limits.MIN_SPACING
        assert actual == pytest.approx(2 * original, abs=5e-7)
    assert widget.ui.spacingISpinBox.value == p.spacingI


def test_the_panels_ranges_are_the_core_limits(monkeypatch, tmp_path):
    """Slicer's connectors set the spin boxes' ranges from WithinRange, which comes from bigvolume_slicer.limits,
    which takes the core's own limits where it has them."""
    from bigvolume.ops import haze
    from bigvolume.ops.precision import BITS_TO_DTYPE
    from bigvolume_slicer import limits

    app, widget = panel(SlicerModule("HazeRemoval"), (5, 8), monkeypatch, tmp_path)
    assert (widget.ui.dilateSpinBox.maximum, widget.ui.closeSpinBox.maximum) == (haze.MAX_RADIUS, haze.MAX_RADIUS)
    assert level_choices(widget) == [str(level) for level in haze.LEVEL_NAMES]  # auto, then every level
    assert limits.BITS == tuple(str(b) for b in BITS_TO_DTYPE)
    assert bits_choices(widget) == ["keep", *limits.BITS]
    for name in ("ImageStackImport", "AntiAliasedResample"):
        _, other = panel(SlicerModule(name), (5, 8), monkeypatch, tmp_path)
        factor = other.ui.factorXSpinBox if name == "ImageStackImport" else other.ui.factorSliderWidget
        assert (factor.minimum, factor.maximum) == (limits.MIN_FACTOR, limits.MAX_FACTOR)
        if name == "ImageStackImport":
            assert bits_choices(other) == ["keep", *limits.BITS]


def level_choices(widget):
    """The values behind the level combo box."""
    return list(widget._parameterNode.fields["level"][1][0].choices)


def bits_choices(widget):
    """The values behind the bits combo box (its Choice annotation)."""
    return list(widget._parameterNode.fields["bits"][1][0].choices)


def test_leaving_the_module_during_a_run_cancels_it(monkeypatch, tmp_path):
    app, widget = panel(SlicerModule("HazeRemoval"), (5, 10), monkeypatch, tmp_path)
    widget.ui.inputSelector.setCurrentNode(add_volume(phantom(7)))
    before = len(volume_nodes())
    app.whileProcessing = lambda: standins.select_module("Data")
    widget.ui.applyButton.click()
    assert widget.ui.resultLabel.text == "Cancelled" and len(volume_nodes()) == before


def write_stack(folder, seed=8, shape=(12, 16, 20)):
    import SimpleITK as sitk

    folder.mkdir()
    array = np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)
    for k, plane in enumerate(array):
        sitk.WriteImage(sitk.GetImageFromArray(plane), str(folder / f"slice_{k:03d}.tif"))
    return array


def test_a_scene_close_during_a_stack_import_with_nhdr_leaves_no_node_and_no_file(monkeypatch, tmp_path):
    import slicer

    app, widget = panel(SlicerModule("ImageStackImport"), (5, 8), monkeypatch, tmp_path)
    write_stack(tmp_path / "stack")
    before = sorted(os.listdir(tmp_path / "stack"))
    widget.ui.folderLineEdit.currentPath = str(tmp_path / "stack")
    widget.ui.saveNhdrCheckBox.checked = True
    widget.ui.nhdrPathLineEdit.currentPath = str(tmp_path / "stack" / "full.nhdr")
    app.settle()
    assert widget.ui.importButton.enabled, widget.ui.infoTextEdit.calls
    app.whileProcessing = lambda: slicer.mrmlScene.Clear(0)
    widget.ui.importButton.click()
    assert widget.ui.statusLabel.text == "Cancelled"
    assert volume_nodes() == [] and sorted(os.listdir(tmp_path / "stack")) == before
    # The panel is bound to the new scene's parameter node (new settings, the paths the fields show) and imports.
    app.whileProcessing = None
    assert not widget.ui.saveNhdrCheckBox.checked and widget._parameterNode.inputFolder == str(tmp_path / "stack")
    widget.ui.saveNhdrCheckBox.checked = True
    app.settle()
    widget.ui.importButton.click()
    assert len(volume_nodes()) == 1 and (tmp_path / "stack" / "full.nhdr").is_file(), widget.ui.statusLabel.text


def test_leaving_the_module_lets_a_cli_run_go_on(monkeypatch, tmp_path):
    import types

    app, widget = panel(SlicerModule("AntiAliasedResample"), (5, 10), monkeypatch, tmp_path)
    cancelled = []
    widget._cliNode = types.SimpleNamespace(Cancel=lambda: cancelled.append(True))
    widget._progress.start()
    standins.select_module("Data")
    assert cancelled == [] and not widget._progress.cancelRequested  # its own process: it goes on
    widget.onSceneStartClose(None, None)
    assert cancelled == [True]  # its output node leaves with the scene: stopped


@each_version
@pytest.mark.parametrize("removeSingletons", [0, 1], ids=["close", "clear-singletons"])
def test_after_a_scene_close_the_old_parameter_node_no_longer_drives_the_panel(version, removeSingletons,
                                                                                monkeypatch, tmp_path):
    """A scene close resets the parameter node (or, singletons removed, gives a new one): the panel shows the new
    settings, and the binding to the old node is really undone (on 5.8 with the tag connectGui did not return), so
    that one binding drives each widget."""
    app, widget = panel(SlicerModule("AntiAliasedResample"), version, monkeypatch, tmp_path)
    methods = widget._parameterNode.fields["method"][1][0].choices
    widget.ui.inputSourceComboBox.currentIndex = 1
    widget.ui.methodComboBox.currentIndex = methods.index("max")
    widget.ui.factorSliderWidget.value = 4.0
    widget.ui.alwaysStreamCheckBox.checked = True
    old = widget._parameterNode.parameterNode
    slicer.mrmlScene.Clear(removeSingletons)  # 1: the parameter node itself goes, the panel gets a new one
    p = widget._parameterNode
    assert (p.parameterNode is old) == (not removeSingletons)
    defaults = ("Volume in the scene", "lanczos", 2.0, False)
    assert (p.inputSource, p.method, p.factor, p.alwaysStream) == defaults  # the new node's
    widget.ui.methodComboBox.currentIndex = methods.index("mean")
    fresh = widget.logic.getParameterNode()
    assert (fresh.inputSource, fresh.method, fresh.factor, fresh.alwaysStream) == (
        "Volume in the scene", "mean", 2.0, False)
    assert widget.ui.factorSliderWidget.value == 2.0 and not widget.ui.alwaysStreamCheckBox.checked
    # One binding drives each widget: the one to the old node was undone, even where connectGui gave no tag.
    for name, w in vars(widget.ui).items():
        if w.property("SlicerParameterName"):
            bindings = [slot for slots in w._signals.values() for slot, _ in slots
                        if getattr(slot, "__func__", None) is standins._Connector._changed]
            assert len(bindings) == 1, (name, len(bindings))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_haze_preview_and_result_show_the_levels_threshold_and_warning(seed, monkeypatch, tmp_path):
    """The level combo box drives the run; the preview and the result say which threshold (auto's description by
    default) and show the warning when level 5 falls into the noise of CT air."""
    app, widget = panel(SlicerModule("HazeRemoval"), (5, 10), monkeypatch, tmp_path)
    rng = np.random.default_rng(seed)
    k, j, i = np.indices((24, 26, 28)) - np.array([11.5, 12.5, 13.5])[:, None, None, None]
    r = np.sqrt(k * k + j * j + i * i)
    ct = np.where(r < 9, 40.0, -1000.0) + np.where(r < 4, 960.0, 0.0) + rng.normal(0, 30, r.shape)  # air, tissue, bone
    widget.ui.inputSelector.setCurrentNode(add_volume(ct.astype(np.int16)))
    assert widget._parameterNode.level == "auto" and widget.ui.levelHintLabel.text.startswith("Automatic")
    widget.ui.previewButton.click()
    assert "(auto, on a denoised copy" in widget.ui.previewLabel.text and "Warning" not in widget.ui.previewLabel.text
    widget.ui.levelComboBox.currentIndex = widget.ui.levelComboBox.count - 1  # level 5
    app.settle()  # the shown preview follows the new level
    assert widget._parameterNode.level == "5" and widget.ui.levelHintLabel.text.startswith("4 classes")
    report = widget.logic.lastPreviewReport
    assert report.threshold.level == 5 and report.warning, widget.ui.previewLabel.text
    assert "(level 5:" in widget.ui.previewLabel.text and f"Warning: {report.warning}" in widget.ui.previewLabel.text
    widget.ui.applyButton.click()
    assert "(level 5:" in widget.ui.resultLabel.text and "Warning: " in widget.ui.resultLabel.text


# --- what the panels keep in the parameter node itself: scene close, save and load ------------------------------------
def save_scene():
    """File > Save: the scene (its parameter nodes with it) as MRML text."""
    scene = slicer.mrmlScene
    scene.SetSaveToXMLString(1)
    scene.Commit()
    scene.SetSaveToXMLString(0)
    return scene.GetSceneXMLString()


def load_scene(xml):
    """File > Load Scene: the scene is closed, then the saved one imported (a singleton parameter node takes the
    saved node's values)."""
    scene = slicer.mrmlScene
    scene.Clear(0)
    scene.SetLoadFromXMLString(1)
    scene.SetSceneXMLString(xml)
    scene.Import()
    scene.SetLoadFromXMLString(0)


def node_fields(wrapper) -> dict:
    """The parameters that reference MRML nodes: name -> node class name."""
    return {name: base.__name__ for name, (base, _, _) in wrapper.fields.items() if base.__name__.startswith("vtkMRML")}


def listed_before(xml, module, *others) -> bool:
    """Whether the scene file lists ``module``'s parameter node before every node named in ``others``."""
    return all(xml.index(f'singletonTag="{module}"') < xml.index(f' name="{other}"') for other in others)


@each_version
@each_module
def test_node_selections_of_a_scene_loaded_while_the_module_is_shown_are_the_panels(module, version, monkeypatch,
                                                                                     tmp_path):
    """Slicer's wrapper caches node references and reads them again only when the parameter node is modified. A scene
    load copies the saved parameter node in while the nodes it references, listed after it (the module was opened
    before the data was loaded), are not in the scene yet: a wrapper kept across the load held None for them."""
    app, widget = panel(module, version, monkeypatch, tmp_path)
    p = widget._parameterNode
    chosen = {}
    for name, className in node_fields(p).items():
        node = slicer.mrmlScene.AddNewNodeByClass(className, f"saved {name}")
        if node.IsA("vtkMRMLVolumeNode"):
            slicer.util.updateVolumeFromArray(node, phantom(len(chosen), (8, 9, 10)))
        setattr(p, name, node)
        chosen[name] = node.GetName()
    app.settle()
    saved = save_scene()
    assert chosen and listed_before(saved, module.name, *chosen.values())
    load_scene(saved)
    app.settle()
    bound = {w.property("SlicerParameterName"): w for w in vars(widget.ui).values()
             if isinstance(w, standins.NodeComboBox) and w.property("SlicerParameterName")}
    for _ in range(2):  # right after the load, and after visiting another module
        p = widget._parameterNode
        assert {name: getattr(p, name) and getattr(p, name).GetName() for name in chosen} == chosen
        assert {name: bound[name].currentNode() and bound[name].currentNode().GetName() for name in chosen} == chosen
        standins.leave_and_come_back(widget)
        app.settle()


def test_a_roi_saved_with_the_scene_is_the_one_imported_after_loading_it(monkeypatch, tmp_path):
    import SimpleITK as sitk

    app, widget = panel(SlicerModule("ImageStackImport"), (5, 8), monkeypatch, tmp_path)
    folder = tmp_path / "stack"
    folder.mkdir()
    for k in range(10):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((20, 24), 10 * k, np.uint16)), str(folder / f"s_{k:03d}.tif"))
    widget.ui.folderLineEdit.currentPath = str(folder)
    app.settle()
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenter(-5.5, -5.5, 2.5)  # RAS: columns 3..8, rows 3..8, slices 1..4 (an LPS stack at the origin)
    roi.SetSize(6.0, 6.0, 4.0)
    widget.ui.roiSelector.setCurrentNode(roi)
    app.settle()
    saved = save_scene()
    assert listed_before(saved, "ImageStackImport", "box")
    load_scene(saved)
    slicer.mrmlScene.GetFirstNodeByName("box").SetSize(6.0, 6.0, 4.0)  # kept in a file, not in the scene's XML
    app.settle()
    assert widget.ui.roiSelector.currentNode().GetName() == "box"
    widget.ui.importButton.click()
    (node,) = volume_nodes()
    assert node.GetImageData().GetDimensions() == (6, 6, 4), widget.ui.statusLabel.text


def test_resample_input_and_output_saved_with_the_scene_are_used_after_loading_it(monkeypatch, tmp_path):
    app, widget = panel(SlicerModule("AntiAliasedResample"), (5, 8), monkeypatch, tmp_path)
    add_volume(phantom(3, (8, 8, 8)), name="first")
    second = add_volume(phantom(4, (12, 12, 12)), name="second")
    kept = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "kept output")
    widget.ui.inputSelector.setCurrentNode(second)
    widget.ui.outputSelector.setCurrentNode(kept)
    app.settle()
    saved = save_scene()
    assert listed_before(saved, "AntiAliasedResample", "first", "second", "kept output")
    load_scene(saved)
    for name, seed, size in (("first", 3, 8), ("second", 4, 12)):  # voxels are kept in files, not in the XML
        slicer.util.updateVolumeFromArray(slicer.mrmlScene.GetFirstNodeByName(name), phantom(seed, (size,) * 3))
    app.settle()
    assert widget.ui.applyButton.enabled, widget.ui.planLabel.text
    standins.leave_and_come_back(widget)  # enter() chooses an input only where the node has none
    app.settle()
    widget.ui.applyButton.click()
    output = widget.logic.lastResult.outputNode if widget.logic.lastResult else None
    assert output is not None and output.GetName() == "kept output", widget.ui.resultLabel.text
    assert output.GetImageData().GetDimensions() == (6, 6, 6)  # the saved input, 12^3, at factor 2
    assert len(volume_nodes()) == 3


def write_spaced_stack(folder, spacing, slices=6):
    import SimpleITK as sitk

    folder.mkdir()
    for k in range(slices):
        image = sitk.GetImageFromArray(np.full((8, 9), k, np.uint16))
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(folder / f"s_{k:03d}.tif"))
    return folder


def spacing_of(p, axes="XYZ"):
    return tuple(getattr(p, f"spacing{axis}") for axis in axes)


@each_version
def test_image_stack_refills_the_spacing_of_a_fresh_node_after_a_scene_close(version, monkeypatch, tmp_path):
    """File > Close Scene: the new parameter node takes the folder the field still shows, and spacing 1.0. The
    spacing was filled from that folder, but for the old node: the new one is refilled from the headers (an Import
    with 1 mm voxels, silently, was what the panel did when it kept that in its own state)."""
    app, widget = panel(SlicerModule("ImageStackImport"), version, monkeypatch, tmp_path)
    stack = write_spaced_stack(tmp_path / "stack", (0.02, 0.03))
    widget.ui.folderLineEdit.currentPath = str(stack)
    app.settle()
    assert spacing_of(widget._parameterNode, "XY") == pytest.approx((0.02, 0.03))  # (TIFF: float32)
    slicer.mrmlScene.Clear(0)
    p = widget._parameterNode
    assert p.inputFolder == str(stack)  # the path the field shows (PathFields)
    app.settle()
    assert spacing_of(p, "XY") == pytest.approx((0.02, 0.03)), "spacing not refilled from the headers after a close"
    widget.ui.importButton.click()
    (node,) = volume_nodes()
    assert np.allclose(node.GetSpacing()[:2], (0.02, 0.03)), widget.ui.statusLabel.text


@each_version
def test_image_stack_keeps_the_spacing_a_node_was_saved_with(version, monkeypatch, tmp_path):
    """A spacing typed for an input stays while the node's input is the one its spacing was filled from: across
    leaving the module, and in a scene saved, then loaded after the panel looked at another stack."""
    app, widget = panel(SlicerModule("ImageStackImport"), version, monkeypatch, tmp_path)
    first = write_spaced_stack(tmp_path / "first", (0.02, 0.02))
    other = write_spaced_stack(tmp_path / "other", (0.5, 0.5))
    widget.ui.folderLineEdit.currentPath = str(first)
    app.settle()
    widget.ui.spacingXSpinBox.value = 0.7  # the headers are wrong: the user knows better
    app.settle()
    standins.leave_and_come_back(widget)
    app.settle()
    assert spacing_of(widget._parameterNode) == (0.7, 0.02, 0.02)
    saved = save_scene()
    widget.ui.folderLineEdit.currentPath = str(other)
    app.settle()
    assert spacing_of(widget._parameterNode) == (0.5, 0.5, 0.5)  # another input: filled from its headers
    load_scene(saved)
    app.settle()
    p = widget._parameterNode
    assert (p.inputFolder, widget.ui.folderLineEdit.currentPath) == (str(first), str(first))
    assert spacing_of(p) == (0.7, 0.02, 0.02), "the loaded node's own spacing was overwritten from the headers"
    widget.ui.folderLineEdit.currentPath = str(other)  # a new input: filled from its headers
    app.settle()
    assert spacing_of(p) == (0.5, 0.5, 0.5)


@each_version
def test_reversing_the_slice_order_keeps_the_spacing_typed(version, monkeypatch, tmp_path):
    """Ticking "Reverse slice order" filled the spacing from the headers again: PNG slices carry no pixel size, so
    the 0.012 0.012 0.05 typed became 1 1 1, and so did the imported volume's voxels."""
    import SimpleITK as sitk

    app, widget = panel(SlicerModule("ImageStackImport"), version, monkeypatch, tmp_path)
    (tmp_path / "png").mkdir()
    for k in range(4):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((6, 7), k, np.uint8)), str(tmp_path / "png" / f"s_{k}.png"))
    widget.ui.folderLineEdit.currentPath = str(tmp_path / "png")
    app.settle()
    assert widget.ui.spacingWarningLabel.visible
    for axis, value in zip("XYZ", (0.012, 0.012, 0.05)):
        getattr(widget.ui, f"spacing{axis}SpinBox").value = value
    app.settle()
    widget.ui.reverseCheckBox.checked = True
    app.settle()
    p = widget._parameterNode
    assert spacing_of(p) == (0.012, 0.012, 0.05)
    widget.ui.importButton.click()
    (node,) = volume_nodes()
    assert np.allclose(node.GetSpacing(), (0.012, 0.012, 0.05)), widget.ui.statusLabel.text
    # A node saved when the order was part of what the spacing was filled from keeps its spacing too.
    p.spacingSource = repr((p.inputFile, p.inputFolder, p.pattern, True))
    app.settle()
    widget.ui.reverseCheckBox.checked = False
    app.settle()
    assert spacing_of(p) == (0.012, 0.012, 0.05)


@each_version
def test_a_label_stack_downsampled_with_nearest_keeps_its_labels(version, monkeypatch, tmp_path):
    """The panel had no method: label slices downsampled x2 went through Lanczos, which made values between the
    labels (0..5, 7 lost); the method combo box reaches the core, and a preview keeps its own."""
    import SimpleITK as sitk

    app, widget = panel(SlicerModule("ImageStackImport"), version, monkeypatch, tmp_path)
    (tmp_path / "labels").mkdir()
    labels = np.random.default_rng(0).choice(np.array([0, 1, 2, 7], np.uint8), (8, 16, 16))
    for k, plane in enumerate(labels):
        sitk.WriteImage(sitk.GetImageFromArray(plane), str(tmp_path / "labels" / f"mask_{k:03d}.png"))
    widget.ui.folderLineEdit.currentPath = str(tmp_path / "labels")
    widget.ui.factor2Button.click()
    methods = widget._parameterNode.fields["method"][1][0].choices
    assert all(widget.ui.methodComboBox.itemData(index, 3) for index in range(len(methods)))  # tooltips
    widget.ui.methodComboBox.currentIndex = methods.index("nearest")
    standins.leave_and_come_back(widget)
    app.settle()
    widget.ui.importButton.click()
    widget.ui.previewButton.click()
    imported, preview = volume_nodes()
    assert set(np.unique(slicer.util.arrayFromVolume(imported))) <= {0, 1, 2, 7}, widget.ui.statusLabel.text
    assert imported.GetImageData().GetDimensions() == (8, 8, 4)
    assert widget._parameterNode.method == "nearest" and preview.GetImageData() is not None


def write_header_file(path, spacing):
    import bigvolume

    return str(bigvolume.write_volume(bigvolume.Volume.from_array(phantom(5), spacing=spacing), str(path)))


@each_version
def test_resample_restarts_the_target_spacing_of_a_fresh_node_after_a_scene_close(version, monkeypatch, tmp_path):
    app, widget = panel(SlicerModule("AntiAliasedResample"), version, monkeypatch, tmp_path)
    path = write_header_file(tmp_path / "scan.nhdr", (0.3, 0.3, 0.6))
    widget.ui.inputSourceComboBox.currentIndex = 1  # a file on disk
    widget.ui.inputFilePathLineEdit.currentPath = path
    app.settle()
    assert (widget._parameterNode.spacingI, widget._parameterNode.spacingK) == (0.6, 1.2)  # factor 2 x header
    slicer.mrmlScene.Clear(0)
    p = widget._parameterNode
    assert (p.inputFile, p.spacingI) == (path, 1.0)  # the path the field shows; the new node's spacing
    widget.ui.inputSourceComboBox.currentIndex = 1
    app.settle()
    assert (p.spacingI, p.spacingJ, p.spacingK) == (0.6, 0.6, 1.2), "target spacing not restarted from the header"


@each_version
def test_resample_keeps_the_target_spacing_a_node_was_saved_with(version, monkeypatch, tmp_path):
    app, widget = panel(SlicerModule("AntiAliasedResample"), version, monkeypatch, tmp_path)
    path = write_header_file(tmp_path / "scan.nhdr", (0.3, 0.3, 0.6))
    other = write_header_file(tmp_path / "other.nhdr", (1.0, 1.0, 1.0))
    widget.ui.inputSourceComboBox.currentIndex = 1
    widget.ui.inputFilePathLineEdit.currentPath = path
    app.settle()
    widget.ui.useSpacingCheckBox.checked = True
    widget.ui.spacingISpinBox.value = 5.0  # typed ...
    widget.ui.useSpacingCheckBox.checked = False  # ... and put aside for now
    app.settle()
    saved = save_scene()
    widget.ui.inputFilePathLineEdit.currentPath = other
    app.settle()
    assert widget._parameterNode.spacingI == 2.0  # another input: started from its header
    load_scene(saved)
    app.settle()
    p = widget._parameterNode
    assert (p.inputSource, p.inputFile) == ("File on disk (too big to load)", path)
    assert (p.spacingI, p.spacingJ, p.spacingK) == (5.0, 0.6, 1.2), "the loaded node's target spacing was replaced"


# --- path fields: an explicit "" in the node --------------------------------------------------------------------------
@each_version
def test_an_empty_path_in_the_node_is_shown_and_kept(version, monkeypatch, tmp_path):
    """ImageStackImport's nhdrPath "" means "beside the slices". A node that says "" (set by a script or a loaded
    scene) empties the field, and stays "" after leaving and re-entering the module: Save NHDR then writes beside
    the slices, not to the path the field showed before."""
    app, widget = panel(SlicerModule("ImageStackImport"), version, monkeypatch, tmp_path)
    stack = tmp_path / "stack"
    write_stack(stack)
    widget.ui.folderLineEdit.currentPath = str(stack)
    widget.ui.nhdrPathLineEdit.currentPath = str(tmp_path / "old.nhdr")
    widget.ui.saveNhdrCheckBox.checked = True
    widget._parameterNode.nhdrPath = ""
    assert widget.ui.nhdrPathLineEdit.currentPath == ""
    standins.leave_and_come_back(widget)
    app.settle()
    assert widget._parameterNode.nhdrPath == "" and widget.ui.nhdrPathLineEdit.currentPath == ""
    widget.ui.importButton.click()
    assert not (tmp_path / "old.nhdr").exists(), widget.ui.statusLabel.text
    assert (tmp_path / "stack.nhdr").is_file(), widget.ui.statusLabel.text  # beside the slices' folder


@each_version
def test_a_loaded_scene_keeps_its_empty_paths_even_when_the_module_was_not_shown(version, monkeypatch, tmp_path):
    """The panel takes the fields' paths into a fresh node only (see PathFields): a node loaded with a scene, while
    the module was not shown, keeps its "" on entering the module; a scene close gives a fresh node again, which
    takes the path the field shows."""
    app, widget = panel(SlicerModule("ImageStackImport"), version, monkeypatch, tmp_path)
    widget.ui.folderLineEdit.currentPath = str(tmp_path)
    saved = save_scene()  # nhdrPath "": beside the slices
    widget.ui.nhdrPathLineEdit.currentPath = str(tmp_path / "old.nhdr")
    standins.select_module("Data")
    load_scene(saved)
    standins.select_module("ImageStackImport")
    p = widget._parameterNode
    assert (p.inputFolder, p.nhdrPath) == (str(tmp_path), "") and widget.ui.nhdrPathLineEdit.currentPath == ""
    widget.ui.nhdrPathLineEdit.currentPath = str(tmp_path / "new.nhdr")
    slicer.mrmlScene.Clear(0)  # a fresh node: takes what the fields show
    assert widget._parameterNode.nhdrPath == str(tmp_path / "new.nhdr")


# --- the pattern field ------------------------------------------------------------------------------------------------
@each_version
def test_typing_inside_the_pattern_keeps_the_cursor_and_the_node_follows(version, monkeypatch, tmp_path):
    """Slicer 5.8's QLineEdit connector wrote the node's text back into the field after each key, which puts the
    cursor at the end: "on" typed after "rec" in "rec_%04d.tif" gave "reco_%04d.tifn". The panel keeps the pattern
    field itself (TextFields): the field is written only with a text it does not show."""
    app, widget = panel(SlicerModule("ImageStackImport"), version, monkeypatch, tmp_path)
    field = widget.ui.patternLineEdit
    field.typeAt(0, "rec_%04d.tif")
    p = widget._parameterNode
    assert p.pattern == "rec_%04d.tif"
    field.typeAt(3, "on")
    assert (field.text, field.cursorPosition, p.pattern) == ("recon_%04d.tif", 5, "recon_%04d.tif")
    p.pattern = "*.png"  # node -> field
    assert field.text == "*.png"
    standins.leave_and_come_back(widget)
    assert (field.text, widget.logic.getParameterNode().pattern) == ("*.png", "*.png")
    slicer.mrmlScene.Clear(0)  # a new node: its own pattern, none
    assert (field.text, widget._parameterNode.pattern) == ("", "")


# --- Run as CLI: no CLI node left behind ------------------------------------------------------------------------------
@pytest.mark.parametrize("end", ["Completed", "Cancelled", "CompletedWithErrors"])
def test_a_cli_run_leaves_no_cli_node_in_the_scene(end, monkeypatch, tmp_path):
    """slicer.cli.run adds a vtkMRMLCommandLineModuleNode to the scene (and a scene saved keeps it): once its
    output was read, or it failed or was cancelled, the panel removes it (after its event, not inside it)."""
    import types

    app, widget = panel(SlicerModule("AntiAliasedResample"), (5, 8), monkeypatch, tmp_path)

    class CliNode(slicer.vtkMRMLCommandLineModuleNode):
        def Cancel(self):  # what the CLI logic does, once the process stopped
            self.SetStatus(self.Cancelled)

    def run(cliModule, node, parameters, wait_for_completion=True):
        cliNode = slicer.mrmlScene.AddNode(CliNode())  # as slicer.cli.createNode
        cliNode.SetStatus(cliNode.Running)
        return cliNode

    monkeypatch.setattr(slicer, "cli", types.SimpleNamespace(run=run), raising=False)
    slicer.modules.bigvolumeresamplecli = "the CLI module"
    widget.ui.inputSelector.setCurrentNode(add_volume(phantom(9)))
    widget.ui.runAsCliCheckBox.checked = True
    app.settle()
    widget.ui.applyButton.click()
    cliNode = widget._cliNode
    assert cliNode is not None and cliNodes() == [cliNode], widget.ui.resultLabel.text
    if end == "Cancelled":
        widget.ui.cancelButton.click()
    else:
        cliNode.SetStatus(getattr(cliNode, end))
    assert widget._cliNode is None and not widget._progress.running
    assert cliNodes() == [cliNode]  # still there while its own event is processed
    app.settle()
    assert cliNodes() == [], widget.ui.resultLabel.text
    assert len(volume_nodes()) == (2 if end == "Completed" else 1)  # (an output made for a failed run goes)


@pytest.mark.parametrize("end", ["Completed", "Cancelled", "CompletedWithErrors"])
@pytest.mark.parametrize("chosen", [False, True], ids=["output-made-for-the-run", "output-chosen"])
def test_a_cli_run_shows_its_output_or_removes_the_node_it_made_for_it(end, chosen, monkeypatch, tmp_path):
    """"Run on GPU (CLI)" left the empty "<input> resampled" it made, selected, after a Cancel or a failure, and a
    completed run showed its output neither in the slice views nor (with "3D preview") in 3D, as Apply in process
    does; its progress bar kept the text of the run before."""
    import types

    app, widget = panel(SlicerModule("AntiAliasedResample"), (5, 8), monkeypatch, tmp_path)

    class CliNode(slicer.vtkMRMLCommandLineModuleNode):
        def Cancel(self):
            self.SetStatus(self.Cancelled)

    def run(cliModule, node, parameters, wait_for_completion=True):
        cliNode = slicer.mrmlScene.AddNode(CliNode())
        cliNode.SetStatus(cliNode.Running)
        return cliNode

    shown, rendered = [], []
    monkeypatch.setattr(slicer, "cli", types.SimpleNamespace(run=run), raising=False)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **layers: shown.append(layers))
    monkeypatch.setattr(widget.logic, "showPreview", lambda *nodes, **kwargs: rendered.append(nodes))
    monkeypatch.setattr(app, "layoutManager", lambda: types.SimpleNamespace(threeDViewCount=0), raising=False)
    slicer.modules.volumerendering = types.SimpleNamespace(logic=lambda: "volume rendering")
    source = add_volume(phantom(9))
    widget.ui.inputSelector.setCurrentNode(source)
    app.settle()
    widget.ui.applyButton.click()  # in process first: its bar ends on "done"
    inProcess = widget.logic.lastResult.outputNode
    assert shown == [{"background": inProcess, "fit": True}]
    shown.clear()
    mine = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mine") if chosen else None
    widget.ui.outputSelector.setCurrentNode(mine)
    widget.ui.runAsCliCheckBox.checked = True
    widget.ui.show3DCheckBox.checked = True
    slicer.modules.bigvolumeresamplecli = "the CLI module"
    app.settle()
    before = set(volume_nodes())
    widget.ui.applyButton.click()
    cliNode = widget._cliNode
    assert cliNode is not None and widget.ui.progressBar.format == "%p%", widget.ui.resultLabel.text
    output = widget._parameterNode.outputVolume
    assert (output is mine) if chosen else (output not in before and output.GetName().startswith("input resampled"))
    if end == "Cancelled":
        widget.ui.cancelButton.click()
    else:
        cliNode.SetStatus(getattr(cliNode, end))
    app.settle()
    if end == "Completed":
        assert shown == [{"background": output, "fit": True}] and rendered == [(output, None)]
        assert widget._parameterNode.outputVolume is output and output in volume_nodes()
    else:
        assert shown == [] and rendered == []
        assert set(volume_nodes()) == before | ({mine} if chosen else set())  # the user's own node stays
        assert widget._parameterNode.outputVolume is (mine if chosen else None)


def cliNodes():
    return list(slicer.util.getNodesByClass("vtkMRMLCommandLineModuleNode"))


# --- path fields: what CTK's ctkPathLineEdit signals ------------------------------------------------------------------
# A real ctkPathLineEdit emits currentPathChanged only for text its validator accepts (see the stand-in): never "",
# and with name filters only lower-case names ending in the filters' first extension word. The panels follow the
# text itself, so a cleared field, an upper-case name and a .nii.gz reach the parameter node.
PATH_MODULES = [module for module in MODULES if module.path_fields()]


@each_version
@pytest.mark.parametrize("module", PATH_MODULES, ids=str)
def test_every_path_field_reaches_the_node_cleared_upper_case_or_double_suffix(module, version, monkeypatch,
                                                                               tmp_path):
    app, widget = panel(module, version, monkeypatch, tmp_path)
    for parameter, name in module.path_fields().items():
        field = getattr(widget.ui, name)
        for path in (str(tmp_path / "first.nrrd"), str(tmp_path / "SLICE_0001.TIF"), str(tmp_path / "scan.nii.gz"),
                     str(tmp_path / "scan.ome.zarr"), ""):
            field.currentPath = path
            assert getattr(widget._parameterNode, parameter) == path, (name, path)
        standins.leave_and_come_back(widget)
        app.settle()
        assert getattr(widget.logic.getParameterNode(), parameter) == "" and field.currentPath == "", name


def test_a_folder_chosen_after_a_slice_file_is_the_stack_imported(monkeypatch, tmp_path):
    """Choosing a folder clears the slice-file field (a slice file wins over a folder): the clear must reach the
    node, or Import reads the earlier file's stack while the panel shows the folder."""
    app, widget = panel(SlicerModule("ImageStackImport"), (5, 8), monkeypatch, tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    write_stack(first, shape=(4, 6, 8))
    write_stack(second, shape=(3, 10, 12))
    widget.ui.fileLineEdit.currentPath = str(sorted(first.iterdir())[0])
    app.settle()
    widget.ui.folderLineEdit.currentPath = str(second)
    app.settle()
    assert widget.ui.fileLineEdit.currentPath == "" and widget._parameterNode.inputFile == ""
    widget.ui.importButton.click()
    assert [n.GetImageData().GetDimensions() for n in volume_nodes()] == [(12, 10, 3)], widget.ui.statusLabel.text


def test_an_upper_case_slice_file_is_imported(monkeypatch, tmp_path):
    app, widget = panel(SlicerModule("ImageStackImport"), (5, 8), monkeypatch, tmp_path)
    stack = tmp_path / "stack"
    write_stack(stack, shape=(3, 10, 12))
    for path in sorted(stack.iterdir()):
        path.rename(path.with_name(path.name.upper()))
    widget.ui.fileLineEdit.currentPath = str(sorted(stack.iterdir())[0])
    app.settle()
    widget.ui.importButton.click()
    assert [n.GetImageData().GetDimensions() for n in volume_nodes()] == [(12, 10, 3)], widget.ui.statusLabel.text


def test_the_paths_a_run_used_go_into_the_fields_history(monkeypatch, tmp_path):
    """CTK keeps a path field's drop-down of recent paths only when asked (addCurrentPathToHistory): every panel asks
    after a run, for the paths it used."""
    app, widget = panel(SlicerModule("ImageStackImport"), (5, 8), monkeypatch, tmp_path)
    stack = tmp_path / "stack"
    write_stack(stack, shape=(3, 10, 12))
    widget.ui.folderLineEdit.currentPath = str(stack)
    widget.ui.nhdrPathLineEdit.currentPath = str(tmp_path / "kept.nhdr")
    widget.ui.saveNhdrCheckBox.checked = True
    app.settle()
    widget.ui.importButton.click()
    assert (tmp_path / "kept.nhdr").is_file(), widget.ui.statusLabel.text
    remembered = ("addCurrentPathToHistory", ())
    assert remembered in widget.ui.folderLineEdit.calls and remembered in widget.ui.nhdrPathLineEdit.calls
    assert remembered not in widget.ui.fileLineEdit.calls  # empty: nothing to remember
