"""The widgets panel: every model parameter as a control, input images, and a live gallery.

The panel is a view. Generate reads the controls into one call of Session.generate, and each
Generation is drawn with the magic's Card (_cards.py), so both show results the same way. Runner
callbacks (background threads) only set widget state; nothing here calls display() or HTTP.

    panel = flux_nb.Panel()          # the kernel's session, with the output folder's history
    panel.prompt.value = "a lighthouse at dusk"
    panel.generate()                 # what the Generate button does; returns the Generations
"""

from __future__ import annotations

import base64
import html
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ipywidgets as widgets

from ..core import _errors as errors
from ..core._config import in_colab, is_stand_in
from ..core._recipe import SEED_MAX, draw_seed
from ..core._status import SUCCEEDED
from ..jobs._generation import Generation
from ..jobs._sessions import Session
from ._cards import Card, card_button, card_grid, card_width
from ._controls import Control, label_for, make_controls, parameters
from ._widgets_compat import clear_upload, make, uploaded_files

log = logging.getLogger("flux_nb.panel")

HISTORY_LIMIT = 12  # images from the output folder shown on open (each costs a thumbnail)
MAX_IMAGES = 4  # the "Images" control: how many one click of Generate makes
THUMBNAIL_SIZE = 336  # gallery previews: three cards (six buttons a row) in the panel's 1100 px
INPUT_THUMBNAIL_SIZE = 96
LABEL_WIDTH = "92px"
# The parameters with controls of their own; every other one is made from the schema (_controls.py).
OWN_CONTROLS = ("prompt", "input_image", "seed")
# The attributes code and tests drive the schema's controls by: panel.steps.value = 8 (and the
# number box beside a slider as steps_box). Any parameter's control is in panel.controls too.
ATTRIBUTES = {
    "aspect_ratio": "aspect_ratio",
    "output_quality": "quality",
    "output_format": "format",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
}
COLAB_UPLOAD_NOTE = "In Colab, uploads of 1 MB or more arrive empty: give a path or URL."
ERROR_COLOR = "var(--jp-error-color1, #c62828)"
MUTED_COLOR = "var(--jp-ui-font-color2, #666)"


@dataclass(frozen=True, eq=False)
class InputImage:
    """One input image for an edit: a name to show, the URL the recipe carries, a small PNG."""

    name: str
    url: str
    thumbnail: bytes | None


