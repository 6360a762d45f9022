"""Faults survived, nothing lost, nothing twice: the client, runner and session against the real
local server with injected faults (server/faults.py), over loopback HTTP. No patched functions.

Fault RNGs are seeded; waits are on events or bounded polls of real state, never fixed sleeps.
"""

from __future__ import annotations

import html
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageChops
from recording_server import RecordingServer

from flux_nb import errors, read_recipe
from flux_nb.cards import Card, generation_mimebundle, magic_line, status_line
from flux_nb.client import AmbiguousSend, OxenClient
from flux_nb.config import RetryPolicy, Settings, Timeouts
from flux_nb.journal import LIVE_DIR, Journal
from flux_nb.recipe import Recipe
from flux_nb.server import Faults, LocalServer
from flux_nb.server.app import LocalExtras
from flux_nb.sessions import JOURNAL_NAME, Session

FAST = RetryPolicy(attempts=5, backoff=0.01, max_backoff=0.05, rate_limit_attempts=5)
TIMEOUTS = Timeouts(connect=2, read=5, write=5, pool=5, download=5, sse_read=5)
QUEUE = "/api/ai/queue"


# --- helpers ---------------------------------------------------------------------------------------


class Api:
    """The test's own view of a server, as one API key sees it: fault config, counters and rows."""

    def __init__(self, server: LocalServer, token: str) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def faults(self, **config: object) -> None:
        response = self.http.post("/_faults", json=config)
        assert response.status_code == 200, response.text

    def injected(self) -> dict[str, int]:
        return self.http.get("/_faults").json()["injected"]

    def rows(self) -> list[dict]:
        """Every row, in any status (the list shows only active ones unless asked per status);
        once each, though a row may move on from one status to the next between the requests."""
        rows: dict[str, dict] = {}
        for status in ("queued", "processing", "succeeded", "failed", "cancelled"):
            response = self.http.get(QUEUE, params={"status": status})
            assert response.status_code == 200, response.text
            for row in response.json()["generations"]:
                rows[row["generation_id"]] = row
        return list(rows.values())

    def seeds(self) -> Counter:
        return Counter(row["seed"] for row in self.rows())


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll real state until it holds (for things no event announces)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def folder(path: Path) -> tuple[list[Path], list[str]]:
    """(image files, every other name) in an output folder; the journal writers' lock folder
    (LIVE_DIR: which kernels are still running) is bookkeeping, not output, and left out."""
    images, others = [], []
    for entry in sorted(Path(path).iterdir()):
        if entry.name == LIVE_DIR:
            continue
        if entry.suffix in (".png", ".jpg", ".webp") and not entry.name.startswith("."):
            images.append(entry)
        else:
            others.append(entry.name)
    return images, others


def journal_ops(path: Path) -> list[dict]:
    return Journal(Path(path) / JOURNAL_NAME).entries()


def assert_saved_once(session: Session, gens: list) -> None:
    """Every generation saved, each exactly once: one complete image file, one 'saved' record."""
    for gen in gens:
        gen.wait(20)
        assert gen.status == "succeeded" and gen.path is not None, gen
    images, others = folder(session.output.path)
    assert sorted(images) == sorted(g.path for g in gens)
    assert others == [JOURNAL_NAME]  # no .partial-* and nothing else
    for path in images:
        Image.open(path).load()  # complete: a cut file would not decode
    saved = Counter(e["key"] for e in journal_ops(session.output.path) if e["op"] == "saved")
    assert saved == Counter(g.key for g in gens)


def flux_recipe(path: Path) -> Recipe:
    return read_recipe(path)


