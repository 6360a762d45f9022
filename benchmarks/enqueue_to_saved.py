"""Enqueue-to-saved time of one generation on the embedded local server, median of 30.

    python benchmarks/enqueue_to_saved.py [--step-delay 0.02] [-n 30]

Times flux_nb's whole path for a default recipe (28 steps, 16:9 PNG): validate, journal, enqueue,
completion over the event stream, download, embed the recipe, save; the requests it took too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from flux_nb.core._config import Settings
from flux_nb.jobs._sessions import Session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--step-delay",
        type=float,
        action="append",
        help="seconds per step (repeatable; default 0 and 0.02)",
    )
    parser.add_argument("-n", type=int, default=30, help="generations per step delay")
    args = parser.parse_args()
    for delay in args.step_delay or [0.0, 0.02]:
        with tempfile.TemporaryDirectory() as folder:
            session = Session(
                "local", output_dir=folder, settings=Settings(step_delay=delay), announce=None
            )
            session.generate("warm-up", num_inference_steps=1).wait(30)
            sent_before = session.client.requests_sent
            times = []
            for seed in range(args.n):
                start = time.perf_counter()
                gen = session.generate("a red fox in a snowy pine forest at dawn", seed=seed).wait(
                    60
                )
                times.append((time.perf_counter() - start) * 1000)
                assert gen.path is not None and gen.path.exists()
            times.sort()
            per_gen = (session.client.requests_sent - sent_before) / args.n
            print(
                f"step delay {delay:g} s x 28 steps: enqueue -> saved median"
                f" {statistics.median(times):.1f} ms, p95"
                f" {times[max(0, int(0.95 * len(times)) - 1)]:.1f} ms (n={args.n}); {per_gen:.2f}"
                f" client requests per generation"
            )
            session.close()


if __name__ == "__main__":
    main()
