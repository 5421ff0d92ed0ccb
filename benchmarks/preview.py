"""Previews (`bigvolume preview`): what one picture costs by renderer and OpenGL window, and what a file much larger
than a preview needs costs.

Run: ``.venv/bin/python benchmarks/preview.py [--rounds N] [--big-slices N] [--keep]``. Prints Markdown tables and
writes benchmarks/results/preview.json (machine, every command line, every raw measurement). About two minutes on 2
cores with the defaults (the 1 GiB input is generated slice by slice into a temporary folder, deleted at the end
unless ``--keep``).

Every measurement runs the command as a user types it, through benchmarks/peak_rss.py (wall seconds of the whole
process, start-up and imports included, and its own peak RSS). The configurations of a table alternate within each
round (so drifting machine load hits them alike); times are medians over the rounds, ratios are of medians.

1. Renderer x window: a 256^3 uint16 micro-CT phantom (NHDR + raw, 32 MiB), ``bigvolume preview IN OUT.png`` with
   ``--engine vtk`` (vtkSmartVolumeMapper) and ``--engine slicer`` (Slicer's displayable managers, GPU ray casting),
   each with ``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` and ``vtkOSOpenGLRenderWindow`` (Mesa llvmpipe both;
   the variable makes bigvolume try that window first). The default 512x512 rendering.
2. A large file: 1024x1024xN uint16 (default N = 512: 1 GiB), ``bigvolume preview`` with the default memory limit
   (the raw file is memory-mapped), and with ``--memory-limit 256MB`` (streamed), against ``bigvolume resample`` of
   the same file onto the same grid (at most 256 voxels per axis) (what a preview must do before it draws anything).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import benchlib

HERE = Path(__file__).resolve().parent
WINDOWS = {"EGL": "vtkEGLRenderWindow", "OSMesa": "vtkOSOpenGLRenderWindow"}


def measure(command, environment=None) -> dict:
    """One run of ``command`` through peak_rss.py: seconds, peak RSS (KiB) and the command's output."""
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        done = subprocess.run([sys.executable, str(HERE / "peak_rss.py"), log.name, "--", *map(str, command)],
                              capture_output=True, text=True, env=environment, check=True)
        result = json.loads(done.stdout)
        result["output"] = Path(log.name).read_text()[-400:]
    if result["returncode"] != 0:
        raise SystemExit(f"failed: {' '.join(map(str, command))}\n{result['output']}")
    return result


def write_phantom(path: Path) -> Path:
    import bigvolume as bv
    from bigvolume.testing import quality
    return bv.write_volume(bv.Volume.from_array(quality.microct_phantom(256), spacing=(0.05,) * 3), path)


def write_big(folder: Path, slices: int) -> Path:
    """1024x1024xslices uint16 NHDR + raw, written a slice at a time: the phantom's slices, repeated."""
    from bigvolume.testing import quality
    from bigvolume.core.geometry import Geometry
    from bigvolume.io.slab_writers import SlabWriter
    base = quality.microct_phantom(256)
    path = folder / "big.nhdr"
    writer = SlabWriter(path, Geometry((1024, 1024, slices), (0.02, 0.02, 0.02)), np.dtype(np.uint16), 1, False)
    try:
        for k in range(slices):
            plane = np.kron(base[(k * 256) // slices], np.ones((4, 4), np.uint16))
            writer.write(plane[None])
        writer.close()
    except BaseException:
        writer.abort()
        raise
    os.sync()
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-slices", type=int, default=512)
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    cli = [sys.executable, "-m", "bigvolume"]
    info = benchlib.machine_info()
    folder = Path(tempfile.mkdtemp(prefix="bigvolume-preview-bench-"))
    raw: dict = {"renderers": {}, "big": {}}
    try:
        phantom = write_phantom(folder / "phantom.nhdr")
        configurations = {f"{engine}, {window}": (engine, cls) for engine in ("vtk", "slicer")
                          for window, cls in WINDOWS.items()}
        for round_index in range(options.rounds):
            names = list(configurations)
            for name in names[round_index % len(names):] + names[:round_index % len(names)]:
                engine, window_class = configurations[name]
                environment = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW=window_class)
                command = cli + ["preview", phantom, folder / "p.png", "--engine", engine]
                raw["renderers"].setdefault(name, []).append(measure(command, environment) | {"command": command})
        rows = []
        base = benchlib.median([r["seconds"] for r in raw["renderers"]["vtk, EGL"]])
        for name, runs in raw["renderers"].items():
            seconds = benchlib.median([r["seconds"] for r in runs])
            rows.append([name, f"{seconds:.2f}", f"{seconds / base:.2f}",
                         f"{max(r['peak_kib'] for r in runs) / 1024:.0f}"])
        renderers = benchlib.markdown_table(["renderer, window", "median s (whole command)", "/ vtk, EGL",
                                             "peak RSS MiB"], rows)

        big = write_big(folder, options.big_slices)
        size = big.with_suffix(".raw").stat().st_size
        configurations = {
            "preview, default memory limit (memory-mapped)": cli + ["preview", big, folder / "b.png"],
            "preview, --memory-limit 256MB (streamed)": cli + ["preview", big, folder / "b.png", "--memory-limit",
                                                              "256MB"],
            "resample onto the preview's grid only": cli + [
                "resample", big, folder / "b_small.nhdr", "--factor", "4", "4", str(max(1.0, options.big_slices / 256)),
                "--no-compress", "--quiet"],
        }
        for round_index in range(options.rounds):
            names = list(configurations)
            for name in names[round_index % len(names):] + names[:round_index % len(names)]:
                raw["big"].setdefault(name, []).append(measure(configurations[name]) | {"command": configurations[name]})
        base = benchlib.median([r["seconds"] for r in raw["big"]["resample onto the preview's grid only"]])
        rows = []
        for name, runs in raw["big"].items():
            seconds = benchlib.median([r["seconds"] for r in runs])
            peak = max(r["peak_kib"] for r in runs) * 1024
            rows.append([name, f"{seconds:.2f}", f"{seconds / base:.2f}", f"{peak / 2**20:.0f}",
                         f"{peak / size:.3f}"])
        large = benchlib.markdown_table(["1024x1024x%d uint16 (%.2f GiB)" % (options.big_slices, size / 2**30),
                                         "median s", "/ resample", "peak RSS MiB", "peak / input"], rows)
    finally:
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(benchlib.machine_markdown(info))
    print(f"\n{options.rounds} rounds, alternated; medians.\n")
    print(renderers)
    print()
    print(large)
    path = benchlib.write_json("preview", {"machine": info, "rounds": options.rounds, "raw": raw,
                                           "tables": {"renderers": renderers, "large": large}})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
