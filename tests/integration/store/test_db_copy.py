"""``crossdock db copy``: every table moves SQLite -> PostgreSQL and back with ids and values intact, an interrupted
copy run again completes without duplicates, a target holding other data is refused, and a table the copy does not
know (a future migration) fails here before it can be left behind."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from store_helpers import at, claim, imp, item, rejected, settle

from crossdock.engine.leader import leader_lock_for
from crossdock.errors import CrossdockError
from crossdock.store import open_store
from crossdock.store.base import NewAlert, Store, TaskFilter
from crossdock.store.copy import BY_NAME, DERIVED, TABLES, copy_database, schema_problems
from crossdock.tasks import Action, Status
from postgres_support import create_database, drop_database

PAIRS = [("sqlite", "postgresql"), ("postgresql", "sqlite"), ("sqlite", "sqlite"), ("postgresql", "postgresql")]


@pytest.fixture
def urls(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``make(kind)``: the URL of a new empty database of that kind (PostgreSQL ones dropped afterwards)."""
    made: list[str] = []

    def make(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / f'db{len(made)}-{os.urandom(3).hex()}.db'}"
        url = create_database()
        made.append(url)
        return url

    yield make
    for url in made:
        drop_database(url)


def populate(store: Store) -> None:
    """Rows in every table, through the store's own API: tasks in every status, logs, seen counts, runs,
    storages with and without expiry, route overrides, tokens, audit, idempotency keys, circuits and alerts."""
    run = store.start_run("products", "incoming", actor="scheduler", now=at(0), owner="elsewhere:1")
    imp(store, [item(f"p{i}", i) for i in range(12)] + [rejected()], now=at(1), run_id=run)
    store.finish_run(run, status="ok", summary={"created": {"new": 12}, "ünï": "cødé"}, error=None, now=at(2))
    imp(store, [item("p0", 0), item("p1", 1), item("p0", 0)], now=at(3))  # unchanged: skipped, seen again
    imp(store, [item("p2", "changed")], now=at(4))  # supersedes p2's new task
    imp(store, [item("o1", {"n": 1.5, "list": [1, "two", None]})], route="orders", now=at(5))
    tasks = claim(store, limit=6, now=at(6))
    actions = [Action.DELIVERED, Action.SCHEDULE_RETRY, Action.DELIVERY_FAILED, Action.FILTERED_OUT]
    actions += [Action.DELIVERED_WAITING]
    for task, action in zip(tasks, actions, strict=False):
        fields: dict[str, Any] = {"result": {"shop_id": task.id}} if action is Action.DELIVERED else {}
        if action in (Action.SCHEDULE_RETRY, Action.DELIVERY_FAILED):
            fields.update(error="503 from the shop", details={"status": 503, "body": "busy"})
        settle(store, task.id, action, now=at(7), next_attempt_at=at(600), **fields)
    failed = [t.id for t in store.list_tasks(TaskFilter(statuses=[Status.FAILED]))[0]]
    store.apply_action(
        Action.RETRY, TaskFilter(ids=failed), actor="cli:ann@host", reason="shop is back", now=at(8)
    )  # writes an audit row too
    store.start_run("products", "outgoing", actor=None, now=at(9), owner="elsewhere:2")  # dead, still "running"
    store.storage_put("cursor", "products", {"since": "2026-01-01T00:00:00Z"}, now=at(10))
    store.storage_put("lookup", "sku-1", [1, 2, 3], now=at(10), ttl=3600)
    store.set_route_active("products", False, now=at(11), paused_reason="5 failures in a row")
    store.set_route_active("orders", True, now=at(11))
    store.set_next_fire("orders", "incoming", at(120), now=at(11))
    store.set_next_fire("orders", "outgoing", at(180), now=at(11))
    kept = store.create_token("ci", "operator", "a" * 64, now=at(12))
    gone = store.create_token("old", "viewer", "b" * 64, now=at(12))
    store.revoke_token(gone)
    store.find_token("a" * 64, now=at(13))
    assert kept != gone
    store.record_audit("web:ann", "token.create", {"token": kept, "name": "ci"}, changed=1, detail="x", now=at(14))
    store.claim_idempotency_key("webhook:orders", "k1", fingerprint="f1", now=at(15), expires_at=at(10_000_000))
    store.settle_idempotency_key("webhook:orders", "k1", response={"status": 202, "tasks": [1]})
    store.claim_idempotency_key("webhook:orders", "k2", fingerprint="f2", now=at(15), expires_at=at(10_000_000))
    store.record_circuit_failures("shop", 3, threshold=2, cooldown=60, error="503", now=at(16))
    store.record_circuit_failures("pim", 1, threshold=5, cooldown=60, error="timeout", now=at(16))
    ids = store.add_alerts(
        [
            NewAlert("failed", "task_failed", "products", "ops-mail", "1 failed", {"text": "p", "n": 1}),
            NewAlert("failed", "task_failed", None, "chat", "digest", {"text": "all", "counts": {"a": 2}}),
        ],
        now=at(17),
        states={"failed": {"cursor": 9, "seen": ["x"]}},
    )
    store.alert_attempted(ids[0], now=at(18))
    store.alert_attempted(ids[1], now=at(18), error="chat down", retry_at=at(80))
    store.set_alert_state("stale", {"since": 1.25}, now=at(19))


