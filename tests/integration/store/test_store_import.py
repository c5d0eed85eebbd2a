"""import_batch: statuses, counters, and the delta rules of tasks.decide_import."""

from __future__ import annotations

import pytest
from store_helpers import (
    ROUTE,
    T0,
    WORKER,
    assert_counters_exact,
    at,
    claim,
    imp,
    item,
    rejected,
    settle,
    status_of,
    task,
)

from crossdock.store.base import ImportItem, Store, TaskFilter
from crossdock.tasks import Action, Status


def test_new_tasks_are_created_with_their_entity_and_fingerprint(store: Store) -> None:
    run_id = store.start_run(ROUTE, "incoming", actor="test", now=T0)
    counts = imp(store, [item("a", 1), item("b", 2)], run_id=run_id, priority=3)
    assert counts.created == {"new": 2}
    assert counts.created_ids == [1, 2]
    assert counts.unchanged == counts.unchanged_created == counts.changed == counts.superseded == 0
    a = task(store, 1)
    assert (a.route, a.identifier, a.status, a.attempts, a.seen_count) == (ROUTE, "a", Status.NEW, 0, 1)
    assert a.entity == {"id": "a", "v": 1}
    assert a.created_at == a.updated_at == a.last_seen_at == T0
    assert a.next_attempt_at == T0
    assert a.run_id == run_id
    assert a.priority == 3
    assert a.error is None and a.related_task_id is None and a.worker is None and a.lease_until is None
    assert a.fingerprint == item("a", 1).fingerprint.hex()  # type: ignore[union-attr]
    assert store.stats().by_status == {
        "new": 2,
        "processing": 0,
        "finished": 0,
        "failed": 0,
        "skipped": 0,
        "rejected": 0,
        "waiting": 0,
        "retry": 0,
    }
    assert_counters_exact(store)


def test_every_import_status(store: Store) -> None:
    counts = imp(
        store,
        [
            item("a", 1),
            item("b", 1, Status.SKIPPED, reason="filtered: price < 0"),
            item("c", 1, Status.REJECTED, reason="schema: 'name' is required"),
            rejected("no identifier", raw="{not json"),
        ],
    )
    assert counts.created == {"new": 1, "skipped": 1, "rejected": 2}
    assert [status_of(store, i) for i in (1, 2, 3, 4)] == [
        Status.NEW,
        Status.SKIPPED,
        Status.REJECTED,
        Status.REJECTED,
    ]
    assert task(store, 2).error == "filtered: price < 0"
    assert task(store, 2).next_attempt_at is None
    assert task(store, 3).error == "schema: 'name' is required"
    r = task(store, 4)
    assert (r.identifier, r.entity, r.raw, r.error) == (None, None, "{not json", "no identifier")
    assert_counters_exact(store)


def test_rejected_items_without_identifier_or_content_never_touch_each_other(store: Store) -> None:
    imp(store, [rejected(), rejected()])
    counts = imp(store, [rejected()], now=at(10))
    assert counts.created == {"rejected": 1}
    assert store.count_tasks(TaskFilter(statuses=[Status.REJECTED])) == 3
    assert all(t.seen_count == 1 for t in store.get_tasks([1, 2, 3]))
    assert_counters_exact(store)


def unkeyed(data: object, status: Status = Status.REJECTED) -> ImportItem:
    """A record without an identifier, with content (a malformed line's raw text, or an entity)."""
    return item(None, data, status, reason="identifier sku is missing")


