"""bigvolume.io.nrrd_geometry reads plain NRRD headers without SimpleITK: what it gives must be what SimpleITK gives,
to the last bit, and what it does not take must go to SimpleITK.

Families of headers from seeded generators: every pixel type name, LPS/RAS/LAS (long and short names), identity,
flipped, rotated and skewed axes, spacings from 1e-4 to 1e4, numbers written in several forms, with and without
origin, kinds and harmless fields, attached and detached data, both byte orders."""
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
from bigvolume.core.errors import VolumeFileError
from bigvolume.io.nrrd_geometry import NRRD_TYPE_NAMES, SPACE_FLIPS, nrrd_geometry

SEEDS = [0, 1, 2, 3]
HEADERS_PER_SEED = 40
EXTRA_FIELDS = {"content": "a scan", "space units": '"mm" "mm" "mm"', "labels": '"x" "y" "z"', "min": "0",
                "old max": "4095", "measurement frame": "(1,0,0) (0,1,0) (0,0,1)", "byte skip": "0",
                "line skip": "0", "sample units": "HU"}


def number(rng: random.Random, value: float) -> str:
    """``value`` written in one of several forms (the short ones only where they keep it exactly)."""
    form = rng.randrange(5 if value == round(value, 3) else 3)
    if form == 0:
        return repr(value)
    if form == 1:
        return f"{value:.17g}"
    if form == 2:
        return f"{value:.6e}"
    if form == 3:
        return f"{value:.3f}"
    return f"{value:g}"


def vector(rng: random.Random, values) -> str:
    inner = rng.choice([",", ", ", " , "]).join(number(rng, float(v)) for v in values)
    return f"({inner})" if rng.random() < 0.8 else f"( {inner} )"


def axes(rng: random.Random) -> np.ndarray:
    """Columns: the three axes' space directions (unit length x spacing)."""
    form = rng.randrange(4)
    if form == 0:
        matrix = np.eye(3)
    elif form == 1:
        matrix = np.diag([rng.choice([-1.0, 1.0]) for _ in range(3)])[:, rng.sample(range(3), 3)]
    else:
        q = np.array([rng.gauss(0, 1) for _ in range(4)])
        a, b, c, d = q / np.linalg.norm(q)
        matrix = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                           [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                           [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])
        if form == 3:  # skewed: not orthogonal
            matrix = matrix + np.array([[rng.uniform(-0.3, 0.3) for _ in range(3)] for _ in range(3)])
    spacing = [10 ** rng.uniform(-4, 4) if rng.random() < 0.6 else rng.choice([0.1, 0.3, 0.5, 1.0, 2.0])
               for _ in range(3)]
    return matrix * spacing


def plain_header(rng: random.Random, folder: Path, name: str) -> Path:
    """A valid plain 3D header (and its data)."""
    sizes = [rng.randint(1, 7) for _ in range(3)]
    type_name = rng.choice([n for names in NRRD_TYPE_NAMES.values() for n in names])
    fields = [("type", type_name), ("dimension", "3"), ("space", rng.choice(list(SPACE_FLIPS))),
              ("sizes", " ".join(map(str, sizes))),
              ("space directions", " ".join(vector(rng, column) for column in axes(rng).T))]
    if rng.random() < 0.8:
        fields.append(("space origin", vector(rng, [rng.uniform(-500, 500) for _ in range(3)])))
    if rng.random() < 0.5:
        fields.append(("kinds", " ".join(rng.choice(["domain", "space"]) for _ in range(3))))
    fields += [("endian", rng.choice(["little", "big"])), ("encoding", rng.choice(["raw", "gzip", "bzip2"]))]
    fields += rng.sample(sorted(EXTRA_FIELDS.items()), rng.randint(0, 3))
    data = b"\0" * (8 * int(np.prod(sizes)))
    lines = ["NRRD0004" if rng.random() < 0.8 else "NRRD0005"]
    if rng.random() < 0.3:
        lines.append("# written by a test")
    if rng.random() < 0.5:
        path = folder / f"{name}.nhdr"
        (folder / f"{name}.raw").write_bytes(data)
        fields.append(("data file", f"{name}.raw"))
        data = b""
    else:
        path = folder / f"{name}.nrrd"
    lines += [f"{key}: {value}" for key, value in fields]
    path.write_bytes(("\n".join(lines) + "\n\n").encode() + data)
    return path


