"""PostgreSQL task partitions (#18, migration 0010): created ahead of the id sequence, dropped or rewritten by
retention, and invisible to everything else. Partitions of 100 ids here, so a few hundred tasks span several."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
from store_helpers import T0, assert_counters_exact, at, claim, imp, item, settle, task

from crossdock.store import open_store
from crossdock.store.base import TaskFilter
from crossdock.store.postgres import partitions
from crossdock.store.postgres.store import PostgresStore
from crossdock.tasks import Action, Status
from postgres_support import create_database, drop_database

SIZE = 100


@pytest.fixture
def pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PostgresStore, str]]:
    monkeypatch.setenv(partitions.SIZE_ENV, str(SIZE))
    url = create_database()
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    try:
        yield store, url
    finally:
        store.close()
        drop_database(url)


def ranges(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        return [(p.lo, p.hi) for p in partitions.partitions(conn)]


def rows_in(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def finish_all(store: PostgresStore, n: int, now: datetime = T0) -> None:
    for t in claim(store, limit=n, now=now):
        settle(store, t.id, Action.DELIVERED, now=now)


def test_partitions_stay_ahead_of_the_ids_and_every_task_is_found(pg: tuple[PostgresStore, str]) -> None:
    store, url = pg
    assert ranges(url) == [(0, 100)]
    imp(store, [item(f"sku-{i}", 1) for i in range(450)])
    # half a partition of room past the highest id at all times
    assert ranges(url) == [(lo, lo + SIZE) for lo in range(0, 600, SIZE)]
    assert {rows_in(url, f"tasks_{lo}") for lo in (100, 200, 300)} == {100}
    claimed = claim(store, limit=450)
    assert len(claimed) == 450 and [t.id for t in claimed] == sorted(t.id for t in claimed)
    for t in claimed:
        settle(store, t.id, Action.DELIVERED)
    assert task(store, 450).status is Status.FINISHED and store.task_logs(450)
    page, _cursor = store.list_tasks(TaskFilter(statuses=[Status.FINISHED]), limit=3)
    assert [t.id for t in page] == [450, 449, 448]
    assert_counters_exact(store)
    # the delta pointer names the newest task of each identifier, across partitions
    counts = imp(store, [item(f"sku-{i}", 1 if i % 2 else 2) for i in range(450)], now=at(1))
    assert counts.changed == 225 and counts.unchanged_created == 225


def test_retention_drops_partitions_that_empty_and_rewrites_those_mostly_gone(pg: tuple[PostgresStore, str]) -> None:
    store, url = pg
    imp(store, [item(f"sku-{i}", 1) for i in range(250)])  # tasks 1-250
    finish_all(store, 250)
    imp(store, [item(f"sku-{i}", 2) for i in range(250)], now=at(10))  # tasks 251-500, each the newer version
    finish_all(store, 250, at(10))
    logs_before = store.task_logs(260)

    deleted = store.prune_ages({Status.FINISHED: at(5)})

    # 1-250 went: the partitions 0 and 100 as a whole, 200 rewritten with the 49 new tasks 251-299 in it
    assert deleted == 250
    assert [lo for lo, _ in ranges(url)][:3] == [200, 300, 400]
    assert rows_in(url, "tasks_200") == 49 and rows_in(url, "task_logs_200") == len(logs_before) * 49
    assert store.get_task(250) is None and store.get_task(1) is None
    assert task(store, 260).status is Status.FINISHED and store.task_logs(260) == logs_before
    assert_counters_exact(store)
    assert store.stats().by_status[Status.FINISHED.value] == 250
    # the rewritten partition is a partition like the others: claims, updates and delta reach it
    again = imp(store, [item(f"sku-{i}", 2) for i in range(250)], now=at(20))
    assert again.changed == 0 and again.unchanged_created == 250
    # nothing left to do: a second pass removes nothing
    assert store.prune_ages({Status.FINISHED: at(5)}) == 0


def test_retention_keeps_what_must_stay_and_prunes_row_by_row_where_few_go(pg: tuple[PostgresStore, str]) -> None:
    store, url = pg
    imp(store, [item(f"sku-{i}", 1) for i in range(100)])  # tasks 1-99 in partition 0, 100 in partition 100
    finish_all(store, 100)
    imp(store, [item(f"sku-{i}", 2) for i in range(10)], now=at(10))  # newer versions of 10 of them
    finish_all(store, 10, at(10))
    imp(store, [item(f"late-{i}", 1) for i in range(300)], now=at(20))  # fills partitions up to 400

    # 10 old versions go, 89 latest tasks stay in partition 0: fewer go than stay, so row by row
    assert store.prune_ages({Status.FINISHED: at(5)}) == 10
    assert ranges(url)[0] == (0, 100) and rows_in(url, "tasks_0") == 89
    for i in range(10, 99):
        assert task(store, i + 1).status is Status.FINISHED  # the latest of its identifier: delta needs it
    assert_counters_exact(store)
    # due tasks and a too-young cutoff keep everything
    assert store.prune_ages({Status.NEW: at(5), Status.FINISHED: at(5)}) == 0
    assert store.stats().by_status[Status.NEW.value] == 300


def test_a_route_scoped_prune_takes_only_that_route(pg: tuple[PostgresStore, str]) -> None:
    store, url = pg
    imp(store, [item(f"a-{i}", 1) for i in range(150)], route="a")
    imp(store, [item(f"b-{i}", 1) for i in range(150)], route="b")
    for route in ("a", "b"):
        for t in claim(store, limit=150, route=route):
            settle(store, t.id, Action.DELIVERED)
    # every task is the latest of its identifier: none may go, whatever the partition
    assert store.prune(older_than=at(5), statuses=[Status.FINISHED], route="a") == 0
    store.cache_clear("a")
    assert store.prune(older_than=at(5), statuses=[Status.FINISHED], route="a") == 150
    assert store.stats().by_route["b"][Status.FINISHED.value] == 150
    assert store.stats().by_route.get("a", {}).get(Status.FINISHED.value, 0) == 0
    assert rows_in(url, "tasks") == 150
    assert_counters_exact(store)


def test_imports_and_deliveries_go_on_while_retention_drops_partitions(pg: tuple[PostgresStore, str]) -> None:
    """Retention locks the task table for each partition it drops or rewrites; an import that read tasks and then
    writes them waits for it instead of deadlocking, and nothing is lost or counted twice."""
    store, url = pg
    imp(store, [item(f"sku-{i}", 1) for i in range(400)])
    finish_all(store, 400)
    imp(store, [item(f"sku-{i}", 2) for i in range(400)], now=at(10))  # 1-400 are history now
    finish_all(store, 400, at(10))
    other = open_store(url)
    errors: list[BaseException] = []
    imported = 0

    def keep_importing() -> None:
        nonlocal imported
        try:
            for k in range(30):
                imp(other, [item(f"new-{k}-{i}", 1) for i in range(20)], now=at(20))
                for t in claim(other, limit=20, now=at(20)):
                    settle(other, t.id, Action.DELIVERED, now=at(20))
                imported += 20
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=keep_importing)
    worker.start()
    deleted = store.prune_ages({Status.FINISHED: at(5)})
    worker.join(timeout=60)
    other.close()

    assert not errors and imported == 600
    assert deleted == 400
    assert store.stats().total == 400 + 600
    assert_counters_exact(store)


def test_rows_deleted_one_by_one_add_up_to_a_rewrite(pg: tuple[PostgresStore, str]) -> None:
    store, url = pg
    imp(store, [item(f"sku-{i}", 1) for i in range(99)])  # tasks 1-99: partition 0 full but for id 0
    finish_all(store, 99)
    imp(store, [item(f"late-{i}", 1) for i in range(150)], now=at(5))  # partition 0 closed
    imp(store, [item(f"sku-{i}", 2) for i in range(20)], now=at(10))
    finish_all(store, 20, at(10))

    assert store.prune_ages({Status.FINISHED: at(5)}) == 20  # 20 of 99: deleted row by row
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT deleted FROM task_partitions WHERE lo = 0").fetchone() == (20,)
    imp(store, [item(f"sku-{i}", 2) for i in range(20, 40)], now=at(20))
    finish_all(store, 20, at(20))
    # 20 more go: with the 20 holes that is 40 of 99, past a third, so the partition is rewritten
    assert store.prune_ages({Status.FINISHED: at(15)}) == 20
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT deleted FROM task_partitions WHERE lo = 0").fetchone() == (0,)
    assert rows_in(url, "tasks_0") == 59
    assert_counters_exact(store)


def test_retention_waits_for_a_long_transaction_and_tries_again(
    pg: tuple[PostgresStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction that holds the task table (here a report reading it for 2.5 s) makes retention's lock wait run
    out: it tries again after a pause and drops the partition once the reader is done, instead of failing or
    holding every other query behind its wait."""
    store, url = pg
    imp(store, [item(f"sku-{i}", 1) for i in range(150)])
    finish_all(store, 150)
    imp(store, [item(f"sku-{i}", 2) for i in range(150)], now=at(10))  # 1-150 are history now
    monkeypatch.setattr(partitions, "LOCK_PAUSE", 0.2)
    reading = threading.Event()

    def long_report() -> None:
        with psycopg.connect(url) as conn:
            conn.execute("SELECT COUNT(*) FROM tasks").fetchone()
            reading.set()
            time.sleep(2.5)  # the transaction (and its lock on tasks) stays open meanwhile

    reader = threading.Thread(target=long_report)
    reader.start()
    reading.wait(5)
    started = time.monotonic()
    deleted = store.prune_ages({Status.FINISHED: at(5)})
    waited = time.monotonic() - started
    reader.join()

    assert deleted == 150
    assert waited >= 2.0  # it did wait for the reader: the first tries ran out
    assert ranges(url)[0][0] == 100  # partition 0 dropped
    assert_counters_exact(store)
