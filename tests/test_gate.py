"""The no-speech gate: Whisper's own test (scores checked against hand-computed values, the rule on a
tiny random model) and the Silero VAD pre-check (noise, hum and silence out; quiet speech in)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from signals import noise_clips

from mkdeploy.audio import load_audio
from mkdeploy.transcription.decoding import score_speech
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber


class _Gen:
    eos_token_id = 5
    suppress_tokens = [1]


def test_score_speech_matches_hand_computed_values():
    torch.manual_seed(0)
    table = torch.randn(1, 4, 6).numpy()  # positions: prompt(0), then tokens 2, 3, end-of-text

    scores = score_speech(lambda ids: np.repeat(table, ids.shape[0], 0), [0], [[2, 3]], _Gen(), no_speech_id=4)

    t = table[0].astype(np.float64)
    no_speech = math.exp(t[0, 4]) / np.exp(t[0]).sum()  # raw logits at the first position
    masked = t.copy()
    masked[:, 1] = -np.inf  # suppress_tokens masked before the token log-probabilities
    logp = masked - np.log(np.exp(masked).sum(-1, keepdims=True))
    avg = (logp[0, 2] + logp[1, 3] + logp[2, 5]) / 3  # two tokens and end-of-text, over 2 + 1
    assert scores[0].no_speech_prob == pytest.approx(no_speech, rel=1e-5)
    assert scores[0].avg_logprob == pytest.approx(avg, rel=1e-5)


def test_score_speech_ignores_padding_of_shorter_sequences():
    torch.manual_seed(1)
    table = torch.randn(1, 5, 6).numpy()
    fn = lambda ids: np.repeat(table[:, : ids.shape[1]], ids.shape[0], 0)  # noqa: E731
    alone = score_speech(fn, [0], [[2]], _Gen(), 4)[0]
    batched = score_speech(fn, [0], [[2], [2, 3, 3]], _Gen(), 4)[0]
    assert batched.avg_logprob == pytest.approx(alone.avg_logprob, rel=1e-6)


def test_gate_rule_empties_only_when_both_signals_say_no_speech(tiny_model_dir):
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    base = dict(return_timestamps=False, max_new_tokens=6)

    [kept] = tr.transcribe_arrays([audio], TranscriptionOptions(**base, no_speech_threshold=None))
    assert kept.no_speech_prob is None and kept.gate == ""

    # a threshold of 0 marks every clip as probable no-speech; the log-probability test then decides
    [gated] = tr.transcribe_arrays(
        [audio], TranscriptionOptions(**base, no_speech_threshold=0.0, logprob_threshold=0.0)
    )
    assert gated.gate == "no_speech" and gated.text == "" and gated.tokens == []
    assert 0.0 < gated.no_speech_prob < 1.0 and gated.avg_logprob < 0.0
    [rescued] = tr.transcribe_arrays(
        [audio], TranscriptionOptions(**base, no_speech_threshold=0.0, logprob_threshold=-1e9)
    )
    assert rescued.gate == "" and rescued.tokens == kept.tokens
    assert rescued.no_speech_prob == gated.no_speech_prob


def test_digital_silence_is_never_decoded(tiny_model_dir):
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")
    [r] = tr.transcribe_arrays([np.zeros(16000, np.float32)], TranscriptionOptions(return_timestamps=False))
    assert r.silent and r.gate == "silence" and r.text == ""


def test_vad_rejects_noise_and_hum_but_keeps_quiet_speech():
    pytest.importorskip("silero_vad", reason="the [serve] extra")  # installed by make test
    from mkdeploy.audio import reference_clips
    from mkdeploy.transcription.vad import has_speech, speech_seconds

    for name, noise in noise_clips().items():
        assert not has_speech(noise), name
    speech = reference_clips()[0][0]
    quiet = speech * (10 ** (-30 / 20) / np.abs(speech).max())  # peak at -30 dBFS
    assert speech_seconds(quiet) > 0.6 * len(speech) / 16000


@pytest.mark.integration
def test_real_model_gates_noise_and_passes_quiet_speech(tiny_en_teacher):
    pytest.importorskip("silero_vad", reason="the [serve] extra")
    from mkdeploy.audio import reference_clips
    from mkdeploy.evaluate import error_rates

    tr = WhisperTranscriber.from_pretrained(tiny_en_teacher, device="cpu")
    speech, text = reference_clips()[0]
    quiet = speech * (10 ** (-30 / 20) / np.abs(speech).max())
    noises = noise_clips()
    opts = TranscriptionOptions(return_timestamps=False, vad_filter=True)
    results = tr.transcribe_arrays([quiet, *noises.values()], opts)
    assert error_rates([text], [results[0].text]).wer <= 0.1 and results[0].gate == ""
    assert [(r.text, r.gate) for r in results[1:]] == [("", "vad")] * len(noises)


def test_scores_read_while_decoding_equal_the_teacher_forced_pass(tiny_en_teacher, speech_clips, monkeypatch):
    """The greedy loop's no-speech probability and average log-probability are the ones score_speech
    reads in its own pass (``generate`` path), and that pass then runs only for clips the loop could not
    score (cut at the token cap)."""
    import mkdeploy.transcription.gate as gate

    tr = WhisperTranscriber.from_pretrained(tiny_en_teacher, device="cpu")
    noise = np.random.default_rng(3).standard_normal(16000 * 2).astype(np.float32) * 0.05
    audios = [load_audio(p) for p, _ in speech_clips[:3]] + [noise]
    opts = dict(return_timestamps=False, no_speech_threshold=0.6, logprob_threshold=-1.0, batch_size=4)
    calls = []
    real = gate.score_speech
    monkeypatch.setattr(
        gate, "score_speech", lambda fn, p, seqs, *a, **k: calls.append(len(seqs)) or real(fn, p, seqs, *a, **k)
    )
    fast = tr.transcribe_arrays(audios, TranscriptionOptions(**opts))
    assert calls == []  # every clip ended on end-of-text: no second pass
    slow = tr.transcribe_arrays(audios, TranscriptionOptions(**opts, fast_greedy=False))
    assert calls == [4]
    for a, b in zip(fast, slow):
        assert a.tokens == b.tokens and a.gate == b.gate
        assert a.no_speech_prob == pytest.approx(b.no_speech_prob, abs=1e-4)
        assert a.avg_logprob == pytest.approx(b.avg_logprob, abs=1e-4)
    assert len({round(r.avg_logprob, 3) for r in fast}) > 1
    calls.clear()
    capped = tr.transcribe_arrays(audios[:2], TranscriptionOptions(**opts, max_new_tokens=2))
    assert calls == [2] and all(r.avg_logprob is not None for r in capped)
