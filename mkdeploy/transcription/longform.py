"""Batched long-form transcription: long audio cut at voice-activity pauses into pieces of at most 30 s,
decoded together as one batch, their results joined with times mapped back (faster-whisper's
``BatchedInferencePipeline`` and WhisperX do the same; faster-whisper reports ~4x over sequential windows
at batch 8 on a GPU).

Sequential long-form decoding (``generate`` seeking window by window) cannot batch one file's windows,
since each window starts where the last timestamp of the previous one ended. Cutting at pauses needs no
such chain: no word is cut in two, and the pieces are independent, so a batch holds eight of them and a
server can interleave them with other callers' clips. The cost: no text context across pieces (Whisper's
previous-text conditioning), and speech that the VAD misses is not transcribed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.results import Segment, Transcription, Word
from mkdeploy.transcription.vad import speech_spans

#: longest piece, in seconds: Whisper's window
MAX_PIECE_S = 30.0
#: room kept around each speech span when cutting, in ms (Whisper drops a word cut at its first phoneme)
PIECE_PAD_MS = 200


@dataclass(frozen=True)
class Piece:
    """A stretch of one input: samples ``[start, end)``."""

    start: int
    end: int

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE


def plan_pieces(spans: Sequence[tuple[int, int]], n_samples: int, max_s: float = MAX_PIECE_S) -> list[Piece]:
    """Speech spans (each at most ``max_s``) merged into pieces of at most ``max_s``: neighbours join while
    the piece from the first one's start to the last one's end still fits (WhisperX's ``merge_chunks``).

    Args:
        spans: (start, end) sample indices of speech, in order (:func:`mkdeploy.transcription.vad.speech_spans`).
        n_samples: the audio's length (spans are clipped to it).
        max_s: the longest piece in seconds.
    """
    limit = int(max_s * SAMPLE_RATE)
    pieces: list[Piece] = []
    cur: list[int] | None = None
    for start, end in spans:
        start, end = max(0, start), min(n_samples, end)
        if end <= start:
            continue
        if cur is not None and end - cur[0] <= limit:
            cur[1] = end
            continue
        if cur is not None:
            pieces.append(Piece(cur[0], cur[1]))
        cur = [start, end]
        while cur[1] - cur[0] > limit:  # a span longer than a window (the VAD found no pause): hard cut
            pieces.append(Piece(cur[0], cur[0] + limit))
            cur[0] += limit
    if cur is not None:
        pieces.append(Piece(cur[0], cur[1]))
    return pieces


def cut_at_pauses(audio: np.ndarray) -> list[Piece]:
    """Pieces of ``audio`` of at most 30 s cut at Silero VAD's pauses (a speech stretch over 29 s is split by
    Silero at its longest pause, so a piece keeps 1 s of room for the padding)."""
    return plan_pieces(speech_spans(audio, MAX_PIECE_S - 1, pad_ms=PIECE_PAD_MS), len(audio))


def shift(result: Transcription, offset: float, piece_len: float) -> list[Segment]:
    """A piece's segments on the input's clock (one segment covering the piece when it has none)."""
    if not result.text:
        return []
    segs = result.segments or [Segment(0.0, round(piece_len, 3), result.text, list(result.tokens))]
    out = []
    for s in segs:
        words = [replace(w, start=round(w.start + offset, 2), end=round(w.end + offset, 2)) for w in s.words]
        out.append(replace(s, start=round(s.start + offset, 3), end=round(s.end + offset, 3), words=words))
    return out


def join(path: str, duration: float, parts: Sequence[tuple[Piece, Transcription]]) -> Transcription:
    """One input's result from its pieces' results, in order: text joined, segments and words on the
    input's clock, tokens concatenated, the language of the first piece with text."""
    segments: list[Segment] = []
    words: list[Word] = []
    tokens: list[int] = []
    texts = []
    for piece, r in parts:
        segs = shift(r, piece.offset, (piece.end - piece.start) / SAMPLE_RATE)
        segments += segs
        in_segments = [w for s in segs for w in s.words]
        # words live in segments when the piece had segments; a piece decoded without them has words only
        words += in_segments or [
            replace(w, start=round(w.start + piece.offset, 2), end=round(w.end + piece.offset, 2)) for w in r.words
        ]
        tokens += r.tokens
        if r.text:
            texts.append(r.text)
    spoken = [r for _, r in parts if r.text]
    lp = [r.avg_logprob for r in spoken if r.avg_logprob is not None]
    return Transcription(
        path=path,
        text=" ".join(texts),
        segments=segments,
        duration=duration,
        tokens=tokens,
        gate="" if texts else "vad",
        avg_logprob=float(np.mean(lp)) if lp else None,
        language=spoken[0].language if spoken else None,
        language_probability=spoken[0].language_probability if spoken else None,
        words=words,
    )
