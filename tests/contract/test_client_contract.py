"""flux-nb's client against the fake hosted API (fake_oxen.py): the documented contract only.

Each test names the section of ../shared/oxen-api.md it pins. Everything goes through the public
API (Session, Generation, OxenClient); the fake records what went over the wire.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from docs_shapes import MODEL_ID, load
from fake_oxen import API, API_HOST, CDN_HOST, KEY, envelope
from PIL import Image

from flux_nb.api._client import OxenClient
from flux_nb.core import _errors as errors
from flux_nb.core._config import RetryPolicy
from flux_nb.core._recipe import Recipe
from flux_nb.jobs import _runner as runner

HERE = Path(__file__).parent
QUICK = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


def wait_until(predicate, timeout: float, what: str) -> float:
    """Poll predicate until true; the seconds it took. Fails the test after timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def polls_an_hour_apart(monkeypatch):
    """Safety polls an hour away: within a test's generous deadline only an event can end a
    generation, whatever the machine's speed."""
    monkeypatch.setattr(runner, "SAFETY_POLL_FIRST", 3600.0)
    monkeypatch.setattr(runner, "SAFETY_POLL_MAX", 3600.0)


def started(session, prompt: str = "a lighthouse on a cliff at dusk", **params):
    """A generation the fake has taken: (handle, generation id)."""
    params.setdefault("seed", 42)
    gen = session.generate(prompt, **params)
    wait_until(lambda: gen.id is not None or gen.done, 30, "the enqueue answer")
    assert gen.id is not None, f"the enqueue failed: {gen.status} {gen.reason}"
    return gen, gen.id


def one_clean_line(text: str) -> None:
    """An error a notebook can show: one line, no JSON or envelope noise, never the key."""
    assert "\n" not in text, text
    for noise in ("{", "}", '"type"', "status_message", "Traceback"):
        assert noise not in text, f"{noise!r} in {text!r}"
    assert KEY not in text


def same_pixels(path: Path, data: bytes) -> bool:
    with Image.open(path) as saved, Image.open(io.BytesIO(data)) as served:
        return saved.convert("RGB").tobytes() == served.convert("RGB").tobytes()


@pytest.fixture
def client(fake):
    c = OxenClient(API, KEY, http=httpx.Client(transport=fake.transport), retry=QUICK)
    yield c
    c.close()


# --- §3.1, §4, §9: the whole round trip --------------------------------------------------------


def test_generate_wait_saves_the_result_downloaded_without_the_key(
    fake, make_session, polls_an_hour_apart
):
    session = make_session()
    gen, gid = started(session, aspect_ratio="1:1")
    fake.wait_streams()
    fake.complete(gid)
    wait_until(lambda: gen.done, 30, "the handle to finish")
    gen.wait(0)
    assert session.runner.stats["events"] >= 1  # the completion event finished it
    assert gen.status == "succeeded" and gen.path is not None and gen.path.is_file()
    assert same_pixels(gen.path, fake.result_bytes(gid))

    body = fake.seen("POST", "/api/ai/queue")[0].json()
    assert body["model"] == MODEL_ID and body["prompt"] == "a lighthouse on a cliff at dusk"
    assert body["seed"] == 42 and body["aspect_ratio"] == "1:1"
    stream = fake.seen("GET", "/api/events")[0]
    assert stream.headers.get("accept") == "text/event-stream"
    for request in fake.seen(host=API_HOST):
        assert request.headers.get("authorization") == f"Bearer {KEY}", request.url
    downloads = fake.seen(host=CDN_HOST)
    assert len(downloads) == 1, [str(r.url) for r in downloads]
    assert "authorization" not in downloads[0].headers, "the key went to the result host"
    assert KEY not in str(downloads[0].url)
    assert downloads[0].headers.get("accept") == "*/*"


def test_a_failed_completion_event_fails_the_handle_with_the_servers_words(
    fake, make_session, polls_an_hour_apart
):
    session = make_session()
    gen, gid = started(session)
    fake.wait_streams()
    fake.advance(gid, "processing")
    fake.advance(gid, "failed", error="Insufficient credits")  # §3.2 and §4's failure example
    wait_until(lambda: gen.done, 30, "the handle to fail")
    assert session.runner.stats["events"] >= 1  # the completion event ended it
    with pytest.raises(errors.GenerationFailed) as info:
        gen.wait(0)
    assert gen.status == "failed"
    assert "Insufficient credits" in info.value.message
    one_clean_line(str(info.value))
    hints = f"{info.value.hint} {getattr(gen.error, 'hint', '')}".lower()
    assert "credit" in hints, "a failure that mentions credits should get the credits hint"


