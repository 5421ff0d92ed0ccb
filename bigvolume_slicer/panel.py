"""What the module panels share: the run state of a long run (Apply, Import, ...) with its progress bar, Cancel button
and modal progress dialog; the binding of a panel to its parameter node; path and text fields kept in the parameter
node; and the timer that waits for the user to stop changing a setting before a costly update."""
import contextlib
import shutil
import tempfile
import threading
import time

from bigvolume import Cancelled

# Least time between two slicer.app.processEvents() calls during a run: often enough that the bar moves and a click
# on Cancel gets through, rare enough that event processing costs nothing beside the work.
EVENT_INTERVAL = 0.1
# How long a panel waits after the last change of a setting before it redoes a costly update (a plan that reads every
# slice header, a mask preview): a spin box turned or a ROI dragged updates once, when the user stops.
SETTLE_MS = 300


try:  # Slicer's translation functions (``tr`` finds the context from the calling file), as the module template
    from slicer.i18n import tr as _, translate
except ImportError:  # no Slicer (the tests; the panels need Slicer >= 5.4, which has slicer.i18n): the text itself
    def _(text):
        return text

    def translate(context, text):
        return text


def settleTimer(callback, milliseconds: int = SETTLE_MS):
    """A single-shot QTimer that calls ``callback`` ``milliseconds`` after its last ``start()``: call ``start()`` on
    every change; keep a reference to the timer (and ``stop()`` it in the widget's cleanup)."""
    import qt

    timer = qt.QTimer()
    timer.setSingleShot(True)
    timer.setInterval(milliseconds)
    timer.connect("timeout()", callback)
    return timer


def _onMainThread() -> bool:
    import qt
    import slicer

    return qt.QThread.currentThread() == slicer.app.thread()


