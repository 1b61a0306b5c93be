"""The package's layout rules (issue 49, docs/architecture.md): no module over 400 lines, no class over 300, and
a file name in two folders only where both files have the same role in parallel subsystems."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("mkdeploy", "cli", "models", "exporters")
#: names that repeat on purpose: a command over its library module, a format's reader and writer, each
#: subsystem's configuration dataclass (docs/architecture.md)
PARALLEL = {
    "bench.py": {"cli", "mkdeploy/bench"},
    "merge.py": {"cli", "mkdeploy/distill"},
    "serve.py": {"cli", "mkdeploy/distributed"},
    "student.py": {"cli", "models"},
    "transcribe.py": {"cli", "mkdeploy/distributed"},
    "ct2.py": {"models", "exporters"},
    "ggml.py": {"models", "exporters"},
    "config.py": {"mkdeploy/distill", "mkdeploy/serve", "mkdeploy/distributed"},
}


def _modules() -> list[Path]:
    return [p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts]


def test_no_module_over_400_lines_and_no_class_over_300():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
    big = []
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno and node.end_lineno - node.lineno > 300:
                big.append(f"{p.relative_to(ROOT)}:{node.name}")
    assert not big, big


def test_file_names_repeat_only_for_parallel_roles():
    folders: dict[str, set[str]] = defaultdict(set)
    for p in _modules():
        if p.name != "__init__.py":
            folders[p.name].add(str(p.parent.relative_to(ROOT)))
    repeated = {name: dirs for name, dirs in folders.items() if len(dirs) > 1}
    unexplained = {name: dirs for name, dirs in repeated.items() if not dirs <= PARALLEL.get(name, set())}
    assert not unexplained, unexplained


def test_the_public_names_resolve_and_import_mkdeploy_stays_light():
    """Every name `from mkdeploy import ...` offers is the library's own object, and importing the package
    alone pulls in neither torch nor transformers (they load with the first name used)."""
    import subprocess
    import sys

    import mkdeploy
    from mkdeploy.transcription.runtime import WhisperTranscriber

    assert mkdeploy.WhisperTranscriber is WhisperTranscriber
    for name in mkdeploy.__all__:
        assert getattr(mkdeploy, name) is not None, name
    code = "import sys, mkdeploy; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
