"""OME-Zarr pyramids (0.5 on Zarr v3, 0.4 on Zarr v2) and plain Zarr arrays as input: any level read whole, a slab
of z slices at a time (so every command streams from it), or a box of it.

What a path may name:
- a store's root with NGFF ``multiscales``: a pyramid, level 0 unless a level is asked for;
- one level's array inside such a store (``x.ome.zarr/2``): that level, with the geometry of the root's metadata
  (so commands that take a path read any level without a level argument);
- a plain Zarr array with no multiscales: one level on a unit grid at the origin (:attr:`Pyramid.note` says so);
- the root of a bioformats2raw store (``bioformats2raw.layout``: one image per numbered group): its image 0, with a
  note naming the others when there are several (``x.ome.zarr/1`` reads image 1).

Axes: the three space axes give the grid (:mod:`bigvolume.io.ome_zarr`), a channel axis becomes the components
(last axis of our arrays), any other axis (time) must have one element.

Chunks: a chunk that cannot be decoded stops the read with one line naming the chunk's key and the store. A missing
chunk reads as the fill value (the Zarr rule: writers may skip chunks that hold only it), except when the root's
``bigvolume`` record says ``"all_chunks_written": true`` (our pyramid writer does): then it is refused; so is a level
whose files are none of them named by its chunk key encoding (every voxel would be the fill value). A shard index
without a checksum is checked against its file's size (zarr reads entries beyond the end as absent chunks).

zarr is imported on first use (:func:`bigvolume.io.ome_zarr.import_zarr`), never by ``import bigvolume``.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import BigVolumeError
from ..core.geometry import Geometry
from ..core.memory import format_bytes, give_back_freed_memory
from ..core.volume import Volume
from .ome_zarr import (AXIS_NAMES, SPACE_UNITS, OmeZarrError, check_space_axis_order, import_zarr, is_zarr_store,
                       level_geometry, other_image_paths, parse_multiscales, scaled_geometry, with_legacy_scales)
from .slab_readers import SlabReader

KNOWN_VERSIONS = ("0.1", "0.2", "0.3", "0.4", "0.5")
METADATA_FILES = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")
BLOSC_HEADER = 16  # bytes of a Blosc frame's header; bytes 12-16: the frame's size (little-endian)
SHARD_INDEX_ENTRY = 16  # bytes per inner chunk in a shard index: offset and size, uint64 each
EMPTY_INNER_CHUNK = 2 ** 64 - 1  # a shard index's offset and size of an inner chunk not written
PREVIEW_MIN_VOXELS = 256  # preview_level: the coarsest level still this many voxels along each axis
# Slab reads decode chunks a group at a time (zarr decodes a group's chunks concurrently): this many decoded bytes a
# group, at least one chunk. A slab reader decodes whole rows of chunks (one chunk's z range, all of y and x).
DECODE_BYTES = 8 * 2**20
# Decoded slices a reader keeps for the next reads of a chunk row (see ZarrSlabReader._read_into) until a plan gives
# it room (bigvolume.engine.plan.plan_slabs): reads the planner does not size, such as a statistics subsample.
UNPLANNED_KEEP_BYTES = 32 * 2**20
# How far above a level's array to look for the pyramid's root (levels are usually one folder down, "0" or "s0";
# some writers nest them, "scale/0").
_ROOT_SEARCH_DEPTH = 3


class _QuietAbandonedReads(logging.Filter):
    """When one chunk of a read fails, zarr (3.1) leaves the read's other chunk tasks pending on its event loop;
    asyncio reports each at exit ("Task was destroyed but it is pending!"). The failure itself has been reported
    to the user as one line: these reports are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Task was destroyed but it is pending")


_quieted = False


def _zarr():
    global _quieted
    zarr = import_zarr()
    if not _quieted:
        logging.getLogger("asyncio").addFilter(_QuietAbandonedReads())
        warnings.filterwarnings("ignore", message="coroutine '.*concurrent_map.*' was never awaited")
        _quieted = True
    return zarr


def accepts(path, series: str | None = None) -> bool:
    """True for a local Zarr store (group or array), and for a folder named ``*.zarr`` (refused by
    :func:`open_pyramid` in words about Zarr, not as "a folder"). A DICOM series UID given with a store is refused
    (it was ignored: ``read_volume(store, 2)`` read level 0)."""
    path = Path(path)
    if not (is_zarr_store(path) or (path.name.lower().endswith(".zarr") and path.is_dir())):
        return False
    if series is not None:
        raise OmeZarrError(f"{path}: not a DICOM series; a series UID (--series) applies only to DICOM (a "
                           "pyramid's level is level=K, --level K)")
    return True


def store_of(path) -> Path | None:
    """The Zarr store ``path`` reads from (the store itself, or the pyramid a level's folder belongs to); None for
    anything else, or a store that cannot be opened (reading it says why)."""
    if not accepts(path):
        return None
    try:
        return Path(open_pyramid(path).store)
    except BigVolumeError:
        return None


@dataclass(frozen=True)
class ZarrLevel:
    """One level: its array's path inside the store ("" when the store is the array), its LPS grid, pixel type,
    components, the z y x size of one stored object (a shard when the array is sharded, else a chunk) and of one
    chunk (what is decoded at once: the inner chunk of a shard)."""

    index: int
    path: str
    geometry: Geometry
    dtype: np.dtype
    components: int
    stored_block: tuple[int, int, int]
    chunk: tuple[int, int, int]

    @property
    def nbytes(self) -> int:
        return self.geometry.voxel_count * self.components * self.dtype.itemsize


