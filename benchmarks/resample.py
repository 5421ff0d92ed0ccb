"""Downsampling methods side by side: time, throughput, peak extra memory and PSNR against the ideal band limit.

Run: ``.venv/bin/python benchmarks/resample.py [--quick] [--rounds N]``. Prints Markdown tables and writes
benchmarks/results/resample.json.

What is measured, numpy array in -> numpy array out (same dtype, uint16), on:
- ``zoneplate-512``: the 3D zone plate (bigvolume.testing.quality.zone_plate) scaled to uint16, 512^3, factor 4. Its rings
  reach 0.35 cycles/voxel at the rim (2.8x the output Nyquist), so every bit of aliasing shows, and its tanh window
  takes it to ~0 at the faces, so the periodic FFT reference has no wrap-around edge: the PSNR is meaningful.
- ``smoothnoise-640x480x300``: a smooth random field plus 1 % white noise (bigvolume.testing.quality.smooth_noise, periodic
  by construction) scaled to uint16, spacing 0.4 x 0.4 x 1.0, factors 4 and 2 2 1 (I J K).

Methods: (a) our default ``downsample_array(a, f, "lanczos")``; (b) a bare vtkImageResize with its defaults
(SetOutputDimensions only; sinc Lanczos-3 with antialiasing, first and last voxel centres kept); (c) decimation
``a[::f]`` copied to a contiguous array; (d) our block mean ``downsample_array(a, f, "mean")``; (e) SimpleITK:
recursive Gaussian with sigma = f/2 voxels (SmoothingRecursiveGaussian; axes with f = 1 are not smoothed), then
sitk.Resample with linear interpolation onto the block-centred grid, rounded back to uint16. On the 512^3 case
also the vtkImageResize threading options, with the core's block-centred Lanczos configuration.

How:
- Every measurement is a fresh worker process (``--worker METHOD``): it imports numpy, vtk and SimpleITK, loads
  the input with ``np.load`` (no mmap), runs the method once on a 16^3 array (loads lazy code, starts thread
  pools), resets its peak-RSS counter (VmHWM, via /proc/self/clear_refs) and records VmRSS, runs the method once, and
  reports the wall time, the process CPU time (user + system, all threads) and VmHWM - VmRSS-after-load = the
  peak extra memory the method needed (its output included). Rounds alternate the methods (rotated order), so
  background load hits them alike; the tables give medians over the rounds, and the best run: on a shared 2-core
  machine a busy neighbour makes 2-thread timings bimodal, and the CPU time shows the work regardless.
- PSNR (bigvolume.testing.quality.psnr, peak = the reference's range) of each output against
  bigvolume.testing.quality.ideal_downsample evaluated at that method's OWN sample positions: block-centred for (a), (d),
  (e); ``i * (n-1)/(m-1)`` as read from vtk's output origin and spacing for (b); ``i * f`` for (c). So the score
  measures filtering (aliasing, blur, ringing), not the grid placement (see the "grid" column for that).
  The reference is periodic while the methods repeat the border voxel, so samples near the faces differ from it
  for reasons other than aliasing; "PSNR interior" leaves out INTERIOR_MARGIN output voxels at every face (same
  peak), which matters most for (b), whose first and last samples sit on the outermost voxels.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import benchlib
from bigvolume.methods.kernels import LANCZOS_LOBES

NAME = "resample"
INTERIOR_MARGIN = 3  # output voxels left out at each face for "PSNR interior"


# --- methods (run inside a worker) ------------------------------------------------------------------------------
@dataclass
class Output:
    array: np.ndarray
    positions: list  # per IJK axis: input-index coordinates of the output samples


def block_centred_positions(shape_out, factors) -> list:
    from bigvolume.core.geometry import block_centres
    return [block_centres(m, f) for m, f in zip(shape_out[::-1], factors)]


def output_dims(shape_in, factors) -> tuple:
    from bigvolume.core.geometry import output_size
    return tuple(output_size(n, f) for n, f in zip(shape_in[::-1], factors))


def ours(method: str):
    def run(array, factors, spacing):
        from bigvolume import downsample_array
        result = downsample_array(array, factors, method)
        return Output(result, block_centred_positions(result.shape, factors))
    return run


def vtk_defaults(array, factors, spacing):
    """A bare vtkImageResize: SetOutputDimensions and nothing else (index space; spacing does not change it)."""
    import vtk
    from bigvolume.methods.vtk_resize import array_to_vtk_image, vtk_image_to_array
    resize = vtk.vtkImageResize()
    resize.SetOutputDimensions(*output_dims(array.shape, factors))
    resize.SetInputData(array_to_vtk_image(array))
    resize.Update()
    image = resize.GetOutput()
    positions = [image.GetOrigin()[axis] + image.GetSpacing()[axis] * np.arange(image.GetDimensions()[axis])
                 for axis in range(3)]
    return Output(vtk_image_to_array(image), positions)


def decimation(array, factors, spacing):
    steps = [int(round(f)) for f in factors]
    result = np.ascontiguousarray(array[::steps[2], ::steps[1], ::steps[0]])
    return Output(result, [step * np.arange(m, dtype=float) for step, m in zip(steps, result.shape[::-1])])


def sitk_gaussian(array, factors, spacing):
    import SimpleITK as sitk
    from bigvolume.core.dtypes import cast_to
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sigmas = [f / 2.0 * s for f, s in zip(factors, spacing)]
    if all(f > 1 for f in factors):
        image = sitk.SmoothingRecursiveGaussian(image, sigmas)
    else:  # a zero sigma is refused: smooth only the axes that shrink, with the same recursive filter
        image = sitk.Cast(image, sitk.sitkFloat32)
        for axis, (f, sigma) in enumerate(zip(factors, sigmas)):
            if f > 1:
                image = sitk.RecursiveGaussian(image, sigma, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    dims = output_dims(array.shape, factors)
    origin = [(f - 1.0) / 2.0 * s for f, s in zip(factors, spacing)]
    reference = sitk.Image(dims, sitk.sitkFloat32)
    reference.SetSpacing([f * s for f, s in zip(factors, spacing)])
    reference.SetOrigin(origin)
    # a partial last block (n not a multiple of f) puts the last centre past the last voxel: extrapolate, not 0
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
    result = cast_to(sitk.GetArrayFromImage(resampled), array.dtype)
    return Output(result, block_centred_positions(result.shape, factors))


def core_resize(threads: int | None = None, smp_backend: str | None = None):
    """The core's vtkImageResize (block-centred Lanczos) with a chosen threading: the multithreader with
    ``threads`` (None: vtk's default, all cores), or SMP with ``smp_backend``."""
    def run(array, factors, spacing):
        import vtk
        from bigvolume.methods.vtk_resize import array_to_vtk_image, make_block_centred_resize, vtk_image_to_array
        if smp_backend and not vtk.vtkSMPTools.SetBackend(smp_backend):
            raise RuntimeError(f"vtk SMP backend {smp_backend} is not available")
        image = array_to_vtk_image(array)
        resize = make_block_centred_resize(image.GetDimensions(), factors, threads)
        resize.SetEnableSMP(smp_backend is not None)
        resize.SetInputData(image)
        resize.Update()
        result = vtk_image_to_array(resize.GetOutput())
        return Output(result, block_centred_positions(result.shape, factors))
    return run


@dataclass(frozen=True)
class Method:
    label: str
    grid: str
    run: object


METHODS = {
    "a-ours-lanczos": Method("(a) ours, lanczos (default)", "block-centred", ours("lanczos")),
    "b-vtk-defaults": Method("(b) vtkImageResize defaults", "first/last centres kept", vtk_defaults),
    "c-decimation": Method("(c) decimation a[::f]", "i*f (shifted)", decimation),
    "d-ours-mean": Method("(d) ours, block mean", "block-centred", ours("mean")),
    "e-sitk-gaussian": Method("(e) SimpleITK Gaussian + linear", "block-centred", sitk_gaussian),
}
THREADING = {
    "vtk-multithreader-1": Method("multithreader, 1 thread", "block-centred", core_resize(threads=1)),
    "vtk-multithreader-default": Method("multithreader, default threads (the core's choice)", "block-centred",
                                        core_resize()),
    "vtk-smp-sequential": Method("SMP, Sequential backend", "block-centred", core_resize(smp_backend="Sequential")),
    "vtk-smp-stdthread": Method("SMP, STDThread backend", "block-centred", core_resize(smp_backend="STDThread")),
}
ALL_METHODS = {**METHODS, **THREADING}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(args) -> None:
    """Run one method once in this fresh process; print one JSON line; save the output for scoring."""
    import SimpleITK  # noqa: F401  (every worker loads the same libraries before the baseline RSS is taken)
    import vtk  # noqa: F401
    import bigvolume  # noqa: F401
    method = ALL_METHODS[args.worker]
    factors, spacing = tuple(args.factors), tuple(args.spacing)
    array = np.load(args.input, mmap_mode=None)
    method.run(np.zeros((16, 16, 16), array.dtype), factors, spacing)  # warm-up
    rss_after_load = benchlib.proc_status_kib("VmRSS")
    peak_was_reset = benchlib.reset_peak_rss()
    cpu_started, started = cpu_seconds(), time.perf_counter()
    output = method.run(array, factors, spacing)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    peak = benchlib.proc_status_kib("VmHWM")
    np.save(args.output, np.asarray(output.array))
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rss_after_load_kib": rss_after_load, "peak_kib": peak,
                      "peak_extra_mib": (peak - rss_after_load) / 1024, "peak_was_reset": peak_was_reset,
                      "positions": [list(map(float, p)) for p in output.positions]}))


