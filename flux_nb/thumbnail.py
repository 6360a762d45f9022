"""Small, deterministic PNG previews, so a notebook holds thumbnails and the full image stays on disk.

The runner makes them on the download's thread as soon as an image is downloaded, before it
saves the file, so the card only sets ready bytes. They must be cheap: a bilinear reduction and a
fast-octree palette encode, about 10 ms and 5-25 KB for a 1 MP picture (an `optimize=True`
truecolour encode took 100-300 ms and held up the kernel). Decoding the full image costs more
(about 30 ms for a 0.7 MB truecolour PNG on 2 shared cores), so one decode serves every size.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
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
    """A 256-colour PNG at most max_side pixels on its longer side."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    thumb.quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def thumbnails(data: bytes, sides: Iterable[int]) -> dict[int, bytes]:
    """Thumbnails of the encoded image `data`, one per longest side in `sides`, from one decode;
    the same bytes as make_thumbnail(decode(data), side)."""
    image = decode(data)
    return {side: make_thumbnail(image, side) for side in sorted(set(sides))}
