"""`mkd export --format ct2` (exporters/ct2.py): CTranslate2's converter with what faster-whisper needs offline,
alignment heads that exist in the student, a warning for windows CTranslate2 cannot encode, and transcripts
checked against PyTorch through CTranslate2 itself."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

pytest.importorskip("ctranslate2", reason="the [test] extra")

from mkdeploy.cli.main import app  # noqa: E402
from mkdeploy.errors import MkdError  # noqa: E402
from mkdeploy.exporters.ct2 import MANIFEST, export_ct2  # noqa: E402

runner = CliRunner()


def test_export_holds_what_faster_whisper_loads_offline(tiny_model_dir, tmp_path):
    """model.bin with the tokenizer and preprocessor files beside it, alignment heads the model has, the
    manifest; CTranslate2 loads and runs it (texts of a random model are not compared: it decodes to its
    token cap, which differs by engine; the real models' parity is the integration test below)."""
    from mkdeploy.audio import reference_clips
    from mkdeploy.models.ct2_whisper import CT2Whisper

    m = export_ct2(tiny_model_dir, tmp_path / "ct2", "float32", validate=False)
    out = tmp_path / "ct2"
    assert {"model.bin", "config.json", "tokenizer.json", "preprocessor_config.json", MANIFEST} <= {
        p.name for p in out.iterdir()
    }
    heads = json.loads((out / "config.json").read_text())["alignment_heads"]
    layers = json.loads((tiny_model_dir / "config.json").read_text())["decoder_layers"]
    assert heads == m.alignment_heads and heads and all(0 <= layer < layers for layer, _ in heads)
    assert json.loads((out / MANIFEST).read_text())["format"] == "ctranslate2" and not m.warnings
    texts = CT2Whisper(out, "cpu", "float32", max_new_tokens=8).transcribe_batch([a for a, _ in reference_clips()])
    assert len(texts) == 2 and all(n > 1 for _, n in texts)


def test_export_of_a_relative_model_path(tiny_model_dir, tmp_path, monkeypatch):
    """The source is staged as links: given as a relative path (`mkd export models/x out`), they must
    still point at its files."""
    monkeypatch.chdir(tiny_model_dir.parent)
    m = export_ct2(tiny_model_dir.name, tmp_path / "rel", "float32", validate=False)
    assert (tmp_path / "rel" / "model.bin").stat().st_size > 0 and m.alignment_heads


def test_ct2_export_errors_and_warnings(tiny_model_dir, tmp_path):
    from mkdeploy.models.student import init_windowed_student

    with pytest.raises(MkdError, match="--quantization int4"):
        export_ct2(tiny_model_dir, tmp_path / "a", "int4")
    export_ct2(tiny_model_dir, tmp_path / "b", "int8", validate=False)
    r = runner.invoke(app, ["export", str(tiny_model_dir), str(tmp_path / "b"), "--format", "ct2"])
    assert r.exit_code == 2 and "--force" in r.output  # nothing overwritten without --force
    windowed = init_windowed_student(tiny_model_dir, tmp_path / "w", (10, 30))
    r = runner.invoke(app, ["export", str(windowed), str(tmp_path / "wc"), "--format", "ct2", "--no-validate"])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "30 s" in r.output
    assert json.loads((tmp_path / "wc" / MANIFEST).read_text())["warnings"]
    r = runner.invoke(app, ["export", str(tiny_model_dir), str(tmp_path / "x"), "--format", "gguf"])
    assert r.exit_code == 2 and "--format gguf" in r.output


@pytest.mark.integration
def test_a_cut_student_exports_with_heads_it_has_and_aligns_words(tiny_en_teacher, speech_clips, tmp_path):
    """tiny.en cut to 3 decoder layers inherits alignment heads in layer 3: the export measures its own, its
    float32 transcripts equal PyTorch's on the parity and held-out clips, int8's differ by at most one word per
    clip, and CTranslate2's `align` (what faster-whisper's word_timestamps runs) puts every word inside its
    clip."""
    import ctranslate2
    import numpy as np
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    from mkdeploy.audio import load_audio

    student = tmp_path / "cut"
    r = runner.invoke(
        app, ["student", "init", str(student), "--teacher", str(tiny_en_teacher), "--decoder-layers", "3"]
    )
    assert r.exit_code == 0, r.output
    audios = [load_audio(p) for p, _ in speech_clips]
    m = export_ct2(student, tmp_path / "f32", "float32", samples=audios)
    assert m.alignment_heads and all(layer < 3 for layer, _ in m.alignment_heads)  # mkd's pruning remaps them
    assert m.identical == len(audios)
    # a student pruned elsewhere keeps its teacher's list, naming layer 3 (faster-whisper #688): measured instead
    foreign = tmp_path / "foreign"
    shutil.copytree(student, foreign)
    gen = json.loads((foreign / "generation_config.json").read_text())
    gen["alignment_heads"] = [[3, 0], [3, 1], [2, 2]]
    (foreign / "generation_config.json").write_text(json.dumps(gen))
    f = export_ct2(foreign, tmp_path / "foreign-ct2", "float32", samples=audios)
    assert f.heads_source == "measured on the parity clips" and all(layer < 3 for layer, _ in f.alignment_heads)
    q = export_ct2(student, tmp_path / "i8", "int8", samples=audios)
    assert all(
        abs(len(p["pytorch"].split()) - len(p["ctranslate2"].split())) <= 1 for p in q.parity
    ) and q.word_errors <= len(audios)

    model = ctranslate2.models.Whisper(str(tmp_path / "f32"))
    tok = Tokenizer.from_file(str(tmp_path / "f32" / "tokenizer.json"))
    fe = WhisperFeatureExtractor.from_pretrained(tmp_path / "f32")
    audio = audios[0]
    feats = ctranslate2.StorageView.from_array(
        np.ascontiguousarray(fe([audio], sampling_rate=16000, return_tensors="np").input_features)
    )
    prompt = [tok.token_to_id(t) for t in ("<|startoftranscript|>", "<|notimestamps|>")]
    ids = model.generate(feats, [prompt], beam_size=1)[0].sequences_ids[0]
    n_frames = len(audio) // 160
    alignment = model.align(feats, [prompt[0]], [ids], n_frames)[0].alignments
    times = [t / 50 for _, t in alignment]  # text token index, time index in 20 ms frames
    assert len(times) >= len(ids) - 1 and 0 <= min(times) and max(times) <= len(audio) / 16000 + 0.02


@pytest.mark.slow
def test_faster_whisper_transcribes_the_export_offline(tiny_en_teacher, speech_clips, tmp_path):
    """faster-whisper itself, in a venv of its own (its plain onnxruntime would replace onnxruntime-gpu here),
    loads the int8 export with local_files_only=True and transcribes a clip as CTranslate2 does here."""
    import subprocess
    import sys

    export_ct2(tiny_en_teacher, tmp_path / "ct2", "int8")
    venv = tmp_path / "fw"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "faster-whisper"], capture_output=True, text=True, timeout=900
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    clip, text = speech_clips[0]
    script = (
        "import sys; from faster_whisper import WhisperModel\n"
        "m = WhisperModel(sys.argv[1], device='cpu', compute_type='int8', local_files_only=True)\n"
        "segs, info = m.transcribe(sys.argv[2], beam_size=1, word_timestamps=True, language='en')\n"
        "segs = list(segs); print(' '.join(s.text.strip() for s in segs)); print(len([w for s in segs for w in s.words]))\n"
    )
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, str(tmp_path / "ct2"), str(clip)],
        capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    said, words = r.stdout.strip().splitlines()[-2:]
    from mkdeploy.evaluate import error_rates

    assert error_rates([text], [said]).wer <= 0.1 and int(words) >= len(text.split()) - 1
