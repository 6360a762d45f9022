"""files/_sheet.py: the contact sheet's geometry and drawing, with no widgets and no server."""

from __future__ import annotations

import hashlib

from PIL import Image

from flux_nb.files import _sheet as sheet_module

PINNED_SHEET_SIZE = (327, 255)
PINNED_SHEET = "6972025890a3c09cd079a65f766c633a03855467200d0c3201f5336c5ccea23e"


def test_long_labels_are_cut_with_an_ellipsis_to_their_width():
    text = "a very long column label that cannot possibly fit"
    cut = sheet_module.fit(text, 80, sheet_module.LABEL_SIZE)
    assert cut.endswith("...") and text.startswith(cut[:-3])
    assert sheet_module._text_width(cut, sheet_module.LABEL_SIZE) <= 80
    assert sheet_module.fit("short", 80, sheet_module.LABEL_SIZE) == "short"


def test_cells_do_not_overlap_and_the_sheet_holds_them_all():
    geometry = sheet_module.layout(64, 48, (3, 4), 50, title_lines=2)
    boxes = [box for row in geometry.cells for box in row]
    assert len(boxes) == 12
    for i, (l1, t1, r1, b1) in enumerate(boxes):
        assert (r1 - l1, b1 - t1) == (64, 48)
        assert 0 <= l1 and r1 <= geometry.width and 0 <= t1 and b1 <= geometry.height
        for l2, t2, r2, b2 in boxes[i + 1 :]:
            assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1
    assert len(geometry.columns) == 4 and len(geometry.rows) == 3
    assert geometry.title[3] <= min(t for _, t, _, _ in geometry.columns)


def test_a_cell_without_an_image_shows_its_status_in_a_grey_box():
    red = Image.new("RGB", (40, 20), (200, 0, 0))
    image = sheet_module.draw_sheet([[red, "failed"]], ["a", "b"], [[]], "title", tile=40)
    geometry = sheet_module.layout(80, 40, (1, 2), 0, title_lines=1)
    assert image.size == (geometry.width, geometry.height)
    first, second = geometry.cells[0]
    assert image.getpixel((first[0] + 40, first[1] + 20)) == (200, 0, 0)
    assert image.getpixel((second[0] + 1, second[1] + 1)) == sheet_module.EMPTY
    assert image.crop(second).convert("L").getextrema()[0] < 200  # the word is drawn


def test_a_sheet_is_the_same_picture_on_every_pillow_release():
    """Pinned on Pillow 13 and checked on 11 and 12 (scripts/test.sh runs the main suite on Python
    3.10, where pip picks Pillow 12, and this file on Pillow 11.3, Colab's)."""
    tile = Image.merge(
        "RGB",
        [
            Image.frombytes(
                "L", (48, 32), bytes((x * 5 + y * k) % 256 for y in range(32) for x in range(48))
            )
            for k in (1, 3, 7)
        ],
    )
    picture = sheet_module.draw_sheet(
        [[tile, "failed"], [tile, tile]],
        ["steps=4", "steps=8, a label too long to fit"],
        [["seed 7"], ["seed 8", "guidance 4"]],
        "a red fox in snow · café\nseed 7, 4 cells",
        tile=64,
    )
    digest = hashlib.sha256(picture.tobytes()).hexdigest()
    assert (picture.size, digest) == (PINNED_SHEET_SIZE, PINNED_SHEET)
