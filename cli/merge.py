"""`mkd merge`: fold a run's LoRA adapters into the student (a plain HF Whisper directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mkdeploy.cli.common import cli_errors, out, quiet_libraries


def merge_cmd(
    run: Path = typer.Argument(..., help="Run directory of `mkd train`."),
    output: Path = typer.Argument(..., help="Merged model directory to create."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint folder (default: the newest)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output."),
) -> None:
    """Merge adapters (peft merge_and_unload), drop the heads, check logits, save with the processor."""
    from mkdeploy.distill.merge import merge_run

    quiet_libraries()
    with cli_errors():
        res = merge_run(run, output, force=force, checkpoint=checkpoint)
    out.print(f"merged {res.checkpoint} (step {res.step}) -> {res.path}; max |logit diff| {res.max_abs_logit_diff:.1e}")
