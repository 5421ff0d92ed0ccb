"""Level auto's partial-volume test for 8- and 16-bit integers (bigvolume.ops.haze.morphology.PackedNeighbourhood:
int32 gathers from boxes of packed voxels round each chunk's points) against the plain float64 version
(air_neighbourhood_passes): the same answers, for points inside the window, at its edges and corners and over all
of it, in one chunk of slices or several, on any number of threads."""
import numpy as np
import pytest

from bigvolume.ops.haze import denoise, morphology


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
def test_packed_equals_plain(monkeypatch, dtype, seed, threads):
    monkeypatch.setattr(denoise, "SMOOTH_THREADS", threads)
    assert morphology.on_threads.__globals__["SMOOTH_THREADS"] == threads  # the module the threads are read from
    monkeypatch.setattr(morphology.PackedNeighbourhood, "CHUNK_SLICES", 4)  # several chunks in a small window
    rng, voxels, air = _case(dtype, seed)
    shape = voxels.shape
    floor = float(np.median(voxels))
    packed = morphology.PackedNeighbourhood(voxels, air, floor)
    # inside, over the whole window (its edges and corners), in one chunk, at the last slice
    boxes = [((3, 9), (4, 12), (5, 14)), None, ((5, 7), (0, 17), (0, 3)), ((12, 13), (0, 17), (10, 19))]
    for box in boxes:
        points = _points(rng, shape, 300, box)
        expected = morphology.air_neighbourhood_passes(voxels, air, points, floor)
        assert np.array_equal(packed(points), expected)
        assert 0 < np.count_nonzero(expected) < points.size  # the floor splits the points: both answers tested

