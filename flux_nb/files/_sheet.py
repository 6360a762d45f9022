"""The contact sheet: a grid of images with a title band, column labels on top, row labels left.

Pure Pillow, no widgets: `layout()` says where everything goes (tests read it), `draw_sheet()`
draws it. Text is drawn by `lettering`, so a sheet is the same picture on every Pillow release.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..core import _lettering as lettering

if TYPE_CHECKING:
    from PIL import Image

MARGIN = 16
GAP = 8
TITLE_SIZE = 20
LABEL_SIZE = 16
LINE = 1.35  # line height, in font sizes
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (110, 110, 110)
EMPTY = (225, 225, 225)

Box = tuple[int, int, int, int]  # left, top, right, bottom


def _text_width(text: str, size: int) -> int:
    return lettering.width(text, size)


def _line_height(size: int) -> int:
    return int(size * LINE)


def fit(text: str, width: int, size: int) -> str:
    """The text, shortened with "..." (the bitmap font has no "…") to fit width pixels."""
    if _text_width(text, size) <= width:
        return text
    while text and _text_width(text + "...", size) > width:
        text = text[:-1]
    return text + "..."


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a sheet's parts go: its size, the title band, each label and each cell."""

    width: int
    height: int
    title: Box
    columns: list[Box]
    rows: list[Box]
    cells: list[list[Box]]


def layout(
    cell_width: int, tile: int, shape: tuple[int, int], row_label_width: int, title_lines: int
) -> Layout:
    """The geometry for `shape` = (rows, cols) cells of cell_width x tile pixels."""
    n_rows, n_cols = shape
    label_w = row_label_width + GAP if row_label_width else 0
    title_h = title_lines * _line_height(TITLE_SIZE) + GAP
    header_h = _line_height(LABEL_SIZE) + GAP // 2
    grid_left = MARGIN + label_w
    grid_top = MARGIN + title_h + header_h
    width = grid_left + n_cols * cell_width + (n_cols - 1) * GAP + MARGIN
    height = grid_top + n_rows * tile + (n_rows - 1) * GAP + MARGIN
    xs = [grid_left + c * (cell_width + GAP) for c in range(n_cols)]
    ys = [grid_top + r * (tile + GAP) for r in range(n_rows)]
    return Layout(
        width=width,
        height=height,
        title=(MARGIN, MARGIN, width - MARGIN, MARGIN + title_h - GAP),
        columns=[(x, MARGIN + title_h, x + cell_width, grid_top - GAP // 2) for x in xs],
        rows=[(MARGIN, y, MARGIN + row_label_width, y + tile) for y in ys] if label_w else [],
        cells=[[(x, y, x + cell_width, y + tile) for x in xs] for y in ys],
    )


def draw_sheet(
    tiles: list[list[Any]],
    column_labels: list[str],
    row_labels: list[list[str]],
    title: str,
    tile: int = 256,
) -> Image.Image:
    """tiles[row][col] is a PIL image, or a word (e.g. 'failed') for a cell without one.
    Images keep their aspect ratio at `tile` pixels high, centred in equal cells."""
    from PIL import Image, ImageDraw

    if tile < 16:
        raise ValueError(f"tile={tile} is too small (at least 16 pixels).")
    scaled = [
        [
            t.convert("RGB").resize(
                (max(1, round(t.width * tile / t.height)), tile), Image.Resampling.LANCZOS
            )
            if not isinstance(t, str)
            else t
            for t in row
        ]
        for row in tiles
    ]
    widths = [t.width for row in scaled for t in row if not isinstance(t, str)]
    cell_width = max(widths, default=tile)
    label_width = max(
        (_text_width(text, LABEL_SIZE) for labels in row_labels for text in labels), default=0
    )
    title_lines = title.split("\n")
    geometry = layout(
        cell_width, tile, (len(tiles), len(column_labels)), label_width, len(title_lines)
    )
    sheet = Image.new("RGB", (geometry.width, geometry.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    x, y = geometry.title[:2]
    inner = geometry.title[2] - geometry.title[0]
    for i, line in enumerate(title_lines):
        lettering.draw(
            sheet,
            (x, y + i * _line_height(TITLE_SIZE)),
            fit(line, inner, TITLE_SIZE),
            TITLE_SIZE,
            INK if i == 0 else MUTED,
        )
    for text, box in zip(column_labels, geometry.columns, strict=True):
        text = fit(text, box[2] - box[0], LABEL_SIZE)
        left = box[0] + (box[2] - box[0] - _text_width(text, LABEL_SIZE)) // 2
        lettering.draw(sheet, (left, box[1]), text, LABEL_SIZE, INK)
    for labels, box in zip(row_labels, geometry.rows, strict=False):
        top = box[1] + (tile - len(labels) * _line_height(LABEL_SIZE)) // 2
        for i, text in enumerate(labels):
            lettering.draw(
                sheet, (box[0], top + i * _line_height(LABEL_SIZE)), text, LABEL_SIZE, INK
            )
    for row, boxes in zip(scaled, geometry.cells, strict=True):
        for image, box in zip(row, boxes, strict=True):
            if isinstance(image, str):
                draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=EMPTY)
                word = fit(image, box[2] - box[0] - 8, LABEL_SIZE)
                left = box[0] + (box[2] - box[0] - _text_width(word, LABEL_SIZE)) // 2
                lettering.draw(
                    sheet, (left, box[1] + tile // 2 - LABEL_SIZE // 2), word, LABEL_SIZE, MUTED
                )
                continue
            sheet.paste(image, (box[0] + (cell_width - image.width) // 2, box[1]))
    return sheet


__all__ = ["Layout", "draw_sheet", "fit", "layout"]
