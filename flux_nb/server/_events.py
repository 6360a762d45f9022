"""Per-user event fan-out between worker threads and SSE streams, with an opt-in replay buffer.

Publishers are worker threads (and sometimes the event loop); subscribers are SSE streams on the
server's event loop. Events cross over with loop.call_soon_threadsafe into an asyncio.Queue per
stream, so a worker never blocks on a slow client.

By default, as on the hosted stream, events go only to streams connected when they fire: no
buffer, no ids, no Last-Event-ID resumption (an event nobody hears is lost, and clients must read
the rows after every reconnect). replay=True (`flux-nb serve --replay-events`, local only) keeps
each user's events a while (KEEP_SECONDS, at most BUFFER_SIZE per user) and a new stream first gets
  (a) every buffered event after its Last-Event-ID header, when it sends one from this server, else
  (b) the events of the last RECENT_SECONDS.
Progress events are live only: they are never buffered, so a replay never shows stale progress.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

BUFFER_SIZE = 4096
KEEP_SECONDS = 120.0
RECENT_SECONDS = 60.0
# A stream further behind than this is ended; its client reconnects with Last-Event-ID and replays.
QUEUE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: a per-server increasing id, a name, and its JSON data."""

    id: int
    name: str
    data: dict[str, Any]
    at: float  # time.monotonic() when published


@dataclass(eq=False)
class Subscription:
    """One SSE stream's inbox. `None` in the queue means: end the stream."""

    owner: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    ended: bool = False

    def deliver(self, event: Event | None) -> None:
        """Runs on the subscriber's loop. Ends the stream instead of growing without bound."""
        if self.ended:
            return
        if event is None or self.queue.qsize() >= QUEUE_LIMIT:
            self.ended = True
            event = None
        self.queue.put_nowait(event)


class EventHub:
    """Thread-safe publish/subscribe keyed by owner (a hash of the bearer token)."""

    def __init__(self, *, replay: bool = False) -> None:
        self.replay = replay
        self._lock = threading.Lock()
        # Ids start from the clock so a client's Last-Event-ID from an earlier server run is lower
        # than anything this run sends: it then replays the whole buffer, which is what it missed.
        self._last_id = time.time_ns() // 1000
        self._buffers: dict[str, deque[Event]] = {}
        self._subs: dict[str, set[Subscription]] = {}
        self._closed = False

    def has_subscribers(self, owner: str) -> bool:
        return owner in self._subs  # a plain dict read: cheap enough to ask on every step

    def publish(self, owner: str, name: str, data: dict[str, Any], *, keep: bool = True) -> None:
        """Send an event to the owner's streams; keep=True also stores it when replay is on."""
        with self._lock:
            self._last_id += 1
            now = time.monotonic()
            event = Event(self._last_id, name, data, now)
            if keep and self.replay:
                buf = self._buffers.get(owner)
                if buf is None:
                    buf = self._buffers[owner] = deque(maxlen=BUFFER_SIZE)
                while buf and buf[0].at < now - KEEP_SECONDS:
                    buf.popleft()
                buf.append(event)
            for sub in self._subs.get(owner, ()):
                self._send(sub, event)

    def subscribe(
        self, owner: str, last_event_id: int | None = None
    ) -> tuple[Subscription, list[Event]]:
        """Register a stream on the running loop; return it with the events it missed, in order.

        Registering and reading the buffer happen under one lock, so no event falls between them.
        """
        sub = Subscription(owner, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                sub.deliver(None)
                return sub, []
            now = time.monotonic()
            buf = self._buffers.get(owner, ())
            if last_event_id is not None and last_event_id <= self._last_id:
                backlog = [e for e in buf if e.id > last_event_id and e.at >= now - KEEP_SECONDS]
            else:  # no header, or an id this server never sent
                backlog = [e for e in buf if e.at >= now - RECENT_SECONDS]
            self._subs.setdefault(owner, set()).add(sub)
        return sub, backlog

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a stream; safe to call twice."""
        with self._lock:
            subs = self._subs.get(sub.owner)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.owner]

    def close(self) -> None:
        """End every stream now (server shutdown) and refuse new ones."""
        with self._lock:
            self._closed = True
            subs = [s for group in self._subs.values() for s in group]
            self._subs.clear()
        for sub in subs:
            self._send(sub, None)

    @staticmethod
    def _send(sub: Subscription, event: Event | None) -> None:
        try:
            sub.loop.call_soon_threadsafe(sub.deliver, event)
        except RuntimeError:  # its loop is closed: the server is gone
            pass
