"""`mkd student init`: a student pruned from the teacher (distil-whisper's layer selection)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mkdeploy.cli.common import cli_errors, out, quiet_libraries

app = typer.Typer(no_args_is_help=True, help="Create students.")


@app.command("init")
def init_cmd(
    output: Path = typer.Argument(..., help="Student directory to create."),
    teacher: Path = typer.Option(..., "--teacher", help="Teacher HF Whisper directory."),
    decoder_layers: int = typer.Option(..., "--decoder-layers", min=1, help="Decoder layers to keep (first and last included)."),
    encoder_layers: Optional[int] = typer.Option(None, "--encoder-layers", min=1, help="Encoder layers to keep (default all)."),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Copy the teacher, keeping K decoder layers spread over its own; train with --train-mode full-decoder."""
    from mkdeploy.models.student import count_parameters, init_pruned_student, load_whisper

    quiet_libraries()
    with cli_errors():
        path = init_pruned_student(teacher, output, decoder_layers, encoder_layers, force=force)
        model, _ = load_whisper(path)
    cfg = model.config
    out.print(f"student {path}: {cfg.encoder_layers} encoder + {cfg.decoder_layers} decoder layers "
              f"(kept {cfg.mkdeploy_pruned_from['decoder_layers']}), {count_parameters(model) / 1e6:.1f}M params; "
              "train it with --train-mode full-decoder")
