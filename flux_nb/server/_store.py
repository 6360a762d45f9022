"""Generation rows: their state machine, their wire form, and the events each change publishes.

Rows are changed by worker threads and read by the event loop, always under one lock, so a
reader never sees a half-made change (say, status 'succeeded' without its result). Rows persist
for the life of the server, like the hosted queue's.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._events import EventHub

QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "processing",
    "succeeded",
    "failed",
    "cancelled",
)
ACTIVE = frozenset({QUEUED, PROCESSING})
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
STATUSES = (QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED)
# The one event the hosted stream carries for generations: once, on succeeded or failed (never
# for cancelled), as the docs say.
COMPLETED_EVENT = "media_generation_completed"
# Local-only (opt-in): per-step progress. The hosted stream has no such event; the client may draw
# a progress bar from it but never needs it.
PROGRESS_EVENT = "media_generation_progress"
# Progress events are rate-limited per generation (at most one per step, and at most one per
# this many seconds): enough for a progress bar, and cheap when steps take no time at all.
PROGRESS_INTERVAL = 0.05
# In list answers, data: URIs longer than this are shortened: a list of edits must not weigh
# hundreds of megabytes. GET /api/ai/queue/{id} always echoes the request in full.
LIST_URI_CHARS = 256
FILES_PATH = "/api/files/"
TARGET_FIELDS = ("target_namespace", "target_repo", "target_directory")


@dataclass(eq=False)
class Row:
    """One generation. Change it only through Store methods (they hold the lock).

    params are the model parameters as sent (echoed at the top level of the generation object,
    seed only if one was sent); run_seed is the seed the engine uses (the sent one, plus the
    index for num_generations > 1, or one drawn here when none was sent; None when the sent one
    is invalid, so the run fails on it)."""

    id: str
    owner: str
    model: str
    params: dict[str, Any]
    run_seed: int | None
    targets: dict[str, Any]
    enqueued_at: int
    status: str = QUEUED
    started_at: int | None = None
    completed_at: int | None = None
    error_message: str | None = None
    file_name: str | None = None  # "<id>.<ext>" under the results folder, once succeeded
    content_type: str | None = None
    step: int = 0
    total: int = 0
    last_progress: float = 0.0
    listed: bool = True  # False for sync calls: they are not queue rows
    # The base URL the request came in on: input_image URLs under it are this server's own files,
    # read without a network fetch.
    origin: str | None = None
    # Called (under the lock, so keep it tiny) once the row turns terminal; sync calls wait on it.
    on_done: Callable[[Row], None] | None = field(default=None, repr=False)
    # The server's own time for a generation, for benchmarks and the browser test; not part of
    # the generation object (whose timestamps are whole seconds on the hosted API).
    created_mono: float = field(default_factory=time.monotonic, repr=False)
    started_mono: float | None = field(default=None, repr=False)
    finished_mono: float | None = field(default=None, repr=False)

    @property
    def result_path(self) -> str | None:
        return FILES_PATH + self.file_name if self.file_name else None

    @property
    def run_params(self) -> dict[str, Any]:
        """What the engine runs: the parameters as sent, with the seed it uses."""
        return self.params if self.run_seed is None else {**self.params, "seed": self.run_seed}


class Store:
    """All rows, by id and by owner, plus the transitions queued -> processing -> terminal."""

    def __init__(
        self, hub: EventHub, *, progress_events: bool = False, echo_drawn_seed: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self._hub = hub
        self._progress_events = progress_events
        self._echo_drawn_seed = echo_drawn_seed
        self._rows: dict[str, Row] = {}
        self._by_owner: dict[str, list[Row]] = {}

    # --- reads -------------------------------------------------------------------------------

    def get(self, generation_id: str, owner: str | None = None) -> Row | None:
        """The queue row, or None when unknown or (with owner given) someone else's. A sync
        call's row is no queue row: it is found only without an owner (its result file)."""
        row = self._rows.get(generation_id)
        if row is None or (owner is not None and (row.owner != owner or not row.listed)):
            return None
        return row

    def rows(
        self,
        owner: str,
        *,
        model: str | None = None,
        status: str | None = None,
        media_type: str | None = None,
        repo: str | None = None,
        folder: str | None = None,
    ) -> list[Row]:
        """The owner's rows, newest first: active ones only unless a status is asked for, as the
        hosted list does."""
        with self._lock:
            rows = list(reversed(self._by_owner.get(owner, ())))
        if media_type is not None and media_type != "image":
            return []
        return [
            r
            for r in rows
            if r.listed
            and (r.status == status if status is not None else r.status in ACTIVE)
            and (model is None or r.model == model)
            and (repo is None or r.targets.get("target_repo") == repo)
            and (folder is None or r.targets.get("target_directory") == folder)
        ]

    def view(self, row: Row, base_url: str, *, brief: bool = False) -> dict[str, Any]:
        """The generation object as the hosted API returns it (oxen-api.md 3.3): its fields, then
        the request parameters echoed at the top level; URLs absolute against base_url."""
        params = dict(row.params)
        if self._echo_drawn_seed and "seed" not in params:
            params["seed"] = row.run_seed
        if brief and isinstance(params.get("input_image"), list):
            params["input_image"] = [_shorten(v) for v in params["input_image"]]
        with self._lock:
            path = row.result_path
            return {
                "generation_id": row.id,
                "model_name": row.model,
                "prompt": row.params.get("prompt"),
                "media_type": "image",
                "status": row.status,
                "result_url": base_url + path if path else None,
                "error_message": row.error_message,
                "enqueued_at": row.enqueued_at,
                "started_at": row.started_at,
                "completed_at": row.completed_at,
                **{name: row.targets.get(name) for name in TARGET_FIELDS},
                **{k: v for k, v in params.items() if k != "prompt"},
            }

    def progress_of(self, row: Row) -> tuple[int, int]:
        with self._lock:
            return row.step, row.total

    # --- transitions -------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        model: str,
        params: dict[str, Any],
        run_seed: int | None,
        targets: dict[str, Any] | None = None,
        *,
        listed: bool = True,
    ) -> Row:
        row = Row(
            str(uuid.uuid4()), owner, model, params, run_seed, targets or {}, int(time.time())
        )
        row.listed = listed
        with self._lock:
            self._rows[row.id] = row
            self._by_owner.setdefault(owner, []).append(row)
        return row

    def start(self, row: Row, total: int) -> bool:
        """queued -> processing (announced as progress step 0); False if cancelled meanwhile."""
        with self._lock:
            if row.status != QUEUED:
                return False
            row.status, row.total, row.started_at = PROCESSING, total, int(time.time())
            row.started_mono = time.monotonic()
            self._publish_progress(row, force=True)
            return True

    def progress(self, row: Row, step: int, total: int) -> None:
        """The engine finished step `step` of `total` (called from its worker thread)."""
        with self._lock:
            if row.status != PROCESSING:
                return
            row.step, row.total = step, total
            self._publish_progress(row, force=False)

    def _publish_progress(self, row: Row, *, force: bool) -> None:
        if not self._progress_events or not row.listed or not self._hub.has_subscribers(row.owner):
            return
        now = time.monotonic()
        if not force and now - row.last_progress < PROGRESS_INTERVAL:
            return
        row.last_progress = now
        data = {"generation_id": row.id, "status": PROCESSING, "step": row.step, "total": row.total}
        self._hub.publish(row.owner, PROGRESS_EVENT, data, keep=False)

    def succeed(self, row: Row, file_name: str, content_type: str) -> bool:
        """processing -> succeeded; False when it was cancelled meanwhile (drop the result)."""
        with self._lock:
            if row.status != PROCESSING:
                return False
            row.file_name, row.content_type = file_name, content_type
            row.step = row.total
            self._finish(row, SUCCEEDED, None)
            return True

    def fail(self, row: Row, message: str) -> bool:
        with self._lock:
            if row.status in TERMINAL:
                return False
            self._finish(row, FAILED, message)
            return True

    def cancel(self, row: Row, message: str | None = None) -> bool:
        """queued/processing -> cancelled at once; the engine notices between steps."""
        with self._lock:
            if row.status in TERMINAL:
                return False
            self._finish(row, CANCELLED, message)
            return True

    def _finish(self, row: Row, status: str, message: str | None) -> None:
        row.finished_mono = time.monotonic()
        row.status, row.error_message = status, message
        row.completed_at = int(time.time())
        if not row.listed:
            pass  # a sync call: answered on its own request, never on the queue's event stream
        elif status == SUCCEEDED:
            # Relative here; each stream makes it absolute with its own base URL (see _app.py).
            data: dict[str, Any] = {
                "generation_id": row.id,
                "status": status,
                "media_type": "image",
                "model": row.model,
                "url": row.result_path,
            }
            self._hub.publish(row.owner, COMPLETED_EVENT, data)
        elif status == FAILED:
            data = {
                "generation_id": row.id,
                "status": status,
                "media_type": "image",
                "error": message,
            }
            self._hub.publish(row.owner, COMPLETED_EVENT, data)
        # cancelled: no event, as on the hosted stream; clients learn it by reading the row.
        if row.on_done is not None:
            row.on_done(row)


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:") and len(value) > LIST_URI_CHARS:
        head = value[: value.find(",") + 1] if "," in value[:100] else value[:40]
        return f"{head}...({len(value)} characters; GET the generation for the full value)"
    return value
