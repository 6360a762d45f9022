"""Shared fixtures: the real local server over loopback HTTP, never patched functions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fault_helpers import FAST, TIMEOUTS, Api

from flux_nb.config import Settings
from flux_nb.server import Faults, LocalServer
from flux_nb.sessions import Session

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
    return "tok-" + request.node.name[:40]


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
