"""One reader, checked data: every file the streamed path reads is read the same on the default (in-memory) path,
and every compressed input that is cut or corrupted is refused by every command with one line and nothing written
(SimpleITK reads such files silently, with zeros where the data is missing)."""
import bz2
import gzip
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
from bigvolume.cli import commands as cli
from bigvolume.io import files as io
from bigvolume.io.layout import voxel_layout
from bigvolume.engine.sinks import file_sink
from bigvolume.io.slabs import open_slabs
from test_stream import INPUT_FORMS, _sitk_header_lines, sample_volume, write_form

BIGVOLUME = [sys.executable, "-m", "bigvolume"]


def snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()} | \
        {p.name: "folder" for p in folder.iterdir() if p.is_dir()}


def noise_volume(seed: int, shape=(20, 26, 31)) -> bv.Volume:
    """Noise compresses poorly, so every cut point lands inside the compressed stream."""
    array = np.random.default_rng(seed).integers(0, 60000, shape).astype(np.uint16)
    return bv.Volume.from_array(array, spacing=(0.8, 0.5, 1.25), origin=(-3.0, 7.5, 11.0))


def write_compressed(volume: bv.Volume, folder: Path, form: str) -> Path:
    """``volume`` in one of the compressed forms we read; returns the header path."""
    if form == "mhd-zlib":
        return io.write_volume(volume, folder / "v.mhd", compress=True)
    if form == "nrrd-bzip2":  # attached bzip2: written by hand, SimpleITK cannot write (or read) it
        header = _sitk_header_lines(volume, folder) + ["endian: little", "encoding: bzip2"]
        path = folder / "v.nrrd"
        path.write_bytes(("\n".join(header) + "\n\n").encode() + bz2.compress(volume.array.astype("<u2").tobytes()))
        return path
    return write_form(volume, folder, form)


COMPRESSED_FORMS = ["nrrd-gzip", "nhdr-gzip", "nii.gz", "mha-zlib", "mhd-zlib", "nrrd-bzip2", "nhdr-bzip2",
                    "nhdr-gzip-multimember"]
# Bytes at the end of a stream that hold its end marker and checksum.
TRAILER = {"gzip": 8, "zlib": 4, "bzip2": 10}
DAMAGES = ["cut 10%", "cut 50%", "cut 95%", "cut before trailer", "flip inside", "flip in trailer"]


def damage(header: Path, damage_kind: str) -> Path:
    """Cut or corrupt the compressed stream of ``header``'s volume in place; returns the damaged data file."""
    geometry, dtype, components = io.read_geometry(header)
    layout = voxel_layout(header, dtype, components, geometry.voxel_count)
    data = layout.files[0]
    content = bytearray(data.path.read_bytes())
    start, end = data.offset, len(content)
    trailer = TRAILER[layout.encoding]
    if damage_kind.startswith("cut "):
        keep = end - trailer if damage_kind == "cut before trailer" else \
            start + int((end - start) * float(damage_kind[4:-1]) / 100)
        del content[keep:]
    else:
        at = (start + end) // 2 if damage_kind == "flip inside" else end - trailer // 2 - 1
        content[at] ^= 0x5A
    data.path.write_bytes(bytes(content))
    return data.path


@pytest.mark.parametrize("form", INPUT_FORMS + ["mhd-zlib", "nrrd-bzip2"])
def test_default_path_reads_every_streamed_form_like_the_stream(tmp_path, form):
    volume = sample_volume(np.uint16)
    path = write_compressed(volume, tmp_path, form)
    loaded = bv.read_volume(path)
    np.testing.assert_array_equal(loaded.array, volume.array)
    tolerance = 1e-5 if form.startswith("nii") else 1e-9  # NIfTI keeps its matrix in float32
    assert loaded.geometry.isclose(volume.geometry, rtol=tolerance, atol=tolerance)
    with open_slabs(path) as reader:
        np.testing.assert_array_equal(reader.read(0, reader.slices), loaded.array)


