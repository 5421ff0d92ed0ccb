"""The `bigvolume` command line, run as a subprocess the way users run it."""
import hashlib
import signal
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bigvolume as bv
from bigvolume.io import files as io
from bigvolume.testing import quality

BIGVOLUME = [sys.executable, "-m", "bigvolume"]


def run(*args, cwd=None):
    return subprocess.run(BIGVOLUME + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def anisotropic_input(tmp_path):
    """A phantom with anisotropic spacing, a non-zero origin and a flipped axis, as NRRD and NIfTI."""
    volume = bv.Volume.from_array(quality.microct_phantom(48)[:, :, 3:], spacing=(0.6, 0.45, 1.3),
                                  origin=(-11.5, 22.0, 5.25), direction=np.diag([1.0, -1.0, 1.0]))
    return volume, {suffix: io.write_volume(volume, tmp_path / f"in{suffix}") for suffix in (".nrrd", ".nii.gz")}


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
@pytest.mark.parametrize("factor_args, factors", [(["4"], (4, 4, 4)), (["2", "3", "1"], (2, 3, 1)),
                                                  (["2.5"], (2.5, 2.5, 2.5))])
def test_resample_geometry_is_exact(tmp_path, anisotropic_input, suffix, factor_args, factors):
    volume, inputs = anisotropic_input
    out = tmp_path / f"out{suffix}"
    result = run("resample", inputs[suffix], out, "--factor", *factor_args)
    assert result.returncode == 0, result.stderr
    assert "->" in result.stdout and "s" in result.stdout  # the one-line summary
    got = bv.read_volume(out)
    source = bv.read_volume(inputs[suffix]).geometry
    tolerance = 1e-5 if suffix == ".nii.gz" else 1e-12
    expected_dims = tuple(max(1, int(np.floor(n / f + 0.5))) for n, f in zip(volume.geometry.dimensions, factors))
    assert got.geometry.dimensions == expected_dims
    np.testing.assert_allclose(got.geometry.spacing, np.multiply(factors, source.spacing), rtol=tolerance)
    np.testing.assert_allclose(got.geometry.origin, source.physical_point([(f - 1) / 2 for f in factors]),
                               atol=tolerance * 100)
    np.testing.assert_allclose(got.geometry.direction, source.direction, atol=tolerance)
    assert got.array.dtype == np.uint16


def test_spacing_method_threads_and_type_options(tmp_path, anisotropic_input):
    _, inputs = anisotropic_input
    out = tmp_path / "out.nhdr"
    result = run("resample", inputs[".nrrd"], out, "--spacing", "1.2", "0.9", "2.6", "--method", "mean",
                 "--threads", "1", "--type", "float32")
    assert result.returncode == 0, result.stderr
    got = bv.read_volume(out)
    assert got.geometry.spacing == (1.2, 0.9, 2.6) and got.array.dtype == np.float32
    small = tmp_path / "small.nrrd"
    assert run("resample", inputs[".nrrd"], small, "--target-size", "20KB", "--no-compress").returncode == 0
    assert bv.read_volume(small).array.nbytes <= 20_000


def test_stream_and_memory_limit_options(tmp_path, anisotropic_input):
    volume, inputs = anisotropic_input
    streamed, loaded = tmp_path / "streamed.nhdr", tmp_path / "loaded.nhdr"
    result = run("resample", inputs[".nrrd"], streamed, "--factor", "3", "--stream", "--memory-limit", "64KB")
    assert result.returncode == 0, result.stderr
    assert "streamed in 48 slabs of 1 slice" in result.stdout  # 48 input slices, one per slab under 64 KB
    assert "leaves no room beside" in result.stderr  # the limit was below what the program itself uses
    # what does not fit are the buffers of 20000 filter threads, not the program's few MiB (the note said so)
    many = run("resample", inputs[".nrrd"], tmp_path / "many.nhdr", "--factor", "3", "--stream", "--memory-limit",
               "2GB", "--threads", "20000")
    assert many.returncode == 0 and "leaves no room for these buffers alone" in many.stderr, many.stderr
    assert run("resample", inputs[".nrrd"], loaded, "--factor", "3", "--no-stream").returncode == 0
    a, b = bv.read_volume(streamed), bv.read_volume(loaded)
    assert a.geometry == b.geometry and np.abs(a.array.astype(int) - b.array.astype(int)).max() <= 1
    automatic = run("resample", inputs[".nrrd"], tmp_path / "auto.nrrd", "--memory-limit", "100KB")
    assert automatic.returncode == 0 and "streamed in" in automatic.stdout  # input bigger than the limit
    bad = run("resample", inputs[".nrrd"], tmp_path / "x.nrrd", "--memory-limit", "lots")
    assert bad.returncode == 2 and "not a size: 'lots'" in bad.stderr


def test_ctrl_c_while_streaming_exits_130_and_leaves_nothing(tmp_path):
    # Big enough that one slice per slab on one thread takes about a second: the signal must arrive mid-run.
    array = np.random.default_rng(0).integers(0, 4000, (512, 384, 384)).astype(np.uint16)
    source = io.write_volume(bv.Volume.from_array(array), tmp_path / "in.nhdr")
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    process = subprocess.Popen(BIGVOLUME + ["resample", str(source), str(tmp_path / "out.nhdr"), "--stream",
                                            "--memory-limit", "1", "--method", "lanczos", "--threads", "1"],
                               stderr=subprocess.PIPE, text=True,
                               # A shell running us in the background ignores SIGINT, and children inherit that:
                               # give the command the default, as a terminal would.
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.nhdr.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.005)  # the staging folder appears when writing starts
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted; nothing written" in stderr and "Traceback" not in stderr
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before


def test_help_and_version():
    for args in (["--help"], ["resample", "--help"], ["demo", "--help"]):
        result = run(*args)
        assert result.returncode == 0 and "usage:" in result.stdout
    assert all(name in run("resample", "--help").stdout for name in bv.METHODS)
    assert run("--version").stdout.strip() == f"bigvolume {bv.__version__}"


@pytest.mark.parametrize("text, value", [("-12", -12.0), ("-1.5", -1.5), ("-.5", -0.5), ("-1.5e3", -1500.0),
                                         ("-2E-3", -0.002), ("-1e+2", -100.0), ("-7.", -7.0)])
def test_negative_numbers_in_every_notation_are_values_not_options(tmp_path, text, value):
    from bigvolume.cli.commands import build_parser
    parser = build_parser()
    args = parser.parse_args(["reduce-bits", "in.nrrd", "out.nrrd", "--bits", "16", "--window", text, "3e3"])
    assert args.window == [value, 3000.0]
    args = parser.parse_args(["import-stack", "slices", "out.nhdr", "--origin", text, "0", text])
    assert args.origin == [value, 0.0, value]
    with pytest.raises(SystemExit):  # a word after a dash is still an option, and an unknown one is refused
        parser.parse_args(["reduce-bits", "in.nrrd", "out.nrrd", "--bits", "16", "-e3"])


def bad_cases(folder: Path, good: Path):
    (folder / "text.nrrd").write_text("hello\n")
    (folder / "bad_header.nhdr").write_text("NRRD0004\ntype: uint16\ndimension: 3\nsizes: 4 4\nencoding: raw\n"
                                            "data file: data.raw\n")
    (folder / "data.raw").write_bytes(bytes(128))
    out = folder / "out.nrrd"
    return {
        "missing file": (["resample", folder / "absent.nrrd", out], "no such file"),
        "not a volume": (["resample", folder / "text.nrrd", out], "not a readable volume"),
        "malformed header": (["resample", folder / "bad_header.nhdr", out], "not a readable volume"),
        "factor zero": (["resample", good, out, "--factor", "0"], "factor"),
        "factor negative": (["resample", good, out, "--factor", "-2"], "factor"),
        "two factors": (["resample", good, out, "--factor", "2", "2"], "one or three"),
        "output is input": (["resample", good, good], "overwrite the input"),
        "unwritable output": (["resample", good, "/proc/self/out.nrrd"], "cannot write"),
        "missing output folder": (["resample", good, folder / "no" / "out.nrrd"], "does not exist"),
        "unknown format": (["resample", good, folder / "out.png"], "unsupported output format"),
        "spacing finer than input": (["resample", good, out, "--spacing", "0.1", "0.1", "0.1"], "downsamples"),
    }


@pytest.mark.parametrize("case", ["missing file", "not a volume", "malformed header", "factor zero",
                                  "factor negative", "two factors", "output is input", "unwritable output",
                                  "missing output folder", "unknown format", "spacing finer than input"])
def test_bad_input_gives_one_clear_line_and_writes_nothing(tmp_path, anisotropic_input, case):
    _, inputs = anisotropic_input
    good = inputs[".nrrd"]
    args, expected = bad_cases(tmp_path, good)[case]
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    result = run(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before  # nothing written, inputs untouched


def test_demo_prints_the_table_and_writes_the_figure(tmp_path):
    result = run("demo", "--out", tmp_path / "demo", "--size", "64")
    assert result.returncode == 0, result.stderr
    for method in bv.METHODS:
        assert any(line.startswith(method) and "dB" in line for line in result.stdout.splitlines())
    figure = tmp_path / "demo" / "demo.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    assert (tmp_path / "demo" / "phantom_lanczos.nrrd").exists()


# --- help texts and summaries that say what the code does ----------------------------------------------------------
COMMANDS = ("resample", "import-stack", "dehaze", "reduce-bits", "preview", "demo")


def test_every_command_has_help_and_the_thread_help_is_true():
    helps = {}
    for command in COMMANDS:
        done = run(command, "--help")
        assert done.returncode == 0 and done.stdout.startswith(f"usage: bigvolume {command}"), command
        helps[command] = " ".join(done.stdout.split())
    for command in ("resample", "import-stack"):
        # The band products run on our threads with BLAS kept to one (bigvolume.engine.stream, threadpoolctl).
        assert "BLAS itself is kept to one thread" in helps[command] and "OMP_NUM_THREADS" not in helps[command]
    assert "two decoders" not in helps["import-stack"] and "default all cores" in helps["import-stack"]
    assert "--preview PNG" in helps["reduce-bits"] and "--stretch" in helps["reduce-bits"]
    assert "pip install bigvolume" not in " ".join(helps.values())  # there is no such package on an index


def test_a_plain_cpu_run_prints_its_summary_and_nothing_about_cuda(tmp_path, anisotropic_input):
    _, inputs = anisotropic_input
    for command, extra in (("resample", ["--factor", "2"]), ("dehaze", []), ("reduce-bits", ["--bits", "8"])):
        done = run(command, inputs[".nrrd"], tmp_path / f"{command}.nrrd", *extra)
        assert done.returncode == 0, done.stderr
        assert "CUDA" not in done.stdout + done.stderr and "cupy" not in done.stderr.lower(), command
        assert done.stdout.startswith(f"{tmp_path / f'{command}.nrrd'}: ")


def test_the_size_of_an_nhdr_listing_files_counts_the_files(tmp_path):
    rng = np.random.default_rng(3)
    array = rng.integers(0, 4000, (6, 20, 30)).astype(np.uint16)
    for k, plane in enumerate(array):
        (tmp_path / f"slice{k}.raw").write_bytes(plane.astype("<u2").tobytes())
    header = tmp_path / "listed.nhdr"
    header.write_text("NRRD0004\ntype: uint16\ndimension: 3\nsizes: 30 20 6\nspace: left-posterior-superior\n"
                      "space directions: (0.5,0,0) (0,0.5,0) (0,0,2)\nspace origin: (1,2,3)\nendian: little\n"
                      "encoding: raw\ndata file: LIST\n" + "".join(f"slice{k}.raw\n" for k in range(6)))
    total = header.stat().st_size + array.nbytes
    assert io.file_size(header) == total
    pattern = tmp_path / "pattern.nhdr"
    pattern.write_text(header.read_text().split("data file:")[0] + "data file: slice%d.raw 0 5 1\n")
    assert io.file_size(pattern) == pattern.stat().st_size + array.nbytes
    done = run("resample", header, tmp_path / "out.nhdr", "--factor", "2")
    assert done.returncode == 0, done.stderr
    assert f"{bv.core.memory.format_bytes(total)} -> " in done.stdout
    np.testing.assert_array_equal(io.read_volume(header).array, array)


def test_import_stack_dry_run_and_zero_copy_summary_say_what_they_are(tmp_path):
    import SimpleITK as sitk
    from bigvolume.ops.stack_import import plan_stack_import
    array = np.random.default_rng(4).integers(0, 60000, (10, 16, 12)).astype(np.uint16)
    (tmp_path / "stack").mkdir()
    for k, plane in enumerate(array):
        sitk.WriteImage(sitk.GetImageFromArray(plane), str(tmp_path / "stack" / f"s{k:03d}.tif"))
    dry = run("import-stack", tmp_path / "stack", tmp_path / "v.nrrd", "--factor", "2", "--dry-run",
              "--memory-limit", "256MB")
    assert dry.returncode == 0, dry.stderr
    plan = plan_stack_import(tmp_path / "stack", factor=2.0)
    working = bv.core.memory.format_bytes(plan.estimated_working_bytes(256 * 2**20))
    plan.close()
    assert f"working memory about {working} (the output is written slice by slice" in dry.stdout
    assert "when loaded" not in dry.stdout and not (tmp_path / "v.nrrd").exists()
    # --nhdr-only writes the slices as they are: --factor and --bits were dropped silently (the dry run planned them)
    for options in (["--factor", "2"], ["--bits", "8"], ["--factor", "2", "--dry-run"]):
        refused = run("import-stack", tmp_path / "stack", tmp_path / "full.nhdr", "--nhdr-only", *options)
        assert refused.returncode == 1 and "leave out --factor and --bits" in refused.stderr, refused.stderr
        assert not (tmp_path / "full.nhdr").exists()
    full = run("import-stack", tmp_path / "stack", tmp_path / "full.nhdr", "--nhdr-only")
    assert full.returncode == 0, full.stderr
    if "points into the slice files" in full.stdout:  # tifffile installed: the zero-copy header
        header = bv.core.memory.format_bytes((tmp_path / "full.nhdr").stat().st_size)
        assert f"a header of {header}," in full.stdout
        slices = sum(p.stat().st_size for p in (tmp_path / "stack").iterdir())
        with_header = bv.core.memory.format_bytes(slices + (tmp_path / "full.nhdr").stat().st_size)
        assert f"({with_header} with the header; no pixel copied)" in full.stdout


def test_arguments_that_crashed_or_were_dropped_are_refused_in_one_line(tmp_path):
    """Found by fuzzing the commands' arguments: preview --size 100000x100000 aborted the process inside VTK
    (bad_alloc); reduce-bits --window with --percentiles dropped the percentiles; demo with a bad factor wrote its
    first volumes, then said "math domain error"."""
    import bigvolume as bv
    source = bv.write_volume(bv.Volume.from_array(np.arange(4096, dtype=np.uint16).reshape(16, 16, 16)),
                             tmp_path / "in.nrrd")
    cases = [(["preview", source, tmp_path / "p.png", "--size", "100000x100000"], "each 16 to 8192"),
             (["reduce-bits", source, tmp_path / "r.nrrd", "--bits", "8", "--window", "0", "100", "--percentiles", "1",
               "99"], "give an intensity window or percentiles, not both"),
             (["demo", "--out", tmp_path / "demo", "--factor", "0"], "factor must be a positive number"),
             (["demo", "--out", tmp_path / "demo", "--size", "16", "--factor", "100"], "a factor of at most a quarter")]
    for args, said in cases:
        result = run(*args)
        assert result.returncode in (1, 2) and said in result.stderr and "Traceback" not in result.stderr, result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]


def test_api_arguments_of_numpy_types_and_sizes_out_of_range():
    """HazeOptions(dilate=np.int32(1)) overflowed int32 in the slab memory sums; write_preview's size had no
    bound."""
    import bigvolume as bv
    from bigvolume.ops.haze import HazeOptions
    from bigvolume.render.preview import write_preview
    options = HazeOptions(dilate=np.int32(1), close=np.int16(2))
    assert type(options.dilate) is int and type(options.close) is int
    rng = np.random.default_rng(3)
    volume = bv.Volume.from_array((np.where(np.indices((24, 24, 24)).sum(axis=0) > 30, 1000, 10)
                                   + rng.normal(0, 20, (24, 24, 24))).astype(np.int16))
    bv.dehaze(volume, options, measure_compression=False)
    with pytest.raises(bv.BigVolumeError, match="size must be 16 to 8192 pixels a side, got 100000x100000"):
        write_preview(volume, "unused.png", size=(100000, 100000))
    with pytest.raises(bv.BigVolumeError, match="give an intensity window or percentiles, not both"):
        bv.reduce_bits(volume, 8, window=(0, 100), percentiles=(1, 99))


@pytest.mark.parametrize("option", ["--target-size", "--memory-limit"])
def test_a_negative_size_is_refused_in_words(tmp_path, option):
    """argparse took "-5MB" for an option: "expected one argument"."""
    source = bv.write_volume(bv.Volume.from_array(np.zeros((6, 6, 6), np.uint8)), tmp_path / "in.nrrd")
    done = subprocess.run([sys.executable, "-m", "bigvolume", "resample", str(source), str(tmp_path / "out.nrrd"),
                           option, "-5MB"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "not a size: '-5MB'" in done.stderr and "expected one argument" not in done.stderr
    assert not (tmp_path / "out.nrrd").exists()


def test_a_path_the_console_code_page_lacks_is_escaped_not_a_failure_after_the_write(tmp_path):
    """Windows outside Slicer: stdout in cp1252. A summary naming 体积.nrrd raised UnicodeEncodeError, reported as
    an error (exit 1) after the output was written."""
    source = bv.write_volume(bv.Volume.from_array(np.arange(64, dtype=np.uint8).reshape(4, 4, 4)), tmp_path / "in.nrrd")
    out = tmp_path / "\u4f53\u79ef.nrrd"
    done = subprocess.run([sys.executable, "-m", "bigvolume", "resample", str(source), str(out), "--factor", "2"],
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "cp1252"})
    assert done.returncode == 0, done.stderr
    assert b"\\u4f53\\u79ef.nrrd: 4x4x4 -> 2x2x2" in done.stdout and out.is_file()
