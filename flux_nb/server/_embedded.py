"""Run the local server with uvicorn: in a daemon thread (LocalServer) or in the foreground (CLI).

Stopping with SSE clients attached: the app's own streams are ended first (Runtime.close_streams,
on the server's loop), then uvicorn is told to exit, so shutdown does not wait out the graceful
timeout. We do not use sse_starlette's process-wide AppStatus.should_exit for this: with two
servers in one process (a notebook and a test fixture, say), stopping one would end the other's
streams too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from types import FrameType
from typing import Any

import uvicorn
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette

from ._app import Runtime, create_app

GRACEFUL_SHUTDOWN_SECONDS = 2


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so a busy port fails here, in the caller, and port 0 is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on accepted sockets whose proto is
    # IPPROTO_TCP, and socket.create_server() leaves it 0, which costs ~40 ms per response
    # (Nagle's algorithm meets delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket, *, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class UvicornServer(uvicorn.Server):
    """uvicorn.Server that ends the app's SSE streams before shutting down,
    however it is asked to."""

    def __init__(self, app: Starlette, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.runtime: Runtime = app.state.flux
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        self.ready.set()

    def request_exit(self) -> None:
        """Thread- and signal-safe: the streams are ended by a callback on the server's loop."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self.runtime.close_streams)
            except RuntimeError:
                pass
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:  # Ctrl+C, SIGTERM
        self.request_exit()
        super().handle_exit(sig, frame)

    def run_foreground(self, sock: socket.socket) -> None:
        """Serve in the main thread until Ctrl+C or SIGTERM
        (which raise KeyboardInterrupt after)."""
        # sse_starlette patches uvicorn's signal handler to cancel every stream at once; a stream
        # cancelled that way ends without its last chunk (clients see a broken response). Ours
        # are ended cleanly by request_exit, so turn that off: this process serves only this app.
        AppStatus.disable_automatic_graceful_drain()
        self.run(sockets=[sock])


def make_server(
    app: Starlette,
    *,
    log_level: str | None = None,
    quiet: bool = True,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> UvicornServer:
    """uvicorn config shared by LocalServer and the CLI: no lifespan, h11,
    short graceful timeout; HTTPS with a certificate and key file."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        http="h11",
        ws="none",
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        log_level=log_level,
        access_log=not quiet,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    return UvicornServer(app, config)


class LocalServer:
    """The local server in a daemon thread on a free loopback port; a context manager.

    with LocalServer(step_delay=0.02) as server:
        httpx.post(server.url + "/api/ai/queue", json={...})
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **app_options: Any) -> None:
        self.host, self.port = host, port
        self.app = create_app(**app_options)
        self.url: str | None = None
        self._server: UvicornServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def runtime(self) -> Runtime:
        return self.app.state.flux

    def start(self, timeout: float = 10.0) -> LocalServer:
        """Start serving and return self once the socket accepts connections (tens of ms)."""
        if self._thread is not None:
            return self
        if self._stopped:
            raise RuntimeError("this LocalServer was stopped; make a new one")
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        self.url = url_of(sock)
        self._server = make_server(self.app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="flux-nb-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.ready.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local server did not start on {self.url}")
        return self

    def stop(self) -> None:
        """Stop serving (well under a second, even with SSE clients attached) and delete results."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.request_exit()
            self.runtime.pool.close()  # waiting sync calls end now instead of at the timeout
            thread.join(GRACEFUL_SHUTDOWN_SECONDS + 3)
        self.runtime.close()
        self._server = self._thread = None
        self._stopped = True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"<LocalServer {state}: {self.runtime.engine_label}>"
