"""Exceptions with messages meant for users: each names the file or the value at fault."""


class BigVolumeError(Exception):
    """A problem the user can fix (bad file, bad option). The message is one clear line."""


class VolumeFileError(BigVolumeError):
    """A volume file that cannot be read or written."""


class Cancelled(Exception):
    """The user cancelled a running job through its progress callback. Not an error."""
