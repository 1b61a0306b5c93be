"""ONNX export (optimum) and the ONNX Runtime transcriber on a tiny random model; the real tiny.en export
is an integration test."""

import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from mkdeploy.cli.main import app
from mkdeploy.errors import MkdError, ModelError, OutputExistsError
from mkdeploy.exporters.onnx import MANIFEST, ExportOptions, export_onnx
from mkdeploy.models.window import WindowConfig
from mkdeploy.transcription.ort import load_ort_model
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

GREEDY = TranscriptionOptions(return_timestamps=False, batch_size=4, max_new_tokens=24)


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 2, 3)]


@pytest.fixture(scope="module")
def tiny_export(tiny_model_dir, tmp_path_factory, samples):
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    export_onnx(
        tiny_model_dir, out, ExportOptions(quantize="int8", int8_scheme="per-channel", fp16=True), samples=samples
    )
    return out


def test_export_layout_manifest_and_parity(tiny_export, tiny_model_dir):
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq

    m = json.loads((tiny_export / MANIFEST).read_text())
    assert m["task"] == "automatic-speech-recognition-with-past" and m["opset"] >= 14
    assert len(m["source_sha256"]) == 64 and set(m["variants"]) == {"fp32", "int8", "fp16"}
    fp32 = next(p for p in m["parity"] if p["variant"] == "fp32")
    assert fp32["identical"] == fp32["clips"] == 3 and fp32["max_abs_logit_diff"] < 1e-3
    assert not (tiny_export / "decoder_model.onnx").exists(), "only the merged decoder is kept"
    # the root loads with optimum as is, merged decoder with past
    model = ORTModelForSpeechSeq2Seq.from_pretrained(tiny_export, local_files_only=True)
    assert model.decoder.is_merged and model.can_use_cache
    # never overwrite without --force
    with pytest.raises(OutputExistsError, match="--force"):
        export_onnx(tiny_model_dir, tiny_export, ExportOptions(validate=False))


def _count_ops(graph, op: str) -> int:
    n = sum(node.op_type == op for node in graph.node)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                n += _count_ops(attr.g, op)
    return n


def test_int8_quantises_the_merged_decoder_subgraphs(tiny_export):
    dec = onnx.load(str(tiny_export / "int8" / "decoder_model_merged.onnx"))
    assert _count_ops(dec.graph, "DynamicQuantizeLinear") > 0 or _count_ops(dec.graph, "MatMulInteger") > 0
    # per-channel (the fixture asks for it): the weights' scales are vectors, one per output channel
    assert json.loads((tiny_export / MANIFEST).read_text())["variants"]["int8"]["scales"] == "per-channel"
    enc = onnx.load(str(tiny_export / "int8" / "encoder_model.onnx"))
    scales = [i for i in enc.graph.initializer if i.name.endswith("_scale") and "MatMul" in i.name]
    assert scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)
    assert (tiny_export / "int8" / "decoder_model_merged.onnx").stat().st_size < 0.5 * (
        tiny_export / "decoder_model_merged.onnx"
    ).stat().st_size


