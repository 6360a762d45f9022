"""The local Oxen-compatible server's routes (see ../../shared/oxen-api.md for the contract).

Where the contract says 'unknown', the choice made here is written next to the code. Every URL
in a JSON answer is absolute, built from the request's own base URL.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..recipe import MODEL_ID, PARAMETERS, SEED_MAX, bundled_schema, draw_seed
from .engines import EngineConfig, get_engine
from .events import Event, EventHub
from .faults import FaultInjector, FaultMiddleware, Faults, drop_connection
from .httpio import (
    ApiProblem,
    authorize,
    on_crash,
    on_http_exception,
    on_problem,
    read_json_object,
)
from .inputs import InputLimits
from .results import MEMORY_BUDGET, ResultFiles
from .store import CANCELLED, SUCCEEDED, Row, Store
from .worker import WorkerPool, build_recipe

MODEL_NAME = "FLUX.2 Klein 4B"
PING_SECONDS = 15
QUEUE_FIELDS = frozenset({"model", "num_generations", "target_namespace", *PARAMETERS})
SYNC_FIELDS = frozenset({"model", "target_namespace", *PARAMETERS})
FILE_NAME = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(?:png|jpg|webp)"
)
FILE_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable"}


@dataclass(frozen=True)
class Limits:
    """Caps that turn oversized requests into 4xx answers instead of memory trouble."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_prompt_chars: int = 10_000
    inputs: InputLimits = field(default_factory=InputLimits)
    results_in_memory_bytes: int = MEMORY_BUDGET  # past it, the oldest results go to a temp folder


class Runtime:
    """Everything behind the routes, at app.state.flux. LocalServer and the CLI close it."""

    def __init__(
        self,
        *,
        api_key: str | None,
        step_delay: float,
        engine: str | EngineConfig,
        workers: int,
        faults: Faults | None,
        limits: Limits,
        files_url: str | None = None,
    ) -> None:
        self.api_key = api_key or None
        self.files_url = files_url.rstrip("/") if files_url else None
        self.engine = EngineConfig.of(engine)
        self.engine.check_available()  # missing libraries: one line now, not at the first image
        self.engine_label = self.engine.label
        self.limits = limits
        self.results = ResultFiles(limits.results_in_memory_bytes)
        self.hub = EventHub()
        self.store = Store(self.hub, self.engine_label)
        self.pool = WorkerPool(
            self.store,
            self.results,
            engine=self.engine,
            workers=workers,
            step_delay=step_delay,
            input_limits=limits.inputs,
        )
        self.faults = FaultInjector(faults) if faults is not None else None

    def preload(self) -> None:
        """Load the engine's model now rather than at the first generation (EngineUnavailable)."""
        engine = get_engine(self.engine)
        if hasattr(engine, "preload"):
            engine.preload()

    def close_streams(self) -> None:
        """End every SSE stream (before a server shutdown, so it need not wait for them)."""
        self.hub.close()

    def close(self) -> None:
        """End streams, stop workers, delete the results. Safe to call twice."""
        self.hub.close()
        self.pool.close()
        self.results.close()


def runtime(request: Request) -> Runtime:
    return request.app.state.flux


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def files_base(request: Request) -> str:
    """The base of result URLs: the request's own, or files_url (files on another host, like a CDN)."""
    return runtime(request).files_url or base_url(request)


# --- request checks ------------------------------------------------------------------------------


def check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Local choice: unknown top-level fields are refused at once (400), typos included."""
    for name in body:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            tip = f" Did you mean {close[0]!r}?" if close else ""
            raise ApiProblem(
                400,
                "unknown_field",
                f"unknown field {name!r}.{tip} Allowed: {', '.join(sorted(allowed))}.",
                field=name,
            )


def check_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise ApiProblem(
            400, "invalid_request", f"model is required: use {MODEL_ID!r}.", field="model"
        )
    if model != MODEL_ID:
        raise ApiProblem(
            404,
            "model_not_found",
            f"model {str(model)[:80]!r} is not served here; this server serves {MODEL_ID!r}.",
            field="model",
        )
    return model


def check_prompt(body: dict[str, Any], limits: Limits) -> None:
    """Local choice: a prompt over the cap is refused at once (400), not at run time."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) and len(prompt) > limits.max_prompt_chars:
        raise ApiProblem(
            400,
            "prompt_too_long",
            f"prompt has {len(prompt)} characters; at most {limits.max_prompt_chars} are taken.",
            field="prompt",
        )


