"""flux2-klein behind the real local server, driven by the real client and raw HTTP: pixels equal
to a direct pipeline call, same seed same pixels, edits, progress, cancel, failures kept to their
generation, and the engine named wherever an image is shown or saved."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
import torch
from httpx_sse import connect_sse
from PIL import Image

from flux_nb.core._recipe import MODEL_ID
from flux_nb.files._metadata import read_recipe
from flux_nb.server import LocalServer
from flux_nb.server import _store as store

PROMPT = "a lighthouse on a cliff at dusk"


def pixels(image_or_bytes) -> np.ndarray:
    image = image_or_bytes
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    return np.asarray(image.convert("RGB"))


def direct(pipe, *, seed: int, width: int, height: int, steps: int, guidance: float, image=None):
    """What a user writes without flux-nb: the arguments spelled out by hand."""
    return pipe(
        prompt=PROMPT,
        image=image,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def enqueue(api: httpx.Client, **params) -> str:
    body = {"model": MODEL_ID, "prompt": PROMPT, "num_inference_steps": 2, **params}
    response = api.post("/api/ai/queue", json=body)
    assert response.status_code == 200, response.text
    return response.json()["generations"][0]["generation_id"]


def wait_for(api: httpx.Client, gid: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (row := api.get(f"/api/ai/queue/{gid}").json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, row
        time.sleep(0.02)
    return row


# --- pixels ---------------------------------------------------------------------------------------


def test_a_saved_image_has_the_pixels_of_a_direct_pipeline_call(klein_session, direct_pipe):
    gen = klein_session.run(
        PROMPT, seed=7, aspect_ratio="16:9", num_inference_steps=3, guidance_scale=2.5
    )
    assert gen.status == "succeeded", gen.reason
    expected = direct(direct_pipe, seed=7, width=160, height=96, steps=3, guidance=2.5)
    saved = Image.open(gen.path)
    assert saved.size == (160, 96)
    assert np.array_equal(pixels(saved), pixels(expected))


def test_same_seed_same_pixels_and_another_seed_other_pixels(klein_session):
    first = klein_session.run(PROMPT, seed=11, aspect_ratio="1:1", num_inference_steps=2)
    again = first.reproduce().wait(60)
    other = first.vary(seed=12).wait(60)
    assert np.array_equal(pixels(first.data), pixels(again.data))
    assert not np.array_equal(pixels(first.data), pixels(other.data))


def test_an_edit_passes_the_input_image_like_a_direct_call(klein_session, direct_pipe):
    source = Image.effect_noise((96, 80), 50).convert("RGBA")  # RGBA: the engine makes it RGB
    gen = klein_session.run(
        PROMPT, seed=3, aspect_ratio="1:1", num_inference_steps=2, input_image=png_data_uri(source)
    )
    assert gen.status == "succeeded", gen.reason
    expected = direct(
        direct_pipe,
        seed=3,
        width=128,
        height=128,
        steps=2,
        guidance=2.0,
        image=[source.convert("RGB")],
    )
    plain = direct(direct_pipe, seed=3, width=128, height=128, steps=2, guidance=2.0)
    assert np.array_equal(pixels(gen.data), pixels(expected))
    assert not np.array_equal(pixels(gen.data), pixels(plain))  # the input image mattered


def test_output_format_applies_to_the_served_file(api: httpx.Client):
    row = wait_for(api, enqueue(api, seed=5, aspect_ratio="9:16", output_format="jpg"))
    assert row["status"] == "succeeded", row
    served = httpx.get(row["result_url"])
    assert served.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(served.content)).size == (96, 160)


# --- progress and cancel --------------------------------------------------------------------------


def progress_of_one_generation(server: LocalServer, api: httpx.Client, steps: int, seed: int):
    """The (step, total) progress events of one generation, up to its completion event; then a
    second generation is run to its end on the same stream, and any event of the first that comes
    meanwhile is returned too (there must be none: nothing follows the end)."""
    seen, late = [], []
    with httpx.Client(base_url=server.url, timeout=60.0) as stream_client:
        with connect_sse(stream_client, "GET", "/api/events") as source:
            gid = enqueue(api, seed=seed, num_inference_steps=steps, aspect_ratio="1:1")
            after = None
            for sse in source.iter_sse():
                data = json.loads(sse.data)
                if data.get("generation_id") == gid and after is None:
                    if sse.event == "media_generation_progress":
                        seen.append((data["step"], data["total"]))
                    elif sse.event == "media_generation_completed":
                        after = enqueue(api, seed=seed + 1, num_inference_steps=1)
                    else:
                        raise AssertionError(f"{sse.event}: {data}")
                elif data.get("generation_id") == gid:
                    late.append((sse.event, data))
                elif data.get("generation_id") == after and sse.event.endswith("completed"):
                    break
    return seen, late


@pytest.fixture
def slow_steps(klein_config):
    """Each transformer call of the server's pipeline takes at least 0.15 s more, so the test, not
    the machine, decides how far apart the steps are."""
    from flux_nb.server.engines._flux2_klein import load_pipeline

    hook = load_pipeline(klein_config).pipe.transformer.register_forward_pre_hook(
        lambda *_: time.sleep(0.15)
    )
    yield 0.15
    hook.remove()


def test_progress_events_follow_the_pipeline_steps(
    klein_server: LocalServer, api: httpx.Client, slow_steps, monkeypatch
):
    """Steps further apart than the progress interval: every step is announced, in order, the
    first (processing) at step 0, and nothing after the completion event."""
    monkeypatch.setattr(store, "PROGRESS_INTERVAL", slow_steps / 3)
    steps = 6
    seen, late = progress_of_one_generation(klein_server, api, steps, seed=1)
    assert seen == [(step, steps) for step in range(steps + 1)]
    assert late == []


def test_steps_quicker_than_the_interval_are_throttled_to_the_first_event(
    klein_server: LocalServer, api: httpx.Client, monkeypatch
):
    """The fast path: an interval far longer than the tiny pipeline's whole run, whatever the
    machine's speed, leaves only the processing event (step 0, forced) before completion."""
    monkeypatch.setattr(store, "PROGRESS_INTERVAL", 3600.0)
    steps = 8
    seen, late = progress_of_one_generation(klein_server, api, steps, seed=3)
    assert seen == [(0, steps)]
    assert late == []


