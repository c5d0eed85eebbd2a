"""Cron schedules for route parts and retention, fired by one leader at a time.

What fires, and when:

- **incoming** parts (a route's own incoming, or a shared incoming once for all its routes) on their
  ``schedule``;
- **outgoing** parts of routes that have an outgoing ``schedule``: one run of at most ``batch_size`` tasks.
  Their due retries go out with the next scheduled run. Routes *without* an outgoing schedule are not
  fired here: workers deliver them continuously, retries included as soon as ``next_attempt_at`` comes
  (see :mod:`crossdock.engine.worker`);
- **retention**: pruning per status on ``retention.schedule``.

The next fire time of each part lives in the database (``route_state``), so a restarted or newly elected
leader continues where the last one stopped. After downtime a missed schedule runs **once**, and the next
fire is computed from now, not from the missed slot. A part whose previous run is still going is not
started again (its slot is skipped); across processes only the leader fires at all. When several parts
are due together they start in route priority order, sharing ``parallel_runs`` slots, and a route's
outgoing run waits for its incoming run of the same tick. A route is run only while it is active: the
database's override (``crossdock`` API/dashboard) wins over the config's ``active``. A due outgoing part of a route
in a maintenance window is skipped, not queued (its tasks wait in new/retry for the first fire after the window),
and so is a due incoming part whose reading an ``imports: false`` window stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from croniter import croniter

from crossdock.engine.delivery_gate import Hold, import_hold, maintenance_hold
from crossdock.engine.exporter import Exporter
from crossdock.engine.importer import Importer
from crossdock.engine.leader import LeaderLock, leader_lock_for
from crossdock.engine.project import CompiledIncoming, CompiledRoute, Project, effective_active
from crossdock.engine.run_liveness import abandon_dead_runs
from crossdock.engine.slots import PrioritySlots
from crossdock.errors import StoreUnavailable
from crossdock.store import Store
from crossdock.store.base import RouteState
from crossdock.tasks import Status

log = logging.getLogger("crossdock.scheduler")

Clock = Callable[[], datetime]
Kind = Literal["incoming", "outgoing", "retention"]

#: where the retention pass keeps its next fire time; no configured route can have this name
RETENTION_KEY = "_retention"
RETENTION_PRIORITY = -1
#: seconds between the leader's checks for runs whose process died
LIVENESS_EVERY = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def next_fire(schedule: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``schedule`` names (5 fields, or 6 with seconds last)."""
    result: datetime = croniter(schedule, after).get_next(datetime)
    return result if result.tzinfo else result.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Part:
    """One thing on a schedule: an incoming, a route's outgoing, or retention."""

    kind: Kind
    #: the route or shared incoming it belongs to (``_retention`` for retention)
    name: str
    schedule: str
    priority: int
    #: routes whose active state decides whether it runs (empty: always runs)
    routes: tuple[str, ...] = ()

    @property
    def state_part(self) -> str:
        """The ``set_next_fire`` part it is stored as."""
        return "outgoing" if self.kind == "outgoing" else "incoming"

    @property
    def label(self) -> str:
        return "retention" if self.kind == "retention" else f"{self.name} {self.kind}"


def scheduled_parts(project: Project) -> list[Part]:
    """Every part of the project that has a schedule, highest priority first."""
    parts: list[Part] = []
    for inc in project.incomings.values():
        routes = project.routes_of(inc)
        if inc.config.schedule and routes:
            prio = max(r.priority for r in routes)
            parts.append(Part("incoming", inc.name, inc.config.schedule, prio, tuple(r.name for r in routes)))
    for route in project.routes.values():
        if not route.incoming.shared and route.incoming.config.schedule:
            parts.append(Part("incoming", route.name, route.incoming.config.schedule, route.priority, (route.name,)))
        if route.config.outgoing.schedule:
            parts.append(Part("outgoing", route.name, route.config.outgoing.schedule, route.priority, (route.name,)))
    retention = project.loaded.config.retention
    parts.append(Part("retention", RETENTION_KEY, retention.schedule, RETENTION_PRIORITY))
    parts.sort(key=lambda p: (-p.priority, p.kind != "incoming", p.name))
    return parts


