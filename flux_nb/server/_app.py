"""The local Oxen-compatible server's routes (see ../../shared/oxen-api.md for the contract).

By default it speaks the documented contract and nothing kinder: an active-only list, no event
for cancels, no replay, no seed drawn into the row, errors in the documented envelopes. What only
a local server can offer is opt-in (LocalExtras: progress events, a drawn seed echoed, event
replay; fault injection), and the client never depends on it. Where the contract says 'unknown',
the choice made here is written next to the code. Every URL in a JSON answer is absolute, built
from the request's own base URL.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import json
import logging
import re
import time
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

from ..core._recipe import MODEL_ID, PARAMETERS, SEED_MAX, bundled_schema, draw_seed
from ._assets import demo_asset
from ._events import Event, EventHub, Subscription
from ._faults import FaultInjector, FaultMiddleware, Faults, drop_connection
from ._httpio import (
    ApiProblem,
    Caller,
    authorize,
    bearer_token,
    model_not_found,
    on_crash,
    on_http_exception,
    on_problem,
    read_json_object,
)
from ._inputs import InputLimits
from ._keys import KeyRing
from ._results import MEMORY_BUDGET, ResultFiles
from ._store import STATUSES, SUCCEEDED, TARGET_FIELDS, Row, Store
from ._worker import WorkerPool, build_recipe
from .engines import EngineConfig, engine_slots, get_engine

log = logging.getLogger("flux_nb.server")

MODEL_NAME = "FLUX.2 Klein 4B"
PING_SECONDS = 15
# How often an idle event stream checks that its key is still in the keys file.
KEY_RECHECK_SECONDS = 1.0
# response_format is a documented common parameter; the queue passes it on and ignores it here.
# duration is in Oxen's OpenAPI document (for video models): refused with why (check_duration).
QUEUE_FIELDS = frozenset(
    {"model", "num_generations", "response_format", "duration", *TARGET_FIELDS, *PARAMETERS}
)
SYNC_FIELDS = frozenset({"model", "response_format", "target_namespace", *PARAMETERS})
# Oxen's OpenAPI document (0.243.1) also gives the sync routes OpenAI-style fields: each is
# handled (openapi_fields), none is an unknown field.
GENERATE_FIELDS = SYNC_FIELDS | {"n", "size"}
EDIT_FIELDS = GENERATE_FIELDS | {"image", "mask"}
RESPONSE_FORMATS = ("url", "b64_json")
FILE_NAME = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(?:png|jpg|webp)"
)
FILE_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable"}
FILES_PREFIX = "/api/files/"
ASSETS_PREFIX = "/api/repos/"
# The wait a 429 for a full queue suggests: long enough for some of it to drain.
QUEUE_FULL_RETRY_SECONDS = 30


@dataclass(frozen=True)
class LocalExtras:
    """What only the local server does, each off by default (the hosted API does none of them).

    progress_events: `media_generation_progress` events (step, total) on /api/events.
    echo_drawn_seed: a row made without a seed shows the seed the server drew.
    replay_events: events buffered for a while, with ids, replayed after Last-Event-ID.
    """

    progress_events: bool = False
    echo_drawn_seed: bool = False
    replay_events: bool = False

    def enabled(self) -> list[str]:
        return [name for name, on in vars(self).items() if on]


@dataclass(frozen=True)
class Limits:
    """Caps that turn oversized requests into 4xx answers instead of memory trouble."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_prompt_chars: int = 10_000
    inputs: InputLimits = field(default_factory=InputLimits)
    results_in_memory_bytes: int = MEMORY_BUDGET  # past it, the oldest results go to a temp folder
    max_queued_per_key: int = 1000  # more waiting generations from one key: 429 with Retry-After
    spill_downloaded: bool = False  # a result downloaded whole goes to the temp folder at once


