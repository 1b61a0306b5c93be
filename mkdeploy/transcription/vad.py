"""Voice-activity pre-check with Silero VAD (its ONNX model, run by ONNX Runtime).

Whisper was trained on captioned audio and writes a caption for whatever it hears: on white noise the base
model wrote "I'm going to put the", on brown noise "Thank you.", on 50 Hz hum "you" (issue 15). Its own
no-speech probability (:mod:`mkdeploy.transcription.runtime`) catches part of that; a dedicated detector catches the
rest before any decoding is paid for. Silero VAD (https://github.com/snakers4/silero-vad, the detector
faster-whisper's ``vad_filter`` uses) ships its ONNX model inside the ``silero-vad`` wheel, so nothing is
downloaded at run time. It is an optional dependency (the ``[serve]`` extra).
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.errors import MissingExtraError

#: Silero's speech-probability threshold (its default).
VAD_THRESHOLD = 0.5
#: Shortest stretch counted as speech, in ms: Silero's default (250) lets single clicks of hum through.
MIN_SPEECH_MS = 250

_lock = threading.Lock()  # the ONNX wrapper keeps recurrent state between chunks: one caller at a time


@lru_cache(maxsize=1)
def _model():
    try:
        # optional heavy dependency: only the VAD needs it (pip install 'mkdeploy[serve]')
        from silero_vad import load_silero_vad  # optional [serve] extra
    except ImportError:
        raise MissingExtraError("serve", "the VAD", "silero-vad", " (or drop --vad)") from None
    return load_silero_vad(onnx=True)


def speech_seconds(audio: np.ndarray, threshold: float = VAD_THRESHOLD, min_speech_ms: int = MIN_SPEECH_MS) -> float:
    """Seconds of speech Silero VAD finds in 16 kHz mono ``audio``.

    Args:
        audio: float32 samples in [-1, 1] at 16 kHz.
        threshold: speech probability above which a 32 ms frame counts as speech.
        min_speech_ms: shorter detections are dropped.

    Returns:
        total duration of the detected speech stretches (0.0: no speech).
    """
    spans = speech_spans(audio, threshold=threshold, min_speech_ms=min_speech_ms)
    return sum(end - start for start, end in spans) / SAMPLE_RATE


def speech_spans(
    audio: np.ndarray,
    max_speech_s: float = float("inf"),
    threshold: float = VAD_THRESHOLD,
    min_speech_ms: int = MIN_SPEECH_MS,
    pad_ms: int = 30,
) -> list[tuple[int, int]]:
    """Silero VAD's speech stretches of ``audio`` as (start, end) sample indices, each at most
    ``max_speech_s`` long (Silero splits a longer one at its longest pause, else hard), widened by
    ``pad_ms`` each side (Silero's default 30; cutting long audio into pieces wants more, since Whisper
    drops a word cut at its first phoneme)."""
    import torch  # heavy; imported on use so the core import stays light

    model = _model()  # first: it names the extra when silero-vad is missing
    from silero_vad import get_speech_timestamps  # optional [serve] extra

    with _lock:
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            model,
            threshold=threshold,
            sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=min_speech_ms,
            max_speech_duration_s=max_speech_s,
            speech_pad_ms=pad_ms,
        )
    return [(int(st["start"]), int(st["end"])) for st in stamps]


def has_speech(audio: np.ndarray, threshold: float = VAD_THRESHOLD) -> bool:
    """Whether Silero VAD finds any speech in ``audio`` (see :func:`speech_seconds`)."""
    return speech_seconds(audio, threshold) > 0.0
