"""Small builders and checks shared by the store tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from crossdock.store.base import ImportCounts, ImportItem, ImportOptions, Settlement, Store, empty_counts
from crossdock.tasks import TRANSITIONS, Action, Status, Task

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ROUTE = "products"
WORKER = "w1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def item(
    identifier: str | None,
    data: Any = None,
    status: Status = Status.NEW,
    reason: str | None = None,
) -> ImportItem:
    entity = {"id": identifier, "v": data}
    body = orjson.dumps(entity, option=orjson.OPT_SORT_KEYS)
    return ImportItem(
        status=status,
        identifier=identifier,
        entity=body,
        fingerprint=hashlib.sha256(body).digest()[:16],
        reason=reason,
    )


def rejected(reason: str = "no identifier", raw: str = "{broken") -> ImportItem:
    return ImportItem(status=Status.REJECTED, identifier=None, entity=None, fingerprint=None, reason=reason, raw=raw)


def imp(
    store: Store,
    items: Iterable[ImportItem],
    now: datetime = T0,
    route: str = ROUTE,
    run_id: int | None = None,
    **options: Any,
) -> ImportCounts:
    return store.import_batch(route, list(items), run_id=run_id, options=ImportOptions(**options), now=now)


def claim(
    store: Store,
    limit: int = 100,
    now: datetime = T0,
    worker: str = WORKER,
    lease: float = 60,
    route: str = ROUTE,
) -> list[Task]:
    return store.claim_due_tasks(route, limit, worker=worker, lease_until=now + timedelta(seconds=lease), now=now)


def settle(store: Store, task_id: int, action: Action, now: datetime = T0, worker: str = WORKER, **fields: Any) -> int:
    return store.settle([Settlement(task_id=task_id, action=action, worker=worker, **fields)], now=now)


def task(store: Store, task_id: int) -> Task:
    t = store.get_task(task_id)
    assert t is not None, f"task {task_id} is gone"
    return t


def status_of(store: Store, task_id: int) -> Status:
    return task(store, task_id).status


def assert_counters_exact(store: Store) -> None:
    """The counters (stats) equal COUNT(*) (recount), per route and status, and in total."""
    stats = store.stats()
    recount = store.recount()
    for route in set(stats.by_route) | set(recount):
        assert stats.by_route.get(route, empty_counts()) == recount.get(route, empty_counts()), route
    totals = empty_counts()
    for counts in recount.values():
        for s, n in counts.items():
            totals[s] += n
    assert stats.by_status == totals
    assert stats.total == sum(totals.values())


def assert_logs_obey_transitions(store: Store, task_id: int) -> None:
    allowed = {(src, rule.target) for rule in TRANSITIONS.values() for src in rule.sources}
    for line in store.task_logs(task_id):
        if line.from_status is None and line.to_status is None:
            continue
        assert (line.from_status, line.to_status) in allowed, (task_id, line)