def test_cancel_stops_at_the_next_step_keeps_no_image_and_the_pipeline_still_works(
    klein_server: LocalServer, klein_config, api: httpx.Client, direct_pipe, slow_steps
):
    """Steps slowed to 0.15 s (slow_steps): on a fast machine the tiny pipeline's 50 steps would
    otherwise end before the DELETE arrives, and the test would say nothing about cancelling."""
    from flux_nb.server.engines._flux2_klein import load_pipeline

    # The server's own pipeline (one per weights, device and dtype in the process): count its
    # transformer calls, one per step.
    calls = []
    hook = load_pipeline(klein_config).pipe.transformer.register_forward_pre_hook(
        lambda *_: calls.append(1)
    )
    steps = 50
    try:
        with httpx.Client(base_url=klein_server.url, timeout=60.0) as stream_client:
            with connect_sse(stream_client, "GET", "/api/events") as source:
                gid = enqueue(api, seed=2, num_inference_steps=steps, aspect_ratio="1:1")
                for sse in source.iter_sse():
                    data = json.loads(sse.data)
                    if data.get("generation_id") == gid and data.get("step", 0) >= 1:
                        assert api.delete(f"/api/ai/queue/{gid}").status_code == 200
                        break
        row = wait_for(api, gid)
        assert row["status"] == "cancelled" and row["result_url"] is None
        # The next generation runs on the same single worker once the cancelled call has ended.
        after = wait_for(api, enqueue(api, seed=9, aspect_ratio="1:1", num_inference_steps=2))
    finally:
        hook.remove()
    assert after["status"] == "succeeded", after
    assert len(calls) - 2 < steps // 2, f"the cancelled call ran {len(calls) - 2} of {steps} steps"
    expected = direct(direct_pipe, seed=9, width=128, height=128, steps=2, guidance=2.0)
    assert np.array_equal(pixels(httpx.get(after["result_url"]).content), pixels(expected))


