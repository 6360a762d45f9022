"""Restarts lose nothing and send nothing twice: the journal, resume() and processes killed at
every moment, against the real local server over loopback HTTP. No patched functions.

Waits are on events or bounded polls of real state, never fixed sleeps.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_helpers import (
    FAST,
    Api,
    assert_saved_once,
    flux_recipe,
    folder,
    journal_ops,
    recipe,
)
from helpers import pixels_equal
from PIL import Image

from flux_nb.api._client import OxenClient
from flux_nb.core._config import Settings
from flux_nb.core._recipe import Recipe
from flux_nb.files._journal import Journal
from flux_nb.jobs._sessions import JOURNAL_NAME, Session
from flux_nb.server import LocalServer
from flux_nb.server._app import LocalExtras

# --- restart safety -------------------------------------------------------------------------------


def test_the_journal_holds_the_recipe_before_submit_returns_and_the_id_before_it_shows(
    make_server, open_session
) -> None:
    server = make_server(step_delay=0.01)
    session = open_session(server, "tok-journal-order")
    problems: list[str] = []

    def check(gen) -> None:  # runs on the runner's threads, at every state change
        if gen.status in ("queued", "processing", "succeeded") and gen.id:
            ops = {
                (e["op"], e.get("id"))
                for e in journal_ops(session.output.path)
                if e["key"] == gen.key
            }
            if ("enqueued", gen.id) not in ops:
                problems.append(f"{gen.key} shows id {gen.id} before the journal has it")

    gens = session.generate(
        "journal first", n=6, seed=1200, num_inference_steps=3, aspect_ratio="1:1"
    )
    submitted = {e["key"]: e for e in journal_ops(session.output.path) if e["op"] == "submit"}
    assert set(submitted) == {g.key for g in gens}  # durable before the handles came back
    assert [Recipe.from_dict(submitted[g.key]["recipe"]) for g in gens] == [g.recipe for g in gens]
    assert all(submitted[g.key]["backend"] == "custom" for g in gens)
    for gen in gens:
        gen.on_change(check)
    assert_saved_once(session, gens)
    assert problems == []


def test_resume_gives_identical_recipes_one_row_each(local_server, open_session, tmp_path) -> None:
    """Two submits of one recipe, both sent, neither id journalled (the kernel died): resume must
    match each to its own row, not both to the newest."""
    token = "tok-identical-resume"
    out = tmp_path / "out"
    client = OxenClient(local_server.url, token, retry=FAST)
    journal = Journal(out / JOURNAL_NAME)
    same = recipe(seed=1300)
    for key in ("k1", "k2"):
        journal.record({"op": "submit", "key": key, "backend": "custom", "recipe": same.to_dict()})
        client.enqueue(same)
    journal.close()  # the kernel that wrote it died
    session = open_session(local_server, token, out=out)
    gens = session.resume()
    assert_saved_once(session, gens)
    assert len({g.id for g in gens}) == 2
    assert Api(local_server, token).seeds() == Counter({1300: 2})  # nothing sent again


CHILD = textwrap.dedent(
    """
    import os, sys, threading, time
    from flux_nb.core._config import RetryPolicy
    from flux_nb.jobs._sessions import JOURNAL_NAME, Session

    kind, _, nth = os.environ["KILL_AT"].partition(":")
    nth = int(nth or 1)
    counts, lock, local = {}, threading.Lock(), threading.local()

    def hit(event):
        with lock:
            counts[event] = counts.get(event, 0) + 1
            now = counts[event]
        if event == kind and now == nth:
            print("AT", event, now, flush=True)
            time.sleep(60)  # frozen here until the test kills the process

    def audit(event, args):
        if event == "open" and args:
            name = args[0]
            if isinstance(name, str) and name.endswith(JOURNAL_NAME):
                if getattr(local, "renamed", False):
                    local.renamed = False
                    hit("renamed")  # the image is in place, its 'saved' record not yet
                hit("journal")
            elif isinstance(name, str) and "/.partial-" in name:
                local.partial = True
            elif isinstance(name, int) and getattr(local, "partial", False):
                local.partial = False
                hit("partial")  # the temporary file exists, nothing written yet
        elif event == "os.rename" and ".partial-" in str(args[0]):
            hit("rename")  # the whole image is written, not yet renamed into place
            local.renamed = True

    sys.addaudithook(audit)
    session = Session(announce=None, retry=RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05))

    def watch(gen):
        if gen.status == "processing":
            hit("processing")
        if gen.done and gen.path:
            hit("saved")

    n, seed = int(os.environ["N"]), int(os.environ["SEED"])
    recipes = session.recipes(
        "restart safety", n=n, seed=seed, num_inference_steps=int(os.environ.get("STEPS", 6)),
        aspect_ratio="1:1",
    )
    gens = session.submit(recipes)
    print("SUBMITTED", flush=True)
    for gen in gens:
        gen.on_change(watch)
    if kind == "after":
        time.sleep(nth / 1000)
        print("AT after", nth, flush=True)
        time.sleep(60)
    session.wait_all(30)
    hit("done")
    """
)


def start_child(tmp_path: Path, kill_at: str, env: dict[str, str]) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "KILL_AT": kill_at, "PYTHONUNBUFFERED": "1", **env}
    for name in ("OXEN_API_KEY", "FLUX_NB_BASE_URL"):
        if not env.get(name):
            env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when_there(child: subprocess.Popen) -> list[str]:
    """Read the child's lines until it reports reaching its kill point, SIGKILL it there; return
    what it said."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in child.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    said = []
    try:
        while True:
            line = lines.get(timeout=30)
            assert line is not None, f"the child ended early: {said} {child.stderr.read()}"
            said.append(line)
            if line.startswith("AT "):
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return said


