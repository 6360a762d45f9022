"""Text in pictures, drawn the same on every Pillow release the package admits.

Pillow's scalable default font is rendered by FreeType, and a Pillow wheel bundles its own
FreeType (2.13 in Pillow 11, 2.14 in 12 and 13), so text drawn with it changes pixels from one
release to the next: a contact sheet or the stand-in's "offline preview" tag would not be the same
picture on Colab's Pillow as on ours. The bitmap font's glyphs and a plain resize (no crop box) do
not change, so text is drawn with those and scaled to the size asked for.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image, ImageFont

NATIVE = 11  # the bitmap font's line height, in pixels: text of size N is scaled by N / NATIVE


@cache
def _font() -> ImageFont.ImageFont:
    from PIL import ImageFont

    # Pillow 10.1+ names the bitmap font apart; before it, load_default() is that font.
    loader = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
    font = loader()
    assert isinstance(font, ImageFont.ImageFont), font  # the bitmap font, never FreeType
    return font


def printable(text: str) -> str:
    """The text as the bitmap font can draw it: characters outside Latin-1 become '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


@lru_cache(maxsize=256)
def _native(text: str) -> Image.Image:
    from PIL import Image, ImageDraw

    font = _font()
    _, _, right, _ = font.getbbox(text)
    mask = Image.new("L", (max(1, int(right)), NATIVE), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    return mask


def _scaled_width(native_width: int, size: int) -> int:
    return max(1, round(native_width * size / NATIVE))


def width(text: str, size: int) -> int:
    """How many pixels wide `text` is drawn at `size` (its height is `size`)."""
    text = printable(text)
    return _scaled_width(_native(text).width, size) if text else 0


def mask(text: str, size: int) -> Image.Image:
    """The text as an "L" mask `size` pixels high: 255 on the letters, softened edges."""
    from PIL import Image

    native = _native(printable(text))
    if size == NATIVE:
        return native.copy()
    return native.resize((_scaled_width(native.width, size), size), Image.Resampling.BICUBIC)


def draw(
    image: Image.Image, xy: tuple[int, int], text: str, size: int, fill: tuple[int, ...] | int
) -> None:
    """Paint `text` onto `image` with its top left corner at xy."""
    if printable(text):
        image.paste(fill, xy, mask(text, size))


__all__ = ["NATIVE", "draw", "mask", "printable", "width"]
