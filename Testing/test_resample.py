"""Resampling of in-memory volumes: geometry through real data, types, ranges, quality against the ideal."""
import numpy as np
import pytest

import bigvolume as bv
from bigvolume.testing import quality
from bigvolume.methods.kernels import apply_separable, axis_kernel
from bigvolume.testing.phantoms import gaussian_blob

LINEAR_METHODS = ["lanczos", "gaussian", "mean", "fft"]


def centre_of_mass(volume: bv.Volume) -> np.ndarray:
    weights = volume.array.astype(np.float64)
    k, j, i = np.indices(weights.shape)
    ijk = np.array([(w * weights).sum() for w in (i, j, k)]) / weights.sum()
    return volume.geometry.physical_point(ijk)


@pytest.mark.parametrize("method", LINEAR_METHODS)
@pytest.mark.parametrize("factors", [4, 3, 2.5, (2, 3, 1.5)])
def test_blob_centre_of_mass_does_not_move(method, factors):
    geometry = bv.Geometry((60, 52, 44), (0.8, 0.5, 1.7), (-20.0, 13.0, 7.5),
                           np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1.0]]))
    volume = bv.Volume(gaussian_blob(geometry.shape, centre=(21.3, 27.9, 30.2), sigma=4.0), geometry)
    out = bv.resample(volume, factors, method=method)
    shift = np.linalg.norm(centre_of_mass(out) - centre_of_mass(volume))
    assert shift < 0.02 * min(out.geometry.spacing)


@pytest.mark.parametrize("method, tolerance", [("gaussian", 1e-3), ("lanczos", 0.02)])
@pytest.mark.parametrize("factor", [1.1, 1.25, 1.3, 1.45, 1.6, 1.9, 2.7])
def test_a_ramp_resampled_at_a_fractional_factor_reads_each_output_voxels_position(method, tolerance, factor):
    """Values equal to the position along an axis come out as the output voxel's position (away from the ends).
    The Gaussian sampled at sub-voxel offsets drifted towards the nearest input voxel when its sigma is below a
    voxel: up to 0.33 voxel at factor 1.1, 0.13 at 1.3, a jittering grid; now blur then linear interpolation."""
    n = 120
    ramp = np.broadcast_to(np.arange(n, dtype=np.float64), (6, 6, n)).copy()  # x = the voxel's I index
    out = bv.resample(bv.Volume.from_array(ramp), (factor, 1, 1), method=method)
    centres = np.array([out.geometry.physical_point((i, 0, 0))[0] for i in range(out.array.shape[2])])
    inner = slice(int(12 / factor), -int(12 / factor))  # beyond the kernels' reach from the clamped ends
    assert np.abs(out.array[3, 3, inner] - centres[inner]).max() < tolerance


@pytest.mark.parametrize("method", list(bv.METHODS))
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.float32,
                                   np.float64])
def test_constant_volume_stays_constant_and_keeps_its_type(method, dtype):
    value = np.array(100, dtype=dtype)
    volume = bv.Volume.from_array(np.full((20, 24, 28), value, dtype=dtype), spacing=(1, 2, 3))
    out = bv.resample(volume, 3, method=method)
    assert out.array.dtype == np.dtype(dtype)
    assert out.array.shape == out.geometry.shape == (7, 8, 9)
    np.testing.assert_allclose(out.array, value, rtol=1e-6)


@pytest.mark.parametrize("method", ["lanczos", "gaussian"])  # fft is periodic: its ends see the wrap by design
def test_integer_ringing_is_clamped_not_wrapped(method):
    array = np.zeros((24, 24, 48), np.uint8)
    array[:, :, 23:] = 255  # a hard edge, farther from both ends than the kernel reaches: sinc kernels overshoot
    out = bv.resample(bv.Volume.from_array(array), (2.5, 1, 1), method=method).array
    row = out[5, 5].astype(int)
    assert row[0] <= 2 and row[-1] >= 253  # far from the edge: no wrap-around to the other end of the range
    assert np.all(np.diff(row[row.size // 2:]) > -40)  # no 255 -> 0 jumps after the edge


def test_float_output_is_not_clamped():
    array = np.zeros((24, 24, 24), np.float32)
    array[:, :, 11:] = 1.0
    out = bv.resample(bv.Volume.from_array(array), (2.5, 1, 1)).array
    assert out.min() < 0 and out.max() > 1  # ringing preserved in floats: the values users rely on are untouched


@pytest.mark.parametrize("method", list(bv.METHODS))
def test_rgb_volume_equals_per_component_processing(method):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 22, 24, 3), dtype=np.uint8)
    out = bv.resample(bv.Volume.from_array(rgb, spacing=(0.5, 0.5, 1.0)), 2, method=method)
    assert out.array.shape == (10, 11, 12, 3) and out.array.dtype == np.uint8
    for c in range(3):
        single = bv.resample(bv.Volume.from_array(np.ascontiguousarray(rgb[..., c])), 2, method=method).array
        np.testing.assert_allclose(out.array[..., c].astype(int), single.astype(int), atol=1)


def test_input_is_never_modified():
    array = quality.microct_phantom(48)
    before = array.copy()
    array.setflags(write=False)  # any write attempt would raise
    for method in bv.METHODS:
        bv.resample(bv.Volume.from_array(array), 3, method=method)
    np.testing.assert_array_equal(array, before)


@pytest.fixture(scope="module")
def zone_plate_scores():
    array = quality.zone_plate(128)
    ideal = quality.ideal_downsample(array, 4)
    limited = quality.band_limited_input(array, 4)
    scores = {}
    for method in bv.METHODS:
        def run(x, m=method):
            return bv.downsample_array(x, 4, m)
        scores[method] = (quality.psnr(run(array), ideal), quality.aliasing_share(run, array, 4, limited))
    return scores


def test_default_beats_decimation_by_15_db_on_the_zone_plate(zone_plate_scores):
    default_psnr, default_alias = zone_plate_scores[bv.DEFAULT_METHOD]
    decimation_psnr, decimation_alias = zone_plate_scores["nearest"]
    assert default_psnr >= decimation_psnr + 15
    assert default_alias <= 0.08
    assert decimation_alias > 0.5


def test_every_method_is_scored_and_ranked(zone_plate_scores):
    psnr = {m: s[0] for m, s in zone_plate_scores.items()}
    assert psnr["fft"] > 100  # the reference scores itself perfectly
    assert psnr["lanczos"] > psnr["gaussian"] > psnr["nearest"]
    assert psnr["mean"] > psnr["nearest"]
    assert psnr["max"] < psnr["mean"]  # max is for thin bright structures, not fidelity
    alias = {m: s[1] for m, s in zone_plate_scores.items()}
    assert alias["fft"] < 1e-3 and alias["lanczos"] < alias["gaussian"] < alias["mean"] < alias["nearest"]


def test_default_beats_raw_vtk_resize_on_its_own_grid():
    import vtk
    from bigvolume.methods.vtk_resize import array_to_vtk_image, vtk_image_to_array
    array = quality.zone_plate(128)
    raw = vtk.vtkImageResize()  # its defaults: first and last voxel centres kept
    raw.SetInputData(array_to_vtk_image(array))
    raw.SetOutputDimensions(32, 32, 32)
    raw.Update()
    raw_factor = 127 / 31  # its spacing: the ideal for its grid cuts at its own Nyquist
    raw_ideal = quality.ideal_downsample(array, raw_factor, [np.arange(32) * raw_factor] * 3)
    raw_psnr = quality.psnr(vtk_image_to_array(raw.GetOutput()), raw_ideal)
    ours = quality.psnr(bv.downsample_array(array, 4), quality.ideal_downsample(array, 4))
    assert ours >= raw_psnr


def test_smooth_data_with_noise_scores_above_50_db():
    array = quality.smooth_noise((96, 96, 96))
    assert quality.psnr(bv.downsample_array(array, 4), quality.ideal_downsample(array, 4)) >= 50


def test_max_keeps_a_thin_bright_line():
    array = np.zeros((32, 32, 32), np.uint16)
    array[:, 13, 17] = 1000  # a one-voxel vessel along K
    out = bv.resample(bv.Volume.from_array(array), 4, method="max").array
    assert out.max() == 1000 and np.count_nonzero(out == 1000) == 8
    assert bv.resample(bv.Volume.from_array(array), 4, method="mean").array.max() < 100


@pytest.mark.parametrize("factors", [(1, 1, 3), (3, 2, 4), (2, 2, 2)])
def test_max_is_the_maximum_of_each_block(factors):
    """Integer factors: each output voxel is exactly the maximum of its block, never of a neighbour's voxel."""
    array = np.random.default_rng(3).integers(0, 60000, (36, 30, 24)).astype(np.uint16)
    fi, fj, fk = factors
    blocks = array.reshape(36 // fk, fk, 30 // fj, fj, 24 // fi, fi).max(axis=(1, 3, 5))
    np.testing.assert_array_equal(bv.downsample_array(array, factors, method="max"), blocks)


def test_numpy_lanczos_kernel_matches_vtk():
    """The separable tables reproduce vtkImageResize's kernel: the basis of the streaming and GPU paths."""
    array = quality.zone_plate(64)
    for factors in [(4, 4, 4), (2.5, 3, 1.5)]:
        dims = bv.Geometry(array.shape[::-1]).downsampled(factors).dimensions
        kernels = tuple(axis_kernel("lanczos", n, f, m) for n, f, m in zip(array.shape[::-1], factors, dims))
        oracle = bv.downsample_array(array, factors, backend="vtk")
        np.testing.assert_allclose(apply_separable(array, kernels), oracle, atol=1e-5)
        np.testing.assert_allclose(bv.downsample_array(array, factors), oracle, atol=1e-5)  # the default backend


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int16, np.uint8])
@pytest.mark.parametrize("factors", [(2, 2, 2), (4, 4, 4), (2.5, 1.5, 3.2), (1, 2, 4), (6, 2.2, 4.5), (1.9, 2.3, 2.4),
                                     (3.3, 4.6, 1)], ids=str)
