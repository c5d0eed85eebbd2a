"""The reads a dry run makes, on every backend: the delta state fed to the ledger's own import plan gives the
counts the real import then produces, the last delivered entity per identifier, and nothing is written."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from store_helpers import ROUTE, T0, at, claim, imp, item, settle

from crossdock.errors import StoreUnavailable
from crossdock.store.base import ImportOptions, Store, TaskFilter
from crossdock.store.import_plan import delta_keys, import_plan
from crossdock.store.ledger import Ledger
from crossdock.store.sqlite.store import SQLiteStore
from crossdock.tasks import Action, Status, Task


def deliver_all(store: Store, now: Any = T0) -> None:
    for t in claim(store, now=now):
        settle(store, t.id, Action.DELIVERED, now=now)


def tasks(store: Store, route: str | None = None) -> list[Task]:
    return store.list_tasks(TaskFilter(route=route), limit=1000)[0]


def snapshot(store: Store) -> Any:
    return [(t.id, t.status, t.seen_count, t.last_seen_at, t.fingerprint) for t in tasks(store)]


@pytest.mark.parametrize("supersede", [True, False])
def test_the_plan_over_delta_latest_counts_what_import_batch_then_does(store: Store, supersede: bool) -> None:
    assert isinstance(store, Ledger)
    imp(store, [item("a", 1), item("b", 1), item("c", 1), item("f", 1, Status.SKIPPED, "out of stock")])
    deliver_all(store)
    imp(store, [item("b", 2), item("d", 1)], now=at(2))
    batch = [
        item("a", 1),  # unchanged since its delivery: a skipped task
        item("b", 2),  # the same as the queued version: touched
        item("c", 3),  # changed
        item("d", 5),  # changed while queued: supersedes it (with supersede)
        item("e", 1),  # never seen
        item("e", 2),  # twice in one batch: the second supersedes the first
        item("f", 1, Status.SKIPPED, "out of stock"),  # filtered again, the same: touched
    ]
    options = ImportOptions(supersede=supersede)
    before = snapshot(store)
    idents, unkeyed = delta_keys(batch)
    latest = store.delta_latest(ROUTE, idents, unkeyed)
    plan = import_plan(ROUTE, batch, latest, options)
    assert snapshot(store) == before, "reading the delta state wrote something"

    real = store.import_batch(ROUTE, batch, run_id=None, options=options, now=at(3))
    assert plan.counts.created == real.created
    assert plan.counts.unchanged == real.unchanged
    assert plan.counts.unchanged_created == real.unchanged_created
    assert plan.counts.changed == real.changed == 3
    assert plan.counts.superseded + len(plan.supersedes) == real.superseded == (2 if supersede else 0)


def test_delta_latest_of_nothing_and_of_unknown_identifiers(store: Store) -> None:
    assert isinstance(store, Ledger)
    assert store.delta_latest(ROUTE, []) == {}
    imp(store, [item("a", 1)])
    found = store.delta_latest(ROUTE, ["a", "zz"])
    assert set(found) == {"a"} and found["a"][2] is Status.NEW
    assert store.delta_latest("other", ["a"]) == {}
    [task_id] = [t.id for t in tasks(store)]
    assert set(store.created_at_of([task_id, 999_999])) == {task_id}


def test_latest_entities_is_the_newest_task_in_the_statuses_per_identifier(store: Store) -> None:
    imp(store, [item("a", 1), item("b", 1)])
    deliver_all(store)
    imp(store, [item("a", 2), item("c", 1)], now=at(2))  # a: a newer version queued; c: never delivered
    imp(store, [item("a", 7)], now=at(2), route="other")
    ids = {(t.identifier, t.status): t.id for t in tasks(store, ROUTE)}

    delivered = store.latest_entities(ROUTE, ["a", "b", "c", "zz"])
    assert delivered == {
        "a": (ids[("a", Status.FINISHED)], Status.FINISHED, {"id": "a", "v": 1}),
        "b": (ids[("b", Status.FINISHED)], Status.FINISHED, {"id": "b", "v": 1}),
    }
    newest = store.latest_entities(ROUTE, ["a", "c"], (Status.NEW, Status.FINISHED))
    assert newest["a"] == (ids[("a", Status.NEW)], Status.NEW, {"id": "a", "v": 2})
    assert newest["c"][1] is Status.NEW
    assert store.latest_entities(ROUTE, []) == {}
    assert store.latest_entities("other", ["a"], (Status.NEW,))["a"][2] == {"id": "a", "v": 7}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_read_only_sqlite_store_leaves_the_file_as_it_was_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "crossdock.db"
    store = SQLiteStore(path)
    imp(store, [item("a", 1), item("b", 1)])
    deliver_all(store)
    store.close()
    before = sha256(path)

    ro = SQLiteStore(path, create=False, read_only=True)
    try:
        assert ro.schema_version() >= 1
        assert set(ro.delta_latest(ROUTE, ["a", "b"])) == {"a", "b"}
        assert ro.latest_entities(ROUTE, ["a"])["a"][2] == {"id": "a", "v": 1}
        assert ro.stats().total == 2
        with pytest.raises(StoreUnavailable, match="readonly"):
            imp(ro, [item("c", 1)])
    finally:
        ro.close()
    assert sha256(path) == before


def test_a_read_only_postgresql_store_refuses_writes(tmp_path: Path) -> None:
    from crossdock.store import open_store
    from crossdock.store.postgres.store import PostgresStore
    from postgres_support import database_for

    url = database_for(tmp_path)
    store = open_store(url)
    imp(store, [item("a", 1)])
    store.close()
    ro = PostgresStore(url, create=False, read_only=True)
    try:
        assert ro.schema_version() >= 1
        assert set(ro.delta_latest(ROUTE, ["a"])) == {"a"}
        with pytest.raises(Exception, match="read-only transaction"):
            imp(ro, [item("b", 1)])
        assert ro.stats().total == 1
    finally:
        ro.close()
