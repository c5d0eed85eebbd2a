"""The mock shop records writes, assigns stable ids and counts duplicate deliveries."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from crossdock.mock import RunningShop, start_shop


def test_put_creates_then_updates_with_a_stable_id(http: Any, shop: RunningShop) -> None:
    first = http("PUT", shop.url + "/products/SKU-1", {"sku": "SKU-1", "price": "1.00"})
    second = http("POST", shop.url + "/products/SKU-1", {"sku": "SKU-1", "price": "2.00"})
    other = http("PUT", shop.url + "/products/SKU-2", {"sku": "SKU-2"})
    assert (first.status, second.status, other.status) == (201, 200, 201)
    assert first.json() == second.json() == {"id": 1, "sku": "SKU-1"}
    assert other.json()["id"] == 2
    assert shop.by_sku["SKU-1"] == {"sku": "SKU-1", "price": "2.00"}
    assert [(r.method, r.sku, r.status) for r in shop.received] == [
        ("PUT", "SKU-1", 201),
        ("POST", "SKU-1", 200),
        ("PUT", "SKU-2", 201),
    ]


def test_post_to_the_collection_takes_the_sku_from_the_body(http: Any, shop: RunningShop) -> None:
    reply = http("POST", shop.url + "/products", {"sku": "SKU-9", "title": "t"})
    assert reply.status == 201
    assert reply.json()["sku"] == "SKU-9"
    assert http("POST", shop.url + "/products", {"title": "no sku"}).status == 400
    assert http("POST", shop.url + "/products", raw=b"{not json").status == 400
    assert http("PUT", shop.url + "/products", {"sku": "x"}).status == 405


def test_duplicates_are_counted_per_idempotency_key(http: Any, shop: RunningShop) -> None:
    for key in ("k1", "k2", "k1", "k1"):
        http("PUT", shop.url + "/products/S", {"sku": "S"}, headers={"Idempotency-Key": key})
    http("PUT", shop.url + "/products/S", {"sku": "S"})  # no key: not counted
    assert shop.idempotency_counts == {"k1": 3, "k2": 1}
    assert shop.duplicates() == {"k1": 3}
    stats = http("GET", shop.url + "/_stats").json()
    assert stats["duplicate_keys"] == 1
    assert stats["duplicates"] == {"k1": 3}
    assert stats["requests"] == stats["accepted"] == 5
    assert stats["by_status"] == {"200": 4, "201": 1}


def test_failed_requests_do_not_count_as_duplicates(http: Any, shop: RunningShop) -> None:
    shop.set_failures(fail_times=2)
    for _ in range(3):
        http("PUT", shop.url + "/products/S", {"sku": "S"}, headers={"Idempotency-Key": "k"})
    assert shop.idempotency_counts == {"k": 1}
    assert shop.stats()["requests"] == 3


@pytest.mark.parametrize("ndjson", [False, True])
def test_batch_answers_a_result_per_item(http: Any, shop: RunningShop, ndjson: bool) -> None:
    shop.set_failures(status_for_skus={"B": 422})
    items = [{"sku": "A"}, {"sku": "B"}, {"title": "no sku"}, {"sku": "C"}]
    if ndjson:
        raw = b"\n".join(orjson.dumps(item) for item in items) + b"\n"
        headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "batch-1"}
        reply = http("POST", shop.url + "/products/batch", raw=raw, headers=headers)
    else:
        reply = http("POST", shop.url + "/products/batch", items, headers={"Idempotency-Key": "batch-1"})
    assert reply.status == 200
    assert reply.json()["results"] == [
        {"sku": "A", "status": 201, "id": 1},
        {"sku": "B", "status": 422, "error": "category not found"},
        {"sku": None, "status": 400, "error": "missing sku"},
        {"sku": "C", "status": 201, "id": 2},
    ]
    assert sorted(shop.by_sku) == ["A", "C"]
    assert shop.idempotency_counts == {"batch-1": 1}
    assert shop.stats()["accepted"] == 2
    (batch,) = shop.received
    assert batch.sku is None
    assert batch.body == [{"sku": "A"}, {"sku": "C"}]


def test_batch_refuses_a_body_that_is_not_json(http: Any, shop: RunningShop) -> None:
    assert http("POST", shop.url + "/products/batch", raw=b"[{").status == 400
    assert http("POST", shop.url + "/products/batch", raw=b"{}\n{oops").status == 400


def test_pim_collection_is_a_separate_namespace(http: Any, shop: RunningShop) -> None:
    http("PUT", shop.url + "/products/S", {"sku": "S", "to": "shop"})
    reply = http("POST", shop.url + "/pim/products/S", {"sku": "S", "to": "pim"})
    assert reply.status == 201
    assert shop.by_sku == {"S": {"sku": "S", "to": "shop"}}
    assert shop.bodies("/pim/products") == {"S": {"sku": "S", "to": "pim"}}
    assert shop.stats()["skus"] == {"/pim/products": 1, "/products": 1}


def test_custom_collections(http: Any) -> None:
    with start_shop(collections=["customers"]) as shop:
        assert http("PUT", shop.url + "/customers/C1", {"name": "x"}).status == 201
        assert http("PUT", shop.url + "/products/S", {"sku": "S"}).status == 404
        assert shop.bodies("customers") == {"C1": {"name": "x"}}


def test_get_and_delete_a_record(http: Any, shop: RunningShop) -> None:
    http("PUT", shop.url + "/products/S", {"sku": "S", "v": 1})
    assert http("GET", shop.url + "/products/S").json() == {"sku": "S", "v": 1}
    assert http("DELETE", shop.url + "/products/S").json() == {"id": 1, "sku": "S", "deleted": True}
    assert http("GET", shop.url + "/products/S").status == 404
    assert http("DELETE", shop.url + "/products/S").status == 404
    assert http("GET", shop.url + "/nowhere/x").status == 404


def test_record_bodies_off_still_counts(http: Any) -> None:
    with start_shop(record_bodies=False) as shop:
        for _ in range(2):
            reply = http("PUT", shop.url + "/products/S", {"sku": "S"}, headers={"Idempotency-Key": "k"})
        assert reply.json() == {"id": 1, "sku": "S"}
        assert shop.received == []
        assert shop.by_sku == {}
        assert shop.duplicates() == {"k": 2}
        assert shop.stats()["accepted"] == 2


def test_reset_forgets_everything(http: Any, shop: RunningShop) -> None:
    shop.set_failures(fail_every=5)
    http("PUT", shop.url + "/products/S", {"sku": "S"}, headers={"Idempotency-Key": "k"})
    assert http("POST", shop.url + "/_reset").status == 200
    assert shop.received == []
    assert shop.idempotency_counts == {}
    assert shop.stats()["requests"] == 0
    assert not shop.shop.failures.active
    assert http("PUT", shop.url + "/products/S", {"sku": "S"}).json()["id"] == 1


def test_received_over_http(http: Any, shop: RunningShop) -> None:
    http("PUT", shop.url + "/products/S", {"sku": "S"}, headers={"Idempotency-Key": "k"})
    assert http("GET", shop.url + "/_received").json() == [
        {"method": "PUT", "path": "/products/S", "sku": "S", "body": {"sku": "S"}, "idempotency_key": "k"}
    ]
