"""Image engines for the local server.

An engine turns a validated Recipe (plus decoded input images) into encoded image bytes:

    render(recipe, inputs, *, on_step=None, should_stop=None, step_delay=0.0) -> (bytes, content_type)

It calls on_step(i, total) after each step, sleeps step_delay seconds per step and raises
Cancelled when should_stop() turns true. The server makes one engine per worker thread, so
render need not be thread-safe.
"""

from __future__ import annotations

from typing import Any

# What the server says an engine is, in every generation object: never let a stand-in pass for FLUX.
ENGINE_LABELS = {"preview": "preview (offline stand-in, not FLUX)"}
ENGINE_NAMES = tuple(ENGINE_LABELS)


class Cancelled(Exception):
    """Raised by an engine when should_stop() turns true between steps."""


def check_engine_name(name: str) -> str:
    """Return name if an engine of that name exists, else raise ValueError listing the names."""
    if name not in ENGINE_LABELS:
        raise ValueError(f"unknown engine {name!r}; allowed: {', '.join(ENGINE_NAMES)}")
    return name


def get_engine(name: str) -> Any:
    """A new engine instance by name (imported on demand, so the server starts fast)."""
    check_engine_name(name)
    if name == "preview":
        from .preview import PreviewEngine

        return PreviewEngine()
    raise AssertionError(name)  # pragma: no cover - ENGINE_LABELS and this function disagree


__all__ = ["Cancelled", "ENGINE_LABELS", "ENGINE_NAMES", "check_engine_name", "get_engine"]
