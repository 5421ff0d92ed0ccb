"""The GPU path (bigvolume.gpu) run with numpy as its array module: the same code that runs on CuPy, against the
CPU reference (vtkImageResize for Lanczos, the numpy backend for the others), in memory and
streamed from files in small slabs; and ``--device auto|cpu|cuda`` on a machine without CUDA. The last test
runs on a real GPU only where CuPy finds one."""
import logging
import subprocess
import sys

import numpy as np
import pytest

import bigvolume as bv
from bigvolume.engine import gpu
from bigvolume.testing import quality
from bigvolume.core.errors import BigVolumeError, Cancelled
from bigvolume.io.slabs import open_slabs
from bigvolume.engine.stream import stream_to_file

HIDE_CUPY = "import sys; sys.modules['cupy'] = None; "


def volume_of(dtype, shape=(23, 31, 37)):
    """An odd-shaped micro-CT-like phantom (fine struts, noisy air: plenty of high frequencies) in ``dtype``."""
    base = quality.microct_phantom(max(shape))[:shape[0], :shape[1], :shape[2]].astype(np.float64)
    if dtype == np.float32:
        array = (base / 1000.0 - 7.5).astype(np.float32)
    elif dtype == np.int16:
        array = (base - 20000).astype(np.int16)
    else:
        array = base.astype(dtype)
    return bv.Volume.from_array(array, spacing=(0.5, 0.7, 1.1), origin=(3.0, -2.0, 10.0),
                                direction=np.diag([1.0, -1.0, 1.0]))


def assert_close_to_reference(result, reference, source):
    """Within 1e-4 of the input's value range (integers: one rounding step of a 16-bit range)."""
    assert result.dtype == reference.dtype and result.shape == reference.shape
    span = float(source.max()) - float(source.min())
    error = np.abs(result.astype(np.float64) - reference.astype(np.float64)).max()
    assert error <= 1e-4 * span, (error, span)
    return error


@pytest.mark.parametrize("method", gpu.DEVICE_METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int16])
# integer, fractional (between vtk's kernel table steps), one axis kept, and above 4 (where vtk drops lobes)
@pytest.mark.parametrize("factors", [(2, 2, 2), (3, 3, 3), (2.5, 1.5, 3.2), (1, 2, 4), (6, 2.2, 4.5)], ids=str)
def test_array_code_equals_the_cpu_path(method, dtype, factors):
    volume = volume_of(dtype)
    before = volume.array.copy()
    # Lanczos is held to vtkImageResize, the definition of its kernel (the oracle)
    reference = bv.resample(volume, factors, method=method, backend="vtk" if method == "lanczos" else None)
    result = gpu.resample_array(volume.array, factors, method, xp=np)
    assert_close_to_reference(result, reference.array, volume.array)
    if method in ("max", "nearest"):
        np.testing.assert_array_equal(result, reference.array)  # they only pick input values
    np.testing.assert_array_equal(volume.array, before)  # the input is only read


@pytest.mark.parametrize("method", ["lanczos", "gaussian", "max"])
def test_one_slice_slabs_and_many_matrix_blocks_change_nothing(monkeypatch, method):
    volume = volume_of(np.uint16, (29, 26, 81))
    reference = gpu.resample_array(volume.array, (2.5, 2, 3), method, xp=np)
    monkeypatch.setattr(gpu, "block_inputs", lambda xp: 6)  # an axis of 81 voxels in blocks of a few outputs
    kernel = bv.methods.kernels.axis_kernel("lanczos", 81, 2.5, bv.core.geometry.output_size(81, 2.5))
    blocks = bv.methods.kernels.BandMatrix(kernel, np, np.float32, 6).blocks
    assert len(blocks) > 3 and all(c1 - c0 < 81 for _, _, c0, c1, _, _ in blocks)
    seen = []
    # A 1-byte memory limit: the streaming plan falls back to one slice per slab.
    small = gpu.resample_array(volume.array, (2.5, 2, 3), method, xp=np, memory_limit=1,
                               progress=lambda f, m: seen.append(m))
    np.testing.assert_array_equal(small, reference)
    assert "streaming 29 slabs" in seen
    assert_close_to_reference(small, bv.resample(volume, (2.5, 2, 3), method=method).array, volume.array)


