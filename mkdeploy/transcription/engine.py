"""A loaded Whisper model on PyTorch or ONNX Runtime, and the few operations every decoding strategy asks
of it: the decoder prompt, the encoder (with an optional memo), a seeded ``generate`` and its arguments.

Both backends drive the same Hugging Face ``generate`` (optimum's ``ORTModelForSpeechSeq2Seq`` reuses
Whisper's generation mixin), so decoding options, long-form handling and outputs are identical and an fp32
ONNX export is token-identical to its PyTorch source.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch

from mkdeploy.errors import MkdError, ModelError
from mkdeploy.models.dirs import check_model_dir, is_onnx_dir
from mkdeploy.models.student import load_whisper
from mkdeploy.models.window import (
    FULL_WINDOW_S,
    ONNX_DYNAMIC_FRAMES_ATTR,
    WindowConfig,
    enable_encoder_windows,
    model_buckets,
)
from mkdeploy.options import TranscriptionOptions
from mkdeploy.transcription.decoding import StepBoundary, StepFn, decoder_prompt, ort_step, torch_step, yielding
from mkdeploy.transcription.ort import DecoderStep, OrtOptions, lean_decoder_session, load_ort_model

Backend = Literal["auto", "torch", "onnx"]
Device = Literal["auto", "cuda", "cpu"]


def resolve_device(device: Device | str) -> str:
    if device not in ("auto", "cuda", "cpu"):
        raise MkdError(f"--device {device}: choose auto, cuda or cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MkdError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu or auto")
    return device


def set_torch_threads(threads: int) -> None:
    """PyTorch's intra-op threads for this process (0 leaves its default: one per core)."""
    if threads:
        torch.set_num_threads(threads)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The PyTorch dtype for ``--dtype`` on ``device`` ("auto": float16 on CUDA, float32 on CPU)."""
    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    if dtype not in names:
        raise MkdError(f"--dtype {dtype}: choose auto, float32, float16 or bfloat16")
    return names[dtype]


class Engine:
    """A Whisper model ready to decode.

    Args:
        model: a ``WhisperForConditionalGeneration`` or an optimum ``ORTModelForSpeechSeq2Seq``.
        processor: the model's ``WhisperProcessor``.
        backend: "torch" or "onnx".
        device: "cpu" or "cuda".
        provider: the ONNX Runtime provider actually in use (None for PyTorch).
        path: the model directory (for messages).
    """

    def __init__(self, model, processor, backend: str, device: str, provider: str | None = None, path: str = ""):
        self.model, self.processor = model, processor
        self.backend, self.device, self.provider, self.path = backend, device, provider, str(path)
        gen = model.generation_config
        self.multilingual = bool(getattr(gen, "is_multilingual", False) and getattr(gen, "lang_to_id", None))
        #: the windows the model was trained for (None: an ordinary 30 s model)
        self.model_buckets = model_buckets(model.config)
        if backend == "torch":
            enable_encoder_windows(model)
            self.short_windows = True
        else:
            # an export's encoder takes short windows only if it was traced with a dynamic frame axis
            self.short_windows = bool(getattr(model.config, ONNX_DYNAMIC_FRAMES_ATTR, False))
        #: encoder states by a digest of their input features; None: no memo. Set by a caller whose
        #: encoder cannot change between calls (the trainer scoring dev with a frozen encoder, where
        #: the encoder was half of each evaluation's time)
        self.states_memo: dict[str, Any] | None = None
        #: ONNX on CPU: drive the merged decoder's session directly (:class:`~mkdeploy.lean.sessions.DecoderStep`);
        #: False goes through optimum's wrapper (benchmarks/cpu_profile.py compares the two)
        self.lean_onnx_decoder = True

    @property
    def token_limit(self) -> int:
        """The most tokens one 30 s window may generate (half the decoder's positions, less the prompt)."""
        return self.model.config.max_target_positions // 2 - 4

    def windows(self, options: TranscriptionOptions | None = None) -> WindowConfig:
        """The :class:`~mkdeploy.models.window.WindowConfig` used with ``options``."""
        buckets = (options.encoder_buckets if options else None) or self.model_buckets or (FULL_WINDOW_S,)
        win = WindowConfig(tuple(buckets))
        if win.windowed and not self.short_windows:
            raise ModelError(
                f"{self.path or 'model'}: this ONNX export's encoder takes 30 s windows only; re-export "
                "it with `mkd export` to use encoder buckets"
            )
        return win

    def prompt(self, options: TranscriptionOptions, timestamps: bool = False) -> list[int]:
        """The decoder's start tokens (``<|notimestamps|>`` last unless ``timestamps``)."""
        p = decoder_prompt(
            self.processor.tokenizer,
            self.model.generation_config,
            options.language if self.multilingual else None,
            options.task,
        )
        return p[:-1] if timestamps else p

    def generate_kwargs(self, options: TranscriptionOptions, long_form: bool = False) -> dict:
        """``generate``'s arguments for ``options`` (long-form: the per-window no-speech test too)."""
        kw: dict = dict(return_timestamps=options.return_timestamps, num_beams=options.num_beams)
        if yielding():
            # generate yields at each of its steps too (the server's long uploads, mkdeploy.transcription.decoding.between_steps);
            # only then, since a custom processor list makes generate warn about its own suppression processors
            from transformers import LogitsProcessorList  # heavy; imported on use so the core import stays light

            kw["logits_processor"] = LogitsProcessorList([StepBoundary()])
        if options.initial_prompt:
            kw["prompt_ids"] = self.processor.get_prompt_ids(options.initial_prompt, return_tensors="pt").to(
                self.device
            )
        if self.multilingual:
            kw.update(language=options.language or "en", task=options.task)
        if options.max_new_tokens:
            kw["max_new_tokens"] = options.max_new_tokens
        if options.compression_ratio_threshold:
            kw.update(
                temperature=tuple(options.temperatures), compression_ratio_threshold=options.compression_ratio_threshold
            )
            if long_form and options.no_speech_threshold is not None:
                # generate applies the same no-speech test to each 30 s window of long-form audio
                kw.update(no_speech_threshold=options.no_speech_threshold, logprob_threshold=options.logprob_threshold)
        elif options.temperatures[:1] != (0.0,):
            kw["temperature"] = options.temperatures[0]
        return kw

    def generate(self, **kw):
        """``model.generate`` with torch's generator seeded for the call: the temperature fallback samples,
        and a clip's transcript must not depend on what the process did before (two runs of the demo must
        agree; measured: the same dev set scored 20.83% and 20.39% in two processes before this)."""
        devices = [torch.cuda.current_device()] if self.device == "cuda" and torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            return self.model.generate(**kw)

    def decoder_step(self, encoder_hidden_states) -> StepFn:
        """The step function the greedy loops of :mod:`mkdeploy.transcription.decoding` call, over these encoder states:
        PyTorch's decoder, the raw ONNX session on CPU, or optimum's ONNX wrapper (CUDA, unmerged graphs)."""
        if self.backend == "torch":
            return torch_step(self.model, encoder_hidden_states)
        session = lean_decoder_session(self.model) if self.lean_onnx_decoder else None
        if session is not None:
            return DecoderStep(session, encoder_hidden_states.detach().float().cpu().numpy())
        return ort_step(self.model, encoder_hidden_states)

    def encode(self, features):
        """Run the encoder alone on mel features of any window; returns a ``BaseModelOutput``."""
        key = None
        if self.states_memo is not None:
            key = hashlib.sha1(features.detach().cpu().numpy().tobytes()).hexdigest() + str(tuple(features.shape))
            if key in self.states_memo:
                return self.states_memo[key]
        with torch.inference_mode():
            if self.backend == "torch":
                out = self.model.get_encoder()(features)
            else:
                out = self.model.encoder(input_features=features, attention_mask=None)
        if key is not None and self.states_memo is not None:
            self.states_memo[key] = out
        return out


def load_engine(
    path: str | Path,
    backend: Backend | str = "auto",
    device: Device | str = "auto",
    threads: int = 0,
    dtype: str = "auto",
    **onnx_kwargs,
) -> Engine:
    """Load a HF Whisper directory (PyTorch) or an ONNX export (ONNX Runtime).

    Args:
        path: model directory.
        backend: "auto" picks ONNX for an export directory, PyTorch otherwise.
        device: "auto" (GPU when usable), "cuda" (fail if it cannot run there) or "cpu".
        threads: CPU threads for PyTorch (process-wide) and ONNX Runtime's intra-op pool (0: their defaults).
        dtype: PyTorch weights: "float32", "float16", "bfloat16" or "auto" (float16 on CUDA, float32 on CPU).
            An ONNX export's precision is its variant folder.
        onnx_kwargs: passed to :func:`mkdeploy.transcription.ort.load_ort_model` (e.g. ``variant``).
    """
    path = check_model_dir(path)
    set_torch_threads(threads)
    if backend == "auto":
        backend = "onnx" if is_onnx_dir(path) else "torch"
    if backend == "onnx":
        given = onnx_kwargs.get("options") or OrtOptions()
        if threads and not given.threads:  # one thread count for every engine, whatever else was set
            onnx_kwargs["options"] = replace(given, threads=threads)
        model, processor, provider = load_ort_model(path, device=device, **onnx_kwargs)
        dev = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
        return Engine(model, processor, "onnx", dev, provider, path=str(path))
    if is_onnx_dir(path) and not (path / "model.safetensors").exists():
        raise ModelError(f"{path}: an ONNX export; use --backend onnx (or auto)")
    dev = resolve_device(device)
    model, processor = load_whisper(path)
    model.to(dev, dtype=resolve_dtype(dtype, dev)).eval()
    return Engine(model, processor, "torch", dev, path=str(path))
