"""The OpenAI-compatible HTTP API and the voice-chat page, as a FastAPI app.

Routes: POST /v1/chat/completions (JSON, optionally streamed as server-sent events), POST /v1/audio/transcriptions
(multipart), GET /v1/models, GET /health, GET / (the page) and /static/*. Request checking, audio fetching and
decoding run in worker threads; the model runs only in the scheduler's thread. Every error is OpenAI's error JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from auralm.audio import SAMPLE_RATE
from auralm.infer.api import AudioChat, BatchDecoder
from auralm.infer.sampling import GenerationConfig
from auralm.infer.transcribe import Transcript
from auralm.infer.transcript_formats import to_srt, to_verbose, to_vtt
from auralm.serve.audio_input import AudioReader
from auralm.serve.compiling import DecodeCompiler
from auralm.serve.errors import ServeError, bad_request, too_large
from auralm.serve.fetch import AudioFetcher, FetchPolicy
from auralm.serve.health import check as check_health
from auralm.serve.limits import BodyLimit, SecurityHeaders
from auralm.serve.protocol import (
    ChatRequest,
    TranscriptionRequest,
    build_inputs,
    parse_chat,
    parse_json,
    parse_transcription,
)
from auralm.serve.scheduler import Delta, Failed, Finished, Job, QueueFull, Scheduler
from auralm.serve.settings import ServeSettings

log = logging.getLogger("auralm.serve")

STATIC_DIR = Path(__file__).parent / "static"
WINDOW_WAIT_SECONDS = 60.0  # how long a transcription window waits for a queue slot
MAX_FORM_FIELDS = 16
MAX_FORM_FIELD_BYTES = 64 * 1024


class ClientGone(Exception):
    """The client disconnected; nobody is waiting for the answer."""


@dataclass(frozen=True)
class ServeContext:
    """What the routes share: the loaded model and the server's settings, audio fetcher and scheduler."""

    chat: AudioChat
    settings: ServeSettings
    fetcher: AudioFetcher
    scheduler: Scheduler
    created: int  # the model card's creation time (Unix seconds)
    compiler: DecodeCompiler  # the decode step's compile state (settings.compile)

    def admit_check(self) -> None:
        """Refuse before any work when the queue is full or the scheduler is down."""
        if not self.scheduler.alive:
            raise ServeError(503, "the model is not running", "unavailable")
        if self.scheduler.queued >= self.settings.max_queue:
            raise self.busy()

    def busy(self) -> ServeError:
        return ServeError(429, "the server is busy; retry shortly", "queue_full",
                          headers={"Retry-After": str(self.settings.retry_after_seconds)})

    def submit(self, job: Job, wait: float = 0.0) -> None:
        """Queue a job; 429 when the queue stays full for `wait` seconds, 503 when the scheduler is down."""
        try:
            self.scheduler.submit(job, wait=wait)
        except QueueFull:
            raise self.busy() from None
        except RuntimeError:
            raise ServeError(503, "the model is not running", "unavailable") from None

    def model_card(self) -> dict[str, Any]:
        return {"id": self.settings.model_name, "object": "model", "created": self.created, "owned_by": "auralm"}


def create_app(chat: AudioChat, settings: ServeSettings, fetcher: AudioFetcher | None = None,
               announce: Callable[[str], None] | None = None) -> FastAPI:
    """The server for one loaded model. `fetcher` replaces the one built from `settings` (tests pass hooks);
    `announce` prints the compile progress (default: the auralm.serve logger at INFO)."""
    scheduler = Scheduler(chat.model, chat.processor.decode, settings.max_batch, settings.max_queue, chat.step_fn)
    fetcher = fetcher or AudioFetcher(FetchPolicy.from_settings(settings))
    compiler = DecodeCompiler(chat, scheduler, settings.compile, announce or log.info)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        scheduler.start()
        compiler.start()
        yield
        await run_in_threadpool(scheduler.close)

    app = FastAPI(title="auralm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.context = ServeContext(chat, settings, fetcher, scheduler, int(time.time()), compiler)  # what routes read
    app.state.scheduler = scheduler  # its stats, for whoever holds the app (tests, an embedding program)
    app.state.compiler = compiler
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(public)
    app.include_router(v1)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _context(request: Request) -> ServeContext:
    return request.app.state.context


Context = Annotated[ServeContext, Depends(_context)]


def _authorized(request: Request, key: str | None) -> bool:
    """True when no key is configured or the request carries it as `Authorization: Bearer <key>`."""
    if key is None:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


async def require_key(request: Request, ctx: Context) -> None:
    if not _authorized(request, ctx.settings.api_key):
        raise ServeError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')", "invalid_api_key")


public = APIRouter()  # the page and the health check, open to everyone
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])  # OpenAI's routes, behind the API key


