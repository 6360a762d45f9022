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
from helpers import data_uri, every_row, png_bytes, wait_for
from httpx_sse import ServerSentEvent, connect_sse
from PIL import Image

from flux_nb.core._recipe import MODEL_ID, bundled_schema
from flux_nb.server import Faults, Limits, LocalServer, create_app
from flux_nb.server import _embedded as embedded
from flux_nb.server._app import LocalExtras
from flux_nb.server.engines import get_engine

TIMEOUT = httpx.Timeout(10.0)
# Every httpx.Client builds an SSL context (~50 ms) unless given one: share one across the tests.
TLS = ssl.create_default_context()
TERMINAL = {"succeeded", "failed", "cancelled"}
UUID = "0b0e6c1e-6f1a-4c1e-9c1e-0b0e6c1e6f1a"
# The generation object's own fields (oxen-api.md 3.3); the request parameters follow them.
ROW_FIELDS = [
    "generation_id", "model_name", "prompt", "media_type", "status", "result_url", "error_message",
    "enqueued_at", "started_at", "completed_at", "target_namespace", "target_repo",
    "target_directory",
]  # fmt: skip
NOT_FOUND = {
    "error": {"type": "resource_not_found", "title": "The requested resource could not be found"},
    "status": "error",
    "status_message": "resource_not_found",
}


# --- helpers --------------------------------------------------------------------------------------


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


def next_event(events: Iterator[ServerSentEvent], name: str | None = None, gid: str | None = None):
    """The next event with that name (and generation id);
    the client's read timeout bounds the wait."""
    for event in events:
        data = json.loads(event.data)
        if (name is None or event.event == name) and (gid is None or data["generation_id"] == gid):
            return event, data
    raise AssertionError(f"the stream ended before {name} for {gid}")


