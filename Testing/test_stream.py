"""Streaming (out-of-core) resampling: every input form, read a slab at a time under a deliberately tiny memory
limit, gives the in-memory result; outputs are whole or absent; bad inputs are refused before any output."""
import bz2
import gzip
import hashlib
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
from bigvolume.io import files as io
from bigvolume.testing import quality
from bigvolume.io.slab_writers import SlabWriter
from bigvolume.io import raw_reads, raw_writes, slab_readers
from bigvolume.io.slabs import WholeVolumeReader, open_slabs

TINY = 1  # bytes: forces one-slice slabs, so every slab boundary is exercised


def sample_volume(dtype=np.uint16, components=1, shape=(23, 13, 17)):
    """A zone plate over the type's full range (Lanczos overshoots would clamp if filtered in the input type), on
    an oblique, anisotropic grid."""
    plate = quality.zone_plate(max(shape))[:shape[0], :shape[1], :shape[2]]
    if np.dtype(dtype).kind == "f":
        array = (plate * 1000.0).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = np.rint(info.min + (plate + 1) / 2 * (float(info.max) - info.min)).astype(dtype)
    if components > 1:
        array = np.stack([array, array[::-1], array[:, ::-1]][:components], axis=-1)
    a = math.radians(25)
    direction = np.array([[math.cos(a), 0, -math.sin(a)], [0, -1.0, 0], [math.sin(a), 0, math.cos(a)]])
    return bv.Volume.from_array(array, spacing=(0.7, 0.45, 1.3), origin=(-12.5, 40.0, 3.25), direction=direction)


def _sitk_header_lines(volume, folder: Path) -> list[str]:
    """The geometry lines of a NRRD header as SimpleITK writes them (independent of our writer)."""
    io.write_volume(volume, folder / "reference.nhdr", compress=False)
    lines = (folder / "reference.nhdr").read_text().splitlines()
    (folder / "reference.nhdr").unlink()
    (folder / "reference.raw").unlink()
    return [line for line in lines if line and not line.startswith(("endian", "encoding", "data file"))]


def write_form(volume, folder: Path, form: str) -> Path:
    """Write ``volume`` to ``folder`` in one of the layouts users' files come in."""
    array = volume.array
    simple = {"nrrd": ("v.nrrd", False), "nrrd-gzip": ("v.nrrd", True), "nhdr": ("v.nhdr", False),
              "nhdr-gzip": ("v.nhdr", True), "nii": ("v.nii", False), "nii.gz": ("v.nii.gz", True),
              "mha": ("v.mha", False), "mha-zlib": ("v.mha", True), "mhd": ("v.mhd", False)}
    if form in simple:
        name, compress = simple[form]
        return io.write_volume(volume, folder / name, compress=compress)
    header = _sitk_header_lines(volume, folder)
    little = array.astype(array.dtype.newbyteorder("<"))
    big = array.astype(array.dtype.newbyteorder(">"))
    if form == "nhdr-list":
        for k in range(array.shape[0]):
            (folder / f"slice_{k:03d}.raw").write_bytes(little[k].tobytes())
        names = "\n".join(f"slice_{k:03d}.raw" for k in range(array.shape[0]))
        fields = ["endian: little", "encoding: raw", "data file: LIST 2", names]
    elif form == "nhdr-printf":  # one slice per file, numbered from 1
        for number, k in enumerate(range(array.shape[0]), start=1):
            (folder / f"part{number:02d}.raw").write_bytes(little[k].tobytes())
        fields = ["endian: little", "encoding: raw", f"data file: part%02d.raw 1 {array.shape[0]} 1 2"]
    elif form == "nhdr-byteskip":
        (folder / "v.raw").write_bytes(b"\x7f" * 123 + little.tobytes() + b"trailing junk")
        fields = ["endian: little", "encoding: raw", "byte skip: 123", "data file: v.raw"]
    elif form == "nhdr-byteskip-end":
        (folder / "v.raw").write_bytes(b"a preamble of unknown length" + little.tobytes())
        fields = ["endian: little", "encoding: raw", "byte skip: -1", "data file: v.raw"]
    elif form == "nhdr-lineskip":
        (folder / "v.raw").write_bytes(b"# scanner text line 1\n# line 2\n" + little.tobytes())
        fields = ["endian: little", "encoding: raw", "line skip: 2", "data file: v.raw"]
    elif form == "nhdr-bigendian":
        (folder / "v.raw").write_bytes(big.tobytes())
        fields = ["endian: big", "encoding: raw", "data file: v.raw"]
    elif form == "nhdr-gzip-bigendian-skip":
        (folder / "v.raw.gz").write_bytes(gzip.compress(b"\0" * 40 + big.tobytes()))
        fields = ["endian: big", "encoding: gzip", "byte skip: 40", "data file: v.raw.gz"]
    elif form == "nhdr-gzip-multimember":  # what pigz and bgzip produce
        data = little.tobytes()
        (folder / "v.raw.gz").write_bytes(gzip.compress(data[:1001]) + gzip.compress(data[1001:]))
        fields = ["endian: little", "encoding: gzip", "data file: v.raw.gz"]
    elif form == "nhdr-bzip2":
        (folder / "v.raw.bz2").write_bytes(bz2.compress(little.tobytes()))
        fields = ["endian: little", "encoding: bzip2", "data file: v.raw.bz2"]
    elif form == "nrrd-attached-bigendian":
        text = "\n".join(header + ["endian: big", "encoding: raw"]) + "\n\n"
        path = folder / "v.nrrd"
        path.write_bytes(text.encode() + big.tobytes())
        return path
    elif form == "mhd-list-bigendian":
        io.write_volume(volume, folder / "v.mhd", compress=False)
        lines = [line for line in (folder / "v.mhd").read_text().splitlines()
                 if not line.startswith(("ElementDataFile", "BinaryDataByteOrderMSB", "ElementByteOrderMSB"))]
        (folder / "v.raw").unlink()
        for k in range(array.shape[0]):
            (folder / f"s{k}.raw").write_bytes(big[k].tobytes())
        lines += ["BinaryDataByteOrderMSB = True", "ElementDataFile = LIST 2D"]
        lines += [f"s{k}.raw" for k in range(array.shape[0])]
        path = folder / "v.mhd"
        path.write_text("\n".join(lines) + "\n")
        return path
    else:
        raise ValueError(form)
    path = folder / "v.nhdr"
    path.write_text("\n".join(header + fields) + "\n")
    return path


