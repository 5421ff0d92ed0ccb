"""OME-Zarr pyramids: `bigvolume pyramid` against ngff-zarr (its default method and its fast ones, through its Python
API), in one run on the same inputs.

- Speed and memory: the whole pyramid (512, 256, 128) of a 512^3 uint16 NRRD (raw), chunks 128, each run a fresh
  process (peak RSS: the process's own, through peak_rss.py; with --workers the worker processes' RSS is polled and
  added), median of --rounds.
- Quality: the x2 and x4 levels of the seed zone plate (256^3, uint16) against the ideal (band-limited) downsampling,
  PSNR in dB (bigvolume.testing.quality).
- Scaling: ours with --workers 1 and 2 (a LocalCluster; level 0 and its pass stay in the client).
- --big: a 4 GiB input (1024 x 1024 x 2048 uint16) with --memory-limit 1GB: time and peak RSS.

Usage: python benchmarks/pyramid.py [--size 512] [--rounds 3] [--big] [--no-ngff]
Results: benchmarks/results/pyramid.json and a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchlib import REPOSITORY, machine_info, machine_markdown, markdown_table, median, write_json

PYTHON = sys.executable
PEAK = str(Path(__file__).resolve().parent / "peak_rss.py")
GIB = 2 ** 30

# ngff-zarr's whole pyramid from a NRRD: read with SimpleITK (its CLI's wasm NRRD reader traps on 256 MiB), then
# to_ngff_image -> to_multiscales (2 levels below the input) -> to_ngff_zarr (OME-Zarr 0.5).
NGFF_SCRIPT = """
import sys, SimpleITK as sitk, ngff_zarr as nz
source, out, method = sys.argv[1:4]
image = sitk.ReadImage(source)
array = sitk.GetArrayViewFromImage(image)
ngff = nz.to_ngff_image(array, dims=["z", "y", "x"], scale=dict(zip("xyz", image.GetSpacing())),
                        translation=dict(zip("xyz", image.GetOrigin())))
multiscales = nz.to_multiscales(ngff, scale_factors=[2, 4], chunks=128,
                                method=None if method == "default" else nz.Methods[method])
nz.to_ngff_zarr(out, multiscales, version="0.5")
"""
NGFF_METHODS = ["default", "ITKWASM_BIN_SHRINK", "DASK_BIN_SHRINK", "DASK_IMAGE_GAUSSIAN"]


def environment() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPOSITORY)] + sys.path))


def tree_rss_kib(pid: int) -> int:
    """RSS of ``pid`` and all its descendants (KiB), from /proc."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except OSError:
            continue
    return total


def measure(command, log: Path, poll_tree: bool = False) -> dict:
    """Run ``command`` in a fresh process: seconds and peak RSS (MiB; with ``poll_tree``: the process tree's peak
    RSS, polled every 20 ms, else the process's own ru_maxrss)."""
    if not poll_tree:
        done = subprocess.run([PYTHON, PEAK, str(log), "--", *command], capture_output=True, text=True,
                              env=environment())
        result = json.loads(done.stdout)
        if result["returncode"] != 0:
            raise RuntimeError(f"{command} failed:\n{log.read_text()[-2000:]}")
        return {"seconds": result["seconds"], "peak_mib": result["peak_kib"] / 1024}
    with open(log, "w") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment())
        peak = [0]

        def poll():
            while process.poll() is None:
                peak[0] = max(peak[0], tree_rss_kib(process.pid))
                time.sleep(0.02)
        thread = threading.Thread(target=poll)
        thread.start()
        process.wait()
        seconds = time.perf_counter() - started
        thread.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{log.read_text()[-2000:]}")
    return {"seconds": seconds, "peak_mib": peak[0] / 1024}


def ours(source, out, *extra) -> list:
    return [PYTHON, "-m", "bigvolume", "pyramid", str(source), str(out), "--overwrite", "--quiet", *map(str, extra)]


def ngff(source, out, method) -> list:
    return [PYTHON, "-c", NGFF_SCRIPT, str(source), str(out), method]


