"""Importing an image stack (`bigvolume import-stack`) against its two unavoidable parts, decoding the slices and
the anti-aliased resample, measured alone; beside it an ImageStacks-style import and the zero-copy NHDR.

Run: ``.venv/bin/python benchmarks/stack_import.py [--quick] [--slices N] [--size N] [--rounds N] [--keep]
[--dir DIR] [--no-diagnostics]`` on a quiet machine. Prints Markdown tables and PASS/FAIL lines for the goals
(reported, not asserted) and writes benchmarks/results/stack_import.json (machine, every command line run, every
raw measurement, the tables). The full run needs about 20 GiB of free disk (checked first) and 10 GiB of free
memory, and takes roughly half an hour to an hour on 2 cores; ``--quick`` (128 slices of 512x512) one to two
minutes.

Input. A stack of N slices of S x S uint16 TIFF (default 1000 slices of 2048x2048: 8 GiB; ``--quick`` 128 of
512x512: 64 MiB; ``--slices``/``--size`` to choose), generated slice by slice into a temporary folder (under the
system's temporary folder unless ``--dir``; deleted at the end unless ``--keep``; generation is not timed), written
with SimpleITK in two variants: "uncompressed" (``useCompression=False``) and "deflate" (``useCompression=True,
compressor="Deflate"``: SimpleITK's TIFF writer given only useCompression=True writes PackBits, which does not
shrink this content and decodes at memcpy speed). Content: a 3D zone plate cos(k r^2) about the volume's centre
whose local frequency k r / pi reaches 0.35 cycles/voxel at the corners (above the output Nyquist of 0.25 or
0.125: the anti-aliasing filter has real work), values 32768 +- 16000; the slices of one stack are identical in
both variants. Free disk space is checked first (a variant that does not fit is skipped, with a line saying so);
``os.sync()`` after generating so no write-back runs during the timings.

All timings are warm: before every run that reads a stack, all its files are read once (through the page cache,
16 MiB at a time; that read's speed is recorded for every run: several GB/s means the stack was cached), so the
disk is not measured; the command runs from the page cache like the parts it is compared with.

Every run is a separate process, started through the small launcher benchmarks/peak_rss.py: wall time of the
whole process and its own peak RSS (ru_maxrss from ``os.wait4``; a launcher because a child forked from this
script would be credited with this script's peak). Per stack variant and factor F in (2, 4):

- import: ``bigvolume import-stack DIR OUT.nhdr --factor F --spacing 1 1 1 --quiet`` exactly as a user types it
  (Lanczos, anti-aliased, streamed to a raw NHDR; the output's sizes are checked).
- (a) decode: every slice decoded with SimpleITK on all cores (a ThreadPoolExecutor with one worker per core of
  ``sitk.ReadImage`` + ``sitk.GetArrayViewFromImage``, results discarded): the seconds of that loop, timed inside
  the process (no start-up, imports or exit). Independent of F: one measurement per variant and round.
- (b) resample: ``bigvolume.downsample_array(array, F)`` on an in-memory numpy array of the same shape, type and
  content (generated in the process, not timed; for 8 GiB it needs 8 GiB of memory plus the output): only the
  call is timed. Independent of the variant: one measurement per factor and round.
- (b') the same in-memory array through the streaming engine that the import uses (Lanczos as band-matrix
  products of the same kernel table, slab by slab; ``bigvolume.engine.gpu.resample_array(array, F, xp=None)``), timed the
  same way. Not the goal's (b), which is the in-memory resample as bigvolume does it (vtkImageResize); shown so
  that the import's overhead over its own filter is visible too: import / (a + b').
- Goal: import wall time <= 1.1 x (a + b). Also shown: the ratio without the command's start-up (wall time of a
  process that only imports bigvolume.cli.commands and bigvolume.ops.stack_import, median of 3): it matters for small stacks
  only.
- Goal: import peak RSS < output size + 512 MiB.
- ImageStacks-style, for scale (what SlicerMorph's ImageStacks loadByPaths does, generalised from 2 to F): the
  slice list cut to every F-th file, each kept slice decoded whole with SimpleITK (``GetArrayFromImage``) on one
  thread, decimated ``[::F, ::F]``, assembled into a ``numpy.zeros`` array, then one full copy
  (``np.array(copy=True)``, as ``updateVolumeFromArray`` copies into the volume node). Time (timed inside the
  process) and peak RSS; no anti-aliasing, so it does not compute the same thing.
- Zero-copy NHDR (uncompressed variant only): ``bigvolume import-stack DIR OUT.nhdr --nhdr-only --spacing 1 1 1
  --quiet`` (wall time of the command) and, in a separate process, the ``import_stack(DIR, OUT, spacing=(1, 1, 1),
  nhdr_only=True)`` call timed alone. Goal: both under 2 s (for 1000 slices); the NHDR must list the slice files.
- Throughputs: decode Gvox/s = voxels / (a), filter Gvox/s = voxels / (b) (input voxels): the slower one is the
  bottleneck. For the record also CPU seconds (user + system of the timed section, all threads) and cores used.

Order: each round runs every configuration once, the order reversed every other round; N rounds (default 3,
``--quick`` 1); medians. Then, unless ``--no-diagnostics``, one diagnostic pass (not used for the goals): decoding
on one thread, and the import run in-process as ``import_stack(...)`` with timers around its stages (header probe,
slab decoding on the reader thread, per-slice decoding summed over the decode threads, x/y filter, z filter, cast,
hand-off to the writer, writing on the writer thread; "main thread other" = the streaming loop minus the main
thread's timed stages: waiting for the next slab and the ring-buffer copy) and its CPU seconds, to show where the
time of the import goes. The machine's load average is recorded at the start and at the end: on a shared machine,
timings are only as good as the quiet they were taken in.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import benchlib

NAME = "stack_import"
HERE = Path(__file__).resolve().parent
THIS = Path(__file__).resolve()
LAUNCHER = HERE / "peak_rss.py"
GIB = 2 ** 30
MIB = benchlib.MIB
FACTORS = (2, 4)
TIME_GOAL = 1.1
RSS_MARGIN = 512 * MIB
NHDR_GOAL_S = 2.0
DISK_MARGIN = 2 * GIB
MEMORY_MARGIN = 1 * GIB
WARM_BLOCK = 16 * MIB
STARTUP_IMPORTS = "import bigvolume.cli.commands, bigvolume.ops.stack_import"
# Zone plate: local frequency k r / pi reaches MAX_FREQUENCY cycles/voxel at the corners; uint16 = OFFSET +
# AMPLITUDE cos(k r^2).
MAX_FREQUENCY, OFFSET, AMPLITUDE = 0.35, 32768.0, 16000.0
VARIANTS = {"uncompressed": {"useCompression": False},
            "deflate": {"useCompression": True, "compressor": "Deflate"}}


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def size_text(count: float) -> str:
    return f"{count / GIB:.3g} GiB" if count >= GIB else f"{count / MIB:.3g} MiB"


# --- content ------------------------------------------------------------------------------------------------------
class ZonePlate:
    """Slices of cos(k r^2) scaled to uint16. cos(k (a + b)) = cos(ka) cos(kb) - sin(ka) sin(kb), with a = x^2 + y^2
    the same for every slice and b = z^2 one number per slice: two multiply-adds per voxel instead of a cosine."""

    def __init__(self, size: int, slices: int):
        xy = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        self.z = np.arange(slices, dtype=np.float64) - (slices - 1) / 2.0
        self.k = MAX_FREQUENCY * math.pi / math.sqrt(2 * xy[-1] ** 2 + self.z[-1] ** 2)
        phase = self.k * (xy[:, None] ** 2 + xy[None, :] ** 2)
        self.cos_a = (AMPLITUDE * np.cos(phase)).astype(np.float32)
        self.sin_a = (AMPLITUDE * np.sin(phase)).astype(np.float32)

    def slice(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        b = self.k * self.z[index] ** 2
        values = self.cos_a * np.float32(math.cos(b))
        values -= self.sin_a * np.float32(math.sin(b))
        values += np.float32(OFFSET)
        np.rint(values, out=values)
        if out is None:
            return values.astype(np.uint16)
        out[...] = values
        return out


def slice_name(index: int) -> str:
    return f"slice_{index:05d}.tif"


def generate_stacks(folder: Path, variants: list[str], size: int, slices: int) -> dict:
    """Write every slice once per variant, a slice per task on all cores; returns seconds and bytes per variant."""
    import SimpleITK as sitk
    plate = ZonePlate(size, slices)
    for variant in variants:
        (folder / variant).mkdir(parents=True, exist_ok=True)

    def write(index: int) -> None:
        image = sitk.GetImageFromArray(plate.slice(index))
        for variant in variants:
            sitk.WriteImage(image, str(folder / variant / slice_name(index)), **VARIANTS[variant])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cores()) as pool:
        for _ in pool.map(write, range(slices)):
            pass
    seconds = time.perf_counter() - started
    os.sync()
    return {variant: {"folder": str(folder / variant), "generate_seconds": seconds,
                      "file_bytes": sum(p.stat().st_size for p in (folder / variant).iterdir())}
            for variant in variants}


def stack_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".tif")


def warm(folder: Path) -> dict:
    """Read every file of a stack once (into the page cache); its speed says whether it was cached already."""
    buffer = bytearray(WARM_BLOCK)
    view = memoryview(buffer)
    total = 0
    started = time.perf_counter()
    for path in stack_files(folder):
        with open(path, "rb", buffering=0) as handle:
            while True:
                count = handle.readinto(view)
                if not count:
                    break
                total += count
    seconds = time.perf_counter() - started
    return {"bytes": total, "seconds": seconds, "gb_per_s": total / seconds / 1e9 if seconds > 0 else None}


# --- workers (each runs in its own process, prints one JSON line) -------------------------------------------------
def worker_decode(folder: str, threads: str) -> dict:
    import SimpleITK as sitk
    files = [str(p) for p in stack_files(Path(folder))]

    def decode(path: str):
        image = sitk.ReadImage(path)
        return sitk.GetArrayViewFromImage(image).shape  # the view is discarded with the image

    cpu, started = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=int(threads)) as pool:
        shapes = set(pool.map(decode, files))
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"timed_seconds": seconds, "cpu_seconds": cpu, "slices": len(files), "shapes": sorted(shapes)}


def time_in_memory(size: str, slices: str, resample) -> dict:
    """``resample(array)`` timed alone on an in-memory zone-plate stack (generated first, not timed)."""
    size, slices = int(size), int(slices)
    plate = ZonePlate(size, slices)
    array = np.empty((slices, size, size), np.uint16)
    for index in range(slices):
        plate.slice(index, out=array[index])
    cpu, started = cpu_seconds(), time.perf_counter()
    result = resample(array)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"timed_seconds": seconds, "cpu_seconds": cpu, "output_shape": list(result.shape),
            "output_dtype": str(result.dtype)}


def worker_resample(size: str, slices: str, factor: str) -> dict:
    from bigvolume import downsample_array
    return time_in_memory(size, slices, lambda array: downsample_array(array, float(factor)))


def worker_resample_band(size: str, slices: str, factor: str) -> dict:
    from bigvolume.engine.gpu import resample_array  # xp=None: the CPU streaming stages (band products) over the array
    f = float(factor)
    return time_in_memory(size, slices, lambda array: resample_array(array, (f, f, f), "lanczos", xp=None))


def worker_imagestacks(folder: str, factor: str) -> dict:
    """SlicerMorph ImageStacks' loadByPaths with 'downsample' generalised to F: every F-th file, [::F, ::F]."""
    import SimpleITK as sitk
    step = int(factor)
    paths = [str(p) for p in stack_files(Path(folder))][::step]
    cpu, started = cpu_seconds(), time.perf_counter()
    volume = None
    for index, path in enumerate(paths):
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        slice_array = sitk.GetArrayFromImage(reader.Execute())
        if slice_array.ndim == 3:
            slice_array = slice_array[:, :, 0]
        if volume is None:
            shape = (len(paths), *(math.ceil(n / step) for n in slice_array.shape))
            volume = np.zeros(shape, dtype=slice_array.dtype)
        volume[index] = slice_array[::step, ::step]
    assembled = time.perf_counter()
    copy = np.array(volume, copy=True)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"timed_seconds": seconds, "cpu_seconds": cpu, "copy_seconds": seconds - (assembled - started),
            "output_shape": list(copy.shape)}


