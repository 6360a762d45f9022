"""How a Generation looks: one-line texts, the rich display, and the live widget card.

The card is state only: runner callbacks (background threads) set its traits and never call
display(), which is what survives ipykernel 7, nbclient and nbval (see shared/jupyter-notes.md).
The %%flux magic and the panel share it:

    card = Card(gen, on_new=None, extra_buttons=(), thumbnail_size=320)   # an ipywidgets.VBox
        card.gen               the Generation shown
        card.placeholder       HTML: a box of the recipe's aspect ratio where the picture will be;
                               it says why when the generation failed or was cancelled; closed
                               (None) once the picture stands in its place
        card.preview           Image: the thumbnail (JPEG for a photograph, PNG for flat art);
                               replaces the placeholder once it exists
        card.progress          FloatProgress, while running: steps where the backend reports them
                               (the local server), else elapsed time
                               (the hosted API has no progress); None once it ended (closed:
                               ipywidgets keeps every open widget for the kernel's life)
        card.lines             HTML (class flux-nb-lines), two lines in one widget (a model
                               fewer a card):
          the status line      (class flux-nb-status) queued / processing · step i/n · seconds,
                               then "done in 4.2 s · <file name>", or why it failed or was
                               cancelled; card.status_html is its HTML
          the caption line     (class flux-nb-caption) caption(gen); the prompt in the tooltip;
                               card.caption_html is its HTML
        card.reproduce_button  "Rerun": Reproduce, same recipe and seed again (same pixels)
                                                                                           -> on_new
        card.vary_button       "Vary": New seed, same recipe with a fresh seed             -> on_new
        card.copy_button       "Copy": Copy recipe, the %%flux cell that remakes the image
                               (set_next_input when run from code; clicked in a browser, the text
                               appears on the card because a widget click cannot create a cell)
        card.cancel_button     "Cancel": enabled while the generation runs
        card.file_link         HTML "Open": the full-size file, a link once it is saved
        card.buttons           HBox, one row: the four buttons, extra_buttons, then file_link
        card.settled           set once the card shows the final state (is_set/wait/set of a
                               threading.Event, without an Event per card: _Flag)
        card.refresh()         show the generation's state now (any thread)
    on_new(new_gen) runs on the kernel's thread when Rerun/Vary made a Generation: the owner shows
    its card (the magic adds it to the same grid, the panel puts it in its gallery).
    Layouts and styles (the card's own too) are shared between cards: assign new ones, never mutate.
    Every colour is a JupyterLab theme variable (_card_html.py), so light and dark themes both read.
    Where updates sent while no cell runs are not drawn (Colab), the next cell of any kind sends
    the card's missed state again (_catch_up.py); elsewhere nothing is sent twice.

    card_grid(cards) -> GridBox            several cards side by side, wrapping
    card_stack(gens, ...) -> CardStack     a grid of cards that grows a card per Rerun/Vary click
    magic_line(recipe) -> str              the `%%flux ...` line + "\\n"
                                           + prompt that remakes a recipe
    generation_mimebundle(gen)             widget view + thumbnail (jpeg/png) + text/plain
    stack_final_bundle(gens, view)         what a %%flux output settles to (_settled_output.py)
    sweep_view(sweep, ...) -> SweepView    a sweep's cards in its grid, axis values on the edges
    sweep_mimebundle(sweep)                widget view + image/png contact sheet (once done) + text
    sweep_final_bundle(sweep, view)        what a sweep cell's output settles to
    wait_settled(timeout), resend_settled()   for `%flux wait`:
                                              cards final, and saved by nbclient too
"""

from __future__ import annotations

import html
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..core._config import ipython_shell as _shell
from ..core._options import RECIPE_OPTIONS
from ..core._recipe import Recipe
from ..core._status import ENDED_BADLY, SUCCEEDED
from ..jobs import _display as display
from . import _card_html as card_html
from . import _catch_up as catch_up
from ._lean_widgets import lean
from ._widgets_compat import BundleDisplay, make, style, style_class

WIDGET_VIEW = display.WIDGET_VIEW
ERROR_COLOR = card_html.ERROR_COLOR
MUTED_COLOR = card_html.MUTED_COLOR


