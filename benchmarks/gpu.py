"""The GPU resample (bigvolume.engine.gpu on CuPy) against the CPU path and against the device's own copy bandwidth.

Run on a machine with an NVIDIA GPU and CuPy (``pip install -e .[gpu]``, or any Python with numpy and CuPy: the
repository root is put on sys.path):

    python benchmarks/gpu.py [--size 1024] [--factor 2 4] [--rounds 5]

Without CuPy or a CUDA device it prints "skipped: no CUDA (...)" and exits 0. ``--cpu-only --size N`` runs the
same array code with numpy as its array module instead (what the tests run), to exercise this script anywhere.

What is measured, on an N^3 zone plate (bigvolume.testing.quality: rings up to 0.35 cycles/voxel) as float32 and as uint16,
Lanczos (the default), each factor:
- the device: name and memory (cupy.cuda.runtime.getDeviceProperties), and its copy bandwidth, pinned host ->
  device and back (and pageable host -> device), 1 GiB buffers, CUDA events, median of the rounds;
- CPU path: ``bigvolume.resample(volume, f)`` (vtkImageResize, all cores); where vtk is not installed (the GPU
  machines lent here have neither vtk nor SimpleITK, and their wheels are too big to carry there) the CPU
  reference is the numpy kernel tables on all cores (``kernels.apply_separable``), which equal vtkImageResize to
  float rounding (Testing/test_gpu_path.py), and the table says which ran;
- GPU, host -> host: ``bigvolume.resample(volume, f, device="cuda")``: numpy array in, numpy array out, slabs
  streamed through pinned buffers with uploads overlapping the filter (one warm-up run first);
- GPU, on the device: ``gpu.downsample_on_device`` on an array already there (the filter alone), CUDA events;
- max |GPU - CPU| over the input's value range (the goal is <= 1e-4), for both GPU runs.
Times are medians over ``--rounds`` runs, taken side by side in one process. Results: benchmarks/results/gpu.json
(``gpu_cpu_only.json`` for --cpu-only) and Markdown tables on stdout.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
GIB = 2 ** 30


# --- running where vtk and SimpleITK are missing -----------------------------------------------------------------
class _Missing:
    """What a missing module's attribute is: usable as a value at import time, an error when used."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return _Missing(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name}: not installed on this machine")


class _AbsentModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self.__name__}.{attr}")


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of the listed top-level modules (and their submodules) give empty stand-ins."""

    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _AbsentModule(spec.name)

    def exec_module(self, module):
        pass


def import_bigvolume() -> list[str]:
    """Import bigvolume from this repository; returns the libraries replaced by stand-ins."""
    if importlib.util.find_spec("bigvolume") is None:
        sys.path.insert(0, str(REPOSITORY))
    missing = [name for name in ("vtkmodules", "SimpleITK") if importlib.util.find_spec(name) is None]
    if missing:
        sys.meta_path.insert(0, _StandIns(missing + (["vtk"] if "vtkmodules" in missing else [])))
    import bigvolume  # noqa: F401
    return missing


# --- measurements ---------------------------------------------------------------------------------------------------
def median(values) -> float:
    return float(np.median(values))


def copy_bandwidth(cupy, rounds: int, nbytes: int = GIB) -> dict:
    """Bytes per second, pinned host <-> device and pageable host -> device, timed with CUDA events."""
    import cupyx
    pinned = cupyx.empty_pinned((nbytes,), np.uint8)
    pinned[:] = 1
    pageable = np.ones(nbytes, np.uint8)
    device = cupy.empty(nbytes, np.uint8)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()

    def timed(copy):
        seconds = []
        for _ in range(rounds + 1):  # the first one warms up
            start.record()
            copy()
            stop.record()
            stop.synchronize()
            seconds.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        return nbytes / median(seconds[1:])

    return {"host_to_device_pinned": timed(lambda: device.set(pinned)),
            "device_to_host_pinned": timed(lambda: device.get(out=pinned)),
            "host_to_device_pageable": timed(lambda: device.set(pageable))}


def cpu_reference(array, factor, vtk_present: bool, threads: int):
    """The CPU path's output: vtkImageResize through bigvolume.ops.resample, or the kernel tables without vtk."""
    import bigvolume as bv
    from bigvolume.methods.kernels import apply_separable, axis_kernel
    if vtk_present:
        return bv.resample(bv.Volume.from_array(array), factor).array
    dims = bv.Geometry(array.shape[::-1]).downsampled(factor).dimensions
    tables = tuple(axis_kernel("lanczos", n, f, m) for n, f, m in zip(array.shape[::-1], factor, dims))
    return apply_separable(array, tables, threads=threads)


