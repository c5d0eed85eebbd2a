"""Imports under real faults: a disk that fills up mid-run, an importer killed at random points.

What must hold: a run is ``ok`` only when every record it read is stored; a failed or killed run leaves the
source's position (``{last_run}``, cursors) where it was, so the next run reads the records again and nothing is
lost; the CLI says what went wrong in one line; counters stay exact (``stats --verify``).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
from faultkit import tiny_filesystem, wait_until

from clirunner import Cli, MakeCli, write_products
from crossdock.mock import start_erp

pytestmark = pytest.mark.slow

INCREMENTAL = """\
database: sqlite:///{db}
connections:
  erp: {{type: http, base_url: "${{ERP_URL}}"}}
routes:
  erp-products:
    incoming:
      source:
        type: http
        connection: erp
        path: /products
        query: {{updated_since: "{{last_run}}", page_size: "500"}}
        records: items
        pagination: {{type: next_link, path: _links.next}}
      batch_size: 1000
    identifier: sku
    outgoing:
      target: {{type: noop}}
"""


def tasks_in(db: Path) -> int:
    """Tasks committed so far, read beside a running importer (WAL readers do not block the writer)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
    except sqlite3.Error:
        return 0


def verify_clean(cli: Cli) -> dict[str, int]:
    """``stats --verify`` agrees with a recount, and nothing is left in processing."""
    done = cli.run("stats", "--verify", "--json")
    stats = orjson.loads(done.stdout)
    assert stats["by_status"]["processing"] == 0, stats
    by_status: dict[str, int] = stats["by_status"]
    return by_status


def test_disk_full_import_is_failed_and_the_next_run_fetches_what_was_missed(cli_factory: MakeCli) -> None:
    n = 20_000
    with tiny_filesystem(3 * 1024) as fs, start_erp(products=n) as erp:
        db = fs.path / "crossdock.db"
        cli = cli_factory(INCREMENTAL.format(db=db), {"ERP_URL": erp.url, "CROSSDOCK_DB_WAIT": "1"})

        first = cli.run("run", "erp-products", "--incoming", check=False)
        output = first.stdout + first.stderr
        assert first.returncode == 1, output
        assert "Traceback" not in output, output
        assert "database or disk is full" in output, output

        fs.resize(256 * 1024)  # space is freed
        second = cli.run("run", "erp-products", "--incoming", "--json")
        report = orjson.loads(second.stdout)
        assert report["status"] == "ok", report
        assert report["incoming"]["read"] == n, "the second run did not ask for every record again"

        runs = cli.json("runs", "list")
        failed = [r for r in runs if r["status"] == "failed"]
        assert len(failed) == 1, [(r["id"], r["status"], r["error"]) for r in runs]
        assert "database or disk is full" in failed[0]["error"]
        assert [r["status"] for r in runs][:1] == ["ok"]

        by_status = verify_clean(cli)
        # every product is one task: what run 1 stored was only touched by run 2
        assert sum(by_status.values()) == n, by_status
        assert by_status["new"] == n, by_status


def test_importer_killed_at_random_points_loses_nothing(cli_factory: MakeCli, tmp_path: Path) -> None:
    n = 200_000
    write_products(tmp_path / "products.ndjson", n)
    config = """\
database: sqlite:///crossdock.db
routes:
  to-nowhere:
    incoming:
      source: {type: file, path: products.ndjson}
      batch_size: 2000
    identifier: sku
    outgoing:
      target: {type: noop}
"""
    cli = cli_factory(config, {})
    rng = random.Random(14)
    killed = 0
    for _ in range(3):
        proc = cli.start("run", "to-nowhere", "--incoming")
        # killed once a random share of the file is stored: between batches, or in the middle of one
        threshold = rng.randint(n // 10, n * 8 // 10)
        wait_until(
            lambda p=proc, t=threshold: p.poll() is not None or tasks_in(tmp_path / "crossdock.db") >= t,
            60,
            "progress",
        )
        if proc.poll() is None:
            time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
    assert killed, "the importer always finished before the kill: the test proved nothing"
    final = cli.run("run", "to-nowhere", "--incoming", "--json")
    assert orjson.loads(final.stdout)["status"] == "ok"
    by_status = verify_clean(cli)
    # each record is exactly one task, however often its import was cut short
    assert sum(by_status.values()) == n, by_status
    assert by_status["new"] == n, by_status
    runs = cli.json("runs", "list", "--limit", "10")
    # a kill can land after the import finished (while the CLI prints): that run is rightly ok
    assert {r["status"] for r in runs} <= {"ok", "abandoned"}, [(r["id"], r["status"], r["error"]) for r in runs]
    abandoned = [r for r in runs if r["status"] == "abandoned"]
    assert 1 <= len(abandoned) <= killed, runs
    assert all("is gone" in r["error"] for r in abandoned), abandoned


def test_scheduled_import_killed_is_abandoned_not_running_for_ever(cli_factory: MakeCli) -> None:
    config = """\
database: sqlite:///crossdock.db
connections:
  erp: {type: http, base_url: "${ERP_URL}"}
routes:
  erp-products:
    incoming:
      source: {type: http, connection: erp, path: /products, records: items, query: {page_size: "50"},
               pagination: {type: next_link, path: _links.next}}
      schedule: "* * * * * */1"
    identifier: sku
    outgoing:
      target: {type: noop}
"""
    with start_erp(products=5000, failures={"slow_ms": 300}) as erp:
        cli = cli_factory(config, {"ERP_URL": erp.url})
        serve = cli.start("serve", "--port", "0", env={"CROSSDOCK_SCHEDULER_TICK": "0.2"})
        wait_until(
            lambda: any(r["status"] == "running" for r in cli.json("runs", "list")), 30, "a scheduled import to start"
        )
        serve.send_signal(signal.SIGKILL)
        serve.wait(timeout=10)
        # the next process to start marks it; `runs list` then tells the truth
        cli.run("run", "erp-products", "--outgoing")
        runs = cli.json("runs", "list", "--limit", "50")
        assert not [r for r in runs if r["status"] == "running"], runs
        assert any(r["status"] == "abandoned" and r["part"] == "incoming" for r in runs), runs


def test_stats_on_a_full_disk_still_answers_then_fails_in_one_line(cli_factory: MakeCli, tmp_path: Path) -> None:
    write_products(tmp_path / "products.ndjson", 500)
    with tiny_filesystem(8 * 1024) as fs:
        config = "database: sqlite:///{db}\nroutes:\n  r:\n    incoming: {{source: {{type: file, path: {src}}}}}\n"
        config += "    identifier: sku\n    outgoing: {{target: {{type: noop}}}}\n"
        cli = cli_factory(config.format(db=fs.path / "crossdock.db", src=tmp_path / "products.ndjson"), {})
        cli.run("run", "r", "--incoming")
        fill(fs.path / "filler")
        # opening a WAL database needs room for its shared-memory file: the reserve beside it gives that room
        first = cli.run("stats", "--json", check=False)
        assert first.returncode == 0, first.stdout + first.stderr
        assert orjson.loads(first.stdout)["by_status"]["new"] == 500
        assert "released the 1024 KiB reserve" in first.stderr
        fill(fs.path / "filler-2")  # the reserve's space is taken too: nothing left to give
        second = cli.run("stats", check=False)
        output = second.stdout + second.stderr
        assert second.returncode == 1, output
        assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
        assert f"SQLite database {fs.path / 'crossdock.db'}" in output, output


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem has no byte left."""
    with path.open("wb") as f:
        try:
            while True:
                f.write(bytes(64 * 1024))
                f.flush()
        except OSError:
            pass
