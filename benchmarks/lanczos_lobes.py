"""How many Lanczos lobes: quality and cost of `lanczos` at factors 2, 3 and 4 as bigvolume.methods.kernels'
LANCZOS_LOBES varies (the kernel never grows past vtk's 32 input voxels, so at x4 every count above 4 is 4).

- Quality: the 256^3 uint16 zone plate (bigvolume.testing.quality) downsampled in memory, PSNR against the ideal
  band limit sampled on the output grid.
- Cost: a 512 MiB uint16 array of random values (256 x 1024 x 1024), wall and CPU seconds of `downsample_array`,
  lobe counts alternated round by round, medians.

Usage: python benchmarks/lanczos_lobes.py [--rounds 3] [--lobes 4 5 6 7 8]
Results: benchmarks/results/lanczos_lobes.json and Markdown tables on stdout.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchlib import machine_info, machine_markdown, markdown_table, median, write_json

import bigvolume
from bigvolume.methods import kernels
from bigvolume.testing import quality

FACTORS = (2, 3, 4)


def quality_rows(lobe_counts, size: int = 256) -> dict:
    plate = np.rint(quality.zone_plate(size) * 30000 + 32768).astype(np.uint16)
    ideal = {f: quality.ideal_downsample(plate.astype(np.float32), (f, f, f)) for f in FACTORS}
    scores = {}
    for lobes in lobe_counts:
        kernels.LANCZOS_LOBES = lobes
        scores[lobes] = {f: round(quality.psnr(bigvolume.downsample_array(plate, (f, f, f)), ideal[f]), 2)
                         for f in FACTORS}
    return scores


def cost_rows(lobe_counts, rounds: int) -> dict:
    array = np.random.default_rng(0).integers(0, 60000, (256, 1024, 1024), dtype=np.uint16)
    samples = {(lobes, f): [] for lobes in lobe_counts for f in (2, 3)}
    for _ in range(rounds):
        for f in (2, 3):
            for lobes in lobe_counts:
                kernels.LANCZOS_LOBES = lobes
                wall, cpu = time.perf_counter(), time.process_time()
                bigvolume.downsample_array(array, (f, f, f))
                samples[lobes, f].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {key: (median(s[0] for s in runs), median(s[1] for s in runs)) for key, runs in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lobes", type=int, nargs="+", default=[4, 5, 6, 7, 8])
    args = parser.parse_args()
    default = kernels.LANCZOS_LOBES
    info = machine_info()
    scores = quality_rows(args.lobes)
    costs = cost_rows(sorted({min(args.lobes), max(args.lobes), default}), args.rounds)
    kernels.LANCZOS_LOBES = default
    print("zone plate 256^3, PSNR against the ideal (dB)")
    print(markdown_table(["lobes"] + [f"x{f}" for f in FACTORS],
                         [[lobes] + [scores[lobes][f] for f in FACTORS] for lobes in args.lobes]))
    print(f"\n512 MiB uint16 in memory, medians of {args.rounds} alternated rounds")
    print(markdown_table(["lobes", "factor", "wall s", "CPU s"],
                         [[lobes, f, f"{w:.2f}", f"{c:.2f}"] for (lobes, f), (w, c) in sorted(costs.items())]))
    print(machine_markdown(info))
    path = write_json("lanczos_lobes", {"machine": info, "default_lobes": default, "rounds": args.rounds,
                                        "psnr_db": scores,
                                        "cost_seconds": [{"lobes": lobes, "factor": f, "wall": w, "cpu": c}
                                                         for (lobes, f), (w, c) in sorted(costs.items())]})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
