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
    tree = ast.parse(path.read_text(encoding="utf-8"))
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


# ---- The import graph of bigvolume, read with ast: every import statement, at the top or inside a function (a
# lazy import still ties the modules together), resolved to the bigvolume module it names.

PACKAGE = REPO / "bigvolume"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def bigvolume_imports(path: Path):
    """(line, imported module, imported name or None when a module itself is imported, local name) for each import
    of a bigvolume module in ``path``. Relative imports are resolved only inside the package."""
    inside = PACKAGE in path.parents
    package = module_name(path).split(".") if inside else []
    if inside and path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield node.lineno, alias.name, None, alias.asname or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level and not inside:
                continue
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                local = alias.asname or alias.name
                if f"{target}.{alias.name}" in MODULES:  # a submodule
                    yield node.lineno, f"{target}.{alias.name}", None, local
                elif target in MODULES:
                    yield node.lineno, target, alias.name, local


def import_graph() -> dict[str, set[str]]:
    return {name: {module for _, module, _, _ in bigvolume_imports(path) if module != name}
            for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph.get(node, ()):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


IMPORTERS = [*PACKAGE.rglob("*.py"), *REPO.glob("benchmarks/*.py"), *SLICER_SIDE]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@pytest.mark.parametrize("path", IMPORTERS, ids=lambda path: str(path.relative_to(REPO)))
def test_no_private_name_is_used_from_another_module(path):
    """``from bigvolume.x import _name`` and ``x._name`` (x a bigvolume module) outside module x: a private name
    is its module's own business; what others need gets a public name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, module_locals = [], {}
    for line, module, imported, local in bigvolume_imports(path):
        if imported is None:
            module_locals[local] = module
        elif is_private(imported):
            found.append((line, f"{module}.{imported}"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and is_private(node.attr)
                and node.value.id in module_locals):
            found.append((node.lineno, f"{module_locals[node.value.id]}.{node.attr}"))
    where = str(path.relative_to(REPO))
    assert not found, f"{where} uses private names of other modules: {found}"


def test_no_system_path_ships_in_the_package():
    """Data locations of the tests and benchmarks (e.g. Debian's head MRI) live with them, not in the product."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith(("/usr/", "/opt/", "/home/")), f"{path.name}: {node.value}"


@pytest.mark.parametrize("path", [p for p in PACKAGE.rglob("*.py") if "slicer" not in p.relative_to(PACKAGE).parts],
                         ids=lambda path: str(path.relative_to(REPO)))
def test_only_the_slicer_layer_mentions_mrml_or_the_slicer_modules(path):
    """Outside bigvolume/slicer, no code or text names MRML classes or the slicer/qt/ctk modules: whatever knows the
    scene lives in one layer (the import contract catches imports; this also catches duck-typed calls and prose)."""
    text = path.read_text(encoding="utf-8")
    found = [word for word in ("mrml", "slicer.util", "slicer.app", "slicer.mrmlScene", "import slicer", "import qt",
                               "import ctk", "qt.Q", "ctk.ctk") if word.lower() in text.lower()]
    assert not found, f"{path.relative_to(REPO)} mentions {found}"


OLDEST_PYTHON = (3, 9)  # Slicer 5.4-5.8 bundle Python 3.9.10; pyproject.toml's requires-python
SHIPPED = [*PACKAGE.rglob("*.py"), *SLICER_SIDE, *REPO.glob("BigVolumeResampleCLI/*.py")]


def _runtime_unions(tree: ast.Module) -> list[int]:
    """Lines where ``X | Y`` of types is evaluated when the module loads or a call runs (Python 3.10+): annotations
    of a module without ``from __future__ import annotations``, and isinstance/issubclass arguments."""
    postponed = any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
                    and any(alias.name == "annotations" for alias in node.names) for node in tree.body)

    def has_union(node) -> bool:
        return node is not None and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                                        for n in ast.walk(node))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("isinstance", "issubclass") \
                and len(node.args) == 2 and has_union(node.args[1]):
            lines.append(node.lineno)
        if postponed:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
            if any(has_union(a.annotation) for a in every if a is not None) or has_union(node.returns):
                lines.append(node.lineno)
        elif isinstance(node, ast.AnnAssign) and has_union(node.annotation):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: str(path.relative_to(REPO)))
def test_every_shipped_module_loads_on_the_oldest_python_slicer_bundles(path):
    """``int | None`` in one annotation of core/errors.py, evaluated at import on Python 3.9, stopped every module of
    the extension from loading in Slicer 5.8 (the tests run on a newer Python). The grammar is checked with 3.9's."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=OLDEST_PYTHON)
    assert not _runtime_unions(tree), f"{path.relative_to(REPO)}: X | Y of types evaluated at lines " \
        f"{_runtime_unions(tree)}: add 'from __future__ import annotations' or use Optional/Union"
