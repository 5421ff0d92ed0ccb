"""The `bigvolume` command line. Every failure the user can fix ends in one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import warnings

import numpy as np

from .. import __version__
from ..core import memory
from ..core.errors import BigVolumeError, Cancelled
from ..core.progress import Terminated, TerminalProgressBar, interrupt_as_flag, terminate_as_interrupt
from ..engine.gpu import DEVICES
from ..methods.backends import BACKENDS, DEFAULT_BACKEND
from ..ops.resample import DEFAULT_METHOD, METHODS, resample_file
from ..ops.haze import AIR_MODES as HAZE_AIR_MODES, DEFAULT_DILATE as HAZE_DEFAULT_DILATE, LEVEL_NAMES as HAZE_LEVEL_NAMES

def parse_size(text: str) -> float:
    try:
        return memory.parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


INPUT_HELP = ("input volume (.nrrd, .nhdr, .nii, .nii.gz, .mha, .mhd), a DICOM series (its folder or any one of "
              "its files), or an OME-Zarr pyramid / Zarr array (its folder; a level's folder reads that level)")


def _add_pyramid_level_argument(parser, names=("--level", "--pyramid-level")) -> None:
    parser.add_argument(*names, dest="pyramid_level", type=int, metavar="K",
                        help="read level K of an OME-Zarr pyramid (0: full resolution, the default)")


def _add_series_argument(parser) -> None:
    parser.add_argument("--series", metavar="UID",
                        help="the DICOM series to read when IN's folder holds several (the error lists them)")


def _add_stack_source_arguments(parser, spacing_help: str) -> None:
    """How an image stack is read: the same options for import-stack and pyramid."""
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), help=spacing_help)
    parser.add_argument("--roi", type=int, nargs=6, metavar=("X0", "X1", "Y0", "Y1", "Z0", "Z1"),
                        help="crop box in slice indices, ends excluded (columns X0..X1-1, ...)")
    parser.add_argument("--gray", default="luminance", metavar="luminance|channel:N|keep",
                        help="colour slices: Rec. 709 luminance (default), one channel, or keep RGB")
    parser.add_argument("--reverse", action="store_true", help="reverse the slice order")
    parser.add_argument("--origin", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="position (LPS) of the centre of the first slice's first pixel (default 0 0 0), in the "
                             "unit of --spacing")
    placing = parser.add_mutually_exclusive_group()
    placing.add_argument("--orientation", default=None, metavar="CODE", type=str.upper,
                         help="three letters naming the direction towards which columns (i), rows (j) and slices "
                              "(k, in file order) increase, in LPS: one of L/R, P/A, S/I each, e.g. LPS (default: "
                              "identity; axial slices in radiological view, feet to head), LPI, RAS, LIP (coronal), "
                              "PIL (sagittal)")
    placing.add_argument("--direction", type=float, nargs=9, metavar="D",
                         help="the direction matrix instead of a code: the i, j, k unit vectors in LPS, one after "
                              "the other (9 numbers)")


class _Parser(argparse.ArgumentParser):
    """argparse, reading '-1.5e3' as a number: its own test knows only '-12' and '-1.5', so a window, origin or
    direction written in scientific notation was taken for an unknown option ("expected 2 arguments")."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf(inity)?$", re.I)


