"""The one slab loop (:func:`run_slabs`): slabs read in order on a reader thread, ``READ_AHEAD`` ahead (with a halo
of context slices when asked: :class:`HaloReader`), each handed to the operation's *stage* on a pool of filter
threads, progress and cancel between slabs. Every operation runs on it: resample (files and arrays in memory),
stack import, dehaze's passes, reduce-bits, preview downsampling."""
from __future__ import annotations

import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import ContextManager, Protocol

import numpy as np

from ..core.progress import ProgressCallback, as_progress
from ..io.slabs import SlabReader
from .plan import READ_AHEAD

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
              timings: dict | None = None, start_message: str | None = None) -> None:
    """The slab loop: every slab of ``reader`` in order through ``stage.push``. ``READ_AHEAD`` slabs are read on a
    thread while one is worked on (so a slow slice, or a reader briefly starved of CPU by the filter threads, does
    not stall the work); ``threads`` filter threads are lent to the stage. Progress after each slab; a cancel
    raises Cancelled there (``message`` N/total; first ``start_message``, default "streaming N slabs"). ``halo``: each slab comes with up to that many slices of context each side (it then
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
    progress(0.0, start_message or f"streaming {len(slabs)} slab{'s' * (len(slabs) != 1)}")
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
