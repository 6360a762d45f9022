"""The public example pictures Oxen's docs pass as input_image, drawn locally.

Oxen's FLUX.2 Klein 4B page edits `https://hub.oxen.ai/api/repos/elau/assets/file/main/bloxy/
bloxy_cropped_512x512.png`. The local server answers that path (on its own host) with a picture of
the same size, so the page's examples run against it unchanged but for the host. It is a drawn
stand-in, not Oxen's file.
"""

from __future__ import annotations

import io
from functools import cache

DEMO_ASSETS = {"elau/assets/main/bloxy/bloxy_cropped_512x512.png": (512, 512)}


@cache
def demo_asset(key: str) -> bytes | None:
    """PNG bytes for a known example path ("namespace/repo/branch/path"), else None."""
    size = DEMO_ASSETS.get(key)
    if size is None:
        return None
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (96, 160, 220))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle(
        (w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(240, 200, 60), outline=(40, 40, 40), width=6
    )
    draw.ellipse((w // 3, h // 3, w // 3 + w // 10, h // 3 + h // 10), fill=(20, 20, 20))
    draw.ellipse((2 * w // 3 - w // 10, h // 3, 2 * w // 3, h // 3 + h // 10), fill=(20, 20, 20))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
