"""Volume files: every format round-trips voxels, type and geometry; writes are atomic; errors name the file."""
import math
import os
import re
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
from bigvolume.io import files as io
from bigvolume.io.slabs import open_slabs

FORMATS = [".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd"]


def oblique_volume(dtype=np.int16, components=1):
    a = math.radians(20)
    direction = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    rng = np.random.default_rng(3)
    shape = (7, 9, 11) + ((components,) if components > 1 else ())
    array = rng.integers(-500, 500, shape).astype(dtype)
    return bv.Volume.from_array(array, spacing=(0.5, 0.75, 2.0), origin=(-30.5, 12.25, 7.0), direction=direction)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32, np.float64])
def test_round_trip(tmp_path, suffix, dtype):
    volume = oblique_volume(dtype)
    path = io.write_volume(volume, tmp_path / f"v{suffix}")
    back = bv.read_volume(path)
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.array, volume.array)
    tolerance = 1e-5 if suffix.startswith(".nii") else 1e-12  # NIfTI stores its matrix in float32
    assert back.geometry.isclose(volume.geometry, rtol=tolerance, atol=tolerance)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".nii.gz"])
def test_rgb_round_trip(tmp_path, suffix):
    volume = oblique_volume(np.uint8, components=3)
    back = bv.read_volume(io.write_volume(volume, tmp_path / f"rgb{suffix}"))
    assert back.components == 3
    np.testing.assert_array_equal(back.array, volume.array)


def test_compression_defaults(tmp_path):
    volume = bv.Volume.from_array(np.zeros((40, 40, 40), np.uint16))
    compressed = io.file_size(io.write_volume(volume, tmp_path / "a.nrrd"))
    raw = io.file_size(io.write_volume(volume, tmp_path / "b.nhdr"))
    assert compressed < 10_000 < raw == pytest.approx(40 ** 3 * 2, rel=0.05)
    assert (tmp_path / "b.raw").exists() or (tmp_path / "b.raw.gz").exists()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_writer(image, path, useCompression=False):
        with open(path, "wb") as partial:
            partial.write(b"NRRD0004\n")  # half a file, then the disk "fills up"
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sitk, "WriteImage", broken_writer)
    with pytest.raises(bv.VolumeFileError, match="No space left"):
        io.write_volume(oblique_volume(), tmp_path / "out.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_overwrite(tmp_path, monkeypatch):
    target = io.write_volume(oblique_volume(), tmp_path / "out.nrrd")
    before = target.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(bv.VolumeFileError):
        io.write_volume(oblique_volume(np.float32), target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.nrrd"]



@pytest.mark.parametrize("name", ["v2.nii", "v2.nii.gz"])
def test_a_nifti_2_file_is_named_as_such(tmp_path, name):
    """SimpleITK 2.x has no NIfTI-2 reader ("no reader knows this kind of file"): say what the file is instead."""
    import gzip
    header = bytearray(544)
    header[0:4] = (540).to_bytes(4, "little")
    header[4:12] = b"n+2\0\r\n\x1a\n"
    header[12:14], header[14:16] = (4).to_bytes(2, "little"), (16).to_bytes(2, "little")  # int16
    header[16:80] = np.array([3, 4, 5, 6, 1, 1, 1, 1], "<i8").tobytes()
    header[104:168] = np.array([1, 1, 1, 1, 1, 1, 1, 1], "<f8").tobytes()
    header[168:176] = (544).to_bytes(8, "little")
    content = bytes(header) + np.zeros(4 * 5 * 6, "<i2").tobytes()
    (tmp_path / name).write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    with pytest.raises(bv.VolumeFileError, match=rf"{name}: a NIfTI-2 file, which SimpleITK cannot read"):
        bv.read_volume(tmp_path / name)

def test_read_errors_name_the_file_and_problem(tmp_path):
    with pytest.raises(bv.VolumeFileError, match="missing.nrrd: no such file"):
        bv.read_volume(tmp_path / "missing.nrrd")
    text = tmp_path / "notes.nrrd"
    text.write_text("this is not a volume\n")
    with pytest.raises(bv.VolumeFileError, match="notes.nrrd: not a readable volume"):
        bv.read_volume(text)
    flat = tmp_path / "slice.png"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkUInt8), str(flat))
    with pytest.raises(bv.VolumeFileError, match="slice.png: is a 2D image"):
        bv.read_volume(flat)
    with pytest.raises(bv.VolumeFileError, match="is a folder"):
        bv.read_volume(tmp_path)


