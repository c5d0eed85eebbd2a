"""SQLite decides the unchanged records of a catalogue poll inside SQL (``touch_unchanged``), a shortcut past the
import plan. Whatever a batch holds, the outcome must be the plan's: two stores, one that always tries the shortcut
first and one that never does, run the stateful store test in lockstep and must agree on every answer and every row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis.stateful import rule
from store_helpers import ROUTE, T0, claim, imp, item, rejected, settle
from test_store_stateful import IDENTS, ROUTES, STATEFUL_SETTINGS, StoreMachine

import crossdock.store.sqlite.store as sqlite_module
from crossdock.store.base import ImportOptions, Store
from crossdock.store.sqlfiles import load_queries
from crossdock.store.sqlite.store import Q, SQLiteStore
from crossdock.tasks import POLLED, TOUCH_ON_SAME, Action, Status


class _Always(dict[str, bool]):
    """A ``_touch_first`` hint that ignores what the store learns and always answers ``value``."""

    def __init__(self, value: bool) -> None:
        super().__init__()
        self.value = value

    def get(self, key: str, default: Any = None) -> bool:  # type: ignore[override]
        return self.value

    def __setitem__(self, key: str, value: bool) -> None:
        pass


def _rows(store: SQLiteStore) -> tuple[list[Any], ...]:
    return (
        store._read("SELECT * FROM tasks ORDER BY id"),
        store._read("SELECT * FROM task_logs ORDER BY id"),
        store._read("SELECT * FROM counters ORDER BY route, status"),
        store._read("SELECT * FROM task_seen ORDER BY task_id"),
    )


class TwinStore:
    """Every call goes to both stores; answers and resulting rows must be equal."""

    def __init__(self, shortcut: SQLiteStore, plan_only: SQLiteStore) -> None:
        shortcut._touch_first = _Always(True)
        plan_only._touch_first = _Always(False)
        self.stores = (shortcut, plan_only)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        first, second = (getattr(s, name) for s in self.stores)

        def both(*args: Any, **kwargs: Any) -> Any:
            answer = first(*args, **kwargs)
            assert answer == second(*args, **kwargs), name
            if name != "close":
                assert _rows(self.stores[0]) == _rows(self.stores[1]), name
            return answer

        return both


class TwinMachine(StoreMachine):
    def open_store(self) -> Store:
        return TwinStore(SQLiteStore(self.tmp / "shortcut.db"), SQLiteStore(self.tmp / "plan.db"))  # type: ignore[return-value]

    @rule(
        route=st.sampled_from(ROUTES),
        idents=st.lists(st.sampled_from(IDENTS), min_size=1, max_size=len(IDENTS), unique=True),
        data=st.lists(st.integers(0, 2), min_size=len(IDENTS), max_size=len(IDENTS)),
        intents=st.lists(
            st.sampled_from([Status.NEW, Status.NEW, Status.NEW, Status.SKIPPED, Status.REJECTED]),
            min_size=len(IDENTS),
            max_size=len(IDENTS),
        ),
        unkeyed=st.booleans(),
        realtime=st.booleans(),
        supersede=st.booleans(),
    )
    def poll(
        self,
        route: str,
        idents: list[str],
        data: list[int],
        intents: list[Status],
        unkeyed: bool,
        realtime: bool,
        supersede: bool,
    ) -> None:
        """A batch the shortcut can take: distinct identifiers; filtered, rejected and identifier-less records among
        them are left to the plan."""
        items = []
        for n, ident in enumerate(idents):
            status = Status.PROCESSING if realtime and intents[n] is Status.NEW else intents[n]
            items.append(item(ident, data[n], status, reason=None if status in POLLED else status.value))
        if unkeyed:  # without an identifier: with content (compared by it) or without
            items.insert(len(items) // 2, item(None, data[0], Status.REJECTED, "no id") if data[0] else rejected())
        options = ImportOptions(
            supersede=supersede,
            worker="rt" if realtime else None,
            lease_until=self.now + timedelta(seconds=30) if realtime else None,
        )
        self.store.import_batch(route, items, run_id=None, options=options, now=self.now)


TestPollShortcutAgreesWithPlan = STATEFUL_SETTINGS(TwinMachine).TestCase


def test_shortcut_statuses_come_from_touch_on_same() -> None:
    """The shortcut's status list is written from tasks.TOUCH_ON_SAME, so it cannot drift from the rule."""
    raw = load_queries("crossdock.store.sqlite")
    for name in ("touch_unchanged", "latest_untouched"):
        assert "{touch_on_same}" in raw[name] and not any(f"'{s.value}'" in raw[name] for s in Status), name
        listed = re.search(r"t\.status IN \(([^)]*)\)", Q[name])
        assert listed is not None, name
        assert {Status(s.strip(" '")) for s in listed.group(1).split(",")} == TOUCH_ON_SAME, name