class PanelProgress:
    """A panel's run state, its progress bar, its Cancel button and, during an in-process run, a modal progress
    dialog.

    Called as the core's progress callback ``(fraction, message) -> bool``: returns False (stop) once ``cancel()`` was
    called or the dialog's Cancel clicked. The core may call it from worker threads: such a call only queues the
    fraction and message, which the next call on the main thread shows (Qt widgets belong to the main thread). On the
    main thread it also lets Slicer process events at most every EVENT_INTERVAL seconds, so the bar is drawn and Cancel
    can be clicked; the modal dialog keeps every other user input (a second Apply, a scene close, another module)
    out while that happens.
    ``start()`` and ``stop()`` show and hide the bar, enable and disable ``cancelButton`` and call ``onChange()``,
    where the panel refreshes its own buttons from ``running``. One run at a time in the whole application:
    ``refused()`` says whether a new one must wait.
    """

    active = None  # the PanelProgress whose in-process run is going on (any panel): runs never nest

    def __init__(self, progressBar, cancelButton=None, onChange=None):
        self.progressBar = progressBar
        self.cancelButton = cancelButton
        self.onChange = onChange
        self.running = False
        self.cancelRequested = False
        self._lastEventProcessing = 0.0
        self._pending = None  # (fraction, message) not shown yet
        self._lock = threading.Lock()
        self._dialog = None
        self._show(False)

    def __call__(self, fraction: float, message: str) -> bool:
        with self._lock:
            self._pending = (fraction, message)
        if _onMainThread():
            self._showPending()
            now = time.monotonic()
            if now - self._lastEventProcessing > EVENT_INTERVAL:
                import slicer

                self._lastEventProcessing = now
                # A modal dialog is up during an in-process run: only its Cancel reaches the application.
                slicer.app.processEvents()
            if self._dialog is not None and self._dialog.wasCanceled:
                self.cancel()
        return not self.cancelRequested

    def _showPending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        fraction, message = pending
        self.progressBar.value = int(round(100 * fraction))
        self.progressBar.format = f"{message} %p%"
        if self._dialog is not None:
            self._dialog.value = int(round(100 * fraction))
            self._dialog.labelText = message

    def start(self, modal: bool = False) -> None:
        """Show the run. ``modal``: the run is in-process and processes events; a modal progress dialog keeps user
        input out meanwhile."""
        if modal:
            import qt
            import slicer

            self._dialog = qt.QProgressDialog("", _("Cancel"), 0, 100, slicer.util.mainWindow())
            self._dialog.setWindowModality(qt.Qt.ApplicationModal)
            self._dialog.minimumDuration = 0
            self._dialog.show()
        self._setRunning(True)

    def stop(self) -> None:
        if self._dialog is not None:
            self._dialog.close()
            self._dialog.deleteLater()  # a closed QProgressDialog stays a child of the main window until deleted
            self._dialog = None
        self._setRunning(False)

    def cancel(self) -> None:
        """Ask the run to stop: the next progress call returns False (the core then raises Cancelled)."""
        self.cancelRequested = True
        if self.cancelButton is not None:
            self.cancelButton.enabled = False  # one click is enough; it stays off until the next run

    @classmethod
    def refused(cls, statusLabel=None) -> bool:
        """True (and a line in ``statusLabel``) while any panel's in-process run is going on: a second Apply started
        from inside the first one's event processing would nest in it."""
        if cls.active is None:
            return False
        if statusLabel is not None:
            statusLabel.text = _("Another run is in progress: wait for it or cancel it.")
        return True

    @contextlib.contextmanager
    def task(self, statusLabel, failureMessage: str):
        """Run the body of the ``with`` as the panel's in-process run: ``statusLabel`` cleared, the progress shown in
        the panel and a modal dialog, the wait cursor on. The body sets ``statusLabel`` on success. A Cancelled run
        says "Cancelled" (cancel is no error); any other exception is shown in Slicer's error popup
        (``failureMessage`` and the error) and ends as "Failed: <error>" in ``statusLabel``, not raised further.
        Callers check ``refused()`` first; a nested run is a programming error."""
        import slicer

        if PanelProgress.active is not None:
            raise RuntimeError("a panel run started inside another one")
        statusLabel.text = ""
        PanelProgress.active = self
        try:
            self.start(modal=True)
            with slicer.util.tryWithErrorDisplay(failureMessage, waitCursor=True):
                try:
                    yield
                except Cancelled:
                    statusLabel.text = _("Cancelled")
        except Exception as error:  # already shown by tryWithErrorDisplay
            statusLabel.text = _("Failed: {error}").format(error=error)
        finally:
            PanelProgress.active = None
            self.stop()

    def _setRunning(self, running: bool) -> None:
        self.running = running
        self.cancelRequested = False
        with self._lock:
            self._pending = None
        self._show(running)
        if self.onChange is not None:
            self.onChange()

    def _show(self, running: bool) -> None:
        if self.cancelButton is not None:
            self.cancelButton.enabled = running
        self.progressBar.visible = running
        self.progressBar.value = 0
        self.progressBar.format = "%p%"  # (Qt's default) not the last message of a run before


class ParameterNodeGui:
    """A panel bound to its parameter node once per node, on every Slicer version.

    Slicer 5.4-5.8.x: ``connectGui`` returns None (its tag is dropped; fixed in 5.10), so ``disconnectGui`` of what it
    returned disconnects nothing, and a second ``connectGui`` on ``enter()`` rebuilds each combo box (clear, refill)
    while the first binding still writes into the node: every combo setting falls back to its first choice. Here
    the widgets are bound once per parameter node (leaving and re-entering the module keeps the binding, the combo
    boxes, their labels and tooltips), and a binding is undone by its real tag when the node changes (a scene
    close) and around a scene import (``followSceneImports``: a fresh wrapper after it). ``afterBind(wrapper)`` runs
    after each binding: item labels and tooltips the connectors cleared.
    """

    def __init__(self, ui, afterBind=None):
        self.ui = ui
        self.afterBind = afterBind
        self.wrapper = None
        self._tag = None

    def bind(self, wrapper):
        """Bind the panel to ``wrapper``'s node (None: unbind) and return the wrapper the panel keeps using: the
        one already bound when ``wrapper`` wraps the same MRML node."""
        if wrapper is not None and self.wrapper is not None and wrapper.parameterNode is self.wrapper.parameterNode:
            return self.wrapper
        self.unbind()
        if wrapper is None:
            return None
        tag = wrapper.connectGui(self.ui)
        if tag is None:  # Slicer <= 5.8: the tag _connectParametersToGui just registered is the last one given out
            tag = wrapper._nextParameterGUIsTag - 1
        self.wrapper, self._tag = wrapper, tag
        if self.afterBind is not None:
            self.afterBind(wrapper)
        return wrapper

    def unbind(self) -> None:
        if self.wrapper is not None:
            self.wrapper.disconnectGui(self._tag)
        self.wrapper, self._tag = None, None


