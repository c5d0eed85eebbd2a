"""PostgreSQL goes away while ``serve`` and two ``worker`` processes deliver: a restart, a crash, a long outage.

The server is the test's own (``faultkit.PrivatePostgres``). What must hold: every process is still running
afterwards and resumes by itself, ``/api/v1/health`` says 503 during the outage and 200 after, every task is
delivered, none is lost or left in ``processing``, and what reached the target twice is at most what was in flight.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import psycopg
import pytest
from faultkit import PrivatePostgres, free_port, wait_until

from clirunner import Cli, MakeCli, write_products
from crossdock.mock import RunningShop, start_shop

pytestmark = pytest.mark.slow

ROUTE = """\
connections:
  shop: {type: http, base_url: "${SHOP_URL}", timeout: 10s}
routes:
  to-shop:
    incoming:
      source: {type: file, path: products.ndjson}
      batch_size: 5000
    identifier: sku
    outgoing:
      target: {type: http, connection: shop, method: PUT, path: "/products/{sku}"}
      concurrency: 8
      lease: 30s
"""
#: deliveries in flight at most: serve and two workers, 8 each
IN_FLIGHT = 24


def fresh_database(server: PrivatePostgres) -> str:
    name = f"outage_{time.monotonic_ns()}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def metrics(port: int, token: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=15) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def finished(cli: Cli, url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT COUNT(*) FROM tasks WHERE status = 'finished'").fetchone()
    return int(row[0]) if row else 0


def deliver_through_an_outage(
    make: MakeCli, tmp_path: Path, server: PrivatePostgres, shop: RunningShop, n: int, outage: float, mode: str
) -> tuple[Cli, str]:
    url = fresh_database(server)
    write_products(tmp_path / "products.ndjson", n)
    cli = make(ROUTE, {"SHOP_URL": shop.url, "CROSSDOCK_DB": url})
    cli.run("run", "to-shop", "--incoming")
    viewer = orjson.loads(cli.run("token", "create", "--role", "viewer", "--json").stdout)["token"]
    port = free_port()
    procs = [
        cli.start("serve", "--port", str(port), "--db", url),
        cli.start("worker", "--db", url),
        cli.start("worker", "--db", url),
    ]
    wait_until(lambda: health(port) == 200, 30, "serve to answer")
    wait_until(lambda: shop.stats()["accepted"] >= n // 6, 60, "the first deliveries")
    assert "crossdock_database_up 1.0" in metrics(port, viewer)[1]
    server.stop(mode)
    down_at = time.monotonic()
    seen_unhealthy = seen_down_in_metrics = False
    while time.monotonic() - down_at < outage:
        seen_unhealthy = seen_unhealthy or health(port) == 503
        if time.monotonic() - down_at > 10:  # past the token cache: the answer must not need the database
            code, text = metrics(port, viewer)
            seen_down_in_metrics = seen_down_in_metrics or (code == 200 and "crossdock_database_up 0.0" in text)
        time.sleep(min(1.0, outage / 4))
    seen_unhealthy = seen_unhealthy or health(port) == 503
    alive = [p.poll() is None for p in procs]
    server.start()
    assert all(alive), [cli.output(p)[-3000:] for p in procs]
    if outage >= 5:
        assert seen_unhealthy, "serve never reported the outage on /api/v1/health"
    if outage > 12:
        # Prometheus keeps scraping during the outage (the token it showed before still counts) and sees it
        assert seen_down_in_metrics, "/metrics did not answer crossdock_database_up 0 late in the outage"
    wait_until(lambda: finished(cli, url) == n, 180, f"{n} finished tasks after the outage")
    wait_until(lambda: health(port) == 200, 30, "serve to report healthy again")
    assert all(p.poll() is None for p in procs), "a process exited after the database came back"
    for proc in procs:
        assert cli.stop(proc) == 0, cli.output(proc)[-3000:]
    output = "\n".join(cli.output(p) for p in procs)
    assert "Traceback" not in output, output[-5000:]
    stats = orjson.loads(cli.run("stats", "--verify", "--json").stdout)["by_status"]
    assert stats["finished"] == n and stats["processing"] == 0, stats
    assert len(shop.idempotency_counts) == n, "a task never reached the shop"
    extra = sum(c - 1 for c in shop.idempotency_counts.values())
    assert extra <= IN_FLIGHT, f"{extra} tasks reached the shop twice; at most {IN_FLIGHT} were in flight"
    return cli, output


def test_a_60_second_outage_stops_nothing_and_loses_nothing(
    cli_factory: MakeCli, tmp_path: Path, pg_server: PrivatePostgres
) -> None:
    with start_shop(failures={"slow_ms": 20}, record_bodies=False) as shop:
        _cli, output = deliver_through_an_outage(cli_factory, tmp_path, pg_server, shop, 20_000, 60.0, "fast")
    # logged once per change of state, not once per failed call
    assert 1 <= output.count("database unavailable") <= 6, output[-5000:]
    assert "database available again" in output


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_one_second_restart_or_crash_is_ridden_out(
    cli_factory: MakeCli, tmp_path: Path, pg_server: PrivatePostgres, mode: str
) -> None:
    with start_shop(failures={"slow_ms": 10}, record_bodies=False) as shop:
        deliver_through_an_outage(cli_factory, tmp_path, pg_server, shop, 4_000, 1.0, mode)
