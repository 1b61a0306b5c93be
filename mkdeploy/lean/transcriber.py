"""Transcribe with an ONNX export on ONNX Runtime, numpy and ``tokenizers`` alone: what the base install runs.

The same results as :class:`mkdeploy.transcription.runtime.WhisperTranscriber` on the same export (tokens of
greedy decoding identical, timestamps within one 0.02 s step: tests/test_lean.py), without loading torch,
transformers or optimum:

- features: :func:`mkdeploy.lean.features.log_mel`, computed once per clip and window;
- the encoder and the merged decoder: raw ONNX Runtime sessions (:mod:`mkdeploy.lean.sessions`; CUDA with
  IOBinding when it really runs, else CPU);
- decoding: the one core of :mod:`mkdeploy.lean.greedy` (greedy, Whisper's timestamp rules, the temperature
  fallback on the compression ratio, the no-speech gate), as the PyTorch engine runs it;
- a student's encoder windows, language detection, an initial prompt, long-form audio walked window by
  window with openai/whisper's seek rule (:mod:`mkdeploy.lean.segments`).

Left to the full install, refused with the fix named: word timestamps (ONNX graphs do not output
cross-attention), beam search and batched long-form (``generate``, the VAD's torch model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mkdeploy.constants import MEL_FRAMES_PER_S, SAMPLE_RATE, WINDOW_SAMPLES
from mkdeploy.errors import MkdError, ModelError
from mkdeploy.lean.features import log_mel
from mkdeploy.lean.files import transcribe_files
from mkdeploy.lean.gates import SpeechCheck, apply_no_speech, pre_gate
from mkdeploy.lean.greedy import (
    SpeechScore,
    greedy_decode,
    greedy_decode_timestamps,
    greedy_results,
    no_speech_verdict,
    rank_languages,
    score_speech,
    token_cap,
)
from mkdeploy.lean.languages import LanguageGuess, codes_of, normalise_language
from mkdeploy.lean.onnx_whisper import OnnxWhisper
from mkdeploy.lean.segments import consumed_tokens, next_seek, window_spans
from mkdeploy.lean.sessions import OrtOptions
from mkdeploy.lean.windows import (
    FULL_WINDOW_S,
    WindowConfig,
    plan_batches,
)
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import FileFailure, Segment, Transcription


@dataclass
class _Batch:
    """One batch's encoder states and the window they were computed in."""

    states: Any
    window_s: int
    rows: int

    def select(self, rows: list[int]) -> Any:
        if isinstance(self.states, np.ndarray):
            return self.states[rows]
        if rows == list(range(self.rows)):
            return self.states
        # CUDA: a subset of rows goes through the host once (a fallback or one language of a batch)
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(self.states.numpy()[rows], "cuda", 0)


