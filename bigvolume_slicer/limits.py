"""The ranges of the panels' settings, in one place and from the core where the core has a limit: the parameter node
fields use them in their WithinRange annotations, and Slicer's connectors set the spin boxes' and sliders' ranges
from those (the .ui values are only what Qt Designer shows)."""
from bigvolume.slicer import BITS_TO_DTYPE, LEVELS, MAX_RADIUS  # noqa: F401 (the panel limit is the core's)

# The core downsamples (factor >= 1) and has no upper limit; past 256 an axis of even a 10000-voxel stack keeps
# fewer than 40 voxels: a typo, not a wish.
MIN_FACTOR, MAX_FACTOR = 1.0, 256.0
# Voxel sizes in mm: from 1 nm (electron microscopy) to 1 km. The panels show 6 decimals.
MIN_SPACING, MAX_SPACING = 1e-6, 1e6
SPACING_DECIMALS = 6
# Haze removal: the core's levels and its largest dilation / closing radius.
MIN_LEVEL, MAX_LEVEL = min(LEVELS), max(LEVELS)
# The precisions "bits" offers besides "keep".
BITS = tuple(str(bits) for bits in BITS_TO_DTYPE)


def spacingFor(factor: float, spacing: float) -> float:
    """factor x spacing as a panel shows it (SPACING_DECIMALS), never below MIN_SPACING: rounding a tiny spacing to
    the panel's decimals must not give 0, which the spacing fields refuse."""
    return min(MAX_SPACING, max(MIN_SPACING, round(factor * spacing, SPACING_DECIMALS)))

# OME-Zarr pyramids: the levels a panel offers (a 6k^3 volume halved down to 64 voxels has 8), and the memory budget
# in GB (0: automatic, a quarter of this machine's memory).
MAX_PYRAMID_LEVELS = 16
# The chunks' edge (voxels) a pyramid is written with: 16^3 is 8 KiB of 16-bit voxels (millions of files for a big
# volume), 1024^3 is 2 GiB per chunk (more than a viewer wants to read for a glance).
MIN_CHUNKS, MAX_CHUNKS = 16, 1024
MAX_BUDGET_GB = 4096.0
