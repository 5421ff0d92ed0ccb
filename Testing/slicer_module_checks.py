"""What the static checks of every scripted Slicer module share: the module's files, parsing of its .ui file, its
module file and its CMake lists, a stand-in Slicer for CMake, and stand-ins for the Qt parts of Slicer's Python.

Checks that hold for every module are in test_slicer_modules.py; each module's own test file adds what is
particular to its panel."""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Widget classes the parameterNodeWrapper's GUI connectors accept for each field type (they compare exact classes).
CONNECTOR_WIDGETS = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider", "QComboBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "QComboBox"},
    "str": {"QComboBox", "QLineEdit", "QTextEdit"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
    "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(tree):
    """Every module imported, plus ``module.name`` for each ``from module import name``."""
    modules, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules, names


def cmake_listed_files(cmake_text: str) -> set[str]:
    """Module-relative paths listed in a module CMakeLists (with ${MODULE_NAME} expanded)."""
    name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", cmake_text)
    text = cmake_text.replace("${MODULE_NAME}", name.group(1)) if name else cmake_text
    text = re.sub(r"#[^\n]*", "", text)
    return set(re.findall(r"[\w./-]+\.(?:py|ui|png|svg|xml|json|txt|csv)\b", text)) - {"CMakeLists.txt"}


@dataclass(frozen=True)
class SlicerModule:
    """One scripted module with a panel: ``<name>/<name>.py``, ``<name>Lib/``, ``Resources/UI/<name>.ui``."""
    name: str

    def __str__(self):
        return self.name

    @property
    def folder(self) -> Path:
        return REPO / self.name

    @property
    def module_file(self) -> Path:
        return self.folder / f"{self.name}.py"

    @property
    def lib_folder(self) -> Path:
        return self.folder / f"{self.name}Lib"

    @property
    def ui_file(self) -> Path:
        return self.folder / "Resources" / "UI" / f"{self.name}.ui"

    @property
    def icon_file(self) -> Path:
        return self.folder / "Resources" / "Icons" / f"{self.name}.png"

    @cached_property
    def tree(self) -> ast.Module:
        return parse(self.module_file)

    # --- the .ui file -------------------------------------------------------------------------------------------
    def ui_root(self):
        return ET.parse(self.ui_file).getroot()

    def ui_widgets(self) -> dict[str, str]:
        """name -> class of every widget in the .ui (the root included)."""
        return {w.get("name"): w.get("class") for w in self.ui_root().iter("widget")}

    def ui_object_names(self) -> set[str]:
        """Every named object childWidgetVariables can expose: widgets, layouts, spacers."""
        root = self.ui_root()
        return {e.get("name") for tag in ("widget", "layout", "spacer") for e in root.iter(tag) if e.get("name")}

    def ui_properties(self, name: str) -> dict:
        widget = next(w for w in self.ui_root().iter("widget") if w.get("name") == name)
        return {p.get("name"): p for p in widget.findall("property")}

    def ui_parameter_bindings(self) -> dict[str, str]:
        """widget name -> SlicerParameterName value."""
        return {widget.get("name"): prop.findtext("string") for widget in self.ui_root().iter("widget")
                for prop in widget.findall("property") if prop.get("name") == "SlicerParameterName"}

    def form_rows(self) -> list[tuple[str, str]]:
        """(label widget name, field widget name) of every two-column row of the .ui's form layouts."""
        rows = []
        for layout in self.ui_root().iter("layout"):
            if layout.get("class") != "QFormLayout":
                continue
            cells = {}
            for item in layout.findall("item"):
                widget = item.find("widget")
                if widget is not None and item.get("row") is not None:
                    cells[(int(item.get("row")), int(item.get("column", 0)))] = widget.get("name")
            rows += [(cells[(r, 0)], cells[(r, 1)]) for r, c in cells if c == 1 and (r, 0) in cells]
        return rows

    # --- the module file ----------------------------------------------------------------------------------------
    def wrapper_fields(self) -> dict[str, tuple[str, str, str | None]]:
        """field name -> (base type name, annotation source, default or None) of the @parameterNodeWrapper class."""
        wrapper = next(node for node in ast.walk(self.tree) if isinstance(node, ast.ClassDef) and any(
            ast.unparse(d).startswith("parameterNodeWrapper") for d in node.decorator_list))
        fields = {}
        for statement in wrapper.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                annotation = base = statement.annotation
                if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", None) == "Annotated":
                    base = annotation.slice.elts[0]
                baseName = ast.unparse(base)
                kind = "node" if baseName.startswith("vtkMRML") else baseName
                default = ast.unparse(statement.value) if statement.value is not None else None
                fields[statement.target.id] = (kind, ast.unparse(annotation), default)
        return fields

    def path_fields(self) -> dict[str, str]:
        """parameter -> ctkPathLineEdit name of the module's PATH_FIELDS: path fields the panel keeps in str
        parameters itself (bigvolume_slicer.PathFields), not through connectGui."""
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "PATH_FIELDS":
                return ast.literal_eval(node.value)
        return {}

    def within_range(self, parameter: str):
        """(minimum, maximum) of a field's WithinRange annotation, its names resolved (the panels' limits), or
        None."""
        import bigvolume_slicer

        annotation = self.wrapper_fields()[parameter][1]
        bounds = re.search(r"WithinRange\(([^()]*)\)", annotation)
        if not bounds:
            return None
        return eval(f"({bounds.group(1)})", {"limits": bigvolume_slicer.limits})

    def ui_attribute_uses(self) -> set[str]:
        """Names X used as ``self.ui.X`` in the module file."""
        return {node.attr for node in ast.walk(self.tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"}

    def function(self, name: str) -> ast.FunctionDef:
        return next(node for node in ast.walk(self.tree) if isinstance(node, ast.FunctionDef) and node.name == name)

    def assignment(self, name: str) -> str | None:
        """The source of the value a module-level ``name = ...`` assigns, or None."""
        return next((ast.unparse(node.value) for node in self.tree.body if isinstance(node, ast.Assign)
                     and any(getattr(target, "id", None) == name for target in node.targets)), None)

    def widget_class(self) -> ast.ClassDef:
        return next(node for node in self.tree.body if isinstance(node, ast.ClassDef)
                    and node.name == f"{self.name}Widget")

    def files(self) -> set[str]:
        """The module's own files that CMake must list, relative to its folder."""
        return {p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*")
                if p.is_file() and p.suffix in (".py", ".ui", ".png") and "__pycache__" not in p.parts}

    def import_lib(self, *names: str, submodule: str = ""):
        """Names imported from ``<name>Lib`` or its ``submodule`` (the module folder on sys.path, as in Slicer)."""
        sys.path.insert(0, str(self.folder))
        try:
            lib = importlib.import_module(f"{self.name}Lib" + (f".{submodule}" if submodule else ""))
        finally:
            sys.path.remove(str(self.folder))
        return [getattr(lib, name) for name in names]


def modules_with_panels() -> list[SlicerModule]:
    """Every scripted module of the extension that has a .ui panel (a scripted CLI module has none)."""
    return [SlicerModule(path.parent.name) for path in sorted(REPO.glob("*/*.py"))
            if path.stem == path.parent.name and (path.parent / "Resources" / "UI" / f"{path.stem}.ui").is_file()]


# --- a stand-in Slicer for CMake ----------------------------------------------------------------------------------
FAKE_SLICER = {
    "SlicerConfig.cmake": """
        set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
        set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
        set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
        set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
        set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
        set(Slicer_CLIMODULES_BIN_DIR lib/Slicer-5.8/cli-modules)
        set(Slicer_INSTALL_CLIMODULES_BIN_DIR lib/Slicer-5.8/cli-modules)
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
        # Slicer registers the module's ScriptedLoadableModuleTest as a ctest; here: a list of the scripts.
        set(BUILD_TESTING ON)
        macro(slicer_add_python_unittest)
          cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
          if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT})
            message(FATAL_ERROR "python unittest script missing: ${MY_SCRIPT}")
          endif()
          file(APPEND ${CMAKE_BINARY_DIR}/python-unittests.txt "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}\n")
        endmacro()
        macro(slicerMacroBuildScriptedCLI)
          cmake_parse_arguments(MY "" "NAME" "" ${ARGN})
          foreach(f ${MY_NAME}.py ${MY_NAME}.xml)
            if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
              message(FATAL_ERROR "scripted CLI file missing: ${f}")
            endif()
            install(FILES ${f} DESTINATION ${Slicer_INSTALL_CLIMODULES_BIN_DIR})
          endforeach()
        endmacro()
        """,
    "Empty.cmake": "",
}


def configure_and_install(tmp_path: Path, build_too: bool = True) -> tuple[Path, Path]:
    """Configure (and build) the extension against the stand-in Slicer and install it; returns (build, prefix)."""
    fake = tmp_path / "fake-slicer"
    fake.mkdir()
    for name, text in FAKE_SLICER.items():
        (fake / name).write_text(textwrap.dedent(text))
    build, prefix = tmp_path / "build", tmp_path / "install"
    commands = [["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={fake}"]]
    if build_too:
        commands.append(["cmake", "--build", str(build)])
    commands.append(["cmake", "--install", str(build), "--prefix", str(prefix)])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return build, prefix


# --- stand-ins for the Qt parts of Slicer's Python (slicer-core has the MRML part) -----------------------------------
STUBS = {
    "qt.py": """
        class Qt:
            ToolTipRole = 3
        class QObject:
            def __init__(self, parent=None):
                self.parent = parent
        class QEvent:
            DragEnter, DragMove, Drop = 60, 61, 63
        """,
    # The Slicer-side stand-ins of slicer_gui_standins (@TESTING@: this folder).
    "ScriptedLoadableModule.py": """
        import sys
        sys.path.append("@TESTING@")
        from slicer_gui_standins import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                         ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
        """,
    "parameterNodeWrapper.py": """
        import sys
        sys.path.append("@TESTING@")
        from slicer_gui_standins import Choice, WithinRange, parameterNodeWrapper
        """,
}

# Run first by module_file_script: hides an installed bigvolume (editable finders, site-packages copies) so only the
# module's own fallback can provide it, and installs the stand-ins into the real ``slicer`` package of slicer-core.
_PRELUDE = """
import importlib.util, os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")
                    and "editable" not in type(f).__module__]
sys.path[:] = [p for p in sys.path if p and not os.path.isdir(p + "/bigvolume")]
hidden = importlib.util.find_spec("bigvolume") is None
import slicer, slicer.util
for stub in ("ScriptedLoadableModule", "parameterNodeWrapper"):
    spec = importlib.util.spec_from_file_location("slicer." + stub, {stubs!r} + "/" + stub + ".py")
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    sys.modules["slicer." + stub] = module; setattr(slicer, stub, module)
sys.path.append({stubs!r})
sys.path.insert(0, {folder!r})
"""

# Run last for a module with a panel: its widget's PanelProgress comes from the panels' shared package, which only
# the module file's own fallback (the repository root on sys.path) can provide.
_PANEL_CHECK = """
import bigvolume_slicer, {name}
assert bigvolume_slicer.__file__.startswith({package!r}), bigvolume_slicer.__file__
assert {name}.PanelProgress is bigvolume_slicer.PanelProgress
"""


def run_module_file(module: SlicerModule, tmp_path: Path, body: str) -> bool:
    """Import ``module``'s module file as Slicer would from "Additional module paths" (its folder on sys.path only),
    with the stand-ins above and any installed bigvolume hidden, then run ``body`` (which has ``slicer``, ``os``
    and ``sys``) in ``tmp_path``, and for a module with a panel check where its PanelProgress came from. Asserts it
    succeeded; returns whether the installed bigvolume could be hidden."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(textwrap.dedent(text).replace("@TESTING@", str(REPO / "Testing")))
    panel_check = _PANEL_CHECK.format(name=module.name, package=str(REPO / "bigvolume_slicer")) \
        if module.ui_file.is_file() else ""
    code = _PRELUDE.format(stubs=str(stubs), folder=str(module.folder)) + textwrap.dedent(body) + panel_check + \
        '\nprint("hidden" if hidden else "installed")\n'
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1] == "hidden"
