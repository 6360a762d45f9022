"""The documented shapes, read from the hand-made fixtures,
and checks that compare an answer to them.

Used by the fake (to build answers), by the client tests and by the stand-in tests, so that all of
them are held to one reading of the docs: fixtures/README.md says where each file comes from.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
MODEL_ID = "black-forest-labs-flux-2-klein-4b"

# §3.3: the generation object's fields (docs table + OAS target_*);
# request params are echoed on top.
GENERATION_FIELDS = (
    "generation_id",
    "model_name",
    "prompt",
    "media_type",
    "status",
    "result_url",
    "error_message",
    "enqueued_at",
    "started_at",
    "completed_at",
    "target_namespace",
    "target_repo",
    "target_directory",
)
OAS_REQUIRED = ("generation_id", "model_name", "media_type", "status", "enqueued_at")
STATUSES = ("queued", "processing", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "processing")
TERMINAL = ("succeeded", "failed", "cancelled")
MEDIA_TYPES = ("image", "video")
COMPLETED_EVENT = "media_generation_completed"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# OAS Model.endpoint enum (§6.1)
MODEL_ENDPOINTS = ("/chat/completions", "/images/generate", "/videos/generate")


@cache
def _text(name: str) -> str:
    return (FIXTURES / name).read_text("utf-8")


def load(name: str) -> Any:
    """A JSON fixture, freshly parsed (callers may change it)."""
    return json.loads(_text(name))


def raw(name: str) -> str:
    return _text(name)


def request_params() -> tuple[str, ...]:
    """The Klein 4B request parameters, from the model fixture's request_schema (§6.3)."""
    return tuple(load("model.json")["request_schema"]["properties"])


# --- SSE ------------------------------------------------------------------------------------------


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Split an SSE byte stream (decoded) into frames:
    {"event", "data", "id", "comments", "fields"}.

    Follows the rules Oxen's examples use (§4): a blank line ends a frame, ':' lines are comments.
    """
    frames, current = [], {"event": None, "data": [], "id": None, "comments": [], "fields": []}
    for line in text.replace("\r\n", "\n").split("\n"):
        if line == "":
            if current["data"] or current["event"] or current["comments"] or current["id"]:
                frames.append(current)
            current = {"event": None, "data": [], "id": None, "comments": [], "fields": []}
            continue
        if line.startswith(":"):
            current["comments"].append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        current["fields"].append(name)
        if name == "event":
            current["event"] = value
        elif name == "data":
            current["data"].append(value)
        elif name == "id":
            current["id"] = value
    for frame in frames:
        frame["data"] = "\n".join(frame["data"])
    return frames


def fixture_frame(name: str) -> tuple[str, dict[str, Any]]:
    """(event name, data object) of a one-frame SSE fixture."""
    (frame,) = parse_sse(raw(name))
    return frame["event"], json.loads(frame["data"])


# --- generation objects ---------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def generation_problems(obj: Any, sent: dict[str, Any] | None = None) -> list[str]:
    """What in `obj` differs from the documented generation object (§3.3); [] when it conforms.

    `sent`: the request body it was made from; its model parameters must be echoed as sent, and
    no other request parameter may appear (seed only if one was sent)."""
    if not isinstance(obj, dict):
        return [f"not an object: {obj!r}"]
    problems = []
    sent = dict(sent or {})
    params = set(request_params())
    echoed = {k for k in sent if k in params and k != "prompt"}
    missing = [k for k in GENERATION_FIELDS if k not in obj]
    if missing:
        problems.append(f"missing fields {missing}")
    extra = sorted(set(obj) - set(GENERATION_FIELDS) - echoed)
    if extra:
        problems.append(f"fields the docs do not have (or params not sent): {extra}")
    if not (isinstance(obj.get("generation_id"), str) and UUID.fullmatch(obj["generation_id"])):
        problems.append(f"generation_id is not a uuid: {obj.get('generation_id')!r}")
    if not isinstance(obj.get("model_name"), str):
        problems.append(f"model_name is not a string: {obj.get('model_name')!r}")
    if obj.get("media_type") not in MEDIA_TYPES:
        problems.append(f"media_type not in {MEDIA_TYPES}: {obj.get('media_type')!r}")
    status = obj.get("status")
    if status not in STATUSES:
        problems.append(f"status not in {STATUSES}: {status!r}")
    if not is_int(obj.get("enqueued_at")):
        problems.append(f"enqueued_at is not integer unix seconds: {obj.get('enqueued_at')!r}")
    for key in ("started_at", "completed_at"):
        if obj.get(key) is not None and not is_int(obj[key]):
            problems.append(f"{key} is not integer unix seconds or null: {obj[key]!r}")
    if status in TERMINAL and obj.get("completed_at") is None:
        problems.append(f"{status} but completed_at is null")
    if status in ACTIVE and obj.get("completed_at") is not None:
        problems.append(f"{status} but completed_at is set")
    if status == "processing" and obj.get("started_at") is None:
        problems.append("processing but started_at is null")
    url = obj.get("result_url")
    if status == "succeeded" and not (
        isinstance(url, str) and url.startswith(("http://", "https://"))
    ):
        problems.append(f"succeeded without an absolute result_url: {url!r}")
    if status != "succeeded" and url is not None:
        problems.append(f"{status} with a result_url: {url!r}")
    message = obj.get("error_message")
    if status == "failed" and not (isinstance(message, str) and message):
        problems.append(f"failed without an error_message: {message!r}")
    if status in ("queued", "processing", "succeeded") and message is not None:
        problems.append(f"{status} with an error_message: {message!r}")
    for key in ("target_namespace", "target_repo", "target_directory"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            problems.append(f"{key} is neither a string nor null: {obj[key]!r}")
    if "prompt" in sent and obj.get("prompt") != sent["prompt"]:
        problems.append(f"prompt not echoed: {obj.get('prompt')!r} != {sent['prompt']!r}")
    for key in echoed:
        if obj.get(key) != sent[key]:
            problems.append(f"{key} not echoed as sent: {obj.get(key)!r} != {sent[key]!r}")
    return problems


def kind(value: Any) -> str:
    """JSON kind of a value: null, bool, int, number, string, array, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def same_kind(expected: Any, got: Any) -> bool:
    """Kinds agree; null on either side is allowed (nullable fields), int fits number."""
    a, b = kind(expected), kind(got)
    return a == b or "null" in (a, b) or {a, b} == {"int", "number"}
