"""The ImageStackImport module's Qt-free logic with real slice files on a real MRML scene (slicer-core, no Slicer
application): planning from the headers, import into a node's own memory, gray/RGB, Markups ROIs (axis-aligned and
rotated), preview, NHDR, cancel."""
import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

import bigvolume  # noqa: E402
from bigvolume.io import files as io  # noqa: E402
from bigvolume.core.geometry import LPS_TO_RAS, Geometry  # noqa: E402
from bigvolume.io.stacks import Roi, StackSlabReader  # noqa: E402
from slicer.util import arrayFromVolume, arrayFromVTKMatrix, vtkMatrixFromArray  # noqa: E402

import ImageStackImportLib.logic as logicModule  # noqa: E402
from ImageStackImportLib import (PREVIEW_METHOD, BigVolumeError, Cancelled, ImageStackImportLogic,  # noqa: E402
                                 ImportPlan)

PIXEL = (0.25, 0.5)             # x, y pixel size written into the TIFF headers
SPACING = (0.25, 0.5, 0.25)     # what the import assumes from them (z = x)
SHAPE = (24, 32, 40)            # slices, rows, columns


# --- writing stacks ---------------------------------------------------------------------------------------------
def write_stack(folder, volume, name="slice_{:03d}.tif", pixel=PIXEL, is_vector=False):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, plane in enumerate(volume):
        image = sitk.GetImageFromArray(plane, isVector=is_vector)
        if pixel is not None:
            image.SetSpacing(pixel)
        path = folder / name.format(k)
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths


def random_volume(shape=SHAPE, seed=3):
    return np.random.default_rng(seed).integers(0, 4000, size=shape).astype(np.uint16)


def blobs_volume(centres_ijk, sigma=1.5, amplitude=4000.0, shape=SHAPE):
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    volume = np.zeros(shape)
    for ci, cj, ck in centres_ijk:
        volume += amplitude * np.exp(-0.5 * ((i - ci) ** 2 + (j - cj) ** 2 + (k - ck) ** 2) / sigma ** 2)
    return np.rint(volume).astype(np.uint16)


@pytest.fixture
def stack(tmp_path):
    volume = random_volume()
    write_stack(tmp_path / "scan", volume)
    return tmp_path / "scan", volume


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def logic():
    return ImageStackImportLogic()


def ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return arrayFromVTKMatrix(matrix)


