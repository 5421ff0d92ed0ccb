"""Shared pytest set-up.

Slicer puts each scripted module's folder on ``sys.path``; do the same here so that the modules' Qt-free logic
packages (``<Module>/<Module>Lib``) import in tests, as ``from AntiAliasedResampleLib import ...``.
"""
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def slicer_module_folders():
    """Top-level folders holding a Slicer scripted module (``<Name>/<Name>.py``)."""
    return sorted(path for path in REPOSITORY_ROOT.iterdir()
                  if path.is_dir() and (path / f"{path.name}.py").is_file())


for _folder in slicer_module_folders():
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))
