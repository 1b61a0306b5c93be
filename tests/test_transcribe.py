"""The transcriber on a tiny random model, and the output writers."""

import json

import numpy as np
import pytest
import soundfile as sf

from mkdeploy.errors import ModelError
from mkdeploy.transcription.runtime import Segment, Transcription, TranscriptionOptions, WhisperTranscriber
from mkdeploy.transcription.writers import WriteJSON, WriteSRT, WriteTXT, WriteVTT, format_timestamp


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")


def test_batching_keeps_order_and_tokens(tiny):
    rng = np.random.default_rng(1)
    audios = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (3, 1, 2)]
    opts = TranscriptionOptions(return_timestamps=False, max_new_tokens=12)
    batched = tiny.transcribe_arrays(audios, TranscriptionOptions(**{**opts.__dict__, "batch_size": 3}))
    singles = [tiny.transcribe_arrays([a], opts)[0] for a in audios]
    assert [b.tokens for b in batched] == [s.tokens for s in singles]
    assert [round(b.duration) for b in batched] == [3, 1, 2]
    assert len({tuple(s.tokens) for s in singles}) > 1


def test_states_memo_encodes_each_batch_once(tiny_model_dir):
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")
    rng = np.random.default_rng(2)
    audios = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (2, 1, 3)]
    opts = TranscriptionOptions(return_timestamps=False, max_new_tokens=10, batch_size=2)
    plain = tr.transcribe_arrays(audios, opts)
    calls = []
    encoder = tr.model.get_encoder()
    hook = encoder.register_forward_hook(lambda mod, inp, out: calls.append(1))
    tr.states_memo = {}
    first = tr.transcribe_arrays(audios, opts)
    n_first = len(calls)
    again = tr.transcribe_arrays(audios, opts)
    hook.remove()
    assert n_first == 2 and len(calls) == 2  # two batches encoded once; the second call read the memo
    assert len(tr.states_memo) == 2
    assert [t.tokens for t in first] == [t.tokens for t in again] == [t.tokens for t in plain]
    assert [t.no_speech_prob for t in again] == [t.no_speech_prob for t in plain]


def test_files_bad_inputs_do_not_stop_the_rest(tiny, tmp_path):
    rng = np.random.default_rng(2)
    good = tmp_path / "good.wav"
    sf.write(good, rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....garbage")
    results, failures = tiny.transcribe_files(
        [corrupt, good, silent, tmp_path / "missing.flac"], TranscriptionOptions(max_new_tokens=8)
    )
    assert [r.path for r in results] == [str(good), str(silent)]
    assert results[1].silent and results[1].text == ""
    assert {f.path for f in failures} == {str(corrupt), str(tmp_path / "missing.flac")}
    assert all(f.path in f.reason for f in failures)


def test_missing_and_wrong_model_dirs(tmp_path, tiny_ct2_dir):
    with pytest.raises(ModelError, match="no such model directory"):
        WhisperTranscriber.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelError, match="import-ct2"):
        WhisperTranscriber.from_pretrained(tiny_ct2_dir)


def _result():
    return Transcription(
        "/x/clip.wav",
        "Hello there. General Kenobi.",
        [Segment(0.0, 1.5, "Hello there."), Segment(1.5, 3661.25, "General Kenobi.")],
        3661.3,
    )


def test_timestamp_format():
    assert format_timestamp(3661.25, True, ",") == "01:01:01,250"
    assert format_timestamp(5.0) == "00:05.000"


def test_writers(tmp_path):
    r = _result()
    assert WriteTXT(tmp_path)(r).read_text() == "Hello there. General Kenobi.\n"
    srt = WriteSRT(tmp_path)(r).read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 01:01:01,250\n")
    vtt = WriteVTT(tmp_path)(r).read_text()
    assert vtt.startswith("WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.\n")
    data = json.loads(WriteJSON(tmp_path)(r).read_text())
    assert data["text"] == r.text and data["segments"][1]["end"] == 3661.25
    assert (tmp_path / "clip.json").exists()
