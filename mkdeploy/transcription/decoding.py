"""A lean greedy decoding loop for short clips (no timestamps), on PyTorch or ONNX Runtime.

Hugging Face's Whisper ``generate`` is general (long-form seeking, timestamps, beams, fallback) and pays
for it on every step: measured on tiny.en with ONNX Runtime int8 on 2 CPU cores, a decoder step took
1.1 ms in ONNX Runtime and about 3 ms more around it in ``generate``. Once the encoder runs on a short
window, that overhead is most of a short clip's time. This loop does what ``generate`` does for greedy,
timestamp-free decoding of clips up to 30 s (the same prompt, ``suppress_tokens`` at every step,
``begin_suppress_tokens`` at the first, end-of-text, the token cap) and nothing else, and it hands a clip
back to ``generate`` when its greedy output fails Whisper's compression-ratio check, so the temperature
fallback behaves exactly as before. Tokens are identical to ``generate``'s (tests/test_windows.py).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from mkdeploy.constants import SAMPLE_RATE

#: step(input_ids [B, S], past) -> (logits of every new position [B, S, V], past)
StepFn = Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]

#: called before every decoder step of the decoding loops (the lean loops here and ``generate``, through
#: :class:`StepBoundary`); None outside :func:`between_steps`
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


class StepBoundary:
    """A logits processor for ``generate`` that calls :func:`step_boundary` at each of its steps and leaves
    the scores as they are, so beam search, timestamps and the temperature fallback yield too."""

    def __call__(self, input_ids, scores):
        step_boundary()
        return scores


def decoder_prompt(tokenizer, generation_config, language: str | None = "en", task: str = "transcribe") -> list[int]:
    """<|startoftranscript|> [<|lang|> <|task|>] <|notimestamps|>, as ``generate`` builds it."""
    ids = [tokenizer.convert_tokens_to_ids("<|startoftranscript|>")]
    if getattr(generation_config, "is_multilingual", False) and getattr(generation_config, "lang_to_id", None):
        ids += [generation_config.lang_to_id[f"<|{language or 'en'}|>"], tokenizer.convert_tokens_to_ids(f"<|{task}|>")]
    ids.append(tokenizer.convert_tokens_to_ids("<|notimestamps|>"))
    return ids


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
    """Tokens generated for one clip (prompt and end-of-text excluded) and whether ``generate`` must redo it.

    Attributes:
        tokens: the generated text tokens.
        needs_fallback: the output failed the compression-ratio check (a repetition loop): decode it again
            with ``generate``'s temperature fallback.
        score: the no-speech signals read during decoding (when asked for and the clip ended on
            end-of-text; else None and :func:`score_speech` gives them).
    """

    tokens: list[int]
    needs_fallback: bool = False
    score: SpeechScore | None = None


def greedy_decode(
    step: StepFn,
    batch: int,
    prompt: list[int],
    generation_config,
    max_new_tokens: int,
    vocab_size: int,
    compression_ratio_threshold: float | None = None,
    device: str | torch.device = "cpu",
    no_speech_id: int | None = None,
) -> list[GreedyResult]:
    """Greedy decoding of ``batch`` clips whose encoder states the ``step`` function closes over.

    Args:
        step: runs the decoder on new ids with the cache from the previous call (None at first).
        batch: number of clips.
        prompt: the decoder prompt (:func:`decoder_prompt`).
        generation_config: the model's; ``suppress_tokens``, ``begin_suppress_tokens`` and
            ``eos_token_id`` are read from it.
        max_new_tokens: cap on generated tokens per clip (end-of-text included, as in ``generate``).
        vocab_size: for the compression ratio.
        compression_ratio_threshold: flag outputs above it for the fallback (None: never).
        no_speech_id: also read each clip's :class:`SpeechScore` from the logits the loop already has,
            as :func:`score_speech` reads them from a second, teacher-forced pass (the no-speech
            probability at the first prompt position; the log-probabilities after ``suppress_tokens``
            only). That pass recomputed the cross-attention over 1500 encoder frames: ~9% of base's
            transcription time on 2 CPU cores.

    Returns:
        one :class:`GreedyResult` per clip.
    """
    eos = generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    suppress = torch.tensor(list(generation_config.suppress_tokens or []), dtype=torch.long, device=device)
    begin = torch.tensor(list(generation_config.begin_suppress_tokens or []), dtype=torch.long, device=device)
    ids = torch.tensor([prompt] * batch, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    finished = [False] * batch
    out: list[list[int]] = [[] for _ in range(batch)]
    past = None
    no_speech: list[float] = []
    logp_sum = [0.0] * batch
    for i in range(max_new_tokens):
        step_boundary()
        every, past = step(ids, past)
        if i == 0 and no_speech_id is not None:
            no_speech = every[:, 0].float().softmax(-1)[:, no_speech_id].tolist()
        logits = every[:, -1].float()
        if len(suppress):
            logits[:, suppress] = -math.inf
        logp = logits.log_softmax(-1) if no_speech_id is not None else None  # before begin_suppress, as scored
        if i == 0 and len(begin):
            logits[:, begin] = -math.inf
        nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        chosen = logp.gather(-1, nxt[:, None])[:, 0].tolist() if logp is not None else None
        for b, t in enumerate(nxt.tolist()):
            if not finished[b]:
                out[b].append(t)
                finished[b] = t == eos
                if chosen is not None:
                    logp_sum[b] += chosen[b]
        if all(finished):
            break
        done = torch.tensor(finished, device=device)
        ids = nxt[:, None]
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


def _timestamp_rules(logits: torch.Tensor, seqs: list[list[int]], ts_begin: int, eos: int, first: bool) -> None:
    """openai/whisper's ``ApplyTimestampRules`` (its decoding.py), in place: timestamps come in pairs except
    before end-of-text, never go back, a segment has nonzero length, the first token is a timestamp of at
    most 1.0 s, and a timestamp is forced when timestamps together outweigh the best text token."""
    if first:
        logits[:, :ts_begin] = -math.inf
        logits[:, ts_begin + 50 + 1 :] = -math.inf  # max_initial_timestamp 1.0 s = 50 steps of 0.02 s
    for k, seq in enumerate(seqs):
        last = len(seq) >= 1 and seq[-1] >= ts_begin
        penultimate = len(seq) < 2 or seq[-2] >= ts_begin
        if last:
            if penultimate:
                logits[k, ts_begin:] = -math.inf
            else:
                logits[k, :eos] = -math.inf
        stamps = [t for t in seq if t >= ts_begin]
        if stamps:
            floor = stamps[-1] if (last and not penultimate) else stamps[-1] + 1
            logits[k, ts_begin:floor] = -math.inf
    logp = logits.log_softmax(-1)
    force = logp[:, ts_begin:].logsumexp(-1) > logp[:, :ts_begin].max(-1).values
    logits[force, :ts_begin] = -math.inf


def greedy_decode_timestamps(
    step: StepFn,
    batch: int,
    prompt: list[int],
    generation_config,
    max_new_tokens: int,
    ts_begin: int,
    device: str | torch.device = "cpu",
) -> list[list[int]]:
    """Greedy decoding with timestamp tokens (the prompt ends without ``<|notimestamps|>``), one pass, no
    fallback: what ``generate(return_timestamps=True)`` decodes for a single window, without its
    segment-by-segment seeking.

    Returns:
        per clip, the generated tokens (timestamps included, end-of-text excluded).
    """
    eos = generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    suppress = list(generation_config.suppress_tokens or []) + [ts_begin - 1]  # and <|notimestamps|>
    ids = torch.tensor([prompt] * batch, dtype=torch.long, device=device)
    out: list[list[int]] = [[] for _ in range(batch)]
    finished = [False] * batch
    past = None
    for i in range(max_new_tokens):
        step_boundary()
        every, past = step(ids, past)
        logits = every[:, -1].float()
        logits[:, suppress] = -math.inf
        _timestamp_rules(logits, out, ts_begin, eos, first=i == 0)
        nxt = logits.argmax(-1).tolist()
        for b, t in enumerate(nxt):
            if finished[b]:
                nxt[b] = eos
            elif t == eos:
                finished[b] = True
            else:
                out[b].append(t)
        if all(finished):
            break
        ids = torch.tensor(nxt, dtype=torch.long, device=device)[:, None]
    return out


#: logits_fn(input_ids [B, S]) -> logits of every position [B, S, V], the encoder states closed over
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def no_speech_token(tokenizer, generation_config) -> int:
    """``<|nocaptions|>`` (``<|nospeech|>`` in large-v3): the id just below ``<|notimestamps|>``, as
    transformers' ``WhisperNoSpeechDetection`` takes it."""
    for name in ("<|nospeech|>", "<|nocaptions|>"):
        tid = tokenizer.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            return tid
    return int(generation_config.no_timestamps_token_id) - 1


