"""claim_due_tasks, settle, leases (extend, recover, release)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import pytest
from store_helpers import (
    ROUTE,
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

from crossdock.store.base import Settlement, Store, TaskFilter
from crossdock.tasks import TRANSITIONS, Action, Status


def to_retry(store: Store, task_id: int, when: float, now: float = 0) -> None:
    assert settle(store, task_id, Action.SCHEDULE_RETRY, now=at(now), error="503", next_attempt_at=at(when)) == 1


# --- claim -----------------------------------------------------------------------------------------


def test_claim_sets_lease_worker_and_counts_the_attempt(store: Store) -> None:
    imp(store, [item("a"), item("b")])
    got = claim(store, now=at(5), lease=60)
    assert [t.id for t in got] == [1, 2]
    for t in got:
        assert (t.status, t.worker, t.lease_until, t.attempts) == (Status.PROCESSING, WORKER, at(65), 1)
        assert t.claimed_from is Status.NEW
        stored = task(store, t.id)
        assert (stored.status, stored.worker, stored.lease_until, stored.attempts) == (
            Status.PROCESSING,
            WORKER,
            at(65),
            1,
        )
        assert stored.updated_at == at(5)
    assert claim(store, now=at(6)) == []
    assert store.stats().by_status["processing"] == 2
    assert_counters_exact(store)


def test_a_claimed_task_is_the_stored_task(store: Store) -> None:
    # the claim builds its tasks from the columns it did not set itself; they must read as the stored row does
    imp(store, [item("a", 1), item("b", 2)], now=at(1), priority=3)
    imp(store, [item("c", 3)], now=at(2))
    to_retry(store, claim(store, limit=1, now=at(3))[0].id, when=10, now=4)
    for got in claim(store, now=at(11), lease=30):
        assert got.claimed_from is (Status.RETRY if got.id == 1 else Status.NEW)
        assert replace(got, claimed_from=None) == task(store, got.id)


def test_settle_logs_every_task_alike_or_not(store: Store) -> None:
    # lines that differ only by task id and lines of their own, in one settle: each task gets its own line
    imp(store, [item(str(i)) for i in range(12)])
    got = claim(store, now=at(1))
    settlements = [
        Settlement(t.id, Action.DELIVERED, WORKER, message="accepted", details={"claimed_from": "new"}) for t in got[:8]
    ]
    settlements += [
        Settlement(t.id, Action.DELIVERED, WORKER, message="accepted", details={"n": t.id}) for t in got[8:10]
    ]
    settlements.append(Settlement(got[10].id, Action.DELIVERY_FAILED, WORKER, error="400", message="refused"))
    settlements.append(Settlement(got[11].id, Action.DELIVERED, WORKER, message="ok"))
    assert store.settle(settlements, now=at(2)) == 12
    for s in settlements:
        lines = store.task_logs(s.task_id)
        assert [(ln.from_status, ln.to_status, ln.message, ln.details, ln.actor, ln.at) for ln in lines[-1:]] == [
            (Status.PROCESSING, TRANSITIONS[s.action].target, s.message, s.details, WORKER, at(2))
        ]
        assert_logs_obey_transitions(store, s.task_id)
    assert store.stats().by_status["finished"] == 11
    assert_counters_exact(store)


def test_claim_respects_limit_route_and_due_time(store: Store) -> None:
    imp(store, [item(str(i)) for i in range(5)])
    imp(store, [item("x")], route="other")
    imp(store, [item("late")], now=at(100))
    assert [t.id for t in claim(store, limit=2, now=at(1))] == [1, 2]
    assert [t.id for t in claim(store, limit=10, now=at(1))] == [3, 4, 5]
    # task 7 was imported at 100: not due at 99
    assert claim(store, now=at(99)) == []
    assert [t.id for t in claim(store, now=at(100))] == [7]
    assert status_of(store, 6) is Status.NEW
    assert [t.id for t in claim(store, route="other", now=at(100))] == [6]
    assert claim(store, limit=0, now=at(100)) == []
    assert_counters_exact(store)


def test_claim_takes_due_retries_first_then_new_in_arrival_order(store: Store) -> None:
    imp(store, [item("r1"), item("r2")], now=at(0))  # 1, 2
    claim(store, now=at(0))
    to_retry(store, 1, when=50)
    to_retry(store, 2, when=500)  # not due yet
    imp(store, [item("n1")], now=at(10))  # 3
    imp(store, [item("n2")], now=at(20))  # 4
    imp(store, [item("n3")], now=at(30))  # 5
    # task 3 goes back to new with a later due time (its lease expired at 100)
    [t3] = claim(store, limit=1, now=at(40), lease=60)
    assert t3.id == 3
    assert store.recover_expired_leases(now=at(101), max_attempts={ROUTE: 5}) == 1
    assert task(store, 3).next_attempt_at == at(101)
    # due at 200: retry 1 (due 50) first, then new in arrival (id) order: 3, 4, 5; retry 2 is not due
    first = claim(store, limit=2, now=at(200))
    assert [t.id for t in first] == [1, 3]
    assert {t.id: t.claimed_from for t in first} == {1: Status.RETRY, 3: Status.NEW}
    assert task(store, 1).attempts == 2
    assert [t.id for t in claim(store, limit=1, now=at(200))] == [4]
    assert [t.id for t in claim(store, limit=5, now=at(200))] == [5]
    assert status_of(store, 2) is Status.RETRY
    assert [t.id for t in claim(store, now=at(500))] == [2]
    assert_counters_exact(store)


def test_two_claimers_never_get_the_same_task(store: Store, open_another: Callable[[], Store]) -> None:
    n = 300
    imp(store, [item(str(i)) for i in range(n)])
    stores = [open_another() for _ in range(4)]
    got: list[list[int]] = [[] for _ in stores]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def work(k: int) -> None:
        try:
            start.wait()
            while True:
                batch = claim(stores[k], limit=7, worker=f"w{k}", now=at(1))
                if not batch:
                    return
                got[k] += [t.id for t in batch]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    every = [i for ids in got for i in ids]
    assert len(every) == len(set(every)) == n
    for k, ids in enumerate(got):
        assert {t.worker for t in store.get_tasks(ids)} <= {f"w{k}"}
    assert store.stats().by_status["processing"] == n
    assert_counters_exact(store)


# --- settle ----------------------------------------------------------------------------------------

SETTLE_ACTIONS = [
    Action.DELIVERED,
    Action.DELIVERED_WAITING,
    Action.SCHEDULE_RETRY,
    Action.DELIVERY_FAILED,
    Action.FILTERED_OUT,
]


@pytest.mark.parametrize("action", SETTLE_ACTIONS)
def test_settle_every_action(store: Store, action: Action) -> None:
    imp(store, [item("a")])
    claim(store, now=at(1))
    retry_at = at(90) if action is Action.SCHEDULE_RETRY else None
    changed = store.settle(
        [
            Settlement(
                task_id=1,
                action=action,
                worker=WORKER,
                error=None if action is Action.DELIVERED else "boom",
                next_attempt_at=retry_at,
                result={"status": 200} if action is Action.DELIVERED else None,
                level="warning",
                message=f"settled {action.value}",
                details={"http_status": 503, "ms": 12},
            )
        ],
        now=at(2),
    )
    assert changed == 1
    t = task(store, 1)
    assert t.status is TRANSITIONS[action].target
    assert t.updated_at == at(2)
    assert t.lease_until is None
    assert t.attempts == 1
    assert t.error == (None if action is Action.DELIVERED else "boom")
    assert t.next_attempt_at == retry_at
    if action is Action.DELIVERED:
        assert t.result == {"status": 200}
    [line] = store.task_logs(1)
    assert (line.at, line.level, line.phase, line.actor) == (at(2), "warning", "export", WORKER)
    assert (line.from_status, line.to_status) == (Status.PROCESSING, TRANSITIONS[action].target)
    assert line.message == f"settled {action.value}"
    assert line.details == {"http_status": 503, "ms": 12}
    assert_counters_exact(store)


def test_scheduled_retry_is_claimed_only_when_due(store: Store) -> None:
    imp(store, [item("a")])
    claim(store, now=at(1))
    to_retry(store, 1, when=90, now=2)
    assert claim(store, now=at(89)) == []
    assert status_of(store, 1) is Status.RETRY
    [t] = claim(store, now=at(90))
    assert (t.id, t.attempts, t.claimed_from) == (1, 2, Status.RETRY)


@pytest.mark.parametrize("action", SETTLE_ACTIONS)
def test_settle_by_another_worker_changes_nothing(store: Store, action: Action) -> None:
    imp(store, [item("a")])
    claim(store, now=at(1), worker="w1")
    before = task(store, 1)
    assert settle(store, 1, action, worker="w2", now=at(2), next_attempt_at=at(9)) == 0
    assert task(store, 1) == before
    assert store.task_logs(1) == []
    assert_counters_exact(store)


@pytest.mark.parametrize("status", [Status.NEW, Status.FINISHED, Status.RETRY, Status.WAITING])
def test_settle_of_a_task_not_in_processing_changes_nothing(store: Store, status: Status) -> None:
    imp(store, [item("a")])
    if status is not Status.NEW:
        claim(store, now=at(1))
        action = {
            Status.FINISHED: Action.DELIVERED,
            Status.RETRY: Action.SCHEDULE_RETRY,
            Status.WAITING: Action.DELIVERED_WAITING,
        }[status]
        assert settle(store, 1, action, now=at(2), next_attempt_at=at(60)) == 1
    before = task(store, 1)
    logs = store.task_logs(1)
    for action in SETTLE_ACTIONS:
        assert settle(store, 1, action, now=at(3)) == 0
    assert settle(store, 999, Action.DELIVERED, now=at(3)) == 0
    assert task(store, 1) == before
    assert store.task_logs(1) == logs
    assert_counters_exact(store)


@pytest.mark.parametrize("action", [Action.RETRY, Action.SKIP, Action.FINISH, Action.CLAIM, Action.SUPERSEDE])
def test_settle_refuses_actions_not_allowed_from_processing(store: Store, action: Action) -> None:
    imp(store, [item("a")])
    claim(store, now=at(1))
    assert settle(store, 1, action, now=at(2)) == 0
    assert status_of(store, 1) is Status.PROCESSING
    assert store.task_logs(1) == []
    assert_counters_exact(store)


def test_settle_a_batch_applies_each_and_counts_changes(store: Store) -> None:
    imp(store, [item(str(i)) for i in range(4)])
    claim(store, now=at(1))
    n = store.settle(
        [
            Settlement(1, Action.DELIVERED, WORKER),
            Settlement(2, Action.DELIVERY_FAILED, WORKER, error="400"),
            Settlement(3, Action.DELIVERED, "intruder"),
            Settlement(4, Action.FILTERED_OUT, WORKER, error="filtered"),
            Settlement(1, Action.DELIVERY_FAILED, WORKER),  # already settled in this batch
        ],
        now=at(2),
    )
    assert n == 3
    assert [t.status for t in store.get_tasks([1, 2, 3, 4])] == [
        Status.FINISHED,
        Status.FAILED,
        Status.PROCESSING,
        Status.SKIPPED,
    ]
    assert_counters_exact(store)


# --- leases ----------------------------------------------------------------------------------------


def test_recover_expired_lease_first_attempt_goes_back_to_new(store: Store) -> None:
    imp(store, [item("a"), item("b")])
    claim(store, now=at(0), lease=30, worker="dead")
    # not expired yet (the lease runs until 30)
    assert store.recover_expired_leases(now=at(30), max_attempts={ROUTE: 3}) == 0
    assert store.recover_expired_leases(now=at(31), max_attempts={ROUTE: 3}) == 2
    t = task(store, 1)
    assert (t.status, t.attempts, t.lease_until, t.next_attempt_at) == (Status.NEW, 1, None, at(31))
    assert t.error is not None and "dead" in t.error and "expired" in t.error
    [line] = store.task_logs(1)
    assert (line.phase, line.level, line.from_status, line.to_status) == (
        "system",
        "warning",
        Status.PROCESSING,
        Status.NEW,
    )
    assert line.at == at(31)
    assert "expired" in line.message
    assert store.recover_expired_leases(now=at(32), max_attempts={ROUTE: 3}) == 0
    assert [t.id for t in claim(store, now=at(31))] == [1, 2]
    assert task(store, 1).attempts == 2
    assert_counters_exact(store)


def test_recover_expired_lease_after_earlier_attempts_goes_to_retry(store: Store) -> None:
    imp(store, [item("a")])
    claim(store, now=at(0))
    to_retry(store, 1, when=10, now=1)
    claim(store, now=at(10), lease=5)
    assert store.recover_expired_leases(now=at(16), max_attempts={ROUTE: 3}) == 1
    t = task(store, 1)
    assert (t.status, t.attempts, t.next_attempt_at) == (Status.RETRY, 2, at(16))
    assert store.task_logs(1)[-1].to_status is Status.RETRY
    assert [x.id for x in claim(store, now=at(16))] == [1]
    assert_counters_exact(store)


def test_recover_expired_lease_with_no_attempts_left_fails(store: Store) -> None:
    imp(store, [item("a")], route="r1")
    imp(store, [item("a")], route="r2")
    claim(store, route="r1", now=at(0), lease=5)
    claim(store, route="r2", now=at(0), lease=5)
    assert store.recover_expired_leases(now=at(6), max_attempts={"r1": 1, "r2": 2}) == 2
    t1, t2 = task(store, 1), task(store, 2)
    assert (t1.status, t1.next_attempt_at) == (Status.FAILED, None)
    assert t1.error is not None and "no attempts left" in t1.error
    assert t2.status is Status.NEW
    assert store.task_logs(1)[-1].to_status is Status.FAILED
    assert_counters_exact(store)


def test_recover_only_one_route(store: Store) -> None:
    imp(store, [item("a")], route="r1")
    imp(store, [item("a")], route="r2")
    claim(store, route="r1", now=at(0), lease=5)
    claim(store, route="r2", now=at(0), lease=5)
    assert store.recover_expired_leases(now=at(6), max_attempts={}, route="r2") == 1
    assert [status_of(store, 1), status_of(store, 2)] == [Status.PROCESSING, Status.NEW]


def test_extend_leases_prevents_recovery(store: Store) -> None:
    imp(store, [item("a"), item("b")])
    claim(store, now=at(0), lease=10)
    assert store.extend_leases([1], worker="other", lease_until=at(100)) == 0
    assert store.extend_leases([1, 99], worker=WORKER, lease_until=at(100)) == 1
    assert task(store, 1).lease_until == at(100)
    assert store.recover_expired_leases(now=at(50), max_attempts={ROUTE: 3}) == 1
    assert [status_of(store, 1), status_of(store, 2)] == [Status.PROCESSING, Status.NEW]
    # a recovered task's lease cannot be extended by its old worker
    assert store.extend_leases([2], worker=WORKER, lease_until=at(200)) == 0
    assert settle(store, 2, Action.DELIVERED, now=at(51)) == 0
    assert settle(store, 1, Action.DELIVERED, now=at(51)) == 1
    assert_counters_exact(store)


def test_release_gives_back_unstarted_work(store: Store) -> None:
    imp(store, [item("a"), item("b")])
    claim(store, now=at(0))
    assert store.release([1, 2, 42], worker="other", now=at(1)) == 0
    assert store.release([1], worker=WORKER, now=at(1)) == 1
    t = task(store, 1)
    assert (t.status, t.attempts, t.lease_until) == (Status.NEW, 0, None)
    [line] = store.task_logs(1)
    assert (line.phase, line.actor, line.from_status, line.to_status) == (
        "system",
        WORKER,
        Status.PROCESSING,
        Status.NEW,
    )
    assert line.details == {"claimed_from": "new"}  # the timeline shows it was claimed from new
    assert store.release([1], worker=WORKER, now=at(2)) == 0
    assert [x.id for x in claim(store, now=at(2))] == [1]
    assert task(store, 1).attempts == 1
    assert_counters_exact(store)
    assert_logs_obey_transitions(store, 1)


def test_a_task_claimed_from_retry_is_released_back_to_retry(store: Store) -> None:
    """A worker stopping before it started a retry gives it back as a retry: due at once, its attempts and its
    last error kept, so the operator still sees that it failed before."""
    imp(store, [item("a"), item("b")])
    claim(store, now=at(0))
    assert settle(store, 1, Action.SCHEDULE_RETRY, now=at(1), error="HTTP 503", next_attempt_at=at(30)) == 1
    assert settle(store, 2, Action.DELIVERED, now=at(1)) == 1
    [claimed] = claim(store, now=at(31))
    assert (claimed.id, claimed.claimed_from, claimed.attempts) == (1, Status.RETRY, 2)
    assert store.release([1], worker=WORKER, now=at(32), retries={1}) == 1
    t = task(store, 1)
    assert (t.status, t.attempts, t.error, t.lease_until, t.next_attempt_at) == (
        Status.RETRY,
        1,
        "HTTP 503",
        None,
        at(32),
    )
    line = store.task_logs(1)[-1]
    assert (line.from_status, line.to_status, line.message) == (Status.PROCESSING, Status.RETRY, "released unstarted")
    assert line.details == {"claimed_from": "retry"}
    assert store.stats(ROUTE).by_status["retry"] == 1
    # due again at once, and claimed from retry again
    [again] = claim(store, now=at(32))
    assert (again.id, again.claimed_from, again.attempts) == (1, Status.RETRY, 2)
    assert_counters_exact(store)
    assert_logs_obey_transitions(store, 1)


def test_released_realtime_task_is_claimable(store: Store) -> None:
    imp(store, [item("a", 1, Status.PROCESSING)], worker="rt", lease_until=at(60))
    assert store.release([1], worker="rt", now=at(1)) == 1
    t = task(store, 1)
    assert (t.status, t.attempts) == (Status.NEW, 0)
    assert [x.id for x in claim(store, now=at(2))] == [1]


def test_recovered_realtime_task_is_claimable(store: Store) -> None:
    imp(store, [item("a", 1, Status.PROCESSING)], worker="rt", lease_until=at(60))
    assert store.recover_expired_leases(now=at(61), max_attempts={ROUTE: 3}) == 1
    assert status_of(store, 1) is Status.NEW
    [t] = claim(store, now=at(62))
    assert t.attempts == 2
    assert store.count_tasks(TaskFilter(statuses=[Status.PROCESSING])) == 1
