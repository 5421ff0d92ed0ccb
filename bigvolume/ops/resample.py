"""Anti-aliased downsampling of in-memory volumes: choosing the factors, dispatching to a method, keeping the
geometry exact (see bigvolume.core.geometry for the block-centred grid)."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.dtypes import cast_to, check_exact_in_float64, label_values, native, values_text, work_dtype
from ..core.errors import BigVolumeError
from ..core.geometry import (Geometry, block_centres, factors_for_size, factors_for_spacing, isotropic_factors,
                             limited_factors, validate_factors)
from ..core.memory import default_threads, format_bytes
from ..core.progress import Progress, ProgressCallback, as_progress
from ..core.volume import Volume, check_volume_array
from ..engine.gpu import choose_device, device_name, probe_cuda, resample_array
from ..engine.plan import in_memory_limit, plan_input, read_whole_note, should_stream
from ..engine.stream import STREAMABLE_METHODS, StreamPlan, downsample_in_memory, estimate_stream, stream_to_file
from ..engine.sinks import NanCountingSink
from ..io import files as io
from ..io.slab_readers import ArraySlabReader
from ..io.slab_writers import header_bytes, writes_in_slabs
from ..io.slabs import open_slabs
from ..methods.array_backend import ArrayBackend
from ..methods.backends import BACKENDS, DEFAULT_BACKEND, get_backend
from ..methods.spectral import band_limited_sample
from .precision import subsample

logger = logging.getLogger("bigvolume")

# name -> one-line hint (shown by --help and in the Slicer panel's tooltips)
METHODS = {
    "lanczos": "windowed sinc (Lanczos, 8 lobes at x2, vtkImageResize, antialiased): sharpest band limit; default",
    "gaussian": "Gaussian blur (FWHM = factor) then linear interpolation: softer, never rings",
    "mean": "block average (box filter), fractional blocks weighted: no ringing, mild aliasing",
    "max": "block maximum: keeps thin bright structures (vessels, trabeculae); aliases",
    "fft": "ideal band limit by FFT; whole volume and complex copies in memory: the reference",
    "nearest": "decimation, one voxel per block (what CropVolume/ImageStacks do): aliases; for comparison",
}
DEFAULT_METHOD = "lanczos"
# Methods that put only values of the input in the output: what a label map may be resampled with.
LABEL_SAFE_METHODS = ("nearest", "max")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise BigVolumeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def choose_factors(geometry: Geometry, bytes_per_voxel: int = 1, factor=None, spacing=None,
                   isotropic: bool = False, target_bytes: float | None = None) -> tuple[float, float, float]:
    """Per-axis factors (I, J, K) from exactly one of: ``factor`` (1 or 3 numbers), ``spacing`` (target spacing)
    or ``target_bytes`` (largest uncompressed output; :func:`resample_file` then fits the compressed file, see
    :func:`fit_file_size`). ``isotropic`` with a single factor: one output spacing on all
    axes, ``factor`` x the finest input spacing, no axis upsampled. An axis shorter than its factor gets its
    length as factor: its one output voxel covers the data and sits at its middle (with a larger factor the
    block-centred voxel would lie off-centre, beyond the last input voxel from twice the length on). So an axis of
    a single voxel (a 2D image stored as a volume) keeps factor 1: there is nothing to average along it."""
    factors = _choose_factors(geometry, bytes_per_voxel, factor, spacing, isotropic, target_bytes)
    limited = limited_factors(factors, geometry.dimensions)
    if spacing is not None or isotropic:  # (asked for a spacing: say where it is not what comes out)
        short = [axis for axis, (f, g) in enumerate(zip(factors, limited)) if g < f * (1 - 1e-9)]
        if short:
            axes = "; ".join(f"{'ijk'[a]}: {geometry.dimensions[a]} voxel{'s' * (geometry.dimensions[a] != 1)}, "
                             f"spacing {geometry.spacing[a] * limited[a]:g} instead of "
                             f"{geometry.spacing[a] * factors[a]:g}" for a in short)
            logger.warning(f"the spacing asked for is not reached along an axis shorter than its factor, whose one "
                           f"output voxel spans its data ({axes})")
    return limited


def _choose_factors(geometry, bytes_per_voxel, factor, spacing, isotropic, target_bytes):
    given = [name for name, value in (("factor", factor), ("spacing", spacing), ("target size", target_bytes))
             if value is not None]
    if len(given) > 1:
        raise BigVolumeError(f"give only one of factor, spacing or target size (got {' and '.join(given)})")
    if isotropic and given and given[0] != "factor":  # (it was dropped without a word)
        raise BigVolumeError(f"isotropic goes with a factor, not with a {given[0]} (which sets every axis itself)")
    try:
        if spacing is not None:
            return factors_for_spacing(geometry, spacing)
        if target_bytes is not None:
            return factors_for_size(geometry, bytes_per_voxel, target_bytes)
        factors = validate_factors(2.0 if factor is None else factor)
        if isotropic:
            if len(set(factors)) != 1:
                raise ValueError("isotropic needs a single factor")
            chosen = isotropic_factors(geometry, factors[0])
            kept = [axis for axis, (f, s) in enumerate(zip(chosen, geometry.spacing))
                    if f == 1.0 and s > factors[0] * min(geometry.spacing) * (1 + 1e-9)]
            if kept:
                target = factors[0] * min(geometry.spacing)
                axes = ", ".join(f"{'ijk'[a]} ({geometry.spacing[a]:g} mm)" for a in kept)
                logger.warning(f"isotropic: axis {axes} is already coarser than the spacing {target:g} mm of the "
                               f"others and is kept, never upsampled; a factor of "
                               f"{max(geometry.spacing) / min(geometry.spacing):g} gives one spacing on all axes")
            return chosen
        return factors
    except ValueError as error:
        raise BigVolumeError(str(error)) from None


def check_backend(backend: str | None, method: str, device: str = "cpu", dtype=None) -> str:
    """The backend name for ``backend`` (None: the default), refused when it cannot run ``method`` there or filter
    voxels of ``dtype`` (when given: the type the filter receives, see :func:`filter_dtype`)."""
    backend = backend or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise BigVolumeError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "vtk" and method != "lanczos":
        raise BigVolumeError(f"backend vtk runs the lanczos method only (vtkImageResize), not {method}")
    if backend == "vtk" and device == "cuda":
        raise BigVolumeError("backend vtk runs on the CPU; leave out --device cuda or choose the numpy backend")
    if backend == "vtk" and dtype is not None and np.dtype(dtype).kind in "iu" and np.dtype(dtype).itemsize == 8:
        # vtkImageSincInterpolator is built without 64-bit integers: it only warns, and leaves the output unset.
        raise BigVolumeError(f"backend vtk cannot filter {np.dtype(dtype)} voxels (VTK's sinc interpolator lacks "
                             "64-bit integers); leave out --backend vtk: the numpy backend gives the same result")
    return backend


def filter_dtype(in_dtype, out_dtype) -> np.dtype:
    """The type :func:`resample` filters in: a float output of an 8/16-bit integer input is filtered in that float
    type, of a 32/64-bit one in float64 (as streamed: cast to float32 first, int64 403403025655 lost its last
    digits before the filter)."""
    in_dtype, out_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
    if out_dtype.kind != "f" or in_dtype.kind == "f":
        return in_dtype
    return out_dtype if in_dtype.itemsize <= 2 else np.dtype(np.float64)


def downsample_array(array: np.ndarray, factors, method: str = DEFAULT_METHOD, threads: int | None = None,
                     progress: ProgressCallback | None = None, backend: str | None = None,
                     out_dtype=None) -> np.ndarray:
    """Downsample ``array`` (k, j, i[, c]) by ``factors`` (I, J, K) onto the block-centred grid; ``out_dtype``
    (default: ``array``'s) out, integers rounded and clamped once from the filter's float values (as streamed).
    ``backend``: numpy (default: the kernel tables through the slab engine, the fastest) or vtk (vtkImageResize,
    the definition of the Lanczos kernel; lanczos only). fft needs neither."""
    check_method(method)
    array = np.asarray(array)
    check_volume_array(array)
    if array.ndim == 4 and array.shape[3] == 1:  # one component: filtered as a scalar volume, given back as it came
        return downsample_array(array[..., 0], factors, method, threads, progress, backend, out_dtype)[..., None]
    if not array.dtype.isnative:  # VTK and the writers take this machine's byte order
        array = array.astype(native(array.dtype))
    # as resample: an axis shorter than its factor takes its length (one voxel at the data's middle)
    factors = limited_factors(factors, array.shape[2::-1])
    threads = threads or default_threads()
    progress = as_progress(progress)
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    out_dtype = array.dtype if out_dtype is None else native(out_dtype)
    if method == "fft":
        dims_out = Geometry(array.shape[2::-1]).downsampled(factors).dimensions
        positions = [block_centres(m, f) for m, f in zip(dims_out, factors)]
        progress(0.0, "band-limiting (FFT)")
        result = cast_to(band_limited_sample(array, factors, positions), out_dtype, overwrite=True)
        progress(1.0, "band-limiting (FFT)")
        return result
    chosen = get_backend(check_backend(backend, method, dtype=array.dtype))
    if not chosen.streams:
        if out_dtype == array.dtype:
            return chosen.resample_array(array, factors, threads, progress)
        # another output type: filtered in floats, rounded once (in the input's integers, uint8 0|255 to int16
        # came out clamped to 0 .. 255 where the streamed run gave -3 and 258)
        if array.dtype.kind != "f":
            check_exact_in_float64(array, method)
            array = array.astype(work_dtype(array.dtype))
        return cast_to(chosen.resample_array(array, factors, threads, progress), out_dtype, overwrite=True)
    return downsample_in_memory(array, factors, method, out_dtype, threads=threads, progress=progress,
                                backend=chosen, message="resampling")


def resample(volume: Volume, factor=None, *, spacing=None, isotropic: bool = False,
             target_bytes: float | None = None, method: str = DEFAULT_METHOD, threads: int | None = None,
             dtype=None, device: str = "cpu", backend: str | None = None,
             progress: ProgressCallback | None = None) -> Volume:
    """Downsample a Volume; see :func:`choose_factors` for how the grid is chosen. ``dtype``: output pixel type
    (default: the input's); integers are rounded and clamped to the type's range. ``device``: cpu, cuda (the
    same kernels on an NVIDIA GPU through CuPy, see bigvolume.gpu) or auto (cuda when there is one).
    ``backend``: on the CPU, numpy (default) or vtk (see :func:`downsample_array`)."""
    check_method(method)
    if check_backend(backend, method, device) == "vtk":
        device = "cpu"
    factors = choose_factors(volume.geometry, volume.array.dtype.itemsize * volume.components, factor, spacing,
                             isotropic, target_bytes)
    array = volume.array
    out_dtype = native(dtype) if dtype is not None else array.dtype
    if choose_device(device, method) == "cuda":
        result = resample_array(array, factors, method, out_dtype, xp=probe_cuda()[0], threads=threads,
                                progress=progress)
        return Volume(result, volume.geometry.downsampled(factors))
    filtered = filter_dtype(array.dtype, out_dtype)
    if filtered != array.dtype:  # (a float output: its own rounding is coarser than the filter's)
        array = array.astype(filtered)  # filter in the wider type (costs one full-size copy)
    # an integer output is rounded and clamped once, from the filter's floats (see downsample_array)
    result = downsample_array(array, factors, method, threads, progress, backend,
                              None if out_dtype.kind == "f" else out_dtype)
    return Volume(cast_to(result, out_dtype), volume.geometry.downsampled(factors))


@dataclass
class ResampleReport:
    input_path: Path
    output_path: Path
    input_geometry: Geometry
    output_geometry: Geometry
    factors: tuple[float, float, float]
    method: str
    input_bytes: int
    output_bytes: int
    seconds: float
    stream_plan: StreamPlan | None = None  # set when the volume was streamed
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"                     # or the GPU's name

    def summary(self, files: bool = True) -> str:
        """One line: grids, spacing, method, time; with ``files`` also the output's path, the sizes on disk and how
        it streamed (not for files a caller made and deletes: Slicer's CLI module's temporary ones)."""
        def size(geometry):
            return "x".join(str(d) for d in geometry.dimensions)
        spacing = " ".join(f"{s:g}" for s in self.output_geometry.spacing)
        on_disk = f"{format_bytes(self.input_bytes)} -> {format_bytes(self.output_bytes)} on disk, " if files else ""
        text = (f"{f'{self.output_path}: ' if files else ''}{size(self.input_geometry)} -> "
                f"{size(self.output_geometry)}, spacing {spacing}, {on_disk}"
                f"{self.method}{'' if self.device == 'cpu' else ' on ' + self.device}, {self.seconds:.2f} s")
        if self.stream_plan is not None and files:
            text += f"; {self.stream_plan.describe()}"
        return text


def nan_note(nan: int, voxels: int, method: str, out_dtype=None) -> str:
    """What to say of an output with NaN voxels: each NaN input voxel spreads over the kernel's support.
    ``out_dtype``: an integer output type, which holds no NaN (they were set to 0 there)."""
    support = {"lanczos": "up to 32 voxels along each axis", "gaussian": "a few voxels", "mean": "its block",
               "max": "its block", "nearest": "one voxel"}.get(method, "the kernel's support")
    other = "" if method in ("nearest", "mean", "max") else ", or choose --method nearest, mean or max"
    signed = method in ("lanczos", "fft")  # negative lobes: inf - inf, and sums of huge values overflow
    why = ("a NaN or infinite input voxel, or values near the type's largest, " if signed else "a NaN input voxel ")
    are = "are NaN" if out_dtype is None or np.dtype(out_dtype).kind == "f" else \
        f"came out NaN and were set to 0 in the {np.dtype(out_dtype)} output (an integer type has no NaN)"
    return (f"{nan} of the {voxels} output voxels ({100 * nan / max(1, voxels):.3g} %) {are}: {why}"
            f"makes NaN every output voxel whose {method} kernel reaches it ({support}); replace the input's NaN "
            f"{'and inf ' if signed else ''}first (for example with the background value){other}")


def label_note(name, array: np.ndarray, method: str) -> str | None:
    """What to say when an integer volume ``name`` read whole looks like a label map or mask and ``method`` mixes
    values (a file says not what it holds: a Slicer label map node reaches the CLI module as a plain NRRD); None when
    there is nothing to say."""
    if method in LABEL_SAFE_METHODS or array.ndim != 3:
        return None
    labels = label_values(subsample(array))
    if labels is None or labels.size < 2:  # (one value: a constant volume, nothing to mix)
        return None
    return (f"{name}: only {labels.size} distinct values ({values_text(labels)}): a label map or mask? {method} "
            f"makes values between them (labels that are not in the input); resample labels with --method "
            f"{' or '.join(LABEL_SAFE_METHODS)}")


def _note_labels(notes: list[str], path, array: np.ndarray, method: str) -> None:
    note = label_note(path, array, method)
    if note is not None:
        _note(notes, note)


def _note(notes: list[str], text: str) -> None:
    """Something the user should know before a long job: logged at once (the command line prints it) and kept
    for the report."""
    notes.append(text)
    logger.warning(text)


@dataclass
class FilePlan:
    """What resampling a file will do, from its header alone: grids, sizes, and whether it streams."""

    input_path: Path
    geometry: Geometry
    output_geometry: Geometry
    factors: tuple[float, float, float]
    dtype: np.dtype          # the input's pixel type
    out_dtype: np.dtype
    components: int
    method: str
    memory_limit: int
    automatic_limit: bool
    stream: bool | None      # as asked: None = decide
    reads_in_slabs: bool     # the file's layout allows reading a slab at a time
    series: str | None = None  # the DICOM series UID asked for (bigvolume.dicom)
    backend: str = DEFAULT_BACKEND
    # The buffers of a run one slice at a time: what a run in memory adds to the input and output at least
    # (a 26000^2 slice needs GiBs: read whole beside its output it went 1.3x over the default limit, silently).
    slice_buffers: int = 0

    @property
    def can_stream(self) -> bool:
        return self.method in STREAMABLE_METHODS and get_backend(self.backend).streams

    @property
    def input_bytes(self) -> int:
        return self.geometry.voxel_count * self.components * self.dtype.itemsize

    @property
    def output_bytes(self) -> int:
        return self.output_geometry.voxel_count * self.components * self.out_dtype.itemsize

    @property
    def in_memory_bytes(self) -> int:
        return self.input_bytes + self.output_bytes + self.slice_buffers

    @property
    def streams(self) -> bool:
        return should_stream(self.stream, self.reads_in_slabs, self.in_memory_bytes, self.memory_limit,
                             self.can_stream)

    def why_read_whole(self) -> str:
        if self.stream is False:
            return "as asked"
        return f"{self.method} cannot stream" if self.method not in STREAMABLE_METHODS else \
            f"backend {self.backend} cannot stream"

    def describe(self) -> str:
        """Input grid -> output grid, sizes, and how it will run (streamed or read whole, and why)."""
        limit = f"memory limit {format_bytes(self.memory_limit)}{' (automatic)' if self.automatic_limit else ''}"
        needs = (f"input + output{' + the buffers of one slice' if self.slice_buffers else ''} "
                 f"{format_bytes(self.in_memory_bytes)}")
        over = self.in_memory_bytes > self.memory_limit
        if self.streams:
            how = (f"streamed from disk, as asked ({limit})" if self.stream
                   else f"streamed from disk ({needs} > {limit})")
        elif self.stream is False:
            how = f"read whole, as asked ({needs}{' > ' if over else ' within the '}{limit})"
        elif not self.reads_in_slabs and (self.stream or over):
            how = f"read whole: this file's encoding cannot be read in slabs ({needs}, {limit})"
        elif over:
            how = f"read whole: {self.why_read_whole()} ({needs} > {limit})"
        else:
            how = f"read whole ({needs} within the {limit})"
        dims = ["x".join(str(d) for d in g.dimensions) for g in (self.geometry, self.output_geometry)]
        spacing = " ".join(f"{s:.6g}" for s in self.output_geometry.spacing)
        return (f"{dims[0]} -> {dims[1]}, spacing {spacing} mm, {format_bytes(self.input_bytes)} -> "
                f"{format_bytes(self.output_bytes)}; {how}")


def plan_file(input_path, factor=None, *, spacing=None, isotropic: bool = False, target_bytes: float | None = None,
              method: str = DEFAULT_METHOD, dtype=None, stream: bool | None = None,
              memory_limit: float | None = None, series: str | None = None,
              backend: str | None = None, threads: int | None = None) -> FilePlan:
    """Plan :func:`resample_file` from the input's header: refuses invalid settings, unreadable headers and
    missing or short data files before any voxel is read. ``threads``: the filter threads the run will use
    (their buffers count in the memory planned)."""
    check_method(method)
    backend = check_backend(backend, method)
    if factor is not None:
        try:
            validate_factors(factor)
        except ValueError as error:
            raise BigVolumeError(str(error)) from None
    source = plan_input(input_path, stream=stream, memory_limit=memory_limit, series=series)
    geometry, in_dtype, components = source.geometry, source.dtype, source.components
    factors = choose_factors(geometry, in_dtype.itemsize * components, factor, spacing=spacing,
                             isotropic=isotropic, target_bytes=target_bytes)
    if stream and method not in STREAMABLE_METHODS:
        raise BigVolumeError(f"method {method} needs the whole volume in memory and cannot stream; "
                             f"choose one of {', '.join(STREAMABLE_METHODS)}")
    if stream and not get_backend(backend).streams:
        raise BigVolumeError(f"backend {backend} works on the whole volume in memory and cannot stream; "
                             "choose the numpy backend to stream")
    out_dtype = native(dtype) if dtype is not None else in_dtype
    check_backend(backend, method, dtype=filter_dtype(in_dtype, out_dtype))
    plan = FilePlan(source.path, geometry, geometry.downsampled(factors), factors, in_dtype, out_dtype, components,
                    method, source.memory_limit, source.automatic_limit, stream, source.reads_in_slabs, series,
                    backend)
    if stream is None and plan.reads_in_slabs and plan.can_stream:  # (only then may it change the choice)
        with open_slabs(plan.input_path, series) as reader:
            plan.slice_buffers = estimate_stream(reader, factors, method, out_dtype=out_dtype, memory_limit=0,
                                                 threads=threads or default_threads()).working_bytes
    return plan


def writes_compressed(path, compress: bool | None) -> bool:
    """Whether :func:`bigvolume.io.files.write_volume` / the slab writers compress ``path``'s voxels: .nii.gz always,
    .nrrd and .mha by default, other compressible formats when asked."""
    suffix = io.volume_suffix(path)
    if suffix == ".nii.gz":
        return True
    return suffix in (".nrrd", ".mha") if compress is None else bool(compress) and suffix in io.COMPRESSIBLE_SUFFIXES


FIT_TRIALS = 16  # most trial writes when fitting a compressed file to a size


def fit_uncompressed_size(geometry: Geometry, bytes_per_voxel: int, budget: float, header_bytes,
                          output_path) -> tuple:
    """The factors whose uncompressed file, its voxels and its header (``header_bytes(output geometry)``), fits
    ``budget`` bytes: the voxel-count rule (:func:`choose_factors`' target size) on the budget less the header."""
    voxel_budget = budget
    while True:
        factors = choose_factors(geometry, bytes_per_voxel, target_bytes=max(voxel_budget, bytes_per_voxel))
        grid = geometry.downsampled(factors)
        header = header_bytes(grid)
        if grid.voxel_count * bytes_per_voxel + header <= budget:
            return factors
        if voxel_budget <= bytes_per_voxel:
            break  # the smallest grid, tried
        # (a smaller grid's numbers may take more digits, or fewer: a header larger than the budget still leaves the
        # smallest grid to try, whose header is shorter)
        voxel_budget = max(bytes_per_voxel, min(voxel_budget - 1, budget - header))
    smallest = bytes_per_voxel + header_bytes(geometry.downsampled(geometry.dimensions))
    raise BigVolumeError(f"{output_path}: even the smallest grid takes {smallest} bytes on disk, more than the "
                         f"target size {budget:.0f}")


def fit_file_size(write_trial, geometry: Geometry, start, budget: float, output_path) -> tuple[tuple, int]:
    """The largest grid whose written file fits ``budget`` bytes on disk: its factors and the number of trial
    writes. The candidates are the grids whose longest axis has ``m`` voxels (uniform factor = that axis's input
    voxels / ``m``, so it is covered exactly); the search is a bisection on ``m``, starting next to ``start`` (the
    factors that fit uncompressed; compression usually lets a larger grid fit, on noise the header can push it over).
    ``write_trial(factors, path)`` writes the output at ``factors`` to ``path``; the trials go to a hidden folder
    beside the output and are removed."""
    folder = Path(output_path).parent if str(Path(output_path).parent) else Path(".")
    longest = max(geometry.dimensions)
    sizes: dict[int, int] = {}  # m -> bytes on disk

    def factors_at(m: int) -> tuple:
        return choose_factors(geometry, factor=longest / m)

    def fits(m: int) -> bool:
        if m not in sizes:
            trial = Path(staging) / Path(output_path).name
            write_trial(factors_at(m), trial)
            sizes[m] = io.file_size(trial)
        return sizes[m] <= budget

    with tempfile.TemporaryDirectory(prefix=f".{Path(output_path).name}.fit-", dir=folder) as staging:
        fitting = min(longest, max(geometry.downsampled(start).dimensions))
        while not fits(fitting):
            if fitting == 1:
                raise BigVolumeError(f"{output_path}: even the smallest grid takes {sizes[1]} bytes on disk, more "
                                     f"than the target size {budget:.0f}")
            fitting = max(1, min(fitting - 1, int(fitting / 1.1)))
        # first steps from the compression ratio (bytes ~ m^3), then bisection between a fit and a failure
        failing = None
        while len(sizes) < FIT_TRIALS and fitting < longest and (failing is None or failing > fitting + 1):
            if failing is None:
                candidate = int(fitting * (budget / sizes[fitting]) ** (1 / 3))
                candidate = min(longest, max(fitting + 1, candidate))
            else:
                candidate = (fitting + failing) // 2
            if fits(candidate):
                fitting = candidate
            else:
                failing = candidate
    return factors_at(fitting), len(sizes)


def resample_file(input_path, output_path, factor=None, *, spacing=None, isotropic: bool = False,
                  target_bytes: float | None = None, method: str = DEFAULT_METHOD, threads: int | None = None,
                  dtype=None, compress: bool | None = None, stream: bool | None = None,
                  memory_limit: float | None = None, device: str = "cpu", series: str | None = None,
                  backend: str | None = None, progress: ProgressCallback | None = None) -> ResampleReport:
    """Read, downsample and write. Everything that can be checked is checked before reading (options, output
    path, the input's header and data files: see :func:`plan_file`); the output appears only when complete.

    ``stream``: read and filter the input a slab at a time (see bigvolume.engine.stream). Default: stream when the input
    and output together would exceed ``memory_limit`` (bytes; default a quarter of the machine's memory), which
    also caps the streaming buffers. ``device``: cpu, cuda or auto, as for :func:`resample`; on the GPU a
    streamed file goes slab by slab through the device, a file read whole is streamed from memory. ``series``:
    the UID of the DICOM series to read when the input folder holds several (see bigvolume.dicom). ``backend``:
    on the CPU, numpy (default, streams) or vtk (vtkImageResize, in memory; see :func:`downsample_array`)."""
    started = time.perf_counter()
    output_path = Path(output_path)
    plan = plan_file(input_path, factor, spacing=spacing, isotropic=isotropic, target_bytes=target_bytes,
                     method=method, dtype=dtype, stream=stream, memory_limit=memory_limit, series=series,
                     backend=backend, threads=threads)
    input_path = plan.input_path
    io.check_output_path(output_path, inputs=[input_path])
    suffix = io.volume_suffix(output_path)
    if compress is not None and suffix in (".nii", ".nii.gz") and bool(compress) != (suffix == ".nii.gz"):
        # (the option was dropped without a word: .nii written raw under --compress, .nii.gz gzipped under --no-)
        raise BigVolumeError(f"{output_path}: NIfTI is compressed by its name, not by an option: name it "
                             f"{'.nii.gz' if compress else '.nii'} for "
                             f"{'a compressed' if compress else 'an uncompressed'} file")
    check_backend(backend, method, device)
    device = "cpu" if plan.backend == "vtk" else choose_device(device, method)
    notes: list[str] = []
    progress = as_progress(progress)
    if stream and not plan.reads_in_slabs:
        _note(notes, f"{input_path}: this file's encoding cannot be read in slabs; reading it whole "
                     f"({format_bytes(plan.input_bytes)})")
    elif not plan.streams and plan.in_memory_bytes > plan.memory_limit:
        _note(notes, read_whole_note(input_path, "it cannot be read in slabs" if not plan.reads_in_slabs
                                     else plan.why_read_whole(), plan.in_memory_bytes, plan.memory_limit))
    volume = None  # the input, read once however many times the output is written (see fit_file_size)
    counted = {}   # "sink": the NaN count of the last output written
    limit_said: list[str] = []
    # A float input's NaN are counted before the cast to an integer output type, which makes them 0.
    cast_after_count = plan.dtype.kind == "f" and plan.out_dtype.kind in "iu"

    def counting(writer):
        counted["sink"] = NanCountingSink(writer, plan.out_dtype if cast_after_count else None)
        return counted["sink"]

    def note_limit(text: str) -> None:
        """The plan's note on a limit its buffers cannot keep, said once."""
        if text and not limit_said:
            limit_said.append(text)
            _note(notes, text)

    def slab_written(path) -> bool:
        """Whether the slab writers write the output (else SimpleITK's writer, from the whole result)."""
        return plan.streams or (device == "cpu" and plan.can_stream and plan.out_dtype == plan.dtype
                                and writes_in_slabs(path, plan.components, compress))

    def write_output(factors, path, part: Progress) -> StreamPlan | None:
        nonlocal volume
        counted.clear()
        if plan.streams:
            with open_slabs(input_path, series) as reader:
                backend = ArrayBackend(probe_cuda()[0]) if device == "cuda" else None
                workers = threads or default_threads()
                # a limit the buffers cannot keep is said before the work, not after it (once per run, though
                # fitting a file size streams several times)
                ahead = estimate_stream(reader, factors, method, out_dtype=plan.out_dtype, threads=workers,
                                        memory_limit=plan.memory_limit, backend=backend).note
                note_limit(ahead)
                return stream_to_file(reader, path, factors, method, out_dtype=plan.out_dtype,
                                      threads=workers, compress=compress,
                                      memory_limit=plan.memory_limit, progress=part, backend=backend,
                                      wrap_sink=counting,
                                      filter_dtype=work_dtype(native(plan.dtype)) if cast_after_count else None)
        if volume is None:
            volume = io.read_volume(input_path, series)
            _note_labels(notes, input_path, volume.array, method)
        part(0.1, "read")
        if slab_written(path):
            # The input in memory, the output through the streamed path's own file sink, written while the next
            # slabs are filtered: no output array, no second writer (the two modes write the same file).
            workers = threads or default_threads()
            reader = ArraySlabReader(volume.array, volume.geometry, threads=workers)
            stream_to_file(reader, path, factors, method, threads=workers, compress=compress,
                           memory_limit=in_memory_limit(volume.array.nbytes), progress=part.sub(0.1, 1.0),
                           message="resampling", wrap_sink=counting)
            return None
        result = resample(volume, factors, method=method, threads=threads,
                          dtype=volume.dtype if cast_after_count else dtype, device=device, backend=plan.backend,
                          progress=part.sub(0.1, 0.9))
        counting(None).count(result.array)
        if cast_after_count:
            result = Volume(cast_to(result.array, plan.out_dtype, overwrite=True), result.geometry)
        io.write_volume(result, path, compress=compress)
        return None

    factors, trials = plan.factors, 0
    if target_bytes is not None and writes_compressed(output_path, compress):
        factors, trials = fit_file_size(lambda f, path: write_output(f, path, progress.sub(0.0, 0.8)),
                                        plan.geometry, plan.factors, target_bytes, output_path)
        logger.info(f"{output_path}: {trials} trial writes to fit {format_bytes(target_bytes)} on disk")
    elif target_bytes is not None:
        factors = fit_uncompressed_size(plan.geometry, plan.out_dtype.itemsize * plan.components, target_bytes,
                                        lambda grid: header_bytes(output_path, grid, plan.out_dtype, plan.components,
                                                                  slab_written(output_path)), output_path)
    stream_plan = write_output(factors, output_path, progress.sub(0.8 if trials else 0.0, 1.0))
    if stream_plan is not None:
        note_limit(stream_plan.note)
    counter = counted.get("sink")
    if counter is not None and counter.nan:
        _note(notes, nan_note(counter.nan, counter.voxels, method, plan.out_dtype))
    progress(1.0, "written")
    return ResampleReport(input_path, output_path, plan.geometry, plan.geometry.downsampled(factors), factors, method,
                          io.file_size(input_path, series), io.file_size(output_path), time.perf_counter() - started,
                          stream_plan, notes, "cpu" if device == "cpu" else device_name())
