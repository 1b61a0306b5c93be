"""`mkd serve --ray`: the same OpenAI-compatible app, deployed as Ray Serve replicas.

One application code path for both modes: each replica is a Ray Serve deployment whose FastAPI ingress is
the app :func:`mkdeploy.serve.app.create_app` builds, around one loaded :class:`~mkdeploy.serve.served_model.Engine`
and its own cross-request batcher. Ray Serve's proxy spreads requests over the replicas (power of two
choices on their queue lengths), restarts a replica whose process dies and, with ``--autoscale``, adds and
removes replicas with the load. The routes, errors, limits and the request log are the plain server's.
"""

from __future__ import annotations

import logging
import signal
import threading
import typing
from dataclasses import fields

from ray import serve

from mkdeploy.distributed.cluster import connect, default_gpus
from mkdeploy.distributed.config import RayServeConfig
from mkdeploy.errors import MkdError
from mkdeploy.serve.app import configure_logging, create_app
from mkdeploy.serve.config import ServeConfig
from mkdeploy.serve.served_model import Engine

logger = logging.getLogger("mkdeploy.serve")

#: the Ray Serve application's name (``serve status`` shows it)
APP_NAME = "mkdeploy"


@serve.ingress()
class Transcriber:
    """A Ray Serve replica: loads and warms the model before it takes traffic (Ray Serve routes to a replica
    once its constructor returns), then serves the plain server's app."""

    def __init__(self, config: ServeConfig):
        configure_logging()
        logger.setLevel(logging.INFO)
        self.config = config
        self.engine = Engine(config)
        self.engine.load()
        if self.engine.error:
            raise RuntimeError(self.engine.error)  # the deployment fails with the reason, not a replica that 503s

    def __serve_build_asgi_app__(self):
        return create_app(self.config, self.engine)

    def check_health(self) -> None:
        """Ray Serve's periodic probe: a replica whose model is gone gets replaced."""
        if not self.engine.ready.is_set():
            raise RuntimeError(self.engine.error or "model not loaded")


def deployment(config: ServeConfig, ray_config: RayServeConfig, gpus: float):
    """The bound Ray Serve application for ``config`` (what ``serve.run`` takes)."""
    options: dict = {
        "ray_actor_options": {"num_cpus": ray_config.replica_cpus, "num_gpus": gpus},
        # the replica's own batcher gathers concurrent requests and its queue bound answers 503, so Ray Serve
        # may hand it as many as that bound
        "max_ongoing_requests": config.max_queue,
    }
    bounds = ray_config.bounds()
    if bounds:
        options["autoscaling_config"] = {
            "min_replicas": bounds[0],
            "max_replicas": bounds[1],
            "target_ongoing_requests": max(1, config.max_batch),
        }
    else:
        if ray_config.replicas < 1:
            raise MkdError("--replicas must be at least 1")
        options["num_replicas"] = ray_config.replicas
    return serve.deployment(name="Transcriber", **options)(Transcriber).bind(config)


def build_app(args: dict):
    """Ray Serve's application builder (``import_path: mkdeploy.distributed.serve:build_app``), for
    ``serve run``, ``serve deploy`` and KubeRay's RayService (docs/kuberay/rayservice.yaml): ``args`` holds
    :class:`~mkdeploy.serve.config.ServeConfig` and :class:`~mkdeploy.distributed.config.RayServeConfig`
    fields by name (``model`` required). GPUs per replica default to none here: the cluster's resources are
    not known when the config is read, so say ``replica_gpus: 1`` for GPU replicas."""
    names = {f.name for f in fields(ServeConfig)}
    unknown = set(args) - names - {f.name for f in fields(RayServeConfig)}
    if unknown or "model" not in args:
        raise MkdError(
            f"build_app args: unknown {sorted(unknown)}" if unknown else "build_app args: 'model' is required"
        )
    config = ServeConfig(**_typed(ServeConfig, {k: v for k, v in args.items() if k in names}))
    ray_config = RayServeConfig(**_typed(RayServeConfig, {k: v for k, v in args.items() if k not in names}))
    return deployment(config, ray_config, ray_config.replica_gpus or 0.0)


def _typed(cls: type, values: dict) -> dict:
    """``serve run ... replicas=2`` passes strings: turn them into the fields' numbers and switches."""
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in values.items():
        kinds = [a for a in typing.get_args(hints[k]) if a is not type(None)] or [hints[k]]
        if isinstance(v, str) and kinds[0] in (int, float):
            v = kinds[0](v)
        elif isinstance(v, str) and kinds[0] is bool:
            v = v.lower() in ("1", "true", "yes", "on")
        elif isinstance(v, str) and typing.get_origin(kinds[0]) is list:
            v = [int(x) for x in v.split(",")]
        out[k] = v
    return out


def run(config: ServeConfig, ray_config: RayServeConfig) -> None:
    """Deploy on Ray and serve until SIGTERM/SIGINT, then take the application down (blocking)."""
    import ray

    configure_logging()
    logger.setLevel(logging.INFO)
    ray_config.bounds()  # a bad --autoscale fails before Ray starts
    connect(ray_config.ray_address)
    gpus = default_gpus(ray_config.replica_gpus, config.device)
    stop = threading.Event()

    def on_signal() -> None:
        # Ray's core installs a fatal-signal handler that aborts the process on SIGTERM; ours ends the wait
        # below instead. Installed again after serve.run, which may replace it.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

    on_signal()
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(deployment(config, ray_config, gpus), name=APP_NAME, route_prefix="/")
    on_signal()
    logger.info("Ray Serve: %s on http://%s:%d", APP_NAME, config.host, config.port)
    stop.wait()
    logger.info("stopping: deleting the Ray Serve application")
    serve.delete(APP_NAME)  # replicas drain their in-flight requests first (graceful_shutdown_wait_loop_s)
    serve.shutdown()
    ray.shutdown()
