"""Saved notebooks show the results: a %%flux cell's output settles to the final caption and
picture, in a real kernel driven by nbclient (what nbconvert --execute and the tutorials use),
and strict nbval compares that settled output (notebooks/conftest.py)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from queue import Empty

import nbformat
import pytest
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from PIL import Image

pytestmark = pytest.mark.colab  # runs in Colab's package set too (.venv-colab)

REPO = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Notebook:
    """A notebook grown one cell at a time in one real kernel, as a person runs it."""

    def __init__(self, workdir: Path):
        self.nb = nbformat.v4.new_notebook()
        self.client = NotebookClient(
            self.nb,
            timeout=60,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(workdir)}},
        )

    def run(self, source: str):
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        for out in cell.outputs:
            assert out.output_type != "error", "".join(out.get("traceback", []))
        return cell

    def value(self, expression: str):
        cell = self.run(f"import json as _j; print(_j.dumps({expression}))")
        return json.loads("".join(out["text"] for out in cell.outputs))

    def idle_update(self, words: str, timeout: float = 30.0) -> dict:
        """The display update the kernel sends while no cell runs (read off iopub directly:
        nbclient, waiting for no cell, would never look at it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = run_sync(self.client.kc.get_iopub_msg)(
                    timeout=max(0.0, deadline - time.monotonic())
                )
            except Empty:
                raise AssertionError(f"no display update with {words!r} in {timeout} s") from None
            if msg["msg_type"] == "update_display_data" and words in msg["content"]["data"].get(
                "text/plain", ""
            ):
                return msg


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    work = tmp_path_factory.mktemp("settled")
    nb = Notebook(work)
    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        env.setenv("FLUX_NB_OUTPUT_DIR", str(work / "out"))
        env.setenv("FLUX_NB_STEP_DELAY", "0.02")  # a few steps take 0.1 s: longer than a cell
        env.delenv("OXEN_API_KEY", raising=False)
        env.delenv("FLUX_NB_BASE_URL", raising=False)
        stack.enter_context(nb.client.setup_kernel())
        nb.run("%load_ext flux_nb")
        nb.path = work / "saved.ipynb"
        yield nb


def data(cell) -> dict:
    (out,) = cell.outputs
    assert out.output_type == "display_data"
    return out["data"]


def png(data_: dict) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data_["image/png"])))
    image.load()
    return image


def test_a_notebook_saved_after_the_images_arrived_shows_each_final_picture(notebook):
    fox = notebook.run("%%flux --seed 3 --steps 4 --name one\na red fox in snow")
    first = data(fox)
    assert first["text/plain"].endswith("\nrunning") and "image/png" not in first
    view = first[WIDGET_VIEW]["model_id"]

    # The image lands while no cell runs: the kernel updates the output at once (JupyterLab
    # applies that), but nbclient only listens while it runs a cell, so its copy still says
    # "running" ...
    update = notebook.idle_update("'a red fox in snow'")
    assert update["content"]["data"]["text/plain"].endswith("\ndone")
    assert data(fox)["text/plain"].endswith("\nrunning")
    # ... until the next cell, of any kind, runs: the update is sent again from inside it.
    notebook.run("x = 1")
    settled = data(fox)
    assert settled["text/plain"] == update["content"]["data"]["text/plain"]
    assert settled[WIDGET_VIEW]["model_id"] == view  # the same live card, still drawn
    want = notebook.value("__import__('hashlib').sha256(one.thumbnail()).hexdigest()")
    assert hashlib.sha256(base64.b64decode(settled["image/png"])).hexdigest() == want

    many = notebook.run("%%flux -n 3 --seed 10 --steps 3 --aspect 1:1 --name many\npaper boats")
    grid = notebook.run(
        "%%flux --seed 7 --steps 2 -a 1:1 --sweep guidance=1,2 --name grid\na lighthouse"
    )
    bad = notebook.run(
        "%%flux --image http://127.0.0.1:9/missing.png --steps 2 --name bad\nedit what is not there"
    )
    notebook.run("%%flux --seed 4 --steps 2 --quality high --name photo\na harbour at dusk")
    views = [data(c)[WIDGET_VIEW]["model_id"] for c in (many, grid, bad)]
    wait = notebook.run("%flux wait 30")
    assert "finished" in wait.outputs[0].text

    nbformat.write(notebook.nb, notebook.path)  # what the person saves, read back from disk
    saved = nbformat.read(notebook.path, as_version=4)
    cells = {c.source.split("\n")[0]: c for c in saved.cells}
    fox_saved = data(cells["%%flux --seed 3 --steps 4 --name one"])
    assert (
        fox_saved["text/plain"] == settled["text/plain"]
        and fox_saved["image/png"] == settled["image/png"]
    )

    boats = data(cells["%%flux -n 3 --seed 10 --steps 3 --aspect 1:1 --name many"])
    assert boats["text/plain"].count("\ndone") == 3 and "running" not in boats["text/plain"]
    sheet = png(boats)  # a contact sheet: three square images side by side under a title
    assert sheet.width > 3 * 160 and sheet.height > 160
    seeds = notebook.value("[g.seed for g in many]")
    assert seeds == [10, 11, 12] and all(f"seed {s} " in boats["text/plain"] for s in seeds)

    sweep = data(cells["%%flux --seed 7 --steps 2 -a 1:1 --sweep guidance=1,2 --name grid"])
    assert sweep["text/plain"].endswith("all 2 done") and png(sweep).width > 2 * 160

    # A truecolour picture settles as its JPEG thumbnail (smaller, and no palette banding).
    photo = data(cells["%%flux --seed 4 --steps 2 --quality high --name photo"])
    assert "image/jpeg" in photo and "image/png" not in photo
    want = notebook.value("__import__('hashlib').sha256(photo.thumbnail()).hexdigest()")
    assert hashlib.sha256(base64.b64decode(photo["image/jpeg"])).hexdigest() == want

    failed = data(cells["%%flux --image http://127.0.0.1:9/missing.png --steps 2 --name bad"])
    assert "\nfailed: " in failed["text/plain"] and "image/png" not in failed
    assert [
        data(cells[c.source.split("\n")[0]])[WIDGET_VIEW]["model_id"] for c in (many, grid, bad)
    ] == views


