"""Loading an ONNX Whisper export on ONNX Runtime, GPU first, CPU as a fallback.

onnxruntime-gpu lists CUDA as available even when the CUDA 13 / cuDNN 9 libraries it needs are missing,
and then silently runs on CPU (README, Troubleshooting). So the provider that actually runs is read back from the
session (``get_providers()``) and reported; ``device="cuda"`` fails when it is not CUDA.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mkdeploy.errors import MkdError, ModelError

REQUIRED_FILES = ("encoder_model.onnx", "config.json", "preprocessor_config.json")
VARIANTS = ("fp32", "int8", "fp16")


@dataclass
class OrtOptions:
    """Session settings.

    Attributes:
        threads: intra-op threads (0: ONNX Runtime's default, one per physical core).
        allow_spinning: intra-op spin-waiting; off by default because on 2 cores it made a small model
            about 3x slower and slowed PyTorch in the same process (README, Troubleshooting).
        io_binding: bind inputs and outputs to device memory (CUDA only; avoids host copies per step).
    """

    threads: int = 0
    allow_spinning: bool = False
    io_binding: bool = True


def resolve_variant_dir(path: str | Path, variant: str | None = None) -> Path:
    """The directory of one variant of an export: ``path`` itself for fp32, ``path/int8``, ``path/fp16``.

    Raises:
        ModelError: unknown or missing variant, or files missing from the directory.
    """
    path = Path(path)
    if variant not in (None, "fp32"):
        if variant not in VARIANTS:
            raise ModelError(f"unknown ONNX variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        sub = path / variant
        if not sub.is_dir():
            have = [v for v in VARIANTS[1:] if (path / v).is_dir()]
            raise ModelError(
                f"{path}: no {variant} variant (has: fp32{''.join(', ' + h for h in have)}); "
                f"re-export with `mkd export ... --{'quantize int8' if variant == 'int8' else 'fp16'}`"
            )
        path = sub
    if not path.is_dir():
        raise ModelError(f"{path}: no such ONNX export directory; create one with `mkd export MODEL OUT`")
    missing = [f for f in REQUIRED_FILES if not (path / f).exists()]
    if not (path / "decoder_model_merged.onnx").exists() and not (
        (path / "decoder_model.onnx").exists() and (path / "decoder_with_past_model.onnx").exists()
    ):
        missing.append("decoder_model_merged.onnx")
    if missing:
        hint = (
            "it is a PyTorch model directory: use --backend torch, or export it with `mkd export`"
            if (path / "model.safetensors").exists()
            else "re-export with `mkd export MODEL OUT --force`"
        )
        raise ModelError(f"{path}: not a complete ONNX Whisper export (missing {', '.join(missing)}); {hint}")
    return path


def _providers_for(device: str) -> list[str]:
    import onnxruntime as ort  # heavy; only the ONNX backend needs it

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        if device == "cuda":
            raise MkdError(
                f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
            )
        return ["CPUExecutionProvider"]
    # CUDA and cuDNN installed as pip wheels (nvidia-cublas, nvidia-cudnn-cu13..., e.g. beside a CUDA build
    # of PyTorch) are not on the loader's path; onnxruntime >= 1.21 can preload them from site-packages.
    try:
        ort.preload_dlls()
    except Exception:  # older onnxruntime, or no such wheels: the system libraries are tried as usual
        pass
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def session_options(opts: OrtOptions):
    """ONNX Runtime session options with spinning off unless asked for."""
    import onnxruntime as ort  # heavy; only the ONNX backend needs it

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if opts.threads:
        so.intra_op_num_threads = opts.threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.allow_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if opts.allow_spinning else "0")
    so.log_severity_level = 3
    return so


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
    providers = _providers_for(device)
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
