"""One code path for ipywidgets 7.7 (Colab) and 8: the adapter, the icons, the CSS fallbacks.

Marked `colab`: it runs in .venv-colab (ipywidgets 7.7.1) as well as in the main environment
(ipywidgets 8), so each helper is checked against the version it adapts.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import ipywidgets
import pytest

from flux_nb.notebook import _card_html as card_html
from flux_nb.notebook import _widgets_compat as widgets_compat
from flux_nb.notebook._cards import Card, _shared
from flux_nb.notebook._panel import Panel
from flux_nb.notebook._widgets_compat import (
    IPYWIDGETS_MAJOR,
    clear_upload,
    make,
    tooltip_of,
    uploaded_files,
)

pytestmark = pytest.mark.colab

PACKAGE = Path(widgets_compat.__file__).parent


def test_a_text_widgets_tooltip_is_set_and_read_under_either_name():
    box = make(ipywidgets.Textarea, value="x", tooltip="what to type")
    assert tooltip_of(box) == "what to type"
    name = "tooltip" if IPYWIDGETS_MAJOR >= 8 else "description_tooltip"
    assert getattr(box, name) == "what to type"  # the trait this version sends to the page
    button = make(ipywidgets.Button, tooltip="press")  # a button has `tooltip` in both
    assert button.tooltip == "press" and tooltip_of(button) == "press"


def test_styles_carry_only_what_this_ipywidgets_has():
    shared = _shared()
    html = ipywidgets.HTML("x", style=shared["file_style"])  # a TraitError here was Colab's bug
    button = ipywidgets.Button(style=shared["button_style"])
    if IPYWIDGETS_MAJOR >= 8:
        assert html.style.font_size == card_html.SMALL_FONT
        assert button.style.font_size == card_html.SMALL_FONT
    else:
        assert "font_size" not in button.style.keys


@pytest.mark.parametrize(
    "value",
    [
        (  # ipywidgets 8: a tuple of dicts
            {"name": "a.png", "type": "image/png", "size": 2, "content": memoryview(b"\x01\x02")},
            {"name": "b.jpg", "type": "image/jpeg", "size": 1, "content": memoryview(b"\x03")},
        ),
        {  # ipywidgets 7: name -> {metadata, content}
            "a.png": {"metadata": {"name": "a.png", "size": 2}, "content": b"\x01\x02"},
            "b.jpg": {"metadata": {"name": "b.jpg", "size": 1}, "content": b"\x03"},
        },
    ],
    ids=["ipywidgets-8", "ipywidgets-7"],
)
def test_uploaded_files_reads_both_shapes_of_a_file_uploads_value(value):
    assert uploaded_files(value) == [("a.png", b"\x01\x02"), ("b.jpg", b"\x03")]
    assert uploaded_files(()) == [] and uploaded_files({}) == []


def test_clear_upload_empties_the_widget_and_says_so_once(session):
    panel = Panel(session=session, history=False)
    seen = []
    panel.upload.observe(lambda change: seen.append(change["new"]), "value")
    clear_upload(panel.upload)
    assert uploaded_files(panel.upload.value) == []
    if IPYWIDGETS_MAJOR < 8:
        assert panel.upload.data == [] and panel.upload.metadata == []


def _font_awesome_4_names() -> set[str] | None:
    """The icon names of the Font Awesome 4.7 that ipywidgets 7's page draws (nbclassic's copy,
    installed with ipywidgets 7's widgetsnbextension); None where it is not installed."""
    for package in ("nbclassic", "notebook"):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        css = Path(spec.origin).parent / "static/components/font-awesome/css/font-awesome.css"
        if css.is_file():
            return set(re.findall(r"\.fa-([a-z0-9-]+):before", css.read_text()))
    return None


def _icons(widget) -> set[str]:
    found = {widget.icon} if getattr(widget, "icon", "") else set()
    for child in getattr(widget, "children", ()):
        found |= _icons(child)
    return found


def test_every_icon_is_a_font_awesome_4_name(session):
    names = _font_awesome_4_names()
    if names is None:
        pytest.skip("Font Awesome 4's CSS comes with ipywidgets 7's page: runs in .venv-colab")
    panel = Panel(session=session, history=False)
    gen = session.generate("an icon check", seed=1, num_inference_steps=1)
    card = panel._card(gen)
    used = _icons(panel) | _icons(card) | {"lock", "unlock"}  # the seed lock's two faces
    used |= set(re.findall(r"fa fa-([a-z0-9-]+)", card_html.file_button(None, "Open")))
    assert {"repeat", "random", "copy", "stop", "upload", "plus"} <= used
    assert used - names == set()
    gen.wait(30)


VAR = re.compile(r"var\(\s*(--[a-z0-9-]+)\s*(?:,\s*([^)]+))?\)")


def _contrast(a: str, b: str) -> float:
    def luminance(hex_colour: str) -> float:
        h = hex_colour.lstrip("#")
        h = "".join(c * 2 for c in h) if len(h) == 3 else h
        channels = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_css_variable_has_a_fallback_that_reads_on_white():
    """VS Code's renderer forces a white background; where a --jp-* variable is missing the
    fallback is drawn, so every text colour must read on white (WCAG AA, 4.5:1) and on the
    placeholder's box colour."""
    uses = {
        (name, fallback)
        for path in PACKAGE.rglob("*.py")
        for name, fallback in VAR.findall(path.read_text(encoding="utf-8"))
    }
    assert uses, "no CSS variables found: the pattern is out of date"
    assert {name for name, fallback in uses if not fallback.strip()} == set()
    for name, fallback in uses:
        if "font-color" in name or "error-color" in name or "success-color" in name:
            assert _contrast(fallback.strip(), "#fff") >= 4.5, (name, fallback)
    box = VAR.match(card_html.BOX_COLOR).group(2).strip()
    for on_box in (card_html.MUTED_COLOR, card_html.ERROR_COLOR):  # the placeholder's text
        assert _contrast(VAR.match(on_box).group(2).strip(), box) >= 4.5, (on_box, box)


def test_a_card_is_built_and_rendered_under_this_ipywidgets(session):
    gen = session.generate("a card", seed=2, num_inference_steps=1)
    card = Card(gen)
    gen.wait(30)
    card.refresh()
    bundle = card._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == card.model_id
    assert widgets_compat.widget_by_id(card.model_id) is card
