"""Short encoder windows (models/window.py), the lean greedy loop (mkdeploy/transcription/decoding.py) and their use in
training, export, transcription and bench, on tiny random models."""

import json
import math

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from mkdeploy.cli.main import app
from mkdeploy.errors import MkdError, ModelError
from mkdeploy.models.student import load_whisper
from mkdeploy.models.window import (
    BUCKETS_ATTR,
    WindowConfig,
    enable_encoder_windows,
    normalise_buckets,
    parse_buckets,
    window_frames,
)
from mkdeploy.transcription.decoding import GreedyResult, compression_ratio, greedy_decode
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

BUCKETS = (5, 10, 20, 30)


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1


# -- buckets ---------------------------------------------------------------------------------------
def test_buckets_parse_normalise_and_pick():
    assert parse_buckets("10, 5,20s") == (5, 10, 20, 30)  # sorted, 30 always last
    assert normalise_buckets([30]) == (30,)
    for bad in ("0", "31", "2.5", "abc", ""):
        with pytest.raises(MkdError, match="encoder"):
            parse_buckets(bad)
    w = WindowConfig(BUCKETS)
    assert [w.bucket_for(s) for s in (0.5, 5.0, 5.01, 9.9, 19.0, 25.0, 30.0, 45.0)] == [5, 5, 10, 10, 20, 30, 30, 30]
    assert w.windowed and not WindowConfig((30,)).windowed
    assert window_frames(5) == 500


# -- the windowed encoder --------------------------------------------------------------------------
def test_windowed_encoder_equals_hugging_face_and_a_short_positions_model(tiny_model_dir):
    from transformers import WhisperForConditionalGeneration

    model, proc = load_whisper(tiny_model_dir)
    model.eval()
    fe = proc.feature_extractor
    audio = _noise(3.2)
    f30 = fe([audio], sampling_rate=16000, return_tensors="pt").input_features
    f5 = fe([audio], sampling_rate=16000, return_tensors="pt", padding="max_length", max_length=80000).input_features
    assert f5.shape[-1] == 500 and torch.equal(f30[..., :500], f5)  # the window is the head of the 30 s input
    enc = model.get_encoder()
    with torch.inference_mode():
        ref = enc(f30, output_hidden_states=True)
        with pytest.raises(ValueError, match="3000"):
            enc(f5)  # Hugging Face's encoder refuses short windows
        enable_encoder_windows(model)
        enable_encoder_windows(model)  # idempotent
        full = enc(f30, output_hidden_states=True)
        assert torch.equal(full.last_hidden_state, ref.last_hidden_state)
        # the traced (ONNX) path computes the same at 30 s
        from mkdeploy.models.window import _windowed_forward

        dyn = _windowed_forward(enc, f30, output_hidden_states=True)
        assert torch.allclose(dyn.last_hidden_state, ref.last_hidden_state, atol=1e-6)
        assert len(dyn.hidden_states) == len(ref.hidden_states)
        short = enc(f5, output_hidden_states=True)
        assert short.last_hidden_state.shape[1] == 250 and len(short.hidden_states) == len(ref.hidden_states)
        # a model built for 250 positions (the from_pretrained route) gives the same states
        m250 = WhisperForConditionalGeneration.from_pretrained(
            tiny_model_dir, max_source_positions=250, ignore_mismatched_sizes=True
        ).eval()
        m250.model.encoder.embed_positions.weight.data.copy_(enc.embed_positions.weight[:250])
        assert torch.allclose(m250.model.encoder(f5).last_hidden_state, short.last_hidden_state, atol=1e-5)
        for bad in (f5[..., :499], torch.zeros(1, 80, 3002)):
            with pytest.raises(ValueError, match="even number of mel frames"):
                enc(bad)


# -- the lean greedy loop --------------------------------------------------------------------------
class _Gen:
    eos_token_id = 3
    suppress_tokens = [1]
    begin_suppress_tokens = [3]


