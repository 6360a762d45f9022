"""Fault injection for tests of clients against the local server. Off unless create_app gets Faults.

Every random choice comes from one seeded RNG, so a sequence of requests meets the same faults on
every run. With faults enabled, `POST /_faults` replaces the config (JSON of Faults fields) and
`GET /_faults` returns it with counters of the faults injected since, for tests in other processes.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


@dataclass
class ForcedStatus:
    """Answer the next `times` requests whose path starts with `path` (and method, if given)."""

    status: int
    path: str = "/api/"
    method: str | None = None
    retry_after: float | None = None
    times: int = 1


@dataclass
class Faults:
    """What to break. Rates are fractions of requests, 0.0 to 1.0."""

    seed: int = 0
    error_rate: float = 0.0  # /api/ai/* answered 503 with Retry-After: 0
    reset_rate: float = 0.0  # /api/ai/* connection dropped before the request is acted on
    status_queue: list[ForcedStatus] = field(default_factory=list)  # forced answers, in order
    sse_cut_after: int | None = None  # end each /api/events stream after this many events
    sse_silent: bool = False  # /api/events sends headers, then nothing at all (no pings either)
    download_cut_rate: float = 0.0  # /api/files/* body cut short under the full Content-Length

    def __post_init__(self) -> None:
        self.status_queue = [
            s if isinstance(s, ForcedStatus) else ForcedStatus(**s) for s in self.status_queue
        ]
        for name in ("error_rate", "reset_rate", "download_cut_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number from 0 to 1, not {value!r}")
        for forced in self.status_queue:
            if not 400 <= forced.status <= 599:
                raise ValueError(f"status_queue status must be 400-599, not {forced.status!r}")

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

    def decide(self, method: str, path: str) -> tuple[str, ForcedStatus | None] | None:
        """What to do with this request: None, ("status", forced) or ("reset", None)."""
        with self._lock:
            for i, forced in enumerate(self._queue):
                if path.startswith(forced.path) and forced.method in (None, method):
                    forced.times -= 1
                    if forced.times <= 0:
                        del self._queue[i]
                    self.counters["status"] += 1
                    return "status", forced
            if not path.startswith(AI_PREFIX):
                return None
            f = self.faults
            if f.reset_rate and self._rng.random() < f.reset_rate:
                self.counters["reset"] += 1
                return "reset", None
            if f.error_rate and self._rng.random() < f.error_rate:
                self.counters["error"] += 1
                return "status", ForcedStatus(503, retry_after=0)
            return None

    def cut_download(self) -> bool:
        with self._lock:
            rate = self.faults.download_cut_rate
            if rate and self._rng.random() < rate:
                self.counters["download_cut"] += 1
                return True
            return False


def error_response(forced: ForcedStatus) -> JSONResponse:
    code = STATUS_CODES.get(forced.status, "error")
    headers = {}
    if forced.retry_after is not None:
        headers["Retry-After"] = f"{forced.retry_after:g}"
    body = {"error": code, "message": f"injected fault: HTTP {forced.status} (test server)."}
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
    """Applies status_queue, reset_rate and error_rate before a request reaches the routes."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector
        _quiet_injected_faults()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == FAULTS_PATH:
            await self.app(scope, receive, send)
            return
        decision = self.injector.decide(scope["method"], path)
        if decision is None:
            await self.app(scope, receive, send)
        elif decision[0] == "status":
            assert decision[1] is not None
            await error_response(decision[1])(scope, receive, send)
        else:
            headers = [(b"content-type", b"application/json"), (b"content-length", b"64")]
            await drop_connection(send, headers)


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
