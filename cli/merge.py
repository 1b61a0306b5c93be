"""`mkd merge`: fold a run's LoRA adapters into the student (a plain HF Whisper directory)."""

from __future__ import annotations

from pathlib import Path

import typer

from mkdeploy.cli.common import cli_errors, console, error_line, out, quiet_libraries


def merge_cmd(
    run: Path = typer.Argument(..., help="Run directory of `mkd train`."),
    output: Path = typer.Argument(..., help="Merged model directory to create."),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="A checkpoint folder (default: the one chosen on dev, RUN/selection.json; else the newest).",
    ),
    alpha: float | None = typer.Option(
        None,
        "--alpha",
        help="With --checkpoint: keep this fraction of its change from the untrained student (default 1).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output."),
) -> None:
    """Merge the dev-selected adapters (peft merge_and_unload), drop the heads, check logits, save."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.distill.merge import merge_run

    quiet_libraries()
    with cli_errors():
        res = merge_run(run, output, force=force, checkpoint=checkpoint, alpha=alpha)
    for w in res.warnings:
        console.print(error_line(w, "WARNING:"))
    what = f"{res.checkpoint} (step {res.step}, alpha {res.alpha:.2f})" if res.checkpoint else "the untrained student"
    out.print(f"merged {what} -> {res.path}; {res.reason}; max |logit diff| {res.max_abs_logit_diff:.1e}")
