"""Transcription with a Whisper model on PyTorch or ONNX Runtime (faster-whisper's ``WhisperModel`` in
spirit), composed of small parts:

- loading and the model's own operations: :mod:`mkdeploy.transcription.engine`
- batch formation (which clips decode together, their inputs): :mod:`mkdeploy.transcription.batching`
- the decoding strategies behind one interface: :mod:`mkdeploy.transcription.strategies`
- the silence, VAD and no-speech gates: :mod:`mkdeploy.transcription.gate`
- the spoken language when none is given: :mod:`mkdeploy.transcription.language`
- word timestamps: :mod:`mkdeploy.transcription.alignment`
- long audio cut at pauses and batched: :mod:`mkdeploy.transcription.longform`
- long-form audio: ``generate`` walks it window by window (:class:`~mkdeploy.transcription.strategies.GenerateSegments`)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.lean.files import transcribe_files
from mkdeploy.models.dirs import export_source
from mkdeploy.models.student import load_whisper
from mkdeploy.models.window import WindowConfig, segment_frames
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import FileFailure, Segment, Transcription
from mkdeploy.transcription.alignment import add_words
from mkdeploy.transcription.batching import WINDOW_SAMPLES, model_inputs, plan_batches
from mkdeploy.transcription.engine import (
    Backend,
    Device,
    Engine,
    load_engine,
    resolve_device,
    resolve_dtype,
    set_torch_threads,
)
from mkdeploy.transcription.gate import no_speech_gate, pre_gate
from mkdeploy.transcription.language import check_language, detect_languages
from mkdeploy.transcription.longform import Piece, cut_at_pauses, join
from mkdeploy.transcription.static_decoder import StaticGreedyDecoder
from mkdeploy.transcription.strategies import LeanGreedy, choose_strategy, decode_timestamped, token_cap, transcriptions

__all__ = [
    "WINDOW_SAMPLES",
    "Backend",
    "Device",
    "FileFailure",
    "Segment",
    "Transcription",
    "TranscriptionOptions",
    "WhisperTranscriber",
    "pre_gate",
    "resolve_device",
    "resolve_dtype",
    "set_torch_threads",
]


class WhisperTranscriber:
    """Batched Whisper transcription.

    Args:
        model: a ``WhisperForConditionalGeneration`` or an optimum ``ORTModelForSpeechSeq2Seq``.
        processor: the model's ``WhisperProcessor``.
        backend: "torch" or "onnx" (for reports).
        device: "cpu" or "cuda".
        provider: the ONNX Runtime provider actually in use (None for PyTorch).
        path: the model directory (for messages).
    """

    def __init__(self, model, processor, backend: str, device: str, provider: str | None = None, path: str = ""):
        self.engine = Engine(model, processor, backend, device, provider, path)
        self.engine.windows()  # a windowed student whose export takes 30 s windows only fails here, not mid-batch
        self.lean = LeanGreedy()
        self._aligner = None  # loaded by aligner() on the first request for word timestamps (ONNX)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backend: Backend | str = "auto",
        device: Device | str = "auto",
        threads: int = 0,
        dtype: str = "auto",
        **onnx_kwargs,
    ) -> WhisperTranscriber:
        """Load a HF Whisper directory (PyTorch) or an ONNX export (ONNX Runtime); the arguments are
        :func:`mkdeploy.transcription.engine.load_engine`'s."""
        e = load_engine(path, backend, device, threads, dtype, **onnx_kwargs)
        return cls(e.model, e.processor, e.backend, e.device, e.provider, e.path)

    # what callers read of the model, kept on the engine (one owner)
    model = property(lambda self: self.engine.model)
    processor = property(lambda self: self.engine.processor)
    backend = property(lambda self: self.engine.backend)
    device = property(lambda self: self.engine.device)
    provider = property(lambda self: self.engine.provider)
    path = property(lambda self: self.engine.path)
    multilingual = property(lambda self: self.engine.multilingual)
    model_buckets = property(lambda self: self.engine.model_buckets)

    @property
    def states_memo(self) -> dict | None:
        """See :attr:`mkdeploy.transcription.engine.Engine.states_memo`."""
        return self.engine.states_memo

    @states_memo.setter
    def states_memo(self, memo: dict | None) -> None:
        self.engine.states_memo = memo

    @property
    def _static(self) -> StaticGreedyDecoder | None:
        return self.lean.static

    def windows(self, options: TranscriptionOptions | None = None) -> WindowConfig:
        return self.engine.windows(options)

    def check_language(self, language: str | None) -> str | None:
        """:func:`mkdeploy.transcription.language.check_language` on this model."""
        return check_language(self.engine, language)

    def encode(self, features):
        return self.engine.encode(features)

    # -- decoding ---------------------------------------------------------------------------------
    def transcribe_arrays(
        self, audios: Sequence[np.ndarray], options: TranscriptionOptions | None = None
    ) -> list[Transcription]:
        """Transcribe 16 kHz mono float32 arrays, ``options.batch_size`` at a time.

        Returns:
            One :class:`Transcription` per input, in input order.
        """
        options = options or TranscriptionOptions()
        if options.batched_long_form and any(len(a) > WINDOW_SAMPLES for a in audios):
            return self._transcribe_pieces(audios, options)
        if not options.return_timestamps and any(len(a) > WINDOW_SAMPLES for a in audios):
            options = TranscriptionOptions(**{**asdict(options), "return_timestamps": True})
        win = self.windows(options)
        language = check_language(self.engine, options.language)
        results: list[Transcription | None] = [pre_gate(a, options) for a in audios]
        todo = {i: len(audios[i]) for i in range(len(audios)) if results[i] is None}
        for bucket, idx in plan_batches(todo, win, options.batch_size):
            if language is not None or not self.multilingual:
                fixed = replace(options, language=language or "en")
                for i, t in zip(idx, self._transcribe_batch([audios[i] for i in idx], fixed, bucket)):
                    t.language, results[i] = fixed.language, t
                continue
            for i, t in zip(idx, self._detect_and_transcribe([audios[i] for i in idx], options, bucket)):
                results[i] = t
        return [r for r in results if r is not None]

    def _transcribe_pieces(self, audios: Sequence[np.ndarray], options: TranscriptionOptions) -> list[Transcription]:
        """Batched long-form (:mod:`mkdeploy.transcription.longform`): inputs over 30 s cut at VAD pauses, every piece
        and every short input decoded in the same batches, the long ones joined back."""
        plan: list[tuple[int, Piece]] = []
        for i, a in enumerate(audios):
            if len(a) <= WINDOW_SAMPLES:
                plan.append((i, Piece(0, len(a))))
            else:
                plan += [(i, p) for p in cut_at_pauses(a)]
        decoded = self.transcribe_arrays(
            [audios[i][p.start : p.end] for i, p in plan], replace(options, batched_long_form=False)
        )
        parts: dict[int, list[tuple[Piece, Transcription]]] = {i: [] for i in range(len(audios))}
        for (i, p), r in zip(plan, decoded):
            parts[i].append((p, r))
        out = []
        for i, a in enumerate(audios):
            if len(a) <= WINDOW_SAMPLES:
                out.append(parts[i][0][1])
            else:
                out.append(join("", len(a) / SAMPLE_RATE, parts[i]))
        return out

    def _detect_and_transcribe(
        self, audios: list[np.ndarray], options: TranscriptionOptions, window_s: int
    ) -> list[Transcription]:
        """No language given to a multilingual model: detect each clip's (:mod:`mkdeploy.transcription.language`), then
        decode each language's clips together. The encoder's states of the detection pass are kept for
        the decode (a batch of one language, in a 30 s window, is encoded once)."""
        e = self.engine
        own_memo = e.states_memo is None
        if own_memo:
            e.states_memo = {}
        try:
            guesses = detect_languages(e, audios, batch_size=len(audios))
            by_language: dict[str, list[int]] = {}
            for i, g in enumerate(guesses):
                by_language.setdefault(g.language, []).append(i)
            out: list[Transcription | None] = [None] * len(audios)
            for lang, rows in by_language.items():
                decoded = self._transcribe_batch([audios[i] for i in rows], replace(options, language=lang), window_s)
                for i, t in zip(rows, decoded):
                    t.language, t.language_probability = lang, guesses[i].probability
                    out[i] = t
        finally:
            if own_memo:
                e.states_memo = None
        return [t for t in out if t is not None]

    def _transcribe_batch(
        self, audios: list[np.ndarray], options: TranscriptionOptions, window_s: int = 30
    ) -> list[Transcription]:
        """One batch: inputs, the strategy's tokens, results, the no-speech gate."""
        e = self.engine
        inputs = model_inputs(e, audios, window_s)
        kw = e.generate_kwargs(options, long_form=inputs.long_form)
        if "max_new_tokens" not in kw and not inputs.long_form:
            kw["max_new_tokens"] = token_cap(e, options, inputs.longest)
        with torch.inference_mode(), segment_frames(e.model, inputs.window_s):
            decoded = choose_strategy(options, inputs, self.lean).decode(e, inputs, options, kw)
            results = transcriptions(e, audios, decoded)
            # long-form audio is gated window by window inside generate (Engine.generate_kwargs)
            states = decoded.states
            if options.no_speech_threshold is not None and not inputs.long_form:
                states = states if states is not None else e.encode(inputs.features).last_hidden_state
                # a score read during decoding holds for the tokens it was read on (a special token the
                # results drop would change them)
                known = [
                    k if k is not None and r.tokens == seq.tolist() else None
                    for k, r, seq in zip(decoded.known, results, decoded.sequences)
                ]
                no_speech_gate(e, results, states, options, known)
            if options.word_timestamps:
                # PyTorch aligns on the states it decoded with; an export's are recomputed by its source
                own = e.backend == "torch" and not inputs.long_form
                if own and states is None:
                    states = e.encode(inputs.features).last_hidden_state
                add_words(e, self.aligner(), audios, results, options, states if own else None)
        return results

    def aligner(self):
        """The PyTorch model that aligns words (:mod:`mkdeploy.transcription.alignment`): this one on PyTorch; for an ONNX
        export, the directory it was exported from (its manifest names it and its weights' hash), loaded
        once on first use, on the export's device (ONNX graphs do not output attention weights)."""
        if self.backend == "torch":
            return self.model
        if self._aligner is None:
            model, _ = load_whisper(export_source(self.path))
            self._aligner = model.to("cuda" if self.device == "cuda" else "cpu").eval()
        return self._aligner

    def decode_timestamped(self, audios: Sequence[np.ndarray], options: TranscriptionOptions) -> list[list[Segment]]:
        """:func:`mkdeploy.transcription.strategies.decode_timestamped` on clips of at most 30 s."""
        return decode_timestamped(self.engine, model_inputs(self.engine, list(audios)), options)

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
