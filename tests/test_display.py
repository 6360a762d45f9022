"""jobs/_display.py: a Generation shows itself as text and PNG with no widget library loaded; the
live card joins in only once the view layer (notebook/_cards.py) has registered it."""

import base64
import io

from helpers import run_fresh
from PIL import Image

from flux_nb.jobs import _display as display

WIDGET_FREE = r"""
import json, sys, tempfile
from flux_nb.jobs._sessions import Session
from flux_nb.jobs import _display as display
with tempfile.TemporaryDirectory() as out:
    s = Session(output_dir=out, announce=None)
    try:
        g = s.generate(
            "a small red boat", seed=3, num_inference_steps=2, aspect_ratio="1:1"
        ).wait(60)
        bundle = g._repr_mimebundle_()
        forced = display.generation_bundle(g, widget=True)  # no view registered: nothing to add
    finally:
        s.close()
print(json.dumps({"keys": sorted(bundle), "forced": sorted(forced), "text": bundle["text/plain"],
                  "loaded": sorted(m for m in ("ipywidgets", "flux_nb.notebook._cards",
                                               "flux_nb.notebook._panel", "flux_nb.notebook._magic")
                                   if m in sys.modules)}))
"""


def test_a_generation_displays_as_text_and_png_without_any_view_loaded() -> None:
    found = run_fresh(WIDGET_FREE, timeout=120)
    assert found["loaded"] == [], "the core imported a view"
    assert found["keys"] == found["forced"] == ["image/png", "text/plain"]
    assert found["text"] == "'a small red boat'\n" + found["text"].split("\n", 1)[1]
    assert found["text"].endswith("\ndone")


def test_the_view_layer_registers_the_live_card(session) -> None:
    from flux_nb.notebook import _cards as cards  # noqa: F401  (importing it registers the card)

    gen = session.generate("a lighthouse", seed=5, num_inference_steps=2, aspect_ratio="1:1").wait(
        30
    )
    bundle = display.generation_bundle(gen, widget=True)
    assert set(bundle) == {"text/plain", "image/png", display.WIDGET_VIEW}
    assert Image.open(io.BytesIO(base64.b64decode(bundle["image/png"]))).size[0] <= 320
    assert set(display.generation_bundle(gen, widget=False)) == {"text/plain", "image/png"}


def test_a_photographs_thumbnail_displays_as_jpeg(session) -> None:
    """Truecolour results (every FLUX.2 Klein picture) show as image/jpeg: smaller in the saved
    notebook than a palette PNG and without its banding; flat art stays image/png."""
    gen = session.generate(
        "a lighthouse", seed=5, num_inference_steps=2, output_quality="high"
    ).wait(30)
    bundle = display.generation_bundle(gen, widget=False)
    assert set(bundle) == {"text/plain", "image/jpeg"}
    shown = Image.open(io.BytesIO(base64.b64decode(bundle["image/jpeg"])))
    assert shown.format == "JPEG" and max(shown.size) == 320
    assert base64.b64decode(bundle["image/jpeg"]) == gen.thumbnail()
