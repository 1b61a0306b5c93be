"""openai/whisper's reading of one window's timestamp tokens into segments, and how far the window was
consumed (its ``transcribe``'s seek rule). Shared by every engine that walks long audio window by window:
CTranslate2 exports (:mod:`mkdeploy.transcription.exported`) and ONNX exports (:mod:`mkdeploy.lean.transcriber`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mkdeploy.constants import TIME_PRECISION_S

#: (start s, end s, text) of one segment inside its window
Span = tuple[float, float, str]


def window_spans(
    ids: Sequence[int], ts_begin: int, decode: Callable[[list[int]], str], duration: float
) -> tuple[list[Span], float]:
    """``([(start, end, text), ...], seconds consumed)`` of one window's generated tokens.

    The tokens are cut into segments at each pair of timestamp tokens ((id - ``<|0.00|>``'s id) * 0.02 s).
    When the output does not end with a lone timestamp, the text after the last pair is a sentence the
    window cut, so the window counts as consumed only up to that pair and the next window starts there.

    Args:
        ids: the window's generated tokens (end-of-text excluded), timestamps included.
        ts_begin: ``<|0.00|>``'s id.
        decode: text of a list of text tokens.
        duration: the window's audio, in seconds.
    """
    is_ts = [i >= ts_begin for i in ids]

    def seconds(i: int) -> float:
        return round((ids[i] - ts_begin) * TIME_PRECISION_S, 2)

    def span(a: int, b: int) -> Span:
        """ids[a:b] as a segment: its first and last timestamps (the window's bounds when missing)."""
        text = decode([i for i, t in zip(ids[a:b], is_ts[a:b]) if not t]).strip()
        return (seconds(a) if is_ts[a] else 0.0, seconds(b - 1) if is_ts[b - 1] else duration, text)

    single_ending = len(ids) >= 2 and is_ts[-1] and not is_ts[-2]
    pairs = [k for k in range(1, len(ids)) if is_ts[k - 1] and is_ts[k]]
    if not pairs:
        spans = [span(0, len(ids))] if ids else []
        return inside(spans, duration), duration
    cuts = pairs + ([len(ids)] if single_ending else [])
    spans, last = [], 0
    for cut in cuts:
        if cut > last:
            spans.append(span(last, cut))
        last = cut
    consumed = duration if single_ending else seconds(pairs[-1] - 1)
    return inside(spans, duration), consumed


def inside(spans: list[Span], duration: float) -> list[Span]:
    """The spans with text, their times clipped into ``[0, duration]`` and each ending at or after its start
    (a model's timestamps can point past a short window's audio, into its padding)."""
    out = []
    for s, e, t in spans:
        s = min(max(s, 0.0), duration)
        out.append((s, min(max(e, s), duration), t))
    return [x for x in out if x[2]]


def next_seek(seek: int, window_samples: int, consumed_s: float, sample_rate: int) -> int:
    """Where the next window starts: after the whole window when it was consumed (or nothing was), else at
    its last complete segment's end."""
    whole = consumed_s <= 0 or consumed_s >= window_samples / sample_rate - TIME_PRECISION_S
    return seek + window_samples if whole else seek + round(consumed_s * sample_rate)


def consumed_tokens(ids: Sequence[int], ts_begin: int, consumed: float, duration: float) -> list[int]:
    """The window's tokens up to its last timestamp at or before ``consumed`` seconds (a sentence the window
    cut is decoded again from the next window); all of them when the window was consumed whole."""
    if consumed >= duration - TIME_PRECISION_S:
        return list(ids)
    for k in range(len(ids) - 1, -1, -1):
        if ids[k] >= ts_begin and (ids[k] - ts_begin) * TIME_PRECISION_S <= consumed + 1e-6:
            return list(ids[:k])
    return list(ids)