def test_default_backend_equals_the_vtk_oracle(dtype, factors):
    """The default (numpy/BLAS band products on the slab engine) against vtkImageResize: within float rounding
    (integers within 1), on an odd-shaped phantom with plenty of high frequencies, several types and factors."""
    base = quality.microct_phantom(37)[:23, :31, :37].astype(np.float64)
    array = (base / base.max() * (200 if dtype == np.uint8 else 30000) - (10000 if dtype == np.int16 else 0))
    array = array.astype(dtype)
    volume = bv.Volume.from_array(array, spacing=(0.5, 0.7, 1.1), origin=(3.0, -2.0, 10.0))
    ours, oracle = bv.resample(volume, factors), bv.resample(volume, factors, backend="vtk")
    assert ours.geometry == oracle.geometry and ours.array.dtype == oracle.array.dtype == dtype
    difference = np.abs(ours.array.astype(np.float64) - oracle.array.astype(np.float64)).max()
    assert difference <= (1 if dtype != np.float32 else 1e-4 * float(np.ptp(array)))


def test_backends_are_checked():
    array = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(bv.BigVolumeError, match="unknown backend"):
        bv.downsample_array(array, 2, backend="opencl")
    with pytest.raises(bv.BigVolumeError, match="lanczos method only"):
        bv.downsample_array(array, 2, "mean", backend="vtk")


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_vtk_backend_refuses_64_bit_integers_before_reading(tmp_path, dtype):
    """VTK's sinc interpolator has no 64-bit integers: it only warns, and leaves the output unset (zeros)."""
    array = np.full((16, 16, 16), 1000, dtype)
    with pytest.raises(bv.BigVolumeError, match=f"backend vtk cannot filter {np.dtype(dtype)} voxels"):
        bv.resample(bv.Volume.from_array(array), 2, backend="vtk")
    path = bv.write_volume(bv.Volume.from_array(array), tmp_path / "in.nrrd")
    with pytest.raises(bv.BigVolumeError, match="backend vtk cannot filter"):
        bv.resample_file(path, tmp_path / "out.nrrd", 2, backend="vtk")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]
    # filtered as float64 (a float output), vtk has the type it needs; the default backend takes any type
    as_float = bv.resample_file(path, tmp_path / "float.nrrd", 2, backend="vtk", dtype="float64").output_path
    np.testing.assert_allclose(bv.read_volume(as_float).array, 1000)
    bv.resample_file(path, tmp_path / "default.nrrd", 2)
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "default.nrrd").array, np.full((8, 8, 8), 1000, dtype))


@pytest.mark.parametrize("method, backend", [("lanczos", None), ("mean", None), ("lanczos", "vtk")])
def test_threads_do_not_change_the_result(method, backend):
    array = quality.microct_phantom(40)
    one = bv.downsample_array(array, 3, method, threads=1, backend=backend)
    np.testing.assert_array_equal(one, bv.downsample_array(array, 3, method, threads=2, backend=backend))


@pytest.mark.parametrize("method, backend", [("lanczos", None), ("gaussian", None), ("lanczos", "vtk")])
def test_progress_reports_and_cancel_raises(method, backend):
    array = quality.microct_phantom(64)
    seen = []
    bv.downsample_array(array, 2, method, progress=lambda f, m: seen.append(f), backend=backend)
    assert seen and seen[-1] == pytest.approx(1.0) and all(0 <= f <= 1 for f in seen)
    with pytest.raises(bv.Cancelled):
        bv.downsample_array(array, 2, method, progress=lambda f, m: False, backend=backend)


