"""Exceptions with messages meant for users: each names the file or the value at fault."""
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
