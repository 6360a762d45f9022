"""The local server over real loopback HTTP (httpx, httpx-sse, curl, a subprocess for the CLI)."""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from PIL import Image

from flux_nb.recipe import MODEL_ID, bundled_schema
from flux_nb.server import Faults, Limits, LocalServer, create_app
from flux_nb.server.engines import get_engine

TIMEOUT = httpx.Timeout(10.0)
# Every httpx.Client builds an SSL context (~50 ms) unless given one: share one across the tests.
TLS = ssl.create_default_context()
TERMINAL = {"succeeded", "failed", "cancelled"}
UUID = "0b0e6c1e-6f1a-4c1e-9c1e-0b0e6c1e6f1a"


# --- helpers ---------------------------------------------------------------------------------------


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def request(**params: object) -> dict[str, object]:
    return {"model": MODEL_ID, "prompt": "a red fox in snow", "num_inference_steps": 4, **params}


def enqueue(client: httpx.Client, **params: object) -> list[str]:
    response = client.post("/api/ai/queue", json=request(**params))
    assert response.status_code == 200, response.text
    generations = response.json()["generations"]
    assert all(g["status"] == "queued" for g in generations)
    return [g["generation_id"] for g in generations]


def wait_for(client: httpx.Client, generation_id: str, until: set[str] = TERMINAL) -> dict:
    """Poll the generation (what the API docs do) until its status is in `until`."""
    deadline = time.monotonic() + 10
    while True:
        row = client.get(f"/api/ai/queue/{generation_id}").json()
        if row["status"] in until:
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.002)


def next_event(events: Iterator[ServerSentEvent], name: str | None = None, gid: str | None = None):
    """The next event with that name (and generation id); the client's read timeout bounds the wait."""
    for event in events:
        data = json.loads(event.data)
        if (name is None or event.event == name) and (gid is None or data["generation_id"] == gid):
            return event, data
    raise AssertionError(f"the stream ended before {name} for {gid}")