# --- cases and scoring (in the parent) --------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    data: str            # key of DATA
    shape: tuple         # (k, j, i)
    spacing: tuple       # I, J, K
    factors: tuple       # I, J, K
    methods: tuple
    results: dict = field(default_factory=dict)


def zone_plate_uint16(shape):
    from bigvolume.core.dtypes import cast_to
    from bigvolume.testing.quality import zone_plate
    if len(set(shape)) != 1:
        raise ValueError("the zone plate is cubic")
    return cast_to((zone_plate(shape[0]) + 1.0) * 32767.5, np.uint16)


def smooth_noise_uint16(shape):
    from bigvolume.core.dtypes import cast_to
    from bigvolume.testing.quality import smooth_noise
    return cast_to(smooth_noise(shape) * 60000.0 + 2000.0, np.uint16)


DATA = {"zoneplate": zone_plate_uint16, "smoothnoise": smooth_noise_uint16}


def make_cases(quick: bool) -> list[Case]:
    cube = (64,) * 3 if quick else (512,) * 3
    slab = (30, 48, 64) if quick else (300, 480, 640)
    slab_name = "x".join(map(str, slab[::-1]))
    anisotropic = (0.4, 0.4, 1.0)
    return [
        Case(f"zoneplate-{cube[0]}^3 f4", "zoneplate", cube, (1.0, 1.0, 1.0), (4, 4, 4),
             tuple(METHODS) + tuple(THREADING)),
        Case(f"smoothnoise-{slab_name} f4", "smoothnoise", slab, anisotropic, (4, 4, 4), tuple(METHODS)),
        Case(f"smoothnoise-{slab_name} f2,2,1", "smoothnoise", slab, anisotropic, (2, 2, 1), tuple(METHODS)),
    ]


