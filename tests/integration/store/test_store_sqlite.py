"""SQLite only: the claim query uses an index, WAL mode, migrations."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from store_helpers import ROUTE, WORKER, at, claim, imp, item

from crossdock.store.base import Settlement, TaskFilter
from crossdock.store.sqlfiles import load_migrations
from crossdock.store.sqlite.store import Q, SQLiteStore
from crossdock.tasks import Action, Status

LATEST_VERSION = max(v for v, _name, _sql in load_migrations("crossdock.store.sqlite"))


def database_at(path: Path, version: int) -> sqlite3.Connection:
    """A database file as an older crossdock left it: the migrations up to ``version`` and nothing later."""
    conn = sqlite3.connect(path, isolation_level=None)
    for number, _name, sql in load_migrations("crossdock.store.sqlite"):
        if number <= version:
            conn.executescript(sql)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_retry_pick_up_query_uses_the_due_index(sqlite_store: SQLiteStore) -> None:
    # statistics of a realistic table: most tasks finished, a few new and in retry (on a table of only new
    # tasks a rowid scan is as cheap and may rightly be chosen)
    imp(sqlite_store, [item(str(i)) for i in range(2000)])
    imp(sqlite_store, [item(str(i)) for i in range(500)], route="other")
    sqlite_store._conn.execute("UPDATE tasks SET status = 'finished' WHERE id % 20 != 0")
    sqlite_store._conn.execute("UPDATE tasks SET status = 'retry' WHERE id % 40 = 0")
    sqlite_store._conn.execute("ANALYZE")
    due = at(0).timestamp()
    cases = [
        # due retries come from the partial index on (status, next_attempt_at) WHERE status = 'retry'
        ("claim_retry", ("w", 1.0, 2.0, due, ROUTE), "tasks_retry_due", "status=? AND next_attempt_at<?"),
        # new work in arrival order from the (route, status, id) index: no sort, no scan
        ("claim_new", ("w", 1.0, 2.0, ROUTE, due), "tasks_route_status_id", "route=? AND status=?"),
    ]
    for name, params, index, condition in cases:
        plan = sqlite_store.explain(Q[name], (*params, 10))
        text = "\n".join(plan)
        searches = [line for line in plan if line.startswith("SEARCH tasks USING") and "INDEX" in line]
        assert any(index in line and condition in line for line in searches), text
        assert not any(line.startswith("SCAN tasks") for line in plan), text
        assert "USE TEMP B-TREE FOR ORDER BY" not in text, text
        # the claim itself updates the chosen ids by primary key, not by walking a status index
        assert plan[0] == "SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)", text


def test_recovery_and_lookup_queries_do_not_scan_tasks(sqlite_store: SQLiteStore) -> None:
    plan = sqlite_store.explain(Q["expired_leases"], (1.0, None, None, 100))
    assert not any(line.startswith("SCAN tasks") for line in plan), plan
    plan = sqlite_store.explain(Q["latest_for_identifiers"], (ROUTE, '["a", "b"]'))
    assert not any(line.startswith(("SCAN t", "SCAN l")) for line in plan), plan
    assert any("INDEX tasks_route_identifier" in line for line in plan), plan
    plan = sqlite_store.explain(Q["latest_unkeyed"], (ROUTE, b"f" * 32, "[0, 1]"))
    assert any("INDEX tasks_unkeyed" in line for line in plan), plan
    assert not any(line.startswith(("SCAN t", "SCAN l")) for line in plan), plan
    plan = sqlite_store.explain(Q["latest_with_fingerprint"], (ROUTE, '["a"]'))
    assert any("INDEX tasks_route_identifier" in line for line in plan), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan


def test_wal_mode_is_on(sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    assert sqlite_store._read("PRAGMA journal_mode")[0][0] == "wal"
    with sqlite3.connect(tmp_path / "crossdock.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_upgrade_is_idempotent_and_sets_user_version(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    store = SQLiteStore(path, create=False)
    assert store._read("PRAGMA user_version")[0][0] == 0
    assert store.upgrade() == LATEST_VERSION
    assert store._read("PRAGMA user_version")[0][0] == LATEST_VERSION
    tables = {r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"tasks", "task_logs", "counters", "runs", "storage", "meta"} <= tables
    # the delta cache is read from the task rows (migration 0004)
    assert "fingerprints" not in tables
    imp(store, [item("a")])
    assert store.upgrade() == LATEST_VERSION
    assert store.upgrade() == LATEST_VERSION
    assert store.get_task(1) is not None
    store.close()
    # opening again (which upgrades) keeps the data and the version
    again = SQLiteStore(path)
    assert again._read("PRAGMA user_version")[0][0] == LATEST_VERSION
    assert again.get_task(1) is not None
    assert imp(again, [item("b")]).created_ids == [2]
    again.close()


def test_upgrade_from_version_1_applies_only_later_migrations(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = database_at(path, 1)
    conn.close()
    store = SQLiteStore(path)
    assert store._read("PRAGMA user_version")[0][0] == LATEST_VERSION
    imp(store, [item("a")])
    assert store.get_task(1) is not None
    store.close()


def test_upgrade_to_version_4_keeps_what_the_fingerprint_table_said(tmp_path: Path) -> None:
    """Version 3 kept the latest fingerprint in its own table; 0004 moves that knowledge onto the tasks."""
    path = tmp_path / "v3.db"
    conn = database_at(path, 3)
    row = (
        "INSERT INTO tasks (id, route, identifier, status, created_at, updated_at, fingerprint) "
        "VALUES (?, ?, ?, ?, 0, 0, ?)"
    )
    # a: task 1 is the recorded latest; task 2 came later from a delta: false run (no fingerprint recorded)
    conn.execute(row, (1, ROUTE, "a", "finished", b"fa"))
    conn.execute(row, (2, ROUTE, "a", "new", b"fa"))
    # b: its cache was cleared (no row in the fingerprint table)
    conn.execute(row, (3, ROUTE, "b", "finished", b"fb"))
    # c: plain latest
    conn.execute(row, (4, ROUTE, "c", "finished", b"fc"))
    conn.executemany(
        "INSERT INTO fingerprints (route, identifier, fingerprint, task_id) VALUES (?, ?, ?, ?)",
        [(ROUTE, "a", b"fa", 1), (ROUTE, "c", b"fc", 4)],
    )
    conn.close()
    store = SQLiteStore(path)
    assert store._read("PRAGMA user_version")[0][0] == LATEST_VERSION
    assert store.cache_show(ROUTE, "a").task_id == 1  # type: ignore[union-attr]
    assert store.cache_show(ROUTE, "b") is None
    assert store.cache_show(ROUTE, "c").task_id == 4  # type: ignore[union-attr]
    store.close()


def test_upgrade_to_version_5_keeps_seen_counts_and_adds_touches_on_top(tmp_path: Path) -> None:
    """Version 4 counted touches on the task row; 0005 leaves those values and counts later touches in task_seen."""
    path = tmp_path / "v4.db"
    conn = database_at(path, 4)
    conn.execute(
        "INSERT INTO tasks (id, route, identifier, status, created_at, updated_at, fingerprint, seen_count, "
        "last_seen_at, entity) VALUES (1, ?, 'a', 'new', 0, 0, ?, 4, ?, ?)",
        (ROUTE, item("a").fingerprint, at(3).timestamp(), item("a").entity),
    )
    conn.execute("INSERT INTO counters (route, status, n) VALUES (?, 'new', 1)", (ROUTE,))
    conn.close()
    store = SQLiteStore(path)
    assert store._read("PRAGMA user_version")[0][0] == LATEST_VERSION
    t = store.get_task(1)
    assert t is not None and (t.seen_count, t.last_seen_at) == (4, at(3))
    assert imp(store, [item("a")], now=at(7)).unchanged == 1
    t = store.get_task(1)
    assert t is not None and (t.seen_count, t.last_seen_at) == (5, at(7))
    assert store.cache_show(ROUTE, "a").last_seen_at == at(7)  # type: ignore[union-attr]
    store.close()


def test_upgrade_to_version_6_forgets_fingerprints_delta_never_recorded_on_tasks_without_identifier(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v5.db"
    conn = database_at(path, 5)
    row = (
        "INSERT INTO tasks (id, route, identifier, status, created_at, updated_at, fingerprint) "
        "VALUES (?, ?, ?, ?, 0, 0, ?)"
    )
    conn.execute(row, (1, ROUTE, None, "rejected", item(None, 1).fingerprint))
    conn.execute(row, (2, ROUTE, "a", "new", item("a").fingerprint))
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'next_task_id'")
    conn.executemany("INSERT INTO counters (route, status, n) VALUES (?, ?, 1)", [(ROUTE, "rejected"), (ROUTE, "new")])
    conn.close()
    store = SQLiteStore(path)
    assert [t.fingerprint is None for t in store.get_tasks([1, 2])] == [True, False]
    # so the same record is a task of its own once more, and from then on compared
    unkeyed = item(None, 1, Status.REJECTED, reason="no id")
    assert imp(store, [unkeyed], now=at(1)).created == {"rejected": 1}
    assert imp(store, [unkeyed], now=at(2)).created == {}
    store.close()


def test_upgrade_to_version_7_keeps_runs_and_lets_a_run_without_owner_be_abandoned(tmp_path: Path) -> None:
    """0007 adds the owner and heartbeat of a run; a run an older version left running has neither."""
    path = tmp_path / "v6.db"
    conn = database_at(path, 6)
    conn.execute(
        "INSERT INTO runs (id, route, part, started_at, finished_at, status, actor) VALUES "
        "(1, ?, 'incoming', ?, ?, 'ok', 'cli'), (2, ?, 'incoming', ?, NULL, 'running', 'scheduler')",
        (ROUTE, at(0).timestamp(), at(1).timestamp(), ROUTE, at(2).timestamp()),
    )
    conn.close()
    store = SQLiteStore(path)
    assert store._read("PRAGMA user_version")[0][0] == LATEST_VERSION
    assert store.last_successful_run(ROUTE, "incoming").id == 1  # type: ignore[union-attr]
    [running] = store.running_runs()
    assert (running.id, running.owner, running.heartbeat_at) == (2, None, None)
    assert store.abandon_run(2, error="abandoned", now=at(900))
    assert store.running_runs() == []
    store.close()


def test_a_failed_batch_leaves_nothing_behind(sqlite_store: SQLiteStore) -> None:
    imp(sqlite_store, [item("a", 1)])
    bad = item("b", 1)
    bad.entity = object()  # type: ignore[assignment]  # cannot be bound: the insert fails mid-batch
    try:
        imp(sqlite_store, [item("a", 2), bad], now=at(1))
    except (sqlite3.Error, TypeError, ValueError):
        pass
    else:  # pragma: no cover
        raise AssertionError("the batch should have failed")
    assert sqlite_store.count_tasks(TaskFilter()) == 1
    t = sqlite_store.get_task(1)
    assert t is not None and t.status.value == "new"
    assert sqlite_store.stats().total == 1
    assert sqlite_store.cache_show(ROUTE, "a").task_id == 1  # type: ignore[union-attr]
    # the reserved ids of the failed batch are not reused in a way that clashes
    assert imp(sqlite_store, [item("c")], now=at(2)).created == {"new": 1}


def test_recovery_of_one_route_is_not_starved_by_other_routes(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crossdock.store.ledger as module

    monkeypatch.setattr(module, "ACTION_BATCH", 3)
    imp(sqlite_store, [item(str(i)) for i in range(5)], route="busy")
    imp(sqlite_store, [item(str(i)) for i in range(4)], route="mine")
    claim(sqlite_store, route="busy", now=at(0), lease=5)
    claim(sqlite_store, route="mine", now=at(0), lease=5)
    assert sqlite_store.recover_expired_leases(now=at(10), max_attempts={}, route="mine") == 4
    assert sqlite_store.count_tasks(TaskFilter(route="mine", statuses=[Status.NEW])) == 4
    assert sqlite_store.count_tasks(TaskFilter(route="busy", statuses=[Status.PROCESSING])) == 5
    assert sqlite_store.recover_expired_leases(now=at(10), max_attempts={}) == 5


def test_settle_now_settles_on_the_callers_thread_only_when_nothing_holds_a_lock(sqlite_store: SQLiteStore) -> None:
    imp(sqlite_store, [item(str(i)) for i in range(3)])
    [a, b, c] = claim(sqlite_store, 3)
    done = Settlement(a.id, Action.DELIVERED, WORKER, message="ok")
    assert sqlite_store.settle_now([done], now=at(1)) == 1
    # another process holds the file's write lock: no waiting on the event loop, the caller falls back to a thread
    other = sqlite3.connect(sqlite_store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert sqlite_store.settle_now([Settlement(b.id, Action.DELIVERED, WORKER, message="ok")], now=at(2)) is None
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert sqlite_store.health.up, "a lock held for a moment is not an outage"
    # this store's own lock held by another thread: None at once as well
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sqlite_store._lock:
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    try:
        assert sqlite_store.settle_now([Settlement(c.id, Action.DELIVERED, WORKER, message="ok")], now=at(3)) is None
    finally:
        release.set()
        thread.join()
    assert [t.status for t in sqlite_store.get_tasks([a.id, b.id, c.id])] == [
        Status.FINISHED,
        Status.PROCESSING,
        Status.PROCESSING,
    ]
    assert sqlite_store._read("PRAGMA busy_timeout")[0][0] == 30_000
