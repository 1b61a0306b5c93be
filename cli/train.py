"""`mkd train`: distil a teacher into a student with the projection-mapping LoRA recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mkdeploy.cli.common import cli_errors, console, out, progress, quiet_libraries


def train_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher HF Whisper directory (e.g. the imported base)."),
    student: Path = typer.Option(..., "--student", help="Student HF Whisper directory (pre-trained or `mkd student init`)."),
    train: Path = typer.Option(..., "--train", help="Training manifest (JSONL or folder); rows without text get teacher labels."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory."),
    eval: Optional[Path] = typer.Option(None, "--eval", help="Held-out manifest with references (WER during training)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="ce | kd | fitnet | manifold (default manifold)."),
    train_mode: Optional[str] = typer.Option(None, "--train-mode", help="lora (default) or full-decoder (pruned students)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Per process."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", min=1),
    encoder_lora_layers: Optional[int] = typer.Option(None, "--encoder-lora-layers", min=0),
    max_trainable: Optional[float] = typer.Option(None, "--max-trainable", help="Refuse above this share of the teacher (0.01 = 1%)."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", min=0),
    save_every: Optional[int] = typer.Option(None, "--save-every", min=1),
    seed: Optional[int] = typer.Option(None, "--seed"),
    encoder_buckets: Optional[str] = typer.Option(None, "--encoder-buckets", help="Train for these encoder windows "
                                                  "in seconds, e.g. 5,10,20,30 (short clips encode in short windows)."),
    timestamp_prob: Optional[float] = typer.Option(None, "--timestamp-prob", help="Share of clips taught with the "
                                                   "teacher's timed segments so long-form decoding survives (default 0.2)."),
    full_window_prob: Optional[float] = typer.Option(None, "--full-window-prob", help="With buckets: share of "
                                                     "batches kept at 30 s (default 0.2)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON recipe overrides (CLI flags win)."),
    pseudo_label: str = typer.Option("missing", "--pseudo-label", help="missing: label rows without text; all: train on teacher transcripts."),
    wer_threshold: Optional[float] = typer.Option(None, "--wer-threshold", help="Drop rows whose reference the teacher misses by more (e.g. 0.1)."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", min=1),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Share pseudo-labels and teacher outputs between runs (default: inside the run)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Delete an existing run directory and start over."),
) -> None:
    """Train; Ctrl-C saves a checkpoint and exits, --resume continues from it."""
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.trainer import TrainArgs, train as run_training
    from mkdeploy.models.window import parse_buckets

    quiet_libraries()
    with cli_errors():
        buckets = list(parse_buckets(encoder_buckets)) if encoder_buckets else None
        cfg = RecipeConfig.build(config, recipe=recipe, train_mode=train_mode, max_steps=max_steps,
                                 batch_size=batch_size, lr=lr, lora_r=lora_r, encoder_lora_layers=encoder_lora_layers,
                                 max_trainable=max_trainable, eval_every=eval_every, save_every=save_every, seed=seed,
                                 encoder_buckets=buckets, full_window_prob=full_window_prob,
                                 timestamp_prob=timestamp_prob)
        args = TrainArgs(teacher, student, train, output, cfg, eval, resume, force, pseudo_label, wer_threshold, eval_limit,
                         cache_dir)
        with progress() as bar:
            job = bar.add_task("training", total=cfg.max_steps)

            def on_step(step: int, rec: dict) -> None:
                bar.update(job, completed=step, description=f"training loss {rec['loss']:.3f}")

            summary = run_training(args, log=lambda s: console.print(s, highlight=False), on_step=on_step)
    if summary.get("interrupted"):
        console.print(f"stopped at step {summary['step']}; continue with the same command and --resume")
        raise typer.Exit(130)
    before, after = summary.get("wer_before"), summary.get("wer_after")
    line = f"done: step {summary['step']} in {summary['wall_s']:.0f} s"
    if after is not None:
        line += f"; held-out WER {'' if before is None else f'{100 * before:.2f}% -> '}{100 * after:.2f}%"
    out.print(line)
    out.print(f"run: {output} (merge with `mkd merge {output} OUT`)")
