"""Static checks particular to the ImageStackImport panel (the checks every module passes are in
test_slicer_modules.py): its widgets, choices and pickers, and the module file imported with stand-ins for Slicer's
Qt parts."""
import ast
import re

import pytest

from slicer_module_checks import REPO, SlicerModule, run_module_file

MODULE = SlicerModule("ImageStackImport")

# What the panel must offer (name -> class).
REQUIRED_WIDGETS = {
    "fileLineEdit": "ctkPathLineEdit", "folderLineEdit": "ctkPathLineEdit", "patternLineEdit": "QLineEdit",
    "reverseCheckBox": "QCheckBox",
    "spacingXSpinBox": "QDoubleSpinBox", "spacingYSpinBox": "QDoubleSpinBox", "spacingZSpinBox": "QDoubleSpinBox",
    "spacingWarningLabel": "QLabel", "roiSelector": "qMRMLNodeComboBox", "orientationComboBox": "QComboBox",
    "originXSpinBox": "QDoubleSpinBox", "originYSpinBox": "QDoubleSpinBox", "originZSpinBox": "QDoubleSpinBox",
    "grayComboBox": "QComboBox", "bitsComboBox": "QComboBox", "methodComboBox": "QComboBox",
    "factorXSpinBox": "QDoubleSpinBox", "factorYSpinBox": "QDoubleSpinBox", "factorZSpinBox": "QDoubleSpinBox",
    "factor1Button": "QPushButton", "factor2Button": "QPushButton", "factor4Button": "QPushButton",
    "factor8Button": "QPushButton",
    "infoTextEdit": "QPlainTextEdit", "previewButton": "QPushButton", "importButton": "QPushButton",
    "saveNhdrCheckBox": "QCheckBox", "nhdrPathLineEdit": "ctkPathLineEdit", "show3DCheckBox": "QCheckBox",
    "progressBar": "QProgressBar", "cancelButton": "QPushButton", "statusLabel": "QLabel",
}


# --- parsing helpers --------------------------------------------------------------------------------------------


# --- the .ui file -----------------------------------------------------------------------------------------------


def test_the_panel_has_every_required_widget():
    widgets = MODULE.ui_widgets()
    wrong = {name: (widgets.get(name), cls) for name, cls in REQUIRED_WIDGETS.items() if widgets.get(name) != cls}
    assert not wrong, f"missing or of the wrong class (found, expected): {wrong}"


def preset_factors_reached_by_getattr() -> set[int]:
    """The n of every ``getattr(self.ui, f"factor{n}Button")`` inside a ``for n in (...)`` loop of the module file."""
    found = set()
    for loop in ast.walk(MODULE.tree):
        if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name)
                and isinstance(loop.iter, (ast.Tuple, ast.List))):
            continue
        for call in ast.walk(loop):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "getattr"
                    and len(call.args) >= 2 and ast.unparse(call.args[0]) == "self.ui"
                    and isinstance(call.args[1], ast.JoinedStr)):
                parts = call.args[1].values
                constants = [part.value for part in parts if isinstance(part, ast.Constant)]
                names = [part.value.id for part in parts if isinstance(part, ast.FormattedValue)
                         and isinstance(part.value, ast.Name)]
                if constants == ["factor", "Button"] and names == [loop.target.id]:
                    found |= {element.value for element in loop.iter.elts if isinstance(element, ast.Constant)}
    return found


def test_every_required_widget_is_used():
    used = MODULE.ui_attribute_uses()
    # The preset buttons are reached with getattr(self.ui, f"factor{n}Button") in a loop over the factors; the rest by
    # name or a binding.
    assert {f"factor{n}Button" for n in preset_factors_reached_by_getattr()} == {
        name for name in REQUIRED_WIDGETS if re.fullmatch(r"factor\dButton", name)}
    # Paths and the pattern: kept by the panel (PATH_FIELDS, TEXT_FIELDS).
    texts = ast.literal_eval(MODULE.assignment("TEXT_FIELDS"))
    bound = set(MODULE.ui_parameter_bindings()) | set(MODULE.path_fields().values()) | set(texts.values())
    unused = {name for name in REQUIRED_WIDGETS
              if name not in used | bound and not re.fullmatch(r"factor\dButton", name)}
    assert not unused, f"widgets neither used by the module file nor bound to a parameter: {unused}"