def test_read_geometry_reads_only_the_header(tmp_path):
    volume = oblique_volume(np.float32, components=3)
    path = io.write_volume(volume, tmp_path / "v.nhdr")
    geometry, dtype, components = io.read_geometry(path)
    assert geometry.isclose(volume.geometry) and dtype == np.float32 and components == 3


def test_output_checks(tmp_path):
    source = io.write_volume(oblique_volume(), tmp_path / "in.nhdr")
    with pytest.raises(bv.VolumeFileError, match="overwrite the input"):
        io.check_output_path(tmp_path / "in.nhdr", inputs=[source])
    with pytest.raises(bv.VolumeFileError, match="overwrite the input's data file"):
        io.check_output_path(tmp_path / "in.mhd", inputs=[tmp_path / "in.raw"])
    with pytest.raises(bv.VolumeFileError, match="unsupported output format"):
        io.check_output_path(tmp_path / "out.png")
    with pytest.raises(bv.VolumeFileError, match="does not exist"):
        io.check_output_path(tmp_path / "nowhere" / "out.nrrd")
    with pytest.raises(bv.VolumeFileError, match="cannot write"):
        io.check_output_path("/proc/self/out.nrrd")


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".nii", ".mha", ".mhd"])
def test_uncompressed_inputs_are_memory_mapped_read_only(tmp_path, suffix):
    volume = oblique_volume(np.uint16)
    path = io.write_volume(volume, tmp_path / f"v{suffix}", compress=False)
    back = bv.read_volume(path)
    assert isinstance(back.array, np.memmap) and not back.array.flags.writeable
    np.testing.assert_array_equal(back.array, volume.array)


def test_short_raw_data_is_refused_with_the_file_named(tmp_path):
    path = io.write_volume(oblique_volume(np.uint16), tmp_path / "v.nhdr")
    raw = tmp_path / "v.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(bv.VolumeFileError, match=r"v\.nhdr: data file .*v\.raw too short: expected 1386 bytes .*"
                                                  r"the file has 100 bytes"):
        bv.read_volume(path)


@pytest.mark.parametrize("components", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_a_nii_gz_is_read_from_itself_not_from_a_nii_beside_it(tmp_path, dtype, components):
    """ITK's NIfTI reader, given scan.nii.gz, reads the voxels of a scan.nii beside it (vector volumes, which
    SimpleITK reads for us)."""
    volume = oblique_volume(dtype, components)
    io.write_volume(volume, tmp_path / "scan.nii.gz")
    decoy = bv.Volume.from_array(np.full(volume.array.shape, 7, np.uint8), spacing=(2, 2, 2))
    io.write_volume(decoy, tmp_path / "scan.nii")
    back = bv.read_volume(tmp_path / "scan.nii.gz")
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.isclose(volume.geometry, rtol=1e-5, atol=1e-5)


def write_read_whole_form(folder, form: str, array: np.ndarray):
    """A file that SimpleITK reads whole for us (no layout of ours): ASCII NRRD, vector NIfTI."""
    if form == "ascii nrrd":
        path = folder / "ascii.nrrd"
        header = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {' '.join(map(str, array.shape[::-1]))}\n"
                  "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nencoding: ascii\n\n")
        path.write_text(header + " ".join(str(int(v)) for v in array.ravel()) + "\n")
        return path, array
    vector = np.stack([array, array + 1, array + 2], axis=-1).astype(np.float32)
    return io.write_volume(bv.Volume.from_array(vector), folder / f"vector{form[len('vector'):]}"), vector


