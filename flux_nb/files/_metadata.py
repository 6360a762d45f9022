"""The recipe inside the image file: embed it on save, read it back to reproduce the image.

Reading goes through Pillow's `Image.open`, which parses the container and decodes no pixels.
Writing splices metadata into the server's bytes; the image data is never decoded or re-encoded:

- PNG: iTXt chunks `flux_nb_recipe` and `flux_nb_<extra>`, and A1111's `parameters` text, all
  before the first IDAT, so `Image.open(path).info` has them.
- JPEG: one XMP packet (an APP1 segment after JFIF/EXIF: 64 KB, and recipes that name inputs by
  hash fit many times over; a file's own packet gets our description beside its own), as WebP;
  the `parameters` text in the EXIF UserComment, where other image tools look. A comment
  (COM) segment goes: SD Prompt Reader takes any JPEG comment for Fooocus' JSON. Its text (the
  engine's name) becomes the EXIF Software tag when there is none.
- EXIF (JPEG, WebP) as the standard and A1111's piexif write it: UserComment typed UNDEFINED with
  the `UNICODE\0` code and UTF-16BE text, and in a JPEG the tags EXIF requires there, so
  `exiftool -validate` finds nothing to report and `piexif.load` reads the text.
- WebP: one XMP chunk (a simple file gains the VP8X header that allows it); `parameters` in EXIF.

Where embedding is not worth its code (a JPEG recipe over one segment, a WebP that has an XMP
packet of its own), embed_recipe raises NoRoom with the bytes carrying everything else, and
storage writes the recipe beside the image as `NAME.EXT.recipe.json` (sidecar_path), where
read_recipe looks too. Files from earlier versions (PNG recipe after IDAT, a JPEG recipe in one or
many APP11 segments, which `exiftool -validate` reports as unknown, our description inside a
foreign XMP packet) are still read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import threading
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape

from ..core._errors import FluxError, ValidationError

RECIPE_KEY = "flux_nb_recipe"
PREFIX = "flux_nb_"
PARAMETERS_KEY = (
    "parameters"  # A1111's PNG text keyword, read by PNG Info, Civitai, SD Prompt Reader
)
SIDECAR_SUFFIX = ".recipe.json"

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_PNG_COMPRESS_OVER = 2048  # bytes of text; smaller recipes stay readable with `strings`
_MAX_TEXT = 64 * 1024 * 1024  # cap on inflated PNG text, against zip bombs
_TEXT_LIMIT = threading.Lock()

# Earlier versions' JPEG carrier, still read: APP11 segments "flux_nb\0" + index, count, CRC-32
_JPEG_APP11 = 0xEB
_JPEG_SIG = b"flux_nb\0"
_JPEG_HEAD = struct.Struct(">HHI")
_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\0"  # an APP1 segment holding an XMP packet
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_EXIF_HEAD = b"Exif\0\0"
_SOFTWARE = 0x0131
_JPEG_COM = 0xFE
# JPEG start-of-frame markers (height and width in their header); C4, C8 and CC are not frames
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# EXIF tags whose type is UNDEFINED (7); Pillow writes a bytes value as BYTE (1), which piexif
# refuses for UserComment and exiftool flags as non-standard
_EXIF_UNDEFINED = frozenset({0x9000, 0x9101, 0x9286, 0xA000})

_XMP_NS = "urn:flux-nb:xmp:1.0/"
_XMP_HEAD = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
).encode()
_XMP_TAIL = b'</rdf:RDF>\n</x:xmpmeta>\n<?xpacket end="r"?>'
_XMP_OURS = re.compile(  # our description, also where earlier versions put it in a foreign packet
    rb'<rdf:Description rdf:about="" xmlns:flux_nb="' + re.escape(_XMP_NS.encode()) + rb'">'
    rb".*?</rdf:Description>\n?",
    re.S,
)
_VP8X_XMP, _VP8X_EXIF, _VP8X_ALPHA = 0x04, 0x08, 0x10
_WEBP_IMAGE = (b"VP8 ", b"VP8L")

_KEY_RE = re.compile(rf"[a-z0-9_]{{1,{79 - len(PREFIX)}}}")


class NoRoom(FluxError):
    """The file's metadata cannot take this recipe: keep it beside the image (sidecar_path).
    `data` is the image with everything else embedded (the `parameters` text)."""

    def __init__(self, message: str, data: bytes):
        super().__init__(message, hint="Keep the recipe in a sidecar JSON file.")
        self.data = data


class _Damaged(Exception):
    """Internal: the container is broken; turned into a one-line FluxError naming the file."""


def sniff_format(data: bytes) -> str | None:
    """'png', 'jpg' or 'webp' from the magic bytes; None for anything else."""
    head = bytes(data[:12])
    if head.startswith(_PNG_SIG):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def sidecar_path(image: str | os.PathLike) -> Path:
    """Where the recipe of an image whose own metadata could not take it is kept."""
    path = Path(image)
    return path.with_name(path.name + SIDECAR_SUFFIX)


# ---------------------------------------------------------------- payload


def _payload(recipe_json: str, extra: dict[str, str] | None) -> dict[str, str]:
    """Check the inputs and return {field name without prefix: text}, recipe first."""
    try:
        recipe = json.loads(recipe_json)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"the recipe is not valid JSON ({exc}).", field="recipe_json"
        ) from None
    if not isinstance(recipe, dict):
        raise ValidationError("the recipe JSON must be an object.", field="recipe_json")
    fields = {"recipe": recipe_json}
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key) or key == "recipe":
            raise ValidationError(
                f"metadata field {key!r} is not allowed: use lowercase letters, digits and _"
                " (at most 71), and not 'recipe'.",
                field="extra",
            )
        if not isinstance(value, str):
            raise ValidationError(
                f"metadata field {key!r} must be a string, not {type(value).__name__}.",
                field="extra",
            )
        fields[key] = value
    for key, value in fields.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                f"metadata field {key!r} is not valid text.", field="extra"
            ) from None
    return fields


def _result(fields: dict[str, str]) -> dict[str, Any]:
    """{'recipe': parsed dict, **extra} from the stored text fields."""
    try:
        recipe = json.loads(fields.pop("recipe"))
    except ValueError as exc:
        raise _Damaged(f"its recipe is not valid JSON ({exc})") from None
    if not isinstance(recipe, dict):
        raise _Damaged("its recipe is not a JSON object")
    return {"recipe": recipe, **fields}


def _document(fields: dict[str, str]) -> bytes:
    """JPEG and WebP carry one JSON document: the recipe parsed, the extras as strings."""
    recipe = json.loads(fields["recipe"])
    rest = {k: v for k, v in fields.items() if k != "recipe"}
    return json.dumps({"recipe": recipe, **rest}, separators=(",", ":")).encode()


def _from_document(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Damaged(f"its recipe is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("recipe"), dict):
        raise _Damaged("its recipe is not a JSON object")
    return doc


# ---------------------------------------------------------------- reading (Pillow)


@contextlib.contextmanager
def _opened(source: str | os.PathLike | bytes, what: str) -> Iterator[tuple[str, Any, str | None]]:
    """(name for messages, Pillow image, format) of a path or bytes; the header only is parsed.
    Every failure is one FluxError line; _Damaged raised inside names the file too."""
    from PIL import Image

    fp: IO[bytes]
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, fp = "the image data", io.BytesIO(bytes(source))
    else:
        name = os.fspath(source)
        try:
            fp = open(name, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise FluxError(f"cannot read {name}: {exc.strerror or exc}.") from None
    with fp:
        try:
            kind = sniff_format(fp.read(12))
            fp.seek(0)
        except OSError as exc:
            raise FluxError(f"cannot read {name}: {exc.strerror or exc}.") from None
        if kind is None:
            yield name, None, None
            return
        try:
            with Image.open(fp, formats=["PNG", "JPEG", "WEBP"]) as im:
                yield name, im, kind
        except FluxError:
            raise
        except Exception as exc:  # Pillow raises many kinds on a broken file
            reason = str(exc) if isinstance(exc, _Damaged) else _pillow_reason(exc)
            raise FluxError(f"{name} is damaged: {reason}; its {what} cannot be read.") from None


def _pillow_reason(exc: Exception) -> str:
    from PIL import UnidentifiedImageError

    text = " ".join(str(exc).split())[:160]
    if isinstance(exc, UnidentifiedImageError) or not text:
        return "Pillow cannot parse its header"
    if isinstance(exc, (EOFError, struct.error)) or "truncated" in text.lower():
        return "the file is cut short"
    return f"Pillow cannot parse it ({text})"


def _png_text(im: Any, wanted: str) -> dict[str, str]:
    """The PNG's text chunks. Image.open read those before IDAT; when `wanted` is not among them
    (earlier versions put the recipe after the image data), Pillow's own chunk reader goes on to
    IEND, seeking past IDAT without reading or decoding it."""
    from PIL import PngImagePlugin

    text = {k: str(v) for k, v in im.info.items() if isinstance(v, str)}
    if wanted in text:
        return text
    fp = im.fp
    fp.seek(len(_PNG_SIG))
    png = PngImagePlugin.PngStream(fp)
    # Pillow refuses PNG text over 1 MB inflated; recipes saved before content hashes held whole
    # input images (after IDAT), so the cap is 64 MB for this walk only, one walk at a time.
    with _TEXT_LIMIT:
        saved = PngImagePlugin.MAX_TEXT_CHUNK
        PngImagePlugin.MAX_TEXT_CHUNK = max(saved, _MAX_TEXT)
        try:
            while True:
                cid, pos, length = png.read()
                if cid == b"IEND":
                    break
                if cid in _PNG_TEXT:
                    png.crc(cid, png.call(cid, pos, length))
                else:
                    fp.seek(length + 4, os.SEEK_CUR)  # the chunk and its CRC
        finally:
            PngImagePlugin.MAX_TEXT_CHUNK = saved
    return {**{k: str(v) for k, v in png.im_text.items()}, **text}


def _jpeg_recipe(applist: list[tuple[str, bytes]]) -> dict[str, Any] | None:
    """Our APP11 segment(s), as Pillow collected them while parsing the header."""
    parts: dict[int, bytes] = {}
    count = crc = None
    for marker, body in applist:
        if marker != "APP11" or not body.startswith(_JPEG_SIG):
            continue
        if len(body) < len(_JPEG_SIG) + _JPEG_HEAD.size:
            raise _Damaged("its flux-nb segment is malformed")
        index, total, checksum = _JPEG_HEAD.unpack_from(body, len(_JPEG_SIG))
        if count is not None and (total, checksum) != (count, crc):
            raise _Damaged("its flux-nb segments do not belong together")
        count, crc = total, checksum
        parts[index] = body[len(_JPEG_SIG) + _JPEG_HEAD.size :]
    if count is None:
        return None
    if sorted(parts) != list(range(count)):
        raise _Damaged(f"only {len(parts)} of its {count} flux-nb segments are present")
    doc = b"".join(parts[i] for i in range(count))
    if zlib.crc32(doc) != crc:
        raise _Damaged("its flux-nb segment fails its CRC check")
    return _from_document(doc)


def _jpeg_xmp(applist: list[tuple[str, bytes]]) -> bytes | None:
    """The JPEG's XMP packet that holds our description (else its first), from Pillow's list."""
    packets = [b[len(_JPEG_XMP) :] for m, b in applist if m == "APP1" and b.startswith(_JPEG_XMP)]
    return next((p for p in packets if _XMP_NS.encode() in p), packets[0] if packets else None)


def _xmp_recipe(packet: bytes | str | None) -> dict[str, Any] | None:
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    if not packet or _XMP_NS.encode() not in packet:
        return None
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:  # no entity expansion, ever
        raise _Damaged("its XMP packet declares a DOCTYPE")
    try:
        root = ET.fromstring(packet)
    except ET.ParseError as exc:
        raise _Damaged(f"its XMP packet is not valid XML ({exc})") from None
    found: dict[str, str] = {}
    for name in ("data", "crc32"):  # elements as we write them; attributes are the same in RDF
        tag = f"{{{_XMP_NS}}}{name}"
        for el in root.iter():
            text = el.text if el.tag == tag else el.attrib.get(tag)
            if text is not None:
                found[name] = text
                break
    if "data" not in found:
        return None
    doc = found["data"].encode()
    if "crc32" in found and found["crc32"].strip() != f"{zlib.crc32(doc):08x}":
        raise _Damaged("its flux-nb recipe fails its CRC check")  # earlier WebP files had none
    return _from_document(doc)


def _user_comment(im: Any) -> str | None:
    """The EXIF UserComment as text (UNICODE, ASCII or undefined code), or None."""
    try:
        exif = im.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # a broken EXIF block holds no text we can trust
        return None
    if isinstance(raw, str):
        return raw or None
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    code, body = raw[:8], raw[8:]
    if code == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return body.decode("utf-16")
        # The byte order should follow the TIFF's, but writers differ (piexif always writes
        # big-endian): text that is mostly ASCII has its zero bytes on the high side.
        even, odd = body[0::2].count(0), body[1::2].count(0)
        big = even > odd if even != odd else exif.endian == ">"
        return body.decode("utf-16-be" if big else "utf-16-le", "replace")
    return body.rstrip(b"\0").decode("utf-8", "replace") or None


def read_recipe(source: str | os.PathLike | bytes) -> dict[str, Any]:
    """Return {"recipe": <dict>, **extra fields} from an image file path or its bytes; a path's
    sidecar (sidecar_path) answers when the file itself carries none.

    Only the container is parsed (no pixel decoding). Raises a one-line FluxError when the file
    cannot be read, is damaged, or carries no recipe.
    """
    path = None if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with _opened(source, "flux-nb recipe") as (name, im, kind):
            if kind == "png":
                fields = {
                    k[len(PREFIX) :]: v
                    for k, v in _png_text(im, RECIPE_KEY).items()
                    if k.startswith(PREFIX)
                }
                found = _result(fields) if "recipe" in fields else None
            elif kind == "jpg":
                applist = getattr(im, "applist", [])
                found = _xmp_recipe(_jpeg_xmp(applist)) or _jpeg_recipe(applist)
            elif kind == "webp":
                found = _xmp_recipe(im.info.get("xmp"))
            else:
                raise FluxError(
                    f"{name} is not a PNG, JPEG or WebP image, so it carries no flux-nb recipe."
                )
    except FluxError:
        if path is not None and (sidecar := _read_sidecar(path)) is not None:
            return sidecar
        raise
    if found is None and path is not None:
        found = _read_sidecar(path)
    if found is None:
        raise FluxError(
            f"{name} carries no flux-nb recipe: it was not saved by flux-nb,"
            " or its metadata was stripped."
        )
    return found


def read_parameters(source: str | os.PathLike | bytes) -> str | None:
    """The A1111-style `parameters` text of an image (PNG text chunk, or EXIF UserComment in JPEG
    and WebP), whoever wrote it; None when there is none. Only the container is parsed."""
    with _opened(source, "parameters") as (_name, im, kind):
        if kind == "png":
            return _png_text(im, PARAMETERS_KEY).get(PARAMETERS_KEY)
        if kind in ("jpg", "webp"):
            return _user_comment(im)
    return None


def _read_sidecar(image: str | os.PathLike) -> dict[str, Any] | None:
    """The recipe beside an image whose own metadata could not take it (storage writes these)."""
    try:
        found = json.loads(sidecar_path(image).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("recipe"), dict) else None


# ---------------------------------------------------------------- writing: PNG


def _png_chunks(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """[(type, whole chunk)] up to and including IEND, and whatever follows IEND."""
    chunks, pos = [], len(_PNG_SIG)
    while True:
        if pos + 12 > len(data):
            raise _Damaged("the PNG ends before its IEND chunk (the file is cut short)")
        length, kind = struct.unpack_from(">I4s", data, pos)
        stop = pos + 12 + length
        if stop > len(data):
            raise _Damaged(f"the PNG chunk {kind!r} runs past the end of the file")
        chunks.append((kind, data[pos:stop]))
        pos = stop
        if kind == b"IEND":
            return chunks, data[pos:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_keyword(kind: bytes, chunk: bytes) -> bytes | None:
    return chunk[8 : 8 + 80].partition(b"\0")[0] if kind in _PNG_TEXT else None


def _png_write(
    data: bytes, fields: dict[str, str] | None, parameters: str | None, *, strip_parameters: bool
) -> bytes:
    """The PNG without our text chunks (and `parameters`, when asked), the given ones put before
    the first IDAT, where Image.open reads them; every other chunk kept byte for byte."""
    chunks, tail = _png_chunks(data)
    drop_parameters = strip_parameters or parameters is not None
    kept = []
    for kind, chunk in chunks:
        key = _png_keyword(kind, chunk)
        if key is not None and (
            key.startswith(PREFIX.encode()) or (drop_parameters and key == b"parameters")
        ):
            continue
        kept.append((kind, chunk))
    new = [_png_itxt(PREFIX + key, text) for key, text in (fields or {}).items()]
    if parameters is not None:
        try:  # tEXt when the text is Latin-1 (what A1111 writes), else iTXt (as Pillow does)
            new.append(_png_chunk(b"tEXt", b"parameters\0" + parameters.encode("latin-1")))
        except UnicodeEncodeError:
            new.append(_png_chunk(b"iTXt", b"parameters\0\0\0\0\0" + parameters.encode("utf-8")))
    at = next((i for i, (kind, _) in enumerate(kept) if kind == b"IDAT"), None)
    if at is None:
        raise _Damaged("the PNG has no IDAT chunk")
    body = [c for _, c in kept[:at]] + new + [c for _, c in kept[at:]]
    return _PNG_SIG + b"".join(body) + tail


def _png_itxt(keyword: str, text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > _PNG_COMPRESS_OVER:
        flag, raw = b"\1\0", zlib.compress(raw, 9)
    else:
        flag = b"\0\0"
    return _png_chunk(b"iTXt", keyword.encode("latin-1") + b"\0" + flag + b"\0\0" + raw)


# ---------------------------------------------------------------- writing: JPEG


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """[(marker, whole segment)] between SOI and the image data, and the rest from SOS on."""
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while True:
        while data[pos + 1 : pos + 2] == b"\xff":  # fill bytes
            pos += 1
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise _Damaged(
                f"the JPEG has no marker at byte {pos} (the file is cut short or broken)"
            )
        marker = data[pos + 1]
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            return segments, data[pos:]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        stop = pos + 2 + length
        if length < 2 or stop > len(data):
            raise _Damaged(f"the JPEG segment at byte {pos} runs past the end of the file")
        segments.append((marker, data[pos:stop]))
        pos = stop


def _jpeg_is_ours(marker: int, segment: bytes) -> bool:
    return marker == _JPEG_APP11 and segment[4 : 4 + len(_JPEG_SIG)] == _JPEG_SIG


def _jpeg_is_xmp(marker: int, segment: bytes) -> bool:
    return marker == 0xE1 and segment[4 : 4 + len(_JPEG_XMP)] == _JPEG_XMP


def _jpeg_without_ours(segments: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The segments without our APP11 (earlier versions) and our XMP description; a packet that
    held only ours goes, a foreign one stays with its own descriptions."""
    out = []
    for marker, segment in segments:
        if _jpeg_is_ours(marker, segment):
            continue
        if _jpeg_is_xmp(marker, segment) and _XMP_NS.encode() in segment:
            packet = _XMP_OURS.sub(b"", segment[4 + len(_JPEG_XMP) :])
            if packet == _XMP_HEAD + _XMP_TAIL:
                continue
            segment = _jpeg_segment(0xE1, _JPEG_XMP + packet)
        out.append((marker, segment))
    return out


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _jpeg_size(segments: list[tuple[int, bytes]]) -> tuple[int, int] | None:
    """(width, height) from the start-of-frame segment's header."""
    for marker, segment in segments:
        if marker in _JPEG_SOF and len(segment) >= 9:
            height, width = struct.unpack_from(">HH", segment, 5)
            return width, height
    return None


