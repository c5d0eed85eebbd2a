"""Every failure mode behaves as documented, on both servers, set at start or at runtime."""

from __future__ import annotations

import asyncio
import http.client as httpclient
import time
from typing import Any

import aiohttp
import orjson
import pytest

from crossdock.mock import FailureConfig, Failures, RunningErp, RunningShop, start_erp, start_shop


def _put(http: Any, shop: RunningShop, sku: str, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return http("PUT", f"{shop.url}/products/{sku}", {"sku": sku}, headers=headers)


def test_fail_every_nth_request(http: Any) -> None:
    with start_shop(failures={"fail_every": 3}) as shop:
        statuses = [_put(http, shop, f"S{i}").status for i in range(9)]
        assert statuses == [201, 201, 503] * 3
        assert shop.stats()["by_status"] == {"201": 6, "503": 3}
        assert shop.stats()["accepted"] == 6


def test_fail_every_with_custom_status(http: Any) -> None:
    with start_shop(failures=FailureConfig(fail_every=2, fail_status=500)) as shop:
        assert [_put(http, shop, "S").status for _ in range(4)] == [201, 500, 200, 500]


def test_fail_times_per_sku_then_success(http: Any) -> None:
    with start_shop(failures={"fail_times": 2}) as shop:
        assert [_put(http, shop, "A").status for _ in range(3)] == [503, 503, 201]
        assert [_put(http, shop, "B").status for _ in range(3)] == [503, 503, 201]
        assert _put(http, shop, "A").status == 200
        assert list(shop.by_sku) == ["A", "B"]


def test_fail_times_per_page_on_the_erp(http: Any, erp: RunningErp) -> None:
    erp.set_failures(fail_times=2)
    first = [http("GET", erp.url + "/products").status for _ in range(3)]
    page2 = [http("GET", erp.url + "/products?after=SKU-00100").status for _ in range(3)]
    assert first == page2 == [503, 503, 200]


def test_fail_times_counts_batches_by_idempotency_key(http: Any, shop: RunningShop) -> None:
    shop.set_failures(fail_times=1)
    url = shop.url + "/products/batch"
    assert http("POST", url, [{"sku": "A"}], headers={"Idempotency-Key": "b1"}).status == 503
    assert http("POST", url, [{"sku": "A"}], headers={"Idempotency-Key": "b1"}).status == 200
    assert http("POST", url, [{"sku": "A"}], headers={"Idempotency-Key": "b2"}).status == 503


def test_status_for_skus_with_error_body(http: Any, shop: RunningShop) -> None:
    shop.set_failures(status_for_skus={"SKU-00003": 400}, sku_errors={"SKU-00004": "bad price"})
    rejected = _put(http, shop, "SKU-00003")
    assert rejected.status == 400
    assert rejected.json() == {"error": "category not found", "sku": "SKU-00003"}
    assert _put(http, shop, "SKU-00002").status == 201
    created = http("POST", shop.url + "/products", {"sku": "SKU-00003"})
    assert created.status == 400
    assert "SKU-00003" not in shop.by_sku


def test_echo_headers_quotes_the_request_headers_in_error_answers(http: Any, shop: RunningShop) -> None:
    shop.set_failures(status_for_skus={"SKU-00003": 400}, echo_headers=True)
    rejected = http("PUT", f"{shop.url}/products/SKU-00003", {"sku": "x"}, headers={"X-Shop-Key": "k-123"})
    assert rejected.status == 400
    body = rejected.json()
    assert (body["error"], body["sku"], body["request_headers"]["X-Shop-Key"]) == (
        "category not found",
        "SKU-00003",
        "k-123",
    )
    assert "request_headers" not in _put(http, shop, "SKU-00002").json(), "an accepted write answers as before"


def test_status_for_skus_on_the_erp_single_product(http: Any, erp: RunningErp) -> None:
    erp.set_failures(status_for_skus={"SKU-00003": 404})
    assert http("GET", erp.url + "/products/SKU-00003").status == 404
    assert http("GET", erp.url + "/products/SKU-00002").status == 200


def test_always_status(http: Any, erp: RunningErp) -> None:
    erp.set_failures(always_status=503)
    assert [http("GET", erp.url + "/products").status for _ in range(3)] == [503] * 3
    # control endpoints never fail, so a test can always switch the failure off again
    assert http("GET", erp.url + "/_stats").status == 200


def test_rate_limit_answers_429_with_retry_after(http: Any, shop: RunningShop) -> None:
    shop.set_failures(rate_limit=2, rate_window=0.3, retry_after=7)
    statuses = [_put(http, shop, "S") for _ in range(3)]
    assert [r.status for r in statuses] == [201, 200, 429]
    assert statuses[2].headers["Retry-After"] == "7"
    time.sleep(0.35)
    assert _put(http, shop, "S").status == 200


def test_fail_status_429_also_sends_retry_after(http: Any, shop: RunningShop) -> None:
    shop.set_failures(fail_times=1, fail_status=429, retry_after=3)
    reply = _put(http, shop, "S")
    assert (reply.status, reply.headers["Retry-After"]) == (429, "3")


def test_slow_ms_delays_each_answer(http: Any, shop: RunningShop) -> None:
    shop.set_failures(slow_ms=150)
    started = time.monotonic()
    assert _put(http, shop, "S").status == 201
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("status", [200, 502])
def test_html_error_page(http: Any, erp: RunningErp, status: int) -> None:
    erp.set_failures(html=status)
    reply = http("GET", erp.url + "/products")
    assert reply.status == status
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.body.startswith(b"<!DOCTYPE html>")
    with pytest.raises(orjson.JSONDecodeError):
        reply.json()


def test_html_mode_does_not_process_the_write(http: Any, shop: RunningShop) -> None:
    shop.set_failures(html=True)
    assert shop.shop.failures.config.html == 502
    assert _put(http, shop, "S").status == 502
    assert shop.by_sku == {}


def test_truncated_cuts_the_body_after_processing(http: Any, shop: RunningShop) -> None:
    shop.set_failures(truncated=True)
    reply = _put(http, shop, "SKU-1")
    assert reply.status == 201
    with pytest.raises(orjson.JSONDecodeError):
        reply.json()
    assert reply.body == b'{"id":1,"sku":"SKU-1"}'[:11]
    assert "SKU-1" in shop.by_sku  # the shop did accept it: a retry would be a duplicate


def test_truncated_listing_on_the_erp(http: Any, erp: RunningErp) -> None:
    full = http("GET", erp.url + "/products").body
    erp.set_failures(truncated=True)
    assert http("GET", erp.url + "/products").body == full[: len(full) // 2]


def test_drop_connection(erp: RunningErp, shop: RunningShop) -> None:
    shop.set_failures(drop_connection=True)
    erp.set_failures(drop_connection=True)
    for url in (erp.url, shop.url):
        host, port = url.removeprefix("http://").split(":")
        connection = httpclient.HTTPConnection(host, int(port), timeout=5)
        try:
            connection.request("PUT", "/products/S", body=b'{"sku":"S"}')
            with pytest.raises((httpclient.RemoteDisconnected, ConnectionResetError)):
                connection.getresponse()
        finally:
            connection.close()
    assert shop.by_sku == {}
    assert shop.stats()["by_status"] == {"0": 1}
    assert erp.stats()["by_status"] == {"0": 1}


def test_drop_connection_seen_by_aiohttp_client(shop: RunningShop) -> None:
    shop.set_failures(drop_connection=True)

    async def put() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                async with session.put(shop.url + "/products/S", json={"sku": "S"}):
                    pass

    asyncio.run(put())


def test_paths_narrow_the_failures(http: Any, shop: RunningShop) -> None:
    shop.set_failures(always_status=503, paths=["/pim/"])
    assert _put(http, shop, "S").status == 201
    assert http("PUT", shop.url + "/pim/products/S", {"sku": "S"}).status == 503


def test_runtime_switching_over_http(http: Any, shop: RunningShop) -> None:
    assert _put(http, shop, "S").status == 201
    reply = http("POST", shop.url + "/_failures", {"always_status": 500})
    assert reply.status == 200
    assert reply.json()["always_status"] == 500
    assert _put(http, shop, "S").status == 500
    assert http("GET", shop.url + "/_failures").json()["always_status"] == 500
    # POST replaces the whole set: modes not named are switched off
    http("POST", shop.url + "/_failures", {"fail_every": 2})
    assert [_put(http, shop, "S").status for _ in range(2)] == [200, 503]
    http("DELETE", shop.url + "/_failures")
    assert _put(http, shop, "S").status == 200


def test_runtime_switching_over_http_on_the_erp(http: Any, erp: RunningErp) -> None:
    http("POST", erp.url + "/_failures", {"always_status": 503})
    assert http("GET", erp.url + "/products").status == 503
    http("POST", erp.url + "/_failures", {})
    assert http("GET", erp.url + "/products").status == 200


def test_runtime_switching_from_python(http: Any, shop: RunningShop) -> None:
    shop.set_failures(always_status=503)
    assert _put(http, shop, "S").status == 503
    shop.set_failures()
    assert _put(http, shop, "S").status == 201


@pytest.mark.parametrize(
    "body",
    [{"nonsense": 1}, {"fail_every": -1}, {"always_status": 999}, [1, 2], {"rate_window": 0}],
)
def test_bad_failure_configs_are_refused(http: Any, shop: RunningShop, body: Any) -> None:
    reply = http("POST", shop.url + "/_failures", body)
    assert reply.status == 400
    assert "error" in reply.json()
    assert not shop.shop.failures.active


def test_failure_config_round_trips_through_json() -> None:
    config = FailureConfig(fail_every=3, status_for_skus={"A": 400}, paths=("/products",), html=502)
    assert FailureConfig.from_dict(orjson.loads(orjson.dumps(config.to_dict()))) == config
    assert FailureConfig().is_off
    assert not config.is_off


def test_failures_can_be_shared_between_servers(http: Any) -> None:
    shared = Failures(FailureConfig(always_status=503))
    with start_shop(failures=None) as shop, start_erp(products=3, failures=None) as erp:
        shop.shop.failures = shared
        erp.erp.failures = shared
        assert http("GET", erp.url + "/products").status == 503
        assert _put(http, shop, "S").status == 503
        shared.clear()
        assert http("GET", erp.url + "/products").status == 200
