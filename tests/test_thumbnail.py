"""Thumbnails: one decode serves every size, with the same bytes as a thumbnail made on demand;
a JPEG for a photograph, a palette PNG for a picture of few colours."""

import io

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat

from flux_nb.files._thumbnail import (
    PHOTO_BYTES_PER_PIXEL,
    PHOTO_LEAST_QUALITY,
    PHOTO_QUALITY,
    decode,
    make_thumbnail,
    mime_type,
    palette_png,
    thumbnails,
)


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(mode: str = "RGB", size=(640, 360)) -> Image.Image:
    image = Image.linear_gradient("L").resize(size)
    return Image.merge(
        "RGB", [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image]
    ).convert(mode)


def photograph(size=(640, 360)) -> Image.Image:
    """Thousands of colours, smooth and grainy: what a camera or FLUX.2 Klein makes."""
    grain = Image.effect_noise(size, 40).filter(ImageFilter.GaussianBlur(2))
    red = Image.radial_gradient("L").resize(size)
    green = Image.linear_gradient("L").resize(size)
    return Image.merge("RGB", [red, green, ImageChops.add(grain, green.rotate(90), 2)])


def translucent() -> Image.Image:
    image = gradient()
    image.putalpha(128)
    return image


@pytest.mark.parametrize(
    ("image", "fmt", "mode"),
    [
        (gradient(), "PNG", "RGB"),
        (gradient(), "JPEG", "RGB"),
        (gradient("L"), "PNG", "RGB"),  # grey: given as colours
        (gradient().quantize(64), "PNG", "RGB"),  # a palette PNG: colours, not indices
        (translucent(), "WEBP", "RGBA"),
        (photograph(), "PNG", "RGB"),
        (photograph(), "WEBP", "RGB"),
    ],
)
def test_one_decode_makes_every_size_with_the_bytes_made_on_demand(image, fmt, mode):
    data = encoded(image, fmt)
    assert decode(data).mode == mode
    made = thumbnails(data, [320, 128, 320])
    assert sorted(made) == [128, 320]
    for side, thumb in made.items():
        assert thumb == make_thumbnail(decode(data), side)
        assert max(Image.open(io.BytesIO(thumb)).size) == side


def test_a_palette_png_with_transparency_decodes_with_its_alpha(tmp_path):
    image = gradient().quantize(16)
    path = tmp_path / "t.png"
    path.write_bytes(encoded(image, transparency=0))
    assert decode(path).mode == "RGBA"  # a path works as bytes do


def test_bytes_that_are_no_image_raise_before_anyone_sees_them():
    with pytest.raises(Image.UnidentifiedImageError):
        thumbnails(b"not an image", [320])


