"""No network round trip on a cell's path: a hosted session reads the model object in the
background from its start; cells validate against the bundled schema meanwhile, and the live
schema and the price are checked before each enqueue instead (jobs/_sessions.py, api/_pricing.py).

The model request is held by the transport until the test releases it, so "the cell did not
wait" is shown by the cell returning while the request is still held, whatever the latency."""

from __future__ import annotations

import threading
from decimal import Decimal

import httpx
import pytest
from conftest import QUICK
from fake_oxen import KEY

from flux_nb.api._pricing import deferred_check
from flux_nb.core import _errors as errors
from flux_nb.jobs._sessions import Session

WAIT = 30.0  # generous: only a broken build waits this long


class HeldModel:
    """The fake's transport, but GET /api/ai/models/... waits until release()."""

    def __init__(self, fake) -> None:
        self.fake = fake
        self.asked = threading.Event()
        self.released = threading.Event()
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/ai/models/"):
            self.asked.set()
            assert self.released.wait(WAIT), "the test never released the model request"
        return self.fake.handle(request)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def held(fake, tmp_path):
    gate = HeldModel(fake)
    sess = Session(
        backend="hosted",
        api_key=KEY,
        output_dir=tmp_path / "out",
        announce=None,
        retry=QUICK,
        http=httpx.Client(transport=gate.transport),
    )
    try:
        yield gate, sess
    finally:
        gate.release()
        fake.close()
        sess.close()


def ended(gen):
    """Wait for a generation to end, however it ends."""
    with pytest.raises(errors.FluxError):
        gen.wait(WAIT)
    return gen


def enqueues(fake) -> list:
    return [r for r in fake.requests if r.method == "POST" and r.path == "/api/ai/queue"]


def test_the_model_is_read_when_the_session_starts_and_a_cell_never_waits_for_it(held, fake):
    gate, sess = held
    assert gate.asked.wait(WAIT)  # asked at the start, before any cell
    assert sess.price_now() is None  # still held: not known, and nothing blocks
    recipes = sess.recipes("a fox", 2, seed=1, num_inference_steps=2)
    check = deferred_check(lambda: sess.price, recipes, limit=1.0)
    gens = sess.submit(recipes, check=check)  # returns while the model request is held
    assert not gate.released.is_set() and enqueues(fake) == []
    assert all(not g.done for g in gens)

    gate.release()
    assert fake.wait_rows(2, timeout=WAIT)
    assert len(enqueues(fake)) == 2
    assert sess.price_now() is not None and sess.price_now().per_image == Decimal("0.02")
    gets = [r for r in fake.requests if r.path.startswith("/api/ai/models/")]
    assert len(gets) == 1  # one read, shared by the schema and the price


def test_a_value_the_live_schema_refuses_is_refused_before_any_enqueue(held, fake):
    gate, sess = held
    live = dict(fake.model)
    live["request_schema"] = {
        **fake.model["request_schema"],
        "properties": {
            **fake.model["request_schema"]["properties"],
            "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 8},
        },
    }
    fake.model = live
    (recipe,) = sess.recipes("a fox", 1, seed=1, num_inference_steps=20)  # bundled: up to 50
    (gen,) = sess.submit([recipe])
    gate.release()
    assert ended(gen).status == "failed"
    assert "num_inference_steps" in gen.reason and enqueues(fake) == []
    with pytest.raises(errors.ValidationError):  # the next cell sees the live schema at once
        sess.recipes("a fox", 1, num_inference_steps=20)


def test_a_cell_over_the_cost_limit_sent_before_the_price_was_known_sends_nothing(held, fake):
    gate, sess = held
    recipes = sess.recipes("a fox", 4, seed=1, num_inference_steps=2)  # 4 x 0.02 = 0.08
    gens = sess.submit(recipes, check=deferred_check(lambda: sess.price, recipes, limit=0.05))
    gate.release()
    for gen in gens:
        assert ended(gen).status == "failed"
        assert "max_cell_cost" in gen.reason and "nothing was sent" in gen.reason
    assert enqueues(fake) == []


@pytest.fixture
def shell(held):
    """IPython (no kernel) with %load_ext flux_nb, its session the held one."""
    from IPython.core.interactiveshell import InteractiveShell

    from flux_nb.jobs._sessions import set_session

    _, sess = held
    before = set_session(sess)
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "flux_nb")
        yield ip
    finally:
        ip.run_line_magic("unload_ext", "flux_nb")
        InteractiveShell.clear_instance()
        set_session(before)


def test_a_flux_cell_returns_while_the_model_request_is_held(held, fake, shell, capsys):
    gate, sess = held
    assert gate.asked.wait(WAIT)
    shell.run_line_magic("config", "FluxMagics.max_cell_cost = 0.05")
    fine = shell.run_cell("%%flux --seed 1 --steps 2 --name fine\na fox")
    over = shell.run_cell("%%flux -n 4 --seed 1 --steps 2 --name over\nfour foxes")
    assert fine.success and over.success  # both returned with the model request still held
    assert not gate.released.is_set() and enqueues(fake) == []
    said = capsys.readouterr().out.splitlines()
    assert (
        said.count(
            "flux: cost: the price is still being read; it is checked against"
            " FluxMagics.max_cell_cost before anything is sent."
        )
        == 2
    )

    gate.release()
    for gen in shell.user_ns["over"]:
        assert ended(gen).status == "failed" and "max_cell_cost = 0.05" in gen.reason
    assert fake.wait_rows(1, timeout=WAIT) and shell.user_ns["fine"].id is not None
    assert len(enqueues(fake)) == 1  # the fox only: the 0.08 cell sent nothing
    again = shell.run_cell("%%flux -n 4 --seed 1 --steps 2\nfour foxes")  # the price is known
    assert not again.success and len(enqueues(fake)) == 1  # refused in the cell, as before
    out = capsys.readouterr()
    assert "over FluxMagics.max_cell_cost = 0.05" in out.out + out.err
