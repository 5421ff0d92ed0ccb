"""Errors in plain words: a family of bad inputs through every command gives one line on stderr that names the
file, and never a library's source path, class name or traceback (nor the chatter ITK prints on its own)."""
import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
from bigvolume.cli import commands as cli
from bigvolume.io import files as io

LIBRARY_WORDS = re.compile(r"itk::|sitk|vtk|Traceback|NrrdImageIO|MetaImageIO|NiftiImageIO|M_ReadElementsData|"
                           r"\[nrrd\]|\.cxx|\.hxx|0x[0-9a-f]{6,}|Exception thrown", re.IGNORECASE)
GEOMETRY = ("space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n")


def bad_inputs(folder: Path) -> dict[str, Path]:
    """Files people really pass by mistake, and files damaged in the ways files get damaged."""
    good = bv.Volume.from_array(np.random.default_rng(5).integers(0, 900, (12, 14, 16)).astype(np.int16))
    files = {}

    def write(name, content):
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        files[name] = path
    write("text.nrrd", "hello\n")
    write("empty.nii.gz", b"")
    write("empty.mha", b"")
    write("random.mha", np.random.default_rng(0).bytes(3000))
    write("random.nii", np.random.default_rng(1).bytes(3000))
    write("notgzip.nii.gz", "this is plain text, not gzip\n" * 20)
    write("sizes.nrrd", "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4\nencoding: raw\n\n" + "x" * 64)
    write("badtype.nrrd", "NRRD0004\ntype: complex\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n" + "x" * 8)
    write("time.nrrd", "NRRD0004\ntype: uint8\ndimension: 4\nsizes: 2 2 2 3\nkinds: domain domain domain time\n"
          "encoding: raw\n" + GEOMETRY.replace("(0,0,1)", "(0,0,1) none") + "\n" + "x" * 24)
    write("skip.nhdr", "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\nbyte skip: 5000\n"
          + GEOMETRY + "data file: skip.raw\n")
    write("skip.raw", bytes(8))
    write("missing.nhdr", "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n" + GEOMETRY
          + "data file: nowhere.raw\n")
    write("encoding.nrrd", "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: zstd\n\n" + "x" * 8)
    sitk.WriteImage(sitk.Image([3, 3], sitk.sitkUInt8), str(folder / "flat.nrrd"))
    files["flat.nrrd"] = folder / "flat.nrrd"
    sitk.WriteImage(sitk.Image([3, 3, 3, 2], sitk.sitkUInt8), str(folder / "series.nii.gz"))
    files["series.nii.gz"] = folder / "series.nii.gz"
    mha = io.write_volume(good, folder / "cut.mha", compress=True)
    mha.write_bytes(mha.read_bytes()[:-300])
    files["cut.mha"] = mha
    nii = io.write_volume(good, folder / "cut.nii.gz")
    nii.write_bytes(nii.read_bytes()[:len(nii.read_bytes()) // 2])
    files["cut.nii.gz"] = nii
    mhd = io.write_volume(good, folder / "short.mhd", compress=False)
    raw = folder / "short.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    files["short.mhd"] = mhd
    files["folder"] = folder
    gz = folder / "header_only.nii.gz"
    gz.write_bytes(gzip.compress(b"\x5c\x01" + bytes(200)))
    files["header_only.nii.gz"] = gz
    return files


CASES = ["text.nrrd", "empty.nii.gz", "empty.mha", "random.mha", "random.nii", "notgzip.nii.gz", "sizes.nrrd",
         "badtype.nrrd", "time.nrrd", "skip.nhdr", "missing.nhdr", "encoding.nrrd", "flat.nrrd", "series.nii.gz",
         "cut.mha", "cut.nii.gz", "short.mhd", "folder", "header_only.nii.gz"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_plain_line_in_every_command(tmp_path, capfd, case):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir(), out.mkdir()
    source = bad_inputs(inputs)[case]
    for args in (["resample", source, out / "o.nrrd", "--device", "cpu"], ["dehaze", source, out / "o.nrrd"],
                 ["reduce-bits", source, out / "o.nrrd", "--bits", "8"], ["preview", source, out / "o.png"],
                 ["resample", source, out / "o.nhdr", "--stream", "--device", "cpu"]):
        code = cli.main([str(a) for a in args])
        captured = capfd.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 1, (args[0], captured.err)
        assert len(lines) == 1 and lines[0].startswith("bigvolume: error: "), (args[0], captured.err)
        assert str(source.name) in lines[0], lines[0]
        assert not LIBRARY_WORDS.search(lines[0]), lines[0]
        assert not re.search(r"/\S+\.(c|cc|cpp|h)\b", lines[0]), lines[0]
        assert list(out.iterdir()) == []
