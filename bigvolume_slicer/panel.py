"""What the module panels share: the progress bar and Cancel button of a long run (Apply, Import, ...), and the
timer that waits for the user to stop changing a setting before a costly update."""
import contextlib
import time

from bigvolume.errors import Cancelled

# Least time between two slicer.app.processEvents() calls during a run: often enough that the bar moves and a click
# on Cancel gets through, rare enough that event processing costs nothing beside the work.
EVENT_INTERVAL = 0.1
# How long a panel waits after the last change of a setting before it redoes a costly update (a plan that reads every
# slice header, a mask preview): a spin box turned or a ROI dragged updates once, when the user stops.
SETTLE_MS = 300


def settleTimer(callback, milliseconds: int = SETTLE_MS):
    """A single-shot QTimer that calls ``callback`` ``milliseconds`` after its last ``start()``: call ``start()`` on
    every change; keep a reference to the timer (and ``stop()`` it in the widget's cleanup)."""
    import qt

    timer = qt.QTimer()
    timer.setSingleShot(True)
    timer.setInterval(milliseconds)
    timer.connect("timeout()", callback)
    return timer


class PanelProgress:
    """A panel's run state, its progress bar and its Cancel button.

    Called as the core's progress callback ``(fraction, message) -> bool``: shows the fraction and the message in
    ``progressBar``, lets Slicer process events (the bar is drawn, Cancel can be clicked) at most every
    EVENT_INTERVAL seconds and only on the main thread, and returns False (stop) once ``cancel()`` was called.
    ``start()`` and ``stop()`` show and hide the bar, enable and disable ``cancelButton`` and call ``onChange()``,
    where the panel refreshes its own buttons from ``running``.
    """

    def __init__(self, progressBar, cancelButton=None, onChange=None):
        self.progressBar = progressBar
        self.cancelButton = cancelButton
        self.onChange = onChange
        self.running = False
        self.cancelRequested = False
        self._lastEventProcessing = 0.0
        self._show(False)

    def __call__(self, fraction: float, message: str) -> bool:
        self.progressBar.value = int(round(100 * fraction))
        self.progressBar.format = f"{message} %p%"
        now = time.monotonic()
        if now - self._lastEventProcessing > EVENT_INTERVAL:
            import qt
            import slicer

            # A worker thread must not run the event loop; it only sets the bar, which Qt draws later.
            if qt.QThread.currentThread() == slicer.app.thread():
                self._lastEventProcessing = now
                slicer.app.processEvents()
        return not self.cancelRequested

    def start(self) -> None:
        self._setRunning(True)

    def stop(self) -> None:
        self._setRunning(False)

    def cancel(self) -> None:
        """Ask the run to stop: the next progress call returns False (the core then raises Cancelled)."""
        self.cancelRequested = True
        if self.cancelButton is not None:
            self.cancelButton.enabled = False  # one click is enough; it stays off until the next run

    @contextlib.contextmanager
    def task(self, statusLabel, failureMessage: str):
        """Run the body of the ``with`` as the panel's run: ``statusLabel`` cleared, the progress shown, the wait
        cursor on. The body sets ``statusLabel`` on success. A Cancelled run says "Cancelled" (cancel is no error);
        any other exception is shown in Slicer's error popup (``failureMessage`` and the error) and ends as
        "Failed: <error>" in ``statusLabel``, not raised further."""
        import slicer

        statusLabel.text = ""
        self.start()
        try:
            with slicer.util.tryWithErrorDisplay(failureMessage, waitCursor=True):
                try:
                    yield
                except Cancelled:
                    statusLabel.text = "Cancelled"
        except Exception as error:  # already shown by tryWithErrorDisplay
            statusLabel.text = f"Failed: {error}"
        finally:
            self.stop()

    def _setRunning(self, running: bool) -> None:
        self.running = running
        self.cancelRequested = False
        self._show(running)
        if self.onChange is not None:
            self.onChange()

    def _show(self, running: bool) -> None:
        if self.cancelButton is not None:
            self.cancelButton.enabled = running
        self.progressBar.visible = running
        self.progressBar.value = 0
