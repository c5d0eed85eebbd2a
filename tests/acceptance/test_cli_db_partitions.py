"""``crossdock db partitions`` and ``crossdock prune`` on a partitioned PostgreSQL task table, through the real CLI:
partitions appear ahead of the ids, retention drops the old ones whole, and the counters stay exact."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from crossdock.store import open_store
from crossdock.store.base import ImportItem, ImportOptions, Settlement
from crossdock.store.postgres import partitions
from crossdock.tasks import Action, Status
from postgres_support import create_database, drop_database

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SIZE = 1000


@pytest.fixture
def pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(partitions.SIZE_ENV, str(SIZE))
    url = create_database()
    yield url
    drop_database(url)


def deliver_versions(url: str, n: int, versions: int) -> None:
    """``versions`` imports of the same ``n`` records, each delivered: every version but the last is history."""
    store = open_store(url)
    try:
        for v in range(versions):
            now = T0 + timedelta(hours=v)
            items = []
            for i in range(n):
                body = orjson.dumps({"id": i, "version": v})
                items.append(ImportItem(Status.NEW, str(i), body, hashlib.sha256(body).digest()[:16]))
            for k in range(0, n, 500):
                store.import_batch("products", items[k : k + 500], run_id=None, options=ImportOptions(), now=now)
            while claimed := store.claim_due_tasks(
                "products", 500, worker="w", lease_until=now + timedelta(1), now=now
            ):
                store.settle([Settlement(t.id, Action.DELIVERED, "w") for t in claimed], now=now)
    finally:
        store.close()


def test_prune_drops_whole_partitions_and_db_partitions_shows_them(project: Any, pg: str) -> None:
    project.write_config(f"database: {pg}\nroutes: {{}}\n")
    deliver_versions(pg, 1500, 2)  # tasks 1-1500 (old versions), 1501-3000 (latest)

    before = project.cli("db", "partitions", "--json").json
    assert before["size"] == SIZE
    assert [(p["from_id"], p["to_id"]) for p in before["partitions"]] == [
        (lo, lo + SIZE) for lo in range(0, 4000, SIZE)
    ]

    assert project.cli("prune", "--older-than", "1d", "--json").json == {"deleted": 1500}
    after = project.cli("db", "partitions", "--json").json
    # ids 0-999 went whole; 1000-1999 held 500 old and 500 latest tasks: rewritten with the 500 that stay
    assert [p["from_id"] for p in after["partitions"]] == [1000, 2000, 3000]
    stats = project.cli("stats", "--verify", "--json").json
    assert stats["total"] == 1500 and stats["drift"] == {}

    table = project.cli("db", "partitions", "--size", "5000").stdout
    assert "tasks_1000" in table and "new partitions hold 5,000 task ids each" in table


def test_db_partitions_on_sqlite_says_what_it_is_for(project: Any) -> None:
    project.write_config("database: sqlite:///crossdock.db\nroutes: {}\n")
    refused = project.cli("db", "partitions", expect=2)
    assert "partitions are a PostgreSQL feature" in refused.stderr
