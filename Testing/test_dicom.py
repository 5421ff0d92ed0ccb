"""DICOM series as input: geometry as SimpleITK's series reader gives it, one file standing for its series, several
series in a folder, slab-by-slab reading equal to the whole read, and every command that reads a volume."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
from bigvolume.io import dicom
from bigvolume.io import files as io
from bigvolume.io.slabs import open_slabs

BIGVOLUME = [sys.executable, "-m", "bigvolume"]


def run(*args):
    return subprocess.run(BIGVOLUME + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def rotation(about_x: float, about_z: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(about_x), np.sin(about_x), np.cos(about_z), np.sin(about_z)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def write_series(folder: Path, values: np.ndarray, spacing, origin, direction, uid: str, *, slope=1.0,
                 intercept=-1024.0, description="CT head", seed=0, positions=None,
                 compressor: str | None = None) -> list[Path]:
    """One DICOM file per slice of ``values`` (k, j, i), in CT units; the files get shuffled random names so that
    their order on disk says nothing about their place. ``direction``: columns are the I, J, K axes (LPS)."""
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.asarray(direction, float).reshape(3, 3)
    rng = np.random.default_rng(seed)
    names = [f"{rng.integers(1 << 40):011x}.dcm" for _ in range(values.shape[0])]
    written = []
    for k in range(values.shape[0]):
        position = (np.asarray(origin, float) + direction[:, 2] * spacing[2] * k if positions is None
                    else positions[k])
        if slope == int(slope):
            image = sitk.GetImageFromArray(values[k])
        else:  # GDCM writes a fractional slope only from float pixels, told the stored type (int16)
            image = sitk.GetImageFromArray((values[k] * slope).astype(np.float32))
            for tag, value in {"0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1"}.items():
                image.SetMetaData(tag, value)
        image.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": "CT", "0008|103e": description, "0020|000e": uid, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.9f}" for v in np.concatenate([direction[:, 0], direction[:, 1]])),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2]),
            "0028|1052": str(intercept), "0028|1053": str(slope),
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()  # keep our series UID
        if compressor is not None:  # GDCM's: JPEG (lossless), JPEG2000
            writer.SetCompressor(compressor)
            writer.UseCompressionOn()
        path = folder / names[k]
        writer.SetFileName(str(path))
        writer.Execute(image)
        written.append(path)
    return written


def ct_values(shape, seed) -> np.ndarray:
    """A CT-like int16 volume: air at -1000 HU with noise, a soft-tissue ball with a bright rim."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    radius = np.sqrt(((k - shape[0] / 2) / shape[0]) ** 2 + ((j - shape[1] / 2) / shape[1]) ** 2
                     + ((i - shape[2] / 2) / shape[2]) ** 2)
    values = np.where(radius < 0.35, 40.0, -1000.0) + np.where(abs(radius - 0.35) < 0.05, 1200.0, 0.0)
    return (values + rng.normal(0, 20, shape)).astype(np.int16)


def series_reader_volume(folder: Path, uid: str | None = None) -> bv.Volume:
    """The series as SimpleITK's ImageSeriesReader gives it: the reference."""
    reader = sitk.ImageSeriesReader()
    uid = uid or reader.GetGDCMSeriesIDs(str(folder))[0]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    image = reader.Execute()
    return bv.Volume(sitk.GetArrayFromImage(image), bv.Geometry(image.GetSize(), image.GetSpacing(),
                                                                image.GetOrigin(),
                                                                np.array(image.GetDirection()).reshape(3, 3)))


def read_back(path) -> bv.Volume:
    image = sitk.ReadImage(str(path))
    return bv.Volume(sitk.GetArrayFromImage(image), bv.Geometry(image.GetSize(), image.GetSpacing(),
                                                                image.GetOrigin(),
                                                                np.array(image.GetDirection()).reshape(3, 3)))


CASES = [  # shape (k, j, i), spacing (I, J, K), origin, rotation angles, slope, seed
    ((9, 14, 17), (0.7, 0.55, 2.5), (-120.0, 35.5, 410.25), (0.0, 0.0), 1.0, 1),
    ((12, 11, 16), (0.9, 0.9, 1.25), (12.0, -80.0, -33.0), (0.35, 0.0), 1.0, 2),       # oblique (tilted)
    ((8, 16, 13), (0.4, 0.6, 3.0), (5.5, 7.25, -9.0), (0.4, -0.6), 1.0, 3),            # doubly oblique
    ((10, 9, 12), (1.1, 0.8, 2.0), (-3.0, 4.0, 150.0), (-0.25, 1.2), 0.5, 4),          # slope 0.5 (float voxels)
]


@pytest.fixture(params=range(len(CASES)), ids=["axial", "oblique", "doubly-oblique", "slope-0.5"])
def series(request, tmp_path):
    shape, spacing, origin, angles, slope, seed = CASES[request.param]
    folder = tmp_path / "series"
    files = write_series(folder, ct_values(shape, seed), spacing, origin, rotation(*angles), f"1.2.826.0.1.{seed}",
                         slope=slope, seed=seed)
    return folder, files


