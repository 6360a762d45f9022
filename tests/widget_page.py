"""A fake front end on a real ipykernel kernel, for tests of what a page draws from widget
messages: it applies a kernel message only while the execute request it answers is running
(Colab's rule, shared/colab-notes.md), and keeps beside what it drew every model as sent."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.manager import KernelManager

from flux_nb.notebook import _card_html as card_html


def _merge(state: dict[str, Any], content: dict[str, Any], buffers: list[bytes]) -> None:
    """A widget message's state into a model, its binary buffers put back at their paths."""
    data = content.get("data", {})
    new = dict(data.get("state", {}))
    for path, buf in zip(data.get("buffer_paths", []), buffers, strict=False):
        target = new
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = bytes(buf)
    state.update(new)


class ColabPage:
    """A front end under Colab's rule. `models` is what the page draws, `truth` what was sent."""

    def __init__(self, kc) -> None:
        self.kc = kc
        self.running: set[str] = set()  # execute requests sent whose idle status has not come
        self.models: dict[str, dict[str, Any]] = {}
        self.truth: dict[str, dict[str, Any]] = {}
        self.closed: set[str] = set()  # models the kernel closed (a finished card's bar)
        self.shown = self.dropped = 0
        self.widget_messages: dict[str, int] = {}  # execute request id -> widget messages in it
        self.displays: list[dict[str, Any]] = []

    def run(self, code: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Run a cell; its own messages (outputs and errors), once the kernel is idle again."""
        msg_id = self.kc.execute(code)
        self.running.add(msg_id)
        mine: list[dict[str, Any]] = []
        self.pump(lambda m: m["parent_header"].get("msg_id") == msg_id and _idle(m), timeout, mine)
        errors = [m for m in mine if m["msg_type"] == "error"]
        assert not errors, "\n".join(errors[0]["content"]["traceback"])
        return mine

    def pump(self, until, timeout: float, mine: list | None = None) -> None:
        """Read iopub, applying messages as the page would, until until(msg) is true."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(f"the kernel did not get there in {timeout} s") from None
            self._receive(msg)
            if mine is not None and msg["parent_header"].get("msg_id") in self.running:
                mine.append(msg)
            if until(msg):
                return

    def _receive(self, msg: dict[str, Any]) -> None:
        parent = msg["parent_header"].get("msg_id")
        kind = msg["msg_type"]
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            self.running.discard(parent)
            return
        if kind == "comm_close":
            self.closed.add(msg["content"]["comm_id"])
            return
        if kind not in ("comm_open", "comm_msg", "update_display_data"):
            return
        shown = parent in self.running
        if kind == "update_display_data":
            self.displays.append({"shown": shown, **msg["content"]})
            return
        comm = msg["content"]["comm_id"]
        _merge(self.truth.setdefault(comm, {}), msg["content"], msg["buffers"])
        if shown:
            self.shown += 1
            self.widget_messages[parent] = self.widget_messages.get(parent, 0) + 1
            _merge(self.models.setdefault(comm, {}), msg["content"], msg["buffers"])
        else:
            self.dropped += 1

    def card(self, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The one card's picture, status and children as `models` hold them."""
        (card,) = [m for m in models.values() if "flux-nb-card" in m.get("_dom_classes", ())]
        kids = [models.get(ref.removeprefix("IPY_MODEL_"), {}) for ref in card["children"]]
        images = [k for k in kids if k.get("_model_name") == "ImageModel"]
        lines = [k for k in kids if "flux-nb-lines" in k.get("_dom_classes", ())]
        return {
            "picture": bytes(images[0]["value"]) if images else None,
            "status": card_html.split_lines(lines[0]["value"])[0] if lines else None,
            "bars": sum(k.get("_model_name") == "FloatProgressModel" for k in kids),
        }


def _idle(msg: dict[str, Any]) -> bool:
    return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"


@contextlib.contextmanager
def started_page(workdir: Path) -> Iterator[ColabPage]:
    """A fresh kernel (the offline server, steps slow enough to outlast a cell) and its page."""
    env = {k: v for k, v in os.environ.items() if k not in ("OXEN_API_KEY", "FLUX_NB_BASE_URL")}
    env.update(FLUX_NB_OUTPUT_DIR=str(workdir / "out"), FLUX_NB_STEP_DELAY="0.05")
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(workdir), extra_arguments=["--IPKernelApp.log_level=ERROR"])
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        yield ColabPage(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
