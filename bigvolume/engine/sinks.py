"""Where the engine's output slabs go: :func:`file_sink` and :func:`file_sinks` (a slab writer on a thread inside an
atomic output: the file appears complete or not at all, aborted on any error, cancel or Ctrl-C) and
:class:`ArraySink` (an array the caller owns, e.g. a Slicer volume node's voxels); :class:`NanCountingSink` counts
what passes."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np

from ..core.dtypes import cast_to
from ..core.errors import VolumeFileError
from ..core.geometry import Geometry
from ..core.memory import format_bytes
from ..io import files as io
from ..io.slab_writers import BackgroundWriter, SlabWriter, check_stream_output, compresses

class ArraySink:
    """Writes output slices in order into a preallocated ``(k, j, i[, c])`` array (e.g. a volume node's voxels)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.filled = 0

    def write(self, block: np.ndarray) -> None:
        self.array[self.filled:self.filled + block.shape[0]] = block
        self.filled += block.shape[0]


class NanCountingSink:
    """Hands blocks on to ``sink``, counting the NaN voxels of float blocks: a NaN input voxel spreads over the
    kernel's support, so an output that came out largely NaN is said rather than left to be found. ``out_dtype``: an
    integer type the float blocks are cast to here, after counting (cast first, NaN became 0 unseen)."""

    def __init__(self, sink, out_dtype=None):
        self.sink = sink
        self.out_dtype = None if out_dtype is None else np.dtype(out_dtype)
        self.nan = self.voxels = 0

    def count(self, block: np.ndarray) -> int:
        """Counts ``block``'s NaN voxels (returned) and voxels."""
        nan = int(np.count_nonzero(np.isnan(block))) if block.dtype.kind == "f" else 0
        self.nan += nan
        self.voxels += block.size
        return nan

    def write(self, block: np.ndarray) -> None:
        nan = self.count(block)
        if self.out_dtype is not None and block.dtype != self.out_dtype:
            block = cast_to(block, self.out_dtype, finite=nan == 0)  # (the search for NaN done once, here)
        self.sink.write(block)


def check_disk_space(path: Path, nbytes: int) -> None:
    free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    if nbytes > free:
        leftovers = io.leftover_staging(path)
        raise VolumeFileError(f"{path}: not enough disk space: the output needs {format_bytes(nbytes)}, "
                              f"{format_bytes(free)} are free" + (f"; {io.leftovers_text(path, leftovers)}"
                                                                  if leftovers else ""))


@contextlib.contextmanager
def file_sink(path, geometry: Geometry, dtype, components: int = 1, compress: bool | None = None):
    """A sink writing ``path`` slab by slab (on a thread, see bigvolume.slab_writers) to a staging name that is
    moved into place when the ``with`` block ends normally and every slice was written. Any exception in the
    block (an error, a cancel, Ctrl-C) aborts the writer and leaves nothing. The output's form is checked, and the
    free disk space for an uncompressed output, before anything is written."""
    with file_sinks([(path, dtype)], geometry, components, compress) as writers:
        yield writers[0]


@contextlib.contextmanager
def file_sinks(outputs, geometry: Geometry, components: int = 1, compress: bool | None = None):
    """:func:`file_sink` for several files of one grid written together, ``outputs`` (path, dtype) (a volume and its
    mask): every writer is finished (its last bytes written) before any file is moved into place, so a failure
    finishing one (a full disk at the compressor's last flush) leaves none (the mask was in place, the message said
    "nothing was written")."""
    outputs = [(Path(path), np.dtype(dtype)) for path, dtype in outputs]
    for path, dtype in outputs:
        check_stream_output(path, dtype, components)
        io.check_geometry_fits(path, geometry)
        if not compresses(path, compress):
            check_disk_space(path, geometry.voxel_count * components * dtype.itemsize)
    current, writers = outputs[0][0], []
    try:
        with contextlib.ExitStack() as staged:  # the moves into place: once every writer has finished
            try:
                for path, dtype in outputs:
                    current = path
                    staging_path = staged.enter_context(io.atomic_output(path))
                    writers.append(BackgroundWriter(SlabWriter(staging_path, geometry, dtype, components, compress)))
                current = " and ".join(str(path) for path, _ in outputs)  # (a write in the block: either)
                yield writers
                for (path, _), writer in zip(outputs, list(writers)):
                    current = path
                    writers.remove(writer)
                    writer.close()
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise
    except OSError as error:
        raise VolumeFileError(f"{current}: cannot write ({error.strerror or error}); nothing was written") from None
