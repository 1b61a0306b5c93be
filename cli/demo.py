"""`mkd demo`: the whole chain on the embedded default (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from mkdeploy.cli.common import cli_errors, console, out, quiet_libraries


def demo_cmd(
    workdir: Path = typer.Option(Path("work/demo"), "--workdir", help="Where models, corpus, run and report go."),
    # None: the library's defaults (DemoOptions, CorpusSpec), so they are written in one place
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps [default: the demo's]."),
    train_clips: int | None = typer.Option(None, "--train-clips", min=8, help="[default: the demo's]"),
    test_clips: int | None = typer.Option(
        None, "--test-clips", min=4, help="Clips in each of the three test sets [default: the demo's]."
    ),
) -> None:
    """Import base and tiny.en, synthesise the corpus, distil, merge, export, score on unseen speech, bench."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.demo.corpus import TEST_SPLITS
    from mkdeploy.demo.pipeline import TITLES, DemoOptions, run_demo

    quiet_libraries()
    with cli_errors():
        opts = DemoOptions(workdir=workdir)
        opts.steps = steps or opts.steps
        opts.corpus.n_train = train_clips or opts.corpus.n_train
        opts.corpus.n_test = test_clips or opts.corpus.n_test
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
