"""What reading a saved file's recipe costs: read_recipe on 1 MP PNG, JPEG and WebP files, against
the metadata module of an earlier commit, measured in the same run.

    python benchmarks/metadata_read.py [--against 2a104f1] [-n 50]

Each version reads the files its own writer made (same picture, recipe, extras and `parameters`);
"now, old file" is today's reader on the earlier writer's file (the path taken for files users
already have: for PNG, Pillow's chunk reader seeks past IDAT to the recipe after it). Median of n
reads from the page cache, in milliseconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from PIL import Image

import flux_nb
from flux_nb.core._recipe import Recipe
from flux_nb.files import _metadata as metadata
from flux_nb.files._infotext import format_parameters

EXTRA = {"generation_id": "gen-bench", "backend": "local", "created": "2026-11-30T00:00:00Z"}


def today(flat: str) -> str:
    """Where the flat module `flat` (errors, recipe, ...) lives now: flux_nb.core._errors."""
    for room in ("core", "files", "api", "jobs", "notebook"):
        if importlib.util.find_spec(f"flux_nb.{room}._{flat}") is not None:
            return f"flux_nb.{room}._{flat}"
    raise ModuleNotFoundError(f"flux_nb has no module {flat} any more")


def module_at(commit: str) -> types.ModuleType:
    """flux_nb/metadata.py as it was at `commit`, importable beside today's package."""
    root = Path(flux_nb.__file__).parent.parent
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{commit}:flux_nb/metadata.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # That commit's flat layout: its `from .errors import ...` names today's private modules.
    source = re.sub(r"from \.(\w+) import", lambda m: f"from {today(m[1])} import", source)
    module = types.ModuleType("flux_nb._metadata_before")
    module.__package__ = "flux_nb"
    exec(compile(source, f"{commit}:flux_nb/metadata.py", "exec"), module.__dict__)
    return module


def picture() -> Image.Image:
    """1024x1024, photo-like enough that no encoder finds it trivial: gradients under noise."""
    noise = Image.effect_noise((1024, 1024), 40)
    grad = Image.radial_gradient("L").resize((1024, 1024))
    return Image.merge("RGB", (grad, noise, Image.linear_gradient("L").resize((1024, 1024))))


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    options = {"png": {"compress_level": 1}, "jpg": {"quality": 90}, "webp": {"quality": 80}}
    image.save(buf, {"jpg": "JPEG"}.get(fmt, fmt.upper()), **options[fmt])
    return buf.getvalue()


def median_ms(read, path: Path, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        read(path)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="2a104f1", help="the commit to compare with")
    parser.add_argument("-n", type=int, default=50)
    args = parser.parse_args()
    before = module_at(args.against)
    recipe = Recipe.build("a lighthouse at dusk", seed=1234)
    image = picture()
    print(f"read_recipe, median of {args.n}, ms (1024x1024; before = {args.against})")
    print(f"{'format':8}{'file KB':>9}{'before':>9}{'now':>9}{'now, old file':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("png", "jpg", "webp"):
            data = encode(image, fmt)
            text = format_parameters(recipe, image.size)
            paths = {}
            for label, module in (("before", before), ("now", metadata)):
                paths[label] = Path(tmp) / f"{label}.{fmt}"
                paths[label].write_bytes(
                    module.embed_recipe(data, fmt, recipe.to_json(), EXTRA, parameters=text)
                )
            # today's reader reads both files; the old one its own (JPEG recipes moved from an
            # APP11 segment to XMP since, which the old reader does not look for)
            for path in paths.values():
                assert metadata.read_recipe(path)["recipe"] == json.loads(recipe.to_json())
            assert before.read_recipe(paths["before"])["recipe"] == json.loads(recipe.to_json())
            old = median_ms(before.read_recipe, paths["before"], args.n)
            new = median_ms(metadata.read_recipe, paths["now"], args.n)
            cross = median_ms(metadata.read_recipe, paths["before"], args.n)
            size = paths["now"].stat().st_size / 1024
            print(f"{fmt:8}{size:9.0f}{old:9.2f}{new:9.2f}{cross:15.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
