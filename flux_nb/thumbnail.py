"""Small, deterministic PNG previews, so a notebook holds thumbnails and the full image stays on disk."""

from __future__ import annotations

import io

from PIL import Image

MAX_BYTES = 45_000  # base64 makes this about 60 KB in the .ipynb


def make_thumbnail(image: Image.Image, max_side: int = 320) -> bytes:
    """A PNG at most max_side pixels on its longer side, palette-reduced if still too large."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    data = _png(thumb)
    if len(data) > MAX_BYTES:
        data = _png(thumb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    return data


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
