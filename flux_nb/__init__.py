"""flux-nb: FLUX.2 Klein 4B in Jupyter.

    %load_ext flux_nb          then a %%flux cell: the cell text is the prompt
    flux_nb.generate("a red fox in snow", seed=7).wait().image
    flux_nb.Panel()            every parameter as widgets, with a gallery
    flux_nb.sweep("a {red|blue} fox", seed=7, steps=[4, 8, 16]).save("sheet.png")

Without OXEN_API_KEY everything runs on a local offline stand-in server (not FLUX); with a key it
talks to Oxen.ai's hosted API. Same code path either way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Literal, overload

from .core._errors import (
    ApiError,
    AuthError,
    BadRequestError,
    CostLimitError,
    CreditsError,
    FluxError,
    GenerationCancelled,
    GenerationFailed,
    InputImageError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StorageError,
    ValidationError,
)
from .core._recipe import MODEL_ID, Recipe

if TYPE_CHECKING:  # what users hold; each module loads on first use (`import flux_nb` stays light)
    from .jobs._generation import Generation
    from .jobs._lineage import LineageView
    from .jobs._sessions import Session
    from .jobs._sweeps import Sweep
    from .notebook import _panel

__version__ = "0.1.0"

# Background threads must never print into whichever cell happens to run: no lastResort handler.
logging.getLogger("flux_nb").addHandler(logging.NullHandler())


# The classes users hold, loaded when first asked for (Session's module needs httpx). Hidden from
# mypy, which takes them from the TYPE_CHECKING imports above and so flags a misspelt name.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name == "Generation":
            from .jobs._generation import Generation as found
        elif name == "Session":
            from .jobs._sessions import Session as found
        elif name == "Sweep":
            from .jobs._sweeps import Sweep as found
        else:
            raise AttributeError(f"module 'flux_nb' has no attribute {name!r}")
        globals()[name] = found
        return found


def session(**kwargs: Any) -> Session:
    """The kernel's Session (made on first use; keyword arguments make a new one)."""
    from .jobs._sessions import session as _session

    _live_cards()
    return _session(**kwargs)


def _live_cards() -> None:
    """In a kernel, Generations display as live cards: the view layer registers them on import."""
    from .jobs._display import in_kernel

    if in_kernel():
        from .notebook import _cards as cards  # noqa: F401


@overload
def generate(prompt: str, n: Literal[1] = 1, **params: Any) -> Generation: ...
@overload
def generate(prompt: str, n: int, **params: Any) -> Generation | list[Generation]: ...


def generate(prompt: str, n: int = 1, **params: Any) -> Generation | list[Generation]:
    """Start an image (n images: a list) in the background and return its Generation at once.

    Keywords are the API's field names: seed, aspect_ratio, output_quality, output_format,
    num_inference_steps, guidance_scale, input_image (paths, URLs, PIL images, bytes, Generations).
    """
    return session().generate(prompt, n, **params)


@overload
async def agenerate(prompt: str, n: Literal[1] = 1, **params: Any) -> Generation: ...
@overload
async def agenerate(prompt: str, n: int, **params: Any) -> Generation | list[Generation]: ...


async def agenerate(prompt: str, n: int = 1, **params: Any) -> Generation | list[Generation]:
    """`await flux_nb.agenerate(...)`: generate() that returns the saved Generation (a list when
    n > 1) without blocking the event loop; raises as wait() does."""
    from .jobs._aio import agenerate as _agenerate

    return await _agenerate(prompt, n, **params)


def as_completed(gens: Iterable[Generation]) -> AsyncIterator[Generation]:
    """`async for g in flux_nb.as_completed(gens)`: each Generation as it ends."""
    from .jobs._aio import as_completed as _as_completed

    return _as_completed(gens)


def reproduce(source: Any, lineage: bool = False, inputs: Iterable[Any] = ()) -> Generation:
    """Run again the recipe of a Generation, a saved image file or a generation id. A file
    with only another tool's A1111 `parameters` text works too (what is ignored is printed).
    Input images the recipe names by hash come from the output folder's .inputs/ (or the one
    beside the file); `inputs` (paths, bytes, PIL images) gives them again when they are not there.

    lineage=True makes an edit of an edit again from its last file alone: every earlier step
    first, each new image the input of the next. An uploaded image the chain starts from is
    needed: it is looked for in the output folder's .inputs/ and among `inputs` (paths, bytes).
    """
    return session().reproduce(source, lineage=lineage, inputs=inputs)


def lineage_of(source: Any) -> LineageView:
    """How a saved edit was made, step by step (parents first): a thumbnail strip and one line per
    step; `.steps` counts them and `.needed` lists uploaded images that are not here."""
    from .jobs._lineage import view

    return view(session(), source)


def sweep(prompt: str, **axes: Any) -> Sweep:
    """Start one image per combination of values and return the grid (a Sweep) at once.

    Lists are swept, by flag or API name: steps=[4, 8, 16], guidance=[1, 2, 4], seed=[1, 2];
    other keywords are fixed for every cell (seed=7, aspect_ratio="1:1", input_image=...), and
    {a|b|c} in the prompt are alternatives. Every cell has the same seed unless it is swept.
    The first axis runs along the columns. sweep[row, col] is a Generation; .save(path) writes
    the labelled contact sheet once every cell is done.
    """
    from .jobs._sweeps import plan, split_axes, start

    sess = session()
    swept, fixed = split_axes(axes, sess.schema)
    return start(sess, plan(prompt, swept, sess.schema, **fixed))


def resume() -> list[Generation]:
    """Collect generations that an earlier kernel sent and never saved."""
    return session().resume()


def read_recipe(path: Any) -> Recipe:
    """The recipe embedded in an image file saved by flux-nb."""
    from .files._metadata import read_recipe as _read

    return Recipe.from_dict(_read(path)["recipe"])


def Panel(**kwargs: Any) -> _panel.Panel:  # noqa: N802 - a widget class to the user
    """The widgets panel: every parameter, image upload, a live gallery with reproduce buttons."""
    from .notebook._panel import Panel as _Panel

    return _Panel(**kwargs)


def load_ipython_extension(ipython: Any) -> None:
    from .notebook._magic import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .notebook._magic import unload_ipython_extension as _unload

    _unload(ipython)


__all__ = [
    "ApiError",
    "AuthError",
    "BadRequestError",
    "CostLimitError",
    "CreditsError",
    "FluxError",
    "Generation",
    "GenerationCancelled",
    "GenerationFailed",
    "InputImageError",
    "MODEL_ID",
    "NetworkError",
    "NotFoundError",
    "Panel",
    "RateLimitError",
    "Recipe",
    "ServerError",
    "Session",
    "StorageError",
    "Sweep",
    "ValidationError",
    "agenerate",
    "as_completed",
    "generate",
    "lineage_of",
    "read_recipe",
    "reproduce",
    "resume",
    "session",
    "sweep",
]
