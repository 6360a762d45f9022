"""Small helpers many test files share, written once: images made in memory, data: URIs, pixel
comparison, and the raw API calls of tests that speak HTTP to a server themselves. The shared
fixtures (servers, sessions, clients) are in conftest.py; the fault tests' own are in
fault_helpers.py."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image, ImageChops

from flux_nb.core._recipe import MODEL_ID

QUEUE = "/api/ai/queue"
TERMINAL = {"succeeded", "failed", "cancelled"}
STATUSES = ("queued", "processing", "succeeded", "failed", "cancelled")
# The bearer key of the conftest's keyed_server: tests check it never shows up anywhere.
SERVER_KEY = "sk-secret-do-not-leak-4f1c9a"


def png_bytes(
    size: tuple[int, int] = (32, 24),
    color: tuple[int, int, int] | int | str = (200, 30, 30),
    mode: str = "RGB",
) -> bytes:
    """A plain one-colour PNG, the input image a person would upload."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _opened(image: Image.Image | str | Path) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    with Image.open(image) as opened:
        opened.load()
        return opened


def pixels_equal(a: Image.Image | str | Path, b: Image.Image | str | Path) -> bool:
    """The same size and the same RGB pixels (images or paths of image files)."""
    x, y = _opened(a), _opened(b)
    return (
        x.size == y.size
        and ImageChops.difference(x.convert("RGB"), y.convert("RGB")).getbbox() is None
    )


def pixels(path: str | Path) -> bytes:
    """An image file's RGB pixels, to compare files whatever their encoding."""
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def body(**params: object) -> dict[str, object]:
    """A small queue request body; keywords add or replace fields."""
    return {"model": MODEL_ID, "prompt": "a red fox", "num_inference_steps": 2, **params}


def wait_for(
    client: httpx.Client, generation_id: str, until: set[str] = TERMINAL, timeout: float = 60
) -> dict:
    """Poll the generation (what the API docs do) until its status is in `until`."""
    deadline = time.monotonic() + timeout
    while True:
        row = client.get(f"{QUEUE}/{generation_id}").json()
        if row["status"] in until:
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.005)


def every_row(client: httpx.Client, **params: object) -> list[dict]:
    """Every row the caller can list, whatever its status (the plain list shows active ones only);
    once each, the latest seen, though a row may move on between the requests."""
    rows: dict[str, dict] = {}
    for status in STATUSES:
        response = client.get(QUEUE, params={"status": status, **params})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["count"] == len(answer["generations"])
        for row in answer["generations"]:
            rows[row["generation_id"]] = row
    return list(rows.values())


def run_fresh(script: str, *args: str, timeout: float = 300) -> dict:
    """Run `script` (python -c) in a fresh interpreter, where no other test's threads or imports
    can move what it measures; the JSON object its last line prints."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