def timed_runs(run, rounds: int, warm_up: bool = True):
    if warm_up:
        run()
    seconds, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return result, seconds


def relative_error(result, reference, source) -> float:
    span = float(source.max()) - float(source.min())
    return float(np.abs(result.astype(np.float64) - reference.astype(np.float64)).max() / span)


def test_volumes(size: int):
    from bigvolume.testing import quality
    started = time.perf_counter()
    plate = quality.zone_plate(size)  # float32 in [-1, 1]
    print(f"zone plate {size}^3 made in {time.perf_counter() - started:.1f} s", flush=True)
    return {"float32": plate, "uint16": np.rint((plate + 1.0) * 30000.0).astype(np.uint16)}


def run_cases(args, missing, measure) -> list[dict]:
    """``measure(array, factors, cpu_run)`` -> (seconds, outputs) of the runs "cpu", "gpu", "device" for every
    test volume and factor; the rows of the table."""
    from bigvolume.core.memory import default_threads
    threads = default_threads()
    vtk_present = "vtkmodules" not in missing
    rows = []
    for dtype, array in test_volumes(args.size).items():
        for factor in args.factor:
            factors = (factor,) * 3
            seconds, outputs = measure(array, factors, lambda: cpu_reference(array, factors, vtk_present, threads))
            rows.append(make_row(array, dtype, factor, vtk_present, threads, seconds, outputs))
            print(row_line(rows[-1]), flush=True)
    return rows


