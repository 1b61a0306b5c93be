"""Spoken-language detection for multilingual Whisper models, as openai/whisper's ``detect_language``
(its decoding.py) does it: one decoder step from ``<|startoftranscript|>`` over the first 30 s window,
every token but the language tokens masked, a softmax over what is left.

faster-whisper does the same (``WhisperModel.detect_language``) and reports the winner with its
probability (``TranscriptionInfo.language`` / ``language_probability``); so does this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mkdeploy.errors import MkdError
from mkdeploy.transcription.batching import WINDOW_SAMPLES, model_inputs
from mkdeploy.transcription.decoding import ort_logits, torch_logits
from mkdeploy.transcription.engine import Engine

#: what a caller passes (CLI, server, library) to ask for detection instead of a language code
AUTO = "auto"


@dataclass
class LanguageGuess:
    """The detected language of one clip.

    Attributes:
        language: Whisper's language code ("en", "fr", ...).
        probability: its softmax probability among the model's language tokens.
        top: the five most probable codes with their probabilities, most probable first.
    """

    language: str
    probability: float
    top: list[tuple[str, float]]


def language_codes(engine: Engine) -> dict[str, int]:
    """Language code -> token id of a multilingual model (``{}`` for an English-only one)."""
    lang_to_id = getattr(engine.model.generation_config, "lang_to_id", None) or {}
    return {tok[2:-2]: int(i) for tok, i in lang_to_id.items()} if engine.multilingual else {}


def language_name(code: str | None) -> str:
    """The English name OpenAI's ``verbose_json`` gives (``"english"`` for ``"en"``); the code itself when
    Whisper's table lacks it; "english" for None (an ``.en`` model)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES  # Whisper's code -> name table

    return LANGUAGES.get(code or "en", code or "english")


def check_language(engine: Engine, language: str | None) -> str | None:
    """``language`` normalised: a lower-case code, or None for detection ("auto" or None).

    Raises:
        MkdError: a code the model does not know, or a language other than English on an ``.en`` model.
    """
    if language is None or language.lower() == AUTO:
        return None
    lang = language.lower()
    if not engine.multilingual:
        if lang != "en":
            raise MkdError(f"language {lang!r}: {engine.path or 'this model'} is English-only; pass en or auto")
        return lang
    if lang not in language_codes(engine):
        raise MkdError(f"language {lang!r}: not a Whisper language code (en, de, fr, ...; or auto)")
    return lang


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
    names, ids = list(codes), torch.tensor(list(codes.values()))
    sot = engine.processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    out: list[LanguageGuess] = []
    for start in range(0, len(audios), batch_size):
        # the first window only, as openai/whisper (a long file's language is read from its start)
        chunk = [a[:WINDOW_SAMPLES] for a in audios[start : start + batch_size]]
        inputs = model_inputs(engine, chunk)
        with torch.inference_mode():
            states = engine.encode(inputs.features).last_hidden_state
            fn = (torch_logits if engine.backend == "torch" else ort_logits)(engine.model, states)
            first = torch.full((len(chunk), 1), sot, dtype=torch.long, device=states.device)
            logits = fn(first)[:, 0, :].float().cpu()
        probs = torch.softmax(logits[:, ids], dim=-1)
        for row in probs:
            top = torch.topk(row, k=min(5, len(names)))
            ranked = [(names[int(j)], float(p)) for p, j in zip(top.values, top.indices)]
            out.append(LanguageGuess(ranked[0][0], ranked[0][1], ranked))
    return out
