"""jobs/_runner.py against the real local server with injected faults (server/faults.py), over
loopback HTTP: enqueues that break off (never a duplicate), cut and silent event streams,
downloads that fail, generations failed or cancelled on the server. No patched functions."""

from __future__ import annotations

import html
import math
import time
from collections import Counter

import pytest
from fault_helpers import (
    FAST,
    QUEUE,
    Api,
    assert_saved_once,
    folder,
    journal_ops,
    recipe,
    wait_until,
)
from recording_server import RecordingServer

from flux_nb.core import _errors as errors
from flux_nb.core._config import Timeouts
from flux_nb.jobs import _runner as runner
from flux_nb.notebook._cards import Card, generation_mimebundle, status_line
from flux_nb.server import Faults

# --- the runner: enqueues that break off, never a duplicate ---------------------------------------


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
def test_an_enqueue_that_breaks_off_makes_exactly_one_row(
    faulty, open_session, token, forced
) -> None:
    server, api = faulty
    session = open_session(server, token, timeouts=Timeouts(read=0.3, sse_read=5))
    api.faults(status_queue=[{"path": QUEUE, "method": "POST", **forced}])
    gen = session.generate("one row only", seed=42, num_inference_steps=2, aspect_ratio="1:1")
    assert_saved_once(session, [gen])
    assert api.seeds() == Counter({42: 1})
    enqueued = [e for e in journal_ops(session.output.path) if e["op"] == "enqueued"]
    assert [(e["key"], e["id"]) for e in enqueued] == [(gen.key, gen.id)]


def test_two_identical_recipes_in_flight_together_get_one_row_each(
    faulty, open_session, token
) -> None:
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


# --- the event stream: cut, silent, refused -------------------------------------------------------


def test_cut_streams_reconnect_and_no_completion_is_missed_or_handled_twice(
    faulty, open_session, token
) -> None:
    server, api = faulty
    api.faults(sse_cut_after=1)  # every stream ends after one event
    session = open_session(server, token)
    gens = session.generate(
        "cut streams", n=12, seed=300, num_inference_steps=2, aspect_ratio="1:1"
    )
    assert_saved_once(session, gens)
    # No replay: after each cut the client reads every pending row, so later completions may come
    # from those reads rather than from a second stream's events.
    assert api.injected()["sse_cut"] >= 1
    assert session.runner.stats["sse_connects"] >= 2
    assert api.seeds() == Counter(range(300, 312))


def test_a_silent_stream_is_given_up_and_polling_takes_over(
    faulty, open_session, token, monkeypatch
) -> None:
    """Safety polls an hour apart: only giving the silent stream up (sse_read 0.5 s) and polling
    can save these within assert_saved_once's deadline, however slow the machine."""
    monkeypatch.setattr(runner, "SAFETY_POLL_FIRST", 3600.0)
    monkeypatch.setattr(runner, "SAFETY_POLL_MAX", 3600.0)
    server, api = faulty
    api.faults(sse_silent=True)  # headers, then nothing: not even keep-alives
    session = open_session(server, token, timeouts=Timeouts(sse_read=0.5))
    gens = session.generate(
        "silent stream", n=4, seed=400, num_inference_steps=2, aspect_ratio="1:1"
    )
    assert_saved_once(session, gens)
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
    server = make_server(
        faults=Faults(sse_cut_after=0), step_delay=0.1
    )  # every stream ends at once
    api = Api(server, token)
    session = open_session(server, token)
    started = time.monotonic()
    gen = session.generate("backoff", seed=600, num_inference_steps=15, aspect_ratio="1:1")
    assert_saved_once(session, [gen])
    took = time.monotonic() - started
    connects = api.injected()["sse_cut"]
    # Reconnects 0.5 s, 1 s, 2 s... apart: in `took` seconds at most 1 + log2(1 + took / 0.5)
    # of them (one more allowed), however long a loaded machine makes the generation take; a
    # client that spun would make hundreds.
    assert took > 1.4 and 2 <= connects <= 2 + math.log2(1 + took / 0.5), (took, connects)


# --- results: another host, cut and failing downloads ---------------------------------------------


def test_result_on_another_host_is_downloaded_without_the_key(make_server, open_session) -> None:
    key = "sk-reliability-cdn-test-0123456789"
    with RecordingServer(host="127.0.0.2") as cdn:
        server = make_server(api_key=key, files_url=cdn.url)
        cdn.upstream = server.url
        session = open_session(server, key)
        gens = session.generate(
            "from a CDN", n=3, seed=700, num_inference_steps=2, aspect_ratio="1:1"
        )
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
    gens = session.generate(
        "cut downloads", n=8, seed=800, num_inference_steps=2, aspect_ratio="1:1"
    )
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


def test_resume_in_the_same_kernel_collects_its_own_failed_download_once(
    make_server, open_session
) -> None:
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


# --- generations that fail or are cancelled on the server -----------------------------------------


