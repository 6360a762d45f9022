"""A tiny real HTTP server that records every request's headers: plays 'another host' in tests.

Bind it to 127.0.0.2 (any 127/8 address is loopback on Linux) and it is a different origin from a
LocalServer on 127.0.0.1. It answers 200 "ok", or proxies GETs to an upstream (a CDN in front of a
LocalServer's /api/files/), or redirects (/redirect?to=URL), or sends `broken` undecodable answers,
or (echo) quotes the request's Authorization header back in a plain-text body.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx


class RecordingServer:
    def __init__(self, host: str = "127.0.0.1", upstream: str | None = None) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.broken = 0  # answer this many next requests with a gzip body that is not gzip
        self.echo = False  # answer with the request's own Authorization header, as plain text
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                owner._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def seen(self, header: str) -> list[str | None]:
        """That header's value in every request so far, in order (None where it was absent)."""
        with self._lock:
            return [headers.get(header.lower()) for _, _, headers in self.requests]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append((handler.command, handler.path, headers))
            broken = self.broken > 0
            self.broken -= broken
        parts = urlsplit(handler.path)
        if parts.path == "/redirect":
            handler.send_response(302)
            handler.send_header("Location", parse_qs(parts.query)["to"][0])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        status, kind, body, extra = 200, "text/plain", b"ok", {}
        if self.echo:
            body = f"you sent {headers.get('authorization')}".encode()
        elif broken:
            kind, body, extra = "image/png", b"this is not gzip data", {"Content-Encoding": "gzip"}
        elif self.upstream:
            answer = httpx.get(self.upstream + handler.path, timeout=10)
            status, body = answer.status_code, answer.content
            kind = answer.headers.get("content-type", "application/octet-stream")
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