def test_series_reads_as_simpleitks_series_reader_gives_it(series):
    folder, files = series
    expected = series_reader_volume(folder)
    for source in (folder, files[len(files) // 2]):  # the folder, or any one file of the series
        geometry, dtype, components = io.read_geometry(source)
        assert geometry.isclose(expected.geometry, rtol=1e-9, atol=1e-9)
        assert (dtype, components) == (expected.array.dtype, 1)
        volume = io.read_volume(source)
        assert volume.array.dtype == expected.array.dtype
        np.testing.assert_array_equal(volume.array, expected.array)
        assert volume.geometry == geometry
    assert io.file_size(folder) == sum(path.stat().st_size for path in files)


def test_slabs_in_any_order_equal_the_whole_read(series):
    folder, _ = series
    whole = io.read_volume(folder).array
    with open_slabs(folder) as reader:
        assert reader.streams
        depth = reader.slices
        for k0, k1 in [(depth - 3, depth), (0, 2), (2, depth - 3), (1, 2)]:
            np.testing.assert_array_equal(reader.read(k0, k1), whole[k0:k1])


@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streamed"])
def test_resample_cli_on_a_series_folder_keeps_the_block_centred_geometry(series, tmp_path, stream):
    folder, _ = series
    expected_input = series_reader_volume(folder)
    out = tmp_path / "out.nrrd"
    result = run("resample", folder, out, "--factor", 2, *(["--stream"] if stream else ["--no-stream"]))
    assert result.returncode == 0, result.stderr
    output = read_back(out)
    g = expected_input.geometry
    assert np.allclose(output.geometry.spacing, 2 * np.array(g.spacing), rtol=1e-9)
    assert np.allclose(output.geometry.origin, np.array(g.origin) + g.direction @ (0.5 * np.array(g.spacing)),
                       atol=1e-6)
    assert np.allclose(output.geometry.direction, g.direction, atol=1e-9)
    assert output.geometry.dimensions == tuple(max(1, int(np.floor(n / 2 + 0.5))) for n in g.dimensions)
    # the voxels: our resampling of SimpleITK's series read (the streamed run within one unit of rounding)
    reference = bv.resample(expected_input, 2)
    assert output.array.dtype == reference.array.dtype
    difference = np.abs(output.array.astype(float) - reference.array.astype(float))
    assert difference.max() <= (1 if output.array.dtype.kind in "iu" else 1e-4 * np.ptp(reference.array))


def test_one_file_of_a_series_is_read_as_the_series_and_says_so(series, tmp_path):
    folder, files = series
    from_folder, from_file = tmp_path / "folder.nrrd", tmp_path / "file.nrrd"
    assert run("resample", folder, from_folder, "--factor", 2, "--quiet").returncode == 0
    result = run("resample", files[0], from_file, "--factor", 2, "--quiet")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "DICOM" in line]
    assert len(notes) == 1 and f"{len(files)} slices" in notes[0] and str(files[0]) in notes[0]
    a, b = read_back(from_folder), read_back(from_file)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.geometry.isclose(b.geometry)


@pytest.fixture
def two_series(tmp_path):
    folder = tmp_path / "study"
    first = write_series(folder, ct_values((7, 12, 10), 5), (0.8, 0.8, 2.0), (0, 0, 0), np.eye(3), "1.2.3.100",
                         description="Head 2.0", seed=5)
    second = write_series(folder, ct_values((11, 10, 9), 6), (0.5, 0.6, 1.0), (10, 20, -30), rotation(0.3, 0.1),
                          "1.2.3.200", description="Head bone", seed=6)
    return folder, first, second


def test_several_series_are_listed_and_one_is_chosen_by_uid(two_series, tmp_path):
    folder, first, second = two_series
    out = tmp_path / "out.nrrd"
    result = run("resample", folder, out, "--factor", 2)
    assert result.returncode == 1 and not out.exists()
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "--series" in message
    for uid, count, description in (("1.2.3.100", 7, "Head 2.0"), ("1.2.3.200", 11, "Head bone")):
        assert f"{uid} ({count} slices, '{description}')" in message
    for uid, files in (("1.2.3.100", first), ("1.2.3.200", second)):
        result = run("resample", folder, out, "--factor", 2, "--series", uid, "--quiet")
        assert result.returncode == 0, result.stderr
        expected = series_reader_volume(folder, uid).geometry.downsampled(2)
        assert read_back(out).geometry.isclose(expected, rtol=1e-9, atol=1e-6)
        assert io.read_geometry(folder, series=uid)[0].dimensions[2] == len(files)
        # one file stands for its own series even among others
        assert io.read_geometry(files[-1])[0].isclose(io.read_geometry(folder, series=uid)[0])
    unknown = run("resample", folder, out, "--series", "9.9.9")
    assert unknown.returncode == 1 and "9.9.9" in unknown.stderr and "1.2.3.100" in unknown.stderr


def test_series_option_is_refused_for_other_files(tmp_path):
    path = tmp_path / "plain.nrrd"
    io.write_volume(bv.Volume.from_array(np.zeros((4, 4, 4), np.uint8)), path)
    with pytest.raises(bv.VolumeFileError, match="not a DICOM series"):
        io.read_volume(path, series="1.2.3")


def test_dehaze_reduce_bits_and_preview_read_series(two_series, tmp_path):
    folder, _, _ = two_series
    uid = "1.2.3.200"
    expected = series_reader_volume(folder, uid)
    reduced = tmp_path / "reduced.nrrd"
    assert run("reduce-bits", folder, reduced, "--bits", 8, "--series", uid, "--stream", "--quiet").returncode == 0
    dehazed = tmp_path / "dehazed.nhdr"
    assert run("dehaze", folder, dehazed, "--series", uid, "--quiet").returncode == 0
    for path, dtype in ((reduced, np.uint8), (dehazed, expected.array.dtype)):
        volume = read_back(path)
        assert volume.array.dtype == dtype
        assert volume.geometry.isclose(expected.geometry, rtol=1e-9, atol=1e-6)
    picture = tmp_path / "preview.png"
    result = run("preview", folder, picture, "--series", uid, "--engine", "vtk", "--size", "64x64")
    assert result.returncode == 0, result.stderr
    assert picture.stat().st_size > 0


def test_pyramid_of_a_folder_of_several_series_takes_series(two_series, tmp_path):
    """The listing told pyramid's users to choose with --series, which pyramid did not have (exit 2, unrecognized
    arguments), nor bv.pyramid a series= (only one file of the series could be given)."""
    pytest.importorskip("zarr")
    folder, _, _ = two_series
    refused = run("pyramid", folder, tmp_path / "p.ome.zarr")
    assert refused.returncode == 1 and "--series" in refused.stderr and not (tmp_path / "p.ome.zarr").exists()
    uid = "1.2.3.200"
    expected = series_reader_volume(folder, uid)
    done = run("pyramid", folder, tmp_path / "cli.ome.zarr", "--series", uid, "--quiet")
    assert done.returncode == 0, done.stderr
    bv.pyramid(folder, tmp_path / "api.ome.zarr", series=uid)
    for store in ("cli.ome.zarr", "api.ome.zarr"):
        level0 = bv.read_volume(tmp_path / store, level=0)
        np.testing.assert_array_equal(level0.array, expected.array)
        assert level0.geometry.isclose(expected.geometry, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("naming", ["IM{:04d}", "1.2.840.113619.2.55.{}"])
def test_files_without_the_part_10_header_or_a_suffix_are_read_as_their_series(tmp_path, naming):
    """Files without the 128-byte preamble and 'DICM' and without a suffix: the folder was "not a volume file", and
    one file given was read alone by SimpleITK's plain reader, a one-slice volume, exit 0."""
    folder = tmp_path / "bare"
    values = ct_values((6, 10, 8), 12)
    written = write_series(tmp_path / "full", values, (0.7, 0.9, 1.5), (3, -2, 8), rotation(0.2, 0.4), "1.2.3.12")
    folder.mkdir()
    for number, path in enumerate(written):  # the data set alone: no preamble, no DICM, no file meta group
        content = path.read_bytes()
        assert content[128:132] == b"DICM" and content[132:138] == b"\x02\x00\x00\x00UL"
        (folder / naming.format(number)).write_bytes(content[144 + int.from_bytes(content[140:144], "little"):])
    expected = io.read_volume(tmp_path / "full")
    for given in (folder, folder / naming.format(3)):
        out = tmp_path / "out.nrrd"
        out.unlink(missing_ok=True)
        result = run("resample", given, out, "--factor", "1")
        assert result.returncode == 0, result.stderr
        volume = io.read_volume(out)
        np.testing.assert_array_equal(volume.array, expected.array)
        assert volume.geometry.isclose(expected.geometry, rtol=1e-9, atol=1e-6)


def test_a_file_of_another_series_than_the_one_asked_for_is_refused(two_series, tmp_path):
    """--series with a file of the other series read the series asked for, with a note calling the file "one file
    of" it."""
    folder, first, second = two_series
    result = run("resample", first[0], tmp_path / "out.nrrd", "--series", "1.2.3.200")
    assert result.returncode == 1 and not (tmp_path / "out.nrrd").exists()
    assert result.stderr.strip() == (f"bigvolume: error: {first[0]}: a file of DICOM series 1.2.3.100, not of the "
                                     "series 1.2.3.200 asked for: give the folder with --series, or a file of that "
                                     "series")
    assert run("resample", second[0], tmp_path / "out.nrrd", "--series", "1.2.3.200", "--quiet").returncode == 0


@pytest.mark.parametrize("case", ["intercept", "slope", "reversed"])
def test_slices_rescaled_otherwise_keep_their_values(tmp_path, case):
    """Rescale slope and intercept may change from slice to slice. Each slice's values are kept, in one type that
    holds them all: read in the first slice's type (SimpleITK's series reader does so), -500 HU became 65036."""
    rng = np.random.default_rng(len(case))
    folder = tmp_path / case
    expected = []
    for k in range(6):
        second_half = (k >= 3) != (case == "reversed")
        if case == "slope" and second_half:  # 0.5 HU steps: a float type
            stored = rng.integers(-1800, 1800, (1, 7, 9)).astype(float)
            write_series(folder, stored, (0.8, 0.8, 2.0), (0, 0, 2.0 * k), np.eye(3), "1.2.3.77", seed=k,
                         slope=0.5, intercept=-1024.0)
            values = stored * 0.5  # write_series writes values x slope
        elif second_half:  # negative HU under intercept -1024
            values = rng.integers(-1000, 1500, (1, 7, 9)).astype(np.int16)
            write_series(folder, values, (0.8, 0.8, 2.0), (0, 0, 2.0 * k), np.eye(3), "1.2.3.77", seed=k)
        else:  # stored unsigned, intercept 0
            values = rng.integers(0, 4000, (1, 7, 9)).astype(np.uint16)
            write_series(folder, values, (0.8, 0.8, 2.0), (0, 0, 2.0 * k), np.eye(3), "1.2.3.77", seed=k,
                         intercept=0.0)
        expected.append(values[0])
    expected = np.stack(expected)
    volume = bv.read_volume(folder)
    assert np.array_equal(volume.array, expected)
    assert volume.array.dtype.kind == ("f" if case == "slope" else "i")  # float for 0.5 steps; signed for -500
    with open_slabs(folder) as reader:  # streamed, slab by slab: the same type and values
        assert reader.dtype == volume.array.dtype
        assert np.array_equal(np.concatenate([reader.read(k, k + 2) for k in range(0, 6, 2)]), expected)
    out = tmp_path / f"{case}.nrrd"
    assert run("resample", folder, out, "--factor", "1", "--method", "nearest").returncode == 0
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), expected)