@pytest.mark.parametrize("form", ["ascii nrrd", "vector.nii", "vector.nii.gz"])
def test_an_array_taken_from_a_volume_read_by_simpleitk_keeps_its_memory(tmp_path, form):
    """np.asarray() of the array (a view of the SimpleITK image's buffer) must keep the image alive: numpy collapses
    chains of views, and an array subclass holding the image was collapsed away."""
    import gc
    import weakref
    path, expected = write_read_whole_form(tmp_path, form, (np.arange(20 * 21 * 22) % 251).reshape(20, 21, 22))
    volume = bv.read_volume(path)
    image = weakref.ref(volume.owner)
    plain = np.asarray(volume.array)[1:]
    del volume
    gc.collect()
    filler = [np.full(expected.shape, -1, expected.dtype) for _ in range(10)]  # reuses freed memory, if any
    assert image() is not None
    np.testing.assert_array_equal(plain, expected[1:])
    del filler


def _sheared_nrrd(path):
    """A raw NRRD whose j axis leans towards i (space directions not at right angles)."""
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    header = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 6 5 4\n"
              "space directions: (1,0,0) (0.5,1,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
              "encoding: raw\nspace origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + data.astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_sheared_grid_is_not_written_to_nifti(tmp_path, suffix, stream):
    """ITK's NIfTI writer made the axes orthogonal (every voxel but the origin moved 0.24 mm per voxel), saying
    only a warning on stderr; .nrrd keeps the shear."""
    import subprocess
    import sys
    source = _sheared_nrrd(tmp_path / "sheared.nrrd")
    out = tmp_path / f"out{suffix}"
    done = subprocess.run([sys.executable, "-m", "bigvolume", "resample", str(source), str(out), "--factor", "1",
                           "--stream" if stream else "--no-stream"], capture_output=True, text=True)
    assert done.returncode == 1 and "not at right angles" in done.stderr and str(out) in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(bv.VolumeFileError, match="not at right angles"):
        io.write_volume(io.read_volume(source), tmp_path / f"direct{suffix}")
    kept = io.write_volume(io.read_volume(source), tmp_path / "kept.nrrd")
    np.testing.assert_allclose(io.read_geometry(kept)[0].direction, io.read_geometry(source)[0].direction, atol=1e-9)


def test_complex_voxels_are_refused_in_one_line(tmp_path):
    """SimpleITK writes complex64 as a NRRD of kind complex: read_geometry raised a RuntimeError (a traceback)."""
    path = tmp_path / "complex.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray((np.ones((4, 5, 6)) + 1j).astype(np.complex64)), str(path))
    for read in (io.read_geometry, io.read_volume):
        with pytest.raises(bv.VolumeFileError, match="complex voxels"):
            read(path)


@pytest.mark.parametrize("dtype", [np.float16, np.bool_, np.complex64])
@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".nii.gz", ".mha"])
def test_a_voxel_type_no_format_stores_is_refused_in_one_line(tmp_path, dtype, suffix):
    """float16 (an OME-Zarr input's type) and booleans reached SimpleITK, whose TypeError was a traceback."""
    volume = bv.Volume.from_array(np.zeros((3, 4, 5), dtype))
    with pytest.raises(bv.VolumeFileError, match=rf"out{re.escape(suffix)}: pixel type .* cannot be written"):
        bv.write_volume(volume, tmp_path / f"out{suffix}")
    assert list(tmp_path.iterdir()) == []


