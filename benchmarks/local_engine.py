"""flux2-klein: the local server's overhead over calling Flux2KleinPipeline directly, %load_ext with
flux-nb[local] installed, and, where CUDA is present, the full-size FLUX.2 Klein 4B architecture.

    .venv-local/bin/python benchmarks/local_engine.py           # about 3 minutes on 2 CPU cores
    .venv-local/bin/python benchmarks/local_engine.py --quick   # fewer rounds and kernels
    .venv-local/bin/python benchmarks/local_engine.py --rounds 5 --kernels 5

Needs flux-nb[local] (`bash scripts/test.sh tests/local_engine` makes .venv-local). Downloads
nothing: every pipeline has random weights (tests/local_engine/klein_random.py).

- Overhead: the same recipes at ~1 MP, taken in turn through a notebook's Session (enqueue on the
  local server, events, download, file saved with its metadata) and as a direct call of the very
  same pipeline object with the mapped arguments; the ratio of the medians, in one run. Target:
  under 3 %. On CPU the pipeline is the tiny test one, so a fixed overhead weighs more than it
  would next to the real model; on CUDA the full-size architecture gives the real ratio.
- %load_ext flux_nb in fresh kernels, default engine and FLUX_NB_ENGINE=flux2-klein: under 300 ms,
  and torch/diffusers not imported (the model loads at the first image).
- The memory plan (`flux-nb plan`) for described machines: where each part goes, dtype,
  quantization, estimated peaks. Pure arithmetic from FLUX.2 Klein 4B's configuration.
- torchao int8 weight-only on the tiny pipeline on CPU: seconds per image with the text encoder
  (and the transformer) quantized against unquantized, and the largest pixel difference.
- CUDA: seconds per 1024x1024 image at 4 steps and peak GPU memory for each placement and
  quantization the GPU can run, with the plan's estimate beside each measured peak (the full-size
  architecture with random weights: no download). Without CUDA this part says what it would run
  and why it could not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# common.py here; klein_random.py (the random-weights pipelines) with the tests that use it most
for _folder in (HERE, HERE.parent / "tests" / "local_engine"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: nothing to fetch

from common import Kernel, fmt, kernel_env, median, spread, workdir  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, waves below"
RECIPES = (  # what the overhead is measured on: ~1 MP, Klein's usual 4 steps
    {"aspect_ratio": "1:1", "num_inference_steps": 4, "output_format": "png"},
    {"aspect_ratio": "16:9", "num_inference_steps": 4, "output_format": "jpg"},
)
LOAD_EXT = """
import time as _bench_time
_bench_s = _bench_time.perf_counter()
%load_ext flux_nb
print("BENCH", (_bench_time.perf_counter() - _bench_s) * 1000)
import sys as _bench_sys
print("HEAVY", sorted(m for m in ("torch", "diffusers", "transformers") if m in _bench_sys.modules))
"""

rows: list[tuple[str, str, str, str]] = []


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def row(figure: str, value: str, target: str = "", note: str = "") -> None:
    rows.append((figure, value, target, note))


# -- server overhead -------------------------------------------------------------------------------


def overhead(config, rounds: int, where: str) -> None:
    """Session.run (the whole served path) against a direct call of the same pipeline object."""
    from flux_nb.core._config import Settings
    from flux_nb.core._recipe import Recipe
    from flux_nb.jobs._sessions import Session
    from flux_nb.server.engines._flux2_klein import load_pipeline, pipeline_kwargs

    loaded = load_pipeline(config)  # the server's own pipeline (loaded or adopted before)
    with tempfile.TemporaryDirectory(prefix="flux-nb-bench-klein-") as out:
        session = Session(
            "local",
            engine=config,
            output_dir=out,
            settings=Settings(step_delay=0.0),
            announce=None,
        )
        try:
            for params in RECIPES:
                recipe = Recipe.build(PROMPT, seed=1, **params)
                direct_s, served_s = [], []

                def direct(recipe=recipe) -> float:
                    start = time.perf_counter()
                    with loaded.lock:
                        loaded.pipe(**pipeline_kwargs(recipe)).images[0]
                    return time.perf_counter() - start

                def served(params=params) -> float:
                    start = time.perf_counter()
                    gen = session.run(PROMPT, seed=1, **params)
                    if gen.status != "succeeded" or gen.path is None:
                        raise RuntimeError(f"the served generation did not finish: {gen.reason}")
                    return time.perf_counter() - start

                direct(), served()  # warm-up: first-call costs are not the server's
                for i in range(rounds):  # in turn, so a busy machine weighs on both alike
                    if i % 2:
                        served_s.append(served())
                        direct_s.append(direct())
                    else:
                        direct_s.append(direct())
                        served_s.append(served())
                d, s = median(direct_s), median(served_s)
                ratio = s / d - 1
                name = (
                    f"{params['aspect_ratio']} {params['num_inference_steps']} steps"
                    f" {params['output_format']}"
                )
                log(
                    f"  {where} {name}: direct {spread(direct_s, 's', 2)}; served"
                    f" {spread(served_s, 's', 2)}"
                )
                row(f"{where}: direct pipeline call, {name}", fmt(d, "s"))
                row(
                    f"{where}: through the server (enqueue -> file saved), {name}",
                    fmt(s, "s"),
                    "",
                    f"overhead {ratio * 100:+.1f} % (target < 3 %), n={rounds}",
                )
        finally:
            session.close()


# -- %load_ext -------------------------------------------------------------------------------------


def load_ext(kernels: int, engine_env: dict[str, str], label: str) -> None:
    timings, heavy = [], set()
    for _ in range(kernels):
        with workdir("klein-load") as work:
            env = {**kernel_env(work / "flux_outputs", 0.02), **engine_env}
            with Kernel(work, env) as k:
                k.check("pass")
                cell = k.run(LOAD_EXT)
                text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
                lines = {
                    ln.split(" ", 1)[0]: ln.split(" ", 1)[1]
                    for ln in text.splitlines()
                    if " " in ln
                }
                if "BENCH" not in lines:
                    raise RuntimeError(f"%load_ext flux_nb gave no timing: {cell.outputs}")
                timings.append(float(lines["BENCH"]))
                heavy |= set(eval(lines.get("HEAVY", "[]")))
    value = median(timings)
    note = f"{spread(timings, 'ms', 0)}; torch/diffusers imported: {sorted(heavy) or 'no'}"
    log(f"  load_ext {label}: {note}")
    row(f"%load_ext flux_nb, fresh kernel, {label}", fmt(value, "ms"), "< 300 ms", note)


def httpx_cli_import(runs: int) -> None:
    """`import httpx` also imports httpx's command-line client when rich, click and pygments are
    installed, and flux-nb[local] brings rich (huggingface_hub -> typer): time that part alone."""
    import subprocess

    code = (
        "import time, click, pygments.lexers; s = time.perf_counter()\n"
        "import rich.console, rich.markup, rich.progress, rich.syntax, rich.table\n"
        "print((time.perf_counter() - s) * 1000)"
    )
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(runs)
    ]
    log(f"  rich, imported by httpx's CLI module: {spread(times, 'ms', 0)}")
    row(
        "  of which httpx's CLI imports rich (installed with [local])",
        fmt(median(times), "ms"),
        "",
        "httpx/__init__ imports httpx._main when rich, click and pygments are importable",
    )


# -- CUDA ------------------------------------------------------------------------------------------


def architecture_check() -> None:
    """Count the full-size configuration's parameters on the meta device (no memory, no GPU)."""
    import torch
    from klein_random import KLEIN_4B, random_pipeline

    with torch.device("meta"):
        pipe = random_pipeline(KLEIN_4B, device="meta")
    counts = {
        name: sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e9
        for name in ("transformer", "text_encoder", "vae")
    }
    text = ", ".join(f"{k} {v:.2f} B" for k, v in counts.items())
    log(f"  Klein 4B architecture (meta device): {text}")
    row("full-size Klein 4B architecture, parameters", text)


