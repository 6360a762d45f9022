"""Fault injection for tests of clients against the local server. Off unless create_app gets Faults.

Every random choice comes from one seeded RNG, so a sequence of requests meets the same faults on
every run. Kinds: an error status (503, or any forced one), a reset before the request is acted on
(it was not taken), a dropped response after it was acted on (it was taken, the client cannot
know), a late answer (for client read timeouts), cut SSE streams, silent streams and cut
downloads. With faults enabled, `POST /_faults` replaces the config (JSON of Faults fields) and
`GET /_faults` returns it with counters of the faults injected since, for tests in other processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._httpio import error_body

AI_PREFIX = "/api/ai/"
FAULTS_PATH = "/_faults"
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


class InjectedFault(Exception):
    """Raised after a response has started, so uvicorn drops the connection mid-response."""


ACTIONS = ("answer", "reset", "drop_response", "delay")


@dataclass
class ForcedStatus:
    """Break the next `times` requests whose path starts with `path` (and method, if given).

    action: "answer" (the default) answers `status` without acting on the request; "reset" drops
    the connection before acting on it; "drop_response" acts on it, then drops the connection
    instead of answering; "delay" acts on it and answers `delay` seconds late. echo_auth puts the
    request's Authorization header into the error body, as a careless server might: clients must
    keep it out of their messages.
    """

    status: int = 503
    path: str = "/api/"
    method: str | None = None
    retry_after: float | None = None
    times: int = 1
    action: str = "answer"
    delay: float = 0.0
    echo_auth: bool = False


@dataclass
class Faults:
    """What to break. Rates are fractions of requests, 0.0 to 1.0."""

    seed: int = 0
    error_rate: float = 0.0  # /api/ai/* answered 503 with Retry-After: 0
    reset_rate: float = 0.0  # /api/ai/* connection dropped before the request is acted on
    drop_response_rate: float = 0.0  # /api/ai/* acted on, then the connection dropped, no answer
    status_queue: list[ForcedStatus] = field(default_factory=list)  # forced answers, in order
    sse_cut_after: int | None = None  # end each /api/events stream after this many events
    sse_silent: bool = False  # /api/events sends headers, then nothing at all (no pings either)
    download_cut_rate: float = 0.0  # /api/files/* body cut short under the full Content-Length

    def __post_init__(self) -> None:
        self.status_queue = [
            s if isinstance(s, ForcedStatus) else ForcedStatus(**s) for s in self.status_queue
        ]
        for name in ("error_rate", "reset_rate", "drop_response_rate", "download_cut_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number from 0 to 1, not {value!r}")
        for forced in self.status_queue:
            if type(forced.status) is not int or not 400 <= forced.status <= 599:
                raise ValueError(f"status_queue status must be 400-599, not {forced.status!r}")
            if forced.action not in ACTIONS:
                raise ValueError(
                    f"status_queue action must be one of {ACTIONS}, not {forced.action!r}"
                )
            if not isinstance(forced.delay, (int, float)) or not 0 <= forced.delay <= 60:
                raise ValueError(
                    f"status_queue delay must be 0 to 60 seconds, not {forced.delay!r}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faults:
        """Build from JSON data; unknown keys or bad values raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault fields {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FaultInjector:
    """The live fault state: config, RNG and counters, shared by the middleware and the routes."""

    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self.replace(faults)

    def replace(self, faults: Faults) -> None:
        """New config, fresh RNG from its seed, counters back to zero."""
        with self._lock:
            self.faults = faults
            self._queue = [dataclasses.replace(s) for s in faults.status_queue]
            self._rng = random.Random(faults.seed)
            self.counters = {
                "error": 0,
                "reset": 0,
                "drop_response": 0,
                "delay": 0,
                "status": 0,
                "sse_cut": 0,
                "sse_silent": 0,
                "download_cut": 0,
            }

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"faults": self.faults.to_dict(), "injected": dict(self.counters)}

    def count(self, kind: str) -> None:
        with self._lock:
            self.counters[kind] += 1

    def decide(self, method: str, path: str) -> ForcedStatus | None:
        """What to do with this request: None (serve it) or the fault to apply."""
        with self._lock:
            for i, forced in enumerate(self._queue):
                if path.startswith(forced.path) and forced.method in (None, method):
                    forced.times -= 1
                    if forced.times <= 0:
                        del self._queue[i]
                    kind = "status" if forced.action == "answer" else forced.action
                    self.counters[kind] += 1
                    return forced
            if not path.startswith(AI_PREFIX):
                return None
            f = self.faults
            if f.reset_rate and self._rng.random() < f.reset_rate:
                self.counters["reset"] += 1
                return ForcedStatus(action="reset")
            if f.drop_response_rate and self._rng.random() < f.drop_response_rate:
                self.counters["drop_response"] += 1
                return ForcedStatus(action="drop_response")
            if f.error_rate and self._rng.random() < f.error_rate:
                self.counters["error"] += 1
                return ForcedStatus(503, retry_after=0)
            return None

    def cut_download(self) -> bool:
        with self._lock:
            rate = self.faults.download_cut_rate
            if rate and self._rng.random() < rate:
                self.counters["download_cut"] += 1
                return True
            return False


