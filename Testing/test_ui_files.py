"""Static checks of the AntiAliasedResample Slicer module that need no Slicer application: the .ui file against the
module file and its parameter node wrapper, the CMake lists against the files on disk, and the module/Lib split."""
import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE = "AntiAliasedResample"
MODULE_DIR = REPO / MODULE
MODULE_FILE = MODULE_DIR / f"{MODULE}.py"
LIB_DIR = MODULE_DIR / f"{MODULE}Lib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / f"{MODULE}.ui"
ICON_FILE = MODULE_DIR / "Resources" / "Icons" / f"{MODULE}.png"

# Widget classes the parameterNodeWrapper's GUI connectors accept for each field type (they compare exact classes).
CONNECTOR_WIDGETS = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider", "QComboBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "QComboBox"},
    "str": {"QComboBox", "QLineEdit", "QTextEdit"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
    "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
}
# The input-file mode's widgets: name -> (class, parameter node field).
FILE_MODE_WIDGETS = {
    "inputFilePathLineEdit": ("ctkPathLineEdit", "inputFile"),
    "memoryLimitSpinBox": ("QDoubleSpinBox", "memoryLimitGB"),
    "alwaysStreamCheckBox": ("QCheckBox", "alwaysStream"),
    "saveBesideInputCheckBox": ("QCheckBox", "saveBesideInput"),
}


# --- parsing helpers --------------------------------------------------------------------------------------------
def parse(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def ui_root():
    return ET.parse(UI_FILE).getroot()


def ui_widgets():
    """name -> class of every widget in the .ui (the root included)."""
    return {w.get("name"): w.get("class") for w in ui_root().iter("widget")}


def ui_object_names():
    """Every named object childWidgetVariables can expose: widgets, layouts, spacers."""
    root = ui_root()
    return {e.get("name") for tag in ("widget", "layout", "spacer") for e in root.iter(tag) if e.get("name")}


def ui_parameter_bindings():
    """widget name -> SlicerParameterName value."""
    bindings = {}
    for widget in ui_root().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bindings[widget.get("name")] = prop.findtext("string")
    return bindings


def wrapper_class(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper")
                or (isinstance(d, ast.Call) and getattr(d.func, "id", None) == "parameterNodeWrapper")
                for d in node.decorator_list):
            return node
    raise AssertionError("no @parameterNodeWrapper class in the module file")


def wrapper_fields(tree):
    """field name -> (base type name, annotation source, default or None)."""
    fields = {}
    for statement in wrapper_class(tree).body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            annotation = statement.annotation
            base = annotation
            if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", None) == "Annotated":
                base = annotation.slice.elts[0]
            baseName = ast.unparse(base)
            kind = "node" if baseName.startswith("vtkMRML") else baseName
            default = ast.unparse(statement.value) if statement.value is not None else None
            fields[statement.target.id] = (kind, ast.unparse(annotation), default)
    return fields


def imported_modules(tree):
    """Top-level names of every module imported, plus ``module.name`` for each ``from module import name``."""
    modules, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module)
            for alias in node.names:
                names.add(f"{node.module}.{alias.name}")
    return modules, names


def ui_attribute_uses(tree):
    """Names X used as ``self.ui.X`` in the module file."""
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def cmake_listed_files(cmake_text):
    """Module-relative paths listed in a module CMakeLists (with ${MODULE_NAME} expanded)."""
    name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", cmake_text)
    text = cmake_text.replace("${MODULE_NAME}", name.group(1)) if name else cmake_text
    text = re.sub(r"#[^\n]*", "", text)
    return set(re.findall(r"[\w./-]+\.(?:py|ui|png|svg|xml|json|txt|csv)\b", text)) - {"CMakeLists.txt"}


# --- the .ui file -----------------------------------------------------------------------------------------------
def test_ui_file_is_a_qmrmlwidget_form():
    root = ui_root()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == MODULE
    assert root.findtext("class") == MODULE


