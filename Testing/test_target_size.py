"""--target-size means the file on disk: the largest grid whose written file, compression included, fits."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
from bigvolume.io import files as io
from bigvolume.core.geometry import factors_for_size
from bigvolume.core.memory import parse_size
from bigvolume.ops.resample import resample_file

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")


def smooth_volume(seed: int) -> bv.Volume:
    """A smooth random field, uint16, anisotropic spacing and a non-zero origin: compresses well."""
    rng = np.random.default_rng(seed)
    field = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(rng.normal(size=(40, 56, 48))), 4.0)
    values = sitk.GetArrayFromImage(field)
    values = (values - values.min()) / np.ptp(values) * 4000
    return bv.Volume.from_array(values.astype(np.uint16), spacing=(0.5, 0.7, 1.4), origin=(-12.0, 30.5, 7.0))


def noisy_volume(seed: int) -> bv.Volume:
    """Float noise: barely compresses, so the header alone can push a file over the budget."""
    rng = np.random.default_rng(seed)
    return bv.Volume.from_array(rng.normal(size=(36, 44, 40)).astype(np.float32), spacing=(1.0, 1.2, 0.8),
                                origin=(3.0, -4.0, 5.0), direction=np.diag([1.0, -1.0, 1.0]))


@pytest.fixture(params=["smooth-1", "smooth-2", "noisy-3", "ch2"])
def source(request, tmp_path):
    if request.param == "ch2":
        if not CH2.exists():
            pytest.skip("mricron-data is not installed")
        return CH2
    kind, seed = request.param.split("-")
    volume = (smooth_volume if kind == "smooth" else noisy_volume)(int(seed))
    path = tmp_path / f"{request.param}.nrrd"
    io.write_volume(volume, path)
    return path


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
@pytest.mark.parametrize("budget", ["20KB", "60KB"])
def test_compressed_file_fits_the_budget_and_uses_most_of_it(source, tmp_path, suffix, budget):
    target = parse_size(budget)
    out = tmp_path / f"out{suffix}"
    report = resample_file(source, out, target_bytes=target)
    size = io.file_size(out)
    assert size <= target and size >= 0.75 * target, (size, target)
    assert report.output_bytes == size
    # a uniform factor on the block-centred grid, as the report says
    geometry = io.read_geometry(source)[0]
    f = report.factors[0]
    assert report.factors == (f, f, f) and f >= 1
    image = sitk.ReadImage(str(out))
    expected = geometry.downsampled(report.factors)
    assert image.GetSize() == expected.dimensions
    assert np.allclose(image.GetSpacing(), expected.spacing) and np.allclose(image.GetOrigin(), expected.origin)
    assert np.allclose(np.array(image.GetDirection()).reshape(3, 3), geometry.direction)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no trial files left


def test_compressible_data_gets_a_larger_grid_than_the_uncompressed_count(tmp_path):
    path = tmp_path / "smooth.nrrd"
    volume = smooth_volume(7)
    io.write_volume(volume, path)
    compressed = resample_file(path, tmp_path / "small.nrrd", target_bytes=20_000)
    raw_rule = volume.geometry.downsampled(factors_for_size(volume.geometry, 2, 20_000))
    assert compressed.output_geometry.voxel_count > 1.2 * raw_rule.voxel_count


@pytest.mark.parametrize("suffix,options,itemsize", [(".nhdr", [], 2), (".nrrd", ["--no-compress"], 2), (".nii", [], 2),
                                                    (".mhd", [], 2), (".nhdr", ["--type", "float32"], 4)])
@pytest.mark.parametrize("budget", [5_000, 20_000])
def test_uncompressed_files_fit_by_their_voxel_count_and_header(tmp_path, suffix, options, itemsize, budget):
    """The voxel-count rule on the budget, or on the budget less the header when the header does not fit beside
    the voxels: the files on disk (a detached header's data file included) fit."""
    path = tmp_path / "smooth.nrrd"
    volume = smooth_volume(8)
    io.write_volume(volume, path)
    out = tmp_path / f"out{suffix}"
    result = subprocess.run([sys.executable, "-m", "bigvolume", "resample", str(path), str(out), "--target-size",
                             str(budget), "--quiet", *options], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    grid = io.read_geometry(out)[0]
    size = io.file_size(out)
    assert size <= budget
    header = size - grid.voxel_count * itemsize
    expected = volume.geometry.downsampled(factors_for_size(volume.geometry, itemsize, budget))
    if expected.voxel_count * itemsize + header > budget:
        expected = volume.geometry.downsampled(factors_for_size(volume.geometry, itemsize, budget - header))
    # the same grid (its factor, and so its spacing, depends on the exact budget the search started from)
    assert grid.dimensions == expected.dimensions


def test_command_line_target_size_is_the_size_on_disk(tmp_path):
    path = tmp_path / "smooth.nrrd"
    io.write_volume(smooth_volume(9), path)
    out = tmp_path / "small.nrrd"
    result = subprocess.run([sys.executable, "-m", "bigvolume", "resample", str(path), str(out), "--target-size",
                             "20KB"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 15_000 <= out.stat().st_size <= 20_000


def test_a_budget_below_one_voxel_is_refused(tmp_path):
    path = tmp_path / "smooth.nrrd"
    io.write_volume(smooth_volume(10), path)
    out = tmp_path / "tiny.nrrd"
    with pytest.raises(bv.BigVolumeError, match="smallest grid"):
        resample_file(path, out, target_bytes=50)
    assert not out.exists()


def test_streamed_input_fits_the_same_way(tmp_path):
    path = tmp_path / "smooth.nhdr"  # raw data: streams
    io.write_volume(smooth_volume(11), path)
    streamed = resample_file(path, tmp_path / "streamed.nrrd", target_bytes=30_000, stream=True)
    loaded = resample_file(path, tmp_path / "loaded.nrrd", target_bytes=30_000, stream=False)
    assert streamed.stream_plan is not None and loaded.stream_plan is None
    assert streamed.output_bytes <= 30_000 and loaded.output_bytes <= 30_000
    # the same search over the same grids; the streamed voxels may differ by rounding, so the sizes by a little
    assert abs(streamed.output_geometry.voxel_count - loaded.output_geometry.voxel_count) \
        <= 0.1 * loaded.output_geometry.voxel_count
    assert streamed.output_bytes >= 0.75 * 30_000


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in io.output_files(path) if p.exists())


@pytest.mark.parametrize("shape, dtype", [((1, 1, 4096), np.float64), ((1, 3, 2500), np.uint8),
                                          ((1, 600, 700), np.uint16), ((5, 1, 900), np.int16)])
@pytest.mark.parametrize("suffix, budget", [(".nrrd", 1000), (".nhdr", 700), (".mha", 1500), (".nii.gz", 900)])
def test_thin_volumes_fit_a_target_their_short_axes_cannot_shrink_for(tmp_path, shape, dtype, suffix, budget):
    """The factor was nudged up from the cube root of the size ratio (as if every axis shrank) 200 times by 1 %:
    a 4096 x 1 x 1 line or a 700 x 600 x 1 image was refused ("cannot reach 1000 bytes by downsampling"),
    though a coarser grid fits."""
    rng = np.random.default_rng(shape[2])
    values = np.cumsum(rng.normal(size=shape), axis=2)
    volume = bv.Volume.from_array((values * 10).astype(dtype), spacing=(0.5, 0.7, 2.0), origin=(1.0, 2.0, 3.0))
    source = io.write_volume(volume, tmp_path / "thin.nrrd")
    out = tmp_path / f"out{suffix}"
    report = resample_file(source, out, target_bytes=budget)
    assert disk_bytes(out) <= budget
    assert report.output_geometry.voxel_count >= 2  # more than the one-voxel grid fitted
    assert bv.read_volume(out).geometry.dimensions == report.output_geometry.dimensions


@pytest.mark.parametrize("suffix, budgets", [(".mhd", range(425, 465, 5)), (".nhdr", range(300, 345, 5))])
def test_an_uncompressed_target_only_the_smallest_grid_fits_writes_it(tmp_path, suffix, budgets):
    """A trial grid's header alone above the budget ended the search ("even the smallest grid takes 422 bytes on
    disk, more than the target size 440"): smaller grids have shorter headers."""
    source = io.write_volume(bv.Volume.from_array(np.arange(63 * 50 * 37, dtype=np.uint8).reshape(37, 50, 63),
                                                  spacing=(0.47, 0.76, 2.5)), tmp_path / "in.nrrd")
    smallest = None
    for budget in budgets:
        out = tmp_path / f"out{budget}{suffix}"
        try:
            resample_file(source, out, target_bytes=budget)
        except bv.BigVolumeError as error:
            assert "even the smallest grid takes" in str(error)
            taken = int(str(error).split("takes ")[1].split(" bytes")[0])
            assert taken > budget, str(error)  # refused only when it does not fit
            continue
        assert disk_bytes(out) <= budget
        smallest = smallest or budget
    assert smallest is not None and smallest <= budgets[-1]
