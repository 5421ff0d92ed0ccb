"""Haze removal (`bigvolume dehaze`) against niimath's `-dehaze`: time and peak memory on a 512^3 head, and what each
does to the real head MRI (size, brain voxels changed, agreement).

Run: ``.venv/bin/python benchmarks/haze.py [--rounds N] [--size N] [--keep] [--dir DIR]`` (needs the Debian package
mricron-data and the pip package niimath, both in ``make test``'s set-up). Prints Markdown tables and writes
benchmarks/results/haze.json (machine, every command line, every raw measurement, the tables).

1. Speed and memory. Input: the real head MRI ch2 (mricron-data, 181x217x181, 1 mm) resampled linearly onto an N^3
   grid (default 512: 256 MiB) over the same field of view, scaled x64 to uint16, with Rician noise (sigma 4 % of
   the mean brain intensity, fixed seed), written as raw NIfTI (.nii). Each command runs as a user types it, through
   benchmarks/peak_rss.py (wall time of the whole process, its own peak RSS), N rounds (default 5), the order
   rotating every round; medians. Commands: ``bigvolume dehaze IN OUT.nii`` (whole input in memory: the raw .nii
   is memory-mapped, output slabs go straight to the file), the same with ``--stream`` (default memory limit) and
   with ``--stream --memory-limit 256MB``, and ``niimath IN -dehaze 5 OUT -odt input`` with FSLOUTPUTTYPE=NIFTI (a
   raw uint16 .nii like ours; niimath otherwise writes float32 .nii.gz). Ours also measures gzip and zstd sizes
   (on 1 slice in 32 here) as part of its report; niimath does not. A process that only imports bigvolume.cli.commands
   gives the start-up time and memory of Python with our libraries, for scale. The outputs are compared: streamed = in memory
   exactly, and the Dice of the voxels each tool changed.
2. The real MRI, ch2 at 1 mm with the same noise recipe (uint8, as the original): for levels 1-5, ours (default
   options: border-connected air, 2 dilations) and niimath's same level; compressed size = gzip level 6 of the voxel
   bytes (uint8 for both, so the compressor is the same), brain voxels changed (ch2bet > 0), Dice of the changed
   voxels against niimath level 5 and against niimath's same level. Then the default's choices at level 5: 1 or 2
   dilations, and the histogram range (0.1-99.9 percentiles, ours, against 2-98, niimath's).
3. Noise families (``--noise-only`` runs just this part and writes benchmarks/results/haze_noise.json): the
   volumes of Testing/test_haze_noise.py, CT-like Hounsfield data (air -1000 HU with Gaussian noise of 20, 30 and
   40 HU, soft tissue 40 HU, bone 1000 HU, an enclosed air bubble; int16) and a bright shell around a cavity in
   half-normal or Rician noise of sigma 1, 3 and 5 % of the shell's intensity (float32), three shapes, grids and
   seeds each; ours (default: level auto), ours at level 5, and ``niimath IN -dehaze 5 OUT -odt input``. Per case
   the median over the seeds of: share of the outer air removed (set to the fill value, also where it had that
   value already, as CT air clipped at -1024 HU), share of the cavity kept, object voxels changed,
   gzip (level 6) of the voxel bytes smaller by.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import benchlib
from bigvolume.ops import haze
from bigvolume.io import files as io
from benchlib import HEAD_BRAIN_MASK, HEAD_MRI, noisy_head
from bigvolume.testing.phantoms import rician_noise

NAME = "haze"
HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "peak_rss.py"
MIB = benchlib.MIB


def niimath() -> str:
    found = shutil.which("niimath") or shutil.which("niimath", path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit("niimath not found: .venv/bin/pip install niimath")
    return found


def bigvolume_command() -> list:
    script = Path(sys.executable).parent / "bigvolume"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bigvolume"]


def make_big_head(path: Path, size: int, seed: int = 7) -> None:
    """ch2 resampled onto size^3 over its own field of view, x64 as uint16, Rician noise: a realistic big MRI."""
    image = sitk.Cast(sitk.ReadImage(HEAD_MRI), sitk.sitkFloat32)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(HEAD_BRAIN_MASK)) > 0
    sigma = 0.04 * sitk.GetArrayViewFromImage(image)[brain].mean()
    spacing = [n * s / size for n, s in zip(image.GetSize(), image.GetSpacing())]
    origin = [o + (s - s0) / 2 for o, s0, s in zip(image.GetOrigin(), image.GetSpacing(), spacing)]
    resampled = sitk.Resample(image, [size] * 3, sitk.Transform(), sitk.sitkLinear, origin, spacing,
                              image.GetDirection(), 0.0, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(resampled)
    out = np.empty(values.shape, np.uint16)
    step = 32
    for k in range(0, size, step):  # in slabs: the float64 noise of the whole volume would need 2 GiB
        noisy = rician_noise(values[k:k + step].astype(np.float64), sigma, seed + k)
        out[k:k + step] = np.clip(np.rint(noisy * 64), 0, 65535)
    result = sitk.GetImageFromArray(out)
    result.SetSpacing(spacing)
    result.SetOrigin(origin)
    result.SetDirection(image.GetDirection())
    sitk.WriteImage(result, str(path))


def run_child(command, log: Path, env=None) -> dict:
    """Wall seconds and the command's own peak RSS through the launcher."""
    command = [str(part) for part in command]
    launcher = subprocess.run([sys.executable, str(LAUNCHER), str(log), "--", *command], capture_output=True,
                              text=True, check=True, env=env)
    result = json.loads(launcher.stdout)
    if result["returncode"] != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{log.read_text()}")
    return {"command": shlex.join(command), "seconds": result["seconds"], "peak_mib": result["peak_kib"] / 1024,
            "output": log.read_text().strip()}