def simpleitk_header(path: Path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def bits(values) -> list[int]:
    """Exact float64 bit patterns (signed zeros differ)."""
    return np.asarray(values, dtype=np.float64).ravel().view(np.uint64).tolist()


def assert_same_as_simpleitk(path: Path, ours) -> None:
    reader = simpleitk_header(path)
    geometry, dtype, components = ours
    assert reader.GetDimension() == 3 and components == reader.GetNumberOfComponents() == 1
    assert geometry.dimensions == reader.GetSize()
    assert bits(geometry.spacing) == bits(reader.GetSpacing()), path.read_text("latin-1")[:600]
    assert bits(geometry.origin) == bits(reader.GetOrigin()), path.read_text("latin-1")[:600]
    assert bits(geometry.direction) == bits(reader.GetDirection()), path.read_text("latin-1")[:600]
    image = sitk.Image([1, 1, 1], reader.GetPixelID(), 1)
    assert dtype == sitk.GetArrayViewFromImage(image).dtype


@pytest.mark.parametrize("seed", SEEDS)
def test_plain_headers_are_read_here_exactly_as_simpleitk_reads_them(tmp_path, seed):
    rng = random.Random(seed)
    for number_ in range(HEADERS_PER_SEED):
        path = plain_header(rng, tmp_path, f"h{number_}")
        ours = nrrd_geometry(path)
        assert ours is not None, path.read_text("latin-1")[:600]
        assert_same_as_simpleitk(path, ours)
        assert bv.read_geometry(path) == ours


def mutated_header(rng: random.Random, folder: Path, name: str) -> Path:
    """A plain header with one change that NrrdIO may or may not accept."""
    path = plain_header(rng, folder, name)
    header, _, data = path.read_bytes().partition(b"\n\n")
    lines = header.decode().split("\n")
    kind = rng.randrange(11)
    at = rng.randrange(1, len(lines))
    if kind == 0:  # fields out of order
        body = lines[1:]
        rng.shuffle(body)
        lines = lines[:1] + body
    elif kind == 1:
        lines[at] += " "
    elif kind == 2:
        lines.insert(at, rng.choice(["spacings: 1 2 3", "axis mins: 0 0 0", "centerings: cell cell cell",
                                     "space dimension: 3", "thicknesses: 1 1 1", "units: \"mm\" \"mm\" \"mm\""]))
    elif kind == 3:
        lines[0] = rng.choice(["NRRD0001", "NRRD0003", "NRRD0006", "NRRD"])
    elif kind == 4:
        lines.insert(at, lines[at])
    elif kind == 5:
        lines.insert(at, rng.choice(["line skip: 1", "byte skip: lots", "byte skip: -2", "endian: middle"]))
    elif kind == 6:
        lines = [line for line in lines if not line.startswith(("endian", "space origin", "space:", "encoding"))]
    elif kind == 7:
        lines = [rng.choice(["Type: ushort", "type: USHORT", "type: block", "type: uint16_t"])
                 if line.startswith("type") else line for line in lines]
    elif kind == 8:
        lines = [f"space: {rng.choice(['scanner-xyz', '3D-right-handed', 'RAS', 'Right-Anterior-Superior'])}"
                 if line.startswith("space:") else line for line in lines]
    elif kind == 9:
        lines = [line.replace("(", "(nan," if rng.random() < 0.5 else "(0,", 1) if line.startswith("space d")
                 else line for line in lines]
    else:
        for data_file in folder.glob(f"{name}.raw"):
            data_file.unlink()
    path.write_bytes("\n".join(lines).encode() + b"\n\n" + data)
    return path


@pytest.mark.parametrize("seed", SEEDS)
def test_other_headers_go_to_simpleitk_or_agree_with_it(tmp_path, seed):
    rng = random.Random(seed)
    taken = left = 0
    for number_ in range(HEADERS_PER_SEED):
        path = mutated_header(rng, tmp_path, f"m{number_}")
        ours = nrrd_geometry(path)
        if ours is None:
            left += 1
            continue
        taken += 1
        assert_same_as_simpleitk(path, ours)  # raises if SimpleITK refuses what was taken here
    assert taken and left  # the family has both


def test_a_refused_header_still_gets_simpleitk_s_answer_in_plain_words(tmp_path):
    path = tmp_path / "v.nhdr"
    path.write_text("NRRD0004\ntype: ushort\ndimension: 3\nsizes: 2 2 2\nendian: little\nencoding: raw\n"
                    "space: LPS\nspace directions: (1,0,0) (0,1,0) (0,0,1)\ndata file: gone.raw\n")
    assert nrrd_geometry(path) is None
    with pytest.raises(VolumeFileError, match="v.nhdr: data file .*gone.raw does not exist"):
        bv.read_geometry(path)


@pytest.mark.parametrize("suffix, loads", [(".nrrd", False), (".nhdr", False), (".nii", True)])
def test_streaming_a_plain_nrrd_never_loads_simpleitk(tmp_path, suffix, loads):
    """SimpleITK costs about 90 MiB: a streamed resample of a plain NRRD does without it (a NIfTI needs it: the
    check can fail)."""
    source = tmp_path / f"in{suffix}"
    volume = bv.Volume.from_array(np.arange(24 * 20 * 16, dtype=np.uint16).reshape(16, 20, 24),
                                  spacing=(0.5, 0.6, 0.7), origin=(3, -4, 5))
    bv.write_volume(volume, source, compress=False)
    script = (f"import sys, bigvolume as bv\n"
              f"bv.read_geometry({str(source)!r})\n"
              f"bv.resample_file({str(source)!r}, {str(tmp_path / 'out.nhdr')!r}, 2, stream=True)\n"
              f"print('SimpleITK' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == str(loads), done.stderr
    assert bv.read_geometry(tmp_path / "out.nhdr")[0].spacing == pytest.approx((1.0, 1.2, 1.4))
