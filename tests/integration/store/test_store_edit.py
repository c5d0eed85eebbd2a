"""edit_task: replay a task with a corrected entity, one transaction, on every backend."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from store_helpers import (
    ROUTE,
    assert_counters_exact,
    assert_logs_obey_transitions,
    at,
    claim,
    imp,
    item,
    rejected,
    settle,
    status_of,
    task,
)
from test_store_actions import make_one_of_each

from crossdock.errors import TaskNotFound, TransitionRefused
from crossdock.store.base import Store, TaskEdit, TaskFilter
from crossdock.store.events import LedgerEvent, TaskEdited
from crossdock.store.ledger import EDIT_SKIPS, subscribed
from crossdock.tasks import ALL_STATUSES, Action, Status
from crossdock.timeline import timeline

DIFF = [{"path": "v", "old": '"bad"', "new": '"good"'}]


def edit_of(entity: dict[str, Any], identifier: str | None = "a", reason: str | None = None) -> TaskEdit:
    body = orjson.dumps(entity, option=orjson.OPT_SORT_KEYS)
    # the store helpers' fingerprint, so an import of the same entity compares equal
    return TaskEdit(body, hashlib.sha256(body).digest()[:16], identifier, DIFF, reason)


def failed_task(store: Store, identifier: str = "a", data: Any = "bad") -> int:
    [created] = imp(store, [item(identifier, data)]).created_ids
    [t] = claim(store)
    assert settle(store, t.id, Action.DELIVERY_FAILED, error="422: category") == 1
    return created


def test_a_failed_task_is_skipped_and_replayed_as_a_new_linked_task(store: Store) -> None:
    original = failed_task(store)
    heard: list[LedgerEvent] = []
    with subscribed(store, heard.append):
        result = store.edit_task(
            original, edit_of({"id": "a", "v": "good"}, reason="fix v"), actor="alice", now=at(10), audit_actor="cli:a"
        )
    new = result.task_id
    assert new > original
    assert (result.original_before, result.original_after, result.superseded) == (Status.FAILED, Status.SKIPPED, 0)
    old = task(store, original)
    assert (old.status, old.related_task_id) == (Status.SKIPPED, new)
    assert old.error == f"edited as task {new} by alice: fix v"
    replay = task(store, new)
    assert (replay.status, replay.identifier, replay.entity, replay.related_task_id) == (
        Status.NEW,
        "a",
        {"id": "a", "v": "good"},
        original,
    )
    assert (replay.attempts, replay.next_attempt_at, replay.error) == (0, at(10), None)
    [line] = store.task_logs(new)
    assert (line.phase, line.actor, line.from_status, line.to_status) == ("action", "alice", None, Status.NEW)
    assert line.message == f"edited from task {original} by alice: fix v"
    assert line.details == {"edited_from": original, "changes": DIFF}
    last = store.task_logs(original)[-1]
    assert (last.from_status, last.to_status, last.details["edited_as"]) == (Status.FAILED, Status.SKIPPED, new)
    assert last.details["changes"] == DIFF
    [audit] = store.list_audit(limit=1)
    assert (audit.actor, audit.action, audit.changed) == ("cli:a", "task.edit", 1)
    assert audit.target == {"ids": [original], "edited_as": new, "route": ROUTE}
    assert audit.detail == 'fix v (v: "bad" → "good")'
    assert [e for e in heard if isinstance(e, TaskEdited)] == [
        TaskEdited("cli:a", ROUTE, original, new, Status.FAILED, Status.SKIPPED, ("v",))
    ]
    assert_counters_exact(store)
    assert_logs_obey_transitions(store, original)
    # the replay is due: a worker claims it with the edited entity
    [claimed] = claim(store, now=at(11))
    assert (claimed.id, claimed.entity) == (new, {"id": "a", "v": "good"})


@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if s is not Status.PROCESSING])
def test_every_status_but_processing_can_be_edited_and_only_skippable_ones_move(store: Store, status: Status) -> None:
    ids = make_one_of_each(store)
    original = ids[status]
    identifier = task(store, original).identifier
    result = store.edit_task(original, edit_of({"id": identifier, "v": 2}, identifier), actor="bob", now=at(5))
    expected = Status.SKIPPED if status in EDIT_SKIPS else status
    assert status_of(store, original) is expected
    assert result.original_after is expected
    assert status_of(store, result.task_id) is Status.NEW
    if status not in EDIT_SKIPS:
        line = store.task_logs(original)[-1]
        assert (line.from_status, line.to_status) == (None, None)
        assert line.message == f"edited as task {result.task_id} by bob; this task stays {status.value}"
    for s, i in ids.items():
        if i != original:
            assert status_of(store, i) is s
    assert_counters_exact(store)


def test_a_processing_task_is_refused_and_nothing_is_written(store: Store) -> None:
    imp(store, [item("a")])
    [t] = claim(store)

    def state() -> tuple[Any, ...]:
        return store.stats().to_json(), store.list_audit(), store.task_logs(t.id), store.count_tasks(TaskFilter())

    before = state()
    with pytest.raises(TransitionRefused, match="processing: a worker is delivering it"):
        store.edit_task(t.id, edit_of({"id": "a", "v": 1}), actor="x", now=at(1))
    assert state() == before
    with pytest.raises(TaskNotFound, match="no task with id 99"):
        store.edit_task(99, edit_of({"id": "a", "v": 1}), actor="x", now=at(1))
    assert store.count_tasks(TaskFilter()) == before[3]


def test_the_replay_keeps_the_source_records_fingerprint_so_polling_it_again_does_not_undo_the_fix(
    store: Store,
) -> None:
    original = failed_task(store)
    kept = bytes.fromhex(task(store, original).fingerprint or "")
    body = orjson.dumps({"id": "a", "v": "good"}, option=orjson.OPT_SORT_KEYS)
    # what engine/task_edit.py builds: the edited entity with the fingerprint of the record as the source sent it
    result = store.edit_task(original, TaskEdit(body, kept, "a", DIFF, None), actor="x", now=at(1))
    assert task(store, result.task_id).fingerprint == kept.hex()
    # the source's unchanged (bad) record polled again: unchanged, the replay only touched, nothing resent
    counts = imp(store, [item("a", "bad")], now=at(2))
    assert (counts.unchanged, counts.created) == (1, {})
    assert task(store, result.task_id).seen_count == 2
    assert status_of(store, result.task_id) is Status.NEW
    # the source changes the record: a change, which supersedes the unsent replay as any newer version does
    counts = imp(store, [item("a", "fixed at the source")], now=at(3))
    assert counts.changed == 1
    [newest] = counts.created_ids
    assert status_of(store, result.task_id) is Status.SKIPPED
    assert task(store, result.task_id).related_task_id == newest
    assert_counters_exact(store)


def test_an_older_due_copy_of_the_record_is_superseded_by_the_replay(store: Store) -> None:
    original = failed_task(store)
    [due] = imp(store, [item("a", "newer but still wrong")], now=at(1)).created_ids
    assert status_of(store, due) is Status.NEW
    result = store.edit_task(original, edit_of({"id": "a", "v": "good"}), actor="x", now=at(2))
    assert result.superseded == 1
    assert status_of(store, due) is Status.SKIPPED
    assert task(store, due).error == f"superseded by task {result.task_id}"
    [claimed] = claim(store, now=at(3))
    assert claimed.id == result.task_id
    assert_counters_exact(store)


def test_a_rejected_record_without_identifier_gets_the_edited_one(store: Store) -> None:
    [original] = imp(store, [rejected("identifier id is missing")]).created_ids
    result = store.edit_task(original, edit_of({"id": "z", "v": 1}, identifier="z"), actor="x", now=at(1))
    assert status_of(store, original) is Status.REJECTED
    replay = task(store, result.task_id)
    assert (replay.identifier, replay.status, replay.related_task_id) == ("z", Status.NEW, original)
    assert store.cache_show(ROUTE, "z") is not None
    assert_counters_exact(store)
    # the timelines: the original still begins with its rejection; the replay begins with the edit, not an import
    begins = timeline(task(store, original), store.task_logs(original))
    assert (begins[0].message, begins[0].to_status) == ("identifier id is missing", Status.REJECTED)
    assert begins[-1].message == f"edited as task {result.task_id} by x; this task stays rejected"
    [start] = timeline(replay, store.task_logs(result.task_id))
    assert start.message == f"edited from task {original} by x"
