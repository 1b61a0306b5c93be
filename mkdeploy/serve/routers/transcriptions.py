"""``POST /v1/audio/transcriptions``, multipart as OpenAI defines it (``file``, ``model``, ``language``,
``prompt``, ``response_format``, ``temperature``, ``timestamp_granularities[]``)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from mkdeploy.audio import decode_audio_bytes
from mkdeploy.constants import WINDOW_SAMPLES
from mkdeploy.errors import AudioError, AudioTooLong, MkdError
from mkdeploy.lean.languages import language_name
from mkdeploy.options import TranscriptionOptions, temperature_ladder
from mkdeploy.results import Transcription
from mkdeploy.serve.auth import require_api_key
from mkdeploy.serve.batcher import QueueFull
from mkdeploy.serve.openai_errors import OpenAIError, error_body
from mkdeploy.serve.schemas import RESPONSE_FORMATS, TranscriptionJson, TranscriptionVerbose
from mkdeploy.transcription.loading import installed
from mkdeploy.transcription.longform import Piece, cut_at_pauses, join
from mkdeploy.transcription.writers import WRITERS

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])

#: accepted as the served model's name as well: clients written for OpenAI send it
OPENAI_MODEL_ALIAS = "whisper-1"
#: seconds a client is told to wait when the queue is full or the model is still loading
RETRY_AFTER_S = 1


@router.post("/audio/transcriptions")
async def create_transcription(
    request: Request,
    file: UploadFile = File(...),
    model: str = Form(...),
    language: str | None = Form(None),
    prompt: str | None = Form(None),
    response_format: str = Form("json"),
    temperature: float = Form(0.0),
    timestamp_granularities: list[str] | None = Form(None, alias="timestamp_granularities[]"),
    stream: bool = Form(False),
) -> Response:
    return await handle_audio(
        request, file, model, language, prompt, response_format, temperature, timestamp_granularities or [],
        task="transcribe", stream=stream,
    )  # fmt: skip


async def handle_audio(
    request: Request,
    file: UploadFile,
    model: str,
    language: str | None,
    prompt: str | None,
    response_format: str,
    temperature: float,
    granularities: list[str],
    task: str,
    stream: bool = False,
) -> Response:
    """What transcriptions and translations share: checks, upload, decoding, the chosen format.

    ``task``: "transcribe", or "translate" (into English; the translations router checks the model first).
    ``stream``: server-sent events as OpenAI's API sends them: ``transcript.text.delta`` per piece decoded
    (pieces cut at VAD pauses, :mod:`mkdeploy.transcription.longform`), then ``transcript.text.done`` with the text.
    """
    state = request.app.state
    t0 = time.perf_counter()
    check_ready(state)
    _check_request(state, model, response_format, temperature, granularities)
    if stream and response_format not in ("json", "text"):
        raise OpenAIError(
            400, f"stream=true sends text deltas; response_format {response_format!r} cannot stream, use json or text",
            "bad_request", param="stream",
        )  # fmt: skip
    data = await file.read()
    limit = int(state.config.max_upload_mb * 1024 * 1024)
    if len(data) > limit:
        raise too_large(len(data), state.config.max_upload_mb)
    name = file.filename or "upload"
    try:
        audio, info = await run_in_threadpool(
            decode_audio_bytes, data, name, max_seconds=state.config.max_audio_seconds
        )
    except AudioTooLong as exc:
        request.state.audio_seconds = exc.seconds
        raise OpenAIError(413, str(exc), "too_long", code="audio_too_long", param="file") from None
    except AudioError as exc:
        raise OpenAIError(400, str(exc), "bad_audio", code="invalid_audio", param="file") from None
    request.state.audio_seconds = info.duration
    # OpenAI: granularities apply to verbose_json; none given means segments
    grains = tuple(granularities) or ("segment",)
    options = replace(
        _options(state, language, prompt, response_format, temperature),
        task=task,
        word_timestamps=response_format == "verbose_json" and "word" in grains,
    )
    long = len(audio) > WINDOW_SAMPLES and state.config.batched_long_form
    if stream:
        # streamed, even a long file with --no-batched-long-form is cut into pieces: deltas need pieces
        cut = len(audio) > WINDOW_SAMPLES and installed("silero_vad")  # the cuts need Silero VAD
        pieces = await run_in_threadpool(cut_at_pauses, audio) if cut else None
        return StreamingResponse(_events(request, state, audio, pieces, options, t0), media_type="text/event-stream")
    if long:
        pieces = await run_in_threadpool(cut_at_pauses, audio)
        try:
            parts = [part async for part in _decode_pieces(state, audio, pieces, options, t0, request)]
        except ClientGone:  # nobody to answer; 499 is nginx's "client closed request", for the log line
            request.state.error_kind = "client_gone"
            return Response(status_code=499)
        result = join("", info.duration, parts)
    else:
        result = await _transcribe(state, audio, options, t0)
    request.state.text = result.text
    state.metrics.latency.observe(time.perf_counter() - t0)
    return _render(result, response_format, options, temperature, grains)


async def _decode_pieces(
    state,
    audio,
    pieces: list[Piece],
    options: TranscriptionOptions,
    t0: float,
    request: Request | None = None,
    background: bool = True,
):
    """(piece, result) in order. ``max_batch`` pieces are queued at a time as background jobs, so one long
    file holds at most that many queue places, and the batcher decodes other callers' clips between its
    batches of pieces (:mod:`mkdeploy.serve.batcher`). On a timeout, an error or a caller who hung up, the
    pieces still queued are withdrawn (the batcher skips them), so an abandoned file stops taking model
    time after the batch already in the decoder."""
    step = max(1, state.config.max_batch)
    hung_up = asyncio.ensure_future(_hung_up(request)) if request is not None else None
    try:
        for k in range(0, len(pieces), step):
            group = pieces[k : k + step]
            tasks = [
                asyncio.ensure_future(_transcribe(state, audio[p.start : p.end], options, t0, background))
                for p in group
            ]
            gathered = asyncio.gather(*tasks)
            try:
                watched: set[asyncio.Future] = {gathered, hung_up} if hung_up else {gathered}
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if not gathered.done():
                    raise ClientGone
                done = gathered.result()
            finally:
                for task in tasks:
                    task.cancel()  # no-op for the finished ones
                if not gathered.done():
                    gathered.cancel()
            for p, r in zip(group, done):
                yield p, r
    finally:
        if hung_up is not None:
            hung_up.cancel()


async def _hung_up(request: Request, every_s: float = 0.25) -> None:
    """Returns once the caller has disconnected (Starlette does not cancel a handler when that happens)."""
    while not await request.is_disconnected():
        await asyncio.sleep(every_s)


class ClientGone(Exception):
    """The caller disconnected while its file was decoding: nothing is left to answer."""


async def _events(request: Request, state, audio, pieces: list[Piece] | None, options, t0: float):
    """OpenAI's transcription stream: a delta per piece with text, then the whole text."""
    texts: list[str] = []
    try:
        whole = [Piece(0, len(audio))]  # a clip of at most 30 s is one piece, a short request's
        chunks = _decode_pieces(state, audio, pieces or whole, options, t0, request, background=pieces is not None)
        async for _, r in chunks:
            if r.text:
                delta = r.text if not texts else " " + r.text
                texts.append(r.text)
                yield _sse({"type": "transcript.text.delta", "delta": delta})
        text = " ".join(texts)
        request.state.text = text
        state.metrics.latency.observe(time.perf_counter() - t0)
        yield _sse({"type": "transcript.text.done", "text": text})
    except ClientGone:  # the caller hung up: stop decoding its file, nobody reads the stream
        return
    except OpenAIError as exc:  # the status line is sent already: the error goes in the stream, in OpenAI's shape
        yield _sse({"type": "error", **error_body(exc.message, exc.type, exc.code, exc.param)})


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def too_large(size: int, limit_mb: float) -> OpenAIError:
    return OpenAIError(
        413,
        f"file: {size / 1e6:.1f} MB is over this server's {limit_mb:g} MB limit; split the audio or raise --max-upload-mb",
        "too_large",
        code="file_too_large",
        param="file",
    )


