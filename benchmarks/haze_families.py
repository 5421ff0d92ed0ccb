"""Haze removal (level auto, the default) on random volume families: what is removed, what is kept, what is said.

Run: ``.venv/bin/python benchmarks/haze_families.py [--family shading|padding|artefacts|all] [--seeds FIRST LAST]``
(defaults: all, 0 900). Prints a Markdown table per family and writes benchmarks/results/haze_families.json
(machine, code state, every case).

shading: each seed draws 32-80 voxels per axis, uint8 / uint16 / int16 / float32, an ellipsoidal specimen (soft
tissue with a texture) of contrast 0.3-1 x 0.6 of the type's range, in air whose level drifts across the field by
5-30 % of that contrast along one axis (ramp; centred, which pushes half the field below the type's minimum: a
spike of clipped voxels, then a plateau; radial vignetting; quadratic, most air dark and one side bright) or not
at all, Gaussian noise of 1-6 % of the contrast, the air 0.5-4 sigma above the minimum. A failure: a voxel of the
specimen's core (eroded by 3) changed, or less than 90 % of the far air (more than 3 voxels from the specimen)
removed without a warning. A volume with too few distinct values (uint8, low contrast, 1 % noise) is refused as a
label map and counted apart.

padding: CT-like int16 (air -1000 HU, soft tissue 40 HU with a 1000 HU cortex, noise 10-60 HU, air shaded by 0-150
HU across the field), 24-56 x 48-96 x 48-96 voxels; in 4 cases out of 5 a cylindrical field of view with -3024,
-2048 or -1024 HU outside it. Per case: auto removed at least 90 % of the air inside the field of view; or it
warned of padding and the fixed level it names does (keeping the specimen); anything else is a failure.

artefacts: int16 HU / uint16 counts / float32 attenuation, a specimen 6-30 noise sigmas above the air, and one of:
a dense inclusion (metal, a saturated grain: 0.2-3 % of the voxels at 3-100 times the tissue's contrast); a float
field of view whose outside is exactly 0 with the air -1 to 3 sigmas above it; padding a few noise widths below the
air (uint16 0 below air at 2000, HU -1200 or -1400 below -1000); two levels of air (8-40 % of the slices 3-10 sigma
darker: a stitched scan); ring artefacts in the air (dark and bright, 5-15 sigma). A failure: the specimen's core
changed, or less than 90 % of the air removed, without a warning.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

import bigvolume as bv
from bigvolume.ops.haze import HazeOptions
from benchlib import machine_info, machine_markdown, markdown_table, median, write_json

PROFILES = ("none", "ramp", "centred", "radial", "quadratic")
RANGES = {"uint8": (0, 255), "uint16": (0, 65535), "int16": (-1024, 3071), "float32": (0.0, 1.0)}
PADDINGS = ("none", -3024.0, -2048.0, -1024.0)


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
    case = dict(seed=seed, shape=shape, dtype=dtype, group=profile, shading=shade, noise=noise,
                air_sigmas=air_sigmas, contrast=contrast)
    return array, specimen, case


def padded_volume(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(7000 + seed)
    shape = (int(rng.integers(24, 56)), int(rng.integers(48, 96)), int(rng.integers(48, 96)))
    padding = float(rng.choice(PADDINGS[1:])) if rng.random() < 0.8 else None
    noise, shade = float(rng.choice([10, 20, 40, 60])), float(rng.choice([0, 0, 50, 150]))
    grids = np.indices(shape, dtype=float)
    r = np.sqrt(sum(((g - n / 2) / (n * rng.uniform(0.2, 0.32))) ** 2 for g, n in zip(grids, shape)))
    specimen = r < 1
    clean = np.where(specimen, 40.0, -1000.0 + shade * grids[2] / shape[2])
    clean[(r < 1) & (r > 0.8)] = 1000.0
    noisy = clean + rng.normal(0, noise, shape)
    air = ~ndimage.binary_dilation(specimen, iterations=3)
    if padding is not None:
        inside = (grids[1] - shape[1] / 2) ** 2 + (grids[2] - shape[2] / 2) ** 2 < (min(shape[1:]) / 2 - 1) ** 2
        noisy = np.where(inside, noisy, padding)
        air &= inside
        specimen &= inside  # a specimen wider than the field of view is cut by it
    array = np.clip(np.rint(noisy), -3024, 3071).astype(np.int16)
    case = dict(seed=seed, shape=shape, group="none" if padding is None else f"{padding:g}", noise=noise,
                shading=shade)
    return array, specimen, air, case


ARTEFACTS = ("dense inclusion", "zeros around the field", "padding near the air", "two levels of air", "rings")


def artefact_volume(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A specimen (soft tissue, 6-30 noise sigmas above the air) in one of ARTEFACTS; returns (array, specimen,
    the air that should go, case)."""
    rng = np.random.default_rng(11000 + seed)
    group = str(rng.choice(ARTEFACTS))
    shape = (int(rng.integers(28, 56)), int(rng.integers(48, 88)), int(rng.integers(48, 88)))
    dtype = str(rng.choice(["int16", "uint16", "float32"]))
    air_level, sigma = {"int16": (-1000.0, 30.0), "uint16": (2000.0, 200.0), "float32": (0.0, 0.002)}[dtype]
    if group == "zeros around the field":
        dtype, air_level, sigma = "float32", float(rng.choice([-1, 0, 0.5, 1, 2, 3])) * 0.002, 0.002
    grids = np.indices(shape, dtype=float)
    r = np.sqrt(sum(((g - n / 2) / (n * rng.uniform(0.22, 0.32))) ** 2 for g, n in zip(grids, shape)))
    specimen = r < 1
    soft = air_level + rng.uniform(6, 30) * sigma
    clean = np.where(specimen, soft, air_level)
    air = ~ndimage.binary_dilation(specimen, iterations=3)
    detail = {}
    if group == "dense inclusion":  # metal, a saturated grain: 0.2-3 % of the voxels, 3-100 times the contrast
        times, share = float(np.exp(rng.uniform(np.log(3), np.log(100)))), float(rng.uniform(0.002, 0.03))
        inclusion = sum(((g - n / 2) / (share * np.prod(shape) * 3 / (4 * np.pi)) ** (1 / 3)) ** 2
                        for g, n in zip(grids, shape)) < 1
        clean[inclusion] = air_level + times * (soft - air_level)
        specimen &= ~ndimage.binary_dilation(inclusion, iterations=2)
        detail = dict(times=round(times, 1), share=round(share, 4))
    elif group == "two levels of air":  # stitched from two scans: 8-40 % of the field, 3-10 sigma darker
        cut, step = int(shape[0] * rng.uniform(0.08, 0.4)), float(rng.uniform(3, 10)) * sigma
        clean[:cut][~specimen[:cut]] -= step
        detail = dict(darker_slices=cut, step_sigmas=round(step / sigma, 1))
    elif group == "rings":  # ring artefacts in the air: dark and bright, 5-15 sigma
        amplitude = float(rng.uniform(5, 15)) * sigma
        radial = np.hypot(grids[1] - shape[1] / 2, grids[2] - shape[2] / 2)
        radii = rng.uniform(0.3, 0.5, 3) * min(shape[1:])
        rings = sum(sign * amplitude * np.exp(-((radial - rad) ** 2) / 0.5) for rad, sign in zip(radii, (-1, 1, -1)))
        clean = np.where(specimen, clean, clean + rings)
        detail = dict(ring_sigmas=round(amplitude / sigma, 1))
    noisy = clean + rng.normal(0, sigma, shape)
    if group in ("zeros around the field", "padding near the air"):
        padding = 0.0 if group.startswith("zeros") else {
            "int16": float(rng.choice([-1200, -1400])), "uint16": 0.0, "float32": -0.008}[dtype]
        inside = (grids[1] - shape[1] / 2) ** 2 + (grids[2] - shape[2] / 2) ** 2 < (min(shape[1:]) / 2 - 1) ** 2
        noisy = np.where(inside, noisy, padding)
        air &= inside
        specimen &= inside
        detail.update(padding=padding, air_sigmas_above=round((air_level - padding) / sigma, 1))
    if dtype != "float32":
        info = np.iinfo(dtype)
        noisy = np.clip(np.rint(noisy), info.min, info.max)
    case = dict(seed=seed, shape=shape, dtype=dtype, group=group, **detail)
    return noisy.astype(dtype), specimen, air, case