def test_every_self_ui_name_exists_in_the_ui_file():
    used = ui_attribute_uses(parse(MODULE_FILE))
    assert {"applyButton", "cancelButton", "progressBar", "resultLabel"} <= used
    missing = used - ui_object_names()
    assert not missing, f"self.ui.<name> used in {MODULE_FILE.name} but absent from {UI_FILE.name}: {missing}"


def test_ui_widget_names_are_unique():
    names = [e.get("name") for tag in ("widget", "layout", "spacer") for e in ui_root().iter(tag)]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates


def test_every_bound_widget_names_a_parameter_node_field_and_can_represent_it():
    fields = wrapper_fields(parse(MODULE_FILE))
    bindings = ui_parameter_bindings()
    widgets = ui_widgets()
    assert bindings, "no widget has the SlicerParameterName property"
    unknown = {w: p for w, p in bindings.items() if p not in fields}
    assert not unknown, f"SlicerParameterName values that are not parameter node fields: {unknown}"
    for widget, parameter in bindings.items():
        kind, annotation, _ = fields[parameter]
        assert widgets[widget] in CONNECTOR_WIDGETS[kind], (
            f"{widget} ({widgets[widget]}) cannot represent {parameter}: {annotation}")
        if widgets[widget] in ("ctkSliderWidget", "QSlider"):
            assert "WithinRange" in annotation, f"{parameter}: a slider needs a bounded type (WithinRange)"
        if widgets[widget] == "QComboBox" and kind != "enum":
            assert "Choice" in annotation, f"{parameter}: a combo box needs the Choice annotation"
    duplicated = {p for p in bindings.values() if list(bindings.values()).count(p) > 1}
    assert not duplicated


def test_every_parameter_node_field_is_bound_to_a_widget():
    fields = set(wrapper_fields(parse(MODULE_FILE)))
    assert {"inputVolume", "outputVolume", "factor", "isotropic", "useSpacing", "method", "threads",
            "inputSource", "inputFile", "memoryLimitGB", "alwaysStream", "saveBesideInput"} <= fields
    assert fields - set(ui_parameter_bindings().values()) == set()


def test_parameter_defaults_are_valid():
    fields = wrapper_fields(parse(MODULE_FILE))
    for name, (kind, annotation, default) in fields.items():
        bounds = re.search(r"WithinRange\(([-\d.e]+),\s*([-\d.e]+)\)", annotation)
        if bounds and default is not None:
            assert float(bounds.group(1)) <= float(default) <= float(bounds.group(2)), name
    sys.path.insert(0, str(MODULE_DIR))
    try:
        from AntiAliasedResampleLib import DEFAULT_METHOD, METHODS
    finally:
        sys.path.remove(str(MODULE_DIR))
    assert "Choice(list(METHODS))" in fields["method"][1] and fields["method"][2] == "DEFAULT_METHOD"
    assert DEFAULT_METHOD in METHODS


