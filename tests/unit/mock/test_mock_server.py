"""The runners start on ephemeral loopback ports, serve, and stop cleanly."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from crossdock.mock import AsyncMockServer, Erp, MockServer, Shop, start_shop
from crossdock.mock.__main__ import _failures, build_parser


async def _hello(request: web.Request) -> web.Response:
    return web.json_response({"thread": "server"})


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _hello)
    return app


def test_mock_server_in_a_thread(http: Any) -> None:
    with MockServer(_app()) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.port > 0
        assert http("GET", server.url + "/").json() == {"thread": "server"}
    assert not server.running
    server.stop()  # twice is fine


def test_mock_server_on_a_given_port(http: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with MockServer(_app(), port=port) as server:
        assert server.port == port
        assert http("GET", f"http://127.0.0.1:{port}/").status == 200


def test_mock_server_reports_a_busy_port() -> None:
    with MockServer(_app()) as first, pytest.raises(OSError):
        MockServer(_app(), port=first.port).start()


def test_call_runs_a_coroutine_on_the_server_loop() -> None:
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    with MockServer(_app()) as server:
        assert isinstance(server.call(loop_id()), int)


def test_async_server_inside_a_running_loop() -> None:
    shop = Shop()
    erp = Erp()

    async def main() -> None:
        async with (
            AsyncMockServer(shop.app()) as shop_server,
            AsyncMockServer(erp.app()) as erp_server,
            aiohttp.ClientSession() as session,
        ):
            async with session.get(erp_server.url + "/products?page_size=2") as response:
                products = (await response.json())["items"]
            for product in products:
                url = f"{shop_server.url}/products/{product['sku']}"
                async with session.put(url, json=product) as response:
                    assert response.status == 201

    asyncio.run(main())
    assert list(shop.by_sku) == ["SKU-00001", "SKU-00002"]
    assert erp.requests_to("/products") == 1


def test_many_concurrent_requests_are_all_counted() -> None:
    with start_shop(record_bodies=False) as shop:

        async def blast() -> None:
            async with aiohttp.ClientSession() as session:

                async def put(i: int) -> None:
                    async with session.put(f"{shop.url}/products/S{i % 50}", json={"i": i}) as response:
                        assert response.status in (200, 201)

                await asyncio.gather(*(put(i) for i in range(500)))

        asyncio.run(blast())
        stats = shop.stats()
    assert stats["requests"] == stats["accepted"] == 500
    assert stats["skus"]["/products"] == 50


def test_cli_options_become_a_failure_config() -> None:
    args = build_parser().parse_args(
        ["shop", "--fail-every", "10", "--status-for-sku", "SKU-00003=400", "--html", "502", "--port", "0"]
    )
    config = _failures(args)
    assert (config.fail_every, config.status_for_skus, config.html) == (10, {"SKU-00003": 400}, 502)
    erp_args = build_parser().parse_args(["erp", "--products", "5", "--auth", "oauth2"])
    assert (erp_args.products, erp_args.auth) == (5, "oauth2")
