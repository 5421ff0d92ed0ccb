"""How a large uncompressed output goes to the disk: around the page cache (``O_DIRECT``, Linux), the counterpart of
:mod:`bigvolume.io.raw_reads`.

A buffered write costs the kernel a page-cache page and a copy per 4 KiB, on the writer's thread and taken from the
filter's cores (here, 2 cores: 0.24-0.65 system CPU-seconds per 256 MiB, the output of a 2 GiB x2 resample; around
the cache 0.08-0.10). :class:`DirectAppendFile` gathers what it is given in a page-aligned buffer and writes it in
aligned chunks; the last, partial chunk goes out padded and the file is cut back to its length on close, so the
bytes on disk are exactly those written. Small outputs, compressed ones (their size is unknown and their writer
is the compressor), and filesystems that refuse ``O_DIRECT`` or are not local disks are written the normal way.

``BIGVOLUME_DIRECT_WRITE`` = ``auto`` (default: outputs of DIRECT_MIN_BYTES or more on a local disk filesystem),
``never`` or ``always`` (whatever the size and filesystem, where ``O_DIRECT`` is allowed; for tests).
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from .raw_reads import ALIGNMENT, DIRECT_MIN_BYTES, LOCAL_FILESYSTEMS, filesystem_type, forced

WRITE_BUFFER_BYTES = 8 * 2 ** 20  # gathered, then written in one aligned call


def worth_writing_direct(path, nbytes: int) -> bool:
    """Whether ``nbytes`` going to the new file ``path`` should be written by :class:`DirectAppendFile`."""
    asked = forced("BIGVOLUME_DIRECT_WRITE", hasattr(os, "O_DIRECT"))
    if asked is not None:
        return asked
    return nbytes >= DIRECT_MIN_BYTES and filesystem_type(Path(path).parent) in LOCAL_FILESYSTEMS


def open_for_append(path, nbytes: int):
    """``path`` created (or emptied) for sequential writes of about ``nbytes``: a :class:`DirectAppendFile` when
    :func:`worth_writing_direct` says so and the filesystem allows it, else a plain binary file."""
    if worth_writing_direct(path, nbytes):
        try:
            return DirectAppendFile(path)
        except OSError:
            pass  # O_DIRECT refused here: the page cache it is
    return open(path, "wb")


class DirectAppendFile:
    """A new file written with ``O_DIRECT`` through a page-aligned buffer (see the module docstring): ``write``
    appends, ``close`` writes the rest and cuts the padding off. Opening raises OSError where the filesystem
    refuses ``O_DIRECT`` (the caller then writes the normal way)."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
        self._buffer = self._bytes = None
        try:
            self._buffer = mmap.mmap(-1, WRITE_BUFFER_BYTES)  # anonymous mappings are page-aligned
            self._bytes = np.frombuffer(self._buffer, np.uint8)
            self._write_out(ALIGNMENT)  # a refusal shows on the first write (EINVAL), not on open
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
        except BaseException:
            self._release()
            raise
        self._filled = 0   # bytes gathered in the buffer
        self._length = 0   # bytes given so far

    def write(self, data) -> None:
        source = np.frombuffer(data, np.uint8)
        done = 0
        while done < source.size:
            take = min(source.size - done, WRITE_BUFFER_BYTES - self._filled)
            self._bytes[self._filled:self._filled + take] = source[done:done + take]
            self._filled += take
            done += take
            if self._filled == WRITE_BUFFER_BYTES:
                self._write_out(WRITE_BUFFER_BYTES)
                self._filled = 0
        self._length += source.size

    def _write_out(self, length: int) -> None:
        view = memoryview(self._buffer)[:length]
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        """Write what is gathered (padded to ALIGNMENT) and cut the file to the bytes given."""
        if self._fd is None:
            return
        try:
            if self._filled:
                padded = -(-self._filled // ALIGNMENT) * ALIGNMENT
                self._bytes[self._filled:padded] = 0
                self._write_out(padded)
            os.ftruncate(self._fd, self._length)
        finally:
            self._release()

    def _release(self) -> None:
        self._bytes = None
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