def test_the_parameters_are_the_panel_settings():
    fields = MODULE.wrapper_fields()
    assert {"inputFile", "inputFolder", "nhdrPath",
            "pattern", "reverse", "spacingX", "spacingY", "spacingZ", "orientation", "originX", "originY", "originZ",
            "roi", "gray", "bits", "factorX", "factorY", "factorZ", "method", "saveNhdr", "show3D",
            "spacingSource"} == set(fields)  # what the spacing was filled from: recorded in the node, no widget


def test_the_3d_preview_check_box_volume_renders_the_result_through_the_logic():
    assert MODULE.ui_parameter_bindings()["show3DCheckBox"] == "show3D"
    assert MODULE.wrapper_fields()["show3D"][2] == "False"  # off by default: rendering costs GPU time
    assert "volume rendering" in MODULE.ui_properties("show3DCheckBox")["toolTip"].findtext("string")
    branch = next(node for node in ast.walk(MODULE.function("_run"))
                  if isinstance(node, ast.If) and ast.unparse(node.test) == "p.show3D")
    calls = [ast.unparse(node.func) for node in ast.walk(branch) if isinstance(node, ast.Call)]
    assert "self.logic.showPreview" in calls
    assert "slicer.app.layoutManager().threeDWidget(index).threeDView().resetFocalPoint" in calls  # every 3D view
    # the imported or previewed volume, both buttons, through the default rendering method of the user
    assert ast.unparse(branch).count("showPreview(node, renderingLogic=slicer.modules.volumerendering.logic())") == 1


def test_combo_box_choices_come_from_the_lib():
    BITS_CHOICES, GRAY_CHOICES = MODULE.import_lib("BITS_CHOICES", "GRAY_CHOICES")
    fields = MODULE.wrapper_fields()
    assert fields["gray"][1].endswith("Choice(list(GRAY_CHOICES))]") and fields["gray"][2] == "'luminance'"
    assert fields["bits"][1].endswith("Choice(list(BITS_CHOICES))]") and fields["bits"][2] == "'keep'"
    assert list(GRAY_CHOICES) == ["luminance", "channel:0", "channel:1", "channel:2", "keep"]
    assert list(BITS_CHOICES) == ["keep", "8", "16"]
    assert all(isinstance(label, str) and label for label in [*GRAY_CHOICES.values(), *BITS_CHOICES.values()])


def test_the_method_choices_are_the_core_s_streamable_methods_as_the_resample_panel_offers_them():
    """No method could be chosen: a stack of label slices downsampled in the panel got labels in between."""
    import bigvolume
    from bigvolume.engine.stream import STREAMABLE_METHODS

    (METHODS,) = MODULE.import_lib("METHODS")
    fields = MODULE.wrapper_fields()
    assert fields["method"][1].endswith("Choice(list(METHODS))]") and fields["method"][2] == "DEFAULT_METHOD"
    assert list(METHODS) == [name for name in bigvolume.METHODS if name in STREAMABLE_METHODS]
    assert {"lanczos", "nearest", "max"} <= set(METHODS) and "fft" not in METHODS  # fft cannot stream
    assert all(METHODS[name] == bigvolume.METHODS[name] for name in METHODS)  # the entries' tooltips
    assert MODULE.ui_parameter_bindings()["methodComboBox"] == "method"
    assert "p.method" in ast.unparse(MODULE.function("_settings"))


def test_the_spacing_tooltip_says_where_z_comes_from():
    """It said the headers never give z, but an ImageJ TIFF stack does (and the panel fills it)."""
    for axis in "XYZ":
        tip = MODULE.ui_properties(f"spacing{axis}SpinBox")["toolTip"].findtext("string")
        assert "never" not in tip and "ImageJ" in tip, tip


def test_orientation_choices_and_origin_come_from_the_core():
    from bigvolume.io.stacks import DEFAULT_STACK_ORIENTATION, STACK_ORIENTATIONS
    fields = MODULE.wrapper_fields()
    assert fields["orientation"][1].endswith("Choice(list(STACK_ORIENTATIONS))]")
    assert fields["orientation"][2] == "DEFAULT_STACK_ORIENTATION"
    assert list(MODULE.import_lib("STACK_ORIENTATIONS", "DEFAULT_STACK_ORIENTATION")) == [STACK_ORIENTATIONS,
                                                                                         DEFAULT_STACK_ORIENTATION]
    bindings = MODULE.ui_parameter_bindings()
    assert bindings["orientationComboBox"] == "orientation"
    for axis in "XYZ":
        assert bindings[f"origin{axis}SpinBox"] == f"origin{axis}" and fields[f"origin{axis}"][2] == "0.0"
        assert float(MODULE.ui_properties(f"origin{axis}SpinBox")["minimum"].findtext("double")) < 0
    settings = ast.unparse(MODULE.function("_settings"))  # the panel hands them to the Logic with the rest
    assert "'orientation': p.orientation" in settings and "'origin': (p.originX, p.originY, p.originZ)" in settings