def _jpeg_with_comment(
    segments: list[tuple[int, bytes]], text: str | None
) -> list[tuple[int, bytes]]:
    """The segments with the EXIF UserComment set to text (removed when None). Writing text also
    drops COM segments, their text kept as EXIF Software when the EXIF has none."""
    software = None
    if text is not None:
        notes = [s[4:] for m, s in segments if m == _JPEG_COM]
        software = b" ".join(notes).rstrip(b"\0").decode("utf-8", "replace").strip() or None
        segments = [(m, s) for m, s in segments if m != _JPEG_COM]
    at = next((i for i, (m, s) in enumerate(segments) if m == 0xE1 and s[4:10] == _EXIF_HEAD), None)
    old = segments[at][1][10:] if at is not None else None
    tiff = _exif_with_comment(old, text, software=software, jpeg_size=_jpeg_size(segments))
    if tiff is old:
        return segments
    out = list(segments)
    if at is not None:
        del out[at]
    if tiff is not None:
        if len(_EXIF_HEAD + tiff) + 2 > 0xFFFF:
            raise _Damaged("its EXIF data would not fit in one segment")
        # after SOI, or after JFIF (APP0) when the file starts with it
        where = at if at is not None else (1 if out and out[0][0] == 0xE0 else 0)
        out.insert(where, (0xE1, _jpeg_segment(0xE1, _EXIF_HEAD + tiff)))
    return out


