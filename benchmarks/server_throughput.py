"""Local server throughput: generations per second from enqueue to succeeded, offline engine, no
step delay, several concurrent clients. The server runs in its own process (`flux-nb serve`), so
the clients' work does not share its interpreter lock."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from common import Figure, median, spread

PROMPT = "a red fox in a snowy pine forest at dawn"


def _start_server() -> tuple[subprocess.Popen, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OXEN_API_KEY", "FLUX_NB_SERVER_API_KEY")
    }
    cmd = [
        sys.executable,
        "-m",
        "flux_nb",
        "serve",
        "--port",
        "0",
        "--workers",
        "2",
        "--step-delay",
        "0",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    line = proc.stdout.readline() if proc.stdout else ""
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not found:
        proc.kill()
        raise RuntimeError(f"flux-nb serve did not say where it listens: {line!r}")
    return proc, found.group(0)


def one_run(n: int, clients: int, per_enqueue: int = 1) -> dict[str, float]:
    import httpx
    from httpx_sse import connect_sse

    from flux_nb.core._recipe import MODEL_ID

    proc, url = _start_server()
    try:
        finished: dict[str, tuple[float, str]] = {}
        enqueued: dict[str, float] = {}
        ready, done = threading.Event(), threading.Event()

        def listen() -> None:
            with (
                httpx.Client(timeout=120) as http,
                connect_sse(http, "GET", url + "/api/events") as source,
            ):
                ready.set()
                for sse in source.iter_sse():
                    if sse.event == "media_generation_completed":  # succeeded or failed
                        data = json.loads(sse.data)
                        finished[data["generation_id"]] = (time.perf_counter(), data["status"])
                        if len(finished) >= n:
                            done.set()
                            return

        threading.Thread(target=listen, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the event stream did not open")

        def post(index: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as http:
                for j in range(index * per_enqueue, n, clients * per_enqueue):
                    body = {"model": MODEL_ID, "prompt": PROMPT, "seed": j}
                    if per_enqueue > 1:
                        body["num_generations"] = per_enqueue
                    rows = http.post("/api/ai/queue", json=body).json()["generations"]
                    now = time.perf_counter()
                    for row in rows:
                        enqueued[row["generation_id"]] = now

        start = time.perf_counter()
        threads = [threading.Thread(target=post, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not done.wait(300):
            raise RuntimeError(f"only {len(finished)} of {n} generations finished")
        end = max(t for t, _ in finished.values())
        failed = sum(1 for _, status in finished.values() if status != "succeeded")
        latency = [(finished[g][0] - enqueued[g]) * 1000 for g in finished if g in enqueued]
        return {"rate": n / (end - start), "failed": failed, "latency_ms": median(latency)}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_figure(quick: bool, log) -> Figure:
    runs, n, clients = (2, 200, 4) if quick else (3, 600, 4)
    fig = Figure(
        "server_generations_per_s",
        "local server, enqueue -> succeeded",
        "gen/s",
        target="> 200 gen/s",
        better="higher",
    )
    results = [one_run(n, clients) for _ in range(runs)]
    rates = [r["rate"] for r in results]
    latencies = ", ".join(f"{r['latency_ms']:.0f} ms" for r in results)
    fig.value = median(rates)
    fig.met = fig.value > 200 and not any(r["failed"] for r in results)
    batched = [] if quick else [one_run(n, clients, per_enqueue=4)]
    fig.notes += [
        f"{runs} runs of {n} generations, {clients} concurrent clients, one enqueue each (as the"
        f" product sends), server in its own process with 2 workers: {spread(rates, 'gen/s', 0)}",
        f"enqueue -> completion event, median per run: {latencies}; failed:"
        f" {sum(r['failed'] for r in results)}",
    ]
    if batched:
        fig.notes.append(
            f"for comparison, one run with num_generations=4 per enqueue (a quarter of the POSTs):"
            f" {batched[0]['rate']:.0f} gen/s"
        )
    log(f"  server: {fig.value:.0f} gen/s")
    return fig
