"""Run a static tool (lint-imports, mypy) on mkdeploy as one physical package.

setuptools maps the root folders cli/, models/, exporters/ onto mkdeploy.cli, .models, .exporters
(pyproject.toml, package-dir); static tools read folders, not that mapping. This script hard-links the
package into build/typecheck/mkdeploy with the three folders inside it, hides the editable install's
import hook (which would point them back at the unmapped source), and runs the tool there.

    python .ci/typecheck_tree.py lint-imports
    python .ci/typecheck_tree.py mypy -p mkdeploy
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def build_tree(tree: Path = TREE) -> Path:
    """Hard-link the package into ``tree``/mkdeploy (replace a file there, never edit it in place)."""
    shutil.rmtree(tree, ignore_errors=True)
    pkg = tree / "mkdeploy"
    shutil.copytree(ROOT / "mkdeploy", pkg, copy_function=os.link, ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("cli", "models", "exporters"):
        shutil.copytree(ROOT / sub, pkg / sub, copy_function=os.link, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def main() -> int:
    # --tree DIR: run on a tree already built there (tests plant a violation in one)
    if sys.argv[1] == "--tree":
        tree, tool, args = Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
    else:
        tree, tool, args = build_tree(), sys.argv[1], sys.argv[2:]
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path.insert(0, str(tree))
    os.chdir(tree)
    if tool == "lint-imports":
        from importlinter.cli import lint_imports_command

        sys.argv = ["lint-imports", str(ROOT / "pyproject.toml"), *args]
        return lint_imports_command()
    if tool == "mypy":
        from mypy import api

        out, err, code = api.run(["--config-file", str(ROOT / "pyproject.toml"), *args])
        sys.stdout.write(out.replace(str(tree) + "/", ""))
        sys.stderr.write(err)
        return code
    raise SystemExit(f"unknown tool {tool}: lint-imports or mypy")


if __name__ == "__main__":
    sys.exit(main())
