"""The OMEZarrPyramid module's Qt-free logic on a real MRML scene (slicer-core, no Slicer application): the finest
level that fits a budget loaded with its exact IJKToRAS, a Markups ROI's box at full resolution, cancel and errors."""
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
pytest.importorskip("zarr")

from slicer.util import arrayFromVolume, arrayFromVTKMatrix, vtkMatrixFromArray  # noqa: E402

from bigvolume.core.geometry import Geometry  # noqa: E402
from OMEZarrPyramidLib import FIT, BigVolumeError, Cancelled, OMEZarrPyramidLogic  # noqa: E402
from zarr_stores import bioformats2raw_store, decimate, legacy_store, subsample, write_store  # noqa: E402


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


@pytest.mark.parametrize("level", [0, 1])
def test_a_given_output_node_under_a_transform_loads_in_the_store_s_coordinates(store, scene, level):
    """The node's parent transform was kept: the level showed 50 mm away from where the store puts it."""
    logic = OMEZarrPyramidLogic()
    moved = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    shift = np.eye(4)
    shift[0, 3] = 50.0
    moved.SetMatrixTransformToParent(vtkMatrixFromArray(shift))
    output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mine")
    output.SetAndObserveTransformNodeID(moved.GetID())
    node = logic.loadLevel(store, level, 10**9, outputNode=output)
    assert node.GetTransformNodeID() is None
    grid = GEOMETRY if level == 0 else GEOMETRY.downsampled(3)
    np.testing.assert_allclose(ijk_to_ras(node), grid.ijk_to_ras(), atol=1e-9)
    # a load that fails leaves the node as it was, its transform included
    output.SetAndObserveTransformNodeID(moved.GetID())
    with pytest.raises(Cancelled):
        logic.loadLevel(store, level, 10**9, outputNode=output, progress=lambda fraction, message: False)
    assert output.GetTransformNodeID() == moved.GetID()


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


@pytest.mark.parametrize("low, high, clipped", [
    ((-6, 5, 3), (25, 20, 12), ((3, 13), (5, 21), (0, 26))),        # beyond i = 0
    ((10, 5, 20), (25, 50, 45), ((20, 30), (5, 36), (10, 26))),     # beyond the last j and k
    ((10, 5, 3), (25, 20, 12), None),                               # inside: no note
])
def test_a_roi_reaching_beyond_the_volume_loads_the_part_inside_and_says_so(store, scene, low, high, clipped):
    """The box was clipped to the volume without a word: the region loaded was smaller than the ROI drawn."""
    logic = OMEZarrPyramidLogic()
    roi = add_roi(scene, tuple(v - 0.4 for v in low), tuple(v + 0.4 for v in high))
    node = logic.loadRoi(store, roi, 0, 10**9)
    said = [note for note in logic.lastResult.notes if "reaches beyond the volume" in note]
    if clipped is None:
        assert not said
        return
    (k0, k1), (j0, j1), (i0, i1) = clipped
    assert logic.lastResult.box == clipped
    np.testing.assert_array_equal(arrayFromVolume(node), ARRAY[k0:k1, j0:j1, i0:i1])
    assert said == [f"ROI roi reaches beyond the volume: only the part inside was loaded "
                    f"({i1 - i0}x{j1 - j0}x{k1 - k0} voxels of level 0)."]
    assert said[0] in logic.lastResult.summary()


def test_an_inside_out_roi_is_refused(store, scene):
    """Slicer's inside-out ROI stands for what lies outside its box (IsPointInROIWorld, GetPlanesWorld invert it):
    its box was loaded as if it were not."""
    logic = OMEZarrPyramidLogic()
    roi = add_roi(scene, (9.6, 4.6, 2.6), (25.4, 20.4, 12.4))
    roi.SetInsideOut(True)
    before = len(volume_nodes(scene))
    with pytest.raises(BigVolumeError, match="ROI roi is inside out"):
        logic.loadRoi(store, roi, 0, 10**9)
    assert len(volume_nodes(scene)) == before


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