def test_bzip2_nrrd_resamples_on_the_default_path_equal_to_stream(tmp_path):
    volume = sample_volume(np.int16, shape=(19, 22, 17))
    path = write_compressed(volume, tmp_path, "nrrd-bzip2")
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(path))  # what the default path used before: NrrdIO has no bzip2
    loaded = bv.resample_file(path, tmp_path / "memory.nrrd", (2, 3, 2))
    streamed = bv.resample_file(path, tmp_path / "stream.nrrd", (2, 3, 2), stream=True, memory_limit=1)
    assert loaded.stream_plan is None and streamed.stream_plan is not None
    a, b = bv.read_volume(tmp_path / "memory.nrrd"), bv.read_volume(tmp_path / "stream.nrrd")
    assert a.geometry == b.geometry
    assert a.geometry.isclose(volume.geometry.downsampled((2, 3, 2)), rtol=1e-12, atol=1e-12)
    assert np.abs(a.array.astype(int) - b.array.astype(int)).max() <= 1


@pytest.mark.parametrize("seed", [0, 1])
def test_components_on_a_slower_nrrd_axis_are_read_like_simpleitk(tmp_path, seed):
    """``kinds: domain domain domain list``: the values of one voxel are far apart in the file."""
    rng = np.random.default_rng(seed)
    components, shape = int(rng.integers(2, 5)), tuple(int(n) for n in rng.integers(3, 9, 3))
    planes = rng.integers(0, 1000, (components,) + shape).astype(np.uint16)  # (c, k, j, i) as stored
    path = tmp_path / "planar.nrrd"
    sizes = " ".join(str(n) for n in shape[::-1])
    path.write_bytes(f"NRRD0004\ntype: uint16\ndimension: 4\nsizes: {sizes} {components}\nkinds: domain domain "
                     "domain list\nendian: little\nencoding: raw\nspace: left-posterior-superior\nspace directions: "
                     "(0.5,0,0) (0,0.7,0) (0,0,1.1) none\nspace origin: (1,2,3)\n\n".encode() + planes.tobytes())
    loaded = bv.read_volume(path)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(loaded.array, expected)
    np.testing.assert_array_equal(loaded.array, np.moveaxis(planes, 0, -1))
    assert loaded.geometry.spacing == pytest.approx((0.5, 0.7, 1.1)) and loaded.geometry.origin == (1, 2, 3)
    with open_slabs(path) as reader:
        assert not reader.streams  # read whole, then served by slab
        np.testing.assert_array_equal(reader.read(1, 3), expected[1:3])


@pytest.mark.parametrize("name, text, expected", [
    ("time.nrrd", "dimension: 4\nsizes: 4 5 6 3\nkinds: domain domain domain time\n", "is a 4D image (3 "),
    ("range.nrrd", "dimension: 4\nsizes: 4 5 6 2\nkinds: domain domain domain domain\n", "is a 4D image (2 "),
])
def test_4d_nrrd_is_refused_in_plain_words(tmp_path, name, text, expected):
    path = tmp_path / name
    sizes = [int(n) for n in text.split("sizes: ")[1].split()[:4]]
    path.write_bytes(f"NRRD0004\ntype: uint8\n{text}endian: little\nencoding: raw\nspace: left-posterior-superior\n"
                     "space directions: (1,0,0) (0,1,0) (0,0,1) none\nspace origin: (0,0,0)\n\n".encode()
                     + bytes(int(np.prod(sizes))))
    with pytest.raises(bv.VolumeFileError, match=rf"{name}: {re.escape(expected)}.*a 3D volume is needed"):
        bv.read_volume(path)


def test_4d_nifti_is_refused_in_plain_words(tmp_path):
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.Image([4, 5, 6, 7], sitk.sitkInt16), str(path))
    with pytest.raises(bv.VolumeFileError, match=r"is a 4D image \(7 components or time points of 4x5x6\)"):
        bv.read_volume(path)


