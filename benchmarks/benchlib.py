"""Helpers shared by the benchmark scripts: machine description, memory probes, Markdown tables, JSON results.

Only the scripts in this folder import it (they run as ``python benchmarks/<name>.py``, which puts this folder on
``sys.path``); the test suite never does.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPOSITORY = Path(__file__).resolve().parent.parent
MIB = 2 ** 20

# The real head MRI of Debian's mricron-data package (whole head with air around it) and its brain mask: benchmark
# data, so named here and not in the package (the tests name it in Testing/head_mri.py; benchmarks never import
# the test suite).
HEAD_MRI = "/usr/share/mricron/templates/ch2.nii.gz"
HEAD_BRAIN_MASK = "/usr/share/mricron/templates/ch2bet.nii.gz"


def noisy_head(path, sigma_fraction: float = 0.04, seed: int = 2024):
    """HEAD_MRI with Rician noise written to ``path`` (bigvolume.testing.phantoms.write_noisy_mri); returns the
    brain mask."""
    from bigvolume.testing.phantoms import write_noisy_mri
    return write_noisy_mri(HEAD_MRI, HEAD_BRAIN_MASK, path, sigma_fraction, seed)


# --- machine ------------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _ram_gib() -> float:
    try:
        match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        return int(match.group(1)) / 2 ** 20
    except (OSError, AttributeError):
        return float("nan")


def _version(module_name: str) -> str:
    try:
        module = __import__(module_name)
    except ImportError:
        return "not installed"
    return str(getattr(module, "__version__", "unknown"))


def machine_info() -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpu": _cpu_model(), "cores": cores, "ram_gib": round(_ram_gib(), 1),
            "os": platform.platform(), "python": platform.python_version(),
            "vtk": _version("vtk"), "SimpleITK": _version("SimpleITK"), "numpy": _version("numpy"),
            "bigvolume": _version("bigvolume"), "code": code_state()}


def _git(*args, tree=REPOSITORY) -> str:
    try:
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def commit_of(tree=REPOSITORY) -> str | None:
    """The short commit checked out at ``tree`` (this repository by default; None outside git)."""
    return _git("rev-parse", "--short", "HEAD", tree=tree) or None


def code_state() -> dict:
    """Which core was measured: the commit, whether bigvolume/ had uncommitted changes, the Lanczos lobes."""
    from bigvolume.methods.kernels import LANCZOS_LOBES
    return {"commit": commit_of() or "unknown",
            "bigvolume_modified": bool(_git("status", "--porcelain", "--", "bigvolume")),
            "lanczos_lobes": LANCZOS_LOBES}


def machine_markdown(info: dict) -> str:
    code = info.get("code", {})
    return (f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, {info['os']}; "
            f"Python {info['python']}, vtk {info['vtk']}, SimpleITK {info['SimpleITK']}, numpy {info['numpy']}, "
            f"bigvolume {info['bigvolume']} (commit {code.get('commit')}"
            f"{' + uncommitted core changes' if code.get('bigvolume_modified') else ''}, "
            f"Lanczos-{code.get('lanczos_lobes')})")


# --- memory of the current process ------------------------------------------------------------------------------
def proc_status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident)."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs). False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


# --- numbers and tables -------------------------------------------------------------------------------------------
def median(values) -> float:
    return float(statistics.median(values))


def markdown_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
