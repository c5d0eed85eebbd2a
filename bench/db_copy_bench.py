"""``crossdock db copy`` benchmark: an embedded SQLite installation of N tasks moved to PostgreSQL (and back).

Run (a scratch PostgreSQL database is created on the server and dropped afterwards; the SQLite source is built
once and kept with ``--source``, so a second run measures the copy alone)::

    PYTHONPATH=src .venv/bin/python bench/db_copy_bench.py --records 1000000 --source /tmp/copy-bench.db [--back]

The source holds N tasks of ~300-byte product records (the bench/common.py records): all imported, a fifth of them
claimed and settled (finished, or retry with an error and details, so task logs carry both kinds of lines), plus
a run per import batch. The copy is timed end to end, as ``crossdock db copy`` does it: version and schema checks,
the scheduler lock and live-run check, the different-data check, every table in batches of 20,000 by binary
``COPY``, the counters recount and sequences on the target, then the per-table ``COUNT(*)`` and ``stats --verify``
comparison. ``--back`` copies the PostgreSQL database into a new SQLite file too.

Measured on the development container (2 vCPUs shared with other work, Python 3.11.7, PostgreSQL 15 on the same
host with default settings, load average 0.8-1.1), 1,000,000 tasks, a 411 MiB source built in 13.2 s::

    SQLite -> PostgreSQL: verified in 12.5 s wall (5.5 s client CPU): 79,816 tasks/s, 95,796 rows/s over every
        table; load 0.80 -> 1.07; peak RSS 166 MiB
        tasks 1,000,000 -> 1,000,000; task_logs 200,000 -> 200,000; runs 200 -> 200; throughput 12 -> 12
    PostgreSQL -> SQLite: verified in 12.3 s wall (10.3 s client CPU): 81,430 tasks/s, 97,734 rows/s over every
        table; load 1.07 -> 1.06; peak RSS 386 MiB
    (second run, copy alone) SQLite -> PostgreSQL: verified in 11.0 s wall (5.4 s client CPU): 90,960 tasks/s

Where the time goes SQLite -> PostgreSQL: under half is this process (reading rows, turning REAL seconds into
datetimes, binary COPY); the rest is the server writing the rows and the six task indexes. The way back spends
most of it in this process (SQLite's inserts and index upkeep run in it).

See bench/README.md for the figures and the load they were measured under.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psycopg
from common import peak_rss_mb, product

from crossdock.store import open_store
from crossdock.store.base import ImportItem, ImportOptions, Settlement
from crossdock.store.copy import copy_database
from crossdock.tasks import Action, Status

ROUTE = "products"
BATCH = 5000


def build_source(path: Path, n: int) -> None:
    """N tasks through the store's own import, claim and settle, as the runtime writes them."""
    store = open_store(f"sqlite:///{path}")
    rng = random.Random(1)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        for start in range(0, n, BATCH):
            items = []
            for i in range(start, min(start + BATCH, n)):
                body = orjson.dumps(product(i, rng))
                items.append(ImportItem(Status.NEW, f"SKU-{i:08d}", body, hashlib.sha256(body).digest()[:16]))
            run = store.start_run(ROUTE, "incoming", actor="bench", now=now)
            store.import_batch(ROUTE, items, run_id=run, options=ImportOptions(), now=now)
            store.finish_run(run, status="ok", summary={"created": {"new": len(items)}}, error=None, now=now)
            if (start // BATCH) % 5 == 0:
                claimed = store.claim_due_tasks(ROUTE, BATCH, worker="bench", lease_until=now + timedelta(60), now=now)
                store.settle(
                    [
                        Settlement(t.id, Action.DELIVERED, "bench", result={"id": t.id})
                        if t.id % 4
                        else Settlement(
                            t.id,
                            Action.SCHEDULE_RETRY,
                            "bench",
                            error="503 from the shop",
                            next_attempt_at=now + timedelta(minutes=5),
                            details={"status": 503},
                        )
                        for t in claimed
                    ],
                    now=now,
                )
            now += timedelta(seconds=1)
    finally:
        store.close()


def scratch(server: str) -> str:
    name = f"crossdock_copy_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return urlsplit(server)._replace(path=f"/{name}").geturl()


def drop(server: str, url: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


def timed_copy(source: str, target: str, label: str) -> None:
    load = os.getloadavg()[0]
    cpu = time.process_time()
    started = time.perf_counter()
    report = copy_database(source, target)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    tasks = next(t for t in report.tables if t.name == "tasks")
    rows = sum(t.copied for t in report.tables)
    print(
        f"{label}: {'verified' if report.ok else 'NOT VERIFIED'} in {wall:.1f} s wall ({cpu:.1f} s client CPU): "
        f"{tasks.copied / wall:,.0f} tasks/s, {rows / wall:,.0f} rows/s over every table; "
        f"load {load:.2f} -> {os.getloadavg()[0]:.2f}; peak RSS {peak_rss_mb():.0f} MiB"
    )
    for t in report.tables:
        print(f"    {t.name:<18} {t.source:>10,} -> {t.target:>10,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--source", type=Path, default=None, help="SQLite file to build once and reuse")
    parser.add_argument("--back", action="store_true", help="also copy PostgreSQL back into a new SQLite file")
    args = parser.parse_args()
    path = args.source or Path(f"/tmp/crossdock-copy-bench-{args.records}.db")
    if not path.exists():
        started = time.perf_counter()
        build_source(path, args.records)
        print(f"built {path} with {args.records:,} tasks in {time.perf_counter() - started:.1f} s")
    size = path.stat().st_size / 2**20
    print(f"source {path} ({size:,.0f} MiB), load average {os.getloadavg()}")
    target = scratch(args.server)
    back = path.with_suffix(".back.db")
    try:
        timed_copy(f"sqlite:///{path}", target, "SQLite -> PostgreSQL")
        if args.back:
            back.unlink(missing_ok=True)
            timed_copy(target, f"sqlite:///{back}", "PostgreSQL -> SQLite")
    finally:
        drop(args.server, target)
        for suffix in ("", "-wal", "-shm", "-ballast", ".crossdock-scheduler.lock"):
            Path(f"{back}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
