"""The scheduler with a fake clock and fake jobs: when parts fire, in what order, and who may fire them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crossdock.engine.exporter import Exporter
from crossdock.engine.leader import FileLeaderLock, leader_lock_for
from crossdock.engine.project import CompiledIncoming, CompiledRoute, Project, load_project
from crossdock.engine.scheduler import RETENTION_KEY, EngineJobs, Scheduler, next_fire
from crossdock.engine.slots import PrioritySlots
from crossdock.store.memory import MemoryStore
from crossdock.store.sqlite.store import SQLiteStore
from crossdock.tasks import Status

T0 = datetime(2030, 1, 7, 10, 0, 30, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, hour: int, minute: int, second: int = 0) -> None:
        self.now = self.now.replace(hour=hour, minute=minute, second=second)


class FakeJobs:
    """Records every run; a run can be held open with ``hold`` to test overlap."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.hold: asyncio.Event | None = None

    async def _wait(self) -> None:
        if self.hold is not None:
            await self.hold.wait()

    async def run_incoming(self, incoming: CompiledIncoming) -> Any:
        self.calls.append(("incoming", incoming.name))
        await self._wait()

    async def run_outgoing(self, route: CompiledRoute, limit: int) -> Any:
        self.calls.append(("outgoing", f"{route.name}:{limit}"))
        await self._wait()

    async def prune(self, now: datetime) -> int:
        self.calls.append(("retention", now.isoformat()))
        return 0


def project(tmp_path: Path, routes: str, extra: str = "") -> Project:
    (tmp_path / "data.ndjson").write_text('{"sku": "A"}\n', encoding="utf-8")
    (tmp_path / "crossdock.yaml").write_text(
        f"database: sqlite:///crossdock.db\n{extra}routes:\n{routes}", encoding="utf-8"
    )
    return load_project(tmp_path / "crossdock.yaml")