def test_vector_volumes_and_float_outputs():
    rgb = np.stack([volume_of(np.uint16).array // 200 + c for c in range(3)], axis=-1).astype(np.uint8)
    volume = bv.Volume.from_array(rgb)
    np.testing.assert_array_equal(gpu.resample_array(rgb, (2, 2, 2), "lanczos", xp=np),
                                  bv.resample(volume, 2).array)
    floats = gpu.resample_array(rgb, (2, 2, 2), "lanczos", np.float32, xp=np)
    assert floats.dtype == np.float32
    assert_close_to_reference(floats, bv.resample(volume, 2, dtype=np.float32).array, rgb)


@pytest.mark.parametrize("method", ["lanczos", "mean", "max"])
def test_whole_array_on_the_device_equals_the_cpu_path(method):
    volume = volume_of(np.float32)
    result = gpu.downsample_on_device(volume.array, (2, 3, 1.5), method, xp=np)
    assert_close_to_reference(result, bv.resample(volume, (2, 3, 1.5), method=method).array, volume.array)


@pytest.mark.parametrize("suffix", [".nhdr", ".nrrd"])
def test_streamed_file_through_the_array_code_matches_the_cpu_file(tmp_path, suffix):
    volume = volume_of(np.int16, (40, 27, 31))
    source = bv.write_volume(volume, tmp_path / f"in{suffix}")
    cpu = bv.resample_file(source, tmp_path / "cpu.nhdr", (2, 2.5, 3), memory_limit=1, stream=True)
    with open_slabs(source) as reader:
        plan = stream_to_file(reader, tmp_path / "xp.nhdr", (2, 2.5, 3), "lanczos", memory_limit=1, backend=gpu.ArrayBackend(np))
    assert plan.slab_slices == 1 and plan.slabs == 40
    expected, got = bv.read_volume(cpu.output_path), bv.read_volume(tmp_path / "xp.nhdr")
    assert got.geometry == expected.geometry  # spacing, origin, direction
    np.testing.assert_allclose(got.geometry.spacing, (1.0, 1.75, 3.3))
    assert_close_to_reference(got.array, expected.array, volume.array)


def test_cancel_while_streaming_through_the_array_code_leaves_no_output(tmp_path):
    source = bv.write_volume(volume_of(np.uint16, (30, 20, 20)), tmp_path / "in.nhdr")
    calls = []

    def cancel_at_third(fraction, message):
        calls.append(fraction)
        return len(calls) < 3

    with open_slabs(source) as reader, pytest.raises(Cancelled):
        stream_to_file(reader, tmp_path / "out.nhdr", (2, 2, 2), "lanczos", memory_limit=1, backend=gpu.ArrayBackend(np),
                       progress=cancel_at_third)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nhdr", "in.raw"]


# --- choosing the device without CUDA -----------------------------------------------------------------------------
@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError, as where it is not installed
    gpu.probe_cuda.cache_clear()
    yield
    gpu.probe_cuda.cache_clear()


def test_devices_without_cupy(no_cupy, caplog):
    with caplog.at_level(logging.WARNING, logger="bigvolume"):
        assert gpu.choose_device("cpu") == "cpu"
        assert not caplog.records
        assert gpu.choose_device("auto") == "cpu"
    assert [r.getMessage() for r in caplog.records] == ["no CUDA device (cupy not installed); using the CPU"]
    with pytest.raises(BigVolumeError, match=r"device cuda: no CUDA device \(cupy not installed\)"):
        gpu.choose_device("cuda")
    with pytest.raises(BigVolumeError, match="unknown device 'gpu'"):
        gpu.choose_device("gpu")
    volume = volume_of(np.uint16, (12, 12, 12))
    np.testing.assert_array_equal(bv.resample(volume, 2, device="auto").array, bv.resample(volume, 2).array)
    with pytest.raises(BigVolumeError, match="no CUDA device"):
        bv.resample(volume, 2, device="cuda")


def run_cli(*args):
    code = HIDE_CUPY + "from bigvolume.cli.commands import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_command_line_device_option_without_cuda(tmp_path):
    source = bv.write_volume(volume_of(np.uint16, (20, 22, 24)), tmp_path / "in.nrrd")
    cpu = run_cli("resample", source, tmp_path / "cpu.nrrd", "--device", "cpu", "--factor", "2")
    assert cpu.returncode == 0 and cpu.stderr == "", cpu.stderr

    # Not asked for: the GPU when there is one, and on a machine without one the summary and nothing about CUDA.
    plain = run_cli("resample", source, tmp_path / "plain.nrrd", "--factor", "2")
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    assert plain.stdout.startswith(f"{tmp_path / 'plain.nrrd'}: 24x22x20 -> 12x11x10") and "CUDA" not in plain.stdout
    assert plain.stdout.count("\n") == 1
    auto = run_cli("resample", source, tmp_path / "auto.nrrd", "--factor", "2", "--device", "auto")  # asked for
    assert auto.returncode == 0
    assert auto.stderr.strip().splitlines() == ["bigvolume: note: no CUDA device (cupy not installed); using the CPU"]
    for name in ("auto.nrrd", "plain.nrrd"):
        np.testing.assert_array_equal(bv.read_volume(tmp_path / name).array, bv.read_volume(tmp_path / "cpu.nrrd").array)

    cuda = run_cli("resample", source, tmp_path / "cuda.nrrd", "--device", "cuda")
    assert cuda.returncode == 1
    lines = cuda.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigvolume: error: device cuda: no CUDA device (cupy not installed)")
    assert not (tmp_path / "cuda.nrrd").exists()

    wrong = run_cli("resample", source, tmp_path / "x.nrrd", "--device", "gpu")
    assert wrong.returncode == 2 and "invalid choice: 'gpu'" in wrong.stderr


# --- on a real GPU, where there is one -----------------------------------------------------------------------------
@pytest.mark.skipif(gpu.probe_cuda()[0] is None, reason=f"no CUDA device ({gpu.probe_cuda()[1]})")
@pytest.mark.parametrize("method", gpu.DEVICE_METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_cuda_equals_the_cpu_path(tmp_path, method, dtype):
    volume = volume_of(dtype, (61, 47, 53))
    for factors in [(2, 2, 2), (2.5, 1.5, 3.2)]:
        reference = bv.resample(volume, factors, method=method).array
        assert_close_to_reference(bv.resample(volume, factors, method=method, device="cuda").array, reference,
                                  volume.array)
    source = bv.write_volume(volume, tmp_path / "in.nhdr")
    report = bv.resample_file(source, tmp_path / "out.nhdr", 2, method=method, device="cuda", stream=True,
                              memory_limit=1)
    assert report.device != "cpu" and report.device in report.summary()
    assert_close_to_reference(bv.read_volume(tmp_path / "out.nhdr").array, bv.resample(volume, 2, method=method).array,
                              volume.array)


# --- the CUDA branch's orchestration, with a stand-in CuPy -----------------------------------------------------------
class _DeviceArray(np.ndarray):
    """numpy memory playing device memory: copies to and from the host go through streams."""

    def set(self, host, stream=None):
        assert isinstance(host, _Pinned), "uploads must come from pinned buffers to run asynchronously"
        assert host.shape == self.shape and host.dtype == self.dtype
        stream.pending.append(lambda: np.copyto(self.view(np.ndarray), host))

    def get(self, stream=None, out=None, blocking=True):
        assert not blocking and isinstance(out, _Pinned)
        source = np.array(self)  # what the device holds when the copy is queued (stream order)
        stream.pending.append(lambda: np.copyto(out.view(np.ndarray), source))
        return out


class _Pinned(np.ndarray):
    pass


class _Stream:
    """Copies queued on a stream happen only when an event recorded after them is waited for: a missing
    synchronisation shows up as stale data."""

    def __init__(self, non_blocking=False):
        self.pending = []

    def record(self):
        stream, count = self, len(self.pending)

        class Event:
            def synchronize(self):
                for copy in stream.pending[:count]:
                    copy()
                del stream.pending[:count]
        return Event()

    def wait_event(self, event):
        event.synchronize()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _stand_in_cupy():
    def to_device(function):
        return lambda *args, **kwargs: np.asarray(function(*args, **kwargs)).view(_DeviceArray)

    cupy = type(sys)("cupy")
    for name in ("take", "maximum", "add", "matmul"):
        setattr(cupy, name, getattr(np, name))
    cupy.empty, cupy.asarray = to_device(np.empty), to_device(np.array)
    runtime = type(sys)("cupy.cuda.runtime")
    runtime.getDeviceCount = lambda: 1
    runtime.memGetInfo = lambda: (8 * 2**30, 16 * 2**30)
    runtime.getDeviceProperties = lambda index: {"name": b"Stand-in GPU"}
    device = type("Device", (), {"id": 0, "synchronize": lambda self: None})
    cupy.cuda = type(sys)("cupy.cuda")
    cupy.cuda.Stream, cupy.cuda.Device, cupy.cuda.runtime = _Stream, device, runtime
    cupyx = type(sys)("cupyx")
    cupyx.empty_pinned = lambda shape, dtype=float: np.empty(shape, dtype).view(_Pinned)
    return cupy, cupyx


@pytest.mark.parametrize("method", ["lanczos", "max"])
def test_the_cuda_branch_with_a_stand_in_cupy_that_defers_copies(monkeypatch, tmp_path, method):
    cupy, cupyx = _stand_in_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    gpu.probe_cuda.cache_clear()
    try:
        assert gpu.choose_device("auto") == "cuda" and gpu.device_name() == "Stand-in GPU"
        volume = volume_of(np.uint16, (33, 21, 26))
        reference = bv.resample(volume, (2, 2.5, 3), method=method)
        assert_close_to_reference(bv.resample(volume, (2, 2.5, 3), method=method, device="cuda").array,
                                  reference.array, volume.array)
        source = bv.write_volume(volume, tmp_path / "in.nhdr")
        report = bv.resample_file(source, tmp_path / "out.nhdr", (2, 2.5, 3), method=method, device="cuda",
                                  stream=True, memory_limit=1)  # one slice per slab: many uploads and downloads
        assert report.stream_plan.slabs == 33 and "on Stand-in GPU" in report.summary()
        result = bv.read_volume(tmp_path / "out.nhdr")
        assert result.geometry == reference.geometry
        assert_close_to_reference(result.array, reference.array, volume.array)
    finally:
        gpu.probe_cuda.cache_clear()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["mean", "gaussian", "lanczos"])
@pytest.mark.parametrize("out", [None, np.int16])
def test_nan_reaches_the_voxels_the_cpu_path_says_and_integers_round_within_one(method, out, seed):
    """A mean's zero-weight taps (they pad its rows to one width) counted as reading a NaN on the array path: the
    next block's output became NaN, 0 in an integer output, where the CPU path skips them. Integer outputs round
    within 1 of the CPU's (a sum landing on .5 rounds either way: the paths add in another order)."""
    rng = np.random.default_rng(seed)
    array = rng.uniform(-500, 500, (21, 23, 47)).astype(np.float32)
    for _ in range(2):  # two NaN voxels near a corner (Lanczos reaches 32 voxels)
        array[tuple(rng.integers(0, 4, 3))] = np.nan
    factors = tuple(float(f) for f in rng.choice([1.5, 2.0, 2.5, 3.0], 3))
    reference = bv.resample(bv.Volume.from_array(array), factors, method=method, dtype=out).array
    for result in (gpu.resample_array(array, factors, method, out, xp=np),
                   gpu.downsample_on_device(array, factors, method, out, xp=np)):
        assert result.dtype == reference.dtype and result.shape == reference.shape
        if out is None:
            np.testing.assert_array_equal(np.isnan(result), np.isnan(reference))
            finite = ~np.isnan(reference)
            assert finite.any() and np.abs(result[finite] - reference[finite]).max() <= 1e-4 * 1000
        else:
            assert np.abs(result.astype(np.int64) - reference.astype(np.int64)).max() <= 1


def test_the_array_entry_points_limit_factors_and_give_native_types_as_the_cpu_path():
    """A factor above its axis's length put the one voxel off-centre (46.6 where the CPU path gives 30); a
    big-endian input came back big-endian."""
    array = (np.arange(7, dtype=np.float32) * 10).reshape(1, 1, 7)
    expected = bv.downsample_array(array, (16, 1, 1), "lanczos")
    for result in (gpu.resample_array(array, (16, 1, 1), "lanczos", xp=np),
                   gpu.downsample_on_device(array, (16, 1, 1), "lanczos", xp=np)):
        np.testing.assert_allclose(result, expected, rtol=1e-6)
    big = np.arange(64, dtype=">u2").reshape(4, 4, 4)
    for result in (gpu.resample_array(big, 2, "mean", xp=np), gpu.downsample_on_device(big, 2, "mean", xp=np)):
        assert result.dtype == np.dtype(np.uint16) and result.dtype.isnative
        np.testing.assert_array_equal(result, bv.downsample_array(big.astype(np.uint16), 2, "mean"))


@pytest.mark.parametrize("case", ["complex", "2-D", "no components", "5-D"])
def test_the_array_path_refuses_what_the_cpu_path_refuses(case):
    """The array (GPU) path took a complex volume and dropped its imaginary part (the CPU refuses it), and gave raw
    numpy errors for other shapes."""
    from bigvolume.engine import gpu
    array = {"complex": np.ones((4, 5, 6), np.complex64), "2-D": np.ones((5, 6), np.float32),
             "no components": np.ones((4, 5, 6, 0), np.float32), "5-D": np.ones((2, 4, 5, 6, 1), np.float32)}[case]
    for run in (lambda: gpu.resample_array(array, 2, "lanczos", xp=np),
                lambda: bv.downsample_array(array, 2, "lanczos")):
        with pytest.raises(bv.BigVolumeError, match="a volume is .k, j, i. or .k, j, i, components. of real numbers"):
            run()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int16])
