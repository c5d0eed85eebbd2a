"""Runtime at scale on PostgreSQL: real ``crossdock serve`` / ``crossdock worker`` processes, one fresh
database per test (``postgres_url``: skipped locally without a server, failing under ``CI=true``), and the
mock ERP and shop on loopback.

- two ``serve`` processes share one database: exactly one schedules; no slot runs twice; SIGTERM of the
  leader hands scheduling to the other within a few ticks;
- three ``worker`` processes deliver every task exactly once;
- SIGKILL of one of three workers: everything still ends ``finished``; only tasks the dead worker held
  (recovered from its expired lease) may arrive twice, with the same idempotency key;
- SIGTERM of a worker mid-run: in-flight deliveries finish, nothing stays ``processing``, exit 0.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest

from clirunner import SCHEDULED, Cli, free_port, wait_for, write_products
from crossdock.mock import start_erp, start_shop
from crossdock.store import TaskFilter, open_store
from crossdock.tasks import Status
from postgres_support import postgres_url, server_url  # noqa: F401  (re-export the fixture)

pytestmark = pytest.mark.slow

MakeCli = Callable[[str, dict[str, str]], Cli]

ROUTE = "to-shop"
FILE_ROUTE = """\
connections:
  shop: {{type: http, base_url: "${{SHOP_URL}}", timeout: 10s}}
routes:
  to-shop:
    incoming:
      source: {{type: file, path: products.ndjson}}
      batch_size: 5000
    identifier: sku
    outgoing:
      target: {{type: http, connection: shop, method: PUT, path: "/products/{{sku}}"}}
      concurrency: {concurrency}
      lease: {lease}
"""

#: 60 products, 20 a page: the keyset ERP answers three pages per import (the third has no next link)
ERP_PRODUCTS = 60
PAGES_PER_IMPORT = 3
TICK = 0.2
SLOT_S = 2


def pg_cli(make: MakeCli, url: str, config: str, env: dict[str, str]) -> Cli:
    """A project on ``url``: every helper call finds the database through ``CROSSDOCK_DB``; long-running
    processes are also given ``--db`` explicitly."""
    return make(config, {**env, "CROSSDOCK_DB": url})


def file_project(
    make: MakeCli, tmp_path: Path, url: str, shop_url: str, n: int, *, concurrency: int = 16, lease: str = "30s"
) -> Cli:
    write_products(tmp_path / "products.ndjson", n)
    cli = pg_cli(make, url, FILE_ROUTE.format(concurrency=concurrency, lease=lease), {"SHOP_URL": shop_url})
    cli.run("run", ROUTE, "--incoming", "--db", url)
    assert cli.stats()["new"] == n
    return cli


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return out


def became_leader_at(cli: Cli, proc: Any) -> float | None:
    """Epoch seconds of the process's 'now the scheduler' log line (None if it never led)."""
    for line in json_lines(cli.output(proc)):
        if "now the scheduler" in str(line.get("message", "")):
            return datetime.fromisoformat(str(line["at"]).replace("Z", "+00:00")).timestamp()
    return None


