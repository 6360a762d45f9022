"""The async twin of the Python API, on the same session and runner (no second implementation).

    g = await flux_nb.agenerate("a koi pond", seed=8)       # the saved Generation
    gens = flux_nb.generate("a koi pond", n=4)
    async for g in flux_nb.as_completed(gens): ...          # in the order they finish
    await g                                                 # any Generation

Works with top-level `await` in a notebook (the kernel's event loop) and under asyncio.run in a
script. Awaiting never blocks the loop: the runner's thread wakes the loop when a generation
settles. Cancelling an awaiting task does not cancel the generation; g.cancel() does.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ._generation import Generation
from ._sessions import session


async def agenerate(prompt: str, n: int = 1, **params: Any) -> Generation | list[Generation]:
    """Start n images (as generate() does) and return them once saved: a Generation, or a list
    when n > 1. A failed or cancelled one raises, as wait() does."""
    made = session().generate(prompt, n, **params)
    if isinstance(made, list):
        return list(await asyncio.gather(*(_wait(g) for g in made)))
    return await made


async def _wait(gen: Generation) -> Generation:
    return await gen


async def as_completed(gens: Iterable[Generation]) -> AsyncIterator[Generation]:
    """Yield each Generation as it ends (succeeded, failed or cancelled: check .status, or
    `await g` to raise), in the order they end."""
    pending = list(gens)
    loop = asyncio.get_running_loop()
    settled: asyncio.Queue[Generation] = asyncio.Queue()
    for gen in pending:
        gen._when_done(functools.partial(loop.call_soon_threadsafe, settled.put_nowait, gen))
    for _ in pending:
        yield await settled.get()


__all__ = ["agenerate", "as_completed"]
