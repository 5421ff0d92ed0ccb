"""Writing a volume slab by slab as it is produced: NRRD (attached, raw or gzip), NHDR + raw/raw.gz data file, and
NIfTI (``.nii``, ``.nii.gz``). Only the headers are written here; voxels are appended as they come.

Writers write where they are told: callers give them a path inside :func:`bigvolume.io.files.atomic_output`'s staging
folder, so the output appears whole or not at all. A :class:`BackgroundWriter` moves compression and disk writes to
a thread so they overlap with the filtering.
"""
from __future__ import annotations

import os
import queue
import struct
import sys
import tempfile
import threading
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.errors import VolumeFileError
from ..core.geometry import Geometry
from ..core.memory import default_threads
from ..core.volume import Volume
from .files import check_geometry_fits, check_writable_type, file_size, unit_axes, volume_suffix, write_volume
from .raw_writes import open_for_append

STREAM_WRITE_SUFFIXES = (".nhdr", ".nrrd", ".nii", ".nii.gz")
GZIP_LEVEL = 6  # zlib's default: the usual balance of size and speed

NRRD_TYPES = {"uint8": "unsigned char", "int8": "signed char", "uint16": "unsigned short", "int16": "short",
              "uint32": "unsigned int", "int32": "int", "uint64": "unsigned long long int",
              "int64": "long long int", "float32": "float", "float64": "double"}


def _form_problem(path, components: int) -> str | None:
    """Why the slab writers cannot write ``path``'s format with ``components`` per voxel (None: they can)."""
    suffix = volume_suffix(path)
    if suffix not in STREAM_WRITE_SUFFIXES:
        return (f"{path}: streamed outputs are written as {', '.join(STREAM_WRITE_SUFFIXES)}; choose one of those "
                "(.nhdr keeps the result streamable)")
    if suffix.startswith(".nii") and components > 1:
        return (f"{path}: NIfTI stores vector components as separate volumes, which cannot be written slab by slab; "
                "choose .nhdr or .nrrd")
    return None


def writes_in_slabs(path, components: int = 1, compress: bool | None = None) -> bool:
    """Whether the slab writers write ``path`` as :func:`bigvolume.io.files.write_volume` would, so an operation
    that holds its input in memory may still hand its output over slab by slab: NRRD, NHDR, one-component NIfTI;
    not a .nii asked to be compressed (write_volume leaves .nii uncompressed)."""
    return _form_problem(path, components) is None and not (volume_suffix(path) == ".nii" and compress)


def check_stream_output(path, dtype, components: int) -> None:
    """Refuse, before any work, an output that cannot be written slab by slab."""
    problem = _form_problem(path, components)
    if problem is not None:
        raise VolumeFileError(problem)
    check_writable_type(path, dtype)


def compresses(path, compress: bool | None) -> bool:
    """Whether the output is gzip-compressed: as asked, else by default for .nrrd; always for .nii.gz."""
    suffix = volume_suffix(path)
    return suffix == ".nii.gz" or (suffix == ".nrrd" if compress is None else bool(compress))


def _number(value: float) -> str:
    return format(float(value), ".17g")


def _vector(values) -> str:
    return "(" + ",".join(_number(v) for v in values) + ")"


def nrrd_header(geometry: Geometry, dtype, components: int, encoding: str, data_file: str | None = None,
                endian: str = sys.byteorder, byte_skip: int = 0) -> bytes:
    """The text header of a NRRD with this geometry, in LPS like Slicer's and SimpleITK's writers. ``data_file``
    makes it a detached header (``"LIST 2"``: the caller appends the file names)."""
    directions = [_vector(geometry.direction[:, axis] * geometry.spacing[axis]) for axis in range(3)]
    sizes = [str(n) for n in geometry.dimensions]
    kinds = ["domain"] * 3
    if components > 1:
        sizes, directions, kinds = [str(components)] + sizes, ["none"] + directions, ["vector"] + kinds
    lines = ["NRRD0004",
             f"type: {NRRD_TYPES[np.dtype(dtype).name]}",
             f"dimension: {len(sizes)}",
             "space: left-posterior-superior",
             f"sizes: {' '.join(sizes)}",
             f"space directions: {' '.join(directions)}",
             f"kinds: {' '.join(kinds)}",
             f"endian: {endian}",
             f"encoding: {encoding}",
             f"space origin: {_vector(geometry.origin)}"]
    if byte_skip:
        lines.append(f"byte skip: {byte_skip}")
    if data_file is not None:
        lines.append(f"data file: {data_file}")
    # UTF-8: a data file's name as the file system spells it (teem hands the bytes to it; our reader decodes UTF-8)
    return ("\n".join(lines) + "\n" + ("" if data_file else "\n")).encode("utf-8")