@pytest.mark.parametrize("form", ["nrrd spacings", "nrrd gzip", "mhd oblique", "mha"])  # (NIfTI: read as 3D already)
def test_a_4d_file_of_one_time_point_is_its_3d_volume(tmp_path, form):
    """sizes 4 5 6 1: a 3D volume written as 4D (one time point or a trailing axis of 1), which SimpleITK reads as
    4D, was refused ("1 components or time points"). It is read as the 3D volume, with the first three axes'
    geometry, in memory and streamed; through resample too."""
    rng = np.random.default_rng(len(form))
    values = rng.integers(0, 60000, (6, 5, 4)).astype(np.uint16)
    if form.startswith("nrrd"):
        path = tmp_path / "v.nrrd"
        data = values.tobytes() if form == "nrrd spacings" else gzip.compress(values.tobytes())
        path.write_bytes(f"NRRD0004\ntype: uint16\ndimension: 4\nsizes: 4 5 6 1\nspacings: 0.5 0.7 1.1 1\n"
                         f"endian: little\nencoding: {'raw' if form == 'nrrd spacings' else 'gzip'}\n\n".encode()
                         + data)
    elif form == "mhd oblique":
        path = tmp_path / "v.mhd"
        (tmp_path / "v.raw").write_bytes(values.tobytes())
        path.write_text("ObjectType = Image\nNDims = 4\nDimSize = 4 5 6 1\nElementSpacing = 0.5 0.7 1.1 1\n"
                        "Offset = 1 -2 3 0\nTransformMatrix = 0 1 0 0 1 0 0 0 0 0 -1 0 0 0 0 1\n"
                        "ElementType = MET_USHORT\nElementDataFile = v.raw\n")
    else:
        image = sitk.JoinSeries([sitk.GetImageFromArray(values)])  # 4D, size 4 5 6 1
        image.SetSpacing((0.5, 0.7, 1.1, 1.0))
        image.SetOrigin((1.0, -2.0, 3.0, 0.0))
        path = tmp_path / "v.mha"
        sitk.WriteImage(image, str(path), True)
    reference = sitk.ReadImage(str(path))
    assert reference.GetDimension() == 4 and reference.GetSize()[3] == 1  # the case
    loaded = bv.read_volume(path)
    np.testing.assert_array_equal(loaded.array, values)
    assert loaded.geometry.dimensions == (4, 5, 6)
    assert loaded.geometry.spacing == pytest.approx(reference.GetSpacing()[:3])
    assert loaded.geometry.origin == pytest.approx(reference.GetOrigin()[:3])
    np.testing.assert_allclose(loaded.geometry.direction, np.array(reference.GetDirection()).reshape(4, 4)[:3, :3])
    with open_slabs(path) as reader:
        assert reader.geometry == loaded.geometry
        np.testing.assert_array_equal(np.concatenate([reader.read(0, 2), reader.read(2, 6)]), values)
    out = bv.resample_file(path, tmp_path / "out.nrrd", 2, method="nearest").output_path
    assert bv.read_volume(out).geometry.dimensions == (2, 3, 3)


def test_bad_byte_skip_is_one_plain_line(tmp_path):
    volume = sample_volume(np.uint16)
    header = write_form(volume, tmp_path, "nhdr-byteskip")
    header.write_text(header.read_text().replace("byte skip: 123", "byte skip: 99999999"))
    with pytest.raises(bv.VolumeFileError, match=r"too short: expected \d+ bytes .* the file has \d+ bytes"):
        bv.read_volume(header)
    header.write_text(header.read_text().replace("byte skip: 99999999", "byte skip: lots"))
    with pytest.raises(bv.VolumeFileError, match="v.nhdr: not a readable volume .*lots"):
        bv.read_volume(header)


