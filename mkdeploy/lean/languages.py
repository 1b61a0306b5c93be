"""Whisper's languages: the code a caller gives, checked against a model's language tokens, and the name
OpenAI's ``verbose_json`` reports. Shared by the PyTorch engine (:mod:`mkdeploy.transcription.language`) and
the ONNX Runtime one (:mod:`mkdeploy.lean.transcriber`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mkdeploy.errors import MkdError

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


@lru_cache(maxsize=1)
def _names() -> dict[str, str]:
    # transformers' LANGUAGES table (tokenization_whisper.py, openai/whisper's tokenizer.py), copied into
    # the package so that naming a language needs no transformers
    return json.loads(resources.files("mkdeploy").joinpath("assets/languages.json").read_text(encoding="utf-8"))


def language_name(code: str | None) -> str:
    """The English name OpenAI's ``verbose_json`` gives (``"english"`` for ``"en"``); the code itself when
    Whisper's table lacks it; "english" for None (an ``.en`` model)."""
    return _names().get(code or "en", code or "english")


def codes_of(lang_to_id: dict[str, int] | None, multilingual: bool) -> dict[str, int]:
    """Language code -> token id from a generation config's ``lang_to_id`` (``{}`` for English-only)."""
    return {tok[2:-2]: int(i) for tok, i in (lang_to_id or {}).items()} if multilingual else {}


def normalise_language(language: str | None, codes: dict[str, int], model: str = "") -> str | None:
    """``language`` as a lower-case code, or None for detection ("auto" or None).

    Args:
        language: what the caller gave.
        codes: the model's language codes (:func:`codes_of`; empty for an ``.en`` model).
        model: the model's path, for the message.

    Raises:
        MkdError: a code the model does not know, or a language other than English on an ``.en`` model.
    """
    if language is None or language.lower() == AUTO:
        return None
    lang = language.lower()
    if not codes:
        if lang != "en":
            raise MkdError(f"language {lang!r}: {model or 'this model'} is English-only; pass en or auto")
        return lang
    if lang not in codes:
        raise MkdError(f"language {lang!r}: not a Whisper language code (en, de, fr, ...; or auto)")
    return lang
