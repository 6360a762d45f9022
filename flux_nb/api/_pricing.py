"""What images cost before they are sent, from the model object's `pricing` (oxen-api.md §6.1).

    {"method": "per_image", "cost_per_image": "0.02"}     decimal strings, the account's currency

Only a per-image price gives a cost in advance; anything else (priced by time or tokens, no
pricing, a field that does not parse) is "unknown", said as such and never guessed. The local
backend costs nothing.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ..core._errors import CostLimitError
from ..core._recipe import Recipe


@dataclasses.dataclass(frozen=True)
class Price:
    """The price of one image on a backend: known (per_image, or per output quality), free, or
    unknown with the reason."""

    per_image: Decimal | None = None
    by_quality: Mapping[str, Decimal] = dataclasses.field(default_factory=dict)
    free: bool = False
    reason: str = ""

    @classmethod
    def local(cls) -> Price:
        return cls(Decimal(0), free=True, reason="the local stand-in costs nothing")

    @classmethod
    def unknown(cls, reason: str) -> Price:
        return cls(reason=reason)

    @property
    def known(self) -> bool:
        return self.per_image is not None or bool(self.by_quality)

    def of(self, quality: str | None = None) -> Decimal | None:
        """One image's price (at this output quality when the price depends on it), or None."""
        if quality is not None and quality in self.by_quality:
            return self.by_quality[quality]
        return self.per_image

    def cost(self, recipes: Iterable[Recipe]) -> Decimal | None:
        """The total for these images; None when any one's price is unknown."""
        return self._total([r.output_quality for r in recipes])

    def _total(self, qualities: list[str]) -> Decimal | None:
        total = Decimal(0)
        for quality in qualities:
            price = self.of(quality)
            if price is None:
                return None
            total += price
        return total

    def describe(self, recipes: Iterable[Recipe] | None = None) -> str:
        """One phrase: "0.06 (3 images at 0.02 each)", "free: ...", or "unknown (...)"; without
        recipes, the price of one image."""
        if recipes is None:
            if self.free:
                return f"free: {self.reason}"
            if self.per_image is not None:
                return f"{money(self.per_image)} per image"
            if self.by_quality:
                return ", ".join(f"{money(p)} per {q} image" for q, p in self.by_quality.items())
            return f"unknown ({self.reason})"
        return self.describe_images([r.output_quality for r in recipes])

    def describe_images(self, qualities: list[str]) -> str:
        """The phrase for images of these output qualities (one entry per image)."""
        if self.free:
            return f"free: {self.reason}"
        total = self._total(qualities)
        count = f"{len(qualities)} image{'s' if len(qualities) != 1 else ''}"
        if total is None:
            return f"unknown for {count} ({self.reason})"
        each = {price for q in qualities if (price := self.of(q)) is not None}
        if len(each) == 1 and len(qualities) > 1:
            return f"{money(total)} ({count} at {money(each.pop())} each)"
        return f"{money(total)} ({count})"


def money(amount: Decimal) -> str:
    """Two decimals, or more when the price has them (0.0025 stays 0.0025)."""
    exponent = amount.normalize().as_tuple().exponent
    return (
        f"{amount:.2f}"
        if not isinstance(exponent, int) or exponent >= -2
        else f"{amount.normalize():f}"
    )


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _find_pricing(payload: Any) -> Any:
    """The pricing object of a model object, bare or inside an envelope ({"model": {...}})."""
    if not isinstance(payload, dict):
        return None
    if "pricing" in payload:
        return payload["pricing"]
    for key in ("model", "data"):
        inner = payload.get(key)
        if isinstance(inner, dict) and "pricing" in inner:
            return inner["pricing"]
    return None


def price_from_model(model: Any) -> Price:
    """The price of one image from a GET /api/ai/models/{id} answer (never an invented one)."""
    pricing = _find_pricing(model)
    if not isinstance(pricing, dict):
        return Price.unknown("the model object gives no per-image price")
    method = pricing.get("method")
    if method not in (None, "per_image"):
        return Price.unknown(
            f"this model is priced by {method}, so the cost is known only after it runs"
        )
    if "cost_per_image" in pricing:
        amount = _decimal(pricing["cost_per_image"])
        if amount is None:
            return Price.unknown(f"its cost_per_image {pricing['cost_per_image']!r} is not a price")
        return Price(amount, reason="the model object's pricing")
    grid = pricing.get("cost_per_image_grid")
    if isinstance(grid, dict):
        # quality -> tier -> price: a quality with one tier has one price; several tiers (by size,
        # which the recipe does not fix) leave it unknown.
        by_quality = {}
        for quality, tiers in grid.items():
            if isinstance(tiers, dict) and len(tiers) == 1:
                amount = _decimal(next(iter(tiers.values())))
            else:
                amount = _decimal(tiers) if not isinstance(tiers, dict) else None
            if amount is not None:
                by_quality[str(quality)] = amount
        if by_quality:
            return Price(by_quality=by_quality, reason="the model object's price grid")
    return Price.unknown("the model object gives no per-image price")


def check_cell(price: Price, recipes: list[Recipe], limit: float, confirmed: bool) -> str:
    """The line a %%flux cell prints before sending (empty on the local backend). Raises
    CostLimitError when the cost is over the limit and the cell has no --yes."""
    if price.free:
        return ""
    total = price.cost(recipes)
    if total is None:
        return f"flux: cost {price.describe(recipes)}; sending anyway."
    bound = Decimal(str(limit))
    if total > bound and not confirmed:
        raise CostLimitError(
            f"This cell would cost {price.describe(recipes)}, over FluxMagics.max_cell_cost ="
            f" {money(bound)}; nothing was sent.",
            hint=f"Add --yes to the %%flux line to run it, or raise the limit:"
            f" %config FluxMagics.max_cell_cost = {money(total)}",
        )
    return f"flux: cost {price.describe(recipes)}."


def deferred_check(
    price_of: Callable[[], Price], recipes: list[Recipe], limit: float
) -> Callable[[], None]:
    """check_cell for a cell sent before its price was known: run before each of its enqueues
    (runner threads), it reads the price once and refuses every image of the cell alike."""
    lock = threading.Lock()
    outcome: list[CostLimitError | None] = []

    def check() -> None:
        with lock:
            if not outcome:
                try:
                    check_cell(price_of(), recipes, limit, confirmed=False)
                    outcome.append(None)
                except CostLimitError as exc:
                    outcome.append(exc)
        if outcome[0] is not None:
            raise outcome[0]

    return check


__all__ = [
    "CostLimitError",
    "Price",
    "check_cell",
    "deferred_check",
    "money",
    "price_from_model",
]
