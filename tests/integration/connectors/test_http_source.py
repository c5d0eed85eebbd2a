"""The HTTP source against the mock ERP: every pagination style under every auth mode, incremental pulls, errors."""

from __future__ import annotations

import time

import orjson
import pytest
from http_helpers import AUTH_BLOCKS, Harness

from crossdock.mock import RunningErp
from loopback import RawRequest, http_answer, loopback_target

#: style -> source block (without connection); page size 37 so 250 products take 7 pages with a short last one
STYLES = {
    "next_link": "path: /products, query: {page_size: '37'}, records: items, "
    "pagination: {type: next_link, path: _links.next}",
    "link_header": "path: /products/link-header, query: {page_size: '37'}, pagination: {type: link_header}",
    "page": "path: /products/page, records: items, pagination: {type: page, size_param: page_size, size: 37}",
    "offset": "path: /products/offset, records: items, pagination: {type: offset, size_param: limit, size: 37}",
    "cursor": "path: /products/cursor, records: items, "
    "pagination: {type: cursor, path: next_cursor, size_param: page_size, size: 37}",
    "xml": "path: /products.xml, query: {page_size: '37'}, format: xml, records: product, "
    "pagination: {type: next_link, path: next}",
}
PAGES = {"next_link": 7, "link_header": 7, "page": 8, "offset": 7, "cursor": 7, "xml": 7}
PATHS = {
    "next_link": "/products",
    "link_header": "/products/link-header",
    "page": "/products/page",
    "offset": "/products/offset",
    "cursor": "/products/cursor",
    "xml": "/products.xml",
}


def project_yaml(erp_url: str, source: str, auth: str = "none", connection_extra: str = "") -> str:
    return f"""\
connections:
  erp: {{type: http, base_url: "{erp_url}", auth: {AUTH_BLOCKS[auth] % {"erp": erp_url}}{connection_extra}}}
routes:
  products:
    incoming:
      source: {{type: http, connection: erp, {source}}}
      batch_size: 100
    identifier: sku
    outgoing:
      target: {{type: noop}}
"""


@pytest.mark.parametrize("auth", ["bearer", "basic", "api_key_query", "oauth2"])
@pytest.mark.parametrize("style", list(STYLES))
def test_every_record_exactly_once(harness: Harness, erp: RunningErp, style: str, auth: str) -> None:
    erp.set_auth(auth)
    harness.write(project_yaml(erp.url, STYLES[style], auth))

    summary = harness.run_import("products")

    assert summary.status == "ok", summary.error
    assert summary.read == 250  # a record read twice would count twice here
    identifiers = sorted(t.identifier for t in harness.tasks("products") if t.identifier)
    assert identifiers == erp.catalogue.skus()
    assert harness.by_status("products") == {"new": 250}
    assert erp.requests_to(PATHS[style]) == PAGES[style]
    assert erp.stats()["by_status"].get("401") is None
    if style == "xml":
        task = next(t for t in harness.tasks("products") if t.identifier == "SKU-00001")
        assert task.entity == {**erp.catalogue.get("SKU-00001"), "stock": str(erp.catalogue.get("SKU-00001")["stock"])}


def test_api_key_header_and_no_auth(harness: Harness, erp: RunningErp) -> None:
    for auth in ("api_key_header", "none"):
        erp.set_auth(auth)
        harness.write(project_yaml(erp.url, STYLES["cursor"], auth).replace("products:", f"products-{auth}:", 1))
        summary = harness.run_import(f"products-{auth}")
        assert (summary.status, summary.read) == ("ok", 250)


def test_wrong_credentials_fail_the_run_with_the_status(harness: Harness, erp: RunningErp) -> None:
    erp.set_auth("bearer")
    harness.write(project_yaml(erp.url, STYLES["next_link"], "basic"))
    summary = harness.run_import("products")
    assert summary.status == "failed"
    assert "answered 401" in (summary.error or "")
    assert "erp-secret" not in (summary.error or "")
    assert harness.tasks() == []