def pixels_equal(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


@pytest.fixture
def token(request) -> str:
    return "tok-" + request.node.name[:40]


@pytest.fixture
def faulty(make_server, token):
    """A fresh server with fault injection on (nothing injected until a test says so)."""
    server = make_server(faults=Faults(seed=7))
    return server, Api(server, token)


@pytest.fixture
def open_session(tmp_path):
    made: list[Session] = []

    def make(server: LocalServer, token: str | None, out: Path | None = None, **options) -> Session:
        options.setdefault("retry", FAST)
        options.setdefault("timeouts", TIMEOUTS)
        session = Session(
            base_url=server.url,
            api_key=token,
            output_dir=out or tmp_path / "out",
            settings=Settings(),
            announce=None,
            **options,
        )
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


def recipe(seed: int = 1, **params) -> Recipe:
    params.setdefault("num_inference_steps", 2)
    params.setdefault("aspect_ratio", "1:1")
    return Recipe.build(params.pop("prompt", "a lighthouse in fog"), seed=seed, **params)


# --- the client: every call retried through 429, 5xx, resets and timeouts ----------------------------

CALLS = {
    "model": ("GET", "/api/ai/models/", lambda c, gid, url: c.model_info()),
    "get": ("GET", QUEUE + "/", lambda c, gid, url: c.get_generation(gid)),
    "list": ("GET", QUEUE, lambda c, gid, url: c.list_generations(status="succeeded")),
    "cancel": ("DELETE", QUEUE + "/", lambda c, gid, url: c.cancel(gid)),
    "download": ("GET", "/api/files/", lambda c, gid, url: c.download(url)),
}
FAULTS = {
    "429 with Retry-After": {"status": 429, "retry_after": 0.05},
    "503 without Retry-After": {"status": 503},
    "500": {"status": 500},
    "502": {"status": 502},
    "504": {"status": 504},
    "connection reset": {"action": "reset"},
    "answer lost after acting": {"action": "drop_response"},
    "read timeout": {"action": "delay", "delay": 1.0},
}


@pytest.fixture(scope="module")
def finished():
    """One server with faults on, a client with short timeouts, and one finished generation."""
    with LocalServer(faults=Faults(seed=3)) as server:
        client = OxenClient(
            server.url, "tok-calls", retry=FAST, timeouts=Timeouts(read=0.3, download=0.3)
        )
        gid = client.enqueue(recipe())[0]["generation_id"]
        wait_until(lambda: client.get_generation(gid)["status"] == "succeeded")
        yield Api(server, "tok-calls"), client, gid, client.get_generation(gid)["result_url"]
        client.close()


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("call", CALLS)
def test_every_safe_call_is_retried_through_each_fault(finished, call, fault) -> None:
    api, client, gid, url = finished
    method, path, call_it = CALLS[call]
    api.faults(seed=3, status_queue=[{"path": path, "method": method, **FAULTS[fault]}])
    before = client.requests_sent
    assert call_it(client, gid, url)  # it went through on the second attempt
    assert client.requests_sent - before == 2
    assert api.injected()[FAULTS[fault].get("action", "status")] == 1


def test_retry_after_is_honoured_and_capped(faulty) -> None:
    server, api = faulty
    client = OxenClient(server.url, "tok", retry=RetryPolicy(attempts=3, backoff=0.01, max_retry_after=0.4))
    api.faults(status_queue=[{"status": 429, "path": QUEUE, "retry_after": 0.25}])
    started = time.monotonic()
    client.list_generations()
    assert time.monotonic() - started >= 0.25  # waited as told, not its own 10 ms
    api.faults(status_queue=[{"status": 503, "path": QUEUE, "retry_after": 30}])
    started = time.monotonic()
    client.list_generations()
    assert 0.4 <= time.monotonic() - started < 5  # 30 s asked, capped at max_retry_after


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=4.0)
    for attempt, full in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)  # jittered, never past the cap
    assert policy.delay(1, retry_after=3.0) == 3.0