def changed_mask(before: np.ndarray, path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) != before


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def gzip6(array: np.ndarray) -> int:
    return len(zlib.compress(np.ascontiguousarray(array).tobytes(), 6))


# --- 1. speed and memory ------------------------------------------------------------------------------------------
def speed(folder: Path, size: int, rounds: int) -> dict:
    source = folder / f"head{size}.nii"
    started = time.perf_counter()
    make_big_head(source, size)
    print(f"generated {source} ({source.stat().st_size / MIB:.0f} MiB) in {time.perf_counter() - started:.1f} s",
          flush=True)
    ours = bigvolume_command()
    niimath_env = dict(os.environ, FSLOUTPUTTYPE="NIFTI")
    configs = {
        "ours, in memory": (ours + ["dehaze", source, folder / "ours.nii"], None),
        "ours, --stream": (ours + ["dehaze", source, folder / "ours_stream.nii", "--stream"], None),
        "ours, --stream --memory-limit 256MB": (ours + ["dehaze", source, folder / "ours_256.nii", "--stream",
                                                        "--memory-limit", "256MB"], None),
        "niimath -dehaze 5": ([niimath(), source, "-dehaze", "5", folder / "niimath.nii", "-odt", "input"],
                              niimath_env),
        # what Python and our imports alone cost (start-up time, resident memory), for scale
        "(python -c 'import bigvolume.cli.commands' only)": ([sys.executable, "-c", "import bigvolume.cli.commands"], None),
    }
    runs = {name: [] for name in configs}
    names = list(configs)
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            command, env = configs[name]
            runs[name].append(run_child(command, folder / "log.txt", env))
            print(f"round {round_ + 1}: {name}: {runs[name][-1]['seconds']:.2f} s, "
                  f"{runs[name][-1]['peak_mib']:.0f} MiB", flush=True)
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(source)))
    ours_changed = changed_mask(before, folder / "ours.nii")
    theirs_changed = changed_mask(before, folder / "niimath.nii")
    identical = all(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "ours.nii"))),
                                   sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name))))
                    for name in ("ours_stream.nii", "ours_256.nii"))
    base = benchlib.median([r["seconds"] for r in runs["niimath -dehaze 5"]])
    base_peak = benchlib.median([r["peak_mib"] for r in runs["niimath -dehaze 5"]])
    rows = []
    for name in names:
        seconds = benchlib.median([r["seconds"] for r in runs[name]])
        peak = benchlib.median([r["peak_mib"] for r in runs[name]])
        rows.append([name, f"{seconds:.2f}", f"{min(r['seconds'] for r in runs[name]):.2f}", f"{seconds / base:.2f}",
                     f"{peak:.0f}", f"{peak / base_peak:.2f}"])
    table = benchlib.markdown_table(["command", "median s", "best s", "time / niimath", "peak RSS MiB",
                                     "peak / niimath"], rows)
    agreement = {"streamed_equals_in_memory": identical, "changed_ours": float(ours_changed.mean()),
                 "changed_niimath": float(theirs_changed.mean()), "dice": dice(ours_changed, theirs_changed),
                 "summary": runs["ours, in memory"][-1]["output"]}
    return {"input": str(source), "size": size, "bytes": source.stat().st_size, "rounds": rounds, "runs": runs,
            "table": table, "agreement": agreement}