def test_the_array_path_takes_one_component_and_gives_native_types(dtype):
    """(k, j, i, 1) failed to broadcast on the array path (the CPU path filters it as a scalar volume); a
    big-endian output type came back big-endian."""
    from bigvolume.engine import gpu
    array = np.arange(6 * 8 * 10).reshape(6, 8, 10, 1).astype(dtype)
    np.testing.assert_array_equal(gpu.resample_array(array, 2, "mean", xp=np),
                                  bv.downsample_array(array, 2, "mean"))
    out = gpu.resample_array(array[..., 0].astype(np.dtype(dtype).newbyteorder(">")), 2, "mean", xp=np,
                             out_dtype=">f4")
    assert out.dtype == np.float32 and out.dtype.isnative


@pytest.mark.parametrize("method", ["nearest", "max", "mean", "lanczos"])
def test_on_device_64_bit_integers_are_picked_exactly_or_refused_as_on_the_cpu(method):
    """downsample_on_device summed nearest's one tap in float64 (2^60 + odd values came back even, 127 off) and
    rounded the sums of integers beyond 2^48 without a word, where the CPU path picks or refuses."""
    from bigvolume.engine import gpu
    rng = np.random.default_rng(1)
    array = (2 ** 60 + 2 * rng.integers(0, 1000, (8, 10, 12)) + 1).astype(np.int64)
    if method in ("nearest", "max"):
        np.testing.assert_array_equal(gpu.downsample_on_device(array, 2, method, xp=np),
                                      bv.downsample_array(array, 2, method))
    else:
        for run in (lambda: gpu.downsample_on_device(array, 2, method, xp=np),
                    lambda: bv.downsample_array(array, 2, method)):
            with pytest.raises(bv.BigVolumeError, match="beyond 2\\^48"):
                run()