# -- text -----------------------------------------------------------------------------------------


def caption(gen) -> str:
    """Seed, steps, guidance, aspect, format and time: everything needed to read a result."""
    text = gen.recipe.summary()
    if gen.done:
        text += f" · {gen.elapsed:.1f} s"
    return text


def status_line(gen) -> str:
    """Where a generation is: queued, processing step i/n and seconds so far, or how it ended."""
    if gen.status in ENDED_BADLY:
        return f"{gen.status}: {gen.reason}"
    if gen.status == SUCCEEDED:
        where = (
            str(gen.path)
            if gen.path
            else f"not saved ({gen.save_error.message})"
            if gen.save_error
            else ""
        )
        return f"done · {where}"
    if gen.result_url:  # made: the picture shows while the file is written
        return f"saving · {gen.elapsed:.0f} s"
    progress = f" · step {gen.progress[0]}/{gen.progress[1]}" if gen.progress else ""
    return f"{gen.status}{progress} · {gen.elapsed:.0f} s"


_plain = display.plain


def generation_mimebundle(gen, widget: bool | None = None) -> dict[str, Any]:
    """text/plain always; the thumbnail once the image exists (shows where widgets do not);
    and, in a kernel (or with widget=True), the view of a live card for frontends with widgets."""
    return display.generation_bundle(gen, widget)


def stack_final_bundle(gens: Sequence[Any], view: widgets.Widget) -> dict[str, Any]:
    """What a %%flux cell's output settles to once its generations ended: the final text, the
    thumbnail (a contact sheet of several), and the same live view (_settled_output.py sends it)."""
    bundle: dict[str, Any] = {"text/plain": "\n".join(_plain(g) for g in gens)}
    picture = display.stack_picture(gens)
    if picture:
        bundle.update(display.picture(picture))
    bundle[WIDGET_VIEW] = _view_ref(view)
    return bundle


def sweep_final_bundle(sweep: Any, view: widgets.Widget) -> dict[str, Any]:
    """What a sweep cell's output settles to: its text, its contact sheet, the same live grid."""
    return {**sweep_mimebundle(sweep, widget=False), WIDGET_VIEW: _view_ref(view)}


_view_ref = display.view_ref
_in_kernel = display.in_kernel


# -- the recipe as a %%flux cell ------------------------------------------------------------------
# No widget, but it reads the session's input store (jobs), so it sits with the card's copy button
# and %flux reproduce that use it, not with the options that spell it (core/_options.py).


def magic_line(recipe: Recipe, inputs_dir: str | Path | None = None) -> str:
    """The `%%flux` line and the prompt that make this recipe again, every option spelled out.

    Input images stay URLs when they are; images named by hash (and older data: URIs) are passed
    as `--image PATH` of their file in `inputs_dir` (default: the session's `<output>/.inputs/`,
    where the bytes already are): reading the file back gives the very same data: URI, so the
    copied cell makes the same pixels.
    """
    from ..files._inputs import InputStore, is_ref

    parts = ["%%flux", *(o.spelled(getattr(recipe, o.dest)) for o in RECIPE_OPTIONS)]
    for source in recipe.input_image:
        if source.startswith("data:") or is_ref(source):
            if inputs_dir is None:
                from ..jobs._sessions import session

                store = session().output.inputs
            else:
                store = InputStore(inputs_dir)
            found = store.find(store.keep(source))
            source = str(found) if found is not None else source  # not here: %%flux says so
        parts.append(f"--image {_quote(source)}")
    line = " ".join(parts)
    # IPython expands {expr} and $name in magic lines; doubled, they come back as themselves.
    line = line.replace("$", "$$").replace("{", "{{").replace("}", "}}")
    return f"{line}\n{recipe.prompt}"


def _quote(text: str) -> str:
    return f'"{text}"' if any(c.isspace() for c in text) else text


# -- the card -------------------------------------------------------------------------------------

