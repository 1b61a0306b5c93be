"""Noise-only test signals (3 s at 16 kHz) that Whisper turns into invented text unless gated: white noise,
brown noise and mains hum with its third harmonic. Shared by the gate and server tests."""

from __future__ import annotations

import numpy as np


def noise_clips(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(3 * 16000) / 16000
    brown = np.cumsum(rng.standard_normal(t.size))
    return {
        "white": (rng.standard_normal(t.size) * 0.1).astype(np.float32),
        "brown": (brown / np.abs(brown).max() * 0.3).astype(np.float32),
        "hum": (0.2 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 150 * t)).astype(np.float32),
    }
