"""Runs, the delta cache, storages with TTL, prune."""

from __future__ import annotations

from store_helpers import ROUTE, assert_counters_exact, at, claim, imp, item, settle, status_of

from crossdock.store.base import Store, TaskFilter, empty_counts
from crossdock.tasks import Action, Status


def test_runs(store: Store) -> None:
    r1 = store.start_run("r1", "incoming", actor="scheduler", now=at(0))
    r2 = store.start_run("r1", "outgoing", actor=None, now=at(1))
    r3 = store.start_run("r2", "incoming", actor="cli", now=at(2))
    assert len({r1, r2, r3}) == 3
    assert store.last_successful_run("r1", "incoming") is None
    store.finish_run(r1, status="ok", summary={"created": {"new": 3}}, error=None, now=at(5))
    store.finish_run(r3, status="error", summary={}, error="source down", now=at(6))
    run = store.last_successful_run("r1", "incoming")
    assert run is not None
    assert (run.id, run.route, run.part, run.status, run.actor) == (r1, "r1", "incoming", "ok", "scheduler")
    assert (run.started_at, run.finished_at, run.summary, run.error) == (
        at(0),
        at(5),
        {"created": {"new": 3}},
        None,
    )
    assert store.last_successful_run("r1", "outgoing") is None
    assert store.last_successful_run("r2", "incoming") is None
    assert [r.id for r in store.list_runs()] == [r3, r2, r1]
    assert [r.id for r in store.list_runs("r1")] == [r2, r1]
    assert [r.id for r in store.list_runs(limit=1)] == [r3]
    running = store.list_runs("r1")[0]
    assert (running.status, running.finished_at) == ("running", None)
    failed = store.list_runs("r2")[0]
    assert (failed.status, failed.error) == ("error", "source down")
    r4 = store.start_run("r1", "incoming", actor=None, now=at(10))
    store.finish_run(r4, status="ok", summary={}, error=None, now=at(11))
    assert store.last_successful_run("r1", "incoming").id == r4  # type: ignore[union-attr]


def test_cache_show_and_clear(store: Store) -> None:
    imp(store, [item("a", 1), item("b", 1)], now=at(0))
    imp(store, [item("a", 1)], now=at(5))
    imp(store, [item("a", 1)], route="other")
    entry = store.cache_show(ROUTE, "a")
    assert entry is not None
    assert (entry.route, entry.identifier, entry.task_id, entry.task_status) == (ROUTE, "a", 1, Status.NEW)
    assert entry.fingerprint == item("a", 1).fingerprint.hex()  # type: ignore[union-attr]
    assert entry.last_seen_at == at(5)
    assert store.cache_show(ROUTE, "zzz") is None
    assert store.cache_clear(ROUTE, "a") == 1
    assert store.cache_show(ROUTE, "a") is None
    assert store.cache_show(ROUTE, "b") is not None
    assert store.cache_clear(ROUTE, "a") == 0
    assert store.cache_clear(ROUTE) == 1
    assert store.cache_show(ROUTE, "b") is None
    assert store.cache_show("other", "a") is not None
    # after clearing, the same record is new again (no touch)
    counts = imp(store, [item("b", 1)], now=at(6))
    assert counts.created == {"new": 1}


def test_storage_get_put_with_ttl(store: Store) -> None:
    assert store.storage_get("prices", "sku1", now=at(0)) is None
    store.storage_put("prices", "sku1", {"price": 9.5, "tags": ["a"]}, now=at(0), ttl=60)
    store.storage_put("prices", "sku2", 42, now=at(0))
    store.storage_put("other", "sku1", "x", now=at(0))
    assert store.storage_get("prices", "sku1", now=at(59)) == {"price": 9.5, "tags": ["a"]}
    assert store.storage_get("prices", "sku1", now=at(60)) is None
    assert store.storage_get("prices", "sku2", now=at(10**6)) == 42
    assert store.storage_get("other", "sku1", now=at(0)) == "x"
    # overwrite renews the value and the expiry
    store.storage_put("prices", "sku1", [1], now=at(100), ttl=10)
    assert store.storage_get("prices", "sku1", now=at(105)) == [1]
    assert store.storage_get("prices", "sku1", now=at(111)) is None
    store.storage_put("prices", "sku1", "forever", now=at(200))
    assert store.storage_get("prices", "sku1", now=at(10**6)) == "forever"