INPUT_FORMS = ["nrrd", "nrrd-gzip", "nhdr", "nhdr-gzip", "nii", "nii.gz", "mha", "mha-zlib", "mhd",
               "nhdr-list", "nhdr-printf", "nhdr-byteskip", "nhdr-byteskip-end", "nhdr-lineskip", "nhdr-bigendian",
               "nhdr-gzip-bigendian-skip", "nhdr-gzip-multimember", "nhdr-bzip2", "nrrd-attached-bigendian",
               "mhd-list-bigendian"]


def read_back(path) -> bv.Volume:
    image = sitk.ReadImage(str(path))
    return bv.Volume(sitk.GetArrayFromImage(image), bv.Geometry(image.GetSize(), image.GetSpacing(),
                                                                image.GetOrigin(),
                                                                np.array(image.GetDirection()).reshape(3, 3)))


def assert_matches_in_memory(streamed: bv.Volume, expected: bv.Volume, geometry_tolerance=1e-9):
    assert streamed.array.dtype == expected.array.dtype
    assert streamed.array.shape == expected.array.shape
    if expected.array.dtype.kind == "f":
        value_range = float(np.ptp(expected.array)) or 1.0
        np.testing.assert_allclose(streamed.array, expected.array, rtol=0, atol=1e-4 * value_range)
    else:
        difference = np.abs(streamed.array.astype(np.int64) - expected.array.astype(np.int64))
        assert difference.max() <= 1
    assert streamed.geometry.isclose(expected.geometry, rtol=geometry_tolerance, atol=geometry_tolerance)


@pytest.mark.parametrize("form", INPUT_FORMS)
def test_every_input_form_streams_to_the_in_memory_result(tmp_path, form):
    volume = sample_volume(np.uint16)
    path = write_form(volume, tmp_path, form)
    with open_slabs(path) as reader:
        assert reader.streams, "this form should be read a slab at a time"
        np.testing.assert_array_equal(reader.read(5, 9), volume.array[5:9])
    report = bv.resample_file(path, tmp_path / "out.nhdr", (3, 2, 2.5), stream=True, memory_limit=TINY)
    assert report.stream_plan is not None and report.stream_plan.slabs == volume.array.shape[0]
    expected = bv.resample(volume, (3, 2, 2.5))
    tolerance = 1e-5 if form.startswith("nii") else 1e-9  # NIfTI keeps its matrix in float32
    assert_matches_in_memory(read_back(tmp_path / "out.nhdr"), expected, tolerance)


@pytest.mark.parametrize("method", ["lanczos", "gaussian", "mean", "max", "nearest"])
@pytest.mark.parametrize("factors", [4, (2.5, 3, 1.5), (1, 1, 3), (3, 2, 1)])
def test_every_method_streams_to_the_in_memory_result(tmp_path, method, factors):
    volume = sample_volume(np.uint16, shape=(29, 21, 26))
    path = io.write_volume(volume, tmp_path / "in.nrrd")
    bv.resample_file(path, tmp_path / "out.nrrd", factors, method=method, stream=True, memory_limit=TINY)
    assert_matches_in_memory(read_back(tmp_path / "out.nrrd"), bv.resample(volume, factors, method=method))


@pytest.mark.parametrize("dtype, out_dtype", [(np.float32, None), (np.float64, None), (np.int16, None),
                                              (np.uint8, None), (np.uint16, "float32"), (np.float32, "uint8")])
def test_pixel_types_stream_to_the_in_memory_result(tmp_path, dtype, out_dtype):
    volume = sample_volume(dtype)
    path = io.write_volume(volume, tmp_path / "in.nii.gz")
    bv.resample_file(path, tmp_path / "out.nii.gz", 3, dtype=out_dtype, stream=True, memory_limit=TINY)
    expected = bv.resample(volume, 3, dtype=out_dtype)
    assert_matches_in_memory(read_back(tmp_path / "out.nii.gz"), expected, 1e-5)


def test_rgb_volume_streams(tmp_path):
    volume = sample_volume(np.uint8, components=3)
    path = io.write_volume(volume, tmp_path / "rgb.nhdr")
    bv.resample_file(path, tmp_path / "out.nhdr", 2, stream=True, memory_limit=TINY)
    streamed = read_back(tmp_path / "out.nhdr")
    assert streamed.array.shape[-1] == 3
    assert_matches_in_memory(streamed, bv.resample(volume, 2))


