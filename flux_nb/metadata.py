"""The recipe inside the image file: embed it on save, read it back to reproduce the image.

The server's bytes are kept as they are (nothing is decoded or re-encoded): metadata is spliced
into the container. PNG gets iTXt chunks before IEND, JPEG gets APP11 segments after JFIF/EXIF,
WebP gets an XMP packet (the file is converted to the extended format when it is a simple one).

Beside it, the A1111-style `parameters` text (infotext.py) goes where other image tools look:
a PNG text chunk before the first IDAT (so `Image.open(path).info` has it without decoding), and
the EXIF UserComment of JPEG and WebP files.
"""

from __future__ import annotations

import json
import os
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from typing import Any
from xml.sax.saxutils import escape

from .errors import FluxError, ValidationError

RECIPE_KEY = "flux_nb_recipe"
PREFIX = "flux_nb_"
PARAMETERS_KEY = "parameters"  # A1111's PNG text keyword, read by PNG Info, Civitai, SD Prompt Reader

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_PNG_COMPRESS_OVER = 2048  # bytes of text; smaller recipes stay readable with `strings`
_MAX_TEXT = 64 * 1024 * 1024  # cap on inflated text, against zip bombs

_JPEG_APP11 = 0xEB
_JPEG_SIG = b"flux_nb\0"
# index, count (payloads over one segment are split), CRC-32 of the whole payload
_JPEG_HEAD = struct.Struct(">HHI")
_JPEG_CHUNK = 65533 - len(_JPEG_SIG) - _JPEG_HEAD.size

_XMP_NS = "urn:flux-nb:xmp:1.0/"
_XMP_HEAD = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
).encode()
_XMP_TAIL = b'</rdf:RDF>\n</x:xmpmeta>\n<?xpacket end="r"?>'
_XMP_OURS = re.compile(
    rb'<rdf:Description rdf:about="" xmlns:flux_nb="' + re.escape(_XMP_NS.encode()) + rb'">'
    rb".*?</rdf:Description>\n?",
    re.S,
)
_VP8X_XMP = 0x04
_VP8X_EXIF = 0x08
_VP8X_ALPHA = 0x10
_WEBP_IMAGE = (b"VP8 ", b"VP8L")

_KEY_RE = re.compile(rf"[a-z0-9_]{{1,{79 - len(PREFIX)}}}")


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


class _Damaged(Exception):
    """Internal: the container is broken; turned into a one-line FluxError naming the file."""


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
    return json.dumps(
        {
            "recipe": json.loads(fields["recipe"]),
            **{k: v for k, v in fields.items() if k != "recipe"},
        },
        separators=(",", ":"),
    ).encode()