def test_choosing_the_grid():
    volume = bv.Volume.from_array(np.zeros((50, 200, 200), np.int16), spacing=(0.5, 0.5, 2.0))
    assert bv.resample(volume, spacing=(1.0, 1.0, 4.0)).geometry.spacing == (1.0, 1.0, 4.0)
    assert bv.resample(volume, 2, isotropic=True).geometry.spacing == (1.0, 1.0, 2.0)
    small = bv.resample(volume, target_bytes=20_000)
    assert small.array.nbytes <= 20_000
    with pytest.raises(bv.BigVolumeError, match="only one"):
        bv.resample(volume, 2, spacing=(1, 1, 4))
    with pytest.raises(bv.BigVolumeError, match="unknown method"):
        bv.resample(volume, 2, method="bicubic")


def test_output_type_option_rounds_and_clamps():
    array = np.linspace(-10, 300, 20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20)
    out = bv.resample(bv.Volume.from_array(array), 2, dtype=np.uint8, method="mean").array
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    as_float = bv.resample(bv.Volume.from_array(np.full((8, 8, 8), 7, np.uint16)), 2, dtype="float32").array
    assert as_float.dtype == np.float32 and np.allclose(as_float, 7)


WIDE_INTEGERS = [np.int32, np.uint32, np.int64, np.uint64]


@pytest.mark.parametrize("stream", [False, True], ids=["in memory", "streamed"])
@pytest.mark.parametrize("method", ["lanczos", "gaussian", "mean", "nearest"])
@pytest.mark.parametrize("dtype", WIDE_INTEGERS)
def test_wide_integers_at_the_ends_of_their_range_stay_there(tmp_path, dtype, method, stream):
    """Filtered in float64, whose nearest value to int64's (uint64's) maximum is 2**63 (2**64): clamped below it,
    never wrapped to the other end. 64-bit ends lie beyond 2^48, where the filters are refused (nearest picks)."""
    info = np.iinfo(dtype)
    for end in (info.min, info.max):
        path = bv.write_volume(bv.Volume.from_array(np.full((8, 8, 8), end, dtype)), tmp_path / "in.nrrd")
        if np.dtype(dtype).itemsize == 8 and method != "nearest" and end != 0:
            with pytest.raises(bv.BigVolumeError, match="beyond 2\\^48"):
                bv.resample_file(path, tmp_path / "out.nrrd", 2, method=method, stream=stream, memory_limit=1)
            continue
        bv.resample_file(path, tmp_path / "out.nrrd", 2, method=method, stream=stream, memory_limit=1)
        out = bv.read_volume(tmp_path / "out.nrrd").array
        assert out.dtype == np.dtype(dtype)
        # float64 holds 53 bits: within a few of its steps of the end (a kernel's weights sum to 1 +- rounding)
        steps = 8 * abs(np.spacing(np.float64(end)))
        assert np.abs(out.astype(np.float64) - float(end)).max() <= steps, (end, np.unique(out))


@pytest.mark.parametrize("stream", [False, True], ids=["in memory", "streamed"])
@pytest.mark.parametrize("dtype", WIDE_INTEGERS + [np.int16, np.uint8])
def test_output_type_clamps_values_beyond_its_range_and_makes_nan_0(tmp_path, dtype, stream):
    info = np.iinfo(dtype)
    for value, expected in ((1e30, info.max), (-1e30, info.min), (np.nan, 0)):
        path = bv.write_volume(bv.Volume.from_array(np.full((8, 8, 8), value, np.float32)), tmp_path / "in.nrrd")
        bv.resample_file(path, tmp_path / "out.nrrd", 2, method="mean", dtype=dtype, stream=stream, memory_limit=1)
        out = bv.read_volume(tmp_path / "out.nrrd").array
        # exactly the type's end, though the float32 filter cannot hold int32's maximum (its nearest is 2**31 - 128)
        assert out.dtype == np.dtype(dtype) and np.all(out == expected), (value, np.unique(out))


@pytest.mark.parametrize("method", list(bv.METHODS))
def test_thin_volumes(method):
    single = bv.resample(bv.Volume.from_array(np.ones((1, 40, 30), np.float32), spacing=(1, 1, 3)), 4, method=method)
    assert single.array.shape == (1, 10, 8) and single.geometry.spacing == (4.0, 4.0, 3.0)
    assert single.geometry.origin == (1.5, 1.5, 0.0)  # a 2D image stays in its plane
    two = bv.resample(bv.Volume.from_array(np.ones((2, 3, 30), np.int16)), 4, method=method)
    assert two.array.shape == (1, 1, 8) and np.all(two.array == 1)