class Runtime:
    """Everything behind the routes, at app.state.flux. LocalServer and the CLI close it."""

    def __init__(
        self,
        *,
        api_key: str | None,
        keys_file: str | Path | None = None,
        allow_private_urls: bool = False,
        step_delay: float,
        engine: str | EngineConfig,
        workers: int,
        faults: Faults | None,
        limits: Limits,
        files_url: str | None = None,
        extras: LocalExtras | None = None,
    ) -> None:
        self.keys = KeyRing(api_key=api_key, keys_file=keys_file)
        self.extras = extras = extras or LocalExtras()
        self.files_url = files_url.rstrip("/") if files_url else None
        self.engine = EngineConfig.of(engine)
        self.engine.check_available()  # missing libraries: one line now, not at the first image
        self.engine_label = self.engine.label
        self.limits = limits
        self.results = ResultFiles(limits.results_in_memory_bytes)
        self.hub = EventHub(replay=extras.replay_events)
        self.store = Store(
            self.hub,
            progress_events=extras.progress_events,
            echo_drawn_seed=extras.echo_drawn_seed,
        )
        self.pool = WorkerPool(
            self.store,
            self.results,
            engine=self.engine,
            workers=workers,
            step_delay=step_delay,
            input_limits=limits.inputs,
            allow_private_urls=allow_private_urls,
            own_files=self.own_file,
        )
        self.faults = FaultInjector(faults) if faults is not None else None

    def own_file(self, origin: str, url: str) -> bytes | None:
        """An input_image URL on this server itself (origin: the base URL its request came in
        on): the result or example picture it names, read here, no network fetch. None when the
        URL is not this server's; FileNotFoundError when it names nothing here."""
        bases = {origin, self.files_url} if self.files_url else {origin}
        base = next((b for b in bases if url.startswith(b + "/")), None)
        if base is None:
            return None
        path = url[len(base) :].partition("?")[0].partition("#")[0]
        if path.startswith(FILES_PREFIX) and FILE_NAME.fullmatch(path[len(FILES_PREFIX) :]):
            found = self.results.read(path[len(FILES_PREFIX) :])
            if found is not None:
                return found
        elif path.startswith(ASSETS_PREFIX):
            parts = path[len(ASSETS_PREFIX) :].split("/", 4)
            if len(parts) == 5 and parts[2] == "file":
                found_asset = demo_asset("/".join(parts[:2] + parts[3:]))
                if found_asset is not None:
                    return found_asset
        raise FileNotFoundError(path)

    def preload(self) -> None:
        """Load the engine's model now rather than at the first generation (EngineUnavailable)."""
        for slot in range(engine_slots(self.engine, 1)):  # each device's pipeline
            get_engine(self.engine, slot).preload()

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
    """The base of result URLs: the request's own, or files_url (files on another host,
    like a CDN)."""
    return runtime(request).files_url or base_url(request)


# --- request checks ------------------------------------------------------------------------------


def check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Local choice (the docs do not say): unknown top-level fields are refused at once (400),
    typos included, rather than passed to a model that would ignore them."""
    for name in body:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            tip = f" Did you mean {close[0]!r}?" if close else ""
            raise ApiProblem(
                400,
                "invalid_params",
                f"unknown field {name!r}.{tip} Allowed: {', '.join(sorted(allowed))}.",
            )


def check_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise ApiProblem(400, "invalid_params", f"model is required: use {MODEL_ID!r}.")
    if model != MODEL_ID:
        raise model_not_found(model)
    return model


def check_prompt(body: dict[str, Any], limits: Limits) -> None:
    """Local choice: a prompt over the cap is refused at once (400), not at run time."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) and len(prompt) > limits.max_prompt_chars:
        raise ApiProblem(
            400,
            "invalid_params",
            f"prompt has {len(prompt)} characters; at most {limits.max_prompt_chars} are taken.",
        )


def model_params(body: dict[str, Any], index: int = 0) -> tuple[dict[str, Any], int | None]:
    """The model parameters as sent (what the row echoes) and the seed the engine will use.

    No seed sent: the server draws one (kept out of the row unless echo_drawn_seed is on, as the
    hosted API reports no drawn seed). A valid seed with num_generations > 1: generation i runs
    with seed + i, so the images differ (the docs do not say what the hosted API does). An invalid
    seed is kept as sent, for the run to fail on.
    """
    params = {k: body[k] for k in PARAMETERS if body.get(k) is not None}
    seed = params.get("seed")
    if seed is None:
        return params, draw_seed()
    if type(seed) is int and 0 <= seed <= SEED_MAX:
        return params, (seed + index) % (SEED_MAX + 1)
    return params, None


def num_generations(body: dict[str, Any]) -> int:
    n = body.get("num_generations")
    if n is None:
        return 1
    if type(n) is not int or not 1 <= n <= 4:
        raise ApiProblem(
            400, "invalid_params", "num_generations must be an integer between 1 and 4"
        )
    return n


