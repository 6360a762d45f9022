"""Generation handles and the runner that moves them along in the background.

The runner never draws: it changes a Generation's state and calls its callbacks. Completion comes
from one SSE connection for all generations (`media_generation_completed`, succeeded or failed);
polling `GET /api/ai/queue/{id}` takes over with backoff while the stream is down, after every
reconnect (the stream has no replay), and as slow safety polls (10 s, doubling to 30 s) that
notice what the stream never says: a cancel, made here or elsewhere, has no event.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import errors
from .client import (
    COMPLETED_EVENT,
    PROGRESS_EVENT,
    AmbiguousSend,
    Event,
    OxenClient,
    mentions_credits,
    result_url,
)
from .journal import Journal
from .recipe import Recipe
from .storage import OutputFolder

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("flux_nb.jobs")

ACTIVE = ("submitting", "queued", "processing")
SAFETY_POLL_FIRST = 10.0
SAFETY_POLL_MAX = 30.0  # a cancel made elsewhere has no event: noticed within this many seconds
CANCEL_CHECKS = (0.0, 0.5, 1.0, 2.0, 4.0)  # reads of the row after our own cancel was taken
FALLBACK_POLL_FIRST = 0.5
FALLBACK_POLL_MAX = 5.0
UNMATCHED_EVENT_TTL = 300.0


class Generation:
    """A handle on one image being made: status, wait(), cancel(), image, path, reproduce(), vary()."""

    def __init__(
        self, recipe: Recipe, runner: Runner, *, key: str | None = None, lineage: dict[str, Any] | None = None
    ):
        self.recipe = recipe
        self.lineage = lineage  # how its input images were made (lineage.py), kept beside the recipe
        self.key = key or uuid.uuid4().hex
        self.id: str | None = None
        self.status = "submitting"
        self.progress: tuple[int, int] | None = None
        self.error: errors.FluxError | None = None
        self.save_error: errors.StorageError | None = None
        self.result_url: str | None = None
        self.path = None
        self.data: bytes | None = None
        self.created = time.time()
        self.finished: float | None = None
        self.backend = runner.backend
        self.engine: str | None = runner.engine  # what makes the image, when the backend says
        self._runner = runner
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False
        self._cancel_requested = False
        self._cancel_sent = False
        self._callbacks: list[Callable[[Generation], None]] = []
        self._done_callbacks: list[Callable[[], None]] = []
        self._image: Image.Image | None = None
        self._thumb: dict[int, bytes] = {}
        self._polls = 0
        self._next_poll = 0.0
        self._download_failures = 0

    # -- what people use ---------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def prompt(self) -> str:
        return self.recipe.prompt

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        """Seconds from submission to the saved file (or until now, while it runs)."""
        return (self.finished or time.time()) - self.created

    def wait(self, timeout: float | None = None) -> Generation:
        """Block until the image is saved; raise GenerationFailed/GenerationCancelled otherwise."""
        if not self._done.wait(timeout):
            raise errors.FluxError(
                f"Generation {self.id or self.key[:8]} is still {self.status} after {timeout:g} s.",
                hint="Call wait() again, or cancel() it.",
            )
        if self.status == "failed":
            raise errors.GenerationFailed(f"Generation {self.id or self.key[:8]} failed: {self.reason}.")
        if self.status == "cancelled":
            raise errors.GenerationCancelled(f"Generation {self.id or self.key[:8]} was cancelled.")
        return self

    def __await__(self):
        """`await g`: wait for the saved image without blocking the event loop (top-level await
        in a notebook, asyncio.run in a script); raises as wait() does. Cancelling the awaiting
        task stops the waiting only: the generation goes on unless g.cancel() is called."""
        return self._wait_async().__await__()

    async def _wait_async(self) -> Generation:
        import asyncio

        if not self.done:
            loop = asyncio.get_running_loop()
            settled: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                if not settled.done():
                    settled.set_result(None)

            self._when_done(lambda: loop.call_soon_threadsafe(wake))
            await settled
        return self.wait(0)

    def _when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once, as soon as the generation has ended (at once if it has)."""
        with self._lock:
            if not self.done:
                self._done_callbacks.append(callback)
                return
        callback()

    def cancel(self) -> Generation:
        """Ask the backend to stop this generation; the status turns 'cancelled' when it has."""
        if not self.done:
            self._runner.cancel(self)
        return self

    def reproduce(self) -> Generation:
        """The same recipe, seed included, again: the same pixels on a deterministic backend."""
        return self._runner.submit([self.recipe], [self.lineage])[0]

    def vary(self, seed: int | None = None) -> Generation:
        """The same recipe with a new seed."""
        return self._runner.submit([self.recipe.with_seed(seed)], [self.lineage])[0]

    @property
    def reason(self) -> str:
        """Why it failed or was cancelled, in the server's words or ours."""
        return self.error.message if self.error else ""

    @property
    def image(self) -> Image.Image:
        """The full-size result as a PIL image (waits for it if needed)."""
        if self._image is None:
            self.wait()
            from PIL import Image

            image = Image.open(io.BytesIO(self.data) if self.data else self.path)
            image.load()  # before publishing: another thread must never see a half-read image
            if image.mode in ("P", "PA", "L", "LA"):  # palette PNGs: give colours, not indices
                image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
            self._image = image
        return self._image

    def save(self, folder: Any = None) -> Any:
        """Save again after a StorageError (or into another folder); returns the path."""
        self.wait()
        target = OutputFolder(folder) if folder is not None else self._runner.output
        path = target.save(self.data, self.recipe, self.id, self._runner.file_extra(self))
        if folder is None:
            self.path, self.save_error = path, None
            self._runner.journal.record({"op": "saved", "key": self.key, "id": self.id, "path": str(path)})
        return path

    def thumbnail(self, max_side: int = 320) -> bytes:
        """A small PNG of the result for previews; deterministic for the same image."""
        if max_side not in self._thumb:
            from .thumbnail import make_thumbnail

            self._thumb[max_side] = make_thumbnail(self.image, max_side)
        return self._thumb[max_side]

    def on_change(self, callback: Callable[[Generation], None]) -> None:
        """Call `callback(self)` (from a background thread) after every state change."""
        self._callbacks.append(callback)
        if self.done:
            self._safe_call(callback)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        why = f", reason={self.reason!r}" if self.error and self.status in ("failed", "cancelled") else ""
        return f"<Generation {self.id or 'unsent'} {self.status} seed={self.seed} prompt={self.prompt[:40]!r}{where}{why}>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .cards import generation_mimebundle

        return generation_mimebundle(self)

    # -- state changes, called by the runner -----------------------------------------------------

    def _safe_call(self, callback: Callable[[Generation], None]) -> None:
        try:
            callback(self)
        except Exception:  # a broken view must never stop the runner
            log.exception("a callback on generation %s failed", self.id)

    def _changed(self) -> None:
        for callback in list(self._callbacks):
            self._safe_call(callback)

    def _claim(self) -> bool:
        """Take the right to finish this generation; true once only, so no result is handled twice."""
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    def _update(self, status: str | None = None, progress: tuple[int, int] | None = None) -> None:
        if self.done or self._claimed and status in ACTIVE:
            return
        changed = False
        if status and status != self.status and status in ACTIVE:
            self.status, changed = status, True
        if progress and progress != self.progress:
            self.progress, changed = progress, True
        if changed:
            self._changed()

    def _finish(self, status: str, error: errors.FluxError | None = None) -> None:
        self.status = status
        self.error = error
        self.finished = time.time()
        with self._lock:
            self._done.set()
            waiting, self._done_callbacks = self._done_callbacks, []
        self._changed()
        for callback in waiting:
            try:
                callback()
            except Exception:  # an event loop closed meanwhile: nobody is waiting any more
                log.debug("a done-callback of generation %s failed", self.id, exc_info=True)