def model_params(body: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """The model parameters of a request, with a seed.

    No seed given: the server draws one per generation and records it in the row, so every image
    can be made again. A valid seed with num_generations > 1: generation i gets seed + i (so the
    images differ and each row names the seed that made it). An invalid seed is kept as sent,
    for the run to fail on.
    """
    params = {k: body[k] for k in PARAMETERS if body.get(k) is not None}
    seed = params.get("seed")
    if seed is None:
        params["seed"] = draw_seed()
    elif type(seed) is int and 0 <= seed <= SEED_MAX:
        params["seed"] = (seed + index) % (SEED_MAX + 1)
    return params


def num_generations(body: dict[str, Any]) -> int:
    n = body.get("num_generations")
    if n is None:
        return 1
    if type(n) is not int or not 1 <= n <= 4:
        raise ApiProblem(
            400,
            "invalid_request",
            f"num_generations={n!r} is not valid (allowed: integer from 1 to 4).",
            field="num_generations",
        )
    return n


def own_row(request: Request, rt: Runtime, owner: str) -> Row:
    generation_id = request.path_params["generation_id"]
    row = rt.store.get(generation_id, owner)
    if row is None:
        raise ApiProblem(
            404, "generation_not_found", f"no generation {generation_id[:64]!r} for this API key."
        )
    return row


# --- queue ----------------------------------------------------------------------------------------


async def enqueue(request: Request) -> JSONResponse:
    """POST /api/ai/queue. Like the hosted queue, model parameters are not checked here: a bad one
    makes the generation fail when it runs. Malformed bodies, unknown fields and caps are (4xx)."""
    rt = runtime(request)
    owner = authorize(request, rt.api_key)
    body = await read_json_object(request, rt.limits.max_body_bytes)
    check_fields(body, QUEUE_FIELDS)
    model = check_model(body)
    n = num_generations(body)
    check_prompt(body, rt.limits)
    rows = [rt.store.create(owner, model, model_params(body, i)) for i in range(n)]
    for row in rows:
        rt.pool.submit(row)
    return JSONResponse(
        {"generations": [{"generation_id": r.id, "status": "queued"} for r in rows]}
    )


async def get_generation(request: Request) -> JSONResponse:
    rt = runtime(request)
    row = own_row(request, rt, authorize(request, rt.api_key))
    return JSONResponse(rt.store.view(row, files_base(request)))


async def list_generations(request: Request) -> JSONResponse:
    """GET /api/ai/queue[?model=]: the caller's generations, newest first, finished ones too."""
    rt = runtime(request)
    owner = authorize(request, rt.api_key)
    base = files_base(request)
    rows = rt.store.rows(owner, request.query_params.get("model"))
    return JSONResponse({"generations": [rt.store.view(r, base, brief=True) for r in rows]})


async def cancel_generation(request: Request) -> JSONResponse:
    """DELETE /api/ai/queue/{id} and POST .../cancel (hosted call unknown: both are offered).
    Queued or processing: cancelled now. Already finished: answered unchanged, still 200."""
    rt = runtime(request)
    row = own_row(request, rt, authorize(request, rt.api_key))
    rt.store.cancel(row)
    return JSONResponse(rt.store.view(row, files_base(request)))


# --- sync -----------------------------------------------------------------------------------------


async def images_generate(request: Request) -> JSONResponse:
    return await run_sync(request, edit=False)


async def images_edit(request: Request) -> JSONResponse:
    return await run_sync(request, edit=True)


async def run_sync(request: Request, *, edit: bool) -> JSONResponse:
    """Validate at once (400 naming the field), run ahead of the queue, answer when done.

    The hosted response shape is unknown; this one carries the URL twice (images[0].url and
    result_url) plus the generation id and seed. A generation that fails answers 422; one
    cancelled meanwhile (DELETE on its id) answers 409.
    """
    rt = runtime(request)
    owner = authorize(request, rt.api_key)
    body = await read_json_object(request, rt.limits.max_body_bytes)
    check_fields(body, SYNC_FIELDS)
    model = check_model(body)
    check_prompt(body, rt.limits)
    params = model_params(body)
    if edit and not params.get("input_image"):
        raise ApiProblem(
            400,
            "invalid_parameter",
            "input_image is required by /api/ai/images/edit: give the image(s) to edit.",
            field="input_image",
        )
    try:
        build_recipe(model, params)
    except (ValueError, TypeError) as exc:
        field_name = getattr(exc, "field", None)
        raise ApiProblem(
            400, "invalid_parameter", getattr(exc, "message", str(exc)), field=field_name
        ) from None
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    row = rt.store.create(owner, model, params)
    row.on_done = lambda _row: _wake(loop, done)
    rt.pool.submit(row, urgent=True)
    await done
    view = rt.store.view(row, files_base(request))
    if view["status"] == SUCCEEDED:
        return JSONResponse(
            {
                "status": "success",
                "generation_id": row.id,
                "images": [{"url": view["result_url"]}],
                "result_url": view["result_url"],
                "seed": params["seed"],
            }
        )
    status, code = (
        (409, "generation_cancelled") if view["status"] == CANCELLED else (422, "generation_failed")
    )
    raise ApiProblem(status, code, view["error_message"] or view["status"], generation_id=row.id)


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed: the server stopped, nobody is waiting
        pass


# --- model, files, events --------------------------------------------------------------------------


async def get_model(request: Request) -> JSONResponse:
    rt = runtime(request)
    authorize(request, rt.api_key)
    model_id = request.path_params["model_id"]
    if model_id != MODEL_ID:
        raise ApiProblem(
            404, "model_not_found", f"no model {model_id[:80]!r}; this server serves {MODEL_ID!r}."
        )
    model = {
        "id": MODEL_ID,
        "name": MODEL_NAME,
        "type": "image",
        "description": rt.engine.description,
        "json_request_schema": bundled_schema(),
    }
    return JSONResponse({"status": "success", "model": model})


async def get_file(request: Request) -> Response:
    """GET /api/files/{id}.{ext}. No auth, like a CDN URL (whether hosted result URLs need the token
    is unknown). The name must be a generation id plus a known extension: anything else is 404."""
    rt = runtime(request)
    name = request.path_params["name"]
    row = rt.store.get(name.partition(".")[0]) if FILE_NAME.fullmatch(name) else None
    if row is None or row.file_name != name:
        raise ApiProblem(404, "file_not_found", "no such result file.")
    found = rt.results.get(name)
    if found is None:  # the server is closing
        raise ApiProblem(404, "file_not_found", "no such result file.")
    media_type = row.content_type or "application/octet-stream"
    if rt.faults is not None and rt.faults.cut_download():
        return CutFileResponse(found, media_type)
    if isinstance(found, Path):
        return FileResponse(found, media_type=media_type, headers=FILE_HEADERS)
    return Response(found, media_type=media_type, headers=FILE_HEADERS)


class CutFileResponse(Response):
    """Fault: the full Content-Length, half the bytes, then the connection drops."""

    def __init__(self, found: bytes | Path, media_type: str) -> None:
        self.found, self.media_type = found, media_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.found
        data = await anyio.Path(found).read_bytes() if isinstance(found, Path) else found
        headers = [
            (b"content-type", self.media_type.encode()),
            (b"content-length", str(len(data)).encode()),
        ]
        await drop_connection(send, headers, data[: len(data) // 2])


def sse_message(event: Event, base: str) -> ServerSentEvent:
    data = event.data
    if data.get("result_url"):
        url = base + data["result_url"]
        data = {**data, "result_url": url, "url": url}
    return ServerSentEvent(
        data=json.dumps(data, separators=(",", ":")), event=event.name, id=str(event.id)
    )


def last_event_id(request: Request) -> int | None:
    """The header as an id, or None for anything that is not a plain decimal of sane length
    (str.isdigit alone lets in '²' and 5000-digit numbers, which int() refuses)."""
    value = request.headers.get("last-event-id", "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 30 else None


async def events(request: Request) -> EventSourceResponse:
    """GET /api/events: the caller's events as SSE, after a replay of what it missed (events.py).

    The stream is registered before the response starts: once a client has the headers, it gets
    every later event. It ends when the client leaves or the server stops (the hub sends None).
    """
    rt = runtime(request)
    owner = authorize(request, rt.api_key)
    sub, backlog = rt.hub.subscribe(owner, last_event_id(request))
    base = files_base(request)
    injector = rt.faults
    cut_after = injector.faults.sse_cut_after if injector is not None else None
    silent = injector is not None and injector.faults.sse_silent

    async def stream():
        try:
            if silent:
                injector.count("sse_silent")
                while await sub.queue.get() is not None:
                    pass
                return
            sent = 0
            pending = iter(backlog)
            while cut_after is None or sent < cut_after:
                event = next(pending, None) or await sub.queue.get()
                if event is None:
                    return
                yield sse_message(event, base)
                sent += 1
            injector.count("sse_cut")
        finally:
            rt.hub.unsubscribe(sub)

    async def forget() -> None:  # also when the stream never started
        rt.hub.unsubscribe(sub)

    return EventSourceResponse(
        stream(), ping=0 if silent else PING_SECONDS, background=BackgroundTask(forget)
    )


# --- the rest -------------------------------------------------------------------------------------


async def index(request: Request) -> JSONResponse:
    rt = runtime(request)
    return JSONResponse(
        {
            "name": "flux-nb local server",
            "about": "an offline stand-in for Oxen.ai's inference API; its images are not FLUX's"
            if rt.engine.is_stand_in
            else "an Oxen.ai-compatible API in front of FLUX.2 Klein running on this machine",
            "engine": rt.engine_label,
            "description": rt.engine.description,
            "models": [MODEL_ID],
            "events": base_url(request) + "/api/events",
        }
    )


async def faults_endpoint(request: Request) -> JSONResponse:
    """GET: config and counters. POST: replace the config (counters restart from zero)."""
    injector = runtime(request).faults
    assert injector is not None
    if request.method == "POST":
        body = await read_json_object(request, 1024 * 1024)
        try:
            injector.replace(Faults.from_dict(body))
        except ValueError as exc:
            raise ApiProblem(400, "invalid_faults", str(exc)) from None
    return JSONResponse(injector.report())


def create_app(
    *,
    api_key: str | None = None,
    step_delay: float = 0.0,
    engine: str | EngineConfig = "preview",
    workers: int = 2,
    faults: Faults | None = None,
    limits: Limits | None = None,
    files_url: str | None = None,
) -> Starlette:
    """The local server as an ASGI app. With api_key, /api/ai/* and /api/events need that bearer
    token; step_delay (seconds per engine step) makes progress and cancel visible; faults turns
    on fault injection and /_faults; limits overrides the size caps; files_url makes result URLs
    point at another origin (a CDN in front of this server's /api/files/, say). engine: a name or
    an EngineConfig (flux2-klein: its model, device, dtype; it runs with a single worker)."""
    if step_delay < 0:
        raise ValueError("step_delay must be >= 0")
    rt = Runtime(
        api_key=api_key,
        step_delay=step_delay,
        engine=engine,
        workers=workers,
        faults=faults,
        limits=limits or Limits(),
        files_url=files_url,
    )
    routes = [
        Route("/", index),
        Route("/api/ai/queue", enqueue, methods=["POST"]),
        Route("/api/ai/queue", list_generations, methods=["GET"]),
        Route("/api/ai/queue/{generation_id}", get_generation, methods=["GET"]),
        Route("/api/ai/queue/{generation_id}", cancel_generation, methods=["DELETE"]),
        Route("/api/ai/queue/{generation_id}/cancel", cancel_generation, methods=["POST"]),
        Route("/api/ai/images/generate", images_generate, methods=["POST"]),
        Route("/api/ai/images/edit", images_edit, methods=["POST"]),
        Route("/api/ai/models/{model_id}", get_model, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/files/{name:path}", get_file, methods=["GET"]),
    ]
    middleware = []
    if rt.faults is not None:
        routes.append(Route("/_faults", faults_endpoint, methods=["GET", "POST"]))
        middleware.append(Middleware(FaultMiddleware, injector=rt.faults))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ApiProblem: on_problem,
            HTTPException: on_http_exception,
            Exception: on_crash,
        },
    )
    app.state.flux = rt
    return app