def test_wrong_records_path_fails_the_run_naming_the_keys(harness: Harness, erp: RunningErp) -> None:
    harness.write(project_yaml(erp.url, "path: /products, records: products, pagination: {type: next_link}"))
    summary = harness.run_import("products")
    assert summary.status == "failed"
    assert "records: 'products'" in (summary.error or "")
    assert "the response has: items, _links, total" in (summary.error or "")
    assert harness.tasks() == []
    run = harness.store.list_runs("products")[0]  # type: ignore[union-attr]
    assert run.status == "failed" and "items, _links, total" in (run.error or "")


def test_wrong_xml_element_fails_the_run(harness: Harness, erp: RunningErp) -> None:
    source = STYLES["xml"].replace("records: product", "records: item")
    harness.write(project_yaml(erp.url, source))
    summary = harness.run_import("products")
    assert summary.status == "failed"
    assert "no <item> elements" in (summary.error or "") and "product" in (summary.error or "")


def test_incremental_pull_with_last_run(harness: Harness, erp: RunningErp) -> None:
    source = "path: /products, query: {updated_since: '{last_run}', page_size: '100'}, records: items, "
    source += "pagination: {type: next_link}"
    harness.write(project_yaml(erp.url, source))
    assert harness.run_import("products").read == 250
    time.sleep(1.1)  # the catalogue stamps changes to the second
    for sku in ("SKU-00003", "SKU-00100", "SKU-00200"):
        erp.catalogue.update(sku, stock=9999)

    second = harness.run_import("products")

    assert second.status == "ok", second.error
    assert second.read == 3
    assert second.routes["products"].changed == 3


def test_post_body_and_env_templates(harness: Harness, erp: RunningErp, monkeypatch: pytest.MonkeyPatch) -> None:
    """A POST source sends its templated JSON body; the mock ERP only lists on GET, so a recording app answers."""
    from aiohttp import web

    from crossdock.mock import MockServer

    seen: list[dict[str, object]] = []

    async def search(request: web.Request) -> web.Response:
        seen.append({"body": await request.json(), "header": request.headers.get("X-Tenant")})
        return web.json_response({"data": {"rows": [{"sku": "A"}, {"sku": "B"}]}})

    app = web.Application()
    app.router.add_post("/search", search)
    monkeypatch.setenv("TENANT", "acme")
    with MockServer(app) as server:
        harness.write(f"""\
routes:
  products:
    incoming:
      source:
        type: http
        url: {server.url}
        path: /search
        method: POST
        headers: {{X-Tenant: "{{env.TENANT}}"}}
        body: {{filter: {{updated_since: "{{last_run}}", tenant: "{{env.TENANT}}"}}, size: 10}}
        last_run_default: "1970-01-01T00:00:00Z"
        records: data.rows
    identifier: sku
    outgoing: {{target: {{type: noop}}}}
""")
        summary = harness.run_import("products")
    assert summary.status == "ok", summary.error
    assert summary.read == 2
    assert seen == [
        {"body": {"filter": {"updated_since": "1970-01-01T00:00:00Z", "tenant": "acme"}, "size": 10}, "header": "acme"}
    ]


def test_xml_with_a_doctype_is_refused(harness: Harness) -> None:
    from aiohttp import web

    from crossdock.mock import MockServer

    bomb = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><products><product>&lol;</product></products>'

    async def feed(request: web.Request) -> web.Response:
        return web.Response(body=bomb, content_type="application/xml")

    app = web.Application()
    app.router.add_get("/feed.xml", feed)
    with MockServer(app) as server:
        harness.write(f"""\
routes:
  products:
    incoming: {{source: {{type: http, url: {server.url}, path: /feed.xml, format: xml, records: product}}}}
    identifier: sku
    outgoing: {{target: {{type: noop}}}}
""")
        summary = harness.run_import("products")
    assert summary.status == "failed"
    assert "DOCTYPE or ENTITY" in (summary.error or "")
    assert harness.tasks() == []