def test_the_same_record_without_identifier_is_one_task_seen_again(store: Store) -> None:
    """A broken record polled every few minutes keeps one rejected task; its content is its key."""
    assert imp(store, [unkeyed(1), unkeyed(2)]).created == {"rejected": 2}
    counts = imp(store, [unkeyed(1), unkeyed(3), unkeyed(3)], now=at(10))
    assert counts.created == {"rejected": 1}  # only the new content; its repeat in the batch is seen again
    assert store.count_tasks(TaskFilter()) == 3
    assert [(t.id, t.seen_count) for t in store.get_tasks([1, 2, 3])] == [(1, 2), (2, 1), (3, 2)]
    assert task(store, 1).last_seen_at == at(10)
    # a filtered record without identifier is compared the same way, but never with a rejected one
    assert imp(store, [unkeyed(1, Status.SKIPPED)], now=at(20)).created == {"skipped": 1}
    assert imp(store, [unkeyed(1, Status.SKIPPED)], now=at(30)).created == {}
    # identifiers and routes keep their own tasks
    assert imp(store, [item("k", 1, Status.REJECTED, reason="bad")], now=at(40)).created == {"rejected": 1}
    assert imp(store, [unkeyed(1)], now=at(50), route="other").created == {"rejected": 1}
    assert_counters_exact(store)


def test_records_without_identifier_are_new_again_with_full_without_delta_and_after_cache_clear(store: Store) -> None:
    imp(store, [unkeyed(1)])
    assert imp(store, [unkeyed(1)], now=at(1), full=True).created == {"rejected": 1}
    assert imp(store, [unkeyed(1)], now=at(2)).created == {}  # --full recorded it again: task 2 is the latest
    assert task(store, 2).seen_count == 2
    assert imp(store, [unkeyed(1)], now=at(3), delta=False).created == {"rejected": 1}
    assert imp(store, [unkeyed(1)], now=at(4)).created == {}  # delta: false recorded nothing
    store.cache_clear(ROUTE)
    assert imp(store, [unkeyed(1)], now=at(5)).created == {"rejected": 1}
    assert imp(store, [unkeyed(1)], now=at(6)).created == {}
    assert [t.seen_count for t in store.get_tasks([1, 2, 3, 4])] == [1, 3, 1, 2]
    assert_counters_exact(store)


def test_realtime_import_creates_processing_tasks_leased_to_the_worker(store: Store) -> None:
    counts = imp(store, [item("a", 1), item("b", 1)], worker="rt", lease_until=at(30))
    # the processing status comes from the item (realtime route), the lease from the options
    assert counts.created == {"new": 2}
    counts = imp(
        store,
        [item("c", 1, Status.PROCESSING), item("d", 1, Status.PROCESSING)],
        worker="rt",
        lease_until=at(30),
    )
    assert counts.created == {"processing": 2}
    assert counts.processing_ids == [3, 4]
    c = task(store, 3)
    assert (c.status, c.worker, c.lease_until) == (Status.PROCESSING, "rt", at(30))
    # the delivery under way is the first attempt, as for a claimed task
    assert c.attempts == 1
    assert task(store, 1).worker is None and task(store, 1).lease_until is None
    assert settle(store, 3, Action.DELIVERED, worker="rt", now=at(1)) == 1
    assert status_of(store, 3) is Status.FINISHED
    assert_counters_exact(store)


# --- delta ---------------------------------------------------------------------------------------


def finish(store: Store, task_id: int, now=T0) -> None:  # type: ignore[no-untyped-def]
    got = [t.id for t in claim(store, now=now)]
    assert task_id in got
    for other in got:
        assert settle(store, other, Action.DELIVERED, now=now) == 1


def test_unchanged_after_finished_creates_a_skipped_task_pointing_at_it(store: Store) -> None:
    imp(store, [item("a", 1)])
    finish(store, 1)
    counts = imp(store, [item("a", 1)], now=at(60))
    assert counts.created == {"skipped": 1}
    assert counts.unchanged_created == 1
    assert counts.unchanged == 0
    t = task(store, 2)
    assert (t.status, t.error, t.related_task_id) == (Status.SKIPPED, "unchanged since task 1", 1)
    assert t.entity == {"id": "a", "v": 1}  # kept, so it can be retried
    # the next identical import only touches that skipped task
    counts = imp(store, [item("a", 1)], now=at(120))
    assert counts.created == {}
    assert counts.unchanged == 1
    t = task(store, 2)
    assert (t.seen_count, t.last_seen_at) == (2, at(120))
    assert store.count_tasks(TaskFilter()) == 2
    assert_counters_exact(store)


