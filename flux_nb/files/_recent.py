"""The last few pictures read back, by key, within a byte budget: what lets a finished Generation
keep no image of its own (a session of thousands of images stays small) while the one just
shown, or asked for twice in a row, is not read and decoded again. The package's one
least-recently-used cache: the input store keeps its last few data: URIs in it too (size 1 each)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

IMAGES_BUDGET = 16 * 1024 * 1024  # decoded pictures: about five 1 MP RGB images
THUMBNAILS_BUDGET = 2 * 1024 * 1024  # a -n 64 grid's thumbnails, for its contact sheet


class Recent:
    """A thread-safe least-recently-used cache bounded by the sizes its callers give."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Keep value (the newest); older ones go while the total is over the budget. One
        larger than the whole budget is still kept, alone, until the next put."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= old[1]
            self._items[key] = (value, size)
            self._size += size
            while self._size > self.budget and len(self._items) > 1:
                _, (_, gone) = self._items.popitem(last=False)
                self._size -= gone

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._items)


images = Recent(IMAGES_BUDGET)
thumbnails = Recent(THUMBNAILS_BUDGET)
