"""What comes back empty instead of a hallucinated caption: digital silence and, with the VAD, clips
without speech before decoding (:func:`pre_gate`); after decoding, openai/whisper's no-speech test
(:func:`no_speech_gate`). Whisper writes a caption for anything it hears (README, Troubleshooting)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mkdeploy.lean import gates
from mkdeploy.lean.greedy import SpeechScore, score_speech
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import Transcription
from mkdeploy.transcription.decoding import no_speech_token, ort_logits, torch_logits
from mkdeploy.transcription.engine import Engine
from mkdeploy.transcription.vad import has_speech

__all__ = ["no_speech_gate", "pre_gate"]


def pre_gate(audio: np.ndarray, options: TranscriptionOptions) -> Transcription | None:
    """:func:`mkdeploy.lean.gates.pre_gate` with Silero VAD as the speech detector."""
    return gates.pre_gate(audio, options, has_speech)


def no_speech_gate(
    engine: Engine,
    results: list[Transcription],
    states,
    options: TranscriptionOptions,
    known: Sequence[SpeechScore | None] | None = None,
) -> None:
    """openai/whisper's no-speech test (``transcribe()`` in its transcribe.py): a clip is empty when
    ``no_speech_prob > no_speech_threshold`` unless ``avg_logprob > logprob_threshold``. Scores are
    recorded on every result; the gate empties text, segments and tokens in place.

    Args:
        engine: the model.
        results: the batch's transcriptions.
        states: the batch's encoder states.
        options: the thresholds.
        known: scores already read while decoding (None where not); the others take one teacher-forced
            decoder pass.
    """
    gen = engine.model.generation_config
    tok = engine.processor.tokenizer
    scores: list[SpeechScore | None] = list(known) if known is not None else [None] * len(results)
    todo = [i for i, sc in enumerate(scores) if sc is None]
    if todo:
        logits_fn = (torch_logits if engine.backend == "torch" else ort_logits)(engine.model, states[todo])
        found = score_speech(
            logits_fn,
            engine.prompt(options),
            [results[i].tokens for i in todo],
            gen,
            no_speech_token(tok, gen),
        )
        for i, fresh in zip(todo, found):
            scores[i] = fresh
    for r, sc in zip(results, scores):
        assert sc is not None
        gates.apply_no_speech(r, sc, options)
