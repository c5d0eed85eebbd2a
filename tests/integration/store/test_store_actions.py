"""apply_action: manual actions by ids and by filter, from every status."""

from __future__ import annotations

import pytest
from store_helpers import (
    ROUTE,
    T0,
    WORKER,
    assert_counters_exact,
    assert_logs_obey_transitions,
    at,
    claim,
    imp,
    item,
    settle,
    status_of,
    task,
)

from crossdock.store.base import Store, TaskFilter
from crossdock.tasks import ALL_STATUSES, MANUAL_ACTIONS, TRANSITIONS, Action, Status


def make_one_of_each(store: Store, route: str = ROUTE) -> dict[Status, int]:
    """One task in every status on ``route``; returns status -> task id."""
    names = {s: f"{route}-{s.value}" for s in ALL_STATUSES}
    counts = imp(
        store,
        [item(names[s]) for s in ALL_STATUSES if s is not Status.REJECTED]
        + [item(names[Status.REJECTED], status=Status.REJECTED, reason="invalid")],
        route=route,
    )
    ids = dict(
        zip(
            [s for s in ALL_STATUSES if s is not Status.REJECTED] + [Status.REJECTED],
            counts.created_ids,
            strict=True,
        )
    )
    by_id = {v: k for k, v in ids.items()}
    claimed = claim(store, route=route, worker=WORKER)
    for t in claimed:
        want = by_id[t.id]
        action = {
            Status.NEW: Action.RELEASE,
            Status.PROCESSING: None,
            Status.FINISHED: Action.DELIVERED,
            Status.FAILED: Action.DELIVERY_FAILED,
            Status.SKIPPED: Action.FILTERED_OUT,
            Status.WAITING: Action.DELIVERED_WAITING,
            Status.RETRY: Action.SCHEDULE_RETRY,
        }[want]
        if action is Action.RELEASE:
            assert store.release([t.id], worker=WORKER, now=T0) == 1
        elif action is not None:
            assert settle(store, t.id, action, error="e", next_attempt_at=at(3600)) == 1
    for s, i in ids.items():
        assert status_of(store, i) is s
    return ids


CASES = [(a, s) for a in MANUAL_ACTIONS for s in ALL_STATUSES]


@pytest.mark.parametrize(("action", "status"), CASES, ids=[f"{a.value}-from-{s.value}" for a, s in CASES])
def test_every_manual_action_from_every_status(store: Store, action: Action, status: Status) -> None:
    ids = make_one_of_each(store)
    task_id = ids[status]
    before = task(store, task_id)
    logs_before = store.task_logs(task_id)
    result = store.apply_action(action, TaskFilter(ids=[task_id]), actor="alice", reason="because", now=at(10))
    rule = TRANSITIONS[action]
    assert result.matched == 1
    after = task(store, task_id)
    if status in rule.sources:
        assert (result.changed, result.refused) == (1, [])
        assert after.status is rule.target
        assert after.updated_at == at(10)
        assert after.lease_until is None
        line = store.task_logs(task_id)[-1]
        assert (line.at, line.phase, line.actor, line.from_status, line.to_status) == (
            at(10),
            "action",
            "alice",
            status,
            rule.target,
        )
        assert line.message == f"{action.value} by alice: because"
        if action is Action.RETRY:
            assert after.attempts == 0
            assert after.error is None
            assert after.next_attempt_at == at(10)
        if action in (Action.SKIP, Action.FAIL):
            assert after.error == "because"
    else:
        assert result.changed == 0
        [message] = result.refused
        allowed = [a for a in MANUAL_ACTIONS if status in TRANSITIONS[a].sources]
        assert message.startswith(f"1 task(s): cannot {action.value} a task in status {status.value}")
        for a in allowed:
            assert f"{a.value} (→ {TRANSITIONS[a].target.value})" in message
        if not allowed:
            assert message.endswith("none")
        assert after == before
        assert store.task_logs(task_id) == logs_before
    # the other tasks did not move
    for s, i in ids.items():
        if i != task_id:
            assert status_of(store, i) is s
    assert_counters_exact(store)
    assert_logs_obey_transitions(store, task_id)


def test_retry_resets_attempts_and_makes_the_task_claimable(store: Store) -> None:
    imp(store, [item("a")])
    for n in range(3):
        claim(store, now=at(n * 100))
        assert settle(store, 1, Action.SCHEDULE_RETRY, now=at(n * 100), next_attempt_at=at(n * 100 + 50)) == 1
    claim(store, now=at(400))
    assert settle(store, 1, Action.DELIVERY_FAILED, now=at(400), error="gave up") == 1
    assert task(store, 1).attempts == 4
    r = store.apply_action(Action.RETRY, TaskFilter(ids=[1]), actor="bob", reason=None, now=at(500))
    assert (r.matched, r.changed) == (1, 1)
    t = task(store, 1)
    assert (t.status, t.attempts, t.error) == (Status.NEW, 0, None)
    assert store.task_logs(1)[-1].message == "retry by bob"
    [again] = claim(store, now=at(500))
    assert again.attempts == 1