def node_ids(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def stack_ras(ijk, spacing=SPACING):
    """RAS of a (fractional) index of the full stack: LPS = index x spacing, identity direction."""
    return LPS_TO_RAS @ (np.asarray(ijk, float) * np.asarray(spacing))


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = math.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def add_roi(scene, centre_ras, size, rotation_matrix=None):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    matrix = np.eye(4)
    if rotation_matrix is not None:
        matrix[:3, :3] = rotation_matrix
    matrix[:3, 3] = centre_ras
    roi.SetAndObserveObjectToNodeMatrix(vtkMatrixFromArray(matrix))
    roi.SetSize(*size)
    return roi


def roi_for_crop(scene, crop, spacing=SPACING, inset=0.0):
    """An unrotated ROI whose faces lie half a voxel outside the first and last voxel centres of the index crop
    (x0, x1, y0, y1, z0, z1), moved ``inset`` voxels inwards."""
    low = np.array(crop[0::2], float) - 0.5 + inset
    high = np.array(crop[1::2], float) - 0.5 - inset
    corners = np.array([stack_ras(low, spacing), stack_ras(high, spacing)])
    return add_roi(scene, corners.mean(axis=0), np.abs(corners[1] - corners[0]))


# --- planning ---------------------------------------------------------------------------------------------------
def test_plan_describes_the_import_before_decoding_any_pixel(stack, logic, monkeypatch):
    folder, _ = stack

    def no_decoding(*args):
        raise AssertionError("planning decoded a pixel")

    monkeypatch.setattr(StackSlabReader, "_decode", no_decoding)
    with logic.planImport(folder, factor=2) as plan:
        text = plan.description
        assert isinstance(plan, ImportPlan)
        assert plan.spacing == SPACING and plan.headerSpacing == SPACING
        assert plan.outputDimensions == (20, 16, 12) and plan.outputClassName == "vtkMRMLScalarVolumeNode"
        assert plan.outputBytes == 20 * 16 * 12 * 2
        assert plan.indexRoi == Roi(0, 40, 0, 32, 0, 24)
    assert "24 slices of 40x32 uint16, pixel size 0.25 x 0.5 from the headers" in text
    assert "output 20x16x12, spacing 0.5 1 0.5, 7.50 KiB (uint16)" in text
    assert "peak memory about" in text
    assert "slice spacing assumed 0.25" in text  # z is a guess: said so
    assert logic.describeImport(folder, factor=2) == text



def test_the_panel_fills_imagej_s_slice_spacing_too(tmp_path, logic):
    """ImageJ's calibration (unit and spacing in the TIFF description) fills all three spacings, z included."""
    tifffile = pytest.importorskip("tifffile")
    for k in range(4):
        tifffile.imwrite(tmp_path / f"ij_{k}.tif", np.full((12, 14), k, np.uint16), imagej=True,
                         resolution=(1 / 12.5, 1 / 20.0), metadata={"unit": "micron", "spacing": 25})
    with logic.planImport(tmp_path) as plan:
        assert plan.headerSpacing == pytest.approx((0.0125, 0.02, 0.025), rel=1e-9)
        assert plan.spacing == pytest.approx((0.0125, 0.02, 0.025), rel=1e-9)
        assert "pixel size 0.0125 x 0.02 from ImageJ's calibration in the TIFF" in plan.description

def test_plan_warns_about_missing_pixel_size_gaps_and_skipped_files(tmp_path, logic):
    volume = np.random.default_rng(1).integers(0, 255, size=(10, 12, 14)).astype(np.uint8)
    paths = write_stack(tmp_path / "pngs", volume, name="cut{:02d}.png", pixel=None)
    paths[4].unlink()
    (tmp_path / "pngs" / "readme.txt").write_text("not a slice")

    with logic.planImport(tmp_path / "pngs") as plan:
        assert plan.headerSpacing is None and plan.spacing == (1.0, 1.0, 1.0)
        text = plan.description
    assert "9 slices of 14x12 uint8, no pixel size in the headers" in text
    assert "carry no pixel size: spacing 1 x 1 x 1 assumed" in text
    assert "gaps in the slice numbering: 4 missing" in text
    assert "skipped 1 file(s) that are not slices of this stack: readme.txt" in text

    # With the spacing given the plan still says the headers could not confirm it.
    with logic.planImport(tmp_path / "pngs", spacing=(0.1, 0.1, 0.3)) as plan:
        assert plan.spacing == (0.1, 0.1, 0.3) and plan.headerSpacing is None
        assert "check the spacing" in plan.description


def test_a_changed_folder_is_checked_again(stack, logic):
    folder, volume = stack
    logic.planImport(folder).close()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 7), np.uint16)), str(folder / "slice_024.tif"))
    with pytest.raises(BigVolumeError, match="slices differ"):
        logic.planImport(folder)


def test_invalid_settings_are_user_errors(stack, logic):
    folder, _ = stack
    with pytest.raises(BigVolumeError, match="upsample"):
        logic.planImport(folder, factor=0.5)
    with pytest.raises(BigVolumeError, match="spacing"):
        logic.planImport(folder, spacing=(1.0, -1.0, 1.0))
    with pytest.raises(BigVolumeError, match="outside"):
        logic.planImport(folder, roi=(0, 50, 0, 10, 0, 10))
    with pytest.raises(BigVolumeError, match="bits"):
        logic.planImport(folder, bits="twelve")
    with pytest.raises(BigVolumeError, match="no such file or folder"):
        logic.planImport(folder / "missing")


