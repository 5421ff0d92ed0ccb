"""`bigvolume dehaze` (default settings) of this tree against an older commit, side by side on the 512^3 head.

Run: ``.venv/bin/python benchmarks/haze_speed.py [--against 3136164] [--rounds 5] [--size 512] [--same-as TREE]``

- The old commit is checked out as a git worktree (/work/wt/old-<commit> unless ``--old-tree``; created when
  missing) and imported through PYTHONPATH, as this tree is: both run in the same venv.
- The input is the head volume of benchmarks/haze.py (:func:`haze.make_big_head`: ch2 resampled onto size^3, x64,
  uint16, Rician noise), written once to a raw .nii; the output is a raw .nii too.
- Old and new run alternately (old first in odd rounds, new first in even ones), each ``python -m bigvolume dehaze
  IN OUT`` in its own subprocess through benchmarks/peak_rss.py; per run the wall time and peak RSS of the command,
  and the CPU time (user + sys of the children, from resource.getrusage(RUSAGE_CHILDREN) before and after).
  Medians and the new/old ratios are printed with the load average (1 min) over the runs (the machine may be
  shared: compare ratios from one run of this script, not absolute times).
- ``--same-as TREE``: also run TREE's dehaze once and check that this tree's output file equals it byte for byte
  (for speed work that must not change the answers; e.g. ``--same-as /work/main``).
Writes benchmarks/results/haze_speed.json (every run, the medians, the ratios, the load averages).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW_TREE = HERE.parent
LAUNCHER = HERE / "peak_rss.py"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(NEW_TREE))

import benchlib  # noqa: E402
from haze import make_big_head  # noqa: E402


def worktree(commit: str, path: Path | None) -> Path:
    """A checkout of ``commit`` (made with git worktree add when missing)."""
    path = path or Path("/work/wt") / f"old-{commit}"
    if not (path / "bigvolume").is_dir():
        subprocess.run(["git", "-C", str(NEW_TREE), "worktree", "add", "--detach", str(path), commit], check=True)
    return path


def run_dehaze(tree: Path, source: Path, output: Path, log: Path) -> dict:
    """One ``python -m bigvolume dehaze`` with ``tree`` first on the path, through benchmarks/peak_rss.py (its wall
    time and peak RSS are the command's own): wall, CPU (user + sys of the children, from resource.getrusage before
    and after; the small launcher's share is the same for both trees) and peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, str(LAUNCHER), str(log), "--", sys.executable, "-m", "bigvolume", "dehaze",
                           str(source), str(output)], env=env, capture_output=True, text=True, cwd=tree)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(done.stdout) if done.returncode == 0 else {"returncode": done.returncode}
    if result["returncode"] not in (0, 3):  # 3: written, with a warning that little was removed
        raise RuntimeError(f"dehaze from {tree} failed ({result['returncode']}):\n{log.read_text()}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": result["seconds"], "cpu": cpu, "peak_mib": result["peak_kib"] / 1024, "load": os.getloadavg()[0]}


def same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk_a, chunk_b = fa.read(1 << 24), fb.read(1 << 24)
            if chunk_a != chunk_b:
                return False
            if not chunk_a:
                return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="3136164", help="the older commit (default: 3136164, issue 13's filing)")
    parser.add_argument("--old-tree", type=Path, default=None, help="its checkout (default /work/wt/old-COMMIT)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--same-as", type=Path, default=None, help="a tree whose output must equal ours byte for byte")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    old_tree = worktree(args.against, args.old_tree)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="haze_speed_"))
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"head{args.size}.nii"
    if not source.exists():
        started = time.perf_counter()
        make_big_head(source, args.size)
        print(f"generated {source} in {time.perf_counter() - started:.1f} s", flush=True)
    if args.same_as is not None:
        run_dehaze(args.same_as, source, folder / "reference.nii", folder / "log.txt")
        run_dehaze(NEW_TREE, source, folder / "new.nii", folder / "log.txt")
        identical = same_bytes(folder / "reference.nii", folder / "new.nii")
        print(f"output byte-identical to {args.same_as}'s: {identical}", flush=True)
        if not identical:
            return 1
    trees = {"old": old_tree, "new": NEW_TREE}
    runs = {name: [] for name in trees}
    load_before = os.getloadavg()
    for round_ in range(args.rounds):
        for name in (("old", "new") if round_ % 2 == 0 else ("new", "old")):
            runs[name].append(run_dehaze(trees[name], source, folder / f"{name}.nii", folder / "log.txt"))
            r = runs[name][-1]
            print(f"round {round_ + 1}: {name}: wall {r['wall']:.2f} s, CPU {r['cpu']:.2f} s, "
                  f"peak {r['peak_mib']:.0f} MiB, load {r['load']:.2f}", flush=True)
    load_after = os.getloadavg()
    medians = {name: {key: statistics.median(r[key] for r in runs[name]) for key in ("wall", "cpu", "peak_mib")}
               for name in trees}
    ratios = {key: medians["new"][key] / medians["old"][key] for key in ("wall", "cpu", "peak_mib")}
    loads = [r["load"] for name in trees for r in runs[name]]
    print(f"\n{args.size}^3 head, {args.rounds} rounds alternated, medians (load average 1 min "
          f"{min(loads):.2f}-{max(loads):.2f}; before {load_before[0]:.2f}, after {load_after[0]:.2f})")
    print("| tree | wall s | CPU s | peak RSS MiB |\n| --- | --- | --- | --- |")
    for name in trees:
        label = f"{args.against} (old)" if name == "old" else "this tree (new)"
        m = medians[name]
        print(f"| {label} | {m['wall']:.2f} | {m['cpu']:.2f} | {m['peak_mib']:.0f} |")
    print(f"| new / old | {ratios['wall']:.3f}x | {ratios['cpu']:.3f}x | {ratios['peak_mib']:.3f}x |")
    result = {"machine": benchlib.machine_info(), "against": args.against, "old_tree": str(old_tree),
              "new_tree": str(NEW_TREE), "size": args.size, "rounds": args.rounds, "runs": runs,
              "medians": medians, "ratios": ratios, "load_before": load_before, "load_after": load_after}
    out = benchlib.write_json("haze_speed", result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
