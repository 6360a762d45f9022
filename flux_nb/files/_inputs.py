"""Input images for edits: paths, URLs, PIL images, bytes or earlier Generations, made into URLs,
and the store that keeps their bytes once, so recipes can name them by content hash.

The contract documents http(s) URLs; local images go as `data:` URIs (the local server takes
them; whether the hosted API does is unknown, so its error tells people to pass a public URL).
A recipe holds such an image as `sha256:<hex>`, its bytes in `<output>/.inputs/` (InputStore);
the reference becomes the very same data: URI again when the recipe is sent.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..core._atomic_write import write_atomically
from ..core._errors import InputImageError
from ..core._recipe import Recipe
from ._recent import Recent

MAX_BYTES = 8 * 1024 * 1024
MAX_SIDE = 2048
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
INPUTS_DIR = ".inputs"  # under the output folder: the input images recipes name by hash
REF_PREFIX = "sha256:"
_REF = re.compile(r"sha256:[0-9a-f]{64}")
RECENT_URIS = 8  # a sweep's or a chain's few inputs, without a data: URI kept per generation
_NAME_DIGITS = 16  # a stored file is <first 16 hex digits>.<ext>; its bytes are checked on reading


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
        if text.startswith(("http://", "https://")) or is_ref(text):
            return text  # a reference: its bytes are looked for in the output folder's store
        if text.startswith("data:"):
            _decode_data_uri(text)
            return text
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputImageError(
                f"input image {text!r} was not found: give a file path, an http(s) URL,"
                f" a PIL image or bytes.",
                field="input_image",
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputImageError(
                f"input image {text!r} cannot be read ({exc.strerror}).", field="input_image"
            ) from None
        return _data_uri(data, repr(text))
    raise InputImageError(
        f"input image of type {type(source).__name__} is not supported: give a path, URL, PIL"
        f" image, bytes or a Generation.",
        field="input_image",
    )


def _open(data: bytes, label: str):
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:
        raise InputImageError(
            f"input image {label} is not a readable image ({type(exc).__name__}): use a PNG, JPEG"
            f" or WebP file.",
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
        raise InputImageError(
            "input image data: URI must be data:image/...;base64,...", field="input_image"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise InputImageError(
            "input image data: URI holds broken base64.", field="input_image"
        ) from None
    _open(data, "(data: URI)")
    return data


# -- references and the store ----------------------------------------------------------------------


def is_ref(text: Any) -> bool:
    """True for a content reference, 'sha256:' and 64 hex digits."""
    return isinstance(text, str) and _REF.fullmatch(text) is not None


def ref_of(data: bytes) -> str:
    """The reference recipes use for these bytes: 'sha256:<64 hex digits>'."""
    return REF_PREFIX + hashlib.sha256(data).hexdigest()


def short(ref: str) -> str:
    """'sha256:' and the first 12 hex digits, for lines people read."""
    return ref[:19] if ref.startswith(REF_PREFIX) else ref


def split_data_uri(url: str) -> tuple[bytes, str] | None:
    """A data: URI's bytes and media type (None for anything else or broken base64)."""
    if not url.startswith("data:"):
        return None
    head, _, payload = url.partition(",")
    if ";base64" not in head:
        return None
    try:
        return base64.b64decode(payload, validate=True), head[5:].partition(";")[0]
    except ValueError:
        return None


def _ext(mime: str) -> str:
    sub = re.sub(r"[^a-z0-9]", "", mime.lower().rpartition("/")[2])
    return {"jpeg": "jpg"}.get(sub, sub) or "png"


def _mime(path: Path) -> str:
    sub = path.suffix.lstrip(".").lower()
    return "image/" + {"jpg": "jpeg"}.get(sub, sub)


class MissingInput(InputImageError):
    """A recipe names an input image by hash and its bytes are in none of the places looked in."""


