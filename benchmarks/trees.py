"""The in-memory resample of two source trees side by side (e.g. main and a branch's worktree): for a speed change,
measured in one run so that background load hits both alike.

Run: ``.venv/bin/python benchmarks/trees.py BEFORE_TREE AFTER_TREE [--size 512] [--factor 4] [--rounds 3]
[--methods mean nearest lanczos] [--dtype uint16]``. Prints a Markdown table (median and best wall seconds,
median CPU seconds, after/before) and whether the two trees' outputs are equal (exactly, or the largest difference).

Each measurement is a fresh process with PYTHONPATH set to the tree: it loads the input (the benchmarks' zone plate,
cached as .npy), warms up on a 16^3 array, then times ``bigvolume.downsample_array(array, factor, method)`` once.
Rounds alternate the trees and rotate the methods.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import benchlib

WORKER = r"""
import json, resource, sys, time
import numpy as np
import bigvolume
path, method, factor, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
array = np.load(path)
bigvolume.downsample_array(np.zeros((16, 16, 16), array.dtype), factor, method)
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
c0, t0 = cpu(), time.perf_counter()
result = bigvolume.downsample_array(array, factor, method)
seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
np.save(out, result)
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}))
"""


def zone_plate(size: int, dtype) -> np.ndarray:
    from bigvolume.core.dtypes import cast_to
    from bigvolume.testing.quality import zone_plate as plate
    dtype = np.dtype(dtype)
    values = plate(size)
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return cast_to((values + 1.0) * (info.max - info.min) / 2.0 + info.min, dtype)


def run(tree: Path, input_path: Path, method: str, factor: float, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    process = subprocess.run([sys.executable, "-c", WORKER, str(input_path), method, str(factor), str(out)],
                             capture_output=True, text=True, env=env, cwd=str(tree))
    if process.returncode != 0:
        raise RuntimeError(f"{tree} {method} failed:\n{process.stderr}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="uint16")
    parser.add_argument("--methods", nargs="+", default=["mean", "nearest", "max", "gaussian", "lanczos"])
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        input_path = folder / "input.npy"
        np.save(input_path, zone_plate(args.size, args.dtype))
        runs = {(tree, method): [] for tree in trees for method in args.methods}
        equal = {}
        for round_index in range(args.rounds):
            shift = round_index % len(args.methods)
            for method in args.methods[shift:] + args.methods[:shift]:
                order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
                for tree in order:
                    runs[tree, method].append(run(trees[tree], input_path, method, args.factor,
                                                  folder / f"{tree}-{method}.npy"))
                a, b = (np.load(folder / f"{tree}-{method}.npy") for tree in trees)
                difference = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
                equal[method] = "equal" if np.array_equal(a, b) else f"max |diff| {difference:g}"
    print(f"{args.size}^3 {args.dtype} zone plate, factor {args.factor:g}, {args.rounds} rounds; "
          f"{time.strftime('%Y-%m-%d %H:%M')}; {benchlib.machine_info().get('cpu', '')}")
    print(f"before: {trees['before']}\nafter:  {trees['after']}\n")
    print("| method | before median s (best) | after median s (best) | after/before | CPU s before / after | outputs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method in args.methods:
        b, a = runs["before", method], runs["after", method]
        mb, ma = (benchlib.median(r["seconds"] for r in x) for x in (b, a))
        cb, ca = (benchlib.median(r["cpu_seconds"] for r in x) for x in (b, a))
        print(f"| {method} | {mb:.3f} ({min(r['seconds'] for r in b):.3f}) | {ma:.3f} "
              f"({min(r['seconds'] for r in a):.3f}) | {ma / mb:.2f}x | {cb:.2f} / {ca:.2f} | {equal[method]} |")


if __name__ == "__main__":
    main()
