"""Window packing: several short clips share one 30 s encoder window.

On a CPU, Whisper's cost is the encoder, and the encoder always reads a 30 s window: a 3 s request pays
for 27 s of padding, and stacking requests in a batch multiplies that cost instead of sharing it
(benchmarks/results/serve_load_cpu.md: batching 1.08x on 2 cores). Packing lays short clips end to end in
one window, separated by silence, decodes the window once with timestamps, and gives each clip the
segments that fall inside its own stretch of the window. Whisper is trained on 30 s windows that hold
several utterances, so a packed window is the kind of input it knows.

Safety first: a segment whose time span reaches into a second clip's audio cannot be attributed with
certainty, so the clips it touches are decoded again on their own (as the unpacked path would); a clip left
without any segment (its words went into a neighbour's, or nowhere) is decoded again with both neighbours.
A caller never receives words spoken in another caller's audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mkdeploy.constants import CHUNK_S, SAMPLE_RATE
from mkdeploy.results import Segment, Transcription
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber, pre_gate

#: seconds of silence between packed clips: Whisper closes a segment at a pause this long
GAP_S = 1.0
#: clips longer than this are decoded on their own
MAX_PACKED_CLIP_S = 10.0
#: margin (s) left at a window's end for its last timestamp
END_MARGIN_S = 1.0
#: usable length of a window: Whisper's, less that margin
WINDOW_S = CHUNK_S - END_MARGIN_S
#: how far (s) a segment may reach into another clip's audio before the window is decoded again unpacked
MAX_OVERLAP_S = 0.5


@dataclass
class PackedWindow:
    """Clips laid end to end: ``members`` index the caller's list; ``spans`` are their (start, end) in
    seconds inside ``audio``."""

    members: list[int]
    spans: list[tuple[float, float]]
    audio: np.ndarray


def plan_windows(durations: Sequence[float], gap_s: float = GAP_S, window_s: float = WINDOW_S) -> list[list[int]]:
    """Group clip indices into windows, first fit in input order; clips over :data:`MAX_PACKED_CLIP_S`
    stand alone."""
    windows: list[list[int]] = []
    used: list[float] = []
    for i, d in enumerate(durations):
        if d > MAX_PACKED_CLIP_S:
            windows.append([i])
            used.append(window_s + 1)  # closed
            continue
        for w, u in enumerate(used):
            if u + gap_s + d <= window_s:
                windows[w].append(i)
                used[w] = u + gap_s + d
                break
        else:
            windows.append([i])
            used.append(d)
    return windows


def pack(audios: Sequence[np.ndarray], members: list[int], gap_s: float = GAP_S) -> PackedWindow:
    """One window's audio with ``gap_s`` of silence between clips."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    parts, spans, t = [], [], 0.0
    for k, i in enumerate(members):
        if k:
            parts.append(gap)
            t += gap_s
        parts.append(np.asarray(audios[i], np.float32))
        spans.append((t, t + len(audios[i]) / SAMPLE_RATE))
        t += len(audios[i]) / SAMPLE_RATE
    return PackedWindow(members, spans, np.concatenate(parts))


def assign_segments(
    segments: Sequence[Segment], spans: Sequence[tuple[float, float]], max_overlap_s: float = MAX_OVERLAP_S
) -> tuple[list[list[Segment]], set[int]]:
    """Each segment to the clip whose stretch holds its midpoint (stretches meet in the middle of each gap),
    re-timed to that clip's start.

    Whisper's timestamps are coarse (tiny.en int8 gives whole seconds, and a segment starts where the last
    one ended), so the edges are not trusted; the overlap is. A segment reaching more than ``max_overlap_s``
    into another clip's audio may hold that clip's words: every clip it touches is marked for decoding
    apart, and the segment is dropped.

    Returns:
        (segments per clip, the clips to decode apart). A clip that got no segment is decoded apart with
        both its neighbours.
    """
    out: list[list[Segment]] = [[] for _ in spans]
    redo: set[int] = set()
    bounds = [(spans[k][1] + spans[k + 1][0]) / 2 for k in range(len(spans) - 1)]
    for s in segments:
        k = sum((s.start + s.end) / 2 > b for b in bounds)
        touched = {j for j, (a, b) in enumerate(spans) if j != k and min(s.end, b) - max(s.start, a) > max_overlap_s}
        if touched:
            redo |= touched | {k}
            continue
        a, b = spans[k]
        start, end = max(0.0, s.start - a), min(b - a, max(0.0, s.end - a))
        out[k].append(Segment(round(start, 3), round(end, 3), s.text, s.tokens))
    for k, segs in enumerate(out):
        if not segs:
            # its words went nowhere or into a neighbour's segment (a segment further away would have reached
            # across the neighbour's audio and been caught above): both neighbours are decoded apart as well
            redo |= {j for j in (k - 1, k, k + 1) if 0 <= j < len(spans)}
    return out, redo


def transcribe_packed(
    tr: WhisperTranscriber, audios: Sequence[np.ndarray], options: TranscriptionOptions
) -> tuple[list[Transcription], int]:
    """Transcribe ``audios`` with short clips packed into shared windows.

    Args:
        tr: the transcriber.
        audios: 16 kHz clips.
        options: decoding options; packed windows are decoded with timestamps, and Whisper's no-speech
            gate (a per-window score) is left to the VAD pre-check for packed clips.

    Returns:
        (one Transcription per input in order, how many clips were decoded again unpacked).
    """
    # silence and (with options.vad_filter) clips without speech are answered before packing: inside a
    # window the VAD would hear the neighbours' speech
    results: list[Transcription | None] = [pre_gate(a, options) for a in audios]
    live = [i for i in range(len(audios)) if results[i] is None]
    plans = [[live[k] for k in w] for w in plan_windows([len(audios[i]) / SAMPLE_RATE for i in live])]
    singles = [w[0] for w in plans if len(w) == 1]
    windows = [pack(audios, w) for w in plans if len(w) > 1]
    redone = 0
    if windows:
        decoded = tr.decode_timestamped([w.audio for w in windows], options)
        for w, segments in zip(windows, decoded):
            parts, redo = assign_segments(segments, w.spans)
            for k, (i, segs) in enumerate(zip(w.members, parts)):
                if k in redo:
                    singles.append(i)
                    redone += 1
                    continue
                text = " ".join(s.text for s in segs).strip()
                tokens = [t for s in segs for t in s.tokens]
                results[i] = Transcription("", text, segs, len(audios[i]) / SAMPLE_RATE, tokens)
    if singles:
        singles.sort()
        alone = replace(options, vad_filter=False)  # already checked above
        for i, r in zip(singles, tr.transcribe_arrays([audios[i] for i in singles], alone)):
            results[i] = r
    return [r for r in results if r is not None], redone