def nifti_header(geometry: Geometry, dtype) -> bytes:
    """A NIfTI-1 header (and its padding up to the voxel offset) exactly as SimpleITK writes it for this geometry:
    SimpleITK writes a two-slice volume with the same grid, and the slice count is then set in ``dim[3]``."""
    nx, ny, nz = geometry.dimensions
    if max(nx, ny, nz) > 32767:
        raise VolumeFileError(f"NIfTI-1 cannot store {nz} slices or rows (at most 32767); choose .nhdr")
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(np.zeros((2, ny, nx), np.dtype(dtype)))
    spacing, direction = unit_axes(geometry)  # (as write_volume stores it)
    image.SetSpacing(spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(tuple(direction.ravel()))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "header.nii")
        sitk.WriteImage(image, path)
        with open(path, "rb") as handle:
            header = bytearray(handle.read(352))
    vox_offset = int(np.frombuffer(bytes(header), "<f4", 1, 108)[0])
    header = header[:vox_offset]
    header[46:48] = np.int16(nz).astype("<i2").tobytes()
    return bytes(header)


def header_bytes(path, geometry: Geometry, dtype, components: int = 1, slab_writer: bool = True) -> int:
    """Bytes an uncompressed output at ``path`` on ``geometry`` holds besides its voxels (a detached header's file
    included), as the slab writers write it or (``slab_writer`` false) SimpleITK's writer
    (bigvolume.io.files.write_volume): measured on a one-voxel volume of the grid, whose header differs only in
    its sizes."""
    path, dtype = Path(path), np.dtype(dtype)
    if slab_writer and volume_suffix(path) == ".nii":
        return len(nifti_header(geometry, dtype))
    if slab_writer:
        data_file = path.stem + ".raw" if volume_suffix(path) == ".nhdr" else None
        return len(nrrd_header(geometry, dtype, components, "raw", data_file))
    one = Geometry((1, 1, 1), geometry.spacing, geometry.origin, geometry.direction)
    voxel = np.zeros((1, 1, 1) + ((components,) if components > 1 else ()), dtype)
    with tempfile.TemporaryDirectory() as folder:
        probe = write_volume(Volume(voxel, one), Path(folder) / path.name, compress=False)
        return file_size(probe) - voxel.nbytes + len(" ".join(map(str, geometry.dimensions))) - len("1 1 1")


