"""The Oxen inference API on the wire: httpx calls, retries, error mapping.
Knows nothing of notebooks.

Follows ../shared/oxen-api.md (Oxen's docs and OpenAPI spec). It reads the documented field names
first and falls back only where the docs themselves disagree (request_schema or
json_request_schema; images[0].url or image_url; enqueue status queued or processing).
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from ..core import _errors as errors
from ..core._config import HOSTED_BASE_URL, ApiKey, RetryPolicy, Timeouts, normalize_base_url
from ..core._recipe import MODEL_ID, Recipe
from ..core._status import TERMINAL

log = logging.getLogger("flux_nb.client")

QUEUE = "/api/ai/queue"
EVENTS = "/api/events"
# The one event the hosted stream sends about generations (terminal: succeeded or failed).
COMPLETED_EVENT = "media_generation_completed"
# Sent only by flux-nb's local server when asked to: step progress, for a progress bar.
PROGRESS_EVENT = "media_generation_progress"
# result_url: the generation object; url: the completion event; image_url: older sync examples.
URL_FIELDS = ("result_url", "url", "image_url")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# 429 and 503 answers to an enqueue mean it was not taken: repeating it cannot duplicate.
NOT_TAKEN_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Event:
    """One server-sent event, its data parsed as JSON when it is JSON."""

    name: str
    data: dict[str, Any]
    id: str | None = None

    @property
    def generation_id(self) -> str | None:
        value = self.data.get("generation_id") or self.data.get("id")
        return str(value) if value else None


class AmbiguousSend(errors.NetworkError):
    """The request may have reached the server but no answer came back;
    repeating it could duplicate."""


def result_url(payload: dict[str, Any]) -> str | None:
    """The output file URL of a generation object, a completion event or a sync answer."""
    for key in URL_FIELDS:
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    images = payload.get("images")
    if isinstance(images, list) and images and isinstance(images[0], dict):
        value = images[0].get("url")
        if isinstance(value, str) and value:
            return value
    return None


def unwrap_generation(payload: dict[str, Any]) -> dict[str, Any]:
    """The generation object: bare from /api/ai/queue/{id}, inside {"generation": ...} from the
    history endpoint /api/ai/generations/{id}."""
    inner = payload.get("generation")
    if isinstance(inner, dict) and "generation_id" in inner:
        return inner
    return payload


def schema_of(info: Any) -> dict[str, Any]:
    """The request_schema of a model object; ServerError when it has none."""
    schema = find_schema(info)
    if schema is None:
        raise errors.ServerError("The model description has no request_schema.")
    return schema


def find_schema(payload: Any) -> dict[str, Any] | None:
    """request_schema (the API's name), else json_request_schema (the name Oxen's model pages
    use); a bare model object, or one inside a {"data": ...} envelope."""
    if not isinstance(payload, dict):
        return None
    for key in ("request_schema", "json_request_schema"):
        schema = payload.get(key)
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError:
                schema = None
        if isinstance(schema, dict):
            return schema
    inner = payload.get("data") or payload.get("model")
    return find_schema(inner) if isinstance(inner, dict) else None


def error_detail(body: Any) -> str:
    """One line from either documented error envelope: {"error": {"type", "title", "detail"}, ...}
    or {"error": {"message"}}; the most specific text first."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        for key in ("detail", "message", "title", "type"):
            value = error.get(key)
            if isinstance(value, str) and value.strip():
                return value
    if isinstance(error, str) and error.strip():
        return error
    for key in ("detail", "message", "error_message", "status_message"):
        value = body.get(key)
        if isinstance(value, str) and value.strip() and value != "error":
            return value
    return ""


def mentions_credits(text: str) -> bool:
    return "credit" in text.lower()


def _release_stream(response: httpx.Response) -> None:
    """Drop a read response's stream. httpx's Response and its stream refer to each other, so
    each request left about 40 objects for the cyclic collector; in a kernel with 256 cards in
    flight they piled up in the oldest generation until a full collection (110-160 ms) stalled
    whatever cell ran then. The body is read already (content, num_bytes_downloaded stay)."""
    response.stream = httpx.ByteStream(b"")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _origin_text(url: str) -> str:
    """scheme://host:port of a URL, for messages (a result URL's path or query may hold a token)."""
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}" if scheme and host else "an invalid URL"


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a malformed URL has no origin, so it never gets the key
        return "", "", None
    return parts.scheme, (parts.hostname or "").lower(), port


