"""Checks of model directories: what a path holds (HF Whisper, ONNX export, CTranslate2), with one-line
errors that say how to fix it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mkdeploy.errors import ModelError


def is_onnx_dir(path: str | Path) -> bool:
    """True for a directory holding an ONNX encoder (an ``mkd export`` output)."""
    p = Path(path)
    return p.is_dir() and (p / "encoder_model.onnx").exists()


def is_ct2_dir(path: str | Path) -> bool:
    """A CTranslate2 model directory (model.bin, no Hugging Face weights beside it)."""
    p = Path(path)
    return (p / "model.bin").exists() and not any(p.glob("*.safetensors")) and not (p / "pytorch_model.bin").exists()


def check_model_dir(path: str | Path) -> Path:
    """Raise a clear ModelError unless ``path`` is a usable Whisper directory (HF or ONNX)."""
    p = Path(path)
    if not p.exists():
        raise ModelError(
            f"{p}: no such model directory; import one with `mkd import-ct2` or give a HF Whisper directory"
        )
    if not p.is_dir():
        raise ModelError(f"{p}: is a file; give the model directory that holds config.json")
    if is_ct2_dir(p):
        raise ModelError(f"{p}: a CTranslate2 model; convert it with `mkd import-ct2 {p} OUT_DIR` first")
    if not (p / "config.json").exists():
        raise ModelError(f"{p}: no config.json, not a Hugging Face Whisper directory")
    if not (p / "preprocessor_config.json").exists() or not (
        (p / "tokenizer.json").exists() or (p / "vocab.json").exists()
    ):
        raise ModelError(
            f"{p}: processor files missing (preprocessor_config.json, tokenizer.json); re-save the model with its processor"
        )
    return p


#: what `mkd export` writes beside the graphs (exporters/onnx.py, ``ExportManifest``)
EXPORT_MANIFEST = "mkdeploy_export.json"


def hash_model_dir(path: Path) -> str:
    """SHA-256 over the weight files (sorted by name), so a manifest names exactly what was exported."""
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def export_source(path: str | Path) -> Path:
    """The PyTorch directory an ONNX export (or one of its variant folders) was made from, checked against
    the weights' hash its manifest recorded.

    Raises:
        ModelError: no manifest, the source is gone, or its weights changed since the export.
    """
    p = Path(path)
    manifest = next((d / EXPORT_MANIFEST for d in (p, p.parent) if (d / EXPORT_MANIFEST).exists()), None)
    if manifest is None:
        raise ModelError(f"{p}: no {EXPORT_MANIFEST}, so the model it was exported from is unknown; re-export it")
    info = json.loads(manifest.read_text())
    src = Path(info["source"])
    if not (src / "config.json").exists():
        raise ModelError(f"{p}: exported from {src}, which is not there any more; restore it or re-export")
    if info.get("source_sha256") and hash_model_dir(src) != info["source_sha256"]:
        raise ModelError(f"{p}: {src} changed since this export (weights hash differs); re-export it")
    return src
