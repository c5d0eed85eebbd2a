"""`crossdock run ROUTE --dry-run` through the real CLI: the counts the next real run produces, field diffs against
the last delivered version, the requests as they would go out, and nothing written or sent."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from crossdock.mock import RunningShop

SCHEMA = '{"type": "object", "required": ["sku", "price"], "properties": {"price": {"type": "string"}}}'

CONFIG = """\
connections:
  shop:
    type: http
    base_url: "${SHOP_URL}"
    auth: {type: bearer, token: "${SHOP_TOKEN}"}
routes:
  r:
    incoming:
      source: {type: file, path: "inbox/*.ndjson", after: move}
    identifier: sku
    transform:
      - filter: "stock > 0"
    validate:
      schema: schemas/product.json
    outgoing:
      target: {type: http, connection: shop, method: PUT, path: "/products/{sku}"}
"""

TOKEN = "s3cr3t-shop-token-4711"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def catalogue(n: int) -> list[dict[str, Any]]:
    return [
        {
            "sku": f"SKU-{i:06d}",
            "title": f"Product {i}",
            "price": f"{i % 1000}.99",
            "stock": i % 50 + 1,
            "attributes": {"color": "red", "size": "M"},
            "images": [f"https://img.example/{i}/{k}.jpg" for k in range(3)],
        }
        for i in range(1, n + 1)
    ]


def setup(project: Any) -> None:
    project.env["SHOP_TOKEN"] = TOKEN
    project.write_config(CONFIG)
    project.write("schemas/product.json", SCHEMA)


def test_dry_run_counts_match_the_next_real_run_and_nothing_is_written_or_sent(project: Any, shop: RunningShop) -> None:
    setup(project)
    records = catalogue(1000)
    project.write_ndjson("inbox/day1.ndjson", records)
    first = project.run("r")
    assert first["outgoing"]["by_status"] == {"finished": 1000}
    sent_before = shop.stats()["requests"]
    assert sent_before == 1000

    # the next delivery: 1 % of the products changed, in a field, a nested field and a list item
    expected: dict[str, set[str]] = {}
    day2 = [dict(r) for r in records]
    for n, i in enumerate(range(0, 1000, 100)):
        rec = day2[i] = {**day2[i], "attributes": dict(day2[i]["attributes"]), "images": list(day2[i]["images"])}
        if n % 3 == 0:
            rec["price"] = "1234.50"
            expected[rec["sku"]] = {"price"}
        elif n % 3 == 1:
            rec["attributes"]["color"] = "blue"
            expected[rec["sku"]] = {"attributes.color"}
        else:
            rec["images"][2] = "https://img.example/new.jpg"
            rec["title"] = "renamed"
            expected[rec["sku"]] = {"images[2]", "title"}
    out_of_stock = {**records[1], "stock": 0}
    day2[1] = out_of_stock
    day2.append({"sku": "SKU-NOPRICE", "title": "no price", "stock": 3})
    day2.append({**records[2], "sku": "SKU-BRAND-NEW"})
    project.write_ndjson("inbox/day2.ndjson", day2)

    db_before = sha256(project.db_path)
    dry = project.run("r", "--dry-run", "--show", "20")
    assert dry["dry_run"] is True and dry["status"] == "ok"
    assert sha256(project.db_path) == db_before, "the dry run changed the database file"
    assert shop.stats()["requests"] == sent_before, "the dry run sent requests"
    assert (project.root / "inbox/day2.ndjson").exists(), "the dry run moved the source file (after: move)"
    assert not (project.root / "inbox/processed/day2.ndjson").exists()

    assert dry["counts"] == {
        "new": 11,
        "changed": 10,
        "unchanged": 989,
        "filtered": 1,
        "rejected": 1,
        "superseded": 0,
    }
    assert dry["reasons"]["filtered"] == [{"reason": "route r: filter: stock > 0", "count": 1}]
    [rejected] = dry["reasons"]["rejected"]
    assert "'price' is a required property" in rejected["reason"] and rejected["count"] == 1

    diffs = {c["identifier"]: c for c in dry["changes"]}
    assert set(diffs) == set(expected)
    for sku, paths in expected.items():
        assert {f["path"] for f in diffs[sku]["fields"]} == paths, diffs[sku]
        assert diffs[sku]["delivered_task"] is not None
    price_change = next(f for c in dry["changes"] for f in c["fields"] if f["path"] == "price")
    assert price_change["new"] == "1234.50" and price_change["old"].endswith(".99")
    image_change = next(f for c in dry["changes"] for f in c["fields"] if f["path"] == "images[2]")
    assert image_change == {
        "path": "images[2]",
        "old": image_change["old"],
        "new": "https://img.example/new.jpg",
    } and image_change["old"].endswith("/2.jpg")

    assert dry["outgoing"]["would_send"] == 11
    requests = dry["requests"]
    assert len(requests) == 11 and all(r["outcome"] == "send" for r in requests)
    first_request = requests[0]["request"]
    assert first_request["method"] == "PUT"
    assert first_request["url"] == f"{shop.url}/products/{requests[0]['identifier']}"
    assert first_request["headers"]["Authorization"] == "***"
    assert first_request["headers"]["Idempotency-Key"] == "crossdock-r-<task id>"
    assert TOKEN not in str(dry), "a secret reached the dry run's output"
    bodies = {r["identifier"]: r["request"]["body"] for r in requests}

    # the real run that follows produces exactly what the dry run said
    real = project.run("r")
    got = real["incoming"]["routes"]["r"]
    assert {k: got[k] for k in dry["counts"]} == dry["counts"]
    assert real["outgoing"]["claimed"] == dry["outgoing"]["would_send"]
    assert shop.stats()["requests"] == sent_before + 11
    for sku, body in bodies.items():
        assert [r.body for r in shop.received if r.sku == sku][-1] == body
    assert (project.root / "inbox/processed/day2.ndjson").exists()


def test_dry_run_text_names_changed_fields_and_requests(project: Any, shop: RunningShop) -> None:
    setup(project)
    records = catalogue(3)
    project.write_ndjson("inbox/a.ndjson", records)
    project.run("r")
    project.write_ndjson("inbox/b.ndjson", [{**records[0], "price": "9.00"}, *records[1:]])
    db_before = sha256(project.db_path)
    text = project.cli("run", "r", "--dry-run").stdout
    assert sha256(project.db_path) == db_before
    assert "would import: new 1  changed 1  unchanged 2" in text
    assert 'price: "1.99" → "9.00"' in text
    assert f"PUT {shop.url}/products/SKU-000001" in text
    assert TOKEN not in text


def test_dry_run_on_a_project_without_a_database_creates_none(project: Any, shop: RunningShop) -> None:
    setup(project)
    project.write_ndjson("inbox/a.ndjson", catalogue(5))
    dry = project.run("r", "--dry-run")
    assert dry["counts"]["new"] == 5 and dry["outgoing"]["would_send"] == 5
    assert any("no database" in note for note in dry["notes"])
    assert not project.db_path.exists()
    assert shop.stats()["requests"] == 0


def test_dry_run_refuses_outgoing_only(project: Any, shop: RunningShop) -> None:
    setup(project)
    result = project.cli("run", "r", "--dry-run", "--outgoing", expect=2)
    assert "--outgoing" in result.stderr