@dataclass(frozen=True)
class Pyramid:
    """An opened store: its levels (finest first), where the space and channel axes are among the array's axes,
    and whether its writer promised every chunk. ``start`` is the level the path named (its own array's folder),
    else 0."""

    store: Path
    levels: tuple[ZarrLevel, ...]
    axes: tuple[str, ...]
    spatial: tuple[int, int, int]
    channel: int | None
    unit: str
    all_chunks_written: bool
    version: str
    start: int = 0
    note: str = ""

    @property
    def geometries(self) -> tuple[Geometry, ...]:
        return tuple(level.geometry for level in self.levels)

    def level(self, index: int | None = None) -> ZarrLevel:
        """Level ``index`` (None: the level the path named); refuses one out of range in one line."""
        index = self.start if index is None else index
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise OmeZarrError(f"{self.store}: a level is a whole number (0 to {len(self.levels) - 1}), got {index!r}")
        if not 0 <= index < len(self.levels):
            raise OmeZarrError(f"{self.store}: level {index} does not exist; this pyramid has levels 0 to "
                               f"{len(self.levels) - 1}")
        return self.levels[int(index)]

    def folder(self, index: int | None = None) -> Path:
        """The folder of a level's array."""
        path = self.level(index).path
        return self.store / path if path else self.store


