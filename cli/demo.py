"""`mkd demo`: the whole chain on the embedded default (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from mkdeploy.cli.common import cli_errors, console, out, quiet_libraries


def demo_cmd(
    workdir: Path = typer.Option(Path("work/demo"), "--workdir", help="Where models, corpus, run and report go."),
    steps: int = typer.Option(60, "--steps", min=1, help="Training steps."),
    train_clips: int = typer.Option(300, "--train-clips", min=8),
    heldout_clips: int = typer.Option(60, "--heldout-clips", min=4),
) -> None:
    """Import base and tiny.en, synthesise noisy speech, distil, merge, export, transcribe, bench."""
    from mkdeploy.corpus import CorpusSpec
    from mkdeploy.demo import DemoOptions, run_demo

    quiet_libraries()
    with cli_errors():
        opts = DemoOptions(workdir=workdir, steps=steps, corpus=CorpusSpec(n_train=train_clips, n_heldout=heldout_clips))
        head = run_demo(opts, log=lambda s: console.print(s, highlight=False))
    out.print("")
    out.print(f"report: {head.report}")
    out.print(f"teacher WER {100 * head.teacher_wer:.2f}% · student before {100 * head.student_wer_before:.2f}% · "
              f"after {100 * head.student_wer_after:.2f}% · speed-up {head.speedup:.2f}x ({head.speedup_model}) · "
              f"trainable {head.trainable_pct:.2f}% of the teacher · {head.wall_s / 60:.1f} min")