def _from_document(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Damaged(f"its recipe is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("recipe"), dict):
        raise _Damaged("its recipe is not a JSON object")
    return doc


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, _MAX_TEXT)
    if d.unconsumed_tail or not d.eof:
        raise _Damaged("its compressed recipe is cut short or too large")
    return out


# ---------------------------------------------------------------- PNG


def _png_chunks(data: bytes, *, check_crc: bool = False):
    """Yield (type, data start, chunk end) for each chunk up to and including IEND."""
    pos, end = 8, len(data)
    while True:
        if pos + 8 > end:
            raise _Damaged("the PNG ends before its IEND chunk (the file is cut short)")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        stop = pos + 12 + length
        if stop > end:
            raise _Damaged(f"the PNG chunk {kind!r} runs past the end of the file")
        yield kind, pos + 8, stop
        if kind == b"IEND":
            return
        pos = stop


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_keyword(body: bytes) -> bytes:
    return body[: body.find(b"\0")] if b"\0" in body else b""


def _png_is_ours(data: bytes, kind: bytes, start: int, stop: int) -> bool:
    return kind in _PNG_TEXT and _png_keyword(data[start : min(stop - 4, start + 80)]).startswith(
        PREFIX.encode()
    )


def _png_itxt(keyword: str, text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > _PNG_COMPRESS_OVER:
        flag, raw = b"\1\0", zlib.compress(raw, 9)
    else:
        flag = b"\0\0"
    return _png_chunk(b"iTXt", keyword.encode("latin-1") + b"\0" + flag + b"\0\0" + raw)


def _png_text(kind: bytes, body: bytes) -> tuple[str, str]:
    """Keyword and text of a tEXt, zTXt or iTXt chunk body."""
    key, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    if len(rest) < 2:
        raise _Damaged("its iTXt chunk is malformed")
    compressed, rest = rest[0], rest[2:]
    _lang, _, rest = rest.partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    raw = _inflate(text) if compressed else text
    try:
        return key.decode("latin-1"), raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Damaged("its iTXt text is not UTF-8") from None


def _png_strip(data: bytes, *, ours: bool = True, parameters: bool = False) -> bytes:
    """The PNG without our text chunks and/or `parameters` ones; every other byte kept."""
    parts, pos = [], 0
    for kind, start, stop in _png_chunks(data):
        if (ours and _png_is_ours(data, kind, start, stop)) or (
            parameters and _png_is_parameters(data, kind, start, stop)
        ):
            parts.append(data[pos : start - 8])
            pos = stop
    return b"".join(parts) + data[pos:]


def _png_is_parameters(data: bytes, kind: bytes, start: int, stop: int) -> bool:
    return kind in _PNG_TEXT and _png_keyword(data[start : min(stop - 4, start + 80)]) == (
        PARAMETERS_KEY.encode()
    )


def _png_with_parameters(data: bytes, text: str) -> bytes:
    """Replace the `parameters` text; put it before the first IDAT, where Image.open reads it.
    tEXt when the text is Latin-1 (what A1111 writes), else uncompressed iTXt (as Pillow does)."""
    clean = _png_strip(data, ours=False, parameters=True)
    at = next((start - 8 for kind, start, _ in _png_chunks(clean) if kind == b"IDAT"), None)
    if at is None:
        raise _Damaged("the PNG has no IDAT chunk")
    key = PARAMETERS_KEY.encode("latin-1")
    try:
        chunk = _png_chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        chunk = _png_chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))
    return clean[:at] + chunk + clean[at:]


def _png_parameters(data: bytes) -> str | None:
    for kind, start, stop in _png_chunks(data):
        if _png_is_parameters(data, kind, start, stop):
            return _png_text(kind, data[start : stop - 4])[1]
    return None


def _png_embed(data: bytes, fields: dict[str, str]) -> bytes:
    clean = _png_strip(data)
    *_, (_kind, start, _stop) = _png_chunks(clean)
    iend = start - 8
    chunks = b"".join(_png_itxt(PREFIX + key, text) for key, text in fields.items())
    return clean[:iend] + chunks + clean[iend:]


def _png_read(data: bytes) -> dict[str, Any] | None:
    fields: dict[str, str] = {}
    for kind, start, stop in _png_chunks(data):
        if not _png_is_ours(data, kind, start, stop):
            continue
        body, crc = data[start : stop - 4], data[stop - 4 : stop]
        if zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise _Damaged(f"its {kind.decode()} chunk fails its CRC check")
        key, text = _png_text(kind, body)
        fields[key[len(PREFIX) :]] = text
    return _result(fields) if "recipe" in fields else None


# ---------------------------------------------------------------- JPEG


def _jpeg_segments(data: bytes):
    """Yield (marker, segment start, data start, segment end) up to the first SOS or EOI."""
    pos, end = 2, len(data)
    while True:
        if pos >= end:
            raise _Damaged("the JPEG ends before its image data (the file is cut short)")
        if data[pos] != 0xFF:
            raise _Damaged(f"the JPEG has no marker at byte {pos}")
        start = pos
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            raise _Damaged("the JPEG ends inside a marker")
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers carry no length
            yield marker, start, pos, pos
            continue
        if marker == 0xD9:
            return
        if pos + 2 > end:
            raise _Damaged("the JPEG ends inside a segment header")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > end:
            raise _Damaged(f"the JPEG segment at byte {start} runs past the end of the file")
        yield marker, start, pos + 2, pos + length
        if marker == 0xDA:
            return
        pos += length


def _jpeg_is_ours(data: bytes, marker: int, body: int, stop: int) -> bool:
    return marker == _JPEG_APP11 and data[body : body + len(_JPEG_SIG)] == _JPEG_SIG