class _GzipFile:
    """Appends one gzip stream to an open binary file, compressed on several threads as pigz does: the data is cut
    into GZIP_BLOCK pieces, each deflated on its own, primed with the 32 KiB before it (so matches reach back as in
    one stream: sizes within 0.1 %), and ended on a byte boundary (a sync flush) so the pieces join into one deflate
    stream. Single-threaded level 6 wrote 3-15 MB/s: for a dehazed 2 GiB .nrrd, longer than the dehazing. The
    pieces are cut at fixed offsets of the data, so the file is the same whatever the threads and slab sizes."""

    def __init__(self, handle, threads: int | None = None):
        self.handle = handle
        self.threads = max(1, min(GZIP_THREADS, threads or default_threads()))
        self.pending = bytearray()   # data of the piece being filled
        self.primer = b""            # the last 32 KiB before it
        self.crc = self.size = 0
        self.pieces: deque = deque()  # compressed pieces in order (futures, or bytes without a pool)
        self.pool = ThreadPoolExecutor(self.threads, "bigvolume-gzip") if self.threads > 1 else None
        handle.write(GZIP_HEADER)

    def write(self, data) -> None:
        data = memoryview(data).cast("B")
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        start = 0
        while start < len(data):
            take = min(len(data) - start, GZIP_BLOCK - len(self.pending))
            self.pending += data[start:start + take]
            start += take
            if len(self.pending) == GZIP_BLOCK:
                self._deflate(last=False)

    def _deflate(self, last: bool) -> None:
        piece, primer = bytes(self.pending), self.primer
        self.primer, self.pending = piece[-DEFLATE_WINDOW:], bytearray()
        self.pieces.append(self.pool.submit(_deflate_piece, piece, primer, last) if self.pool
                           else _deflate_piece(piece, primer, last))
        while len(self.pieces) > self.threads or (last and self.pieces):  # (at most a piece per thread)
            done = self.pieces.popleft()
            self.handle.write(done if isinstance(done, bytes) else done.result())

    def close(self) -> None:
        if self.handle.closed:
            return
        try:
            self._deflate(last=True)
            self.handle.write(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        finally:  # closed even when the last bytes cannot be written: Windows removes no open file
            self.abort()

    def abort(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pieces.clear()
        self.handle.close()


GZIP_BLOCK = 2**20      # bytes of data per piece compressed on its own (pigz: 128 KiB; fewer, larger pieces here)
GZIP_THREADS = 8        # at most: ~2 MiB per thread in flight, within the engine's FIXED_OVERHEAD
DEFLATE_WINDOW = 2**15  # how far back deflate matches reach: the primer of the next piece
# magic, deflate, no flags, no time, no extra flags, OS unknown (the same file on every system)
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _deflate_piece(piece: bytes, primer: bytes, last: bool) -> bytes:
    """Raw deflate of one piece, primed with the data before it, ending the stream (``last``) or on a byte
    boundary for the next piece to follow."""
    compressor = (zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=primer) if primer
                  else zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS))
    return compressor.compress(piece) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class SlabWriter:
    """Appends ``(d, j, i[, c])`` blocks of slices to ``path`` (format from its suffix) and checks, on ``close``,
    that exactly the slices of ``geometry`` were written."""

    def __init__(self, path, geometry: Geometry, dtype, components: int = 1, compress: bool | None = None):
        path = Path(path)
        check_stream_output(path, dtype, components)
        suffix = volume_suffix(path)
        self.path, self.geometry, self.dtype, self.components = path, geometry, np.dtype(dtype), components
        self.slice_shape = geometry.shape[1:] + ((components,) if components > 1 else ())
        compress = compresses(path, compress)
        encoding = "gzip" if compress else "raw"
        self.slices_written = 0
        if suffix == ".nhdr":
            data_name = path.stem + (".raw.gz" if compress else ".raw")
            path.write_bytes(nrrd_header(geometry, dtype, components, encoding, data_name))
            header, data_path = b"", path.with_name(data_name)
        elif suffix == ".nrrd":
            header, data_path = nrrd_header(geometry, dtype, components, encoding), path
        else:
            check_geometry_fits(path, geometry)
            header, data_path = nifti_header(geometry, dtype), path
        data_bytes = len(header) + geometry.voxel_count * components * self.dtype.itemsize
        handle = open(data_path, "wb") if compress else open_for_append(data_path, data_bytes)
        try:
            if suffix == ".nii.gz":
                self._out = _GzipFile(handle)
                self._out.write(header)
            else:
                handle.write(header)
                self._out = _GzipFile(handle) if compress else handle
        except BaseException:
            handle.close()
            raise

    def write(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.slice_shape or block.dtype != self.dtype:
            raise ValueError(f"block {block.shape} {block.dtype} does not fit slices {self.slice_shape} {self.dtype}")
        if self.slices_written + block.shape[0] > self.geometry.dimensions[2]:
            raise ValueError("more slices than the volume has")
        self._out.write(np.ascontiguousarray(block).data)
        self.slices_written += block.shape[0]

    def close(self) -> None:
        """Finish the file; raises if slices are missing (the caller then discards the output)."""
        self._out.close()
        if self.slices_written != self.geometry.dimensions[2]:
            raise VolumeFileError(f"{self.path}: {self.slices_written} of {self.geometry.dimensions[2]} slices "
                                  "were written")

    def abort(self) -> None:
        try:
            getattr(self._out, "abort", self._out.close)()  # (a gzip stream is not finished: nothing to keep)
        except (OSError, zlib.error):
            pass


class BackgroundWriter:
    """Runs a writer's ``write`` on a thread (compression and disk I/O overlap with the caller's work), at most
    ``depth`` blocks behind. An error on the thread is raised by the next ``write`` or by ``close``."""

    POLL_SECONDS = 0.1
    ABORT_WAIT_SECONDS = 10.0

    def __init__(self, writer: SlabWriter, depth: int = 2):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bigvolume-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                block = self._queue.get(timeout=self.POLL_SECONDS)
            except queue.Empty:
                continue
            if block is None:
                return
            if self._error is None and not self._stop.is_set():
                try:
                    self.writer.write(block)
                except BaseException as error:  # kept for the caller's thread
                    self._error = error

    def write(self, block: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            self.writer.abort()
            raise self._error
        self.writer.close()

    def abort(self) -> None:
        """Stop without touching the queue: a Ctrl-C may have interrupted the caller inside it, leaving its lock
        held (the thread then stays blocked, a daemon that does not keep the process alive)."""
        self._error = self._error or VolumeFileError("aborted")
        self._stop.set()
        self._thread.join(self.ABORT_WAIT_SECONDS)
        self.writer.abort()
