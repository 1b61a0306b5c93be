"""The torch-free runtime (mkdeploy/lean/): its features against transformers' extractor, its transcripts
against the full runtime's on the same export, what it refuses, and that it loads no torch, transformers or
optimum. The real tiny.en and base exports are integration tests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mkdeploy.errors import MkdError
from mkdeploy.exporters.onnx import ExportOptions, export_onnx
from mkdeploy.lean.features import log_mel, mel_filters
from mkdeploy.lean.transcriber import OnnxTranscriber
from mkdeploy.options import TranscriptionOptions, scoring_options
from mkdeploy.transcription.runtime import WhisperTranscriber

#: the heavy stack the lean runtime must never import
HEAVY = ["torch", "transformers", "optimum", "peft", "accelerate"]


def _audios(rng: np.random.Generator) -> list[np.ndarray]:
    t = np.arange(16000 * 7) / 16000
    return [
        (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32),
        (0.5 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32),
        (rng.standard_normal(16000 * 12) * 0.05).astype(np.float32),
    ]


def test_mel_filters_are_transformers_filters():
    from transformers import WhisperFeatureExtractor

    for n_mels in (80, 128):
        fe = WhisperFeatureExtractor(feature_size=n_mels)
        assert np.allclose(mel_filters(n_mels), fe.mel_filters, atol=1e-9)


@pytest.mark.parametrize("window_s", [30, 5, 10])
def test_log_mel_equals_whisper_feature_extractor_within_tolerance(rng, window_s):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor()
    audios = [a[: 16000 * window_s] for a in _audios(rng)]
    ref = fe(
        audios,
        sampling_rate=16000,
        return_tensors="np",
        padding="max_length",
        max_length=16000 * window_s,
        truncation=True,
    ).input_features
    mine = log_mel(audios, 80, 16000 * window_s)
    assert mine.shape == ref.shape == (3, 80, 100 * window_s)
    # float64 STFT here, float32 in torch: differences of a few 1e-5 on features of order 1
    assert np.abs(mine - ref).max() < 1e-4
    # a clip cut off (not padded) past the window, as a student's windows take it
    assert log_mel([audios[2]], 80, 16000 * 2).shape == (1, 80, 200)


@pytest.fixture(scope="module")
def lean_export(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lean") / "tiny-onnx"
    export_onnx(tiny_model_dir, out, ExportOptions(validate=False))
    return out


def _same(a, b):
    assert [t.tokens for t in a] == [t.tokens for t in b]
    assert [t.text for t in a] == [t.text for t in b]
    for x, y in zip(a, b):
        assert len(x.segments) == len(y.segments)
        for s, r in zip(x.segments, y.segments):
            assert s.text == r.text
            assert abs(s.start - r.start) <= 0.02 + 1e-6
            # generate lets the last segment end past the audio; the lean runtime stops it at the end
            assert abs(s.end - r.end) <= 0.02 + 1e-6 or (r.end > x.duration and s.end == round(x.duration, 2))
        assert (x.no_speech_prob is None) == (y.no_speech_prob is None)
        if x.no_speech_prob is not None:
            assert abs(x.no_speech_prob - y.no_speech_prob) < 1e-4
            assert abs(x.avg_logprob - y.avg_logprob) < 1e-3
        assert x.gate == y.gate


@pytest.mark.parametrize(
    "options",
    [
        scoring_options(batch_size=3),
        scoring_options(batch_size=1),
        TranscriptionOptions(batch_size=2, return_timestamps=False, initial_prompt="Hello there"),
        TranscriptionOptions(batch_size=3, return_timestamps=False, no_speech_threshold=None),
    ],
    ids=["scoring", "alone", "prompt", "no-gate"],
)
def test_lean_transcripts_are_the_full_runtimes(lean_export, rng, options):
    """The same export through both engines: the same tokens, texts, segments (within 0.02 s), no-speech
    scores and gates. Random weights repeat themselves to the token cap, so the compression check would
    send every clip to the temperature fallback, whose sampling each engine seeds its own way: it is off
    here. Timestamps are compared on the real exports below: a random model's first token is a timestamp
    and then it writes to the cap, where ``generate`` cuts its segments its own way."""
    audios = _audios(rng)
    options = TranscriptionOptions(**{**options.__dict__, "compression_ratio_threshold": None, "max_new_tokens": 24})
    lean = OnnxTranscriber.from_pretrained(lean_export, device="cpu", threads=2)
    full = WhisperTranscriber.from_pretrained(lean_export, backend="onnx", device="cpu", threads=2)
    _same(lean.transcribe_arrays(audios, options), full.transcribe_arrays(audios, options))


def test_both_engines_feed_an_export_the_same_features(lean_export, rng):
    """Dynamic int8 scales each activation by its batch's range, so the ~1e-5 differences between two STFTs
    (transformers' torch STFT, numpy's here) become different tokens: the full install's ONNX engine reads the
    lean runtime's features, bit for bit, in the 30 s window (with generate's frame mask) and in short ones."""
    from mkdeploy.transcription.batching import model_inputs

    full = WhisperTranscriber.from_pretrained(lean_export, backend="onnx", device="cpu")
    audios = _audios(rng)
    inputs = model_inputs(full.engine, audios)
    assert np.array_equal(inputs.features.numpy(), log_mel(audios, 80, 480000))
    assert inputs.attention_mask is not None and inputs.attention_mask.sum(-1).tolist() == [300, 700, 1200]
    short = [a[: 16000 * 4] for a in audios]
    assert np.array_equal(model_inputs(full.engine, short, 5).features.numpy(), log_mel(short, 80, 80000))


def test_lean_refuses_what_it_does_not_run_naming_the_fix(lean_export, rng):
    lean = OnnxTranscriber.from_pretrained(lean_export, device="cpu")
    audio = _audios(rng)[:1]
    with pytest.raises(MkdError, match=r"cross-attention.*mkdeploy\[train\]"):
        lean.transcribe_arrays(audio, TranscriptionOptions(word_timestamps=True))
    with pytest.raises(MkdError, match="beam search"):
        lean.transcribe_arrays(audio, TranscriptionOptions(num_beams=2))
    with pytest.raises(MkdError, match="English-only"):
        lean.transcribe_arrays(audio, TranscriptionOptions(language="de"))
    # silence is gated before anything is decoded
    [t] = lean.transcribe_arrays([np.zeros(16000, np.float32)], TranscriptionOptions())
    assert t.gate == "silence" and t.text == ""


LEAN_ONLY = textwrap.dedent("""
    import json, sys
    for name in json.loads(sys.argv[1]):
        sys.modules[name] = None  # how Python spells "not installed"
    import numpy as np
    from mkdeploy.lean.transcriber import OnnxTranscriber
    from mkdeploy.options import scoring_options
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)
    tr = OnnxTranscriber.from_pretrained(sys.argv[2], device="cpu")
    [t] = tr.transcribe_arrays([audio], scoring_options(batch_size=1))
    heavy = [m for m in json.loads(sys.argv[1]) if sys.modules.get(m) is not None]
    print(json.dumps({"tokens": t.tokens, "heavy": heavy}))
