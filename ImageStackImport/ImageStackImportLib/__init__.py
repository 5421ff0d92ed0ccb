"""Qt-free logic of the ImageStackImport module: a stack of 2D image files (TIFF, PNG, JPEG, BMP) in, an MRML volume
node out, the work done by the ``bigvolume`` core. Importable outside Slicer (tests, batch scripts) with the
``slicer-core`` package."""
from .logic import (BITS_CHOICES, DEFAULT_METHOD, DEFAULT_STACK_ORIENTATION, GRAY_CHOICES, METHODS,
                    PREVIEW_BUDGET_BYTES, PREVIEW_METHOD, ROI_INTERPOLATION_MARGIN, STACK_ORIENTATIONS,
                    BigVolumeError, Cancelled, ImageStackImportLogic, ImportPlan, ImportResult, RoiFrame)

__all__ = ["ImageStackImportLogic", "ImportPlan", "ImportResult", "RoiFrame", "GRAY_CHOICES", "BITS_CHOICES",
           "METHODS", "PREVIEW_BUDGET_BYTES", "PREVIEW_METHOD", "DEFAULT_METHOD", "ROI_INTERPOLATION_MARGIN",
           "BigVolumeError", "Cancelled", "STACK_ORIENTATIONS", "DEFAULT_STACK_ORIENTATION"]
