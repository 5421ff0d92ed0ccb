"""The in-memory resample of two source trees side by side (e.g. main and a branch's worktree): for a speed change,
measured in one run so that background load hits both alike.

Run: ``.venv/bin/python benchmarks/trees.py BEFORE_TREE AFTER_TREE [--size 512] [--factor 4] [--rounds 3]
[--methods mean nearest lanczos] [--dtype uint16] [--stream [--slices N]]``. Prints a Markdown table (median and best wall seconds,
median CPU seconds, after/before) and whether the two trees' outputs are equal (exactly, or the largest difference).

Each measurement is a fresh process with PYTHONPATH set to the tree: it loads the input (the benchmarks' zone plate,
cached as .npy), warms up on a 16^3 array, then times ``bigvolume.downsample_array(array, factor, method)`` once.
``--stream``: instead, crossing ramps (``--slices`` slices of size^2, default size) are written once as a raw NHDR and
each process times ``bigvolume.resample_file(IN, OUT.nhdr, factor, method, stream=True, compress=False)`` with the
default memory limit, the input read into the page cache first (warm: the filter's speed, not the disk's).
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
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
if path.endswith(".nhdr"):
    small = out[:-4] + "-warm-up.nhdr"  # loads the lazy code first
    bigvolume.write_volume(bigvolume.Volume.from_array(np.zeros((16, 16, 16), np.uint16)), small)
    bigvolume.resample_file(small, small[:-5] + "-out.nhdr", 2, method=method, stream=True, compress=False)
    with open(path[:-5] + ".raw", "rb") as data:
        while data.read(64 * 2**20):  # into the page cache
            pass
    c0, t0 = cpu(), time.perf_counter()
    bigvolume.resample_file(path, out[:-4] + ".nhdr", factor, method=method, stream=True, compress=False)
    seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
    np.save(out, bigvolume.read_volume(out[:-4] + ".nhdr").array)
else:
    array = np.load(path)
    bigvolume.downsample_array(np.zeros((16, 16, 16), array.dtype), factor, method)
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


def ramps(shape, dtype) -> np.ndarray:
    """Cheap content for the streamed runs (filtering costs the same whatever the values): crossing ramps."""
    k, j, i = (np.arange(n, dtype=np.int64).reshape([-1 if a == b else 1 for b in range(3)]) for a, n in enumerate(shape))
    return ((7 * i + 13 * j + 3 * k) % 4096 * 15).astype(dtype)


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
    parser.add_argument("--stream", action="store_true", help="file to file, streamed (warm page cache)")
    parser.add_argument("--slices", type=int, help="--stream: slices of the input (default --size)")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if args.stream:
            import bigvolume
            input_path = folder / "input.nhdr"
            volume = ramps((args.slices or args.size, args.size, args.size), args.dtype)
            bigvolume.write_volume(bigvolume.Volume.from_array(volume), input_path, compress=False)
            del volume
        else:
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
    what = f"streamed from a raw NHDR of {args.slices or args.size} slices (warm)" if args.stream else "in memory"
    print(f"{args.size}^3 {args.dtype} zone plate, {what}, factor {args.factor:g}, {args.rounds} rounds; "
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