@pytest.mark.parametrize("form", COMPRESSED_FORMS)
@pytest.mark.parametrize("damage_kind", DAMAGES)
def test_damaged_compressed_data_is_refused_by_both_readers(tmp_path, form, damage_kind):
    header = write_compressed(noise_volume(COMPRESSED_FORMS.index(form)), tmp_path, form)
    data_file = damage(header, damage_kind)
    with pytest.raises(bv.VolumeFileError) as refused:
        bv.read_volume(header)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and str(data_file) in message
    assert "corrupt compressed data" in message or \
        ("compressed data ends after" in message and "bytes of voxels" in message)
    with pytest.raises(bv.VolumeFileError):
        with open_slabs(header) as reader:
            reader.read(0, reader.slices)


@pytest.mark.parametrize("form", COMPRESSED_FORMS)
@pytest.mark.parametrize("appended", [b"\0" * 512, b"junk\n", b"x"])
def test_bytes_appended_after_intact_compressed_data_are_named_not_called_corrupt(tmp_path, form, appended):
    """The data before them decode whole, with their checksums: the refusal says what follows them and where,
    in both readers, instead of calling the data corrupt."""
    header = write_compressed(noise_volume(len(appended)), tmp_path, form)
    geometry, dtype, components = io.read_geometry(header)
    data_file = voxel_layout(header, dtype, components, geometry.voxel_count).files[-1].path
    end = data_file.stat().st_size
    with open(data_file, "ab") as handle:
        handle.write(appended)
    count = f"{len(appended)} byte{'s' if len(appended) > 1 else ''}"
    expected = rf"^{re.escape(str(data_file))}: {count} after the end of its \w+ data \(at byte {end}\) (is|are) not"
    with pytest.raises(bv.VolumeFileError, match=expected):
        bv.read_volume(header)
    with pytest.raises(bv.VolumeFileError, match=expected):
        with open_slabs(header) as reader:
            reader.read(0, reader.slices)


def run_in_process(capfd, *args) -> tuple[int, list[str]]:
    """The command line's main() in this process (the same code as the installed command, without a new
    interpreter per case); returns the exit code and the lines on stderr."""
    code = cli.main([str(a) for a in args])
    return code, capfd.readouterr().err.strip().splitlines()


def commands(source: Path, folder: Path) -> dict:
    # --device cpu: no note about CUDA on stderr (the one line must be the error)
    return {"resample": ["resample", source, folder / "out.nrrd", "--factor", "2", "--device", "cpu"],
            "dehaze": ["dehaze", source, folder / "out.nrrd"],
            "reduce-bits": ["reduce-bits", source, folder / "out.nrrd", "--bits", "8"],
            "preview": ["preview", source, folder / "out.png"]}


@pytest.mark.parametrize("form", COMPRESSED_FORMS)
@pytest.mark.parametrize("damage_kind", DAMAGES)
def test_every_command_refuses_damaged_input_with_one_line(tmp_path, capfd, form, damage_kind):
    source_folder, out_folder = tmp_path / "in", tmp_path / "out"
    source_folder.mkdir(), out_folder.mkdir()
    header = write_compressed(noise_volume(len(damage_kind)), source_folder, form)
    data_file = damage(header, damage_kind)
    damaged = snapshot(source_folder)
    for name, args in commands(header, out_folder).items():
        code, lines = run_in_process(capfd, *args)
        assert code == 1, (name, lines)
        assert len(lines) == 1 and lines[0].startswith("bigvolume: error: ") and str(data_file) in lines[0], \
            (name, lines)
        assert snapshot(out_folder) == {}, name
        assert snapshot(source_folder) == damaged  # the input is never touched


