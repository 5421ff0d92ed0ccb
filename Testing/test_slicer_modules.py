"""Static checks every scripted module with a panel must pass, without a Slicer application: its .ui file against
its module file and parameter node wrapper, its CMake lists against the files on disk, the module/Lib split, and
the extension's CMake project that installs them all. Each module's own test file checks its particular panel."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
import ast

import pytest

from slicer_module_checks import (CONNECTOR_WIDGETS, REPO, cmake_listed_files, configure_and_install,
                                  imported_modules, modules_with_panels, parse)

MODULES = modules_with_panels()
each_module = pytest.mark.parametrize("module", MODULES, ids=str)


def test_the_extension_has_its_modules():
    assert {"AntiAliasedResample", "ImageStackImport"} <= {m.name for m in MODULES}


# --- the .ui file -----------------------------------------------------------------------------------------------
@each_module
def test_ui_file_is_a_qmrmlwidget_form(module):
    root = module.ui_root()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module.name
    assert root.findtext("class") == module.name


@each_module
def test_every_self_ui_name_exists_in_the_ui_file(module):
    missing = module.ui_attribute_uses() - module.ui_object_names()
    assert not missing, f"self.ui.<name> used in {module.module_file.name} but absent from the .ui: {missing}"


@each_module
def test_ui_names_are_unique(module):
    names = [e.get("name") for tag in ("widget", "layout", "spacer") for e in module.ui_root().iter(tag)]
    assert not {n for n in names if names.count(n) > 1}


@each_module
def test_every_bound_widget_names_a_parameter_and_can_represent_it(module):
    fields, bindings, widgets = module.wrapper_fields(), module.ui_parameter_bindings(), module.ui_widgets()
    assert bindings, "no widget has the SlicerParameterName property"
    unknown = {w: p for w, p in bindings.items() if p not in fields}
    assert not unknown, f"SlicerParameterName values that are not parameter node fields: {unknown}"
    for widget, parameter in bindings.items():
        kind, annotation, _ = fields[parameter]
        assert widgets[widget] in CONNECTOR_WIDGETS[kind], f"{widget} ({widgets[widget]}) cannot hold {annotation}"
        if widgets[widget] in ("ctkSliderWidget", "QSlider"):
            assert "WithinRange" in annotation, f"{parameter}: a slider needs a bounded type (WithinRange)"
        if widgets[widget] == "QComboBox" and kind != "enum":
            assert "Choice" in annotation, f"{parameter}: a combo box needs the Choice annotation"
    values = list(bindings.values())
    assert not {p for p in values if values.count(p) > 1}, "two widgets bound to one parameter"
    # Path fields are kept by the panel (PathFields: no "." in an unset field): str parameters, unbound widgets.
    paths = module.path_fields()
    for parameter, widget in paths.items():
        assert fields[parameter][0] == "str" and fields[parameter][2] == "''", parameter
        assert widgets[widget] == "ctkPathLineEdit" and widget not in bindings, widget
    # Text fields too (TextFields: no cursor jump), and what the panel records in the node: no widget at all.
    texts, recorded = module_constant(module, "TEXT_FIELDS", {}), module_constant(module, "RECORDED_PARAMETERS", ())
    for parameter, widget in texts.items():
        assert fields[parameter][0] == "str" and widgets[widget] == "QLineEdit" and widget not in bindings, widget
    for parameter in recorded:
        assert fields[parameter][0] == "str" and fields[parameter][2] == "''", parameter
    assert not (set(paths) | set(texts)) & set(recorded) and not set(paths) & set(texts) and not set(values) & set(
        recorded)
    kept = set(values) | set(paths) | set(texts) | set(recorded)
    assert set(fields) == kept, f"parameters without a widget: {set(fields) - kept}"


def module_constant(module, name, default):
    """The literal value of a module-level ``name = ...`` of the module file, or ``default``."""
    source = module.assignment(name)
    return ast.literal_eval(source) if source is not None else default


@each_module
def test_no_line_edit_is_bound_through_connect_gui(module):
    """Slicer 5.4-5.8.x's QLineEdit connector writes the node's text back into the line edit on every change of the
    node, unconditionally (QLineEdit::setText puts the cursor at the end): typing inside the text sends the cursor to
    the end after each key ("on" typed after "rec" in "rec_%04d.tif" gives "reco_%04d.tifn"; fixed in 5.10, commit
    5e290f9562). The panels keep their line edits themselves (TEXT_FIELDS, bigvolume_slicer.TextFields)."""
    widgets = module.ui_widgets()
    bound = {widget for widget in module.ui_parameter_bindings() if widgets[widget] == "QLineEdit"}
    assert not bound, f"line edits bound with SlicerParameterName: {bound}"
    texts = module_constant(module, "TEXT_FIELDS", {})
    if texts:  # kept by a TextFields made from TEXT_FIELDS, bound and shown with the parameter node
        widget = ast.unparse(module.widget_class())
        assert "TextFields({name: getattr(self.ui, widget) for name, widget in TEXT_FIELDS.items()})" in widget
        assert "self._texts.bind(self._parameterNode)" in widget and "self._texts.show()" in widget


@each_module
def test_parameter_defaults_are_within_their_ranges_and_spin_boxes_match(module):
    fields, bindings = module.wrapper_fields(), module.ui_parameter_bindings()
    for widget, parameter in bindings.items():
        _, annotation, default = fields[parameter]
        bounds = module.within_range(parameter)
        if not bounds:
            continue
        low, high = bounds
        if default is not None and re.fullmatch(r"[-\d.e]+", default):
            assert low <= float(default) <= high, parameter
        props = module.ui_properties(widget)
        for edge, value in (("minimum", low), ("maximum", high)):
            if edge in props:
                text = props[edge].findtext("double") or props[edge].findtext("number")
                assert float(text) == value, f"{widget}.{edge} is {text}, {parameter} allows {value}"
        if "decimals" in props:
            decimals = int(props["decimals"].findtext("number"))
            assert round(low, decimals) == low, f"{widget}: {decimals} decimals cannot show the minimum {low}"


def test_bound_double_spin_boxes_take_a_typed_value_only_when_it_is_complete():
    """Slicer's parameterNodeWrapper writes each parameter change back into its widget (``widget.value = value``,
    unconditionally: guiConnectors.py in 5.8 and later), and QDoubleSpinBox::setValue reformats the text with the
    box's decimals. With keyboard tracking on, valueChanged fires on every keystroke, so the half-typed text is
    rounded under the user's cursor: typing 0.52 gives 0.5, 2.5 gives 2, -1024.5 gives -1024 (checked with real Qt).
    With keyboardTracking false, valueChanged (and so the write-back) comes on Enter, focus-out or the arrows only.
    (A ctkSliderWidget is not affected: its ctkDoubleSpinBox sets a value only when it differs.)"""
    tracking, checked = {}, 0
    for module in MODULES:
        for widget in module.ui_root().iter("widget"):
            props = {p.get("name"): p for p in widget.findall("property")}
            if widget.get("class") != "QDoubleSpinBox" or "SlicerParameterName" not in props:
                continue
            checked += 1
            value = props["keyboardTracking"].findtext("bool") if "keyboardTracking" in props else None
            if value != "false":
                tracking[f"{module.name}.{widget.get('name')}"] = value
    assert checked >= 10  # the panels' spacing, factor, origin, fill value, memory fields are all of them
    assert not tracking, f"bound QDoubleSpinBoxes with keyboard tracking (truncates typed decimals): {tracking}"


@each_module
def test_node_combo_boxes_get_the_scene_and_custom_widgets_are_declared(module):
    root, widgets = module.ui_root(), module.ui_widgets()
    connected = {(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                 for c in root.iter("connection")}
    for name, cls in widgets.items():
        if cls == "qMRMLNodeComboBox":
            assert (module.name, "mrmlSceneChanged(vtkMRMLScene*)", name, "setMRMLScene(vtkMRMLScene*)") \
                in connected, name
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {cls for cls in widgets.values() if cls.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widgets without a <customwidget> entry: {custom - declared}"
    assert {c[2] for c in connected} <= set(widgets)


@each_module
def test_widget_slots_exist(module):
    """Every ``self.<method>`` handed to connect/addObserver/a drop filter/PanelProgress/settleTimer is a method of the
    widget class."""
    widget = module.widget_class()
    methods = {node.name for node in widget.body if isinstance(node, ast.FunctionDef)}
    handed = set()
    for call in ast.walk(widget):
        if isinstance(call, ast.Call) and isinstance(call.func, (ast.Attribute, ast.Name)):
            name = call.func.attr if isinstance(call.func, ast.Attribute) else call.func.id
            if name not in ("connect", "addObserver", "removeObserver", "_DropFilter", "PanelProgress", "settleTimer"):
                continue
            # The slot or callback is the last argument; PanelProgress takes its onChange as a keyword.
            for callback in call.args[-1:] + [keyword.value for keyword in call.keywords]:
                if isinstance(callback, ast.Attribute) and ast.unparse(callback.value) == "self":
                    handed.add(callback.attr)
    assert handed and handed <= methods, handed - methods


@each_module
def test_the_widget_runs_through_the_shared_panel_progress(module):
    """The run state, progress bar and Cancel button are bigvolume_slicer.PanelProgress, not a copy in the widget."""
    widget = ast.unparse(module.widget_class())
    assert "PanelProgress(self.ui.progressBar, self.ui.cancelButton, onChange=self." in widget
    assert "self._progress.cancel" in widget and "progress=self._progress" in widget
    assert "processEvents" not in widget and "_cancelRequested" not in widget


@each_module
def test_icon_is_a_128_pixel_png(module):
    data = module.icon_file.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (128, 128)
    assert os.path.getsize(module.icon_file) < 64 * 1024


# --- CMake ------------------------------------------------------------------------------------------------------
@each_module
def test_module_cmakelists_lists_exactly_the_module_files(module):
    text = (module.folder / "CMakeLists.txt").read_text()
    listed = cmake_listed_files(text)
    assert listed == module.files(), f"not listed: {module.files() - listed}; missing: {listed - module.files()}"
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    # WITH_GENERIC_TESTS adds only Slicer's generic tests; the module's own self-test needs this (as the template).
    assert re.search(r"if\(BUILD_TESTING\)\s+(#[^\n]*\s+)*"
                     r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)
    assert re.search(r"NAME\s+\$\{MODULE_NAME\}", text) and f"set(MODULE_NAME {module.name})" in text


def test_extension_cmakelists():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(SlicerBigVolume\)", text, re.M)
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                     "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"^set\({variable}\s+\"[^\"]+\"\)", text, re.M), variable
    # The icon and screenshot URLs point into this repository's main branch: the files must be there.
    for url in re.findall(r"https://raw\.githubusercontent\.com/SlicerBigVolume/SlicerBigVolume/main/(\S+?)[\s\"]", text):
        assert (REPO / url).is_file(), url
    assert text.index("find_package(Slicer REQUIRED)") < text.index("include(${Slicer_USE_FILE})")
    subdirectories = set(re.findall(r"^add_subdirectory\((\w+)\)", text, re.M))
    assert subdirectories == {p.parent.name for p in REPO.glob("*/CMakeLists.txt")}
    assert {m.name for m in MODULES} <= subdirectories
    install = re.search(r"install\(DIRECTORY bigvolume bigvolume_slicer\s+"
                        r"DESTINATION \$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}[^)]*PATTERN \"\*\.py\"", text)
    assert install, "the core package and the panels' shared package must be installed beside the scripted modules"
    assert text.rstrip().endswith("include(${Slicer_EXTENSION_CPACK})")
    assert text.index("include(${Slicer_EXTENSION_GENERATE_CONFIG})") < text.index("include(${Slicer_EXTENSION_CPACK})")


def python_files(folder):
    """The .py files under ``folder`` (any depth), as paths relative to it."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


