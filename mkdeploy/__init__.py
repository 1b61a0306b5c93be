"""mkdeploy: distil Whisper teachers into small students, export to ONNX, transcribe and benchmark."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# The subpackages mkdeploy.cli / .models / .exporters live in the repository's root folders cli/,
# models/, exporters/ and are mapped by setuptools' package-dir (docs/architecture.md). When Python imports this
# folder straight from a source checkout (repo root on sys.path, e.g. `python -c` there), that mapping
# is bypassed; adding the root to __path__ keeps `import mkdeploy.cli` working in that case too.
_root = _Path(__file__).resolve().parent.parent
if (_root / "cli" / "__init__.py").exists() and not (_Path(__file__).parent / "cli").exists():
    __path__.append(str(_root))
