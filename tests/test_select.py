"""Choosing what merge ships (dev selection, step 0 included, weight-space scale) and the retention loss."""

import json
import math

import pytest
import torch

from mkdeploy.distill.checkpoints import latest_checkpoint
from mkdeploy.distill.config import RecipeConfig
from mkdeploy.distill.losses import RetentionLoss
from mkdeploy.distill.merge import merge_run
from mkdeploy.distill.select import Candidate, Selection, best, interpolate_state, selectable, set_lora_scale
from mkdeploy.distill.trainer import TrainArgs, train
from mkdeploy.errors import MkdError


def test_retention_loss_matches_hand_computed_kl():
    # start p0 = [1/2, 1/2]; student p = [1/4, 3/4]: KL(p0 || p) = 1/2 ln 2 + 1/2 ln(2/3)
    start = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[0.0, math.log(3.0)]])
    assert RetentionLoss()(student, start).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-6)
    assert RetentionLoss()(start, start).item() == pytest.approx(0.0, abs=1e-7)
    # mean over positions: a second, identical row halves nothing
    two = RetentionLoss()(student.repeat(2, 1), start.repeat(2, 1)).item()
    assert two == pytest.approx(0.14384, abs=1e-4)


def test_best_takes_lowest_wer_and_ties_go_to_the_smaller_change():
    c = [
        Candidate(0, 0.0, 0.10),
        Candidate(15, 1.0, 0.08, "step-000015"),
        Candidate(30, 1.0, 0.09, "step-000030"),
        Candidate(15, 0.5, 0.08, "step-000015"),
    ]
    assert best(c) == Candidate(15, 0.5, 0.08, "step-000015")  # tie at 8%: half the change wins
    assert best([Candidate(0, 0.0, 0.10), Candidate(30, 1.0, 0.10, "step-000030")]).step == 0
    assert best([Candidate(0, 0.0, 0.10), Candidate(30, 1.0, 0.12, "step-000030")]).step == 0
    with pytest.raises(ValueError):
        best([])
    sel = Selection(best(c[:1]), c[:1], "dev.jsonl", 10)
    assert not sel.training_helped and "did not help" in sel.reason()


def test_interpolate_state_is_linear():
    a, b = {"w": torch.zeros(3), "n": torch.tensor([1])}, {"w": torch.tensor([2.0, 4.0, -2.0]), "n": torch.tensor([5])}
    out = interpolate_state(a, b, 0.25)
    assert torch.allclose(out["w"], torch.tensor([0.5, 1.0, -0.5])) and out["n"].item() == 5


def test_config_rejects_bad_alphas_and_weights():
    with pytest.raises(MkdError, match="select_alphas"):
        RecipeConfig(select_alphas=[0.0, 0.5]).validate()
    with pytest.raises(MkdError, match="w_retain"):
        RecipeConfig(w_retain=-1.0).validate()


def test_lora_scale_moves_merged_weights_linearly(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    def model(alpha):
        base = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir)
        w0 = base.model.decoder.layers[0].fc1.weight.detach().clone()
        peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["fc1"], init_lora_weights=False))
        torch.manual_seed(0)
        for n, p in peft.named_parameters():
            if "lora_" in n:
                p.data = torch.randn_like(p) * 0.1
        assert set_lora_scale(peft, alpha) > 0
        return w0, peft.merge_and_unload().model.decoder.layers[0].fc1.weight.detach()

    w0, full = model(1.0)
    _, half = model(0.5)
    _, none = model(0.0)
    assert torch.allclose(none, w0)
    assert torch.allclose(half - w0, 0.5 * (full - w0), atol=1e-6)
    assert not torch.allclose(full, w0)


def _dev_wer(model_dir, manifest) -> float:
    from mkdeploy.evaluate import evaluate_manifest
    from mkdeploy.transcription.runtime import TranscriptionOptions

    rates, _, _ = evaluate_manifest(
        model_dir,
        manifest,
        backend="torch",
        device="cpu",
        options=TranscriptionOptions(return_timestamps=False, max_new_tokens=8),
    )
    return rates.wer


