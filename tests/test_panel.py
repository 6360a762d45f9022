"""The widgets panel driven from Python as a person would: set controls, click, read the gallery."""

import base64
import copy
import datetime as dt
import io
import json
import re
import sys
import types
import warnings

import ipywidgets
import pytest
from helpers import SERVER_KEY, pixels_equal, png_bytes
from PIL import Image

from flux_nb.core._config import Settings
from flux_nb.core._recipe import SEED_MAX, bundled_schema
from flux_nb.files._inputs import ref_of
from flux_nb.jobs._sessions import Session
from flux_nb.notebook._cards import Card, card_width, wait_settled
from flux_nb.notebook._panel import THUMBNAIL_SIZE, Panel
from flux_nb.notebook._widgets_compat import IPYWIDGETS_MAJOR, tooltip_of, uploaded_files
from flux_nb.server._embedded import LocalServer

pytestmark = pytest.mark.colab  # runs in Colab's package set too (.venv-colab)

SECRET = SERVER_KEY  # the conftest's keyed_server wants it


@pytest.fixture
def panel(session):
    return Panel(session=session, history=False)


def finish(panel, timeout=10):
    for card in panel.cards:
        if not card.gen.done:
            card.gen._done.wait(timeout)
    assert wait_settled(timeout)


def button(box, label):
    """The button with this visible label inside a widget tree."""
    if isinstance(box, ipywidgets.Button) and box.description == label:
        return box
    for child in getattr(box, "children", ()):
        found = button(child, label)
        if found is not None:
            return found
    return None


def pick_file(upload, name, data, kind="image/png"):
    """What the front end does to a FileUpload when a person picks a file (ipywidgets 8: value
    becomes a tuple of dicts; 7: the metadata and data lists are filled and the counter steps)."""
    if IPYWIDGETS_MAJOR >= 8:
        upload.value = (
            {
                "name": name,
                "type": kind,
                "size": len(data),
                "content": memoryview(data),
                "last_modified": dt.datetime.now(dt.timezone.utc),
            },
        )
        return
    upload.set_trait("metadata", [{"name": name, "type": kind, "size": len(data)}])
    upload.set_trait("data", [data])
    upload._counter += 1


def test_controls_follow_the_schema_and_have_labels(panel):
    props = bundled_schema()["properties"]
    assert [v for _, v in panel.aspect_ratio.options] == props["aspect_ratio"]["enum"]
    assert panel.aspect_ratio.value == props["aspect_ratio"]["default"]
    assert [v for _, v in panel.quality.options] == props["output_quality"]["enum"]
    assert [v for _, v in panel.format.options] == props["output_format"]["enum"]
    assert (panel.steps.min, panel.steps.max, panel.steps.value) == (1, 50, 28)
    assert (panel.guidance.min, panel.guidance.max, panel.guidance.value) == (0.0, 10.0, 2.0)
    assert (panel.count.min, panel.count.max) == (1, 4)
    assert list(panel.controls) == [
        "aspect_ratio",
        "output_quality",
        "output_format",
        "num_inference_steps",
        "guidance_scale",
    ]
    for control in (
        panel.prompt,
        panel.aspect_ratio,
        panel.quality,
        panel.format,
        panel.steps,
        panel.guidance,
        panel.seed,
        panel.seed_lock,
        panel.count,
        panel.upload,
        panel.generate_button,
        panel.cancel_button,
    ):
        assert control.description, control
    assert (
        panel.generate_button.description == "Generate"
        and panel.cancel_button.description == "Cancel"
    )
    assert panel.cancel_button.disabled  # nothing running yet


def the_widgets(box):
    """Every widget in a widget tree, the box itself first."""
    found = [box]
    for child in getattr(box, "children", ()):
        found.extend(the_widgets(child))
    return found