def everything(store: Store) -> dict[str, Any]:
    """What the store's API reads back, for comparing two databases."""
    tasks = store.get_tasks(list(range(1, 200)))
    stats = store.stats()
    return {
        "tasks": tasks,
        "logs": {t.id: store.task_logs(t.id) for t in tasks},
        "runs": store.list_runs(limit=100),
        "storage": [store.storage_get(s, k, now=at(20)) for s, k in (("cursor", "products"), ("lookup", "sku-1"))],
        "routes": store.route_states(),
        "tokens": store.list_tokens(),
        "audit": store.list_audit(limit=100),
        "throughput": store.throughput(since=at(-3600)),
        "circuits": store.circuits(),
        "alerts": store.list_alerts(limit=100),
        "alert_state": [store.alert_state("failed"), store.alert_state("stale")],
        "stats": (stats.total, stats.by_status, {r: c for r, c in stats.by_route.items() if any(c.values())}),
        "cache": [store.cache_show("products", i) for i in ("p0", "p1", "p2")],
    }


def nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {r: {s: n for s, n in c.items() if n} for r, c in counts.items() if any(c.values())}


def row_counts(url: str) -> dict[str, int]:
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return {t.name: conn.execute(f"SELECT COUNT(*) FROM {t.name}").fetchone()[0] for t in TABLES}
        finally:
            conn.close()
    with psycopg.connect(url) as pg:
        return {t.name: pg.execute(f"SELECT COUNT(*) FROM {t.name}").fetchone()[0] for t in TABLES}  # type: ignore[index]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
def test_copy_moves_every_table(urls: Callable[[str], str], source_kind: str, target_kind: str) -> None:
    source_url, target_url = urls(source_kind), urls(target_kind)
    source = open_store(source_url)
    populate(source)
    before = everything(source)
    source.close()
    counts = row_counts(source_url)
    empty = [name for name, n in counts.items() if n == 0]
    assert not empty, f"populate() leaves {empty} empty: give the copy test rows there"

    report = copy_database(source_url, target_url)

    assert report.ok, report.to_json()
    assert not report.resumed
    for entry in report.tables:
        assert entry.source == entry.target == entry.copied, entry
    assert row_counts(target_url) == counts
    target = open_store(target_url)
    try:
        after = everything(target)
        for key in before:
            assert after[key] == before[key], key
        assert sum(t.seen_count for t in after["tasks"]) > len(after["tasks"])  # the unchanged records' touches
        # the target goes on from here: new ids come after every id the source gave out
        highest = max(t.id for t in before["tasks"])
        counts_new = imp(target, [item("new-after-copy", 1)], now=at(30))
        assert counts_new.created[Status.NEW.value] == 1
        newest = target.list_tasks(TaskFilter(route="products"), limit=1)[0][0]
        assert newest.id > highest
        assert target.start_run("x", "incoming", actor=None, now=at(31)) > max(r.id for r in before["runs"])
        target.record_audit("t", "a", {}, now=at(32))
        assert target.list_audit(limit=1)[0].id > max(a.id for a in before["audit"])
        assert target.stats().total == before["stats"][0] + 1
        assert nonzero(target.stats().by_route) == nonzero(target.recount())  # stats --verify: no drift
    finally:
        target.close()


def test_a_copy_run_again_copies_nothing_twice(urls: Callable[[str], str]) -> None:
    source_url, target_url = urls("sqlite"), urls("postgresql")
    source = open_store(source_url)
    populate(source)
    source.close()
    first = copy_database(source_url, target_url)
    again = copy_database(source_url, target_url)
    assert first.ok and again.ok, again.to_json()
    assert again.resumed
    assert {t.name: t.copied for t in again.tables if BY_NAME[t.name].by_id} == {
        t.name: 0 for t in again.tables if BY_NAME[t.name].by_id
    }
    assert row_counts(target_url) == row_counts(source_url)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS[:2])