def test_a_run_never_ships_worse_than_it_started(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path):
    """A run made to go wrong (lr 0.05): dev is scored at step 0, every 2 steps and at scales of the best
    checkpoint; merge ships the best candidate, whose dev WER is reproduced by the merged model itself."""
    run = tmp_path / "run"
    logs = []
    cfg = RecipeConfig(
        batch_size=2,
        save_every=2,
        eval_every=2,
        max_steps=4,
        warmup_steps=1,
        max_trainable=0.05,
        eval_max_new_tokens=8,
        lr=0.05,
        select_alphas=[0.5],
    ).validate()
    summary = train(
        TrainArgs(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, run, cfg, eval_manifest=speech_manifest),
        log=logs.append,
    )
    sel = Selection.load(run)
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [(e["step"], e["alpha"]) for e in evals][:3] == [(0, 1.0), (2, 1.0), (4, 1.0)]
    assert len(sel.candidates) == len(evals) == 4  # step 0, 2, 4 and the best checkpoint at 0.5
    start = next(c for c in sel.candidates if c.step == 0)
    # the rule ships a candidate no worse on dev than the untrained start and no better than the best one
    assert sel.chosen in sel.candidates
    assert min(c.wer for c in sel.candidates) <= sel.chosen.wer <= start.wer
    n_dev = len(speech_manifest.read_text().splitlines())
    assert all(len(c.errors) == n_dev for c in sel.candidates)  # per-clip errors for the bootstrap
    assert summary["selected"]["step"] == sel.chosen.step
    # the best checkpoint survives pruning of old checkpoints
    for c in sel.candidates:
        if c.step:
            assert (run / "checkpoints" / c.checkpoint / "state.json").exists() or c.checkpoint != sel.chosen.checkpoint
    res = merge_run(run, tmp_path / "merged")
    assert res.alpha == sel.chosen.alpha and res.step == sel.chosen.step
    meta = json.loads((tmp_path / "merged" / "config.json").read_text())["mkdeploy_distilled"]
    assert meta["selected"]["wer"] == sel.chosen.wer and meta["reason"] == sel.reason()
    assert _dev_wer(tmp_path / "merged", speech_manifest) == pytest.approx(sel.chosen.wer)
    assert (res.checkpoint is None) == bool(res.warnings)


def test_merge_of_a_run_where_training_did_not_help_writes_the_start_and_warns(
    tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path
):
    run = tmp_path / "run"
    cfg = RecipeConfig(
        batch_size=2,
        save_every=2,
        eval_every=0,
        max_steps=2,
        warmup_steps=1,
        max_trainable=0.05,
        eval_max_new_tokens=8,
        select_alphas=[],
    ).validate()
    train(
        TrainArgs(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, run, cfg, eval_manifest=speech_manifest)
    )
    # make the trained checkpoint lose on dev, as a collapsed run does
    sel = Selection.load(run)
    start = next(c for c in sel.candidates if c.step == 0)
    worse = [Candidate(c.step, c.alpha, 1.5, c.checkpoint) if c.step else c for c in sel.candidates]
    Selection(best(worse), worse, sel.dev_manifest, sel.dev_clips).save(run)
    res = merge_run(run, tmp_path / "merged")
    assert res.checkpoint is None and res.step == 0 and res.alpha == 0.0
    assert res.warnings and "did not help" in res.warnings[0]
    from transformers import WhisperForConditionalGeneration

    a = WhisperForConditionalGeneration.from_pretrained(tmp_path / "merged").state_dict()
    b = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert _dev_wer(tmp_path / "merged", speech_manifest) == pytest.approx(start.wer)
    # an explicit checkpoint still merges that checkpoint, at a given scale
    res = merge_run(run, tmp_path / "m2", checkpoint=latest_checkpoint(run), alpha=0.5)
    assert res.step == 2 and res.alpha == 0.5 and not res.warnings
    with pytest.raises(MkdError, match="--alpha needs --checkpoint"):
        merge_run(run, tmp_path / "m3", alpha=0.5)


def test_bootstrap_keeps_the_start_unless_the_gain_is_not_chance():
    from mkdeploy.distill.select import choose, improvement_probability

    start_err = [2] * 40
    clear = [1] * 40  # one error fewer on every clip: better on every resample
    lucky = [2] * 39 + [0]  # better on one clip only: better on ~63% of resamples (the clip is drawn)
    assert improvement_probability(start_err, clear) == 1.0
    assert improvement_probability(start_err, start_err) == 0.0
    p = improvement_probability(start_err, lucky, samples=4000)
    assert 0.55 < p < 0.70  # 1 - (1 - 1/40)^40 = 0.637
    words = 10 * 40
    start = Candidate(0, 0.0, sum(start_err) / words, "", start_err)
    cand_lucky = Candidate(15, 0.75, sum(lucky) / words, "step-000015", lucky)
    cand_clear = Candidate(30, 1.0, sum(clear) / words, "step-000030", clear)
    assert choose([start, cand_lucky], confidence=0.9) == start  # lower dev WER, but chance
    assert choose([start, cand_lucky], confidence=0.0) == cand_lucky  # no test: the lowest WER
    assert choose([start, cand_lucky, cand_clear], confidence=0.9) == cand_clear
    sel = Selection(start, [start, cand_lucky], "dev.jsonl", 40, 0.9)
    assert not sel.training_helped and "bootstrap confidence" in sel.reason()
    with pytest.raises(MkdError, match="select_confidence"):
        RecipeConfig(select_confidence=1.0).validate()


