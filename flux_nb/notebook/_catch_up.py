"""Cards that catch up where updates sent while no cell runs are not shown (Colab).

Colab's page applies a kernel message only while the execute request it answers is running
(colabtools #3373; shared/colab-notes.md): a card that a runner thread updates after its cell
ended stays as it was. Where that rule holds, each tracked widget notes the state keys it sent
while no cell ran, and every cell sends those keys again from inside itself (IPython's
pre_run_cell and post_run_cell), so one later cell of any kind brings every card to its present
state. What went out while a cell ran (`%flux wait`, or any other cell) was shown and is not sent
again. Elsewhere (JupyterLab, Notebook 7, VS Code: updates from threads are drawn as they come)
nothing is noted and nothing is sent twice.

    tracked(widget_class)   a subclass whose instances note what they sent while no cell ran
    needed()                whether this kernel's front end drops such updates (Colab's kernel
                            has google.colab loaded)
    hook(shell)             note and catch up from now on, where needed (registered once)
    catch_up() -> int       send the noted keys again now; how many widgets were sent
"""

from __future__ import annotations

import threading
import weakref
from functools import cache
from typing import Any

from ..core._config import in_colab

_lock = threading.Lock()
_missed: weakref.WeakKeyDictionary[Any, set[str] | None] = weakref.WeakKeyDictionary()
_state = {"active": False, "in_cell": False}


class _Tracked:
    """Mixed into a widget class: notes the keys of each state message sent while no cell ran.

    Read before and after the send: a cell that began or ended meanwhile counts as none, so a
    message at a cell's edge is sent again rather than lost."""

    def send_state(self, key: Any = None) -> None:
        idle = not _state["in_cell"]
        super().send_state(key)  # type: ignore[misc]
        if _state["active"] and (idle or not _state["in_cell"]):
            _note(self, key)


@cache
def tracked(widget_class: type) -> type:
    """widget_class with _Tracked mixed in (one subclass per class)."""
    return type(widget_class.__name__, (_Tracked, widget_class), {})


def _note(widget: Any, key: Any) -> None:
    keys = None if key is None else {key} if isinstance(key, str) else set(key)
    with _lock:
        if widget in _missed:
            known = _missed[widget]
            _missed[widget] = None if known is None or keys is None else known | keys
        else:
            _missed[widget] = keys


def needed() -> bool:
    """Colab's page drops widget messages sent while no cell runs (config.in_colab)."""
    return in_colab()


def catch_up() -> int:
    """Send again, from this thread, every noted key of every widget still open."""
    with _lock:
        missed = list(_missed.items())
        _missed.clear()
    sent = 0
    for widget, keys in missed:
        if getattr(widget, "comm", None) is None:
            continue  # closed since
        widget.send_state(None if keys is None else sorted(keys))
        sent += 1
    return sent


def _before_cell(*_: Any) -> None:
    _state["in_cell"] = True
    catch_up()


def _after_cell(*_: Any) -> None:
    catch_up()  # what was noted at the cell's start, while this cell was already running
    _state["in_cell"] = False


def hook(shell: Any) -> None:
    """Where needed, note and catch up from now on. Called while a card is made: inside a cell
    when the parent request is an execute request (a button click's comm message is not)."""
    if _state["active"] or shell is None or getattr(shell, "kernel", None) is None:
        return
    if not needed():
        return
    _state["in_cell"] = in_execute_request(shell.kernel)
    _state["active"] = True
    shell.events.register("pre_run_cell", _before_cell)
    shell.events.register("post_run_cell", _after_cell)


def in_execute_request(kernel: Any) -> bool:
    """Whether the kernel is answering an execute request (a cell), not idle or a comm message."""
    try:
        parent = kernel.get_parent("shell")
    except Exception:
        return False
    return (parent or {}).get("header", {}).get("msg_type") == "execute_request"


__all__ = ["catch_up", "hook", "in_execute_request", "needed", "tracked"]
