"""The whole `bigvolume resample IN OUT --factor 4` command against a plain-script baseline, both as subprocesses.

Run: ``.venv/bin/python benchmarks/cli.py [--quick] [--rounds N]``. Prints Markdown tables and PASS/FAIL lines for
the project goals (reported, not asserted) and writes benchmarks/results/cli.json.

- Input: the 3D zone plate scaled to uint16, 512^3 (256 MiB), spacing 0.5 x 0.5 x 0.8, written once, uncompressed,
  as NRRD and as NIfTI (.nii) into a temporary folder (so both commands read it from the page cache).
- Ours: ``bigvolume resample IN OUT --factor 4`` exactly as a user types it (its defaults: gzip for .nrrd output,
  raw .nii). Baseline: benchmarks/plain_vtk_resize.py (SimpleITK read, vtkImageResize with default settings,
  SimpleITK write) writing the same format with the same compression. A third configuration writes raw NRRD
  (``--no-compress`` / ``useCompression=False``).
- Each configuration: the two commands alternate (which goes first alternates too), N runs each; wall time of the
  whole process (start-up and imports included) and its own peak RSS (ru_maxrss from ``os.wait4``), both taken by
  the small launcher benchmarks/peak_rss.py (launched from this big process, a child would be credited with this
  process's peak).
- Extra memory = child peak RSS - (peak RSS of a process that only imports the same libraries + input bytes), as a
  fraction of the input bytes. Goals: time ours/baseline <= 1.0 and extra memory <= 0.2 x input.
- Where the time goes: read / filter / write timed inside each process (ours through the same core calls that
  resample_file makes: io.read_volume, resample, io.write_volume; the baseline with its --stages flag), in
  separate alternated runs; the rest of each such run's wall time is interpreter start-up, imports and exit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import benchlib

NAME = "cli"
HERE = Path(__file__).resolve().parent
BASELINE_SCRIPT = HERE / "plain_vtk_resize.py"
LAUNCHER = HERE / "peak_rss.py"
FACTOR = 4
OUR_IMPORTS = "import bigvolume.cli.commands"
# A NIfTI's header is read by SimpleITK (a plain NRRD's without it): its libraries-only process loads it too.
OUR_IMPORTS_NIFTI = "import bigvolume.cli.commands, SimpleITK"
BASELINE_IMPORTS = "import numpy, SimpleITK, vtk; from vtk.util import numpy_support"


@dataclass
class Config:
    name: str
    suffix: str
    our_flags: tuple
    baseline_compress: bool
    our_imports: str = OUR_IMPORTS
    runs: dict = field(default_factory=lambda: {"ours": [], "baseline": []})
    stages: dict = field(default_factory=lambda: {"ours": [], "baseline": []})


def make_configs() -> list[Config]:
    return [Config("NRRD, gzip output (our .nrrd default)", ".nrrd", (), True),
            Config("NRRD, raw output", ".nrrd", ("--no-compress",), False),
            Config("NIfTI .nii (raw)", ".nii", (), False, OUR_IMPORTS_NIFTI)]


# --- child processes ----------------------------------------------------------------------------------------------
def run_child(command, log: Path) -> dict:
    """Run ``command`` to completion through the launcher: its wall seconds, its own peak RSS (KiB) and output."""
    launcher = subprocess.run([sys.executable, str(LAUNCHER), str(log), "--", *map(str, command)],
                              capture_output=True, text=True, check=True)
    result = json.loads(launcher.stdout)
    if result["returncode"] != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({result['returncode']}):\n{log.read_text()}")
    return {"seconds": result["seconds"], "peak_kib": result["peak_kib"], "stdout": log.read_text()}


def our_command(input_path: Path, output_path: Path, config: Config) -> list:
    script = Path(sys.executable).parent / "bigvolume"
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "bigvolume"]
    return launcher + ["resample", str(input_path), str(output_path), "--factor", str(FACTOR), *config.our_flags]


def baseline_command(input_path: Path, output_path: Path, config: Config, stages: bool = False) -> list:
    return ([sys.executable, str(BASELINE_SCRIPT), str(input_path), str(output_path), "--factor", str(FACTOR)]
            + (["--compress"] if config.baseline_compress else []) + (["--stages"] if stages else []))


def our_stages_command(input_path: Path, output_path: Path, config: Config) -> list:
    return ([sys.executable, str(Path(__file__).resolve()), "--stages-worker", str(input_path), str(output_path)]
            + (["--no-compress"] if "--no-compress" in config.our_flags else []))


def stages_worker(args) -> None:
    """Ours, stage by stage, through the calls resample_file makes; prints one JSON line."""
    from bigvolume.io import files as io
    from bigvolume.ops.resample import resample
    times = [time.perf_counter()]
    volume = io.read_volume(args.stages_worker)
    times.append(time.perf_counter())
    result = resample(volume, float(FACTOR))
    times.append(time.perf_counter())
    io.write_volume(result, args.output, compress=False if args.no_compress else None)
    times.append(time.perf_counter())
    print(json.dumps(dict(zip(("read", "filter", "write"), (b - a for a, b in zip(times, times[1:]))))))


# --- measurements -----------------------------------------------------------------------------------------------
def write_inputs(folder: Path, size: int) -> dict:
    import SimpleITK as sitk
    from bigvolume.core.dtypes import cast_to
    from bigvolume.testing.quality import zone_plate
    image = sitk.GetImageFromArray(cast_to((zone_plate(size) + 1.0) * 32767.5, np.uint16))
    image.SetSpacing((0.5, 0.5, 0.8))
    image.SetOrigin((10.0, -20.0, 30.0))
    paths = {}
    for suffix in (".nrrd", ".nii"):
        paths[suffix] = folder / f"input{suffix}"
        sitk.WriteImage(image, str(paths[suffix]), useCompression=False)
    return paths


def library_peaks(folder: Path, rounds: int, configs) -> dict:
    """Peak RSS (KiB) and wall time of processes that only import what each command imports (by import line)."""
    result = {}
    for imports in dict.fromkeys([config.our_imports for config in configs] + [BASELINE_IMPORTS]):
        runs = [run_child([sys.executable, "-c", imports], folder / "log.txt") for _ in range(rounds)]
        result[imports] = {"peak_kib": benchlib.median(r["peak_kib"] for r in runs),
                       "seconds": benchlib.median(r["seconds"] for r in runs)}
    return result


def alternate(rounds: int, commands: dict, output_path: Path, log: Path, parse_json: bool = False) -> dict:
    """Run each command ``rounds`` times, alternating which one goes first; the output file is removed before
    every run."""
    results = {who: [] for who in commands}
    order = list(commands)
    for round_index in range(rounds):
        for who in (order if round_index % 2 == 0 else order[::-1]):
            output_path.unlink(missing_ok=True)
            run = run_child(commands[who], log)
            if parse_json:
                run.update(json.loads(run["stdout"].strip().splitlines()[-1]))
            run.pop("stdout")
            results[who].append(run)
    return results


def measure(config: Config, input_path: Path, folder: Path, rounds: int) -> None:
    output_path = folder / f"output{config.suffix}"
    log = folder / "log.txt"
    config.runs = alternate(rounds, {"ours": our_command(input_path, output_path, config),
                                     "baseline": baseline_command(input_path, output_path, config)},
                            output_path, log)
    config.stages = alternate(rounds,
                              {"ours": our_stages_command(input_path, output_path, config),
                               "baseline": baseline_command(input_path, output_path, config, stages=True)},
                              output_path, log, parse_json=True)


# --- report -------------------------------------------------------------------------------------------------------
def summarise(config: Config, libraries: dict, input_bytes: int) -> dict:
    summary = {}
    for who, runs in config.runs.items():
        peak = benchlib.median(r["peak_kib"] for r in runs) * 1024
        imports = config.our_imports if who == "ours" else BASELINE_IMPORTS
        extra = peak - libraries[imports]["peak_kib"] * 1024 - input_bytes
        seconds = benchlib.median(r["seconds"] for r in runs)
        stage_runs = config.stages[who]
        stages = {stage: benchlib.median(r[stage] for r in stage_runs) for stage in ("read", "filter", "write")}
        stages["start-up, imports, exit"] = benchlib.median(r["seconds"] - r["read"] - r["filter"] - r["write"]
                                                            for r in stage_runs)
        summary[who] = {"seconds": seconds, "peak_mib": peak / benchlib.MIB, "extra_mib": extra / benchlib.MIB,
                        "extra_fraction": extra / input_bytes, "stages": stages}
    summary["time_ratio"] = summary["ours"]["seconds"] / summary["baseline"]["seconds"]
    return summary


def report(configs, summaries, libraries, input_bytes, info, rounds) -> str:
    labels = {"ours": "ours: bigvolume resample --factor 4", "baseline": "baseline: plain_vtk_resize.py"}
    rows, stage_rows, verdicts = [], [], []
    for config, s in zip(configs, summaries):
        for who in ("ours", "baseline"):
            r = s[who]
            rows.append([config.name, labels[who], f"{r['seconds']:.2f}",
                         f"{s['time_ratio']:.2f}" if who == "ours" else "", f"{r['peak_mib']:.0f}",
                         f"{r['extra_mib']:+.0f}", f"{r['extra_fraction']:+.3f}"])
            stage_rows.append([config.name, who] + [f"{v:.2f}" for v in r["stages"].values()])
        ours = s["ours"]
        verdicts.append(f"{'PASS' if s['time_ratio'] <= 1.0 else 'FAIL'} time goal ({config.name}): "
                        f"ours/baseline = {s['time_ratio']:.2f} (goal <= 1.0)")
        verdicts.append(f"{'PASS' if ours['extra_fraction'] <= 0.2 else 'FAIL'} memory goal ({config.name}): "
                        f"extra = {ours['extra_fraction']:.3f} x input (goal <= 0.2)")
    libs = ", ".join(f"`{imports}` {v['peak_kib'] / 1024:.0f} MiB / {v['seconds']:.2f} s"
                     for imports, v in libraries.items())
    return "\n".join([
        benchlib.machine_markdown(info), "",
        f"Input {input_bytes / benchlib.MIB:.2f} MiB uint16, factor {FACTOR}; median of {rounds} alternated runs; "
        "peak = the child's own ru_maxrss (os.wait4 in benchmarks/peak_rss.py). Libraries-only processes "
        f"(peak RSS / wall): {libs}. Extra = peak - libraries - input bytes.", "",
        benchlib.markdown_table(["configuration", "command", "median s", "ours / baseline", "peak RSS MiB",
                                 "extra MiB", "extra / input"], rows), "",
        "Where the time goes (seconds, medians, timed inside each process):", "",
        benchlib.markdown_table(["configuration", "who", "read", "filter", "write", "start-up, imports, exit"],
                                stage_rows), "",
        *verdicts])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64^3 input, 2 rounds: a smoke test in seconds")
    parser.add_argument("--rounds", type=int, help="runs of each command per configuration (default 5)")
    parser.add_argument("--stages-worker", metavar="IN", help=argparse.SUPPRESS)
    parser.add_argument("output", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--no-compress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stages_worker:
        stages_worker(args)
        return 0
    rounds = args.rounds or (2 if args.quick else 5)
    size = 64 if args.quick else 512
    info = benchlib.machine_info()
    configs = make_configs()
    with tempfile.TemporaryDirectory(prefix="bigvolume-cli-bench-") as name:
        folder = Path(name)
        inputs = write_inputs(folder, size)
        input_bytes = size ** 3 * 2
        libraries = library_peaks(folder, 3, configs)
        for config in configs:
            print(f"measuring {config.name} ...", file=sys.stderr, flush=True)
            measure(config, inputs[config.suffix], folder, rounds)
    summaries = [summarise(config, libraries, input_bytes) for config in configs]
    text = report(configs, summaries, libraries, input_bytes, info, rounds)
    print(text)
    payload = {"machine": info, "quick": args.quick, "rounds": rounds, "input_bytes": input_bytes,
               "docstring": __doc__, "libraries": libraries,
               "configurations": [{"name": c.name, "suffix": c.suffix, "our_flags": c.our_flags,
                                   "baseline_compress": c.baseline_compress, "our_imports": c.our_imports, "runs": c.runs, "stages": c.stages,
                                   "summary": s} for c, s in zip(configs, summaries)],
               "markdown": text}
    print(f"\nwritten {benchlib.write_json(NAME, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
