"""May a route deliver now, and if not, why and until when: its maintenance windows and its circuit breaker.

Both are gates in front of the claim: while one is closed nothing is claimed for the route, so its tasks stay
``new``/``retry`` with their attempts untouched, and the run summary says why ("in maintenance until …",
"circuit open for shop until …").

**Maintenance** (``maintenance:`` on the route or its target's connection) is time arithmetic only
(:mod:`crossdock.engine.maintenance`). Windows with ``imports: false`` stop reading sources too (:func:`import_hold`).

**The circuit breaker** (``outgoing.circuit`` or ``connections.NAME.circuit``; the route's wins) lives in the store,
so every process delivering to the target shares it (:mod:`crossdock.store.circuits` has its rules). Its key is the
target's connection when it names one (all routes to that system share one breaker), else the route. This process
counts transient failures (what the exporter retries: refused connections, timeouts, 5xx, 429) as deliveries end
and writes them in one go per batch, at once when they reach the threshold, and at most every
:data:`FLUSH_EVERY` seconds while they keep coming; an answer (a success, or a permanent refusal: the target is up)
resets the count, written only when the stored count is not zero already. Once the breaker is open no further
delivery starts; one that was in flight and failed transiently is released, its attempt not counted. After the
cooldown one process takes the probe (a compare-and-set in the store) and delivers one task: answered, the breaker
closes; failed, it opens for another cooldown. State changes are logged once, by the process that made them, and
the store announces them (``CircuitOpened``, ``CircuitClosed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from crossdock.connectors.base import Delivered
from crossdock.engine.maintenance import imports_stopped_until, maintenance_until, when
from crossdock.engine.project import CompiledIncoming, CompiledRoute, Project
from crossdock.errors import PermanentError, StoreUnavailable, TransientError
from crossdock.store import Store
from crossdock.store.base import CircuitState, CircuitUpdate

log = logging.getLogger("crossdock.exporter")

#: seconds between two writes of one breaker's failure count by this process while failures keep coming
FLUSH_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a route delivers (or an incoming imports) nothing now, and until when (None: until a probe decides)."""

    kind: Literal["maintenance", "circuit"]
    reason: str
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer before a claim."""

    hold: Hold | None = None
    #: this caller took the breaker's probe: claim one task; its delivery decides whether the breaker closes
    probe: bool = False


OPEN = Verdict()


def maintenance_hold(route: CompiledRoute, now: datetime) -> Hold | None:
    """Whether a window of the route (or of its target's connection) covers ``now``."""
    until = maintenance_until(route.maintenance, now)
    if until is None:
        return None
    return Hold("maintenance", f"in maintenance until {when(until)}", until)


def import_hold(project: Project, incoming: CompiledIncoming, routes: Iterable[str], now: datetime) -> Hold | None:
    """Whether reading ``incoming`` for ``routes`` (its active routes) is stopped by ``imports: false`` windows: one
    of its source's connection, or one of every route it feeds (a shared incoming is read for all its routes at
    once; while one of them still imports, records are never dropped for the others)."""
    source = imports_stopped_until(incoming.maintenance, now)
    ends: list[datetime] = []
    for name in routes:
        route = project.routes.get(name)
        until = imports_stopped_until(route.config.maintenance, now) if route is not None else None
        if until is None:
            ends = []
            break
        ends.append(until)
    by_routes = min(ends) if ends else None
    if source is None and by_routes is None:
        return None
    until = max(t for t in (source, by_routes) if t is not None)
    return Hold("maintenance", f"in maintenance until {when(until)} (imports: false)", until)


@dataclass
class _Breaker:
    """This process's view of one breaker key."""

    #: the failure count in the database when last read or written
    known: int = 0
    #: transient failures counted here and not written yet
    pending: int = 0
    #: an answer came after the known failures: the next write starts the count from zero
    reset: bool = False
    #: no delivery may start: the database says open, or this process reached the threshold
    open: bool = False
    #: this process reached the threshold and has not written it yet (the database still says closed)
    opening: bool = False
    error: str | None = None
    #: monotonic time of the last write (or of the first count)
    written_at: float = field(default_factory=time.monotonic)


class DeliveryGate:
    """One per store and process (:meth:`attach`), shared by every exporter there, so all see one breaker."""

    def __init__(self, project: Project, store: Store, owner: str) -> None:
        self.project = project
        self.store = store
        #: who takes probes: this process (``host:pid``)
        self.owner = owner
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()
        #: routes in maintenance as this process last saw them (the end it logged), so each window is logged once
        self._maintenance: dict[str, datetime] = {}

    @classmethod
    def attach(cls, project: Project, store: Store, owner: str) -> DeliveryGate:
        gate: DeliveryGate | None = store.__dict__.get("_delivery_gate")
        if gate is None:
            gate = store.__dict__["_delivery_gate"] = cls(project, store, owner)
        gate.project = project
        return gate

    def _breaker(self, key: str) -> _Breaker:
        found = self._breakers.get(key)
        if found is None:
            found = self._breakers[key] = _Breaker()
        return found

    # --- before a claim ---------------------------------------------------------------------------------

    def check(self, route: CompiledRoute, now: datetime) -> Verdict:
        """May ``route`` claim now? Reads the breaker's row (one small read) when the route has a breaker; blocking,
        so the engine calls it in a thread. Taking the probe writes (a compare-and-set)."""
        hold = maintenance_hold(route, now)
        self._log_maintenance(route, hold)
        if hold is not None:
            return Verdict(hold)
        rule = route.circuit
        if rule is None:
            return OPEN
        key = route.circuit_key
        row = self.store.circuits().get(key)
        with self._lock:
            local = self._breaker(key)
            if local.opening:
                return Verdict(Hold("circuit", f"circuit open for {key} (it has just opened)", None))
            local.known = row.failures if row is not None else 0
            local.open = row is not None and row.state != "closed"
        if row is None or row.state == "closed":
            return OPEN
        # a probe whose process died (or hangs) is taken over after the route's lease, as its task would be
        stale_before = now - timedelta(seconds=route.config.outgoing.lease)
        if row.state == "open" and row.open_until is not None and row.open_until > now:
            return Verdict(Hold("circuit", f"circuit open for {key} until {when(row.open_until)}", row.open_until))
        if self.store.take_circuit_probe(key, owner=self.owner, now=now, stale_before=stale_before):
            with self._lock:
                local.open = False
            log.info(
                "circuit %s: cooldown over, one probe delivery decides whether it closes", key,
                extra={"data": {"circuit": key, "state": "half_open"}},
            )  # fmt: skip
            return Verdict(probe=True)
        return Verdict(Hold("circuit", f"circuit half-open for {key}: a probe delivery decides whether it closes"))

    def circuit_hold(self, route: CompiledRoute) -> Hold | None:
        """Whether the route's breaker stopped it, as far as this process knows, in words; takes no probe. For the
        summary of a run whose own deliveries opened the breaker."""
        if route.circuit is None:
            return None
        with self._lock:
            local = self._breakers.get(route.circuit_key)
            if local is None or not local.open:
                return None
        row = self.store.circuits().get(route.circuit_key)
        key = route.circuit_key
        if row is None or row.state == "closed":
            return None
        if row.state == "open":
            until = f" until {when(row.open_until)}" if row.open_until is not None else ""
            return Hold("circuit", f"circuit open for {key}{until}", row.open_until)
        return Hold("circuit", f"circuit half-open for {key}: a probe delivery decides whether it closes")

    def _log_maintenance(self, route: CompiledRoute, hold: Hold | None) -> None:
        """Once when a route's window begins (or is found) and once when it ends, not on every check."""
        name = route.name
        with self._lock:
            before = self._maintenance.get(name)
            if hold is None:
                if before is None:
                    return
                del self._maintenance[name]
            else:
                if before == hold.until:
                    return
                assert hold.until is not None
                self._maintenance[name] = hold.until
        if hold is None:
            log.info("route %s: maintenance is over, deliveries resume", name)
        else:
            log.info(
                "route %s %s: nothing is delivered until then", name, hold.reason,
                extra={"data": {"route": name, "maintenance_until": hold.until.isoformat() if hold.until else None}},
            )  # fmt: skip

    async def give_back_probe(self, route: CompiledRoute) -> None:
        """The probe found no due task (or was not sent): the next process with work probes at once."""
        with contextlib.suppress(StoreUnavailable):  # else it is taken over after the route's lease
            await asyncio.to_thread(
                self.store.return_circuit_probe, route.circuit_key, owner=self.owner, now=datetime.now(UTC)
            )

    # --- while delivering -------------------------------------------------------------------------------

    def batch(self, route: CompiledRoute, *, probe: bool = False) -> BatchBreaker | None:
        """The breaker's part in one claimed batch; None for a route without a breaker (nothing to count)."""
        if route.circuit is None:
            return None
        return BatchBreaker(self, route, probe)

    async def flush(self, route: CompiledRoute, *, probe: bool = False) -> None:
        """Write what this process counted for the route's breaker since the last write (nothing when nothing)."""
        rule = route.circuit
        assert rule is not None
        key = route.circuit_key
        with self._lock:
            local = self._breaker(key)
            pending, reset, error = local.pending, local.reset, local.error
            if not pending and not reset:
                return
            local.pending, local.reset = 0, False
            local.written_at = time.monotonic()
        now = datetime.now(UTC)
        update: CircuitUpdate | None
        try:
            if pending:
                update = await asyncio.to_thread(
                    self.store.record_circuit_failures, key, pending, threshold=rule.failures,
                    cooldown=rule.cooldown, error=error, now=now, reset=reset,
                )  # fmt: skip
            else:
                owner = self.owner if probe else None
                update = await asyncio.to_thread(self.store.reset_circuit_failures, key, now=now, probe_owner=owner)
        except StoreUnavailable:
            with self._lock:  # counted again with the next write; the next check reads the state again
                local.pending += pending
                local.reset = local.reset or reset
                local.opening = False
            return
        self._apply(key, rule.failures, update)

    def _apply(self, key: str, threshold: int, update: CircuitUpdate | None) -> None:
        with self._lock:
            local = self._breaker(key)
            local.opening = False
            if update is None:  # nothing changed: an answer found the count at zero already
                local.known = 0 if not local.open else local.known
                return
            after = update.after
            local.known = after.failures
            local.open = after.state != "closed"
        if update.opened:
            self._log_opened(after, threshold, reopened=update.before == "half_open")
        elif update.closed:
            log.warning(
                "circuit %s closed: the probe delivery was answered; deliveries resume", key,
                extra={"data": {"circuit": key, "state": "closed"}},
            )  # fmt: skip

    @staticmethod
    def _log_opened(after: CircuitState, threshold: int, *, reopened: bool) -> None:
        until = when(after.open_until) if after.open_until is not None else "a probe decides"
        why = (
            "the probe delivery failed"
            if reopened
            else f"{after.failures} consecutive transient delivery failures (threshold {threshold})"
        )
        log.warning(
            "circuit %s open: %s, last: %s; nothing is sent to it until %s, then one probe delivery",
            after.key, why, after.last_error, until,
            extra={"data": {"circuit": after.key, "state": "open", "until": until, "failures": after.failures}},
        )  # fmt: skip


class BatchBreaker:
    """One claimed batch's part in its route's breaker: whether a delivery may start, and what each outcome counts."""

    __slots__ = ("_decided", "_due", "gate", "key", "local", "probe", "route", "threshold")

    def __init__(self, gate: DeliveryGate, route: CompiledRoute, probe: bool) -> None:
        assert route.circuit is not None
        self.gate = gate
        self.route = route
        self.key = route.circuit_key
        self.threshold = route.circuit.failures
        self.probe = probe
        with gate._lock:
            self.local = gate._breaker(self.key)
        self._due = False
        #: the probe's delivery was answered or failed (not filtered, not left unstarted)
        self._decided = False

    def blocked(self) -> bool:
        """No further delivery may start: the breaker is open (the probe itself always goes)."""
        return not self.probe and self.local.open

    def count(self, outcome: Delivered | Exception) -> bool:
        """Count one delivery's outcome. True when it failed transiently after the breaker opened: the caller
        releases the task instead of settling it, so the attempt is not counted."""
        local = self.local
        with self.gate._lock:
            if isinstance(outcome, TransientError):
                if local.open and not self.probe:
                    return True
                local.pending += 1
                local.error = self.gate.project.redact(outcome.message)
                if self.probe:
                    self._decided = self._due = True
                elif (0 if local.reset else local.known) + local.pending >= self.threshold:
                    local.open = local.opening = True
                    self._due = True
                elif time.monotonic() - local.written_at >= FLUSH_EVERY:
                    self._due = True
            elif isinstance(outcome, Delivered | PermanentError):  # answered: the target is up
                if self.probe:
                    local.pending = 0
                    local.reset = self._decided = self._due = True
                elif not local.open:
                    local.pending = 0
                    if local.known:
                        local.reset = True
            # anything else is a bug in the connector: it says nothing about the target
        return False

    async def flush_if_due(self) -> None:
        """Write now when the threshold was reached (or the probe decided), or a while has passed since the last."""
        if self._due:
            self._due = False
            await self.gate.flush(self.route, probe=self.probe)

    def abandon(self) -> None:
        """The batch was cancelled or broke: what it counted is written with the next batch's; the next check reads
        the breaker from the store instead of waiting for this batch's write."""
        with self.gate._lock:
            self.local.opening = False

    async def finish(self) -> None:
        """At the end of the batch: write what is left; a probe that decided nothing is given back."""
        await self.gate.flush(self.route, probe=self.probe)
        if self.probe and not self._decided:
            await self.gate.give_back_probe(self.route)


def circuit_rows(project: Project, store: Store) -> list[dict[str, Any]]:
    """Every breaker: the configured ones (with their routes and settings) and any other the database holds."""
    rows = store.circuits()
    configured: dict[str, dict[str, Any]] = {}
    for route in project.routes.values():
        rule = route.circuit
        if rule is None:
            continue
        entry = configured.get(route.circuit_key)
        if entry is None:
            entry = configured[route.circuit_key] = {
                "failures_to_open": rule.failures,
                "cooldown_s": rule.cooldown,
                "routes": [],
            }
        entry["routes"].append(route.name)
    out: list[dict[str, Any]] = []
    for key in sorted({*configured, *rows}):
        row = rows.get(key) or CircuitState(key)
        data = row.to_json()
        data.update(configured.get(key) or {"failures_to_open": None, "cooldown_s": None, "routes": []})
        out.append(data)
    return out
