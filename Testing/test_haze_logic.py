"""The HazeRemoval module's Qt-free logic on a real MRML scene (slicer-core, no Slicer application): the output on
the input's exact grid and transform, the input untouched, the cavity phantom, the mask preview against the core's
haze_mask, precision reduction, cancel and refused inputs."""
import numpy as np
from scipy import ndimage
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from bigvolume.ops import haze  # noqa: E402
from bigvolume.ops.precision import reduce_bits  # noqa: E402
from bigvolume.slicer.volume_nodes import volume_from_node  # noqa: E402
from slicer.util import arrayFromVolume, vtkMatrixFromArray  # noqa: E402

from HazeRemovalLib import BigVolumeError, Cancelled, HazeRemovalLogic  # noqa: E402
from HazeRemovalLib.logic import MASK_LABEL  # noqa: E402
from test_slicer_logic import Mrml, anisotropic_matrix, ijk_to_ras  # noqa: E402  the scene the other Logic uses

SHAPE = (40, 44, 48)  # k, j, i


@pytest.fixture
def mrml():
    return Mrml()


def head_phantom(shape=SHAPE, dtype=np.int16, seed=1):
    """A head-like ellipsoid in Rician air noise: a bright shell (900) around two tissues (300 left, 600 right) and a
    dark central cavity holding the same noise as the air (the ventricle or sinus that must survive). Returns the
    volume, the cavity mask and the outside (air) mask."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape, dtype=float)
    centre = [(n - 1) / 2 for n in shape]
    r = np.sqrt(sum(((x - c) / (0.4 * n)) ** 2 for x, c, n in zip((k, j, i), centre, shape)))
    noise = np.hypot(rng.normal(0, 20, shape), rng.normal(0, 20, shape))  # Rician air, sigma 20
    volume = noise.copy()
    inside = r < 1.0
    volume[inside] = 900.0
    volume[(r < 0.8) & (i < centre[2])] = 300.0
    volume[(r < 0.8) & (i >= centre[2])] = 600.0
    volume[inside] += rng.normal(0, 20, shape)[inside]
    cavity = r < 0.35
    volume[cavity] = noise[cavity]
    return np.clip(volume, 0, None).astype(dtype), cavity, ~inside


def node_ids(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def expected_mask(node, **options):
    """What the core says the haze is for this node's voxels."""
    return haze.haze_mask(volume_from_node(node), HazeRemovalLogic.hazeOptions(**options))


# --- the output -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32])
def test_output_has_the_input_grid_transform_and_type_and_the_input_is_untouched(mrml, dtype):
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(vtkMatrixFromArray(np.array(
        [[1, 0, 0, 5.0], [0, 0, -1, 2.0], [0, 1, 0, -3.0], [0, 0, 0, 1]])))
    array, _, _ = head_phantom(dtype=dtype)
    inputNode = mrml.volume(array, anisotropic_matrix())  # oblique, left-handed, anisotropic
    inputNode.SetAndObserveTransformNodeID(transform.GetID())
    matrixBefore = ijk_to_ras(inputNode)
    mask = expected_mask(inputNode)

    outputNode = HazeRemovalLogic().process(inputNode)

    output = arrayFromVolume(outputNode)
    assert outputNode.GetClassName() == "vtkMRMLScalarVolumeNode" and outputNode is not inputNode
    assert output.dtype == np.dtype(dtype) and output.shape == array.shape
    assert np.array_equal(ijk_to_ras(outputNode), matrixBefore)  # bit-exact, not recomputed
    assert outputNode.GetParentTransformNode() is transform
    # The input: same voxels, grid, transform.
    np.testing.assert_array_equal(arrayFromVolume(inputNode), array)
    assert np.array_equal(ijk_to_ras(inputNode), matrixBefore)
    assert inputNode.GetParentTransformNode() is transform
    # Haze is the image minimum, everything else is the input's.
    assert 0 < mask.mean() < 1
    np.testing.assert_array_equal(output[mask], array.min())
    np.testing.assert_array_equal(output[~mask], array[~mask])
    assert output.min() == array.min() and output.max() == array.max()


