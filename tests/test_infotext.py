"""A1111 `parameters` text: written into saved files where other tools read it, read back by
Pillow without decoding, and a foreign file holding only that text reproduced."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from flux_nb.errors import FluxError
from flux_nb.infotext import (
    format_parameters,
    nearest_aspect,
    parse_parameters,
    recipe_from_parameters,
)
from flux_nb.metadata import read_parameters, read_recipe, strip_recipe
from flux_nb.recipe import MODEL_ID, Recipe

FOREIGN = (
    "masterpiece, a red fox in snow, (detailed:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 60, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768,"
    ' Model hash: abc123, Model: sd_xl_base_1.0, Lora hashes: "x: 1, y: 2", Version: v1.6.0'
)


def test_format_is_the_a1111_shape():
    recipe = Recipe.build("a red fox in snow", seed=42, num_inference_steps=28)
    assert format_parameters(recipe, (1344, 768)) == (
        f"a red fox in snow\nSteps: 28, CFG scale: 2.0, Seed: 42, Size: 1344x768, Model: {MODEL_ID}"
    )


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
            f"Steps: 28, CFG scale: 2.0, Seed: 42, Size: {width}x{height}, Model: {MODEL_ID}"
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
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    with pytest.raises(FluxError, match="carries no flux-nb recipe") as caught:
        session.reproduce(str(path))
    assert "\n" not in str(caught.value)
