"""A server a team shares: a key per person, private generations, fair turns, fetches kept off the
private network. Against the real local server over loopback HTTP, and the real `flux-nb` CLI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from helpers import STATUSES, body, png_bytes, wait_for
from httpx_sse import connect_sse
from recording_server import RecordingServer

from flux_nb.cli import main as cli
from flux_nb.server import Limits, LocalServer
from flux_nb.server._fetch import GuardedBackend, GuardedTransport, refusal

QUEUE = "/api/ai/queue"
TERMINAL = {"succeeded", "failed", "cancelled"}
DEADLINE = 30.0


def add_key(path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli(["keys", "add", name, "--keys-file", str(path)]) == 0
    return capsys.readouterr().out.splitlines()[-1]


def client(server: LocalServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url or "", headers=headers, timeout=DEADLINE)


def enqueue(api: httpx.Client, **params: object) -> list[str]:
    answer = api.post(QUEUE, json=body(**params))
    assert answer.status_code == 200, answer.text
    return [g["generation_id"] for g in answer.json()["generations"]]


def every_id(api: httpx.Client) -> set[str]:
    """Every generation id the caller's list shows, whatever the status."""
    found: set[str] = set()
    for status in (None, *STATUSES):
        listing = api.get(QUEUE, params={"status": status} if status else {})
        assert listing.status_code == 200
        found |= {g["generation_id"] for g in listing.json()["generations"]}
    return found


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


# --- 1. a key per person --------------------------------------------------------------------------


