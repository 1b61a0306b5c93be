"""The `mkd` command: a thin Typer app; each command lives in its own module and calls the library."""

from __future__ import annotations

import typer

from mkdeploy.cli.bench import bench_cmd
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


app.command("import-ct2")(import_ct2)
app.command("transcribe")(transcribe)
app.command("eval")(eval_cmd)
app.command("export")(export_cmd)
app.command("bench")(bench_cmd)
app.command("serve")(serve_cmd)
app.command("train")(train_cmd)
app.command("merge")(merge_cmd)
app.add_typer(student_app, name="student")
app.command("demo")(demo_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
