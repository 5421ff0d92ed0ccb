"""The package's layout holds: the public API loads lazily, the import contracts of pyproject.toml pass, the Slicer
modules reach bigvolume only through its public API and its slicer layer, and `pytest -m core` needs no Slicer."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bigvolume

REPO = Path(__file__).resolve().parent.parent


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, **kwargs)


def test_import_bigvolume_loads_no_vtk_or_simpleitk():
    done = run_python("import sys, bigvolume\n"
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in ('vtk', 'vtkmodules', 'SimpleITK')"
                      " or m.startswith('bigvolume.')))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_public_name_resolves_from_its_layer():
    import importlib
    for name, module in bigvolume._PUBLIC.items():
        assert getattr(bigvolume, name) is getattr(importlib.import_module(f"bigvolume.{module}"), name), name
    assert set(bigvolume.__all__) == {*bigvolume._PUBLIC, "__version__"} and isinstance(bigvolume.__version__, str)
    assert set(bigvolume.__all__) <= set(dir(bigvolume))
    with pytest.raises(AttributeError):
        bigvolume.no_such_name  # noqa: B018


@pytest.mark.skipif(not shutil.which("lint-imports", path=str(Path(sys.executable).parent)),
                    reason="import-linter is not installed (the test extra)")
def test_import_contracts_pass():
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], capture_output=True, cwd=REPO,
                          encoding="utf-8", errors="replace")  # its banner is not ASCII
    assert done.returncode == 0, done.stdout[-3000:]


SLICER_SIDE = [*REPO.glob("*/*Lib/*.py"), *REPO.glob("bigvolume_slicer/*.py"),
               *(path for path in REPO.glob("*/*.py") if path.parent.name == path.stem)]


@pytest.mark.parametrize("path", SLICER_SIDE, ids=lambda path: str(path.relative_to(REPO)))
def test_slicer_modules_import_only_the_public_api_and_the_slicer_layer(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else
                 [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            if name.split(".")[0] == "bigvolume":
                assert name in ("bigvolume", "bigvolume.slicer") or name.startswith("bigvolume.slicer."), \
                    f"{path.name} line {node.lineno}: {name}"


def test_at_most_a_dozen_modules_at_the_package_top():
    top = [path for path in (REPO / "bigvolume").glob("*.py")]
    assert len(top) <= 12
    assert all((REPO / "bigvolume" / sub / "__init__.py").is_file()
               for sub in ("core", "io", "methods", "engine", "ops", "render", "slicer", "cli", "testing"))


def test_core_tests_run_without_slicer(tmp_path):
    """`pytest -m core` with slicer-core made unimportable: everything selected runs, nothing fails to collect."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nfor name in ('slicer', 'qt', 'ctk'):\n    sys.modules[name] = None\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{REPO}"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "core", "-q", "-p", "no:cacheprovider",
                           "--collect-only", str(REPO / "Testing")], capture_output=True, text=True, cwd=REPO,
                          env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " selected" in done.stdout or "tests collected" in done.stdout