def test_greedy_loop_suppresses_stops_and_caps():
    # logits favour token 1 (always suppressed), then 3 (eos, suppressed at the first step), then 2
    calls = []

    def step(ids, past):
        calls.append(ids.tolist())
        logits = np.array([[0.0, 9.0, 5.0, 7.0], [0.0, 9.0, 5.0, 1.0]], dtype=np.float32)
        return np.repeat(logits[:, None], ids.shape[1], axis=1), (past or 0) + 1

    out = greedy_decode(step, 2, [0, 0], _Gen, max_new_tokens=4, vocab_size=4)
    # clip 0: step 1 picks 2 (1 and 3 suppressed), step 2 picks eos; clip 1 never ends: capped at 4 tokens
    assert out[0] == GreedyResult([2], False) and out[1].tokens == [2, 2, 2, 2]
    assert calls[0] == [[0, 0], [0, 0]] and calls[1] == [[2], [2]] and calls[2] == [[3], [2]]
    flagged = greedy_decode(step, 2, [0, 0], _Gen, max_new_tokens=40, vocab_size=4, compression_ratio_threshold=1.35)
    assert not flagged[0].needs_fallback and flagged[1].needs_fallback  # 40 x "2" compresses well


def test_compression_ratio_matches_hugging_face():
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

    for toks in ([50256], list(range(300, 340)), [440] * 60 + [50256]):
        assert math.isclose(
            compression_ratio(toks, 51864),
            WhisperGenerationMixin._retrieve_compression_ratio(torch.tensor(toks), 51864),
        )


@pytest.mark.parametrize("buckets", [(30,), BUCKETS])
def test_lean_loop_tokens_equal_generate(tiny_model_dir, buckets):
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, backend="torch", device="cpu")
    audios = [_noise(s, i) for i, s in enumerate((1.5, 3.0, 7.0, 12.0))]
    runs = {}
    for fast in (True, False):
        for bs in (1, 3):
            opts = TranscriptionOptions(
                return_timestamps=False, batch_size=bs, max_new_tokens=20, fast_greedy=fast, encoder_buckets=buckets
            )
            runs[(fast, bs)] = [t.tokens for t in tr.transcribe_arrays(audios, opts)]
    assert all(any(t) for t in runs[(False, 1)])
    for key, toks in runs.items():
        assert toks == runs[(False, 1)], key


def test_lean_loop_hands_repetition_loops_to_the_fallback(tiny_model_dir, monkeypatch):
    """A greedy output that fails the compression check is decoded again by generate()."""
    import mkdeploy.lean.greedy as dec

    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, backend="torch", device="cpu")
    calls = []
    real = tr.model.generate

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(tr.model, "generate", spy)
    audios = [_noise(2.0, 7)]
    tr.transcribe_arrays(audios, TranscriptionOptions(return_timestamps=False, max_new_tokens=20))
    assert not calls
    monkeypatch.setattr(dec, "compression_ratio", lambda toks, v: 99.0)  # every output "loops"
    out = tr.transcribe_arrays(
        audios, TranscriptionOptions(return_timestamps=False, max_new_tokens=20, encoder_buckets=BUCKETS)
    )
    assert out[0].tokens
    assert len(calls) == 1 and calls[0]["compression_ratio_threshold"] == 1.35
    assert calls[0]["input_features"].shape[-1] == 500  # the clip's window, not 30 s


# -- the transcriber picks windows ------------------------------------------------------------------
def test_transcriber_groups_clips_by_bucket(tiny_model_dir, monkeypatch):
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, backend="torch", device="cpu")
    assert tr.model_buckets is None and tr.windows().buckets == (30,)  # an ordinary model keeps 30 s
    frames = []
    real = tr.engine.encode
    monkeypatch.setattr(tr.engine, "encode", lambda f: frames.append((f.shape[0], f.shape[-1])) or real(f))
    audios = [_noise(s, i) for i, s in enumerate((2.0, 7.0, 3.0, 4.5, 16.0))]
    opts = TranscriptionOptions(return_timestamps=False, batch_size=8, max_new_tokens=8, encoder_buckets=BUCKETS)
    out = tr.transcribe_arrays(audios, opts)
    assert [round(t.duration, 1) for t in out] == [2.0, 7.0, 3.0, 4.5, 16.0]  # input order kept
    assert sorted(frames) == [(1, 1000), (1, 2000), (3, 500)]  # one batch per bucket, padded to the bucket
    frames.clear()
    tr.transcribe_arrays(audios[:2], TranscriptionOptions(return_timestamps=False, max_new_tokens=8))
    assert frames == [(2, 3000)]
    # timestamps go through generate() on the short window (segments, temperature fallback)
    gen_frames = []
    real_generate = tr.model.generate
    monkeypatch.setattr(
        tr.model, "generate", lambda **kw: gen_frames.append(kw["input_features"].shape[-1]) or real_generate(**kw)
    )
    stamped = tr.transcribe_arrays([audios[0]], TranscriptionOptions(max_new_tokens=8, encoder_buckets=BUCKETS))
    assert gen_frames == [500] and stamped[0].tokens and tr.model.config.max_source_positions == 1500
    # long audio goes through generate()'s long-form path in 30 s windows, buckets or not
    frames.clear()
    long = tr.transcribe_arrays([_noise(41.0)], TranscriptionOptions(max_new_tokens=8, encoder_buckets=BUCKETS))
    assert long[0].duration == 41.0 and frames == []


