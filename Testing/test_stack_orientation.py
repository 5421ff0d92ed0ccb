"""Stack orientation and origin: what a code means, the geometry of written files (read back with SimpleITK) with
ROI and downsampling, and a head re-imported from its axial slices landing where the original was."""
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
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


# --- EXIF Orientation of JPEG and PNG slices --------------------------------------------------------------------------
def _exif(orientation: int, order: str) -> bytes:
    """An EXIF block: a TIFF header and one directory holding the Orientation tag (SHORT)."""
    import struct
    head = b"II*\0" if order == "<" else b"MM\0*"
    return (head + struct.pack(order + "I", 8) + struct.pack(order + "H", 1)
            + struct.pack(order + "HHI", 274, 3, 1) + struct.pack(order + "HH", orientation, 0)
            + struct.pack(order + "I", 0))


def _with_exif(path: Path, orientation: int, order: str = ">", after_pixels: bool = False) -> None:
    """The file as SimpleITK wrote it, with an EXIF block: a JPEG's APP1 segment after its start, a PNG's eXIf
    chunk after its header (or before its end, as some writers put it)."""
    import struct
    import zlib
    data, block = path.read_bytes(), _exif(orientation, order)
    if path.suffix == ".jpg":
        segment = b"Exif\0\0" + block
        path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:])
        return
    chunk = struct.pack(">I", len(block)) + b"eXIf" + block + struct.pack(">I", zlib.crc32(b"eXIf" + block))
    at = data.rindex(b"IEND") - 4 if after_pixels else 8 + 8 + 13 + 4
    path.write_bytes(data[:at] + chunk + data[at:])


def _seen(plane: np.ndarray, orientation: int) -> np.ndarray:
    """The picture as EXIF Orientation 1-4 says it is meant to be seen."""
    return {1: plane, 2: plane[:, ::-1], 3: plane[::-1, ::-1], 4: plane[::-1]}[orientation]


@pytest.mark.parametrize("orientation", [2, 3, 4])
@pytest.mark.parametrize("suffix, components, order, after_pixels", [
    (".png", 1, ">", False), (".png", 3, "<", True), (".jpg", 1, "<", False), (".jpg", 3, ">", False)])
def test_exif_mirrored_jpeg_and_png_slices_are_read_as_meant_to_be_seen(tmp_path, orientation, suffix, components,
                                                                       order, after_pixels):
    """JPEG (APP1) and PNG (eXIf) slices mirrored by their EXIF Orientation were imported as stored, exit 0; a
    TIFF's Orientation 2-4 is applied by its reader. Also with a ROI, which lies mirrored in the stored raster."""
    rng = np.random.default_rng(orientation)
    shape = (3, 18, 22) + ((3,) if components == 3 else ())
    volume = rng.integers(0, 256, shape).astype(np.uint8)
    plain = write_stack(tmp_path / "plain", volume, name="s_{}" + suffix, is_vector=components == 3)
    write_stack(tmp_path / "exif", volume, name="s_{}" + suffix, is_vector=components == 3)
    for path in sorted((tmp_path / "exif").iterdir()):
        _with_exif(path, orientation, order, after_pixels)
    gray = "keep" if components == 3 else None
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(import_stack(  # (JPEG: as decoded, not as written)
        tmp_path / "plain", tmp_path / "plain.nrrd", spacing=(1, 1, 1), gray=gray).output_path)))
    assert [p.name for p in plain] == sorted(p.name for p in (tmp_path / "exif").iterdir())
    expected = np.stack([_seen(plane, orientation) for plane in stored])
    assert not np.array_equal(expected, stored)
    out = import_stack(tmp_path / "exif", tmp_path / "exif.nrrd", spacing=(1, 1, 1), gray=gray).output_path
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), expected)
    roi = (3, 17, 2, 11, 1, 3)
    out = import_stack(tmp_path / "exif", tmp_path / "roi.nrrd", spacing=(1, 1, 1), gray=gray, roi=roi).output_path
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))),
                                  expected[roi[4]:roi[5], roi[2]:roi[3], roi[0]:roi[1]])


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
@pytest.mark.parametrize("suffix, odd", [(".png", 0), (".jpg", 0), (".jpg", 2), (".png", 1)])
def test_exif_transposed_jpeg_and_png_slices_are_refused_as_tiffs_are(tmp_path, orientation, suffix, odd):
    """Orientation 5-8 (rotated or transposed by 90 degrees) is refused, as for a TIFF, naming the slice."""
    paths = write_stack(tmp_path, stack_array((3, 16, 20), np.uint8), name="s_{}" + suffix)
    _with_exif(paths[odd], orientation, "<" if odd else ">")
    with pytest.raises(bv.VolumeFileError, match=rf"s_{odd + 1}\{suffix}: a {suffix[1:].upper()} stored rotated or "
                                                 rf"transposed \(EXIF Orientation {orientation}\)"):
        import_stack(tmp_path, tmp_path / "out.nrrd", spacing=(1, 1, 1))
    assert not (tmp_path / "out.nrrd").exists()