def run_and_kill(tmp_path: Path, kill_at: str, env: dict[str, str]) -> list[str]:
    return kill_when_there(start_child(tmp_path, kill_at, env))


def journalled_recipes(out: Path) -> dict[str, Recipe]:
    return {
        e["key"]: Recipe.from_dict(e["recipe"]) for e in journal_ops(out) if e["op"] == "submit"
    }


def check_one_image_per_recipe(out: Path, recipes: dict[str, Recipe]) -> dict[int, Path]:
    images, others = folder(out)
    assert others == [JOURNAL_NAME], others  # the dead process's .partial-* swept away
    by_seed = Counter(flux_recipe(p).seed for p in images)
    assert by_seed == Counter(r.seed for r in recipes.values()), by_seed
    return {flux_recipe(p).seed: p for p in images}


KILL_POINTS = [
    "journal:1",  # inside submit(), before the recipes are journalled: nothing may be sent
    "journal:2",  # the first id is about to be journalled: the rows exist, their ids are nowhere
    "after:0",  # just after submit() returned: some ids journalled, some not
    "processing:1",
    "partial:1",  # mid-save: a temporary file exists
    "rename:1",  # the image is complete but not yet in place
    "renamed:1",  # the image is in place, its 'saved' record not yet written
    "saved:3",
    "done:1",
]


# What each kill point must leave behind, so a test cannot pass by killing somewhere else.
REACHED = {
    "journal:1": lambda s: s["journalled"] == 0,
    "journal:2": lambda s: s["no_id"] >= 1 and s["images"] == 0,
    # all six journalled, and killed while some were still in flight (the fastest may be saved)
    "after:0": lambda s: s["journalled"] == 6 and s["pending"] >= 1,
    "processing:1": lambda s: s["pending"] >= 1,
    "partial:1": lambda s: s["partials"] >= 1,
    "rename:1": lambda s: s["partials"] >= 1,
    "renamed:1": lambda s: s["images"] >= 1 and s["pending"] == 6,  # on disk, not journalled
    "saved:3": lambda s: s["images"] >= 3 and s["pending"] <= 3,
    "done:1": lambda s: s["images"] == 6 and s["pending"] == 0,
}


