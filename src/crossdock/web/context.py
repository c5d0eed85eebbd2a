"""What every request handler shares: the project, the store, auth, and the read models built on them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from fastapi import HTTPException, Request

from crossdock.engine.delivery_gate import circuit_rows
from crossdock.engine.maintenance import imports_stopped_until, maintenance_until
from crossdock.engine.project import CompiledRoute, Project, effective_active
from crossdock.redact import Redactor
from crossdock.store import Store, TaskFilter
from crossdock.store.base import empty_counts
from crossdock.tasks import TRANSITIONS, Action, Status, iso
from crossdock.web.auth import Authenticator, Principal
from crossdock.web.metrics import DeliveryObserver
from crossdock.web.settings import WebSettings

PARTS = ("incoming", "outgoing")


@dataclass
class WebContext:
    project: Project
    store: Store
    settings: WebSettings
    auth: Authenticator
    observer: DeliveryObserver
    #: background "run now" jobs by (route, part), so the same part never runs twice at once
    running: dict[tuple[str, str], asyncio.Task[Any]] = field(default_factory=dict)

    @property
    def redact(self) -> Redactor:
        return self.project.redact

    def now(self) -> datetime:
        return datetime.now(UTC)

    def audit(
        self,
        who: Principal | str,
        action: str,
        target: dict[str, Any],
        *,
        changed: int | None = None,
        detail: str | None = None,
    ) -> None:
        actor = who.actor if isinstance(who, Principal) else who
        self.store.record_audit(
            actor,
            action,
            target,
            changed=changed,
            detail=self.redact(detail) if detail else None,
            now=self.now(),
        )

    # --- routes ----------------------------------------------------------------------------------

    def route(self, name: str) -> CompiledRoute:
        route = self.project.routes.get(name)
        if route is None:
            raise HTTPException(404, f"no route named {name!r}")
        return route

    def route_active(self, name: str) -> bool:
        """The database's override (activate/deactivate) wins over the config's ``active``."""
        return effective_active(self.project.routes[name], self.store.route_states())

    def routes_json(self) -> list[dict[str, Any]]:
        """One row per configured route, as ``GET /api/v1/routes`` answers and the Routes page shows."""
        stats = self.store.stats()
        states = self.store.route_states()
        now = self.now()
        circuits = {c["key"]: c for c in self.circuits_json()}
        rows: list[dict[str, Any]] = []
        for name, route in self.project.routes.items():
            cfg = route.config
            state = states.get(name)
            active = effective_active(route, states)
            in_schedule = route.incoming.config.schedule
            out_schedule = cfg.outgoing.schedule
            rows.append(
                {
                    "name": name,
                    "active": active,
                    "active_in_config": cfg.active,
                    # set when crossdock switched the route off itself (pause_after); activating clears it
                    "paused_reason": state.paused_reason if state else None,
                    "paused_at": iso(state.paused_at) if state else None,
                    # a window of the route or its target's connection covers now: nothing is delivered until then
                    "maintenance_until": iso(maintenance_until(route.maintenance, now)),
                    # an imports: false window (the route's, or its source's connection's): nothing is read either
                    "imports_stopped_until": iso(
                        imports_stopped_until((*cfg.maintenance, *route.incoming.maintenance), now)
                    ),
                    "circuit": circuits.get(route.circuit_key) if route.circuit is not None else None,
                    "realtime": cfg.realtime,
                    "waiting": cfg.waiting,
                    "retry": cfg.retry.model_dump() if cfg.retry else None,
                    "incoming": route.incoming.name if route.incoming.shared else None,
                    "incoming_type": route.incoming.source_options.type,
                    "outgoing_type": route.target_options.type,
                    "counts": {**empty_counts(), **stats.by_route.get(name, {})},
                    "incoming_schedule": in_schedule,
                    "outgoing_schedule": out_schedule,
                    "next_incoming": iso(_next_fire(in_schedule, state.incoming_next if state else None, now)),
                    "next_outgoing": iso(_next_fire(out_schedule, state.outgoing_next if state else None, now)),
                    "running": [part for part in PARTS if (name, part) in self.running],
                    "last_runs": [r.to_json() for r in self.store.list_runs(name, 5)],
                }
            )
        return rows

    def circuits_json(self) -> list[dict[str, Any]]:
        """Every circuit breaker, configured or stored, as ``GET /api/v1/circuits`` answers."""
        return circuit_rows(self.project, self.store)

    # --- tasks -----------------------------------------------------------------------------------

    def matching_count(self, selection: TaskFilter) -> int:
        """How many tasks a filter covers: from the counters when it is only status/route, else COUNT(*)."""
        if not (
            selection.ids
            or selection.identifier
            or selection.search
            or selection.created_after
            or selection.created_before
            or selection.where
        ):
            counts = self.store.stats(selection.route).by_status
            statuses = [s.value for s in selection.statuses] if selection.statuses else list(counts)
            return sum(counts.get(s, 0) for s in statuses)
        return self.store.count_tasks(selection)

    def changeable_count(self, action: Action, selection: TaskFilter) -> int:
        """How many of the matching tasks the action would change (the confirmation's number)."""
        sources = TRANSITIONS[action].sources
        wanted = [s for s in (selection.statuses or list(Status)) if s in sources]
        if not wanted:
            return 0
        narrowed = TaskFilter(
            ids=selection.ids,
            statuses=wanted,
            route=selection.route,
            identifier=selection.identifier,
            created_after=selection.created_after,
            created_before=selection.created_before,
            search=selection.search,
            where=selection.where,
        )
        return self.matching_count(narrowed)


def _next_fire(schedule: str | None, stored: datetime | None, now: datetime) -> datetime | None:
    """The scheduler's stored next fire time when it is still ahead, else the cron's next time from now."""
    if schedule is None:
        return None
    if stored is not None and stored > now - timedelta(seconds=60):
        return stored
    nxt = croniter(schedule, now).get_next(datetime)
    return nxt if isinstance(nxt, datetime) else None


def get_ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def redact_data(value: Any, redact: Callable[[str], str]) -> Any:
    """Apply the redactor to every string (keys included) in a JSON-like structure."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {(redact(k) if isinstance(k, str) else k): redact_data(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v, redact) for v in value]
    return value
