"""Previews: the histogram transfer function, offscreen volume rendering (Mesa EGL / OSMesa, plain VTK and Slicer's
displayable managers), mid-slices, the labelled picture and comparison, the command line, and the Slicer display
nodes on a real slicer-core scene."""
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from vtkmodules.vtkCommonDataModel import vtkPiecewiseFunction
from vtkmodules.vtkRenderingCore import vtkCamera, vtkColorTransferFunction, vtkVolumeProperty

import bigvolume as bv
from bigvolume.io import files as io
from bigvolume.render import compose, offscreen, preview
from bigvolume.testing import quality
from bigvolume.core.geometry import Geometry
from bigvolume.core.memory import format_bytes
from bigvolume.ops.precision import Window
from bigvolume.render.offscreen import Camera
from bigvolume.render.compare import IntensityMap
from bigvolume.render.slices import mark_region, mid_slices
from bigvolume.render.transfer import CT_LIKE, MR_LIKE, opacity_unit_distance, transfer_function
from bigvolume.render.volumes import PREVIEW_DIMENSION, load_preview_source, preview_factors

slicer = pytest.importorskip("slicer")
from bigvolume.slicer import offscreen_render, preview_nodes  # noqa: E402  (offscreen_render: the "slicer" engine)
from bigvolume.slicer.volume_nodes import fill_volume_node  # noqa: E402

BACKGROUND = np.rint(np.asarray(offscreen.BACKGROUND) * 255)
ENGINES = ["vtk", "slicer"]
FROM_ANTERIOR = Camera((0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
SIZE = (200, 160)


# --- volumes ----------------------------------------------------------------------------------------------------
def rotation_z(degrees):
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def oblique_grid(shape=(32, 40, 48)):
    """An anisotropic grid, rotated and moved away from the origin (LPS), shape (k, j, i)."""
    return Geometry(shape[::-1], (1.0, 1.5, 2.0), (10.0, -20.0, 30.0), rotation_z(30))


def shape_volume(geometry: Geometry, centre_ras, radius, kind="ball", value=1000, dtype=np.uint16):
    """A ball or an axis-aligned (RAS) cube of ``radius`` mm around ``centre_ras`` on ``geometry``, background 0."""
    k, j, i = np.indices(geometry.shape, dtype=float)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    ras = (geometry.ijk_to_ras() @ ijk)[:3].T - np.asarray(centre_ras)
    inside = (np.linalg.norm(ras, axis=1) <= radius) if kind == "ball" else (np.abs(ras).max(axis=1) <= radius)
    return bv.Volume((inside.reshape(geometry.shape) * value).astype(dtype), geometry)


def centre_ras(geometry: Geometry):
    return (geometry.ijk_to_ras() @ np.r_[(np.asarray(geometry.dimensions) - 1) / 2.0, 1.0])[:3]


def silhouette(image):
    """Pixels that are not the render's background."""
    return np.abs(image.astype(float) - BACKGROUND).max(axis=2) > 8


def projected_pixel(geometry, point_ras, camera=FROM_ANTERIOR, size=SIZE):
    """(column, row) where a RAS point lands in a render of ``geometry`` (rows counted from the top)."""
    vtk_camera = vtkCamera()
    aspect = size[0] / size[1]
    offscreen.frame_camera(vtk_camera, geometry, camera.direction, camera.view_up, camera.view_angle, aspect)
    matrix = vtk_camera.GetCompositeProjectionTransformMatrix(aspect, -1, 1)
    clip = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]) @ np.r_[point_ras, 1.0]
    x, y = clip[:2] / clip[3]
    return (x + 1) / 2 * size[0], (1 - y) / 2 * size[1]


def property_points(prop):
    """(value, r, g, b) and (value, opacity) points of a vtkVolumeProperty, and its opacity unit distance."""
    colours, opacities = prop.GetRGBTransferFunction(0), prop.GetScalarOpacity(0)
    colour_points, opacity_points = [], []
    for index in range(colours.GetSize()):
        node = [0.0] * 6
        colours.GetNodeValue(index, node)
        colour_points.append(node[:4])
    for index in range(opacities.GetSize()):
        node = [0.0] * 4
        opacities.GetNodeValue(index, node)
        opacity_points.append(node[:2])
    return colour_points, opacity_points, prop.GetScalarOpacityUnitDistance()


def opacity_at(transfer, value):
    prop = vtkVolumeProperty()
    prop.SetColor(vtkColorTransferFunction())
    prop.SetScalarOpacity(vtkPiecewiseFunction())
    transfer.fill(prop)
    return prop.GetScalarOpacity(0).GetValue(value), prop.GetRGBTransferFunction(0).GetColor(value)


def ct_body(n=64, seed=0):
    """Hounsfield units: air around an ellipsoidal body of soft tissue (40) with a bone ring (1100) and fat (-100)."""
    z, y, x = np.ogrid[:n, :n, :n]
    c = (n - 1) / 2
    r = ((x - c) / (0.4 * n)) ** 2 + ((y - c) / (0.32 * n)) ** 2 + ((z - c) / (0.45 * n)) ** 2
    body = np.full((n, n, n), -1000.0)
    body[r < 1] = 40
    body[(r < 0.55) & (r > 0.45)] = 1100
    body[r < 0.15] = -100
    body += np.random.default_rng(seed).normal(0, 15, body.shape)
    return body.astype(np.int16)