def left_behind(out: Path) -> dict[str, int]:
    images, others = folder(out) if out.exists() else ([], [])
    journal = Journal(out / JOURNAL_NAME)
    pending = journal.pending()
    return {
        "journalled": sum(1 for e in journal.entries() if e["op"] == "submit"),
        "pending": len(pending),
        "no_id": sum(1 for e in pending if not e.get("id")),
        "images": len(images),
        "partials": sum(1 for name in others if name.startswith(".partial-")),
    }


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Every kill point at once: a child process per point, all against one server, each
    SIGKILLed where it says it is. Yields the server and, per point, (output folder, key, said)."""
    # progress events (local-only) announce "processing" at once:
    # the kill point "processing" needs it
    with LocalServer(step_delay=0.01, extras=LocalExtras(progress_events=True)) as server:
        runs = {}
        for kill_at in KILL_POINTS:
            folder_ = tmp_path_factory.mktemp("kill")
            token = f"tok-kill-{kill_at}-{time.monotonic_ns()}"
            env = {
                "FLUX_NB_BASE_URL": server.url,
                "OXEN_API_KEY": token,
                "FLUX_NB_OUTPUT_DIR": str(folder_ / "out"),
                "N": "6",
                "SEED": "1400",
                # "just after submit": 50 steps (0.5 s) keep them in flight when it is killed
                "STEPS": "50" if kill_at.startswith("after") else "6",
            }
            runs[kill_at] = (folder_ / "out", token, start_child(folder_, kill_at, env))

        def kill(kill_at: str) -> tuple[Path, str, list[str]]:
            out, token, child = runs[kill_at]
            try:
                return out, token, kill_when_there(child)
            except AssertionError as exc:  # reported by that point's test, not by the others
                return out, token, [f"failed: {exc}"]

        # Each child is killed the moment it says where it is, not after the points before it
        # (a child left running would finish what it was meant to be killed in the middle of).
        with ThreadPoolExecutor(len(runs)) as pool:
            results = dict(zip(runs, pool.map(kill, runs), strict=True))
        yield server, results


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_killing_the_process_at_any_moment_loses_nothing(killed, open_session, kill_at) -> None:
    server, results = killed
    out, token, said = results[kill_at]
    assert said[-1].startswith(f"AT {kill_at.split(':')[0]}"), said
    state = left_behind(out)
    assert REACHED[kill_at](state), state
    api = Api(server, token)
    recipes = journalled_recipes(out)
    sent = api.seeds()
    assert set(sent) <= {r.seed for r in recipes.values()}  # nothing sent that was not journalled
    assert all(count == 1 for count in sent.values())

    session = open_session(server, token, out=out)
    resumed = session.resume()
    for gen in resumed:
        gen.wait(20)
        assert gen.status == "succeeded", gen
    if recipes:
        check_one_image_per_recipe(out, recipes)
    else:  # killed before anything was journalled: nothing was sent either
        assert kill_at == "journal:1" and sent == Counter() and resumed == []
    assert api.seeds() == Counter(r.seed for r in recipes.values())  # one row per recipe
    assert session.journal_pending() == []
    assert open_session(server, token, out=out).resume() == []  # a third kernel: nothing left


@pytest.mark.parametrize("kill_at", ["journal:2", "processing:1", "renamed:1"])
def test_killing_a_kernel_on_the_local_backend_reruns_the_recipe_with_the_same_pixels(
    tmp_path, kill_at
) -> None:
    """The embedded server died with the process: resume runs the recipe again (same seed, same
    pixels), except what is already on disk."""
    out = tmp_path / "out"
    run_and_kill(
        tmp_path,
        kill_at,
        {
            "FLUX_NB_OUTPUT_DIR": str(out),
            "FLUX_NB_STEP_DELAY": "0.01",
            "N": "4",
            "SEED": "1500",
            "OXEN_API_KEY": "",
            "FLUX_NB_BASE_URL": "",
        },
    )
    recipes = journalled_recipes(out)
    before = {p.name for p in folder(out)[0]}
    session = Session("local", output_dir=out, settings=Settings(step_delay=0.0), announce=None)
    reference = Session(
        "local", output_dir=tmp_path / "ref", settings=Settings(step_delay=0.0), announce=None
    )
    try:
        resumed = session.resume()
        for gen in resumed:
            gen.wait(20)
            assert gen.status == "succeeded"
        paths = check_one_image_per_recipe(out, recipes)
        rerun = [g for g in resumed if g.path.name not in before]
        assert rerun, "some recipe should have needed a re-run"
        for gen in rerun:
            again = reference.submit([gen.recipe])[0].wait(10)
            assert pixels_equal(Image.open(paths[gen.seed]), again.image)
        assert session.journal_pending() == []
    finally:
        session.close()
        reference.close()


def test_flux_nb_resume_uses_the_current_session(local_server, open_session, tmp_path) -> None:
    import flux_nb
    from flux_nb.jobs._sessions import set_session

    token = "tok-module-resume"
    out = tmp_path / "out"
    client = OxenClient(local_server.url, token, retry=FAST)
    journal = Journal(out / JOURNAL_NAME)
    r = recipe(seed=1600)
    journal.record({"op": "submit", "key": "only", "backend": "custom", "recipe": r.to_dict()})
    gid = client.enqueue(r)[0]["generation_id"]
    journal.record({"op": "enqueued", "key": "only", "id": gid})
    journal.close()  # the kernel that wrote it died
    old = set_session(open_session(local_server, token, out=out))
    try:
        (gen,) = flux_nb.resume()
        assert gen.wait(10).id == gid and gen.path.exists()
    finally:
        set_session(old)
    assert Api(local_server, token).seeds() == Counter({1600: 1})