@pytest.mark.parametrize("suffix", [".nhdr", ".nrrd", ".nii", ".nii.gz"])
def test_streamed_outputs_have_the_in_memory_geometry_in_every_format(tmp_path, suffix):
    volume = sample_volume(np.int16)
    path = io.write_volume(volume, tmp_path / "in.nrrd")
    bv.resample_file(path, tmp_path / f"out{suffix}", 2, stream=True, memory_limit=TINY)
    bv.resample_file(path, tmp_path / f"ref{suffix}", 2, stream=False)
    reference = read_back(tmp_path / f"ref{suffix}")
    assert_matches_in_memory(read_back(tmp_path / f"out{suffix}"), reference, 1e-6)
    assert reference.geometry.isclose(volume.geometry.downsampled((2, 2, 2)), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("suffix, dtype, out_dtype, method", [
    (".nhdr", np.uint16, None, "lanczos"), (".nrrd", np.int16, None, "mean"), (".nii", np.float32, None, "lanczos"),
    (".nii.gz", np.uint8, None, "gaussian"), (".mha", np.uint16, None, "lanczos"),  # .mha: written by SimpleITK
    (".nhdr", np.uint16, "float32", "lanczos"), (".nrrd", np.uint16, None, "fft")])  # resample(), then written
def test_a_file_read_whole_gives_the_array_result_and_the_streamed_file(tmp_path, suffix, dtype, out_dtype, method):
    """resample_file(stream=False) equals bv.resample of the volume exactly, whichever way it writes (the streamed
    path's file sink for NRRD/NIfTI outputs of the input's type, else resample() and write_volume); where it uses
    the file sink, its file is the streamed run's, byte for byte."""
    volume = sample_volume(dtype, shape=(31, 22, 27))
    path = io.write_volume(volume, tmp_path / "in.nhdr")
    whole = bv.resample_file(path, tmp_path / f"whole{suffix}", (2, 3, 2.5), method=method, dtype=out_dtype,
                             stream=False)
    assert whole.stream_plan is None
    expected = bv.resample(io.read_volume(path), (2, 3, 2.5), method=method, dtype=out_dtype)
    result = io.read_volume(tmp_path / f"whole{suffix}")
    np.testing.assert_array_equal(result.array, expected.array)
    assert result.geometry.isclose(expected.geometry, rtol=1e-6, atol=1e-6)
    if suffix != ".mha" and out_dtype is None and method != "fft":
        bv.resample_file(path, tmp_path / f"streamed{suffix}", (2, 3, 2.5), method=method, stream=True,
                         memory_limit=TINY)
        data = ".raw" if suffix == ".nhdr" else suffix
        assert (tmp_path / f"whole{data}").read_bytes() == (tmp_path / f"streamed{data}").read_bytes()


def test_nhdr_output_is_streamable_again(tmp_path):
    volume = sample_volume(np.uint16, shape=(40, 20, 24))
    first = bv.resample_file(io.write_volume(volume, tmp_path / "in.nrrd"), tmp_path / "half.nhdr", 2,
                             stream=True, memory_limit=TINY)
    with open_slabs(first.output_path) as reader:
        assert reader.streams and reader.layout.encoding == "raw"
    bv.resample_file(tmp_path / "half.nhdr", tmp_path / "quarter.nhdr", 2, stream=True, memory_limit=TINY)
    assert read_back(tmp_path / "quarter.nhdr").array.shape == (10, 5, 6)


def test_memory_limit_decides_when_to_stream(tmp_path):
    path = io.write_volume(sample_volume(np.uint16), tmp_path / "in.nhdr")
    assert bv.resample_file(path, tmp_path / "a.nhdr", 2, memory_limit=TINY).stream_plan is not None
    assert bv.resample_file(path, tmp_path / "b.nhdr", 2, memory_limit=2**34).stream_plan is None


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


RAW_FORMS = ["nrrd", "nhdr", "nii", "mhd", "nhdr-list", "nhdr-printf", "nhdr-byteskip", "nhdr-byteskip-end",
             "nhdr-lineskip", "nhdr-bigendian", "nrrd-attached-bigendian", "mhd-list-bigendian"]


def direct_file_or_skip(path):
    try:
        return raw_reads.DirectFile(path)
    except OSError as error:
        pytest.skip(f"O_DIRECT refused on {path.parent} ({error.strerror}): the page cache is read instead")


def test_reads_around_the_page_cache_give_the_same_bytes_at_any_offset_and_length(tmp_path):
    data = np.random.default_rng(5).integers(0, 256, 3 * raw_reads.BOUNCE_BYTES + 12345, dtype=np.uint8)
    path = tmp_path / "bytes.raw"
    data.tofile(path)
    direct, plain = direct_file_or_skip(path), raw_reads.PlainFile(path)
    rng = np.random.default_rng(6)
    cases = [(0, 1), (1, raw_reads.ALIGNMENT), (4095, 2), (raw_reads.BOUNCE_BYTES - 3, raw_reads.BOUNCE_BYTES + 7),
             (data.size - 10, 10), (data.size - 10, 4096), (data.size, 5)]
    cases += [(int(rng.integers(0, data.size)), int(rng.integers(1, 2 * raw_reads.BOUNCE_BYTES))) for _ in range(30)]
    try:
        for offset, length in cases:
            first, second = bytearray(length), bytearray(length)
            got = direct.readinto_at(offset, memoryview(first))
            assert got == plain.readinto_at(offset, memoryview(second)) == max(0, min(length, data.size - offset))
            assert first[:got] == data[offset:offset + got].tobytes() == second[:got]
    finally:
        direct.close()
        plain.close()


def test_aligned_reads_around_the_page_cache_fill_the_buffer_itself(tmp_path, monkeypatch):
    """An aligned offset into an aligned buffer: the disk writes into the buffer (in chunks), and only a tail shorter
    than ALIGNMENT goes through the bounce buffer; bytes and counts as through the page cache, at the end of the
    file too."""
    step = raw_reads.ALIGNMENT
    monkeypatch.setattr(raw_reads, "DIRECT_CHUNK_BYTES", 3 * step)  # several chunks per read
    data = np.random.default_rng(7).integers(0, 256, 40 * step + 1234, dtype=np.uint8)
    path = tmp_path / "bytes.raw"
    data.tofile(path)
    direct, plain = direct_file_or_skip(path), raw_reads.PlainFile(path)
    bounced = []
    read_aligned = direct._read_aligned
    monkeypatch.setattr(direct, "_read_aligned", lambda *a: bounced.append(a) or read_aligned(*a))
    cases = [(0, step), (0, 7 * step + 5), (step, 10 * step), (5 * step, 35 * step + 1234),
             (36 * step, 8 * step), (40 * step, step), (41 * step, 2 * step), (0, data.size)]
    try:
        for offset, length in cases:
            bounced.clear()
            first, second = raw_reads.aligned_empty(length, np.uint8), bytearray(length)
            assert first.ctypes.data % step == 0
            got = direct.readinto_at(offset, memoryview(first))
            assert got == plain.readinto_at(offset, memoryview(second)) == max(0, min(length, data.size - offset))
            assert first[:got].tobytes() == data[offset:offset + got].tobytes() == bytes(second[:got])
            assert len(bounced) <= 1 and all(size == step for _, size in bounced)  # the tail's one block
    finally:
        direct.close()
        plain.close()


@pytest.mark.parametrize("form", RAW_FORMS)
def test_every_raw_form_read_around_the_page_cache_streams_the_same_result(tmp_path, form, monkeypatch):
    volume = sample_volume(np.uint16, shape=(31, 27, 45))
    path = write_form(volume, tmp_path, form)
    results = {}
    for mode in ("never", "always"):
        monkeypatch.setenv("BIGVOLUME_DIRECT_READ", mode)
        with open_slabs(path) as reader:
            np.testing.assert_array_equal(reader.read(3, 17), volume.array[3:17])
        bv.resample_file(path, tmp_path / f"{mode}.nhdr", (2, 3, 2), stream=True, memory_limit=TINY)
        results[mode] = read_back(tmp_path / f"{mode}.nhdr").array
    np.testing.assert_array_equal(results["always"], results["never"])


@pytest.mark.parametrize("form, dtype, components", [(form, np.uint16, 1) for form in RAW_FORMS] + [
    (form, dtype, components) for form in ("nrrd", "nhdr-byteskip", "mhd")
    for dtype, components in [(np.float32, 1), (np.int8, 1), (np.uint8, 3), (np.float64, 2)]])
def test_a_cached_file_mapped_slab_by_slab_streams_the_same_result(tmp_path, form, dtype, components,
                                                                     monkeypatch):
    """One native-order raw file (any header offset: an attached .nrrd's is not a page multiple) is mapped when
    BIGVOLUME_MAPPED_READ allows; its slabs are read-only views equal to what the raw reader reads, and the
    results are the same bytes. Other layouts are read as before."""
    volume = sample_volume(dtype, components, shape=(29, 27, 45))
    path = write_form(volume, tmp_path, form)
    monkeypatch.setenv("BIGVOLUME_MAPPED_READ", "always")
    with open_slabs(path) as reader:
        mapped = isinstance(reader, slab_readers.MappedSlabReader)
        assert mapped == reader.layout.is_single_native_raw
        slab = reader.read(3, 17)
        np.testing.assert_array_equal(slab, volume.array[3:17])
        if mapped:
            assert not slab.flags.writeable
            buffer = reader.new_buffer(5)
            assert reader.read(20, 25, buffer) is not None
            np.testing.assert_array_equal(buffer, volume.array[20:25])
    results = {}
    for mode in ("never", "always"):
        monkeypatch.setenv("BIGVOLUME_MAPPED_READ", mode)
        bv.resample_file(path, tmp_path / f"{mode}.nhdr", (2, 3, 2), stream=True, memory_limit=TINY)
        results[mode] = (tmp_path / f"{mode}.raw").read_bytes()
    assert results["always"] == results["never"]


def test_a_mapped_slab_s_pages_go_when_its_last_view_does(tmp_path, monkeypatch):
    """Memory stays that of the slabs in use: once their views are gone, nothing of the file is mapped."""
    monkeypatch.setenv("BIGVOLUME_MAPPED_READ", "always")
    volume = sample_volume(np.uint16, shape=(40, 30, 30))
    path = write_form(volume, tmp_path, "nhdr")
    data = str((tmp_path / "v.raw").resolve())

    def mappings() -> int:
        return sum(line.rstrip().endswith(data) for line in Path("/proc/self/maps").read_text().splitlines())
    with open_slabs(path) as reader:
        slabs = [reader.read(k, k + 4) for k in range(0, 40, 4)]
        assert mappings() == len(slabs)
        half = slabs[3][1:]
        del slabs
        assert mappings() == 1  # the view kept its own slab's mapping
        np.testing.assert_array_equal(half, volume.array[13:16])
        del half
        assert mappings() == 0


def test_mapping_is_for_large_cached_files_unless_asked(tmp_path, monkeypatch):
    path = tmp_path / "big.raw"
    with open(path, "wb") as handle:
        handle.truncate(raw_reads.MAPPED_MIN_BYTES)
    handle = os.open(path, os.O_RDONLY)
    try:
        os.read(handle, 1)
        os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_DONTNEED)  # a sparse file's pages: dropped, then cold
    finally:
        os.close(handle)
    monkeypatch.setenv("BIGVOLUME_MAPPED_READ", "auto")
    cached = raw_reads.resident_fraction(path)
    assert raw_reads.worth_mapping(path) == (cached is not None and cached >= raw_reads.WARM_FRACTION)
    path.read_bytes()  # now cached
    assert raw_reads.worth_mapping(path)
    small = tmp_path / "small.raw"
    small.write_bytes(b"\0" * 4096)
    assert not raw_reads.worth_mapping(small)
    monkeypatch.setenv("BIGVOLUME_MAPPED_READ", "always")
    assert raw_reads.worth_mapping(small)
    monkeypatch.setenv("BIGVOLUME_MAPPED_READ", "never")
    assert not raw_reads.worth_mapping(path)


