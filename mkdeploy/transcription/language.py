"""Spoken-language detection for multilingual Whisper models, as openai/whisper's ``detect_language``
(its decoding.py) does it: one decoder step from ``<|startoftranscript|>`` over the first 30 s window,
every token but the language tokens masked, a softmax over what is left.

faster-whisper does the same (``WhisperModel.detect_language``) and reports the winner with its
probability (``TranscriptionInfo.language`` / ``language_probability``); so does this module. The ranking,
the code check and the names are :mod:`mkdeploy.lean.languages`' and :mod:`mkdeploy.lean.greedy`'s, shared with
the ONNX Runtime engine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mkdeploy.errors import MkdError
from mkdeploy.lean.greedy import rank_languages
from mkdeploy.lean.languages import AUTO, LanguageGuess, codes_of, language_name, normalise_language
from mkdeploy.transcription.batching import WINDOW_SAMPLES, model_inputs
from mkdeploy.transcription.decoding import ort_logits, torch_logits
from mkdeploy.transcription.engine import Engine

__all__ = ["AUTO", "LanguageGuess", "check_language", "detect_languages", "language_codes", "language_name"]


def language_codes(engine: Engine) -> dict[str, int]:
    """Language code -> token id of a multilingual model (``{}`` for an English-only one)."""
    return codes_of(getattr(engine.model.generation_config, "lang_to_id", None), engine.multilingual)


def check_language(engine: Engine, language: str | None) -> str | None:
    """``language`` normalised: a lower-case code, or None for detection ("auto" or None).

    Raises:
        MkdError: a code the model does not know, or a language other than English on an ``.en`` model.
    """
    return normalise_language(language, language_codes(engine), engine.path)


def detect_languages(engine: Engine, audios: Sequence[np.ndarray], batch_size: int = 8) -> list[LanguageGuess]:
    """The language of each clip, from its first 30 s.

    Args:
        engine: a multilingual model.
        audios: 16 kHz mono float32 arrays.
        batch_size: clips per encoder pass.

    Returns:
        One :class:`LanguageGuess` per clip, in input order.

    Raises:
        MkdError: the model is English-only (it has no language tokens to choose among).
    """
    codes = language_codes(engine)
    if not codes:
        raise MkdError(f"{engine.path or 'model'}: an English-only model; it has no language to detect")
    sot = engine.processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    out: list[LanguageGuess] = []
    for start in range(0, len(audios), batch_size):
        # the first window only, as openai/whisper (a long file's language is read from its start)
        chunk = [a[:WINDOW_SAMPLES] for a in audios[start : start + batch_size]]
        inputs = model_inputs(engine, chunk)
        with torch.inference_mode():
            states = engine.encode(inputs.features).last_hidden_state
            fn = (torch_logits if engine.backend == "torch" else ort_logits)(engine.model, states)
            logits = fn(np.full((len(chunk), 1), sot, dtype=np.int64))[:, 0, :]
        for row in logits:
            ranked = rank_languages(row, codes)
            out.append(LanguageGuess(ranked[0][0], ranked[0][1], ranked))
    return out