def test_the_cavity_phantom_default_keeps_the_cavity_and_air_all_removes_it(mrml):
    array, cavity, outside = head_phantom()
    inputNode = mrml.volume(array)
    logic = HazeRemovalLogic()

    kept = arrayFromVolume(logic.process(inputNode))  # level auto, air "border", default dilation
    np.testing.assert_array_equal(kept[cavity], array[cavity])
    assert np.count_nonzero(kept[outside] == array.min()) > 0.8 * np.count_nonzero(outside)
    assert logic.lastReport.threshold.denoised
    assert not logic.lastReport.warning and "Warning" not in logic.lastResult.summary()

    tissue = ~cavity & ~outside
    # MRIcroGL's levels classify the raw voxels: without dilation, exactly the cavity goes.
    removed = arrayFromVolume(logic.process(inputNode, level=5, air="all", dilate=0))
    np.testing.assert_array_equal(removed[cavity], array.min())
    np.testing.assert_array_equal(removed[tissue], array[tissue])
    # Auto classifies the denoised copy, whose edges may move by one voxel: the cavity less its rim goes.
    removed = arrayFromVolume(logic.process(inputNode, air="all", dilate=0))
    core = ndimage.binary_erosion(cavity, ndimage.generate_binary_structure(3, 1))
    np.testing.assert_array_equal(removed[core], array.min())
    np.testing.assert_array_equal(removed[tissue], array[tissue])
    # The default dilation keeps partial volume, not the pure air next to the tissue: nearly the whole cavity goes.
    default = arrayFromVolume(logic.process(inputNode, air="all"))
    assert np.count_nonzero(default[cavity] == array.min()) >= 0.9 * np.count_nonzero(cavity)
    np.testing.assert_array_equal(default[tissue], array[tissue])


def test_the_result_reports_the_change_and_the_compressed_size_gain(mrml):
    array, _, _ = head_phantom()
    inputNode = mrml.volume(array)
    logic = HazeRemovalLogic()
    assert logic.lastResult is None and logic.lastReport is None
    outputNode = logic.process(inputNode)

    result, report = logic.lastResult, logic.lastReport
    assert result.outputNode is outputNode and report is result.report and result.reduceReport is None
    changed = np.count_nonzero(arrayFromVolume(outputNode) != array)
    assert report.changed == changed and report.changed_fraction == pytest.approx(changed / array.size)
    assert report.gzip_after < report.gzip_before  # noise set to one value compresses
    summary = result.summary()
    assert f"Voxels changed: {100 * changed / array.size:.2f} %" in summary
    assert f"{report.gzip_before / report.gzip_after:.2f}x smaller" in summary and "gzip" in summary


def test_fill_with_a_given_value(mrml):
    array, _, _ = head_phantom()
    inputNode = mrml.volume(array)
    mask = expected_mask(inputNode)
    output = arrayFromVolume(HazeRemovalLogic().process(inputNode, fill=7))
    np.testing.assert_array_equal(output[mask], 7)
    np.testing.assert_array_equal(output[~mask], array[~mask])
    # The panel's word for the minimum is accepted as the core's.
    assert HazeRemovalLogic.hazeOptions(fill="minimum").fill == "min"