@pytest.mark.parametrize("mapped", ["never", "always"])
def test_the_plan_counts_read_buffers_except_for_an_array_already_held(tmp_path, mapped, monkeypatch):
    """An array's slabs are views of memory the process holds: the plan counts no read-ahead buffers for them (so
    the in-memory path gets the streamed path's slabs within its smaller limit); a file's slabs, read into
    buffers or mapped, hold memory of their own and are counted."""
    from bigvolume.engine.stream import READ_SLABS, stream_to_file
    from bigvolume.io.slab_readers import ArraySlabReader
    monkeypatch.setenv("BIGVOLUME_MAPPED_READ", mapped)
    volume = sample_volume(np.uint16, shape=(64, 40, 48))
    path = write_form(volume, tmp_path, "nhdr")
    limit = 2 ** 40  # slabs capped by the planner's own rules only: the same for both readers
    with open_slabs(path) as reader:
        from_file = stream_to_file(reader, tmp_path / "file.nhdr", (2, 2, 2), "lanczos", memory_limit=limit)
        slice_bytes = reader.slice_bytes
    from_array = stream_to_file(ArraySlabReader(volume.array, volume.geometry), tmp_path / "array.nhdr", (2, 2, 2),
                                "lanczos", memory_limit=limit)
    assert from_file.slab_slices == from_array.slab_slices
    assert from_file.working_bytes - from_array.working_bytes == READ_SLABS * from_file.slab_slices * slice_bytes
    assert (tmp_path / "file.raw").read_bytes() == (tmp_path / "array.raw").read_bytes()


@pytest.mark.parametrize("read", ["never", "always", "mapped"])
def test_a_raw_file_cut_short_while_reading_is_an_error_naming_it(tmp_path, read, monkeypatch):
    monkeypatch.setenv("BIGVOLUME_DIRECT_READ", "never" if read == "mapped" else read)
    monkeypatch.setenv("BIGVOLUME_MAPPED_READ", "always" if read == "mapped" else "never")
    volume = sample_volume(np.uint16, shape=(40, 30, 30))
    path = write_form(volume, tmp_path, "nhdr")
    data = tmp_path / "v.raw"
    with open_slabs(path) as reader:  # the size was checked on opening: the file shrinks after
        np.testing.assert_array_equal(reader.read(0, 10), volume.array[:10])
        os.truncate(data, volume.array[:25].nbytes + 7)
        with pytest.raises(bv.VolumeFileError, match=rf"{data.name}: ended at byte {volume.array[:25].nbytes + 7} "):
            reader.read(20, 30)


