"""Whose generation runs next: sync calls first, then round-robin turns across owners.

First-in first-out would hold one person's single image behind another's 256-image sweep. Here
each owner (one API key) has a lane, and the workers take one row from each lane with work in
turn; an owner with nothing waiting joins at the front of the turns. So a person's next
generation waits behind at most the W already running, and later ones behind at most one of
each other person's per turn. Sync calls (/api/ai/images/*) still go first: someone is
blocked on each.
"""

from __future__ import annotations

import threading
from collections import deque

from ._store import QUEUED, Row


class FairQueue:
    """Thread-safe. put() from the event loop, get() from worker threads (blocks)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._urgent: deque[Row] = deque()
        self._lanes: dict[str, deque[Row]] = {}
        self._turns: deque[str] = deque()  # owners with queued rows, next turn first
        self._stops = 0

    def put(self, row: Row, *, urgent: bool = False) -> None:
        with self._cond:
            if urgent:
                self._urgent.append(row)
            else:
                lane = self._lanes.get(row.owner)
                if lane is None:  # nothing of theirs waits: they go next
                    lane = self._lanes[row.owner] = deque()
                    self._turns.appendleft(row.owner)
                lane.append(row)
            self._cond.notify()

    def stop(self, count: int) -> None:
        """Make the next `count` get() calls return None (ahead of any rows)."""
        with self._cond:
            self._stops += count
            self._cond.notify_all()

    def get(self) -> Row | None:
        """The next row to run (a queued one), or None when told to stop."""
        with self._cond:
            while True:
                if self._stops:
                    self._stops -= 1
                    return None
                if self._urgent:
                    return self._urgent.popleft()
                while self._turns:
                    owner = self._turns.popleft()
                    lane = self._lanes[owner]
                    if not lane:  # all its rows were cancelled (queued() dropped them)
                        del self._lanes[owner]
                        continue
                    row = lane.popleft()
                    if lane:
                        self._turns.append(owner)
                    else:
                        del self._lanes[owner]
                    if row.status == QUEUED:  # else cancelled while it waited: skip it
                        return row
                self._cond.wait()

    def queued(self, owner: str) -> int:
        """How many of the owner's rows wait for a turn (cancelled ones no longer count)."""
        with self._cond:
            lane = self._lanes.get(owner)
            if not lane:
                return 0
            waiting = [r for r in lane if r.status == QUEUED]
            if len(waiting) < len(lane):
                lane.clear()
                lane.extend(waiting)
            return len(waiting)