# ---- page and health ---------------------------------------------------------------------------------------------
@public.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@public.get("/health")
async def health(request: Request, ctx: Context) -> JSONResponse:
    """200 when the scheduler is alive and making progress and descriptors are free, else 503 with the reason.

    Who sees what: a probe needs only the status and the HTTP code, and must get them without a credential, so
    /health stays open. The details (model name, queue depth, counters, descriptor use, the reason) tell an outsider
    what runs here and how busy it is, so when an API key is configured they need it too, as /v1 does; a missing or
    wrong key gets {"status"} alone, not a 401. Without a key anyone who reaches the server may use all of /v1
    anyway (and it binds to loopback unless told otherwise), so hiding the details would protect nothing.
    """
    state = check_health(ctx.scheduler, ctx.settings)
    code = 200 if state.ok else 503
    if not _authorized(request, ctx.settings.api_key):
        return JSONResponse({"status": state.status}, status_code=code)
    scheduler = ctx.scheduler
    return JSONResponse(
        {"status": state.status, "reason": state.reason, "model": ctx.settings.model_name,
         "queued": scheduler.queued, "running": scheduler.running, "stalled_seconds": state.stalled_for,
         "open_fds": state.open_fds, "fd_limit": state.fd_limit,
         "api_key_required": ctx.settings.api_key is not None, "decode": ctx.compiler.status(),
         "stats": asdict(scheduler.stats)},
        status_code=code,
    )


# ---- models ------------------------------------------------------------------------------------------------------
@v1.get("/models")
async def models(ctx: Context) -> dict[str, Any]:
    return {"object": "list", "data": [ctx.model_card()]}


@v1.get("/models/{model_id}")
async def model(model_id: str, ctx: Context) -> dict[str, Any]:
    if model_id != ctx.settings.model_name:
        raise ServeError(404, f"this server serves the model '{ctx.settings.model_name}' only", "model_not_found")
    return ctx.model_card()


# ---- chat --------------------------------------------------------------------------------------------------------
@v1.post("/chat/completions")
async def chat_completions(request: Request, ctx: Context) -> Response:
    _require_type(request, "application/json")
    payload = parse_json(await request.body())
    ctx.admit_check()
    parsed, inputs = await run_in_threadpool(_prepare_chat, ctx, payload)
    if await request.is_disconnected():
        return Response(status_code=499)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = Job(inputs, parsed.config, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev), parsed.stop)
    ctx.submit(job)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": ctx.settings.model_name}
    if parsed.stream:
        return StreamingResponse(
            _sse(job, events, head, parsed.include_usage), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        text, finished = await _collect(job, events, request)
    except ClientGone:
        return Response(status_code=499)
    return JSONResponse({
        **head, "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finished.reason}],
        "usage": _usage(finished),
    })


def _prepare_chat(ctx: ServeContext, payload: dict[str, Any]) -> tuple[ChatRequest, dict[str, torch.Tensor]]:
    """Runs in a worker thread: check the request, fetch and decode its audio, build the prompt (B = 1)."""
    reader = AudioReader(ctx.fetcher, ctx.settings.max_audio_bytes, ctx.settings.max_audio_seconds)
    request = parse_chat(payload, ctx.settings, ctx.chat.defaults, reader)
    return request, build_inputs(ctx.chat, request.conversation, ctx.settings)


# ---- transcription -----------------------------------------------------------------------------------------------
@v1.post("/audio/transcriptions")
async def transcriptions(request: Request, ctx: Context) -> Response:
    _require_type(request, "multipart/form-data")
    parsed, data = await _read_transcription_form(request, ctx.settings)
    ctx.admit_check()
    reader = AudioReader(ctx.fetcher, ctx.settings.max_audio_bytes, ctx.settings.max_transcribe_seconds)
    wave = await run_in_threadpool(reader.decode, data, "file")
    gone = threading.Event()
    work = asyncio.ensure_future(run_in_threadpool(_transcribe, ctx, wave, parsed, gone))
    work.add_done_callback(_consume)  # after a disconnect nobody awaits it; its ClientGone must not be logged
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            gone.set()
            return Response(status_code=499)
        result = work.result()
    finally:
        watcher.cancel()
    return _transcription_response(result, parsed.response_format, len(wave) / SAMPLE_RATE, parsed.word_timestamps)


async def _read_transcription_form(request: Request, settings: ServeSettings) -> tuple[TranscriptionRequest, bytes]:
    """The checked form fields and the uploaded audio's bytes (413 past `max_audio_bytes`)."""
    async with request.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_FIELD_BYTES) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise bad_request("the form needs the audio as a 'file' part", param="file")
        fields: dict[str, Any] = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        fields["timestamp_granularities[]"] = [  # OpenAI's clients send the [] form; plain HTML forms may not
            v for key in ("timestamp_granularities[]", "timestamp_granularities") for v in form.getlist(key)
            if isinstance(v, str)
        ]
        parsed = parse_transcription(fields, settings)
        data = await upload.read(settings.max_audio_bytes + 1)
    if len(data) > settings.max_audio_bytes:
        raise too_large(f"the audio is larger than this server's limit of {settings.max_audio_bytes} bytes",
                        "audio_too_large", "file")
    return parsed, data


