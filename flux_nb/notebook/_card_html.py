"""The HTML a card shows: pure functions of a Generation, no widgets, so they are cheap to test.

Colours are JupyterLab's theme variables (light, dark, high contrast), each with a fallback for
frontends that lack them (VS Code, Colab). Lines that could run long are one line cut with an
ellipsis, the whole text in the tooltip.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

from ..core._config import is_stand_in
from ..core._status import ENDED_BADLY, FAILED, QUEUED, SUBMITTING, SUCCEEDED

ERROR_COLOR = "var(--jp-error-color1, #c62828)"
MUTED_COLOR = "var(--jp-ui-font-color2, #666)"
TEXT_COLOR = "var(--jp-ui-font-color1, #222)"
SUCCESS_COLOR = "var(--jp-success-color1, #2e7d32)"
BOX_COLOR = "var(--jp-layout-color2, #eee)"
FONT_SIZE = "var(--jp-ui-font-size1, 13px)"
SMALL_FONT = "var(--jp-ui-font-size0, 11px)"
ONE_LINE = "white-space:nowrap; overflow:hidden; text-overflow:ellipsis; line-height:1.5"
DEFAULT_SECONDS = 8.0  # the elapsed bar's time scale until a generation has finished here


def esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def line(inner: str, title: str, color: str = TEXT_COLOR, size: str = FONT_SIZE) -> str:
    """One line of HTML cut with an ellipsis; `title` (plain text) shows whole on hover."""
    return (
        f'<div title="{esc(title)}" style="{ONE_LINE}; color:{color}; font-size:{size}">'
        f"{inner}</div>"
    )


def aspect(ratio: str) -> tuple[int, int]:
    """'4:3' -> (4, 3); anything unreadable is square."""
    try:
        w, h = (int(x) for x in str(ratio).split(":"))
    except ValueError:
        return 1, 1
    return (w, h) if w > 0 and h > 0 else (1, 1)


def placeholder(gen, problem: str | None = None) -> str:
    """A box of the image's shape (from the recipe) that stands where the picture will be: its
    aspect ratio while running, the reason when it failed or was cancelled."""
    w, h = aspect(gen.recipe.aspect_ratio)
    color, body = MUTED_COLOR, f"{w}:{h}"
    if gen.status in ENDED_BADLY or problem:
        color = ERROR_COLOR
        why = problem or gen.reason or gen.status
        mark = "✕ failed" if gen.status == FAILED else "cancelled" if not problem else "⚠"
        body = f"<b>{esc(mark)}</b><br>{esc(why)}"
    return (
        f'<div style="aspect-ratio:{w}/{h}; width:100%; box-sizing:border-box; display:flex;'
        f" align-items:center; justify-content:center; text-align:center; padding:8px;"
        f" background:{BOX_COLOR}; color:{color}; font-size:{FONT_SIZE}; line-height:1.4;"
        f' white-space:normal; overflow:hidden; word-break:break-word">'
        f'<span style="max-height:100%">{body}</span></div>'
    )


def status(gen, text: str, problem: str | None = None) -> str:
    """The card's first line: how it ended and the file's name, or where it is and for how long.
    `text` is cards.status_line(gen)."""
    if gen.status in ENDED_BADLY:
        return line(esc(text), text, ERROR_COLOR)
    if gen.status == SUCCEEDED:
        head = f"done in {gen.elapsed:.1f} s"
        # ✓ as a character reference: the line stays one byte a character in the kernel (a
        # long session keeps every card's), where one ✓ makes Python store two a character
        inner = f'<span style="color:{SUCCESS_COLOR}">&#10003;</span> {esc(head)}'
        tip = head
        if gen.path:
            inner += f" · {esc(Path(gen.path).name)}"
            tip += f"\n{gen.path}"
        elif gen.save_error:
            inner += f' · <span style="color:{ERROR_COLOR}">{esc(gen.save_error.message)}</span>'
            tip += f"\n{gen.save_error.message}"
        if problem:
            inner += f' · <span style="color:{ERROR_COLOR}">{esc(problem)}</span>'
            tip += f"\n{problem}"
        return line(inner, tip)
    inner = esc(text)
    if gen.error is not None:  # a cancel request the server refused; the generation runs on
        inner += f' · <span style="color:{ERROR_COLOR}">{esc(gen.reason)}</span>'
        text += f" · {gen.reason}"
    note = getattr(gen, "delivery_note", None)
    if note:  # the event stream is silent: said on hover, the line itself stays short
        text += f"\n{note}"
    return line(inner, text)


def caption(gen, text: str) -> str:
    """Seed and settings on one line, muted; the prompt and the settings in the tooltip.
    `text` is cards.caption(gen)."""
    engine = getattr(gen, "engine", None)
    if engine and not is_stand_in(engine):  # the preview engine tags its own pictures
        text = f"{text} · {engine}"
    return line(esc(text), f"{gen.prompt}\n{text}", MUTED_COLOR, SMALL_FONT)


STATUS_OPEN = '<div class="flux-nb-status">'
CAPTION_OPEN = '<div class="flux-nb-caption">'


def lines(status_html: str, caption_html: str) -> str:
    """The status line over the caption, in one HTML widget: a widget model fewer a card (some
    1.9 KB a long session keeps for each). Each sits in a plain div of its own class, which
    draws as the widget of its own did and is the hook for people's CSS and the browser tests."""
    return f"{STATUS_OPEN}{status_html}</div>{CAPTION_OPEN}{caption_html}</div>"


