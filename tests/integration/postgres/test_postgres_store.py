"""What only the PostgreSQL store has: COPY imports, SKIP LOCKED claims, sharded counters, NOTIFY, leader
locks, and migrations that two processes may run at once. Behaviour shared with SQLite is the shared store
suite's job.

Each test gets a fresh database (``postgres_url``); raw SQL here only inspects or provokes, never changes
state the store owns.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from crossdock.errors import StoreUnavailable
from crossdock.store import open_store
from crossdock.store.base import ImportItem, ImportOptions, Settlement, TaskFilter, empty_counts
from crossdock.store.postgres import store as pg_store
from crossdock.store.postgres.store import LOCK_NAMESPACE, PostgresStore, claim_lock_key
from crossdock.store.sqlfiles import load_migrations
from crossdock.tasks import Action, Status
from postgres_support import database_for, drop_databases, postgres_url, server_url, unavailable

__all__ = ["postgres_url"]  # the fixture, re-exported for pytest

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ROUTE = "products"


def item(identifier: str | None, data: Any = None, status: Status = Status.NEW) -> ImportItem:
    body = orjson.dumps({"id": identifier, "v": data}, option=orjson.OPT_SORT_KEYS)
    return ImportItem(status=status, identifier=identifier, entity=body, fingerprint=hashlib.sha256(body).digest()[:16])


def imp(store: PostgresStore, items: list[ImportItem], route: str = ROUTE, **options: Any) -> Any:
    return store.import_batch(route, items, run_id=None, options=ImportOptions(**options), now=T0)


@pytest.fixture
def open_pg(postgres_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """Open stores on the test database (each with its own pool); all closed after the test."""
    opened: list[PostgresStore] = []

    def make(**kwargs: Any) -> PostgresStore:
        s = PostgresStore(postgres_url, **kwargs)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_pg: Callable[..., PostgresStore]) -> PostgresStore:
    return open_pg()


def sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def assert_counters_exact(store: PostgresStore) -> None:
    stats = store.stats()
    recount = store.recount()
    for route in set(stats.by_route) | set(recount):
        assert stats.by_route.get(route, empty_counts()) == recount.get(route, empty_counts()), route
    assert stats.total == sum(sum(c.values()) for c in recount.values())


# --- COPY import -----------------------------------------------------------------------------------


def test_import_copies_a_large_batch_with_contiguous_ids_and_fingerprints(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies: list[str] = []
    real_copy = psycopg.Cursor.copy

    def spy(self: psycopg.Cursor[Any], statement: Any, *args: Any, **kwargs: Any) -> Any:
        copies.append(str(statement).split("(")[0].strip())
        return real_copy(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", spy)
    n = 20_000
    counts = imp(store, [item(f"sku-{i}", {"name": "Ünïcode ✓", "i": i}) for i in range(n)])
    assert copies == ["COPY tasks"], "rows (fingerprints on them) by one COPY, not one by one"
    assert counts.created == {"new": n}
    assert counts.created_ids == list(range(1, n + 1))
    t = store.get_task(n)
    assert t is not None
    assert (t.identifier, t.entity, t.status, t.next_attempt_at) == (
        f"sku-{n - 1}",
        {"id": f"sku-{n - 1}", "v": {"name": "Ünïcode ✓", "i": n - 1}},
        Status.NEW,
        T0,
    )
    entry = store.cache_show(ROUTE, "sku-123")
    assert entry is not None and entry.task_id == 124
    assert entry.fingerprint == (item("sku-123", {"name": "Ünïcode ✓", "i": 123}).fingerprint or b"").hex()
    # the same batch again: every record is unchanged, no row is added, each task is seen twice
    again = imp(store, [item(f"sku-{i}", {"name": "Ünïcode ✓", "i": i}) for i in range(n)])
    assert (again.created, again.unchanged) == ({}, n)
    assert store.stats().total == n
    assert store.get_tasks([1, n])[1].seen_count == 2
    assert_counters_exact(store)


def test_the_newest_fingerprinted_task_is_latest_when_another_importer_won(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossdock.store.postgres import store as module

    imp(store, [item("a", 1), item("b", 1)])
    # another importer wrote "a" and "b" after this batch looked them up: the lookup sees nothing
    blind = dict(module.Q, latest_for_identifiers=module.Q["latest_for_identifiers"] + " WHERE false")
    monkeypatch.setattr(module, "Q", blind)
    counts = imp(store, [item("a", 2), item("b", 2), item("c", 2)])
    assert counts.created_ids == [3, 4, 5]
    for ident, task_id in (("a", 3), ("b", 4), ("c", 5)):
        entry = store.cache_show(ROUTE, ident)
        assert entry is not None and entry.task_id == task_id
    assert_counters_exact(store)


def test_import_realtime_supersede_and_rejects_in_one_batch(store: PostgresStore) -> None:
    imp(store, [item("a", 1), item("b", 1)])
    lease = T0 + timedelta(seconds=30)
    batch = [
        item("a", 2, Status.PROCESSING),
        item("b", 1, Status.PROCESSING),
        ImportItem(status=Status.REJECTED, identifier=None, entity=None, reason="parse error", raw="{oops"),
    ]
    counts = imp(store, batch, worker="rt", lease_until=lease)
    assert counts.superseded == 1 and counts.unchanged == 1
    [a_new, rejected] = store.get_tasks(counts.created_ids)
    assert (a_new.status, a_new.worker, a_new.lease_until, a_new.attempts) == (
        Status.PROCESSING,
        "rt",
        lease,
        1,
    )
    assert counts.processing_ids == [a_new.id]
    assert (rejected.status, rejected.raw, rejected.error, rejected.entity) == (
        Status.REJECTED,
        "{oops",
        "parse error",
        None,
    )
    old = store.get_task(1)
    assert old is not None
    assert (old.status, old.related_task_id, old.error) == (
        Status.SKIPPED,
        a_new.id,
        f"superseded by task {a_new.id}",
    )
    [line] = store.task_logs(1)
    assert (line.from_status, line.to_status, line.phase) == (Status.NEW, Status.SKIPPED, "import")
    assert_counters_exact(store)


# --- claiming --------------------------------------------------------------------------------------


def test_concurrent_claims_from_many_stores_never_hand_out_a_task_twice(
    open_pg: Callable[..., PostgresStore],
) -> None:
    first = open_pg(max_size=4)
    n = 3000
    for start in range(0, n, 1000):
        imp(first, [item(f"k{i}") for i in range(start, start + 1000)])
    stores = [first, open_pg(max_size=4), open_pg(max_size=4)]
    claimed: list[list[int]] = [[] for _ in range(9)]
    go = threading.Barrier(9)

    def work(slot: int) -> None:
        s = stores[slot % 3]
        go.wait()
        while True:
            got = s.claim_due_tasks(ROUTE, 37, worker=f"w{slot}", lease_until=T0 + timedelta(minutes=5), now=T0)
            if not got:
                return
            assert all(t.worker == f"w{slot}" and t.attempts == 1 for t in got)
            claimed[slot] += [t.id for t in got]
            s.settle([Settlement(t.id, Action.DELIVERED, f"w{slot}") for t in got], now=T0)

    with ThreadPoolExecutor(9) as pool:
        for f in [pool.submit(work, i) for i in range(9)]:
            f.result(timeout=120)
    every = [i for ids in claimed for i in ids]
    assert len(every) == n
    assert len(set(every)) == n, "a task was claimed twice"
    assert sum(1 for ids in claimed if ids) > 1, "the work was not shared"
    assert first.stats().by_status["finished"] == n
    assert_counters_exact(first)


def test_claim_skips_rows_locked_by_another_transaction_instead_of_waiting(
    store: PostgresStore, postgres_url: str
) -> None:
    imp(store, [item(f"k{i}") for i in range(10)])
    with psycopg.connect(postgres_url) as holder:
        # another worker's claim in flight: it holds tasks 1..4
        holder.execute(b"SELECT id FROM tasks WHERE id <= 4 FOR UPDATE")
        started = time.monotonic()
        pool = ThreadPoolExecutor(1)
        try:
            claiming = pool.submit(
                store.claim_due_tasks, ROUTE, 3, worker="w", lease_until=T0 + timedelta(minutes=1), now=T0
            )
            try:
                got = claiming.result(timeout=5)
            finally:
                holder.rollback()  # a claim that waited on the locks must not wait forever
        finally:
            pool.shutdown()
        assert time.monotonic() - started < 5
        assert [t.id for t in got] == [5, 6, 7]
    assert [t.id for t in store.claim_due_tasks(ROUTE, 10, worker="w", lease_until=T0, now=T0)] == [
        1,
        2,
        3,
        4,
        8,
        9,
        10,
    ]


def test_claims_of_one_route_take_turns_and_a_held_turn_is_waited_out_for_a_bounded_time(
    store: PostgresStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#18: a claim waits for the claim before it on the same route (its snapshot then starts past the rows that
    claim took); a claimer frozen in its turn delays the others by CLAIM_TURN_WAIT at most, then they claim
    beside it as before. Other routes never wait, and the session's lock_timeout is left as it was."""
    imp(store, [item(f"k{i}") for i in range(6)])
    imp(store, [item(f"o{i}") for i in range(2)], route="other")
    monkeypatch.setattr(pg_store, "CLAIM_TURN_WAIT", 0.5)
    lease = T0 + timedelta(minutes=1)
    with psycopg.connect(postgres_url) as holder:
        holder.execute(b"SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, claim_lock_key(ROUTE)))
        started = time.monotonic()
        assert [t.id for t in store.claim_due_tasks("other", 5, worker="w", lease_until=lease, now=T0)] == [7, 8]
        assert time.monotonic() - started < 0.4, "another route's turn must not hold this one"
        started = time.monotonic()
        assert [t.id for t in store.claim_due_tasks(ROUTE, 2, worker="w", lease_until=lease, now=T0)] == [1, 2]
        waited = time.monotonic() - started
        assert 0.45 <= waited < 3, waited
        with ThreadPoolExecutor(1) as pool:
            # a turn given back in time is taken: the claim waits for it instead of claiming beside it
            claiming = pool.submit(store.claim_due_tasks, ROUTE, 2, worker="w", lease_until=lease, now=T0)
            time.sleep(0.1)
            assert not claiming.done()
            holder.rollback()
            assert [t.id for t in claiming.result(timeout=5)] == [3, 4]
    assert store._read("SHOW lock_timeout") == [("0",)]
    assert_counters_exact(store)


def test_claim_uses_the_partial_index_of_due_work(store: PostgresStore, postgres_url: str) -> None:
    imp(store, [item(f"k{i}") for i in range(5000)])
    imp(store, [item(f"o{i}") for i in range(1000)], route="other")
    done = store.claim_due_tasks(ROUTE, 4500, worker="w", lease_until=T0 + timedelta(minutes=1), now=T0)
    store.settle([Settlement(t.id, Action.DELIVERED, "w") for t in done], now=T0)
    sql(postgres_url, "ANALYZE tasks")
    for status, order, index in (
        ("new", "id", "tasks_0_due_new"),  # the first partition's copy of tasks_due_new
        ("retry", "next_attempt_at, id", "tasks_0_due_retry"),
    ):
        plan = sql(
            postgres_url,
            f"EXPLAIN SELECT id FROM tasks WHERE route = 'products' AND status = '{status}' "
            f"AND next_attempt_at <= now() ORDER BY {order} LIMIT 10 FOR UPDATE SKIP LOCKED",
        )
        assert index in "\n".join(r[0] for r in plan)


# --- settlement ------------------------------------------------------------------------------------


def test_settle_batch_is_guarded_by_worker_and_status(store: PostgresStore) -> None:
    imp(store, [item(f"k{i}") for i in range(4)])
    store.claim_due_tasks(ROUTE, 4, worker="w1", lease_until=T0 + timedelta(minutes=1), now=T0)
    later = T0 + timedelta(seconds=5)
    changed = store.settle(
        [
            Settlement(1, Action.DELIVERED, "w1", result={"ok": True}, message="200 OK", details={"status": 200}),
            Settlement(1, Action.DELIVERY_FAILED, "w1", error="twice"),  # the first one wins
            Settlement(2, Action.DELIVERED, "intruder"),
            Settlement(3, Action.SCHEDULE_RETRY, "w1", error="503", next_attempt_at=later),
            Settlement(99, Action.DELIVERED, "w1"),
        ],
        now=later,
    )
    assert changed == 2
    tasks = {t.id: t for t in store.get_tasks([1, 2, 3])}
    assert (tasks[1].status, tasks[1].result, tasks[1].error) == (Status.FINISHED, {"ok": True}, None)
    assert tasks[2].status is Status.PROCESSING
    assert (tasks[3].status, tasks[3].error, tasks[3].next_attempt_at) == (Status.RETRY, "503", later)
    [line] = store.task_logs(1)
    assert (line.message, line.details, line.actor) == ("200 OK", {"status": 200}, "w1")
    minute = int(later.timestamp() // 60)
    assert store.throughput(since=T0)[minute] == {"imported": 4, "finished": 1, "retry": 1}
    assert_counters_exact(store)


# --- sharded counters ------------------------------------------------------------------------------


def test_sharded_counters_stay_exact_under_concurrent_imports_claims_settles_and_actions(
    open_pg: Callable[..., PostgresStore], postgres_url: str
) -> None:
    stores = [open_pg(max_size=3) for _ in range(3)]
    stores[0].ensure_routes(["a", "b", "empty"])
    stop = threading.Event()
    errors: list[BaseException] = []

    def importer(k: int) -> None:
        for batch in range(12):
            route = "ab"[batch % 2]
            stores[k].import_batch(
                route, [item(f"{k}-{batch}-{i}", batch) for i in range(150)], run_id=None,
                options=ImportOptions(), now=T0,
            )  # fmt: skip

    def worker(k: int) -> None:
        s = stores[k % 3]
        while not stop.is_set():
            for route in "ab":
                got = s.claim_due_tasks(route, 40, worker=f"w{k}", lease_until=T0 + timedelta(minutes=1), now=T0)
                actions = [
                    Action.DELIVERED,
                    Action.SCHEDULE_RETRY,
                    Action.DELIVERY_FAILED,
                    Action.DELIVERED_WAITING,
                ]
                s.settle([Settlement(t.id, actions[t.id % 4], f"w{k}", next_attempt_at=T0) for t in got], now=T0)

    def operator() -> None:
        while not stop.is_set():
            stores[2].apply_action(Action.RETRY, TaskFilter(statuses=[Status.FAILED]), actor="op", reason=None, now=T0)
            stores[2].apply_action(Action.FINISH, TaskFilter(route="a"), actor="op", reason=None, now=T0)

    def guard(fn: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                stop.set()

        return run

    threads = [threading.Thread(target=guard(worker, k)) for k in range(4)]
    threads.append(threading.Thread(target=guard(operator)))
    for t in threads:
        t.start()
    importers = [threading.Thread(target=guard(importer, k)) for k in range(3)]
    for t in importers:
        t.start()
    for t in importers:
        t.join(timeout=120)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert_counters_exact(stores[1])
    stats = stores[1].stats()
    assert stats.total == 3 * 12 * 150
    assert stats.by_route["empty"] == dict.fromkeys(stats.by_status, 0)
    # the load really was spread over several shards of one (route, status)
    shards = sql(postgres_url, "SELECT COUNT(DISTINCT shard) FROM counters WHERE route = 'a' AND status = 'new'")
    assert shards[0][0] > 1


# --- NOTIFY / LISTEN ---------------------------------------------------------------------------------


def test_listen_new_wakes_on_imports_of_due_work_only(open_pg: Callable[..., PostgresStore]) -> None:
    worker, importer = open_pg(), open_pg()
    started = time.monotonic()
    assert worker.listen_new(0.2) == []  # starts listening; nothing yet
    assert 0.15 < time.monotonic() - started < 2
    imp(importer, [item("x", status=Status.SKIPPED)])
    imp(importer, [ImportItem(status=Status.REJECTED, identifier=None, entity=None, reason="bad", raw="?")])
    assert worker.listen_new(0.3) == [], "skipped and rejected tasks are not work"

    # several imports before the worker listens again: each route once
    imp(importer, [item("1")], route="r1")
    imp(importer, [item("2")], route="r1")
    imp(importer, [item("3", status=Status.PROCESSING)], route="r2", worker="rt", lease_until=T0)
    heard: list[str] = []
    deadline = time.monotonic() + 5
    while set(heard) != {"r1", "r2"} and time.monotonic() < deadline:
        got = worker.listen_new(1)
        assert len(got) == len(set(got)), got
        heard += got
    assert set(heard) == {"r1", "r2"}

    def later() -> None:
        time.sleep(0.3)
        imp(importer, [item("4")], route="r3")

    t = threading.Thread(target=later)
    started = time.monotonic()
    t.start()
    routes = worker.listen_new(10)
    t.join()
    assert routes == ["r3"]
    assert time.monotonic() - started < 5, "listen_new waited for its timeout instead of waking"


def test_new_work_is_notified_after_the_commit_and_a_rolled_back_import_notifies_nothing(
    open_pg: Callable[..., PostgresStore],
) -> None:
    """#18: NOTIFY is sent once the import committed, in a transaction of its own (so concurrent imports do not
    commit one at a time behind the notify lock); the pooled connection keeps its settings."""
    worker, importer = open_pg(), open_pg(max_size=1)
    assert worker.listen_new(0.1) == []
    with pytest.raises(RuntimeError), importer._tx() as tx:
        importer._announce_new(tx, "gone")
        raise RuntimeError("the import failed")
    assert worker.listen_new(0.3) == []
    imp(importer, [item("1")], route="r1")
    assert worker.listen_new(5) == ["r1"]
    assert importer._read("SELECT current_setting('synchronous_commit')") == [("on",)]
    with importer._tx() as tx:
        assert not tx.autocommit


def test_default_store_listen_new_sleeps_and_leader_lock_always_granted(tmp_path: Any) -> None:
    s = open_store(f"sqlite:///{tmp_path}/x.db")
    try:
        started = time.monotonic()
        assert s.listen_new(0.1) == []
        assert time.monotonic() - started >= 0.1
        assert s.try_leader_lock("scheduler") is True
        s.release_leader_lock("scheduler")
    finally:
        s.close()


# --- leader lock -----------------------------------------------------------------------------------


def test_leader_lock_is_exclusive_across_stores_and_freed_on_release_or_close(
    open_pg: Callable[..., PostgresStore], postgres_url: str
) -> None:
    a, b = open_pg(), open_pg()
    assert a.try_leader_lock("scheduler") is True
    assert b.try_leader_lock("scheduler") is False
    assert a.try_leader_lock("scheduler") is True, "asking again while leading keeps the lead"
    assert b.try_leader_lock("janitor") is True, "locks are per name"
    a.release_leader_lock("scheduler")
    a.release_leader_lock("scheduler")  # harmless twice
    assert b.try_leader_lock("scheduler") is True
    assert a.try_leader_lock("scheduler") is False
    b.close()  # a dead or closed process frees its locks
    # the server ends the closed session (and drops its locks) a moment after the client hung up, not at once
    deadline = time.monotonic() + 10
    while not a.try_leader_lock("scheduler"):
        assert time.monotonic() < deadline, "the closed store's lock was never freed"
        time.sleep(0.05)
    assert a.try_leader_lock("janitor") is True


def test_leader_lock_is_given_up_when_its_session_dies(
    open_pg: Callable[..., PostgresStore], postgres_url: str
) -> None:
    a, b = open_pg(), open_pg()
    assert a.try_leader_lock("scheduler") is True
    sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_locks "
        "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
    )
    assert b.try_leader_lock("scheduler") is True
    assert a.try_leader_lock("scheduler") is False, "a lost session must not claim to still lead"


# --- migrations ------------------------------------------------------------------------------------

LATEST = max(version for version, _name, _sql in load_migrations("crossdock.store.postgres"))


def test_upgrade_is_idempotent(store: PostgresStore, postgres_url: str) -> None:
    assert store.upgrade() == LATEST
    assert store.upgrade() == LATEST
    assert sql(postgres_url, "SELECT version, name FROM schema_migrations ORDER BY version") == [
        (1, "initial"),
        (2, "operations"),
        (3, "unkeyed_delta"),
        (4, "run_owner"),
        (5, "idempotency_keys"),
        (6, "fingerprint_on_task"),
        (7, "route_pause"),
        (8, "circuits"),
        (9, "alerts"),
        (10, "task_partitions"),
    ]


def test_upgrade_to_4_keeps_runs_and_a_run_without_owner_can_be_abandoned(postgres_url: str) -> None:
    """A database at migration 3 (before run owners): its runs stay, a running one has no owner or heartbeat."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, text in load_migrations("crossdock.store.postgres"):
            if version <= 3:
                conn.execute(text.encode(), prepare=False)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        started = datetime(2026, 1, 1, tzinfo=UTC)
        conn.execute(
            "INSERT INTO runs (route, part, started_at, status, actor) VALUES "
            "('r', 'incoming', %s, 'ok', 'cli'), ('r', 'incoming', %s, 'running', 'scheduler')",
            (started, started),
        )
    store = PostgresStore(postgres_url)
    try:
        assert store.last_successful_run("r", "incoming") is not None
        [running] = store.running_runs()
        assert (running.status, running.owner, running.heartbeat_at) == ("running", None, None)
        assert store.abandon_run(running.id, error="abandoned", now=started + timedelta(hours=1))
        assert store.running_runs() == []
    finally:
        store.close()


def database_at(url: str, version: int) -> psycopg.Connection[Any]:
    """A database migrated to ``version`` only, as an earlier crossdock left it; the caller closes it."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for number, name, text in load_migrations("crossdock.store.postgres"):
        if number <= version:
            conn.execute(text.encode(), prepare=False)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (number, name))
    return conn


def test_upgrade_to_6_keeps_what_the_fingerprint_table_said(postgres_url: str) -> None:
    """Version 5 kept the latest fingerprint per identifier in its own table, and wrote a fingerprint on every task
    with an identifier; 0006 keeps only the recorded latest ones, on the tasks, and drops the table."""
    with database_at(postgres_url, 5) as conn:
        row = (
            "INSERT INTO tasks (id, route, identifier, status, created_at, updated_at, fingerprint) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)"
        )
        fa, fb, fc = item("a", 1).fingerprint, item("b", 1).fingerprint, item("c", 1).fingerprint
        # a: task 1 is the recorded latest; task 2 came later from a delta: false run (fingerprint not recorded)
        conn.execute(row, (1, ROUTE, "a", "finished", T0, T0, fa))
        conn.execute(row, (2, ROUTE, "a", "new", T0, T0, fa))
        # b: its cache was cleared (no row in the fingerprint table)
        conn.execute(row, (3, ROUTE, "b", "finished", T0, T0, fb))
        # c: an older version and the recorded latest
        conn.execute(row, (4, ROUTE, "c", "finished", T0, T0, item("c", 0).fingerprint))
        conn.execute(row, (5, ROUTE, "c", "finished", T0, T0, fc))
        conn.execute("SELECT setval('tasks_id_seq', 5)")
        conn.execute(
            "INSERT INTO counters (route, status, shard, n) VALUES (%s, 'finished', 0, 4), (%s, 'new', 0, 1)",
            (ROUTE, ROUTE),
        )
        conn.execute(
            "INSERT INTO fingerprints (route, identifier, fingerprint, task_id) VALUES (%s, 'a', %s, 1), "
            "(%s, 'c', %s, 5)",
            (ROUTE, fa, ROUTE, fc),
        )
    store = PostgresStore(postgres_url)
    try:
        assert sql(postgres_url, "SELECT to_regclass('fingerprints')") == [(None,)]
        assert store.cache_show(ROUTE, "a").task_id == 1  # type: ignore[union-attr]
        assert store.cache_show(ROUTE, "b") is None
        assert store.cache_show(ROUTE, "c").task_id == 5  # type: ignore[union-attr]
        # delta compares exactly as before the upgrade: a and c unchanged (touched), b new again
        counts = imp(store, [item("a", 1), item("b", 1), item("c", 1)])
        assert (counts.created, counts.unchanged, counts.unchanged_created) == ({"skipped": 2, "new": 1}, 0, 2)
        assert_counters_exact(store)
    finally:
        store.close()


def test_concurrent_first_starts_migrate_once(postgres_url: str) -> None:
    go = threading.Barrier(5)
    versions: list[int] = []

    def start() -> None:
        go.wait()
        s = PostgresStore(postgres_url, create=False)
        try:
            versions.append(s.upgrade())
        finally:
            s.close()

    with ThreadPoolExecutor(5) as pool:
        for f in [pool.submit(start) for _ in range(5)]:
            f.result(timeout=60)
    assert versions == [LATEST] * 5
    assert sql(postgres_url, "SELECT COUNT(*) FROM schema_migrations") == [(LATEST,)]


def test_open_store_accepts_postgres_url_spellings(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1),
                postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)):  # fmt: skip
        s = open_store(url)
        try:
            assert s.backend == "postgresql"
            assert s.stats().total == 0
        finally:
            s.close()


