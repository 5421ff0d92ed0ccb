"""Multiscale OME-Zarr pyramids (``bigvolume pyramid IN OUT.ome.zarr``, :func:`pyramid`).

- Level 0 is the input, bit for bit, streamed through the engine's slab loop into chunked zarr (rows of whole chunks,
  or shards, along z).
- Level k >= 1 is computed from level k-1 with ``method`` and that level's step factors (2 per axis, anisotropy
  aware: :func:`plan_levels`), one task per output chunk (or shard): ``resample_block`` reads the block's input
  region, halo included, from level k-1. The split into blocks is fixed by the chunk grid, so every scheduler runs
  the same tasks and writes the same bytes.
- With the local scheduler, level 1's tasks run during level 0's pass, reading the input rows still in memory
  (level 0 is the input, so this is the same computation as reading level 0 back; it only spares the decoding).
- Everything is written to ``OUT.partial`` beside OUT and renamed when complete. Each finished task (a level-0 row,
  a block) is recorded in the staging folder, so ``resume=True`` skips them after a crash or a kill.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import BigVolumeError, whole_number
from ..core.geometry import Geometry, orthonormal, output_size
from ..core.memory import (current_rss, default_memory_limit, default_threads, fix_mmap_threshold, format_bytes,
                           memory_bytes)
from ..core.progress import ProgressCallback, as_progress, interrupt_as_flag
from ..engine.distributed import DistributedRunner, LocalRunner, one_blas_thread
from ..engine.loop import SlabStage, run_slabs
from ..engine.plan import FIXED_OVERHEAD, READ_AHEAD, plan_slabs
from ..engine.stream import STREAMABLE_METHODS, output_blocks, resample_block
from ..io import dicom
from ..io.ome_zarr import (DEFAULT_OME_ZARR_VERSION, OME_ZARR_VERSIONS, SPACE_UNITS, PyramidLevel, is_zarr_store,
                           multiscales_attributes, scaled_geometry)
from ..io.files import WRITE_SUFFIXES, committed, input_files, is_inside, same_file, unit_axes, volume_suffix
from ..io.slab_readers import DecodedSlabReader
from ..io.slabs import SlabReader, open_slabs
from ..io.stacks import IMAGE_SUFFIXES, find_slices
from ..io.zarr_input import ZarrSlabReader, open_pyramid, settle_zarr_tasks, store_of
from ..io.zarr_output import (DECODERS, DEFAULT_ZSTD_LEVEL, ChunkCache, chunk_concurrency, create_level,
                              create_root, open_level, write_attributes)
from ..methods.kernels import ResampleKernels
from .resample import DEFAULT_METHOD, nan_note

logger = logging.getLogger("bigvolume")

DEFAULT_CHUNKS = 128
# An axis whose spacing is at least this many times the finest is not halved until the others catch up: levels
# approach isotropic voxels (1.5: halving it would leave it further from the others than not halving it).
ANISOTROPY = 1.5
SPACING_RTOL = 1e-6  # spacings this close (relative) are equal for the plan
# Blocks are filtered this many input slices at a time (fixed: a block's bytes depend on the block alone), which keeps
# the x/y pass in the CPU caches: 128^3 Lanczos blocks at x2 run 2-3x faster than as one slab of the whole region.
BLOCK_SLAB_SLICES = 8
# Level 0's pass reads slabs of about this size: large enough for the reader, small enough that the read-ahead
# buffers (three of them) stay small beside the window of rows (512^3 uint16: 8 MiB slabs peak 30 MiB lower than
# 16 MiB ones and run as fast).
SLAB_BYTES = 8 * 2**20
# What zarr holds beside a task's data while it writes it, in multiples of the task's raw bytes (zarr 3.1, measured
# on 256^3 and 512^3 uint16 noise): a shard's chunks encoded, then joined into one buffer (2x); a chunk's copy, its
# bytes and its encoded bytes (3x). A shard written in parts costs as much: zarr reads it back and joins it again
# (and 1.7x the time), so a shard is written whole and is the least level 0 can hold.
SHARD_WRITE_COPIES = 2
CHUNK_WRITE_COPIES = 3
STAGING_SUFFIX = ".partial"
# Output names that say "one file": a pyramid is a folder, and `pyramid in.nrrd out.nrrd` is a slip of the keyboard.
FILE_SUFFIXES = WRITE_SUFFIXES + IMAGE_SUFFIXES + dicom.DICOM_SUFFIXES + (".gz", ".raw", ".zraw")
RECORDS = ".bigvolume-pyramid"   # inside the staging folder: the plan and the finished tasks
STACK_OPTIONS = ("spacing", "roi", "gray", "reverse", "origin", "orientation")


def plan_levels(dimensions: Sequence[int], spacing: Sequence[float], chunks=DEFAULT_CHUNKS,
                levels: int | None = None) -> list[tuple[float, float, float]]:
    """The step factors (I, J, K) of levels 1, 2, ... of a volume of ``dimensions`` (I, J, K) and ``spacing``.
    Each step halves the axes whose spacing is less than ANISOTROPY x the finest (of the axes longer than one
    voxel). ``levels``: how many levels in all (level 0 included); default: until the level fits in one chunk
    (``chunks``: one size, or z y x)."""
    chunk = _chunks3(chunks)[::-1]
    dims, space, steps = [int(n) for n in dimensions], [float(s) for s in spacing], []
    if len(dims) != 3 or len(space) != 3 or min(dims) < 1 or not all(s > 0 and math.isfinite(s) for s in space):
        raise BigVolumeError(f"plan_levels needs three positive dimensions and spacings, got {list(dimensions)} and "
                             f"{list(spacing)}")  # (a spacing of 0 or NaN halved nothing, for ever)
    if levels is not None and levels < 1:
        raise BigVolumeError(f"levels must be at least 1, got {levels}")
    while True:
        if levels is None and all(n <= c for n, c in zip(dims, chunk)):
            break
        if levels is not None and len(steps) + 1 >= levels:
            break
        reducible = [n > 1 for n in dims]
        if not any(reducible):
            break  # a single voxel: nothing left to reduce
        finest = min(s for s, r in zip(space, reducible) if r)
        # relative tolerance: a rotated grid's spacings carry float noise (1.4999999999999998 for 1.5), and the
        # same grid must get the same plan whatever its direction
        step = tuple(2.0 if r and s < ANISOTROPY * finest * (1 - SPACING_RTOL) else 1.0
                     for s, r in zip(space, reducible))
        dims = [output_size(n, f) for n, f in zip(dims, step)]
        space = [s * f for s, f in zip(space, step)]
        steps.append(step)
    return steps


def _chunks3(chunks) -> tuple[int, int, int]:
    values = (int(chunks),) * 3 if np.isscalar(chunks) else tuple(int(c) for c in chunks)
    if len(values) != 3 or min(values) < 1:
        raise BigVolumeError(f"chunks must be one or three positive sizes (z y x), got {chunks}")
    return values


@dataclass
class LevelPlan:
    """One level: its array ``path``, grid, chunks and task blocks (z y x), and how it is computed."""

    number: int
    geometry: Geometry
    factors: tuple[float, float, float]          # cumulative (I, J, K)
    step: tuple[float, float, float] | None      # from the previous level (None for level 0)
    chunks: tuple[int, int, int]
    task_shape: tuple[int, int, int]              # a chunk, or a shard when sharded

    @property
    def path(self) -> str:
        return str(self.number)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    @property
    def source(self) -> str | None:
        return None if self.number == 0 else str(self.number - 1)

    def blocks(self):
        return output_blocks(self.shape, self.task_shape)


@dataclass
class PyramidReport:
    output_path: Path
    levels: list[LevelPlan]
    scheduler: str
    seconds: float
    skipped_tasks: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        shapes = ", ".join("x".join(map(str, level.geometry.dimensions)) for level in self.levels)
        resumed = f"; resumed: {self.skipped_tasks} finished tasks skipped" if self.skipped_tasks else ""
        return (f"{self.output_path}: {len(self.levels)} levels ({shapes}), {format_bytes(_disk_bytes(self.output_path))}"
                f" on disk, {self.seconds:.2f} s on {self.scheduler}{resumed}")


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# --- input -----------------------------------------------------------------------------------------------------------

def _is_stack_source(source) -> bool:
    if isinstance(source, (list, tuple)):
        return True
    text = str(source)
    path = Path(text)
    if path.is_dir():
        return not is_zarr_store(path) and not dicom.accepts(path, None)
    if path.is_file():  # what it is named: "scan[1].nrrd" or "scan 50%.nrrd" is a volume, not a pattern
        return path.suffix.lower() in IMAGE_SUFFIXES
    return any(c in text for c in "*?[") or "%" in text or path.suffix.lower() in IMAGE_SUFFIXES


def _header_pixel_size(source):
    """The pixel size the first slice's header gives (None: none), read from that header alone; None too when the
    stack cannot be found (planning it says why)."""
    from ..io.stacks import find_slices, probe_stack
    try:
        return probe_stack(find_slices(source), check_all=False).pixel_spacing
    except BigVolumeError:
        return None


def open_input(source, *, threads: int | None = None, level: int | None = None, unit: str | None = None,
               series: str | None = None, **stack_options) -> tuple[SlabReader, bool, str | None, bool]:
    """A slab reader for ``source``, whether it is an image stack, its unit (a Zarr store's own, "" when it names
    none; else None), and whether the reader's geometry is in millimetres: a volume file or DICOM series (what
    ``resample`` reads), a stack of slices (what ``import-stack`` reads, with its ``stack_options``: spacing, roi,
    gray, reverse, origin, orientation), or a Zarr/OME-Zarr store (``level``, default 0; its unit is kept). A
    stack's geometry is in the user's unit when they give its spacing (or none is known), and in millimetres when it
    comes from the slices' headers (TIFF resolution, PNG pHYs: converted by SimpleITK). A stack's origin is in
    ``unit`` (default micrometres) like its spacing, so it is converted to millimetres too when the spacing comes
    from the headers (it was taken as millimetres then, and the same --origin landed 1000 times farther)."""
    given = {k: v for k, v in stack_options.items() if v is not None}
    if _is_stack_source(source):
        from .stack_import import plan_stack_import
        if "origin" in given and "spacing" not in given and _header_pixel_size(source) is not None:
            to_millimetres = SPACE_UNITS[unit or "micrometer"]
            given["origin"] = tuple(float(v) * to_millimetres for v in given["origin"])
        plan = plan_stack_import(source, factor=1.0, threads=threads, **given)
        from_headers = "spacing" not in given and plan.info.pixel_spacing is not None
        return plan.reader, True, None, from_headers
    path = Path(source)
    if not path.exists():
        raise BigVolumeError(f"{path}: no such file")
    if given:  # (--gray was let through and dropped)
        raise BigVolumeError(f"{path}: --{sorted(given)[0]} is for image stacks; a volume file carries its own "
                             "geometry and channels")
    reader = open_slabs(path, series, level=level)
    pyramid = getattr(reader, "pyramid", None)  # OME-Zarr (read in mm): its unit is kept
    return reader, False, getattr(pyramid, "unit", None), True


def _rotation_grid(geometry: Geometry, source) -> Geometry:
    """``geometry`` with unit direction columns (their lengths in the spacing: the same grid), as OME-Zarr and our
    ``bigvolume.direction`` store it; a sheared grid is refused (the store was written whole, then refused by every
    reader of ours: "not a rotation matrix")."""
    spacing, direction = unit_axes(geometry)
    if not orthonormal(direction):
        raise BigVolumeError(f"{source}: the volume's axes are not at right angles (a sheared grid), which OME-Zarr "
                             "cannot store (a scale, a translation and a rotation): resample it onto a grid first")
    if spacing == tuple(geometry.spacing):
        return geometry
    return Geometry(geometry.dimensions, spacing, geometry.origin, direction)


# --- staging, records ------------------------------------------------------------------------------------------------

class Records:
    """The finished tasks of a run, one append-only file per level in the staging folder (``level-K.done``: one line
    per task, written after the task's data: its number and the stamps of its stored files, :func:`stored_stamps`).
    A line cut short by a kill is ignored, and so is one without stamps."""

    def __init__(self, staging: Path):
        self.folder = staging / RECORDS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stamps: dict[int, dict[int, list[str]]] = {}  # level -> finished task -> its files' stamps
        self._files: dict[int, int] = {}

    @property
    def done(self) -> dict:
        """level -> the numbers of its finished tasks."""
        return {level: stamps.keys() for level, stamps in self.stamps.items()}

    def load(self, levels: int) -> None:
        for level in range(levels):
            file = self.folder / f"level-{level}.done"
            lines = file.read_text().split("\n")[:-1] if file.is_file() else []  # the last is partial or empty
            stamps = {}
            for line in lines:
                words = line.split()
                if len(words) > 1 and words[0].isdigit():
                    stamps[int(words[0])] = words[1:]
            self.stamps[level] = stamps

    def add(self, level: int, number: int, stamps: Sequence[str]) -> None:
        if level not in self._files:
            self._files[level] = os.open(self.folder / f"level-{level}.done", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(self._files[level], f"{number} {' '.join(stamps)}\n".encode())
        self.stamps.setdefault(level, {})[number] = list(stamps)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


def _input_paths(input) -> tuple[list[tuple[Path, str]], list[Path]]:
    """Everything the input consists of, for the output checks, each with its name in messages: each file (a
    header's data files too), each folder (a stack's, a DICOM series'), and for a Zarr store the whole store (a
    level's folder belongs to its pyramid: replacing the pyramid replaces the level); and the folders of glob or
    printf patterns (they hold the files matched, but writing inside them is harmless)."""
    found: list[tuple[Path, str]] = []
    pattern_folders: list[Path] = []
    for item in input if isinstance(input, (list, tuple)) else [input]:
        path = Path(str(item))
        if not path.exists():
            if any(c in str(item) for c in "*?[%"):
                folder = path.parent
                while any(c in str(folder) for c in "*?[%"):
                    folder = folder.parent
                pattern_folders.append(folder)
            continue
        store = store_of(path)  # (None when not readable as a store: opening the input says so)
        if store is not None:
            found.append((store, "the input"))
        files = input_files(path)
        found += [(part, "the input" if n == 0 else "the input's data file") for n, part in enumerate(files)]
    return found, pattern_folders


def _refuse_output_over_input(input, output: Path) -> None:
    """OUT may be neither the input, nor inside it (a store, a folder), nor hold it: --overwrite would replace it."""
    parts, pattern_folders = _input_paths(input)
    for folder in pattern_folders:
        if same_file(output, folder) or is_inside(folder, output):
            raise BigVolumeError(f"{output}: holds the input's folder {folder}; write the pyramid elsewhere")
    for part, what in parts:
        if same_file(output, part):
            raise BigVolumeError(f"{output}: would overwrite {what} {part}; write the pyramid elsewhere")
        if part.is_dir() and is_inside(output, part):
            raise BigVolumeError(f"{output}: inside {what} {part}; write the pyramid elsewhere")
        if is_inside(part, output):
            raise BigVolumeError(f"{output}: holds {what} {part}; write the pyramid elsewhere")


def _remove(path: Path) -> None:
    """Remove a folder or a file, if there."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _remove_staging(staging: Path) -> None:
    """Remove the staging folder after an error. The other chunk writes of a failed write (a full disk) still run
    on zarr's event loop and would land after a single removal: wait for them, then remove (again if need be)."""
    settle_zarr_tasks()
    for _ in range(20):
        shutil.rmtree(staging, ignore_errors=True)
        if not staging.exists():
            return
        time.sleep(0.1)


def _rename(source: Path, target: Path, tries: int = 10) -> None:
    """A folder renamed, tried again for a moment when refused: on Windows a virus scanner or the search indexer
    holds a file just written for a short while, and no folder holding an open file can be renamed."""
    for attempt in range(tries):
        try:
            source.rename(target)
            return
        except PermissionError:
            if attempt == tries - 1:
                raise
            time.sleep(0.2)


# zarr's LocalStore writes NAME.<uuid4 hex>.partial and renames it: a killed process leaves such files behind
ZARR_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$")


def _nothing_to_resume(staging: Path) -> bool:
    """A staging folder of ours that a run left before writing its plan (a kill or Ctrl-C in its first moments):
    no task had finished (they are recorded after the plan), and it holds nothing but the store's metadata, empty
    level arrays and the records folder, if that much."""
    if not staging.is_dir() or (staging / RECORDS / "plan.json").is_file():
        return False
    ours = {RECORDS, "zarr.json", ".zgroup", ".zattrs"}
    return all(entry.name in ours or (entry.is_dir() and entry.name.isdigit()) for entry in staging.iterdir())


def _remove_zarr_temporaries(staging: Path) -> None:
    """The temporary files of writes a killed run left unfinished (resumed runs): not part of the store."""
    for path in staging.rglob("*.partial"):
        if ZARR_TEMPORARY.search(path.name) and path.is_file():
            path.unlink()


# --- tasks -----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockTask:
    """One output block of a level >= 1, computed from the previous level (picklable: runs on any worker)."""

    store: str
    run: str
    source: str
    target: str
    method: str
    source_shape: tuple[int, int, int]
    dtype: str
    step: tuple[float, float, float]
    block: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    cache_bytes: int = 256 * 2**20


@functools.lru_cache(maxsize=16)
def level_kernels(method: str, shape, dtype: str, step) -> ResampleKernels:
    """The tables of one level step, built once per process."""
    return ResampleKernels.for_factors(method, tuple(shape), np.dtype(dtype), tuple(step))


_CACHE: list[ChunkCache] = []  # this process's decoded chunks of the level being read (one cache per process)


def compute_block(task: BlockTask) -> list[str]:
    """Compute one block from the previous level's array and write it (whole chunks or shards); returns the stamps
    of the files written (:func:`stored_stamps`)."""
    one_blas_thread()
    fix_mmap_threshold()
    source = open_level(task.store, task.source, task.run)
    target = open_level(task.store, task.target, task.run)
    kernels = level_kernels(task.method, task.source_shape, task.dtype, task.step)
    if not _CACHE:
        _CACHE.append(ChunkCache(task.cache_bytes))
    _CACHE[0].max_bytes = task.cache_bytes  # this run's (a process's first run set it, for every later run)
    key = (task.store, task.source, task.run)

    def read(region):
        try:
            return _CACHE[0].read(source, key, region)
        except Exception as error:  # a damaged chunk of a resumed run's finished level: one line naming it
            reader = ZarrSlabReader(open_pyramid(Path(task.store) / task.source))
            raise reader.diagnose(tuple((r.start, r.stop) for r in region), error) from None

    out = resample_block(read, kernels, task.block, slab_slices=BLOCK_SLAB_SLICES)
    target[tuple(slice(a, b) for a, b in task.block)] = out
    return stored_stamps(stored_files(target, task.block))


class _PieceReader(SlabReader):
    """Slices ``z0 .. z1-1`` of ``reader``, the rows and columns of ``box`` (((y0, y1), (x0, x1)); default: whole
    slices): a resumed level-0 pass starts where work remains, and a row too large for the memory limit is read one
    piece at a time. A piece of a reader that neither hands out views nor reads boxes (a raw or compressed file,
    slices of a stack) is copied out of whole slices read into one buffer (reads are on one thread)."""

    def __init__(self, reader: SlabReader, z0: int, z1: int, box=None):
        g = reader.geometry
        self.box = box or ((0, reader.slice_shape[0]), (0, reader.slice_shape[1]))
        (y0, y1), (x0, x1) = self.box
        super().__init__(reader.path, Geometry((x1 - x0, y1 - y0, z1 - z0), g.spacing, g.origin, g.direction),
                         reader.dtype, reader.components)
        self.reader, self.start = reader, z0
        self.whole = self.box == ((0, reader.slice_shape[0]), (0, reader.slice_shape[1]))
        self.hands_out_views, self.holds_input = reader.hands_out_views, reader.holds_input
        self._slices = None  # the whole slices a piece is copied from
        self._chunk_row = None  # a Zarr input's: (first slice, the piece's decoded chunk row)

    def new_buffer(self, slices: int, dtype=None):
        return self.reader.new_buffer(slices, dtype) if self.whole else super().new_buffer(slices, dtype)

    def read(self, k0, k1, out=None):
        a, b = k0 + self.start, k1 + self.start
        if self.whole:
            return self.reader.read(a, b, out)
        (y0, y1), (x0, x1) = self.box
        if isinstance(self.reader, ZarrSlabReader):
            # the piece's chunk row decoded once, served slab by slab (read_box per slab decoded each chunk once
            # per slab that touched it: 1.8x the time of whole rows)
            depth = int(self.reader.slab_alignment)
            out = self.new_buffer(b - a) if out is None else out[:b - a]
            for lo in range(a // depth * depth, b, depth):  # (a slab may span two chunk rows)
                if self._chunk_row is None or self._chunk_row[0] != lo:
                    self._chunk_row = None  # (freed before the next is decoded)
                    hi = min(lo + depth, self.reader.slices)
                    self._chunk_row = (lo, self.reader.read_box(((lo, hi), (y0, y1), (x0, x1))))
                c0, c1 = max(a, lo), min(b, lo + depth)
                out[c0 - a:c1 - a] = self._chunk_row[1][c0 - lo:c1 - lo]
            return out
        if self.reader.hands_out_views:
            piece = self.reader.read(a, b)[:, y0:y1, x0:x1]
        else:
            if self._slices is None or self._slices.shape[0] < b - a:
                self._slices = self.reader.new_buffer(b - a)
            piece = self.reader.read(a, b, self._slices)[:, y0:y1, x0:x1]
        if out is None and self.hands_out_views:
            return piece
        out = self.new_buffer(b - a) if out is None else out[:b - a]
        out[...] = piece
        return out


class Level0Stage(SlabStage):
    """Level 0's pass on the engine's slab loop: slabs gather in a window of input slices; each complete row of
    level-0 chunks (or shards) is written, and each level-1 block whose input region is in the window is computed
    from it (on the loop's filter threads) and written. Slices nothing needs any more leave the window."""

    def __init__(self, level0, rows, rows_todo, level1_tasks, start: int, capacity: int, dtype, record, strip: int,
                 box):
        self.level0, self.rows, self.record, self.strip = level0, rows, record, strip
        self.box = box              # ((y0, y1), (x0, x1)) of level 0 the window holds (a piece of each row)
        self.rows_todo = sorted(rows_todo)
        self.tasks = level1_tasks   # [(number, block, region, kernels, target)], by region end
        self.start = start
        (y0, y1), (x0, x1) = box
        self.window = np.empty((capacity, y1 - y0, x1 - x0), dtype)
        self.w0 = self.w1 = start   # the window holds slices w0 .. w1-1
        self.pending = []           # (level, number, future) submitted, not yet recorded
        self.nan = 0                # NaN voxels of the input slices read (float inputs)

    def _needed_from(self) -> int:
        starts = [self.rows[r][0] for r in self.rows_todo] + [t[2][0].start for t in self.tasks]
        return min(starts, default=self.w1)

    def push(self, k0, k1, slab, pool, sink) -> None:
        # Jobs run while the next slabs are read and copied in (they read only filled slices); the window's front
        # moves only once every job that may read it has finished.
        k0, k1 = k0 + self.start, k1 + self.start
        if self.w1 - self.w0 + (k1 - k0) > self.window.shape[0]:
            self._finish(wait=True)
            keep = max(self._needed_from(), self.w0)
            shift, kept = keep - self.w0, self.w1 - keep
            # in pieces no longer than the shift: numpy would copy overlapping ranges through a temporary as large
            # as the window
            for first in range(0, kept, max(1, shift)):
                last = min(first + shift, kept)
                self.window[first:last] = self.window[first + shift:last + shift]
            self.w0 = keep
        self.window[k0 - self.w0:k1 - self.w0] = slab
        self.w1 = k1
        if slab.dtype.kind == "f":
            self.nan += int(np.count_nonzero(np.isnan(slab)))
        while self.rows_todo and self.rows[self.rows_todo[0]][1] <= k1:
            row = self.rows_todo.pop(0)
            z0, z1 = self.rows[row]
            self.pending.append((0, row, pool.submit(self._write_row, z0, z1)))
        while self.tasks and self.tasks[0][2][0].stop <= k1:
            number, block, region, kernels, target = self.tasks.pop(0)
            self.pending.append((1, number, pool.submit(self._compute, block, region, kernels, target)))
        self._finish(wait=False)

    def _finish(self, wait: bool) -> None:
        """Record the finished jobs (all of them, waiting, with ``wait``)."""
        still = []
        for level, number, job in self.pending:
            if wait or job.done():
                self.record(level, number, job.result())
            else:
                still.append((level, number, job))
        self.pending = still

    @contextlib.contextmanager
    def running(self, sink):
        yield
        self._finish(wait=True)  # not on an error: the loop's pools then wait for the jobs, unrecorded

    def _write_row(self, z0, z1) -> list[str]:
        # A strip of whole chunks (or shards) along y at a time: zarr copies what it is given, and a whole row of a
        # large slice would be copied at once.
        (b0, b1), (x0, x1) = self.box
        for y0 in range(b0, b1, self.strip):
            y1 = min(y0 + self.strip, b1)
            self.level0[z0:z1, y0:y1, x0:x1] = self.window[z0 - self.w0:z1 - self.w0, y0 - b0:y1 - b0]
        return stored_stamps(stored_files(self.level0, ((z0, z1), (b0, b1), (x0, x1))))

    def _compute(self, block, region, kernels, target):
        def read_region(region):  # in the window: level 0's slices, still in memory
            z, y, x = region
            return self.window[z.start - self.w0:z.stop - self.w0, y, x]
        out = resample_block(read_region, kernels, block, slab_slices=BLOCK_SLAB_SLICES)
        target[tuple(slice(a, b) for a, b in block)] = out
        return stored_stamps(stored_files(target, block))


def _level0_in_pieces(reader, level0, level: LevelPlan, rows, rows_todo, planned: Level0Plan, threads, record,
                      advance) -> int:
    """Level 0's rows too large for the memory limit, each read and written one piece of ``planned.band`` at a
    time (the same chunks or shards, whole: the same bytes); a row is recorded once all its pieces are written.
    Returns the NaN voxels read."""
    nan = 0
    for row in sorted(rows_todo):
        z0, z1 = rows[row]
        for box in planned.pieces(level.shape):
            part = _PieceReader(reader, z0, z1, box)
            stage = Level0Stage(level0, [(z0, z1)], [0], [], z0, z1 - z0, reader.dtype, lambda *done: None,
                                level.task_shape[1], box)
            voxels = (box[0][1] - box[0][0]) * (box[1][1] - box[1][0])
            streamed = {"slices": 0.0}

            def slab_progress(fraction, message, voxels=voxels, streamed=streamed):
                slices = fraction * (z1 - z0)
                advance((slices - streamed["slices"]) * voxels, f"level 0: row {row + 1}/{len(rows)}")
                streamed["slices"] = slices

            run_slabs(part, stage, None, planned.slab, threads=threads, progress=slab_progress)
            nan += stage.nan
        record(0, row, stored_stamps(stored_files(level0, ((z0, z1), (0, level.shape[1]), (0, level.shape[2])))))
    return nan


def _window_capacity(slabs, rows, rows_todo, task_regions, start) -> int:
    """The window size (slices) :class:`Level0Stage` needs for these slabs, rows and level-1 regions."""
    todo = sorted(rows_todo)
    regions = sorted(task_regions, key=lambda r: r[1])
    capacity, needed = 1, start
    for k0, k1 in slabs:
        capacity = max(capacity, k1 - needed)
        todo = [r for r in todo if rows[r][1] > k1]
        regions = [r for r in regions if r[1] > k1]
        needed = min([rows[r][0] for r in todo] + [r[0] for r in regions] + [k1])
    return capacity


# --- the pyramid -----------------------------------------------------------------------------------------------------

def pyramid(input, output, *, levels: int | None = None, chunks=DEFAULT_CHUNKS, shard: int | None = None,
            method: str = DEFAULT_METHOD, ome_zarr_version: str = DEFAULT_OME_ZARR_VERSION,
            zstd_level: int = DEFAULT_ZSTD_LEVEL, workers: int | None = None, scheduler: str | None = None,
            memory_limit: float | None = None, resume: bool = False, keep_partial: bool = False,
            overwrite: bool = False, progress: ProgressCallback | None = None, unit: str | None = None,
            threads: int | None = None, level: int | None = None, series: str | None = None,
            **stack_options) -> PyramidReport:
    """Write the multiscale OME-Zarr pyramid of ``input`` to ``output``.

    input: a volume file or DICOM series, a stack of slices (folder, glob, printf pattern, list; ``stack_options``
    as :func:`bigvolume.import_stack`: spacing, roi, gray, reverse, origin, orientation), or an OME-Zarr/Zarr store
    (``level``: which of its levels, default 0; its unit is kept). series: the DICOM series' UID when the input's
    folder holds several.
    levels: levels in all (default: until the coarsest fits one chunk). chunks: chunk size (one, or z y x).
    shard: chunks per shard along each axis (OME-Zarr 0.5 only). method: a streaming method (lanczos default).
    workers: run on a dask.distributed LocalCluster of that many processes; scheduler: the address of an existing
    dask.distributed scheduler; default: Dask's local threads (``threads``, default all cores). memory_limit: bytes
    for the level-0 pass and per worker. resume: continue the run whose staging folder ``OUT.partial`` is there.
    keep_partial: keep the staging folder after an error or Ctrl-C (for ``resume``). overwrite: replace OUT.
    unit: the axes' unit (default: an OME-Zarr input's, millimeter for volume files, micrometer for stacks): a stack's
    spacing is in it; a volume's millimetres are converted to it."""
    started = time.perf_counter()
    output = Path(output)
    if not output.name:  # "." or "..": name the folder, so that the checks below speak of it
        output = Path(os.path.abspath(output))
    if not output.name:
        raise BigVolumeError(f"{output}: not a folder a pyramid can be written to; name it NAME.ome.zarr")
    if method not in STREAMABLE_METHODS:
        raise BigVolumeError(f"method {method!r} cannot run block by block; choose one of "
                             f"{', '.join(STREAMABLE_METHODS)}")
    if ome_zarr_version not in OME_ZARR_VERSIONS:
        raise BigVolumeError(f"OME-Zarr version {ome_zarr_version!r}: choose one of {', '.join(OME_ZARR_VERSIONS)}")
    if shard is not None and ome_zarr_version != "0.5":
        raise BigVolumeError("sharding needs Zarr v3: OME-Zarr 0.5 (leave out --ome-zarr-version 0.4 or --shard)")
    # whole numbers where the command line takes whole numbers (levels=1.5 made 2 levels, workers=0 a cluster of
    # none, a shard of 1.5 chunks a zarr error about a chunk shape nobody gave)
    for name, value, least, most in (("levels", levels, 1, None), ("shard", shard, 1, None),
                                     ("workers", workers, 1, None), ("threads", threads, 1, None),
                                     ("zstd_level", zstd_level, 0, 22)):  # zstd's 0 is its default level
        if value is not None:
            whole_number(name, value, least, most)
    if memory_limit is not None and not memory_limit:
        raise BigVolumeError("memory limit must be positive, got 0")
    if workers is not None and scheduler is not None:
        raise BigVolumeError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    if unit is not None and unit not in SPACE_UNITS:
        raise BigVolumeError(f"unit {unit!r}: choose one of {', '.join(SPACE_UNITS)}")
    chunk3 = _chunks3(chunks)
    threads = threads or default_threads()
    limit = memory_bytes(memory_limit) if memory_limit else default_memory_limit()
    staging = output.with_name(output.name + STAGING_SUFFIX)

    # Refusals that need no input read first: nothing is touched, nothing is said before them.
    if volume_suffix(output) in FILE_SUFFIXES:
        raise BigVolumeError(f"{output}: a pyramid is an OME-Zarr folder, not a {volume_suffix(output)} file; name it "
                             "NAME.ome.zarr")
    _refuse_output_over_input(input, output)
    if output.exists() and not overwrite and not resume:
        raise BigVolumeError(f"{output}: exists; give --overwrite to replace it")
    if output.exists() and not is_zarr_store(output):  # --overwrite replaces a pyramid, never a user's folder or file
        raise BigVolumeError(f"{output}: exists and is not a Zarr store; --overwrite only replaces a pyramid: "
                             "remove it yourself, or name another output")
    if str(output.parent) and not output.parent.is_dir():
        raise BigVolumeError(f"{output}: the folder {output.parent} does not exist")
    reader, is_stack, input_unit, in_millimetres = open_input(input, threads=threads, level=level, unit=unit,
                                                              series=series, **stack_options)
    try:
        if reader.components > 1:
            raise BigVolumeError(f"{input}: pyramids of one-component volumes only (this one has "
                                 f"{reader.components}){'; choose gray luminance or channel:N' if is_stack else ''}")
        reader.geometry = _rotation_grid(reader.geometry, input)
        plan = _plan(reader, chunk3, shard, levels)
        # (the unit written, not the option: --resume --unit millimeter continues a run that gave no --unit)
        # (a store without a unit stays without: its numbers were read as written)
        unit = unit or (input_unit if input_unit is not None else "micrometer" if is_stack else "millimeter")
        fingerprint = _fingerprint(input, reader, plan, method, ome_zarr_version, unit, zstd_level, chunk3, shard,
                                   series)
        resuming = False
        if staging.exists() and resume and _nothing_to_resume(staging):
            shutil.rmtree(staging)  # stopped before its plan: no task had finished
        if staging.exists():
            if resume:
                recorded = staging / RECORDS / "plan.json"
                before = json.loads(recorded.read_text()) if recorded.is_file() else {}
                stamps, before_stamps = fingerprint["input_files"], before.pop("input_files", None)
                if before != {k: v for k, v in fingerprint.items() if k != "input_files"}:
                    raise BigVolumeError(f"{staging}: made by another run (other input or options); remove it, or "
                                         "run without --resume and with --overwrite")
                if stamps != before_stamps:
                    changed = next((a[0] for a, b in zip(stamps, before_stamps or []) if a != b),
                                   stamps[0][0] if stamps else input)
                    raise BigVolumeError(f"{changed}: changed (size or modification time) since the interrupted run "
                                         f"kept in {staging}; run with --overwrite instead of --resume")
                resuming = True
            elif overwrite:
                shutil.rmtree(staging)
            else:
                raise BigVolumeError(f"{staging}: an interrupted run's staging folder; --resume continues it, "
                                     "--overwrite starts again")
        elif output.exists() and not overwrite:
            raise BigVolumeError(f"{output}: exists; give --overwrite to replace it")
        needed = sum(level.geometry.voxel_count for level in plan) * reader.dtype.itemsize
        free = shutil.disk_usage(output.parent if str(output.parent) else ".").free
        if not resuming and needed > free:
            raise BigVolumeError(f"{output}: not enough disk space: the pyramid may need {format_bytes(needed)} "
                                 f"(uncompressed), {format_bytes(free)} are free")
        if workers:  # (an existing scheduler's workers have their own limits)
            _refuse_tasks_over_worker_limit(plan, reader.dtype, method, limit)
        runner = (DistributedRunner(workers, scheduler, limit) if workers or scheduler
                  else LocalRunner(threads))
        try:
            with runner, chunk_concurrency(threads):  # this process's writes (level 0's pass, local tasks)
                skipped, notes = _build(reader, plan, staging, fingerprint, resuming, runner, method, ome_zarr_version,
                                 unit, zstd_level, threads, limit, as_progress(progress), name=Path(str(input)).name,
                                 to_unit=1.0 / SPACE_UNITS.get(unit, 1.0) if in_millimetres else 1.0)
        except BaseException as error:
            if not keep_partial:
                _remove_staging(staging)
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BigVolumeError(f"{output}: the disk is full ({error.strerror}); free space, or write the "
                                     "pyramid elsewhere") from None
            if type(error).__name__ == "KilledWorker":  # (dask's traceback named no cause a user can act on)
                per_worker = f" of {format_bytes(limit)} each" if workers else ""
                raise BigVolumeError(
                    f"{output}: the Dask workers running a task died each time it was tried (most often out of "
                    f"memory: their limit{per_worker} holds less than a task needs, and with --shard a task is a "
                    "whole shard); give a larger --memory-limit, or a smaller --shard or --chunks") from None
            raise
    finally:
        reader.close()
    # The pyramid is complete: the swap finishes whatever Ctrl-C says meanwhile (cut, it left no OUT, or the old one
    # beside the new, which every later --overwrite then tripped over).
    # The records go last: a swap that fails (Windows renames no folder a scanner or an Explorer window holds a file
    # of) leaves a staging folder that --resume finishes without computing anything again.
    with interrupt_as_flag(raise_at_end=False):
        old = output.with_name(output.name + ".replaced")
        _remove(old)  # what a run killed during its swap left
        if output.exists():  # --overwrite (or --resume over an existing OUT): swap, then remove the old one
            _rename(output, old)
            _rename(staging, output)
            _remove(old)
        else:
            _rename(staging, output)
        shutil.rmtree(output / RECORDS)
        committed(output)
    return PyramidReport(output, plan, runner.name, time.perf_counter() - started, skipped, notes)


def _plan(reader: SlabReader, chunk3, shard, levels) -> list[LevelPlan]:
    geometry = reader.geometry
    steps = plan_levels(geometry.dimensions, geometry.spacing, chunk3, levels)
    plan, factors = [], (1.0, 1.0, 1.0)
    for number, step in enumerate([None] + steps):
        if step is not None:
            geometry = geometry.downsampled(step)
            factors = tuple(f * s for f, s in zip(factors, step))
        chunks = tuple(min(c, n) for c, n in zip(chunk3, geometry.shape))
        task = chunks if shard is None else tuple(min(c * shard, -(-n // c) * c) for c, n in zip(chunks,
                                                                                               geometry.shape))
        plan.append(LevelPlan(number, geometry, factors, step, chunks, task))
    return plan


def _fingerprint(input, reader, plan, method, version, unit, zstd_level, chunk3, shard, series=None) -> dict:
    source = [str(Path(p).resolve()) for p in input] if isinstance(input, (list, tuple)) else \
        str(Path(str(input)).resolve())
    return json.loads(json.dumps({
        "input": source, "series": series, "input_files": _input_stamps(input), "dtype": str(reader.dtype),
        "method": method, "version": version, "unit": unit,
        "zstd": zstd_level, "chunks": chunk3, "shard": shard,
        "levels": [[list(level.shape), list(level.geometry.spacing), list(level.geometry.origin)] for level in plan]}))


# Files the desktop writes into a folder a user looks at (macOS Finder, Windows Explorer); "._NAME": macOS metadata
FOLDER_VIEW_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def _input_stamps(input) -> list[list]:
    """[path, size, modification time (ns)] of every file of the input: a resumed run must read the same input as
    the run it continues (the same geometry with other voxels would be mixed in silently). A stack folder's files
    and a glob's matches are each stamped; a Zarr store by its metadata files and every folder (its chunks are
    too many to stat, and a rewritten chunk is renamed into its folder). One slice or one DICOM file standing for
    its stack or series stamps its whole folder."""
    paths: list[Path] = []
    for item in input if isinstance(input, (list, tuple)) else [input]:
        text = str(item)
        path = Path(text)
        if not path.exists():  # a glob or printf pattern: the slices it names (glob matched no printf pattern)
            try:
                paths += find_slices(text).files
            except BigVolumeError:
                pass  # opening the input says what is wrong
            continue
        if path.is_file() and (_is_stack_source(path) or dicom.accepts(path, None)):
            # one slice standing for its numbered siblings, one file for its DICOM series: the folder is read
            paths += sorted(p for p in path.parent.iterdir() if p.is_file() and p != path)
        for part in input_files(path):
            if not part.is_dir() or is_zarr_store(part):  # (a stack's folder: its files say it all; a file browser
                paths.append(part)                         # writing its own file there changes the folder's time)
            if part.is_dir():
                paths += sorted(p for p in part.iterdir() if p.is_file())
            if is_zarr_store(part):  # every folder: zarr writes a chunk beside it and renames it, which stamps them
                paths += sorted(Path(folder) / name for folder, names, _ in os.walk(part) for name in names)
    stamps = []
    for path in paths:
        if path.name in FOLDER_VIEW_FILES or path.name.startswith("._"):
            continue  # written by a file browser that looked at the folder, not part of the input
        stat = path.stat()
        stamps.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return stamps


def _build(reader, plan, staging: Path, fingerprint, resuming, runner, method, version, unit, zstd_level,
           threads, limit, progress, name, to_unit: float = 1.0) -> tuple[int, list[str]]:
    """Write every level into ``staging``; returns the number of finished tasks skipped (resumed) and notes on how
    the levels were computed."""
    one_blas_thread()
    fix_mmap_threshold()
    root = create_root(staging, version)
    records = Records(staging)
    dtype = reader.dtype
    run = uuid.uuid4().hex
    if resuming:
        records.load(len(plan))
        arrays = [open_level(str(staging), level.path, run) for level in plan]
    else:
        arrays = [create_level(root, level.path, level.shape, dtype, level.chunks, version=version,
                               shards=level.task_shape if level.task_shape != level.chunks else None,
                               zstd_level=zstd_level) for level in plan]
        # The plan goes in last: a staging folder without it is not resumable (its arrays may be missing).
        (records.folder / "plan.json").write_text(json.dumps(fingerprint))
        records.load(len(plan))
    if resuming:
        _prepare_resume(plan, arrays, records)
        _remove_zarr_temporaries(staging)
    # The levels' metadata from the start (not yet all_chunks_written): the staging store reads as a pyramid, so a
    # damaged chunk is named by the readers' diagnosis.
    levels = [PyramidLevel(level.path, scaled_geometry(level.geometry, to_unit), level.factors, level.source)
              for level in plan]
    attributes = multiscales_attributes(levels, version=version, unit=unit or None, name=name, method=method)
    attributes["bigvolume"]["chunks"] = list(plan[0].chunks)
    write_attributes(root, attributes)
    skipped = sum(len(done) for done in records.done.values())
    notes: list[str] = []
    # Work units: voxels read (level 0's pass reads the input; a level's tasks read the level before).
    units = [plan[0].geometry.voxel_count] + [plan[k - 1].geometry.voxel_count for k in range(1, len(plan))]
    total = float(sum(units))
    state = {"done": 0.0}

    def advance(amount: float, message: str) -> None:
        state["done"] += amount
        progress(state["done"] / total, message)

    rows = [(z0, z1) for (z0, z1), _, _ in output_blocks(plan[0].shape, (plan[0].task_shape[0],) + plan[0].shape[1:])]
    level1_blocks = plan[1].blocks() if len(plan) > 1 else []
    share1 = units[1] / max(1, len(level1_blocks)) if len(plan) > 1 else 0.0

    def record(level: int, number: int, stamps: Sequence[str]) -> None:
        records.add(level, number, stamps)
        if level == 1:
            advance(share1, f"level 1: block {len(records.done[1])}/{len(level1_blocks)}")

    input_nan = 0
    try:
        rows_todo = [n for n in range(len(rows)) if n not in records.done[0]]
        fused = not runner.distributed and len(plan) > 1
        level1_todo = [n for n in range(len(level1_blocks)) if n not in records.done.get(1, set())]
        tasks = []
        if fused:
            kernels1 = ResampleKernels.for_factors(method, plan[0].shape, dtype, plan[1].step)
            for n in level1_todo:
                region = kernels1.block(level1_blocks[n])[1]
                tasks.append((n, level1_blocks[n], region, kernels1, arrays[1]))
            tasks.sort(key=lambda t: t[2][0].stop)
        # The memory plan, before any voxel is read: level 0's pass (whole rows, level 1 fused in, or rows in
        # pieces), and how many tasks of each level run at once; what cannot fit is said now, once.
        level0 = _plan_level0(reader, plan, rows, rows_todo, tasks, threads, limit)
        at_once, clauses, needed = _tasks_at_once(plan, dtype, method, threads, limit)
        fused = level0.fused
        if not fused:
            tasks = []
        if len(plan) > 1:
            notes.append("level 1 computed from the input rows in memory during level 0's pass" if fused else
                         "level 1 computed from level 0 read back")
        if runner.distributed:  # (the workers' tasks: checked before the cluster started)
            clauses, needed = [], 0
        if level0.needed > limit and rows_todo:
            clauses.insert(0, _level0_note(reader, plan[0], level0))
            needed = max(needed, level0.needed)
        if clauses:
            note = _memory_note(clauses, needed, limit)
            logger.warning(note)  # now, before the work (the command line prints it on stderr)
            notes.append(note)
        done_before = sum(rows[r][1] - rows[r][0] for r in range(len(rows)) if r not in rows_todo)
        advance(done_before * reader.slice_bytes / dtype.itemsize, "level 0 (resumed)" if done_before else "level 0")
        if (rows_todo or tasks) and level0.whole:
            start = min([rows[r][0] for r in rows_todo] + [t[2][0].start for t in tasks])
            part = _PieceReader(reader, start, reader.slices)
            stage = Level0Stage(arrays[0], rows, rows_todo, tasks, start, level0.capacity, dtype, record,
                                plan[0].task_shape[1], part.box)
            voxels_per_slice = reader.slice_bytes // dtype.itemsize
            streamed = {"slices": 0.0}

            def slab_progress(fraction, message):
                slices = fraction * part.slices  # the loop reports the share of the slices streamed
                advance((slices - streamed["slices"]) * voxels_per_slice, f"level 0: {message}")
                streamed["slices"] = slices

            run_slabs(part, stage, None, level0.slab, threads=threads, progress=slab_progress)
            input_nan = stage.nan
            del stage  # its window of rows: freed before the next levels' tasks need memory
        elif rows_todo:
            input_nan = _level0_in_pieces(reader, arrays[0], plan[0], rows, rows_todo, level0, threads, record,
                                          advance)
        cache_bytes = _cache_bytes(limit, WORKER_MEMORY if runner.distributed else current_rss())
        for number in range(1, len(plan)):
            level, previous = plan[number], plan[number - 1]
            blocks = level.blocks()
            todo = [n for n in range(len(blocks)) if n not in records.done.get(number, set())]
            share = units[number] / max(1, len(blocks))
            specs = [BlockTask(str(staging), run, previous.path, level.path, method, previous.shape, str(dtype),
                               level.step, blocks[n], cache_bytes) for n in todo]

            def finished(n, stamps, number=number, todo=todo, share=share, count=len(blocks)):
                records.add(number, todo[n], stamps)
                advance(share, f"level {number}: block {len(records.done[number])}/{count}")

            runner.map(compute_block, specs, finished, at_once=at_once[number])
        runner.run_everywhere(clear_chunk_cache)
        if dtype.kind == "f":
            for note in _nan_notes(arrays, plan, method, input_nan):
                logger.warning(note)  # (the command line prints it on stderr; the others stay in the report)
                notes.append(note)
        attributes["bigvolume"]["all_chunks_written"] = True
        write_attributes(root, attributes)
    finally:
        records.close()
        clear_chunk_cache()  # this process's (the local scheduler's threads); workers' were freed above
    return skipped, notes


NAN_COUNT_BYTES = 64 * 2**20  # the coarse levels read back to count their NaN voxels, at most this much in all


def _nan_notes(arrays, plan, method: str, input_nan: int) -> list[str]:
    """A float pyramid's NaN: each NaN voxel of a level makes NaN every voxel of the next whose kernel reaches it,
    level after level (one NaN in 48^3 left level 2 all NaN, exit 0). The coarse levels that fit NAN_COUNT_BYTES
    are read back and counted; the finest of them holding NaN is said, or the input's NaN (of the slices read in
    this run) when no level was small enough to count."""
    budget, counted = NAN_COUNT_BYTES, []
    for number in range(len(plan) - 1, 0, -1):
        nbytes = plan[number].geometry.voxel_count * arrays[number].dtype.itemsize
        if nbytes > budget:
            break
        budget -= nbytes
        nan = int(np.count_nonzero(np.isnan(arrays[number][...])))
        counted.append((number, nan, plan[number].geometry.voxel_count))
    with_nan = sorted((entry for entry in counted if entry[1]), key=lambda entry: entry[0])
    if with_nan:
        number, nan, voxels = with_nan[0]
        coarser = ", ".join(f"level {n} {100 * c / v:.3g} %" for n, c, v in with_nan[1:])
        return [f"level {number}: {nan_note(nan, voxels, method)}" + (f" (coarser: {coarser})" if coarser else "")]
    if input_nan and not counted:
        return [f"{input_nan} input voxels are NaN: the levels' voxels whose {method} kernel reaches one are NaN too, "
                "and their NaN spread on in the next level (the levels are too large to count them); replace the "
                "input's NaN first (for example with the background value)"]
    return []


def stored_files(array, block) -> list[Path]:
    """The stored objects (chunk files, or shard files when the array has shards) of the task writing ``block``
    (((z0, z1), (y0, y1), (x0, x1)); tasks write whole ones), in the array's folder of its local store."""
    folder = Path(array.store_path.store.root) / array.store_path.path
    shape = array.shards or array.chunks
    ranges = [range(a // t, -(-b // t)) for (a, b), t in zip(block, shape)]
    return [folder / array.metadata.encode_chunk_key(coords) for coords in itertools.product(*ranges)]


def stored_stamps(paths) -> list[str]:
    """Size and modification time (ns) of each stored object, "missing" for one not there, as its task finished:
    a resumed run redoes a task whose files differ (cut short, rewritten, removed). Only one task writes an object,
    so they change no more; a stat each, the data not read again (a CRC-32 of every file cost 0.35 s on a 224 MiB
    level, a quarter of the whole 512^3 pyramid)."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            stamps.append("missing")
            continue
        stamps.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return stamps


def _prepare_resume(plan, arrays, records: Records) -> None:
    """A task recorded finished whose chunk (or shard) files are not as it left them is done again: the staging
    folder was damaged after it ran (a file deleted, cut short, its bytes changed: 0.4 chunks carry no checksum, and
    0.5 ones would fail only when read, after the pyramid was published). One stat per file; the data is not read.
    The files of tasks to do are removed first: an edge shard is written partially, so zarr would read what is
    there."""
    for level, array in zip(plan, arrays):
        stamps = records.stamps.setdefault(level.number, {})
        if level.number == 0:
            rows = [(z0, z1) for (z0, z1), _, _ in output_blocks(level.shape, (level.task_shape[0],) + level.shape[1:])]
            blocks = [((z0, z1), (0, level.shape[1]), (0, level.shape[2])) for z0, z1 in rows]
        else:
            blocks = [tuple(block) for block in level.blocks()]
        for n in [n for n, recorded in stamps.items() if n >= len(blocks) or "missing" in recorded
                  or stored_stamps(stored_files(array, blocks[n])) != recorded]:
            del stamps[n]
        for n in set(range(len(blocks))) - stamps.keys():
            for path in stored_files(array, blocks[n]):
                path.unlink(missing_ok=True)


def clear_chunk_cache() -> None:
    """Free this process's decoded chunks (after a run; on a cluster, on every worker)."""
    for cache in _CACHE:
        cache.clear()


@dataclass
class Level0Plan:
    """How level 0's pass holds its rows within the memory limit: each row read in pieces of ``band`` (y, x)
    voxels (the whole slice: rows read once, and level 1 computed from them when ``fused``), ``slab`` slices at a
    time, into a window of ``capacity`` slices; ``needed``: the bytes planned, what the process holds included."""

    band: tuple[int, int]
    slab: int
    capacity: int
    fused: bool
    needed: int
    whole: bool

    def pieces(self, shape) -> list:
        """The pieces ((y0, y1), (x0, x1)) of a row of level 0 (``shape``: z y x)."""
        (by, bx), (ny, nx) = self.band, shape[1:]
        return [((y, min(y + by, ny)), (x, min(x + bx, nx))) for y in range(0, ny, by) for x in range(0, nx, bx)]


def _task_write_bytes(level: LevelPlan, itemsize: int) -> int:
    """What zarr holds while it writes one task (a chunk, or a shard) of ``level``."""
    copies = CHUNK_WRITE_COPIES if level.task_shape == level.chunks else SHARD_WRITE_COPIES
    return math.prod(level.task_shape) * itemsize * copies


def _reads_in_pieces(reader: SlabReader) -> bool:
    """Whether a row can be read again piece by piece at the cost of the piece: not a compressed stream (read
    front to back: going back starts it again)."""
    return reader.streams and not isinstance(reader, DecodedSlabReader)


def _plan_level0(reader, plan, rows, rows_todo, tasks, threads, limit) -> Level0Plan:
    """The first of these whose working set stays under ``limit`` (slabs planned by the engine's planner beside
    the window and zarr's writes): whole rows with level 1 computed from them (``tasks``); whole rows; rows in
    bands of chunk (or shard) rows along y, fewer each time; one strip of them in bands along x (down to one
    chunk or shard column: the least there is). Else the last, the smallest: the caller says so (_level0_note)."""
    level, itemsize = plan[0], reader.dtype.itemsize
    tz, ty, tx = level.task_shape
    ny, nx = level.shape[1:]
    start = min([rows[r][0] for r in rows_todo] + [t[2][0].start for t in tasks], default=0)
    # a fused block holds its region (a view of the window), and its float copy BLOCK_SLAB_SLICES slices at a
    # time (resample_block): its region twice, as before
    block_bytes = max((math.prod(s.stop - s.start for s in t[2]) for t in tasks), default=0) * itemsize * 2

    def evaluate(by: int, bx: int, fused: bool) -> Level0Plan:
        whole = (by, bx) == (ny, nx)
        piece = by * bx * itemsize  # one slice of a piece
        # whole slices a piece is copied from (_PieceReader): for readers that neither hand out views nor read boxes
        copied_from = 0 if whole or reader.hands_out_views or isinstance(reader, ZarrSlabReader) \
            else reader.slice_bytes
        write = _task_write_bytes(level, itemsize) * min(threads, -(-bx // tx))  # a strip, threads tasks at once
        fused_bytes = threads * block_bytes if fused else 0
        # a Zarr input's piece: its chunk row, decoded once and served slab by slab (_PieceReader)
        chunk_row = 0 if whole or not isinstance(reader, ZarrSlabReader) else int(reader.slab_alignment) * piece
        stream = plan_slabs(tz, max(piece, copied_from), (READ_AHEAD + 1) * piece + copied_from,
                            tz * piece + write + fused_bytes + chunk_row, limit, max_slab_bytes=SLAB_BYTES,
                            min_slabs=1)
        slab = stream.slab_slices
        while tz % slab:  # a divisor of the row: rows end at slab ends, so they are written as soon as read
            slab -= 1
        capacity = tz
        if whole:
            slabs = [(k0, min(k0 + slab, reader.slices)) for k0 in range(start, reader.slices, slab)]
            regions = [(t[2][0].start, t[2][0].stop) for t in tasks] if fused else []
            capacity = _window_capacity(slabs, rows, rows_todo, regions, start)
        needed = (current_rss() + FIXED_OVERHEAD + (capacity + (READ_AHEAD + 1) * slab) * piece
                  + slab * copied_from + write + fused_bytes + chunk_row)
        return Level0Plan((by, bx), slab, capacity, fused, needed, whole)

    candidates = [(ny, nx, True)] if tasks else []
    candidates.append((ny, nx, False))
    if _reads_in_pieces(reader):
        candidates += [(m * ty, nx, False) for m in range(-(-ny // ty) - 1, 0, -1)]
        candidates += [(min(ty, ny), m * tx, False) for m in range(-(-nx // tx) - 1, 0, -1)]
    for by, bx, fused in candidates:
        planned = evaluate(by, bx, fused)
        if planned.needed <= limit:
            break
    return planned


def _level0_note(reader, level: LevelPlan, planned: Level0Plan) -> str:
    """Why level 0's pass cannot keep the memory limit (a clause of the note _memory_note makes)."""
    tz, ty, tx = level.task_shape
    what = "chunk" if level.task_shape == level.chunks else "shard"
    row = f"rows of {what}s {tz} slices deep ({format_bytes(tz * reader.slice_bytes)} of {reader.path.name})"
    if planned.whole and not _reads_in_pieces(reader):
        held = "a compressed file is read front to back, so each row is held whole"
    elif planned.whole:
        held = "each row is held whole"
    else:
        (y0, y1), (x0, x1) = planned.pieces(level.shape)[0]
        held = (f"the least it can hold is one {what} column of {tz}x{y1 - y0}x{x1 - x0} voxels (z y x), "
                f"{format_bytes(tz * (y1 - y0) * (x1 - x0) * reader.dtype.itemsize)}, and its encoding")
    return f"level 0 is written in {row}; {held}: about {format_bytes(planned.needed)}"


def _memory_note(clauses: Sequence[str], needed: int, limit: int) -> str:
    """The one note, said before the work, on what does not fit the memory limit, and what would."""
    return (f"memory limit {format_bytes(limit)} is too small: {'; '.join(clauses)} (with the "
            f"{format_bytes(current_rss())} this program holds); give a memory limit of at least "
            f"{format_bytes(needed)}, or a smaller --chunks or --shard")


def _task_bytes(plan, number: int, dtype, method: str) -> tuple[int, int]:
    """The bytes one task of level ``number`` holds, and its input region's bytes. Measured (a 128^3 uint16 block
    at x2, region 268^3): its region, and beside it first the chunks of level ``number - 1`` being decoded
    (DECODERS at a time, each about three times a chunk's bytes in zarr), then the filter's float copies (about the
    region again); then its block and zarr's writing of it. Taken on an inner block (the halo on both sides)."""
    level, previous, itemsize = plan[number], plan[number - 1], np.dtype(dtype).itemsize
    kernels = level_kernels(method, previous.shape, str(np.dtype(dtype)), level.step)
    block = tuple((t, min(2 * t, n)) if n > t else (0, n) for t, n in zip(level.task_shape, level.shape))
    region = math.prod(r.stop - r.start for r in kernels.block(block)[1]) * itemsize
    decoding = DECODERS * 3 * math.prod(previous.chunks) * itemsize
    return (region + max(region, decoding) + math.prod(level.task_shape) * itemsize
            + _task_write_bytes(level, itemsize)), region


# What a dask worker holds of its own once it has run a task (its modules: 72 MiB measured with dask 2026.8, zarr
# 3.1); the main process is no measure of it (in Slicer it holds the application)
WORKER_MEMORY = 100 * 2**20


def _cache_bytes(limit: int, held: int) -> int:
    """Decoded chunks kept per process (ChunkCache): an eighth of the limit, 32 to 256 MiB, but at most a quarter
    of what the limit leaves beside the ``held`` bytes of the process (it spares decoding; tasks need the room)."""
    room = limit - held - FIXED_OVERHEAD
    return int(max(0, min(256 * 2**20, max(32 * 2**20, limit // 8), room // 4)))


def _tasks_at_once(plan, dtype, method: str, threads: int, limit: int) -> tuple[list[int], list[str], int]:
    """How many tasks of each level (index: level number; level 0: 0) the local scheduler runs at once to stay
    under ``limit`` (at least one); clauses naming the levels one task of which does not fit, and the bytes the
    largest needs."""
    held = current_rss() + FIXED_OVERHEAD + _cache_bytes(limit, current_rss())
    counts, over, needed = [0], [], 0
    for number in range(1, len(plan)):
        task, region = _task_bytes(plan, number, dtype, method)
        counts.append(max(1, min(threads, (limit - held) // max(1, task))))
        if held + task > limit:
            over.append(f"one task of level {number}, a {_task_name(plan[number])}, reads "
                        f"{format_bytes(region)} of level {number - 1}: about {format_bytes(held + task)}")
            needed = max(needed, held + task)
    return counts, over, needed


def _task_name(level: LevelPlan) -> str:
    shape = "x".join(map(str, level.task_shape))
    return f"chunk of {shape} voxels (z y x)" if level.task_shape == level.chunks else \
        f"shard of {shape} voxels (z y x)"


def _refuse_tasks_over_worker_limit(plan, dtype, method: str, limit: int) -> None:
    """Refuse, before the cluster starts, a per-worker limit that cannot hold one task of some level: dask's
    nanny would kill each worker that tries it, task after task. A worker holds its own (WORKER_MEMORY), the
    decoded-chunk cache, and the task; the nanny ends it at dask's ``terminate`` share of its limit."""
    import dask
    share = dask.config.get("distributed.worker.memory.terminate", 0.95) or 1.0

    def own(worker_limit: int) -> int:
        return WORKER_MEMORY + FIXED_OVERHEAD + _cache_bytes(worker_limit, WORKER_MEMORY)

    for number in range(1, len(plan)):
        task, region = _task_bytes(plan, number, dtype, method)
        if own(limit) + task > share * limit:
            # the least limit that holds it: the chunk cache grows with the limit (an eighth of it), so the need
            # at this limit was no answer (276 MiB asked for, then 281 MiB at 277 MiB)
            least = limit
            while own(least) + task > share * least:
                least = max(least + 1, int(-(-(own(least) + task) // share)))  # (from below: own grows slower)
            least = -(-least // 2**20) * 2**20
            raise BigVolumeError(
                f"--memory-limit {format_bytes(limit)} per worker cannot hold one task of level {number}: a "
                f"{_task_name(plan[number])} reads {format_bytes(region)} of level {number - 1}, about "
                f"{format_bytes(own(limit) + task)} with a worker's own memory (dask stops a worker at "
                f"{100 * share:.0f} % of its limit); give a memory limit of at least {format_bytes(least)}, or a "
                "smaller --shard or --chunks")
