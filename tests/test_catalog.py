"""api/_catalog.py: the model's schema and price, read once from the model object off the cell's
path."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from priced_server import PricedServer

from flux_nb.api._catalog import Catalog
from flux_nb.api._client import OxenClient
from flux_nb.core import _errors as errors
from flux_nb.core._config import ApiKey
from flux_nb.core._recipe import Recipe, bundled_schema


def model_reads(server: PricedServer) -> int:
    return len([p for p in server.sent("GET") if p.startswith("/api/ai/models/")])


def test_the_local_backend_reads_nothing_and_is_free(local_server) -> None:
    client = OxenClient(local_server.url, None)
    try:
        catalog = Catalog(client, local=True)
        assert catalog.schema == bundled_schema()
        assert catalog.price_now() is not None and catalog.price.per_image == Decimal(0)
        catalog.check(Recipe.build("no wait", seed=1))  # the bundled schema: no read to wait for
    finally:
        client.close()


def test_a_remote_backend_reads_the_model_object_once_for_schema_and_price(local_server) -> None:
    with PricedServer(
        local_server.url, {"method": "per_image", "cost_per_image": "0.03"}
    ) as server:
        server.model = copy.deepcopy(server.model)  # the bundled schema is one shared object
        server.model["request_schema"]["properties"]["seed"]["maximum"] = 99
        client = OxenClient(server.url, ApiKey("k"))
        try:
            catalog = Catalog(client, local=False)
            with pytest.raises(errors.ValidationError, match="seed"):
                catalog.check(Recipe.build("a seed the live schema refuses", seed=100))
            assert catalog.schema["properties"]["seed"]["maximum"] == 99
            assert catalog.price.per_image == Decimal("0.03") == catalog.price_now().per_image
            assert model_reads(server) == 1
        finally:
            client.close()
