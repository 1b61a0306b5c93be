"""Audio input: decode with soundfile, mix down to mono, resample to 16 kHz float32.

Every failure raises :class:`~mkdeploy.errors.AudioError` with one line that names the file, so a batch
run can report it and carry on with the other files.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np

from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.errors import AudioError, AudioTooLong

#: Extensions looked for when a folder is given instead of files.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")
#: Peak amplitude under which a clip counts as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4


@dataclass
class AudioInfo:
    """What was read, before resampling.

    Attributes:
        path: the file.
        sample_rate: its original rate in Hz.
        channels: its original channel count.
        duration: seconds of audio.
        silent: peak amplitude below :data:`SILENCE_PEAK`.
    """

    path: str
    sample_rate: int
    channels: int
    duration: float
    silent: bool


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with soxr (the resampler of SoX, also used by librosa)."""
    if orig_sr == target_sr:
        return audio.astype(np.float32, copy=False)
    import soxr  # imported on use: only resampling needs it

    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio_with_info(path: str | Path, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, AudioInfo]:
    """Read an audio file as mono float32 at ``sr`` Hz.

    Args:
        path: wav, flac, ogg/opus or mp3 (what libsndfile decodes).
        sr: target sample rate.

    Returns:
        (samples in [-1, 1], info about the original file).

    Raises:
        AudioError: missing, empty, corrupt or non-audio file.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes); re-export or remove it")
    return _decode(str(path), str(path), sr)


def decode_audio_bytes(
    data: bytes, name: str = "upload", sr: int = SAMPLE_RATE, max_seconds: float | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """Decode an audio file held in memory (an HTTP upload) exactly as :func:`load_audio_with_info` reads
    one from disk; errors name ``name`` (the uploaded file name), not a temporary path.

    Args:
        max_seconds: refuse audio longer than this, from the header's frame count, before any sample is
            decoded (a 0.5 MB FLAC of silence holds hours).

    Raises:
        AudioError: empty, corrupt or non-audio data.
        AudioTooLong: longer than ``max_seconds``.
    """
    if not data:
        raise AudioError(f"{name}: empty file (0 bytes); send an audio file")
    if max_seconds:
        seconds = _header_seconds(data)
        if seconds is not None and seconds > max_seconds:
            raise AudioTooLong(name, seconds, max_seconds)
    audio, info = _decode(io.BytesIO(data), name, sr)
    if max_seconds and info.duration > max_seconds:  # a header without a frame count
        raise AudioTooLong(name, info.duration, max_seconds)
    return audio, info


def _header_seconds(data: bytes) -> float | None:
    """Duration from the file's header (frames / sample rate), or None when the header does not say."""
    import soundfile as sf  # imported on use: libsndfile loads on first audio read

    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # not readable as a header: _decode names the problem
        return None
    return info.frames / info.samplerate if info.frames > 0 and info.samplerate > 0 else None


def _decode(source: str | io.BytesIO, name: str, sr: int) -> tuple[np.ndarray, AudioInfo]:
    import soundfile as sf  # imported on use: libsndfile loads on first audio read

    try:
        data, file_sr = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError or TypeError by format
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason.startswith("Error opening "):  # "Error opening <source>: why": the name is given already
            reason = reason.rpartition(": ")[2]
        raise AudioError(f"{name}: cannot decode audio ({reason}); convert it to wav/flac/ogg/mp3") from None
    if data.shape[0] == 0:
        raise AudioError(f"{name}: holds no audio samples; re-export or remove it")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{name}: contains NaN or infinite samples; re-export it")
    channels = data.shape[1]
    mono = data.mean(axis=1) if channels > 1 else data[:, 0]
    audio = resample(mono, file_sr, sr)
    info = AudioInfo(
        path=name,
        sample_rate=int(file_sr),
        channels=int(channels),
        duration=len(mono) / float(file_sr),
        silent=bool(np.abs(mono).max() < SILENCE_PEAK),
    )
    return audio, info


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 at ``sr`` Hz (see :func:`load_audio_with_info`)."""
    return load_audio_with_info(path, sr)[0]


def expand_audio_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the audio files they hold (sorted)."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            out.append(p)
    return out


def reference_clips() -> list[tuple[np.ndarray, str]]:
    """The two committed speech clips (mkdeploy/assets/parity, Piper's joe voice) with their texts: the
    export's parity check and the server's warm-up use them, so neither needs a speech engine."""

    clips = []
    for stem in ("clip0", "clip1"):
        folder = files("mkdeploy") / "assets" / "parity"
        with as_file(folder / f"{stem}.wav") as path:
            clips.append((load_audio(path), (folder / f"{stem}.txt").read_text().strip()))
    return clips