def test_fp16_variant_has_fp16_weights_and_fp32_io(tiny_export):
    enc = onnx.load(str(tiny_export / "fp16" / "encoder_model.onnx"))
    dtypes = {i.data_type for i in enc.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes
    assert enc.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # every fp16 graph must load (an invalid graph fails at load, whatever the provider)
    import onnxruntime as ort

    for f in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"):
        ort.InferenceSession(str(tiny_export / "fp16" / f), providers=["CPUExecutionProvider"])


def test_onnx_transcriber_matches_pytorch(tiny_export, tiny_model_dir, samples):
    pt = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")
    ox = WhisperTranscriber.from_pretrained(tiny_export, device="cpu")
    assert ox.backend == "onnx" and ox.provider == "CPUExecutionProvider"
    ref = pt.transcribe_arrays(samples, GREEDY)
    got = ox.transcribe_arrays(samples, GREEDY)
    assert [r.tokens for r in got] == [r.tokens for r in ref]
    assert len({t for r in ref for t in r.tokens}) > 3  # not a collapsed random model
    # int8 changes arithmetic, not the model: most of its first tokens are PyTorch's
    q = WhisperTranscriber.from_pretrained(tiny_export, device="cpu", variant="int8")
    heads = [(a.tokens[:5], b.tokens[:5]) for a, b in zip(q.transcribe_arrays(samples, GREEDY), ref)]
    agree = sum(x == y for a, b in heads for x, y in zip(a, b)) / sum(len(b) for _, b in heads)
    assert agree >= 0.6, heads


def test_cpu_sessions_do_not_spin(tiny_export):
    model, _, _ = load_ort_model(tiny_export, "cpu")
    opts = model.encoder.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.enable_cpu_mem_arena and opts.enable_mem_pattern  # ONNX Runtime's defaults, kept by default


def test_lean_memory_options_reach_the_sessions(tiny_export, tiny_model_dir):
    """The memory switches of OrtOptions (benchmarks/ort_memory.py) are set on every session, through the
    runner `mkd bench` uses, and decoding gives the same tokens with them."""
    from mkdeploy.bench import ModelSpec, load_runner
    from mkdeploy.bench.runners import WhisperRunner

    run = load_runner(ModelSpec("lean", tiny_export, ort="lean"), "cpu", "en", 16, threads=1)
    assert isinstance(run, WhisperRunner)
    for part in (run.tr.model.encoder, run.tr.model.decoder):
        so = part.session.get_session_options()
        assert not so.enable_cpu_mem_arena and not so.enable_mem_pattern
        assert so.get_session_config_entry("session.disable_prepacking") == "1"
        assert so.intra_op_num_threads == 1  # the runner's thread count joins the options given
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    default = WhisperRunner(tiny_export, "cpu", "en", 16, threads=1)
    assert run.transcribe(audio) == default.transcribe(audio)
    with pytest.raises(MkdError, match="not an export"):  # a PyTorch directory would silently ignore them
        load_runner(ModelSpec("pt", tiny_model_dir, ort="lean"), "cpu", "en")


def test_onnx_error_paths(tiny_export, tiny_model_dir, tmp_path):
    import torch

    with pytest.raises(ModelError, match="no int8 variant|not a complete"):
        load_ort_model(tiny_model_dir, "cpu", "int8")
    with pytest.raises(ModelError, match="PyTorch model directory"):
        load_ort_model(tiny_model_dir, "cpu")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_export, broken, ignore=shutil.ignore_patterns("int8", "fp16"))
    (broken / "decoder_model_merged.onnx").unlink()
    with pytest.raises(ModelError, match="missing decoder_model_merged.onnx"):
        load_ort_model(broken, "cpu")
    (broken / "decoder_model_merged.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load the ONNX export"):
        load_ort_model(broken, "cpu")
    with pytest.raises(ModelError, match="unknown ONNX variant"):
        load_ort_model(tiny_export, "cpu", "int4")
    with pytest.raises(ModelError, match="already an ONNX export"):
        export_onnx(tiny_export, tmp_path / "again")
    if not torch.cuda.is_available():
        # onnxruntime-gpu lists CUDA here but cannot run it: --device cuda must say so, not fall back.
        with pytest.raises(MkdError, match="--device cuda"):
            load_ort_model(tiny_export, "cuda")
        assert load_ort_model(tiny_export, "auto")[2] == "CPUExecutionProvider"


