"""The demo corpus: disjoint splits, engines kept apart, determinism (fast); the demo chain (slow)."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mkdeploy.cli.main import app
from mkdeploy.demo.augment import augment
from mkdeploy.demo.corpus import SPLITS, CorpusSpec, build_corpus, clip_plan, manifest_rows, split_texts
from mkdeploy.demo.synthesis import TRAIN_VOICES, UNSEEN_VOICES
from mkdeploy.demo.text import everyday_sentences, fortunes
from mkdeploy.errors import MkdError


def test_text_sources_are_large_distinct_and_plain():
    prose = fortunes()
    assert len(prose) > 5000 and len(set(prose)) == len(prose)
    assert all(5 <= len(t.split()) <= 28 and "--" not in t for t in prose)
    assert not set(prose) & set(everyday_sentences())


def test_no_sentence_in_two_splits_at_full_size():
    texts = split_texts(CorpusSpec())
    seen: dict[str, str] = {}
    for split in SPLITS:
        assert len(set(texts[split])) == len(texts[split]), f"{split} repeats a sentence"
        for t in texts[split]:
            assert t not in seen, f"{t!r} is in {seen.get(t)} and {split}"
            seen[t] = split
    assert len(texts["train"]) == 192 and len(texts["test_unseen_text"]) == 40
    # the unseen-text set comes from the other source only
    assert set(texts["test_unseen_text"]) <= set(everyday_sentences())
    assert split_texts(CorpusSpec()) == texts  # deterministic for a seed
    assert split_texts(CorpusSpec(seed=1))["train"] != texts["train"]


def test_resizing_train_leaves_held_out_sentences_in_place():
    small, large = split_texts(CorpusSpec(n_train=100)), split_texts(CorpusSpec(n_train=240))
    for split in SPLITS:
        if split != "train":
            assert small[split] == large[split], split
    assert large["train"][:100] == small["train"]
    few, many = split_texts(CorpusSpec(n_test=30)), split_texts(CorpusSpec(n_test=50))
    for split in SPLITS:
        n = len(few[split])
        assert few[split] == many[split][:n], split  # a smaller test set is a prefix; the rest stay
    assert len(few["test_in_domain"]) == 30 and len(many["test_in_domain"]) == 50


def test_espeak_ng_only_in_unseen_speech():
    spec = CorpusSpec()
    texts = split_texts(spec)
    for split in SPLITS:
        engines = {clip_plan(spec, split, i, t)["engine"] for i, t in enumerate(texts[split])}
        if split == "test_unseen_speech":
            assert engines == set(UNSEEN_VOICES)
        else:
            assert engines == set(TRAIN_VOICES), split  # every training engine is used, espeak-ng never
            assert "espeak-ng" not in engines


def test_augmentation_is_seeded_per_clip():
    t = np.linspace(0, 1, 16000, dtype=np.float32)
    clean = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    a, b, c = augment(clean, [0, 1]), augment(clean, [0, 1]), augment(clean, [0, 2])
    assert np.array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0


def test_small_corpus_builds_reuses_and_is_identical(tmp_path):
    spec = CorpusSpec(n_train=3, n_dev=1, n_test=2, seed=1, human_clips=False)
    corpus = build_corpus(tmp_path / "c", spec)
    rows = {s: manifest_rows(corpus[s]) for s in SPLITS}
    assert [len(rows[s]) for s in SPLITS] == [3, 1, 2, 2, 2]
    for r in rows["train"] + rows["test_unseen_speech"]:
        audio, sr = sf.read(tmp_path / "c" / r["audio"])
        assert sr == 16000 and audio.ndim == 1 and len(audio) > 8000
    first = tmp_path / "c" / rows["train"][0]["audio"]
    stamp, data = first.stat().st_mtime_ns, first.read_bytes()
    build_corpus(tmp_path / "c", spec)  # same spec: nothing is re-synthesised
    assert first.stat().st_mtime_ns == stamp
    first.unlink()
    build_corpus(tmp_path / "c", spec)  # a lost clip comes back bit for bit
    assert first.read_bytes() == data
    assert json.loads((tmp_path / "c" / "corpus.json").read_text())["n_train"] == 3


@pytest.mark.integration
def test_demo_chain_at_toy_size(tmp_path):
    """`mkd demo` end to end on the real teachers with a toy corpus and 2 steps (a few minutes): CI runs the
    main job's every stage."""
    r = CliRunner().invoke(
        app,
        [
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            "--steps",
            "2",
            "--train-clips",
            "8",
            "--test-clips",
            "4",
            "--score-source",
        ],
    )
    assert r.exit_code == 0, r.output
    head = json.loads((tmp_path / "demo" / "headline.json").read_text())
    check_headline_schema(head)
    assert 0 < head["trainable_pct"] < 1 and head["minutes"] > 0
    report = (tmp_path / "demo" / "REPORT.md").read_text()
    assert "unseen speech" in report and "| student distilled | ONNX int8 |" in report
    assert "| tiny.en whole" in report and head["in_domain"]["source_fp32"] is not None  # scored beside it
    assert (tmp_path / "demo" / "bench" / "latency_vs_wer.png").exists()
    assert (tmp_path / "demo" / "pareto.png").exists()
    keys = {p["key"] for p in head["pareto"]}
    assert {"teacher_int8", "source_int8", "source_ct2", "untrained_int8", "distilled_int8"} <= keys
    ship = next(p for p in head["pareto"] if p["key"] == "distilled_int8")
    assert ship["windows"] != "30" and ship["clips_per_s"] > 0  # served with its own windows


