"""bigvolume_slicer.PanelProgress, the progress bar, Cancel button and run state the module panels share (and
settleTimer, their wait for a setting to settle), with
stand-in Qt widgets, a stand-in ``qt`` module and a stand-in ``slicer.app`` on the real ``slicer`` package of
slicer-core (so the real ``slicer.util.tryWithErrorDisplay`` runs), and the real core calling it back."""
import sys
import threading

import numpy as np
import pytest
import slicer
import slicer.util

import bigvolume
from bigvolume import Cancelled, VolumeFileError
from bigvolume_slicer import PanelProgress, panel, settleTimer
from slicer_gui_standins import App, QProgressDialog, QTimer, make_qt


class Widget:
    """A stand-in for a PythonQt widget: properties are plain attributes."""

    def __init__(self, **properties):
        self.__dict__.update(properties)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@pytest.fixture
def app(monkeypatch, tmp_path):
    """The stand-in qt and slicer.app of slicer_gui_standins on the real ``slicer`` package of slicer-core."""
    monkeypatch.setitem(sys.modules, "qt", make_qt())
    QProgressDialog.shown.clear()
    QProgressDialog.made.clear()
    app = App(tmp_path)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: app.errors.append(text))
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: "main window", raising=False)
    return app


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(panel, "time", clock)
    return clock


def make_panel(onChange=None):
    bar = Widget(value=37, format="", visible=True)
    button = Widget(enabled=True)
    return PanelProgress(bar, button, onChange=onChange), bar, button


def test_a_new_panel_progress_is_idle_with_the_bar_hidden_and_cancel_off():
    progress, bar, button = make_panel()
    assert not progress.running and not progress.cancelRequested
    assert bar.visible is False and bar.value == 0 and button.enabled is False
    alone = PanelProgress(Widget(value=5, visible=True))  # no Cancel button, no refresh: still a progress bar
    alone.start()
    assert alone.running and alone.progressBar.visible
    alone.cancel()
    alone.stop()
    assert not alone.running and alone.progressBar.visible is False


def test_start_and_stop_show_and_hide_the_bar_and_let_the_panel_refresh(app, clock):
    seen = []
    progress, bar, button = make_panel(onChange=lambda: seen.append((progress.running, bar.visible, button.enabled)))
    progress.start()
    assert seen == [(True, True, True)] and bar.value == 0
    progress(0.5, "Reading")
    progress.stop()
    assert seen[-1] == (False, False, False) and bar.value == 0


def test_the_bar_shows_the_fraction_and_the_message_and_cancel_makes_the_callback_return_false(app, clock):
    progress, bar, button = make_panel()
    progress.start()
    assert progress(0.254, "Reading slices") is True
    assert bar.value == 25 and bar.format == "Reading slices %p%"
    progress.cancel()
    assert progress.cancelRequested and button.enabled is False  # one click is enough
    assert progress(0.5, "Reading slices") is False
    assert bar.value == 50  # the bar still follows until the run stops
    progress.stop()
    progress.start()  # the next run starts uncancelled
    assert progress(0.1, "Again") is True and button.enabled is True


def test_a_run_starts_with_a_bar_without_the_message_of_the_run_before(app, clock):
    """A CLI run, which sends no message, showed the last one of the in-process run before it ("done %p%")."""
    progress, bar, _ = make_panel()
    progress.start()
    progress(1.0, "done")
    progress.stop()
    progress.start()
    assert bar.format == "%p%" and bar.value == 0


def test_events_are_processed_at_most_every_tenth_of_a_second_and_only_on_the_main_thread(app, clock):
    progress, bar, _ = make_panel()
    progress.start()
    progress(0.1, "a")
    assert app.processed == 1
    clock.now += 0.05
    progress(0.2, "b")
    assert app.processed == 1 and bar.value == 20  # drawn later, but not processed now
    clock.now += 0.06
    progress(0.3, "c")
    assert app.processed == 2
    clock.now += 1.0
    assert bar.value == 30
    worker = threading.Thread(target=progress, args=(0.4, "from a worker"))
    worker.start()
    worker.join()
    # A worker thread touches no widget (Qt's belong to the main thread) and never runs the event loop: its
    # progress waits for the main thread.
    assert app.processed == 2 and bar.value == 30 and bar.format == "c %p%"
    progress(0.5, "d")  # the worker did not use up the interval
    assert app.processed == 3 and bar.value == 50


def test_a_click_on_cancel_while_events_are_processed_stops_a_real_core_run(app, clock):
    volume = bigvolume.Volume.from_array(np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8))
    progress, bar, button = make_panel()
    progress.start()
    output = bigvolume.resample(volume, 2, progress=progress)
    assert output.array.shape == (4, 4, 4) and app.processed >= 1 and bar.value == 100
    clock.now += 1.0
    app.whileProcessing = progress.cancel  # the user clicks Cancel
    with pytest.raises(Cancelled):
        bigvolume.resample(volume, 2, progress=progress)
    assert button.enabled is False


