"""One decoding configuration behind every score (issue 46): `mkd eval`, `mkd bench`'s runner, the demo's
scoring and `mkd serve` give the same transcript for the same model and clip, on the real tiny.en in fp32
and in the default (batch-invariant) int8; the batch sizes differ between them (8, 1, 8, 1)."""

from __future__ import annotations

import json

import httpx
import pytest
import soundfile as sf
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason="the [serve] extra")

from mkdeploy.audio import load_audio  # noqa: E402
from mkdeploy.cli.main import app  # noqa: E402
from mkdeploy.evaluate import error_rates  # noqa: E402
from mkdeploy.testing.load import ServerProcess  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Ten clips of the project's everyday sentences in four flite voices, and their manifest."""
    from mkdeploy.demo.synthesis import Voice, synthesize
    from mkdeploy.demo.text import everyday_sentences

    d = tmp_path_factory.mktemp("paths")
    rows = []
    for i, text in enumerate(everyday_sentences()[:10]):
        path = d / f"c{i}.wav"
        sf.write(path, synthesize(text, Voice("flite", ("kal16", "awb", "rms", "slt")[i % 4])), 16000)
        rows.append({"audio": str(path), "text": text, "engine": "flite"})
    manifest = d / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, rows


@pytest.fixture(scope="module")
def models(tiny_en_teacher, tmp_path_factory):
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("x") / "onnx"
    m = export_onnx(tiny_en_teacher, out, ExportOptions(quantize="int8", validate=False))
    assert m.variants["int8"]["batch_invariant"]
    return {"fp32": tiny_en_teacher, "int8": out / "int8"}


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_eval_bench_demo_and_server_give_the_same_transcripts(models, clips, variant, tmp_path):
    from mkdeploy.bench.runners import WhisperRunner
    from mkdeploy.demo.scoring import score

    model, (manifest, rows) = models[variant], clips
    refs = [r["text"] for r in rows]
    demo = score(model, manifest, tmp_path / "demo.json")["hypotheses"]
    runner = WhisperRunner(model, "cpu", "en")
    bench = [runner.transcribe(load_audio(r["audio"]))[0] for r in rows]
    server = ServerProcess(model, "--no-vad", log=tmp_path / "serve.log")
    try:
        served = [
            httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": ("a.wav", open(r["audio"], "rb").read())},
                data={"model": "whisper-1", "response_format": "json"},
                timeout=120,
            ).json()["text"]
            for r in rows
        ]
    finally:
        server.stop()
    assert demo == bench == served
    r = CliRunner().invoke(app, ["eval", str(model), str(manifest), "-o", str(tmp_path / "eval.json")])
    assert r.exit_code == 0, r.output
    evaluated = [u["hypothesis"] for u in json.loads((tmp_path / "eval.json").read_text())["utterances"]]
    assert evaluated == [u.hypothesis for u in error_rates(refs, demo).utterances]  # both normalised
    assert error_rates(refs, demo).wer < 0.25  # and they are transcripts, not empty strings