def forced_ids(
    prompt: Sequence[int], sequences: Sequence[Sequence[int]], eot: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """[B, len(prompt) + longest + 1] decoder input for a teacher-forced pass: ``prompt + tokens``, then
    ``<|endoftext|>`` to the common width (every row ends with at least one)."""
    width = max((len(s) for s in sequences), default=0) + 1
    rows = [list(prompt) + list(s) + [eot] * (width - len(s)) for s in sequences]
    return torch.tensor(rows, dtype=torch.long, device=device)


def score_speech(
    logits_fn: LogitsFn,
    prompt: list[int],
    sequences: Sequence[Sequence[int]],
    generation_config,
    no_speech_id: int,
    device: str | torch.device = "cpu",
) -> list[SpeechScore]:
    """One teacher-forced decoder pass over ``prompt + tokens + <|endoftext|>`` per clip.

    The no-speech probability comes from the raw logits at the first position (``<|startoftranscript|>``,
    as openai/whisper reads it before any filter); token log-probabilities are taken after
    ``suppress_tokens`` are masked, as its sampler sees them.

    Returns:
        one :class:`SpeechScore` per sequence.
    """
    eos = generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    ids = forced_ids(prompt, sequences, eos, device)
    logits = logits_fn(ids).to(torch.float32, copy=True)  # masked in place below
    no_speech = logits[:, 0].softmax(-1)[:, no_speech_id]
    suppress = list(generation_config.suppress_tokens or [])
    if suppress:
        logits[:, :, suppress] = -math.inf
    start = len(prompt)
    logp = logits[:, start - 1 : -1].log_softmax(-1).gather(-1, ids[:, start:, None])[..., 0]
    return [
        SpeechScore(float(no_speech[b]), float(logp[b, : len(s) + 1].sum()) / (len(s) + 1))
        for b, s in enumerate(sequences)
    ]


def torch_logits(model, encoder_hidden_states: torch.Tensor) -> LogitsFn:
    """Full-sequence logits from a PyTorch ``WhisperForConditionalGeneration`` over fixed encoder states."""
    from transformers.modeling_outputs import BaseModelOutput  # heavy; imported on use so the core import stays light

    enc = BaseModelOutput(last_hidden_state=encoder_hidden_states)  # type: ignore[arg-type]
    return lambda ids: model(encoder_outputs=enc, decoder_input_ids=ids, use_cache=False).logits


def ort_logits(model, encoder_hidden_states: torch.Tensor) -> LogitsFn:
    """Full-sequence logits from optimum's ONNX decoder (its no-cache branch)."""
    return lambda ids: model.decoder(input_ids=ids, encoder_hidden_states=encoder_hidden_states).logits


def torch_step(model, encoder_hidden_states: torch.Tensor) -> StepFn:
    """A step function over a PyTorch ``WhisperForConditionalGeneration`` and fixed encoder states."""
    from transformers.modeling_outputs import BaseModelOutput  # heavy; imported on use so the core import stays light

    enc = BaseModelOutput(last_hidden_state=encoder_hidden_states)  # type: ignore[arg-type]

    def step(ids, past):
        out = model(encoder_outputs=enc, decoder_input_ids=ids, past_key_values=past, use_cache=True)
        return out.logits, out.past_key_values

    return step


def ort_step(model, encoder_hidden_states: torch.Tensor) -> StepFn:
    """A step function over optimum's ONNX decoder (merged graph: cache branch after the first call)."""

    def step(ids, past):
        out = model.decoder(
            input_ids=ids, encoder_hidden_states=encoder_hidden_states, past_key_values=past, use_cache=True
        )
        return out.logits, out.past_key_values

    return step
