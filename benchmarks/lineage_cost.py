"""What lineage costs: the record's size in the file as a chain grows, the time to work it out at
submit, and a whole chain remade against the last step alone.

    python benchmarks/lineage_cost.py [--depth 20] [--history 100] [-n 5]

On the embedded local server (no step delay), 1:1 at 4 steps, PNG. Figures:
- the `lineage` field's bytes in the last file at depths 1, 2, 4, 8, 16 and --depth (cut at 16);
- Session.lineage_record() for an edit of a Generation, median of n, with --history finished results
  in the session (the worst case: the input found by hashing the history's downloaded bytes);
- reproduce(last, lineage=True) of a 3-step chain against reproduce(last) (one step), median of n.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from flux_nb.core._config import Settings
from flux_nb.core._recipe import Recipe
from flux_nb.files._inputs import to_input_url
from flux_nb.files._metadata import read_recipe
from flux_nb.jobs._lineage import FIELD
from flux_nb.jobs._sessions import Session

FAST = {"num_inference_steps": 4, "aspect_ratio": "1:1"}


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s = Session(
            "local", output_dir=Path(tmp) / "out", settings=Settings(step_delay=0.0), announce=None
        )
        try:
            gen = s.generate("a lighthouse", seed=0, **FAST).wait()
            sizes = {}
            for depth in range(1, args.depth + 1):
                gen = s.generate(f"edit {depth}", input_image=gen, seed=depth, **FAST).wait()
                if depth in (1, 2, 4, 8, 16, args.depth):
                    sizes[depth] = len(read_recipe(gen.path).get(FIELD, ""))
            print("lineage field in the file, bytes by chain depth (recorded up to 16 steps):")
            for depth, size in sizes.items():
                print(f"  depth {depth:>3}: {size:>6} bytes")
            print(f"  (the last file in all: {gen.path.stat().st_size} bytes)")

            fillers = s.generate("filler", n=args.history, **FAST)
            for g in fillers:
                g.wait()
            base = fillers[0]  # the oldest: every later result is hashed before it is found
            recipe = Recipe.build("an edit", input_image=[to_input_url(base)], seed=1, **FAST)
            s.origins.forget()  # as for an input given by its URL (the panel), not by its handle
            first = median_ms(lambda: s.lineage_record(recipe), 1)
            again = median_ms(lambda: s.lineage_record(recipe), args.n)
            print(
                f"lineage_record() with {len(s.history)} results in the session: first {first:.1f}"
                f" ms (a result of the same byte size is hashed once), then median {again:.2f} ms"
            )

            a = s.generate("a kite", seed=5, **FAST).wait()
            b = s.generate("in a storm", input_image=a, seed=6, **FAST).wait()
            c = s.generate("at night", input_image=b, seed=7, **FAST).wait()
            one = median_ms(lambda: s.reproduce(c.path).wait(), args.n)
            chain = median_ms(lambda: s.reproduce(c.path, lineage=True).wait(), args.n)
            print(
                f"3-step chain remade: median {chain:.0f} ms; its last step alone: {one:.0f} ms"
                f" (ratio {chain / one:.2f})"
            )
        finally:
            s.close()


if __name__ == "__main__":
    main()