def test_after_every_retry_the_error_says_what_happened(faulty) -> None:
    server, api = faulty
    client = OxenClient(server.url, "tok", retry=FAST)
    api.faults(status_queue=[{"status": 429, "path": QUEUE, "retry_after": 0, "times": 5}])
    with pytest.raises(errors.RateLimitError, match="HTTP 429") as info:
        client.list_generations()
    assert info.value.retry_after == 0 and "Wait a minute" in str(info.value)
    api.faults(status_queue=[{"status": 503, "path": QUEUE, "times": 5}])
    with pytest.raises(errors.ServerError, match="HTTP 503"):
        client.list_generations()
    api.faults(status_queue=[{"action": "reset", "path": QUEUE, "times": 5}])
    with pytest.raises(errors.NetworkError, match="connection"):
        client.list_generations()
    assert client.requests_sent == 15


def test_enqueue_is_repeated_only_when_the_server_cannot_have_taken_it(faulty, token) -> None:
    server, api = faulty
    client = OxenClient(server.url, token, retry=FAST)
    for n, forced in enumerate(({"status": 429, "retry_after": 0}, {"status": 503})):
        api.faults(status_queue=[{"path": QUEUE, "method": "POST", **forced}])
        client.enqueue(recipe(seed=100 + n))
        assert api.seeds()[100 + n] == 1  # retried, and one row
    for n, forced in enumerate(
        (
            {"status": 500},
            {"status": 502},
            {"action": "reset"},
            {"action": "drop_response"},
        )
    ):
        api.faults(status_queue=[{"path": QUEUE, "method": "POST", **forced}])
        with pytest.raises(AmbiguousSend):  # not repeated blindly: the caller must look first
            client.enqueue(recipe(seed=200 + n))
    taken = api.seeds()
    assert [taken[200 + n] for n in range(4)] == [0, 0, 0, 1]  # only drop_response acted on it


# --- the runner: enqueues that break off, never a duplicate -------------------------------------------


@pytest.mark.parametrize(
    "forced",
    [
        {"status": 429, "retry_after": 0},
        {"status": 503},
        {"status": 500},
        {"action": "reset"},  # not taken: the runner finds nothing and sends again
        {"action": "drop_response"},  # taken, answer lost: the runner finds the row
        {"action": "delay", "delay": 1.0},  # taken, answer too late: the same
    ],
    ids=["429", "503", "500", "reset", "drop_response", "timeout"],
)
def test_an_enqueue_that_breaks_off_makes_exactly_one_row(faulty, open_session, token, forced) -> None:
    server, api = faulty
    session = open_session(server, token, timeouts=Timeouts(read=0.3, sse_read=5))
    api.faults(status_queue=[{"path": QUEUE, "method": "POST", **forced}])
    gen = session.generate("one row only", seed=42, num_inference_steps=2, aspect_ratio="1:1")
    assert_saved_once(session, [gen])
    assert api.seeds() == Counter({42: 1})
    enqueued = [e for e in journal_ops(session.output.path) if e["op"] == "enqueued"]
    assert [(e["key"], e["id"]) for e in enqueued] == [(gen.key, gen.id)]


def test_two_identical_recipes_in_flight_together_get_one_row_each(faulty, open_session, token) -> None:
    """reproduce() at once: one send is reset (not taken) while its twin's was taken and is still
    unanswered. Looking in the queue, the first must not take the twin's fresh row for its own."""
    server, api = faulty
    session = open_session(server, token)
    api.faults(
        status_queue=[
            {"path": QUEUE, "method": "POST", "action": "reset"},
            {"path": QUEUE, "method": "POST", "action": "delay", "delay": 0.5},
        ]
    )
    first = session.submit([recipe(seed=5)])[0]
    again = first.reproduce()
    assert_saved_once(session, [first, again])
    assert first.id != again.id and api.seeds() == Counter({5: 2})