@pytest.mark.parametrize("latest", [Status.NEW, Status.RETRY, Status.WAITING, Status.SKIPPED, Status.PROCESSING])
def test_unchanged_while_not_finished_only_touches_the_latest_task(store: Store, latest: Status) -> None:
    bring_to(store, "a", 1, latest)
    before = store.count_tasks(TaskFilter())
    counts = imp(store, [item("a", 1)], now=at(500))
    assert counts.created == {}
    assert counts.unchanged == 1
    assert store.count_tasks(TaskFilter()) == before
    t = task(store, 1)
    assert t.status is latest
    assert (t.seen_count, t.last_seen_at) == (2, at(500))
    imp(store, [item("a", 1)], now=at(501))
    assert task(store, 1).seen_count == 3
    assert_counters_exact(store)


@pytest.mark.parametrize("latest", [Status.FAILED, Status.REJECTED])
def test_unchanged_after_failed_or_rejected_gets_another_chance_when_resend_allows(
    store: Store, latest: Status
) -> None:
    bring_to(store, "a", 1, latest)
    counts = imp(store, [item("a", 1)], now=at(500), resend_failed=True)
    assert counts.created == {"new": 1}
    assert counts.unchanged == counts.unchanged_created == 0
    new = task(store, counts.created_ids[0])
    assert (new.status, new.related_task_id, new.error) == (Status.NEW, None, None)
    assert status_of(store, 1) is latest
    assert store.cache_show(ROUTE, "a").task_id == new.id  # type: ignore[union-attr]
    assert_counters_exact(store)


@pytest.mark.parametrize("latest", [Status.NEW, Status.RETRY])
def test_changed_while_unsent_supersedes_the_older_task(store: Store, latest: Status) -> None:
    bring_to(store, "a", 1, latest)
    counts = imp(store, [item("a", 2)], now=at(500))
    assert counts.created == {"new": 1}
    assert counts.changed == 1
    assert counts.superseded == 1
    newer = counts.created_ids[0]
    old = task(store, 1)
    assert old.status is Status.SKIPPED
    assert old.error == f"superseded by task {newer}"
    assert old.related_task_id == newer
    assert old.updated_at == at(500)
    assert old.next_attempt_at is None
    logs = store.task_logs(1)
    assert (logs[-1].from_status, logs[-1].to_status, logs[-1].message) == (
        latest,
        Status.SKIPPED,
        f"superseded by task {newer}",
    )
    assert logs[-1].phase == "import"
    assert task(store, newer).status is Status.NEW
    # a superseded task is never claimed
    assert [t.id for t in claim(store, now=at(10_000))] == [newer]
    assert_counters_exact(store)


@pytest.mark.parametrize("latest", [Status.PROCESSING, Status.WAITING, Status.FINISHED, Status.FAILED, Status.SKIPPED])
def test_changed_after_sending_started_is_not_superseded(store: Store, latest: Status) -> None:
    bring_to(store, "a", 1, latest)
    counts = imp(store, [item("a", 2)], now=at(500))
    assert counts.created == {"new": 1}
    assert counts.changed == 1
    assert counts.superseded == 0
    assert status_of(store, 1) is latest
    assert task(store, 1).related_task_id is None
    assert_counters_exact(store)


def test_supersede_false_keeps_both(store: Store) -> None:
    imp(store, [item("a", 1)])
    counts = imp(store, [item("a", 2)], now=at(1), supersede=False)
    assert counts.created == {"new": 1}
    assert counts.superseded == 0
    assert status_of(store, 1) is Status.NEW
    # the fingerprint moved to the newer task anyway
    assert store.cache_show(ROUTE, "a").task_id == 2  # type: ignore[union-attr]
    assert_counters_exact(store)


