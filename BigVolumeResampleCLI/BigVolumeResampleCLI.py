#!/usr/bin/env python-real
"""BigVolumeResampleCLI: Slicer's scripted CLI module for the anti-aliased resample (its interface is the .xml
beside this file). Slicer runs it out of process with its own Python ("python-real") as

    BigVolumeResampleCLI.py --returnparameterfile PARAMS --factor 2,2,2 --method lanczos --device auto IN.nrrd OUT.nrrd

(flags first, then the images by index; IN and OUT are temporary .nrrd files Slicer writes and reads back), and
shows the ``<filter-progress>`` lines this prints as a progress bar; Cancel kills the process. Runs the same way
from a shell. The work is done by the ``bigvolume`` core, on an NVIDIA GPU through CuPy when there is one.
"""
import argparse
import logging
import os
import re
import sys
import time

NAME = "BigVolumeResampleCLI"
DEVICES = ("auto", "cpu", "cuda")


def find_core() -> None:
    """Put the ``bigvolume`` package first on sys.path: in the installed extension (and single-config build trees)
    it sits in ``qt-scripted-modules`` beside this ``cli-modules`` folder; multi-config build trees (Visual Studio,
    Xcode) put this script one folder deeper, ``cli-modules/<CONFIG>/``; in the source tree it is one folder up."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(here, os.pardir, "qt-scripted-modules"),
                   os.path.join(here, os.pardir, os.pardir, "qt-scripted-modules"), os.path.join(here, os.pardir)):
        if os.path.isfile(os.path.join(folder, "bigvolume", "__init__.py")):
            sys.path.insert(0, os.path.normpath(folder))
            return


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (Slicer shows a CLI's stderr as its error text)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def float_vector(text: str) -> tuple:
    """A SEM float-vector: "2,2,2" (Slicer's form), also "2.0, 2.0, 2.0" (slicer.cli.run given a list) or "2 2 1"
    (the command line's spelling, typed into the panel's line edit, which Slicer passes as it is), or one number
    for all axes."""
    try:
        values = tuple(float(part) for part in re.split(r"\s*,\s*|\s+", text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"one or three factors (I, J, K), got {len(values)}: {text!r}")
    return values


def build_parser(methods) -> argparse.ArgumentParser:
    """The arguments of BigVolumeResampleCLI.xml, as Slicer passes them."""
    parser = OneLineParser(prog=NAME, description="Anti-aliased downsampling on the block-centred grid, on the GPU "
                                                  "when there is one (Slicer scripted CLI).")
    parser.add_argument("inputVolume", help="input volume file")
    parser.add_argument("outputVolume", help="output volume file")
    parser.add_argument("--factor", type=float_vector, default=(2.0, 2.0, 2.0),
                        help="downsampling factors I,J,K (default 2,2,2)")
    parser.add_argument("--method", choices=list(methods), default="lanczos", help="resampling method")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto (default), cpu or cuda")
    # Slicer adds this when the XML declares output values (here deviceUsed and summary): "name = value" lines.
    parser.add_argument("--returnparameterfile", help=argparse.SUPPRESS)
    # Slicer passes this to shared-library CLIs only; accepted so that any caller's command line works.
    parser.add_argument("--processinformationaddress", help=argparse.SUPPRESS)
    return parser


class FilterProgress:
    """Slicer's progress protocol on stdout: a filter-start block, filter-progress values (flushed at once:
    Slicer reads the pipe as the process runs), a filter-end block."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.last = -1.0

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, comment: str) -> None:
        self._print(f"<filter-start>\n<filter-name>{NAME}</filter-name>\n<filter-comment>{comment}</filter-comment>\n"
                    "</filter-start>")

    def __call__(self, fraction: float, message: str = "") -> bool:
        if fraction >= 1.0 or fraction - self.last >= 0.01:  # Slicer redraws on each line: not more than needed
            self.last = fraction
            self._print(f"<filter-progress>{fraction:.4f}</filter-progress>")
        return True

    def end(self, seconds: float) -> None:
        self._print(f"<filter-end>\n<filter-name>{NAME}</filter-name>\n<filter-time>{seconds:.3f}</filter-time>\n"
                    "</filter-end>")


def joined_values(argv) -> list:
    """``--factor VALUE`` as ``--factor=VALUE``: Slicer passes flag and value as two arguments, and argparse takes a
    value that starts with a minus ("-2,2,2") for another option."""
    argv, joined = list(argv), []
    while argv:
        item = argv.pop(0)
        joined.append(f"{item}={argv.pop(0)}" if item == "--factor" and argv else item)
    return joined


def returned_summary(report, input_path: str) -> str:
    """The summary Slicer shows: grids, method and time, and the notes (a label map smoothed, NaN in the output),
    without the temporary files' names and sizes; one line (Slicer's parser throws on an empty line)."""
    notes = [note.replace(f"{input_path}: ", "") for note in report.notes]
    return " ".join(" | ".join([report.summary(files=False)] + notes).split())


def main(argv=None) -> int:
    find_core()
    from bigvolume import BigVolumeError, Cancelled, resample_file
    from bigvolume.slicer import DEVICE_METHODS

    # Slicer sets no UTF-8 mode for python-real: on Windows a piped stdout is in the ANSI code page, and the summary
    # names the output's path (under %TEMP%, which holds the user's name)
    sys.stdout.reconfigure(errors="backslashreplace")
    args = build_parser(DEVICE_METHODS).parse_args(joined_values(sys.argv[1:] if argv is None else argv))
    # The core's notes (e.g. no GPU, so the CPU) go to stdout: Slicer logs anything on stderr as an error.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"{NAME}: note: %(message)s"))
    logger = logging.getLogger("bigvolume")
    logger.addHandler(handler)
    logger.propagate = False

    factor = args.factor[0] if len(args.factor) == 1 else args.factor
    progress = FilterProgress()
    started = time.perf_counter()
    progress.start(f"{args.method}, factor {','.join(f'{f:g}' for f in args.factor)}, device {args.device}")
    try:
        # Uncompressed: Slicer reads the file back at once and deletes it (a NIfTI, from a shell, as its name says).
        nifti = args.outputVolume.lower().endswith((".nii", ".nii.gz"))
        report = resample_file(args.inputVolume, args.outputVolume, factor, method=args.method, device=args.device,
                               compress=None if nifti else False, progress=progress)
    except Cancelled:
        print(f"{NAME}: cancelled; nothing written", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{NAME}: error: not enough memory for this volume", file=sys.stderr)
        return 1
    except (BigVolumeError, ValueError, OSError) as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return 1
    progress.end(time.perf_counter() - started)
    print(report.summary(), flush=True)
    if args.returnparameterfile:
        with open(args.returnparameterfile, "w", encoding="utf-8") as returned:  # Slicer reads it as UTF-8
            returned.write(f"deviceUsed = {report.device}\nsummary = {returned_summary(report, args.inputVolume)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