def test_node_combo_boxes_get_the_scene_and_custom_widgets_are_declared():
    root = ui_root()
    widgets = ui_widgets()
    connected = {(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                 for c in root.iter("connection")}
    for name, cls in widgets.items():
        if cls == "qMRMLNodeComboBox":
            assert (MODULE, "mrmlSceneChanged(vtkMRMLScene*)", name, "setMRMLScene(vtkMRMLScene*)") in connected, name
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {cls for cls in widgets.values() if cls.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widgets without a <customwidget> entry: {custom - declared}"
    for receiver in {c[2] for c in connected}:
        assert receiver in widgets


def test_output_selector_can_create_and_rename_and_input_takes_vectors():
    def props(name):
        widget = next(w for w in ui_root().iter("widget") if w.get("name") == name)
        return {p.get("name"): p for p in widget.findall("property")}

    output = props("outputSelector")
    assert output["addEnabled"].findtext("bool") == "true"
    assert output["renameEnabled"].findtext("bool") == "true"
    assert output["noneEnabled"].findtext("bool") == "true"  # none: the logic creates a node of the input's class
    inputTypes = [s.text for s in props("inputSelector")["nodeTypes"].iter("string")]
    assert {"vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"} <= set(inputTypes)


def ui_properties(name):
    widget = next(w for w in ui_root().iter("widget") if w.get("name") == name)
    return {p.get("name"): p for p in widget.findall("property")}


def form_rows():
    """(label widget name, field widget name) of every two-column row of the .ui's form layouts."""
    rows = []
    for layout in ui_root().iter("layout"):
        if layout.get("class") != "QFormLayout":
            continue
        cells = {}
        for item in layout.findall("item"):
            widget = item.find("widget")
            if widget is not None and item.get("row") is not None:
                cells[(int(item.get("row")), int(item.get("column", 0)))] = widget.get("name")
        rows += [(cells[(r, 0)], cells[(r, 1)]) for r, c in cells if c == 1 and (r, 0) in cells]
    return rows


def module_function(name):
    return next(node for node in ast.walk(parse(MODULE_FILE)) if isinstance(node, ast.FunctionDef)
                and node.name == name)


def shown_by_mode():
    """From the widget's _showMode: names of the self.ui widgets made visible in file mode, and in scene mode."""
    fileMode, sceneMode = set(), set()
    for loop in ast.walk(module_function("_showMode")):
        if isinstance(loop, ast.For):
            names = {n.attr for n in ast.walk(loop.iter) if isinstance(n, ast.Attribute)
                     and ast.unparse(n.value) == "self.ui"}
            value = loop.body[0].value
            (sceneMode if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not) else fileMode).update(names)
    return fileMode, sceneMode


def test_input_source_combo_box_offers_the_scene_and_a_file():
    fields = wrapper_fields(parse(MODULE_FILE))
    assert ui_widgets()["inputSourceComboBox"] == "QComboBox"
    assert ui_parameter_bindings()["inputSourceComboBox"] == "inputSource"
    kind, annotation, default = fields["inputSource"]
    assert kind == "str" and annotation == "Annotated[str, Choice([FROM_SCENE, FROM_FILE])]"
    assert default == "FROM_SCENE"  # loaded volumes stay the default: the module worked that way before
    constants = {node.targets[0].id: node.value.value for node in parse(MODULE_FILE).body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id in ("FROM_SCENE", "FROM_FILE")}
    assert set(constants) == {"FROM_SCENE", "FROM_FILE"} and constants["FROM_SCENE"] != constants["FROM_FILE"]
    assert "too big to load" in constants["FROM_FILE"]


def test_input_file_mode_widgets_exist_are_bound_and_used():
    widgets, bindings = ui_widgets(), ui_parameter_bindings()
    fields = wrapper_fields(parse(MODULE_FILE))
    used = ui_attribute_uses(parse(MODULE_FILE))
    for name, (cls, parameter) in FILE_MODE_WIDGETS.items():
        assert widgets.get(name) == cls, name
        assert bindings.get(name) == parameter, name
        assert parameter in fields
        assert name in used, f"{name} is never referenced by the widget code"
        assert ui_properties(name)["toolTip"].findtext("string"), f"{name} needs a tooltip"
    assert fields["inputFile"][0] == "pathlib.Path"
    assert fields["saveBesideInput"][2] == "False" and fields["alwaysStream"][2] == "False"
    assert fields["memoryLimitGB"][2] == "0.0"  # 0 = automatic


def test_input_file_line_edit_accepts_every_readable_volume_format():
    sys.path.insert(0, str(MODULE_DIR))
    try:
        from AntiAliasedResampleLib.logic import INPUT_FILE_SUFFIXES
    finally:
        sys.path.remove(str(MODULE_DIR))
    props = ui_properties("inputFilePathLineEdit")
    filters = [s.text for s in props["nameFilters"].iter("string")]
    patterns = set(re.findall(r"\*(\.[\w.]+)", filters[0]))
    assert patterns == set(INPUT_FILE_SUFFIXES), filters[0]
    assert "All files (*)" in filters  # names such as scan.NRRD or data without a suffix stay choosable
    flags = props["filters"].findtext("set").split("|")
    assert "ctkPathLineEdit::Files" in flags and "ctkPathLineEdit::Dirs" not in flags
    assert props["settingKey"].findtext("string")  # remembers recent files


def test_memory_limit_spin_box_means_automatic_at_zero():
    props = ui_properties("memoryLimitSpinBox")
    assert float(props["minimum"].findtext("double")) == 0.0 == float(props["value"].findtext("double"))
    assert props["specialValueText"].findtext("string").startswith("automatic")
    assert props["suffix"].findtext("string").strip() == "GB"
    assert "automatic" in props["toolTip"].findtext("string")
    annotation = wrapper_fields(parse(MODULE_FILE))["memoryLimitGB"][1]
    bounds = re.search(r"WithinRange\(([-\d.e]+),\s*([-\d.e]+)\)", annotation)
    assert float(props["maximum"].findtext("double")) == float(bounds.group(2))
    # The widget turns GB into bytes, and 0 into None (the Logic's "automatic").
    source = ast.unparse(module_function("_fileSettings"))
    assert "memoryLimitGB * 1000000000.0" in source and "else None" in source


def test_file_mode_widgets_are_shown_only_in_file_mode_with_their_labels():
    fileMode, sceneMode = shown_by_mode()
    assert set(FILE_MODE_WIDGETS) <= fileMode
    assert {"inputSelector"} <= sceneMode and not fileMode & sceneMode
    for label, field in form_rows():  # a hidden field must not leave its label behind
        if field in fileMode | sceneMode:
            assert label in (fileMode if field in fileMode else sceneMode), (label, field)
    assert "_showMode" in ast.unparse(module_function("_checkCanApply"))


def test_apply_runs_process_file_in_file_mode_with_the_panel_settings():
    run = module_function("_run")
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
    assert "self._run()" in ast.unparse(module_function("onApplyButton"))
    plan = ast.unparse(module_function("_checkCanApply"))
    assert "self.logic.describeFilePlan(p.inputFile" in plan and "self._fileSettings()" in plan
    # Picking a file starts the target spacing from its header, as picking a volume does.
    assert "self.logic.fileGeometry(path)" in ast.unparse(module_function("onInputFileChanged"))
    setup = ast.unparse(module_function("setup"))
    assert "self.ui.inputFilePathLineEdit.connect('currentPathChanged(QString)', self.onInputFileChanged)" in setup


# --- CMake ------------------------------------------------------------------------------------------------------
def module_files():
    return {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
            if p.is_file() and p.suffix in (".py", ".ui", ".png") and "__pycache__" not in p.parts}


def test_module_cmakelists_lists_exactly_the_module_files():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = cmake_listed_files(text)
    assert listed == module_files(), (f"not listed: {module_files() - listed}; "
                                      f"listed but missing: {listed - module_files()}")
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"NAME\s+\$\{MODULE_NAME\}", text) and f"set(MODULE_NAME {MODULE})" in text