def worker_nhdr_call(folder: str, output: str) -> dict:
    from bigvolume.ops.stack_import import import_stack
    cpu, started = cpu_seconds(), time.perf_counter()
    report = import_stack(folder, output, spacing=(1.0, 1.0, 1.0), nhdr_only=True)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"timed_seconds": seconds, "cpu_seconds": cpu, "zero_copy": report.zero_copy}


BREAKDOWN_KEYS = ("plan (find + probe headers)", "stream_to_file", "streaming loop", "decode slabs (reader thread)",
                  "decode slices (sum over threads)", "x/y filter", "z filter", "cast", "hand-off to writer",
                  "write (writer thread)")


def worker_breakdown(folder: str, output: str, factor: str) -> dict:
    """import_stack in-process with timers around its stages (public functions and methods wrapped; the code itself
    is unchanged)."""
    import threading
    from bigvolume.engine import stream
    from bigvolume.io import slab_writers, stacks
    from bigvolume.methods import numpy_band
    from bigvolume.ops import stack_import
    totals = {key: 0.0 for key in BREAKDOWN_KEYS}
    calls = {key: 0 for key in BREAKDOWN_KEYS}
    lock = threading.Lock()

    def instrument(owner, name: str, key: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with lock:
                    totals[key] += time.perf_counter() - started
                    calls[key] += 1
        setattr(owner, name, timed)

    instrument(stack_import, "plan_stack_import", "plan (find + probe headers)")  # module globals at call time
    instrument(stack_import, "stream_to_file", "stream_to_file")
    instrument(stream, "stream_downsample", "streaming loop")
    instrument(numpy_band, "cast_to", "cast")
    instrument(stacks.StackSlabReader, "_read_into", "decode slabs (reader thread)")
    instrument(stacks.StackSlabReader, "_decode", "decode slices (sum over threads)")
    instrument(numpy_band.NumpyStages, "reduce_xy", "x/y filter")
    instrument(numpy_band.NumpyStages, "reduce_z", "z filter")
    instrument(slab_writers.BackgroundWriter, "write", "hand-off to writer")
    instrument(slab_writers.SlabWriter, "write", "write (writer thread)")
    cpu, started = cpu_seconds(), time.perf_counter()
    report = stack_import.import_stack(folder, output, spacing=(1.0, 1.0, 1.0), factor=float(factor))
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    main_timed = sum(totals[k] for k in ("x/y filter", "z filter", "cast", "hand-off to writer"))
    return {"timed_seconds": seconds, "cpu_seconds": cpu, "stages": totals, "calls": calls,
            "main thread other": totals["streaming loop"] - main_timed,
            "plan": report.stream_plan.describe() if report.stream_plan else ""}


WORKERS = {"decode": worker_decode, "resample": worker_resample, "resample-band": worker_resample_band,
           "imagestacks": worker_imagestacks,
           "nhdr-call": worker_nhdr_call, "breakdown": worker_breakdown}


# --- jobs ---------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    kind: str                  # see LABELS
    variant: str | None
    factor: int | None
    command: list
    reads: Path | None = None  # the stack folder it reads (warmed first)
    output: Path | None = None  # the output it writes (removed before and after)
    worker: bool = True        # prints a JSON line
    runs: list = field(default_factory=list)

    @property
    def key(self) -> str:
        return "/".join(str(p) for p in (self.kind, self.variant, self.factor) if p is not None)


LABELS = {"import": "import-stack --factor F", "decode": "(a) decode, all cores", "resample": "(b) in-memory resample",
          "resample-band": "(b') in-memory, streaming engine",
          "imagestacks": "ImageStacks-style", "nhdr-command": "import-stack --nhdr-only (command)",
          "nhdr-call": "import_stack(nhdr_only=True) call", "startup": "start-up (imports only)",
          "decode-1": "decode, 1 thread (diagnostic)", "breakdown": "import_stack in-process (diagnostic)"}


def bigvolume_launcher() -> list[str]:
    script = Path(sys.executable).parent / "bigvolume"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bigvolume"]


def worker_command(kind: str, *args) -> list:
    return [sys.executable, str(THIS), "--worker", kind, *map(str, args)]


def make_jobs(stacks: dict, size: int, slices: int, out: Path, can_resample: bool) -> tuple[list, list]:
    """The jobs of one round (in their order for even rounds) and the diagnostic jobs."""
    threads = cores()
    jobs, diagnostics = [], []
    for variant, folder in stacks.items():
        jobs.append(Job("decode", variant, None, worker_command("decode", folder, threads), reads=folder))
    for factor in FACTORS:
        if can_resample:
            jobs.append(Job("resample", None, factor, worker_command("resample", size, slices, factor)))
            jobs.append(Job("resample-band", None, factor, worker_command("resample-band", size, slices, factor)))
        for variant, folder in stacks.items():
            target = out / f"import-{variant}-x{factor}.nhdr"
            jobs.append(Job("import", variant, factor,
                            bigvolume_launcher() + ["import-stack", str(folder), str(target), "--factor", str(factor),
                                                    "--spacing", "1", "1", "1", "--quiet"],
                            reads=folder, output=target, worker=False))
            jobs.append(Job("imagestacks", variant, factor, worker_command("imagestacks", folder, factor),
                            reads=folder))
    if "uncompressed" in stacks:
        folder = stacks["uncompressed"]
        target = out / "zero-copy.nhdr"
        jobs.append(Job("nhdr-command", "uncompressed", None,
                        bigvolume_launcher() + ["import-stack", str(folder), str(target), "--nhdr-only",
                                                "--spacing", "1", "1", "1", "--quiet"],
                        reads=folder, output=target, worker=False))
        jobs.append(Job("nhdr-call", "uncompressed", None, worker_command("nhdr-call", folder, target),
                        reads=folder, output=target))
    for variant, folder in stacks.items():
        diagnostics.append(Job("decode-1", variant, None, worker_command("decode", folder, 1), reads=folder))
        for factor in FACTORS:
            target = out / f"breakdown-{variant}-x{factor}.nhdr"
            diagnostics.append(Job("breakdown", variant, factor, worker_command("breakdown", folder, target, factor),
                                   reads=folder, output=target))
    return jobs, diagnostics


def remove_output(path: Path | None) -> None:
    if path is None:
        return
    for candidate in (path, path.with_suffix(".raw"), path.with_suffix(".raw.gz")):
        candidate.unlink(missing_ok=True)


def nhdr_field(path: Path, name: str) -> str | None:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return None


def run_job(job: Job, log: Path, expected: dict) -> dict:
    warm_up = warm(job.reads) if job.reads is not None else None
    remove_output(job.output)
    launcher = subprocess.run([sys.executable, str(LAUNCHER), str(log), "--", *map(str, job.command)],
                              capture_output=True, text=True, check=True)
    result = json.loads(launcher.stdout)
    text = log.read_text(errors="replace")
    if result["returncode"] != 0:
        raise RuntimeError(f"{shlex.join(map(str, job.command))} failed ({result['returncode']}):\n{text}")
    run = {"seconds": result["seconds"], "peak_kib": result["peak_kib"], "warm_up": warm_up}
    if job.worker:
        run.update(json.loads(text.strip().splitlines()[-1]))
    if job.kind == "import":
        sizes = nhdr_field(job.output, "sizes")
        want = " ".join(map(str, expected[job.factor]))
        if sizes != want:
            raise RuntimeError(f"{job.output}: sizes {sizes!r}, expected {want!r}")
        run["output_bytes"] = job.output.with_suffix(".raw").stat().st_size
    if job.kind in ("nhdr-command", "nhdr-call"):
        data_file = nhdr_field(job.output, "data file") or ""
        run["zero_copy"] = data_file.startswith("LIST")
        run["nhdr_bytes"] = job.output.stat().st_size
    remove_output(job.output)
    return run


def run_rounds(jobs: list[Job], rounds: int, log: Path, expected: dict) -> None:
    for round_index in range(rounds):
        order = jobs if round_index % 2 == 0 else jobs[::-1]
        for number, job in enumerate(order, 1):
            print(f"round {round_index + 1}/{rounds}, {number}/{len(order)}: {job.key} ...", file=sys.stderr,
                  flush=True)
            job.runs.append(run_job(job, log, expected))


# --- report -------------------------------------------------------------------------------------------------------
def med(job: Job | None, key: str = "seconds") -> float | None:
    if job is None or not job.runs:
        return None
    return benchlib.median(run[key] for run in job.runs)


def fmt(value, spec: str = ".2f", missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def summarise(jobs: list[Job], diagnostics: list[Job], voxels: int, size: int, slices: int, startup: dict,
              stacks: dict) -> dict:
    by_key = {job.key: job for job in jobs + diagnostics}
    summary = {"configurations": {}, "decode": {}, "resample": {}, "resample_band": {}, "nhdr": {}, "breakdown": {}}
    for variant in stacks:
        decode = by_key.get(f"decode/{variant}")
        single = by_key.get(f"decode-1/{variant}")
        summary["decode"][variant] = {
            "seconds": med(decode, "timed_seconds"), "cpu_seconds": med(decode, "cpu_seconds"),
            "wall_seconds": med(decode), "peak_mib": (med(decode, "peak_kib") or 0) / 1024,
            "gvox_per_s": voxels / med(decode, "timed_seconds") / 1e9,
            "one_thread_seconds": med(single, "timed_seconds"),
            "one_thread_gvox_per_s": voxels / med(single, "timed_seconds") / 1e9 if single and single.runs else None}
    for factor in FACTORS:
        resample = by_key.get(f"resample/{factor}")
        seconds = med(resample, "timed_seconds")
        summary["resample"][factor] = {
            "seconds": seconds, "cpu_seconds": med(resample, "cpu_seconds"), "wall_seconds": med(resample),
            "peak_mib": med(resample, "peak_kib") / 1024 if resample else None,
            "gvox_per_s": voxels / seconds / 1e9 if seconds else None}
        band = by_key.get(f"resample-band/{factor}")
        band_seconds = med(band, "timed_seconds")
        summary["resample_band"][factor] = {
            "seconds": band_seconds, "cpu_seconds": med(band, "cpu_seconds"),
            "peak_mib": med(band, "peak_kib") / 1024 if band else None,
            "gvox_per_s": voxels / band_seconds / 1e9 if band_seconds else None}
    for variant in stacks:
        for factor in FACTORS:
            out_bytes = 2 * math.prod(output_dims(size, slices, factor))
            imp = by_key[f"import/{variant}/{factor}"]
            stacks_job = by_key[f"imagestacks/{variant}/{factor}"]
            a = summary["decode"][variant]["seconds"]
            b = summary["resample"][factor]["seconds"]
            parts = a + b if b is not None else None
            b_band = summary["resample_band"][factor]["seconds"]
            seconds = med(imp)
            peak = med(imp, "peak_kib") * 1024
            rss_goal = out_bytes + RSS_MARGIN
            summary["configurations"][f"{variant}/x{factor}"] = {
                "variant": variant, "factor": factor, "output_bytes": out_bytes,
                "import_seconds": seconds, "import_peak_mib": peak / MIB,
                "a_decode_seconds": a, "b_resample_seconds": b, "parts_seconds": parts,
                "ratio": seconds / parts if parts else None,
                "ratio_without_startup": (seconds - startup["seconds"]) / parts if parts else None,
                "b_band_seconds": b_band, "ratio_band": seconds / (a + b_band) if b_band else None,
                "time_pass": (seconds / parts <= TIME_GOAL) if parts else None,
                "rss_goal_mib": rss_goal / MIB, "rss_pass": peak < rss_goal,
                "imagestacks_seconds": med(stacks_job, "timed_seconds"),
                "imagestacks_wall_seconds": med(stacks_job),
                "imagestacks_peak_mib": med(stacks_job, "peak_kib") / 1024}
            breakdown = by_key.get(f"breakdown/{variant}/{factor}")
            if breakdown is not None and breakdown.runs:
                run = breakdown.runs[-1]
                summary["breakdown"][f"{variant}/x{factor}"] = {
                    "seconds": run["timed_seconds"], "cpu_seconds": run["cpu_seconds"], "stages": run["stages"],
                    "main thread other": run["main thread other"], "plan": run["plan"],
                    "parts_cpu_seconds": (summary["decode"][variant]["cpu_seconds"]
                                          + (summary["resample"][factor]["cpu_seconds"] or 0.0))}
    if "uncompressed" in stacks:
        command, call = by_key["nhdr-command/uncompressed"], by_key["nhdr-call/uncompressed"]
        summary["nhdr"] = {
            "command_seconds": med(command), "command_peak_mib": med(command, "peak_kib") / 1024,
            "call_seconds": med(call, "timed_seconds"), "call_wall_seconds": med(call),
            "call_peak_mib": med(call, "peak_kib") / 1024,
            "zero_copy": all(r["zero_copy"] for r in command.runs + call.runs),
            "nhdr_bytes": command.runs[-1]["nhdr_bytes"]}
        summary["nhdr"]["pass"] = (summary["nhdr"]["zero_copy"] and summary["nhdr"]["command_seconds"] < NHDR_GOAL_S
                                   and summary["nhdr"]["call_seconds"] < NHDR_GOAL_S)
    return summary


def output_dims(size: int, slices: int, factor: int) -> tuple[int, int, int]:
    from bigvolume.core.geometry import output_size
    return output_size(size, factor), output_size(size, factor), output_size(slices, factor)


def report(summary: dict, info: dict, setup: dict, stacks: dict, startup: dict, notes: list[str]) -> tuple[str, list]:
    verdicts = []
    rows = []
    for name, c in summary["configurations"].items():
        variant, factor = c["variant"], c["factor"]
        parts = c["parts_seconds"]
        share = (lambda s: fmt(s / parts) if parts and s is not None else "n/a")
        d, r = summary["decode"][variant], summary["resample"][factor]
        label = f"{variant}, x{factor}"
        rows.append([f"{label}: (a) decode, {setup['threads']} threads", fmt(c["a_decode_seconds"]),
                     share(c["a_decode_seconds"]), fmt(d["peak_mib"], ".0f"), "", ""])
        rows.append([f"{label}: (b) in-memory resample", fmt(c["b_resample_seconds"]), share(c["b_resample_seconds"]),
                     fmt(r["peak_mib"], ".0f"), "", ""])
        rows.append([f"{label}: (b') in-memory, streaming engine (not in the goal)", fmt(c["b_band_seconds"]),
                     share(c["b_band_seconds"]), fmt(summary["resample_band"][factor]["peak_mib"], ".0f"), "", ""])
        time_text = "n/a" if c["time_pass"] is None else ("PASS" if c["time_pass"] else "FAIL")
        rows.append([f"{label}: **import-stack --factor {factor}**", fmt(c["import_seconds"]), fmt(c["ratio"]),
                     fmt(c["import_peak_mib"], ".0f"),
                     f"time <= {TIME_GOAL} x (a+b); peak < {c['rss_goal_mib']:.0f} MiB",
                     f"time {time_text}, memory {'PASS' if c['rss_pass'] else 'FAIL'}"])
        rows.append([f"{label}: ImageStacks-style (timed in-process; no anti-aliasing)",
                     fmt(c["imagestacks_seconds"]), share(c["imagestacks_seconds"]),
                     fmt(c["imagestacks_peak_mib"], ".0f"), "for scale", ""])
        if c["time_pass"] is None:
            verdicts.append(f"n/a  time goal ({label}): (b) was not measured")
        else:
            verdicts.append(f"{time_text} time goal ({label}): import {c['import_seconds']:.2f} s / "
                            f"(a {c['a_decode_seconds']:.2f} + b {c['b_resample_seconds']:.2f} s) = {c['ratio']:.2f} "
                            f"(goal <= {TIME_GOAL}; "
                            f"{c['ratio_without_startup']:.2f} without the {startup['seconds']:.2f} s start-up)")
        verdicts.append(f"{'PASS' if c['rss_pass'] else 'FAIL'} memory goal ({label}): import peak RSS "
                        f"{c['import_peak_mib']:.0f} MiB (goal < output {c['output_bytes'] / MIB:.0f} MiB + 512 MiB "
                        f"= {c['rss_goal_mib']:.0f} MiB)")
    ratio_rows = [[f"{c['variant']}, x{c['factor']}", fmt(c["ratio"]), fmt(c["ratio_without_startup"]),
                   fmt(c["ratio_band"]), fmt(c["import_seconds"] / c["imagestacks_wall_seconds"])]
                  for c in summary["configurations"].values()]

    throughput_rows, bottlenecks = [], []
    for variant, d in summary["decode"].items():
        throughput_rows.append([f"decode, {variant}, {setup['threads']} threads", fmt(d["seconds"]),
                                fmt(d["gvox_per_s"], ".3f"), fmt(d["cpu_seconds"]),
                                fmt(d["cpu_seconds"] / d["seconds"] if d["seconds"] else None)])
        if d["one_thread_seconds"] is not None:
            throughput_rows.append([f"decode, {variant}, 1 thread (diagnostic, 1 run)", fmt(d["one_thread_seconds"]),
                                    fmt(d["one_thread_gvox_per_s"], ".3f"), "", ""])
    for factor, r in summary["resample"].items():
        if r["seconds"] is not None:
            throughput_rows.append([f"filter: downsample_array x{factor} (input voxels)", fmt(r["seconds"]),
                                    fmt(r["gvox_per_s"], ".3f"), fmt(r["cpu_seconds"]),
                                    fmt(r["cpu_seconds"] / r["seconds"])])
    for factor, r in summary["resample_band"].items():
        if r["seconds"] is not None:
            throughput_rows.append([f"filter: streaming engine x{factor} (input voxels)", fmt(r["seconds"]),
                                    fmt(r["gvox_per_s"], ".3f"), fmt(r["cpu_seconds"]),
                                    fmt(r["cpu_seconds"] / r["seconds"])])
    for name, c in summary["configurations"].items():
        a, b = c["a_decode_seconds"], c["b_resample_seconds"]
        if b is None:
            continue
        slower = "the filter" if b >= a else "decoding"
        bottlenecks.append(f"- {c['variant']}, x{c['factor']}: decoding {a:.2f} s, filter {b:.2f} s: {slower} is the "
                           f"bottleneck ({max(a, b) / (a + b):.0%} of a + b)")

    nhdr_lines = []
    if summary["nhdr"]:
        n = summary["nhdr"]
        nhdr_rows = [[f"import-stack --nhdr-only, {setup['slices']} slices (command wall)", fmt(n["command_seconds"]),
                      fmt(n["command_seconds"] / NHDR_GOAL_S), fmt(n["command_peak_mib"], ".0f"),
                      f"< {NHDR_GOAL_S:g} s",
                      "PASS" if n["zero_copy"] and n["command_seconds"] < NHDR_GOAL_S else "FAIL"],
                     [f"import_stack(nhdr_only=True), {setup['slices']} slices (call alone)", fmt(n["call_seconds"]),
                      fmt(n["call_seconds"] / NHDR_GOAL_S), fmt(n["call_peak_mib"], ".0f"), f"< {NHDR_GOAL_S:g} s",
                      "PASS" if n["zero_copy"] and n["call_seconds"] < NHDR_GOAL_S else "FAIL"]]
        nhdr_lines = ["Zero-copy NHDR (uncompressed variant; ratio = seconds / goal):", "",
                      benchlib.markdown_table(["configuration", "median s", "ratio", "peak RSS MiB", "goal",
                                               "PASS/FAIL"], nhdr_rows), "",
                      f"NHDR lists the slice files (zero-copy): {'yes' if n['zero_copy'] else 'NO'}; "
                      f"{n['nhdr_bytes']} bytes.", ""]
        verdicts.append(f"{'PASS' if n['pass'] else 'FAIL'} zero-copy NHDR goal ({setup['slices']} slices): command "
                        f"{n['command_seconds']:.2f} s, import_stack call {n['call_seconds']:.2f} s (goal < "
                        f"{NHDR_GOAL_S:g} s each"
                        f"{'' if n['zero_copy'] else '; the NHDR does NOT list the slice files'})")

    breakdown_lines = []
    if summary["breakdown"]:
        keys = ("plan (find + probe headers)", "streaming loop", "decode slabs (reader thread)",
                "decode slices (sum over threads)", "x/y filter", "z filter", "cast", "hand-off to writer",
                "write (writer thread)")
        rows_b = []
        for name, b in summary["breakdown"].items():
            rows_b.append([name.replace("/", ", "), fmt(b["seconds"]), fmt(b["cpu_seconds"]),
                           fmt(b["cpu_seconds"] / b["seconds"]), fmt(b["parts_cpu_seconds"])]
                          + [fmt(b["stages"][k]) for k in keys] + [fmt(b["main thread other"])])
        breakdown_lines = [
            "Where the import's time goes (diagnostic: one in-process `import_stack` run per configuration, timers "
            "around its stages; seconds; decode and writing run on other threads, concurrently with the main "
            "thread's filter; \"parts CPU s\" = CPU seconds of (a) + (b)):", "",
            benchlib.markdown_table(["configuration", "import_stack s", "CPU s", "cores used", "parts CPU s"]
                                    + list(keys) + ["main thread other (waiting for slabs, ring copy)"], rows_b), "",
            "Stream plans: " + "; ".join(f"{name}: {b['plan']}" for name, b in summary["breakdown"].items()), ""]

    stack_text = ", ".join(f"{v} {size_text(s['file_bytes'])} on disk" for v, s in stacks.items())
    speeds = [run["warm_up"]["gb_per_s"] for runs in setup["runs"].values() for run in runs
              if run.get("warm_up") and run["warm_up"]["gb_per_s"]]
    warm_text = (f"the warm-up reads before each run went at {min(speeds):.1f} to {max(speeds):.1f} GB/s"
                 if speeds else "no warm-up")
    text = "\n".join([
        benchlib.machine_markdown(info), "",
        f"Stack: {setup['slices']} slices of {setup['size']}x{setup['size']} uint16 "
        f"({size_text(setup['stack_bytes'])} of voxels; {stack_text}); warm page cache ({warm_text}); "
        f"median of {setup['rounds']} alternated round(s); load average {setup['load_start']} at the start, "
        f"{setup['load_end']} at the end. "
        f"Ratio = seconds / (a + b); (a) and (b) are timed inside their processes, the import and ImageStacks-style "
        f"peak RSS are the processes' own (ru_maxrss). Start-up (a process importing bigvolume.cli.commands and "
        f"bigvolume.ops.stack_import): {startup['seconds']:.2f} s, {startup['peak_kib'] / 1024:.0f} MiB.", "",
        *([f"Note: {note}" for note in notes] + ([""] if notes else [])),
        benchlib.markdown_table(["configuration", "median s", "ratio", "peak RSS MiB", "goal", "PASS/FAIL"], rows), "",
        benchlib.markdown_table(["configuration", "import / (a + b)", "(import - start-up) / (a + b)",
                                 "import / (a + b')", "import / ImageStacks-style (both walls)"], ratio_rows), "",
        *nhdr_lines,
        "Throughputs (medians; Gvox/s = 10^9 input voxels per second; cores used = CPU s / s):", "",
        benchlib.markdown_table(["stage", "median s", "Gvox/s", "CPU s", "cores used"], throughput_rows), "",
        *bottlenecks, "",
        *breakdown_lines,
        *verdicts])
    return text, verdicts


# --- main ---------------------------------------------------------------------------------------------------------
def meminfo_bytes(field_name: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 slices of 512x512, 1 round: a smoke test")
    parser.add_argument("--slices", type=int, help="number of slices (default 1000, --quick 128)")
    parser.add_argument("--size", type=int, help="slice width and height (default 2048, --quick 512)")
    parser.add_argument("--rounds", type=int, help="rounds of every configuration (default 3, --quick 1)")
    parser.add_argument("--dir", type=Path, help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the generated stacks (the folder is printed)")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the diagnostic pass")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *worker_args = args.worker
        print(json.dumps(WORKERS[kind](*worker_args)), flush=True)
        return 0

    slices = args.slices or (128 if args.quick else 1000)
    size = args.size or (512 if args.quick else 2048)
    rounds = args.rounds or (1 if args.quick else 3)
    voxels = slices * size * size
    stack_bytes = 2 * voxels
    info = benchlib.machine_info()
    notes: list[str] = []
    base = args.dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    # Each variant at most the raw bytes (+ headers); one import output (x2) at a time; a margin.
    per_variant = int(stack_bytes * 1.02) + 64 * 1024 * slices
    needed = DISK_MARGIN + stack_bytes // 8
    variants = []
    for variant in VARIANTS:
        if needed + per_variant > free:
            notes.append(f"{variant} variant skipped: not enough free disk space in {base} ({free / GIB:.1f} GiB "
                         f"free, {size_text(needed + per_variant)} needed with the variants before it)")
            continue
        needed += per_variant
        variants.append(variant)
    if not variants:
        print("\n".join(notes), file=sys.stderr)
        return 1
    available = meminfo_bytes("MemAvailable")
    memory_needed = stack_bytes + stack_bytes // 8 + MEMORY_MARGIN
    can_resample = available is None or available >= memory_needed
    if not can_resample:
        notes.append(f"(b) in-memory resample skipped: it needs about {size_text(memory_needed)}, "
                     f"{size_text(available)} available; the time goal cannot be checked")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    setup = {"slices": slices, "size": size, "rounds": rounds, "voxels": voxels, "stack_bytes": stack_bytes,
             "threads": cores(), "disk_free_bytes": free, "memory_available_bytes": available,
             "load_start": load_average(), "factors": FACTORS, "quick": args.quick}
    folder = Path(tempfile.mkdtemp(prefix="bigvolume-stack-bench-", dir=base))
    try:
        print(f"generating {len(variants)} stack(s) of {slices} slices of {size}x{size} in {folder} ...",
              file=sys.stderr, flush=True)
        generated = generate_stacks(folder, variants, size, slices)
        stacks = {variant: Path(generated[variant]["folder"]) for variant in variants}
        out = folder / "out"
        out.mkdir()
        log = folder / "log.txt"
        expected = {factor: output_dims(size, slices, factor) for factor in FACTORS}
        startup_job = Job("startup", None, None, [sys.executable, "-c", STARTUP_IMPORTS], worker=False)
        for _ in range(3):
            startup_job.runs.append(run_job(startup_job, log, expected))
        startup = {"seconds": med(startup_job), "peak_kib": med(startup_job, "peak_kib")}
        jobs, diagnostics = make_jobs(stacks, size, slices, out, can_resample)
        run_rounds(jobs, rounds, log, expected)
        if not args.no_diagnostics:
            run_rounds(diagnostics, 1, log, expected)
        else:
            diagnostics = []
        setup["load_end"] = load_average()
        summary = summarise(jobs, diagnostics, voxels, size, slices, startup, generated)
        text, verdicts = report(summary, info, dict(setup, runs={job.key: job.runs for job in jobs + diagnostics}),
                                generated, startup, notes)
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(text)
    payload = {"machine": info, "setup": setup, "notes": notes, "docstring": __doc__,
               "stacks": generated, "startup": {"runs": startup_job.runs, **startup},
               "commands": {job.key: shlex.join(map(str, job.command)) for job in jobs + diagnostics + [startup_job]},
               "runs": {job.key: job.runs for job in jobs + diagnostics},
               "summary": summary, "verdicts": verdicts, "markdown": text}
    print(f"\nwritten {benchlib.write_json(NAME, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