def run_gpu(args, missing) -> dict:
    import bigvolume as bv
    from bigvolume.engine import gpu
    cupy, why = gpu.probe_cuda()
    if cupy is None:
        print(f"skipped: no CUDA ({why})")
        sys.exit(0)
    if os.environ.get("CUPY_TF32") == "1":
        print("warning: CUPY_TF32=1 makes float32 matrix products use TF32 (10-bit mantissa): expect ~1e-3 errors")
    properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    device = {"name": gpu.device_name(), "memory_gib": round(properties["totalGlobalMem"] / GIB, 1),
              "multiprocessors": properties["multiProcessorCount"],
              "compute_capability": f"{properties['major']}.{properties['minor']}",
              "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}
    print(f"device: {device}", flush=True)
    bandwidth = copy_bandwidth(cupy, args.rounds)
    cupy.get_default_memory_pool().free_all_blocks()  # the 1 GiB test buffer
    print("copy bandwidth GB/s: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in bandwidth.items()), flush=True)

    def measure(array, factors, cpu_run):
        reference, cpu_seconds = timed_runs(cpu_run, args.cpu_rounds, warm_up=False)
        volume = bv.Volume.from_array(array)
        result, gpu_seconds = timed_runs(lambda: bv.resample(volume, factors, device="cuda").array, args.rounds)
        on_device = cupy.asarray(array)
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        device_seconds = []
        for round_ in range(args.rounds + 1):  # the first one warms up
            start.record()
            filtered = gpu.downsample_on_device(on_device, factors, "lanczos", xp=cupy)
            stop.record()
            stop.synchronize()
            if round_:
                device_seconds.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        device_result = cupy.asnumpy(filtered)
        del on_device, filtered
        cupy.get_default_memory_pool().free_all_blocks()
        return ({"cpu": cpu_seconds, "gpu": gpu_seconds, "device": device_seconds},
                {"cpu": reference, "gpu": result, "device": device_result})

    rows = run_cases(args, missing, measure)
    for row in rows:
        row["share_of_pinned_upload"] = row["gpu_input_bytes_per_s"] / bandwidth["host_to_device_pinned"]
    return {"device": device, "copy_bandwidth_bytes_per_s": bandwidth, "rows": rows}


def run_cpu_only(args, missing) -> dict:
    """The array code with numpy as its array module, against the CPU path (exercises this script anywhere)."""
    from bigvolume.engine import gpu

    def measure(array, factors, cpu_run):
        runs = {"cpu": cpu_run, "gpu": lambda: gpu.resample_array(array, factors, "lanczos", xp=np),
                "device": lambda: gpu.downsample_on_device(array, factors, "lanczos", xp=np)}
        seconds, outputs = {name: [] for name in runs}, {}
        for _ in range(args.rounds):  # alternated, so that background load hits them alike
            for name, run in runs.items():
                started = time.perf_counter()
                outputs[name] = run()
                seconds[name].append(time.perf_counter() - started)
        return seconds, outputs

    return {"device": {"name": "none: numpy as the array module (--cpu-only)"},
            "rows": run_cases(args, missing, measure)}


def make_row(array, dtype: str, factor: float, vtk_present: bool, threads: int, seconds: dict, outputs: dict):
    """One result: ``seconds`` and ``outputs`` of the runs "cpu", "gpu" (streamed, host to host) and "device"
    (the whole array where it is)."""
    return {"dtype": dtype, "size": array.shape[0], "factor": factor, "input_bytes": array.nbytes,
            "cpu_path": "vtkImageResize" if vtk_present else "numpy kernel tables (vtk not installed)",
            "cpu_threads": threads, "cpu_seconds": seconds["cpu"], "gpu_seconds": seconds["gpu"],
            "device_only_seconds": seconds["device"],
            "gpu_error": relative_error(outputs["gpu"], outputs["cpu"], array),
            "device_only_error": relative_error(outputs["device"], outputs["cpu"], array),
            "speedup": median(seconds["cpu"]) / median(seconds["gpu"]),
            "device_only_speedup": median(seconds["cpu"]) / median(seconds["device"]),
            "gpu_input_bytes_per_s": array.nbytes / median(seconds["gpu"])}


def row_line(row) -> str:
    return (f"{row['dtype']} {row['size']}^3 f{row['factor']:g}: CPU {median(row['cpu_seconds']):.3f} s, "
            f"array path {median(row['gpu_seconds']):.3f} s ({row['speedup']:.2f}x), on device "
            f"{median(row['device_only_seconds']):.3f} s ({row['device_only_speedup']:.2f}x), "
            f"max error {row['gpu_error']:.1e} / {row['device_only_error']:.1e} of the range")


def markdown(results, machine) -> str:
    import benchlib
    rows = []
    for row in results["rows"]:
        share = row.get("share_of_pinned_upload")
        rows.append([f"{row['size']}^3 {row['dtype']}", f"{row['factor']:g}", row["cpu_path"],
                     f"{median(row['cpu_seconds']):.3f}", f"{median(row['gpu_seconds']):.3f}",
                     f"{row['speedup']:.1f}x", f"{median(row['device_only_seconds']):.4f}",
                     f"{row['device_only_speedup']:.1f}x",
                     f"{row['input_bytes'] / median(row['gpu_seconds']) / 1e9:.2f}",
                     "" if share is None else f"{share:.2f}",
                     f"{row['gpu_error']:.1e}", f"{row['device_only_error']:.1e}"])
    streamed, whole = (("GPU host->host", "GPU on device") if "copy_bandwidth_bytes_per_s" in results
                       else ("numpy array path, streamed", "numpy array path, whole"))
    table = benchlib.markdown_table(
        ["input", "factor", "CPU path", "CPU s", f"{streamed} s", "speed-up", f"{whole} s",
         "speed-up (whole)", "input GB/s (streamed)", "share of pinned upload", "max error / range",
         "max error / range (whole)"], rows)
    lines = [benchlib.machine_markdown(machine), f"Device: {results['device']['name']}"]
    bandwidth = results.get("copy_bandwidth_bytes_per_s")
    if bandwidth:
        lines.append("Copy bandwidth (1 GiB, median): " + ", ".join(
            f"{name.replace('_', ' ')} {value / 1e9:.1f} GB/s" for name, value in bandwidth.items()))
    return "\n".join(lines + ["", table])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="the zone plate is SIZE^3 (default 1024)")
    parser.add_argument("--factor", type=float, nargs="+", default=[2.0, 4.0], help="factors (default 2 4)")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per measurement (default 5)")
    parser.add_argument("--cpu-rounds", type=int, default=3, help="timed CPU-path runs (default 3)")
    parser.add_argument("--cpu-only", action="store_true", help="numpy as the array module: no GPU needed")
    args = parser.parse_args(argv)
    missing = import_bigvolume()
    if missing:
        print(f"note: {', '.join(missing)} not installed: stand-ins let bigvolume import; CPU reference = kernel "
              "tables")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib
    results = run_cpu_only(args, missing) if args.cpu_only else run_gpu(args, missing)
    machine = benchlib.machine_info()
    for name in missing:
        machine["vtk" if name == "vtkmodules" else name] = "not installed (stand-in)"
    results = {"command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine, **results}
    path = benchlib.write_json("gpu_cpu_only" if args.cpu_only else "gpu", results)
    print()
    print(markdown(results, machine))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
