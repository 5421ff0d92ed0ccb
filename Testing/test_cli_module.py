"""The BigVolumeResampleCLI scripted CLI module: its SEM XML (parsed with ctk-cli, as Slicer's parser reads it)
against the arguments the script accepts, the script run the way Slicer runs it (temporary NRRD files written and
read back through a real MRML scene's storage nodes, the command line built from the XML), its progress protocol,
its errors, where the extension installs it, and the AntiAliasedResample Logic that builds its parameters."""
import argparse
import importlib.util
import re
import shutil
import os
import subprocess
import sys
import textwrap

import numpy as np
import vtk
import pytest

ctk_cli = pytest.importorskip("ctk_cli")
slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

import bigvolume as bv  # noqa: E402
from bigvolume.engine import gpu  # noqa: E402
from bigvolume.testing import quality
from slicer.util import arrayFromVolume  # noqa: E402
from test_slicer_logic import Mrml, ijk_to_ras  # noqa: E402  (a scene with the logics Slicer registers)

from AntiAliasedResampleLib import (CLI_DEVICES, CLI_METHODS, CLI_MODULE, AntiAliasedResampleLogic,  # noqa: E402
                                    BigVolumeError)
from slicer_module_checks import REPO, SlicerModule, configure_and_install  # noqa: E402

FOLDER = REPO / "BigVolumeResampleCLI"
SCRIPT = FOLDER / "BigVolumeResampleCLI.py"
XML = FOLDER / "BigVolumeResampleCLI.xml"
HIDE_CUPY = "import sys; sys.modules['cupy'] = None; "  # as on a machine without CuPy, wherever the tests run


def load_script():
    spec = importlib.util.spec_from_file_location("BigVolumeResampleCLI", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cli_xml():
    return ctk_cli.CLIModule(str(XML))


# --- the XML and the script agree -------------------------------------------------------------------------------
def test_xml_describes_the_module(cli_xml):
    for element in ("category", "title", "description", "version", "contributor"):
        assert (getattr(cli_xml, element) or "").strip(), element
    assert cli_xml.category == "Utilities"
    assert re.fullmatch(r"\d+\.\d+\.\d+", cli_xml.version) and cli_xml.version == bv.__version__


def test_xml_parameters_are_those_asked_for(cli_xml):
    params = {p.name: p for p in cli_xml.parameters()}
    assert set(params) == {"inputVolume", "outputVolume", "factor", "method", "device", "deviceUsed", "summary"}
    assert (params["inputVolume"].typ, params["inputVolume"].channel, params["inputVolume"].index) == ("image", "input", 0)
    assert (params["outputVolume"].typ, params["outputVolume"].channel, params["outputVolume"].index) == (
        "image", "output", 1)
    assert params["factor"].typ == "float-vector" and params["factor"].default == [2.0, 2.0, 2.0]
    assert params["method"].typ == "string-enumeration" and params["method"].elements == list(CLI_METHODS)
    assert params["method"].default == bv.DEFAULT_METHOD
    assert params["device"].typ == "string-enumeration" and params["device"].elements == ["auto", "cpu", "cuda"]
    assert params["device"].default == "auto"
    # the methods that run on a GPU: every method but the whole-volume FFT
    assert set(CLI_METHODS) == set(bv.METHODS) - {"fft"} and tuple(CLI_DEVICES) == gpu.DEVICES


def test_script_accepts_exactly_what_the_xml_declares(cli_xml):
    parser = load_script().build_parser(gpu.DEVICE_METHODS)
    actions = {a.dest: a for a in parser._actions if not isinstance(a, argparse._HelpAction)}
    positional, options, outputs = cli_xml.classifyParameters()
    assert [p.name for p in positional] == [a.dest for a in parser._actions if not a.option_strings]
    assert [p.name for p in outputs] == ["deviceUsed", "summary"]  # returned through --returnparameterfile
    for p in options:
        action = actions[p.name]
        assert action.option_strings == [p.longflag]
        assert action.default == (tuple(p.default) if p.isVector() else p.default), p.name
        if p.elements:
            assert list(action.choices) == p.elements, p.name
    assert actions["factor"].type("1.5,2,3") == (1.5, 2.0, 3.0)
    # what Slicer adds by itself is accepted too
    assert {"returnparameterfile", "processinformationaddress"} <= set(actions)
    declared = {p.name for p in cli_xml.parameters()} | {"returnparameterfile", "processinformationaddress"}
    assert set(actions) - declared == set()


# --- running it as Slicer does ----------------------------------------------------------------------------------
@pytest.fixture
def mrml():
    return Mrml()


# Right-handed (Slicer reads left-handed NRRD grids back with K flipped), rotated, anisotropic, off-origin.
ANGLE = np.radians(30.0)
ROTATION = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]])
MATRIX = np.eye(4)
MATRIX[:3, :3] = ROTATION @ np.diag([0.6, 0.45, 1.3])
MATRIX[:3, 3] = (-11.5, 22.0, 5.25)


