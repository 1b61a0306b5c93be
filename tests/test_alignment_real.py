"""Word timestamps on the real tiny.en and base: two sentences with a 2 s pause between them (Piper's
joe), so where each word may lie is known; and `mkd transcribe --word-timestamps` json and srt."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mkdeploy.cli.main import app
from mkdeploy.demo.synthesis import Voice, synthesize
from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def paused(tmp_path_factory):
    """(wav path, end of the first sentence, start of the second) in seconds."""
    voice = Voice("piper", "joe")
    a = synthesize("The quick brown fox jumps over the lazy dog.", voice)
    b = synthesize("Seven ships sailed north before the winter storms arrived.", voice)
    lead, gap = np.zeros(8000, np.float32), np.zeros(32000, np.float32)
    path = tmp_path_factory.mktemp("paused") / "paused.wav"
    sf.write(path, np.concatenate([lead, a, gap, b]), 16000)
    return path, (len(lead) + len(a)) / 16000, (len(lead) + len(a) + len(gap)) / 16000


@pytest.mark.parametrize("which", ["tiny_en_teacher", "base_teacher"])
def test_words_fall_on_their_side_of_the_pause(which, paused, request):
    path, a_end, b_start = paused
    tr = WhisperTranscriber.from_pretrained(request.getfixturevalue(which), device="cpu")
    r = tr.transcribe_files([path], TranscriptionOptions(language="en", word_timestamps=True))[0][0]
    words = [w.word.strip().lower().strip(".") for w in r.words]
    i = words.index("dog")  # the first sentence's last word
    first, second = r.words[: i + 1], r.words[i + 1 :]
    assert len(second) >= 7
    mid = (a_end + b_start) / 2
    assert all(w.start < a_end for w in first) and first[-1].end <= mid + 0.3
    assert all(w.start > mid for w in second)  # nothing of the second sentence is placed before the pause
    times = [t for w in r.words for t in (w.start, w.end)]
    assert times == sorted(times) and times[-1] <= r.duration + 0.05
    assert sum(len(s.words) for s in r.segments) == len(r.words)  # each word in one segment


def test_cli_word_timestamps_json_and_srt(tiny_en_teacher, paused, tmp_path):
    path, _, _ = paused
    r = CliRunner().invoke(
        app,
        [
            "transcribe",
            str(tiny_en_teacher),
            str(path),
            "--word-timestamps",
            "-f",
            "json",
            "-f",
            "srt",
            "-o",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    js = json.loads((tmp_path / "paused.json").read_text())
    assert len(js["words"]) >= 15 and set(js["words"][0]) == {"word", "start", "end", "probability"}
    assert sum(len(s["words"]) for s in js["segments"]) == len(js["words"])
    cues = (tmp_path / "paused.srt").read_text().strip().split("\n\n")
    assert len(cues) == len(js["words"])  # one cue per word
    assert cues[0].splitlines()[2] == js["words"][0]["word"].strip()
