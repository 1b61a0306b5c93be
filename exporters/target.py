"""What the exports for another engine (``--format ct2``, ``--format ggml``) share: the manifest's common
fields, the parity record, and the alignment heads written for the target's word timestamps (CTranslate2's
``align``, whisper.cpp's DTW): the model's own list when every head exists in it, else the heads measured on
the parity clips. A student pruned from a teacher keeps the teacher's list, which can name decoder layers it
no longer has (5 of tiny.en's 8 heads sit in layer 3; faster-whisper #688)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.evaluate import error_rates
from mkdeploy.options import scoring_options
from mkdeploy.transcription.alignment import choose_alignment_heads, model_alignment_heads
from mkdeploy.transcription.runtime import WhisperTranscriber
from mkdeploy.version import version_info


@dataclass
class TargetManifest:
    """Written to OUT/mkdeploy_export.json by an export for another engine (each adds its own fields).

    Attributes:
        alignment_heads: ``[[layer, head], ...]`` for the target's word timestamps; ``heads_source`` says where
            they came from (:func:`student_alignment_heads`).
        parity: per parity clip, PyTorch's text and the target engine's; ``identical`` counts equal ones and
            ``word_errors`` the words the target's differ by.
        warnings: what the target does differently from mkd's own runtime (short windows, ...).
    """

    source: str
    source_sha256: str
    format: str = ""
    quantization: str = ""
    alignment_heads: list[list[int]] = field(default_factory=list)
    heads_source: str = ""
    parity: list[dict] = field(default_factory=list)
    identical: int = 0
    word_errors: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    mkdeploy: dict = field(default_factory=version_info)

    def record_parity(self, engine: str, ref: Sequence[str], got: Sequence[str], audios: Sequence[np.ndarray]) -> None:
        """Store each clip's PyTorch and ``engine`` texts, how many are identical and the words they differ by."""
        self.parity = [
            {"pytorch": r, engine: g, "seconds": round(len(a) / SAMPLE_RATE, 2)} for r, g, a in zip(ref, got, audios)
        ]
        self.identical = sum(r == g for r, g in zip(ref, got))
        self.word_errors = sum(u.word_errors for u in error_rates(list(ref), list(got)).utterances)


def student_alignment_heads(tr: WhisperTranscriber, audios: list[np.ndarray]) -> tuple[list[list[int]], str]:
    """``([[layer, head], ...], where they come from)`` for the model behind ``tr``.

    Args:
        tr: the PyTorch model's transcriber.
        audios: 16 kHz clips to measure on when the model's own list is missing or names heads it lacks.

    Returns:
        the heads and a phrase for the manifest's ``heads_source``.
    """
    heads = model_alignment_heads(tr.model)
    if heads is not None:
        return heads, "the model's generation config"
    return _measure_heads(tr, audios), "measured on the parity clips"


def _measure_heads(tr: WhisperTranscriber, audios: list[np.ndarray]) -> list[list[int]]:
    """The heads whose cross-attention best follows time on the clips
    (:func:`mkdeploy.transcription.alignment.choose_alignment_heads`)."""
    import torch  # heavy; only export needs it

    processor = tr.engine.processor
    texts = tr.transcribe_arrays(audios, scoring_options("en"))
    feats = processor.feature_extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.inference_mode():
        states = tr.model.get_encoder()(feats).last_hidden_state
    prompt = tr.engine.prompt(scoring_options("en"))
    eot = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    durations = [len(a) / SAMPLE_RATE for a in audios]
    seqs = [t.tokens for t in texts]
    return choose_alignment_heads(tr.model, processor.tokenizer, states, prompt, seqs, durations, eot)
