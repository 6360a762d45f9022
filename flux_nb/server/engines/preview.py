"""The offline preview engine: a fast, deterministic stand-in for FLUX.2 Klein, drawn with Pillow.

It honours every parameter of the model so notebooks behave as they would against the hosted API,
but it draws a flat, poster-style landscape read from the prompt (mood, colour words, a few nouns)
with the seed fixing the composition. It is labelled as an offline stand-in in the picture (a small
"offline preview" tag) and in the file's metadata.

Choices, since the hosted model's exact behaviour is unknown:

- Sizes: about one megapixel, multiples of 16, the usual FLUX/SDXL buckets (see SIZES).
- output_quality "standard": an indexed-colour picture (at most 256 colours, hard edges), written as
  an 8-bit palette PNG (decodes as mode "P": convert("RGB") before resizing or array maths), or
  JPEG quality 85 (4:2:0) / WebP quality 80. Fast: about 7 ms for PNG or JPEG on a slow 2-core box.
  "high": the same scene drawn at twice the size and downsampled (anti-aliased edges), with finer
  ridges and more texture, written as truecolour PNG, JPEG quality 95 (4:4:4) or WebP quality 92.
  Several times slower (the bigger drawing and the truecolour PNG cost most).
- num_inference_steps: below 20 steps the picture is unfinished: drawn coarser (blocky in standard,
  blurred in high), with speckles of noise and muddier colour, the fewer steps the rougher. From 20
  up it is sharp, and more steps add texture (grass, stars, ripples, ridge detail).
- guidance_scale: how strongly the prompt's colours come through: 0 washes them out toward grey, the
  default 2.0 is neutral, 10 over-saturates and raises contrast.
- Edits (input images): the first input is cropped to the aspect ratio and restyled in the prompt's
  colours (the seed picks the look, guidance its strength); further inputs appear as framed insets.
  Edits are truecolour at both qualities (an indexed photo bands badly), so they cost more.
- Same recipe and inputs, same bytes, in any process: randomness comes from sha256 of the recipe.
"""

from __future__ import annotations

import io
import time
import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from ...recipe import Recipe
from ._preview_edit import restyle
from ._preview_palette import SKY, SKY_N, mix
from ._preview_scene import Scene, rng_for
from .base import CONTENT_TYPES, JPEG_QUALITY, WEBP_QUALITY, Cancelled

SOFTWARE = "flux-nb offline preview engine (not FLUX.2 Klein)"
ENGINE_NAME = "preview"
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


class PreviewEngine:
    """Offline, deterministic image engine; see the module docstring for what each parameter does."""

    name = ENGINE_NAME

    def render(
        self,
        recipe: Recipe,
        inputs: Sequence[Image.Image],
        *,
        on_step: Callable[[int, int], object] | None = None,
        should_stop: Callable[[], bool] | None = None,
        step_delay: float = 0.0,
    ) -> tuple[bytes, str]:
        """Return (encoded bytes in recipe.output_format, content type: image/png, image/jpeg or image/webp)."""
        total = int(recipe.num_inference_steps)
        for i in range(1, total + 1):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled before step {i} of {total}")
            if step_delay > 0:
                time.sleep(step_delay)
            if on_step is not None:
                on_step(i, total)
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled after step {total} of {total}")
        return encode(self.image(recipe, inputs), recipe.output_format, recipe.output_quality)

    def image(self, recipe: Recipe, inputs: Sequence[Image.Image] = ()) -> Image.Image:
        """The picture before encoding: mode 'P' for standard-quality generations, else 'RGB'."""
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


# ---- palette finishing, noise and the tag ---------------------------------------------------------


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
    """The "offline preview" tag as palette indices and its rounded mask; unit = sqrt(picture area)."""
    size = max(10, round(unit * 0.75 / 56))
    font = ImageFont.load_default(size)
    left, top, right, bottom = font.getbbox(TAG_TEXT)
    pad_x, pad_y = round(size * 0.6), round(size * 0.35)
    w, h = int(right - left) + 2 * pad_x, int(bottom - top) + 2 * pad_y  # ints, typed float
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, h - 1), radius=h // 2, fill=255)
    text = Image.new("L", (w, h), 0)
    ImageDraw.Draw(text).text((pad_x - left, pad_y - top), TAG_TEXT, fill=255, font=font)
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
    """An edit: the restyled input (truecolour at either quality), made rough for few steps, tagged."""
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


# ---- encoding ----------------------------------------------------------------------------------


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010E] = SOFTWARE  # ImageDescription
    exif[0x0131] = SOFTWARE  # Software
    return exif


def encode(image: Image.Image, output_format: str, quality: str = "standard") -> tuple[bytes, str]:
    """Encode with the engine's label in the metadata; returns (bytes, content type)."""
    buf = io.BytesIO()
    if output_format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", SOFTWARE)
        info.add_text("flux_nb_engine", ENGINE_NAME)
        # Indexed pictures: zlib's run-length strategy is faster and smaller here (Pillow passes
        # compress_type to zlib as the strategy; an older Pillow that ignores it still works).
        strategy = zlib.Z_RLE if image.mode == "P" else zlib.Z_DEFAULT_STRATEGY
        image.save(buf, "PNG", pnginfo=info, compress_level=1, compress_type=strategy)
    elif output_format == "jpg":
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        rgb.save(
            buf,
            "JPEG",
            quality=JPEG_QUALITY.get(quality, 85),
            subsampling=0 if quality == "high" else 2,
            comment=SOFTWARE,
            exif=_exif(),
        )
    elif output_format == "webp":
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        rgb.save(buf, "WEBP", quality=WEBP_QUALITY.get(quality, 80), method=0, exif=_exif())
    else:
        raise ValueError(f"output_format={output_format!r} is not one of png, jpg, webp")
    return buf.getvalue(), CONTENT_TYPES[output_format]


__all__ = ["SIZES", "SOFTWARE", "PreviewEngine", "encode", "size_for"]