def direct_append_or_skip(path):
    try:
        return raw_writes.DirectAppendFile(path)
    except OSError as error:
        pytest.skip(f"O_DIRECT refused on {path.parent} ({error.strerror}): outputs are written the normal way")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_writes_around_the_page_cache_give_the_bytes_written(tmp_path, monkeypatch, seed):
    """Pieces of any size (empty, one byte, across and exactly at the buffer's end) appended around the page cache:
    the file holds exactly those bytes, its last partial block padded then cut off."""
    monkeypatch.setattr(raw_writes, "WRITE_BUFFER_BYTES", 4 * raw_reads.ALIGNMENT)
    rng = np.random.default_rng(seed)
    step = raw_reads.ALIGNMENT
    sizes = [0, 1, step - 1, 1, 4 * step, 3 * step + 17, 0, 9 * step] + list(rng.integers(0, 6 * step, 20))
    sizes += [int(rng.integers(0, step))]  # a tail of any length
    pieces = [rng.integers(0, 256, size, dtype=np.uint8) for size in sizes]
    direct = direct_append_or_skip(tmp_path / "direct.raw")
    for piece in pieces:
        direct.write(piece.data)
    direct.close()
    direct.close()  # a second close does nothing
    assert (tmp_path / "direct.raw").read_bytes() == b"".join(piece.tobytes() for piece in pieces)


@pytest.mark.parametrize("form", ["nhdr", "nrrd", "nii"])
def test_outputs_written_around_the_page_cache_equal_those_written_through_it(tmp_path, form, monkeypatch):
    """Streamed outputs (a detached data file, and attached headers, which put the voxels at an unaligned offset)
    are the same files whether written around the page cache or through it."""
    direct_append_or_skip(tmp_path / "probe.raw").close()
    volume = sample_volume(np.int16, shape=(37, 29, 43))
    path = write_form(volume, tmp_path, "nhdr")
    from bigvolume.io import slab_writers
    opened = []
    monkeypatch.setattr(slab_writers, "open_for_append",
                        lambda *args: opened.append(raw_writes.open_for_append(*args)) or opened[-1])
    outputs = {}
    for mode in ("never", "always"):
        monkeypatch.setenv("BIGVOLUME_DIRECT_WRITE", mode)
        folder = tmp_path / mode
        folder.mkdir()
        bv.resample_file(path, folder / f"out.{form}", (2, 3, 2), stream=True, compress=False, memory_limit=TINY)
        outputs[mode] = digest(folder)
    assert [type(handle) is raw_writes.DirectAppendFile for handle in opened] == [False, True]
    assert outputs["always"] == outputs["never"] and len(outputs["never"]) == (2 if form == "nhdr" else 1)


def test_only_large_uncompressed_outputs_on_a_local_disk_are_written_around_the_page_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIGVOLUME_DIRECT_WRITE", "auto")
    target = tmp_path / "out.raw"
    assert not raw_writes.worth_writing_direct(target, raw_reads.DIRECT_MIN_BYTES - 1)
    shared_memory = Path("/dev/shm")
    if raw_reads.filesystem_type(shared_memory) == "tmpfs":
        assert not raw_writes.worth_writing_direct(shared_memory / "out.raw", 2 * raw_reads.DIRECT_MIN_BYTES)
    local = raw_reads.filesystem_type(tmp_path) in raw_reads.LOCAL_FILESYSTEMS and hasattr(os, "O_DIRECT")
    assert raw_writes.worth_writing_direct(target, raw_reads.DIRECT_MIN_BYTES) == local
    monkeypatch.setenv("BIGVOLUME_DIRECT_WRITE", "never")
    assert not raw_writes.worth_writing_direct(target, 2 * raw_reads.DIRECT_MIN_BYTES)
    handle = raw_writes.open_for_append(target, 2 * raw_reads.DIRECT_MIN_BYTES)
    assert not isinstance(handle, raw_writes.DirectAppendFile)
    handle.close()
    monkeypatch.setenv("BIGVOLUME_DIRECT_WRITE", "always")
    handle = raw_writes.open_for_append(target, 10)  # where O_DIRECT is refused: the normal way, no error
    handle.write(b"0123456789")
    handle.close()
    assert target.read_bytes() == b"0123456789"


def evict_from_page_cache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_only_large_files_mostly_out_of_the_page_cache_are_read_around_it(tmp_path, monkeypatch):
    path = tmp_path / "big.raw"
    np.arange(2 ** 20, dtype=np.uint32).tofile(path)  # 4 MiB, just written: in the page cache
    monkeypatch.setenv("BIGVOLUME_DIRECT_READ", "auto")
    assert not raw_reads.worth_reading_direct(path)  # below DIRECT_MIN_BYTES
    monkeypatch.setattr(raw_reads, "DIRECT_MIN_BYTES", 2 ** 20)
    shared_memory = Path("/dev/shm")
    if raw_reads.filesystem_type(shared_memory) == "tmpfs" and os.access(shared_memory, os.W_OK):
        in_memory = shared_memory / f"bigvolume-test-{os.getpid()}.raw"
        try:
            in_memory.write_bytes(path.read_bytes())
            assert not raw_reads.worth_reading_direct(in_memory)  # tmpfs: no disk to read around the cache for
        finally:
            in_memory.unlink()
    cached = raw_reads.resident_fraction(path)
    if cached is None or not hasattr(os, "O_DIRECT"):
        pytest.skip("no mincore/O_DIRECT here: every file is read through the page cache")
    if raw_reads.filesystem_type(path) not in raw_reads.LOCAL_FILESYSTEMS:
        assert not raw_reads.worth_reading_direct(path)
        pytest.skip(f"{tmp_path} is on {raw_reads.filesystem_type(path)}, not a local disk filesystem")
    assert cached > raw_reads.COLD_FRACTION and not raw_reads.worth_reading_direct(path)
    evict_from_page_cache(path)
    if raw_reads.resident_fraction(path) > raw_reads.COLD_FRACTION:
        pytest.skip("this filesystem keeps the file cached after POSIX_FADV_DONTNEED")
    assert raw_reads.worth_reading_direct(path)
    monkeypatch.setenv("BIGVOLUME_DIRECT_READ", "never")
    assert not raw_reads.worth_reading_direct(path)


