"""jobs/_sessions.py: which backend a Session picks, what it says about it, the recipes it makes and
the model object it reads once. The handle's own behaviour is in test_generation.py."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from priced_server import PricedServer

from flux_nb.core import _errors as errors
from flux_nb.core._config import ApiKey, Settings
from flux_nb.jobs._sessions import Session


def test_no_key_and_no_url_is_the_embedded_local_server(tmp_path):
    sess = Session(output_dir=tmp_path, settings=Settings(step_delay=0.0), announce=None)
    try:
        assert sess.backend == "local" and sess.base_url.startswith("http://127.0.0.1:")
        line = sess.describe()
        assert "local" in line and sess.base_url in line
    finally:
        sess.close()


def test_a_key_alone_means_the_hosted_api_and_stays_out_of_sight(tmp_path):
    sess = Session(
        api_key="sk-session-secret", output_dir=tmp_path, settings=Settings(), announce=None
    )
    try:
        assert (sess.backend, sess.base_url) == ("hosted", "https://hub.oxen.ai")
        for shown in (repr(sess), sess.describe(), repr(sess.client.__dict__)):
            assert "sk-session-secret" not in shown
    finally:
        sess.close()


def test_a_base_url_is_a_custom_server_and_takes_the_docs_spelling(tmp_path):
    sess = Session(
        base_url="http://127.0.0.1:9/api/ai",
        api_key="k",
        output_dir=tmp_path,
        settings=Settings(),
        announce=None,
    )
    try:
        assert (sess.backend, sess.base_url) == ("custom", "http://127.0.0.1:9")
    finally:
        sess.close()


def test_the_hosted_backend_without_a_key_is_one_line_that_says_how(tmp_path):
    with pytest.raises(errors.AuthError) as info:
        Session("hosted", output_dir=tmp_path, settings=Settings(), announce=None)
    assert "OXEN_API_KEY" in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_backend_is_refused_in_one_line(tmp_path):
    with pytest.raises(errors.ValidationError, match="allowed: local, hosted"):
        Session("cloud", output_dir=tmp_path, announce=None)


def test_the_announce_callback_hears_the_backend_line_once(tmp_path):
    heard: list[str] = []
    sess = Session(output_dir=tmp_path, settings=Settings(step_delay=0.0), announce=heard.append)
    try:
        assert heard == [sess.describe()]
    finally:
        sess.close()


@pytest.mark.parametrize("n", [0, 257, 2.5, True])
def test_n_out_of_range_is_refused_before_anything_is_sent(session, n):
    with pytest.raises(errors.ValidationError, match="1 to 256"):
        session.recipes("a lighthouse", n)
    assert session.pending() == []


def test_recipes_with_a_seed_count_up_from_it_and_without_one_draw_their_own(session):
    assert [r.seed for r in session.recipes("a lighthouse", 3, seed=41)] == [41, 42, 43]
    drawn = [r.seed for r in session.recipes("a lighthouse", 4)]
    assert len(set(drawn)) == 4


def test_the_schema_check_and_the_price_share_one_read_of_the_model_object(local_server, tmp_path):
    with PricedServer(
        local_server.url, {"method": "per_image", "cost_per_image": "0.02"}
    ) as server:
        sess = Session(base_url=server.url, api_key=ApiKey("k"), output_dir=tmp_path, announce=None)
        try:
            assert sess.schema  # starts the background schema check, as the first recipe does
            assert sess.price.per_image == Decimal("0.02")
            for thread in threading.enumerate():
                if thread.name == "flux-nb-schema":
                    thread.join(5)
            assert sess.schema == server.model["request_schema"]
            assert len([p for p in server.sent("GET") if p.startswith("/api/ai/models/")]) == 1
        finally:
            sess.close()


def test_the_kernels_own_server_fetches_an_input_url_on_this_machine(tmp_path):
    """The embedded server is the person's own, on loopback: a picture served on localhost is
    fetched (a shared `flux-nb serve` refuses such URLs: tests/test_team_server.py)."""
    import functools
    import http.server

    from PIL import Image

    Image.new("RGB", (64, 48), (200, 120, 40)).save(tmp_path / "photo.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    s = Session("local", output_dir=tmp_path / "out", announce=None)
    try:
        url = f"http://127.0.0.1:{files.server_address[1]}/photo.png"
        gen = s.generate("make it a sunset", seed=3, num_inference_steps=2, input_image=[url])
        gen.wait(60)
        assert gen.status == "succeeded", gen.reason
    finally:
        s.close()
        files.shutdown()
