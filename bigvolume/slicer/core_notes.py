"""The notes the core logs (warnings of the "bigvolume" logger, which the command line prints as "note:" lines),
caught for the Slicer modules' Logics: a run shows them in its result, a panel's plan (made again at every change of
a setting) keeps them out of the log."""
from __future__ import annotations

import contextlib
import logging
import threading


@contextlib.contextmanager
def core_notes(quiet: bool = False):
    """Yields the list of the notes the core logs on this thread inside the ``with``, each once, in order.
    ``quiet``: they are kept out of the log as well. Errors, and what other threads log, pass as they are."""
    logger = logging.getLogger("bigvolume")
    thread = threading.get_ident()
    notes: list[str] = []

    def catch(record: logging.LogRecord) -> bool:
        if record.thread != thread or record.levelno > logging.WARNING:
            return True
        if record.levelno == logging.WARNING and record.getMessage() not in notes:
            notes.append(record.getMessage())
        return not quiet

    logger.addFilter(catch)
    try:
        yield notes
    finally:
        logger.removeFilter(catch)
