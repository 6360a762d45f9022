"""Each file flux-nb saves, read by sd-parsers, SD Prompt Reader, A1111's own reading path
(piexif) and `exiftool -validate`: PNG, JPEG and WebP from a generation, a lineage edit's files,
a sweep's contact sheets, and a JPEG whose recipe is in its sidecar (its text in the file)."""

from __future__ import annotations

import json
import subprocess

import piexif
import piexif.helper
import pytest
from PIL import Image
from sd_parsers import ParserManager
from sd_parsers.data import Generators
from sd_prompt_reader.format.base_format import BaseFormat
from sd_prompt_reader.image_data_reader import ImageDataReader

CASES = [
    *(f"generate {fmt}" for fmt in ("png", "jpg", "webp")),
    *(f"lineage edit {fmt}" for fmt in ("png", "jpg", "webp")),
    *(f"contact sheet {fmt}" for fmt in ("png", "jpg", "webp")),
    "jpeg with sidecar",
]


@pytest.fixture(params=CASES)
def file(request, made) -> dict:
    found = [f for f in made if f["case"] == request.param]
    assert len(found) == 1, f"make_files.py made no {request.param!r}"
    entry = found[0]
    assert entry["parameters"], f"flux-nb wrote no parameters text into {entry['path']}"
    assert entry["sidecar"] == (request.param == "jpeg with sidecar")
    return entry


def test_sd_parsers_recognises_prompt_seed_steps_and_cfg(file):
    info = ParserManager().parse(file["path"])
    assert info is not None, f"sd-parsers does not recognise {file['path']}"
    assert info.generator == Generators.AUTOMATIC1111
    [sampler] = info.samplers
    assert [p.value for p in sampler.prompts] == [file["prompt"]]
    assert sampler.name == "Euler"
    params = sampler.parameters
    assert int(params["seed"]) == file["seed"]
    assert int(params["steps"]) == file["steps"]
    assert float(params["cfg_scale"]) == file["cfg_scale"]


def test_sd_prompt_reader_reads_it(file):
    reader = ImageDataReader(file["path"])
    assert reader.status == BaseFormat.Status.READ_SUCCESS, reader.status
    assert reader.tool == "A1111 webUI"
    assert reader.positive == file["prompt"]
    assert int(reader.parameter["seed"]) == file["seed"]
    assert int(reader.parameter["steps"]) == file["steps"]


def test_a1111_reads_the_text_its_own_way(file):
    """modules/images.py read_info_from_image: the PNG's `parameters` text, or the EXIF
    UserComment through piexif.load and piexif.helper.UserComment.load (no fallback here)."""
    with Image.open(file["path"]) as image:
        info = dict(image.info)
    if "exif" in info:
        exif = piexif.load(info["exif"])
        comment = exif["Exif"][piexif.ExifIFD.UserComment]
        assert isinstance(comment, bytes), f"UserComment read as {type(comment).__name__}"
        text = piexif.helper.UserComment.load(comment)
    else:
        text = info["parameters"]
    assert text == file["parameters"]
    assert "comment" not in info  # SD Prompt Reader would take a JPEG/WebP comment for Fooocus


def test_exiftool_validates_it(file, exiftool):
    done = subprocess.run(
        [exiftool, "-j", "-a", "-G1", "-validate", "-warning", "-error", file["path"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)
    problems = {
        k: v for k, v in report.items() if k.split(":")[-1].startswith(("Warning", "Error"))
    }
    assert report["ExifTool:Validate"] == "OK", problems
