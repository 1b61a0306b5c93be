"""The one decoding core: Whisper's greedy loops and rules over numpy logits, for every engine.

Hugging Face's Whisper ``generate`` is general (long-form seeking, timestamps, beams, fallback) and pays
for it on every step: measured on tiny.en with ONNX Runtime int8 on 2 CPU cores, a decoder step took
1.1 ms in ONNX Runtime and about 3 ms more around it in ``generate``. Once the encoder runs on a short
window, that overhead is most of a short clip's time. The loops here do what ``generate`` does for greedy
decoding (the same prompt, ``suppress_tokens`` at every step, ``begin_suppress_tokens`` at the first,
end-of-text, the token cap; with timestamps, openai/whisper's ``ApplyTimestampRules``) and nothing else.
Tokens are identical to ``generate``'s (tests/test_windows.py).

A step function is the only thing an engine supplies: the PyTorch model (:func:`mkdeploy.transcription.decoding.torch_step`),
optimum's wrapper, or the raw ONNX Runtime session (:class:`mkdeploy.lean.sessions.DecoderStep`). Ids go in
and logits come out as numpy arrays, so the rules below exist once, whichever engine runs the network.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from mkdeploy.constants import SAMPLE_RATE

#: step(input_ids [B, S] int64, past) -> (logits of every new position [B, S, V] float32, past)
StepFn = Callable[[np.ndarray, Any], tuple[np.ndarray, Any]]
#: logits_fn(input_ids [B, S] int64) -> logits of every position [B, S, V], the encoder states closed over
LogitsFn = Callable[[np.ndarray], np.ndarray]

#: called before every decoder step of the decoding loops (the loops here and ``generate``, through
#: ``StepBoundary``); None outside :func:`between_steps`
_between_steps: ContextVar[Callable[[], None] | None] = ContextVar("mkd_between_steps", default=None)


class DecodeCancelled(Exception):
    """Raised by a :func:`between_steps` hook to abandon the batch being decoded (its callers are gone)."""


@contextmanager
def between_steps(hook: Callable[[], None] | None) -> Iterator[None]:
    """Run ``hook`` before every decoder step of whatever this thread decodes inside the block.

    The decoding loop's state (tokens, KV cache) stays where it is while the hook runs, so the hook may
    decode other clips on the same model and the loop resumes where it stopped: this is how the server
    lets a short request run between two steps of a long upload's pieces (mkdeploy/serve/batcher.py). The
    hook may raise :class:`DecodeCancelled` to abandon the batch. ``between_steps(None)`` turns a hook off
    for what the hook itself decodes. Not for CUDA graphs: a replayed graph owns its buffers.
    """
    token = _between_steps.set(hook)
    try:
        yield
    finally:
        _between_steps.reset(token)


def yielding() -> bool:
    """Whether this thread decodes under a :func:`between_steps` hook."""
    return _between_steps.get() is not None


def step_boundary() -> None:
    """Where a decoding loop may yield: runs the :func:`between_steps` hook, if any."""
    hook = _between_steps.get()
    if hook is not None:
        hook()


def _zlib_ratio(data: bytes) -> float:
    return len(data) / len(zlib.compress(data)) if data else 0.0


def compression_ratio(tokens: Sequence[int], vocab_size: int) -> float:
    """Hugging Face's ratio on token bytes (``_retrieve_compression_ratio``): raw / zlib-compressed length
    (its loop test is 1.35, the decoding option ``compression_ratio_threshold``)."""
    width = int(math.log2(vocab_size) / 8) + 1
    return _zlib_ratio(b"".join(int(t).to_bytes(width, "little") for t in tokens))


def text_compression_ratio(text: str) -> float:
    """openai/whisper's ``compression_ratio`` (its utils.py): UTF-8 bytes over their zlib-compressed length,
    0 for empty text (its loop test is 2.4, :data:`mkdeploy.constants.COMPRESSION_RATIO_MAX`)."""
    return _zlib_ratio(text.encode("utf-8"))


def token_cap(n_samples: int, tokens_per_second: float, limit: int) -> int:
    """The loop guard of a clip (or batch) of ``n_samples`` up to 30 s: ``tokens_per_second`` per second
    plus 20, at most ``limit`` (the decoder's window less the prompt). Speech runs at about 4 tokens/s; a
    repetition loop otherwise runs to the limit."""
    return min(limit, int(tokens_per_second * n_samples / SAMPLE_RATE) + 20)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log(softmax(x)) over the last axis, in float32 (-inf entries stay -inf)."""
    top = np.max(x, axis=-1, keepdims=True)
    shifted = x - top
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    """softmax over the last axis."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _eos(generation_config) -> int:
    eos = generation_config.eos_token_id
    return int(eos[0] if isinstance(eos, (list, tuple)) else eos)


@dataclass
class SpeechScore:
    """openai/whisper's two signals for "this was not speech" (``DecodingResult`` in its decoding.py).

    Attributes:
        no_speech_prob: probability of ``<|nocaptions|>`` read at the ``<|startoftranscript|>`` position.
        avg_logprob: summed log-probability of the tokens and end-of-text, over their count + 1.
    """

    no_speech_prob: float
    avg_logprob: float


@dataclass
class GreedyResult:
    """Tokens generated for one clip (prompt and end-of-text excluded) and whether it must be redone hotter.

    Attributes:
        tokens: the generated text tokens.
        needs_fallback: the output failed the compression-ratio check (a repetition loop): decode it again
            at the next temperature.
        score: the no-speech signals read during decoding (when asked for and the clip ended on
            end-of-text; else None and :func:`score_speech` gives them).
    """

    tokens: list[int]
    needs_fallback: bool = False
    score: SpeechScore | None = None


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator | None) -> np.ndarray:
    """Greedy at temperature 0, else a sample from softmax(logits / temperature)."""
    if temperature <= 0 or rng is None:
        return logits.argmax(-1)
    probs = softmax(logits / temperature)
    return np.array([rng.choice(len(p), p=p / p.sum()) for p in probs.astype(np.float64)])


def greedy_decode(
    step: StepFn,
    batch: int,
    prompt: list[int],
    generation_config,
    max_new_tokens: int,
    vocab_size: int,
    compression_ratio_threshold: float | None = None,
    no_speech_id: int | None = None,
    temperature: float = 0.0,
    rng: np.random.Generator | None = None,
) -> list[GreedyResult]:
    """Greedy (or, at a temperature, sampled) decoding of ``batch`` clips whose encoder states ``step``
    closes over.

    Args:
        step: runs the decoder on new ids with the cache from the previous call (None at first).
        batch: number of clips.
        prompt: the decoder prompt.
        generation_config: the model's (or anything with the same attributes); ``suppress_tokens``,
            ``begin_suppress_tokens`` and ``eos_token_id`` are read from it.
        max_new_tokens: cap on generated tokens per clip (end-of-text included, as in ``generate``).
        vocab_size: for the compression ratio.
        compression_ratio_threshold: flag outputs above it for the fallback (None: never).
        no_speech_id: also read each clip's :class:`SpeechScore` from the logits the loop already has, as
            :func:`score_speech` reads them from a second, teacher-forced pass (the no-speech probability at
            the first prompt position; the log-probabilities after ``suppress_tokens`` only). That pass
            recomputed the cross-attention over 1500 encoder frames: ~9% of base's time on 2 CPU cores.
        temperature: 0 is greedy; above it, tokens are sampled (the temperature fallback).
        rng: the sampler's generator (seeded by the caller, so a transcript does not depend on the process).

    Returns:
        one :class:`GreedyResult` per clip.
    """
    eos = _eos(generation_config)
    suppress = np.array(list(generation_config.suppress_tokens or []), dtype=np.int64)
    begin = np.array(list(generation_config.begin_suppress_tokens or []), dtype=np.int64)
    ids = np.array([prompt] * batch, dtype=np.int64)
    finished = [False] * batch
    out: list[list[int]] = [[] for _ in range(batch)]
    past = None
    no_speech: list[float] = []
    logp_sum = [0.0] * batch
    for i in range(max_new_tokens):
        step_boundary()
        every, past = step(ids, past)
        if i == 0 and no_speech_id is not None:
            no_speech = softmax(every[:, 0].astype(np.float32))[:, no_speech_id].tolist()
        logits = np.array(every[:, -1], dtype=np.float32)  # a copy: masked in place
        if len(suppress):
            logits[:, suppress] = -np.inf
        logp = log_softmax(logits) if no_speech_id is not None else None  # before begin_suppress, as scored
        if i == 0 and len(begin):
            logits[:, begin] = -np.inf
        nxt = _pick(logits, temperature, rng)
        nxt = np.where(finished, eos, nxt)
        for b, t in enumerate(nxt.tolist()):
            if not finished[b]:
                out[b].append(t)
                finished[b] = t == eos
                if logp is not None:
                    logp_sum[b] += float(logp[b, t])
        if all(finished):
            break
        ids = nxt[:, None].astype(np.int64)
    results = greedy_results(out, eos, vocab_size, compression_ratio_threshold)
    if no_speech_id is not None:
        for b, r in enumerate(results):
            if out[b] and out[b][-1] == eos:  # a clip cut at the cap has no end-of-text score: scored apart
                r.score = SpeechScore(no_speech[b], logp_sum[b] / (len(r.tokens) + 1))
    return results


def greedy_results(
    sequences: list[list[int]], eos: int, vocab_size: int, compression_ratio_threshold: float | None
) -> list[GreedyResult]:
    """Each clip's generated tokens up to its first end-of-text (included in the compression ratio, as
    ``generate`` counts it), flagged for the fallback when they compress better than the threshold."""
    results = []
    for toks in sequences:
        toks = toks[: toks.index(eos) + 1] if eos in toks else toks
        flag = compression_ratio_threshold is not None and (
            compression_ratio(toks, vocab_size) > compression_ratio_threshold
        )
        results.append(GreedyResult([t for t in toks if t != eos], flag))
    return results


def timestamp_rules(logits: np.ndarray, seqs: list[list[int]], ts_begin: int, eos: int, first: bool) -> None:
    """openai/whisper's ``ApplyTimestampRules`` (its decoding.py), in place: timestamps come in pairs except
    before end-of-text, never go back, a segment has nonzero length, the first token is a timestamp of at
    most 1.0 s, and a timestamp is forced when timestamps together outweigh the best text token."""
    if first:
        logits[:, :ts_begin] = -np.inf
        logits[:, ts_begin + 50 + 1 :] = -np.inf  # max_initial_timestamp 1.0 s = 50 steps of 0.02 s
    for k, seq in enumerate(seqs):
        last = len(seq) >= 1 and seq[-1] >= ts_begin
        penultimate = len(seq) < 2 or seq[-2] >= ts_begin
        if last:
            if penultimate:
                logits[k, ts_begin:] = -np.inf
            else:
                logits[k, :eos] = -np.inf
        stamps = [t for t in seq if t >= ts_begin]
        if stamps:
            floor = stamps[-1] if (last and not penultimate) else stamps[-1] + 1
            logits[k, ts_begin:floor] = -np.inf
    logp = log_softmax(logits)
    stamp_mass = np.logaddexp.reduce(logp[:, ts_begin:], axis=-1)
    force = stamp_mass > logp[:, :ts_begin].max(-1)
    logits[force, :ts_begin] = -np.inf


def greedy_decode_timestamps(
    step: StepFn,
    batch: int,
    prompt: list[int],
    generation_config,
    max_new_tokens: int,
    ts_begin: int,
    temperature: float = 0.0,
    rng: np.random.Generator | None = None,
) -> list[list[int]]:
    """Greedy decoding with timestamp tokens (the prompt ends without ``<|notimestamps|>``), one window:
    what ``generate(return_timestamps=True)`` decodes for a single window, without its seeking.

    Returns:
        per clip, the generated tokens (timestamps included, end-of-text excluded).
    """
    eos = _eos(generation_config)
    suppress = list(generation_config.suppress_tokens or []) + [ts_begin - 1]  # and <|notimestamps|>
    ids = np.array([prompt] * batch, dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(batch)]
    finished = [False] * batch
    past = None
    for i in range(max_new_tokens):
        step_boundary()
        every, past = step(ids, past)
        logits = np.array(every[:, -1], dtype=np.float32)
        logits[:, suppress] = -np.inf
        timestamp_rules(logits, out, ts_begin, eos, first=i == 0)
        nxt = _pick(logits, temperature, rng).tolist()
        for b, t in enumerate(nxt):
            if finished[b]:
                nxt[b] = eos
            elif t == eos:
                finished[b] = True
            else:
                out[b].append(t)
        if all(finished):
            break
        ids = np.array(nxt, dtype=np.int64)[:, None]
    return out


def forced_ids(prompt: Sequence[int], sequences: Sequence[Sequence[int]], eot: int) -> np.ndarray:
    """[B, len(prompt) + longest + 1] decoder input for a teacher-forced pass: ``prompt + tokens``, then
    ``<|endoftext|>`` to the common width (every row ends with at least one)."""
    width = max((len(s) for s in sequences), default=0) + 1
    rows = [list(prompt) + list(s) + [eot] * (width - len(s)) for s in sequences]
    return np.array(rows, dtype=np.int64)


def score_speech(
    logits_fn: LogitsFn,
    prompt: list[int],
    sequences: Sequence[Sequence[int]],
    generation_config,
    no_speech_id: int,
) -> list[SpeechScore]:
    """One teacher-forced decoder pass over ``prompt + tokens + <|endoftext|>`` per clip.

    The no-speech probability comes from the raw logits at the first position (``<|startoftranscript|>``,
    as openai/whisper reads it before any filter); token log-probabilities are taken after
    ``suppress_tokens`` are masked, as its sampler sees them.

    Returns:
        one :class:`SpeechScore` per sequence.
    """
    ids = forced_ids(prompt, sequences, _eos(generation_config))
    logits = np.array(logits_fn(ids), dtype=np.float32)  # a copy: masked in place below
    no_speech = softmax(logits[:, 0])[:, no_speech_id]
    suppress = list(generation_config.suppress_tokens or [])
    if suppress:
        logits[:, :, suppress] = -np.inf
    start = len(prompt)
    logp = np.take_along_axis(log_softmax(logits[:, start - 1 : -1]), ids[:, start:, None], axis=-1)[..., 0]
    return [
        SpeechScore(float(no_speech[b]), float(logp[b, : len(s) + 1].sum()) / (len(s) + 1))
        for b, s in enumerate(sequences)
    ]


def no_speech_verdict(score: SpeechScore, no_speech_threshold: float, logprob_threshold: float | None) -> bool:
    """openai/whisper's no-speech test (``transcribe()`` in its transcribe.py): True (empty the clip) when
    ``no_speech_prob > no_speech_threshold`` unless ``avg_logprob > logprob_threshold``."""
    skip = score.no_speech_prob > no_speech_threshold
    if logprob_threshold is not None and score.avg_logprob > logprob_threshold:
        skip = False
    return skip


def rank_languages(logits: np.ndarray, codes: dict[str, int], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` likeliest languages from one clip's logits at ``<|startoftranscript|>``: softmax over the
    language tokens only, as openai/whisper's ``detect_language``."""
    names, ids = list(codes), np.array(list(codes.values()))
    probs = softmax(np.asarray(logits, dtype=np.float32)[ids])
    order = np.argsort(-probs, kind="stable")[: min(k, len(names))]
    return [(names[int(j)], float(probs[j])) for j in order]
