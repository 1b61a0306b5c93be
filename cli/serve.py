"""`mkd serve`: the OpenAI-compatible transcription server.

Every field of :class:`~mkdeploy.serve.config.ServeConfig` is an option (``--max-batch``, ``--api-key``, ...),
generated from the dataclass with its help text.
"""

import os
from pathlib import Path
from typing import Any

import typer

from mkdeploy.cli.common import Fields, cli_errors, config_command, console, needs_extra, quiet_libraries
from mkdeploy.distributed.config import RayServeConfig
from mkdeploy.errors import MkdError
from mkdeploy.models.dirs import check_model_dir
from mkdeploy.serve.config import API_KEY_ENV, ServeConfig


@config_command
def serve_cmd(
    model: Path = typer.Argument(..., help="HF Whisper directory or ONNX export directory."),
    ray: bool = typer.Option(False, "--ray", help="Deploy on Ray Serve (the [ray] extra); see --replicas."),
    server_fields: dict[str, Any] = Fields(ServeConfig),
    ray_serve_fields: dict[str, Any] = Fields(RayServeConfig),
) -> None:
    """Serve MODEL over OpenAI's audio API (POST /v1/audio/transcriptions) until SIGTERM or Ctrl-C.

    With --ray: the same app as Ray Serve replicas (--replicas or --autoscale MIN:MAX) behind Ray's proxy."""
    quiet_libraries()
    with cli_errors():
        run = _runner(ray)
        values = dict(server_fields, model=str(check_model_dir(model)))
        values.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
        config = ServeConfig(**values)
        if config.max_batch < 1 or config.max_queue < 1 or config.beam_size < 1:
            raise MkdError("--max-batch, --max-queue and --beam-size must be at least 1")
        if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
            console.print(f"warning: listening on {config.host} without an API key (--api-key or ${API_KEY_ENV})")
        if ray:
            run(config, RayServeConfig(**ray_serve_fields))
        else:
            run(config)


def _runner(ray: bool):
    """The blocking serve function; optional dependencies (imported on use, so `mkd --help` stays fast):
    FastAPI and uvicorn from the [serve] extra, Ray Serve from the [ray] extra."""
    with needs_extra("ray" if ray else "serve", f"mkd serve{' --ray' if ray else ''}"):
        if ray:
            from mkdeploy.distributed.serve import run as run_on_ray

            return run_on_ray
        from mkdeploy.serve.app import run

        return run
