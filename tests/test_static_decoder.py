"""The static-cache decoder step (mkdeploy/transcription/static_decoder.py) gives the transformers loop's greedy tokens
exactly; its CUDA-graph mode is checked where a GPU is present."""

import numpy as np
import pytest
import torch

from mkdeploy.models.student import load_whisper
from mkdeploy.transcription.decoding import decoder_prompt, greedy_decode, torch_step
from mkdeploy.transcription.static_decoder import StaticGreedyDecoder, batch_bucket


def _reference_and_static(model_dir, audios, max_new_tokens, device="cpu", cuda_graphs=False, dtype=torch.float32):
    model, processor = load_whisper(model_dir)
    model.to(device, dtype=dtype).eval()
    feats = processor.feature_extractor(audios, sampling_rate=16000, return_tensors="pt").input_features
    gen = model.generation_config
    prompt = decoder_prompt(processor.tokenizer, gen)
    with torch.inference_mode():
        states = model.get_encoder()(feats.to(device, dtype=dtype)).last_hidden_state
        ref = greedy_decode(torch_step(model, states), len(audios), prompt, gen, max_new_tokens,
                            model.config.vocab_size, 1.35)  # fmt: skip
    dec = StaticGreedyDecoder(model, gen, max_len=len(prompt) + max_new_tokens, cuda_graphs=cuda_graphs)
    return ref, dec.decode(states, prompt, max_new_tokens, 1.35), dec


def test_batch_buckets():
    assert [batch_bucket(n) for n in (1, 2, 3, 5, 9, 32, 33, 100)] == [1, 2, 4, 8, 16, 32, 64, 100]


def test_static_step_matches_transformers_greedy_on_a_random_model(tiny_model_dir):
    rng = np.random.default_rng(3)
    audios = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 2, 3)]
    ref, got, dec = _reference_and_static(tiny_model_dir, audios, max_new_tokens=24)
    assert not dec.use_graphs  # no graphs off CUDA
    assert [r.tokens for r in got] == [r.tokens for r in ref]
    assert all(len(r.tokens) > 3 for r in ref), "random weights run on: the loop must carry many positions"
    assert [r.needs_fallback for r in got] == [r.needs_fallback for r in ref]


@pytest.mark.integration
def test_static_step_matches_transformers_greedy_on_real_tiny_en(tiny_en_teacher, speech_clips):
    import soundfile as sf

    audios = [sf.read(p, dtype="float32")[0] for p, _ in speech_clips]
    ref, got, _ = _reference_and_static(tiny_en_teacher, audios, max_new_tokens=60)
    assert [r.tokens for r in got] == [r.tokens for r in ref]
    assert all(len(r.tokens) >= 8 for r in ref)  # real sentences, not empty outputs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_replay_matches_the_transformers_loop():
    """Self-contained (no packaged weights: benchmarks/gpu_check.sh runs it on a bare GPU machine)."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(vocab_size=51864, d_model=64, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_layers=2, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128)  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).to("cuda").eval()
    gen = GenerationConfig(eos_token_id=50256, suppress_tokens=[1, 2], begin_suppress_tokens=[220, 50256])
    prompt = [50257, 50362]
    with torch.inference_mode():
        states = model.get_encoder()(torch.randn(3, 80, 3000)).last_hidden_state
        ref = greedy_decode(torch_step(model, states), 3, prompt, gen, 24, cfg.vocab_size)
    dec = StaticGreedyDecoder(model, gen, max_len=40)
    got = dec.decode(states, prompt, 24)
    assert dec.use_graphs and (4, 1500) in dec._graphs, "captured for the batch bucket of 3 clips"
    assert [r.tokens for r in got] == [r.tokens for r in ref]
    assert [r.tokens for r in dec.decode(states[:1], prompt, 24)] == [ref[0].tokens]  # another bucket
    # replaying a captured graph on a later call reads only its own buffers
    assert [r.tokens for r in dec.decode(states, prompt, 24)] == [r.tokens for r in ref]


def test_transcriber_uses_the_static_decoder_when_asked_and_gets_the_same_text(tiny_model_dir):
    from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

    rng = np.random.default_rng(5)
    audios = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 2, 3, 2)]
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")
    base = TranscriptionOptions(return_timestamps=False, batch_size=4, max_new_tokens=20, no_speech_threshold=None)
    plain = tr.transcribe_arrays(audios, base)
    assert tr._static is None  # off on CPU by default
    static = tr.transcribe_arrays(audios, TranscriptionOptions(**{**base.__dict__, "static_decoder": True}))
    assert tr._static is not None and tr._static.max_len >= 20
    assert [t.tokens for t in static] == [t.tokens for t in plain] and [t.text for t in static] == [
        t.text for t in plain
    ]


def test_dtype_and_threads_are_honoured(tiny_model_dir):
    from mkdeploy.errors import MkdError
    from mkdeploy.transcription.runtime import WhisperTranscriber, resolve_dtype

    assert resolve_dtype("auto", "cuda") == torch.float16 and resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(MkdError, match="--dtype"):
        resolve_dtype("int4", "cpu")
    before = torch.get_num_threads()
    try:
        tr = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu", threads=1, dtype="bfloat16")
        assert torch.get_num_threads() == 1 and tr.model.dtype == torch.bfloat16
    finally:
        torch.set_num_threads(before)