def _method_help() -> str:
    return "; ".join(f"{name}: {hint}" for name, hint in METHODS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bigvolume", description="Anti-aliased downsampling of huge 3D images (NRRD, NIfTI, MetaImage) and "
                                      "image stacks.")
    parser.add_argument("--version", action="version", version=f"bigvolume {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    resample = commands.add_parser(
        "resample", help="downsample a volume file with anti-aliasing",
        description="Downsample IN into OUT on the block-centred grid: spacing = factor x input spacing exactly, "
                    "origin moved by (factor-1)/2 voxels, size round(n / factor) per axis.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="methods:\n" + "\n".join(f"  {name:9s} {hint}" for name, hint in METHODS.items()))
    resample.add_argument("input", metavar="IN", help=INPUT_HELP)
    resample.add_argument("output", metavar="OUT", help="output volume; the format follows the suffix")
    grid = resample.add_mutually_exclusive_group()
    grid.add_argument("--factor", type=float, nargs="+", metavar="F",
                      help="one factor for all axes, or three (I J K); fractional allowed; default 2")
    grid.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), help="target spacing")
    grid.add_argument("--target-size", type=parse_size, metavar="SIZE",
                      help="largest output file on disk, e.g. 20KB (compression included: compressed outputs are "
                           "written at trial grids and the largest that fits is kept); picks a uniform factor")
    resample.add_argument("--isotropic", action="store_true",
                          help="one output spacing on all axes: factor x the finest input spacing; an axis "
                               "already coarser is kept (never upsampled), with a note")
    resample.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD, metavar="NAME",
                          help=f"resampling method (default {DEFAULT_METHOD}): " + _method_help())
    resample.add_argument("--threads", type=positive_int, metavar="N",
                          help="threads for the filter (default: all cores); streamed Lanczos splits its matrix "
                               "products over them, BLAS itself is kept to one thread")
    resample.add_argument("--device", choices=DEVICES,
                          help="where to filter: cuda (an NVIDIA GPU through CuPy: pip install -e '.[gpu]'), cpu, "
                               "or auto (cuda when there is one, else the CPU with a note saying why). Default: as "
                               "auto, without the note")
    resample.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                          help="what filters on the CPU: numpy (default: the kernel tables as BLAS band products, "
                               "streams, the fastest) or vtk (vtkImageResize, the definition of the Lanczos kernel; "
                               "lanczos only, reads the volume whole)")
    resample.add_argument("--type", dest="dtype", choices=["uint8", "int8", "uint16", "int16", "uint32", "int32",
                                                          "float32", "float64"],
                          help="output pixel type (default: the input's); integers are rounded and clamped")
    compression = resample.add_mutually_exclusive_group()
    compression.add_argument("--compress", dest="compress", action="store_true", default=None,
                             help="gzip the voxel data (default for .nrrd and .mha)")
    compression.add_argument("--no-compress", dest="compress", action="store_false",
                             help="store raw voxel data (default for .nhdr and .mhd)")
    _add_memory_arguments(resample)
    _add_pyramid_level_argument(resample)
    _add_preview_argument(resample, "IN and OUT side by side (before/after)", before="input")
    resample.set_defaults(run=run_resample)

    stack = commands.add_parser(
        "import-stack", help="import a stack of TIFF/PNG/JPEG/BMP slices, downsampling while reading",
        description="Read the slices of INPUT a few at a time (decoded in parallel on --threads threads, default "
                    "all cores; memory bounded whatever the number of slices), crop, convert to gray, reduce the bit depth and downsample with the same "
                    "anti-aliased kernel and block-centred grid as `resample`, and write OUT.")
    stack.add_argument("input", metavar="INPUT",
                       help="a folder, a quoted glob ('scans/*.tif'), a printf pattern (scans/rec_%%04d.png) or one "
                            "slice file (its numbered siblings are found)")
    stack.add_argument("output", metavar="OUT", help="output volume (.nrrd, .nhdr, .nii, .nii.gz)")
    _add_stack_source_arguments(stack, "voxel size in mm (default: the slices' pixel size, if their headers have one)")
    stack.add_argument("--factor", type=float, nargs="+", metavar="F",
                       help="downsampling factor, one or three (x y z); fractional allowed; default 1")
    stack.add_argument("--bits", type=int, choices=[8, 16],
                       help="reduce the bit depth through a robust intensity window (0.1-99.9 percentiles)")
    stack.add_argument("--method", choices=[m for m in METHODS if m != "fft"], default=DEFAULT_METHOD,
                       metavar="NAME", help=f"downsampling method (default {DEFAULT_METHOD})")
    stack.add_argument("--nhdr-only", action="store_true",
                       help="write only a full-resolution streamable NHDR: it points into the slice files when "
                            "they are uncompressed TIFFs (no copy), else gets one raw file")
    stack.add_argument("--threads", type=positive_int, metavar="N",
                       help="decoding and filtering threads (default: all cores); the Lanczos matrix products are "
                            "split over them, BLAS itself is kept to one thread")
    stack.add_argument("--memory-limit", type=parse_size, metavar="SIZE", help="working memory to stay under")
    stack.add_argument("--dry-run", action="store_true",
                       help="show the plan (output size, spacing, working memory) from the slices' headers, and "
                            "stop")
    stack.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    _add_preview_argument(stack, "OUT")
    stack.set_defaults(run=run_import_stack)

    pyramid = commands.add_parser(
        "pyramid", help="write a multiscale OME-Zarr pyramid (chunked, on Dask) of a volume, stack or Zarr array",
        description="Level 0 is IN bit for bit; each further level halves the axes whose spacing is not already "
                    "coarser than the others (so levels approach isotropic voxels) with the anti-aliased kernel of "
                    "`resample`, computed from the level before, one Dask task per chunk (or shard). Written to "
                    "OUT.partial and renamed when complete; Ctrl-C leaves nothing (unless --keep-partial), --resume "
                    "continues an interrupted run.")
    pyramid.add_argument("input", metavar="IN",
                         help=INPUT_HELP + "; or a stack of slices (a folder, quoted glob, printf pattern or one "
                                           "slice file, as import-stack reads)")
    pyramid.add_argument("output", metavar="OUT.ome.zarr", help="the pyramid (a folder)")
    pyramid.add_argument("--levels", type=positive_int, metavar="N",
                         help="levels in all, level 0 included (default: until the coarsest fits in one chunk)")
    pyramid.add_argument("--chunks", type=positive_int, default=128, metavar="N", help="chunk size (default 128)")
    pyramid.add_argument("--shard", type=positive_int, metavar="N",
                         help="group N x N x N chunks per file (Zarr v3 sharding; OME-Zarr 0.5 only)")
    pyramid.add_argument("--method", choices=[m for m in METHODS if m != "fft"], default=DEFAULT_METHOD,
                         metavar="NAME", help=f"downsampling method (default {DEFAULT_METHOD}): " + _method_help())
    pyramid.add_argument("--ome-zarr-version", choices=["0.5", "0.4"], default="0.5",
                         help="0.5 (Zarr v3, default) or 0.4 (Zarr v2, for older viewers)")
    where = pyramid.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, metavar="N",
                       help="run on a dask.distributed LocalCluster of N worker processes (default: Dask's local "
                            "threads)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing dask.distributed cluster, e.g. tcp://10.0.0.5:8786")
    pyramid.add_argument("--threads", type=positive_int, metavar="N",
                         help="threads of the local scheduler and of level 0's pass (default: all cores)")
    pyramid.add_argument("--memory-limit", type=parse_size, metavar="SIZE",
                         help="memory for level 0's pass, and per worker with --workers (default: a quarter of this "
                              f"machine's memory, {memory.format_bytes(memory.default_memory_limit())})")
    pyramid.add_argument("--resume", action="store_true",
                         help="continue the interrupted run whose OUT.partial is there (finished chunks are skipped)")
    pyramid.add_argument("--keep-partial", action="store_true",
                         help="after an error or Ctrl-C, keep OUT.partial (for --resume) instead of removing it")
    pyramid.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    pyramid.add_argument("--unit", choices=["nanometer", "micrometer", "millimeter", "centimeter", "meter"],
                         help="unit of the axes (default: an OME-Zarr input's, millimeter for volume files, "
                              "micrometer for stacks): a stack's --spacing is in it, a volume's mm are converted")
    _add_pyramid_level_argument(pyramid, ("--pyramid-level",))  # --levels is how many levels to write
    _add_series_argument(pyramid)
    _add_stack_source_arguments(pyramid, "for a stack: voxel size in --unit (default: the slices' pixel size)")
    pyramid.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    pyramid.set_defaults(run=run_pyramid)

    dehaze = commands.add_parser(
        "dehaze", help="set the noisy air around the object to one value, so the volume compresses",
        description="Finds the dark voxels (by default on a denoised copy, with a threshold above the noise of the "
                    "air); by default only those connected to the volume's border are air, so dark cavities inside "
                    "the object stay. The object is grown by --dilate voxels and everything outside it is set to "
                    "the image minimum (or --fill). Exit status 3: the output was written but little or nothing "
                    "was removed, or almost everything (no object found), or only padding outside a field of view, or "
                    "the threshold may cut into the object, or most of the volume's border stayed (air brighter than "
                    "the air found) (the warning line says why).")
    dehaze.add_argument("input", metavar="IN", help=INPUT_HELP)
    dehaze.add_argument("output", metavar="OUT", help="output volume, same grid and pixel type")
    dehaze.add_argument("--level", choices=[str(name) for name in HAZE_LEVEL_NAMES], default="auto",
                        help="auto (default): classify a denoised copy, the threshold the lowest multi-level Otsu cut "
                             "above the noise of the air (CT and noisy backgrounds); 1-5: MRIcroGL's levels on the "
                             "raw voxels: 1: 4 classes, darkest 3 are air (most removed); 2: 3 classes, darkest 2; "
                             "3: 2 classes, darkest 1; 4: 3 classes, darkest 1; 5: 4 classes, darkest 1")
    dehaze.add_argument("--air", choices=HAZE_AIR_MODES, default="border",
                        help="border: dark voxels connected to the volume's border (default; dark cavities inside "
                             "stay); all: every dark voxel")
    dehaze.add_argument("--dilate", type=int, default=HAZE_DEFAULT_DILATE, metavar="N",
                        help=f"grow the object by N voxels (6-neighbour steps) so its edges survive "
                             f"(default {HAZE_DEFAULT_DILATE})")
    dehaze.add_argument("--largest-only", action="store_true", help="keep only the largest connected object")
    dehaze.add_argument("--close", type=int, default=0, metavar="N",
                        help="close gaps up to 2N voxels wide in the object (e.g. sulci open to the outside)")
    dehaze.add_argument("--fill", default="min", metavar="min|VALUE",
                        help="value for the haze: the image minimum (default) or a number that fits the pixel type")
    dehaze.add_argument("--mask-out", metavar="MASK", help="also write the haze mask (uint8, 1 = haze)")
    _add_memory_arguments(dehaze)
    _add_pyramid_level_argument(dehaze, ("--pyramid-level",))  # --level is the haze threshold's
    _add_preview_argument(dehaze, "IN and OUT side by side (before/after)", before="input")
    dehaze.set_defaults(run=run_dehaze)

    reduce = commands.add_parser(
        "reduce-bits", help="reduce the precision to 8 or 16 bits through a robust intensity window",
        description="Map an intensity window (percentiles of a subsample, or --window) linearly onto uint8/uint16 "
                    "(int8/int16 with --signed); values outside the window are clipped and counted.")
    reduce.add_argument("input", metavar="IN", help=INPUT_HELP)
    reduce.add_argument("output", metavar="OUT", help="output volume, same grid")
    reduce.add_argument("--bits", type=int, choices=[8, 16], required=True, help="bits per voxel")
    reduce.add_argument("--signed", action="store_true", help="signed output (int8/int16)")
    reduce.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"),
                        help="intensity window mapped onto the output range (default: from --percentiles)")
    reduce.add_argument("--percentiles", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                        help="percentiles that make the window (default 0.1 99.9)")
    reduce.add_argument("--stretch", action="store_true",
                        help="always map the window onto the full output range; without it, integer values are kept "
                             "as they are when the input type fits the output type (e.g. uint8 data, --bits 8), when "
                             "no --window or --percentiles is given and the values fit (a uint16 label map 0..5, "
                             "--bits 8) or, for 16-bit outputs, when --window fits in the output type (e.g. "
                             "Hounsfield units: --bits 16 --signed --window -1024 3071 keeps them, clipped to the "
                             "window); float data whose values are all integers count as integers")
    _add_memory_arguments(reduce)
    _add_pyramid_level_argument(reduce)
    _add_preview_argument(reduce, "IN and OUT side by side, OUT drawn with IN's window mapped through the reduction",
                          before="input")
    reduce.set_defaults(run=run_reduce_bits)

    preview = commands.add_parser(
        "preview", help="write a PNG: volume rendering and three mid-slices, optionally beside other volumes",
        description="Render IN offscreen (Slicer's volume rendering when the slicer-core package is installed, else "
                    "VTK ray casting) with a transfer function from its histogram (CT-like or MR-like), beside its "
                    "three orthogonal mid-slices; with --compare, the volumes side by side with the same transfer "
                    "function and window, each labelled with its dimensions, spacing and file size. Large files are "
                    "downsampled (streamed) to at most 256 voxels per axis first.")
    preview.add_argument("input", metavar="IN", help=INPUT_HELP)
    _add_series_argument(preview)
    preview.add_argument("--level", "--pyramid-level", dest="pyramid_level", type=int, metavar="K",
                         help="draw level K of an OME-Zarr pyramid (default: its coarsest level with at least 256 "
                              "voxels per axis)")
    preview.add_argument("output", metavar="OUT.png", help="the picture")
    preview.add_argument("--compare", action="append", metavar="OTHER",
                         help="another volume drawn beside IN (may be given more than once)")
    preview.add_argument("--size", type=picture_size, default="512x512", metavar="WxH",
                         help="size of each volume rendering in pixels (default 512x512)")
    preview.add_argument("--engine", choices=["auto", "slicer", "vtk"], default="auto",
                         help="auto (default): Slicer's volume rendering when slicer-core is installed, else VTK")
    preview.add_argument("--memory-limit", type=parse_size, metavar="SIZE",
                         help="memory the downsampling of a large file may hold (default: a quarter of this "
                              "machine's memory; beyond it the file is streamed)")
    preview.set_defaults(run=run_preview)

    demo = commands.add_parser(
        "demo", help="compare the methods on a zone plate and a micro-CT-like phantom",
        description="Generate a zone plate and a micro-CT-like phantom, downsample them by decimation and by each "
                    "method, write the volumes and a PNG of central slices, print PSNR, aliasing share, time, size.")
    demo.add_argument("--out", default="demo-output", metavar="DIR", help="output folder (default demo-output)")
    demo.add_argument("--size", type=positive_int, default=256, metavar="N", help="test volumes are N^3 (256)")
    demo.add_argument("--factor", type=float, default=4.0, metavar="F", help="downsampling factor (4)")
    demo.set_defaults(run=run_demo)
    return parser


