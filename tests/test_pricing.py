"""Cost before spending: the model object's pricing read as the contract gives it, never guessed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from priced_server import PricedServer, hosted_model

from flux_nb.api._pricing import Price, check_cell, money, price_from_model
from flux_nb.core._config import RetryPolicy
from flux_nb.core._errors import CostLimitError
from flux_nb.core._recipe import Recipe
from flux_nb.jobs._sessions import Session
from flux_nb.notebook._panel import Panel

PER_IMAGE = {"method": "per_image", "cost_per_image": "0.02"}


def recipes(n: int, quality: str = "standard") -> list[Recipe]:
    return [Recipe.build("a fox", seed=i, output_quality=quality) for i in range(n)]


def test_per_image_price_from_the_hosted_model_object():
    price = price_from_model(hosted_model(PER_IMAGE))
    assert price.known and price.per_image == Decimal("0.02")
    assert price.cost(recipes(9)) == Decimal("0.18")  # decimal, so no 0.18000000000000002
    assert price.describe(recipes(9)) == "0.18 (9 images at 0.02 each)"
    assert price.describe() == "0.02 per image"
    # wrapped the way the local stand-in answers
    assert price_from_model({"status": "success", "model": hosted_model(PER_IMAGE)}).known


@pytest.mark.parametrize(
    ("pricing", "reason"),
    [
        (None, "gives no per-image price"),
        ({"method": "per_image"}, "gives no per-image price"),
        ({"method": "time", "cost_per_second": "0.001"}, "priced by time"),
        ({"method": "per_image", "cost_per_image": "about two cents"}, "is not a price"),
        ({"method": "per_image", "cost_per_image": "-1"}, "is not a price"),
        (
            {
                "method": "per_image",
                "cost_per_image_grid": {"standard": {"1MP": "0.02", "4MP": "0.05"}},
            },
            "no per-image price",
        ),
    ],
)
def test_unknown_prices_are_said_and_never_invented(pricing, reason):
    price = price_from_model(hosted_model(pricing))
    assert not price.known and price.cost(recipes(2)) is None
    assert reason in price.describe(recipes(2)) and price.describe(recipes(2)).startswith(
        "unknown for 2 images"
    )
    line = check_cell(price, recipes(2), limit=1.0, confirmed=False)
    assert line.startswith("flux: cost unknown for 2 images") and "sending anyway" in line


def test_price_by_quality_from_a_grid_with_one_tier_each():
    grid = {"standard": {"any": "0.02"}, "high": {"any": "0.04"}}
    price = price_from_model(hosted_model({"method": "per_image", "cost_per_image_grid": grid}))
    assert price.cost(recipes(2, "high") + recipes(1)) == Decimal("0.10")


def test_check_cell_refuses_over_the_limit_unless_confirmed():
    price = price_from_model(hosted_model(PER_IMAGE))
    assert check_cell(price, recipes(3), 1.0, False) == "flux: cost 0.06 (3 images at 0.02 each)."
    with pytest.raises(CostLimitError) as caught:
        check_cell(price, recipes(60), 1.0, False)
    text = str(caught.value)
    assert "\n" not in text and "1.20 (60 images at 0.02 each)" in text
    assert "max_cell_cost = 1.00" in text and "--yes" in text and "nothing was sent" in text
    assert check_cell(price, recipes(60), 1.0, True).startswith("flux: cost 1.20")
    assert check_cell(Price.local(), recipes(60), 0.0, False) == ""  # the local backend is free


def test_money_keeps_small_prices_exact():
    assert money(Decimal("0.02")) == "0.02" and money(Decimal("1")) == "1.00"
    assert money(Decimal("0.0025")) == "0.0025"


# -- a session on a hosted-like server ---------------------------------------------------------


@pytest.fixture
def priced(local_server, tmp_path):
    with PricedServer(local_server.url, PER_IMAGE) as server:
        sess = Session(
            base_url=server.url, api_key="test-pricing-key", output_dir=tmp_path, announce=None
        )
        yield server, sess
        sess.close()


def test_session_reads_the_price_once_from_the_model_object(priced):
    server, sess = priced
    assert sess.backend == "custom"
    assert sess.price.per_image == Decimal("0.02") and sess.price.per_image == Decimal("0.02")
    assert len([p for p in server.sent("GET") if p.startswith("/api/ai/models/")]) == 1


def test_local_session_is_free_and_says_so(session):
    assert (
        session.price.free and session.price.describe() == "free: the local stand-in costs nothing"
    )


def test_unreadable_model_object_gives_unknown_not_a_guess(tmp_path):
    sess = Session(
        base_url="http://127.0.0.1:9",  # nothing listens there
        api_key="k",
        output_dir=tmp_path,
        announce=None,
        retry=RetryPolicy(attempts=1),
    )
    try:
        price = sess.price
        assert not price.known and "could not be read" in price.reason
    finally:
        sess.close()


def test_panel_shows_the_cost_beside_generate(priced, session):
    _, sess = priced
    panel = Panel(session=sess, history=False)
    row = next(c for c in panel.children if panel.generate_button in getattr(c, "children", ()))
    assert row.children.index(panel.cost) == row.children.index(panel.generate_button) + 1
    sess.price  # noqa: B018 - the panel reads it in the background; wait for the same answer
    panel._load_price()
    assert panel.cost.value == "Cost: 0.02 (1 image)"
    panel.count.value = 4
    assert panel.cost.value == "Cost: 0.08 (4 images at 0.02 each)"
    local = Panel(session=session, history=False)
    assert local.cost.value == "Cost: free: the local stand-in costs nothing"
