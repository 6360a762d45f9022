"""The offline preview engine: deterministic, honours every parameter, says what it is,
and is fast."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
import time

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageOps, ImageStat

from flux_nb.core._recipe import Recipe
from flux_nb.server.engines import Cancelled
from flux_nb.server.engines._preview import SIZES, SOFTWARE, PreviewEngine

ENGINE = PreviewEngine()
PROMPT = "a red fox in a snowy forest"


def recipe(prompt: str = PROMPT, **params) -> Recipe:
    params.setdefault("seed", 7)
    return Recipe.build(prompt, **params)


def render(r: Recipe, inputs=()) -> bytes:
    return ENGINE.render(r, list(inputs))[0]


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def difference(a: bytes, b: bytes) -> float:
    """Mean absolute pixel difference (0-255) between two encoded images of the same size."""
    diff = ImageChops.difference(decoded(a).convert("RGB"), decoded(b).convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def photo(tint: tuple[int, int, int], size=(640, 480)) -> Image.Image:
    """A deterministic stand-in for a user's photo: a gradient with a disc and a block."""
    image = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
        ),
    )
    draw = ImageDraw.Draw(image)
    draw.ellipse((size[0] * 0.3, size[1] * 0.2, size[0] * 0.7, size[1] * 0.8), fill=tint)
    draw.rectangle((10, size[1] * 0.6, size[0] * 0.25, size[1] - 10), fill=(30, 40, 60))
    return image


# Rendered in this process and in fresh interpreters with other hash seeds: the digests must agree.
DIGEST_SCRIPT = """
import hashlib, sys
from PIL import Image, ImageDraw
from flux_nb.core._recipe import Recipe
from flux_nb.server.engines._preview import PreviewEngine
e = PreviewEngine()
cases = [
    (Recipe.build("a cat watching the sunset over the ocean", seed=11, output_format=fmt), [])
    for fmt in ("png", "jpg", "webp")
]
cases.append((Recipe.build("abstract painting", seed=5, num_inference_steps=3), []))
cases.append(
    (Recipe.build("a wolf at night", seed=9, output_quality="high", aspect_ratio="3:4"), [])
)
img = Image.new("RGB", (320, 200), (90, 140, 200))
ImageDraw.Draw(img).ellipse((100, 40, 220, 160), fill=(240, 200, 60))
cases.append((Recipe.build("make it a sunset", seed=3, input_image=["a"]), [img]))
for r, inputs in cases:
    print(hashlib.sha256(e.render(r, inputs)[0]).hexdigest())
"""


def test_same_recipe_same_bytes_in_this_and_other_processes():
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DIGEST_SCRIPT],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        for seed in ("1", "2")
    ]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(DIGEST_SCRIPT, {})
    here = buf.getvalue().split()
    assert len(here) == 6
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert out.split() == here


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_repeat_render_is_byte_identical(fmt):
    r = recipe(output_format=fmt, aspect_ratio="4:3")
    assert render(r) == render(r)


def test_seed_prompt_steps_guidance_and_quality_change_the_picture():
    base = render(recipe())
    assert difference(base, render(recipe(seed=8))) > 4
    assert difference(base, render(recipe("a lighthouse on the coast at dusk"))) > 4
    assert difference(base, render(recipe(num_inference_steps=4))) > 2
    assert difference(base, render(recipe(guidance_scale=8.0))) > 2
    assert difference(base, render(recipe(guidance_scale=0.0))) > 2
    assert render(recipe(num_inference_steps=28)) != render(recipe(num_inference_steps=50))
    assert difference(base, render(recipe(output_quality="high"))) > 0.5


@pytest.mark.parametrize("aspect", sorted(SIZES))
def test_size_per_aspect_ratio(aspect):
    width, height = SIZES[aspect]
    assert width % 16 == 0 and height % 16 == 0
    assert 0.9e6 < width * height < 1.1e6
    got = decoded(render(recipe(aspect_ratio=aspect, num_inference_steps=4)))
    assert got.size == (width, height)
    a, b = (int(x) for x in aspect.split(":"))
    assert abs(width / height - a / b) < 0.06


