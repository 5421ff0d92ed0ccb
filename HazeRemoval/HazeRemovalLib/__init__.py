"""Qt-free logic of the HazeRemoval module: a scalar volume node in, a dehazed volume node (and a haze mask label
map for previews) out, the work done by the ``bigvolume`` core. Importable outside Slicer (tests, batch scripts)
with the ``slicer-core`` package."""
from .logic import (AIR_CHOICES, AUTO, BITS_CHOICES, DEFAULT_DILATE, FILL_CHOICES, LEVEL_CHOICES,
                    BigVolumeError, Cancelled, HazeRemovalLogic, HazeRemovalResult)

__all__ = ["HazeRemovalLogic", "HazeRemovalResult", "LEVEL_CHOICES", "AIR_CHOICES", "FILL_CHOICES", "BITS_CHOICES",
           "AUTO", "DEFAULT_DILATE", "BigVolumeError", "Cancelled"]
