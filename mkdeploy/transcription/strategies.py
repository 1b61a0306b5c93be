"""Decoding strategies behind one interface: each turns a batch's model inputs into token sequences.

- :class:`LeanGreedy`: greedy, timestamp-free decoding of clips up to 30 s through the lean loop of
  :mod:`mkdeploy.transcription.decoding` (or, for PyTorch on CUDA, the captured static-cache step of
  :mod:`mkdeploy.transcription.static_decoder`); same tokens as ``generate``, without its per-token overhead.
- :class:`GenerateSegments`: Hugging Face ``generate`` with timestamps (segments; long-form audio).
- :class:`Generate`: ``generate`` without timestamps (beam search, prompts, sampling).

:func:`choose_strategy` picks one for a batch; :func:`decode_timestamped` is the single greedy pass with
timestamp tokens that mkdeploy/transcription/packing.py uses on packed windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.constants import TIME_PRECISION_S
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import Segment, Transcription
from mkdeploy.transcription import decoding
from mkdeploy.transcription.batching import ModelInputs
from mkdeploy.transcription.decoding import (
    SpeechScore,
    greedy_decode,
    greedy_decode_timestamps,
    no_speech_token,
)
from mkdeploy.transcription.engine import Engine
from mkdeploy.transcription.static_decoder import StaticGreedyDecoder


@dataclass
class Decoded:
    """A strategy's output for one batch.

    Attributes:
        sequences: token ids per clip (special and timestamp tokens included).
        segments: ``generate``'s segments per clip (None where it gave none).
        states: the encoder states, when the strategy computed them (the no-speech gate reuses them).
        known: no-speech scores read while decoding (None where not read).
    """

    sequences: list
    segments: list
    states: torch.Tensor | None = None
    known: list[SpeechScore | None] = field(default_factory=list)


class GenerateSegments:
    """``generate`` with timestamps: segments, and long-form audio walked window by window."""

    def decode(self, engine: Engine, inputs: ModelInputs, options: TranscriptionOptions, kw: dict) -> Decoded:
        out = engine.generate(**inputs.kwargs(), return_segments=True, **kw)
        n = len(out["sequences"])
        return Decoded(list(out["sequences"]), list(out["segments"]), None, [None] * n)


class Generate:
    """``generate`` without timestamps."""

    def decode(self, engine: Engine, inputs: ModelInputs, options: TranscriptionOptions, kw: dict) -> Decoded:
        seqs = list(engine.generate(**inputs.kwargs(), **kw))
        return Decoded(seqs, [None] * len(seqs), None, [None] * len(seqs))


class LeanGreedy:
    """Greedy, timestamp-free decoding through :func:`mkdeploy.transcription.decoding.greedy_decode`; clips whose output
    fails the compression-ratio check are decoded again by ``generate`` (temperature fallback). Owns the
    static decoder it captures on first use (one buffer length serves the usual caps)."""

    def __init__(self) -> None:
        self.static: StaticGreedyDecoder | None = None

    def decode(self, engine: Engine, inputs: ModelInputs, options: TranscriptionOptions, kw: dict) -> Decoded:
        states = engine.encode(inputs.features).last_hidden_state
        gen = engine.model.generation_config
        prompt = engine.prompt(options)
        static = engine.backend == "torch" and (
            options.static_decoder if options.static_decoder is not None else engine.device == "cuda"
        )
        if static:
            need = len(prompt) + kw["max_new_tokens"]
            if self.static is None or self.static.max_len < need:
                # one buffer length for the usual caps, so one captured graph per batch bucket serves them all
                length = max(need, engine.model.config.max_target_positions // 2 + 8)
                self.static = StaticGreedyDecoder(engine.model, gen, length)
            results = self.static.decode(states, prompt, kw["max_new_tokens"], options.compression_ratio_threshold)
        else:
            step = engine.decoder_step(states)
            results = greedy_decode(
                step,
                states.shape[0],
                prompt,
                gen,
                kw["max_new_tokens"],
                engine.model.config.vocab_size,
                options.compression_ratio_threshold,
                no_speech_id=(
                    no_speech_token(engine.processor.tokenizer, gen)
                    if options.no_speech_threshold is not None
                    else None
                ),
            )
        sequences = [torch.tensor(r.tokens, dtype=torch.long) for r in results]
        known = [r.score for r in results]
        redo = [i for i, r in enumerate(results) if r.needs_fallback]
        if redo:
            for i, seq in zip(redo, engine.generate(**inputs.select(redo), **kw)):
                sequences[i], known[i] = seq, None
        return Decoded(sequences, [None] * len(sequences), states, known)


def lean_greedy_applies(options: TranscriptionOptions, inputs: ModelInputs) -> bool:
    """Whether the lean greedy loop gives what ``generate`` would: greedy, no timestamps, no prompt, no
    sampling at the first temperature, one window."""
    return (
        options.fast_greedy
        and not options.return_timestamps
        and options.num_beams == 1
        and not options.initial_prompt
        and options.temperatures[:1] == (0.0,)
        and not inputs.long_form
    )


def choose_strategy(
    options: TranscriptionOptions, inputs: ModelInputs, lean: LeanGreedy
) -> GenerateSegments | LeanGreedy | Generate:
    """The strategy for a batch (``lean``: the caller's instance, which keeps its captured decoder)."""
    if options.return_timestamps:
        return GenerateSegments()
    if lean_greedy_applies(options, inputs):
        return lean
    return Generate()


def token_cap(engine: Engine, options: TranscriptionOptions, longest: int) -> int:
    """The loop guard of a batch of clips up to 30 s: ``max_tokens_per_second`` per second of the longest
    clip plus 20, within the decoder's window (:attr:`TranscriptionOptions.max_tokens_per_second`)."""
    return decoding.token_cap(longest, options.max_tokens_per_second, engine.token_limit)


def transcriptions(engine: Engine, audios: Sequence[np.ndarray], decoded: Decoded) -> list[Transcription]:
    """Token sequences (and generate's segments) to :class:`Transcription` objects, special and
    timestamp tokens removed."""
    tok = engine.processor.tokenizer
    special = set(tok.all_special_ids)
    ts_begin = tok.convert_tokens_to_ids("<|notimestamps|>") + 1
    results = []
    for audio, seq, segs in zip(audios, decoded.sequences, decoded.segments):
        ids = [int(t) for t in seq.tolist() if int(t) not in special and int(t) < ts_begin]
        segments = []
        for s in segs or []:
            stoks = [int(t) for t in s["tokens"].tolist() if int(t) not in special and int(t) < ts_begin]
            text = tok.decode(stoks, skip_special_tokens=True)
            if text.strip():
                segments.append(Segment(round(float(s["start"]), 3), round(float(s["end"]), 3), text.strip(), stoks))
        text = tok.decode(ids, skip_special_tokens=True).strip()
        results.append(
            Transcription(path="", text=text, segments=segments, duration=len(audio) / SAMPLE_RATE, tokens=ids)
        )
    return results


def decode_timestamped(engine: Engine, inputs: ModelInputs, options: TranscriptionOptions) -> list[list[Segment]]:
    """One greedy pass with timestamp tokens over clips of at most 30 s, parsed into segments.

    ``generate`` with timestamps took 6.9-22 s for one packed 27 s window of tiny.en int8 on 2 cores
    (it walks the window segment by segment); this runs the lean loop of :mod:`mkdeploy.transcription.decoding` with
    openai/whisper's timestamp rules, one pass. No temperature fallback: the caller checks the result
    (mkdeploy/transcription/packing.py decodes a window it cannot attribute again, clip by clip).
    """
    if inputs.long_form:
        raise ValueError("decode_timestamped takes clips of at most 30 s")
    tok = engine.processor.tokenizer
    gen = engine.model.generation_config
    ts_begin = tok.convert_tokens_to_ids("<|notimestamps|>") + 1
    with torch.inference_mode():
        states = engine.encode(inputs.features).last_hidden_state
        step = engine.decoder_step(states)
        sequences = greedy_decode_timestamps(
            step,
            states.shape[0],
            engine.prompt(options, timestamps=True),
            gen,
            engine.token_limit,
            ts_begin,
        )
    special = set(tok.all_special_ids)
    return [_timestamp_segments(seq, ts_begin, special, tok) for seq in sequences]


def _timestamp_segments(ids: list[int], ts_begin: int, special: set[int], tok) -> list[Segment]:
    """Segments from a token sequence with inline timestamps (``<|t0|> text <|t1|>``, 0.02 s a step)."""
    segments: list[Segment] = []
    start: float | None = None
    text: list[int] = []
    for t in ids:
        if t >= ts_begin:
            time_s = round((t - ts_begin) * TIME_PRECISION_S, 3)
            if start is None:
                start = time_s
            else:
                if text:
                    segments.append(Segment(start, time_s, tok.decode(text, skip_special_tokens=True).strip(), text))
                start, text = None, []
        elif t not in special and start is not None:
            text.append(t)
    if start is not None and text:  # a last segment without its closing timestamp
        segments.append(Segment(start, start, tok.decode(text, skip_special_tokens=True).strip(), text))
    return [s for s in segments if s.text]
