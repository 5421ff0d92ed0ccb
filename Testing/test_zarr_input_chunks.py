"""Zarr input whose chunks are deeper (in z) than the slabs read from it (bigvolume.io.zarr_input.ZarrSlabReader and
the planner, bigvolume.engine.plan.plan_slabs): each chunk is decoded about once per pass, what the reader keeps for
that is counted in the plan and bounded by it, a chunk row too large for the limit is said, and the voxels are those
of the same volume read from a raw NHDR. Decodes are counted at the store (each chunk file, or inner chunk of a
shard, fetched), not by the reader's own word."""
import collections

import numpy as np
import pytest

import bigvolume as bv
from bigvolume.core.geometry import Geometry
from bigvolume.core.memory import current_rss, format_bytes
from bigvolume.core.volume import Volume
from bigvolume.engine.plan import plan_slabs
from bigvolume.engine.stream import estimate_stream
from bigvolume.io.slabs import open_slabs
from bigvolume.ops.precision import subsample

zarr = pytest.importorskip("zarr")
from zarr_stores import write_store  # noqa: E402  (needs zarr)

pytestmark = pytest.mark.core

SHAPE = (64, 40, 36)  # k j i: the engine's slabs are at most 8 slices here (8 slabs at least)
METADATA = (".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json")


def volume_array(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).integers(0, 60000, shape, dtype=np.uint16)


def plain_array(path, array, chunks, shards=None):
    """A plain Zarr v3 array (no OME-Zarr metadata: a unit grid at the origin), as the measured stores were."""
    stored = zarr.create_array(str(path), shape=array.shape, chunks=chunks, shards=shards, dtype=array.dtype,
                               zarr_format=3, overwrite=True)
    stored[...] = array
    return path