# --- import into a node -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation,origin,roi,factor", [
    ("RAS", (10.0, -4.0, 2.5), None, 1.0),
    ("LIP", (-3.0, 8.0, 1.0), (4, 30, 2, 28, 3, 20), 2.0),
    (np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (1.0, 2.0, 3.0), (0, 20, 5, 30, 0, 24), 3.0),
])
def test_orientation_and_origin_place_the_node(stack, scene, logic, orientation, origin, roi, factor):
    folder, volume = stack
    direction = (orientation if not isinstance(orientation, str)
                 else bigvolume.core.geometry.orientation_direction(orientation))
    with logic.planImport(folder, factor=factor, roi=roi, orientation=orientation, origin=origin) as plan:
        node = logic.importToNode(plan, scene=scene)
        np.testing.assert_array_equal(plan.fullGeometry.direction, direction)
        assert plan.fullGeometry.origin == origin
    start = np.array([roi[0], roi[2], roi[4]]) if roi else np.zeros(3)
    expected = Geometry(node.GetImageData().GetDimensions(), np.array(SPACING) * factor,
                        np.array(origin) + direction @ ((start + (factor - 1) / 2) * np.array(SPACING)), direction)
    np.testing.assert_allclose(ijk_to_ras(node), expected.ijk_to_ras(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [1.0, 2.0, 3.0, (1.0, 2.0, 2.5)])
def test_import_matches_the_core_resample_with_the_plans_geometry(stack, scene, logic, factor):
    folder, volume = stack
    with logic.planImport(folder, factor=factor) as plan:
        expectedMatrix = plan.stack.output_geometry.ijk_to_ras()
        node = logic.importToNode(plan, scene=scene)

    assert node.GetClassName() == "vtkMRMLScalarVolumeNode" and node.GetScene() is scene
    assert node.GetName() == "scan"
    np.testing.assert_array_equal(ijk_to_ras(node), expectedMatrix)
    reference = bigvolume.resample(bigvolume.Volume.from_array(volume, spacing=SPACING), factor)
    result = arrayFromVolume(node)
    assert result.dtype == np.uint16 and result.shape == reference.array.shape
    np.testing.assert_allclose(result.astype(int), reference.array.astype(int), rtol=0, atol=1)
    np.testing.assert_allclose(expectedMatrix, reference.geometry.ijk_to_ras(), rtol=0, atol=1e-12)
    if factor == 1.0:
        np.testing.assert_array_equal(result, volume)
    assert node.GetDisplayNode() is not None
    summary = logic.lastResult.summary()
    assert summary.startswith(f"40x32x24 -> {'x'.join(map(str, result.shape[::-1]))}, spacing")


def test_the_node_voxels_are_the_sink_target_no_second_copy(stack, scene, logic, monkeypatch):
    folder, volume = stack
    sinks = []

    class RecordingSink(logicModule.ArraySink):
        def __init__(self, array):
            super().__init__(array)
            sinks.append(self)

    monkeypatch.setattr(logicModule, "ArraySink", RecordingSink)
    node = logic.importToNode(folder, scene=scene, factor=2.0)

    (sink,) = sinks
    voxels = arrayFromVolume(node)
    assert sink.filled == voxels.shape[0] == 12
    assert np.shares_memory(sink.array, voxels)
    pointer = node.GetImageData().GetPointData().GetScalars().GetVoidPointer(0)
    address = int(pointer[1:pointer.index("_", 1)], 16)
    assert sink.array.__array_interface__["data"][0] == address  # the streamed slices landed in the node's memory
    assert sink.array.nbytes == node.GetImageData().GetPointData().GetScalars().GetDataSize() * 2


def test_rgb_luminance_channel_and_kept_rgb(tmp_path, scene, logic):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(6, 10, 12, 3)).astype(np.uint8)
    write_stack(tmp_path / "rgb", rgb, name="photo{:02d}.png", pixel=None, is_vector=True)

    gray = logic.importToNode(tmp_path / "rgb", scene=scene, gray="luminance", spacing=(1, 1, 1))
    assert gray.GetClassName() == "vtkMRMLScalarVolumeNode"
    expected = np.rint(rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722]))
    np.testing.assert_allclose(arrayFromVolume(gray), expected, rtol=0, atol=1)

    green = logic.importToNode(tmp_path / "rgb", scene=scene, gray="channel:1", spacing=(1, 1, 1))
    np.testing.assert_array_equal(arrayFromVolume(green), rgb[..., 1])

    kept = logic.importToNode(tmp_path / "rgb", scene=scene, gray="keep", spacing=(1, 1, 1))
    assert kept.GetClassName() == "vtkMRMLVectorVolumeNode"
    assert kept.GetImageData().GetNumberOfScalarComponents() == 3
    np.testing.assert_array_equal(arrayFromVolume(kept), rgb)

    halved = logic.importToNode(tmp_path / "rgb", scene=scene, gray="keep", spacing=(1, 1, 1), factor=2)
    reference = bigvolume.resample(bigvolume.Volume.from_array(rgb), 2.0)
    np.testing.assert_allclose(arrayFromVolume(halved).astype(int), reference.array.astype(int), atol=1)
    with pytest.raises(BigVolumeError, match="makes a vector volume"):
        logic.importToNode(tmp_path / "rgb", gray="keep", outputVolumeNode=gray)