# --- creating a pyramid ---------------------------------------------------------------------------------------------
def volume_node(scene, array, geometry, name="scan", class_name="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(class_name, name)
    image = vtk.vtkImageData()
    image.SetDimensions(*geometry.dimensions)
    node.SetAndObserveImageData(image)
    from slicer.util import updateVolumeFromArray
    updateVolumeFromArray(node, array)
    node.SetIJKToRASMatrix(vtkMatrixFromArray(geometry.ijk_to_ras()))
    return node


@pytest.mark.parametrize("seed, dtype", [(5, np.uint16), (11, np.int16), (17, np.float32)])
def test_a_volume_of_the_scene_becomes_a_pyramid_with_its_geometry(scene, tmp_path, seed, dtype):
    """Level 0 is the node's voxels and grid (a rotated, anisotropic one with an origin), level 1 is
    bigvolume.resample's with that level's factors; the node's temporary copy is gone afterwards."""
    from bigvolume import Volume, open_pyramid, resample

    rng = np.random.default_rng(seed)
    geometry = Geometry(tuple(int(n) for n in rng.integers(20, 40, 3)), tuple(rng.uniform(0.3, 1.6, 3)),
                        tuple(rng.uniform(-50, 50, 3)), rotation(seed))
    array = (rng.normal(1000, 300, geometry.shape)).astype(dtype)
    node = volume_node(scene, array, geometry, name="scan: a/b")  # a name no file system takes as is
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    logic = OMEZarrPyramidLogic()
    report = logic.createPyramid(node, tmp_path / "out.ome.zarr", chunks=16, tempFolder=temporary)
    assert logic.lastPyramid is report and len(report.levels) >= 2
    assert not any(temporary.iterdir()) and not (tmp_path / "out.ome.zarr.partial").exists()
    pyramid = open_pyramid(tmp_path / "out.ome.zarr")
    assert pyramid.unit == "millimeter"
    level0 = logic.loadLevel(tmp_path / "out.ome.zarr", "0", 10**9, scene=scene)
    np.testing.assert_array_equal(arrayFromVolume(level0), array)
    np.testing.assert_allclose(ijk_to_ras(level0), geometry.ijk_to_ras(), atol=1e-9)
    level1 = logic.loadLevel(tmp_path / "out.ome.zarr", "1", 10**9, scene=scene)
    expected = resample(Volume(array, geometry), report.levels[1].factors)
    tolerance = 1e-4 * float(np.ptp(array)) if dtype == np.float32 else 1
    np.testing.assert_allclose(arrayFromVolume(level1).astype(float), expected.array.astype(float), atol=tolerance)
    np.testing.assert_allclose(ijk_to_ras(level1), expected.geometry.ijk_to_ras(), atol=1e-9)


def test_a_stack_with_its_voxel_size_in_micrometres(scene, tmp_path):
    from bigvolume import open_pyramid
    from test_stacks import write_stack

    folder = tmp_path / "slices"
    array = np.random.default_rng(9).integers(0, 255, (9, 30, 34), dtype=np.uint8)
    write_stack(folder, array, name="slice_{:03d}.png")
    logic = OMEZarrPyramidLogic()
    report = logic.createPyramid(folder, tmp_path / "stack.ome.zarr", chunks=16, stackVoxelSize=2.5)
    pyramid = open_pyramid(report.output_path)
    assert pyramid.unit == "micrometer"
    np.testing.assert_allclose(pyramid.level(0).geometry.spacing, [0.0025] * 3)  # read back in mm
    node = logic.loadLevel(report.output_path, "0", 10**9, scene=scene)
    np.testing.assert_array_equal(arrayFromVolume(node), array)


def test_create_refusals_and_cancel_leave_everything_as_it_was(scene, tmp_path):
    logic = OMEZarrPyramidLogic()
    node = volume_node(scene, ARRAY, GEOMETRY)
    existing = write_store(tmp_path / "old.ome.zarr", ARRAY, GEOMETRY, factors=(3,))
    before = sorted((p, p.stat().st_mtime_ns) for p in existing.rglob("*"))
    with pytest.raises(BigVolumeError, match="exists; give --overwrite"):
        logic.createPyramid(node, existing)
    assert sorted((p, p.stat().st_mtime_ns) for p in existing.rglob("*")) == before
    with pytest.raises(BigVolumeError, match="choose where to write"):
        logic.createPyramid(node, "")
    with pytest.raises(BigVolumeError, match="choose the input"):
        logic.createPyramid("", tmp_path / "new.ome.zarr")
    with pytest.raises(BigVolumeError, match="cannot resume"):
        logic.createPyramid(node, tmp_path / "new.ome.zarr", resume=True)
    with pytest.raises(BigVolumeError, match="for image stacks"):
        logic.createPyramid(node, tmp_path / "new.ome.zarr", stackVoxelSize=2.0)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(BigVolumeError, match="harden it first"):
        logic.createPyramid(node, tmp_path / "new.ome.zarr")
    node.SetAndObserveTransformNodeID(None)
    with pytest.raises(BigVolumeError, match="no such file"):
        logic.createPyramid(tmp_path / "missing.nrrd", tmp_path / "new.ome.zarr")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with pytest.raises(Cancelled):
        logic.createPyramid(node, tmp_path / "new.ome.zarr", chunks=16, tempFolder=temporary,
                            progress=lambda fraction, message: fraction < 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.ome.zarr", "tmp"] and not any(temporary.iterdir())
    assert logic.lastPyramid is None


def test_stores_of_other_writers_load_with_their_geometry_and_notes(scene, tmp_path):
    """A bioformats2raw root (its image 0, the others named) and an OME-Zarr 0.3 store (no pixel size: unit grid)
    open in the panel's logic with what the command line says about them in the description and the result."""
    logic = OMEZarrPyramidLogic()
    first, second = ARRAY[:20, :24, :28], ARRAY[20:30, :12, :14]
    b2r = bioformats2raw_store(tmp_path / "b2r.ome.zarr", [first, second])
    pyramid = logic.openPyramid(b2r)
    assert "a bioformats2raw store of 2 images; reading image 0" in logic.describe(pyramid, 10**9)
    node = logic.loadLevel(b2r, FIT, 10**9, scene=scene)
    np.testing.assert_array_equal(arrayFromVolume(node), first)
    expected = Geometry((28, 24, 20), (0.00025, 0.0005, 0.002))  # micrometres (0.25, 0.5, 2) in millimetres
    np.testing.assert_allclose(ijk_to_ras(node), expected.ijk_to_ras(), atol=1e-12)
    assert any("bioformats2raw" in note for note in logic.lastResult.notes)
    old, levels = legacy_store(tmp_path / "old.ome.zarr", "0.3", ARRAY[:21, :17, :33], decimate)
    pyramid = logic.openPyramid(old)
    assert "OME-Zarr 0.3 holds no pixel size" in logic.describe(pyramid, 10**9)
    node = logic.loadLevel(old, "1", 10**9, scene=scene)
    np.testing.assert_array_equal(arrayFromVolume(node), levels[1])
    np.testing.assert_allclose(ijk_to_ras(node), Geometry(levels[1].shape[::-1], (2, 2, 2)).ijk_to_ras(), atol=1e-12)
    assert any("no pixel size" in note for note in logic.lastResult.notes)


@pytest.mark.parametrize("method", ["lanczos", "gaussian", "mean"])
def test_a_label_map_s_pyramid_holds_only_its_labels(scene, tmp_path, method):
    """createPyramid on a label-map node used the smoothing kernel asked for: level 1 held labels the input has
    not (4 and 8 between 0, 5 and 9). Now nearest, as AntiAliasedResample does, and the report says so."""
    rng = np.random.default_rng(4)
    labels = rng.choice(np.array([0, 5, 9], np.uint8), GEOMETRY.shape, p=[0.5, 0.3, 0.2])
    node = volume_node(scene, labels, GEOMETRY, class_name="vtkMRMLLabelMapVolumeNode")
    report = OMEZarrPyramidLogic().createPyramid(node, tmp_path / "labels.ome.zarr", chunks=16, method=method)
    assert any("Label map: used 'nearest'" in note for note in report.notes)
    from bigvolume import read_volume
    for level in range(len(report.levels)):
        assert set(np.unique(read_volume(tmp_path / "labels.ome.zarr", level=level).array)) <= {0, 5, 9}


def test_a_refusal_about_a_node_s_copy_names_the_node(scene, tmp_path):
    """The node is written to a temporary NHDR first: the pyramid's refusal named that file, not the node."""
    rgb = np.random.default_rng(1).integers(0, 255, GEOMETRY.shape + (3,), dtype=np.uint8)
    node = volume_node(scene, rgb, GEOMETRY, name="colour scan", class_name="vtkMRMLVectorVolumeNode")
    with pytest.raises(BigVolumeError) as error:
        OMEZarrPyramidLogic().createPyramid(node, tmp_path / "rgb.ome.zarr", chunks=16)
    assert str(error.value).startswith("colour scan") and ".nhdr" not in str(error.value), error.value


@pytest.mark.parametrize("name", ["NUL", "com1", "Aux.scan"])
def test_a_node_named_like_a_windows_device_is_copied_under_another_name(scene, tmp_path, monkeypatch, name):
    """The node's temporary copy is named for the node: "NUL.nhdr" is Windows' null device (the write would vanish,
    "the writer produced no file")."""
    import bigvolume

    written = []
    real_write = bigvolume.write_volume

    def recording(volume, path, *args, **kwargs):
        written.append(Path(path).name)
        return real_write(volume, path, *args, **kwargs)
    monkeypatch.setattr(bigvolume, "write_volume", recording)
    array = np.random.default_rng(2).integers(0, 1000, GEOMETRY.shape).astype(np.uint16)
    node = volume_node(scene, array, GEOMETRY, name=name)
    OMEZarrPyramidLogic().createPyramid(node, tmp_path / "out.ome.zarr", chunks=16)
    assert written == [f"{name}_.nhdr"]
    from bigvolume import read_volume
    np.testing.assert_array_equal(read_volume(tmp_path / "out.ome.zarr", level=0).array, array)