# -- the memory plan ------------------------------------------------------------------------------

MACHINES = (  # (name, Machine arguments): the GPUs people have
    ("H100 80 GB", dict(device="cuda", vram_gb=80, ram_gb=200, capability=(9, 0))),
    ("RTX 4090 24 GB", dict(device="cuda", vram_gb=24, ram_gb=64, capability=(8, 9))),
    (
        "Colab T4 15 GB, 12.7 GB RAM",
        dict(device="cuda", vram_gb=15, ram_gb=12.7, capability=(7, 5)),
    ),
    ("RTX 4070 12 GB", dict(device="cuda", vram_gb=12, ram_gb=32, capability=(8, 9))),
    ("laptop GPU 8 GB, 16 GB RAM", dict(device="cuda", vram_gb=8, ram_gb=16, capability=(8, 6))),
    ("Mac 16 GB unified", dict(device="mps", vram_gb=16 * 0.7, ram_gb=16)),
    ("CPU box 24 GB", dict(device="cpu", vram_gb=0, ram_gb=24)),
)


def plan_table() -> list[str]:
    from flux_nb.server.engines._plan import Machine, plan

    lines = []
    head = f"{'machine':<28} {'fits':<5} {'placement':<18} {'dtype':<9} {'text enc.':<9} "
    head += f"{'transf.':<8} {'GPU GB':>6} {'RAM GB':>6}"
    lines.append(head)
    for name, described in MACHINES:
        p = plan(Machine(**described))
        lines.append(
            f"{name:<28} {'yes' if p.fits else 'no':<5} {p.placement:<18} {p.dtype:<9} "
            f"{p.quantize['text_encoder']:<9} {p.quantize['transformer']:<8} "
            f"{p.peak_vram_gb:>6.1f} {p.peak_ram_gb:>6.1f}"
        )
    for line in lines:
        log("  " + line)
    return lines


