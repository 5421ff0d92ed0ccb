"""Ctrl-C on every command and path: exit 130, one line, nothing written, inputs untouched. In particular while
vtkImageResize runs in memory, where a KeyboardInterrupt inside a vtk observer used to end the process with a
segmentation fault."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bigvolume as bv
from bigvolume.io import files as io

BIGVOLUME = [sys.executable, "-m", "bigvolume"]
GIB = 2**30


@pytest.fixture(scope="session")
def gib_volume(tmp_path_factory):
    """A 1 GiB uint16 volume (1024 x 1024 x 512) as a detached header and a sparse raw file: made in no time,
    read through the page cache like any file."""
    folder = tmp_path_factory.mktemp("gib")
    header = folder / "big.nhdr"
    header.write_text("NRRD0004\ntype: uint16\ndimension: 3\nsizes: 1024 1024 512\nendian: little\nencoding: raw\n"
                      "space: left-posterior-superior\nspace directions: (0.5,0,0) (0,0.5,0) (0,0,0.8)\n"
                      "space origin: (-10,4,2.5)\ndata file: big.raw\n")
    with open(folder / "big.raw", "wb") as raw:
        raw.truncate(GIB)
        raw.seek(GIB // 2)
        raw.write(np.arange(4096, dtype=np.uint16).tobytes())  # not all zeros
    return header


def start(args) -> subprocess.Popen:
    return subprocess.Popen(BIGVOLUME + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            # A shell running us in the background ignores SIGINT, and children inherit that: give
                            # the command the default, as a terminal would.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until_reading(process: subprocess.Popen, name: str, timeout: float = 120.0) -> None:
    """Until the process has a file whose path contains ``name`` open or memory-mapped (it has started work)."""
    deadline = time.monotonic() + timeout
    proc = Path(f"/proc/{process.pid}")
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if name in (proc / "maps").read_text():
                return
            if any(name in os.readlink(fd) for fd in (proc / "fd").iterdir()):
                return
        except OSError:
            pass  # a file descriptor closed while we looked
        time.sleep(0.01)
    raise AssertionError(f"the command never opened {name} (exit {process.poll()})")


def interrupt_and_check(process: subprocess.Popen, folder: Path, before: set) -> None:
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted; nothing written" in stderr and "Traceback" not in stderr and "Caught a Ctrl-C" not in stderr
    assert {p.name for p in folder.iterdir()} == before  # no output, no staging folder left behind


@pytest.mark.parametrize("backend, delay", [("vtk", 0.0), ("vtk", 0.4), ("vtk", 1.0), ("numpy", 0.0), ("numpy", 0.3)])
def test_ctrl_c_during_in_memory_resample_of_1_gib(tmp_path, gib_volume, backend, delay):
    # vtk: Ctrl-C while vtkImageResize runs (it used to end in a segmentation fault; about 6 s here, so every delay
    # lands inside it); numpy, the default backend, at factor 2: about 1.6 s after the mapping on a quiet machine
    # (at factor 4 it had become 0.4-1 s, and the 0.3 s delay sometimes came after the end).
    factor = "4" if backend == "vtk" else "2"
    process = start(["resample", gib_volume, tmp_path / "out.nrrd", "--factor", factor, "--no-stream",
                     "--backend", backend])
    wait_until_reading(process, "big.raw")  # memory-mapped: the resize starts now and runs for seconds
    time.sleep(delay)
    interrupt_and_check(process, tmp_path, set())


@pytest.fixture(scope="module")
def busy_inputs(tmp_path_factory):
    """Inputs that keep each command busy for a while: a 256^3 noisy volume (gzip: decoding takes time too) and a
    stack of 160 TIFF slices."""
    tifffile = pytest.importorskip("tifffile")
    folder = tmp_path_factory.mktemp("busy")
    rng = np.random.default_rng(3)
    array = rng.integers(0, 3000, (256, 256, 256)).astype(np.uint16)
    array[64:192, 64:192, 64:192] += 20000
    volume = io.write_volume(bv.Volume.from_array(array, spacing=(0.4, 0.4, 0.6)), folder / "noisy.nrrd")
    stack = folder / "stack"
    stack.mkdir()
    for k in range(160):
        tifffile.imwrite(stack / f"slice_{k:04d}.tif", rng.integers(0, 60000, (768, 768)).astype(np.uint16))
    return {"volume": volume, "stack": stack}


@pytest.mark.parametrize("command", ["dehaze", "reduce-bits", "preview", "import-stack", "resample-stream"])
def test_ctrl_c_in_every_command_exits_130_and_writes_nothing(tmp_path, busy_inputs, gib_volume, command):
    volume, stack = busy_inputs["volume"], busy_inputs["stack"]
    args, watched = {
        "dehaze": (["dehaze", volume, tmp_path / "out.nrrd"], "noisy.nrrd"),
        "reduce-bits": (["reduce-bits", gib_volume, tmp_path / "out.nrrd", "--bits", "8", "--no-stream"],
                        "big.raw"),
        "preview": (["preview", gib_volume, tmp_path / "out.png"], "big.raw"),
        "import-stack": (["import-stack", stack, tmp_path / "out.nrrd", "--factor", "2", "--threads", "1"],
                         "slice_0"),
        # the 1 GiB volume: about 2 s streamed (the 256^3 one took 0.2 s once open, as long as the delay below)
        "resample-stream": (["resample", gib_volume, tmp_path / "out.nhdr", "--stream", "--memory-limit", "1",
                             "--threads", "1"], "big.raw"),
    }[command]
    process = start(args)
    wait_until_reading(process, watched)
    time.sleep(0.2)
    interrupt_and_check(process, tmp_path, set())


def test_an_interrupt_wrapped_by_an_import_still_exits_130(tmp_path):
    # Ctrl-C landing in a class body's __set_name__ while a module loads (threadpoolctl, imported when the filter
    # starts) reaches us as a RuntimeError caused by the KeyboardInterrupt: still 130 and one line, not exit 1.
    script = ("import bigvolume.cli.commands as cli\n"
              "class Descriptor:\n"
              "    def __set_name__(self, owner, name):\n"
              "        raise KeyboardInterrupt\n"
              "def loading_a_module(args):\n"
              "    class Module:\n"
              "        field = Descriptor()\n"
              "cli._run_and_preview = loading_a_module\n"
              f"cli.run(['resample', {str(tmp_path / 'in.nrrd')!r}, {str(tmp_path / 'out.nrrd')!r}, '--factor', '2'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "bigvolume: interrupted; nothing written", done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_caught_interrupt_from_a_string_exec_still_exits_130():
    # CPython 3.11 flags a KeyboardInterrupt that left a string exec() (dataclasses build methods so while modules
    # load: a Ctrl-C landing there) as unhandled even when caught, and then ends the process by SIGINT (-2) at exit.
    # cli.run, the command's entry point, must still exit 130.
    script = ("import bigvolume.cli.commands as cli\n"
              "def interrupted(argv=None):\n"
              "    try:\n"
              "        exec('raise KeyboardInterrupt')\n"
              "    except KeyboardInterrupt:\n"
              "        return 130\n"
              "cli.main = interrupted\n"
              "cli.run()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("entry", ["installed command", "python -m bigvolume"])
def test_ctrl_c_while_the_libraries_load_exits_130_with_one_line(tmp_path, entry, number):
    """The first few tenths of a second go to imports (numpy, the operations), before main() handles Ctrl-C: the
    installed command died by SIGINT with a traceback; python -m bigvolume exited 130 without a word. SIGTERM then
    ended the process by the signal, without a word (143 and one line now)."""
    source = io.write_volume(bv.Volume.from_array(np.zeros((8, 8, 8), np.int16)), tmp_path / "in.nrrd")
    program = [str(Path(sys.executable).with_name("bigvolume"))] if entry == "installed command" else BIGVOLUME
    process = subprocess.Popen(program + ["resample", str(source), str(tmp_path / "out.nrrd")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_until_reading(process, "numpy")  # numpy's libraries mapped: cli.commands is being imported
    process.send_signal(number)
    _, stderr = process.communicate(timeout=120)
    word, code = ("terminated", 143) if number == signal.SIGTERM else ("interrupted", 130)
    assert process.returncode == code, stderr
    assert stderr.strip().splitlines() == [f"bigvolume: {word}; nothing written"], stderr
    assert [p.name for p in tmp_path.iterdir()] == ["in.nrrd"]


def test_ctrl_c_after_the_output_is_in_place_says_it_was_written(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the preview of a finished output was drawn (or dehaze's report measured) said "nothing
    written" with the complete output in place."""
    import bigvolume as bv
    from bigvolume.cli import commands
    from bigvolume.io import files
    from bigvolume.render import preview
    source = bv.write_volume(bv.Volume.from_array(np.zeros((8, 9, 10), np.uint16)), tmp_path / "in.nrrd")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(preview, "write_preview", interrupted)
    monkeypatch.setattr(files, "COMMITTED", [])
    code = commands.main(["resample", str(source), str(tmp_path / "out.nrrd"), "--factor", "2", "--preview",
                          str(tmp_path / "out.png"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and f"{tmp_path / 'out.nrrd'} written, complete" in err and "nothing written" not in err
    assert bv.read_volume(tmp_path / "out.nrrd").array.shape == (4, 5, 5)  # round(n / 2): 8 9 10 -> 4 5 5


@pytest.mark.parametrize("command", ["resample-stream", "resample-vtk", "import-stack", "pyramid"])
def test_sigterm_is_answered_as_ctrl_c_exit_143(tmp_path, busy_inputs, gib_volume, command):
    """SIGTERM (a batch system's stop, ``timeout``) ended the process where it stood, leaving hidden partial files
    (a pyramid's staging folder). It is answered as Ctrl-C: one line, nothing left; 143, as a process killed by it.
    The vtk run holds it as it holds Ctrl-C (a KeyboardInterrupt inside vtk's observer crashed the process)."""
    args, watched = {
        "resample-stream": (["resample", gib_volume, tmp_path / "out.nhdr", "--stream", "--memory-limit", "1",
                             "--threads", "1"], "big.raw"),
        "resample-vtk": (["resample", gib_volume, tmp_path / "out.nrrd", "--factor", "4", "--no-stream",
                          "--backend", "vtk"], "big.raw"),
        "import-stack": (["import-stack", busy_inputs["stack"], tmp_path / "out.nrrd", "--factor", "2",
                          "--threads", "1"], "slice_0"),
        "pyramid": (["pyramid", gib_volume, tmp_path / "out.ome.zarr"], "big.raw"),
    }[command]
    process = start(args)
    wait_until_reading(process, watched)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "bigvolume: terminated; nothing written", stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_sigterm_held_by_interrupt_as_flag_comes_out_as_terminated():
    """Inside interrupt_as_flag (vtk's long calls), SIGTERM waits like Ctrl-C and is raised as Terminated after."""
    script = ("import os, signal\n"
              "from bigvolume.core.progress import Terminated, interrupt_as_flag, terminate_as_interrupt\n"
              "terminate_as_interrupt()\n"
              "try:\n"
              "    with interrupt_as_flag() as flag:\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        print('held', flag.requested, flag.terminated)\n"
              "except Terminated:\n"
              "    print('terminated after the block')\n"
              "print(signal.getsignal(signal.SIGTERM).__name__)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split("\n")[:3] == ["held True True", "terminated after the block", "_raise_terminated"], \
        done.stdout + done.stderr
    # held as well when SIGINT is ignored (a shell's background job): SIGTERM does not depend on it
    ignoring = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert ignoring.stdout == done.stdout, ignoring.stdout + ignoring.stderr


def test_ctrl_c_during_interpreter_shutdown_keeps_the_status_without_a_traceback():
    """main returned (the output is complete); a Ctrl-C during the atexit handlers (logging's, dask's) printed
    "Exception ignored in atexit callback" with a traceback. It now ends the process at once with main's status."""
    script = ("import atexit, time\n"
              "import bigvolume.cli.commands as cli\n"
              "cli.main = lambda argv=None: 0\n"
              "atexit.register(lambda: time.sleep(5))\n"
              "atexit.register(lambda: print('shutting down', flush=True))\n"
              "cli.run([])\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout.readline() == "shutting down\n"  # atexit runs last-registered first: the sleep is next
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and stderr == ""


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_the_local_cluster_starts_closes_it_quietly(signal_number):
    """Ctrl-C while LocalCluster's workers started cut its constructor short: the cluster was never closed and the
    workers' leaked semaphores were reported on stderr after our one line. The start now finishes, then the cluster
    is closed and the interrupt raised."""
    pytest.importorskip("distributed")
    script = ("import os, signal, threading\n"
              "from bigvolume.core.progress import Terminated, terminate_as_interrupt\n"
              "from bigvolume.engine.distributed import DistributedRunner\n"
              "terminate_as_interrupt()\n"
              "runner = DistributedRunner(workers=2)\n"  # (dask imported here, before the timer runs)
              f"threading.Timer(0.3, os.kill, (os.getpid(), {int(signal_number)})).start()\n"
              "try:\n"
              "    with runner:\n"
              "        print('started')\n"
              "except KeyboardInterrupt as error:\n"
              "    print(type(error).__name__, runner.cluster.status.name)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          # (a background job ignores SIGINT, and its children inherit that: as a terminal would)
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    expected = "Terminated" if signal_number == signal.SIGTERM else "KeyboardInterrupt"
    assert done.stdout.split() == [expected, "closed"], done.stdout + done.stderr
    assert "leaked" not in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_as_the_finished_command_shuts_down_says_what_was_written(tmp_path, number):
    """Ctrl-C (SIGTERM) in the last tenth of a second, the output complete and in place: the process died by the
    signal during the interpreter's shutdown (status 130/143, nothing said, so "nothing written" to a script), or
    printed a KeyboardInterrupt traceback (a helper's campaign: 37 of 40 signals sent 0-70 ms after the pyramid
    appeared). One signal 0-70 ms after the output appears, eight runs: either the run was still in main (130/143,
    and it says the output was written, complete) or it had finished (0, nothing more said)."""
    source = tmp_path / "in.nrrd"
    bv.write_volume(bv.Volume.from_array(np.arange(24 * 20 * 16, dtype=np.uint16).reshape(24, 20, 16)), source)
    output = tmp_path / "out.ome.zarr"
    for delay in np.arange(8) * 0.01:
        shutil.rmtree(output, ignore_errors=True)
        process = start(["pyramid", source, output, "--chunks", "8", "--quiet"])
        while process.poll() is None and not output.exists():
            time.sleep(0.0005)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(number)
        _, stderr = process.communicate()
        assert output.is_dir() and "Traceback" not in stderr, stderr
        if process.returncode != 0:
            assert process.returncode == 128 + number and f"{output} written, complete" in stderr, (
                delay, process.returncode, stderr)
        else:
            assert stderr == ""


def test_ctrl_c_names_only_outputs_that_are_still_there(tmp_path, monkeypatch):
    """preview's downsampled temporary file, committed and then deleted with its folder, was named as written and
    complete after a Ctrl-C."""
    import argparse
    from bigvolume.cli import commands
    from bigvolume.io import files
    kept = tmp_path / "out.nrrd"
    kept.write_bytes(b"x")
    monkeypatch.setattr(files, "COMMITTED", [tmp_path / "gone" / "preview.nhdr", kept, kept])
    assert commands._what_was_kept(argparse.Namespace()) == f"{kept} written, complete, before it"
    monkeypatch.setattr(files, "COMMITTED", [tmp_path / "gone" / "preview.nhdr"])
    assert commands._what_was_kept(argparse.Namespace()) == "nothing written"