def chunk_count(shape, chunks):
    return int(np.prod([-(-n // c) for n, c in zip(shape, chunks)]))


@pytest.fixture
def fetched(monkeypatch):
    """Chunks fetched from the store (a chunk file, or an inner chunk of a shard; not metadata, not shard indexes),
    counted per key and byte range."""
    from zarr.abc.store import SuffixByteRequest
    from zarr.storage import LocalStore

    counts = collections.Counter()
    get = LocalStore.get

    async def counting_get(self, key, prototype=None, byte_range=None):
        if not key.rsplit("/", 1)[-1] in METADATA and not isinstance(byte_range, SuffixByteRequest):
            counts[(key, repr(byte_range))] += 1
        return await get(self, key, prototype, byte_range)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    return counts


# (chunks, shards): deeper than the engine's 8-slice slabs, as deep, shallower, the whole z (the measured case),
# sharded (inner chunks deeper than a slab), an odd depth that no slab divides
CHUNKINGS = {
    "deeper": ((32, 16, 16), None),
    "equal": ((8, 16, 16), None),
    "shallower": ((4, 40, 36), None),
    "whole-z": ((64, 16, 16), None),
    "odd": ((13, 24, 20), None),
    "sharded": ((16, 16, 16), (32, 32, 32)),
}


@pytest.mark.parametrize("name", list(CHUNKINGS))
def test_streamed_resample_decodes_each_chunk_once_and_equals_raw(tmp_path, fetched, name):
    chunks, shards = CHUNKINGS[name]
    array = volume_array()
    store = plain_array(tmp_path / "v.zarr", array, chunks, shards)
    raw = tmp_path / "raw.nhdr"
    bv.write_volume(Volume(array, Geometry(SHAPE[::-1])), raw)
    fetched.clear()
    report = bv.resample_file(store, tmp_path / "z.nrrd", 2, stream=True)
    assert report.stream_plan.slab_slices <= 8 and not report.stream_plan.note
    assert sum(fetched.values()) == chunk_count(SHAPE, chunks)  # (was once per slab touching a chunk: 4x for 32)
    assert max(fetched.values()) == 1
    bv.resample_file(raw, tmp_path / "r.nrrd", 2, stream=True)  # (slabs of 8 too: Lanczos rounds with their size)
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "z.nrrd").array, bv.read_volume(tmp_path / "r.nrrd").array)


@pytest.mark.parametrize("version, chunks, shards", [("0.4", 16, None), ("0.5", 16, None), ("0.5", 8, (32, 32, 32))])
def test_ome_zarr_slabs_smaller_than_chunks_read_each_chunk_once(tmp_path, fetched, version, chunks, shards):
    """OME-Zarr 0.4 (Zarr v2), 0.5, sharded 0.5, with a channel axis: slabs of 3 slices, each chunk fetched once,
    the voxels as written."""
    array = np.random.default_rng(2).integers(0, 255, (40, 21, 30, 2), dtype=np.uint8)
    geometry = Geometry((30, 21, 40), (0.5, 0.5, 1.5))
    store = write_store(tmp_path / "x.ome.zarr", array, geometry, version=version, chunks=chunks, factors=(),
                        shards=shards)
    fetched.clear()
    with open_slabs(store) as reader:
        got = np.concatenate([reader.read(k, min(k + 3, 40)) for k in range(0, 40, 3)])
    np.testing.assert_array_equal(got, array)
    assert max(fetched.values()) == 1  # (slabs of 3 in chunks of 16: each fetched 5 or 6 times)
    assert sum(fetched.values()) == chunk_count((40, 21, 30), (chunks,) * 3)  # (both channels in one chunk)


@pytest.mark.parametrize("step", [2, 5, 9])
@pytest.mark.parametrize("chunks", [(32, 16, 16), (64, 40, 36), (5, 8, 8)])
def test_a_sample_of_every_nth_slice_decodes_each_chunk_about_once(tmp_path, fetched, chunks, step):
    """precision.subsample (reduce-bits, dehaze) reads one slice at a time with a step: a chunk of 32 was decoded
    for each of its sampled slices (16 times at step 2)."""
    array = volume_array(seed=step)
    store = plain_array(tmp_path / "s.zarr", array, chunks)
    fetched.clear()
    with open_slabs(store) as reader:
        sample = subsample(reader, -(-array.size // step ** 3))
    np.testing.assert_array_equal(sample, array[::step, ::step, ::step])
    total = chunk_count(SHAPE, chunks)
    tiles = chunk_count(SHAPE[1:], chunks[1:])
    # the first row may be decoded twice (the step is seen from the second read on)
    assert sum(fetched.values()) <= total + tiles


@pytest.mark.parametrize("slab, keep", [(1, 0), (3, 5), (5, 20), (7, 63)])
@pytest.mark.parametrize("chunks", [(64, 16, 16), (24, 40, 36)])
def test_what_is_kept_is_bounded_and_decodes_follow_from_it(tmp_path, fetched, chunks, slab, keep):
    """With room for ``keep`` slices, a chunk row of depth d is decoded about d / (slab + keep) times a pass; no
    more is kept than the room, and the voxels are right."""
    array = volume_array(seed=slab)
    store = plain_array(tmp_path / "k.zarr", array, chunks)
    fetched.clear()
    with open_slabs(store) as reader:
        reader.keep_decoded(keep * reader.slice_bytes, slab)
        parts = []
        for k in range(0, SHAPE[0], slab):
            parts.append(reader.read(k, min(k + slab, SHAPE[0])).copy())
            held = reader._kept.array.nbytes if reader._kept is not None else 0
            assert held <= reader.keep_bytes
    np.testing.assert_array_equal(np.concatenate(parts), array)
    depth, rows = chunks[0], -(-SHAPE[0] // chunks[0])
    whole_slabs = keep - keep % slab if keep >= slab else keep  # (what is kept: whole slabs)
    passes = rows * (-(-depth // (slab + whole_slabs)) + 1)  # (+1: a slab across two rows)
    assert sum(fetched.values()) <= passes * chunk_count(SHAPE[1:], chunks[1:])
    if keep >= depth - 1:
        assert max(fetched.values()) == 1


def test_the_plan_counts_what_the_reader_keeps(tmp_path):
    """The room for a chunk row's rest comes before the slab's and is in the plan's buffers; without that room,
    the row's rest is not kept in full and the plan says so (naming the store, the chunk, the row's bytes)."""
    array = volume_array((64, 128, 128))
    store = plain_array(tmp_path / "p.zarr", array, (64, 64, 64))
    with open_slabs(store) as reader:
        rest = 63 * reader.slice_bytes
        per_slice = 4 * reader.slice_bytes
        room = 2**30
        plan = plan_slabs(64, reader.slice_bytes, per_slice, 0, current_rss() + room,
                          alignment=reader.slab_alignment)
        assert plan.slab_slices == 8 and reader.keep_bytes == rest and not plan.note
        assert plan.working_bytes >= reader.keep_bytes + reader.decode_bytes + 8 * per_slice
        # Room for the buffers and a few slices more, not for the rest of a row
        tight = current_rss() + plan.working_bytes - rest + 6 * reader.slice_bytes
        plan = plan_slabs(64, reader.slice_bytes, per_slice, 0, tight, alignment=reader.slab_alignment)
        assert 0 < reader.keep_bytes < rest
        assert plan.working_bytes >= reader.keep_bytes + plan.slab_slices * per_slice
        assert str(store) in plan.note and "64x64x64" in plan.note
        assert format_bytes(reader.chunk_row_bytes) in plan.note and "decoded about" in plan.note


def test_a_chunk_row_larger_than_the_limit_is_said_and_read_right(tmp_path, fetched):
    """Whole-z chunks of a volume whose row does not fit beside the buffers: said before the work, decoded a few
    chunks at a time as often as needed (bounded memory), the result that of the raw volume."""
    array = volume_array((48, 512, 512))
    store = plain_array(tmp_path / "w.zarr", array, (48, 64, 64))
    raw = tmp_path / "raw.nhdr"
    bv.write_volume(Volume(array, Geometry((512, 512, 48))), raw)
    # (max: exact whatever the slabs; Lanczos rounds with their size, and the raw volume's slabs are larger)
    bv.resample_file(raw, tmp_path / "r.nrrd", 2, stream=True, method="max")
    bv.resample_file(store, tmp_path / "z.nrrd", 2, stream=True, method="max")  # (what a run imports, held)
    # A limit with room for the buffers of one slice, not for the row's rest: midway between the two
    with open_slabs(store) as reader:
        def says(extra):
            note = estimate_stream(reader, (2, 2, 2), "max", memory_limit=current_rss() + extra * 2**20).note
            return "decodes to" in note and "no room" not in note
        fitting = [extra for extra in range(0, 400, 2) if says(extra)]
    assert fitting
    fetched.clear()
    report = bv.resample_file(store, tmp_path / "z.nrrd", 2, stream=True, method="max",
                              memory_limit=current_rss() + (fitting[0] + fitting[-1]) // 2 * 2**20)
    note = report.stream_plan.note
    assert "decodes to" in note and "48x64x64" in note and str(store) in note and "no room" not in note
    assert format_bytes(48 * 512 * 512 * 2) in note
    assert sum(fetched.values()) > chunk_count((48, 512, 512), (48, 64, 64))  # decoded more than once, as said
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "z.nrrd").array, bv.read_volume(tmp_path / "r.nrrd").array)
