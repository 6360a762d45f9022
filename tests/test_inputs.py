"""Input images: kept once by content hash in <output>/.inputs/, named `sha256:<hex>` in recipes,
sent to the API as the very data: URI they came from; older recipes holding data: URIs still work.

Everything runs on real files and, where something is sent, the real local server over loopback,
with the requests recorded by an httpx event hook (what the API is sent, byte for byte).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from helpers import pixels
from PIL import Image, ImageDraw

from flux_nb.core import _errors as errors
from flux_nb.core._config import Settings
from flux_nb.core._recipe import Recipe
from flux_nb.files._inputs import INPUTS_DIR, InputStore, MissingInput, is_ref, ref_of, to_input_url
from flux_nb.files._metadata import embed_recipe, read_recipe
from flux_nb.jobs._sessions import JOURNAL_NAME, Session

FAST = {"num_inference_steps": 4, "aspect_ratio": "1:1"}


def picture(path: Path, colour: str = "white", fmt: str | None = None) -> Path:
    image = Image.new("RGB", (96, 64), colour)
    ImageDraw.Draw(image).ellipse((20, 10, 70, 60), fill="orange")
    image.save(path, format=fmt)
    return path


def uri_of(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


class Recorded:
    """A session on the embedded server whose POST bodies are kept: what the API was sent."""

    def __init__(self, out: Path):
        self.bodies: list[dict] = []

        def keep(request: httpx.Request) -> None:
            if request.method == "POST":
                self.bodies.append(json.loads(request.content))

        http = httpx.Client(event_hooks={"request": [keep]})
        self.session = Session(
            "local", output_dir=out, settings=Settings(step_delay=0.0), announce=None, http=http
        )

    def __enter__(self) -> Recorded:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    def sent_inputs(self) -> list[list[str]]:
        return [b.get("input_image", []) for b in self.bodies]


def submits(out: Path) -> list[dict]:
    lines = (out / JOURNAL_NAME).read_text("utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("op") == "submit"]


# -- the store -------------------------------------------------------------------------------------


def test_an_image_is_kept_once_under_its_hash_and_gives_back_the_same_data_uri(tmp_path):
    store = InputStore(tmp_path / "out" / INPUTS_DIR)
    png = picture(tmp_path / "a.png")
    uri = uri_of(png)
    ref = store.keep(uri)
    assert ref == ref_of(png.read_bytes()) and is_ref(ref)
    (kept,) = store.folder.iterdir()
    assert kept.name == f"{ref[7:23]}.png" and kept.read_bytes() == png.read_bytes()
    first = kept.stat()
    assert store.keep(uri) == ref and InputStore(store.folder).keep(uri) == ref  # not written again
    assert kept.stat().st_mtime_ns == first.st_mtime_ns and len(list(store.folder.iterdir())) == 1
    assert InputStore(store.folder).url(ref) == uri  # a fresh store, from the file alone


@pytest.mark.parametrize("fmt, mime", [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_jpeg_and_webp_come_back_with_their_own_media_type(tmp_path, fmt, mime):
    path = picture(tmp_path / "a.img", fmt=fmt)
    store = InputStore(tmp_path / INPUTS_DIR)
    uri = to_input_url(path)
    assert uri.startswith(f"data:{mime};")
    assert store.url(store.keep(uri)) == uri


def test_urls_and_data_uris_it_could_not_give_back_exactly_stay_as_they_are(tmp_path):
    store = InputStore(tmp_path / INPUTS_DIR)
    assert store.keep("https://example.com/cat.png") == "https://example.com/cat.png"
    odd = uri_of(picture(tmp_path / "a.png"), mime="image/jpg")  # a spelling we would not write
    assert store.keep(odd) == odd
    assert store.url("https://example.com/cat.png") == "https://example.com/cat.png"


def test_a_reference_given_as_an_input_is_taken_as_it_is(tmp_path):
    ref = ref_of(b"whatever")
    assert to_input_url(ref) == ref


def test_a_file_whose_bytes_changed_is_not_taken_for_the_image(tmp_path):
    store = InputStore(tmp_path / INPUTS_DIR)
    ref = store.keep(uri_of(picture(tmp_path / "a.png")))
    (kept,) = store.folder.iterdir()
    kept.write_bytes(b"not the picture")
    with pytest.raises(MissingInput) as caught:
        InputStore(store.folder).url(ref)
    assert ref[:19] in caught.value.message and "\n" not in caught.value.message


def test_a_missing_image_is_one_line_naming_it_and_saying_how_to_give_it(tmp_path):
    store = InputStore(tmp_path / "out" / INPUTS_DIR)
    ref = ref_of(b"gone")
    recipe = Recipe.build("x", seed=1, input_image=[ref])
    with pytest.raises(MissingInput) as caught:
        store.intern(recipe)
    text = caught.value.message
    assert isinstance(caught.value, errors.InputImageError) and "\n" not in text
    assert ref[:19] in text and str(store.folder / ref[7:19]) in text
    assert "inputs=[file]" in text and "--input FILE" in text


def test_an_image_that_cannot_be_kept_is_one_line_before_anything_is_sent(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # a file where the folder should be: not writable, even for root (CI runs as root)
    (out / INPUTS_DIR).write_text("not a folder")
    with Recorded(out) as rec:
        with pytest.raises(errors.InputImageError, match="cannot be kept in .*FLUX_NB_OUTPUT_DIR"):
            rec.session.generate("x", input_image=str(picture(tmp_path / "a.png")), seed=1)
        assert rec.bodies == [] and rec.session.history == []


# -- recipes, journal, files: the reference; the API: the bytes ------------------------------------


def test_an_edit_journals_and_embeds_the_reference_and_sends_the_bytes(tmp_path):
    photo = picture(tmp_path / "photo.png")
    out = tmp_path / "out"
    with Recorded(out) as rec:
        gen = rec.session.generate("paint it", input_image=str(photo), seed=3, **FAST).wait()
        again = gen.reproduce().wait()
        other = gen.vary(99).wait()
    ref = ref_of(photo.read_bytes())
    assert gen.recipe.input_image == (ref,)
    assert [e["recipe"]["input_image"] for e in submits(out)] == [[ref]] * 3
    assert "data:" not in (out / JOURNAL_NAME).read_text("utf-8")
    assert read_recipe(gen.path)["recipe"]["input_image"] == [ref]
    assert Recipe.from_dict(read_recipe(gen.path)["recipe"]) == gen.recipe
    # what the API got is what it got before recipes named images by hash: the data: URI
    assert rec.sent_inputs() == [[uri_of(photo)]] * 3
    assert pixels(again.path) == pixels(gen.path) and other.seed == 99
    assert [p.name for p in (out / INPUTS_DIR).iterdir()] == [f"{ref[7:23]}.png"]


def test_a_file_from_another_folder_reproduces_from_the_inputs_beside_it_or_given(tmp_path):
    photo = picture(tmp_path / "photo.png", "teal")
    first = Session(
        "local", output_dir=tmp_path / "a", settings=Settings(step_delay=0.0), announce=None
    )
    try:
        made = first.generate("as a mosaic", input_image=str(photo), seed=5, **FAST).wait()
    finally:
        first.close()
    moved = tmp_path / "moved"
    moved.mkdir()
    alone = moved / "made.png"
    alone.write_bytes(made.path.read_bytes())
    with Recorded(tmp_path / "b") as rec:
        with pytest.raises(MissingInput) as caught:
            rec.session.reproduce(alone)
        assert "\n" not in caught.value.message and "--input FILE" in caught.value.message
        assert rec.bodies == [] and rec.session.history == []  # nothing sent, nothing journalled
        assert not (tmp_path / "b" / JOURNAL_NAME).exists()
        given = rec.session.reproduce(alone, inputs=[photo]).wait()  # the photo given again
        assert pixels(given.path) == pixels(made.path)
    # the whole output folder copied elsewhere: its .inputs/ comes along
    with Recorded(tmp_path / "c") as rec:
        again = rec.session.reproduce(made.path).wait()
        assert pixels(again.path) == pixels(made.path)
        assert rec.sent_inputs() == [[uri_of(photo)]]
        assert rec.session.output.inputs.find(made.recipe.input_image[0]) is not None  # copied here


# -- what older versions wrote: recipes holding data: URIs -----------------------------------------


def test_an_old_file_whose_recipe_holds_a_data_uri_still_reproduces(tmp_path):
    photo = picture(tmp_path / "photo.png", "navy")
    with Recorded(tmp_path / "out") as rec:
        made = rec.session.generate("in gold", input_image=str(photo), seed=8, **FAST).wait()
        old = tmp_path / "old.png"  # as files were written before: the bytes inside the recipe
        old_recipe = {**made.recipe.to_dict(), "input_image": [uri_of(photo)]}
        old.write_bytes(
            embed_recipe(made.data, "png", json.dumps(old_recipe), {"generation_id": "old1"})
        )
    with Recorded(tmp_path / "fresh") as rec:
        loaded = rec.session.load(old)
        assert loaded.recipe.input_image == (uri_of(photo),)
        again = rec.session.reproduce(old).wait()
        twice = loaded.reproduce().wait()
        assert pixels(again.path) == pixels(made.path) == pixels(twice.path)
        assert rec.sent_inputs() == [[uri_of(photo)]] * 2
        ref = ref_of(photo.read_bytes())
        assert again.recipe.input_image == (ref,) == twice.recipe.input_image
        assert [e["recipe"]["input_image"] for e in submits(tmp_path / "fresh")] == [[ref]] * 2


def old_journal(out: Path, recipe: dict) -> None:
    """A journal left by a kernel that died after its submit line (before the enqueue)."""
    out.mkdir(parents=True, exist_ok=True)
    entry = {"t": 0, "op": "submit", "key": "k-old", "backend": "local", "recipe": recipe}
    (out / JOURNAL_NAME).write_text(json.dumps(entry) + "\n")


@pytest.mark.parametrize("form", ["old: data: URI", "now: sha256: reference"])
def test_a_journal_line_is_resumed_sending_the_same_bytes(tmp_path, form):
    photo = picture(tmp_path / "photo.png", "olive")
    out = tmp_path / "out"
    ref = ref_of(photo.read_bytes())
    if form.startswith("now"):
        InputStore(out / INPUTS_DIR).keep(uri_of(photo))  # kept by the kernel that died
    seed = 424242 if form.startswith("old") else 424243  # not in the server's queue: sent again
    recipe = Recipe.build("resumed from a journal", seed=seed, **FAST).to_dict()
    old_journal(out, {**recipe, "input_image": [uri_of(photo) if form.startswith("old") else ref]})
    with Recorded(out) as rec:
        (gen,) = rec.session.resume()
        gen.wait(30)
        assert rec.sent_inputs() == [[uri_of(photo)]]
        assert gen.recipe.input_image == (ref,)
        assert read_recipe(gen.path)["recipe"]["input_image"] == [ref]
        assert rec.session.journal_pending() == []


def test_a_journal_line_whose_image_is_gone_is_noted_in_one_line_and_not_sent(tmp_path):
    out = tmp_path / "out"
    ref = ref_of(b"an image nobody kept")
    recipe = Recipe.build("resumed without its image", seed=434343, **FAST).to_dict()
    old_journal(out, {**recipe, "input_image": [ref]})
    with Recorded(out) as rec:
        assert rec.session.resume() == [] and rec.bodies == []
        (note,) = rec.session.resume_notes
        assert note.startswith("k-old") and ref[:19] in note and "\n" not in note
