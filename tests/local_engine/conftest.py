"""Fixtures for the flux2-klein engine: a tiny random Flux2KleinPipeline saved with save_pretrained,
served by the real local server through the real `--model FOLDER` path. No download: these tests
run in .venv-local (flux-nb[local] with torch 2.13.0 CPU), see scripts/test.sh."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

# Nothing here may reach the Hugging Face hub: a model id must fail from the cache, at once.
os.environ["HF_HUB_OFFLINE"] = "1"

import httpx  # noqa: E402
import pytest  # noqa: E402

from flux_nb.core._config import Settings  # noqa: E402
from flux_nb.jobs._sessions import Session  # noqa: E402
from flux_nb.server import LocalServer  # noqa: E402
from flux_nb.server._app import LocalExtras  # noqa: E402
from flux_nb.server.engines import EngineConfig  # noqa: E402

# Small pictures for most tests (16:9 is 160x96); full_size_server serves the real ~1 MP sizes.
SMALL = 0.125


@pytest.fixture(scope="session")
def klein_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Flux2KleinPipeline, saved as a diffusers folder (~0.7 MB)."""
    from klein_random import tiny_pipeline

    folder = tmp_path_factory.mktemp("klein-tiny")
    tiny_pipeline(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def direct_pipe(klein_folder: Path):
    """The same folder loaded directly: what a user would call without flux-nb."""
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline.from_pretrained(klein_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def klein_config(klein_folder: Path) -> EngineConfig:
    return EngineConfig("flux2-klein", model=str(klein_folder), device="cpu", size_scale=SMALL)


@pytest.fixture(scope="session")
def klein_server(klein_config: EngineConfig) -> Iterator[LocalServer]:
    # progress events are local-only and opt-in: on, as the embedded server has them, so the
    # progress and cancel tests can follow the steps
    with LocalServer(engine=klein_config, extras=LocalExtras(progress_events=True)) as server:
        yield server


@pytest.fixture(scope="session")
def full_size_server(klein_folder: Path) -> Iterator[LocalServer]:
    """The same weights at the real ~1 MP sizes (it shares the loaded pipeline)."""
    config = EngineConfig("flux2-klein", model=str(klein_folder), device="cpu")
    with LocalServer(engine=config) as server:
        yield server


@pytest.fixture
def api(klein_server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=klein_server.url, timeout=60.0) as client:
        yield client


@pytest.fixture
def make_server() -> Iterator[Callable[..., LocalServer]]:
    servers: list[LocalServer] = []

    def make(**options: object) -> LocalServer:
        servers.append(LocalServer(**options).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def klein_session(tmp_path: Path, klein_config: EngineConfig) -> Iterator[Session]:
    """A notebook's session on the embedded server with the flux2-klein engine."""
    session = Session(
        "local",
        engine=klein_config,
        output_dir=tmp_path / "out",
        settings=Settings(step_delay=0.0),
        announce=None,
    )
    yield session
    session.close()