def test_skip_and_fail_default_errors_name_the_actor(store: Store) -> None:
    imp(store, [item("a")])
    store.apply_action(Action.SKIP, TaskFilter(ids=[1]), actor="carol", reason=None, now=at(1))
    assert task(store, 1).error == "skipped by carol"


def test_bulk_by_filter(store: Store) -> None:
    a = make_one_of_each(store, "r1")
    b = make_one_of_each(store, "r2")
    # retry every failed and skipped task of r1
    r = store.apply_action(
        Action.RETRY,
        TaskFilter(statuses=[Status.FAILED, Status.SKIPPED], route="r1"),
        actor="ops",
        reason="bulk",
        now=at(10),
    )
    assert (r.matched, r.changed, r.refused) == (2, 2, [])
    assert status_of(store, a[Status.FAILED]) is Status.NEW
    assert status_of(store, a[Status.SKIPPED]) is Status.NEW
    assert status_of(store, b[Status.FAILED]) is Status.FAILED
    # a filter that matches tasks that cannot change reports them
    r = store.apply_action(Action.FINISH, TaskFilter(route="r2"), actor="ops", reason=None, now=at(11))
    assert (r.matched, r.changed) == (8, 1)
    assert len(r.refused) == 7
    assert status_of(store, b[Status.WAITING]) is Status.FINISHED
    assert_counters_exact(store)


def test_bulk_by_identifier_search_and_time(store: Store) -> None:
    imp(store, [item("SKU-1"), item("SKU-2"), item("other_%")], now=at(0))
    imp(store, [item("SKU-3")], now=at(100))
    f = TaskFilter(search="SKU")
    assert store.count_tasks(f) == 3
    assert store.count_tasks(TaskFilter(search="_%")) == 1
    assert store.count_tasks(TaskFilter(search="%")) == 1
    assert store.count_tasks(TaskFilter(identifier="SKU-2")) == 1
    assert store.count_tasks(TaskFilter(created_after=at(100))) == 1
    assert store.count_tasks(TaskFilter(created_before=at(100))) == 3
    assert store.count_tasks(TaskFilter(created_after=at(0), created_before=at(100))) == 3
    r = store.apply_action(
        Action.SKIP, TaskFilter(search="SKU", created_before=at(50)), actor="x", reason="old", now=at(200)
    )
    assert (r.matched, r.changed) == (2, 2)
    assert [t.status for t in store.get_tasks([1, 2, 3, 4])] == [
        Status.SKIPPED,
        Status.SKIPPED,
        Status.NEW,
        Status.NEW,
    ]
    # search also looks into the error
    assert {t.id for t in store.list_tasks(TaskFilter(search="old"))[0]} == {1, 2}
    r = store.apply_action(Action.RETRY, TaskFilter(identifier="SKU-1"), actor="x", reason=None, now=at(300))
    assert (r.matched, r.changed) == (1, 1)
    assert_counters_exact(store)


def test_search_is_case_insensitive(store: Store) -> None:
    imp(store, [item("Shirt-Blue"), item("hat")])
    assert [t.id for t in store.list_tasks(TaskFilter(search="shirt"))[0]] == [1]
    assert [t.id for t in store.list_tasks(TaskFilter(search="HAT"))[0]] == [2]


def test_action_on_no_match_and_unknown_ids(store: Store) -> None:
    imp(store, [item("a")])
    r = store.apply_action(Action.SKIP, TaskFilter(ids=[]), actor="x", reason=None, now=at(1))
    assert (r.matched, r.changed, r.refused) == (0, 0, [])
    r = store.apply_action(Action.SKIP, TaskFilter(ids=[42]), actor="x", reason=None, now=at(1))
    assert (r.matched, r.changed) == (0, 0)
    r = store.apply_action(Action.SKIP, TaskFilter(ids=[1, 1, 42]), actor="x", reason=None, now=at(1))
    assert (r.matched, r.changed) == (1, 1)
    assert len(store.task_logs(1)) == 1
    assert_counters_exact(store)


def test_processing_tasks_refuse_every_manual_action(store: Store) -> None:
    imp(store, [item("a")])
    claim(store)
    for action in MANUAL_ACTIONS:
        r = store.apply_action(action, TaskFilter(statuses=[Status.PROCESSING]), actor="x", reason=None, now=at(1))
        assert (r.matched, r.changed) == (1, 0)
        assert "Allowed from processing: none" in r.refused[0]
    assert status_of(store, 1) is Status.PROCESSING
    assert settle(store, 1, Action.DELIVERED, now=at(2)) == 1


