"""``crossdock serve`` and ``crossdock worker`` as real processes against the mock ERP and shop."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from clirunner import SCHEDULED, Cli, wait_for, write_products
from crossdock.mock import start_erp, start_shop
from crossdock.store import TaskFilter
from crossdock.store.sqlite.store import SQLiteStore
from crossdock.tasks import Status

pytestmark = pytest.mark.slow

MakeCli = Callable[[str, dict[str, str]], Cli]

FILE_ROUTE = """\
database: sqlite:///crossdock.db
connections:
  shop: {{type: http, base_url: "${{SHOP_URL}}", timeout: 10s}}
routes:
  to-shop:
    incoming:
      source: {{type: file, path: products.ndjson}}
    identifier: sku
    outgoing:
      target: {{type: http, connection: shop, method: PUT, path: "/products/{{sku}}"}}
      concurrency: {concurrency}
      lease: {lease}
"""


def file_project(
    make: MakeCli, tmp_path: Path, shop_url: str, n: int, *, concurrency: int = 8, lease: str = "30s"
) -> Cli:
    write_products(tmp_path / "products.ndjson", n)
    cli = make(FILE_ROUTE.format(concurrency=concurrency, lease=lease), {"SHOP_URL": shop_url})
    cli.run("run", "to-shop", "--incoming")
    assert cli.stats()["new"] == n
    return cli


def test_serve_imports_and_exports_on_schedule(cli_factory: MakeCli, tmp_path: Path) -> None:
    config = "database: sqlite:///crossdock.db\n" + SCHEDULED
    with start_erp(products=60) as erp, start_shop() as shop:
        cli = cli_factory(config, {"ERP_URL": erp.url, "SHOP_URL": shop.url})
        proc = cli.start("serve", "--port", "0", "--log-format", "json", env={"CROSSDOCK_SCHEDULER_TICK": "0.2"})
        try:
            wait_for(lambda: len(shop.by_sku) == 60, 30, "the shop to receive 60 products")
        finally:
            code = cli.stop(proc)
        output = cli.output(proc)
        assert code == 0, output
        lines = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert lines, output
        assert any(line.get("backend") == "sqlite" for line in lines)
        assert any(line.get("schedule") == "* * * * * */2" and line.get("part") == "outgoing" for line in lines)
        stats = cli.stats()
        assert stats["finished"] == 60
        assert stats["processing"] == 0
        runs = cli.json("runs", "list", "--limit", "100")
        assert {(r["part"], r["actor"]) for r in runs} == {
            ("incoming", "scheduler"),
            ("outgoing", "scheduler"),
        }
        assert shop.duplicates() == {}


def test_sigterm_lets_in_flight_deliveries_finish(cli_factory: MakeCli, tmp_path: Path) -> None:
    n = 200
    with start_shop(failures={"slow_ms": 400}) as shop:
        cli = file_project(cli_factory, tmp_path, shop.url, n, concurrency=8)
        proc = cli.start("worker", "--grace", "10s")
        wait_for(lambda: shop.stats()["accepted"] >= 8, 30, "the first deliveries")
        started = time.monotonic()
        code = cli.stop(proc)
        assert code == 0, cli.output(proc)
        assert time.monotonic() - started < 10
        stats = cli.stats()
        accepted = shop.stats()["accepted"]
        assert stats["processing"] == 0
        # every delivery the shop accepted was settled as finished; every other claim went back to new
        assert stats["finished"] == accepted
        assert stats["new"] == n - accepted > 0
        assert shop.duplicates() == {}
        assert "released" in cli.output(proc)


def test_two_workers_never_deliver_a_task_twice(cli_factory: MakeCli, tmp_path: Path) -> None:
    n = 1500
    with start_shop(record_bodies=False) as shop:
        cli = file_project(cli_factory, tmp_path, shop.url, n, concurrency=16)
        workers = [cli.start("worker", "--concurrency", "8") for _ in range(2)]
        wait_for(lambda: cli.stats()["finished"] == n, 60, f"{n} finished tasks")
        for proc in workers:
            assert cli.stop(proc) == 0, cli.output(proc)
        stats = shop.stats()
        assert stats["idempotency_keys"] == n
        assert stats["accepted"] == n
        assert shop.duplicates() == {}


def test_killed_worker_loses_nothing(cli_factory: MakeCli, tmp_path: Path) -> None:
    n = 300
    with start_shop(failures={"slow_ms": 150}) as shop:
        cli = file_project(cli_factory, tmp_path, shop.url, n, concurrency=16, lease="2s")
        victim = cli.start("worker")
        wait_for(lambda: shop.stats()["accepted"] >= 30, 30, "the first deliveries")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        store = SQLiteStore(tmp_path / "crossdock.db", create=False)
        try:
            held, _ = store.list_tasks(TaskFilter(statuses=[Status.PROCESSING]), limit=10_000)
        finally:
            store.close()
        assert held, "the killed worker held no task: the test did not kill it mid-run"
        in_flight_keys = {f"crossdock-{t.route}-{t.id}" for t in held}
        survivor = cli.start("worker")
        wait_for(lambda: cli.stats()["finished"] == n, 60, f"{n} finished tasks")
        assert cli.stop(survivor) == 0, cli.output(survivor)
        stats = cli.stats()
        assert stats["processing"] == stats["new"] == stats["retry"] == stats["failed"] == 0
        assert len(shop.idempotency_counts) == n
        duplicates = shop.duplicates()
        assert set(duplicates) <= in_flight_keys
        assert all(count == 2 for count in duplicates.values())