def _open_node(path: Path):
    zarr = _zarr()
    try:
        # each array's own metadata: consolidated metadata left stale by a later write gave one array's type and
        # shape and another's voxels
        return zarr.open(store=str(path), mode="r", use_consolidated=False)
    except Exception as error:  # zarr raises many kinds (JSON, metadata validation, missing nodes)
        raise OmeZarrError(f"{path}: not a readable Zarr store ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


def _stored_block(array) -> tuple[int, ...]:
    return tuple(int(n) for n in (array.shards or array.chunks))


def _axes_of(array, store: Path) -> tuple[tuple[str, ...], tuple[int, int, int], int | None]:
    """Axes of a plain array: its dimension names when it has them, else z y x (3D only)."""
    names = getattr(array.metadata, "dimension_names", None)
    if names and all(names):
        names = tuple(str(n) for n in names)
        lowered = tuple(n.lower() for n in names)  # X, Y, Z are x, y, z
        if all(axis in lowered for axis in AXIS_NAMES):
            check_space_axis_order([name for name in names if name.lower() in AXIS_NAMES], store)
            spatial = tuple(lowered.index(axis) for axis in AXIS_NAMES)
            channel = lowered.index("c") if "c" in lowered else None
            return names, spatial, channel  # type: ignore[return-value]
    if array.ndim == 3:
        return AXIS_NAMES, (0, 1, 2), None
    raise OmeZarrError(f"{store}: a {array.ndim}D Zarr array without multiscales metadata or dimension names z, y, "
                       "x; this tool reads 3D volumes")


def _check_axes(array, axes, spatial, channel, store: Path, path: str) -> int:
    """The component count; refuses axes other than space and channel with more than one element."""
    if array.ndim != len(axes):
        raise OmeZarrError(f"{store}: level {path or '(the array)'} has {array.ndim} dimensions, the metadata names "
                           f"{len(axes)} axes")
    for n, size in enumerate(array.shape):
        if n not in spatial and n != channel and size != 1:
            raise OmeZarrError(f"{store}: axis {axes[n]!r} has {size} elements; this tool reads one 3D volume (with "
                               "channels), not a series")
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        raise OmeZarrError(f"{store}: level {path or '(the array)'} holds {dtype} values; this tool reads numbers")
    return 1 if channel is None else int(array.shape[channel])


def voxel_dtype(stored) -> np.dtype:
    """The type a level's voxels are read as: this machine's byte order (Zarr v2 may store big-endian; NRRD and
    NIfTI writers take the array's bytes as they are), and a boolean mask as uint8 0/1 (no volume format has
    booleans)."""
    stored = np.dtype(stored)
    return np.dtype(np.uint8) if stored.kind == "b" else stored.newbyteorder("=")


def _level(index, path, array, geometry, axes, spatial, channel, store) -> ZarrLevel:
    components = _check_axes(array, axes, spatial, channel, store, path)
    block, chunk = _stored_block(array), tuple(int(n) for n in array.chunks)
    if min(block + chunk, default=1) < 1:  # (a ZeroDivisionError when read)
        raise OmeZarrError(f"{store}: level {path or '(the array)'} has chunks of {chunk} elements: none can be empty")
    return ZarrLevel(index, path, geometry, voxel_dtype(array.dtype), components, tuple(block[n] for n in spatial),
                     tuple(chunk[n] for n in spatial))


def _all_chunks_written(attributes) -> bool:
    ours = attributes.get("bigvolume") if hasattr(attributes, "get") else None
    return isinstance(ours, dict) and ours.get("all_chunks_written") is True


def _from_group(store: Path, group, start_path: str | None = None) -> Pyramid:
    attributes = group.attrs.asdict()
    layout = parse_multiscales(attributes, store)
    channel = layout.channel
    arrays = []
    for path in layout.paths:
        try:
            array = group[path]
        except KeyError:
            raise OmeZarrError(f"{store}: level {path}'s array is missing (the metadata lists it)") from None
        except Exception as error:
            raise OmeZarrError(f"{store}: level {path}'s array cannot be opened ({_reason(error)})") from None
        if not hasattr(array, "shape"):
            raise OmeZarrError(f"{store}: level {path} is a group, not an array")
        if len(array.shape) != len(layout.axes):
            raise OmeZarrError(f"{store}: level {path} has {len(array.shape)} dimensions, the metadata names "
                               f"{len(layout.axes)} axes")
        names = getattr(array.metadata, "dimension_names", None)
        if names and all(names) and tuple(str(n).lower() for n in names) != tuple(a.lower() for a in layout.axes):
            raise OmeZarrError(f"{store}: level {path}'s dimension names {', '.join(map(str, names))} contradict the "
                               f"axes {', '.join(layout.axes)} (OME-Zarr 0.5: they must be the same)")
        arrays.append(array)
    note = ""
    if layout.version not in KNOWN_VERSIONS:  # (a newer version was read by 0.5's rules without a word)
        _say_once(f"{store}: OME-Zarr {layout.version} is not a version this tool knows ({', '.join(KNOWN_VERSIONS)});"
                  " read by the rules of 0.5")
    if layout.scales_from_shapes:
        layout = with_legacy_scales(layout, [[a.shape[n] for n in layout.spatial] for a in arrays])
        note = (f"{store}: OME-Zarr {layout.version} holds no pixel size (it came with 0.4): read on a grid of unit "
                "spacing at the origin, coarser levels scaled by their sizes")
        _say_once(note)
    levels = []
    for index, (path, array) in enumerate(zip(layout.paths, arrays)):
        shape = array.shape
        try:
            geometry = _in_millimetres(level_geometry(layout, index, [shape[n] for n in layout.spatial]), layout.unit)
        except ValueError as error:
            raise OmeZarrError(f"{store}: level {path}'s grid is not valid ({error})") from None
        levels.append(_level(index, path, array, geometry, layout.axes, layout.spatial, channel, store))
    start = layout.paths.index(start_path) if start_path is not None else 0
    return Pyramid(store, tuple(levels), layout.axes, layout.spatial, channel, layout.unit,
                   _all_chunks_written(attributes), layout.version, start, note=note)


def _in_millimetres(geometry: Geometry, unit: str) -> Geometry:
    """Our volumes (NRRD, NIfTI, Slicer) are in millimetres: a store in another named unit (a stack's micrometres)
    is converted, so a 10 micrometre voxel is 0.01 mm and never silently 10 mm. No unit: the numbers as written."""
    return scaled_geometry(geometry, SPACE_UNITS.get(unit, 1.0))


def _root_of(path: Path) -> tuple[Path, object, str] | None:
    """The pyramid a level's array belongs to: (root folder, root group, the level's path in it)."""
    zarr = _zarr()
    resolved = path.resolve()
    for depth in range(1, _ROOT_SEARCH_DEPTH + 1):
        root = resolved.parents[depth - 1] if depth <= len(resolved.parents) else None
        if root is None or not is_zarr_store(root):
            continue
        try:
            group = zarr.open_group(store=str(root), mode="r", use_consolidated=False)
            attributes = group.attrs.asdict()
            layout = parse_multiscales(attributes, root)
        except Exception:  # not a group, or a group without multiscales: keep looking up
            continue
        relative = resolved.relative_to(root).as_posix()
        if relative in layout.paths:
            # Name the root as the user wrote it, when they wrote it.
            written = path.parents[depth - 1] if depth <= len(path.parents) else root
            return written, group, relative
        if relative in other_image_paths(attributes, root):  # (it was read on a unit grid, "without metadata")
            raise OmeZarrError(f"{path}: a level of another image than the first in {root}'s multiscales list; "
                               "this tool reads the first")
    return None


def open_pyramid(path) -> Pyramid:
    """Open a store (see the module's text for what ``path`` may name): its levels and their geometries. Reads
    metadata only. Raises OmeZarrError (one line naming the store) for anything that cannot be read as a volume."""
    path = Path(path)
    if not path.exists():
        raise OmeZarrError(f"{path}: no such file or folder")
    if not is_zarr_store(path):
        raise OmeZarrError(f"{path}: not a Zarr store (no zarr.json, .zgroup or .zarray)")
    node = _open_node(path)
    if not hasattr(node, "shape"):  # a group: must be a pyramid, or a bioformats2raw root holding them
        series = _bioformats2raw_images(node)
        if series:
            image = open_pyramid(path / series[0])
            if len(series) > 1:
                note = (f"{path}: a bioformats2raw store of {len(series)} images; reading image {series[0]} "
                        f"({path / series[0]}); give {path / series[1]} (and so on) for another")
                _say_once(note)
                image = dataclasses.replace(image, note="\n".join(filter(None, (note, image.note))))
            return image
        return _from_group(path, node)
    found = _root_of(path)
    if found is not None:
        root, group, relative = found
        return _from_group(root, group, relative)
    axes, spatial, channel = _axes_of(node, path)
    geometry = Geometry(tuple(int(node.shape[n]) for n in spatial[::-1]))
    level = _level(0, "", node, geometry, axes, spatial, channel, path)
    note = f"{path}: a Zarr array without OME-Zarr metadata: read on a grid of unit spacing at the origin"
    _say_once(note)
    return Pyramid(path, (level,), axes, spatial, channel, "", _all_chunks_written(node.attrs.asdict()),
                   str(node.metadata.zarr_format), 0, note=note)


_SAID: set[str] = set()


def _bioformats2raw_images(group) -> list[str]:
    """The image groups ("0", "1", ...) of a bioformats2raw root (its layout attribute, in the attributes or in
    their ``ome`` dict for OME-Zarr 0.5), in number order; [] for any other group."""
    attributes = group.attrs.asdict()
    ome = attributes.get("ome") if isinstance(attributes.get("ome"), dict) else {}
    if "bioformats2raw.layout" not in attributes and "bioformats2raw.layout" not in ome:
        return []
    names = [name for name in group.group_keys() if name.isdigit()]
    return sorted(names, key=int)


def _say_once(note: str) -> None:
    """A guessed geometry is said (the command line prints the bigvolume logger's warnings on stderr), once per
    process however many times the store is opened."""
    if note not in _SAID:
        _SAID.add(note)
        logging.getLogger("bigvolume").warning(note)


SETTLE_SECONDS = 10.0  # longest wait for zarr's leftover tasks after a failed read


def settle_zarr_tasks() -> None:
    """After a failed read, the other chunk tasks of that read (a shard's inner chunks) still run on zarr's event
    loop; left there, they fail at exit once zarr's thread pool is shut down, and asyncio prints "Task exception was
    never retrieved" tracebacks beside the one line that names the bad chunk. Wait for them, taking their errors."""
    import asyncio
    from zarr.core.sync import sync

    async def settle():
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=SETTLE_SECONDS)
            for task in others:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: nothing printed for it later
    sync(settle())


