"""The key kept, the local server hardened: against the real local server over loopback HTTP.

What tests/test_server.py already checks is not repeated here (the token check on every route,
'../' and '%2F' in file names, the body cap, malformed JSON, unreadable input images); this file
adds what it does not: the key through a whole run and every way it could leak, the binding,
more encodings of '../', input-image caps, and the bodies that used to crash the server.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import secrets
import socket
from pathlib import Path

import httpx
import ipywidgets as widgets
import pytest
from helpers import body, data_uri, every_row, png_bytes, wait_for
from PIL import Image
from recording_server import RecordingServer

from flux_nb.api._client import OxenClient
from flux_nb.core import _errors as errors
from flux_nb.core._config import ApiKey, RetryPolicy, Settings
from flux_nb.core._recipe import MODEL_ID, Recipe
from flux_nb.files._journal import LIVE_DIR
from flux_nb.files._metadata import read_recipe
from flux_nb.files._storage import OutputFolder
from flux_nb.jobs._sessions import JOURNAL_NAME, Session
from flux_nb.notebook._cards import Card, generation_mimebundle, status_line
from flux_nb.server import Faults, Limits, LocalServer
from flux_nb.server._app import LocalExtras
from flux_nb.server._inputs import InputLimits

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)
QUEUE = "/api/ai/queue"
TERMINAL = {"succeeded", "failed", "cancelled"}


def raw(url: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (httpx would normalise paths and refuse odd headers)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


def error_line(response: httpx.Response) -> str:
    """The one line of either documented error envelope (asserting it is one of them):
    {"error": {"type", "title", "detail"?}, "status": "error", "status_message"} or
    {"error": {"message"}} (unknown model)."""
    assert response.headers["content-type"] == "application/json"
    return error_line_of(response.json())


def error_line_of(body: dict) -> str:
    error = body["error"]
    if set(body) == {"error"}:
        assert set(error) == {"message"}, body
        return error["message"]
    assert body["status"] == "error" and body["status_message"] == error["type"], body
    assert error["title"], body
    return error.get("detail") or error["title"]


def noise_png() -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), secrets.token_bytes(64 * 64 * 3)).save(buffer, "PNG")
    return buffer.getvalue()


# --- the API key ----------------------------------------------------------------------------------


def test_the_key_never_leaks_through_a_whole_run(make_server, tmp_path, caplog) -> None:
    """A run with a key where servers quote the key back in 401, 403, 404, 422 and 500 bodies:
    the key appears in no log line, journal, image file, repr, message, widget state or output."""
    key = "sk-leakcheck-" + secrets.token_hex(16)
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore and uvicorn included
    server = make_server(api_key=key, faults=Faults(seed=1), step_delay=0.005)
    control = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"})
    echo = {"echo_auth": True}

    def force(*entries: dict) -> None:
        assert control.post("/_faults", json={"status_queue": list(entries)}).status_code == 200

    out = tmp_path / "out"
    session = Session(
        base_url=server.url,
        api_key=key,
        output_dir=out,
        settings=Settings(),
        announce=None,
        retry=FAST,
    )
    texts: list[str] = []
    try:
        # Downloads answered 500 twice (retried), quoting the key.
        force({"status": 500, "path": "/api/files/", "times": 2, **echo})
        good = session.generate("a key in the vault", n=2, seed=1, num_inference_steps=3)
        for gen in good:
            gen.wait(10)
        force({"status": 401, "path": QUEUE, "method": "POST", **echo})
        refused = session.generate("refused", seed=2, num_inference_steps=2)
        with pytest.raises(errors.GenerationFailed) as refused_error:
            refused.wait(10)
        assert "401" in refused.reason
        force({"status": 404, "path": "/api/files/", "times": 3, **echo})
        lost = session.generate("lost", seed=3, num_inference_steps=2)
        with pytest.raises(errors.GenerationFailed, match="could not be downloaded") as lost_error:
            lost.wait(10)
        texts += [str(refused_error.value), str(lost_error.value)]
        gid = good[0].id
        for forced, call in (
            ({"status": 401, "path": "/api/ai/models/", **echo}, session.client.model_info),
            (
                {"status": 403, "path": f"{QUEUE}/", **echo},
                lambda: session.client.get_generation(gid),
            ),
            (
                {"status": 500, "path": f"{QUEUE}/", "times": 3, **echo},
                lambda: session.client.get_generation(gid),
            ),
            (
                {"status": 422, "path": "/api/ai/images/", **echo},
                lambda: session.client.run_sync(good[0].recipe),
            ),
            (
                {"status": 500, "path": QUEUE, "method": "GET", "times": 3, **echo},
                session.client.list_generations,
            ),
        ):
            force(forced)
            with pytest.raises(errors.ApiError) as info:
                call()
            texts += [str(info.value), repr(info.value), info.value.message]
        assert "You sent Authorization" in texts[-1]  # the server did quote it, and it was cut out
        force()

        gens = [*good, refused, lost]
        texts += [repr(session), repr(session.client), repr(session.runner), repr(session.output)]
        texts += [
            repr(Settings(api_key=ApiKey(key))),
            str(ApiKey(key)),
            repr(session.journal.entries()),
        ]
        for gen in gens:
            texts += [repr(gen), repr(gen.recipe), str(gen.error), gen.reason, status_line(gen)]
            texts += [json.dumps(generation_mimebundle(gen, widget=True))]
            Card(gen)
        state = widgets.Widget.get_manager_state(drop_defaults=False)
        texts.append(json.dumps(state, default=str))
        for path in out.rglob("*"):  # images with their metadata, the journal, the lock files
            if not path.is_file():
                continue
            data = path.read_bytes()
            texts.append(data.decode("latin-1"))
            if path.suffix == ".png":
                texts.append(json.dumps(read_recipe(path)))
        texts += [caplog.text] + [r.getMessage() for r in caplog.records]
        texts += [r.exc_text or "" for r in caplog.records]
    finally:
        session.close()
        control.close()
    assert len(list(out.glob("*.png"))) == 2 and caplog.records  # the run did happen and log
    assert (out / JOURNAL_NAME).is_file() and list((out / LIVE_DIR).iterdir()) == []  # released
    leaks = [text for text in texts if key in text]
    assert leaks == []
    with pytest.raises(TypeError):
        pickle.dumps(session.client._key)


def test_a_non_json_answer_quoting_the_key_is_redacted() -> None:
    key = "sk-echo-" + secrets.token_hex(8)
    with RecordingServer() as api:
        api.echo = True
        client = OxenClient(api.url, key, retry=FAST)
        with pytest.raises(errors.ServerError, match="not JSON") as info:
            client.list_generations()
        client.close()
    assert api.seen("authorization") == [f"Bearer {key}"]  # it was sent, and quoted back
    assert key not in str(info.value) and "you sent Bearer ***" in str(info.value)


def test_the_key_comes_from_the_environment_and_stays_hidden() -> None:
    key = "sk-env-" + secrets.token_hex(8)
    settings = Settings.from_env({"OXEN_API_KEY": f"  {key}\n"})
    assert settings.api_key.reveal() == key and not settings.wants_local
    assert key not in repr(settings) and key not in str(settings.api_key)
    client = OxenClient("http://127.0.0.1:9", settings.api_key)
    assert key not in repr(client) and key not in repr(vars(client))


# --- the local server: binding, paths, caps, content ----------------------------------------------


def test_the_local_server_listens_on_loopback_only(local_server: LocalServer) -> None:
    assert local_server.url.startswith("http://127.0.0.1:")
    port = local_server.port
    with pytest.raises(ConnectionRefusedError):  # 127.0.0.2 is loopback too, but not bound
        socket.create_connection(("127.0.0.2", port), timeout=2).close()
    listening = socket.create_connection(("127.0.0.1", port), timeout=2)
    assert listening.getpeername()[0] == "127.0.0.1"
    listening.close()
    from flux_nb.cli import build_parser

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


@pytest.mark.parametrize("spill", [False, True], ids=["in memory", "on disk"])
def test_encoded_path_traversal_in_result_paths_is_refused(make_server, spill: bool) -> None:
    server = make_server(limits=Limits(results_in_memory_bytes=1 if spill else 2**28))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        ids = [
            g["generation_id"]
            for g in client.post(QUEUE, json=body(num_generations=3)).json()["generations"]
        ]
        rows = {gid: wait_for(client, gid) for gid in ids}
    kept = {gid: server.runtime.results.get(f"{gid}.png") for gid in ids}
    gid = next(
        gid for gid in ids if isinstance(kept[gid], Path) == spill
    )  # the oldest went to disk
    row = rows[gid]
    for path in (
        "/api/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/api/files/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/files/.%2e/.%2e/etc/passwd",
        "/api/files/..%5c..%5c..%5cetc%5cpasswd",
        "/api/files/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
        "/api/files/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "/api/files/%2fetc%2fpasswd",
        "/api/files//etc/passwd",
        f"/api/files/{gid}.png%00.txt",
        f"/api/files/{gid}.png/",
        f"/api/files/..%2f{gid}.png",
        f"/api/files/%2e%2e%2f{Path(str(server.runtime.results._dir or 'x')).name}%2f{gid}.png",
        f"/api/files/{gid}%2fpng",
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        status, answer = raw(server.url, request)
        assert status in (400, 404), path
        assert error_line_of(json.loads(answer)), path
        assert b"root:" not in answer
    assert (
        raw(
            server.url,
            f"GET /api/files/{gid}.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )[0]
        == 200
    )
    assert row["result_url"].endswith(f"/api/files/{gid}.png")


def test_a_hostile_generation_id_cannot_steer_where_the_client_saves(tmp_path) -> None:
    folder = OutputFolder(tmp_path / "out")
    recipe = Recipe.build("x", seed=1, num_inference_steps=1)
    for evil in ("../../../escaped", "/etc/passwd-x", "..\\..\\escaped", "a/../../b"):
        path = folder.save(png_bytes(color=0), recipe, evil, {})
        assert path.parent == folder.path and path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_input_images_are_capped_by_bytes_count_and_pixels(make_server) -> None:
    server = make_server(limits=Limits(inputs=InputLimits(max_bytes=20_000, max_images=2)))
    big = data_uri(png_bytes((400, 400), 0) + b"\0" * 30_000)
    bomb = data_uri(png_bytes((8000, 8000), 0, "1"))  # 64 megapixels in a few kilobytes
    with httpx.Client(base_url=server.url, timeout=10) as client:
        fine = client.post(QUEUE, json=body(input_image=[data_uri(png_bytes(color=0))])).json()
        too_big = client.post(QUEUE, json=body(input_image=[big])).json()
        too_many = client.post(
            QUEUE, json=body(input_image=[data_uri(png_bytes(color=0))] * 3)
        ).json()
        rows = [
            wait_for(client, r["generations"][0]["generation_id"])
            for r in (fine, too_big, too_many)
        ]
        assert rows[0]["status"] == "succeeded"
        assert rows[1]["status"] == "failed" and "over 20000 bytes" in rows[1]["error_message"]
        assert rows[2]["status"] == "failed" and "at most 2" in rows[2]["error_message"]
        source = client.post(QUEUE, json=body(output_format="webp", aspect_ratio="1:1")).json()
        url = wait_for(client, source["generations"][0]["generation_id"])["result_url"]
        fetched = client.post(QUEUE, json=body(input_image=[url])).json()  # a 1:1 webp, ~80 kB
        row = wait_for(client, fetched["generations"][0]["generation_id"])
        assert row["status"] == "failed" and "over 20000 bytes" in row["error_message"]
    with httpx.Client(base_url=make_server().url, timeout=10) as client:  # default caps
        sync = client.post("/api/ai/images/edit", json=body(input_image=[bomb]))
        assert sync.status_code == 500 and "over the cap of 40000000" in error_line(sync)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        (
            data_uri(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
            "not in an image format",
        ),
        (data_uri(b"<html><script>alert(1)</script></html>"), "not in an image format"),
        (data_uri(noise_png()[:3000]), "truncated"),  # cut mid-way through its pixels
    ],
)
def test_input_image_content_is_validated(api: httpx.Client, uri: str, words: str) -> None:
    row = wait_for(
        api, api.post(QUEUE, json=body(input_image=[uri])).json()["generations"][0]["generation_id"]
    )
    assert row["status"] == "failed" and words in row["error_message"]


# --- bad input: a 4xx with a JSON body, never a 500, and the server unharmed ----------------------

M = MODEL_ID.encode()


@pytest.mark.parametrize("path", [QUEUE, "/api/ai/images/generate"])
@pytest.mark.parametrize(
    "content",
    [
        b'"a string"',
        b"null",
        b"true",
        b"1",
        b"",
        b"   ",
        b"[" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"model": "%s", "prompt": "x", "guidance_scale": 1e400}' % M,
        b'{"model": "%s", "prompt": "x", "seed": -1e999}' % M,
        b'{"model": "%s", "prompt": "\\ud800 lone surrogate"}' % M,
        b'{"model": "%s", "prompt": "x", "\\udfff": 1}' % M,
        b'{"model": "%s", "prompt": "x", "seed": %s}' % (M, b"9" * 5000),
        b'{"model": "%s", "prompt": "\xc3\x28 invalid utf-8"}' % M,
        b'{"model": 5, "prompt": "x"}',
        b'{"model": {"nested": [1, 2]}, "prompt": "x"}',
        b'{"model": "%s", "prompt": "%s"}' % (M, b"y" * 50_000),
        b'{"model": "%s", "prompt": "x", "num_generations": "4"}' % M,
        b'{"model": "%s", "prompt": "x", "unknown_field": 1, "another": 2}' % M,
    ],
    ids=lambda c: repr(c[:36]) if isinstance(c, bytes) else c,
)
def test_bad_bodies_get_a_json_4xx_and_the_server_stays_well(
    api: httpx.Client, path: str, content: bytes
) -> None:
    response = api.post(path, content=content, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    assert error_line(response)
    assert every_row(api) == []  # nothing stored, and nothing that breaks the listing


def test_wrong_types_in_the_queue_fail_the_generation_not_the_server(api: httpx.Client) -> None:
    """The queue validates late (as the hosted one does): each of these is taken, then fails
    with a reason; the rows stay readable."""
    cases = [
        {"prompt": 5},
        {"prompt": ["a", "list"]},
        {"seed": "seven"},
        {"seed": 10**40},
        {"guidance_scale": [1]},
        {"num_inference_steps": 2.5},
        {"input_image": "not-a-list"},
        {"input_image": [{"url": "x"}]},
        {"aspect_ratio": None, "output_format": {"x": 1}},
        {"target_namespace": 7},
    ]
    ids = []
    for params in cases:
        response = api.post(QUEUE, json=body(**params))
        if response.status_code == 200:
            ids.append(response.json()["generations"][0]["generation_id"])
        else:
            assert 400 <= response.status_code < 500 and error_line(response)
    rows = [wait_for(api, gid) for gid in ids]
    assert rows and all(r["status"] == "failed" and r["error_message"] for r in rows[:-1])
    assert sorted(r["generation_id"] for r in every_row(api)) == sorted(ids)  # all listable


@pytest.mark.parametrize("value", [b"\xb2", b"1" * 5000, b"-5", b"12abc", b"\xff\xfe"], ids=repr)
def test_odd_last_event_ids_are_ignored_not_a_crash(make_server, value: bytes) -> None:
    """Only a server with the local replay flag reads the header at all; it must not trip on it."""
    server = make_server(extras=LocalExtras(replay_events=True))
    request = (
        b"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer odd-ids\r\n"
        b"Last-Event-ID: " + value + b"\r\n\r\n"
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head


def test_odd_paths_queries_and_headers_get_json_4xx(local_server: LocalServer) -> None:
    for request in (
        b"GET /api/ai/queue/%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/ai/queue?model=%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/ai/queue/" + b"a" * 6000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/ai/models/%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/ai/queue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xc3\r\n"
        b"Connection: close\r\n\r\n",
        b"POST /api/ai/queue HTTP/1.1\r\n"
        b"Host: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}}",
    ):
        status, answer = raw(local_server.url, request)
        assert status < 500, request[:60]
        if status >= 400:
            assert error_line_of(json.loads(answer)), request[:60]


def test_a_failure_message_that_quotes_the_key_is_redacted(make_server, tmp_path):
    """A server may quote a request's values, the key among them,
    in a generation's error_message."""
    from flux_nb.core._config import Settings
    from flux_nb.core._recipe import Recipe
    from flux_nb.jobs._sessions import Session

    key = "sk-echoed-in-failure-0123456789"
    server = make_server(api_key=key)
    session = Session(
        api_key=key, base_url=server.url, output_dir=tmp_path, settings=Settings(), announce=None
    )
    # Sent past the client's validation, so the server fails it and quotes the bad value.
    row = session.client.enqueue({"prompt": "x", "seed": 1, "aspect_ratio": key})[0]
    gen = session.runner.adopt(Recipe.build("x", seed=1), "k1", row["generation_id"])
    with pytest.raises(errors.GenerationFailed) as info:
        gen.wait(10)
    assert "aspect_ratio" in gen.reason and "***" in gen.reason
    assert key not in str(info.value) and key not in gen.reason and key not in repr(gen)
    session.close()


def test_https_is_verified_even_though_plain_http_skips_loading_certificates():
    """The client skips the CA bundle for plain http (loopback); https keeps full verification."""
    import ssl

    import httpx

    from flux_nb.api._client import OxenClient

    client = OxenClient("https://hub.oxen.ai", "sk-x", retry=RetryPolicy(attempts=1))
    with pytest.raises(errors.NetworkError):
        client.download(
            "https://127.0.0.1:9/result.png"
        )  # nothing listens: only builds the TLS side
    tls = client._http._transport_for_url(httpx.URL("https://hub.oxen.ai/x"))._inner
    context = tls._pool._ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
