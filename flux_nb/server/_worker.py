"""A fixed pool of worker threads that run generations: validate, fetch inputs, render, store.

Rows are taken in fair turns across owners, sync calls (/api/ai/images/*) first (_turns.py).
No thread per generation: `workers` threads, started on the
first submit, each with its own engine instance (so engines need not be thread-safe). An engine
that shares one model (EngineConfig.serial) gets one worker per device it runs a pipeline on:
generations run one at a time on each (flux2-klein's --device cuda:0,cuda:1, or cpu,cpu).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx

from ..core._errors import InputImageError
from ..core._recipe import Recipe
from ._fetch import fetch_client
from ._inputs import InputLimits, load_images
from ._results import ResultFiles
from ._store import PROCESSING, QUEUED, Row, Store
from ._turns import FairQueue
from .engines import Cancelled, Engine, EngineConfig, EngineError, engine_slots, get_engine

log = logging.getLogger("flux_nb.server")


def build_recipe(model: str, params: dict[str, Any]) -> Recipe:
    """Validate request parameters the way the run does; raises ValueError with a clear message."""
    rest = {k: v for k, v in params.items() if k != "prompt"}
    return Recipe.build(params.get("prompt"), model=model, **rest)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line for error_message: a notebook shows it, never a traceback."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class WorkerPool:
    def __init__(
        self,
        store: Store,
        results: ResultFiles,
        *,
        engine: str | EngineConfig,
        workers: int,
        step_delay: float,
        input_limits: InputLimits,
        allow_private_urls: bool = False,
        own_files: Callable[[str, str], bytes | None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._store = store
        self._engine = EngineConfig.of(engine)
        self._engine_name = self._engine.name
        self._workers = workers  # for a serial engine: one per device, counted at the first submit
        self._step_delay = step_delay
        self._results = results
        self._input_limits = input_limits
        self._allow_private_urls = allow_private_urls
        self._own_files = own_files
        self._queue = FairQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._closing = False

    def submit(self, row: Row, *, urgent: bool = False) -> None:
        if not self._threads:
            self._start_threads()
        self._queue.put(row, urgent=urgent)

    def queued(self, owner: str) -> int:
        """How many of the owner's generations wait for a worker."""
        return self._queue.queued(owner)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the threads: a running render stops at its next step; queued rows stay queued."""
        self._closing = True
        self._queue.stop(len(self._threads))
        for thread in self._threads:
            thread.join(timeout)
        with self._lock:
            if self._http is not None:
                self._http.close()

    def _start_threads(self) -> None:
        with self._lock:
            if self._threads or self._closing:
                return
            try:
                count = engine_slots(self._engine, self._workers)
            except Exception:  # counting GPUs failed: one worker, whose load will say why
                log.exception("cannot count the devices of %s", self._engine_name)
                count = 1
            for i in range(count):
                thread = threading.Thread(
                    target=self._work, args=(i,), name=f"flux-nb-worker-{i}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = fetch_client(allow_private=self._allow_private_urls)
            return self._http

    def _work(self, slot: int) -> None:
        engine: Engine | None = None
        while True:
            row = self._queue.get()
            if row is None:
                return
            if row.status != QUEUED:  # cancelled while it waited
                continue
            try:
                if engine is None:
                    engine = get_engine(self._engine, slot)
                self._run(row, engine)
            except Exception as exc:  # a bug here must fail the row, never kill the thread
                log.exception("generation %s crashed", row.id)
                self._store.fail(row, f"the server failed: {one_line(exc)}")

    def _run(self, row: Row, engine: Engine) -> None:
        store = self._store
        try:
            recipe, error = build_recipe(row.model, row.run_params), None
        except (ValueError, TypeError) as exc:
            recipe, error = None, getattr(exc, "message", None) or str(exc)
        # Model parameters are checked when the generation runs (as the hosted queue does), so a
        # bad one shows as processing -> failed with the reason, not as an enqueue error.
        if not store.start(row, recipe.num_inference_steps if recipe else 0):
            return
        if recipe is None:
            store.fail(row, f"invalid parameters: {error}")
            return
        try:
            own = self._own_files
            images = load_images(
                recipe.input_image,
                self._client,
                self._input_limits,
                functools.partial(own, row.origin) if own and row.origin else None,
            )
        except InputImageError as exc:
            store.fail(row, exc.message)
            return
        try:
            data, content_type = engine.render(
                recipe,
                images,
                on_step=lambda step, total: store.progress(row, step, total),
                should_stop=lambda: row.status != PROCESSING or self._closing,
                step_delay=self._step_delay,
            )
        except Cancelled:
            # A cancel request already made the row terminal; otherwise the server is stopping.
            store.fail(row, "the server stopped before this generation finished")
            return
        except EngineError as exc:  # already one line that says what to do
            log.warning("generation %s failed: %s", row.id, exc)
            store.fail(row, str(exc))
            return
        except Exception as exc:
            log.exception("engine %s failed on generation %s", self._engine_name, row.id)
            store.fail(row, f"the {self._engine_name} engine failed: {one_line(exc)}")
            return
        name = f"{row.id}.{recipe.output_format}"
        self._results.put(name, data)
        if not store.succeed(row, name, content_type):
            self._results.discard(name)
