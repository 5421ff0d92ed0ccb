"""Qt-free logic of the AntiAliasedResample module: MRML volume nodes in, MRML volume nodes out, the work done by the
``bigvolume`` core. Importable outside Slicer (tests, batch scripts) with the ``slicer-core`` package."""
from .logic import (CLI_DEVICES, CLI_METHODS, CLI_MODULE, DEFAULT_METHOD, LABEL_SAFE_METHODS, METHODS,
                    SUPPORTED_INPUT_CLASSES, AntiAliasedResampleLogic, BigVolumeError, Cancelled, ResampleResult)

__all__ = ["AntiAliasedResampleLogic", "ResampleResult", "LABEL_SAFE_METHODS", "SUPPORTED_INPUT_CLASSES", "METHODS",
           "DEFAULT_METHOD", "BigVolumeError", "Cancelled", "CLI_MODULE", "CLI_METHODS", "CLI_DEVICES"]