@pytest.mark.skipif(not shutil.which("cmake") or not (shutil.which("cc") or shutil.which("gcc")),
                    reason="needs cmake and a C compiler (project() enables C/C++)")
def test_extension_installs_every_module_beside_the_core_package(tmp_path):
    """Configure, build and install against a stand-in Slicer: every module's files, the core and the panels' shared
    package land together."""
    build, prefix = configure_and_install(tmp_path)
    modules = prefix / "lib/Slicer-5.8/qt-scripted-modules"
    for package in ("bigvolume", "bigvolume_slicer"):
        # Recursive: every subpackage (bigvolume's layers) lands in the build tree and the install tree.
        scripts = python_files(REPO / package)
        assert "__init__.py" in scripts
        assert python_files(modules / package) == scripts, package
        assert python_files(build / "lib/Slicer-5.8/qt-scripted-modules" / package) == scripts, package
    assert "core/geometry.py" in python_files(modules / "bigvolume")
    installed = {p.relative_to(modules).as_posix() for p in modules.rglob("*") if p.is_file()}
    for module in MODULES:
        assert module.files() <= installed, module.files() - installed
    # Each module's self-test (its ScriptedLoadableModuleTest) is a ctest: slicer_add_python_unittest.
    registered = (build / "python-unittests.txt").read_text().split()
    assert sorted(registered) == sorted(str(module.module_file) for module in MODULES)