def png_bytes(
    size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def download(url: str) -> httpx.Response:
    """GET a result URL without a token, as a browser or a CDN client would."""
    with httpx.Client(timeout=TIMEOUT, verify=TLS) as client:
        return client.get(url)


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (httpx and browsers fold '..' away before sending)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def token() -> str:
    return "tok-" + secrets.token_hex(8)


@pytest.fixture
def api(local_server: LocalServer, token: str) -> Iterator[httpx.Client]:
    """A client of the shared server with its own bearer token, so its rows and events are its own."""
    with httpx.Client(
        base_url=local_server.url, headers=auth(token), timeout=TIMEOUT, verify=TLS
    ) as client:
        yield client


# --- queue -----------------------------------------------------------------------------------------


def test_enqueue_poll_download(api: httpx.Client, local_server: LocalServer) -> None:
    (gid,) = enqueue(api, seed=7, aspect_ratio="1:1")
    row = wait_for(api, gid)
    assert row["status"] == "succeeded", row
    assert row["generation_id"] == gid and row["type"] == "image" and row["model"] == MODEL_ID
    assert (
        row["prompt"] == "a red fox in snow" and row["seed"] == 7 and row["aspect_ratio"] == "1:1"
    )
    assert row["engine"] == "preview (offline stand-in, not FLUX)"
    assert row["created_at"] <= row["updated_at"] == row["completed_at"]
    assert row["progress"] == {"step": 4, "total": 4}
    assert row["result_url"].startswith(local_server.url + "/api/files/")
    file = download(row["result_url"])  # no token: result URLs work like CDN links
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    assert int(file.headers["content-length"]) == len(file.content)
    assert Image.open(io.BytesIO(file.content)).format == "PNG"


def test_num_generations_gives_that_many_rows_each_with_its_seed(api: httpx.Client) -> None:
    drawn = enqueue(api, num_generations=4)
    assert len(set(drawn)) == 4
    seeds = [wait_for(api, gid)["seed"] for gid in drawn]
    assert all(isinstance(s, int) for s in seeds) and len(set(seeds)) == 4  # drawn by the server
    given = enqueue(api, num_generations=3, seed=4294967294)
    assert [wait_for(api, gid)["seed"] for gid in given] == [4294967294, 4294967295, 0]


@pytest.mark.parametrize("n", [0, 5, "2", True, 1.5])
def test_num_generations_out_of_range_is_refused(api: httpx.Client, n: object) -> None:
    response = api.post("/api/ai/queue", json=request(num_generations=n))
    assert response.status_code == 400
    assert (
        response.json()["error"] == "invalid_request"
        and "num_generations" in response.json()["message"]
    )


def test_model_is_checked_at_enqueue(api: httpx.Client) -> None:
    missing = api.post("/api/ai/queue", json={"prompt": "x"})
    assert missing.status_code == 400 and "model is required" in missing.json()["message"]
    other = api.post("/api/ai/queue", json={"model": "stable-diffusion", "prompt": "x"})
    assert other.status_code == 404 and other.json()["error"] == "model_not_found"


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"aspect_ratio": "2:1"}, "aspect_ratio", "'2:1' is not valid"),
        ({"num_inference_steps": 99}, "num_inference_steps", "out of range"),
        ({"seed": "seven"}, "seed", "wrong type"),
        ({"prompt": "   "}, "prompt", "empty"),
    ],
)
def test_bad_parameter_fails_the_generation_not_the_enqueue(
    api: httpx.Client, params: dict, field: str, words: str
) -> None:
    with connect_sse(api, "GET", "/api/events") as source:
        (gid,) = enqueue(api, **params)
        _, data = next_event(source.iter_sse(), "media_generation_failed", gid)
    row = wait_for(api, gid)
    assert (
        row["status"] == "failed" and row["completed_at"] is not None and row["result_url"] is None
    )
    assert field in row["error_message"] and words in row["error_message"]
    assert data == {"generation_id": gid, "status": "failed", "error_message": row["error_message"]}


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b'{"model": ', 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_request"),
        (
            b'{"model": "black-forest-labs-flux-2-klein-4b", "prompt": "x", "guidance_scale": NaN}',
            400,
            "invalid_json",
        ),
        (json.dumps(request(guidance=3)).encode(), 400, "unknown_field"),
        (json.dumps(request(prompt="x" * 10_001)).encode(), 400, "prompt_too_long"),
        (b"\xff\xfe", 400, "invalid_json"),
    ],
)
def test_malformed_requests_get_a_json_4xx_at_once(
    api: httpx.Client, content: bytes, status: int, code: str
) -> None:
    response = api.post(
        "/api/ai/queue", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status and response.json()["error"] == code
    assert response.json()["message"]


def test_unknown_field_error_suggests_the_right_name(api: httpx.Client) -> None:
    message = api.post("/api/ai/queue", json=request(guidance=3)).json()["message"]
    assert "'guidance'" in message and "Did you mean 'guidance_scale'?" in message


def test_body_over_the_cap_is_413(make_server) -> None:
    server = make_server(limits=Limits(max_body_bytes=1000))
    body = json.dumps(request(prompt="y" * 2000)).encode()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        response = client.post("/api/ai/queue", content=body)
        assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
        chunked = client.post("/api/ai/queue", content=iter([body[:600], body[600:]]))  # no length
        assert chunked.status_code == 413


def test_list_is_newest_first_and_filters_by_model(api: httpx.Client) -> None:
    long_uri = "data:image/png;base64," + "A" * 400
    first, second = enqueue(api), enqueue(api, input_image=[long_uri])
    listed = api.get("/api/ai/queue").json()["generations"]
    assert [g["generation_id"] for g in listed] == second + first
    assert "(422 characters; GET the generation" in listed[0]["input_image"][0]  # shortened
    assert api.get(f"/api/ai/queue/{second[0]}").json()["input_image"] == [long_uri]  # in full
    by_model = api.get("/api/ai/queue", params={"model": MODEL_ID}).json()["generations"]
    assert [g["generation_id"] for g in by_model] == second + first
    assert api.get("/api/ai/queue", params={"model": "other"}).json() == {"generations": []}


def test_rows_are_visible_only_to_their_owner(api: httpx.Client, local_server: LocalServer) -> None:
    (gid,) = enqueue(api)
    with httpx.Client(
        base_url=local_server.url, headers=auth("someone-else"), timeout=TIMEOUT, verify=TLS
    ) as other:
        assert other.get(f"/api/ai/queue/{gid}").status_code == 404
        assert other.delete(f"/api/ai/queue/{gid}").status_code == 404
        assert gid not in str(other.get("/api/ai/queue").json())


def test_unknown_generation_is_a_json_404(api: httpx.Client) -> None:
    for response in (api.get(f"/api/ai/queue/{UUID}"), api.delete(f"/api/ai/queue/{UUID}")):
        assert response.status_code == 404 and response.json()["error"] == "generation_not_found"


# --- cancel ----------------------------------------------------------------------------------------


def test_cancel_stops_a_running_generation_and_drops_a_queued_one(make_server) -> None:
    server = make_server(step_delay=0.02, workers=1)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        with connect_sse(client, "GET", "/api/events") as source:
            events = source.iter_sse()
            running, waiting = enqueue(client, num_generations=2, num_inference_steps=50)
            _, progress = next_event(events, "media_generation_progress", running)
            assert progress["status"] == "processing" and progress["total"] == 50
            assert wait_for(client, waiting, {"queued"})["progress"]["step"] == 0

            cancelled = client.delete(f"/api/ai/queue/{running}")
            assert cancelled.status_code == 200
            assert cancelled.json()["status"] == "cancelled"
            assert cancelled.json()["error_message"] == "cancelled by request"
            _, data = next_event(events, "media_generation_cancelled", running)
            assert data == {
                "generation_id": running,
                "status": "cancelled",
                "error_message": "cancelled by request",
            }

            assert client.post(f"/api/ai/queue/{waiting}/cancel").json()["status"] == "cancelled"
            next_event(events, "media_generation_cancelled", waiting)

            # The single worker is free again at once: the engine stopped between steps.
            (quick,) = enqueue(client, num_inference_steps=1)
            next_event(events, "media_generation_completed", quick)
        row = client.get(f"/api/ai/queue/{running}").json()
        assert row["status"] == "cancelled" and row["progress"]["step"] < 50
        again = client.delete(f"/api/ai/queue/{running}")
        assert again.status_code == 200 and again.json() == row  # terminal: unchanged
        done = client.post(f"/api/ai/queue/{quick}/cancel").json()
        assert done["status"] == "succeeded" and done["error_message"] is None


# --- events ----------------------------------------------------------------------------------------


def test_completion_reaches_a_client_that_subscribes_after_it_finished(api: httpx.Client) -> None:
    """The API docs' order: enqueue, then subscribe. A fast generation is done before the stream."""
    (gid,) = enqueue(api)
    row = wait_for(api, gid)
    with connect_sse(api, "GET", "/api/events") as source:
        event, data = next_event(source.iter_sse(), gid=gid)
    assert event.event == "media_generation_completed" and event.id
    assert data == {
        "generation_id": gid,
        "status": "succeeded",
        "result_url": row["result_url"],
        "url": row["result_url"],
        "type": "image",
        "model": MODEL_ID,
    }


def test_last_event_id_replays_only_what_was_missed(api: httpx.Client) -> None:
    with connect_sse(api, "GET", "/api/events") as source:
        (first,) = enqueue(api)
        seen, _ = next_event(source.iter_sse(), "media_generation_completed", first)
    (second,) = enqueue(api)
    wait_for(api, second)
    with connect_sse(api, "GET", "/api/events", headers={"Last-Event-ID": seen.id}) as source:
        event, data = next_event(source.iter_sse())
    assert data["generation_id"] == second and int(event.id) > int(seen.id)
    # An id this server never sent (say, from before a restart) replays the recent ones.
    with connect_sse(api, "GET", "/api/events", headers={"Last-Event-ID": "9" * 30}) as source:
        events = source.iter_sse()
        assert [next_event(events)[1]["generation_id"] for _ in range(2)] == [first, second]


def test_events_are_per_owner(local_server: LocalServer) -> None:
    url = local_server.url
    with (
        httpx.Client(
            base_url=url, headers=auth("alice-" + secrets.token_hex(4)), timeout=TIMEOUT, verify=TLS
        ) as alice,
        httpx.Client(
            base_url=url, headers=auth("bob-" + secrets.token_hex(4)), timeout=TIMEOUT, verify=TLS
        ) as bob,
    ):
        with connect_sse(bob, "GET", "/api/events") as source:
            events = source.iter_sse()
            (alices,) = enqueue(alice)
            wait_for(alice, alices)
            (bobs,) = enqueue(bob)  # published after alice's: had hers come to bob, it came first
            seen = []
            for event in events:
                seen.append(json.loads(event.data)["generation_id"])
                if event.event == "media_generation_completed":
                    break
        assert set(seen) == {bobs}


# --- sync, inputs ----------------------------------------------------------------------------------


def test_sync_edit_with_a_data_uri_input(api: httpx.Client) -> None:
    response = api.post(
        "/api/ai/images/edit", json=request(input_image=[data_uri(png_bytes())], seed=3)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["seed"] == 3
    assert body["images"] == [{"url": body["result_url"]}]
    image = Image.open(io.BytesIO(download(body["result_url"]).content))
    image.load()
    assert api.get(f"/api/ai/queue/{body['generation_id']}").json()["status"] == "succeeded"


def test_sync_generate_validates_at_once(api: httpx.Client) -> None:
    bad = api.post("/api/ai/images/generate", json=request(aspect_ratio="2:1"))
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_parameter" and bad.json()["field"] == "aspect_ratio"
    assert "2:1" in bad.json()["message"] and "1:1" in bad.json()["message"]  # value and allowed
    no_input = api.post("/api/ai/images/edit", json=request())
    assert no_input.status_code == 400 and no_input.json()["field"] == "input_image"
    assert api.get("/api/ai/queue").json()["generations"] == []  # nothing was made
    ok = api.post("/api/ai/images/generate", json=request(output_format="webp"))
    assert ok.status_code == 200 and ok.json()["result_url"].endswith(".webp")
    assert download(ok.json()["result_url"]).headers["content-type"] == "image/webp"


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (data_uri(b"not an image at all"), "input_image[0] is not a readable image"),
        (data_uri(png_bytes()[:60]), "input_image[0] is not a readable image"),
        ("data:image/png;base64,@@@@", "base64 data is malformed"),
        ("data:text/plain;base64,aGk=", "data:image/<type>;base64"),
        ("file:///etc/passwd", "http(s) URL"),
    ],
)
def test_unreadable_input_image_fails_cleanly(api: httpx.Client, image: str, words: str) -> None:
    (gid,) = enqueue(api, input_image=[data_uri(png_bytes()), image])
    row = wait_for(api, gid)
    assert row["status"] == "failed" and words.replace("[0]", "[1]") in row["error_message"]
    sync = api.post("/api/ai/images/edit", json=request(input_image=[image]))
    assert sync.status_code == 422 and sync.json()["error"] == "generation_failed"
    assert words in sync.json()["message"] and sync.json()["generation_id"]


