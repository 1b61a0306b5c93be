"""The recipe's pieces against hand-computed values: losses, layer map, heads, tokenizer pairing, config."""

import math
import os
from pathlib import Path

import pytest
import torch

from mkdeploy.distill.config import RecipeConfig
from mkdeploy.distill.losses import FitNetLoss, GeodesicLoss, InfoNCELoss, LogitKDLoss
from mkdeploy.distill.records import LabelRules
from mkdeploy.distill.tokens import force, pair_positions, prompt_ids, shared_vocab
from mkdeploy.errors import MkdError
from mkdeploy.models.heads import ProjectionHead, ProjectionHeads, TeacherIsometry, layer_map
from mkdeploy.models.student import spread_layers


def test_geodesic_loss_hand_values():
    a = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    # angles: 90° and 45° -> mean of (pi/2)^2 and (pi/4)^2
    expected = ((math.pi / 2) ** 2 + (math.pi / 4) ** 2) / 2
    assert GeodesicLoss()(a, b).item() == pytest.approx(expected, rel=1e-5)
    assert GeodesicLoss()(a, a).item() < 1e-5  # the clamp keeps it finite, near zero
    x = a.clone().requires_grad_(True)
    GeodesicLoss()(x, x.detach()).backward()
    assert torch.isfinite(x.grad).all()


def test_infonce_hand_value():
    u = torch.eye(2)
    # tau = 1: logits [[1, 0], [0, 1]]; each row's loss is -log(e / (e + 1))
    assert InfoNCELoss(tau=1.0)(u, u).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    # swapped partners: each row's loss is -log(1 / (e + 1))
    assert InfoNCELoss(tau=1.0)(u, u.flip(0)).item() == pytest.approx(math.log(1 + math.e), rel=1e-6)


def test_logit_kd_hand_value():
    zs, zt = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    tau = 2.0
    pt = torch.softmax(zt / tau, -1)[0]  # [e/(e+1), 1/(e+1)] at tau 2
    expected = tau**2 * float(pt[0] * math.log(pt[0] / 0.5) + pt[1] * math.log(pt[1] / 0.5))
    assert LogitKDLoss(tau)(zs, zt).item() == pytest.approx(expected, rel=1e-6)
    assert LogitKDLoss(tau)(zt, zt).item() == pytest.approx(0.0, abs=1e-7)


def test_fitnet_hand_values():
    a = torch.tensor([[1.0, 1.0]])
    assert FitNetLoss()(a, torch.tensor([[2.0, 2.0]])).item() == pytest.approx(0.0, abs=1e-7)  # RMS-scaled
    # unit-RMS points [1, 1] and [1, -1]: squared distance 4 over 2 dims
    assert FitNetLoss()(a, torch.tensor([[3.0, -3.0]])).item() == pytest.approx(2.0)