def test_every_manual_action_is_audited_by_the_store_with_its_actor(store: Store) -> None:
    """The ledger writes the audit row, so no caller (CLI, API, dashboard) can forget it."""
    ids = imp(store, [item("a"), item("b"), item("c")]).created_ids
    one = store.apply_action(
        Action.SKIP,
        TaskFilter(ids=[ids[0]]),
        actor="anna",
        reason="shop echoed Authorization: Basic dXNlcjpzM2NyM3Q=",
        now=T0,
        audit_actor="cli:anna@h",
    )
    bulk = store.apply_action(
        Action.SKIP, TaskFilter(statuses=[Status.NEW], route=ROUTE), actor="ops", reason=None, now=T0
    )
    assert (one.changed, bulk.changed) == (1, 2)
    newest, first = store.list_audit(limit=2)
    assert (first.actor, first.action, first.target, first.changed) == ("cli:anna@h", "task.skip", {"ids": [ids[0]]}, 1)
    assert first.detail is not None and "dXNlcjpzM2NyM3Q=" not in first.detail  # reasons pass the store's redactor
    assert (newest.actor, newest.action, newest.changed) == ("ops", "tasks.bulk_skip", 2)
    assert newest.target == {"filter": {"status": ["new"], "route": ROUTE}}
    # the timeline names the actor the caller gave
    assert task(store, ids[0]).error == "shop echoed Authorization: Basic dXNlcjpzM2NyM3Q="


def test_prune_is_audited_as_retention_or_the_caller(store: Store) -> None:
    ids = imp(store, [item("a"), item("b")]).created_ids
    store.apply_action(Action.SKIP, TaskFilter(ids=ids), actor="ops", reason=None, now=T0)
    store.cache_clear(ROUTE)  # else each task is its identifier's latest, which prune keeps
    assert store.prune(older_than=at(60), statuses=[Status.SKIPPED]) == 2
    entry = store.list_audit(limit=1)[0]
    assert (entry.actor, entry.action, entry.changed) == ("retention", "tasks.prune", 2)
    assert entry.target["status"] == ["skipped"]
    assert_counters_exact(store)


def test_the_ledger_announces_committed_writes(store: Store) -> None:
    from crossdock.store.events import ActionTaken, LedgerEvent, TasksImported, TasksSettled

    heard: list[LedgerEvent] = []
    store.events.subscribe(heard.append)
    store.events.subscribe(lambda _event: 1 / 0)  # a broken subscriber is logged, never the writer's problem
    [task_id] = imp(store, [item("a")]).created_ids
    [claimed] = claim(store)
    assert settle(store, claimed.id, Action.DELIVERED) == 1
    store.apply_action(Action.RETRY, TaskFilter(ids=[task_id]), actor="ops", reason=None, now=T0)
    imported, settled, acted = heard
    assert isinstance(imported, TasksImported) and imported.created == {"new": 1}
    assert isinstance(settled, TasksSettled) and [(s.task_id, r) for s, r in settled.settled] == [(task_id, ROUTE)]
    assert isinstance(acted, ActionTaken) and (acted.actor, acted.result.changed) == ("ops", 1)


def test_a_retry_of_several_tasks_of_one_record_leaves_only_the_newest_due(store: Store) -> None:
    """One pass never sends a record twice: the older copies are skipped as superseded by the newest."""
    ids = []
    for n in range(3):
        ids += imp(store, [item("a")], now=at(n), resend_failed=True).created_ids
        [t] = claim(store, now=at(n))
        assert settle(store, t.id, Action.DELIVERY_FAILED, now=at(n), error="422") == 1
    [other] = imp(store, [item("b")], now=at(5)).created_ids
    result = store.apply_action(
        Action.RETRY, TaskFilter(statuses=[Status.FAILED], route=ROUTE), actor="ops", reason=None, now=at(10)
    )
    assert (result.changed, result.superseded) == (3, 2)
    assert [status_of(store, i) for i in ids] == [Status.SKIPPED, Status.SKIPPED, Status.NEW]
    assert task(store, ids[0]).error == f"superseded by task {ids[2]}"
    assert status_of(store, other) is Status.NEW
    assert [t.id for t in claim(store, now=at(11))] == [ids[2], other]
    for i in ids:
        assert_logs_obey_transitions(store, i)
    assert_counters_exact(store)


def test_retrying_an_older_copy_while_a_newer_one_is_due_keeps_the_newer(store: Store) -> None:
    [old] = imp(store, [item("a", 1)]).created_ids
    [t] = claim(store)
    settle(store, t.id, Action.DELIVERY_FAILED, error="422")
    [newer] = imp(store, [item("a", 2)], now=at(1)).created_ids
    result = store.apply_action(Action.RETRY, TaskFilter(ids=[old]), actor="ops", reason=None, now=at(2))
    assert (result.changed, result.superseded) == (1, 1)
    assert (status_of(store, old), status_of(store, newer)) == (Status.SKIPPED, Status.NEW)
    assert_counters_exact(store)
