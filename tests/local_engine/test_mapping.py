"""Recipe -> Flux2KleinPipeline arguments, output encoding, and imports that stay light."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from PIL import Image

from flux_nb.core._recipe import Recipe
from flux_nb.server.engines import EngineConfig
from flux_nb.server.engines._flux2_klein import (
    SIZES,
    encode,
    pipeline_kwargs,
    resolve_device,
    size_for,
)
from flux_nb.server.engines._plan import Machine, auto_dtype

HEAVY = ("torch", "diffusers", "transformers", "accelerate", "safetensors")


def test_each_aspect_ratio_is_about_one_megapixel_in_multiples_of_16() -> None:
    assert SIZES == {
        "1:1": (1024, 1024),
        "16:9": (1360, 768),
        "9:16": (768, 1360),
        "4:3": (1184, 880),
        "3:4": (880, 1184),
    }
    for ratio, (width, height) in SIZES.items():
        w, h = (int(x) for x in ratio.split(":"))
        assert width % 16 == 0 and height % 16 == 0
        assert 0.95e6 < width * height < 1.1e6
        assert abs(width / height - w / h) < 0.02, ratio


def test_size_scale_shrinks_in_multiples_of_16() -> None:
    assert size_for("16:9", 0.125) == (160, 96)
    assert size_for("1:1", 0.25) == (256, 256)
    assert size_for("9:16", 1.0) == (768, 1360)


def test_a_recipe_maps_to_keyword_arguments_with_a_cpu_generator() -> None:
    recipe = Recipe.build(
        "a lighthouse", seed=42, aspect_ratio="4:3", num_inference_steps=4, guidance_scale=3.5
    )
    kwargs = pipeline_kwargs(recipe)
    generator = kwargs.pop("generator")
    assert kwargs == {
        "prompt": "a lighthouse",
        "width": 1184,
        "height": 880,
        "num_inference_steps": 4,
        "guidance_scale": 3.5,
    }
    assert generator.device == torch.device("cpu")
    assert torch.equal(
        torch.randn(4, generator=generator),
        torch.randn(4, generator=torch.Generator("cpu").manual_seed(42)),
    )


def test_input_images_are_passed_as_a_list_of_rgb_images() -> None:
    recipe = Recipe.build("make it blue", seed=1, input_image=["data:image/png;base64,AA=="])
    inputs = [Image.new("RGBA", (80, 64), (1, 2, 3, 4)), Image.new("L", (64, 64), 9)]
    images = pipeline_kwargs(recipe, inputs)["image"]
    assert [im.mode for im in images] == ["RGB", "RGB"]
    assert [im.size for im in images] == [(80, 64), (64, 64)]
    assert images[0].getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    ("fmt", "quality", "content_type", "pil_format"),
    [
        ("png", "standard", "image/png", "PNG"),
        ("png", "high", "image/png", "PNG"),
        ("jpg", "standard", "image/jpeg", "JPEG"),
        ("jpg", "high", "image/jpeg", "JPEG"),
        ("webp", "standard", "image/webp", "WEBP"),
    ],
)
def test_output_format_and_quality_apply_when_encoding(fmt, quality, content_type, pil_format):
    picture = Image.effect_noise((96, 64), 40).convert("RGB")
    data, ctype = encode(picture, fmt, quality, "flux-nb flux2-klein")
    decoded = Image.open(io.BytesIO(data))
    assert ctype == content_type and decoded.format == pil_format and decoded.size == (96, 64)
    if fmt == "png":  # lossless at both qualities
        assert decoded.convert("RGB").tobytes() == picture.tobytes()
        assert decoded.info["flux_nb_engine"] == "flux2-klein"
    else:  # the engine in EXIF Software; no JPEG comment, which readers take for Fooocus JSON
        assert decoded.getexif()[0x0131] == "flux-nb flux2-klein"
        assert "comment" not in decoded.info


def test_jpeg_high_quality_keeps_more_than_standard() -> None:
    picture = Image.effect_noise((128, 128), 60).convert("RGB")
    assert len(encode(picture, "jpg", "high")[0]) > len(encode(picture, "jpg", "standard")[0])


def test_auto_device_and_dtype_on_this_cpu_machine() -> None:
    assert not torch.cuda.is_available()  # these machines have no GPU: the test says what it checks
    assert resolve_device("auto", torch) == "cpu"
    assert auto_dtype(Machine("cpu", 0.0, 0.0)) == "float32"
    assert auto_dtype(Machine("cuda", 0.0, 0.0, (8, 0))) == "bfloat16"
    assert auto_dtype(Machine("cuda:1", 0.0, 0.0, (7, 5))) == "float16"  # a T4: no bfloat16
    assert auto_dtype(Machine("mps", 0.0, 0.0)) == "bfloat16"


def test_engine_config_refuses_bad_values_in_one_line() -> None:
    with pytest.raises(ValueError, match="device 'tpu' is not one of"):
        EngineConfig("flux2-klein", device="tpu")
    with pytest.raises(ValueError, match="dtype 'int8' is not one of"):
        EngineConfig("flux2-klein", dtype="int8")
    with pytest.raises(ValueError, match="for the flux2-klein engine"):
        EngineConfig("preview", model="x")
    assert EngineConfig("flux2-klein").model == "black-forest-labs/FLUX.2-klein-4B"


def heavy_modules_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    import os

    script = code + f"\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


def test_import_load_ext_and_the_preview_engine_never_import_torch_or_diffusers(tmp_path) -> None:
    code = f"""
import flux_nb
from IPython.core.interactiveshell import InteractiveShell
InteractiveShell.instance().run_line_magic("load_ext", "flux_nb")
flux_nb.session(output_dir={str(tmp_path)!r}, announce=None).run(
    "a fox", seed=1, num_inference_steps=2
)
"""
    env = {"FLUX_NB_ENGINE": "preview", "FLUX_NB_OUTPUT_DIR": str(tmp_path)}
    assert heavy_modules_after(code, env) == []


def test_a_klein_session_imports_torch_only_at_its_first_image(tmp_path, klein_folder) -> None:
    code = """
import flux_nb
from IPython.core.interactiveshell import InteractiveShell
InteractiveShell.instance().run_line_magic("load_ext", "flux_nb")
"""
    env = {
        "FLUX_NB_ENGINE": "flux2-klein",
        "FLUX_NB_MODEL": str(klein_folder),
        "FLUX_NB_OUTPUT_DIR": str(tmp_path),
    }
    assert heavy_modules_after(code, env) == []
