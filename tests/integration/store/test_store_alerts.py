"""What alerts keep in the store, on every backend: failed-task groups by period, the message queue with its
delivery states, and each rule's state (saved in the same transaction as the messages it led to)."""

from __future__ import annotations

from datetime import timedelta

from store_helpers import ROUTE, T0, at, claim, imp, item, settle

from crossdock.store.base import NewAlert, Store
from crossdock.tasks import Action


def fail(store: Store, ids: list[int], error: str, seconds: float) -> None:
    for task_id in ids:
        settle(store, task_id, Action.DELIVERY_FAILED, now=at(seconds), error=error)


def test_failure_groups_count_failed_tasks_of_a_period_by_route_and_error(store: Store) -> None:
    imp(store, [item(str(i)) for i in range(6)])
    imp(store, [item("x")], route="other")
    ids = [t.id for t in claim(store, 10)]
    other = claim(store, 10, route="other")
    fail(store, ids[:3], "HTTP 422: price missing", 10)
    fail(store, ids[3:5], "HTTP 422: bad sku", 20)
    fail(store, [other[0].id], "HTTP 500", 30)
    settle(store, ids[5], Action.DELIVERED, now=at(15))

    groups = store.failure_groups(since=T0, until=at(60))
    assert {(g.route, g.error, g.count) for g in groups} == {
        (ROUTE, "HTTP 422: price missing", 3),
        (ROUTE, "HTTP 422: bad sku", 2),
        ("other", "HTTP 500", 1),
    }
    first = next(g for g in groups if g.error == "HTTP 422: price missing")
    assert first.first_at == at(10)
    assert first.latest_task_id == max(ids[:3])
    # the period is (since, until]: both ends count as written
    assert [g.count for g in store.failure_groups(since=at(10), until=at(20))] == [2]
    assert {g.route for g in store.failure_groups(since=T0, until=at(60), route="other")} == {"other"}
    assert store.failure_groups(since=at(30), until=at(60)) == []


def test_alert_queue_keeps_each_try_and_its_outcome(store: Store) -> None:
    message = {"title": "3 tasks failed", "count": 3, "top_errors": [{"error": "boom", "count": 3}]}
    ids = store.add_alerts(
        [NewAlert("failures", "task_failed", ROUTE, ch, "[crossdock] 3 tasks failed", message) for ch in ("a", "b")],
        now=T0,
        states={"rule:failures": {"base": 1.0}},
    )
    assert len(ids) == 2 and ids[0] < ids[1]
    assert store.alert_state("rule:failures") == {"base": 1.0}
    due = store.due_alerts(now=T0)
    assert [a.id for a in due] == ids
    assert due[0].message == message and due[0].status == "pending" and due[0].attempts == 0

    store.alert_attempted(ids[0], now=at(1))
    store.alert_attempted(ids[1], now=at(1), error="HTTP 503", retry_at=at(11))
    assert store.due_alerts(now=at(5)) == []
    [again] = store.due_alerts(now=at(11))
    assert (again.id, again.status, again.attempts, again.error) == (ids[1], "pending", 1, "HTTP 503")
    store.alert_attempted(ids[1], now=at(12), error="HTTP 503 again")

    newest_first = store.list_alerts()
    assert [(a.id, a.status, a.attempts) for a in newest_first] == [(ids[1], "failed", 2), (ids[0], "sent", 1)]
    assert newest_first[1].sent_at == at(1) and newest_first[0].sent_at is None
    assert [a.id for a in store.list_alerts(status="sent")] == [ids[0]]
    assert [a.id for a in store.list_alerts(limit=1, cursor=ids[1])] == [ids[0]]
    assert store.list_alerts(route="other") == []

    assert store.prune_alerts(before=T0 + timedelta(days=1)) == 2
    assert store.list_alerts() == []


def test_alert_state_is_replaced_whole(store: Store) -> None:
    assert store.alert_state("rule:x") is None
    store.set_alert_state("rule:x", {"since": {"a": 1.5}, "open": {}}, now=T0)
    store.set_alert_state("rule:x", {"since": {}, "open": {"a": {"last": 2.0}}}, now=T0)
    assert store.alert_state("rule:x") == {"since": {}, "open": {"a": {"last": 2.0}}}
