"""Our stand-in (`flux-nb serve`, LocalServer) answers with the documented shapes of fixtures/.

Keys, JSON types and enum values are compared to the hand-made fixtures (not to our client), over
real loopback HTTP, with the server's default options: the documented contract and nothing more.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
import uuid

import httpx
import pytest
from docs_shapes import (
    COMPLETED_EVENT,
    MODEL_ENDPOINTS,
    MODEL_ID,
    TERMINAL,
    fixture_frame,
    generation_problems,
    is_int,
    load,
    parse_sse,
    same_kind,
)
from PIL import Image

from flux_nb.server._embedded import LocalServer

KEY = "sk-contract-standin-key"
PROMPT = "a lighthouse on a cliff at dusk"


@pytest.fixture(scope="module")
def server():
    with LocalServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def slow_server():
    """Generations take about 1.4 s (28 steps x 0.05 s): long enough to see them active."""
    with LocalServer(api_key=KEY, step_delay=0.05) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    ) as c:
        yield c


@pytest.fixture(scope="module")
def slow_api(slow_server):
    with httpx.Client(
        base_url=slow_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    ) as c:
        yield c


def enqueue(api: httpx.Client, **body) -> tuple[str, dict]:
    body = {"model": MODEL_ID, "prompt": PROMPT, "num_inference_steps": 4, **body}
    answer = api.post("/api/ai/queue", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["generations"][0]["generation_id"], body


def wait_terminal(api: httpx.Client, gid: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = api.get(f"/api/ai/queue/{gid}").json()
        if row.get("status") in TERMINAL:
            return row
        time.sleep(0.02)
    raise AssertionError(f"{gid} did not finish in {timeout} s")


def keys_tree(obj):
    """The key structure of a JSON value (dicts by keys, lists by their first item)."""
    if isinstance(obj, dict):
        return {k: keys_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [keys_tree(obj[0])] if obj else []
    return None


class EventReader:
    """GET /api/events in a thread, keeping the raw text; frames parsed on demand."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        self.text = ""
        self.ready = threading.Event()
        self._response: httpx.Response | None = None
        self._client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {KEY}", **(headers or {})},
            timeout=httpx.Timeout(30, read=60),
        )
        self._lock = threading.Lock()
        self.status: int | None = None
        self.content_type = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.ready.wait(10), "the event stream did not open"

    def _run(self) -> None:
        try:
            with self._client.stream("GET", "/api/events") as response:
                self._response = response
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self.ready.set()
                for chunk in response.iter_text():
                    with self._lock:
                        self.text += chunk
        except Exception:
            pass
        finally:
            self.ready.set()

    def frames(self) -> list[dict]:
        with self._lock:
            text = self.text.replace("\r\n", "\n").replace("\r", "\n")
        return parse_sse(text[: text.rfind("\n\n") + 2] if "\n\n" in text else "")

    def frame_for(self, gid: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.frames():
                if frame["data"] and json.loads(frame["data"]).get("generation_id") == gid:
                    return frame
            time.sleep(0.02)
        raise AssertionError(f"no event for {gid} in {timeout} s; got {self.frames()}")

    def close(self) -> None:
        """Shut the socket down: that wakes the reader thread out of its blocking read at once."""
        if self._response is not None:
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(5)
        self._client.close()


@pytest.fixture
def events(server):
    readers = []

    def open_stream(srv=None, **headers) -> EventReader:
        reader = EventReader((srv or server).url, headers)
        readers.append(reader)
        return reader

    yield open_stream
    for reader in readers:
        reader.close()


# --- §3.1 enqueue --------------------------------------------------------------------------------


def test_enqueue_answers_the_documented_shape(api):
    answer = api.post(
        "/api/ai/queue", json={"model": MODEL_ID, "prompt": PROMPT, "num_generations": 2}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert keys_tree(body) == keys_tree(load("enqueue.json"))
    assert len(body["generations"]) == 2
    for item in body["generations"]:
        assert item["status"] == "queued"
        assert str(uuid.UUID(item["generation_id"])) == item["generation_id"]


def test_enqueue_errors_use_the_documented_envelopes_and_texts(api):
    bad_n = api.post(
        "/api/ai/queue", json={"model": MODEL_ID, "prompt": PROMPT, "num_generations": 5}
    )
    assert bad_n.status_code == 400
    body = bad_n.json()
    assert keys_tree(body) == keys_tree(load("error_invalid_params.json"))
    assert (
        body["error"]["type"] == body["status_message"] == "invalid_params"
        and body["status"] == "error"
    )
    assert body["error"]["detail"] == "num_generations must be an integer between 1 and 4"
    bad_model = api.post("/api/ai/queue", json={"model": "bad-model-name", "prompt": PROMPT})
    assert 400 <= bad_model.status_code < 500
    assert bad_model.json() == load("error_model_not_found.json")


def test_no_key_is_the_documented_401(server):
    answer = httpx.post(server.url + "/api/ai/queue", json={"model": MODEL_ID, "prompt": PROMPT})
    assert answer.status_code == 401
    expected = load("unauthenticated.json")
    body = answer.json()
    assert (
        body["status"] == expected["status"]
        and body["status_message"] == expected["status_message"]
    )
    assert body["error"]["type"] == expected["error"]["type"]
    assert isinstance(body["error"]["title"], str)
    assert set(body) == set(expected) and set(body["error"]) <= {"type", "title", "detail"}


# --- §3.3 generation object ----------------------------------------------------------------------


def test_a_succeeded_generation_object_has_the_documented_fields(api):
    gid, sent = enqueue(api, seed=42, aspect_ratio="1:1", output_format="png")
    row = wait_terminal(api, gid)
    assert row["status"] == "succeeded"
    assert generation_problems(row, sent) == []
    assert row["model_name"] == MODEL_ID and row["media_type"] == "image"
    assert (
        row["started_at"] is not None
        and row["enqueued_at"] <= row["started_at"] <= row["completed_at"]
    )
    fixture = load("generation_succeeded_image.json")
    for key in fixture:
        if key in row:
            assert same_kind(fixture[key], row[key]), key
    image = httpx.get(row["result_url"])  # no Authorization: a presigned-style URL
    assert image.status_code == 200
    Image.open(io.BytesIO(image.content)).verify()


def test_the_seed_is_echoed_only_if_it_was_sent(api):
    gid, sent = enqueue(api)
    row = wait_terminal(api, gid)
    assert "seed" not in row, f"a seed nobody sent is reported: {row.get('seed')}"
    assert generation_problems(row, sent) == []


def test_a_bad_parameter_fails_at_run_time_with_an_error_message(api):
    """§3.1: per-model validation happens when the job runs, not at enqueue."""
    gid, sent = enqueue(api, num_inference_steps=99)
    row = wait_terminal(api, gid)
    assert row["status"] == "failed"
    assert generation_problems(row, sent) == []


def test_active_generation_objects_conform_too(slow_api):
    gid, sent = enqueue(slow_api, num_inference_steps=28)
    row = slow_api.get(f"/api/ai/queue/{gid}").json()
    assert row["status"] in ("queued", "processing")
    assert generation_problems(row, sent) == []
    slow_api.delete(f"/api/ai/queue/{gid}")


def test_an_unknown_id_is_the_documented_404(api):
    unknown = str(uuid.uuid4())
    for method in ("GET", "DELETE"):
        answer = api.request(method, f"/api/ai/queue/{unknown}")
        assert answer.status_code == 404, method
        assert answer.json() == load("not_found.json"), method


# --- §3.4 list -----------------------------------------------------------------------------------


def test_the_list_is_active_only_unless_a_status_is_given(slow_api):
    done_id, done_sent = enqueue(slow_api, num_inference_steps=1, seed=5)
    wait_terminal(slow_api, done_id)
    live_id, live_sent = enqueue(slow_api, num_inference_steps=28, seed=6)
    try:
        default = slow_api.get("/api/ai/queue").json()
        assert set(default) == {"count", "generations"} and default["count"] == len(
            default["generations"]
        )
        ids = [g["generation_id"] for g in default["generations"]]
        assert live_id in ids and done_id not in ids
        assert all(g["status"] in ("queued", "processing") for g in default["generations"])
        item = next(g for g in default["generations"] if g["generation_id"] == live_id)
        assert generation_problems(item, live_sent) == []

        done = slow_api.get("/api/ai/queue", params={"status": "succeeded"}).json()
        assert done["count"] == len(done["generations"])
        assert done_id in [g["generation_id"] for g in done["generations"]]
        assert all(g["status"] == "succeeded" for g in done["generations"])

        for params, present in (
            ({"model": MODEL_ID}, True),
            ({"model": "another-model"}, False),
            ({"media_type": "image"}, True),
            ({"media_type": "video"}, False),
        ):
            listed = slow_api.get("/api/ai/queue", params=params).json()
            assert (live_id in [g["generation_id"] for g in listed["generations"]]) is present, (
                params
            )
    finally:
        slow_api.delete(f"/api/ai/queue/{live_id}")


# --- §3.6 cancel ---------------------------------------------------------------------------------


def test_cancel_answers_the_documented_shape_and_leaves_terminal_rows_alone(slow_api):
    gid, sent = enqueue(slow_api, num_inference_steps=28)
    answer = slow_api.delete(f"/api/ai/queue/{gid}")
    assert answer.status_code == 200
    assert answer.json() == {**load("cancel.json"), "generation_id": gid}
    row = slow_api.get(f"/api/ai/queue/{gid}").json()
    assert row["status"] == "cancelled" and generation_problems(row, sent) == []

    done_id, _ = enqueue(slow_api, num_inference_steps=1)
    before = wait_terminal(slow_api, done_id)
    again = slow_api.delete(f"/api/ai/queue/{done_id}")
    assert again.status_code < 500
    if again.is_success:
        assert set(again.json()) == set(load("cancel.json"))
    assert slow_api.get(f"/api/ai/queue/{done_id}").json() == before


def test_there_is_no_other_cancel_route(slow_api):
    gid, _ = enqueue(slow_api, num_inference_steps=28)
    try:
        answer = slow_api.post(f"/api/ai/queue/{gid}/cancel")
        assert answer.status_code in (404, 405)
        assert slow_api.get(f"/api/ai/queue/{gid}").json()["status"] in ("queued", "processing")
    finally:
        slow_api.delete(f"/api/ai/queue/{gid}")


# --- §4 events -----------------------------------------------------------------------------------


def test_completion_frames_have_the_documented_names_and_keys(api, events):
    stream = events()
    assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
    ok_id, _ = enqueue(api, seed=3)
    bad_id, _ = enqueue(api, num_inference_steps=99)
    for gid, fixture, status in (
        (ok_id, "sse_succeeded.txt", "succeeded"),
        (bad_id, "sse_failed.txt", "failed"),
    ):
        frame = stream.frame_for(gid)
        name, expected = fixture_frame(fixture)
        data = json.loads(frame["data"])
        assert frame["event"] == name == COMPLETED_EVENT
        assert set(data) == set(expected), fixture
        assert data["status"] == status and data["media_type"] == "image"
        assert "\n" not in frame["data"], "one data: line per event, as in the docs"
    data = json.loads(stream.frame_for(ok_id)["data"])
    assert data["model"] == MODEL_ID
    assert (
        httpx.get(data["url"]).status_code == 200
    )  # fetched with no key, as the docs' example does
    frames = stream.frames()
    assert all(f["id"] is None and "id" not in f["fields"] for f in frames), (
        "no id: lines in the docs"
    )
    assert all(f["event"] in (None, COMPLETED_EVENT) for f in frames), [f["event"] for f in frames]


def test_no_event_for_a_cancel_and_no_replay_of_missed_events(slow_server, slow_api, events):
    missed_id, _ = enqueue(slow_api, num_inference_steps=1)
    wait_terminal(slow_api, missed_id)  # it finished while nobody listened: lost (§4)
    stream = events(slow_server, **{"Last-Event-ID": "0"})
    cancelled_id, _ = enqueue(slow_api, num_inference_steps=28)
    slow_api.delete(f"/api/ai/queue/{cancelled_id}")
    later_id, _ = enqueue(slow_api, num_inference_steps=2)
    stream.frame_for(later_id)
    seen = [json.loads(f["data"]).get("generation_id") for f in stream.frames() if f["data"]]
    assert cancelled_id not in seen, "the docs send no event for a cancel"
    assert missed_id not in seen, "an event that fired before the stream opened was replayed"


# --- §6 model object -----------------------------------------------------------------------------


def test_the_model_object_is_bare_with_request_schema(api):
    answer = api.get(f"/api/ai/models/{MODEL_ID}")
    assert answer.status_code == 200
    model = answer.json()
    fixture = load("model.json")
    assert model.get("id") == MODEL_ID, "the model object comes bare, not in an envelope"
    for key in (
        "object",
        "request_schema",
        "json_request_schema",
        "capabilities",
        "pricing",
        "endpoint",
    ):
        assert key in model, key
    for key in set(fixture) & set(model):
        assert same_kind(fixture[key], model[key]), key
    assert model["object"] == "model"
    assert model["endpoint"] in MODEL_ENDPOINTS
    assert {"text", "image"} <= set(model["capabilities"]["input"])
    assert "image" in model["capabilities"]["output"]
    assert model["pricing"].get("method") == "per_image"
    assert model["json_request_schema"] == model["request_schema"]
    schema, documented = model["request_schema"], fixture["request_schema"]
    assert schema["type"] == "object" and schema["required"] == documented["required"]
    assert set(schema["properties"]) == set(documented["properties"])
    for name, doc in documented["properties"].items():
        for key in ("type", "enum", "default", "minimum", "maximum"):
            if key in doc:
                assert schema["properties"][name].get(key) == doc[key], (name, key)


def test_an_unknown_model_is_the_documented_message(api):
    answer = api.get("/api/ai/models/bad-model-name")
    assert answer.status_code == 404
    assert answer.json() == load("error_model_not_found.json")


# --- §5 sync -------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["generate", "edit"])
def test_sync_answers_have_the_documented_shapes(api, route):
    body = {
        "model": MODEL_ID,
        "prompt": PROMPT,
        "num_inference_steps": 2,
    }  # prompt-only: the Klein page
    url_answer = api.post(f"/api/ai/images/{route}", json=body)
    assert url_answer.status_code == 200, url_answer.text
    data = url_answer.json()
    assert keys_tree(data) == keys_tree(load("sync_url.json"))
    assert data["model"] == MODEL_ID and is_int(data["created"])
    assert httpx.get(data["images"][0]["url"]).status_code == 200

    b64_answer = api.post(f"/api/ai/images/{route}", json={**body, "response_format": "b64_json"})
    assert b64_answer.status_code == 200, b64_answer.text
    data = b64_answer.json()
    assert keys_tree(data) == keys_tree(load("sync_b64_json.json"))
    Image.open(io.BytesIO(base64.b64decode(data["images"][0]["b64_json"]))).verify()


def test_sync_validates_at_once_with_the_documented_texts(api):
    empty = api.post("/api/ai/images/generate", json={"model": MODEL_ID, "prompt": ""})
    assert empty.status_code == 400
    assert "Prompt cannot be empty" in json.dumps(empty.json())
    unknown = api.post(
        "/api/ai/images/generate", json={"model": "bad-model-name", "prompt": PROMPT}
    )
    assert 400 <= unknown.status_code < 500
    assert unknown.json() == load("error_model_not_found.json")
