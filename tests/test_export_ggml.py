"""`mkd export --format ggml` (exporters/ggml.py): whisper.cpp's model file written from the PyTorch weights,
q8_0 as ggml packs it, a refusal for what whisper.cpp cannot hold, warnings for what it treats differently,
and transcripts checked against PyTorch through whisper.cpp itself (pywhispercpp)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("pywhispercpp", reason="the [ggml] extra (in [test])")

from mkdeploy.cli.main import app  # noqa: E402
from mkdeploy.errors import MkdError, ModelError  # noqa: E402
from mkdeploy.exporters.ggml import GGML_MAGIC, MANIFEST, export_ggml, ggml_name, quantize_q8_0  # noqa: E402
from mkdeploy.models.ggml import GGML_FILE, GgmlWhisper, ggml_param_count  # noqa: E402

runner = CliRunner()


def test_q8_0_packs_blocks_of_32_with_an_fp16_scale(rng):
    """Each block: 2 bytes of scale max|x|/127 then 32 int8; decoding gives x within half a step; a row that
    is not whole blocks is refused."""
    x = rng.normal(size=(3, 64)).astype(np.float32)
    x[1, :32] = 0.0  # an all-zero block: scale 0, codes 0
    raw = quantize_q8_0(x)
    assert len(raw) == 6 * 34
    blocks = np.frombuffer(raw, dtype=[("d", "<f2"), ("qs", "i1", 32)])
    d = blocks["d"].astype(np.float32)
    got = (blocks["qs"].astype(np.float32) * d[:, None]).reshape(3, 64)
    step = np.repeat(d, 32).reshape(3, 64)
    assert np.all(np.abs(got - x) <= step * 0.5 + 1e-3 * np.abs(x) + 1e-6)
    assert d[2] == 0 and not blocks["qs"][2].any()
    assert np.abs(blocks["qs"]).max() == 127  # the largest weight of a block takes the full range
    with pytest.raises(ModelError, match="--quantization f16"):
        quantize_q8_0(np.ones((2, 48), np.float32))


def test_hf_names_become_openai_whispers():
    assert ggml_name("encoder.layers.1.self_attn.k_proj.weight") == "encoder.blocks.1.attn.key.weight"
    assert ggml_name("decoder.layers.0.encoder_attn.out_proj.bias") == "decoder.blocks.0.cross_attn.out.bias"
    assert ggml_name("decoder.layers.2.fc2.weight") == "decoder.blocks.2.mlp.2.weight"
    assert ggml_name("decoder.embed_tokens.weight") == "decoder.token_embedding.weight"
    assert ggml_name("encoder.conv1.weight") == "encoder.conv1.weight"


@pytest.mark.parametrize("quantization", ["f16", "q8_0"])
def test_export_is_a_file_whisper_cpp_loads_and_runs(tiny_model_dir, tmp_path, quantization):
    """The header carries the model's dimensions, every weight but the tied projection is written, the
    2-layer decoder warns (whisper.cpp forces no-timestamps on it), and whisper.cpp loads the file and decodes
    (texts of a random model are not compared; the real models' parity is the integration test below)."""
    from mkdeploy.audio import reference_clips
    from mkdeploy.models.student import load_whisper

    m = export_ggml(tiny_model_dir, tmp_path / "g", quantization, validate=False)
    path = tmp_path / "g" / GGML_FILE
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    header = struct.unpack("<12i", path.read_bytes()[:48])
    assert header[:4] == (GGML_MAGIC, cfg["vocab_size"], cfg["max_source_positions"], cfg["d_model"])
    assert header[9:11] == (cfg["decoder_layers"], cfg["num_mel_bins"])
    assert header[11] == {"f16": 1, "q8_0": 2007}[quantization]
    model, _ = load_whisper(tiny_model_dir)
    n = sum(p.numel() for k, p in model.state_dict().items() if k != "proj_out.weight")
    assert ggml_param_count(path) == n
    assert any("2-layer decoder" in w for w in m.warnings) and m.alignment_heads
    assert json.loads((tmp_path / "g" / MANIFEST).read_text())["quantization"] == quantization
    w = GgmlWhisper(tmp_path / "g", threads=1, max_new_tokens=8)
    results = w.transcribe_batch([a for a, _ in reference_clips()])
    assert len(results) == 2 and all(isinstance(t, str) and n >= 1 for t, n in results)


def test_untied_projection_is_refused_not_dropped(tiny_model_dir, tmp_path):
    """whisper.cpp computes logits with the token embedding: a student with its own projection is refused."""
    import torch

    from mkdeploy.models.student import load_whisper

    model, processor = load_whisper(tiny_model_dir)
    model.config.tie_word_embeddings = False
    model.proj_out.weight = torch.nn.Parameter(model.proj_out.weight.detach().clone() * 1.5)
    model.save_pretrained(tmp_path / "untied")
    processor.save_pretrained(tmp_path / "untied")
    with pytest.raises(ModelError, match="output projection"):
        export_ggml(tmp_path / "untied", tmp_path / "g", validate=False)
    assert not (tmp_path / "g").exists()


def test_windowed_student_gets_audio_ctx_per_bucket_and_cli_errors(tiny_model_dir, tmp_path):
    from mkdeploy.models.student import init_windowed_student

    windowed = init_windowed_student(tiny_model_dir, tmp_path / "w", (10, 30))
    r = runner.invoke(app, ["export", str(windowed), str(tmp_path / "wg"), "--format", "ggml", "--no-validate"])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "audio_ctx" in r.output
    manifest = json.loads((tmp_path / "wg" / MANIFEST).read_text())
    assert manifest["audio_ctx"] == {"10": 500, "30": 1500}
    assert GgmlWhisper(tmp_path / "wg", threads=1).windows.buckets == (10, 30)  # read from the manifest
    r = runner.invoke(app, ["export", str(windowed), str(tmp_path / "wg"), "--format", "ggml", "--no-validate"])
    assert r.exit_code == 2 and "--force" in r.output  # nothing overwritten without --force
    r = runner.invoke(app, ["export", str(tiny_model_dir), str(tmp_path / "x"), "--format", "ggml", "--quantization", "int8"])  # fmt: skip
    assert r.exit_code == 2 and "--quantization int8" in r.output and not (tmp_path / "x").exists()
    with pytest.raises(MkdError, match="no ggml-model.bin"):
        GgmlWhisper(tmp_path / "x")


@pytest.mark.integration
def test_real_tiny_en_and_cut_student_transcribe_in_whisper_cpp_as_in_pytorch(tiny_en_teacher, speech_clips, tmp_path):
    """The real tiny.en and tiny.en cut to 3 decoder layers (`mkd student init`) through whisper.cpp on the
    parity and held-out clips: tiny.en's f16 transcribes them as PyTorch fp32 does; the untrained cut student's
    f16 (whisper.cpp runs no f32 model: exporters/ggml.py, FTYPES) and both q8_0 differ by at most one word per
    clip. The cut student's alignment heads are its own (layers 0-2) and its 3-layer decoder keeps timestamps."""
    from mkdeploy.audio import load_audio, reference_clips

    student = tmp_path / "cut"
    r = runner.invoke(
        app, ["student", "init", str(student), "--teacher", str(tiny_en_teacher), "--decoder-layers", "3"]
    )
    assert r.exit_code == 0, r.output
    audios = [a for a, _ in reference_clips()] + [load_audio(p) for p, _ in speech_clips]

    def within_a_word(m) -> bool:
        return m.word_errors <= len(audios) and all(
            len(set(p["pytorch"].split()) ^ set(p["whisper.cpp"].split())) <= 2 for p in m.parity
        )

    exports = {}
    for name, model in (("tiny.en", tiny_en_teacher), ("cut", student)):
        for q in ("f16", "q8_0"):
            exports[name, q] = export_ggml(model, tmp_path / f"{name}-{q}", q, samples=audios)
    assert exports["tiny.en", "f16"].identical == len(audios), exports["tiny.en", "f16"].parity
    assert all(within_a_word(m) for m in exports.values()), {k: m.parity for k, m in exports.items()}
    cut = exports["cut", "f16"]
    assert cut.alignment_heads and all(layer < 3 for layer, _ in cut.alignment_heads)
    assert cut.heads_source == "the model's generation config" and not cut.warnings