def test_precision_reduction_after_the_haze_removal(mrml):
    array, _, _ = head_phantom(dtype=np.float32)
    inputNode = mrml.volume(array, anisotropic_matrix())
    display = inputNode.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(500.0, 250.0)
    logic = HazeRemovalLogic()

    for bits, dtype in (("8", np.uint8), (16, np.uint16)):
        outputNode = logic.process(inputNode, bits=bits)
        output = arrayFromVolume(outputNode)
        dehazed, _, _ = haze.dehaze(volume_from_node(inputNode), haze.HazeOptions(), measure_compression=False)
        expected, reduceReport = reduce_bits(dehazed, int(bits))
        assert output.dtype == dtype
        np.testing.assert_array_equal(output, expected.array)
        assert np.array_equal(ijk_to_ras(outputNode), anisotropic_matrix())
        assert logic.lastResult.reduceReport.window == reduceReport.window
        assert reduceReport.summary() in logic.lastResult.summary()
        assert all(note in logic.lastResult.summary() for note in reduceReport.notes)  # the panel shows them too
        # The values were remapped: the input's window/level would not fit.
        assert outputNode.GetDisplayNode().GetAutoWindowLevel()

    keptNode = logic.process(inputNode, bits="keep")
    assert arrayFromVolume(keptNode).dtype == np.float32 and logic.lastResult.reduceReport is None
    assert (keptNode.GetDisplayNode().GetWindow(), keptNode.GetDisplayNode().GetLevel()) == (500.0, 250.0)
    assert not keptNode.GetDisplayNode().GetAutoWindowLevel()


def test_a_given_output_node_is_filled_and_a_second_run_makes_a_new_node(mrml):
    array, _, _ = head_phantom()
    inputNode = mrml.volume(array, name="MR")
    given = mrml.volume(np.zeros((2, 2, 2), np.uint8), np.diag([2.0, 3.0, 4.0, 1.0]), name="mine")
    logic = HazeRemovalLogic()
    count = mrml.scene.GetNumberOfNodes()
    assert logic.process(inputNode, given) is given
    assert mrml.scene.GetNumberOfNodes() == count
    assert arrayFromVolume(given).shape == array.shape and np.array_equal(ijk_to_ras(given), np.eye(4))
    first, second = logic.process(inputNode), logic.process(inputNode)
    assert first is not second and first.GetName() == "MR dehazed" and second.GetName() != first.GetName()


