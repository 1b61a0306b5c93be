"""The layer contract (pyproject.toml, [tool.importlinter]) holds, and fails when a lower layer imports a
higher one: a violation is planted in a copy of the package and lint-imports must refuse it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / ".ci" / "typecheck_tree.py"


def _lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), "--tree", str(tree), "lint-imports"], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def tree(tmp_path):
    sys.path.insert(0, str(TOOL.parent))
    try:
        from typecheck_tree import build_tree
    finally:
        sys.path.pop(0)
    return build_tree(tmp_path / "tree")


def test_layers_hold(tree):
    res = _lint(tree)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "KEPT" in res.stdout


@pytest.mark.parametrize(
    "module, upward",
    [
        ("audio.py", "mkdeploy.transcription.runtime"),  # core importing the runtime
        ("models/student.py", "mkdeploy.exporters.onnx"),  # models importing an exporter
        ("transcription/runtime.py", "mkdeploy.demo.corpus"),  # the runtime importing the demo
    ],
)
def test_an_upward_import_breaks_the_build(tree, module, upward):
    target = tree / "mkdeploy" / module
    text = target.read_text()
    target.unlink()  # a hard link to the repository's file: replace it, never edit it in place
    target.write_text(text + f"\nimport {upward}  # planted by the test\n")
    res = _lint(tree)
    assert res.returncode != 0
    assert "BROKEN" in res.stdout and upward in res.stdout