def test_missing_slice_is_refused(tmp_path):
    folder = tmp_path / "gap"
    write_series(folder, ct_values((8, 6, 6), 7), (1.0, 1.0, 2.0), (0, 0, 0), np.eye(3), "1.2.3.7")
    # remove one inner slice: the others keep their positions, so the grid has a hole
    ordered = dicom.find_series(folder).files
    ordered[3].unlink()
    out = tmp_path / "out.nrrd"
    result = run("resample", folder, out)
    assert result.returncode == 1 and not out.exists()
    assert "off the regular grid" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_damaged_slice_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "damaged"
    write_series(folder, ct_values((6, 8, 8), 8), (1.0, 1.0, 1.5), (0, 0, 0), np.eye(3), "1.2.3.8")
    victim = dicom.find_series(folder).files[2]
    victim.write_bytes(victim.read_bytes()[:-60])  # cut into the pixel data
    out = tmp_path / "out.nrrd"
    result = run("resample", folder, out, "--stream")
    assert result.returncode == 1 and not out.exists()
    *notes, message = result.stderr.strip().splitlines()  # the note on the dropped file, then the error
    assert message.startswith("bigvolume: error:") and "sitk" not in message.lower() and ".cxx" not in message
    assert victim.name in message and "a DICOM image that cannot be read" in message  # GDCM drops it from its series


