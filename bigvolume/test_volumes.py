"""Small synthetic volumes for tests and examples (larger ones: bigvolume.quality)."""
from __future__ import annotations

import numpy as np


def gaussian_blob(shape, centre, sigma: float, peak: float = 1000.0, dtype=np.float32) -> np.ndarray:
    """A Gaussian blob; ``shape`` is (k, j, i), ``centre`` is in IJK voxel coordinates."""
    k, j, i = np.ogrid[:shape[0], :shape[1], :shape[2]]
    r2 = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2
    return (peak * np.exp(-r2 / (2.0 * sigma * sigma))).astype(dtype)
