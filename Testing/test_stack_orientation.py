"""Stack orientation and origin: what a code means, the geometry of written files (read back with SimpleITK) with
ROI and downsampling, and a head re-imported from its axial slices landing where the original was."""
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bigvolume.core.geometry import orientation_code, orientation_direction
from bigvolume.ops.stack_import import import_stack
from bigvolume.io.stacks import DEFAULT_STACK_ORIENTATION, STACK_ORIENTATIONS

from test_stacks import stack_array, write_stack

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
LPS_AXES = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
ALL_CODES = ["".join(letters) for pair in itertools.permutations(["LR", "PA", "SI"])
             for letters in itertools.product(*pair)]


def read_geometry(path):
    image = sitk.ReadImage(str(path))
    return image, np.array(image.GetDirection()).reshape(3, 3)


def test_each_letter_is_where_its_index_increases_towards():
    assert len(ALL_CODES) == 48 and DEFAULT_STACK_ORIENTATION == STACK_ORIENTATIONS[0] == "LPS"
    assert set(STACK_ORIENTATIONS) <= set(ALL_CODES) and len(set(STACK_ORIENTATIONS)) == len(STACK_ORIENTATIONS)
    np.testing.assert_array_equal(orientation_direction("LPS"), np.eye(3))
    for code in ALL_CODES:
        direction = orientation_direction(code)
        for axis, letter in enumerate(code):  # the voxel one step along the axis lies towards the letter
            np.testing.assert_array_equal(direction[:, axis], LPS_AXES[letter])
        assert orientation_code(direction) == code
        assert abs(np.linalg.det(direction)) == 1
    for bad in ["LLS", "XYZ", "LP", "LPSI", "RLS"]:
        with pytest.raises(ValueError, match=bad):
            orientation_direction(bad)


@pytest.mark.parametrize("code,origin,roi,factor,seed", [
    ("LPS", None, None, 1, 0),
    ("RAI", (10.0, -20.5, 33.0), None, 2, 1),
    ("LIP", (-5.0, 7.25, 0.5), (3, 17, 2, 20, 4, 26), 1, 2),
    ("PIR", (100.0, 0.0, -40.0), (2, 18, 1, 23, 5, 29), 3, 3),
    ("RPI", (1.5, 2.5, 3.5), (0, 20, 6, 24, 0, 30), (2, 1, 3), 4),
])
@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr"])
def test_written_geometry_follows_orientation_origin_roi_and_factor(tmp_path, code, origin, roi, factor, seed,
                                                                    suffix):
    spacing = (0.7, 0.45, 1.3)
    volume = stack_array()
    write_stack(tmp_path / "stack", volume, spacing=spacing[:2])
    out = tmp_path / f"out{suffix}"
    import_stack(tmp_path / "stack", out, spacing=spacing, factor=factor, roi=roi, orientation=code, origin=origin)
    image, direction = read_geometry(out)
    expected_direction = orientation_direction(code)
    np.testing.assert_array_equal(direction, expected_direction)
    f = np.broadcast_to(np.asarray(factor, float), 3)
    start = np.array([roi[0], roi[2], roi[4]]) if roi else np.zeros(3)
    corner = np.zeros(3) if origin is None else np.array(origin)
    # the output's first voxel is centred on the ROI's first f voxels along each axis direction
    expected_origin = corner + expected_direction @ ((start + (f - 1) / 2) * np.array(spacing))
    np.testing.assert_allclose(image.GetOrigin(), expected_origin, atol=1e-9)
    np.testing.assert_allclose(image.GetSpacing(), f * np.array(spacing), rtol=1e-12)
    if factor == 1:  # the voxels are the slices' pixels, index for index
        box = volume if roi is None else volume[roi[4]:roi[5], roi[2]:roi[3], roi[0]:roi[1]]
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), box)


def test_command_line_orientation_origin_and_direction(tmp_path):
    volume = stack_array((12, 16, 14))
    write_stack(tmp_path / "stack", volume)
    coded, matrix = tmp_path / "coded.nrrd", tmp_path / "matrix.nrrd"
    command = [sys.executable, "-m", "bigvolume", "import-stack", str(tmp_path / "stack")]
    result = subprocess.run(command + [str(coded), "--orientation", "rai", "--origin", "1", "2", "3", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # --direction: the i, j, k unit vectors one after the other; the same as RAI
    vectors = orientation_direction("RAI").T.ravel()
    result = subprocess.run(command + [str(matrix), "--direction", *map(str, vectors), "--origin", "1", "2", "3",
                                       "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for path in (coded, matrix):
        image, direction = read_geometry(path)
        np.testing.assert_array_equal(direction, -np.eye(3))
        assert image.GetOrigin() == (1.0, 2.0, 3.0)
    bad = subprocess.run(command + [str(tmp_path / "bad.nrrd"), "--orientation", "LPX"], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "LPX" in bad.stderr
    assert not (tmp_path / "bad.nrrd").exists()
    skew = subprocess.run(command + [str(tmp_path / "bad.nrrd"), "--direction", "1", "0", "0", "1", "1", "0", "0",
                                     "0", "1"], capture_output=True, text=True)
    assert skew.returncode == 1 and "orthogonal" in skew.stderr


@pytest.mark.skipif(not CH2.exists(), reason="mricron-data is not installed")
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_head_reimported_from_its_axial_slices_matches_the_original(tmp_path, suffix):
    original = sitk.ReadImage(str(CH2))
    array = sitk.GetArrayFromImage(original)  # (k, j, i): axial slices, as a scanner exports them
    write_stack(tmp_path / "slices", array, name="ch2_{:03d}" + suffix, spacing=original.GetSpacing()[:2])
    direction = np.array(original.GetDirection()).reshape(3, 3)
    code = orientation_code(direction)
    assert code in STACK_ORIENTATIONS and code != DEFAULT_STACK_ORIENTATION  # ch2 is stored RAS-like: "RAS"
    out = tmp_path / "head.nrrd"
    import_stack(tmp_path / "slices", out, spacing=original.GetSpacing(), orientation=code,
                 origin=original.GetOrigin())
    back, back_direction = read_geometry(out)
    np.testing.assert_array_equal(back_direction, direction)
    np.testing.assert_allclose(back.GetOrigin(), original.GetOrigin(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    # every voxel at the same physical place: the nose voxel of the original is the nose voxel of the import
    index = tuple(int(v) for v in np.array(original.GetSize()) // 3)
    assert back.TransformIndexToPhysicalPoint(index) == pytest.approx(original.TransformIndexToPhysicalPoint(index))
    # the default (LPS) is what the issue saw: the head comes out flipped left-right and anterior-posterior
    default = tmp_path / "default.nrrd"
    import_stack(tmp_path / "slices", default, spacing=original.GetSpacing(), origin=original.GetOrigin())
    _, default_direction = read_geometry(default)
    assert np.allclose(default_direction[:, 1], -direction[:, 1])
