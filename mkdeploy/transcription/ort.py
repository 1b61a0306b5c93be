"""Loading an ONNX Whisper export with optimum's ``ORTModelForSpeechSeq2Seq`` (the engine that runs
``generate``: beams, word alignment through the PyTorch source), GPU first, CPU as a fallback. The session
settings, the variant folders and the raw decoder step are :mod:`mkdeploy.lean.sessions`', shared with the
torch-free engine of :mod:`mkdeploy.lean.transcriber`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mkdeploy.errors import MkdError, ModelError
from mkdeploy.lean.sessions import (
    MEMORY_FLAGS,
    REQUIRED_FILES,
    VARIANTS,
    DecoderStep,
    OrtOptions,
    providers_for,
    resolve_variant_dir,
    session_options,
)

__all__ = [
    "MEMORY_FLAGS",
    "REQUIRED_FILES",
    "VARIANTS",
    "DecoderStep",
    "OrtOptions",
    "active_provider",
    "lean_decoder_session",
    "load_ort_model",
    "resolve_variant_dir",
    "session_options",
]


def active_provider(model) -> str:
    """The provider the encoder session really runs on (first of ``get_providers()``)."""
    return model.encoder.session.get_providers()[0]


def load_ort_model(
    path: str | Path, device: str = "auto", variant: str | None = None, options: OrtOptions | None = None
):
    """Load an export with optimum's ``ORTModelForSpeechSeq2Seq``.

    Args:
        path: export directory (fp32 at its root, variants in ``int8/`` and ``fp16/``) or a variant folder.
        device: "auto" (CUDA when it really works, else CPU), "cuda" (fail otherwise) or "cpu".
        variant: "fp32", "int8", "fp16" or None (the folder given).
        options: session settings.

    Returns:
        (model, processor, provider actually in use).

    Raises:
        ModelError: not an export directory. MkdError: CUDA requested but not usable.
    """
    os.environ.setdefault("ORT_LOG_SEVERITY_LEVEL", "3")
    # "Found multiple ONNX files": the variant folders under an export's root; the pick is checked below.
    logging.getLogger("optimum.onnxruntime.modeling").setLevel(logging.ERROR)
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq  # heavy; only the ONNX backend needs it
    from transformers import AutoProcessor  # heavy; imported on use so the core import stays light

    path = resolve_variant_dir(path, variant)
    options = options or OrtOptions()
    providers = providers_for(device)
    cuda = providers[0] == "CUDAExecutionProvider"
    try:
        model = ORTModelForSpeechSeq2Seq.from_pretrained(
            path,
            providers=providers,
            session_options=session_options(options),
            use_io_binding=cuda and options.io_binding,
            local_files_only=True,
        )
        processor = AutoProcessor.from_pretrained(path)
    except MkdError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path}: cannot load the ONNX export ({first}); re-export with `mkd export --force`"
        ) from None
    _check_graph_paths(model, path)
    provider = active_provider(model)
    if cuda and provider != "CUDAExecutionProvider":
        # The silent fallback: CUDA was requested and listed, but its libraries failed to load.
        if device == "cuda":
            raise MkdError(
                f"--device cuda: ONNX Runtime fell back to {provider} (CUDA 13 / cuDNN 9 libraries not "
                "found); install them or use --device cpu"
            )
        # Reload on CPU: a session created for CUDA never gets the CPU spinning settings or binding right.
        return load_ort_model(path, "cpu", None, options)
    return model, processor, provider


def _check_graph_paths(model, path: Path) -> None:
    """optimum globs **/*.onnx; the root's files come first, but a wrong pick must never go unnoticed."""
    for part in (model.encoder, model.decoder):
        if Path(part.path).parent.resolve() != path.resolve():
            raise ModelError(
                f"{path}: optimum loaded {part.path} instead of this folder's graph; load the variant "
                "folder itself (e.g. OUT/int8)"
            )


def lean_decoder_session(model):
    """The merged decoder's session when :class:`~mkdeploy.lean.sessions.DecoderStep` can drive it (CPU, merged graph), else
    None (CUDA's IOBinding path, or an export with separate decoder graphs)."""
    decoder = getattr(model, "decoder", None)
    session = getattr(decoder, "session", None)
    if session is None or session.get_providers()[0] != "CPUExecutionProvider":
        return None
    names = {i.name for i in session.get_inputs()}
    return session if "use_cache_branch" in names else None