def reference(image: Image.Image, max_side: int) -> bytes:
    """make_thumbnail spelled with Image.thumbnail: convert (a copy), shrink it in place, then a
    palette PNG when the picture, sampled at that size, has at most 256 colours, else a JPEG."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=1.0)
    sample = image.convert("RGB").resize(thumb.size, Image.Resampling.NEAREST)
    flat = sample.getcolors(256) is not None
    buffer = io.BytesIO()
    if flat:
        thumb.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, "PNG", compress_level=6)
    else:
        return jpeg_within(thumb, int(PHOTO_BYTES_PER_PIXEL * thumb.width * thumb.height))
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def jpeg_within(image: Image.Image, budget: int) -> bytes:
    """The best quality from PHOTO_QUALITY down that fits the budget, by trying every one."""
    for quality in range(PHOTO_QUALITY, PHOTO_LEAST_QUALITY - 1, -1):
        data = jpeg(image, quality)
        if len(data) <= budget:
            return data
    return data


@pytest.mark.parametrize(
    "size",
    [(1344, 768), (768, 1344), (1024, 1024), (1000, 3), (3, 1000), (321, 320), (320, 200), (17, 9)],
)
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "photograph"])
def test_thumbnails_are_byte_for_byte_what_pillows_thumbnail_made(size, mode):
    image = photograph(size) if mode == "photograph" else gradient(size=size).convert(mode)
    for side in (320, 128, 96):
        assert make_thumbnail(image, side) == reference(image, side)
    assert image.size == size  # the picture itself is left alone


def test_a_photograph_gets_a_jpeg_and_flat_art_a_palette_png():
    photo = make_thumbnail(photograph((1344, 768)))
    assert mime_type(photo) == "image/jpeg"
    assert Image.open(io.BytesIO(photo)).format == "JPEG"
    for flat in (gradient(size=(1344, 768)), gradient("L", (1344, 768)), gradient().quantize(64)):
        thumb = make_thumbnail(flat)
        assert mime_type(thumb) == "image/png"
        assert Image.open(io.BytesIO(thumb)).mode == "P"


def test_a_photographs_jpeg_is_nearer_the_picture_and_smaller_than_a_palette_png():
    """Why photographs get JPEGs: 256 colours band a smooth picture."""
    shrunk = photograph((1344, 768)).resize((320, 183), Image.Resampling.BICUBIC, reducing_gap=1.0)
    jpeg = make_thumbnail(shrunk)
    palette = io.BytesIO()
    shrunk.quantize(256, method=Image.Quantize.FASTOCTREE).save(palette, "PNG", compress_level=6)

    def error(data: bytes) -> float:
        decoded = Image.open(io.BytesIO(data)).convert("RGB")
        return sum(ImageStat.Stat(ImageChops.difference(decoded, shrunk)).mean)

    assert len(jpeg) < len(palette.getvalue())
    assert error(jpeg) < error(palette.getvalue()) / 2


def noise(size=(1344, 768)) -> Image.Image:
    """The offline engine's hardest case: truecolour grain that JPEG cannot compress."""
    return Image.merge("RGB", [Image.effect_noise(size, 60) for _ in range(3)])


def test_a_photographs_thumbnail_keeps_within_its_byte_budget_lowering_quality_only_as_needed():
    """Saved twice in a notebook: a grainy picture's thumbnail is squeezed into its budget (down
    to PHOTO_LEAST_QUALITY); a smooth one that fits keeps PHOTO_QUALITY."""
    smooth = photograph((1344, 768))
    thumb = make_thumbnail(smooth)
    small = Image.open(io.BytesIO(thumb))
    assert thumb == jpeg(smooth.resize(small.size, Image.Resampling.BICUBIC, reducing_gap=1.0), 85)
    grainy = noise()
    squeezed = make_thumbnail(grainy)
    shrunk = grainy.resize(
        Image.open(io.BytesIO(squeezed)).size, Image.Resampling.BICUBIC, reducing_gap=1.0
    )
    budget = int(PHOTO_BYTES_PER_PIXEL * shrunk.width * shrunk.height)
    assert len(jpeg(shrunk, PHOTO_QUALITY)) > budget  # the case the budget is for
    assert squeezed == jpeg_within(shrunk, budget)
    assert len(squeezed) <= budget or squeezed == jpeg(shrunk, PHOTO_LEAST_QUALITY)


@pytest.mark.parametrize("options", [{}, {"method": None, "optimize": True}])
def test_a_palette_png_of_a_flat_picture_is_exact_and_indexed(options):
    """Thumbnails, sheets and strips (the defaults) and the sweep's sheet (Pillow's own method,
    zlib's best) all give a 256-colour PNG; a picture of few colours comes back pixel for pixel."""
    flat = Image.new("RGB", (90, 60), (20, 30, 40))
    flat.paste((200, 10, 10), (10, 10, 50, 40))
    data = palette_png(flat, **options)
    with Image.open(io.BytesIO(data)) as back:
        assert back.format == "PNG" and back.mode == "P"
        assert ImageChops.difference(back.convert("RGB"), flat).getbbox() is None


def test_the_sweeps_sheet_settings_squeeze_harder_than_the_thumbnails():
    """optimize=True is zlib level 9: never larger than the default level 6 for the same pixels."""
    picture = Image.linear_gradient("L").convert("RGB").resize((300, 200))
    fast = palette_png(picture, method=None)
    assert len(palette_png(picture, method=None, optimize=True)) <= len(fast)