@pytest.mark.parametrize(
    ("fmt", "content_type", "pil_format"),
    [("png", "image/png", "PNG"), ("jpg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")],
)
@pytest.mark.parametrize("quality", ["standard", "high"])
def test_formats_decode_and_carry_the_offline_label(fmt, content_type, pil_format, quality):
    data, ctype = ENGINE.render(recipe(output_format=fmt, output_quality=quality), [])
    assert ctype == content_type
    image = decoded(data)
    assert image.format == pil_format
    assert image.size == SIZES["16:9"]
    if fmt == "png":
        assert image.text["Software"] == SOFTWARE
        assert image.text["flux_nb_engine"] == "preview"
    else:
        exif = image.getexif()
        assert exif[0x0131] == SOFTWARE  # Software
        assert exif[0x010E] == SOFTWARE  # ImageDescription
    assert "comment" not in image.info  # SD Prompt Reader takes a JPEG comment for Fooocus JSON


def test_on_step_is_called_once_per_step_in_order():
    seen = []
    ENGINE.render(
        recipe(num_inference_steps=7), [], on_step=lambda i, total: seen.append((i, total))
    )
    assert seen == [(i, 7) for i in range(1, 8)]


def test_should_stop_cancels_at_a_step_boundary():
    seen = []
    asks = iter(range(100))
    with pytest.raises(Cancelled):
        ENGINE.render(
            recipe(num_inference_steps=10),
            [],
            on_step=lambda i, total: seen.append(i),
            should_stop=lambda: next(asks) >= 3,
        )
    assert seen == [1, 2, 3]


def test_should_stop_never_true_finishes():
    data, _ = ENGINE.render(recipe(num_inference_steps=3), [], should_stop=lambda: False)
    assert decoded(data).size == SIZES["16:9"]


def test_step_delay_really_sleeps():
    steps, delay = 4, 0.03
    start = time.perf_counter()
    ENGINE.render(recipe(num_inference_steps=steps), [], step_delay=delay)
    assert time.perf_counter() - start >= steps * delay


def test_edit_transforms_the_input_and_depends_on_it():
    r = recipe("make it a purple sunset", input_image=["x"])
    warm, cool = photo((240, 200, 60)), photo((60, 200, 240))
    edited = render(r, [warm])
    assert edited == render(r, [warm])
    assert (
        difference(edited, render(recipe("make it a purple sunset"))) > 10
    )  # not the plain picture
    assert difference(edited, render(r, [cool])) > 2  # the input matters
    image = decoded(edited)
    assert image.size == SIZES["16:9"] and image.text["Software"] == SOFTWARE
    # a cropped, restyled copy of the input: closer to it than to the same input upside down
    source = warm.resize((1344, 1008)).crop((0, 126, 1344, 894))
    near = ImageStat.Stat(ImageChops.difference(image.convert("RGB"), source)).mean
    far = ImageStat.Stat(ImageChops.difference(image.convert("RGB"), ImageOps.flip(source))).mean
    assert sum(near) < sum(far)


def test_edit_with_references_shows_them_and_seed_changes_the_edit():
    red, blue = photo((200, 60, 60)), photo((60, 60, 200))
    one = render(recipe("oil painting", input_image=["x"], output_format="jpg"), [red])
    two = render(recipe("oil painting", input_image=["x", "y"], output_format="jpg"), [red, blue])
    assert difference(one, two) > 0.3  # the reference appears as an inset
    by_seed = [
        render(recipe("oil painting", seed=s, input_image=["x"], output_format="jpg"), [red])
        for s in range(4)
    ]
    assert len(set(by_seed)) == 4
    assert min(difference(by_seed[0], other) for other in by_seed[1:]) > 1


