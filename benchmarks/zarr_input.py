"""Reading an OME-Zarr level in slabs: slabs of whole chunks against slabs that cut chunks (each cut chunk is
decoded once per slab that touches it); and a streamed resample as planned (the planner rounds a slab of at least
one chunk down to whole chunks) against the same run with that rounding off.

Run: ``.venv/bin/python benchmarks/zarr_input.py [--size N] [--chunks C] [--rounds R]``. Prints a Markdown table
and writes benchmarks/results/zarr_input.json. Timings are medians of alternated rounds in one process, to be read
as ratios (the machine may be shared).

- Input: a smooth uint16 volume N^3 (default 512^3, 256 MiB) with noise, written with zarr (zstd, chunks C^3,
  default 128) as OME-Zarr 0.5 by bigvolume.testing.zarr_stores (no pyramid levels).
- Read: every slab of level 0 through ZarrSlabReader into one reused buffer, slabs of C and of a size that cuts
  chunks (3C/8: 48 for 128).
- Resample: a second store, 512 x 256 x 256 uint16 noise around 2000 in chunks of 48^3, and
  ``bigvolume.resample_file(store, out.nhdr, 2, stream=True)`` as planned (slabs of 48) and with the reader's
  ``slab_alignment`` set to 1 (the planner's own 64, which cuts chunks).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bigvolume import resample_file
from bigvolume.core.geometry import Geometry
from bigvolume.io import zarr_input
from bigvolume.io.zarr_input import ZarrSlabReader, open_pyramid
from bigvolume.testing.zarr_stores import write_ome_zarr

HERE = Path(__file__).resolve().parent


def make_resample_store(folder: Path) -> Path:
    array = (2000 + np.random.default_rng(1).normal(0, 300, (512, 256, 256))).astype(np.uint16)
    return write_ome_zarr(folder / "resample.ome.zarr", array, Geometry((256, 256, 512)), chunks=48, factors=())


def make_store(folder: Path, size: int, chunks: int) -> Path:
    rng = np.random.default_rng(0)
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, size, dtype=np.float32),) * 3, indexing="ij", sparse=True)
    array = (2000 + 1500 * np.cos(9 * i) * np.sin(7 * j + 3 * k)).astype(np.float32)
    array += rng.normal(0, 30, array.shape).astype(np.float32)
    store = write_ome_zarr(folder / "bench.ome.zarr", array.astype(np.uint16), Geometry((size,) * 3), chunks=chunks,
                           factors=())
    return store


def read_all(store: Path, slab: int) -> float:
    with ZarrSlabReader(open_pyramid(store), 0) as reader:
        buffer = reader.new_buffer(slab)
        started = time.perf_counter()
        for k0 in range(0, reader.slices, slab):
            reader.read(k0, min(reader.slices, k0 + slab), buffer)
        return time.perf_counter() - started


def resample(store: Path, out: Path, aligned: bool) -> tuple[float, int]:
    original = ZarrSlabReader.__init__

    def unaligned(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.slab_alignment = 1

    if not aligned:
        zarr_input.ZarrSlabReader.__init__ = unaligned
    try:
        started = time.perf_counter()
        report = resample_file(store, out, 2, stream=True)
        return time.perf_counter() - started, report.stream_plan.slab_slices
    finally:
        zarr_input.ZarrSlabReader.__init__ = original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cut = max(1, 3 * args.chunks // 8)
    times = {"read, slabs of whole chunks": [], f"read, slabs of {cut} (cutting chunks)": [],
             "resample x2 (chunks of 48), planned": [], "resample x2 (chunks of 48), unaligned": []}
    slabs = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        store = make_store(folder, args.size, args.chunks)
        resample_store = make_resample_store(folder)
        for round_ in range(args.rounds):
            order = [True, False] if round_ % 2 == 0 else [False, True]
            for aligned in order:
                key = "read, slabs of whole chunks" if aligned else f"read, slabs of {cut} (cutting chunks)"
                times[key].append(read_all(store, args.chunks if aligned else cut))
            for aligned in order:
                seconds, slab = resample(resample_store, folder / f"out{aligned}.nhdr", aligned)
                key = f"resample x2 (chunks of 48), {'planned' if aligned else 'unaligned'}"
                times[key].append(seconds)
                slabs[key] = slab
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(f"OME-Zarr level {args.size}^3 uint16, chunks {args.chunks}^3 (zstd), medians of {args.rounds} rounds\n")
    print("| what | slab | seconds |\n| --- | --- | --- |")
    for key, value in medians.items():
        slab = slabs.get(key, args.chunks if "whole" in key else cut)
        print(f"| {key} | {slab} | {value:.2f} |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "zarr_input.json").write_text(json.dumps(
        {"size": args.size, "chunks": args.chunks, "rounds": args.rounds, "times": times, "slabs": slabs},
        indent=1))


if __name__ == "__main__":
    main()