class Inputs:
    """Each input volume generated once and saved as .npy; ideal references cached per sample grid."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths: dict = {}
        self.ideals: dict = {}

    def path(self, case: Case) -> Path:
        key = (case.data, case.shape)
        if key not in self.paths:
            path = self.folder / f"{case.data}-{'x'.join(map(str, case.shape))}.npy"
            np.save(path, DATA[case.data](case.shape))
            self.paths[key] = path
        return self.paths[key]

    def ideal(self, case: Case, positions) -> np.ndarray:
        from bigvolume.testing.quality import ideal_downsample
        key = (case.data, case.shape, case.factors, tuple(np.asarray(p).round(9).tobytes() for p in positions))
        if key not in self.ideals:
            array = np.load(self.path(case))
            self.ideals[key] = ideal_downsample(array, case.factors, [np.asarray(p) for p in positions])
        return self.ideals[key]


def run_worker(method: str, case: Case, input_path: Path, output_path: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--input", str(input_path),
               "--output", str(output_path), "--factors", *map(str, case.factors),
               "--spacing", *map(str, case.spacing)]
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"worker {method} on {case.name} failed:\n{process.stderr}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def scores(output: np.ndarray, reference: np.ndarray) -> dict:
    from bigvolume.testing.quality import psnr
    peak = float(reference.max() - reference.min())
    inner = tuple(slice(INTERIOR_MARGIN, -INTERIOR_MARGIN) if n > 2 * INTERIOR_MARGIN else slice(None)
                  for n in reference.shape)
    return {"psnr_db": psnr(output, reference, peak), "psnr_interior_db": psnr(output[inner], reference[inner], peak)}


def measure_case(case: Case, inputs: Inputs, rounds: int) -> None:
    input_path = inputs.path(case)
    runs = {method: [] for method in case.methods}
    for round_index in range(rounds):
        shift = round_index % len(case.methods)
        for method in case.methods[shift:] + case.methods[:shift]:
            runs[method].append(run_worker(method, case, input_path, inputs.folder / f"{method}.npy"))
    for method, method_runs in runs.items():
        output = np.load(inputs.folder / f"{method}.npy")
        positions = method_runs[-1]["positions"]
        case.results[method] = {
            "seconds": [r["seconds"] for r in method_runs],
            "cpu_seconds": [r["cpu_seconds"] for r in method_runs],
            "peak_extra_mib": [r["peak_extra_mib"] for r in method_runs],
            "rss_after_load_mib": benchlib.median(r["rss_after_load_kib"] for r in method_runs) / 1024,
            "peak_was_reset": all(r["peak_was_reset"] for r in method_runs),
            "output_dims": list(output.shape[::-1]),
            **scores(output, inputs.ideal(case, positions)),
        }


# --- report -------------------------------------------------------------------------------------------------------
def summarise(case: Case, method: str) -> dict:
    result = case.results[method]
    seconds = benchlib.median(result["seconds"])
    voxels = float(np.prod(case.shape))
    return {"seconds": seconds, "best_seconds": min(result["seconds"]),
            "cpu_seconds": benchlib.median(result["cpu_seconds"]), "mvox_per_s": voxels / seconds / 1e6,
            "peak_extra_mib": benchlib.median(result["peak_extra_mib"]), "psnr_db": result["psnr_db"],
            "psnr_interior_db": result["psnr_interior_db"]}


TIMING_HEADERS = ["median s", "best s", "CPU s"]


def timing_cells(s: dict) -> list:
    return [f"{s['seconds']:.3f}", f"{s['best_seconds']:.3f}", f"{s['cpu_seconds']:.2f}"]


def method_rows(cases) -> list:
    rows = []
    for case in cases:
        reference = summarise(case, "a-ours-lanczos")["seconds"]
        for method in (m for m in case.methods if m in METHODS):
            s = summarise(case, method)
            rows.append([case.name, METHODS[method].label, METHODS[method].grid,
                         "x".join(map(str, case.results[method]["output_dims"])), *timing_cells(s),
                         f"{s['seconds'] / reference:.2f}", f"{s['mvox_per_s']:.0f}",
                         f"{s['peak_extra_mib']:+.0f}", f"{s['psnr_db']:.1f}", f"{s['psnr_interior_db']:.1f}"])
    return rows


def threading_rows(case: Case) -> tuple[list, str]:
    single = summarise(case, "vtk-multithreader-1")["seconds"]
    timings = {method: summarise(case, method) for method in THREADING}
    rows = [[THREADING[m].label, *timing_cells(s), f"{single / s['seconds']:.2f}x", f"{s['mvox_per_s']:.0f}",
             f"{s['peak_extra_mib']:+.0f}", f"{s['psnr_db']:.2f}"] for m, s in timings.items()]
    fastest = min(timings, key=lambda m: timings[m]["seconds"])
    gains = [timings["vtk-multithreader-default"][key] / timings["vtk-smp-stdthread"][key] - 1.0
             for key in ("seconds", "best_seconds")]
    clearly = all(gain > 0.10 for gain in gains)
    verdict = (f"Fastest (median): {THREADING[fastest].label}. SMP/STDThread vs the core's multithreader default: "
               f"{gains[0] * 100:+.0f} % speed on the median, {gains[1] * 100:+.0f} % on the best run "
               f"({'clearly faster, >10 %' if clearly else 'not clearly faster'}).")
    return rows, verdict


def report(cases, info: dict, rounds: int) -> str:
    headers = ["case", "method", "grid", "output", *TIMING_HEADERS, "time / (a)", "input Mvox/s", "peak extra MiB",
               "PSNR dB", "PSNR interior dB"]
    parts = [benchlib.machine_markdown(info), "",
             f"Median of {rounds} runs, each in a fresh process (see the module docstring). Peak extra = VmHWM "
             "after the run minus VmRSS after loading the input (HWM reset via /proc/self/clear_refs), output "
             "included. PSNR against the ideal band limit at each method's own sample positions; interior: without "
             f"{INTERIOR_MARGIN} output voxels at each face.", "",
             benchlib.markdown_table(headers, method_rows(cases))]
    threaded = [case for case in cases if "vtk-smp-stdthread" in case.results]
    for case in threaded:
        rows, verdict = threading_rows(case)
        parts += ["", f"vtkImageResize threading, core configuration (block-centred Lanczos-{LANCZOS_LOBES}), "
                  f"{case.name}:", "",
                  benchlib.markdown_table(["variant", *TIMING_HEADERS, "speed vs 1 thread", "input Mvox/s",
                                           "peak extra MiB", "PSNR dB"], rows), "", verdict]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small volumes, 2 rounds: a smoke test in seconds")
    parser.add_argument("--rounds", type=int, help="runs per method (default 5, --quick 2)")
    parser.add_argument("--worker", choices=list(ALL_METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--factors", type=float, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--spacing", type=float, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    rounds = args.rounds or (2 if args.quick else 5)
    info = benchlib.machine_info()
    cases = make_cases(args.quick)
    with tempfile.TemporaryDirectory(prefix="bigvolume-bench-") as folder:
        inputs = Inputs(Path(folder))
        for case in cases:
            print(f"measuring {case.name} ...", file=sys.stderr, flush=True)
            measure_case(case, inputs, rounds)
    text = report(cases, info, rounds)
    print(text)
    payload = {"machine": info, "quick": args.quick, "rounds": rounds, "docstring": __doc__,
               "methods": {k: {"label": m.label, "grid": m.grid} for k, m in ALL_METHODS.items()},
               "cases": [{"name": c.name, "data": c.data, "shape_kji": c.shape, "spacing_ijk": c.spacing,
                          "factors_ijk": c.factors, "results": c.results,
                          "summary": {m: summarise(c, m) for m in c.results}} for c in cases],
               "markdown": text}
    print(f"\nwritten {benchlib.write_json(NAME, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
