"""Fixtures of the contract suite: the fake hosted API, and sessions wired to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fake_oxen import KEY, FakeOxen

from flux_nb.core._config import RetryPolicy
from flux_nb.jobs._sessions import Session

# Retries fast, so that tests of recovery do not wait out real backoffs (429 tests use the default).
QUICK = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


@pytest.fixture(autouse=True)
def _no_hosted_env(monkeypatch):
    """The contract tests choose their own key and base URL; the shell's never leak in."""
    for name in ("OXEN_API_KEY", "FLUX_NB_BASE_URL", "FLUX_NB_OUTPUT_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeOxen]:
    f = FakeOxen(keepalive=0.5)
    yield f
    f.close()


@pytest.fixture
def make_session(fake, tmp_path) -> Iterator[Callable[..., Any]]:
    """flux_nb.Session(backend="hosted") talking to the fake through the `http=` injection point."""
    sessions = []

    def make(**options: Any):
        options.setdefault("backend", "hosted")
        options.setdefault("api_key", KEY)
        options.setdefault("output_dir", tmp_path / "out")
        options.setdefault("announce", None)
        options.setdefault("retry", QUICK)
        session = Session(http=httpx.Client(transport=fake.transport), **options)
        sessions.append(session)
        return session

    yield make
    fake.close()  # end streams first, so listener threads see the session stop
    for session in sessions:
        session.close()
