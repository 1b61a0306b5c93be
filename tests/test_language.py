"""Language detection (mkdeploy/transcription/language.py) and decoding in the detected language, on tiny random models:
the probabilities against a softmax computed by hand from the model's own logits, and the transcriber's
use of them. The real base on French and German speech is in tests/test_language_real.py."""

import numpy as np
import pytest
import torch

from mkdeploy.errors import MkdError
from mkdeploy.transcription.language import check_language, detect_languages, language_codes, language_name
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber


@pytest.fixture(scope="module")
def multi(tiny_multilingual_teacher):
    return WhisperTranscriber.from_pretrained(tiny_multilingual_teacher, device="cpu")


@pytest.fixture(scope="module")
def english(tiny_model_dir):
    return WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")


def _clips(seed: int, seconds=(2, 3, 1)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in seconds]


def test_probabilities_are_the_softmax_over_language_tokens(multi):
    audios = _clips(3)
    guesses = detect_languages(multi.engine, audios)
    codes = language_codes(multi.engine)
    assert len(codes) == 99 and codes["en"] == multi.model.generation_config.lang_to_id["<|en|>"]
    fe = multi.processor.feature_extractor
    sot = multi.processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    for audio, g in zip(audios, guesses):
        # by hand: the full model on this clip alone, <|startoftranscript|> as the only decoder input
        feats = fe(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            logits = multi.model(input_features=feats, decoder_input_ids=torch.tensor([[sot]])).logits[0, 0]
        probs = torch.softmax(logits[list(codes.values())].double(), dim=-1)
        best = int(probs.argmax())
        assert g.language == list(codes)[best]
        assert g.probability == pytest.approx(float(probs[best]), abs=1e-4)
        assert [p for _, p in g.top] == sorted((p for _, p in g.top), reverse=True) and len(g.top) == 5


def test_no_language_detects_then_decodes_as_if_it_were_given(multi):
    audios = _clips(4)
    opts = TranscriptionOptions(return_timestamps=False, max_new_tokens=8, batch_size=3)
    auto = multi.transcribe_arrays(audios, opts)
    guesses = detect_languages(multi.engine, audios)
    for a, t, g in zip(audios, auto, guesses):
        assert t.language == g.language and t.language_probability == pytest.approx(g.probability, abs=1e-6)
        given = multi.transcribe_arrays([a], TranscriptionOptions(**{**opts.__dict__, "language": g.language}))[0]
        assert given.tokens == t.tokens and given.language == g.language and given.language_probability is None
    # "auto" is the CLI's and the server's word for None
    again = multi.transcribe_arrays(audios, TranscriptionOptions(**{**opts.__dict__, "language": "auto"}))
    assert [t.tokens for t in again] == [t.tokens for t in auto]


def test_a_one_language_batch_is_encoded_once(multi, monkeypatch):
    audios = _clips(5, (2, 2))
    # the random model's guess varies by clip; fix it so the batch is one language
    monkeypatch.setattr(
        "mkdeploy.transcription.runtime.detect_languages",
        lambda e, a, batch_size=8: [g.__class__("de", g.probability, g.top) for g in detect_languages(e, a)],
    )
    calls = []
    hook = multi.model.get_encoder().register_forward_hook(lambda mod, inp, out: calls.append(1))
    try:
        res = multi.transcribe_arrays(audios, TranscriptionOptions(return_timestamps=False, max_new_tokens=6))
    finally:
        hook.remove()
    assert [t.language for t in res] == ["de", "de"]
    assert len(calls) == 1  # detection, decoding and the no-speech gate share one encoder pass
    assert multi.states_memo is None  # the batch's memo is not kept


def test_english_only_models_are_english_and_bad_codes_fail_in_one_line(english, multi):
    res = english.transcribe_arrays(_clips(6, (1,)), TranscriptionOptions(return_timestamps=False, max_new_tokens=4))
    assert res[0].language == "en" and res[0].language_probability is None
    assert check_language(english.engine, "auto") is None and check_language(english.engine, "EN") == "en"
    with pytest.raises(MkdError, match="English-only"):
        check_language(english.engine, "fr")
    with pytest.raises(MkdError, match="English-only"):
        detect_languages(english.engine, _clips(6, (1,)))
    with pytest.raises(MkdError, match="not a Whisper language code"):
        multi.transcribe_arrays(_clips(6, (1,)), TranscriptionOptions(language="xx"))
    assert language_name("fr") == "french" and language_name(None) == "english"