def test_the_cached_share_of_a_file_is_measured_whole_or_by_windows(tmp_path, monkeypatch):
    path = tmp_path / "half.raw"
    np.zeros(64 * 2 ** 20, np.uint8).tofile(path)  # 16384 pages
    evict_from_page_cache(path)
    if raw_reads.resident_fraction(path) is None or raw_reads.resident_fraction(path) > 0.05:
        pytest.skip("no mincore here, or the file stays cached after POSIX_FADV_DONTNEED")
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead past what is read
        handle.read(32 * 2 ** 20)  # the first half into the cache
    whole = raw_reads.resident_fraction(path)
    monkeypatch.setattr(raw_reads, "RESIDENCY_SAMPLE_PAGES", 1024)  # 64 windows of 16 pages
    sampled = raw_reads.resident_fraction(path)
    assert abs(whole - 0.5) < 0.1 and abs(sampled - 0.5) < 0.1


@pytest.mark.parametrize("read", ["never", "always"])
@pytest.mark.parametrize("form", ["nhdr", "nhdr-list"])
def test_short_raw_file_is_refused_before_any_output(tmp_path, form, read, monkeypatch):
    monkeypatch.setenv("BIGVOLUME_DIRECT_READ", read)
    volume = sample_volume(np.uint16)
    path = write_form(volume, tmp_path, form)
    data = sorted(tmp_path.glob("*.raw"))[-1]
    data.write_bytes(data.read_bytes()[:-10])
    expected = volume.array[0].nbytes if form == "nhdr-list" else volume.array.nbytes
    before = digest(tmp_path)
    with pytest.raises(bv.VolumeFileError) as error:
        bv.resample_file(path, tmp_path / "out.nhdr", 2, stream=True, memory_limit=TINY)
    message = str(error.value)
    assert str(data) in message and f"expected {expected} bytes" in message
    assert f"has {expected - 10} bytes" in message
    assert digest(tmp_path) == before  # nothing written, input untouched


def test_missing_data_file_is_refused_naming_it(tmp_path):
    path = write_form(sample_volume(np.uint16), tmp_path, "nhdr-list")
    (tmp_path / "slice_007.raw").unlink()
    with pytest.raises(bv.VolumeFileError, match=r"v\.nhdr: data file .*slice_007\.raw does not exist"):
        bv.resample_file(path, tmp_path / "out.nrrd", 2, stream=True)
    assert not (tmp_path / "out.nrrd").exists()


def test_truncated_gzip_fails_cleanly_with_no_output(tmp_path):
    volume = sample_volume(np.uint16, shape=(60, 40, 40))
    path = io.write_volume(volume, tmp_path / "in.nhdr", compress=True)
    data = tmp_path / "in.raw.gz"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(bv.VolumeFileError, match=r"in\.raw\.gz: .*(ends|corrupt)"):
        bv.resample_file(path, tmp_path / "out.nhdr", 2, stream=True, memory_limit=TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nhdr", "in.raw.gz"]


def test_cancel_stops_between_slabs_and_leaves_nothing(tmp_path):
    path = io.write_volume(sample_volume(np.uint16, shape=(40, 20, 20)), tmp_path / "in.nhdr")
    seen = []

    def cancel_at_half(fraction, message):
        seen.append(fraction)
        return fraction < 0.5

    with pytest.raises(bv.Cancelled):
        bv.resample_file(path, tmp_path / "out.nhdr", 2, stream=True, memory_limit=TINY, progress=cancel_at_half)
    assert 0.5 <= max(seen) < 0.6  # stopped at the first slab boundary after the request
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nhdr", "in.raw"]


def test_write_error_mid_stream_is_reported_and_cleaned_up(tmp_path):
    """A file-size limit makes the disk 'fill up' halfway through the output (as a full disk would)."""
    path = io.write_volume(sample_volume(np.uint16, shape=(64, 64, 64)), tmp_path / "in.nrrd", compress=False)
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40000, 40000))
        from bigvolume.cli.commands import main
        sys.exit(main(["resample", r"{path}", r"{tmp_path / 'out.nhdr'}", "--factor", "1", "1", "1",
                       "--stream", "--memory-limit", "1"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "out.nhdr: cannot write (File too large); nothing was written" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]


def test_unstreamable_requests_are_refused_before_reading(tmp_path):
    path = io.write_volume(sample_volume(np.uint16), tmp_path / "in.nhdr")
    with pytest.raises(bv.BigVolumeError, match="fft needs the whole volume"):
        bv.resample_file(path, tmp_path / "out.nhdr", 2, method="fft", stream=True)
    with pytest.raises(bv.VolumeFileError, match=r"out\.mha: streamed outputs are written as"):
        bv.resample_file(path, tmp_path / "out.mha", 2, stream=True)
    rgb = io.write_volume(sample_volume(np.uint8, components=3), tmp_path / "rgb.nrrd")
    with pytest.raises(bv.VolumeFileError, match="NIfTI stores vector components"):
        bv.resample_file(rgb, tmp_path / "out.nii", 2, stream=True)


def test_a_format_that_cannot_stream_is_read_whole_with_a_note(tmp_path, caplog):
    volume = sample_volume(np.int16, shape=(8, 6, 7))
    header = _sitk_header_lines(volume, tmp_path)
    text = "\n".join(header + ["encoding: ascii"]) + "\n\n" + " ".join(str(v) for v in volume.array.ravel())
    (tmp_path / "ascii.nrrd").write_text(text)
    assert isinstance(open_slabs(tmp_path / "ascii.nrrd"), WholeVolumeReader)
    report = bv.resample_file(tmp_path / "ascii.nrrd", tmp_path / "out.nrrd", 2, stream=True)
    assert report.stream_plan is None and "cannot be read in slabs" in report.notes[0]
    assert_matches_in_memory(read_back(tmp_path / "out.nrrd"), bv.resample(volume, 2))


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".nii.gz"])
def test_gzip_outputs_compressed_on_several_threads_are_one_standard_stream(tmp_path, monkeypatch, suffix):
    """Level 6 on one thread wrote 3-15 MB/s (longer than dehazing the volume). The pieces compressed on threads
    join into one gzip stream that gzip, zlib and SimpleITK read, about as small as one thread's, and the same
    bytes whatever the threads and the blocks written."""
    from bigvolume.io import slab_writers
    rng = np.random.default_rng(len(suffix))
    array = (rng.normal(1000, 30, (40, 150, 211)) + np.arange(211) * 3).astype(np.uint16)  # 2.4 MiB: 3 pieces
    array[5:9] = 0  # runs longer than a piece's primer too
    volume = bv.Volume(array, bv.Geometry((211, 150, 40), (0.5, 0.6, 0.7), (1, -2, 3)))
    written = {}
    for threads, blocks in ((1, [40]), (2, [1, 7, 32]), (5, [13, 13, 14]), (3, [3] * 13 + [1])):
        monkeypatch.setattr(slab_writers, "default_threads", lambda: threads)
        path = tmp_path / f"t{threads}" / f"out{suffix}"
        path.parent.mkdir()
        writer = SlabWriter(path, volume.geometry, np.uint16, compress=True)
        start = 0
        for size in blocks:
            writer.write(array[start:start + size])
            start += size
        writer.close()
        data = path.with_name("out.raw.gz") if suffix == ".nhdr" else path
        written[threads] = data.read_bytes()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), array)
        np.testing.assert_array_equal(read_back(path).array, array)
    assert len(set(written.values())) == 1  # the same file
    stream = written[1] if suffix == ".nii.gz" else written[1][written[1].index(b"\x1f\x8b"):]
    plain = gzip.decompress(stream)
    assert plain.endswith(array.tobytes())
    one_thread = len(gzip.compress(plain, 6))
    assert len(stream) <= 1.002 * one_thread, (len(stream), one_thread)


