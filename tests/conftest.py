"""Shared fixtures: the real local server over loopback HTTP, never patched functions."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from flux_nb.config import Settings
from flux_nb.server import LocalServer
from flux_nb.sessions import Session


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
    s = Session("local", output_dir=tmp_path / "out", settings=Settings(step_delay=0.0), announce=None)
    yield s
    s.close()