def quantized_overhead(rounds: int) -> None:
    """torchao int8 weight-only on the tiny pipeline on CPU, against it unquantized."""
    import numpy as np
    import torch
    from klein_random import tiny_pipeline

    from flux_nb.server.engines._flux2_klein import _quantize

    try:
        import torchao  # noqa: F401
    except ImportError:
        row("CPU tiny pipeline, torchao int8", "not run", "", "pip install torchao")
        return
    kwargs = dict(prompt=PROMPT, width=1024, height=1024, num_inference_steps=4, guidance_scale=1.0)
    results = {}
    for label, parts in (
        ("unquantized", ()),
        ("text encoder int8", ("text_encoder",)),
        ("text encoder and transformer int8", ("text_encoder", "transformer")),
    ):
        pipe = tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        for part in parts:
            _quantize(getattr(pipe, part), part, "int8")
        pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0))  # warm-up
        times, image = [], None
        for _ in range(rounds):
            start = time.perf_counter()
            image = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0)).images[0]
            times.append(time.perf_counter() - start)
        results[label] = (median(times), np.asarray(image, dtype=np.int16))
        log(f"  CPU tiny, {label}: {spread(times, 's', 2)}")
    base_s, base_px = results["unquantized"]
    for label, (seconds, px) in results.items():
        diff = int(np.abs(px - base_px).max())
        note = f"{(seconds / base_s - 1) * 100:+.0f} % vs unquantized; max pixel diff {diff}/255"
        row(f"CPU tiny pipeline 1024x1024 4 steps, {label}", fmt(seconds, "s"), "", note)