def test_bits_reduce_to_8_bit_through_a_window(stack, scene, logic):
    folder, _ = stack
    node = logic.importToNode(folder, scene=scene, bits="8")
    voxels = arrayFromVolume(node)
    assert voxels.dtype == np.uint8 and voxels.min() == 0 and voxels.max() == 255


@pytest.mark.parametrize("bits", ["keep", "8"])
def test_the_status_line_says_what_the_command_line_says_of_nan_and_the_window(tmp_path, scene, logic, bits):
    """The panel's status line (ImportResult.summary) lacked the NaN note and the 8-bit window with its clipped
    voxels, which ``bigvolume import-stack`` prints."""
    planes = np.random.default_rng(5).uniform(0, 100, (6, 16, 16)).astype(np.float32)
    planes[0, 1, 1] = 1e4  # clipped by the window
    planes[2, 5:8, 5:8] = np.nan
    write_stack(tmp_path / "floats", planes)
    settings = dict(spacing=(1, 1, 1), factor=2.0, method="mean", bits=None if bits == "keep" else int(bits))
    report = bigvolume.import_stack(tmp_path / "floats", tmp_path / "cli.nrrd", **settings)
    logic.importToNode(tmp_path / "floats", scene=scene, **dict(settings, bits=bits))
    summary = logic.lastResult.summary()
    nan = next(note for note in report.plan.notes if "are NaN" in note)
    assert nan in summary.splitlines(), summary
    if bits == "keep":
        assert "window" not in summary
    else:
        assert report.stream_plan.clipped_voxels >= 1
        assert f"Reduced to {report.plan.window_note(report.stream_plan)}" in summary.splitlines(), summary


def test_given_output_node_is_reused_and_left_alone_on_cancel(stack, scene, logic):
    folder, volume = stack
    given = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mine")
    slicer.util.updateVolumeFromArray(given, np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
    given.CreateDefaultDisplayNodes()
    given.SetIJKToRASMatrix(vtkMatrixFromArray(np.diag([2.0, 3.0, 4.0, 1.0])))
    count = scene.GetNumberOfNodes()

    with pytest.raises(Cancelled):
        logic.importToNode(folder, given, progress=lambda fraction, message: fraction < 0.3)
    np.testing.assert_array_equal(arrayFromVolume(given), np.arange(8).reshape(2, 2, 2))
    np.testing.assert_array_equal(ijk_to_ras(given), np.diag([2.0, 3.0, 4.0, 1.0]))

    assert logic.importToNode(folder, given) is given
    assert scene.GetNumberOfNodes() == count and given.GetName() == "mine"
    np.testing.assert_array_equal(arrayFromVolume(given), volume)


# --- cancel -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cancelAt", ["start", "middle", "finishing"])
def test_cancel_leaves_no_node(stack, scene, logic, cancelAt):
    folder, _ = stack
    before = node_ids(scene)
    calls = []

    def progress(fraction, message):
        calls.append((fraction, message))
        if cancelAt == "start":
            return False
        if cancelAt == "middle":
            return fraction < 0.5
        return message != "finishing"

    with pytest.raises(Cancelled):
        logic.importToNode(folder, scene=scene, factor=2.0, progress=progress)
    assert node_ids(scene) == before
    assert logic.lastResult is None
    if cancelAt == "start":
        assert len(calls) == 1


def test_cancel_while_resampling_into_a_rotated_roi_leaves_no_node(stack, scene, logic):
    folder, _ = stack
    roi = add_roi(scene, stack_ras((20, 16, 12)), (4.0, 5.0, 3.0), rotation((0, 0, 1), 30.0))
    before = node_ids(scene)
    with pytest.raises(Cancelled):
        logic.importToNode(folder, scene=scene, roi=roi,
                           progress=lambda fraction, message: "ROI" not in message)
    assert node_ids(scene) == before


def test_progress_rises_to_one(stack, scene, logic):
    folder, _ = stack
    fractions = []
    logic.importToNode(folder, scene=scene, factor=2.0, progress=lambda f, m: fractions.append(f))
    assert fractions[-1] == 1.0 and fractions[0] == 0.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))