# --- the module / Lib split -------------------------------------------------------------------------------------
@each_module
def test_module_file_holds_no_algorithm(module):
    """Outside its self test, the module file imports nothing that computes: the work goes through its Lib."""
    tree = module.tree
    testClasses = [node for node in tree.body if isinstance(node, ast.ClassDef)
                   and any(ast.unparse(base) == "ScriptedLoadableModuleTest" for base in node.bases)]
    assert testClasses, "no ScriptedLoadableModuleTest class"
    outside = ast.Module(body=[node for node in tree.body if node not in testClasses], type_ignores=[])
    modules, _ = imported_modules(outside)
    allowed = {"importlib.util", "logging", "os", "pathlib", "sys", "time", "typing", "qt", "ctk", "vtk", "slicer",
               "slicer.ScriptedLoadableModule", "slicer.util", "slicer.parameterNodeWrapper", "slicer.i18n",
               "bigvolume_slicer", f"{module.name}Lib"}
    assert modules <= allowed, f"unexpected imports in the module file: {modules - allowed}"
    assert f"{module.name}Lib" in modules
    names = {n.id for n in ast.walk(outside) if isinstance(n, ast.Name)}
    assert not names & {"np", "numpy", "bigvolume", "sitk"}
    assert not any(isinstance(n, ast.Attribute) and ast.unparse(n).startswith(("vtk.vtkImage", "vtk.vtkMatrix"))
                   for n in ast.walk(outside)), "no VTK image filters or geometry in the module file"


