"""The one slab engine every operation runs on: resample (streamed and in memory), stack import, dehaze, reduce-bits
and preview downsampling.

- **Plan**: :func:`plan_input` reads what a file operation needs from the header alone, and :func:`should_stream`
  is the one rule for "read whole or stream"; :func:`plan_slabs` is the one memory planner (the largest slab whose
  buffers, with what the process already holds, stay under the limit).
- **The loop**: :func:`run_slabs` reads slabs in order on a reader thread, ``READ_AHEAD`` ahead, hands each to a
  *stage* (``stage.push(k0, k1, slab, pool, sink)``: the operation's work on one slab, on a pool of filter threads)
  and reports progress per slab (a cancel from the callback stops it between slabs). The stage writes finished
  output slices to the sink; files and arrays in memory are read the same way (bigvolume.slabs.ArraySlabReader).
- **Sinks**: :func:`file_sink` (a slab writer on a thread, inside an atomic output: the file appears complete or
  not at all, and is aborted on any error or cancel) and :class:`ArraySink` (an array the caller owns).
"""
from __future__ import annotations

import contextlib
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Protocol

import numpy as np

from . import dicom, io
from .errors import BigVolumeError, VolumeFileError
from .geometry import Geometry
from .layout import voxel_layout
from .memory import current_rss, default_memory_limit, format_bytes
from .progress import ProgressCallback, as_progress
from .slab_writers import BackgroundWriter, SlabWriter, check_stream_output, compresses
from .slabs import SlabReader, open_slabs

# Slabs per volume at least (so reading overlaps filtering and progress moves).
MIN_SLABS = 8
READ_AHEAD = 2      # slabs read ahead of the one being worked on
FIXED_OVERHEAD = 24 * 2**20  # decompression chunks, thread stacks, the output block in flight
IN_MEMORY_BUFFERS = 2 * 2**30  # slab buffers a run over an array in memory may add to what the process holds


# --- plan -----------------------------------------------------------------------------------------------------------

def should_stream(asked: bool | None, reads_in_slabs: bool, needed_bytes: int, memory_limit: int,
                  can_stream: bool = True) -> bool:
    """The one rule: stream when asked (and the file allows it), or, by default, when the operation can stream and
    holding the input and output (``needed_bytes``) would exceed ``memory_limit``."""
    if asked is None:
        return reads_in_slabs and can_stream and needed_bytes > memory_limit
    return bool(asked) and reads_in_slabs


@dataclass
class InputPlan:
    """A volume file as the header describes it, and the memory an operation on it may use."""

    path: Path
    geometry: Geometry
    dtype: np.dtype
    components: int
    reads_in_slabs: bool     # the file's layout allows reading a slab at a time
    memory_limit: int
    automatic_limit: bool
    stream: bool | None      # as asked: None = decide
    series: str | None = None

    @property
    def input_bytes(self) -> int:
        return self.geometry.voxel_count * self.components * self.dtype.itemsize

    def streams(self, output_bytes: int | None = None, can_stream: bool = True) -> bool:
        """Whether an operation writing ``output_bytes`` (default: as many as it reads) streams."""
        needed = self.input_bytes + (self.input_bytes if output_bytes is None else output_bytes)
        return should_stream(self.stream, self.reads_in_slabs, needed, self.memory_limit, can_stream)


def plan_input(path, *, stream: bool | None = None, memory_limit: float | None = None,
               series: str | None = None) -> InputPlan:
    """Read ``path``'s header (and check its data files) and the memory limit; nothing else is read."""
    path = Path(path)
    if not path.exists():
        raise BigVolumeError(f"{path}: no such file")
    limit = int(memory_limit) if memory_limit is not None else default_memory_limit()
    if limit <= 0:
        raise BigVolumeError(f"memory limit must be positive, got {memory_limit}")
    geometry, dtype, components = io.read_geometry(path, series)
    if dicom.accepts(path, series):
        with open_slabs(path, series) as reader:
            reads_in_slabs = reader.streams
    else:
        reads_in_slabs = voxel_layout(path, dtype, components, geometry.voxel_count) is not None
    return InputPlan(path, geometry, np.dtype(dtype), components, reads_in_slabs, limit, memory_limit is None,
                     stream, series)


def in_memory_limit() -> int:
    """The memory limit of a run over an array already in memory: what the process holds plus room for buffers."""
    return current_rss() + IN_MEMORY_BUFFERS


