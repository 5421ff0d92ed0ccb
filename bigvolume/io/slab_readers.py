"""Slab readers that need nothing but a file's :class:`~bigvolume.io.layout.VoxelLayout` (or an array): slices
``k0 .. k1-1`` read into buffers the caller owns, so that memory stays bounded whatever the file size.

- raw data (one file, many files, any offsets, either byte order): each slab is read at its byte offset, in any
  order (a large file that is not cached around the page cache: :mod:`bigvolume.io.raw_reads`); one large
  native-order file that is cached is not read but mapped: its slabs are views (:class:`MappedSlabReader`);
- gzip/bzip2/zlib data: decompressed in bounded chunks as the slabs are asked for in order (asking for an earlier
  slab starts again from the beginning).

This module sits below :mod:`bigvolume.io.files` and :mod:`bigvolume.io.dicom` (both build on it);
:mod:`bigvolume.io.slabs` picks a reader for a file.
"""
from __future__ import annotations

import bz2
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.errors import VolumeFileError
from ..core.geometry import Geometry
from .layout import DataFile, VoxelLayout
from .raw_reads import MappedFile, aligned_empty, open_raw, worth_mapping

READ_CHUNK = 1 << 20       # compressed bytes read at a time
DECODED_CHUNK = 8 << 20    # most decompressed bytes produced from one call (bounds memory on highly compressed data)


