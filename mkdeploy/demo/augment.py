"""Seeded augmentation of clean synthetic speech with audiomentations (a maintained library).

The chain, each step with its own probability: speed (tempo) and pitch changes, room reverberation, a
telephone band, mains hum, and coloured noise (white, pink, brown, blue, violet) at 0-30 dB SNR. Clean
clips stay in the mix (every step can miss), so the corpus keeps an easy end.

audiomentations draws its parameters from Python's ``random`` and NumPy's global generator; both are
seeded per clip under a lock (:func:`augment`), so a clip's audio depends only on its own seed: resuming a half-built
corpus, or building it twice, gives the same files.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mkdeploy.audio import SAMPLE_RATE


@dataclass(frozen=True)
class AugmentSpec:
    """Probabilities and ranges of each step (the defaults are the demo's)."""

    p_tempo: float = 0.3
    p_pitch: float = 0.3
    p_reverb: float = 0.3
    p_telephone: float = 0.15
    p_hum: float = 0.15
    p_noise: float = 0.7
    snr_db: tuple[float, float] = (0.0, 30.0)


#: noise at the demo's kept band (20-30 dB SNR) and no other step: the clip's timing and voice stay as
#: synthesised (word-onset tests, per-step calibration)
NOISE_ONLY = AugmentSpec(p_tempo=0, p_pitch=0, p_reverb=0, p_telephone=0, p_hum=0, p_noise=1.0, snr_db=(20.0, 30.0))


def _reverb(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Convolve with a synthetic room response: exponentially decaying noise, RT60 0.2-0.8 s."""
    from scipy.signal import fftconvolve  # optional [demo] extra (audiomentations' dependency)

    rt60 = np.random.uniform(0.2, 0.8)
    t = np.arange(int(rt60 * sample_rate)) / sample_rate
    ir = np.random.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[0] = 1.0 / max(0.25, np.random.uniform(0.3, 1.0))  # the direct path dominates
    wet = fftconvolve(samples, ir)[: len(samples)]
    return (wet * (np.abs(samples).max() / (np.abs(wet).max() + 1e-9))).astype(np.float32)


def _hum(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz with three harmonics, 10-25 dB under the speech."""
    f0 = 50.0 if np.random.random() < 0.5 else 60.0
    t = np.arange(len(samples)) / sample_rate
    hum = sum(np.sin(2 * np.pi * f0 * k * t + np.random.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3, 4))
    rms = np.sqrt(np.mean(samples**2)) + 1e-9
    level = rms / 10 ** (np.random.uniform(10, 25) / 20) / (np.sqrt(np.mean(hum**2)) + 1e-9)
    return (samples + level * hum).astype(np.float32)


#: audiomentations reads the process-wide generators: one clip at a time, or threads would interleave draws.
_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _chain(spec: AugmentSpec):
    import audiomentations as A  # optional [demo] extra

    return A.Compose(
        [
            A.TimeStretch(min_rate=0.85, max_rate=1.15, leave_length_unchanged=False, p=spec.p_tempo),
            A.PitchShift(min_semitones=-2.0, max_semitones=2.0, p=spec.p_pitch),
            A.Lambda(_reverb, p=spec.p_reverb),
            A.Compose(
                [A.HighPassFilter(250.0, 400.0, p=1.0), A.LowPassFilter(3000.0, 3600.0, p=1.0)], p=spec.p_telephone
            ),
            A.Lambda(_hum, p=spec.p_hum),
            # f_decay: 0 white, -3 pink, -6 brown, +3 blue, +6 violet (dB per octave)
            A.AddColorNoise(
                min_snr_db=spec.snr_db[0], max_snr_db=spec.snr_db[1], min_f_decay=-6.0, max_f_decay=6.0, p=spec.p_noise
            ),
        ]
    )


def augment(audio: np.ndarray, seed: int | list[int], spec: AugmentSpec = AugmentSpec()) -> np.ndarray:
    """Augment one 16 kHz clip; the result depends only on ``audio``, ``seed`` and ``spec``.

    Returns:
        float32 samples, peak-normalised to 0.95 when the chain pushed them past full scale.
    """
    s = int(np.random.SeedSequence(seed).generate_state(1)[0])
    with _LOCK:
        random.seed(s)
        np.random.seed(s)
        out = _chain(spec)(samples=audio.astype(np.float32), sample_rate=SAMPLE_RATE)
    peak = float(np.abs(out).max()) + 1e-9
    return (out / peak * 0.95 if peak > 1.0 else out).astype(np.float32)
