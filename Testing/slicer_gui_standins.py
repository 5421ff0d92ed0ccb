"""Stand-ins for the parts of a running Slicer that slicer-core lacks (Qt widgets, the .ui loader, the
parameterNodeWrapper and its GUI connectors, ScriptedLoadableModule, slicer.app), good enough to drive the modules'
real Widget classes on a real MRML scene of slicer-core: ``load_module(...)`` imports a module file with them.

The parameterNodeWrapper stand-in behaves as Slicer's own (checked against Slicer's source, tags v5.8.0, v5.8.1 and
v5.10.0, Base/Python/slicer/parameterNodeWrapper/wrapper.py and guiConnectors.py): values live in the MRML parameter
node, and each wrapper caches them, node references included, reading them again only on the parameter node's
ModifiedEvent (5.8.1's _CachedParameterWrapper; a wrapper made before a scene import keeps what the node held then);
``connectGui`` makes one connector per widget with a ``SlicerParameterName`` (a combo box connector clears and
refills its combo box when it is made), writes the node's values into the widgets, connects the widgets' signals
and observes the node; ``disconnectGui(tag)`` disconnects the widgets of that tag. With ``SLICER_VERSION`` (5, 8)
``connectGui`` returns None, as 5.4-5.8.x do (5.4 brought the wrapper); from (5, 10) the tag.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import re
import sys
import threading
import types
import typing
import unittest
import weakref
import xml.etree.ElementTree as ET
from pathlib import Path

import vtk

# --- qt ------------------------------------------------------------------------------------------------------------


class Widget:
    """A PythonQt widget: properties are attributes; ``connect(signature, slot)`` and ``emit(signature, *args)``
    for signals; setters Slicer's modules call for their looks only (set*, add*, hide, ...) are recorded."""

    def __init__(self, name="", cls="QWidget", properties=None):
        self.__dict__["_signals"] = {}
        self.__dict__["_dynamic"] = {}
        self.__dict__["calls"] = []
        self.objectName, self.className = name, cls
        self.enabled, self.visible, self.toolTip, self.text = True, True, "", ""
        for key, value in (properties or {}).items():
            if key == "SlicerParameterName":
                self._dynamic[key] = value
            else:
                setattr(self, key, value)

    def property(self, name):
        return self._dynamic.get(name)

    def connect(self, signature, slot):
        """``signature`` as PythonQt's, "clicked(bool)": the slot gets at most as many arguments as the signature
        declares and as it takes (PythonQt calls a slot with fewer parameters with fewer arguments)."""
        name, _, rest = signature.partition("(")
        declared = len([a for a in rest.rstrip(")").split(",") if a.strip()]) if rest else None
        self._signals.setdefault(name, []).append((slot, declared))

    def disconnect(self, signature, slot):
        slots = self._signals.get(signature.split("(")[0], [])
        slots.remove(next(entry for entry in slots if entry[0] == slot))

    def emit(self, signature, *args):
        for slot, declared in list(self._signals.get(signature.split("(")[0], [])):
            given = args[:declared] if declared is not None else args
            try:
                parameters = inspect.signature(slot).parameters.values()
            except (TypeError, ValueError):
                parameters = None
            if parameters is not None and not any(p.kind == p.VAR_POSITIONAL for p in parameters):
                positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                              and p.default is p.empty]
                given = given[:len(positional)]
            slot(*given)

    def isWidgetType(self):
        return False  # as for childWidgetVariables' namespace: connectGui walks ui.__dict__

    def __getattr__(self, name):
        if name.startswith(("set", "add", "remove", "install", "hide", "show", "update")):
            return lambda *args: self.calls.append((name, args))
        raise AttributeError(f"{self.className} {self.objectName} has no {name}")


