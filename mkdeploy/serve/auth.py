"""API-key check for the /v1 routes (OpenAI's ``Authorization: Bearer KEY``)."""

from __future__ import annotations

import secrets

from fastapi import Request

from mkdeploy.serve.openai_errors import OpenAIError


async def require_api_key(request: Request) -> None:
    """Pass when no key is configured or the bearer token matches it (compared in constant time)."""
    key = request.app.state.config.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
        raise OpenAIError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer KEY' with the key the server was started with",
            "unauthorized",
            code="invalid_api_key",
        )
