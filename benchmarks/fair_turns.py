"""Fair turns on a shared server: how long one person's single image waits behind another
person's 256-image sweep, with 1 and 2 workers (offline engine, 4 steps of 10 ms each).

Alice enqueues 256 generations (64 requests of 4), then Bob enqueues one. Printed per worker
count: how many of Alice's finished before Bob's (and how many of those after Bob enqueued:
the ones his image waited behind), Bob's wait from enqueue to succeeded, and
how long the whole sweep took (what Bob would wait first-in first-out).

    .venv/bin/python benchmarks/fair_turns.py
"""

from __future__ import annotations

import time

import httpx

from flux_nb.core._recipe import MODEL_ID
from flux_nb.server import LocalServer

SWEEP = 256
BODY = {"model": MODEL_ID, "prompt": "a sweep", "num_inference_steps": 4, "aspect_ratio": "1:1"}


def enqueue(api: httpx.Client, n: int) -> list[str]:
    answer = api.post("/api/ai/queue", json={**BODY, "num_generations": n})
    answer.raise_for_status()
    return [g["generation_id"] for g in answer.json()["generations"]]


def one_run(workers: int) -> dict[str, float]:
    with LocalServer(workers=workers, step_delay=0.01) as server:
        url = server.url or ""
        alice = httpx.Client(base_url=url, headers={"Authorization": "Bearer alice"})
        bob = httpx.Client(base_url=url, headers={"Authorization": "Bearer bob"})
        started = time.monotonic()
        sweep = [gid for _ in range(SWEEP // 4) for gid in enqueue(alice, 4)]
        (single,) = enqueue(bob, 1)
        store = server.runtime.store
        deadline = time.monotonic() + 600
        rows = [store.get(g) for g in [*sweep, single]]
        while any(r is None or r.finished_mono is None for r in rows):
            if time.monotonic() > deadline:
                raise RuntimeError("the sweep did not finish in 10 minutes")
            time.sleep(0.05)
        bob_row = store.get(single)
        assert bob_row is not None and bob_row.finished_mono is not None
        finished = [store.get(g).finished_mono for g in sweep]  # type: ignore[union-attr]
        ahead = sum(1 for f in finished if f is not None and f < bob_row.finished_mono)
        meanwhile = sum(
            1
            for f in finished
            if f is not None and bob_row.created_mono < f < bob_row.finished_mono
        )
        alice.close()
        bob.close()
        return {
            "ahead": ahead,
            "meanwhile": meanwhile,
            "bob_wait": bob_row.finished_mono - bob_row.created_mono,
            "sweep": max(f for f in finished if f is not None) - started,
        }


def main() -> None:
    print(f"one image behind a {SWEEP}-image sweep (offline engine, 4 steps x 10 ms)")
    for workers in (1, 2):
        r = one_run(workers)
        print(
            f"  {workers} worker{'s' if workers > 1 else ''}: {r['ahead']:.0f} of the sweep"
            f" finished first ({r['meanwhile']:.0f} after the single image was enqueued);"
            f" the single image waited {r['bob_wait']:.2f} s"
            f" (the whole sweep took {r['sweep']:.2f} s, its wait first-in first-out)"
        )


if __name__ == "__main__":
    main()