class ValueWidget(Widget):
    """A widget whose ``value`` property emits ``signal`` when it changes (check boxes, spin boxes, line edits)."""
    prop, signal, default = "value", "valueChanged", 0

    def __init__(self, *args, **kwargs):
        self.__dict__["_" + self.prop] = self.default
        self.minimum, self.maximum = -1e300, 1e300
        super().__init__(*args, **kwargs)

    def __setattr__(self, name, value):
        if name == self.prop:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = min(max(value, self.minimum), self.maximum)  # spin boxes clamp as Qt's
            changed = self.__dict__["_" + self.prop] != value
            self.__dict__["_" + self.prop] = value
            if changed:
                self.emit(self.signal, value)
        else:
            self.__dict__[name] = value

    def __getattr__(self, name):
        if name == self.prop:
            return self.__dict__["_" + self.prop]
        return super().__getattr__(name)

    def setRange(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


class CheckBox(ValueWidget):
    prop, signal, default = "checked", "toggled", False


class LineEdit(ValueWidget):
    """A QLineEdit with its cursor: setting ``text`` (QLineEdit::setText) puts the cursor at the end, even when the
    text is the same; ``typeAt(position, keys)`` is the user typing ``keys`` with the cursor at ``position``."""
    prop, signal, default = "text", "textChanged", ""

    def __setattr__(self, name, value):
        if name == "text":
            self.__dict__["cursorPosition"] = len(value)
        super().__setattr__(name, value)

    def typeAt(self, position, keys):
        self.__dict__["cursorPosition"] = position
        for key in keys:
            cursor, text = self.cursorPosition, self.text
            self.__dict__["_text"] = text[:cursor] + key + text[cursor:]
            self.__dict__["cursorPosition"] = cursor + 1
            self.emit("textChanged", self.text)
            self.emit("textEdited", self.text)


class PathLineEdit(Widget):
    """A ctkPathLineEdit as CTK builds it (Libs/Widgets/ctkPathLineEdit.cpp at the commits Slicer 5.8.1 and main pin):
    the path is the text of a QLineEdit inside its history combo box (``comboBox().lineEdit()``), ``currentPath = p``
    is that line edit's setText, and its textChanged runs updateHasValidInput, which emits currentPathChanged only
    when the text is acceptable to the validator CTK makes from ``nameFilters``: never "", and with name filters only
    a name ending in one of their extensions (case-sensitive; only the first word after ``*.``, so ``*.nii.gz``
    accepts ``x.nii``, not ``x.nii.gz``; ctkUtils.cpp extensionToRegExp, nameFiltersToRegularExpression)."""

    prop, signal = "currentPath", "currentPathChanged"

    def __init__(self, name="", cls="ctkPathLineEdit", properties=None):
        edit = LineEdit(f"{name}.lineEdit", "QLineEdit")
        self.__dict__["_edit"] = edit
        self.__dict__["nameFilters"] = []
        super().__init__(name, cls, properties)
        edit.connect("textChanged(QString)", self._updateHasValidInput)

    def __setattr__(self, name, value):
        if name == "currentPath":
            self._edit.text = value
        else:
            self.__dict__[name] = value

    def __getattr__(self, name):
        if name == "currentPath":
            return self._edit.text
        return super().__getattr__(name)

    def comboBox(self):
        return types.SimpleNamespace(lineEdit=lambda: self._edit)

    def acceptable(self, text) -> bool:
        patterns = []
        for nameFilter in self.nameFilters:
            inside = re.search(r"\(([^()]*)\)\s*$", nameFilter)
            for extension in (inside.group(1) if inside else nameFilter).split():
                word = re.search(r"\*\.(\w+)", extension)
                if word:
                    patterns.append(r".*\." + word.group(1) + "?$")
        pattern = "(" + "|".join(patterns) + ")" if patterns else ".+"
        return re.fullmatch(pattern, text) is not None

    def _updateHasValidInput(self, text):
        if self.acceptable(text):
            self.emit("currentPathChanged", text)


class ComboBox(Widget):
    """A QComboBox: items with texts and role data; ``currentIndex`` -1 when empty, 0 after the first addItem."""

    def __init__(self, *args, **kwargs):
        self.__dict__["items"] = []
        self.__dict__["_index"] = -1
        super().__init__(*args, **kwargs)

    def __setattr__(self, name, value):
        if name == "currentIndex":
            value = value if 0 <= value < len(self.items) else -1
            changed, self.__dict__["_index"] = self._index != value, value
            if changed:
                self.emit("currentIndexChanged", value)
        else:
            self.__dict__[name] = value

    @property
    def currentIndex(self):
        return self._index

    def clear(self):
        self.items.clear()
        self.currentIndex = -1

    def addItem(self, text):
        self.items.append({"text": text})
        if self._index == -1:
            self.currentIndex = 0

    def setItemText(self, index, text):
        self.items[index]["text"] = text

    def itemText(self, index):
        return self.items[index]["text"]

    def setItemData(self, index, value, role):
        self.items[index][role] = value

    def itemData(self, index, role):
        return self.items[index].get(role)

    @property
    def count(self):
        return len(self.items)


class NodeComboBox(Widget):
    def __init__(self, *args, **kwargs):
        self.__dict__["_node"] = None
        super().__init__(*args, **kwargs)

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        if node is not self._node:
            self.__dict__["_node"] = node
            self.emit("currentNodeChanged", node)


class PushButton(Widget):
    def click(self):
        if self.enabled:
            self.emit("clicked", False)


WIDGET_CLASSES = {"QComboBox": ComboBox, "ctkComboBox": ComboBox, "QCheckBox": CheckBox, "QLineEdit": LineEdit,
                  "ctkPathLineEdit": PathLineEdit, "qMRMLNodeComboBox": NodeComboBox, "QPushButton": PushButton,
                  "QToolButton": PushButton, "QSpinBox": ValueWidget, "QDoubleSpinBox": ValueWidget,
                  "ctkSliderWidget": ValueWidget, "QProgressBar": ValueWidget}


class QTimer:
    """Fires only when a test calls ``fire()`` (or ``App.settle()``): the tests decide when settings settle."""
    timers = []

    def __init__(self):
        self.active, self.slots, self.singleShot, self.interval = False, [], False, 0
        QTimer.timers.append(self)

    def setSingleShot(self, singleShot):
        self.singleShot = singleShot

    def setInterval(self, interval):
        self.interval = interval

    def connect(self, signal, slot):
        assert signal == "timeout()", signal
        self.slots.append(slot)

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def fire(self):
        self.active = False
        for slot in self.slots:
            slot()

    @staticmethod
    def singleShot(milliseconds, slot):
        """qt.QTimer.singleShot(msec, callable): a started single-shot timer, fired as the others."""
        timer = QTimer()
        timer.setSingleShot(True)
        timer.setInterval(milliseconds)
        timer.connect("timeout()", slot)
        timer.start()


class QProgressDialog:
    """``shown``: the dialogs shown and not closed; ``made``: every dialog made (``deleted`` once deleteLater was
    called: a closed dialog lives on as a child of its parent, the main window, until deleted)."""
    shown = []
    made = []

    def __init__(self, labelText, cancelText, minimum, maximum, parent=None):
        self.labelText, self.value, self.visible, self.wasCanceled, self.modality = labelText, 0, False, False, None
        self.parent, self.deleted = parent, False
        QProgressDialog.made.append(self)

    def setWindowModality(self, modality):
        self.modality = modality

    def show(self):
        self.visible = True
        QProgressDialog.shown.append(self)

    def close(self):
        self.visible = False
        QProgressDialog.shown.remove(self)

    def deleteLater(self):
        assert not self.deleted, "deleted twice"
        self.deleted = True


class QFileDialog:
    """The user's answer to the next dialog: ``chosen`` ("" for Cancel); each call is recorded in ``asked``."""
    chosen, asked = "", []

    @classmethod
    def getExistingDirectory(cls, parent=None, caption="", directory=""):
        cls.asked.append((caption, directory))
        return cls.chosen


def make_qt():
    qt = types.ModuleType("qt")
    qt.Qt = types.SimpleNamespace(ToolTipRole=3, ApplicationModal="ApplicationModal", WaitCursor="wait")
    qt.QObject = type("QObject", (), {"__init__": lambda self, parent=None: None})
    qt.QEvent = types.SimpleNamespace(DragEnter=60, DragMove=61, Drop=63)
    qt.QEventLoop = types.SimpleNamespace(ExcludeUserInputEvents="ExcludeUserInputEvents")
    qt.QThread = types.SimpleNamespace(currentThread=threading.current_thread)
    qt.QTimer, qt.QProgressDialog, qt.QFileDialog = QTimer, QProgressDialog, QFileDialog
    return qt


# --- slicer.app, slicer.util.loadUI -------------------------------------------------------------------------------


class App:
    """slicer.app: the main thread, event processing (``whileProcessing`` is what happens meanwhile: a user's click,
    a scene close) with a record of whether user input could get in, cursors, a temporary folder."""

    def __init__(self, temporaryPath):
        self.mainThread = threading.current_thread()
        self.temporaryPath = str(temporaryPath)
        self.processed, self.inputBlocked, self.whileProcessing, self.cursors, self.errors = 0, [], None, [], []

    def thread(self):
        return self.mainThread

    def processEvents(self, flags=None):
        self.processed += 1
        self.inputBlocked.append(flags == "ExcludeUserInputEvents" or any(
            d.visible and d.modality == "ApplicationModal" for d in QProgressDialog.shown))
        if self.whileProcessing:
            self.whileProcessing()

    def setOverrideCursor(self, cursor):
        self.cursors.append(cursor)

    def restoreOverrideCursor(self):
        self.cursors.pop()

    def testingEnabled(self):
        return False

    def settle(self):
        """The settle timers run out: what the panels planned to do after a pause is done."""
        for timer in list(QTimer.timers):
            if timer.active:
                timer.fire()


def load_ui(path):
    """The .ui file's widgets (the stand-in class of each), the top widget with ``children``."""
    widgets = {}
    for element in ET.parse(path).getroot().iter("widget"):
        properties = {}
        for prop in element.findall("property"):
            value = next(iter(prop), None)
            if value is not None and value.tag == "stringlist":
                properties[prop.get("name")] = [item.text or "" for item in value]
            elif value is not None and value.tag in ("string", "double", "number", "bool"):
                text = value.text or ""
                properties[prop.get("name")] = {"double": float, "number": int,
                                                "bool": lambda t: t == "true"}.get(value.tag, str)(text)
        cls = WIDGET_CLASSES.get(element.get("class"), Widget)
        # Qt applies the .ui's minimum and maximum before the value.
        ordered = dict(sorted(properties.items(), key=lambda item: item[0] not in ("minimum", "maximum")))
        widgets[element.get("name")] = cls(element.get("name"), element.get("class"), ordered)
    top = next(iter(widgets.values()))
    top.__dict__["children"] = widgets
    return top


def child_widget_variables(top):
    return types.SimpleNamespace(**top.children)


# --- slicer.parameterNodeWrapper ----------------------------------------------------------------------------------
SLICER_VERSION = (5, 10)


@dataclasses.dataclass
class Choice:
    choices: list


@dataclasses.dataclass
class WithinRange:
    minimum: float
    maximum: float


class _Connector:
    """One widget bound to one parameter (Slicer's GuiConnector): ``onChanged(callback)`` connects, None
    disconnects."""

    def __init__(self, widget, kind, annotations):
        self.widget, self.kind, self.callback = widget, kind, None
        self.choice = next((a for a in annotations if isinstance(a, Choice)), None)
        within = next((a for a in annotations if isinstance(a, WithinRange)), None)
        if isinstance(widget, ComboBox):  # as QComboBoxToStringableConnector.__init__: clear and refill
            widget.clear()
            for choice in self.choice.choices:
                widget.addItem(str(choice))
        elif within is not None:  # as the spin box / slider connectors: the range from WithinRange
            widget.setRange(within.minimum, within.maximum)
        self.signal = {ComboBox: "currentIndexChanged", NodeComboBox: "currentNodeChanged", CheckBox: "toggled",
                       LineEdit: "textChanged", PathLineEdit: "currentPathChanged"}.get(type(widget), "valueChanged")

    def onChanged(self, callback):
        if self.callback is not None:
            self.widget.disconnect(self.signal, self._changed)
        self.callback = callback
        if callback is not None:
            self.widget.connect(self.signal, self._changed)

    def _changed(self, *args):
        self.callback()

    def read(self):
        w = self.widget
        if isinstance(w, ComboBox):
            return self.choice.choices[w.currentIndex]  # -1 (being cleared) reads the last choice, as Slicer's
        if isinstance(w, NodeComboBox):
            return w.currentNode()
        if isinstance(w, PathLineEdit):
            return Path(w.currentPath)
        return getattr(w, w.prop) if isinstance(w, ValueWidget) else None

    def write(self, value):
        w = self.widget
        if isinstance(w, ComboBox):
            w.currentIndex = self.choice.choices.index(value)
        elif isinstance(w, NodeComboBox):
            w.setCurrentNode(value)
        elif isinstance(w, PathLineEdit):
            w.currentPath = str(value)  # Path() -> "."
        elif isinstance(w, LineEdit):  # unconditionally up to 5.8.x; from 5.10 a text that differs only (Slicer
            # issue 8620, PR 8621; not checked against the v5.10.0 tag: the panels bind no QLineEdit)
            if SLICER_VERSION < (5, 10) or w.text != value:
                w.text = value
        else:
            setattr(w, w.prop, value)


def parameterNodeWrapper(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, hint in hints.items():
        base, annotations = (hint.__origin__, hint.__metadata__) if hasattr(hint, "__metadata__") else (hint, ())
        default = getattr(cls, name, None)
        if default is None and base in (str, int, float, bool, Path):
            default = base()
        fields[name] = (base, tuple(annotations), default)

    def validate(name, value):
        base, annotations, _ = fields[name]
        for a in annotations:
            if isinstance(a, Choice) and value not in a.choices:
                raise ValueError(f"{name}: {value!r} is not one of {a.choices}")
            if isinstance(a, WithinRange) and not a.minimum <= value <= a.maximum:
                raise ValueError(f"{name}: {value!r} is not within [{a.minimum}, {a.maximum}]")

    def isNode(base):
        return isinstance(base, type) and base.__name__.startswith("vtkMRML")

    def read(parameterNode, name):
        """What the MRML node holds (Slicer's _Parameter.read; a parameter a scene close removed reads its default,
        which Slicer's also writes back)."""
        base, _, default = fields[name]
        if isNode(base):
            return parameterNode.GetNodeReference(name)
        if not parameterNode.GetParameterNames().__contains__(name):
            return default
        text = parameterNode.GetParameter(name)
        return Path(text) if base is Path else base(json.loads(text))

    def refresh(self):
        self.__dict__["_cache"] = {name: read(self.parameterNode, name) for name in fields}

    def make_property(name):
        base = fields[name][0]

        def get(self):
            return self._cache[name]

        def set_(self, value):
            validate(name, value)
            node = self.parameterNode
            wasModifying = node.StartModify()  # slicer.util.NodeModify: one Modified event, once the cache is new
            try:
                if isNode(base):
                    node.SetParameter(name, "")
                    node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                else:
                    node.SetParameter(name, str(value) if base is Path else json.dumps(base(value)))
                self._cache[name] = read(node, name)
            finally:
                node.EndModify(wasModifying)
        return property(get, set_)

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        self._parameterGUIs, self._nextParameterGUIsTag, self._updatingGUI = {}, 0, False
        for name, (base, _, default) in fields.items():
            if not parameterNode.GetParameterNames().__contains__(name):
                if isNode(base):
                    parameterNode.SetParameter(name, "")
                    parameterNode.SetNodeReferenceID(name, None)
                else:
                    parameterNode.SetParameter(name, str(default) if base is Path else json.dumps(default))
        # Every value is cached, node references included, and read again only on the node's ModifiedEvent (Slicer's
        # _CachedParameterWrapper). This observer is the wrapper's first: VTK calls the observers of one priority
        # newest first, so the GUI binding's and the panel's own observers run before it, with the values cached.
        refresh(self)
        weak = weakref.ref(self)
        self._cacheObserver = parameterNode.AddObserver(
            vtk.vtkCommand.ModifiedEvent, lambda caller, event: weak() is not None and refresh(weak()))

    def __del__(self):
        self.parameterNode.RemoveObserver(self._cacheObserver)

    def _updateGUI(self):
        if self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            for mapping in self._parameterGUIs.values():
                for name, connector in mapping.items():
                    connector.write(getattr(self, name))
        finally:
            self._updatingGUI = False

    def connectGui(self, ui):
        bound = {w.property("SlicerParameterName"): w for w in vars(ui).values() if w.property("SlicerParameterName")}
        mapping = {name: _Connector(widget, fields[name][0], fields[name][1]) for name, widget in bound.items()}
        tag = self._nextParameterGUIsTag
        self._nextParameterGUIsTag += 1
        self._parameterGUIs[tag] = mapping
        for name, connector in mapping.items():
            connector.write(getattr(self, name))

            def callback(name=name, connector=connector):
                if not self._updatingGUI:
                    setattr(self, name, connector.read())
            connector.onChanged(callback)
        self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: self._updateGUI())
        return tag if SLICER_VERSION >= (5, 10) else None

    def disconnectGui(self, tag):
        for connector in self._parameterGUIs.pop(tag, {}).values():
            connector.onChanged(None)

    def AddObserver(self, event, callback, priority=0.0):
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag):
        self.parameterNode.RemoveObserver(tag)

    namespace = {name: make_property(name) for name in fields}
    namespace.update(__init__=__init__, __del__=__del__, _updateGUI=_updateGUI, connectGui=connectGui,
                     disconnectGui=disconnectGui, AddObserver=AddObserver, RemoveObserver=RemoveObserver, wrapped=True,
                     fields=fields)
    return type(cls.__name__, (), namespace)


