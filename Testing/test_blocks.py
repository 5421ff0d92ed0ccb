"""The block/halo API a distributed scheduler drives (bigvolume.engine.stream.resample_block): output blocks computed on
their own, from the input region their kernels read, in any order and in parallel, put together equal the streamed
result (exactly for the tap-by-tap methods; to float rounding for Lanczos, whose BLAS products round with the
matrices' shapes), for every method with per-axis tables, integer and fractional factors, several pixel types,
shapes and anisotropic spacing."""
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import bigvolume as bv
from bigvolume.io import files as io
from bigvolume.testing import quality
from bigvolume.engine.stream import STREAMABLE_METHODS, output_blocks, resample_block, resample_kernels
from bigvolume.io.slabs import open_slabs
from bigvolume.methods.kernels import ResampleKernels


def phantom(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    base = quality.microct_phantom(max(shape))[:shape[0], :shape[1], :shape[2]].astype(np.float64)
    base += rng.normal(0, 300, shape)  # noise: every voxel differs, so a misplaced tap shows
    if dtype == np.float32:
        return (base / 1000.0 - 7.5).astype(np.float32)
    if dtype == np.int16:
        return np.clip(base - 20000, -32768, 32767).astype(np.int16)
    return np.clip(base, 0, 65535).astype(dtype)


CASES = [  # method, factors (I, J, K), dtype, shape (k, j, i), block shape, seed
    ("lanczos", (2, 2, 2), np.uint16, (29, 26, 33), (5, 7, 6), 0),
    ("lanczos", (2.5, 1.5, 3.2), np.float32, (40, 23, 31), (3, 4, 5), 1),
    ("lanczos", (6, 2.2, 4.5), np.int16, (37, 30, 41), (2, 5, 3), 2),
    ("lanczos", (1, 1, 3), np.uint16, (31, 9, 12), (2, 5, 7), 3),
    ("gaussian", (3, 2, 2.5), np.uint16, (30, 25, 28), (4, 5, 6), 4),
    ("mean", (2.5, 3, 1.5), np.float32, (27, 31, 22), (6, 3, 4), 5),
    ("max", (2, 3, 4), np.uint16, (36, 30, 24), (3, 4, 5), 6),
    ("nearest", (1.5, 2, 3.5), np.int16, (33, 20, 25), (4, 4, 4), 7),
]


def assert_equal_to_streamed(method, blocks, streamed):
    if method != "lanczos":
        np.testing.assert_array_equal(blocks, streamed)
    elif streamed.dtype.kind == "f":
        np.testing.assert_allclose(blocks, streamed, rtol=0, atol=4e-7 * float(np.abs(streamed).max()))
    else:
        assert np.abs(blocks.astype(np.int64) - streamed.astype(np.int64)).max() <= 1


def assemble(kernels: ResampleKernels, array: np.ndarray, block_shape, out_dtype, seed: int) -> np.ndarray:
    """Every block computed on its own, in a shuffled order, on three threads at once, then put together."""
    blocks = output_blocks(kernels.output_shape, block_shape)
    random.Random(seed).shuffle(blocks)
    reads = []

    def read_region(region):
        reads.append(region)
        return array[region]

    def one(block):
        return block, resample_block(read_region, kernels, block, out_dtype)

    out = np.full(kernels.output_shape, 7, out_dtype)
    with ThreadPoolExecutor(max_workers=3) as pool:
        for (z, y, x), values in pool.map(one, blocks):
            out[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = values
    assert len(reads) == len(blocks) > 4
    assert sorted(map(str, reads)) == sorted(str(kernels.block(b)[1]) for b in blocks)  # its region, read once
    return out


@pytest.mark.parametrize("method, factors, dtype, shape, block_shape, seed", CASES,
                         ids=[f"{c[0]}-{c[1]}-{np.dtype(c[2]).name}" for c in CASES])
def test_blocks_out_of_order_equal_the_streamed_file(tmp_path, method, factors, dtype, shape, block_shape, seed):
    array = phantom(shape, dtype, seed)
    volume = bv.Volume.from_array(array, spacing=(0.4, 0.9, 2.1), origin=(5.0, -3.0, 12.5))
    path = io.write_volume(volume, tmp_path / "in.nhdr")
    report = bv.resample_file(path, tmp_path / "out.nhdr", factors, method=method, stream=True, memory_limit=1)
    streamed = io.read_volume(tmp_path / "out.nhdr")
    assert report.stream_plan.slab_slices == 1  # one slice at a time: the most different from a block
    with open_slabs(path) as reader:
        kernels = resample_kernels(reader, factors, method)
    blocks = assemble(kernels, array, block_shape, np.dtype(dtype), seed)
    assert_equal_to_streamed(method, blocks, streamed.array)
    assert streamed.geometry.isclose(volume.geometry.downsampled(factors), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", STREAMABLE_METHODS)
def test_float_outputs_and_z_only_blocks_equal_the_in_memory_run(method):
    """z slabs only (what a scheduler over z does first) and float output from integer input."""
    array = phantom((34, 21, 19), np.uint16, 11)
    kernels = ResampleKernels.for_factors(method, array.shape, array.dtype, (2, 1.5, 2.5))
    expected = bv.resample(bv.Volume.from_array(array), (2, 1.5, 2.5), method=method, dtype=np.float32).array
    blocks = assemble(kernels, array, (3,) + kernels.output_shape[1:], np.dtype(np.float32), 12)
    assert_equal_to_streamed(method, blocks, expected)


def test_vector_volume_blocks():
    array = np.random.default_rng(5).integers(0, 255, (20, 18, 22, 3)).astype(np.uint8)
    kernels = ResampleKernels.for_factors("lanczos", array.shape, array.dtype, (2, 2, 2))
    blocks = assemble(kernels, array, (3, 4, 5), np.dtype(np.uint8), 3)
    assert_equal_to_streamed("lanczos", blocks, bv.resample(bv.Volume(array, bv.Geometry((22, 18, 20))), 2).array)


def test_a_block_reads_its_halo_and_no_more():
    """On a large volume a block reads a small part of it: its output range plus the kernel's support."""
    shape = (96, 40, 600)
    kernels = ResampleKernels.for_factors("lanczos", shape, np.float32, (2, 2, 2))
    block_kernels, region = kernels.block(((10, 14), (0, 4), (150, 152)))
    z, x = kernels.z_kernel.index[10:14], kernels.kernels[0].index[150:152]
    # the outputs' span in the input (factor 2 per output) plus one kernel's width of halo
    assert region[0] == slice(int(z.min()), int(z.max()) + 1) and region[0].stop - region[0].start < 4 * 2 + z.shape[1]
    assert region[2] == slice(int(x.min()), int(x.max()) + 1) and region[2].stop - region[2].start < 2 * 2 + x.shape[1]
    assert block_kernels.output_shape == (4, 4, 2)
    array = np.random.default_rng(1).random(shape, np.float32)
    whole = bv.downsample_array(array, 2)
    assert_equal_to_streamed("lanczos", resample_block(lambda r: array[r], kernels, ((10, 14), (0, 4), (150, 152))),
                             whole[10:14, 0:4, 150:152])
    with pytest.raises(ValueError):
        resample_block(lambda r: np.zeros((1, 1, 1), np.float32), kernels, ((0, 2), (0, 2), (0, 2)))
    with pytest.raises(ValueError):
        kernels.block(((0, 2), (0, 2), (299, 301)))
