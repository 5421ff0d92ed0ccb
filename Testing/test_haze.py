"""Haze removal (bigvolume.ops.haze): the multi-level Otsu levels, border-connected air, the object's morphology, the
slab-by-slab (streamed) run against an independent whole-volume reference (scipy.ndimage), the report, edge cases,
the command line, and the real head MRI against niimath."""
import itertools
import re
import shutil
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

import bigvolume as bv
from bigvolume.ops import haze
from bigvolume.ops.haze import api, compression, denoise, pipeline
from bigvolume.io import files as io
import head_mri as test_volumes  # Testing/head_mri.py
from bigvolume.core.errors import BigVolumeError
from bigvolume.ops.haze import LEVELS, HazeOptions, dehaze, dehaze_file, find_threshold, haze_mask, multi_otsu

BIGVOLUME = [sys.executable, "-m", "bigvolume"]
CROSS = ndimage.generate_binary_structure(3, 1)  # 6-connectivity
MRI, BRAIN = Path(test_volumes.HEAD_MRI), Path(test_volumes.HEAD_BRAIN_MASK)


def run(*args):
    return subprocess.run(BIGVOLUME + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def oblique(array, **kwargs) -> bv.Volume:
    """A volume on an anisotropic, flipped grid with an offset origin (so lost geometry shows)."""
    return bv.Volume.from_array(array, spacing=(0.7, 0.45, 1.3), origin=(-12.5, 40.0, 3.25),
                                direction=np.diag([1.0, -1.0, 1.0]), **kwargs)


def reference_haze(array, value, options: HazeOptions, dark=None, band_floor=None, peel=False) -> np.ndarray:
    """The haze mask computed on the whole volume with scipy.ndimage: an implementation independent of the
    slab pipeline's labelling, union-find and morphology. ``dark`` replaces ``array < value`` (or NaN) when given.
    ``peel`` (level auto): the object's voxels below ``value`` that touch the rest (6 neighbours) go first.
    ``band_floor`` (level auto): the dilation only takes voxels whose [1 2 1]^3 mean over their non-object
    neighbours reaches it (a geodesic dilation, scipy's ``mask``)."""
    if dark is None:
        dark = array < value
        if array.dtype.kind == "f":
            dark |= np.isnan(array)
    if options.air == "border":
        labels, _ = ndimage.label(dark, CROSS)
        faces = np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(), labels[:, -1].ravel(),
                                labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
        air = np.isin(labels, faces[faces > 0])
    else:
        air = dark
    obj = ~air
    if options.largest_only:
        labels, count = ndimage.label(obj, CROSS)
        obj = labels == 1 + np.argmax(np.bincount(labels.ravel())[1:]) if count else obj
    if peel:
        obj = obj & ~(ndimage.binary_dilation(~obj, np.ones((3, 3, 3), bool)) & (array < value))
    if options.close:
        grown = ndimage.binary_dilation(obj, CROSS, iterations=options.close)
        obj = ndimage.binary_erosion(grown, CROSS, iterations=options.close, border_value=1)
    if options.dilate and band_floor is not None:
        weights = np.einsum("i,j,k->ijk", *[np.array([1.0, 2.0, 1.0])] * 3)
        total = ndimage.correlate(np.where(obj, 0.0, array.astype(np.float64)), weights, mode="nearest")
        weight = ndimage.correlate((~obj).astype(np.float64), weights, mode="nearest")
        allowed = obj | (total >= band_floor * weight)
        obj = ndimage.binary_dilation(obj, CROSS, iterations=options.dilate, mask=allowed)
    elif options.dilate:
        obj = ndimage.binary_dilation(obj, CROSS, iterations=options.dilate)
    return ~obj


def noisy(array, sigma=3.0, seed=0):
    return array + np.abs(np.random.default_rng(seed).normal(0, sigma, array.shape))


def class_slabs(values, depth=8, size=12, seed=0):
    """Slabs along k of the given intensities (equal thickness) with mild noise: each slab touches the border."""
    array = np.repeat(np.asarray(values, float), depth)[:, None, None] * np.ones((1, size, size))
    return noisy(array, 2.0, seed).astype(np.float32)


def shell_with_cavity(n=40, seed=1):
    """A bright spherical shell around a dark cavity as dark as the air outside, in noisy air."""
    k, j, i = np.mgrid[:n, :n, :n]
    r = np.sqrt((k - n / 2) ** 2 + (j - n / 2) ** 2 + (i - n / 2) ** 2)
    array = noisy(np.where((r > 8) & (r < 15), 200.0, 5.0), 4.0, seed)
    return array.astype(np.float32), r


def smooth_blobs(shape, seed, sigma=2.0):
    """A random blobby intensity field (many dark channels through bright matter, in every direction)."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    field = (field - field.min()) / (field.max() - field.min())
    return noisy(field * 1000, 5.0, seed + 100).astype(np.float32)


# --- the threshold --------------------------------------------------------------------------------------------

def between_class_score(histogram, cuts):
    edges = (0,) + tuple(cuts) + (len(histogram),)
    x = np.arange(len(histogram))
    return sum((histogram[a:b] * x[a:b]).sum() ** 2 / histogram[a:b].sum()
               for a, b in zip(edges[:-1], edges[1:]) if histogram[a:b].sum() > 0)


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_multi_otsu_equals_a_brute_force_search(classes):
    rng = np.random.default_rng(classes)
    for _ in range(6):
        histogram = rng.integers(0, 1000, 24).astype(float) * (rng.random(24) > 0.2)
        best = max(itertools.combinations(range(1, 24), classes - 1),
                   key=lambda cuts: between_class_score(histogram, cuts))
        cuts = multi_otsu(histogram, classes)
        assert between_class_score(histogram, cuts) == pytest.approx(between_class_score(histogram, best), rel=1e-12)
        assert len(cuts) == classes - 1 and list(cuts) == sorted(set(cuts))


def test_levels_are_mricrogls_table():
    assert LEVELS == {1: (4, 3), 2: (3, 2), 3: (2, 1), 4: (3, 1), 5: (4, 1)}


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_every_level_makes_the_darkest_classes_air(level):
    classes, air_classes = LEVELS[level]
    values = [10, 80, 150, 220][:classes]
    volume = oblique(class_slabs(values))
    threshold = find_threshold(volume, level)
    assert (threshold.classes, threshold.air_classes, len(threshold.thresholds)) == (classes, air_classes,
                                                                                      classes - 1)
    assert values[air_classes - 1] + 8 < threshold.value < values[air_classes] - 8
    mask = haze_mask(volume, HazeOptions(level=level, dilate=0))
    expected = np.zeros(mask.shape, bool)
    expected[:8 * air_classes] = True
    np.testing.assert_array_equal(mask, expected)


def test_three_classes_level_2_removes_two_darkest_level_4_only_the_darkest():
    """niimath's level 2 behaves like its level 4; ours follows MRIcroGL's table."""
    volume = oblique(class_slabs([10, 80, 200]))
    level2 = haze_mask(volume, HazeOptions(level=2))
    level4 = haze_mask(volume, HazeOptions(level=4))
    dilate = haze.DEFAULT_DILATE
    assert level2[:16 - dilate].all() and not level2[16 - dilate:].any()
    assert level4[:8 - dilate].all() and not level4[8 - dilate:].any()


def test_threshold_comes_from_a_subsample_and_the_robust_range():
    volume = smooth_blobs((60, 50, 40), seed=3)
    volume.flat[:5] = 1e9  # a few hot voxels must not stretch the histogram
    small = find_threshold(volume, 5, sample_voxels=5000)
    full = find_threshold(volume, 5, sample_voxels=10**9)
    assert small.sampled < 10000 <= full.sampled == volume.size
    assert full.window[1] < 1e4
    assert small.value == pytest.approx(full.value, rel=0.1)


# --- air, object, morphology ----------------------------------------------------------------------------------

def test_cavity_inside_the_shell_stays_by_default_and_goes_with_air_all():
    array, r = shell_with_cavity()
    volume = oblique(array)
    kept = haze_mask(volume, HazeOptions(level=3))
    removed = haze_mask(volume, HazeOptions(level=3, air="all"))
    assert not kept[r < 6].any() and kept[r > 18].all()
    assert removed[r < 6].all() and removed[r > 18].all()
    assert not kept[(r > 8) & (r < 15)].any() and not removed[(r > 8) & (r < 15)].any()


def test_dilation_keeps_a_rim_of_that_many_voxels_around_the_object():
    array, r = shell_with_cavity()
    for dilate in (0, 1, 3):
        mask = haze_mask(oblique(array), HazeOptions(level=3, dilate=dilate))
        assert (~mask & (r >= 15)).any() == (dilate > 0)
        assert not (~mask & (r >= 15 + dilate)).any()  # city-block steps never reach farther than Euclid
        np.testing.assert_array_equal(mask, reference_haze(array, find_threshold(array, 3).value,
                                                           HazeOptions(level=3, dilate=dilate)))


def test_largest_only_drops_smaller_objects_and_close_keeps_a_slot_open_to_the_outside():
    array = np.full((30, 30, 30), 5.0)
    array[5:25, 5:25, 5:25] = 200.0
    array[14:16, 5:15, 5:25] = 5.0     # a slot 2 voxels wide opening to the air (a sulcus)
    array[1:4, 1:4, 26:29] = 200.0     # a small separate object
    array = noisy(array, 2.0).astype(np.float32)
    volume = oblique(array)
    plain = haze_mask(volume, HazeOptions(level=3, dilate=0))
    assert plain[15, 8, 15] and not plain[2, 2, 27]
    largest = haze_mask(volume, HazeOptions(level=3, dilate=0, largest_only=True))
    assert largest[2, 2, 27] and not largest[10, 10, 10]
    closed = haze_mask(volume, HazeOptions(level=3, dilate=0, close=1))
    assert not closed[14:16, 6:15, 6:24].any()
    value = find_threshold(volume, 3).value
    for options in (HazeOptions(level=3, dilate=0, largest_only=True), HazeOptions(level=3, dilate=1, close=1)):
        np.testing.assert_array_equal(haze_mask(volume, options), reference_haze(array, value, options))


def u_tunnel(k=24, j=14, i=14):
    """Bright matter with a dark 3x3 tunnel that opens to the border at the top (i = 0), runs down through the
    whole depth, crosses over and comes back up to a pocket near the top that touches no border: that pocket is air
    only through slabs far below it. Plus a sealed cavity that straddles slab boundaries."""
    array = np.full((k, j, i), 200.0)
    array[1:4, 2:5, 0:6] = 5.0           # entrance from the i = 0 face
    array[1:k - 2, 2:5, 3:6] = 5.0       # down
    array[k - 5:k - 2, 2:11, 3:6] = 5.0  # across j
    array[1:k - 2, 8:11, 3:6] = 5.0      # back up to the pocket at k = 1
    array[8:15, 5:9, 8:12] = 5.0         # sealed cavity
    return noisy(array, 2.0).astype(np.float32)


def test_air_reached_only_through_other_slabs_is_found_in_one_slice_slabs(tmp_path, monkeypatch):
    array = u_tunnel()
    options = HazeOptions(level=3, dilate=0)
    value = find_threshold(array, 3).value
    expected = reference_haze(array, value, options)
    assert expected[1:4, 8:11, 3:6].all() and not expected[8:15, 5:9, 8:12].any()
    monkeypatch.setattr(api, "SLAB_VOXELS", 1)  # one slice per slab
    labelled = []  # the slices of each labelled block: proves the patch above took effect
    original = pipeline.label
    monkeypatch.setattr(pipeline, "label", lambda mask: labelled.append(mask.shape[0]) or original(mask))
    np.testing.assert_array_equal(haze_mask(oblique(array), options), expected)
    assert set(labelled) == {1} and len(labelled) == array.shape[0]
    path = io.write_volume(oblique(array), tmp_path / "tunnel.nhdr")
    dehaze_file(path, tmp_path / "out.nhdr", options, mask_out=tmp_path / "mask.nhdr", stream=True, memory_limit=1)
    np.testing.assert_array_equal(io.read_volume(tmp_path / "mask.nhdr").array.astype(bool), expected)


@pytest.mark.parametrize("shape, seed", [((37, 23, 29), 0), ((16, 40, 9), 1), ((9, 9, 60), 2), ((3, 31, 33), 3)])
@pytest.mark.parametrize("options", [HazeOptions(level=5), HazeOptions(level=4, dilate=1, close=1),
                                     HazeOptions(level=3, air="all", dilate=0),
                                     HazeOptions(level=5, largest_only=True, close=2, dilate=1),
                                     HazeOptions(), HazeOptions(air="all", close=1, largest_only=True)],
                         ids=["level5", "close", "air-all", "largest", "auto", "auto-all-largest"])
def test_streamed_equals_in_memory_equals_reference(tmp_path, shape, seed, options):
    volume = oblique(smooth_blobs(shape, seed))
    expected_volume, expected_mask, report = dehaze(volume, options)
    dark = None
    if options.denoise:  # dark in the denoised copy of the whole volume at once (not slab by slab)
        value = np.float32(report.threshold.value)
        dark = denoise.smooth_121(volume.array, 0, volume.array.shape[0]) < 64 * value
    np.testing.assert_array_equal(expected_mask, reference_haze(volume.array, report.threshold.value, options, dark,
                                                                report.threshold.band_floor, peel=options.denoise))
    path = io.write_volume(volume, tmp_path / "in.nrrd")  # gzip-compressed: decoded slab by slab
    streamed = dehaze_file(path, tmp_path / "out.nhdr", options, mask_out=tmp_path / "mask.nrrd", stream=True,
                           memory_limit=1)
    assert "streamed" in streamed.summary()
    out = io.read_volume(tmp_path / "out.nhdr")
    np.testing.assert_array_equal(out.array, expected_volume.array)
    np.testing.assert_array_equal(io.read_volume(tmp_path / "mask.nrrd").array, expected_mask.view(np.uint8))
    assert (streamed.changed, streamed.object_voxels, streamed.fill_value) == (report.changed, report.object_voxels,
                                                                               report.fill_value)


def test_many_labels_open_across_slab_boundaries_are_kept_in_two_bytes(monkeypatch):
    """Random dark voxels labelled one slice at a time: hundreds of components per slice continue in the next."""
    rng = np.random.default_rng(4)
    array = np.where(rng.random((6, 80, 80)) < 0.45, 5.0, 200.0) + rng.random((6, 80, 80))
    codes = []
    original = pipeline.compact
    monkeypatch.setattr(pipeline, "compact", lambda *args: codes.append(original(*args)) or codes[-1])
    monkeypatch.setattr(api, "SLAB_VOXELS", 1)
    options = HazeOptions(level=3, dilate=0)
    mask = haze_mask(oblique(array.astype(np.float32)), options)
    assert np.dtype(np.uint16) in {code.dtype for code, _ in codes}  # the first and last slices need only 1
    np.testing.assert_array_equal(mask, reference_haze(array, find_threshold(array, 3).value, options))


def test_whole_volume_writers_and_cancel(tmp_path):
    volume = oblique(smooth_blobs((20, 18, 16), 6))
    source = io.write_volume(volume, tmp_path / "in.nrrd")
    expected, expected_mask, _ = dehaze(volume)
    dehaze_file(source, tmp_path / "out.mha", mask_out=tmp_path / "mask.mha")  # SimpleITK writes these whole
    np.testing.assert_array_equal(io.read_volume(tmp_path / "out.mha").array, expected.array)
    np.testing.assert_array_equal(io.read_volume(tmp_path / "mask.mha").array, expected_mask.view(np.uint8))
    for stream in (False, True):
        with pytest.raises(bv.Cancelled):
            dehaze_file(source, tmp_path / "never.nrrd", mask_out=tmp_path / "never_mask.nrrd", stream=stream,
                        memory_limit=1, progress=lambda fraction, message: fraction < 0.5)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd", "mask.mha", "out.mha"]


@pytest.mark.parametrize("suffixes", [(".mha", ".mha"), (".nii.gz", ".mha"), (".mha", ".nii")])
def test_an_output_and_its_mask_appear_together_or_not_at_all(tmp_path, monkeypatch, suffixes):
    """The whole-volume writers (SimpleITK's: .mha, .nii.gz) put the output in place before writing the mask: a
    failure writing the mask (a full disk) left the output alone, its mask missing. Both are written, then both put
    in place. (Slab writers: see the next test.)"""
    import SimpleITK as sitk
    volume = oblique(smooth_blobs((20, 18, 16), 6))
    source = io.write_volume(volume, tmp_path / "in.nrrd")
    out, mask = tmp_path / f"out{suffixes[0]}", tmp_path / f"mask{suffixes[1]}"
    real_write = sitk.WriteImage

    def disk_full_for_the_mask(image, name, *args, **kwargs):
        if Path(name).name.startswith("mask"):
            raise RuntimeError("ITK ERROR: ImageFileWriter: No space left on device")
        return real_write(image, name, *args, **kwargs)
    monkeypatch.setattr(sitk, "WriteImage", disk_full_for_the_mask)
    with pytest.raises(bv.VolumeFileError, match=rf"mask{re.escape(suffixes[1])}: cannot write \(.*No space left"):
        dehaze_file(source, out, mask_out=mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]
    monkeypatch.setattr(sitk, "WriteImage", real_write)
    dehaze_file(source, out, mask_out=mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.nrrd", out.name, mask.name])


# --- values, report, geometry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_dehaze_fills_the_minimum_keeps_type_and_grid_and_reports_honestly(dtype):
    array, r = shell_with_cavity()
    array = (array - 100 if dtype == np.int16 else array).astype(dtype)
    volume = oblique(array)
    before = array.copy()
    out, mask, report = dehaze(volume, HazeOptions(level=3))
    np.testing.assert_array_equal(volume.array, before)  # input untouched
    assert out.array.dtype == dtype and out.geometry == volume.geometry
    assert out.array[mask].min() == out.array[mask].max() == array.min() == report.fill_value
    np.testing.assert_array_equal(out.array[~mask], array[~mask])
    changed = out.array != array
    assert report.changed == np.count_nonzero(changed) > 0
    assert report.changed_fraction == pytest.approx(report.changed / array.size)
    assert report.object_voxels == np.count_nonzero(~mask) and report.haze_voxels == np.count_nonzero(mask)
    assert report.gzip_before == len(zlib.compress(array.tobytes(), 6))  # small: measured exactly
    assert report.gzip_after == len(zlib.compress(out.array.tobytes(), 6)) < 0.7 * report.gzip_before
    assert "%" in report.summary() and "gzip" in report.summary()


def test_a_given_fill_value_must_fit_the_type():
    array, _ = shell_with_cavity()
    volume = oblique(array.astype(np.uint8))
    out, mask, report = dehaze(volume, HazeOptions(level=3, fill=7))
    assert (out.array[mask] == 7).all() and report.fill_value == 7
    for fill in (300, -1, 2.5):
        with pytest.raises(BigVolumeError, match="does not fit the volume's pixel type uint8"):
            dehaze(volume, HazeOptions(level=3, fill=fill))
    with pytest.raises(BigVolumeError, match="'min' or a number"):
        HazeOptions(fill="lowest")
    with warnings.catch_warnings():  # float32: refused in words, without numpy's overflow warning first
        warnings.simplefilter("error")
        with pytest.raises(BigVolumeError, match="does not fit the volume's pixel type float32"):
            dehaze(oblique(array.astype(np.float32)), HazeOptions(level=3, fill=1e39))


def test_large_volume_compressed_size_is_estimated_from_a_slice_sample(monkeypatch):
    volume = oblique(smooth_blobs((40, 30, 30), 5))
    monkeypatch.setattr(compression, "COMPRESSION_SAMPLE_BYTES", 30 * 30 * 4 * 8)
    _, _, report = dehaze(volume)
    exact = len(zlib.compress(volume.array.tobytes(), 6))
    assert report.gzip_before == pytest.approx(exact, rel=0.1)
    assert report.sizes_estimated.startswith("estimated from 1 slice in 5") and "1 slice in 5" in report.summary()


@pytest.mark.parametrize("kwargs, message", [
    (dict(level=6), "level must be auto, 1, 2, 3, 4 or 5"), (dict(level="otsu"), "level must be auto"), (dict(level=True), "level must be"),
    (dict(air="inside"), "air must be one of border, all"), (dict(dilate=-1), "dilate must be a whole number"),
    (dict(close=1.5), "close must be a whole number"), (dict(largest_only="yes"), "largest_only must be")])
def test_options_are_validated(kwargs, message):
    with pytest.raises(BigVolumeError, match=message):
        HazeOptions(**kwargs)


# --- edge cases -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("array, message", [
    (np.full((5, 6, 7), 42, np.int16), "every voxel has the value 42 .a constant volume."),
    (np.zeros((5, 6, 7), np.float32), "every voxel has the value 0 .a constant volume."),
    (np.full((5, 6, 7), np.nan, np.float32), "no finite voxel values"),
    (np.arange(5 * 6 * 7).reshape(5, 6, 7) % 4, "only 4 distinct values .0, 1, 2, 3.: it looks like a label map"),
    (np.zeros((5, 6, 7, 3), np.uint8) + np.arange(3, dtype=np.uint8), "3 components per voxel .RGB or vector."),
])
def test_volumes_without_haze_are_refused_clearly(array, message):
    with pytest.raises(BigVolumeError, match=message):
        dehaze(bv.Volume.from_array(array))


def test_nan_voxels_in_the_air_are_filled_and_those_inside_are_kept():
    array, r = shell_with_cavity()
    array[0, 0, :5] = np.nan      # in the air
    array[20, 20, 20] = np.nan    # in the cavity
    out, mask, report = dehaze(oblique(array), HazeOptions(level=3))
    assert (out.array[0, 0, :5] == report.fill_value).all() and np.isnan(out.array[20, 20, 20])
    assert any("6 NaN voxels: 5 in the haze set to the fill value, 1 kept as NaN (not taken as haze)" in n
               for n in report.notes)


def test_two_slice_volume_takes_all_dark_voxels_and_says_why():
    array = class_slabs([10, 200], depth=1, size=20)
    array[:, 8:12, 8:12] = 10.0  # dark voxels inside the bright slice still touch the z border
    out, mask, report = dehaze(oblique(array), HazeOptions(level=3, dilate=0))
    assert mask[0].all() and mask[1, 8:12, 8:12].all() and not mask[1, :8].any()
    assert any("2 voxels thin along k" in note for note in report.notes)


# --- command line -----------------------------------------------------------------------------------------------

def test_cli_dehaze_writes_output_and_mask_on_the_input_grid(tmp_path):
    array, r = shell_with_cavity()
    volume = oblique(np.rint(array).astype(np.int16))
    source = io.write_volume(volume, tmp_path / "in.nrrd")
    result = run("dehaze", source, tmp_path / "out.nii.gz", "--level", "3", "--mask-out", tmp_path / "mask.nrrd")
    assert result.returncode == 0, result.stderr
    assert "% of" in result.stdout and "gzip" in result.stdout and len(result.stdout.strip().splitlines()) <= 2
    out, mask = io.read_volume(tmp_path / "out.nii.gz"), io.read_volume(tmp_path / "mask.nrrd")
    for got in (out, mask):
        np.testing.assert_allclose(got.geometry.spacing, volume.geometry.spacing, rtol=1e-6)
        np.testing.assert_allclose(got.geometry.origin, volume.geometry.origin, atol=1e-4)
        np.testing.assert_allclose(got.geometry.direction, volume.geometry.direction, atol=1e-6)
    assert out.array.dtype == np.int16 and mask.array.dtype == np.uint8
    expected, expected_mask, _ = dehaze(volume, HazeOptions(level=3))
    np.testing.assert_array_equal(out.array, expected.array)
    np.testing.assert_array_equal(mask.array, expected_mask.view(np.uint8))


@pytest.mark.parametrize("make, args, message", [
    (lambda p: p / "missing.nrrd", [], "missing.nrrd: no such file"),
    (lambda p: io.write_volume(bv.Volume.from_array(np.arange(60, dtype=np.uint8).reshape(3, 4, 5) % 3),
                               p / "labels.nrrd"), [], "labels.nrrd: the volume has only 3 distinct values"),
    (lambda p: io.write_volume(bv.Volume.from_array(np.zeros((4, 5, 6), np.float32)), p / "zero.nrrd"), [],
     "zero.nrrd: every voxel has the value 0"),
    (lambda p: io.write_volume(bv.Volume.from_array(np.zeros((4, 5, 6, 3), np.uint8)), p / "rgb.nrrd"), [],
     "rgb.nrrd: 3 components per voxel"),
    (lambda p: io.write_volume(oblique(np.rint(shell_with_cavity()[0]).astype(np.uint8)), p / "u8.nrrd"),
     ["--fill", "300"], "u8.nrrd: fill value 300 does not fit"),
    (lambda p: io.write_volume(oblique(np.rint(shell_with_cavity()[0]).astype(np.uint8)), p / "u8s.nrrd"),
     ["--stream", "--memory-limit", "1", "--fill", "-3"], "u8s.nrrd: fill value -3 does not fit"),
])
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, make, args, message):
    source = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = run("dehaze", source, tmp_path / "out.nhdr", "--mask-out", tmp_path / "mask.nrrd", *args)
    assert result.returncode == 1
    assert result.stderr.startswith("bigvolume: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("output, mask", [("out.nhdr", "out.mhd"), ("out.nrrd", "out.nrrd"),
                                          ("sub/../out.mhd", "out.mhd")])
def test_a_mask_that_would_write_a_file_of_the_output_is_refused(tmp_path, output, mask):
    """out.nhdr and out.mhd both write out.raw: the mask would have replaced the output's voxels (only the same
    path was refused)."""
    (tmp_path / "sub").mkdir()
    source = io.write_volume(oblique(np.rint(shell_with_cavity()[0]).astype(np.int16)), tmp_path / "in.nrrd")
    before = sorted(tmp_path.iterdir())
    result = run("dehaze", source, tmp_path / output, "--mask-out", tmp_path / mask)
    assert result.returncode == 1 and "the mask and the output" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and sorted(tmp_path.iterdir()) == before


def test_cli_rejects_a_level_outside_the_table(tmp_path):
    result = run("dehaze", tmp_path / "in.nrrd", tmp_path / "out.nrrd", "--level", "6")
    assert result.returncode == 2 and "invalid choice" in result.stderr


# --- the real head MRI against niimath -------------------------------------------------------------------------

def niimath_binary():
    return shutil.which("niimath") or shutil.which("niimath", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(not MRI.exists() or not BRAIN.exists(),
                    reason=f"{MRI} absent: install the Debian package mricron-data")
@pytest.mark.skipif(niimath_binary() is None, reason="niimath absent: pip install niimath (the test extra)")
def test_real_head_mri_compresses_and_spares_the_brain_better_than_niimath(tmp_path):
    source = tmp_path / "ch2_noisy.nii.gz"
    brain = test_volumes.noisy_head(source)  # Rician noise, sigma 4 % of the mean brain intensity
    result = run("dehaze", source, tmp_path / "ours.nii.gz")
    assert result.returncode == 0, result.stderr
    subprocess.run([niimath_binary(), str(source), "-dehaze", "5", str(tmp_path / "niimath.nii.gz")], check=True,
                   capture_output=True, timeout=300)
    noisy_array = sitk.GetArrayFromImage(sitk.ReadImage(str(source)))
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ours.nii.gz")))
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "niimath.nii.gz")))
    assert ours.dtype == np.uint8 and ours.shape == noisy_array.shape
    ours_changed, theirs_changed = ours != noisy_array, theirs != noisy_array
    gain = 1 - (tmp_path / "ours.nii.gz").stat().st_size / source.stat().st_size
    assert gain >= 0.25  # level 5 gained 31 % here, with 560 brain voxels changed (auto: 28.9 %, fewer)
    assert np.count_nonzero(ours_changed & brain) < np.count_nonzero(theirs_changed & brain)
    dice = 2 * np.count_nonzero(ours_changed & theirs_changed) / (ours_changed.sum() + theirs_changed.sum())
    assert dice >= 0.9
    assert ours.min() == noisy_array.min() and (ours[ours_changed] == noisy_array.min()).all()


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros(8, np.float32),
                                 (np.arange(512).reshape(8, 8, 8) + 1j).astype(np.complex64)])
def test_a_threshold_of_what_is_no_scalar_volume_is_refused_in_words(bad):
    """A 2-D array was an IndexError from inside the sampling; complex voxels were thresholded by their real part."""
    with pytest.raises(BigVolumeError, match="a volume is \\(k, j, i\\) of real numbers"):
        find_threshold(bad)
    if bad.ndim == 3:
        with pytest.raises(BigVolumeError, match="a volume is"):
            dehaze(bv.Volume.from_array(bad))


@pytest.mark.parametrize("failing", ["out", "mask"])
@pytest.mark.parametrize("suffixes", [(".nrrd", ".nrrd"), (".nhdr", ".nii.gz"), (".nii.gz", ".nhdr")])
@pytest.mark.parametrize("stream", [False, True])
def test_slab_written_output_and_mask_appear_together_or_not_at_all(tmp_path, monkeypatch, failing, suffixes,
                                                                    stream):
    """The slab writers put each file in place as it finished: the mask (finished first) stayed when the output's
    last bytes (gzip's final flush) met a full disk, and the message said "nothing was written"."""
    import errno
    from bigvolume.io.slab_writers import SlabWriter
    volume = oblique(smooth_blobs((20, 18, 16), 6))
    source = io.write_volume(volume, tmp_path / "in.nrrd")
    out, mask = tmp_path / f"out{suffixes[0]}", tmp_path / f"mask{suffixes[1]}"
    real_close = SlabWriter.close

    def disk_full_at_the_end(self):
        if self.path.name.startswith(failing):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_close(self)
    monkeypatch.setattr(SlabWriter, "close", disk_full_at_the_end)
    named = out if failing == "out" else mask
    with pytest.raises(bv.VolumeFileError, match=rf"{re.escape(str(named))}: cannot write \(No space left on device\); "
                                                 "nothing was written"):
        dehaze_file(source, out, mask_out=mask, stream=stream, memory_limit=1 if stream else None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]
    monkeypatch.setattr(SlabWriter, "close", real_close)
    dehaze_file(source, out, mask_out=mask, stream=stream, memory_limit=1 if stream else None)
    expected, expected_mask, _ = dehaze(volume)
    np.testing.assert_array_equal(io.read_volume(out).array, expected.array)
    np.testing.assert_array_equal(io.read_volume(mask).array, expected_mask.view(np.uint8))
