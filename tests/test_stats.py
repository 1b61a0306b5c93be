"""The paired bootstrap interval against cases small enough to enumerate by hand."""

import pytest

from mkdeploy.stats import gap_closed, paired_bootstrap


def test_two_clips_give_the_three_resample_outcomes_as_bounds():
    # clip 1: a makes 2 errors, b none (10 words); clip 2: both clean (10 words).
    # Resamples of two clips: (1,1) -> 4/20 = 0.2 (p 1/4), (2,2) -> 0 (p 1/4), mixed -> 2/20 = 0.1 (p 1/2).
    # The 2.5th percentile is therefore 0 and the 97.5th 0.2; the observed difference is 2/20.
    d = paired_bootstrap([2, 0], [0, 0], [10, 10], samples=20_000)
    assert d.delta == pytest.approx(0.1)
    assert d.lo == pytest.approx(0.0)
    assert d.hi == pytest.approx(0.2)
    assert d.ref_words == 20 and d.clips == 2 and not d.excludes_zero


def test_wer_is_a_ratio_of_sums_in_every_resample():
    # clip 1: a 1 error in 2 words; clip 2: b 1 error in 8 words. Observed: (1 - 1) / 10 = 0.
    # (1,1) -> 2/4 = 0.5; (2,2) -> -2/16 = -0.125; mixed -> 0/10 = 0. A mean of per-clip rates would give
    # bounds of -0.125 and 0.5 only by chance of the weights; here they are exact.
    d = paired_bootstrap([1, 0], [0, 1], [2, 8], samples=20_000)
    assert d.delta == 0.0
    assert (d.lo, d.hi) == (pytest.approx(-0.125), pytest.approx(0.5))


def test_a_consistent_gain_excludes_zero_and_the_seed_fixes_the_interval():
    a = [0] * 30 + [1] * 10
    b = [1] * 30 + [1] * 10
    words = [10] * 40
    d = paired_bootstrap(a, b, words)
    assert d.delta == pytest.approx(-30 / 400) and d.hi < 0 and d.excludes_zero
    assert paired_bootstrap(a, b, words) == d
    with pytest.raises(ValueError):
        paired_bootstrap([1], [1, 2], [3, 4])


def test_gap_closed():
    assert gap_closed(0.05, 0.10, 0.08) == pytest.approx(0.4)
    assert gap_closed(0.05, 0.10, 0.11) == pytest.approx(-0.2)
    assert gap_closed(0.10, 0.10, 0.09) is None


def test_calibration_keeps_voices_and_bands_by_measured_wer():
    """A small fixture grid. Voices are judged on the mild bands (no noise, 20-30 dB): one the teacher
    cannot transcribe goes, one the student already transcribes as well as the teacher goes, and a voice
    is not blamed for the 0-5 dB band. Bands are then judged over the kept voices only."""
    from mkdeploy.demo.calibrate import ConditionScore, calibrate

    C = ConditionScore
    cells = [
        # voice, band, clips, words, teacher errors, student errors
        C("piper/joe", "no noise", 6, 100, 2, 6),
        C("piper/joe", "20-30 dB", 6, 100, 4, 8),
        C("piper/joe", "0-5 dB", 6, 100, 30, 60),  # not judged for the voice
        C("flite/kal16", "no noise", 6, 100, 6, 9),
        C("flite/kal16", "20-30 dB", 6, 100, 6, 11),  # pooled: teacher 6%, student 10%
        C("flite/kal16", "0-5 dB", 6, 100, 20, 40),
        C("festival/slt", "no noise", 6, 100, 40, 60),  # teacher 40%: no target
        C("festival/slt", "20-30 dB", 6, 100, 50, 70),
        C("flite/awb", "no noise", 6, 100, 4, 5),  # student 1.25x: nothing to close
        C("flite/awb", "20-30 dB", 6, 100, 4, 5),
    ]
    cal = calibrate(cells, max_teacher_wer=0.08, min_ratio=1.3)
    voices = {d.name: d for d in cal.voices}
    assert cal.kept_voices == ["flite/kal16", "piper/joe"]
    assert voices["piper/joe"].clips == 12 and voices["piper/joe"].teacher_wer == 0.03
    assert voices["festival/slt"].reason.startswith("teacher WER 45.0%")
    assert voices["flite/awb"].reason.startswith("student 5.0% < 1.3 x teacher 4.0%")
    assert (voices["flite/kal16"].teacher_wer, voices["flite/kal16"].student_wer) == (0.06, 0.10)
    bands = {d.name: d for d in cal.bands}
    assert bands["0-5 dB"].clips == 12 and bands["0-5 dB"].reason == "teacher WER 25.0% > 8%"
    assert cal.kept_bands == ["20-30 dB", "no noise"]  # no noise: 8/200 = 4%, 15/200 = 7.5%: 1.9x
    assert bands["20-30 dB"].teacher_wer == 0.05


def test_cells_sum_per_clip_errors_by_voice_and_band():
    from mkdeploy.demo.calibrate import cells_from_errors

    rows = [{"voice": "a", "band": "x"}, {"voice": "a", "band": "x"}, {"voice": "b", "band": "x"}]
    cells = {(c.voice, c.band): c for c in cells_from_errors(rows, [10, 5, 7], [1, 0, 2], [3, 1, 2])}
    assert (cells["a", "x"].clips, cells["a", "x"].ref_words, cells["a", "x"].teacher_errors) == (2, 15, 1)
    assert cells["a", "x"].student_errors == 4 and cells["b", "x"].student_wer == 2 / 7