def test_input_images_by_url_are_fetched(api: httpx.Client, local_server: LocalServer) -> None:
    (source,) = enqueue(api)
    url = wait_for(api, source)["result_url"]
    (edit,) = enqueue(api, input_image=[url])
    assert wait_for(api, edit)["status"] == "succeeded"
    (missing,) = enqueue(api, input_image=[f"{local_server.url}/api/files/{UUID}.png"])
    assert "fetching it gave HTTP 404" in wait_for(api, missing)["error_message"]
    (many,) = enqueue(api, input_image=[url] * 9)
    assert "at most 8" in wait_for(api, many)["error_message"]


# --- model, files, errors, auth --------------------------------------------------------------------


def test_model_schema(api: httpx.Client) -> None:
    body = api.get(f"/api/ai/models/{MODEL_ID}").json()
    assert body["status"] == "success"
    assert body["model"] == {
        "id": MODEL_ID,
        "name": "FLUX.2 Klein 4B",
        "type": "image",
        "description": "An offline stand-in drawn with Pillow: its images are not FLUX's.",
        "json_request_schema": bundled_schema(),
    }
    unknown = api.get("/api/ai/models/other-model")
    assert unknown.status_code == 404 and unknown.json()["error"] == "model_not_found"


def test_file_names_are_checked_strictly(api: httpx.Client, local_server: LocalServer) -> None:
    (gid,) = enqueue(api)
    assert wait_for(api, gid)["result_url"].endswith(f"/{gid}.png")
    for path in (
        "/api/files/../../../../etc/passwd",
        "/api/files/..%2F..%2F..%2Fetc%2Fpasswd",
        f"/api/files/{gid}.png/../../../etc/passwd",
        f"/api/files/{gid}.jpg",  # right id, wrong extension
        f"/api/files/{UUID}.png",
        f"/api/files/{gid.upper()}.png",
        f"/api/files/{gid}.exe",
    ):
        status, body = raw_get(local_server.url, path)
        assert status == 404, path
        assert json.loads(body)["error"] in {"file_not_found", "not_found"}, path
    assert raw_get(local_server.url, f"/api/files/{gid}.png")[0] == 200


