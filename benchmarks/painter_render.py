"""How long the offline painter takes to render and encode one picture (what a local server's
worker spends per generation), by recipe kind: median and spread of 15 renders each.

    python benchmarks/painter_render.py

This was a unit test's bound (median standard PNG under 50 ms) until issue 26: a timed test fails
on a loaded machine and proves nothing on a fast one; the figure belongs here.
"""

from __future__ import annotations

import statistics
import time

from PIL import Image

from flux_nb.core._recipe import Recipe
from flux_nb.server.engines import get_engine

CASES = {
    "standard png, 16:9": dict(prompt="a red fox in a snowy pine forest at dawn"),
    "high png, 1:1": dict(prompt="a neon city at night", aspect_ratio="1:1", output_quality="high"),
    "edit, one input": dict(prompt="make it a sunset", input_image=["x"]),
}
RUNS = 15


def main() -> None:
    engine = get_engine("preview")
    photo = Image.new("RGB", (640, 480), (200, 140, 60))
    print(f"painter render + encode, {RUNS} runs each (ms)")
    for name, params in CASES.items():
        params = dict(params)
        prompt = params.pop("prompt")
        inputs = [photo] if "input_image" in params else []
        times = []
        for seed in range(RUNS):
            recipe = Recipe.build(prompt, seed=seed, **params)
            start = time.perf_counter()
            engine.render(recipe, inputs)
            times.append((time.perf_counter() - start) * 1000)
        q = statistics.quantiles(times, n=4)
        print(f"{name:22} median {statistics.median(times):6.1f}  p25 {q[0]:6.1f}  p75 {q[2]:6.1f}")


if __name__ == "__main__":
    main()