def run_like_slicer(mrml, cli_xml, params, folder, prefix=""):
    """What Slicer's vtkSlicerCLIModuleLogic does for a scripted CLI: input images written to temporary .nrrd files
    through storage nodes, the command line built from the XML (the return-value file, every flagged parameter in
    XML order with its value or default, then the indexed ones), the script run by Python, the output files read
    back into their nodes and the returned values parsed. Returns (completed process, returned values)."""
    positional, options, outputs = cli_xml.classifyParameters()
    files = {}
    for p in positional:
        files[p.name] = folder / f"{p.name}.nrrd"
        if p.channel == "input":
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            mrml.scene.AddNode(storage)
            storage.SetFileName(str(files[p.name]))
            storage.SetUseCompression(0)
            assert storage.WriteData(params[p.name]) == 1
    returned = folder / "returned.params"
    argv = ["--returnparameterfile", str(returned)] if outputs else []
    for p in options:
        value = params.get(p.name, p.default)
        argv += [p.longflag, ",".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value)]
    argv += [str(files[p.name]) for p in positional]
    command = [sys.executable, str(SCRIPT)] + argv
    if prefix:
        command = [sys.executable, "-c", prefix + f"import runpy; sys.argv = {[str(SCRIPT)] + argv!r}; "
                   f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    values = {}
    if done.returncode == 0:
        for p in positional:
            if p.channel == "output":
                storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
                mrml.scene.AddNode(storage)
                storage.SetFileName(str(files[p.name]))
                assert storage.ReadData(params[p.name]) == 1
        values = dict(line.split(" = ", 1) for line in returned.read_text().splitlines())
    return done, values


def progress_values(stdout: str) -> list[float]:
    return [float(v) for v in re.findall(r"<filter-progress>([^<]*)</filter-progress>", stdout)]


@pytest.mark.parametrize("dtype, method, factor", [
    (np.int16, "lanczos", "2,2,2"),
    (np.uint8, "mean", "3,2,1.5"),
    (np.float32, "gaussian", "2.5"),
    (np.uint16, "max", "1,2,4"),
])
def test_runs_as_slicer_runs_it_with_the_exact_grid(mrml, cli_xml, tmp_path, dtype, method, factor):
    array = quality.microct_phantom(36)[:, 1:, 3:]
    array = (array // 200).astype(dtype) if dtype == np.uint8 else (array - 20000 * (dtype == np.int16)).astype(dtype)
    inputNode = mrml.volume(array, MATRIX)
    outputNode = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "output")
    params = {"inputVolume": inputNode, "outputVolume": outputNode, "factor": factor, "method": method,
              "device": "cpu"}
    done, values = run_like_slicer(mrml, cli_xml, params, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # Slicer reports anything on stderr as an error

    factors = np.broadcast_to([float(f) for f in factor.split(",")], (3,))
    expected = np.eye(4)
    expected[:3, :3] = MATRIX[:3, :3] * factors
    expected[:3, 3] = MATRIX[:3, 3] + MATRIX[:3, :3] @ ((factors - 1) / 2)
    np.testing.assert_allclose(ijk_to_ras(outputNode), expected, atol=1e-9)  # spacing, origin, direction
    reference = bv.resample(bv.Volume.from_array(array), tuple(factors), method=method).array
    result = arrayFromVolume(outputNode)
    assert result.dtype == array.dtype and result.shape == reference.shape
    np.testing.assert_array_equal(result, reference)
    assert np.array_equal(arrayFromVolume(inputNode), array)  # the input is only read

    # the progress protocol, in order, flushed as lines
    out = done.stdout
    assert out.index("<filter-start>") < out.index("<filter-progress>") < out.index("<filter-end>")
    assert "<filter-name>BigVolumeResampleCLI</filter-name>" in out and "<filter-time>" in out
    fractions = progress_values(out)
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] >= 0
    assert values["deviceUsed"] == "cpu" and method in values["summary"] and "->" in values["summary"]
    # what the panel shows: no temporary file's name or size (it named Slicer's IN_vtkMRML...nrrd)
    assert str(tmp_path) not in values["summary"] and "on disk" not in values["summary"]


@pytest.mark.parametrize("labels, dtype", [((0, 3, 7), np.int16), ((0, 1), np.uint8), (tuple(range(0, 30, 2)), np.uint16)])
@pytest.mark.parametrize("className", ["vtkMRMLLabelMapVolumeNode", "vtkMRMLScalarVolumeNode"])
def test_a_label_map_smoothed_through_the_cli_panel_is_said_in_the_summary(mrml, cli_xml, tmp_path, labels, dtype,
                                                                         className):
    """The CLI module's own panel lists label maps (the XML's image type "scalar"), and Slicer writes one as a plain
    NRRD: lanczos invented labels (0, 3, 7 came back 0 .. 7), and the summary said nothing of it."""
    rng = np.random.default_rng(len(labels))
    array = np.asarray(labels, dtype)[rng.integers(0, len(labels), (3, 4, 5))].repeat(6, 0).repeat(5, 1).repeat(4, 2)
    inputNode = mrml.volume(array, MATRIX, className=className)
    outputNode = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "output")
    done, values = run_like_slicer(mrml, cli_xml, {"inputVolume": inputNode, "outputVolume": outputNode,
                                                    "device": "cpu"}, tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    summary = values["summary"]
    assert f"only {len(labels)} distinct values" in summary and "--method nearest or max" in summary, summary
    assert str(tmp_path) not in summary and "\n" not in summary
    done, values = run_like_slicer(mrml, cli_xml, {"inputVolume": inputNode, "outputVolume": outputNode,
                                                    "device": "cpu", "method": "nearest"}, tmp_path)
    assert done.returncode == 0 and "distinct values" not in values["summary"]
    assert set(np.unique(arrayFromVolume(outputNode))) <= set(labels)


@pytest.mark.parametrize("given_output", [False, True])
def test_a_transformed_input_s_result_lands_where_process_puts_it(mrml, cli_xml, tmp_path, given_output):
    """An input under a parent transform: process puts its result under the same transform; the CLI route's output
    had none, so it showed away from its input by the transform (100 mm here), silently."""
    array = quality.microct_phantom(24)
    inputNode = mrml.volume(array, MATRIX)
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 100.0)
    matrix.SetElement(1, 3, -35.5)
    transform.SetMatrixTransformToParent(matrix)
    inputNode.SetAndObserveTransformNodeID(transform.GetID())
    logic = AntiAliasedResampleLogic()
    given = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "output") if given_output else None
    params = logic.cliParameters(inputNode, given, factor=2.0, device="cpu")
    done, _ = run_like_slicer(mrml, cli_xml, params, tmp_path)
    assert done.returncode == 0, done.stderr
    reference = logic.process(inputNode, factor=2.0)
    for node in (params["outputVolume"], reference):
        assert node.GetTransformNodeID() == transform.GetID()
    np.testing.assert_allclose(ijk_to_ras(params["outputVolume"]), ijk_to_ras(reference), atol=1e-9)
    np.testing.assert_array_equal(arrayFromVolume(params["outputVolume"]), arrayFromVolume(reference))


