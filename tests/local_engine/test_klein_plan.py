"""The engine follows its memory plan: the plan's sizes agree with the real modules (counted on
the meta device), the tiny pipeline served with a torchao int8 text encoder through the real
server and client, two pipelines on `--device cpu,cpu` running two generations at once, and a
float16 run whose latents overflow failing that generation in one line."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from klein_random import KLEIN_4B, TINY, random_pipeline
from PIL import Image

from flux_nb.core._config import Settings
from flux_nb.core._recipe import MODEL_ID, Recipe
from flux_nb.jobs._sessions import Session
from flux_nb.server import LocalServer
from flux_nb.server.engines import EngineConfig, EngineError
from flux_nb.server.engines._flux2_klein import Flux2KleinEngine, adopt_pipeline, load_pipeline
from flux_nb.server.engines._plan import sizes_from_configs

SMALL = 0.125  # as conftest's: small pictures


@pytest.mark.parametrize("name,configs", [("klein-4b", KLEIN_4B), ("tiny", TINY)])
def test_the_plans_parameter_counts_match_the_modules(name, configs) -> None:
    with torch.device("meta"):
        pipe = random_pipeline(configs, device="meta")
    sizes = sizes_from_configs(configs, name)
    for part in ("text_encoder", "transformer", "vae"):
        module = getattr(pipe, part)
        counted = sum(p.numel() for p in module.parameters())
        linear = sum(
            m.weight.numel()
            for n, m in module.named_modules()
            if isinstance(m, torch.nn.Linear) and "lm_head" not in n
        )
        # the big parts exactly enough to plan with; the VAE's convolutions roughly
        tolerance = 0.15 if part == "vae" else 0.002
        assert sizes.part(part).params == pytest.approx(counted, rel=tolerance), part
        if part != "vae":
            assert sizes.part(part).linear == pytest.approx(linear, rel=tolerance), part


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_a_torchao_int8_text_encoder_is_served_through_the_real_server(
    klein_folder: Path, tmp_path: Path, capfd
) -> None:
    from torchao.utils import TorchAOBaseTensor

    config = EngineConfig(
        "flux2-klein",
        model=str(klein_folder),
        device="cpu",
        size_scale=SMALL,
        quantize=(("text_encoder", "int8"),),
    )
    session = Session(
        "local", engine=config, output_dir=tmp_path, settings=Settings(step_delay=0.0)
    )
    try:
        gen = session.run("a quantized fox", seed=5, num_inference_steps=2, aspect_ratio="1:1")
        assert gen.status == "succeeded" and gen.path is not None, gen.reason
    finally:
        session.close()
    err = capfd.readouterr().err
    assert "flux-nb: flux2-klein plan: cpu on cpu, float32, text encoder int8: fits" in err
    loaded = load_pipeline(config)
    assert loaded.plan.quantize == {"text_encoder": "int8", "transformer": "none"}
    weights = [
        m.weight
        for m in loaded.pipe.text_encoder.model.layers.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    quantized = [w for w in weights if isinstance(w, TorchAOBaseTensor)]
    assert quantized, "the text encoder's Linear layers are not torchao tensors"
    assert not any(isinstance(p, TorchAOBaseTensor) for p in loaded.pipe.transformer.parameters())
    # the same recipe unquantized: near the same picture (torchao's int8 costs ~0.02/255)
    plain = Session(
        "local",
        engine=EngineConfig("flux2-klein", model=str(klein_folder), device="cpu", size_scale=SMALL),
        output_dir=tmp_path / "plain",
        settings=Settings(step_delay=0.0),
        announce=None,
    )
    try:
        ref = plain.run("a quantized fox", seed=5, num_inference_steps=2, aspect_ratio="1:1")
    finally:
        plain.close()
    assert np.abs(pixels(gen.path) - pixels(ref.path)).max() <= 2


def test_flux_nb_serve_quantize_prints_the_plan_and_serves(klein_folder: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "flux_nb", "serve", "--port", "0", "--engine", "flux2-klein",
            "--model", str(klein_folder), "--device", "cpu", "--quantize", "text-encoder=int8",
            "--preload",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert "flux-nb local server on" in line, process.stderr.read()
        url = line.split(" on ", 1)[1].split(",", 1)[0]
        with httpx.Client(base_url=url, timeout=120.0) as api:
            body = {"model": MODEL_ID, "prompt": "a fox", "num_inference_steps": 1, "seed": 3}
            done = api.post("/api/ai/images/generate", json={**body, "aspect_ratio": "1:1"})
            assert done.status_code == 200, done.text
            model = api.get(f"/api/ai/models/{MODEL_ID}").json()
        assert "quantized: text encoder int8" in model["description"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    err = process.stderr.read()
    assert "flux2-klein plan: cpu on cpu, float32, text encoder int8: fits" in err


def test_two_cpu_devices_run_two_generations_at_once(klein_folder: Path, tmp_path: Path) -> None:
    config = EngineConfig(
        "flux2-klein", model=f"{klein_folder}#two", device="cpu,cpu", size_scale=SMALL
    )
    both_running = threading.Barrier(2)

    class MeetsTheOther:
        """A real tiny pipeline whose call waits until the other device's call has begun too: a
        generation run after the other, not beside it, breaks the barrier and fails."""

        def __init__(self, pipe) -> None:
            self.pipe = pipe

        def __call__(self, **kwargs):
            both_running.wait(timeout=120)
            return self.pipe(**kwargs)

        def __getattr__(self, name):
            return getattr(self.pipe, name)

    for slot in (0, 1):
        adopt_pipeline(config, MeetsTheOther(random_pipeline(TINY)), slot=slot)
    with LocalServer(engine=config) as server, httpx.Client(base_url=server.url) as api:
        ids = [
            api.post(
                "/api/ai/queue",
                json={"model": MODEL_ID, "prompt": f"fox {i}", "num_inference_steps": 2},
            ).json()["generations"][0]["generation_id"]
            for i in range(2)
        ]
        rows = [wait_done(api, gid) for gid in ids]
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"], rows
    assert load_pipeline(config, 0).pipe is not load_pipeline(config, 1).pipe


def wait_done(api: httpx.Client, gid: str) -> dict:
    import time

    deadline = time.monotonic() + 180
    while (row := api.get(f"/api/ai/queue/{gid}").json())["status"] in ("queued", "processing"):
        assert time.monotonic() < deadline, row
        time.sleep(0.05)
    return row


def test_float16_latents_that_turn_non_finite_fail_in_one_line() -> None:
    config = EngineConfig("flux2-klein", model="tiny-overflowing-fp16", device="cpu")
    pipe = random_pipeline(TINY, dtype=torch.float16)
    with torch.no_grad():
        # the transformer clamps float16 activations to +-65504, so what FLUX.1 showed in float16
        # (NaN latents, diffusers #9096) is made here by a NaN in its last layer
        pipe.transformer.proj_out.weight.fill_(float("nan"))
    adopt_pipeline(config, pipe)
    engine = Flux2KleinEngine(config)
    recipe = Recipe.build("a fox", seed=1, num_inference_steps=2, aspect_ratio="1:1")
    with pytest.raises(EngineError) as failure:
        engine.render(recipe, [])
    message = str(failure.value)
    assert "non-finite" in message and "float16" in message and "--dtype float32" in message
    assert "at step 1:" in message  # the first step's, read once after the run
    assert "\n" not in message


def test_float16_latents_that_stay_finite_make_the_image() -> None:
    config = EngineConfig("flux2-klein", model="tiny-finite-fp16", device="cpu", size_scale=SMALL)
    adopt_pipeline(config, random_pipeline(TINY, dtype=torch.float16))
    recipe = Recipe.build("a fox", seed=1, num_inference_steps=3, aspect_ratio="1:1")
    steps: list[int] = []
    data, content_type = Flux2KleinEngine(config).render(
        recipe, [], on_step=lambda i, _n: steps.append(i)
    )
    assert content_type == "image/png" and steps == [1, 2, 3]
    assert Image.open(io.BytesIO(data)).size == (128, 128)


def test_without_torchao_quantizing_names_the_pip_line(monkeypatch, klein_folder: Path) -> None:
    from flux_nb.server.engines import EngineUnavailable
    from flux_nb.server.engines._flux2_klein import _quantize

    monkeypatch.setitem(sys.modules, "torchao", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    forced = EngineConfig(
        "flux2-klein", model=str(klein_folder), quantize=(("transformer", "int8"),)
    )
    with pytest.raises(
        EngineUnavailable,
        match=r"^--quantize transformer=int8 needs torchao: run pip install torchao$",
    ):
        forced.check_available()
    # auto quantizing (the plan's choice) fails at load with the same line
    with pytest.raises(
        EngineUnavailable, match=r"text-encoder=int8 needs torchao: run pip install torchao$"
    ):
        _quantize(random_pipeline(TINY).text_encoder, "text_encoder", "int8")