""")


def test_lean_runs_where_torch_transformers_and_optimum_cannot_be_imported(lean_export, rng):
    r = subprocess.run(
        [sys.executable, "-c", LEAN_ONLY, json.dumps(HEAVY), str(lean_export)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    audio = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)
    full = WhisperTranscriber.from_pretrained(lean_export, backend="onnx", device="cpu")
    [ref] = full.transcribe_arrays([audio], scoring_options(batch_size=1))
    assert out["tokens"] == ref.tokens


LONG_SENTENCES = [
    "Every morning the baker opens his shop before the sun rises over the hills.",
    "Seven engineers met on Tuesday to plan the new bridge across the river.",
    "My grandmother kept a garden full of tomatoes, beans and bright yellow flowers.",
    "The train to the coast was late again, so we walked along the quiet harbour.",
    "Nobody expected the small team to finish the project two weeks early.",
    "A cold wind blew through the valley while the farmers gathered the last hay.",
]


@pytest.mark.integration
@pytest.mark.parametrize("teacher", ["tiny_en_teacher", "base_teacher"])
def test_real_exports_give_the_full_runtimes_tokens(teacher, request, speech_clips, tmp_path):
    """tiny.en and base, exported: fp32 tokens identical and timestamps within one 0.02 s step on speech,
    greedy and with timestamps, each clip alone and in one batch, and on 40 s of speech (long-form)."""
    import soundfile as sf

    src: Path = request.getfixturevalue(teacher)
    out = tmp_path / "onnx"
    export_onnx(src, out, ExportOptions(validate=False))
    audios = [sf.read(p, dtype="float32")[0] for p, _ in speech_clips]
    lean = OnnxTranscriber.from_pretrained(out, device="cpu", threads=2)
    full = WhisperTranscriber.from_pretrained(out, backend="onnx", device="cpu", threads=2)
    lang = "en"
    for options in (scoring_options(language=lang, batch_size=4), TranscriptionOptions(language=lang, batch_size=1)):
        _same(lean.transcribe_arrays(audios, options), full.transcribe_arrays(audios, options))
    from mkdeploy.demo.synthesis import Voice, synthesize

    # distinct sentences: repeated ones compress well enough to trip the loop check, and the fallback's
    # sampling is seeded differently by the two engines
    more = [synthesize(t, Voice("piper", "joe")).astype(np.float32) for t in LONG_SENTENCES]
    long = np.concatenate(audios + more)
    assert len(long) > 16000 * 30
    detect = TranscriptionOptions(language=None)
    [a], [b] = lean.transcribe_arrays([long], detect), full.transcribe_arrays([long], detect)
    _same([a], [b])
    assert a.language == b.language == "en"


BASE_INSTALL = textwrap.dedent("""
    import json, sys
    blocked = json.loads(sys.argv[1])
    for name in blocked:
        sys.modules[name] = None  # how Python spells "not installed"
    from typer.testing import CliRunner
    from mkdeploy.cli.main import app
    out = []
    for args in json.loads(sys.argv[2]):
        r = CliRunner().invoke(app, args)
        out.append({"code": r.exit_code, "out": r.output[-1500:]})
    heavy = [m for m in blocked if sys.modules.get(m) is not None]
    print(json.dumps({"runs": out, "heavy": heavy}))
