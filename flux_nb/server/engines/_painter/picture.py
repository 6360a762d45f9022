"""The picture before encoding: a scene drawn at the recipe's size, finished for its steps, tagged.

Standard quality is drawn once as palette indices (mode "P", at most 256 colours); high quality is
drawn at twice the size and reduced (mode "RGB"). Few steps make it coarse, speckled and muddier;
edits restyle the first input (edit.py) and are always RGB. Every picture carries a small
"offline preview" tag in its bottom-right corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw

from ....core import _lettering as lettering
from ....core._recipe import Recipe
from .edit import restyle
from .palette import SKY, SKY_N, mix
from .scene import Scene, rng_for

TAG_TEXT = "offline preview"

# Width x height per aspect ratio: ~1 MP, multiples of 16 (the hosted sizes are unknown).
SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
}

# Palette entries kept out of the scene's hands: noise speckles for unfinished pictures, the tag.
NOISE, NOISE_N = 244, 8
TAG_BG, TAG_TEXT_LEVELS = 252, (253, 254, 255)


def size_for(aspect_ratio: str) -> tuple[int, int]:
    """Output pixel size for an aspect ratio (16:9 if the ratio is unknown)."""
    return SIZES.get(aspect_ratio, SIZES["16:9"])


def roughness(steps: int) -> int:
    """Block size in output pixels for a step count: 1 (finished) from 20 steps up."""
    for limit, block in ((1, 16), (2, 12), (3, 10), (4, 8), (6, 6), (9, 4), (13, 3), (19, 2)):
        if steps <= limit:
            return block
    return 1


def detail_for(steps: int, high: bool) -> float:
    """How much texture to draw: grows with steps, more for high quality."""
    return max(0.25, min(1.8, steps / 28)) * (1.5 if high else 1.0)


def paint(recipe: Recipe, inputs: Sequence[Image.Image] = ()) -> Image.Image:
    """The picture for a recipe: mode "P" for standard-quality generations, else "RGB"."""
    width, height = size_for(recipe.aspect_ratio)
    steps = int(recipe.num_inference_steps)
    high = recipe.output_quality == "high"
    scene = Scene(recipe.prompt, int(recipe.seed), float(recipe.guidance_scale))
    block = roughness(steps)
    _finish_palette(scene, steps)
    if inputs:
        return _edited(scene, list(inputs), width, height, block, high)
    scale = 2 if high else 1
    w = max(16, round(width * scale / block))
    h = max(16, round(height * scale / block))
    index = scene.draw(w, h, detail_for(steps, high))
    if block > 1:
        _speckle(index, scene.seed, steps, block)
    palette = scene.palette.flat()
    if not high:
        if (w, h) != (width, height):
            index = index.resize((width, height), Image.Resampling.NEAREST)
        _tag_index(index)
        index.putpalette(palette)
        return index
    index.putpalette(palette)
    rgb = index.convert("RGB")
    if (w, h) == (width * 2, height * 2):
        rgb = rgb.reduce(2)
    else:
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    _tag_rgb(rgb, palette)
    return rgb


# ---- palette finishing, noise and the tag --------------------------------------------------------


def _finish_palette(scene: Scene, steps: int) -> None:
    """Reserve the noise and tag entries; muddy the colours of a picture with few steps."""
    pal = scene.palette
    mud = max(0.0, (12 - steps) / 12) * 0.45
    if mud:
        for i in range(NOISE):
            r, g, b = pal.entries[i]
            grey = (r * 299 + g * 587 + b * 114) // 1000
            pal.entries[i] = mix((r, g, b), (grey, grey, grey), mud)
    sources = [pal.rgb(SKY + i * (SKY_N - 1) // 2) for i in range(3)] + [
        pal.rgb(pal["land1"]),
        pal.rgb(pal["glow"]),
    ]
    rng = rng_for("noise-colours", scene.seed)
    for i in range(NOISE_N):
        one, two = rng.choice(sources), rng.choice(sources)
        pal.entries[NOISE + i] = mix(one, two, rng.random())
    pal.entries[TAG_BG] = (28, 30, 34)
    for idx, level in zip(TAG_TEXT_LEVELS, (0.35, 0.65, 0.92), strict=True):
        pal.entries[idx] = mix((28, 30, 34), (236, 236, 232), level)


def _speckle(index: Image.Image, seed: int, steps: int, block: int) -> None:
    """Unfinished pictures: a share of their (coarse) pixels replaced by coloured noise."""
    r = rng_for("speckle", seed, steps)
    n = index.width * index.height
    share = min(0.2, 0.014 * block)
    cut = round(256 * share)
    mask = Image.frombytes("L", index.size, r.randbytes(n)).point(
        [255 if v < cut else 0 for v in range(256)]
    )
    noise = Image.frombytes("L", index.size, r.randbytes(n)).point(
        [NOISE + v % NOISE_N for v in range(256)]
    )
    index.paste(noise, (0, 0), mask)


@lru_cache(maxsize=16)
def _tag_patch(unit: int) -> tuple[Image.Image, Image.Image]:
    """The "offline preview" tag as palette indices and its rounded mask;
    unit = sqrt(picture area)."""
    size = max(10, round(unit * 0.75 / 56))
    letters = lettering.mask(TAG_TEXT, size)
    pad_x, pad_y = round(size * 0.6), round(size * 0.35)
    w, h = letters.width + 2 * pad_x, letters.height + 2 * pad_y
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, h - 1), radius=h // 2, fill=255)
    text = Image.new("L", (w, h), 0)
    text.paste(letters, (pad_x, pad_y))
    patch = Image.new("L", (w, h), TAG_BG)
    for idx, cut in zip(TAG_TEXT_LEVELS, (40, 110, 180), strict=True):
        patch.paste(idx, (0, 0), text.point([255 if v >= cut else 0 for v in range(256)]))
    return patch, mask


def _tag_unit(image: Image.Image) -> int:
    return round((image.width * image.height) ** 0.5)


def _tag_box(image: Image.Image, patch: Image.Image) -> tuple[int, int]:
    margin = max(6, round(_tag_unit(image) / 80))
    return image.width - patch.width - margin, image.height - patch.height - margin


def _tag_index(index: Image.Image) -> None:
    patch, mask = _tag_patch(_tag_unit(index))
    index.paste(patch, _tag_box(index, patch), mask)


def _tag_rgb(image: Image.Image, palette: list[int]) -> None:
    patch, mask = _tag_patch(_tag_unit(image))
    coloured = patch.copy()
    coloured.putpalette(palette)
    image.paste(coloured.convert("RGB"), _tag_box(image, patch), mask)


# ---- edits -------------------------------------------------------------------------------------


def _edited(
    scene: Scene, inputs: list[Image.Image], width: int, height: int, block: int, high: bool
) -> Image.Image:
    """An edit: the restyled input (truecolour at either quality),
    made rough for few steps, tagged."""
    rgb = restyle(scene, inputs, width, height, fine=high)
    if block > 1:
        small = rgb.reduce(block)
        noise = Image.frombytes(
            "L",
            small.size,
            rng_for("edit-noise", scene.seed, block).randbytes(small.width * small.height),
        )
        small = Image.blend(
            small, Image.merge("RGB", (noise, noise, noise)), min(0.3, 0.025 * block)
        )
        rgb = small.resize(
            (width, height), Image.Resampling.BILINEAR if high else Image.Resampling.NEAREST
        )
    _tag_rgb(rgb, scene.palette.flat())
    return rgb