def _nifti_with_pixdim(path, pixdim, qform_code=1, sform_code=0):
    """A float32 NIfTI-1 written byte by byte, with the pixdim (spacing) given, signs included."""
    import struct
    array = np.random.default_rng(len(str(path))).normal(1000, 100, (6, 5, 4)).astype(np.float32)
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 4, 5, 6, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 16, 32)
    struct.pack_into("<8f", header, 76, 1, *pixdim, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<hh", header, 252, qform_code, sform_code)
    struct.pack_into("<6f", header, 256, 0, 0, 0, 10, 20, 30)
    struct.pack_into("<12f", header, 280, pixdim[0], 0, 0, 10, 0, pixdim[1], 0, 20, 0, 0, pixdim[2], 30)
    header[344:348] = b"n+1\0"
    path.write_bytes(bytes(header) + b"\0" * 4 + array.tobytes())
    return array


@pytest.mark.parametrize("pixdim", [(-0.5, 0.7, 2.0), (0.5, -0.7, 2.0), (0.5, 0.7, -2.0), (-0.5, -0.7, -2.0)])
@pytest.mark.parametrize("qform_code, sform_code", [(1, 0), (0, 1), (0, 0)])
def test_a_negative_nifti_pixdim_reads_as_itk_reads_it(tmp_path, pixdim, qform_code, sform_code):
    """A negative pixdim was refused ("spacing must be positive") though ITK, and so Slicer, read the file: a
    flipped axis, spacing positive, the direction reversed. Ours now equals SimpleITK.ReadImage, in memory and
    streamed."""
    path = tmp_path / "neg.nii"
    array = _nifti_with_pixdim(path, pixdim, qform_code, sform_code)
    reference = sitk.ReadImage(str(path))
    volume = bv.read_volume(path)
    assert np.allclose(volume.geometry.spacing, reference.GetSpacing())
    assert np.allclose(volume.geometry.direction.ravel(), reference.GetDirection())
    assert np.allclose(volume.geometry.origin, reference.GetOrigin())
    np.testing.assert_array_equal(volume.array, array)
    streamed = bv.resample_file(path, tmp_path / "s.nrrd", 2, stream=True)
    in_memory = bv.resample_file(path, tmp_path / "m.nrrd", 2, stream=False)
    a, b = bv.read_volume(streamed.output_path), bv.read_volume(in_memory.output_path)
    assert a.geometry.isclose(b.geometry) and np.allclose(a.array, b.array, atol=1e-3)


METAIMAGE_HEAD = ("ObjectType = Image\nNDims = 3\nBinaryData = {binary}\n{order}CompressedData = False\n"
                  "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = -4 2 9.5\nElementSpacing = 0.5 0.75 1.25\n"
                  "DimSize = 5 6 7\nElementType = MET_SHORT\n{extra}ElementDataFile = {data}\n")


def _metaimage_cases(folder):
    """MetaImage files MetaIO reads in its own way: (name, path). The voxels are 3k - 100 in C order."""
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(7, 6, 5) * 3 - 100
    little, big = array.astype("<i2").tobytes(), array.astype(">i2").tobytes()
    head_size = len(METAIMAGE_HEAD.format(binary="True", order="", extra="HeaderSize = 999\n", data="LOCAL"))
    cases = {  # name -> (header fields, bytes after the header)
        "msb 1": (dict(order="BinaryDataByteOrderMSB = 1\n"), big),
        "msb T": (dict(order="BinaryDataByteOrderMSB = T\n"), big),
        "msb true": (dict(order="ElementByteOrderMSB = true\n"), big),
        "msb keys disagree": (dict(order="BinaryDataByteOrderMSB = False\nElementByteOrderMSB = True\n"), little),
        "msb key in lower case": (dict(order="binarydatabyteordermsb = True\n"), little),
        "text voxels": (dict(binary="False"), " ".join(map(str, array.ravel())).encode() + b"\n"),
        "header size of the header": (dict(extra=f"HeaderSize = {head_size}\n"), little),
        "header size 1024, padded, bytes after": (dict(extra="HeaderSize = 1024\n"), None),
        "data file local": (dict(data="local"), little),
    }
    for name, (fields, data) in cases.items():
        path = folder / (name.replace(" ", "_") + ".mha")
        text = METAIMAGE_HEAD.format(**{"binary": "True", "order": "", "extra": "", "data": "LOCAL", **fields})
        if data is None:  # the voxels at byte 1024, then other bytes
            data = b" " * (1024 - len(text)) + little + bytes(range(256)) * 8
        path.write_bytes(text.encode() + data)
        yield name, path, array


def test_metaimage_headers_read_as_metaio_reads_them(tmp_path):
    """BinaryDataByteOrderMSB = 1 or T read little-endian; BinaryData = False (text) read as binary; a LOCAL file's
    HeaderSize counted from the end of the header, not the file's start (MetaIO seeks from the start): all silently
    wrong voxels, in memory and streamed. Each file now reads as SimpleITK (MetaIO, Slicer) reads it."""
    for name, path, array in _metaimage_cases(tmp_path):
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        volume = bv.read_volume(path)
        np.testing.assert_array_equal(volume.array, reference, err_msg=name)
        with open_slabs(path) as reader:
            np.testing.assert_array_equal(reader.read(0, reader.slices), reference, err_msg=name)
        if name not in ("msb keys disagree", "msb key in lower case"):
            np.testing.assert_array_equal(reference, array, err_msg=name)  # the file says what we wrote


@pytest.mark.parametrize("local", [True, False])
def test_metaimage_compressed_data_ending_the_file_start_by_their_compressed_size(tmp_path, local):
    """HeaderSize = -1 with CompressedData: the stream is the file's last CompressedDataSize bytes. It was looked
    for at the uncompressed size from the end and refused as corrupt data; without CompressedDataSize the refusal
    now says what is missing."""
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(7, 6, 5) * 3 - 100
    stream = zlib.compress(array.astype("<i2").tobytes())
    text = METAIMAGE_HEAD.replace("CompressedData = False", "CompressedData = True").format(
        binary="True", order="", extra=f"HeaderSize = -1\nCompressedDataSize = {len(stream)}\n",
        data="LOCAL" if local else "v.zraw")
    path = tmp_path / ("v.mha" if local else "v.mhd")
    data = b"padding before the stream" + stream
    if local:
        path.write_bytes(text.encode() + data)
    else:
        path.write_text(text)
        (tmp_path / "v.zraw").write_bytes(data)
    np.testing.assert_array_equal(bv.read_volume(path).array, array)
    with open_slabs(path) as reader:
        np.testing.assert_array_equal(reader.read(0, reader.slices), array)
    path.write_bytes(path.read_bytes().replace(f"CompressedDataSize = {len(stream)}\n".encode(), b""))
    with pytest.raises(bv.VolumeFileError, match=r"v\.mh[ad]: HeaderSize = -1 .* needs CompressedDataSize"):
        bv.read_volume(path)


@pytest.mark.parametrize("line", ["   ", "\t", "no colon here"])
def test_a_nrrd_header_line_teem_refuses_is_refused(tmp_path, line):
    """A line of spaces ended the header here (teem ends it only at an empty line) and the voxels were read one byte
    early; a line with no colon was skipped. SimpleITK (teem) refuses both: so do we, in one line."""
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    header = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: 5 4 3\nendian: little\nencoding: raw\n{line}\n"
              "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n\n")
    path = tmp_path / "odd.nrrd"
    path.write_bytes(header.encode() + array.tobytes())
    with pytest.raises(bv.VolumeFileError, match=r"odd\.nrrd: .*header line 7"):
        bv.read_volume(path)
    done = subprocess.run([sys.executable, "-m", "bigvolume", "resample", str(path), str(tmp_path / "o.nrrd"),
                           "--factor", "2"], capture_output=True, text=True)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_a_nrrd_value_axis_of_size_one_reads_as_a_scalar_volume_wherever_it_lies(tmp_path, axis):
    """kinds 'list' of size 1 after the space axes: read_volume returned a (k, j, i, 1) array for a geometry of one
    component, and every command failed with a numpy broadcast message naming no file."""
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(7, 6, 5) * 3 - 100
    sizes, directions, kinds = ["5", "6", "7"], ["(0.5,0,0)", "(0,0.75,0)", "(0,0,1.25)"], ["domain"] * 3
    sizes.insert(axis, "1")
    directions.insert(axis, "none")
    kinds.insert(axis, "list")
    header = (f"NRRD0004\ntype: short\ndimension: 4\nspace: left-posterior-superior\nsizes: {' '.join(sizes)}\n"
              f"space directions: {' '.join(directions)}\nkinds: {' '.join(kinds)}\nendian: little\nencoding: raw\n"
              "space origin: (-4,2,9.5)\n\n")
    path = tmp_path / "one_value.nrrd"
    path.write_bytes(header.encode() + array.astype("<i2").tobytes())
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert reference.shape == array.shape
    volume = bv.read_volume(path)
    assert volume.array.shape == array.shape and volume.components == 1
    np.testing.assert_array_equal(volume.array, reference)
    with open_slabs(path) as reader:
        np.testing.assert_array_equal(reader.read(0, reader.slices), reference)
    for mode in ("--stream", "--no-stream"):
        done = subprocess.run([sys.executable, "-m", "bigvolume", "resample", str(path), str(tmp_path / "o.nrrd"),
                               "--factor", "2", mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_a_kill_between_the_moves_of_a_detached_header_output_never_leaves_an_old_header_over_new_data(
        tmp_path, monkeypatch):
    """Replacing a.nhdr + a.raw moved the data file, then the header: a kill in between (SIGTERM, SIGKILL: no
    handler holds them) left the old header over the new, larger data, which readers take silently. The old header
    goes first now: such a kill leaves no output, never a wrong one."""
    from bigvolume.io import files as files_module
    small = bv.Volume.from_array(np.zeros((4, 5, 6), np.uint16), spacing=(2, 2, 2))
    bv.write_volume(small, tmp_path / "a.nhdr")
    large = bv.Volume.from_array(np.ones((8, 10, 12), np.uint16))
    real_replace = os.replace

    def killed_at_the_header(source, target):
        if str(target).endswith(".nhdr"):
            raise SystemExit("killed")  # what the process would see of a kill: nothing after this point runs
        real_replace(source, target)
    monkeypatch.setattr(files_module.os, "replace", killed_at_the_header)
    with pytest.raises(SystemExit):
        bv.write_volume(large, tmp_path / "a.nhdr")
    monkeypatch.setattr(files_module.os, "replace", real_replace)
    assert not (tmp_path / "a.nhdr").exists()  # no header: "no such file", not an old grid over new voxels
    bv.write_volume(large, tmp_path / "a.nhdr")
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "a.nhdr").array, large.array)


