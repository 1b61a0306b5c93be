"""Window packing (mkdeploy/transcription/packing.py): planning and attribution against hand-made cases, and on the
real tiny.en that packed clips come back with their own words."""

from __future__ import annotations

import numpy as np
import pytest

from mkdeploy.results import Segment
from mkdeploy.transcription.packing import GAP_S, assign_segments, pack, plan_windows, transcribe_packed
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber


def test_plan_windows_fits_clips_first_fit_and_leaves_long_ones_alone():
    # 29 s usable, 1 s gaps: 10 + 1 + 9 + 1 + 8 = 29 fits; 12 s is over the packable length
    assert plan_windows([10, 9, 8, 12, 3, 5]) == [[0, 1, 2], [3], [4, 5]]


def test_pack_lays_clips_end_to_end_with_silent_gaps():
    a, b = np.ones(16000, np.float32), np.full(8000, 0.5, np.float32)
    w = pack([a, b], [0, 1])
    assert w.spans == [(0.0, 1.0), (1.0 + GAP_S, 1.5 + GAP_S)]
    assert len(w.audio) == 16000 + int(GAP_S * 16000) + 8000
    assert not w.audio[16000 : 16000 + int(GAP_S * 16000)].any()


def _seg(start, end, text):
    return Segment(start, end, text, [len(text)])


def test_segments_go_to_the_clip_holding_their_midpoint_retimed():
    spans = [(0.0, 5.0), (6.0, 10.2), (11.2, 14.1)]
    # whole-second timestamps, each segment starting where the last ended, as tiny.en int8 writes them
    parts, redo = assign_segments([_seg(0, 5, "a"), _seg(5, 10, "b"), _seg(10, 14, "c")], spans)
    assert [[s.text for s in p] for p in parts] == [["a"], ["b"], ["c"]] and redo == set()
    assert (parts[1][0].start, parts[1][0].end) == (0.0, 4.0)  # 5-10 s in the window = 0-4 s of clip 1
    assert (parts[2][0].start, parts[2][0].end) == (0.0, 2.8)  # 10-14 s, clip 2 starts at 11.2 s


def test_a_segment_reaching_into_another_clip_sends_both_clips_back():
    spans = [(0.0, 5.0), (6.0, 10.2), (11.2, 14.1)]
    # 0-8 s holds clip 0's and part of clip 1's words: both are redone, clip 2 keeps its segment
    parts, redo = assign_segments([_seg(0, 8, "a b"), _seg(8, 10, "c"), _seg(11, 14, "d")], spans)
    assert redo == {0, 1} and [s.text for s in parts[2]] == ["d"]
    _, redo = assign_segments([_seg(0.0, 5.4, "a"), _seg(5.6, 10, "b"), _seg(11, 14, "c")], spans)
    assert redo == set()  # 0.4 s into the gap and the next clip is timestamp noise


def test_a_clip_without_words_is_redone_with_its_neighbours():
    spans = [(0.0, 3.0), (4.0, 7.0), (8.0, 11.0), (12.0, 15.0)]
    # clip 1 got nothing: its words may sit in clip 0's or clip 2's segment; clip 3 is beyond reach
    parts, redo = assign_segments([_seg(0, 3, "a"), _seg(8, 11, "c"), _seg(12, 15, "d")], spans)
    assert redo == {0, 1, 2} and [s.text for s in parts[3]] == ["d"]


@pytest.mark.integration
def test_packed_clips_get_their_own_words(tiny_en_teacher, speech_clips):
    from mkdeploy.audio import load_audio
    from mkdeploy.demo.synthesis import Voice, synthesize
    from mkdeploy.evaluate import error_rates

    tr = WhisperTranscriber.from_pretrained(tiny_en_teacher, device="cpu")
    more = ["We will need more coffee before the meeting starts.", "Please close the window when you leave the room."]
    clips = [(load_audio(p), t) for p, t in speech_clips] + [(synthesize(t, Voice("piper", "joe")), t) for t in more]
    audios, refs = [a for a, _ in clips], [t for _, t in clips]
    noise = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)
    opts = TranscriptionOptions(return_timestamps=False, vad_filter=True)
    results, redone = transcribe_packed(tr, [*audios, noise], opts)
    texts = [r.text for r in results[:-1]]
    assert results[-1].text == "" and results[-1].gate == "vad"  # gated before packing
    assert redone < len(audios) and error_rates(refs, texts).wer <= 0.1
    for i, hyp in enumerate(texts):  # nobody gets a neighbour's sentence
        assert min(range(len(refs)), key=lambda j: error_rates([refs[j]], [hyp]).wer) == i


@pytest.mark.integration
def test_timestamped_greedy_pass_matches_generate(tiny_en_teacher, speech_clips):
    from mkdeploy.audio import load_audio

    tr = WhisperTranscriber.from_pretrained(tiny_en_teacher, device="cpu")
    audios = [load_audio(p) for p, _ in speech_clips]
    ours = tr.decode_timestamped(audios, TranscriptionOptions())
    ref = tr.transcribe_arrays(audios, TranscriptionOptions(return_timestamps=True, no_speech_threshold=None))
    for segs, r in zip(ours, ref):
        assert [(s.start, s.end, s.tokens) for s in segs] == [(s.start, s.end, s.tokens) for s in r.segments]
