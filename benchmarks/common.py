"""What every benchmark shares: statistics, the Figure record, kernels, the kernel environment."""

from __future__ import annotations

import datetime
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

STREAM_TEXT_LIMIT = 4000
# The kernel's own warnings (ipykernel 7 warns that its loopback TCP is unencrypted) would
# interleave with the benchmark's progress lines.
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


# -- statistics ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float], unit: str = "ms", digits: int = 1) -> str:
    """'median 4.1 ms, p95 6.0, max 9.3 (n=20)': the shape of a sample in one line."""
    if not values:
        return "no samples"
    f = f"{{:.{digits}f}}"
    return (
        f"median {f.format(median(values))} {unit}, p95 {f.format(percentile(values, 95))},"
        f" max {f.format(max(values))} (n={len(values)})"
    )


# -- the result of one figure --------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table. better: 'lower' or 'higher' (which way the ratio is taken)."""

    key: str
    label: str
    unit: str
    value: float | None = None
    target: str = ""
    met: bool | None = None
    baseline: float | None = None
    baseline_label: str = ""
    better: str = "lower"
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (> 1: better)."""
        if self.value is None or self.baseline is None or not self.value or not self.baseline:
            return None
        if math.isnan(self.value) or math.isnan(self.baseline):
            return None
        return self.baseline / self.value if self.better == "lower" else self.value / self.baseline


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


# -- kernels -------------------------------------------------------------------------------------


def kernel_env(output_dir: Path, step_delay: float) -> dict[str, str]:
    """The environment of a benchmark kernel: the local offline server, never the hosted API."""
    env = {k: v for k, v in os.environ.items() if k not in ("OXEN_API_KEY", "FLUX_NB_BASE_URL")}
    env["FLUX_NB_OUTPUT_DIR"] = str(output_dir)
    env["FLUX_NB_STEP_DELAY"] = str(step_delay)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def parse_stamp(text: str | None) -> float | None:
    """A kernel message date as nbclient records it ('2026-01-02T03:04:05.678901Z') -> Unix time."""
    if not text:
        return None
    stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


class Kernel:
    """A notebook grown one cell at a time in one real kernel, through nbclient.

    run() returns the cell with `cell.metadata.bench`: sent (Unix time the request left),
    wall_ms (until nbclient saw the cell finish), reply_ms (request sent -> the kernel's execute
    reply, by the reply's own timestamp) and kernel_ms (the kernel's busy -> reply)."""

    def __init__(self, workdir: Path, env: dict[str, str], timeout: int = 600):
        import nbformat
        from nbclient import NotebookClient

        self.workdir = workdir
        self.env = env
        self.nb = nbformat.v4.new_notebook()
        self.client = NotebookClient(
            self.nb,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=True,
            record_timing=True,
            extra_arguments=KERNEL_ARGS,
            resources={"metadata": {"path": str(workdir)}},
        )
        self._context = None

    def __enter__(self) -> Kernel:
        self._context = self.client.setup_kernel(env=self.env)
        self._context.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._context is not None:
            self._context.__exit__(*exc_info)
            self._context = None

    def run(self, source: str):
        import nbformat

        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        sent = time.time()
        start = time.perf_counter()
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        wall = (time.perf_counter() - start) * 1000
        timing = cell.metadata.get("execution", {})
        reply = parse_stamp(timing.get("shell.execute_reply"))
        busy = parse_stamp(timing.get("iopub.status.busy"))
        cell.metadata["bench"] = {
            "sent": sent,
            "wall_ms": wall,
            "reply_ms": (reply - sent) * 1000 if reply else None,
            "kernel_ms": (reply - busy) * 1000 if reply and busy else None,
        }
        return cell

    def check(self, source: str):
        """Run a cell that must not fail; return its stdout."""
        cell = self.run(source)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            raise RuntimeError(
                f"benchmark cell failed: {source[:80]!r}\n"
                + "\n".join(errors[0].get("traceback", []))
            )
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    def value(self, expression: str):
        """A JSON-able value computed in the kernel."""
        import json

        text = self.check(
            f"import json as _bench_json\nprint('BENCH ' + _bench_json.dumps({expression}))"
        )
        for line in text.splitlines():
            if line.startswith("BENCH "):
                return json.loads(line[6:])
        raise RuntimeError(f"no value for {expression!r}: {text[:STREAM_TEXT_LIMIT]!r}")


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"flux-nb-bench-{prefix}-") as path:
        yield Path(path)