""")


def test_cli_without_the_training_stack_transcribes_an_export_and_names_the_extra(
    lean_export, tiny_model_dir, tmp_path
):
    """The base install: `mkd transcribe` runs an export on the lean runtime (backend auto) and writes what the
    lean runtime gives in the full install (which gives the full runtime's tokens: the tests above; on real
    weights, tests/test_packaging.py); `mkd export` stops with the command that installs the [train] extra."""
    import soundfile as sf

    audio = (np.random.default_rng(3).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    clip = tmp_path / "clip.wav"
    sf.write(clip, audio, 16000)
    flags = ["-f", "json", "--no-timestamps", "--device", "cpu"]
    runs = [
        ["transcribe", str(lean_export), str(clip), "-o", str(tmp_path / "lean"), *flags],
        ["export", str(tiny_model_dir), str(tmp_path / "again")],
    ]
    r = subprocess.run(
        [sys.executable, "-c", BASE_INSTALL, json.dumps(HEAVY + ["silero_vad"]), json.dumps(runs)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    transcribed, exported = out["runs"]
    assert transcribed["code"] == 0, transcribed["out"]
    assert "onnx-lean" in transcribed["out"]
    assert exported["code"] == 2 and "pip install 'mkdeploy[train]'" in exported["out"], exported["out"]
    lean = OnnxTranscriber.from_pretrained(lean_export, device="cpu")
    [ref], _ = lean.transcribe_files([clip], TranscriptionOptions(return_timestamps=False))
    assert json.loads((tmp_path / "lean" / "clip.json").read_text())["text"] == ref.text


SERVE_BASE = textwrap.dedent("""
    import io, json, sys
    for name in json.loads(sys.argv[1]):
        sys.modules[name] = None
    from fastapi.testclient import TestClient
    from mkdeploy.serve.app import create_app
    from mkdeploy.serve.config import ServeConfig
    from mkdeploy.serve.served_model import Engine
    config = ServeConfig(model=sys.argv[2], device="cpu", threads=2)
    engine = Engine(config)
    with TestClient(create_app(config, engine)) as client:
        assert engine.ready.wait(300), engine.error
        with open(sys.argv[3], "rb") as f:
            r = client.post("/v1/audio/transcriptions", files={"file": ("clip.wav", f, "audio/wav")},
                            data={"model": config.served_id, "response_format": "json"})
        bad = client.post("/v1/audio/transcriptions", files={"file": ("x.wav", io.BytesIO(b"not audio"), "audio/wav")},
                          data={"model": config.served_id})
    print(json.dumps({"status": r.status_code, "body": r.json(), "bad": bad.status_code,
                      "backend": engine.transcriber.backend, "vad": config.vad,
                      "heavy": [m for m in json.loads(sys.argv[1]) if sys.modules.get(m) is not None]}))
""")


def test_server_without_the_training_stack_answers_as_the_full_install(lean_export, tmp_path):
    """`mkd serve`'s app where torch, transformers, optimum and silero-vad cannot be imported: the export is
    served by the lean runtime (the VAD off, said in the log), a clip gets the lean runtime's text, bad audio
    gets a 4xx. The full install's text on real weights: tests/test_packaging.py."""
    import soundfile as sf

    audio = (np.random.default_rng(4).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    clip = tmp_path / "clip.wav"
    sf.write(clip, audio, 16000)
    r = subprocess.run(
        [sys.executable, "-c", SERVE_BASE, json.dumps(HEAVY + ["silero_vad"]), str(lean_export), str(clip)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["backend"] == "onnx-lean" and out["vad"] is False
    assert out["status"] == 200 and 400 <= out["bad"] < 500
    # the server's json request: greedy, the fallback ladder, no timestamps, the no-speech gate
    lean = OnnxTranscriber.from_pretrained(lean_export, device="cpu", threads=2)
    [mine] = lean.transcribe_arrays([audio], TranscriptionOptions(return_timestamps=False, language="en"))
    assert out["body"]["text"] == mine.text
