"""Property-based tests of the header parsers (NRRD/NHDR, NIfTI, MetaImage, image-stack patterns): random mutations
of valid headers (byte flips, truncations, field values changed to huge, negative, zero or garbage) are either read
correctly or refused with one VolumeFileError line: never another exception, never a hang, never a partial output.

Bounded in `make test` (a fixed set of examples per parser, derandomized); `make fuzz` runs the same tests with
many more (BIGVOLUME_FUZZ=1 selects the hypothesis profile "fuzz")."""
import gzip
import os
import signal
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import bigvolume as bv  # noqa: E402
from bigvolume.cli import commands as cli  # noqa: E402
from bigvolume.io import files as io
from bigvolume.core.errors import VolumeFileError  # noqa: E402
from bigvolume.io.stacks import find_slices  # noqa: E402

settings.register_profile("default", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# BIGVOLUME_FUZZ=1: the long run (3000 examples per test); another number: that many.
FUZZ = int(os.environ.get("BIGVOLUME_FUZZ") or 0)
settings.register_profile("fuzz", max_examples=3000 if FUZZ == 1 else max(FUZZ, 1), deadline=None, derandomize=False, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("fuzz" if FUZZ else "default")

EXAMPLE_SECONDS = 20  # one example reads a file of a few KiB: far more than this is a hang
VALUES = ["0", "-1", "-7", "1", "3", "99999999999", "4294967297", "1e308", "nan", "inf", "abc", "", "%d", "LIST",
          "(1,2)", "(nan,0,0) (0,1,0) (0,0,1)", "none", "gzip", "bzip2", "raw", "ascii", "big", "True", "MET_FLOAT"]


@contextmanager
def time_limit(seconds: int):
    def too_long(_signum, _frame):
        raise TimeoutError(f"one example took more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def reference_volume() -> bv.Volume:
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(7, 6, 5) * 3 - 100
    return bv.Volume.from_array(array, spacing=(0.5, 0.75, 1.25), origin=(-4.0, 2.0, 9.5))


def text_mutation():
    """A mutation of a text header: (kind, position draw, value)."""
    return st.tuples(st.sampled_from(["value", "flip", "truncate", "drop line", "duplicate line"]),
                     st.floats(0, 1, allow_nan=False), st.sampled_from(VALUES), st.integers(1, 255))


def mutate_text_header(header: bytes, mutations) -> bytes:
    lines = header.split(b"\n")
    for kind, where, value, bits in mutations:
        if kind == "value":
            index = int(where * (len(lines) - 1))
            for separator in (b": ", b" = "):
                if separator in lines[index]:
                    lines[index] = lines[index].split(separator, 1)[0] + separator + value.encode()
        elif kind == "drop line" and len(lines) > 1:
            del lines[int(where * (len(lines) - 1))]
        elif kind == "duplicate line":
            index = int(where * (len(lines) - 1))
            lines.insert(index, lines[index])
        else:
            content = bytearray(b"\n".join(lines))
            at = int(where * max(0, len(content) - 1))
            if kind == "flip" and content:
                content[at] ^= bits
            elif kind == "truncate":
                del content[at:]
            lines = bytes(content).split(b"\n")
    return b"\n".join(lines)


def check_read(path: Path, out_folder: Path) -> None:
    """The property: read_volume gives a volume whose array matches its geometry, or one VolumeFileError line; the
    command line then writes a whole output (exit 0) or nothing (exit 1)."""
    if os.environ.get("FUZZ_SAVE"):  # FUZZ_SAVE=PATH: a copy of the example, for when a library crashes the process
        Path(os.environ["FUZZ_SAVE"]).write_bytes(path.read_bytes())
    with time_limit(EXAMPLE_SECONDS):
        try:
            volume = bv.read_volume(path)
        except VolumeFileError as error:
            assert len(str(error).splitlines()) == 1 and str(path.name) in str(error), str(error)
            readable = False
        else:
            assert volume.array.shape[:3] == volume.geometry.shape
            assert np.isfinite(volume.geometry.spacing).all() and np.isfinite(volume.geometry.origin).all()
            readable = True
        code = cli.main(["resample", str(path), str(out_folder / "out.nrrd"), "--factor", "2", "--quiet",
                         "--device", "cpu"])
    written = sorted(p.name for p in out_folder.iterdir())
    assert (code, written) in ((0, ["out.nrrd"]), (1, [])), (code, written)
    assert readable or code == 1
    for item in out_folder.iterdir():
        item.unlink()


@contextmanager
def folders():
    with tempfile.TemporaryDirectory(prefix="bigvolume-fuzz-") as folder:
        inputs, outputs = Path(folder) / "in", Path(folder) / "out"
        inputs.mkdir(), outputs.mkdir()
        yield inputs, outputs


def split_attached(path: Path) -> tuple[bytes, bytes]:
    content = path.read_bytes()
    end = content.index(b"\n\n") + 2
    return content[:end], content[end:]


@pytest.mark.parametrize("form", ["nrrd", "nhdr-gzip", "nhdr-pattern"])
@given(mutations=st.lists(text_mutation(), min_size=1, max_size=3))
def test_mutated_nrrd_headers(form, mutations):
    with folders() as (inputs, outputs):
        volume = reference_volume()
        if form == "nrrd":
            header, data = split_attached(io.write_volume(volume, inputs / "v.nrrd", compress=False))
            (inputs / "v.nrrd").write_bytes(mutate_text_header(header, mutations) + data)
            check_read(inputs / "v.nrrd", outputs)
            return
        if form == "nhdr-gzip":
            io.write_volume(volume, inputs / "v.nhdr", compress=True)
        else:  # one slice per file, a printf pattern
            io.write_volume(volume, inputs / "v.nhdr", compress=False)
            text = (inputs / "v.nhdr").read_text().replace("data file: v.raw", "data file: s%03d.raw 0 6 1 2")
            (inputs / "v.nhdr").write_text(text)
            for k in range(7):
                (inputs / f"s{k:03d}.raw").write_bytes(volume.array[k].astype("<i2").tobytes())
        header = inputs / "v.nhdr"
        header.write_bytes(mutate_text_header(header.read_bytes(), mutations))
        check_read(header, outputs)


@pytest.mark.parametrize("compressed", [False, True])
@given(mutations=st.lists(text_mutation(), min_size=1, max_size=3))
def test_mutated_metaimage_headers(compressed, mutations):
    with folders() as (inputs, outputs):
        path = io.write_volume(reference_volume(), inputs / "v.mha", compress=compressed)
        content = path.read_bytes()
        end = content.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
        path.write_bytes(mutate_text_header(content[:end], mutations) + content[end:])
        check_read(path, outputs)


# NIfTI-1 fields worth mutating: (offset, struct format).
NIFTI_FIELDS = [(0, "i"), (40, "h"), (42, "h"), (44, "h"), (46, "h"), (48, "h"), (70, "h"), (72, "h"), (76, "f"),
                (80, "f"), (84, "f"), (88, "f"), (108, "f"), (112, "f"), (116, "f"), (252, "h"), (254, "h"),
                (256, "f"), (268, "f"), (280, "f"), (344, "4s")]
NIFTI_VALUES = [0, -1, 1, 3, 4, 7, 8, 16, 256, 32767, -32768, 2**31 - 1, 1e30, -1e30, float("nan"), float("inf"),
                348, 352, 1e9]


def nifti_value(fmt: str, value):
    if fmt == "4s":
        return struct.pack("4s", b"n+1\0" if value == 0 else b"xy1\0")
    try:
        if fmt in "hi":
            value = int(value) if np.isfinite(value) else 0
            limit = 2**15 if fmt == "h" else 2**31
            value = max(-limit, min(limit - 1, value))
        return struct.pack("<" + fmt, value)
    except (struct.error, OverflowError, ValueError):
        return struct.pack("<" + fmt, 0)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@given(mutations=st.lists(st.one_of(
    st.tuples(st.just("field"), st.sampled_from(NIFTI_FIELDS), st.sampled_from(NIFTI_VALUES)),
    st.tuples(st.just("flip"), st.integers(0, 351), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2000), st.just(0))), min_size=1, max_size=3))
def test_mutated_nifti_headers(suffix, mutations):
    with folders() as (inputs, outputs):
        path = io.write_volume(reference_volume(), inputs / f"v{suffix}")
        content = bytearray(gzip.decompress(path.read_bytes()) if suffix == ".nii.gz" else path.read_bytes())
        for kind, where, value in mutations:
            if kind == "field":
                offset, fmt = where
                packed = nifti_value(fmt, value)
                content[offset:offset + len(packed)] = packed
            elif kind == "flip":
                if where < len(content):
                    content[where] ^= value
            else:
                del content[where:]
        path.write_bytes(gzip.compress(bytes(content)) if suffix == ".nii.gz" else bytes(content))
        check_read(path, outputs)


@given(pattern=st.text(alphabet="%0123456789dsxi*?[]._-/ab", min_size=1, max_size=16))
def test_stack_patterns(pattern):
    with folders() as (inputs, _):
        for k in (1, 2, 10):
            sitk.WriteImage(sitk.Image([4, 3], sitk.sitkUInt8), str(inputs / f"s_{k:03d}.png"))
        with time_limit(EXAMPLE_SECONDS):
            try:
                found = find_slices(str(inputs / pattern))
            except VolumeFileError as error:
                assert len(str(error).splitlines()) == 1
            else:
                assert found.files and all(path.is_file() for path in found.files)
