"""Time to notice a finished generation when a proxy holds the event stream back (issue 28).

    python benchmarks/silent_stream.py               # buffering proxy, then a plain one
    python benchmarks/silent_stream.py --rounds 5    # more rounds of three
    python benchmarks/silent_stream.py --modes buffer,strip,pass --long

The local server (offline engine, one-step generations) sits behind tests/stream_proxy.py: an
ASGI proxy that buffers GET /api/events until the stream ends ("buffer"), passes it through
("pass"), or cuts its keep-alive comments ("strip": quiet until its first event, as the hosted
stream may be for its first 15 s). A fresh session sends rounds of three quick generations, one
round after the other; each figure is seconds from submit to the saved file
(Generation.elapsed), and the requests the server received per generation (the one event stream
left out). --long adds eight 5 s generations at once in a fresh session: what polling until the
first byte costs. To measure the code before a change, run this script from a checkout that has
it with PYTHONPATH naming the older package:

    git archive d110fb5 | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before .venv/bin/python benchmarks/silent_stream.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from common import mean  # noqa: E402
from in_process import CountRequests  # noqa: E402
from stream_proxy import StreamProxy  # noqa: E402


def measure(mode: str, rounds: int, n: int = 3, steps: int = 1, step_delay: float = 0.02) -> dict:
    import flux_nb
    from flux_nb.core._config import Settings
    from flux_nb.jobs._sessions import Session
    from flux_nb.server import LocalServer

    counts: Counter = Counter()
    server = LocalServer(step_delay=step_delay, workers=n)
    server.app.add_middleware(CountRequests, counts=counts)
    with server, StreamProxy(server.url or "", mode) as proxy, tempfile.TemporaryDirectory() as out:
        session = Session(base_url=proxy.url, output_dir=out, settings=Settings(), announce=None)
        try:
            noticed: list[list[float]] = []
            for r in range(rounds):
                gens = session.generate(
                    "a koi pond",
                    n=n,
                    seed=1000 + 10 * r,
                    num_inference_steps=steps,
                    aspect_ratio="1:1",
                )
                for g in gens:
                    g.wait(120)
                noticed.append([g.elapsed for g in gens])
            time.sleep(0.3)  # anything the runner still sends after the last image landed
            requests = {k: v for k, v in counts.items() if k not in ("events", "schema")}
        finally:
            session.close()
    return {
        "package": str(Path(flux_nb.__file__).parent),
        "noticed": noticed,
        "per_generation": sum(requests.values()) / (n * rounds),
        "requests": requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="buffer,pass")
    parser.add_argument("--long", action="store_true", help="also eight 5 s generations")
    args = parser.parse_args()
    runs = [(mode, {"rounds": args.rounds}) for mode in args.modes.split(",")]
    if args.long:
        long = {"rounds": 1, "n": 8, "steps": 50, "step_delay": 0.1}
        runs += [(f"{mode}, eight 5 s generations", long) for mode in args.modes.split(",")]
    for label, options in runs:
        mode = label.split(",")[0]
        result = measure(mode, **options)
        every = [s for round_ in result["noticed"] for s in round_]
        print(f"{label} proxy ({result['package']}):")
        for i, round_ in enumerate(result["noticed"], 1):
            print(f"  round {i}: " + ", ".join(f"{s:.2f} s" for s in round_[:3]))
        print(
            f"  time to notice: mean {mean(every):.2f} s, max {max(every):.2f} s;"
            f" requests per generation {result['per_generation']:.2f}"
            f" ({', '.join(f'{k} {v}' for k, v in sorted(result['requests'].items()))})"
        )


if __name__ == "__main__":
    main()
