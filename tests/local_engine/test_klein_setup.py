"""Setting flux2-klein up: `flux-nb serve --engine flux2-klein --model FOLDER` for real, and one
clear line (never a traceback) for weights that are not there and devices that are not there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from flux_nb.core._recipe import MODEL_ID
from flux_nb.server.engines import EngineConfig, EngineUnavailable
from flux_nb.server.engines._flux2_klein import load_pipeline


def failed_message(make_server, config: EngineConfig) -> str:
    """The error_message of a generation on a server with this engine: setup problems show there."""
    server = make_server(engine=config)
    with httpx.Client(base_url=server.url, timeout=60.0) as api:
        body = {"model": MODEL_ID, "prompt": "a fox", "num_inference_steps": 1}
        gid = api.post("/api/ai/queue", json=body).json()["generations"][0]["generation_id"]
        deadline = time.monotonic() + 60
        while (row := api.get(f"/api/ai/queue/{gid}").json())["status"] in ("queued", "processing"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert row["status"] == "failed", row
    assert "\n" not in row["error_message"] and "Traceback" not in row["error_message"]
    return row["error_message"]


def test_weights_not_in_the_cache_say_what_to_download_and_the_folder_alternative(make_server):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: no test reaches the hub
    message = failed_message(make_server, EngineConfig("flux2-klein", device="cpu"))
    assert "black-forest-labs/FLUX.2-klein-4B are not in the Hugging Face cache" in message
    assert "hf download black-forest-labs/FLUX.2-klein-4B" in message
    assert "--model FOLDER" in message


def test_a_folder_that_is_not_there_or_not_a_pipeline_is_named(tmp_path):
    with pytest.raises(EngineUnavailable, match=r"^no folder /nowhere/klein: give a folder"):
        load_pipeline(EngineConfig("flux2-klein", model="/nowhere/klein", device="cpu"))
    with pytest.raises(EngineUnavailable, match="is not a Flux2KleinPipeline folder"):
        load_pipeline(EngineConfig("flux2-klein", model=str(tmp_path), device="cpu"))


def test_a_device_that_is_not_there_lists_the_devices_that_are(make_server, klein_folder):
    config = EngineConfig("flux2-klein", model=str(klein_folder), device="cuda")
    message = failed_message(make_server, config)
    assert message == "device 'cuda' is not available here; available: cpu (or --device auto)."


def test_offload_without_a_gpu_says_to_drop_it(klein_folder):
    with pytest.raises(EngineUnavailable, match=r"drop --memory \(and --offload\)"):
        load_pipeline(EngineConfig("flux2-klein", model=str(klein_folder), offload=True))


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flux_nb", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_flux_nb_serve_with_model_folder_and_preload_makes_an_image(klein_folder):
    process = serve("--engine", "flux2-klein", "--model", str(klein_folder), "--preload")
    try:
        line = process.stdout.readline()
        assert f"engine flux2-klein ({klein_folder}, diffusers)" in line, process.stderr.read()
        url = line.split(" on ", 1)[1].split(",", 1)[0]
        with httpx.Client(base_url=url, timeout=120.0) as api:
            body = {"model": MODEL_ID, "prompt": "a fox", "num_inference_steps": 1, "seed": 3}
            done = api.post("/api/ai/images/generate", json={**body, "aspect_ratio": "1:1"})
            assert done.status_code == 200, done.text
            image = httpx.get(done.json()["images"][0]["url"])  # the documented sync answer
            assert image.headers["content-type"] == "image/png" and len(image.content) > 1000
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


def test_flux_nb_serve_preload_fails_fast_with_one_line(klein_folder):
    process = serve(
        "--engine", "flux2-klein", "--model", str(klein_folder), "--device", "mps", "--preload"
    )
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "flux-nb serve: device 'mps' is not available here; available: cpu (or --device auto)."
    )
    assert "Traceback" not in err


def test_flux_nb_serve_refuses_klein_options_for_the_preview_engine():
    process = serve("--model", "x")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "those are for the flux2-klein engine" in err


def test_percent_flux_backend_local_switches_to_the_klein_engine(klein_folder, tmp_path, capsys):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    from flux_nb.jobs import _sessions as sessions

    shell = InteractiveShell.instance()
    old = sessions.set_session(None)
    os.environ["FLUX_NB_OUTPUT_DIR"] = str(tmp_path)
    try:
        shell.run_line_magic("load_ext", "flux_nb")
        shell.run_line_magic(
            "flux", f"backend local --engine flux2-klein --model {klein_folder} --device cpu"
        )
        out = capsys.readouterr().out
        assert f"flux2-klein ({klein_folder}, diffusers)" in out.splitlines()[-1]
        assert sessions.session().engine == f"flux2-klein ({klein_folder}, diffusers)"
        with pytest.raises(UsageError, match="^local engine: device 'tpu' is not one of"):
            shell.run_line_magic("flux", "backend local --engine flux2-klein --device tpu")
        with pytest.raises(UsageError, match="unknown option '--fast'"):
            shell.run_line_magic("flux", "backend local --fast")
        shell.run_line_magic(
            "flux",
            f"backend local --engine flux2-klein --model {klein_folder} --device cpu"
            " --quantize text-encoder=int8 --memory auto",
        )
        engine = sessions.session().server.runtime.engine
        assert engine.quantize == (("text_encoder", "int8"), ("transformer", "auto"))
        with pytest.raises(UsageError, match="the part is text-encoder or transformer"):
            shell.run_line_magic("flux", "backend local --engine flux2-klein --quantize vae=int8")
    finally:
        os.environ.pop("FLUX_NB_OUTPUT_DIR")
        sessions.set_session(old)
