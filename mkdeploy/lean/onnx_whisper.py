"""An ONNX Whisper export loaded on ONNX Runtime alone: its encoder and merged decoder sessions, its
vocabulary and its config (:class:`OnnxWhisper`), what :mod:`mkdeploy.lean.transcriber` decodes with."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mkdeploy.errors import MkdError, ModelError
from mkdeploy.lean.sessions import DecoderStep, OrtOptions, providers_for, resolve_variant_dir, session_options
from mkdeploy.lean.vocabulary import Vocabulary
from mkdeploy.lean.windows import BUCKETS_ATTR, ONNX_DYNAMIC_FRAMES_ATTR, normalise_buckets


class OnnxWhisper:
    """An ONNX Whisper export's two sessions, its vocabulary and its config.

    Args:
        path: export directory (fp32 at its root, variants in ``int8/`` and ``fp16/``) or a variant folder.
        device: "auto" (CUDA when it really runs, else CPU), "cuda" (fail otherwise) or "cpu".
        variant: "fp32", "int8", "fp16" or None (the folder given).
        options: session settings (threads, memory switches).

    Raises:
        ModelError: not a complete export, or one with separate decoder graphs. MkdError: CUDA asked for
            and not usable.
    """

    def __init__(
        self, path: str | Path, device: str = "auto", variant: str | None = None, options: OrtOptions | None = None
    ):
        import onnxruntime as ort  # a compiled extension; loaded with the model

        self.path = resolve_variant_dir(path, variant)
        if not (self.path / "decoder_model_merged.onnx").exists():
            raise ModelError(
                f"{self.path}: no decoder_model_merged.onnx (an export with separate decoder graphs); re-export "
                "with `mkd export MODEL OUT --force`"
            )
        self.config = json.loads((self.path / "config.json").read_text())
        self.vocab = Vocabulary.from_dir(self.path)
        os.environ.setdefault("ORT_LOG_SEVERITY_LEVEL", "3")
        ort.set_default_logger_severity(3)
        providers = providers_for(device)
        self._open(providers, options or OrtOptions())
        self.provider = self.encoder.get_providers()[0]
        if providers[0] == "CUDAExecutionProvider" and self.provider != "CUDAExecutionProvider":
            # the silent fallback: CUDA listed, its libraries missing
            if device == "cuda":
                raise MkdError(
                    f"--device cuda: ONNX Runtime fell back to {self.provider} (CUDA 13 / cuDNN 9 libraries not "
                    "found); install them or use --device cpu"
                )
            self._open(["CPUExecutionProvider"], options or OrtOptions())  # CPU settings, not CUDA's leftovers
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self.n_mels = int(self.config.get("num_mel_bins", 80))
        self.vocab_size = int(self.config["vocab_size"])
        buckets = self.config.get(BUCKETS_ATTR)
        #: the windows the model was trained for (None: an ordinary 30 s model)
        self.model_buckets = normalise_buckets(buckets) if buckets else None
        self.short_windows = bool(self.config.get(ONNX_DYNAMIC_FRAMES_ATTR, False))
        self._fp16 = self.encoder.get_inputs()[0].type == "tensor(float16)"

    def _open(self, providers: list[str], options: OrtOptions) -> None:
        import onnxruntime as ort  # a compiled extension; loaded with the model

        enc = replace(options, cpu_mem_arena=options.cpu_mem_arena and options.encoder_arena)
        try:
            self.encoder = ort.InferenceSession(
                str(self.path / "encoder_model.onnx"), session_options(enc), providers=providers
            )
            self.decoder = ort.InferenceSession(
                str(self.path / "decoder_model_merged.onnx"), session_options(options), providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"{self.path}: cannot load the ONNX export ({first}); re-export with `mkd export --force`"
            ) from None

    @property
    def token_limit(self) -> int:
        """The most tokens one 30 s window may generate (half the decoder's positions, less the prompt)."""
        return int(self.config["max_target_positions"]) // 2 - 4

    def encode(self, features: np.ndarray) -> Any:
        """Encoder states of ``[batch, mels, frames]`` features: a numpy array on CPU, an ``OrtValue`` left on
        the GPU on CUDA (the decoder reads it there)."""
        import onnxruntime as ort  # a compiled extension; loaded with the model

        feats = np.ascontiguousarray(features, dtype=np.float16 if self._fp16 else np.float32)
        if self.device != "cuda":
            return self.encoder.run(["last_hidden_state"], {"input_features": feats})[0]
        binding = self.encoder.io_binding()
        binding.bind_ortvalue_input("input_features", ort.OrtValue.ortvalue_from_numpy(feats))
        binding.bind_output("last_hidden_state", "cuda")
        self.encoder.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def step(self, states: Any) -> DecoderStep:
        """A decoder step function over ``states`` (:meth:`encode`'s output)."""
        return DecoderStep(self.decoder, states)
