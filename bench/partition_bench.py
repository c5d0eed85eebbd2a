"""PostgreSQL at 10,000,000 tasks (#18 item 3): partitioned tasks under import, the dashboard's reads and retention.

Phases, on a fresh database (partitions of 1,000,000 ids, the default):

1. *empty*: import ``--import`` new records (store.import_batch, 1,000 per batch, delta on) into an empty store,
   then claim and settle them;
2. *seed*: fill the table to ``--tasks`` with SQL (not timed): finished tasks with a log line each, the older half
   60 days old and superseded by the newer half (same identifiers), counters and delta_latest to match;
3. *full*: import ``--import`` new records again: the rate against the empty one (target: within 80 %);
4. *reads*: ``GET /api/v1/stats`` and the first page of a status + route listing through the real ASGI app
   (FastAPI TestClient, bearer auth, JSON), ``--requests`` each (targets: p95 < 10 ms and < 20 ms), with the
   freshly imported tasks still due; then they are claimed and settled (no-op, 1,000 per claim, one process),
   against the same on the empty table;
5. *retention*: the nightly pass (``store.prune_ages``, finished after 30 days) over the older half (target:
   5,000,000 tasks in under 30 s), then ``stats --verify``'s check (counters equal COUNT(*));
6. *rounds*: ``--rounds`` times: import ``--round-tasks`` records (new versions of the same identifiers each round),
   finish them (SQL, counters moved alike), prune what the round before left: the size on disk of tasks,
   task_logs and delta_latest after each round (target: no growth).

Run::

    PYTHONPATH=src .venv/bin/python bench/partition_bench.py [--tasks 10000000] [--import 500000] \\
        [--rounds 3] [--round-tasks 2000000] [--server postgresql://postgres@127.0.0.1:5432/postgres]

Output of the second run on the development container (2 vCPU, PostgreSQL 15 on the same host, default settings,
load 0.9-1.2; bench/README.md, "Large task tables", has both runs)::

    import into an empty table: 37,206 records/s (500,000 new records)
    claim + settle (no-op) in an empty table: 15,438 tasks/s
    import at 10,500,000 tasks: 31,493 records/s = 85% of the first empty import, 89%-93% of empty imports
        right before and after (35,242 and 33,943/s) (target >= 80 %)
    reads with 500,000 new tasks due at the top of the table:
        GET /api/v1/stats                                  p50   3.9 ms   p95   5.7 ms   max   8.4 ms
        GET /api/v1/tasks first page, new + route          p50   8.3 ms   p95  10.6 ms   max  12.9 ms
        GET /api/v1/tasks first page, finished + route     p50  97.5 ms   p95 120.5 ms   max 141.3 ms
        GET /api/v1/tasks first page, failed + route       p50   6.6 ms   p95   8.8 ms   max  14.0 ms
    claim + settle at 10,500,000 tasks: 13,784 tasks/s = 89% of empty
    reads once they are delivered:
        GET /api/v1/stats                                  p50   4.4 ms   p95   6.3 ms   max   9.3 ms
        GET /api/v1/tasks first page, new + route          p50   9.8 ms   p95  12.9 ms   max  16.3 ms
        GET /api/v1/tasks first page, finished + route     p50   8.2 ms   p95  13.4 ms   max  17.5 ms
        GET /api/v1/tasks first page, failed + route       p50   9.3 ms   p95  12.0 ms   max  14.5 ms
    retention: 5,000,000 tasks in 20.8 s (target: 5,000,000 in < 30 s)
    counters equal COUNT(*) after retention: True
    round 1: ... pruned 0 in 1.8 s, 7,000,000 tasks; on disk: tasks 2,691 MiB, task_logs 835 MiB, delta_latest 995 MiB
    round 2: ... pruned 1,000,000 in 4.5 s, ...; tasks 2,691 MiB, task_logs 835 MiB, delta_latest 1,080 MiB
    round 3: ... pruned 1,000,000 in 4.1 s, ...; tasks 2,691 MiB, task_logs 835 MiB, delta_latest 1,163 MiB
    round 4: ... pruned 1,000,000 in 4.2 s, ...; tasks 2,691 MiB, task_logs 835 MiB, delta_latest 1,244 MiB

The first page of finished tasks behind a backlog of newer due ones walks the primary key past them (docs/deploy.md
says why no index serves it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))

import psycopg
from web_bench import CONFIG, ROUTES, timed

from crossdock.store.base import ImportItem, ImportOptions
from crossdock.store.postgres import partitions
from crossdock.store.postgres.store import PostgresStore
from crossdock.tasks import Status

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
ROUTE = ROUTES[0]
BATCH = 1000


def entity(sku: str, version: int) -> bytes:
    return b'{"sku":"%s","price":%d,"title":"product %s","stock":%d,"category":"kitchen"}' % (
        sku.encode(),
        version * 100 + 99,
        sku.encode(),
        version,
    )


def items(prefix: str, n: int, version: int = 1) -> list[ImportItem]:
    out = []
    for i in range(n):
        sku = f"{prefix}-{i:08d}"
        body = entity(sku, version)
        out.append(ImportItem(Status.NEW, sku, body, fingerprint=(b"%08d%08d" % (i, version))))
    return out


def import_rate(store: PostgresStore, batch: list[ImportItem]) -> float:
    options = ImportOptions()
    started = time.perf_counter()
    for k in range(0, len(batch), BATCH):
        store.import_batch(ROUTE, batch[k : k + BATCH], run_id=None, options=options, now=datetime.now(UTC))
    return len(batch) / (time.perf_counter() - started)


def claim_settle_rate(store: PostgresStore, n: int) -> float:
    """Claim and settle (no-op delivery) ``n`` due tasks of the route, 1,000 at a time, as one worker does."""
    from crossdock.store.base import Settlement
    from crossdock.tasks import Action

    done = 0
    started = time.perf_counter()
    while done < n:
        now = datetime.now(UTC)
        claimed = store.claim_due_tasks(ROUTE, BATCH, worker="bench", lease_until=now + timedelta(minutes=5), now=now)
        if not claimed:
            break
        store.settle([Settlement(t.id, Action.DELIVERED, "bench") for t in claimed], now=now)
        done += len(claimed)
    return done / (time.perf_counter() - started)


def empty_rate(server: str, n: int) -> float:
    """The import rate into a fresh database of its own (dropped after)."""
    name = f"crossdock_partbench_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    store = PostgresStore(urlsplit(server)._replace(path=f"/{name}").geturl())
    try:
        return import_rate(store, items("empty", n))
    finally:
        store.close()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def seed(url: str, total: int) -> float:
    """``total`` finished tasks after the ids taken so far: the first half 60 days old, each superseded by a task
    of the second half with the same identifier (delta_latest names those)."""
    started = time.perf_counter()
    half = total // 2
    old = datetime.now(UTC) - timedelta(days=60)
    recent = datetime.now(UTC) - timedelta(days=1)
    with psycopg.connect(url, autocommit=True) as conn:
        base = partitions.frontier(conn)
        with conn.transaction():
            partitions.ensure(conn, base + total)
        conn.execute("SELECT setval('tasks_id_seq', %s)", (base + total,))
        step = 1_000_000
        for lo in range(0, total, step):
            hi = min(lo + step, total)
            with conn.transaction():
                conn.execute(
                    """
                    INSERT INTO tasks (id, route, identifier, status, attempts, created_at, updated_at, fingerprint,
                                       seen_count, last_seen_at, entity)
                    SELECT %(base)s + g, %(route)s, 'seed-' || lpad(((g - 1) %% %(half)s)::text, 8, '0'), 'finished',
                           1, t, t, int8send(g), 1, t,
                           convert_to('{"sku":"seed-' || g || '","price":1999,"title":"a product","stock":3}', 'UTF8')
                    FROM generate_series(%(lo)s + 1, %(hi)s) g,
                         LATERAL (SELECT CASE WHEN g <= %(half)s THEN %(old)s ELSE %(recent)s END AS t) ts
                    """,
                    {"base": base, "route": ROUTE, "half": half, "lo": lo, "hi": hi, "old": old, "recent": recent},
                )
                conn.execute(
                    """
                    INSERT INTO task_logs (task_id, at, level, phase, actor, from_status, to_status, message)
                    SELECT %(base)s + g, CASE WHEN g <= %(half)s THEN %(old)s ELSE %(recent)s END, 'info', 'export',
                           'w1', 'processing', 'finished', 'delivered: 200'
                    FROM generate_series(%(lo)s + 1, %(hi)s) g
                    """,
                    {"base": base, "half": half, "lo": lo, "hi": hi, "old": old, "recent": recent},
                )
            print(f"  seeded {hi:,}", file=sys.stderr, flush=True)
        conn.execute(
            """
            INSERT INTO delta_latest (route, identifier, task_id)
            SELECT %(route)s, 'seed-' || lpad(((g - 1) %% %(half)s)::text, 8, '0'), %(base)s + g
            FROM generate_series(%(half)s + 1, %(total)s) g
            ON CONFLICT (route, identifier) DO UPDATE SET task_id = excluded.task_id
            """,
            {"route": ROUTE, "half": half, "base": base, "total": total},
        )
        conn.execute(
            "INSERT INTO counters (route, status, shard, n) VALUES (%s, 'finished', 0, %s) "
            "ON CONFLICT (route, status, shard) DO UPDATE SET n = counters.n + excluded.n",
            (ROUTE, total),
        )
        conn.execute("VACUUM ANALYZE tasks")
        conn.execute("VACUUM ANALYZE task_logs")
        conn.execute("VACUUM ANALYZE delta_latest")
        conn.execute("CHECKPOINT")  # the seed's writes flushed: the timed import does not pay for them
    return time.perf_counter() - started


def finish_new(url: str, at: datetime) -> int:
    """Every new task finished at ``at``, the counters moved with them (a delivery run, without the run)."""
    with psycopg.connect(url) as conn:
        moved = conn.execute(
            "UPDATE tasks SET status = 'finished', updated_at = %s, attempts = 1 WHERE status = 'new' RETURNING route",
            (at,),
        ).fetchall()
        by_route: dict[str, int] = {}
        for (route,) in moved:
            by_route[route] = by_route.get(route, 0) + 1
        for route, n in by_route.items():
            for status, delta in (("new", -n), ("finished", n)):
                conn.execute(
                    "INSERT INTO counters (route, status, shard, n) VALUES (%s, %s, 0, %s) "
                    "ON CONFLICT (route, status, shard) DO UPDATE SET n = counters.n + excluded.n",
                    (route, status, delta),
                )
    return len(moved)


def size_on_disk(url: str) -> dict[str, int]:
    """Bytes on disk (heap, indexes, TOAST) of the task partitions, the log partitions and delta_latest."""
    with psycopg.connect(url) as conn:
        sizes = {}
        for parent in ("tasks", "task_logs"):
            row = conn.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
                "WHERE i.inhparent = %s::regclass",
                (parent,),
            ).fetchone()
            assert row is not None
            sizes[parent] = int(row[0])
        row = conn.execute("SELECT pg_total_relation_size('delta_latest')").fetchone()
        assert row is not None
        sizes["delta_latest"] = int(row[0])
        return sizes


def reads(store: PostgresStore, requests: int) -> None:
    import tempfile

    from fastapi.testclient import TestClient

    from crossdock.engine.project import load_project
    from crossdock.web.app import create_app
    from crossdock.web.auth import issue_token
    from crossdock.web.settings import WebSettings

    project_dir = Path(tempfile.mkdtemp(prefix="crossdock-bench-"))
    (project_dir / "crossdock.yaml").write_text(CONFIG)
    project = load_project(project_dir / "crossdock.yaml")
    _id, token = issue_token(store, "viewer", "bench")
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app(project, store, settings=WebSettings(token_cache_seconds=60))
    with TestClient(app) as client:
        for _ in range(20):  # warm: plans, caches, the token
            client.get("/api/v1/stats", headers=headers)
            client.get("/api/v1/tasks", params={"status": "new", "route": ROUTE}, headers=headers)
        timed("GET /api/v1/stats", [lambda: client.get("/api/v1/stats", headers=headers)] * requests)
        for status in ("new", "finished", "failed"):
            params = {"status": status, "route": ROUTE}
            timed(
                f"GET /api/v1/tasks first page, {status} + route",
                [lambda p=params: client.get("/api/v1/tasks", params=p, headers=headers)] * requests,  # type: ignore[misc]
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("CROSSDOCK_TEST_POSTGRES") or SERVER)
    parser.add_argument("--tasks", type=int, default=10_000_000)
    parser.add_argument("--import", dest="imported", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-tasks", type=int, default=2_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = parser.parse_args()

    name = f"crossdock_partbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(args.server)._replace(path=f"/{name}").geturl()
    print(f"database {url}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    store = PostgresStore(url)
    result: dict[str, Any] = {}
    try:
        empty = import_rate(store, items("empty", args.imported))
        print(f"import into an empty table: {empty:,.0f} records/s ({args.imported:,} new records)")
        empty_claims = claim_settle_rate(store, args.imported)
        print(f"claim + settle (no-op) in an empty table: {empty_claims:,.0f} tasks/s")
        seconds = seed(url, args.tasks)
        total = store.stats().total
        print(f"seeded to {total:,} tasks in {seconds:.0f} s (not timed)")
        # the same import into a fresh empty database right before and after, so both see the same host
        before = empty_rate(args.server, args.imported)
        full = import_rate(store, items("full", args.imported))
        after = empty_rate(args.server, args.imported)
        print(
            f"import at {total:,} tasks: {full:,.0f} records/s = {full / empty:.0%} of the first empty import, "
            f"{full / max(before, after):.0%}-{full / min(before, after):.0%} of empty imports right before and after "
            f"({before:,.0f} and {after:,.0f}/s) (target >= 80 %); load {os.getloadavg()[0]:.2f}"
        )
        with psycopg.connect(url) as conn:
            print(f"partitions: {len(partitions.partitions(conn))}")
        print(f"reads with {args.imported:,} new tasks due at the top of the table:")
        reads(store, args.requests)
        full_claims = claim_settle_rate(store, args.imported)
        print(
            f"claim + settle at {total:,} tasks: {full_claims:,.0f} tasks/s = {full_claims / empty_claims:.0%} of "
            f"empty; load {os.getloadavg()[0]:.2f}"
        )
        print("reads once they are delivered:")
        reads(store, args.requests)

        cutoff = datetime.now(UTC) - timedelta(days=30)
        started = time.perf_counter()
        gone = store.prune_ages({Status.FINISHED: cutoff, Status.SKIPPED: cutoff})
        took = time.perf_counter() - started
        print(f"retention: {gone:,} tasks in {took:.1f} s (target: 5,000,000 in < 30 s); load {os.getloadavg()[0]:.2f}")
        stats, counted = store.counted()
        exact = all(stats.by_route.get(r, {}) == c for r, c in counted.items())
        print(f"counters equal COUNT(*) after retention: {exact}")
        result["retention_s"] = took

        for r in range(1, args.rounds + 1):
            round_started = datetime.now(UTC)
            rate = import_rate(store, items("round", args.round_tasks, version=r))
            finish_new(url, datetime.now(UTC))
            started = time.perf_counter()
            gone = store.prune_ages({Status.FINISHED: round_started})
            took = time.perf_counter() - started
            size = size_on_disk(url)
            print(
                f"round {r}: imported {args.round_tasks:,} at {rate:,.0f}/s, pruned {gone:,} in {took:.1f} s, "
                f"{store.stats().total:,} tasks; on disk: tasks {size['tasks'] / 2**20:,.0f} MiB, task_logs "
                f"{size['task_logs'] / 2**20:,.0f} MiB, delta_latest {size['delta_latest'] / 2**20:,.0f} MiB"
            )
        with psycopg.connect(url) as conn:
            for p in partitions.describe(conn):
                print(f"  tasks_{p.lo}: ~{p.tasks:,} tasks, {(p.table_bytes + p.index_bytes) / 2**20:,.0f} MiB")
    finally:
        store.close()
        if not args.keep:
            with psycopg.connect(args.server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