@pytest.mark.integration  # the CLI export with every variant (~1 min)
def test_export_and_transcribe_cli(tiny_model_dir, tmp_path, samples):
    import soundfile as sf

    runner = CliRunner()
    clip = tmp_path / "a.wav"
    sf.write(clip, samples[1], 16000)
    out = tmp_path / "exp"
    r = runner.invoke(app, ["export", str(tiny_model_dir), str(out), "--quantize", "int8", "--sample-audio", str(clip)])
    assert r.exit_code == 0, r.output
    assert "fp32" in r.output and "int8" in r.output and (out / "int8" / "encoder_model.onnx").exists()
    r = runner.invoke(app, ["export", str(tiny_model_dir), str(out)])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["export", str(tiny_model_dir), str(tmp_path / "q"), "--quantize", "int4"])
    assert r.exit_code == 2 and "int8" in r.output and not (tmp_path / "q").exists()
    for variant in ("fp32", "int8"):
        r = runner.invoke(
            app,
            [
                "transcribe",
                str(out),
                str(clip),
                "--variant",
                variant,
                "--device",
                "cpu",
                "--output-dir",
                str(tmp_path / variant),
                "--format",
                "json",
            ],
        )
        assert r.exit_code == 0, r.output
        assert "CPUExecutionProvider" in r.output
        assert "text" in json.loads((tmp_path / variant / "a.json").read_text())
    r = runner.invoke(app, ["transcribe", str(tmp_path / "nothing"), str(clip), "--backend", "onnx"])
    assert r.exit_code == 2 and "no such model directory" in r.output


@pytest.mark.integration
def test_real_tiny_en_export_is_token_identical(tiny_en_teacher, speech_clips, tmp_path):
    from mkdeploy.audio import load_audio
    from mkdeploy.evaluate import error_rates

    audios = [load_audio(p) for p, _ in speech_clips]
    out = tmp_path / "tiny.en-onnx"
    m = export_onnx(tiny_en_teacher, out, ExportOptions(quantize="int8"), samples=audios[:2])
    assert m.parity[0]["identical"] == 2
    pt = WhisperTranscriber.from_pretrained(tiny_en_teacher, device="cpu")
    # parity is about the graphs: the temperature fallback (sampling) is off so both decode greedily; the
    # repeated sentences below would trip its loop detector
    opts = TranscriptionOptions(batch_size=4, compression_ratio_threshold=None)
    ref = pt.transcribe_arrays(audios, opts)
    got = WhisperTranscriber.from_pretrained(out, device="cpu").transcribe_arrays(audios, opts)
    assert [r.tokens for r in got] == [r.tokens for r in ref]
    assert [(s.start, s.end) for r in got for s in r.segments] == [(s.start, s.end) for r in ref for s in r.segments]
    q = WhisperTranscriber.from_pretrained(out, device="cpu", variant="int8").transcribe_arrays(audios, opts)
    texts = [t for _, t in speech_clips]
    wer32, wer8 = error_rates(texts, [r.text for r in got]).wer, error_rates(texts, [r.text for r in q]).wer
    assert wer8 <= wer32 + 0.01, f"int8 WER {wer8:.3f} vs fp32 {wer32:.3f}"
    # long-form on ONNX: same segments as PyTorch past the 30 s window
    long = np.concatenate([a for a in audios for _ in range(3)])
    assert len(long) > 30 * 16000
    [lt] = pt.transcribe_arrays([long], opts)
    [lo] = WhisperTranscriber.from_pretrained(out, device="cpu").transcribe_arrays([long], opts)
    assert lo.tokens == lt.tokens and lo.segments[-1].end > 30
    # encoder buckets on the real weights: the dynamic-frame ONNX encoder matches PyTorch in every window,
    # through the lean greedy loop and through generate() with timestamps
    ox = WhisperTranscriber.from_pretrained(out, device="cpu")
    clips = audios + [np.concatenate(audios[:3])]  # the last one needs a longer bucket
    assert WindowConfig((5, 10, 20, 30)).bucket_for(len(clips[-1]) / 16000) > 5
    for stamps in (False, True):
        win = TranscriptionOptions(
            batch_size=1, return_timestamps=stamps, compression_ratio_threshold=None, encoder_buckets=(5, 10, 20, 30)
        )
        assert [r.tokens for r in ox.transcribe_arrays(clips, win)] == [
            r.tokens for r in pt.transcribe_arrays(clips, win)
        ]


