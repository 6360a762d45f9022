"""An append-only journal of every generation sent,
so a restarted kernel can collect what was paid for.

One JSON object a line: `submit` (before the enqueue call, with the recipe, the server it goes to
and the writer's id), `enqueued` (with the generation id), `resumed` (a later kernel collects it),
then one terminal line (`saved`, `failed`, `cancelled`). Each has its own method here (submitted,
enqueued, resumed, saved, ended), so every writer spells a record the same way; `record` appends
raw entries (journals written by older versions are read the same). Never holds the API key.

Several kernels may share one output folder (two notebooks in one directory). Each journal
writer holds an exclusive lock on a file of its own under `.flux_nb_live/` for as long as its
process lives; the operating system drops the lock when the process dies, however it dies. So
resume() can tell work whose kernel is gone (lock free) from live work of another kernel (lock
held), and takes only the former.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: fall back on "is that process id still running"
    fcntl = None  # type: ignore[assignment]

from ..core import _processes as processes
from ..core._status import CANCELLED, FAILED, Status

# The runner journals an ended generation under its status's name; a saved one as "saved".
TERMINAL_OPS = frozenset({"saved", FAILED, CANCELLED})
LIVE_DIR = ".flux_nb_live"


@dataclasses.dataclass(frozen=True)
class Sent:
    """One generation about to be sent, as its `submit` record keeps it."""

    key: str
    recipe: dict[str, Any]  # Recipe.to_dict(): what a restarted kernel sends again
    lineage: dict[str, Any] | None = None  # how its input images were made (jobs/_lineage.py)


class Journal:
    """Appends records durably (flush + fsync per batch); reading tolerates a torn last line."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.writer = uuid.uuid4().hex  # this journal object's id in the entries it writes
        self._lock = threading.Lock()
        self._live: IO[bytes] | None = None
        self.broken: str | None = None  # set when the folder cannot be written

    # -- who is alive -----------------------------------------------------------------------------

    def _live_path(self, writer: str) -> Path:
        return self.path.parent / LIVE_DIR / f"{writer}.lock"

    def _hold_live_lock(self) -> None:
        """Take this writer's lock (once, before its first entry); held until close()."""
        if self._live is not None:
            return
        path = self._live_path(self.writer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{os.getpid()}\n".encode())
        # Held open read-only: an open file for writing would keep the folder's file system from
        # being remounted read-only, and flock works on either.
        fh = open(path, "rb")
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._live = fh

    def is_alive(self, writer: str | None, pid: int | None = None) -> bool:
        """True while the journal writer `writer` (another kernel, or this one) still runs."""
        if not writer:
            return False  # entries from before writers were recorded: their kernels are gone
        if writer == self.writer:
            return True
        path = self._live_path(writer)
        if fcntl is None:
            return pid is not None and processes.alive(pid)
        try:
            fh = open(path, "rb")
        except OSError:
            return False
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True  # someone holds it: that kernel is running
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        """Release this writer's lock (the session is done): its unfinished work is resumable."""
        with self._lock:
            if self._live is not None:
                path = Path(self._live.name)
                self._live.close()
                self._live = None
                try:
                    path.unlink()
                except OSError:
                    pass

    # -- the records, one method each -------------------------------------------------------------

    def submitted(self, sent: Iterable[Sent], *, backend: str, server: str) -> None:
        """Before their enqueue: each generation's key, recipe (and lineage), the backend and
        server they go to; one write for all. Check .broken after: nothing may be sent then."""
        self.record(
            *(
                {
                    "op": "submit",
                    "key": s.key,
                    "backend": backend,
                    "server": server,
                    "recipe": s.recipe,
                    **({"lineage": s.lineage} if s.lineage else {}),
                }
                for s in sent
            )
        )

    def enqueued(self, key: str, generation_id: str) -> None:
        """The server took it, under this id."""
        self.record({"op": "enqueued", "key": key, "id": generation_id})

    def resumed(self, key: str, generation_id: str | None) -> None:
        """This kernel collects it now (by id; None: it is sent again)."""
        self.record({"op": "resumed", "key": key, "id": generation_id})

    def saved(self, key: str, generation_id: str | None, path: Path | str) -> None:
        """Its image is in this file: nothing is left to collect."""
        self.record({"op": "saved", "key": key, "id": generation_id, "path": str(path)})

    def ended(self, key: str, generation_id: str | None, status: Status, reason: str = "") -> None:
        """It ended without an image (failed or cancelled), and why."""
        self.record({"op": status, "key": key, "id": generation_id, "reason": reason})

    def record(self, *entries: dict[str, Any]) -> None:
        """Append raw entries in one write (the methods above say which records there are); the
        caller carries on when the disk refuses (noted in .broken)."""
        if not entries:
            return
        now = time.time()
        stamp = {"t": now, "writer": self.writer, "pid": os.getpid()}
        lines = "".join(json.dumps({**stamp, **e}, separators=(",", ":")) + "\n" for e in entries)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._hold_live_lock()
                with open(self.path, "ab+") as fh:
                    # A write cut short (disk full, a crash) leaves a torn last line: start on a new
                    # line, or this record would be glued to it and lost with it.
                    if fh.seek(0, os.SEEK_END) > 0:
                        fh.seek(-1, os.SEEK_END)
                        if fh.read(1) != b"\n":
                            lines = "\n" + lines
                    fh.write(lines.encode("utf-8"))
                    fh.flush()
                    os.fsync(fh.fileno())
                self.broken = None
            except OSError as exc:
                self.broken = f"{type(exc).__name__}: {exc.strerror or exc}"

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text("utf-8")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a crash mid-write
        return out

    def pending(self) -> list[dict[str, Any]]:
        """Submissions with no terminal record yet, merged: key, recipe, id (if known), backend,
        server, writer and pid (of the submit)."""
        state: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            key = entry.get("key")
            if not key:
                continue
            op = entry.get("op")
            if op == "submit":
                state[key] = {k: v for k, v in entry.items() if k != "op"}
            elif op in ("enqueued", "resumed") and key in state:
                if entry.get("id"):
                    state[key]["id"] = entry.get("id")
                # whoever wrote last about it is collecting it now
                state[key]["writer"], state[key]["pid"] = entry.get("writer"), entry.get("pid")
            elif op in TERMINAL_OPS:
                state.pop(key, None)
        return list(state.values())
