"""An event stream that says nothing: the real local server behind a small ASGI proxy
(stream_proxy.py) that buffers /api/events, or lets its keep-alives stop. The runner must notice
results itself, within seconds, and hand the work back to the stream once it delivers again,
saving every image exactly once."""

from __future__ import annotations

import io
import time
from contextlib import redirect_stdout

import pytest
from fault_helpers import TIMEOUTS, assert_saved_once, wait_until
from stream_proxy import StreamProxy

from flux_nb.core._config import Timeouts
from flux_nb.jobs import _runner as runner_module
from flux_nb.jobs import _sessions as sessions
from flux_nb.notebook import _card_html as card_html
from flux_nb.notebook import _cards as cards
from flux_nb.notebook._magic import FluxMagics
from flux_nb.server import _app as server_app

NOTICED_WITHIN = 5.0  # the figure: a quick generation shows within 5 s of its submit


@pytest.fixture
def proxied(make_server, token):
    """(server, proxy) with the proxy in front; the proxy stops before the server."""
    proxies: list[StreamProxy] = []

    def make(mode: str, **server_options) -> tuple:
        server = make_server(**server_options)
        proxy = StreamProxy(server.url, mode).start()
        proxies.append(proxy)
        return server, proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def generate_three(session, seed: int):
    gens = session.generate("held back", n=3, seed=seed, num_inference_steps=2, aspect_ratio="1:1")
    for gen in gens:
        gen.wait(NOTICED_WITHIN)  # the spec: raises if not noticed by then
    return gens


@pytest.mark.parametrize("mode", ["buffer", "strip"])
def test_through_a_buffering_proxy_three_quick_generations_are_noticed_within_5_s(
    proxied, open_session, token, mode
) -> None:
    server, proxy = proxied(mode)  # strip: keep-alives cut, events pass
    session = open_session(proxy, token, timeouts=Timeouts(read=5, download=5))
    gens = generate_three(session, 100)
    assert_saved_once(session, gens)
    assert proxy.streams_opened >= 1
    if mode == "buffer":
        assert session.runner.stats["events"] == 0  # none got through: polls noticed them
    assert session.runner.stream_note() is None  # nothing running: nothing to say


def test_a_buffered_stream_that_starts_delivering_takes_over_without_doubling(
    proxied, open_session, token
) -> None:
    server, proxy = proxied("buffer")
    session = open_session(proxy, token, timeouts=Timeouts(read=5, download=5))
    runner = session.runner
    first = generate_three(session, 200)
    assert runner.stats["events"] == 0
    proxy.mode = "pass"  # the held events come out at the next chunk, then everything as it comes
    later = generate_three(session, 210)
    # the three held completions, then the three new ones: the stream carries them all again
    wait_until(lambda: runner.stats["events"] >= 6, what="the stream to deliver again")
    assert runner._trusted(time.monotonic())
    assert_saved_once(session, first + later)  # the late events of the first three did nothing


def test_when_the_keep_alives_stop_results_are_polled_and_the_stream_reconnected(
    proxied, open_session, token, monkeypatch
) -> None:
    monkeypatch.setattr(server_app, "PING_SECONDS", 0.2)  # keep-alives five times a second
    server, proxy = proxied("pass")
    # a silence of 2 s is ten missed keep-alives here, as 20 s is one and a bit on the hosted API
    session = open_session(proxy, token, timeouts=Timeouts(read=5, download=5, sse_read=2))
    runner = session.runner
    before = generate_three(session, 300)
    wait_until(lambda: runner.stats["events"] >= 3, what="the completions on the stream")
    assert runner._trusted(time.monotonic())
    connects = runner.stats["sse_connects"]
    proxy.mode = "silent"  # the connection stays open, nothing more comes through
    wait_until(lambda: not runner._trusted(time.monotonic()), what="the stream distrusted")
    events = runner.stats["events"]
    silent = generate_three(session, 310)
    assert runner.stats["events"] == events  # none came by the stream: polls noticed them
    wait_until(lambda: runner.stats["sse_connects"] > connects, what="a reconnect")
    proxy.mode = "pass"
    after = generate_three(session, 320)
    wait_until(lambda: runner.stats["events"] >= events + 3, what="the stream to deliver again")
    assert_saved_once(session, before + silent + after)


def test_status_and_the_card_tooltip_say_results_are_polled_because_the_stream_is_silent(
    proxied, open_session, token
) -> None:
    server, proxy = proxied("buffer", step_delay=1.0)
    session = open_session(proxy, token, timeouts=Timeouts(read=5, download=5, sse_read=1))
    gen = session.generate("a long one", seed=400, num_inference_steps=50, aspect_ratio="1:1")
    wait_until(lambda: session.runner.stream_note() is not None, what="the note")
    note = session.runner.stream_note()
    assert note is not None and "\n" not in note
    assert "polled" in note and "proxy" in note and "buffer" in note
    assert gen.delivery_note == note
    tooltip = card_html.status(gen, cards.status_line(gen))
    assert card_html.esc(note) in tooltip
    old = sessions.set_session(session)
    try:
        out = io.StringIO()
        with redirect_stdout(out):
            FluxMagics(shell=None)._cmd_status("")
    finally:
        sessions.set_session(old)
    said = [line for line in out.getvalue().splitlines() if "polled" in line]
    assert len(said) == 1 and said[0].startswith("flux: results are polled") and "proxy" in said[0]
    gen.cancel()
    wait_until(lambda: gen.done, timeout=30, what="the cancel")
    assert gen.delivery_note is None and session.runner.stream_note() is None


def test_a_stream_that_delivers_at_once_keeps_the_slow_safety_schedule(
    open_session, make_server, token
) -> None:
    """The normal path: the local server's stream starts with a keep-alive, so the runner trusts
    it at once and a running generation is read only by the slow safety polls."""
    server = make_server(step_delay=1.0)
    session = open_session(server, token, timeouts=TIMEOUTS)
    runner = session.runner
    gen = session.generate("normal", seed=500, num_inference_steps=50, aspect_ratio="1:1")
    # well before the server's first periodic keep-alive (15 s): only the one at open counts
    wait_until(lambda: runner._trusted(time.monotonic()), what="the stream trusted")
    wait_until(lambda: gen.id in runner._pending, what="the generation registered")
    track = runner._pending[gen.id]
    wait_until(lambda: track.next_poll > time.monotonic(), what="the check after connecting")
    assert track.next_poll - time.monotonic() > runner_module.SILENT_POLL_MAX
    assert runner.stream_note() is None and gen.delivery_note is None
    gen.cancel()
    wait_until(lambda: gen.done, timeout=30, what="the cancel")