@pytest.mark.parametrize("method", ["lanczos", "mean", "nearest"])
@pytest.mark.parametrize("n, factor", [(2, 4), (3, 8), (3, 3.4), (5, 6), (4, 100)])
def test_an_axis_shorter_than_its_factor_keeps_one_voxel_at_its_middle(method, n, factor):
    """Its one output voxel covers the data: factor n on that axis, centred on the middle voxel (the block-centred
    voxel of factor 8 on 3 voxels sat 3.5 voxels in, beyond the data)."""
    spacing, origin = (0.5, 0.8, 1.5), (10.0, -4.0, 2.5)
    ramp = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 24, 30)).copy()  # k = 0..n-1
    result = bv.resample(bv.Volume.from_array(ramp, spacing=spacing, origin=origin), factor, method=method)
    assert result.array.shape == (1, round(24 / factor) or 1, round(30 / factor) or 1)
    assert result.geometry.spacing[2] == pytest.approx(n * 1.5)
    assert result.geometry.origin[2] == pytest.approx(2.5 + (n - 1) / 2 * 1.5)
    middle = result.array[0, result.array.shape[1] // 2, result.array.shape[2] // 2]
    assert abs(middle - (n - 1) / 2) <= (0.5 if method == "nearest" else 1e-3)


def nan_volume(seed: int, shape, kind: str) -> np.ndarray:
    """float32 noise with NaN: a few scattered voxels (one on a corner), or outside a circular field of view."""
    rng = np.random.default_rng(seed)
    array = rng.normal(100, 5, shape).astype(np.float32)
    if kind == "voxels":
        for _ in range(3):
            array[tuple(int(rng.integers(n)) for n in shape)] = np.nan
        array[0, -1, 0] = np.nan
    else:
        _, j, i = np.ogrid[:shape[0], :shape[1], :shape[2]]
        array[np.broadcast_to((j - shape[1] / 2) ** 2 + (i - shape[2] / 2) ** 2 > (0.42 * min(shape[1:])) ** 2,
                              shape)] = np.nan
    return array


def nan_reach(array: np.ndarray, factors) -> np.ndarray:
    """The outputs whose Lanczos taps read a NaN input: along each axis, the rows of the kernel table whose tap
    range holds the voxel (whatever the tap's weight: NaN x 0 is NaN)."""
    from bigvolume.methods.kernels import ResampleKernels
    tables = ResampleKernels.for_factors("lanczos", array.shape, array.dtype, factors).kernels[::-1]  # k, j, i
    reach = np.isnan(array).astype(np.float64)
    for axis, table in enumerate(tables):
        inputs = np.arange(array.shape[axis])
        reads = (table.index.min(axis=1)[:, None] <= inputs) & (inputs <= table.index.max(axis=1)[:, None])
        reach = np.moveaxis(np.tensordot(reads.astype(np.float64), reach, axes=([1], [axis])), 0, axis)
    return reach > 0


def block_reach(array: np.ndarray, factors, method: str) -> np.ndarray:
    """The outputs whose block (the taps of non-zero weight: what mean and max define) holds a NaN input."""
    from bigvolume.methods.kernels import ResampleKernels
    tables = ResampleKernels.for_factors(method, array.shape, array.dtype, factors).kernels[::-1]  # k, j, i
    reach = np.isnan(array).astype(np.float64)
    for axis, table in enumerate(tables):
        reads = np.zeros((table.size_out, array.shape[axis]))
        rows = np.repeat(np.arange(table.size_out), table.index.shape[1])
        np.add.at(reads, (rows, table.index.ravel()), (table.weight > 0).ravel())
        reach = np.moveaxis(np.tensordot(reads, reach, axes=([1], [axis])), 0, axis)
    return reach > 0


@pytest.mark.parametrize("method", ["mean", "max"])
@pytest.mark.parametrize("factors", [(1, 1, 1.5), (1, 1.5, 1), (2.5, 1, 1), (3.4, 2.2, 1.5)], ids=str)
def test_nan_reaches_the_outputs_whose_block_holds_it_streamed_and_in_memory(tmp_path, method, factors):
    """Fractional factors: a block's table row has taps of weight 0 (inputs of the neighbouring block), which read
    nothing; tap by tap they made the NaN reach the neighbour in memory (whole-volume tables), not streamed."""
    array = nan_volume(4, (24, 26, 28), "voxels")
    array[2, 6, 6] = array[13, 13, 13] = np.nan
    reach = block_reach(array, factors, method)
    assert 0 < reach.sum() < reach.size
    source = bv.write_volume(bv.Volume.from_array(array), tmp_path / "in.nrrd", compress=False)
    results = {"in memory": bv.resample(bv.Volume.from_array(array), factors, method=method).array}
    bv.resample_file(source, tmp_path / "out.nrrd", factors, method=method, stream=True, memory_limit=1)
    results["streamed"] = bv.read_volume(tmp_path / "out.nrrd").array
    for name, result in results.items():
        np.testing.assert_array_equal(np.isnan(result), reach, err_msg=name)
    np.testing.assert_array_equal(results["in memory"], results["streamed"])


@pytest.mark.parametrize("kind", ["voxels", "field of view"])
@pytest.mark.parametrize("seed, shape, factors", [(0, (48, 96, 96), (2, 2, 2)), (1, (40, 100, 90), (2, 3, 2.5)),
                                                  (2, (44, 128, 120), (4, 4, 4)), (3, (40, 70, 81), (1, 2, 3))])
def test_nan_reaches_the_outputs_whose_taps_read_it_on_every_path(tmp_path, kind, seed, shape, factors):
    """A NaN input makes NaN the outputs whose taps read it (up to 32 inputs along each axis), as in
    vtkImageResize; the numpy band products spread it over whole blocks (3-6 times as far). Streamed, in memory
    and through the array code; the finite outputs keep their values. (vtk itself reaches further along a z axis
    shorter than about 34 slices; these volumes are longer.)"""
    from bigvolume.engine import gpu
    array = nan_volume(seed, shape, kind)
    volume = bv.Volume.from_array(array)
    reference = bv.resample(volume, factors, backend="vtk").array
    reach = nan_reach(array, factors)
    assert 0 < reach.sum() < reach.size
    np.testing.assert_array_equal(np.isnan(reference), reach)
    source = bv.write_volume(volume, tmp_path / "in.nrrd", compress=False)
    results = {"in memory": bv.resample(volume, factors).array,
               "array code": gpu.resample_array(array, factors, "lanczos", xp=np, memory_limit=1)}
    bv.resample_file(source, tmp_path / "out.nrrd", factors, stream=True, memory_limit=1)
    results["streamed"] = bv.read_volume(tmp_path / "out.nrrd").array
    for name, result in results.items():
        np.testing.assert_array_equal(np.isnan(result), reach, err_msg=name)
        np.testing.assert_allclose(result[~reach], reference[~reach], rtol=0, atol=2e-3, err_msg=name)
    np.testing.assert_array_equal(np.isnan(array), np.isnan(nan_volume(seed, shape, kind)))  # input only read


def test_infinities_go_tap_by_tap_and_reach_no_further_than_their_taps():
    from bigvolume.methods.kernels import ResampleKernels
    array = nan_volume(4, (40, 44, 52), "voxels")
    array[np.isnan(array)] = 0
    array[5, 6, 7], array[30, 20, 40], array[31, 20, 40] = np.inf, -np.inf, np.inf
    kernels = ResampleKernels.for_factors("lanczos", array.shape, np.float32, (2, 3, 2))
    with np.errstate(invalid="ignore"):
        taps = apply_separable(array, kernels.kernels, "sum", np.float32)
    result = bv.resample(bv.Volume.from_array(array), (2, 3, 2)).array
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(result), test(taps))
    assert 0 < (~np.isfinite(result)).sum() < 3 * 16 ** 3


@pytest.mark.parametrize("mode", [dict(stream=True), dict(stream=False), dict(stream=False, backend="vtk")],
                         ids=["streamed", "in-memory", "vtk"])
def test_nan_in_the_output_is_said_with_how_much(tmp_path, mode):
    """NaN outside a reconstruction's circular field of view spreads over the Lanczos support: most of a x2 output
    is NaN. The run says how much, and what to do, on every path."""
    n = 48
    _, j, i = np.ogrid[:n, :n, :n]
    array = np.random.default_rng(0).normal(100, 5, (n, n, n)).astype(np.float32)
    outside = np.broadcast_to((j - n / 2 + 0.5) ** 2 + (i - n / 2 + 0.5) ** 2 > (0.45 * n) ** 2, array.shape)
    array[outside] = np.nan
    bv.write_volume(bv.Volume.from_array(array), tmp_path / "fov.nrrd", compress=False)
    report = bv.resample_file(tmp_path / "fov.nrrd", tmp_path / "out.nrrd", 2, **mode)
    nan = int(np.isnan(bv.read_volume(tmp_path / "out.nrrd").array).sum())
    assert nan > 0
    assert any(note.startswith(f"{nan} of the {24 ** 3} output voxels") and "replace the input's NaN" in note
               for note in report.notes), report.notes
    clean = np.nan_to_num(array, nan=100.0)
    bv.write_volume(bv.Volume.from_array(clean), tmp_path / "clean.nrrd", compress=False)
    assert not any("NaN" in note for note in bv.resample_file(tmp_path / "clean.nrrd", tmp_path / "c.nrrd", 2,
                                                               **mode).notes)


