"""Small, deterministic PNG previews,
so a notebook holds thumbnails and the full image stays on disk.

The runner makes them on the download's thread as soon as an image is downloaded, before it
saves the file, so the card only sets ready bytes. They must be cheap: a bilinear reduction and a
fast-octree palette encode, about 10 ms and 5-25 KB for a 1 MP picture (an `optimize=True`
truecolour encode took 100-300 ms and held up the kernel). Decoding the full image costs more
(about 30 ms for a 0.7 MB truecolour PNG on 2 shared cores), so one decode serves every size.
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


def make_thumbnail(image: Image.Image, max_side: int = 320) -> bytes:
    """A 256-colour PNG at most max_side pixels on its longer side.

    The pixels of `image.convert("RGB").thumbnail(...)`, without its first step: for an RGB
    picture, convert() copies all of it (4 MB for 1 MP, fresh memory the kernel faults in page
    by page in a busy process) only for thumbnail() to shrink the copy in place."""
    thumb = image if image.mode == "RGB" else image.convert("RGB")
    size = fitted(thumb.size, max_side)
    if size != thumb.size:
        thumb = thumb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    thumb.quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


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
