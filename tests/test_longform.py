"""Batched long-form (mkdeploy/transcription/longform.py): pieces planned from speech spans by hand, results joined on the
input's clock, and the transcriber's batched path on real speech with the real tiny.en (integration)."""

import numpy as np
import pytest

from mkdeploy.results import Segment, Transcription, Word
from mkdeploy.transcription.longform import Piece, join, plan_pieces

SR = 16000


def test_spans_merge_into_pieces_of_at_most_30_s():
    spans = [(0, 10 * SR), (12 * SR, 25 * SR), (26 * SR, 33 * SR), (40 * SR, 41 * SR)]
    # 0-25 fits; adding 26-33 would make 33 s: a new piece, which takes 40-41 too (15 s)
    assert plan_pieces(spans, 50 * SR) == [Piece(0, 25 * SR), Piece(26 * SR, 41 * SR)]
    # a span longer than a window (no pause found) is cut hard
    assert plan_pieces([(0, 70 * SR)], 70 * SR) == [Piece(0, 30 * SR), Piece(30 * SR, 60 * SR), Piece(60 * SR, 70 * SR)]
    assert plan_pieces([(5 * SR, 8 * SR)], 6 * SR) == [Piece(5 * SR, 6 * SR)]  # clipped to the audio
    assert plan_pieces([], 10 * SR) == []


def test_join_maps_times_back_and_keeps_order():
    a = Transcription("", "Hello there.", [Segment(0.5, 2.0, "Hello there.", [1, 2], [Word(" Hello", 0.5, 1.0, 0.9)])], 5.0,
                      tokens=[1, 2], words=[Word(" Hello", 0.5, 1.0, 0.9)], language="en", avg_logprob=-0.2)  # fmt: skip
    b = Transcription("", "Bye.", [], 3.0, tokens=[3], avg_logprob=-0.4)
    silent = Transcription("", "", [], 2.0, gate="no_speech")
    r = join(
        "f.wav", 60.0, [(Piece(10 * SR, 15 * SR), a), (Piece(40 * SR, 43 * SR), b), (Piece(50 * SR, 52 * SR), silent)]
    )
    assert r.text == "Hello there. Bye." and r.tokens == [1, 2, 3] and r.duration == 60.0
    assert [(s.start, s.end, s.text) for s in r.segments] == [(10.5, 12.0, "Hello there."), (40.0, 43.0, "Bye.")]
    assert r.words == [Word(" Hello", 10.5, 11.0, 0.9)] and r.segments[0].words == r.words
    assert r.language == "en" and r.avg_logprob == pytest.approx(-0.3) and r.gate == ""
    assert join("f.wav", 60.0, [(Piece(0, SR), silent)]).gate == "vad"


@pytest.mark.integration
def test_batched_long_form_on_real_speech(tiny_en_teacher):
    """About 72 s of Piper speech with pauses: the batched path decodes it in fewer, batched pieces and is
    as accurate as the sequential walk here (the benchmark with speed: benchmarks/longform.py)."""
    pytest.importorskip("silero_vad", reason="the [serve] extra")
    from mkdeploy.demo.synthesis import Voice, synthesize
    from mkdeploy.evaluate import error_rates
    from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

    texts = [
        "Seven ships sailed north before the winter storms arrived.",
        "We will need more coffee before the meeting starts.",
        "The train to the city leaves every hour on weekdays.",
        "She bought fresh bread and a bag of apples at the market.",
        "Please close the window when you leave the room.",
        "The library opens at nine and closes at six on Saturdays.",
    ] * 3
    pause = np.zeros(int(1.2 * SR), np.float32)
    audio = np.concatenate([x for t in texts for x in (synthesize(t, Voice("piper", "joe")), pause)])
    assert len(audio) > 60 * SR
    tr = WhisperTranscriber.from_pretrained(tiny_en_teacher, device="cpu")
    seq = tr.transcribe_arrays([audio], TranscriptionOptions())[0]
    bat = tr.transcribe_arrays([audio], TranscriptionOptions(batched_long_form=True))[0]
    ref = " ".join(texts)
    assert error_rates([ref], [bat.text]).wer <= error_rates([ref], [seq.text]).wer + 0.02
    assert error_rates([ref], [bat.text]).wer <= 0.08
    starts = [s.start for s in bat.segments]
    assert starts == sorted(starts) and bat.segments[-1].end <= len(audio) / SR + 0.05 and len(bat.segments) >= 3