def slot_of(run: dict[str, Any]) -> int:
    started = datetime.fromisoformat(str(run["started_at"]).replace("Z", "+00:00")).timestamp()
    return int(started // SLOT_S)


def scheduled_runs(cli: Cli, part: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = cli.json("runs", "list", "--limit", "10000")
    return [r for r in runs if r["part"] == part and r["route"] == "erp-to-shop"]


def assert_one_run_per_slot(runs: list[dict[str, Any]], what: str) -> None:
    slots = [slot_of(r) for r in runs]
    doubled = sorted({s for s in slots if slots.count(s) > 1})
    assert not doubled, f"{what}: two runs in one {SLOT_S}-s slot: " + repr(
        [(r["started_at"], r["actor"]) for r in runs if slot_of(r) in doubled]
    )


def test_two_serves_schedule_once_and_fail_over(cli_factory: MakeCli, postgres_url: str) -> None:  # noqa: F811
    url = postgres_url
    with start_erp(products=ERP_PRODUCTS) as erp, start_shop() as shop:
        cli = pg_cli(cli_factory, url, SCHEDULED, {"ERP_URL": erp.url, "SHOP_URL": shop.url})
        tick = {"CROSSDOCK_SCHEDULER_TICK": str(TICK)}
        serves = [
            cli.start("serve", "--db", url, "--port", str(free_port()), "--log-format", "json", env=tick)
            for _ in range(2)
        ]
        # no manual command: the leader's schedule imports and exports everything
        wait_for(lambda: len(shop.by_sku) == ERP_PRODUCTS, 30, f"the shop to receive {ERP_PRODUCTS} products")
        wait_for(lambda: len(scheduled_runs(cli, "incoming")) >= 3, 20, "three scheduled imports")
        leaders = [p for p in serves if became_leader_at(cli, p) is not None]
        assert len(leaders) == 1, [cli.output(p)[-3000:] for p in serves]
        leader = leaders[0]
        follower = serves[1 - serves.index(leader)]
        runs_before = len(scheduled_runs(cli, "incoming"))

        # SIGTERM the leader: it finishes its runs, gives up the advisory lock, exits 0
        assert cli.stop(leader) == 0, cli.output(leader)
        left_at = time.time()
        wait_for(lambda: became_leader_at(cli, follower) is not None, 10, "the other serve to take over")
        took_over = became_leader_at(cli, follower)
        assert took_over is not None
        assert took_over - left_at < 5 * TICK + 0.5, f"take-over after {took_over - left_at:.2f} s"

        # the new leader keeps importing and exporting: a changed ERP product reaches the shop
        sku = erp.catalogue.skus()[7]
        erp.catalogue.update(sku, price=12345.67)
        wait_for(
            lambda: str((shop.by_sku.get(sku) or {}).get("price")) in {"12345.67", "1234567"},
            20,
            f"the changed {sku} to reach the shop after the take-over",
        )
        wait_for(lambda: len(scheduled_runs(cli, "incoming")) >= runs_before + 3, 20, "imports by the new leader")
        assert cli.stop(follower) == 0, cli.output(follower)

        incoming = scheduled_runs(cli, "incoming")
        outgoing = scheduled_runs(cli, "outgoing")
        assert {r["actor"] for r in incoming + outgoing} == {"scheduler"}
        assert_one_run_per_slot(incoming, "imports")
        assert_one_run_per_slot(outgoing, "exports")
        assert all(r["status"] == "ok" for r in incoming), incoming
        # the ERP was asked once per slot: exactly one paged import per recorded run, nothing unrecorded
        assert erp.erp.requests_to("/products") == PAGES_PER_IMPORT * len(incoming)
        after_kill = [r for r in incoming if slot_of(r) * SLOT_S >= int(left_at)]
        assert len(after_kill) >= 2, incoming
        stats = cli.stats()
        assert stats["processing"] == 0
        assert stats["finished"] == ERP_PRODUCTS + 1  # 60, and the changed one again
        assert shop.duplicates() == {}


def test_leader_that_lost_its_lock_session_stops_scheduling(
    cli_factory: MakeCli,
    postgres_url: str,  # noqa: F811
) -> None:
    """The leader's lock connection dies (server restart, network cut, idle-session kill): the advisory lock
    goes with it, the other serve takes over, and the old leader must stop firing."""
    url = postgres_url
    with start_erp(products=ERP_PRODUCTS) as erp, start_shop() as shop:
        cli = pg_cli(cli_factory, url, SCHEDULED, {"ERP_URL": erp.url, "SHOP_URL": shop.url})
        tick = {"CROSSDOCK_SCHEDULER_TICK": str(TICK)}
        serves = [
            cli.start("serve", "--db", url, "--port", str(free_port()), "--log-format", "json", env=tick)
            for _ in range(2)
        ]
        wait_for(lambda: any(became_leader_at(cli, p) for p in serves), 20, "a leader")
        database = urlsplit(url).path.lstrip("/")
        with psycopg.connect(server_url(), autocommit=True) as admin:
            rows = admin.execute(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = %s",
                (database,),
            ).fetchall()
            assert len(rows) == 1, rows
            admin.execute("SELECT pg_terminate_backend(%s)", (rows[0][0],))
        cut_at = time.time()
        # whichever process takes the free lock first leads from here on (the old leader reconnects and may win)
        time.sleep(5 * SLOT_S + 0.5)
        codes = [cli.stop(proc) for proc in serves]
        incoming = [r for r in scheduled_runs(cli, "incoming") if slot_of(r) * SLOT_S >= int(cut_at) + SLOT_S]
        assert len(incoming) >= 2, "scheduling stopped after the lock session was lost"
        assert_one_run_per_slot(incoming, "imports after the lock session was lost")
        # no slot after the cut was fired by both processes
        fired: list[set[int]] = []
        for proc in serves:
            slots = set()
            for line in json_lines(cli.output(proc)):
                if str(line.get("message", "")).startswith("running "):
                    at = datetime.fromisoformat(str(line["at"]).replace("Z", "+00:00")).timestamp()
                    if at > cut_at:
                        slots.add(int(at // SLOT_S))
            fired.append(slots)
        assert not (fired[0] & fired[1]), f"both processes fired in slots {sorted(fired[0] & fired[1])}"
        assert fired[0] or fired[1]
        requests = erp.erp.requests_to("/products")
        assert requests == PAGES_PER_IMPORT * len(scheduled_runs(cli, "incoming"))
        assert codes == [0, 0], [cli.output(p)[-2000:] for p in serves]
        assert shop.duplicates() == {}


def test_three_workers_deliver_every_task_once(cli_factory: MakeCli, tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    n = 5000
    with start_shop(record_bodies=False) as shop:
        cli = file_project(cli_factory, tmp_path, postgres_url, shop.url, n, concurrency=16)
        workers = [cli.start("worker", "--db", postgres_url) for _ in range(3)]
        wait_for(lambda: cli.stats()["finished"] == n, 60, f"{n} finished tasks")
        alive = [p.poll() is None for p in workers]
        for proc in workers:
            assert cli.stop(proc) == 0, cli.output(proc)
        assert all(alive)
        stats = cli.stats()
        assert stats["processing"] == stats["new"] == stats["retry"] == stats["failed"] == 0
        assert shop.duplicates() == {}
        shop_stats = shop.stats()
        assert shop_stats["idempotency_keys"] == n
        assert shop_stats["accepted"] == n
        # all three took part (PostgreSQL claims spread the work, SKIP LOCKED)
        for proc in workers:
            assert "task(s) in" in cli.output(proc), cli.output(proc)


def test_killed_worker_only_its_in_flight_tasks_repeat(
    cli_factory: MakeCli,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    n = 3000
    with start_shop(failures={"slow_ms": 40}) as shop:
        cli = file_project(cli_factory, tmp_path, postgres_url, shop.url, n, concurrency=16, lease="2s")
        workers = [cli.start("worker", "--db", postgres_url) for _ in range(3)]
        victim = workers[0]
        wait_for(lambda: shop.stats()["accepted"] >= 400, 30, "the first deliveries")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        store = open_store(postgres_url)
        try:
            processing, _ = store.list_tasks(TaskFilter(statuses=[Status.PROCESSING]), limit=100_000)
            held = {t.id for t in processing if t.worker and t.worker.endswith(f":{victim.pid}")}
            assert held, "the killed worker held no task: the test did not kill it mid-run"

            wait_for(lambda: cli.stats()["finished"] == n, 60, f"{n} finished tasks")
            for proc in workers[1:]:
                assert cli.stop(proc) == 0, cli.output(proc)
            stats = cli.stats()
            assert stats["processing"] == stats["new"] == stats["retry"] == stats["failed"] == 0

            # the tasks recovered from an expired lease: exactly the dead worker's
            recovered: set[int] = set()
            for task_id in held | {t.id for t in processing}:
                for line in store.task_logs(task_id):
                    if line.phase == "system" and "lease of" in line.message:
                        assert f":{victim.pid} " in line.message, line
                        recovered.add(task_id)
            assert recovered == held
        finally:
            store.close()
        assert len(shop.idempotency_counts) == n
        duplicates = shop.duplicates()
        held_keys = {f"crossdock-{ROUTE}-{i}" for i in held}
        assert set(duplicates) <= held_keys, sorted(set(duplicates) - held_keys)[:10]
        assert all(count == 2 for count in duplicates.values()), duplicates


def test_sigterm_worker_finishes_in_flight_on_postgres(
    cli_factory: MakeCli,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    n = 200
    with start_shop(failures={"slow_ms": 400}) as shop:
        cli = file_project(cli_factory, tmp_path, postgres_url, shop.url, n, concurrency=8)
        proc = cli.start("worker", "--db", postgres_url, "--grace", "10s")
        wait_for(lambda: shop.stats()["accepted"] >= 8, 30, "the first deliveries")
        started = time.monotonic()
        code = cli.stop(proc)
        assert code == 0, cli.output(proc)
        assert time.monotonic() - started < 10
        stats = cli.stats()
        accepted = shop.stats()["accepted"]
        assert stats["processing"] == 0
        # every delivery the shop accepted was settled finished; every other claim went back to new
        assert stats["finished"] == accepted
        assert stats["new"] == n - accepted > 0
        assert shop.duplicates() == {}
        assert "released" in cli.output(proc)