def test_extension_cmakelists():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(SlicerBigVolume\)", text, re.M)
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                     "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"^set\({variable}\s+\"[^\"]+\"\)", text, re.M), variable
    assert text.index("find_package(Slicer REQUIRED)") < text.index("include(${Slicer_USE_FILE})")
    subdirectories = set(re.findall(r"^add_subdirectory\((\w+)\)", text, re.M))
    modules = {p.parent.name for p in REPO.glob("*/CMakeLists.txt")}
    assert MODULE in subdirectories and subdirectories == modules
    install = re.search(r"install\(DIRECTORY bigvolume\s+DESTINATION \$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}"
                        r"[^)]*PATTERN \"\*\.py\"", text)
    assert install, "the core package must be installed beside the scripted modules"
    assert text.rstrip().endswith("include(${Slicer_EXTENSION_CPACK})")
    assert text.index("include(${Slicer_EXTENSION_GENERATE_CONFIG})") < text.index("include(${Slicer_EXTENSION_CPACK})")


FAKE_SLICER = {
    "SlicerConfig.cmake": """
        set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
        set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
        set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
        set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
        set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
        """,
    "UseSlicer.cmake": """
        include(CMakeParseArguments)
        macro(slicerMacroBuildScriptedModule)
          cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
          foreach(f ${MY_SCRIPTS} ${MY_RESOURCES})
            if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
              message(FATAL_ERROR "listed but missing: ${f}")
            endif()
            get_filename_component(d ${f} DIRECTORY)
            install(FILES ${f} DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${d})
          endforeach()
        endmacro()
        """,
    "Empty.cmake": "",
}