def problem(response: httpx.Response, status: int, error_type: str) -> str:
    """Assert the documented typed error envelope; return its detail (or title) line."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "status", "status_message"}, body
    assert body["status"] == "error" and body["status_message"] == error_type
    assert body["error"]["type"] == error_type and body["error"]["title"]
    return body["error"].get("detail") or body["error"]["title"]


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


# --- queue ----------------------------------------------------------------------------------------


def test_enqueue_poll_download(api: httpx.Client, local_server: LocalServer) -> None:
    (gid,) = enqueue(api, seed=7, aspect_ratio="1:1")
    row = wait_for(api, gid)
    assert row["status"] == "succeeded", row
    # The documented generation object: its own fields first, then the request echoed as sent.
    assert list(row) == [*ROW_FIELDS, "aspect_ratio", "seed", "num_inference_steps"]
    assert row["generation_id"] == gid and row["model_name"] == MODEL_ID
    assert row["media_type"] == "image" and row["error_message"] is None
    assert (
        row["prompt"] == "a red fox in snow" and row["seed"] == 7 and row["aspect_ratio"] == "1:1"
    )
    assert row["num_inference_steps"] == 4
    times = [row["enqueued_at"], row["started_at"], row["completed_at"]]
    assert all(type(t) is int for t in times) and times == sorted(times)  # unix seconds
    assert abs(row["completed_at"] - time.time()) < 60
    assert row["target_namespace"] is row["target_repo"] is row["target_directory"] is None
    assert row["result_url"].startswith(local_server.url + "/api/files/")
    file = download(row["result_url"])  # no token: result URLs work like CDN links
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    assert int(file.headers["content-length"]) == len(file.content)
    assert Image.open(io.BytesIO(file.content)).format == "PNG"


def test_num_generations_gives_that_many_different_images_and_echoes_only_a_sent_seed(
    api: httpx.Client,
) -> None:
    drawn = enqueue(api, num_generations=4)
    assert len(set(drawn)) == 4
    rows = [wait_for(api, gid) for gid in drawn]
    assert all("seed" not in row for row in rows)  # a seed the server drew is not reported
    assert len({download(row["result_url"]).content for row in rows}) == 4  # each drew its own
    given = enqueue(api, num_generations=3, seed=4294967294)
    rows = [wait_for(api, gid) for gid in given]
    assert [row["seed"] for row in rows] == [4294967294] * 3  # the request, echoed as sent
    assert len({download(row["result_url"]).content for row in rows}) == 3  # seed, seed+1, 0


def test_a_drawn_seed_is_shown_only_with_the_local_echo_flag_and_remakes_the_image(
    make_server,
) -> None:
    server = make_server(extras=LocalExtras(echo_drawn_seed=True))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        assert client.get("/").json()["local_extras"] == ["echo_drawn_seed"]
        rows = [wait_for(client, gid) for gid in enqueue(client, num_generations=2)]
        seeds = [row["seed"] for row in rows]
        assert all(type(s) is int for s in seeds) and len(set(seeds)) == 2
        (again,) = enqueue(client, seed=seeds[1])
        remade = wait_for(client, again)
        assert download(remade["result_url"]).content == download(rows[1]["result_url"]).content


@pytest.mark.parametrize("n", [0, 5, "2", True, 1.5])
def test_num_generations_out_of_range_is_refused_with_the_documented_text(
    api: httpx.Client, n: object
) -> None:
    response = api.post("/api/ai/queue", json=request(num_generations=n))
    detail = problem(response, 400, "invalid_params")
    assert detail == "num_generations must be an integer between 1 and 4"
    assert every_row(api) == []  # nothing was made


def test_model_is_checked_at_enqueue(api: httpx.Client) -> None:
    missing = api.post("/api/ai/queue", json={"prompt": "x"})
    assert "model is required" in problem(missing, 400, "invalid_params")
    other = api.post("/api/ai/queue", json={"model": "stable-diffusion", "prompt": "x"})
    assert other.status_code == 404  # the docs' other envelope, with their text
    assert other.json() == {"error": {"message": "Model not found: stable-diffusion"}}


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
        _, data = next_event(source.iter_sse(), "media_generation_completed", gid)
    row = wait_for(api, gid)
    assert (
        row["status"] == "failed" and row["completed_at"] is not None and row["result_url"] is None
    )
    assert field in row["error_message"] and words in row["error_message"]
    # The documented failure frame: the same completed event, status failed, with `error`.
    assert data == {
        "generation_id": gid,
        "status": "failed",
        "media_type": "image",
        "error": row["error_message"],
    }


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"model": ', "is not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (
            b'{"model": "black-forest-labs-flux-2-klein-4b", "prompt": "x", "guidance_scale": NaN}',
            "is not valid JSON",
        ),
        (json.dumps(request(guidance=3)).encode(), "unknown field 'guidance'"),
        (json.dumps(request(prompt="x" * 10_001)).encode(), "at most 10000 are taken"),
        (b"\xff\xfe", "is not valid JSON"),
    ],
)
def test_malformed_requests_get_the_documented_400_envelope_at_once(
    api: httpx.Client, content: bytes, words: str
) -> None:
    response = api.post(
        "/api/ai/queue", content=content, headers={"Content-Type": "application/json"}
    )
    assert words in problem(response, 400, "invalid_params")
    assert every_row(api) == []  # nothing was made


def test_unknown_field_error_suggests_the_right_name(api: httpx.Client) -> None:
    detail = problem(api.post("/api/ai/queue", json=request(guidance=3)), 400, "invalid_params")
    assert "'guidance'" in detail and "Did you mean 'guidance_scale'?" in detail


def test_body_over_the_cap_is_413(make_server) -> None:
    server = make_server(limits=Limits(max_body_bytes=1000))
    body = json.dumps(request(prompt="y" * 2000)).encode()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        response = client.post("/api/ai/queue", content=body)
        assert "over 1000 bytes" in problem(response, 413, "invalid_params")
        chunked = client.post("/api/ai/queue", content=iter([body[:600], body[600:]]))  # no length
        assert "over 1000 bytes" in problem(chunked, 413, "invalid_params")


def test_list_by_status_is_newest_first_and_filters_by_model(api: httpx.Client) -> None:
    long_uri = "data:image/png;base64," + "A" * 400
    first, second = enqueue(api), enqueue(api, input_image=[long_uri])
    wait_for(api, first[0]), wait_for(api, second[0])  # the second fails: its picture is bad
    ours = first + second
    listed = [g for g in every_row(api) if g["generation_id"] in ours]
    assert [g["generation_id"] for g in listed] == first + second  # succeeded, then failed
    failed = api.get("/api/ai/queue", params={"status": "failed"}).json()
    assert failed["count"] == 1 and failed["generations"][0]["generation_id"] == second[0]
    assert "(422 characters; GET the generation" in failed["generations"][0]["input_image"][0]
    assert api.get(f"/api/ai/queue/{second[0]}").json()["input_image"] == [long_uri]  # in full
    third = enqueue(api)
    wait_for(api, third[0])
    done = api.get("/api/ai/queue", params={"status": "succeeded", "model": MODEL_ID}).json()
    assert [g["generation_id"] for g in done["generations"]] == third + first  # newest first
    other = api.get("/api/ai/queue", params={"status": "succeeded", "model": "other"})
    assert other.json() == {"count": 0, "generations": []}


def test_list_shows_only_active_generations_unless_a_status_is_asked(make_server) -> None:
    server = make_server(step_delay=0.02, workers=1)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        (done,) = enqueue(client, num_inference_steps=1)
        wait_for(client, done)
        running, waiting = enqueue(client, num_generations=2, num_inference_steps=50)
        wait_for(client, running, {"processing"})
        active = client.get("/api/ai/queue").json()
        assert active["count"] == 2  # the finished one is not in the default list
        assert [g["generation_id"] for g in active["generations"]] == [waiting, running]
        assert [g["status"] for g in active["generations"]] == ["queued", "processing"]
        queued = client.get("/api/ai/queue", params={"status": "queued"}).json()["generations"]
        assert [g["generation_id"] for g in queued] == [waiting]
        succeeded = client.get("/api/ai/queue", params={"status": "succeeded"}).json()
        assert [g["generation_id"] for g in succeeded["generations"]] == [done]
        videos = client.get("/api/ai/queue", params={"media_type": "video"}).json()
        assert videos == {"count": 0, "generations": []}
        bad = client.get("/api/ai/queue", params={"status": "done"})
        assert "status='done' is not valid" in problem(bad, 400, "invalid_params")
        for gid in (running, waiting):
            client.delete(f"/api/ai/queue/{gid}")
        assert client.get("/api/ai/queue").json() == {"count": 0, "generations": []}
        cancelled = client.get("/api/ai/queue", params={"status": "cancelled"}).json()
        assert {g["generation_id"] for g in cancelled["generations"]} == {running, waiting}


def test_targets_are_echoed_and_filter_the_list_by_repo_and_folder(api: httpx.Client) -> None:
    targets = {"target_namespace": "team", "target_repo": "renders", "target_directory": "foxes"}
    (aimed,) = enqueue(api, **targets)
    (plain,) = enqueue(api)
    row = wait_for(api, aimed)
    wait_for(api, plain)
    assert {name: row[name] for name in targets} == targets
    in_repo = every_row(api, repo="renders", folder="foxes")
    assert [g["generation_id"] for g in in_repo] == [aimed]
    assert every_row(api, repo="other") == []


def test_rows_are_visible_only_to_their_owner(api: httpx.Client, local_server: LocalServer) -> None:
    (gid,) = enqueue(api)
    with httpx.Client(
        base_url=local_server.url, headers=auth("someone-else"), timeout=TIMEOUT, verify=TLS
    ) as other:
        assert other.get(f"/api/ai/queue/{gid}").json() == NOT_FOUND
        assert other.delete(f"/api/ai/queue/{gid}").json() == NOT_FOUND
        assert wait_for(api, gid)["status"] == "succeeded"  # untouched by the other's DELETE
        assert gid not in str(every_row(other))


def test_unknown_generation_is_the_documented_404(api: httpx.Client) -> None:
    for response in (api.get(f"/api/ai/queue/{UUID}"), api.delete(f"/api/ai/queue/{UUID}")):
        assert response.status_code == 404 and response.json() == NOT_FOUND


# --- cancel ---------------------------------------------------------------------------------------


def test_cancel_stops_a_running_generation_and_a_queued_one_without_an_event(make_server) -> None:
    server = make_server(step_delay=0.02, workers=1)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        with connect_sse(client, "GET", "/api/events") as source:
            events = source.iter_sse()
            running, waiting = enqueue(client, num_generations=2, num_inference_steps=50)
            started = wait_for(client, running, {"processing"})
            assert type(started["started_at"]) is int and started["completed_at"] is None
            assert wait_for(client, waiting, {"queued"})["started_at"] is None

            cancelled = client.delete(f"/api/ai/queue/{running}")
            assert cancelled.status_code == 200
            assert cancelled.json() == {"status": "success", "generation_id": running}
            row = client.get(f"/api/ai/queue/{running}").json()  # at once, not when a step ends
            assert row["status"] == "cancelled" and row["result_url"] is None
            assert type(row["completed_at"]) is int

            # DELETE is the only cancel route.
            assert client.post(f"/api/ai/queue/{waiting}/cancel").status_code == 404
            answer = client.delete(f"/api/ai/queue/{waiting}").json()
            assert answer == {"status": "success", "generation_id": waiting}
            assert client.get(f"/api/ai/queue/{waiting}").json()["status"] == "cancelled"

            # The single worker is free again at once: the engine stopped between steps. And the
            # stream said nothing of the two cancels: the next event is the quick one's.
            (quick,) = enqueue(client, num_inference_steps=1)
            event, data = next_event(events)
            assert event.event == "media_generation_completed"
            assert data["generation_id"] == quick and data["status"] == "succeeded"
        row = client.get(f"/api/ai/queue/{running}").json()
        again = client.delete(f"/api/ai/queue/{running}")
        assert again.json() == {"status": "success", "generation_id": running}
        assert client.get(f"/api/ai/queue/{running}").json() == row  # terminal: unchanged
        finished = client.get(f"/api/ai/queue/{quick}").json()
        assert client.delete(f"/api/ai/queue/{quick}").json()["status"] == "success"
        assert client.get(f"/api/ai/queue/{quick}").json() == finished  # still succeeded
        assert finished["status"] == "succeeded" and finished["error_message"] is None


# --- events ---------------------------------------------------------------------------------------


def test_an_event_that_fires_while_nobody_listens_is_lost(api: httpx.Client) -> None:
    """As on the hosted stream: no buffer, no ids, no replay, Last-Event-ID or not. A client that
    subscribes late reads the row instead."""
    (missed,) = enqueue(api)
    wait_for(api, missed)
    with connect_sse(api, "GET", "/api/events", headers={"Last-Event-ID": "1"}) as source:
        (heard,) = enqueue(api)
        event, data = next_event(source.iter_sse())
    row = wait_for(api, heard)
    assert event.event == "media_generation_completed" and event.id == ""  # no id: line
    assert data == {  # the documented success frame, and the first thing the stream said
        "generation_id": heard,
        "status": "succeeded",
        "media_type": "image",
        "model": MODEL_ID,
        "url": row["result_url"],
    }


def test_keep_alive_comments_hold_an_idle_stream_open(make_server, monkeypatch) -> None:
    from flux_nb.server import _app as server_app

    monkeypatch.setattr(server_app, "PING_SECONDS", 0.05)
    server = make_server()
    with httpx.Client(timeout=TIMEOUT, verify=TLS) as client:
        with client.stream("GET", server.url + "/api/events") as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line)
    assert first == ": keep-alive"  # the hosted stream's heartbeat, word for word


def test_the_local_replay_flag_gives_a_late_subscriber_what_it_missed(make_server) -> None:
    server = make_server(extras=LocalExtras(replay_events=True))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        assert client.get("/").json()["local_extras"] == ["replay_events"]
        (first,) = enqueue(client)
        row = wait_for(client, first)
        with connect_sse(client, "GET", "/api/events") as source:
            seen, data = next_event(source.iter_sse(), gid=first)  # it finished before we came
        assert seen.event == "media_generation_completed" and seen.id
        assert data["url"] == row["result_url"] and data["status"] == "succeeded"

        (second,) = enqueue(client)
        wait_for(client, second)
        with connect_sse(
            client, "GET", "/api/events", headers={"Last-Event-ID": seen.id}
        ) as source:
            event, data = next_event(source.iter_sse())
        assert data["generation_id"] == second and int(event.id) > int(seen.id)  # only the missed
        # An id this server never sent (say, from before a restart) replays the recent ones.
        with connect_sse(
            client, "GET", "/api/events", headers={"Last-Event-ID": "9" * 30}
        ) as source:
            events = source.iter_sse()
            assert [next_event(events)[1]["generation_id"] for _ in range(2)] == [first, second]


def test_progress_events_come_only_with_the_local_flag(make_server) -> None:
    plain = make_server(step_delay=0.01)
    chatty = make_server(step_delay=0.01, extras=LocalExtras(progress_events=True))
    names = {}
    for server in (plain, chatty):
        with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
            with connect_sse(client, "GET", "/api/events") as source:
                (gid,) = enqueue(client, num_inference_steps=5)
                seen = []
                for event in source.iter_sse():
                    seen.append((event.event, json.loads(event.data)))
                    if event.event == "media_generation_completed":
                        break
        names[server] = [name for name, _ in seen]
        if server is chatty:
            progress = [data for name, data in seen if name == "media_generation_progress"]
            assert progress and progress[0] == {
                "generation_id": gid, "status": "processing", "step": 0, "total": 5
            }  # fmt: skip
            steps = [p["step"] for p in progress]
            assert steps == sorted(steps) and steps[-1] <= 5
    assert names[plain] == ["media_generation_completed"]
    assert names[chatty][-1] == "media_generation_completed" and len(names[chatty]) > 1


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
            event, data = next_event(events)
        assert data["generation_id"] == bobs


# --- sync, inputs ---------------------------------------------------------------------------------


def test_sync_edit_with_a_data_uri_input_answers_a_url_or_b64_json(api: httpx.Client) -> None:
    edit = request(input_image=[data_uri(png_bytes())], seed=3)
    response = api.post("/api/ai/images/edit", json=edit)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["model", "created", "images"] and body["model"] == MODEL_ID
    assert type(body["created"]) is int and abs(body["created"] - time.time()) < 60
    (image,) = body["images"]
    assert list(image) == ["url"] and image["url"].endswith(".png")
    by_url = Image.open(io.BytesIO(download(image["url"]).content))
    inline = api.post("/api/ai/images/edit", json={**edit, "response_format": "b64_json"}).json()
    assert list(inline["images"][0]) == ["b64_json"]
    by_b64 = Image.open(io.BytesIO(base64.b64decode(inline["images"][0]["b64_json"])))
    assert by_b64.format == "PNG" and by_b64.tobytes() == by_url.tobytes()  # same seed
    assert every_row(api) == []  # sync calls are not queue rows


def test_sync_edit_takes_a_prompt_only_body_as_oxens_klein_page_sends(api: httpx.Client) -> None:
    response = api.post("/api/ai/images/edit", json={"model": MODEL_ID, "prompt": "a fox"})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(download(response.json()["images"][0]["url"]).content)).size


def test_sync_generate_validates_at_once(api: httpx.Client) -> None:
    bad = api.post("/api/ai/images/generate", json=request(aspect_ratio="2:1"))
    detail = problem(bad, 400, "invalid_params")
    assert "aspect_ratio" in detail and "2:1" in detail and "1:1" in detail  # value and allowed
    empty = api.post("/api/ai/images/generate", json=request(prompt="  "))
    assert problem(empty, 400, "invalid_params") == "Prompt cannot be empty"  # the docs' text
    fmt = api.post("/api/ai/images/generate", json=request(response_format="png"))
    assert "response_format must be one of: url, b64_json" in problem(fmt, 400, "invalid_params")
    ok = api.post("/api/ai/images/generate", json=request(output_format="webp"))
    assert ok.status_code == 200 and ok.json()["images"][0]["url"].endswith(".webp")
    assert download(ok.json()["images"][0]["url"]).headers["content-type"] == "image/webp"


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
    assert words in problem(sync, 500, "unknown_error")  # the sync route's failure: one line


def test_input_images_by_url_are_fetched(api: httpx.Client, local_server: LocalServer) -> None:
    (source,) = enqueue(api)
    url = wait_for(api, source)["result_url"]
    (edit,) = enqueue(api, input_image=[url])
    assert wait_for(api, edit)["status"] == "succeeded"
    (missing,) = enqueue(api, input_image=[f"{local_server.url}/api/files/{UUID}.png"])
    assert "fetching it gave HTTP 404" in wait_for(api, missing)["error_message"]
    (many,) = enqueue(api, input_image=[url] * 9)
    assert "at most 8" in wait_for(api, many)["error_message"]


# --- model, files, errors, auth -------------------------------------------------------------------


def test_model_is_the_bare_documented_object_with_its_request_schema(api: httpx.Client) -> None:
    body = api.get(f"/api/ai/models/{MODEL_ID}").json()
    assert body["id"] == MODEL_ID and body["object"] == "model" and "status" not in body
    assert body["request_schema"] == bundled_schema() == body["json_request_schema"]  # and alias
    assert body["capabilities"] == {"input": ["text", "image"], "output": ["image"]}
    assert body["pricing"]["method"] == "per_image" and body["endpoint"] == "/images/generate"
    assert (
        body["description"] == "An offline stand-in drawn with Pillow: its images are not FLUX's."
    )
    unknown = api.get("/api/ai/models/other-model")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"message": "Model not found: other-model"}}


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
        assert json.loads(body)["error"]["type"] == "resource_not_found", path
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


def test_with_spill_downloaded_a_result_leaves_memory_once_downloaded_whole(make_server) -> None:
    """What the embedded server does (issue 25): memory holds only what is not fetched yet;
    the file is still served, now from the temporary folder."""
    server = make_server(limits=Limits(spill_downloaded=True))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        (gid,) = enqueue(client, aspect_ratio="1:1")
        url = wait_for(client, gid)["result_url"]
        name = url.rsplit("/", 1)[1]
        assert isinstance(server.runtime.results.get(name), bytes)  # nobody has it yet
        first = client.get(url).content
        deadline = time.monotonic() + 30
        while not isinstance(server.runtime.results.get(name), Path):  # after the response
            assert time.monotonic() < deadline, "the downloaded result stayed in memory"
            time.sleep(0.01)
        assert client.get(url).content == first


def test_unknown_routes_and_methods_answer_in_the_documented_envelope(api: httpx.Client) -> None:
    missing = api.get("/api/nothing-here")
    assert "GET /api/nothing-here" in problem(missing, 404, "resource_not_found")
    wrong = api.put("/api/ai/queue")
    assert "PUT is not allowed" in problem(wrong, 405, "invalid_params")
    about = api.get("/").json()
    assert about["engine"] == "preview (offline stand-in, not FLUX)"
    assert about["local_extras"] == []  # the shared default server: the contract and no more


def test_the_docs_example_input_picture_is_served_without_a_key(make_server) -> None:
    """Oxen's Klein page edits a public picture in elau/assets: its path answers here too."""
    server = make_server(api_key="sk-" + secrets.token_hex(6))
    path = "/api/repos/elau/assets/file/main/bloxy/bloxy_cropped_512x512.png"
    picture = download(server.url + path)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).size == (512, 512)
    assert download(server.url + path.replace("bloxy_", "other_")).status_code == 404


