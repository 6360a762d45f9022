"""A1111 `parameters` text: written into saved files where other tools read it, read back by
Pillow without decoding, and a foreign file holding only that text reproduced."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from helpers import png_bytes
from PIL import Image, PngImagePlugin

from flux_nb.core._errors import FluxError
from flux_nb.core._recipe import MODEL_ID, Recipe
from flux_nb.files._infotext import (
    format_parameters,
    nearest_aspect,
    parse_parameters,
    recipe_from_parameters,
)
from flux_nb.files._metadata import embed_recipe, read_parameters, read_recipe, strip_recipe

FOREIGN = (
    "masterpiece, a red fox in snow, (detailed:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 60, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768,"
    ' Model hash: abc123, Model: sd_xl_base_1.0, Lora hashes: "x: 1, y: 2", Version: v1.6.0'
)


def test_format_is_the_a1111_shape():
    recipe = Recipe.build("a red fox in snow", seed=42, num_inference_steps=28)
    assert format_parameters(recipe, (1344, 768)) == (
        "a red fox in snow\nSteps: 28, Sampler: Euler, CFG scale: 2.0, Seed: 42, Size: 1344x768,"
        f" Model: {MODEL_ID}"
    )
    # our own keys after A1111's, quoted as A1111 quotes a value holding a comma or colon
    text = format_parameters(recipe, None, {"Sheet": "2x1 grid of steps 4|8", "Note": "a, b: c"})
    assert text.endswith(f'Model: {MODEL_ID}, Sheet: 2x1 grid of steps 4|8, Note: "a, b: c"')
    assert parse_parameters(text)[2]["Note"] == "a, b: c"


def test_parse_reads_prompt_negative_and_quoted_fields():
    prompt, negative, fields = parse_parameters(FOREIGN)
    assert prompt == "masterpiece, a red fox in snow, (detailed:1.2)"
    assert negative == "blurry, lowres"
    assert fields["Lora hashes"] == "x: 1, y: 2" and fields["CFG scale"] == "7"
    assert parse_parameters("just a prompt\non two lines") == (
        "just a prompt\non two lines",
        "",
        {},
    )


def test_foreign_parameters_map_to_what_klein_accepts_and_say_the_rest():
    recipe, note = recipe_from_parameters(FOREIGN)
    assert recipe.prompt == "masterpiece, a red fox in snow, (detailed:1.2)"
    assert (recipe.num_inference_steps, recipe.guidance_scale, recipe.seed) == (50, 7.0, 1234567890)
    assert recipe.aspect_ratio == "3:4"
    assert note.count("\n") == 0 and note.startswith("flux: from A1111 parameters")
    for part in (
        "Steps 60 taken as 50",
        "Size 512x768 taken as aspect ratio 3:4",
        "negative prompt",
        "Sampler",
        "Model (sd_xl_base_1.0)",
        "Version",
    ):
        assert part in note, note
    ours, quiet = recipe_from_parameters(
        format_parameters(Recipe.build("a cat", seed=5), (1024, 1024))
    )
    assert (ours.seed, ours.aspect_ratio) == (5, "1:1") and "ignored" not in quiet
    assert "Sampler: Euler" in format_parameters(ours)  # what Klein runs: nothing to ignore


def test_nearest_aspect_and_unusable_seed():
    choices = ["1:1", "16:9", "9:16", "4:3", "3:4"]
    assert nearest_aspect(1344, 768, choices) == "16:9"
    assert nearest_aspect(1000, 760, choices) == "4:3"
    recipe, note = recipe_from_parameters("a cat\nSteps: 4, CFG scale: 3, Seed: -1")
    assert 0 <= recipe.seed < 2**32 and "Seed -1 is not a usable seed" in note
    with pytest.raises(FluxError, match="no prompt"):
        recipe_from_parameters("Steps: 4, CFG scale: 3, Seed: 1")


# -- in saved files ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_saved_images_carry_parameters_where_other_tools_look(session, fmt):
    prompt = "a red fox in snow, ü and 狐"  # not Latin-1: PNG falls back to iTXt, as Pillow does
    gen = session.generate(prompt, seed=42, output_format=fmt, aspect_ratio="16:9").wait(30)
    with Image.open(gen.path) as im:
        width, height = im.size
        want = (
            f"{prompt}\n"
            f"Steps: 28, Sampler: Euler, CFG scale: 2.0, Seed: 42, Size: {width}x{height},"
            f" Model: {MODEL_ID}"
        )
        if fmt == "png":
            # Read while opening, before any pixel is decoded: the chunk sits before IDAT.
            assert im.tile  # the pixel data is still unread
            assert im.info["parameters"] == want
        else:
            comment = im.getexif().get_ifd(0x8769)[0x9286]
            assert comment[:8] == b"UNICODE\0" and comment[8:].decode("utf-16-be") == want
    assert read_parameters(gen.path) == want
    assert read_recipe(gen.path)["recipe"] == gen.recipe.to_dict()  # flux-nb's own recipe too
    stripped = strip_recipe(gen.path.read_bytes())
    assert read_parameters(stripped) is None and prompt.encode() not in stripped


def test_png_parameters_chunk_comes_before_idat(session):
    gen = session.generate("a lighthouse", seed=1, num_inference_steps=2).wait(30)
    data = gen.path.read_bytes()
    assert data.index(b"tEXtparameters") < data.index(b"IDAT")


def test_a_foreign_a1111_png_is_reproduced(session, tmp_path, capsys):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", FOREIGN)
    path = tmp_path / "from-a1111.png"
    Image.new("RGB", (512, 768), "gray").save(path, pnginfo=info)
    gen = session.reproduce(str(path))
    note = capsys.readouterr().out
    assert note.count("\n") == 1 and "ignored: negative prompt, Sampler" in note
    gen.wait(30)
    assert gen.recipe.seed == 1234567890 and gen.recipe.aspect_ratio == "3:4"
    assert gen.recipe.prompt.startswith("masterpiece, a red fox")
    with Image.open(gen.path) as made:
        assert made.size[0] < made.size[1]  # portrait, as the file was


def test_a_foreign_jpeg_with_exif_user_comment_is_reproduced(session, tmp_path, capsys):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = (
        b"UNICODE\0"
        + "a blue boat\nSteps: 8, CFG scale: 4.5, Seed: 99, Size: 768x768".encode("utf-16-le")
    )
    path = tmp_path / "other.jpg"
    Image.new("RGB", (64, 64), "blue").save(path, exif=exif.tobytes())  # little-endian EXIF
    gen = session.reproduce(str(path))
    assert (gen.recipe.prompt, gen.recipe.num_inference_steps, gen.recipe.guidance_scale) == (
        "a blue boat",
        8,
        4.5,
    )
    assert (gen.recipe.seed, gen.recipe.aspect_ratio) == (99, "1:1")
    assert "Size 768x768 taken as aspect ratio 1:1" in capsys.readouterr().out


def test_a_file_with_neither_says_so_in_one_line(session, tmp_path):
    path = tmp_path / "plain.png"
    path.write_bytes(png_bytes((8, 8), 0))
    with pytest.raises(FluxError, match="carries no flux-nb recipe") as caught:
        session.reproduce(str(path))
    assert "\n" not in str(caught.value)


# -- EXIF as the standard and A1111's piexif write it -----------------------------------------


def exif_entries(tiff: bytes) -> dict[str, dict[int, tuple[int, bytes]]]:
    """{"0th"/"Exif": {tag: (type, raw value bytes)}} of a TIFF-format EXIF block, read by hand:
    Pillow hides a tag's type, which is what piexif and exiftool judge."""
    import struct

    order = "<" if tiff[:2] == b"II" else ">"
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8}

    def ifd(offset: int) -> dict[int, tuple[int, bytes]]:
        (count,) = struct.unpack_from(order + "H", tiff, offset)
        found = {}
        for at in range(offset + 2, offset + 2 + 12 * count, 12):
            tag, kind, n = struct.unpack_from(order + "HHI", tiff, at)
            size = sizes[kind] * n
            start = at + 8 if size <= 4 else struct.unpack_from(order + "I", tiff, at + 8)[0]
            found[tag] = (kind, tiff[start : start + size])
        return found

    zeroth = ifd(struct.unpack_from(order + "I", tiff, 4)[0])
    exif_at = struct.unpack_from(order + "I", zeroth[0x8769][1])[0] if 0x8769 in zeroth else None
    return {"0th": zeroth, "Exif": ifd(exif_at) if exif_at is not None else {}}


