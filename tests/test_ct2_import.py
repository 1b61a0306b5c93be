"""CTranslate2 -> Hugging Face import on a tiny random model written by the test."""

import json
import shutil

import numpy as np
import pytest
import torch
from ct2_writer import quantize_int8, random_whisper_variables, write_model_bin

from mkdeploy.errors import ModelError, OutputExistsError
from mkdeploy.models.ct2 import import_ct2, read_ct2_model_bin, sinusoids
from mkdeploy.models.ct2_tokenizer import repair_bpe_merges

ALIAS = {"decoder/projection/weight": "decoder/embeddings/weight"}


def test_reader_round_trip(tmp_path):
    v = random_whisper_variables(seed=1)
    write_model_bin(tmp_path / "model.bin", v, ALIAS)
    m = read_ct2_model_bin(tmp_path / "model.bin")
    assert m.spec == "WhisperSpec" and m.version == 6
    assert m.aliases == ALIAS
    np.testing.assert_array_equal(m.variables["encoder/conv1/weight"], v["encoder/conv1/weight"])
    assert int(m.variables["decoder/num_heads"]) == 2
    np.testing.assert_array_equal(m.get("decoder/projection/weight"), v["decoder/embeddings/weight"])


def test_reader_dequantises_int8(tmp_path):
    v = random_whisper_variables(dtype=np.float32, seed=2)
    write_model_bin(tmp_path / "model.bin", quantize_int8(v), ALIAS)
    m = read_ct2_model_bin(tmp_path / "model.bin")
    w, ref = m.variables["encoder/layer_0/ffn/linear_0/weight"], v["encoder/layer_0/ffn/linear_0/weight"]
    assert w.dtype == np.float32
    # int8 with a per-row scale: error at most half a quantisation step of each row
    step = np.abs(ref).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(w - ref) <= step / 2 + 1e-6)
    assert not any(k.endswith("_scale") for k in m.variables)


def test_import_dims_and_configs(tiny_model_dir):
    from transformers import AutoProcessor, WhisperForConditionalGeneration, WhisperProcessor

    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert (cfg["d_model"], cfg["encoder_layers"], cfg["decoder_layers"], cfg["vocab_size"]) == (64, 2, 2, 51864)
    assert cfg["encoder_attention_heads"] == 2 and cfg["encoder_ffn_dim"] == 256
    assert cfg["max_source_positions"] == 1500 and cfg["max_target_positions"] == 448
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    # English-only: no language map, or generate() would try language detection.
    assert not gen.get("lang_to_id") and gen["is_multilingual"] is False
    assert gen["decoder_start_token_id"] == 50257 and gen["no_timestamps_token_id"] == 50362
    assert 50257 in gen["suppress_tokens"] or len(gen["suppress_tokens"]) > 50
    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    np.testing.assert_allclose(
        model.model.encoder.embed_positions.weight.detach().numpy(), sinusoids(1500, 64), atol=1e-3
    )
    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    assert isinstance(proc, WhisperProcessor)
    tok = proc.tokenizer
    assert len(tok) == 51864
    assert tok.convert_tokens_to_ids("<|0.00|>") == 50363 and tok.convert_tokens_to_ids("<|30.00|>") == 51863
    ids = tok("hello world", add_special_tokens=False).input_ids
    assert tok.decode(ids) == "hello world"
    assert tok.normalize("colour") == "color"  # Whisper's spelling map ships with the import


def test_greedy_tokens_match_ctranslate2(tiny_ct2_dir, tiny_model_dir):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (2, 5)]
    feats = proc.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        hf = model.generate(feats, max_new_tokens=20)
    ct2 = ctranslate2.models.Whisper(str(tiny_ct2_dir), device="cpu", compute_type="float32")
    res = ct2.generate(
        ctranslate2.StorageView.from_array(feats.numpy()),
        [["<|startoftranscript|>", "<|notimestamps|>"]] * 2,
        beam_size=1,
        max_length=22,
    )
    seen = set()
    for row, r in zip(hf.tolist(), res):
        ours = [t for t in row if t != 50256]  # generate() returns the tokens after the prompt
        seen |= set(ours)
        n = min(len(ours), len(r.sequences_ids[0]))
        assert n >= 10 and r.sequences_ids[0][:n] == ours[:n]
    assert len(seen) > 3, "random model collapsed onto one token; the comparison would prove nothing"


def test_int8_model_imports(tmp_path, tiny_ct2_dir):
    d = tmp_path / "ct2"
    shutil.copytree(tiny_ct2_dir, d)
    write_model_bin(d / "model.bin", quantize_int8(random_whisper_variables(dtype=np.float32)), ALIAS)
    out = import_ct2(d, tmp_path / "hf")
    assert (out / "model.safetensors").exists()


def test_split_model_bin_parts(tmp_path, tiny_ct2_dir):
    raw = (tiny_ct2_dir / "model.bin").read_bytes()
    a, b = tmp_path / "p1", tmp_path / "p2"
    a.mkdir(), b.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(tiny_ct2_dir / name, a / name)
    (a / "model.bin.part1").write_bytes(raw[: len(raw) // 2])
    (b / "model.bin.part2").write_bytes(raw[len(raw) // 2 :])
    out = import_ct2([a, b], tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["d_model"] == 64


def test_errors(tmp_path, tiny_ct2_dir, tiny_model_dir):
    with pytest.raises(OutputExistsError, match="--force"):
        import_ct2(tiny_ct2_dir, tiny_model_dir)
    with pytest.raises(ModelError, match="not a directory"):
        import_ct2(tmp_path / "nope", tmp_path / "out")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ct2_dir, bad)
    (bad / "model.bin").write_bytes((tiny_ct2_dir / "model.bin").read_bytes()[:5000])
    with pytest.raises(ModelError, match="truncated|not a readable"):
        import_ct2(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a failed import must leave nothing behind"
    v = random_whisper_variables()
    v["encoder/layer_0/self_attention/linear_0/bias"][70] = 1.0  # a non-zero key bias
    write_model_bin(bad / "model.bin", v, ALIAS)
    with pytest.raises(ModelError, match="key bias"):
        import_ct2(bad, tmp_path / "out")
    write_model_bin(bad / "model.bin", random_whisper_variables(), ALIAS, version=9)
    with pytest.raises(ModelError, match="version 9"):
        import_ct2(bad, tmp_path / "out")
    (bad / "model.bin").unlink()
    with pytest.raises(ModelError, match="no model.bin"):
        import_ct2(bad, tmp_path / "out")


def test_repair_bpe_merges_restores_a_lost_merge():
    byte_tokens = {chr(0x100 + i) if i < 256 else "": i for i in range(256)}
    vocab = {**byte_tokens, "Ġt": 256, "he": 257, "Ġthe": 258, "<|endoftext|>": 259}
    spec = {"model": {"type": "BPE", "vocab": vocab, "merges": [["h", "e"], ["Ġt", "he"]]}}
    vocab.update({"Ġ": 1, "t": 2, "h": 3, "e": 4})
    assert repair_bpe_merges(spec) == [("Ġ", "t")]
    assert spec["model"]["merges"] == [["Ġ", "t"], ["h", "e"], ["Ġt", "he"]]
    assert repair_bpe_merges(spec) == []  # complete now
