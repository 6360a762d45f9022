"""How a Generation (or a sweep) shows itself without widgets: text/plain and a picture (its
thumbnail: image/jpeg for a photograph, image/png for flat art; a sweep's contact sheet: PNG).

This sits below the handle and knows nothing of ipywidgets. The view layer (notebook/_cards.py) adds
the live card by registering a maker here when it is imported; in a kernel, a display then carries
the card's widget view too. Nothing here imports upward.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

from ..core._config import in_kernel
from ..core._status import ENDED_BADLY, SUCCEEDED

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# kind ("generation", "sweep") -> a function making the live widget for one object
_widget_makers: dict[str, Callable[[Any], Any]] = {}


def register_widget(kind: str, make: Callable[[Any], Any]) -> None:
    """Let displays of `kind` carry a live widget made by `make(obj)` (set by
    notebook/_cards.py)."""
    _widget_makers[kind] = make


def view_ref(view: Any) -> dict[str, Any]:
    return {"version_major": 2, "version_minor": 0, "model_id": view.model_id}


def picture(data: bytes) -> dict[str, str]:
    """A thumbnail as a mimebundle entry, under the type it was made as (thumbnail.mime_type)."""
    from ..files._thumbnail import mime_type  # Pillow, which %load_ext does not load

    return {mime_type(data): base64.b64encode(data).decode()}


def plain(gen: Any) -> str:
    """text/plain for saved notebooks: no timings, ids or paths, so nbval compares it run to run."""
    if gen.status == SUCCEEDED:
        state = "done" if gen.path else "done, not saved"
    elif gen.status in ENDED_BADLY:
        state = f"{gen.status}: {gen.reason}"
    else:
        state = "running"
    return f"{gen.prompt!r}\n{gen.recipe.summary()}\n{state}"


def generation_bundle(gen: Any, widget: bool | None = None) -> dict[str, Any]:
    """text/plain always; the thumbnail once the image exists (shows where widgets do not);
    and, in a kernel (or with widget=True) once a view is registered, the live card's view."""
    bundle: dict[str, Any] = {"text/plain": plain(gen)}
    if gen.status == SUCCEEDED:
        bundle.update(picture(gen.thumbnail()))
    return _with_widget(bundle, "generation", gen, widget)


def sweep_bundle(sweep: Any, widget: bool | None = None) -> dict[str, Any]:
    """text/plain always; the contact sheet as image/png once every cell is done (what GitHub
    and nbviewer show); in a kernel, the live grid of cards."""
    bundle: dict[str, Any] = {"text/plain": sweep.describe()}
    if sweep.done:
        from ..files._thumbnail import palette_png  # Pillow, which %load_ext does not load

        # Made once, when the sweep is done: median cut and zlib's best, not the thumbnails' speed.
        sheet = palette_png(sweep.sheet(tile=160), method=None, optimize=True)
        bundle["image/png"] = base64.b64encode(sheet).decode()
    return _with_widget(bundle, "sweep", sweep, widget)


def _with_widget(
    bundle: dict[str, Any], kind: str, obj: Any, widget: bool | None
) -> dict[str, Any]:
    make = _widget_makers.get(kind)
    if widget is None:
        widget = in_kernel()
    if widget and make is not None:
        bundle[WIDGET_VIEW] = view_ref(make(obj))
    return bundle


# The picture an -n N output settles to: its images' thumbnails on one contact sheet.
SHEET_TILE = 160  # px high: the images of an -n N output, side by side in its saved picture
SHEET_COLUMNS = 4
SHEET_MOST = 16  # -n 256 saves a sheet of the first 16, not a 256-image picture in the notebook


def stack_picture(gens: Sequence[Any]) -> bytes | None:
    """One image's thumbnail; for several, a contact sheet (PNG) of their thumbnails (seeds on
    top, why one failed in its place); None when no image was made."""
    if not any(g.status == SUCCEEDED for g in gens):
        return None
    if len(gens) == 1:
        return gens[0].thumbnail()
    import io

    from PIL import Image

    from ..files._sheet import draw_sheet
    from ..files._thumbnail import palette_png

    shown = gens[:SHEET_MOST]
    cols = min(len(shown), SHEET_COLUMNS)
    tiles: list[Any] = [
        Image.open(io.BytesIO(g.thumbnail())) if g.status == SUCCEEDED else g.status for g in shown
    ]
    tiles += [""] * (-len(tiles) % cols)
    rows = [tiles[i : i + cols] for i in range(0, len(tiles), cols)]
    labels = [f"seed {g.seed}" for g in shown[:cols]] if len(rows) == 1 else [""] * cols
    shared = {(g.prompt, g.recipe.summary().split(" · ", 1)[1]) for g in gens}  # all but the seed
    title = "\n".join(shared.pop()) if len(shared) == 1 else f"{len(gens)} images"
    if len(gens) > len(shown):
        title += f" · the first {len(shown)} of {len(gens)}"
    sheet = draw_sheet(rows, labels, [], title, SHEET_TILE)
    return palette_png(sheet)  # encoded as thumbnails are: made on a runner thread, so kept cheap