# Pixel digests pinned when the painter moved into its own package (issue 12): a refactor of the
# painter must not change a single pixel. They hash the picture before encoding (mode, size,
# palette, pixels), so zlib, libjpeg and libwebp builds do not matter; only a Pillow that draws
# or rasterises its built-in font differently would (then check the pictures by eye and re-pin).
PINNED = {
    "fox 16:9": (
        dict(prompt=PROMPT, seed=7),
        0,
        "d2d7372193645223108742ddc3550e0f5a9aa8e654dda7e480d5df87bc55572b",
    ),
    "fox 1:1": (
        dict(prompt=PROMPT, seed=7, aspect_ratio="1:1"),
        0,
        "4cca69de3fc7708be298c69dffae74b4e449d2a1ccac30eba50d8f1dc1bbcb40",
    ),
    "neon city 9:16 high": (
        dict(
            prompt="a neon city at night in the rain",
            seed=123456,
            aspect_ratio="9:16",
            output_quality="high",
        ),
        0,
        "2f00d5138b308f6e6a21e4206b7e376f9c832d40901c697315747eca853fbc6e",
    ),
    "wolf 3:4 high": (
        dict(prompt="a wolf at night", seed=9, output_quality="high", aspect_ratio="3:4"),
        0,
        "5379c489b783be606b95366ebf169d777525c41f86a2c80a9fbc037202add434",
    ),
    "3 steps, guidance 0, 4:3": (
        dict(
            prompt="abstract painting",
            seed=5,
            num_inference_steps=3,
            aspect_ratio="4:3",
            guidance_scale=0.0,
        ),
        0,
        "3e0470ed412a17b19941c4dfff17081623b0f0ce7bfdf00f0f834cd10b1cab34",
    ),
    "guidance 10, 50 steps, top seed": (
        dict(
            prompt="a harbour at dusk with boats",
            seed=4294967295,
            guidance_scale=10.0,
            num_inference_steps=50,
        ),
        0,
        "c3d996d607f82e6c4c76c65a9ed58abfe952dc8416c95240e5a8035170b9a6e3",
    ),
    "castle 4:3, guidance 3.5 (Python 3.10's colorsys differed)": (
        dict(
            prompt="a castle on a hill at sunrise",
            seed=4242,
            aspect_ratio="4:3",
            num_inference_steps=24,
            guidance_scale=3.5,
        ),
        0,
        "8bbb702c543412df87f27804bd13932ff31e2b9dfdf4e871cb3f0f3f3eaa324f",
    ),
    "edit, one input": (
        dict(prompt="make it a sunset", seed=3, input_image=["a"]),
        1,
        "badf262d704fce571d218e2ca10cf667886453050c3b581dfb444e3ffc7e38d7",
    ),
    "edit, three inputs, high, 4 steps": (
        dict(
            prompt="autumn forest",
            seed=12,
            input_image=["a", "b", "c"],
            output_quality="high",
            num_inference_steps=4,
        ),
        3,
        "d232e36a12f7d0d135764b73dccc168a83a97ffd033720df8b3c48c24ac0a53f",
    ),
}