class ChunkDepth(int):
    """A Zarr reader's ``slab_alignment``: the z size of its chunks, carrying the reader (``decoded_rows``), through
    which the engine's planner counts and bounds what the reader decodes and keeps between reads
    (:meth:`ZarrSlabReader.keep_decoded`). The planner's callers hand it ``reader.slab_alignment`` alone."""

    decoded_rows: "ZarrSlabReader | None"

    def __new__(cls, depth: int, reader: "ZarrSlabReader | None" = None):
        made = super().__new__(cls, depth)
        made.decoded_rows = reader
        return made


@dataclass
class _Kept:
    """Decoded slices ``first + step * n`` (n < len(array)) of one chunk row, kept for the reads that follow."""

    row: int
    first: int
    step: int
    array: np.ndarray

    @property
    def last(self) -> int:
        return self.first + self.step * (len(self.array) - 1)

    def holds(self, k: int) -> bool:
        return self.first <= k <= self.last and (k - self.first) % self.step == 0


class ZarrSlabReader(SlabReader):
    """z slabs (and boxes) of one level of a pyramid, as ``(k, j, i[, c])`` arrays.

    Slabs are read by rows of chunks (a chunk's z range, all of y and x), a few chunks at a time (DECODE_BYTES). A
    slab smaller than a chunk's z size would have each chunk decoded once per slab that touches it (and a sample of
    every 9th slice, 14 times a chunk of 128): the slices of the row the next reads will ask for (the rest of the
    row; every s-th one after reads of one slice s apart) are kept from the decode, up to ``keep_bytes``, and freed
    when the reads move past them. Whole rows read are decoded straight into the slab."""

    def __init__(self, pyramid: Pyramid, level: int | None = None):
        self.pyramid = pyramid
        self.level = pyramid.level(level)
        super().__init__(pyramid.folder(self.level.index), self.level.geometry, self.level.dtype,
                         self.level.components)
        self.slab_alignment = ChunkDepth(self.level.chunk[0], self)
        depth, rows, columns = self.level.chunk
        # (a channel split over chunks: all of them count as one, decoded together)
        self.chunk_bytes = depth * rows * columns * self.dtype.itemsize * self.components
        self._tiles = tuple(-(-n // c) for n, c in zip(self.geometry.shape[1:], (rows, columns)))
        self._group = max(1, DECODE_BYTES // self.chunk_bytes)  # chunks decoded at once
        # What one group holds while decoded: its chunks, and the part of them copied out
        self.decode_bytes = 2 * min(self._group, self._tiles[0] * self._tiles[1]) * self.chunk_bytes
        # The decoded row of chunks (all of y and x); what keeping it for the next reads may take, but one slice
        self.chunk_row_bytes = min(depth, self.slices) * self.slice_bytes
        self.keep_bytes = UNPLANNED_KEEP_BYTES
        self.chunks_decoded = 0  # chunks decoded by slab reads (each decode of a chunk counted)
        self._kept: _Kept | None = None
        self._last_single: int | None = None  # the slice of the last read of one slice
        self._lock = threading.Lock()  # (the engine reads ahead on its own thread)
        self._array = None
        self._checked_bands: set[int] = set()  # z bands of stored objects already checked for missing ones
        self._names_checked = False  # whether the level's files were matched against its chunk key encoding

    @property
    def array(self):
        if self._array is None:
            node = _open_node(self.path)
            if not hasattr(node, "shape"):
                raise OmeZarrError(f"{self.pyramid.store}: level {self.level.path} is not an array")
            self._array = node
            if not any(entry.name not in METADATA_FILES for entry in os.scandir(self.path)):
                _say_once(f"{self.pyramid.store}: level {self.level.path or '(the array)'} stores no chunk: every "
                          f"voxel reads as its fill value, {node.fill_value} (a copy of the metadata only?)")
        return self._array

    def drop_kept(self) -> None:
        """Frees the decoded slices kept, and what decoding left in the allocator (a plan measures what the process
        holds before a new pass)."""
        with self._lock:
            self._kept = None
        give_back_freed_memory()

    def keep_decoded(self, keep_bytes: int, slab_slices: int) -> str:
        """The planner's room for decoded slices kept between reads (slabs of ``slab_slices``); a note, naming the
        store, when that room cannot hold the rest of a chunk row: its chunks are then decoded several times a
        pass (memory stays bounded, time grows)."""
        self.keep_bytes = max(0, int(keep_bytes))
        depth = min(int(self.slab_alignment), self.slices)
        kept = self.keep_bytes // self.slice_bytes
        if slab_slices >= self.slices or slab_slices % depth == 0 or kept >= depth - 1:
            return ""
        kept -= kept % slab_slices if kept >= slab_slices else 0  # (whole slabs kept, see _decode_rows)
        times = -(-depth // (slab_slices + kept))
        chunk = "x".join(map(str, self.level.chunk))
        return (f"a row of the Zarr chunks of {self.pyramid.store} ({chunk} voxels, z y x) decodes to "
                f"{format_bytes(self.chunk_row_bytes)}, more than the memory limit leaves for it beside slabs of "
                f"{slab_slices} slice{'s' * (slab_slices != 1)}: each chunk is decoded about {times} times, a few at a "
                f"time (memory stays bounded, reading takes longer); chunks of fewer z slices, or a --memory-limit "
                f"about {format_bytes((depth - 1 - kept) * self.slice_bytes)} higher, read each once")

    def _read_into(self, k0: int, k1: int, out: np.ndarray) -> None:
        depth = int(self.slab_alignment)
        with self._lock:
            # reads of one slice s apart (a sample of every s-th slice) will likely go on so
            single = k1 - k0 == 1
            last, self._last_single = self._last_single, (k0 if single else None)
            step = k0 - last if single and last is not None and k0 > last else 1
            kept = self._kept
            if kept is not None and not k0 // depth <= kept.row < -(-k1 // depth):
                kept = self._kept = None  # reads moved past it (or back)
            missing = range(k0, k1)
            if kept is not None:
                missing = self._from_kept(kept, k0, k1, out)
                if k1 > kept.last:
                    self._kept = None
                del kept  # (freed before _decode_rows makes the next)
            if missing:
                self._decode_rows(missing.start, missing.stop, k0, out, step, k1 - k0)

    def _from_kept(self, kept: _Kept, k0: int, k1: int, out: np.ndarray) -> range:
        """Copies the slices of k0..k1-1 ``kept`` holds into ``out``; the range still to decode (empty if none)."""
        held = [k for k in range(max(k0, kept.first), min(k1, kept.last + 1)) if kept.holds(k)]
        if not held:
            return range(k0, k1)
        if kept.step == 1:
            out[held[0] - k0:held[-1] + 1 - k0] = kept.array[held[0] - kept.first:held[-1] + 1 - kept.first]
        else:
            for k in held:
                out[k - k0] = kept.array[(k - kept.first) // kept.step]
        need = [k for k in range(k0, k1) if not kept.holds(k)]
        return range(need[0], need[-1] + 1) if need else range(0)

    def _decode_rows(self, a: int, b: int, k0: int, out: np.ndarray, step: int, size: int) -> None:
        """Decodes slices a..b-1 into ``out`` (which starts at slice k0) a group of chunks at a time, keeping the
        slices of b's chunk row the next reads will likely ask for (see the class), as many as keep_bytes allows
        (short of the row's end: whole reads of ``size`` slices, as a read partly kept decodes the row again)."""
        depth = int(self.slab_alignment)
        row_end = min(((b - 1) // depth + 1) * depth, self.slices)
        wanted = range(b - 1 + step, row_end, step)
        room = self.keep_bytes // self.slice_bytes
        if len(wanted) > room:
            wanted = wanted[:room - room % size if room >= size else room]
        self._kept = None  # (freed before the new one is made)
        kept = _Kept((b - 1) // depth, wanted.start, step, self.new_buffer(len(wanted))) if wanted else None
        end = wanted[-1] + 1 if wanted else b
        ny, nx = self.geometry.shape[1:]
        _, rows, columns = self.level.chunk
        self._check_stored(((a, end), (0, ny), (0, nx)))
        # A group: chunks side by side in one row of chunks, or whole rows of them when a row is small
        tiles_y, tiles_x = self._tiles
        across = min(tiles_x, self._group)
        down = max(1, min(tiles_y, self._group // tiles_x)) if across == tiles_x else 1
        band = max(1, self._group // (tiles_y * tiles_x)) * depth if down == tiles_y else depth
        za = a
        while za < end:
            zb = min(end, (za // band + 1) * band)  # (bands end on a row of chunks)
            for y in range(0, tiles_y, down):
                for x in range(0, tiles_x, across):
                    rect = ((y * rows, min((y + down) * rows, ny)), (x * columns, min((x + across) * columns, nx)))
                    self._decode_group((za, zb), rect, a, b, k0, out, kept)
                    self.chunks_decoded += (-(-zb // depth) - za // depth) * min(down, tiles_y - y) * \
                        min(across, tiles_x - x)
            za = zb
        self._kept = kept

    def _decode_group(self, z, rect, a: int, b: int, k0: int, out: np.ndarray, kept: _Kept | None) -> None:
        """One group's slices z (a part of a..b-1 and of what ``kept`` holds) into ``out`` and ``kept``."""
        za, zb = z
        whole = rect == ((0, self.geometry.shape[1]), (0, self.geometry.shape[2]))
        if whole and zb <= b:  # whole slices of the slab: straight into it
            self._decode(((za, zb),) + rect, out[za - k0:zb - k0])
            return
        block = self._decode(((za, zb),) + rect)
        place = tuple(slice(p, q) for p, q in rect)
        if za < b:
            out[(slice(za - k0, min(zb, b) - k0),) + place] = block[:min(zb, b) - za]
        if kept is not None and zb > kept.first:
            kept.array[(slice(None),) + place] = block[kept.first - za::kept.step]

    def read_box(self, box, out: np.ndarray | None = None) -> np.ndarray:
        """The voxels of ``box`` (((k0, k1), (j0, j1), (i0, i1)), numpy order, ends excluded)."""
        box = tuple((int(a), int(b)) for a, b in box)
        for (a, b), n in zip(box, self.geometry.shape):
            if not 0 <= a < b <= n:
                raise ValueError(f"box {box} outside the level's shape {self.geometry.shape}")
        self._check_stored(box)
        return self._decode(box, out)

    def _decode(self, box, out: np.ndarray | None = None) -> np.ndarray:
        """The voxels of a checked ``box`` (see read_box), each chunk it touches decoded whole."""
        shape = tuple(b - a for a, b in box) + ((self.components,) if self.components > 1 else ())
        if out is None:
            out = np.empty(shape, self.dtype)
        selection = self._selection(box)
        try:
            if self.components == 1 and out.flags.c_contiguous and np.dtype(self.array.dtype) == self.dtype:
                self.array.get_basic_selection(selection, out=self._nd_buffer(out))
            else:
                data = self.array.get_basic_selection(selection)
                if self.pyramid.channel is not None and self.components > 1:
                    kept = [n for n, s in enumerate(selection) if isinstance(s, slice)]
                    data = np.moveaxis(data, kept.index(self.pyramid.channel), -1)
                out[...] = data
        except BigVolumeError:
            raise
        except Exception as error:
            failure = self.diagnose(box, error)
            settle_zarr_tasks()
            raise failure from None
        return out

    @staticmethod
    def _nd_buffer(out: np.ndarray):
        from zarr.core.buffer import default_buffer_prototype
        return default_buffer_prototype().nd_buffer.from_numpy_array(out)

    def _selection(self, box) -> tuple:
        selection: list = [0] * self.array.ndim
        for axis, (a, b) in zip(self.pyramid.spatial, box):
            selection[axis] = slice(a, b)
        if self.pyramid.channel is not None and self.components > 1:  # one channel (c of size 1) is a scalar volume
            selection[self.pyramid.channel] = slice(None)
        return tuple(selection)

    def _objects(self, box):
        """(key, selection) of every stored object (shard or chunk) the box touches."""
        array = self.array
        block = _stored_block(array)
        ranges = [range(1)] * array.ndim
        for axis, (a, b) in zip(self.pyramid.spatial, box):
            ranges[axis] = range(a // block[axis], -(-b // block[axis]))
        if self.pyramid.channel is not None:
            axis = self.pyramid.channel
            ranges[axis] = range(-(-array.shape[axis] // block[axis]))
        for coords in itertools.product(*ranges):
            selection = tuple(slice(c * n, min((c + 1) * n, size)) for c, n, size in zip(coords, block, array.shape))
            yield array.metadata.encode_chunk_key(coords), selection

    def _name(self, key: str) -> str:
        return f"{self.level.path}/{key}" if self.level.path else key

    def diagnose(self, box, error: Exception) -> OmeZarrError:
        """Which stored object failed: each is read alone (the read that failed read them together)."""
        for key, selection in self._objects(box):
            try:
                self.array.get_basic_selection(selection)
            except Exception as alone:
                return OmeZarrError(f"{self.pyramid.store}: chunk {self._name(key)} is corrupt or unreadable "
                                    f"({_reason(alone)})")
        return OmeZarrError(f"{self.pyramid.store}: level {self.level.path or '(the array)'} slices {box[0][0]} to "
                            f"{box[0][1] - 1} could not be read ({_reason(error)})")

    def _check_stored(self, box) -> None:
        """Stored objects that would read as fill-value voxels without an error: an empty file (0 bytes, which no
        chunk or shard can be; zarr reads a whole empty shard as absent), and, when the store promises every chunk,
        a missing one (an interrupted copy, a deleted file). Checked once per z band of stored objects."""
        block_z = _stored_block(self.array)[self.pyramid.spatial[0]]
        bands = range(box[0][0] // block_z, -(-box[0][1] // block_z))
        full = ((0, self.geometry.shape[1]), (0, self.geometry.shape[2]))
        for band in bands:
            whole_band = box[1:] == full
            if whole_band and band in self._checked_bands:
                continue
            z = (band * block_z, min((band + 1) * block_z, self.geometry.shape[0]))
            for key, _ in self._objects((z,) + tuple(box[1:])):
                try:
                    size = (self.path / key).stat().st_size
                except FileNotFoundError:
                    if self.pyramid.all_chunks_written:
                        raise OmeZarrError(f"{self.pyramid.store}: chunk {self._name(key)} is missing, but the store "
                                           "says all its chunks were written (an incomplete copy?)") from None
                    self._check_missing()
                    continue  # not written: the fill value, as the Zarr format says
                if size == 0:
                    raise OmeZarrError(f"{self.pyramid.store}: chunk {self._name(key)} is an empty file (0 bytes): "
                                       "corrupt (an interrupted copy?)")
                if self._blosc:
                    self._check_blosc_size(key, size)
                if self._unchecked_shard_index is not None:
                    self._check_shard_index(key, size)
            if whole_band:
                self._checked_bands.add(band)

    def _check_missing(self) -> None:
        """A missing chunk, read as the fill value: refused when the level's files are named otherwise than its
        key encoding says (once per reader; see :meth:`_check_chunk_names`); said when Zarr v2's fill_value is
        null (zarr reads it as 0)."""
        if not self._names_checked:
            self._check_chunk_names()
            self._names_checked = True
        metadata = self.array.metadata
        if metadata.zarr_format == 2 and metadata.fill_value is None:
            # Refusing would break stores zarr-python 3 writes itself: fill_value=None writes null, and its
            # default write_empty_chunks=False leaves chunks of zeros out.
            _say_once(f"{self.pyramid.store}: level {self.level.path or '(the array)'} has no fill value (null) and "
                      "chunks not written: they read as 0, as zarr reads them")

    def _check_chunk_names(self) -> None:
        """Refuses a level holding files of which none is named as its chunk key encoding names chunks: zarr
        would read every chunk as missing (fill value, exit 0). Nested 0/0/0 files under a .zarray without
        dimension_separator (zarr-python 2's NestedDirectoryStore wrote that), flat 0.0.0 files under "/", a v3
        array's c/0/0/0 under a v2 encoding. Stops at the first file named right (a sparse store)."""
        metadata = self.array.metadata
        stray = None
        for relative in _files_under(self.path):
            numbers = tuple(int(n) for n in re.findall(r"\d+", relative))
            if len(numbers) == self.array.ndim and metadata.encode_chunk_key(numbers) == relative:
                return
            stray = stray or relative
        if stray is None:
            return  # metadata only (said by the array property)
        if metadata.zarr_format == 2:
            encoding = f"Zarr v2 dimension_separator {metadata.dimension_separator!r}"
        else:
            encoding = (f"chunk_key_encoding {metadata.chunk_key_encoding.name!r}, separator "
                        f"{metadata.chunk_key_encoding.separator!r}")
        raise OmeZarrError(f"{self.pyramid.store}: level {self.level.path or '(the array)'}'s chunk files do not "
                           f"match the array's key encoding ({encoding}: chunks named like "
                           f"{metadata.encode_chunk_key((0,) * self.array.ndim)!r}), found {self._name(stray)!r}; "
                           "every voxel would read as the fill value")

    @functools.cached_property
    def _unchecked_shard_index(self):
        """(entries per shard, index at the end, byte order) of a shard index zarr reads without a checksum
        (index_codecs bytes only, as the sharding spec allows); None otherwise."""
        from zarr.codecs import BytesCodec, ShardingCodec
        codecs = getattr(self.array.metadata, "codecs", None) or [None]
        sharding = codecs[0]
        if not isinstance(sharding, ShardingCodec) or len(sharding.index_codecs) != 1 or \
                not isinstance(sharding.index_codecs[0], BytesCodec):
            return None
        inner = int(np.prod([s // c for s, c in zip(_stored_block(self.array), sharding.chunk_shape)]))
        endian = getattr(sharding.index_codecs[0].endian, "value", "little")
        return inner, str(getattr(sharding.index_location, "value", sharding.index_location)) == "end", \
            np.dtype("<u8" if endian != "big" else ">u8")

    def _check_shard_index(self, key: str, size: int) -> None:
        """Without a checksum, a shard's index damaged (bytes appended, the index cut) is read as it is: entries
        reaching beyond the file read as absent inner chunks, fill-value voxels with exit 0. Each entry written must
        lie in the file's data part and not be empty. One read of the index (16 bytes per inner chunk)."""
        inner, at_end, dtype = self._unchecked_shard_index
        index_bytes = inner * SHARD_INDEX_ENTRY
        if size < index_bytes:
            raise OmeZarrError(f"{self.pyramid.store}: shard {self._name(key)} is cut short: {size} bytes, less than "
                               f"its index ({index_bytes} bytes; an interrupted copy?)")
        with open(self.path / key, "rb") as handle:
            handle.seek(size - index_bytes if at_end else 0)
            entries = np.frombuffer(handle.read(index_bytes), dtype).reshape(-1, 2).astype(np.uint64)
        start, end = (0, size - index_bytes) if at_end else (index_bytes, size)
        offset, length = entries[:, 0], entries[:, 1]
        written = ~((offset == EMPTY_INNER_CHUNK) & (length == EMPTY_INNER_CHUNK))
        # (no inner chunk is 0 bytes: zeros appended read as such entries)
        outside = (offset < start) | (offset > end) | (length == 0) | \
            (length > np.uint64(end) - np.minimum(offset, np.uint64(end)))
        if np.any(written & outside):
            raise OmeZarrError(f"{self.pyramid.store}: shard {self._name(key)} is damaged: its index (no checksum) "
                               f"points beyond the shard's {size} bytes (bytes appended or cut off?)")

    @functools.cached_property
    def _blosc(self) -> bool:
        """Whether each chunk file is one Blosc frame (not sharded; Blosc the last codec on writing)."""
        metadata = self.array.metadata
        last = metadata.compressor if metadata.zarr_format == 2 else (metadata.codecs or [None])[-1]
        return "blosc" in str(getattr(last, "codec_id", "") or type(last).__name__).lower()

    def _check_blosc_size(self, key: str, size: int) -> None:
        """A Blosc frame cut short decodes without an error (Blosc trusts the size in its header, and read past the
        end of a 16-byte file): its header's compressed size must be the file's."""
        with open(self.path / key, "rb") as handle:
            header = handle.read(BLOSC_HEADER)
        said = int.from_bytes(header[12:16], "little") if len(header) == BLOSC_HEADER else None
        if said != size:
            raise OmeZarrError(f"{self.pyramid.store}: chunk {self._name(key)} is cut short or damaged: its Blosc "
                               f"header says {said} bytes, the file has {size} (an interrupted copy?)")

    def close(self) -> None:
        self._array = None
        self._kept = None


def _files_under(folder: Path):
    """Relative paths ("a/b/c") of the files below ``folder`` other than metadata and hidden files (.DS_Store),
    depth first and lazily (a caller may stop at the first); not into a folder that is another Zarr node."""
    stack = [""]
    while stack:
        relative = stack.pop()
        with os.scandir(folder / relative) as entries:
            for entry in entries:
                if entry.name in METADATA_FILES or entry.name.startswith("."):
                    continue
                path = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir():
                    if not is_zarr_store(entry.path):
                        stack.append(path)
                else:
                    yield path


def _open_at(path, level: int | None) -> Pyramid:
    """The pyramid ``path`` belongs to; a level's folder given with another level (``store/1 --level 0``) is
    refused: which one was meant? (The level asked for was read, silently.)"""
    pyramid = open_pyramid(path)
    if level is not None and level != pyramid.start and Path(path).resolve() != pyramid.store.resolve():
        raise OmeZarrError(f"{path}: the folder of level {pyramid.start}, with level {level} asked for; give the "
                           "store with the level, or the level's folder alone")
    return pyramid


def open_slabs(path, level: int | None = None) -> ZarrSlabReader:
    return ZarrSlabReader(_open_at(path, level), level)


def read_geometry(path, level: int | None = None) -> tuple[Geometry, np.dtype, int]:
    chosen = _open_at(path, level).level(level)
    return chosen.geometry, chosen.dtype, chosen.components


def read_volume(path, level: int | None = None) -> Volume:
    """One level, whole, in memory."""
    with open_slabs(path, level) as reader:
        return Volume(reader.read(0, reader.slices), reader.geometry)


def read_region(path, level: int | None, box) -> Volume:
    """The voxels of ``box`` (((k0, k1), (j0, j1), (i0, i1)) at ``level``, e.g. from
    :meth:`Geometry.index_box`) with their geometry; only the chunks the box touches are read."""
    with open_slabs(path, level) as reader:
        try:
            geometry = reader.geometry.cropped(box)
        except ValueError as error:
            raise OmeZarrError(f"{reader.pyramid.store}: {error}") from None
        return Volume(reader.read_box(box), geometry)


def file_size(path, level: int | None = None) -> int:
    """Bytes on disk of one level's array (its metadata and chunk files)."""
    pyramid = _open_at(path, level)
    return sum(f.stat().st_size for f in pyramid.folder(level).rglob("*") if f.is_file())


def level_path(path, level: int) -> Path:
    """The folder of ``level``'s array in the store at ``path``: a path every reader takes as that level (the
    command line's ``--level``)."""
    path = Path(path)
    if not accepts(path):
        raise OmeZarrError(f"{path}: level {level} asked for, but only an OME-Zarr pyramid has levels")
    return _open_at(path, level).folder(level)


def preview_path(path) -> tuple[Path, int | None]:
    """What a preview of ``path`` draws: a pyramid's root gives its :func:`preview_level`'s folder, a level's
    folder itself; with the level's index (None for a plain array)."""
    pyramid = open_pyramid(path)
    if not pyramid.levels[0].path:
        return Path(path), None
    if pyramid.start != 0 or Path(path).resolve() != pyramid.store.resolve():
        return Path(path), pyramid.start
    level = preview_level(pyramid.levels)
    return pyramid.folder(level), level


def choose_level(levels: Sequence[ZarrLevel], memory_budget: float) -> int:
    """The finest level whose voxels fit in ``memory_budget`` bytes; refuses, in one line, when none does."""
    for level in levels:
        if level.nbytes <= memory_budget:
            return level.index
    coarsest = levels[-1]
    raise BigVolumeError(f"even the coarsest level ({coarsest.index}, {'x'.join(map(str, coarsest.geometry.dimensions))}, "
                         f"{format_bytes(coarsest.nbytes)}) does not fit in {format_bytes(memory_budget)}")


def preview_level(levels: Sequence[ZarrLevel], minimum: int = PREVIEW_MIN_VOXELS) -> int:
    """The coarsest level with at least ``minimum`` voxels along each axis (along an axis that is shorter than that
    at level 0: its level-0 size, so a thin slab of a volume still gets a coarse level); else level 0."""
    wanted = [min(minimum, n) for n in levels[0].geometry.dimensions]
    for level in reversed(levels):
        if all(n >= w for n, w in zip(level.geometry.dimensions, wanted)):
            return level.index
    return levels[0].index


def level_size_text(level: ZarrLevel) -> str:
    """"2 (512x512x300, 150 MiB)": a level as a user sees it in lists."""
    dims = "x".join(str(n) for n in level.geometry.dimensions)
    return f"{level.index} ({dims}, {format_bytes(level.nbytes)})"


__all__ = ["Pyramid", "ZarrLevel", "ZarrSlabReader", "accepts", "choose_level", "file_size", "open_pyramid",
           "open_slabs", "level_path", "preview_level", "preview_path", "read_geometry", "read_region", "read_volume", "level_size_text"]