class Runner:
    """One per session: enqueues, listens to /api/events, polls as fallback, downloads and saves."""

    def __init__(
        self,
        client: OxenClient,
        output: OutputFolder,
        journal: Journal,
        *,
        backend: str,
        sse_read_timeout: float | None = None,
    ):
        self.client = client
        self.output = output
        self.journal = journal
        self.backend = backend
        self.engine: str | None = None  # the local server's engine label, set by the session
        self.sse_read_timeout = sse_read_timeout
        self.history: list[Generation] = []  # every handle made here, reproduce()/vary() included
        self._pending: dict[str, Generation] = {}
        self._unmatched: dict[str, tuple[float, Event]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="flux-nb-io")
        self._threads: list[threading.Thread] = []
        self._send_locks: dict[str, list[Any]] = {}  # recipe JSON -> [lock, users]
        self._stopping = threading.Event()
        self._sse_up = False
        self._last_event_id: str | None = None
        self.stats = {"events": 0, "polls": 0, "enqueues": 0, "downloads": 0, "sse_connects": 0}

    def __repr__(self) -> str:
        return f"<Runner {self.backend} pending={len(self._pending)} stream={'up' if self._sse_up else 'down'}>"

    # -- public -----------------------------------------------------------------------------------

    def submit(self, recipes: list[Recipe], lineages: list[dict[str, Any] | None] | None = None) -> list[Generation]:
        """Journal the recipes (with each one's lineage, when it has one), then enqueue each in
        the background; returns handles at once."""
        lineages = lineages or [None] * len(recipes)
        gens = [Generation(r, self, lineage=lin) for r, lin in zip(recipes, lineages, strict=True)]
        server = self.client.base_url
        self.journal.record(
            *(
                {
                    "op": "submit",
                    "key": g.key,
                    "backend": self.backend,
                    "server": server,
                    "recipe": g.recipe.to_dict(),
                    **({"lineage": g.lineage} if g.lineage else {}),
                }
                for g in gens
            )
        )
        if self.journal.broken:
            # Work a restarted kernel could not find would be paid for and lost: send nothing.
            raise errors.StorageError(
                f"Nothing was sent: the journal {self.journal.path} cannot be written ({self.journal.broken}).",
                hint="Set FLUX_NB_OUTPUT_DIR (or output_dir=) to a writable folder, then run again.",
            )
        self.history.extend(gens)
        self._start()
        for g in gens:
            self._pool.submit(self._enqueue, g)
        return gens

    def adopt(
        self, recipe: Recipe, key: str, generation_id: str | None, lineage: dict[str, Any] | None = None
    ) -> Generation:
        """A handle for a journalled generation from an earlier kernel (see Session.resume)."""
        gen = Generation(recipe, self, key=key, lineage=lineage)
        self.history.append(gen)
        self._start()
        if generation_id:
            gen.id = generation_id
            gen.status = "queued"
            self._register(gen, poll_now=True)
        else:
            self._pool.submit(self._enqueue, gen)
        return gen

    def load(self, path: Any) -> Generation:
        """A finished handle for an image saved earlier, from the recipe embedded in its file."""
        from pathlib import Path

        from .lineage import FIELD, parse
        from .metadata import read_recipe

        path = Path(path)
        found = read_recipe(path)
        gen = Generation(Recipe.from_dict(found["recipe"]), self, lineage=parse(found.get(FIELD)))
        gen.id = found.get("generation_id") or None
        gen.engine = found.get("engine") or None
        gen.path = path
        gen._claimed = True
        saved_at = path.stat().st_mtime
        gen.created = _parse_utc(found.get("created")) or saved_at
        gen.finished = max(saved_at, gen.created)
        gen.status = "succeeded"
        gen._done.set()
        return gen

    def cancel(self, gen: Generation) -> None:
        gen._cancel_requested = True
        if gen.id is not None:
            self._pool.submit(self._send_cancel, gen)

    def pending(self) -> list[Generation]:
        with self._lock:
            return list(self._pending.values())

    def stop(self) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def file_extra(self, gen: Generation) -> dict[str, str]:
        """Text stored beside the recipe in the image file: never the key, never a token."""
        return {
            "generation_id": gen.id or "",
            "backend": self.backend,
            **({"engine": gen.engine} if gen.engine else {}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(gen.created)),
            **({"lineage": _lineage_text(gen.lineage)} if gen.lineage else {}),
        }

    # -- threads ----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._threads:
            return
        with self._lock:
            if self._threads:
                return
            for name, target in (("flux-nb-events", self._listen), ("flux-nb-poller", self._poll_loop)):
                thread = threading.Thread(target=target, name=name, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _enqueue(self, gen: Generation) -> None:
        if gen._cancel_requested:
            self._terminal(gen, "cancelled", errors.GenerationCancelled("cancelled before it was sent"))
            return
        with self._sending(gen.recipe):
            rows = self._send(gen)
            if rows is None:
                return
            gen.id = str(rows[0]["generation_id"])
        self.journal.record({"op": "enqueued", "key": gen.key, "id": gen.id})
        # "queued" today; older docs showed "processing" here: both are taken as they come.
        gen._update(status=rows[0].get("status") if rows[0].get("status") in ACTIVE else "queued")
        self._register(gen)
        if gen._cancel_requested:
            self._send_cancel(gen)

    @contextlib.contextmanager
    def _sending(self, recipe: Recipe) -> Iterator[None]:
        """One send at a time per identical recipe (reproduce() twice, say): otherwise the check
        after an ambiguous send could take the other one's fresh row for its own."""
        key = recipe.to_json()
        with self._lock:
            entry = self._send_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._send_locks[key]

    def _send(self, gen: Generation) -> list[dict[str, Any]] | None:
        """POST the recipe; the rows, or None once the generation has been ended. After an
        ambiguous send the queue is searched for it before sending again; when the queue cannot be
        read, nothing is sent again (that could pay twice): the journal keeps it for resume()."""
        sent_at = time.time()
        for _ in range(max(1, self.client.retry.attempts)):
            try:
                self.stats["enqueues"] += 1
                return self.client.enqueue(gen.recipe)
            except AmbiguousSend as exc:
                log.debug("%s; looking for it in the queue", exc)
                try:
                    candidates = self.client.find_enqueued(gen.recipe, sent_at)
                except errors.FluxError as check:
                    self._terminal(gen, "failed", errors.NetworkError(
                        "The connection broke while enqueueing and the queue could not be read to see"
                        f" whether the server took it ({check.message})",
                        hint="Run flux_nb.resume() later: it finds the generation if the server has it.",
                    ), journal=False)
                    return None
                known = {g.id for g in list(self.history) if g.id}
                found = [r for r in candidates if str(r["generation_id"]) not in known]
                if found:
                    return found[-1:]  # the oldest row of this recipe that no handle has: ours
            except errors.FluxError as exc:
                self._terminal(gen, "failed", exc)
                return None
        self._terminal(gen, "failed", errors.NetworkError(
            f"Enqueueing broke off {self.client.retry.attempts} times and the server holds no such generation."
        ))
        return None

    def _register(self, gen: Generation, poll_now: bool = False) -> None:
        with self._wake:
            self._pending[gen.id] = gen
            early = self._unmatched.pop(gen.id, None)
            gen._polls = 0
            gen._next_poll = time.monotonic() if poll_now else self._poll_due(gen)
            self._wake.notify_all()
        if early is not None:
            self._on_event(early[1])

    def _poll_due(self, gen: Generation) -> float:
        if self._sse_up:
            interval = min(SAFETY_POLL_MAX, SAFETY_POLL_FIRST * 2**gen._polls)
        else:
            interval = min(FALLBACK_POLL_MAX, FALLBACK_POLL_FIRST * 2**gen._polls)
        return time.monotonic() + interval

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                now = time.monotonic()
                due = [g for g in self._pending.values() if g._next_poll <= now and not g._claimed]
                for g in due:
                    g._polls += 1
                    g._next_poll = self._poll_due(g)
                if not due:
                    # claimed ones are being collected: their poll time is stale, and counting
                    # it would make this loop spin while their downloads run
                    waiting = (g._next_poll for g in self._pending.values() if not g._claimed)
                    upcoming = min(waiting, default=now + 60)
                    self._wake.wait(max(0.01, min(60.0, upcoming - now)))
                    continue
            for g in due:
                self._pool.submit(self._poll_one, g)

    def _poll_one(self, gen: Generation) -> None:
        if gen._claimed or gen.id is None:
            return
        try:
            self.stats["polls"] += 1
            row = self.client.get_generation(gen.id)
        except errors.NotFoundError as exc:
            self._terminal(gen, "failed", exc)
            return
        except errors.AuthError as exc:
            self._auth_failed(exc)
            return
        except errors.FluxError as exc:
            log.debug("poll of %s failed: %s", gen.id, exc)
            return
        self._apply(gen, row)

    def _listen(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                for event in self.client.events(
                    self._last_event_id, read_timeout=self.sse_read_timeout, on_open=self._stream_opened
                ):
                    backoff = 0.5
                    if event.id:
                        self._last_event_id = event.id
                    self.stats["events"] += 1
                    self._on_event(event)
                    if self._stopping.is_set():
                        return
            except errors.AuthError as exc:
                self._stream_closed()
                self._auth_failed(exc)
                backoff = 30.0  # the key will not fix itself; polls of new work will say so too
            except errors.FluxError as exc:
                log.debug("event stream down: %s", exc)
            except Exception:  # never let the listener die: polling alone would carry on, slower
                log.exception("event stream failed")
            self._stream_closed()
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)

    def _auth_failed(self, exc: errors.FluxError) -> None:
        """The key was refused: every generation waiting on this server fails with that one line,
        rather than hang (the server will not answer it until the key is fixed)."""
        for gen in self.pending():
            if gen._claim():
                self._terminal(gen, "failed", errors.AuthError(exc.message), journal=False)

    def _stream_opened(self) -> None:
        """After every (re)connect, check each pending generation once: events may have been missed."""
        self.stats["sse_connects"] += 1
        with self._wake:
            self._sse_up = True
            now = time.monotonic()
            for g in self._pending.values():
                g._polls = 0
                g._next_poll = now
            self._wake.notify_all()

    def _stream_closed(self) -> None:
        with self._wake:
            if not self._sse_up:
                return
            self._sse_up = False
            now = time.monotonic()
            for g in self._pending.values():
                g._polls = 0
                g._next_poll = min(g._next_poll, now + FALLBACK_POLL_FIRST)
            self._wake.notify_all()

    def _on_event(self, event: Event) -> None:
        """Only media_generation_completed moves a generation on; the local server's optional
        progress event only feeds the progress bar; every other event type is ignored."""
        if event.name not in (COMPLETED_EVENT, PROGRESS_EVENT):
            return
        gid = event.generation_id
        if not gid:
            return
        with self._lock:
            gen = self._pending.get(gid)
            if gen is None:
                if event.name == COMPLETED_EVENT:  # it may come before the enqueue answer
                    now = time.monotonic()
                    self._unmatched[gid] = (now, event)
                    if len(self._unmatched) > 1000:
                        self._unmatched = {k: v for k, v in self._unmatched.items() if now - v[0] < UNMATCHED_EVENT_TTL}
                return
        if event.name == PROGRESS_EVENT:
            step, total = event.data.get("step"), event.data.get("total")
            if isinstance(step, int) and isinstance(total, int):
                gen._update(status="processing", progress=(step, total))
            return
        self._apply(gen, event.data)

    def _apply(self, gen: Generation, row: dict[str, Any]) -> None:
        """Move a generation on from a poll answer or an event payload."""
        status = str(row.get("status", "")).lower().replace("canceled", "cancelled")
        if status == "succeeded":
            url = result_url(row)
            if url is None:
                self._pool.submit(self._poll_one, gen)  # the event had no URL: read the row
                return
            if gen._claim():
                gen.result_url = url
                self._pool.submit(self._collect, gen)
        elif status in ("failed", "cancelled"):
            if gen._claim():
                if status == "cancelled":
                    default = "cancelled by request" if gen._cancel_requested else "cancelled on the server (elsewhere)"
                else:
                    default = "the server gives no reason"
                message = row.get("error_message") or row.get("error") or default
                message = self.client.redact(" ".join(str(message).split())[:300])
                if status == "cancelled":
                    error: errors.FluxError = errors.GenerationCancelled(message)
                elif mentions_credits(message):
                    error = errors.GenerationFailed(message, hint=errors.CreditsError.hint)
                else:
                    error = errors.GenerationFailed(message)
                self._terminal(gen, status, error)
        elif status in ACTIVE:
            gen._update(status=status)

    def _collect(self, gen: Generation) -> None:
        """Download, check, embed the recipe and save; on a storage error keep the bytes in memory."""
        try:
            self.stats["downloads"] += 1
            data = self.client.download(gen.result_url)
            _check_image(data)
        except errors.FluxError as exc:
            gen._download_failures += 1
            if gen._download_failures < 3:
                with self._wake:
                    gen._claimed = False
                    gen._next_poll = time.monotonic() + self.client.retry.delay(gen._download_failures + 2)
                    self._wake.notify_all()
                return
            self._terminal(gen, "failed", errors.NetworkError(
                f"The image was made but could not be downloaded ({exc.message}).",
                hint="Run flux_nb.resume() to try again.",
            ), journal=False)
            return
        gen.data = data
        try:
            gen.path = self.output.save(data, gen.recipe, gen.id, self.file_extra(gen))
        except errors.StorageError as exc:
            gen.save_error = exc
            self._terminal(gen, "succeeded", None, journal=False)
            return
        self.journal.record({"op": "saved", "key": gen.key, "id": gen.id, "path": str(gen.path)})
        self._terminal(gen, "succeeded", None, journal=False)

    def _send_cancel(self, gen: Generation) -> None:
        """DELETE the generation (once), then read its row until it says so: no event follows a
        cancel. A row that finished first stays finished (and is collected as usual)."""
        with gen._lock:
            if gen._cancel_sent:
                return
            gen._cancel_sent = True
        try:
            self.client.cancel(gen.id)
        except errors.FluxError as exc:
            gen._cancel_sent = False  # cancel() may try again
            gen.error = exc  # shown on the card; the generation runs on
            gen._changed()
            return
        for delay in CANCEL_CHECKS:
            if gen._claimed or self._stopping.wait(delay):
                return
            self._poll_one(gen)

    def _terminal(self, gen: Generation, status: str, error: errors.FluxError | None, journal: bool = True) -> None:
        gen._claimed = True
        with self._wake:
            if gen.id is not None:
                self._pending.pop(gen.id, None)
        if journal:
            self.journal.record({"op": status, "key": gen.key, "id": gen.id, "reason": error.message if error else ""})
        gen._finish(status, error)


def _lineage_text(record: dict[str, Any]) -> str:
    from .lineage import dumps

    return dumps(record)


def _parse_utc(text: Any) -> float | None:
    import calendar

    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def _check_image(data: bytes) -> None:
    """Refuse bytes that are not a whole image, so a corrupt file never reaches the folder."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as exc:
        raise errors.NetworkError(f"the downloaded file is not a readable image ({type(exc).__name__})") from None