def test_each_aspect_ratio_gives_its_size_through_the_server(full_size_server: LocalServer):
    sizes = {
        "1:1": (1024, 1024),
        "16:9": (1360, 768),
        "9:16": (768, 1360),
        "4:3": (1184, 880),
        "3:4": (880, 1184),
    }
    with httpx.Client(base_url=full_size_server.url, timeout=120.0) as api:
        ids = {
            ratio: enqueue(
                api, seed=1, aspect_ratio=ratio, num_inference_steps=1, output_format="jpg"
            )
            for ratio in sizes
        }
        for ratio, gid in ids.items():
            row = wait_for(api, gid, timeout=120)
            assert row["status"] == "succeeded", row
            served = Image.open(io.BytesIO(httpx.get(row["result_url"]).content))
            assert served.size == sizes[ratio], ratio


# --- failures stay with their generation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "reason"),
    [((32, 48), "at least 64 px"), ((600, 64), "up to 8:1")],
)
def test_an_input_image_out_of_range_fails_that_generation_only(api: httpx.Client, size, reason):
    bad = enqueue(api, seed=1, input_image=[png_data_uri(Image.new("RGB", size, (9, 9, 9)))])
    good = enqueue(api, seed=1)
    failed, done = wait_for(api, bad), wait_for(api, good)
    assert failed["status"] == "failed" and done["status"] == "succeeded"
    message = failed["error_message"]
    assert "input_image[0]" in message and reason in message and "\n" not in message


def test_out_of_memory_fails_that_generation_in_one_line_and_the_engine_goes_on(klein_config):
    from flux_nb.core._recipe import Recipe
    from flux_nb.server.engines import EngineError, get_engine

    engine = get_engine(klein_config)
    recipe = Recipe.build(PROMPT, seed=4, aspect_ratio="1:1", num_inference_steps=3)

    def out_of_memory(step: int, total: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    with pytest.raises(EngineError) as failure:
        engine.render(recipe, [], on_step=out_of_memory)
    message = str(failure.value)
    assert message.startswith("out of memory on cpu making a 128x128 image (float32)")
    assert "flux-nb plan" in message and "--memory" in message and "\n" not in message
    data, content_type = engine.render(recipe, [])
    assert content_type == "image/png" and Image.open(io.BytesIO(data)).size == (128, 128)


def test_nothing_warns_about_guidance_on_every_call(klein_session, caplog):
    caplog.set_level("WARNING")
    gen = klein_session.run(PROMPT, seed=1, guidance_scale=7.5, num_inference_steps=1)
    assert gen.status == "succeeded"
    assert not [r for r in caplog.records if "ignored" in r.getMessage()]


# --- the engine and model are named ---------------------------------------------------------------


def test_the_server_names_the_engine_and_model(api: httpx.Client, klein_folder):
    label = f"flux2-klein ({klein_folder}, diffusers)"
    index = api.get("/").json()
    assert index["engine"] == label and "not FLUX" not in index["about"]
    model = api.get(f"/api/ai/models/{MODEL_ID}").json()  # the bare model object
    assert "Flux2KleinPipeline" in model["description"]
    assert "guidance_scale" in model["description"] and "ignore" in model["description"]
    row = wait_for(api, enqueue(api, seed=1))
    assert row["status"] == "succeeded" and "engine" not in row  # the documented generation object


def test_session_line_panel_header_card_and_file_metadata_name_the_engine(
    klein_session, klein_folder
):
    from flux_nb.notebook._cards import Card
    from flux_nb.notebook._panel import _header_html

    label = f"flux2-klein ({klein_folder}, diffusers)"
    line = klein_session.describe()
    assert label in line and "stand-in" not in line
    header = _header_html(klein_session)
    assert label in header and "preview" not in header
    gen = klein_session.run(PROMPT, seed=1, num_inference_steps=1)
    assert read_recipe(gen.path)["engine"] == label
    assert label in Card(gen).caption_html
    assert klein_session.load(gen.path).engine == label
