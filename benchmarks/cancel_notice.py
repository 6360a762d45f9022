"""How soon a cancelled generation's handle says so, on a server that behaves like the hosted one.

    python benchmarks/cancel_notice.py [-n 10] [--elsewhere 4]

The hosted API sends no event for a cancel, so the client must read the row. Two figures, on a
`flux-nb serve`-like local server with no local extras (no progress events, no replay):
- ours: `g.cancel()` -> `g.status == "cancelled"` (target < 2 s), n samples;
- elsewhere: another client's DELETE -> the handle notices (target < 30 s), measured with the
  runner's real safety-poll schedule, so each sample takes up to 30 s.
Baseline: the schedule before this change (safety polls doubling from 10 s to 300 s) would notice
a cancel made elsewhere at its next poll: up to 300 s; its mean over a 0-300 s cancel time is
printed beside, computed from that schedule.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import httpx

from flux_nb.core._config import Settings
from flux_nb.jobs._sessions import Session
from flux_nb.server._embedded import LocalServer

TOKEN = "tok-bench-cancel"


def wait_processing(http: httpx.Client, gid_of) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        gid = gid_of()
        if gid and http.get(f"/api/ai/queue/{gid}").json()["status"] == "processing":
            return gid
        time.sleep(0.02)
    raise SystemExit("the generation never started")


def settle_time(gen) -> float:
    done = threading.Event()
    gen.on_change(lambda g: g.done and done.set())
    start = time.perf_counter()
    done.wait(120)
    return time.perf_counter() - start


def old_schedule_mean() -> float:
    """Mean wait to the next poll of the 10 s -> 300 s doubling schedule, for a cancel at a
    uniformly random moment of a generation's first 300 s."""
    times, t, interval = [0.0], 0.0, 10.0
    while t < 300:
        t += interval
        times.append(t)
        interval = min(300.0, interval * 2)
    waits = [(b - a) ** 2 / 2 for a, b in zip(times, times[1:], strict=False)]
    return sum(waits) / 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="samples of our own cancel")
    parser.add_argument(
        "--elsewhere", type=int, default=4, help="samples of a cancel made elsewhere"
    )
    args = parser.parse_args()
    with (
        LocalServer(api_key=TOKEN, step_delay=0.5) as server,
        tempfile.TemporaryDirectory() as folder,
    ):
        session = Session(
            base_url=server.url,
            api_key=TOKEN,
            output_dir=folder,
            settings=Settings(),
            announce=None,
        )
        http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"})
        ours, elsewhere = [], []
        for i in range(args.n):
            gen = session.generate("cancel me", seed=i, num_inference_steps=50)
            wait_processing(http, lambda gen=gen: gen.id)
            start = time.perf_counter()
            gen.cancel()
            settle_time(gen)
            ours.append(time.perf_counter() - start)
            assert gen.status == "cancelled", gen
        for i in range(args.elsewhere):
            gen = session.generate("cancelled elsewhere", seed=100 + i, num_inference_steps=50)
            gid = wait_processing(http, lambda gen=gen: gen.id)
            time.sleep(i * 3.7)  # spread the cancel over the safety-poll schedule
            start = time.perf_counter()
            http.delete(f"/api/ai/queue/{gid}")
            settle_time(gen)
            elsewhere.append(time.perf_counter() - start)
            assert gen.status == "cancelled", gen
        print(
            f"cancel -> handle cancelled (ours): median {statistics.median(ours) * 1000:.0f} ms,"
            f" max {max(ours) * 1000:.0f} ms (n={len(ours)}); target < 2 s"
        )
        print(
            f"cancel made elsewhere -> noticed: median {statistics.median(elsewhere):.1f} s, max"
            f" {max(elsewhere):.1f} s (n={len(elsewhere)}); target < 30 s; baseline (safety polls"
            f" 10 s doubling to 300 s): mean {old_schedule_mean():.0f} s, max 300 s"
        )
        print(
            f"client requests: {session.client.requests_sent} for {args.n + args.elsewhere}"
            f" generations"
        )
        session.close()
        http.close()


if __name__ == "__main__":
    main()