class InputStore:
    """`<output>/.inputs/`: input images by content hash, each file written once, atomically.

    The media type rides on the file's extension, so a reference turns back into the data: URI
    it came from (the same one is sent to the API as before it was stored)."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        # the last few references made into data: URIs, and data: URIs kept -> their references
        # (each counts 1 against a budget of RECENT_URIS)
        self._urls, self._kept = Recent(RECENT_URIS), Recent(RECENT_URIS)
        self._paths: dict[str, Path] = {}  # references whose file's bytes were checked

    def __repr__(self) -> str:
        return f"InputStore({str(self.folder)!r})"

    def find(self, ref: str) -> Path | None:
        """The stored file whose bytes have this hash, if there is one (checked once per store)."""
        with self._lock:
            known = self._paths.get(ref)
        if known is not None and known.is_file():
            return known
        found = _find(ref, self.folder)
        if found is not None:
            with self._lock:
                self._paths[ref] = found
        return found

    def read(self, ref: str) -> bytes | None:
        path = self.find(ref)
        try:
            return path.read_bytes() if path is not None else None
        except OSError:
            return None

    def put(self, data: bytes, mime: str = "image/png") -> str:
        """Keep these bytes (once) and return their reference; an InputImageError when the
        folder cannot be written, since a recipe naming bytes that are nowhere could not be sent."""
        ref = ref_of(data)
        if self.find(ref) is not None:
            return ref
        target = self.folder / f"{ref[len(REF_PREFIX) :][:_NAME_DIGITS]}.{_ext(mime)}"
        try:
            write_atomically(target, data)
            with self._lock:
                self._paths[ref] = target
        except OSError as exc:
            raise InputImageError(
                f"the input image cannot be kept in {self.folder} ({exc.strerror or exc}):"
                " set FLUX_NB_OUTPUT_DIR (or output_dir=) to a writable folder.",
                field="input_image",
            ) from None
        return ref

    def keep(self, url: str) -> str:
        """A data: URI stored and replaced by its reference; URLs and references as they are.
        A data: URI that its reference would not give back letter for letter (another spelling
        of its media type, say) stays as it is: what is sent never changes."""
        if not url.startswith("data:"):
            return url
        known = self._kept.get(url)  # a sweep's cells share one URI: its hash is worked out once
        if known is not None:
            return known
        parts = split_data_uri(url)
        if parts is None:
            return url
        ref = self.put(*parts)
        kept = ref if self.url(ref) == url else url
        self._kept.put(url, kept, 1)
        return kept

    def adopt(self, ref: str, folders: Iterable[Path]) -> bool:
        """Copy a referenced image found in another output folder's store into this one."""
        if self.find(ref) is not None:
            return True
        for folder in folders:
            path = _find(ref, Path(folder) / INPUTS_DIR)
            if path is not None:
                self.put(path.read_bytes(), _mime(path))
                return True
        return False

    def url(self, item: str) -> str:
        """What the API is sent for one input_image entry: a reference's data: URI (the very
        one it was made from); URLs and data: URIs as they are. MissingInput when not here."""
        if not is_ref(item):
            return item
        found = self._urls.get(item)
        if found is not None:
            return found
        path = self.find(item)
        if path is None:
            raise MissingInput(missing_line([item], self.folder), field="input_image")
        try:
            data = path.read_bytes()
        except OSError:
            raise MissingInput(missing_line([item], self.folder), field="input_image") from None
        found = f"data:{_mime(path)};base64,{base64.b64encode(data).decode()}"
        self._urls.put(item, found, 1)
        return found

    def intern(self, recipe: Recipe) -> Recipe:
        """The recipe with its data: inputs stored and named by hash; MissingInput when it names
        an image by hash that is not here (checked before anything is sent or journalled)."""
        refs = tuple(self.keep(u) for u in recipe.input_image)
        missing = [r for r in refs if is_ref(r) and self.find(r) is None]
        if missing:
            raise MissingInput(missing_line(missing, self.folder), field="input_image")
        return (
            recipe if refs == recipe.input_image else dataclasses.replace(recipe, input_image=refs)
        )

    def resolve(self, recipe: Recipe) -> Recipe:
        """The recipe as it is sent: every reference replaced by its data: URI."""
        if not any(is_ref(u) for u in recipe.input_image):
            return recipe
        return dataclasses.replace(
            recipe, input_image=tuple(self.url(u) for u in recipe.input_image)
        )


def _find(ref: str, folder: Path) -> Path | None:
    if not is_ref(ref):
        return None
    hexdigest = ref[len(REF_PREFIX) :]
    try:
        candidates = sorted(folder.glob(f"{hexdigest[:_NAME_DIGITS]}.*"))
    except OSError:
        return None
    for path in candidates:
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() == hexdigest:
                return path
        except OSError:
            continue
    return None


def missing_line(refs: list[str], folder: Path) -> str:
    """One line: which stored input images are missing and how to give them again."""
    names = ", ".join(f"{folder / short(r)[len(REF_PREFIX) :]}*" for r in refs)
    one = len(refs) == 1
    return (
        f"{'an input image' if one else f'{len(refs)} input images'} of this recipe"
        f" {'is' if one else 'are'} not here ({', '.join(short(r) for r in refs)}; looked for"
        f" {names}): copy the output folder's {INPUTS_DIR}/ along with the image, or pass the image"
        f" again: {give_again()}"
    )


def give_again(lineage: bool = False) -> str:
    """How to pass missing input images when making a recipe (or, with lineage, a whole chain of
    edits: lineage.missing_line) again, in Python and as a %flux line."""
    keyword, flag = ("lineage=True, ", "--lineage ") if lineage else ("", "")
    return f"reproduce(path, {keyword}inputs=[file]) or %flux reproduce {flag}PATH --input FILE."