def test_nbval_compares_the_settled_output_and_catches_a_changed_picture(tmp_path):
    """Stored by tests/notebook_runner.py, checked by strict nbval with notebooks/conftest.py:
    the settled caption and picture pass, a changed pixel or a stale "running" fails."""
    for name in ("conftest.py", "nbval_sanitize.cfg"):
        shutil.copy(REPO / "notebooks" / name, tmp_path / name)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext flux_nb"),
        nbformat.v4.new_code_cell(
            "%%flux --seed 5 --steps 3 --aspect 1:1 --name boat\na paper boat"
        ),
        nbformat.v4.new_code_cell("%flux wait"),
    ]
    stored = tmp_path / "settled.ipynb"
    nbformat.write(nb, stored)
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "notebook_runner.py"), "--write", str(stored)],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    good = nbformat.read(stored, as_version=4)
    card = good.cells[1].outputs[0]["data"]
    assert card["text/plain"].endswith("\ndone") and "image/png" in card

    picture = bytearray(base64.b64decode(card["image/png"]))
    picture[-20] ^= 1  # inside the last IDAT chunk's data
    stale = nbformat.from_dict(json.loads(json.dumps(good)))
    stale.cells[1].outputs[0]["data"]["text/plain"] = card["text/plain"].replace("done", "running")
    changed = nbformat.from_dict(json.loads(json.dumps(good)))
    changed.cells[1].outputs[0]["data"]["image/png"] = base64.b64encode(picture).decode()
    nbformat.write(stale, tmp_path / "stale.ipynb")
    nbformat.write(changed, tmp_path / "changed.ipynb")

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        # Pictures compared here, whatever the environment (not in .venv-colab's tutorial run).
        env={k: v for k, v in os.environ.items() if k != "FLUX_NB_COMPARE_PICTURES"},
    )
    report = result.stdout
    assert "2 failed, 7 passed" in report, report
    assert "FAILED settled.ipynb" not in report
    assert "FAILED stale.ipynb::Cell 2" in report and "FAILED changed.ipynb::Cell 2" in report
    assert "Cell outputs differ in cell(s) 1" in report


def test_after_a_cell_only_made_bundles_are_sent_and_wait_sends_the_rest(monkeypatch):
    """A trivial cell that ends while the runner thread still makes a big output's contact sheet
    does not wait for it: the next cell (or %flux wait, which does wait) sends it."""
    import types

    from flux_nb.notebook import _settled_output as settled_output

    sent, made = [], []
    monkeypatch.setattr(
        settled_output, "_publish", lambda display_id, bundle: sent.append(display_id)
    )
    monkeypatch.setattr(settled_output, "_pending", [])
    gens = [types.SimpleNamespace(done=True)]
    output = settled_output._Output("one", gens, lambda: made.append(1) or {"text/plain": "done"})
    running = settled_output._Output("two", [types.SimpleNamespace(done=False)], dict)
    settled_output._pending.extend([output, running])

    assert (
        settled_output._after_cell() == 0 and not made and not sent
    )  # not made yet: not waited for
    settled_output._settled(
        output
    )  # the runner thread that ended the last image makes it, sends it
    assert made == [1] and sent == ["one"]
    assert settled_output._after_cell() == 1 and sent == ["one", "one"]  # and again inside a cell
    assert settled_output._pending == [running]

    late = settled_output._Output("three", gens, lambda: made.append(3) or {"text/plain": "done"})
    settled_output._pending.append(late)
    assert (
        settled_output.flush() == 1 and made == [1, 3] and sent[-1] == "three"
    )  # %flux wait makes it
    assert settled_output._pending == [running]


def test_a_bundle_sent_from_a_cell_is_let_go_and_never_made_or_sent_again(monkeypatch):
    """The handles' callbacks keep each output for the kernel's life: its bundle (a thumbnail
    in base64) must not stay with it once sent (issue 25)."""
    import types

    from flux_nb.notebook import _settled_output as settled_output

    sent, made = [], []
    monkeypatch.setattr(
        settled_output, "_publish", lambda display_id, bundle: sent.append(display_id)
    )
    monkeypatch.setattr(settled_output, "_pending", [])
    gens = [types.SimpleNamespace(done=True)]
    output = settled_output._Output("one", gens, lambda: made.append(1) or {"image/png": "x" * 99})
    settled_output._pending.append(output)
    assert settled_output.flush() == 1 and sent == ["one"]
    assert not output.made and output.bundle() is None  # nothing of the picture is kept
    settled_output._settled(output)  # a later change of one of its handles
    assert made == [1] and sent == ["one"]
