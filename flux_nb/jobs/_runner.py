"""The runner that moves generations along in the background:
enqueue, event stream, polls, downloads.

The runner never draws: it changes a Generation's state and calls its callbacks. Completion comes
from one SSE connection for all generations (`media_generation_completed`, succeeded or failed);
polling `GET /api/ai/queue/{id}` takes over with backoff while the stream is down, after every
reconnect (the stream has no replay), and as slow safety polls (10 s, doubling to 30 s) that
notice what the stream never says: a cancel, made here or elsewhere, has no event.

An open stream is trusted only while it delivers: it is trusted from its first byte (an event or a
`: keep-alive` comment) until nothing has come for the client's sse_read seconds (the hosted
stream's keep-alive comes every 15 s). A proxy that buffers the stream, or a connection that died
without closing, answers 200 and then says nothing: until the first byte and after such a silence
the runner polls itself, every second at first and backing off for long generations, and the read
timeout reconnects the stream. Bytes that start coming hand the work back to the stream; whichever
of an event and a poll claims a generation first finishes it, the other is ignored.

What the runner needs to schedule a generation (its claim, polls, cancel sent, download tries)
is its own `_Tracked` record, one per handle, never the handle's attributes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..api._client import (
    COMPLETED_EVENT,
    PROGRESS_EVENT,
    AmbiguousSend,
    Event,
    OxenClient,
    mentions_credits,
    result_url,
)
from ..core import _errors as errors
from ..core._recipe import Recipe
from ..core._status import (
    ACTIVE,
    CANCELLED,
    ENDED_BADLY,
    FAILED,
    PROCESSING,
    QUEUED,
    SUCCEEDED,
    Status,
    normalize,
)
from ..files._journal import Journal, Sent
from ..files._storage import OutputFolder
from ._generation import Generation, Send

log = logging.getLogger("flux_nb.runner")  # named by its job, not its file: users set its level

SAFETY_POLL_FIRST = 10.0
SAFETY_POLL_MAX = 30.0  # a cancel made elsewhere has no event: noticed within this many seconds
CANCEL_CHECKS = (0.0, 0.5, 1.0, 2.0, 4.0)  # reads of the row after our own cancel was taken
FALLBACK_POLL_FIRST = 0.5
FALLBACK_POLL_MAX = 5.0
SILENT_POLL_FIRST = 1.0  # an open stream that delivers nothing: 1 s, 2 s, 4 s, then every 5 s
SILENT_POLL_GROWTH = 2.0
SILENT_POLL_MAX = 5.0
UNMATCHED_EVENT_TTL = 300.0


@dataclasses.dataclass(eq=False, slots=True)
class _Tracked:
    """The runner's bookkeeping for one generation (slots: one is kept per handle made)."""

    gen: Generation
    claimed: bool = False  # someone is finishing it: no result is handled twice
    cancel_requested: bool = False
    cancel_sent: bool = False
    polls: int = 0
    next_poll: float = 0.0
    download_failures: int = 0
    sent_at: float = 0.0  # monotonic, when its enqueue was sent
    check: Callable[[], None] | None = None  # the cell's own check before its enqueue (cost)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """Take the right to finish this generation; true once only."""
        with self.lock:
            if self.claimed:
                return False
            self.claimed = True
            return True


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
        self._pending: dict[str, _Tracked] = {}  # generation id -> its record, until it ends
        self._tracks: dict[str, _Tracked] = {}  # key -> record, for every handle made here
        self._unmatched: dict[str, tuple[float, Event]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pool = ThreadPoolExecutor(
            max_workers=io_threads(backend), thread_name_prefix="flux-nb-io"
        )
        self._threads: list[threading.Thread] = []
        self._send_locks: dict[str, list[Any]] = {}  # recipe JSON -> [lock, users]
        self._stopping = threading.Event()
        self._sse_up = False
        self._heard_at: float | None = None  # last bytes on the open stream (monotonic)
        self._opened_at: float | None = None  # when the current stream opened (monotonic)
        # set while the stream is not trusted (since when nothing came); None while it delivers
        self._silent_since: float | None = None
        self._answered_silently = False  # a stream opened (200) during this silence
        self._last_event_id: str | None = None
        # Counted from the pool's threads, the listener and the poller: changed under _stats_lock.
        self.stats = {"events": 0, "polls": 0, "enqueues": 0, "downloads": 0, "sse_connects": 0}
        self._stats_lock = threading.Lock()
        # Checks that read the network run here, before each enqueue, never on a cell's path:
        # the session's re-check against the live schema; each submit's own (its cell's cost).
        self.before_send: Callable[[Generation], None] | None = None
        # Where a handle's reproduce() and vary() send: the session's submit (set by it).
        self.send: Send = self.submit

    def __repr__(self) -> str:
        stream = "trusted" if self._trusted(time.monotonic()) else "up" if self._sse_up else "down"
        return f"<Runner {self.backend} pending={len(self._pending)} stream={stream}>"

    @property
    def silence_allowed(self) -> float:
        """Seconds without a byte after which the stream is no longer trusted (and reconnected)."""
        return self.sse_read_timeout or self.client.timeouts.sse_read

    def _count(self, what: str) -> None:
        """One more of `what` in stats: `+=` on a dict item is a read and a write, and two
        threads between them would lose one."""
        with self._stats_lock:
            self.stats[what] += 1

    # -- public -----------------------------------------------------------------------------------

    def submit(
        self,
        recipes: list[Recipe],
        lineages: list[dict[str, Any] | None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> list[Generation]:
        """Journal the recipes (with each one's lineage, when it has one), then enqueue each in
        the background; returns handles at once. check() runs before each enqueue (a FluxError
        it raises ends that generation unsent)."""
        lineages = lineages or [None] * len(recipes)
        tracks = [
            self._track(Generation(r, self, lineage=lin))
            for r, lin in zip(recipes, lineages, strict=True)
        ]
        for track in tracks:
            track.check = check
        gens = [t.gen for t in tracks]
        self.journal.submitted(
            (Sent(g.key, g.recipe.to_dict(), g.lineage) for g in gens),
            backend=self.backend,
            server=self.client.base_url,
        )
        if self.journal.broken:
            # Work a restarted kernel could not find would be paid for and lost: send nothing.
            raise errors.StorageError(
                f"Nothing was sent: the journal {self.journal.path} cannot be written"
                f" ({self.journal.broken}).",
                hint=(
                    "Set FLUX_NB_OUTPUT_DIR (or output_dir=) to a writable folder, then run again."
                ),
            )
        self.history.extend(gens)
        self._start()
        for g in gens:
            self._pool.submit(self._enqueue, g)
        return gens

    def adopt(
        self,
        recipe: Recipe,
        key: str,
        generation_id: str | None,
        lineage: dict[str, Any] | None = None,
    ) -> Generation:
        """A handle for a journalled generation from an earlier kernel (see Session.resume)."""
        gen = self._track(Generation(recipe, self, key=key, lineage=lineage)).gen
        self.history.append(gen)
        self._start()
        if generation_id:
            gen.id = generation_id
            gen.status = QUEUED
            self._register(gen, poll_now=True)
        else:
            self._pool.submit(self._enqueue, gen)
        return gen

    def load(self, path: Any) -> Generation:
        """A finished handle for an image saved earlier, from the recipe embedded in its file."""
        from pathlib import Path

        from ..files._metadata import read_recipe
        from ._lineage import FIELD, parse

        path = Path(path)
        found = read_recipe(path)
        gen = Generation(Recipe.from_dict(found["recipe"]), self, lineage=parse(found.get(FIELD)))
        gen.id = found.get("generation_id") or None
        gen.engine = found.get("engine") or None
        gen.path = path
        self._track(gen).claimed = True
        stat = path.stat()
        saved_at, gen.data_length = stat.st_mtime, stat.st_size
        gen.created = _parse_utc(found.get("created")) or saved_at
        gen._finish(SUCCEEDED)
        gen.finished = max(saved_at, gen.created)
        return gen

    def cancel(self, gen: Generation) -> None:
        self._tracks[gen.key].cancel_requested = True
        if gen.id is not None:
            self._pool.submit(self._send_cancel, gen)

    def pending(self) -> list[Generation]:
        with self._lock:
            return [t.gen for t in self._pending.values()]

    def stream_note(self) -> str | None:
        """One line while results are being polled because the event stream is silent or down;
        None while it delivers (or nothing is running)."""
        since = self._silent_since
        if not self._pending or since is None:
            return None
        silent = time.monotonic() - since
        if silent < self.silence_allowed:
            return None  # the first keep-alive may still be on its way
        if not (self._sse_up or self._answered_silently):
            return (
                f"results are polled every few seconds: the event stream has been down for"
                f" {silent:.0f} s, reconnecting"
            )
        return (
            f"results are polled every few seconds: the event stream has delivered nothing for"
            f" {silent:.0f} s (more than its {self.silence_allowed:g} s keep-alive allowance);"
            " most likely a proxy buffers /api/events (text/event-stream)"
        )

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
            for name, target in (
                ("flux-nb-events", self._listen),
                ("flux-nb-poller", self._poll_loop),
            ):
                thread = threading.Thread(target=target, name=name, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _track(self, gen: Generation) -> _Tracked:
        track = _Tracked(gen)
        with self._lock:
            self._tracks[gen.key] = track
        return track

    def _progress(
        self, gen: Generation, status: Status | None = None, progress: tuple[int, int] | None = None
    ) -> None:
        """Pass on an active status or a step, unless the generation is being finished already."""
        if not (self._tracks[gen.key].claimed and status in ACTIVE):
            gen._update(status=status, progress=progress)

    def _enqueue(self, gen: Generation) -> None:
        if self._tracks[gen.key].cancel_requested:
            self._terminal(
                gen, CANCELLED, errors.GenerationCancelled("cancelled before it was sent")
            )
            return
        check = self._tracks[gen.key].check
        try:
            if self.before_send is not None:
                self.before_send(gen)
            if check is not None:
                check()
        except errors.FluxError as exc:
            self._terminal(gen, FAILED, exc)
            return
        with self._sending(gen.recipe):
            rows = self._send(gen)
            if rows is None:
                return
            gen.id = str(rows[0]["generation_id"])
        self.journal.enqueued(gen.key, gen.id)
        # "queued" today; older docs showed "processing" here: both are taken as they come.
        answered = normalize(rows[0].get("status"))
        self._progress(gen, status=answered if answered in ACTIVE else QUEUED)
        self._register(gen)
        if self._tracks[gen.key].cancel_requested:
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
        self._tracks[gen.key].sent_at = time.monotonic()
        try:  # input images named by hash go as the data: URIs they were made from
            sent = self.output.inputs.resolve(gen.recipe)
        except errors.FluxError as exc:
            self._terminal(gen, FAILED, exc)
            return None
        for _ in range(max(1, self.client.retry.attempts)):
            try:
                self._count("enqueues")
                return self.client.enqueue(sent)
            except AmbiguousSend as exc:
                log.debug("%s; looking for it in the queue", exc)
                found = self._find_sent(gen, sent_at)
            except errors.FluxError as exc:
                self._terminal(gen, FAILED, exc)
                return None
            if found is None or found:
                return found  # ended, or the row the server made of it
        self._terminal(
            gen,
            FAILED,
            errors.NetworkError(
                f"Enqueueing broke off {self.client.retry.attempts} times and the server holds no"
                f" such generation."
            ),
        )
        return None

    def _find_sent(self, gen: Generation, sent_at: float) -> list[dict[str, Any]] | None:
        """After an ambiguous send: the row the server made of it, [] when it holds none (send
        again); None once the generation is ended because the queue could not be read."""
        try:
            candidates = self.client.find_enqueued(gen.recipe, sent_at)
        except errors.FluxError as check:
            self._terminal(
                gen,
                FAILED,
                errors.NetworkError(
                    "The connection broke while enqueueing and the queue could not be read to see"
                    f" whether the server took it ({check.message})",
                    hint="Run flux_nb.resume() later:"
                    " it finds the generation if the server has it.",
                ),
                journal=False,
            )
            return None
        known = {g.id for g in list(self.history) if g.id}
        found = [r for r in candidates if str(r["generation_id"]) not in known]
        return found[-1:]  # the oldest row of this recipe that no handle has: ours

    def _register(self, gen: Generation, poll_now: bool = False) -> None:
        track = self._tracks[gen.key]
        with self._wake:
            self._pending[_sent_id(gen)] = track
            early = self._unmatched.pop(_sent_id(gen), None)
            track.polls = 0
            # A stream that opened after the enqueue was sent may have subscribed after its
            # completion event went out, and the poll every (re)connect makes came before this
            # registration: one read now, not a safety poll's 10 s later.
            opened = self._opened_at
            poll_now = poll_now or (opened is not None and opened >= track.sent_at)
            track.next_poll = time.monotonic() if poll_now else self._poll_due(track)
            self._wake.notify_all()
        if early is not None:
            self._on_event(early[1])

    def _trusted(self, now: float) -> bool:
        """The stream is open and has delivered something within the allowed silence."""
        heard = self._heard_at
        return self._sse_up and heard is not None and now - heard < self.silence_allowed

    def _poll_due(self, track: _Tracked) -> float:
        now = time.monotonic()
        if self._trusted(now):
            interval = min(SAFETY_POLL_MAX, SAFETY_POLL_FIRST * 2**track.polls)
        elif self._sse_up:  # open but silent: maybe held back by a proxy
            interval = min(SILENT_POLL_MAX, SILENT_POLL_FIRST * SILENT_POLL_GROWTH**track.polls)
        else:
            interval = min(FALLBACK_POLL_MAX, FALLBACK_POLL_FIRST * 2**track.polls)
        return now + interval

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                now = time.monotonic()
                trusted = self._trusted(now)
                if not trusted and self._silent_since is None and self._heard_at is not None:
                    # silent past the keep-alive allowance: events may be lost, read every row
                    self._distrust(self._heard_at, now)
                due = [t for t in self._pending.values() if t.next_poll <= now and not t.claimed]
                for t in due:
                    t.polls += 1
                    t.next_poll = self._poll_due(t)
                if not due:
                    # claimed ones are being collected: their poll time is stale, and counting
                    # it would make this loop spin while their downloads run
                    waiting = (t.next_poll for t in self._pending.values() if not t.claimed)
                    upcoming = min(waiting, default=now + 60)
                    if trusted and self._pending and self._heard_at is not None:
                        upcoming = min(upcoming, self._heard_at + self.silence_allowed)
                    self._wake.wait(max(0.01, min(60.0, upcoming - now)))
                    continue
            for t in due:
                self._pool.submit(self._poll_one, t.gen)

    def _poll_one(self, gen: Generation) -> None:
        if self._tracks[gen.key].claimed or gen.id is None:
            return
        try:
            self._count("polls")
            row = self.client.get_generation(gen.id)
        except errors.NotFoundError as exc:
            self._terminal(gen, FAILED, exc)
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
                    self._last_event_id,
                    read_timeout=self.sse_read_timeout,
                    on_open=self._stream_opened,
                    on_heard=self._stream_heard,
                ):
                    backoff = 0.5
                    if event.id:
                        self._last_event_id = event.id
                    self._count("events")
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
            if self._tracks[gen.key].claim():
                self._terminal(gen, FAILED, errors.AuthError(exc.message), journal=False)

    def _stream_opened(self) -> None:
        """After every (re)connect, check each pending generation once: events may have been
        missed. The new stream is not trusted until it delivers something."""
        self._count("sse_connects")
        with self._wake:
            self._sse_up = True
            self._heard_at = None
            now = time.monotonic()
            self._opened_at = now
            if self._silent_since is None or not self._answered_silently:
                self._silent_since = now  # the note counts the silence of open streams only
            self._answered_silently = True
            for t in self._pending.values():
                t.next_poll = now
            self._wake.notify_all()

    def _distrust(self, since: float, poll_at: float) -> None:
        """(Under the lock.) The stream stopped delivering: every pending generation is polled
        from poll_at on, with a fresh backoff."""
        self._silent_since = since
        self._answered_silently = self._sse_up
        for t in self._pending.values():
            t.polls = 0
            t.next_poll = min(t.next_poll, poll_at)
        self._wake.notify_all()

    def _stream_heard(self) -> None:
        """Bytes arrived (an event, a keep-alive): the stream is trusted again. Polls set short
        while it was silent go back to the safety schedule, except those due now (the check after
        a reconnect)."""
        now = time.monotonic()
        if self._trusted(now):
            self._heard_at = now  # the common case, once per chunk: no lock
            return
        with self._wake:
            self._heard_at = now
            self._silent_since = None
            for t in self._pending.values():
                if t.next_poll > now:
                    t.next_poll = max(t.next_poll, self._poll_due(t))
            self._wake.notify_all()

    def _stream_closed(self) -> None:
        with self._wake:
            if not self._sse_up:
                return
            now = time.monotonic()
            self._sse_up = False
            self._heard_at = None
            if self._silent_since is None:  # it was delivering: polling takes over now
                self._distrust(now, now + FALLBACK_POLL_FIRST)
            # else polling runs already, on the silent schedule: it keeps its backoff

    def _on_event(self, event: Event) -> None:
        """Only media_generation_completed moves a generation on; the local server's optional
        progress event only feeds the progress bar; every other event type is ignored."""
        if event.name not in (COMPLETED_EVENT, PROGRESS_EVENT):
            return
        gid = event.generation_id
        if not gid:
            return
        with self._lock:
            track = self._pending.get(gid)
            if track is None:
                if event.name == COMPLETED_EVENT:  # it may come before the enqueue answer
                    now = time.monotonic()
                    self._unmatched[gid] = (now, event)
                    if len(self._unmatched) > 1000:
                        self._unmatched = {
                            k: v
                            for k, v in self._unmatched.items()
                            if now - v[0] < UNMATCHED_EVENT_TTL
                        }
                return
        if event.name == PROGRESS_EVENT:
            step, total = event.data.get("step"), event.data.get("total")
            if isinstance(step, int) and isinstance(total, int):
                self._progress(track.gen, status=PROCESSING, progress=(step, total))
            return
        self._apply(track.gen, event.data)

    def _apply(self, gen: Generation, row: dict[str, Any]) -> None:
        """Move a generation on from a poll answer or an event payload."""
        status = normalize(row.get("status"))
        track = self._tracks[gen.key]
        if status == SUCCEEDED:
            url = result_url(row)
            if url is None:
                self._pool.submit(self._poll_one, gen)  # the event had no URL: read the row
                return
            if track.claim():
                gen.result_url = url
                self._pool.submit(self._collect, gen)
        elif status in ENDED_BADLY:
            if track.claim():
                if status == CANCELLED:
                    default = (
                        "cancelled by request"
                        if track.cancel_requested
                        else "cancelled on the server (elsewhere)"
                    )
                else:
                    default = "the server gives no reason"
                message = row.get("error_message") or row.get("error") or default
                message = self.client.redact(" ".join(str(message).split())[:300])
                if status == CANCELLED:
                    error: errors.FluxError = errors.GenerationCancelled(message)
                elif mentions_credits(message):
                    error = errors.GenerationFailed(message, hint=errors.CreditsError.hint)
                else:
                    error = errors.GenerationFailed(message)
                self._terminal(gen, status, error)
        elif status in ACTIVE:
            self._progress(gen, status=status)

    def _collect(self, gen: Generation) -> None:
        """Download, check, embed the recipe and save; the handle keeps the bytes only when
        the save failed (a storage error)."""
        try:
            self._count("downloads")
            data = self.client.download(_result_url(gen))
            _check_image(data)
        except errors.FluxError as exc:
            track = self._tracks[gen.key]
            track.download_failures += 1
            if track.download_failures < 3:
                with self._wake:
                    track.claimed = False
                    track.next_poll = time.monotonic() + self.client.retry.delay(
                        track.download_failures + 2
                    )
                    self._wake.notify_all()
                return
            self._terminal(
                gen,
                FAILED,
                errors.NetworkError(
                    f"The image was made but could not be downloaded ({exc.message}).",
                    hint="Run flux_nb.resume() to try again.",
                ),
                journal=False,
            )
            return
        _make_previews(gen, data)
        gen.data_length = len(data)
        try:
            self.save(gen, data)
        except errors.StorageError as exc:
            gen.save_error, gen._unsaved = exc, data  # no file holds them: kept until save()
        self._terminal(gen, SUCCEEDED, None, journal=False)

    def save(self, gen: Generation, data: bytes, folder: OutputFolder | None = None) -> Path:
        """Write a result's file (its recipe and file_extra embedded) into the output folder, or
        `folder`; into ours, the handle reads from that file from then on and the journal notes
        it saved. Raises StorageError."""
        target = self.output if folder is None else folder
        path = target.save(data, gen.recipe, gen.id or gen.key, self.file_extra(gen))
        if folder is None:
            gen.path, gen.save_error, gen._unsaved = path, None, None
            gen._embedded = True  # with the recipe, id and time: saved_bytes takes them out
            gen.data_length = _stripped_length(path)
            self.journal.saved(gen.key, gen.id, path)
        return path

    def _send_cancel(self, gen: Generation) -> None:
        """DELETE the generation (once), then read its row until it says so: no event follows a
        cancel. A row that finished first stays finished (and is collected as usual)."""
        track = self._tracks[gen.key]
        with track.lock:
            if track.cancel_sent:
                return
            track.cancel_sent = True
        try:
            self.client.cancel(_sent_id(gen))
        except errors.FluxError as exc:
            track.cancel_sent = False  # cancel() may try again
            gen.error = exc  # shown on the card; the generation runs on
            gen._changed()
            return
        for delay in CANCEL_CHECKS:
            if track.claimed or self._stopping.wait(delay):
                return
            self._poll_one(gen)

    def _terminal(
        self, gen: Generation, status: Status, error: errors.FluxError | None, journal: bool = True
    ) -> None:
        self._tracks[gen.key].claimed = True
        with self._wake:
            if gen.id is not None:
                self._pending.pop(gen.id, None)
        if journal:
            self.journal.ended(gen.key, gen.id, status, error.message if error else "")
        gen._finish(status, error)


def _lineage_text(record: dict[str, Any]) -> str:
    from ._lineage import dumps

    return dumps(record)


def _parse_utc(text: Any) -> float | None:
    import calendar

    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def _make_previews(gen: Generation, data: bytes) -> None:
    """Decode the downloaded image once, make the thumbnails its views asked for and hand them
    over, before the file is saved: the picture shows while the save's fsyncs run, and the
    views never decode. Saving first, or beside it on another thread, cost the preview 5-10 ms
    (the decode is the long part, and only the CPU it gets makes it shorter). An image Pillow
    checks but cannot decode makes none: the card then tries itself and says why it cannot."""
    from ..files._thumbnail import thumbnails

    try:
        made = thumbnails(data, tuple(gen.thumbnail_sides))
    except Exception:
        log.debug("no thumbnails made for %s", gen.id, exc_info=True)
        return
    gen._keep_thumbnails(made)


def _stripped_length(path: Any) -> int | None:
    """len(saved_bytes()) of a file just saved (still in the page cache: well under a ms), so a
    session can tell which of its results an input image is without reading every file."""
    from ..files._metadata import strip_recipe

    try:
        return len(strip_recipe(path.read_bytes()))
    except (OSError, errors.FluxError):
        return None


def _sent_id(gen: Generation) -> str:
    """The generation id of a handle the server has taken: set before it is tracked, polled,
    downloaded or cancelled by id."""
    if gen.id is None:
        raise RuntimeError(f"{gen!r} has no generation id yet")
    return gen.id


def _result_url(gen: Generation) -> str:
    """Where a succeeded generation's image is: set before it is collected."""
    if gen.result_url is None:
        raise RuntimeError(f"{gen!r} has no result URL yet")
    return gen.result_url


def io_threads(backend: str) -> int:
    """Threads for enqueues, polls and downloads. A remote API keeps them waiting on the network,
    where eight overlap well; the embedded server answers from this process, so every request is
    interpreter work on both sides, and more than two threads only take turns with the kernel's
    own: with -n 256 in flight, eight made a trivial cell wait 150-300 ms now and then, two never
    over 60 ms, and the 256 finished as soon (benchmarks/run.py, generations in flight)."""
    return 2 if backend == "local" else 8


def _check_image(data: bytes) -> None:
    """Refuse bytes that are not a whole image, so a corrupt file never reaches the folder."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as exc:
        raise errors.NetworkError(
            f"the downloaded file is not a readable image ({type(exc).__name__})"
        ) from None
