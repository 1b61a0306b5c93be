"""`mkd train`: distil a teacher into a student with the projection-mapping LoRA recipe.

Every field of :class:`~mkdeploy.distill.config.RecipeConfig` is an option (``--lr``, ``--w-retain``, ...),
generated from the dataclass with its help text, so a new recipe field needs no edit here.
"""

from pathlib import Path
from typing import Any

import typer

from mkdeploy.cli.common import Fields, cli_errors, config_command, console, needs_extra, out, progress, quiet_libraries
from mkdeploy.distill.config import RecipeConfig
from mkdeploy.distributed.config import RayConfig


@config_command
def train_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher HF Whisper directory (e.g. the imported base)."),
    student: Path = typer.Option(
        ..., "--student", help="Student HF Whisper directory (pre-trained or `mkd student init`)."
    ),
    train: Path = typer.Option(
        ..., "--train", help="Training manifest (JSONL or folder); rows without text get teacher labels."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory."),
    eval: Path | None = typer.Option(
        None,
        "--eval",
        help="Dev manifest with references: scored every --eval-every steps; it chooses the checkpoint and scale merge uses.",
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML/JSON recipe overrides (CLI flags win)."),
    pseudo_label: str = typer.Option(
        "missing", "--pseudo-label", help="missing: label rows without text; all: train on teacher transcripts."
    ),
    wer_threshold: float | None = typer.Option(
        None, "--wer-threshold", help="Drop rows whose reference the teacher misses by more (e.g. 0.1)."
    ),
    teacher_filter: str = typer.Option(
        "generated",
        "--teacher-filter",
        help="How --wer-threshold reads the teacher: generated (its transcript) or forced (its argmax along the "
        "reference; no generate call, about a third less teacher time).",
    ),
    min_avg_logprob: float | None = typer.Option(
        None,
        "--min-avg-logprob",
        help="Drop pseudo-labelled rows (no reference, or --pseudo-label all) whose transcript the teacher gives a "
        "mean token log-probability below this (Whisper's fallback threshold is -1.0); needs no reference.",
    ),
    eval_limit: int | None = typer.Option(None, "--eval-limit", min=1),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Share pseudo-labels and teacher outputs between runs (default: inside the run)."
    ),
    label_with_ray: bool = typer.Option(
        False,
        "--label-with-ray",
        help="Run the teacher's pass on Ray actors (the [ray] extra; --actors, --ray-address); the cache format is the same.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Delete an existing run directory and start over."),
    recipe_fields: dict[str, Any] = Fields(RecipeConfig),
    ray_fields: dict[str, Any] = Fields(RayConfig),
) -> None:
    """Train; Ctrl-C saves a checkpoint and exits, --resume continues from it."""
    quiet_libraries()
    with cli_errors():
        cfg = RecipeConfig.build(config, **recipe_fields)
        # the trainer imports torch, transformers and peft: loaded when a run starts, so `mkd --help` and the
        # other commands do not pay for them
        from mkdeploy.distill.trainer import TrainArgs
        from mkdeploy.distill.trainer import train as run_training

        args = TrainArgs(
            teacher,
            student,
            train,
            output,
            cfg,
            eval_manifest=eval,
            labeller=_ray_labeller(ray_fields) if label_with_ray else None,
            resume=resume,
            force=force,
            pseudo_label=pseudo_label,
            wer_threshold=wer_threshold,
            teacher_filter=teacher_filter,
            min_avg_logprob=min_avg_logprob,
            eval_limit=eval_limit,
            cache_dir=cache_dir,
        )
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
        line += f"; dev WER {'' if before is None else f'{100 * before:.2f}% -> '}{100 * after:.2f}%"
    if summary.get("selection_reason"):
        line += (
            f"; merge will take {summary['selected']['checkpoint'] or 'the untrained student'} "
            f"at alpha {summary['selected']['alpha']:.2f} ({summary['selection_reason']})"
        )
    out.print(line)
    out.print(f"run: {output} (merge with `mkd merge {output} OUT`)")


def _ray_labeller(ray: dict[str, Any]):
    # imported on use: Ray only for --label-with-ray
    with needs_extra("ray", "mkd train --label-with-ray"):
        from mkdeploy.distributed.label import RayLabeller

    return RayLabeller(RayConfig(**ray).check())