def test_an_aborted_gzip_output_stops_its_threads_and_closes_the_file(tmp_path, monkeypatch):
    from bigvolume.io import slab_writers
    monkeypatch.setattr(slab_writers, "default_threads", lambda: 3)
    volume = sample_volume(np.uint16, shape=(64, 256, 256))
    writer = SlabWriter(tmp_path / "v.nrrd", volume.geometry, np.uint16, compress=True)
    writer.write(volume.array[:60])  # 7.5 MiB: pieces on the threads
    gzip_file = writer._out
    assert gzip_file.pieces
    writer.abort()
    assert gzip_file.handle.closed and not gzip_file.pieces and gzip_file.pool._shutdown


def test_writer_refuses_to_finish_an_incomplete_volume(tmp_path):
    volume = sample_volume(np.uint16)
    writer = SlabWriter(tmp_path / "v.nhdr", volume.geometry, np.uint16)
    writer.write(volume.array[:5])
    with pytest.raises(bv.VolumeFileError, match="5 of 23 slices"):
        writer.close()


def test_streaming_memory_stays_bounded(tmp_path):
    """Peak memory of a streamed run grows by far less than the input (a 96 MiB volume, 16 MiB of buffers)."""
    array = np.zeros((192, 512, 512), np.uint16)
    array[:, 100:400, 100:400] = 1000
    path = io.write_volume(bv.Volume.from_array(array), tmp_path / "in.nhdr")
    del array
    script = textwrap.dedent(f"""
        import resource
        import bigvolume as bv
        from bigvolume.core.memory import current_rss
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        bv.resample_file(r"{path}", r"{tmp_path / 'out.nhdr'}", 4, stream=True,
                         memory_limit=current_rss() + 16 * 2**20)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split()[-1])
    assert growth < 40 * 2**20, f"peak grew by {growth / 2**20:.0f} MiB for a 96 MiB input"


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("parts", [2, 3])
def test_band_products_split_over_threads_equal_one_product(axis, parts):
    """BandMatrix.apply split over our threads (the streaming loop keeps BLAS to one thread) gives the unsplit
    result, whichever axis is filtered and whether the split runs along the leading or the trailing axes."""
    from concurrent.futures import ThreadPoolExecutor
    from bigvolume.methods.kernels import BandMatrix, axis_kernel
    rng = np.random.default_rng(7)
    shape = [(40, 6, 5), (5, 40, 6), (3, 4, 40)][axis]  # pre = 1 (split trailing), pre > 1, post = 1
    data = rng.normal(size=shape).astype(np.float32)
    n = shape[axis]
    band = BandMatrix(axis_kernel("lanczos", n, 2.5, -(-n * 2 // 5)), np, np.float32, block_inputs=8)
    assert len(band.blocks) > 1
    whole = band.apply(data, axis)
    with ThreadPoolExecutor(parts) as pool:
        split = band.apply(data, axis, pool, parts)
    np.testing.assert_allclose(split, whole, rtol=0, atol=1e-6)
    assert split.shape == whole.shape and split.shape[axis] == band.size_out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, factor", [(1024, 2.0), (300, 2.0), (256, 4.0), (100, 3.0), (77, 2.5), (64, 8.0)])
def test_runs_of_equal_blocks_as_one_batched_product_change_no_bit(n, factor, dtype):
    """The interior blocks of an integer factor's table are one dense block repeated: they run as one batched
    product over overlapping views, bit for bit the products block by block, along every axis."""
    from concurrent.futures import ThreadPoolExecutor
    from bigvolume.methods.kernels import BandMatrix, axis_kernel
    rng = np.random.default_rng(int(n * factor))
    kernel = axis_kernel("lanczos", n, factor, bv.core.geometry.output_size(n, factor))
    for block_inputs in (24, 96):
        band = BandMatrix(kernel, np, dtype, block_inputs)
        one_by_one = BandMatrix(kernel, np, dtype, block_inputs, batch=False)
        assert len(one_by_one.runs) == len(one_by_one.blocks)
        assert sum(run.count for run in band.runs) == len(band.blocks)
        if factor == int(factor) and len(band.blocks) > 5:
            assert len(band.runs) < len(band.blocks)  # batched where the blocks repeat
        for axis, shape in [(2, (3, 5, n)), (1, (2, n, 7)), (0, (n, 4, 6)), (1, (1, n, 33)), (2, (1, 1, n))]:
            data = rng.random(shape).astype(dtype)
            np.testing.assert_array_equal(band.apply(data, axis), one_by_one.apply(data, axis))
            with ThreadPoolExecutor(2) as pool:
                np.testing.assert_array_equal(band.apply(data, axis, pool, 2), one_by_one.apply(data, axis, pool, 2))


@pytest.mark.parametrize("n, factor", [(1024, 2.0), (300, 3.0), (256, 4.0), (77, 2.5), (40, 2.0)])
def test_x_blocks_by_outputs_and_products_of_few_rows_equal_the_taps(n, factor):
    """The x pass's blocking (block_outputs outputs per block, at most product_rows rows per product, as the
    numpy backend runs it: X_BLOCK_OUTPUTS, X_PRODUCT_ROWS) gives the tap-by-tap result and the default blocks',
    whatever the rows left over for the last product, split over threads or not."""
    from concurrent.futures import ThreadPoolExecutor
    from bigvolume.methods.kernels import BandMatrix, apply_axis, axis_kernel
    rng = np.random.default_rng(int(n * factor))
    size_out = bv.core.geometry.output_size(n, factor)
    kernel = axis_kernel("lanczos", n, factor, size_out)
    for outputs, rows in [(16, 128), (5, 7), (16, 64)]:
        band = BandMatrix(kernel, np, np.float32, block_outputs=outputs, product_rows=rows)
        assert len(band.blocks) == -(-size_out // outputs)
        for shape in [(3, 100, n), (1, 1, n), (2, 3 * rows + 5, n)]:
            data = rng.random(shape).astype(np.float32)
            taps = apply_axis(data, kernel, 2, "sum", np.float32)
            blocked = band.apply(data, 2)
            np.testing.assert_allclose(blocked, taps, rtol=0, atol=2e-6)
            np.testing.assert_allclose(blocked, BandMatrix(kernel, np, np.float32).apply(data, 2), rtol=0, atol=2e-6)
            with ThreadPoolExecutor(2) as pool:
                np.testing.assert_allclose(band.apply(data, 2, pool, 2), taps, rtol=0, atol=2e-6)


def test_streaming_keeps_blas_to_one_thread_and_restores_it(tmp_path):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    volume = sample_volume(np.uint16, shape=(30, 20, 24))
    path = io.write_volume(volume, tmp_path / "in.nrrd")
    seen = []

    def progress(fraction, message):  # called between slabs, inside the loop
        if message.startswith("slab"):
            seen.extend(info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas")

    before = [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    bv.resample_file(path, tmp_path / "out.nhdr", 2, stream=True, memory_limit=TINY, progress=progress)
    after = [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    assert seen and set(seen) == {1}
    assert after == before


def test_vtk_backend_reads_whole_and_equals_the_streamed_default(tmp_path):
    """vtkImageResize (--backend vtk), the definition of the Lanczos kernel, reads the volume whole; the default
    backend streams and agrees with it to float rounding, geometry included."""
    volume = sample_volume(np.uint16, shape=(29, 21, 26))
    path = io.write_volume(volume, tmp_path / "in.nhdr")
    streamed = bv.resample_file(path, tmp_path / "s.nhdr", (2, 2.5, 3), stream=True, memory_limit=TINY)
    oracle = bv.resample_file(path, tmp_path / "v.nhdr", (2, 2.5, 3), backend="vtk", memory_limit=TINY)
    assert streamed.stream_plan is not None and oracle.stream_plan is None
    assert any("backend vtk cannot stream" in note for note in oracle.notes)
    assert_matches_in_memory(read_back(tmp_path / "s.nhdr"), read_back(tmp_path / "v.nhdr"))
    with pytest.raises(bv.BigVolumeError, match="backend vtk .* cannot stream"):
        bv.resample_file(path, tmp_path / "x.nhdr", 2, backend="vtk", stream=True)
    assert not (tmp_path / "x.nhdr").exists()
    from bigvolume.cli.commands import main
    assert main(["resample", str(path), str(tmp_path / "c.nhdr"), "--factor", "2", "--backend", "vtk",
                 "--quiet"]) == 0
    np.testing.assert_array_equal(read_back(tmp_path / "c.nhdr").array,
                                  bv.resample(volume, 2, backend="vtk").array)


def test_resident_memory_is_read_where_there_is_no_proc(monkeypatch):
    """Outside Linux (no /proc/self/statm) the resident memory read 0, so slab plans and the pyramid's fit took
    nothing as in use (inside Slicer, gigabytes). Without /proc it is now the peak so far (macOS, getrusage) or
    the working set (Windows): not below what this process holds now."""
    import builtins

    from bigvolume.core import memory
    held = np.ones(64 * 2**20, np.uint8)  # 64 MiB resident
    now = memory.current_rss()
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", no_proc)
    assert now >= held.nbytes and memory.current_rss() >= 0.9 * now  # (the peak is updated lazily)


def test_a_file_read_whole_is_not_reported_as_streamed(tmp_path, caplog):
    """Components on the slow axis of a NRRD (kinds domain domain domain list) are read whole by SimpleITK: the run
    was planned and reported as streamed in small slabs (a helper measured 4 GiB resident at a 256 MB limit) and
    the note that the file is read whole never came."""
    array = (np.arange(2 * 20 * 30 * 40) % 1000).astype(np.uint16).reshape(2, 20, 30, 40)
    array.tofile(tmp_path / "A.raw")
    (tmp_path / "perm.nhdr").write_text("NRRD0004\ntype: uint16\ndimension: 4\nsizes: 40 30 20 2\n"
                                        "kinds: domain domain domain list\nendian: little\nencoding: raw\n"
                                        "spacings: 1 1 1 nan\ndata file: A.raw\n")
    from bigvolume.engine.plan import plan_input
    assert not plan_input(tmp_path / "perm.nhdr").reads_in_slabs
    report = bv.resample_file(tmp_path / "perm.nhdr", tmp_path / "out.nhdr", 2, stream=True, memory_limit=1)
    assert report.stream_plan is None and "streamed" not in report.summary()
    assert any("cannot be read in slabs; reading it whole" in r.getMessage() for r in caplog.records)
    whole = bv.resample_file(tmp_path / "perm.nhdr", tmp_path / "whole.nhdr", 2, stream=False)
    np.testing.assert_array_equal(bv.read_volume(report.output_path).array, bv.read_volume(whole.output_path).array)


def test_no_stream_over_the_limit_says_it_was_asked_for(tmp_path, caplog):
    """--no-stream over the memory limit said "backend numpy cannot stream", which it can: the reason is the
    option."""
    path = bv.write_volume(bv.Volume.from_array(np.zeros((8, 30, 40), np.uint16)), tmp_path / "in.nhdr")
    bv.resample_file(path, tmp_path / "out.nhdr", 2, stream=False, memory_limit=1000)
    said = [r.getMessage() for r in caplog.records if "reading it whole" in r.getMessage()]
    assert said == [f"{path}: reading it whole (as asked) needs about "
                    f"{said[0].split('needs about ')[1].split(',')[0]}, more than the memory limit 1000 B"], said