def _run_with_progress(job, quiet: bool) -> int:
    """Run ``job(progress)`` with a progress bar (unless quiet) and print the report's one-line summary."""
    bar = None if quiet else TerminalProgressBar()
    try:
        report = job(bar)
    finally:
        if bar:
            bar.close()
    if not quiet:
        print(report.summary())
    return 0


def run_resample(args) -> int:
    from ..engine.gpu import choose_device
    factor = _factor_argument(args.factor)
    # --device not given: the GPU when there is one, and no note about CUDA on a machine that has none
    device = args.device or ("cpu" if args.backend == "vtk" else choose_device("auto", args.method, note=False))
    return _run_with_progress(lambda progress: resample_file(
        args.input, args.output, factor, spacing=args.spacing, isotropic=args.isotropic,
        target_bytes=args.target_size, method=args.method, threads=args.threads, dtype=args.dtype,
        compress=args.compress, stream=args.stream, memory_limit=args.memory_limit, device=device,
        series=args.series, backend=args.backend, progress=progress), args.quiet)


def _factor_argument(values, default=None):
    if values is None:
        return default
    if len(values) not in (1, 3):
        raise BigVolumeError(f"--factor takes one or three values, got {len(values)}")
    return values[0] if len(values) == 1 else tuple(values)


def run_import_stack(args) -> int:
    from ..ops.stack_import import check_nhdr_only, import_stack, plan_stack_import
    factor = _factor_argument(args.factor, default=1.0)  # not `or 1.0`: --factor 0 is refused, not 1
    gray = None if args.gray == "keep" else args.gray
    if args.nhdr_only:  # refused alike with --dry-run
        check_nhdr_only(args.output, factor, args.bits)
    if args.dry_run:
        plan = plan_stack_import(args.input, spacing=args.spacing, factor=factor, roi=args.roi, gray=gray,
                                 bits=args.bits, reverse=args.reverse, method=args.method, threads=args.threads,
                                 origin=args.origin, orientation=_stack_orientation(args))
        plan.close()
        print(plan.describe(args.memory_limit, with_notes=False, to_file=True))  # the notes went to stderr
        return 0
    return _run_with_progress(lambda progress: import_stack(
        args.input, args.output, spacing=args.spacing, factor=factor, roi=args.roi, gray=gray, bits=args.bits,
        reverse=args.reverse, method=args.method, threads=args.threads, memory_limit=args.memory_limit,
        nhdr_only=args.nhdr_only, origin=args.origin, orientation=_stack_orientation(args), progress=progress),
        args.quiet)


