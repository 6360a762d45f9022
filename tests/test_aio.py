"""The async twin: agenerate, `await g`, as_completed, in a script (asyncio.run) and in a kernel
(top-level await), on the same runner as the blocking API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.colab  # runs in Colab's package set too (.venv-colab)

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, time
    import flux_nb

    async def main():
        first = await flux_nb.agenerate("an async fox", seed=5, num_inference_steps=2)
        many = flux_nb.generate("in the order they end", n=3, seed=10, num_inference_steps=2)
        order = [g.seed async for g in flux_nb.as_completed(many)]
        # a waiting task cancelled: the generation goes on and is saved
        slow = flux_nb.generate("not cancelled by the waiter", seed=20, num_inference_steps=20)
        waiter = asyncio.ensure_future(slow)
        await asyncio.sleep(0.05)
        waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            pass
        ticks = 0
        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)
        ticker = asyncio.ensure_future(tick())
        await slow  # awaiting it again after the cancel works, and the loop kept running
        ticker.cancel()
        asked = flux_nb.generate("cancelled on purpose", seed=30, num_inference_steps=50)
        asked.cancel()
        try:
            await asked
            raised = None
        except flux_nb.GenerationCancelled as exc:
            raised = type(exc).__name__
        print(json.dumps({
            "first": [first.status, first.path is not None and first.path.exists()],
            "order": sorted(order), "slow": slow.status, "ticks": ticks, "asked": raised,
        }))

    asyncio.run(main())
    """
)


def test_the_async_api_under_asyncio_run_in_a_script(tmp_path) -> None:
    env = {**os.environ, "FLUX_NB_OUTPUT_DIR": str(tmp_path / "out"), "FLUX_NB_STEP_DELAY": "0.02"}
    env.pop("OXEN_API_KEY", None)
    env.pop("FLUX_NB_BASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["first"] == ["succeeded", True]
    assert result["order"] == [10, 11, 12]
    assert result["slow"] == "succeeded" and result["ticks"] > 5  # the loop never blocked
    assert result["asked"] == "GenerationCancelled"


def test_top_level_await_in_a_kernel(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import flux_nb"),
        nbformat.v4.new_code_cell(
            'g = await flux_nb.agenerate("awaited in a cell", seed=3, num_inference_steps=2)\n'
            "print(g.status, g.path.exists())"
        ),
        nbformat.v4.new_code_cell(
            'gens = flux_nb.generate("as completed", n=2, seed=40, num_inference_steps=2)\n'
            "print(sorted([x.seed async for x in flux_nb.as_completed(gens)]))"
        ),
    ]
    env_before = dict(os.environ)
    os.environ.update({"FLUX_NB_OUTPUT_DIR": str(tmp_path / "out"), "FLUX_NB_STEP_DELAY": "0.02"})
    os.environ.pop("OXEN_API_KEY", None)
    try:
        NotebookClient(
            nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    texts = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells]
    # (the session's backend line may come first: issue 14 decides where it goes)
    assert texts[1].strip().splitlines()[-1] == "succeeded True"
    assert texts[2].strip() == "[40, 41]"