#: word errors per dev clip of the demo's run at 192 clips (work/demo/run/eval.jsonl): step 0, 20, 40, 60,
#: and step 60 at half its change
_DEMO_DEV = {
    (0, 0.0): [0, 0, 3, 6, 5, 2, 4, 3, 0, 1, 6, 1, 4, 3, 2, 5, 4, 0, 1, 3, 3, 4, 0, 1, 0, 2, 1, 0, 0, 13, 2, 19],
    (20, 1.0): [0, 0, 3, 6, 5, 2, 4, 3, 0, 1, 6, 1, 4, 3, 2, 5, 4, 0, 1, 3, 3, 1, 0, 1, 0, 2, 1, 0, 0, 11, 0, 21],
    (40, 1.0): [0, 0, 3, 6, 5, 2, 4, 3, 0, 1, 6, 1, 4, 3, 2, 5, 4, 0, 1, 3, 3, 4, 0, 1, 0, 2, 1, 0, 0, 8, 0, 19],
    (60, 1.0): [0, 0, 3, 6, 5, 2, 4, 3, 0, 1, 6, 1, 4, 3, 2, 5, 4, 0, 1, 3, 3, 4, 0, 1, 0, 2, 1, 0, 0, 8, 0, 16],
    (60, 0.5): [0, 0, 3, 6, 5, 2, 4, 3, 0, 1, 6, 1, 4, 3, 2, 5, 4, 0, 1, 3, 3, 4, 0, 1, 0, 2, 1, 0, 0, 11, 2, 19],
}


def test_one_standard_error_rule_ships_the_least_change_dev_cannot_tell_from_the_best():
    from mkdeploy.distill.select import choose, paired_standard_error

    words = 456  # 98 errors = 21.49%
    cands = [
        Candidate(step, alpha, sum(e) / words, f"step-{step:06d}" if step else "", e)
        for (step, alpha), e in _DEMO_DEV.items()
    ]
    start, s20, s40, s60, s60_half = cands
    assert sum(start.errors) == 98 and round(100 * s60.wer, 2) == 19.30
    # the paired standard errors against step 60, by hand: step 20 differs on clips 21 (-3), 29 (+3),
    # 30 (+0) and 31 (+5) -> diff +5; step 40 on clip 31 only (+3)
    assert paired_standard_error(s60.errors, s20.errors) == pytest.approx(6.5, abs=0.3)
    # one clip with +3 drawn Binomial(32, 1/32) times: sd 3 * sqrt(32 * 1/32 * 31/32) = 2.95
    assert paired_standard_error(s60.errors, s40.errors) == pytest.approx(2.95, abs=0.15)
    assert choose(cands, 0.9, within_se=0.0) == s60  # lowest dev WER, 95.75% bootstrap confidence
    # within one SE: step 20 (+5 <= 6.5) and step 40 (+3 <= 2.95 fails narrowly or holds: either way step 20
    # moves least); step 60 at alpha 0.5 (movement 30) is +8 with SE 4.4: out
    assert choose(cands, 0.9, within_se=1.0) == s20
    assert choose(cands, 0.9, within_se=0.5) == s60  # +5 > 0.5 x 6.5, and step 40's +3 > 1.5
    # a candidate no better than the start on dev is never shipped by the rule
    worse = Candidate(10, 1.0, start.wer + 0.01, "step-000010", [e + 1 for e in start.errors[:1]] + start.errors[1:])
    assert choose([*cands, worse], 0.9, within_se=10.0) == s20
    sel = Selection(s20, cands, "dev.jsonl", 32, 0.9, 1.0)
    assert "least change within 1 standard error of the lowest (step-000060" in sel.reason()


def test_checkpoints_the_rule_may_still_ship_are_kept():
    """The ablation's ce seed-0 run: the least-change rule chose step 20 while step 40 was the lowest; only
    the lowest had been kept, and merge failed. Every trained checkpoint below the start is selectable."""
    start = Candidate(0, 0.0, 0.5104, "", [])
    s20, s40 = Candidate(20, 1.0, 0.1240, "step-000020"), Candidate(40, 1.0, 0.1201, "step-000040")
    s60, s80 = Candidate(60, 1.0, 0.1266, "step-000060"), Candidate(80, 1.0, 0.1345, "step-000080")
    worse = Candidate(100, 1.0, 0.60, "step-000100")
    half = Candidate(40, 0.5, 0.11, "step-000040")  # an interpolation point is no checkpoint of its own
    cands = [start, s20, s40, s60, s80, worse, half]
    assert selectable(cands, within_se=1.0) == {"step-000020", "step-000040", "step-000060", "step-000080"}
    assert selectable(cands, within_se=0.0) == {"step-000040"}  # lowest dev WER only: choose() ships no other
    assert selectable([start], within_se=1.0) == set()