def _jpeg_write(
    data: bytes, fields: dict[str, str] | None, parameters: str | None, *, strip_parameters: bool
) -> bytes:
    segments, rest = _jpeg_segments(data)
    segments = _jpeg_without_ours(segments)
    if parameters is not None or strip_parameters:
        segments = _jpeg_with_comment(segments, parameters)
    if fields is not None:
        at = next((i for i, (m, s) in enumerate(segments) if _jpeg_is_xmp(m, s)), None)
        own = segments[at][1][4 + len(_JPEG_XMP) :] if at is not None else None
        packet = _xmp_with(own, fields)
        if packet is None or len(_JPEG_XMP + packet) + 2 > 0xFFFF:
            body = b"\xff\xd8" + b"".join(s for _, s in segments) + rest
            why = "has no rdf:RDF element" if packet is None else f"would be {len(packet)} bytes"
            raise NoRoom(f"the JPEG's XMP packet {why}: over one JPEG segment.", body)
        segment = (0xE1, _jpeg_segment(0xE1, _JPEG_XMP + packet))
        if at is not None:
            segments[at] = segment
        else:  # JFIF (APP0) and EXIF (APP1) come first, so ours goes right after them
            at = next((i for i, (m, _) in enumerate(segments) if m not in (0xE0, 0xE1)), None)
            segments.insert(len(segments) if at is None else at, segment)
    return b"\xff\xd8" + b"".join(s for _, s in segments) + rest