def check_room(rt: Runtime, caller: Caller, n: int) -> None:
    """The per-key cap on waiting generations: past it, 429 with Retry-After (the status Oxen's
    docs give for rate limits), before anything is taken, so a retry cannot bill twice."""
    cap = rt.limits.max_queued_per_key
    waiting = rt.pool.queued(caller.owner)
    if waiting + n > cap:
        log.warning("%s is at the cap of %d queued generations", caller.name, cap)
        raise ApiProblem(
            429,
            "rate_limited",
            f"this key has {waiting} generations waiting; the server takes at most {cap} per"
            f" key: wait for some to finish (Retry-After), or cancel some.",
            headers={"Retry-After": str(QUEUE_FULL_RETRY_SECONDS)},
        )


def not_found() -> ApiProblem:
    """The documented 404 body: type and title only."""
    return ApiProblem(404, "resource_not_found", "")


def own_row(request: Request, rt: Runtime, owner: str) -> Row:
    row = rt.store.get(request.path_params["generation_id"], owner)
    if row is None:
        raise not_found()
    return row


def targets(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body.get(name) for name in TARGET_FIELDS if body.get(name) is not None}


# --- queue ----------------------------------------------------------------------------------------


async def enqueue(request: Request) -> JSONResponse:
    """POST /api/ai/queue. Like the hosted queue, model parameters are not checked here: a bad one
    makes the generation fail when it runs. Malformed bodies, unknown fields and caps are (4xx)."""
    rt = runtime(request)
    caller = authorize(request, rt.keys)
    body = await read_json_object(request, rt.limits.max_body_bytes)
    check_fields(body, QUEUE_FIELDS)
    model = check_model(body)
    check_duration(body)
    n = num_generations(body)
    check_prompt(body, rt.limits)
    check_room(rt, caller, n)
    origin = base_url(request)
    rows = [
        rt.store.create(caller.owner, model, *model_params(body, i), targets(body))
        for i in range(n)
    ]
    for row in rows:
        row.origin = origin
        rt.pool.submit(row)
    log.info("%s enqueued %s", caller.name, ", ".join(r.id for r in rows))
    return JSONResponse(
        {"generations": [{"generation_id": r.id, "status": "queued"} for r in rows]}
    )


async def get_generation(request: Request) -> JSONResponse:
    rt = runtime(request)
    row = own_row(request, rt, authorize(request, rt.keys).owner)
    return JSONResponse(rt.store.view(row, files_base(request)))


def _query_choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise ApiProblem(
            400,
            "invalid_params",
            f"{name}={value[:40]!r} is not valid (allowed: {', '.join(allowed)}).",
        )
    return value


async def list_generations(request: Request) -> JSONResponse:
    """GET /api/ai/queue: the caller's active generations (queued, processing), newest first;
    `status=` asks for one status instead, terminal ones included. `namespace` is accepted and
    ignored: the local server has one namespace per key."""
    rt = runtime(request)
    owner = authorize(request, rt.keys).owner
    query = request.query_params
    rows = rt.store.rows(
        owner,
        model=query.get("model"),
        status=_query_choice(request, "status", STATUSES),
        media_type=_query_choice(request, "media_type", ("image", "video")),
        repo=query.get("repo"),
        folder=query.get("folder"),
    )
    base = files_base(request)
    views = [rt.store.view(r, base, brief=True) for r in rows]
    return JSONResponse({"count": len(views), "generations": views})


async def cancel_generation(request: Request) -> JSONResponse:
    """DELETE /api/ai/queue/{id}: queued or processing turns cancelled now (no event is sent, as
    on the hosted stream). A finished row is left as it is; the docs say only 'no effect', and
    the answer is the same 200 (INFERRED)."""
    rt = runtime(request)
    caller = authorize(request, rt.keys)
    row = own_row(request, rt, caller.owner)
    rt.store.cancel(row)
    log.info("%s cancelled %s", caller.name, row.id)
    return JSONResponse({"status": "success", "generation_id": row.id})


# --- sync -----------------------------------------------------------------------------------------


async def images_generate(request: Request) -> JSONResponse:
    return await run_sync(request, GENERATE_FIELDS)


async def images_edit(request: Request) -> JSONResponse:
    """Same as generate: Oxen's own Klein page sends prompt-only bodies here, so input_image is
    optional (the edit reference marks it required; the model page wins)."""
    return await run_sync(request, EDIT_FIELDS)