def mr_head(n=64, scale=1.0, dtype=np.uint16, seed=1):
    """An MR-like magnitude image: Rayleigh noise around a head of smoothly varying tissue with a bright rim."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:n, :n, :n]
    c = (n - 1) / 2
    r = ((x - c) / (0.4 * n)) ** 2 + ((y - c) / (0.35 * n)) ** 2 + ((z - c) / (0.45 * n)) ** 2
    head = np.abs(rng.normal(0, 12, (n, n, n)))
    head[r < 1] = 600
    inner = r < 0.8
    head[inner] = 280 + 120 * quality.smooth_noise((n, n, n), correlation=n / 8, seed=seed)[inner]
    return (head * scale).astype(dtype)


def reoriented(volume: bv.Volume, order, flips) -> bv.Volume:
    """The same physical volume stored another way: new IJK axis a is old axis ``order[a]``, reversed where
    ``flips[a]``."""
    array = np.asarray(volume.array)
    old_axes = [2 - o for o in order]  # numpy axes (k, j, i) of the old IJK axes, in the new I, J, K order
    array = np.transpose(array, old_axes[::-1])
    for axis, flip in enumerate(flips):
        if flip:
            array = np.flip(array, axis=2 - axis)
    g = volume.geometry
    directions = [g.direction[:, o] * (-1 if f else 1) for o, f in zip(order, flips)]
    first = [(g.dimensions[o] - 1 if f else 0) for o, f in zip(order, flips)]
    old_index = np.zeros(3)
    for o, value in zip(order, first):
        old_index[o] = value
    return bv.Volume(np.ascontiguousarray(array), Geometry(
        tuple(g.dimensions[o] for o in order), tuple(g.spacing[o] for o in order), g.physical_point(old_index),
        np.column_stack(directions)))


# --- offscreen windows ------------------------------------------------------------------------------------------
def test_the_offscreen_window_is_mesa_egl_or_osmesa():
    window = offscreen.offscreen_render_window()
    assert window.GetClassName() in ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow")
    assert window.GetOffScreenRendering() == 1


def test_without_egl_it_falls_back_to_osmesa_and_still_renders():
    """A broken EGL (no vendor library) must not crash the process: OSMesa takes over."""
    code = ("from bigvolume import Volume\n"
            "from bigvolume.render import offscreen\n"
            "from bigvolume.testing import quality\n"
            "window = offscreen.offscreen_render_window()\n"
            "image = offscreen.render_volume(Volume.from_array(quality.microct_phantom(32)), (64, 64), engine='vtk')\n"
            "print(window.GetClassName(), int((abs(image.astype(int) - (26, 26, 36)).max(axis=2) > 8).sum()))\n")
    environment = dict(os.environ, __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent/egl_vendor.json")
    environment.pop("VTK_DEFAULT_OPENGL_WINDOW", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    name, drawn = done.stdout.split()
    assert name == "vtkOSOpenGLRenderWindow"
    assert int(drawn) > 200


# --- rendering --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_the_object_appears_where_it_projects_on_an_oblique_anisotropic_grid(engine):
    grid = oblique_grid()
    centre = centre_ras(grid) + np.array([12.0, 0.0, 8.0])  # towards patient right and superior
    volume = shape_volume(grid, centre, 14.0)
    image = offscreen.render_volume(volume, SIZE, camera=FROM_ANTERIOR, engine=engine)
    assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8
    mask = silhouette(image)
    rows, cols = np.nonzero(mask)
    assert mask.sum() > 500
    expected_col, expected_row = projected_pixel(grid, centre)
    assert abs(cols.mean() - expected_col) < 3 and abs(rows.mean() - expected_row) < 3
    # Seen from anterior, patient right is on the screen's left and superior is up.
    assert cols.mean() < SIZE[0] / 2 and rows.mean() < SIZE[1] / 2
    edge_col, _ = projected_pixel(grid, centre + np.array([14.0, 0.0, 0.0]))
    radius = abs(edge_col - expected_col)  # the ball's outline on screen (perspective, approximately)
    assert abs(np.sqrt(mask.sum() / np.pi) - radius) < 0.15 * radius


def test_a_ball_and_a_cube_give_different_pictures_with_their_own_outlines():
    grid = Geometry((41, 41, 41), (0.5, 0.5, 0.5))
    ball = shape_volume(grid, centre_ras(grid), 7.0, "ball")
    cube = shape_volume(grid, centre_ras(grid), 6.0, "cube")
    fills = {}
    for name, volume in (("ball", ball), ("cube", cube)):
        mask = silhouette(offscreen.render_volume(volume, (160, 160), camera=FROM_ANTERIOR))
        rows, cols = np.nonzero(mask)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        fills[name] = mask.sum() / box
        assert mask.sum() > 1000, name
    assert abs(fills["ball"] - np.pi / 4) < 0.06  # a disc fills pi/4 of its bounding square
    assert fills["cube"] > 0.93                      # a face-on cube: a filled square


def test_the_picture_changes_with_the_volume_and_follows_the_object():
    grid = Geometry((48, 48, 48), (1.0, 1.0, 1.0))
    left = shape_volume(grid, centre_ras(grid) + np.array([-10.0, 0, 0]), 8.0)
    right = shape_volume(grid, centre_ras(grid) + np.array([10.0, 0, 0]), 8.0)
    images = [offscreen.render_volume(v, (128, 128), camera=FROM_ANTERIOR) for v in (left, right)]
    assert np.abs(images[0].astype(int) - images[1].astype(int)).max() > 100
    columns = [np.nonzero(silhouette(image))[1].mean() for image in images]
    assert columns[1] < 64 < columns[0]  # patient right (+R) is on the screen's left


def test_slicer_and_plain_vtk_renderings_agree():
    volume = bv.Volume.from_array(quality.microct_phantom(48), spacing=(0.4, 0.4, 0.6))
    transfer = transfer_function(volume)
    masks = [silhouette(offscreen.render_volume(volume, (128, 128), transfer, engine=engine)) for engine in ENGINES]
    assert masks[0].sum() > 2000
    assert (masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum() > 0.95


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integers_are_drawn_as_their_32_bit_copy(engine, dtype):
    """A Slicer volume cannot hold int64: the default (slicer) engine refused to draw such a file at all, with a
    message about the Volumes module. A picture needs no 64 bits: drawn like the same values in int32."""
    array = quality.microct_phantom(32).astype(np.int32)
    pictures = [offscreen.render_volume(bv.Volume.from_array(array.astype(t), spacing=(0.5, 0.5, 0.7)), (96, 96),
                                        engine=engine) for t in (np.int32, dtype)]
    assert silhouette(pictures[0]).sum() > 500
    assert np.abs(pictures[0].astype(int) - pictures[1].astype(int)).max() <= 2


def test_rendering_refuses_tiny_pictures_and_unknown_engines():
    volume = bv.Volume.from_array(np.ones((4, 4, 4), np.uint8))
    with pytest.raises(bv.BigVolumeError, match="16x16"):
        offscreen.render_volume(volume, (8, 8))
    with pytest.raises(bv.BigVolumeError, match="engine"):
        offscreen.render_volume(volume, (32, 32), engine="ospray")


# --- the transfer function --------------------------------------------------------------------------------------
def test_hounsfield_ct_is_ct_like_air_clear_tissue_faint_bone_opaque():
    transfer = transfer_function(ct_body())
    assert transfer.kind == CT_LIKE and "Hounsfield" in transfer.reason
    air, air_colour = opacity_at(transfer, -1000)
    tissue, tissue_colour = opacity_at(transfer, 40)
    bone, bone_colour = opacity_at(transfer, 1100)
    assert air == 0.0
    assert 0 < tissue < 0.05 and bone > 10 * tissue
    assert sum(bone_colour) > sum(tissue_colour) > sum(air_colour)
    assert transfer.window.low < -900 and 1000 < transfer.window.high <= 1200


def test_micro_ct_is_ct_like_and_mr_is_mr_like():
    micro = transfer_function(quality.microct_phantom(64))
    assert micro.kind == CT_LIKE and "span" in micro.reason
    for array in (mr_head(), mr_head(dtype=np.float32), mr_head(scale=0.001, dtype=np.float32)):
        transfer = transfer_function(array)
        assert transfer.kind == MR_LIKE, array.dtype
        tissue = float(np.median(array[array > array.max() / 4]))
        background = float(np.median(array[array < array.max() / 10]))
        assert opacity_at(transfer, background)[0] == 0.0
        assert 0 < opacity_at(transfer, tissue)[0] < opacity_at(transfer, array.max())[0]


def test_a_filled_background_and_the_negative_half_of_signed_data_stay_clear():
    padded = mr_head().astype(np.float32)
    n = padded.shape[0]
    padded[:, :, : n // 2][padded[:, :, : n // 2] < 100] = 300.0  # padding of one value, inside the tissue range
    transfer = transfer_function(padded)
    assert opacity_at(transfer, 300.0)[0] == 0.0 and opacity_at(transfer, 350.0)[0] > 0
    zone = transfer_function(quality.zone_plate(64))
    assert zone.kind == MR_LIKE
    assert opacity_at(zone, -0.5)[0] == opacity_at(zone, 0.0)[0] == 0.0 < opacity_at(zone, 0.8)[0]


def test_transfer_points_ascend_and_fill_puts_them_in_a_volume_property():
    for array in (ct_body(), mr_head(), np.full((8, 8, 8), 7, np.int16), quality.zone_plate(32)):
        transfer = transfer_function(array)
        for points in (transfer.colors, transfer.opacities):
            values = [p[0] for p in points]
            assert values == sorted(values) and len(set(values)) == len(values)
        prop = vtkVolumeProperty()
        prop.SetColor(vtkColorTransferFunction())
        prop.SetScalarOpacity(vtkPiecewiseFunction())
        transfer.fill(prop, 2.5)
        colours, opacities, unit = property_points(prop)
        assert np.allclose(colours, transfer.colors) and np.allclose(opacities, transfer.opacities)
        assert unit == 2.5
        assert prop.GetShade() == 1 and prop.GetInterpolationType() == 1  # shaded, linear


def test_transfer_function_of_rgb_uses_luminance_and_refuses_no_finite_values():
    rgb = np.zeros((16, 16, 16, 3), np.uint8)
    rgb[4:12, 4:12, 4:12] = (255, 0, 0)  # red: luminance 0.2126 * 255
    transfer = transfer_function(rgb)
    assert transfer.window.high == pytest.approx(0.2126 * 255, abs=0.5)
    with pytest.raises(bv.BigVolumeError, match="finite"):
        transfer_function(np.full((4, 4, 4), np.nan, np.float32))


# --- slices -----------------------------------------------------------------------------------------------------
def marked_volume():
    """Zeros with three blocks, each on one mid-plane, at the patient's right/anterior/superior side (LPS grid:
    right = low i, anterior = low j, superior = high k)."""
    n = 33
    array = np.zeros((n, n, n), np.float32)
    q, m = n // 4, n // 2
    array[m - 1:m + 2, :q, :q] = 100      # axial plane: right and anterior
    array[3 * q:, m - 1:m + 2, :q] = 200  # coronal plane: right and superior
    array[3 * q:, :q, m - 1:m + 2] = 300  # sagittal plane: anterior and superior
    return bv.Volume.from_array(array, spacing=(0.5, 0.5, 0.5))


def test_mid_slices_are_turned_as_slicer_shows_them():
    slices = mid_slices(marked_volume(), Window(0, 300), 99)
    assert [name.split()[0] for name, _ in slices] == ["axial", "coronal", "sagittal"]
    for (name, image), level in zip(slices, (100, 200, 300)):
        assert image.dtype == np.uint8 and image.shape == (99, 99)
        rows, cols = np.nonzero(image == round(level / 300 * 255))
        # Each block is in the top-left quarter: patient right on the screen's left (axial, coronal), anterior on
        # the left (sagittal), anterior or superior up.
        assert rows.size and rows.max() < 99 / 2 and cols.max() < 99 / 2, name


def test_mid_slices_do_not_depend_on_how_the_voxels_are_stored():
    volume = marked_volume()
    stored_otherwise = reoriented(volume, order=(2, 0, 1), flips=(True, False, True))
    assert not np.array_equal(stored_otherwise.geometry.direction, volume.geometry.direction)
    window = Window(0, 300)
    expected = {name.split()[0]: image for name, image in mid_slices(volume, window, 66)}
    got = {name.split()[0]: image for name, image in mid_slices(stored_otherwise, window, 66)}
    assert set(got) == set(expected)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name


def test_mid_slices_keep_the_physical_aspect_and_show_small_voxels_as_blocks():
    volume = bv.Volume.from_array(np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8), spacing=(1.0, 2.0, 4.0))
    slices = dict(mid_slices(volume, Window(0, 191), 64))
    axial = slices["axial K 2/4"]
    assert axial.shape == (round(6 * 2 * 4), round(8 * 1 * 4))  # 4 px/mm: 64 px for the 16 mm extent
    assert len(np.unique(axial[0])) == 8  # eight voxels across, each drawn as a run of pixels


# --- the picture ------------------------------------------------------------------------------------------------
def label_is_at(picture, text, top, left, size=13, bold=False):
    """Whether ``text`` drawn by compose.text_image sits at (top, left) of the picture (blended on its canvas)."""
    glyphs = compose.text_image(text, size, bold=bold)
    canvas = np.empty(glyphs.shape[:2] + (3,), np.uint8)
    canvas[...] = compose.CANVAS
    compose.paste(canvas, glyphs, 0, 0)
    region = picture[top:top + glyphs.shape[0], left:left + glyphs.shape[1]]
    return region.shape == canvas.shape and np.abs(region.astype(int) - canvas.astype(int)).max() <= 1


def read_png(path):
    image = sitk.ReadImage(str(path))
    assert image.GetNumberOfComponentsPerPixel() == 3 and image.GetPixelID() == sitk.sitkVectorUInt8
    return sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def before_after(tmp_path_factory):
    folder = tmp_path_factory.mktemp("before_after")
    before = bv.write_volume(bv.Volume.from_array(quality.microct_phantom(64), spacing=(0.5, 0.5, 0.5)),
                             folder / "phantom.nhdr")
    after = folder / "phantom_x4.nrrd"
    bv.resample_file(before, after, 4, method="nearest")
    return before, after


def test_a_preview_is_labelled_and_shows_the_rendering_and_slices(tmp_path, before_after):
    before, _ = before_after
    report = preview.write_preview(before, tmp_path / "one.png", size=(192, 192))
    picture = read_png(report.path)
    assert (picture.shape[1], picture.shape[0]) == report.size
    title = compose.text_image("phantom.nhdr", 16, bold=True)
    label = f"64x64x64 uint16, spacing 0.5 0.5 0.5 mm, {format_bytes(io.file_size(before))} on disk"
    assert label_is_at(picture, label, 8 + title.shape[0] + 4, 8)
    header = 8 + title.shape[0] + 4 + compose.text_image(label, 13).shape[0] + 8
    render = picture[header:header + 192, :192]
    assert silhouette(render).mean() > 0.1
    slices = picture[header:header + 192, 192 + 8:192 + 8 + 64]
    assert slices.std() > 20  # the three mid-slices, not empty canvas
    assert report.transfer.kind == CT_LIKE and [s.name for s in report.sources] == ["phantom.nhdr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png"]


def test_the_comparison_has_both_panels_each_labelled(tmp_path, before_after):
    before, after = before_after
    report = preview.write_preview(before, tmp_path / "cmp.png", compare=after, size=(320, 320))
    picture = read_png(report.path)
    panel = 320 + 8 + 320 // 3  # rendering and slice column (wider than the labels at this size)
    assert picture.shape[1] == 2 * panel + 16
    title = compose.text_image("phantom.nhdr", 16, bold=True).shape[0]
    labels = [(0, f"64x64x64 uint16, spacing 0.5 0.5 0.5 mm, {format_bytes(io.file_size(before))} on disk"),
              (panel + 16, f"16x16x16 uint16, spacing 2 2 2 mm, {format_bytes(io.file_size(after))} on disk")]
    for left, label in labels:
        assert label_is_at(picture, label, 8 + title + 4, left + 8), label
        header = 8 + title + 4 + compose.text_image(label, 13).shape[0] + 8
        assert silhouette(picture[header:header + 320, left:left + 320]).mean() > 0.1
    # One transfer function (the first volume's) for both, so the pictures differ by their data only.
    assert report.transfer == transfer_function(report.sources[0].volume)


def test_a_large_file_is_drawn_from_a_downsampled_copy_but_labelled_with_its_own_grid(tmp_path):
    array = np.zeros((20, 24, 300), np.uint16)
    array[5:15, 6:18, 40:260] = 3000
    path = bv.write_volume(bv.Volume.from_array(array, spacing=(0.2, 0.5, 0.5)), tmp_path / "long.nhdr")
    before = path.stat().st_mtime_ns, (tmp_path / "long.raw").read_bytes()
    source = load_preview_source(path)
    assert source.geometry.dimensions == (300, 24, 20) and source.bytes_on_disk == io.file_size(path)
    assert max(source.volume.geometry.dimensions) <= PREVIEW_DIMENSION
    assert source.volume.geometry.isclose(source.geometry.downsampled(preview_factors(source.geometry)))
    assert float(source.volume.array.max()) == pytest.approx(3000, rel=0.1)  # Lanczos may overshoot a little
    assert "300x24x20 uint16" in source.label()
    assert (path.stat().st_mtime_ns, (tmp_path / "long.raw").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.nhdr", "long.raw"]  # no temporary left


def test_bad_outputs_and_inputs_give_one_clear_error_and_no_picture(tmp_path, before_after):
    before, _ = before_after
    with pytest.raises(bv.BigVolumeError, match=r"out\.jpg: a preview is a PNG"):
        preview.write_preview(before, tmp_path / "out.jpg")
    with pytest.raises(bv.BigVolumeError, match="does not exist"):
        preview.write_preview(before, tmp_path / "missing" / "out.png")
    with pytest.raises(bv.VolumeFileError, match=r"nothing\.nrrd: no such file"):
        preview.write_preview(before, tmp_path / "out.png", compare=tmp_path / "nothing.nrrd")
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(b"NRRD0004\nnot a header\n")
    with pytest.raises(bv.VolumeFileError, match="broken.nrrd"):
        preview.write_preview(before, tmp_path / "out.png", compare=broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.nrrd"]


def test_the_demo_writes_before_after_pictures(tmp_path):
    from bigvolume.cli.demo import write_previews
    array = quality.microct_phantom(48)
    bv.write_volume(bv.Volume.from_array(array, spacing=(0.5,) * 3), tmp_path / "phantom.nhdr")
    for method in (bv.DEFAULT_METHOD, "nearest"):
        bv.resample_file(tmp_path / "phantom.nhdr", tmp_path / f"phantom_{method}.nrrd", 4, method=method)
    [path] = write_previews(tmp_path, ["phantom"], 4)
    picture = read_png(path)
    assert path.name == "preview_phantom.png" and picture.shape[1] == 3 * (384 + 8 + 128) + 2 * 16
    for left, name in zip((0, 520 + 16, 2 * (520 + 16)), ("phantom: input", "lanczos x4 (anti-aliased)",
                                                          "nearest x4 (decimation)")):
        assert label_is_at(picture, name, 8, left + 8, 16, bold=True), name


# --- labels in the file's grid, comparisons of other types and ranges, what dehaze removed ---------------------------
@pytest.mark.parametrize("shape, spacing", [((316, 20, 24), (0.5, 0.5, 0.3)), ((300, 280, 17), (0.2, 0.25, 1.0))])
def test_slice_labels_name_the_files_own_slices(tmp_path, shape, spacing):
    array = np.zeros(shape, np.uint16)
    array[shape[0] // 4:-shape[0] // 4, 4:-4, 4:-4] = 1000
    volume = bv.Volume.from_array(array, spacing=spacing, origin=(10.0, -20.0, 5.5),
                                  direction=rotation_z(20))
    path = bv.write_volume(volume, tmp_path / "tall.nrrd")
    source = load_preview_source(path)
    drawn = source.volume.geometry
    assert drawn.dimensions != volume.geometry.dimensions  # drawn from a copy downsampled to <= 256 per axis
    names = [name for name, _ in mid_slices(source.volume, Window(0, 1000), 64, source.geometry)]
    n_i, n_j, n_k = volume.geometry.dimensions
    for name, axis, n in zip(names, "KJI", (n_k, n_j, n_i)):
        view, letter, position = name.split()
        drawn_index = drawn.dimensions["IJK".index(axis)] // 2
        # the drawn plane's centre in the file's grid: block-centred, index * f + (f - 1) / 2
        f = n / drawn.dimensions["IJK".index(axis)] if n > PREVIEW_DIMENSION else 1.0
        f = drawn.spacing["IJK".index(axis)] / volume.geometry.spacing["IJK".index(axis)]
        assert letter == axis and position == f"{round(drawn_index * f + (f - 1) / 2)}/{n}", name
    assert names[0].endswith(f"/{n_k}") and f"/{PREVIEW_DIMENSION}" not in " ".join(names[:1])
    # The volume's own grid when drawn at full resolution.
    own = [name for name, _ in mid_slices(volume, Window(0, 1000), 64)]
    assert own[0].split()[1:] == ["K", f"{n_k // 2}/{n_k}"]


def crop(picture, box):
    top, left, height, width = box
    return picture[top:top + height, left:left + width]


def mr_head_16(n, seed):
    """An MR-like uint16 head spanning more than 12 bits (so its 8-bit reduction differs in type and range)."""
    return bv.Volume.from_array(mr_head(n, scale=9.0, seed=seed), spacing=(0.9, 0.9, 1.1), origin=(3.0, -7.0, 12.0))


@pytest.mark.parametrize("seed, n, how", [(1, 48, "known"), (2, 56, "fitted"), (3, 40, "known")])
def test_a_reduced_bit_depth_is_drawn_like_its_input_not_black(tmp_path, seed, n, how):
    volume = mr_head_16(n, seed)
    source = bv.write_volume(volume, tmp_path / "head16.nrrd")
    report = bv.reduce_bits_file(source, tmp_path / "head8.nrrd", 8)
    maps = [IntensityMap(*report.intensity_map(), "reduce-bits")] if how == "known" else None
    size, tile = 192, 64
    shown = preview.write_preview(source, tmp_path / "cmp.png", compare=tmp_path / "head8.nrrd", size=(size, size),
                                  intensity_maps=maps)
    picture = read_png(shown.path)
    first, other = shown.displays
    assert ("reduce-bits" if how == "known" else "fitted") in other.caption and first.transfer is shown.transfer
    # the compared window is the input's window mapped through the reduction: the same tissue, the same gray
    scale, offset = report.intensity_map()
    assert other.transfer.window.low == pytest.approx(scale * first.transfer.window.low + offset, abs=1.0)
    assert other.transfer.window.high == pytest.approx(scale * first.transfer.window.high + offset, abs=1.0)
    for panel in shown.panels:
        assert silhouette(crop(picture, panel.render)).mean() > 0.05  # a rendering, not empty
    before, after = (crop(picture, panel.slices).astype(float) for panel in shown.panels)
    assert after.mean() > 40 and after.std() > 30  # not an empty black panel
    correlation = np.corrcoef(before.ravel(), after.ravel())[0, 1]
    assert correlation > 0.97 and np.abs(before - after).mean() < 8
    # Drawn with the input's own window (as before this was fixed) the reduced slices would be black.
    reduced = bv.read_volume(tmp_path / "head8.nrrd")
    old_way = mid_slices(reduced, first.transfer.window, tile)
    assert max(image.mean() for _, image in old_way) < 5


def test_a_compared_volume_on_another_grid_and_range_gets_its_own_window_and_says_so(tmp_path):
    volume = mr_head_16(48, 4)
    source = bv.write_volume(volume, tmp_path / "head16.nrrd")
    reduced, _ = bv.reduce_bits(volume, 8)
    smaller = bv.resample(reduced, 2)
    shown = preview.write_preview(source, tmp_path / "cmp.png", compare=smaller, size=(160, 160))
    first, other = shown.displays
    assert other.caption.startswith("its own") and "differs from head16.nrrd" in other.caption
    own = transfer_function(shown.sources[1].volume)
    assert other.transfer.window == own.window and other.transfer.kind == own.kind
    images = mid_slices(shown.sources[1].volume, other.transfer.window, 53)
    assert min(image.mean() for _, image in images) > 20


def hazy_ball(n, seed, radius=0.3):
    """A textured ball (uint8, 90-170) in air of half-normal noise (about 0-25): the haze dehaze removes."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:n, :n, :n]
    c = (n - 1) / 2
    inside = ((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2) < (radius * n) ** 2
    array = np.abs(rng.normal(0, 8, (n, n, n)))
    array[inside] = 130 + 40 * quality.smooth_noise((n, n, n), correlation=n / 6, seed=seed)[inside]
    return np.clip(np.rint(array), 0, 255).astype(np.uint8), inside


def magenta(image):
    """Pixels coloured by mark_region (gray pixels have R = G = B)."""
    image = image.astype(int)
    return (image[..., 0] - image[..., 1] > 25) & (image[..., 2] - image[..., 1] > 25)


def as_column(boolean_volume, tile):
    """A boolean volume's three mid-slices, turned and scaled as a preview draws them and placed as in its slice
    column (each centred in a tile x tile cell)."""
    column = np.zeros((3 * tile, tile), bool)
    for row, (_, image) in enumerate(mid_slices(boolean_volume, Window(0, 1), tile)):
        top, left = row * tile + (tile - image.shape[0]) // 2, (tile - image.shape[1]) // 2
        column[top:top + image.shape[0], left:left + image.shape[1]] = image > 127
    return column


@pytest.mark.parametrize("seed, n, spacing", [(0, 48, (1.0, 1.0, 1.0)), (1, 40, (0.6, 0.6, 1.5))])
def test_the_dehaze_preview_marks_where_haze_was_removed_and_nowhere_else(tmp_path, seed, n, spacing):
    array, inside = hazy_ball(n, seed)
    before = bv.Volume.from_array(array, spacing=spacing, origin=(-5.0, 2.0, 30.0))
    after, mask, report = bv.dehaze(before, bv.HazeOptions(level=3), measure_compression=False)
    assert 0.3 < report.changed_fraction < 0.9
    size, tile = 192, 64
    shown = preview.write_preview(before, tmp_path / "haze.png", compare=after, names=["before", "after"],
                                  size=(size, size))
    picture = read_png(shown.path)
    first, other = shown.displays
    assert other.caption == "same as before" and first.marked_by == "after"
    assert shown.panels[0].slices[2:] == (3 * tile, tile)
    marked = magenta(crop(picture, shown.panels[0].slices))
    # Where it should be: the voxels dehaze changed, turned and scaled as the slices are.
    expected = as_column(bv.Volume(before.array != after.array, before.geometry), tile)
    object_pixels = as_column(bv.Volume(inside, before.geometry), tile)
    assert marked.sum() > 0.5 * expected.sum()
    assert not (marked & object_pixels).any()  # nothing marked on the object itself
    assert (marked & expected).sum() > 0.9 * marked.sum()
    # The after panel and a picture without changes have no mark at all.
    assert not magenta(picture[:, shown.panels[1].render[1]:]).any()
    same = preview.write_preview(before, tmp_path / "same.png", compare=before, size=(size, size))
    assert same.displays[0].marked is None and not magenta(read_png(same.path)).any()


# --- the command line -------------------------------------------------------------------------------------------
def bigvolume(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bigvolume", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_preview_compare_and_size(tmp_path, before_after):
    before, after = before_after
    done = bigvolume("preview", before, tmp_path / "p.png", "--compare", after, "--size", "400x300")
    assert done.returncode == 0, done.stderr
    assert "phantom.nhdr | phantom_x4.nrrd" in done.stdout and "CT-like" in done.stdout
    picture = read_png(tmp_path / "p.png")
    assert picture.shape[1] == 2 * (400 + 8 + 300 // 3) + 16 and picture.shape[0] > 300
    done = bigvolume("preview", before, tmp_path / "q.png", "--size", "10x10")
    assert done.returncode == 2 and "WIDTHxHEIGHT" in done.stderr and not (tmp_path / "q.png").exists()


def test_render_knows_only_vtk_and_the_command_line_loads_the_slicer_engine(tmp_path, before_after):
    """render imports nothing of the slicer layer: by itself it has the "vtk" engine; the command line loads the slicer
    layer's engine, and `--engine slicer` draws with it."""
    done = subprocess.run([sys.executable, "-c", "import sys\nfrom bigvolume.render import offscreen, preview\n"
                           "print(sorted(offscreen.RENDERERS), any(m.startswith(('bigvolume.slicer', 'slicer')) "
                           "for m in sys.modules))\n"
                           "from bigvolume.cli.commands import register_renderers\nregister_renderers()\n"
                           "print(sorted(offscreen.RENDERERS))"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['vtk']", "False", "['slicer',", "'vtk']"]
    before, _ = before_after
    pictures = []
    for engine in ENGINES:
        done = bigvolume("preview", before, tmp_path / f"{engine}.png", "--engine", engine, "--size", "128x128")
        assert done.returncode == 0, done.stderr
        pictures.append(read_png(tmp_path / f"{engine}.png"))
    assert pictures[0].shape == pictures[1].shape
    assert silhouette(pictures[0]).sum() > 1000 and silhouette(pictures[1]).sum() > 1000
    done = bigvolume("preview", before, tmp_path / "x.png", "--engine", "ospray")
    assert done.returncode == 2 and not (tmp_path / "x.png").exists()


def test_cli_resample_preview_is_before_after_and_a_bad_path_fails_first(tmp_path, before_after):
    before, _ = before_after
    done = bigvolume("resample", before, tmp_path / "out.nrrd", "--factor", "2", "--preview", tmp_path / "ba.png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.nrrd").exists() and "ba.png: preview of phantom.nhdr | out.nrrd" in done.stdout
    assert read_png(tmp_path / "ba.png").shape[1] == 2 * (512 + 8 + 512 // 3) + 16
    done = bigvolume("resample", before, tmp_path / "out2.nrrd", "--preview", tmp_path / "nowhere" / "x.png")
    assert done.returncode == 1 and done.stderr.strip().endswith("does not exist")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "out2.nrrd").exists()


def test_cli_import_stack_and_dehaze_previews(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    array = quality.microct_phantom(32)
    for k, plane in enumerate(array):
        sitk.WriteImage(sitk.GetImageFromArray(plane), str(stack / f"s{k:03d}.tif"))
    done = bigvolume("import-stack", stack, tmp_path / "vol.nrrd", "--spacing", "1", "1", "1", "--preview",
                     tmp_path / "stack.png", "--quiet")
    assert done.returncode == 0, done.stderr
    picture = read_png(tmp_path / "stack.png")
    assert picture.shape[1] < 2 * (512 + 8 + 170)  # one panel: the imported volume
    assert np.array_equal(io.read_volume(tmp_path / "vol.nrrd").array, array)
    if "dehaze" not in bigvolume("--help").stdout:
        pytest.skip("no dehaze command in this build")
    done = bigvolume("dehaze", tmp_path / "vol.nrrd", tmp_path / "clean.nrrd", "--preview", tmp_path / "haze.png")
    assert done.returncode == 0, done.stderr
    assert "haze.png: preview of vol.nrrd | clean.nrrd" in done.stdout
    assert read_png(tmp_path / "haze.png").shape[1] == 2 * (512 + 8 + 512 // 3) + 16


def test_cli_reduce_bits_preview_draws_the_output_like_the_input(tmp_path):
    source = bv.write_volume(mr_head_16(40, 7), tmp_path / "head16.nrrd")
    done = bigvolume("reduce-bits", source, tmp_path / "head8.nrrd", "--bits", "8", "--preview", tmp_path / "rb.png")
    assert done.returncode == 0, done.stderr
    assert "rb.png: preview of head16.nrrd | head8.nrrd" in done.stdout and done.stderr == ""
    picture = read_png(tmp_path / "rb.png")
    # The same picture as write_preview with reduce-bits' own map: the output drawn like the input.
    _, report8 = bv.reduce_bits(bv.read_volume(source), 8)
    report = preview.write_preview(source, tmp_path / "again.png", compare=tmp_path / "head8.nrrd",
                                   intensity_maps=[IntensityMap(*report8.intensity_map(), "reduce-bits")])
    assert np.array_equal(read_png(report.path), picture)
    assert "through reduce-bits" in report.displays[1].caption
    before, after = (crop(picture, panel.slices).astype(float) for panel in report.panels)
    assert after.std() > 30 and np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.97
    bad = bigvolume("reduce-bits", source, tmp_path / "x.nrrd", "--bits", "8", "--preview", tmp_path / "x.jpg")
    assert bad.returncode == 1 and "a preview is a PNG" in bad.stderr and not (tmp_path / "x.nrrd").exists()


# --- Slicer: display nodes on a real scene ----------------------------------------------------------------------
@pytest.fixture()
def scene():
    with offscreen_render.slicer_core_scene() as slicer_scene:
        layouts = slicer.vtkMRMLLayoutLogic()  # as in Slicer: the layout node with the standard layouts
        layouts.SetMRMLScene(slicer_scene.scene)
        yield slicer_scene.scene
        layouts.SetMRMLScene(None)


def volume_node(scene, volume, name):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    fill_volume_node(node, volume)
    return node


def curves(display):
    """The points and opacity unit distance of a volume rendering display node's property."""
    return property_points(display.GetVolumePropertyNode().GetVolumeProperty())


def test_volume_rendering_display_node_carries_the_preview_transfer_function(scene):
    volume = bv.Volume(ct_body(48), oblique_grid((48, 48, 48)))
    node = volume_node(scene, volume, "ct")
    display = preview_nodes.show_volume_rendering(node)
    assert display.GetClassName() == "vtkMRMLGPURayCastVolumeRenderingDisplayNode"
    assert display.GetVolumeNode() is node and display.GetVisibility() and display.GetViewNodeIDs() == ()
    expected = transfer_function(volume)
    assert expected.kind == CT_LIKE
    colours, opacities, unit = curves(display)
    assert np.allclose(colours, expected.colors) and np.allclose(opacities, expected.opacities)
    assert unit == pytest.approx(opacity_unit_distance(volume.geometry))
    count = node.GetNumberOfDisplayNodes()
    assert preview_nodes.show_volume_rendering(node) is display and node.GetNumberOfDisplayNodes() == count


def test_before_after_puts_input_and_output_in_two_linked_views_with_one_transfer_function(scene):
    before = volume_node(scene, bv.Volume.from_array(quality.microct_phantom(48), spacing=(0.5,) * 3), "input")
    small = bv.resample(bv.Volume.from_array(quality.microct_phantom(48), spacing=(0.5,) * 3), 4, method="nearest")
    after = volume_node(scene, small, "output")
    shown_before, shown_after = preview_nodes.show_before_after(before, after)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == layout.SlicerLayoutDual3DView
    views = [scene.GetSingletonNode(tag, "vtkMRMLViewNode") for tag in ("1", "2")]
    assert shown_before.GetViewNodeIDs() == (views[0].GetID(),) and shown_after.GetViewNodeIDs() == (views[1].GetID(),)
    assert all(view.GetLinkedControl() for view in views) and views[0].GetViewGroup() == views[1].GetViewGroup()
    assert curves(shown_before)[:2] == curves(shown_after)[:2]
    expected = preview_nodes.node_transfer_function(before)
    assert np.allclose(curves(shown_after)[1], expected.opacities)
    # Afterwards a plain preview of the output shows it in every view again.
    assert preview_nodes.show_preview(after) is shown_after and shown_after.GetViewNodeIDs() == ()


@pytest.mark.parametrize("seed", [5, 6])
def test_before_after_of_a_reduced_bit_depth_moves_the_curves_with_the_values(scene, seed):
    volume = mr_head_16(40, seed)
    reduced, report = bv.reduce_bits(volume, 8)
    before, after = volume_node(scene, volume, "input"), volume_node(scene, reduced, "output8")
    shown_before, shown_after = preview_nodes.show_before_after(before, after)
    scale, offset = report.intensity_map()
    (colours_before, opacities_before, _), (colours_after, opacities_after, _) = curves(shown_before), curves(
        shown_after)
    # fitted from the voxels: the input's curves moved by the reduction's map (within a grey level)
    np.testing.assert_allclose([p[0] for p in opacities_after], [scale * p[0] + offset for p in opacities_before],
                               atol=1.0)
    np.testing.assert_allclose([p[1] for p in opacities_after], [p[1] for p in opacities_before])
    # given the map, exactly it
    _, exact = preview_nodes.show_before_after(before, after,
                                               intensity_map=IntensityMap(scale, offset, "reduce-bits"))
    np.testing.assert_allclose([p[0] for p in curves(exact)[1]], [scale * p[0] + offset for p in opacities_before],
                               rtol=1e-6, atol=1e-6)


def test_the_module_logics_show_the_preview(scene):
    from AntiAliasedResampleLib import AntiAliasedResampleLogic
    from ImageStackImportLib import ImageStackImportLogic
    source = volume_node(scene, bv.Volume.from_array(mr_head(40), spacing=(1.0, 1.0, 1.2)), "head")
    logic = AntiAliasedResampleLogic()
    output = logic.process(source, factor=2.0)
    display = logic.showPreview(output, source)
    assert display.GetVolumeNode() is output and display.GetViewNodeIDs() == ("vtkMRMLViewNode2",)
    assert preview_nodes.node_transfer_function(source).kind == MR_LIKE
    assert ImageStackImportLogic.showPreview(source).GetViewNodeIDs() == ()  # a plain preview: every view
    assert source.GetDisplayNode() is not None and output.GetNumberOfDisplayNodes() == 2  # slices + rendering


@pytest.mark.parametrize("table", ["vtkMRMLColorTableNodeLabels", "custom", "short"])
@pytest.mark.parametrize("labels", [(3, 7), (1, 2, 5, 40)])
def test_a_label_map_node_is_rendered_in_its_colour_table_s_colours(scene, table, labels):
    """Slicer's volume rendering colours a label map as its colour table does (SetLabelMapToVolumeProp), as the
    slice views show it; the preview put its own colours on the labels (3 white in Slicer's Labels table came out
    red). A label the table does not hold keeps ours; a scalar volume node of the same voxels keeps ours."""
    rng = np.random.default_rng(len(labels))
    array = np.zeros((20, 20, 20), np.uint8)  # the background around blocks of each label
    for n, label in enumerate(labels):
        corner = rng.integers(2, 12, 3)
        array[tuple(slice(c, c + 6 - n) for c in corner)] = label
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    fill_volume_node(node, bv.Volume.from_array(array))
    node.CreateDefaultDisplayNodes()
    if table != "vtkMRMLColorTableNodeLabels":
        colours = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "ours")
        colours.SetTypeToUser()
        colours.SetNumberOfColors(6 if table == "short" else 64)  # short: 40 beyond the table
        for index in range(colours.GetNumberOfColors()):
            colours.SetColor(index, f"label {index}", (index * 37 % 64) / 63, (index * 11 % 64) / 63, 0.5, 1.0)
        node.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
    table_node = node.GetDisplayNode().GetColorNode()
    display = preview_nodes.show_volume_rendering(node)
    shown = {round(point[0]): tuple(point[1:]) for point in curves(display)[0]}
    ours = preview_nodes.transfer_function(bv.Volume.from_array(array))
    assert ours.labels == tuple(float(v) for v in labels)
    for n, label in enumerate(labels):
        rgba = [0.0] * 4
        if table_node.GetColor(label, rgba):
            np.testing.assert_allclose(shown[label], rgba[:3], atol=1e-6)
        else:
            np.testing.assert_allclose(shown[label], [c for v, *c in ours.colors if v == label][0], atol=1e-6)
    scalar = volume_node(scene, bv.Volume.from_array(array), "scalar labels")
    np.testing.assert_allclose(curves(preview_nodes.show_volume_rendering(scalar))[0], ours.colors, atol=1e-6)


def test_a_volume_without_finite_values_is_refused_naming_the_node(scene):
    node = volume_node(scene, bv.Volume.from_array(np.full((6, 6, 6), np.nan, np.float32)), "empty scan")
    with pytest.raises(bv.BigVolumeError, match=r"^3D preview: empty scan: the volume has no finite voxel values"):
        preview_nodes.show_volume_rendering(node)


def test_a_scene_without_volume_rendering_is_refused_clearly():
    bare = slicer.vtkMRMLScene()
    node = volume_node(bare, bv.Volume.from_array(np.ones((4, 4, 4), np.uint8)), "v")
    with pytest.raises(bv.BigVolumeError, match="no volume rendering"):
        preview_nodes.show_volume_rendering(node)
    with pytest.raises(bv.BigVolumeError, match="no voxels"):
        preview_nodes.show_volume_rendering(bare.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"))


@pytest.fixture()
def rendering_scene():
    """A slicer-core scene with Slicer's volume rendering logic, as the modules get it from
    slicer.modules.volumerendering.logic()."""
    with offscreen_render.slicer_core_scene() as slicer_scene:
        yield slicer_scene.scene, slicer_scene.application.GetModuleLogic("VolumeRendering")


@pytest.mark.parametrize("method", ["vtkMRMLCPURayCastVolumeRenderingDisplayNode",
                                    "vtkMRMLGPURayCastVolumeRenderingDisplayNode"])
def test_the_preview_uses_the_users_default_rendering_method_with_our_curves(rendering_scene, method):
    """Through the volume rendering logic (CreateDefaultVolumeRenderingNodes) the display node is of the user's
    default method (CPU ray casting where the GPU fails), and carries our transfer function whatever it is."""
    from AntiAliasedResampleLib import AntiAliasedResampleLogic
    from ImageStackImportLib import ImageStackImportLogic

    scene, logic = rendering_scene
    logic.SetDefaultRenderingMethod(method)
    volume = bv.Volume(ct_body(40), oblique_grid((40, 40, 40)))
    node = volume_node(scene, volume, "ct")
    display = preview_nodes.show_volume_rendering(node, rendering_logic=logic)
    assert display.GetClassName() == method and display.GetVolumeNode() is node and display.GetVisibility()
    expected = transfer_function(volume)
    colours, opacities, unit = curves(display)
    assert np.allclose(colours, expected.colors) and np.allclose(opacities, expected.opacities)
    assert unit == pytest.approx(opacity_unit_distance(volume.geometry))
    count = node.GetNumberOfDisplayNodes()
    assert preview_nodes.show_volume_rendering(node, rendering_logic=logic) is display  # reused, not stacked
    assert node.GetNumberOfDisplayNodes() == count
    # The module Logics pass Slicer's logic on: before/after and a plain preview, both of the default method.
    output = AntiAliasedResampleLogic().process(node, factor=2.0)
    shown = AntiAliasedResampleLogic.showPreview(output, node, renderingLogic=logic)
    assert shown.GetClassName() == method and shown.GetViewNodeIDs() == ("vtkMRMLViewNode2",)
    assert np.allclose(curves(shown)[1], expected.opacities)  # the input's curves on both sides
    assert ImageStackImportLogic.showPreview(node, renderingLogic=logic).GetClassName() == method


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("share", [0.02, 0.2])
def test_nan_voxels_are_not_drawn(engine, share):
    """2 % NaN voxels in a float ball were drawn by ray casting as opaque grey blocks hiding it: now the rendering
    equals that of the ball with its NaN set to the transparent bottom of the opacity curve."""
    rng = np.random.default_rng(1)
    shape = (24, 26, 28)
    ball = (np.linalg.norm(np.indices(shape) - 12, axis=0) < 8).astype(np.float32) * 100
    ball += rng.normal(0, 5, shape).astype(np.float32)
    holes = rng.random(shape) < share
    with_nan = np.where(holes, np.float32(np.nan), ball)
    transfer = transfer_function(bv.Volume.from_array(with_nan))
    clear = min(value for value, opacity in transfer.opacities if opacity == 0.0)
    drawn = offscreen.render_volume(bv.Volume.from_array(with_nan), (96, 96), transfer, engine=engine)
    filled = offscreen.render_volume(bv.Volume.from_array(np.where(holes, np.float32(clear), ball)), (96, 96),
                                     transfer, engine=engine)
    assert np.abs(drawn.astype(int) - filled.astype(int)).max() <= 2


# --- values of any sign, label maps, one-voxel-thick, non-finite and huge volumes --------------------------------
def noisy_ball(n, outside, inside, dtype, seed=0, radius=0.3):
    """A ball of ``inside`` in ``outside``, with a little noise (2 % of the difference), as ``dtype``."""
    z, y, x = np.indices((n, n, n))
    c = (n - 1) / 2
    mask = (x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2 < (radius * n) ** 2
    values = np.where(mask, inside, outside) + np.random.default_rng(seed).normal(0, 0.02 * abs(inside - outside),
                                                                                   mask.shape)
    return (np.rint(values) if np.dtype(dtype).kind in "iu" else values).astype(dtype), mask


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype, outside, inside", [(np.int16, -900, -100), (np.int32, -3000, -2000),
                                                    (np.float32, -5.0, -1.0), (np.float64, -1e-3, -2e-4),
                                                    (np.int16, -400, -1000)])
def test_an_object_whose_values_are_all_negative_is_drawn(engine, dtype, outside, inside):
    """A CT crop of fat in lung (-100 in -900 HU) rendered blank: signed data showed only what is above 0. Drawn
    like the same volume shifted to positive values (a dark object in bright surroundings: those are drawn)."""
    array, _ = noisy_ball(40, outside, inside, dtype)
    assert array.max() < 0
    shifted = (array - min(outside, inside) + (100 if np.dtype(dtype).kind in "iu" else 1.0)).astype(dtype)
    masks = [silhouette(offscreen.render_volume(bv.Volume.from_array(a), (128, 128), camera=FROM_ANTERIOR,
                                                engine=engine)) for a in (array, shifted)]
    assert masks[1].sum() > 1500
    assert (masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum() > 0.9


def test_signed_data_with_a_negative_half_of_noise_still_shows_only_what_is_above_zero():
    """The clamp to 0 stays for signed data with values above 0: its negative half (noise, a test pattern's
    troughs) stays clear."""
    for array in (quality.zone_plate(48), noisy_ball(40, 0.0, 50.0, np.float32)[0] - 0.5):
        transfer = transfer_function(array)
        assert opacity_at(transfer, -0.2)[0] == 0.0


def label_volume(dtype, labels, n=32):
    """Boxes of each label in a background of 0, at distinct places."""
    array = np.zeros((n, n, n), dtype)
    for index, label in enumerate(labels):
        k, i = 2 + 5 * index, 2 + 5 * index
        j = 4 + (index % 2) * 14
        array[k:k + 5, j:j + 8, i:i + 5] = label
    return array


@pytest.mark.parametrize("dtype, labels", [(np.uint8, (1, 2, 7)), (np.uint16, (1, 2, 3, 4, 5)),
                                           (np.int16, (1, 3, 40)), (np.uint8, (10, 11, 250)),
                                           (np.int32, (1, 2, 3, 4, 5, 6)), (np.int16, (1, 2, 3, 1000, 1001, 2000)),
                                           (np.uint16, (2, 3, 9000, 60000))])
def test_every_label_of_a_label_map_is_drawn(dtype, labels):
    """A label map 0/1/2/7 drew only label 7: Otsu put the background between 2 and 7. Labels 1-3 beside 2000: the
    renderer's lookup table, sampled over the whole range, lost label 1 and gave 2 and 3 one colour (now drawn as
    the labels' places)."""
    array = label_volume(dtype, labels)
    transfer = transfer_function(array)
    assert opacity_at(transfer, 0)[0] == 0.0
    full = offscreen.render_volume(bv.Volume.from_array(array), (128, 128), transfer, engine="vtk").astype(int)
    for label in labels:
        assert opacity_at(transfer, label)[0] > 0.0, label
        without = offscreen.render_volume(bv.Volume.from_array(np.where(array == label, 0, array).astype(dtype)),
                                          (128, 128), transfer, engine="vtk").astype(int)
        assert (np.abs(full - without).max(axis=2) > 30).sum() > 30, label  # the label is in the picture


THIN_CUTS = {(1, 40, 40): np.s_[20:21], (40, 40, 1): np.s_[:, :, 20:21], (40, 1, 40): np.s_[:, 20:21],
             (1, 1, 30): np.s_[20:21, 20:21, 5:35], (30, 1, 1): np.s_[5:35, 20:21, 20:21]}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", list(THIN_CUTS))
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_a_volume_one_voxel_thick_is_drawn_as_a_slab(engine, shape, dtype):
    """A single slice (1xNxN, NxNx1) or a line (30x1x1) rendered empty: the ray caster saw a box of no thickness."""
    ball, _ = noisy_ball(40, 100, 1000, dtype)
    array = np.ascontiguousarray(ball[THIN_CUTS[shape]])
    assert array.shape == shape
    volume = bv.Volume.from_array(array, spacing=(0.5, 0.7, 1.2), origin=(3.0, -4.0, 5.0))
    drawn = silhouette(offscreen.render_volume(volume, (128, 128), engine=engine))
    assert drawn.sum() > (100 if shape.count(1) == 2 else 400)  # a line, a slab
    # the slab lies where the slice is: its thickness is one voxel around the voxels' centres
    thick = offscreen.thickened(volume)
    assert max(thick.geometry.dimensions) == max(volume.geometry.dimensions) and min(thick.geometry.dimensions) == 2
    low, high = offscreen.ras_bounds(thick.geometry)
    centre = offscreen.ras_bounds(volume.geometry).mean(axis=0)
    np.testing.assert_allclose((low + high) / 2, centre, atol=1e-9)


@pytest.mark.parametrize("shape, dtype", [((30, 1, 1), np.float32), ((1, 1, 30), np.float64), ((1, 30, 1), np.int16),
                                          ((7, 1, 1), np.uint8), ((1, 24, 24), np.float32)])
def test_thin_and_tiny_volumes_preview_without_warnings_and_say_how_they_are_drawn(tmp_path, shape, dtype):
    """A 30x1x1 volume printed numpy's 'Mean of empty slice' RuntimeWarning on stderr."""
    import warnings
    array = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transfer_function(array)
        report = preview.write_preview(bv.Volume.from_array(array), tmp_path / "thin.png", names=["thin"],
                                       size=(96, 96), engine="vtk")
    thin = "".join(axis for axis, n in zip("IJK", shape[::-1]) if n == 1)
    assert preview.thin_note(report.sources[0]) == (
        f"thin: one voxel along {' and '.join(thin)}: rendered as a slab one voxel thick (see the slices)")
    assert silhouette(crop(read_png(report.path), report.panels[0].render)).sum() > 20


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, "both"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinite_voxels_are_not_drawn(engine, bad, dtype):
    """+inf voxels were drawn as a grey box (at the curves' top); like NaN, they are now transparent: the rendering
    equals that of the ball with them set to the transparent bottom of the opacity curve."""
    rng = np.random.default_rng(2)
    ball, _ = noisy_ball(28, 5.0, 100.0, dtype)
    holes = np.zeros(ball.shape, bool)
    holes[:14] = True  # half the grid, ball included
    holes &= rng.random(ball.shape) < 0.5
    signs = np.where(rng.random(ball.shape) < 0.5, 1.0, -1.0) if bad == "both" else np.sign(bad)
    with_inf = np.where(holes, (signs * np.inf).astype(dtype), ball)
    transfer = transfer_function(bv.Volume.from_array(with_inf))
    assert transfer == transfer_function(bv.Volume.from_array(np.where(holes, np.nan, ball).astype(dtype)))
    clear = min(value for value, opacity in transfer.opacities if opacity == 0.0)
    drawn = offscreen.render_volume(bv.Volume.from_array(with_inf), (96, 96), transfer, engine=engine)
    filled = offscreen.render_volume(bv.Volume.from_array(np.where(holes, clear, ball).astype(dtype)), (96, 96),
                                     transfer, engine=engine)
    assert np.abs(drawn.astype(int) - filled.astype(int)).max() <= 2


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scale", [1e40, 3e200, 1.7e308 / 1000, 1e-42, 2.0 ** -200, 1e-310])
def test_float64_values_beyond_float32_render_like_the_same_object_scaled_down(engine, scale):
    """float64 values beyond float32's 3.4e38 were cast to infinity: an opaque black box, saturated slices. Tiny ones
    became 0 (a black box), subnormal ones failed ("window too narrow")."""
    ball, _ = noisy_ball(32, 0.1, 1.0, np.float64)
    reference = offscreen.render_volume(bv.Volume.from_array(ball), (96, 96), engine=engine).astype(int)
    scaled = offscreen.render_volume(bv.Volume.from_array(ball * scale), (96, 96), engine=engine).astype(int)
    assert silhouette(reference).sum() > 800
    assert np.abs(scaled - reference).max(axis=2).mean() < 1.0 and np.abs(scaled - reference).max() <= 40
    for (name, expected), (scaled_name, image) in zip(mid_slices(bv.Volume.from_array(ball), Window(0.2, 0.9), 48),
                                                      mid_slices(bv.Volume.from_array(ball * scale),
                                                                 Window(0.2 * scale, 0.9 * scale), 48)):
        assert name == scaled_name and np.abs(image.astype(int) - expected.astype(int)).max() <= 1, name


def rescaled_pair(tmp_path, how):
    """A uint16 volume (a ball and a bright cube in noise) and a linear rescale of it on the same grid."""
    n = 48
    z, y, x = np.mgrid[:n, :n, :n]
    a = np.full((n, n, n), 13.0)
    a[((x - 24) ** 2 + (y - 24) ** 2 + (z - 24) ** 2) < 12 ** 2] = 133
    a[34:44, 34:44, 34:44] = 400  # 0.9 % of the voxels: the 99.5th percentile, so the windows overlap
    a = (a + np.random.default_rng(0).integers(0, 20, a.shape)).astype(np.uint16)
    first = bv.write_volume(bv.Volume.from_array(a, spacing=(0.5, 0.5, 0.8)), tmp_path / "a.nrrd")
    second = tmp_path / "b.nrrd"
    if how == "stretch":
        bv.reduce_bits_file(first, second, 8, stretch=True)
    else:
        scale, offset, dtype = how
        bv.write_volume(bv.Volume.from_array((a * scale + offset).astype(dtype), spacing=(0.5, 0.5, 0.8)), second)
    return first, second


@pytest.mark.parametrize("how", ["stretch", (0.8, 20.0, np.float32), (1.3, -10.0, np.int32), (1.0, -60.0, np.int16)])
def test_a_linear_rescale_on_the_same_grid_is_drawn_through_a_fitted_map_and_not_marked_changed(tmp_path, how):
    """B = reduce-bits A --bits 8 --stretch: their windows overlap, so B was drawn with A's curves and every voxel of
    A was tinted as changed; B's slices came out grey where A's are white."""
    first, second = rescaled_pair(tmp_path, how)
    shown = preview.write_preview(first, tmp_path / "cmp.png", compare=second, size=(160, 160))
    a_display, b_display = shown.displays
    assert b_display.how == "mapped" and "through a fitted" in b_display.caption, b_display.caption
    assert a_display.marked is None
    a, b = (np.asarray(s.volume.array, float) for s in shown.sources)
    scale, offset = np.polyfit(a.ravel(), b.ravel(), 1)
    assert b_display.transfer.window.low == pytest.approx(scale * a_display.transfer.window.low + offset, abs=1.0)
    assert b_display.transfer.window.high == pytest.approx(scale * a_display.transfer.window.high + offset, abs=1.0)
    picture = read_png(shown.path)
    before, after = (crop(picture, panel.slices).astype(float) for panel in shown.panels)
    assert np.abs(before - after).mean() < 4 and not magenta(picture).any()


@pytest.mark.parametrize("where", ["input", "compare"])
@pytest.mark.parametrize("values", ["nan", "nan and inf"])
def test_a_volume_without_finite_values_is_refused_naming_its_file(tmp_path, where, values):
    bad = np.full((8, 9, 10), np.nan, np.float32)
    if values != "nan":
        bad[::2] = np.inf
    bad_path = bv.write_volume(bv.Volume.from_array(bad), tmp_path / "bad.nrrd")
    good_path = bv.write_volume(bv.Volume.from_array(mr_head(24)), tmp_path / "good.nrrd")
    args = [bad_path, tmp_path / "p.png"] if where == "input" else [good_path, tmp_path / "p.png", "--compare", bad_path]
    done = bigvolume("preview", *args, "--engine", "vtk")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0] == f"bigvolume: error: {bad_path}: the volume has no finite voxel values: there is nothing to render"
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("name", ["x.png", "Shot.PNG", "a b.png"])
def test_a_picture_path_that_is_a_folder_is_refused_before_anything_is_read(tmp_path, name, before_after):
    """`preview IN x.png` with x.png a folder rendered first, then failed naming a hidden temporary path."""
    folder = tmp_path / name
    folder.mkdir()
    with pytest.raises(bv.BigVolumeError, match="is a folder"):  # before the (missing) input is even looked at
        preview.write_preview(tmp_path / "missing.nrrd", folder)
    before, _ = before_after
    for args in (["preview", before, folder], ["reduce-bits", before, tmp_path / "o.nrrd", "--bits", "8", "--preview",
                                                folder]):
        done = bigvolume(*args)
        assert done.returncode == 1 and done.stderr == f"bigvolume: error: {folder}: is a folder; give the picture's " \
                                                      "file name (ending in .png)\n", done.stderr
        assert not (tmp_path / "o.nrrd").exists() and sorted(p.name for p in folder.iterdir()) == []


def test_a_named_engine_that_cannot_run_here_is_refused_in_words(tmp_path, monkeypatch):
    """--engine slicer without slicer-core ended in an ImportError traceback from inside the renderer."""
    import dataclasses
    monkeypatch.setitem(offscreen.RENDERERS, "slicer",
                        dataclasses.replace(offscreen.RENDERERS["slicer"], available=lambda: False))
    volume = bv.Volume.from_array(quality.microct_phantom(24).astype(np.float32))
    with pytest.raises(bv.BigVolumeError, match="the slicer rendering engine cannot run here: it needs slicer-core"):
        bv.write_preview(volume, tmp_path / "p.png", engine="slicer")
    assert list(tmp_path.iterdir()) == []
    bv.write_preview(volume, tmp_path / "p.png", engine="auto")  # auto takes what can run
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize("bad, said", [({"memory_limit": 0}, "memory limit must be positive"),
                                       ({"memory_limit": "lots"}, "give bytes or a size"),
                                       ({"complex": True}, "complex64 cannot be drawn")])
def test_a_preview_of_what_cannot_be_drawn_or_a_zero_memory_limit_is_refused(tmp_path, bad, said):
    """memory_limit=0 was taken; complex voxels were drawn by their real part without a word."""
    array = quality.microct_phantom(24).astype(np.float32)
    volume = bv.Volume.from_array((array + 1j * array).astype(np.complex64) if bad.pop("complex", False) else array)
    with pytest.raises(bv.BigVolumeError, match=said):
        bv.write_preview(volume, tmp_path / "p.png", **bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("labels", [(1, 2, 3, 1000, 1001, 2000), tuple(range(1, 21)), (5, 6), (1, 40, 41, 60000)])
def test_a_label_map_shows_every_label_in_its_own_colour(labels):
    """A label map whose labels reach 2000: labels 1 and 2 were transparent in the rendering (the background was
    cleared up to 1e-3 of the range), and the slices' percentile window drew labels 1-3 black like the background
    and 1000, 1001 and 2000 the same white; with 20 labels only 17 grays differed (a helper's preview check). Now
    every label is as opaque as the others, and each has its own colour in the slices, the background black."""
    from bigvolume.render.slices import mid_slices
    dtype = np.uint16
    array = np.zeros((12, 40, 20 * len(labels)), dtype)
    for index, label in enumerate(labels):
        array[4:8, 10:30, 20 * index + 4:20 * index + 16] = label
    volume = bv.Volume.from_array(array)
    transfer = transfer_function(volume)
    assert transfer.labels == tuple(float(v) for v in labels) and opacity_at(transfer, 0)[0] == 0.0
    assert all(opacity_at(transfer, label)[0] > 0.25 for label in labels)
    axial = dict(mid_slices(volume, transfer.window, 20 * len(labels), labels=transfer.labels))
    image = next(image for name, image in axial.items() if name.startswith("axial"))
    assert image.ndim == 3
    scale = image.shape[1] / array.shape[2]
    colours = [tuple(image[image.shape[0] // 2, int((20 * index + 10) * scale)]) for index in range(len(labels))]
    assert tuple(image[1, 1]) == (0, 0, 0)  # the background
    assert all(max(c) > 60 for c in colours), colours
    distinct = min(len(labels), 12)  # LABEL_COLORS has 12; neighbours always differ
    assert len(set(colours)) == distinct and all(a != b for a, b in zip(colours, colours[1:])), colours


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_block_keeps_its_size_in_a_reduced_slice(bad):
    """A mid-plane larger than its tile is reduced; Lanczos's 8 lobes spread a NaN (or inf) block over 10 mm of
    valid data on each side: a 40 mm block drew 43 px wide where a finite one took 29 (a helper's preview check). A
    plane with non-finite voxels is reduced by a mean now, whose reach is its block."""
    array = np.full((10, 240, 240), 500, np.float32)
    array[:, 40:80, 40:80] = bad
    volume = bv.Volume.from_array(array)
    axial = next(image for name, image in mid_slices(volume, Window(100, 1500), 170) if name.startswith("axial"))
    scale = axial.shape[1] / 240
    row = axial[int(60 * scale)].astype(int)
    background = row[int(160 * scale)]
    width = np.count_nonzero(np.abs(row - background) > 40)
    assert abs(width - 40 * scale) <= 2, (width, 40 * scale)


def test_a_large_float_file_with_nan_is_reduced_without_spreading_it(tmp_path):
    """A file larger than a preview needs is resampled first; Lanczos spread its NaN 10 mm into the valid data and
    its note advised a --method the preview command does not have (a helper's preview check). Float files are
    reduced by a mean: the NaN reaches at most the drawn voxel it lies in."""
    array = np.full((20, 20, 300), 1000, np.float32)
    array[:, :, :150] = np.nan
    path = tmp_path / "long.nrrd"
    bv.write_volume(bv.Volume.from_array(array), path)
    source = load_preview_source(path)
    geometry = source.volume.geometry
    assert geometry.dimensions[0] < 300  # reduced
    x = geometry.origin[0] + geometry.spacing[0] * np.arange(geometry.dimensions[0])
    first = x[np.isfinite(np.asarray(source.volume.array)[10, 10])][0]
    assert first - 149.5 <= geometry.spacing[0], (first, geometry.spacing)


def test_a_constant_volume_is_said_to_be_one(tmp_path):
    """A constant volume drew an empty picture, exit 0, its captions "window 7 .. 8" and "intensities span 1" (a
    helper's preview check): the note says every voxel has the value, on stderr and at the picture's foot."""
    path = tmp_path / "const.nrrd"
    bv.write_volume(bv.Volume.from_array(np.full((10, 20, 30), 7, np.uint16)), path)
    done = subprocess.run([sys.executable, "-m", "bigvolume", "preview", str(path), str(tmp_path / "c.png")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "c.png").is_file(), done.stderr
    assert "every voxel has the value 7 (a constant volume)" in done.stderr, done.stderr
    assert "one value, 7, in every voxel" in done.stdout and "span 1" not in done.stdout, done.stdout


def test_a_two_valued_volume_has_no_opacity_cliff_at_its_object():
    """Float data of two values (0 and 1000): the opacity jumped from 0.1 to 0.5 (and the colour to white) just
    above 1000, so a resampled copy's 3 % overshoot drew far more solid beside the original under "the same curves"
    (a helper's preview check). A ramp above the object's value now."""
    array = np.zeros((40, 40, 40), np.float32)
    array[12:28, 12:28, 12:28] = 1000
    transfer = transfer_function(array)
    at = [float(np.interp(v, *zip(*transfer.opacities))) for v in (1000.0, 1030.0)]
    assert at[0] > 0.0 and at[1] - at[0] < 0.05, transfer.opacities


@pytest.mark.parametrize("angles", [(35, 45), (10, 80), (60, 30), (0, 0), (90, 90)])
def test_the_three_panels_are_three_views_on_an_oblique_grid(angles):
    """Each plane took the view nearest its normal on its own: an oblique grid (35 degrees about R, 45 about S)
    showed "sagittal J" and "sagittal I" and no coronal (a helper's preview check). One view per plane now."""
    import math

    def rotation(axis, degrees):
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        return {0: np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), 2: np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]

    direction = rotation(0, angles[0]) @ rotation(2, angles[1])
    volume = bv.Volume.from_array(np.arange(36 * 40 * 48, dtype=np.float32).reshape(36, 40, 48),
                                  direction=direction)
    names = [name.split()[0] for name, _ in mid_slices(volume, Window(0, 1), 64)]
    assert sorted(names) == ["axial", "coronal", "sagittal"], names


def test_values_far_below_hounsfield_air_are_not_called_it():
    """float64 data at +-1e300 was "CT-like (1st percentile -1e+300: Hounsfield air)" (a helper's preview check)."""
    rng = np.random.default_rng(0)
    array = rng.normal(0, 1, (20, 20, 20)) * 1e300
    transfer = transfer_function(array)
    assert "Hounsfield air" not in transfer.reason.replace("no Hounsfield air", ""), transfer.reason
    ct = np.full((20, 20, 20), -1000.0)
    ct[5:15, 5:15, 5:15] = 40.0
    assert "Hounsfield air" in transfer_function(ct).reason


def test_a_wide_range_draws_without_vtk_warnings_on_stderr(tmp_path):
    """Data spanning more than about 1e7 made VTK warn on stderr, in colour codes, that its lookup table would be
    coarser than asked (the picture the same; a helper's preview check): only VTK's errors reach stderr now."""
    array = np.full((20, 40, 40), 500, np.float32)
    array[5:15, 10:30, 10:30] = 2e8
    array[8:12, 15:25, 15:25] = -3e7
    path = tmp_path / "wide.nrrd"
    bv.write_volume(bv.Volume.from_array(array), path)
    done = subprocess.run([sys.executable, "-m", "bigvolume", "preview", str(path), str(tmp_path / "w.png")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "vtkOpenGL" not in done.stderr and "WARN" not in done.stderr, done.stderr


def _mapped_files() -> set:
    with open("/proc/self/maps") as maps:
        return {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's list of mapped files")
def test_a_reduced_preview_maps_no_file_of_its_temporary_folder_when_that_goes(tmp_path, monkeypatch):
    """Windows deletes no file that is mapped: the reduced copy's mapping was still held when its temporary folder
    was removed, so every preview of a file larger than the preview size failed there (PermissionError). Emulated:
    the folder's removal fails as Windows' would while a file in it is mapped."""
    import tempfile

    from bigvolume.render import volumes

    class WindowsLikeFolder(tempfile.TemporaryDirectory):
        def __exit__(self, *exc):
            held = [name for name in _mapped_files() if name.startswith(self.name)]
            if held:
                raise PermissionError(f"[emulated WinError 32] {held[0]} is mapped")
            return super().__exit__(*exc)
    monkeypatch.setattr(volumes.tempfile, "TemporaryDirectory", WindowsLikeFolder)
    large = bv.Volume.from_array(np.random.default_rng(2).integers(0, 1000, (PREVIEW_DIMENSION + 40,) * 3)
                                 .astype(np.uint16))
    path = bv.write_volume(large, tmp_path / "large.nhdr")
    source = load_preview_source(path)
    assert max(source.volume.array.shape) <= PREVIEW_DIMENSION


@pytest.mark.parametrize("platform, remedy", [("linux", "install Mesa's EGL or OSMesa"),
                                              ("win32", "this needs OpenGL 3.2 from the graphics driver"),
                                              ("darwin", "this needs OpenGL 3.2 from the graphics driver")])
def test_no_render_window_is_one_line_with_the_remedy_of_the_platform(monkeypatch, platform, remedy):
    """Only Mesa's EGL and OSMesa windows were tried, which VTK has on Linux only: on Windows and macOS previews
    were unavailable, with advice to install Debian packages. Their desktop windows are tried now (offscreen)."""
    assert {"vtkWin32OpenGLRenderWindow", "vtkCocoaRenderWindow"} <= set(offscreen.WINDOW_CLASSES)
    monkeypatch.setattr(offscreen, "_window_class", None)
    monkeypatch.setattr(offscreen, "_renders", lambda window_class: False)
    monkeypatch.setattr(offscreen.sys, "platform", platform)
    monkeypatch.delenv("VTK_DEFAULT_OPENGL_WINDOW", raising=False)
    with pytest.raises(bv.BigVolumeError, match=f"offscreen rendering is not available .*: {remedy}") as refused:
        offscreen.offscreen_render_window()
    assert len(str(refused.value).splitlines()) == 1
