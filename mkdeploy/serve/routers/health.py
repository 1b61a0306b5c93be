"""``GET /health`` (200 only once the model is loaded and warmed) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from mkdeploy.serve.schemas import Health

router = APIRouter()


@router.get("/health", response_model=Health)
def health(request: Request) -> JSONResponse:
    state = request.app.state
    name = state.config.served_id
    if state.engine.ready.is_set():
        return JSONResponse(Health(status="ok", model=name).model_dump(exclude_none=True))
    if state.engine.error:
        return JSONResponse(Health(status="failed", model=name, detail=state.engine.error).model_dump(), 503)
    return JSONResponse(Health(status="loading", model=name).model_dump(exclude_none=True), 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