def followSceneImports(panel) -> None:
    """Unbind ``panel`` (a module widget with VTKObservationMixin and the template's ``setParameterNode`` and
    ``initializeParameterNode``) when a scene import starts; when it ends, bind a fresh wrapper if the module is shown
    (else ``enter()`` does). Slicer's parameterNodeWrapper caches every value, node references included, and reads
    them again only on the parameter node's ModifiedEvent: File > Load Scene copies the saved node into the module's
    singleton before the nodes listed after it exist, so a wrapper kept across the import holds None for them.
    Unbound meanwhile, the widgets write nothing into the node while the nodes arrive."""
    import slicer

    scene = slicer.mrmlScene

    def onStartImport(caller, event) -> None:
        panel.setParameterNode(None)

    def onEndImport(caller, event) -> None:
        if panel.parent.isEntered:
            panel.initializeParameterNode()

    panel.addObserver(scene, scene.StartImportEvent, onStartImport)
    panel.addObserver(scene, scene.EndImportEvent, onEndImport)


class TextFields:
    """QLineEdits kept in ``str`` parameters by the panel itself, not by ``connectGui``: the QLineEdit connector of
    Slicer 5.4-5.8.x writes the node's text back into its line edit on every change of the node, unconditionally,
    which moves the cursor to the end after each keystroke (typing "on" after "rec" in "rec_%04d.tif" gives
    "reco_%04d.tifn"; fixed in 5.10). Here the widget is written only when its text differs from the node's, and the
    node on every change of the text. ``fields``: parameter name -> widget."""

    PROPERTY, SIGNAL = "text", "textChanged(QString)"  # the widgets' text property and its change signal

    def __init__(self, fields: dict):
        self.fields = fields
        self.wrapper = None
        for name, widget in fields.items():
            self._connect(widget, lambda text, name=name: self._store(name, text))

    def _connect(self, widget, slot) -> None:
        widget.connect(self.SIGNAL, slot)

    def bind(self, wrapper) -> None:
        """Follow ``wrapper`` (None: none) and show its values."""
        self.wrapper = wrapper
        self.show()

    def show(self) -> None:
        """Parameter node -> widgets (call it when the node is modified): only a widget whose text differs is
        written, "" included."""
        if self.wrapper is None:
            return
        for name, widget in self.fields.items():
            text = getattr(self.wrapper, name)
            if text != getattr(widget, self.PROPERTY):
                setattr(widget, self.PROPERTY, text)

    def _store(self, name, text) -> None:
        if self.wrapper is not None and getattr(self.wrapper, name) != text:
            setattr(self.wrapper, name, text)


class PathFields(TextFields):
    """ctkPathLineEdits kept in ``str`` parameters ("" for none) by the panel itself, not by ``connectGui``: its
    ctkPathLineEdit connector writes ``str(Path())``, ".", into an unset field and so replaces the path CTK restored
    from the field's history. Here the unset parameters of a fresh parameter node (a new scene, a closed one) take
    what the fields show (their restored paths) when the panel first binds it; from then on the node holds the
    panel's paths, "" included ("" can mean something: ImageStackImport's nhdrPath "" is "beside the slices"), and
    each field shows its parameter. That a node was bound so is recorded in the node itself (ADOPTED), so a node
    loaded with a scene keeps its own paths, "" included, and a scene close (which empties the node) starts afresh.
    ``fields``: parameter name -> ctkPathLineEdit."""

    PROPERTY = "currentPath"
    # MRML parameter (not a field of the wrapper) set once a node's unset paths took the fields' paths.
    ADOPTED = "pathFieldsAdopted"

    def _connect(self, widget, slot) -> None:
        connectPathText(widget, slot)

    def bind(self, wrapper) -> None:
        """Follow ``wrapper`` (None: none): a fresh node's unset parameters take the fields' paths, then every field
        shows its parameter."""
        self.wrapper = wrapper
        if wrapper is not None and not wrapper.parameterNode.GetParameter(self.ADOPTED):
            self._adopt()
        self.show()

    def _adopt(self) -> None:
        node = self.wrapper.parameterNode
        taken = {name: lineEdit.currentPath for name, lineEdit in self.fields.items()
                 if not getattr(self.wrapper, name) and lineEdit.currentPath}
        wasModifying = node.StartModify()  # one Modified event, once the node holds the paths and the mark
        try:
            for name, path in taken.items():
                setattr(self.wrapper, name, path)
            node.SetParameter(self.ADOPTED, "true")
        finally:
            node.EndModify(wasModifying)


