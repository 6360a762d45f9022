"""Image engines for the local server.

An engine turns a validated Recipe (plus decoded input images) into encoded image bytes:

    render(recipe, inputs, *, on_step=None, should_stop=None, step_delay=0.0)
        -> (bytes, content_type)

It calls on_step(i, total) after each step, sleeps step_delay seconds per step (the preview engine;
a real model takes its own time) and raises Cancelled when should_stop() turns true. A failure that
one line can explain is raised as EngineError with that line.

Engines are named by an EngineConfig (name plus the options of the engines that load a model).
The preview engine is made once per worker thread, so its render need not be thread-safe; the
flux2-klein engine shares one pipeline per device and runs one generation at a time on each
(`serial`), so the server gives it one worker per device (engine_slots). Its memory plan
(plan.py, machine.py) is arithmetic on the model's configuration. Nothing here imports torch or
diffusers.
"""

from __future__ import annotations

from typing import Any

from .base import (
    DEVICES,
    DTYPES,
    ENGINE_LABELS,
    ENGINE_NAMES,
    KLEIN_DEFAULT_MODEL,
    LOCAL_EXTRA_MODULES,
    LOCAL_EXTRA_PIP,
    SERIAL_ENGINES,
    Cancelled,
    EngineConfig,
    EngineError,
    EngineUnavailable,
    check_engine_name,
)


def engine_slots(engine: str | EngineConfig, workers: int) -> int:
    """How many workers run generations: `workers` for an engine per thread; for flux2-klein one
    per device it runs a pipeline on (torch is imported to count GPUs only for device auto)."""
    config = EngineConfig.of(engine)
    if not config.serial:
        return workers
    if config.devices != ["auto"]:
        return len(config.devices)
    from .flux2_klein import devices_for

    return len(devices_for(config))


def get_engine(engine: str | EngineConfig, slot: int = 0) -> Any:
    """A new engine instance (imported on demand, so the server starts fast); slot picks one of
    flux2-klein's devices."""
    config = EngineConfig.of(engine)
    if config.name == "preview":
        from .preview import PreviewEngine

        return PreviewEngine()
    if config.name == "flux2-klein":
        from .flux2_klein import Flux2KleinEngine

        return Flux2KleinEngine(config, slot)
    raise AssertionError(config.name)  # pragma: no cover - ENGINE_LABELS and this function disagree


__all__ = [
    "DEVICES",
    "DTYPES",
    "ENGINE_LABELS",
    "ENGINE_NAMES",
    "KLEIN_DEFAULT_MODEL",
    "LOCAL_EXTRA_MODULES",
    "LOCAL_EXTRA_PIP",
    "SERIAL_ENGINES",
    "Cancelled",
    "EngineConfig",
    "EngineError",
    "EngineUnavailable",
    "check_engine_name",
    "engine_slots",
    "get_engine",
]
