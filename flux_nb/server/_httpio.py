"""HTTP in and out for the routes: error bodies in Oxen's documented envelopes, bounded JSON
request bodies, bearer auth.

Oxen's docs give two error formats (../../shared/oxen-api.md section 5.4), and every error here
leaves in one of them, unknown routes, wrong methods and crashes included (never an HTML page or
a traceback):

    {"error": {"type", "title", "detail"}, "status": "error", "status_message": <type>}
    {"error": {"message": "Model not found: <name>"}}          (unknown model only)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ._keys import KeyRing, digest

log = logging.getLogger("flux_nb.server")

ANONYMOUS = "anonymous"
# The documented error types and their titles (the docs give the first two texts word for word).
TITLES = {
    "invalid_params": "Invalid parameters supplied, please check your request and try again.",
    "resource_not_found": "The requested resource could not be found",
    "unauthenticated": "unauthenticated",
    "rate_limited": "Rate limit exceeded",
    "unknown_error": "An unknown error occurred",
}


class ApiProblem(Exception):
    """Raised by a route to answer with an error envelope: code is the documented error type
    (invalid_params, resource_not_found, unauthenticated, unknown_error); bare=True gives the
    docs' {"error": {"message": ...}} form instead."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        bare: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers
        self.bare = bare


def error_body(error_type: str, detail: str | None = None) -> dict[str, Any]:
    """The documented typed envelope; detail only when there is more to say than the title."""
    error: dict[str, Any] = {"type": error_type, "title": TITLES.get(error_type, error_type)}
    if detail:
        error["detail"] = detail
    return {"error": error, "status": "error", "status_message": error_type}


def model_not_found(name: Any) -> ApiProblem:
    """The docs' second envelope, with their text: {"error": {"message": "Model not found: X"}}."""
    return ApiProblem(404, "", f"Model not found: {str(name)[:200]}", bare=True)


async def on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    if exc.bare:
        body: dict[str, Any] = {"error": {"message": exc.message}}
    else:
        body = error_body(exc.code, exc.message)
    return JSONResponse(body, exc.status, headers=exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 (no route) and 405 (wrong method), in the documented envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        body = error_body(
            "resource_not_found", f"no such endpoint: {request.method} {request.url.path}"
        )
    elif exc.status_code == 405:
        body = error_body(
            "invalid_params", f"{request.method} is not allowed on {request.url.path}"
        )
    else:
        body = error_body("unknown_error", str(exc.detail))
    return JSONResponse(body, exc.status_code, headers=exc.headers)


async def on_crash(request: Request, exc: Exception) -> JSONResponse:
    """Last resort: a bug in a route. uvicorn logs the traceback; the client gets one line."""
    body = error_body("unknown_error", "the local server hit an internal error; see its log.")
    return JSONResponse(body, 500)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400: valid JSON, but no JSON answer can echo it
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _lone_surrogate(value: Any) -> bool:
    """True when a string in the data holds a lone UTF-16 surrogate ("\\ud800"): json.loads takes
    it, but it cannot be encoded as UTF-8, so echoing it back would crash the answer."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx ApiProblem (never more than max_bytes read)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    try:
        # NaN and Infinity are not JSON; letting them in would make a 500 when the row is echoed.
        data = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
        # Escaped surrogates are rare in real requests: look only when the body has one.
        if b"\\u" in body and _lone_surrogate(data):
            raise ValueError("a string holds a lone UTF-16 surrogate escape")
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "too deep"
        raise ApiProblem(
            400, "invalid_params", f"the request body is not valid JSON ({reason})."
        ) from None
    if not isinstance(data, dict):
        raise ApiProblem(400, "invalid_params", "the request body must be a JSON object.")
    return data


def _too_large(max_bytes: int) -> ApiProblem:
    return ApiProblem(
        413,
        "invalid_params",
        f"the request body is over {max_bytes} bytes: send smaller input images.",
    )


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@dataclass(frozen=True)
class Caller:
    """Who sent a request: owner (sha256 of the bearer token: rows and events belong to it) and
    name (the person the keys file names, for logs; never the key)."""

    owner: str
    name: str


def authorize(request: Request, keys: KeyRing) -> Caller:
    """The caller, or 401 when the server needs a key and this is not one it accepts.

    Tokens are compared in constant time (or by hash) and never logged or echoed.
    """
    token = bearer_token(request)
    owner = digest(token) if token else ANONYMOUS  # hashed once: the keys file is looked up by it
    if keys.required:
        name = keys.name_of(token, owner if token else None)
        if name is None:
            client = request.client.host if request.client else "?"
            log.warning("refused a request from %s: %s", client, "wrong key" if token else "no key")
            raise ApiProblem(
                401,
                "unauthenticated",
                "missing or wrong API key: send 'Authorization: Bearer <key>' with a key this"
                " server accepts.",
                headers={"WWW-Authenticate": 'Bearer realm="flux-nb"'},
            )
    else:
        name = ANONYMOUS
    return Caller(owner, name)
