"""What ran: the package version, and the commit when the package is imported from a git checkout.

A bug report, ``bench.json``, the export manifest and the demo's REPORT.md all carry this, so a figure
can be traced to the code that produced it.
"""

from __future__ import annotations

import functools
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


def version_info() -> dict[str, str | None]:
    """The version and commit as a JSON-ready dict, for reports and manifests."""
    return {"mkdeploy": package_version(), "commit": git_commit()}
