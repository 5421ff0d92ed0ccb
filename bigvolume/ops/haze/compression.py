"""gzip and zstd sizes of the voxel data before and after haze removal, for the report: exact, or estimated from a
sample of slices; compressed on a thread while the pipeline runs."""
from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...core.memory import format_bytes


COMPRESSION_SAMPLE_BYTES = 8 * 2**20   # compressed-size report: exact up to this size, else from a slice sample


class CompressedSizes:
    """gzip (level 6) and, when the ``zstandard`` package is installed, zstd sizes of the raw voxel bytes before and
    after; from every ``step``-th slice when the volume is larger than COMPRESSION_SAMPLE_BYTES (then scaled).
    Compression runs on a thread (zlib and zstd release the GIL), overlapping the pipeline."""

    def __init__(self, slices: int, slice_bytes: int):
        self.step = max(1, int(np.ceil(slices * slice_bytes / COMPRESSION_SAMPLE_BYTES)))
        self.total_bytes, self.sampled_bytes = slices * slice_bytes, 0
        self.compressors = {"gzip": [zlib.compressobj(6), zlib.compressobj(6)]}
        try:
            import zstandard
        except ImportError:
            pass
        else:
            self.compressors["zstd"] = [zstandard.ZstdCompressor().compressobj() for _ in range(2)]
        self.sizes = {name: [0, 0] for name in self.compressors}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="bigvolume-compressed-size")
        self._jobs = []

    def add(self, k0: int, before: np.ndarray, after: np.ndarray) -> None:
        picks = np.arange(-k0 % self.step, before.shape[0], self.step)
        if picks.size:
            data = [np.ascontiguousarray(before[picks]), np.ascontiguousarray(after[picks])]
            self.sampled_bytes += data[0].nbytes
            self._jobs.append(self._thread.submit(self._compress, data))

    def _compress(self, data) -> None:
        for name, pair in self.compressors.items():
            for index in range(2):
                self.sizes[name][index] += len(pair[index].compress(data[index].data))

    def finish(self) -> dict:
        """{"gzip": (before, after), "zstd": ...} in bytes."""
        for job in self._jobs:
            job.result()
        self._thread.shutdown()
        scale = self.total_bytes / max(1, self.sampled_bytes)
        return {name: tuple(round((self.sizes[name][i] + len(pair[i].flush())) * scale) for i in range(2))
                for name, pair in self.compressors.items()}

    def how(self) -> str:
        """How the sizes were measured, when not on every voxel."""
        if self.step == 1:
            return ""
        return (f"estimated from 1 slice in {self.step} ({format_bytes(self.sampled_bytes)} of "
                f"{format_bytes(self.total_bytes)})")
