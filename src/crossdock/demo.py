"""`crossdock demo`: a mock ERP and a mock shop on loopback, the example route, and a summary."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from rich.console import Console

from crossdock.engine.project import load_project
from crossdock.engine.runner import run_once
from crossdock.mock import FailureConfig, start_erp, start_shop
from crossdock.store import open_store

DEMO_CONFIG = """\
# The crossdock demo: a mock ERP (paginated JSON API) feeds a mock shop.
database: sqlite:///crossdock.db

connections:
  erp:
    type: http
    base_url: "${ERP_URL}"
    auth: {type: bearer, token: "${ERP_TOKEN}"}
  shop:
    type: http
    base_url: "${SHOP_URL}"
    timeout: 10s

routes:
  erp-to-shop:
    incoming:
      source:
        type: http
        connection: erp
        path: /products
        query: {page_size: "100"}
        records: items
        pagination: {type: next_link, path: _links.next}
    identifier: sku
    validate: {max_entity_bytes: 4000}
    outgoing:
      target: {type: http, connection: shop, method: PUT, path: "/products/{sku}", store_response: id}
      concurrency: 32
    retry: {max_attempts: 4, backoff: 1s, max_backoff: 10s}
"""


def run_demo(
    directory: Path,
    *,
    port: int,
    products: int,
    console: Console,
    config_name: str = "crossdock.yaml",
    database: str | None = None,
) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / config_name
    text = DEMO_CONFIG if database is None else DEMO_CONFIG.replace("sqlite:///crossdock.db", database, 1)
    config.write_text(text, encoding="utf-8")
    token = "demo-erp-token"
    # a few records the shop refuses for good (400) and a flaky shop (every 20th request 503)
    failures = FailureConfig(fail_every=20, fail_status=503, status_for_skus={"SKU-00003": 400, "SKU-00042": 422})
    with (
        start_erp(products=products, auth={"mode": "bearer", "token": token}) as erp,
        start_shop(failures=failures) as shop,
    ):
        os.environ.update({"ERP_URL": erp.url, "ERP_TOKEN": token, "SHOP_URL": shop.url})
        console.print(f"mock ERP  {erp.url}  ({products} products, bearer auth)")
        console.print(f"mock shop {shop.url}  (every 20th request 503, two SKUs refused with 4xx)")
        project = load_project(config)
        store = open_store(project.database_url(), base=project.root)
        try:
            store.ensure_routes(project.routes)
            first = asyncio.run(run_once(project, store, "erp-to-shop", actor="demo"))
            imp = first["incoming"]["routes"]["erp-to-shop"]
            console.print(
                f"\nimport: read {imp['read']} products → new {imp['new']}, unchanged {imp['unchanged']}, "
                f"rejected {imp['rejected']}"
            )
            console.print(f"export: {first['outgoing']['by_status']}")
            retries = first["by_status"]["retry"]
            rounds = 0
            while retries and rounds < 5:
                rounds += 1
                console.print(f"waiting for {retries} task(s) in retry…")
                asyncio.run(asyncio.sleep(2.5))
                again = asyncio.run(run_once(project, store, "erp-to-shop", incoming=False, actor="demo"))
                retries = again["by_status"]["retry"]
            stats = store.stats("erp-to-shop").by_status
        finally:
            store.close()
        console.print(f"\nshop received {shop.stats()['requests']} requests; tasks by status: {stats}")
    db = (directory / "crossdock.db").resolve()
    console.print(
        f"\nThe database stays in {db}. Explore it:\n"
        f"  cd {directory} && crossdock tasks list --status failed\n"
        f"  crossdock tasks show <id>\n"
        f"  crossdock stats\n"
        f"(The dashboard on port {port} comes with the web release; this build prints the summary only.)"
    )
    return 0