def _transcribe(ctx: ServeContext, wave: np.ndarray, parsed: TranscriptionRequest, gone: threading.Event) -> Transcript:
    """Runs in a worker thread: the library's transcription (speech gate, detected language, word times when asked),
    each window a job for the scheduler and within `window_budget` with the server's `default_max_tokens` as the
    cap of every window."""
    return ctx.chat.transcribe_wave(
        wave, parsed.language, timestamps=parsed.word_timestamps, decode=_scheduler_decoder(ctx, gone),
        cap=ctx.settings.default_max_tokens, do_sample=parsed.temperature > 0, temperature=parsed.temperature or 1.0,
    )


def _scheduler_decoder(ctx: ServeContext, gone: threading.Event) -> BatchDecoder:
    """A `BatchDecoder` for one prompt that queues it as a scheduler job (waiting up to WINDOW_WAIT_SECONDS for a
    slot) and waits for its answer; raises ClientGone, cancelling the job, once `gone` is set."""

    def decode(inputs: dict[str, torch.Tensor], config: GenerationConfig, skip_special_tokens: bool) -> list[str]:
        if gone.is_set():
            raise ClientGone()
        events: queue.SimpleQueue = queue.SimpleQueue()
        job = Job(inputs, config, events.put, skip_special_tokens=skip_special_tokens)
        ctx.submit(job, wait=WINDOW_WAIT_SECONDS)
        parts = []
        while True:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                if gone.is_set():
                    job.cancel()
                    raise ClientGone() from None
                continue
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Finished):
                return ["".join(parts).strip()]
            elif isinstance(event, Failed):
                raise event.error

    return decode


def _transcription_response(
    result: Transcript, response_format: str, duration: float, word_timestamps: bool = False,
) -> Response:
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format == "srt":
        return PlainTextResponse(to_srt(result))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(result), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(to_verbose(result, duration, words=word_timestamps))
    return JSONResponse({"text": result.text, "language": result.language})


# ---- answering ----------------------------------------------------------------------------------------------
def _usage(finished: Finished) -> dict[str, int]:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body must have been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _collect(job: Job, events: asyncio.Queue, request: Request) -> tuple[str, Finished]:
    """The whole answer; cancels the job if the client disconnects while it waits."""

    async def watch() -> None:
        await _disconnected(request)
        job.cancel()
        events.put_nowait(None)

    watcher = asyncio.ensure_future(watch())
    parts: list[str] = []
    try:
        while True:
            event = await events.get()
            if event is None:
                raise ClientGone()
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Finished):
                return "".join(parts), event
            elif isinstance(event, Failed):
                raise event.error
    finally:
        watcher.cancel()


async def _sse(job: Job, events: asyncio.Queue, head: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`; closing the stream early (the
    client went away) cancels the job, which frees its slot."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            event = await events.get()
            if isinstance(event, Delta):
                yield chunk({"content": event.text})
            elif isinstance(event, Finished):
                yield chunk({}, event.reason)
                if include_usage:
                    yield f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [], 'usage': _usage(event)})}\n\n"
                break
            elif isinstance(event, Failed):
                yield f"data: {json.dumps(event.error.body())}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # no effect once finished; frees the slot when the client left mid-answer


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _require_type(request: Request, expected: str) -> None:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != expected:
        raise ServeError(415, f"send the request as {expected}", "unsupported_media_type")


# ---- error responses ----------------------------------------------------------------------------------------
async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


_HTTP_MESSAGES = {
    400: ("the multipart form is malformed or exceeds the form limits", "invalid_form"),
    404: ("no such route", "not_found"),
    405: ("method not allowed on this route", "method_not_allowed"),
}


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    message, code = _HTTP_MESSAGES.get(exc.status_code, ("the request was refused", "invalid_request"))
    return JSONResponse(ServeError(exc.status_code, message, code).body(), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("internal error", exc_info=exc)
    return JSONResponse(ServeError(500, "internal server error", "internal_error").body(), status_code=500)