class Jobs(Protocol):
    """What the scheduler starts; the engine's implementation is :class:`EngineJobs`, tests pass fakes."""

    async def run_incoming(self, incoming: CompiledIncoming) -> Any: ...

    async def run_outgoing(self, route: CompiledRoute, limit: int) -> Any: ...

    async def prune(self, now: datetime) -> int: ...


class EngineJobs:
    """Scheduled runs through the real importer and exporter (sharing connection clients)."""

    def __init__(self, project: Project, store: Store, exporter: Exporter, *, actor: str = "scheduler") -> None:
        self.project = project
        self.store = store
        self.exporter = exporter
        self.actor = actor
        self.importer = Importer(
            project, store, worker=exporter.worker, on_realtime=self._realtime, clients=exporter.clients
        )
        self._states: dict[str, RouteState] = {}

    async def _realtime(self, route: CompiledRoute, ids: list[int]) -> None:
        tasks = await asyncio.to_thread(self.store.get_tasks, ids)
        await self.exporter.deliver_claimed(route, tasks)

    async def run_incoming(self, incoming: CompiledIncoming) -> Any:
        self._states = await asyncio.to_thread(self.store.route_states)
        summary = await self.importer.run_incoming(incoming, actor=self.actor)
        if summary.status != "ok":
            log.warning("import %s %s: %s", incoming.name, summary.status, summary.error)
        return summary

    async def run_outgoing(self, route: CompiledRoute, limit: int) -> Any:
        return await self.exporter.run_route(route.name, limit=limit, actor=self.actor)

    async def prune(self, now: datetime) -> int:
        retention = self.project.loaded.config.retention
        ages = {
            Status.FINISHED: retention.finished,
            Status.SKIPPED: retention.skipped,
            Status.FAILED: retention.failed,
            Status.REJECTED: retention.rejected,
        }
        cutoffs = {status: now - timedelta(seconds=age) for status, age in ages.items()}
        return await asyncio.to_thread(self.store.prune_ages, cutoffs)


@dataclass
class Fired:
    """A run the scheduler started, for logs and tests."""

    part: Part
    at: datetime
    task: asyncio.Task[Any] = field(repr=False)


