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

#: the public names, imported on first use so `import mkdeploy` (and `mkd --help`) stays light:
#: ``from mkdeploy import WhisperTranscriber, TranscriptionOptions``
_PUBLIC = {
    "WhisperTranscriber": "mkdeploy.transcription.runtime",
    "OnnxTranscriber": "mkdeploy.lean.transcriber",
    "load_transcriber": "mkdeploy.transcription.loading",
    "TranscriptionOptions": "mkdeploy.options",
    "Transcription": "mkdeploy.results",
    "Segment": "mkdeploy.results",
    "Word": "mkdeploy.results",
    "ExportedTranscriber": "mkdeploy.transcription.exported",
    "export_onnx": "mkdeploy.exporters.onnx",
    "ExportOptions": "mkdeploy.exporters.onnx",
    "export_ct2": "mkdeploy.exporters.ct2",
    "export_ggml": "mkdeploy.exporters.ggml",
    "import_ct2": "mkdeploy.models.ct2",
    "error_rates": "mkdeploy.evaluate",
    "run_bench": "mkdeploy.bench",
    "ModelSpec": "mkdeploy.bench",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mkdeploy' has no attribute {name!r}")
