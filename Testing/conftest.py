"""Shared pytest set-up.

Slicer puts each scripted module's folder on ``sys.path``; do the same here so that the modules' Qt-free logic
packages (``<Module>/<Module>Lib``) import in tests, as ``from AntiAliasedResampleLib import ...``.
"""
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def slicer_module_folders():
    """Top-level folders holding a Slicer scripted module (``<Name>/<Name>.py``)."""
    return sorted(path for path in REPOSITORY_ROOT.iterdir()
                  if path.is_dir() and (path / f"{path.name}.py").is_file())


for _folder in slicer_module_folders():
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))


# Each test file's family (pyproject.toml registers the markers): `pytest -m core` needs no slicer-core.
FILE_MARKERS = {
    "core": ["test_blocks", "test_dicom", "test_fuzz_headers", "test_geometry", "test_gpu_path", "test_haze", "test_haze_noise",
             "test_integrity", "test_io", "test_layers", "test_nrrd_geometry", "test_ome_zarr_input", "test_ome_zarr_metadata", "test_precision", "test_pyramid", "test_resample", "test_stack_orientation",
             "test_stacks", "test_stream", "test_target_size"],
    "cli": ["test_cli", "test_ctrl_c", "test_messages", "test_readme"],
    "mrml": ["test_cli_module", "test_haze_logic", "test_ome_zarr_logic", "test_image_stack_logic", "test_preview", "test_slicer_logic"],
    "ui": ["test_haze_ui", "test_image_stack_ui", "test_ome_zarr_ui", "test_panel_progress", "test_panel_widgets", "test_slicer_modules",
           "test_ui_files"],
}
_MARKER_OF_FILE = {name: marker for marker, names in FILE_MARKERS.items() for name in names}


def pytest_collection_modifyitems(config, items):
    import pytest
    for item in items:
        marker = _MARKER_OF_FILE.get(item.path.stem)
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


def pytest_ignore_collect(collection_path, config):
    """With `-m <one family>`, other families' files are not even imported (the ui and mrml files need slicer)."""
    wanted = (config.getoption("markexpr", "") or "").strip()
    marker = _MARKER_OF_FILE.get(Path(str(collection_path)).stem)
    if wanted in FILE_MARKERS and marker is not None and marker != wanted:
        return True
    return None


@pytest.fixture(scope="session")
def head_mri() -> Path:
    """The real head MRI (Testing/head_mri.py); the test is skipped where mricron-data is not installed."""
    import head_mri as data
    if not data.installed():
        pytest.skip("mricron-data (the real head MRI) is not installed")
    return Path(data.HEAD_MRI)