# ---------------------------------------------------------------- writing: EXIF (JPEG, WebP)


def _exif_with_comment(
    tiff: bytes | None,
    text: str | None,
    *,
    software: str | None = None,
    jpeg_size: tuple[int, int] | None = None,
) -> bytes | None:
    """TIFF-format EXIF with UserComment set to text (removed when text is None); other tags kept.
    None when nothing would be left. The text is UTF-16BE whatever the TIFF's byte order: piexif
    writes it so, and A1111's reader (piexif.helper.UserComment.load) reads it only so. With text,
    software fills a missing Software tag, and a JPEG's (jpeg_size) required tags are added."""
    from PIL import Image

    exif = Image.Exif()
    if tiff:
        try:
            exif.load(tiff)
        except Exception as exc:  # Pillow raises several kinds on a broken TIFF
            raise _Damaged(f"its EXIF data is malformed ({type(exc).__name__})") from None
    else:
        exif.endian = ">"
    ifd = exif.get_ifd(_EXIF_IFD)
    if text is None:
        if _USER_COMMENT not in ifd:
            return tiff  # nothing to remove: the file's EXIF stays byte for byte
        del ifd[_USER_COMMENT]
    else:
        ifd[_USER_COMMENT] = b"UNICODE\0" + text.encode("utf-16-be")
        if software and _SOFTWARE not in exif:
            exif[_SOFTWARE] = software
        if jpeg_size is not None:
            _jpeg_required(exif, ifd, jpeg_size)
    if not ifd:
        exif.pop(_EXIF_IFD, None)
        if not len(exif):
            return None
    return _undefined_typed(exif.tobytes()[len(_EXIF_HEAD) :])