def test_a_lost_enqueue_is_not_mistaken_for_a_finished_twin(faulty, open_session, token) -> None:
    """The same recipe made a moment ago, then reproduce() whose send is lost before the server
    took it: the listing shows only the finished twin, which is not this generation's row."""
    server, api = faulty
    session = open_session(server, token)
    first = session.submit([recipe(seed=6)])[0].wait(10)
    api.faults(status_queue=[{"path": QUEUE, "method": "POST", "action": "reset"}])
    again = first.reproduce()
    assert_saved_once(session, [first, again])
    assert first.id != again.id and api.seeds() == Counter({6: 2})


def test_when_the_queue_cannot_be_read_the_enqueue_is_not_repeated(
    faulty, open_session, token, tmp_path
) -> None:
    """Taken (answer lost) and the listing down: sending again could pay twice, so it stops, says
    why, keeps the journal entry, and a later resume() collects the image."""
    server, api = faulty
    session = open_session(server, token)
    api.faults(
        status_queue=[
            {"path": QUEUE, "method": "POST", "action": "drop_response"},
            {"path": QUEUE, "method": "GET", "status": 503, "times": FAST.attempts},
        ]
    )
    gen = session.generate("listing down", seed=9, num_inference_steps=2, aspect_ratio="1:1")
    with pytest.raises(errors.GenerationFailed, match="could not be read"):
        gen.wait(10)
    assert "resume()" in str(gen.error) and api.seeds() == Counter({9: 1})
    session.close()  # that kernel is gone: only then is its work another's to resume
    later = open_session(server, token, out=session.output.path)
    (resumed,) = later.resume()
    assert resumed.key == gen.key
    assert_saved_once(later, [resumed])
    assert api.seeds() == Counter({9: 1})  # found, not sent again


# --- the event stream: cut, silent, refused ----------------------------------------------------------


def test_cut_streams_reconnect_and_no_completion_is_missed_or_handled_twice(
    faulty, open_session, token
) -> None:
    server, api = faulty
    api.faults(sse_cut_after=1)  # every stream ends after one event
    session = open_session(server, token)
    gens = session.generate("cut streams", n=12, seed=300, num_inference_steps=2, aspect_ratio="1:1")
    assert_saved_once(session, gens)
    # No replay: after each cut the client reads every pending row, so later completions may come
    # from those reads rather than from a second stream's events.
    assert api.injected()["sse_cut"] >= 1
    assert session.runner.stats["sse_connects"] >= 2
    assert api.seeds() == Counter(range(300, 312))


def test_a_silent_stream_is_given_up_and_polling_takes_over(faulty, open_session, token) -> None:
    server, api = faulty
    api.faults(sse_silent=True)  # headers, then nothing: not even keep-alives
    session = open_session(server, token, timeouts=Timeouts(sse_read=0.5))
    started = time.monotonic()
    gens = session.generate("silent stream", n=4, seed=400, num_inference_steps=2, aspect_ratio="1:1")
    assert_saved_once(session, gens)
    assert time.monotonic() - started < 5  # not the 10 s safety poll of a trusted stream
    wait_until(lambda: api.injected()["sse_silent"] >= 2, what="a reconnect after the silence")
    assert session.runner.stats["events"] == 0  # every completion came from polling


def test_a_refused_stream_is_retried_with_backoff_while_polling_carries_on(
    faulty, open_session, token
) -> None:
    server, api = faulty
    api.faults(status_queue=[{"path": "/api/events", "status": 503, "times": 2}])
    session = open_session(server, token)
    gen = session.generate("stream refused", seed=500, num_inference_steps=2, aspect_ratio="1:1")
    assert_saved_once(session, [gen])
    wait_until(lambda: session.runner.stats["sse_connects"] >= 1, what="the stream to open")
    assert api.injected()["status"] == 2


