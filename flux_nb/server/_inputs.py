"""Fetch and decode a generation's input_image list (http(s) URLs or data:image URIs) for an engine.

Runs on worker threads. Every failure becomes InputImageError with a message that names the item
("input_image[1] is not a readable image: ..."), which the worker turns into a failed generation.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from PIL import Image, UnidentifiedImageError

from ..core._errors import InputImageError
from ._fetch import BlockedAddress

# url -> its bytes when it names a file on this very server (FileNotFoundError when no such file
# is there), None when the URL is not this server's. This server's URLs are never fetched.
OwnFiles = Callable[[str], "bytes | None"]


@dataclass(frozen=True)
class InputLimits:
    """Caps on what one generation may ask the server to fetch and decode."""

    max_images: int = 8
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    fetch_timeout: float = 10.0


def load_images(
    urls: Sequence[str],
    get_client: Callable[[], httpx.Client],
    limits: InputLimits,
    own: OwnFiles | None = None,
) -> list[Image.Image]:
    """Decode every input image, in order; raise InputImageError on the first bad one.

    get_client is called only when a URL must be fetched (making an httpx.Client is not free);
    own answers URLs of this server itself (results, the docs' example picture) with no fetch.
    """
    if len(urls) > limits.max_images:
        raise InputImageError(
            f"input_image has {len(urls)} images; this server takes at most {limits.max_images}.",
            field="input_image",
        )
    return [
        _load_one(f"input_image[{i}]", url, get_client, limits, own) for i, url in enumerate(urls)
    ]


def _load_one(
    label: str,
    url: str,
    get_client: Callable[[], httpx.Client],
    limits: InputLimits,
    own: OwnFiles | None,
) -> Image.Image:
    data = _read_bytes(label, url, get_client, limits, own)
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > limits.max_pixels:
            raise ValueError(f"{width}x{height} pixels is over the cap of {limits.max_pixels}")
        image.load()
    except Exception as exc:  # PIL raises many types for bad data; all mean the same here
        raise InputImageError(
            f"{label} is not a readable image: {_reason(exc)}", field="input_image"
        ) from None
    return image


def _read_bytes(
    label: str,
    url: str,
    get_client: Callable[[], httpx.Client],
    limits: InputLimits,
    own: OwnFiles | None,
) -> bytes:
    if url.startswith("data:"):
        return _decode_data_uri(label, url, limits)
    try:
        found = own(url) if own is not None else None
    except FileNotFoundError:
        raise InputImageError(
            f"{label} is not a readable image: fetching it gave HTTP 404.", field="input_image"
        ) from None
    if found is not None:
        if len(found) > limits.max_bytes:
            raise InputImageError(
                f"{label} is not a readable image: it is over {limits.max_bytes} bytes.",
                field="input_image",
            )
        return found
    if not url.startswith(("http://", "https://")):
        raise InputImageError(
            f"{label} is not a readable image:"
            f" give an http(s) URL or a data:image/...;base64, URI.",
            field="input_image",
        )
    try:
        with get_client().stream("GET", url, timeout=limits.fetch_timeout) as response:
            if response.status_code != 200:
                raise InputImageError(
                    f"{label} is not a readable image: fetching it gave HTTP"
                    f" {response.status_code}.",
                    field="input_image",
                )
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limits.max_bytes:
                    raise InputImageError(
                        f"{label} is not a readable image: it is over {limits.max_bytes} bytes.",
                        field="input_image",
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except BlockedAddress as exc:
        raise InputImageError(f"{label} was not fetched: {exc}", field="input_image") from None
    except httpx.InvalidURL as exc:
        raise InputImageError(
            f"{label} was not fetched: its URL is not valid ({str(exc)[:120]}).",
            field="input_image",
        ) from None
    except (httpx.HTTPError, httpx.StreamError) as exc:
        raise InputImageError(
            f"{label} is not a readable image: fetching it failed ({type(exc).__name__}).",
            field="input_image",
        ) from None


def _decode_data_uri(label: str, url: str, limits: InputLimits) -> bytes:
    head, comma, payload = url.partition(",")
    if not comma or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise InputImageError(
            f"{label} is not a readable image: a data URI must read"
            f" data:image/<type>;base64,<data>.",
            field="input_image",
        )
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise InputImageError(
            f"{label} is not a readable image: it is over {limits.max_bytes} bytes.",
            field="input_image",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputImageError(
            f"{label} is not a readable image: its base64 data is malformed.", field="input_image"
        ) from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "its content is not in an image format Pillow knows (use PNG, JPEG or WebP)."
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