def cuda_figures(rounds: int) -> None:
    import torch

    if not torch.cuda.is_available():
        why = f"torch {torch.__version__} sees no CUDA device" + (
            " (a CPU-only build)" if torch.version.cuda is None else ""
        )
        for what in (
            "seconds per 1024x1024 image, 4 steps, bfloat16, on the GPU",
            "peak GPU memory, same, without offload",
            "seconds per image and peak GPU memory for each placement and quantization",
            "server overhead next to the full-size model",
        ):
            row(f"CUDA: {what}", "not run", "", why)
        log(
            f"  CUDA part not run: {why}."
            f" On a machine with an NVIDIA GPU and a CUDA build of torch "
            "it builds the full-size Klein 4B architecture with random weights (no download)."
        )
        return

    from klein_random import klein_4b_pipeline

    from flux_nb.server.engines import EngineConfig
    from flux_nb.server.engines._flux2_klein import adopt_pipeline

    name = torch.cuda.get_device_name(0)
    free = torch.cuda.mem_get_info(0)[0] / 1e9
    if free < 20 or torch.cuda.get_device_capability(0) < (8, 0):
        # the whole pipeline in bfloat16 needs ~18 GB and native bfloat16: straight to the tries
        # the plan would make on this GPU (each failing alone if it does not fit)
        log(f"  CUDA {name}: {free:.1f} GB free; skipping the all-bfloat16 overhead run")
        placements_and_quantization(rounds, name)
        return
    log(f"  CUDA: building the full-size Klein 4B architecture on {name} (random weights)...")
    pipe = klein_4b_pipeline(device="cuda", dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)

    seconds, peak_bytes = cuda_seconds_and_peak(pipe, rounds)
    peak = peak_bytes / 2**30
    row(f"CUDA {name}: 1024x1024, 4 steps, bfloat16", fmt(seconds, "s"), "", f"n={rounds}")
    row(f"CUDA {name}: peak GPU memory, no offload", fmt(peak, "GiB"))
    log(f"  CUDA no offload: {seconds:.2f} s per image, peak {peak:.1f} GiB")

    config = EngineConfig("flux2-klein", model="random-klein-4b", device="cuda", dtype="bfloat16")
    adopt_pipeline(config, pipe)
    overhead(config, rounds, f"CUDA {name}, full-size random Klein 4B")

    pipe.to("cpu")  # its GPU memory back for the tries below, each on a pipeline of its own
    torch.cuda.empty_cache()
    placements_and_quantization(rounds, name)


def cuda_seconds_and_peak(pipe, rounds: int) -> tuple[float, int]:
    """Median seconds per 1024x1024 image at 4 steps after a warm-up, and the peak bytes of GPU
    memory allocated meanwhile."""
    import torch

    kwargs = dict(prompt=PROMPT, width=1024, height=1024, num_inference_steps=4, guidance_scale=1.0)
    pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0))  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(i))
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return median(times), torch.cuda.max_memory_allocated()