@pytest.fixture
def narrower_schema(session, monkeypatch):
    """The session's model schema as a live one might differ from the bundled copy: other ranges
    and choices, and a parameter flux-nb has never heard of."""
    schema = copy.deepcopy(bundled_schema())
    props = schema["properties"]
    props["num_inference_steps"].update(maximum=12, default=8)
    props["guidance_scale"]["maximum"] = 5.0
    props["aspect_ratio"].update(enum=["1:1", "4:3"], default="4:3")
    props["negative_prompt"] = {"type": "string", "description": "What to keep out."}
    monkeypatch.setattr(session.catalog, "schema", schema)  # what a live read of the API gives
    return schema


def test_the_controls_are_made_from_the_sessions_schema(session, narrower_schema):
    panel = Panel(session=session, history=False)
    assert list(panel.controls) == [
        "aspect_ratio",
        "output_quality",
        "output_format",
        "num_inference_steps",
        "guidance_scale",
        "negative_prompt",
    ]
    assert [v for _, v in panel.aspect_ratio.options] == ["1:1", "4:3"]
    assert panel.aspect_ratio.value == "4:3"
    assert (panel.steps.max, panel.steps.value, panel.steps_box.max) == (12, 8, 12)
    assert (panel.guidance.max, panel.guidance_box.max) == (5.0, 5.0)
    # The parameter no panel code names has a control in the panel, labelled from its name and
    # explained by the schema; the Recipe cannot carry it yet, so it says so and is not sent.
    extra = panel.controls["negative_prompt"].widget
    assert extra in the_widgets(panel)
    assert extra.description == "Negative prompt" and "What to keep out" in tooltip_of(extra)
    assert extra.disabled and "cannot send it yet" in tooltip_of(extra)
    assert "negative_prompt" not in panel.params()


def test_a_value_past_the_schemas_range_is_never_sent(session, narrower_schema):
    panel = Panel(session=session, history=False)
    panel.prompt.value = "a lighthouse"
    panel.guidance_box.value = 9  # typed into the box: held to the schema's maximum
    assert panel.guidance.value == 5.0
    panel.guidance.max = 20  # code that moves the widget's bound gets no further
    panel.guidance.value = 7
    assert panel.generate() == []
    assert "guidance_scale" in panel.error_text and "5.0" in panel.error_text
    assert session.history == [] and panel.cards == []

    panel.guidance.value = 4.5
    panel.steps.value = 12
    (gen,) = panel.generate()
    finish(panel)
    assert gen.status == "succeeded"
    assert (gen.recipe.aspect_ratio, gen.recipe.num_inference_steps) == ("4:3", 12)
    assert gen.recipe.guidance_scale == 4.5


def test_the_header_says_the_backend_in_a_badge_and_the_gallery_is_a_grid(panel, session):
    # The whole backend line is printed once per kernel; the panel does not say it again.
    assert session.describe() not in panel.header.value
    assert "offline preview engine (not FLUX)" in panel.header.value
    assert isinstance(panel.gallery, ipywidgets.GridBox)
    width = card_width(THUMBNAIL_SIZE)
    assert panel.gallery.layout.grid_template_columns == f"repeat(auto-fill, {width}px)"
    assert 3 * width + 2 * 8 <= 1100  # three cards a row in the panel at its widest


def test_generate_puts_the_asked_seed_in_the_gallery_and_keeps_the_prompt(panel, session):
    panel.prompt.value = "a red fox in snow"
    panel.aspect_ratio.value = "1:1"
    panel.format.value = "webp"
    panel.steps_box.value = 6  # the box and the slider are one value
    panel.guidance.value = 3.5
    panel.seed.value = 1234
    panel.seed_lock.value = True
    panel.count.value = 2
    panel.generate_button.click()
    assert panel.prompt.value == "a red fox in snow"
    assert panel.error_text == ""
    assert len(panel.gallery.children) == 2 and panel.gallery.children[0] is panel.cards[0]
    finish(panel)
    first, second = (c.gen for c in panel.cards)
    assert (first.seed, second.seed) == (1234, 1235)
    assert first.status == "succeeded" and first.path.exists() and first.path.suffix == ".webp"
    recipe = first.recipe
    assert (recipe.aspect_ratio, recipe.num_inference_steps, recipe.guidance_scale) == (
        "1:1",
        6,
        3.5,
    )
    assert first.image.size[0] == first.image.size[1]
    assert len(panel.cards[0].preview.value) > 0  # the thumbnail is on the card
    assert panel.seed.value == 1234  # locked: kept for the next click
    assert panel.status.value == "Ready." and panel.cancel_button.disabled
    assert all(any(g is c.gen for g in session.history) for c in panel.cards)

    panel.seed_lock.value = False
    panel.count.value = 1
    panel.generate_button.click()
    # unlocked: the seed in the box is used, then a fresh one is drawn for the next click
    assert panel.cards[0].gen.seed == 1234 and panel.seed.value != 1234
    finish(panel)
    newest = panel.cards[0].gen
    assert [c.gen for c in panel.cards[1:]] == [first, second]  # newest first
    assert panel.prompt.value == "a red fox in snow"
    assert newest.status == "succeeded"