def exif_block(path) -> bytes:
    with Image.open(path) as im:
        raw = im.info["exif"]
    return raw[6:] if raw.startswith(b"Exif\0\0") else raw


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_user_comment_is_undefined_unicode_big_endian_text(session, fmt):
    """EXIF 2.3 and piexif: type UNDEFINED (7), the 8-byte UNICODE code, UTF-16BE text
    (piexif.helper.UserComment.load reads only that); BYTE (1) made piexif refuse the file."""
    gen = session.generate("a heron, «dawn»", seed=77, num_inference_steps=8, output_format=fmt)
    gen.wait(30)
    kind, value = exif_entries(exif_block(gen.path))["Exif"][0x9286]
    assert kind == 7
    assert value[:8] == b"UNICODE\0"
    assert value[8:].decode("utf-16-be") == read_parameters(gen.path)
    assert read_parameters(gen.path).startswith("a heron, «dawn»\nSteps: 8, Sampler: Euler,")


def test_jpeg_has_no_comment_segment_and_the_tags_exif_requires(session):
    gen = session.generate("a heron", seed=77, num_inference_steps=8, output_format="jpg")
    data = gen.wait(30).path.read_bytes()
    assert b"\xff\xfe" not in data[: data.index(b"\xff\xda")]  # no COM before the image data
    with Image.open(gen.path) as im:
        assert "comment" not in im.info
        assert im.getexif()[0x0131].startswith("flux-nb offline preview engine")  # Software
        width, height = im.size
    entries = exif_block(gen.path)
    tags = exif_entries(entries)
    assert {0x011A, 0x011B, 0x0128, 0x0213} <= set(tags["0th"])
    exif = tags["Exif"]
    assert exif[0x9000] == (7, b"0230") and exif[0xA000] == (7, b"0100")  # EXIF/Flashpix version
    assert exif[0x9101] == (7, b"\1\2\3\0")  # components: Y Cb Cr
    assert exif[0xA001][0] == 3  # ColorSpace, a SHORT
    assert {exif[0xA002][1], exif[0xA003][1]} != set()  # the image's size


