"""The long-running export worker: continuous delivery for routes that have no outgoing schedule.

Which routes: every active route without an outgoing ``schedule`` (those are delivered as soon as work is
due, and so are their retries once ``next_attempt_at`` comes), plus realtime routes (the importer delivers
their tasks at once; the worker picks up leftovers such as recovered leases). Routes with an outgoing
schedule are the scheduler's: their due work, retries included, goes out with the next scheduled run.

How: each route gets bounded passes of the exporter, one pass at a time per route, several routes at
once. Deliveries share ``concurrency`` slots process-wide, handed out by route priority; each route also
keeps its own ``outgoing.concurrency``. A route whose pass found nothing sleeps with a backoff
(``idle_min`` doubling to ``idle_max``); PostgreSQL's ``listen_new`` wakes it early.

Stopping: claiming stops at once; deliveries on the wire get ``grace`` seconds to finish and are settled;
claimed tasks that never started go back to ``new`` or ``retry``, where they were claimed from
(``store.release``). Past the grace period the rest
is cancelled: whatever was delivered is settled, the others are released and will be sent again with the
same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crossdock.engine.exporter import Exporter, ExportSummary
from crossdock.engine.project import CompiledRoute, Project, effective_active
from crossdock.engine.slots import PrioritySlots
from crossdock.errors import StoreUnavailable, describe_error
from crossdock.store import Store
from crossdock.store.base import RouteState

log = logging.getLogger("crossdock.worker")

#: tasks per pass at least; a pass ends so priorities, active flags and stop requests are looked at again
MIN_PASS = 1000
#: how often route states (active overrides) are read again while busy
STATES_EVERY = 2.0


def continuous_routes(project: Project) -> list[CompiledRoute]:
    """Routes workers deliver without a schedule, highest priority first."""
    routes = [r for r in project.routes.values() if not r.config.outgoing.schedule or r.config.realtime]
    return sorted(routes, key=lambda r: (-r.priority, r.name))


@dataclass
class WorkerReport:
    """What a worker did between start and stop."""

    passes: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    released: int = 0
    errors: int = 0

    def add(self, summary: ExportSummary) -> None:
        self.passes += 1
        self.released += summary.released
        for status, n in summary.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + n

    @property
    def delivered(self) -> int:
        return sum(self.by_status.values())


class Worker:
    """Runs until :meth:`stop`; see the module docstring for what it delivers and how it stops."""

    def __init__(
        self,
        project: Project,
        store: Store,
        *,
        concurrency: int | None = None,
        routes: Iterable[str] | None = None,
        exporter: Exporter | None = None,
        idle_min: float = 0.05,
        idle_max: float = 1.0,
    ) -> None:
        self.project = project
        self.store = store
        self.slots = PrioritySlots(concurrency) if concurrency else None
        if exporter is None:
            exporter = Exporter(project, store, slots=self.slots, wait_forever=True)
        elif self.slots is not None:
            exporter.slots = self.slots
        self.exporter = exporter
        wanted = set(routes) if routes is not None else None
        self.routes = [r for r in continuous_routes(project) if wanted is None or r.name in wanted]
        self.idle_min = idle_min
        self.idle_max = idle_max
        self.report = WorkerReport()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        #: route -> monotonic time before which it is not polled again (idle backoff)
        self._ready_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}

    def stop(self) -> None:
        """Stop claiming; :meth:`run` then finishes in-flight work within its grace period."""
        self._stop.set()
        self.exporter.stop()
        self._wake.set()

    async def run(self, *, grace: float = 30.0) -> WorkerReport:
        running: dict[str, asyncio.Task[ExportSummary]] = {}
        listener = asyncio.create_task(self._listen()) if _can_listen(self.store) else None
        states: dict[str, RouteState] = {}
        states_read = -STATES_EVERY
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now - states_read >= STATES_EVERY:
                    try:
                        states = await asyncio.to_thread(self.store.route_states)
                    except StoreUnavailable:
                        # the store's health logged it; keep the last known states and look again soon
                        if not states:
                            await self._pause(STATES_EVERY)
                            continue
                    states_read = now
                for route in self.routes:
                    if route.name in running or self._ready_at.get(route.name, 0.0) > now:
                        continue
                    if not effective_active(route, states):
                        self._ready_at[route.name] = now + STATES_EVERY
                        continue
                    running[route.name] = asyncio.create_task(self._pass(route), name=f"deliver {route.name}")
                self._wake.clear()
                waits: set[asyncio.Future[Any]] = {
                    *running.values(),
                    asyncio.ensure_future(self._wake.wait()),
                }
                timeout = self._next_ready(now, running)
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for fut in waits - set(running.values()):
                    fut.cancel()
                self._collect(running)
        finally:
            self.exporter.stop()
            if listener is not None:
                listener.cancel()
            await self._finish(running, grace)
            if listener is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
        return self.report

    async def _pass(self, route: CompiledRoute) -> ExportSummary:
        limit = max(route.config.outgoing.batch_size, MIN_PASS)
        return await self.exporter.run_route(route.name, limit=limit, actor="worker", record_run=False)

    def _collect(self, running: dict[str, asyncio.Task[ExportSummary]]) -> None:
        now = time.monotonic()
        for name, task in list(running.items()):
            if not task.done():
                continue
            del running[name]
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                self.report.errors += 1
                if not isinstance(error, StoreUnavailable):  # an outage is logged once, by the store's health
                    log.error("delivering %s failed: %s", name, describe_error(error))
                self._idle(name, now, failed=True)
                continue
            summary = task.result()
            self.report.add(summary)
            if summary.claimed or summary.recovered:
                log.info(
                    "%s: %d task(s) in %.2f s %s",
                    name,
                    summary.claimed,
                    summary.duration_s,
                    " ".join(f"{k} {v}" for k, v in sorted(summary.by_status.items())),
                )
                self._backoff.pop(name, None)
                self._ready_at.pop(name, None)
            else:
                self._idle(name, now)

    def _idle(self, name: str, now: float, *, failed: bool = False) -> None:
        delay = self._backoff.get(name)
        delay = self.idle_min if delay is None else min(delay * 2, self.idle_max)
        if failed:
            delay = self.idle_max
        self._backoff[name] = delay
        self._ready_at[name] = now + delay

    def _next_ready(self, now: float, running: dict[str, asyncio.Task[ExportSummary]]) -> float | None:
        """Seconds until the next idle route may be polled again (None: every route is busy)."""
        idle = [r.name for r in self.routes if r.name not in running]
        if not idle:
            return None
        return max(min(self._ready_at.get(name, now) - now for name in idle), 0.0)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once for a stop request."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _listen(self) -> None:
        """Wake idle routes when PostgreSQL says they got new tasks (a blocking call, so in a thread)."""
        while not self._stop.is_set():
            try:
                names = await asyncio.to_thread(self.store.listen_new, self.idle_max)
            except StoreUnavailable:
                # polling goes on meanwhile; listen again once the database answers
                await self._pause(self.idle_max)
                continue
            except Exception:
                log.exception("listening for new tasks failed; polling only")
                return
            for name in names:
                self._ready_at.pop(name, None)
                self._backoff.pop(name, None)
            if names:
                self._wake.set()

    async def _finish(self, running: dict[str, asyncio.Task[ExportSummary]], grace: float) -> None:
        if running:
            log.info("stopping: waiting up to %.0f s for %d route pass(es) in flight", grace, len(running))
            _done, pending = await asyncio.wait(running.values(), timeout=grace)
            if pending:
                log.warning("grace period over: cancelling %d pass(es); unsettled tasks are released", len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        self._collect(running)


def _can_listen(store: Store) -> bool:
    """Only stores that override ``listen_new`` can wake the worker; the default would just sleep."""
    return type(store).listen_new is not Store.listen_new
