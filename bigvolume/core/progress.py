"""One progress-and-cancel signature for the core, the Slicer Logic and the command line.

A progress callback is ``callback(fraction, message) -> bool | None``: ``fraction`` runs from 0 to 1, ``message``
says what is happening. Returning ``False`` asks the job to stop: the job then raises :class:`Cancelled` at its
next safe point and leaves no partial output behind.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Callable, Optional

from .errors import Cancelled

ProgressCallback = Callable[[float, str], Optional[bool]]


class Progress:
    """Maps the progress of a step onto a sub-range of the caller's callback and turns ``False`` into Cancelled."""

    def __init__(self, callback: ProgressCallback | None = None, start: float = 0.0, end: float = 1.0):
        self.callback = callback
        self.start = start
        self.end = end

    def __call__(self, fraction: float, message: str = "") -> None:
        if self.callback is None:
            return
        fraction = min(1.0, max(0.0, fraction))
        if self.callback(self.start + (self.end - self.start) * fraction, message) is False:
            raise Cancelled(f"cancelled during {message}" if message else "cancelled")

    def sub(self, start: float, end: float) -> "Progress":
        """A Progress for a step that covers ``start..end`` of this one."""
        span = self.end - self.start
        return Progress(self.callback, self.start + span * start, self.start + span * end)


def as_progress(callback: ProgressCallback | Progress | None) -> Progress:
    return callback if isinstance(callback, Progress) else Progress(callback)


class TerminalProgressBar:
    """A progress callback that draws a one-line bar with an ETA on a terminal (stderr), and nothing elsewhere."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.started = time.monotonic()
        self.last_draw = 0.0

    def __call__(self, fraction: float, message: str = "") -> bool:
        if not self.enabled:
            return True
        now = time.monotonic()
        if fraction < 1.0 and now - self.last_draw < 0.1:
            return True
        self.last_draw = now
        elapsed = now - self.started
        eta = f" ETA {elapsed * (1 - fraction) / fraction:5.1f} s" if 0.02 < fraction < 1.0 else ""
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {100 * fraction:5.1f}% {message[:40]:<40}{eta}")
        self.stream.flush()
        return True

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (self.width + 80) + "\r")
            self.stream.flush()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's stop, ``timeout``, ``kill``) answered as Ctrl-C is: partial outputs are removed.
    A KeyboardInterrupt, so every cleanup written for Ctrl-C runs for it too; the command line exits 143."""


def _raise_terminated(_signum, _frame) -> None:
    raise Terminated


def terminate_as_interrupt() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (it ended the process where it stood,
    leaving hidden partial files). For the command line: where SIGTERM already has a handler, or ignored, it is
    left alone (but for ``python -m bigvolume``'s own while it loads)."""
    current = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread() \
            and (current is signal.SIG_DFL or getattr(current, "bigvolume_loading", False)):
        signal.signal(signal.SIGTERM, _raise_terminated)


class _Interrupt:
    requested = False
    terminated = False

    def error(self) -> KeyboardInterrupt:
        """The interrupt to raise for what was requested."""
        return Terminated() if self.terminated else KeyboardInterrupt()


@contextlib.contextmanager
def interrupt_as_flag(raise_at_end: bool = True):
    """Inside this block, Ctrl-C (SIGINT), and SIGTERM where :func:`terminate_as_interrupt` is in place, only set
    ``.requested`` on the yielded object; the interrupt is raised when the block ends (unless ``raise_at_end`` is
    false: the block's work must not be cut short, and what it completes stands). For long C++ calls that run
    Python callbacks (vtk observers): a KeyboardInterrupt raised inside a vtk observer makes vtk print "Caught a
    Ctrl-C within python" and exit the process from inside its filter (a segmentation fault with the filter's threads
    running). The callback checks the flag and asks the filter to stop instead. Only where Python's default handler
    is in place (the main thread of a program that left SIGINT alone): an ignored SIGINT stays ignored, an
    application's own handler stays in charge."""
    state = _Interrupt()
    main = threading.current_thread() is threading.main_thread()
    # each signal on its own: a shell's background job ignores SIGINT, and SIGTERM must still be held
    holds_interrupt = main and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    holds_terminate = main and signal.getsignal(signal.SIGTERM) is _raise_terminated
    if not (holds_interrupt or holds_terminate):
        yield state
        return

    def remember(signum, _frame):
        state.requested = True
        state.terminated = state.terminated or signum == signal.SIGTERM
    if holds_interrupt:
        signal.signal(signal.SIGINT, remember)
    if holds_terminate:
        signal.signal(signal.SIGTERM, remember)
    try:
        yield state
    finally:
        if holds_interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if holds_terminate:
            signal.signal(signal.SIGTERM, _raise_terminated)
    if state.requested and raise_at_end:
        raise state.error()
