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


@pytest.mark.parametrize("method", ["lanczos", "gaussian", "mean"])
def test_a_scalar_volume_into_a_label_map_output_uses_a_label_safe_method(mrml, method):
    """A helper: a given label-map output (the panel keeps the last one) got a scalar input smoothed into it, labels
    7 invented and 8 lost, no note; the CLI parameters asked for lanczos too. The file mode already chose by the
    output."""
    array = np.zeros((8, 8, 8), np.int16)
    array[2:6, 2:6, 2:6] = 5
    array[4:] += 3  # labels 0, 3, 5, 8
    inputNode = mrml.volume(array, anisotropic_matrix())
    labels = mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    logic = AntiAliasedResampleLogic()
    logic.process(inputNode, labels, factor=2, method=method)
    assert logic.lastResult.method == "nearest" and any("nearest" in note for note in logic.lastResult.notes)
    np.testing.assert_array_equal(arrayFromVolume(labels), bigvolume.downsample_array(array, 2, "nearest"))
    assert set(np.unique(arrayFromVolume(labels))) <= {0, 3, 5, 8}
    assert logic.cliParameters(inputNode, labels, factor=2, method=method)["method"] == "nearest"


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


@pytest.mark.parametrize("vtk_type, name", [(vtk.VTK_LONG_LONG, "int64"), (vtk.VTK_UNSIGNED_LONG_LONG, "uint64")])
def test_64_bit_integers_are_refused_before_any_work(mrml, vtk_type, name):
    """uint64 was accepted and made a node Slicer's histogram cannot handle."""
    inputNode = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk_type, 1)
    inputNode.SetAndObserveImageData(image)
    calls = []
    with pytest.raises(BigVolumeError, match=f"64-bit integer voxels \\({name}\\)"):
        AntiAliasedResampleLogic().process(inputNode, progress=lambda fraction, message: calls.append(fraction))
    assert calls == []


# --- input files too big to load -------------------------------------------------------------------------------
def lps_volume(array, direction=DIRECTION, spacing=SPACING, origin=ORIGIN):
    """A bigvolume.Volume on an oblique (left-handed), anisotropic grid with a non-zero origin (LPS, as in files)."""
    return bigvolume.Volume.from_array(array, spacing=spacing, origin=origin, direction=direction)


def scan_volume(dtype=np.int16, shape=(13, 18, 23)):
    """A smooth blob plus noise: the noise makes every output voxel depend on the kernel and on its block."""
    rng = np.random.default_rng(3)
    array = blob(shape, (5.5, 9.2, 10.1), (3.0, 3.5, 4.0), np.float32) + rng.normal(0.0, 40.0, size=shape)
    return lps_volume(array.astype(dtype))