def test_reproduce_in_the_gallery_gives_the_same_pixels(panel, session):
    panel.prompt.value = "a cabin by a lake"
    panel.steps.value = 4
    panel.seed.value = 99
    (gen,) = panel.generate()
    finish(panel)
    panel.cards[0].reproduce_button.click()
    assert len(panel.cards) == 2
    again = panel.cards[0].gen
    assert again is not gen and again.seed == 99 and any(g is again for g in session.history)
    finish(panel)
    assert again.status == "succeeded" and again.path != gen.path
    assert pixels_equal(gen.image, again.image)
    button(panel.cards[1], "Vary").click()
    finish(panel)
    other = panel.cards[0].gen
    assert other.seed != 99 and not pixels_equal(gen.image, other.image)
    assert len(panel.gallery.children) == 3


def test_out_of_range_values_are_refused_in_the_panel(panel):
    panel.prompt.value = "a lighthouse"
    panel.seed_lock.value = True
    panel.seed.value = SEED_MAX + 1  # IntText takes it; the panel must not
    panel.generate_button.click()
    assert panel.cards == [] and "seed" in panel.error_text and "4294967295" in panel.error_text
    assert "Traceback" not in panel.error.value and panel.error.layout.display != "none"
    panel.seed.value = -1
    assert panel.generate() == [] and "seed" in panel.error_text

    panel.steps.value = 99  # the widget's bounds come from the schema
    assert panel.steps.value == 50 and panel.steps_box.value == 50
    panel.guidance_box.value = -3
    assert panel.guidance.value == 0.0

    panel.seed.value = 5
    panel.guidance.max = 20  # a bad value injected past the widget's bounds
    panel.guidance.value = 15
    assert panel.generate() == []
    assert "guidance_scale" in panel.error_text and "10" in panel.error_text
    panel.guidance.value = 2

    panel.prompt.value = "   "
    assert panel.generate() == [] and "prompt" in panel.error_text
    assert panel.cards == [] and panel.gallery.children == ()

    panel.prompt.value = "a lighthouse"
    panel.steps.value = 2
    assert len(panel.generate()) == 1
    assert panel.error_text == "" and panel.error.layout.display == "none"
    finish(panel)


def test_uploaded_images_go_into_the_recipe_and_can_be_removed(panel):
    data = png_bytes((64, 48), (200, 40, 40))
    pick_file(panel.upload, "cat.png", data)
    assert [i.name for i in panel.inputs] == ["cat.png"]
    assert (
        uploaded_files(panel.upload.value) == []
    )  # the bytes are not kept in the notebook's widget state
    item_box = panel.inputs_box.children[0]
    assert (
        isinstance(item_box.children[0], ipywidgets.Image) and len(item_box.children[0].value) > 0
    )
    assert item_box.children[0].format == "png"  # one flat colour: a palette PNG
    url = panel.inputs[0].url
    assert base64.b64decode(url.partition(",")[2]) == data

    pick_file(panel.upload, "notes.txt", b"not an image", "text/plain")
    assert "notes.txt" in panel.error_text and len(panel.inputs) == 1

    panel.prompt.value = "make it blue"
    panel.steps.value = 3
    (gen,) = panel.generate()
    assert gen.recipe.input_image == (ref_of(data),)  # by hash; the bytes kept in .inputs/
    assert panel.session.output.inputs.url(gen.recipe.input_image[0]) == url  # what is sent
    finish(panel)
    assert gen.status == "succeeded"

    button(panel.inputs_box, "Remove").click()
    assert panel.inputs == () and panel.inputs_box.children[0] is panel._no_inputs
    (plain,) = panel.generate()
    assert plain.recipe.input_image == ()
    finish(panel)