@dataclass
class StreamPlan:
    slab_slices: int
    slabs: int
    working_bytes: int      # the buffers this plan allocates, at most
    memory_limit: int
    note: str = ""          # set when the limit was too small and the minimum was used instead
    window_slices: int = 0  # resampling: reduced slices the z window holds
    clipped_voxels: int | None = None  # with an intensity window: output voxels clipped to the type's range

    def describe(self) -> str:
        return (f"streamed in {self.slabs} slab{'s' * (self.slabs != 1)} of {self.slab_slices} slice"
                f"{'s' * (self.slab_slices != 1)}, buffers {format_bytes(self.working_bytes)} "
                f"(limit {format_bytes(self.memory_limit)})")


def plan_slabs(slices: int, slice_bytes: int, per_slice: int, fixed: int, memory_limit: float, *,
               max_slab_bytes: int | None = None, min_slabs: int = MIN_SLABS) -> StreamPlan:
    """The largest slab whose buffers (``per_slice`` bytes per slice of the slab, plus ``fixed``), with what the
    process already holds, stay under ``memory_limit``; at least ``min_slabs`` slabs and at most
    ``max_slab_bytes`` input bytes (``slice_bytes`` per slice) per slab."""
    fixed += FIXED_OVERHEAD
    in_use = current_rss()
    slab = (int(memory_limit) - in_use - fixed) // max(1, per_slice)
    note = ""
    if slab < 1:
        slab = 1
        note = (f"memory limit {format_bytes(memory_limit)} leaves no room beside the {format_bytes(in_use)} this "
                f"program already uses; streaming one slice at a time (buffers {format_bytes(fixed + per_slice)})")
    slab = min(slab, max(1, -(-slices // min_slabs)), slices)
    if max_slab_bytes:
        slab = min(slab, max(1, max_slab_bytes // max(1, slice_bytes)))
    slab = int(max(1, slab))
    return StreamPlan(slab, -(-slices // slab), int(fixed + slab * per_slice), int(memory_limit), note)


# --- the loop -------------------------------------------------------------------------------------------------------

class Stage(Protocol):
    """An operation's work on the slabs of one input, in order (see :func:`run_slabs`)."""

    def new_buffer(self, reader: SlabReader, slices: int):
        """A buffer for ``slices`` slices the reader fills (None: the reader allocates, or hands out views)."""

    def running(self, sink) -> ContextManager:
        """Context of the whole run (e.g. BLAS limits, GPU streams); everything is in ``sink`` when it exits."""

    def push(self, k0: int, k1: int, slab, pool: ThreadPoolExecutor, sink) -> None:
        """Work on slices ``k0 .. k1-1`` (``slab``; its buffer is reused once this returns) and write what is
        finished to ``sink``."""


class SlabStage:
    """A stage that keeps nothing between slabs but what it counts: slabs read as the reader likes (views of an
    array in memory, fresh buffers from a file), no context around the run. Operations subclass it."""

    def new_buffer(self, reader: SlabReader, slices: int):
        return None if reader.hands_out_views else reader.new_buffer(slices)

    def running(self, sink) -> ContextManager:
        return contextlib.nullcontext()

    def push(self, k0: int, k1: int, slab, pool: ThreadPoolExecutor, sink) -> None:
        raise NotImplementedError


class HaloReader:
    """Slabs of ``source`` with ``halo`` slices of context each side (fewer at the volume's ends): returns (the
    extended block, where the slab starts in it). Requests go forward; the slices the next request shares with this
    one are kept, so a file is read front to back once (a compressed one would restart when read backward)."""

    def __init__(self, source: SlabReader, halo: int):
        self.source, self.halo, self.slices = source, halo, source.slices
        self._kept, self._kept_k0 = None, 0

    def read(self, k0: int, k1: int) -> tuple[np.ndarray, int]:
        a0, a1 = max(0, k0 - self.halo), min(self.slices, k1 + self.halo)
        if self.halo == 0 or self.source.hands_out_views:  # views: nothing to keep
            return self.source.read(a0, a1), k0 - a0
        kept, kept_k0 = self._kept, self._kept_k0
        if kept is not None and kept_k0 <= a0 < kept_k0 + kept.shape[0]:
            reuse = kept[a0 - kept_k0:a1 - kept_k0]
            start = a0 + reuse.shape[0]
            extended = np.concatenate([reuse, self.source.read(start, a1)]) if start < a1 else reuse
        else:
            extended = self.source.read(a0, a1)
        keep = min(extended.shape[0], 2 * self.halo)
        self._kept, self._kept_k0 = extended[-keep:].copy(), a1 - keep
        return extended, k0 - a0


def run_slabs(reader: SlabReader, stage: Stage, sink, slab_slices: int, *, threads: int = 1,
              progress: ProgressCallback | None = None, message: str = "slab", halo: int = 0,
              timings: dict | None = None) -> None:
    """The slab loop: every slab of ``reader`` in order through ``stage.push``. ``READ_AHEAD`` slabs are read on a
    thread while one is worked on (so a slow slice, or a reader briefly starved of CPU by the filter threads, does
    not stall the work); ``threads`` filter threads are lent to the stage. Progress after each slab; a cancel
    raises Cancelled there. ``halo``: each slab comes with up to that many slices of context each side (it then
    starts at ``k0 - max(0, k0 - halo)`` in the block ``push`` gets; see HaloReader). ``timings``: seconds spent
    waiting for the reader ("read wait") and in the stage ("work") are added to it (benchmarks)."""
    progress = as_progress(progress)
    nk = reader.slices
    slabs = [(k0, min(k0 + slab_slices, nk)) for k0 in range(0, nk, slab_slices)]
    if halo:
        haloed = HaloReader(reader, halo)

        def read(k0, k1, _buffer):
            return haloed.read(k0, k1)[0]
        buffers = [None] * min(READ_AHEAD + 1, len(slabs))
    else:
        read = reader.read
        buffers = [stage.new_buffer(reader, slab_slices) for _ in range(min(READ_AHEAD + 1, len(slabs)))]
    progress(0.0, f"streaming {len(slabs)} slab{'s' * (len(slabs) != 1)}")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigvolume-reader") as read_pool, \
            ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="bigvolume-filter") as filter_pool, \
            stage.running(sink):
        pending = deque(read_pool.submit(read, *slabs[n], buffers[n]) for n in range(len(buffers) - 1))
        try:
            for number, (k0, k1) in enumerate(slabs):
                ahead = number + len(buffers) - 1
                if ahead < len(slabs):  # into the buffer the previous slab used, done with
                    pending.append(read_pool.submit(read, *slabs[ahead], buffers[ahead % len(buffers)]))
                waited = time.perf_counter()
                slab = pending.popleft().result()
                worked = time.perf_counter()
                stage.push(k0, k1, slab, filter_pool, sink)
                if timings is not None:
                    timings["read wait"] = timings.get("read wait", 0.0) + worked - waited
                    timings["work"] = timings.get("work", 0.0) + time.perf_counter() - worked
                progress(k1 / nk, f"{message} {number + 1}/{len(slabs)}")
        finally:
            for future in pending:
                future.cancel()


# --- sinks ----------------------------------------------------------------------------------------------------------

class ArraySink:
    """Writes output slices in order into a preallocated ``(k, j, i[, c])`` array (e.g. a volume node's voxels)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.filled = 0

    def write(self, block: np.ndarray) -> None:
        self.array[self.filled:self.filled + block.shape[0]] = block
        self.filled += block.shape[0]


def check_disk_space(path: Path, nbytes: int) -> None:
    free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    if nbytes > free:
        raise VolumeFileError(f"{path}: not enough disk space: the output needs {format_bytes(nbytes)}, "
                              f"{format_bytes(free)} are free")


@contextlib.contextmanager
def file_sink(path, geometry: Geometry, dtype, components: int = 1, compress: bool | None = None):
    """A sink writing ``path`` slab by slab (on a thread, see bigvolume.slab_writers) to a staging name that is
    moved into place when the ``with`` block ends normally and every slice was written. Any exception in the
    block (an error, a cancel, Ctrl-C) aborts the writer and leaves nothing. The output's form is checked, and the
    free disk space for an uncompressed output, before anything is written."""
    path, dtype = Path(path), np.dtype(dtype)
    check_stream_output(path, dtype, components)
    if not compresses(path, compress):
        check_disk_space(path, geometry.voxel_count * components * dtype.itemsize)
    try:
        with io.atomic_output(path) as staging_path:
            writer = BackgroundWriter(SlabWriter(staging_path, geometry, dtype, components, compress))
            try:
                yield writer
            except BaseException:
                writer.abort()
                raise
            writer.close()
    except OSError as error:
        raise VolumeFileError(f"{path}: cannot write ({error.strerror or error}); nothing was written") from None