class Panel(widgets.VBox):
    """Prompt, a control for each model parameter, input images, Generate/Cancel and a gallery.

    The parameters' controls are made from the model's request schema (_controls.py), so one the
    schema adds shows up here with no code: `controls` maps each parameter to its Control. The
    widgets are attributes too (prompt, aspect_ratio, quality, format, steps and steps_box,
    guidance and guidance_box, seed, seed_lock, count, generate_button, cancel_button, upload,
    gallery, error), so code and tests can drive the panel as a person would.
    """

    def __init__(self, session: Session | None = None, history: bool | int = True):
        super().__init__(layout=widgets.Layout(width="100%", max_width="1100px", padding="4px"))
        if session is None:
            from ..jobs._sessions import session as current

            session = current()
        self.session = session
        self.cards: list[Card] = []  # newest first, as in the gallery
        self._inputs: list[tuple[InputImage, widgets.Widget]] = []
        self._running: dict[int, Generation] = {}
        self._lock = threading.RLock()
        self._error_message = ""
        self._build(session.schema)
        if history:
            self.load_history(HISTORY_LIMIT if history is True else int(history))

    def __repr__(self) -> str:
        return (
            f"<flux_nb.Panel {self.session.backend}: {len(self.cards)} result(s) in the gallery,"
            f" {len(self._running)} running (widgets need Jupyter to show)>"
        )

    # -- building ---------------------------------------------------------------------------------

    def _build(self, schema: dict[str, Any]) -> None:
        """The panel top to bottom: header, prompt, parameters, seed, inputs, actions, gallery."""
        label = {"description_width": LABEL_WIDTH}
        self.header = widgets.HTML(_header_html(self.session), layout=widgets.Layout(width="auto"))
        self.prompt = make(
            widgets.Textarea,
            description="Prompt",
            placeholder="Describe the image, or the edit to make to the input images",
            rows=3,
            layout=widgets.Layout(width="100%"),
            style=label,
            tooltip="The text of the image to make",
        )
        controls, seed_row = self._build_parameters(schema, label)
        wrap = widgets.Layout(
            flex_flow="row wrap", align_items="center", width="100%", grid_gap="6px"
        )
        inputs_row = self._build_inputs(wrap)
        actions_row = self._build_actions(wrap)
        self.gallery = card_grid([], min_width=card_width(THUMBNAIL_SIZE))
        self._gallery_note = widgets.HTML(
            f'<span style="color:{MUTED_COLOR}">Results, newest first. Files are saved in'
            f" {html.escape(str(self.session.output.path))} with their recipe.</span>",
            layout=widgets.Layout(width="auto"),
        )
        self.children = [
            self.header,
            self.prompt,
            controls,
            seed_row,
            inputs_row,
            self.inputs_box,
            actions_row,
            self.error,
            self._gallery_note,
            self.gallery,
        ]

    def _build_parameters(
        self, schema: dict[str, Any], label: dict[str, str]
    ) -> tuple[widgets.Widget, widgets.Widget]:
        """The grid of the model parameters' controls (and the image count), and the seed row."""
        # Every model parameter but the three with controls of their own (the prompt box, the
        # input images, the seed with its lock) gets the control its schema entry calls for.
        self.controls: dict[str, Control] = make_controls(schema, skip=OWN_CONTROLS, style=label)
        for name, attribute in ATTRIBUTES.items():
            if name in self.controls:
                setattr(self, attribute, self.controls[name].widget)
                if self.controls[name].box is not None:
                    setattr(self, f"{attribute}_box", self.controls[name].box)

        seed = parameters(schema).get("seed", {})
        self.seed = make(
            widgets.IntText,
            value=draw_seed(),
            description=label_for("seed"),
            style=label,
            layout=widgets.Layout(width="260px"),
            tooltip=f"The seed the next Generate uses ({seed.get('minimum', 0)} to"
            f" {seed.get('maximum', SEED_MAX)})",
        )
        self.seed_lock = widgets.ToggleButton(
            value=False,
            description="Lock seed",
            icon="unlock",
            layout=widgets.Layout(width="auto"),
            tooltip=(
                "Off: after each Generate a fresh random seed goes in the box. On: the seed stays."
            ),
        )
        self.seed_lock.observe(self._on_lock, "value")
        self.count = make(
            widgets.IntSlider,
            value=1,
            min=1,
            max=MAX_IMAGES,
            description="Images",
            style=label,
            layout=widgets.Layout(width="auto"),
            tooltip="How many images one Generate makes (seeds follow on)",
        )

        controls = widgets.GridBox(
            [*(control.view for control in self.controls.values()), self.count],
            layout=widgets.Layout(
                grid_template_columns="repeat(auto-fill, minmax(240px, 1fr))",
                grid_gap="4px 16px",
                width="100%",
            ),
        )
        # The seed gets a row of its own: ten digits and the toggle do not fit in a grid column.
        seed_row = widgets.HBox(
            [self.seed, self.seed_lock],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center", width="100%"),
        )
        return controls, seed_row

    def _build_inputs(self, wrap: widgets.Layout) -> widgets.Widget:
        """The input images' row (upload, a path or URL to add) and the box that shows them."""
        self.upload = make(
            widgets.FileUpload,
            accept="image/*",
            multiple=True,
            description="Add input images",
            icon="upload",
            layout=widgets.Layout(width="auto"),
            tooltip="PNG, JPEG or WebP images to edit or use as reference",
        )
        self.upload.observe(self._on_upload, "value")
        # Colab's FileUpload brings files of 1 MB or more back empty (ipywidgets #3452): a path
        # the kernel reads, or a URL passed on as it is, works there and everywhere else.
        self.input_path = make(
            widgets.Text,
            placeholder="or a file path or image URL",
            layout=widgets.Layout(width="260px"),
            tooltip="A path on the kernel's machine (read there) or an http(s) URL (sent as it is)",
        )
        self.add_path_button = widgets.Button(
            description="Add",
            icon="plus",
            layout=widgets.Layout(width="auto"),
            tooltip="Add the image at this path or URL to the input images",
        )
        self.add_path_button.on_click(lambda _: self._guarded(self.add_typed_input))
        self.upload_note = widgets.HTML(
            f'<span style="color:{MUTED_COLOR}">{COLAB_UPLOAD_NOTE}</span>' if in_colab() else "",
            layout=widgets.Layout(width="auto"),
        )
        self.inputs_box = widgets.HBox(
            layout=widgets.Layout(flex_flow="row wrap", width="100%", align_items="flex-start")
        )
        self._no_inputs = widgets.HTML(
            f'<span style="color:{MUTED_COLOR}">No input images:'
            f" the prompt alone makes the picture."
            " Upload images, or click “Use as input” on a result, to edit.</span>",
            layout=widgets.Layout(width="auto"),
        )
        self._render_inputs()
        return widgets.HBox(
            [
                widgets.Label("Input images"),
                self.upload,
                self.input_path,
                self.add_path_button,
                self.upload_note,
            ],
            layout=wrap,
        )

    def _build_actions(self, wrap: widgets.Layout) -> widgets.Widget:
        """Generate with its cost, Cancel and the status line; the error box under them."""
        self.generate_button = widgets.Button(
            description="Generate",
            button_style="primary",
            icon="paint-brush",
            tooltip="Make images from the prompt and settings above",
            layout=widgets.Layout(width="auto"),
        )
        self.generate_button.on_click(lambda _: self._guarded(self.generate))
        self.cancel_button = widgets.Button(
            description="Cancel",
            icon="stop",
            disabled=True,
            layout=widgets.Layout(width="auto"),
            tooltip="Stop every image this panel has running",
        )
        self.cancel_button.on_click(lambda _: self._guarded(self.cancel))
        self.status = widgets.Label("Ready.", layout=widgets.Layout(width="auto"))
        # Beside Generate: what one click costs (free on the local backend; read from the model
        # object's pricing elsewhere, in the background so the panel opens at once).
        self.cost = widgets.Label("", layout=widgets.Layout(width="auto"))
        self._price = self.session.price if self.session.backend == "local" else None
        self.count.observe(lambda _: self._show_cost(), "value")
        if "output_quality" in self.controls:
            self.controls["output_quality"].widget.observe(lambda _: self._show_cost(), "value")
        self._show_cost()
        if self._price is None:
            threading.Thread(target=self._load_price, name="flux-nb-price", daemon=True).start()
        self.error = widgets.HTML("", layout=widgets.Layout(width="100%", display="none"))
        return widgets.HBox(
            [self.generate_button, self.cost, self.cancel_button, self.status], layout=wrap
        )

    # -- what the buttons do ----------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """The model parameters the controls hold, named as the API names them."""
        params: dict[str, Any] = {}
        for name, control in self.controls.items():
            if (value := control.value) is not None:
                params[name] = value
        params["seed"] = self.seed.value
        if self._inputs:
            params["input_image"] = [item.url for item, _ in self._inputs]
        return params

    def generate(self) -> list[Generation]:
        """Start images from the controls (what Generate does). Returns the Generations, or [] with
        the reason shown in the panel when the values are refused. The prompt text is kept."""
        self.clear_error()
        try:
            made = self.session.generate(self.prompt.value, self.count.value, **self.params())
        except errors.FluxError as exc:
            self.show_error(str(exc))
            return []
        gens = made if isinstance(made, list) else [made]
        if not self.seed_lock.value:  # the box holds the next seed; the one used is on the cards
            self.seed.value = draw_seed()
        self._show(gens)
        return gens

    def cancel(self) -> int:
        """Cancel every generation started from this panel that is still running;
        returns how many."""
        with self._lock:
            running = list(self._running.values())
        for gen in running:
            gen.cancel()
        return len(running)

    def add_input(self, source: Any, name: str | None = None) -> InputImage:
        """Add an input image (a path, URL, PIL image, bytes or a finished Generation) for edits."""
        if isinstance(source, Generation) and not source.done:
            raise errors.InputImageError(
                "That image is not finished yet: use it as input once it shows.",
                field="input_image",
            )
        from ..files._inputs import to_input_url

        url = to_input_url(source)
        if name is None:
            name = _input_name(source)
        item = InputImage(name, url, _input_thumbnail(source, url))
        with self._lock:
            self._inputs.append((item, _input_widget(item, self._remover(item))))
            self._render_inputs()
        return item

    def add_typed_input(self) -> InputImage | None:
        """What the Add button does: the path or URL typed beside the upload button."""
        text = self.input_path.value.strip()
        if not text:
            self.show_error("Type a file path or an http(s) image URL beside Add first.")
            return None
        self.clear_error()
        item = self.add_input(text)
        self.input_path.value = ""
        return item

    def remove_input(self, item: InputImage | int) -> None:
        """Take an input image off the list (by the InputImage or its position)."""
        with self._lock:
            if isinstance(item, int):
                del self._inputs[item]
            else:
                self._inputs = [pair for pair in self._inputs if pair[0] is not item]
            self._render_inputs()

    @property
    def inputs(self) -> tuple[InputImage, ...]:
        """The input images the next Generate sends, in order."""
        return tuple(item for item, _ in self._inputs)

    def load_history(self, limit: int = HISTORY_LIMIT) -> int:
        """Show up to `limit` images already in the output folder (newest first) after the results
        on show; they get the same buttons. Returns how many were added."""
        with self._lock:
            shown = {str(c.gen.path) for c in self.cards if c.gen.path}
        known = {str(g.path): g for g in self.session.history if g.path}
        found: list[Generation] = []
        for path in self.session.saved_images():
            if len(found) >= limit:
                break
            if str(path) in shown:
                continue
            gen = known.get(str(path)) or saved_generation(self.session, path)
            if gen is not None:
                found.append(gen)
        cards = [self._card(g) for g in found]
        with self._lock:
            self.cards.extend(cards)
            self.gallery.children = (*self.gallery.children, *cards)
        return len(cards)

    def show_error(self, message: str) -> None:
        """Show one line in plain words in the panel (never a traceback)."""
        self._error_message = message
        self.error.value = (
            f'<div role="alert" style="color:{ERROR_COLOR}; white-space:normal">⚠'
            f" {html.escape(message)}</div>"
        )
        self.error.layout.display = None

    def clear_error(self) -> None:
        self._error_message = ""
        self.error.value = ""
        self.error.layout.display = "none"

    @property
    def error_text(self) -> str:
        """The message shown in the panel, as plain text ('' when none)."""
        return self._error_message

    # -- gallery -----------------------------------------------------------------------------------

    def _show(self, gens: list[Generation]) -> None:
        """Put new generations at the top of the gallery, in their own order, and follow them."""
        cards = [self._card(g) for g in gens]
        with self._lock:
            self.cards[:0] = cards
            self.gallery.children = (*cards, *self.gallery.children)
        for gen in gens:
            self._follow(gen)

    def _card(self, gen: Generation) -> Card:
        use = card_button(
            "Input", "Use as input: add this image to the input images, to edit it", "level-up"
        )
        use.disabled = gen.status != SUCCEEDED
        use.on_click(lambda _: self._guarded(self.add_input, gen))
        card = Card(gen, on_new=self._on_new, extra_buttons=[use], thumbnail_size=THUMBNAIL_SIZE)
        gen.on_change(lambda g: setattr(use, "disabled", g.status != SUCCEEDED))
        return card

    def _on_new(self, gen: Generation) -> None:
        """A card's Reproduce or New seed made `gen`: it joins the gallery."""
        self._show([gen])

    def _follow(self, gen: Generation) -> None:
        with self._lock:
            if not gen.done:
                self._running[id(gen)] = gen
        gen.on_change(self._changed)
        self._refresh_status()

    def _changed(self, gen: Generation) -> None:
        """Runs on runner threads: updates the status line and Cancel, widget state only."""
        if gen.done:
            with self._lock:
                self._running.pop(id(gen), None)
        self._refresh_status()

    def _load_price(self) -> None:
        self._price = self.session.price
        self._show_cost()

    def _show_cost(self) -> None:
        if self._price is None:
            self.cost.value = "Cost: reading the price…"
            return
        quality = self.params().get("output_quality", "standard")
        text = self._price.describe_images([quality] * self.count.value)
        self.cost.value = f"Cost: {text}"

    def _refresh_status(self) -> None:
        with self._lock:
            running = list(self._running.values())
        counts: dict[str, int] = {}
        for gen in running:
            counts[gen.status] = counts.get(gen.status, 0) + 1
        if running:
            text = f"{len(running)} running: " + ", ".join(
                f"{n} {status}" for status, n in counts.items()
            )
        else:
            text = "Ready."
        if self.status.value != text:
            self.status.value = text
        self.cancel_button.disabled = not running

    # -- inputs ------------------------------------------------------------------------------------

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        self.clear_error()
        refused, empty = [], []
        for name, content in uploaded_files(files):
            if not content:
                empty.append(name)
                continue
            try:
                self.add_input(content, name=name)
            except errors.FluxError:
                refused.append(name)
            except Exception:
                log.exception("reading the upload %s failed", name)
                refused.append(name)
        # The bytes now live in the panel;
        # cleared here they are not saved in the notebook's widget state.
        clear_upload(self.upload)
        problems = []
        if empty:
            problems.append(
                f"{', '.join(empty)}: the upload came back empty (in Colab, files of 1 MB or more"
                " do). Type its path or URL beside Add instead."
            )
        if refused:
            problems.append(
                f"{', '.join(refused)}: not an image flux-nb can read. Use PNG, JPEG or WebP files."
            )
        if problems:
            self.show_error(" ".join(problems))

    def _remover(self, item: InputImage) -> Callable[[Any], None]:
        return lambda _: self._guarded(self.remove_input, item)

    def _render_inputs(self) -> None:
        self.inputs_box.children = [w for _, w in self._inputs] or [self._no_inputs]

    # -- seed -------------------------------------------------------------------------------------

    def _on_lock(self, change: dict[str, Any]) -> None:
        self.seed_lock.icon = "lock" if change["new"] else "unlock"

    # -- errors -----------------------------------------------------------------------------------

    def _guarded(self, action: Callable[..., Any], *args: Any) -> Any:
        """Run a button's action; any failure becomes one line in the panel, never a traceback."""
        try:
            return action(*args)
        except errors.FluxError as exc:
            self.show_error(str(exc))
        except Exception as exc:
            log.exception("panel action %s failed", getattr(action, "__name__", action))
            self.show_error(
                f"flux-nb hit an internal error ({type(exc).__name__}: {exc})."
                f" Your settings are kept;"
                " please report this."
            )
        return None


