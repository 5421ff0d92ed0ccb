"""Static checks particular to the AntiAliasedResample panel (the checks every module passes are in
test_slicer_modules.py): the input-file mode, the output selector, and the module file imported with stand-ins for
Slicer's Qt parts."""
import ast
import re

import pytest

from slicer_module_checks import REPO, SlicerModule, run_module_file

MODULE = SlicerModule("AntiAliasedResample")
# The input-file mode's widgets: name -> (class, parameter node field).
FILE_MODE_WIDGETS = {
    "inputFilePathLineEdit": ("ctkPathLineEdit", "inputFile"),
    "memoryLimitSpinBox": ("QDoubleSpinBox", "memoryLimitGB"),
    "alwaysStreamCheckBox": ("QCheckBox", "alwaysStream"),
    "saveBesideInputCheckBox": ("QCheckBox", "saveBesideInput"),
}


# --- parsing helpers --------------------------------------------------------------------------------------------


# --- the .ui file -----------------------------------------------------------------------------------------------
def test_the_panel_uses_its_apply_cancel_progress_and_result_widgets():
    assert {"applyButton", "cancelButton", "progressBar", "resultLabel"} <= MODULE.ui_attribute_uses()


def test_every_parameter_node_field_is_bound_to_a_widget():
    fields = set(MODULE.wrapper_fields())
    assert {"inputVolume", "outputVolume", "factor", "isotropic", "useSpacing", "method", "threads",
            "inputSource", "inputFile", "memoryLimitGB", "alwaysStream", "saveBesideInput"} <= fields
    # Paths: kept by the panel; the input the target spacing was started from: recorded by the panel, no widget.
    assert fields - set(MODULE.ui_parameter_bindings().values()) == set(MODULE.path_fields()) | {"spacingSource"}


def test_parameter_defaults_are_valid():
    fields = MODULE.wrapper_fields()
    DEFAULT_METHOD, METHODS = MODULE.import_lib("DEFAULT_METHOD", "METHODS")
    assert "Choice(list(METHODS))" in fields["method"][1] and fields["method"][2] == "DEFAULT_METHOD"
    assert DEFAULT_METHOD in METHODS


def test_output_selector_can_create_and_rename_and_input_takes_vectors():
    def props(name):
        widget = next(w for w in MODULE.ui_root().iter("widget") if w.get("name") == name)
        return {p.get("name"): p for p in widget.findall("property")}

    output = props("outputSelector")
    assert output["addEnabled"].findtext("bool") == "true"
    assert output["renameEnabled"].findtext("bool") == "true"
    assert output["noneEnabled"].findtext("bool") == "true"  # none: the logic creates a node of the input's class
    inputTypes = [s.text for s in props("inputSelector")["nodeTypes"].iter("string")]
    assert {"vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"} <= set(inputTypes)


def shown_by_mode():
    """From the widget's _showMode: names of the self.ui widgets made visible in file mode, and in scene mode."""
    fileMode, sceneMode = set(), set()
    for loop in ast.walk(MODULE.function("_showMode")):
        if isinstance(loop, ast.For):
            names = {n.attr for n in ast.walk(loop.iter) if isinstance(n, ast.Attribute)
                     and ast.unparse(n.value) == "self.ui"}
            value = loop.body[0].value
            (sceneMode if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not) else fileMode).update(names)
    return fileMode, sceneMode


def test_input_source_combo_box_offers_the_scene_and_a_file():
    fields = MODULE.wrapper_fields()
    assert MODULE.ui_widgets()["inputSourceComboBox"] == "QComboBox"
    assert MODULE.ui_parameter_bindings()["inputSourceComboBox"] == "inputSource"
    kind, annotation, default = fields["inputSource"]
    assert kind == "str" and annotation == "Annotated[str, Choice([FROM_SCENE, FROM_FILE])]"
    assert default == "FROM_SCENE"  # loaded volumes stay the default: the module worked that way before
    constants = {node.targets[0].id: node.value.value for node in MODULE.tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id in ("FROM_SCENE", "FROM_FILE")}
    assert set(constants) == {"FROM_SCENE", "FROM_FILE"} and constants["FROM_SCENE"] != constants["FROM_FILE"]
    assert "too big to load" in constants["FROM_FILE"]


