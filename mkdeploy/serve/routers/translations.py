"""``POST /v1/audio/translations``, multipart as OpenAI defines it (``file``, ``model``, ``prompt``,
``response_format``, ``temperature``): speech in any language Whisper knows, text in English (Whisper's
``translate`` task; its language is detected first). Multilingual models only: an ``.en`` model was never
taught the task, so it answers 400 rather than an English transcript that looks like a translation."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile

from mkdeploy.serve.auth import require_api_key
from mkdeploy.serve.openai_errors import OpenAIError
from mkdeploy.serve.routers.transcriptions import check_ready, handle_audio

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


@router.post("/audio/translations")
async def create_translation(
    request: Request,
    file: UploadFile = File(...),
    model: str = Form(...),
    prompt: str | None = Form(None),
    response_format: str = Form("json"),
    temperature: float = Form(0.0),
) -> Response:
    state = request.app.state
    check_ready(state)
    if not state.engine.transcriber.multilingual:
        raise OpenAIError(
            400,
            f"model {state.config.served_id!r} is English-only and cannot translate; serve a multilingual "
            "Whisper (e.g. base, not base.en) for /v1/audio/translations",
            "bad_request",
            param="model",
        )
    return await handle_audio(request, file, model, None, prompt, response_format, temperature, [], task="translate")
