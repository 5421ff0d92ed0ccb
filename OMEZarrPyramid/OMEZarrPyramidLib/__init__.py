"""Qt-free logic of the OMEZarrPyramid module: an OME-Zarr pyramid's level that fits a memory budget, or a Markups
ROI's box at full resolution, into a volume node with its exact geometry; and a pyramid created from a file, stack,
store or volume node. The work is done by the ``bigvolume`` core. Importable outside Slicer (tests, batch scripts)
with the ``slicer-core`` package."""
from .logic import (FIT, PYRAMID_VERSIONS, PYRAMID_METHODS, BigVolumeError, Cancelled, LoadResult,
                    OMEZarrPyramidLogic)

__all__ = ["OMEZarrPyramidLogic", "LoadResult", "FIT", "PYRAMID_VERSIONS", "PYRAMID_METHODS", "BigVolumeError",
           "Cancelled"]