def run_pyramid(args) -> int:
    from ..ops.pyramid import pyramid
    # Only what the user chose: a volume file refuses stack options (luminance, not reversed: the defaults).
    stack = {"spacing": args.spacing, "roi": args.roi, "gray": None if args.gray == "luminance" else args.gray,
             "reverse": True if args.reverse else None, "origin": args.origin,
             "orientation": _stack_orientation(args)}
    return _run_with_progress(lambda progress: pyramid(
        args.input, args.output, levels=args.levels, chunks=args.chunks, shard=args.shard, method=args.method,
        ome_zarr_version=args.ome_zarr_version, workers=args.workers, scheduler=args.scheduler,
        memory_limit=args.memory_limit, resume=args.resume, keep_partial=args.keep_partial, overwrite=args.overwrite,
        unit=args.unit, threads=args.threads, series=args.series, progress=progress, **stack), args.quiet)


def _stack_orientation(args):
    """--orientation CODE, or --direction's nine numbers (the i, j, k vectors) as the matrix whose columns they are."""
    if args.direction is not None:
        return np.array(args.direction).reshape(3, 3).T
    return args.orientation


def _add_memory_arguments(parser) -> None:
    """--stream/--no-stream, --memory-limit, --quiet and --series: the same for every command that reads a volume
    file."""
    _add_series_argument(parser)
    streaming = parser.add_mutually_exclusive_group()
    streaming.add_argument("--stream", dest="stream", action="store_true", default=None,
                           help="read and work on the input a slab at a time (default: when input and output would "
                                "not fit in the memory limit)")
    streaming.add_argument("--no-stream", dest="stream", action="store_false",
                           help="load the whole input, whatever its size")
    parser.add_argument("--memory-limit", type=parse_size, metavar="SIZE",
                        help="working memory to stay under, e.g. 256MB or 2GB (default: a quarter of this "
                             f"machine's memory, {memory.format_bytes(memory.default_memory_limit())})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


DEHAZE_LITTLE_REMOVED = 3  # dehaze wrote the output but removed little or nothing, or almost everything


def run_dehaze(args) -> int:
    from ..ops.haze import HazeOptions, dehaze_file
    options = HazeOptions(level=args.level, air=args.air, dilate=args.dilate, largest_only=args.largest_only,
                          close=args.close, fill=args.fill)
    reports = []
    _run_with_progress(lambda progress: reports.append(dehaze_file(
        args.input, args.output, options, mask_out=args.mask_out, stream=args.stream,
        memory_limit=args.memory_limit, series=args.series, progress=progress)) or reports[-1], args.quiet)
    if reports[-1].warning:  # written, but it did not do what was asked: scripts must see it
        if args.quiet:  # else the summary's last line says it
            print(f"bigvolume dehaze: warning: {reports[-1].warning}", file=sys.stderr)
        return DEHAZE_LITTLE_REMOVED
    return 0


def run_reduce_bits(args) -> int:
    from ..ops.precision import reduce_bits_file
    from ..render.compare import IntensityMap

    def job(progress):
        report = reduce_bits_file(
            args.input, args.output, args.bits, signed=args.signed, window=args.window, percentiles=args.percentiles,
            stretch=args.stretch, stream=args.stream, memory_limit=args.memory_limit, series=args.series,
            progress=progress)
        # --preview draws OUT with IN's window mapped through the reduction's own linear map
        args.preview_options = {"intensity_maps": [IntensityMap(*report.intensity_map(), "reduce-bits")]}
        return report
    return _run_with_progress(job, args.quiet)


def picture_size(text: str) -> tuple[int, int]:
    """"640x480" (or "512" for a square) -> (640, 480)."""
    parts = text.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        width = height = 0
    if not (16 <= width <= 8192 and 16 <= height <= 8192):  # (render.preview.MAX_PICTURE_SIDE: VTK aborted)
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, each 16 to 8192, got {text!r}")
    return width, height


def register_renderers() -> None:
    """Previews can be drawn by every engine, the slicer layer's too (``--engine slicer``, and ``auto`` prefers it
    where slicer-core is importable): importing it registers it with bigvolume.render."""
    from ..slicer import offscreen_render  # noqa: F401


def run_preview(args) -> int:
    from ..render.preview import write_preview
    register_renderers()
    print(write_preview(args.input, args.output, compare=args.compare, size=args.size, engine=args.engine,
                        memory_limit=args.memory_limit, series=args.series).summary())
    return 0


def _add_preview_argument(parser, what: str, before: str | None = None) -> None:
    """--preview PNG on a command that writes a volume: after it, draw ``what`` into the PNG (bigvolume.render.preview).
    ``before``: the argument naming the input drawn on the left (None: the output alone)."""
    parser.add_argument("--preview", metavar="PNG",
                        help=f"also write a PNG preview of {what}: volume rendering and three mid-slices")
    parser.set_defaults(preview_before=before)


def _apply_pyramid_level(args) -> None:
    """--level K: IN becomes the folder of level K's array, which every reader takes as that level."""
    if getattr(args, "pyramid_level", None) is not None:
        from ..io.zarr_input import level_path
        args.input = str(level_path(args.input, args.pyramid_level))


def _run_and_preview(args) -> int:
    """Run the command; with --preview, check the picture's path first (a typo fails before a long job) and draw
    the result after it."""
    _apply_pyramid_level(args)
    png = getattr(args, "preview", None)
    if not png:
        return args.run(args)
    from ..render.compose import check_png_path
    from ..render.preview import write_preview
    register_renderers()
    before = getattr(args, args.preview_before) if args.preview_before else None
    check_png_path(png, [before, args.output] if before else [args.output])
    code = args.run(args)
    if code not in (0, DEHAZE_LITTLE_REMOVED) or getattr(args, "dry_run", False):  # a warned dehaze wrote OUT
        return code
    limit = getattr(args, "memory_limit", None)
    report = write_preview(before or args.output, png, compare=args.output if before else None, memory_limit=limit,
                           series=getattr(args, "series", None) if before else None,
                           **getattr(args, "preview_options", {}))
    if not args.quiet:
        print(report.summary())
    return code


def run_demo(args) -> int:
    from .demo import run_demo as demo_job
    demo_job(args.out, size=args.size, factor=args.factor)
    return 0


def _show_notes_on_stderr() -> None:
    """The core logs what the user should know before a long job (e.g. reading a file whole); print it."""
    logger = logging.getLogger("bigvolume")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("bigvolume: note: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _interruption_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM) behind ``error``, if any: a KeyboardInterrupt that lands while a module is being
    imported (in a class body's __set_name__, say) comes out as a RuntimeError caused by it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _what_was_kept(args) -> str:
    """After Ctrl-C: nothing, what was complete and in place by then (the output, then its preview or report was
    cut), or (pyramid --keep-partial) the staging folder a --resume continues."""
    from ..io.files import COMMITTED
    kept = [path for path in dict.fromkeys(COMMITTED) if os.path.lexists(path)]  # (not a preview's temporary file)
    if kept:
        return f"{', '.join(map(str, kept))} written, complete, before it"
    if getattr(args, "keep_partial", False):
        from ..ops.pyramid import STAGING_SUFFIX
        staging = f"{args.output}{STAGING_SUFFIX}"
        if os.path.isdir(staging):
            return f"the partial output {staging} was kept; the same command with --resume continues it"
    return "nothing written"


def _load_renderers(args) -> None:
    """VTK's rendering modules, for the commands that draw (preview, --preview, --backend vtk), loaded with Ctrl-C
    held: a KeyboardInterrupt inside VTK's module loading crashed the process (a segmentation fault) or came out as
    an ImportError. The interrupt is raised once they are in, as anywhere else."""
    if args.command == "preview" or getattr(args, "preview", None) or getattr(args, "backend", None) == "vtk":
        with interrupt_as_flag():
            from ..methods import vtk_resize  # noqa: F401
            if args.command == "preview" or getattr(args, "preview", None):
                from ..render import compose, preview  # noqa: F401
                register_renderers()


SIZE_OPTIONS = ("--target-size", "--memory-limit")


def _sizes_joined(argv) -> list:
    """``--target-size -5MB`` as ``--target-size=-5MB``: argparse takes a value starting with a minus for another
    option ("expected one argument"); joined, the size's own check refuses it in words."""
    argv, joined = list(argv), []
    while argv:
        item = argv.pop(0)
        if item in SIZE_OPTIONS and argv and argv[0].startswith("-") and any(c.isdigit() for c in argv[0]):
            item = f"{item}={argv.pop(0)}"
        joined.append(item)
    return joined


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a path the console's code page lacks (cp1252 on Windows): escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(_sizes_joined(sys.argv[1:] if argv is None else argv))
    _show_notes_on_stderr()
    # numpy's floating-point warnings name its source lines; what they mean (NaN outputs) the notes say in words
    warnings.filterwarnings("ignore", message="(overflow|invalid value|divide by zero) encountered",
                            category=RuntimeWarning)
    if getattr(signal.getsignal(signal.SIGINT), "bigvolume_loading", False):
        # (``python -m bigvolume`` held Ctrl-C while loading, the parser included): from here main answers it
        signal.signal(signal.SIGINT, signal.default_int_handler)
    terminate_as_interrupt()
    try:
        try:
            _load_renderers(args)
            return _run_and_preview(args)
        except Exception as error:
            interruption = _interruption_behind(error)
            if interruption is not None:
                raise type(interruption)() from error
            raise
    except Cancelled:
        print("bigvolume: cancelled; nothing written", file=sys.stderr)
        return 130
    except Terminated:  # SIGTERM: 128 + 15, as a process ended by it reports
        print(f"\nbigvolume: terminated; {_what_was_kept(args)}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"\nbigvolume: interrupted; {_what_was_kept(args)}", file=sys.stderr)
        return 130
    except (BigVolumeError, ValueError) as error:
        print(f"bigvolume: error: {error}", file=sys.stderr)
        return 1
    except MemoryError:
        print("bigvolume: error: not enough memory for this volume", file=sys.stderr)
        return 1
    except OSError as error:
        name = f"{error.filename}: " if error.filename else ""
        print(f"bigvolume: error: {name}{error.strerror or error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


def run(argv=None) -> None:
    """The `bigvolume` command: :func:`main`, then exit with its status. After Ctrl-C (SIGTERM) the process ends at
    once with 130 (143), everything cleaned up in main: CPython 3.11 marks a KeyboardInterrupt that escaped a string
    ``exec()`` (dataclasses build their methods that way while modules load) as unhandled, even once caught, and
    would end the process by SIGINT (status -2) during shutdown instead. Once main returned otherwise, its work is
    done and said, and Ctrl-C (SIGTERM) is ignored while the interpreter shuts down (atexit handlers: logging, dask):
    a Python handler there printed a traceback, and CPython's finalization puts back the default action, which
    ended the process by the signal, 130 with the output complete; an ignored signal stays ignored."""
    code = None
    try:
        code = main(argv)
        if code not in (130, 143) and threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                signal.signal(number, signal.SIG_IGN)
    except KeyboardInterrupt:  # main had returned (it answers every interrupt inside it), or it never began
        if code is None:
            print("\nbigvolume: interrupted; nothing written", file=sys.stderr)
            code = 130
    if code in (130, 143):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
