"""Bulk actions on SQLite: retry 100,000 failed tasks by filter (target: under 5 s).

Run: python bench/lifecycle_bench.py [--tasks 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import xxhash

from crossdock.store.base import ImportItem, ImportOptions, Settlement, TaskFilter
from crossdock.store.sqlite.store import SQLiteStore
from crossdock.tasks import Action, Status


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    n = parser.parse_args().tasks
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        now = datetime.now(UTC)
        for start in range(0, n, 5000):
            items = []
            for i in range(start, min(start + 5000, n)):
                data = orjson.dumps({"sku": f"SKU-{i:08d}", "price": i})
                items.append(ImportItem(Status.NEW, f"SKU-{i:08d}", data, xxhash.xxh3_128_digest(data)))
            store.import_batch("r", items, run_id=None, options=ImportOptions(), now=now)
        lease = now + timedelta(minutes=5)
        while tasks := store.claim_due_tasks("r", 5000, worker="w", lease_until=lease, now=now):
            store.settle(
                [Settlement(t.id, Action.DELIVERY_FAILED, "w", error="HTTP 503", message="failed") for t in tasks],
                now=now,
            )
        assert store.stats("r").by_status["failed"] == n
        started = time.perf_counter()
        result = store.apply_action(
            Action.RETRY, TaskFilter(statuses=[Status.FAILED], route="r"), actor="bench", reason="bench", now=now
        )
        took = time.perf_counter() - started
        assert result.changed == n, result
        print(f"bulk retry of {n:,} failed tasks by filter: {took:.2f} s ({n / took:,.0f} tasks/s)")
        drift = store.recount()["r"] != store.stats("r").by_route["r"]
        print(f"counters exact after the bulk action: {not drift}")
        store.close()


if __name__ == "__main__":
    main()