def _jpeg_strip(data: bytes) -> bytes:
    """The JPEG without our APP11 segments; every other byte kept."""
    parts, pos = [], 0
    for marker, start, body, stop in _jpeg_segments(data):
        if _jpeg_is_ours(data, marker, body, stop):
            parts.append(data[pos:start])
            pos = stop
    return b"".join(parts) + data[pos:]


def _jpeg_embed(data: bytes, fields: dict[str, str]) -> bytes:
    doc = _document(fields)
    pieces = [doc[i : i + _JPEG_CHUNK] for i in range(0, len(doc), _JPEG_CHUNK)]
    if len(pieces) > 0xFFFF:
        raise ValidationError(
            "the recipe is too large to embed in a JPEG file.", field="recipe_json"
        )
    ours = b"".join(
        b"\xff\xeb"
        + struct.pack(">H", 2 + len(_JPEG_SIG) + _JPEG_HEAD.size + len(piece))
        + _JPEG_SIG
        + _JPEG_HEAD.pack(i, len(pieces), zlib.crc32(doc))
        + piece
        for i, piece in enumerate(pieces)
    )
    clean = _jpeg_strip(data)
    # JFIF (APP0) and EXIF (APP1) must come first, so ours goes right after them.
    at = 2
    for marker, _start, _body, stop in _jpeg_segments(clean):
        if marker not in (0xE0, 0xE1):
            break
        at = stop
    return clean[:at] + ours + clean[at:]


def _jpeg_read(data: bytes) -> dict[str, Any] | None:
    parts: dict[int, bytes] = {}
    count = crc = None
    for marker, _start, body, stop in _jpeg_segments(data):
        if not _jpeg_is_ours(data, marker, body, stop):
            continue
        head = body + len(_JPEG_SIG)
        if stop < head + _JPEG_HEAD.size:
            raise _Damaged("its flux-nb segment is malformed")
        index, total, checksum = _JPEG_HEAD.unpack(data[head : head + _JPEG_HEAD.size])
        if count is not None and (total, checksum) != (count, crc):
            raise _Damaged("its flux-nb segments do not belong together")
        count, crc = total, checksum
        parts[index] = data[head + _JPEG_HEAD.size : stop]
    if count is None:
        return None
    if sorted(parts) != list(range(count)):
        raise _Damaged(f"only {len(parts)} of its {count} flux-nb segments are present")
    doc = b"".join(parts[i] for i in range(count))
    if zlib.crc32(doc) != crc:
        raise _Damaged("its flux-nb segments fail their CRC check")
    return _from_document(doc)


# ---------------------------------------------------------------- EXIF UserComment (JPEG, WebP)

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_EXIF_HEAD = b"Exif\0\0"


def _exif_with_comment(tiff: bytes | None, text: str | None) -> bytes | None:
    """TIFF-format EXIF with UserComment set to text (removed when text is None); other tags kept.
    None when nothing would be left. Unicode in the TIFF's byte order, as piexif writes it."""
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
        codec = "utf-16-be" if exif.endian == ">" else "utf-16-le"
        ifd[_USER_COMMENT] = b"UNICODE\0" + text.encode(codec)
    if not ifd:
        exif.pop(_EXIF_IFD, None)
        if not len(exif):
            return None
    return exif.tobytes()[len(_EXIF_HEAD) :]


def _exif_comment(tiff: bytes) -> str | None:
    """The EXIF UserComment as text (UNICODE, ASCII or undefined code), or None."""
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(tiff)
        raw = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:
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


def _jpeg_exif(data: bytes) -> tuple[int, int, bytes] | None:
    """Start, end and TIFF payload of the JPEG's EXIF APP1 segment."""
    for marker, start, body, stop in _jpeg_segments(data):
        if marker == 0xE1 and data[body : body + 6] == _EXIF_HEAD:
            return start, stop, data[body + 6 : stop]
    return None