_Layout = lean(widgets.Layout)
CARD_PADDING = 8  # px inside the border, each side
MIN_CARD_CONTENT = 288  # px: five short buttons fit on one row at this width
PROGRESS_REFRESH = 0.2  # s: the least time between two redraws of a running card's bar
LIVE_REDRAWS = 32  # running-card redraws a second across all cards, beyond the ticker's (_Budget)
TICK_CARDS = 16  # running cards whose elapsed seconds the ticker redraws each second, at most


def card_width(thumbnail_size: int) -> int:
    """The card's outer width in px: the preview's width, at least room for the buttons."""
    return max(thumbnail_size, MIN_CARD_CONTENT) + 2 * CARD_PADDING + 2


class _Made(dict):
    """Made on first use: a notebook saves only the models its cards use."""

    def __init__(self, makers: dict[str, Callable[[], Any]]) -> None:
        super().__init__()
        self._makers = makers

    def __missing__(self, name: str) -> Any:
        made = self[name] = self._makers[name]()
        return made


@cache
def _shared() -> dict[str, Any]:
    """Layouts and styles every card uses: one widget each instead of one per card (about
    0.5 ms a widget in a kernel, which is most of a %%flux cell's time), each made when first
    used."""
    return _Made(_shared_makers())


def _shared_makers() -> dict[str, Callable[[], Any]]:
    return {
        "text": lambda: _Layout(width="auto"),
        "line": lambda: _Layout(width="100%", margin="0", overflow="hidden"),
        "media": lambda: _Layout(width="100%", margin="0 0 4px 0"),
        "image": lambda: _Layout(
            width="100%", height="auto", margin="0 0 4px 0", object_fit="contain"
        ),
        "bar": lambda: _Layout(width="100%", height="10px", margin="0 0 2px 0"),
        "row": lambda: _Layout(flex_flow="row wrap", width="100%", margin="4px 0 0 0"),
        "button": lambda: _Layout(
            width="auto", height="24px", padding="0 4px", margin="0 3px 2px 0"
        ),
        "file": lambda: _Layout(
            width="auto", min_width="0", height="24px", margin="0 0 2px 0", flex="0 0 auto"
        ),
        "button_style": lambda: style(lean(widgets.ButtonStyle), font_size=card_html.SMALL_FONT),
        "html_style": lambda: style(lean(style_class(widgets.HTML))),
        "file_style": lambda: style(
            lean(style_class(widgets.HTML)), font_size=card_html.SMALL_FONT
        ),
        "progress_style": lambda: style(lean(style_class(widgets.FloatProgress))),
    }


@cache
def _card_layout(thumbnail_size: int) -> widgets.Layout:
    return _Layout(
        width=f"{card_width(thumbnail_size)}px",
        max_width="100%",
        padding=f"{CARD_PADDING}px",
        margin="0",
        border="1px solid var(--jp-border-color2, #ddd)",
    )


# A card's widgets open with only their non-default state (_lean_widgets.py: a smaller saved
# notebook), and note what they send while no cell runs, for the front ends that drop it (Colab):
# the next cell sends it again (_catch_up.py).
_HTML, _Image, _Progress, _Button, _Textarea, _VBox = (
    catch_up.tracked(lean(c))
    for c in (
        widgets.HTML,
        widgets.Image,
        widgets.FloatProgress,
        widgets.Button,
        widgets.Textarea,
        widgets.VBox,
    )
)


def card_button(description: str, tooltip: str, icon: str) -> widgets.Button:
    """A compact button for a card's row (icon, short label, the full meaning as tooltip)."""
    shared = _shared()
    return _Button(
        description=description,
        tooltip=tooltip,
        icon=icon,
        layout=shared["button"],
        style=shared["button_style"],
    )