def test_only_media_generation_completed_events_are_acted_on(fake, make_session):
    """§4: the stream 'may carry unrelated event types'; only media_generation_completed counts."""
    session = make_session()
    gen, gid = started(session)
    fake.wait_streams()
    stray = f"{fake.row(gid)['generation_id']}"
    fake.emit_raw(
        "event: deployment_status_changed\n"
        f"""data: {
            json.dumps(
                {
                    "generation_id": stray,
                    "status": "succeeded",
                    "url": "https://storage.example-cdn.test/results/nothing.png",
                }
            )
        }\n\n"""
    )
    fake.emit_raw(
        "event: media_generation_failed\n"
        f"""data: {
            json.dumps(
                {
                    "generation_id": stray,
                    "status": "failed",
                    "error": "not a documented event",
                }
            )
        }\n\n"""
    )
    wait_until(lambda: session.runner.stats["events"] >= 2, 30, "the client to read both frames")
    assert not gen.done and gen.status in ("queued", "processing"), gen
    fake.complete(gid)
    gen.wait(30)
    assert gen.status == "succeeded"
    downloads = [str(r.url) for r in fake.seen(host=CDN_HOST)]
    assert len(downloads) == 1 and "nothing.png" not in downloads[0], (
        "a non-completion event made the client download"
    )


# --- §3.6: cancel --------------------------------------------------------------------------------


def test_cancel_reaches_cancelled_from_its_delete_with_no_cancel_event(
    fake, make_session, polls_an_hour_apart
):
    """No event follows a cancel: the DELETE's answer, not a poll (an hour away here), ends it."""
    session = make_session()
    gen, gid = started(session)
    fake.wait_streams()
    gen.cancel()
    wait_until(
        lambda: gen.status == "cancelled",
        30,
        "the handle to show the cancel (no SSE event comes for it)",
    )
    with pytest.raises(errors.GenerationCancelled):
        gen.wait(0)
    assert fake.row(gid)["status"] == "cancelled"
    assert fake.seen("DELETE", f"/api/ai/queue/{gid}")
    assert not fake.seen("POST", f"/api/ai/queue/{gid}/cancel"), (
        "the docs have one cancel call: DELETE"
    )
    assert not [d for _, d in fake.frames_sent if d and d.get("generation_id") == gid]


def test_safety_polls_run_at_most_every_30_seconds_while_active():
    """§3.6/§4: no event for a cancel made elsewhere; only a poll can see it.
    The issue's bound."""
    assert runner.SAFETY_POLL_FIRST <= 30
    assert runner.SAFETY_POLL_MAX <= 30


def test_a_cancel_made_elsewhere_is_noticed_by_the_safety_poll(fake, make_session, monkeypatch):
    """The runner's safety poll, its interval scaled down (its bound is pinned just above)."""
    monkeypatch.setattr(runner, "SAFETY_POLL_FIRST", 0.2)
    monkeypatch.setattr(runner, "SAFETY_POLL_MAX", 0.4)
    session = make_session()
    gen, gid = started(session)
    fake.wait_streams()
    time.sleep(0.1)  # past the poll every (re)connect makes
    fake.cancel_elsewhere(gid)
    cancelled_at = time.monotonic()
    wait_until(lambda: gen.status == "cancelled", 30, "the cancel made elsewhere to be noticed")
    assert not fake.seen("DELETE"), "nobody here asked to cancel"
    assert [r for r in fake.seen("GET", f"/api/ai/queue/{gid}") if r.t >= cancelled_at]


# --- §3.4, §12: resume and an ambiguous enqueue never send twice --------------------------------

DEAD_KERNEL = """
import json, os, sys
import httpx
from fake_oxen import FakeOxen, KEY
from flux_nb.jobs._sessions import Session

fake = FakeOxen()
fake.hold_enqueue()
session = Session(backend="hosted", api_key=KEY, output_dir=sys.argv[1], announce=None,
                  http=httpx.Client(transport=fake.transport))
session.generate("a lighthouse on a cliff at dusk", seed=42)
if not fake.held.wait(20):
    sys.exit("the enqueue never reached the fake")
with open(sys.argv[2], "w") as fh:
    json.dump(fake.export_rows(), fh)
os._exit(0)  # the kernel dies with its enqueue in flight: the server took it, no answer came
"""