# --- 2. the real MRI ----------------------------------------------------------------------------------------------
def real_mri(folder: Path) -> dict:
    source = folder / "ch2_noisy.nii.gz"
    brain = noisy_head(source)
    volume = io.read_volume(source)
    before = np.asarray(volume.array)
    size_before = gzip6(before)
    niimath_changed = {}
    for level in haze.LEVELS:
        out = folder / f"niimath{level}.nii.gz"
        subprocess.run([niimath(), source, "-dehaze", str(level), out, "-odt", "input"], check=True,
                       capture_output=True)
        niimath_changed[level] = changed_mask(before, out)

    def measure(label, mask, same_level=None):
        """Haze set to 0 (the image minimum, niimath's fill): what changed, what it costs, what it agrees with."""
        after = np.where(mask, np.zeros((), before.dtype), before)
        changed = after != before
        result = {"what": label, "changed_percent": 100 * float(changed.mean()),
                  "brain_changed": int(np.count_nonzero(changed & brain)),
                  "gzip_ratio": gzip6(after) / size_before, "dice_niimath_5": dice(changed, niimath_changed[5])}
        if same_level is not None:
            result["dice_niimath_same_level"] = dice(changed, niimath_changed[same_level])
        return result

    rows = []
    for level in haze.LEVELS:
        rows.append(measure(f"ours level {level}", haze.haze_mask(volume, haze.HazeOptions(level=level)), level))
        rows.append(measure(f"niimath -dehaze {level}", niimath_changed[level], level))
    choices = []
    for dilate in (1, 2):
        for percentiles in ((0.1, 99.9), (2, 98)):
            options = haze.HazeOptions(level=5, dilate=dilate)
            threshold = haze.find_threshold(volume, 5, percentiles=percentiles)
            result = measure(f"level 5, dilate {dilate}, histogram {percentiles[0]}-{percentiles[1]} %",
                             haze.haze_mask(volume, options, threshold))
            result["threshold"] = threshold.value
            choices.append(result)
    # the command itself, as users run it: file sizes as written
    command = bigvolume_command() + ["dehaze", source, folder / "ours.nii.gz"]
    summary = subprocess.run([str(c) for c in command], check=True, capture_output=True, text=True).stdout.strip()
    files = {"input": source.stat().st_size, "ours": (folder / "ours.nii.gz").stat().st_size,
             "niimath_5": (folder / "niimath5.nii.gz").stat().st_size}

    def row(r):
        return [r["what"], f"{r['changed_percent']:.1f}", r["brain_changed"], f"{100 * (1 - r['gzip_ratio']):.1f}",
                f"{r['dice_niimath_5']:.3f}", f"{r['dice_niimath_same_level']:.3f}" if "dice_niimath_same_level" in r
                else ""]
    headers = ["what", "voxels changed %", "brain voxels changed", "gzip smaller by %", "Dice vs niimath 5",
               "Dice vs niimath same level"]
    choice_headers = ["what", "threshold", "voxels changed %", "brain voxels changed", "gzip smaller by %",
                      "Dice vs niimath 5"]
    choice_rows = [[r["what"], f"{r['threshold']:.1f}", f"{r['changed_percent']:.1f}", r["brain_changed"],
                    f"{100 * (1 - r['gzip_ratio']):.1f}", f"{r['dice_niimath_5']:.3f}"] for r in choices]
    return {"levels": rows, "choices": choices, "command": shlex.join(map(str, command)), "summary": summary,
            "file_bytes": files, "brain_voxels": int(brain.sum()),
            "table": benchlib.markdown_table(headers, [row(r) for r in rows]),
            "choices_table": benchlib.markdown_table(choice_headers, choice_rows)}


