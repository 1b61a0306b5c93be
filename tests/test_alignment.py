"""Word timestamps (mkdeploy/transcription/alignment.py): DTW and the median filter against hand-computed cases, word
grouping on a real tokenizer, and the transcriber's words on a tiny random model (their shape: every token
in one word, times ordered inside the clip). The real tiny.en and base on speech with a known pause are
in tests/test_alignment_real.py."""

import numpy as np
from transformers import AutoTokenizer

from mkdeploy.evaluate import utterance_onset_errors
from mkdeploy.results import Word
from mkdeploy.transcription.alignment import (
    clamp_long_words,
    dtw,
    median_filter,
    model_alignment_heads,
    pause_frames,
    snap_to_speech,
    split_words,
)
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber


def test_dtw_follows_the_cheap_diagonal_and_breaks_ties_as_openai_whisper():
    # 2 tokens x 4 frames: token 0 is cheap on frames 0-1, token 1 on frames 2-3
    cost = np.array([[0.0, 0.0, 5.0, 5.0], [5.0, 5.0, 0.0, 0.0]])
    rows, cols = dtw(cost)
    assert rows.tolist() == [0, 0, 1, 1] and cols.tolist() == [0, 1, 2, 3]
    # all equal: traced back from the last cell, the diagonal wins ties, so the extra frame goes to token 0
    rows, cols = dtw(np.zeros((2, 3)))
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (0, 1), (1, 2)]


def test_median_filter_by_hand():
    x = np.array([[1.0, 9.0, 2.0, 3.0, 8.0]])
    # width 3, reflected edges: [9,1,9] [1,9,2] [9,2,3] [2,3,8] [3,8,3]
    assert median_filter(x, 3).tolist() == [[9.0, 2.0, 3.0, 3.0, 3.0]]
    assert median_filter(x, 7).tolist() == x.tolist()  # shorter than the filter: unchanged


def test_words_start_at_spaces_and_keep_punctuation(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok.encode(" Hello, world. It's fine!", add_special_tokens=False)
    words = split_words(tok, ids)
    assert [tok.decode(w) for w in words] == [" Hello,", " world.", " It's", " fine!"]
    assert sum(map(len, words)) == len(ids)


def test_long_words_are_clamped_at_sentence_edges():
    ws = [Word(" a", 0.0, 2.0, 1.0), Word(" b", 2.0, 2.3, 1.0), Word(" c.", 2.3, 5.0, 1.0), Word(" d", 5.0, 5.3, 1.0)]
    out = clamp_long_words(ws)  # median of 2.0, 0.3, 2.7, 0.3 is 1.15, capped at 0.7: max 1.4 s
    assert [(w.start, w.end) for w in out] == [(0.6, 2.0), (2.0, 2.3), (2.3, 3.7), (5.0, 5.3)]


def test_transcriber_words_cover_the_tokens(tiny_model_dir):
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")
    rng = np.random.default_rng(7)
    audios = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (3, 2)]
    opts = TranscriptionOptions(
        return_timestamps=False, max_new_tokens=10, word_timestamps=True, no_speech_threshold=None
    )
    plain = tr.transcribe_arrays(audios, TranscriptionOptions(**{**opts.__dict__, "word_timestamps": False}))
    res = tr.transcribe_arrays(audios, opts)
    assert [r.tokens for r in res] == [r.tokens for r in plain]  # alignment does not change the decode
    tok = tr.processor.tokenizer
    for audio, r in zip(audios, res):
        assert r.tokens and r.words
        assert "".join(w.word for w in r.words) == tok.decode(r.tokens)
        times = [t for w in r.words for t in (w.start, w.end)]
        assert times == sorted(times)  # each word inside its neighbours
        assert 0.0 <= r.words[0].start and r.words[-1].end <= len(audio) / 16000 + 0.02
        assert all(0.0 <= w.probability <= 1.0 for w in r.words)
    assert plain[0].words == []


def test_alignment_heads_out_of_range_are_not_used(tiny_model_dir):
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, device="cpu")
    gen = tr.model.generation_config
    saved = getattr(gen, "alignment_heads", None)
    try:
        gen.alignment_heads = [[0, 0], [99, 0]]  # a pruned student's inherited list
        assert model_alignment_heads(tr.model) is None
        gen.alignment_heads = [[0, 1]]
        assert model_alignment_heads(tr.model) == [[0, 1]]
    finally:
        gen.alignment_heads = saved