def test_input_file_mode_widgets_exist_are_bound_and_used():
    widgets, bindings = MODULE.ui_widgets(), MODULE.ui_parameter_bindings()
    fields = MODULE.wrapper_fields()
    used = MODULE.ui_attribute_uses()
    for name, (cls, parameter) in FILE_MODE_WIDGETS.items():
        assert widgets.get(name) == cls, name
        # The path field is kept by the panel itself (PATH_FIELDS), the others by connectGui.
        assert bindings.get(name) == parameter or MODULE.path_fields().get(parameter) == name, name
        assert parameter in fields
        assert name in used, f"{name} is never referenced by the widget code"
        assert MODULE.ui_properties(name)["toolTip"].findtext("string"), f"{name} needs a tooltip"
    assert fields["inputFile"][0] == "str" and MODULE.path_fields() == {"inputFile": "inputFilePathLineEdit"}
    assert fields["saveBesideInput"][2] == "False" and fields["alwaysStream"][2] == "False"
    assert fields["memoryLimitGB"][2] == "0.0"  # 0 = automatic


def test_input_file_line_edit_accepts_every_readable_volume_format():
    INPUT_FILE_SUFFIXES, = MODULE.import_lib("INPUT_FILE_SUFFIXES", submodule="logic")
    props = MODULE.ui_properties("inputFilePathLineEdit")
    filters = [s.text for s in props["nameFilters"].iter("string")]
    patterns = set(re.findall(r"\*(\.[\w.]+)", filters[0]))
    assert patterns == set(INPUT_FILE_SUFFIXES), filters[0]
    assert "All files (*)" in filters  # names such as scan.NRRD or data without a suffix stay choosable
    flags = props["filters"].findtext("set").split("|")
    assert "ctkPathLineEdit::Files" in flags and "ctkPathLineEdit::Dirs" not in flags
    assert props["settingKey"].findtext("string")  # remembers recent files


def test_memory_limit_spin_box_means_automatic_at_zero():
    props = MODULE.ui_properties("memoryLimitSpinBox")
    assert float(props["minimum"].findtext("double")) == 0.0 == float(props["value"].findtext("double"))
    assert props["specialValueText"].findtext("string").startswith("automatic")
    assert props["suffix"].findtext("string").strip() == "GB"
    assert "automatic" in props["toolTip"].findtext("string")
    annotation = MODULE.wrapper_fields()["memoryLimitGB"][1]
    bounds = re.search(r"WithinRange\(([-\d.e]+),\s*([-\d.e]+)\)", annotation)
    assert float(props["maximum"].findtext("double")) == float(bounds.group(2))
    # The widget turns GB into bytes, and 0 into None (the Logic's "automatic").
    source = ast.unparse(MODULE.function("_fileSettings"))
    assert "memoryLimitGB * 1000000000.0" in source and "else None" in source


def test_file_mode_widgets_are_shown_only_in_file_mode_with_their_labels():
    fileMode, sceneMode = shown_by_mode()
    assert set(FILE_MODE_WIDGETS) <= fileMode
    assert {"inputSelector"} <= sceneMode and not fileMode & sceneMode
    for label, field in MODULE.form_rows():  # a hidden field must not leave its label behind
        if field in fileMode | sceneMode:
            assert label in (fileMode if field in fileMode else sceneMode), (label, field)
    assert "_showMode" in ast.unparse(MODULE.function("_checkCanApply"))


def test_apply_runs_process_file_in_file_mode_with_the_panel_settings():
    run = MODULE.function("_run")
    calls = {ast.unparse(node.func): node for node in ast.walk(run) if isinstance(node, ast.Call)}
    assert "self.logic.process" in calls and "self.logic.processFile" in calls
    processFile = calls["self.logic.processFile"]
    assert [ast.unparse(a) for a in processFile.args] == ["p.inputFile", "p.outputVolume"]
    keywords = {k.arg: ast.unparse(k.value) for k in processFile.keywords if k.arg is not None}
    assert keywords == {"saveBesideInput": "p.saveBesideInput"}
    # The rest comes from the panel as for the scene mode (factor/spacing, method, threads, progress) plus the
    # memory limit and streaming.
    unpacked = sorted(ast.unparse(k.value) for k in processFile.keywords if k.arg is None)
    assert unpacked == ["self._fileSettings()", "settings"]
    settings = next(node.value for node in ast.walk(run) if isinstance(node, ast.Assign)
                    and ast.unparse(node.targets[0]) == "settings")
    assert {"method", "threads", "progress"} <= {k.arg for k in settings.keywords}
    assert "self._settings()" in ast.unparse(settings)
    assert "self._run()" in ast.unparse(MODULE.function("onApplyButton"))
    plan = ast.unparse(MODULE.function("updatePlan"))  # once the settings settle
    assert "self.logic.describeFilePlan(p.inputFile" in plan and "self._fileSettings()" in plan
    # A new file starts the target spacing from its header (once the path settles), as picking a volume does.
    assert "self.logic.fileGeometry(p.inputFile)" in plan