# --- 3. noise families -------------------------------------------------------------------------------------------
def noise_families(folder: Path, seeds=(0, 1, 2)) -> dict:
    sys.path.insert(0, str(HERE.parent / "Testing"))
    import test_haze_noise as families  # the generators the tests assert on

    cases = [(f"CT, Gaussian {hu} HU", lambda seed, hu=hu: families.ct_specimen(families.CT_SHAPES[seed], hu, seed))
             for hu in (20, 30, 40)]
    cases += [(f"shell, {noise} {round(100 * fraction)} %",
               lambda seed, noise=noise, fraction=fraction: families.shell(families.SHELL_SHAPES[seed], noise,
                                                                           fraction, seed))
              for noise in ("half-normal", "rician") for fraction in (0.01, 0.03, 0.05)]
    rows, raw = [], []
    for name, make in cases:
        measured = {tool: [] for tool in ("ours (auto)", "ours, level 5", "niimath -dehaze 5")}
        for seed in seeds:
            array, obj, cavity = make(seed)
            volume = families.grid(array, seed)
            outer = ~obj & ~cavity
            outputs = {"ours (auto)": haze.dehaze(volume, measure_compression=False)[0].array,
                       "ours, level 5": haze.dehaze(volume, haze.HazeOptions(level=5),
                                                    measure_compression=False)[0].array}
            source = io.write_volume(volume, folder / "family.nii")
            subprocess.run([niimath(), source, "-dehaze", "5", folder / "family_niimath.nii", "-odt", "input"],
                           check=True, capture_output=True, env=dict(os.environ, FSLOUTPUTTYPE="NIFTI"))
            outputs["niimath -dehaze 5"] = io.read_volume(folder / "family_niimath.nii").array
            size = gzip6(array)
            for tool, out in outputs.items():
                # removed: set to the fill (ours: the minimum; niimath: 0), also where it had that value already
                # (CT air clipped at -1024 HU)
                fill = 0 if tool.startswith("niimath") else array.min()
                changed = (out != array) | ((out == fill) & (array == fill) & outer)
                measured[tool].append({"seed": seed, "outer_removed": float(changed[outer].mean()),
                                       "cavity_kept": float(1 - changed[cavity].mean()),
                                       "object_changed": int(np.count_nonzero(changed & obj)),
                                       "gzip_smaller": 1 - gzip6(out) / size})
        for tool, runs in measured.items():
            median = {key: benchlib.median([r[key] for r in runs]) for key in runs[0] if key != "seed"}
            raw.append({"case": name, "tool": tool, "runs": runs, "median": median})
            rows.append([name, tool, f"{100 * median['outer_removed']:.1f}", f"{100 * median['cavity_kept']:.1f}",
                         f"{median['object_changed']:.0f}", f"{100 * median['gzip_smaller']:.1f}"])
        print(f"{name}: done", flush=True)
    table = benchlib.markdown_table(["volume, noise (sigma)", "tool", "outer air removed %", "cavity kept %",
                                     "object voxels changed", "gzip smaller by %"], rows)
    return {"seeds": list(seeds), "cases": raw, "table": table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--noise-only", action="store_true", help="only part 3, the noise families")
    args = parser.parse_args()
    if not Path(HEAD_MRI).exists():
        raise SystemExit(f"{HEAD_MRI} absent: apt-get install mricron-data")
    folder = Path(tempfile.mkdtemp(prefix="bigvolume-haze-", dir=args.dir))
    info = benchlib.machine_info()
    load = [os.getloadavg()[0]]
    if args.noise_only:
        try:
            families = noise_families(folder)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        print("\n" + benchlib.machine_markdown(info) + "\n\n### Noise families (median of 3 seeds)\n")
        print(families["table"])
        path = benchlib.write_json("haze_noise", {"machine": info, "noise_families": families,
                                                  "command": shlex.join([sys.executable] + sys.argv)})
        print(f"\nwrote {path}")
        return 0
    try:
        families = noise_families(folder)
        mri = real_mri(folder)
        load.append(os.getloadavg()[0])
        timing = speed(folder, args.size, args.rounds)
        load.append(os.getloadavg()[0])
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n" + benchlib.machine_markdown(info))
    print(f"load average (1 min) at start, between parts, at end: {', '.join(f'{x:.2f}' for x in load)}\n")
    print(f"### {args.size}^3 uint16 head ({timing['bytes'] / MIB:.0f} MiB), {args.rounds} rounds\n")
    print(timing["table"])
    agreement = timing["agreement"]
    print(f"\nstreamed = in memory: {agreement['streamed_equals_in_memory']}; voxels changed: ours "
          f"{100 * agreement['changed_ours']:.1f} %, niimath {100 * agreement['changed_niimath']:.1f} %; "
          f"Dice {agreement['dice']:.3f}\nours: {agreement['summary']}")
    print(f"\n### Real MRI (ch2 + Rician noise, {mri['brain_voxels']} brain voxels)\n")
    print(mri["table"] + "\n\n" + mri["choices_table"])
    print("\n### Noise families (median of 3 seeds)\n\n" + families["table"])
    files = mri["file_bytes"]
    print(f"\n{mri['command']}\n{mri['summary']}\nfiles: input {files['input']} B, ours {files['ours']} B "
          f"({100 * (1 - files['ours'] / files['input']):.1f} % smaller), niimath -dehaze 5 -odt input "
          f"{files['niimath_5']} B ({100 * (1 - files['niimath_5'] / files['input']):.1f} % smaller)")
    path = benchlib.write_json(NAME, {"machine": info, "load_average": load, "speed": timing, "real_mri": mri,
                                      "noise_families": families,
                                      "command": shlex.join([sys.executable] + sys.argv)})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
