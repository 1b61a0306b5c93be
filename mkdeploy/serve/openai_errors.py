"""Errors in OpenAI's JSON shape, so the ``openai`` SDK raises the matching exception
(``BadRequestError`` for 400, ``AuthenticationError`` for 401, ``RateLimitError`` for 429,
``InternalServerError`` for 5xx): ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("mkdeploy.serve")


class OpenAIError(Exception):
    """An error answered as OpenAI answers it.

    Args:
        status: HTTP status.
        message: one line naming what was wrong and the fix.
        kind: the metrics label (bad_audio, too_large, unauthorized, queue_full, timeout, ...).
        code: OpenAI's ``code`` field.
        type: OpenAI's ``type`` field.
        param: the request field at fault.
        headers: extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        code: str | None = None,
        type: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.code, self.type, self.param, self.headers = code, type, param, headers or {}


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: OpenAIError) -> JSONResponse:
    return JSONResponse(error_body(err.message, err.type, err.code, err.param), err.status, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app can return, in OpenAI's shape; the kind is left on ``request.state`` for the
    metrics and the request log."""

    @app.exception_handler(OpenAIError)
    async def _openai(request: Request, exc: OpenAIError) -> JSONResponse:
        request.state.error_kind = exc.kind
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        request.state.error_kind = "bad_request"
        msg = f"{field or 'request'}: {first.get('msg', 'invalid')}"
        return JSONResponse(error_body(msg, "invalid_request_error", None, field), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        request.state.error_kind = "not_found" if exc.status_code == 404 else "bad_request"
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # one line per failure with the traceback in the log; the caller gets OpenAI's server_error shape
        logger.exception("internal error on %s", request.url.path)
        request.state.error_kind = "internal"
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"), 500)
