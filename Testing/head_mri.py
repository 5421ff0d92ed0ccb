"""The real head MRI some tests use: Debian's mricron-data package (whole head with air around it) and its brain
mask. A test data location, so it lives here, not in the package (benchmarks/benchlib.py names it for the
benchmarks, which never import the test suite)."""
from pathlib import Path

# rician_noise too: the haze tests reach both through this module (`import head_mri as test_volumes`).
from bigvolume.testing.phantoms import rician_noise, write_noisy_mri  # noqa: F401

HEAD_MRI = "/usr/share/mricron/templates/ch2.nii.gz"
HEAD_BRAIN_MASK = "/usr/share/mricron/templates/ch2bet.nii.gz"


def installed() -> bool:
    return Path(HEAD_MRI).is_file() and Path(HEAD_BRAIN_MASK).is_file()


def noisy_head(path, sigma_fraction: float = 0.04, seed: int = 2024):
    """HEAD_MRI with Rician noise written to ``path`` (see write_noisy_mri); returns the brain mask."""
    return write_noisy_mri(HEAD_MRI, HEAD_BRAIN_MASK, path, sigma_fraction, seed)