# --- the mask preview -------------------------------------------------------------------------------------------
def test_preview_mask_is_a_label_map_equal_to_haze_mask_on_the_input_grid(mrml):
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    array, _, _ = head_phantom()
    inputNode = mrml.volume(array, anisotropic_matrix(), name="MR")
    inputNode.SetAndObserveTransformNodeID(transform.GetID())
    logic = HazeRemovalLogic()

    maskNode = logic.previewMask(inputNode)

    assert maskNode.GetClassName() == "vtkMRMLLabelMapVolumeNode" and maskNode.GetName() == "MR haze mask"
    labels = arrayFromVolume(maskNode)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, MASK_LABEL}
    np.testing.assert_array_equal(labels == MASK_LABEL, expected_mask(inputNode))
    assert np.array_equal(ijk_to_ras(maskNode), ijk_to_ras(inputNode))
    assert maskNode.GetParentTransformNode() is transform
    assert maskNode.GetDisplayNode().IsA("vtkMRMLLabelMapVolumeDisplayNode")  # shown as a label layer
    np.testing.assert_array_equal(arrayFromVolume(inputNode), array)
    fraction = 100.0 * np.count_nonzero(labels) / labels.size
    assert f"{fraction:.1f} %" in logic.describeMask(maskNode)

    # A second preview with other settings updates the same node.
    count = mrml.scene.GetNumberOfNodes()
    again = logic.previewMask(inputNode, level=1, air="all", dilate=0, maskNode=maskNode)
    assert again is maskNode and mrml.scene.GetNumberOfNodes() == count
    changed = expected_mask(inputNode, level=1, air="all", dilate=0)
    assert not np.array_equal(changed, labels == MASK_LABEL)
    np.testing.assert_array_equal(arrayFromVolume(maskNode) == MASK_LABEL, changed)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_preview_and_result_show_the_auto_level_and_warn_when_a_fixed_level_falls_in_the_noise(mrml, seed):
    """CT-like Hounsfield data (air -1000 HU, 30 HU noise, a specimen with an air bubble): the default (auto) mask
    takes the outer air and keeps the bubble; level 5 splits the air itself, and both the preview and the result
    say why nothing is removed."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(SHAPE, dtype=float)
    centre = [n / 2 + rng.uniform(-2, 2) for n in SHAPE]
    r = np.sqrt(sum(((x - c) / (0.3 * n)) ** 2 for x, c, n in zip((k, j, i), centre, SHAPE)))
    clean = np.where(r < 1, 40.0, -1000.0)
    clean[(r < 1) & (r > 0.8)] = 1000.0
    bubble = r < 0.3
    clean[bubble] = -1000.0
    array = np.rint(clean + rng.normal(0, 30, SHAPE)).astype(np.int16)
    inputNode = mrml.volume(array, anisotropic_matrix(), name="CT")
    logic = HazeRemovalLogic()

    maskNode = logic.previewMask(inputNode)
    labels = arrayFromVolume(maskNode) == MASK_LABEL
    assert labels[r > 1.25].mean() >= 0.9 and not labels[r < 1].any()
    description = logic.describeMask(maskNode)
    assert "auto, on a denoised copy" in description and "Warning" not in description

    logic.previewMask(inputNode, level=5, maskNode=maskNode)
    assert not (arrayFromVolume(maskNode) == MASK_LABEL).any()
    description = logic.describeMask(maskNode)
    assert "level 5" in description and "Warning: nothing was removed" in description
    assert "fell inside the noise of the air" in description

    logic.process(inputNode, level=5)
    assert "Warning: nothing was removed" in logic.lastResult.summary() and logic.lastReport.warning
    output = arrayFromVolume(logic.process(inputNode))
    assert not logic.lastReport.warning
    np.testing.assert_array_equal(output[r < 1], array[r < 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_ct_padding_is_a_warning_naming_the_level_and_that_level_takes_the_air(mrml, seed):
    """A CT padded with -3024 HU outside its field of view: the panel's preview and result say that only the
    padding was found, with the level that takes the air inside; that level's result removes it and keeps the
    specimen."""
    from test_haze_noise import padded_scan
    volume, specimen, fov_air = padded_scan(seed, -3024, 30)
    inputNode = mrml.volume(volume.array, anisotropic_matrix(), name="CT")
    logic = HazeRemovalLogic()
    maskNode = logic.previewMask(inputNode)
    assert "Warning: nothing but a padding value was found as haze" in logic.describeMask(maskNode)
    level = logic.lastPreviewReport.threshold.padding.level
    assert f"level {level} (Level: {level}) puts the threshold at" in logic.describeMask(maskNode)
    assert "--" not in logic.describeMask(maskNode)  # the panel's settings, not the command line's options
    output = arrayFromVolume(logic.process(inputNode, level=level))
    assert not logic.lastReport.warning
    assert (output[fov_air] == volume.array.min()).mean() >= 0.9
    np.testing.assert_array_equal(output[specimen], volume.array[specimen])


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_with_no_object_is_a_warning_in_the_preview_and_the_result(mrml, seed):
    """Noise filling the field: the panel's preview and its result both say that almost everything goes."""
    array = np.rint(np.random.default_rng(seed).normal(500, 50, SHAPE)).astype(np.int16)
    inputNode = mrml.volume(array, anisotropic_matrix(), name="noise")
    logic = HazeRemovalLogic()
    maskNode = logic.previewMask(inputNode)
    assert (arrayFromVolume(maskNode) == MASK_LABEL).mean() > 0.9
    assert "Warning: almost everything was removed" in logic.describeMask(maskNode)
    logic.process(inputNode)
    assert "Warning: almost everything was removed" in logic.lastResult.summary()


@pytest.mark.parametrize("options", [dict(largestOnly=True), dict(close=2), dict(level=3, dilate=1)])
def test_preview_mask_follows_every_option(mrml, options):
    array, _, _ = head_phantom()
    inputNode = mrml.volume(array)
    maskNode = HazeRemovalLogic().previewMask(inputNode, **options)
    np.testing.assert_array_equal(arrayFromVolume(maskNode) == MASK_LABEL, expected_mask(inputNode, **options))


