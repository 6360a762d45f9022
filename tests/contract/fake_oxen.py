"""A stateful fake of Oxen's HOSTED inference API, as an httpx.MockTransport handler.

It serves the shapes of fixtures/ and the documented behaviour (../shared/oxen-api.md, section
numbers below), never a kinder one:
- base https://hub.oxen.ai; every request needs `Authorization: Bearer <key>` (401 envelope, §8);
- POST /api/ai/queue validates only model, num_generations (1-4) and auth (§3.1); model params
  are not checked (a bad one fails the generation when it runs);
- GET /api/ai/queue shows active rows only unless status= is given (§3.4);
- DELETE /api/ai/queue/{id} is the only cancel (§3.6); it leaves terminal rows as they are and
  sends no event; POST .../cancel is an unknown route (404);
- GET /api/events is one account-wide stream: `event: media_generation_completed` frames only,
  for succeeded/failed, no `id:` lines, `: keep-alive` comments when idle, no buffering: an event
  that fires while no stream is connected is lost (§4);
- result URLs are presigned on another host (a CDN) that refuses requests carrying an
  Authorization header, as S3-style presigned URLs do (§9: Oxen's example downloads with none);
- sync /api/ai/images/generate and /edit answer {"model","created","images":[{"url"}|{"b64_json"}]}
  (§5.3); /edit takes prompt-only bodies (the Klein page sends them).

Test controls: advance(), cancel_elsewhere(), forget(), ambiguous_enqueue(), hold_enqueue(),
empty_enqueue(), force(), revoke_key(), drop_streams(), emit_raw(), and the record of every
request (`requests`) and every frame sent (`frames_sent`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from docs_shapes import ACTIVE, COMPLETED_EVENT, MODEL_ID, STATUSES, TERMINAL, load

API = "https://hub.oxen.ai"
API_HOST = "hub.oxen.ai"
CDN = "https://storage.example-cdn.test"
CDN_HOST = "storage.example-cdn.test"
KEY = "test-key"
NOT_ECHOED = frozenset(
    {"model", "num_generations", "target_namespace", "target_repo", "target_directory"}
)
TITLES = {
    "invalid_params": "Invalid parameters supplied, please check your request and try again.",
    "resource_not_found": "The requested resource could not be found",
    "unauthenticated": "unauthenticated",
}


def envelope(
    error_type: str, detail: str | None = None, title: str | None = None
) -> dict[str, Any]:
    """The typed error envelope of §5.4."""
    error: dict[str, Any] = {
        "type": error_type,
        "title": title or TITLES.get(error_type, error_type),
    }
    if detail is not None:
        error["detail"] = detail
    return {"error": error, "status": "error", "status_message": error_type}


def png_bytes(seed: str, size: int = 16) -> bytes:
    """A small real PNG, its colour drawn from `seed`, so every result is a different image."""
    from PIL import Image

    digest = hashlib.sha256(seed.encode()).digest()
    buf = io.BytesIO()
    Image.new("RGB", (size, size), tuple(digest[:3])).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    url: httpx.URL
    headers: dict[str, str]
    body: bytes
    t: float = field(default_factory=time.monotonic)

    @property
    def host(self) -> str:
        return self.url.host

    @property
    def path(self) -> str:
        return self.url.path

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Forced:
    status: int
    method: str | None
    path: str | None
    times: int | None
    retry_after: str | None
    body: Any


class _EventStream(httpx.SyncByteStream):
    """The body of one GET /api/events: blocks on its queue, sends keep-alives when idle."""

    def __init__(self, fake: FakeOxen, q: queue.Queue):
        self._fake, self._q = fake, q

    def __iter__(self):
        while True:
            try:
                item = self._q.get(timeout=self._fake.keepalive)
            except queue.Empty:
                yield b": keep-alive\n\n"
                continue
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        self._fake._unsubscribe(self._q)


class FakeOxen:
    """The hosted API in memory. `transport` goes into httpx.Client(transport=...)."""

    def __init__(self, api_key: str = KEY, *, keepalive: float = 15.0):
        self.api_keys = {api_key}
        self.keepalive = keepalive
        self.requests: list[Seen] = []
        self.frames_sent: list[
            tuple[str, dict[str, Any] | None]
        ] = []  # (raw frame, data) per frame
        self.sync_response_format: str | None = None  # see _sync()
        self.last_sync_image: bytes | None = None
        self.transport = httpx.MockTransport(self.handle)
        self._rows: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._files: dict[str, bytes] = {}
        self._sigs: dict[str, str] = {}
        self._streams: list[queue.Queue] = []
        self._forced: list[Forced] = []
        self._ambiguous: list[str | None] = []
        self._empty = 0
        self._hold: threading.Event | None = None
        self._held = threading.Event()
        self._cond = threading.Condition()
        self._closed = False
        self.model = load("model.json")

    # -- test controls ---------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Generation ids in the order they were created."""
        with self._cond:
            return list(self._order)

    def row(self, generation_id: str) -> dict[str, Any]:
        with self._cond:
            return dict(self._rows[generation_id])

    def wait_rows(self, n: int = 1, timeout: float = 30.0) -> list[str]:
        """Block until at least n generations exist; their ids, oldest first."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._order) >= n, timeout):
                raise AssertionError(
                    f"the fake holds {len(self._order)} generation(s), not {n}, after {timeout} s"
                )
            return list(self._order)

    def wait_streams(self, n: int = 1, timeout: float = 30.0) -> None:
        """Block until at least n event streams are connected."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._streams) >= n, timeout):
                raise AssertionError(
                    f"{len(self._streams)} event stream(s) connected after {timeout} s, wanted {n}"
                )

    @property
    def streams(self) -> int:
        with self._cond:
            return len(self._streams)

    def advance(self, generation_id: str, status: str, error: str | None = None) -> None:
        """Move a row on as the hosted worker would, and publish what the docs say it publishes:
        a media_generation_completed frame for succeeded/failed (§4), nothing otherwise."""
        assert status in STATUSES, status
        now = int(time.time())
        with self._cond:
            row = self._rows[generation_id]
            if row["status"] in TERMINAL:
                raise AssertionError(f"{generation_id} is already {row['status']}")
            row["status"] = status
            if status != "queued" and row["started_at"] is None and status != "cancelled":
                row["started_at"] = now
            if status in TERMINAL:
                row["completed_at"] = now
            data: dict[str, Any] | None = None
            if status == "succeeded":
                url = self._store_result(generation_id)
                row["result_url"] = url
                data = {
                    "generation_id": generation_id,
                    "status": "succeeded",
                    "media_type": row["media_type"],
                    "model": row["model_name"],
                    "url": url,
                }
            elif status == "failed":
                row["error_message"] = error or "Insufficient credits"
                data = {
                    "generation_id": generation_id,
                    "status": "failed",
                    "media_type": row["media_type"],
                    "error": row["error_message"],
                }
            self._cond.notify_all()
        if data is not None:
            self._publish(data)

    def complete(self, generation_id: str) -> None:
        """queued -> processing -> succeeded."""
        if self.row(generation_id)["status"] == "queued":
            self.advance(generation_id, "processing")
        self.advance(generation_id, "succeeded")

    def cancel_elsewhere(self, generation_id: str) -> None:
        """A DELETE from the web UI or another kernel: the row turns cancelled, no event (§3.6)."""
        with self._cond:
            self._cancel(self._rows[generation_id])

    def forget(self, generation_id: str) -> None:
        """The row is gone on the server (expired, another account): 404 from now on."""
        with self._cond:
            self._rows.pop(generation_id, None)

    def result_bytes(self, generation_id: str) -> bytes:
        return self._files[generation_id]

    def ambiguous_enqueue(self, times: int = 1, then: str | None = None) -> None:
        """The next `times` enqueues are taken (rows made; with then='succeeded' they also finish)
        but the connection drops before the answer: the handler raises RemoteProtocolError."""
        self._ambiguous.extend([then] * times)

    def hold_enqueue(self) -> None:
        """The next enqueue is taken, then its answer never comes (until release(): then the
        connection drops). `held` is set once the rows exist."""
        self._hold = threading.Event()

    def release(self) -> None:
        if self._hold is not None:
            self._hold.set()

    @property
    def held(self) -> threading.Event:
        return self._held

    def empty_enqueue(self, times: int = 1) -> None:
        """The next enqueues answer 200 {"generations": []} (seen by third parties, §3.1)."""
        self._empty += times

    def force(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = 1,
        retry_after: str | None = None,
        body: Any = None,
    ) -> None:
        """The next `times` matching API requests (None: all) answer `status` with its envelope.
        `path` matches as a prefix."""
        self._forced.append(Forced(status, method, path, times, retry_after, body))

    def revoke_key(self) -> None:
        """Every key stops working (revoked in the account): 401s, and open streams end."""
        self.api_keys = set()
        self.drop_streams()

    def drop_streams(self) -> None:
        """End every connected event stream cleanly (a server restart, a proxy timeout)."""
        with self._cond:
            for q in self._streams:
                q.put(None)

    def break_streams(self) -> None:
        """Cut every connected event stream mid-body (the client sees a ReadError)."""
        with self._cond:
            for q in self._streams:
                q.put(httpx.ReadError("the fake cut the event stream"))

    def emit_raw(self, frame: str) -> None:
        """Send an arbitrary frame (say, another event type) to every connected stream."""
        self._send(frame, None)

    def seen(
        self, method: str | None = None, path: str | None = None, host: str | None = None
    ) -> list[Seen]:
        """Requests received so far, filtered (path as a prefix)."""
        return [
            r
            for r in list(self.requests)
            if (method is None or r.method == method)
            and (path is None or r.path.startswith(path))
            and (host is None or r.host == host)
        ]

    def export_rows(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(self._rows[i]) for i in self._order if i in self._rows]

    def import_rows(self, rows: list[dict[str, Any]]) -> None:
        """Rows made by another process's fake (a kernel that died mid-request)."""
        with self._cond:
            for row in rows:
                self._rows[row["generation_id"]] = dict(row)
                self._order.append(row["generation_id"])
            self._cond.notify_all()

    def close(self) -> None:
        """End streams and held requests, so no client thread stays blocked in here."""
        self._closed = True
        self.release()
        self.drop_streams()

    # -- the handler -----------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.requests.append(Seen(request.method, request.url, dict(request.headers), body))
        if request.url.host == CDN_HOST:
            return self._cdn(request)
        if request.url.host != API_HOST or request.url.scheme != "https":
            raise httpx.ConnectError(
                f"the fake knows no host {request.url.host!r}", request=request
            )
        forced = self._take_forced(request)
        if forced is not None:
            return forced
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.api_keys:
            return httpx.Response(401, json=load("unauthenticated.json"))
        path, method = request.url.path, request.method
        if path == "/api/ai/queue":
            if method == "POST":
                return self._enqueue(request, body)
            if method == "GET":
                return self._list(request)
        elif path.startswith("/api/ai/queue/") and path.count("/") == 4:
            gid = path.rsplit("/", 1)[1]
            if method == "GET":
                return self._get(gid)
            if method == "DELETE":
                return self._delete(gid)
        elif path == "/api/events" and method == "GET":
            return self._events()
        elif path.startswith("/api/ai/models/") and path.count("/") == 4 and method == "GET":
            return self._model(path.rsplit("/", 1)[1])
        elif path in ("/api/ai/images/generate", "/api/ai/images/edit") and method == "POST":
            return self._sync(body)
        return httpx.Response(404, json=load("not_found.json"))

    def _take_forced(self, request: httpx.Request) -> httpx.Response | None:
        with self._cond:
            for forced in self._forced:
                if forced.method not in (None, request.method):
                    continue
                if forced.path is not None and not request.url.path.startswith(forced.path):
                    continue
                if forced.times is not None:
                    forced.times -= 1
                    if forced.times <= 0:
                        self._forced.remove(forced)
                break
            else:
                return None
        headers = {"Retry-After": forced.retry_after} if forced.retry_after is not None else {}
        body = forced.body
        if body is None:
            body = {
                400: envelope("invalid_params", "Specific error details"),
                401: load("unauthenticated.json"),
                # 403 and 429: the docs show no body (§8, §12.2); the typed envelope is a guess.
                403: envelope("forbidden", title="Forbidden"),
                404: load("not_found.json"),
                429: envelope("rate_limited", title="Rate limit exceeded"),
            }.get(forced.status, envelope("unknown_error", title="An unknown error occurred"))
        return httpx.Response(forced.status, json=body, headers=headers)

    def _json_body(self, body: bytes) -> dict[str, Any] | httpx.Response:
        try:
            data = json.loads(body)
        except ValueError:
            return httpx.Response(400, json=envelope("invalid_params", "Invalid JSON body"))
        if not isinstance(data, dict):
            return httpx.Response(400, json=envelope("invalid_params", "Invalid JSON body"))
        return data

    def _check_model(self, data: dict[str, Any]) -> httpx.Response | None:
        model = data.get("model")
        if not model:
            return httpx.Response(400, json=envelope("invalid_params", "model is required"))
        if model != MODEL_ID:
            # §5.4's second envelope with §3.1's text; the HTTP code is not documented (OAS: 400).
            return httpx.Response(400, json={"error": {"message": f"Model not found: {model}"}})
        return None

    def _enqueue(self, request: httpx.Request, body: bytes) -> httpx.Response:
        data = self._json_body(body)
        if isinstance(data, httpx.Response):
            return data
        if (bad := self._check_model(data)) is not None:
            return bad
        n = data.get("num_generations", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 4:
            return httpx.Response(
                400,
                json=envelope(
                    "invalid_params", "num_generations must be an integer between 1 and 4"
                ),
            )
        if self._empty:
            self._empty -= 1
            return httpx.Response(200, json={"generations": []})
        ids = [self._create(data) for _ in range(n)]
        if self._ambiguous:
            then = self._ambiguous.pop(0)
            if then == "succeeded":
                for gid in ids:
                    self.complete(gid)
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if self._hold is not None:
            hold, self._hold = self._hold, None
            self._held.set()
            hold.wait()
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx.Response(
            200, json={"generations": [{"generation_id": i, "status": "queued"} for i in ids]}
        )

    def _create(self, data: dict[str, Any]) -> str:
        gid = str(uuid.uuid4())
        row: dict[str, Any] = {
            "generation_id": gid,
            "model_name": data["model"],
            "prompt": data.get("prompt"),
            "media_type": "image",
            "status": "queued",
            "result_url": None,
            "error_message": None,
            "enqueued_at": int(time.time()),
            "started_at": None,
            "completed_at": None,
            "target_namespace": data.get("target_namespace"),
            "target_repo": data.get("target_repo"),
            "target_directory": data.get("target_directory"),
        }
        # §3.3: the request's parameters echoed at top level, only those that were sent
        row.update({k: v for k, v in data.items() if k not in NOT_ECHOED and k not in row})
        with self._cond:
            self._rows[gid] = row
            self._order.append(gid)
            self._cond.notify_all()
        return gid

    def _list(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        status = params.get("status")
        if status is not None and status not in STATUSES:
            return httpx.Response(400, json=envelope("invalid_params", f"invalid status: {status}"))
        media_type = params.get("media_type")
        if media_type is not None and media_type not in ("image", "video"):
            return httpx.Response(
                400, json=envelope("invalid_params", f"invalid media_type: {media_type}")
            )
        filters = {
            "model_name": params.get("model"),
            "media_type": media_type,
            "target_repo": params.get("repo"),
            "target_directory": params.get("folder"),
        }
        with self._cond:
            rows = [dict(self._rows[i]) for i in reversed(self._order) if i in self._rows]
        rows = [r for r in rows if (r["status"] == status if status else r["status"] in ACTIVE)]
        rows = [r for r in rows if all(v is None or r[k] == v for k, v in filters.items())]
        return httpx.Response(200, json={"count": len(rows), "generations": rows})

    def _get(self, gid: str) -> httpx.Response:
        with self._cond:
            row = self._rows.get(gid)
            row = dict(row) if row is not None else None
        if row is None:
            return httpx.Response(404, json=load("not_found.json"))
        return httpx.Response(200, json=row)

    def _cancel(self, row: dict[str, Any]) -> None:
        if row["status"] in ACTIVE:
            row["status"] = "cancelled"
            row["completed_at"] = int(time.time())
            self._cond.notify_all()

    def _delete(self, gid: str) -> httpx.Response:
        with self._cond:
            row = self._rows.get(gid)
            if row is None:
                return httpx.Response(404, json=load("not_found.json"))
            # terminal rows: no effect (§3.6); the code for that is a guess (200)
            self._cancel(row)
        return httpx.Response(200, json={"status": "success", "generation_id": gid})

    def _events(self) -> httpx.Response:
        q: queue.Queue = queue.Queue()
        with self._cond:
            if self._closed:
                q.put(None)
            self._streams.append(q)
            self._cond.notify_all()
        return httpx.Response(
            200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            stream=_EventStream(self, q),
        )

    def _unsubscribe(self, q: queue.Queue) -> None:
        with self._cond:
            if q in self._streams:
                self._streams.remove(q)
            self._cond.notify_all()

    def _publish(self, data: dict[str, Any]) -> None:
        frame = f"event: {COMPLETED_EVENT}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        self._send(frame, data)

    def _send(self, frame: str, data: dict[str, Any] | None) -> None:
        with self._cond:
            self.frames_sent.append((frame, data))
            for q in self._streams:  # no buffering: nobody connected, nobody gets it
                q.put(frame.encode())

    def _model(self, model_id: str) -> httpx.Response:
        if model_id != MODEL_ID:
            return httpx.Response(404, json={"error": {"message": f"Model not found: {model_id}"}})
        return httpx.Response(200, json=self.model)

    def _sync(self, body: bytes) -> httpx.Response:
        """§5: validates at once. `sync_response_format` set makes it answer in that format even
        when the request did not ask (to pin a client's decoding of the b64_json shape)."""
        data = self._json_body(body)
        if isinstance(data, httpx.Response):
            return data
        if (bad := self._check_model(data)) is not None:
            return bad
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return httpx.Response(400, json=envelope("invalid_params", "Prompt cannot be empty"))
        fmt = self.sync_response_format or data.get("response_format") or "url"
        name = "sync-" + uuid.uuid4().hex
        self.last_sync_image = self._image(name)
        image = (
            {"b64_json": base64.b64encode(self._image(name)).decode()}
            if fmt == "b64_json"
            else {"url": self._store_result(name)}
        )
        return httpx.Response(
            200, json={"model": data["model"], "created": int(time.time()), "images": [image]}
        )

    # -- the CDN ---------------------------------------------------------------------------------

    def _image(self, name: str) -> bytes:
        if name not in self._files:
            self._files[name] = png_bytes(name)
        return self._files[name]

    def _store_result(self, name: str) -> str:
        self._image(name)
        sig = self._sigs.setdefault(name, uuid.uuid4().hex)
        return f"{CDN}/results/{name}.png?X-Amz-Expires=3600&sig={sig}"

    def _cdn(self, request: httpx.Request) -> httpx.Response:
        """Presigned URLs: the signature is the credential; a second one (a Bearer header) is
        refused as S3 refuses it, and the request never reaches the file."""
        if "authorization" in request.headers:
            return httpx.Response(
                400,
                text=(
                    "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism"
                    " allowed</Message></Error>"
                ),
                headers={"Content-Type": "application/xml"},
            )
        path = request.url.path
        name = path.removeprefix("/results/").removesuffix(".png")
        if not path.startswith("/results/") or name not in self._files or request.method != "GET":
            return httpx.Response(404, text="<Error><Code>NoSuchKey</Code></Error>")
        if request.url.params.get("sig") != self._sigs.get(name):
            return httpx.Response(403, text="<Error><Code>AccessDenied</Code></Error>")
        data = self._files[name]
        return httpx.Response(
            200,
            content=data,
            headers={"Content-Type": "image/png", "Content-Length": str(len(data))},
        )
