"""How raw bytes come off the disk: a large file that is not in the page cache is read around it (``O_DIRECT``,
Linux), anything else through it (:func:`open_raw` picks); a large file that is already in the cache is not read at
all but mapped, slab by slab (:class:`MappedFile`).

A buffered read of a cold file costs the kernel a page-cache fill and a copy, on the reader thread, taken from the
filter's cores; around the cache, the disk's DMA fills the caller's buffer when it is page-aligned (the slab
readers' are), else a page-aligned bounce buffer and one copy follows. Side by side (``benchmarks/stream.py
--passes``, 2 GiB uint16, 2 cores): streamed resample of the cold file at x4 1180-1378 MB/s against 443-564 MB/s
through the page cache, at x2 751-753 against 435-457. A file that is already cached is read the normal way (the
copy is then all it costs), as is a small one, or one on a filesystem that refuses ``O_DIRECT`` or is not a local
disk.

``BIGVOLUME_DIRECT_READ`` = ``auto`` (default: files of 256 MiB or more, mostly not cached, on a local disk
filesystem), ``never`` or ``always`` (whatever the file; for benchmarks and tests). The cost of ``auto``: an
operation that reads a file twice (dehaze's passes) finds it cold the second time too; on a fast disk that is
about what the cached copy costs, on a slow one it is a second read from the disk (``never`` then).

A cached file's slab read is a copy out of the page cache, on the reader thread, which shares the 2 cores with the
filter: mapping the slab's pages instead (``mmap`` with ``MAP_POPULATE``, so the page tables are filled on the reader
thread too) and handing out a read-only view copies nothing (``benchmarks/stream.py``, 1 GiB warm at x4, 2 cores:
0.44-0.50 s for the whole command against 0.53-0.71 s, and 0.05-0.08 system CPU-seconds against 0.13-0.43). A slab's
mapping goes when its last view does, so memory stays that of a few slabs. ``BIGVOLUME_MAPPED_READ`` = ``auto``
(default: one data file of 64 MiB or more, at least 90 % cached, where ``MAP_POPULATE`` exists), ``never`` or
``always``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from pathlib import Path

import numpy as np

ALIGNMENT = 4096                # O_DIRECT offsets, lengths and buffers: a multiple of the device's logical block
BOUNCE_BYTES = 8 * 2 ** 20      # one aligned read at a time, copied into the caller's buffer
DIRECT_CHUNK_BYTES = 64 * 2 ** 20  # reads straight into an aligned buffer: at most this much per call
DIRECT_MIN_BYTES = 256 * 2 ** 20  # smaller files: the page cache costs little, and the next run reads them warm
COLD_FRACTION = 0.5             # at most this share of the file cached: read around the cache
MAPPED_MIN_BYTES = 64 * 2 ** 20   # smaller files: the copies cost little
WARM_FRACTION = 0.9             # at least this share cached: map (a fault on an uncached page would stall the filter)
RESIDENCY_SAMPLE_PAGES = 2 ** 20  # pages asked of mincore at most (4 GiB of 4 KiB pages; a 1 MiB answer)
RESIDENCY_WINDOWS = 64
# Local disk filesystems only: on network filesystems O_DIRECT also drops the client's read-ahead and caching.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "bcachefs", "zfs"})

_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _LIBC.mmap.restype = ctypes.c_void_p
        _LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_long]
        _LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return _LIBC


def resident_fraction(path) -> float | None:
    """Share of ``path``'s pages in the page cache (mincore(2) on a read-only mapping); None where unavailable."""
    try:
        libc = _libc()
        fd = os.open(path, os.O_RDONLY)
    except (OSError, AttributeError, TypeError):  # no C library by that name (Windows), no such file
        return None
    try:
        length = os.fstat(fd).st_size
        if length == 0:
            return 1.0
        address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            return _resident_share(libc, address, length)
        finally:
            libc.munmap(address, length)
    except (OSError, AttributeError):
        return None
    finally:
        os.close(fd)


def _resident_share(libc, address: int, length: int) -> float | None:
    """mincore over the whole mapping, or for a file of more than RESIDENCY_SAMPLE_PAGES pages over that many
    pages in RESIDENCY_WINDOWS evenly spaced windows (a 400 GB file would need a 100 MB vector)."""
    page = mmap.PAGESIZE
    pages = (length + page - 1) // page
    if pages <= RESIDENCY_SAMPLE_PAGES:
        windows = [(0, pages)]
    else:
        span = RESIDENCY_SAMPLE_PAGES // RESIDENCY_WINDOWS
        windows = [(first, span) for first in np.linspace(0, pages - span, RESIDENCY_WINDOWS).astype(int).tolist()]
    vector = (ctypes.c_ubyte * max(count for _, count in windows))()
    resident = counted = 0
    for first, count in windows:
        size = min(count * page, length - first * page)
        if libc.mincore(address + first * page, size, vector) != 0:
            return None
        resident += int(np.count_nonzero(np.frombuffer(vector, np.uint8, count) & 1))
        counted += count
    return resident / counted


def filesystem_type(path) -> str | None:
    """The type of the filesystem holding ``path`` (the longest mount point above it in /proc/self/mounts)."""
    try:
        real = os.path.realpath(path)
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def forced(variable: str, available: bool) -> bool | None:
    """An ``auto|never|always`` switch in the environment ``variable``: False for never (or where the feature is
    not ``available`` here), True for always, None for auto (the caller's own rule decides)."""
    mode = os.environ.get(variable, "auto").lower()
    if mode == "never" or not available:
        return False
    return True if mode == "always" else None


