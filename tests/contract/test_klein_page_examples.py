"""The nine Python examples of Oxen's FLUX.2 Klein 4B page run, unchanged but for the host, against
our stand-in (fixtures/klein-4b-page.md, a copy of ../shared/oxen-klein-4b-page.md).

Each runs as a script in its own process with OXEN_API_KEY set to the server's key, as a user would
paste it; "https://hub.oxen.ai" is replaced by the server's URL everywhere (the input_image asset
URL too: the stand-in serves Oxen's example asset path). All nine start at once (one server worker
each), so the polling examples' `time.sleep(5)` is paid once. The server takes about 1.4 s per image
(28 default steps x 0.05 s): the SSE examples subscribe *after* enqueueing, and with no replay
(section 4 of the contract) a generation that finished before they connect would never reach them,
as on Oxen.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from docs_shapes import FIXTURES

from flux_nb.server._embedded import LocalServer

KEY = "sk-klein-page-examples"
HOST = "https://hub.oxen.ai"
FENCE = re.compile(r"^[ \t]*```python[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
TIMEOUT = 45


def page_examples() -> list[tuple[str, str]]:
    """(id, code) of every ```python block on the page, in page order."""
    page = (FIXTURES / "klein-4b-page.md").read_text("utf-8")
    examples = []
    for match in FENCE.finditer(page):
        code = textwrap.dedent(match.group(1))
        kind = "sse" if "/api/events" in code else "async" if "/api/ai/queue" in code else "sync"
        level = "all" if "aspect_ratio" in code else "basic" if "input_image" in code else "minimal"
        examples.append((f"{kind}-{level}", code))
    return examples


EXAMPLES = page_examples()


def test_the_page_has_nine_python_examples():
    assert len(EXAMPLES) == 9
    assert sorted(i for i, _ in EXAMPLES) == sorted(
        f"{k}-{lv}" for k in ("sync", "async", "sse") for lv in ("minimal", "basic", "all")
    )
    assert all(HOST in code for _, code in EXAMPLES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start all nine against one stand-in, wait for all; {id: (returncode, output, seconds)}."""
    folder = tmp_path_factory.mktemp("klein-examples")
    with LocalServer(api_key=KEY, step_delay=0.05, workers=len(EXAMPLES)) as server:
        env = {**os.environ, "OXEN_API_KEY": KEY}
        env.pop("FLUX_NB_BASE_URL", None)
        procs = {}
        for example_id, code in EXAMPLES:
            script = folder / f"{example_id}.py"
            script.write_text(code.replace(HOST, server.url), "utf-8")
            procs[example_id] = (
                subprocess.Popen(
                    [sys.executable, str(script)],
                    cwd=folder,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
                time.monotonic(),
            )
        results = {}
        for example_id, (proc, started) in procs.items():
            try:
                output, _ = proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
                output += f"\n[killed after {TIMEOUT} s]"
            results[example_id] = (proc.returncode, output, time.monotonic() - started)
    return results


@pytest.mark.parametrize("example_id", [i for i, _ in EXAMPLES])
def test_the_example_runs_unchanged_but_for_the_host(runs, example_id):
    code, output, _ = runs[example_id]
    assert code == 0, f"{example_id} exited {code}:\n{output[-3000:]}"
    if example_id.startswith("sync"):
        assert "'images'" in output and "'url'" in output, output[-2000:]
    elif example_id.startswith("async"):
        assert output.startswith("Result: http"), output[-2000:]
    else:
        assert "'status': 'succeeded'" in output and "'url'" in output, output[-2000:]