class OxenClient:
    """Speaks the Oxen inference API. Thread-safe: one httpx.Client shared by every call."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: ApiKey | str | None = None,
        *,
        http: httpx.Client | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        model: str = MODEL_ID,
    ):
        self.base_url = normalize_base_url(base_url or HOSTED_BASE_URL)
        # A blank string means no key; a str becomes an ApiKey so it never shows in a repr.
        if isinstance(api_key, str):
            api_key = ApiKey(api_key) if api_key.strip() else None
        self._key: ApiKey | None = api_key
        self.timeouts = timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.model = model
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(
                connect=timeouts.connect,
                read=timeouts.read,
                write=timeouts.write,
                pool=timeouts.pool,
            ),
            # Plain http (the embedded loopback server) never needs TLS; https stays verified.
            transport=_LazyTLSTransport(limits),
            mounts={"http://": httpx.HTTPTransport(limits=limits, verify=False)},
            follow_redirects=True,
        )
        self._origin = _origin(self.base_url)
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"OxenClient(base_url={self.base_url!r}, key={'set' if self._key else 'none'})"

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def close(self) -> None:
        self._http.close()

    # -- plumbing -------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return urljoin(self.base_url + "/", path.lstrip("/"))

    def _headers(
        self, url: str, *, accept: str = "application/json", key: bool = True
    ) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": "flux-nb/0.1"}
        # The key goes only to the API's own origin, never to a result host or a redirect target.
        if key and self._key is not None and _origin(url) == self._origin:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return headers

    def is_api_url(self, url: str) -> bool:
        return _origin(url) == self._origin

    def redact(self, text: str) -> str:
        """Text with the API key blanked out, for anything a server wrote that we show."""
        return self._key.redact(text) if self._key is not None else text

    def _error(self, response: httpx.Response, what: str) -> errors.ApiError:
        """Map an error status to the FluxError tree with the server's own words, key redacted."""
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = error_detail(body)
        if not detail:
            detail = response.text.strip()[:200] if body is None else ""
            detail = detail or response.reason_phrase
        detail = self.redact(" ".join(detail.split()))[:300]
        status = response.status_code
        text = f"{what} failed with HTTP {status}: {detail}"
        if status in (401, 403):
            if self._key is None:
                text = f"{what} needs an API key (HTTP {status}): set OXEN_API_KEY."
            else:
                text = (
                    f"{what}: the API key was refused (HTTP {status}: {detail}); it may be mistyped"
                    f" or revoked."
                )
            return errors.AuthError(text, status=status)
        if status == 402 or mentions_credits(detail):
            return errors.CreditsError(text, status=status)
        if status == 404:
            return errors.NotFoundError(text, status=status)
        if status == 429:
            return errors.RateLimitError(text, retry_after=_retry_after(response))
        if status >= 500:
            return errors.ServerError(text, status=status)
        return errors.BadRequestError(text, status=status)

    def _request(
        self,
        method: str,
        path_or_url: str,
        *,
        what: str,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
        timeout: float | None = None,
        accept: str = "application/json",
        send_key: bool = True,
    ) -> httpx.Response:
        """Send with retries. Non-idempotent calls are repeated only when the server cannot have
        taken them (connect errors, 429/503); otherwise AmbiguousSend tells the caller to check.
        429 is repeated patiently (Retry-After honoured) within retry.rate_limit_attempts and
        retry.rate_limit_budget seconds."""
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        send = {
            "json": json_body,
            "params": params,
            "timeout": timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        }
        attempt = 0
        rate_waited = 0.0
        while True:
            attempt += 1
            last = attempt >= self.retry.attempts
            response = self._send_once(
                method, url, what, idempotent, last, accept=accept, send_key=send_key, **send
            )
            if response is None:  # it never reached the server, or may safely reach it twice
                time.sleep(self.retry.delay(attempt))
                continue
            if response.status_code < 400:
                return response
            wait = self._wait_to_repeat(response, what, attempt, last, idempotent, rate_waited)
            if response.status_code == 429:
                rate_waited += wait
            time.sleep(wait)

    def _send_once(
        self,
        method: str,
        url: str,
        what: str,
        idempotent: bool,
        last: bool,
        *,
        accept: str,
        send_key: bool,
        **send: Any,
    ) -> httpx.Response | None:
        """One attempt: the answer (its stream released), or None when the connection failed in
        a way that may be repeated; raises what may not (or, on the last attempt, what failed)."""
        try:
            self.requests_sent += 1
            response = self._http.request(
                method, url, headers=self._headers(url, accept=accept, key=send_key), **send
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            if last:
                raise errors.NetworkError(
                    f"{what}: cannot reach {_origin_text(url)} ({type(exc).__name__})."
                ) from None
            return None
        except httpx.TransportError as exc:
            if not idempotent:
                raise AmbiguousSend(
                    f"{what}: the connection broke after the request was sent"
                    f" ({type(exc).__name__})."
                ) from None
            if last:
                raise errors.NetworkError(
                    f"{what}: the connection to {_origin_text(url)} failed ({type(exc).__name__})."
                ) from None
            return None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # A bad encoding, too many redirects, a malformed URL: repeating will not help, and
            # anything but a FluxError would escape the runner's handlers and strand the job.
            if not idempotent and isinstance(exc, httpx.DecodingError):
                raise AmbiguousSend(
                    f"{what}: the answer could not be decoded ({type(exc).__name__})."
                ) from None
            raise errors.NetworkError(
                f"{what}: {type(exc).__name__} from {_origin_text(url)}."
            ) from None
        _release_stream(response)
        return response

    def _wait_to_repeat(
        self,
        response: httpx.Response,
        what: str,
        attempt: int,
        last: bool,
        idempotent: bool,
        rate_waited: float,
    ) -> float:
        """Seconds to wait before repeating a call the server answered with an error status;
        raises the error when it is not to be repeated (AmbiguousSend when the server may have
        taken a call that is not idempotent). 429 has its own, patient budget."""
        status = response.status_code
        if status == 429:
            wait = self.retry.delay(min(attempt, 6), _retry_after(response))
            left = self.retry.rate_limit_budget - rate_waited
            if left > 0 and attempt < self.retry.rate_limit_attempts:
                wait = min(wait, left)
                log.debug("%s: HTTP 429, waiting %.2fs (%.0fs of patience left)", what, wait, left)
                return wait
            raise self._error(response, what)
        retryable = status in RETRY_STATUSES and (idempotent or status in NOT_TAKEN_STATUSES)
        if retryable and not last:
            wait = self.retry.delay(attempt, _retry_after(response))
            log.debug("%s: HTTP %s, retrying in %.2fs", what, status, wait)
            return wait
        if not idempotent and status in RETRY_STATUSES - NOT_TAKEN_STATUSES:
            raise AmbiguousSend(
                f"{what}: the server answered HTTP {status} after taking the request."
            )
        raise self._error(response, what)

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise errors.ServerError(
                f"{what}: the server sent something that is not JSON"
                f" ({self.redact(response.text)[:80]!r})."
            ) from None

    # -- the documented calls -------------------------------------------------------------------

    def model_info(self, model: str | None = None) -> dict[str, Any]:
        """GET /api/ai/models/{id}: the model object (request_schema, pricing, capabilities)."""
        model = model or self.model
        what = f"Reading model {model}"
        return self._json(self._request("GET", f"/api/ai/models/{model}", what=what), what)

    def request_schema(self, model: str | None = None) -> dict[str, Any]:
        """The model's request_schema (or json_request_schema, the name Oxen's model pages use)."""
        return schema_of(self.model_info(model))

    def enqueue(
        self,
        recipe: Recipe | dict[str, Any],
        *,
        num_generations: int = 1,
        target_namespace: str | None = None,
    ) -> list[dict[str, Any]]:
        """POST /api/ai/queue: returns [{"generation_id", "status"}, ...], one per generation.

        May raise AmbiguousSend: then the server may hold the generation(s); call
        find_enqueued() before sending again."""
        if not isinstance(num_generations, int) or not 1 <= num_generations <= 4:
            raise errors.ValidationError(
                f"num_generations={num_generations!r} is out of range (allowed:"
                f" 1 to 4 per enqueue).",
                field="num_generations",
            )
        body = recipe.request() if isinstance(recipe, Recipe) else {"model": self.model, **recipe}
        body["num_generations"] = num_generations
        if target_namespace:
            body["target_namespace"] = target_namespace
        what = "Enqueueing a generation"
        data = self._json(
            self._request("POST", QUEUE, what=what, json_body=body, idempotent=False), what
        )
        rows = data.get("generations") if isinstance(data, dict) else None
        if (
            not isinstance(rows, list)
            or not rows
            or not all(isinstance(r, dict) and r.get("generation_id") for r in rows)
        ):
            detail = self.redact(" ".join(error_detail(data).split()))[:300]
            why = f": {detail}" if detail else ""
            cls = errors.CreditsError if mentions_credits(detail) else errors.ServerError
            raise cls(f"{what}: the server answered but made no generation{why}.")
        return rows

    def get_generation(self, generation_id: str) -> dict[str, Any]:
        """GET /api/ai/queue/{id}: the generation object (status, result_url, error_message, ...).
        A 404 on an id we sent means the server no longer knows it (rows used to expire)."""
        what = f"Reading generation {generation_id}"
        try:
            response = self._request("GET", f"{QUEUE}/{generation_id}", what=what)
        except errors.NotFoundError:
            raise errors.NotFoundError(
                f"Generation {generation_id} is unknown or expired on the server"
                f" ({_origin_text(self.base_url)}).",
                status=404,
            ) from None
        data = self._json(response, what)
        if not isinstance(data, dict):
            raise errors.ServerError(f"{what}: the answer is not a generation object.")
        return unwrap_generation(data)

    def list_generations(
        self, model: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """GET /api/ai/queue: the account's ACTIVE generations (queued, processing) by default, as
        the docs say; with status=..., the generations in that status, finished ones included."""
        what = "Listing generations"
        params = {"model": model or self.model}
        if status is not None:
            params["status"] = status
        data = self._json(self._request("GET", QUEUE, what=what, params=params), what)
        rows = data.get("generations") if isinstance(data, dict) else None
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def find_enqueued(self, recipe: Recipe, since: float) -> list[dict[str, Any]]:
        """Rows made from this exact recipe, enqueued since a time, oldest first, in any status:
        the active list and each terminal status (the default list shows only active rows, and a
        generation that already finished must not be sent and paid for again)."""
        found: dict[str, dict[str, Any]] = {}
        for status in (None, *TERMINAL):
            for row in self.list_generations(recipe.model, status):
                if row.get("seed") != recipe.seed or row.get("prompt") != recipe.prompt:
                    continue
                enqueued = row.get("enqueued_at")
                if isinstance(enqueued, (int, float)) and enqueued < since - 5:
                    continue
                params = recipe.params()
                if all(
                    row.get(k) == v for k, v in params.items() if k in row and k != "input_image"
                ):
                    found.setdefault(str(row.get("generation_id")), row)
        return sorted(found.values(), key=lambda r: r.get("enqueued_at") or 0)

    def cancel(self, generation_id: str) -> dict[str, Any]:
        """DELETE /api/ai/queue/{id}: {"status": "success", "generation_id"}. No event follows:
        read the row to see it cancelled (a finished row stays as it was)."""
        what = f"Cancelling generation {generation_id}"
        body = self._json(self._request("DELETE", f"{QUEUE}/{generation_id}", what=what), what)
        return body if isinstance(body, dict) else {}

    def run_sync(
        self, recipe: Recipe, *, endpoint: str = "edit", b64: bool = False
    ) -> dict[str, Any]:
        """POST /api/ai/images/edit (or generate): blocks until the image exists. Returns the
        answer with 'result_url' (response_format url) or 'image_bytes' (b64_json, decoded)."""
        what = f"Generating an image (sync {endpoint})"
        body = recipe.request()
        if b64:
            body["response_format"] = "b64_json"
        response = self._request(
            "POST",
            f"/api/ai/images/{endpoint}",
            what=what,
            json_body=body,
            idempotent=False,
            timeout=max(self.timeouts.read, 300.0),
        )
        data = self._json(response, what)
        if not isinstance(data, dict):
            raise errors.ServerError(f"{what}: the answer is not a JSON object.")
        images = data.get("images")
        first = (
            images[0] if isinstance(images, list) and images and isinstance(images[0], dict) else {}
        )
        if isinstance(first.get("b64_json"), str):
            try:
                return {**data, "image_bytes": base64.b64decode(first["b64_json"], validate=True)}
            except ValueError:
                raise errors.ServerError(f"{what}: the answer's b64_json is not base64.") from None
        url = result_url(data)
        if not url:
            raise errors.ServerError(f"{what}: the answer holds no image.")
        return {**data, "result_url": url}

    def download(self, url: str) -> bytes:
        """Fetch a result file; a short or cut body is retried, never returned.

        Result URLs are presigned: fetched without the key, as Oxen's own example does. Only a
        401/403 from the API's own origin earns one more try with the key."""
        url = url if "://" in url else self.url(url)
        what = "Downloading the result"
        send_key = False
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = self._request(
                    "GET",
                    url,
                    what=what,
                    timeout=self.timeouts.download,
                    accept="*/*",
                    send_key=send_key,
                )
            except errors.AuthError:
                if send_key or self._key is None or not self.is_api_url(url):
                    raise
                send_key = True
                continue
            expected = response.headers.get("Content-Length", "")
            got = response.num_bytes_downloaded or len(response.content)
            if not expected.isdigit() or got >= int(expected):
                return response.content
            log.debug("%s: %s of %s bytes, retrying", what, got, expected)
            time.sleep(self.retry.delay(attempt))
        raise errors.NetworkError(
            f"{what}: the file came back cut short {self.retry.attempts} times."
        )

    def events(
        self,
        last_event_id: str | None = None,
        *,
        read_timeout: float | None = None,
        on_open: Callable[[], None] | None = None,
        on_heard: Callable[[], None] | None = None,
    ) -> Iterator[Event]:
        """GET /api/events: yields events until the stream ends; raises NetworkError when it breaks.

        A read timeout (no byte, not even a keep-alive, for sse_read seconds) counts as a break.
        on_heard runs whenever bytes arrive, a `: keep-alive` comment too (events are not the only
        sign of a live stream: a proxy that holds the stream back sends no comment either)."""
        url = self.url(EVENTS)
        headers = {**self._headers(url), "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(
            connect=self.timeouts.connect,
            read=read_timeout or self.timeouts.sse_read,
            write=self.timeouts.write,
            pool=self.timeouts.pool,
        )
        try:
            self.requests_sent += 1
            with connect_sse(self._http, "GET", url, headers=headers, timeout=timeout) as source:
                response = source.response
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response, "Opening the event stream")
                if on_open is not None:
                    on_open()
                if on_heard is not None:
                    response.stream = _Heard(response.stream, on_heard)
                for sse in source.iter_sse():
                    yield _parse_event(sse)
        except httpx.TransportError as exc:
            raise errors.NetworkError(f"The event stream broke ({type(exc).__name__}).") from None


class _Heard(httpx.SyncByteStream):
    """A response body that reports each chunk as it arrives, before it is parsed."""

    def __init__(self, inner: Any, on_chunk: Callable[[], None]):
        self._inner, self._on_chunk = inner, on_chunk

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            if chunk:
                self._on_chunk()
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _LazyTLSTransport(httpx.BaseTransport):
    """A verified HTTPS transport made on first use: loading the CA certificates costs about
    100 ms, which %load_ext should not pay on the embedded default (plain http on loopback)."""

    def __init__(self, limits: httpx.Limits):
        self._limits = limits
        self._inner: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            with self._lock:
                if self._inner is None:
                    self._inner = httpx.HTTPTransport(limits=self._limits)
        return self._inner.handle_request(request)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def _parse_event(sse: ServerSentEvent) -> Event:
    try:
        data = json.loads(sse.data) if sse.data else {}
    except ValueError:
        data = {"text": sse.data}
    if not isinstance(data, dict):
        data = {"value": data}
    return Event(name=sse.event or "message", data=data, id=sse.id or None)