def test_two_runs_writing_one_detached_header_at_once_leave_one_whole_output(tmp_path, monkeypatch):
    """Two runs moving a.nhdr + a.raw into place at the same moment could interleave their moves and leave one
    run's header over the other's data, read silently (a data file longer than its header says passes). The moves
    of one run now hold the folder's lock: the other run's wait till they are done."""
    from bigvolume.io import files as files_module
    out = tmp_path / "a.nhdr"
    ours = bv.Volume.from_array(np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6), spacing=(2, 2, 2))
    theirs = np.arange(8 * 10 * 12, dtype=np.int32).reshape(8, 10, 12) * 7
    writer = ("import sys, numpy as np, bigvolume as bv; "
              "bv.write_volume(bv.Volume.from_array(np.arange(960, dtype=np.int32).reshape(8, 10, 12) * 7), "
              "sys.argv[1]); print('written', flush=True)")
    real_replace, other = os.replace, []

    def the_other_run_writes_between_our_moves(source, target):
        real_replace(source, target)
        if str(target).endswith(".raw") and not other:  # our data moved, our header not yet
            other.append(subprocess.Popen([sys.executable, "-c", writer, str(out)], stdout=subprocess.PIPE,
                                          text=True))
            time.sleep(6)  # without the lock, it writes both its files in this time
    monkeypatch.setattr(files_module.os, "replace", the_other_run_writes_between_our_moves)
    bv.write_volume(ours, out)
    monkeypatch.setattr(files_module.os, "replace", real_replace)
    stdout, _ = other[0].communicate(timeout=120)
    assert other[0].returncode == 0 and "written" in stdout
    read = bv.read_volume(out)  # the other run's output, whole: it waited for our moves and came after
    assert read.array.dtype == np.int32
    np.testing.assert_array_equal(read.array, theirs)
    assert (tmp_path / "a.raw").stat().st_size == theirs.nbytes