def test_task_runs_the_body_with_the_progress_shown_and_keeps_its_result(app, clock):
    progress, bar, button = make_panel()
    label = Widget(text="the last result")
    inside = []
    with progress.task(label, "Import failed."):
        inside.append((label.text, progress.running, bar.visible, button.enabled, list(app.cursors)))
        label.text = "Imported"
    assert inside == [("", True, True, True, ["wait"])]
    assert QProgressDialog.shown == []  # the modal dialog of the run is gone
    assert label.text == "Imported" and not progress.running and bar.visible is False and button.enabled is False
    assert app.cursors == [] and app.errors == []


@pytest.mark.parametrize("outcome", ["done", "cancelled", "failed"])
def test_each_run_deletes_its_progress_dialog(app, clock, outcome):
    """close() only hides a QProgressDialog: made with the main window as its parent, it would stay alive (one more
    hidden dialog per run) until the application quits. stop() hands it to deleteLater, whatever the run's end."""
    progress, _, _ = make_panel()
    label = Widget(text="")
    for run in range(2):
        with progress.task(label, "Failed."):
            if outcome == "cancelled":
                raise Cancelled("cancelled")
            if outcome == "failed":
                raise VolumeFileError("not an image")
    assert len(QProgressDialog.made) == 2 and all(dialog.parent == "main window" for dialog in QProgressDialog.made)
    assert all(dialog.deleted and not dialog.visible for dialog in QProgressDialog.made)
    assert QProgressDialog.shown == [] and progress._dialog is None


def test_task_says_cancelled_without_an_error_popup(app, clock):
    progress, bar, _ = make_panel()
    label = Widget(text="")
    after = []
    with progress.task(label, "Import failed."):
        progress.cancel()
        progress(0.5, "Reading")  # what the core does next: it sees False ...
        raise Cancelled("cancelled during Reading")  # ... and stops
        after.append("not reached")
    assert label.text == "Cancelled" and after == [] and app.errors == []
    assert not progress.running and not progress.cancelRequested and bar.visible is False and app.cursors == []


def test_task_shows_a_failure_in_the_error_popup_and_the_label_and_does_not_raise(app, clock):
    progress, bar, _ = make_panel()
    label = Widget(text="")
    with progress.task(label, "Image stack import failed."):
        raise VolumeFileError("/data/scan/slice_007.tif: not an image")
    assert label.text == "Failed: /data/scan/slice_007.tif: not an image"
    assert app.errors == ["Image stack import failed.\n\n/data/scan/slice_007.tif: not an image"]
    assert not progress.running and bar.visible is False and app.cursors == []


def test_the_settle_timer_is_single_shot_and_calls_back_on_timeout(app):
    calls = []
    timer = settleTimer(lambda: calls.append("plan"))
    assert isinstance(timer, QTimer) and timer.singleShot and timer.interval == panel.SETTLE_MS
    assert calls == []
    timer.fire()
    assert calls == ["plan"]
    assert settleTimer(print, 50).interval == 50


def test_a_run_keeps_user_input_out_while_it_processes_events_and_the_dialog_cancels_it(app, clock):
    """No processEvents() of a run lets user input in anywhere but its modal progress dialog, whose Cancel stops
    a real core run."""
    volume = bigvolume.Volume.from_array(np.arange(16 * 16 * 16, dtype=np.float32).reshape(16, 16, 16))
    progress, bar, _ = make_panel()
    label = Widget(text="")

    def clickCancelInTheDialog():
        clock.now += 1.0
        QProgressDialog.shown[-1].wasCanceled = True

    app.whileProcessing = clickCancelInTheDialog
    with progress.task(label, "Resampling failed."):
        bigvolume.resample(volume, 2, progress=progress)
    assert app.processed >= 1 and all(app.inputBlocked) and label.text == "Cancelled"
    assert QProgressDialog.shown == [] and not progress.running


def test_a_second_run_inside_the_first_is_refused(app, clock):
    first, _, _ = make_panel()
    second, _, _ = make_panel()
    label, otherLabel = Widget(text=""), Widget(text="")
    refused = []
    with first.task(label, "Failed."):
        refused.append(PanelProgress.refused(otherLabel))
        with pytest.raises(RuntimeError):
            with second.task(otherLabel, "Failed."):
                pass
        label.text = "done"
    assert refused == [True] and "in progress" in otherLabel.text and label.text == "done"
    assert not PanelProgress.refused() and PanelProgress.active is None