def test_prune_deletes_old_tasks_with_their_logs_and_keeps_the_latest_of_each_identifier(
    store: Store,
) -> None:
    # a: three versions, all finished; the latest must survive
    for n in range(3):
        imp(store, [item("a", n)], now=at(n))
        [t] = claim(store, now=at(n))
        settle(store, t.id, Action.DELIVERED, now=at(n))
    # b: failed long ago, then a newer version that is new
    imp(store, [item("b", 1)], now=at(3))
    [b1] = claim(store, now=at(3))
    settle(store, b1.id, Action.DELIVERY_FAILED, now=at(3), error="400")
    imp(store, [item("b", 2)], now=at(4))
    # rejected without identifier, old
    imp(store, [item(None, 1, status=Status.REJECTED, reason="no id")], now=at(4))
    # c: finished recently
    imp(store, [item("c", 1)], now=at(1000))
    assert [t.id for t in claim(store, now=at(1000))] == [5, 7]
    assert settle(store, 7, Action.DELIVERED, now=at(1000)) == 1
    assert store.release([5], worker="w1", now=at(1000)) == 1
    assert store.count_tasks(TaskFilter()) == 7
    assert store.task_logs(1) != []

    deleted = store.prune(older_than=at(500), statuses=[Status.FINISHED, Status.FAILED, Status.REJECTED])
    # a#1, a#2, b#4 (failed), the rejected one
    assert deleted == 4
    remaining = {t.id: (t.identifier, t.status) for t in store.list_tasks(TaskFilter(), limit=100)[0]}
    assert remaining == {3: ("a", Status.FINISHED), 5: ("b", Status.NEW), 7: ("c", Status.FINISHED)}
    assert store.task_logs(1) == []
    assert store.task_logs(4) == []
    assert store.get_task(1) is None
    assert len(store.task_logs(3)) == 1
    assert store.cache_show(ROUTE, "a").task_id == 3  # type: ignore[union-attr]
    assert_counters_exact(store)
    assert store.stats().by_route[ROUTE] == {**empty_counts(), "finished": 2, "new": 1}
    # nothing more to prune; unchanged data after prune is still unchanged
    assert store.prune(older_than=at(500), statuses=[Status.FINISHED, Status.FAILED, Status.REJECTED]) == 0
    assert imp(store, [item("a", 2)], now=at(2000)).unchanged_created == 1


def test_prune_filters_by_status_route_and_age(store: Store) -> None:
    imp(store, [item(f"k{i}") for i in range(4)], route="r1", delta=False)
    imp(store, [item(f"k{i}") for i in range(4)], route="r2", delta=False)
    store.apply_action(Action.SKIP, TaskFilter(), actor="x", reason=None, now=at(10))
    assert store.prune(older_than=at(10), statuses=[Status.SKIPPED]) == 0  # not older
    assert store.prune(older_than=at(11), statuses=[Status.FAILED]) == 0
    assert store.prune(older_than=at(11), statuses=[]) == 0
    assert store.prune(older_than=at(11), statuses=[Status.SKIPPED], route="r2", batch_size=3) == 4
    assert store.count_tasks(TaskFilter(route="r2")) == 0
    assert store.count_tasks(TaskFilter(route="r1")) == 4
    assert status_of(store, 1) is Status.SKIPPED
    assert store.stats().by_route["r2"] == empty_counts()
    assert_counters_exact(store)


def test_runs_record_their_owner_heartbeat_and_can_be_abandoned(store: Store) -> None:
    r1 = store.start_run("r1", "incoming", actor="scheduler", now=at(0), owner="host-a:101")
    r2 = store.start_run("r1", "outgoing", actor="cli", now=at(1))
    r3 = store.start_run("r2", "incoming", actor="cli", now=at(2), owner="host-b:7")
    store.finish_run(r3, status="ok", summary={}, error=None, now=at(3))
    running = store.running_runs()
    assert [r.id for r in running] == [r1, r2]
    assert (running[0].owner, running[0].heartbeat_at) == ("host-a:101", at(0))
    assert (running[1].owner, running[1].heartbeat_at) == (None, at(1))
    store.touch_run(r1, now=at(30))
    store.touch_run(r3, now=at(30))  # a finished run keeps its last heartbeat
    assert store.running_runs()[0].heartbeat_at == at(30)
    assert store.list_runs("r2")[0].heartbeat_at == at(2)
    assert store.abandon_run(r1, error="abandoned: its process host-a:101 is gone", now=at(40))
    assert not store.abandon_run(r1, error="twice", now=at(41)), "only a running run can be abandoned"
    assert not store.abandon_run(r3, error="finished", now=at(41))
    abandoned = store.list_runs("r1")[1]
    assert (abandoned.id, abandoned.status, abandoned.finished_at) == (r1, "abandoned", at(40))
    assert abandoned.error == "abandoned: its process host-a:101 is gone"
    assert [r.id for r in store.running_runs()] == [r2]
    assert store.last_successful_run("r1", "incoming") is None, "an abandoned run must not move {last_run}"