class Card(BundleDisplay, _VBox):  # type: ignore[misc,valid-type]  # a tracked VBox
    """One generation, live: placeholder or preview, progress, status, caption and buttons.
    See the module docstring."""

    def __init__(
        self,
        gen,
        *,
        on_new: Callable[[Any], None] | None = None,
        extra_buttons: Sequence[widgets.Button] = (),
        thumbnail_size: int = 320,
    ):
        self.gen = gen
        self.on_new = on_new
        self.thumbnail_size = thumbnail_size
        gen.want_thumbnail(thumbnail_size)  # made by the runner once the image is downloaded
        self.settled = _Flag()
        self._lock = threading.Lock()
        self._notice: widgets.HTML | None = None
        self._copy_box: widgets.Textarea | None = None
        self._shown_status, self._shown_at = gen.status, time.monotonic()
        catch_up.hook(_shell())
        # Made in the order they open (a saved notebook lists the models in it), then the card.
        placeholder = self._make_media(gen)
        self._make_lines(gen)
        self.buttons = self._make_buttons(gen, extra_buttons)
        super().__init__(layout=_card_layout(thumbnail_size))
        self._arrange()
        self.add_class("flux-nb-card")  # stable hooks for people's CSS and the browser test
        self.lines.add_class("flux-nb-lines")
        placeholder.add_class("flux-nb-placeholder")
        self.reproduce_button.on_click(self._rerun)  # methods, not closures: a long session
        self.vary_button.on_click(self._vary)  # keeps every card, and a closure with its cell
        self.copy_button.on_click(self._copy_clicked)  # weighs three bound methods
        self.cancel_button.on_click(self._cancel)
        if not gen.done:
            _ticker.add(self)
        gen.on_change(self._render)

    def _make_media(self, gen) -> widgets.HTML:
        """The placeholder (returned), the empty preview, and the bar while the generation runs."""
        shared = _shared()
        placeholder = _HTML(
            card_html.placeholder(gen), layout=shared["media"], style=shared["html_style"]
        )
        self.placeholder: widgets.HTML | None = placeholder
        self.preview = _Image(format="png", layout=shared["image"])
        self.progress: widgets.FloatProgress | None = None  # made while running, closed after
        if not gen.done:
            fraction, bar_style = card_html.progress(gen, _durations.typical())
            self.progress = _Progress(
                value=fraction,
                min=0.0,
                max=1.0,
                bar_style=bar_style,
                layout=shared["bar"],
                style=shared["progress_style"],
            )
        return placeholder

    def _make_lines(self, gen) -> None:
        shared = _shared()
        self.lines = _HTML(
            card_html.lines(
                card_html.status(gen, status_line(gen)), card_html.caption(gen, caption(gen))
            ),
            layout=shared["line"],
            style=shared["html_style"],
        )

    @property
    def status_html(self) -> str:
        """The status line's HTML, as the card shows it."""
        return card_html.split_lines(self.lines.value)[0]

    @property
    def caption_html(self) -> str:
        """The caption line's HTML, as the card shows it."""
        return card_html.split_lines(self.lines.value)[1]

    def _show_lines(self, status: str, caption_html: str | None = None) -> None:
        """A new status line, over a new caption or the one shown; sent only when it changed."""
        shown_caption = card_html.split_lines(self.lines.value)[1]
        value = card_html.lines(status, shown_caption if caption_html is None else caption_html)
        if value != self.lines.value:
            self.lines.value = value

    def _make_buttons(self, gen, extra: Sequence[widgets.Button]) -> widgets.HBox:
        """The row: Rerun, Vary, Copy, Cancel, the caller's extra buttons, then the Open link."""
        self.reproduce_button = card_button(
            "Rerun", "Reproduce: run the same recipe and seed again (the same image)", "repeat"
        )
        self.vary_button = card_button(
            "Vary", "New seed: run the same recipe with a fresh random seed", "random"
        )
        self.copy_button = card_button(
            "Copy", "Copy recipe: the %%flux cell that makes this image again", "copy"
        )
        self.cancel_button = card_button("Cancel", "Cancel: stop this generation", "stop")
        self.cancel_button.disabled = gen.done
        shared = _shared()
        self.file_link = _HTML(
            card_html.file_button(None, "Open"), layout=shared["file"], style=shared["file_style"]
        )
        row = [self.reproduce_button, self.vary_button, self.copy_button, self.cancel_button]
        return lean(widgets.HBox)([*row, *extra, self.file_link], layout=shared["row"])

    def __repr__(self) -> str:
        return f"<Card {self.gen!r}>"

    def _repr_mimebundle_(self, **kwargs):
        return _stable_text(super()._repr_mimebundle_(**kwargs), [self.gen])

    def refresh(self) -> None:
        """Show the generation's current state now (callable from any thread)."""
        self._shown_at = float("-inf")
        self._render(self.gen)

    def send_state_again(self) -> None:
        """Send the whole card's state once more from the calling thread (see resend_settled)."""
        with self._lock:
            for widget in (
                self,
                self.placeholder,
                self.preview,
                self.lines,
                self.cancel_button,
                self.file_link,
            ):
                if widget is not None and widget.comm is not None:
                    widget.send_state()

    # -- state -> traits; runs on runner threads and the ticker ------------------------------------

    def _render(self, gen) -> None:
        if not len(self.preview.value):
            made = gen.thumbnail_made(self.thumbnail_size)
            if made is not None:  # the picture first, even before the file is saved
                with self._lock:  # the status first: never a running step beside the picture
                    self._show_lines(card_html.status(gen, status_line(gen)))
                    self._show(made)
                    self._arrange()
        if not gen.done:
            now = time.monotonic()
            if gen.status == self._shown_status and now - self._shown_at < PROGRESS_REFRESH:
                return  # step events come every 50 ms: fewer messages, less for the page to draw
            if self._shown_at != float("-inf") and not _live_redraws.take(now):
                return  # many cards running: the ticker shows this one's state within seconds
            self._shown_at = now
        self._shown_status = gen.status
        thumb, problem = None, None
        if gen.status == SUCCEEDED and not len(self.preview.value):
            try:
                thumb = gen.thumbnail(self.thumbnail_size)  # made already, unless asked for late
            except Exception as exc:  # an unreadable result must still settle the card
                problem = f"no preview: {getattr(exc, 'message', None) or type(exc).__name__}"
        with self._lock:
            if thumb is not None:  # the picture first: it is what people wait for
                self._show(thumb)
            status = card_html.status(gen, status_line(gen), problem)
            if not gen.done:
                self._show_lines(status)
                if self.progress is not None:
                    fraction, bar_style = card_html.progress(gen, _durations.typical())
                    with self.progress.hold_sync():
                        self.progress.value, self.progress.bar_style = fraction, bar_style
                return
            self._show_lines(status, card_html.caption(gen, caption(gen)))
            self.cancel_button.disabled = True
            if (gen.status in ENDED_BADLY or problem) and self.placeholder is not None:
                self.placeholder.value = card_html.placeholder(gen, problem)
            if gen.path:
                self.file_link.value = card_html.file_button(gen.path, "Open")
            self._arrange()
            self._release()
            if not self.settled.is_set():
                if gen.status == SUCCEEDED:
                    _durations.add(gen.elapsed)
                _ticker.discard(self)
                _unsent.add(self)
                self.settled.set()

    def _show(self, thumb: bytes) -> None:
        """The thumbnail on the card, with the format it was made in (one message)."""
        from ..files._thumbnail import widget_format

        with self.preview.hold_sync():
            self.preview.format = widget_format(thumb)
            self.preview.value = thumb

    def _release(self) -> None:
        """Close what a finished card no longer shows (the bar; the placeholder once the picture
        stands in its place): ipywidgets keeps every open widget for the kernel's life, and a
        saved notebook keeps a closed model's last state, so the placeholder is emptied first."""
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.placeholder is not None and len(self.preview.value):
            self.placeholder.value = ""
            self.placeholder.close()
            self.placeholder = None

    def _arrange(self) -> None:
        """Children for the state: placeholder and bar while running, then picture or reason."""
        media = (
            self.preview
            if len(self.preview.value) or self.placeholder is None
            else self.placeholder
        )
        running = [self.progress] if self.progress is not None and not self.gen.done else []
        extra = [w for w in (self._notice, self._copy_box) if w is not None]
        children = (media, *running, self.lines, self.buttons, *extra)
        if tuple(self.children) != children:  # type: ignore[has-type]  # an ipywidgets trait
            self.children = children

    def _say(self, text: str, error: bool = False) -> None:
        color = card_html.ERROR_COLOR if error else card_html.MUTED_COLOR
        value = (
            f'<div style="color:{color}; white-space:normal; line-height:1.4;'
            f' font-size:{card_html.SMALL_FONT}"{" role=alert" if error else ""}>'
            f"{html.escape(text)}</div>"
        )
        with self._lock:
            if self._notice is None:
                self._notice = _HTML(value, layout=_shared()["line"], style=_shared()["html_style"])
                self._arrange()
            else:
                self._notice.value = value

    # -- buttons: short, delegate to the Generation ------------------------------------------------

    def _rerun(self, _button: Any) -> None:
        self._spawn(self.gen.reproduce)

    def _vary(self, _button: Any) -> None:
        self._spawn(self.gen.vary)

    def _copy_clicked(self, _button: Any) -> None:
        self._copy()

    def _cancel(self, _button: Any) -> None:
        self.gen.cancel()

    def _spawn(self, make: Callable[[], Any]) -> None:
        from ..core._errors import FluxError

        try:
            new = make()
        except FluxError as exc:
            self._say(str(exc), error=True)
            return
        if self.on_new is not None:
            self.on_new(new)
        else:
            self._say(f"Started a new generation with seed {new.seed}.")

    def _copy(self) -> None:
        """set_next_input only reaches the page in the reply to an execute request: from a click (a
        comm message) it would surface under whatever cell runs next (jupyterlab#8893). So a click
        shows the text to copy, and code (button.click() in a cell, %flux copy) gets the cell."""
        from ..core._errors import FluxError

        try:
            text = magic_line(self.gen.recipe)
        except (FluxError, OSError, ValueError) as exc:
            self._say(f"Cannot write the recipe's input image: {exc}", error=True)
            return
        shell = _shell()
        if shell is not None and _in_execute_request(shell):
            shell.set_next_input(text, replace=False)
            return
        with self._lock:
            if self._copy_box is None:
                self._copy_box = make(
                    _Textarea,
                    value=text,
                    rows=sum(1 + len(line) // 40 for line in text.splitlines()) + 1,
                    layout=_Layout(width="100%", margin="4px 0 0 0"),
                    tooltip="Select all and copy into a new cell",
                )
                self._arrange()
            else:
                self._copy_box.value = text


def _in_execute_request(shell) -> bool:
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return True  # terminal IPython: set_next_input pre-fills the next prompt
    return catch_up.in_execute_request(kernel)


class _Flag:
    """What a card needs of a threading.Event (set, is_set, wait), on one condition shared by
    every card: an Event is some 700 bytes (a Condition and its deque), kept for each card a
    long session shows. Waiters are few (wait_settled), so waking them all on each set is cheap."""

    __slots__ = ("_set",)
    _changed = threading.Condition()

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._changed:
            self._set = True
            self._changed.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        with self._changed:
            return self._changed.wait_for(self.is_set, timeout)


class _Durations:
    """How long recent generations took here: the time scale of the elapsed bar."""

    def __init__(self, keep: int = 20):
        self._seconds: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._seconds.append(seconds)

    def typical(self) -> float | None:
        with self._lock:
            values = sorted(self._seconds)
        return values[len(values) // 2] if values else None


# -- several cards --------------------------------------------------------------------------------


def grid_layout(column_width: int) -> widgets.Layout:
    """As many fixed-width columns as the output area holds, left-aligned, wrapping."""
    return _Layout(
        grid_template_columns=f"repeat(auto-fill, {column_width}px)",
        grid_gap="8px",
        justify_content="flex-start",
        width="100%",
    )


def card_grid(cards: Sequence[Card], min_width: int | None = None) -> widgets.GridBox:
    """Cards side by side, as many columns as fit, wrapping."""
    if min_width is None:
        min_width = card_width(max((c.thumbnail_size for c in cards), default=320))
    return widgets.GridBox(list(cards), layout=grid_layout(min_width))


def _stable_text(bundle: dict[str, Any], gens: Sequence[Any]) -> dict[str, Any]:
    """The widget's own text/plain names generation ids: nbval compares it, so use _plain."""
    return {**bundle, "text/plain": "\n".join(_plain(g) for g in gens)}


class CardStack(BundleDisplay, lean(widgets.GridBox)):  # type: ignore[misc]  # lean
    """What a %%flux cell shows: its cards in a grid, then a card per Reproduce/New seed click."""

    def __init__(self, children, gens: Sequence[Any], **kwargs):
        self.gens = list(gens)
        super().__init__(children, **kwargs)

    def _repr_mimebundle_(self, **kwargs):
        return _stable_text(super()._repr_mimebundle_(**kwargs), self.gens)


def card_stack(
    gens: Sequence[Any], *, on_new: Callable[[Any], None] | None = None, thumbnail_size: int = 320
) -> CardStack:
    """The cards of gens in a grid (as many per row as fit) that gains a card after them for
    each Reproduce/New seed click; on_new(new_gen) is then called too (the magic rebinds _flux)."""
    boxes: list[CardStack] = []  # filled below: the cards' on_new needs the box they sit in

    def made(new) -> None:
        box = boxes[0]
        box.children = [*box.children, Card(new, on_new=made, thumbnail_size=thumbnail_size)]
        if on_new is not None:
            on_new(new)

    cards = [Card(g, on_new=made, thumbnail_size=thumbnail_size) for g in gens]
    boxes.append(CardStack(cards, gens, layout=_stack_layout(thumbnail_size)))
    return boxes[0]


@cache
def _stack_layout(thumbnail_size: int) -> widgets.Layout:
    return grid_layout(card_width(thumbnail_size))


class SweepView(BundleDisplay, widgets.VBox):
    """What a sweep shows: its cards in a grid with the axis values along the top and left,
    then a card per Reproduce/New seed click."""

    def __init__(self, children, sweep: Any, **kwargs):
        self.sweep = sweep
        super().__init__(children, **kwargs)

    def _repr_mimebundle_(self, **kwargs):
        return {**super()._repr_mimebundle_(**kwargs), "text/plain": self.sweep.describe()}


def sweep_view(
    sweep: Any, *, on_new: Callable[[Any], None] | None = None, thumbnail_size: int = 256
) -> SweepView:
    """The sweep's cards in a grid: a header row of column values, a column of row values."""
    boxes: list[SweepView] = []

    def made(new) -> None:
        box = boxes[0]
        box.children = [*box.children, Card(new, on_new=made, thumbnail_size=thumbnail_size)]
        if on_new is not None:
            on_new(new)

    def label(text: str, align: str = "center") -> widgets.HTML:
        return widgets.HTML(
            f'<div style="text-align:{align};font-weight:600">{text}</div>',
            layout=_Layout(width="auto", align_self="center"),
        )

    rows, cols = sweep.shape
    row_labels = sweep.row_labels
    with_rows = any(row_labels)
    items: list[widgets.Widget] = [label("")] if with_rows else []
    items += [label(html.escape(text)) for text in sweep.column_labels]
    for r, gens in enumerate(sweep.rows()):
        if with_rows:
            items.append(label("<br>".join(html.escape(t) for t in row_labels[r]), "right"))
        items += [Card(g, on_new=made, thumbnail_size=thumbnail_size) for g in gens]
    grid = widgets.GridBox(
        items,
        layout=_Layout(
            grid_template_columns=("max-content " if with_rows else "")
            + f"repeat({cols}, minmax({thumbnail_size + 24}px, 1fr))",
            grid_gap="6px",
            overflow="auto",
        ),
    )
    title = widgets.HTML(_sweep_title_html(sweep.title), layout=_shared()["text"])
    boxes.append(SweepView([title, grid], sweep, layout=_shared()["text"]))
    return boxes[0]


def _sweep_title_html(title: str) -> str:
    first, _, rest = title.partition("\n")
    text = f"<b>{html.escape(first)}</b>"
    if rest:
        text += f'<br><span style="color:{MUTED_COLOR}">{html.escape(rest)}</span>'
    return text


def sweep_mimebundle(sweep: Any, widget: bool | None = None) -> dict[str, Any]:
    """text/plain always; the contact sheet as image/png once every cell is done (what GitHub
    and nbviewer show); in a kernel, the live grid of cards."""
    return display.sweep_bundle(sweep, widget)


def cards_in(view: widgets.Widget) -> list[Card]:
    """Every Card inside a view made by card_stack/card_grid, in order."""
    if isinstance(view, Card):
        return [view]
    found: list[Card] = []
    for child in getattr(view, "children", ()):
        found.extend(cards_in(child))
    return found


def wait_settled(timeout: float | None = None) -> bool:
    """Block until the card of every finished generation shows its final state: runner callbacks
    finish a moment after Generation.wait() returns. Cards still running are not waited for.
    True when all did within timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for card in _ticker.snapshot():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if card.gen.done and not card.settled.wait(left):
            return False
    return True


class _Unsent:
    """Cards that reached their final state since the last resend_settled()."""

    def __init__(self) -> None:
        self._cards: weakref.WeakSet[Card] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, card: Card) -> None:
        with self._lock:
            self._cards.add(card)

    def take(self) -> list[Card]:
        with self._lock:
            cards = list(self._cards)
            self._cards.clear()
        return cards


def resend_settled() -> int:
    """Send the final state of cards that settled since the last call again, from this thread.

    Runner threads set a card's traits whenever the image lands; a message sent while no cell
    runs belongs to no cell, and nbclient/nbconvert drop it from the widget state they save
    (JupyterLab shows it anyway). `%flux wait` calls this inside its own cell, so a notebook run
    headless and saved after it holds every preview. Returns how many cards were sent."""
    cards = _unsent.take()
    for card in cards:
        card.send_state_again()
    return len(cards)


class _Ticker:
    """One daemon thread that refreshes the elapsed seconds of running cards once a second; it
    ends when no card is running and starts again with the next one."""

    def __init__(self) -> None:
        self._cards: weakref.WeakSet[Card] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, card: Card) -> None:
        with self._lock:
            self._cards.add(card)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="flux-nb-ticker", daemon=True
                )
                self._thread.start()

    def discard(self, card: Card) -> None:
        with self._lock:
            self._cards.discard(card)

    def snapshot(self) -> list[Card]:
        with self._lock:
            return list(self._cards)

    def _run(self) -> None:
        tick = threading.Event()
        while True:
            tick.wait(1.0)
            with self._lock:
                cards = list(self._cards)
                if not cards:
                    self._thread = None
                    return
            for card in _to_tick(cards):
                card.refresh()


def _to_tick(cards: Sequence[Card], most: int = TICK_CARDS) -> list[Card]:
    """The running cards to redraw this second: the least recently drawn, `most` of them.

    With -n 256 in flight, redrawing every card each second sent 500 widget messages in one
    burst, and a cell run meanwhile waited for the interpreter that long. Beyond `most` running
    cards each one's seconds move less often; its steps and its end still show at once."""
    import heapq

    running = [c for c in cards if not c.gen.done]
    return heapq.nsmallest(most, running, key=lambda c: c._shown_at)


class _Budget:
    """Redraws of running cards allowed across all cards: `rate` a second, `rate` at once.

    A -n 256 cell's cards all go queued, then processing, within a second or two: two widget
    messages each, hundreds a second, which a cell run meanwhile waits behind (its output is
    flushed after them). Past the budget a running card is left as it is until the ticker's
    turn (the least recently drawn first); a finished card is always drawn at once."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens, self._at = rate, 0.0
        self._lock = threading.Lock()

    def take(self, now: float) -> bool:
        with self._lock:
            self._tokens = min(self.rate, self._tokens + max(0.0, now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


_live_redraws = _Budget(LIVE_REDRAWS)
_ticker = _Ticker()
_unsent = _Unsent()
_durations = _Durations()

# The live views, for displays made below this layer (Generation and Sweep show themselves
# through jobs/_display.py): registered once, when the view layer is imported.
display.register_widget("generation", lambda gen: card_stack([gen]))
display.register_widget("sweep", lambda sweep: sweep_view(sweep))

__all__ = [
    "Card",
    "CardStack",
    "caption",
    "card_button",
    "card_grid",
    "card_stack",
    "card_width",
    "cards_in",
    "generation_mimebundle",
    "magic_line",
    "resend_settled",
    "stack_final_bundle",
    "status_line",
    "sweep_final_bundle",
    "wait_settled",
]
