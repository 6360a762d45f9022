"""Input images for edits: paths, URLs, PIL images, bytes or earlier Generations, made into URLs.

The contract documents http(s) URLs; local images go as `data:` URIs (the local server takes
them; whether the hosted API does is unknown, so its error tells people to pass a public URL).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import InputImageError

MAX_BYTES = 8 * 1024 * 1024
MAX_SIDE = 2048
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@runtime_checkable
class SavedImage(Protocol):
    """An earlier result given as an input (a Generation): its saved bytes, once it has them."""

    def saved_bytes(self) -> tuple[bytes, str]: ...


def to_input_url(source: Any) -> str:
    """One input image as a URL the API can take; raises InputImageError naming the source."""
    if isinstance(source, SavedImage):
        # The saved bytes (waited for), never the result URL: a hosted one is presigned and
        # expires, so a recipe holding it could not be made again later.
        return _data_uri(*source.saved_bytes())
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _data_uri(bytes(source), "the bytes given")
    if hasattr(source, "save") and hasattr(source, "size") and hasattr(source, "mode"):
        return _from_pil(source)
    if isinstance(source, Path) or isinstance(source, str):
        text = str(source).strip()
        if text.startswith(("http://", "https://")):
            return text
        if text.startswith("data:"):
            _decode_data_uri(text)
            return text
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputImageError(
                f"input image {text!r} was not found: give a file path, an http(s) URL, a PIL image or bytes.",
                field="input_image",
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputImageError(f"input image {text!r} cannot be read ({exc.strerror}).", field="input_image") from None
        return _data_uri(data, repr(text))
    raise InputImageError(
        f"input image of type {type(source).__name__} is not supported: give a path, URL, PIL image, bytes or a Generation.",
        field="input_image",
    )


def _open(data: bytes, label: str):
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:
        raise InputImageError(
            f"input image {label} is not a readable image ({type(exc).__name__}): use a PNG, JPEG or WebP file.",
            field="input_image",
        ) from None
    return img


def _data_uri(data: bytes, label: str) -> str:
    img = _open(data, label)
    if img.format in MIME and len(data) <= MAX_BYTES and max(img.size) <= MAX_SIDE:
        return f"data:{MIME[img.format]};base64,{base64.b64encode(data).decode()}"
    return _from_pil(img)


def _from_pil(img) -> str:
    from PIL import Image

    img = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _decode_data_uri(uri: str) -> bytes:
    head, _, payload = uri.partition(",")
    if not head.startswith("data:image/") or ";base64" not in head:
        raise InputImageError("input image data: URI must be data:image/...;base64,...", field="input_image")
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise InputImageError("input image data: URI holds broken base64.", field="input_image") from None
    _open(data, "(data: URI)")
    return data