def _jpeg_with_comment(data: bytes, text: str | None) -> bytes:
    found = _jpeg_exif(data)
    tiff = _exif_with_comment(found[2] if found else None, text)
    if found and tiff is found[2]:
        return data
    segment = b""
    if tiff is not None:
        payload = _EXIF_HEAD + tiff
        if len(payload) + 2 > 0xFFFF:
            raise _Damaged("its EXIF data would not fit in one segment")
        segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    if found:
        return data[: found[0]] + segment + data[found[1] :]
    if not segment:
        return data
    at = 2  # after SOI, or after JFIF (APP0) when the file starts with it
    for marker, _start, _body, stop in _jpeg_segments(data):
        if marker == 0xE0:
            at = stop
        break
    return data[:at] + segment + data[at:]


def _jpeg_parameters(data: bytes) -> str | None:
    found = _jpeg_exif(data)
    return _exif_comment(found[2]) if found else None


# ---------------------------------------------------------------- WebP


def _riff_chunks(data: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """[(fourcc, payload)] inside the RIFF container, and where the container ends."""
    if len(data) < 12:
        raise _Damaged("the WebP file is cut short")
    (size,) = struct.unpack("<I", data[4:8])
    end = 8 + size
    if end > len(data) or size < 4:
        raise _Damaged("the WebP file is cut short (its RIFF size runs past the end)")
    chunks, pos = [], 12
    while pos < end:
        if pos + 8 > end:
            raise _Damaged("the WebP file ends inside a chunk header")
        kind, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if pos + 8 + length > end:
            raise _Damaged(f"the WebP chunk {kind!r} runs past the end of the file")
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return chunks, end


def _riff_pack(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        kind + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")
        for kind, payload in chunks
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _webp_canvas(kind: bytes, payload: bytes) -> tuple[int, int, bool]:
    """Width, height and alpha hint from a VP8 or VP8L bitstream header (no decoding)."""
    if kind == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", payload[6:10])
        return w & 0x3FFF, h & 0x3FFF, False
    if kind == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    raise _Damaged(f"its {kind.decode().strip()} bitstream header is malformed")


def _xmp_description(doc: bytes) -> bytes:
    return (
        b'<rdf:Description rdf:about="" xmlns:flux_nb="' + _XMP_NS.encode() + b'">'
        b"<flux_nb:data>" + escape(doc.decode()).encode() + b"</flux_nb:data>"
        b"</rdf:Description>\n"
    )


def _xmp_without_ours(packet: bytes) -> bytes | None:
    """The XMP packet with our description removed; None when nothing else was in it."""
    rest = _XMP_OURS.sub(b"", packet)
    return None if rest == _XMP_HEAD + _XMP_TAIL else rest


def _webp_embed(data: bytes, fields: dict[str, str]) -> bytes:
    chunks, end = _riff_chunks(data)
    ours = _xmp_description(_document(fields))
    xmp = next((p for k, p in chunks if k == b"XMP "), None)
    if xmp is not None and (xmp := _xmp_without_ours(xmp)) is not None:
        at = xmp.rfind(b"</rdf:RDF>")
        if at < 0:
            raise FluxError(
                "cannot add the flux-nb recipe: the WebP's own XMP packet has no rdf:RDF element.",
                hint="Save the image as PNG, or keep the recipe in a sidecar JSON file.",
            )
        packet = xmp[:at] + ours + xmp[at:]
    else:
        packet = _XMP_HEAD + ours + _XMP_TAIL
    chunks = _vp8x_flagged([(k, p) for k, p in chunks if k != b"XMP "], _VP8X_XMP)
    chunks.append((b"XMP ", packet))
    return _riff_pack(chunks) + data[end:]


def _vp8x_flagged(chunks: list[tuple[bytes, bytes]], flag: int) -> list[tuple[bytes, bytes]]:
    """The chunks with `flag` set in VP8X; a simple file gains the VP8X chunk it needs for it."""
    chunks = list(chunks)
    if chunks and chunks[0][0] == b"VP8X":
        vp8x = bytearray(chunks[0][1])
        if len(vp8x) < 10:
            raise _Damaged("its VP8X chunk is malformed")
        vp8x[0] |= flag
        chunks[0] = (b"VP8X", bytes(vp8x))
        return chunks
    image = next(((k, p) for k, p in chunks if k in _WEBP_IMAGE), None)
    if image is None:
        raise _Damaged("the WebP file has no image chunk")
    w, h, alpha = _webp_canvas(*image)
    flags = flag | (_VP8X_ALPHA if alpha else 0)
    header = struct.pack("<I", flags) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    chunks.insert(0, (b"VP8X", header))
    return chunks


def _webp_with_comment(data: bytes, text: str | None) -> bytes:
    """Set (or remove) the EXIF UserComment; the EXIF chunk sits before XMP, as the spec orders."""
    chunks, end = _riff_chunks(data)
    old = next((p for k, p in chunks if k == b"EXIF"), None)
    if old is not None and old.startswith(_EXIF_HEAD):
        old = old[len(_EXIF_HEAD) :]
    tiff = _exif_with_comment(old, text)
    if tiff is old:
        return data
    chunks = [(k, p) for k, p in chunks if k != b"EXIF"]
    if tiff is None:
        if chunks and chunks[0][0] == b"VP8X":
            vp8x = bytearray(chunks[0][1])
            vp8x[0] &= ~_VP8X_EXIF & 0xFF
            chunks[0] = (b"VP8X", bytes(vp8x))
            # Back to the simple format when the VP8X chunk was only there for the EXIF.
            if len(chunks) == 2 and chunks[1][0] in _WEBP_IMAGE and vp8x[0] & ~_VP8X_ALPHA == 0:
                chunks = chunks[1:]
        return _riff_pack(chunks) + data[end:]
    chunks = _vp8x_flagged(chunks, _VP8X_EXIF)
    at = next((i for i, (k, _) in enumerate(chunks) if k == b"XMP "), len(chunks))
    chunks.insert(at, (b"EXIF", tiff))
    return _riff_pack(chunks) + data[end:]


def _webp_parameters(data: bytes) -> str | None:
    chunks, _ = _riff_chunks(data)
    tiff = next((p for k, p in chunks if k == b"EXIF"), None)
    if tiff is None:
        return None
    return _exif_comment(tiff[len(_EXIF_HEAD) :] if tiff.startswith(_EXIF_HEAD) else tiff)


def _webp_strip(data: bytes) -> bytes:
    chunks, end = _riff_chunks(data)
    out: list[tuple[bytes, bytes]] = []
    had_ours = False
    for kind, payload in chunks:
        if kind == b"XMP " and _XMP_OURS.search(payload):
            had_ours = True
            rest = _xmp_without_ours(payload)
            if rest is None:
                continue
            payload = rest
        out.append((kind, payload))
    if not had_ours:
        return data
    if not any(k == b"XMP " for k, _ in out) and out and out[0][0] == b"VP8X":
        vp8x = bytearray(out[0][1])
        vp8x[0] &= ~_VP8X_XMP & 0xFF
        out[0] = (b"VP8X", bytes(vp8x))
        # Back to the simple format when the VP8X chunk was only there for our XMP.
        if len(out) == 2 and out[1][0] in _WEBP_IMAGE and vp8x[0] & ~_VP8X_ALPHA == 0:
            out = out[1:]
    return _riff_pack(out) + data[end:]


def _webp_read(data: bytes) -> dict[str, Any] | None:
    chunks, _ = _riff_chunks(data)
    for kind, payload in chunks:
        if kind != b"XMP " or _XMP_NS.encode() not in payload:
            continue
        if b"<!DOCTYPE" in payload or b"<!ENTITY" in payload:  # no entity expansion, ever
            raise _Damaged("its XMP packet declares a DOCTYPE")
        try:
            root = ET.fromstring(payload)
        except ET.ParseError as exc:
            raise _Damaged(f"its XMP packet is not valid XML ({exc})") from None
        tag = f"{{{_XMP_NS}}}data"
        for el in root.iter():
            text = el.text if el.tag == tag else el.attrib.get(tag)
            if text is not None:
                return _from_document(text.encode())
    return None


# ---------------------------------------------------------------- public


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
    """
    fields = _payload(recipe_json, extra)
    kind = sniff_format(data)
    if kind is None:
        raise FluxError(
            f"cannot embed the recipe: the data is not a PNG, JPEG or WebP image"
            f" (expected {fmt!r}).",
            hint="Save the recipe in a sidecar JSON file instead.",
        )
    data = bytes(data)
    if parameters is not None and not isinstance(parameters, str):
        raise ValidationError("the parameters text must be a string.", field="parameters")
    try:
        if kind == "png":
            data = _png_embed(data, fields)
            return data if parameters is None else _png_with_parameters(data, parameters)
        if kind == "jpg":
            if parameters is not None:  # first: our APP11 then goes after the new EXIF segment
                data = _jpeg_with_comment(data, parameters)
            return _jpeg_embed(data, fields)
        if parameters is not None:
            data = _webp_with_comment(data, parameters)
        return _webp_embed(data, fields)
    except _Damaged as exc:
        raise FluxError(
            f"cannot embed the recipe: {exc}.",
            hint="The image is damaged; keep the recipe in a sidecar JSON file.",
        ) from None


def strip_recipe(data: bytes) -> bytes:
    """The image bytes without any flux-nb metadata (e.g. to share an image without its prompt):
    the `parameters` text and the EXIF UserComment, which hold the prompt too, go as well."""
    data = bytes(data)
    kind = sniff_format(data)
    try:
        if kind == "png":
            return _png_strip(data, parameters=True)
        if kind == "jpg":
            return _jpeg_with_comment(_jpeg_strip(data), None)
        if kind == "webp":
            return _webp_strip(_webp_with_comment(data, None))
    except _Damaged as exc:
        raise FluxError(f"cannot strip the recipe: {exc}.") from None
    return data


def _image_bytes(source: str | os.PathLike | bytes) -> tuple[str, bytes]:
    """(a name for messages, the file's bytes) of a path or of bytes; one line when unreadable."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the image data", bytes(source)
    name = os.fspath(source)
    try:
        with open(name, "rb") as f:
            return name, f.read()
    except OSError as exc:
        raise FluxError(f"cannot read {name}: {exc.strerror or exc}.") from None


def read_recipe(source: str | os.PathLike | bytes) -> dict[str, Any]:
    """Return {"recipe": <dict>, **extra fields} from an image file path or its bytes.

    Only the container is parsed (no pixel decoding). Raises a one-line FluxError when the file
    cannot be read, is damaged, or carries no recipe.
    """
    name, data = _image_bytes(source)
    kind = sniff_format(data)
    try:
        if kind == "png":
            found = _png_read(data)
        elif kind == "jpg":
            found = _jpeg_read(data)
        elif kind == "webp":
            found = _webp_read(data)
        else:
            raise FluxError(
                f"{name} is not a PNG, JPEG or WebP image, so it carries no flux-nb recipe."
            )
    except _Damaged as exc:
        sidecar = None if isinstance(source, (bytes, bytearray, memoryview)) else _read_sidecar(name)
        if sidecar is not None:
            return sidecar
        raise FluxError(f"{name} is damaged: {exc}; its flux-nb recipe cannot be read.") from None
    if found is None and not isinstance(source, (bytes, bytearray, memoryview)):
        found = _read_sidecar(name)
    if found is None:
        raise FluxError(
            f"{name} carries no flux-nb recipe: it was not saved by flux-nb,"
            " or its metadata was stripped."
        )
    return found


def read_parameters(source: str | os.PathLike | bytes) -> str | None:
    """The A1111-style `parameters` text of an image (PNG text chunk, or EXIF UserComment in JPEG
    and WebP), whoever wrote it; None when there is none. Only the container is parsed."""
    name, data = _image_bytes(source)
    kind = sniff_format(data)
    try:
        if kind == "png":
            return _png_parameters(data)
        if kind == "jpg":
            return _jpeg_parameters(data)
        if kind == "webp":
            return _webp_parameters(data)
    except _Damaged as exc:
        raise FluxError(f"{name} is damaged: {exc}; its parameters cannot be read.") from None
    return None


def _read_sidecar(name: str) -> dict[str, Any] | None:
    """The recipe beside an image whose own metadata could not take it (storage writes these)."""
    try:
        with open(name + ".recipe.json", encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("recipe"), dict) else None


__all__ = [
    "PARAMETERS_KEY",
    "RECIPE_KEY",
    "embed_recipe",
    "read_parameters",
    "read_recipe",
    "sniff_format",
    "strip_recipe",
]
