"""What the SlicerBigVolume module panels share on the Qt side (the core, `bigvolume`, knows nothing of Qt).

Installed beside the scripted modules and `bigvolume`; run from source, the module files find it in the repository
root as they find `bigvolume`. It imports `qt` and `slicer` only when a panel uses it, so it loads in tests without a
Slicer application."""
import logging
import os

from . import limits
from .panel import (ParameterNodeGui, PanelProgress, PathFields, ScratchFolders, TextFields, _, connectPathText,
                    followSceneImports, RoiFollower, reenterModule, rememberPaths, settleTimer, translate)


def checkBundledCore(folder) -> str:
    """The folder the ``bigvolume`` core was imported from; a one-line warning when that is not ``folder`` (the copy
    bundled with the modules, put first on sys.path by the module files): another bigvolume was imported first."""
    import bigvolume

    used = os.path.dirname(os.path.dirname(os.path.abspath(bigvolume.__file__)))
    if folder and os.path.normcase(os.path.realpath(used)) != os.path.normcase(os.path.realpath(folder)):
        logging.warning(f"SlicerBigVolume: using the bigvolume package in {used}, not the one bundled in {folder}")
    return used


# The core bundled with the panels sits beside this package (installed extension and source tree alike).
checkBundledCore(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["PanelProgress", "ParameterNodeGui", "PathFields", "ScratchFolders", "TextFields", "connectPathText",
           "followSceneImports", "RoiFollower", "reenterModule", "rememberPaths", "settleTimer", "limits",
           "checkBundledCore", "_", "translate"]
