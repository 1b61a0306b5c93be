"""`mkd eval`: WER and CER of a model on a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from mkdeploy.cli.common import cli_errors, exit_on_failures, out, progress, quiet_libraries
from mkdeploy.constants import DTYPE_HELP, THREADS_HELP


def eval_cmd(
    model: Path = typer.Argument(..., help="HF Whisper directory or ONNX export directory."),
    manifest: Path = typer.Argument(..., help="JSONL manifest or folder of audio with .txt references."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON file with wer, cer and per-utterance rows."),
    language: str = typer.Option("en", "--language"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    beam_size: int = typer.Option(1, "--beam-size", min=1, help="Beams per clip (1: greedy)."),
    backend: str = typer.Option("auto", "--backend"),
    device: str = typer.Option("auto", "--device"),
    threads: int = typer.Option(0, "--threads", min=0, help=THREADS_HELP),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite --output."),
) -> None:
    """Score a model's transcripts against references (Whisper's English normaliser, then jiwer)."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.data import load_manifest
    from mkdeploy.evaluate import evaluate_manifest
    from mkdeploy.fsutil import atomic_write_text, check_writable
    from mkdeploy.options import scoring_options

    quiet_libraries()
    with cli_errors():
        check_writable(output, force)
        n = len(load_manifest(manifest, require_text=True))
        opts = scoring_options(language, batch_size, beam_size)
        with progress(disable=n < 2) as bar:
            job = bar.add_task("evaluating", total=n)
            rates, results, failures = evaluate_manifest(
                model, manifest, backend, device, opts, on_progress=lambda k: bar.advance(job, k),
                threads=threads, dtype=dtype,
            )  # fmt: skip
        payload = {
            "model": str(model),
            "manifest": str(manifest),
            **rates.to_dict(),
            "failures": [f.__dict__ for f in failures],
        }
        atomic_write_text(output, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    table = Table(title=f"{model} on {manifest}")
    for col in ("utterances", "words", "WER %", "CER %"):
        table.add_column(col, justify="right")
    table.add_row(str(rates.n), str(rates.ref_words), f"{100 * rates.wer:.2f}", f"{100 * rates.cer:.2f}")
    out.print(table)
    out.print(f"wrote {output}")
    exit_on_failures(failures)