# --- ROI from Markups ROI nodes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("inset", [0.0, 0.3, -0.3])
def test_axis_aligned_roi_reads_exactly_the_index_crop(stack, scene, logic, inset):
    folder, volume = stack
    crop = (7, 29, 4, 21, 5, 17)
    roi = roi_for_crop(scene, crop, inset=inset)

    with logic.planImport(folder, roi=roi) as plan:
        assert plan.indexRoi == Roi(*crop) and plan.frame is None
        assert "reads columns 7-28, rows 4-20, slices 5-16 of the 40x32x24 stack" in plan.description
        node = logic.importToNode(plan, scene=scene)

    x0, x1, y0, y1, z0, z1 = crop
    np.testing.assert_array_equal(arrayFromVolume(node), volume[z0:z1, y0:y1, x0:x1])
    expected = Geometry((x1 - x0, y1 - y0, z1 - z0), SPACING, np.array([x0, y0, z0]) * SPACING).ijk_to_ras()
    np.testing.assert_allclose(ijk_to_ras(node), expected, rtol=0, atol=1e-12)
    # Voxel (0, 0, 0) of the crop is where voxel (x0, y0, z0) of the stack is.
    np.testing.assert_allclose(ijk_to_ras(node)[:3, 3], stack_ras((x0, y0, z0)), atol=1e-12)


def test_roi_with_swapped_axes_under_a_transform_is_still_an_exact_crop(stack, scene, logic):
    """A ROI turned by 90 degrees is still axis-aligned (its axes are the stack's, permuted); ObjectToWorld includes
    the ROI's parent transform."""
    folder, volume = stack
    crop = (10, 30, 2, 12, 3, 20)
    low = stack_ras(np.array(crop[0::2]) - 0.5)
    high = stack_ras(np.array(crop[1::2]) - 0.5)
    extent = np.abs(high - low)  # along R, A, S
    shift = np.array([3.0, -2.0, 1.0])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    matrix = np.eye(4)
    matrix[:3, 3] = shift
    transform.SetMatrixTransformToParent(vtkMatrixFromArray(matrix))
    # Object x along A, object y along -R: sizes given in the object's own axes.
    roi = add_roi(scene, (low + high) / 2 - shift, (extent[1], extent[0], extent[2]), rotation((0, 0, 1), 90.0))
    roi.SetAndObserveTransformNodeID(transform.GetID())

    node = logic.importToNode(folder, scene=scene, roi=roi)
    x0, x1, y0, y1, z0, z1 = crop
    np.testing.assert_array_equal(arrayFromVolume(node), volume[z0:z1, y0:y1, x0:x1])
    assert not logic.lastResult.rotated


@pytest.mark.parametrize("rotated", [False, True])
def test_an_inside_out_roi_is_refused_as_the_ome_zarr_panel_refuses_it(stack, scene, logic, rotated):
    """An inside-out Markups ROI stands for what lies outside its box: the import read the box's inside."""
    folder, _ = stack
    roi = roi_for_crop(scene, (2, 12, 3, 9, 1, 5))
    if rotated:
        roi.SetAndObserveObjectToNodeMatrix(vtkMatrixFromArray(np.block([
            [rotation((0, 0, 1), 30.0), np.array([[-2.0], [-2.0], [0.5]])], [np.zeros((1, 3)), np.ones((1, 1))]])))
    logic.planImport(folder, roi=roi).close()
    roi.SetInsideOut(True)
    before = node_ids(scene)
    for attempt in (lambda: logic.planImport(folder, roi=roi), lambda: logic.importToNode(folder, scene=scene, roi=roi),
                    lambda: logic.roiCornersRas(roi)):
        with pytest.raises(BigVolumeError, match="ROI roi is inside out"):
            attempt()
    assert node_ids(scene) == before


def test_roi_beyond_the_stack_is_clipped_and_one_outside_is_refused(stack, scene, logic):
    folder, volume = stack
    roi = roi_for_crop(scene, (30, 50, -5, 10, 0, 24))
    with logic.planImport(folder, roi=roi) as plan:
        assert plan.indexRoi == Roi(30, 40, 0, 10, 0, 24)
        assert any("clipped to the stack" in note for note in plan.notes)
    outside = roi_for_crop(scene, (50, 60, 0, 10, 0, 10))
    with pytest.raises(BigVolumeError, match="outside the stack"):
        logic.planImport(folder, roi=outside)
    unplaced = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced")
    with pytest.raises(BigVolumeError, match="no size"):
        logic.planImport(folder, roi=unplaced)


