"""What ran: the package version, the commit when the package is imported from a git checkout, and the
CPU's instruction set.

A bug report, ``bench.json``, the export manifest and the demo's REPORT.md all carry this, so a figure
can be traced to the code that produced it. The instruction set is there because ONNX Runtime's int8
kernels differ by it (benchmarks/results/int8_cross_cpu.md): an int8 figure holds for one kind of CPU.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from mkdeploy import __version__


def package_version() -> str:
    """The installed distribution's version; the source's ``__version__`` when not installed."""
    try:
        return metadata.version("mkdeploy")
    except metadata.PackageNotFoundError:
        return __version__


@functools.cache
def git_commit() -> str | None:
    """The short commit (``+dirty`` with uncommitted changes) of the checkout this package is imported
    from, or None for an installed wheel (no ``.git`` beside the package) or without git."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def version_string() -> str:
    """``mkdeploy 0.1.0`` or ``mkdeploy 0.1.0 (commit abc1234)``: what ``mkd --version`` prints."""
    info = version_info()
    return f"mkdeploy {info['mkdeploy']}" + (f" (commit {info['commit']})" if info["commit"] else "")


@functools.cache
def cpu_isa() -> str:
    """The widest x86 instruction set ONNX Runtime's int8 kernels choose between: "AVX-512 VNNI",
    "AVX-512", "AVX2", else the machine's architecture. Read from CPUID as numpy's run-time dispatch sees
    it (under QEMU /proc/cpuinfo would show the host's)."""
    import numpy as np

    try:
        f = np._core._multiarray_umath.__cpu_features__  # type: ignore[attr-defined]
    except AttributeError:  # numpy < 2
        f = np.core._multiarray_umath.__cpu_features__  # type: ignore[attr-defined]
    if f.get("AVX512VNNI"):
        return "AVX-512 VNNI"
    return "AVX-512" if f.get("AVX512F") else ("AVX2" if f.get("AVX2") else platform.machine())


def version_info() -> dict[str, str | None]:
    """The version, the commit and the CPU's instruction set as a JSON-ready dict, for reports and
    manifests."""
    return {"mkdeploy": package_version(), "commit": git_commit(), "cpu_isa": cpu_isa()}
