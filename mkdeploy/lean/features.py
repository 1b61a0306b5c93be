"""Whisper's log-mel features in numpy: what transformers' ``WhisperFeatureExtractor`` computes (its
``_torch_extract_fbank_features``; openai/whisper's ``log_mel_spectrogram`` in audio.py), without torch.

A centred STFT (400-point periodic Hann window, hop 160, reflect padding), the power spectrum less its last
frame, Slaney-style mel filters (``mel_filter_bank`` in transformers' audio_utils.py: 0-8 kHz, Slaney scale
and area normalisation), log10 floored at 1e-10, each clip floored at its maximum less 8, then
``(x + 4) / 4``. tests/test_lean.py checks the features against ``WhisperFeatureExtractor``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from mkdeploy.constants import SAMPLE_RATE

N_FFT = 400
HOP = 160


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel[log_region] - 15.0))
    return hz


@lru_cache(maxsize=4)
def mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``[1 + n_fft // 2, n_mels]`` triangular filters from 0 Hz to 8 kHz, each scaled to unit area
    (``norm="slaney"``), as ``WhisperFeatureExtractor.mel_filters``."""
    fft_freqs = np.linspace(0, sample_rate // 2, 1 + n_fft // 2)
    mels = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([8000.0]))[0], n_mels + 2)
    edges = _mel_to_hz(mels)
    width = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]


@lru_cache(maxsize=1)
def _hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)  # periodic, as torch's


def log_mel(audios: Sequence[np.ndarray], n_mels: int, n_samples: int) -> np.ndarray:
    """``[batch, n_mels, n_samples // 160]`` features of 16 kHz clips, each padded with zeros (or cut) to
    ``n_samples`` first: 30 s (480000) for Whisper's window, less for a student's shorter encoder window.

    Args:
        audios: float32 samples in [-1, 1].
        n_mels: the model's mel bins (80, or 128 for large-v3).
        n_samples: the window each clip is padded to.
    """
    filters = mel_filters(n_mels)
    window = _hann(N_FFT)
    out = np.empty((len(audios), n_mels, n_samples // HOP), dtype=np.float32)
    for b, audio in enumerate(audios):
        x = np.zeros(n_samples, dtype=np.float64)
        clip = np.asarray(audio, dtype=np.float64)[:n_samples]
        x[: len(clip)] = clip
        x = np.pad(x, N_FFT // 2, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:-1]  # the last frame dropped
        power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
        spec = np.log10(np.maximum(power @ filters, 1e-10)).T
        spec = np.maximum(spec, spec.max() - 8.0)
        out[b] = (spec + 4.0) / 4.0
    return out