def test_reconnects_back_off_instead_of_spinning(make_server, open_session, token) -> None:
    server = make_server(faults=Faults(sse_cut_after=0), step_delay=0.1)  # every stream ends at once
    api = Api(server, token)
    session = open_session(server, token)
    started = time.monotonic()
    gen = session.generate("backoff", seed=600, num_inference_steps=15, aspect_ratio="1:1")
    assert_saved_once(session, [gen])
    took = time.monotonic() - started
    connects = api.injected()["sse_cut"]
    assert took > 1.4 and 2 <= connects <= 4, (took, connects)  # 0.5 s, 1 s, 2 s... apart


# --- results: another host, cut and failing downloads ---------------------------------------------------


def test_result_on_another_host_is_downloaded_without_the_key(make_server, open_session) -> None:
    key = "sk-reliability-cdn-test-0123456789"
    with RecordingServer(host="127.0.0.2") as cdn:
        server = make_server(api_key=key, files_url=cdn.url)
        cdn.upstream = server.url
        session = open_session(server, key)
        gens = session.generate("from a CDN", n=3, seed=700, num_inference_steps=2, aspect_ratio="1:1")
        assert_saved_once(session, gens)
        assert all(g.result_url.startswith(cdn.url + "/api/files/") for g in gens)
        assert cdn.seen("authorization") == [None, None, None]  # one download each, no key


def test_cut_and_failing_downloads_are_retried_and_never_leave_a_partial_file(
    faulty, open_session, token
) -> None:
    server, api = faulty
    api.faults(
        seed=11,
        download_cut_rate=0.4,
        status_queue=[{"path": "/api/files/", "status": 500, "times": 2}],
    )
    session = open_session(server, token)
    gens = session.generate("cut downloads", n=8, seed=800, num_inference_steps=2, aspect_ratio="1:1")
    assert_saved_once(session, gens)
    injected = api.injected()
    assert injected["download_cut"] >= 1 and injected["status"] == 2


def test_a_download_that_keeps_failing_says_so_and_resume_collects_it_later(
    make_server, open_session
) -> None:
    with RecordingServer(host="127.0.0.2") as cdn:
        server = make_server(files_url=cdn.url)
        cdn.upstream = server.url
        cdn.broken = 1000  # every answer: an undecodable body
        session = open_session(server, "tok-cdn-down")
        gen = session.generate("cdn down", seed=900, num_inference_steps=2, aspect_ratio="1:1")
        with pytest.raises(errors.GenerationFailed, match="could not be downloaded"):
            gen.wait(10)
        assert "resume()" in str(gen.error) and folder(session.output.path)[0] == []
        cdn.broken = 0
        session.close()  # resume() takes work whose kernel is gone
        later = open_session(server, "tok-cdn-down", out=session.output.path)
        (resumed,) = later.resume()
        assert_saved_once(later, [resumed])
        assert resumed.id == gen.id


def test_resume_in_the_same_kernel_collects_its_own_failed_download_once(make_server, open_session) -> None:
    with RecordingServer(host="127.0.0.2") as cdn:
        server = make_server(files_url=cdn.url)
        cdn.upstream = server.url
        cdn.broken = 1000
        session = open_session(server, "tok-cdn-same")
        gen = session.generate("cdn down here", seed=901, num_inference_steps=2, aspect_ratio="1:1")
        with pytest.raises(errors.GenerationFailed, match="resume"):
            gen.wait(10)
        cdn.broken = 0
        (resumed,) = session.resume()  # what the error told the user to run, in the same kernel
        assert resumed.id == gen.id
        assert session.resume() == []  # in flight now: not taken a second time
        resumed.wait(10)
        assert_saved_once(session, [resumed])
        assert session.resume() == []


# --- generations that fail or are cancelled on the server ------------------------------------------------


