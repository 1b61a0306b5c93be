"""Helpers shared by the command modules: one-line errors and progress bars."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mkdeploy.errors import MkdError

console = Console(stderr=True, soft_wrap=True)  # log lines stay whole in files and CI logs
out = Console(soft_wrap=True)


def quiet_libraries() -> None:
    """Silence transformers' advisory warnings: users see our messages, not library chatter."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("optimum").setLevel(logging.ERROR)
    try:  # optimum keeps its own library root logger (it resets the level set above on first use)
        from optimum.utils import logging as optimum_logging

        optimum_logging.set_verbosity_error()
    except ImportError:
        pass
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures into one line on stderr and exit code 2 (no traceback)."""
    try:
        yield
    except MkdError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("interrupted")
        raise typer.Exit(130) from None


def progress(disable: bool = False) -> Progress:
    """A rich progress bar on stderr (hidden when stderr is not a terminal, e.g. in CI logs)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        disable=disable or not sys.stderr.isatty(),
    )