def test_429_retry_after_is_honoured_inside_the_page_fetch(harness: Harness, erp: RunningErp) -> None:
    erp.set_failures(fail_times=1, fail_status=429, retry_after=1, paths=["/products/cursor"])
    harness.write(project_yaml(erp.url, STYLES["cursor"], connection_extra=", retries: {attempts: 2, backoff: 0.01}"))
    started = time.monotonic()
    summary = harness.run_import("products")
    took = time.monotonic() - started
    assert summary.status == "ok", summary.error
    assert summary.read == 250
    assert erp.stats()["by_status"]["429"] == 7  # each of the 7 pages failed once, then passed
    assert took >= 7 * 1.0  # Retry-After: 1 was waited out every time, not the 10 ms backoff


def test_without_in_call_retries_a_429_fails_the_run(harness: Harness, erp: RunningErp) -> None:
    erp.set_failures(fail_times=1, fail_status=429, retry_after=1)
    harness.write(project_yaml(erp.url, STYLES["cursor"]))
    summary = harness.run_import("products")
    assert summary.status == "failed"
    assert "answered 429" in (summary.error or "")


def test_max_pages_guard(harness: Harness, erp: RunningErp) -> None:
    harness.write(project_yaml(erp.url, STYLES["page"] + ", max_pages: 3"))
    summary = harness.run_import("products")
    assert summary.status == "failed"
    assert "max_pages=3" in (summary.error or "")
    assert summary.read == 3 * 37  # what came before the guard is kept


def url_source(url: str, extra: str = "") -> str:
    return f"""\
routes:
  products:
    incoming: {{source: {{type: http, url: "{url}"{extra}}}}}
    identifier: sku
    outgoing: {{target: {{type: noop}}}}
"""


@pytest.mark.parametrize(
    ("written", "extra", "requested"),
    [
        ("/export", "", "/export"),
        ("/export/", "", "/export/"),
        ("/api", ", path: /products", "/api/products"),
        ("/export?tenant=3&sig=ab%2Bcd%3D%3D", "", "/export?tenant=3&sig=ab%2Bcd%3D%3D"),
        ("/export?tenant=3", ", query: {limit: '5'}", "/export?tenant=3&limit=5"),
        ("/api?tenant=3", ", path: /products, query: {limit: '5'}", "/api/products?tenant=3&limit=5"),
    ],
    ids=["url-only", "url-with-slash", "url-and-path", "url-query", "url-query-and-query", "url-query-path-query"],
)
def test_a_full_url_is_requested_as_written_and_a_path_beside_it_appended(
    harness: Harness, written: str, extra: str, requested: str
) -> None:
    with loopback_target(lambda request: http_answer(200, b'[{"sku": "A"}, {"sku": "B"}]')) as source:
        harness.write(url_source(source.url + written, extra))
        summary = harness.run_import("products")
    assert summary.status == "ok", summary.error
    assert summary.read == 2
    assert [r.target for r in source.requests] == [requested]


def test_relative_next_links_resolve_against_the_page_they_came_from(harness: Harness) -> None:
    """A query-only link and a root-relative one, as a browser reads them: no slash added to the url, no path
    repeated after it."""
    links = {
        "/api/products?tenant=3": "?tenant=3&cursor=2",
        "/api/products?tenant=3&cursor=2": "/api/products?tenant=3&cursor=3",
        "/api/products?tenant=3&cursor=3": None,
    }

    def answer(request: RawRequest) -> bytes:
        body = {"items": [{"sku": request.target}], "next": links.get(request.target)}
        return http_answer(200, orjson.dumps(body))

    with loopback_target(answer) as source:
        harness.write(
            url_source(
                source.url + "/api/products?tenant=3", ", records: items, pagination: {type: next_link, path: next}"
            )
        )
        summary = harness.run_import("products")
    assert summary.status == "ok", summary.error
    assert [r.target for r in source.requests] == list(links)