def test_a_crash_is_a_json_500(make_server, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(server.runtime.store, "rows", broken)
    response = download(server.url + "/api/ai/queue")
    assert "internal error" in problem(response, 500, "unknown_error")
    assert "boom" not in response.text


def test_api_key_is_required_when_set(make_server) -> None:
    key = "sk-local-" + secrets.token_hex(8)
    server = make_server(api_key=key)
    protected = [
        ("POST", "/api/ai/queue"),
        ("GET", "/api/ai/queue"),
        ("GET", f"/api/ai/queue/{UUID}"),
        ("DELETE", f"/api/ai/queue/{UUID}"),
        ("POST", "/api/ai/images/generate"),
        ("POST", "/api/ai/images/edit"),
        ("GET", f"/api/ai/models/{MODEL_ID}"),
        ("GET", "/api/events"),
    ]
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        for method, path in protected:
            for headers in ({}, auth("wrong-" + key), {"Authorization": key}):
                response = client.request(method, path, headers=headers, json=request())
                assert problem(response, 401, "unauthenticated"), (method, path)
                assert "wrong-" not in response.text and key not in response.text
            with client.stream(method, path, headers=auth(key), json=request()) as response:
                assert response.status_code != 401, (method, path)
        assert client.get(f"/api/files/{UUID}.png").status_code == 404  # files: no auth, just 404


# --- faults ---------------------------------------------------------------------------------------


@pytest.fixture
def fault_client(make_server) -> Iterator[httpx.Client]:
    """A plain client (no token) of a fresh server with fault injection on, seed 1."""
    server = make_server(faults=Faults(seed=1))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, verify=TLS) as client:
        yield client


