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
    score_source: bool | None = typer.Option(
        None,
        "--score-source/--no-score-source",
        help="Score and time the model the student was made from (tiny.en whole) beside it [default: the demo's].",
    ),
) -> None:
    """Import base and tiny.en, synthesise the corpus, distil, merge, export, score on unseen speech, bench."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.demo.pipeline import DemoOptions, run_demo
    from mkdeploy.demo.report import TITLES

    quiet_libraries()
    with cli_errors():
        opts = DemoOptions(workdir=workdir)
        opts.score_source = opts.score_source if score_source is None else score_source
        opts.steps = steps or opts.steps
        opts.corpus.n_train = train_clips or opts.corpus.n_train
        opts.corpus.n_test = test_clips or opts.corpus.n_test
        head = run_demo(opts, log=lambda s: console.print(s, highlight=False))
    out.print("")
    out.print(f"report: {head.report}")
    for split, f in head.sets().items():
        lo, hi = f.ci95_distilled_minus_untrained_fp32
        out.print(
            f"{TITLES[split]:>14}: teacher {100 * f.teacher_fp32:.2f}% · untrained {100 * f.untrained_fp32:.2f}% · "
            f"distilled {100 * f.distilled_fp32:.2f}% WER (fp32; distilled − untrained 95% CI "
            f"[{100 * lo:+.2f}, {100 * hi:+.2f}] points) · int8 {100 * f.untrained_int8:.2f}% → {100 * f.distilled_int8:.2f}%"
        )
    out.print(f"trainable {head.trainable_pct:.2f}% of the teacher · {head.minutes:.1f} min")