def openapi_fields(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The OpenAPI document's sync fields, decided (the docs pages name none of them):

    n: how many images (1-4, the docs' range for num_generations), with seeds seed, seed+1, ...
    image (edit): the source image URL, put first in input_image.
    size, mask: refused with why (null is taken as absent): the model makes about one megapixel
    at an aspect_ratio and edits from its prompt, with no mask.
    """
    body = dict(body)
    n = body.pop("n", None)
    if n is None:
        n = 1
    elif type(n) is not int or not 1 <= n <= 4:
        raise ApiProblem(400, "invalid_params", "n must be an integer between 1 and 4")
    if body.pop("size", None) is not None:
        raise ApiProblem(
            400,
            "invalid_params",
            f"size is not a parameter of {MODEL_NAME}: it makes about one megapixel at an"
            f" aspect_ratio ({', '.join(aspect_ratios())}); send aspect_ratio instead.",
        )
    if body.pop("mask", None) is not None:
        raise ApiProblem(
            400,
            "invalid_params",
            f"mask cannot be used by {MODEL_NAME}: it edits from the prompt and input images;"
            " say in the prompt which part to change.",
        )
    image = body.pop("image", None)
    if image is not None:
        if not isinstance(image, str):
            raise ApiProblem(400, "invalid_params", "image must be a URL string.")
        rest = body.get("input_image")
        body["input_image"] = [image, *([rest] if isinstance(rest, str) else rest or [])]
    return body, n


def aspect_ratios() -> list[str]:
    return list(bundled_schema()["properties"]["aspect_ratio"]["enum"])


def check_duration(body: dict[str, Any]) -> None:
    if body.get("duration") is not None:
        raise ApiProblem(
            400, "invalid_params", f"duration is for video models; {MODEL_NAME} makes images."
        )


async def run_sync(request: Request, allowed: frozenset[str]) -> JSONResponse:
    """Validate at once (400), run ahead of the queue, answer when done with the documented
    {"model", "created", "images": [{"url"} or {"b64_json"}, ...]}. A run that fails (or is
    cancelled meanwhile) answers 500 unknown_error with the reason (the docs show no shape)."""
    rt = runtime(request)
    caller = authorize(request, rt.keys)
    body = await read_json_object(request, rt.limits.max_body_bytes)
    check_fields(body, allowed)
    model = check_model(body)
    body, n = openapi_fields(body)
    if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        raise ApiProblem(400, "invalid_params", "Prompt cannot be empty")
    check_prompt(body, rt.limits)
    response_format = body.get("response_format", "url")
    if response_format not in RESPONSE_FORMATS:
        raise ApiProblem(
            400, "invalid_params", f"response_format must be one of: {', '.join(RESPONSE_FORMATS)}"
        )
    runs = [model_params(body, i) for i in range(n)]
    for params, run_seed in runs:
        try:
            build_recipe(model, {**params, "seed": run_seed} if run_seed is not None else params)
        except (ValueError, TypeError) as exc:
            raise ApiProblem(400, "invalid_params", getattr(exc, "message", str(exc))) from None
    loop = asyncio.get_running_loop()
    rows: list[Row] = []
    waits: list[asyncio.Future[None]] = []
    for params, run_seed in runs:
        done: asyncio.Future[None] = loop.create_future()
        row = rt.store.create(caller.owner, model, params, run_seed, {}, listed=False)
        row.origin = base_url(request)
        row.on_done = lambda _row, done=done: _wake(loop, done)
        rows.append(row)
        waits.append(done)
    for row in rows:
        rt.pool.submit(row, urgent=True)
    log.info("%s runs %s (sync)", caller.name, ", ".join(r.id for r in rows))
    await asyncio.gather(*waits)
    images = [sync_image(rt, row, files_base(request), response_format) for row in rows]
    return JSONResponse({"model": model, "created": int(time.time()), "images": images})


def sync_image(rt: Runtime, row: Row, base: str, response_format: str) -> dict[str, Any]:
    view = rt.store.view(row, base)
    if view["status"] != SUCCEEDED:
        raise ApiProblem(
            500, "unknown_error", view["error_message"] or f"the generation was {view['status']}"
        )
    if response_format != "b64_json":
        return {"url": view["result_url"]}
    data = rt.results.read(row.file_name or "")
    if data is None:
        raise ApiProblem(500, "unknown_error", "the server is closing")
    return {"b64_json": base64.b64encode(data).decode("ascii")}


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed: the server stopped, nobody is waiting
        pass


# --- model, files, events -------------------------------------------------------------------------


def model_object(rt: Runtime) -> dict[str, Any]:
    """The bare model object (oxen-api.md 6.1): request_schema, and json_request_schema as an alias
    because Oxen's model page names it so. Pricing: a local server costs nothing."""
    schema = bundled_schema()
    return {
        "id": MODEL_ID,
        "object": "model",
        "created": 0,
        "owned_by": "oxen",
        "display_name": MODEL_NAME,
        "description": rt.engine.description,
        "summary": None,
        "model_type": "base",
        "endpoint": "/images/generate",
        "capabilities": {"input": ["text", "image"], "output": ["image"]},
        "pricing": {"method": "per_image", "cost_per_image": "0"},
        "fine_tuning": None,
        "deployments": [],
        "developer": {"name": "Black Forest Labs", "logo": None},
        "request_schema": schema,
        "json_request_schema": schema,
    }


async def get_model(request: Request) -> JSONResponse:
    rt = runtime(request)
    authorize(request, rt.keys)
    model_id = request.path_params["model_id"]
    if model_id != MODEL_ID:
        raise model_not_found(model_id)
    return JSONResponse(model_object(rt))


async def get_file(request: Request) -> Response:
    """GET /api/files/{id}.{ext}. No auth, like a CDN URL (whether hosted result URLs need the token
    is unknown). The name must be a generation id plus a known extension: anything else is 404."""
    rt = runtime(request)
    name = request.path_params["name"]
    row = rt.store.get(name.partition(".")[0]) if FILE_NAME.fullmatch(name) else None
    if row is None or row.file_name != name:
        raise not_found()
    found = rt.results.get(name)
    if found is None:  # the server is closing
        raise not_found()
    media_type = row.content_type or "application/octet-stream"
    if rt.faults is not None and rt.faults.cut_download():
        data = await anyio.to_thread.run_sync(rt.results.read, name)
        return CutFileResponse(data or b"", media_type)
    if isinstance(found, Path):
        return FileResponse(found, media_type=media_type, headers=FILE_HEADERS)
    # run after the last byte is sent, in a thread: a download cut short keeps it in memory
    spill = BackgroundTask(rt.results.served, name) if rt.limits.spill_downloaded else None
    return Response(found, media_type=media_type, headers=FILE_HEADERS, background=spill)


class CutFileResponse(Response):
    """Fault: the full Content-Length, half the bytes, then the connection drops."""

    def __init__(self, data: bytes, media_type: str) -> None:
        self.data, self.content_type = data, media_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = self.data
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(data)).encode()),
        ]
        await drop_connection(send, headers, data[: len(data) // 2])


async def get_asset(request: Request) -> Response:
    """GET /api/repos/{ns}/{repo}/file/{branch}/{path}: only the public example pictures that Oxen's
    own docs use as input_image, drawn here, so those examples run unchanged but for the host."""
    p = request.path_params
    found = demo_asset(f"{p['namespace']}/{p['repo']}/{p['branch']}/{p['path']}")
    if found is None:
        raise not_found()
    return Response(found, media_type="image/png", headers=FILE_HEADERS)


def sse_message(event: Event, base: str, *, with_id: bool) -> ServerSentEvent:
    data = event.data
    if data.get("url"):
        data = {**data, "url": base + data["url"]}
    return ServerSentEvent(
        data=json.dumps(data, separators=(",", ":")),
        event=event.name,
        id=str(event.id) if with_id else None,
    )


async def next_event(sub: Subscription, keys: KeyRing, token: str, owner: str) -> Event | None:
    """The stream's next event, or None to end it: the server stops, or (with a keys file) the
    key was removed meanwhile, checked every KEY_RECHECK_SECONDS while the stream is idle."""
    if keys.path is None:
        return await sub.queue.get()
    getter = asyncio.ensure_future(sub.queue.get())
    try:
        while True:
            done, _ = await asyncio.wait({getter}, timeout=KEY_RECHECK_SECONDS)
            if done:
                return getter.result()
            if not keys.still_accepts(token, owner, KEY_RECHECK_SECONDS):
                log.info("an event stream ended: its key was removed")
                return None
    finally:
        getter.cancel()


def keep_alive() -> ServerSentEvent:
    """The hosted stream's idle heartbeat, word for word: the comment line `: keep-alive`."""
    return ServerSentEvent(comment="keep-alive")


def last_event_id(request: Request) -> int | None:
    """The header as an id, or None for anything that is not a plain decimal of sane length
    (str.isdigit alone lets in '²' and 5000-digit numbers, which int() refuses)."""
    value = request.headers.get("last-event-id", "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 30 else None


async def events(request: Request) -> EventSourceResponse:
    """GET /api/events: the caller's events as SSE (with replay_events on, after a replay of what
    it missed: _events.py).

    The stream is registered before the response starts: once a client has the headers, it gets
    every later event. It ends when the client leaves or the server stops (the hub sends None).
    It starts with one `: keep-alive` (the hosted stream's first comes after 15 s idle): a client
    trusts a stream once bytes arrive, and polls until then (jobs/_runner.py).
    """
    rt = runtime(request)
    owner = authorize(request, rt.keys).owner
    token = bearer_token(request)  # owner is its hash
    replay = rt.extras.replay_events
    sub, backlog = rt.hub.subscribe(owner, last_event_id(request) if replay else None)
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
            yield keep_alive()  # at once: an open stream is told from one a proxy holds back
            sent = 0
            pending = iter(backlog)
            while cut_after is None or sent < cut_after:
                event = next(pending, None) or await next_event(sub, rt.keys, token, owner)
                if event is None:
                    return
                yield sse_message(event, base, with_id=replay)
                sent += 1
            injector.count("sse_cut")
        finally:
            rt.hub.unsubscribe(sub)

    async def forget() -> None:  # also when the stream never started
        rt.hub.unsubscribe(sub)

    return EventSourceResponse(
        stream(),
        ping=0 if silent else PING_SECONDS,
        ping_message_factory=keep_alive,
        background=BackgroundTask(forget),
    )


# --- the rest -------------------------------------------------------------------------------------


async def index(request: Request) -> JSONResponse:
    rt = runtime(request)
    return JSONResponse(
        {
            "name": "flux-nb local server",
            "about": "a local server that speaks Oxen.ai's inference API; "
            + (
                "its offline engine's images are not FLUX's"
                if rt.engine.is_stand_in
                else "FLUX.2 Klein runs on this machine"
            ),
            "engine": rt.engine_label,
            "description": rt.engine.description,
            "local_extras": rt.extras.enabled(),
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
            raise ApiProblem(400, "invalid_params", str(exc)) from None
    return JSONResponse(injector.report())


def create_app(
    *,
    api_key: str | None = None,
    keys_file: str | Path | None = None,
    allow_private_urls: bool = False,
    step_delay: float = 0.0,
    engine: str | EngineConfig = "preview",
    workers: int = 2,
    faults: Faults | None = None,
    limits: Limits | None = None,
    files_url: str | None = None,
    extras: LocalExtras | None = None,
) -> Starlette:
    """The local server as an ASGI app. With api_key (one shared key) and/or keys_file (a key per
    person: _keys.py), /api/ai/* and /api/events need a bearer token it accepts; input_image
    URLs on private networks are refused unless allow_private_urls (_fetch.py); step_delay
    (seconds per engine step) makes progress and cancel visible; faults turns on fault injection
    and /_faults; limits overrides the size caps; files_url makes result URLs
    point at another origin (a CDN in front of this server's /api/files/, say); extras turns on
    what only a local server does (all off by default: the documented contract and no more).
    engine: a name or an EngineConfig (flux2-klein: its model, device, dtype; it runs with a
    single worker)."""
    if step_delay < 0:
        raise ValueError("step_delay must be >= 0")
    rt = Runtime(
        api_key=api_key,
        keys_file=keys_file,
        allow_private_urls=allow_private_urls,
        step_delay=step_delay,
        engine=engine,
        workers=workers,
        faults=faults,
        limits=limits or Limits(),
        files_url=files_url,
        extras=extras,
    )
    routes = [
        Route("/", index),
        Route("/api/ai/queue", enqueue, methods=["POST"]),
        Route("/api/ai/queue", list_generations, methods=["GET"]),
        Route("/api/ai/queue/{generation_id}", get_generation, methods=["GET"]),
        Route("/api/ai/queue/{generation_id}", cancel_generation, methods=["DELETE"]),
        Route("/api/ai/images/generate", images_generate, methods=["POST"]),
        Route("/api/ai/images/edit", images_edit, methods=["POST"]),
        Route("/api/ai/models/{model_id}", get_model, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/files/{name:path}", get_file, methods=["GET"]),
        Route(
            "/api/repos/{namespace}/{repo}/file/{branch}/{path:path}", get_asset, methods=["GET"]
        ),
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