def placements_and_quantization(rounds: int, name: str) -> None:
    """Each placement the diffusers pipeline has, and torchao int8 (fp8 where the GPU has it) of
    the text encoder and the transformer, on a fresh full-size random pipeline each: seconds per
    1024x1024 image at 4 steps, measured peak GPU memory and the plan's estimate of it."""
    import torch
    from klein_random import klein_4b_pipeline

    from flux_nb.server.engines._flux2_klein import _quantize
    from flux_nb.server.engines._machine import read_machine
    from flux_nb.server.engines._plan import CUDA_CONTEXT_GB, GB, _Candidate, klein_4b_sizes, peaks

    machine = read_machine("cuda")
    dtype = "bfloat16" if torch.cuda.get_device_capability(0) >= (8, 0) else "float16"
    big = "fp8" if torch.cuda.get_device_capability(0) >= (8, 9) else "int8"
    tries = [
        ("gpu", ("none", "none")),
        ("gpu", ("int8", "none")),
        ("gpu", ("int8", big)),
        ("model-offload", ("none", "none")),
        ("model-offload", ("int8", big)),
        ("group-offload", ("none", "none")),
        ("sequential-offload", ("none", "none")),
    ]
    for placement, quant in tries:
        label = f"{placement}, {dtype}, text encoder {quant[0]}, transformer {quant[1]}"
        estimate, _ram = peaks(klein_4b_sizes(), machine, _Candidate(placement, dtype, quant))
        torch.cuda.empty_cache()
        try:
            on_gpu = placement == "gpu"
            pipe = klein_4b_pipeline(
                device="cuda" if on_gpu else "cpu", dtype=getattr(torch, dtype)
            )
            for part, level in zip(("text_encoder", "transformer"), quant, strict=True):
                if level != "none":
                    if not on_gpu:
                        getattr(pipe, part).to("cuda")  # torchao quantizes on the GPU
                    _quantize(getattr(pipe, part), part, level)
                    if not on_gpu:
                        getattr(pipe, part).to("cpu")
            pipe.set_progress_bar_config(disable=True)
            if on_gpu:
                pipe.to("cuda")
            elif placement == "model-offload":
                pipe.enable_model_cpu_offload(device="cuda")
            elif placement == "sequential-offload":
                pipe.enable_sequential_cpu_offload(device="cuda")
            else:
                from diffusers.hooks import apply_group_offloading

                for part in ("text_encoder", "transformer", "vae"):
                    apply_group_offloading(
                        getattr(pipe, part),
                        onload_device=torch.device("cuda"),
                        offload_type="block_level",
                        num_blocks_per_group=1,
                    )
            seconds, peak_bytes = cuda_seconds_and_peak(pipe, rounds)
            peak = peak_bytes / GB
            row(f"CUDA {name}: {label}", fmt(seconds, "s"), "", f"n={rounds}")
            row(
                f"CUDA {name}: peak GPU memory, {label}",
                fmt(peak, "GB"),
                "",
                f"plan's estimate {estimate:.1f} GB (with {CUDA_CONTEXT_GB:.1f} GB CUDA context)",
            )
            log(f"  CUDA {label}: {seconds:.2f} s, peak {peak:.1f} GB, plan {estimate:.1f}")
            del pipe
        except Exception as exc:  # one try failing (an old torchao, an OOM) leaves the others
            row(f"CUDA {name}: {label}", "failed", "", f"{type(exc).__name__}: {str(exc)[:120]}")
            log(f"  CUDA {label}: failed: {exc}")
        torch.cuda.empty_cache()


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 kernels per figure")
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed calls per recipe (default 4)"
    )
    parser.add_argument(
        "--kernels", type=int, default=None, help="fresh kernels per %%load_ext figure (default 4)"
    )
    parser.add_argument(
        "--plan-only", action="store_true", help="the plan table alone (no torch needed)"
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 4)
    kernels = args.kernels or (2 if args.quick else 4)
    if args.plan_only:
        print("\n".join(plan_table()))
        return 0
    try:
        import torch
        from klein_random import tiny_pipeline

        from flux_nb.server.engines import EngineConfig
    except ImportError as exc:
        print(
            f"benchmarks/local_engine.py needs flux-nb[local] ({exc}): run it with"
            f" .venv-local/bin/python",
            file=sys.stderr,
        )
        return 1
    log(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="flux-nb-bench-tiny-") as folder:
        tiny_pipeline().save_pretrained(folder)
        log("load_ext with flux-nb[local] installed...")
        load_ext(kernels, {}, "default engine")
        load_ext(
            kernels,
            {"FLUX_NB_ENGINE": "flux2-klein", "FLUX_NB_MODEL": folder},
            "FLUX_NB_ENGINE=flux2-klein",
        )
        httpx_cli_import(kernels)
        log("server overhead on CPU, tiny random pipeline at ~1 MP...")
        overhead(
            EngineConfig("flux2-klein", model=folder, device="cpu"),
            rounds,
            "CPU, tiny random Klein",
        )
    log("torchao int8 on the tiny pipeline, CPU...")
    quantized_overhead(rounds)
    log("the memory plan for described machines...")
    table = plan_table()
    log("full-size architecture and CUDA...")
    architecture_check()
    cuda_figures(rounds)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'value':>10}  {'target':<9}  notes")
    for figure, value, target, note in rows:
        print(f"{figure:<{width}}  {value:>10}  {target:<9}  {note}")
    print("\nthe memory plan (flux-nb plan) for described machines, FLUX.2 Klein 4B at 1 MP:")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
