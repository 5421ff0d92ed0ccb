"""What the C libraries under SimpleITK print: read while they decode (their only word that data are damaged, for
some codecs), given back when it is not theirs, silenced when it is chatter."""
import contextlib
import functools
import os
import re
import sys
import tempfile
import threading

from ..core.errors import VolumeFileError

# The C libraries under SimpleITK print on file descriptors 2 (libtiff, MetaIO, ...) and 1 (libjpeg's messages, through
# ITK's JPEG reader), which one process has once: threads that silence or read them take turns.
_OUTPUT_LOCK = threading.RLock()


class CapturedText:
    text = ""  # what the libraries printed, once the block has ended


@functools.lru_cache(maxsize=1)
def _c_library():
    import ctypes
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):  # (Windows: no such handle; its C streams are not flushed here)
        return None


def _flush_c_streams() -> None:
    """C's stdout is buffered when it is no terminal: what a library printed must reach the descriptor in time."""
    library = _c_library()
    with contextlib.suppress(AttributeError):
        library.fflush(None)


@contextlib.contextmanager
def output_captured(fd: int = 2):
    """What the C libraries print on ``fd`` (2: stderr, 1: stdout) while the block runs, in ``.text`` of the object
    yielded (empty when the process has no such real descriptor, as in some embedded interpreters). Python's own
    output in the meantime (another thread's progress bar) is captured too: the caller gives back what is not the
    libraries' (:func:`give_back`)."""
    captured = CapturedText()
    stream = sys.stdout if fd == 1 else sys.stderr
    with _OUTPUT_LOCK:
        try:
            stream.flush()
            _flush_c_streams()
            saved = os.dup(fd)
        except (OSError, ValueError, AttributeError):
            yield captured
            return
        try:
            with tempfile.TemporaryFile() as sink:
                os.dup2(sink.fileno(), fd)
                try:
                    yield captured
                finally:
                    with contextlib.suppress(OSError, ValueError, AttributeError):
                        stream.flush()
                    _flush_c_streams()
                    os.dup2(saved, fd)
                    sink.seek(0)
                    captured.text = sink.read().decode("utf-8", "replace")
        finally:
            os.close(saved)


def give_back(printed: str, fd: int = 2) -> None:
    """Captured output that was not a library's (another thread's progress bar, a report) goes on to ``fd``."""
    if printed:
        with contextlib.suppress(OSError):
            os.write(fd, printed.encode())


@contextlib.contextmanager
def library_quiet():
    """SimpleITK's readers print warnings of their own on stderr (MetaIO's ``M_ReadElementsData``, NrrdIO, ...);
    we turn failures into one line of ours, so their chatter is silenced while they run."""
    import SimpleITK as sitk
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    with output_captured():
        yield


# libjpeg's words (ITK's JPEG reader prints them on stdout, GDCM's decoder on stderr, and both return the image as
# good) for data it could not decode as written: its corrupt-data warnings, and errors after which what was decoded
# is kept
LIBJPEG_DAMAGE = re.compile(r"^((?:Corrupt JPEG data|Premature end of JPEG file|Unsupported JPEG process|Invalid SOS "
                            r"parameters|Inconsistent progression sequence|Bogus|Huffman table)[^\n]*)\n?",
                            re.MULTILINE)


def refuse_jpeg_damage(path, printed: str, fd: int, what: str = "the slice") -> None:
    """Refused when libjpeg said, in ``printed`` (captured from ``fd`` while ``path`` was decoded), that the data
    are damaged; what else was printed goes on to ``fd``."""
    damage = LIBJPEG_DAMAGE.search(printed)
    give_back(LIBJPEG_DAMAGE.sub("", printed), fd)
    if damage is not None:
        raise VolumeFileError(f"{path}: damaged JPEG data (the decoder says: {damage.group(1).strip()}); {what} "
                              "would be read garbled")
