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

from .events import EventHub

QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "processing",
    "succeeded",
    "failed",
    "cancelled",
)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
EVENT_NAMES = {
    SUCCEEDED: "media_generation_completed",
    FAILED: "media_generation_failed",
    CANCELLED: "media_generation_cancelled",
}
PROGRESS_EVENT = "media_generation_progress"
# Progress events are rate-limited per generation (at most one per step, and at most one per
# this many seconds): enough for a progress bar, and cheap when steps take no time at all.
PROGRESS_INTERVAL = 0.05
# In list answers, data: URIs longer than this are shortened: a list of edits must not weigh
# hundreds of megabytes. GET /api/ai/queue/{id} always echoes the request in full.
LIST_URI_CHARS = 256
FILES_PATH = "/api/files/"


@dataclass(eq=False)
class Row:
    """One generation. Change it only through Store methods (they hold the lock)."""

    id: str
    owner: str
    model: str
    params: dict[str, Any]
    engine: str
    created_at: float
    updated_at: float
    status: str = QUEUED
    completed_at: float | None = None
    error_message: str | None = None
    file_name: str | None = None  # "<id>.<ext>" under the results folder, once succeeded
    content_type: str | None = None
    step: int = 0
    total: int = 0
    last_progress: float = 0.0
    # Called (under the lock, so keep it tiny) once the row turns terminal; sync calls wait on it.
    on_done: Callable[[Row], None] | None = field(default=None, repr=False)
    # The server's own time for a generation, for benchmarks and the browser test; not part of
    # the generation object (whose timestamps are whole seconds on the hosted API).
    created_mono: float = field(default_factory=time.monotonic, repr=False)
    finished_mono: float | None = field(default=None, repr=False)

    @property
    def result_path(self) -> str | None:
        return FILES_PATH + self.file_name if self.file_name else None


class Store:
    """All rows, by id and by owner, plus the transitions queued -> processing -> terminal."""

    def __init__(self, hub: EventHub, engine_label: str) -> None:
        self._lock = threading.Lock()
        self._hub = hub
        self._engine_label = engine_label
        self._rows: dict[str, Row] = {}
        self._by_owner: dict[str, list[Row]] = {}

    # --- reads -------------------------------------------------------------------------------

    def get(self, generation_id: str, owner: str | None = None) -> Row | None:
        """The row, or None when unknown or (with owner given) someone else's."""
        row = self._rows.get(generation_id)
        if row is None or (owner is not None and row.owner != owner):
            return None
        return row

    def rows(self, owner: str, model: str | None = None) -> list[Row]:
        """The owner's rows, newest first."""
        with self._lock:
            rows = list(reversed(self._by_owner.get(owner, ())))
        return [r for r in rows if model is None or r.model == model]

    def view(self, row: Row, base_url: str, *, brief: bool = False) -> dict[str, Any]:
        """The generation object as the API returns it; URLs made absolute against base_url."""
        params = row.params
        if brief and isinstance(params.get("input_image"), list):
            params = {**params, "input_image": [_shorten(v) for v in params["input_image"]]}
        with self._lock:
            path = row.result_path
            return {
                **params,
                "generation_id": row.id,
                "status": row.status,
                "type": "image",
                "model": row.model,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
                "completed_at": row.completed_at,
                "result_url": base_url + path if path else None,
                "error_message": row.error_message,
                "progress": {"step": row.step, "total": row.total},
                "engine": row.engine,
            }

    # --- transitions -------------------------------------------------------------------------

    def create(self, owner: str, model: str, params: dict[str, Any]) -> Row:
        now = time.time()
        row = Row(str(uuid.uuid4()), owner, model, params, self._engine_label, now, now)
        with self._lock:
            self._rows[row.id] = row
            self._by_owner.setdefault(owner, []).append(row)
        return row

    def start(self, row: Row, total: int) -> bool:
        """queued -> processing (announced as progress step 0); False if cancelled meanwhile."""
        with self._lock:
            if row.status != QUEUED:
                return False
            row.status, row.total, row.updated_at = PROCESSING, total, time.time()
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
        if not self._hub.has_subscribers(row.owner):
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

    def cancel(self, row: Row, message: str = "cancelled by request") -> bool:
        """queued/processing -> cancelled at once; the engine notices between steps."""
        with self._lock:
            if row.status in TERMINAL:
                return False
            self._finish(row, CANCELLED, message)
            return True

    def _finish(self, row: Row, status: str, message: str | None) -> None:
        row.finished_mono = time.monotonic()
        now = time.time()
        row.status, row.error_message = status, message
        row.updated_at = row.completed_at = now
        data: dict[str, Any] = {"generation_id": row.id, "status": status}
        if status == SUCCEEDED:
            # Relative here; each stream makes it absolute with its own base URL (see app.py).
            data.update(result_url=row.result_path, type="image", model=row.model)
        else:
            data["error_message"] = message
        self._hub.publish(row.owner, EVENT_NAMES[status], data)
        if row.on_done is not None:
            row.on_done(row)


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:") and len(value) > LIST_URI_CHARS:
        head = value[: value.find(",") + 1] if "," in value[:100] else value[:40]
        return f"{head}...({len(value)} characters; GET the generation for the full value)"
    return value
