"""%load_ext flux_nb, %%flux and %flux in a real kernel, driven cell by cell through nbclient.

One kernel for the module (the embedded local server inside it); no key and no base URL reach it,
so nothing leaves the machine. Each test starts from its own state in that kernel (a fresh session
on its own output folder, no key, the magic's settings at their defaults), so the tests pass in any
order (`pytest --random-order tests/test_magic.py`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time

import nbformat
import pytest
from helpers import pixels_equal
from nbclient import NotebookClient
from PIL import Image

from flux_nb import read_recipe
from flux_nb.core._recipe import Recipe

pytestmark = pytest.mark.colab  # runs in Colab's package set too (.venv-colab)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# 28 default steps then take about 0.6 s: long against a cell's few ms, short for a test.
STEP_DELAY = 0.02

SETUP = """
import hashlib, json, time
from flux_nb.notebook._widgets_compat import widget_by_id
from flux_nb.notebook._cards import cards_in, magic_line, wait_settled
_cell_times = []
_t0 = time.perf_counter()
def _pre(info):
    global _t0
    _t0 = time.perf_counter()
def _post(result):
    last = get_ipython().user_ns.get("_flux")
    _cell_times.append(((time.perf_counter() - _t0) * 1000, getattr(last, "done", None)))
get_ipython().events.register("pre_run_cell", _pre)
get_ipython().events.register("post_run_cell", _post)
def _cards(model_id):
    return cards_in(widget_by_id(model_id))