class SlabReader:
    """Slices ``k0 .. k1-1`` of a volume file, as a ``(k1-k0, j, i[, c])`` array of ``dtype`` (native order)."""

    streams = True

    def __init__(self, path: Path, geometry: Geometry, dtype: np.dtype, components: int):
        self.path = path
        self.geometry = geometry
        self.dtype = np.dtype(dtype)
        self.components = components
        self.slice_shape = geometry.shape[1:] + ((components,) if components > 1 else ())
        self.slice_bytes = int(np.prod(self.slice_shape)) * self.dtype.itemsize

    @property
    def slices(self) -> int:
        return self.geometry.dimensions[2]

    @property
    def nbytes(self) -> int:
        return self.slice_bytes * self.slices

    # Readers that decode (image stacks) copy each slice into the buffer anyway: they can fill a buffer of another
    # type (float for the filter) in that same copy, on their own threads. Readers of raw bytes cannot.
    converts_on_read = False
    # Readers of arrays in memory hand out views when read without a buffer (bigvolume.engine then copies nothing).
    hands_out_views = False
    # The whole input is in this process's memory already: slabs read ahead (views) hold no memory of their own.
    holds_input = False
    # Slabs that are multiples of this many slices cost the least to read (a Zarr chunk's z size: a slab that cuts
    # a chunk decodes it again for the next slab); the engine's planner rounds to it where memory allows.
    slab_alignment = 1

    def new_buffer(self, slices: int, dtype=None) -> np.ndarray:
        return np.empty((slices,) + self.slice_shape, dtype or self.dtype)

    def read(self, k0: int, k1: int, out: np.ndarray | None = None) -> np.ndarray:
        if not 0 <= k0 < k1 <= self.slices:
            raise ValueError(f"slices {k0}..{k1} outside 0..{self.slices}")
        out = self.new_buffer(k1 - k0) if out is None else out[:k1 - k0]
        self._read_into(k0, k1, out)
        return out

    def _read_into(self, k0: int, k1: int, out: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _LayoutReader(SlabReader):
    """Shared by raw and decoded data: bytes land in a buffer of the stored type, then are put in native order
    (and scaled, for NIfTI with slope/intercept)."""

    def __init__(self, path, geometry, dtype, components, layout: VoxelLayout):
        super().__init__(path, geometry, dtype, components)
        self.layout = layout
        self._stored_slice_bytes = self.slice_bytes // self.dtype.itemsize * layout.stored_dtype.itemsize

    def _read_into(self, k0: int, k1: int, out: np.ndarray) -> None:
        stored = self.layout.stored_dtype
        if self.layout.scale is None:
            target = out.view(np.uint8).reshape(-1)
            self._read_bytes(k0 * self._stored_slice_bytes, target)
            if not stored.isnative:
                out.byteswap(inplace=True)
            return
        raw = np.empty(out.shape, stored)
        self._read_bytes(k0 * self._stored_slice_bytes, raw.view(np.uint8).reshape(-1))
        slope, intercept = self.layout.scale
        # in double precision, rounded once to the output type: float32 (raw x slope), then + intercept in float32,
        # rounded twice (1 ulp off ITK's value in a quarter of the voxels)
        scaled = np.multiply(raw, slope, dtype=np.float64)
        scaled += intercept
        out[...] = scaled

    def _read_bytes(self, start: int, target: np.ndarray) -> None:
        raise NotImplementedError


class RawSlabReader(_LayoutReader):
    """Uncompressed data in one or many files: each slab is read at its byte offset."""

    def __init__(self, *args):
        super().__init__(*args)
        self._handle = None
        self._handle_path = None

    def new_buffer(self, slices: int, dtype=None) -> np.ndarray:
        return aligned_empty((slices,) + self.slice_shape, dtype or self.dtype)  # read into with no copy

    def _open(self, data: DataFile):
        if self._handle_path != data.path:
            self.close()
            self._handle = open_raw(data.path)  # a large cold file around the page cache (io.raw_reads)
            self._handle_path = data.path
        return self._handle

    def _read_bytes(self, start: int, target: np.ndarray) -> None:
        per_file = self.layout.bytes_per_file
        done, view = 0, memoryview(target)
        while done < len(view):
            position = start + done
            data = self.layout.files[position // per_file]
            within = position % per_file
            count = min(len(view) - done, per_file - within)
            got = self._open(data).readinto_at(data.offset + within, view[done:done + count])
            if got < count:
                raise VolumeFileError(f"{data.path}: ended at byte {data.offset + within + got} while "
                                      f"{data.offset + per_file} bytes were expected (was it changed or "
                                      "truncated while reading?)")
            done += count

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = self._handle_path = None


def _decoder(encoding: str):
    if encoding == "bzip2":
        return bz2.BZ2Decompressor()
    return zlib.decompressobj(zlib.MAX_WBITS | 32)  # accepts gzip and zlib headers


# What zlib and bz2 say about bad data, in the user's words (their messages name library internals).
_CORRUPTION_WORDS = {"incorrect data check": "checksum mismatch", "incorrect length check": "length mismatch",
                     "incorrect header check": "not compressed data where it should start"}


def _corrupt(name: Path, encoding: str, error: Exception, at: int) -> VolumeFileError:
    text = str(error)
    reason = next((words for key, words in _CORRUPTION_WORDS.items() if key in text), "invalid data")
    return VolumeFileError(f"{name}: corrupt compressed data ({encoding}, {reason}, within its first {at} bytes)")


class _NotAStream(VolumeFileError):
    """Bytes after a complete, intact stream that do not start another one. Appended bytes when every voxel was
    decoded before them (gzip and SimpleITK skip them; we refuse rather than guess what the file holds), a damaged
    stream start otherwise: the caller knows which."""

    def __init__(self, name: Path, encoding: str, handle, stream_end: int):
        after = os.fstat(handle.fileno()).st_size - stream_end
        what = "1 byte" if after == 1 else f"{after} bytes"
        super().__init__(f"{name}: {what} after the end of its {encoding} data (at byte {stream_end}) "
                         f"{'is' if after == 1 else 'are'} not {encoding} data (appended to the file?)")
        self.damaged = VolumeFileError(f"{name}: corrupt compressed data ({encoding}): no stream starts at byte "
                                       f"{stream_end}, where the previous one ended")

    def after(self, decoded: int, wanted: int) -> VolumeFileError:
        """The refusal to raise once ``decoded`` bytes came before these: appended bytes when they hold the
        ``wanted`` ones, a damaged stream otherwise."""
        return self if decoded >= wanted else self.damaged


class _Truncated(VolumeFileError):
    """The file ends inside a compressed stream (before its end marker and checksum)."""


def _decompressed(handle, encoding: str, name: Path) -> Iterator[bytes]:
    """Decoded chunks of the rest of ``handle``, at most DECODED_CHUNK bytes each. Concatenated streams (pigz,
    bgzip, pbzip2) are followed to the end of the file. Every stream must end with its end marker and checksum
    (gzip: CRC32 and length; zlib: Adler-32; bzip2: its block and stream CRCs), which the decoders verify when
    they reach them: a truncated or corrupted file is refused rather than read as zeros."""
    decoder = _decoder(encoding)
    is_bz2 = encoding == "bzip2"
    feed, fed = b"", False  # fed: the current stream has been given bytes (it must then reach its end)
    position = handle.tell()
    stream_end = None  # where the last complete stream ended, while the next one has produced nothing
    while True:
        if not feed and (not is_bz2 or decoder.needs_input):
            feed = handle.read(READ_CHUNK)
            position += len(feed)
            if not feed:
                if not is_bz2:
                    yield decoder.flush()  # output still held back by max_length
                if fed and not decoder.eof:
                    if stream_end is not None:  # e.g. one byte that could start a zlib header
                        raise _NotAStream(name, encoding, handle, stream_end)
                    raise _Truncated(f"{name}: corrupt compressed data ({encoding}): the file ends inside the "
                                     f"compressed stream, after {position} bytes (truncated file?)")
                return
        fed = True
        try:
            decoded = decoder.decompress(feed, DECODED_CHUNK)
        except (zlib.error, OSError, EOFError, ValueError) as error:
            if stream_end is not None:  # complete streams, then bytes that do not start another one
                raise _NotAStream(name, encoding, handle, stream_end) from None
            raise _corrupt(name, encoding, error, position) from None
        if decoded:
            stream_end = None
        yield decoded
        if decoder.eof:
            feed, decoder, fed = decoder.unused_data, _decoder(encoding), False
            stream_end = position - len(feed)
        else:
            feed = b"" if is_bz2 else decoder.unconsumed_tail


def _decode_file(data: DataFile, encoding: str, wanted: int) -> Iterator[bytes]:
    """The ``wanted`` decoded bytes of one compressed data file, after its decoded skip, in bounded chunks. The
    last chunk is handed out only after the rest of the file has been decoded and checked: the stream must end
    there, intact, holding exactly the bytes the header says."""
    skip, delivered, extra = data.decoded_skip, 0, 0
    held = None  # the chunk that completes ``wanted``, kept until the rest of the file is checked
    with open(data.path, "rb") as handle:
        handle.seek(data.offset)
        try:
            for chunk in _decompressed(handle, encoding, data.path):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if held is not None:
                    extra += len(chunk)
                elif delivered + len(chunk) >= wanted:
                    held, extra = chunk[:wanted - delivered], delivered + len(chunk) - wanted
                    delivered = wanted
                elif chunk:
                    delivered += len(chunk)
                    yield chunk
        except _NotAStream as refused:
            raise refused.after(delivered, wanted) from None
        except _Truncated:
            if delivered >= wanted:
                raise VolumeFileError(f"{data.path}: corrupt compressed data ({encoding}): the file ends before "
                                      "the stream's end marker and checksum (truncated file?)") from None
            pass  # said below, with the counts
    if delivered < wanted:
        raise VolumeFileError(f"{data.path}: compressed data ends after {delivered} of {wanted} bytes of voxels "
                              "(truncated file?)")
    if extra:
        raise VolumeFileError(f"{data.path}: the compressed data holds {wanted + extra} bytes of voxels, the header "
                              f"says {wanted}")
    if held:
        yield held


def check_compressed_file(path: Path, encoding: str = "gzip", header_bytes: int = 0) -> int:
    """Decode all of ``path`` (a file read whole by SimpleITK, which would read a damaged one silently) to check
    its streams are complete and intact; returns the decoded byte count, refused when below ``header_bytes``."""
    decoded = 0
    with open(path, "rb") as handle:
        try:
            for chunk in _decompressed(handle, encoding, path):
                decoded += len(chunk)
        except _NotAStream as refused:
            raise refused.after(decoded, header_bytes) from None
    if decoded < header_bytes:
        raise VolumeFileError(f"{path}: compressed data ends after {decoded} of {header_bytes} bytes "
                              "(truncated file?)")
    return decoded


class DecodedSlabReader(_LayoutReader):
    """Compressed data: decoded front to back in bounded chunks; an earlier slab restarts from the beginning."""

    def __init__(self, *args):
        super().__init__(*args)
        self._restart()

    def _restart(self) -> None:
        per_file = self.layout.bytes_per_file
        self._chunks = (chunk for data in self.layout.files
                        for chunk in _decode_file(data, self.layout.encoding, per_file))
        self._position = 0
        self._leftover = memoryview(b"")

    def _read_bytes(self, start: int, target: np.ndarray) -> None:
        if start < self._position:
            self._restart()
        view, done = memoryview(target), 0
        while done < len(view):
            if not self._leftover:
                try:
                    self._leftover = memoryview(next(self._chunks))
                except StopIteration:
                    raise VolumeFileError(f"{self.path}: the data ended before all voxels were read") from None
            if self._position < start:  # skipping forward
                dropped = min(start - self._position, len(self._leftover))
                self._leftover = self._leftover[dropped:]
                self._position += dropped
                continue
            count = min(len(view) - done, len(self._leftover))
            view[done:done + count] = self._leftover[:count]
            self._leftover = self._leftover[count:]
            self._position += count
            done += count

    def close(self) -> None:
        self._chunks.close()


class ArraySlabReader(SlabReader):
    """A volume already in memory, served slab by slab, so arrays go through the same engine as files. Read
    without a buffer, a slab is a view of the array (nothing copied); into a buffer (e.g. pinned memory for a GPU
    upload), ``threads`` copy parts of it at once (one thread copies well below memory speed)."""

    hands_out_views = True
    holds_input = True

    def __init__(self, array: np.ndarray, geometry: Geometry | None = None, threads: int = 1):
        geometry = geometry or Geometry(array.shape[2::-1])
        super().__init__(Path("<array>"), geometry, array.dtype, 1 if array.ndim == 3 else array.shape[3])
        self.array, self.threads = array, threads

    def read(self, k0: int, k1: int, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            if not 0 <= k0 < k1 <= self.slices:
                raise ValueError(f"slices {k0}..{k1} outside 0..{self.slices}")
            return self.array[k0:k1]
        return super().read(k0, k1, out)

    def _read_into(self, k0, k1, out):
        parts = min(self.threads, k1 - k0)
        if parts <= 1:
            out[...] = self.array[k0:k1]
            return
        bounds = np.linspace(k0, k1, parts + 1).astype(int)
        with ThreadPoolExecutor(max_workers=parts) as pool:  # numpy copies release the GIL
            list(pool.map(lambda a, b: np.copyto(out[a - k0:b - k0], self.array[a:b]), bounds[:-1], bounds[1:]))


class MappedSlabReader(SlabReader):
    """One uncompressed file in this machine's byte order, already in the page cache: read without a buffer, a slab
    is a read-only view of its mapped pages (nothing copied: bigvolume.io.raw_reads); into a buffer (pinned memory
    for a GPU upload), one copy from them. Each slab's pages count in memory while a view of it lives, as a buffer
    would."""

    hands_out_views = True

    def __init__(self, path, geometry, dtype, components, layout: VoxelLayout):
        super().__init__(path, geometry, dtype, components)
        self.layout, self.data = layout, layout.files[0]
        self._file = MappedFile(self.data.path)

    def read(self, k0: int, k1: int, out: np.ndarray | None = None) -> np.ndarray:
        if out is not None:
            return super().read(k0, k1, out)
        if not 0 <= k0 < k1 <= self.slices:
            raise ValueError(f"slices {k0}..{k1} outside 0..{self.slices}")
        length = (k1 - k0) * self.slice_bytes
        pages = self._file.bytes_at(self.data.offset + k0 * self.slice_bytes, length)
        if pages is None:
            raise VolumeFileError(f"{self.data.path}: ended at byte {self._file.size()} while "
                                  f"{self.data.offset + self.layout.total_bytes} bytes were expected (was it "
                                  "changed or truncated while reading?)")
        return pages.view(self.dtype).reshape((k1 - k0,) + self.slice_shape)

    def _read_into(self, k0: int, k1: int, out: np.ndarray) -> None:
        out[...] = self.read(k0, k1)

    def close(self) -> None:
        self._file.close()


def layout_reader(path, geometry, dtype, components, layout: VoxelLayout) -> SlabReader:
    """The reader for ``layout``: mapped (a cached native file), raw or decoded."""
    if layout.is_single_native_raw and worth_mapping(layout.files[0].path):
        try:
            return MappedSlabReader(path, geometry, dtype, components, layout)
        except OSError:
            pass  # cannot be mapped here: read it
    reader = RawSlabReader if layout.encoding == "raw" else DecodedSlabReader
    return reader(path, geometry, dtype, components, layout)


def read_with_layout(path, geometry: Geometry, dtype, components: int, layout: VoxelLayout) -> np.ndarray:
    """The whole volume through the same readers that stream it (so the in-memory and streamed paths read the
    same bytes and check them the same way): ``(k, j, i[, c])`` of ``dtype``, native order."""
    path = Path(path)
    with layout_reader(path, geometry, dtype, components, layout) as reader:
        if layout.permuted is None:
            return reader.read(0, reader.slices)
        # Components on a slower axis: read the file's array as stored, then move that axis last.
        shape, axis = layout.permuted
        stored = np.empty(shape, dtype)
        reader._read_bytes(0, stored.view(np.uint8).reshape(-1))
        if not layout.stored_dtype.isnative:
            stored.byteswap(inplace=True)
        return np.ascontiguousarray(np.moveaxis(stored, axis, -1))
