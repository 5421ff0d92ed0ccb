"""Haze removal's options: the levels (MRIcroGL's table, and auto), the air modes, the morphology's limits, and
:class:`HazeOptions`, which checks them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.errors import BigVolumeError


# level -> (classes, how many of the darkest classes are air): MRIcroGL's table (niimath's level 2 acts as level 4).
LEVELS = {1: (4, 3), 2: (3, 2), 3: (2, 1), 4: (3, 1), 5: (4, 1)}
AUTO = "auto"              # the default level: a denoised copy, the air's classes chosen from the histogram
LEVEL_NAMES = (AUTO,) + tuple(LEVELS)
AIR_MODES = ("border", "all")
# Two 6-neighbour dilations (as MRIcroGL; niimath does one). Measured on the real head MRI ch2 with Rician noise
# (benchmarks/haze.py, level 5): 1 dilation changed 1232 voxels of the brain mask ch2bet, more than niimath's 624;
# 2 changed 560, fewer, for a gzip gain of 30.7 % instead of 34.2 %.
DEFAULT_DILATE = 2
MAX_RADIUS = 64            # dilate / close beyond this is a typo, not a wish (each step is a pass over the volume)


@dataclass(frozen=True)
class HazeOptions:
    """``level``: "auto" (default) or 1-5 (MRIcroGL's table, on the raw voxels)."""

    level: int | str = AUTO
    air: str = "border"
    dilate: int = DEFAULT_DILATE
    largest_only: bool = False
    close: int = 0
    fill: str | float = "min"

    def __post_init__(self):
        level = self.level
        if isinstance(level, str) and level.strip().isdigit():
            level = int(level)  # "5" from a text field or a parameter node
        if isinstance(level, str):
            level = level.strip().lower()
        if not (level == AUTO or (_is_int(level) and level in LEVELS)):
            raise BigVolumeError(f"level must be auto, 1, 2, 3, 4 or 5, got {self.level!r}")
        object.__setattr__(self, "level", level if level == AUTO else int(level))
        if self.air not in AIR_MODES:
            raise BigVolumeError(f"air must be one of {', '.join(AIR_MODES)}, got {self.air!r}")
        for name in ("dilate", "close"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value <= MAX_RADIUS:
                raise BigVolumeError(f"{name} must be a whole number of voxels from 0 to {MAX_RADIUS}, got {value!r}")
            object.__setattr__(self, name, int(value))  # (numpy's int32 overflowed in the slab memory sums)
        if not isinstance(self.largest_only, (bool, np.bool_)):
            raise BigVolumeError(f"largest_only must be True or False, got {self.largest_only!r}")
        if isinstance(self.fill, str):
            if self.fill != "min":
                try:
                    object.__setattr__(self, "fill", float(self.fill))
                except ValueError:
                    raise BigVolumeError(f"fill must be 'min' or a number, got {self.fill!r}") from None
        elif not _is_number(self.fill):
            raise BigVolumeError(f"fill must be 'min' or a number, got {self.fill!r}")
        if not isinstance(self.fill, str) and not np.isfinite(self.fill):
            raise BigVolumeError(f"fill must be a finite number, got {self.fill!r}")

    @property
    def denoise(self) -> bool:
        """Auto classifies the denoised copy; levels 1-5 the raw voxels."""
        return self.level == AUTO

    @property
    def halo(self) -> int:
        """Slices of context each side of a slab that closing and dilation (and, level auto, the peeling of the
        denoised copy's blur: one more; at least two, for the report's plateau count, which reads the peeled object
        next to the slab) need to be exact."""
        if not self.denoise:
            return 2 * self.close + self.dilate
        return max(2, 2 * self.close + self.dilate + 1)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
