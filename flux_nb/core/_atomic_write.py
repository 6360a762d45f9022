"""Files written whole or not at all: a temporary `.partial-<pid>-*` file beside the target,
fsynced, then renamed into place. A crash leaves only a partial file, which
OutputFolder.sweep_partials removes once its process is gone."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

PARTIAL = ".partial-"  # + "<pid>-": a file being written; renamed into place when complete


def write_atomically(
    target: Path, data: bytes, before_rename: Callable[[], object] | None = None
) -> None:
    """Write `data` to `target` atomically; `before_rename` runs once the bytes are on disk and
    before they show (storage writes a recipe sidecar there). OSError when it cannot be done;
    nothing partial is left behind by this process then."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{PARTIAL}{os.getpid()}-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