def check_headline_schema(head: dict) -> None:
    """headline.json as issue 26 specifies it: per test set the six WERs (fractions), the fp32 interval of
    distilled − untrained and the reference words; at the top level minutes, commit and p50 latencies."""
    from mkdeploy.demo.pipeline import BENCH_NAMES

    for name in ("in_domain", "unseen_text", "unseen_speech"):
        s = head[name]
        for key in (
            "teacher_fp32",
            "untrained_fp32",
            "distilled_fp32",
            "teacher_int8",
            "untrained_int8",
            "distilled_int8",
        ):
            assert isinstance(s[key], float) and 0.0 <= s[key] <= 1.5, (name, key)
        lo, hi = s["ci95_distilled_minus_untrained_fp32"]
        assert (
            lo <= s["distilled_fp32"] - s["untrained_fp32"] + 1e-9
            and hi >= s["distilled_fp32"] - s["untrained_fp32"] - 1e-9
        )
        assert isinstance(s["ref_words"], int) and s["ref_words"] > 0
    assert isinstance(head["minutes"], float) and "commit" in head
    assert set(head["latency_p50_ms"]) == set(BENCH_NAMES.values())
    assert all(v > 0 for v in head["latency_p50_ms"].values())


def test_headline_schema_from_scores():
    """The headline built from per-clip scores of six configurations, checked against the schema, with one
    set's figures computed by hand."""
    from dataclasses import asdict

    from mkdeploy.demo.report import Headline, set_figures, wer_table

    def sc(errors, words=(10, 10, 10, 10)):
        return {"wer": sum(errors) / sum(words), "word_errors": list(errors), "ref_words": list(words), "by_engine": {}}

    scores = {
        "teacher_fp32": sc([0, 1, 0, 1]),
        "untrained_fp32": sc([2, 3, 2, 3]),
        "distilled_fp32": sc([1, 2, 1, 2]),  # one error fewer on every clip: interval exactly [-0.1, -0.1]
        "teacher_int8": sc([0, 1, 1, 1]),
        "untrained_int8": sc([2, 3, 3, 3]),
        "distilled_int8": sc([2, 3, 3, 3]),
    }
    f = set_figures(scores)
    assert (f.untrained_fp32, f.distilled_fp32) == (0.25, 0.15)
    assert f.ci95_distilled_minus_untrained_fp32 == [-0.1, -0.1]
    assert f.ci95_distilled_minus_untrained_int8 == [0.0, 0.0]
    assert abs(f.gap_closed_fp32 - 0.5) < 1e-12 and f.ref_words == 40 and f.clips == 4
    from mkdeploy.demo.pipeline import BENCH_NAMES

    head = Headline(
        f, f, f, 12.5, "abc1234", "mkdeploy 0.1.0", {n: 100.0 for n in BENCH_NAMES.values()}, {}, 0.5, "pseudo"
    )
    check_headline_schema(json.loads(json.dumps(asdict(head))))
    assert f.source_fp32 is None and f.ci95_distilled_minus_source_fp32 is None  # no pruned student here
    # a pruned student: its source model, scored beside it, gets a row and an interval of its own
    g = set_figures(scores | {"source_fp32": sc([0, 1, 0, 1])})  # one error fewer than distilled on every clip
    assert g.source_fp32 == 0.05 and g.ci95_distilled_minus_source_fp32 == [0.1, 0.1]
    lines = wer_table(Headline(g, g, g, 1.0, None, "v", {}, {}, 0.5, "pseudo"))
    assert any(line.startswith("| tiny.en whole") for line in lines)
    assert any(line.startswith("| distilled − tiny.en whole, fp32 | +10.00 [+10.00, +10.00]") for line in lines)


def _bench_model(name: str, p50_s: float, windows: str = "30"):
    from mkdeploy.bench import ModelResult

    return ModelResult(name, "p", "onnx", "int8", "cpu", "CPU", 1, 1.0, 4, p50_s, p50_s, p50_s, p50_s, 0.1, 10.0,
                       10.0, 0.0, None, None, None, windows=windows)  # fmt: skip