# -- history from the output folder ---------------------------------------------------------------


def saved_generation(session: Session, path: Path) -> Generation | None:
    """A finished Generation for an image flux-nb saved earlier (None when the file carries no
    recipe), so the gallery shows it with the same card and buttons as a new one."""
    try:
        return session.load(path)
    except (errors.FluxError, KeyError, TypeError, OSError):
        return None


# -- small pieces ---------------------------------------------------------------------------------


def _header_html(session: Session) -> str:
    """The model and a short backend badge; the whole backend line (printed once per kernel,
    see session.announce) is its tooltip. Never the key, never URL userinfo."""
    parts = urlsplit(session.base_url)
    where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    if session.backend == "local" and session.engine and not is_stand_in(session.engine):
        badge = "local FLUX.2 Klein"
        tip = f"The local server at {where} makes the images: {session.engine}."
    elif session.backend == "local":
        badge = "offline preview engine (not FLUX)"
        tip = (
            f"The local offline stand-in at {where} makes the images."
            f" Set OXEN_API_KEY for the real model."
        )
    elif session.backend == "hosted":
        badge, tip = "Oxen.ai hosted", f"Oxen.ai's hosted API at {where}."
    else:
        badge, tip = "custom server", f"An Oxen-compatible server at {where}."
    return (
        f'<b>FLUX.2 Klein 4B</b> <span title="{html.escape(tip, quote=True)}"'
        f' style="color:{MUTED_COLOR};'
        f" border:1px solid var(--jp-border-color2, #ddd); border-radius:8px; padding:0 6px;"
        f' font-size:var(--jp-ui-font-size0, 11px)">{html.escape(badge)}</span>'
    )