@pytest.fixture(scope="module")
def head_cut_to_40_percent(tmp_path_factory, head_mri):
    folder = tmp_path_factory.mktemp("head")
    content = head_mri.read_bytes()
    (folder / "ch2_cut.nii.gz").write_bytes(content[:len(content) * 40 // 100])
    return folder / "ch2_cut.nii.gz"


def test_real_mri_is_read_like_simpleitk(head_mri):
    ours, image = bv.read_volume(head_mri), sitk.ReadImage(str(head_mri))
    np.testing.assert_array_equal(ours.array, sitk.GetArrayFromImage(image))
    assert ours.geometry.dimensions == image.GetSize()


@pytest.mark.parametrize("command", ["resample", "dehaze", "reduce-bits", "preview"])
def test_real_mri_cut_to_40_percent_is_refused_by_the_installed_command(tmp_path, head_cut_to_40_percent, command):
    image = sitk.ReadImage(str(head_cut_to_40_percent))  # SimpleITK reads it without a word
    assert sitk.GetArrayViewFromImage(image)[-1].max() == 0  # ... with zeros for the missing slices
    args = commands(head_cut_to_40_percent, tmp_path)[command]
    result = subprocess.run(BIGVOLUME + [str(a) for a in args], capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "ch2_cut.nii.gz: compressed data ends after" in lines[0] and "bytes of voxels" in lines[0]
    assert list(tmp_path.iterdir()) == []


# (input form, the header renamed to, output): the output writes a file the input consists of.
SHARED_FILE_CASES = [("nhdr", None, "v.mhd"), ("mhd", None, "v.nhdr"), ("nhdr", "a.nhdr", "v.nhdr"),
                     ("nhdr-list", None, "slice_001.nhdr"), ("nhdr-printf", None, "part02.mhd"),
                     ("mhd-list-bigendian", None, "s3.nhdr")]


@pytest.mark.parametrize("form, header_name, output_name", SHARED_FILE_CASES, ids=lambda c: str(c))
def test_every_command_refuses_an_output_that_writes_a_file_of_the_input(tmp_path, capfd, form, header_name,
                                                                           output_name):
    """An output whose header or data file is a data file the input's header names (e.g. in.nhdr -> in.mhd: both
    use in.raw) would replace the input after reading it."""
    header = write_form(sample_volume(np.uint16), tmp_path, form)
    if header_name:
        header = header.rename(tmp_path / header_name)
    before = snapshot(tmp_path)
    output = tmp_path / output_name
    data_file = output.with_suffix(".raw")  # named by the input's header; the output's writer would write it too
    cases = {"resample in memory": ["resample", header, output, "--no-stream", "--device", "cpu"],
             "resample streamed": ["resample", header, output, "--stream", "--memory-limit", "1", "--device", "cpu"],
             "dehaze": ["dehaze", header, output],
             "reduce-bits": ["reduce-bits", header, output, "--bits", "8"]}
    for name, args in cases.items():
        code, lines = run_in_process(capfd, *args)
        assert code == 1, (name, lines)
        assert len(lines) == 1 and f"overwrite the input's data file {data_file}" in lines[0], (name, lines)
        assert snapshot(tmp_path) == before, name


def test_pyramid_refuses_to_replace_a_data_file_of_the_input(tmp_path, capfd):
    header = write_form(sample_volume(np.uint16), tmp_path, "nhdr")
    header.write_text(header.read_text().replace("data file: v.raw", "data file: voxels"))
    (tmp_path / "v.raw").rename(tmp_path / "voxels")  # a name that is no volume suffix: a pyramid may be named so
    before = snapshot(tmp_path)
    code, lines = run_in_process(capfd, "pyramid", header, tmp_path / "voxels", "--overwrite")
    assert code == 1 and len(lines) == 1 and "would overwrite the input's data file" in lines[0], lines
    assert snapshot(tmp_path) == before


def write_nifti_with_scaling(path: Path, array: np.ndarray, slope: float, intercept: float) -> Path:
    """A NIfTI file from SimpleITK's writer, its ``scl_slope``/``scl_inter`` then set (nibabel writes NaN for
    unscaled data)."""
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path.with_suffix(".tmp.nii")))
    content = bytearray(path.with_suffix(".tmp.nii").read_bytes())
    path.with_suffix(".tmp.nii").unlink()
    struct.pack_into("<2f", content, 112, slope, intercept)
    path.write_bytes(gzip.compress(bytes(content)) if path.name.endswith(".gz") else bytes(content))
    return path


NAN, INF = float("nan"), float("inf")


def test_an_rgb_nifti_with_scaling_is_refused(tmp_path):
    """SimpleITK reads an RGB NIfTI with scl_slope 2 as uninitialised memory (different on every read)."""
    rgb = np.random.default_rng(5).integers(0, 255, (4, 5, 6, 3)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.nii"))
    assert bv.read_volume(tmp_path / "rgb.nii").array.shape == (4, 5, 6, 3)  # unscaled: read
    content = bytearray((tmp_path / "rgb.nii").read_bytes())
    struct.pack_into("<2f", content, 112, 2.0, 0.0)
    (tmp_path / "rgb.nii").write_bytes(bytes(content))
    with pytest.raises(bv.VolumeFileError, match=r"rgb\.nii: an RGB NIfTI with scl_slope 2 .* refused"):
        bv.read_volume(tmp_path / "rgb.nii")


@pytest.mark.parametrize("twice", ["BinaryDataByteOrderMSB = False\nBinaryDataByteOrderMSB = True",
                                   "ElementByteOrderMSB = False\nElementByteOrderMSB = True",
                                   "HeaderSize = 3\nHeaderSize = 0",
                                   "CompressedData = True\nCompressedData = False"])
def test_a_metaimage_key_written_twice_counts_as_metaio_counts_it(tmp_path, twice):
    """MetaIO takes the last of a key written twice; we took the first (bytes swapped, data shifted by 3 bytes, raw
    data refused as corrupt zlib)."""
    values = np.random.default_rng(9).integers(-3000, 3000, (3, 4, 5)).astype(">i2")
    path = tmp_path / "twice.mha"
    path.write_bytes(("ObjectType = Image\nNDims = 3\nDimSize = 5 4 3\nElementType = MET_SHORT\n"
                      f"{twice}\nElementDataFile = LOCAL\n").encode()
                     + (values if "MSB" in twice else values.astype("<i2")).tobytes())
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(expected, values)  # MetaIO's reading: the last value of the key
    np.testing.assert_array_equal(bv.read_volume(path).array, expected)
    with open_slabs(path) as reader:
        np.testing.assert_array_equal(reader.read(0, 3), expected)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8])
