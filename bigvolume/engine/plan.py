"""The engine's plan: what a file operation needs from the header alone (:func:`plan_input`), the one rule for
"read whole or stream" (:func:`should_stream`) and the one memory planner (:func:`plan_slabs`: the largest slab
whose buffers, with what the process already holds, stay under the limit)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import BigVolumeError
from ..core.geometry import Geometry
from ..core.memory import current_rss, default_memory_limit, format_bytes, memory_bytes
from ..io import dicom, zarr_input
from ..io import files as io
from ..io.layout import voxel_layout
from ..io.slabs import open_slabs

# Slabs per volume at least (so reading overlaps filtering and progress moves).
MIN_SLABS = 8
READ_AHEAD = 2      # slabs read ahead of the one being worked on (bigvolume.engine.loop)
FIXED_OVERHEAD = 24 * 2**20  # decompression chunks, thread stacks, the output block in flight
IN_MEMORY_BUFFERS = 2 * 2**30  # slab buffers a run over an array in memory may add to what the process holds
# A resample of an array in memory holds little beside it: buffers of a tenth of the array, at least 64 MiB
# (512^3 uint16 at x4: 64 MiB runs at 0.8x the speed of 2 GiB, 32 MiB at 0.15x; the command's goal: 0.2x the input).
IN_MEMORY_BUFFER_SHARE = 0.1
IN_MEMORY_MIN_BUFFERS = 64 * 2**20

def should_stream(asked: bool | None, reads_in_slabs: bool, needed_bytes: int, memory_limit: int,
                  can_stream: bool = True) -> bool:
    """The one rule: stream when asked (and the file allows it), or, by default, when the operation can stream and
    holding the input and output (``needed_bytes``) would exceed ``memory_limit``."""
    if asked is None:
        return reads_in_slabs and can_stream and needed_bytes > memory_limit
    return bool(asked) and reads_in_slabs


def read_whole_note(path, why: str, needed_bytes: int, memory_limit: int) -> str:
    """What a run that reads its input whole says, before the work, when that does not fit the limit."""
    if needed_bytes <= memory_limit:
        return ""
    return (f"{path}: reading it whole ({why}) needs about {format_bytes(needed_bytes)}, more than the memory "
            f"limit {format_bytes(memory_limit)}")


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
        return should_stream(self.stream, self.reads_in_slabs, self._needed(output_bytes), self.memory_limit,
                             can_stream)

    def whole_read_note(self, output_bytes: int | None = None) -> str:
        """The note of a run that reads the input whole (as asked, or as the file must be) over the limit."""
        why = "it cannot be read in slabs" if not self.reads_in_slabs else "as asked"
        return read_whole_note(self.path, why, self._needed(output_bytes), self.memory_limit)

    def _needed(self, output_bytes: int | None) -> int:
        return self.input_bytes + (self.input_bytes if output_bytes is None else output_bytes)


def plan_input(path, *, stream: bool | None = None, memory_limit: float | None = None,
               series: str | None = None) -> InputPlan:
    """Read ``path``'s header (and check its data files) and the memory limit; nothing else is read."""
    path = Path(path)
    if not path.exists():
        raise BigVolumeError(f"{path}: no such file")
    limit = memory_bytes(memory_limit) if memory_limit is not None else default_memory_limit()
    geometry, dtype, components = io.read_geometry(path, series)
    if dicom.accepts(path, series) or zarr_input.accepts(path):
        with open_slabs(path, series) as reader:
            reads_in_slabs = reader.streams
    else:
        layout = voxel_layout(path, dtype, components, geometry.voxel_count)
        # (components on the slow axis, permuted: read whole, so not planned as a stream that would not be one)
        reads_in_slabs = layout is not None and layout.reads_in_slabs
    return InputPlan(path, geometry, np.dtype(dtype), components, reads_in_slabs, limit, memory_limit is None,
                     stream, series)


