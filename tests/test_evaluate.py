"""WER/CER against hand-computed values, after Whisper's normaliser."""

import json

import pytest

from mkdeploy.data import load_manifest
from mkdeploy.errors import DataError
from mkdeploy.evaluate import error_rates, normalize


def test_normaliser_is_whispers():
    assert normalize("Hello, Mr. Smith!  It's twenty five dollars.") == "hello mister smith it is $25"
    assert normalize("The colour of the centre") == "the color of the center"


def test_wer_cer_hand_computed():
    # ref 4 words / hyp: 1 substitution (sat->sit), 1 deletion (the) -> 2/4 words
    r = error_rates(["the cat sat down"], ["cat sit down"])
    assert r.wer == pytest.approx(0.5)
    # chars: "the cat sat down" (16) vs "cat sit down": delete "the " (4) + a->i (1) = 5
    assert r.cer == pytest.approx(5 / 16)
    assert r.utterances[0].word_errors == 2 and r.ref_words == 4


def test_corpus_rate_is_pooled_not_averaged():
    r = error_rates(["a b c d e f g h i j", "x"], ["a b c d e f g h i j", "y"])
    assert r.wer == pytest.approx(1 / 11)  # mean of per-utterance rates would be 0.5


def test_normalisation_removes_formatting_errors():
    assert error_rates(["Hello, world!"], ["hello world"]).wer == 0.0
    assert error_rates(["Hello, world!"], ["hello world"], normalise=False).wer > 0


def test_empty_reference_and_hypothesis():
    r = error_rates(["", "red blue"], ["yes", ""])  # ("uh" would be dropped as a filler)
    assert r.utterances[0].word_errors == 1 and r.utterances[1].word_errors == 2
    assert r.wer == pytest.approx(3 / 2)


def test_manifest_jsonl_and_folder(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "a.txt").write_text("hello\n")
    rows = load_manifest(tmp_path)
    assert rows[0].text == "hello" and rows[0].audio == tmp_path / "a.wav"
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio": "a.wav", "text": "hi"}) + "\n\n" + json.dumps({"audio": "a.wav"}) + "\n")
    rows = load_manifest(m)
    assert rows[0].audio == tmp_path / "a.wav" and rows[1].text is None
    with pytest.raises(DataError, match="no reference"):
        load_manifest(m, require_text=True)
    m.write_text("{not json\n")
    with pytest.raises(DataError, match=r"m.jsonl:1: not valid JSON"):
        load_manifest(m)
    with pytest.raises(DataError, match="no such manifest"):
        load_manifest(tmp_path / "nope.jsonl")


def test_wer_by_group_hand_values():
    from mkdeploy.evaluate import wer_by_group

    refs = ["a b c d", "a b", "x y z w"]
    hyps = ["a b c d", "a", "x y"]  # 0/4, 1/2, 2/4 word errors
    assert wer_by_group(refs, hyps, [10, 5, 10]) == {"5": {"clips": 1, "wer": 0.5}, "10": {"clips": 2, "wer": 0.25}}
