"""Claim → outgoing transform → deliver → settle. The one place delivery errors become task statuses.

Claims and settlements are batched (one transaction each); deliveries run concurrently up to the route's
``concurrency``. While one batch is being delivered the next is claimed, so the database and the network
overlap. Leases are extended while deliveries run, and expired leases are recovered before every pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from crossdock import tracing
from crossdock.connectors.base import Delivered, Target
from crossdock.engine.auto_pause import AutoPause
from crossdock.engine.delivery_gate import BatchBreaker, DeliveryGate, Verdict
from crossdock.engine.group_commit import GroupCommit
from crossdock.engine.project import CompiledRoute, Project
from crossdock.engine.retry import next_delay
from crossdock.engine.run_liveness import heartbeat, process_id
from crossdock.engine.slots import PrioritySlots
from crossdock.errors import (
    DeliveryError,
    PermanentError,
    RecordFiltered,
    RecordRejected,
    StoreUnavailable,
    TransientError,
    describe_error,
)
from crossdock.store import Settlement, Store
from crossdock.store.health import database_wait, wait_for_store
from crossdock.tasks import Action, Status, Task, iso

log = logging.getLogger("crossdock.exporter")

T = TypeVar("T")


#: seconds results wait to be committed together with ``outgoing.settle: batched``
BATCH_LINGER = 0.05


@dataclass
class ExportSummary:
    route: str
    claimed: int = 0
    recovered: int = 0
    #: claimed but handed back unstarted because the worker was stopping
    released: int = 0
    duration_s: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    #: why the run stopped early because crossdock paused the route (``pause_after``)
    paused: str | None = None
    #: why nothing (more) was claimed: "in maintenance until …", "circuit open for shop until …"
    held: str | None = None
    held_until: datetime | None = None

    def count(self, status: str, n: int = 1) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "status": self.status,
            "error": self.error,
            "paused": self.paused,
            "held": self.held,
            "held_until": iso(self.held_until),
            "claimed": self.claimed,
            "recovered_leases": self.recovered,
            "released": self.released,
            "by_status": self.by_status,
            "duration_s": round(self.duration_s, 3),
            "tasks_per_s": round(self.claimed / self.duration_s) if self.duration_s > 0 else None,
        }


class Exporter:
    def __init__(
        self,
        project: Project,
        store: Store,
        *,
        worker: str | None = None,
        clients: dict[str, Any] | None = None,
        slots: PrioritySlots | None = None,
        wait_forever: bool = False,
    ) -> None:
        self.project = project
        project.bind_store(store)
        self.store = store
        #: switches a route off when its deliveries keep failing (pause_after); its drain stops at once
        self.auto_pause = AutoPause.attach(project, store)
        self.worker = worker or process_id()
        #: maintenance windows and circuit breakers: whether a route may claim now (one per store and process)
        self.gate = DeliveryGate.attach(project, store, process_id())
        #: shared connection clients (one per connection), closed by :meth:`close`
        self._clients: dict[str, Any] = clients if clients is not None else {}
        #: ids being delivered, per route: each route's lease keeper extends only its own (leases differ)
        self._in_flight: dict[str, set[int]] = {}
        #: per route, the leases of the claimed batches being delivered (the lease keeper confirms them)
        self._leases: dict[str, set[_Lease]] = {}
        #: a process-wide cap on deliveries in flight (the worker's --concurrency), shared by all routes
        self.slots = slots
        #: per route, the span of the export run in progress (tracing on only)
        self._traces: dict[str, tracing.ExportTrace] = {}
        self._stopping = False
        #: seconds to wait out a database outage before a run fails; None waits as long as it lasts (long-running
        #: services: their deliveries and results stay safe, and they resume when the database answers again)
        self.give_up_after: float | None = None if wait_forever else database_wait()

    def stop(self) -> None:
        """Stop claiming and starting deliveries; those already on the wire finish and are settled.

        Claimed tasks that never started are released (back to new or retry) when their batch ends.
        """
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run_route(
        self,
        route_name: str,
        *,
        limit: int | None = None,
        actor: str = "cli",
        record_run: bool = True,
    ) -> ExportSummary:
        """Deliver the route's due tasks (at most ``limit``) and record the run."""
        route = self.project.route(route_name)
        started = time.perf_counter()
        summary = ExportSummary(route.name)
        run_id: int | None = None
        if record_run:
            run_id = await self._wait_for_store(
                lambda: self.store.start_run(route.name, "outgoing", actor=actor, now=_now(), owner=self.worker)
            )
        if tracing.active():
            self._traces[route.name] = tracing.ExportTrace(route.name, eager=record_run)
        try:
            beating = heartbeat(self.store, lambda: [run_id]) if run_id is not None else contextlib.nullcontext()
            async with beating:
                max_attempts = self.project.max_attempts()
                summary.recovered = await self._wait_for_store(
                    lambda: self.store.recover_expired_leases(now=_now(), max_attempts=max_attempts)
                )
                verdict = await self._check_gate(route)
                if verdict.hold is not None:
                    summary.held, summary.held_until = verdict.hold.reason, verdict.hold.until
                else:
                    target = self._target(route)
                    await target.open()
                    try:
                        await self._drain(route, target, summary, limit, verdict)
                    finally:
                        await target.close()
                if self._stopping and record_run:
                    summary.status = "stopped"  # claiming ended early; unstarted tasks went back
        except BaseException as exc:
            summary.status = "failed"
            summary.error = self.project.redact(
                describe_error(exc) if isinstance(exc, Exception) else f"interrupted ({type(exc).__name__})"
            )
            raise
        finally:
            summary.duration_s = time.perf_counter() - started
            traced = self._traces.pop(route.name, None)
            if traced is not None:
                traced.end(summary)
            if run_id is not None:
                await self._finish_run(run_id, summary)
        return summary

    async def _check_gate(self, route: CompiledRoute) -> Verdict:
        if route.circuit is None:  # windows are arithmetic: no database, no thread
            return self.gate.check(route, _now())
        return await self._wait_for_store(lambda: self.gate.check(route, _now()))

    async def _wait_for_store(self, call: Callable[[], T]) -> T:
        """A store call that waits out an outage for as long as this exporter may, and no longer than a stop."""
        return await wait_for_store(call, give_up_after=self.give_up_after, stopping=lambda: self._stopping)

    async def _finish_run(self, run_id: int, summary: ExportSummary) -> None:
        def finish() -> None:
            self.store.finish_run(
                run_id, status=summary.status, summary=summary.to_json(), error=summary.error, now=_now()
            )

        try:
            await wait_for_store(finish, give_up_after=self.give_up_after)
        except StoreUnavailable as exc:  # the run stays running until a process marks it abandoned
            log.error("cannot record the end of run %d of %s: %s", run_id, summary.route, exc.message)

    async def deliver_claimed(self, route: CompiledRoute, tasks: list[Task]) -> ExportSummary:
        """Deliver tasks this worker already holds (realtime imports create them in processing). While the route's
        gate is closed they go back to new instead, their attempt not counted, for a worker or the next run."""
        summary = ExportSummary(route.name, claimed=len(tasks))
        verdict = await self._check_gate(route)
        if verdict.probe:  # the probe goes with a claimed task (the next pass); these are not held back for it
            await self.gate.give_back_probe(route)
        if verdict.hold is not None or verdict.probe:
            why = verdict.hold.reason if verdict.hold is not None else f"circuit half-open for {route.circuit_key}"
            summary.held = why
            summary.held_until = verdict.hold.until if verdict.hold is not None else None
            message = f"not delivered now: {why}; the attempt is not counted"
            summary.released += await wait_for_store(lambda: self._release(tasks, message))
            return summary
        target = self._target(route)
        await target.open()
        try:
            sem = asyncio.Semaphore(route.config.outgoing.concurrency)
            held = _Lease(time.monotonic(), route.config.outgoing.lease)
            await self._process(route, target, tasks, sem, summary, held)
        finally:
            await target.close()
        return summary

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    @property
    def clients(self) -> dict[str, Any]:
        return self._clients

    def _target(self, route: CompiledRoute) -> Target:
        ctx = self.project.context(self._clients)
        return route.target_class(route.target_options, ctx)

    async def _drain(
        self, route: CompiledRoute, target: Target, summary: ExportSummary, limit: int | None, verdict: Verdict
    ) -> None:
        out = route.config.outgoing
        concurrency = out.concurrency
        batch = max(concurrency * 4, 256) if not target.supports_batch else max(out.batch_size, 1000)
        if route.name in self.auto_pause.paused and await asyncio.to_thread(self.auto_pause.still_paused, route):
            summary.paused = self.auto_pause.reason(route.name)
            return
        sem = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()
        keeper = asyncio.create_task(self._keep_leases(route.name, out.lease))
        try:
            remaining = limit
            first = True
            while (remaining is None or remaining > 0) and not self._stopping:
                if route.name in self.auto_pause.paused:
                    summary.paused = self.auto_pause.reason(route.name)
                    break
                if not first:  # a window may have begun, or a batch opened the breaker
                    verdict = await self._check_gate(route)
                first = False
                if verdict.hold is not None:
                    summary.held, summary.held_until = verdict.hold.reason, verdict.hold.until
                    break
                # the probe is one task; nothing else is claimed until its result has been counted
                want = 1 if verdict.probe else batch if remaining is None else min(batch, remaining)

                claimed_at = [0.0]

                def claim(want: int = want, claimed_at: list[float] = claimed_at) -> list[Task]:
                    now = _now()  # taken per try: after an outage the lease starts when the claim lands
                    claimed_at[0] = time.monotonic()
                    lease_until = now + timedelta(seconds=out.lease)
                    return self.store.claim_due_tasks(
                        route.name, want, worker=self.worker, lease_until=lease_until, now=now
                    )

                try:
                    tasks = await self._wait_for_store(claim)
                except StoreUnavailable:
                    if verdict.probe:
                        await self.gate.give_back_probe(route)
                    if not running:
                        raise
                    break  # the batches being delivered still settle (their commits wait for the database)
                if not tasks:
                    if verdict.probe:
                        await self.gate.give_back_probe(route)
                    break
                summary.claimed += len(tasks)
                if route.name in self._traces:
                    self._traces[route.name].claimed()
                if remaining is not None:
                    remaining -= len(tasks)
                held = _Lease(claimed_at[0], out.lease)
                job = asyncio.create_task(self._process(route, target, tasks, sem, summary, held, verdict.probe))
                running.add(job)
                job.add_done_callback(running.discard)
                while len(running) >= (1 if verdict.probe else 2):
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for done in [j for j in running if j.done()]:
                    done.result()
            if running:
                await asyncio.gather(*running)
            if route.name in self.auto_pause.paused:
                summary.paused = self.auto_pause.reason(route.name)
            # opened by this run's own deliveries (the writes are done now the batches are: say until when)
            if route.circuit is not None and summary.held_until is None:
                hold = await self._wait_for_store(lambda: self.gate.circuit_hold(route))
                if hold is not None:
                    summary.held, summary.held_until = hold.reason, hold.until
        finally:
            # on cancellation, the batches still delivering settle what they did and release the rest
            for job in running:
                job.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_leases(self, route: str, lease: float) -> None:
        """Extend leases of tasks still being delivered, so a slow target does not look like a dead worker."""
        while True:
            await asyncio.sleep(max(lease / 3, 0.05))
            ids = list(self._in_flight.get(route, ()))
            if ids:
                asked_at = time.monotonic()
                until = _now() + timedelta(seconds=lease)
                try:
                    await asyncio.to_thread(self.store.extend_leases, ids, worker=self.worker, lease_until=until)
                except StoreUnavailable:
                    # logged once by the store's health; keep trying, since the outage may end before the leases do
                    continue
                for held in list(self._leases.get(route, ())):
                    held.confirm(asked_at)

    async def _process(
        self,
        route: CompiledRoute,
        target: Target,
        tasks: list[Task],
        sem: asyncio.Semaphore,
        summary: ExportSummary,
        held: _Lease,
        probe: bool = False,
    ) -> None:
        ids = [t.id for t in tasks]
        in_flight = self._in_flight.setdefault(route.name, set())
        in_flight.update(ids)
        leases = self._leases.setdefault(route.name, set())
        leases.add(held)
        unstarted: list[Task] = []
        #: delivered after the circuit breaker opened and failed transiently: released, the attempt not counted
        refused: list[Task] = []
        settle = _Settler(self, route).settlement
        paused = self.auto_pause.paused
        breaker: BatchBreaker | None = self.gate.batch(route, probe=probe)
        # settle: batched lets results gather for a moment, so a fast target's results go in fewer transactions
        results = GroupCommit(self.store, linger=0.0 if route.config.outgoing.settle == "immediate" else BATCH_LINGER)
        traced: tracing.Deliveries | None = None
        if tracing.active():
            kind = route.target_options.type
            traced = await tracing.deliveries(self.store, route.name, kind, tasks, self._traces.get(route.name))
        try:
            if route.outgoing_pipeline:
                ready: list[tuple[Task, Any]] = []
                early: list[Settlement] = []
                for task in tasks:
                    entity, filtered = self._transform(route, task)
                    if filtered is not None:
                        early.append(filtered)
                    else:
                        ready.append((task, entity))
                if early:
                    await results.commit(early)
            else:
                ready = [(task, task.entity) for task in tasks]
            if target.supports_batch and ready:
                async with self._slot(route):
                    if (
                        self._stopping
                        or held.lapsed()
                        or route.name in paused
                        or (breaker is not None and breaker.blocked())
                    ):
                        unstarted += [t for t, _ in ready]
                    else:
                        spans = [traced.start(t, batch=True) for t, _ in ready] if traced is not None else None
                        try:
                            outcomes = await target.deliver_batch(ready)
                        except BaseException:
                            if spans is not None and traced is not None:
                                traced.abandon(spans, [t for t, _ in ready])
                            raise
                        settlements = []
                        for i, ((task, _entity), outcome) in enumerate(zip(ready, outcomes, strict=True)):
                            if breaker is not None and breaker.count(outcome):
                                refused.append(task)
                                status = "released"
                            else:
                                settlements.append(settle(task, outcome, None))
                                status = _STATUS_OF[settlements[-1].action]
                            if spans is not None and traced is not None:
                                traced.end(spans[i], task, outcome, status)
                        await results.commit(settlements)
            elif ready:
                pending = iter(ready)
                perf_counter = time.perf_counter
                immediate = route.config.outgoing.settle == "immediate"

                # a pool of workers pulling from one iterator, not a coroutine per task: no asyncio Task and no
                # semaphore waiter per delivery. The semaphore still caps the route across overlapping batches.
                # A delivery keeps its slot until its result is committed, so what a worker killed at any moment has
                # delivered but not recorded is at most one task per slot: the requests in flight.
                async def deliver_some() -> None:
                    for task, entity in pending:
                        async with sem, self._slot(route):
                            if (
                                self._stopping
                                or held.lapsed()
                                or route.name in paused
                                or (breaker is not None and breaker.blocked())
                            ):
                                unstarted.append(task)  # paused: back to where it was, its attempt not spent
                                continue
                            started = perf_counter()
                            outcome: Delivered | Exception
                            if traced is None:
                                try:
                                    outcome = await target.deliver(task, entity)
                                except Exception as exc:  # connectors raise DeliveryError; anything else is a bug
                                    outcome = exc
                            else:
                                outcome, span = await traced.deliver(target, task, entity)
                            if breaker is not None:
                                counted_out = breaker.count(outcome)
                                await breaker.flush_if_due()
                                if counted_out:
                                    refused.append(task)
                                    if traced is not None:
                                        traced.end(span, task, outcome, "released")
                                    continue
                            settled = [settle(task, outcome, perf_counter() - started)]
                            if traced is not None:
                                traced.end(span, task, outcome, _STATUS_OF[settled[0].action])
                            if immediate:
                                await results.commit(settled)
                            else:
                                results.submit(settled)

                workers = min(route.config.outgoing.concurrency, len(ready))
                await asyncio.gather(*(deliver_some() for _ in range(workers)))
                await results.drain()
        except BaseException:
            # cancelled (shutdown past its grace) or broken: keep what was delivered, hand back the rest
            if breaker is not None:
                breaker.abandon()
            submitted = results.submitted
            done = {s.task_id for s in submitted}
            self._finish_sync(results.uncommitted, [t for t in tasks if t.id not in done])
            in_flight.difference_update(ids)
            leases.discard(held)
            raise
        try:
            if breaker is not None:
                await breaker.finish()
            if unstarted:
                summary.released += await wait_for_store(lambda: self._release(unstarted))
            if refused:
                why = f"circuit open for {route.circuit_key}: {refused_error(breaker)}; the attempt is not counted"
                summary.released += await wait_for_store(lambda: self._release(refused, why))
            for action, n in Counter(s.action for s in results.committed).items():
                summary.count(_STATUS_OF[action], n)
        finally:
            in_flight.difference_update(ids)
            leases.discard(held)

    def _release(self, tasks: list[Task], message: str | None = None) -> int:
        """Hand back claims whose attempt does not count, each to the status it was claimed from."""
        retries = {t.id for t in tasks if t.claimed_from is Status.RETRY}
        return self.store.release(
            [t.id for t in tasks], worker=self.worker, now=_now(), retries=retries, message=message
        )

    def _finish_sync(self, settlements: list[Settlement], release: list[Task]) -> None:
        """Settle and release without awaiting: this runs while the task is being cancelled."""
        try:
            if settlements:
                self.store.settle(settlements, now=_now())
            if release:
                self._release(release)
        except Exception:  # the leases will expire and recover these tasks
            log.exception("cannot settle or release %d task(s) at shutdown", len(settlements) + len(release))

    def _slot(self, route: CompiledRoute) -> contextlib.AbstractAsyncContextManager[None]:
        return self.slots.slot(route.priority) if self.slots is not None else contextlib.nullcontext()

    def _transform(self, route: CompiledRoute, task: Task) -> tuple[Any, Settlement | None]:
        pipeline = route.outgoing_pipeline
        if not pipeline:
            return task.entity, None
        try:
            results = pipeline.apply(task.entity)
        except RecordFiltered as exc:
            return None, Settlement(
                task.id,
                Action.FILTERED_OUT,
                self.worker,
                error=exc.message,
                message=f"outgoing filter: {exc.message}",
            )
        except RecordRejected as exc:
            message = f"outgoing transform of route {route.name}: {exc.message}"
            return None, Settlement(
                task.id, Action.DELIVERY_FAILED, self.worker, error=message, level="error", message=message
            )
        return (results[0] if len(results) == 1 else results), None


