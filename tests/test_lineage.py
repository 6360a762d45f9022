"""Lineage: an edit of an edit is made again from its last file alone, in a fresh process and an
empty folder, on the real local server; an uploaded image the chain starts from is needed.

Remakes run in a child process (`python -c`) whose working folder holds only the copied file (and
whatever a test puts beside it): nothing of the first session's folder, memory or server is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from helpers import pixels, png_bytes
from PIL import Image, ImageDraw

from flux_nb import read_recipe
from flux_nb.core import _errors as errors
from flux_nb.core._config import Settings
from flux_nb.files._inputs import to_input_url
from flux_nb.files._metadata import embed_recipe
from flux_nb.files._metadata import read_recipe as read_metadata
from flux_nb.jobs import _lineage as lineage
from flux_nb.jobs._sessions import JOURNAL_NAME, Session

FAST = {"num_inference_steps": 4, "aspect_ratio": "1:1"}


@pytest.fixture
def chain(session):
    """generate -> edit it (the Generation) -> edit that (its saved file, by path)."""
    first = session.generate("a red fox in snow", seed=1, **FAST).wait()
    second = session.generate("the same fox at night", input_image=first, seed=2, **FAST).wait()
    third = session.generate("add a full moon", input_image=str(second.path), seed=3, **FAST).wait()
    return first, second, third


def photo(path: Path) -> Path:
    """A picture no flux-nb server made: what a user uploads."""
    image = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((80, 80, 240, 200), outline="black", width=5)
    draw.ellipse((250, 20, 300, 70), fill="orange")
    image.save(path)
    return path


def remake_elsewhere(
    tmp_path: Path, last: Path, *, beside: dict[str, Path] | None = None, inputs=()
) -> dict:
    """Copy only `last` (and `beside`: relative name -> file) into an empty folder, then in a
    fresh Python run flux_nb.reproduce(last, lineage=True) there; returns what it reports."""
    where = tmp_path / "elsewhere"
    where.mkdir(parents=True)
    (where / "last.png").write_bytes(last.read_bytes())
    for name, source in (beside or {}).items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_bytes(source.read_bytes())
    script = textwrap.dedent(
        f"""
        import json, os, flux_nb
        before = sorted(os.listdir("."))
        try:
            gen = flux_nb.reproduce("last.png", lineage=True, inputs={list(inputs)!r}).wait()
        except flux_nb.FluxError as exc:
            print(json.dumps({{"error": str(exc), "type": type(exc).__name__,
                              "history": len(flux_nb.session().history), "before": before}}))
        else:
            print(json.dumps({{"path": os.path.abspath(gen.path),
                              "made": [g.recipe.prompt for g in flux_nb.session().history],
                              "paths": [os.path.abspath(g.path) for g in flux_nb.session().history],
                              "lineage": gen.lineage, "before": before}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OXEN_", "FLUX_NB_"))}
    env.update(FLUX_NB_OUTPUT_DIR=str(where / "out"), FLUX_NB_STEP_DELAY="0")
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


# -- what is recorded ------------------------------------------------------------------------------


def test_an_edit_records_its_parents_recipes_by_hash_beside_an_unchanged_recipe(chain, session):
    first, second, third = chain
    found = read_metadata(third.path)
    record = json.loads(found["lineage"])
    assert record == third.lineage
    # The recipe names the parent's file by the hash of what was sent for it, nothing added.
    assert found["recipe"] == third.recipe.to_dict() and "lineage" not in found["recipe"]
    assert third.recipe.input_image == (lineage.digest(second.path.read_bytes()),)
    assert session.output.inputs.url(third.recipe.input_image[0]) == to_input_url(str(second.path))
    parent_key = lineage.digest(second.path.read_bytes())
    grand_key = lineage.digest(first.data)  # the Generation went as its downloaded bytes
    assert record["inputs"] == [parent_key]
    assert record["steps"][parent_key]["recipe"] == {
        **second.recipe.to_dict(),
        "input_image": [grand_key],
    }
    assert record["steps"][grand_key]["recipe"] == first.recipe.to_dict()
    assert record["steps"][parent_key]["generation_id"] == second.id
    assert "data:" not in found["lineage"]  # every image by hash: none held twice
    # The journal's submit entry carries it too, for resume().
    submits = [
        e for e in session.journal.entries() if e.get("op") == "submit" and e["key"] == third.key
    ]
    assert submits[0]["lineage"] == record


def test_the_request_sent_to_the_api_carries_no_lineage(tmp_path):
    bodies = []

    def keep(request: httpx.Request) -> None:
        if request.method == "POST":
            bodies.append(json.loads(request.content))

    http = httpx.Client(event_hooks={"request": [keep]})
    s = Session(
        "local",
        output_dir=tmp_path / "out",
        settings=Settings(step_delay=0.0),
        announce=None,
        http=http,
    )
    try:
        first = s.generate("a lighthouse", seed=5, **FAST).wait()
        edit = s.generate("in fog", input_image=first, seed=6, **FAST).wait()
    finally:
        s.close()
    assert edit.lineage is not None
    sent = {k: v for k, v in bodies[-1].items() if k != "num_generations"}  # the queue's own field
    assert edit.recipe.input_image == (lineage.digest(first.data),)  # the recipe: by hash
    assert sent == {
        **edit.recipe.request(),
        "input_image": [to_input_url(first.data)],
    }  # sent: the bytes
    assert "lineage" not in json.dumps(bodies)


def test_an_image_used_twice_is_recorded_once(session):
    base = session.generate("a tree", seed=9, **FAST).wait()
    both = session.generate("two trees", input_image=[base, base], seed=10, **FAST).wait()
    record = both.lineage
    assert record["inputs"][0] == record["inputs"][1] and len(record["steps"]) == 1


def test_a_plain_generation_has_no_lineage(session):
    gen = session.generate("a meadow", seed=4, **FAST).wait()
    assert gen.lineage is None and "lineage" not in read_metadata(gen.path)


def test_a_record_is_cut_at_sixteen_steps_and_then_says_its_oldest_input_is_needed():
    """Built by hand: a 20-step record costs nothing this way, and says the same thing."""
    records: dict[str, tuple] = {}
    parent_url = None
    for i in range(20):
        recipe = {"prompt": f"step {i}", "seed": i, "model": "m"}
        if parent_url:
            recipe["input_image"] = [parent_url]
        record = lineage.build([parent_url], records.get) if parent_url else None
        url = to_input_url(photo_bytes(i))
        records[lineage.ref(url)] = lineage.made_by(recipe, record)
        parent_url = url
    record = lineage.build([parent_url], records.get)
    assert len(record["steps"]) == lineage.MAX_DEPTH
    chain = lineage.chain_of({"prompt": "last", "seed": 99, "input_image": [parent_url]}, record)
    assert len(chain.steps) == lineage.MAX_DEPTH + 1 and chain.cut
    assert [s.recipe["prompt"] for s in chain.steps[:2]] == ["step 4", "step 5"]
    (needed,) = chain.uploads
    assert "stops after 16 steps" in lineage.missing_line(chain, [needed], Path("out"))


def photo_bytes(i: int) -> bytes:
    return png_bytes((64, 64), (i * 10, 0, 0))


def test_a_damaged_record_is_ignored_and_the_image_still_reproduces(chain, session, tmp_path):
    *_, third = chain
    found = read_metadata(third.path)
    extra = {k: v for k, v in found.items() if k != "recipe"}
    extra["lineage"] = '{"inputs": "not a list"'
    broken = tmp_path / "broken.png"
    broken.write_bytes(embed_recipe(third.data, "png", third.recipe.to_json(), extra))
    before = len(session.history)
    again = session.reproduce(broken, lineage=True).wait()
    assert len(session.history) == before + 1  # no chain to follow: the file's own step
    assert pixels(again.path) == pixels(third.path)


# -- remade from the last file ---------------------------------------------------------------------


def test_a_three_step_chain_is_remade_from_its_last_file_in_a_fresh_process_and_folder(
    chain, tmp_path
):
    first, second, third = chain
    report = remake_elsewhere(tmp_path, third.path)
    assert report["before"] == ["last.png"]
    assert report["made"] == [first.prompt, second.prompt, third.prompt]  # parents first
    assert [pixels(p) for p in report["paths"]] == [pixels(g.path) for g in chain]
    assert report["paths"][-1] == report["path"]
    # The remade file records the chain again, so it can be remade in turn.
    assert len(lineage.read_chain(Path(report["path"])).steps) == 3


def test_lineage_false_makes_only_the_last_step(chain, session):
    *_, third = chain
    before = len(session.history)
    again = session.reproduce(third.path).wait()
    assert len(session.history) == before + 1 and pixels(again.path) == pixels(third.path)
    assert again.lineage == third.lineage


def test_a_file_without_lineage_reproduces_as_one_step(session, tmp_path):
    """Files saved before lineage existed: lineage=True is then the file's own recipe, once."""
    base = session.generate("a castle", seed=21, **FAST).wait()
    edit = session.generate("in ruins", input_image=base, seed=22, **FAST).wait()
    old = tmp_path / "old.png"
    found = read_metadata(edit.path)
    extra = {k: v for k, v in found.items() if k not in ("recipe", "lineage")}
    # as files were then: the input's bytes inside the recipe, as a data: URI
    old_recipe = {**edit.recipe.to_dict(), "input_image": [to_input_url(base.data)]}
    old.write_bytes(embed_recipe(edit.data, "png", json.dumps(old_recipe), extra))
    fresh = Session(
        "local", output_dir=tmp_path / "fresh", settings=Settings(step_delay=0.0), announce=None
    )
    try:
        assert len(lineage.read_chain(old).steps) == 1
        again = fresh.reproduce(old, lineage=True).wait()
        assert [g.prompt for g in fresh.history] == ["in ruins"]
        assert pixels(again.path) == pixels(edit.path)
        plain = fresh.reproduce(base.path, lineage=True).wait()
        assert pixels(plain.path) == pixels(base.path) and len(fresh.history) == 2
    finally:
        fresh.close()


# -- a chain that starts from an uploaded photo ---------------------------------------------------


@pytest.fixture
def photo_chain(session, tmp_path):
    upload = photo(tmp_path / "holiday photo.png")
    first = session.generate(
        "paint it as a watercolor", input_image=str(upload), seed=31, **FAST
    ).wait()
    second = session.generate("now in winter", input_image=first, seed=32, **FAST).wait()
    return upload, first, second


def test_an_uploaded_photo_is_recorded_by_hash_and_name_and_kept_in_dot_inputs(
    photo_chain, session
):
    upload, first, second = photo_chain
    key = lineage.digest(upload.read_bytes())
    assert second.lineage["steps"][key] == {
        "upload": {"name": "holiday photo.png", "bytes": upload.stat().st_size}
    }
    kept = lineage.find_upload(key, [session.output.path])
    assert kept is not None and kept[0].parent == session.output.path / ".inputs"
    view = session_view(session, second.path)
    assert view.steps == 2 and view.needed == []
    assert "holiday photo.png, uploaded · here" in repr(view)


def session_view(session, source):
    return lineage.view(session, source)


def test_a_missing_uploaded_photo_is_named_and_nothing_is_sent(photo_chain, tmp_path):
    upload, _, second = photo_chain
    report = remake_elsewhere(tmp_path, second.path)
    assert report["type"] == "InputImageError" and report["history"] == 0
    key = lineage.digest(upload.read_bytes())
    assert "holiday photo.png" in report["error"] and lineage.short(key) in report["error"]
    assert ".inputs" in report["error"] and "--input" in report["error"]
    assert "\n" not in report["error"]


def test_the_uploaded_photo_is_taken_from_inputs_given(photo_chain, tmp_path):
    upload, first, second = photo_chain
    report = remake_elsewhere(
        tmp_path, second.path, beside={"photo.png": upload}, inputs=["photo.png"]
    )
    assert report["made"] == [first.prompt, second.prompt]
    assert pixels(report["path"]) == pixels(second.path)


def test_the_uploaded_photo_is_found_in_the_output_folders_dot_inputs(
    photo_chain, session, tmp_path
):
    upload, first, second = photo_chain
    kept, _ = lineage.find_upload(lineage.digest(upload.read_bytes()), [session.output.path])
    report = remake_elsewhere(tmp_path, second.path, beside={f"out/.inputs/{kept.name}": kept})
    assert pixels(report["path"]) == pixels(second.path)


def test_a_one_step_edit_of_a_photo_needs_its_photo_beside_it_or_given(photo_chain, tmp_path):
    """Its recipe names the photo by hash: alone, the file gets one line naming the photo; with
    the output folder's .inputs/ copied beside it, or the photo given again, it is made again."""
    upload, first, _ = photo_chain
    alone = remake_elsewhere(tmp_path / "alone", first.path)
    assert (
        alone["type"] == "InputImageError" and alone["history"] == 0 and "\n" not in alone["error"]
    )
    assert "holiday photo.png" in alone["error"] and "--input" in alone["error"]
    assert "record stops" not in alone["error"]
    kept, _ = lineage.find_upload(lineage.digest(upload.read_bytes()), [first.path.parent])
    beside = remake_elsewhere(
        tmp_path / "beside", first.path, beside={f".inputs/{kept.name}": kept}
    )
    assert pixels(beside["path"]) == pixels(first.path)
    given = remake_elsewhere(
        tmp_path / "given", first.path, beside={"p.png": upload}, inputs=["p.png"]
    )
    assert pixels(given["path"]) == pixels(first.path)


# -- the public API and resume ------------------------------------------------------------------


def test_read_recipe_and_lineage_of_agree_on_the_file(chain, session):
    *_, third = chain
    assert read_recipe(third.path) == third.recipe
    text = repr(session_view(session, third.path))
    assert text.splitlines()[0].endswith("3 steps, parents first")
    assert "'a red fox in snow'" in text and text.splitlines()[-1].split()[1:3] == ["this", "file"]
    png = session_view(session, third.path).strip()
    with Image.open(__import__("io").BytesIO(png)) as strip:
        assert strip.width > 3 * 128


def test_resume_keeps_the_lineage_of_journalled_work(chain, tmp_path):
    *_, third = chain
    out = tmp_path / "resumed"
    out.mkdir()
    entry = {
        "t": 0,
        "op": "submit",
        "key": "k-gone",
        "backend": "local",
        "recipe": third.recipe.to_dict(),
        "lineage": third.lineage,
    }
    (out / JOURNAL_NAME).write_text(json.dumps(entry) + "\n")
    later = Session("local", output_dir=out, settings=Settings(step_delay=0.0), announce=None)
    try:
        (gen,) = later.resume()
        gen.wait()
        assert gen.lineage == third.lineage
        assert json.loads(read_metadata(gen.path)["lineage"]) == third.lineage
    finally:
        later.close()


def test_an_unknown_source_is_one_clear_line(session):
    with pytest.raises(errors.FluxError, match="neither a saved image file nor a generation"):
        session.reproduce("no-such-file.png", lineage=True)


def test_a_file_from_another_tool_reproduces_with_lineage_as_its_one_step(session, tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters", "a barn in fog\nSteps: 4, CFG scale: 2.0, Seed: 77, Size: 1024x1024"
    )
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64), "gray").save(path, pnginfo=info)
    gen = session.reproduce(path, lineage=True).wait()
    assert (gen.prompt, gen.seed, len(session.history)) == ("a barn in fog", 77, 1)


# -- Origins: where a session's input images came from -------------------------------------------


def test_origins_know_a_result_by_its_bytes_a_file_by_its_name_and_forget_only_what_was_noted(
    session, tmp_path
):
    origins = session.origins
    made = session.generate("a red fox in snow", seed=1, **FAST).wait()
    url = to_input_url(made)  # its bytes only, as the panel passes it: found in the history
    key = lineage.digest(lineage.uri_bytes(url))
    step, _ = origins.of(key, lineage.uri_bytes(url))
    assert step == {"recipe": lineage.as_step(made.recipe.to_dict()), "generation_id": made.id}

    upload = photo(tmp_path / "holiday.png")
    upload_url = to_input_url(upload)
    origins.note_sources([str(upload)], [upload_url])
    upload_key = lineage.digest(lineage.uri_bytes(upload_url))
    assert origins.of(upload_key, b"")[0]["upload"]["name"] == "holiday.png"

    edit = session.recipes("the fox at night", input_image=[made, str(upload)], seed=2, **FAST)[0]
    record = origins.record(edit)
    assert record["inputs"] == [key, upload_key] and set(record["steps"]) == {key, upload_key}

    origins.forget()
    assert origins.of(upload_key, b"") is None  # noted only: gone
    assert origins.of(key, lineage.uri_bytes(url)) is not None  # still a result of the session
