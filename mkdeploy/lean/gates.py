"""What comes back empty instead of a hallucinated caption, as rules every engine applies: before decoding,
digital silence and (when a speech detector is given) clips without speech; after decoding, openai/whisper's
no-speech test. Whisper writes a caption for anything it hears (README, Troubleshooting)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mkdeploy.audio import SAMPLE_RATE, SILENCE_PEAK
from mkdeploy.errors import MissingExtraError
from mkdeploy.lean.greedy import SpeechScore, no_speech_verdict
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import Transcription

#: audio -> whether it holds speech (Silero VAD: :func:`mkdeploy.transcription.vad.has_speech`)
SpeechCheck = Callable[[np.ndarray], bool]


def pre_gate(
    audio: np.ndarray, options: TranscriptionOptions, has_speech: SpeechCheck | None = None
) -> Transcription | None:
    """An empty result for a clip that must not be decoded (digital silence; no speech by the VAD when
    ``options.vad_filter``), else None.

    Raises:
        MissingExtraError: ``options.vad_filter`` without a speech detector (silero-vad not installed).
    """
    duration = len(audio) / SAMPLE_RATE
    if not len(audio) or float(np.abs(audio).max()) < SILENCE_PEAK:
        return Transcription("", "", [], duration, silent=True, gate="silence")
    if options.vad_filter:
        if has_speech is None:
            raise MissingExtraError("serve", "the VAD", "silero-vad", " (or drop --vad)")
        if not has_speech(audio):
            return Transcription("", "", [], duration, gate="vad")
    return None


def apply_no_speech(t: Transcription, score: SpeechScore, options: TranscriptionOptions) -> None:
    """openai/whisper's no-speech test on one result (``transcribe()`` in its transcribe.py): the scores are
    recorded; text, segments and tokens emptied in place when it fails."""
    assert options.no_speech_threshold is not None
    t.no_speech_prob, t.avg_logprob = score.no_speech_prob, score.avg_logprob
    if no_speech_verdict(score, options.no_speech_threshold, options.logprob_threshold):
        t.text, t.segments, t.tokens, t.gate = "", [], [], "no_speech"