def test_a_little_endian_exif_gets_big_endian_text_and_keeps_its_tags(tmp_path):
    """A server's EXIF in Intel byte order keeps its order and tags; the text is UTF-16BE
    still, as piexif writes and reads it. A JPEG comment becomes the Software tag."""
    exif = Image.Exif()
    exif.endian = "<"
    exif[0x010F] = "Some Camera"  # Make
    buf = io.BytesIO()
    exif_bytes = exif.tobytes()
    assert exif_bytes[6:8] == b"II"
    Image.new("RGB", (64, 32), "teal").save(buf, "JPEG", exif=exif_bytes, comment=b"engine X")
    recipe = Recipe.build("a teal wall", seed=3)
    text = "a teal wall\nSteps: 4"
    data = embed_recipe(buf.getvalue(), "jpg", recipe.to_json(), parameters=text)
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    tiff = exif_block(path)
    assert tiff[:2] == b"II"
    tags = exif_entries(tiff)
    assert tags["0th"][0x010F][1].rstrip(b"\0") == b"Some Camera"
    assert tags["0th"][0x0131][1].rstrip(b"\0") == b"engine X"
    assert tags["Exif"][0x9286] == (7, b"UNICODE\0" + "a teal wall\nSteps: 4".encode("utf-16-be"))
    assert tags["Exif"][0xA002][1] == (64).to_bytes(2, "little")
    with Image.open(path) as im:
        assert "comment" not in im.info
    assert read_parameters(path) == "a teal wall\nSteps: 4"
    assert read_recipe(path)["recipe"] == recipe.to_dict()


def test_a_sweeps_contact_sheet_carries_its_first_cells_parameters(session, tmp_path):
    from flux_nb.jobs._sweeps import parse_axis, plan, start

    schema = session.schema
    grid = start(
        session,
        plan("a {red|blue} fox", [parse_axis("steps=2,4", schema)], schema, seed=7),
    )
    for fmt in ("png", "jpg", "webp"):
        path = grid.save(tmp_path / f"sheet.{fmt}", tile=32, timeout=30)
        text = read_parameters(path)
        prompt, _, fields = parse_parameters(text)
        assert prompt == grid[0, 0].recipe.prompt == "a red fox"
        assert (fields["Steps"], fields["Sampler"], fields["Seed"]) == ("2", "Euler", "7")
        assert fields["Sheet"] == "2x2 grid of prompt red|blue; steps 2|4"
        with Image.open(path) as im:
            assert "comment" not in im.info


# -- files written before these fixes (tests/fixtures/before_readers/make.py) -----------------

BEFORE = Path(__file__).parent / "fixtures" / "before_readers"
BEFORE_EXPECTED = json.loads((BEFORE / "expected.json").read_text("utf-8"))


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_files_written_before_read_as_they_did(fmt):
    """No Sampler in the text, UserComment typed BYTE in the TIFF's byte order, a JPEG comment:
    today's reader returns what the reader of their day did."""
    whole, only = BEFORE / f"before.{fmt}", BEFORE / f"before-parameters-only.{fmt}"
    assert read_recipe(whole)["recipe"] == BEFORE_EXPECTED[whole.name]["recipe"]
    for path in (whole, only):
        assert read_parameters(path) == BEFORE_EXPECTED[path.name]["parameters"]
    assert "Sampler" not in BEFORE_EXPECTED[only.name]["parameters"]


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_files_written_before_are_reproduced(session, tmp_path, capsys, fmt):
    """%flux reproduce on an old file: its recipe as it was; on one holding only the old text, the
    same prompt, steps, guidance and seed, with nothing reported ignored."""
    gen = session.reproduce(str(BEFORE / f"before.{fmt}")).wait(30)
    assert gen.recipe.to_dict() == BEFORE_EXPECTED[f"before.{fmt}"]["recipe"]
    only = tmp_path / f"only.{fmt}"
    shutil.copy(BEFORE / f"before-parameters-only.{fmt}", only)
    capsys.readouterr()
    again = session.reproduce(str(only)).wait(30)
    note = capsys.readouterr().out
    assert "ignored" not in note and "taken as aspect ratio 1:1" in note
    want = gen.recipe
    assert (again.recipe.prompt, again.recipe.seed) == (want.prompt, want.seed)
    assert (again.recipe.num_inference_steps, again.recipe.guidance_scale) == (8, 3.5)