class OnnxTranscriber:
    """Batched transcription of an ONNX export without torch (faster-whisper's ``WhisperModel`` in spirit).

    The interface is :class:`mkdeploy.transcription.runtime.WhisperTranscriber`'s (``transcribe_arrays``,
    ``transcribe_files``, ``check_language``), so the CLI, the server and the bench take either.

    Args:
        model: the loaded export.
        has_speech: the speech detector of ``vad_filter`` (Silero VAD, which runs on torch: the caller
            passes :func:`mkdeploy.transcription.vad.has_speech` where it is installed; None refuses
            ``vad_filter`` naming the extra).
    """

    backend = "onnx-lean"

    def __init__(self, model: OnnxWhisper, has_speech: SpeechCheck | None = None) -> None:
        self.model = model
        self.has_speech = has_speech
        self.vocab = model.vocab
        self.path = str(model.path)
        self.device, self.provider = model.device, model.provider
        self.multilingual = model.vocab.is_multilingual
        self.model_buckets = model.model_buckets
        self.windows()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "auto",
        threads: int = 0,
        variant: str | None = None,
        options: OrtOptions | None = None,
        has_speech: SpeechCheck | None = None,
    ) -> OnnxTranscriber:
        """Load an export (see :class:`OnnxWhisper`); ``threads`` sets ONNX Runtime's intra-op pool."""
        opts = options or OrtOptions()
        if threads and not opts.threads:
            opts = replace(opts, threads=threads)
        if device not in ("auto", "cuda", "cpu"):
            raise MkdError(f"--device {device}: choose auto, cuda or cpu")
        return cls(OnnxWhisper(path, device, variant, opts), has_speech)

    def windows(self, options: TranscriptionOptions | None = None) -> WindowConfig:
        buckets = (options.encoder_buckets if options else None) or self.model_buckets or (FULL_WINDOW_S,)
        win = WindowConfig(tuple(buckets))
        if win.windowed and not self.model.short_windows:
            raise ModelError(
                f"{self.path}: this ONNX export's encoder takes 30 s windows only; re-export it with `mkd export` "
                "to use encoder buckets"
            )
        return win

    def language_codes(self) -> dict[str, int]:  # code -> token id ({} for an .en model)
        return codes_of(self.vocab.lang_to_id, self.multilingual)

    def check_language(self, language: str | None) -> str | None:
        return normalise_language(language, self.language_codes(), self.path)

    # -- decoding ---------------------------------------------------------------------------------
    def transcribe_arrays(
        self, audios: Sequence[np.ndarray], options: TranscriptionOptions | None = None
    ) -> list[Transcription]:
        """Transcribe 16 kHz mono float32 arrays, ``options.batch_size`` at a time.

        Returns:
            One :class:`Transcription` per input, in input order.

        Raises:
            MkdError: an option this engine does not run (word timestamps, beams, batched long-form).
        """
        options = options or TranscriptionOptions()
        _refuse(options, self.path)
        if not options.return_timestamps and any(len(a) > WINDOW_SAMPLES for a in audios):
            options = replace(options, return_timestamps=True)  # as WhisperTranscriber.transcribe_arrays
        language = self.check_language(options.language)
        win = self.windows(options)
        results: list[Transcription | None] = [pre_gate(a, options, self.has_speech) for a in audios]
        short = {
            i: len(audios[i]) for i in range(len(audios)) if results[i] is None and len(audios[i]) <= WINDOW_SAMPLES
        }
        for bucket, idx in plan_batches(short, win, options.batch_size):
            for i, t in zip(idx, self._transcribe_batch([audios[i] for i in idx], options, language, bucket)):
                results[i] = t
        for i, a in enumerate(audios):
            if results[i] is None:
                results[i] = self._transcribe_long(a, options, language)
        return [r for r in results if r is not None]

    def detect_languages(self, audios: Sequence[np.ndarray]) -> list[LanguageGuess]:
        """The language of each clip from its first 30 s (one decoder step from ``<|startoftranscript|>``)."""
        codes = self.language_codes()
        if not codes:
            raise MkdError(f"{self.path}: an English-only model; it has no language to detect")
        batch = _Batch(
            self.model.encode(self._features([a[:WINDOW_SAMPLES] for a in audios], FULL_WINDOW_S)), 30, len(audios)
        )
        return self._detect(batch, codes)

    def _detect(self, batch: _Batch, codes: dict[str, int]) -> list[LanguageGuess]:
        first = np.full((batch.rows, 1), self.vocab.sot, dtype=np.int64)
        logits = self.model.step(batch.states).logits(first)[:, 0, :]
        out = []
        for row in logits:
            ranked = rank_languages(row, codes)
            out.append(LanguageGuess(ranked[0][0], ranked[0][1], ranked))
        return out

    def _features(self, audios: Sequence[np.ndarray], window_s: int) -> np.ndarray:
        """Log-mel features padded to ``window_s`` (0: to the longest clip, as long-form audio is)."""
        return log_mel(audios, self.model.n_mels, window_s * SAMPLE_RATE or max(len(a) for a in audios))

    def _transcribe_batch(
        self, audios: list[np.ndarray], options: TranscriptionOptions, language: str | None, window_s: int
    ) -> list[Transcription]:
        """Clips of at most 30 s encoded together in ``window_s``; each language's clips decoded together."""
        batch = _Batch(self.model.encode(self._features(audios, window_s)), window_s, len(audios))
        guesses: list[LanguageGuess | None] = [None] * len(audios)
        if self.multilingual and language is None:
            # a short window holds the whole clip, so the language is read from the states already computed
            guesses = list(self._detect(batch, self.language_codes()))
        groups: dict[str, list[int]] = {}
        for i, g in enumerate(guesses):
            groups.setdefault(g.language if g else (language or "en"), []).append(i)
        out: list[Transcription | None] = [None] * len(audios)
        longest = max(len(a) for a in audios)
        for lang, rows in groups.items():
            opts = replace(options, language=lang)
            decoded = self._decode(batch, rows, opts, longest)
            scores = [score for _, _, score in decoded]
            unscored = [k for k, sc in enumerate(scores) if sc is None]
            if options.no_speech_threshold is not None and unscored:
                sub = _Batch(batch.select([rows[k] for k in unscored]), window_s, len(unscored))
                for k, sc in zip(unscored, self._scores(sub, [decoded[k][0] for k in unscored], opts)):
                    scores[k] = sc
            for i, (tokens, segments, _), score in zip(rows, decoded, scores):
                t = self._result(audios[i], tokens, segments, opts)
                t.language = lang
                if guesses[i] is not None:
                    t.language_probability = guesses[i].probability  # type: ignore[union-attr]
                if options.no_speech_threshold is not None and score is not None:
                    apply_no_speech(t, score, options)
                out[i] = t
        return [t for t in out if t is not None]

    def _decode(
        self, batch: _Batch, rows: list[int], options: TranscriptionOptions, longest: int
    ) -> list[tuple[list[int], list[tuple[float, float, str]], SpeechScore | None]]:
        """Per row: tokens (timestamps included), segments ``(start, end, text)`` and the no-speech score,
        greedy first, then each hotter temperature for the rows whose output fails the compression check."""
        vocab = self.vocab
        prompt = self._prompt(options)
        cap = options.max_new_tokens or (
            token_cap(longest, options.max_tokens_per_second, self.model.token_limit)
            if not options.return_timestamps
            else self.model.token_limit
        )
        duration = round(longest / SAMPLE_RATE, 2)
        done: dict[int, tuple[list[int], list, SpeechScore | None]] = {}
        todo = list(rows)
        rng = np.random.default_rng(0)  # the fallback samples; a transcript must not depend on the process
        for k, temperature in enumerate(options.temperatures or (0.0,)):
            last = k == len(options.temperatures or (0.0,)) - 1 or options.compression_ratio_threshold is None
            step = self.model.step(batch.select(todo))
            if options.return_timestamps:
                seqs = greedy_decode_timestamps(
                    step, len(todo), prompt, vocab, cap, vocab.timestamp_begin, temperature, rng
                )
                eos = vocab.eos_token_id
                threshold = options.compression_ratio_threshold
                greedy = greedy_results([[*q, eos] for q in seqs], eos, self.model.vocab_size, threshold)
            else:
                greedy = greedy_decode(
                    step,
                    len(todo),
                    prompt,
                    vocab,
                    cap,
                    self.model.vocab_size,
                    options.compression_ratio_threshold,
                    no_speech_id=vocab.no_speech if options.no_speech_threshold is not None else None,
                    temperature=temperature,
                    rng=rng,
                )
            again = []
            for row, g in zip(todo, greedy):
                if not g.needs_fallback or last:  # the compression check, made once by the core
                    spans = self._spans(g.tokens, duration, options)
                    done[row] = (g.tokens, spans, g.score if temperature == 0 else None)
                else:
                    again.append(row)
            todo = again
            if not todo:
                break
        return [done[r] for r in rows]

    def _prompt(self, options: TranscriptionOptions) -> list[int]:
        prompt = self.vocab.prompt(options.language, options.task, options.return_timestamps)
        if options.initial_prompt:
            prompt = [*self.vocab.previous_text(options.initial_prompt), *prompt]
        return prompt

    def _spans(
        self, tokens: list[int], duration: float, options: TranscriptionOptions
    ) -> list[tuple[float, float, str]]:
        if not options.return_timestamps:
            return []
        return window_spans(tokens, self.vocab.timestamp_begin, self.vocab.decode, duration)[0]

    def _result(
        self, audio: np.ndarray, tokens: list[int], spans: list[tuple[float, float, str]], options: TranscriptionOptions
    ) -> Transcription:
        ids = self.vocab.text_ids(tokens)
        segments = [Segment(round(s, 3), round(e, 3), text, []) for s, e, text in spans]
        return Transcription("", self.vocab.decode(ids).strip(), segments, len(audio) / SAMPLE_RATE, tokens=ids)

    def _transcribe_long(self, audio: np.ndarray, options: TranscriptionOptions, language: str | None) -> Transcription:
        """Audio over 30 s, window by window with timestamps (openai/whisper's seek rule), as ``generate``
        walks it: the whole file's features computed once, each window a 3000-frame slice of them (the last
        one padded with zeros); a window that fails the no-speech test is skipped whole."""
        opts = replace(options, return_timestamps=True)
        probability = None
        if self.multilingual and language is None:
            guess = self.detect_languages([audio])[0]
            language, probability = guess.language, guess.probability
        opts = replace(opts, language=language or "en")
        features = self._features([audio], 0)[0] if len(audio) else np.zeros((self.model.n_mels, 0), np.float32)
        frames_per_window = FULL_WINDOW_S * MEL_FRAMES_PER_S
        segments: list[Segment] = []
        text_ids: list[int] = []
        seek = 0  # in samples
        while seek < len(audio):
            start = seek * MEL_FRAMES_PER_S // SAMPLE_RATE
            window = np.zeros((1, self.model.n_mels, frames_per_window), np.float32)
            piece = features[:, start : start + frames_per_window]
            window[0, :, : piece.shape[-1]] = piece
            n_samples = min(WINDOW_SAMPLES, len(audio) - seek)
            batch = _Batch(self.model.encode(window), FULL_WINDOW_S, 1)
            [(tokens, _, _)] = self._decode(batch, [0], replace(opts, no_speech_threshold=None), n_samples)
            duration = round(n_samples / SAMPLE_RATE, 2)
            spans, consumed = window_spans(tokens, self.vocab.timestamp_begin, self.vocab.decode, duration)
            skipped = False
            if opts.no_speech_threshold is not None:
                score = self._scores(batch, [tokens], opts)[0]
                skipped = no_speech_verdict(score, opts.no_speech_threshold, opts.logprob_threshold)
            if skipped:
                consumed = duration
            else:
                t0 = seek / SAMPLE_RATE
                segments += [Segment(round(t0 + s, 3), round(t0 + e, 3), text, []) for s, e, text in spans]
                text_ids += self.vocab.text_ids(consumed_tokens(tokens, self.vocab.timestamp_begin, consumed, duration))
            seek = next_seek(seek, n_samples, consumed, SAMPLE_RATE)
        kept = segments if options.return_timestamps else []
        t = Transcription("", self.vocab.decode(text_ids).strip(), kept, len(audio) / SAMPLE_RATE, tokens=text_ids)
        t.language, t.language_probability = opts.language, probability
        return t

    def _scores(self, batch: _Batch, sequences: list[list[int]], options: TranscriptionOptions) -> list[SpeechScore]:
        """The no-speech signals of each row's tokens, from one teacher-forced pass."""
        text_only = [self.vocab.text_ids(s) for s in sequences]
        step = self.model.step(batch.states)
        prompt = self.vocab.prompt(options.language, options.task)
        return score_speech(step.logits, prompt, text_only, self.vocab, self.vocab.no_speech)

    def transcribe_files(
        self,
        paths: Sequence[str | Path],
        options: TranscriptionOptions | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> tuple[list[Transcription], list[FileFailure]]:
        """Transcribe files; bad files are reported, never fatal to the rest
        (:func:`mkdeploy.lean.files.transcribe_files`, which both engines share).

        Returns:
            (transcriptions of the readable files in input order, failures with one-line reasons).
        """
        return transcribe_files(self.transcribe_arrays, paths, options or TranscriptionOptions(), on_progress)


def _refuse(options: TranscriptionOptions, path: str) -> None:
    """What this engine does not run, refused with the fix named."""
    full = "install the full mkdeploy (pip install 'mkdeploy[train]') and use --backend onnx"
    if options.word_timestamps:
        raise MkdError(
            f"{path}: word timestamps need cross-attention weights, which ONNX exports do not output; {full} "
            "(it aligns words with the PyTorch model the export came from)"
        )
    if options.num_beams > 1:
        raise MkdError(f"{path}: beam search runs on transformers' generate; {full}, or use greedy (--beams 1)")
    if options.batched_long_form:
        raise MkdError(f"{path}: batched long-form cuts audio with Silero VAD's torch model; {full}, or drop --batched")