def test_auto_without_cuda_notes_it_on_stdout_and_runs_on_the_cpu(mrml, cli_xml, tmp_path):
    array = quality.microct_phantom(24)
    inputNode = mrml.volume(array, MATRIX)
    outputNode = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "output")
    done, values = run_like_slicer(mrml, cli_xml, {"inputVolume": inputNode, "outputVolume": outputNode},
                                   tmp_path, prefix=HIDE_CUPY)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "BigVolumeResampleCLI: note: no CUDA device (cupy not installed); using the CPU" in done.stdout
    assert values["deviceUsed"] == "cpu"
    assert arrayFromVolume(outputNode).shape == (12, 12, 12)  # the XML's default factor 2,2,2


def run_script(*args, prefix=""):
    command = [sys.executable, str(SCRIPT), *map(str, args)]
    if prefix:
        command = [sys.executable, "-c", prefix + f"import runpy; sys.argv = {[str(SCRIPT)] + list(map(str, args))!r}; "
                   f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture
def input_file(tmp_path):
    return bv.write_volume(bv.Volume.from_array(quality.microct_phantom(24), spacing=(0.5, 0.6, 0.7)),
                           tmp_path / "in.nrrd")


@pytest.mark.parametrize("case", ["missing input", "not a volume", "zero factor", "two factors", "unknown method",
                                  "cuda without cuda", "negative factor", "trailing comma", "two spaced factors"])
def test_errors_are_one_line_exit_non_zero_and_leave_nothing(tmp_path, input_file, case):
    (tmp_path / "text.nrrd").write_text("hello\n")
    out = tmp_path / "out.nrrd"
    args, expected, code = {
        "missing input": ([tmp_path / "absent.nrrd", out], "absent.nrrd: no such file", 1),
        "not a volume": ([tmp_path / "text.nrrd", out], "text.nrrd", 1),
        "zero factor": ([input_file, out, "--factor", "0,2,2"], "factor", 1),
        "two factors": ([input_file, out, "--factor", "2,2"], "one or three factors", 2),
        "unknown method": ([input_file, out, "--method", "fft"], "invalid choice: 'fft'", 2),
        "cuda without cuda": ([input_file, out, "--device", "cuda"], "no CUDA device (cupy not installed)", 1),
        # argparse took "-2,2,2" for an option and said "expected one argument"
        "negative factor": ([input_file, out, "--factor", "-2,2,2"], "factor must be a positive number, got -2", 1),
        "trailing comma": ([input_file, out, "--factor", "2,2,"], "not a list of numbers: '2,2,'", 2),
        "two spaced factors": ([input_file, out, "--factor", "1.5 2"], "one or three factors (I, J, K), got 2", 2),
    }[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    done = run_script(*args, prefix=HIDE_CUPY)
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("BigVolumeResampleCLI: error: ") and expected in lines[0], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no leftovers


def test_slicer_only_flags_are_accepted_and_a_shell_run_needs_no_return_file(tmp_path, input_file):
    out = tmp_path / "out.nrrd"
    done = run_script("--processinformationaddress", "0x1234", "--factor", "2.0, 2.0, 2.0", "--device", "cpu",
                      input_file, out)  # the spaces: slicer.cli.run turns a Python list into "2.0, 2.0, 2.0"
    assert done.returncode == 0, done.stderr
    result = bv.read_volume(out)
    assert result.geometry.dimensions == (12, 12, 12)
    np.testing.assert_allclose(result.geometry.spacing, (1.0, 1.2, 1.4))
    assert result.array.dtype == np.uint16


@pytest.mark.parametrize("typed, dimensions", [("2 2 1", (12, 12, 24)), ("1.5  2 3", (16, 12, 8)),
                                               (" 2, 2, 3 ", (12, 12, 8)), ("3", (8, 8, 8)), ("2,\t1,4", (12, 24, 6))])
def test_factors_typed_with_spaces_are_three_factors(tmp_path, input_file, typed, dimensions):
    """The panel's Factor field is a plain line edit whose text Slicer passes as it is: "2 2 1", the command line's
    spelling, was one factor 221 on every axis (a 1x1x1 output, exit 0)."""
    out = tmp_path / "out.nrrd"
    done = run_script("--factor", typed, "--device", "cpu", input_file, out)
    assert done.returncode == 0, done.stderr
    assert bv.read_volume(out).geometry.dimensions == dimensions


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr"])
def test_the_script_from_a_shell_writes_nifti_as_its_name_says(tmp_path, input_file, suffix):
    out = tmp_path / f"out{suffix}"
    done = run_script("--device", "cpu", input_file, out)
    assert done.returncode == 0, done.stderr
    assert bv.read_volume(out).geometry.dimensions == (12, 12, 12)
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".nii.gz")


def test_a_path_the_console_cannot_encode_does_not_fail_a_finished_run(tmp_path, input_file):
    """Slicer sets no UTF-8 mode for python-real: on Windows stdout is in the ANSI code page, and the printed summary
    names the output under %TEMP% (the user's name). The run ended with a traceback after writing the output."""
    folder = tmp_path / "Ünïcode 漢字"
    folder.mkdir()
    out, params = folder / "out.nrrd", folder / "r.params"
    done = subprocess.run([sys.executable, str(SCRIPT), "--returnparameterfile", str(params), "--device", "cpu",
                           str(input_file), str(out)], capture_output=True, timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "cp1252"})
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode(errors="replace")
    values = dict(line.split(" = ", 1) for line in params.read_text(encoding="utf-8").splitlines())
    assert values["deviceUsed"] == "cpu" and "24x24x24 -> 12x12x12" in values["summary"]
    assert "\\u6f22\\u5b57" in done.stdout.decode("cp1252")  # the printed summary names the output, escaped
    assert bv.read_volume(out).geometry.dimensions == (12, 12, 12)


