"""flux-nb benchmarks: the figures of shared/DESIGN.md, each beside its baseline, in one run.

    python benchmarks/run.py            # the whole run (about 2 minutes on 2 cores)
    python benchmarks/run.py --quick    # a smaller smoke run (about 1 minute)
    python benchmarks/run.py --json     # the same table, then one JSON object as the last line
    python benchmarks/run.py --markdown # the table as Markdown (for the README)
    python benchmarks/run.py --only kernel,process,server

Everything runs on the local server with the offline engine: kernels get no OXEN_API_KEY and no
FLUX_NB_BASE_URL. Progress goes to stderr, the table and the JSON to stdout. Not part of the
test suite: targets that are not met fail nothing (exit status 0); only a step that crashes
makes it 1, and the other figures are still reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import Figure, fmt  # noqa: E402

KEYS = (
    "cell_return_ms_median",
    "event_to_preview_ms_p95",
    "poll_baseline_notice_ms_mean",
    "requests_per_generation",
    "notebook_bytes_per_preview",
    "load_ext_ms",
    "server_generations_per_s",
    "inflight_generations_completed",
)
GROUPS = ("kernel", "process", "server")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), no GPU, Python {platform.python_version()},"
        f" {platform.system()}"
    )


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (all cores), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_quiet(limit: float) -> None:
    """Wait (up to limit seconds) until other processes leave the cores at least 75% idle."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = _busy_seconds()
        time.sleep(2)
        after = _busy_seconds()
        if before is None or after is None:
            return
        busy = (after - before) / (2 * (os.cpu_count() or 1))
        if busy < 0.25:
            return
        log(f"waiting for a quiet machine: {busy:.0%} busy")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _steps(quick: bool):
    """(group, what, figure keys, function returning the figures), in the order they run."""
    import in_kernel
    import in_process
    import server_throughput

    sizes = in_kernel.Sizes(quick)
    return [
        (
            "process",
            "in this process: completion event -> preview, and the polling baseline",
            ["event_to_preview_ms_p95", "poll_baseline_notice_ms_mean"],
            lambda: in_process.preview_figures(quick, log),
        ),
        (
            "process",
            "in this process: HTTP requests per generation",
            ["requests_per_generation"],
            lambda: in_process.requests_figures(quick, log),
        ),
        (
            "server",
            "local server throughput",
            ["server_generations_per_s"],
            lambda: [server_throughput.server_figure(quick, log)],
        ),
        (
            "kernel",
            "a real kernel: %%flux cells, then generations in flight",
            ["cell_return_ms_median", "inflight_generations_completed"],
            lambda: in_kernel.main_kernel(sizes, log),
        ),
        (
            "kernel",
            "fresh kernels: %load_ext flux_nb",
            ["load_ext_ms"],
            lambda: [in_kernel.load_ext(sizes, log)],
        ),
        (
            "kernel",
            "executed notebooks: bytes per preview",
            ["notebook_bytes_per_preview"],
            lambda: [in_kernel.notebook_bytes(sizes, log)],
        ),
    ]


def collect(groups: list[str], quick: bool) -> tuple[list[Figure], list[str]]:
    """Run the chosen groups; a step that crashes leaves its figures empty and is reported."""
    figures: list[Figure] = []
    crashed: list[str] = []
    for group, what, keys, run in _steps(quick):
        if group not in groups:
            continue
        log(what)
        try:
            figures += run()
        except Exception as exc:  # the other figures are still worth having
            log(traceback.format_exc())
            crashed.append(f"{what}: {type(exc).__name__}: {exc}")
            for key in keys:
                figures.append(
                    Figure(key, key, "", notes=[f"not measured: {type(exc).__name__}: {exc}"])
                )
    order = {key: i for i, key in enumerate(KEYS)}
    return sorted(figures, key=lambda f: order.get(f.key, len(order))), crashed


def _row(fig: Figure) -> list[str]:
    ratio = fig.ratio
    met = {True: "yes", False: "NO", None: "-"}[fig.met]
    return [
        fig.label,
        fmt(fig.value, fig.unit),
        fig.target,
        f"{fmt(fig.baseline, fig.unit)} ({fig.baseline_label})"
        if fig.baseline is not None
        else fig.baseline_label or "-",
        f"{ratio:.1f}x" if ratio is not None else "-",
        met,
    ]


HEADER = ["figure", "value", "target", "baseline", "ratio", "met?"]


def table(figures: list[Figure], markdown: bool) -> str:
    rows = [HEADER] + [_row(f) for f in figures]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(1, "| " + " | ".join("---" for _ in HEADER) + " |")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(figures: list[Figure]) -> str:
    out = []
    for fig in figures:
        out.append(f"{fig.label} [{fig.key}]")
        out += [f"  - {note}" for note in fig.notes]
    return "\n".join(out)


def as_json(figures: list[Figure]) -> str:
    found = {f.key: f.value for f in figures}
    values = {}
    for key in KEYS:
        value = found.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            values[key] = None
        elif key == "inflight_generations_completed":
            values[key] = int(value)
        else:
            values[key] = round(float(value), 3)
    return json.dumps(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples: a smoke run of about a minute"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to leave the CPU idle",
    )
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run (default: {','.join(GROUPS)})",
    )
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(
            f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}"
        )
    for name in ("OXEN_API_KEY", "FLUX_NB_BASE_URL"):
        os.environ.pop(name, None)  # the local server only, whatever the shell has

    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    start, busy0, own0 = time.monotonic(), _busy_seconds(), _own_seconds()
    figures, crashed = collect(groups, args.quick)
    took = time.monotonic() - start
    busy1, own1 = _busy_seconds(), _own_seconds()
    others = ""
    if busy0 is not None and busy1 is not None:
        share = max(0.0, (busy1 - busy0) - (own1 - own0)) / (took * (os.cpu_count() or 1))
        others = f"; other processes used {share:.0%} of the CPU meanwhile"
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"flux-nb benchmarks, {'quick' if args.quick else 'full'} run, {when}, {took:.0f} s")
    print(f"machine: {machine()}; local server, offline engine{others}")
    print()
    print(table(figures, args.markdown))
    print()
    print(
        "ratio: how many times better than the baseline (baseline / value;"
        " value / baseline for counts)"
    )
    unmet = [f.label for f in figures if f.met is False]
    print(f"targets not met: {', '.join(unmet) if unmet else 'none'}")
    print()
    print(details(figures))
    if crashed:
        print()
        print("steps that crashed (see stderr): " + "; ".join(crashed))
    if args.json:
        print(as_json(figures))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