# -- student init, training, merge, export, bench ----------------------------------------------------
FAST = dict(batch_size=2, save_every=2, eval_every=0, warmup_steps=1, max_trainable=0.05, eval_max_new_tokens=8)


@pytest.fixture(scope="module")
def windowed_run(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path_factory):
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.merge import merge_run
    from mkdeploy.distill.trainer import TrainArgs, train

    d = tmp_path_factory.mktemp("windows")
    res = CliRunner().invoke(
        app, ["student", "init", str(d / "student"), "--from", str(tiny_model_dir), "--encoder-buckets", "5,10,20"]
    )
    assert res.exit_code == 0, res.output
    assert "encoder windows 5 s, 10 s, 20 s, 30 s" in res.output
    cfg = RecipeConfig(**{**FAST, "max_steps": 4, "full_window_prob": 0.5}).validate()
    logs = []
    summary = train(
        TrainArgs(
            tiny_multilingual_teacher, d / "student", speech_manifest, d / "run", cfg, eval_manifest=speech_manifest
        ),
        log=logs.append,
    )
    merge_run(d / "run", d / "merged")
    return d, summary, logs


def test_windowed_training_pads_batches_to_buckets_and_reports_wer_per_bucket(windowed_run):
    d, summary, logs = windowed_run
    rows = [json.loads(x) for x in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    windows = [r["window_s"] for r in rows]
    assert set(windows) <= {5, 30} and 5 in windows  # the Piper test clips are under 5 s
    assert summary["encoder_buckets"] == [5, 10, 20, 30]
    before, after = summary["wer_by_bucket_before"], summary["wer_by_bucket_after"]
    assert set(before) == set(after) == {"5"} and before["5"]["clips"] == after["5"]["clips"] > 0
    assert any("encoder windows: 5 s, 10 s, 20 s, 30 s" in line for line in logs)
    assert any("5 s:" in line and "held-out WER before" in line for line in logs)
    evals = [json.loads(x) for x in (d / "run" / "eval.jsonl").read_text().splitlines()]
    assert all("by_bucket" in e for e in evals)
    # the merged student carries its buckets: the runtime uses them without being told
    cfg = json.loads((d / "merged" / "config.json").read_text())
    assert cfg[BUCKETS_ATTR] == [5, 10, 20, 30]
    tr = WhisperTranscriber.from_pretrained(d / "merged", backend="torch", device="cpu")
    assert tr.windows().buckets == (5, 10, 20, 30)
    assert tr.windows(TranscriptionOptions(encoder_buckets=(30,))).buckets == (30,)


def test_recipe_flag_windows_a_plain_student(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path):
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.trainer import TrainArgs, train

    cfg = RecipeConfig(**{**FAST, "max_steps": 1, "encoder_buckets": [10], "full_window_prob": 0.0}).validate()
    assert cfg.encoder_buckets == [10, 30]
    train(TrainArgs(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path / "run", cfg))
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["window_s"] == 10
    with pytest.raises(MkdError, match="full_window_prob"):
        RecipeConfig(full_window_prob=1.5).validate()


def test_student_init_errors(tiny_model_dir, tmp_path):
    r = CliRunner()
    res = r.invoke(app, ["student", "init", str(tmp_path / "s"), "--from", str(tiny_model_dir)])
    assert res.exit_code != 0 and "--encoder-buckets" in res.output
    res = r.invoke(
        app, ["student", "init", str(tmp_path / "s"), "--from", str(tiny_model_dir), "--encoder-buckets", "45"]
    )
    assert res.exit_code != 0 and "between 1 and 30" in res.output
    res = r.invoke(app, ["student", "init", str(tmp_path / "s")])
    assert res.exit_code != 0 and "--teacher" in res.output
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def windowed_export(windowed_run):
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx

    d = windowed_run[0]
    samples = [_noise(s, i) for i, s in enumerate((2.0, 6.0))]
    export_onnx(d / "merged", d / "onnx", ExportOptions(quantize="int8", int8_scheme="per-channel"), samples=samples)
    return d / "onnx"


def test_export_has_a_dynamic_frame_encoder_and_matches_pytorch_per_bucket(windowed_run, windowed_export):
    import onnxruntime as ort

    d = windowed_run[0]
    cfg = json.loads((windowed_export / "config.json").read_text())
    assert cfg[BUCKETS_ATTR] == [5, 10, 20, 30] and cfg["mkdeploy_onnx_dynamic_frames"] is True
    enc = onnx.load(str(windowed_export / "encoder_model.onnx"))
    dims = [x.dim_param or x.dim_value for x in enc.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2] == "encoder_sequence_length"
    sess = ort.InferenceSession(
        str(windowed_export / "int8" / "encoder_model.onnx"), providers=["CPUExecutionProvider"]
    )
    for frames in (500, 1000, 3000):
        out = sess.run(None, {"input_features": np.zeros((1, 80, frames), np.float32)})[0]
        assert out.shape[1] == frames // 2
    audios = [_noise(s, i) for i, s in enumerate((1.5, 4.0, 8.0))]
    opts = TranscriptionOptions(return_timestamps=False, batch_size=1, max_new_tokens=16)
    pt = WhisperTranscriber.from_pretrained(d / "merged", backend="torch", device="cpu")
    ox = WhisperTranscriber.from_pretrained(windowed_export, backend="onnx", device="cpu")
    assert ox.windows().buckets == (5, 10, 20, 30)
    assert [t.tokens for t in ox.transcribe_arrays(audios, opts)] == [
        t.tokens for t in pt.transcribe_arrays(audios, opts)
    ]


def test_int8_decoder_no_longer_dequantises_the_embedding_every_step(windowed_export):
    """The tied [vocab, d] table is stored once, transposed; no DequantizeLinear of a table-sized tensor."""

    def walk(g, out):
        for n in g.node:
            out.append(n)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, out)
        return out

    for variant in ("", "int8"):
        m = onnx.load(str(windowed_export / variant / "decoder_model_merged.onnx"))
        tables = [i for i in m.graph.initializer if len(i.dims) == 2 and max(i.dims) >= 50000]
        assert len(tables) == 1 and tables[0].dims[0] < tables[0].dims[1]  # [d_model, vocab]
        nodes = walk(m.graph, [])
        assert not any(n.op_type == "Transpose" and n.input[0].startswith(tables[0].name) for n in nodes)
        if variant == "int8":
            assert not any(n.op_type == "DequantizeLinear" and n.input[0] == tables[0].name for n in nodes)