def _input_name(source: Any) -> str:
    if isinstance(source, Generation):
        return f"seed {source.seed}"
    if isinstance(source, (str, Path)):
        text = str(source)
        return "image" if text.startswith("data:") else Path(urlsplit(text).path).name or text
    return "image"


def _input_thumbnail(source: Any, url: str) -> bytes | None:
    """A small picture of an input image; None for an http(s) URL (the panel does not fetch it)."""
    from ..files._thumbnail import make_thumbnail

    try:
        if isinstance(source, Generation):
            return source.thumbnail(INPUT_THUMBNAIL_SIZE)
        if not url.startswith("data:"):
            return None
        from PIL import Image

        with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as img:
            return make_thumbnail(img, INPUT_THUMBNAIL_SIZE)
    except Exception:  # a preview is a nicety: the input itself was already checked
        return None


def _input_widget(item: InputImage, on_remove: Callable[[Any], None]) -> widgets.VBox:
    if item.thumbnail:
        from ..files._thumbnail import widget_format

        picture: widgets.Widget = widgets.Image(
            value=item.thumbnail,
            format=widget_format(item.thumbnail),
            layout=widgets.Layout(max_width=f"{INPUT_THUMBNAIL_SIZE}px"),
        )
    else:
        picture = widgets.HTML(
            f'<a href="{html.escape(item.url, quote=True)}"'
            f' target="_blank">{html.escape(item.name)}</a>'
        )
    name = widgets.Label(
        item.name, layout=widgets.Layout(max_width=f"{INPUT_THUMBNAIL_SIZE + 8}px")
    )
    remove = widgets.Button(
        description="Remove",
        icon="times",
        layout=widgets.Layout(width=f"{INPUT_THUMBNAIL_SIZE + 8}px"),
        tooltip=f"Remove {item.name} from the input images",
    )
    remove.on_click(on_remove)
    return widgets.VBox(
        [picture, name, remove],
        layout=widgets.Layout(
            width="auto",
            padding="4px",
            margin="2px",
            border="1px solid var(--jp-border-color2, #ddd)",
        ),
    )


__all__ = ["InputImage", "Panel", "saved_generation"]
