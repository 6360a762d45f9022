"""The offline preview engine: a fast, deterministic stand-in for FLUX.2 Klein, drawn with Pillow.

A thin adapter: the engine interface (_base.py, the package docstring: steps reported through
on_step, step_delay, Cancelled when should_stop turns true) around the painter (_painter/, whose
docstring is the one place its inputs, outputs and determinism are written). Its pictures are
labelled as an offline stand-in, in a tag on the picture and in the file's metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from PIL import Image

from ...core._recipe import Recipe
from ._base import Cancelled, Engine, EngineConfig
from ._painter import ENGINE_NAME, SIZES, SOFTWARE, encode, paint, size_for


def make_engine(config: EngineConfig, slot: int) -> Engine:
    """The registry's factory (base.ENGINES): one painter per worker thread, no options."""
    return PreviewEngine()


class PreviewEngine:
    """Offline, deterministic image engine: what each parameter does is in _painter's docstring."""

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
        """Return (encoded bytes in recipe.output_format, content type: image/png,
        image/jpeg or image/webp)."""
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
        return encode(paint(recipe, inputs), recipe.output_format, recipe.output_quality)

    def preload(self) -> None:
        """Nothing to load: the painter draws with Pillow alone."""

    def image(self, recipe: Recipe, inputs: Sequence[Image.Image] = ()) -> Image.Image:
        """The picture before encoding: mode 'P' for standard-quality generations, else 'RGB'."""
        return paint(recipe, inputs)


__all__ = ["SIZES", "SOFTWARE", "PreviewEngine", "encode", "size_for"]