class Scheduler:
    """Fires due parts. Call :meth:`tick` on a timer (``run`` does), or by hand with a fake clock in tests."""

    def __init__(
        self,
        project: Project,
        store: Store,
        jobs: Jobs,
        *,
        lock: LeaderLock | None = None,
        clock: Clock = utc_now,
        parallel_runs: int = 4,
    ) -> None:
        self.project = project
        self.store = store
        self.jobs = jobs
        self.lock = lock if lock is not None else leader_lock_for(store)
        self.clock = clock
        self.parts = scheduled_parts(project)
        self._slots = PrioritySlots(parallel_runs)
        #: the in-process guard against overlapping runs of one part
        self._running: dict[tuple[Kind, str], asyncio.Task[Any]] = {}
        self.fired: list[Fired] = []
        self._next_liveness_check: datetime | None = None

    @property
    def is_leader(self) -> bool:
        return self.lock.held

    async def tick(self) -> list[Fired]:
        """One round: become leader if possible, then start every due part. Returns what it started."""
        was_leader = self.lock.held
        # asked every tick, also while leading: a lock can be lost (its database session ended)
        if not await asyncio.to_thread(self.lock.acquire):
            if was_leader:
                log.warning("lost the scheduler lock (%s): no longer scheduling", self.lock.describe())
            return []
        if not was_leader:
            log.info("this process is now the scheduler (%s)", self.lock.describe())
        now = self.clock()
        if self._next_liveness_check is None or now >= self._next_liveness_check:
            # the leader marks runs whose process died; one minute is soon enough for `runs list` to tell the truth
            self._next_liveness_check = now + timedelta(seconds=LIVENESS_EVERY)
            await asyncio.to_thread(abandon_dead_runs, self.store, now=now)
        states = await asyncio.to_thread(self.store.route_states)
        started: list[Fired] = []
        incoming_runs: dict[str, asyncio.Task[Any]] = {}
        for part in self.parts:
            if not await asyncio.to_thread(self._due, part, states, now):
                continue
            key = (part.kind, part.name)
            if not self._part_active(part, states):
                log.info("%s is due but inactive: not run", part.label)
                continue
            hold = self._hold(part, states, now)
            if hold is not None:
                log.info("%s is due but %s: not run", part.label, hold.reason)
                continue
            previous = self._running.get(key)
            if previous is not None and not previous.done():
                log.warning("%s is due but its previous run is still going: this slot is skipped", part.label)
                continue
            after = [incoming_runs[r] for r in part.routes if part.kind == "outgoing" and r in incoming_runs]
            task = asyncio.create_task(self._run(part, now, after), name=f"crossdock {part.label}")
            self._running[key] = task
            if part.kind == "incoming":
                for route in part.routes:
                    incoming_runs[route] = task
            fired = Fired(part, now, task)
            started.append(fired)
            self.fired.append(fired)
        return started

    def _due(self, part: Part, states: dict[str, RouteState], now: datetime) -> bool:
        """Whether ``part`` is due; moves its stored next fire past ``now`` when it is (or has none yet)."""
        state = states.get(part.name)
        stored = None
        if state is not None:
            stored = state.outgoing_next if part.state_part == "outgoing" else state.incoming_next
        upcoming = next_fire(part.schedule, now)
        if stored is None or stored > upcoming:
            # first start, or the schedule changed to fire sooner: wait for the next slot
            self.store.set_next_fire(part.name, part.state_part, upcoming, now=now)
            return False
        if stored > now:
            return False
        # however many slots were missed, this is one run; the next fire counts from now
        self.store.set_next_fire(part.name, part.state_part, upcoming, now=now)
        return True

    def _part_active(self, part: Part, states: dict[str, RouteState]) -> bool:
        if not part.routes:
            return True
        return any(effective_active(self.project.routes[r], states) for r in part.routes if r in self.project.routes)

    def _hold(self, part: Part, states: dict[str, RouteState], now: datetime) -> Hold | None:
        """A maintenance window that stops this part now."""
        if part.kind == "outgoing":
            return maintenance_hold(self.project.routes[part.name], now)
        if part.kind == "incoming":
            active = [r for r in part.routes if effective_active(self.project.routes[r], states)]
            return import_hold(self.project, self._incoming(part), active, now)
        return None

    def _incoming(self, part: Part) -> CompiledIncoming:
        if part.name in self.project.incomings:
            return self.project.incomings[part.name]
        return self.project.routes[part.name].incoming

    async def _run(self, part: Part, now: datetime, after: list[asyncio.Task[Any]]) -> Any:
        if after:
            await asyncio.wait(after)
        async with self._slots.slot(part.priority):
            log.info("running %s (schedule %s)", part.label, part.schedule)
            try:
                if part.kind == "incoming":
                    return await self.jobs.run_incoming(self._incoming(part))
                if part.kind == "outgoing":
                    route = self.project.routes[part.name]
                    return await self.jobs.run_outgoing(route, route.config.outgoing.batch_size)
                deleted = await self.jobs.prune(now)
                log.info("retention pruned %d task(s)", deleted)
                return deleted
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", part.label)
                return None

    async def wait_idle(self) -> None:
        """Wait for every run started so far."""
        running = [t for t in self._running.values() if not t.done()]
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def run(self, stop: asyncio.Event, *, tick: float = 1.0, grace: float = 30.0) -> None:
        """Tick until ``stop`` is set; then let runs finish within ``grace`` and give up leadership."""
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except StoreUnavailable:
                    pass  # logged once by the store's health; the next tick tries again
                except Exception:  # nothing may end the scheduler
                    log.exception("scheduler tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=tick)
            running = [t for t in self._running.values() if not t.done()]
            if running:
                log.info("waiting up to %.0f s for %d scheduled run(s) to finish", grace, len(running))
                _done, pending = await asyncio.wait(running, timeout=grace)
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self.lock.release()

    def describe(self) -> list[str]:
        """One line per scheduled part, for the start-up banner."""
        return [f"{p.label}: {p.schedule}" for p in self.parts]
