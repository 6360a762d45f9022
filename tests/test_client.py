"""The client against the real local server over loopback HTTP: every call and every error class."""

import gc
import io
import threading
import time

import httpx
import pytest
from fault_helpers import FAST as FAULT_RETRY
from fault_helpers import QUEUE, Api, wait_until
from fault_helpers import recipe as fault_recipe
from helpers import SERVER_KEY, data_uri, png_bytes
from PIL import Image
from recording_server import RecordingServer

from flux_nb.api._client import AmbiguousSend, OxenClient, result_url
from flux_nb.core import _errors as errors
from flux_nb.core._config import RetryPolicy, Timeouts
from flux_nb.core._recipe import Recipe
from flux_nb.server import Faults, LocalServer
from flux_nb.server._app import LocalExtras

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def server():
    with LocalServer(step_delay=0.0) as srv:
        yield srv


@pytest.fixture
def client(server):
    c = OxenClient(server.url, "any-token", retry=FAST)
    yield c
    c.close()


def wait_terminal(client, gid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = client.get_generation(gid)
        if row["status"] in ("succeeded", "failed", "cancelled"):
            return row
        time.sleep(0.02)
    raise AssertionError(f"{gid} did not finish")


def recipe(**kw):
    kw.setdefault("num_inference_steps", 4)
    kw.setdefault("seed", 11)
    return Recipe.build(kw.pop("prompt", "a lighthouse on a cliff"), **kw)


def test_model_schema(client):
    info = client.model_info()
    assert info
    schema = client.request_schema()
    assert schema["properties"]["num_inference_steps"]["maximum"] == 50
    with pytest.raises(errors.NotFoundError) as info:
        client.model_info("no-such-model")  # the docs' {"error": {"message"}} envelope, one line
    assert info.value.message.endswith("failed with HTTP 404: Model not found: no-such-model")


def test_enqueue_poll_download(client):
    rows = client.enqueue(recipe())
    assert len(rows) == 1 and rows[0]["status"] in ("queued", "processing")
    row = wait_terminal(client, rows[0]["generation_id"])
    assert row["status"] == "succeeded" and row["seed"] == 11
    url = result_url(row)
    assert url.startswith(client.base_url)
    img = Image.open(io.BytesIO(client.download(url)))
    assert img.format == "PNG" and img.size[0] > img.size[1]


def test_requests_leave_nothing_for_the_cyclic_collector(client):
    """A response and its stream refer to each other: left as they are, each request gave the
    collector about 40 objects, and in a kernel with 256 images in flight the pile set off a
    full collection (110-160 ms) in the middle of someone's cell. Refcounting frees them now."""
    rows = client.enqueue(recipe())
    url = result_url(wait_terminal(client, rows[0]["generation_id"]))
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            client.get_generation(rows[0]["generation_id"])
            client.download(url)
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if type(o).__module__.startswith("http")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


def test_num_generations_and_the_list_of_active_then_finished_rows(slow_server):
    client = OxenClient(slow_server.url, "tok-list", retry=FAST)
    rows = client.enqueue(recipe(prompt="four at once", num_inference_steps=20), num_generations=4)
    ids = {r["generation_id"] for r in rows}
    assert len(ids) == 4
    active = client.list_generations()  # the default list: queued and processing only
    assert {r["generation_id"] for r in active} == ids
    assert {r["status"] for r in active} <= {"queued", "processing"}
    for r in rows:
        wait_terminal(client, r["generation_id"])
    assert client.list_generations() == []  # finished: gone from the default list
    done = client.list_generations(status="succeeded")
    assert {r["generation_id"] for r in done} == ids
    assert all(r["model_name"] == client.model for r in done)
    with pytest.raises(errors.ValidationError, match="1 to 4"):
        client.enqueue(recipe(), num_generations=5)
    client.close()


def test_a_late_subscriber_hears_nothing_of_a_generation_that_already_finished(server):
    """As on the hosted stream (no replay): a client that subscribes late must read the row."""
    client = OxenClient(server.url, "tok-late", retry=FAST)
    gid = client.enqueue(recipe(prompt="late subscriber"))[0]["generation_id"]
    assert wait_terminal(client, gid)["status"] == "succeeded"
    heard = []
    with pytest.raises(errors.NetworkError, match="ReadTimeout"):
        for event in client.events(read_timeout=0.5):  # only keep-alives could come, every 15 s
            heard.append(event)
    assert heard == []
    client.close()


def test_the_local_replay_flag_brings_a_late_subscriber_the_completion():
    with LocalServer(extras=LocalExtras(replay_events=True)) as replaying:
        client = OxenClient(replaying.url, "tok", retry=FAST)
        gid = client.enqueue(recipe(prompt="late subscriber"))[0]["generation_id"]
        row = wait_terminal(client, gid)
        for event in client.events(read_timeout=5):
            assert event.name == "media_generation_completed" and event.generation_id == gid
            assert result_url(event.data) == row["result_url"] and event.id
            break
        client.close()


def live_event_names(server, token):
    """The names of the events one generation brings to a stream opened before it is sent."""
    client = OxenClient(server.url, token, retry=FAST)
    seen, opened = [], threading.Event()

    def listen():
        for event in client.events(read_timeout=5, on_open=opened.set):
            seen.append(event)
            if event.name == "media_generation_completed" and event.generation_id == gid_box[0]:
                return

    gid_box = [None]
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert opened.wait(5)
    gid_box[0] = client.enqueue(recipe(num_inference_steps=5))[0]["generation_id"]
    t.join(10)
    client.close()
    return [e.name for e in seen if e.generation_id == gid_box[0]]


def test_live_events_are_one_completion_as_on_the_hosted_stream(slow_server):
    assert live_event_names(slow_server, "tok-live") == ["media_generation_completed"]


def test_live_events_carry_progress_first_with_the_local_progress_flag(progress_server):
    names = live_event_names(progress_server, "tok-progress")
    assert "media_generation_progress" in names and names[-1] == "media_generation_completed"
    assert names.count("media_generation_completed") == 1


def test_cancel_answers_success_and_the_row_says_cancelled(slow_server):
    client = OxenClient(slow_server.url, "tok-cancel", retry=FAST)
    gid = client.enqueue(recipe(num_inference_steps=50))[0]["generation_id"]
    assert client.cancel(gid) == {"status": "success", "generation_id": gid}
    final = client.get_generation(gid)  # at once: no event follows, the row is the answer
    assert final["status"] == "cancelled" and final["result_url"] is None
    assert client.cancel(gid) == {"status": "success", "generation_id": gid}  # terminal: no effect
    assert client.get_generation(gid) == final
    with pytest.raises(errors.NotFoundError, match="404"):
        client.cancel("00000000-0000-4000-8000-000000000000")
    client.close()


def test_sync_edit_with_data_uri(client):
    uri = data_uri(png_bytes((64, 48)))
    edit = recipe(prompt="make it blue", input_image=[uri], aspect_ratio="1:1")
    answer = client.run_sync(edit)
    assert answer["model"] == client.model and answer["images"] == [{"url": answer["result_url"]}]
    img = Image.open(io.BytesIO(client.download(answer["result_url"])))
    assert img.size[0] == img.size[1]
    inline = client.run_sync(edit, b64=True)  # response_format b64_json, decoded
    same = Image.open(io.BytesIO(inline["image_bytes"]))
    assert same.format == "PNG" and same.tobytes() == img.tobytes()


def test_bad_parameter_reaching_the_queue_fails_the_generation(client):
    """The queue validates late, as the hosted API does: the row fails and says why."""
    rows = client.enqueue({"prompt": "x", "num_inference_steps": 99})
    row = wait_terminal(client, rows[0]["generation_id"])
    assert row["status"] == "failed" and "num_inference_steps" in row["error_message"]


def test_sync_validates_at_once(client):
    body = recipe()
    object.__setattr__(body, "num_inference_steps", 99)
    with pytest.raises(errors.BadRequestError, match="num_inference_steps"):
        client.run_sync(body, endpoint="generate")


def test_unknown_generation_is_not_found_and_says_unknown_or_expired(client):
    with pytest.raises(errors.NotFoundError, match="unknown or expired on the server"):
        client.get_generation("00000000-0000-4000-8000-000000000000")


def test_wrong_key_is_an_auth_error_that_never_shows_the_key(keyed_server):
    secret = "sk-wrong-secret-value-987654"
    client = OxenClient(keyed_server.url, secret, retry=FAST)
    with pytest.raises(errors.AuthError) as info:
        client.enqueue(recipe())
    assert "401" in str(info.value) and secret not in str(info.value)
    assert secret not in repr(client)
    good = OxenClient(keyed_server.url, SERVER_KEY, retry=FAST)
    assert good.enqueue(recipe())[0]["generation_id"]
    anonymous = OxenClient(keyed_server.url, None, retry=FAST)
    with pytest.raises(errors.AuthError, match="OXEN_API_KEY"):
        anonymous.list_generations()


def test_unreachable_server_is_a_network_error():
    client = OxenClient("http://127.0.0.1:9", "tok", retry=FAST)
    with pytest.raises(errors.NetworkError, match="cannot reach"):
        client.get_generation("x")


def test_downloads_go_without_the_key_and_the_key_goes_only_to_the_api_origin():
    """Result URLs are presigned: fetched without the key (as Oxen's own example does) and with
    Accept */*, on the API's origin (127.0.0.1:A) too. Another host (127.0.0.2), another port of
    the same host and a redirect target never get it."""
    with (
        RecordingServer("127.0.0.1") as api,
        RecordingServer("127.0.0.1") as other_port,
        RecordingServer("127.0.0.2") as other_host,
    ):
        client = OxenClient(api.url, "sk-secret", retry=FAST)
        client.download(other_host.url + "/x.png")
        client.download(api.url + "/x.png")
        client.download(other_port.url + "/x.png")
        client.download(api.url + "/redirect?to=" + other_host.url + "/moved.png")
        client.download(api.url.replace("127.0.0.1", "localhost") + "/by-name.png")
        client.close()
    assert api.seen("authorization") == [None, None, None]
    assert other_port.seen("authorization") == [None]
    assert other_host.seen("authorization") == [None, None]
    assert [path for _, path, _ in other_host.requests] == ["/x.png", "/moved.png"]
    assert set(api.seen("accept") + other_host.seen("accept")) == {"*/*"}


def test_a_download_refused_by_the_api_origin_is_tried_once_more_with_the_key():
    """A 401/403 from the API's own origin earns one retry with the key; from another host, none."""
    with LocalServer(faults=Faults()) as upstream:
        with (
            RecordingServer("127.0.0.1", upstream=upstream.url) as api,
            RecordingServer("127.0.0.2", upstream=upstream.url) as cdn,
        ):
            maker = OxenClient(upstream.url, "sk-secret", retry=FAST)
            gid = maker.enqueue(recipe())[0]["generation_id"]
            path = "/api/files/" + wait_terminal(maker, gid)["result_url"].rsplit("/", 1)[1]
            maker.close()
            client = OxenClient(api.url, "sk-secret", retry=FAST)
            forced = {"status_queue": [{"status": 401, "path": "/api/files/"}]}
            assert httpx.post(upstream.url + "/_faults", json=forced).status_code == 200
            data = client.download(api.url + path)
            assert Image.open(io.BytesIO(data)).format == "PNG"
            downloads = [i for i, (_, p, _) in enumerate(api.requests) if p == path]
            assert [api.seen("authorization")[i] for i in downloads] == [None, "Bearer sk-secret"]
            forced = {"status_queue": [{"status": 403, "path": "/api/files/", "times": 5}]}
            assert httpx.post(upstream.url + "/_faults", json=forced).status_code == 200
            with pytest.raises(errors.AuthError, match="403"):
                client.download(cdn.url + path)
            client.close()
    assert cdn.seen("authorization") == [None]  # refused once, and the key never offered


# --- the client: every call retried through 429, 5xx, resets and timeouts -------------------------

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
            server.url, "tok-calls", retry=FAULT_RETRY, timeouts=Timeouts(read=0.3, download=0.3)
        )
        gid = client.enqueue(fault_recipe())[0]["generation_id"]
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
    client = OxenClient(
        server.url, "tok", retry=RetryPolicy(attempts=3, backoff=0.01, max_retry_after=0.4)
    )
    api.faults(status_queue=[{"status": 429, "path": QUEUE, "retry_after": 0.25}])
    started = time.monotonic()
    client.list_generations()
    assert time.monotonic() - started >= 0.25  # waited as told, not its own 10 ms
    api.faults(status_queue=[{"status": 503, "path": QUEUE, "retry_after": 30}])
    started = time.monotonic()
    client.list_generations()
    assert 0.4 <= time.monotonic() - started < 20  # 30 s asked, capped at max_retry_after


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=4.0)
    for attempt, full in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)  # jittered, never past the cap
    assert policy.delay(1, retry_after=3.0) == 3.0


def test_after_every_retry_the_error_says_what_happened(faulty) -> None:
    server, api = faulty
    client = OxenClient(server.url, "tok", retry=FAULT_RETRY)
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
    client = OxenClient(server.url, token, retry=FAULT_RETRY)
    for n, forced in enumerate(({"status": 429, "retry_after": 0}, {"status": 503})):
        api.faults(status_queue=[{"path": QUEUE, "method": "POST", **forced}])
        client.enqueue(fault_recipe(seed=100 + n))
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
            client.enqueue(fault_recipe(seed=200 + n))
    taken = api.seeds()
    assert [taken[200 + n] for n in range(4)] == [0, 0, 0, 1]  # only drop_response acted on it
