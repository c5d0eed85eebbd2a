"""The pieces that let crossdock ride out a database outage and a dead process: the store guard and its health,
waiting for the store, group commit of delivery results, and telling a dead run from a live one."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crossdock.engine.group_commit import GroupCommit
from crossdock.engine.run_liveness import STALE_AFTER, abandon_dead_runs, death_of
from crossdock.errors import StoreUnavailable, describe_error
from crossdock.store import Settlement
from crossdock.store.base import ImportItem, ImportOptions, Run
from crossdock.store.health import wait_for_store
from crossdock.store.memory import MemoryStore
from crossdock.tasks import Action, Status

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FlakyStore(MemoryStore):
    """A memory store whose next ``outages`` calls of ``stats`` and ``settle`` fail as a locked SQLite file does."""

    def __init__(self) -> None:
        super().__init__()
        self.outages = 0
        self.settle_calls: list[int] = []

    def _unavailable_reason(self, exc: Exception) -> str | None:
        locked = isinstance(exc, sqlite3.OperationalError) and str(exc) == "database is locked"
        return f"test database: {exc}" if locked else None

    def _fail_if_down(self) -> None:
        if self.outages > 0:
            self.outages -= 1
            raise sqlite3.OperationalError("database is locked")

    def stats(self, route: str | None = None) -> Any:
        self._fail_if_down()
        return super().stats(route)

    def settle(self, settlements: Any, *, now: datetime) -> int:
        self._fail_if_down()
        self.settle_calls.append(len(settlements))
        return super().settle(settlements, now=now)

    def broken(self) -> None:
        raise sqlite3.OperationalError("no such table: nowhere")


def test_driver_errors_that_mean_not_now_become_store_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    store.outages = 3
    caplog.set_level(logging.WARNING, logger="crossdock.store")
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="test database: database is locked"):
            store.stats()
    assert not store.health.up
    assert store.health.reason == "test database: database is locked"
    store.stats()
    assert store.health.up
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, "an outage is logged once when it starts and once when it ends"
    assert messages[0].startswith("database unavailable: test database: database is locked")
    assert messages[1].startswith("database available again after")
    # an error that means "wrong", not "not now", stays what it is
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.broken()
    assert store.health.up


def test_wait_for_store_rides_out_an_outage_and_gives_up_when_told() -> None:
    store = FlakyStore()
    store.outages = 3
    assert asyncio.run(wait_for_store(lambda: store.stats().total)) == 0
    store.outages = 100
    with pytest.raises(StoreUnavailable):
        asyncio.run(wait_for_store(lambda: store.stats().total, give_up_after=0.3))
    with pytest.raises(StoreUnavailable):
        asyncio.run(wait_for_store(lambda: store.stats().total, stopping=lambda: True))


def _claimed(store: MemoryStore, n: int) -> list[int]:
    items = [ImportItem(Status.NEW, f"k{i}", b"{}", bytes(16)) for i in range(n)]
    store.import_batch("r", items, run_id=None, options=ImportOptions(), now=T0)
    tasks = store.claim_due_tasks("r", n, worker="w", lease_until=T0 + timedelta(hours=1), now=T0)
    return [t.id for t in tasks]


def test_group_commit_batches_results_that_arrive_together_and_waits_out_an_outage() -> None:
    store = FlakyStore()
    ids = _claimed(store, 40)

    async def deliver_all() -> GroupCommit:
        group = GroupCommit(store)
        store.outages = 2  # the first commit meets a locked database twice, then lands

        async def one(task_id: int) -> None:
            await asyncio.sleep(0)
            await group.commit([Settlement(task_id, Action.DELIVERED, "w", message="ok")])

        await asyncio.gather(*(one(i) for i in ids))
        return group

    group = asyncio.run(deliver_all())
    assert sorted(s.task_id for s in group.committed) == ids
    assert group.uncommitted == []
    assert sum(store.settle_calls) == 40
    assert len(store.settle_calls) < 40, "results that arrive during a commit go into the next one together"
    assert store.stats().by_status["finished"] == 40


def test_group_commit_submit_does_not_wait_and_drain_waits_for_everything() -> None:
    store = FlakyStore()
    ids = _claimed(store, 30)

    async def deliver_all() -> tuple[int, GroupCommit]:
        group = GroupCommit(store, linger=0.01)
        for task_id in ids:
            group.submit([Settlement(task_id, Action.DELIVERED, "w", message="ok")])
        before = len(group.committed)
        await group.drain()
        return before, group

    before, group = asyncio.run(deliver_all())
    assert before == 0, "submit returns before anything is committed"
    assert len(group.committed) == 30 and group.uncommitted == []
    assert store.settle_calls == [30], "results that linger together are committed together"


def _run(owner: str | None, heartbeat: datetime) -> Run:
    return Run(1, "r", "incoming", T0, None, "running", {}, None, "cli", owner, heartbeat)


def test_a_run_is_dead_when_its_process_is_gone_or_silent_too_long() -> None:
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = T0 + timedelta(seconds=10)
    late = T0 + timedelta(seconds=STALE_AFTER + 10)
    assert death_of(_run(f"{host}:{gone.pid}", T0), now=now, host=host) is not None
    # on this host the process table decides, however old the heartbeat
    assert death_of(_run(f"{host}:{os.getpid()}", T0), now=late, host=host) is None
    assert death_of(_run("elsewhere:1", T0), now=now, host=host) is None
    assert "no sign of life" in (death_of(_run("elsewhere:1", T0), now=late, host=host) or "")
    assert death_of(_run(None, T0), now=late, host=host) is not None


def test_abandon_dead_runs_marks_only_the_dead() -> None:
    store = MemoryStore()
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = store.start_run("r", "incoming", actor="cli", now=T0, owner=f"{host}:{gone.pid}")
    alive = store.start_run("r", "outgoing", actor="cli", now=T0, owner=f"{host}:{os.getpid()}")
    assert abandon_dead_runs(store, now=T0 + timedelta(seconds=1)) == 1
    runs = {r.id: r for r in store.list_runs()}
    assert runs[dead].status == "abandoned"
    assert "is gone" in (runs[dead].error or "") and "reads them again" in (runs[dead].error or "")
    assert runs[alive].status == "running"


def test_describe_error_is_one_line_with_the_cause() -> None:
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise RuntimeError("export broke\nsecond line") from inner
    except RuntimeError as exc:
        text = describe_error(exc)
    assert text == "RuntimeError: export broke (caused by ConnectionResetError: peer reset)"
    assert describe_error(StoreUnavailable("db gone")) == "db gone"
    assert describe_error(FileNotFoundError(2, "No such file or directory", "/x")) == "No such file or directory: /x"