def route(name: str, *, incoming: str | None = None, outgoing: str | None = None, **options: str) -> str:
    lines = [f"  {name}:", "    incoming:", "      source: {type: file, path: data.ndjson}"]
    if incoming:
        lines.append(f'      schedule: "{incoming}"')
    lines += ["    identifier: sku", "    outgoing:", "      target: {type: noop}", "      batch_size: 25"]
    if outgoing:
        lines.append(f'      schedule: "{outgoing}"')
    lines += [f"    {k}: {v}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def scheduler(proj: Project, store: Any, jobs: FakeJobs, clock: FakeClock, **kw: Any) -> Scheduler:
    return Scheduler(proj, store, jobs, clock=clock, **kw)


async def tick(s: Scheduler) -> list[str]:
    fired = await s.tick()
    await s.wait_idle()
    return [f.part.label for f in fired]


def fired_parts(calls: Sequence[tuple[str, str]]) -> list[str]:
    return [kind for kind, _ in calls if kind != "retention"]


async def test_first_start_stores_the_next_fire_and_runs_nothing(tmp_path: Path) -> None:
    proj = project(tmp_path, route("a", incoming="*/5 * * * *", outgoing="0 * * * *"))
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    s = scheduler(proj, store, jobs, clock)
    assert await tick(s) == []
    state = store.route_states()["a"]
    assert state.incoming_next == datetime(2030, 1, 7, 10, 5, tzinfo=UTC)
    assert state.outgoing_next == datetime(2030, 1, 7, 11, 0, tzinfo=UTC)
    assert store.route_states()[RETENTION_KEY].incoming_next == datetime(2030, 1, 8, 3, 17, tzinfo=UTC)
    assert jobs.calls == []


async def test_due_part_fires_and_moves_its_next_fire(tmp_path: Path) -> None:
    proj = project(tmp_path, route("a", incoming="*/5 * * * *", outgoing="*/10 * * * *"))
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    s = scheduler(proj, store, jobs, clock)
    await tick(s)
    clock.set(10, 5, 1)
    assert await tick(s) == ["a incoming"]
    assert store.route_states()["a"].incoming_next == datetime(2030, 1, 7, 10, 10, tzinfo=UTC)
    clock.set(10, 10, 0)
    assert await tick(s) == ["a incoming", "a outgoing"]
    # outgoing runs are capped by the route's batch_size
    assert jobs.calls[-1] == ("outgoing", "a:25")


async def test_missed_schedule_runs_once_after_downtime(tmp_path: Path) -> None:
    proj = project(tmp_path, route("a", incoming="*/5 * * * *"))
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    await tick(scheduler(proj, store, jobs, clock))
    # the process is down from 10:00:30 to 13:02: 36 slots are missed
    clock.set(13, 2, 0)
    restarted = scheduler(proj, store, jobs, clock)
    assert await tick(restarted) == ["a incoming"]
    assert await tick(restarted) == []
    assert jobs.calls == [("incoming", "a")]
    # the next fire counts from now, not from the missed slot
    assert store.route_states()["a"].incoming_next == datetime(2030, 1, 7, 13, 5, tzinfo=UTC)


async def test_no_overlapping_runs_of_one_part(tmp_path: Path) -> None:
    proj = project(tmp_path, route("a", incoming="* * * * *"))
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    jobs.hold = asyncio.Event()
    s = scheduler(proj, store, jobs, clock)
    await s.tick()
    clock.set(10, 1, 0)
    first = await s.tick()
    assert [f.part.label for f in first] == ["a incoming"]
    await asyncio.sleep(0)
    clock.set(10, 2, 0)
    assert await s.tick() == []  # still running: this slot is skipped
    assert jobs.calls == [("incoming", "a")]
    jobs.hold.set()
    await s.wait_idle()
    clock.set(10, 3, 0)
    assert [f.part.label for f in await s.tick()] == ["a incoming"]
    await s.wait_idle()
    assert jobs.calls == [("incoming", "a")] * 2


async def test_priority_orders_the_due_parts(tmp_path: Path) -> None:
    routes = (
        route("low-one", incoming="* * * * *", priority="low")
        + route("high-one", incoming="* * * * *", priority="high")
        + route("mid-one", incoming="* * * * *")
    )
    proj = project(tmp_path, routes)
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    s = scheduler(proj, store, jobs, clock, parallel_runs=1)
    await tick(s)
    clock.set(10, 1, 0)
    await tick(s)
    assert jobs.calls == [("incoming", "high-one"), ("incoming", "mid-one"), ("incoming", "low-one")]


async def test_outgoing_waits_for_the_incoming_of_the_same_tick(tmp_path: Path) -> None:
    proj = project(tmp_path, route("a", incoming="* * * * *", outgoing="* * * * *"))
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    jobs.hold = asyncio.Event()
    s = scheduler(proj, store, jobs, clock, parallel_runs=4)
    await s.tick()
    clock.set(10, 1, 0)
    await s.tick()
    for _ in range(5):
        await asyncio.sleep(0)
    assert jobs.calls == [("incoming", "a")]
    jobs.hold.set()
    await s.wait_idle()
    assert jobs.calls == [("incoming", "a"), ("outgoing", "a:25")]


async def test_inactive_route_is_skipped_and_the_database_override_wins(tmp_path: Path) -> None:
    routes = route("live", incoming="* * * * *") + route("paused", incoming="* * * * *", active="false")
    proj = project(tmp_path, routes)
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    s = scheduler(proj, store, jobs, clock)
    await tick(s)
    clock.set(10, 1, 0)
    assert await tick(s) == ["live incoming"]
    store.set_route_active("live", False, now=clock())
    store.set_route_active("paused", True, now=clock())
    clock.set(10, 2, 0)
    assert await tick(s) == ["paused incoming"]
    assert jobs.calls == [("incoming", "live"), ("incoming", "paused")]


async def test_retention_fires_on_its_cron(tmp_path: Path) -> None:
    extra = 'retention: {schedule: "30 10 * * *", finished: 1d}\n'
    proj = project(tmp_path, route("a"), extra)
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    s = scheduler(proj, store, jobs, clock)
    await tick(s)
    clock.set(10, 29, 59)
    assert await tick(s) == []
    clock.set(10, 30, 0)
    assert await tick(s) == ["retention"]
    assert [k for k, _ in jobs.calls] == ["retention"]
    assert store.route_states()[RETENTION_KEY].incoming_next == datetime(2030, 1, 8, 10, 30, tzinfo=UTC)


class PruneRecorder(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.pruned: list[dict[Status, datetime]] = []

    def prune_ages(
        self,
        cutoffs: Mapping[Status, datetime],
        *,
        route: str | None = None,
        batch_size: int = 5000,
        actor: str = "retention",
    ) -> int:
        self.pruned.append(dict(cutoffs))
        return 4


async def test_retention_prunes_each_status_by_its_own_age(tmp_path: Path) -> None:
    extra = "retention: {finished: 1d, skipped: 2d, failed: 3d, rejected: 4d}\n"
    proj = project(tmp_path, route("a"), extra)
    store = PruneRecorder()
    exporter = Exporter(proj, store)
    try:
        deleted = await EngineJobs(proj, store, exporter).prune(T0)
    finally:
        await exporter.close()
    assert deleted == 4
    # one pass with each status's own cutoff (on PostgreSQL a partition goes whole when all its tasks are due)
    assert store.pruned == [
        {
            Status.FINISHED: T0 - timedelta(days=1),
            Status.SKIPPED: T0 - timedelta(days=2),
            Status.FAILED: T0 - timedelta(days=3),
            Status.REJECTED: T0 - timedelta(days=4),
        }
    ]


async def test_only_the_leader_fires_and_a_follower_takes_over(tmp_path: Path) -> None:
    proj = project(tmp_path, route("a", incoming="* * * * *"))
    db = tmp_path / "crossdock.db"
    store_a, store_b = SQLiteStore(db), SQLiteStore(db)
    try:
        jobs_a, jobs_b, clock = FakeJobs(), FakeJobs(), FakeClock()
        a = scheduler(proj, store_a, jobs_a, clock)
        b = scheduler(proj, store_b, jobs_b, clock)
        assert isinstance(a.lock, FileLeaderLock)
        await tick(a)
        await tick(b)
        assert a.is_leader and not b.is_leader
        for minute in (1, 2, 3):
            clock.set(10, minute, 0)
            await tick(a)
            await tick(b)
        assert jobs_a.calls == [("incoming", "a")] * 3
        assert jobs_b.calls == []
        # the leader goes away; the follower reads the stored next fire and continues
        a.lock.release()
        clock.set(10, 4, 0)
        assert await tick(b) == ["a incoming"]
        assert b.is_leader
        assert await tick(a) == []
        assert jobs_a.calls == [("incoming", "a")] * 3
        assert jobs_b.calls == [("incoming", "a")]
    finally:
        store_a.close()
        store_b.close()
        a.lock.release()
        b.lock.release()


def test_leader_lock_for_memory_store_is_the_store_default() -> None:
    lock = leader_lock_for(MemoryStore())
    assert lock.acquire() and lock.held
    lock.release()
    assert not lock.held


def test_six_field_cron_has_seconds_last() -> None:
    assert next_fire("* * * * * */2", T0) == T0 + timedelta(seconds=2)


async def test_priority_slots_wake_the_highest_priority_first() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    await slots.acquire()

    async def take(name: str, priority: int) -> None:
        async with slots.slot(priority):
            order.append(name)

    waiters = [asyncio.create_task(take(n, p)) for n, p in (("low", 0), ("high", 10), ("mid", 5))]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*waiters)
    assert order == ["high", "mid", "low"]
    assert slots.in_use == 0


async def test_a_maintenance_window_skips_due_parts_instead_of_queueing_them(tmp_path: Path) -> None:
    # 10:00-10:30 nothing is delivered; 10:10-10:20 nothing is imported either
    windows = (
        "\n      - {cron: '0 10 * * *', duration: 30m}\n      - {cron: '10 10 * * *', duration: 10m, imports: false}"
    )
    proj = project(tmp_path, route("a", incoming="*/5 * * * *", outgoing="*/5 * * * *", maintenance=windows))
    store, jobs, clock = MemoryStore(), FakeJobs(), FakeClock()
    s = scheduler(proj, store, jobs, clock)
    await tick(s)
    clock.set(10, 5, 1)
    assert await tick(s) == ["a incoming"], "in the window: imports go on, deliveries do not"
    clock.set(10, 10, 1)
    assert await tick(s) == [], "imports: false stops the import too"
    clock.set(10, 15, 1)
    assert await tick(s) == []
    clock.set(10, 25, 1)
    assert await tick(s) == ["a incoming"]
    assert store.route_states()["a"].outgoing_next == datetime(2030, 1, 7, 10, 30, tzinfo=UTC), "skipped, not queued"
    clock.set(10, 30, 1)
    assert await tick(s) == ["a incoming", "a outgoing"], "the window is over"
    assert fired_parts(jobs.calls) == ["incoming", "incoming", "incoming", "outgoing"]
