"""The application factory and the uvicorn runner.

Lifecycle: the app answers at once; the model loads and warms on a thread (``/health`` says "loading"
with 503 until then); SIGTERM makes uvicorn stop accepting, finish in-flight requests, run the lifespan
shutdown (the batcher drains) and exit 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from mkdeploy.serve.batcher import Batcher
from mkdeploy.serve.config import ServeConfig
from mkdeploy.serve.metrics import Metrics
from mkdeploy.serve.openai_errors import error_body, install_error_handlers
from mkdeploy.serve.routers import health, models, transcriptions, translations
from mkdeploy.serve.served_model import Engine

logger = logging.getLogger("mkdeploy.serve")


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The OpenAI-compatible app for ``config`` (``engine``: an already built one, for tests)."""
    engine = engine or Engine(config)
    metrics = Metrics()
    batcher = Batcher(
        engine.decode,
        config.max_batch,
        config.max_wait_ms,
        config.max_queue,
        metrics,
        piece_batch=engine.piece_batch,
        yield_steps=engine.yields_between_steps,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        if not engine.ready.is_set():
            threading.Thread(target=engine.load, name="mkd-load", daemon=True).start()
        yield
        batcher.stop()  # in-flight requests were answered before uvicorn got here; queued ones finish too

    app = FastAPI(title="mkdeploy", summary="OpenAI-compatible Whisper transcription", lifespan=lifespan)
    app.state.config, app.state.engine, app.state.metrics, app.state.batcher = config, engine, metrics, batcher
    app.state.created = int(time.time())
    install_error_handlers(app)
    app.include_router(transcriptions.router)
    app.include_router(translations.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.add_middleware(UploadLimit, limit=int(config.max_upload_mb * 1024 * 1024), metrics=metrics)
    app.add_middleware(RequestLog, metrics=metrics, log_text=config.log_text)
    return app


class UploadLimit:
    """Answers 413 from the ``Content-Length`` header before the body is parsed. The body is read and
    dropped first: a client still sending when the answer comes would see a reset, not the 413."""

    def __init__(self, app, limit: int, metrics: Metrics):
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is None or not length.isdigit() or int(length) <= self.limit:
            return await self.app(scope, receive, send)
        while (await receive()).get("more_body", False):
            pass
        scope.setdefault("state", {})["error_kind"] = "too_large"
        err = transcriptions.too_large(int(length), self.limit / 1024 / 1024)
        await _send_json(send, err.status, error_body(err.message, err.type, err.code, err.param))


#: which process answered (``x-mkd-replica``): behind a load balancer or Ray Serve, which replica it was
REPLICA_ID = f"{socket.gethostname()}/{os.getpid()}"


class RequestLog:
    """One log line per request (id, route, status, audio seconds, latency; the text only with
    ``--log-text``), the ``x-request-id`` and ``x-mkd-replica`` headers, and the request/error counters."""

    def __init__(self, app, metrics: Metrics, log_text: bool):
        self.app, self.metrics, self.log_text = app, metrics, log_text

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        status = 500

        async def send_wrapped(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers += [(b"x-request-id", rid.encode()), (b"x-mkd-replica", REPLICA_ID.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            self._record(scope, rid, status, time.perf_counter() - t0)

    def _record(self, scope, rid: str, status: int, seconds: float) -> None:
        path, state = scope["path"], scope.get("state", {})
        if path in ("/health", "/metrics"):
            return  # probes would drown the log and the counters
        self.metrics.requests.labels(route=path, status=str(status)).inc()
        if status >= 400:
            self.metrics.errors.labels(kind=state.get("error_kind", "internal" if status >= 500 else "other")).inc()
        audio = state.get("audio_seconds")
        line = f"id={rid} {scope['method']} {path} status={status} latency_ms={seconds * 1000:.0f}"
        line += f" audio_s={audio:.2f}" if audio is not None else ""
        if self.log_text and "text" in state:
            line += f" text={state['text']!r}"
        logger.info(line)


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class _Server(uvicorn.Server):
    """SIGTERM is how a service manager stops a server: drain, then exit 0. (uvicorn re-raises a caught
    signal after its graceful shutdown, so the process would end killed by SIGTERM, status -15.)"""

    def handle_exit(self, sig: int, frame) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            self._captured_signals.clear()  # uvicorn's list of signals to re-raise (server.py)


def configure_logging() -> None:
    """The server's log format (one line per record, with time and logger), for `mkd serve` and its Ray
    replicas alike."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(config: ServeConfig) -> None:
    """Serve until SIGTERM/SIGINT (blocking)."""
    configure_logging()
    logger.setLevel(logging.INFO)
    app = create_app(config)
    server = _Server(
        uvicorn.Config(app, host=config.host, port=config.port, access_log=False, log_level="info", lifespan="on")
    )
    server.run()
