"""`mkd student init`: a student pruned from the teacher (distil-whisper's layer selection) and/or given
short encoder windows (models/window.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from mkdeploy.cli.common import cli_errors, out, quiet_libraries

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Create students.")


@app.command("init")
def init_cmd(
    output: Path = typer.Argument(..., help="Student directory to create."),
    teacher: Path | None = typer.Option(None, "--teacher", help="Prune this teacher (with --decoder-layers)."),
    decoder_layers: int | None = typer.Option(
        None, "--decoder-layers", min=1, help="Decoder layers to keep (first and last included)."
    ),
    encoder_layers: int | None = typer.Option(
        None, "--encoder-layers", min=1, help="Encoder layers to keep (default all)."
    ),
    source: Path | None = typer.Option(
        None, "--from", help="Copy this model instead (e.g. tiny.en) to give it encoder buckets."
    ),
    encoder_buckets: str | None = typer.Option(
        None,
        "--encoder-buckets",
        help="Encoder windows in seconds, e.g. 5,10,20,30: the student is trained for and served with them.",
    ),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """A student: pruned from the teacher (--teacher, --decoder-layers) and/or with short encoder windows
    (--from MODEL --encoder-buckets 5,10,20,30)."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.errors import MkdError
    from mkdeploy.models.student import init_pruned_student, init_windowed_student, load_whisper
    from mkdeploy.models.window import parse_buckets

    quiet_libraries()
    with cli_errors():
        buckets = parse_buckets(encoder_buckets) if encoder_buckets else None
        if source is not None:
            if teacher is not None or decoder_layers is not None:
                raise MkdError(
                    "--from copies a model as is; prune with --teacher and --decoder-layers instead, not both"
                )
            if buckets is None:
                raise MkdError("--from needs --encoder-buckets (e.g. 5,10,20,30); a plain copy needs no command")
            path = init_windowed_student(source, output, buckets, force=force)
        else:
            if teacher is None or decoder_layers is None:
                raise MkdError(
                    "give --teacher and --decoder-layers to prune, or --from MODEL --encoder-buckets to window"
                )
            path = init_pruned_student(teacher, output, decoder_layers, encoder_layers, force=force)
            if buckets is not None:
                path = init_windowed_student(path, output, buckets, force=True)
        model, _ = load_whisper(path)
    _print_student(path, model)


def _print_student(path: Path, model) -> None:
    from mkdeploy.models.student import count_parameters  # imported on use, so `mkd --help` stays fast
    from mkdeploy.models.window import model_buckets

    cfg = model.config
    line = f"student {path}: {cfg.encoder_layers} encoder + {cfg.decoder_layers} decoder layers"
    if getattr(cfg, "mkdeploy_pruned_from", None):
        line += f" (kept {cfg.mkdeploy_pruned_from['decoder_layers']})"
    line += f", {count_parameters(model) / 1e6:.1f}M params"
    buckets = model_buckets(cfg)
    if buckets:
        line += f"; encoder windows {', '.join(f'{b} s' for b in buckets)}"
    out.print(
        line
        + (
            "; train it with --w-retain 0 --lr 1e-3 (LoRA) or --train-mode full-decoder"
            if getattr(cfg, "mkdeploy_pruned_from", None)
            else ""
        )
    )
