"""The preview engine's painter: a recipe in, a flat poster-style landscape out, drawn with Pillow.

This package is private to the preview engine (server/engines/_preview.py, which puts it behind the
engine interface of server/engines/_base.py: steps, cancelling, progress). Nothing else imports it.
Its whole contract:

Takes
    recipe  a validated flux_nb Recipe. prompt picks the mood, colours and the subject it
            recognises; seed fixes the composition (the same seed keeps its layout under another
            prompt); aspect_ratio picks the size (SIZES, ~1 MP, multiples of 16; unknown ratios
            get 16:9); num_inference_steps below 20 leaves the picture unfinished (coarser,
            speckled, muddier the fewer), from 20 up more steps add texture; guidance_scale is
            how strongly the prompt's colours come through (0 grey, 2 neutral, 10 vivid);
            output_quality "high" draws at twice the size and reduces (anti-aliased, finer
            texture, several times slower); output_format only matters to encode().
    inputs  the decoded input images, in the recipe's order (their URLs in the recipe are not
            read here). With inputs the picture is an edit: the first is centre-cropped to the
            aspect ratio and restyled in the prompt's colours (the seed picks one of four looks,
            guidance its strength); the 2nd to 4th are framed insets along the bottom.

Returns
    paint(recipe, inputs)   a PIL image of exactly size_for(recipe.aspect_ratio): mode "P" (at
                            most 256 colours) for a standard-quality generation, "RGB" for high
                            quality and for every edit. A small "offline preview" tag sits in its
                            bottom-right corner.
    encode(image, output_format, output_quality) -> (bytes, content type): PNG (palette or
                            truecolour, zlib level 1), JPEG quality 85 4:2:0 / 95 4:4:4, or WebP
                            80 / 92 (base.JPEG_QUALITY, base.WEBP_QUALITY), each saying SOFTWARE
                            in its metadata (PNG text, JPEG and WebP EXIF).

Determinism
    The same recipe and the same input pixels give the same pixels and the same bytes, in any
    process, thread or PYTHONHASHSEED: all randomness comes from random.Random instances seeded
    with sha256 of the recipe's values (scene.rng_for), never from the global RNG, the clock,
    hash() or set order. The lru_caches hold pure functions of their arguments and are never
    drawn on (a Scene copies the cached palette before it adds colours). Pinned pixel digests
    in tests/test_engine.py keep the pictures unchanged across refactors.

Does not promise
    Any likeness to what FLUX.2 Klein makes of a prompt; the same bytes under another Pillow,
    zlib, libjpeg or libwebp build (the encoders and the built-in font may change them); being
    safe to call from several threads at once (the server makes one engine per worker thread);
    speed (standard PNG about 7 ms on a slow 2-core box, high quality and edits several times
    that).
"""

from __future__ import annotations

from .encode import ENGINE_NAME, SOFTWARE, encode
from .picture import SIZES, paint, size_for

__all__ = ["ENGINE_NAME", "SIZES", "SOFTWARE", "encode", "paint", "size_for"]
