"""Shared fixtures: the real local server over loopback HTTP, never patched functions."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fault_helpers import FAST, TIMEOUTS, Api
from helpers import SERVER_KEY

from flux_nb.core._config import Settings
from flux_nb.jobs._sessions import Session
from flux_nb.server import Faults, LocalServer
from flux_nb.server._app import LocalExtras

# The readers' tests import sd-parsers and SD Prompt Reader, which live in .venv-readers only:
# `bash scripts/test.sh tests/readers` runs them there (with --confcutdir, so not this file).
collect_ignore = ["readers"]


@pytest.fixture(scope="session")
def local_server() -> Iterator[LocalServer]:
    """One local server for the whole session, default options (no key, no step delay, no faults).

    Tests that share it keep apart by sending their own bearer token: events and rows are per token.
    """
    with LocalServer() as server:
        yield server


@pytest.fixture(scope="module")
def slow_server() -> Iterator[LocalServer]:
    """Each step takes visible time (50 ms): a cancel or a listener has something to catch."""
    with LocalServer(step_delay=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def progress_server() -> Iterator[LocalServer]:
    """slow_server that also sends the local-only progress events, as the embedded server does."""
    with LocalServer(step_delay=0.05, extras=LocalExtras(progress_events=True)) as server:
        yield server


@pytest.fixture(scope="session")
def keyed_server() -> Iterator[LocalServer]:
    """A local server that wants helpers.SERVER_KEY as bearer key and takes visible time per step
    (so a cancel has something to stop)."""
    with LocalServer(api_key=SERVER_KEY, step_delay=0.03) as server:
        yield server


# Every httpx.Client builds an SSL context (~50 ms) unless given one: share one across the tests.
TLS = ssl.create_default_context()


@pytest.fixture
def api(local_server: LocalServer, token: str) -> Iterator[httpx.Client]:
    """A client of the shared local server with this test's own bearer token, so its rows and
    events are its own."""
    with httpx.Client(
        base_url=local_server.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10.0),
        verify=TLS,
    ) as client:
        yield client


@pytest.fixture
def make_server() -> Iterator[Callable[..., LocalServer]]:
    """Start a LocalServer with its own options (api_key, step_delay, faults, ...) for one test."""
    servers: list[LocalServer] = []

    def make(**options: object) -> LocalServer:
        server = LocalServer(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def page(tmp_path: Path):
    """A Colab-like front end on a real kernel, driven message by message (tests/widget_page.py)."""
    from widget_page import started_page  # jupyter_client: only for the tests that ask

    with started_page(tmp_path) as started:
        yield started


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "binder: builds a fresh environment from binder/ with pip (PyPI; a minute or two)",
    )


@pytest.fixture
def session(tmp_path) -> Iterator[Session]:
    """A session on the embedded local server (no step delay) saving into a fresh folder."""
    s = Session(
        "local", output_dir=tmp_path / "out", settings=Settings(step_delay=0.0), announce=None
    )
    yield s
    s.close()


# -- fault tests: a server with fault injection, sessions with short retries ----------------


@pytest.fixture
def token(request) -> str:
    """A bearer token of this test's own: its name, for logs, and a random tail (servers shared
    across tests keep rows and events per token)."""
    return f"tok-{request.node.name[:40]}-{secrets.token_hex(4)}"


@pytest.fixture
def faulty(make_server, token):
    """A fresh server with fault injection on (nothing injected until a test says so)."""
    server = make_server(faults=Faults(seed=7))
    return server, Api(server, token)


@pytest.fixture
def open_session(tmp_path):
    made: list[Session] = []

    def make(server: LocalServer, token: str | None, out: Path | None = None, **options) -> Session:
        options.setdefault("retry", FAST)
        options.setdefault("timeouts", TIMEOUTS)
        session = Session(
            base_url=server.url,
            api_key=token,
            output_dir=out or tmp_path / "out",
            settings=Settings(),
            announce=None,
            **options,
        )
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()
