"""Sweeps: axis parsing and expansion (pure),
then real grids on the local server and their sheet."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from flux_nb.core._errors import ValidationError
from flux_nb.core._recipe import bundled_schema
from flux_nb.files import _sheet as sheet_module
from flux_nb.jobs._sweeps import (
    MAX_CELLS,
    Sweep,
    fill_prompt,
    make_axis,
    parameter_name,
    parse_axis,
    plan,
    prompt_axes,
    split_axes,
    start,
)

SCHEMA = bundled_schema()


# -- axes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "param"),
    [
        ("steps", "num_inference_steps"),
        ("--steps", "num_inference_steps"),
        ("num_inference_steps", "num_inference_steps"),
        ("guidance", "guidance_scale"),
        ("a", "aspect_ratio"),
        ("aspect", "aspect_ratio"),
        ("seed", "seed"),
        ("quality", "output_quality"),
        ("format", "output_format"),
    ],
)
def test_any_option_by_flag_or_parameter_name(name, param):
    assert parameter_name(name) == param


def test_unknown_option_names_the_close_one():
    with pytest.raises(ValidationError, match=r"cannot sweep 'stpes'.*Did you mean steps\?"):
        parameter_name("stpes")
    with pytest.raises(ValidationError, match="cannot sweep 'prompt'"):
        parameter_name("prompt")  # prompt alternatives are written {a|b} in the prompt


def test_parse_axis_coerces_by_schema_type_and_labels_by_flag():
    steps = parse_axis("steps=4, 8,16", SCHEMA)
    assert (steps.name, steps.values, steps.labels) == (
        "num_inference_steps",
        (4, 8, 16),
        ("steps 4", "steps 8", "steps 16"),
    )
    guidance = parse_axis("guidance_scale=1,2.5", SCHEMA)
    assert guidance.values == (1, 2.5) and guidance.labels == ("guidance 1", "guidance 2.5")
    aspect = parse_axis("-a=1:1,16:9", SCHEMA)
    assert aspect.values == ("1:1", "16:9") and aspect.title == "aspect"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps=4,x", r"steps='x' is not a whole number"),
        ("guidance=1,lots", r"guidance='lots' is not a number"),
        ("steps=4,60", r"steps=60 is out of range \(allowed: integer from 1 to 50\)"),
        ("aspect=1:1,2:1", r"aspect='2:1' is not valid \(allowed: 1:1, 16:9"),
        ("steps=4,4", r"a value is given twice"),
        ("steps=", r"no values to sweep"),
        ("steps", r"write NAME=V1,V2"),
    ],
)
def test_bad_values_are_refused_in_one_line_before_anything_is_sent(text, message):
    with pytest.raises(ValidationError, match=message) as caught:
        parse_axis(text, SCHEMA)
    assert "\n" not in str(caught.value)


def test_prompt_alternatives_expand_each_group():
    (colour,) = prompt_axes("a {red|blue|green} fox")
    assert colour.values == ("red", "blue", "green") and colour.title == "prompt"
    two = prompt_axes("a {big|small} {cat|dog}")
    assert [a.title for a in two] == ["prompt 1", "prompt 2"]
    assert prompt_axes("a {literal} brace and no choice") == []
    assert fill_prompt("a {|very} big {cat|dog}", ["", "dog"]) == "a big dog"


def test_plan_row_by_row_same_seed_unless_swept():
    todo = plan(
        "a {red|blue|green} fox",
        [parse_axis("steps=4,8", SCHEMA)],
        SCHEMA,
        aspect_ratio="1:1",
    )
    assert todo.shape == (2, 3)
    got = [(r.prompt, r.num_inference_steps) for r in todo.recipes]
    assert got == [
        ("a red fox", 4),
        ("a blue fox", 4),
        ("a green fox", 4),
        ("a red fox", 8),
        ("a blue fox", 8),
        ("a green fox", 8),
    ]
    assert len({r.seed for r in todo.recipes}) == 1  # drawn once, shared by every cell
    assert {r.aspect_ratio for r in todo.recipes} == {"1:1"}
    seeds = plan("a fox", [make_axis("seed", [1, 2, 3], SCHEMA)], SCHEMA)
    assert [r.seed for r in seeds.recipes] == [1, 2, 3]


def test_plan_refuses_what_it_cannot_make():
    steps = parse_axis("steps=4,8", SCHEMA)
    with pytest.raises(ValidationError, match="a sweep needs something to vary"):
        plan("a fox", [], SCHEMA)
    with pytest.raises(ValidationError, match="steps is both set and swept"):
        plan("a fox", [steps], SCHEMA, num_inference_steps=4)
    with pytest.raises(ValidationError, match="steps is swept twice"):
        plan("a fox", [steps, parse_axis("num_inference_steps=2,3", SCHEMA)], SCHEMA)
    big = make_axis("seed", list(range(MAX_CELLS // 2 + 1)), SCHEMA)
    with pytest.raises(
        ValidationError, match=rf"2 x {MAX_CELLS // 2 + 1} = .* at most {MAX_CELLS}"
    ):
        plan("a fox", [parse_axis("quality=standard,high", SCHEMA), big], SCHEMA)
    with pytest.raises(ValidationError, match="prompt is empty"):
        plan("{ |x}", [], SCHEMA)


def test_python_keywords_lists_are_axes_scalars_are_fixed():
    axes, fixed = split_axes(
        {"steps": [4, 8], "guidance": (1, 2), "seed": 7, "input_image": ["a.png", "b.png"]}, SCHEMA
    )
    assert [a.name for a in axes] == ["num_inference_steps", "guidance_scale"]
    assert fixed == {"seed": 7, "input_image": ["a.png", "b.png"]}
    with pytest.raises(ValidationError, match="give the values to sweep as a list"):
        make_axis("steps", 4, SCHEMA)


# -- grids on the real local server ----------------------------------------------------------


def test_sweep_cells_are_generations_with_their_own_recipes(session):
    grid = start(
        session,
        plan(
            "a {red|blue|green} fox",
            [parse_axis("steps=2,4", SCHEMA)],
            SCHEMA,
            seed=7,
            aspect_ratio="1:1",
        ),
    )
    assert isinstance(grid, Sweep) and grid.shape == (2, 3) and len(grid) == 6
    grid.wait(30)
    assert grid.done and all(g.status == "succeeded" and g.path for g in grid)
    assert grid[1, 2].recipe.prompt == "a green fox" and grid[1, 2].recipe.num_inference_steps == 4
    assert grid[0, 0] is grid[0] and grid[-1, -1] is grid[5]
    assert grid.column_labels == ["red", "blue", "green"]
    assert grid.row_labels == [["steps 2"], ["steps 4"]]
    again = grid[0, 1].reproduce().wait(30)  # every cell is an ordinary Generation
    assert again.recipe == grid[0, 1].recipe
    assert "2 x 3 sweep" in repr(grid) and "all 6 done" in grid.describe()
    with pytest.raises(IndexError):
        grid[2, 0]


def _ink(image: Image.Image, box) -> int:
    """Dark pixels inside a box: text drawn there."""
    region = image.crop(box).convert("L")
    return sum(region.histogram()[:128])


def test_saved_sheet_has_the_grid_size_title_band_and_labels(session, tmp_path):
    tile = 96
    grid = start(
        session,
        plan(
            "a lighthouse",
            [parse_axis("steps=2,8,20", SCHEMA), parse_axis("guidance=1,4", SCHEMA)],
            SCHEMA,
            seed=11,
            aspect_ratio="1:1",
        ),
    )
    path = grid.save(tmp_path / "sheet.png", tile=tile, timeout=30)  # waits for every cell
    assert grid.done
    with Image.open(path) as im:
        sheet = im.convert("RGB")
    rows, cols = grid.shape
    assert (rows, cols) == (2, 3)
    label_w = max(
        sheet_module._text_width(t, sheet_module.LABEL_SIZE) for t in ("guidance 1", "guidance 4")
    )
    geometry = sheet_module.layout(tile, tile, (rows, cols), label_w, title_lines=2)
    m, gap = sheet_module.MARGIN, sheet_module.GAP
    assert sheet.size == (geometry.width, geometry.height)
    assert geometry.width == m + label_w + gap + cols * tile + (cols - 1) * gap + m
    title_band = geometry.cells[0][0][1] - m
    assert geometry.height == m + title_band + rows * tile + (rows - 1) * gap + m
    assert title_band >= 2 * sheet_module.TITLE_SIZE + sheet_module.LABEL_SIZE
    # Each cell holds its own image, scaled to the tile.
    for r in range(rows):
        for c in range(cols):
            box = geometry.cells[r][c]
            want = grid[r, c].image.convert("RGB").resize((tile, tile), Image.LANCZOS)
            assert ImageChops.difference(sheet.crop(box), want).getbbox() is None
    # Text where the labels go: the title, every column label and every row label.
    assert _ink(sheet, geometry.title) > 50
    for box in geometry.columns + geometry.rows:
        assert _ink(sheet, box) > 20, box
    # ... and nothing between the cells.
    left, top, right, _ = geometry.cells[0][0]
    assert _ink(sheet, (right, top, right + gap, top + tile)) == 0


def test_sheet_of_one_axis_has_no_row_labels(session):
    grid = start(session, plan("a {cat|dog}", [], SCHEMA, seed=3, aspect_ratio="16:9"))
    image = grid.sheet(tile=64, timeout=30)
    assert grid.row_labels == [[]]
    width, height = grid[0].image.size
    geometry = sheet_module.layout(round(width * 64 / height), 64, (1, 2), 0, title_lines=2)
    assert image.size == (geometry.width, geometry.height) and geometry.rows == []
    assert geometry.cells[0][0][0] == sheet_module.MARGIN  # no label column on the left


def test_save_refuses_an_unwritable_place_in_one_line(session, tmp_path):
    grid = start(session, plan("a {cat|dog}", [], SCHEMA, seed=3, num_inference_steps=2))
    (tmp_path / "file").write_text("x")
    from flux_nb.core._errors import StorageError

    with pytest.raises(StorageError, match="Could not save the sheet"):
        grid.save(tmp_path / "file" / "sheet.png", tile=32, timeout=30)
