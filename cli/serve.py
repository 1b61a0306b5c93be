"""`mkd serve`: the OpenAI-compatible transcription server.

Every field of :class:`~mkdeploy.serve.config.ServeConfig` is an option (``--max-batch``, ``--api-key``, ...),
generated from the dataclass with its help text.
"""

import inspect
import os
from typing import Any

from mkdeploy.cli.common import (
    MODEL_ARGUMENT,
    cli_errors,
    console,
    dataclass_options,
    parse_dataclass_options,
    quiet_libraries,
)
from mkdeploy.errors import MkdError
from mkdeploy.models.dirs import check_model_dir
from mkdeploy.serve.config import API_KEY_ENV, ServeConfig


def serve_cmd(**options: Any) -> None:
    """Serve MODEL over OpenAI's audio API (POST /v1/audio/transcriptions) until SIGTERM or Ctrl-C."""
    quiet_libraries()
    with cli_errors():
        try:
            # optional dependency: the [serve] extra; the core install never imports FastAPI
            # imported on use, so `mkd --help` stays fast
            from mkdeploy.serve.app import run
        except ImportError as exc:
            raise MkdError(
                f"mkd serve needs the [serve] extra ({exc.name} is missing): pip install 'mkdeploy[serve]'"
            ) from None
        values = parse_dataclass_options(ServeConfig, options)
        values["model"] = str(check_model_dir(options["model"]))
        values.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
        config = ServeConfig(**values)
        if config.max_batch < 1 or config.max_queue < 1:
            raise MkdError("--max-batch and --max-queue must be at least 1")
        if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
            console.print(
                f"[yellow]warning:[/] listening on {config.host} without an API key (--api-key or ${API_KEY_ENV})"
            )
        run(config)


serve_cmd.__signature__ = inspect.Signature([MODEL_ARGUMENT] + dataclass_options(ServeConfig))  # type: ignore[attr-defined]
