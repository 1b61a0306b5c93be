"""The alignment heads an export writes for the target's word timestamps (CTranslate2's ``align``,
whisper.cpp's DTW): the model's own list when every head exists in it, else the heads measured on the parity
clips. A student pruned from a teacher keeps the teacher's list, which can name decoder layers it no longer has
(5 of tiny.en's 8 heads sit in layer 3; faster-whisper #688)."""

from __future__ import annotations

import numpy as np

from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.options import scoring_options
from mkdeploy.transcription.alignment import choose_alignment_heads, model_alignment_heads
from mkdeploy.transcription.runtime import WhisperTranscriber


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