def test_an_interrupted_copy_completes_when_run_again(
    urls: Callable[[str], str], source_kind: str, target_kind: str
) -> None:
    source_url, target_url = urls(source_kind), urls(target_kind)
    source = open_store(source_url)
    populate(source)
    imp(source, [item(f"bulk{i}", i) for i in range(40)], now=at(40))
    source.close()
    seen: list[str] = []

    def stop_after(n: int) -> Callable[[str, int, int], None]:
        def hook(table: str, copied: int, total: int) -> None:
            seen.append(table)
            if len(seen) >= n:
                raise Interrupt

        return hook

    # killed in the middle of the tasks, then again in the middle of the logs
    with pytest.raises(Interrupt):
        copy_database(source_url, target_url, batch=7, progress=stop_after(3))
    partial = row_counts(target_url)
    assert 0 < partial["tasks"] < row_counts(source_url)["tasks"]
    seen.clear()
    with pytest.raises(Interrupt):
        copy_database(source_url, target_url, batch=7, progress=stop_after(12))
    assert "task_logs" in seen

    report = copy_database(source_url, target_url, batch=7)

    assert report.ok, report.to_json()
    assert report.resumed
    assert row_counts(target_url) == row_counts(source_url)
    source, target = open_store(source_url), open_store(target_url)
    try:
        assert everything(target) == everything(source)
    finally:
        source.close()
        target.close()


def test_a_target_holding_other_data_is_refused_unless_forced(urls: Callable[[str], str]) -> None:
    source_url, target_url = urls("sqlite"), urls("postgresql")
    source, other = open_store(source_url), open_store(target_url)
    populate(source)
    imp(other, [item("someone-else", 1)], route="elsewhere", now=at(1))
    source.close()
    other.close()
    with pytest.raises(CrossdockError, match=r"already holds other data \(tasks: .*--force"):
        copy_database(source_url, target_url)
    assert row_counts(target_url)["tasks"] == 1  # untouched

    report = copy_database(source_url, target_url, force=True)

    assert report.ok, report.to_json()
    assert row_counts(target_url) == row_counts(source_url)
    target = open_store(target_url)
    try:
        assert "elsewhere" not in target.stats().by_route
    finally:
        target.close()


def test_every_table_of_both_schemas_is_copied_or_derived(urls: Callable[[str], str]) -> None:
    """A migration that adds a table or a column must teach store/copy.py about it: this fails until it does."""
    from crossdock.store.copy import _open_end

    for kind in ("sqlite", "postgresql"):
        url = urls(kind)
        open_store(url).close()
        end = _open_end(url, None, target=False)
        try:
            tables = end.tables()
        finally:
            end.close()
        assert schema_problems(tables, kind) == [], kind
        assert set(BY_NAME) <= set(tables)
        assert set(tables) <= set(BY_NAME) | set(DERIVED), kind


def test_a_table_the_copy_does_not_know_stops_it(urls: Callable[[str], str]) -> None:
    source_url, target_url = urls("sqlite"), urls("postgresql")
    open_store(source_url).close()
    import sqlite3

    conn = sqlite3.connect(source_url[len("sqlite:///") :])
    conn.execute("CREATE TABLE webhooks (id INTEGER PRIMARY KEY, url TEXT)")
    conn.execute("ALTER TABLE tokens ADD COLUMN scopes TEXT")
    conn.commit()
    conn.close()
    with pytest.raises(CrossdockError, match=r"table tokens: columns not known.*'scopes'.*table webhooks is not known"):
        copy_database(source_url, target_url)
    assert row_counts_or_none(target_url) is None  # nothing was created


def row_counts_or_none(url: str) -> dict[str, int] | None:
    try:
        return row_counts(url)
    except psycopg.errors.UndefinedTable:
        return None


def test_a_source_in_use_is_refused(urls: Callable[[str], str]) -> None:
    source_url, target_url = urls("sqlite"), urls("postgresql")
    source = open_store(source_url)
    populate(source)
    lock = leader_lock_for(source)
    assert lock.acquire()
    try:
        with pytest.raises(CrossdockError, match=r"scheduler is running on the source.*stop `crossdock serve`"):
            copy_database(source_url, target_url)
    finally:
        lock.release()
    # a live run of this very process
    run = source.start_run("products", "incoming", actor=None, now=datetime.now(UTC), owner=_me())
    with pytest.raises(CrossdockError, match=rf"runs are still running on the source.*{run} \(products incoming"):
        copy_database(source_url, target_url)
    source.finish_run(run, status="ok", summary={}, error=None, now=datetime.now(UTC) + timedelta(seconds=1))
    source.close()
    assert copy_database(source_url, target_url).ok


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def test_schema_versions_must_match(urls: Callable[[str], str]) -> None:
    import sqlite3

    source_url, target_url = urls("postgresql"), urls("sqlite")
    open_store(source_url).close()
    open_store(target_url).close()
    conn = sqlite3.connect(target_url[len("sqlite:///") :])
    conn.execute("PRAGMA user_version = 10")
    conn.close()
    with pytest.raises(CrossdockError, match=r"target .* has schema version 10, older .* `crossdock db upgrade --db"):
        copy_database(source_url, target_url)
    conn = sqlite3.connect(target_url[len("sqlite:///") :])
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CrossdockError, match=r"target .* has schema version 99, newer than this crossdock knows"):
        copy_database(source_url, target_url)