def error_response(forced: ForcedStatus, authorization: str = "") -> JSONResponse:
    """The forced status in Oxen's documented envelope (the docs give no other for these codes)."""
    error_type = {
        400: "invalid_params",
        401: "unauthenticated",
        403: "unauthenticated",
        404: "resource_not_found",
    }
    headers = {}
    if forced.retry_after is not None:
        headers["Retry-After"] = f"{forced.retry_after:g}"
    message = (
        f"injected fault: HTTP {forced.status} {STATUS_CODES.get(forced.status, 'error')}"
        f" (test server)."
    )
    if forced.echo_auth:
        message += f" You sent Authorization: {authorization or '(none)'}"
    body = error_body(error_type.get(forced.status, "unknown_error"), message)
    return JSONResponse(body, forced.status, headers=headers)


async def drop_connection(
    send: Send, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    """Start a response, send part of it, then raise so the server closes the socket mid-way.

    An ASGI app cannot close a connection before any response bytes (uvicorn answers 500 then),
    so this is the closest thing to a reset: the client gets a broken response and an error.
    """
    start: Message = {"type": "http.response.start", "status": 200, "headers": headers}
    await send(start)
    if body:
        await send({"type": "http.response.body", "body": body, "more_body": True})
    raise InjectedFault("injected connection reset")


class FaultMiddleware:
    """Applies status_queue and the /api/ai/* rates around the routes."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector
        _quiet_injected_faults()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == FAULTS_PATH:
            await self.app(scope, receive, send)
            return
        forced = self.injector.decide(scope["method"], path)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"64")]
        if forced is None:
            await self.app(scope, receive, send)
        elif forced.action == "answer":
            authorization = dict(scope.get("headers", ())).get(b"authorization", b"")
            response = error_response(forced, authorization.decode("latin-1"))
            await response(scope, receive, send)
        elif forced.action == "reset":
            await _drain(receive)  # unread body bytes would make the close an RST: racy for tests
            await drop_connection(send, headers)
        elif forced.action == "drop_response":

            async def swallow(message: Message) -> None:
                pass

            await self.app(scope, receive, swallow)
            await drop_connection(send, headers)
        else:  # delay: acted on at once, answered late (a client's read timeout may fire first)
            delay = forced.delay

            async def late(message: Message) -> None:
                nonlocal delay
                if delay:
                    await asyncio.sleep(delay)
                    delay = 0.0
                await send(message)

            await self.app(scope, receive, late)


async def _drain(receive: Receive) -> None:
    """Read the request body to its end without acting on it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class _DropInjected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedFault))


_filter_lock = threading.Lock()


def _quiet_injected_faults() -> None:
    """uvicorn logs every exception from the app with a traceback; ours are on purpose."""
    logger = logging.getLogger("uvicorn.error")
    with _filter_lock:
        if not any(isinstance(f, _DropInjected) for f in logger.filters):
            logger.addFilter(_DropInjected())