def test_3d_preview_and_before_after_check_boxes_drive_the_logic_after_apply():
    bindings, fields = MODULE.ui_parameter_bindings(), MODULE.wrapper_fields()
    for widget, field in (("show3DCheckBox", "show3D"), ("beforeAfterCheckBox", "beforeAfter")):
        assert MODULE.ui_widgets()[widget] == "QCheckBox" and bindings[widget] == field
        assert fields[field][2] == "False"  # off by default: rendering costs GPU time
        assert MODULE.ui_properties(widget)["toolTip"].findtext("string")
    # After a successful Apply, in process or through the CLI module: the output, and the input only for before/after
    # in scene mode (a file has no node).
    assert "self._showOutput(outputNode)" in ast.unparse(MODULE.function("onApplyButton"))
    assert "self._showOutput(outputNode)" in ast.unparse(MODULE.function("_onCliModified"))
    shown = MODULE.function("_showOutput")
    branch = next(node for node in ast.walk(shown)
                  if isinstance(node, ast.If) and ast.unparse(node.test) == "p is not None and p.show3D")
    assert ast.unparse(branch.body[0]) == (
        "self._show3D(outputNode, p.inputVolume if p.beforeAfter and (not self._fileMode()) else None)")
    show = ast.unparse(MODULE.function("_show3D"))
    # The user's default rendering method: Slicer's volume rendering logic makes the display node.
    assert ("self.logic.showPreview(outputNode, inputNode, renderingLogic=slicer.modules.volumerendering.logic())"
            in show)
    assert "for index in range(layoutManager.threeDViewCount)" in show and ".resetFocalPoint()" in show


# --- the module file with Slicer's Qt parts stood in -----------------------------------------------------------
def test_module_file_loads_and_finds_the_core_from_the_source_tree(tmp_path):
    """Import the module file as Slicer would from "Additional module paths" (the module folder on sys.path only),
    with stand-ins for the parts of Slicer's Python that slicer-core lacks, and the bigvolume install hidden: the
    module must put the repository root on sys.path and its Logic must work on an MRML scene."""
    hidden = run_module_file(MODULE, tmp_path, f"""
        import AntiAliasedResample as m
        import bigvolume, numpy as np
        assert bigvolume.__file__.startswith({str(REPO / "bigvolume")!r}), bigvolume.__file__
        assert m.AntiAliasedResampleParameterNode.wrapped
        assert issubclass(m.AntiAliasedResampleLogic, m.ScriptedLoadableModuleLogic)
        assert issubclass(m.AntiAliasedResampleLogic, m.AntiAliasedResampleLibLogic)
        scene = slicer.vtkMRMLScene()
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
        slicer.util.updateVolumeFromArray(node, np.ones((4, 6, 8), np.float32))
        out = m.AntiAliasedResampleLogic().process(node, factor=2.0)
        assert out.GetImageData().GetDimensions() == (4, 3, 2)
        import os
        os.mkdir("data"), os.mkdir("temp")
        path = bigvolume.write_volume(bigvolume.Volume.from_array(np.ones((4, 6, 8), np.float32)), "data/v.nhdr")
        out = m.AntiAliasedResampleLogic().processFile(path, scene=scene, tempFolder="temp", memoryLimit=1)
        assert out.GetImageData().GetDimensions() == (4, 3, 2) and out.GetScene() is scene
        assert sorted(os.listdir("data")) == ["v.nhdr", "v.raw"] and os.listdir("temp") == []
        """)
    if not hidden:
        pytest.skip("bigvolume is installed in a way this test cannot hide; the fallback path was not exercised")