# --- installed as Slicer installs it ----------------------------------------------------------------------------
@pytest.mark.skipif(not shutil.which("cmake") or not (shutil.which("cc") or shutil.which("gcc")),
                    reason="needs cmake and a C compiler (project() enables C/C++)")
def test_extension_installs_the_cli_beside_the_core_it_imports(tmp_path):
    _, prefix = configure_and_install(tmp_path, build_too=False)
    cli_modules = prefix / "lib/Slicer-5.8/cli-modules"
    assert sorted(p.name for p in cli_modules.iterdir()) == ["BigVolumeResampleCLI.py", "BigVolumeResampleCLI.xml"]
    assert (cli_modules / "BigVolumeResampleCLI.py").read_text() == SCRIPT.read_text()
    code = textwrap.dedent(f"""
        import runpy, sys
        runpy.run_path({str(cli_modules / 'BigVolumeResampleCLI.py')!r})["find_core"]()
        import bigvolume
        print(bigvolume.__file__)
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(prefix / "lib/Slicer-5.8/qt-scripted-modules/bigvolume/__init__.py")


def test_the_cli_finds_the_bundled_core_in_a_multi_config_build_tree_before_another_bigvolume(tmp_path):
    """Visual Studio / Xcode build trees put scripted CLIs in cli-modules/<CONFIG>/ (SlicerMacroBuildScriptedCLI);
    the core stays in qt-scripted-modules. A bigvolume elsewhere on the path (a pip install) must not win."""
    import shutil

    lib = tmp_path / "build/lib/Slicer-5.10"
    (lib / "cli-modules/Release").mkdir(parents=True)
    shutil.copy(SCRIPT, lib / "cli-modules/Release")
    shutil.copytree(SCRIPT.parent.parent / "bigvolume", lib / "qt-scripted-modules/bigvolume",
                    ignore=shutil.ignore_patterns("__pycache__"))
    decoy = tmp_path / "site-packages/bigvolume"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy bigvolume was imported')\n")
    code = textwrap.dedent(f"""
        import runpy
        runpy.run_path({str(lib / 'cli-modules/Release/BigVolumeResampleCLI.py')!r})["find_core"]()
        import bigvolume
        print(bigvolume.__file__)
        """)
    env = dict(os.environ, PYTHONPATH=str(decoy.parent))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(lib / "qt-scripted-modules/bigvolume/__init__.py")


# --- the Logic's side: parameters for slicer.cli.run ----------------------------------------------------------------
def test_cli_parameters_carry_the_planned_grid_and_run_to_it(mrml, cli_xml, tmp_path):
    array = quality.microct_phantom(30)
    inputNode = mrml.volume(array, MATRIX, name="CT")
    logic = AntiAliasedResampleLogic()
    params = logic.cliParameters(inputNode, spacing=(1.2, 1.35, 2.6), device="cpu")
    assert CLI_MODULE == "bigvolumeresamplecli"  # slicer.modules.<name> of BigVolumeResampleCLI
    assert set(params) == {"inputVolume", "outputVolume", "factor", "method", "device"}
    assert all(isinstance(v, str) or isinstance(v, slicer.vtkMRMLNode) for v in params.values())
    outputNode = params["outputVolume"]
    assert outputNode.GetName() == "CT resampled" and outputNode.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert [float(f) for f in params["factor"].split(",")] == pytest.approx([2.0, 3.0, 2.0], rel=1e-12)
    planned = logic.outputGeometry(inputNode, spacing=(1.2, 1.35, 2.6))
    done, values = run_like_slicer(mrml, cli_xml, params, tmp_path)
    assert done.returncode == 0, done.stderr
    assert arrayFromVolume(outputNode).shape == planned.shape
    np.testing.assert_allclose(ijk_to_ras(outputNode), planned.ijk_to_ras(), atol=1e-9)
    assert "cpu" in logic.cliResultText("Completed", values["deviceUsed"], values["summary"])


def test_cli_parameters_for_label_maps_isotropic_grids_and_given_nodes(mrml):
    labels = np.zeros((20, 22, 24), np.uint8)
    labels[5:15, 6:16, 7:17] = 3
    labelNode = mrml.volume(labels, MATRIX, className="vtkMRMLLabelMapVolumeNode", name="seg")
    logic = AntiAliasedResampleLogic()
    params = logic.cliParameters(labelNode, factor=2.0, isotropic=True, method="lanczos")
    assert params["method"] == "nearest"  # a smoothing kernel would invent labels
    assert params["outputVolume"].GetClassName() == "vtkMRMLLabelMapVolumeNode"
    # one output spacing, 2 x the finest input spacing (0.45), on every axis that it does not upsample (K: 1.3)
    assert [float(f) for f in params["factor"].split(",")] == pytest.approx([0.9 / 0.6, 2.0, 1.0])
    given = mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mine")
    assert logic.cliParameters(labelNode, given, method="max")["outputVolume"] is given


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "fft"}, "does not run in the CLI module"),
    ({"device": "gpu"}, "unknown device 'gpu'"),
    ({"factor": 0.5}, "factor"),
])
def test_cli_parameters_refuse_what_the_cli_cannot_run_before_adding_a_node(mrml, kwargs, message):
    inputNode = mrml.volume(quality.microct_phantom(16), MATRIX)
    before = mrml.scene.GetNumberOfNodes()
    with pytest.raises(BigVolumeError, match=message):
        AntiAliasedResampleLogic().cliParameters(inputNode, **kwargs)
    with pytest.raises(BigVolumeError, match="differ from the input"):
        AntiAliasedResampleLogic().cliParameters(inputNode, inputNode)
    assert mrml.scene.GetNumberOfNodes() == before


def test_cli_result_text():
    text = AntiAliasedResampleLogic.cliResultText("Completed", "NVIDIA H100", "a -> b, lanczos, 0.5 s")
    assert text.splitlines() == ["a -> b, lanczos, 0.5 s", "Ran on NVIDIA H100 (CLI module)"]
    assert AntiAliasedResampleLogic.cliResultText("Cancelled") == "Cancelled"
    failed = AntiAliasedResampleLogic.cliResultText("CompletedWithErrors", errorText="Traceback\n\nX: error: bad\n")
    assert failed == "Failed (CompletedWithErrors): X: error: bad"


# --- the panel: "Run on GPU (CLI)" ------------------------------------------------------------------------------------
def test_the_panel_offers_the_cli_only_where_installed_and_follows_its_run(tmp_path, monkeypatch):
    """The real panel (slicer_gui_standins for Slicer's Qt parts): the check box shows only when slicer.modules has
    the CLI and the input is a scene volume; Apply hands the Logic's parameters to slicer.cli.run without waiting,
    and the CLI node's progress and final status reach the panel."""
    module = SlicerModule("AntiAliasedResample")
    assert module.ui_widgets()["runAsCliCheckBox"] == "QCheckBox"
    assert module.ui_parameter_bindings()["runAsCliCheckBox"] == "runAsCli"
    assert module.wrapper_fields()["runAsCli"][2] == "False"
    assert "Run on GPU (CLI)" == module.ui_properties("runAsCliCheckBox")["text"].findtext("string")
    import types

    import slicer_gui_standins as standins

    standins.install(monkeypatch, tmp_path)
    m = standins.load_module(module, monkeypatch)
    runs = []

    class CliNode(slicer.vtkMRMLCommandLineModuleNode):
        values = {}

        def GetParameterAsString(self, name):
            return self.values.get(name, "")

    def run(cliModule, node, parameters, wait_for_completion=True):
        runs.append((cliModule, node, parameters, wait_for_completion))
        cliNode = CliNode()
        cliNode.SetStatus(cliNode.Running)
        return cliNode
    monkeypatch.setattr(slicer, "cli", types.SimpleNamespace(run=run), raising=False)
    try:
        widget = standins.open_panel(m, "AntiAliasedResample")
        inputNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
        slicer.util.updateVolumeFromArray(inputNode, np.ones((8, 10, 12), np.float32))
        widget.ui.inputSelector.setCurrentNode(inputNode)
        widget.ui.factorSliderWidget.value = 3.0
        widget.ui.runAsCliCheckBox.checked = True
        p = widget._parameterNode
        assert not widget.ui.runAsCliCheckBox.visible and not widget.ui.runAsCliLabel.visible  # not installed
        slicer.modules.bigvolumeresamplecli = "the CLI module"
        widget.ui.inputSourceComboBox.currentIndex = 1
        assert not widget.ui.runAsCliCheckBox.visible  # a file on disk: the CLI takes scene volumes
        widget.ui.inputSourceComboBox.currentIndex = 0
        assert widget.ui.runAsCliCheckBox.visible and widget.ui.runAsCliLabel.visible

        widget.onApplyButton()
        assert runs, widget.ui.planLabel.text
        (cliModule, node, parameters, wait), = runs
        assert cliModule == "the CLI module" and node is None and wait is False
        assert parameters["factor"] == "3,3,3" and parameters["method"] == "lanczos"
        assert parameters["inputVolume"] is inputNode and p.outputVolume is parameters["outputVolume"]
        assert p.outputVolume.GetName() == "CT resampled"
        cliNode = widget._cliNode
        assert cliNode is not None and widget.ui.progressBar.visible and widget.ui.cancelButton.enabled
        assert standins.QProgressDialog.shown == []  # an own process: the panel stays usable, no modal dialog
        cliNode.values = {"deviceUsed": "NVIDIA H100", "summary": "12x10x8 -> 4x3x3"}
        cliNode.SetStatus(cliNode.Completed)
        assert widget._cliNode is None and not widget.ui.progressBar.visible
        assert widget.ui.resultLabel.text == "12x10x8 -> 4x3x3\nRan on NVIDIA H100 (CLI module)"
    finally:
        standins.close_panels()
