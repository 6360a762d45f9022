"""Memory of a long session: what each finished generation keeps, in KB, past the first 100.

    python benchmarks/long_session.py                  # 2,000 images in one process, then a kernel
    python benchmarks/long_session.py --images 4000    # the RSS table up to 4,000 images
    python benchmarks/long_session.py --only process   # or: kernel

process: one plain Python process on the embedded server (default recipe, no widgets), the
handles kept in a list as a loop would keep them; beside it the same run in a second process
that drops every handle (and the runner's history) once its batch is done. RSS after each
checkpoint, with a gc first.

kernel: a real kernel (nbclient) with cards: 500 `%%flux` cells of the default recipe, then one
`%%flux -n 64` cell of photo-like pictures (truecolour, 0.7 MB files, JPEG thumbnails); beside it
the same cells in a second kernel that closes every card and drops every handle after each 50.

Targets (issue 25): at most 16 KB per generation without cards; with cards, at most the
thumbnail's size plus 16 KB. `g.image` of a finished generation no slower than reading and
decoding its file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import Kernel, fmt, kernel_env, workdir  # noqa: E402

Row = tuple[str, float | None, float | None, str, str]  # label, value, beside it, unit, target

PROMPT = "a lighthouse on a cliff at dusk, waves below"
BATCH = 50
CHECKPOINTS = (100, 500, 1000, 2000, 4000)
WARM_UP = 20
PHOTO_LIKE = "--steps 2 --quality high"  # truecolour with the engine's noise: a photo's costs
TARGET_KB = 16.0


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc; elsewhere the peak from getrusage), with
    the heap's free pages handed back first: what is retained, not what was freed lately."""
    _trim()
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _trim() -> None:
    """glibc's malloc_trim(0): freed heap pages back to the system (elsewhere nothing)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def per_generation_kb(rss: dict[int, int], first: int = 100) -> float | None:
    """KB per generation between `first` and the last checkpoint."""
    last = max(rss)
    if last <= first or first not in rss:
        return None
    return (rss[last] - rss[first]) / (last - first) / 1024


# -- one process ---------------------------------------------------------------------------------


def _child(images: int, keep: bool) -> None:
    """Run in a fresh process: print one JSON line per checkpoint {"n": .., "rss": ..}."""
    import tempfile

    from flux_nb.core._config import Settings
    from flux_nb.jobs._sessions import Session

    with tempfile.TemporaryDirectory(prefix="flux-nb-bench-long-") as out:
        sess = Session("local", output_dir=out, step_delay=0.0, settings=Settings(), announce=None)
        runner = sess.runner
        kept: list = []

        def checkpoint(n: int) -> None:
            gc.collect()
            print(json.dumps({"n": n, "rss": rss_bytes()}), flush=True)

        done = 0
        warm = sess.generate(PROMPT, n=WARM_UP)
        for g in warm:
            g.wait(300)
        del warm
        runner.history.clear()
        runner._tracks.clear()
        checkpoint(0)
        while done < images:
            gens = sess.generate(PROMPT, n=min(BATCH, images - done))
            for g in gens:
                g.wait(300)
            done += len(gens)
            if keep:
                kept.extend(gens)
            else:
                runner.history.clear()
                runner._tracks.clear()
            del gens
            if done in CHECKPOINTS or done == images:
                checkpoint(done)
        if kept:  # g.image of a finished generation against reading and decoding its file
            print(json.dumps(_image_timing(kept)), flush=True)
        sess.close()


def _image_timing(gens: list, samples: int = 30) -> dict[str, float]:
    """Median ms of the first g.image of handles not asked before, beside reading and decoding
    the files of as many others (interleaved, so both meet the same load)."""
    import statistics

    from flux_nb.files._thumbnail import decode

    image_ms, decode_ms = [], []
    for i in range(samples):
        g, other = gens[2 * i], gens[2 * i + 1]
        t0 = time.perf_counter()
        g.image  # noqa: B018
        image_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        decode(Path(other.path).read_bytes())
        decode_ms.append((time.perf_counter() - t0) * 1000)
    return {"image_ms": statistics.median(image_ms), "decode_ms": statistics.median(decode_ms)}


def run_process(images: int) -> dict[str, dict]:
    """Both children, one after the other; their checkpoints as {label: {n: rss}}."""
    found: dict[str, dict] = {}
    for label, keep in (("kept", True), ("dropped", False)):
        print(f"  process, handles {label}: {images} images ...", file=sys.stderr)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "keep" if keep else "drop", str(images)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        rss, extra = {}, {}
        for line in proc.stdout.splitlines():
            row = json.loads(line)
            if "n" in row:
                rss[row["n"]] = row["rss"]
            else:
                extra.update(row)
        found[label] = {"rss": rss, **extra}
    return found


# -- a kernel with cards -------------------------------------------------------------------------


KERNEL_SETUP = """
import gc, json, os
%load_ext flux_nb
from flux_nb.notebook._cards import wait_settled
def _bench_rss():
    gc.collect()
    try:
        import ctypes, ctypes.util
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def _bench_wait():
    import flux_nb
    for g in list(flux_nb.session().history):
        g._done.wait(300)
    wait_settled(timeout=300)
def _bench_thumbs():
    import ipywidgets as w
    sizes = [len(c.value) for c in list(w.Widget.widgets.values()) if isinstance(c, w.Image)]
    sizes = [s for s in sizes if s]
    return sum(sizes) / max(1, len(sizes))
