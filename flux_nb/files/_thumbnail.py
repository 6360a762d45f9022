"""Small, deterministic previews,
so a notebook holds thumbnails and the full image stays on disk.

The runner makes them on the download's thread as soon as an image is downloaded, before it saves
the file, so the card only sets ready bytes. They must be cheap: a box reduction and a short
bicubic step, then a JPEG for a photograph (under 1 ms an encode; a few when the first is over its
byte budget) or a fast-octree palette PNG for a picture of few colours (exact and small; 5 ms with
its quantize). A photograph's 256-colour PNG bands its skies: for a smooth 1344x768 picture at 320
px, 12.5 KB at 29 dB PSNR against 4.5 KB at 43 dB as JPEG. (An `optimize=True` truecolour PNG took
100-300 ms and held up the kernel.) Decoding the full image costs more (about 30 ms for a 0.7 MB
truecolour PNG on 2 shared cores),
so one decode serves every size. `mime_type` says which kind a thumbnail is.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image


def decode(source: bytes | str | Path) -> Image.Image:
    """The image fully read (bytes or a path), palette and grey images given as colours: what
    Generation.image shows and what thumbnails are made from."""
    image: Image.Image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.load()  # before anyone else sees it: another thread must never get a half-read image
    if image.mode in ("P", "PA", "L", "LA"):  # palette PNGs: give colours, not indices
        rgba = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if rgba else "RGB")
    return image


# Pillow's reducing_gap=1.0: box-average by the whole factor first (4x for 1344 -> 320), then a
# short bicubic step. 2.2 ms at 1 MP against 3.4 for the bilinear reducing_gap=2.0 used before,
# and nearer a Lanczos resize of the whole picture (37 against 35 dB PSNR on the painter's noisy
# pictures, 53 against 52 on smooth ones).
RESAMPLE, REDUCING_GAP = Image.Resampling.BICUBIC, 1.0
PHOTO_QUALITY = 85  # a photograph's thumbnail: JPEG 4:2:0, as sharp as the 320 px it is shown at
# A saved notebook holds each preview twice (the card's widget state for JupyterLab, the output's
# image/jpeg for GitHub): a photograph's thumbnail gets at most this many bytes per pixel (8 KB
# for 320x183), lowering its quality only as far as needed, never below PHOTO_LEAST_QUALITY.
# Smooth pictures stay at PHOTO_QUALITY (4.2 KB, 46 dB PSNR for a smooth 1344x768 at 320 px);
# the offline engine's noisy truecolour ones, the hardest case, went from 19.6 KB at q85 (31.9 dB)
# to 8.4 KB at q40 (28.6 dB): their noise is what q85 spent its bytes on.
PHOTO_BYTES_PER_PIXEL = 0.14
PHOTO_LEAST_QUALITY = 40


def make_thumbnail(image: Image.Image, max_side: int = 320) -> bytes:
    """A thumbnail at most max_side pixels on its longer side: a JPEG for a photograph, a
    256-colour PNG for a picture of few colours (flat art, greys), where JPEG would smear edges.

    The pixels of `image.convert("RGB").thumbnail(...)`, without its first step: for an RGB
    picture, convert() copies all of it (4 MB for 1 MP, fresh memory the kernel faults in page
    by page in a busy process) only for thumbnail() to shrink the copy in place."""
    thumb = image if image.mode == "RGB" else image.convert("RGB")
    size = fitted(thumb.size, max_side)
    flat = few_colours(thumb, size)
    if size != thumb.size:
        thumb = thumb.resize(size, RESAMPLE, reducing_gap=REDUCING_GAP)
    if flat:
        return palette_png(thumb)
    return _jpeg_within(thumb, int(PHOTO_BYTES_PER_PIXEL * thumb.width * thumb.height))


def palette_png(
    image: Image.Image,
    method: Image.Quantize | None = Image.Quantize.FASTOCTREE,
    optimize: bool = False,
) -> bytes:
    """The picture in 256 colours as a PNG: thumbnails of flat art, contact sheets and strips.
    The defaults (fast octree, zlib level 6) are cheap enough for a runner thread; a caller
    that may take longer asks for Pillow's own choice of method (None: median cut for RGB) and
    `optimize` (zlib level 9), as the sweep's contact sheet does."""
    buf = io.BytesIO()
    image.quantize(256, method=method).save(buf, format="PNG", compress_level=6, optimize=optimize)
    return buf.getvalue()


def _jpeg_within(image: Image.Image, budget: int) -> bytes:
    """The JPEG of the highest quality (PHOTO_QUALITY at most) that fits `budget` bytes, found
    in at most 2 + 6 encodes (about 1 ms each at 320 px); PHOTO_LEAST_QUALITY when none fits."""

    def encode(quality: int) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality, optimize=True)
        return buf.getvalue()

    best = encode(PHOTO_QUALITY)
    if len(best) <= budget:
        return best
    low, high = PHOTO_LEAST_QUALITY, PHOTO_QUALITY - 1  # the answer lies in [low, high]
    best = encode(low)
    if len(best) > budget:
        return best
    while low < high:
        middle = (low + high + 1) // 2
        data = encode(middle)
        if len(data) <= budget:
            low, best = middle, data
        else:
            high = middle - 1
    return best


def few_colours(image: Image.Image, size: tuple[int, int]) -> bool:
    """Whether the picture, sampled at the thumbnail's size without blending, has at most 256
    colours: 0.3 ms, where counting all of a 1 MP flat picture's took 3 ms (a photograph stops
    the count within its first row either way)."""
    sample = image if size == image.size else image.resize(size, Image.Resampling.NEAREST)
    return sample.getcolors(256) is not None


def mime_type(thumb: bytes) -> str:
    """image/jpeg or image/png: what make_thumbnail made (a view needs it to show the bytes)."""
    return "image/jpeg" if thumb[:3] == b"\xff\xd8\xff" else "image/png"


def widget_format(thumb: bytes) -> str:
    """The format an ipywidgets Image must be given to show the bytes: "jpeg" or "png"."""
    return mime_type(thumb).split("/")[1]


def fitted(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size Image.thumbnail((max_side, max_side)) gives a picture of `size` (Pillow's rule,
    aspect ratio kept with its rounding; tests/test_thumbnail.py holds the two together)."""
    width, height = size
    if max_side >= width and max_side >= height:
        return size
    aspect = width / height

    def round_aspect(number: float, key: Callable[[int], float]) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    x = y = max_side
    if x / y >= aspect:
        x = round_aspect(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = round_aspect(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


def thumbnails(data: bytes, sides: Iterable[int]) -> dict[int, bytes]:
    """Thumbnails of the encoded image `data`, one per longest side in `sides`, from one decode;
    the same bytes as make_thumbnail(decode(data), side)."""
    image = decode(data)
    return {side: make_thumbnail(image, side) for side in sorted(set(sides))}
