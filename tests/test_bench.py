"""`mkd bench` on tiny models: PyTorch, ONNX fp32/int8 and the CTranslate2 original side by side."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mkdeploy.bench import ModelSpec, markdown_table, parse_model_spec, run_bench, write_report
from mkdeploy.cli.main import app
from mkdeploy.data import Utterance, write_manifest
from mkdeploy.errors import MkdError


@pytest.fixture(scope="module")
def clips_manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_clips")
    rng = np.random.default_rng(1)
    rows = []
    for i, sec in enumerate((1, 2, 3)):
        sf.write(d / f"c{i}.wav", rng.standard_normal(16000 * sec).astype(np.float32) * 0.1, 16000)
        rows.append(Utterance(f"c{i}", d / f"c{i}.wav", "hello world"))
    return write_manifest(d / "m.jsonl", rows)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model_dir, tmp_path_factory):
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("bench_onnx") / "onnx"
    # one fixed scheme: the bench is timed here, not the int8 choice (on this 2-layer model "fp32 edges" is fp32)
    export_onnx(tiny_model_dir, out, ExportOptions(quantize="int8", int8_scheme="per-channel", validate=False))
    return out


def test_bench_figures_and_outputs(clips_manifest, tiny_model_dir, tiny_onnx, tiny_ct2_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    specs = [
        ModelSpec("pt", tiny_model_dir),
        ModelSpec("onnx", tiny_onnx),
        ModelSpec("int8", tiny_onnx / "int8"),
        ModelSpec("ct2", tiny_ct2_dir),
    ]
    report = run_bench(clips_manifest, specs, reference="pt", repeats=2, warmup=1, max_new_tokens=24)
    by = {m.name: m for m in report.models}
    assert [m.backend for m in report.models] == ["torch", "onnx", "onnx", "ctranslate2"]
    assert by["int8"].variant == "int8" and by["onnx"].provider == "CPUExecutionProvider"
    for m in report.models:
        assert 0 < m.latency_p50 <= m.latency_p90 <= m.latency_p99
        assert m.rtf > 0 and m.audio_s_per_s == pytest.approx(1 / m.rtf) and m.tokens_per_s > 0
        assert m.size_mb > 0 and m.clips == 3 and m.wer is not None and m.cer is not None
        assert 0.95 * by["pt"].params <= m.params <= 1.05 * by["pt"].params
    # speed-ups are against the reference: the faster a model's p50, the larger its speed-up
    assert by["onnx"].wer_vs_reference == 0.0
    order = sorted(report.models, key=lambda m: m.latency_p50)
    assert [m.speedup for m in order] == sorted((m.speedup for m in order), reverse=True)
    # fp32 ONNX transcribes exactly like PyTorch; the int8 graph is smaller on disk
    assert report.transcripts["onnx"] == report.transcripts["pt"]
    assert by["int8"].size_mb < 0.5 * by["onnx"].size_mb
    out = write_report(report, tmp_path / "bench")
    data = json.loads((out / "bench.json").read_text())
    assert data["environment"]["cpu"] and "torch" in data["environment"]["packages"]
    assert len(data["models"]) == 4 and data["reference"] == "pt"
    md = (out / "bench.md").read_text()
    assert md.count("\n| ") == 5 and "| ct2 | ctranslate2 |" in md
    # memory from a process of each model's own: every model adds some, whatever was loaded before it
    assert data["memory"] == "fresh" and "fresh process" in md
    assert all(m.rss_mb > 0 for m in report.models), [m.rss_mb for m in report.models]
    img = plt.imread(out / "latency_vs_wer.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_bench_cli_and_errors(clips_manifest, tiny_model_dir, tiny_onnx, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "bench",
            str(clips_manifest),
            "-m",
            f"a={tiny_model_dir}",
            "-m",
            f"b={tiny_onnx}",
            "--reference",
            "b",
            "--repeats",
            "1",
            "--limit",
            "2",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "| a | torch |" in r.output and (tmp_path / "o" / "latency_vs_wer.png").exists()
    r = runner.invoke(app, ["bench", str(clips_manifest), "-m", f"a={tiny_model_dir}", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["bench", str(clips_manifest), "-m", "a", "-o", str(tmp_path / "p")])
    assert r.exit_code == 2 and "NAME=PATH" in r.output
    r = runner.invoke(app, ["bench", str(clips_manifest), "-m", f"a={tmp_path / 'none'}", "-o", str(tmp_path / "p")])
    assert r.exit_code == 2 and "no such directory" in r.output and not (tmp_path / "p").exists()
    with pytest.raises(MkdError, match="reference"):
        run_bench(clips_manifest, [parse_model_spec(f"a={tiny_model_dir}")], reference="zzz")
    with pytest.raises(MkdError, match="fresh, process or inline"):
        run_bench(clips_manifest, [parse_model_spec(f"a={tiny_model_dir}")], memory="peak")
    with pytest.raises(MkdError, match="unique"):
        run_bench(clips_manifest, [parse_model_spec(f"a={tiny_model_dir}")] * 2)


def test_model_spec_suffixes():
    s = parse_model_spec("ct2=/m/tiny:compute_type=int8")
    assert (s.name, str(s.path), s.compute_type, s.buckets) == ("ct2", "/m/tiny", "int8", None)
    s = parse_model_spec("w=/m/w:buckets=10,30:compute_type=float32")
    assert s.buckets == (10, 30) and s.compute_type == "float32"
    with pytest.raises(MkdError, match="unknown suffix"):
        parse_model_spec("a=/m:beams=4")
    assert parse_model_spec("o=/m/int8:ort=no-arena,no-prepack").ort == "no-arena,no-prepack"
    with pytest.raises(MkdError, match="no-arena, no-pattern, no-prepack, lean"):
        parse_model_spec("o=/m/int8:ort=no-cache")
    from mkdeploy.transcription.ort import OrtOptions

    o = OrtOptions.from_memory_flags("no-arena,no-prepack", threads=2)
    assert (o.cpu_mem_arena, o.mem_pattern, o.prepacking, o.threads) == (False, True, False, 2)
    lean = OrtOptions.from_memory_flags("lean")
    assert not (lean.cpu_mem_arena or lean.mem_pattern or lean.prepacking)
    from mkdeploy.bench import parse_batch_sizes

    assert parse_batch_sizes("1,8, 32") == [1, 8, 32] and parse_batch_sizes("") == []
    with pytest.raises(MkdError, match="--batch-size"):
        parse_batch_sizes("0,x")


def test_threads_compute_types_and_throughput(clips_manifest, tiny_model_dir, tiny_onnx, tiny_ct2_dir):
    """--threads reaches every engine, CTranslate2 takes a compute type, and batched runs give the same
    transcripts as batch 1 with clips/s figures."""
    import torch

    pytest.importorskip("ctranslate2")
    before = torch.get_num_threads()
    try:
        specs = [
            ModelSpec("pt", tiny_model_dir),
            ModelSpec("int8", tiny_onnx / "int8"),
            ModelSpec("ct2", tiny_ct2_dir, compute_type="int8"),
        ]
        report = run_bench(
            clips_manifest, specs, repeats=1, max_new_tokens=16, threads=1, batch_sizes=[1, 2], memory="inline"
        )
        assert report.memory == "inline"
        assert torch.get_num_threads() == 1 and report.environment["threads"] == 1
    finally:
        torch.set_num_threads(before)
    by = {m.name: m for m in report.models}
    assert by["ct2"].variant == "int8"
    assert {(t.name, t.batch_size) for t in report.throughput} == {(n, b) for n in by for b in (1, 2)}
    for t in report.throughput:
        assert t.clips == 3 and t.clips_per_s > 0 and t.audio_s_per_s > 0 and t.batch_p50 <= t.batch_p90
    from mkdeploy.bench import load_runner, markdown_table

    assert "## Throughput" in markdown_table(report) and "| ct2 | 2 | 3 |" in markdown_table(report)
    # the sessions really run on one intra-op thread; CTranslate2 likewise
    run = load_runner(ModelSpec("int8", tiny_onnx / "int8"), "cpu", "en", 16, threads=1)
    assert run.tr.model.encoder.session.get_session_options().intra_op_num_threads == 1
    ct2 = load_runner(ModelSpec("ct2", tiny_ct2_dir, compute_type="int8"), "cpu", "en", 16, threads=1)
    assert ct2.whisper.model.compute_type.startswith("int8")  # CTranslate2 names it int8_float32 on CPU
    with pytest.raises(MkdError, match="compute_type"):
        load_runner(ModelSpec("x", tiny_model_dir, compute_type="int8"), "cpu", "en")


def test_bench_runs_an_export_on_the_lean_runtime_with_whole_process_memory(clips_manifest, tiny_onnx):
    """``:backend=onnx-lean`` runs the export on the torch-free runtime, with the same transcripts as optimum's
    engine; ``--memory process`` gives each model's whole-process RSS and its cold start."""
    specs = [
        parse_model_spec(f"lean={tiny_onnx}:backend=onnx-lean"),
        parse_model_spec(f"ort={tiny_onnx}:backend=onnx"),
    ]
    report = run_bench(clips_manifest, specs, reference="ort", repeats=1, max_new_tokens=16, memory="process")
    by = {m.name: m for m in report.models}
    assert by["lean"].backend == "onnx-lean" and by["ort"].backend == "onnx"
    assert report.transcripts["lean"] == report.transcripts["ort"]
    for m in report.models:
        # a whole process holds at least the interpreter, numpy and ONNX Runtime; it starts in well under a minute
        assert m.rss_mb > 50 and m.cold_start_s is not None and 0 < m.cold_start_s < 120
    assert "Cold start" in markdown_table(report)
    with pytest.raises(MkdError, match="backend"):
        parse_model_spec(f"x={tiny_onnx}:backend=tensorrt")