def folder_digest(folder):
    """name -> bytes of every file in a folder (an input must be exactly as it was)."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def node_ids(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


@pytest.fixture
def folders(tmp_path):
    data, temp = tmp_path / "data", tmp_path / "temp"
    data.mkdir()
    temp.mkdir()
    return data, temp


@pytest.mark.parametrize("name, factor", [
    ("scan.nhdr", 2.0),               # detached raw: memory-mapped slabs
    ("scan.nrrd", (1.0, 2.0, 3.0)),   # gzip, attached: decoded slab by slab; per-axis factors
    ("scan.nii.gz", 2.5),             # NIfTI, fractional factor
])
def test_file_mode_streams_and_loads_the_block_centred_result(mrml, folders, name, factor):
    data, temp = folders
    volume = scan_volume()
    path = bigvolume.write_volume(volume, data / name)
    before = folder_digest(data)
    stored = bigvolume.read_volume(path)  # what the file holds (NIfTI keeps its matrix in float32)
    assert stored.geometry.isclose(volume.geometry, rtol=0, atol=1e-5)
    logic = AntiAliasedResampleLogic()
    assert "streamed from disk" in logic.describeFilePlan(path, factor, memoryLimit=1)

    outputNode = logic.processFile(path, factor=factor, scene=mrml.scene, memoryLimit=1, tempFolder=temp)

    factors = bigvolume.choose_factors(stored.geometry, 2, factor)
    expectedGeometry = stored.geometry.downsampled(factors)
    assert outputNode.GetScene() is mrml.scene and outputNode.GetName() == "scan resampled"
    assert outputNode.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert outputNode.GetImageData().GetDimensions() == expectedGeometry.dimensions
    np.testing.assert_allclose(ijk_to_ras(outputNode), expectedGeometry.ijk_to_ras(), rtol=0, atol=1e-9)
    # The same grid from the RAS matrix alone (an independent derivation of the block-centred grid).
    np.testing.assert_allclose(ijk_to_ras(outputNode), expected_matrix(stored.geometry.ijk_to_ras(), factors),
                               rtol=0, atol=1e-9)
    result = arrayFromVolume(outputNode)
    reference = bigvolume.resample(stored, factor).array
    assert result.dtype == np.int16 and result.shape == reference.shape
    assert np.abs(result.astype(int) - reference.astype(int)).max() <= 1  # float rounding of the streamed sums
    assert outputNode.GetParentTransformNode() is None and outputNode.GetDisplayNode() is not None

    result = logic.lastResult
    assert result.outputNode is outputNode and result.streamed and result.savedPath is None
    assert result.inputPath == path and result.inputDimensions == stored.geometry.dimensions
    assert result.outputDimensions == expectedGeometry.dimensions
    assert "streamed in" in result.summary() and "limit 1 B" in result.summary()
    assert list(temp.iterdir()) == []  # the temporary output is gone
    assert folder_digest(data) == before  # the input is untouched and nothing was written beside it


def test_file_mode_reads_whole_when_it_fits_and_streams_when_asked(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nhdr")
    logic = AntiAliasedResampleLogic()
    plans, arrays = [], []
    for memoryLimit, stream in ((None, None), (1, None), ("1GB", True), (1, False)):
        plans.append(logic.describeFilePlan(path, 2.0, memoryLimit=memoryLimit, stream=stream))
        outputNode = logic.processFile(path, scene=mrml.scene, memoryLimit=memoryLimit, stream=stream,
                                       tempFolder=temp)
        assert logic.lastResult.streamed == ("streamed from disk" in plans[-1]), plans[-1]
        arrays.append(arrayFromVolume(outputNode).astype(int))
        assert list(temp.iterdir()) == []
    assert "automatic" in plans[0] and "read whole" in plans[0]
    assert "streamed from disk, as asked" in plans[2] and "read whole, as asked" in plans[3]
    for array in arrays[1:]:  # streamed or not, the same voxels
        assert np.abs(array - arrays[0]).max() <= 1


def test_file_plan_predicts_what_the_core_does_for_methods_that_cannot_stream(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(np.float32), data / "scan.nhdr")
    logic = AntiAliasedResampleLogic()
    plan = logic.describeFilePlan(path, memoryLimit=1, method="fft")
    assert "fft cannot stream" in plan
    logic.processFile(path, scene=mrml.scene, memoryLimit=1, method="fft", tempFolder=temp)
    assert not logic.lastResult.streamed and logic.lastResult.method == "fft"
    assert any("memory limit" in note for note in logic.lastResult.notes)  # the core's warning reaches the user
    with pytest.raises(BigVolumeError, match="cannot stream"):
        logic.describeFilePlan(path, stream=True, method="fft")
    with pytest.raises(BigVolumeError, match="cannot stream"):
        logic.processFile(path, scene=mrml.scene, stream=True, method="fft", tempFolder=temp)
    assert list(temp.iterdir()) == []


def test_a_file_that_cannot_be_read_in_slabs_is_read_whole_and_the_user_is_told(mrml, folders):
    data, temp = folders
    array = np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10)
    path = data / "ascii.nrrd"  # ASCII encoding: no byte offsets to read slabs at
    path.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 10 8 6\nspace: left-posterior-superior\n"
                    "space directions: (0.5,0,0) (0,0.5,0) (0,0,2)\nspace origin: (1,2,3)\nencoding: ascii\n\n"
                    + " ".join(str(v) for v in array.ravel()) + "\n")
    logic = AntiAliasedResampleLogic()
    plan = logic.describeFilePlan(path, memoryLimit=1)
    assert "cannot be read in slabs" in plan
    outputNode = logic.processFile(path, scene=mrml.scene, memoryLimit=1, tempFolder=temp)
    assert not logic.lastResult.streamed
    assert any("more than the memory limit" in note for note in logic.lastResult.notes)  # the core says so
    reference = bigvolume.resample(bigvolume.Volume.from_array(array, spacing=(0.5, 0.5, 2.0)), 2.0).array
    np.testing.assert_array_equal(arrayFromVolume(outputNode), reference)
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("memoryLimit", [1, None])  # streamed slab by slab, or read whole
def test_file_mode_progress_rises_to_one(mrml, folders, memoryLimit):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nhdr")
    calls = []
    AntiAliasedResampleLogic().processFile(path, scene=mrml.scene, memoryLimit=memoryLimit, tempFolder=temp,
                                           progress=lambda fraction, message: calls.append((fraction, message)))
    fractions = [fraction for fraction, _ in calls]
    assert fractions[-1] == 1.0 and all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert ("slab" in " ".join(message for _, message in calls)) == (memoryLimit == 1)


def test_save_beside_input_keeps_only_the_nhdr_and_its_raw_file(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nrrd")
    before = folder_digest(data)
    logic = AntiAliasedResampleLogic()
    for _ in range(2):  # a second run replaces the first result
        outputNode = logic.processFile(path, scene=mrml.scene, memoryLimit=1, saveBesideInput=True,
                                       tempFolder=temp)
    saved = data / "scan_resampled.nhdr"
    assert sorted(p.name for p in data.iterdir()) == ["scan.nrrd", "scan_resampled.nhdr", "scan_resampled.raw"]
    assert {name: content for name, content in folder_digest(data).items() if name in before} == before
    assert list(temp.iterdir()) == []
    assert logic.lastResult.savedPath == saved and f"Saved as {saved}" in logic.lastResult.summary()
    assert logic.savedPathFor(path) == saved
    # The saved file holds exactly what was loaded, on the same grid.
    savedVolume = bigvolume.read_volume(saved)
    np.testing.assert_array_equal(savedVolume.array, arrayFromVolume(outputNode))
    np.testing.assert_allclose(savedVolume.geometry.ijk_to_ras(), ijk_to_ras(outputNode), rtol=0, atol=1e-9)
    storage = outputNode.GetStorageNode()
    assert storage is not None and storage.GetFileName() == str(saved) and not storage.GetUseCompression()


def test_output_path_is_taken_from_the_input_folder(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nii.gz")
    logic = AntiAliasedResampleLogic()
    logic.processFile(path, scene=mrml.scene, memoryLimit=1, outputPath="small.nii.gz", tempFolder=temp)
    assert sorted(p.name for p in data.iterdir()) == ["scan.nii.gz", "small.nii.gz"]
    assert logic.lastResult.savedPath == data / "small.nii.gz"
    assert bigvolume.read_geometry(data / "small.nii.gz")[0].dimensions == logic.lastResult.outputDimensions


@pytest.mark.parametrize("save", [False, True])
@pytest.mark.parametrize("cancelAt", [1, 4, "loading the result"])
def test_cancel_in_file_mode_leaves_no_node_and_no_file(mrml, folders, save, cancelAt):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nhdr")
    before, ids = folder_digest(data), node_ids(mrml.scene)
    messages = []

    def progress(fraction, message):
        messages.append(message)
        return message != cancelAt if isinstance(cancelAt, str) else len(messages) < cancelAt

    logic = AntiAliasedResampleLogic()
    with pytest.raises(Cancelled):
        logic.processFile(path, scene=mrml.scene, memoryLimit=1, saveBesideInput=save, tempFolder=temp,
                          progress=progress)
    assert messages[-1] == cancelAt if isinstance(cancelAt, str) else len(messages) == cancelAt  # stopped at once
    assert node_ids(mrml.scene) == ids and logic.lastResult is None
    assert folder_digest(data) == before and list(temp.iterdir()) == []


def test_cancel_in_file_mode_leaves_a_given_node_unchanged(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nhdr")
    given = mrml.volume(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), np.diag([2.0, 3.0, 4.0, 1.0]), name="mine")
    with pytest.raises(Cancelled):
        AntiAliasedResampleLogic().processFile(path, given, memoryLimit=1, tempFolder=temp,
                                               progress=lambda fraction, message: message != "loading the result")
    np.testing.assert_array_equal(arrayFromVolume(given), np.arange(8).reshape(2, 2, 2))
    np.testing.assert_array_equal(ijk_to_ras(given), np.diag([2.0, 3.0, 4.0, 1.0]))


def test_file_mode_errors_name_the_file_and_leave_nothing(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nhdr", compress=False)
    raw = data / "scan.raw"
    raw.write_bytes(raw.read_bytes()[:-100])  # a truncated copy: the header promises more voxels
    before, ids = folder_digest(data), node_ids(mrml.scene)
    logic = AntiAliasedResampleLogic()
    calls = []

    with pytest.raises(BigVolumeError, match=r"scan\.nhdr.*short"):
        logic.describeFilePlan(path)
    for stream in (None, True, False):
        with pytest.raises(BigVolumeError, match=r"scan\.nhdr"):
            logic.processFile(path, scene=mrml.scene, stream=stream, saveBesideInput=True, tempFolder=temp,
                              progress=lambda fraction, message: calls.append(message))
    missing = data / "missing.nrrd"
    with pytest.raises(BigVolumeError, match="missing.nrrd: no such file"):
        logic.processFile(missing, scene=mrml.scene, tempFolder=temp)
    with pytest.raises(BigVolumeError, match="missing.nrrd: no such file"):
        logic.describeFilePlan(missing)
    assert calls == []  # refused before any work
    assert node_ids(mrml.scene) == ids and logic.lastResult is None
    assert folder_digest(data) == before and list(temp.iterdir()) == []


def test_file_mode_refuses_invalid_requests_before_any_work(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nhdr")
    vectorNode = mrml.volume(np.zeros((4, 4, 4, 3), np.uint8), className="vtkMRMLVectorVolumeNode", name="rgb")
    before, ids = folder_digest(data), node_ids(mrml.scene)
    logic = AntiAliasedResampleLogic()
    calls = []

    def run(*args, **kwargs):
        kwargs.setdefault("scene", mrml.scene)
        logic.processFile(*args, tempFolder=temp, progress=lambda fraction, message: calls.append(message), **kwargs)

    for inputPath in (None, "", "."):
        with pytest.raises(BigVolumeError, match="no input file"):
            run(inputPath)
    with pytest.raises(BigVolumeError, match="is a folder"):
        run(data)
    with pytest.raises(BigVolumeError, match="give a scene"):
        run(path, scene=None)
    with pytest.raises(BigVolumeError, match="scan.nhdr needs a scalar"):
        run(path, vectorNode)
    with pytest.raises(BigVolumeError, match="overwrite the input"):
        run(path, outputPath="scan.nhdr")
    with pytest.raises(BigVolumeError, match="unsupported output format"):
        run(path, outputPath="small.png")
    with pytest.raises(BigVolumeError, match="upsample"):
        run(path, factor=0.5)
    with pytest.raises(BigVolumeError, match="finer"):
        run(path, spacing=(0.1, 1.0, 2.0))
    with pytest.raises(BigVolumeError, match="unknown method"):
        run(path, method="bicubic")
    for memoryLimit in (0, -5, "lots"):
        with pytest.raises(BigVolumeError, match="memory limit"):
            run(path, memoryLimit=memoryLimit)
    with pytest.raises(BigVolumeError, match="temporary folder"):
        logic.processFile(path, scene=mrml.scene, tempFolder=data / "nowhere")
    assert calls == []
    assert node_ids(mrml.scene) == ids and logic.lastResult is None
    assert folder_digest(data) == before and list(temp.iterdir()) == []


def test_streamed_output_format_errors_name_the_file_asked_for(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nhdr")
    with pytest.raises(BigVolumeError, match=r"small\.mha: streamed outputs") as raised:
        AntiAliasedResampleLogic().processFile(path, scene=mrml.scene, memoryLimit=1, outputPath="small.mha",
                                               tempFolder=temp)
    assert ".partial" not in str(raised.value)  # the staging copy's name would mean nothing to the user
    assert sorted(p.name for p in data.iterdir()) == ["scan.nhdr", "scan.raw"]


def test_file_mode_fills_a_given_node_under_no_transform(mrml, folders):
    data, temp = folders
    path = bigvolume.write_volume(scan_volume(), data / "scan.nhdr")
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "old registration")
    given = mrml.volume(np.zeros((2, 2, 2), np.uint8), name="mine")
    given.SetAndObserveTransformNodeID(transform.GetID())
    count = mrml.scene.GetNumberOfNodes()
    outputNode = AntiAliasedResampleLogic().processFile(path, given, memoryLimit=1, tempFolder=temp)
    assert outputNode is given and given.GetName() == "mine" and mrml.scene.GetNumberOfNodes() == count
    assert given.GetParentTransformNode() is None  # the file's coordinates are world coordinates
    assert arrayFromVolume(given).dtype == np.int16
    expected = bigvolume.read_geometry(path)[0].downsampled(2.0).ijk_to_ras()
    np.testing.assert_allclose(ijk_to_ras(given), expected, rtol=0, atol=1e-9)


def test_label_map_output_node_makes_the_file_mode_label_safe(mrml, folders):
    data, temp = folders
    rng = np.random.default_rng(11)
    labels = np.array([0, 3, 7, 250], np.uint8)
    path = bigvolume.write_volume(lps_volume(labels[rng.integers(0, 4, size=(12, 16, 20))]), data / "seg.nhdr")
    labelNode = mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "seg small")
    logic = AntiAliasedResampleLogic()
    logic.processFile(path, labelNode, memoryLimit=1, method="lanczos", tempFolder=temp)
    assert logic.lastResult.method == "nearest" and any("nearest" in note for note in logic.lastResult.notes)
    assert set(np.unique(arrayFromVolume(labelNode))) <= set(labels)
    assert labelNode.GetDisplayNode().IsA("vtkMRMLLabelMapVolumeDisplayNode")


def test_vector_file_gives_a_vector_volume(mrml, folders):
    data, temp = folders
    array = np.empty((6, 10, 24, 3), np.uint8)
    array[...] = (10, 200, 30)
    array[:, :, 12:] = (250, 5, 128)
    path = bigvolume.write_volume(lps_volume(array), data / "photo.nhdr")
    outputNode = AntiAliasedResampleLogic().processFile(path, scene=mrml.scene, memoryLimit=1, tempFolder=temp)
    assert outputNode.GetClassName() == "vtkMRMLVectorVolumeNode" and outputNode.GetName() == "photo resampled"
    result = arrayFromVolume(outputNode)
    assert result.shape == (3, 5, 12, 3) and result.dtype == np.uint8
    np.testing.assert_array_equal(result, bigvolume.resample(bigvolume.read_volume(path), 2.0).array)


@pytest.mark.parametrize("stream", [True, False])
def test_an_output_with_nan_says_how_much_in_node_and_file_mode(mrml, folders, stream):
    """NaN outside a reconstruction's field of view spreads over the kernel: the result's notes say how many output
    voxels are NaN (and what to do), on a node as from a file, streamed or not; a clean volume says nothing."""
    data, temp = folders
    shape = (20, 64, 64)
    array = np.random.default_rng(5).normal(100, 5, shape).astype(np.float32)
    _, j, i = np.ogrid[:shape[0], :shape[1], :shape[2]]
    array[np.broadcast_to((j - 31.5) ** 2 + (i - 31.5) ** 2 > 30.0 ** 2, shape)] = np.nan
    path = bigvolume.write_volume(lps_volume(array), data / "fov.nrrd", compress=False)
    logic = AntiAliasedResampleLogic()
    for run in (lambda: logic.process(mrml.volume(array), factor=2.0),
                lambda: logic.processFile(path, factor=2.0, scene=mrml.scene, stream=stream, tempFolder=temp)):
        node = run()
        nan = int(np.isnan(arrayFromVolume(node)).sum())
        assert 0 < nan < node.GetImageData().GetNumberOfPoints()
        assert any(note.startswith(f"{nan} of the {node.GetImageData().GetNumberOfPoints()} output voxels")
                   and "are NaN" in note for note in logic.lastResult.notes), logic.lastResult.notes
        assert f"{nan} of the" in logic.lastResult.summary()
    logic.process(mrml.volume(np.nan_to_num(array, nan=100.0)), factor=2.0)
    assert not any("NaN" in note for note in logic.lastResult.notes)


NOTE_CASES = {  # what `bigvolume resample` prints a note about: array, spacing, settings
    "isotropic keeps a coarser axis": (np.random.default_rng(0).integers(0, 1000, (20, 22, 24)).astype(np.int16),
                                       (0.5, 0.5, 2.0), dict(factor=2.0, isotropic=True)),
    "a spacing an axis is too short for": (np.random.default_rng(1).integers(0, 1000, (3, 22, 24)).astype(np.int16),
                                           (1.0, 1.0, 1.0), dict(spacing=(2.0, 2.0, 8.0))),
    "a mask smoothed": ((np.random.default_rng(2).random((12, 14, 16)) > 0.5).astype(np.uint8), (1.0, 1.0, 1.0),
                        dict(factor=2.0)),
}


@pytest.mark.parametrize("case", list(NOTE_CASES))
def test_the_notes_the_command_line_prints_reach_the_result_in_node_and_file_mode(mrml, folders, caplog, case):
    """The core logs them during a run (the command line prints them as notes): the panel's result line had none of
    them on a node, only the mask's from a file; and the plan, made again at every change of a setting, logged the
    isotropic one each time."""
    data, temp = folders
    array, spacing, settings = NOTE_CASES[case]
    path = bigvolume.write_volume(bigvolume.Volume.from_array(array, spacing=spacing), data / "in.nrrd")
    with caplog.at_level("WARNING", logger="bigvolume"):
        bigvolume.resample_file(path, temp / "cli.nrrd", settings.get("factor"), spacing=settings.get("spacing"),
                                isotropic=settings.get("isotropic", False))
    printed = [record.getMessage() for record in caplog.records]
    assert printed
    caplog.clear()
    node = mrml.volume(array, np.diag([*spacing, 1.0]))
    logic = AntiAliasedResampleLogic()
    with caplog.at_level("INFO", logger="bigvolume"):
        for _ in range(3):  # the panel's plan, each time a setting settles
            logic.describePlan(node, **settings)
            logic.describeFilePlan(path, **settings)
            logic.outputGeometry(node, **settings)
    assert caplog.records == []
    logic.process(node, **settings)
    assert [note.replace("input: ", f"{path}: ") for note in logic.lastResult.notes] == printed
    assert all(note in logic.lastResult.summary() for note in logic.lastResult.notes)
    logic.processFile(path, scene=mrml.scene, tempFolder=temp, **settings)
    assert [note for note in logic.lastResult.notes if not note.startswith("Read from disk")] == printed


@pytest.mark.parametrize("start", [(10, 0, 0), (3, -2, 5)])
def test_image_data_whose_extent_does_not_start_at_0_keeps_its_place(mrml, start):
    """IJK are the image data's extent indices (Slicer's ShiftImageDataExtentToZeroStart moves the origin by the
    start): an extent starting at 10 was read as starting at 0, the output 10 voxels away from its input."""
    array = np.zeros((8, 10, 12), np.int16)
    array[3, 4, 5] = 1000  # one bright voxel, at IJK (5, 4, 3) + start
    node = mrml.volume(array, anisotropic_matrix(), name="shifted")
    image = node.GetImageData()
    image.SetExtent(start[0], start[0] + 11, start[1], start[1] + 9, start[2], start[2] + 7)
    bright_ras = anisotropic_matrix() @ np.array([5 + start[0], 4 + start[1], 3 + start[2], 1.0])
    same = node.GetImageData().GetExtent()[0::2]
    logic = AntiAliasedResampleLogic()
    for factor in (1, 2):
        out = logic.process(node, factor=factor, method="nearest" if factor == 1 else "max")
        result = arrayFromVolume(out)
        k, j, i = np.unravel_index(np.argmax(result), result.shape)
        found = ijk_to_ras(out) @ np.array([i, j, k, 1.0])
        offset = np.linalg.solve(anisotropic_matrix()[:3, :3], found[:3] - bright_ras[:3])  # in input voxels
        assert np.all(np.abs(offset) <= (factor - 1) / 2 + 1e-9), offset  # inside its block's centre's reach
    assert node.GetImageData().GetExtent()[0::2] == same  # the input untouched
    # shifted to a zero start by Slicer's own rule, the same grid
    expected = bigvolume.slicer.volume_nodes.geometry_from_node(node)
    node.ShiftImageDataExtentToZeroStart()
    assert bigvolume.slicer.volume_nodes.geometry_from_node(node) == expected


def test_an_output_node_of_another_scene_with_the_same_id_is_no_input(mrml):
    """IDs are unique within a scene only: a node of a second scene with the input's ID was refused as 'the
    input'."""
    inputNode = mrml.volume(np.arange(512, dtype=np.int16).reshape(8, 8, 8))
    other = Mrml()
    output = other.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "there")
    assert output.GetID() == inputNode.GetID()
    AntiAliasedResampleLogic().process(inputNode, output, factor=2)
    assert arrayFromVolume(output).shape == (4, 4, 4)
    with pytest.raises(BigVolumeError, match="must differ from the input"):
        AntiAliasedResampleLogic().process(inputNode, inputNode, factor=2)