def pinned_inputs(n: int) -> list[Image.Image]:
    """Input photographs made by our own arithmetic (no Pillow resize, which changed in 13)."""

    def one(tint, size):
        w, h = size
        image = Image.merge(
            "RGB",
            (
                Image.frombytes(
                    "L", size, bytes(x * 255 // (w - 1) for _ in range(h) for x in range(w))
                ),
                Image.frombytes(
                    "L",
                    size,
                    bytes(
                        max(
                            0,
                            255
                            - round(((x - w / 2) ** 2 + (y - h / 2) ** 2) ** 0.5 * 512 / (w + h)),
                        )
                        for y in range(h)
                        for x in range(w)
                    ),
                ),
                Image.frombytes(
                    "L", size, bytes(y * 255 // (h - 1) for y in range(h) for _ in range(w))
                ),
            ),
        )
        box = (size[0] * 0.3, size[1] * 0.2, size[0] * 0.7, size[1] * 0.8)
        ImageDraw.Draw(image).ellipse(box, fill=tint)
        return image

    made = [
        one((240, 200, 60), (320, 200)),
        one((20, 90, 200), (200, 300)),
        one((200, 30, 30), (100, 100)),
    ]
    return made[:n]


@pytest.mark.parametrize("case", sorted(PINNED))
def test_the_painter_draws_the_pinned_pixels(case):
    params, n_inputs, expected = PINNED[case]
    params = dict(params)
    picture = ENGINE.image(Recipe.build(params.pop("prompt"), **params), pinned_inputs(n_inputs))
    palette = bytes(picture.getpalette() or [])
    head = picture.mode.encode() + repr(picture.size).encode()
    assert hashlib.sha256(head + palette + picture.tobytes()).hexdigest() == expected


def test_the_painters_hls_is_one_formula_on_every_python():
    """Python 3.10's colorsys.rgb_to_hls divides by 2.0 - (maxc + minc), 3.11+ by 2.0 - maxc - minc:
    for (90, 223, 54) they differ in the last bit. The painter keeps 3.11's rgb_to_hls itself
    (colorsys.hls_to_rgb is the same in every release)."""
    import colorsys
    import sys

    from flux_nb.server.engines._painter import palette

    rgb = (90 / 255, 223 / 255, 54 / 255)
    maxc, minc = max(rgb), min(rgb)
    assert palette.rgb_to_hls(*rgb)[2] == (maxc - minc) / (2.0 - maxc - minc)
    assert (maxc - minc) / (2.0 - maxc - minc) != (maxc - minc) / (2.0 - (maxc + minc))
    grid = [
        (r / 255, g / 255, b / 255)
        for r in range(0, 256, 15)
        for g in range(0, 256, 17)
        for b in range(0, 256, 51)
    ]
    for colour in grid:
        h, lum, s = palette.rgb_to_hls(*colour)
        back = colorsys.hls_to_rgb(h, lum, s)
        assert all(abs(x - y) < 1e-9 for x, y in zip(back, colour, strict=True)), colour
        if sys.version_info >= (3, 11):
            assert (h, lum, s) == colorsys.rgb_to_hls(*colour)


# --- the registry -------------------------------------------------------------------------------


def test_each_engine_is_one_registry_entry_made_lazily() -> None:
    """One table: what get_engine makes, how many workers run it, what the server calls it.
    The flux2-klein entry counts named devices without importing torch or its own module."""
    from flux_nb.server.engines import ENGINES, EngineConfig, engine_slots, get_engine

    assert tuple(ENGINES) == ("preview", "flux2-klein")
    preview = get_engine("preview")
    assert isinstance(preview, PreviewEngine) and preview.preload() is None
    assert engine_slots("preview", 3) == 3
    klein = get_engine(EngineConfig("flux2-klein", device="cpu,cpu"), slot=1)
    assert type(klein).__name__ == "Flux2KleinEngine" and klein.slot == 1
    config = EngineConfig("preview")
    assert config.is_stand_in and not config.serial and "not FLUX" in config.label
    code = (
        "import sys\n"
        "from flux_nb.server.engines import EngineConfig, engine_slots\n"
        "config = EngineConfig('flux2-klein', device='cpu,cpu')\n"
        "assert engine_slots(config, 5) == 2 and config.serial and not config.is_stand_in\n"
        "assert config.label == f'flux2-klein ({config.model}, diffusers)', config.label\n"
        "heavy = {'torch', 'diffusers', 'flux_nb.server.engines._flux2_klein'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_unknown_engine_is_one_line_naming_the_known_ones() -> None:
    from flux_nb.server.engines import EngineConfig

    with pytest.raises(ValueError) as caught:
        EngineConfig("flux-dev")
    assert str(caught.value) == "unknown engine 'flux-dev'; allowed: preview, flux2-klein"