def test_pruning_keeps_the_alignment_heads_of_kept_layers(tiny_multilingual_teacher, tmp_path):
    import json
    import shutil

    from mkdeploy.models.student import init_pruned_student

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_multilingual_teacher, teacher)
    gen = json.loads((teacher / "generation_config.json").read_text())
    gen["alignment_heads"] = [[0, 1], [1, 0], [2, 1]]
    (teacher / "generation_config.json").write_text(json.dumps(gen))
    student = init_pruned_student(teacher, tmp_path / "pruned", decoder_layers=2)  # keeps layers 0 and 2
    assert json.loads((student / "generation_config.json").read_text())["alignment_heads"] == [[0, 1], [1, 1]]


def _bursts(spans, seconds=6.0, noise_db=-50.0):
    """Noise at ``noise_db`` with loud tones over ``spans`` (seconds): speech where the tones are."""
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 10 ** (noise_db / 20), int(seconds * 16000)).astype(np.float32)
    t = np.arange(len(audio)) / 16000
    for a, b in spans:
        m = (t >= a) & (t < b)
        audio[m] += 0.3 * np.sin(2 * np.pi * 220 * t[m]).astype(np.float32)
    return audio


def test_pauses_are_the_long_quiet_runs_only():
    pause = pause_frames(_bursts([(0.5, 2.0), (2.1, 3.0), (4.0, 5.5)]))
    fps = 50
    assert pause[: int(0.5 * fps)].all() and pause[int(3.0 * fps) : int(4.0 * fps)].all()
    assert not pause[int(2.0 * fps) : int(2.1 * fps)].any()  # 0.1 s gap: a stop closure, not a pause
    assert not pause[int(0.6 * fps) : int(1.9 * fps)].any()
    assert not pause_frames(_bursts([(0.0, 6.0)])).any()  # speech throughout: no contrast, no pause


def test_word_edges_in_a_pause_move_to_the_speech():
    audio = _bursts([(0.5, 2.0), (4.0, 5.5)])
    words = [
        Word(" early", 3.6, 4.5, 1.0),  # starts 0.4 s into the pause before its speech
        Word(" late", 4.6, 5.0, 1.0),  # inside speech: unchanged
        Word(" tail", 5.2, 5.9, 1.0),  # runs 0.4 s into the pause after the speech
        Word(" lost", 3.1, 3.5, 1.0),  # wholly in a pause: nothing says where it belongs
    ]
    snap_to_speech(words, audio)
    assert abs(words[0].start - 4.0) <= 0.04 and words[0].end == 4.5
    assert (words[1].start, words[1].end) == (4.6, 5.0)
    assert words[2].start == 5.2 and abs(words[2].end - 5.5) <= 0.04
    assert (words[3].start, words[3].end) == (3.1, 3.5)
    # placed late: the speech since the pause is uncovered, so the word starts where it does
    late = snap_to_speech([Word(" one", 0.3, 1.0, 1.0), Word(" two", 4.25, 5.0, 1.0)], audio)
    assert abs(late[1].start - 4.0) <= 0.04
    # ... unless an earlier word covers it, or more of it than MAX_BACKFILL_S lies before the word
    covered = snap_to_speech([Word(" one", 3.9, 4.2, 1.0), Word(" two", 4.25, 5.0, 1.0)], audio)
    assert covered[1].start == 4.25
    far = snap_to_speech([Word(" one", 0.6, 1.0, 1.0), Word(" two", 4.7, 5.0, 1.0)], audio)
    assert far[1].start == 4.7
    # a window of a long file: the same audio 60 s in, times shifted alike
    shifted = snap_to_speech([Word(" early", 63.6, 64.5, 1.0)], audio, offset=60.0)
    assert abs(shifted[0].start - 64.0) <= 0.04


def test_onset_errors_follow_the_word_alignment():
    class W:
        def __init__(self, word, start):
            self.word, self.start = word, start

    words = [W(" The", 0.4), W(" cat.", 0.7), W(" A", 2.1), W(" dog!", 2.3)]
    # "big" is heard as "A" (a substitution still marks where the utterance starts)
    assert utterance_onset_errors(["The cat", "big dog"], [0.5, 2.0], words) == [-0.1, 0.1]
    # "big" unheard: the utterance's next heard word marks it; an utterance nobody heard is None
    assert utterance_onset_errors(["the cat", "big dog", "more words"], [0.5, 2.0, 4.0], words[:2] + words[3:]) == [
        -0.1,
        0.3,
        None,
    ]