def check_ready(state) -> None:
    if not state.engine.ready.is_set():
        detail = state.engine.error or "the model is still loading"
        raise OpenAIError(
            503, f"{detail}; retry shortly", "not_ready", type="server_error",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )  # fmt: skip


def _check_request(state, model: str, fmt: str, temperature: float, granularities: list[str]) -> None:
    served = state.config.served_id
    if model not in (served, OPENAI_MODEL_ALIAS):
        raise OpenAIError(
            404, f"model {model!r} is not served here; use {served!r}", "not_found",
            code="model_not_found", param="model",
        )  # fmt: skip
    if fmt not in RESPONSE_FORMATS:
        raise OpenAIError(
            400, f"response_format {fmt!r}: choose {', '.join(RESPONSE_FORMATS)}", "bad_request",
            param="response_format",
        )  # fmt: skip
    if not 0.0 <= temperature <= 1.0:
        raise OpenAIError(
            400, f"temperature {temperature}: must be between 0 and 1", "bad_request", param="temperature"
        )
    bad = [g for g in granularities if g not in ("segment", "word")]
    if bad:
        raise OpenAIError(
            400, f"timestamp_granularities {bad[0]!r}: choose 'segment' and/or 'word'", "bad_request",
            param="timestamp_granularities",
        )  # fmt: skip
    if granularities and fmt != "verbose_json":
        raise OpenAIError(
            400, "timestamp_granularities needs response_format 'verbose_json' (as OpenAI's API)", "bad_request",
            param="timestamp_granularities",
        )  # fmt: skip