class _Lease:
    """Whether the leases of one claimed batch still hold. Once they may have run out (no claim or extension for
    nearly a lease, as in a database outage), another worker may have recovered its tasks; starting one then could
    deliver it twice, so the batch's unstarted tasks are left to whoever holds them now, even after later extensions
    succeed (an extension is guarded by worker, and does not say which tasks someone else took meanwhile)."""

    __slots__ = ("confirmed_at", "lost", "term")

    def __init__(self, claimed_at: float, lease: float) -> None:
        #: when (monotonic) the leases were last known to hold
        self.confirmed_at = claimed_at
        #: how long they are trusted after that: the lease, less a margin for clocks and the extension's own time
        self.term = lease - min(lease * 0.2, 5.0)
        self.lost = False

    def confirm(self, at: float) -> None:
        """The lease keeper extended the leases at ``at``."""
        if at <= self.confirmed_at:
            return
        if at - self.confirmed_at > self.term:
            self.lost = True  # they may have run out in the gap, whatever the extension says now
        self.confirmed_at = at

    def lapsed(self) -> bool:
        if not self.lost and time.monotonic() - self.confirmed_at > self.term:
            self.lost = True
        return self.lost


class _Settler:
    """Turns delivery outcomes of one route into settlements. Built once per batch: the route's constants and
    the "attempt N of M by worker" prefix (one per attempt number) are worked out once, not once per task."""

    __slots__ = ("_prefixes", "max_attempts", "policy", "redact", "route", "success", "suffix", "worker")

    def __init__(self, exporter: Exporter, route: CompiledRoute) -> None:
        self.route = route
        self.worker = exporter.worker
        self.redact = exporter.project.redact
        self.policy = route.config.retry
        self.max_attempts = f" of {self.policy.max_attempts}" if self.policy is not None else ""
        waiting = route.config.waiting
        self.success = Action.DELIVERED_WAITING if waiting else Action.DELIVERED
        self.suffix = "; waiting for a decision" if waiting else ""
        self._prefixes: dict[int, str] = {}

    def _prefix(self, attempts: int) -> str:
        prefix = self._prefixes.get(attempts)
        if prefix is None:
            prefix = self._prefixes[attempts] = f"attempt {attempts}{self.max_attempts} by {self.worker}: "
        return prefix

    def settlement(self, task: Task, outcome: Delivered | Exception, seconds: float | None) -> Settlement:
        claimed_from = (task.claimed_from or task.status)._value_
        if isinstance(outcome, Delivered):
            details: dict[str, Any] = {"claimed_from": claimed_from}
            details.update(outcome.details)
            if seconds is not None and "duration_ms" not in details:
                details["duration_ms"] = round(seconds * 1000, 1)
            return Settlement(
                task.id,
                self.success,
                self.worker,
                result=outcome.result,
                message=f"{self._prefix(task.attempts)}{outcome.message}{self.suffix}",
                details=details,
            )
        redact = self.redact
        policy = self.policy
        prefix = self._prefix(task.attempts)
        if isinstance(outcome, DeliveryError):
            error = redact(outcome.message)
            failure: dict[str, Any] = {"claimed_from": claimed_from, **outcome.details}
            failure["error_class"] = "transient" if isinstance(outcome, TransientError) else "permanent"
            if isinstance(outcome, TransientError) and policy is not None and task.attempts < policy.max_attempts:
                delay = next_delay(task.attempts, policy, outcome.retry_after)
                return Settlement(
                    task.id,
                    Action.SCHEDULE_RETRY,
                    self.worker,
                    error=error,
                    next_attempt_at=_now() + timedelta(seconds=delay),
                    level="warning",
                    message=f"{prefix}{error}; next attempt in {delay:.1f} s",
                    details=failure,
                )
            why = ""
            if isinstance(outcome, TransientError):
                why = "; no attempts left" if policy is not None else "; the route has no retry: policy"
            elif isinstance(outcome, PermanentError):
                why = "; permanent error, not retried"
            return Settlement(
                task.id,
                Action.DELIVERY_FAILED,
                self.worker,
                error=error,
                level="error",
                message=f"{prefix}{error}{why}",
                details=failure,
            )
        route = self.route
        log.exception("connector bug while delivering task %s", task.id, exc_info=outcome)
        error = redact(f"internal error in target {route.target_options.type}: {type(outcome).__name__}: {outcome}")
        return Settlement(
            task.id,
            Action.DELIVERY_FAILED,
            self.worker,
            error=error,
            level="error",
            message=f"{prefix}{error}",
            details={"claimed_from": claimed_from, "error_class": "internal"},
        )


_STATUS_OF = {
    Action.DELIVERED: "finished",
    Action.DELIVERED_WAITING: "waiting",
    Action.SCHEDULE_RETRY: "retry",
    Action.DELIVERY_FAILED: "failed",
    Action.FILTERED_OUT: "skipped",
}


def refused_error(breaker: BatchBreaker | None) -> str:
    """The last transient error the breaker counted, for the timeline of a task released because it was open."""
    error = breaker.local.error if breaker is not None else None
    return error or "the target still fails"


def _now() -> datetime:
    return datetime.now(UTC)