def test_a_typed_path_is_read_by_the_kernel_and_a_url_is_passed_on(panel, tmp_path):
    data = png_bytes((64, 48), (20, 90, 200))
    (tmp_path / "big photo.png").write_bytes(data)
    panel.input_path.value = str(tmp_path / "big photo.png")
    panel.add_path_button.click()
    assert [i.name for i in panel.inputs] == ["big photo.png"] and panel.input_path.value == ""
    assert base64.b64decode(panel.inputs[0].url.partition(",")[2]) == data  # the file's bytes

    url = "https://example.com/pictures/cat.jpg?size=large"
    panel.input_path.value = url
    panel.add_path_button.click()
    assert panel.inputs[1].url == url and panel.inputs[1].name == "cat.jpg"  # never fetched here

    panel.input_path.value = str(tmp_path / "missing.png")
    panel.add_path_button.click()
    assert "missing.png" in panel.error_text and "not found" in panel.error_text
    assert len(panel.inputs) == 2
    panel.input_path.value = "  "
    panel.add_path_button.click()
    assert "Type a file path" in panel.error_text


def test_in_colab_the_panel_says_big_uploads_arrive_empty_and_names_the_path_field(
    session, monkeypatch
):
    assert panel_note(Panel(session=session, history=False)) == ""  # not Colab: nothing said
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    colab = Panel(session=session, history=False)
    assert "1 MB" in panel_note(colab) and "path or URL" in panel_note(colab)
    pick_file(colab.upload, "huge.png", b"")  # what Colab's FileUpload gives for 1 MB or more
    assert colab.inputs == ()
    assert "huge.png" in colab.error_text and "path or URL beside Add" in colab.error_text


def panel_note(panel):
    return re.sub("<[^>]+>", "", panel.upload_note.value)


def test_an_uploaded_photograph_shows_as_a_jpeg_thumbnail(panel):
    grain = [Image.effect_noise((400, 300), sigma) for sigma in (30, 50, 70)]
    photo = io.BytesIO()
    Image.merge("RGB", grain).save(photo, format="JPEG", quality=90)
    pick_file(panel.upload, "street.jpg", photo.getvalue(), "image/jpeg")
    picture = panel.inputs_box.children[0].children[0]
    assert isinstance(picture, ipywidgets.Image) and picture.format == "jpeg"
    assert Image.open(io.BytesIO(bytes(picture.value))).size == (96, 72)


def test_use_as_input_feeds_a_result_back(panel):
    panel.prompt.value = "a teapot"
    panel.steps.value = 3
    panel.generate()
    finish(panel)
    card = panel.cards[0]
    use = button(card, "Input")
    assert use is not None and not use.disabled
    use.click()
    assert len(panel.inputs) == 1 and panel.inputs[0].name == f"seed {card.gen.seed}"
    assert base64.b64decode(panel.inputs[0].url.partition(",")[2]) == card.gen.data
    panel.prompt.value = "the teapot in gold"
    (edit,) = panel.generate()
    assert edit.recipe.input_image == (ref_of(card.gen.data),)
    finish(panel)
    assert edit.status == "succeeded"
    panel.remove_input(0)
    assert panel.inputs == ()