def test_resume_finds_a_generation_that_already_succeeded_and_does_not_send_it_again(
    fake, make_session, tmp_path
):
    """A kernel died mid-enqueue; the server took it and finished it. The default list shows
    active rows only (§3.4), so resume must ask for terminal ones too (by enqueued_at)."""
    out, rows_file = tmp_path / "out", tmp_path / "rows.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    for name in ("OXEN_API_KEY", "FLUX_NB_BASE_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", DEAD_KERNEL, str(out), str(rows_file)],
        env=env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(rows_file.read_text())
    assert len(rows) == 1
    fake.import_rows(rows)
    gid = rows[0]["generation_id"]
    fake.complete(gid)  # nobody is listening: that event is lost (§4)

    session = make_session(output_dir=out)
    gens = session.resume()
    assert len(gens) == 1
    gens[0].wait(30)
    assert gens[0].id == gid and gens[0].path is not None and gens[0].path.is_file()
    assert not fake.seen("POST", "/api/ai/queue"), "resume sent the generation again: billed twice"
    assert same_pixels(gens[0].path, fake.result_bytes(gid))


@pytest.mark.parametrize("then", [None, "succeeded"], ids=["still-queued", "already-succeeded"])
def test_an_ambiguous_enqueue_the_server_took_is_found_and_not_sent_twice(fake, make_session, then):
    fake.ambiguous_enqueue(then=then)
    session = make_session()
    gen, gid = started(session)
    assert fake.ids() == [gid], "the client made a second generation"
    assert len(fake.seen("POST", "/api/ai/queue")) == 1
    if then is None:
        fake.wait_streams()
        fake.complete(gid)
    gen.wait(30)
    assert gen.status == "succeeded" and gen.path.is_file()
    assert len(fake.seen("POST", "/api/ai/queue")) == 1


# --- §8: auth failures end the handle with one line ----------------------------------------------


def _fails_naming_the_key(gen, timeout: float = 30.0) -> None:
    wait_until(lambda: gen.done, timeout, "the handle to fail (it must not hang)")
    assert gen.status == "failed", gen
    with pytest.raises(errors.FluxError) as info:
        gen.wait(0)
    text = str(info.value)
    one_clean_line(text)
    assert "key" in text.lower(), text


def test_a_401_on_the_event_stream_fails_the_handle(fake, make_session):
    session = make_session()
    gen, _ = started(session)
    fake.wait_streams()
    fake.force(401, method="GET", path="/api/events", times=None)
    fake.drop_streams()  # the reconnect is refused
    _fails_naming_the_key(gen)


def test_a_key_revoked_mid_generation_fails_the_handle(fake, make_session):
    session = make_session()
    gen, _ = started(session)
    fake.wait_streams()
    fake.revoke_key()  # the stream ends; reconnects and polls answer 401
    _fails_naming_the_key(gen)


def test_a_403_on_polling_fails_the_handle(fake, make_session):
    session = make_session()
    gen, gid = started(session)
    fake.wait_streams()
    fake.force(403, method="GET", path=f"/api/ai/queue/{gid}", times=None)
    fake.drop_streams()  # the reconnect makes the client poll what is pending
    _fails_naming_the_key(gen)


# --- odd answers ----------------------------------------------------------------------------------


def test_an_enqueue_answer_with_no_generations_is_a_clear_error(fake, make_session):
    fake.empty_enqueue()
    session = make_session()
    gen = session.generate("a lighthouse on a cliff at dusk", seed=42)
    wait_until(lambda: gen.done, 30, "the handle to fail, not to stay 'submitting'")
    assert gen.status == "failed"
    one_clean_line(gen.reason)
    assert len(fake.seen("POST", "/api/ai/queue")) == 1


def test_a_404_on_a_known_id_says_unknown_or_expired(fake, make_session):
    """§3.2: rows persist, so a 404 on an id we were given is not 'done': it is unknown/expired."""
    session = make_session()
    gen, gid = started(session)
    fake.wait_streams()
    fake.forget(gid)
    fake.drop_streams()  # the reconnect makes the client poll what is pending
    wait_until(lambda: gen.done, 30, "the handle to fail")
    assert gen.status == "failed"
    assert "unknown or expired on the server" in gen.reason
    one_clean_line(gen.reason)