def test_results_past_the_memory_budget_are_served_from_disk(make_server) -> None:
    server = make_server(limits=Limits(results_in_memory_bytes=50_000))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        ids = enqueue(client, num_generations=4, aspect_ratio="1:1")
        rows = [wait_for(client, gid) for gid in ids]
        kept = [server.runtime.results.get(row["result_url"].rsplit("/", 1)[1]) for row in rows]
        assert {type(k) for k in kept} == {bytes, type(Path())}  # the oldest went to disk
        for row in rows:
            file = client.get(row["result_url"])
            assert int(file.headers["content-length"]) == len(file.content) > 0
            Image.open(io.BytesIO(file.content)).load()


def test_unknown_routes_and_methods_answer_json(api: httpx.Client) -> None:
    missing = api.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = api.put("/api/ai/queue")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert api.get("/").json()["engine"] == "preview (offline stand-in, not FLUX)"


def test_a_crash_is_a_json_500(make_server, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(server.runtime.store, "rows", broken)
    response = download(server.url + "/api/ai/queue")
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "internal_error" and "boom" not in response.text


def test_api_key_is_required_when_set(make_server) -> None:
    key = "sk-local-" + secrets.token_hex(8)
    server = make_server(api_key=key)
    protected = [
        ("POST", "/api/ai/queue"),
        ("GET", "/api/ai/queue"),
        ("GET", f"/api/ai/queue/{UUID}"),
        ("DELETE", f"/api/ai/queue/{UUID}"),
        ("POST", f"/api/ai/queue/{UUID}/cancel"),
        ("POST", "/api/ai/images/generate"),
        ("POST", "/api/ai/images/edit"),
        ("GET", f"/api/ai/models/{MODEL_ID}"),
        ("GET", "/api/events"),
    ]
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        for method, path in protected:
            for headers in ({}, auth("wrong-" + key), {"Authorization": key}):
                response = client.request(method, path, headers=headers, json=request())
                assert response.status_code == 401, (method, path)
                assert response.json()["error"] == "unauthorized"
                assert "wrong-" not in response.text and key not in response.text
            with client.stream(method, path, headers=auth(key), json=request()) as response:
                assert response.status_code != 401, (method, path)
        assert client.get(f"/api/files/{UUID}.png").status_code == 404  # files: no auth, just 404


# --- faults ----------------------------------------------------------------------------------------


@pytest.fixture
def faulty(make_server) -> Iterator[httpx.Client]:
    server = make_server(faults=Faults(seed=1))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        yield client


def set_faults(client: httpx.Client, **config: object) -> None:
    response = client.post("/_faults", json=config)
    assert response.status_code == 200, response.text


def injected(client: httpx.Client) -> dict[str, int]:
    return client.get("/_faults").json()["injected"]


def test_fault_error_rate_is_503_with_retry_after_and_seeded(faulty: httpx.Client) -> None:
    set_faults(faulty, error_rate=1.0)
    response = faulty.get("/api/ai/queue")
    assert response.status_code == 503 and response.headers["retry-after"] == "0"
    assert response.json()["error"] == "unavailable"
    assert faulty.get("/").status_code == 200  # only /api/ai/* is hit

    def run() -> list[int]:
        set_faults(faulty, error_rate=0.5, seed=3)
        return [faulty.get("/api/ai/queue").status_code for _ in range(20)]

    first = run()
    assert first == run() and {200, 503} == set(first)
    assert injected(faulty)["error"] == first.count(503)


def test_fault_status_queue_forces_answers_in_order(faulty: httpx.Client) -> None:
    set_faults(
        faulty,
        status_queue=[
            {"status": 429, "path": "/api/ai/queue", "retry_after": 1},
            {"status": 402, "path": "/api/ai/queue", "method": "POST"},
            {"status": 500, "path": "/api/ai/queue", "method": "POST"},
        ],
    )
    assert faulty.get("/api/ai/models/x").status_code == 404  # another path: untouched
    first = faulty.post("/api/ai/queue", json=request())
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert faulty.get("/api/ai/queue").status_code == 200  # the others wait for a POST
    assert faulty.post("/api/ai/queue", json=request()).json()["error"] == "insufficient_credits"
    assert faulty.post("/api/ai/queue", json=request()).status_code == 500
    assert faulty.post("/api/ai/queue", json=request()).status_code == 200
    assert injected(faulty)["status"] == 3


def test_fault_reset_drops_the_connection(faulty: httpx.Client) -> None:
    set_faults(faulty, reset_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        faulty.post("/api/ai/queue", json=request())
    set_faults(faulty)
    assert faulty.get("/api/ai/queue").json() == {"generations": []}  # it was not acted on
    set_faults(faulty, reset_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        faulty.get("/api/ai/queue")
    assert injected(faulty)["reset"] == 1


def test_fault_download_cut_keeps_the_full_length(faulty: httpx.Client) -> None:
    (gid,) = enqueue(faulty)
    url = wait_for(faulty, gid)["result_url"]
    set_faults(faulty, download_cut_rate=1.0)
    with faulty.stream("GET", url) as response:
        length = int(response.headers["content-length"])
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert length > 0 and injected(faulty)["download_cut"] == 1


def test_fault_sse_cut_after_ends_each_stream(faulty: httpx.Client) -> None:
    ids = enqueue(faulty, num_generations=3)
    for gid in ids:
        wait_for(faulty, gid)
    set_faults(faulty, sse_cut_after=2)
    for _ in range(2):
        with connect_sse(faulty, "GET", "/api/events") as source:
            assert len(list(source.iter_sse())) == 2  # the stream ends by itself
    assert injected(faulty)["sse_cut"] == 2


def test_fault_sse_silent_keeps_the_stream_open_and_quiet(faulty: httpx.Client) -> None:
    (gid,) = enqueue(faulty)
    wait_for(faulty, gid)
    set_faults(faulty, sse_silent=True)
    with connect_sse(faulty, "GET", "/api/events", timeout=httpx.Timeout(5, read=0.3)) as source:
        assert source.response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):  # a completion is there to replay, yet nothing comes
            next(source.iter_sse())
    assert injected(faulty)["sse_silent"] == 1


def test_faults_endpoint(faulty: httpx.Client, api: httpx.Client) -> None:
    bad = faulty.post("/_faults", json={"error_rat": 1})
    assert bad.status_code == 400 and "error_rat" in bad.json()["message"]
    assert faulty.post("/_faults", json={"error_rate": 2}).status_code == 400
    assert faulty.get("/_faults").json()["faults"]["seed"] == 1
    assert api.get("/_faults").status_code == 404  # a server without faults has no such route


# --- life cycle, CLI, the API docs' examples --------------------------------------------------------


def test_stop_returns_fast_with_an_sse_client_attached(make_server) -> None:
    server = make_server()
    connected, ended, problems = threading.Event(), threading.Event(), []

    def listen() -> None:
        try:
            with httpx.Client(timeout=TIMEOUT, verify=TLS) as client:
                with connect_sse(client, "GET", server.url + "/api/events") as source:
                    connected.set()
                    for _ in source.iter_sse():
                        pass
        except Exception as exc:
            problems.append(exc)
        finally:
            ended.set()

    threading.Thread(target=listen, daemon=True).start()
    assert connected.wait(5)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert ended.wait(2) and problems == []  # the stream ended cleanly, not with an error
    assert not server.running


def test_local_server_starts_fast_and_rejects_bad_options() -> None:
    started = time.monotonic()
    with LocalServer() as server:
        assert time.monotonic() - started < 0.5
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
    with pytest.raises(ValueError, match="preview"):
        create_app(engine="flux-dev")
    with pytest.raises(ValueError, match="preview"):
        get_engine("flux-dev")


def test_cli_serve_stops_on_ctrl_c_with_a_stream_open() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "flux_nb", "serve", "--port", "0", "--step-delay", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "offline stand-in" in line and "not FLUX" in line, process.stderr.read()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        with httpx.Client(timeout=TIMEOUT, verify=TLS) as client:
            with connect_sse(client, "GET", url + "/api/events") as source:
                process.send_signal(signal.SIGINT)
                interrupted = time.monotonic()
                assert list(source.iter_sse()) == []  # ends cleanly when the server stops
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - interrupted < 3
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        process.stderr.close()


def test_api_docs_python_example_with_only_the_host_changed(make_server) -> None:
    """The quick start's steps (requests there, httpx here): enqueue, poll until succeeded, fetch."""
    api_key = "sk-docs-" + secrets.token_hex(6)
    base_url = make_server(api_key=api_key).url  # the docs: https://hub.oxen.ai
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    payload = {
        "model": "black-forest-labs-flux-2-klein-4b",
        "prompt": "A watercolor painting of a lighthouse at dawn",
        "num_generations": 1,
    }
    response = httpx.post(f"{base_url}/api/ai/queue", headers=headers, json=payload)
    response.raise_for_status()
    generation_id = response.json()["generations"][0]["generation_id"]
    while True:
        status = httpx.get(f"{base_url}/api/ai/queue/{generation_id}", headers=headers).json()
        if status["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.005)  # the docs wait 5 s; this engine is quicker
    assert status["status"] == "succeeded"
    image = httpx.get(status["result_url"]).content
    assert Image.open(io.BytesIO(image)).size[0] > 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_api_docs_curl_example_with_only_the_host_changed(make_server, tmp_path) -> None:
    api_key = "sk-docs-" + secrets.token_hex(6)
    base_url = make_server(api_key=api_key).url

    def curl(*args: str) -> str:
        done = subprocess.run(
            ["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr + done.stdout
        return done.stdout

    body = json.dumps(
        {"model": "black-forest-labs-flux-2-klein-4b", "prompt": "a cat", "num_generations": 1}
    )
    answer = curl(
        "-X", "POST", f"{base_url}/api/ai/queue",
        "-H", f"Authorization: Bearer {api_key}",
        "-H", "Content-Type: application/json",
        "-d", body,
    )  # fmt: skip
    generation_id = json.loads(answer)["generations"][0]["generation_id"]
    deadline = time.monotonic() + 10
    while True:
        row = json.loads(
            curl(
                f"{base_url}/api/ai/queue/{generation_id}", "-H", f"Authorization: Bearer {api_key}"
            )
        )
        if row["status"] in TERMINAL:
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert row["status"] == "succeeded"
    curl("-o", str(tmp_path / "out.png"), row["result_url"])
    assert Image.open(tmp_path / "out.png").format == "PNG"
