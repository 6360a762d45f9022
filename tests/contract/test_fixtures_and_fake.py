"""The fixtures agree with the docs' field rules, our bundled schema agrees with the docs' schema,
and the fake hosted API (fake_oxen.py) answers exactly in the fixtures' shapes: so the client tests
that run against it cannot pass on a kinder API than the documented one."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from docs_shapes import (
    COMPLETED_EVENT,
    GENERATION_FIELDS,
    MODEL_ID,
    fixture_frame,
    generation_problems,
    load,
    parse_sse,
    raw,
    request_params,
)
from fake_oxen import API, CDN_HOST, KEY, FakeOxen

from flux_nb.core._recipe import bundled_schema

LIFECYCLE = ["queued", "processing", "succeeded_image", "failed", "cancelled"]


def echoed(fixture: dict) -> dict:
    return {k: v for k, v in fixture.items() if k not in GENERATION_FIELDS}


# --- the fixtures themselves ----------------------------------------------------------------------


@pytest.mark.parametrize("name", LIFECYCLE)
def test_generation_fixtures_follow_the_documented_field_rules(name):
    fixture = load(f"generation_{name}.json")
    assert generation_problems(fixture, echoed(fixture)) == []
    assert fixture["status"] == name.removesuffix("_image")


def test_the_docs_own_generation_example_differs_only_in_media_and_echoed_params():
    docs_example, ours = load("generation_succeeded.json"), load("generation_succeeded_image.json")
    assert set(docs_example) - set(GENERATION_FIELDS) == {"aspect_ratio", "duration"}
    assert set(docs_example) & set(GENERATION_FIELDS) == set(ours) & set(GENERATION_FIELDS)


def test_sse_fixtures_are_one_completed_frame_each_with_no_id_line():
    for name, keys in (
        ("sse_succeeded.txt", {"generation_id", "status", "media_type", "model", "url"}),
        ("sse_failed.txt", {"generation_id", "status", "media_type", "error"}),
    ):
        event, data = fixture_frame(name)
        assert event == COMPLETED_EVENT and set(data) == keys
        assert "\nid:" not in raw(name) and raw(name).endswith("\n\n")
    (keepalive,) = parse_sse(raw("sse_keepalive.txt"))
    assert keepalive["comments"] == ["keep-alive"] and keepalive["event"] is None


def test_the_bundled_schema_agrees_with_the_documented_request_schema():
    """flux_nb/core/schema/*.json is our offline copy of §6.3: same parameters, types, enums,
    defaults and ranges wherever the docs state them."""
    documented, bundled = load("model.json")["request_schema"], bundled_schema()
    assert bundled["required"] == documented["required"]
    assert set(bundled["properties"]) == set(documented["properties"]) == set(request_params())
    for name, doc in documented["properties"].items():
        ours = bundled["properties"][name]
        for key in ("type", "enum", "default", "minimum", "maximum"):
            if key in doc:
                assert ours.get(key) == doc[key], (name, key, ours.get(key), doc[key])
        if "items" in doc:
            assert ours["items"]["type"] == doc["items"]["type"], name


# --- the fake against the fixtures ----------------------------------------------------------------


@pytest.fixture
def fake():
    f = FakeOxen(keepalive=0.1)
    yield f
    f.close()


@pytest.fixture
def http(fake):
    with httpx.Client(
        transport=fake.transport, base_url=API, headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        yield c


def enqueue(http, **extra):
    body = {"model": MODEL_ID, "prompt": "a lighthouse on a cliff at dusk", **extra}
    answer = http.post("/api/ai/queue", json=body)
    assert answer.status_code == 200
    return answer.json(), body


def test_the_fake_enqueue_and_generation_objects_match_the_fixtures(fake, http):
    answer, body = enqueue(http, seed=42, aspect_ratio="16:9")
    assert json.dumps(sorted(answer)) == json.dumps(sorted(load("enqueue.json")))
    gid = answer["generations"][0]["generation_id"]
    assert answer["generations"][0]["status"] == "queued"
    for status in ("queued", "processing", "succeeded"):
        if status != "queued":
            fake.advance(gid, status)
        row = http.get(f"/api/ai/queue/{gid}").json()
        assert row["status"] == status
        assert generation_problems(row, body) == []
        assert set(row) == set(
            load(f"generation_{status if status != 'succeeded' else 'succeeded_image'}.json")
        )
    failed, failed_body = enqueue(http)
    fid = failed["generations"][0]["generation_id"]
    fake.advance(fid, "failed", error="Insufficient credits")
    row = http.get(f"/api/ai/queue/{fid}").json()
    assert generation_problems(row, failed_body) == [] and "seed" not in row


def test_the_fake_list_cancel_and_errors_match_the_fixtures(fake, http):
    live, _ = enqueue(http)
    done, _ = enqueue(http)
    live_id, done_id = (
        live["generations"][0]["generation_id"],
        done["generations"][0]["generation_id"],
    )
    fake.complete(done_id)
    default = http.get("/api/ai/queue").json()
    assert set(default) == set(load("queue_list.json"))
    assert [g["generation_id"] for g in default["generations"]] == [live_id] and default[
        "count"
    ] == 1
    assert [
        g["generation_id"] for g in http.get("/api/ai/queue?status=succeeded").json()["generations"]
    ] == [done_id]
    assert http.post(f"/api/ai/queue/{live_id}/cancel").status_code == 404
    cancel = http.delete(f"/api/ai/queue/{live_id}")
    assert cancel.json() == {**load("cancel.json"), "generation_id": live_id}
    assert http.delete(f"/api/ai/queue/{done_id}").status_code == 200
    assert http.get(f"/api/ai/queue/{done_id}").json()["status"] == "succeeded"
    assert http.get("/api/ai/queue/nope").json() == load("not_found.json")
    bad = http.post("/api/ai/queue", json={"model": MODEL_ID, "prompt": "x", "num_generations": 5})
    assert bad.status_code == 400
    assert bad.json()["error"]["detail"] == "num_generations must be an integer between 1 and 4"
    assert http.post("/api/ai/queue", json={"model": "bad-model-name"}).json() == load(
        "error_model_not_found.json"
    )
    no_key = httpx.Client(transport=fake.transport).get(API + "/api/ai/queue")
    assert no_key.status_code == 401 and no_key.json() == load("unauthenticated.json")
    assert http.get(f"/api/ai/models/{MODEL_ID}").json() == load("model.json")


def test_the_fake_stream_sends_documented_frames_only_to_those_connected(fake, http):
    missed, _ = enqueue(http)
    fake.complete(missed["generations"][0]["generation_id"])  # nobody connected: lost
    ok, _ = enqueue(http)
    bad, _ = enqueue(http)
    cancelled, _ = enqueue(http)
    ids = [x["generations"][0]["generation_id"] for x in (ok, bad, cancelled)]

    def later():
        fake.wait_streams()
        fake.complete(ids[0])
        fake.advance(ids[1], "failed", error="Insufficient credits")
        fake.cancel_elsewhere(ids[2])
        threading.Event().wait(0.3)  # a keep-alive or two
        fake.drop_streams()

    threading.Thread(target=later, daemon=True).start()
    with http.stream("GET", "/api/events") as response:
        assert response.headers["content-type"] == "text/event-stream"
        text = response.read().decode()
    frames = parse_sse(text)
    data = [json.loads(f["data"]) for f in frames if f["data"]]
    assert [d["generation_id"] for d in data] == ids[:2]
    assert set(data[0]) == set(fixture_frame("sse_succeeded.txt")[1])
    assert set(data[1]) == set(fixture_frame("sse_failed.txt")[1])
    assert all(f["event"] == COMPLETED_EVENT for f in frames if f["data"])
    assert any(f["comments"] == ["keep-alive"] for f in frames)
    assert all(f["id"] is None for f in frames)


def test_the_fake_result_host_refuses_the_bearer_key_and_sync_answers_match(fake, http):
    answer = http.post("/api/ai/images/generate", json={"model": MODEL_ID, "prompt": "x"})
    assert set(answer.json()) == set(load("sync_url.json"))
    url = answer.json()["images"][0]["url"]
    assert httpx.URL(url).host == CDN_HOST
    assert http.get(url).status_code == 400  # Authorization sent along: refused
    assert httpx.Client(transport=fake.transport).get(url).status_code == 200
    b64 = http.post(
        "/api/ai/images/edit",
        json={"model": MODEL_ID, "prompt": "x", "response_format": "b64_json"},
    )
    assert set(b64.json()["images"][0]) == {"b64_json"}
    empty = http.post("/api/ai/images/generate", json={"model": MODEL_ID, "prompt": ""})
    assert empty.status_code == 400 and empty.json()["error"]["detail"] == "Prompt cannot be empty"
