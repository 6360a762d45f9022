"""What the backend says about the model: its request schema and its price, read once from the
model object, in the background, so no cell waits for the network.

The bundled schema validates until the live one is read; the runner re-checks each recipe against
the live one before its enqueue (check). The schema read and the price share one GET.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..core import _errors as errors
from ..core._recipe import Recipe, bundled_schema, validate
from ._client import OxenClient, schema_of

if TYPE_CHECKING:  # imported when a price is first asked for
    from ._pricing import Price


class Catalog:
    """One per session. `local`: the embedded server, which serves the bundled schema and is
    free: nothing is read."""

    def __init__(self, client: OxenClient, *, local: bool):
        self.client = client
        self.local = local
        self._schema: dict[str, Any] = bundled_schema()
        self._price: Price | None = None
        # The model object is read once, by whichever of the schema check and the price asks
        # first; the other waits on the lock instead of sending a second GET.
        self._model_lock = threading.Lock()
        self._model: dict[str, Any] | None = None
        self._model_read = threading.Event()
        if local:
            self._model_read.set()
        else:
            self._read_model_soon()

    @property
    def schema(self) -> dict[str, Any]:
        """The model's request_schema: the live one once read, the bundled copy until then
        (never waits)."""
        return self._schema

    @schema.setter
    def schema(self, schema: dict[str, Any]) -> None:
        """Use this schema, as a read of the model object would."""
        self._schema = schema

    @property
    def price(self) -> Price:
        """What an image costs here: free on the local backend, else read once from the model
        object's pricing; unknown (and asked again next time) when unreadable."""
        from ._pricing import Price, price_from_model

        if self._price is None:
            if self.local:
                self._price = Price.local()
            else:
                try:
                    self._price = price_from_model(self._model_object())
                except errors.FluxError as exc:
                    return Price.unknown(f"the model object could not be read: {exc.message}")
        return self._price

    def price_now(self) -> Price | None:
        """The price when it is known without a network round trip; None while the model object
        is being read (a failed read is started again, and asked for again next time)."""
        if self._price is None and not self.local and self._model is None:
            if self._model_read.is_set():
                self._read_model_soon()
            return None
        return self.price

    def check(self, recipe: Recipe) -> None:
        """Before an enqueue (a runner thread): the recipe against the live schema, waiting for
        its read a while (then the bundled check, already passed, stands). Raises
        ValidationError."""
        timeouts = self.client.timeouts
        self._model_read.wait(timeouts.connect + timeouts.read)
        validate(recipe.params(), self._schema)

    def _model_object(self) -> dict[str, Any]:
        """GET the model object once; a failed read is asked again next time."""
        with self._model_lock:
            if self._model is None:
                self._model = self.client.model_info()
            return self._model

    def _read_model_soon(self) -> None:
        self._model_read.clear()
        threading.Thread(target=self._read_model, daemon=True, name="flux-nb-schema").start()

    def _read_model(self) -> None:
        try:
            self._schema = schema_of(self._model_object())
        except (errors.FluxError, RuntimeError):  # RuntimeError: the session closed meanwhile
            pass  # keep the bundled copy: validation still happens before anything is sent
        finally:
            self._model_read.set()
