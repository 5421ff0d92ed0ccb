"""What the SlicerBigVolume module panels share on the Qt side (the core, `bigvolume`, knows nothing of Qt).

Installed beside the scripted modules and `bigvolume`; run from source, the module files find it in the repository
root as they find `bigvolume`. It imports `qt` and `slicer` only when a panel uses it, so it loads in tests without a
Slicer application."""
from .panel import PanelProgress, settleTimer

__all__ = ["PanelProgress", "settleTimer"]