def test_keys_add_prints_the_key_once_alone_on_the_last_line_and_keeps_only_its_hash(
    keys_file: Path,
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flux_nb", "keys", *args, "--keys-file", str(keys_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    added = run("add", "alice")
    assert added.returncode == 0, added.stderr
    key = added.stdout.splitlines()[-1]
    assert key.startswith("fnb_") and len(key) >= 40 and " " not in key
    assert added.stdout.count(key) == 1 and key not in added.stderr
    stored = keys_file.read_text()
    assert key not in stored and key[4:] not in stored
    assert json.loads(stored)["keys"][0] == {
        "name": "alice",
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "added": json.loads(stored)["keys"][0]["added"],
    }
    assert keys_file.stat().st_mode & 0o077 == 0  # readable by its owner only

    assert run("add", "bob").returncode == 0
    again = run("add", "alice")
    assert again.returncode == 1 and "already has a key" in again.stderr
    listed = run("list")
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["alice", "bob"]
    assert key not in listed.stdout
    assert run("remove", "alice").returncode == 0
    assert run("list").stdout.splitlines()[0].startswith("bob\t")
    missing = run("remove", "alice")
    assert (
        missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no key" in missing.stderr
    )
    bad = run("add", "../etc")
    assert bad.returncode == 1 and "not a usable name" in bad.stderr


def test_a_removed_key_is_refused_without_a_restart_and_the_others_keep_working(
    make_server, keys_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = add_key(keys_file, "alice", capsys), add_key(keys_file, "bob", capsys)
    server = make_server(keys_file=keys_file)
    with client(server, alice) as a, client(server, bob) as b, client(server, None) as nobody:
        assert wait_for(a, enqueue(a)[0])["status"] == "succeeded"
        assert nobody.get(QUEUE).status_code == 401
        stream_ended = threading.Event()

        def listen() -> None:  # alice's open event stream ends too once her key is gone
            with client(server, alice) as listener:
                with connect_sse(listener, "GET", "/api/events") as events:
                    opened.set()
                    for _ in events.iter_sse():
                        pass
            stream_ended.set()

        opened = threading.Event()
        threading.Thread(target=listen, daemon=True).start()
        assert opened.wait(DEADLINE)
        assert cli(["keys", "remove", "alice", "--keys-file", str(keys_file)]) == 0
        deadline = time.monotonic() + DEADLINE  # the file is re-read at the next request
        while a.get(QUEUE).status_code != 401:
            assert time.monotonic() < deadline, "the removed key is still accepted"
            time.sleep(0.05)
        assert a.post(QUEUE, json=body()).status_code == 401
        assert stream_ended.wait(DEADLINE)
        assert b.get(QUEUE).status_code == 200
        carol = add_key(keys_file, "carol", capsys)  # a key added while it runs works at once
        with client(server, carol) as c:
            assert wait_for(c, enqueue(c)[0])["status"] == "succeeded"


def test_idle_streams_stat_the_keys_file_once_a_second_and_requests_at_once(
    keys_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open streams ask still_accepts every second: one stat a second for all of them, the hash
    they already hold; a request still sees a removed key at once (name_of)."""
    from types import SimpleNamespace

    from flux_nb.server import _keys as keys

    alice = add_key(keys_file, "alice", capsys)
    now = [100.0]
    monkeypatch.setattr(keys, "time", SimpleNamespace(monotonic=lambda: now[0], time=time.time))
    ring = keys.KeyRing(keys_file=keys_file)
    owner = keys.digest(alice)
    assert ring.still_accepts(alice, owner, 1.0) and ring.name_of(alice, owner) == "alice"
    assert cli(["keys", "remove", "alice", "--keys-file", str(keys_file)]) == 0
    now[0] = 100.5  # the file was stat()ed by name_of at 100.0: not again yet
    assert ring.still_accepts(alice, owner, 1.0)
    now[0] = 101.5
    assert not ring.still_accepts(alice, owner, 1.0)
    assert ring.name_of(alice) is None


def test_the_shared_api_key_still_works_beside_a_keys_file(
    make_server, keys_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = add_key(keys_file, "alice", capsys)
    server = make_server(keys_file=keys_file, api_key="shared-" + "x" * 20)
    for key in (alice, "shared-" + "x" * 20):
        with client(server, key) as api:
            assert wait_for(api, enqueue(api)[0])["status"] == "succeeded"
    with client(server, "shared-" + "y" * 20) as wrong:
        assert wrong.get(QUEUE).status_code == 401


def test_a_broken_or_missing_keys_file_is_one_line_at_start(make_server, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no keys file at .*flux-nb keys add"):
        make_server(keys_file=tmp_path / "none.json")
    broken = tmp_path / "broken.json"
    broken.write_text("alice: fnb_plain_key\n")
    with pytest.raises(ValueError, match="is not a flux-nb keys file"):
        make_server(keys_file=broken)


def test_logs_name_the_person_and_never_the_key(
    make_server, keys_file: Path, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    alice = add_key(keys_file, "alice", capsys)
    server = make_server(keys_file=keys_file)
    with caplog.at_level(logging.INFO, logger="flux_nb.server"):
        with client(server, alice) as a:
            (gid,) = enqueue(a)
            a.delete(f"{QUEUE}/{gid}")
        with client(server, alice + "x") as wrong:
            assert wrong.get(QUEUE).status_code == 401
        assert cli(["keys", "remove", "alice", "--keys-file", str(keys_file)]) == 0
        with client(server, alice) as a:
            assert a.get(QUEUE).status_code == 401
    text = caplog.text
    assert f"alice enqueued {gid}" in text and f"alice cancelled {gid}" in text
    assert "refused a request from 127.0.0.1: wrong key" in text
    assert "keys file re-read: 0 people have keys" in text
    assert alice not in text and alice[4:20] not in text


def test_serve_cli_warns_about_plain_http_keys_off_loopback_and_serves_tls(
    keys_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = add_key(keys_file, "alice", capsys)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    def serve(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "flux_nb", "serve", "--port", "0", "--keys-file",
             str(keys_file), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    plain = serve("--host", "0.0.0.0")
    try:
        assert "http://0.0.0.0:" in (plain.stdout.readline() if plain.stdout else "")
    finally:
        plain.terminate()
        _, err = plain.communicate(timeout=30)
    assert "keys are accepted over plain HTTP" in err and "--ssl-certfile" in err
    assert alice not in err

    tls = serve("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    try:
        line = tls.stdout.readline() if tls.stdout else ""
        url = line.split(" on ")[1].split(",")[0]
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, verify=trust, timeout=DEADLINE) as api:
            api.headers["Authorization"] = f"Bearer {alice}"
            row = wait_for(api, enqueue(api)[0])
            assert row["status"] == "succeeded" and row["result_url"].startswith("https://")
            assert api.get(row["result_url"], headers={"Authorization": ""}).status_code == 200
        with pytest.raises(httpx.HTTPError):  # not spoken in plain HTTP
            httpx.get(url.replace("https", "http") + QUEUE, timeout=10)
    finally:
        tls.terminate()
        _, err = tls.communicate(timeout=30)
    assert "plain HTTP" not in err


def test_half_a_tls_pair_or_unusable_files_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    assert cli(["serve", "--port", "0", "--ssl-certfile", str(tmp_path / "c.pem")]) == 2
    assert capsys.readouterr().err == (
        "flux-nb serve: give both --ssl-certfile and --ssl-keyfile for HTTPS.\n"
    )
    (tmp_path / "c.pem").write_text("not a certificate")
    for cert in ("missing.pem", "c.pem"):
        args = ["--ssl-certfile", str(tmp_path / cert), "--ssl-keyfile", str(tmp_path / "c.pem")]
        assert cli(["serve", "--port", "0", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("flux-nb serve: cannot use --ssl-certfile") and err.count("\n") == 1


# --- 2. private by owner --------------------------------------------------------------------------


def test_a_second_person_cannot_read_cancel_list_or_stream_the_first_ones_generations(
    make_server, keys_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = add_key(keys_file, "alice", capsys), add_key(keys_file, "bob", capsys)
    server = make_server(keys_file=keys_file, step_delay=0.02)
    with client(server, alice) as a, client(server, bob) as b:
        unknown = b.get(f"{QUEUE}/{uuid.uuid4()}")
        with connect_sse(b, "GET", "/api/events") as bob_events:
            (running,) = enqueue(a, num_inference_steps=50)
            (done,) = enqueue(a)
            theirs = wait_for(a, done)
            for gid in (running, done):
                seen = b.get(f"{QUEUE}/{gid}")
                assert (seen.status_code, seen.json()) == (404, unknown.json())
                cancelled = b.delete(f"{QUEUE}/{gid}")
                assert (cancelled.status_code, cancelled.json()) == (404, unknown.json())
            assert a.get(f"{QUEUE}/{running}").json()["status"] in ("queued", "processing")
            assert every_id(b) == set()
            assert {running, done} <= every_id(a)
            (own,) = enqueue(b)  # bob's stream: his own event comes, alice's never did
            first = next(bob_events.iter_sse())
            assert json.loads(first.data)["generation_id"] == own
        a.delete(f"{QUEUE}/{running}")
        # The result URL needs no key (presigned-style): its name is a version 4 UUID, 122
        # random bits from the OS's generator.
        name = theirs["result_url"].rsplit("/", 1)[1].split(".")[0]
        assert uuid.UUID(name).version == 4 and name == done
        assert httpx.get(theirs["result_url"], timeout=DEADLINE).status_code == 200


# --- 3. fair turns --------------------------------------------------------------------------------


class HeldPicture:
    """A loopback server whose GET answers a PNG only once released: it holds a worker busy."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked = threading.Semaphore(0)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.asked.release()
                owner.release.wait(DEADLINE)
                data = png_bytes((16, 16), (10, 200, 30))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/held.png"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def held() -> Iterator[HeldPicture]:
    picture = HeldPicture()
    yield picture
    picture.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_one_persons_single_image_waits_behind_at_most_the_running_ones_of_a_long_batch(
    make_server, held: HeldPicture, workers: int
) -> None:
    """Alice's first `workers` generations hold every worker (their input picture is held back);
    then she queues 30 more and Bob one. Bob's runs as soon as a worker is free."""
    server = make_server(workers=workers, allow_private_urls=True)
    with client(server, "alice-key") as a, client(server, "bob-key") as b:
        blockers = [enqueue(a, input_image=[held.url])[0] for _ in range(workers)]
        for _ in range(workers):
            assert held.asked.acquire(timeout=DEADLINE)  # every worker is busy now
        batch = [gid for _ in range(8) for gid in enqueue(a, num_generations=4)][:30]
        (single,) = enqueue(b)
        held.release.set()
        rows = {gid: wait_for(a, gid) for gid in blockers + batch}
        assert wait_for(b, single)["status"] == "succeeded"
    store = server.runtime.store
    start = {gid: store.get(gid).started_mono for gid in [*blockers, *batch, single]}
    # Bob's image was taken by the first worker to come free, ahead of all of Alice's 30 queued:
    # it waited only for the ones already running.
    assert [gid for gid in batch if start[gid] < start[single]] == []
    assert all(start[gid] < start[single] for gid in blockers)
    assert all(r["status"] == "succeeded" for r in rows.values())


def test_the_per_key_cap_answers_429_with_retry_after_and_takes_nothing(
    make_server, held: HeldPicture
) -> None:
    server = make_server(workers=1, allow_private_urls=True, limits=Limits(max_queued_per_key=5))
    with client(server, "alice-key") as a, client(server, "bob-key") as b:
        enqueue(a, input_image=[held.url])  # runs (held): it no longer waits
        assert held.asked.acquire(timeout=DEADLINE)
        enqueue(a, num_generations=4)
        full = a.post(QUEUE, json=body(num_generations=2))
        assert full.status_code == 429 and full.headers["Retry-After"] == "30"
        assert full.json()["error"]["type"] == "rate_limited"
        assert "at most 5 per key" in full.json()["error"]["detail"]
        assert len(every_id(a)) == 5  # the refused request took nothing
        (last,) = enqueue(a)  # exactly up to the cap
        assert a.post(QUEUE, json=body()).status_code == 429
        assert len(enqueue(b, num_generations=4)) == 4  # another key has its own room
        a.delete(f"{QUEUE}/{last}")  # a cancelled one frees its place
        assert len(enqueue(a)) == 1
        held.release.set()


# --- 4. fetches kept off the private network ------------------------------------------------------


class Probe:
    """Loopback listeners (IPv4 and IPv6, one port) that record any connection at all."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self._socks = [socket.create_server(("127.0.0.1", 0))]
        self.port = self._socks[0].getsockname()[1]
        try:
            self._socks.append(socket.create_server(("::1", self.port), family=socket.AF_INET6))
        except OSError:
            pass  # no IPv6 loopback here: the IPv6 spellings are still refused before connecting
        for sock in self._socks:
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            self.hits.append(str(peer))
            conn.close()

    def close(self) -> None:
        for sock in self._socks:
            sock.close()


SPELLINGS = [  # (host as written in the URL, the kind the refusal names)
    ("localhost", "loopback"),
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("0x7f.0.0.1", "loopback"),
    ("0177.0.0.1", "not valid"),  # httpx refuses an octal dotted quad itself
    ("0.0.0.0", "unspecified"),
    ("[::1]", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:7f00:1]", "loopback"),
    ("[64:ff9b::7f00:1]", "loopback"),
    ("[2002:7f00:1::]", "loopback"),
    ("[::]", "unspecified"),
    ("169.254.169.254", "link-local"),
    ("[fe80::1]", "link-local"),
    ("10.0.0.1", "private"),
    ("192.168.1.1", "private"),
    ("172.16.0.1", "private"),
    ("[fd00:ec2::254]", "private"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"),
]


def test_every_spelling_of_a_private_address_is_refused_before_any_connection(
    make_server,
) -> None:
    server = make_server()
    probe = Probe()
    try:
        with client(server, "alice-key") as a:
            ids = {
                host: enqueue(a, input_image=[f"http://{host}:{probe.port}/x.png"])[0]
                for host, _ in SPELLINGS
            }
            for host, kind in SPELLINGS:
                row = wait_for(a, ids[host])
                message = row["error_message"]
                assert row["status"] == "failed" and "\n" not in message, (host, row)
                assert message.startswith("input_image[0] was not fetched: its "), message
                assert kind in message, (host, message)
            sync = a.post(
                "/api/ai/images/edit",
                json=body(input_image=[f"http://127.1:{probe.port}/x.png"]),
            )
            assert sync.status_code == 500 and "was not fetched" in sync.json()["error"]["detail"]
    finally:
        probe.close()
    assert probe.hits == []


def test_a_redirect_to_a_private_address_is_refused_and_the_checked_address_is_dialled() -> None:
    """127.0.0.1 plays a public host here (the policy allows it alone); it redirects to
    127.0.0.2, which must see nothing. A name only the test's resolver knows shows that the
    connection goes to the address that was checked, with no second lookup."""
    allowed = {"127.0.0.1"}

    def refuse(ip):  # type: ignore[no-untyped-def]
        return None if str(ip) in allowed else refusal(ip)

    def resolver(host: str, port: int):  # type: ignore[no-untyped-def]
        import ipaddress

        name = {"public.test": "127.0.0.1", "rebound.test": "127.0.0.2"}.get(host, host)
        return [ipaddress.ip_address(name)]

    backend = GuardedBackend(resolver=resolver, refuse=refuse)
    with RecordingServer("127.0.0.1") as public, RecordingServer("127.0.0.2") as private:
        fetch = httpx.Client(transport=GuardedTransport(backend=backend), follow_redirects=True)
        port = public.url.rsplit(":", 1)[1]
        ok = fetch.get(f"http://public.test:{port}/hello")
        assert ok.text == "ok" and public.requests[-1][2]["host"] == f"public.test:{port}"
        for target in (private.url + "/x", "http://rebound.test:" + private.url.rsplit(":")[-1]):
            with pytest.raises(Exception, match="is a loopback address"):
                fetch.get(f"{public.url}/redirect", params={"to": target})
        assert private.requests == []
        fetch.close()


def test_allow_private_urls_lifts_the_check_and_own_urls_need_no_fetch(make_server) -> None:
    with RecordingServer("127.0.0.2") as other:
        trusted = make_server(allow_private_urls=True)
        guarded = make_server()
        with client(trusted, "k") as t, client(guarded, "k") as g:
            # On a trusted network the fetch happens (the recording server answers "ok": not
            # an image, but it was reached).
            row = wait_for(t, enqueue(t, input_image=[other.url + "/x.png"])[0])
            assert "not a readable image" in row["error_message"] and len(other.requests) == 1
            # The server's own results and the docs' example picture: read here, no fetch, even
            # though the server itself is on loopback.
            source = wait_for(g, enqueue(g)[0])["result_url"]
            docs = guarded.url + "/api/repos/elau/assets/file/main/bloxy/bloxy_cropped_512x512.png"
            for url in (source, docs):
                assert wait_for(g, enqueue(g, input_image=[url])[0])["status"] == "succeeded"
            missing = wait_for(
                g, enqueue(g, input_image=[guarded.url + "/api/files/nothing.png"])[0]
            )
            assert "fetching it gave HTTP 404" in missing["error_message"]


# --- load -----------------------------------------------------------------------------------------

KEYS, CLIENTS_PER_KEY, PER_CLIENT = 3, 4, 50


def test_three_keys_times_four_clients_times_fifty_generations_at_once(make_server) -> None:
    """Every generation ends once, every stream sees exactly its key's completions, no list
    shows another key's row, and results stay within their memory budget (the rest on disk)."""
    budget = 2 * 1024 * 1024
    server = make_server(workers=4, limits=Limits(results_in_memory_bytes=budget))
    made: dict[str, list[str]] = {f"key-{k}": [] for k in range(KEYS)}
    seen: list[tuple[str, list[str]]] = []  # (key, completed ids) per stream
    errors: list[BaseException] = []
    lock = threading.Lock()
    started = threading.Barrier(KEYS * CLIENTS_PER_KEY)

    def one_client(key: str) -> None:
        try:
            with client(server, key) as api, connect_sse(api, "GET", "/api/events") as events:
                started.wait(DEADLINE)  # every stream is open before anyone enqueues
                mine = [enqueue(api, seed=i, aspect_ratio="1:1")[0] for i in range(PER_CLIENT)]
                with lock:
                    made[key] += mine
                expected = CLIENTS_PER_KEY * PER_CLIENT  # every client of this key
                got: list[str] = []
                for event in events.iter_sse():
                    got.append(json.loads(event.data)["generation_id"])
                    if len(got) == expected:
                        break
                with lock:
                    seen.append((key, got))
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [
        threading.Thread(target=one_client, args=(key,), name=f"{key}-{c}")
        for key in made
        for c in range(CLIENTS_PER_KEY)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(seen) == KEYS * CLIENTS_PER_KEY
    for key, got in seen:
        assert sorted(got) == sorted(made[key])  # each of its key's, once; nobody else's
    for key, ids in made.items():
        with client(server, key) as api:
            assert len(set(ids)) == CLIENTS_PER_KEY * PER_CLIENT
            assert every_id(api) == set(ids)
            done = api.get(QUEUE, params={"status": "succeeded"}).json()["generations"]
            assert len(done) == len(ids)
    assert server.runtime.results.memory_bytes <= budget


# --- 6. every field Oxen's OpenAPI document gives the implemented operations ---------------------


def documented_fields(operation: str) -> set[str]:
    """The request body's properties for an operation of Oxen's OpenAPI document (0.243.1)."""
    document = json.loads(OPENAPI.read_text())
    path, method = operation.split(" ")[1], operation.split(" ")[0].lower()
    ref = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return set(document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]["properties"])


OPENAPI = Path(__file__).parent / "fixtures" / "oxen-hub-openapi-0.243.1.json"


@pytest.mark.parametrize(
    "operation",
    ["POST /api/ai/queue", "POST /api/ai/images/generate", "POST /api/ai/images/edit"],
)
def test_no_documented_field_is_refused_as_unknown(local_server, operation: str) -> None:
    path = operation.split(" ")[1]
    with client(local_server, "fields") as api:
        for name in sorted(documented_fields(operation) - {"model", "prompt"}):
            answer = api.post(path, json={**body(), name: None})  # null: the field's absence
            text = answer.text
            assert "unknown field" not in text, (operation, name, text)
            assert answer.status_code == 200, (operation, name, text)


def test_sync_n_gives_that_many_images_and_image_is_the_first_input(local_server) -> None:
    with client(local_server, "fields") as api:
        three = api.post("/api/ai/images/generate", json=body(n=3, seed=5)).json()["images"]
        assert len(three) == 3 and len({httpx.get(i["url"]).content for i in three}) == 3
        docs = local_server.url + "/api/repos/elau/assets/file/main/bloxy/bloxy_cropped_512x512.png"
        edit = api.post(
            "/api/ai/images/edit", json=body(image=docs, n=2, response_format="b64_json")
        )
        assert edit.status_code == 200 and len(edit.json()["images"]) == 2
        for bad_n in (0, 5, "2", 1.5):
            answer = api.post("/api/ai/images/generate", json=body(n=bad_n))
            assert answer.status_code == 400
            assert answer.json()["error"]["detail"] == "n must be an integer between 1 and 4"


@pytest.mark.parametrize(
    ("path", "field", "value", "words"),
    [
        ("/api/ai/images/generate", "size", "1024x1024", "size is not a parameter of FLUX.2"),
        ("/api/ai/images/edit", "size", "512x512", "send aspect_ratio instead"),
        ("/api/ai/images/edit", "mask", "https://example.com/m.png", "mask cannot be used by"),
        ("/api/ai/images/edit", "image", 7, "image must be a URL string"),
        ("/api/ai/queue", "duration", 5, "duration is for video models"),
    ],
)
def test_documented_fields_this_model_cannot_use_are_refused_with_why(
    local_server, path: str, field: str, value: object, words: str
) -> None:
    with client(local_server, "fields") as api:
        answer = api.post(path, json=body(**{field: value}))
        assert answer.status_code == 400
        error = answer.json()
        assert error["status"] == "error" and error["error"]["type"] == "invalid_params"
        assert words in error["error"]["detail"] and "\n" not in error["error"]["detail"]