def test_onnx_word_timestamps_come_from_the_source_model(tiny_export, tiny_model_dir, samples, tmp_path):
    """An export has no attention outputs: its words are aligned by the PyTorch model its manifest names, so
    the fp32 export's words equal PyTorch's; a moved source is a one-line error naming the fix."""
    from mkdeploy.errors import ModelError
    from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

    opts = TranscriptionOptions(
        return_timestamps=False, max_new_tokens=8, word_timestamps=True, no_speech_threshold=None
    )
    pt = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu").transcribe_arrays(samples, opts)
    ort = WhisperTranscriber.from_pretrained(tiny_export, backend="onnx", device="cpu").transcribe_arrays(samples, opts)
    assert [r.tokens for r in ort] == [r.tokens for r in pt]
    assert [r.words for r in ort] == [r.words for r in pt] and all(r.words for r in pt)
    moved = tmp_path / "moved-onnx"
    shutil.copytree(tiny_export, moved)
    manifest = json.loads((moved / "mkdeploy_export.json").read_text())
    manifest["source"] = str(tmp_path / "gone")
    (moved / "mkdeploy_export.json").write_text(json.dumps(manifest))
    tr = WhisperTranscriber.from_pretrained(moved, backend="onnx", device="cpu")
    assert tr.transcribe_arrays(samples[:1], TranscriptionOptions(max_new_tokens=4))[0].tokens  # decoding unaffected
    with pytest.raises(ModelError, match="not there any more"):
        tr.transcribe_arrays(samples[:1], opts)


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_lean_onnx_decoder_gives_optimums_tokens(tiny_export, samples, variant):
    """The raw-session step (the cache kept as ORT values) decodes the same tokens as optimum's wrapper,
    in the lean greedy loop (batch of 3, no-speech scores read on the way) and in the timestamped pass.
    fp16 has separate decoder graphs (no merged cache branch): it stays on optimum's wrapper."""
    from mkdeploy.lean.sessions import DecoderStep

    ox = WhisperTranscriber.from_pretrained(tiny_export, device="cpu", variant=variant)
    features = ox.engine.processor.feature_extractor(samples, sampling_rate=16000, return_tensors="pt")
    step = ox.engine.decoder_step(ox.engine.encode(features.input_features).last_hidden_state)
    assert isinstance(step, DecoderStep) == (variant != "fp16")
    results = {}
    for lean in (True, False):
        ox.engine.lean_onnx_decoder = lean
        greedy = ox.transcribe_arrays(samples, GREEDY)
        stamped = ox.decode_timestamped(samples, TranscriptionOptions(batch_size=3))
        results[lean] = (
            [r.tokens for r in greedy],
            [r.no_speech_prob for r in greedy],
            [[(s.start, s.end, s.text) for s in segs] for segs in stamped],
        )
    assert results[True] == results[False]
    assert any(len(t) > 3 for t in results[True][0])  # something was decoded


