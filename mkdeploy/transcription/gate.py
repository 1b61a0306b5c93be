"""What comes back empty instead of a hallucinated caption: digital silence and, with the VAD, clips
without speech before decoding (:func:`pre_gate`); after decoding, openai/whisper's no-speech test
(:func:`no_speech_gate`). Whisper writes a caption for anything it hears (README, Troubleshooting)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mkdeploy.audio import SAMPLE_RATE, SILENCE_PEAK
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import Transcription
from mkdeploy.transcription.decoding import SpeechScore, no_speech_token, ort_logits, score_speech, torch_logits
from mkdeploy.transcription.engine import Engine
from mkdeploy.transcription.vad import has_speech


def pre_gate(audio: np.ndarray, options: TranscriptionOptions) -> Transcription | None:
    """An empty result for a clip that must not be decoded (digital silence; no speech by the VAD when
    ``options.vad_filter``), else None."""
    duration = len(audio) / SAMPLE_RATE
    if not len(audio) or float(np.abs(audio).max()) < SILENCE_PEAK:
        return Transcription("", "", [], duration, silent=True, gate="silence")
    if options.vad_filter:
        if not has_speech(audio):
            return Transcription("", "", [], duration, gate="vad")
    return None


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
            states.device,
        )
        for i, fresh in zip(todo, found):
            scores[i] = fresh
    assert options.no_speech_threshold is not None
    for r, sc in zip(results, scores):
        assert sc is not None
        r.no_speech_prob, r.avg_logprob = sc.no_speech_prob, sc.avg_logprob
        skip = sc.no_speech_prob > options.no_speech_threshold
        if options.logprob_threshold is not None and sc.avg_logprob > options.logprob_threshold:
            skip = False
        if skip:
            r.text, r.segments, r.tokens, r.gate = "", [], [], "no_speech"