def measure_artefacts(seed: int) -> dict:
    array, specimen, air, case = artefact_volume(seed)
    removed, kept, report = _outcome(array, specimen, air)
    case.update(air_removed=removed, core_kept=kept, warning=report.warning, threshold=report.threshold.value)
    case["failed"] = not report.warning and (not kept or removed < 0.9)
    return case


def artefacts_table(cases) -> str:
    rows = []
    for group in ARTEFACTS:
        chosen = [c for c in cases if c["group"] == group]
        if chosen:
            rows.append([group, len(chosen), sum(not c["core_kept"] and not c["warning"] for c in chosen),
                         sum(c["air_removed"] < 0.9 and not c["warning"] for c in chosen),
                         sum(not c["core_kept"] and bool(c["warning"]) for c in chosen),
                         sum(bool(c["warning"]) for c in chosen),
                         f"{100 * median([c['air_removed'] for c in chosen]):.1f}"])
    return markdown_table(["artefact", "cases", "specimen core changed, no warning", "air < 90 % removed, no warning",
                           "core changed, warned", "warnings", "air removed, median %"], rows)


def _outcome(array, specimen, air, options=HazeOptions()):
    result, mask, report = bv.dehaze(bv.Volume.from_array(array), options, measure_compression=False)
    core = ndimage.binary_erosion(specimen, iterations=3)
    return float(mask[air].mean()), bool(np.array_equal(result.array[core], array[core])), report