@pytest.mark.parametrize("how, seed", [("marker", 0), ("marker", 1), ("zeros", 0), ("zeros", 1), ("noise", 0),
                                       ("noise", 1)])
def test_a_jpeg_compressed_slice_whose_decoder_says_it_is_corrupt_is_refused(tmp_path, capfd, how, seed):
    """GDCM's JPEG decoder prints libjpeg's 'Corrupt JPEG data' on stderr and returns the slice garbled (thousands
    of HU off in a third of its pixels): the series was read, exit 0."""
    from test_stacks import _damaged_jpeg
    folder = tmp_path / "jpeg"
    values = ct_values((5, 48, 48), seed)
    write_series(folder, values, (1.0, 1.0, 1.5), (0, 0, 0), np.eye(3), "1.2.3.21", compressor="JPEG")
    np.testing.assert_array_equal(io.read_volume(folder).array, values)  # lossless
    assert capfd.readouterr().err == ""
    victim = dicom.find_series(folder).files[2]
    victim.write_bytes(_damaged_jpeg(victim.read_bytes(), how, np.random.default_rng(seed)))
    alone = subprocess.run([sys.executable, "-c", f"import SimpleITK; SimpleITK.ReadImage({str(victim)!r})"],
                           capture_output=True, text=True)
    out = tmp_path / "out.nrrd"
    result = run("resample", folder, out, "--factor", "1")
    if "Corrupt JPEG data" in alone.stderr + alone.stdout or how == "marker":
        assert result.returncode == 1 and not out.exists()
        assert result.stderr.strip().splitlines()[-1].startswith(f"bigvolume: error: {victim}: damaged JPEG data")
        assert "Corrupt JPEG data" not in result.stderr.replace("the decoder says: Corrupt JPEG data", "")
    elif alone.returncode != 0:  # an error the decoder raises: refused as unreadable
        assert result.returncode == 1 and victim.name in result.stderr
    else:  # JPEG has no checksum: damage the decoder does not notice cannot be seen
        assert result.returncode == 0


