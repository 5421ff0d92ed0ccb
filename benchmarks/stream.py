"""Streaming resample (`bigvolume resample --stream`): peak memory against input size and memory limit, warm
throughput against the in-memory path, and cold throughput against the disk's own sequential read speed.

Run: ``.venv/bin/python benchmarks/stream.py [--quick] [--rounds N] [--cold-rounds N] [--keep] [--dir DIR]
[--drop-caches fallback|always|never]``, as root for the cold runs' drop_caches fallback, on a quiet machine. Prints
Markdown tables and PASS/FAIL lines for the goals (reported, not asserted) and writes benchmarks/results/stream.json
(machine, every command line run, every raw measurement, the tables). The full run needs about 15 GiB of free disk
and takes a few minutes on 2 cores (mostly the 13 GiB of inputs and the 4 and 8 GiB resamples); ``--quick`` about
20 seconds.

Inputs. Three uint16 NHDR + raw volumes, generated slice by slice into a temporary folder (under /tmp unless
``--dir``; deleted at the end unless ``--keep``), so generating them needs only a few MiB: "S" 1024x1024x512
(1 GiB), "M" 1024x1024x2048 (4 GiB), "L" 1024x1024x4096 (8 GiB); ``--quick``: 512x512 x 128/256/512 slices (64,
128, 256 MiB). Every input has the same slice size, so only the number of slices grows. Content: a 3D zone plate
cos(k r^2) around the volume's centre whose local frequency k r / pi reaches 0.35 cycles/voxel at the corners (far
above the output Nyquist of 0.125: the anti-aliasing filter has real work), plus a smooth wave; values 8768..56768.
Free disk space is checked first; a size that does not fit (inputs + outputs + 2 GiB) is skipped with a line saying
so, as is everything that needs it. After generating, ``os.sync()`` so no write-back runs during the timings.

Every measurement runs the command exactly as a user types it,
``bigvolume resample IN OUT.nhdr --factor 4 --no-compress [--stream | --no-stream] [--memory-limit SIZE]``
(``--no-compress``: raw output, the .nhdr default, said explicitly so that writing costs the same in both modes),
through benchmarks/peak_rss.py: wall time of the whole process (start-up and imports included) and its own peak
RSS (ru_maxrss from ``os.wait4``; a launcher because a child forked from this script would be credited with this
script's peak). The command's summary line gives, in the same run, the plan ("streamed in N slabs of S slices,
buffers X (limit Y)") and the seconds resample_file itself took ("core s": read + filter + write, no interpreter
start-up, imports or exit). Not ``--quiet``: without a terminal the progress bar draws nothing and costs nothing.

1. Memory goals: peak RSS of the M input (4 GiB) streamed with ``--memory-limit 1GB`` below 1.6 GiB, and of the S
   input (1 GiB) with ``--memory-limit 256MB`` below 900 MiB.
2. Peak RSS against input size: S, M, L streamed with the default limit (a quarter of the machine's memory) and
   with 1GB; S also with 256MB; for scale the in-memory path (``--no-stream``: the raw input is memory-mapped, so
   its pages count in RSS) on S, and on M if the memory available then exceeds M + the extra that S needed + 2 GiB.
   One run each (peak RSS hardly varies); "imports only" is the peak of a process that only imports bigvolume.cli.commands
   (median of 3), so "peak - imports" is what the work itself holds.
3. Warm speed, on S (``--quick``: the 64 MiB input): the input's data file is read once first and checked (mincore)
   to be in the page cache; then ``--stream`` and ``--no-stream`` (both with the default limit) alternate, which
   one goes first alternating too, N rounds (default 5, ``--quick`` 2). Input MB/s = input bytes / seconds (MB =
   10^6 bytes), medians; goal: streamed / in-memory >= 0.9 on the whole command. The two outputs are compared
   (streamed integers agree with in-memory ones within 1).
4. Cold speed, on M (``--quick``: the 128 MiB input): before every run ``os.sync()``, then
   ``posix_fadvise(POSIX_FADV_DONTNEED)`` on the input's data file; only if more than 1 % of it is still cached
   (mincore(2)), ``echo 1 > /proc/sys/vm/drop_caches`` (root; ``--drop-caches always`` before every run, ``never``
   to forbid): it empties the whole machine's cache, the interpreter's and vtk's libraries too, which would add
   their cold loading to the start-up. The share of the file in the page cache before each run is reported.
   Alternated, N rounds (default 3, ``--quick`` 2): ``dd if=DATA of=/dev/null bs=16M`` (the disk's sequential
   read speed through the same page cache path), the streamed resample, and for scale ``--no-stream`` (page faults
   on the memory-mapped file) and the streamed resample with the data file read into the page cache first (same
   input, warm). Ratio = streamed input MB/s / dd MB/s; cold / warm streamed near 1 means reading is hidden behind
   filtering. On a virtual machine "cold" means cold in this
   kernel's cache only: the host may still cache the disk (dd then reads at several GB/s).

``--passes``: only a 2 GiB input at x2 and x4, cold against ``dd`` (buffered and ``iflag=direct``), the per-pass
breakdown of an in-process run, and warm streamed (mapped, and copied with BIGVOLUME_MAPPED_READ=never) against in
memory (benchmarks/results/stream_passes.json). With
``--baseline-tree DIR`` (another checkout, say ``git worktree add DIR OLD_COMMIT``) that checkout's streamed command
runs cold in the same rounds, from ``PYTHONPATH=DIR``: the change between two commits, side by side.

The machine's load average is recorded at the start, before each section and at the end: on a shared machine,
timings are only as good as the quiet they were taken in.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import benchlib
from bigvolume.io.raw_reads import resident_fraction

NAME = "stream"
HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "peak_rss.py"
FACTOR = 4
GIB = 2 ** 30
MIB = benchlib.MIB
IMPORTS = "import bigvolume.cli.commands"
DISK_MARGIN = 2 * GIB
MEMORY_MARGIN = 2 * GIB
MEMORY_GOALS = (("M", "1GB", 1.6 * GIB, "1.6 GiB"), ("S", "256MB", 900 * MIB, "900 MiB"))
SPEED_GOAL = 0.9
# Zone plate: local frequency reaches this many cycles/voxel at the corners; uint16 value = OFFSET + AMPLITUDE *
# cos(k r^2) + WAVE * sin(2 pi z / nz) cos(2 pi x / nx).
MAX_FREQUENCY, OFFSET, AMPLITUDE, WAVE = 0.35, 32768.0, 16000.0, 8000.0
CHUNK_SLICES = 16
READ_BLOCK = 16 * MIB


# --- inputs -------------------------------------------------------------------------------------------------------
@dataclass
class Input:
    key: str            # "S", "M", "L"
    dims: tuple         # (nx, ny, nz)
    header: Path | None = None
    skipped: str = ""   # why it was not generated
    generate_seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        return 2 * math.prod(self.dims)

    @property
    def data(self) -> Path:
        return self.header.with_suffix(".raw")

    @property
    def label(self) -> str:
        return f"{self.key} {size_text(self.nbytes)} ({'x'.join(map(str, self.dims))})"


def size_text(count: float) -> str:
    return f"{count / GIB:g} GiB" if count >= GIB else f"{count / MIB:g} MiB"


def make_inputs(quick: bool) -> list[Input]:
    if quick:
        return [Input("S", (512, 512, 128)), Input("M", (512, 512, 256)), Input("L", (512, 512, 512))]
    return [Input("S", (1024, 1024, 512)), Input("M", (1024, 1024, 2048)), Input("L", (1024, 1024, 4096))]


def nhdr_text(dims, data_name: str) -> str:
    return "\n".join([
        "NRRD0004",
        "# benchmarks/stream.py: 3D zone plate cos(k r^2) plus a smooth wave",
        "type: unsigned short", "dimension: 3", "space: left-posterior-superior",
        f"sizes: {' '.join(map(str, dims))}",
        "space directions: (1,0,0) (0,1,0) (0,0,1)", "kinds: domain domain domain",
        f"endian: {sys.byteorder}", "encoding: raw", "space origin: (0,0,0)",
        f"data file: {data_name}", ""])


def generate(item: Input, folder: Path) -> None:
    """Write ``item`` as NHDR + raw, CHUNK_SLICES slices at a time. cos(k (a + b)) with a = x^2 + y^2 fixed per
    slice and b = z^2 one number per slice: two multiply-adds per voxel instead of a cosine."""
    started = time.perf_counter()
    nx, ny, nz = item.dims
    x, y, z = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0 for n in (nx, ny, nz))
    k = MAX_FREQUENCY * math.pi / math.sqrt(x[-1] ** 2 + y[-1] ** 2 + z[-1] ** 2)
    phase_xy = k * (y[:, None] ** 2 + x[None, :] ** 2)
    cos_xy = (AMPLITUDE * np.cos(phase_xy)).astype(np.float32)
    sin_xy = (AMPLITUDE * np.sin(phase_xy)).astype(np.float32)
    del phase_xy
    wave_x = np.cos(2.0 * math.pi * np.arange(nx) / nx).astype(np.float32)[None, :]
    item.header = folder / f"input-{item.key}.nhdr"
    block = np.empty((CHUNK_SLICES, ny, nx), np.uint16)
    values = np.empty((ny, nx), np.float32)
    scratch = np.empty((ny, nx), np.float32)
    with open(item.data, "wb") as handle:
        for k0 in range(0, nz, CHUNK_SLICES):
            k1 = min(k0 + CHUNK_SLICES, nz)
            for index in range(k0, k1):
                phase_z = k * z[index] ** 2
                np.multiply(cos_xy, np.float32(math.cos(phase_z)), out=values)
                np.multiply(sin_xy, np.float32(math.sin(phase_z)), out=scratch)
                values -= scratch
                np.multiply(wave_x, np.float32(WAVE * math.sin(2.0 * math.pi * index / nz)), out=scratch)
                values += scratch
                values += np.float32(OFFSET)
                np.rint(values, out=values)
                block[index - k0] = values
            block[:k1 - k0].tofile(handle)
    item.header.write_text(nhdr_text(item.dims, item.data.name))
    item.generate_seconds = time.perf_counter() - started


def plan_disk(inputs: list[Input], folder: Path) -> int:
    """Mark the inputs that do not fit on the disk (inputs + two outputs each + margin), smallest first."""
    free = shutil.disk_usage(folder).free
    needed = DISK_MARGIN
    for item in inputs:
        needed += item.nbytes + 2 * item.nbytes // FACTOR ** 3
        if needed > free:
            item.skipped = (f"skipped: not enough free disk space in {folder} (needs {needed / GIB:.1f} GiB with "
                            f"the smaller inputs and a {size_text(DISK_MARGIN)} margin, {free / GIB:.1f} GiB free)")
    return free


# --- page cache (resident_fraction: bigvolume.io.raw_reads, mincore(2)) -----------------------------------------
def drop_from_page_cache(path: Path, drop_caches: str) -> dict:
    """Evict ``path`` from the page cache: sync, posix_fadvise DONTNEED, then /proc/sys/vm/drop_caches when
    ``drop_caches`` is "always", or "fallback" and more than 1 % of the file is still cached (drop_caches empties
    the whole machine's cache, the Python and vtk libraries too, which slows the next start-up)."""
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        fadvise = "done"
    except (OSError, AttributeError) as error:
        fadvise = f"failed ({error})"
    finally:
        os.close(fd)
    resident = resident_fraction(path)
    state = "not needed" if drop_caches == "fallback" else "not tried"
    if drop_caches == "always" or (drop_caches == "fallback" and (resident is None or resident > 0.01)):
        try:
            with open("/proc/sys/vm/drop_caches", "w") as handle:
                handle.write("1")
            state = "done"
        except OSError as error:
            state = f"refused ({error.strerror or error})"
        resident = resident_fraction(path)
    return {"fadvise": fadvise, "drop_caches": state, "resident_before": resident}


def read_into_page_cache(path: Path) -> float | None:
    buffer = bytearray(READ_BLOCK)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
    return resident_fraction(path)


# --- child processes ----------------------------------------------------------------------------------------------
SUMMARY_CORE = re.compile(r", (\d+(?:\.\d+)?) s(?:;|$)")
SUMMARY_PLAN = re.compile(r"streamed in (\d+) slabs? of (\d+) slices?, buffers ([\d.]+ \w+) \(limit ([\d.]+ \w+)\)")


def run_child(command, log: Path) -> dict:
    """Run ``command`` through the launcher: wall seconds, its own peak RSS, and what its summary line says."""
    command = [str(part) for part in command]
    launcher = subprocess.run([sys.executable, str(LAUNCHER), str(log), "--", *command],
                              capture_output=True, text=True, check=True)
    result = json.loads(launcher.stdout)
    output = log.read_text()
    if result["returncode"] != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({result['returncode']}):\n{output}")
    run = {"command": shlex.join(command), "seconds": result["seconds"], "peak_kib": result["peak_kib"]}
    summary = [line for line in output.splitlines() if " -> " in line and " on disk" in line]
    if summary:
        core = SUMMARY_CORE.search(summary[-1])
        plan = SUMMARY_PLAN.search(summary[-1])
        run.update(summary=summary[-1], core_seconds=float(core.group(1)) if core else None,
                   plan=plan.group(0) if plan else None,
                   slabs=int(plan.group(1)) if plan else None, slab_slices=int(plan.group(2)) if plan else None,
                   buffers=plan.group(3) if plan else None, limit=plan.group(4) if plan else None)
    notes = [line for line in output.splitlines() if line.startswith("bigvolume: note:")]
    if notes:
        run["notes"] = notes
    return run


def bigvolume_command() -> list:
    """``python -m bigvolume``: the package on this interpreter's path (a checkout's on PYTHONPATH included), as
    the installed ``bigvolume`` script runs it."""
    return [sys.executable, "-m", "bigvolume"]


@dataclass(frozen=True)
class Mode:
    stream: bool
    limit: str | None   # --memory-limit value, None: the default

    @property
    def flags(self) -> list:
        return (["--stream" if self.stream else "--no-stream"]
                + ([] if self.limit is None else ["--memory-limit", self.limit]))

    @property
    def label(self) -> str:
        return "streamed" if self.stream else "in memory (--no-stream)"

    def limit_label(self, default_limit: int) -> str:
        return self.limit or f"default ({default_limit / GIB:.2f} GiB)"


def resample_command(item: Input, output: Path, mode: Mode, factor: int = FACTOR) -> list:
    return bigvolume_command() + ["resample", item.header, output, "--factor", str(factor), "--no-compress",
                                  *mode.flags]


def remove_output(output: Path) -> None:
    output.unlink(missing_ok=True)
    output.with_suffix(".raw").unlink(missing_ok=True)


def run_resample(item: Input, folder: Path, mode: Mode, tag: str, factor: int = FACTOR) -> dict:
    output = folder / f"output-{tag}.nhdr"
    remove_output(output)
    run = run_child(resample_command(item, output, mode, factor), folder / "log.txt")
    expected = 2 * math.prod(round(n / factor) for n in item.dims)
    actual = output.with_suffix(".raw").stat().st_size
    if actual != expected:
        raise RuntimeError(f"{run['command']}: output data has {actual} bytes, {expected} expected")
    if mode.stream != bool(run.get("plan")):
        raise RuntimeError(f"{run['command']}: {'did not stream' if mode.stream else 'streamed'}:\n"
                           f"{run.get('summary')}")
    return run


def mem_available() -> int:
    match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def load_average() -> list:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- 1 + 2: memory --------------------------------------------------------------------------------------------------
@dataclass
class MemoryRow:
    item: Input
    mode: Mode
    run: dict | None = None
    skipped: str = ""


def measure_memory(inputs: dict, folder: Path) -> tuple[list[MemoryRow], dict]:
    load_before = load_average()
    imports = [run_child([sys.executable, "-c", IMPORTS], folder / "log.txt") for _ in range(3)]
    libraries = {"peak_kib": benchlib.median(r["peak_kib"] for r in imports),
                 "seconds": benchlib.median(r["seconds"] for r in imports), "command": imports[0]["command"],
                 "load_before": load_before}
    rows = []
    for key in ("S", "M", "L"):
        item = inputs[key]
        modes = [Mode(True, None), Mode(True, "1GB")]
        if key == "S":
            modes += [Mode(True, "256MB"), Mode(False, None)]
        if key == "M":
            modes += [Mode(False, None)]
        for mode in modes:
            row = MemoryRow(item, mode)
            rows.append(row)
            if item.skipped:
                row.skipped = item.skipped
                continue
            if not mode.stream and key != "S":
                small = next((r for r in rows if r.item.key == "S" and not r.mode.stream and r.run), None)
                extra = (small.run["peak_kib"] * 1024 - small.item.nbytes) if small else item.nbytes
                available = mem_available()
                if available < item.nbytes + extra + MEMORY_MARGIN:
                    row.skipped = (f"skipped: {available / GIB:.1f} GiB available < input + extra "
                                   f"{size_text(item.nbytes + extra)} + {size_text(MEMORY_MARGIN)} margin")
                    continue
            log(f"memory: {item.label}, {mode.label}, limit {mode.limit or 'default'}")
            row.run = run_resample(item, folder, mode, "memory")
    return rows, libraries


def slab_caps() -> str:
    """Why a larger limit may change nothing: the planner's own caps on the slab size."""
    from bigvolume.core import memory
    from bigvolume.engine import plan
    most, fewest = getattr(memory, "MAX_SLAB_BYTES", None), getattr(plan, "MIN_SLABS", None)
    if most is None or fewest is None:
        return ""
    return (f"A limit changes the plan only when it is tighter than the planner's caps: slabs of at most "
            f"{most / MIB:g} MiB of input and at least {fewest} slabs per volume (bigvolume.core.memory.MAX_SLAB_BYTES, "
            "bigvolume.engine.plan.MIN_SLABS).")


def memory_table(rows: list[MemoryRow], libraries: dict, default_limit: int) -> str:
    imports_mib = libraries["peak_kib"] / 1024
    table = []
    for row in rows:
        cells = [row.item.label, row.mode.label, row.mode.limit_label(default_limit)]
        if row.run is None:
            reason = "skipped: not enough disk space (see above)" if row.item.skipped else row.skipped or "not run"
            table.append(cells + [reason, "", "", "", "", ""])
            continue
        run = row.run
        peak_mib = run["peak_kib"] / 1024
        plan = (f"{run['slabs']} x {run['slab_slices']} slices, buffers {run['buffers']}" if run.get("plan")
                else "whole volume (memory-mapped)")
        table.append(cells + [plan, f"{run['seconds']:.1f}", f"{peak_mib:.0f}", f"{peak_mib - imports_mib:+.0f}",
                              f"{peak_mib * MIB / row.item.nbytes:.3f}"])
    return benchlib.markdown_table(["input", "mode", "memory limit", "plan", "wall s", "peak RSS MiB",
                                    "peak - imports MiB", "peak / input"], table)


def memory_verdicts(rows: list[MemoryRow], quick: bool) -> list[str]:
    verdicts = []
    for key, limit, bound, bound_text in MEMORY_GOALS:
        row = next(r for r in rows if r.item.key == key and r.mode == Mode(True, limit))
        goal = f"memory goal: {row.item.label} streamed with --memory-limit {limit}"
        scale = " [--quick: smaller input than the goal's, a smoke test]" if quick else ""
        if row.run is None:
            verdicts.append(f"SKIPPED {goal}: {row.skipped}")
            continue
        peak = row.run["peak_kib"] * 1024
        verdicts.append(f"{'PASS' if peak < bound else 'FAIL'} {goal}: peak RSS {peak / MIB:.0f} MiB "
                        f"(goal < {bound_text}){scale}")
    return verdicts


# --- 3: warm speed --------------------------------------------------------------------------------------------------
def measure_warm(item: Input, folder: Path, rounds: int) -> dict:
    result = {"input": item.label, "input_bytes": item.nbytes, "rounds": rounds, "skipped": item.skipped,
              "load_before": load_average()}
    if item.skipped:
        return result
    log(f"warm speed: reading {item.data.name} into the page cache")
    result["resident_after_warm_up"] = read_into_page_cache(item.data)
    modes = {"streamed": Mode(True, None), "in memory": Mode(False, None)}
    runs = {who: [] for who in modes}
    for round_index in range(rounds):
        order = list(modes) if round_index % 2 == 0 else list(modes)[::-1]
        for who in order:
            log(f"warm speed: round {round_index + 1}/{rounds}, {who}")
            tag = "warm-stream" if modes[who].stream else "warm-memory"
            runs[who].append(run_resample(item, folder, modes[who], tag))
    result["resident_after_runs"] = resident_fraction(item.data)
    result["runs"] = runs
    streamed = np.fromfile(folder / "output-warm-stream.raw", np.uint16).astype(np.int32)
    in_memory = np.fromfile(folder / "output-warm-memory.raw", np.uint16).astype(np.int32)
    result["max_abs_difference"] = int(np.abs(streamed - in_memory).max())
    result["summary"] = {who: summarise_runs(rs, item.nbytes) for who, rs in runs.items()}
    return result


def summarise_runs(runs: list, nbytes: int) -> dict:
    seconds = benchlib.median(r["seconds"] for r in runs)
    cores = [r["core_seconds"] for r in runs if r.get("core_seconds")]
    core = benchlib.median(cores) if cores else float("nan")
    return {"seconds": seconds, "best_seconds": min(r["seconds"] for r in runs), "core_seconds": core,
            "mb_per_s": nbytes / seconds / 1e6, "core_mb_per_s": nbytes / core / 1e6,
            "peak_mib": benchlib.median(r["peak_kib"] for r in runs) / 1024}


def warm_report(warm: dict, quick: bool) -> tuple[str, list[str]]:
    if warm["skipped"]:
        return f"Warm speed ({warm['input']}): {warm['skipped']}", [f"SKIPPED speed goal: {warm['skipped']}"]
    s = warm["summary"]
    rows = []
    for who in ("streamed", "in memory"):
        r = s[who]
        rows.append([who, f"{r['seconds']:.2f}", f"{r['best_seconds']:.2f}", f"{r['mb_per_s']:.0f}",
                     f"{r['core_seconds']:.2f}", f"{r['core_mb_per_s']:.0f}",
                     f"{r['seconds'] - r['core_seconds']:.2f}", f"{r['peak_mib']:.0f}"])
    ratio = s["streamed"]["mb_per_s"] / s["in memory"]["mb_per_s"]
    core_ratio = s["streamed"]["core_mb_per_s"] / s["in memory"]["core_mb_per_s"]
    rows.append(["streamed / in memory", "", "", f"{ratio:.2f}", "", f"{core_ratio:.2f}", "", ""])
    resident = warm.get("resident_after_warm_up")
    text = "\n".join([
        f"Warm page cache, {warm['input']} (data file {percent(resident)} in the page cache before the runs, "
        f"{percent(warm.get('resident_after_runs'))} after); median of {warm['rounds']} alternated runs each; "
        "MB = 10^6 bytes of input; core = resample_file's own seconds from the summary line; "
        f"rest = wall - core (interpreter start-up, imports, exit). Load average before: {warm['load_before']}.",
        "",
        benchlib.markdown_table(["mode", "median wall s", "best wall s", "input MB/s (wall)", "median core s",
                                 "input MB/s (core)", "rest s", "peak RSS MiB"], rows), "",
        f"Outputs: streamed vs in memory, max |difference| = {warm['max_abs_difference']} (uint16)."])
    scale = " [--quick: small input, start-up weighs more]" if quick else ""
    verdicts = [f"{'PASS' if ratio >= SPEED_GOAL else 'FAIL'} speed goal (warm, {warm['input']}): streamed / "
                f"in-memory throughput = {ratio:.2f} on the whole command (goal >= {SPEED_GOAL}); "
                f"{core_ratio:.2f} on resample_file alone{scale}",
                f"{'PASS' if warm['max_abs_difference'] <= 1 else 'FAIL'} streamed output agrees with the in-memory "
                f"output within 1: max |difference| = {warm['max_abs_difference']}"]
    return text, verdicts


def percent(fraction) -> str:
    return "?" if fraction is None else f"{100 * fraction:.0f} %"


def percent_range(fractions) -> str:
    """'0 %' when every run saw the same share, else 'lowest - highest'."""
    low, high = (percent(min(fractions)), percent(max(fractions))) if fractions else ("?", "?")
    return low if low == high else f"{low} - {high}"


# --- 4: cold speed --------------------------------------------------------------------------------------------------
def measure_cold(item: Input, folder: Path, rounds: int, drop_caches: str) -> dict:
    result = {"input": item.label, "input_bytes": item.nbytes, "rounds": rounds, "skipped": item.skipped,
              "load_before": load_average()}
    if item.skipped:
        return result
    dd = shutil.which("dd")
    kinds = ["dd", "streamed", "in memory", "streamed, warm"]
    runs = {kind: [] for kind in kinds}
    for round_index in range(rounds):
        shift = round_index % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            for output in folder.glob("output-*.nhdr"):
                remove_output(output)
            if kind == "streamed, warm":
                os.sync()
                state = {"resident_before": read_into_page_cache(item.data)}
            else:
                state = drop_from_page_cache(item.data, drop_caches)
            log(f"cold speed: round {round_index + 1}/{rounds}, {kind} "
                f"({percent(state['resident_before'])} of the input in the page cache)")
            if kind == "dd":
                if dd:
                    run = run_child([dd, f"if={item.data}", "of=/dev/null", "bs=16M"], folder / "log.txt")
                else:
                    run = run_child([sys.executable, "-c", PYTHON_READ, item.data], folder / "log.txt")
            else:
                run = run_resample(item, folder, Mode(kind != "in memory", None), "cold")
            run.update(state)
            runs[kind].append(run)
    result["runs"] = runs
    result["reader"] = "dd" if dd else "python read loop"
    result["summary"] = {kind: summarise_runs(rs, item.nbytes) for kind, rs in runs.items()}
    return result


PYTHON_READ = ("import sys; b = bytearray(16 << 20); f = open(sys.argv[1], 'rb', buffering=0)\n"
               "while f.readinto(b): pass")


def cold_report(cold: dict) -> tuple[str, list[str]]:
    if cold["skipped"]:
        return f"Cold speed ({cold['input']}): {cold['skipped']}", [f"SKIPPED cold speed: {cold['skipped']}"]
    s = cold["summary"]
    reference = s["dd"]["mb_per_s"]
    labels = {"dd": f"{cold['reader']} (sequential read, bs 16M)", "streamed": "streamed resample",
              "in memory": "in-memory resample (--no-stream), for scale",
              "streamed, warm": "streamed resample, page cache warm (not dropped), for scale"}
    rows = []
    for kind, label in labels.items():
        r = s[kind]
        residents = [run["resident_before"] for run in cold["runs"][kind] if run.get("resident_before") is not None]
        core = "" if kind == "dd" else f"{r['core_mb_per_s']:.0f}"
        rows.append([label, f"{r['seconds']:.2f}", f"{r['best_seconds']:.2f}", f"{r['mb_per_s']:.0f}", core,
                     f"{r['mb_per_s'] / reference:.2f}", percent_range(residents)])
    dropped = [run for kind in ("dd", "streamed", "in memory") for run in cold["runs"][kind]]
    fadvise = ", ".join(sorted({run["fadvise"] for run in dropped}))
    drop_caches = ", ".join(f"{state} {sum(run['drop_caches'] == state for run in dropped)}x"
                            for state in sorted({run["drop_caches"] for run in dropped}))
    ratio = s["streamed"]["mb_per_s"] / reference
    cold_vs_warm = s["streamed"]["mb_per_s"] / s["streamed, warm"]["mb_per_s"]
    text = "\n".join([
        f"Cold page cache, {cold['input']}: before every run os.sync(), posix_fadvise DONTNEED "
        f"({fadvise}), /proc/sys/vm/drop_caches ({drop_caches}); median of {cold['rounds']} alternated runs "
        "each; MB = 10^6 bytes of input; core = resample_file's own seconds (no start-up). Load average before: "
        f"{cold['load_before']}.", "",
        benchlib.markdown_table(["what", "median wall s", "best wall s", "input MB/s (wall)", "input MB/s (core)",
                                 "MB/s vs dd", "input in page cache before"], rows)])
    return text, [f"INFO cold speed ({cold['input']}): streamed resample reads at {ratio:.2f} x the disk's "
                  f"sequential read speed ({s['streamed']['mb_per_s']:.0f} vs {reference:.0f} MB/s, whole command); "
                  f"cold / warm streamed = {cold_vs_warm:.2f} (near 1: reading hides behind filtering; a ratio "
                  "vs dd well below 1 with cold / warm near 1 means filtering, not the disk, sets the pace)"]


# --- main -----------------------------------------------------------------------------------------------------------
def command_lines(memory_rows, warm, cold) -> list[str]:
    """One exact command line per distinct configuration, in the order they first ran."""
    seen, lines = set(), []
    runs = [row.run for row in memory_rows if row.run]
    for section in (warm, cold):
        for kind_runs in section.get("runs", {}).values():
            runs += kind_runs
    for run in runs:
        if run["command"] not in seen:
            seen.add(run["command"])
            lines.append(run["command"])
    return lines


# --- per-pass breakdown (--passes) ----------------------------------------------------------------------------------
PASS_FACTORS = (2, 4)
PASS_GOALS = {"dd": 0.6, "warm": 0.9}


def passes_worker(header: str, factor: str) -> int:
    """In-process streamed resample of ``header`` into a raw .nhdr beside it, with the engine's and the numpy
    backend's own timers (run_slabs(timings), NumpyBackend(timings)); prints one JSON line."""
    from bigvolume.core.memory import default_memory_limit, default_threads
    from bigvolume.engine.stream import stream_to_file
    from bigvolume.io.slabs import open_slabs
    from bigvolume.methods.numpy_band import NumpyBackend
    timings: dict = {}
    output = Path(header).with_name("output-passes.nhdr")
    cpu, started = time.process_time(), time.perf_counter()
    with open_slabs(header) as reader:
        plan = stream_to_file(reader, output, (float(factor),) * 3, "lanczos", threads=default_threads(),
                              compress=False, memory_limit=default_memory_limit(),
                              backend=NumpyBackend(timings), timings=timings)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    remove_output(output)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "timings": timings, "plan": plan.describe()}))
    return 0