@pytest.mark.parametrize("order", [">i2", ">f4", ">u2", ">f8"])
def test_big_endian_voxels_and_output_types_give_the_native_result(tmp_path, order):
    """Big-endian arrays (nibabel, np.fromfile('>i2')) gave garbage through backend vtk and in the preview's
    rendering, and could not be written; a big-endian output type ('>f4') was written as little-endian bytes under a
    little-endian header, streamed. Voxels are taken in this machine's order once, wherever they come in."""
    array = quality.microct_phantom(24).astype(np.dtype(order).newbyteorder("="))
    big = array.astype(order)
    expected = bv.downsample_array(array, 2)
    np.testing.assert_array_equal(bv.downsample_array(big, 2), expected)
    np.testing.assert_allclose(bv.downsample_array(big, 2, backend="vtk"), bv.downsample_array(array, 2, backend="vtk"))
    volume = bv.Volume.from_array(big, spacing=(0.5, 0.5, 0.8))
    assert volume.array.dtype.isnative
    path = bv.write_volume(volume, tmp_path / "big.nrrd")
    np.testing.assert_array_equal(bv.read_volume(path).array, array)
    for stream in (True, False):
        out = tmp_path / f"out_{stream}.nhdr"
        bv.resample_file(path, out, 2, stream=stream, dtype=order)
        back = bv.read_volume(out).array
        assert back.dtype == np.dtype(order).newbyteorder("=")
        np.testing.assert_allclose(back, bv.resample(volume, 2, dtype=order).array)