@pytest.mark.parametrize("directions, origin", [("(1,0,0) (1,0,0) (0,0,1)", "(0,0,0)"),
                                                ("(1,0,0) (0,1,0) (0,0,1)", "(nan,0,0)")])
def test_a_header_grid_no_volume_can_have_is_refused_naming_the_file(tmp_path, directions, origin):
    """Read by our own NRRD header reader (no SimpleITK): a singular direction or a NaN origin is one line that
    names the file (Geometry's own refusal came out without it)."""
    path = tmp_path / "odd.nrrd"
    path.write_bytes(("NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nendian: little\nencoding: raw\n"
                      f"space: left-posterior-superior\nspace directions: {directions}\nspace origin: {origin}\n\n"
                      ).encode() + bytes(16))
    with pytest.raises(bv.VolumeFileError, match=r"odd\.nrrd: (the header's grid is not valid|not a readable)"):
        bv.read_geometry(path)


BIGVOLUME = [sys.executable, "-m", "bigvolume"]


@pytest.mark.parametrize("source, output, stream", [("scan.v2.nhdr", "scan.v2.mhd", "--no-stream"),
                                                    ("scan.v2.mhd", "scan.v2.nhdr", "--stream"),
                                                    ("scan.v2.mhd", "scan.v2.nhdr", "--no-stream")])
