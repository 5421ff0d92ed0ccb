"""The OMEZarrPyramid module's Qt-free logic on a real MRML scene (slicer-core, no Slicer application): the finest
level that fits a budget loaded with its exact IJKToRAS, a Markups ROI's box at full resolution, cancel and errors."""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
pytest.importorskip("zarr")

from slicer.util import arrayFromVolume, arrayFromVTKMatrix, vtkMatrixFromArray  # noqa: E402

from bigvolume.core.geometry import Geometry  # noqa: E402
from OMEZarrPyramidLib import FIT, BigVolumeError, Cancelled, OMEZarrPyramidLogic  # noqa: E402
from zarr_stores import subsample, write_store  # noqa: E402


def rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


GEOMETRY = Geometry((40, 36, 30), (0.4, 0.7, 1.5), (12.5, -30.25, 7.0), rotation(5))
ARRAY = np.random.default_rng(2).integers(0, 4000, GEOMETRY.shape, dtype=np.uint16)


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "scan.ome.zarr", ARRAY, GEOMETRY, factors=(3, 9))


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return arrayFromVTKMatrix(matrix)


def volume_nodes(scene):
    collection = scene.GetNodesByClass("vtkMRMLVolumeNode")
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def test_the_finest_level_that_fits_loads_with_its_exact_geometry(store, scene):
    logic = OMEZarrPyramidLogic()
    pyramid = logic.openPyramid(store)
    sizes = [level.nbytes for level in pyramid.levels]
    for budget, level, factor in ((sizes[0], 0, 1), (sizes[0] - 1, 1, 3), (sizes[1] - 1, 2, 9)):
        node = logic.loadLevel(store, FIT, budget, scene=scene)
        assert logic.lastResult.level == level and logic.lastResult.outputNode is node
        expected = ARRAY if factor == 1 else subsample(ARRAY, factor)
        np.testing.assert_array_equal(arrayFromVolume(node), expected)
        grid = GEOMETRY if factor == 1 else GEOMETRY.downsampled(factor)
        np.testing.assert_allclose(ijk_to_ras(node), grid.ijk_to_ras(), atol=1e-9)
        assert node.GetDisplayNode() is not None
    with pytest.raises(BigVolumeError, match="does not fit"):
        logic.loadLevel(store, FIT, sizes[2] - 1, scene=scene)
    assert "<- Load level" in logic.describe(pyramid, sizes[0] - 1).splitlines()[2]  # level 1's line
    assert "Load level: level 0 needs" in logic.describe(pyramid, sizes[0] - 1, "0")  # said, not raised


def test_a_chosen_level_and_an_output_node(store, scene):
    logic = OMEZarrPyramidLogic()
    output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mine")
    node = logic.loadLevel(store, "2", 10**9, outputNode=output)
    assert node is output and arrayFromVolume(node).shape == GEOMETRY.downsampled(9).shape
    with pytest.raises(BigVolumeError, match="more than the budget"):
        logic.loadLevel(store, 0, 1000, scene=scene)
    with pytest.raises(BigVolumeError, match="level 7 does not exist"):
        logic.loadLevel(store, 7, 10**9, scene=scene)


def add_roi(scene, ijk_low, ijk_high, geometry=GEOMETRY, turn=None):
    """A ROI whose corners are the LPS points of the given (fractional) indices; ``turn``: its own rotation."""
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    low, high = (geometry.physical_point(p) for p in (ijk_low, ijk_high))
    centre_ras = np.diag([-1.0, -1.0, 1.0]) @ ((low + high) / 2)
    axes_ras = np.diag([-1.0, -1.0, 1.0]) @ geometry.direction if turn is None else turn
    size = np.abs(geometry.direction.T @ (high - low)) if turn is None else np.abs(high - low)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = axes_ras, centre_ras
    roi.SetAndObserveObjectToNodeMatrix(vtkMatrixFromArray(matrix))
    roi.SetSize(*size)
    return roi


def test_a_roi_loads_its_box_at_full_resolution(store, scene):
    logic = OMEZarrPyramidLogic()
    logic.loadLevel(store, FIT, logic.openPyramid(store).levels[1].nbytes, scene=scene)  # the overview
    roi = add_roi(scene, (10 - 0.4, 5 - 0.4, 3 - 0.4), (25 + 0.4, 20 + 0.4, 12 + 0.4))
    np.testing.assert_allclose(np.sort(roi.GetSize()), np.sort(np.abs(np.array([15.8, 15.8, 9.8])
                                                                      * GEOMETRY.spacing)), rtol=1e-9)
    box = logic.roiBox(logic.openPyramid(store), roi, 0)
    assert box == ((3, 13), (5, 21), (10, 26))
    node = logic.loadRoi(store, roi, 0, 10**9)
    np.testing.assert_array_equal(arrayFromVolume(node), ARRAY[3:13, 5:21, 10:26])
    np.testing.assert_allclose(ijk_to_ras(node), GEOMETRY.cropped(box).ijk_to_ras(), atol=1e-9)
    np.testing.assert_allclose(ijk_to_ras(node)[:3, 3], np.diag([-1, -1, 1]) @ GEOMETRY.physical_point((10, 5, 3)),
                               atol=1e-9)
    assert logic.lastResult.box == box and "ROI box" in logic.lastResult.summary()
    # At level 1: the box of that level's voxels over the same region
    coarse = logic.loadRoi(store, roi, 1, 10**9)
    level1 = GEOMETRY.downsampled(3)
    low = level1.physical_point(np.array(logic.lastResult.box)[::-1, 0] - 0.5)
    inside = np.linalg.solve(GEOMETRY.ijk_to_lps()[:3, :3], low - GEOMETRY.origin)
    assert np.all(inside <= [9.6, 4.6, 2.6]) and arrayFromVolume(coarse).size > 0
    assert "ROI at level 0" in logic.describe(logic.openPyramid(store), 10**9, roiNode=roi)
    with pytest.raises(BigVolumeError, match="more than the budget"):
        logic.loadRoi(store, roi, 0, 100)


def test_cancel_and_errors_leave_no_node(store, scene, tmp_path):
    logic = OMEZarrPyramidLogic()
    before = len(volume_nodes(scene))
    with pytest.raises(Cancelled):
        logic.loadLevel(store, 0, 10**9, scene=scene, progress=lambda fraction, message: False)
    assert len(volume_nodes(scene)) == before
    (store / "0" / "c" / "1" / "1" / "1").write_bytes(b"broken")
    with pytest.raises(BigVolumeError, match=r"chunk 0/c/1/1/1 is corrupt"):
        logic.loadLevel(store, 0, 10**9, scene=scene)
    assert len(volume_nodes(scene)) == before
    with pytest.raises(BigVolumeError, match="not a Zarr store"):
        logic.openPyramid(tmp_path)
    unplaced = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced")
    with pytest.raises(BigVolumeError, match="no size yet"):
        logic.loadRoi(store, unplaced, 0, 10**9)


def test_rgb_levels_load_into_vector_volumes(tmp_path, scene):
    array = np.random.default_rng(3).integers(0, 255, (12, 13, 14, 3), dtype=np.uint8)
    store = write_store(tmp_path / "rgb.ome.zarr", array, Geometry((14, 13, 12)), factors=(3,))
    node = OMEZarrPyramidLogic().loadLevel(store, 0, 10**9, scene=scene)
    assert node.GetClassName() == "vtkMRMLVectorVolumeNode"
    np.testing.assert_array_equal(arrayFromVolume(node), array)