class RoiFollower:
    """A panel's observation of its chosen Markups ROI, and of no other: call ``follow(roi)`` (None: none) whenever
    the parameter node changes, and at a scene close; ``callback`` runs when the ROI is moved or resized.
    ``observer``: the panel (a VTKObservationMixin, which removes its observers at cleanup)."""

    def __init__(self, observer, callback):
        self.observer, self.callback, self.roi = observer, callback, None

    def follow(self, roi) -> None:
        if roi is self.roi:
            return
        import vtk
        from slicer import vtkMRMLMarkupsROINode

        events = (vtk.vtkCommand.ModifiedEvent, vtkMRMLMarkupsROINode.PointModifiedEvent)
        for eventId in events if self.roi is not None else ():
            self.observer.removeObserver(self.roi, eventId, self.callback)
        self.roi = roi
        for eventId in events if roi is not None else ():
            self.observer.addObserver(roi, eventId, self.callback)


def connectPathText(pathLineEdit, slot) -> None:
    """Call ``slot(path)`` on every change of a ctkPathLineEdit's text: its own currentPathChanged reports only text
    its validator accepts (CTK's updateHasValidInput), never "" (a cleared field) and, with name filters, only names
    ending in a filter's first extension word, case-sensitively (not SLICE_0001.TIF, not scan.nii.gz). The text is
    that of the QLineEdit inside the field: in its history combo box, else its own child."""
    combo = pathLineEdit.comboBox()
    edit = combo.lineEdit() if combo is not None else next(
        (child for child in pathLineEdit.children() if child.className() == "QLineEdit"), None)
    if edit is None:  # not a layout CTK makes: the accepted paths at least
        pathLineEdit.connect("currentPathChanged(QString)", slot)
    else:
        edit.connect("textChanged(QString)", slot)


def rememberPaths(*pathLineEdits) -> None:
    """Add the fields' paths to their history (the drop-down of recent paths, kept under their settingKey): CTK
    writes it only when asked. Call it once a run used them; empty fields are skipped."""
    for pathLineEdit in pathLineEdits:
        if pathLineEdit.currentPath:
            pathLineEdit.addCurrentPathToHistory()


def reenterModule(moduleName: str, otherModule: str = "Data"):
    """What a user does between choosing settings and Apply in the modules' self-tests: select another module and
    come back. Returns the module's widget (its ScriptedLoadableModuleWidget)."""
    import slicer

    slicer.util.selectModule(otherModule)
    slicer.util.selectModule(moduleName)
    return getattr(slicer.modules, moduleName.lower()).widgetRepresentation().self()


class ScratchFolders:
    """The temporary folders a module's self-test makes (``new()``), removed together when its ``with`` block ends,
    whatever the outcome: "Reload and Test" in a user's Slicer must not fill the disk run after run."""

    def __init__(self, prefix: str, parent=None):
        self.prefix, self.parent, self.folders = prefix, parent, []

    def new(self) -> str:
        folder = tempfile.mkdtemp(prefix=self.prefix, dir=self.parent)
        self.folders.append(folder)
        return folder

    def __enter__(self) -> "ScratchFolders":
        return self

    def __exit__(self, *exception) -> None:
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.folders.clear()