def _at_least(path, nbytes: int) -> bool:
    try:
        return os.path.getsize(path) >= nbytes
    except OSError:
        return False


def worth_reading_direct(path) -> bool:
    """Whether :class:`DirectFile` should read ``path`` (see the module's docstring)."""
    asked = forced("BIGVOLUME_DIRECT_READ", hasattr(os, "O_DIRECT"))
    if asked is not None:
        return asked
    if not _at_least(path, DIRECT_MIN_BYTES) or filesystem_type(path) not in LOCAL_FILESYSTEMS:
        return False
    cached = resident_fraction(path)
    return cached is not None and cached <= COLD_FRACTION


def worth_mapping(path) -> bool:
    """Whether :class:`MappedFile` should serve ``path`` (see the module's docstring)."""
    asked = forced("BIGVOLUME_MAPPED_READ", hasattr(mmap, "MAP_POPULATE"))
    if asked is not None:
        return asked
    if not _at_least(path, MAPPED_MIN_BYTES):
        return False
    cached = resident_fraction(path)
    return cached is not None and cached >= WARM_FRACTION


class MappedFile:
    """A file whose byte ranges are handed out as read-only arrays over their own mappings, populated when mapped
    (each mapping is unmapped when the last array over it goes). Linux: ``MAP_POPULATE``."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)

    def bytes_at(self, offset: int, length: int) -> np.ndarray | None:
        """``length`` bytes from ``offset`` (uint8, read-only), or None when the file ends before them (it was
        truncated after it was checked: mapping past the end would crash the process on the first access)."""
        if self.size() < offset + length:
            return None
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(self._fd, offset + length - start, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                            prot=mmap.PROT_READ, offset=start)
        return np.frombuffer(mapping, np.uint8, length, offset - start)  # keeps the mapping alive

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised array whose data starts on an ALIGNMENT boundary: :class:`DirectFile` reads into it with
    no copy (a 2 GiB cold file: about 0.4 CPU-seconds fewer on the reader thread)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


class PlainFile:
    """A file read through the page cache (seek and readinto: every platform has them)."""

    def __init__(self, path):
        self.path = Path(path)
        self._handle = open(self.path, "rb", buffering=0)

    def readinto_at(self, offset: int, target: memoryview) -> int:
        """Bytes from ``offset`` into ``target``, as many as the file holds (fewer only at its end)."""
        self._handle.seek(offset)
        done = 0
        while done < len(target):
            got = self._handle.readinto(target[done:])
            if not got:
                break
            done += got
        return done

    def close(self) -> None:
        self._handle.close()


def open_raw(path) -> "PlainFile | DirectFile":
    """``path`` opened for :meth:`readinto_at`: around the page cache when :func:`worth_reading_direct` says so and
    the filesystem allows it, else through it."""
    if worth_reading_direct(path):
        try:
            return DirectFile(path)
        except OSError:
            pass  # O_DIRECT refused here (tmpfs, some network filesystems): the page cache it is
    return PlainFile(path)


class DirectFile:
    """A file read with ``O_DIRECT``: aligned reads into a page-aligned bounce buffer, copied where asked.
    Opening raises OSError where the filesystem refuses ``O_DIRECT``; the caller then reads it the normal way."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
        try:
            self._bounce = mmap.mmap(-1, BOUNCE_BYTES)  # anonymous mappings are page-aligned
            self._bytes = np.frombuffer(self._bounce, np.uint8)
            self._read_aligned(0, ALIGNMENT)  # a refusal shows on the first read (EINVAL), not on open
        except BaseException:
            self.close()
            raise

    def _read_aligned(self, offset: int, length: int) -> int:
        return os.preadv(self._fd, [memoryview(self._bounce)[:length]], offset)

    def readinto_at(self, offset: int, target: memoryview) -> int:
        """Bytes from ``offset`` into ``target``, as many as the file holds (fewer only at its end). Where the
        offset and ``target`` are both aligned (a detached data file read into :func:`aligned_empty` buffers), the
        disk fills ``target`` itself and only a tail shorter than ALIGNMENT goes through the bounce buffer."""
        done, wanted = 0, len(target)
        destination = np.frombuffer(target, np.uint8)
        if offset % ALIGNMENT == 0 and destination.ctypes.data % ALIGNMENT == 0:
            while wanted - done >= ALIGNMENT:
                length = min(wanted - done, DIRECT_CHUNK_BYTES) // ALIGNMENT * ALIGNMENT
                got = os.preadv(self._fd, [target[done:done + length]], offset + done)
                done += got
                if got < length:
                    return done  # the end of the file
        while done < wanted:
            position = offset + done
            start = position - position % ALIGNMENT
            end = -(-(position + wanted - done) // ALIGNMENT) * ALIGNMENT
            got = self._read_aligned(start, min(end - start, BOUNCE_BYTES))
            usable = got - (position - start)
            if usable <= 0:
                break
            take = min(usable, wanted - done)
            destination[done:done + take] = self._bytes[position - start:position - start + take]
            done += take
        return done

    def close(self) -> None:
        if getattr(self, "_bytes", None) is not None:
            self._bytes = None
        if getattr(self, "_bounce", None) is not None:
            self._bounce.close()
            self._bounce = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
