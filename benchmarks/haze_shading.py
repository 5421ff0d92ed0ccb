"""Haze removal (level auto, the default) on air shaded across the field: random volume families, what is removed
and what is kept.

Run: ``.venv/bin/python benchmarks/haze_shading.py [--seeds FIRST LAST]`` (default 0 900). Prints a Markdown table
per shading profile and writes benchmarks/results/haze_shading.json (machine, code state, every case).

Each seed draws a volume: 32-80 voxels per axis, uint8 / uint16 / int16 / float32, an ellipsoidal specimen (soft
tissue with a texture) of contrast 0.3-1 x 0.6 of the type's range, in air whose level drifts across the field
by 5-30 % of that contrast along one axis (ramp; centred, which pushes half the field below the type's minimum:
a spike of clipped voxels, then a plateau; radial vignetting; quadratic, most air dark and one side bright) or not
at all, Gaussian noise of 1-6 % of the contrast, the air 0.5-4 sigma above the minimum. Measured per case: the
share of the far air (more than 3 voxels from the specimen) removed, whether the specimen's core (eroded by 3)
is unchanged, and whether the report warns. A failure: a core voxel changed, or less than 90 % of the far air
removed without a warning. A volume with too few distinct values (uint8, low contrast, 1 % noise) is refused as a
label map and counted apart.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

import bigvolume as bv
from benchlib import machine_info, machine_markdown, markdown_table, median, write_json

PROFILES = ("none", "ramp", "centred", "radial", "quadratic")
RANGES = {"uint8": (0, 255), "uint16": (0, 65535), "int16": (-1024, 3071), "float32": (0.0, 1.0)}


def shaded_volume(seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(1000 + seed)
    shape = tuple(int(n) for n in rng.integers(32, 80, 3))
    dtype = str(rng.choice(list(RANGES)))
    profile = str(rng.choice(PROFILES))
    shade, noise = float(rng.choice([0.05, 0.1, 0.2, 0.3])), float(rng.choice([0.01, 0.02, 0.04, 0.06]))
    air_sigmas, contrast = float(rng.choice([0.5, 1, 2, 4])), float(rng.choice([0.3, 0.6, 1.0]))
    grids = np.indices(shape, dtype=float) / np.array(shape, float)[:, None, None, None]
    centre = [0.5 + rng.uniform(-0.1, 0.1) for _ in shape]
    semi = [rng.uniform(0.22, 0.36) for _ in shape]
    specimen = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, semi)) <= 1
    u = grids[int(rng.integers(3))]
    field = {"none": 0 * u, "ramp": u, "centred": u - 0.5, "quadratic": u ** 2,
             "radial": 1.15 * np.sqrt(((grids - 0.5) ** 2).sum(axis=0))}[profile]
    low, high = RANGES[dtype]
    span = contrast * 0.6 * (high - low)
    sigma = noise * span
    air = low + air_sigmas * sigma
    k, j = np.indices(shape)[:2]
    clean = np.where(specimen, air + span * (1 + 0.1 * np.sin(k / 3.0) * np.cos(j / 4.0)), air + shade * span * field)
    noisy = np.clip(clean + rng.normal(0, sigma, shape), low, high)
    array = (np.rint(noisy) if dtype != "float32" else noisy).astype(dtype)
    case = dict(seed=seed, shape=shape, dtype=dtype, profile=profile, shading=shade, noise=noise,
                air_sigmas=air_sigmas, contrast=contrast)
    return array, specimen, case


def measure(seed: int) -> dict:
    array, specimen, case = shaded_volume(seed)
    try:
        result, mask, report = bv.dehaze(bv.Volume.from_array(array), measure_compression=False)
    except bv.BigVolumeError as error:  # e.g. uint8 with 1 % noise of a low contrast: a label map's few values
        case.update(refused=str(error), failed=False)
        return case
    far_air = ~ndimage.binary_dilation(specimen, iterations=3)
    core = ndimage.binary_erosion(specimen, iterations=3)
    case.update(far_air_removed=float(mask[far_air].mean()),
                core_kept=bool(np.array_equal(result.array[core], array[core])), warning=report.warning,
                threshold=report.threshold.value)
    case["failed"] = not case["core_kept"] or (case["far_air_removed"] < 0.9 and not case["warning"])
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 900), metavar=("FIRST", "LAST"))
    args = parser.parse_args()
    started = time.perf_counter()
    measured = [measure(seed) for seed in range(*args.seeds)]
    cases = [c for c in measured if "refused" not in c]
    rows = []
    for profile in PROFILES:
        group = [c for c in cases if c["profile"] == profile]
        if group:
            rows.append([profile, len(group), sum(not c["core_kept"] for c in group),
                         sum(c["far_air_removed"] < 0.9 and not c["warning"] for c in group),
                         f"{100 * median([c['far_air_removed'] for c in group]):.1f}",
                         f"{100 * min(c['far_air_removed'] for c in group):.1f}", sum(bool(c["warning"]) for c in group)])
    table = markdown_table(["shading", "cases", "specimen core changed", "far air < 90 % removed, no warning",
                            "far air removed, median %", "lowest %", "warnings"], rows)
    info = machine_info()
    print(machine_markdown(info))
    print(f"\nseeds {args.seeds[0]}-{args.seeds[1] - 1}, {time.perf_counter() - started:.0f} s; "
          f"{len(measured) - len(cases)} refused as label maps (too few distinct values)\n")
    print(table)
    failed = [c for c in cases if c["failed"]]
    for case in failed:
        print("failed:", case)
    write_json("haze_shading", {"machine": info, "seeds": list(args.seeds), "table": table,
                                "failures": len(failed), "cases": measured,
                                "command": f"benchmarks/haze_shading.py --seeds {args.seeds[0]} {args.seeds[1]}"})


if __name__ == "__main__":
    main()
