"""Precision reduction (bigvolume.ops.precision.reduce_bits / reduce_bits_file and `bigvolume reduce-bits`): the window,
the clipped share, the output type and grid, streamed equal to in memory, and clear refusals."""
import subprocess
import sys

import numpy as np
import pytest

import bigvolume as bv
from bigvolume.io import files as io
from bigvolume.core.errors import BigVolumeError
from bigvolume.ops.precision import Window, reduce_bits, reduce_bits_file

BIGVOLUME = [sys.executable, "-m", "bigvolume"]


def run(*args):
    return subprocess.run(BIGVOLUME + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def ramp_volume(dtype=np.float32, shape=(20, 30, 40), shift=0):
    """Every value once (a shuffled ramp), so percentiles and clipped counts are known exactly. ``shift``: added to
    every value (0.5: float values that are not integers, which reduce-bits does not keep as integers)."""
    values = np.random.default_rng(0).permutation(np.prod(shape)).reshape(shape)
    return bv.Volume.from_array(values.astype(dtype) * 3 - 5000 + shift, spacing=(0.7, 0.45, 1.3),
                                origin=(-12.5, 40.0, 3.25), direction=np.diag([1.0, -1.0, 1.0]))


@pytest.mark.parametrize("bits, signed, dtype", [(8, False, np.uint8), (16, False, np.uint16), (16, True, np.int16),
                                                 (8, True, np.int8)])
def test_robust_window_maps_onto_the_type_and_counts_the_clipped(bits, signed, dtype):
    volume = ramp_volume()
    result, report = reduce_bits(volume, bits, signed=signed, percentiles=(1, 99))
    values = volume.array
    low, high = np.percentile(values, (1, 99))
    assert report.window.low == pytest.approx(low) and report.window.high == pytest.approx(high)
    assert result.array.dtype == dtype == report.dtype and result.geometry == volume.geometry
    info = np.iinfo(dtype)
    assert result.array.min() == info.min and result.array.max() == info.max
    span = (float(info.max) - info.min) / (high - low)
    outside = (values < report.window.low) | (values > report.window.high)
    assert report.clipped == np.count_nonzero(outside)
    # 2 % lie outside the 1-99 percentile window, all counted (those within half an output step of it, which round
    # onto its ends, were not)
    assert report.clipped_fraction == report.clipped / values.size and 0.019 < report.clipped_fraction <= 0.02
    inside = ~outside
    expected = np.rint((values[inside] - low) * span + info.min)
    np.testing.assert_array_equal(result.array[inside], expected.astype(dtype))
    assert f"{100 * report.clipped_fraction:.3f} %" in report.summary()


def test_a_given_window_is_used_as_is():
    volume = ramp_volume(np.int32)
    result, report = reduce_bits(volume, 8, window=(-5000, -5000 + 3 * 255))
    assert report.window == Window(-5000, -5000 + 3 * 255)
    np.testing.assert_array_equal(result.array[volume.array <= -5000 + 3 * 255],
                                  (volume.array[volume.array <= -5000 + 3 * 255] + 5000) // 3)
    assert report.clipped == np.count_nonzero(volume.array > -5000 + 3 * 255 + 1.5)


def test_input_untouched_and_nan_goes_to_the_bottom():
    volume = ramp_volume()
    volume.array[0, 0, :3] = np.nan
    before = volume.array.copy()
    result, report = reduce_bits(volume, 8)
    np.testing.assert_array_equal(volume.array, before)
    assert (result.array[0, 0, :3] == 0).all() and "3 NaN voxels" in report.notes[0]


def test_refusals():
    with pytest.raises(BigVolumeError, match="bits must be one of 8, 16, got 12"):
        reduce_bits(ramp_volume(), 12)
    with pytest.raises(BigVolumeError, match="invalid intensity window 5.0 .. 1.0"):
        reduce_bits(ramp_volume(), 8, window=(5, 1))
    with pytest.raises(BigVolumeError, match="3 components per voxel"):
        reduce_bits(bv.Volume.from_array(np.zeros((2, 3, 4, 3), np.uint16)), 8)


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr"])
def test_streamed_file_equals_in_memory(tmp_path, suffix):
    volume = ramp_volume()
    source = io.write_volume(volume, tmp_path / f"in{suffix}")
    expected, expected_report = reduce_bits(volume, 16, percentiles=(2, 98))
    report = reduce_bits_file(source, tmp_path / "out.nhdr", 16, percentiles=(2, 98), stream=True, memory_limit=1)
    got = io.read_volume(tmp_path / "out.nhdr")
    np.testing.assert_array_equal(got.array, expected.array)
    assert report.clipped == expected_report.clipped and report.window == expected_report.window
    np.testing.assert_allclose(got.geometry.spacing, volume.geometry.spacing)
    np.testing.assert_allclose(got.geometry.direction, volume.geometry.direction)


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".nii.gz", ".mha"])
@pytest.mark.parametrize("stream", [True, False])
def test_every_path_writes_the_same_file_with_its_geometry(tmp_path, suffix, stream):
    """In memory (the array read whole, then slab by slab into the file, or whole through SimpleITK for .mha) and
    streamed give the same voxels, clipped count and geometry as reduce_bits on the volume."""
    volume = ramp_volume()
    source = io.write_volume(volume, tmp_path / "in.nhdr", compress=False)
    expected, expected_report = reduce_bits(volume, 8, percentiles=(2, 98))
    output = tmp_path / f"out{suffix}"
    if suffix == ".mha" and stream:
        with pytest.raises(bv.VolumeFileError):
            reduce_bits_file(source, output, 8, percentiles=(2, 98), stream=True)
        assert not output.exists()
        return
    report = reduce_bits_file(source, output, 8, percentiles=(2, 98), stream=stream)
    got = io.read_volume(output)
    np.testing.assert_array_equal(got.array, expected.array)
    assert report.clipped == expected_report.clipped > 0 and report.window == expected_report.window
    tolerance = 1e-6 if suffix == ".nii.gz" else 1e-12  # NIfTI keeps its matrix in float32
    np.testing.assert_allclose(got.geometry.spacing, volume.geometry.spacing, rtol=tolerance)
    np.testing.assert_allclose(got.geometry.origin, volume.geometry.origin, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(got.geometry.direction, volume.geometry.direction, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_the_map_in_chunks_over_threads_equals_one_float64_expression(dtype):
    from concurrent.futures import ThreadPoolExecutor
    from bigvolume.ops.precision import MAP_CHUNK_VOXELS, apply_window
    rng = np.random.default_rng(11)
    values = rng.normal(0, 9000, (7, 3, MAP_CHUNK_VOXELS // 6)).clip(-32768, 32767).astype(dtype)
    window = Window(-12000.0, 15000.0)
    scale = 255.0 / (window.high - window.low)
    mapped = (values.astype(np.float64) - window.low) * scale
    expected = np.clip(np.rint(mapped), 0, 255).astype(np.uint8)
    clipped = int(np.count_nonzero((values < window.low) | (values > window.high)))  # outside the window
    with ThreadPoolExecutor(3) as pool:
        for threads in (None, pool):
            result, count = apply_window(values, window, np.uint8, pool=threads)
            np.testing.assert_array_equal(result, expected)
            assert count == clipped > 0 and result.shape == values.shape
    strided, count = apply_window(values[:, ::2, ::3], window, np.uint8)  # a view that is not contiguous
    np.testing.assert_array_equal(strided, expected[:, ::2, ::3])



@pytest.mark.parametrize("dtype, output", [(np.float32, np.uint8), (np.float64, np.int16)])
def test_nan_maps_to_the_range_bottom_without_a_warning_and_is_not_clipped(dtype, output):
    """NaN in a float plane (a preview's slice, a slab of reduce-bits) goes to the output range's low end: a plain
    cast would give an arbitrary integer and print numpy's RuntimeWarning."""
    import warnings
    from bigvolume.ops.precision import MAP_CHUNK_VOXELS, apply_window, full_range
    rng = np.random.default_rng(5)
    values = rng.normal(0, 1, MAP_CHUNK_VOXELS + 1000).astype(dtype)
    holes = rng.random(values.size) < 0.1
    values[holes] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, clipped = apply_window(values, Window(-3.0, 3.0), output)
    low = full_range(output)[0]
    assert (result[holes] == low).all()
    expected = np.clip(np.rint((values[~holes].astype(np.float64) + 3.0) * (full_range(output)[1] - low) / 6.0 + low),
                       low, full_range(output)[1])
    np.testing.assert_array_equal(result[~holes], expected)
    assert clipped == int(np.count_nonzero(np.abs(values[~holes]) > 3.0))  # outside the window, NaN not counted

def test_cli_reduce_bits(tmp_path):
    volume = ramp_volume(shift=0.5)  # not integers: the window is stretched onto int16
    source = io.write_volume(volume, tmp_path / "in.nrrd")
    result = run("reduce-bits", source, tmp_path / "out.nii.gz", "--bits", "16", "--signed", "--window", "-5000",
                 "0")
    assert result.returncode == 0, result.stderr
    assert "int16, window -5000 .. 0" in result.stdout and "clipped" in result.stdout
    out = io.read_volume(tmp_path / "out.nii.gz")
    assert out.array.dtype == np.int16 and out.array.max() == 32767
    np.testing.assert_allclose(out.geometry.origin, volume.geometry.origin, atol=1e-4)
    clipped = np.count_nonzero(volume.array > 0 + 0.5 * 5000 / 65535)
    assert f"clipped {clipped} of {volume.array.size}" in result.stdout
    failed = run("reduce-bits", source, tmp_path / "bad.nrrd", "--bits", "8", "--window", "3", "1")
    assert failed.returncode == 1 and failed.stderr.startswith("bigvolume: error: ")
    assert "invalid intensity window" in failed.stderr and not (tmp_path / "bad.nrrd").exists()


# --- values kept when they fit: Hounsfield units, 8-bit data ---------------------------------------------------------
def hounsfield(dtype, seed, shape=(18, 25, 31)):
    """CT-like values from -1000 (air) to 3000 (dense bone), every integer in between likely present."""
    values = np.random.default_rng(seed).integers(-1000, 3001, shape)
    values[0, 0, :2] = (-1000, 3000)
    return bv.Volume.from_array(values.astype(dtype), spacing=(0.4, 0.4, 1.25), origin=(-80.0, 12.5, -300.0),
                                direction=np.diag([-1.0, -1.0, 1.0]))


@pytest.mark.parametrize("dtype, seed", [(np.int16, 0), (np.int32, 1), (np.int64, 2), (np.int16, 3)])
@pytest.mark.parametrize("stream", [False, True])
def test_hounsfield_units_survive_a_signed_16_bit_reduction(tmp_path, dtype, seed, stream):
    volume = hounsfield(dtype, seed)
    source = io.write_volume(volume, tmp_path / "ct.nrrd")
    report = reduce_bits_file(source, tmp_path / "ct16.nrrd", 16, signed=True, window=(-1024, 3071), stream=stream,
                              memory_limit=1 if stream else None)
    out = io.read_volume(tmp_path / "ct16.nrrd")
    assert out.array.dtype == np.int16 and report.kept_values and report.clipped == 0
    np.testing.assert_array_equal(out.array, volume.array)  # -1000 stays -1000, 3000 stays 3000
    assert report.intensity_map() == (1.0, 0.0) and "values kept" in report.summary()
    assert out.geometry.isclose(volume.geometry)
    # A narrower window clips to its ends and keeps what lies inside.
    narrow, narrow_report = reduce_bits(volume, 16, signed=True, window=(0, 200))
    expected = np.clip(volume.array, 0, 200)
    np.testing.assert_array_equal(narrow.array, expected)
    assert narrow_report.clipped == np.count_nonzero((volume.array < 0) | (volume.array > 200))
    # --stretch gives the old mapping: the window onto the whole int16 range.
    stretched, _ = reduce_bits(volume, 16, signed=True, window=(0, 200), stretch=True)
    assert stretched.array.min() == -32768 and stretched.array.max() == 32767


@pytest.mark.parametrize("dtype, bits, signed", [(np.uint8, 8, False), (np.uint8, 16, False), (np.uint8, 16, True),
                                                 (np.int8, 8, True), (np.int16, 16, True), (np.uint16, 16, False)])
def test_data_that_already_fits_is_kept_not_stretched(dtype, bits, signed):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(bits + signed)
    array = rng.integers(max(info.min, -200), min(info.max, 200) + 1, (12, 14, 16)).astype(dtype)
    volume = bv.Volume.from_array(array, spacing=(0.3, 0.3, 0.9))
    result, report = reduce_bits(volume, bits, signed=signed)
    np.testing.assert_array_equal(result.array, array)
    assert report.kept_values and report.clipped == 0 and "kept as they are" in report.notes[-1]


@pytest.mark.parametrize("dtype, bits, signed, window, percentiles, values", [
    (np.uint16, 8, False, None, None, lambda r: r * 200),            # 0 .. 50000: beyond uint8
    (np.float32, 16, True, None, None, lambda r: r * 0.5),           # halves: not integers
    (np.int16, 8, False, None, None, lambda r: r - 100),             # -100 .. 150: beyond uint8
    (np.uint16, 8, False, None, (1, 99), lambda r: r),               # fits, but percentiles asked for
    (np.uint8, 8, False, (0, 200), None, lambda r: r),               # a window asked for, 8 bits
    (np.float32, 16, True, (-1024, 3071), None, lambda r: r + 0.25)])  # a window, values not integers
def test_data_that_does_not_fit_or_asks_for_a_window_is_stretched(dtype, bits, signed, window, percentiles, values):
    ramp = np.arange(12 * 14 * 16).reshape(12, 14, 16) % 251
    volume = bv.Volume.from_array(values(ramp).astype(dtype))
    result, report = reduce_bits(volume, bits, signed=signed, window=window, percentiles=percentiles)
    info = np.iinfo(result.array.dtype)
    assert not report.kept_values and report.output_range == (info.min, info.max)
    scale, offset = report.intensity_map()
    assert scale * report.window.low + offset == pytest.approx(info.min)
    assert scale * report.window.high + offset == pytest.approx(info.max)
    expected = np.clip(np.rint((volume.array.astype(np.float64) - report.window.low) * scale + info.min), info.min,
                       info.max)
    np.testing.assert_array_equal(result.array, expected.astype(result.array.dtype))


def test_cli_on_8_bit_data_keeps_it_and_says_so(tmp_path):
    array = np.random.default_rng(5).integers(0, 256, (16, 20, 24)).astype(np.uint8)
    array[:, :, :4] = 0  # a little air: the 8-bit data compresses
    source = io.write_volume(bv.Volume.from_array(array, spacing=(0.5, 0.5, 2.0)), tmp_path / "in.nrrd")
    done = run("reduce-bits", source, tmp_path / "out.nrrd", "--bits", "8")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ("bigvolume: note: uint8 values kept as they are in uint8 (no stretching); "
                                   "--stretch maps the window onto the full range")
    np.testing.assert_array_equal(io.read_volume(tmp_path / "out.nrrd").array, array)
    assert "values kept (0 .. 255, no stretching); clipped 0 of" in done.stdout
    assert io.file_size(tmp_path / "out.nrrd") <= io.file_size(source) * 1.01  # no growth beyond the gzip's noise
    stretched = run("reduce-bits", source, tmp_path / "stretched.nrrd", "--bits", "8", "--stretch",
                    "--percentiles", "1", "99")
    assert stretched.returncode == 0 and stretched.stderr == "" and "window" in stretched.stdout
    assert not np.array_equal(io.read_volume(tmp_path / "stretched.nrrd").array, array)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_a_sparse_volume_s_percentiles_meet_and_its_full_range_is_taken(tmp_path, stream, dtype):
    """Two bright voxels in 8000 zeros: the 0.1 and 99.9 percentiles are both 0; the window 0 .. 0 sent every voxel to
    0 and reported nothing clipped."""
    array = np.zeros((20, 20, 20), dtype)
    array[3, 4, 5], array[10, 11, 12] = 1000, 500
    path = io.write_volume(bv.Volume.from_array(array), tmp_path / "sparse.nrrd")
    report = reduce_bits_file(path, tmp_path / "out.nrrd", bits=8, stream=stream, memory_limit=1)
    out = io.read_volume(tmp_path / "out.nrrd").array
    assert (report.window.low, report.window.high) == (0.0, 1000.0) and out[3, 4, 5] == 255 and out[10, 11, 12] == 128
    assert np.count_nonzero(out) == 2


@pytest.mark.parametrize("window, words", [((3, 3), "holds one value"), ((-1e308, 1e308), "too wide"),
                                           ((0, 2e-320), "too narrow")])
def test_windows_that_cannot_map_are_refused_in_one_line(tmp_path, window, words):
    """They gave all zeros (and a numpy warning), with nothing clipped said."""
    path = io.write_volume(bv.Volume.from_array(np.arange(1000, dtype=np.float64).reshape(10, 10, 10)),
                           tmp_path / "in.nrrd")
    done = run("reduce-bits", path, tmp_path / "out.nrrd", "--bits", "8", "--window", *map(str, window))
    assert done.returncode == 1 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out.nrrd").exists()


@pytest.mark.parametrize("low", [-100.9, -100.5, -100.1])
@pytest.mark.parametrize("stream", [False, True])
def test_values_kept_with_a_fractional_window_are_kept_exactly(tmp_path, low, stream):
    """--window -100.9 100 on int16 said "values kept" but mapped -100.9 .. 100 onto -100 .. 100: 89 of 201 values
    moved by 1."""
    array = np.arange(-100, 101, dtype=np.int16).reshape(201, 1, 1) * np.ones((1, 2, 3), np.int16)
    path = io.write_volume(bv.Volume.from_array(array), tmp_path / "hu.nrrd")
    report = reduce_bits_file(path, tmp_path / "out.nrrd", bits=16, signed=True, window=(low, 100), stream=stream,
                              memory_limit=1)
    assert "values kept" in report.summary()
    np.testing.assert_array_equal(io.read_volume(tmp_path / "out.nrrd").array, array)


def test_a_constant_volume_maps_to_the_low_end_and_any_other_value_counts_as_clipped():
    """A window of one value (the percentiles of a constant sample): a step at it, not a flat map of everything."""
    from bigvolume.ops.precision import apply_window
    values = np.array([5.0, 5.0, 7.0, 3.0, np.nan])
    mapped, clipped = apply_window(values, Window(5.0, 5.0), np.uint8)
    assert mapped.tolist() == [0, 0, 255, 0, 0] and clipped == 2


# --- values kept when the values themselves fit (labels, scaled integers) -------------------------------------------
def label_map(dtype, low, high, seed, shape=(20, 24, 28)):
    """Blocks of every label from ``low`` to ``high`` (``low`` the background), the top label a 2-voxel structure:
    a 0.1-99.9 percentile window stretched it onto the one below."""
    array = np.full(shape, low, dtype)
    rng = np.random.default_rng(seed)
    for value in range(low + 1, high):
        k, j, i = (rng.integers(0, n - 6) for n in shape)
        array[k:k + 6, j:j + 6, i:i + 6] = value
    array[-1, -1, -2:] = high
    return bv.Volume.from_array(array, spacing=(0.5, 0.6, 0.7), origin=(1.0, -2.0, 3.0))


KEPT_CASES = [(np.uint16, 0, 5, 8, False), (np.uint16, 0, 200, 8, False), (np.int16, 0, 40, 8, False),
              (np.int32, -100, 100, 8, True), (np.uint32, 0, 60000, 16, False), (np.int64, -30000, 30000, 16, True),
              (np.int16, -5, 6, 8, True)]


@pytest.mark.parametrize("dtype, low, high, bits, signed", KEPT_CASES)
@pytest.mark.parametrize("stream", [False, True])
def test_integer_values_that_fit_the_output_are_kept_with_no_window_asked_for(tmp_path, dtype, low, high, bits,
                                                                              signed, stream):
    """A uint16 label map 0..5 asked for 8 bits was stretched (0/64/128/191/255, its rare label 5 merged into 4): the
    values themselves fit, as an input whose type fits; streamed and in memory decide alike."""
    volume = label_map(dtype, low, high, seed=bits + high)
    path = io.write_volume(volume, tmp_path / "labels.nrrd")
    in_memory, memory_report = reduce_bits(volume, bits, signed=signed)
    report = reduce_bits_file(path, tmp_path / "out.nrrd", bits, signed=signed, stream=stream, memory_limit=1)
    out = io.read_volume(tmp_path / "out.nrrd").array
    for array, rep in ((in_memory.array, memory_report), (out, report)):
        np.testing.assert_array_equal(array, volume.array)
        assert array.dtype == np.dtype(f"{'int' if signed else 'uint'}{bits}")
        assert rep.kept_values and rep.clipped == 0 and "values kept" in rep.summary()
        assert f"values ({low} .. {high}) kept as they are" in rep.notes[-1]
        assert rep.intensity_map() == (1.0, 0.0)  # a preview maps the input's window through the identity
    # One voxel beyond the output type, or a window or percentiles asked for: stretched as before.
    beyond = volume.array.copy()
    beyond[0, 0, 0] = np.iinfo(in_memory.array.dtype).max + 1
    assert not reduce_bits(bv.Volume.from_array(beyond), bits, signed=signed)[1].kept_values
    assert not reduce_bits(volume, bits, signed=signed, percentiles=(0.1, 99.9))[1].kept_values
    assert not reduce_bits(volume, bits, signed=signed, stretch=True)[1].kept_values


def test_cli_keeps_a_uint16_label_map_in_8_bits_and_stretches_when_percentiles_are_asked_for(tmp_path):
    volume = label_map(np.uint16, 0, 5, seed=3)
    path = io.write_volume(volume, tmp_path / "labels16.nrrd")
    done = run("reduce-bits", path, tmp_path / "labels8.nrrd", "--bits", "8")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ("bigvolume: note: uint16 values (0 .. 5) kept as they are in uint8 (no "
                                   "stretching); --stretch maps the window onto the full range")
    assert "values kept" in done.stdout
    np.testing.assert_array_equal(io.read_volume(tmp_path / "labels8.nrrd").array, volume.array)
    asked = run("reduce-bits", path, tmp_path / "asked.nrrd", "--bits", "8", "--percentiles", "0.1", "99.9")
    assert asked.returncode == 0 and asked.stderr == "" and "window 0 .. 4 -> 0 .. 255" in asked.stdout


def scaled_nifti(path, raw: np.ndarray, slope: float, intercept: float, datatype=(4, 16)):
    """A NIfTI-1 file of int16 ``raw`` (k, j, i) with scl_slope / scl_inter: read as float32 slope * raw + inter."""
    import struct
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, raw.shape[2], raw.shape[1], raw.shape[0], 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, *datatype)
    struct.pack_into("<8f", header, 76, 1, 0.8, 0.8, 2.0, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<ff", header, 112, slope, intercept)
    struct.pack_into("<hh", header, 252, 1, 0)
    header[344:348] = b"n+1\0"
    path.write_bytes(bytes(header) + b"\0" * 4 + raw.astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("slope, intercept, window", [(1.0, -1024.0, (-1024, 3071)), (1.0, -1000.0, (-1024, 3071)),
                                                      (1.0, -32768.0, (-32768, 32767)), (2.0, -1024.0, (-1024, 3071))])
@pytest.mark.parametrize("stream", [False, True])
def test_float_values_that_are_all_integers_keep_hounsfield_units(tmp_path, slope, intercept, window, stream):
    """A CT NIfTI stored as int16 with scl_slope 1, scl_inter -1024 reads as float32 Hounsfield units, all integers:
    `--bits 16 --signed --window -1024 3071` stretched them instead of keeping them as it does for int16."""
    raw = np.random.default_rng(int(-intercept)).integers(0, 4096, (9, 10, 11)).astype(np.int16)
    path = scaled_nifti(tmp_path / "ct.nii", raw, slope, intercept)
    hounsfield_units = slope * raw.astype(np.float64) + intercept
    assert io.read_volume(path).array.dtype.kind == "f"
    report = reduce_bits_file(path, tmp_path / "ct16.nii", 16, signed=True, window=window, stream=stream,
                              memory_limit=1)
    out = io.read_volume(tmp_path / "ct16.nii").array
    np.testing.assert_array_equal(out, np.clip(hounsfield_units, *window))
    assert out.dtype == np.int16 and report.kept_values and "values kept" in report.summary()
    assert "(all integers) kept as they are in int16" in report.notes[-1]
    in_memory, memory_report = reduce_bits(io.read_volume(path), 16, signed=True, window=window)
    np.testing.assert_array_equal(in_memory.array, out)
    assert memory_report.clipped == report.clipped == np.count_nonzero((hounsfield_units < window[0])
                                                                       | (hounsfield_units > window[1]))
    # A slope of 0.5 makes halves: not integers, stretched onto the window.
    halves = scaled_nifti(tmp_path / "halves.nii", raw, 0.5, intercept)
    assert not reduce_bits_file(halves, tmp_path / "h16.nii", 16, signed=True, window=window, stream=stream,
                                memory_limit=1).kept_values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits, signed, values", [(8, False, (0, 200)), (16, True, (-3000, 3000)),
                                                  (8, True, (-100, 27))])
def test_float_integers_that_fit_are_kept_with_no_window_asked_for(tmp_path, dtype, bits, signed, values):
    array = np.random.default_rng(bits).integers(values[0], values[1] + 1, (10, 12, 14)).astype(dtype)
    array[0, 0, 0] = np.nan  # NaN still goes to the bottom of the range
    volume = bv.Volume.from_array(array)
    result, report = reduce_bits(volume, bits, signed=signed)
    finite = np.isfinite(array)
    np.testing.assert_array_equal(result.array[finite], array[finite])
    assert report.kept_values and f"{np.dtype(dtype)} values (all integers, " in report.notes[-1]
    path = io.write_volume(volume, tmp_path / "f.nrrd")
    reduce_bits_file(path, tmp_path / "out.nrrd", bits, signed=signed, stream=True, memory_limit=1)
    np.testing.assert_array_equal(io.read_volume(tmp_path / "out.nrrd").array, result.array)
    array[1, 1, 1] = 0.5  # one value that is not an integer: stretched
    assert not reduce_bits(bv.Volume.from_array(array), bits, signed=signed)[1].kept_values


# --- the map's arithmetic ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", [1e9, -3.7e8, 2.5e12, 6e5])
@pytest.mark.parametrize("output", [np.uint16, np.int16, np.uint8])
def test_a_narrow_window_far_from_zero_maps_every_value_to_its_level(base, output):
    """value * scale + offset cancelled for a window narrow against its distance from 0 (float64 1e9 + k * 1e-6 to
    16 bits: voxels up to 25 levels off); (value - low) * scale is exact here: 256 values one float64 step apart,
    the window over 255 of them, value k onto level k * (levels / 255)."""
    low_out, high_out = (int(v) for v in (np.iinfo(output).min, np.iinfo(output).max))
    per_step = (high_out - low_out) // 255  # 257 for 16 bits, 1 for 8
    step = abs(float(np.spacing(base)))
    k = np.arange(-10, 266)
    values = np.random.default_rng(0).permutation(base + k * step).reshape(4, 3, 23)
    steps = np.rint((values - base) / step).astype(int)
    assert np.array_equal(np.sort(steps.ravel()), k)  # exact
    result, report = reduce_bits(bv.Volume.from_array(values), 8 * np.dtype(output).itemsize,
                                 signed=np.dtype(output).kind == "i", window=(base, base + 255 * step))
    np.testing.assert_array_equal(result.array, np.clip(steps, 0, 255) * per_step + low_out)
    assert report.clipped == 20


# --- options and windows refused in one line naming the file and the user's numbers ---------------------------------
@pytest.mark.parametrize("data, args, words", [
    ("int16", ["--bits", "16", "--window", "0.2", "0.7"], "the intensity window 0.2 .. 0.7 holds no integer"),
    ("int32", ["--bits", "16", "--signed", "--window", "-5.9", "-5.1"], "the intensity window -5.9 .. -5.1 holds no"),
    ("int16", ["--bits", "8", "--percentiles", "99", "1"], "--percentiles 99 1: give two percentiles 0 <= LO < HI"),
    ("int16", ["--bits", "8", "--percentiles", "50", "50"], "--percentiles 50 50: give two percentiles"),
    ("float32", ["--bits", "16", "--percentiles", "-5", "200"], "--percentiles -5 200: give two percentiles"),
    ("float32", ["--bits", "8", "--percentiles", "0", "100.5"], "--percentiles 0 100.5: give two percentiles"),
    ("subnormal", ["--bits", "8"], "is too narrow to map onto 0 .. 255"),
    ("subnormal", ["--bits", "16", "--signed"], "is too narrow to map onto -32768 .. 32767")])
@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_bad_windows_and_percentiles_are_refused_in_one_line_naming_the_file(tmp_path, data, args, words, stream):
    rng = np.random.default_rng(0)
    arrays = {"int16": rng.integers(-1024, 3072, (8, 9, 10)).astype(np.int16),
              "int32": rng.integers(-1024, 3072, (8, 9, 10)).astype(np.int32),
              "float32": rng.normal(0, 1, (8, 9, 10)).astype(np.float32),
              "subnormal": rng.normal(0, 1, (8, 9, 10)) * 1e-310}
    path = io.write_volume(bv.Volume.from_array(arrays[data]), tmp_path / "in.nrrd")
    done = run("reduce-bits", path, tmp_path / "out.nrrd", *args, stream)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"bigvolume: error: {path}: ") and words in lines[0], lines[0]
    assert not (tmp_path / "out.nrrd").exists()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("percentiles", [None, (0, 50), (1, 99), (40, 60)])
@pytest.mark.parametrize("stream", [False, True])
def test_percentile_windows_of_signed_integers_are_those_of_the_values(tmp_path, dtype, percentiles, stream):
    """numpy interpolated percentiles in the values' own type: between far-apart signed integers the difference
    wrapped (an int16 window of -32742.5 .. 20000 for -20000 and 20000, a voxel at -20000 written as 62, "clipped
    0"); in import-stack --bits too. The oracle: numpy's percentiles of the values in float64."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(info.bits)
    low, high = int(info.min * 0.6), int(info.max * 0.6)
    array = rng.permutation(np.repeat(np.array([low, high], dtype), 840)).reshape(10, 12, 14)
    # half and half: the 50th percentile interpolates between the two (where the wrap showed)
    path = io.write_volume(bv.Volume.from_array(array), tmp_path / "in.nrrd")
    report = reduce_bits_file(path, tmp_path / "out.nrrd", 8, percentiles=percentiles, stream=stream,
                              memory_limit=1 if stream else None)
    out = io.read_volume(tmp_path / "out.nrrd").array
    window = np.percentile(array.astype(np.float64), percentiles or (0.1, 99.9))
    if window[1] <= window[0]:
        window = (float(array.min()), float(array.max()))
    assert (report.window.low, report.window.high) == pytest.approx(tuple(window), rel=1e-9)
    assert report.window.low >= array.min() and report.window.high <= array.max()
    expected = np.clip(np.rint((array.astype(np.float64) - window[0]) * 255 / (window[1] - window[0])), 0, 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    assert report.clipped == np.count_nonzero((array < window[0]) | (array > window[1]))


def test_percentiles_asked_for_are_used_when_the_type_already_fits(tmp_path):
    """uint8 data asked for 8 bits with --percentiles kept its values silently (a --window was used)."""
    array = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    kept, report = reduce_bits(bv.Volume.from_array(array), 8)
    assert report.kept_values and np.array_equal(kept.array, array)
    stretched, report = reduce_bits(bv.Volume.from_array(array), 8, percentiles=(10, 90))
    assert not report.kept_values and (report.window.low, report.window.high) == (25.5, 229.5)
    assert stretched.array.min() == 0 and stretched.array.max() == 255
    assert report.clipped == np.count_nonzero((array < 25.5) | (array > 229.5)) == 52


# --- 64-bit integers beyond 2^53 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, base", [(np.int64, 2**60), (np.int64, -(2**58)), (np.int64, 2**53 + 2**10),
                                         (np.uint64, 2**64 - 2**13), (np.uint64, 2**62)])
@pytest.mark.parametrize("how", [{}, {"percentiles": (1, 99)}, {"window": "base"}, {"stretch": True}],
                         ids=["default", "percentiles", "window", "stretch"])
@pytest.mark.parametrize("stream", [False, True])
def test_64_bit_integers_too_close_for_double_precision_are_refused(tmp_path, dtype, base, how, stream):
    """int64 2^60 + 0 .. 255 to 8 bits came out 0 or 255, "window 1.15292e+18 .. 1.15292e+18", exit 0: float64, in
    which the map runs, holds every 256th integer there. Refused in one line naming the file, --window given as
    floats (2^60 .. 2^60 + 255 reads 2^60 .. 2^60 + 256) included; nothing written."""
    step = 16 if dtype == np.uint64 else 1
    array = (np.array(base, dtype) + (np.arange(512, dtype=dtype) * step)).reshape(8, 8, 8)
    path = io.write_volume(bv.Volume.from_array(array), tmp_path / "in.nrrd")
    options = dict(how)
    if options.get("window") == "base":
        options["window"] = (float(array.min()), float(array.max()))
    with pytest.raises(BigVolumeError, match=r"beyond 2\^53") as refused:
        reduce_bits_file(path, tmp_path / "out.nrrd", 8, stream=stream, memory_limit=1 if stream else None,
                         **options)
    assert str(refused.value).startswith(str(path)) and "\n" not in str(refused.value)
    assert not (tmp_path / "out.nrrd").exists()
    with pytest.raises(BigVolumeError, match=r"beyond 2\^53"):
        reduce_bits(bv.Volume.from_array(array), 16, **options)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("stream", [False, True])
def test_64_bit_integers_that_double_precision_holds_map_exactly(tmp_path, dtype, stream):
    """Just below 2^53 every integer is a float64: 256 neighbours map onto 256 levels. Far-apart values beyond it
    (-2^62 and 2^62: steps of 2^55) map well too and are not refused."""
    base = 2**53 - 255
    array = (np.array(base, dtype) + np.random.default_rng(5).permutation(256).astype(dtype)).reshape(4, 8, 8)
    path = io.write_volume(bv.Volume.from_array(array), tmp_path / "in.nrrd")
    report = reduce_bits_file(path, tmp_path / "out.nrrd", 8, window=(base, base + 255), stream=stream,
                              memory_limit=1 if stream else None)
    np.testing.assert_array_equal(io.read_volume(tmp_path / "out.nrrd").array, array - np.array(base, dtype))
    assert report.clipped == 0
    far = np.where(array % 2 == 0, 2**62, 2**61).astype(dtype)
    result, _ = reduce_bits(bv.Volume.from_array(far), 8)
    np.testing.assert_array_equal(result.array, np.where(far == 2**62, 255, 0))


def test_cli_refuses_64_bit_integers_beyond_2_to_the_53(tmp_path):
    array = (2**60 + np.arange(256, dtype=np.int64)).reshape(4, 8, 8)
    path = io.write_volume(bv.Volume.from_array(array), tmp_path / "big.nrrd")
    for extra in ([], ["--window", str(2**60), str(2**60 + 255)], ["--stream"]):
        done = run("reduce-bits", path, tmp_path / "out.nrrd", "--bits", "8", *extra)
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert done.stderr.startswith(f"bigvolume: error: {path}: int64 values near 1.15292e+18 lie beyond 2^53")
        assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.nrrd").exists()


# --- decisions taken on a subsample, checked on every voxel -----------------------------------------------------------
@pytest.fixture
def small_sample(monkeypatch):
    """The statistics pass sees every 2nd voxel along each axis of a small volume, as of one over SAMPLE_VOXELS."""
    from bigvolume.ops import precision
    whole = precision.subsample
    monkeypatch.setattr(precision, "subsample", lambda source, max_voxels=None: whole(source, 2000))


def odd_fractions(dtype, seed, where, shape=(14, 16, 18)) -> np.ndarray:
    """Whole numbers 0 .. 999, and + 0.5 on voxels a step-2 subsample never sees (odd slices, or odd (k, j, i))."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 1000, shape).astype(dtype)
    if where == "slices":
        array[1::2] += 0.5
    else:
        array[1::2, 1::2, 1::2][rng.random((shape[0] // 2, shape[1] // 2, shape[2] // 2)) < 0.1] += 0.5
    return array


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits, signed, window", [(16, False, None), (16, True, None), (16, False, (0, 1000)),
                                                  (16, True, (-5, 999))])
@pytest.mark.parametrize("where", ["slices", "voxels"])
@pytest.mark.parametrize("stream", [False, True])
def test_float_values_the_subsample_took_for_integers_are_stretched_when_they_are_not(
        tmp_path, small_sample, dtype, bits, signed, window, where, stream):
    """float32 0 .. 999 with + 0.5 on every odd slice, 130^3 (the subsample takes every 2nd voxel): "float32 values
    (all integers, 0 .. 999) kept as they are in uint16", half the voxels rounded, "clipped 0". Every voxel is now
    checked while mapped; a fraction restarts the reduction with the map --stretch takes, and a note says why."""
    array = odd_fractions(dtype, bits + (window or (0,))[0], where)
    volume = bv.Volume.from_array(array, spacing=(0.5, 0.6, 0.7))
    path = io.write_volume(volume, tmp_path / "in.nrrd")
    report = reduce_bits_file(path, tmp_path / "out.nrrd", bits, signed=signed, window=window, stream=stream,
                              memory_limit=1 if stream else None)
    stretched, stretched_report = reduce_bits(volume, bits, signed=signed, window=window, stretch=True)
    in_memory, memory_report = reduce_bits(volume, bits, signed=signed, window=window)
    out = io.read_volume(tmp_path / "out.nrrd").array
    for result, rep in ((out, report), (in_memory.array, memory_report)):
        assert not rep.kept_values and "values kept" not in rep.summary()
        np.testing.assert_array_equal(result, stretched.array)
        assert (rep.window, rep.clipped) == (stretched_report.window, stretched_report.clipped)
        assert any(f"{np.dtype(dtype)} values are not all integers, though those of a subsample were" in note
                   for note in rep.notes), rep.notes
    # whole numbers alone are still kept, with no such note
    whole = io.write_volume(bv.Volume.from_array(np.floor(array)), tmp_path / "whole.nrrd")
    kept = reduce_bits_file(whole, tmp_path / "w.nrrd", bits, signed=signed, window=window, stream=stream,
                            memory_limit=1 if stream else None)
    assert kept.kept_values and not any("not all integers" in note for note in kept.notes)


@pytest.mark.parametrize("dtype, bits, signed, labels, beyond", [(np.uint16, 8, False, 5, 300),
                                                                 (np.int16, 8, True, 40, -200),
                                                                 (np.int32, 16, False, 1000, 70000),
                                                                 (np.float32, 8, False, 9, 256)])
@pytest.mark.parametrize("stream", [False, True])
def test_values_beyond_what_the_subsample_saw_are_said_when_clipped(tmp_path, small_sample, dtype, bits, signed,
                                                                    labels, beyond, stream):
    """A uint16 label map 0 .. 5 with label 300 only at odd indices, to 8 bits: the note said "values (0 .. 5)
    kept", and 300 became 255. Kept still (stretching would merge the top labels), but a warning says how many voxels
    lay beyond the kept range and that keeping rested on a subsample."""
    rng = np.random.default_rng(labels)
    array = rng.integers(0, labels + 1, (14, 16, 18)).astype(dtype)
    odd = array[1::2, 1::2, 1::2]
    odd[rng.random(odd.shape) < 0.05] = beyond
    count = int(np.count_nonzero(array == beyond))
    path = io.write_volume(bv.Volume.from_array(array), tmp_path / "labels.nrrd")
    report = reduce_bits_file(path, tmp_path / "out.nrrd", bits, signed=signed, stream=stream,
                              memory_limit=1 if stream else None)
    memory_report = reduce_bits(bv.Volume.from_array(array), bits, signed=signed)[1]
    out = io.read_volume(tmp_path / "out.nrrd").array
    low, high = np.iinfo(out.dtype).min, np.iinfo(out.dtype).max
    np.testing.assert_array_equal(out, np.clip(array, low, high))
    for rep in (report, memory_report):
        assert rep.kept_values and rep.clipped == count > 0
        assert any(note.startswith(f"{count} voxels lie outside {low} .. {high} and were clipped to it") and
                   "because those of a subsample (0 .. " in note for note in rep.notes), rep.notes
    clean = io.write_volume(bv.Volume.from_array(np.where(array == beyond, 0, array).astype(dtype)),
                            tmp_path / "clean.nrrd")
    assert not any("subsample" in note for note in reduce_bits_file(clean, tmp_path / "c.nrrd", bits,
                                                                    signed=signed).notes)


def test_cli_subsample_checks_at_full_size(tmp_path):
    """The reviewer's volumes, 130^3 (over SAMPLE_VOXELS: the statistics see every 2nd voxel), through the command
    line: the kept choice is checked on every voxel, not trusted."""
    n = 130
    rng = np.random.default_rng(3)
    halves = rng.integers(0, 1000, (n, n, n)).astype(np.float32)
    halves[1::2] += 0.5
    path = io.write_volume(bv.Volume.from_array(halves), tmp_path / "halves.nrrd")
    done = run("reduce-bits", path, tmp_path / "h16.nrrd", "--bits", "16")
    assert done.returncode == 0 and "float32 values are not all integers" in done.stderr, done.stderr
    out = io.read_volume(tmp_path / "h16.nrrd").array
    assert len(np.unique(out[1, :4, :4])) == len(np.unique(halves[1, :4, :4]))  # halves not rounded away
    labels = rng.integers(0, 6, (n, n, n)).astype(np.uint16)
    labels[1::2, 1::2, 1::2][rng.random((n // 2,) * 3) < 0.01] = 300
    path = io.write_volume(bv.Volume.from_array(labels), tmp_path / "labels.nrrd")
    done = run("reduce-bits", path, tmp_path / "l8.nrrd", "--bits", "8")
    count = int(np.count_nonzero(labels == 300))
    assert done.returncode == 0 and f"{count} voxels lie outside 0 .. 255" in done.stderr, done.stderr


# --- window ends printed apart ----------------------------------------------------------------------------------------
def printed_window(summary: str):
    import re
    found = re.search(r"window (\S+) \.\. (\S+) ->", summary)
    return found[1], found[2]


@pytest.mark.parametrize("low, high", [(1.0, 1.0000000000000002), (3e9, 3e9 + 512), (-2.5e-7, -2.4999999e-7),
                                       (123456.1, 123456.2), (0.1, 0.1 + 2**-55)])
def test_window_ends_are_printed_with_the_digits_that_tell_them_apart(low, high):
    """`--window 1 1.0000000000000002` printed "window 1 .. 1", a 3e9 window "3e+09 .. 3e+09"."""
    volume = bv.Volume.from_array(np.linspace(low, high, 64).reshape(4, 4, 4))
    report = reduce_bits(volume, 8, window=(low, high))[1]
    ends = printed_window(report.summary())
    assert ends[0] != ends[1], report.summary()
    assert abs(float(ends[0]) - low) < abs(float(ends[0]) - high)
    assert abs(float(ends[1]) - high) < abs(float(ends[1]) - low)


def test_window_ends_of_a_scaled_nifti_are_printed_apart_and_short_ones_stay_short(tmp_path):
    raw = np.random.default_rng(9).integers(0, 4096, (9, 10, 11)).astype(np.int16)
    path = scaled_nifti(tmp_path / "big.nii", raw, 1.0, 3e9)
    done = run("reduce-bits", path, tmp_path / "out.nrrd", "--bits", "8")
    assert done.returncode == 0, done.stderr
    ends = printed_window(done.stdout)
    assert ends[0] != ends[1] and all(abs(float(end) - 3e9) < 1e4 for end in ends), done.stdout
    short = reduce_bits(ramp_volume(), 8, window=(-1024, 3071))[1].summary()
    assert "window -1024 .. 3071 -> 0 .. 255" in short


def test_the_statistics_sample_holds_its_voxels_not_the_slices_they_came_from():
    """Each slice's strided sample was a view that kept its whole slice until the stack: memory grew as the input's
    size to the 2/3 (a helper measured 1.8 GiB for a 39 GiB input at a 256 MB limit)."""
    import tracemalloc

    from bigvolume.ops.precision import subsample

    class Slices:  # 1000 slices of 1000 x 1000 uint8, each read afresh (as a decoder or a plain read gives them)
        slices, slice_shape = 1000, (1000, 1000)

        def read(self, k0, k1):
            return np.full((k1 - k0, 1000, 1000), k0 % 251, np.uint8)
    tracemalloc.start()
    try:
        sample = subsample(Slices(), 2_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sample.shape == (125, 125, 125) and sample[1, 0, 0] == 8
    assert peak < 16 * 2**20, peak  # the sample (2 MiB) and one slice, not 125 slices (125 MB)


def test_a_memory_limit_that_leaves_no_room_is_said_before_the_reduction(tmp_path, caplog):
    """reduce-bits planned one slice at a time under a limit it could not meet and said nothing (resample says so)."""
    path = bv.write_volume(bv.Volume.from_array(np.arange(6 * 40 * 50, dtype=np.uint16).reshape(6, 40, 50)),
                           tmp_path / "in.nhdr")
    bv.reduce_bits_file(path, tmp_path / "out.nhdr", bits=8, memory_limit=1)
    said = [r.getMessage() for r in caplog.records if "leaves no room" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(str(path)), said


@pytest.mark.parametrize("suffix, output", [(".nhdr", ".nhdr"), (".nrrd", ".nrrd"), (".nii.gz", ".nii")])
def test_reading_whole_over_the_limit_is_said_before_the_reduction(tmp_path, caplog, suffix, output):
    """--no-stream over the limit read the volume whole in silence (resample says so)."""
    array = np.random.default_rng(len(suffix)).integers(0, 4000, (12, 40, 50)).astype(np.uint16)
    path = bv.write_volume(bv.Volume.from_array(array), tmp_path / f"in{suffix}")
    seen = []
    with caplog.at_level("WARNING", logger="bigvolume"):
        bv.reduce_bits_file(path, tmp_path / f"whole{output}", bits=8, stream=False, memory_limit=1000,
                            progress=lambda f, m="": seen.append(len(caplog.records)) if not seen else None)
    said = [r.getMessage() for r in caplog.records if "reading it whole" in r.getMessage()]
    assert said == [f"{path}: reading it whole (as asked) needs about 70.31 KiB, more than the memory limit "
                    f"1000 B"], said
    assert seen and seen[0] >= 1  # said before the first progress
    caplog.clear()
    with caplog.at_level("WARNING", logger="bigvolume"):  # streamed, or whole within the limit: nothing to say
        bv.reduce_bits_file(path, tmp_path / f"streamed{output}", bits=8, memory_limit=1000)
        bv.reduce_bits_file(path, tmp_path / f"fits{output}", bits=8, stream=False, memory_limit="1GB")
    assert not [r for r in caplog.records if "reading it whole" in r.getMessage()]
    whole = bv.read_volume(tmp_path / f"whole{output}").array
    np.testing.assert_array_equal(whole, bv.read_volume(tmp_path / f"streamed{output}").array)
    np.testing.assert_array_equal(whole, bv.read_volume(tmp_path / f"fits{output}").array)
    assert whole.dtype == np.uint8 and whole.max() > 200


def test_a_run_in_memory_says_nothing_of_its_own_buffer_limit(tmp_path, caplog, monkeypatch):
    """Read whole within the user's limit, the slabs over the array get a limit of ours (what the process holds plus
    a share of the array); when that left no room the note named it, a limit the user never gave ("memory limit
    124.09 MiB leaves no room ..." under the default 5.89 GiB)."""
    from bigvolume.ops import precision
    array = np.random.default_rng(4).integers(0, 4000, (10, 30, 40)).astype(np.uint16)
    path = bv.write_volume(bv.Volume.from_array(array), tmp_path / "in.nhdr")
    monkeypatch.setattr(precision, "in_memory_limit", lambda *args: 1)  # ours leaves no room
    with caplog.at_level("WARNING", logger="bigvolume"):
        bv.reduce_bits_file(path, tmp_path / "out.nhdr", bits=8, memory_limit="1GB")
        bv.reduce_bits(bv.read_volume(path), 8)
    assert not [r.getMessage() for r in caplog.records if "memory limit" in r.getMessage()]
    with caplog.at_level("WARNING", logger="bigvolume"):  # the user's limit, streamed: said
        bv.reduce_bits_file(path, tmp_path / "streamed.nhdr", bits=8, memory_limit=1)
    assert [r.getMessage() for r in caplog.records if "leaves no room" in r.getMessage()]
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "out.nhdr").array,
                                  bv.read_volume(tmp_path / "streamed.nhdr").array)
