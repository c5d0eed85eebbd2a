"""list_tasks pagination, count_tasks, get_task(s), task_logs, stats, ensure_routes."""

from __future__ import annotations

from store_helpers import ROUTE, assert_counters_exact, at, claim, imp, item, settle

from crossdock.store.base import Store, TaskFilter, empty_counts
from crossdock.tasks import Action, Status


def test_list_tasks_pages_newest_first_without_gaps_or_duplicates(store: Store) -> None:
    imp(store, [item(str(i)) for i in range(23)])
    imp(store, [item(str(i)) for i in range(5)], route="other")
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = store.list_tasks(TaskFilter(route=ROUTE), limit=5, cursor=cursor)
        pages += 1
        seen += [t.id for t in page]
        assert all(t.route == ROUTE for t in page)
        if cursor is None:
            break
        assert cursor == page[-1].id
    assert pages == 5
    assert seen == list(range(23, 0, -1))
    # an exact multiple of the page size ends without an empty page
    page, cursor = store.list_tasks(TaskFilter(), limit=28)
    assert (len(page), cursor) == (28, None)
    page, cursor = store.list_tasks(TaskFilter(), limit=27)
    assert (len(page), cursor) == (27, 2)
    assert store.list_tasks(TaskFilter(), cursor=1) == ([], None)


def test_pagination_is_stable_while_tasks_are_added(store: Store) -> None:
    imp(store, [item(str(i)) for i in range(10)])
    first, cursor = store.list_tasks(TaskFilter(), limit=4)
    imp(store, [item("late")], now=at(1))
    second, cursor = store.list_tasks(TaskFilter(), limit=4, cursor=cursor)
    assert [t.id for t in first + second] == [10, 9, 8, 7, 6, 5, 4, 3]


def test_list_and_count_by_status(store: Store) -> None:
    imp(store, [item(str(i)) for i in range(6)])
    claim(store, limit=3)
    settle(store, 1, Action.DELIVERED)
    assert store.count_tasks(TaskFilter()) == 6
    assert store.count_tasks(TaskFilter(statuses=[Status.NEW])) == 3
    assert store.count_tasks(TaskFilter(statuses=[Status.NEW, Status.FINISHED])) == 4
    page, cursor = store.list_tasks(TaskFilter(statuses=[Status.PROCESSING]))
    assert ([t.id for t in page], cursor) == ([3, 2], None)
    assert store.count_tasks(TaskFilter(ids=[1, 2, 99])) == 2


def test_get_task_and_get_tasks(store: Store) -> None:
    imp(store, [item("a", {"nested": [1, 2]}), item("b")])
    assert store.get_task(99) is None
    t = store.get_task(1)
    assert t is not None and t.entity == {"id": "a", "v": {"nested": [1, 2]}}
    assert [x.id for x in store.get_tasks([2, 99, 1, 2])] == [1, 2]
    assert store.get_tasks([]) == []
    # the returned task is a copy
    t.status = Status.FAILED
    assert store.get_task(1).status is Status.NEW  # type: ignore[union-attr]


def test_task_logs_in_order(store: Store) -> None:
    imp(store, [item("a")])
    assert store.task_logs(1) == []
    assert store.task_logs(99) == []
    claim(store, now=at(1))
    settle(store, 1, Action.SCHEDULE_RETRY, now=at(2), next_attempt_at=at(3), message="try later")
    claim(store, now=at(3))
    settle(store, 1, Action.DELIVERED_WAITING, now=at(4), message="sent")
    store.apply_action(Action.FINISH, TaskFilter(ids=[1]), actor="dana", reason="ok", now=at(5))
    logs = store.task_logs(1)
    assert [(line.from_status, line.to_status) for line in logs] == [
        (Status.PROCESSING, Status.RETRY),
        (Status.PROCESSING, Status.WAITING),
        (Status.WAITING, Status.FINISHED),
    ]
    assert [line.at for line in logs] == [at(2), at(4), at(5)]
    assert [line.message for line in logs] == ["try later", "sent", "finish by dana: ok"]


