"""`mkd train` / `mkd merge` / `mkd student init` end to end on tiny random models.

Teacher: random d_model 96 with base's multilingual tokenizer; student: random d_model 64 with tiny.en's
English-only tokenizer (the demo's pairing, small). Speech: the Piper clips with their references.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mkdeploy.cli.main import app
from mkdeploy.distill.checkpoints import latest_checkpoint
from mkdeploy.distill.config import RecipeConfig
from mkdeploy.distill.merge import merge_run
from mkdeploy.distill.trainer import TrainArgs, train
from mkdeploy.errors import MkdError, OutputExistsError

FAST = dict(batch_size=2, save_every=2, eval_every=0, warmup_steps=1, max_trainable=0.05, eval_max_new_tokens=8)


def _args(teacher, student, manifest, out, **kw):
    cfg = RecipeConfig(**{**FAST, **kw.pop("cfg", {})}).validate()
    return TrainArgs(teacher, student, manifest, out, cfg, **kw)


def test_manifold_run_writes_metrics_checkpoints_and_counts(
    tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path
):
    run = tmp_path / "run"
    logs = []
    summary = train(
        _args(
            tiny_multilingual_teacher,
            tiny_model_dir,
            speech_manifest,
            run,
            cfg={"max_steps": 3, "encoder_lora_layers": 2},
            eval_manifest=speech_manifest,
        ),
        log=logs.append,
    )
    assert summary["step"] == 3 and not summary["interrupted"]
    assert summary["wer_before"] is not None and summary["wer_after"] is not None
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"ce", "kd", "geo", "nce", "lr", "samples_per_s", "w_nce"} <= set(r)
        assert all(torch.isfinite(torch.tensor(r[k])) for k in ("ce", "kd", "geo", "nce"))
    assert rows[0]["w_nce"] > rows[-1]["w_nce"]
    info = json.loads((run / "run.json").read_text())
    p = info["parameters"]
    assert 0 < p["heads"] < p["trainable"]  # the heads and the LoRA adapters both train
    assert p["trainable_ratio"] == pytest.approx(p["trainable"] / p["teacher"]) and p["trainable_ratio"] < 0.05
    assert info["decoder_pairs"] == [[0, 1], [1, 2]]  # 2 student layers onto 3 teacher layers, last with last
    assert info["encoder_pairs"] == [[0, 1], [1, 2]]  # both student encoder layers carry LoRA (top 2)
    assert 0.5 < info["data"]["paired_share"] <= 1.0
    assert any("% of the teacher" in line for line in logs)
    ck = latest_checkpoint(run)
    assert ck.name == "step-000003" and (ck / "adapter" / "adapter_config.json").exists()
    assert {"heads.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"} <= {
        f.name for f in ck.iterdir()
    }
    assert len(list((run / "checkpoints").glob("step-*"))) <= 2

    # merge: a plain Whisper directory, logits equal to the adapter model's, heads gone
    from transformers import WhisperForConditionalGeneration

    res = merge_run(run, tmp_path / "merged", checkpoint=latest_checkpoint(run))  # dev selection: tests/test_select.py
    assert res.max_abs_logit_diff <= 1e-4 and res.step == 3
    merged = WhisperForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (tmp_path / "merged" / "preprocessor_config.json").exists()
    with pytest.raises(OutputExistsError):
        merge_run(run, tmp_path / "merged", checkpoint=latest_checkpoint(run))

    # a run directory is never clobbered without --resume or --force
    with pytest.raises(OutputExistsError, match="--resume"):
        train(_args(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, run, cfg={"max_steps": 3}))


@pytest.mark.parametrize("recipe", ["ce", "kd", "fitnet"])
def test_baseline_recipes_run(recipe, tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path):
    run = tmp_path / recipe
    train(
        _args(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, run, cfg={"max_steps": 1, "recipe": recipe})
    )
    r = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert ("kd" in r) == (recipe != "ce") and ("geo" in r) == (recipe == "fitnet") and "nce" not in r
    heads = json.loads((run / "run.json").read_text())["parameters"]["heads"]
    assert (heads > 0) == (recipe == "fitnet")


def test_trainable_guard_refuses(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path):
    with pytest.raises(MkdError, match="--max-trainable"):
        train(
            _args(
                tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path / "r", cfg={"max_trainable": 0.001}
            )
        )


def test_nan_weights_are_refused_at_merge(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path):
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    train(_args(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, run, cfg={"max_steps": 2, "recipe": "ce"}))
    f = latest_checkpoint(run) / "adapter" / "adapter_model.safetensors"
    w = load_file(f)
    k = next(iter(w))
    w[k][0, 0] = float("nan")
    save_file(w, f)
    with pytest.raises(MkdError, match="NaN or inf"):
        merge_run(run, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_pruned_student_full_decoder(tiny_multilingual_teacher, speech_manifest, tmp_path):
    runner = CliRunner()
    student = tmp_path / "pruned"
    r = runner.invoke(
        app, ["student", "init", str(student), "--teacher", str(tiny_multilingual_teacher), "--decoder-layers", "2"]
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads((student / "config.json").read_text())
    assert cfg["decoder_layers"] == 2 and cfg["mkdeploy_pruned_from"]["decoder_layers"] == [0, 2]
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "train",
            "--teacher",
            str(tiny_multilingual_teacher),
            "--student",
            str(student),
            "--train",
            str(speech_manifest),
            "--output",
            str(run),
            "--train-mode",
            "full-decoder",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--eval-every",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    info = json.loads((run / "run.json").read_text())
    assert info["pruned_student"] and info["encoder_pairs"] == []  # the copied encoder is frozen: not aligned
    assert (latest_checkpoint(run) / "decoder.safetensors").exists()
    r = runner.invoke(app, ["merge", str(run), str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    # LoRA on a pruned student is allowed but warned about
    r = runner.invoke(
        app,
        [
            "train",
            "--teacher",
            str(tiny_multilingual_teacher),
            "--student",
            str(student),
            "--train",
            str(speech_manifest),
            "--output",
            str(tmp_path / "run2"),
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--eval-every",
            "0",
            "--max-trainable",
            "0.5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "pruned student" in r.output


def test_cli_errors(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "train",
            "--teacher",
            str(tmp_path / "nope"),
            "--student",
            str(tiny_model_dir),
            "--train",
            str(speech_manifest),
            "--output",
            str(tmp_path / "r"),
        ],
    )
    assert r.exit_code == 2 and "no such teacher directory" in r.output
    r = runner.invoke(
        app,
        [
            "train",
            "--teacher",
            str(tiny_multilingual_teacher),
            "--student",
            str(tiny_model_dir),
            "--train",
            str(tmp_path / "none.jsonl"),
            "--output",
            str(tmp_path / "r"),
        ],
    )
    assert r.exit_code == 2 and "no such manifest" in r.output
    r = runner.invoke(app, ["merge", str(tmp_path), str(tmp_path / "m")])
    assert r.exit_code == 2 and "not a training run" in r.output
    r = runner.invoke(
        app,
        [
            "train",
            "--teacher",
            str(tiny_multilingual_teacher),
            "--student",
            str(tiny_model_dir),
            "--train",
            str(speech_manifest),
            "--output",
            str(tmp_path / "r"),
            "--recipe",
            "magic",
        ],
    )
    assert r.exit_code == 2 and "--recipe" in r.output


def _cmd(teacher, student, manifest, run, steps):
    return [
        sys.executable,
        "-m",
        "mkdeploy.cli.main",
        "train",
        "--teacher",
        str(teacher),
        "--student",
        str(student),
        "--train",
        str(manifest),
        "--output",
        str(run),
        "--max-steps",
        str(steps),
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--eval-every",
        "0",
        "--max-trainable",
        "0.05",
    ]


@pytest.mark.integration  # a real `mkd train` process killed and restarted (~1 min)
def test_kill_9_then_resume_finishes_at_the_requested_step(
    tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path
):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _cmd(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, run, 400),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if latest_checkpoint(run) is not None and metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ck = latest_checkpoint(run)
    assert ck is not None, proc.stdout.read().decode()[-2000:]
    saved = json.loads((ck / "state.json").read_text())["step"]
    assert saved >= 2
    target = saved + 3
    r = subprocess.run(
        _cmd(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, run, target) + ["--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"resumed from {ck}" in r.stdout + r.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == target and not summary["interrupted"]
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps[-1] == target and steps[-3:] == [saved + 1, saved + 2, saved + 3]
    assert latest_checkpoint(run).name == f"step-{target:06d}"


@pytest.mark.integration  # two torchrun ranks
def test_two_processes_hold_identical_weights(tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path):
    """torchrun with 2 CPU processes (gloo): after the steps both ranks hold the same weights."""
    run = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mkdeploy.cli.main",
        "train",
        "--teacher",
        str(tiny_multilingual_teacher),
        "--student",
        str(tiny_model_dir),
        "--train",
        str(speech_manifest),
        "--output",
        str(run),
        "--max-steps",
        "2",
        "--batch-size",
        "1",
        "--eval-every",
        "0",
        "--max-trainable",
        "0.05",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [json.loads((run / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["bytes_sha1"] == ranks[1]["bytes_sha1"] and ranks[0]["step"] == 2
    assert json.loads((run / "run.json").read_text())["world_size"] == 2


def test_timestamp_mode_clips_train_with_cross_entropy_only(
    tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path
):
    """Every clip timed: no decoder position pairs, KD is zero, the loss is finite and the adapters move."""
    run = tmp_path / "ts"
    logs = []
    train(
        _args(
            tiny_multilingual_teacher,
            tiny_model_dir,
            speech_manifest,
            run,
            cfg={"max_steps": 2, "timestamp_prob": 1.0, "encoder_lora_layers": 2},
        ),
        log=logs.append,
    )
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["timestamped"] == info["data"]["kept"] > 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["kd"] == 0.0 and r["ce"] > 0 and r["geo"] > 0 for r in rows)  # encoder alignment still runs
    assert any("taught in timestamp mode" in line for line in logs)
    labels = [json.loads(x) for x in (run / "data" / "labels.jsonl").read_text().splitlines()]
    timed = [r for r in labels if "segments" in r]  # the teacher's own segments, generated once
    assert timed and all(0.0 <= g[0] <= g[1] <= 30.0 and g[2] for r in timed for g in r["segments"])
    with pytest.raises(MkdError, match="timestamp_prob"):
        RecipeConfig(timestamp_prob=2.0).validate()


def test_frozen_encoder_states_are_cached_and_give_the_same_losses(
    tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path
):
    """Without encoder LoRA the student's encoder states are computed once per clip; the losses from the
    cached states equal those from the features, and the cache is not used when the encoder trains."""
    from mkdeploy.distill.trainer import Trainer

    args = _args(
        tiny_multilingual_teacher,
        tiny_model_dir,
        speech_manifest,
        tmp_path / "frozen",
        cfg={"max_steps": 1, "lora_dropout": 0.0},
    )
    s = Trainer(args, log=lambda _: None).state
    assert s.frozen_encoder and not s.objective.enc_pairs and s.objective.dec_pairs
    s.module.eval()
    idx = [0, 1]
    cached = s.sampler.make(idx)
    memo = s.sampler.encoder_states
    assert cached.encoded is not None and cached.features is None and set(memo.states) == set(idx)
    first = memo.states[0]
    s.sampler.make([1, 0])
    assert memo.states[0] is first  # computed once
    s.sampler.encoder_states = None
    fresh = s.sampler.make(idx)
    assert fresh.encoded is None and fresh.features is not None
    inner = s.module  # one process: the accelerator leaves it unwrapped
    torch.manual_seed(0)
    a = s.objective.compute(s.module, inner, cached, "cpu")
    torch.manual_seed(0)
    b = s.objective.compute(s.module, inner, fresh, "cpu")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k

    trains = Trainer(
        _args(
            tiny_multilingual_teacher, tiny_model_dir, speech_manifest, tmp_path / "enc", cfg={"encoder_lora_layers": 1}
        ),
        lambda _: None,
    ).state
    assert not trains.frozen_encoder  # encoder LoRA trains the encoder: nothing to cache
