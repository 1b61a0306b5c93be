"""The demo corpus (fast) and the whole demo chain at toy size (slow: make test-slow)."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mkdeploy.cli.main import app
from mkdeploy.corpus import CorpusSpec, build_corpus, sentences
from mkdeploy.data import load_manifest


def test_sentences_are_distinct_and_deterministic():
    a, b = sentences(200, seed=3), sentences(200, seed=3)
    assert a == b and len(set(a)) == 200 and all(s.endswith((".", "?")) for s in a)
    assert sentences(200, seed=4) != a


def test_corpus_splits_styles_and_reuse(tmp_path):
    spec = CorpusSpec(n_train=3, n_heldout=2, seed=1)
    train_m, held_m = build_corpus(tmp_path / "c", spec)
    train, held = load_manifest(train_m, require_text=True), load_manifest(held_m, require_text=True)
    assert len(train) == 3 and len(held) == 2
    assert not {r.text for r in train} & {r.text for r in held}, "held-out sentences must be unseen"
    for r in train + held:
        audio, sr = sf.read(r.audio)
        assert sr == 16000 and audio.ndim == 1 and len(audio) > 8000 and np.abs(audio).max() <= 1.0
    stamp = train[0].audio.stat().st_mtime_ns
    build_corpus(tmp_path / "c", spec)  # same spec: nothing is re-synthesised
    assert train[0].audio.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "c" / "corpus.json").read_text())["n_train"] == 3


@pytest.mark.slow
def test_demo_chain_at_toy_size(tmp_path):
    """`mkd demo` end to end on the real teachers with a toy corpus and 2 steps (a few minutes)."""
    r = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--steps", "2", "--train-clips", "8",
                                 "--heldout-clips", "4"])
    assert r.exit_code == 0, r.output
    head = json.loads((tmp_path / "demo" / "headline.json").read_text())
    assert 0 <= head["teacher_wer"] <= 1 and head["speedup"] > 0 and 0 < head["trainable_pct"] < 1
    report = (tmp_path / "demo" / "REPORT.md").read_text()
    assert "teacher WER" in report and "| tiny.en distilled (onnx int8) |" in report
    assert (tmp_path / "demo" / "bench" / "latency_vs_wer.png").exists()
