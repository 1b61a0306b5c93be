"""The `mkd` command: a thin Typer app; each command lives in its own module and calls the library."""

from __future__ import annotations

import typer

from mkdeploy.cli.bench import bench_cmd
from mkdeploy.cli.common import needs_train_extra
from mkdeploy.cli.demo import demo_cmd
from mkdeploy.cli.eval import eval_cmd
from mkdeploy.cli.export import export_cmd
from mkdeploy.cli.import_ct2 import import_ct2
from mkdeploy.cli.merge import merge_cmd
from mkdeploy.cli.serve import serve_cmd
from mkdeploy.cli.student import app as student_app
from mkdeploy.cli.train import train_cmd
from mkdeploy.cli.transcribe import transcribe
from mkdeploy.version import version_string

# rich_markup_mode=None: help texts hold literal brackets ("the [ray] extra", "[default: x]") that rich
# markup would swallow (../shared/DESIGN.md §8), so help is printed as written.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="mkdeploy: distil Whisper, export to ONNX, transcribe and benchmark.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_string())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version (and commit) and exit."
    ),
) -> None:
    """mkdeploy: distil Whisper, export to ONNX, transcribe and benchmark."""


app.command("import-ct2")(needs_train_extra(import_ct2))
app.command("transcribe")(needs_train_extra(transcribe))
app.command("eval")(needs_train_extra(eval_cmd))
app.command("export")(needs_train_extra(export_cmd))
app.command("bench")(needs_train_extra(bench_cmd))
app.command("serve")(needs_train_extra(serve_cmd))
app.command("train")(needs_train_extra(train_cmd))
app.command("merge")(needs_train_extra(merge_cmd))
for _sub in student_app.registered_commands:
    if _sub.callback is not None:
        _sub.callback = needs_train_extra(_sub.callback)
app.add_typer(student_app, name="student")
app.command("demo")(needs_train_extra(demo_cmd))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