@pytest.mark.skipif(not shutil.which("cmake") or not (shutil.which("cc") or shutil.which("gcc")),
                    reason="needs cmake and a C compiler (project() enables C/C++)")
def test_extension_installs_the_module_beside_the_core_package(tmp_path):
    """Configure, build and install against a stand-in Slicer: the installed tree must import like Slicer would."""
    fake = tmp_path / "fake-slicer"
    fake.mkdir()
    for name, text in FAKE_SLICER.items():
        (fake / name).write_text(textwrap.dedent(text))
    build, prefix = tmp_path / "build", tmp_path / "install"
    for command in (["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={fake}"],
                    ["cmake", "--build", str(build)],
                    ["cmake", "--install", str(build), "--prefix", str(prefix)]):
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    modules = prefix / "lib/Slicer-5.8/qt-scripted-modules"
    core = {p.name for p in (REPO / "bigvolume").glob("*.py")}
    assert {p.name for p in (modules / "bigvolume").iterdir()} == core
    assert {p.name for p in (build / "lib/Slicer-5.8/qt-scripted-modules/bigvolume").iterdir()} == core
    installed = {p.relative_to(modules).as_posix() for p in modules.rglob("*") if p.is_file()
                 and "bigvolume" not in p.parts}
    assert module_files() <= installed, module_files() - installed  # other modules install beside it


# --- the module / Lib split -------------------------------------------------------------------------------------
ALGORITHM_MODULES = {"numpy", "scipy", "SimpleITK", "itk", "bigvolume", "vtk.util.numpy_support", "skimage"}


def test_module_file_holds_no_algorithm():
    """Outside its self test (which builds a synthetic volume with numpy), the module file imports nothing that
    computes: all the work goes through AntiAliasedResampleLib."""
    tree = parse(MODULE_FILE)
    testClasses = [node for node in tree.body if isinstance(node, ast.ClassDef)
                   and any(ast.unparse(base) == "ScriptedLoadableModuleTest" for base in node.bases)]
    assert testClasses, "no ScriptedLoadableModuleTest class"
    outside = ast.Module(body=[node for node in tree.body if node not in testClasses], type_ignores=[])
    modules, _ = imported_modules(outside)
    allowed = {"importlib.util", "os", "pathlib", "sys", "time", "typing", "logging", "qt", "ctk", "vtk", "slicer",
               "slicer.ScriptedLoadableModule", "slicer.util", "slicer.parameterNodeWrapper", "slicer.i18n",
               "AntiAliasedResampleLib"}
    assert modules <= allowed, f"unexpected imports in the module file: {modules - allowed}"
    assert "AntiAliasedResampleLib" in modules
    names = {n.id for n in ast.walk(outside) if isinstance(n, ast.Name)}
    assert not names & {"np", "numpy", "bigvolume", "sitk"}
    assert not any(isinstance(n, ast.Attribute) and ast.unparse(n).startswith("vtk.vtkImage")
                   for n in ast.walk(outside)), "no VTK image filters in the module file"


