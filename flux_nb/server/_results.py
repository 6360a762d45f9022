"""Result images by file name: in memory, the oldest spilled to a temporary folder past a budget.

Memory first because writing a small file costs 0.25-0.6 ms on a plain disk, a third of the
server's whole cost per generation; the budget keeps a long session from growing without bound
(past it, the oldest half is written out by the worker thread that crossed it). The embedded
server also spills each result once it has been downloaded whole (`served`, after the response):
its one client keeps what it downloads, so memory holds only what is not fetched yet.
Files go when the server is closed or the process exits; clients download and keep what they want.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("flux_nb.server")

MEMORY_BUDGET = 256 * 1024 * 1024  # flux-nb serve: clients may fetch a result late, or twice
EMBEDDED_BUDGET = 64 * 1024 * 1024  # in a kernel: results wait only for the download


class ResultFiles:
    """Thread-safe: worker threads put, the event loop gets."""

    def __init__(self, memory_budget: int = MEMORY_BUDGET) -> None:
        self._budget = memory_budget
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, bytes] = OrderedDict()  # oldest first
        self._memory_bytes = 0
        self._spilling: dict[str, bytes] = {}
        self._on_disk: set[str] = set()
        self._dir: Path | None = None
        self._cleanup: weakref.finalize | None = None

    def put(self, name: str, data: bytes) -> None:
        """Keep a result; past the budget, this thread moves the oldest ones to disk."""
        with self._lock:
            self._memory[name] = data
            self._memory_bytes += len(data)
            if self._memory_bytes <= self._budget:
                return
            victims: list[tuple[str, bytes]] = []
            while self._memory_bytes > self._budget // 2 and len(self._memory) > 1:
                victims.append(self._take(next(iter(self._memory))))
        self._spill(victims)

    def served(self, name: str) -> None:
        """The client has downloaded it whole: move it from memory to the spill folder."""
        with self._lock:
            if name not in self._memory:
                return
            victims = [self._take(name)]
        self._spill(victims)

    def _take(self, name: str) -> tuple[str, bytes]:
        """Out of memory into the spilling set (still served from there meanwhile); locked."""
        data = self._memory.pop(name)
        self._memory_bytes -= len(data)
        self._spilling[name] = data
        return name, data

    def _spill(self, victims: list[tuple[str, bytes]]) -> None:
        if not victims:
            return
        with self._lock:
            folder = self._folder()
        written = []
        for old_name, old_data in victims:  # outside the lock: readers never wait on the disk
            try:
                (folder / old_name).write_bytes(old_data)
                written.append(old_name)
            except OSError as exc:  # disk full, say: keep it in memory, over budget
                log.warning("could not spill result %s to %s: %s", old_name, folder, exc)
        with self._lock:
            for old_name, old_data in victims:
                del self._spilling[old_name]
                if old_name not in written:
                    self._memory[old_name] = old_data
                    self._memory_bytes += len(old_data)
            self._on_disk.update(written)

    @property
    def memory_bytes(self) -> int:
        """Bytes of results held in memory now (kept under the budget by put)."""
        with self._lock:
            return self._memory_bytes

    def get(self, name: str) -> bytes | Path | None:
        """The bytes, or the path of the spilled file, or None."""
        with self._lock:
            data = self._memory.get(name)
            if data is None:
                data = self._spilling.get(name)
            if data is not None:
                return data
            if name in self._on_disk and self._dir is not None:
                return self._dir / name
            return None

    def read(self, name: str) -> bytes | None:
        """The bytes, read back from the spill folder if they went there; None when unknown."""
        found = self.get(name)
        return found.read_bytes() if isinstance(found, Path) else found

    def discard(self, name: str) -> None:
        with self._lock:
            data = self._memory.pop(name, None)
            if data is not None:
                self._memory_bytes -= len(data)
            elif name in self._on_disk and self._dir is not None:
                self._on_disk.discard(name)
                (self._dir / name).unlink(missing_ok=True)

    def close(self) -> None:
        """Forget everything and delete the spill folder."""
        with self._lock:
            self._memory.clear()
            self._memory_bytes = 0
            self._on_disk.clear()
            if self._cleanup is not None:
                self._cleanup()

    def _folder(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="flux-nb-results-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        return self._dir
