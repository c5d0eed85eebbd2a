"""The per-connection rate limit: a token bucket shared by every route on the connection."""

from __future__ import annotations

import asyncio
import time

import pytest
from http_helpers import Harness, write_products

from crossdock.connectors.http_limits import TokenBucket
from crossdock.engine.exporter import Exporter
from crossdock.mock import RunningShop


def two_routes(shop_url: str, limit: str) -> str:
    route = """\
  {name}:
    incoming: {{source: {{type: file, path: {name}.ndjson}}}}
    identifier: sku
    outgoing:
      target: {{type: http, connection: shop, method: PUT, path: "/{coll}/{{sku}}"}}
      concurrency: 16
"""
    return (
        f'connections:\n  shop: {{type: http, base_url: "{shop_url}", rate_limit: {limit}}}\nroutes:\n'
        + route.format(name="a", coll="products")
        + route.format(name="b", coll="pim/products")
    )


@pytest.mark.parametrize(("limit", "minimum"), [("{per_second: 20}", 1.05), ("{per_second: 20, burst: 10}", 0.6)])
def test_requests_on_one_connection_keep_to_the_rate(
    harness: Harness, shop: RunningShop, limit: str, minimum: float
) -> None:
    """22 requests from two routes at once share one bucket: (22 - burst) / 20 seconds at least."""
    write_products(harness.root / "a.ndjson", 11)
    write_products(harness.root / "b.ndjson", 11)
    project = harness.write(two_routes(shop.url, limit))
    harness.run_import("a")
    harness.run_import("b")
    assert harness.store is not None
    store = harness.store

    async def both() -> float:
        exporter = Exporter(project, store)
        try:
            started = time.monotonic()
            await asyncio.gather(exporter.run_route("a"), exporter.run_route("b"))
            return time.monotonic() - started
        finally:
            await exporter.close()

    took = asyncio.run(both())

    assert shop.stats()["accepted"] == 22
    assert minimum <= took < minimum + 1.5


def test_without_a_rate_limit_the_same_requests_are_fast(harness: Harness, shop: RunningShop) -> None:
    write_products(harness.root / "products.ndjson", 22)
    harness.write(
        f'connections:\n  shop: {{type: http, base_url: "{shop.url}"}}\nroutes:\n  products:\n'
        "    incoming: {source: {type: file, path: products.ndjson}}\n    identifier: sku\n"
        '    outgoing: {target: {type: http, connection: shop, method: PUT, path: "/products/{sku}"}}\n'
    )
    harness.run_import("products")
    started = time.monotonic()
    assert harness.run_export("products").by_status == {"finished": 22}
    assert time.monotonic() - started < 0.9


def test_token_bucket_slots() -> None:
    bucket = TokenBucket(per_second=10, burst=3)
    waits = [bucket.reserve() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3], abs=0.01)