def _bench_drop():
    import ipywidgets as w
    import flux_nb
    from flux_nb.notebook._cards import resend_settled
    resend_settled()
    runner = flux_nb.session().runner
    runner.history.clear()
    runner._tracks.clear()
    for widget in list(w.Widget.widgets.values()):
        if not isinstance(widget, (w.Layout, w.widget_style.Style)):  # shared by every card
            widget.close()
"""


def run_kernel(cells: int, grid: int, drop: bool) -> dict[str, float]:
    """RSS of one kernel at 100 and `cells` %%flux images, then after one -n `grid` cell; with
    drop, every card is closed and every handle dropped after each 50 cells and after the grid:
    what the kernel grows by without them (the journal, the server, IPython's own history)."""
    found: dict[str, float] = {}
    label = "cards closed, handles dropped" if drop else "cards kept"
    with workdir("long") as path, Kernel(path, kernel_env(path / "out", 0.0)) as kernel:
        kernel.check(KERNEL_SETUP)
        kernel.check(f"%%flux -n 4\n{PROMPT}")
        kernel.check("_bench_wait()")
        print(f"  kernel, {label}: {cells} %%flux cells ...", file=sys.stderr)
        for i in range(1, cells + 1):
            kernel.run(f"%%flux\n{PROMPT}")
            if i % 50 == 0 or i == cells:
                kernel.check("_bench_wait()")
                if i in (100, cells) and not drop:
                    found["thumb_bytes"] = kernel.value("_bench_thumbs()")
                if drop:
                    kernel.check("_bench_drop()")
                if i in (100, cells):
                    found[f"rss_{i}"] = kernel.value("_bench_rss()")
        print(f"  kernel, {label}: one -n {grid} photo-like grid ...", file=sys.stderr)
        before = kernel.value("_bench_rss()")
        kernel.run(f"%%flux -n {grid} {PHOTO_LIKE}\n{PROMPT}")
        kernel.check("_bench_wait()")
        if drop:
            kernel.check("_bench_drop()")
        found["grid_kb"] = (kernel.value("_bench_rss()") - before) / grid / 1024
    return found


# -- report ----------------------------------------------------------------------------------------


def figures(process: dict | None, kernel: dict | None, images: int) -> list[Row]:
    out: list[Row] = []
    if process:
        kept, dropped = process["kept"], process["dropped"]
        for n in (0, *CHECKPOINTS):
            if n in kept["rss"]:
                label = "warm-up" if n == 0 else f"{n:,}"
                out.append(
                    (
                        f"process RSS after {label} generations (handles dropped beside)",
                        kept["rss"][n] / 2**20,
                        dropped["rss"].get(n, 0) / 2**20,
                        "MB",
                        "",
                    )
                )
        out.append(
            (
                f"process: KB per generation past the first 100 ({images:,} images)",
                per_generation_kb(kept["rss"]),
                per_generation_kb(dropped["rss"]),
                "KB",
                f"<= {TARGET_KB:g}",
            )
        )
        if "image_ms" in kept:
            out.append(
                (
                    "g.image of a finished generation (beside: read + decode its file)",
                    kept["image_ms"],
                    kept["decode_ms"],
                    "ms",
                    "<= baseline",
                )
            )
    if kernel:
        kept, dropped = kernel["kept"], kernel["dropped"]
        thumb_kb = kept["thumb_bytes"] / 1024
        cells = max(int(k[4:]) for k in kept if k.startswith("rss_"))

        def per(found: dict) -> float:
            return (found[f"rss_{cells}"] - found["rss_100"]) / (cells - 100) / 1024

        out += [
            (
                f"kernel with cards: KB per %%flux image past the first 100 ({cells})",
                per(kept),
                per(dropped),
                "KB",
                "",
            ),
            (  # what the cards and handles themselves keep: the first row less its neighbour
                "kernel: KB per image that cards and handles keep (the row above, less beside)",
                per(kept) - per(dropped),
                None,
                "KB",
                f"<= {thumb_kb + TARGET_KB:.1f} (thumbnail {thumb_kb:.1f} KB + 16)",
            ),
            (
                f"kernel with cards: KB per image of one -n {kernel['grid']} photo-like grid",
                kept["grid_kb"],
                dropped["grid_kb"],
                "KB",
                "",
            ),
        ]
    return out


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(int(sys.argv[3]), sys.argv[2] == "keep")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images in the process run")
    parser.add_argument("--cells", type=int, default=500, help="%%%%flux cells in the kernel run")
    parser.add_argument("--grid", type=int, default=64, help="-n of the photo-like grid")
    parser.add_argument("--only", choices=("process", "kernel"), default=None)
    parser.add_argument("--json", action="store_true", help="then one JSON object")
    args = parser.parse_args()
    process = run_process(args.images) if args.only in (None, "process") else None
    kernel = None
    if args.only in (None, "kernel"):
        kernel = {
            "kept": run_kernel(args.cells, args.grid, drop=False),
            "dropped": run_kernel(args.cells, args.grid, drop=True),
            "grid": args.grid,
        }
    for label, value, beside, unit, target in figures(process, kernel, args.images):
        goal = f"  (target {target})" if target else ""
        print(f"{label}: {fmt(value, unit)}  [{fmt(beside, unit)}]{goal}")
    if args.json:
        print(json.dumps({"process": process, "kernel": kernel}))


if __name__ == "__main__":
    main()
