"""Word timestamps (mkdeploy/alignment.py): DTW and the median filter against hand-computed cases, word
grouping on a real tokenizer, and the transcriber's words on a tiny random model (their shape: every token
in one word, times ordered inside the clip). The real tiny.en and base on speech with a known pause are
in tests/test_alignment_real.py."""

import numpy as np
from transformers import AutoTokenizer

from mkdeploy.alignment import clamp_long_words, dtw, median_filter, model_alignment_heads, split_words
from mkdeploy.results import Word
from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber


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