def test_unreachable_server_is_a_clear_error() -> None:
    from crossdock.store.postgres.store import DatabaseUnavailable

    with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL"):
        PostgresStore("postgresql://nobody:secret@127.0.0.1:1/none", timeout=1)


# --- the test helper itself ---------------------------------------------------------------------------


def test_missing_server_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROSSDOCK_TEST_REQUIRE_ALL", raising=False)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        unavailable("no server")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        unavailable("no server")


def test_database_for_gives_one_database_per_key() -> None:
    first = database_for("key-1")
    assert database_for("key-1") == first
    assert database_for("key-2") != first
    drop_databases()
    names = {r[0] for r in sql(server_url(), "SELECT datname FROM pg_database")}
    assert first.rsplit("/", 1)[1] not in names


# --- pool contention is no outage -------------------------------------------------------------------------


def test_a_pool_with_every_connection_busy_is_not_reported_as_an_outage(
    open_pg: Callable[..., PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = open_pg(max_size=1, timeout=0.3)
    with store._pool.connection():  # the only connection, held by someone else
        with pytest.raises(StoreUnavailable), caplog.at_level("WARNING", logger="crossdock.store"):
            store.route_states()
        assert store.health.up
        assert "database unavailable" not in caplog.text
    assert store.route_states() == {}


def test_claim_turns_can_be_switched_off(
    open_pg: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossdock.store.postgres.store import CLAIM_TURNS_ENV

    monkeypatch.setenv(CLAIM_TURNS_ENV, "0")
    store = open_pg()
    imp(store, [item(str(i)) for i in range(3)])
    claimed = store.claim_due_tasks(ROUTE, 10, worker="w", lease_until=T0 + timedelta(minutes=5), now=T0)
    assert len(claimed) == 3


def test_upgrade_to_10_makes_the_table_its_first_partition_and_delta_keeps_comparing(postgres_url: str) -> None:
    """A version 9 database with tasks and log lines: 0010 turns the table into the first partition as it is (its
    indexes adopted), points delta_latest at each identifier's newest fingerprinted task, and imports go on."""
    with database_at(postgres_url, 9) as conn:
        conn.execute("SELECT setval('tasks_id_seq', 7)")
        for task_id, identifier, fingerprint in ((5, "a", b"a1"), (6, "b", b"b1"), (7, "a", b"a2")):
            conn.execute(
                "INSERT INTO tasks (id, route, identifier, status, created_at, updated_at, fingerprint) "
                "VALUES (%s, %s, %s, 'finished', %s, %s, %s)",
                (task_id, ROUTE, identifier, T0, T0, fingerprint),
            )
            conn.execute(
                "INSERT INTO task_logs (task_id, at, level, phase, message) VALUES (%s, %s, 'info', 'import', 'x')",
                (task_id, T0),
            )
        conn.execute("INSERT INTO counters (route, status, shard, n) VALUES (%s, 'finished', 0, 3)", (ROUTE,))
    store = PostgresStore(postgres_url)
    try:
        assert sql(postgres_url, "SELECT lo, hi FROM task_partitions") == [(0, 1_000_000)]
        assert sql(postgres_url, "SELECT identifier, task_id FROM delta_latest ORDER BY 1") == [("a", 7), ("b", 6)]
        adopted = sql(
            postgres_url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'tasks_due_new'::regclass",
        )
        assert adopted == [("tasks_0_due_new",)]
        assert [line.message for line in store.task_logs(7)] == ["x"]
        latest = store.delta_latest(ROUTE, ["a", "b", "c"], [])
        assert {k: v[1] for k, v in latest.items()} == {"a": 7, "b": 6}
        counts = imp(store, [item("c", 1)])
        assert counts.created == {"new": 1}
        assert store.get_task(8) is not None  # the sequence goes on where it was
        assert_counters_exact(store)
    finally:
        store.close()