def test_a_generation_failing_on_the_server_says_so_and_why(local_server, open_session) -> None:
    session = open_session(local_server, "tok-fails")
    missing = local_server.url + "/api/files/00000000-0000-4000-8000-000000000000.png"
    gen = session.generate("edit a missing image", input_image=missing, num_inference_steps=2)
    with pytest.raises(errors.GenerationFailed, match="HTTP 404") as info:
        gen.wait(10)
    assert gen.status == "failed" and "fetching it gave HTTP 404" in gen.reason
    assert gen.id in str(info.value)
    assert status_line(gen) == f"failed: {gen.reason}"
    assert html.escape(f"failed: {gen.reason}") in Card(gen).status.value  # the card says so too
    assert "failed: " in generation_mimebundle(gen, widget=False)["text/plain"]
    assert f"reason={gen.reason!r}" in repr(gen)
    (last,) = [e for e in journal_ops(session.output.path) if e["key"] == gen.key][-1:]
    assert last["op"] == "failed" and "HTTP 404" in last["reason"]
    assert session.journal_pending() == [] and folder(session.output.path)[0] == []


def test_a_generation_cancelled_on_the_server_says_so_and_why(make_server, open_session, monkeypatch) -> None:
    """A cancel made elsewhere sends no event (as on the hosted stream): the safety polls notice
    it. Their real bound is 30 s (test_safety_polls_notice_a_cancel_made_elsewhere_within_30_s);
    here they are made fast so the test need not wait that long."""
    from flux_nb import runner

    monkeypatch.setattr(runner, "SAFETY_POLL_FIRST", 0.2)
    monkeypatch.setattr(runner, "SAFETY_POLL_MAX", 0.4)
    server = make_server(step_delay=0.05)
    session = open_session(server, "tok-cancelled")
    gen = session.generate("cancelled elsewhere", num_inference_steps=50)
    other = Api(server, "tok-cancelled")  # another client of the same account (the web UI, say)
    wait_until(lambda: gen.id and other.http.get(f"{QUEUE}/{gen.id}").json()["status"] == "processing")
    answer = other.http.delete(f"{QUEUE}/{gen.id}").json()
    assert answer == {"status": "success", "generation_id": gen.id}
    with pytest.raises(errors.GenerationCancelled):
        gen.wait(10)
    assert gen.status == "cancelled" and gen.reason == "cancelled on the server (elsewhere)"
    assert status_line(gen) == "cancelled: cancelled on the server (elsewhere)"
    assert "cancelled: cancelled on the server (elsewhere)" in Card(gen).status.value
    assert folder(session.output.path)[0] == []


def test_safety_polls_notice_a_cancel_made_elsewhere_within_30_s() -> None:
    """No event follows a cancel: while a generation is active, its row is read at least every
    30 s (10, 20, then 30 s apart) with the stream up, and faster with it down."""
    from flux_nb import runner as runner_module

    runner = runner_module.Runner.__new__(runner_module.Runner)
    runner._sse_up = True
    track = runner_module._Tracked(gen=None)  # type: ignore[arg-type]  # only its poll count is read
    gaps = []
    for polls in range(8):
        track.polls = polls
        gaps.append(runner._poll_due(track) - time.monotonic())
    assert max(gaps) <= 30.0 + 0.01 and gaps[0] <= 10.01
    runner._sse_up = False
    assert runner._poll_due(track) - time.monotonic() <= runner_module.FALLBACK_POLL_MAX + 0.01


# --- the output folder: not writable, disk full ----------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own (needs root and mount): real EROFS and ENOSPC, not chmod tricks."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) for a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def remount(option: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{option}", str(mount)], check=True)

    yield mount, remount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_output_refuses_to_send_with_one_line(tmpfs, local_server, open_session) -> None:
    """Work a restarted kernel could not find must not be paid for: with the journal unwritable,
    nothing is sent."""
    mount, remount = tmpfs
    session = open_session(local_server, "tok-readonly-refuse", out=mount / "out")
    (mount / "out").mkdir()
    remount("ro")
    with pytest.raises(errors.StorageError, match="Nothing was sent") as info:
        session.generate("read-only disk", seed=999, num_inference_steps=2)
    assert "Read-only" in str(info.value) and "FLUX_NB_OUTPUT_DIR" in str(info.value)
    assert "\n" not in str(info.value) and session.history == []
    assert Api(local_server, "tok-readonly-refuse").seeds() == Counter()


