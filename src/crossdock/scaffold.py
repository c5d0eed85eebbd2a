"""`crossdock init`: a project that works offline from the first command."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from crossdock.errors import UsageError

CONFIG = """\
# crossdock project. Reference: docs/config.md and docs/transformers.md in the crossdock repository.
database: sqlite:///crossdock.db

transformers:
  # the shop wants prices in cents, an upper-case category and no internal fields
  shop-product:
    steps:
      - convert: {path: price, to: cents}
      - string: {path: category, op: upper}
      - set: {path: url, template: "https://shop.example/p/{sku}"}
      - remove: [internal_note]
    tests:
      - name: maps a product
        input: {sku: SKU-1, title: Chair, price: "19.99", stock: 3, category: garden, internal_note: x}
        expected: {sku: SKU-1, title: Chair, price: 1999, stock: 3, category: GARDEN, url: "https://shop.example/p/SKU-1"}

routes:
  products-to-shop:
    incoming:
      source: {type: file, path: data/products.ndjson}
      # schedule: "*/5 * * * *"         # cron; without it the route runs on demand (crossdock run)
      transform:
        - filter: "stock > 0"            # out-of-stock products become skipped tasks, with this as the reason
    identifier: sku
    delta: true                          # only new or changed records become new tasks
    validate:
      max_entity_bytes: 2000
      schema: schemas/product.json
    outgoing:
      transform:
        - use: shop-product
      target: {type: file, path: out/shop-products.ndjson}
      # target: {type: http, url: "${SHOP_URL}", method: PUT, path: "/products/{sku}"}
      batch_size: 100
    retry: {max_attempts: 5, backoff: 30s, max_backoff: 6h}
    tests:
      - name: in stock passes
        input: {sku: SKU-2, title: Lamp, price: "5.00", stock: 1, category: books}
        expected: {sku: SKU-2, title: Lamp, price: "5.00", stock: 1, category: books}
      - name: out of stock is filtered
        input: {sku: SKU-3, title: Lamp, price: "5.00", stock: 0}
        expected: {filtered: true}
"""

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["sku", "title", "price"],
    "properties": {
        "sku": {"type": "string", "minLength": 1},
        "title": {"type": "string"},
        "price": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"},
        "stock": {"type": "integer", "minimum": 0},
        "category": {"type": "string"},
    },
}

README = """\
# A crossdock project

    crossdock check                      # validate the config
    crossdock run products-to-shop       # import data/products.ndjson, deliver to out/shop-products.ndjson
    crossdock tasks list --status rejected
    crossdock stats
    crossdock transform products-to-shop --input sample.json --outgoing --trace   # test sample records

`sample.json` holds three records to test the route with: a changed price, an out-of-stock product and one
without a price. `crossdock transform` (and the dashboard's "Test the transforms" on the route page) shows what a
run would make of them: each step's output, the identifier, validation, delta and the request, writing nothing.

Edit `data/products.ndjson` and run again: only changed records travel.
"""


def sample_products(n: int = 20, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    products: list[dict[str, object]] = []
    for i in range(1, n + 1):
        products.append(
            {
                "sku": f"SKU-{i:05d}",
                "title": f"Sample product {i}",
                "price": f"{rng.randint(100, 9999) / 100:.2f}",
                "stock": 0 if i % 10 == 0 else rng.randint(1, 50),
                "category": rng.choice(["apparel", "books", "garden"]),
            }
        )
    products.append({"sku": "SKU-BAD", "title": "Price missing: rejected by the schema", "stock": 5})
    return products


def sample_records() -> list[dict[str, object]]:
    """``sample.json``: records of the example route's data as `crossdock transform` tests them: the first product
    with a new price (changed, once imported), an out-of-stock one (filtered) and the one without a price
    (rejected by the schema)."""
    products = sample_products()
    changed = {**products[0], "price": "1.99" if products[0]["price"] != "1.99" else "2.99"}
    return [changed, products[9], products[-1]]


def write_project(
    directory: Path, *, force: bool = False, config_name: str = "crossdock.yaml", database: str | None = None
) -> list[Path]:
    config = CONFIG if database is None else CONFIG.replace("sqlite:///crossdock.db", database, 1)
    files = {
        directory / config_name: config.encode(),
        directory / "schemas" / "product.json": orjson.dumps(SCHEMA, option=orjson.OPT_INDENT_2) + b"\n",
        directory / "data" / "products.ndjson": b"".join(orjson.dumps(p) + b"\n" for p in sample_products()),
        directory / "sample.json": orjson.dumps(sample_records(), option=orjson.OPT_INDENT_2) + b"\n",
        directory / "README.md": README.encode(),
    }
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists; pass --force to overwrite")
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return list(files)