"""

PENDING_RECIPE = Recipe.build(
    "left over from yesterday", seed=31337, num_inference_steps=3, aspect_ratio="1:1"
)


class Kernel:
    """A notebook grown one cell at a time in one kernel; keeps each execute reply."""

    def __init__(self, workdir):
        self.nb = nbformat.v4.new_notebook()
        self.replies: list[dict] = []
        self.client = NotebookClient(
            self.nb,
            timeout=60,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(workdir)}},
            on_cell_executed=lambda cell, execute_reply, **_: self.replies.append(
                execute_reply["content"]
            ),
        )

    def run(self, source: str):
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def value(self, expression: str):
        """A JSON-able value computed in the kernel."""
        cell = self.run(f"print(json.dumps({expression}))")
        assert_clean(cell)
        return json.loads("".join(out["text"] for out in cell.outputs))

    def click(self, model_id: str) -> None:
        """What a browser sends for a click: a comm message, not an execute request."""
        kc = self.client.kc
        content = {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}}
        kc.shell_channel.send(kc.session.msg("comm_msg", content))


def left_from_yesterday(out) -> None:
    """An output folder whose journal holds one image an earlier (gone) kernel sent, never saved."""
    entry = {
        "t": time.time(),
        "op": "submit",
        "key": "k-from-yesterday",
        "backend": "local",
        "recipe": PENDING_RECIPE.to_dict(),
    }
    (out / ".flux_nb_journal.jsonl").write_text(json.dumps(entry) + "\n")


# Before each test: no key, no fake Colab, the magic's settings at their defaults, and a fresh
# session of its own on a fresh output folder (which `%flux backend local` uses too).
RESET = """
import os, sys
os.environ.pop('OXEN_API_KEY', None)
os.environ['FLUX_NB_OUTPUT_DIR'] = {out!r}
sys.modules.pop('google.colab', None)
from flux_nb.jobs._sessions import Session as _Session, set_session as _set_session
_set_session(_Session('local', announce=None))
%config FluxMagics.thumbnail_size = 320
%config FluxMagics.default_options = ''
%config FluxMagics.max_cell_cost = 1.0
"""


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory):
    work = tmp_path_factory.mktemp("notebook")
    out = work / "outputs"
    out.mkdir()
    left_from_yesterday(out)
    k = Kernel(work)
    k.out = out
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as env:  # only the kernel's start needs it
            env.setenv("FLUX_NB_OUTPUT_DIR", str(out))
            env.setenv("FLUX_NB_STEP_DELAY", str(STEP_DELAY))
            env.delenv("OXEN_API_KEY", raising=False)
            env.delenv("FLUX_NB_BASE_URL", raising=False)
            stack.enter_context(k.client.setup_kernel())
        assert_clean(k.run(SETUP))
        k.load = k.run(
            "_t = time.perf_counter()\n"
            "%load_ext flux_nb\n"
            "_load_ms = (time.perf_counter() - _t) * 1000"
        )
        yield k


@pytest.fixture
def kernel(shared_kernel, tmp_path_factory):
    """The module's kernel, in this test's own state; `kernel.out` is this test's output folder,
    where an earlier kernel left one image to resume."""
    out = tmp_path_factory.mktemp("outputs")
    left_from_yesterday(out)
    assert_clean(shared_kernel.run(RESET.format(out=str(out))))
    shared_kernel.out = out
    return shared_kernel


def assert_clean(cell):
    for out in cell.outputs:
        assert out.output_type != "error", "".join(out.get("traceback", []))
        assert not (out.output_type == "stream" and out.name == "stderr"), out.text


def widget_ids(cell) -> list[str]:
    return [
        o["data"][WIDGET_VIEW]["model_id"] for o in cell.outputs if WIDGET_VIEW in o.get("data", {})
    ]


def one_line_error(cell, *words: str) -> str:
    """The cell shows one line, 'UsageError: ...', and no traceback anywhere."""
    # print() may reach the kernel's stream in two writes, so nbclient can hold two stderr pieces
    kinds = {(o.output_type, o.get("name")) for o in cell.outputs}
    assert kinds == {("stream", "stderr")}, cell.outputs
    text = "".join(o.text for o in cell.outputs)
    assert text.startswith("UsageError: ") and text.count("\n") == 1 and "Traceback" not in text, (
        text
    )
    for word in words:
        assert word in text, text
    return text


def saved_previews(state: dict, model_id: str) -> list[bytes]:
    """The PNG bytes of every Image under a widget in saved widget state, in display order."""
    model = state[model_id]
    if model["model_name"] == "ImageModel":
        return [
            base64.b64decode(b["data"]) for b in model.get("buffers", []) if b["path"] == ["value"]
        ]
    found = []
    for child in model["state"].get("children", []):
        found.extend(saved_previews(state, child.removeprefix("IPY_MODEL_")))
    return found


def test_load_ext_says_one_line_fast_with_the_resume_hint(kernel):
    cell = kernel.load
    assert_clean(cell)
    (out,) = cell.outputs
    assert out.text.count("\n") == 1
    assert "local offline stand-in" in out.text and "%flux backend hosted" in out.text
    assert "1 generation(s) from an earlier kernel" in out.text and "%flux resume" in out.text
    assert kernel.value("_load_ms") < 1000


def test_the_backend_line_is_said_once_per_kernel(kernel):
    # The session and a panel made after %load_ext do not say it again (the panel shows a badge).
    cell = kernel.run("import flux_nb\nflux_nb.session(); _panel = flux_nb.Panel(history=False)")
    assert_clean(cell)
    assert cell.outputs == []
    # %reload_ext says it again only with something to act on: here, the earlier kernel's image.
    (out,) = kernel.run("%reload_ext flux_nb").outputs
    assert out.name == "stdout" and "%flux resume" in out.text and out.text.count("\n") == 1


def test_a_plain_script_keeps_its_stdout_clean(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OXEN_API_KEY", "FLUX_NB_BASE_URL")}
    env["FLUX_NB_OUTPUT_DIR"] = str(tmp_path)
    script = (
        "from flux_nb.jobs._sessions import Session\n"
        "a, b = Session(), Session()  # two sessions, one process: the line is said once\n"
        "print('mine'); a.close(); b.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "mine\n"  # the script's own output only
    assert done.stderr.count("local offline stand-in") == 1


def test_flux_cell_returns_at_once_with_a_live_card_then_the_image(kernel):
    cell = kernel.run("%%flux --seed 7 -a 1:1\na red fox in snow")
    assert [o.output_type for o in cell.outputs] == ["display_data"]
    (view,) = widget_ids(cell)
    summary = "seed 7 · 28 steps · guidance 2 · 1:1 · standard · png"
    assert (
        cell.outputs[0]["data"]["text/plain"] == f"'a red fox in snow'\n{summary}\nrunning"
    )  # nbval compares it
    ms, done_at_return = kernel.value("_cell_times[-1]")
    assert done_at_return is False  # the cell ended before the image existed (its time: benchmarks)
    assert kernel.value(f"_cards({view!r})[0].gen is _flux")
    assert_clean(kernel.run("gen = _flux.wait(30); wait_settled(10)"))
    got = kernel.value(
        f"dict(path=str(gen.path), size=gen.image.size,"
        f" recipe=flux_nb.read_recipe(gen.path).to_dict(), mine=gen.recipe.to_dict(),"
        f" elapsed=gen.elapsed, card=bytes(_cards({view!r})[0].preview.value) == gen.thumbnail(),"
        f" status=_cards({view!r})[0].status_html)".replace("flux_nb.", "__import__('flux_nb')."),
    )
    assert os.path.isfile(got["path"]) and got["size"] == [1024, 1024]
    assert got["recipe"] == got["mine"] and got["recipe"]["seed"] == 7
    assert got["card"] and re.search(r">\S* ?done in [\d.]+ s", got["status"])


def test_reproduce_gives_the_same_pixels_and_vary_does_not(kernel):
    assert_clean(kernel.run("%%flux --seed 11 --steps 4 --name base\na lighthouse at dusk"))
    assert_clean(kernel.run("again = base.reproduce().wait(30); other = base.vary().wait(30)"))
    got = kernel.value("[str(base.path), str(again.path), str(other.path), again.seed, other.seed]")
    first, same, different, seed_again, seed_other = got
    assert seed_again == 11 and seed_other != 11 and len({first, same, different}) == 3
    assert pixels_equal(first, same) and not pixels_equal(first, different)


def test_card_buttons_add_cards_under_the_first_in_the_same_output(kernel):
    cell = kernel.run("%%flux --seed 12 --steps 3 --name first\na windmill")
    (view,) = widget_ids(cell)
    assert_clean(kernel.run(f"_cards({view!r})[0].reproduce_button.click()"))
    assert_clean(kernel.run(f"_cards({view!r})[0].vary_button.click(); _flux.wait(30)"))
    assert_clean(kernel.run("%flux wait 30"))  # sees the button-made generations too
    got = kernel.value(
        f"[[c.gen.seed, c.gen.status, len(c.preview.value) > 0] for c in _cards({view!r})]"
        f" + [_flux is _cards({view!r})[-1].gen, _flux in __import__('flux_nb').session().history]"
    )
    assert got.pop() is True and got.pop() is True
    assert [row[0] == 12 for row in got] == [True, True, False]
    assert all(row[1] == "succeeded" and row[2] for row in got)


def test_bad_input_gives_one_line_and_no_traceback(kernel):
    cases = {
        "%%flux --bogus 3\nx": [
            "unrecognized arguments: --bogus",
            "--seed N",
            "--image SRC",
            "--name VAR",
        ],
        "%%flux --seed abc\nx": ["--seed", "invalid int value: 'abc'"],
        "%%flux --seed 4294967296\nx": ["seed=4294967296 is out of range", "0 to 4294967295"],
        "%%flux --aspect 2:1\nx": ["aspect_ratio='2:1'", "1:1, 16:9, 9:16, 4:3, 3:4"],
        "%%flux --steps 99\nx": ["num_inference_steps=99 is out of range", "1 to 50"],
        "%%flux --guidance -1\nx": ["guidance_scale=-1.0 is out of range"],
        "%%flux --format gif\nx": ["output_format='gif'", "png, jpg, webp"],
        "%%flux -n 0\nx": ["n=0 is out of range", "1 to 256"],
        "%%flux --image no/such/file.png\nx": ["'no/such/file.png' was not found"],
        "%%flux --name 2x\nx": ["--name '2x' is not a Python variable name"],
        "%%flux --seed 1\n   \n  ": ["prompt is empty"],
        "%%flux --seed 1\n": ["cell body is empty"],
        "%flux backend hosted": ["needs an API key", "OXEN_API_KEY"],
        "%flux frobnicate": ["unknown subcommand 'frobnicate'", "wait", "backend"],
        "%flux reproduce no/such.png": ["neither a saved image file nor a known generation id"],
        "%flux reproduce --lineage no/such.png": ["neither a saved image file nor a generation"],
        "%flux reproduce --yes a.png": ["--yes goes with --lineage"],
        "%flux reproduce --input a.png b.png": ["'b.png' is neither a saved image file"],
        "%flux reproduce --lineage --fast b.png": ["unknown option '--fast'", "--input FILE"],
        "%flux reproduce --lineage a.png b.png": ["give one image, not 2"],
        "%flux lineage": ["needs a saved image's path"],
        "%flux lineage no/such.png": ["neither a saved image file nor a generation"],
        "%flux wait soon": ["'soon' is not a number"],
    }
    before = kernel.value(
        "len(flux_nb.session().history)".replace("flux_nb.", "__import__('flux_nb').")
    )
    for source, words in cases.items():
        one_line_error(kernel.run(source), *words)
    assert kernel.value("__import__('flux_nb').session().backend") == "local"  # no switch happened
    assert (
        kernel.value("len(__import__('flux_nb').session().history)") == before
    )  # nothing was sent


def test_name_n6_grid_and_distinct_seeds(kernel):
    cell = kernel.run("%%flux --seed 500 -n 6 --steps 2 --name six\na row of six houses")
    (view,) = widget_ids(cell)
    assert kernel.value(
        f"[isinstance(widget_by_id({view!r}), __import__('ipywidgets').GridBox),"
        f" widget_by_id({view!r}).layout.grid_template_columns]"
    ) == [True, "repeat(auto-fill, 338px)"]
    assert_clean(kernel.run("[g.wait(30) for g in six]; wait_settled(10)"))
    got = kernel.value(
        f"[[g.seed, str(g.path), c.gen is g, bytes(c.preview.value) == g.thumbnail()] for g, c in"
        f" zip(six, _cards({view!r}))]"
        " + [_flux is six]"
    )
    assert got.pop() is True
    assert [row[0] for row in got] == [500, 501, 502, 503, 504, 505]
    assert len({row[1] for row in got}) == 6 and all(os.path.isfile(row[1]) for row in got)
    assert all(row[2] and row[3] for row in got)


def test_values_come_from_python_variables(kernel):
    assert_clean(kernel.run("my_seed = 4242; shape = '9:16'; how_many = 2"))
    assert_clean(
        kernel.run(
            "%%flux --seed {my_seed + 1} -a $shape -n {how_many} --steps 2 --name from_vars\n"
            "braces {stay} as $written"
        )
    )
    got = kernel.value("[[g.seed, g.recipe.aspect_ratio, g.prompt] for g in from_vars]")
    assert got == [
        [4243, "9:16", "braces {stay} as $written"],
        [4244, "9:16", "braces {stay} as $written"],
    ]
    assert_clean(kernel.run("[g.wait(30) for g in from_vars]"))


def test_a_generation_variable_as_input_image_and_copy_recipe(kernel):
    assert_clean(kernel.run("%%flux --seed 21 --steps 3 -a 1:1 --name src\na red square"))
    cell = kernel.run(
        "%%flux --image src --seed 22 --steps 3 --name edited\nthe same square, in blue"
    )
    (view,) = widget_ids(cell)
    assert_clean(kernel.run("edited.wait(30); wait_settled(10)"))
    # the recipe names the input by hash; its bytes are kept once in the output folder's .inputs/
    ref = kernel.value("edited.recipe.input_image[0]")
    assert ref == kernel.value("'sha256:' + __import__('hashlib').sha256(src.data).hexdigest()")
    (kept,) = (kernel.out / ".inputs").glob(ref[7:23] + ".*")
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == ref[7:]
    assert kernel.value("edited.status") == "succeeded"
    assert_clean(kernel.run("pil, raw = src.image, src.path.read_bytes()"))
    assert_clean(
        kernel.run(
            "%%flux --image pil --image raw --seed 23 --steps 2 --name from_objects\ntwo inputs"
        )
    )
    assert kernel.value("[from_objects.wait(30).status, len(from_objects.recipe.input_image)]") == [
        "succeeded",
        2,
    ]

    # Copy recipe run from code: the execute reply carries the new cell for the frontend.
    assert_clean(kernel.run(f"_cards({view!r})[0].copy_button.click()"))
    (payload,) = kernel.replies[-1]["payload"]
    assert payload["source"] == "set_next_input" and payload["replace"] is False
    text = payload["text"]
    assert text == kernel.value("magic_line(edited.recipe)")
    line, prompt = text.split("\n", 1)
    assert prompt == "the same square, in blue" and "--seed 22" in line and "--steps 3" in line
    image_arg = line.split("--image ")[1].split()[0]
    assert image_arg.startswith(str(kernel.out / ".inputs")) and os.path.isfile(image_arg)

    # The copied cell makes the same image; the output folder holds one image per generation.
    assert_clean(kernel.run(text))
    assert_clean(kernel.run("copied = _flux.wait(30)"))
    assert kernel.value("copied.recipe == edited.recipe")
    a, b = kernel.value("[str(edited.path), str(copied.path)]")
    assert a != b and pixels_equal(a, b)
    saved = kernel.value(
        "sorted(str(g.path) for g in __import__('flux_nb').session().history if g.path)"
    )
    on_disk = sorted(str(p) for p in kernel.out.iterdir() if p.suffix in (".png", ".jpg", ".webp"))
    assert set(saved) <= set(on_disk)
    assert all(read_recipe(p).prompt for p in on_disk)  # each file is a result, none an input copy


def test_copy_recipe_clicked_in_the_browser_shows_the_text_instead(kernel):
    cell = kernel.run("%%flux --seed 3 --steps 2\na small boat")
    (view,) = widget_ids(cell)
    button = kernel.value(f"_cards({view!r})[0].copy_button.model_id")
    kernel.click(button)
    got = kernel.value(
        f"[type(_cards({view!r})[0].children[-1]).__name__, _cards({view!r})[0].children[-1].value"
        f" == magic_line(_flux.recipe)]"
    )
    assert kernel.replies[-1]["payload"] == []  # no cell would pop up under an unrelated one
    assert got == ["Textarea", True]
    assert_clean(kernel.run("_flux.wait(30)"))


def test_many_cells_back_to_back_keep_each_image_in_its_own_cell(kernel):
    views = []
    for i in range(5):
        cell = kernel.run(
            f"%%flux --seed {1000 + 10 * i} -n 3 --steps 3 --name batch{i}\nbatch {i}"
        )
        (view,) = widget_ids(cell)
        views.append(view)
    # Let the images land while no cell runs (what nbclient then drops), watching from outside.
    deadline = time.monotonic() + 30
    while len(list(kernel.out.glob("batch-*"))) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    wait = kernel.run("%flux wait 60")
    assert_clean(wait)
    assert wait.outputs[0].text.startswith("flux: all ") and "failed" not in wait.outputs[0].text
    for i, view in enumerate(views):
        got = kernel.value(
            f"[[g.status, g.seed, str(g.path), c.gen is g, len(c.preview.value) > 0 and"
            f" bytes(c.preview.value) == g.thumbnail()] for g, c in zip(batch{i},"
            f" _cards({view!r}))] + [len(_cards({view!r}))]"
        )
        assert got.pop() == 3
        assert [row[1] for row in got] == [1000 + 10 * i, 1001 + 10 * i, 1002 + 10 * i]
        assert all(row[0] == "succeeded" and row[3] and row[4] for row in got), got
    paths = kernel.value("[str(g.path) for i in range(5) for g in globals()[f'batch{i}']]")
    assert len(set(paths)) == 15

    # The notebook as nbclient would save it: each cell's widget state holds that cell's thumbnails.
    kernel.client.set_widgets_metadata()
    state = kernel.nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    for i, view in enumerate(views):
        want = kernel.value(f"[hashlib.sha256(g.thumbnail()).hexdigest() for g in batch{i}]")
        assert [hashlib.sha256(png).hexdigest() for png in saved_previews(state, view)] == want


def test_cancel_and_failure_show_their_reason_on_the_card(kernel):
    slow = kernel.run("%%flux --steps 50 --name slow\na very slow one")
    assert_clean(kernel.run("%flux cancel all"))
    bad = kernel.run(
        "%%flux --image http://127.0.0.1:9/missing.png --steps 2 --name bad\nedit what is not there"
    )
    assert_clean(kernel.run("%flux wait 30"))
    status = kernel.value(
        f"[slow.status, _cards({widget_ids(slow)[0]!r})[0].status_html, bad.status, bad.reason,"
        f" _cards({widget_ids(bad)[0]!r})[0].status_html]"
    )
    assert status[0] == "cancelled" and "cancelled" in status[1]
    assert status[2] == "failed" and status[3] and "failed: " in status[4]
    cell = kernel.run("slow.wait()")  # a Python error stays a Python error
    assert cell.outputs[0].output_type == "error" and cell.outputs[0].ename == "GenerationCancelled"


def test_bare_generation_shows_card_png_and_stable_text(kernel):
    assert_clean(kernel.run("%%flux --seed 77 --steps 2 --name shown\na tiny planet"))
    assert_clean(kernel.run("shown.wait(30)"))
    (out,) = kernel.run("shown").outputs
    assert set(out["data"]) == {WIDGET_VIEW, "image/png", "text/plain"}
    assert (
        out["data"]["text/plain"]
        == f"'a tiny planet'\n{kernel.value('shown.recipe.summary()')}\ndone"
    )
    assert kernel.value(f"_cards({out['data'][WIDGET_VIEW]['model_id']!r})[0].gen is shown")


def test_line_subcommands(kernel):
    assert_clean(kernel.run("%%flux --seed 76 --steps 2\na tiny moon"))
    assert_clean(kernel.run("%%flux --seed 77 --steps 2 --name shown\na tiny planet"))
    assert_clean(kernel.run("shown.wait(30)"))
    status = kernel.run("%flux status")
    assert_clean(status)
    assert status.outputs[0].text.startswith("flux: local backend at http://127.0.0.1:")
    history = kernel.run("%flux history 2")
    assert_clean(history)
    assert len(history.outputs[0].text.splitlines()) == 2
    path = kernel.value("str(shown.path)")
    cell = kernel.run(f"%flux reproduce {path}")
    assert_clean(cell) and widget_ids(cell)
    assert_clean(kernel.run("again = _flux.wait(30)"))
    assert kernel.value("again.recipe == shown.recipe and again is not shown")
    assert pixels_equal(path, kernel.value("str(again.path)"))
    assert_clean(kernel.run("%flux copy"))
    assert kernel.replies[-1]["payload"][0]["text"] == kernel.value("magic_line(again.recipe)")
    backend = kernel.run("%flux backend")
    assert_clean(backend) and "local offline stand-in" in backend.outputs[0].text
    panel = kernel.run("%flux panel")
    assert_clean(panel)
    assert widget_ids(panel) or "not part of this version" in panel.outputs[0].text


def test_resume_collects_what_an_earlier_kernel_left(kernel):
    cell = kernel.run("%flux resume")
    assert_clean(cell) and widget_ids(cell)
    assert_clean(kernel.run("resumed = _flux.wait(30)"))
    assert kernel.value("resumed.recipe.to_dict()") == PENDING_RECIPE.to_dict()
    assert kernel.value("__import__('flux_nb').session().journal_pending()") == []


def test_config_and_help(kernel):
    assert_clean(kernel.run("%config FluxMagics.thumbnail_size = 96"))
    cell = kernel.run("%%flux --seed 5 --steps 2 -a 1:1\na small icon")
    assert_clean(kernel.run("_flux.wait(30); wait_settled(10)"))
    size = kernel.value(
        f"__import__('PIL.Image').Image.open(__import__('io').BytesIO("
        f"bytes(_cards({widget_ids(cell)[0]!r})[0].preview.value))).size"
    )
    assert size == [96, 96]
    assert_clean(kernel.run("%config FluxMagics.thumbnail_size = 320"))
    doc = kernel.value("get_ipython().find_cell_magic('flux').__doc__")
    for option in (
        "--seed",
        "--aspect",
        "-a",
        "--steps",
        "--guidance",
        "--quality",
        "--format",
        "-n",
        "--image",
        "--name",
    ):
        assert option in doc


def test_backend_switches_and_the_key_stays_out_of_sight(kernel):
    key = "sk-test-never-show-4f1c9a"
    assert_clean(kernel.run(f"import os; os.environ['OXEN_API_KEY'] = {key!r}"))
    cell = kernel.run("%flux backend hosted")  # no request is sent until something is generated
    assert_clean(cell)
    assert (  # one line, however the kernel's stream chunks it (ipykernel 6.17 may split it)
        "".join(o.text for o in cell.outputs if o.output_type == "stream")
        == "flux-nb: using Oxen.ai's hosted FLUX.2 Klein 4B at https://hub.oxen.ai.\n"
    )
    shown = kernel.value(
        "[__import__('flux_nb').session().backend, repr(__import__('flux_nb').session()),"
        " repr(__import__('flux_nb').session().client.__dict__), [k for k, v in globals().items()"
        " if isinstance(v, str) and v == os.environ['OXEN_API_KEY']]]"
    )
    assert shown[0] == "hosted" and key not in shown[1] and key not in shown[2] and shown[3] == []
    assert_clean(kernel.run("del os.environ['OXEN_API_KEY']"))
    cell = kernel.run("%flux backend local")
    assert_clean(cell) and "local offline stand-in" in cell.outputs[0].text
    assert_clean(kernel.run("%%flux --seed 1 --steps 2\nafter the switch"))
    assert kernel.value(
        "[_flux.wait(30).status, _flux is __import__('flux_nb').session().history[-1]]"
    ) == ["succeeded", True]


COLAB_USERDATA = """
import sys, types
class SecretNotFoundError(Exception):
    pass
