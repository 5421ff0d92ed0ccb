"""`bigvolume reduce-bits IN OUT.nhdr --bits 8`, streamed and in memory, on a warm uint16 NHDR: wall time and peak
RSS of the whole command, medians of alternated rounds; with ``--baseline-tree DIR`` the same commands run from
another checkout of the package (``git worktree add DIR COMMIT``; PYTHONPATH=DIR) in the same rounds, for ratios.

Input: a smooth wave plus noise, uint16, 1024 x 1024 x N slices (``--gib``, default 1), generated slice by slice
into a temporary folder and read into the page cache before the runs (what is timed is the command, not the disk).

Usage: python benchmarks/reduce_bits.py [--gib 1] [--rounds 3] [--baseline-tree DIR]
Results: benchmarks/results/reduce_bits.json and a Markdown table on stdout.
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

from benchlib import REPOSITORY, machine_info, machine_markdown, markdown_table, median, write_json

PEAK = str(Path(__file__).resolve().parent / "peak_rss.py")
SIDE = 1024


def make_input(folder: Path, slices: int) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:SIDE, :SIDE].astype(np.float32)
    with open(folder / "in.raw", "wb") as data:
        for k in range(slices):
            wave = 20000 + 12000 * np.sin(x / 37.0 + k / 23.0) * np.cos(y / 51.0)
            (wave + rng.normal(0, 800, wave.shape)).clip(0, 65535).astype("<u2").tofile(data)
    header = folder / "in.nhdr"
    header.write_text("NRRD0004\ntype: uint16\ndimension: 3\nspace: left-posterior-superior\n"
                      f"sizes: {SIDE} {SIDE} {slices}\nspace directions: (0.5,0,0) (0,0.5,0) (0,0,0.5)\n"
                      "space origin: (0,0,0)\nencoding: raw\nendian: little\ndata file: in.raw\n")
    with open(folder / "in.raw", "rb", buffering=0) as handle:  # into the page cache
        while handle.read(64 * 2 ** 20):
            pass
    return header


def run(tree: str, mode: str, header: Path, folder: Path) -> dict:
    output = folder / "out.nhdr"
    for path in (output, output.with_suffix(".raw")):
        path.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=tree)  # run from the input's folder: the current one would come first
    command = [sys.executable, "-m", "bigvolume", "reduce-bits", str(header), str(output), "--bits", "8",
               f"--{mode}", "--quiet"]
    launched = subprocess.run([sys.executable, PEAK, str(folder / "log.txt"), "--", *command], env=env, cwd=folder,
                              capture_output=True, text=True, check=True)
    result = json.loads(launched.stdout)
    if result["returncode"] != 0:
        raise RuntimeError(f"{command} failed:\n{(folder / 'log.txt').read_text()}")
    digest = subprocess.run(["sha256sum", str(output.with_suffix(".raw"))], capture_output=True, text=True).stdout
    return {"seconds": result["seconds"], "peak_mib": result["peak_kib"] / 1024, "sha256": digest.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-tree", help="another checkout of the package, run in the same rounds")
    args = parser.parse_args()
    trees = {"this tree": str(REPOSITORY)}
    if args.baseline_tree:
        trees["baseline"] = str(Path(args.baseline_tree).resolve())
    info = machine_info()
    folder = Path(tempfile.mkdtemp(prefix="bigvolume-reduce-bench-"))
    try:
        slices = max(1, round(args.gib * 2 ** 30 / (SIDE * SIDE * 2)))
        header = make_input(folder, slices)
        kinds = [(tree, mode) for tree in trees for mode in ("stream", "no-stream")]
        runs = {kind: [] for kind in kinds}
        for round_index in range(args.rounds):
            shift = round_index % len(kinds)
            for tree, mode in kinds[shift:] + kinds[:shift]:
                runs[tree, mode].append(run(trees[tree], mode, header, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows, summary = [], {}
    for (tree, mode), results in runs.items():
        seconds = median(r["seconds"] for r in results)
        peak = median(r["peak_mib"] for r in results)
        summary[f"{tree}, {mode}"] = {"seconds": seconds, "peak_mib": peak, "runs": results}
        rows.append([tree, f"--{mode}", f"{seconds:.2f}", f"{peak:.0f}",
                     f"{slices * SIDE * SIDE * 2 / seconds / 1e6:.0f}"])
    if "baseline" in trees:
        for row in rows[:2]:
            base = summary[f"baseline, {row[1][2:]}"]["seconds"]
            row.append(f"{float(row[2]) / base:.2f}")
        rows[2:] = [row + ["1.00"] for row in rows[2:]]
    digests = {r["sha256"] for results in runs.values() for r in results}
    print(f"reduce-bits --bits 8, {slices * SIDE * SIDE * 2 / 2 ** 30:.2f} GiB uint16 NHDR (warm), "
          f"medians of {args.rounds} alternated rounds; outputs identical: {len(digests) == 1}")
    print(markdown_table(["tree", "mode", "seconds", "peak RSS MiB", "input MB/s"] +
                         (["time / baseline"] if "baseline" in trees else []), rows))
    print(machine_markdown(info))
    path = write_json("reduce_bits", {"machine": info, "trees": trees, "slices": slices, "rounds": args.rounds,
                                      "identical_outputs": len(digests) == 1, "summary": summary,
                                      "repository": str(REPOSITORY)})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