def test_import_stack_redirects_a_dicom_folder(series, tmp_path):
    folder, _ = series
    result = run("import-stack", folder, tmp_path / "out.nrrd")
    assert result.returncode == 1 and not (tmp_path / "out.nrrd").exists()
    assert "DICOM" in result.stderr and "bigvolume resample" in result.stderr


def test_a_folder_without_dicom_is_still_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(bv.VolumeFileError, match="is a folder"):
        io.read_geometry(tmp_path)


@pytest.mark.parametrize("which", [0, -1])
@pytest.mark.parametrize("cut", ["pixels", "header"])
def test_a_damaged_end_slice_left_out_by_gdcm_is_refused(tmp_path, which, cut):
    """GDCM leaves a damaged file out of its series: an end slice gone, the series was read a slice short (and,
    the first gone, its origin moved by a slice), exit 0 with a note. Middle slices were refused as a gap."""
    folder = tmp_path / "damaged-end"
    write_series(folder, ct_values((6, 8, 8), 9), (1.0, 1.0, 1.5), (0, 0, 0), np.eye(3), "1.2.3.9")
    victim = dicom.find_series(folder).files[which]
    content = victim.read_bytes()
    victim.write_bytes(content[:-60] if cut == "pixels" else content[:200])
    for stream in ("--stream", "--no-stream"):
        out = tmp_path / "out.nrrd"
        result = run("resample", folder, out, stream)
        assert result.returncode == 1 and not out.exists()
        message = result.stderr.strip().splitlines()
        assert len(message) == 1 and message[0].startswith(f"bigvolume: error: {victim}: a DICOM image that cannot "
                                                           "be read"), result.stderr
    dicom._series_in.cache_clear()  # (listed before the damage: the folder's time did not change)
    dicom._left_out.cache_clear()
    with pytest.raises(bv.VolumeFileError, match="may be a slice of the series"):
        io.read_volume(folder)


def part10_without_pixels(path: Path, sop_class: str, series_uid: str) -> None:
    """A whole DICOM Part 10 file that holds no image (an RT structure set, a structured report, a presentation
    state): preamble, file meta group, a few tags, explicit VR little endian."""
    def element(group, number, vr, value: bytes):
        value += b"\0" * (len(value) % 2)
        return (group.to_bytes(2, "little") + number.to_bytes(2, "little") + vr
                + len(value).to_bytes(2, "little") + value)
    meta = (element(2, 0x0002, b"UI", sop_class.encode()) + element(2, 0x0003, b"UI", b"1.2.3.4.5")
            + element(2, 0x0010, b"UI", b"1.2.840.10008.1.2.1"))
    dataset = (element(8, 0x0016, b"UI", sop_class.encode()) + element(8, 0x0060, b"CS", b"RTSTRUCT")
               + element(0x20, 0x000E, b"UI", series_uid.encode()))
    path.write_bytes(b"\0" * 128 + b"DICM" + element(2, 0, b"UL", len(meta).to_bytes(4, "little")) + meta + dataset)


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.88.11",
                                       "1.2.840.10008.5.1.4.1.1.11.1"])
def test_objects_without_an_image_beside_a_series_are_left_out_with_a_note(tmp_path, sop_class):
    folder = tmp_path / "with-rtstruct"
    values = ct_values((5, 8, 8), 10)
    write_series(folder, values, (1.0, 1.0, 1.5), (0, 0, 0), np.eye(3), "1.2.3.10")
    part10_without_pixels(folder / "zz_object.dcm", sop_class, "1.2.3.99")
    out = tmp_path / "out.nrrd"
    result = run("resample", folder, out, "--factor", "1")
    assert result.returncode == 0, result.stderr
    assert "1 DICOM file(s) hold no image (reports, structure sets?) and are left out: zz_object.dcm" in result.stderr
    np.testing.assert_array_equal(io.read_volume(out).array, values)


def _short_pixel_data(path: Path) -> None:
    """The slice's Pixel Data element (implicit VR, as GDCM writes it) declares and holds half its bytes; the file is
    otherwise whole."""
    content = path.read_bytes()
    at = content.rfind(b"\xe0\x7f\x10\x00")
    length = int.from_bytes(content[at + 4:at + 8], "little")
    assert at + 8 + length == len(content)
    half = length // 2
    path.write_bytes(content[:at + 4] + half.to_bytes(4, "little") + content[at + 8:at + 8 + half])