@pytest.mark.parametrize("slope, intercept", [(NAN, NAN), (NAN, 0), (INF, 0), (-INF, 3), (2, NAN), (2, -INF),
                                              (0, 5), (0, NAN), (2, 3), (0.3, -7.1), (0.0123, 1000.5),
                                              (-1.7, 0.3), (1e-20, 5), (-1e-17, 3), (1e-30, 0)], ids=str)
def test_nifti_scaling_fields_are_applied_as_simpleitk_applies_them(tmp_path, suffix, dtype, slope, intercept):
    """Non-finite fields count as 0 and a slope of 0 or below double's epsilon as 1 (ITK): NaN scaling (as nibabel
    writes it) leaves the data as is; 1e-20 made every voxel the intercept. Scaled values are rounded once, from
    double precision, as ITK's are: x slope then + intercept in float32 put a quarter of them 1 ulp off."""
    rng = np.random.default_rng(2)
    array = rng.integers(-100 if np.dtype(dtype).kind != "u" else 0, 100, (9, 10, 11)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        array += rng.choice([0, 0.25, 0.1], array.shape).astype(dtype)
    path = write_nifti_with_scaling(tmp_path / f"scaled{suffix}", array, slope, intercept)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert np.isfinite(expected).all()
    read = bv.read_volume(path).array
    assert read.dtype == expected.dtype
    np.testing.assert_array_equal(read, expected)
    with open_slabs(path) as reader:
        np.testing.assert_array_equal(reader.read(0, reader.slices), expected)


@pytest.mark.parametrize("command", ["resample", "dehaze", "reduce-bits"])
def test_staging_folders_a_killed_run_left_are_said_and_named_when_the_disk_is_short(tmp_path, command):
    """kill -9 leaves a run's staging folder (nothing can remove it): later runs neither removed nor mentioned
    them, and a full disk was refused without saying what held the space."""
    import shutil as shutil_module
    from bigvolume.engine import sinks
    from bigvolume.testing import quality
    source = bv.write_volume(bv.Volume.from_array(quality.microct_phantom(24)), tmp_path / "in.nrrd")
    out = tmp_path / "out.nhdr"
    left = tmp_path / ".out.nhdr.partial-k1llrd9x"
    left.mkdir()
    (left / "out.raw").write_bytes(b"\0" * 5000)
    extra = {"reduce-bits": ["--bits", "8"], "resample": [], "dehaze": []}[command]
    done = subprocess.run([sys.executable, "-m", "bigvolume", command, str(source), str(out), *extra],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 3), done.stderr
    said = [line for line in done.stderr.splitlines() if "staging folder" in line]
    assert said == [f"bigvolume: note: {out}: 1 staging folder of interrupted runs writing out.nhdr lies beside it, "
                    "holding 4.88 KiB (.out.nhdr.partial-k1llrd9x): remove them unless another run is writing it now"]
    assert left.is_dir()  # said, not removed: another run may be writing it

    class Usage:
        free = 10
    real = shutil_module.disk_usage
    try:
        shutil_module.disk_usage = lambda where: Usage()
        with pytest.raises(bv.VolumeFileError, match=r"not enough disk space: .*; 1 staging folder of interrupted "
                                                     r"runs writing out.nhdr lies beside it, holding 4.88 KiB"):
            sinks.check_disk_space(out, 1000)
    finally:
        shutil_module.disk_usage = real


def _open_files_under(folder: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="reads Linux's list of open files")
@pytest.mark.parametrize("name", ["out.nrrd", "out.nhdr", "out.nii.gz"])
@pytest.mark.parametrize("fail_after", [0, 1, -1])
def test_a_compressed_output_the_disk_cannot_take_leaves_no_file_open(tmp_path, monkeypatch, name, fail_after):
    """A full disk when the compressor's last bytes were written left the data file open (its close came after the
    write that failed); Windows removes no open file, so the staging folder with the partial output stayed behind
    while the message said "nothing was written". Emulated: the disk fills after ``fail_after`` writes (-1: at the
    last write, counted in a run on a disk with room)."""
    import errno
    from bigvolume.io import slab_writers

    real_open, writes = open, []

    class FillingDisk:
        def __init__(self, handle):
            self._handle = handle

        def write(self, data):
            if len(data) and len(writes) >= fail_after:
                raise OSError(errno.ENOSPC, "No space left on device")
            writes.append(len(data))
            return self._handle.write(data)

        def __getattr__(self, attribute):
            return getattr(self._handle, attribute)

    def opened(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FillingDisk(handle) if "w" in mode and str(path).endswith((".nrrd", ".gz")) else handle
    monkeypatch.setattr(slab_writers, "open", opened, raising=False)
    volume = noise_volume(fail_after % 7, shape=(12, 20, 24))
    if fail_after == -1:
        fail_after = 10**9
        (tmp_path / "room").mkdir()
        with file_sink(tmp_path / "room" / name, volume.geometry, volume.array.dtype, compress=True) as writer:
            writer.write(volume.array)
        shutil.rmtree(tmp_path / "room")
        fail_after, writes[:] = len(writes) - 1, []
        assert fail_after >= 1
    with pytest.raises(bv.VolumeFileError, match="nothing was written"):
        with file_sink(tmp_path / name, volume.geometry, volume.array.dtype, compress=True) as writer:
            for k in range(0, 12, 4):
                writer.write(volume.array[k:k + 4])
    assert _open_files_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