def measure_shading(seed: int) -> dict:
    array, specimen, case = shaded_volume(seed)
    try:
        removed, kept, report = _outcome(array, specimen, ~ndimage.binary_dilation(specimen, iterations=3))
    except bv.BigVolumeError as error:  # e.g. uint8 with 1 % noise of a low contrast: a label map's few values
        case.update(refused=str(error), failed=False)
        return case
    case.update(air_removed=removed, core_kept=kept, warning=report.warning, threshold=report.threshold.value)
    case["failed"] = not kept or (removed < 0.9 and not report.warning)
    return case


def measure_padding(seed: int) -> dict:
    array, specimen, air, case = padded_volume(seed)
    removed, kept, report = _outcome(array, specimen, air)
    case.update(air_removed=removed, core_kept=kept, warning=report.warning, threshold=report.threshold.value)
    suspect = getattr(report.threshold, "padding", None)  # (older code: none; the script runs on it too)
    case["suggested_level"] = suspect.level if suspect is not None else None
    if kept and removed >= 0.9:
        case["outcome"] = "auto removed the air"
    elif kept and suspect is not None and suspect.level is not None and report.warning:
        level_removed, level_kept, _ = _outcome(array, specimen, air, HazeOptions(level=suspect.level))
        case.update(level_air_removed=level_removed, level_core_kept=level_kept)
        case["outcome"] = ("warned; its level removes the air" if level_kept and level_removed >= 0.9
                           else "warned; its level fails")
    else:
        case["outcome"] = "failed"
    case["failed"] = case["outcome"] in ("failed", "warned; its level fails")
    return case


def shading_table(cases) -> str:
    rows = []
    for profile in PROFILES:
        group = [c for c in cases if c["group"] == profile]
        if group:
            rows.append([profile, len(group), sum(not c["core_kept"] for c in group),
                         sum(c["air_removed"] < 0.9 and not c["warning"] for c in group),
                         f"{100 * median([c['air_removed'] for c in group]):.1f}",
                         f"{100 * min(c['air_removed'] for c in group):.1f}", sum(bool(c["warning"]) for c in group)])
    return markdown_table(["shading", "cases", "specimen core changed", "far air < 90 % removed, no warning",
                           "far air removed, median %", "lowest %", "warnings"], rows)


def padding_table(cases) -> str:
    rows = []
    for padding in PADDINGS:
        group = [c for c in cases if c["group"] == (padding if padding == "none" else f"{padding:g}")]
        if group:
            count = {outcome: sum(c["outcome"] == outcome for c in group) for outcome in
                     ("auto removed the air", "warned; its level removes the air", "warned; its level fails", "failed")}
            rows.append([padding, len(group), *count.values(), sum(not c["core_kept"] for c in group)])
    return markdown_table(["padding outside the field of view", "cases", "auto removed the air",
                           "warned, its level removes the air", "warned, its level fails", "failed",
                           "specimen core changed"], rows)


FAMILIES = {"shading": (measure_shading, shading_table), "padding": (measure_padding, padding_table),
            "artefacts": (measure_artefacts, artefacts_table)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=list(FAMILIES) + ["all"], default="all")
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 900), metavar=("FIRST", "LAST"))
    args = parser.parse_args()
    info = machine_info()
    print(machine_markdown(info))
    results = {}
    for name in FAMILIES if args.family == "all" else [args.family]:
        measure, table_of = FAMILIES[name]
        started = time.perf_counter()
        measured = [measure(seed) for seed in range(*args.seeds)]
        cases = [c for c in measured if "refused" not in c]
        table = table_of(cases)
        print(f"\n{name}: seeds {args.seeds[0]}-{args.seeds[1] - 1}, {time.perf_counter() - started:.0f} s; "
              f"{len(measured) - len(cases)} refused as label maps (too few distinct values)\n")
        print(table)
        failed = [c for c in cases if c["failed"]]
        for case in failed:
            print("failed:", case)
        results[name] = {"table": table, "failures": len(failed), "cases": measured}
    write_json("haze_families", {"machine": info, "seeds": list(args.seeds), **results,
                                 "command": f"benchmarks/haze_families.py --family {args.family} "
                                            f"--seeds {args.seeds[0]} {args.seeds[1]}"})


if __name__ == "__main__":
    main()