def test_preview_mask_refuses_a_mask_node_that_is_not_a_label_map(mrml):
    inputNode = mrml.volume(head_phantom()[0])
    scalar = mrml.volume(np.zeros((2, 2, 2), np.uint8), name="scalar")
    count = mrml.scene.GetNumberOfNodes()
    with pytest.raises(BigVolumeError, match="label map"):
        HazeRemovalLogic().previewMask(inputNode, maskNode=scalar)
    assert mrml.scene.GetNumberOfNodes() == count
    np.testing.assert_array_equal(arrayFromVolume(scalar), 0)


# --- cancel and errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [None, 8])
@pytest.mark.parametrize("cancelAt", [1, 2, "updating the output volume"])
def test_cancel_leaves_no_new_node(mrml, bits, cancelAt):
    inputNode = mrml.volume(head_phantom()[0])
    ids = node_ids(mrml.scene)
    calls = []

    def progress(fraction, message):
        calls.append(message)
        return message != cancelAt if isinstance(cancelAt, str) else len(calls) < cancelAt

    logic = HazeRemovalLogic()
    with pytest.raises(Cancelled):
        logic.process(inputNode, bits=bits, progress=progress)
    assert node_ids(mrml.scene) == ids
    assert logic.lastResult is None
    if isinstance(cancelAt, int):
        assert len(calls) == cancelAt  # stopped at once


def test_cancel_and_errors_leave_a_given_output_node_unchanged(mrml):
    inputNode = mrml.volume(head_phantom()[0])
    given = mrml.volume(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), np.diag([2.0, 3.0, 4.0, 1.0]), name="mine")
    logic = HazeRemovalLogic()
    with pytest.raises(Cancelled):
        logic.process(inputNode, given, progress=lambda fraction, message: False)
    with pytest.raises(BigVolumeError, match="fill"):
        logic.process(inputNode, given, fill=0.5)  # does not fit int16
    np.testing.assert_array_equal(arrayFromVolume(given), np.arange(8).reshape(2, 2, 2))
    np.testing.assert_array_equal(ijk_to_ras(given), np.diag([2.0, 3.0, 4.0, 1.0]))


def test_progress_rises_to_one(mrml):
    inputNode = mrml.volume(head_phantom()[0])
    fractions = []
    HazeRemovalLogic().process(inputNode, bits=8, progress=lambda fraction, message: fractions.append(fraction))
    assert fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))


def test_rgb_and_label_map_inputs_are_refused_with_a_clear_message(mrml):
    rgb = mrml.volume(np.zeros((4, 5, 6, 3), np.uint8), className="vtkMRMLVectorVolumeNode", name="photo")
    labels = mrml.volume(np.zeros((4, 5, 6), np.uint8), className="vtkMRMLLabelMapVolumeNode", name="seg")
    ids = node_ids(mrml.scene)
    logic = HazeRemovalLogic()
    for call in (logic.process, logic.previewMask):
        with pytest.raises(BigVolumeError, match=r"^photo is an RGB/vector volume: .*scalar"):
            call(rgb)
        with pytest.raises(BigVolumeError, match=r"^seg is a label map: .*scalar"):
            call(labels)
        with pytest.raises(BigVolumeError, match="no input volume"):
            call(None)
    assert node_ids(mrml.scene) == ids


@pytest.mark.parametrize("array, problem", [
    (np.full((6, 7, 8), 42, np.int16), "constant"),
    (np.zeros((6, 7, 8), np.float32), "constant"),
    (np.tile(np.arange(3, dtype=np.uint8), (6, 7, 3))[:, :, :8], "label map"),  # a mask stored as a scalar volume
    (np.full((6, 7, 8), np.nan, np.float32), "no finite"),
])
def test_volumes_without_haze_are_refused_naming_the_volume(mrml, array, problem):
    inputNode = mrml.volume(array, name="scan")
    ids = node_ids(mrml.scene)
    for call in (HazeRemovalLogic().process, HazeRemovalLogic().previewMask):
        with pytest.raises(BigVolumeError, match=rf"^scan: .*{problem}"):
            call(inputNode)
    assert node_ids(mrml.scene) == ids


