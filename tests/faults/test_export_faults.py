"""Deliveries under real faults: a worker killed mid-run, ``run --outgoing`` stopped by SIGTERM, and a target that
errors, throttles, drops connections and hangs.

What must hold: no task is lost (every one ends ``finished``), none is stuck in ``processing`` past its lease, the
counters agree with a recount, and what reaches the target twice is at most what was in flight when the process
died (results are committed as they arrive, see ``crossdock.engine.group_commit``).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from faultkit import wait_until

from clirunner import Cli, MakeCli, write_products
from crossdock.mock import RunningShop, start_shop

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "crossdock.cli"]

ROUTE = """\
database: sqlite:///crossdock.db
connections:
  shop: {{type: http, base_url: "${{SHOP_URL}}", timeout: {timeout}}}
routes:
  to-shop:
    incoming:
      source: {{type: file, path: products.ndjson}}
    identifier: sku
    outgoing:
      target: {{type: http, connection: shop, method: PUT, path: "/products/{{sku}}"}}
      concurrency: {concurrency}
      lease: {lease}
{retry}"""


def project(
    make: MakeCli,
    tmp_path: Path,
    shop: RunningShop,
    n: int,
    *,
    concurrency: int = 16,
    lease: str = "2s",
    timeout: str = "10s",
    retry: str = "",
) -> Cli:
    write_products(tmp_path / "products.ndjson", n)
    config = ROUTE.format(concurrency=concurrency, lease=lease, timeout=timeout, retry=retry)
    cli = make(config, {"SHOP_URL": shop.url})
    cli.run("run", "to-shop", "--incoming")
    return cli


def extra_deliveries(shop: RunningShop) -> int:
    """Requests beyond the first per idempotency key: what the target received twice."""
    return sum(count - 1 for count in shop.idempotency_counts.values())


def verified(cli: Cli) -> dict[str, int]:
    by_status: dict[str, int] = orjson.loads(cli.run("stats", "--verify", "--json").stdout)["by_status"]
    return by_status


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_killed_worker_duplicates_at_most_the_requests_in_flight(
    cli_factory: MakeCli, tmp_path: Path, attempt: int
) -> None:
    n, concurrency = 1500, 16
    rng = random.Random(attempt)
    with start_shop(failures={"slow_ms": 20}, record_bodies=False) as shop:
        cli = project(cli_factory, tmp_path, shop, n, concurrency=concurrency)
        victim = cli.start("worker", "--concurrency", str(concurrency))
        kill_at = rng.randint(100, 900)
        wait_until(lambda: shop.stats()["accepted"] >= kill_at, 60, f"{kill_at} deliveries")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        survivor = cli.start("worker", "--concurrency", str(concurrency))
        wait_until(lambda: verified(cli)["finished"] == n, 90, f"{n} finished tasks")
        assert cli.stop(survivor) == 0, cli.output(survivor)
        by_status = verified(cli)
        assert by_status["finished"] == n and by_status["processing"] == 0, by_status
        assert len(shop.idempotency_counts) == n, "a task never reached the shop"
        extra = extra_deliveries(shop)
        print(f"SIGKILL at {kill_at} deliveries: {extra} reached the shop twice")
        assert extra <= concurrency, f"{extra} tasks reached the shop twice after a SIGKILL; at most {concurrency}"
        assert all(count <= 2 for count in shop.idempotency_counts.values())


def test_sigterm_stops_run_outgoing_gracefully(cli_factory: MakeCli, tmp_path: Path) -> None:
    n = 4000
    with start_shop(failures={"slow_ms": 30}, record_bodies=False) as shop:
        cli = project(cli_factory, tmp_path, shop, n, lease="5m")
        started = time.monotonic()
        done = subprocess.run(
            ["timeout", "--preserve-status", "-s", "TERM", "3", *CLI, "run", "to-shop", "--outgoing"],
            cwd=tmp_path,
            env=cli._environ(None),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - started
        output = done.stdout + done.stderr
        assert done.returncode == 143, output
        assert "stopped by SIGTERM" in output, output
        assert "Traceback" not in output, output
        assert took < 10, f"took {took:.1f} s to stop"
        by_status = verified(cli)
        accepted = shop.stats()["accepted"]
        assert 0 < accepted < n, accepted
        assert by_status["processing"] == 0, by_status
        # every delivery the shop accepted is recorded; every other task is back in new, ready for the next run
        assert by_status["finished"] == accepted, (by_status, accepted)
        assert by_status["new"] == n - accepted, by_status
        assert extra_deliveries(shop) == 0
        runs = cli.json("runs", "list")
        assert runs[0]["part"] == "outgoing" and runs[0]["status"] == "stopped", (runs[0], output)


#: what the target does, 1.5 s each; a healthy target answers in 20 ms
PHASES: list[dict[str, object]] = [
    {"fail_every": 3, "fail_status": 503, "slow_ms": 20},
    {"rate_limit": 100, "retry_after": 1, "slow_ms": 20},
    {"fail_every": 2, "fail_status": 502, "slow_ms": 20},
    {"drop_connection": True},
    {"slow_ms": 1500},  # longer than the connection's timeout: the target hangs
    {"slow_ms": 20},
]


def test_a_target_that_errors_throttles_drops_and_hangs_loses_nothing(cli_factory: MakeCli, tmp_path: Path) -> None:
    n = 3000
    retry = "    retry: {max_attempts: 50, backoff: 100ms, max_backoff: 500ms}\n"
    with start_shop(failures={"slow_ms": 20}, record_bodies=False) as shop:
        cli = project(cli_factory, tmp_path, shop, n, concurrency=8, lease="3s", timeout="500ms", retry=retry)
        worker = cli.start("worker")
        # the phases are timed from the first delivery, not from the start of a process that may be slow to load
        wait_until(lambda: bool(shop.stats()["by_status"]), 30, "the worker's first delivery")
        for phase in PHASES:
            shop.set_failures(**phase)
            time.sleep(1.5)
        wait_until(lambda: verified(cli)["finished"] == n, 90, f"{n} finished tasks")
        assert cli.stop(worker) == 0, cli.output(worker)
        by_status = verified(cli)
        assert by_status["finished"] == n, by_status
        assert sum(by_status.values()) == n, by_status
        assert len(shop.idempotency_counts) == n, "a product never reached the shop"
        statuses = shop.stats()["by_status"]
        assert {"503", "429", "502"} <= set(statuses), statuses