def _get(name):
    if name not in _secrets:
        raise SecretNotFoundError(f"Secret {name} does not exist.")
    return _secrets[name]
_colab = types.ModuleType("google.colab")
_colab.userdata = types.SimpleNamespace(get=_get)
sys.modules["google.colab"] = _colab
"""


def test_backend_hosted_reads_the_key_from_colabs_secrets_and_never_shows_it(kernel):
    key = "sk-colab-secret-never-show-77aa"
    assert_clean(kernel.run("import os; os.environ.pop('OXEN_API_KEY', None)"))
    assert_clean(kernel.run(f"_secrets = {{'OXEN_API_KEY': {key!r}}}\n{COLAB_USERDATA}"))
    try:
        cell = kernel.run("%flux backend hosted")
        assert_clean(cell)
        assert "hosted FLUX.2 Klein 4B" in cell.outputs[0].text and key not in str(cell.outputs)
        shown = kernel.value(
            "[__import__('flux_nb').session().backend, repr(__import__('flux_nb').session()),"
            " repr(__import__('flux_nb').session().client.__dict__)]"
        )
        assert shown[0] == "hosted" and key not in shown[1] and key not in shown[2]

        # No secret (or no access granted): asked as anywhere else; here no stdin, so one line.
        assert_clean(kernel.run("_secrets.clear()"))
        cell = kernel.run("%flux backend hosted")
        text = " ".join(str(o.get("text", "")) + str(o.get("evalue", "")) for o in cell.outputs)
        assert "needs an API key" in text and "in Colab: a secret" in text
        assert not any(o.output_type == "error" and o.get("traceback") for o in cell.outputs)
    finally:
        assert_clean(kernel.run("del sys.modules['google.colab']"))
        assert_clean(kernel.run("%flux backend local"))


# -- sweeps, cost, foreign recipes ----------------------------------------------------------------


def test_sweep_cell_makes_a_labelled_grid_of_generations_and_a_sheet(kernel):
    cell = kernel.run(
        "%%flux --seed 7 -a 1:1 --sweep steps=4,8,16 --sweep guidance=1,2,4 --name grid\n"
        "a lighthouse at dusk"
    )
    assert [o.output_type for o in cell.outputs] == ["display_data"]  # nothing printed: local
    (view,) = widget_ids(cell)
    assert cell.outputs[0]["data"]["text/plain"] == (
        "3 x 3 sweep of 'a lighthouse at dusk'\nsteps: 4 | 8 | 16; guidance: 1 | 2 | 4\nrunning"
    )
    assert kernel.value("type(grid).__name__ == 'Sweep' and _flux is grid and grid.shape")
    assert kernel.value(f"[c.gen for c in _cards({view!r})] == list(grid)")
    assert_clean(kernel.run("_sheet = grid.save('sweep-sheet.png', tile=64, timeout=60)"))
    got = kernel.value(
        "dict(seeds=sorted({g.seed for g in grid}), cells=[(g.recipe.num_inference_steps,"
        " g.recipe.guidance_scale) for g in grid], done=[g.status for g in grid],"
        " size=__import__('PIL.Image').Image.open(_sheet).size, cols=grid.column_labels,"
        " rows=grid.row_labels)"
    )
    assert got["seeds"] == [7] and set(got["done"]) == {"succeeded"}
    assert got["cells"] == [[s, g] for g in (1.0, 2.0, 4.0) for s in (4, 8, 16)]
    assert got["cols"] == ["steps 4", "steps 8", "steps 16"]
    assert got["rows"] == [["guidance 1"], ["guidance 2"], ["guidance 4"]]
    width, height = got["size"]
    assert 3 * 64 < width < 3 * 64 + 200 and 3 * 64 + 60 < height < 3 * 64 + 160
    # Each cell keeps its own recipe: Reproduce remakes it alone.
    assert_clean(kernel.run("again = grid[2, 1].reproduce().wait(30)"))
    assert kernel.value("again.recipe == grid[2, 1].recipe and again.path != grid[2, 1].path")


def test_prompt_alternatives_expand_and_combine_with_sweep(kernel):
    cell = kernel.run(
        "%%flux --seed 3 --steps 2 --sweep quality=standard,high\na {red|blue|green} fox"
    )
    assert_clean(cell) and widget_ids(cell)
    got = kernel.value("[(g.prompt, g.recipe.output_quality, g.seed) for g in _flux]")
    assert [tuple(x) for x in got] == [
        (f"a {c} fox", q, 3) for q in ("standard", "high") for c in ("red", "blue", "green")
    ]
    assert_clean(kernel.run("%flux wait 60"))


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("--sweep stpes=1,2", ("cannot sweep 'stpes'", "Did you mean steps?")),
        ("--sweep steps=4,60", ("steps=60 is out of range", "1 to 50")),
        ("--sweep guidance=1,x", ("guidance='x' is not a number",)),
        ("--steps 4 --sweep steps=4,8", ("steps is both set and swept",)),
        ("-n 2 --sweep steps=4,8", ("-n does not combine with a sweep", "--sweep seed=")),
    ],
)
def test_bad_sweeps_are_one_line_and_send_nothing(kernel, line, words):
    before = kernel.value("len(__import__('flux_nb').session().history)")
    one_line_error(kernel.run(f"%%flux {line}\na fox"), *words)
    assert kernel.value("len(__import__('flux_nb').session().history)") == before


def test_cost_is_checked_before_spending_on_a_paid_backend(kernel, local_server, tmp_path):
    from priced_server import PricedServer

    with PricedServer(
        local_server.url, {"method": "per_image", "cost_per_image": "0.02"}
    ) as server:
        assert_clean(
            kernel.run(
                "from flux_nb.jobs._sessions import Session, set_session\n"
                f"_local = set_session(Session(base_url={server.url!r}, api_key='k-pricing',"
                f" output_dir={str(tmp_path)!r}, announce=None))"
            )
        )
        try:
            price = kernel.run("%flux price")
            assert_clean(price)
            assert price.outputs[0].text == "flux: custom backend: 0.02 per image.\n"
            assert_clean(kernel.run("%config FluxMagics.max_cell_cost = 0.05"))
            refused = one_line_error(
                kernel.run("%%flux -n 3 --seed 1 --steps 2\nthree foxes"),
                "0.06 (3 images at 0.02 each)",
                "max_cell_cost = 0.05",
                "--yes",
            )
            assert "nothing was sent" in refused and server.sent("POST") == []
            swept = kernel.run("%%flux --steps 2 --sweep seed=1,2,3 --yes\na fox")
            assert cell_text(swept) == "flux: cost 0.06 (3 images at 0.02 each).\n"
            assert_clean(swept) and widget_ids(swept)
            assert_clean(kernel.run("_flux.wait(60)"))
            assert len(server.sent("POST")) == 3
            assert kernel.value("[g.status for g in _flux]") == ["succeeded"] * 3
        finally:
            assert_clean(kernel.run("set_session(_local)\n%config FluxMagics.max_cell_cost = 1.0"))


def test_flux_reproduce_takes_a_foreign_a1111_file(kernel, tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a castle on a hill\nNegative prompt: ugly\n"
        "Steps: 12, Sampler: Euler a, CFG scale: 3.5, Seed: 4242, Size: 768x512, Model: sd15",
    )
    path = tmp_path / "a1111.png"
    Image.new("RGB", (768, 512), "gray").save(path, pnginfo=info)
    cell = kernel.run(f"%flux reproduce {path}")
    assert_clean(cell) and widget_ids(cell)
    note = cell_text(cell)
    assert note.count("\n") == 1 and note.startswith("flux: from A1111 parameters")
    assert "ignored: negative prompt, Sampler, Model (sd15)" in note
    assert "Size 768x512 taken as aspect ratio 4:3" in note
    got = kernel.value("_flux.wait(30).recipe.to_dict()")
    assert (got["prompt"], got["num_inference_steps"], got["guidance_scale"], got["seed"]) == (
        "a castle on a hill",
        12,
        3.5,
        4242,
    )
    assert got["aspect_ratio"] == "4:3"
    saved = kernel.value("str(_flux.path)")
    with Image.open(saved) as im:  # the remade file carries its own parameters text
        assert im.info["parameters"].startswith(
            "a castle on a hill\nSteps: 12, Sampler: Euler, CFG scale: 3.5, Seed: 4242"
        )


def cell_text(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


# -- lineage --------------------------------------------------------------------------------------


def test_flux_lineage_shows_three_steps_and_reproduce_lineage_remakes_them(kernel, tmp_path):
    for cell in (
        "%%flux --seed 41 --steps 4 -a 1:1 --name lin1\na lantern on a table",
        "lin1.wait(30)",
        "%%flux --image lin1 --seed 42 --steps 4 -a 1:1 --name lin2\nthe lantern lit",
        "lin2.wait(30)",
        "%%flux --image {str(lin2.path)} --seed 43 --steps 4 -a 1:1 --name lin3\nmoths around it",
        "lin3.wait(30)",
    ):
        assert_clean(kernel.run(cell))
    path = kernel.value("str(lin3.path)")
    for target in ("lin3", path):
        cell = kernel.run(f"%flux lineage {target}")
        assert_clean(cell)
        (out,) = cell.outputs
        text = out["data"]["text/plain"]
        assert "3 steps, parents first" in text.splitlines()[0]
        assert [line.split()[0] for line in text.splitlines()[1:]] == ["1", "2", "3"]
        assert "'a lantern on a table'" in text and "seed 43 · 4 steps" in text
        with Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"]))) as strip:
            assert strip.width > 3 * 128
    remade = kernel.run(f"%flux reproduce --lineage {path}")
    assert_clean(remade) and len(widget_ids(remade)) == 1
    assert cell_text(remade) == "flux: made 2 earlier step(s) again first, then the last one.\n"
    assert_clean(kernel.run("again = _flux.wait(30)"))
    assert kernel.value("[g.prompt for g in __import__('flux_nb').session().history[-3:]]") == [
        "a lantern on a table",
        "the lantern lit",
        "moths around it",
    ]
    assert pixels_equal(path, kernel.value("str(again.path)"))


def test_reproduce_lineage_names_a_missing_photo_in_one_line_and_takes_it_with_input(
    kernel, tmp_path
):
    photo = tmp_path / "my photo.png"
    Image.new("RGB", (200, 150), "teal").save(photo)
    for cell in (
        f"%%flux --image {str(photo)!r} --seed 51 --steps 4 -a 1:1 --name ph1\nas a mosaic",
        "ph1.wait(30)",
        "%%flux --image ph1 --seed 52 --steps 4 -a 1:1 --name ph2\nthe mosaic at night",
        "ph2.wait(30)",
    ):
        assert_clean(kernel.run(cell))
    far = tmp_path / "far"
    far.mkdir()
    last = far / "last.png"
    last.write_bytes(open(kernel.value("str(ph2.path)"), "rb").read())
    assert_clean(
        kernel.run(
            "from flux_nb.jobs._sessions import Session, set_session\n"
            f"_before = set_session(Session('local', output_dir={str(far / 'out')!r},"
            f" announce=None))"
        )
    )
    try:
        one_line_error(
            kernel.run(f"%flux reproduce --lineage {last}"),
            "my photo.png (sha256:",
            "is needed",
            "--input FILE",
        )
        assert kernel.value("len(__import__('flux_nb').session().history)") == 0
        shown = kernel.run(f"%flux lineage {last}")
        assert_clean(shown)
        assert "my photo.png, uploaded · needed: not here" in shown.outputs[0]["data"]["text/plain"]
        # Plain reproduce of the first edit: its recipe names the photo by hash, the photo is
        # not in this folder's .inputs/: one line saying how to give it, then --input gives it.
        first = far / "first.png"
        first.write_bytes(open(kernel.value("str(ph1.path)"), "rb").read())
        sent = kernel.value("len(__import__('flux_nb').session().history)")
        one_line_error(kernel.run(f"%flux reproduce {first}"), "is not here", "--input FILE")
        assert kernel.value("len(__import__('flux_nb').session().history)") == sent
        cell = kernel.run(f'%flux reproduce {first} --input "{photo}"')
        assert_clean(cell) and widget_ids(cell)
        assert pixels_equal(str(first), kernel.value("str(_flux.wait(30).path)"))
        cell = kernel.run(f'%flux reproduce --lineage {last} --input "{photo}"')
        assert_clean(cell) and widget_ids(cell)
        assert pixels_equal(str(last), kernel.value("str(_flux.wait(30).path)"))
    finally:
        assert_clean(kernel.run("set_session(_before)"))


def test_reproduce_lineage_checks_the_cost_of_every_step_before_sending(
    kernel, local_server, tmp_path
):
    from priced_server import PricedServer

    from flux_nb.core._config import Settings
    from flux_nb.jobs._sessions import Session

    maker = Session(
        "local", output_dir=tmp_path / "made", settings=Settings(step_delay=0.0), announce=None
    )
    try:
        base = maker.generate("a kite", seed=61, num_inference_steps=2, aspect_ratio="1:1").wait()
        last = maker.generate(
            "in a storm", input_image=base, seed=62, num_inference_steps=2, aspect_ratio="1:1"
        ).wait()
    finally:
        maker.close()
    with PricedServer(
        local_server.url, {"method": "per_image", "cost_per_image": "0.02"}
    ) as server:
        assert_clean(
            kernel.run(
                "from flux_nb.jobs._sessions import Session, set_session\n"
                f"_local = set_session(Session(base_url={server.url!r}, api_key='k-lineage-cost',"
                f" output_dir={str(tmp_path / 'paid')!r}, announce=None))\n"
                "%config FluxMagics.max_cell_cost = 0.03"
            )
        )
        try:
            # The price read first (a cell run while it is still being read checks it before
            # each enqueue instead, on a slow machine or a fast one): the refusal is the cell's.
            assert_clean(kernel.run("%flux price"))
            refused = one_line_error(
                kernel.run(f"%flux reproduce --lineage {last.path}"), "0.04 (2 images at 0.02 each)"
            )
            assert "nothing was sent" in refused and server.sent("POST") == []
            cell = kernel.run(f"%flux reproduce --lineage --yes {last.path}")
            assert cell_text(cell).startswith("flux: cost 0.04 (2 images at 0.02 each).\n")
            assert_clean(cell) and widget_ids(cell)
            assert_clean(kernel.run("_flux.wait(60)"))
            assert len(server.sent("POST")) == 2
        finally:
            assert_clean(kernel.run("set_session(_local)\n%config FluxMagics.max_cell_cost = 1.0"))