def test_a_generation_failing_on_the_server_says_so_and_why(local_server, open_session) -> None:
    session = open_session(local_server, "tok-fails")
    missing = local_server.url + "/api/files/00000000-0000-4000-8000-000000000000.png"
    gen = session.generate("edit a missing image", input_image=missing, num_inference_steps=2)
    with pytest.raises(errors.GenerationFailed, match="HTTP 404") as info:
        gen.wait(10)
    assert gen.status == "failed" and "fetching it gave HTTP 404" in gen.reason
    assert gen.id in str(info.value)
    assert status_line(gen) == f"failed: {gen.reason}"
    assert html.escape(f"failed: {gen.reason}") in Card(gen).status_html  # the card says so too
    assert "failed: " in generation_mimebundle(gen, widget=False)["text/plain"]
    assert f"reason={gen.reason!r}" in repr(gen)
    (last,) = [e for e in journal_ops(session.output.path) if e["key"] == gen.key][-1:]
    assert last["op"] == "failed" and "HTTP 404" in last["reason"]
    assert session.journal_pending() == [] and folder(session.output.path)[0] == []


def test_a_generation_cancelled_on_the_server_says_so_and_why(
    make_server, open_session, monkeypatch
) -> None:
    """A cancel made elsewhere sends no event (as on the hosted stream): the safety polls notice
    it. Their real bound is 30 s (test_safety_polls_notice_a_cancel_made_elsewhere_within_30_s);
    here they are made fast so the test need not wait that long."""
    from flux_nb.jobs import _runner as runner

    monkeypatch.setattr(runner, "SAFETY_POLL_FIRST", 0.2)
    monkeypatch.setattr(runner, "SAFETY_POLL_MAX", 0.4)
    server = make_server(step_delay=0.05)
    session = open_session(server, "tok-cancelled")
    gen = session.generate("cancelled elsewhere", num_inference_steps=50)
    other = Api(server, "tok-cancelled")  # another client of the same account (the web UI, say)
    wait_until(
        lambda: gen.id and other.http.get(f"{QUEUE}/{gen.id}").json()["status"] == "processing"
    )
    answer = other.http.delete(f"{QUEUE}/{gen.id}").json()
    assert answer == {"status": "success", "generation_id": gen.id}
    with pytest.raises(errors.GenerationCancelled):
        gen.wait(10)
    assert gen.status == "cancelled" and gen.reason == "cancelled on the server (elsewhere)"
    assert status_line(gen) == "cancelled: cancelled on the server (elsewhere)"
    assert "cancelled: cancelled on the server (elsewhere)" in Card(gen).status_html
    assert folder(session.output.path)[0] == []


def test_safety_polls_notice_a_cancel_made_elsewhere_within_30_s() -> None:
    """No event follows a cancel: while a generation is active, its row is read at least every
    30 s (10, 20, then 30 s apart) with the stream up, and faster with it down."""
    from flux_nb.jobs import _runner as runner_module

    runner = runner_module.Runner.__new__(runner_module.Runner)
    runner._sse_up = True
    runner.sse_read_timeout = 20.0
    runner._heard_at = time.monotonic() + 60  # a stream that delivers: trusted all through
    # only its poll count is read
    track = runner_module._Tracked(gen=None)  # type: ignore[arg-type]
    gaps = []
    for polls in range(8):
        track.polls = polls
        gaps.append(runner._poll_due(track) - time.monotonic())
    assert max(gaps) <= 30.0 + 0.01 and gaps[0] <= 10.01
    runner._heard_at = None  # open, but nothing came yet: polled at the short silent schedule
    silent = []
    for polls in range(8):
        track.polls = polls
        silent.append(runner._poll_due(track) - time.monotonic())
    assert silent[0] <= runner_module.SILENT_POLL_FIRST + 0.01
    assert silent[-1] > 2 * silent[0] and max(silent) <= runner_module.SILENT_POLL_MAX + 0.01
    runner._sse_up = False
    assert runner._poll_due(track) - time.monotonic() <= runner_module.FALLBACK_POLL_MAX + 0.01


def test_the_embedded_server_gets_two_io_threads_a_remote_api_eight(
    session, local_server, open_session
):
    # The embedded server answers from this process: more threads only contend with the kernel.
    assert session.runner._pool._max_workers == 2
    assert open_session(local_server, "tok-io-threads").runner._pool._max_workers == 8


def test_the_runners_counters_change_only_while_it_holds_their_lock(session) -> None:
    """stats changes from the pool's threads, the listener and the poller: every change is made
    holding the runner's lock. (A lost update needs two threads between one's read and its
    write, which no test brings about at will: this checks the lock is held instead.)"""
    runner = session.runner
    held: list[bool] = []

    class Watched(dict):
        def __setitem__(self, key, value) -> None:
            held.append(runner._stats_lock.locked())
            super().__setitem__(key, value)

    runner.stats = Watched(runner.stats)
    for gen in session.generate("a lighthouse at dusk", n=3, num_inference_steps=2):
        gen.wait(60)
    assert runner.stats["enqueues"] == 3 and runner.stats["downloads"] == 3
    assert held and all(held), held
