"""The README's examples, run as written: every `bigvolume ...` line of its shell blocks parses with the real
command-line parser, the cheap ones run on small generated files named as in the README, and its plain-Python
block runs. A README sentence may drift from the code; its commands may not."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import bigvolume as bv
from bigvolume.testing import quality
from bigvolume.cli.commands import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
# Lines parsed but not run here: a GPU, the full-size demo, stacks of another format or size than the one made here.
NOT_RUN = ("--device cuda", "bigvolume demo", "--roi 100 900", "*.png", "rec_%04d.bmp")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def readme_commands() -> list[str]:
    """The `bigvolume ...` lines of the README's sh blocks, in order, without their trailing comments."""
    commands = []
    for block in code_blocks("(?:sh|bash)"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("bigvolume "):
                commands.extend(part.strip() for part in line.split(";"))
    return commands


def test_the_readme_has_commands_for_every_command_and_the_first_screen_says_how_to_run_it():
    commands = readme_commands()
    assert {shlex.split(c)[1] for c in commands} >= {"resample", "import-stack", "dehaze", "reduce-bits", "preview",
                                                     "demo"}
    first_screen = "\n".join(README.read_text().splitlines()[:40])
    assert ".venv/bin/bigvolume" in first_screen and "source .venv/bin/activate" in first_screen
    assert "pip install -e '.[stacks,gpu]'" in first_screen and "pip install bigvolume" not in README.read_text()
    text = README.read_text()
    assert text.index("## Command line") < text.index("## In 3D Slicer")


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command):
    words = shlex.split(command)[1:]
    if words[-1] == "--help":
        return  # argparse exits after printing; the help itself is run below
    args = build_parser().parse_args(words)
    assert callable(args.run)


def write_inputs(folder: Path) -> None:
    """Small files with the README's names: volumes, a CT in Hounsfield units, a head with noisy air, a TIFF stack."""
    phantom = bv.Volume.from_array(quality.microct_phantom(40), spacing=(0.25, 0.25, 0.3), origin=(3.0, -4.0, 10.0))
    for name in ("IN.nrrd", "IN.nii.gz", "IN.mha", "scan.nrrd", "scan.nhdr"):
        bv.write_volume(phantom, folder / name)
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:36, :40, :44]
    inside = ((x - 22) / 16.0) ** 2 + ((y - 20) / 14.0) ** 2 + ((z - 18) / 14.0) ** 2 < 1
    ct = np.where(inside, 40 + rng.normal(0, 20, inside.shape), -1000 + rng.normal(0, 15, inside.shape))
    ct = bv.Volume.from_array(np.rint(ct).astype(np.int16), spacing=(0.8, 0.8, 1.5))
    for name in ("ct.nrrd", "ct.nhdr"):
        bv.write_volume(ct, folder / name)
    head = np.where(inside, 300 + rng.normal(0, 30, inside.shape), np.abs(rng.normal(0, 20, inside.shape)))
    bv.write_volume(bv.Volume.from_array(np.rint(head).astype(np.uint16)), folder / "head.nii.gz")
    ch2 = Path("/usr/share/mricron/templates/ch2.nii.gz")  # the forum's --target-size case (Debian mricron-data)
    bv.write_volume(bv.read_volume(ch2) if ch2.is_file() else phantom, folder / "ch2.nrrd")
    (folder / "head").mkdir()
    for k, plane in enumerate(np.rint(head[:8]).astype(np.uint16)):
        sitk.WriteImage(sitk.GetImageFromArray(plane), str(folder / "head" / f"head_{k:03d}.png"))
    # An OME-Zarr pyramid of the phantom, written with zarr itself (Testing/zarr_stores.py)
    from zarr_stores import write_store
    write_store(folder / "big.ome.zarr", phantom.array, phantom.geometry, factors=(3,))
    (folder / "scans").mkdir()
    for k, plane in enumerate(quality.microct_phantom(32)[:16]):
        image = sitk.GetImageFromArray(plane)
        image.SetSpacing((0.05, 0.05))
        sitk.WriteImage(image, str(folder / "scans" / f"rec_{k + 1:04d}.tif"))


def test_the_readme_commands_run_as_written(tmp_path):
    write_inputs(tmp_path)
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(README.parent)] + sys.path))
    ran = 0
    for command in readme_commands():
        if any(marker in command for marker in NOT_RUN):
            continue
        words = shlex.split(command)
        done = subprocess.run([sys.executable, "-m", "bigvolume", *words[1:]], cwd=tmp_path, capture_output=True,
                              text=True, env=environment, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        assert "Traceback" not in done.stderr and "CUDA" not in done.stderr, command
        ran += 1
    assert ran >= 20
    for output in ("OUT.nrrd", "OUT.nhdr", "scan_x4.nhdr", "scan_x4.nrrd", "full.nhdr",
                   "head_clean.nii.gz", "clean.nhdr", "haze.nrrd", "ct_clean.nhdr", "ct8.nrrd", "ct16.nrrd", "scan.png",
                   "cmp.png", "before_after.png", "haze.png", "bits.png"):
        assert (tmp_path / output).exists(), output
    # "Hounsfield units kept" is true of the README's own example.
    np.testing.assert_array_equal(bv.read_volume(tmp_path / "ct16.nrrd").array,
                                  np.clip(bv.read_volume(tmp_path / "ct.nrrd").array, -1024, 3071))


def test_the_readme_python_block_runs(tmp_path, monkeypatch):
    write_inputs(tmp_path)
    [block] = [b for b in code_blocks("python") if b.startswith("import bigvolume")]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert bv.read_volume(tmp_path / "ct_x4.nrrd").geometry.spacing == pytest.approx((3.2, 3.2, 6.0))
    assert (tmp_path / "scan_x4.nhdr").exists()
