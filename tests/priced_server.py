"""A real loopback server that plays the hosted API's model endpoint (oxen-api.md §6.1: a bare
model object with `pricing` and `request_schema`) and hands every other request to a LocalServer.

The stand-in's own model object is not the hosted one (it may or may not carry `pricing`), so
cost tests use this one. It records each request's method and path, to show what was (not) sent.
Event streams are not relayed (404): the client then polls, as it does when a stream is down.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from flux_nb.core._recipe import MODEL_ID, bundled_schema


def hosted_model(pricing: dict[str, Any] | None) -> dict[str, Any]:
    """The model object as the contract describes it (9B's captured shape, 4B's id)."""
    model = {
        "id": MODEL_ID,
        "object": "model",
        "created": 1760000000,
        "owned_by": "oxen",
        "display_name": "FLUX.2 Klein 4B",
        "model_type": "base",
        "endpoint": "/images/generate",
        "capabilities": {"input": ["text", "image"], "output": ["image"]},
        "deployments": [],
        "request_schema": bundled_schema(),
    }
    if pricing is not None:
        model["pricing"] = pricing
    return model


class PricedServer:
    def __init__(self, upstream: str, pricing: dict[str, Any] | None) -> None:
        self.upstream = upstream
        self.model = hosted_model(pricing)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                owner._handle(self)

            do_POST = do_DELETE = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> PricedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def sent(self, method: str) -> list[str]:
        with self._lock:
            return [path for m, path in self.requests if m == method]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append((handler.command, handler.path))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.path.startswith("/api/ai/models/"):
            status, kind, payload = 200, "application/json", json.dumps(self.model).encode()
        elif handler.path.startswith("/api/events"):
            status, kind, payload = 404, "application/json", b'{"error": "no stream here"}'
        else:
            headers = {
                k: v
                for k, v in handler.headers.items()
                if k.lower() in ("authorization", "content-type")
            }
            answer = httpx.request(
                handler.command,
                self.upstream + handler.path,
                content=body,
                headers=headers,
                timeout=10,
            )
            status, payload = answer.status_code, answer.content
            kind = answer.headers.get("content-type", "application/octet-stream")
            payload = payload.replace(self.upstream.encode(), self.url.encode())  # result URLs
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