@contextlib.contextmanager
def baseline_environment(tree: str):
    """Child processes import the package from ``tree``: PYTHONPATH, and PYTHONSAFEPATH so that ``python -m``
    does not put the current directory (perhaps this checkout) first (see :func:`check_baseline`)."""
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "PYTHONSAFEPATH")}
    os.environ.update(PYTHONPATH=tree, PYTHONSAFEPATH="1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_baseline(tree: str) -> None:
    """Refuse a baseline whose runs would not import the package in ``tree`` (checked once, before measuring)."""
    with baseline_environment(tree):
        found = subprocess.run([sys.executable, "-c", "import bigvolume; print(bigvolume.__file__)"],
                               capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(Path(tree).resolve()):
        raise RuntimeError(f"the baseline run would import {found}, not the package in {tree}")


def measure_passes(item: Input, folder: Path, rounds: int, drop_caches: str, baseline: str | None = None) -> dict:
    """Per factor (x2, x4), alternating, ``rounds`` rounds: dd of the cold file; the streamed command, cold; the
    in-process breakdown per pass, cold; the streamed and the in-memory command, warm. ``baseline``: another
    checkout whose streamed command also runs cold in the same rounds (PYTHONPATH)."""
    result = {"input": item.label, "input_bytes": item.nbytes, "rounds": rounds, "load_before": load_average(),
              "runs": {}, "baseline": baseline and {"tree": baseline, "commit": benchlib.commit_of(baseline)}}
    dd = shutil.which("dd")
    for factor in PASS_FACTORS:
        kinds = ["dd", "dd, direct", "streamed, cold", "streamed, cold, page cache", "passes, cold",
                 "streamed, warm", "streamed, warm, copied", "in memory, warm"] + \
            (["streamed, cold, baseline"] if baseline else [])
        runs = {kind: [] for kind in kinds}
        for round_index in range(rounds):
            for kind in kinds[round_index % len(kinds):] + kinds[:round_index % len(kinds)]:
                if kind.endswith("warm"):
                    os.sync()
                    state = {"resident_before": read_into_page_cache(item.data)}
                else:
                    state = drop_from_page_cache(item.data, drop_caches)
                state["load"] = load_average()[0]
                log(f"passes x{factor}: round {round_index + 1}/{rounds}, {kind}")
                if kind == "dd":
                    run = run_child([dd, f"if={item.data}", "of=/dev/null", "bs=16M"] if dd else
                                    [sys.executable, "-c", PYTHON_READ, item.data], folder / "log.txt")
                elif kind == "dd, direct":  # the disk around the page cache, as the engine reads a cold file
                    run = run_child([dd, f"if={item.data}", "of=/dev/null", "bs=16M", "iflag=direct"] if dd else
                                    [sys.executable, "-c", PYTHON_READ, item.data], folder / "log.txt")
                elif kind == "streamed, cold, page cache":  # the reader as it was: through the page cache
                    os.environ["BIGVOLUME_DIRECT_READ"] = "never"
                    try:
                        run = run_resample(item, folder, Mode(True, None), f"passes-{factor}", factor)
                    finally:
                        del os.environ["BIGVOLUME_DIRECT_READ"]
                elif kind == "streamed, warm, copied":  # a cached file copied out of the cache, not mapped
                    os.environ["BIGVOLUME_MAPPED_READ"] = "never"
                    try:
                        run = run_resample(item, folder, Mode(True, None), f"passes-{factor}", factor)
                    finally:
                        del os.environ["BIGVOLUME_MAPPED_READ"]
                elif kind == "streamed, cold, baseline":  # the other checkout's package, same command
                    with baseline_environment(baseline):
                        run = run_resample(item, folder, Mode(True, None), f"passes-{factor}", factor)
                elif kind == "passes, cold":
                    worker = subprocess.run([sys.executable, __file__, "--passes-worker", str(item.header),
                                             str(factor)], capture_output=True, text=True, check=True)
                    run = json.loads(worker.stdout.strip().splitlines()[-1])
                else:
                    run = run_resample(item, folder, Mode(not kind.startswith("in memory"), None),
                                       f"passes-{factor}", factor)
                run.update(state)
                runs[kind].append(run)
        result["runs"][factor] = {"runs": runs,
                                  "summary": {kind: summarise_runs(rs, item.nbytes) for kind, rs in runs.items()
                                              if kind != "passes, cold"}}
    result["load_after"] = load_average()
    return result


def passes_report(passes: dict) -> tuple[str, list[str]]:
    rows, verdicts = [], []
    for factor, data in passes["runs"].items():
        summary, runs = data["summary"], data["runs"]
        dd = summary["dd"]["mb_per_s"]
        cold, warm, memory = (summary[k]["mb_per_s"] for k in ("streamed, cold", "streamed, warm", "in memory, warm"))
        direct, cached = summary["dd, direct"]["mb_per_s"], summary["streamed, cold, page cache"]["mb_per_s"]
        copied = summary["streamed, warm, copied"]["mb_per_s"]
        breakdown = {}
        for run in runs["passes, cold"]:
            for key, value in run["timings"].items():
                breakdown.setdefault(key, []).append(value)
        seconds = float(np.median([r["seconds"] for r in runs["passes, cold"]]))
        cpu = float(np.median([r["cpu_seconds"] for r in runs["passes, cold"]]))
        parts = ", ".join(f"{key} {np.median(values):.2f}" for key, values in
                          sorted(breakdown.items(), key=lambda kv: -float(np.median(kv[1]))))
        loads = sorted(run["load"] for rs in runs.values() for run in rs)
        rows.append(f"| x{factor} | {dd:.0f} | {direct:.0f} | {cold:.0f} ({cold / dd:.2f}x dd, {cold / direct:.2f}x "
                    f"direct) | {cached:.0f} ({cached / dd:.2f}x dd) | {warm:.0f} | {copied:.0f} ({copied / warm:.2f}x) | "
                    f"{memory:.0f} ({memory / warm:.2f}x streamed) | {seconds:.2f} s wall, {cpu:.2f} s CPU: "
                    f"{parts} | {loads[0]:.1f}-{loads[-1]:.1f} |")
        verdicts.append(f"- {'PASS' if cold / dd >= PASS_GOALS['dd'] else 'FAIL'}: x{factor} streamed, cold, "
                        f"{cold / dd:.2f}x dd's read speed (goal >= {PASS_GOALS['dd']})")
        verdicts.append(f"- {'PASS' if memory / warm >= PASS_GOALS['warm'] else 'FAIL'}: x{factor} warm, in memory "
                        f"{memory / warm:.2f}x the streamed speed (goal >= {PASS_GOALS['warm']})")
    baseline = passes.get("baseline")
    if baseline:
        lines = []
        for factor, data in passes["runs"].items():
            summary = data["summary"]
            ours, theirs = summary["streamed, cold"], summary["streamed, cold, baseline"]
            lines.append(f"x{factor} {theirs['seconds']:.2f} -> {ours['seconds']:.2f} s ({theirs['mb_per_s']:.0f} -> "
                         f"{ours['mb_per_s']:.0f} MB/s, {theirs['mb_per_s'] / summary['dd']['mb_per_s']:.2f}x -> "
                         f"{ours['mb_per_s'] / summary['dd']['mb_per_s']:.2f}x dd)")
        verdicts.append(f"- Streamed cold, baseline {baseline['commit']} ({baseline['tree']}) -> this tree, same "
                        f"rounds, medians: {'; '.join(lines)}")
    table = "\n".join([
        f"Input {passes['input']}, uint16 NHDR + raw, Lanczos, raw .nhdr output; {passes['rounds']} rounds "
        "alternated, medians, input MB/s (10^6 bytes per second) of the whole command. Passes: seconds inside one "
        "in-process run with the page cache dropped (engine and numpy backend timers; convert (uint16 to float32), y "
        "and x (band products) are CPU seconds summed over the filter threads, which run them a few slices at a time; "
        "z (band products) and cast (rounding to uint16) are seconds on the loop's thread; work is the loop's time "
        "in the stage, read wait the time it waited for the reader thread). A cold file is read around the page cache "
        "(O_DIRECT, bigvolume.io.raw_reads); 'through the page cache' is BIGVOLUME_DIRECT_READ=never, the reader as it "
        "was. Warm, a cached file is mapped slab by slab; 'copied' is BIGVOLUME_MAPPED_READ=never, read out of the "
        "cache into buffers as it was.", "",
        "| factor | dd cold | dd iflag=direct | streamed cold | streamed cold through the page cache | streamed warm "
        "| streamed warm, copied | in memory warm | passes (cold, in process) | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows])
    return table, verdicts


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--passes-worker"]:
        return passes_worker(*sys.argv[2:4])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64/128/256 MiB inputs, 2 rounds: a smoke test")
    parser.add_argument("--rounds", type=int, help="warm rounds per mode (default 5, --quick 2)")
    parser.add_argument("--cold-rounds", type=int, help="cold rounds per kind (default 3, --quick 2)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary folder goes (/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs and outputs")
    parser.add_argument("--drop-caches", choices=("fallback", "always", "never"), default="fallback",
                        help="cold runs: write 1 to /proc/sys/vm/drop_caches (root) after posix_fadvise: only "
                             "when the input is still cached (fallback, default), before every run, or never")
    parser.add_argument("--passes", action="store_true",
                        help="only the per-pass breakdown: a 2 GiB input (--quick: 128 MiB), x2 and x4, cold against "
                             "dd and warm against the in-memory path (rounds: --cold-rounds, default 3)")
    parser.add_argument("--baseline-tree", help="with --passes: another checkout of the package, whose streamed "
                                                "command also runs cold in the same rounds")
    args = parser.parse_args(argv)
    if args.passes:
        return main_passes(args)
    rounds = args.rounds or (2 if args.quick else 5)
    cold_rounds = args.cold_rounds or (2 if args.quick else 3)
    from bigvolume.core.memory import default_memory_limit
    default_limit = default_memory_limit()
    info = benchlib.machine_info()
    load_start = load_average()
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="bigvolume-stream-bench-", dir=args.dir))
    inputs = {item.key: item for item in make_inputs(args.quick)}
    try:
        free = plan_disk(list(inputs.values()), folder)
        available_at_start = mem_available()
        for item in inputs.values():
            if item.skipped:
                log(f"{item.label}: {item.skipped}")
                continue
            log(f"generating {item.label} in {folder}")
            generate(item, folder)
        os.sync()
        memory_rows, libraries = measure_memory(inputs, folder)
        warm = measure_warm(inputs["S"], folder, rounds)
        cold = measure_cold(inputs["M"], folder, cold_rounds, args.drop_caches)
    finally:
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    load_end = load_average()
    warm_text, warm_verdicts = warm_report(warm, args.quick)
    cold_text, cold_verdicts = cold_report(cold)
    commands = command_lines(memory_rows, warm, cold)
    skipped = [f"- {item.label}: {item.skipped}" for item in inputs.values() if item.skipped]
    text = "\n".join([
        benchlib.machine_markdown(info), "",
        f"{'--quick: ' if args.quick else ''}inputs {', '.join(item.label for item in inputs.values())}, uint16 "
        f"NHDR + raw, factor {FACTOR}, raw .nhdr outputs; {free / GIB:.0f} GiB free disk, "
        f"{available_at_start / GIB:.1f} GiB memory available at the start; default memory limit "
        f"{default_limit / GIB:.2f} GiB; load average {load_start} at the start, {load_end} at the end; "
        f"inputs generated in {sum(i.generate_seconds for i in inputs.values()):.0f} s, "
        f"{time.perf_counter() - started:.0f} s in all.", *([""] + skipped if skipped else []), "",
        "### Peak memory against input size (one run each)", "",
        f"Peak = the command's own ru_maxrss (for --no-stream it includes the memory-mapped input's pages). "
        f"Imports only (`{IMPORTS}`): {libraries['peak_kib'] / 1024:.0f} MiB peak, {libraries['seconds']:.2f} s. "
        f"{slab_caps()} Load average before this section: {libraries['load_before']}.", "",
        memory_table(memory_rows, libraries, default_limit), "",
        "### Warm page cache: streamed vs in memory", "", warm_text, "",
        "### Cold page cache: streamed vs the disk", "", cold_text, "",
        "### Goals", "", *memory_verdicts(memory_rows, args.quick), *warm_verdicts, *cold_verdicts, "",
        "### Command lines", "", "```", *commands, "```"])
    print(text)
    payload = {"machine": info, "quick": args.quick, "rounds": rounds, "cold_rounds": cold_rounds,
               "docstring": __doc__, "load_average": {"start": load_start, "end": load_end},
               "free_disk_bytes": free, "mem_available_bytes": available_at_start,
               "default_memory_limit": default_limit,
               "inputs": [{"key": i.key, "dims": i.dims, "bytes": i.nbytes, "skipped": i.skipped,
                           "generate_seconds": i.generate_seconds} for i in inputs.values()],
               "imports_only": libraries,
               "memory": [{"input": r.item.key, "stream": r.mode.stream, "limit": r.mode.limit,
                           "skipped": r.skipped, "run": r.run} for r in memory_rows],
               "warm": warm, "cold": cold, "commands": commands, "markdown": text}
    print(f"\nwritten {benchlib.write_json(NAME, payload)}")
    return 0


def main_passes(args) -> int:
    rounds = args.cold_rounds or (2 if args.quick else 3)
    item = Input("P", (512, 512, 256) if args.quick else (1024, 1024, 1024))
    info = benchlib.machine_info()
    folder = Path(tempfile.mkdtemp(prefix="bigvolume-passes-bench-", dir=args.dir))
    try:
        plan_disk([item], folder)
        if item.skipped:
            print(f"{item.label}: {item.skipped}")
            return 1
        log(f"generating {item.label} in {folder}")
        generate(item, folder)
        os.sync()
        baseline = str(Path(args.baseline_tree).resolve()) if args.baseline_tree else None
        if baseline:
            check_baseline(baseline)
        passes = measure_passes(item, folder, rounds, args.drop_caches, baseline)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    table, verdicts = passes_report(passes)
    text = "\n".join([benchlib.machine_markdown(info), "", "### Where the time goes: per pass, against dd", "",
                      table, "", *verdicts])
    print(text)
    payload = {"machine": info, "quick": args.quick, "passes": passes, "markdown": text}
    print(f"\nwritten {benchlib.write_json(NAME + '_passes', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