def test_read_only_output_keeps_the_image_in_memory_then_save_works(
    tmpfs, make_server, open_session
) -> None:
    mount, remount = tmpfs
    server = make_server(step_delay=0.1)
    session = open_session(server, "tok-readonly", out=mount / "out")
    (mount / "out").mkdir()
    gen = session.generate("read-only disk", seed=1000, num_inference_steps=5)
    remount("ro")  # after the journal took the submit: the folder fails while it runs
    gen.wait(10)
    assert gen.status == "succeeded" and gen.path is None
    assert isinstance(gen.save_error, errors.StorageError)
    assert "Read-only" in str(gen.save_error) and "FLUX_NB_OUTPUT_DIR" in str(gen.save_error)
    assert html.escape(gen.save_error.message) in Card(gen).status.value
    assert gen.image.size[0] > 0 and gen.data
    remount("rw")
    # the journal never says it was saved, so a restarted kernel would still collect it
    assert "saved" not in [e["op"] for e in journal_ops(mount / "out") if e.get("key") == gen.key]
    path = gen.save()
    assert path.exists() and gen.path == path and gen.save_error is None
    assert folder(mount / "out") == ([path], [JOURNAL_NAME])
    assert Image.open(path).size == gen.image.size


def test_a_full_disk_keeps_the_image_in_memory_and_leaves_no_partial_file(
    tmpfs, local_server, open_session
) -> None:
    mount, _ = tmpfs
    out = mount / "out"
    session = open_session(local_server, "tok-full", out=out)
    first = session.generate("before the disk fills", seed=1100, num_inference_steps=2).wait(10)
    assert first.path is not None
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the tmpfs up to its last bytes
        try:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError:
            pass
    gen = session.generate("disk full", seed=1101, num_inference_steps=2).wait(10)
    assert gen.path is None and isinstance(gen.save_error, errors.StorageError)
    assert "No space left" in str(gen.save_error) and gen.image.size[0] > 0
    assert folder(out) == ([first.path], [JOURNAL_NAME])  # no .partial-* left
    filler.unlink()
    path = gen.save()
    assert sorted(folder(out)[0]) == sorted([first.path, path])
    assert flux_recipe(path) == gen.recipe
    entries = journal_ops(out)  # records written after the full disk are whole again
    assert any(e["op"] == "saved" and e["key"] == gen.key for e in entries)


def test_the_output_folder_holds_one_image_file_per_generation(local_server, open_session) -> None:
    """A gallery: previews, cards, re-saves and copied recipes add no files beside the images."""
    session = open_session(local_server, "tok-gallery")
    gens = [
        session.generate("gallery", seed=1700 + i, output_format=fmt, num_inference_steps=2)
        for i, fmt in enumerate(("png", "jpg", "webp"))
    ]
    for gen in gens:
        gen.wait(10)
    gens.append(session.generate("an edit", seed=1710, input_image=gens[0], num_inference_steps=2))
    gens.append(gens[1].reproduce())
    for gen in gens:
        gen.wait(10)
        Card(gen)
        gen.thumbnail()
        gen.thumbnail(64)
        generation_mimebundle(gen, widget=True)
        magic_line(gen.recipe)  # may keep a copy of an input image, in a hidden folder
        assert gen.save() == gen.path  # saving again writes no second file
    images, others = folder(session.output.path)
    assert sorted(images) == sorted(g.path for g in gens) and len(set(images)) == 5
    assert {p.suffix for p in images} == {".png", ".jpg", ".webp"}
    assert set(others) <= {JOURNAL_NAME, ".inputs", LIVE_DIR} and all(name.startswith(".") for name in others)