def test_delta_false_creates_every_time_and_records_nothing(store: Store) -> None:
    imp(store, [item("a", 1)], delta=False)
    counts = imp(store, [item("a", 1)], now=at(1), delta=False)
    assert counts.created == {"new": 1}
    assert counts.unchanged == counts.superseded == 0
    assert [status_of(store, i) for i in (1, 2)] == [Status.NEW, Status.NEW]
    assert store.cache_show(ROUTE, "a") is None
    assert_counters_exact(store)


def test_delta_compares_with_the_last_recorded_fingerprint_past_unrecorded_tasks(store: Store) -> None:
    imp(store, [item("a", 1), item("b", 1)])
    finish(store, 1)
    # a delta: false run writes newer tasks of a without recording their fingerprint
    imp(store, [item("a", 2)], now=at(1), delta=False)
    imp(store, [item("a", 3)], now=at(2), delta=False)
    assert store.cache_show(ROUTE, "a").task_id == 1  # type: ignore[union-attr]
    # delta again: a compares with task 1 (finished, same data: an unchanged skipped task), b with task 2 as usual
    counts = imp(store, [item("a", 1), item("b", 1)], now=at(3))
    assert counts.unchanged_created == 2
    assert counts.created == {"skipped": 2}
    assert task(store, 5).related_task_id == 1
    assert task(store, 6).related_task_id == 2
    assert store.cache_show(ROUTE, "a").task_id == 5  # type: ignore[union-attr]
    assert_counters_exact(store)


def test_full_import_ignores_fingerprints_but_records_them(store: Store) -> None:
    imp(store, [item("a", 1)])
    finish(store, 1)
    counts = imp(store, [item("a", 1)], now=at(1), full=True)
    assert counts.created == {"new": 1}
    assert counts.unchanged == counts.unchanged_created == counts.superseded == 0
    assert store.cache_show(ROUTE, "a").task_id == 2  # type: ignore[union-attr]
    # a full import does not supersede either
    counts = imp(store, [item("a", 2)], now=at(2), full=True)
    assert counts.superseded == 0
    assert status_of(store, 2) is Status.NEW
    # the next normal import compares with what the full import recorded
    counts = imp(store, [item("a", 2)], now=at(3))
    assert counts.unchanged == 1
    assert task(store, 3).seen_count == 2
    assert_counters_exact(store)


def test_duplicate_identifiers_in_one_batch(store: Store) -> None:
    counts = imp(store, [item("a", 1), item("a", 1), item("b", 1), item("a", 2), item("b", 1)])
    # a/1 then a/1 again (touch), b/1, a/2 supersedes a/1, b/1 again (touch)
    assert counts.created == {"new": 2, "skipped": 1}
    assert counts.unchanged == 2
    assert counts.superseded == 1
    assert counts.changed == 1
    assert counts.created_ids == [1, 2, 3]
    first = task(store, 1)
    assert (first.status, first.error, first.related_task_id) == (Status.SKIPPED, "superseded by task 3", 3)
    assert first.entity == {"id": "a", "v": 1}
    assert (task(store, 3).status, task(store, 3).entity) == (Status.NEW, {"id": "a", "v": 2})
    # an identical record seen twice in one batch counts as seen twice, as in two batches
    assert task(store, 2).seen_count == 2
    assert store.cache_show(ROUTE, "a").task_id == 3  # type: ignore[union-attr]
    assert store.cache_show(ROUTE, "b").task_id == 2  # type: ignore[union-attr]
    assert store.count_tasks(TaskFilter()) == 3
    assert_counters_exact(store)


def test_filtered_records_add_one_row_per_version(store: Store) -> None:
    imp(store, [item("a", 1, Status.SKIPPED, reason="filtered")])
    counts = imp(store, [item("a", 1, Status.SKIPPED, reason="filtered")], now=at(1))
    assert counts.created == {}
    # the importer counts it as filtered again, not as unchanged
    assert counts.unchanged == 0
    assert task(store, 1).seen_count == 2
    counts = imp(store, [item("a", 2, Status.SKIPPED, reason="filtered")], now=at(2))
    assert counts.created == {"skipped": 1}
    assert_counters_exact(store)