def test_int8_auto_measures_every_scheme_and_ships_by_the_budget(tiny_model_dir, samples, tmp_path):
    """`--int8-scheme auto-all`: every scheme is quantised and measured on the calibration audio, the manifest
    records each one's WER delta and speed, and the fastest within the budget ships; with no scheme within
    it, the most accurate ships and the reason says so. `auto` (the default) measures only the schemes whose
    transcripts do not depend on the batch, and the manifest says whether the shipped one does."""
    from mkdeploy.exporters.int8 import AUTO_SCHEMES, SCHEMES

    calibration = [(a, None) for a in samples]  # no transcripts: scored against fp32's own
    # a budget every scheme meets: the fastest ships
    opts = ExportOptions(quantize="int8", int8_scheme="auto-all", max_wer_delta=1000.0)
    m = export_onnx(tiny_model_dir, tmp_path / "a", opts, samples=samples, calibration=calibration)
    int8 = m.variants["int8"]
    assert [s["scheme"] for s in int8["schemes"]] == list(SCHEMES)
    for s in int8["schemes"]:
        assert s["ms_per_clip"] > 0 and s["bytes"] > 0 and s["within_budget"]
    assert int8["scheme"] == min(int8["schemes"], key=lambda s: s["ms_per_clip"])["scheme"]
    assert "fastest" in int8["why"] and "fp32's transcripts" in int8["why"]
    assert int8["batch_invariant"] == SCHEMES[int8["scheme"]].batch_invariant
    assert json.loads((tmp_path / "a" / MANIFEST).read_text())["variants"]["int8"]["scheme"] == int8["scheme"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["int8"]  # the others removed

    # the default: batch-invariant schemes only
    assert AUTO_SCHEMES and all(SCHEMES[n].batch_invariant for n in AUTO_SCHEMES)
    assert not any(SCHEMES[n].batch_invariant for n in ("per-channel", "per-tensor"))
    m = export_onnx(
        tiny_model_dir, tmp_path / "e", ExportOptions(quantize="int8", validate=False), calibration=calibration
    )
    assert [s["scheme"] for s in m.variants["int8"]["schemes"]] == list(AUTO_SCHEMES)
    assert m.variants["int8"]["batch_invariant"] is True and "note" not in m.variants["int8"]

    # a budget nothing meets (below fp32 itself): the most accurate ships, and the reason says so
    opts = ExportOptions(quantize="int8", int8_scheme="auto-all", max_wer_delta=-1000.0, validate=False)
    m = export_onnx(tiny_model_dir, tmp_path / "b", opts, calibration=calibration)
    int8 = m.variants["int8"]
    assert not any(s["within_budget"] for s in int8["schemes"])
    best = min(int8["schemes"], key=lambda s: (s["wer_delta_points"], s["ms_per_clip"]))
    assert int8["scheme"] == best["scheme"] and int8["why"].startswith("no scheme within")

    # one named scheme: no measurement; a wrong name fails before the export starts
    m = export_onnx(
        tiny_model_dir, tmp_path / "c", ExportOptions(quantize="int8", int8_scheme="per-tensor", validate=False)
    )
    assert m.variants["int8"]["scheme"] == "per-tensor" and m.variants["int8"]["scales"] == "per-tensor"
    assert m.variants["int8"]["batch_invariant"] is False and "batch" in m.variants["int8"]["note"]
    with pytest.raises(MkdError, match="--int8-scheme"):
        export_onnx(tiny_model_dir, tmp_path / "d", ExportOptions(quantize="int8", int8_scheme="int4"))
    assert not (tmp_path / "d").exists()


def test_fp32_edges_keeps_the_ends_in_fp32(tiny_export, tmp_path):
    """per-channel-fp32-edges leaves the conv front-end, the first and last layers and the output projection
    unquantised and quantises the layers between (when there are any)."""
    from mkdeploy.exporters.int8 import SCHEMES, _edge_nodes, quantize_scheme

    edges = _edge_nodes(tiny_export / "decoder_model_merged.onnx")
    assert any("proj_out" in n for n in edges) and any("layers.0/" in n for n in edges)
    enc = _edge_nodes(tiny_export / "encoder_model.onnx")
    assert any("/conv1/" in n for n in enc) and any("/conv2/" in n for n in enc)
    quantize_scheme(tiny_export, tmp_path / "q", SCHEMES["per-channel-fp32-edges"])
    ops = {n.name: n.op_type for n in onnx.load(str(tmp_path / "q" / "encoder_model.onnx")).graph.node}
    assert ops["/conv1/Conv"] == "Conv"  # not ConvInteger: kept in fp32
    # the tied output table stays one fp32 copy (the embedding's Gather is kept with the projection)
    dec = onnx.load(str(tmp_path / "q" / "decoder_model_merged.onnx"))
    tables = [i for i in dec.graph.initializer if len(i.dims) == 2 and max(i.dims) >= 50000]
    assert len(tables) == 1 and tables[0].data_type == onnx.TensorProto.FLOAT


def _first_step_logits(folder, features, hidden=None):
    """The encoder's states and the merged decoder's first-step logits of an export folder (raw sessions)."""
    import onnxruntime as ort

    enc = ort.InferenceSession(str(folder / "encoder_model.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / "decoder_model_merged.onnx"), providers=["CPUExecutionProvider"])
    if hidden is None:
        hidden = enc.run(None, {"input_features": features})[0]
    feeds = {
        "input_ids": np.array([[1, 2]] * len(features), dtype=np.int64),
        "encoder_hidden_states": hidden,
        "use_cache_branch": np.array([False]),
    }
    for i in dec.get_inputs():
        if i.name.startswith("past_key_values."):
            feeds[i.name] = np.zeros((len(features), i.shape[1], 0, i.shape[3]), dtype=np.float32)
    return hidden, dec.run(["logits"], feeds)[0]


def test_blockwise_decoder_schemes(tiny_export, samples, tmp_path):
    """blockwise-decoder-*: every weight MatMul of the decoder (both merged branches) becomes MatMulNBits
    and nothing there quantises a tensor per tensor; the embedding table is stored once, in int8 (no fp32
    copy beside the projection's); the encoder stays fp32 byte for byte, or per-channel dynamic int8; and,
    given the same encoder states, the decoder's logits are closer to fp32's than per-channel int8's are."""
    from mkdeploy.exporters.int8 import SCHEMES, quantize_scheme
    from mkdeploy.exporters.onnx import copy_side_files

    quantize_scheme(tiny_export, tmp_path / "bw", SCHEMES["blockwise-decoder-fp32-encoder"])
    quantize_scheme(tiny_export, tmp_path / "bwpc", SCHEMES["blockwise-decoder-per-channel-encoder"])
    dec = onnx.load(str(tmp_path / "bw" / "decoder_model_merged.onnx"))
    assert _count_ops(dec.graph, "MatMulNBits") > 0
    assert _count_ops(dec.graph, "DynamicQuantizeLinear") == _count_ops(dec.graph, "MatMulInteger") == 0
    config = json.loads((tiny_export / "config.json").read_text())
    table_dims = {(config["d_model"], config["vocab_size"]), (config["vocab_size"], config["d_model"])}
    fp32_tables = [
        i for i in dec.graph.initializer if tuple(i.dims) in table_dims and i.data_type == onnx.TensorProto.FLOAT
    ]
    assert fp32_tables == []
    assert any(i.name.endswith("_int8") and i.data_type == onnx.TensorProto.INT8 for i in dec.graph.initializer)
    fp32_encoder = (tiny_export / "encoder_model.onnx").read_bytes()
    assert (tmp_path / "bw" / "encoder_model.onnx").read_bytes() == fp32_encoder
    enc_pc = onnx.load(str(tmp_path / "bwpc" / "encoder_model.onnx"))
    assert _count_ops(enc_pc.graph, "MatMulInteger") + _count_ops(enc_pc.graph, "DynamicQuantizeMatMul") > 0

    features = (
        WhisperTranscriber.from_pretrained(tiny_export, device="cpu")
        .engine.processor.feature_extractor(samples, sampling_rate=16000, return_tensors="np")
        .input_features
    )
    hidden, ref = _first_step_logits(tiny_export, features)
    _, bw = _first_step_logits(tmp_path / "bw", features, hidden)
    _, pc = _first_step_logits(tiny_export / "int8", features, hidden)
    assert np.abs(bw - ref).max() < np.abs(pc - ref).max()
    # and it decodes through the transcriber like any int8 export
    copy_side_files(tiny_export, tmp_path / "bw")
    out = WhisperTranscriber.from_pretrained(tmp_path / "bw", device="cpu").transcribe_arrays(samples[:1], GREEDY)
    assert out[0].tokens


def test_static_encoder_scheme_fixes_its_scales_on_calibration_audio(tiny_export, samples, tmp_path):
    """blockwise-decoder-static-encoder: the encoder's weight MatMuls and convolutions become static QDQ
    (QuantizeLinear with constant scales, no DynamicQuantizeLinear), so a clip's encoder states are the same
    alone as in a batch with other clips, unlike per-channel dynamic int8's; without calibration audio it
    fails with a message naming --calibration."""
    import onnxruntime as ort

    from mkdeploy.exporters.int8 import SCHEMES, encoder_calibration_features, quantize_scheme

    scheme = SCHEMES["blockwise-decoder-static-encoder"]
    assert scheme.batch_invariant and scheme.needs_calibration
    with pytest.raises(MkdError, match="--calibration"):
        quantize_scheme(tiny_export, tmp_path / "none", scheme)
    quantize_scheme(tiny_export, tmp_path / "st", scheme, samples)
    enc = onnx.load(str(tmp_path / "st" / "encoder_model.onnx"))
    assert _count_ops(enc.graph, "QuantizeLinear") > 0 and _count_ops(enc.graph, "DynamicQuantizeLinear") == 0
    scales = {n.input[1] for n in enc.graph.node if n.op_type == "QuantizeLinear"}
    assert scales <= {i.name for i in enc.graph.initializer}  # fixed at export, not computed per batch

    rng = np.random.default_rng(1)
    others = [rng.standard_normal(16000).astype(np.float32) * s for s in (0.02, 0.5)]  # much quieter, louder
    clip, loud, quiet = (np.concatenate(encoder_calibration_features(tiny_export, [a])) for a in [samples[0], *others])

    def states(model_dir, features):
        sess = ort.InferenceSession(str(model_dir / "encoder_model.onnx"), providers=["CPUExecutionProvider"])
        return sess.run(None, {"input_features": features})[0]

    for d, invariant in ((tmp_path / "st", True), (tiny_export / "int8", False)):
        alone = states(d, clip)[0]
        batched = states(d, np.concatenate([clip, loud, quiet]))[0]
        assert np.allclose(alone, batched, atol=1e-5) == invariant, d


def test_int8_embedding_columns_by_hand():
    """The column Gather of a [d_model, vocab] table becomes int8 columns times one scale per token:
    scale_v = max_d |T[d, v]| / 127, q = round(T / scale_v); checked against those values computed here."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mkdeploy.exporters.int8 import _int8_embedding_columns

    table = np.array([[0.5, -2.0, 0.0, 1.0], [0.25, 0.9, 0.0, -0.3], [-1.27, 0.1, 0.0, 0.7]], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], axis=1, name="emb")],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    assert _int8_embedding_columns(model) == 1
    assert {i.name for i in model.graph.initializer} == {"table_int8", "table_token_scale"}
    ids = np.array([[1, 2, 0]], dtype=np.int64)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    # token 1: scale 2/127, column (-2, 0.9, 0.1) -> q (-127, 57, 6); token 2: all zeros
    # (scale 1, q 0); token 0: scale 1.27/127 = 0.01, column (0.5, 0.25, -1.27) -> q (50, 25, -127)
    s1 = np.float32(2.0) / np.float32(127.0)
    want = np.array(
        [[[-127 * s1, 0.0, 50 * 0.01]], [[57 * s1, 0.0, 25 * 0.01]], [[6 * s1, 0.0, -127 * 0.01]]], dtype=np.float32
    ).reshape(3, 1, 3)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)


@pytest.mark.integration
def test_batch_invariant_int8_gives_a_clip_the_same_transcript_alone_and_batched(tiny_en_teacher, tmp_path):
    """The default int8 (`auto`: batch-invariant schemes) of the real tiny.en transcribes each of 24 clips (four
    flite voices, the project's everyday sentences) identically decoded alone and in batches of 8: no
    caller's transcript depends on the audio of the callers batched with it (issue 46)."""
    from mkdeploy.demo.synthesis import Voice, synthesize
    from mkdeploy.demo.text import everyday_sentences

    voices = ("kal16", "awb", "rms", "slt")
    audios = [synthesize(t, Voice("flite", voices[i % 4])) for i, t in enumerate(everyday_sentences()[:24])]
    m = export_onnx(tiny_en_teacher, tmp_path / "x", ExportOptions(quantize="int8", validate=False), samples=audios[:2])
    assert m.variants["int8"]["batch_invariant"] is True
    tr = WhisperTranscriber.from_pretrained(tmp_path / "x" / "int8", device="cpu", threads=2)
    opts = TranscriptionOptions(language="en", return_timestamps=False)
    alone = [tr.transcribe_arrays([a], replace(opts, batch_size=1))[0].text for a in audios]
    batched = [t.text for t in tr.transcribe_arrays(audios, replace(opts, batch_size=8))]
    assert all(alone) and alone == batched