def _jpeg_required(exif: Any, ifd: dict[int, Any], size: tuple[int, int]) -> None:
    """The tags EXIF 2.3 requires in a JPEG (exiftool -validate names each one missing), where the
    file has none: 72 dpi, centred chroma, EXIF 2.3, sRGB, the image's own size."""
    from PIL.TiffImagePlugin import IFDRational

    for tag, value in ((0x011A, IFDRational(72)), (0x011B, IFDRational(72)), (0x0128, 2)):
        exif.setdefault(tag, value)  # XResolution, YResolution, ResolutionUnit (inches)
    exif.setdefault(0x0213, 1)  # YCbCrPositioning: centred
    ifd.setdefault(0x9000, b"0230")  # ExifVersion
    ifd.setdefault(0x9101, b"\1\2\3\0")  # ComponentsConfiguration: Y Cb Cr
    ifd.setdefault(0xA000, b"0100")  # FlashpixVersion
    ifd.setdefault(0xA001, 1)  # ColorSpace: sRGB
    ifd.setdefault(0xA002, size[0])  # ExifImageWidth
    ifd.setdefault(0xA003, size[1])  # ExifImageHeight


def _undefined_typed(tiff: bytes) -> bytes:
    """The TIFF with the EXIF IFD's _EXIF_UNDEFINED tags retyped from BYTE to UNDEFINED (both one
    byte a value: only the type field changes). Pillow gives no way to choose a tag's type."""
    order = "<" if tiff[:2] == b"II" else ">"
    out = bytearray(tiff)

    def entries(offset: int) -> Iterator[tuple[int, int, int, int]]:
        (count,) = struct.unpack_from(order + "H", out, offset)
        for at in range(offset + 2, offset + 2 + 12 * count, 12):
            yield at, *struct.unpack_from(order + "HHI", out, at)

    try:
        for at, tag, _kind, _count in entries(struct.unpack_from(order + "I", out, 4)[0]):
            if tag != _EXIF_IFD:
                continue
            (sub,) = struct.unpack_from(order + "I", out, at + 8)
            for entry, sub_tag, kind, _ in entries(sub):
                if sub_tag in _EXIF_UNDEFINED and kind == 1:
                    struct.pack_into(order + "H", out, entry + 2, 7)
    except struct.error:  # not as Pillow writes it: leave it as it is
        return tiff
    return bytes(out)