# --- slicer.ScriptedLoadableModule --------------------------------------------------------------------------------


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent if parent is not None else Widget("modulePanel")
        self.parent.isEntered = False
        self.moduleName = type(self).__name__[:-len("Widget")]

    def setup(self):
        self.layout = Widget("layout")

    def resourcePath(self, relative):
        return str(Path(sys.modules[type(self).__module__].__file__).parent / "Resources" / relative)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__[:-len("Logic")]

    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
            node = slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, methodName="runTest"):
        super().__init__(methodName)

    def runTest(self):  # the module's own runTest replaces this
        pass

    def delayDisplay(self, message, msec=None):
        pass


# --- putting it together ------------------------------------------------------------------------------------------


def install(monkeypatch, tmp_path, version=(5, 10)):
    """Install the stand-ins (undone by ``monkeypatch``) around slicer-core's real ``slicer`` package, with a fresh
    MRML scene as ``slicer.mrmlScene``; returns ``slicer.app``."""
    import slicer
    import slicer.util

    monkeypatch.setattr(sys.modules[__name__], "SLICER_VERSION", version)
    QTimer.timers.clear()
    QProgressDialog.shown.clear()
    QProgressDialog.made.clear()
    QFileDialog.chosen, QFileDialog.asked = "", []
    monkeypatch.setitem(sys.modules, "qt", make_qt())
    for name, members in (("ScriptedLoadableModule", (ScriptedLoadableModule, ScriptedLoadableModuleWidget,
                                                      ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)),
                          ("parameterNodeWrapper", (Choice, WithinRange, parameterNodeWrapper))):
        module = types.ModuleType(f"slicer.{name}")
        for member in members:
            setattr(module, member.__name__, member)
        monkeypatch.setitem(sys.modules, f"slicer.{name}", module)
        monkeypatch.setattr(slicer, name, module, raising=False)
    app = App(tmp_path)
    scene = slicer.vtkMRMLScene()
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
    for name, function in (("loadUI", load_ui), ("childWidgetVariables", child_widget_variables),
                           ("mainWindow", lambda: None), ("setSliceViewerLayers", lambda **kwargs: None),
                           ("selectModule", select_module),
                           ("errorDisplay", lambda text, **kwargs: app.errors.append(text))):
        monkeypatch.setattr(slicer.util, name, function, raising=False)
    return app