def test_initialized_roi_covers_the_whole_stack(stack, scene, logic):
    folder, _ = stack
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "new")
    with logic.planImport(folder) as plan:
        logic.initializeRoi(roi, plan)
    with logic.planImport(folder, roi=roi) as plan:
        assert plan.indexRoi == Roi(0, 40, 0, 32, 0, 24) and plan.frame is None


def _centre_of_mass_near(values, matrix, point, radius):
    k, j, i = np.meshgrid(*[np.arange(n) for n in values.shape], indexing="ij")
    ras = (matrix[:3, :3] @ np.stack([i.ravel(), j.ravel(), k.ravel()]) + matrix[:3, 3:4]).T
    weights = values.ravel().astype(float)
    near = np.linalg.norm(ras - point, axis=1) < radius
    weights = np.where(near & (weights > 0.1 * weights[near].max()), weights, 0.0)
    return (ras * weights[:, None]).sum(axis=0) / weights.sum()


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_rotated_roi_puts_bright_features_at_their_ras_places(tmp_path, scene, logic, factor):
    centres = [(16.0, 12.0, 10.0), (22.0, 19.0, 13.0)]  # i, j, k in the stack
    write_stack(tmp_path / "blobs", blobs_volume(centres))
    expected = [stack_ras(c) for c in centres]
    turn = rotation((1, 2, 3), 30.0)
    size = np.array([6.0, 7.0, 4.0])
    centre = (expected[0] + expected[1]) / 2 + np.array([0.3, -0.2, 0.1])
    for point in expected:  # both features well inside the ROI (object coordinates)
        assert np.all(np.abs(turn.T @ (point - centre)) < size / 2 - 1.0)
    roi = add_roi(scene, centre, size, turn)

    with logic.planImport(tmp_path / "blobs", roi=roi, factor=factor) as plan:
        assert plan.frame is not None and "rotated ROI" in plan.description
        outputSpacing = plan.stack.output_geometry.spacing
        node = logic.importToNode(plan, scene=scene)

    matrix = ijk_to_ras(node)
    assert logic.lastResult.rotated
    # The grid has the ROI's rotation: every voxel axis is parallel to one of the ROI's axes ...
    axes = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
    cosines = np.abs(turn.T @ axes)
    np.testing.assert_allclose(np.sort(cosines, axis=0)[-1], 1.0, atol=1e-9)
    # ... the spacing of the imported output, and it is centred on the ROI, covering it.
    np.testing.assert_allclose(node.GetSpacing(), outputSpacing, rtol=1e-12)
    dims = np.array(node.GetImageData().GetDimensions())
    np.testing.assert_allclose(matrix[:3, :3] @ ((dims - 1) / 2) + matrix[:3, 3], centre, atol=1e-9)
    lengths = np.sort(dims * np.array(outputSpacing))
    assert np.all(np.abs(lengths - np.sort(size)) <= np.max(outputSpacing) + 1e-9)

    values = arrayFromVolume(node)
    for point in expected:
        found = _centre_of_mass_near(values, matrix, point, radius=1.6)
        assert np.linalg.norm(found - point) < 0.1, (found, point)  # voxels are 0.25 - 1 mm
    # The brightest voxel is at the first feature (both have the same amplitude: it is at one of them).
    peak = np.unravel_index(np.argmax(values), values.shape)
    peakRas = matrix[:3, :3] @ np.array(peak[::-1], float) + matrix[:3, 3]
    assert min(np.linalg.norm(peakRas - p) for p in expected) < np.linalg.norm(outputSpacing)


def test_rotated_roi_outside_the_stack_is_filled_with_zero(stack, scene, logic):
    folder, volume = stack
    # Centred on the stack's corner voxel: three quarters and more of the ROI are outside the stack.
    roi = add_roi(scene, stack_ras((0, 0, 0)), (3.0, 3.0, 3.0), rotation((0, 0, 1), 20.0))
    with logic.planImport(folder, roi=roi) as plan:
        assert any("filled with 0" in note for note in plan.notes)
        node = logic.importToNode(plan, scene=scene)
    values = arrayFromVolume(node)
    matrix = ijk_to_ras(node)
    k, j, i = np.meshgrid(*[np.arange(n) for n in values.shape], indexing="ij")
    ras = matrix[:3, :3] @ np.stack([i.ravel(), j.ravel(), k.ravel()]) + matrix[:3, 3:4]
    stackIndex = (LPS_TO_RAS @ ras) / np.asarray(SPACING)[:, None]
    outside = np.any(stackIndex < -1.0, axis=0)  # more than a voxel beyond the stack's first voxels
    assert outside.any() and not values.ravel()[outside].any()
    assert values.ravel()[~outside].any()


