"""Thumbnails: one decode serves every size, with the same bytes as a thumbnail made on demand."""

import io

import pytest
from PIL import Image

from flux_nb.thumbnail import decode, make_thumbnail, thumbnails


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(mode: str = "RGB", size=(640, 360)) -> Image.Image:
    image = Image.linear_gradient("L").resize(size)
    return Image.merge(
        "RGB", [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image]
    ).convert(mode)


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
    ],
)
def test_one_decode_makes_every_size_with_the_bytes_made_on_demand(image, fmt, mode):
    data = encoded(image, fmt)
    assert decode(data).mode == mode
    made = thumbnails(data, [320, 128, 320])
    assert sorted(made) == [128, 320]
    for side, png in made.items():
        assert png == make_thumbnail(decode(data), side)
        assert max(Image.open(io.BytesIO(png)).size) == side


def test_a_palette_png_with_transparency_decodes_with_its_alpha(tmp_path):
    image = gradient().quantize(16)
    path = tmp_path / "t.png"
    path.write_bytes(encoded(image, transparency=0))
    assert decode(path).mode == "RGBA"  # a path works as bytes do


def test_bytes_that_are_no_image_raise_before_anyone_sees_them():
    with pytest.raises(Image.UnidentifiedImageError):
        thumbnails(b"not an image", [320])


def reference(image: Image.Image, max_side: int) -> bytes:
    """make_thumbnail as it was: convert (a copy), Image.thumbnail in place, the same encode."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    thumb.quantize(256, method=Image.Quantize.FASTOCTREE).save(
        buffer, format="PNG", compress_level=6
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    "size",
    [(1344, 768), (768, 1344), (1024, 1024), (1000, 3), (3, 1000), (321, 320), (320, 200), (17, 9)],
)
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_thumbnails_are_byte_for_byte_what_pillows_thumbnail_made(size, mode):
    image = gradient(size=size).convert(mode)
    for side in (320, 128, 96):
        assert make_thumbnail(image, side) == reference(image, side)
    assert image.size == size  # the picture itself is left alone
