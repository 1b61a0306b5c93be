"""`mkd demo`: the whole chain on the embedded default (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from mkdeploy.cli.common import cli_errors, console, out, quiet_libraries


def demo_cmd(
    workdir: Path = typer.Option(Path("work/demo"), "--workdir", help="Where models, corpus, run and report go."),
    steps: int = typer.Option(60, "--steps", min=1, help="Training steps."),
    train_clips: int = typer.Option(240, "--train-clips", min=8),
    test_clips: int = typer.Option(50, "--test-clips", min=4, help="Clips in each of the three test sets."),
) -> None:
    """Import base and tiny.en, synthesise the corpus, distil, merge, export, score on unseen speech, bench."""
    from mkdeploy.demo.corpus import TEST_SPLITS, CorpusSpec
    from mkdeploy.demo.pipeline import TITLES, DemoOptions, run_demo

    quiet_libraries()
    with cli_errors():
        opts = DemoOptions(workdir=workdir, steps=steps, corpus=CorpusSpec(n_train=train_clips, n_test=test_clips))
        head = run_demo(opts, log=lambda s: console.print(s, highlight=False))
    out.print("")
    out.print(f"report: {head.report}")
    for split in TEST_SPLITS:
        out.print(
            f"{TITLES[split]:>14}: teacher {100 * head.teacher[split]:.2f}% · untrained {100 * head.untrained[split]:.2f}%"
            f" · distilled {100 * head.distilled[split]:.2f}% WER"
        )
    out.print(
        f"speed-up {head.speedup:.2f}x (distilled int8 vs teacher torch) · trainable {head.trainable_pct:.2f}% "
        f"of the teacher · {head.wall_s / 60:.1f} min"
    )