def in_memory_limit(array_bytes: int | None = None) -> int:
    """The memory limit of a run over an array already in memory: what the process holds plus room for buffers
    (with ``array_bytes``, the array's size: a share of it; else IN_MEMORY_BUFFERS)."""
    if array_bytes is None:
        return current_rss() + IN_MEMORY_BUFFERS
    return current_rss() + max(IN_MEMORY_MIN_BUFFERS, int(IN_MEMORY_BUFFER_SHARE * array_bytes))


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
               max_slab_bytes: int | None = None, min_slabs: int = MIN_SLABS, alignment: int = 1) -> StreamPlan:
    """The largest slab whose buffers (``per_slice`` bytes per slice of the slab, plus ``fixed``), with what the
    process already holds, stay under ``memory_limit``; at least ``min_slabs`` slabs and at most
    ``max_slab_bytes`` input bytes (``slice_bytes`` per slice) per slab. ``alignment`` (a reader's
    ``slab_alignment``: the z size of a Zarr chunk) rounds a slab of at least that many slices down to a multiple
    of it: a slab that cuts a chunk has the chunk decoded once per slab that touches it (reading alone: 3x the time
    for slabs of 48 in chunks of 128, benchmarks/zarr_input.py). A slab smaller than a chunk is kept: growing it to
    a whole chunk past the soft limits (fewer slabs, less overlap of reading and filtering) was slower here.

    A reader that keeps the decoded rest of a chunk row for the next slabs (``alignment.decoded_rows``: Zarr) is
    given room for it first, the slab getting what is left, and told how much it may keep (counted in the plan's
    buffers); where a row does not fit, a quarter of the room goes to slabs, the rest to what is kept, and the reader's
    note (its chunks decoded several times) is the plan's."""
    rows = getattr(alignment, "decoded_rows", None)
    if rows is not None:
        rows.drop_kept()  # (what an earlier pass kept is not this plan's)
        fixed += rows.decode_bytes  # a group of chunks while decoded
    fixed += FIXED_OVERHEAD
    in_use = current_rss()
    slab = (int(memory_limit) - in_use - fixed) // max(1, per_slice)
    note = ""
    if slab < 1:
        slab = 1
        # what does not fit: what the program holds already, or the buffers themselves (--threads 10000: each
        # filter thread has its own; the note blamed the 33 MiB in use beside a 5.9 GiB limit)
        # (a 26000^2 slice: the note blamed threads and kernel windows, whose buffers grow with the slice too)
        held = (f"beside the {format_bytes(in_use)} this program already uses"
                if not in_use < memory_limit < fixed + per_slice
                else f"for these buffers alone: {format_bytes(per_slice)} for one slice of "
                     f"{format_bytes(slice_bytes)}, {format_bytes(fixed)} for threads and kernel windows")
        note = (f"memory limit {format_bytes(memory_limit)} leaves no room {held}; streaming one slice at a time "
                f"(buffers {format_bytes(fixed + per_slice)})")
    slab = min(slab, max(1, -(-slices // min_slabs)), slices)
    if max_slab_bytes:
        slab = min(slab, max(1, max_slab_bytes // max(1, slice_bytes)))
    if alignment > 1 and alignment <= slab < slices:
        slab -= slab % alignment
    slab = int(max(1, slab))
    if rows is not None and alignment > 1 and slab < slices:
        spare = int(memory_limit) - in_use - fixed
        rest = (min(alignment, slices) - 1) * slice_bytes  # the most kept: a row but the slice read
        if slab % alignment and spare - rest >= per_slice:
            slab = min(slab, (spare - rest) // per_slice)
        elif slab % alignment:
            slab = max(1, min(slab, spare // (4 * per_slice)))
        keep = max(0, min(rest, spare - slab * per_slice))  # (whole rows read: none is kept, but halo reads)
        fixed += keep
        note = "; ".join(filter(None, (note, rows.keep_decoded(keep, slab))))
    return StreamPlan(slab, -(-slices // slab), int(fixed + slab * per_slice), int(memory_limit), note)
