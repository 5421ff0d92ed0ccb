"""A file-to-file `bigvolume resample --stream` against `dd` reading the same file, page cache dropped before every
run: does the engine keep up with the disk? For the GPU machine (16 cores, one H200) as for this one.

    python benchmarks/file_to_file.py [--gib 4] [--factor 2] [--rounds 2] [--devices cpu cuda] [--dir /tmp]

The input is benchmarks/stream.py's zone plate (uint16 NHDR + raw, 1024 x 1024 x (512 x GiB)); each round drops the
file from the page cache (stream.drop_from_page_cache, /proc/sys/vm/drop_caches always), then times `dd bs=16M`
and each device's command (a child process: start-up and imports included), in that order. Results: a Markdown
table on stdout (medians over the rounds, and each run) and benchmarks/results/file_to_file.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import stream

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchlib records bigvolume's state: the checkout's, installed or not


def timed(command, env=None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, (done.stdout + done.stderr).strip().splitlines()[-1] if (done.stdout + done.stderr).strip() else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=int, default=4, help="input size in GiB (default 4)")
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="bigvolume-f2f-", dir=args.dir))
    item = stream.Input("F", (1024, 1024, 512 * args.gib))
    stream.generate(item, folder)
    print(f"input {item.label}: generated in {item.generate_seconds:.1f} s", flush=True)
    output = folder / "out.nhdr"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    runs = {"dd": []} | {device: [] for device in args.devices}
    notes = {}
    for round_index in range(args.rounds):
        for kind in runs:
            state = stream.drop_from_page_cache(item.data, "always")
            if kind == "dd":
                seconds, _ = timed(["dd", f"if={item.data}", "of=/dev/null", "bs=16M"])
            else:
                for old in folder.glob("out.*"):
                    old.unlink()
                seconds, line = timed([sys.executable, "-m", "bigvolume", "resample", item.header, output,
                                       "--factor", args.factor, "--stream", "--device", kind], env)
                notes[kind] = line
            runs[kind].append(seconds)
            print(f"round {round_index + 1} {kind}: {seconds:.2f} s ({item.nbytes / seconds / 1e9:.2f} GB/s; "
                  f"page cache: {state['drop_caches']}, resident before {state['resident_before']})", flush=True)
    medians = {kind: statistics.median(times) for kind, times in runs.items()}
    machine = benchlib.machine_info()
    print(f"\nMachine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB; "
          f"{item.label} uint16, factor {args.factor}, page cache dropped before every run, {args.rounds} rounds\n")
    print("| run | median s | GB/s | / dd | each run s |\n| --- | --- | --- | --- | --- |")
    for kind, seconds in medians.items():
        rate = item.nbytes / seconds / 1e9
        print(f"| {'dd bs=16M' if kind == 'dd' else 'resample --stream --device ' + kind} | {seconds:.2f} | "
              f"{rate:.2f} | {medians['dd'] / seconds:.2f} | {', '.join(f'{t:.2f}' for t in runs[kind])} |")
    for kind, line in notes.items():
        print(f"\n{kind}: {line}")
    path = benchlib.write_json("file_to_file", {"machine": machine, "input": item.label, "factor": args.factor,
                                                "runs": runs, "medians": medians, "summaries": notes})
    print(f"\nwrote {path}")
    for leftover in folder.iterdir():
        leftover.unlink()
    folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
