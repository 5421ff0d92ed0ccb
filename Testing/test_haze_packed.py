"""Level auto's partial-volume test for 8- and 16-bit integers (bigvolume.ops.haze._PackedNeighbourhood, packed
int32 gathers from one box packed on the first call) against the plain float64 version
(_air_neighbourhood_passes): the same answers, for points at the window's edges and corners, on every call of a
dilation (the box reused, or packed again when a call's points leave it), on any number of threads."""
import numpy as np
import pytest

from bigvolume.ops import haze


def _case(dtype, seed: int, shape=(13, 17, 19)):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    voxels = rng.integers(info.min, int(info.max) + 1, size=shape, dtype=np.int64).astype(dtype)
    air = rng.random(shape) < 0.6
    return rng, voxels, air


def _points(rng, shape, count, box=None):
    """Sorted unique flat indices inside ``box`` ((k0, k1), (j0, j1), (i0, i1); the window when None), its two
    extreme corners among them (so the points span the box)."""
    box = box or tuple((0, n) for n in shape)
    coordinates = [np.concatenate([[lo, hi - 1], rng.integers(lo, hi, size=count)]) for lo, hi in box]
    return np.unique(np.ravel_multi_index(coordinates, shape))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("threads", [1, 3])
def test_packed_equals_plain_over_calls(monkeypatch, dtype, seed, threads):
    monkeypatch.setattr(haze, "SMOOTH_THREADS", threads)
    monkeypatch.setattr(haze._PackedNeighbourhood, "CHUNK_SLICES", 4)  # several chunks in a small window
    rng, voxels, air = _case(dtype, seed)
    shape = voxels.shape
    floor = float(np.median(voxels))
    packed = haze._PackedNeighbourhood(voxels, ~air, floor, margin=1)
    # a first call inside, a second one voxel further out (the box serves it), a third over the whole window
    # (packed again), a fourth inside again
    boxes = [((3, 9), (4, 12), (5, 14)), ((2, 10), (3, 13), (4, 15)), None, ((5, 7), (0, 17), (0, 3))]
    for box in boxes:
        points = _points(rng, shape, 300, box)
        expected = haze._air_neighbourhood_passes(voxels, air, points, floor)
        assert np.array_equal(packed(points), expected)
        assert 0 < np.count_nonzero(expected) < points.size  # the floor splits the points: both answers tested
    assert packed.box[0] == (0, 0, 0) and packed.box[1] == tuple(n - 1 for n in shape)  # (packed again)


def test_packed_box_is_reused_within_its_margin():
    rng, voxels, air = _case(np.uint16, 5)
    packed = haze._PackedNeighbourhood(voxels, ~air, 30000.0, margin=2)
    packed(_points(rng, voxels.shape, 50, ((4, 8), (5, 10), (6, 12))))
    first = packed.box
    packed(_points(rng, voxels.shape, 50, ((2, 10), (3, 12), (4, 14))))
    assert packed.box is first


def test_scratch_buffer_shared_by_windows():
    """The windows of one pass pack into one buffer: a smaller window after a larger one, then a larger one again."""
    scratch = {}
    for seed, shape in ((7, (13, 17, 19)), (8, (6, 9, 11)), (9, (15, 20, 21))):
        rng, voxels, air = _case(np.int16, seed, shape)
        packed = haze._PackedNeighbourhood(voxels, ~air, 0.0, margin=1, scratch=scratch)
        for _ in range(2):
            points = _points(rng, shape, 200)
            assert np.array_equal(packed(points), haze._air_neighbourhood_passes(voxels, air, points, 0.0))
    assert scratch["packed"].size >= 17 * 22 * 23  # (the largest box, edges included)