@pytest.mark.parametrize("slices, victim", [(6, 3), (6, 0), (1, 0)])
def test_pixel_data_shorter_than_the_slice_is_refused(tmp_path, slices, victim):
    """GDCM does not check an uncompressed Pixel Data element's length: the missing half of the slice came back as
    the rows of the slice read before it (or whatever the buffer held), exit 0."""
    folder = tmp_path / "short"
    write_series(folder, ct_values((slices, 20, 24), 11), (0.5, 0.7, 1.5), (0, 0, 0), np.eye(3), "1.2.3.11")
    path = dicom.find_series(folder).files[victim]
    _short_pixel_data(path)
    for stream in ("--stream", "--no-stream"):
        out = tmp_path / "out.nrrd"
        result = run("resample", folder, out, stream, "--factor", "1")
        assert result.returncode == 1 and not out.exists(), result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"bigvolume: error: {path}: its pixel data hold 480 bytes where its rows, columns, samples and frames "
            "need 960 (damaged or truncated?)")


@pytest.mark.parametrize("odd", ["flipped in plane", "rotated 10 degrees", "other pixel spacing"])
def test_a_slice_oriented_or_sized_otherwise_is_refused(tmp_path, odd):
    """Each slice is read on the first one's grid: a slice with another orientation or pixel spacing, its position
    on the grid, was read without a word (drawn in the wrong place); SimpleITK does the same."""
    folder, values = tmp_path / "mixed", ct_values((6, 8, 8), 3)
    spacing, direction = (0.7, 0.7, 2.0), np.eye(3)
    files = write_series(folder, values, spacing, (5.0, -3.0, 10.0), direction, "1.2.3.9")
    ordered = dicom.find_series(folder).files
    victim = ordered[2]
    position = np.array([5.0, -3.0, 10.0]) + direction[:, 2] * spacing[2] * 2
    other_direction = {"flipped in plane": np.diag([-1.0, -1.0, 1.0]), "rotated 10 degrees": rotation(0, 10),
                       "other pixel spacing": direction}[odd]
    other_spacing = (0.8, 0.8, 2.0) if odd == "other pixel spacing" else spacing
    replacement = write_series(tmp_path / "one", values[2:3], other_spacing, position, other_direction, "1.2.3.9",
                               positions=[position])[0]
    shutil.copyfile(replacement, victim)
    assert len(files) == 6
    with pytest.raises(bv.VolumeFileError, match="not one volume"):
        bv.read_volume(folder)
    result = run("resample", folder, tmp_path / "out.nrrd")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert victim.name in result.stderr and not (tmp_path / "out.nrrd").exists()


def test_pyramid_resume_refuses_a_series_changed_since_the_interrupted_run(tmp_path):
    """One file standing for its series stamped itself only: another slice rewritten between the kill and --resume
    was mixed into the pyramid."""
    from bigvolume.ops.pyramid import pyramid
    folder = tmp_path / "series"
    files = write_series(folder, ct_values((40, 48, 48), 4), (0.5, 0.5, 1.0), (0, 0, 0), np.eye(3), "1.2.3.40")

    class Stop(Exception):
        pass

    def stop_at_level_1(_fraction, message):
        if message.startswith("level 1"):
            raise Stop
    with pytest.raises(Stop):
        pyramid(files[0], tmp_path / "out.ome.zarr", chunks=8, keep_partial=True, progress=stop_at_level_1)
    other = files[1]
    other.write_bytes(other.read_bytes())  # rewritten (same bytes, a later time)
    os.utime(other, ns=(time.time_ns() + 10**9,) * 2)
    done = run("pyramid", files[0], tmp_path / "out.ome.zarr", "--chunks", "8", "--resume")
    assert done.returncode == 1 and f"{other.name}: changed" in done.stderr, done.stderr


