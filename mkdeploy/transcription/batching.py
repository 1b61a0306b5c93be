"""Batch formation for transcription: which clips decode together, in which encoder window, and their
model inputs (mel features; for long-form audio every sample and an attention mask)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.constants import MEL_FRAMES_PER_S, WINDOW_SAMPLES
from mkdeploy.lean.features import HOP, log_mel
from mkdeploy.models.window import FULL_WINDOW_S, plan_batches, window_features

__all__ = ["WINDOW_SAMPLES", "ModelInputs", "model_inputs", "plan_batches"]
from mkdeploy.transcription.engine import Engine


@dataclass
class ModelInputs:
    """One batch's inputs on the model's device.

    Attributes:
        features: [B, mels, frames] log-mel features.
        attention_mask: long-form audio's frame mask (None for clips of at most 30 s).
        window_s: the encoder window the batch is encoded in.
        longest: the longest clip, in samples.
    """

    features: torch.Tensor
    attention_mask: torch.Tensor | None
    window_s: int
    longest: int

    @property
    def long_form(self) -> bool:
        """Over 30 s: ``generate`` walks the audio window by window."""
        return self.longest > WINDOW_SAMPLES

    @property
    def short(self) -> bool:
        """Encoded in a window shorter than Whisper's 30 s."""
        return self.window_s < FULL_WINDOW_S

    def kwargs(self) -> dict[str, torch.Tensor]:
        kw = {"input_features": self.features}
        if self.attention_mask is not None:
            kw["attention_mask"] = self.attention_mask
        return kw

    def select(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """:meth:`kwargs` of some rows (a fallback decodes them again)."""
        return {k: v[rows] for k, v in self.kwargs().items()}


def _features(fe, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    if max(len(a) for a in audios) > fe.n_samples:
        # Long-form: keep every sample; generate() walks the audio window by window (seeking on the
        # last timestamp), so nothing past 30 s is dropped.
        inputs = fe(
            list(audios),
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            truncation=False,
            padding="longest",
            return_attention_mask=True,
        )
        if inputs.input_features.shape[-1] >= fe.nb_max_frames:
            return inputs.input_features, inputs.attention_mask
    inputs = fe(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
    return inputs.input_features, inputs.attention_mask


def frame_mask(audios: Sequence[np.ndarray], frames: int) -> torch.Tensor:
    """``WhisperFeatureExtractor``'s attention mask: 1 for each hop-160 frame that starts inside the clip."""
    mask = torch.zeros(len(audios), frames, dtype=torch.int32)
    for b, a in enumerate(audios):
        mask[b, : -(-len(a) // HOP)] = 1
    return mask


def model_inputs(engine: Engine, audios: Sequence[np.ndarray], window_s: int = FULL_WINDOW_S) -> ModelInputs:
    """Mel features (and the long-form attention mask) of ``audios`` on the engine's device, in
    ``window_s`` when every clip fits it, else Whisper's 30 s window (or long-form)."""
    longest = max(len(a) for a in audios)
    fe = engine.processor.feature_extractor
    mask = None
    if engine.backend == "onnx" and longest <= WINDOW_SAMPLES:
        # an ONNX export reads the torch-free runtime's features (mkdeploy.lean.features), so both engines feed
        # its sessions the same numbers: an int8 graph's dynamic activation scales turn the ~1e-5 differences
        # of another STFT into different tokens
        if not (window_s < FULL_WINDOW_S and longest <= window_s * SAMPLE_RATE):
            window_s = FULL_WINDOW_S
            mask = frame_mask(audios, FULL_WINDOW_S * MEL_FRAMES_PER_S)
        features = torch.from_numpy(log_mel(audios, fe.feature_size, window_s * SAMPLE_RATE))
    elif window_s < FULL_WINDOW_S and longest <= window_s * SAMPLE_RATE:
        features = window_features(fe, audios, window_s)
    else:
        window_s = FULL_WINDOW_S
        features, mask = _features(fe, audios)
    dtype = getattr(engine.model, "dtype", torch.float32)
    features = features.to(engine.device, dtype=dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32)
    return ModelInputs(features, mask.to(engine.device) if mask is not None else None, window_s, longest)