def _options(state, language: str | None, prompt: str | None, fmt: str, temperature: float) -> TranscriptionOptions:
    try:
        # none given: a multilingual model detects it per request (OpenAI's API does), an .en model is English
        lang = state.engine.transcriber.check_language(language)
    except MkdError as exc:
        raise OpenAIError(400, str(exc), "bad_request", param="language") from None
    return TranscriptionOptions(
        language=lang,
        return_timestamps=fmt in ("srt", "vtt", "verbose_json"),
        temperatures=temperature_ladder(temperature),  # openai/whisper's, from the temperature asked for
        initial_prompt=prompt or None,
        vad_filter=state.config.vad,
        encoder_buckets=tuple(state.config.encoder_buckets) if state.config.encoder_buckets else None,
        num_beams=state.config.beam_size,
    )


async def _transcribe(
    state, audio, options: TranscriptionOptions, t0: float | None = None, background: bool = False
) -> Transcription:
    """One clip through the batcher, within what is left of the request's ``--request-timeout`` (counted
    from ``t0``, the request's start, so a file decoded in pieces has one deadline, not one per piece).
    ``background``: a piece of a long upload."""
    left = state.config.request_timeout - (time.perf_counter() - t0 if t0 is not None else 0.0)
    try:
        return await asyncio.wait_for(state.batcher.submit(audio, options, background), max(0.0, left))
    except QueueFull:
        raise OpenAIError(
            503, f"server busy: {state.config.max_queue} requests already queued; retry after {RETRY_AFTER_S} s",
            "queue_full", type="server_error", code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None  # fmt: skip
    except asyncio.TimeoutError:
        raise OpenAIError(
            504, f"not finished within {state.config.request_timeout:g} s (--request-timeout); send shorter audio or retry",
            "timeout", type="server_error", code="timeout",
        ) from None  # fmt: skip


def _render(
    result: Transcription, fmt: str, options: TranscriptionOptions, temperature: float, grains: tuple[str, ...]
) -> Response:
    if fmt == "json":
        return JSONResponse(TranscriptionJson(text=result.text).model_dump())
    if fmt == "verbose_json":
        body = TranscriptionVerbose.from_result(
            result, language_name(result.language or options.language), temperature, options.task, grains
        )
        return JSONResponse(body.model_dump())
    if fmt == "text":
        return PlainTextResponse(result.text + "\n" if result.text else "")
    return PlainTextResponse(WRITERS[fmt]("").render(result))