def test_pareto_rows_mark_the_frontier_and_judge_the_shipped_student(tmp_path):
    """The frontier's points carry each model's p50, throughput and WER per test set; a point another beats on
    both speed and in-domain WER is off the frontier; the verdicts say where the shipped student stands
    against each untrained point; the plot is written."""
    from mkdeploy.bench import BenchReport, ThroughputResult
    from mkdeploy.demo.pareto import pareto_rows, pareto_table, plot_pareto, shipped_verdicts

    def sc(wer):
        return {s: {"wer": wer} for s in ("test_in_domain", "test_unseen_text", "test_unseen_speech")}

    names = {"teacher_int8": "teacher", "source_int8": "tiny", "untrained_int8": "tiny windows",
             "distilled_int8": "student"}  # fmt: skip
    bench = BenchReport("m", "tiny", 1, 1, 10.0, {})
    bench.models = [_bench_model("teacher", 1.0), _bench_model("tiny", 0.5), _bench_model("tiny windows", 0.2, "2,30"),
                    _bench_model("student", 0.2, "2,30")]  # fmt: skip
    bench.throughput = [ThroughputResult("student", 8, 8, 1.0, 8.0, 20.0, 1.0, 1.0)]
    scores = {"teacher_int8": sc(0.05), "source_int8": sc(0.08), "untrained_int8": sc(0.30), "distilled_int8": sc(0.08)}
    rows = pareto_rows(bench, scores, names)
    by = {r["key"]: r for r in rows}
    assert by["distilled_int8"]["p50_ms"] == 200.0 and by["distilled_int8"]["clips_per_s"] == 8.0
    assert by["distilled_int8"]["wer"] == {"in_domain": 0.08, "unseen_text": 0.08, "unseen_speech": 0.08}
    assert by["untrained_int8"]["clips_per_s"] is None
    # tiny.en whole: as accurate as the student and slower; untrained windows: as fast and less accurate
    assert {k for k, r in by.items() if r["on_frontier"]} == {"teacher_int8", "distilled_int8"}
    verdicts = shipped_verdicts(rows)
    assert any(v.startswith("- against tiny: 2.50x its speed, +0.00") and "ahead" in v for v in verdicts)
    assert any(v.startswith("- against teacher: 5.00x") and "a trade (faster, less accurate)" in v for v in verdicts)
    assert any(v.startswith("- against tiny windows") and "ahead" in v for v in verdicts)
    assert any(line.startswith("| **student** | onnx int8 | 2,30 | 200 | 8.00 | 8.00%") for line in pareto_table(rows))
    plot_pareto(rows, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").stat().st_size > 1000


def test_the_demo_corpus_uses_what_calibration_kept():
    """demo_corpus(): only the calibrated voices speak train, dev and the two text test sets, espeak-ng
    only the unseen-speech set; every clip gets noise in the kept band; the texts are plain fortunes."""
    from mkdeploy.demo.corpus import demo_corpus
    from mkdeploy.demo.text import is_plain

    spec = demo_corpus()
    assert spec.augment.p_noise == 1.0 and spec.augment.snr_db == (20.0, 30.0)
    texts = split_texts(spec)
    kept = {tuple(v.split("/")) for v in spec.train_voices}
    for split in SPLITS:
        voices = {(p["engine"], p["voice"]) for p in (clip_plan(spec, split, i, t) for i, t in enumerate(texts[split]))}
        if split == "test_unseen_speech":
            assert {e for e, _ in voices} == set(UNSEEN_VOICES)
        else:
            assert voices == kept, split
    for t in texts["train"] + texts["test_in_domain"]:
        assert 2 * 6 <= len(t.split()) and all(c not in t for c in "0123456789:;()")
    assert is_plain("Time and tide wait for no man at all.") and not is_plain("statistics, n.: a lie with numbers")
    assert not is_plain("Never trust Bob when he says he will be on time.")
    # the unseen-text set joins the shipped sentences too, each used once
    joined = " ".join(texts["test_unseen_text"])
    assert len(texts["test_unseen_text"]) < spec.n_test and all(s in joined for s in everyday_sentences())


def test_an_interrupted_distillation_stops_the_demo(tmp_path, monkeypatch):
    """A stop request during training (the trainer checkpoints and returns ``interrupted``) ends the demo
    with the resume hint: nothing downstream merges or scores a half-trained run (the ablation, which calls
    the same ``distil``, once scored one)."""
    from mkdeploy.demo import pipeline
    from mkdeploy.distill.config import RecipeConfig

    monkeypatch.setattr(pipeline, "train", lambda *a, **k: {"step": 24, "max_steps": 60, "interrupted": True})
    corpus = {"train": tmp_path / "train.jsonl", "dev": tmp_path / "dev.jsonl"}
    with pytest.raises(MkdError, match="stopped at step 24 of 60.*again to resume"):
        pipeline.distil(tmp_path / "run", tmp_path / "t", tmp_path / "s", corpus, RecipeConfig(max_steps=60), print)
