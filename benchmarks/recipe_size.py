"""What an input image costs in a recipe: bytes of the journal line, the embedded recipe and the
saved file, with the image named by hash (now) against held as a data: URI (before).

    python benchmarks/recipe_size.py [--kib 1024] [--format png]

On the embedded local server (no step delay), 1:1 at 4 steps: one edit of a noise picture of about
--kib KiB (noise does not compress, so the file is that big). "now" is what this run wrote: the
journal's submit line, the recipe read back from the saved file, the file. "before" is the same
made the earlier way, in this run: the recipe with the data: URI the image is sent as (what
recipes held until content references), as the journal line and through the same embed_recipe
call the output folder uses.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

from PIL import Image

from flux_nb.core._config import Settings
from flux_nb.files._infotext import format_parameters
from flux_nb.files._metadata import embed_recipe, read_recipe
from flux_nb.jobs._sessions import JOURNAL_NAME, Session

FAST = {"num_inference_steps": 4, "aspect_ratio": "1:1"}


def noise_png(kib: int) -> bytes:
    """A PNG of random pixels of about `kib` KiB (3 bytes a pixel, barely compressed)."""
    import os

    side = int((kib * 1024 / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def timings(data: bytes, n: int) -> str:
    """Median ms of what the store adds: keeping a data: URI (first time: hash + write; again:
    remembered) and turning the reference back into the URI sent (read, hash check, base64)."""
    import base64
    import statistics
    import time

    from flux_nb.files._inputs import InputStore

    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    first, again, sent = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            store = InputStore(Path(tmp) / str(i))
            t0 = time.perf_counter()
            ref = store.keep(uri)
            t1 = time.perf_counter()
            store.keep(uri)
            t2 = time.perf_counter()
            assert InputStore(store.folder).url(ref) == uri
            t3 = time.perf_counter()
            first.append(t1 - t0)
            again.append(t2 - t1)
            sent.append(t3 - t2)

    def ms(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1000:.2f} ms"

    return (
        f"store, median of {n}: keep (first, writes the file) {ms(first)}; keep again {ms(again)};"
        f" reference -> data: URI in a fresh store {ms(sent)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kib", type=int, default=1024, help="size of the input image (KiB)")
    parser.add_argument(
        "--format", default="png", choices=["png", "jpg", "webp"], help="output format"
    )
    parser.add_argument("-n", "--repeat", type=int, default=7, help="samples per timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        photo = Path(tmp) / "photo.png"
        photo.write_bytes(noise_png(args.kib))
        s = Session("local", output_dir=out, settings=Settings(step_delay=0.0), announce=None)
        try:
            gen = s.generate(
                "paint it", input_image=str(photo), seed=1, output_format=args.format, **FAST
            ).wait()
            lines = (out / JOURNAL_NAME).read_bytes().splitlines()
            line = next(x for x in lines if b'"op":"submit"' in x)
            embedded_now = json.dumps(
                read_recipe(gen.path)["recipe"], sort_keys=True, separators=(",", ":")
            )
            file_now = gen.path.stat().st_size

            sent = s.output.inputs.resolve(gen.recipe)  # the data: URI the request carries
            entry_before = json.loads(line)
            entry_before["recipe"] = sent.to_dict()
            line_before = json.dumps(entry_before, separators=(",", ":")).encode()
            embedded_before = sent.to_json()
            extra = s.runner.file_extra(gen)
            size = Image.open(gen.path).size
            file_before = len(
                embed_recipe(
                    s.client.download(gen.result_url),  # the server's bytes, no recipe in them
                    gen.recipe.output_format,
                    embedded_before,
                    extra,
                    parameters=format_parameters(gen.recipe, size),
                )
            )
            stored = sum(p.stat().st_size for p in s.output.inputs.folder.iterdir())
            photo_bytes = photo.read_bytes()
        finally:
            s.close()

    print(
        f"input image: {args.kib} KiB noise PNG ({stored:,} bytes, kept once in .inputs/); output"
        f" {args.format}"
    )
    print(timings(photo_bytes, args.repeat))
    rows = [
        ("journal submit line", len(line_before), len(line)),
        ("embedded recipe JSON", len(embedded_before), len(embedded_now)),
        ("saved image file", file_before, file_now),
    ]
    print(f"{'':24}{'before (data: URI)':>20}{'now (sha256: ref)':>20}{'ratio':>10}")
    for name, before, now in rows:
        print(f"{name:24}{before:>20,}{now:>20,}{before / now:>9.0f}x")


if __name__ == "__main__":
    main()