# ---------------------------------------------------------------- writing: WebP


def _riff_chunks(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """[(fourcc, payload)] inside the RIFF container, and whatever follows it."""
    (size,) = struct.unpack_from("<I", data, 4) if len(data) >= 12 else (0,)
    end = 8 + size
    if size < 4 or end > len(data):
        raise _Damaged("the WebP file is cut short (its RIFF size runs past the end)")
    chunks, pos = [], 12
    while pos < end:
        if pos + 8 > end:
            raise _Damaged("the WebP file ends inside a chunk header")
        kind, (length,) = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)
        if pos + 8 + length > end:
            raise _Damaged(f"the WebP chunk {kind!r} runs past the end of the file")
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return chunks, data[end:]


def _riff_pack(chunks: list[tuple[bytes, bytes]], tail: bytes) -> bytes:
    """The WebP file; the VP8X flags follow the chunks, and a file that needs no VP8X drops it."""
    if chunks and chunks[0][0] == b"VP8X":
        kinds = {k for k, _ in chunks}
        vp8x = bytearray(chunks[0][1])
        for flag, kind in ((_VP8X_XMP, b"XMP "), (_VP8X_EXIF, b"EXIF")):
            vp8x[0] = vp8x[0] | flag if kind in kinds else vp8x[0] & ~flag & 0xFF
        chunks = [(b"VP8X", bytes(vp8x)), *chunks[1:]]
        if len(chunks) == 2 and chunks[1][0] in _WEBP_IMAGE and vp8x[0] & ~_VP8X_ALPHA == 0:
            chunks = chunks[1:]  # the VP8X chunk was only there for our metadata
    body = b"".join(
        kind + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")
        for kind, payload in chunks
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body + tail


def _extended(chunks: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The chunks headed by VP8X, which metadata chunks need; made from the bitstream header
    (width, height, alpha) when the file is a simple one."""
    if chunks and chunks[0][0] == b"VP8X":
        if len(chunks[0][1]) < 10:
            raise _Damaged("its VP8X chunk is malformed")
        return list(chunks)
    kind, payload = next(((k, p) for k, p in chunks if k in _WEBP_IMAGE), (b"", b""))
    if kind == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack_from("<HH", payload, 6)
        w, h, alpha = w & 0x3FFF, h & 0x3FFF, False
    elif kind == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        w, h, alpha = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    else:
        raise _Damaged("the WebP file has no readable image chunk")
    flags = _VP8X_ALPHA if alpha else 0
    header = (
        struct.pack("<I", flags) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    )
    return [(b"VP8X", header), *chunks]


def _webp_write(
    data: bytes, fields: dict[str, str] | None, parameters: str | None, *, strip_parameters: bool
) -> bytes:
    chunks, tail = _riff_chunks(data)
    out = []
    for kind, payload in chunks:
        if kind == b"XMP " and _XMP_NS.encode() in payload:
            payload = _XMP_OURS.sub(b"", payload)  # ours, or ours inside a foreign packet
            if payload == _XMP_HEAD + _XMP_TAIL:
                continue
        out.append((kind, payload))
    if parameters is not None or strip_parameters:
        exif = next((p for k, p in out if k == b"EXIF"), None)
        old = exif[len(_EXIF_HEAD) :] if exif and exif.startswith(_EXIF_HEAD) else exif
        tiff = _exif_with_comment(old, parameters)
        if tiff is not old:
            out = [(k, p) for k, p in out if k != b"EXIF"]
            if tiff is not None:  # EXIF goes before XMP, as the container spec orders them
                out = _extended(out)
                at = next((i for i, (k, _) in enumerate(out) if k == b"XMP "), len(out))
                out.insert(at, (b"EXIF", tiff))
    if fields is not None:
        packet = _xmp_with(next((p for k, p in out if k == b"XMP "), None), fields)
        if packet is None:
            raise NoRoom("the WebP's own XMP packet has no rdf:RDF element.", _riff_pack(out, tail))
        out = [*_extended([(k, p) for k, p in out if k != b"XMP "]), (b"XMP ", packet)]
    return _riff_pack(out, tail)


def _xmp_with(packet: bytes | None, fields: dict[str, str]) -> bytes | None:
    """An XMP packet holding our description: a new one, or the file's own (packet) with ours
    beside its own descriptions; None when that one has no rdf:RDF element to put it in."""
    packet = packet if packet is not None else _XMP_HEAD + _XMP_TAIL
    doc = _document(fields)
    ours = (
        b'<rdf:Description rdf:about="" xmlns:flux_nb="'
        + _XMP_NS.encode()
        + b'">'
        + b"<flux_nb:data>"
        + escape(doc.decode()).encode()
        + b"</flux_nb:data>"
        + f"<flux_nb:crc32>{zlib.crc32(doc):08x}</flux_nb:crc32>".encode()  # a flipped digit shows
        + b"</rdf:Description>\n"
    )
    at = packet.rfind(b"</rdf:RDF>")
    return None if at < 0 else packet[:at] + ours + packet[at:]


# ---------------------------------------------------------------- public writers

_WRITERS = {"png": _png_write, "jpg": _jpeg_write, "webp": _webp_write}


def embed_recipe(
    data: bytes,
    fmt: str,
    recipe_json: str,
    extra: dict[str, str] | None = None,
    *,
    parameters: str | None = None,
) -> bytes:
    """Return the image bytes with the recipe JSON (and extra text fields) embedded, and the
    A1111-style `parameters` text when given (replacing the file's own).

    The image data is not re-encoded: pixels stay identical. fmt ('png', 'jpg'/'jpeg', 'webp')
    is a hint; the format sniffed from the magic bytes wins. A recipe embedded before is replaced.
    Raises NoRoom (with the bytes carrying the rest) when the recipe belongs in a sidecar.
    """
    fields = _payload(recipe_json, extra)
    kind = sniff_format(data)
    if kind is None:
        raise FluxError(
            f"cannot embed the recipe: the data is not a PNG, JPEG or WebP image"
            f" (expected {fmt!r}).",
            hint="Save the recipe in a sidecar JSON file instead.",
        )
    if parameters is not None and not isinstance(parameters, str):
        raise ValidationError("the parameters text must be a string.", field="parameters")
    data = bytes(data)
    try:
        return _WRITERS[kind](data, fields, parameters, strip_parameters=False)
    except _Damaged as exc:
        raise FluxError(
            f"cannot embed the recipe: {exc}.",
            hint="The image is damaged; keep the recipe in a sidecar JSON file.",
        ) from None


def embed_parameters(data: bytes, parameters: str) -> bytes:
    """The image bytes with the A1111-style `parameters` text (replacing the file's own) and no
    flux-nb recipe: for a picture no one recipe makes, such as a sweep's contact sheet."""
    data = bytes(data)
    kind = sniff_format(data)
    if kind is None:
        raise FluxError("cannot write the parameters text: the data is not a PNG, JPEG or WebP.")
    try:
        return _WRITERS[kind](data, None, parameters, strip_parameters=False)
    except _Damaged as exc:
        raise FluxError(f"cannot write the parameters text: {exc}.") from None


def strip_recipe(data: bytes) -> bytes:
    """The image bytes without any flux-nb metadata (e.g. to share an image without its prompt):
    the `parameters` text and the EXIF UserComment, which hold the prompt too, go as well."""
    data = bytes(data)
    kind = sniff_format(data)
    try:
        if kind is not None:
            return _WRITERS[kind](data, None, None, strip_parameters=True)
    except _Damaged as exc:
        raise FluxError(f"cannot strip the recipe: {exc}.") from None
    return data


__all__ = [
    "NoRoom",
    "PARAMETERS_KEY",
    "RECIPE_KEY",
    "SIDECAR_SUFFIX",
    "embed_parameters",
    "embed_recipe",
    "read_parameters",
    "read_recipe",
    "sidecar_path",
    "sniff_format",
    "strip_recipe",
]
