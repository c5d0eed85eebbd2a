"""Schema migrations killed half way: each migration is one transaction, so a SIGKILL at any point leaves the
database at some whole version, and the next ``db upgrade`` finishes the job with nothing lost."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
from faultkit import wait_until

from clirunner import MakeCli
from crossdock.store.sqlfiles import load_migrations

pytestmark = pytest.mark.slow

LATEST = max(number for number, _name, _sql in load_migrations("crossdock.store.sqlite"))


def database_at_version_3(path: Path, n: int) -> None:
    """What crossdock 0.1 before migration 0004 left: tasks plus a separate fingerprints table."""
    conn = sqlite3.connect(path, isolation_level=None)
    for number, _name, sql in load_migrations("crossdock.store.sqlite"):
        if number <= 3:
            conn.executescript(sql)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO tasks (id, route, identifier, status, created_at, updated_at, fingerprint, entity) "
        "VALUES (?, 'r', ?, 'finished', 0, 0, ?, ?)",
        ((i, f"k{i}", i.to_bytes(16, "big"), b'{"sku":"k%d"}' % i) for i in range(1, n + 1)),
    )
    conn.executemany(
        "INSERT INTO fingerprints (route, identifier, fingerprint, task_id) VALUES ('r', ?, ?, ?)",
        ((f"k{i}", i.to_bytes(16, "big"), i) for i in range(1, n + 1)),
    )
    conn.execute("INSERT INTO counters (route, status, n) VALUES ('r', 'finished', ?)", (n,))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'next_task_id'", (str(n + 1),))
    conn.execute("COMMIT")
    conn.close()


def version_of(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_db_upgrade_killed_at_random_points_finishes_later_with_nothing_lost(
    cli_factory: MakeCli, tmp_path: Path
) -> None:
    n = 600_000
    db = tmp_path / "old.db"
    database_at_version_3(db, n)
    cli = cli_factory("routes: {}\n", {"CROSSDOCK_DB": f"sqlite:///{db}"})
    wal = Path(f"{db}-wal")
    rng = random.Random(3)
    killed = 0
    for _ in range(3):
        if version_of(db) == LATEST:
            break
        proc = cli.start("db", "upgrade")
        # the migrations are writing once the write-ahead log grows
        wait_until(lambda p=proc: p.poll() is not None or (wal.exists() and wal.stat().st_size > 0), 60, "writes")
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        assert 3 <= version_of(db) <= LATEST
    assert killed, "every upgrade finished before its kill: the test proved nothing"
    cli.run("db", "upgrade")
    assert version_of(db) == LATEST
    stats = orjson.loads(cli.run("stats", "--verify", "--json").stdout)
    assert stats["total"] == n and stats["by_status"]["finished"] == n, stats
    # the fingerprints moved onto the tasks (0004): delta still knows every record
    shown = orjson.loads(cli.run("cache", "show", "r", "-i", f"k{n // 2}", "--json").stdout)
    assert shown["task_id"] == n // 2, shown