def test_layer_map_and_pruning_choice():
    assert layer_map(2, 6) == [(0, 2), (1, 5)]
    pairs = layer_map(4, 6)
    assert pairs[-1] == (3, 5) and all(a[1] < b[1] for a, b in zip(pairs, pairs[1:]))
    assert layer_map(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert spread_layers(6, 2) == [0, 5] and spread_layers(6, 3) == [0, 2, 5] and spread_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(MkdError):
        spread_layers(2, 3)


def test_heads_start_as_embeddings_and_teacher_map_is_isometry():
    h = torch.randn(5, 6)
    head = ProjectionHead(6, 8, rank=2)
    out = head(h)
    assert torch.allclose(out[:, :6], h) and torch.all(out[:, 6:] == 0)
    q = TeacherIsometry(8, 10, "orthogonal", seed=1)
    x = torch.randn(4, 8)
    assert torch.allclose(q(x).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    heads = ProjectionHeads(6, 8, [(1, 2)], [(0, 1), (1, 2)], rank=4)
    assert set(heads.heads) == {"enc_1", "dec_0", "dec_1"} and heads.dim == 8
    # trainable: per head down 6*4 + up 4*8 + bias 8; the isometry is frozen
    assert heads.trainable_parameters() == 3 * (6 * 4 + 4 * 8 + 8)


def test_pairing_across_tokenizers(tiny_model_dir, tiny_multilingual_teacher):
    from transformers import AutoProcessor, GenerationConfig

    s_tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    t_tok = AutoProcessor.from_pretrained(tiny_multilingual_teacher).tokenizer
    s_prompt = prompt_ids(s_tok, GenerationConfig.from_pretrained(tiny_model_dir))
    t_prompt = prompt_ids(t_tok, GenerationConfig.from_pretrained(tiny_multilingual_teacher))
    assert len(s_prompt) == 2 and len(t_prompt) == 4  # <|en|><|transcribe|> only for the multilingual one
    text = "Naïve cafés, weren't they? 1,234 résumés."
    s, t = force(s_tok, s_prompt, text), force(t_tok, t_prompt, text)
    assert s.labels[: len(s_prompt) - 1] == [-100] * (len(s_prompt) - 1)
    assert s.labels[-1] == s_tok.convert_tokens_to_ids("<|endoftext|>")
    sp, tp = pair_positions(s, t)
    # the last prompt position (nothing read) and the end of the text (predicting end-of-text) always pair
    assert (sp[0], tp[0]) == (len(s_prompt) - 1, len(t_prompt) - 1)
    assert (sp[-1], tp[-1]) == (len(s.input_ids) - 1, len(t.input_ids) - 1)
    for i, j in zip(sp, tp):
        assert s.prefix_end[i] == t.prefix_end[j]
    assert s_tok.decode(s.input_ids[len(s_prompt) :]) == t_tok.decode(t.input_ids[len(t_prompt) :]) == " " + text
    shared = shared_vocab(s_tok, t_tok)
    assert not shared.identical and 25000 < len(shared) < 51864
    for si, ti in list(zip(shared.student_ids.tolist(), shared.teacher_ids.tolist()))[::5000]:
        assert s_tok.convert_ids_to_tokens(si) == t_tok.convert_ids_to_tokens(ti)
    same = shared_vocab(s_tok, s_tok)
    assert same.identical and len(same) == len(s_tok)
    # one tokenizer: every position pairs
    a, b = pair_positions(s, s)
    assert a == b and len(a) == len([x for x in s.labels if x != -100])


def test_recipe_config_file_and_flags(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("recipe: kd\nlr: 0.0005\nmax_steps: 7\n")
    cfg = RecipeConfig.build(f, max_steps=9)
    assert (cfg.recipe, cfg.lr, cfg.max_steps) == ("kd", 0.0005, 9)
    assert not cfg.uses_heads and cfg.w_nce(3) == 0.0
    m = RecipeConfig(max_steps=11, w_nce_start=1.0, w_nce_end=0.1)
    assert m.w_nce(0) == pytest.approx(1.0) and m.w_nce(10) == pytest.approx(0.1) and m.w_nce(5) == pytest.approx(0.55)
    (tmp_path / "bad.json").write_text('{"lrr": 1}')
    with pytest.raises(MkdError, match="unknown recipe keys"):
        RecipeConfig.build(tmp_path / "bad.json")
    with pytest.raises(MkdError, match="--recipe"):
        RecipeConfig.build(recipe="magic")


def test_timestamped_sequence_and_share(tiny_model_dir):
    from transformers import AutoProcessor

    from mkdeploy.distill.records import timestamp_mode
    from mkdeploy.distill.tokens import force, force_segments

    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    nots = tok.convert_tokens_to_ids("<|notimestamps|>")
    a, b = force(tok, [sot, nots], "Hello there.").input_ids[2:], force(tok, [sot, nots], "Bye.").input_ids[2:]
    seq = force_segments(tok, [sot], [(0.0, 1.517, "Hello there."), (1.9, 45.0, "Bye.")])
    ts = {x: tok.convert_tokens_to_ids(f"<|{x}|>") for x in ("0.00", "1.52", "1.90", "30.00")}
    body = [ts["0.00"]] + a + [ts["1.52"], ts["1.90"]] + b + [ts["30.00"]]  # 20 ms grid, capped at 30 s
    assert seq.input_ids == [sot] + body
    assert seq.labels == body + [eot]  # the prompt's last token predicts the first timestamp
    assert len(seq.labels) == len(seq.input_ids) and all(e is None for e in seq.prefix_end)
    ids = [f"clip{i}" for i in range(2000)]
    share = sum(timestamp_mode(i, 0.2) for i in ids) / len(ids)
    assert 0.17 < share < 0.23 and [timestamp_mode(i, 0.2) for i in ids] == [timestamp_mode(i, 0.2) for i in ids]
    assert not any(timestamp_mode(i, 0.0) for i in ids) and all(timestamp_mode(i, 1.0) for i in ids)


def test_teacher_cache_fingerprint_is_the_same_for_relative_and_absolute_paths(
    tiny_model_dir, tiny_multilingual_teacher, tmp_path, monkeypatch
):
    """The demo passes relative paths, the ablation absolute ones: both must find the same teacher cache."""
    from transformers import AutoProcessor, GenerationConfig, WhisperForConditionalGeneration

    from mkdeploy.data import Utterance
    from mkdeploy.distill.records import TeacherNeeds
    from mkdeploy.distill.teacher_pass import TeacherPass

    s_proc = AutoProcessor.from_pretrained(tiny_model_dir)
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"")
    monkeypatch.chdir(tmp_path)

    def fingerprint(teacher_path, audio):
        teacher = WhisperForConditionalGeneration.from_pretrained(teacher_path)
        t_proc = AutoProcessor.from_pretrained(teacher_path)
        tp = TeacherPass(
            teacher, t_proc, s_proc, GenerationConfig.from_pretrained(tiny_model_dir),
            shared_vocab(s_proc.tokenizer, t_proc.tokenizer), TeacherNeeds([], [], True), tmp_path / "run", "en",
        )  # fmt: skip
        return tp.fingerprint([Utterance(id="a", audio=Path(audio), text="hello")], LabelRules(wer_threshold=0.3))

    rel = Path(os.path.relpath(tiny_multilingual_teacher, tmp_path))
    assert fingerprint(tiny_multilingual_teacher, clip) == fingerprint(rel, "a.wav")
    # a different input still changes it
    assert fingerprint(tiny_multilingual_teacher, clip) != fingerprint(tiny_model_dir, clip)


def _logits_teacher_pass(student_dir, teacher_dir, run_dir):
    """A TeacherPass caching the logits only, with the teacher and its processor."""
    from transformers import AutoProcessor, GenerationConfig, WhisperForConditionalGeneration

    from mkdeploy.distill.records import TeacherNeeds
    from mkdeploy.distill.teacher_pass import TeacherPass

    s_proc = AutoProcessor.from_pretrained(student_dir)
    teacher = WhisperForConditionalGeneration.from_pretrained(teacher_dir).eval()
    t_proc = AutoProcessor.from_pretrained(teacher_dir)
    tp = TeacherPass(
        teacher, t_proc, s_proc, GenerationConfig.from_pretrained(student_dir),
        shared_vocab(s_proc.tokenizer, t_proc.tokenizer), TeacherNeeds([], [], True), run_dir, "en",
    )  # fmt: skip
    return tp, teacher, t_proc


def test_forced_filter_reads_the_teacher_along_the_reference_without_generate(
    tiny_model_dir, tiny_multilingual_teacher, speech_manifest, tmp_path
):
    """teacher_filter="forced": no generate call; the scored text is the teacher's argmax at each reference
    position given the reference before it (checked against a full forward pass); the cached logits are
    the ones the generated filter caches; the threshold drops on that text's WER."""

    from mkdeploy.audio import load_audio
    from mkdeploy.data import load_manifest
    from mkdeploy.distill.tokens import force, prompt_ids
    from mkdeploy.evaluate import error_rates

    tp, teacher, t_proc = _logits_teacher_pass(tiny_model_dir, tiny_multilingual_teacher, tmp_path / "run")
    rows = load_manifest(speech_manifest)[:3]
    generated = tp.compute(rows, "fp", LabelRules(wer_threshold=10.0))
    real_generate = teacher.generate
    teacher.generate = lambda *a, **k: (_ for _ in ()).throw(AssertionError("generate called"))
    forced = tp.compute(rows, "fp", LabelRules(wer_threshold=10.0, teacher_filter="forced"))
    prompt = prompt_ids(t_proc.tokenizer, teacher.generation_config, "en")
    for r, (rec, payload), (_, payload_gen) in zip(rows, forced, generated):
        seq = force(t_proc.tokenizer, prompt, r.text)
        feats = t_proc.feature_extractor([load_audio(r.audio)], sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            logits = teacher(
                input_features=feats.input_features, decoder_input_ids=torch.tensor([seq.input_ids])
            ).logits
        best = [t for t in logits[0, len(prompt) - 1 : -1].argmax(-1).tolist() if t < 50257]
        expect = t_proc.tokenizer.decode(best, skip_special_tokens=True).strip()
        assert rec.filter == "forced" and rec.teacher == (expect or None) and rec.text == r.text
        assert rec.teacher_wer == pytest.approx(error_rates([r.text], [expect]).wer)
        assert torch.allclose(payload["logits"].float(), payload_gen["logits"].float(), atol=1e-2)
    wers = sorted(rec.teacher_wer for rec, _ in forced)
    cut = (wers[0] + wers[-1]) / 2 if wers[0] < wers[-1] else wers[0] - 0.01
    kept = tp.compute(rows, "fp", LabelRules(wer_threshold=cut, teacher_filter="forced"))
    assert [(rec.dropped is not None) for rec, _ in kept] == [rec.teacher_wer > cut for rec, _ in forced]
    assert all(payload is None for rec, payload in kept if rec.dropped is not None)
    teacher.generate = real_generate
    # rows without a reference still need the teacher's transcript: generate runs for them
    nolabel = [type(r)(r.id, r.audio, None) for r in rows[:1]]
    ((rec, _),) = tp.compute(nolabel, "fp", LabelRules(wer_threshold=10.0, teacher_filter="forced"))
    assert rec.filter is None and rec.text == rec.teacher


def test_avg_logprob_of_a_forced_pass_by_hand():
    """The mean log-probability over label positions only (the prompt's -100s are left out)."""
    from mkdeploy.distill.records import ForcedPass
    from mkdeploy.distill.tokens import ForcedSequence

    logits = torch.tensor([[9.0, 9.0, 9.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])
    seq = ForcedSequence(input_ids=[5, 6, 7], labels=[-100, 2, 0], prefix_end=[None, 0, 3])
    lp1 = 1.0 - math.log(2 + math.e)  # log softmax([0, 0, 1])[2]
    lp2 = 2.0 - math.log(math.exp(2) + 2)  # log softmax([2, 0, 0])[0]
    assert ForcedPass(seq, None, logits, "").avg_logprob() == pytest.approx((lp1 + lp2) / 2)


def test_pseudo_labels_are_filtered_by_the_teachers_confidence_without_a_reference(
    tiny_model_dir, tiny_multilingual_teacher, speech_manifest, tmp_path
):
    """pseudo_label="all" with min_avg_logprob: each row's record carries the teacher's mean token
    log-probability along its own transcript (equal to a full forward pass's), and exactly the rows below
    the threshold are dropped; the references are never read for the decision."""

    from mkdeploy.audio import load_audio
    from mkdeploy.data import load_manifest
    from mkdeploy.distill.tokens import force, prompt_ids

    tp, teacher, t_proc = _logits_teacher_pass(tiny_model_dir, tiny_multilingual_teacher, tmp_path / "run")
    rows = load_manifest(speech_manifest)[:4]
    scored = [rec for rec, _ in tp.compute(rows, "fp", LabelRules("all", min_avg_logprob=-1e9))]
    prompt = prompt_ids(t_proc.tokenizer, teacher.generation_config, "en")
    for r, rec in zip(rows, scored):
        assert rec.text == rec.teacher and rec.dropped is None
        seq = force(t_proc.tokenizer, prompt, rec.text)
        feats = t_proc.feature_extractor([load_audio(r.audio)], sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            logits = teacher(
                input_features=feats.input_features, decoder_input_ids=torch.tensor([seq.input_ids])
            ).logits
        logp = torch.log_softmax(logits[0], -1)
        expect = float(torch.stack([logp[p, t] for p, t in enumerate(seq.labels) if t != -100]).mean())
        assert rec.avg_logprob == pytest.approx(expect, abs=1e-3)
    lps = sorted(rec.avg_logprob for rec in scored)
    cut = (lps[0] + lps[-1]) / 2
    no_refs = [type(r)(r.id, r.audio, None) for r in rows]  # the same decision without any reference
    for batch in (rows, no_refs):
        kept = tp.compute(batch, "fp", LabelRules("all", min_avg_logprob=cut))
        assert [(rec.dropped is not None) for rec, _ in kept] == [rec.avg_logprob < cut for rec in scored]
        assert all(p is None for rec, p in kept if rec.dropped is not None)