def killed_then_resumed(source: Path, folder: Path) -> dict:
    """Kill -9 a run once half of level 0's rows are written, then time --resume (against a full run's time)."""
    out = folder / "resume.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    records = folder / "resume.ome.zarr.partial" / ".bigvolume-pyramid" / "level-0.done"
    process = subprocess.Popen(ours(source, out), env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    import bigvolume as bv
    rows = -(-bv.read_geometry(source)[0].dimensions[2] // 128)
    while process.poll() is None and not (records.is_file() and records.read_text().count("\n") >= rows // 2):
        time.sleep(0.002)
    process.kill()
    process.wait()
    done = records.read_text().count("\n") if records.is_file() else 0
    resumed = measure(ours(source, out, "--resume"), folder / "resume.log")
    full = measure(ours(source, folder / "full.ome.zarr"), folder / "full.log")
    return {"rows_done_at_kill": done, "rows": rows, "resume_seconds": resumed["seconds"],
            "full_seconds": full["seconds"]}


def zone_plate_uint16(size: int) -> np.ndarray:
    from bigvolume.testing import quality
    return np.rint(quality.zone_plate(size) * 30000 + 32768).astype(np.uint16)


def write_nrrd(array, path: Path) -> Path:
    import bigvolume as bv
    bv.write_volume(bv.Volume.from_array(array), path, compress=False)
    return path


def timed_rounds(rows: dict, commands: dict, folder: Path, rounds: int, poll_tree=False) -> None:
    """Each command ``rounds`` times, interleaved (A B C A B C ...: load from other jobs falls on all of them);
    medians."""
    runs: dict = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            runs[name].append(measure(command, folder / "run.log", poll_tree))
    for name, measured in runs.items():
        rows[name] = {"seconds": median(r["seconds"] for r in measured),
                      "peak_mib": median(r["peak_mib"] for r in measured), "runs": measured}
        print(f"  {name}: {rows[name]['seconds']:.2f} s, {rows[name]['peak_mib']:.0f} MiB", flush=True)


def level_arrays(store: Path) -> list:
    import zarr
    root = zarr.open_group(str(store), mode="r")
    attributes = dict(root.attrs)
    multiscale = (attributes.get("ome") or attributes)["multiscales"][0]
    return [np.asarray(root[d["path"]][:]) for d in multiscale["datasets"]]


def quality(folder: Path, size: int, with_ngff: bool) -> dict:
    """PSNR of the x2 and x4 levels against the ideal, for each tool."""
    from bigvolume.testing import quality as q
    array = zone_plate_uint16(size)
    source = write_nrrd(array, folder / "zoneplate.nrrd")
    ideal = {f: q.ideal_downsample(array.astype(np.float32), float(f)) for f in (2, 4)}
    # ours at chunks size/4: levels size, size/2, size/4 like ngff-zarr's scale factors 2 and 4
    tools = {"bigvolume lanczos": (ours(source, folder / "zp_ours.ome.zarr", "--chunks", size // 4),
                                   folder / "zp_ours.ome.zarr")}
    if with_ngff:
        tools.update({f"ngff-zarr {m}": (ngff(source, folder / f"zp_{m}.ome.zarr", m), folder / f"zp_{m}.ome.zarr")
                      for m in NGFF_METHODS})
    scores = {}
    for name, (command, store) in tools.items():
        subprocess.run(command, check=True, env=environment(), capture_output=True)
        levels = level_arrays(store)
        scores[name] = {f"x{f}": round(q.psnr(levels[n], ideal[f]), 2) for n, f in ((1, 2), (2, 4))}
        print(f"  {name}: {scores[name]}", flush=True)
    return scores


def big_input(folder: Path) -> Path:
    """1024 x 1024 x 2048 uint16 (4 GiB) raw, written slab by slab (a smooth pattern plus noise)."""
    header = folder / "big.nhdr"
    header.write_text("NRRD0004\ntype: uint16\ndimension: 3\nsizes: 1024 1024 2048\nendian: little\n"
                      "encoding: raw\nspace: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
                      "space origin: (0,0,0)\ndata file: big.raw\n")
    rng = np.random.default_rng(0)
    y, x = np.ogrid[:1024, :1024]
    with open(folder / "big.raw", "wb") as raw:
        for k in range(0, 2048, 64):
            z = np.arange(k, k + 64)[:, None, None]
            slab = 20000 + 8000 * np.sin(x / 37.0 + z / 53.0) * np.cos(y / 41.0)
            slab = slab + rng.normal(0, 300, (64, 1024, 1024))
            raw.write(np.clip(slab, 0, 65535).astype(np.uint16).tobytes())
    return header


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quality-size", type=int, default=256)
    parser.add_argument("--big", action="store_true", help="also the 4 GiB input with --memory-limit 1GB")
    parser.add_argument("--no-ngff", action="store_true", help="ours only")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-pyramid-"))
    results = {"machine": machine_info(), "size": args.size, "rounds": args.rounds}
    try:
        print(f"speed and memory: {args.size}^3 uint16 NRRD (raw), whole pyramid", flush=True)
        source = write_nrrd(zone_plate_uint16(args.size), folder / "in.nrrd")
        rows: dict = {}
        commands = {"bigvolume": ours(source, folder / "ours.ome.zarr")}
        if not args.no_ngff:
            commands.update({f"ngff-zarr {m}": ngff(source, folder / f"ngff_{m}.ome.zarr", m) for m in NGFF_METHODS})
        timed_rounds(rows, commands, folder, args.rounds)
        timed_rounds(rows, {f"bigvolume --workers {n}": ours(source, folder / "workers.ome.zarr", "--workers", n)
                            for n in (1, 2)}, folder, args.rounds, poll_tree=True)
        results["speed"] = rows
        results["resume"] = killed_then_resumed(source, folder)
        print(f"  kill -9 at half of level 0, then --resume: {results['resume']}", flush=True)
        print("quality: zone plate, PSNR against the ideal (dB)", flush=True)
        results["quality"] = quality(folder, args.quality_size, not args.no_ngff)
        if args.big:
            print("big: 4 GiB input, --memory-limit 1GB", flush=True)
            big = big_input(folder)
            results["big"] = measure(ours(big, folder / "big.ome.zarr", "--memory-limit", "1GB"),
                                     folder / "big.log")
            print(f"  {results['big']}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    path = write_json("pyramid", results)
    print(machine_markdown(results["machine"]))
    headers = ["tool", "seconds (median)", "peak RSS (MiB)", "PSNR x2 (dB)", "PSNR x4 (dB)"]
    table = []
    for name, row in results["speed"].items():
        score = results["quality"].get(name if name != "bigvolume" else "bigvolume lanczos", {})
        table.append([name, f"{row['seconds']:.2f}", f"{row['peak_mib']:.0f}", score.get("x2", ""),
                      score.get("x4", "")])
    print(markdown_table(headers, table))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
