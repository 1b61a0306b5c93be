"""Decoding options, shared by every backend and decoding strategy (:mod:`mkdeploy.transcription.runtime`)."""

from __future__ import annotations

from dataclasses import dataclass

#: openai/whisper's temperature fallback: each retry 0.2 hotter, up to 1.0
TEMPERATURE_STEP = 0.2


def temperature_ladder(start: float = 0.0) -> tuple[float, ...]:
    """openai/whisper's fallback ladder from ``start``: ``(0.0, 0.2, ..., 1.0)`` for 0, ``(0.6, 0.8, 1.0)``
    for 0.6 (the API's ``temperature`` is where a request's ladder starts)."""
    steps = int(round((1.0 - start) / TEMPERATURE_STEP))
    return tuple(round(start + TEMPERATURE_STEP * i, 2) for i in range(max(steps, 0) + 1))


@dataclass
class TranscriptionOptions:
    """Decoding options shared by both backends.

    Attributes:
        language: language code for multilingual models; None (or "auto") detects it per clip from the
            first 30 s (:mod:`mkdeploy.transcription.language`), as openai/whisper and faster-whisper do when none is given.
            ``.en`` models are always English.
        task: "transcribe" or "translate" (multilingual models only).
        batch_size: clips decoded together.
        return_timestamps: predict timestamp tokens (segments with times); needed for audio over 30 s.
        num_beams: 1 is greedy.
        max_new_tokens: cap per 30 s window (None: from the clip's length, see below).
        max_tokens_per_second: for clips under 30 s with no max_new_tokens, the cap is this many tokens
            per second of the longest clip in the batch, plus 20. Speech runs at about 4 tokens/s; a
            repetition loop ("lo lo lo ...", seen from base on noisy speech) otherwise runs to 448 tokens.
        compression_ratio_threshold: Whisper's loop detector (HF computes it on token bytes; 1.35 is its
            documented equivalent of openai/whisper's 2.4): an output that compresses better than this is
            decoded again at the next temperature of ``temperatures``. Greedy output that passes is kept
            as is, so normal clips stay deterministic. None turns the fallback off.
        temperatures: the fallback ladder (openai/whisper's default).
        encoder_buckets: encoder windows in seconds (see :mod:`mkdeploy.models.window`): each batch is
            encoded in the smallest that holds its longest clip, audio over 30 s in 30 s windows. None
            uses the model's own (a windowed student's config names them; other models use 30 s only);
            ``(30,)`` forces Whisper's 30 s window; shorter buckets on a model not trained for them trim
            its window untrained, as whisper.cpp's ``audio_ctx`` does, and cost accuracy.
        fast_greedy: greedy decoding without timestamps of clips up to 30 s runs a lean loop
            (:mod:`mkdeploy.transcription.decoding`, same tokens as ``generate``, ~3 ms less per token); False uses
            ``generate`` throughout.
        no_speech_threshold: openai/whisper's no-speech gate: a clip whose ``<|nocaptions|>`` probability
            is above this and whose average token log-probability is below ``logprob_threshold`` comes
            back empty (``gate="no_speech"``). None turns it off. Costs one teacher-forced decoder pass.
        logprob_threshold: see ``no_speech_threshold`` (openai/whisper's -1.0).
        vad_filter: run Silero VAD first (:mod:`mkdeploy.transcription.vad`, the ``[serve]`` extra) and return clips
            without detected speech empty, undecoded (``gate="vad"``). Catches noise and hum that the
            no-speech gate lets through.
        initial_prompt: text given to the decoder as previous context (``<|startofprev|>``), as
            openai/whisper's ``initial_prompt`` and the OpenAI API's ``prompt``.
        word_timestamps: each word's start and end (cross-attention over the alignment heads and DTW,
            :mod:`mkdeploy.transcription.alignment`; one extra decoder pass per clip, and for an ONNX export a PyTorch
            pass of the model it was exported from). Fills ``Transcription.words`` and each segment's.
        batched_long_form: audio over 30 s is cut at Silero VAD's pauses into pieces of at most 30 s that
            are decoded as batches with everything else (:mod:`mkdeploy.transcription.longform`; needs the ``[serve]``
            extra) instead of ``generate``'s window-by-window walk; results are joined, times mapped back.
        static_decoder: greedy decoding of PyTorch models on CUDA runs the static-cache step of
            :mod:`mkdeploy.transcription.static_decoder`, captured as a CUDA graph (same tokens, without a kernel launch
            per operation); None: on for PyTorch on CUDA, off elsewhere (on CPU it gives the same tokens; a
            speed gain there is not measured).
    """

    language: str | None = None
    task: str = "transcribe"
    batch_size: int = 8
    return_timestamps: bool = True
    num_beams: int = 1
    max_new_tokens: int | None = None
    max_tokens_per_second: float = 8.0
    compression_ratio_threshold: float | None = 1.35
    temperatures: tuple[float, ...] = temperature_ladder()
    encoder_buckets: tuple[int, ...] | None = None
    fast_greedy: bool = True
    no_speech_threshold: float | None = 0.6
    logprob_threshold: float | None = -1.0
    vad_filter: bool = False
    initial_prompt: str | None = None
    word_timestamps: bool = False
    batched_long_form: bool = False
    static_decoder: bool | None = None


def scoring_options(language: str | None = "en", batch_size: int = 8, num_beams: int = 1) -> TranscriptionOptions:
    """The one decoding configuration behind every score mkd prints: `mkd eval`, `mkd bench`, the demo's report.

    Greedy unless beams are asked for, no timestamp tokens (a transcript scored for WER needs none, and with
    them ``generate`` walks the window segment by segment, a different decoding that moved the demo's WER by
    ~3 points, DESIGN §8), every other option the transcriber's default. `mkd serve` decodes a json or text
    request the same way, with Silero VAD first (``--vad``, on by default). With a batch-invariant model (fp32,
    or the default int8 of `mkd export`) the batch size changes no transcript (tests/test_scoring_paths.py).

    Args:
        language: the language token for multilingual models (None: detect per clip).
        batch_size: clips decoded together.
        num_beams: 1 is greedy.
    """
    return TranscriptionOptions(language=language, batch_size=batch_size, num_beams=num_beams, return_timestamps=False)
