"""Small synthetic volumes for tests and examples (larger ones: bigvolume.testing.quality)."""
from __future__ import annotations

import numpy as np


def gaussian_blob(shape, centre, sigma: float, peak: float = 1000.0, dtype=np.float32) -> np.ndarray:
    """A Gaussian blob; ``shape`` is (k, j, i), ``centre`` is in IJK voxel coordinates."""
    k, j, i = np.ogrid[:shape[0], :shape[1], :shape[2]]
    r2 = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2
    return (peak * np.exp(-r2 / (2.0 * sigma * sigma))).astype(dtype)


def rician_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``image`` as an MRI magnitude image sees it: |image + complex Gaussian noise of ``sigma`` per channel| (Rician
    in the object, Rayleigh in the air). Float64."""
    rng = np.random.default_rng(seed)
    return np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))


def write_noisy_mri(source, brain_mask, path, sigma_fraction: float = 0.04, seed: int = 2024):
    """Write the MRI ``source`` with Rician noise (sigma = ``sigma_fraction`` of its mean intensity inside the
    ``brain_mask`` file, fixed seed) to ``path``, uint8 and on the grid of the original; returns the brain mask
    (bool (k, j, i)). The tests and benchmarks say where their MRI lives; the package ships no data path."""
    import SimpleITK as sitk
    image = sitk.ReadImage(str(source))
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(brain_mask))) > 0
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    noisy = rician_noise(array, sigma_fraction * array[brain].mean(), seed)
    out = sitk.GetImageFromArray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    return brain