def test_history_from_the_output_folder(session, tmp_path):
    made = [
        session.generate("old harbour", seed=s, num_inference_steps=2).wait(10) for s in (11, 12)
    ]
    (session.output.path / "stranger.png").write_bytes(
        png_bytes((64, 48), (200, 40, 40))
    )  # no recipe: left out
    later = Session(
        "local", output_dir=session.output.path, settings=Settings(step_delay=0.0), announce=None
    )
    try:
        panel = Panel(session=later)
        assert sorted(c.gen.seed for c in panel.cards) == [11, 12]
        assert {c.gen.path for c in panel.cards} == {g.path for g in made}
        card = panel.cards[0]
        assert card.gen.done and len(card.preview.value) > 0 and not button(card, "Input").disabled
        card.reproduce_button.click()
        finish(panel)
        again = panel.cards[0].gen
        assert again.seed == card.gen.seed and pixels_equal(again.image, card.gen.image)
        assert len(Panel(session=later, history=1).cards) == 1
        assert Panel(session=later, history=False).cards == []
    finally:
        later.close()


def test_cancel_stops_what_the_panel_started(keyed_server, tmp_path):
    s = Session(
        "hosted",
        api_key=SECRET,
        base_url=keyed_server.url,
        output_dir=tmp_path,
        settings=Settings(),
        announce=None,
    )
    try:
        panel = Panel(session=s, history=False)
        panel.prompt.value = "a very slow painting"
        panel.steps.value = 50
        panel.count.value = 2
        panel.generate_button.click()
        assert not panel.cancel_button.disabled and "running" in panel.status.value
        panel.cancel_button.click()
        finish(panel)
        assert [c.gen.status for c in panel.cards] == ["cancelled", "cancelled"]
        assert panel.status.value == "Ready." and panel.cancel_button.disabled
        assert list(tmp_path.glob("*.png")) == []
    finally:
        s.close()


def _widget_tree(widget, seen):
    if widget.model_id in seen:
        return
    seen[widget.model_id] = widget
    for name in widget.keys:
        value = getattr(widget, name, None)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, ipywidgets.Widget):
                _widget_tree(item, seen)


def _state_text(widget):
    def default(value):
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("latin-1")
        return repr(value)

    return json.dumps(widget.get_state(), default=default)


def test_the_api_key_never_reaches_widget_state(keyed_server, tmp_path):
    s = Session(
        "hosted",
        api_key=SECRET,
        base_url=keyed_server.url,
        output_dir=tmp_path,
        settings=Settings(),
        announce=None,
    )
    try:
        panel = Panel(session=s)
        panel.prompt.value = "a key under a doormat"
        panel.steps.value = 2
        pick_file(panel.upload, "door.png", png_bytes((64, 48), (200, 40, 40)))
        panel.generate_button.click()
        finish(panel)
        gen = panel.cards[0].gen
        assert gen.status == "succeeded", gen.reason  # the key was used: the server wants it
        button(panel.cards[0], "Input").click()
        panel.cards[0].copy_button.click()
        panel.seed.value = -5
        panel.generate()  # an error message in the page too
        seen = {}
        _widget_tree(panel, seen)
        assert any(isinstance(w, Card) for w in seen.values()) and len(seen) > 40
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            everything = list(ipywidgets.Widget.widgets.values())
        for widget in [*seen.values(), *everything]:
            assert SECRET not in _state_text(widget), widget
        assert SECRET not in repr(panel) and SECRET not in panel.header.value
    finally:
        s.close()


def test_a_failed_generation_is_told_on_its_card_not_as_a_traceback(tmp_path):
    with LocalServer(api_key="another-key") as server:
        s = Session(
            "hosted",
            api_key=SECRET,
            base_url=server.url,
            output_dir=tmp_path,
            settings=Settings(),
            announce=None,
        )
        try:
            panel = Panel(session=s, history=False)
            panel.prompt.value = "wrong key"
            (gen,) = panel.generate()
            finish(panel)
            assert gen.status == "failed"
            assert (
                "key" in panel.cards[0].status_html.lower()
                and "Traceback" not in panel.cards[0].status_html
            )
            assert panel.status.value == "Ready."
        finally:
            s.close()


def test_internal_errors_in_a_click_become_one_line(panel, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr(panel.session, "generate", broken)
    panel.prompt.value = "anything"
    panel.generate_button.click()
    assert "TypeError: boom" in panel.error_text and "Traceback" not in panel.error.value