# --- preview ----------------------------------------------------------------------------------------------------
def test_preview_factor_fits_the_budget(stack, logic):
    folder, _ = stack
    budget = 16 * 1024
    with logic.planImport(folder, roi=(0, 10, 0, 10, 0, 10)) as plan:  # the ROI does not matter
        factor = logic.previewFactor(plan, budget)
        full = Geometry((40, 32, 24))
        assert full.downsampled(factor).voxel_count * 2 <= budget
        assert full.downsampled(factor - 0.02).voxel_count * 2 > budget  # about the smallest that fits
        assert logic.previewFactor(plan.info, budget) == factor  # uint16 either way
        assert logic.previewFactor(plan) == 1.0  # 60 KiB already fits in the default 64 MB
    assert factor == round(factor, 2)


def test_preview_then_full_resolution_roi(stack, scene, logic):
    folder, volume = stack
    preview = logic.importPreview(folder, scene=scene, budgetBytes=16 * 1024)
    assert preview.GetName() == "scan preview"
    dims = np.array(preview.GetImageData().GetDimensions())
    assert np.prod(dims) * 2 <= 16 * 1024
    # Same physical space as the full-resolution stack: its block-centred downsampled grid.
    with logic.planImport(folder) as plan:
        factor = logic.previewFactor(plan, 16 * 1024)
    expected = Geometry((40, 32, 24), SPACING).downsampled(factor)
    assert tuple(dims) == expected.dimensions
    np.testing.assert_allclose(ijk_to_ras(preview), expected.ijk_to_ras(), rtol=0, atol=1e-12)
    assert PREVIEW_METHOD == "mean"
    # A ROI placed on the preview reads the full-resolution voxels.
    roi = roi_for_crop(scene, (4, 20, 6, 18, 2, 22))
    node = logic.importToNode(folder, scene=scene, roi=roi)
    np.testing.assert_array_equal(arrayFromVolume(node), volume[2:22, 6:18, 4:20])


# --- NHDR -------------------------------------------------------------------------------------------------------
def test_save_nhdr_points_into_the_tiff_slices(stack, tmp_path, logic):
    folder, volume = stack
    report = logic.saveNhdr(folder, tmp_path / "scan.nhdr")
    assert report.zero_copy
    assert "LIST" in (tmp_path / "scan.nhdr").read_text()
    loaded = io.read_volume(tmp_path / "scan.nhdr")
    np.testing.assert_array_equal(loaded.array, volume)
    assert loaded.geometry.spacing == pytest.approx(SPACING)


def test_import_also_saves_nhdr_and_a_cancel_removes_it(stack, tmp_path, scene, logic):
    folder, volume = stack
    path = tmp_path / "out" / "scan.nhdr"
    path.parent.mkdir()
    with pytest.raises(Cancelled):
        logic.importToNode(folder, scene=scene, factor=2.0, nhdrPath=path,
                           progress=lambda fraction, message: message != "finishing")
    assert not path.exists() and list(path.parent.iterdir()) == []

    node = logic.importToNode(folder, scene=scene, factor=2.0, nhdrPath=path)
    assert arrayFromVolume(node).shape == (12, 16, 20)
    assert logic.lastResult.nhdrReport.zero_copy and f"Saved {path}" in logic.lastResult.summary()
    saved = io.read_volume(path)  # held: its array may be a view of memory the Volume owns
    np.testing.assert_array_equal(saved.array, volume)  # full resolution, not the factor

    with pytest.raises(BigVolumeError, match=".nhdr"):
        logic.importToNode(folder, scene=scene, nhdrPath=tmp_path / "scan.nrrd")


def test_nhdr_of_a_crop_has_its_own_copy(stack, tmp_path, scene, logic):
    folder, volume = stack
    roi = roi_for_crop(scene, (5, 15, 0, 32, 0, 24))
    report = logic.saveNhdr(folder, tmp_path / "crop.nhdr", roi=roi)
    assert not report.zero_copy
    saved = io.read_volume(tmp_path / "crop.nhdr")
    np.testing.assert_array_equal(saved.array, volume[:, :, 5:15])


