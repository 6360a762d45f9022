"""core/_lettering.py: text drawn by the bitmap font, so pictures with text do not change with the
FreeType a Pillow release bundles (tests/test_sheet.py pins a whole sheet)."""

from __future__ import annotations

from flux_nb.core import _lettering as lettering


def test_text_is_drawn_by_the_bitmap_font_whatever_the_characters():
    """Sheets are the same picture on every Pillow release (no FreeType): characters outside
    Latin-1 become '?', and a mask is exactly as wide as `width` says."""
    assert lettering.printable("café · 狐 🦊") == "café · ? ?"
    for size in (11, 14, 16, 20):
        drawn = lettering.mask("a red fox, 狐", size)
        assert drawn.size == (lettering.width("a red fox, 狐", size), size)
        assert drawn.getextrema() == (0, 255)
    assert lettering.width("", 16) == 0


def test_a_mask_is_scaled_from_the_native_glyphs_not_redrawn():
    native = lettering.mask("offline preview", lettering.NATIVE)
    assert native.height == lettering.NATIVE
    double = lettering.mask("offline preview", 2 * lettering.NATIVE)
    assert double.size == (2 * native.width, 2 * native.height)


def test_drawing_paints_the_letters_in_the_colour_given_and_nothing_else():
    from PIL import Image

    canvas = Image.new("RGB", (200, 40), (255, 255, 255))
    lettering.draw(canvas, (5, 5), "seed 7", 20, (20, 20, 20))
    colours = {c for _, c in canvas.getcolors(10_000)}
    assert (20, 20, 20) in colours and (255, 255, 255) in colours
    assert canvas.getbbox() is not None
    left, top, right, bottom = Image.eval(canvas.convert("L"), lambda v: 255 - v).getbbox()
    assert left >= 5 and top >= 5 and right <= 5 + lettering.width("seed 7", 20) and bottom <= 25
