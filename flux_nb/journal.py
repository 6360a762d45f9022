"""An append-only journal of every generation sent, so a restarted kernel can collect what was paid for.

One JSON object a line: `submit` (before the enqueue call, with the recipe), `enqueued` (with the
generation id), then one terminal line (`saved`, `failed`, `cancelled`). Never holds the API key.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

TERMINAL_OPS = frozenset({"saved", "failed", "cancelled"})


class Journal:
    """Appends records durably (flush + fsync per batch); reading tolerates a torn last line."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.broken: str | None = None  # set when the folder cannot be written

    def record(self, *entries: dict[str, Any]) -> None:
        """Append entries in one write; the caller carries on when the disk refuses (noted in .broken)."""
        if not entries:
            return
        now = time.time()
        lines = "".join(json.dumps({"t": now, **e}, separators=(",", ":")) + "\n" for e in entries)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
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
        """Submissions with no terminal record yet, merged: key, recipe, id (if known), backend."""
        state: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            key = entry.get("key")
            if not key:
                continue
            op = entry.get("op")
            if op == "submit":
                state[key] = {k: v for k, v in entry.items() if k != "op"}
            elif op == "enqueued" and key in state:
                state[key]["id"] = entry.get("id")
            elif op in TERMINAL_OPS:
                state.pop(key, None)
        return list(state.values())