def test_a_poll_of_unchanged_records_adds_no_row_and_the_next_batch_tries_the_shortcut_first(
    sqlite_store: SQLiteStore,
) -> None:
    imp(sqlite_store, [item(str(i)) for i in range(300)])
    assert sqlite_store._touch_first[ROUTE] is False  # a first import: nothing was the same
    counts = imp(sqlite_store, [item(str(i)) for i in range(300)], now=T0 + timedelta(seconds=5))
    assert counts.unchanged == 300 and counts.created_ids == []
    assert sqlite_store._touch_first[ROUTE] is True
    tasks = sqlite_store.get_tasks(range(1, 301))
    assert {t.seen_count for t in tasks} == {2} and {t.last_seen_at for t in tasks} == {T0 + timedelta(seconds=5)}
    # the touch is a narrow task_seen row; the task row is not rewritten
    assert sqlite_store._read("SELECT count(*), max(seen_count) FROM tasks") == [(300, 1)]
    # 1 in 10 changed, and 20 never seen: the shortcut touches the rest, the plan decides these 50
    batch = [item(str(i), "v2" if i % 10 == 0 else None) for i in range(320)]
    counts = imp(sqlite_store, batch, now=T0 + timedelta(seconds=9))
    assert (counts.unchanged, counts.changed, counts.created.get("new")) == (270, 30, 50)
    assert sum(t.seen_count == 3 for t in sqlite_store.get_tasks(range(1, 301))) == 270
    assert sqlite_store._touch_first[ROUTE] is True


@pytest.mark.parametrize("latest_status", list(Status))
@pytest.mark.parametrize("same", [True, False])
def test_each_latest_status_gets_the_plans_outcome(tmp_path: Path, latest_status: Status, same: bool) -> None:
    twin = TwinStore(SQLiteStore(tmp_path / "shortcut.db"), SQLiteStore(tmp_path / "plan.db"))
    twin.import_batch(ROUTE, [item(str(i)) for i in range(5)], run_id=None, options=ImportOptions(), now=T0)
    for store in twin.stores:
        # straight to the status under test (leases and counters do not matter to the import decision)
        store._conn.execute("UPDATE tasks SET status = ? WHERE identifier = '2'", (latest_status.value,))
    batch = [item(str(i), None if same or i != 2 else "changed") for i in range(5)]
    counts = twin.import_batch(ROUTE, batch, run_id=None, options=ImportOptions(), now=T0 + timedelta(seconds=1))
    # every record was either touched or became a task
    assert counts.unchanged + sum(counts.created.values()) == 5


def test_pruned_tasks_leave_no_seen_rows_behind(sqlite_store: SQLiteStore) -> None:
    imp(sqlite_store, [item(str(i)) for i in range(50)])
    imp(sqlite_store, [item(str(i)) for i in range(50)], now=T0 + timedelta(seconds=1))
    assert sqlite_store._read("SELECT count(*) FROM task_seen") == [(50,)]
    for t in claim(sqlite_store, 20, now=T0 + timedelta(seconds=2)):
        settle(sqlite_store, t.id, Action.DELIVERED, now=T0 + timedelta(seconds=2))
    # newer data makes them prunable (the latest task of an identifier is kept for the delta cache)
    imp(sqlite_store, [item(str(i), "v2") for i in range(20)], now=T0 + timedelta(seconds=3))
    assert sqlite_store.prune(older_than=T0 + timedelta(days=1), statuses=[Status.FINISHED]) == 20
    assert sqlite_store._read("SELECT count(*), min(task_id) FROM task_seen") == [(30, 21)]


def test_filtered_records_in_a_poll_leave_the_rest_to_the_shortcut(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = sqlite_module._touch_unchanged

    def counting(*args: Any) -> Any:
        touched, rest, latest = real(*args)
        calls.append(touched)
        return touched, rest, latest

    monkeypatch.setattr(sqlite_module, "_touch_unchanged", counting)
    imp(sqlite_store, [item(str(i)) for i in range(100)])
    sqlite_store._touch_first[ROUTE] = True
    batch = [item(str(i), status=Status.SKIPPED, reason="out") if i % 10 == 0 else item(str(i)) for i in range(100)]
    counts = imp(sqlite_store, batch, now=T0 + timedelta(seconds=5))
    assert calls[-1] == 90  # the shortcut touched the 90 unchanged records; the plan took the 10 filtered ones
    assert counts.unchanged == 90
    assert {t.seen_count for t in sqlite_store.get_tasks(range(1, 101)) if int(t.identifier or 0) % 10} == {2}