def load_module(module, monkeypatch):
    """Import ``module``'s module file (a SlicerModule of slicer_module_checks) with the stand-ins installed, as
    Slicer would: its folder on sys.path for its Lib."""
    monkeypatch.syspath_prepend(str(module.folder))
    spec = importlib.util.spec_from_file_location(module.name, module.module_file)
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module.name, loaded)
    spec.loader.exec_module(loaded)
    return loaded


OPENED = []  # the panels open_panel set up: cleaned up (their scene observers removed) by close_panels


def close_panels():
    while OPENED:
        OPENED.pop().cleanup()


def open_panel(loaded, name):
    """Set up the module's Widget and enter the module, as Slicer does when the user selects it."""
    import slicer

    widget = getattr(loaded, f"{name}Widget")()
    OPENED.append(widget)
    representation = types.SimpleNamespace(self=lambda: widget)
    setattr(slicer.modules, name.lower(), types.SimpleNamespace(widgetRepresentation=lambda: representation))
    widget.setup()
    widget.parent.isEntered = True
    widget.enter()
    return widget


def select_module(name):
    """slicer.util.selectModule: the module shown now is left (exit), the selected one entered (a panel opened
    here, or any other module name)."""
    for widget in OPENED:
        if widget.parent.isEntered and widget.moduleName != name:
            widget.parent.isEntered = False
            widget.exit()
    for widget in OPENED:
        if widget.moduleName == name and not widget.parent.isEntered:
            widget.parent.isEntered = True
            widget.enter()


def leave_and_come_back(widget):
    widget.parent.isEntered = False
    widget.exit()
    widget.parent.isEntered = True
    widget.enter()
