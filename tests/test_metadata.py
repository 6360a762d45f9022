"""The recipe travels inside the image file, and the image bytes the server made are kept."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from flux_nb.core._errors import FluxError
from flux_nb.core._recipe import Recipe
from flux_nb.files._metadata import (
    RECIPE_KEY,
    NoRoom,
    embed_recipe,
    read_parameters,
    read_recipe,
    sidecar_path,
    sniff_format,
    strip_recipe,
)

EXTRA = {"generation_id": "gen-123", "backend": "local", "engine": "preview (offline stand-in)"}
NO_RECIPE = "carries no flux-nb recipe: it was not saved by flux-nb, or its metadata was stripped."


def _picture(mode: str = "RGB", size: tuple[int, int] = (37, 23)) -> Image.Image:
    """A small image with varied pixels (and varied alpha), so encoders keep real data."""
    w, h = size
    raw = bytes(
        (x * 7 + y * 13 + c * 50) % 256 for y in range(h) for x in range(w) for c in range(4)
    )
    return Image.frombytes("RGBA", size, raw).convert(mode)


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, im.tobytes()


def _png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "a lighthouse")
    info.add_itxt("Comment", "déjà vu", zip=True)
    return _encode(_picture("RGBA"), "PNG", pnginfo=info)


def _jpeg_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "an ImageDescription"
    return _encode(_picture(), "JPEG", quality=90, exif=exif)


SAMPLES = {
    "png": lambda: _encode(_picture(), "PNG"),
    "png-text": _png_with_text,
    "jpeg": lambda: _encode(_picture(), "JPEG", quality=90),
    "jpeg-exif": _jpeg_with_exif,
    "webp-lossy": lambda: _encode(_picture(), "WEBP", quality=80),
    "webp-lossless": lambda: _encode(_picture(), "WEBP", lossless=True),
    "webp-lossless-alpha": lambda: _encode(_picture("RGBA"), "WEBP", lossless=True),
    "webp-lossy-alpha": lambda: _encode(_picture("RGBA"), "WEBP", quality=80),  # already VP8X
    "webp-xmp": lambda: _encode(_picture(), "WEBP", quality=80, xmp=_foreign_xmp()),
}


def _foreign_xmp() -> bytes:
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
        b' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        b"<dc:creator>someone</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
    )


def _recipe(**changes) -> Recipe:
    return Recipe.build("a lighthouse at dusk, «oil on canvas»", **{"seed": 1234, **changes})


@pytest.mark.parametrize("name", SAMPLES)
def test_round_trip_keeps_pixels(name):
    data = SAMPLES[name]()
    recipe = _recipe()
    out = embed_recipe(data, name.split("-")[0], recipe.to_json(), EXTRA)

    assert sniff_format(out) == sniff_format(data)
    assert _pixels(out) == _pixels(data)
    found = read_recipe(out)
    assert found == {"recipe": recipe.to_dict(), **EXTRA}
    assert Recipe.from_json(json.dumps(found["recipe"])) == recipe
    assert strip_recipe(out) == data


def _png_chunk_list(data: bytes) -> list[bytes]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return chunks


def test_png_chunks_go_before_the_image_data():
    data = _png_with_text()
    out = embed_recipe(data, "png", _recipe().to_json(), EXTRA)
    before, after = _png_chunk_list(data), _png_chunk_list(out)
    idat = next(i for i, c in enumerate(before) if c[4:8] == b"IDAT")
    added = len(EXTRA) + 1
    assert after[:idat] == before[:idat] and after[idat + added :] == before[idat:]
    new = after[idat : idat + added]
    assert all(c[4:8] == b"iTXt" for c in new)
    assert new[0][8:].startswith(RECIPE_KEY.encode() + b"\0")
    for chunk in new:
        assert zlib.crc32(chunk[4:-4]) == struct.unpack(">I", chunk[-4:])[0]
    # Image.open has the recipe, and keeps the file's own text, before any pixel is read.
    with Image.open(io.BytesIO(out)) as im:
        assert im.tile  # the pixel data is still unread
        assert json.loads(im.info[RECIPE_KEY]) == _recipe().to_dict()
        assert im.info["flux_nb_engine"] == EXTRA["engine"]
        assert im.info["Title"] == "a lighthouse" and im.info["Comment"] == "déjà vu"


def test_embedding_again_replaces_the_recipe():
    for make in (
        SAMPLES["png"],
        SAMPLES["jpeg-exif"],
        SAMPLES["webp-lossless"],
        SAMPLES["webp-xmp"],
    ):
        data = make()
        once = embed_recipe(data, "png", _recipe().to_json(), EXTRA)
        twice = embed_recipe(once, "png", _recipe(seed=7).to_json(), {"backend": "hosted"})
        assert read_recipe(twice) == {"recipe": _recipe(seed=7).to_dict(), "backend": "hosted"}
        assert _pixels(twice) == _pixels(data)


def test_jpeg_xmp_segment_follows_jfif_and_exif():
    """Ours is an XMP packet (APP1), which exiftool knows: earlier versions' APP11 segment it
    reported as unknown."""
    data = _jpeg_with_exif()
    out = embed_recipe(data, "jpg", _recipe().to_json())
    at = out.index(b"http://ns.adobe.com/xap/1.0/\0") - 4
    assert out[:at] == data[:at]  # SOI, APP0 (JFIF) and APP1 (EXIF) untouched, ours after them
    assert data[at - 2 : at] != b"\xff\xd8" and b"Exif\0\0" in data[:at]
    assert out[at : at + 2] == b"\xff\xe1" and b"\xff\xeb" not in out[: out.index(b"\xff\xda")]
    with Image.open(io.BytesIO(out)) as im:
        assert im.getexif()[0x010E] == "an ImageDescription"
        assert b"urn:flux-nb:xmp:1.0/" in im.info["xmp"]


def test_jpeg_keeps_a_foreign_xmp_packet_and_an_old_app11_recipe_is_replaced(tmp_path):
    foreign = (
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        b"<dc:creator>someone</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
        b'<?xpacket end="w"?>'
    )
    data = _encode(_picture(), "JPEG", quality=90, xmp=foreign)
    out = embed_recipe(data, "jpg", _recipe().to_json(), EXTRA)
    assert out.count(b"http://ns.adobe.com/xap/1.0/\0") == 1  # one packet: theirs, ours inside
    assert b"<dc:creator>someone</dc:creator>" in out
    assert read_recipe(out) == {"recipe": _recipe().to_dict(), **EXTRA}
    assert strip_recipe(out).count(b"<dc:creator>someone</dc:creator>") == 1
    assert b"flux-nb" not in strip_recipe(out)
    old = (OLD / "old.jpg").read_bytes()  # recipe in APP11, as earlier versions wrote it
    again = embed_recipe(old, "jpg", _recipe(seed=5).to_json())
    assert b"flux_nb\0" not in again and read_recipe(again)["recipe"]["seed"] == 5


def test_webp_simple_file_becomes_extended_with_xmp():
    data = SAMPLES["webp-lossless-alpha"]()
    assert data[12:16] == b"VP8L"
    out = embed_recipe(data, "webp", _recipe().to_json())
    assert out[12:16] == b"VP8X" and out[20] & 0x04 and out[20] & 0x10
    assert struct.unpack("<I", out[4:8])[0] == len(out) - 8
    with Image.open(io.BytesIO(out)) as im:
        assert im.size == (37, 23)
        assert b"urn:flux-nb:xmp:1.0/" in im.info["xmp"]


def test_webp_keeps_a_foreign_xmp_packet():
    out = embed_recipe(SAMPLES["webp-xmp"](), "webp", _recipe().to_json())
    with Image.open(io.BytesIO(out)) as im:
        assert b"<dc:creator>someone</dc:creator>" in im.info["xmp"]
    assert b"<dc:creator>someone</dc:creator>" in strip_recipe(out)
    assert b"flux-nb" not in strip_recipe(out)


@pytest.mark.parametrize("name", ["png", "webp-lossy", "webp-lossless"])
def test_large_recipe_round_trips(name):
    blob = base64.b64encode(os.urandom(225_000)).decode()  # 300 KB of base64
    recipe = _recipe(input_image=[f"data:image/png;base64,{blob}"])
    data = SAMPLES[name]()
    out = embed_recipe(data, name.split("-")[0], recipe.to_json(), EXTRA)
    assert _pixels(out) == _pixels(data)
    found = read_recipe(out)
    assert Recipe.from_json(json.dumps(found.pop("recipe"))) == recipe
    assert found == EXTRA


def test_read_from_a_path(tmp_path):
    path = tmp_path / "result.png"
    path.write_bytes(embed_recipe(SAMPLES["png"](), "png", _recipe().to_json()))
    assert read_recipe(path)["recipe"]["seed"] == 1234
    assert read_recipe(str(path))["recipe"]["seed"] == 1234


def test_fmt_is_only_a_hint():
    out = embed_recipe(SAMPLES["jpeg"](), "png", _recipe().to_json())
    assert sniff_format(out) == "jpg" and read_recipe(out)["recipe"]["seed"] == 1234


@pytest.mark.parametrize("name", ["png", "png-text", "jpeg-exif", "webp-lossy", "webp-xmp"])
def test_file_without_recipe(tmp_path, name):
    path = tmp_path / f"plain.{name}"
    path.write_bytes(SAMPLES[name]())
    with pytest.raises(FluxError) as err:
        read_recipe(path)
    assert str(err.value) == f"{path} {NO_RECIPE}"


def test_unreadable_or_foreign_files(tmp_path):
    with pytest.raises(FluxError, match=r"^cannot read .*missing\.png: No such file"):
        read_recipe(tmp_path / "missing.png")
    with pytest.raises(FluxError, match="is not a PNG, JPEG or WebP image"):
        read_recipe(_encode(_picture(), "GIF"))
    with pytest.raises(FluxError, match="not a PNG, JPEG or WebP"):
        embed_recipe(b"GIF89a...", "png", _recipe().to_json())


@pytest.mark.parametrize("name", ["png", "jpeg", "webp-lossy", "webp-lossless"])
def test_damaged_bytes_give_one_line_errors(name):
    out = embed_recipe(SAMPLES[name](), name.split("-")[0], _recipe().to_json(), EXTRA)
    bad = [out[:n] for n in (3, 12, 20, 40, len(out) // 2, len(out) - 1)]
    flipped = bytearray(out)
    flipped[len(out) // 2 :] = bytes(b ^ 0x5A for b in flipped[len(out) // 2 :])
    bad += [bytes(flipped), out[:8] + os.urandom(200), b"", b"\0" * 64]
    for data in bad:
        try:
            read_recipe(data)
        except FluxError as exc:
            assert "\n" not in str(exc)
        else:  # the recipe sits before the image data, so a cut tail may leave it readable
            assert name in ("png", "jpeg") and data[:8] == out[:8]


@pytest.mark.parametrize("name", ["png", "jpeg", "webp-lossy"])
def test_crc_is_checked(name):
    out = bytearray(embed_recipe(SAMPLES[name](), name, _recipe().to_json()))
    at = out.index(b'"seed":1234') + 8
    out[at] ^= 1  # 1234 -> 1334: still valid JSON, but not the recipe that made the image
    with pytest.raises(FluxError, match="^the image data is damaged: .*recipe cannot be read.$"):
        read_recipe(bytes(out))


def test_small_recipe_stays_readable_large_one_is_compressed():
    small = embed_recipe(SAMPLES["png"](), "png", _recipe().to_json())
    assert _recipe().to_json().encode() in small
    big = _recipe(input_image=["data:image/png;base64," + "A" * 100_000])
    out = embed_recipe(SAMPLES["png"](), "png", big.to_json())
    assert len(out) < len(SAMPLES["png"]()) + 5_000


def test_bad_inputs_are_refused():
    data = SAMPLES["png"]()
    with pytest.raises(FluxError, match="not valid JSON"):
        embed_recipe(data, "png", "{nope")
    with pytest.raises(FluxError, match="must be an object"):
        embed_recipe(data, "png", "[1, 2]")
    with pytest.raises(FluxError, match="not allowed"):
        embed_recipe(data, "png", "{}", {"recipe": "x"})
    with pytest.raises(FluxError, match="not allowed"):
        embed_recipe(data, "png", "{}", {"Bad Key": "x"})
    with pytest.raises(FluxError, match="must be a string"):
        embed_recipe(data, "png", "{}", {"steps": 4})  # type: ignore[dict-item]


def test_sniff_format():
    assert sniff_format(SAMPLES["png"]()) == "png"
    assert sniff_format(SAMPLES["jpeg"]()) == "jpg"
    assert sniff_format(SAMPLES["webp-lossy"]()) == "webp"
    assert sniff_format(b"GIF89a") is None
    assert sniff_format(b"") is None


# -- files written by earlier versions (tests/fixtures/old_metadata, see make.py there) ----------

OLD = Path(__file__).parent / "fixtures" / "old_metadata"
OLD_EXPECTED = json.loads((OLD / "expected.json").read_text("utf-8"))


def _old_file(name: str, tmp_path: Path) -> Path:
    """The fixture as a file; big ones are stored gzipped (their recipes are not compressed)."""
    if (OLD / name).exists():
        return OLD / name
    path = tmp_path / name
    path.write_bytes(gzip.decompress((OLD / f"{name}.gz").read_bytes()))
    return path


@pytest.mark.parametrize("name", sorted(OLD_EXPECTED))
def test_files_from_earlier_versions_read_as_they_did(name, tmp_path):
    path = _old_file(name, tmp_path)
    want = OLD_EXPECTED[name]
    found = read_recipe(path)
    assert hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest() == want["sha256"]
    assert found["recipe"]["seed"] == want["seed"] and found["backend"] == "local"
    assert read_recipe(path.read_bytes()) == found
    assert read_parameters(path) == want["parameters"]
    if name.startswith("old-big"):  # a whole input image, as recipes held before content hashes
        assert len(found["recipe"]["input_image"][0]) > 1_000_000
    if name == "old-big.jpg":
        assert path.read_bytes().count(b"flux_nb\0") > 20  # split over 22 segments


def test_big_old_png_recipe_is_read_past_pillows_text_cap(tmp_path):
    """Pillow refuses PNG text over 1 MB inflated; the old recipe is 1.4 MB. The cap is raised
    only while flux-nb reads."""
    cap = PngImagePlugin.MAX_TEXT_CHUNK
    path = _old_file("old-big.png", tmp_path)
    with Image.open(path) as im, pytest.raises(ValueError, match="too large"):
        im.load()  # what a plain Pillow reader of the whole file meets
    assert read_recipe(path)["recipe"]["seed"] == 99
    assert PngImagePlugin.MAX_TEXT_CHUNK == cap


def test_re_embedding_an_old_png_moves_the_recipe_before_the_image_data(tmp_path):
    data = (OLD / "old-parameters.png").read_bytes()
    assert data.index(b"IDAT") < data.index(b"iTXtflux_nb_recipe")  # as the old writer put it
    out = embed_recipe(data, "png", _recipe(seed=5).to_json(), EXTRA)
    assert out.count(b"iTXtflux_nb_recipe") == 1 and out.count(b"tEXtparameters") == 1
    assert out.index(b"iTXtflux_nb_recipe") < out.index(b"IDAT")
    with Image.open(io.BytesIO(out)) as im:
        assert json.loads(im.info[RECIPE_KEY])["seed"] == 5
    assert _pixels(out) == _pixels(data)
    bare = strip_recipe(data)
    assert b"flux_nb" not in bare and read_parameters(bare) is None
    assert _pixels(bare) == _pixels(data)


@pytest.mark.parametrize("name", ["old.jpg", "old-parameters.webp"])
def test_old_jpeg_and_webp_are_re_embedded_and_stripped(name):
    data = (OLD / name).read_bytes()
    out = embed_recipe(data, "", _recipe(seed=5).to_json(), EXTRA)
    assert read_recipe(out) == {"recipe": _recipe(seed=5).to_dict(), **EXTRA}
    assert _pixels(out) == _pixels(data)
    bare = strip_recipe(out)
    assert b"flux_nb" not in bare and _pixels(bare) == _pixels(data)


@pytest.mark.parametrize("name", ["old-big.png", "old-big.jpg", "old-big.webp", "old.png"])
def test_damaged_old_files_give_one_clear_line(name, tmp_path):
    data = _old_file(name, tmp_path).read_bytes()
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FluxError) as err:
        read_recipe(cut)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith(f"{cut} is damaged: ") and message.endswith("cannot be read.")
    if not name.endswith(".webp"):  # Pillow's WebP decoder only says it could not start
        assert "the file is cut short" in message


# -- nothing is decoded to read ---------------------------------------------------------------


def test_reading_decodes_no_pixels(monkeypatch, tmp_path):
    from PIL import ImageFile, WebPImagePlugin

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{self.format} pixels decoded while reading metadata")

    files = [_old_file(name, tmp_path) for name in sorted(OLD_EXPECTED)]
    for name in ("png", "jpeg-exif", "webp-lossy", "webp-xmp"):
        path = tmp_path / f"new-{name}"
        path.write_bytes(
            embed_recipe(
                SAMPLES[name](), "", _recipe().to_json(), EXTRA, parameters="a prompt\nSteps: 4"
            )
        )
        files.append(path)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    for path in files:
        assert read_recipe(path)["recipe"]
        read_parameters(path)
    with pytest.raises(AssertionError, match="decoded"):  # the trap is live
        _pixels(files[0].read_bytes())


# -- the sidecar, where embedding is not worth its code ----------------------------------------


def _big_recipe() -> Recipe:
    blob = base64.b64encode(os.urandom(60_000)).decode()  # 80 KB: over one JPEG segment
    return _recipe(input_image=[f"data:image/png;base64,{blob}"])


def test_a_jpeg_recipe_over_one_segment_goes_beside_the_image(tmp_path):
    from flux_nb.files._storage import OutputFolder

    data = _jpeg_with_exif()
    recipe = _big_recipe()
    with pytest.raises(NoRoom) as err:
        embed_recipe(data, "jpg", recipe.to_json(), EXTRA, parameters="a prompt\nSteps: 4")
    assert read_parameters(err.value.data) == "a prompt\nSteps: 4"  # the rest was embedded
    assert "\n" not in str(err.value)

    path = OutputFolder(tmp_path).save(data, recipe, "gen-big-1", EXTRA)
    sidecar = sidecar_path(path)
    assert sidecar.name == path.name + ".recipe.json" and sidecar.exists()
    assert read_recipe(path) == {"recipe": recipe.to_dict(), **EXTRA}
    assert _pixels(path.read_bytes()) == _pixels(data)
    assert read_parameters(path).startswith(recipe.prompt)  # A1111 text still in the EXIF
    with Image.open(path) as im:
        assert im.getexif()[0x010E] == "an ImageDescription"  # the server's EXIF kept
    with pytest.raises(FluxError, match="carries no flux-nb recipe"):
        read_recipe(path.read_bytes())  # bytes alone have no sidecar
    # A small recipe is embedded, one segment, and no sidecar is written.
    small = OutputFolder(tmp_path).save(data, _recipe(), "gen-small-1", EXTRA)
    assert not sidecar_path(small).exists()
    assert small.read_bytes().count(b"http://ns.adobe.com/xap/1.0/\0") == 1
    assert read_recipe(small.read_bytes())["recipe"] == _recipe().to_dict()


def test_a_webp_whose_xmp_has_no_rdf_goes_beside_the_image(tmp_path):
    odd = _encode(_picture(), "WEBP", quality=80, xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    with pytest.raises(NoRoom) as err:
        embed_recipe(odd, "webp", _recipe().to_json())
    assert _pixels(err.value.data) == _pixels(odd)
