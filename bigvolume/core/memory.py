"""Sizes in bytes: parsing and printing them, the machine's memory and cores, this process's resident memory."""
from __future__ import annotations

import math
import os
import re
import sys

from .errors import BigVolumeError

SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
              "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}
FALLBACK_MEMORY_LIMIT = 2 * 2**30  # where the machine's memory cannot be read
# Input bytes per slab at most on the CPU: larger slabs gain nothing once the filter threads are busy.
MAX_SLAB_BYTES = 32 * 2**20


def parse_size(text: str) -> float:
    """'20KB', '1.5 GiB', '300000' -> bytes. Raises ValueError with an example of what is accepted."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 20KB, 512MiB, 2GB)")
    return float(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


def memory_bytes(limit) -> int:
    """A memory limit given as bytes or as a size text ('1GB', '512MiB': what the command line takes) in bytes;
    refused in words when it is neither, or not positive."""
    try:
        value = parse_size(limit) if isinstance(limit, str) else float(limit)
    except (TypeError, ValueError):
        raise BigVolumeError(f"memory limit {limit!r}: give bytes or a size such as 512MB or 2GiB") from None
    if not value > 0 or not math.isfinite(value):
        raise BigVolumeError(f"memory limit must be positive, got {limit!r}")
    return int(value)


def format_bytes(count: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{int(count)} B"


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: Windows
        return _windows_memory("total")


def _windows_memory(which: str) -> int | None:
    """Windows through kernel32: the machine's physical memory ("total") or this process's working set ("rss");
    None elsewhere or when the call fails."""
    import ctypes
    from ctypes import wintypes
    try:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    except (AttributeError, OSError):  # not Windows
        return None
    if which == "total":
        class MemoryStatus(ctypes.Structure):  # MEMORYSTATUSEX
            _fields_ = [("length", wintypes.DWORD), ("load", wintypes.DWORD)] + \
                [(name, ctypes.c_ulonglong) for name in ("total_phys", "avail_phys", "total_page", "avail_page",
                                                         "total_virtual", "avail_virtual", "avail_extended")]
        status = MemoryStatus(length=ctypes.sizeof(MemoryStatus))
        return int(status.total_phys) if kernel32.GlobalMemoryStatusEx(ctypes.byref(status)) else None

    class Counters(ctypes.Structure):  # PROCESS_MEMORY_COUNTERS
        _fields_ = [("size", wintypes.DWORD), ("page_faults", wintypes.DWORD)] + \
            [(name, ctypes.c_size_t) for name in ("peak_working_set", "working_set", "quota_peak_paged",
                                                  "quota_paged", "quota_peak_nonpaged", "quota_nonpaged",
                                                  "pagefile", "peak_pagefile")]
    counters = Counters(size=ctypes.sizeof(Counters))
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    done = kernel32.K32GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.size)
    return int(counters.working_set) if done else None


def default_memory_limit() -> int:
    """A quarter of the machine's memory: room for the rest of the machine (and for Slicer around us)."""
    total = physical_memory()
    return total // 4 if total else FALLBACK_MEMORY_LIMIT


def current_rss() -> int:
    """Resident memory of this process now (0 where it cannot be read). Linux: /proc; Windows: the working set;
    macOS: the peak so far (getrusage), more than now, so plans made from it stay within their limit."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return _windows_memory("rss") or 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# glibc's allocator: what it keeps of freed memory counts as held, in the next plan and in the peak (elsewhere than
# glibc both calls do nothing)
_glibc = None


def _libc():
    global _glibc
    if _glibc is None:
        try:
            import ctypes
            _glibc = ctypes.CDLL("libc.so.6")
            _glibc.malloc_trim, _glibc.mallopt  # noqa: B018 (both there: glibc)
        except (OSError, AttributeError):
            _glibc = False
    return _glibc


def give_back_freed_memory() -> None:
    """Return to the system what the threads' malloc arenas keep of freed blocks (zarr's decoding threads: tens of
    MiB each)."""
    if _libc():
        _libc().malloc_trim(0)


MMAP_THRESHOLD = 2**20  # arrays of at least this many bytes are mapped, and unmapped when freed
_threshold_fixed = False


def fix_mmap_threshold() -> None:
    """glibc maps large allocations and unmaps them when freed, but raises that threshold to the largest block
    freed (up to 32 MiB): from then on a task's arrays came from the threads' heaps, which kept them after they were
    freed (a pyramid's 128^3 tasks at 256MB: 314 MiB, 194 MiB with the threshold fixed, in the same time). Fixed once
    per process (M_MMAP_THRESHOLD; setting it also ends glibc's raising of it)."""
    global _threshold_fixed
    if not _threshold_fixed and _libc():
        _libc().mallopt(-3, MMAP_THRESHOLD)
    _threshold_fixed = True