def test_an_output_named_with_several_dots_does_not_overwrite_the_inputs_data_file(tmp_path, source, output, stream):
    """The data file of scan.v2.mhd was guessed as scan.raw (the writers write scan.v2.raw): the check passed and the
    input's data file was replaced; the input could no longer be read."""
    volume = bv.Volume.from_array(np.arange(336, dtype=np.int16).reshape(6, 7, 8), spacing=(0.5, 0.6, 0.7))
    io.write_volume(volume, tmp_path / source)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    done = subprocess.run(BIGVOLUME + ["resample", str(tmp_path / source), str(tmp_path / output), "--factor", "2",
                                       stream], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "would overwrite the input's data file" in done.stderr, done.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    np.testing.assert_array_equal(bv.read_volume(tmp_path / source).array, volume.array)


def test_a_data_file_of_another_volume_is_not_replaced(tmp_path):
    """Writing x.mhd replaced the x.raw of an unrelated x.nhdr beside it, which then read the new bytes as its own."""
    first = bv.Volume.from_array(np.arange(336, dtype=np.int16).reshape(6, 7, 8))
    io.write_volume(first, tmp_path / "x.nhdr")
    second = bv.Volume.from_array(np.full((6, 7, 8), 7, np.float32))
    with pytest.raises(bv.VolumeFileError, match=r"x\.mhd: writing it would replace .*x\.raw, the data file of "
                                                 r".*x\.nhdr; choose another name"):
        io.write_volume(second, tmp_path / "x.mhd")
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "x.nhdr").array, first.array)
    io.write_volume(first, tmp_path / "x.nhdr")  # an output written again over its own data file: allowed
    (tmp_path / "x.nhdr").unlink()
    (tmp_path / "x.raw").unlink()
    io.write_volume(second, tmp_path / "x.mhd")
    io.write_volume(second, tmp_path / "x.mhd")
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "x.mhd").array, second.array)


