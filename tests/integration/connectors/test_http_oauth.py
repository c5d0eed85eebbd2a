"""OAuth2 client credentials: one token per connection, shared by pages and deliveries, renewed when it expires."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from http_helpers import AUTH_BLOCKS, Harness

from crossdock.engine.exporter import Exporter
from crossdock.engine.importer import Importer
from crossdock.mock import AuthConfig, MockServer, RunningErp


def oauth_project(erp_url: str, target_url: str, source: str = "") -> str:
    auth = AUTH_BLOCKS["oauth2"] % {"erp": erp_url}
    source = (
        source or "path: /products/cursor, records: items, pagination: {type: cursor, size_param: page_size, size: 50}"
    )
    return f"""\
connections:
  erp: {{type: http, base_url: "{erp_url}", auth: {auth}}}
routes:
  products:
    incoming: {{source: {{type: http, connection: erp, {source}}}}}
    identifier: sku
    outgoing:
      target: {{type: http, connection: erp, method: PUT, path: "{target_url}/items/{{sku}}"}}
      concurrency: 32
"""


def recorder() -> tuple[web.Application, list[str]]:
    """A target that keeps the Authorization header of every request (the mock shop does not look at auth)."""
    seen: list[str] = []

    async def put(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_put("/items/{sku}", put)
    return app, seen


def test_one_token_for_all_pages_and_deliveries(harness: Harness, erp: RunningErp) -> None:
    erp.set_auth("oauth2")
    app, seen = recorder()
    with MockServer(app) as target:
        project = harness.write(oauth_project(erp.url, target.url))
        assert harness.store is not None
        store = harness.store

        async def both() -> tuple[int, int]:
            exporter = Exporter(project, store)
            importer = Importer(project, store, clients=exporter.clients)  # as `crossdock run` wires them
            try:
                imported = await importer.run_route("products")
                exported = await exporter.run_route("products")
                return imported.read, exported.by_status.get("finished", 0)
            finally:
                await exporter.close()

        read, finished = asyncio.run(both())

    assert (read, finished) == (250, 250)
    assert erp.tokens_issued == 1
    assert erp.requests_to("/products/cursor") == 5
    assert len(seen) == 250
    assert len(set(seen)) == 1 and seen[0].startswith("Bearer ") and len(seen[0]) > 20


def test_a_revoked_token_is_renewed_once_on_401(harness: Harness, erp: RunningErp) -> None:
    erp.set_auth("oauth2")
    harness.write(oauth_project(erp.url, "http://127.0.0.1:9"))
    pages = 0

    def after_page(_read: int) -> None:
        nonlocal pages
        pages += 1
        if pages == 2:
            erp.expire_tokens()  # mid-run, as if the server had restarted

    summary = harness.run_import("products", progress=after_page)

    assert summary.status == "ok", summary.error
    assert summary.read == 250
    assert erp.tokens_issued == 2
    assert erp.stats()["by_status"]["401"] == 1  # one refused page, then the same page again with a new token


def test_a_token_is_renewed_before_it_expires(harness: Harness, erp: RunningErp, tmp_path: Path) -> None:
    erp.set_auth(AuthConfig(mode="oauth2", token_ttl=0.4))
    erp.set_failures(slow_ms=120, paths=["/products/cursor"])
    harness.write(oauth_project(erp.url, "http://127.0.0.1:9"))

    summary = harness.run_import("products")  # 5 pages x 120 ms: longer than one token lives

    assert summary.status == "ok", summary.error
    assert summary.read == 250
    assert erp.tokens_issued >= 2
    assert "401" not in erp.stats()["by_status"]  # renewed ahead of expiry, never refused


def test_wrong_client_secret_fails_the_run_clearly(harness: Harness, erp: RunningErp) -> None:
    erp.set_auth("oauth2")
    harness.write(oauth_project(erp.url, "http://127.0.0.1:9").replace("crossdock-secret", "nope-nope"))
    summary = harness.run_import("products")
    assert summary.status == "failed"
    assert "oauth2 token endpoint" in (summary.error or "") and "invalid_client" in (summary.error or "")
    assert "nope-nope" not in (summary.error or "")
