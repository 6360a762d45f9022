"""Encoding: PNG, JPEG or WebP bytes that say in their metadata which engine drew them."""

from __future__ import annotations

import io
import zlib

from PIL import Image, PngImagePlugin

from .._base import CONTENT_TYPES, JPEG_QUALITY, WEBP_QUALITY, software_exif

SOFTWARE = "flux-nb offline preview engine (not FLUX.2 Klein)"
ENGINE_NAME = "preview"  # the PNG's flux_nb_engine text: the engine interface's name for it
EXIF = software_exif(SOFTWARE, description=True)  # JPEG and WebP: the label in EXIF


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
            exif=EXIF,  # no COM segment (files/_metadata.py)
        )
    elif output_format == "webp":
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        rgb.save(buf, "WEBP", quality=WEBP_QUALITY.get(quality, 80), method=0, exif=EXIF)
    else:
        raise ValueError(f"output_format={output_format!r} is not one of png, jpg, webp")
    return buf.getvalue(), CONTENT_TYPES[output_format]
