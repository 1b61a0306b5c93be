"""Which engine transcribes a model directory, in one place for the CLI, the server and the bench:

- a CTranslate2 or whisper.cpp export: that engine (:mod:`mkdeploy.transcription.exported`);
- ``backend="onnx-lean"``, or an ONNX export with ``backend="auto"`` where torch is not installed (the base
  install): the torch-free runtime (:class:`mkdeploy.lean.transcriber.OnnxTranscriber`);
- otherwise PyTorch or optimum's ONNX Runtime model (:class:`mkdeploy.transcription.runtime.WhisperTranscriber`).

Each engine is imported only when chosen, so the base install never reaches for torch.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from mkdeploy.errors import MissingExtraError, MkdError

BACKENDS = ("auto", "torch", "onnx", "onnx-lean")
#: the extra that brings torch, transformers and optimum (training, merging, exporting, the PyTorch engine)
TRAIN_EXTRA = "train"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (None in ``sys.modules`` counts as not installed)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def full_stack_installed() -> bool:
    """torch, transformers and optimum are all importable."""
    return all(installed(m) for m in ("torch", "transformers", "optimum"))


def speech_check():
    """Silero VAD's ``has_speech`` where silero-vad is installed, else None (``--vad`` then names the extra)."""
    if not installed("silero_vad"):
        return None
    from mkdeploy.transcription.vad import has_speech

    return has_speech


def lean_backend(path: str | Path, backend: str) -> bool:
    """Whether ``backend`` on ``path`` runs on the torch-free runtime.

    Raises:
        MkdError: an unknown backend, or onnx-lean on a directory that is not an ONNX export.
    """
    from mkdeploy.models.dirs import is_onnx_dir

    if backend not in BACKENDS:
        raise MkdError(f"--backend {backend}: choose {', '.join(BACKENDS)}")
    onnx = is_onnx_dir(path)
    if backend == "onnx-lean":
        if not onnx:
            raise MkdError(f"{path}: --backend onnx-lean runs ONNX exports; export it with `mkd export MODEL OUT`")
        return True
    return backend == "auto" and onnx and not full_stack_installed()


def load_transcriber(
    path: str | Path,
    backend: str = "auto",
    device: str = "auto",
    threads: int = 0,
    dtype: str = "auto",
    variant: str | None = None,
    **onnx_kwargs: Any,
):
    """The transcriber for a PyTorch directory or an ONNX export (see the module's docstring).

    Raises:
        MissingExtraError: the PyTorch engine was needed and torch is not installed.
    """
    if lean_backend(path, backend):
        from mkdeploy.lean.transcriber import OnnxTranscriber

        return OnnxTranscriber.from_pretrained(
            path, device, threads, variant, onnx_kwargs.get("options"), has_speech=speech_check()
        )
    if not full_stack_installed():
        raise MissingExtraError(
            TRAIN_EXTRA, f"{path}: this model (PyTorch weights, or --backend {backend})", "torch", ""
        )
    from mkdeploy.transcription.runtime import WhisperTranscriber

    kw = dict(onnx_kwargs)
    if variant:
        kw["variant"] = variant
    return WhisperTranscriber.from_pretrained(path, backend, device, threads, dtype, **kw)
