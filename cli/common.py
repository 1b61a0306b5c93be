"""Helpers shared by the command modules: one-line errors and progress bars."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from mkdeploy.errors import MissingExtraError, MkdError
from mkdeploy.transcription.loading import installed

# markup=False: what we print holds brackets ("mkdeploy[serve]", "[default: x]", paths); rich would read
# them as markup tags and drop them (../shared/DESIGN.md §8). Styles go through `style=` / `error_line`.
console = Console(stderr=True, soft_wrap=True, markup=False)  # log lines stay whole in files and CI logs
out = Console(soft_wrap=True, markup=False)


def error_line(message: object, label: str = "error:") -> Text:
    """A one-line message with a red label; the message is printed literally (no markup)."""
    return Text.assemble((label, "bold red"), " ", str(message))


def quiet_libraries() -> None:
    """Silence transformers' advisory warnings: users see our messages, not library chatter. Nothing is
    imported for it: the base install has no transformers, and the torch-free runtime must not load it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read by transformers when it is imported
    logging.getLogger("optimum").setLevel(logging.ERROR)
    if installed("optimum"):
        try:  # optimum keeps its own library root logger (it resets the level set above on first use)
            # imported on use, so `mkd --help` stays fast
            from optimum.utils import logging as optimum_logging

            optimum_logging.set_verbosity_error()
        except ImportError:
            pass
    # imported on use, so `mkd --help` stays fast
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures into one line on stderr and exit code 2 (no traceback)."""
    try:
        yield
    except MkdError as exc:
        console.print(error_line(exc), highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("interrupted")
        raise typer.Exit(130) from None


#: what the [train] extra installs (pyproject.toml): a command that imports one of them needs it
TRAIN_MODULES = ("torch", "transformers", "optimum", "peft", "accelerate", "onnx", "onnx_ir", "safetensors", "yaml")


def needs_train_extra(command: Callable) -> Callable:
    """``command``, stopping with one line that names the [train] extra when it reaches for the training
    stack in the base install (which has no torch, transformers or optimum), wherever it imports it."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in TRAIN_MODULES:
                raise
            console.print(error_line(MissingExtraError("train", "this command", top)), highlight=False)
            raise typer.Exit(2) from None

    return wrapper


@contextlib.contextmanager
def needs_extra(extra: str, what: str) -> Iterator[None]:
    """Turn a missing optional dependency into one line naming the extra that installs it.

    Args:
        extra: the pyproject extra (``serve``, ``ray``).
        what: the command or flag that needs it, e.g. ``mkd serve --ray``.
    """
    try:
        yield
    except ImportError as exc:
        raise MissingExtraError(extra, what, exc.name or str(exc)) from None


def exit_on_failures(failures) -> None:
    """List the files that failed (one line each) and exit 1; nothing when none failed."""
    if failures:
        console.print(Text(f"{len(failures)} file(s) failed:", style="bold red"))
        for f in failures:
            console.print(f"  {f.reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def progress(disable: bool = False) -> Progress:
    """A rich progress bar on stderr (hidden when stderr is not a terminal, e.g. in CI logs)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable or not sys.stderr.isatty(),
    )


def _option_type(hint: Any) -> type | None:
    """The Typer type of a config field: scalars as they are, flat lists as one comma-separated string,
    anything else (nested lists such as layer pairs) None: those stay in the config file."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _option_type(inner[0]) if len(inner) == 1 else None
    if hint in (int, float, str, bool):
        return hint
    if typing.get_origin(hint) is list and typing.get_args(hint)[0] in (int, float, str):
        return str
    return None


class _FieldGroup:
    def __init__(self, cls: type) -> None:
        self.cls = cls


def Fields(cls: type) -> Any:  # capitalised like typer.Option, whose place it takes
    """The default of a command parameter that stands for one ``--option`` per field of a config dataclass.

    A command declared with :func:`config_command` receives, in that parameter, the fields the user gave
    (``{field: value}``, lists split on commas), ready for ``cls(**values)`` or a ``build`` that merges a
    config file. Every other parameter is a plain Typer parameter, so all commands read the same way.
    Typed ``Any`` as ``typer.Option`` is, so ``param: dict[str, Any] = Fields(cls)`` type-checks.
    """
    return _FieldGroup(cls)


def config_command(command: Callable[..., Any]) -> Callable[..., Any]:
    """Make a plain Typer command whose ``Fields(cls)`` parameters expand into the dataclasses' options.

    Typer reads a command's parameters from its signature; the wrapper's signature is the command's own
    parameters followed by those of :func:`dataclass_options` for each ``Fields`` group, and the call folds
    each group's values back into one dict (:func:`parse_dataclass_options`).
    """
    signature = inspect.signature(command, eval_str=True)
    groups = {name: p.default.cls for name, p in signature.parameters.items() if isinstance(p.default, _FieldGroup)}
    own = [p for p in signature.parameters.values() if p.name not in groups]
    expanded = [q for cls in groups.values() for q in dataclass_options(cls)]
    names = [p.name for p in own] + list(groups) + [q.name for q in expanded]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise TypeError(f"{command.__name__}: parameter names declared twice: {', '.join(twice)}")

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        kwargs = {p.name: values[p.name] for p in own}
        kwargs.update({name: parse_dataclass_options(cls, values) for name, cls in groups.items()})
        return command(**kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + expanded)  # type: ignore[attr-defined]
    # Typer reads types from the annotations too: those of the signature it is given, not the command's
    wrapper.__annotations__ = {p.name: p.annotation for p in own + expanded}
    return wrapper


def dataclass_options(cls: type) -> list[inspect.Parameter]:
    """One ``--field-name`` option per field of a config dataclass, its help from the field's metadata
    (peft's configs carry their help the same way), so a new field reaches the CLI without a second edit.

    Every option defaults to None ("not given"): the dataclass default, then a config file, then the flag.
    """
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        kind = _option_type(hints[f.name])
        if kind is None:
            continue
        factory: Any = f.default_factory
        if f.default is dataclasses.MISSING and factory is dataclasses.MISSING:
            continue  # a required field: the command declares it (an argument)
        default = factory() if f.default is dataclasses.MISSING else f.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        # literal: the app's help has no rich markup mode (cli/main.py), so "[default: x]" prints as written
        help_text = f"{f.metadata.get('help', '')} [default: {shown}]".strip()
        flag = "--" + f.name.replace("_", "-")
        names = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]  # booleans are on/off switches
        option = typer.Option(None, *names, help=help_text, show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None))
    return params


def parse_dataclass_options(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The given (non-None) options of :func:`dataclass_options` as field values; lists are split on commas."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = values.get(f.name)
        if value is None:
            continue
        hint = hints[f.name]
        inner = (
            [a for a in typing.get_args(hint) if a is not type(None)]
            if typing.get_origin(hint) in (typing.Union, types.UnionType)
            else [hint]
        )
        if typing.get_origin(inner[0]) is list and isinstance(value, str):
            item = typing.get_args(inner[0])[0]
            try:
                value = [item(x.strip()) for x in value.split(",") if x.strip()]
            except ValueError:
                raise MkdError(
                    f"--{f.name.replace('_', '-')} {value}: give comma-separated {item.__name__} values"
                ) from None
        out[f.name] = value
    return out
