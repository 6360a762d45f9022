"""A small ASGI reverse proxy in front of the real local server, for the silent-stream tests and
benchmarks/silent_stream.py: everything passes through as it comes, except what it is told to do
to `GET /api/events`, the way proxies found in companies and hosted hubs treat a streamed reply.

    proxy = StreamProxy(server.url, mode="buffer").start()   # proxy.url: point a session here
        mode "pass"    every chunk as it arrives (a well-behaved proxy)
        mode "buffer"  headers (200) at once, the body held back until the upstream stream ends:
                       a proxy that buffers responses
        mode "silent"  headers, the chunks until then, then nothing more (not even a keep-alive):
                       a connection that died without closing, or a proxy that cut it
        mode "strip"   events as they come, keep-alive comments cut out: a stream that is quiet
                       until its first event (as the hosted one may be for its first 15 s)
    proxy.mode = ...   takes effect on open streams at their next chunk ("pass" releases what a
                       held stream kept, in order)
    proxy.stop()
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from flux_nb.server._embedded import bind_socket, url_of

HOP_HEADERS = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host"}


class StreamProxy:
    """Forwards every request to `upstream`; /api/events as `mode` says (see the module text)."""

    def __init__(self, upstream: str, mode: str = "pass") -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = mode
        self.url: str | None = None
        self.streams_opened = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    # -- the ASGI app ------------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, read=None))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        url = self.upstream + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_HEADERS]
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        response = await self._client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v) for k, v in response.headers.raw if k.lower() not in HOP_HEADERS
                    ],
                }
            )
            if scope["path"] == "/api/events":
                self.streams_opened += 1
                await self._stream(response, send)
            else:
                await send({"type": "http.response.body", "body": await response.aread()})
        finally:
            await response.aclose()

    async def _stream(self, response: httpx.Response, send: Any) -> None:
        held: list[bytes] = []
        try:
            async for chunk in response.aiter_raw():
                if self.mode == "silent":
                    continue  # swallowed: the client hears nothing, the connection stays open
                if self.mode == "strip" and all(
                    line.startswith(b":") for line in chunk.splitlines() if line.strip()
                ):
                    continue  # comments only: a keep-alive
                held.append(chunk)
                if self.mode in ("pass", "strip"):
                    await send(
                        {"type": "http.response.body", "body": b"".join(held), "more_body": True}
                    )
                    held.clear()
        except httpx.HTTPError:
            pass
        await send({"type": "http.response.body", "body": b"".join(held)})

    # -- serving -----------------------------------------------------------------------------------

    def start(self) -> StreamProxy:
        import uvicorn

        sock = bind_socket("127.0.0.1", 0)
        self.url = url_of(sock)
        config = uvicorn.Config(
            self, lifespan="off", http="h11", ws="none", log_config=None, log_level="critical"
        )
        config.timeout_graceful_shutdown = 1
        self._server = uvicorn.Server(config)
        ready = threading.Event()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            ready.set()
            await self._server.serve(sockets=[sock])

        self._thread = threading.Thread(
            target=lambda: asyncio.run(serve()), name="stream-proxy", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        while not self._server.started:
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # open streams would otherwise hold it until they end
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> StreamProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
