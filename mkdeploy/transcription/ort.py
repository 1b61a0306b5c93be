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
        cpu_mem_arena: ONNX Runtime's CPU arena (``enable_cpu_mem_arena``), which keeps freed blocks for
            reuse and grows by doubling: faster allocation, a larger footprint.
        mem_pattern: plan each run's buffers from the first run's shapes (``enable_mem_pattern``); a
            decoder whose sequence length changes every step gains little from it.
        prepacking: repack the int8/fp32 GEMM weights into MLAS's layout at load
            (``session.disable_prepacking`` off): a second, packed copy of each weight matrix.
        benchmarks/ort_memory.py measures each against CTranslate2 in fresh processes.
    """

    threads: int = 0
    allow_spinning: bool = False
    io_binding: bool = True
    cpu_mem_arena: bool = True
    mem_pattern: bool = True
    prepacking: bool = True

    @classmethod
    def from_memory_flags(cls, flags: str, threads: int = 0) -> OrtOptions:
        """``"no-arena,no-pattern"`` (any of :data:`MEMORY_FLAGS`, or ``lean`` for all three) -> options.

        Raises:
            MkdError: an unknown flag (the message lists the known ones).
        """
        opts = cls(threads=threads)
        for flag in (f.strip() for f in flags.split(",") if f.strip()):
            if flag != "lean" and flag not in MEMORY_FLAGS:
                raise MkdError(f"ONNX Runtime memory option {flag!r}: choose from {', '.join([*MEMORY_FLAGS, 'lean'])}")
            for name in MEMORY_FLAGS.values() if flag == "lean" else [MEMORY_FLAGS[flag]]:
                setattr(opts, name, False)
        return opts


#: the memory switches by their command-line names (``mkd bench --model NAME=PATH:ort=no-arena,no-prepack``)
MEMORY_FLAGS = {"no-arena": "cpu_mem_arena", "no-pattern": "mem_pattern", "no-prepack": "prepacking"}


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
    so.enable_cpu_mem_arena = opts.cpu_mem_arena
    so.enable_mem_pattern = opts.mem_pattern
    if not opts.prepacking:
        so.add_session_config_entry("session.disable_prepacking", "1")
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


class LeanDecoderStep:
    """One decoder step on the merged decoder's ONNX Runtime session itself: numpy in, the KV cache kept
    as ORT values from one step to the next, no optimum wrapper on the hot path.

    optimum's ``ORTDecoderForSeq2Seq`` converts every input and output between torch and numpy and rebuilds
    the past tuple at each token. Here the ``present.*`` outputs are handed back as the next step's
    ``past_key_values.*`` inputs unchanged (``run_with_ort_values``: no copy), the encoder's cross-attention
    cache is computed once (first step) and never requested again, and only the logits become a tensor
    (zero-copy from numpy). Tokens are the same as through optimum (tests/test_export.py). Measured on
    tiny.en int8, 2 threads (benchmarks/results/cpu_profile_tiny.en.md): ~1.2 ms per step outside the
    session against ~1.5 through optimum; the session itself (~9 ms) is most of a step.

    CPU only: on CUDA optimum's IOBinding path keeps its tensors on the device
    (:func:`load_ort_model`), and this class is not used there.

    Args:
        session: the ``decoder_model_merged.onnx`` session (optimum's ``model.decoder.session``).
        encoder_hidden_states: ``[batch, frames, d_model]``, the encoder's output for the batch.
    """

    def __init__(self, session, encoder_hidden_states) -> None:
        import numpy as np
        import onnxruntime as ort  # heavy; only the ONNX backend needs it

        self.session = session
        self._value = ort.OrtValue.ortvalue_from_numpy
        inputs = {i.name: i for i in session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self._dtype = np.float16 if inputs["encoder_hidden_states"].type == "tensor(float16)" else np.float32
        hidden = encoder_hidden_states.detach().cpu().numpy().astype(self._dtype, copy=False)
        self.hidden = self._value(np.ascontiguousarray(hidden))
        batch = hidden.shape[0]
        # the first step's empty self-attention cache and placeholder cross-attention cache
        self._empty = {}
        for name in self.past_names:
            _, heads, _, dim = inputs[name].shape
            self._empty[name] = self._value(np.zeros((batch, heads, 0, dim), dtype=self._dtype))
        self._first_outputs = ["logits"] + [n.replace("past_key_values", "present") for n in self.past_names]
        self._step_outputs = ["logits"] + [
            n.replace("past_key_values", "present") for n in self.past_names if ".decoder." in n
        ]
        self._flags = {b: self._value(np.array([b])) for b in (False, True)}

    def __call__(self, ids, past):
        """``ids`` ``[batch, new]`` (torch, int64) and the previous step's cache (None at first) ->
        (logits ``[batch, new, vocab]`` as a torch tensor, the cache for the next step)."""
        import torch

        first = past is None
        feeds = {
            "input_ids": self._value(ids.detach().cpu().numpy().astype("int64", copy=False)),
            "encoder_hidden_states": self.hidden,
            "use_cache_branch": self._flags[not first],
        }
        feeds.update(self._empty if first else past)
        names = self._first_outputs if first else self._step_outputs
        outs = self.session.run_with_ort_values(names, feeds)
        cache = {} if first else dict(past)
        for name, value in zip(names[1:], outs[1:]):
            cache[name.replace("present", "past_key_values")] = value
        return torch.from_numpy(outs[0].numpy()), cache


def lean_decoder_session(model):
    """The merged decoder's session when :class:`LeanDecoderStep` can drive it (CPU, merged graph), else
    None (CUDA's IOBinding path, or an export with separate decoder graphs)."""
    decoder = getattr(model, "decoder", None)
    session = getattr(decoder, "session", None)
    if session is None or session.get_providers()[0] != "CPUExecutionProvider":
        return None
    names = {i.name for i in session.get_inputs()}
    return session if "use_cache_branch" in names else None