def test_routes_do_not_share_fingerprints(store: Store) -> None:
    imp(store, [item("a", 1)], route="r1")
    counts = imp(store, [item("a", 1)], route="r2")
    assert counts.created == {"new": 1}
    assert status_of(store, 1) is Status.NEW
    assert store.stats().by_route["r1"]["new"] == store.stats().by_route["r2"]["new"] == 1
    assert_counters_exact(store)


def test_identifier_whose_latest_task_was_pruned_is_new_again(store: Store) -> None:
    imp(store, [item("a", 1)])
    store.cache_clear(ROUTE, "a")
    counts = imp(store, [item("a", 1)], now=at(1))
    assert counts.created == {"new": 1}
    assert counts.superseded == 0
    assert status_of(store, 1) is Status.NEW


# --- bring an identifier's latest task into a status ----------------------------------------------


def bring_to(store: Store, ident: str, data: int, status: Status) -> None:
    """Task 1 of ``ident`` in ``status`` (the store must be empty)."""
    if status is Status.REJECTED:
        imp(store, [item(ident, data, Status.REJECTED, reason="invalid")])
        assert status_of(store, 1) is status
        return
    if status is Status.PROCESSING:
        imp(store, [item(ident, data, Status.PROCESSING)], worker=WORKER, lease_until=at(3600))
        assert status_of(store, 1) is status
        return
    imp(store, [item(ident, data)])
    if status is Status.NEW:
        return
    if status is Status.SKIPPED:
        store.apply_action(Action.SKIP, TaskFilter(ids=[1]), actor="t", reason=None, now=T0)
        assert status_of(store, 1) is status
        return
    [t] = claim(store)
    action = {
        Status.FINISHED: Action.DELIVERED,
        Status.FAILED: Action.DELIVERY_FAILED,
        Status.WAITING: Action.DELIVERED_WAITING,
        Status.RETRY: Action.SCHEDULE_RETRY,
    }[status]
    assert settle(store, t.id, action, next_attempt_at=at(30) if status is Status.RETRY else None) == 1
    assert status_of(store, 1) is status


# --- resend_failed: no resend storm ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.FAILED, Status.REJECTED])
def test_an_unchanged_record_after_failed_or_rejected_touches_that_task(store: Store, status: Status) -> None:
    bring_to(store, "a", 1, status)
    for poll in range(1, 5):
        counts = imp(store, [item("a", 1)], now=at(poll * 60))
        assert counts.created == {} and counts.created_ids == []
    assert store.stats().total == 1
    assert task(store, 1).seen_count == 5
    # changed data is a new task as always
    assert imp(store, [item("a", 2)], now=at(600)).created == {"new": 1}
    assert_counters_exact(store)


def test_resend_failed_true_sends_an_unchanged_failed_record_again(store: Store) -> None:
    bring_to(store, "a", 1, Status.FAILED)
    assert imp(store, [item("a", 1)], now=at(60), resend_failed=True).created == {"new": 1}
    assert_counters_exact(store)


def test_resend_failed_period_counts_from_the_latest_task(store: Store) -> None:
    bring_to(store, "a", 1, Status.FAILED)  # task 1, created at T0
    hour = 3600.0
    assert imp(store, [item("a", 1)], now=at(hour - 1), resend_failed=hour).created == {}
    assert task(store, 1).seen_count == 2
    second = imp(store, [item("a", 1)], now=at(hour), resend_failed=hour)
    assert second.created == {"new": 1}
    # the new task is the latest now: the next period starts from it
    assert imp(store, [item("a", 1)], now=at(hour + 60), resend_failed=hour).created == {}
    assert_counters_exact(store)
