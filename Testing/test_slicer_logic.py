"""The AntiAliasedResample module's Qt-free logic on a real MRML scene (slicer-core, no Slicer application)."""
import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

import bigvolume  # noqa: E402
from slicer.util import arrayFromVolume, arrayFromVTKMatrix, updateVolumeFromArray, vtkMatrixFromArray  # noqa: E402

from AntiAliasedResampleLib import (LABEL_SAFE_METHODS, AntiAliasedResampleLogic, BigVolumeError,  # noqa: E402
                                    Cancelled)


# --- fixtures and helpers ---------------------------------------------------------------------------------------
class Mrml:
    """A scene with the logics Slicer would register (references held: the application logic keeps weak ones)."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.appLogic = slicer.vtkSlicerApplicationLogic()
        self.appLogic.SetMRMLScene(self.scene)
        self.colorLogic = slicer.vtkMRMLColorLogic()
        self.colorLogic.SetMRMLScene(self.scene)
        self.appLogic.SetModuleLogic("Colors", self.colorLogic)
        self.volumesLogic = slicer.vtkSlicerVolumesLogic()
        self.volumesLogic.SetMRMLApplicationLogic(self.appLogic)
        self.volumesLogic.SetMRMLScene(self.scene)
        self.appLogic.SetModuleLogic("Volumes", self.volumesLogic)

    def volume(self, array, ijkToRas=None, className="vtkMRMLScalarVolumeNode", name="input", display=True):
        node = self.scene.AddNewNodeByClass(className, name)
        updateVolumeFromArray(node, array)
        node.SetIJKToRASMatrix(vtkMatrixFromArray(np.eye(4) if ijkToRas is None else ijkToRas))
        if display:
            node.CreateDefaultDisplayNodes()
        return node

    def volumeNodes(self):
        collection = self.scene.GetNodesByClass("vtkMRMLVolumeNode")
        return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


@pytest.fixture
def mrml():
    return Mrml()


def ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return arrayFromVTKMatrix(matrix)


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = math.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


SPACING = np.array([0.4, 0.7, 1.5])
ORIGIN = np.array([12.5, -30.25, 7.0])
# Rotated and with the J axis flipped (left-handed, as a scan stored bottom-up can be).
DIRECTION = rotation((1, 2, 3), 35.0) @ np.diag([1.0, -1.0, 1.0])


def anisotropic_matrix(direction=DIRECTION, spacing=SPACING, origin=ORIGIN):
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def expected_matrix(matrix, factors):
    """The block-centred grid in RAS: columns scaled by the factors, origin moved (f-1)/2 voxel along each axis."""
    factors = np.broadcast_to(np.asarray(factors, float), (3,))
    expected = np.eye(4)
    expected[:3, :3] = matrix[:3, :3] * factors
    expected[:3, 3] = matrix[:3, 3] + matrix[:3, :3] @ ((factors - 1) / 2)
    return expected


def blob(shape, centre_kji, sigma_kji, dtype=np.float32, amplitude=1000.0):
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r2 = sum(((c - x) / s) ** 2 for c, x, s in zip(centre_kji, (k, j, i), sigma_kji))
    return (amplitude * np.exp(-0.5 * r2)).astype(dtype)


def centre_of_mass_ras(array, matrix):
    k, j, i = np.meshgrid(*[np.arange(n) for n in array.shape], indexing="ij")
    weights = array.astype(float)
    ijk = np.array([(w * x).sum() / weights.sum() for w, x in ((weights, i), (weights, j), (weights, k))])
    return matrix[:3, :3] @ ijk + matrix[:3, 3]


# --- geometry ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor, dims", [
    (2.0, (11, 7, 5)),              # 21x14x9: halves round up
    (3.0, (7, 5, 3)),
    (2.5, (8, 6, 4)),               # fractional: round(8.4), round(5.6), round(3.6)
    ((1.0, 2.0, 3.0), (21, 7, 3)),  # per axis, I J K
])
def test_scalar_output_has_the_block_centred_geometry(mrml, factor, dims):
    rng = np.random.default_rng(1)
    array = rng.integers(-1000, 3000, size=(9, 14, 21)).astype(np.int16)
    matrix = anisotropic_matrix()
    inputNode = mrml.volume(array, matrix, name="CT")
    before = array.copy()
    inputMTime = inputNode.GetMTime()

    outputNode = AntiAliasedResampleLogic().process(inputNode, factor=factor)

    assert outputNode.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert outputNode.GetName() == "CT resampled"
    assert outputNode.GetScene() is mrml.scene
    assert outputNode.GetImageData().GetDimensions() == dims
    np.testing.assert_allclose(ijk_to_ras(outputNode), expected_matrix(matrix, factor), rtol=0, atol=1e-9)
    assert arrayFromVolume(outputNode).dtype == np.int16
    assert arrayFromVolume(outputNode).shape == dims[::-1]
    # The input is untouched: voxels, geometry, node.
    np.testing.assert_array_equal(arrayFromVolume(inputNode), before)
    np.testing.assert_array_equal(ijk_to_ras(inputNode), matrix)
    assert inputNode.GetMTime() == inputMTime


def test_a_blob_does_not_move_in_ras(mrml):
    """Axes mixed up or grids shifted by half a voxel would move the centre of mass by far more than 0.05 mm."""
    array = blob((24, 30, 36), (11.3, 14.6, 17.2), (3.0, 3.5, 4.0))
    matrix = anisotropic_matrix()
    inputNode = mrml.volume(array, matrix)
    for method in ("lanczos", "gaussian", "mean", "fft"):
        outputNode = AntiAliasedResampleLogic().process(inputNode, factor=(2.0, 3.0, 2.0), method=method)
        moved = centre_of_mass_ras(arrayFromVolume(outputNode), ijk_to_ras(outputNode)) - centre_of_mass_ras(
            array, matrix)
        assert np.linalg.norm(moved) < 0.05, (method, moved)


def test_target_spacing_and_isotropic(mrml):
    matrix = anisotropic_matrix()
    inputNode = mrml.volume(np.zeros((10, 20, 40), np.float32), matrix)
    logic = AntiAliasedResampleLogic()

    outputNode = logic.process(inputNode, spacing=(1.2, 1.4, 3.0), factor=7.0)  # spacing wins over factor
    np.testing.assert_allclose(outputNode.GetSpacing(), (1.2, 1.4, 3.0), rtol=1e-12)
    np.testing.assert_allclose(ijk_to_ras(outputNode), expected_matrix(matrix, (3.0, 2.0, 2.0)), atol=1e-9)

    outputNode = logic.process(inputNode, factor=2.0, isotropic=True)
    np.testing.assert_allclose(outputNode.GetSpacing(), (0.8, 0.8, 1.5), rtol=1e-12)  # K is already coarser
    assert logic.lastResult.outputSpacing == pytest.approx((0.8, 0.8, 1.5))


def test_describe_plan_matches_the_run(mrml):
    inputNode = mrml.volume(np.zeros((9, 14, 21), np.uint16), anisotropic_matrix())
    logic = AntiAliasedResampleLogic()
    plan = logic.describePlan(inputNode, factor=2.0)
    outputNode = logic.process(inputNode, factor=2.0)
    assert plan.startswith("21x14x9 -> 11x7x5, spacing 0.8 1.4 3 mm")
    assert logic.outputGeometry(inputNode, factor=2.0).dimensions == outputNode.GetImageData().GetDimensions()
    with pytest.raises(BigVolumeError, match="finer"):
        logic.describePlan(inputNode, spacing=(0.1, 1.4, 3.0))


def test_the_input_voxels_are_read_without_a_copy(mrml):
    inputNode = mrml.volume(np.ones((8, 8, 8), np.float32))
    volume = AntiAliasedResampleLogic.volumeFromNode(inputNode)
    assert np.shares_memory(volume.array, arrayFromVolume(inputNode))


# --- node kinds -------------------------------------------------------------------------------------------------
def test_rgb_vector_volume_gives_a_vector_volume(mrml):
    array = np.empty((6, 10, 24, 3), np.uint8)
    array[...] = (10, 200, 30)
    array[:, :, 12:] = (250, 5, 128)
    inputNode = mrml.volume(array, anisotropic_matrix(), className="vtkMRMLVectorVolumeNode", name="photo")

    outputNode = AntiAliasedResampleLogic().process(inputNode, factor=2.0)

    assert outputNode.GetClassName() == "vtkMRMLVectorVolumeNode"
    assert outputNode.GetImageData().GetNumberOfScalarComponents() == 3
    result = arrayFromVolume(outputNode)
    assert result.shape == (3, 5, 12, 3) and result.dtype == np.uint8
    # Beyond the Lanczos kernel's reach (3 output voxels) from the colour edge every pixel keeps its colour.
    np.testing.assert_allclose(result[:, :, :3].reshape(-1, 3), np.tile((10, 200, 30), (3 * 5 * 3, 1)), atol=1)
    np.testing.assert_allclose(result[:, :, 9:].reshape(-1, 3), np.tile((250, 5, 128), (3 * 5 * 3, 1)), atol=1)
    np.testing.assert_allclose(ijk_to_ras(outputNode), expected_matrix(anisotropic_matrix(), 2.0), atol=1e-9)


def test_label_map_uses_nearest_and_keeps_only_existing_labels(mrml):
    rng = np.random.default_rng(7)
    labels = np.array([0, 3, 7, 250], np.uint8)
    array = labels[rng.integers(0, 4, size=(12, 16, 20))]
    inputNode = mrml.volume(array, anisotropic_matrix(), className="vtkMRMLLabelMapVolumeNode", name="seg")
    logic = AntiAliasedResampleLogic()

    outputNode = logic.process(inputNode, factor=2.0, method="lanczos")

    assert outputNode.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    assert logic.lastResult.method == "nearest"
    assert any("nearest" in note for note in logic.lastResult.notes)
    assert "nearest" in logic.lastResult.summary()
    result = arrayFromVolume(outputNode)
    assert set(np.unique(result)) <= set(labels)
    np.testing.assert_array_equal(result, bigvolume.downsample_array(array, (2.0, 2.0, 2.0), "nearest"))
    # A smoothing method would have invented labels here, which is why it is replaced:
    smoothed = bigvolume.downsample_array(array, (2.0, 2.0, 2.0), "lanczos")
    assert not set(np.unique(smoothed)) <= set(labels)


@pytest.mark.parametrize("method", LABEL_SAFE_METHODS)
def test_label_safe_methods_are_kept_for_label_maps(mrml, method):
    array = np.zeros((8, 8, 8), np.uint8)
    array[2:4, 2:4, 2:4] = 5
    inputNode = mrml.volume(array, className="vtkMRMLLabelMapVolumeNode")
    logic = AntiAliasedResampleLogic()
    logic.process(inputNode, factor=2.0, method=method)
    assert logic.lastResult.method == method and logic.lastResult.notes == []


def test_scalar_volume_keeps_the_method_asked_for(mrml):
    inputNode = mrml.volume(np.zeros((8, 8, 8), np.uint8))
    logic = AntiAliasedResampleLogic()
    logic.process(inputNode, factor=2.0, method="gaussian")
    assert logic.lastResult.method == "gaussian" and logic.lastResult.notes == []


# --- scene integration ------------------------------------------------------------------------------------------
def test_output_goes_under_the_input_transform(mrml):
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(vtkMatrixFromArray(np.array(
        [[1, 0, 0, 5.0], [0, 0, -1, 2.0], [0, 1, 0, -3.0], [0, 0, 0, 1]])))
    inputNode = mrml.volume(np.zeros((8, 8, 8), np.int16))
    inputNode.SetAndObserveTransformNodeID(transform.GetID())

    outputNode = AntiAliasedResampleLogic().process(inputNode, factor=2.0)

    assert outputNode.GetTransformNodeID() == transform.GetID()
    assert outputNode.GetParentTransformNode() is transform
    assert inputNode.GetTransformNodeID() == transform.GetID()


def test_display_window_level_and_colours_are_copied(mrml):
    inputNode = mrml.volume(np.arange(512, dtype=np.int16).reshape(8, 8, 8))
    display = inputNode.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(123.0, 45.0)
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
    assert mrml.scene.GetNodeByID("vtkMRMLColorTableNodeRainbow") is not None

    outputNode = AntiAliasedResampleLogic().process(inputNode, factor=2.0)

    outputDisplay = outputNode.GetDisplayNode()
    assert outputDisplay is not None and outputDisplay is not display
    assert outputDisplay.IsA("vtkMRMLScalarVolumeDisplayNode")
    assert (outputDisplay.GetWindow(), outputDisplay.GetLevel()) == (123.0, 45.0)
    assert not outputDisplay.GetAutoWindowLevel()
    assert outputDisplay.GetColorNodeID() == "vtkMRMLColorTableNodeRainbow"


def test_input_without_display_node_gets_a_displayable_output(mrml):
    inputNode = mrml.volume(np.zeros((8, 8, 8), np.uint8), className="vtkMRMLLabelMapVolumeNode", display=False)
    outputNode = AntiAliasedResampleLogic().process(inputNode, factor=2.0)
    assert outputNode.GetDisplayNode() is not None
    assert outputNode.GetDisplayNode().IsA("vtkMRMLLabelMapVolumeDisplayNode")


def test_user_output_node_is_filled_and_reused(mrml):
    inputNode = mrml.volume(np.ones((8, 10, 12), np.float32), anisotropic_matrix())
    given = mrml.volume(np.zeros((2, 2, 2), np.uint8), name="mine")
    count = mrml.scene.GetNumberOfNodes()
    outputNode = AntiAliasedResampleLogic().process(inputNode, given, factor=2.0)
    assert outputNode is given and outputNode.GetName() == "mine"
    assert mrml.scene.GetNumberOfNodes() == count
    assert arrayFromVolume(given).shape == (4, 5, 6) and arrayFromVolume(given).dtype == np.float32
    np.testing.assert_allclose(ijk_to_ras(given), expected_matrix(anisotropic_matrix(), 2.0), atol=1e-9)


def test_second_run_creates_a_second_node(mrml):
    inputNode = mrml.volume(np.ones((8, 8, 8), np.float32), name="MR")
    logic = AntiAliasedResampleLogic()
    first = logic.process(inputNode)
    second = logic.process(inputNode)
    assert first is not second
    assert first.GetName() == "MR resampled" and second.GetName() != first.GetName()


@pytest.mark.parametrize("direction, exact", [
    (rotation((0, 0, 1), 90.0) @ np.diag([-1.0, -1.0, 1.0]), True),  # right-handed: read back as written
    (DIRECTION, False),  # left-handed: Slicer's reader flips K, the same voxels in the same places
])
def test_nrrd_round_trip_through_slicer_storage(mrml, tmp_path, direction, exact):
    array = blob((10, 12, 14), (4.5, 6.2, 7.1), (2.0, 2.0, 2.0), np.int16)
    matrix = anisotropic_matrix(direction)
    inputNode = mrml.volume(array, matrix)
    outputNode = AntiAliasedResampleLogic().process(inputNode, factor=(2.0, 2.0, 3.0))
    path = tmp_path / "resampled.nrrd"

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    mrml.scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(outputNode) == 1
    reloaded = mrml.volumesLogic.AddArchetypeVolume(str(path), "reloaded", 0)
    assert reloaded is not None

    written, read = arrayFromVolume(outputNode), arrayFromVolume(reloaded)
    writtenMatrix, readMatrix = ijk_to_ras(outputNode), ijk_to_ras(reloaded)
    if exact:
        np.testing.assert_allclose(readMatrix, writtenMatrix, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(read, written)
    # Every reloaded voxel holds the value written at the same RAS position.
    k, j, i = np.meshgrid(*[np.arange(n) for n in read.shape], indexing="ij")
    ras = readMatrix[:3, :3] @ np.stack([i.ravel(), j.ravel(), k.ravel()]) + readMatrix[:3, 3:4]
    ijk = np.linalg.solve(writtenMatrix[:3, :3], ras - writtenMatrix[:3, 3:4])
    np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-6)
    ii, jj, kk = np.round(ijk).astype(int)
    np.testing.assert_array_equal(read.ravel(), written[kk, jj, ii])


# --- cancel and errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lanczos", "mean", "fft"])
@pytest.mark.parametrize("cancelAt", [1, 3])
def test_cancel_leaves_no_new_node(mrml, method, cancelAt):
    inputNode = mrml.volume(blob((20, 24, 28), (10, 12, 14), (4, 4, 4)))
    nodeIds = {mrml.scene.GetNthNode(i).GetID() for i in range(mrml.scene.GetNumberOfNodes())}
    calls = []

    def progress(fraction, message):
        calls.append(fraction)
        return len(calls) < cancelAt

    logic = AntiAliasedResampleLogic()
    with pytest.raises(Cancelled):
        logic.process(inputNode, factor=2.0, method=method, progress=progress)
    if method == "lanczos":  # vtkImageResize is not interrupted: the core raises Cancelled once it returns
        assert len(calls) >= cancelAt
    else:
        assert len(calls) == cancelAt
    assert {mrml.scene.GetNthNode(i).GetID() for i in range(mrml.scene.GetNumberOfNodes())} == nodeIds
    assert logic.lastResult is None


def test_cancel_on_the_last_step_before_writing_still_cancels(mrml):
    inputNode = mrml.volume(np.ones((8, 8, 8), np.float32))
    count = len(mrml.volumeNodes())
    with pytest.raises(Cancelled):
        AntiAliasedResampleLogic().process(
            inputNode, factor=2.0, progress=lambda fraction, message: message != "updating the output volume")
    assert len(mrml.volumeNodes()) == count


def test_cancel_and_errors_leave_a_given_output_node_unchanged(mrml):
    inputNode = mrml.volume(np.ones((8, 10, 12), np.float32), anisotropic_matrix())
    given = mrml.volume(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), np.diag([2.0, 3.0, 4.0, 1.0]), name="mine")
    logic = AntiAliasedResampleLogic()

    with pytest.raises(Cancelled):
        logic.process(inputNode, given, factor=2.0, progress=lambda fraction, message: False)
    with pytest.raises(BigVolumeError, match="finer"):
        logic.process(inputNode, given, spacing=(0.1, 1.0, 2.0))
    with pytest.raises(BigVolumeError, match="unknown method"):
        logic.process(inputNode, given, method="bicubic")

    np.testing.assert_array_equal(arrayFromVolume(given), np.arange(8).reshape(2, 2, 2))
    np.testing.assert_array_equal(ijk_to_ras(given), np.diag([2.0, 3.0, 4.0, 1.0]))


def test_progress_rises_to_one(mrml):
    inputNode = mrml.volume(np.ones((16, 16, 16), np.float32))
    fractions = []
    AntiAliasedResampleLogic().process(inputNode, factor=2.0, method="mean",
                                       progress=lambda fraction, message: fractions.append(fraction))
    assert fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))


def test_invalid_requests_are_user_errors(mrml):
    inputNode = mrml.volume(np.ones((8, 8, 8), np.float32))
    vectorNode = mrml.volume(np.zeros((4, 4, 4, 3), np.uint8), className="vtkMRMLVectorVolumeNode")
    count = mrml.scene.GetNumberOfNodes()
    logic = AntiAliasedResampleLogic()
    with pytest.raises(BigVolumeError, match="differ"):
        logic.process(inputNode, inputNode)
    with pytest.raises(BigVolumeError, match="vector"):
        logic.process(vectorNode, inputNode)
    with pytest.raises(BigVolumeError, match="upsample"):
        logic.process(inputNode, factor=0.5)
    with pytest.raises(BigVolumeError, match="no input"):
        logic.process(None)
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(BigVolumeError, match="no voxels"):
        logic.process(empty)
    tensor = mrml.scene.AddNewNodeByClass("vtkMRMLDiffusionTensorVolumeNode", "dti")
    with pytest.raises(BigVolumeError, match="not supported"):
        logic.process(tensor)
    assert mrml.scene.GetNumberOfNodes() == count + 2  # only the two nodes added here


def test_64_bit_integers_are_refused_before_any_work(mrml):
    inputNode = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "int64")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk.VTK_LONG_LONG, 1)
    inputNode.SetAndObserveImageData(image)
    calls = []
    with pytest.raises(BigVolumeError, match="64-bit"):
        AntiAliasedResampleLogic().process(inputNode, progress=lambda fraction, message: calls.append(fraction))
    assert calls == []
