"""Checks of model directories: what a path holds (HF Whisper, ONNX export, CTranslate2), with one-line
errors that say how to fix it."""

from __future__ import annotations

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
