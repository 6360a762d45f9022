"""Helpers shared by the fault tests (test_client, test_runner, test_storage, test_journal,
test_reliability): the test's own view of a server, waits on real state, and checks of an output
folder. The fixtures that use them (token, faulty, open_session) are in conftest.py."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
from helpers import every_row
from PIL import Image

from flux_nb import read_recipe
from flux_nb.core._config import RetryPolicy, Timeouts
from flux_nb.core._recipe import Recipe
from flux_nb.files._journal import LIVE_DIR, Journal
from flux_nb.jobs._sessions import JOURNAL_NAME, Session
from flux_nb.server import LocalServer

FAST = RetryPolicy(attempts=5, backoff=0.01, max_backoff=0.05, rate_limit_attempts=5)
TIMEOUTS = Timeouts(connect=2, read=5, write=5, pool=5, download=5, sse_read=5)
QUEUE = "/api/ai/queue"


# --- helpers --------------------------------------------------------------------------------------


class Api:
    """The test's own view of a server, as one API key sees it: fault config, counters and rows."""

    def __init__(self, server: LocalServer, token: str) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def faults(self, **config: object) -> None:
        response = self.http.post("/_faults", json=config)
        assert response.status_code == 200, response.text

    def injected(self) -> dict[str, int]:
        return self.http.get("/_faults").json()["injected"]

    def rows(self) -> list[dict]:
        """Every row, in any status, once each (helpers.every_row)."""
        return every_row(self.http)

    def seeds(self) -> Counter:
        return Counter(row["seed"] for row in self.rows())


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll real state until it holds (for things no event announces)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def folder(path: Path) -> tuple[list[Path], list[str]]:
    """(image files, every other name) in an output folder; the journal writers' lock folder
    (LIVE_DIR: which kernels are still running) is bookkeeping, not output, and left out."""
    images, others = [], []
    for entry in sorted(Path(path).iterdir()):
        if entry.name == LIVE_DIR:
            continue
        if entry.suffix in (".png", ".jpg", ".webp") and not entry.name.startswith("."):
            images.append(entry)
        else:
            others.append(entry.name)
    return images, others


def journal_ops(path: Path) -> list[dict]:
    return Journal(Path(path) / JOURNAL_NAME).entries()


def assert_saved_once(session: Session, gens: list) -> None:
    """Every generation saved, each exactly once: one complete image file, one 'saved' record."""
    for gen in gens:
        gen.wait(20)
        assert gen.status == "succeeded" and gen.path is not None, gen
    images, others = folder(session.output.path)
    assert sorted(images) == sorted(g.path for g in gens)
    assert others == [JOURNAL_NAME]  # no .partial-* and nothing else
    for path in images:
        Image.open(path).load()  # complete: a cut file would not decode
    saved = Counter(e["key"] for e in journal_ops(session.output.path) if e["op"] == "saved")
    assert saved == Counter(g.key for g in gens)


def flux_recipe(path: Path) -> Recipe:
    return read_recipe(path)


def recipe(seed: int = 1, **params) -> Recipe:
    params.setdefault("num_inference_steps", 2)
    params.setdefault("aspect_ratio", "1:1")
    return Recipe.build(params.pop("prompt", "a lighthouse in fog"), seed=seed, **params)
