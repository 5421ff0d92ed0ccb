"""Exceptions with messages meant for users: each names the file or the value at fault."""
from __future__ import annotations

import contextlib


class BigVolumeError(Exception):
    """A problem the user can fix (bad file, bad option). The message is one clear line."""


class VolumeFileError(BigVolumeError):
    """A volume file that cannot be read or written."""


class Cancelled(Exception):
    """The user cancelled a running job through its progress callback. Not an error."""


@contextlib.contextmanager
def naming(path):
    """Inside this block, a BigVolumeError whose message does not start with ``path`` gets it in front, so that
    errors from code that knows only arrays (``the volume has ...``) still name the file."""
    try:
        yield
    except BigVolumeError as error:
        if str(error).startswith(str(path)):
            raise
        raise type(error)(f"{path}: {error}") from None


def whole_number(name: str, value, least: int = 0, most: int | None = None) -> int:
    """``value`` as an int when it is a whole number (a Python or numpy integer, not a bool) from ``least`` to
    ``most``; else refused naming ``name``. The Python door takes what the command line's int options take
    (a float was truncated or rounded silently: a ROI edge of 10.5 cut at 10, levels=1.5 made 2 levels)."""
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least or (
            most is not None and value > most):
        span = f"from {least} to {most}" if most is not None else f"of at least {least}"
        raise BigVolumeError(f"{name} must be a whole number {span}, got {value!r}")
    return int(value)