def test_a_torn_journal_line_does_not_swallow_the_next_record(tmp_path) -> None:
    journal = Journal(tmp_path / JOURNAL_NAME)
    journal.record({"op": "submit", "key": "a", "recipe": {}})
    with open(journal.path, "ab") as fh:
        fh.write(b'{"t": 1, "op": "enqu')  # a write cut short by a full disk or a crash
    journal.record({"op": "submit", "key": "b", "recipe": {}})
    assert [e["key"] for e in journal.entries()] == ["a", "b"]


# --- restart safety ----------------------------------------------------------------------------------------


def test_the_journal_holds_the_recipe_before_submit_returns_and_the_id_before_it_shows(
    make_server, open_session
) -> None:
    server = make_server(step_delay=0.01)
    session = open_session(server, "tok-journal-order")
    problems: list[str] = []

    def check(gen) -> None:  # runs on the runner's threads, at every state change
        if gen.status in ("queued", "processing", "succeeded") and gen.id:
            ops = {(e["op"], e.get("id")) for e in journal_ops(session.output.path) if e["key"] == gen.key}
            if ("enqueued", gen.id) not in ops:
                problems.append(f"{gen.key} shows id {gen.id} before the journal has it")

    gens = session.generate("journal first", n=6, seed=1200, num_inference_steps=3, aspect_ratio="1:1")
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
    from flux_nb.config import RetryPolicy
    from flux_nb.sessions import JOURNAL_NAME, Session

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
    recipes = session.recipes("restart safety", n=n, seed=seed, num_inference_steps=6, aspect_ratio="1:1")
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
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
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
    # progress events (local-only) announce "processing" at once: the kill point "processing" needs it
    with LocalServer(step_delay=0.01, extras=LocalExtras(progress_events=True)) as server:
        runs = {}
        for kill_at in KILL_POINTS:
            folder_ = tmp_path_factory.mktemp("kill")
            token = f"tok-kill-{kill_at}-{time.monotonic_ns()}"
            env = {"FLUX_NB_BASE_URL": server.url, "OXEN_API_KEY": token,
                   "FLUX_NB_OUTPUT_DIR": str(folder_ / "out"), "N": "6", "SEED": "1400"}
            runs[kill_at] = (folder_ / "out", token, start_child(folder_, kill_at, env))
        results = {}
        for kill_at, (out, token, child) in runs.items():
            try:
                results[kill_at] = (out, token, kill_when_there(child))
            except AssertionError as exc:  # reported by that point's test, not by the others
                results[kill_at] = (out, token, [f"failed: {exc}"])
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
        {"FLUX_NB_OUTPUT_DIR": str(out), "FLUX_NB_STEP_DELAY": "0.01", "N": "4", "SEED": "1500",
         "OXEN_API_KEY": "", "FLUX_NB_BASE_URL": ""},
    )
    recipes = journalled_recipes(out)
    before = {p.name for p in folder(out)[0]}
    session = Session("local", output_dir=out, settings=Settings(step_delay=0.0), announce=None)
    reference = Session("local", output_dir=tmp_path / "ref", settings=Settings(step_delay=0.0), announce=None)
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
    from flux_nb.sessions import set_session

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


def test_an_image_whose_metadata_refuses_the_recipe_is_saved_with_a_sidecar(tmp_path):
    """Never lose an image over metadata: the bytes are kept as made, the recipe beside them."""
    import io

    from PIL import Image

    import flux_nb
    from flux_nb.recipe import Recipe
    from flux_nb.storage import OutputFolder

    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (10, 200, 30)).save(buf, format="PNG")
    truncated_png = buf.getvalue()[:-12]  # no IEND chunk: embedding refuses it
    recipe = Recipe.build("a green field", seed=3)
    path = OutputFolder(tmp_path).save(truncated_png, recipe, "abc123", {"backend": "local"})
    assert path.read_bytes() == truncated_png
    assert flux_nb.read_recipe(path) == recipe
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == [path.name]