def test_invalid_settings_and_outputs_are_user_errors(mrml):
    inputNode = mrml.volume(head_phantom()[0])
    labelOutput = mrml.volume(np.zeros((2, 2, 2), np.uint8), className="vtkMRMLLabelMapVolumeNode", name="lm")
    ids = node_ids(mrml.scene)
    logic = HazeRemovalLogic()
    for kwargs, match in ((dict(level=7), "level"), (dict(air="none"), "air"), (dict(dilate=-1), "dilate"),
                          (dict(close=1.5), "close"), (dict(fill="abc"), "fill"), (dict(bits=12), "bits"),
                          (dict(outputVolumeNode=inputNode), "differ"), (dict(outputVolumeNode=labelOutput), "lm")):
        with pytest.raises(BigVolumeError, match=match):
            logic.process(inputNode, **kwargs)
    assert node_ids(mrml.scene) == ids


def test_64_bit_integers_are_refused_before_any_work(mrml):
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk.VTK_LONG_LONG, 1)
    inputNode = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "int64")
    inputNode.SetAndObserveImageData(image)
    ids = node_ids(mrml.scene)
    logic = HazeRemovalLogic()
    with pytest.raises(BigVolumeError, match="64-bit"):
        logic.previewMask(inputNode)
    with pytest.raises(BigVolumeError, match="64-bit"):
        logic.process(inputNode, progress=lambda fraction, message: pytest.fail("work started"))
    assert node_ids(mrml.scene) == ids


def test_the_result_line_gives_the_precision_reduction_s_notes(mrml):
    """The panel's result line left out what reduce-bits notes (values kept as they are, NaN voxels set): the
    command line prints them."""
    array, _, _ = head_phantom(dtype=np.float32)
    array[0, 0, :3] = np.nan
    logic = HazeRemovalLogic()
    logic.process(mrml.volume(array, anisotropic_matrix()), bits=8)
    notes = logic.lastResult.reduceReport.notes
    assert any("NaN" in note for note in notes), notes
    assert all(note in logic.lastResult.summary() for note in notes)


@pytest.mark.parametrize("matrix", ["zero column", "repeated axis", "nan", "infinite origin"])
def test_a_node_whose_matrix_places_no_grid_is_refused_naming_it(mrml, matrix):
    """A degenerate IJKToRAS was a ValueError from Geometry (a traceback in the panel), in both Logics."""
    from AntiAliasedResampleLib import AntiAliasedResampleLogic
    ijk_to_ras_matrix = np.eye(4)
    if matrix == "zero column":
        ijk_to_ras_matrix[:, 1] = 0
    elif matrix == "repeated axis":
        ijk_to_ras_matrix[:3, 2] = ijk_to_ras_matrix[:3, 0]
    elif matrix == "nan":
        ijk_to_ras_matrix[1, 1] = np.nan
    else:
        ijk_to_ras_matrix[0, 3] = np.inf
    array = np.zeros((8, 8, 8), np.int16)
    array[2:6, 2:6, 2:6] = 100
    node = mrml.volume(array, ijk_to_ras_matrix, name="odd")
    before = len(mrml.volumeNodes())
    for run in (lambda: HazeRemovalLogic().process(node), lambda: HazeRemovalLogic().previewMask(node),
                lambda: AntiAliasedResampleLogic().process(node, factor=2),
                lambda: AntiAliasedResampleLogic().outputGeometry(node, 2)):
        with pytest.raises(BigVolumeError, match="odd: its IJK to RAS matrix places no grid"):
            run()
    assert len(mrml.volumeNodes()) == before


@pytest.mark.parametrize("shape_name, seed, ratio", [("multi", 4, 4.0), ("border", 1, 8.0)])
def test_a_shaded_specimen_keeps_its_core_through_the_logic(mrml, shape_name, seed, ratio):
    """The Slicer door of test_haze_noise's shaded micro-CT: the threshold goes down into the gap after the air
    (the specimen lost 48-57 % before), said in the report's notes; on an anisotropic grid with an origin."""
    from test_haze_noise import shaded_microct
    volume, specimen = shaded_microct(shape_name, seed, ratio)
    node = mrml.volume(volume.array, anisotropic_matrix())
    logic = HazeRemovalLogic()
    kept = arrayFromVolume(logic.process(node))
    core = ndimage.binary_erosion(specimen, iterations=2)
    np.testing.assert_array_equal(kept[core], volume.array[core])
    report = logic.lastReport
    assert report.threshold.lowered_from is not None and not report.warning, report.summary()
    assert any("threshold lowered from" in note for note in report.notes)