def test_path_pickers_roi_selector_and_read_only_info():
    def filters(name):
        return MODULE.ui_properties(name)["filters"].findtext("set")

    assert "ctkPathLineEdit::Files" in filters("fileLineEdit") and "Dirs" not in filters("fileLineEdit")
    assert "ctkPathLineEdit::Dirs" in filters("folderLineEdit") and "Files" not in filters("folderLineEdit")
    assert "ctkPathLineEdit::Writable" in filters("nhdrPathLineEdit")  # a save dialog
    imageFilter = [s.text for s in MODULE.ui_properties("fileLineEdit")["nameFilters"].iter("string")][0]
    for suffix in ("tif", "tiff", "png", "jpg", "jpeg", "bmp"):  # upper case too: Qt's dialog matches case on Linux
        assert f"*.{suffix} " in imageFilter + " " and f"*.{suffix.upper()} " in imageFilter.replace(")", " ")
    roi = MODULE.ui_properties("roiSelector")
    assert [s.text for s in roi["nodeTypes"].iter("string")] == ["vtkMRMLMarkupsROINode"]
    assert roi["noneEnabled"].findtext("bool") == "true"  # optional: none imports the whole stack
    assert MODULE.ui_properties("infoTextEdit")["readOnly"].findtext("bool") == "true"
    for button in ("previewButton", "importButton", "cancelButton"):
        assert MODULE.ui_properties(button)["enabled"].findtext("bool") == "false"  # enabled once a plan succeeds


# --- CMake ------------------------------------------------------------------------------------------------------


# --- the module file with Slicer's Qt parts stood in -----------------------------------------------------------
def test_module_file_loads_finds_the_core_and_accepts_drops(tmp_path):
    """Import the module file as Slicer would from "Additional module paths" (the module folder on sys.path only),
    with stand-ins for Slicer's Qt parts and the bigvolume install hidden: the module must put the repository root
    on sys.path, its Logic must import a stack into an MRML scene, and its drop filter must hand dropped paths on."""
    hidden = run_module_file(MODULE, tmp_path, f"""
        import ImageStackImport as m
        import bigvolume, numpy as np, SimpleITK as sitk
        assert bigvolume.__file__.startswith({str(REPO / "bigvolume")!r}), bigvolume.__file__
        assert m.ImageStackImportParameterNode.wrapped
        assert issubclass(m.ImageStackImportLogic, m.ScriptedLoadableModuleLogic)
        assert issubclass(m.ImageStackImportLogic, m.ImageStackImportLibLogic)

        os.mkdir("stack")
        for k in range(4):
            sitk.WriteImage(sitk.GetImageFromArray(np.full((6, 8), k, np.uint8)), f"stack/s{{k}}.png")
        scene = slicer.vtkMRMLScene()
        node = m.ImageStackImportLogic().importToNode("stack", scene=scene, factor=2.0)
        assert node.GetImageData().GetDimensions() == (4, 3, 2)

        class Url:
            def __init__(self, path): self.path = path
            def isLocalFile(self): return True
            def toLocalFile(self): return self.path
        class Mime:
            def hasUrls(self): return True
            def urls(self): return [Url(os.path.abspath("stack"))]
        class Event:
            def __init__(self, kind): self.kind, self.accepted = kind, False
            def type(self): return self.kind
            def mimeData(self): return Mime()
            def acceptProposedAction(self): self.accepted = True
        dropped = []
        dropFilter = m._DropFilter(dropped.append)
        for kind in (m.qt.QEvent.DragEnter, m.qt.QEvent.DragMove, m.qt.QEvent.Drop):
            event = Event(kind)
            assert dropFilter.eventFilter(None, event) and event.accepted
        assert dropped == [[os.path.abspath("stack")]]
        assert not dropFilter.eventFilter(None, Event(12))  # anything else goes on as usual
        """)
    if not hidden:
        pytest.skip("bigvolume is installed in a way this test cannot hide; the fallback path was not exercised")