def test_stats_by_route_and_status(store: Store) -> None:
    imp(store, [item("a"), item("b"), item("c", status=Status.REJECTED, reason="x")], route="r1")
    imp(store, [item("a")], route="r2")
    claim(store, route="r1", limit=1)
    stats = store.stats()
    assert stats.total == 4
    assert stats.by_status == {**empty_counts(), "new": 2, "processing": 1, "rejected": 1}
    assert stats.by_route == {
        "r1": {**empty_counts(), "new": 1, "processing": 1, "rejected": 1},
        "r2": {**empty_counts(), "new": 1},
    }
    only = store.stats("r2")
    assert (only.total, only.by_status, only.by_route) == (
        1,
        {**empty_counts(), "new": 1},
        {"r2": {**empty_counts(), "new": 1}},
    )
    assert store.stats("nope").total == 0
    assert store.recount() == {
        "r1": {**empty_counts(), "new": 1, "processing": 1, "rejected": 1},
        "r2": {**empty_counts(), "new": 1},
    }
    assert_counters_exact(store)


def test_ensure_routes_lists_empty_routes_with_every_status(store: Store) -> None:
    store.ensure_routes(["empty", "busy"])
    store.ensure_routes(["empty"])  # twice is fine
    imp(store, [item("a")], route="busy")
    stats = store.stats()
    assert stats.by_route == {"empty": empty_counts(), "busy": {**empty_counts(), "new": 1}}
    assert len(stats.by_route["empty"]) == 8
    assert store.stats("empty").by_route == {"empty": empty_counts()}
    assert stats.total == 1
    assert_counters_exact(store)


def test_listings_over_several_statuses_and_routes_match_a_full_scan(store: Store) -> None:
    """SQLite merges one (route, status) index range per pair for these; the result must equal a plain filter."""
    for route in (ROUTE, "other", "third"):
        imp(store, [item(f"{route}-{i}") for i in range(9)], route=route)
    for route, n in ((ROUTE, 4), ("other", 2)):
        claimed = claim(store, limit=n, route=route)
        for task in claimed[: n // 2]:
            settle(store, task.id, Action.DELIVERED)
    everything, _ = store.list_tasks(TaskFilter(), limit=1000)
    selections = [
        TaskFilter(route="other"),
        TaskFilter(statuses=[Status.NEW]),
        TaskFilter(statuses=[Status.FINISHED, Status.PROCESSING]),
        TaskFilter(route=ROUTE, statuses=[Status.NEW, Status.FINISHED]),
        TaskFilter(statuses=[Status.FAILED]),
    ]
    for selection in selections:
        wanted = [
            t.id
            for t in everything
            if (selection.route is None or t.route == selection.route)
            and (not selection.statuses or t.status in selection.statuses)
        ]
        got: list[int] = []
        cursor = None
        while True:
            page, cursor = store.list_tasks(selection, limit=4, cursor=cursor)
            got += [t.id for t in page]
            if cursor is None:
                break
        assert got == wanted, selection
        assert store.count_tasks(selection) == len(wanted), selection


def test_counted_reads_the_counters_and_the_recount_together(store: Store) -> None:
    imp(store, [item(str(i)) for i in range(5)])
    [first, *_] = claim(store, 2)
    settle(store, first.id, Action.DELIVERED, now=at(1))
    stats, recounted = store.counted()
    assert stats.by_route[ROUTE] == recounted[ROUTE] == store.recount()[ROUTE]
    assert (recounted[ROUTE]["new"], recounted[ROUTE]["processing"], recounted[ROUTE]["finished"]) == (3, 1, 1)
    only, _ = store.counted(ROUTE)
    assert only.by_route == {ROUTE: stats.by_route[ROUTE]}