@pytest.mark.parametrize("case", ["shaded micro-CT", "low-SNR MRI"])
def test_the_warnings_of_a_cut_object_reach_the_panel_in_its_words(mrml, case):
    """The two warnings of an object cut with the air (a cut through a plateau of a shaded micro-CT; an object
    within its noise of the threshold) were tested on the command line only; in the panel they named --mask-out."""
    from test_haze_shading import NEAR, PLATEAU, rician_mri, shaded_microct
    array, _ = shaded_microct("ellipsoid", 3, 4.0) if case == "shaded micro-CT" else rician_mri("multi", 0, 2.5)
    inputNode = mrml.volume(array, anisotropic_matrix(), name="scan")
    logic = HazeRemovalLogic()
    description = logic.describeMask(logic.previewMask(inputNode))
    phrase = PLATEAU if case == "shaded micro-CT" else NEAR
    assert "Warning: " in description and phrase in description, description
    logic.process(inputNode)
    summary = logic.lastResult.summary()
    assert phrase in summary and logic.lastReport.warning
    for text in (description, summary):
        assert "--" not in text.replace("->", "") and "Preview mask shows the haze mask" in text, text


@pytest.mark.parametrize("seed", [0, 1])
def test_the_preview_says_the_notes_the_result_says_in_the_panel_s_words(mrml, seed):
    """The preview, where the user decides, left out the core's notes (NaN kept, a thin volume, a lowered
    threshold...) that only Apply showed; and the warnings named --level and --air all, which the panel has not."""
    from test_haze_noise import dim_around_bright
    volume, dim, core = dim_around_bright((30, 36, 40), seed, "gaussian", np.float32, 100, 600, 1500, 30)
    array = volume.array.copy()
    array[0, 0, :5] = np.nan
    inputNode = mrml.volume(array, anisotropic_matrix(), name="scan")
    logic = HazeRemovalLogic()
    maskNode = logic.previewMask(inputNode, level=2)
    description = logic.describeMask(maskNode)
    assert "5 NaN voxels" in description and "lies a class of its own above the air" in description
    assert "a level nearer 5" in description and "--" not in description
    logic.process(inputNode, level=2)
    summary = logic.lastResult.summary()
    assert "5 NaN voxels" in summary and "--" not in summary.replace("->", "")


def test_each_mask_is_described_by_the_preview_that_filled_it_and_a_reused_one_is_renamed(mrml):
    """describeMask matched the last preview's report by its counts: a mask of level 2 was described as level 3's
    when their counts agreed; and a mask reused for another input kept the first input's name."""
    array, _, _ = head_phantom()
    first, second = (mrml.volume(array, anisotropic_matrix(), name=name) for name in ("A", "B"))
    logic = HazeRemovalLogic()
    mask2 = logic.previewMask(first, level=2)
    mask3 = logic.previewMask(first, level=3)
    assert "level 2" in logic.describeMask(mask2) and "level 3" in logic.describeMask(mask3)
    assert mask2.GetName() == "A haze mask" and mask3.GetName() != mask2.GetName()
    again = logic.previewMask(second, maskNode=mask2)
    assert again is mask2 and mask2.GetName() == "B haze mask" and "auto" in logic.describeMask(mask2)
    mine = mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "my mask")
    assert logic.previewMask(second, maskNode=mine).GetName() == "my mask"  # a name of the user's stays
    arrayFromVolume(mine)[0, 0, 0] ^= MASK_LABEL  # edited since: its counts no longer the preview's
    assert "auto" not in logic.describeMask(mine)
