"""Image engines for the local server.

An engine turns a validated Recipe (plus decoded input images) into encoded image bytes:

    render(recipe, inputs, *, on_step=None, should_stop=None, step_delay=0.0)
        -> (bytes, content_type)

It calls on_step(i, total) after each step, sleeps step_delay seconds per step (the preview engine;
a real model takes its own time) and raises Cancelled when should_stop() turns true. A failure that
one line can explain is raised as EngineError with that line.

Every engine follows base.Engine and is one entry of the registry base.ENGINES (how to make
it, its label, whether it runs one at a time, the options it takes); an EngineConfig names one
(name plus the options of the engines that load a model). The preview engine is made once per
worker thread, so its render need not be thread-safe; the flux2-klein engine shares one pipeline
per device and runs one generation at a time on each (`serial`), so the server gives it one
worker per device (engine_slots). Its memory plan (_plan.py, _machine.py) is arithmetic on the
model's configuration. Nothing here imports torch or diffusers.
"""

from __future__ import annotations

from ._base import (
    DEVICES,
    DTYPES,
    ENGINE_NAMES,
    ENGINES,
    KLEIN_DEFAULT_MODEL,
    LOCAL_EXTRA_MODULES,
    LOCAL_EXTRA_PIP,
    Cancelled,
    Engine,
    EngineConfig,
    EngineError,
    EngineKind,
    EngineUnavailable,
    check_engine_name,
)


def engine_slots(engine: str | EngineConfig, workers: int) -> int:
    """How many workers run generations: `workers` for an engine per thread; for a serial one
    (flux2-klein) one per device it runs a pipeline on."""
    config = EngineConfig.of(engine)
    return config.kind.slots(config, workers)


def get_engine(engine: str | EngineConfig, slot: int = 0) -> Engine:
    """A new engine instance (its module imported now, so the server starts fast); slot picks
    one of a serial engine's devices."""
    config = EngineConfig.of(engine)
    return config.kind.make(config, slot)


__all__ = [
    "DEVICES",
    "DTYPES",
    "ENGINES",
    "ENGINE_NAMES",
    "KLEIN_DEFAULT_MODEL",
    "LOCAL_EXTRA_MODULES",
    "LOCAL_EXTRA_PIP",
    "Cancelled",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineKind",
    "EngineUnavailable",
    "check_engine_name",
    "engine_slots",
    "get_engine",
]