def _retag(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite bytes of the header (before the pixel data element) in place, same length: a tag number, a value."""
    data = path.read_bytes()
    pixels = data.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010)
    assert data[:pixels].count(old) == 1, (path, old)
    path.write_bytes(data[:pixels].replace(old, new) + data[pixels:])


@pytest.mark.parametrize("case", ["MONOCHROME1", "no PixelSpacing", "no ImageOrientationPatient", "complete"])
def test_what_gdcm_fills_in_or_inverts_is_said(tmp_path, caplog, case):
    """MONOCHROME1 slices are read inverted (ITK's display reading, not the modality values), a missing
    PixelSpacing becomes 1 x 1 mm, a missing ImageOrientationPatient the identity: each was silent."""
    files = write_series(tmp_path / "s", ct_values((4, 6, 7), 11), (1.0, 1.0, 2.0), (0, 0, 0), np.eye(3), "1.2.3.41")
    for path in files:
        if case == "MONOCHROME1":
            _retag(path, b"MONOCHROME2 ", b"MONOCHROME1 ")
        elif case == "no PixelSpacing":  # (0028,0030) -> (0028,0031), a tag GDCM does not read as the spacing
            _retag(path, b"\x28\x00\x30\x00", b"\x28\x00\x31\x00")  # (implicit VR: tag, then length)
        elif case == "no ImageOrientationPatient":
            _retag(path, b"\x20\x00\x37\x00", b"\x20\x00\x36\x00")
    with caplog.at_level("WARNING", logger="bigvolume"):
        volume = bv.read_volume(tmp_path / "s")
    said = {"MONOCHROME1": "4 slice file(s) MONOCHROME1 (brighter is lower): their values are read inverted",
            "no PixelSpacing": "no PixelSpacing in the files: pixels of 1 x 1 mm assumed",
            "no ImageOrientationPatient": "no ImageOrientationPatient in the files: the axes are assumed to be L, P, S",
            "complete": None}[case]
    if said is None:
        assert "note" not in caplog.text and "assumed" not in caplog.text and "MONOCHROME1" not in caplog.text
    else:
        assert said in caplog.text
    assert volume.geometry.spacing == pytest.approx((1.0, 1.0, 2.0))


@pytest.mark.parametrize("spacing, said", [((1.0, 1.0, 1.0), True), ((0.5, 0.5, 2.5), False), ((1.0, 1.0, 2.0), False)])
def test_a_multi_frame_file_at_gdcms_default_spacing_is_said(tmp_path, caplog, spacing, said):
    """GDCM reads 1 x 1 x 1 mm from an enhanced multi-frame file whose frames are out of order, uneven or give no
    spacing (SimpleITK's tags do not show the functional groups it reads): said, so that it can be checked."""
    image = sitk.GetImageFromArray(np.random.default_rng(3).integers(0, 4000, (4, 5, 7)).astype(np.uint16))
    image.SetSpacing(spacing)
    path = tmp_path / "frames.dcm"
    sitk.WriteImage(image, str(path))  # a multi-frame Secondary Capture, its geometry in functional groups
    with caplog.at_level("WARNING", logger="bigvolume"):
        volume = bv.read_volume(path)
    assert volume.geometry.spacing == pytest.approx(spacing)
    assert ("4 frames at a spacing of 1 mm, GDCM's default" in caplog.text) == said


def test_an_rgb_slice_in_a_gray_series_is_named_for_its_samples(tmp_path):
    """The refusal said "slice of 7x5 pixels in a series of 7x5": the size was the same, the samples were not."""
    files = write_series(tmp_path / "s", ct_values((4, 5, 7), 12), (1.0, 1.0, 2.0), (0, 0, 0), np.eye(3), "1.2.3.42")
    victim = dicom.find_series(tmp_path / "s").files[3]
    gray = sitk.ReadImage(str(victim))
    rgb = sitk.GetImageFromArray(np.zeros((5, 7, 3), np.uint8), isVector=True)
    for key in gray.GetMetaDataKeys():
        if not key.startswith(("0028|", "7fe0|")):
            rgb.SetMetaData(key, gray.GetMetaData(key))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(victim))
    writer.Execute(rgb)
    assert len(files) == 4
    with pytest.raises(bv.VolumeFileError, match=rf"{victim.name}: slice of 3 samples per pixel in a series of 1"):
        bv.read_volume(tmp_path / "s")


@pytest.mark.parametrize("without", [1, 4])
def test_slices_without_a_position_are_named(tmp_path, without):
    """GDCM puts a slice without ImagePositionPatient at 0, 0, 0: the refusal said another file lay off the grid
    (or, with none placed, that the slices did not advance)."""
    write_series(tmp_path / "s", ct_values((4, 5, 7), 13), (1.0, 1.0, 2.0), (0, 0, 5), np.eye(3), "1.2.3.43")
    ordered = dicom.find_series(tmp_path / "s").files
    for path in ordered[1:1 + without] if without < 4 else ordered:
        _retag(path, b"\x20\x00\x32\x00", b"\x20\x00\x31\x00")  # (0020,0032) -> (0020,0031), no position
    done = run("resample", tmp_path / "s", tmp_path / "out.nrrd")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    expected = ("a slice without ImagePositionPatient" if without == 1 else
                "4 of 4 slices without ImagePositionPatient")
    assert expected in lines[0] and (ordered[1].name if without == 1 else ".dcm: 4 of 4") in lines[0], lines


def enhanced_ct(path: Path, stored: np.ndarray, origin, spacing, direction, *, order=None, tilt=0.0,
                slopes=None) -> None:
    """An Enhanced CT Image (one file, its frames' geometry and rescale in functional group sequences), written with
    pydicom. ``stored`` (k, j, i) uint16; frame f holds slice ``order[f]``; ``tilt`` mm per slice along the column
    direction (a gantry tilt); ``slopes``: a rescale slope per slice in each frame's own group (else one, shared)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    direction = np.asarray(direction, float).reshape(3, 3)
    order = list(range(stored.shape[0])) if order is None else list(order)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = stored.shape[1], stored.shape[2], len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{spacing[1]}", f"{spacing[0]}"]
    measures.SliceThickness, measures.SpacingBetweenSlices = f"{spacing[2]}", f"{spacing[2]}"
    shared.PixelMeasuresSequence = Sequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([direction[:, 0], direction[:, 1]])]
    shared.PlaneOrientationSequence = Sequence([plane])

    def rescale(slope):
        item = Dataset()
        item.RescaleSlope, item.RescaleIntercept, item.RescaleType = f"{slope:g}", "-1024", "HU"
        return Sequence([item])
    if slopes is None:
        shared.PixelValueTransformationSequence = rescale(1)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    groups = []
    for k in order:
        group, place = Dataset(), Dataset()
        position = (np.asarray(origin, float) + direction[:, 2] * spacing[2] * k + direction[:, 1] * tilt * k)
        place.ImagePositionPatient = [f"{v:.6f}" for v in position]
        group.PlanePositionSequence = Sequence([place])
        if slopes is not None:
            group.PixelValueTransformationSequence = rescale(slopes[k])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.PixelData = np.ascontiguousarray(stored[order]).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", ["in order", "feet first", "out of order", "tilted", "rescaled per frame"])
def test_enhanced_multi_frame_frames_off_the_grid_or_rescaled_otherwise_are_refused(tmp_path, case, seed):
    """GDCM reads an enhanced multi-frame file on one grid from its first frames, with the first frame's rescale:
    a tilted file was read straight and frames rescaled otherwise read with the first one's slope (exit 0, no
    word). In order (either way) it reads right."""
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 3000, (6 + seed, 10, 14)).astype(np.uint16)
    direction, origin, spacing = rotation(0.3 * seed, 0.5), rng.uniform(-50, 50, 3), (0.4, 0.8, 1.7)
    frames = len(stored)
    order = {"feet first": range(frames - 1, -1, -1), "out of order": rng.permutation(frames)}.get(case)
    if case == "out of order" and np.all(np.diff(order) == 1):
        order = order[::-1].copy()
        order[[0, 1]] = order[[1, 0]]
    path = tmp_path / "enhanced.dcm"
    enhanced_ct(path, stored, origin, spacing, direction, order=order, tilt=0.6 if case == "tilted" else 0.0,
                slopes=list(range(1, frames + 1)) if case == "rescaled per frame" else None)
    result = run("resample", path, tmp_path / "out.nrrd", "--factor", "1")
    if case in ("in order", "feet first"):
        assert result.returncode == 0, result.stderr
        volume = io.read_volume(tmp_path / "out.nrrd")
        truth = bv.Volume.from_array(stored.astype(np.int32) - 1024, spacing=spacing, origin=origin,
                                     direction=direction)
        # every voxel of the truth found at its place (LPS) in the output, with its value
        ijk = np.indices(stored.shape[::-1]).reshape(3, -1).astype(float)
        places = truth.geometry.ijk_to_lps()[:3, :3] @ ijk + np.asarray(origin, float)[:, None]
        found = np.linalg.solve(volume.geometry.ijk_to_lps()[:3, :3],
                                places - np.asarray(volume.geometry.origin)[:, None])
        np.testing.assert_allclose(found, np.rint(found), atol=1e-3)
        i, j, k = np.rint(found).astype(int)
        np.testing.assert_array_equal(volume.array[k, j, i], truth.array[tuple(ijk[::-1].astype(int))])
        return
    assert result.returncode == 1 and not (tmp_path / "out.nrrd").exists()
    expected = "are rescaled otherwise" if case == "rescaled per frame" else "off the regular grid"
    assert result.stderr.strip().splitlines()[-1].startswith(f"bigvolume: error: {path}: ") and expected in (
        result.stderr), result.stderr


@pytest.mark.parametrize("element", ["FloatPixelData", "DoubleFloatPixelData"])
def test_a_series_of_float_pixel_data_is_refused_saying_what_it_holds(tmp_path, element):
    """Parametric maps store their voxels as (7FE0,0008) or (7FE0,0009), which GDCM does not read: the refusal said
    only "no readable DICOM series", after ITK's "No Series were found" warning."""
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    folder, series_uid = tmp_path / "map", generate_uid()
    folder.mkdir()
    for k in range(3):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        dataset.SeriesInstanceUID, dataset.Modality = series_uid, "MR"
        dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = 4, 5, 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.ImagePositionPatient, dataset.ImageOrientationPatient = [0, 0, k], [1, 0, 0, 0, 1, 0]
        dtype = np.float32 if element == "FloatPixelData" else np.float64
        dataset.BitsAllocated = 8 * np.dtype(dtype).itemsize
        setattr(dataset, element, np.arange(20, dtype=dtype).tobytes())
        dataset.save_as(folder / f"map{k}.dcm", enforce_file_format=True)
    result = run("resample", folder, tmp_path / "out.nrrd", "--factor", "2")
    assert result.returncode == 1 and not (tmp_path / "out.nrrd").exists()
    assert result.stderr.strip().splitlines() == [
        f"bigvolume: error: {folder}: no readable DICOM series: map0.dcm and 2 other file(s) of its 3 DICOM file(s) "
        "hold float pixel data (a parametric map), which GDCM cannot read"], result.stderr