def set_faults(client: httpx.Client, **config: object) -> None:
    response = client.post("/_faults", json=config)
    assert response.status_code == 200, response.text


def injected(client: httpx.Client) -> dict[str, int]:
    return client.get("/_faults").json()["injected"]


def test_fault_error_rate_is_503_with_retry_after_and_seeded(fault_client: httpx.Client) -> None:
    set_faults(fault_client, error_rate=1.0)
    response = fault_client.get("/api/ai/queue")
    assert "HTTP 503" in problem(response, 503, "unknown_error")
    assert response.headers["retry-after"] == "0"
    assert fault_client.get("/").status_code == 200  # only /api/ai/* is hit

    def run() -> list[int]:
        set_faults(fault_client, error_rate=0.5, seed=3)
        return [fault_client.get("/api/ai/queue").status_code for _ in range(20)]

    first = run()
    assert first == run() and {200, 503} == set(first)
    assert injected(fault_client)["error"] == first.count(503)


def test_fault_status_queue_forces_answers_in_order(fault_client: httpx.Client) -> None:
    set_faults(
        fault_client,
        status_queue=[
            {"status": 429, "path": "/api/ai/queue", "retry_after": 1},
            {"status": 402, "path": "/api/ai/queue", "method": "POST"},
            {"status": 500, "path": "/api/ai/queue", "method": "POST"},
        ],
    )
    assert fault_client.get("/api/ai/models/x").status_code == 404  # another path: untouched
    first = fault_client.post("/api/ai/queue", json=request())
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert fault_client.get("/api/ai/queue").status_code == 200  # the others wait for a POST
    credits = fault_client.post("/api/ai/queue", json=request())
    assert "insufficient_credits" in problem(credits, 402, "unknown_error")
    assert fault_client.post("/api/ai/queue", json=request()).status_code == 500
    assert fault_client.post("/api/ai/queue", json=request()).status_code == 200
    assert injected(fault_client)["status"] == 3