def slicer_attribute_uses(tree):
    """Dotted names starting with ``slicer.`` (slicer.app, slicer.util.loadUI, ...)."""
    return {ast.unparse(n) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, (ast.Name, ast.Attribute))
            and ast.unparse(n).startswith("slicer.")}


def test_lib_imports_no_qt_and_only_app_free_slicer_util_functions():
    appFree = {"arrayFromVolume", "updateVolumeFromArray", "arrayFromVTKMatrix", "vtkMatrixFromArray",
               "arrayFromVolumeModified", "NodeModify"}
    for path in LIB_DIR.glob("*.py"):
        tree = parse(path)
        modules, names = imported_modules(tree)
        roots = {m.split(".")[0] for m in modules}
        assert not roots & {"qt", "ctk", "PythonQt", "__main__"}, (path.name, modules)
        assert not modules & {"slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}, path.name
        utilNames = {n.split(".", 2)[2] for n in names if n.startswith("slicer.util.")}
        assert utilNames <= appFree, (path.name, utilNames - appFree)
        used = slicer_attribute_uses(tree)
        assert not {u for u in used if u.startswith(("slicer.app", "slicer.mrmlScene", "slicer.modules"))}, (
            f"{path.name} must not need the Slicer application: {used}")
        assert {u.split(".")[2] for u in used if u.startswith("slicer.util.")} <= appFree, path.name


def test_lib_imports_without_qt_in_a_fresh_interpreter(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(MODULE_DIR)!r})
        import AntiAliasedResampleLib
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("qt", "ctk", "PythonQt"))
        assert not loaded, loaded
        assert AntiAliasedResampleLib.AntiAliasedResampleLogic().lastResult is None
        print("ok")
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr


STUBS = {
    "qt.py": """
        class Qt:
            ToolTipRole = 3
        """,
    "ScriptedLoadableModule.py": """
        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent
        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                self.parent = parent
        class ScriptedLoadableModuleLogic:
            def __init__(self, parent=None):
                self.parent = parent
            def getParameterNode(self):
                raise NotImplementedError
        class ScriptedLoadableModuleTest:
            pass
        """,
    "parameterNodeWrapper.py": """
        import dataclasses
        @dataclasses.dataclass
        class Choice:
            choices: list
        @dataclasses.dataclass
        class WithinRange:
            minimum: float
            maximum: float
        def parameterNodeWrapper(cls):
            cls.wrapped = True
            return cls
        """,
}


def test_module_file_loads_and_finds_the_core_from_the_source_tree(tmp_path):
    """Import the module file as Slicer would from "Additional module paths" (the module folder on sys.path only),
    with stand-ins for the parts of Slicer's Python that slicer-core lacks, and the bigvolume install hidden: the
    module must put the repository root on sys.path and its Logic must work on an MRML scene."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(textwrap.dedent(text))
    code = textwrap.dedent(f"""
        import importlib.util, sys, types
        # Hide an installed bigvolume (editable finders, site-packages copies): only the repository may provide it.
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")
                            and "editable" not in type(f).__module__]
        sys.path[:] = [p for p in sys.path if p and not (__import__("os").path.isdir(p + "/bigvolume"))]
        hidden = importlib.util.find_spec("bigvolume") is None
        import slicer, slicer.util
        for stub in ("ScriptedLoadableModule", "parameterNodeWrapper"):
            spec = importlib.util.spec_from_file_location("slicer." + stub, {str(stubs)!r} + "/" + stub + ".py")
            module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
            sys.modules["slicer." + stub] = module; setattr(slicer, stub, module)
        sys.path.append({str(stubs)!r})
        sys.path.insert(0, {str(MODULE_DIR)!r})
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
        print("hidden" if hidden else "installed")
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    if done.stdout.strip().splitlines()[-1] != "hidden":
        pytest.skip("bigvolume is installed in a way this test cannot hide; the fallback path was not exercised")


def test_icon_is_a_128_pixel_png():
    data = ICON_FILE.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)
    assert os.path.getsize(ICON_FILE) < 64 * 1024
