"""gzip outputs (.nrrd, .nhdr + .raw.gz, .nii.gz) compressed on several threads against one thread, and against
zlib's one-shot level 6 (what the writer did before): throughput and size.

Run: ``.venv/bin/python benchmarks/gzip_output.py [--mib N] [--rounds R]``. Prints a Markdown table and writes
benchmarks/results/gzip_output.json. Timings are medians of alternated rounds in one process, to be read as ratios
(the machine may be shared); CPU seconds are given beside the wall time.

- Data: N MiB (default 256) of a uint16 micro-CT-like phantom: noisy air around a textured cylinder, slices of
  1024^2, as resample, dehaze and reduce-bits hand them to the writer.
- Written: ``bigvolume.io.slab_writers.SlabWriter`` into a .nrrd, with 1 thread and with every core
  (``default_threads``), and ``zlib.compress(data, 6)`` of the same bytes for the size and speed of one stream.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from bigvolume.core.geometry import Geometry
from bigvolume.core.memory import default_threads
from bigvolume.io import slab_writers
from bigvolume.io.slab_writers import SlabWriter

HERE = Path(__file__).resolve().parent


def phantom(mib: int) -> np.ndarray:
    side = 1024
    depth = max(1, mib * 2**20 // (side * side * 2))
    y, x = np.mgrid[:side, :side].astype(np.float32) / side - 0.5
    inside = x ** 2 + y ** 2 < 0.16
    rng = np.random.default_rng(0)
    slices = []
    for k in range(depth):
        texture = 1500 + 400 * np.sin(40 * x + k / 9) * np.cos(30 * y)
        value = np.where(inside, texture, 100) + rng.normal(0, 40, (side, side))
        slices.append(np.clip(value, 0, 65535).astype(np.uint16))
    return np.stack(slices)


def write(array: np.ndarray, path: Path, threads: int) -> tuple[float, float, int]:
    slab_writers.default_threads = lambda: threads  # the writer's thread count, as the engine gives it
    geometry = Geometry(array.shape[::-1])
    wall, cpu = time.perf_counter(), time.process_time()
    writer = SlabWriter(path, geometry, array.dtype, compress=True)
    for k in range(0, array.shape[0], 8):
        writer.write(array[k:k + 8])
    writer.close()
    return time.perf_counter() - wall, time.process_time() - cpu, path.stat().st_size


def one_stream(array: np.ndarray) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    size = len(zlib.compress(array.tobytes(), 6))
    return time.perf_counter() - wall, time.process_time() - cpu, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    array = phantom(args.mib)
    cores = default_threads()
    runs: dict[str, list] = {"zlib level 6, one stream": [], "writer, 1 thread": [], f"writer, {cores} threads": []}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.rounds):
            runs["zlib level 6, one stream"].append(one_stream(array))
            runs["writer, 1 thread"].append(write(array, Path(folder) / f"a{r}.nrrd", 1))
            runs[f"writer, {cores} threads"].append(write(array, Path(folder) / f"b{r}.nrrd", cores))
    base = statistics.median(w for w, _, _ in runs["writer, 1 thread"])
    rows = []
    print(f"{array.nbytes / 2**20:.0f} MiB uint16, {cores} cores, median of {args.rounds}\n")
    print("| writer | wall s | CPU s | MB/s | speed vs 1 thread | bytes on disk |\n| --- | --- | --- | --- | --- | --- |")
    for name, results in runs.items():
        wall = statistics.median(w for w, _, _ in results)
        cpu = statistics.median(c for _, c, _ in results)
        size = results[0][2]
        rows.append({"writer": name, "wall_s": wall, "cpu_s": cpu, "bytes": size})
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {array.nbytes / wall / 1e6:.1f} | {base / wall:.2f}x | {size} |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "gzip_output.json").write_text(json.dumps(
        {"mib": args.mib, "cores": cores, "rounds": args.rounds, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