def test_fault_reset_drops_the_connection(fault_client: httpx.Client) -> None:
    set_faults(fault_client, reset_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        fault_client.post("/api/ai/queue", json=request())
    set_faults(fault_client)
    assert every_row(fault_client) == []  # it was not acted on
    set_faults(fault_client, reset_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        fault_client.get("/api/ai/queue")
    assert injected(fault_client)["reset"] == 1


def test_fault_download_cut_keeps_the_full_length(fault_client: httpx.Client) -> None:
    (gid,) = enqueue(fault_client)
    url = wait_for(fault_client, gid)["result_url"]
    set_faults(fault_client, download_cut_rate=1.0)
    with fault_client.stream("GET", url) as response:
        length = int(response.headers["content-length"])
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert length > 0 and injected(fault_client)["download_cut"] == 1


def test_fault_sse_cut_after_ends_each_stream(fault_client: httpx.Client) -> None:
    set_faults(fault_client, sse_cut_after=2)
    for _ in range(2):
        with connect_sse(fault_client, "GET", "/api/events") as source:
            enqueue(fault_client, num_generations=3)
            assert len(list(source.iter_sse())) == 2  # the stream ends by itself
    assert injected(fault_client)["sse_cut"] == 2


def test_fault_sse_silent_keeps_the_stream_open_and_quiet(fault_client: httpx.Client) -> None:
    set_faults(fault_client, sse_silent=True)
    with connect_sse(
        fault_client, "GET", "/api/events", timeout=httpx.Timeout(5, read=0.3)
    ) as source:
        assert source.response.status_code == 200
        (gid,) = enqueue(fault_client)
        assert wait_for(fault_client, gid)["status"] == "succeeded"
        with pytest.raises(httpx.ReadTimeout):  # it completed while we listened, yet nothing comes
            next(source.iter_sse())
    assert injected(fault_client)["sse_silent"] == 1


def test_faults_endpoint(fault_client: httpx.Client, api: httpx.Client) -> None:
    bad = fault_client.post("/_faults", json={"error_rat": 1})
    assert "error_rat" in problem(bad, 400, "invalid_params")
    assert fault_client.post("/_faults", json={"error_rate": 2}).status_code == 400
    assert fault_client.get("/_faults").json()["faults"]["seed"] == 1
    assert api.get("/_faults").status_code == 404  # a server without faults has no such route


# --- life cycle, CLI, the API docs' examples ------------------------------------------------------


def test_stop_ends_open_streams_instead_of_waiting_for_them(make_server, monkeypatch) -> None:
    """With the graceful-shutdown timeout raised to a minute, a stop that waited for the open
    stream would take that minute: ending it takes well under the generous 30 s allowed here."""
    monkeypatch.setattr(embedded, "GRACEFUL_SHUTDOWN_SECONDS", 60)
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
    assert connected.wait(30)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 30
    assert ended.wait(30) and problems == []  # the stream ended cleanly, not with an error
    assert not server.running


def test_local_server_serves_on_loopback_and_rejects_bad_options() -> None:
    """(How fast it starts is a figure of benchmarks/run.py, %load_ext included.)"""
    with LocalServer() as server:
        answer = httpx.get(server.url + "/api/ai/queue", timeout=TIMEOUT)
        assert answer.status_code == 200 and answer.json()["generations"] == []
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
        assert process.wait(timeout=30) == 0  # it ends by itself: no kill needed
        assert time.monotonic() - interrupted < 30
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        process.stderr.close()


def test_api_docs_python_example_with_only_the_host_changed(make_server) -> None:
    """The quick start's steps (requests there, httpx here):
    enqueue, poll until succeeded, fetch."""
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
    deadline = time.monotonic() + 60
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


class RecordingHub:
    """An event hub with a listener always there, recording what is published, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def has_subscribers(self, owner: str) -> bool:
        return True

    def publish(self, owner: str, name: str, data: dict, *, keep: bool = True) -> None:
        self.events.append((name, data))


def test_progress_events_are_at_most_one_per_interval_first_at_step_0_none_after_the_end(
    monkeypatch,
) -> None:
    """The throttle with the clock in the test's hands (the real pipeline's steps are followed in
    tests/local_engine/test_klein_server.py)."""
    from types import SimpleNamespace

    from flux_nb.server import _store as store_module

    now = [500.0]
    monkeypatch.setattr(
        store_module, "time", SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    )
    hub = RecordingHub()
    rows = store_module.Store(hub, progress_events=True)  # type: ignore[arg-type]
    row = rows.create("me", MODEL_ID, {"prompt": "a fox"}, 1)
    assert rows.start(row, 10)
    interval = store_module.PROGRESS_INTERVAL
    for step, at in [
        (1, 0.2),
        (2, 0.4),
        (3, 1.0),
        (4, 1.2),
        (5, 2.1),
        (6, 2.1),
        (7, 3.0),
        (8, 3.2),
    ]:
        now[0] = 500.0 + at * interval
        rows.progress(row, step, 10)
    assert rows.succeed(row, f"{row.id}.png", "image/png")
    now[0] += 10 * interval
    rows.progress(row, 10, 10)  # a step the engine reports after the end
    names = [name for name, _ in hub.events]
    steps = [data["step"] for name, data in hub.events if name == store_module.PROGRESS_EVENT]
    assert steps == [0, 3, 5, 8]  # step 0 forced at start; then one per interval at most
    assert names[-1] == store_module.COMPLETED_EVENT and names.count(names[-1]) == 1