# --- the input fields -------------------------------------------------------------------------------------------
def test_sources_from_the_panel_fields_and_drops(stack, tmp_path, logic):
    folder, _ = stack
    first = folder / "slice_000.tif"
    assert logic.resolveSource(folder=folder) == folder
    assert logic.resolveSource(file=first, folder="") == first
    assert logic.resolveSource(file=first, folder=folder) == first  # the file is the more precise choice
    assert logic.resolveSource(folder=folder, pattern="slice_%03d.tif") == str(folder / "slice_%03d.tif")
    assert logic.resolveSource(file=first, pattern="*.tif") == str(folder / "*.tif")
    assert logic.resolveSource(folder="/elsewhere", pattern=str(folder / "*.tif")) == str(folder / "*.tif")
    with pytest.raises(BigVolumeError, match="choose a slice file or a folder"):
        logic.resolveSource("", ".", "")
    with pytest.raises(BigVolumeError, match="folder to look in"):
        logic.resolveSource(pattern="*.tif")
    for source in (folder, first, str(folder / "slice_%03d.tif"), str(folder / "*.tif")):
        with logic.planImport(source) as plan:
            assert plan.info.depth == 24

    assert logic.droppedSource([str(folder)]) == ("", str(folder))
    (tmp_path / "notes.txt").write_text("x")
    assert logic.droppedSource([str(tmp_path / "notes.txt"), str(first)]) == (str(first), "")
    with pytest.raises(BigVolumeError, match="drop a folder"):
        logic.droppedSource([str(tmp_path / "notes.txt")])

    assert logic.defaultNodeName(folder) == "scan"
    assert logic.defaultNodeName(first) == "slice"
    assert logic.defaultNodeName(str(folder / "*.tif")) == "scan"
    assert logic.defaultNhdrPath(folder) == folder.parent / "scan.nhdr"
    assert logic.nhdrPathFor("", folder) == folder.parent / "scan.nhdr"
    assert logic.nhdrPathFor(str(tmp_path / "x.nhdr"), folder) == tmp_path / "x.nhdr"


def test_reverse_order_flips_the_slices(stack, scene, logic):
    folder, volume = stack
    node = logic.importToNode(folder, scene=scene, reverse=True)
    np.testing.assert_array_equal(arrayFromVolume(node), volume[::-1])


def test_plan_arguments_and_a_plan_do_not_mix(stack, scene, logic):
    folder, _ = stack
    with logic.planImport(folder) as plan:
        with pytest.raises(TypeError, match="from the plan"):
            logic.importToNode(plan, scene=scene, factor=2.0)
    with pytest.raises(BigVolumeError, match="scene"):
        logic.importToNode(folder)


def test_every_combination_of_gray_choice_and_bits_is_planned(tmp_path, logic):
    rgb = np.random.default_rng(2).integers(0, 256, size=(4, 6, 8, 3)).astype(np.uint8)
    write_stack(tmp_path / "rgb", rgb, name="p{:02d}.png", pixel=None, is_vector=True)
    for gray, bits in itertools.product(logicModule.GRAY_CHOICES, logicModule.BITS_CHOICES):
        if gray == "keep" and bits != "keep":
            with pytest.raises(BigVolumeError, match="gray"):
                logic.planImport(tmp_path / "rgb", gray=gray, bits=bits)
            continue
        with logic.planImport(tmp_path / "rgb", gray=gray, bits=bits) as plan:
            assert plan.components == (3 if gray == "keep" else 1)


def test_a_label_map_output_is_not_filled_with_invented_labels(tmp_path, scene, logic):
    """A label-map output node took a downsampled import through the smoothing kernel: labels 4 and 8 appeared
    between 0, 5 and 9. Refused unless the method keeps the input's values; nearest and max fill it."""
    labels = np.random.default_rng(6).choice(np.array([0, 5, 9], np.uint16), (8, 20, 22), p=[0.5, 0.3, 0.2])
    write_stack(tmp_path / "labels", labels)
    output = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(BigVolumeError, match="label map.*nearest or max"):
        logic.importToNode(tmp_path / "labels", output, factor=2.0)
    assert output.GetImageData() is None
    for method in ("nearest", "max"):
        node = logic.importToNode(tmp_path / "labels", output, factor=2.0, method=method)
        assert set(np.unique(arrayFromVolume(node))) <= {0, 5, 9}
    node = logic.importToNode(tmp_path / "labels", output)  # not downsampled: any method keeps the labels
    np.testing.assert_array_equal(arrayFromVolume(node), labels)
