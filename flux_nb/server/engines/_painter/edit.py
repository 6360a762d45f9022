"""Edits for the offline preview engine: the first input image, restyled in the prompt's colours.

The first input is centre-cropped to the aspect ratio, graded toward the scene's colours (dark land,
glow, horizon sky) with a strength that follows guidance, and given one of four looks chosen by the
seed: a flat poster (few colours), a soft glow, ink lines, or the scene's sun shining in. Further
inputs are shown as framed insets along the bottom, as the references they are.
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageChops, ImageFilter, ImageOps

from .palette import SKY, SKY_N, rotate
from .scene import Scene, rng_for

STYLES = ("poster", "glow", "ink", "sunlit")


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the aspect ratio of size and resize (quick box reduction for big inputs).

    The crop is made to whole pixels first: Pillow 13 resamples a fractional `box=` differently
    from Pillow 11 and 12, and the stand-in's pictures must not depend on the release."""
    w, h = image.size
    target = size[0] / size[1]
    if w / h > target:
        cw = h * target
        left = round((w - cw) / 2)
        box = (left, 0, left + max(1, round(cw)), h)
    else:
        ch = w / target
        top = round((h - ch) / 2)
        box = (0, top, w, top + max(1, round(ch)))
    cropped = image.convert("RGB").crop(box)
    return cropped.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


@lru_cache(maxsize=8)
def _vignette(width: int, height: int) -> Image.Image:
    """A mask for darkening the corners: 0 in the middle, about 100 in the corners;
    once per size."""
    g = Image.radial_gradient("L").resize((width // 8, height // 8), Image.Resampling.BILINEAR)
    g = g.point([max(0, min(100, (v - 110) * 100 // 100)) for v in range(256)])
    return g.resize((width, height), Image.Resampling.BILINEAR)


@lru_cache(maxsize=8)
def _glow_mask(diameter: int) -> Image.Image:
    """A soft round light, bright in the middle: a mask for the "sunlit" look."""
    g = ImageOps.invert(Image.radial_gradient("L")).resize(
        (diameter, diameter), Image.Resampling.BILINEAR
    )
    return g.point([max(0, v - 128) * 2 for v in range(256)])


def style_for(seed: int) -> str:
    return STYLES[rng_for("edit", seed).randrange(len(STYLES))]


def restyle(
    scene: Scene, inputs: list[Image.Image], width: int, height: int, *, fine: bool = False
) -> Image.Image:
    """The edited picture (RGB, width x height); fine (high quality) makes the glow look finer."""
    pal = scene.palette
    base = fit(inputs[0], (width, height))
    r = rng_for("edit-grade", scene.seed)
    dark, light = pal.rgb(pal["land3"]), pal.rgb(SKY + SKY_N - 1)
    mid = pal.rgb(pal["glow"]) if scene.reading.mood != "day" else pal.rgb(pal["land1"])
    mid = rotate(mid, r.uniform(-25, 25))
    strength = min(0.85, 0.26 + 0.06 * pal.guidance + r.uniform(0, 0.08))
    style = style_for(scene.seed)
    grey = base.convert("L")
    if style == "ink":
        edges = grey.filter(ImageFilter.FIND_EDGES).point(
            [255 - min(255, v * 4) for v in range(256)]
        )
        grey = ImageChops.multiply(grey, edges)
        strength = min(0.9, strength + 0.2)
    elif style == "glow":
        bloom = base.reduce(4 if fine else 8).filter(ImageFilter.GaussianBlur(8 if fine else 4))
        bloom = ImageChops.multiply(bloom, Image.new("RGB", bloom.size, mid))
        bloom = bloom.resize((width, height), Image.Resampling.BILINEAR)
        base = Image.blend(base, ImageChops.screen(base, bloom), 0.4)
    out = Image.blend(base, ImageOps.colorize(grey, dark, light, mid=mid), strength)
    if style == "poster":
        colours = out.reduce(8).quantize(10 + r.randrange(8), Image.Quantize.FASTOCTREE)
        out = out.quantize(palette=colours, dither=Image.Dither.NONE).convert("RGB")
    elif style == "sunlit":
        lay = scene.layout
        d = round(min(width, height) * 1.1)
        cx, cy = round(width * lay.sun_x), round(height * (0.15 + 0.25 * lay.sun_lift))
        out.paste(pal.rgb(pal["glow"]), (cx - d // 2, cy - d // 2), _glow_mask(d))
    out.paste(dark, (0, 0), _vignette(width, height))
    unit = (width * height) ** 0.5
    side, border, margin = round(unit * 0.17), max(2, round(unit / 300)), round(unit / 50)
    for k, extra in enumerate(inputs[1:4]):
        frame = Image.new("RGB", (side + 2 * border, side + 2 * border), (245, 243, 238))
        frame.paste(fit(extra, (side, side)), (border, border))
        out.paste(frame, (margin + k * (frame.width + margin), height - frame.height - margin))
    return out


__all__ = ["STYLES", "fit", "restyle", "style_for"]
