"""HTTP in and out for the routes: JSON error bodies, bounded JSON request bodies, bearer auth.

Every error leaves as `{"error": "<code>", "message": "<one line>"}`: unknown routes, wrong
methods and even crashes (a generic 500, never an HTML page or a traceback).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

ANONYMOUS = "anonymous"


class ApiProblem(Exception):
    """Raised by a route to answer with a JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **extra}


async def on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    body = error_body(exc.code, exc.message, **exc.extra)
    return JSONResponse(body, exc.status, headers=exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 (no route) and 405 (wrong method), as JSON."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        body = error_body("not_found", f"no such endpoint: {request.method} {request.url.path}")
    elif exc.status_code == 405:
        body = error_body(
            "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
        )
    else:
        body = error_body("http_error", str(exc.detail))
    return JSONResponse(body, exc.status_code, headers=exc.headers)


async def on_crash(request: Request, exc: Exception) -> JSONResponse:
    """Last resort: a bug in a route. uvicorn logs the traceback; the client gets one line."""
    body = error_body("internal_error", "the local server hit an internal error; see its log.")
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
            400, "invalid_json", f"the request body is not valid JSON ({reason})."
        ) from None
    if not isinstance(data, dict):
        raise ApiProblem(400, "invalid_request", "the request body must be a JSON object.")
    return data


def _too_large(max_bytes: int) -> ApiProblem:
    return ApiProblem(
        413,
        "payload_too_large",
        f"the request body is over {max_bytes} bytes: send smaller input images.",
    )


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def authorize(request: Request, api_key: str | None) -> str:
    """The caller's owner key (sha256 of the bearer token), or 401 when api_key is set and not sent.

    Tokens are compared in constant time and never logged or echoed.
    """
    token = bearer_token(request)
    if api_key is not None and not hmac.compare_digest(token.encode(), api_key.encode()):
        raise ApiProblem(
            401,
            "unauthorized",
            "missing or wrong API key: send 'Authorization: Bearer <key>' with this server's key.",
            headers={"WWW-Authenticate": 'Bearer realm="flux-nb"'},
        )
    return hashlib.sha256(token.encode()).hexdigest() if token else ANONYMOUS