def test_old_exports_refuse_buckets_clearly(windowed_export, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(windowed_export / "int8", old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["mkdeploy_onnx_dynamic_frames"]
    del cfg[BUCKETS_ATTR]
    (old / "config.json").write_text(json.dumps(cfg))
    tr = WhisperTranscriber.from_pretrained(old, backend="onnx", device="cpu")
    with pytest.raises(ModelError, match="re-export"):
        tr.windows(TranscriptionOptions(encoder_buckets=BUCKETS))
    cfg[BUCKETS_ATTR] = [5, 30]
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="re-export"):
        WhisperTranscriber.from_pretrained(old, backend="onnx", device="cpu")


def test_bench_runs_one_model_with_and_without_buckets(windowed_export, speech_manifest, tmp_path):
    from mkdeploy.bench import parse_model_spec, run_bench

    spec = parse_model_spec(f"w30={windowed_export / 'int8'}:buckets=30")
    assert spec.buckets == (30,) and spec.path == windowed_export / "int8"
    assert parse_model_spec(f"w={windowed_export}").buckets is None
    specs = [spec, parse_model_spec(f"wb={windowed_export / 'int8'}")]
    report = run_bench(speech_manifest, specs, repeats=1, warmup=0, max_new_tokens=8)
    assert [m.windows for m in report.models] == ["30", "5,10,20,30"]
    res = CliRunner().invoke(
        app,
        [
            "bench",
            str(speech_manifest),
            "-m",
            f"a={windowed_export / 'int8'}:buckets=30",
            "-m",
            f"b={windowed_export / 'int8'}",
            "-o",
            str(tmp_path / "b"),
            "--repeats",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "| 5,10,20,30 |" in (tmp_path / "b" / "bench.md").read_text()


def test_transcribe_cli_encoder_buckets(windowed_export, speech_clips, tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "transcribe",
            str(windowed_export / "int8"),
            str(speech_clips[0][0]),
            "-o",
            str(tmp_path / "t"),
            "--no-timestamps",
            "--encoder-buckets",
            "30",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "encoder windows" not in res.output
    res = CliRunner().invoke(
        app,
        [
            "transcribe",
            str(windowed_export / "int8"),
            str(speech_clips[0][0]),
            "-o",
            str(tmp_path / "t2"),
            "--no-timestamps",
        ],
    )
    assert res.exit_code == 0 and "encoder windows: 5 s, 10 s, 20 s, 30 s" in res.output


def test_corpus_joins_sentences_per_clip():
    from mkdeploy.demo.corpus import CorpusSpec, split_texts

    texts = split_texts(CorpusSpec(n_train=6, n_dev=2, n_test=2, seed=3, sentences_per_clip=(2, 3)))
    assert len(texts["train"]) == 6
    # each clip joins 2-3 fortunes, so it ends in at least two sentence marks
    assert all(sum(t.count(c) for c in ".?!") >= 2 for t in texts["train"])
    with pytest.raises(MkdError, match="sentences_per_clip"):
        split_texts(CorpusSpec(n_train=1, sentences_per_clip=(2, 1)))


def test_bucketed_batches_come_from_one_bucket():
    from types import SimpleNamespace

    from mkdeploy.distill.batches import BatchSampler

    seconds = [2.0] * 30 + [7.0] * 20 + [15.0] * 10
    samples = [SimpleNamespace(audio=np.zeros(int(16000 * s), np.float32)) for s in seconds]
    processor = SimpleNamespace(tokenizer=SimpleNamespace(convert_tokens_to_ids=lambda _: 0))
    windows = WindowConfig(BUCKETS)
    sampler = BatchSampler(samples, processor, seed=3, windows=windows)
    seen = set()
    for step in range(60):
        idx = sampler.indices(step, 8)
        assert len(idx) == 8 and len({windows.bucket_for(seconds[i]) for i in idx}) == 1
        seen.add(windows.bucket_for(seconds[idx[0]]))
        assert idx == sampler.indices(step, 8)  # a function of the step alone (resume, ranks)
    assert seen == {5, 10, 20}
    # without buckets: the seeded epoch permutation, as before
    assert sorted(BatchSampler(samples, processor, seed=3).indices(0, 60)) == list(range(60))


def test_iobinding_sizes_short_window_outputs(windowed_export):
    """On CUDA the sessions run with IOBinding, whose output buffers are sized from the graph's symbolic
    dims ("encoder_sequence_length / 2"); the same code path runs on CPU when asked for."""
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq
    from transformers import AutoProcessor

    m = ORTModelForSpeechSeq2Seq.from_pretrained(
        windowed_export, providers=["CPUExecutionProvider"], use_io_binding=True, local_files_only=True
    )
    assert m.encoder.use_io_binding and m.decoder.use_io_binding
    bound = WhisperTranscriber(m, AutoProcessor.from_pretrained(windowed_export), "onnx", "cpu", "CPUExecutionProvider")
    plain = WhisperTranscriber.from_pretrained(windowed_export, backend="onnx", device="cpu")
    audios = [_noise(s, i) for i, s in enumerate((2.0, 7.0, 12.0))]
    opts = TranscriptionOptions(return_timestamps=False, max_new_tokens=12, batch_size=1)
    assert [t.tokens for t in bound.transcribe_arrays(audios, opts)] == [
        t.tokens for t in plain.transcribe_arrays(audios, opts)
    ]
