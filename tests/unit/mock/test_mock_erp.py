"""The mock ERP: every pagination style, filters, catalogue changes and counters."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from crossdock.mock import Catalogue, RunningErp, start_erp


def _follow_next_link(http: Any, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        reply = http("GET", next_url)
        assert reply.status == 200
        body = reply.json()
        items += body["items"]
        next_url = body["_links"]["next"]
    return items


def _follow_link_header(http: Any, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        reply = http("GET", next_url)
        items += reply.json()
        match = re.search(r'<([^>]+)>;\s*rel="next"', reply.headers.get("Link", ""))
        next_url = match.group(1) if match else None
    return items


def _follow_pages(http: Any, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        body = http("GET", f"{url}&page={page}").json()
        if not body["items"]:
            return items
        items += body["items"]
        page += 1


def _follow_offset(http: Any, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = http("GET", f"{url}&offset={offset}&limit=40").json()
        items += body["items"]
        offset += len(body["items"])
        if offset >= body["total"] or not body["items"]:
            return items


def _follow_cursor(http: Any, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        body = http("GET", f"{url}&cursor={cursor}").json()
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        cursor = body["next_cursor"]


def _follow_xml(http: Any, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        root = ET.fromstring(http("GET", next_url).body)
        items += [{field.tag: field.text for field in product} for product in root.iter("product")]
        next_url = root.findtext("next")
    return items


STYLES = {
    "next_link": ("/products?page_size=40", _follow_next_link),
    "link_header": ("/products/link-header?page_size=40", _follow_link_header),
    "page_number": ("/products/page?page_size=40", _follow_pages),
    "offset": ("/products/offset?x=1", _follow_offset),
    "cursor": ("/products/cursor?page_size=40", _follow_cursor),
    "xml": ("/products.xml?page_size=40", _follow_xml),
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_pagination_style_returns_every_product_exactly_once(http: Any, erp: RunningErp, style: str) -> None:
    path, follow = STYLES[style]
    items = follow(http, erp.url + path)
    skus = [item["sku"] for item in items]
    assert len(skus) == 250
    assert sorted(set(skus)) == erp.catalogue.skus()


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_pagination_style_filters_by_updated_since(http: Any, erp: RunningErp, style: str) -> None:
    since = "2024-06-01T00:00:00Z"
    expected = sorted(p["sku"] for p in erp.catalogue.all() if p["updated_at"] >= since)
    assert 0 < len(expected) < 250
    path, follow = STYLES[style]
    items = follow(http, f"{erp.url}{path}&updated_since={since}")
    assert sorted(item["sku"] for item in items) == expected


def test_next_link_pagination_survives_catalogue_changes_mid_listing(http: Any, erp: RunningErp) -> None:
    first = http("GET", erp.url + "/products?page_size=50").json()
    erp.catalogue.remove("SKU-00010")  # already delivered: must not shift the next page
    erp.catalogue.update("SKU-00200", stock=1)
    rest = _follow_next_link(http, first["_links"]["next"])
    skus = [p["sku"] for p in first["items"] + rest]
    assert len(skus) == len(set(skus)) == 250


def test_product_shape_and_determinism() -> None:
    one, two, other = Catalogue(20, seed=3), Catalogue(20, seed=3), Catalogue(20, seed=4)
    assert one.all() == two.all()
    assert one.all() != other.all()
    product = one.get("SKU-00001")
    assert product is not None
    assert set(product) == {"sku", "title", "price", "currency", "stock", "category", "status", "updated_at"}
    assert re.fullmatch(r"\d+\.\d\d", product["price"])
    assert product["currency"] == "EUR"
    assert product["category"] in {"A", "B", "C"}
    assert product["status"] in {"active", "inactive"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", product["updated_at"])
    assert isinstance(product["stock"], int)


def test_catalogue_changes_are_served_and_bump_updated_at(http: Any, erp: RunningErp) -> None:
    before = erp.catalogue.get("SKU-00003")
    assert before is not None
    erp.catalogue.update("SKU-00003", price="1.00")
    after = http("GET", erp.url + "/products/SKU-00003").json()
    assert after["price"] == "1.00"
    assert after["updated_at"] > before["updated_at"]
    changed = http("GET", erp.url + "/products?updated_since=" + after["updated_at"]).json()
    assert [p["sku"] for p in changed["items"]] == ["SKU-00003"]

    added = erp.catalogue.add(title="New thing")
    assert added["sku"] == "SKU-00251"
    assert http("GET", erp.url + "/products/SKU-00251").json()["title"] == "New thing"
    erp.catalogue.remove("SKU-00251")
    assert http("GET", erp.url + "/products/SKU-00251").status == 404
    with pytest.raises(ValueError):
        erp.catalogue.add(sku="SKU-00001")
    with pytest.raises(KeyError):
        erp.catalogue.update("SKU-99999", stock=1)


def test_catalogue_changes_over_http(http: Any, erp: RunningErp) -> None:
    assert http("PATCH", erp.url + "/_products/SKU-00004", {"stock": 9}).json()["stock"] == 9
    assert http("POST", erp.url + "/_products", {"sku": "X-1", "title": "t"}).status == 201
    assert erp.catalogue.get("X-1") is not None
    assert http("DELETE", erp.url + "/_products/X-1").status == 200
    assert http("DELETE", erp.url + "/_products/X-1").status == 404


def test_requests_are_counted_per_path(http: Any, erp: RunningErp) -> None:
    http("GET", erp.url + "/products")
    http("GET", erp.url + "/products?after=SKU-00100")
    http("GET", erp.url + "/products/page?page=2")
    assert erp.requests_to("/products") == 2
    stats = http("GET", erp.url + "/_stats").json()
    assert stats["by_path"] == {"/products": 2, "/products/page": 1}
    assert stats["by_status"] == {"200": 3}
    http("POST", erp.url + "/_reset")
    assert erp.stats()["requests"] == 0


@pytest.mark.parametrize("query", ["page_size=0", "page_size=x", "updated_since=yesterday", "page_size=100000"])
def test_bad_query_parameters_answer_400(http: Any, erp: RunningErp, query: str) -> None:
    reply = http("GET", f"{erp.url}/products?{query}")
    assert reply.status == 400
    assert "error" in reply.json()


def test_bad_cursor_answers_400(http: Any, erp: RunningErp) -> None:
    assert http("GET", erp.url + "/products/cursor?cursor=%%%").status == 400


def test_page_size_default_and_total(http: Any) -> None:
    with start_erp(products=30, default_page_size=25) as erp:
        body = http("GET", erp.url + "/products").json()
    assert len(body["items"]) == 25
    assert body["total"] == 30
    assert body["_links"]["next"].endswith("after=SKU-00025")