def split_lines(value: str) -> tuple[str, str]:
    """lines()'s two parts again: (status_html, caption_html). A line is one div whose inside
    holds spans only, so the status part ends at the first closing pair."""
    head, _, tail = value.partition("</div></div>")
    return head[len(STATUS_OPEN) :] + "</div>", tail[len(CAPTION_OPEN) : -len("</div>")]


def progress(gen, typical: float | None) -> tuple[float, str]:
    """(fraction, bar style) of the bar under a running card: steps done where the backend
    reports them (the local server), otherwise time that fills towards, never reaching, the
    end, on the scale of how long generations took here so far."""
    if gen.progress and gen.progress[1] > 0:
        step, total = gen.progress
        return min(1.0, step / total), ""
    scale = typical or DEFAULT_SECONDS
    fraction = 1.0 - math.exp(-max(0.0, gen.elapsed) / scale)
    return min(0.95, fraction * (0.3 if gen.status in (SUBMITTING, QUEUED) else 1.0)), "info"


def file_button(path, label: str) -> str:
    """The full-size file as a button-looking link: relative to the notebook's folder (the
    kernel's cwd), JupyterLab opens it in a new tab; elsewhere (or before it exists) a disabled
    button whose tooltip says where the file is."""
    style = (
        "display:inline-flex; align-items:center; gap:4px; text-decoration:none; width:auto;"
        " height:24px; padding:0 4px; margin:0; font-size:inherit; box-sizing:border-box"
    )
    icon = '<i class="fa fa-external-link" aria-hidden="true"></i>'
    body = f"{icon}<span>{esc(label)}</span>"
    if path is None:
        return (
            f'<span class="jupyter-button widget-button flux-nb-file" title="The full-size file,'
            f' once the image is saved" style="{style}; opacity:0.4; cursor:default">{body}</span>'
        )
    path = Path(path)
    try:
        rel = os.path.relpath(path)
    except ValueError:
        rel = str(path)
    if rel.startswith(".."):
        return (
            f'<span class="jupyter-button widget-button flux-nb-file"'
            f' title="{esc(f"Saved outside the notebook folder: {path}")}"'
            f' style="{style}; opacity:0.6; cursor:default">{body}</span>'
        )
    href = esc(Path(rel).as_posix())
    return (
        f'<a class="jupyter-button widget-button flux-nb-file" href="{href}" target="_blank"'
        f' rel="noopener" title="{esc(f"Open the full-size image: {path}")}" style="{style};'
        f' color:{TEXT_COLOR}">{body}</a>'
    )


__all__ = [
    "aspect",
    "caption",
    "file_button",
    "lines",
    "placeholder",
    "progress",
    "split_lines",
    "status",
]