def test_a_one_component_axis_and_odd_arrays(tmp_path):
    """(k, j, i, 1), which Volume documents, failed every streamed method (numpy broadcast errors); complex
    voxels lost their imaginary part silently; a factor above an axis's length put downsample_array's voxel off the
    data, where resample takes the length."""
    array = quality.microct_phantom(20).astype(np.float32)
    for method in ("lanczos", "mean", "nearest", "max", "gaussian"):
        one = bv.downsample_array(array[..., None], 2, method=method)
        assert one.shape[-1] == 1
        np.testing.assert_array_equal(one[..., 0], bv.downsample_array(array, 2, method=method))
        resampled = bv.resample(bv.Volume.from_array(array[..., None]), 2, method=method)
        np.testing.assert_array_equal(resampled.array, bv.downsample_array(array, 2, method=method))
    for bad in (array.astype(np.complex64), array[0], np.zeros((4, 4, 4, 0), np.float32)):
        with pytest.raises(bv.BigVolumeError, match="a volume is"):
            bv.downsample_array(bad, 2)
    thin = np.arange(3, dtype=np.float32)[:, None, None] * np.ones((3, 6, 6), np.float32)  # 3 slices, factor 8
    assert float(bv.downsample_array(thin, (1, 1, 8), method="mean")[0, 0, 0]) == pytest.approx(1.0)
    assert bv.resample(bv.Volume.from_array(thin), (1, 1, 8), method="mean").array[0, 0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("origin, direction", [((np.nan, 0, 0), None), ((0, 0, 0), np.full((3, 3), np.nan)),
                                               ((0, 0, 0), np.zeros((3, 3))), ((np.inf, 1, 2), None)])
def test_a_geometry_that_places_nothing_is_refused(origin, direction):
    """A NaN origin was written as 0 0 0 (MetaImage), a NaN direction as the identity (NRRD), silently."""
    with pytest.raises(ValueError, match="origin|direction"):
        bv.Geometry((4, 5, 6), (1, 1, 1), origin, np.eye(3) if direction is None else direction)


def test_memory_limits_are_taken_as_the_command_line_takes_them(tmp_path):
    path = bv.write_volume(bv.Volume.from_array(quality.microct_phantom(16)), tmp_path / "in.nhdr")
    plan = bv.plan_file(path, 2, memory_limit="1MB")
    assert plan.memory_limit == 10**6
    for bad in ("abc", float("nan"), 0, -5):
        with pytest.raises(bv.BigVolumeError, match="memory limit"):
            bv.plan_file(path, 2, memory_limit=bad)


@pytest.mark.parametrize("shape, dtype", [((2, 3000, 3000), np.uint8), ((3, 1800, 2500), np.uint16),
                                          ((2, 1500, 1200), np.float32)])
def test_the_buffers_of_one_wide_slice_count_in_the_choice_to_read_whole(tmp_path, shape, dtype):
    """Input + output fit the limit, one slice's filter buffers do not: 26000^2 x 2 uint8 read whole went 1.3x over
    the default limit, silently. It streams now, and the plan says why."""
    array = np.random.default_rng(shape[1]).integers(0, 200, shape).astype(dtype)
    path = bv.write_volume(bv.Volume.from_array(array), tmp_path / "wide.nhdr")
    plan = bv.plan_file(path, 2)
    slice_voxels = shape[1] * shape[2]
    assert plan.slice_buffers >= slice_voxels * 4  # at least the slice converted to float32
    held = plan.input_bytes + plan.output_bytes
    assert plan.in_memory_bytes == held + plan.slice_buffers
    tight = bv.plan_file(path, 2, memory_limit=held + plan.slice_buffers // 2)
    assert tight.streams and "+ the buffers of one slice" in tight.describe(), tight.describe()
    roomy = bv.plan_file(path, 2, memory_limit=held + 2 * plan.slice_buffers)
    assert not roomy.streams
    streamed = bv.resample_file(path, tmp_path / "s.nhdr", 2, memory_limit=held + plan.slice_buffers // 2,
                                threads=1)
    whole = bv.resample_file(path, tmp_path / "w.nhdr", 2, memory_limit=held + 2 * plan.slice_buffers, threads=1)
    assert streamed.stream_plan is not None and whole.stream_plan is None
    a, b = bv.read_volume(tmp_path / "s.nhdr"), bv.read_volume(tmp_path / "w.nhdr")
    assert a.geometry == b.geometry
    np.testing.assert_allclose(a.array.astype(float), b.array.astype(float), atol=1 if array.dtype.kind in "iu" else
                               1e-4 * float(array.max()))
    # asked for, streaming or reading whole is not second-guessed (and nothing is estimated)
    assert bv.plan_file(path, 2, stream=False, memory_limit=held + 1).slice_buffers == 0


def test_a_limit_the_buffers_cannot_keep_is_said_before_the_work(tmp_path, caplog):
    """The "leaves no room" note came with the result, after the work: a run killed for memory said nothing."""
    from bigvolume.core.memory import current_rss
    path = bv.write_volume(bv.Volume.from_array(np.random.default_rng(1).integers(0, 250, (6, 3000, 3000))
                                                .astype(np.uint8)), tmp_path / "in.nhdr")
    seen = []

    def progress(fraction, message=""):
        if fraction > 0 and not seen:  # the first slab's progress: what had been said by then
            seen.append([r.getMessage() for r in caplog.records if "leaves no room" in r.getMessage()])

    with caplog.at_level("WARNING", logger="bigvolume"):
        # above what the process holds, below one 3000^2 slice's buffers
        report = bv.resample_file(path, tmp_path / "out.nhdr", 2, stream=True, threads=1,
                                  memory_limit=current_rss() + 48 * 2**20, progress=progress)
    said = [r.getMessage() for r in caplog.records if "leaves no room" in r.getMessage()]
    assert len(said) == 1 and seen and seen[0] == said, (seen, said)
    assert report.notes.count(said[0]) == 1


def test_a_slice_too_big_for_the_limit_is_named_as_the_cause():
    """The note blamed "threads, kernel windows" when one 20000^2 slice did not fit (whose threads' buffers grow
    with the slice too): it gives both parts."""
    from bigvolume.core.memory import current_rss
    from bigvolume.engine.plan import FIXED_OVERHEAD, plan_slabs
    limit = current_rss() + 2**30
    wide = plan_slabs(2, 20000**2, 11 * 20000**2, 2**20, limit)
    assert wide.slab_slices == 1 and ("for these buffers alone: 4.10 GiB for one slice of 381.47 MiB, "
                                      f"{(2**20 + FIXED_OVERHEAD) / 2**20:.2f} MiB for threads and kernel windows") \
        in wide.note, wide.note
    threads = plan_slabs(100, 2**20, 2**21, 3 * 2**30, limit)
    assert "2.00 MiB for one slice of 1.00 MiB, 3.02 GiB for threads and kernel windows" in threads.note, threads.note
    held = plan_slabs(100, 2**20, 2**21, 0, current_rss() // 2)
    assert "this program already uses" in held.note, held.note


@pytest.mark.parametrize("dtype, base", [(np.uint64, 2**60), (np.int64, -(2**53)), (np.int64, 2**62)])
def test_nearest_copies_64_bit_integers_exactly(tmp_path, dtype, base):
    """Decimation picks voxels: it summed its one tap in float64, and 2^60 + 1 came out 2^60."""
    array = (np.arange(6 * 8 * 10).reshape(6, 8, 10) * 3 + 1).astype(dtype) + dtype(base)
    expected = array[1::2, 1::2, 1::2]  # factor 2, block-centred at n + 1/2: nearest rounds it up
    np.testing.assert_array_equal(bv.downsample_array(array, 2, method="nearest"), expected)
    path = bv.write_volume(bv.Volume.from_array(array), tmp_path / "in.nhdr")
    for stream in (True, False):
        bv.resample_file(path, tmp_path / f"o{stream}.nhdr", 2, method="nearest", stream=stream)
        np.testing.assert_array_equal(bv.read_volume(tmp_path / f"o{stream}.nhdr").array, expected)


# --- found by comparing methods, backends and paths against simple oracles ------------------------------------------
import subprocess  # noqa: E402
import sys  # noqa: E402

BIGVOLUME = [sys.executable, "-m", "bigvolume"]


@pytest.mark.parametrize("dtype, value", [(np.int64, 2**62 + 1), (np.int64, -(2**60) - 3), (np.uint64, 2**64 - 1),
                                          (np.int64, 2**52 - 1)])
@pytest.mark.parametrize("method", ["lanczos", "mean", "gaussian", "fft"])
def test_64_bit_integers_beyond_2_to_48_are_refused_by_the_filters(tmp_path, dtype, value, method):
    """Filters compute in double precision: 2^62 + 1 came back 2^62 even at factor 1, 2^52 - 1 three off, and near
    2^63 a mean rounded past the input's maximum. Refused, in memory and streamed; nearest and max pick the values
    exactly; up to 2^48 a constant comes through exactly."""
    array = np.full((6, 5, 4), value, dtype)
    array[0, 0, 0] = 7
    with pytest.raises(bv.BigVolumeError, match=rf"64-bit integer values up to {abs(int(value))} lie beyond 2\^48, "
                                                rf"where the {method} filter"):
        bv.downsample_array(array, 2, method=method)
    if method != "fft":
        path = bv.write_volume(bv.Volume.from_array(array), tmp_path / "in.nhdr")
        with pytest.raises(bv.BigVolumeError, match="lie beyond 2\\^48"):
            bv.resample_file(path, tmp_path / "out.nhdr", 2, method=method, stream=True, memory_limit=1)
        assert not (tmp_path / "out.nhdr").exists()
    for exact in ("nearest", "max"):
        assert bv.downsample_array(array, 1, method=exact)[1, 1, 1] == array[1, 1, 1]
    for factor in (2, 2.7):
        constant = np.full((8, 8, 8), 2**48 - 1, dtype)
        assert (bv.downsample_array(constant, factor, method=method) == 2**48 - 1).all()


@pytest.mark.parametrize("method", ["lanczos", "mean", "gaussian"])
def test_a_32_or_64_bit_integer_volume_written_as_float32_is_filtered_in_double(tmp_path, method):
    """In memory, an int64 volume asked as float32 was cast to float32 before the filter (403403025655 lost its
    last digits), streamed it was filtered in float64: the two outputs differed."""
    array = np.random.default_rng(1).integers(0, 10**12, (20, 16, 16)).astype(np.int64)
    source = bv.write_volume(bv.Volume.from_array(array), tmp_path / "in.nhdr")
    whole = bv.resample_file(source, tmp_path / "whole.nrrd", 2.5, method=method, dtype="float32", stream=False)
    streamed = bv.resample_file(source, tmp_path / "streamed.nrrd", 2.5, method=method, dtype="float32",
                                stream=True, memory_limit=1)
    np.testing.assert_array_equal(bv.read_volume(whole.output_path).array, bv.read_volume(streamed.output_path).array)


def test_isotropic_says_which_axis_it_keeps_and_refuses_what_it_cannot_combine_with(tmp_path, caplog):
    """--isotropic never upsamples: an axis already coarser than factor x the finest spacing is kept, which the help
    ("one output spacing on all axes") did not say; with --spacing or --target-size it was dropped silently."""
    volume = bv.Volume.from_array(np.zeros((8, 8, 8), np.uint8), spacing=(0.5, 1.0, 2.0))
    with caplog.at_level("WARNING", logger="bigvolume"):
        assert bv.resample(volume, 2, isotropic=True).geometry.spacing == (1.0, 1.0, 2.0)
    assert "isotropic: axis k (2 mm) is already coarser than the spacing 1 mm of the others and is kept" in caplog.text
    assert "a factor of 4 gives one spacing on all axes" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="bigvolume"):
        assert bv.resample(volume, 4, isotropic=True).geometry.spacing == (2.0, 2.0, 2.0)
    assert "isotropic" not in caplog.text
    source = bv.write_volume(volume, tmp_path / "in.nrrd")
    for extra in (["--spacing", "1", "2", "3"], ["--target-size", "1KB"]):
        done = subprocess.run(BIGVOLUME + ["resample", str(source), str(tmp_path / "out.nrrd"), "--isotropic",
                                           *extra], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "isotropic goes with a factor" in done.stderr, done.stderr
        assert not (tmp_path / "out.nrrd").exists()


def test_overflow_to_nan_is_said_without_numpys_warnings(tmp_path):
    """Values near float32's largest overflow in the Lanczos sums: all NaN, the note blamed NaN input voxels the
    volume does not have, and numpy's RuntimeWarnings with their source lines were printed."""
    source = bv.write_volume(bv.Volume.from_array(np.full((8, 8, 8), np.finfo(np.float32).max, np.float32)),
                             tmp_path / "in.nrrd")
    done = subprocess.run(BIGVOLUME + ["resample", str(source), str(tmp_path / "out.nrrd"), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # the note alone
    assert "a NaN or infinite input voxel, or values near the type's largest" in done.stderr
    assert "RuntimeWarning" not in done.stderr


# --- an integer --type: NaN said, rounded and clamped once ----------------------------------------------------------
def nan_in_float(dtype, seed, shape=(16, 18, 20)) -> np.ndarray:
    """Smooth float values 20 .. 120 with a few NaN voxels scattered (an integer output must say they became 0)."""
    rng = np.random.default_rng(seed)
    array = (70 + 50 * np.sin(np.arange(shape[2]) / 3.0) * np.ones(shape)).astype(dtype)
    array.flat[rng.choice(array.size, 4 + seed % 5, replace=False)] = np.nan
    return array


@pytest.mark.parametrize("mode", [dict(stream=True), dict(stream=False), dict(stream=False, backend="vtk")],
                         ids=["streamed", "in-memory", "vtk"])
@pytest.mark.parametrize("out_type", ["uint8", "int16", "int32", "uint16"])
@pytest.mark.parametrize("in_type, seed", [(np.float32, 0), (np.float64, 1), (np.float32, 2)])
def test_nan_cast_to_an_integer_type_is_said_on_every_path(tmp_path, mode, out_type, in_type, seed):
    """A float input with NaN resampled to an integer --type: the NaN came out 0 with no note (the sink counted
    NaN only in float blocks, after the cast had made them 0); a float --type said it. Now counted before the cast,
    as many as the float output holds, and said to be 0 in the integer output."""
    method = "lanczos" if mode.get("backend") == "vtk" else ["mean", "lanczos", "gaussian"][seed]
    path = bv.write_volume(bv.Volume.from_array(nan_in_float(in_type, seed)), tmp_path / "in.nrrd")
    as_float = bv.resample_file(path, tmp_path / "f.nrrd", 2, method=method, dtype=in_type, **mode)
    nan = np.isnan(bv.read_volume(tmp_path / "f.nrrd").array)
    assert nan.any() and any("are NaN" in note for note in as_float.notes)
    report = bv.resample_file(path, tmp_path / "i.nrrd", 2, method=method, dtype=out_type, **mode)
    out = bv.read_volume(tmp_path / "i.nrrd").array
    assert out.dtype == np.dtype(out_type) and np.all(out[nan] == 0)
    said = [note for note in report.notes if "NaN" in note]
    assert len(said) == 1 and said[0].startswith(f"{nan.sum()} of the {nan.size} output voxels"), report.notes
    assert f"set to 0 in the {out_type} output" in said[0]
    clean = bv.write_volume(bv.Volume.from_array(np.nan_to_num(nan_in_float(in_type, seed), nan=70.0)),
                            tmp_path / "clean.nrrd")
    assert not any("NaN" in note for note in bv.resample_file(clean, tmp_path / "c.nrrd", 2, method=method,
                                                               dtype=out_type, **mode).notes)


def test_cli_says_nan_set_to_0_in_an_integer_type(tmp_path):
    path = bv.write_volume(bv.Volume.from_array(nan_in_float(np.float32, 3)), tmp_path / "in.nrrd")
    for stream in ("--stream", "--no-stream"):
        done = subprocess.run(BIGVOLUME + ["resample", str(path), str(tmp_path / "out.nrrd"), "--type", "int16",
                                           "--method", "mean", stream, "--quiet"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "were set to 0 in the int16 output" in done.stderr, done.stderr


def step_edge(dtype, seed, shape=(16, 16, 16)) -> np.ndarray:
    """A step between the type's ends (uint8 0|255) along i at a seeded place: Lanczos rings below and above it."""
    info = np.iinfo(dtype)
    array = np.full(shape, info.min, dtype)
    array[:, :, 5 + seed % 6:] = info.max if info.bits == 8 else min(info.max, 3000)
    return array


@pytest.mark.parametrize("method", ["lanczos", "gaussian", "mean"])
@pytest.mark.parametrize("in_type, out_type", [(np.uint8, np.int16), (np.uint8, np.int8), (np.uint8, np.int32),
                                               (np.int8, np.uint8), (np.uint16, np.int16), (np.int16, np.uint8)])
@pytest.mark.parametrize("seed", [0, 3])
def test_integer_type_is_rounded_and_clamped_once_streamed_and_in_memory(tmp_path, method, in_type, out_type, seed):
    """uint8 0|255 to --type int16 in memory filtered in uint8 (rounded and clamped to 0 .. 255), then cast again:
    0 1 0 13 242 255 254 255 where the streamed run gave -1 1 -3 13 242 258 254 256 (floats -0.67 1.23 -2.75 ...).
    Both now round and clamp the filter's floats once, to the output type: equal to each other and to the float64
    result rounded and clamped, within 1 (README: integers within 1)."""
    path = bv.write_volume(bv.Volume.from_array(step_edge(in_type, seed)), tmp_path / "in.nrrd")
    bv.resample_file(path, tmp_path / "f.nrrd", 2, method=method, dtype=np.float64, stream=False)
    info = np.iinfo(out_type)
    expected = np.clip(np.rint(bv.read_volume(tmp_path / "f.nrrd").array), info.min, info.max)
    outs = {}
    for stream in (True, False):
        bv.resample_file(path, tmp_path / f"o{stream}.nrrd", 2, method=method, dtype=out_type, stream=stream,
                         memory_limit=1 if stream else None)
        outs[stream] = bv.read_volume(tmp_path / f"o{stream}.nrrd").array
        assert outs[stream].dtype == np.dtype(out_type)
        assert np.abs(outs[stream].astype(np.float64) - expected).max() <= 1, (stream, outs[stream][4, 4])
    assert np.abs(outs[True].astype(np.int64) - outs[False]).max() <= 1
    in_memory = bv.resample(bv.read_volume(path), 2, method=method, dtype=out_type).array
    np.testing.assert_array_equal(in_memory, outs[False])
    if method == "lanczos" and in_type == np.uint8 and info.min < 0:  # the ringing below 0 is kept, not clamped to 0
        assert outs[False].min() < 0 and outs[False].min() == outs[True].min()


@pytest.mark.parametrize("out_type", [np.int16, np.int8, np.int32])
@pytest.mark.parametrize("kwargs", [dict(backend="vtk"), dict(method="fft")], ids=["vtk", "fft"])
def test_vtk_and_fft_round_an_integer_type_once(out_type, kwargs):
    """The in-memory paths that do not stream (backend vtk, method fft) take the same rule: filtered in floats,
    rounded and clamped once to the output type (the ringing below 0 kept)."""
    for seed in range(3):
        array = step_edge(np.uint8, seed)
        reference = bv.downsample_array(array.astype(np.float64), 2, **kwargs)
        info = np.iinfo(out_type)
        expected = np.clip(np.rint(reference), info.min, info.max)
        out = bv.resample(bv.Volume.from_array(array), 2, dtype=out_type, **kwargs).array
        assert out.dtype == np.dtype(out_type) and reference.min() < -0.5
        assert np.abs(out - expected).max() <= 1 and out.min() < 0, (seed, out[4, 4])


@pytest.mark.parametrize("labels", [(0, 1), (0, 3, 7), tuple(range(16)), (-5, 0, 1000)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32])
@pytest.mark.parametrize("method", ["lanczos", "gaussian", "mean", "nearest", "max"])
def test_an_integer_input_of_few_values_resampled_by_a_mixing_method_is_noted(tmp_path, labels, dtype, method):
    """A file says not that it holds labels (Slicer's CLI module gets a label map as a plain NRRD): smoothing one
    made labels that are not in it, without a word. Methods that pick values are not noted, nor are images."""
    if np.iinfo(dtype).min > min(labels) or np.iinfo(dtype).max < max(labels):
        pytest.skip("labels beyond the type")
    rng = np.random.default_rng(len(labels))
    array = np.asarray(labels, dtype)[rng.integers(0, len(labels), (4, 5, 6))].repeat(5, 0).repeat(4, 1).repeat(3, 2)
    source = bv.write_volume(bv.Volume.from_array(array, spacing=(0.5, 0.6, 0.7)), tmp_path / "labels.nrrd")
    report = bv.resample_file(source, tmp_path / "out.nrrd", 2, method=method)
    said = [note for note in report.notes if "distinct values" in note]
    if method in ("nearest", "max"):
        assert not said
        assert set(np.unique(bv.read_volume(tmp_path / "out.nrrd").array)) <= set(labels)
    else:
        assert len(said) == 1 and f"only {len(labels)} distinct values" in said[0] and str(source) in said[0]
    image = bv.write_volume(bv.Volume.from_array(quality.microct_phantom(32).astype(dtype) if dtype != np.uint8 else
                                                 (quality.microct_phantom(32) // 256).astype(dtype)),
                            tmp_path / "image.nrrd")
    assert not [n for n in bv.resample_file(image, tmp_path / "image_out.nrrd", 2, method=method).notes
                if "distinct values" in n]


def test_a_spacing_an_axis_too_short_cannot_reach_is_said(tmp_path, caplog):
    """--spacing and --isotropic promise a spacing; an axis shorter than its factor keeps its one voxel over its
    data (a spacing of length x spacing), and that was not said: 33x101x7 --isotropic --factor 100 came out 30 30 28,
    a one-slice image --spacing 0.6 0.6 10 came out k spacing 5."""
    import logging
    odd = bv.write_volume(bv.Volume.from_array(np.zeros((7, 101, 33), np.int16) + np.arange(33, dtype=np.int16),
                                               spacing=(0.9, 0.3, 4.0)), tmp_path / "odd.nrrd")
    flat = bv.write_volume(bv.Volume.from_array(np.arange(80 * 100, dtype=np.int16).reshape(1, 80, 100),
                                                spacing=(0.3, 0.3, 5.0)), tmp_path / "flat.nrrd")
    cases = [(odd, {"factor": 100, "isotropic": True}, "k: 7 voxels, spacing 28 instead of 30"),
             (flat, {"spacing": (0.6, 0.6, 10.0)}, "k: 1 voxel, spacing 5 instead of 10"),
             (flat, {"spacing": (0.6, 0.6, 5.0)}, None), (odd, {"factor": 2, "isotropic": True}, None)]
    for number, (source, options, said) in enumerate(cases):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bigvolume"):
            report = bv.resample_file(source, tmp_path / f"out{number}.nrrd", **options)
        notes = [r.getMessage() for r in caplog.records if "is not reached" in r.getMessage()]
        if said is None:
            assert not notes
        else:
            assert len(notes) == 1 and said in notes[0], notes
            spacing = report.output_geometry.spacing
            assert f"spacing {spacing['ijk'.index(said[0])]:g} instead" in said


def test_a_target_spacing_equal_to_a_float32_header_s_is_that_spacing(tmp_path):
    """NIfTI stores spacings as float32: 1.1 reads as 1.10000002, and --spacing 0.6 0.6 1.1 was refused as "finer
    than the input's 1.1"."""
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(np.arange(8 * 16 * 16, dtype=np.int16).reshape(8, 16, 16))
    image.SetSpacing((0.3, 0.3, 1.1))
    sitk.WriteImage(image, str(tmp_path / "in.nii.gz"))
    report = bv.resample_file(tmp_path / "in.nii.gz", tmp_path / "out.nrrd", spacing=(0.6, 0.6, 1.1))
    assert report.output_geometry.dimensions == (8, 8, 8) and report.factors[2] == 1.0
    with pytest.raises(bv.BigVolumeError, match=r"spacing 1.09 along axis K is finer than the input's 1.10000002"):
        bv.resample_file(tmp_path / "in.nii.gz", tmp_path / "finer.nrrd", spacing=(0.6, 0.6, 1.09))


@pytest.mark.parametrize("suffix, compress, refused", [(".nii", True, True), (".nii.gz", False, True),
                                                       (".nii.gz", True, False), (".nii", False, False),
                                                       (".nrrd", False, False), (".nhdr", True, False)])
def test_a_compression_option_nifti_s_name_contradicts_is_refused(tmp_path, suffix, compress, refused):
    """NIfTI compresses by its suffix: --compress with .nii wrote it raw (and --target-size fitted it raw),
    --no-compress with .nii.gz gzipped it, without a word."""
    source = bv.write_volume(bv.Volume.from_array(quality.microct_phantom(16)), tmp_path / "in.nrrd")
    out = tmp_path / f"out{suffix}"
    flag = "--compress" if compress else "--no-compress"
    done = subprocess.run([sys.executable, "-m", "bigvolume", "resample", str(source), str(out), flag],
                          capture_output=True, text=True, timeout=300)
    if refused:
        assert done.returncode == 1 and not out.exists()
        assert done.stderr.strip() == (f"bigvolume: error: {out}: NIfTI is compressed by its name, not by an option: "
                                       f"name it {'.nii.gz' if compress else '.nii'} for "
                                       f"{'a compressed' if compress else 'an uncompressed'} file")
    else:
        assert done.returncode == 0, done.stderr
