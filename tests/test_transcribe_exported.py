"""`mkd transcribe` on CTranslate2 and whisper.cpp exports (mkdeploy/transcription/exported.py): each run by its own
engine, long audio window by window as openai/whisper seeks, what the engine cannot do here refused."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("ctranslate2", reason="the [test] extra")
pytest.importorskip("pywhispercpp", reason="the [ggml] extra (in [test])")

from mkdeploy.cli.main import app  # noqa: E402
from mkdeploy.options import TranscriptionOptions  # noqa: E402
from mkdeploy.transcription.exported import ct2_window_segments  # noqa: E402

runner = CliRunner()


class _Scripted:
    """A CTranslate2 Whisper stand-in whose generate returns given token ids (the real tokenizer decodes)."""

    def __init__(self, tokenizer_dir, words: list[str | float]):
        from tokenizers import Tokenizer

        from mkdeploy.lean.features import log_mel

        self.tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        ts0 = self.tok.token_to_id("<|0.00|>")
        self.ids: list[int] = []
        for w in words:  # floats are timestamps, strings text
            self.ids += [ts0 + round(w / 0.02)] if isinstance(w, float) else self.tok.encode(w).ids
        self.features = lambda audios: log_mel(audios, 80, 30 * 16000)
        self.prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
        self.ct2 = SimpleNamespace(StorageView=SimpleNamespace(from_array=lambda a: a))
        self.model = SimpleNamespace(generate=self.generate)
        self.prompts: list[list[int]] = []

    def generate(self, feats, prompts, **kw):
        self.prompts.append(prompts[0])
        return [SimpleNamespace(sequences_ids=[self.ids])]


def test_a_window_cut_mid_sentence_is_consumed_up_to_its_last_pair(tiny_model_dir):
    """openai/whisper's seek rule: text after the last timestamp pair (a sentence the window cut) is left for
    the next window; an output ending in a lone timestamp consumes the whole window."""
    window = np.zeros(30 * 16000, np.float32)
    opts = TranscriptionOptions()
    cut = _Scripted(tiny_model_dir, [0.0, " Hello there.", 2.0, 2.5, " General", 3.0, 3.0, " Kenob"])
    spans, consumed = ct2_window_segments(cut, window, opts)
    assert spans == [(0.0, 2.0, "Hello there."), (2.5, 3.0, "General")] and consumed == 3.0
    whole = _Scripted(tiny_model_dir, [0.0, " Hello there.", 2.0, 2.5, " General Kenobi.", 4.0])
    spans, consumed = ct2_window_segments(whole, window, opts)
    assert spans[-1] == (2.5, 4.0, "General Kenobi.") and consumed == 30.0
    assert whole.tok.token_to_id("<|notimestamps|>") not in whole.prompts[0]  # timestamps asked for
    untimed = _Scripted(tiny_model_dir, [" Hello there."])
    spans, consumed = ct2_window_segments(untimed, window[:16000], TranscriptionOptions(return_timestamps=False))
    assert spans == [(0.0, 1.0, "Hello there.")] and consumed == 1.0
    prompted = _Scripted(tiny_model_dir, [" Hi."])
    ct2_window_segments(prompted, window, TranscriptionOptions(initial_prompt="Kenobi"))
    assert prompted.prompts[0][0] == prompted.tok.token_to_id("<|startofprev|>")
    assert prompted.tok.decode(prompted.prompts[0][1:3]).strip() == "Kenobi"


@pytest.mark.parametrize("fmt", ["ct2", "ggml"])
def test_transcribe_runs_an_export_on_its_engine(tiny_model_dir, speech_clips, tmp_path, fmt):
    """A random model's text is not compared (the real one's is, below): the engine is named, json written
    with segments inside the clip, and word timestamps refused with the fix named."""
    quantization = {"ct2": "float32", "ggml": "f16"}[fmt]
    export = tmp_path / fmt
    r = runner.invoke(app, ["export", str(tiny_model_dir), str(export), "--format", fmt, "--quantization", quantization, "--no-validate"])  # fmt: skip
    assert r.exit_code == 0, r.output
    clip = speech_clips[0][0]
    args = ["transcribe", str(export), str(clip), "-f", "json", "-o", str(tmp_path / "out")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert {"ct2": "ctranslate2", "ggml": "whisper.cpp"}[fmt] in r.output
    got = json.loads((tmp_path / "out" / f"{clip.stem}.json").read_text())
    assert all(0 <= s["start"] <= s["end"] <= got["duration"] + 0.02 for s in got["segments"])
    r = runner.invoke(app, args + ["--word-timestamps", "--force"])
    assert r.exit_code == 2 and "word timestamps" in r.output and "PyTorch or ONNX model" in r.output


@pytest.mark.integration
def test_real_tiny_en_exports_transcribe_long_audio_as_pytorch_does(tiny_en_teacher, speech_clips, tmp_path):
    """39 s of speech (the four clips three times, pauses between): the CTranslate2 float32 and whisper.cpp
    f16 exports of the real tiny.en lose no sentence at the 30 s window's edge and transcribe within 10% WER
    of PyTorch's own long-form transcript; their segments run forward inside the audio."""
    import soundfile as sf

    from mkdeploy.audio import load_audio
    from mkdeploy.evaluate import error_rates

    pause = np.zeros(8000, np.float32)
    audio = np.concatenate([x for _ in range(3) for p, _ in speech_clips for x in (load_audio(p), pause)])
    assert len(audio) / 16000 > 30
    sf.write(tmp_path / "long.wav", audio, 16000)
    reference = " ".join(t for _ in range(3) for _, t in speech_clips)
    texts = {}
    for name, fmt, q in (("pytorch", None, None), ("ct2", "ct2", "float32"), ("ggml", "ggml", "f16")):
        model = tiny_en_teacher
        if fmt:
            model = tmp_path / name
            r = runner.invoke(app, ["export", str(tiny_en_teacher), str(model), "--format", fmt, "--quantization", q, "--no-validate"])  # fmt: skip
            assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["transcribe", str(model), str(tmp_path / "long.wav"), "-f", "json", "-o", str(tmp_path / name)])  # fmt: skip
        assert r.exit_code == 0, r.output
        got = json.loads((tmp_path / name / "long.json").read_text())
        starts = [s["start"] for s in got["segments"]]
        assert starts == sorted(starts) and got["segments"][-1]["end"] <= got["duration"] + 0.02
        texts[name] = got["text"]
    truth = error_rates([reference] * 3, [texts["pytorch"], texts["ct2"], texts["ggml"]])
    wers = [u.wer for u in truth.utterances]
    assert wers[0] < 0.15 and all(w <= wers[0] + 0.10 for w in wers[1:]), (wers, texts)
