"""Audio decoding, mixing, resampling and clear errors for bad files."""

import numpy as np
import pytest
import soundfile as sf

from mkdeploy.audio import expand_audio_paths, load_audio, load_audio_with_info
from mkdeploy.errors import AudioError


def _tone(sr, seconds=1.0, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_formats_decode_to_16k_mono(tmp_path, fmt, ext):
    p = tmp_path / f"a.{ext}"
    sf.write(p, _tone(16000), 16000, format=fmt)
    audio = load_audio(p)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) < 2000  # mp3 adds encoder padding


def test_stereo_mixed_down_and_8k_resampled(tmp_path):
    left, right = _tone(8000, 2.0, 300), -_tone(8000, 2.0, 300) * 0.5
    p = tmp_path / "s.wav"
    sf.write(p, np.stack([left, right], axis=1), 8000)
    audio, info = load_audio_with_info(p)
    assert info.channels == 2 and info.sample_rate == 8000 and info.duration == pytest.approx(2.0)
    assert len(audio) == 32000
    # mono = mean of channels: amplitude 0.5 * (1 - 0.5) / 2 = 0.125
    assert np.abs(audio[1000:-1000]).max() == pytest.approx(0.125, abs=0.01)
    # a real resampler keeps the 300 Hz tone where it was
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(300, abs=2)


def test_silent_flagged(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(16000, np.float32), 16000)
    assert load_audio_with_info(p)[1].silent


@pytest.mark.parametrize("content,match", [(b"", "empty file"), (b"this is not audio at all" * 10, "cannot decode")])
def test_bad_files_named(tmp_path, content, match):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError, match=match) as err:
        load_audio(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_header_only_and_missing(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros((0,), np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(p)
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")


def test_expand_folder(tmp_path):
    for n in ("b.wav", "a.flac", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in expand_audio_paths([tmp_path])] == ["a.flac", "b.wav"]


def test_audio_over_the_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    """A small FLAC that decodes long (20 minutes of digital silence, ~100 kB) is refused with a one-line
    error naming the file, its duration and the limit, before any sample is decoded; under the limit it
    decodes as before."""
    import io

    import soundfile as sf

    from mkdeploy import audio as audio_mod
    from mkdeploy.errors import AudioTooLong

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 8000, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(8000 * 60, np.int16)
        for _ in range(20):
            f.write(block)
    data = buf.getvalue()
    assert len(data) < 500_000

    def no_decode(*a, **k):
        raise AssertionError("samples decoded before the limit was checked")

    monkeypatch.setattr(audio_mod, "_decode", no_decode)
    with pytest.raises(AudioTooLong, match=r"long\.flac: 1200 s of audio is over the 600 s limit") as err:
        audio_mod.decode_audio_bytes(data, "long.flac", max_seconds=600)
    assert err.value.seconds == 1200 and "\n" not in str(err.value)
    monkeypatch.undo()
    audio, info = audio_mod.decode_audio_bytes(data, "long.flac", max_seconds=3600)
    assert info.duration == 1200 and len(audio) == 1200 * 16000