APP_FREE_UTIL = {"arrayFromVolume", "updateVolumeFromArray", "arrayFromVTKMatrix", "vtkMatrixFromArray",
                 "arrayFromVolumeModified", "NodeModify"}


@each_module
def test_lib_imports_no_qt_and_only_app_free_slicer_util_functions(module):
    paths = list(module.lib_folder.glob("*.py"))
    assert paths
    for path in paths:
        tree = parse(path)
        modules, names = imported_modules(tree)
        assert not {m.split(".")[0] for m in modules} & {"qt", "ctk", "PythonQt", "__main__"}, (path.name, modules)
        assert not modules & {"slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}, path.name
        utilNames = {n.split(".", 2)[2] for n in names if n.startswith("slicer.util.")}
        assert utilNames <= APP_FREE_UTIL, (path.name, utilNames - APP_FREE_UTIL)
        used = {ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and isinstance(n.value, (ast.Name, ast.Attribute)) and ast.unparse(n).startswith("slicer.")}
        assert not {u for u in used if u.startswith(("slicer.app", "slicer.mrmlScene", "slicer.modules"))}, (
            f"{path.name} must not need the Slicer application: {used}")
        assert {u.split(".")[2] for u in used if u.startswith("slicer.util.")} <= APP_FREE_UTIL, path.name


@each_module
def test_lib_imports_without_qt_in_a_fresh_interpreter(module, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(module.folder)!r})
        import {module.name}Lib as lib
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("qt", "ctk", "PythonQt"))
        assert not loaded, loaded
        assert lib.{module.name}Logic().lastResult is None
        print("ok")
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr


# --- the bundled core comes first ---------------------------------------------------------------------------------
@each_module
def test_the_module_imports_the_bundled_core_before_another_bigvolume_on_the_path(module, tmp_path):
    """Slicer appends module folders to sys.path, so a pip-installed bigvolume would win; the module file puts the
    folder of its bundled copy first."""
    from slicer_module_checks import run_module_file

    run_module_file(module, tmp_path, f"""
        os.makedirs("decoy/bigvolume")
        with open("decoy/bigvolume/__init__.py", "w") as decoy:
            decoy.write("raise ImportError('the decoy bigvolume was imported')\\n")
        sys.path.insert(0, os.path.abspath("decoy"))
        import {module.name}
        import bigvolume
        assert bigvolume.__file__ == {str(REPO / "bigvolume" / "__init__.py")!r}, bigvolume.__file__
        assert {module.name}.BUNDLED == {str(REPO)!r}
        """)


def test_a_core_from_elsewhere_is_said_in_one_line(caplog, tmp_path):
    import logging

    from bigvolume_slicer import checkBundledCore

    with caplog.at_level(logging.WARNING):
        assert checkBundledCore(str(REPO)) == str(REPO)
        assert caplog.records == []
        checkBundledCore(str(tmp_path))
    (record,) = caplog.records
    assert record.getMessage() == (f"SlicerBigVolume: using the bigvolume package in {REPO}, not the one bundled in "
                                   f"{tmp_path}")