@pytest.mark.parametrize("name", ["A.NII", "A.NII.GZ", "A.MHA", "A.MHD", "A.NHDR", "A.NRRD", "b.Mha"])
@pytest.mark.parametrize("door", ["write_volume", "resample --no-stream", "resample --stream"])
def test_upper_case_suffixes_write_and_read(tmp_path, name, door):
    """ITK knows its suffixes in lower case: A.NII failed with the hidden staging path in the message, A.MHA "produced
    no file", A.NHDR came out attached, and ITK's MetaImage reader knew no A.MHA."""
    volume = bv.Volume.from_array(np.arange(336, dtype=np.uint16).reshape(6, 7, 8), spacing=(0.5, 0.6, 0.7),
                                  origin=(1, -2, 3))
    if door == "write_volume":
        io.write_volume(volume, tmp_path / name)
        expected = volume
    else:
        source = io.write_volume(volume, tmp_path / "in.nrrd")
        done = subprocess.run(BIGVOLUME + ["resample", str(source), str(tmp_path / name), "--factor", "1", "--method",
                                           "nearest", door.split()[1]], capture_output=True, text=True, timeout=120)
        if door.endswith("--stream") and name.upper().endswith((".MHA", ".MHD")):
            assert done.returncode == 1  # (MetaImage is written whole by SimpleITK: refused streamed, as in lower case)
            return
        assert done.returncode == 0, done.stderr
        expected = volume
    read = bv.read_volume(tmp_path / name)
    np.testing.assert_array_equal(read.array, expected.array)
    assert read.geometry.dimensions == expected.geometry.dimensions  # (NIfTI stores float32: 0.6 reads 0.60000002)
    np.testing.assert_allclose(read.geometry.ijk_to_lps(), expected.geometry.ijk_to_lps(), rtol=1e-6, atol=1e-6)
    if name.upper().endswith((".NHDR", ".MHD")):  # detached: the data file beside it, named by the header
        assert (tmp_path / (name.rsplit(".", 1)[0] + ".raw")).is_file() and (tmp_path / name).stat().st_size < 1000
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_direction_columns_that_are_not_unit_vectors_are_stored_as_spacing(tmp_path):
    """A direction whose columns are not unit vectors (a MetaImage's matrix can give one) was refused by NIfTI as a
    sheared grid, stored so in a MetaImage (VTK read its spacing without them) and folded into NRRD's directions:
    every format now stores the unit axes and the spacing times the columns' lengths: one voxel-to-LPS mapping."""
    direction = np.diag([2.0, 1.0, 0.5]) @ np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]])
    volume = bv.Volume.from_array(np.arange(60, dtype=np.int16).reshape(3, 4, 5), spacing=(1.0, 2.0, 3.0),
                                  origin=(1, 2, 3), direction=direction)
    for suffix in (".nii", ".nii.gz", ".mha", ".nrrd", ".nhdr"):
        read = bv.read_volume(io.write_volume(volume, tmp_path / f"v{suffix}"))
        np.testing.assert_allclose(read.geometry.ijk_to_lps(), volume.geometry.ijk_to_lps(), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(read.geometry.direction, axis=0), 1.0, atol=1e-6)
        np.testing.assert_array_equal(read.array, volume.array)


def test_outputs_are_written_where_os_has_no_pathconf(tmp_path, monkeypatch):
    """Windows' os has no pathconf: the name-length check raised AttributeError before every write."""
    monkeypatch.delattr(os, "pathconf")
    volume = bv.Volume.from_array(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
    np.testing.assert_array_equal(io.read_volume(io.write_volume(volume, tmp_path / "v.nrrd")).array, volume.array)
    with pytest.raises(bv.VolumeFileError, match="the file name is too long for this folder"):
        io.write_volume(volume, tmp_path / ("a" * 300 + ".nrrd"))


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mhd", ".nii.gz"])
def test_a_file_name_too_long_for_the_folder_is_refused_before_writing(tmp_path, suffix):
    """A 300-character name was an OSError traceback; one that fitted alone but not in its staging folder's name
    ('.NAME.partial-XXXXXXXX') failed the same way after the work was done."""
    volume = bv.Volume.from_array(np.zeros((3, 4, 5), np.uint8))
    longest = os.pathconf(tmp_path, "PC_NAME_MAX") - len(".x.partial-12345678") + 1  # the name x may have
    for length in (300, longest + 1):
        name = "a" * (length - len(suffix)) + suffix
        with pytest.raises(bv.VolumeFileError, match="the file name is too long for this folder"):
            io.write_volume(volume, tmp_path / name)
        assert list(tmp_path.iterdir()) == []
    fits = tmp_path / ("b" * (longest - len(suffix) - (4 if suffix in (".nhdr", ".mhd") else 0)) + suffix)
    io.write_volume(volume, fits)  # (a detached header's data file is .raw/.raw.gz: its name must fit too)
    np.testing.assert_array_equal(io.read_volume(fits).array, volume.array)