def test_the_docs_base_url_in_flux_nb_base_url_works(fake, make_session, monkeypatch):
    """§1: the documented base URL is https://hub.oxen.ai/api/ai;
    the events live at /api/events."""
    monkeypatch.setenv("FLUX_NB_BASE_URL", "https://hub.oxen.ai/api/ai")
    session = make_session()
    gen, gid = started(session)
    fake.wait_streams()
    fake.complete(gid)
    gen.wait(30)
    paths = {r.path for r in fake.seen(host=API_HOST)}
    assert "/api/ai/queue" in paths and "/api/events" in paths, paths
    assert not [p for p in paths if "/api/ai/api" in p], paths


def test_a_429_with_retry_after_on_enqueue_is_waited_out_not_failed(fake, make_session):
    """§8/§12.2: 429 documented, Retry-After not; when it comes,
    honour it with a patient budget."""
    fake.force(429, method="POST", path="/api/ai/queue", times=6, retry_after="1")
    session = make_session(retry=RetryPolicy())
    gen, gid = started_patiently(session)
    posts = fake.seen("POST", "/api/ai/queue")
    assert len(posts) == 7 and fake.ids() == [gid]
    gaps = [b.t - a.t for a, b in zip(posts, posts[1:], strict=False)]
    assert min(gaps) >= 0.9, f"Retry-After: 1 not honoured: {gaps}"
    fake.wait_streams()
    fake.complete(gid)
    gen.wait(30)


def started_patiently(session):
    gen = session.generate("a lighthouse on a cliff at dusk", seed=42)
    wait_until(lambda: gen.id is not None or gen.done, 60, "the enqueue after the 429s")
    assert gen.id is not None, f"failed after 429s: {gen.reason}"
    return gen, gen.id


def test_a_hosted_result_used_as_input_sends_the_saved_bytes_not_the_expiring_url(
    fake, make_session
):
    """§7/§9: input_image must be publicly downloadable; presigned result URLs expire."""
    session = make_session()
    first, gid = started(session)
    fake.wait_streams()
    fake.complete(gid)
    first.wait(30)
    second, _ = started(session, "the same lighthouse at night", input_image=first, seed=7)
    sent = fake.seen("POST", "/api/ai/queue")[-1].json()["input_image"]
    assert len(sent) == 1 and sent[0].startswith("data:image/"), sent[0][:80]
    assert CDN_HOST not in sent[0]


# --- OxenClient: error envelopes, schema, sync ----------------------------------------------------


def test_typed_error_envelope_reads_as_its_detail(fake, client):
    """§5.4 first format (and §3.1's text)."""
    detail = "num_generations must be an integer between 1 and 4"
    fake.force(400, method="POST", path="/api/ai/queue", body=envelope("invalid_params", detail))
    with pytest.raises(errors.BadRequestError) as info:
        client.enqueue(Recipe.build("a lighthouse", seed=1))
    assert detail in info.value.message
    one_clean_line(str(info.value))


def test_bare_error_envelope_reads_as_its_message(client):
    """§5.4 second format, §3.1 'Model not found: <name>'."""
    with pytest.raises(errors.ApiError) as info:
        client.enqueue({"model": "bad-model-name", "prompt": "a lighthouse"})
    assert "Model not found: bad-model-name" in info.value.message
    one_clean_line(str(info.value))


def test_title_only_envelope_reads_as_its_title(fake, client):
    """§5.4's typed envelope may come with a title and no detail (as §3.3's 404 body does)."""
    body = envelope("invalid_params")
    fake.force(400, method="POST", path="/api/ai/queue", body=body)
    with pytest.raises(errors.BadRequestError) as info:
        client.enqueue(Recipe.build("a lighthouse", seed=1))
    assert body["error"]["title"] in info.value.message
    one_clean_line(str(info.value))


def test_the_documented_404_body_reads_as_one_line(client):
    with pytest.raises(errors.NotFoundError) as info:
        client.get_generation("00000000-0000-4000-8000-000000000000")
    one_clean_line(str(info.value))


def test_the_request_schema_is_read_from_request_schema(client):
    """§6.1: the public field is request_schema
    (json_request_schema is an internal feed's name)."""
    assert client.request_schema() == load("model.json")["request_schema"]


def test_a_sync_b64_json_answer_is_decoded(fake, client):
    """§5.3: images[0].b64_json holds the image bytes."""
    fake.sync_response_format = "b64_json"

    def values(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from values(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from values(v)
        else:
            yield obj

    answer = client.run_sync(Recipe.build("a lighthouse", seed=1))
    assert fake.last_sync_image in list(values(answer)), "no decoded image bytes in the answer"
