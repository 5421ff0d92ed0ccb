"""Writing OME-Zarr pyramids: the root group and one chunked array per level, in Zarr v3 (OME-Zarr 0.5, optionally
sharded) or Zarr v2 (OME-Zarr 0.4, ``/`` chunk separator), zstd-compressed, every chunk written even when empty
(``write_empty_chunks``), so that a missing chunk in our stores always means damage, never "all fill value".

Arrays are opened by path (:func:`open_level`) so that a task on another process or machine reaches the same store.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .ome_zarr import AXIS_NAMES, OME_ZARR_VERSIONS, import_zarr

DEFAULT_ZSTD_LEVEL = 1  # zstd 1 compresses scans about as well as 3 at twice the speed (zarr's default is 0 = 3)


def zarr_format(version: str) -> int:
    if version not in OME_ZARR_VERSIONS:
        raise ValueError(f"OME-Zarr version {version!r}: choose one of {', '.join(OME_ZARR_VERSIONS)}")
    return 3 if version == "0.5" else 2


def create_root(path: Path, version: str):
    """A new (or reopened, for a resumed run) root group at ``path``."""
    zarr = import_zarr()
    return zarr.open_group(str(path), mode="a", zarr_format=zarr_format(version))


def create_level(root, name: str, shape: Sequence[int], dtype, chunks: Sequence[int], *, version: str,
                 shards: Sequence[int] | None = None, zstd_level: int = DEFAULT_ZSTD_LEVEL):
    """The array of one level (``z y x``), created empty: chunks ``chunks`` (grouped in ``shards``, v3 only)."""
    zarr = import_zarr()
    chunks = tuple(int(min(c, n)) for c, n in zip(chunks, shape))
    options = {"config": {"write_empty_chunks": True}, "fill_value": 0, "overwrite": True}
    if version == "0.5":
        from zarr.codecs import ZstdCodec
        # with zstd's content checksum: a damaged chunk is refused by every reader, where 20 of 30 chunks with 16
        # zeroed bytes decoded silently without it (Zarr v3's zstd codec defines the option; numcodecs before 0.13,
        # which older 0.4 readers may have, does not know it: 0.4 stores go without)
        options.update(compressors=ZstdCodec(level=zstd_level, checksum=True), dimension_names=AXIS_NAMES)
        if shards is not None:
            # a shard is a whole number of chunks, at most the array (rounded up to whole chunks)
            options["shards"] = tuple(int(min(s, -(-n // c) * c)) for s, c, n in zip(shards, chunks, shape))
    else:
        import numcodecs
        options.update(compressors=numcodecs.Zstd(level=zstd_level),
                       chunk_key_encoding={"name": "v2", "separator": "/"})
    return root.create_array(name, shape=tuple(int(n) for n in shape), chunks=chunks, dtype=np.dtype(dtype),
                             **options)


@functools.lru_cache(maxsize=32)
def open_level(store: str, name: str, run: str = ""):
    """The array ``name`` of the store at ``store``, opened once per process and ``run`` (a token naming one run:
    tasks of a level share the array, a later run at the same path gets its own)."""
    zarr = import_zarr()
    return zarr.open_array(str(Path(store) / name), mode="r+").with_config({"write_empty_chunks": True})


@contextlib.contextmanager
def chunk_concurrency(limit: int):
    """At most ``limit`` chunks encoded and stored at once in this process while it runs (zarr's
    ``async.concurrency``, 10 by default; never raised): each holds its raw and its encoded bytes, and a row of
    level 0's chunks written at once cost 60 MiB on 2 cores for no speed."""
    zarr = import_zarr()
    current = int(zarr.config.get("async.concurrency"))
    with zarr.config.set({"async.concurrency": max(1, min(int(limit), current))}):
        yield


def write_attributes(root, attributes: dict) -> None:
    root.attrs.update(attributes)


DECODERS = 4      # threads decoding the chunks of a region
DECODE_BATCH = DECODERS  # chunks of a region decoded at once (each held until placed and cached)


@functools.lru_cache(maxsize=1)
def _decoders() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(DECODERS, thread_name_prefix="bigvolume-decode")


class ChunkCache:
    """Decoded chunks of arrays, the least recently used dropped beyond ``max_bytes``. Blocks read with their halo
    overlap their neighbours' chunks: at factor 2, a 128^3 block's region touches 4 chunks per axis for 2 it needs
    whole, so reading each region straight from the array decodes every chunk up to 8 times; through the cache,
    neighbours computed one after the other decode it once. Thread-safe (a chunk decoded twice at once is harmless)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._chunks: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def read(self, array, key, region) -> np.ndarray:
        """``array[region]`` (``region``: slices with steps of 1), chunk by chunk; ``key`` names the array."""
        starts = [r.start for r in region]
        out = np.empty(tuple(r.stop - r.start for r in region), array.dtype)
        grids = [range(r.start // c, (r.stop - 1) // c + 1) for r, c in zip(region, array.chunks)]
        indices = list(itertools.product(*grids))
        with self._lock:
            found = {index: self._chunks.get((key, index)) for index in indices}
            for index, data in found.items():
                if data is not None:
                    self._chunks.move_to_end((key, index))
        missing = [index for index, data in found.items() if data is None]
        for index, data in found.items():
            if data is not None:
                self._place(out, data, index, array, region, starts)
        # Decoded side by side (zarr's sync calls from a few threads), each chunk its own array, DECODE_BATCH at a
        # time, each placed at once: a region decoded whole held every chunk it touches beside it (a 268^3 region
        # of 128^3 uint16 chunks: 64 chunks, 256 MiB, for a 37 MiB region).
        for first in range(0, len(missing), DECODE_BATCH):
            batch = missing[first:first + DECODE_BATCH]
            decoded = list(_decoders().map(lambda index: array[self._slices(index, array)], batch))
            for index, data in zip(batch, decoded):
                self._place(out, data, index, array, region, starts)
            self._keep(key, dict(zip(batch, decoded)))
        return out

    def _place(self, out, data, index, array, region, starts) -> None:
        """The part of chunk ``index`` (``data``) inside ``region``, into ``out`` (which holds the region)."""
        chunk = self._slices(index, array)
        lo = [max(r.start, s.start) for r, s in zip(region, chunk)]
        hi = [min(r.stop, s.stop) for r, s in zip(region, chunk)]
        out[tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, starts))] = \
            data[tuple(slice(a - s.start, b - s.start) for a, b, s in zip(lo, hi, chunk))]

    @staticmethod
    def _slices(index, array):
        """The voxels of chunk ``index``."""
        return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, array.chunks, array.shape))

    def _keep(self, key, chunks: dict) -> None:
        with self._lock:
            for index, data in chunks.items():
                if (key, index) not in self._chunks:
                    self._chunks[(key, index)] = data
                    self._bytes += data.nbytes
            while self._bytes > self.max_bytes and len(self._chunks) > 1:
                _, dropped = self._chunks.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._bytes = 0
