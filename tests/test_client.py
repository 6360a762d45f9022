"""The client against the real local server over loopback HTTP: every call and every error class."""

import base64
import io
import threading
import time

import pytest
from PIL import Image
from recording_server import RecordingServer

from flux_nb import errors
from flux_nb.client import OxenClient, result_url
from flux_nb.config import RetryPolicy
from flux_nb.recipe import Recipe
from flux_nb.server.embedded import LocalServer

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def server():
    with LocalServer(step_delay=0.0) as srv:
        yield srv


@pytest.fixture(scope="module")
def slow_server():
    with LocalServer(step_delay=0.05) as srv:
        yield srv


@pytest.fixture(scope="module")
def keyed_server():
    with LocalServer(api_key="sk-test-right-key-123456") as srv:
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
    with pytest.raises(errors.NotFoundError, match="404"):
        client.model_info("no-such-model")


def test_enqueue_poll_download(client):
    rows = client.enqueue(recipe())
    assert len(rows) == 1 and rows[0]["status"] in ("queued", "processing")
    row = wait_terminal(client, rows[0]["generation_id"])
    assert row["status"] == "succeeded" and row["seed"] == 11
    url = result_url(row)
    assert url.startswith(client.base_url)
    img = Image.open(io.BytesIO(client.download(url)))
    assert img.format == "PNG" and img.size[0] > img.size[1]


def test_num_generations_and_list(client):
    rows = client.enqueue(recipe(prompt="four at once"), num_generations=4)
    assert len({r["generation_id"] for r in rows}) == 4
    for r in rows:
        wait_terminal(client, r["generation_id"])
    listed = {r["generation_id"] for r in client.list_generations()}
    assert {r["generation_id"] for r in rows} <= listed
    with pytest.raises(errors.ValidationError, match="1 to 4"):
        client.enqueue(recipe(), num_generations=5)


def test_completion_event_over_sse_even_when_subscribing_late(client):
    """The API docs enqueue first and subscribe afterwards: the event must still arrive."""
    gid = client.enqueue(recipe(prompt="late subscriber"))[0]["generation_id"]
    wait_terminal(client, gid)
    for event in client.events(read_timeout=5):
        if event.generation_id == gid and event.name == "media_generation_completed":
            assert result_url(event.data)
            break


def test_live_events_carry_progress_then_completion(slow_server):
    client = OxenClient(slow_server.url, "tok", retry=FAST)
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
    names = [e.name for e in seen if e.generation_id == gid_box[0]]
    assert "media_generation_progress" in names and names[-1] == "media_generation_completed"


def test_cancel(slow_server):
    client = OxenClient(slow_server.url, "tok", retry=FAST)
    gid = client.enqueue(recipe(num_inference_steps=50))[0]["generation_id"]
    row = client.cancel(gid)
    final = wait_terminal(client, gid)
    assert final["status"] == "cancelled" and row is not None
    assert final.get("error_message")


def test_sync_edit_with_data_uri(client):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    answer = client.run_sync(recipe(prompt="make it blue", input_image=[uri], aspect_ratio="1:1"))
    img = Image.open(io.BytesIO(client.download(answer["result_url"])))
    assert img.size[0] == img.size[1]


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


def test_unknown_generation_is_not_found(client):
    with pytest.raises(errors.NotFoundError):
        client.get_generation("00000000-0000-4000-8000-000000000000")


def test_wrong_key_is_an_auth_error_that_never_shows_the_key(keyed_server):
    secret = "sk-wrong-secret-value-987654"
    client = OxenClient(keyed_server.url, secret, retry=FAST)
    with pytest.raises(errors.AuthError) as info:
        client.enqueue(recipe())
    assert "401" in str(info.value) and secret not in str(info.value)
    assert secret not in repr(client)
    good = OxenClient(keyed_server.url, "sk-test-right-key-123456", retry=FAST)
    assert good.enqueue(recipe())[0]["generation_id"]
    anonymous = OxenClient(keyed_server.url, None, retry=FAST)
    with pytest.raises(errors.AuthError, match="OXEN_API_KEY"):
        anonymous.list_generations()


def test_unreachable_server_is_a_network_error():
    client = OxenClient("http://127.0.0.1:9", "tok", retry=FAST)
    with pytest.raises(errors.NetworkError, match="cannot reach"):
        client.get_generation("x")


def test_key_goes_only_to_the_api_origin():
    """Real servers: the API's origin (127.0.0.1:A) gets the key; another host (127.0.0.2), another
    port of the same host, and a redirect from the API to another host do not."""
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
    assert api.seen("authorization") == ["Bearer sk-secret", "Bearer sk-secret", None]
    assert other_port.seen("authorization") == [None]
    assert other_host.seen("authorization") == [None, None]
    assert [path for _, path, _ in other_host.requests] == ["/x.png", "/moved.png"]
