"""Saved notebooks show the results: a cell's static output follows its generations to the end.

A %%flux cell shows a live card (a widget view) and, beside it in the same output, text/plain and
image/png for every place without widget state: GitHub, nbviewer, VS Code, the stored tutorials.
When the cell runs those say "running"; once every generation of the output has ended, the output
is replaced in place by an update_display_data carrying the final caption, the thumbnail (a
contact sheet for several images) and the same widget view, so the live card keeps working.

The update is sent twice, because frontends read it differently:
- at once, from the runner thread that finished the last image: JupyterLab routes a display
  update by its display_id to the cell that showed it, whenever it comes, and saves the result;
- again from the main thread after the next cell that runs (IPython's post_run_cell, once the
  runner thread has made it; `%flux wait` calls flush() itself, which waits for it): nbclient
  (nbconvert --execute, nbval, tests/notebook_runner.py) reads only the messages of the cell it
  is running, but applies an update to every earlier output with that display_id. An update sent
  while no cell runs never reaches it.

    show(view, gens, final)   display view with a display_id; final() -> the settled bundle
    flush(wait=True)          send the updates of outputs that settled since
                              (main thread, in a cell)
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..core._config import kernel_shell

log = logging.getLogger("flux_nb.settled_output")


class _Output:
    """One displayed output and the generations whose end settles it."""

    def __init__(self, display_id: str, gens: Sequence[Any], final: Callable[[], dict[str, Any]]):
        self.display_id = display_id
        self.gens = list(gens)
        self._final: Callable[[], dict[str, Any]] | None = final
        self._bundle: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.sent_live = False

    @property
    def done(self) -> bool:
        return all(g.done for g in self.gens)

    @property
    def made(self) -> bool:
        """The settled bundle exists (made by the runner thread that finished the last image)."""
        return self._bundle is not None

    def bundle(self) -> dict[str, Any] | None:
        """The settled bundle, made once (whichever thread comes first); None while running."""
        with self._lock:
            if self._bundle is None and self.done and self._final is not None:
                self._bundle = self._final()
            return self._bundle

    def release(self) -> None:
        """Sent from a cell, never asked for again: the handles' callbacks keep this object
        for the kernel's life, and need not keep its thumbnail (in base64) too."""
        with self._lock:
            self._bundle = self._final = None


_pending: list[_Output] = []  # shown, not yet sent from inside a cell
_lock = threading.Lock()


def show(view: Any, gens: Sequence[Any], final: Callable[[], dict[str, Any]]) -> None:
    """display(view) as an output that is updated to final() once every one of gens has ended.
    Outside a kernel (terminal IPython, scripts) it is a plain display: nothing would keep it."""
    from IPython.display import display

    shell = kernel_shell()
    if shell is None or not gens:
        display(view)
        return
    output = _Output(uuid.uuid4().hex, gens, final)
    with _lock:
        _pending.append(output)
    _hook(shell)
    display(view, display_id=output.display_id)
    for gen in output.gens:
        gen.on_change(lambda g, o=output: _settled(o) if g.done else None)


def flush(*, wait: bool = True) -> int:
    """Send the final bundle of every output whose generations have all ended, from this thread
    (the main one, inside a cell: nbclient takes it). Cheap when nothing settled. Returns how many.

    wait=False (after every cell) sends only bundles made already: making one (a contact sheet of
    an -n 256 cell) is the runner thread's work, and waiting for it would hold up whatever trivial
    cell happened to end meanwhile; the next cell, or `%flux wait`, sends it."""
    with _lock:
        if not _pending:
            return 0
        ready = [o for o in _pending if (o.done if wait else o.made)]
        if not ready:
            return 0
        _pending[:] = [o for o in _pending if o not in ready]
    sent = 0
    for output in ready:
        bundle = _safe_bundle(output)
        if bundle is not None:
            _publish(output.display_id, bundle)
            sent += 1
        output.release()
    return sent


def _settled(output: _Output) -> None:
    """Runner thread, after a generation ended: when it was the output's last, send the update
    now for JupyterLab (once; flush() sends it again inside a cell)."""
    if not output.done:
        return
    with _lock:
        if output.sent_live or output not in _pending:
            return  # sent already (and maybe released): a later change of a handle, say
    bundle = _safe_bundle(output)
    with _lock:
        if bundle is None or output.sent_live or output not in _pending:
            return  # already sent from a cell, which JupyterLab received too
        output.sent_live = True
    _publish(output.display_id, bundle)


def _safe_bundle(output: _Output) -> dict[str, Any] | None:
    try:
        return output.bundle()
    except Exception:  # an unreadable result keeps the "running" text; the card says why
        log.exception("could not make the final output of display %s", output.display_id)
        return None


def _publish(display_id: str, bundle: dict[str, Any]) -> None:
    from IPython.display import update_display

    update_display(bundle, raw=True, display_id=display_id)


def _after_cell(_result: Any = None) -> int:
    """post_run_cell: send the bundles that are ready, never wait for one being made."""
    return flush(wait=False)


def _hook(shell) -> None:
    """_after_cell() after every cell of this kernel (registered once)."""
    callbacks = shell.events.callbacks["post_run_cell"]
    if _after_cell not in callbacks:
        shell.events.register("post_run_cell", _after_cell)


__all__ = ["flush", "show"]
