"""Auto-pause (route key ``pause_after``): a route whose deliveries keep failing is switched off by crossdock, with
the reason stored and shown, instead of burning every task's attempts on a target that refuses them all.

It listens to the ledger's ``TasksSettled`` events of the process that delivers. ``failed: N`` counts consecutive
failed tasks as this process settles them (a finished or waiting task starts the count again); with several
worker processes each counts its own, so a route pauses after at most N failures per process. ``failed_ratio``
reads the route's per-minute throughput from the store, so it counts every process's deliveries.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from crossdock.engine.project import CompiledRoute, Project, effective_active
from crossdock.errors import StoreUnavailable
from crossdock.store import Store
from crossdock.store.events import LedgerEvent, RoutePaused, TasksSettled
from crossdock.tasks import Action

log = logging.getLogger("crossdock.engine")

#: who the audit log and the timeline name for a pause
ACTOR = "auto-pause"
#: seconds between two ratio checks of one route (each reads the throughput table)
RATIO_CHECK_EVERY = 1.0


class AutoPause:
    """One per store and process: :meth:`attach` returns the existing one."""

    def __init__(self, project: Project, store: Store) -> None:
        self.project = project
        self.store = store
        #: routes this process paused, so its exporter stops claiming for them at once
        self.paused: set[str] = set()
        self._reasons: dict[str, str] = {}
        self._streak: dict[str, int] = {}
        self._ratio_checked: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def attach(cls, project: Project, store: Store) -> AutoPause:
        """The store's pauser for ``project``. It listens only while some route has ``pause_after``, so the
        settle path of a project without one carries no extra work."""
        pauser: AutoPause | None = store.__dict__.get("_auto_pause")
        if pauser is None:
            pauser = store.__dict__["_auto_pause"] = cls(project, store)
        pauser.project = project
        listening = pauser.on_event in store.events.subscribers
        watched = any(route.config.pause_after is not None for route in project.routes.values())
        if watched and not listening:
            store.events.subscribe(pauser.on_event)
        elif listening and not watched:
            store.events.subscribers.remove(pauser.on_event)
        return pauser

    def reason(self, route: str) -> str | None:
        return self._reasons.get(route)

    def still_paused(self, route: CompiledRoute) -> bool:
        """Whether a route this process paused is still off in the database; once a person has activated it
        again, it is forgotten here and counted from zero."""
        if route.name not in self.paused:
            return False
        if not effective_active(route, self.store.route_states()):
            return True
        with self._lock:
            self.paused.discard(route.name)
            self._streak.pop(route.name, None)
            self._reasons.pop(route.name, None)
        return False

    def on_event(self, event: LedgerEvent) -> None:
        if not isinstance(event, TasksSettled):
            return
        routes = self.project.routes
        due: list[tuple[str, str]] = []
        settled_routes: set[str] = set()
        with self._lock:
            for settlement, route_name in event.settled:
                route = routes.get(route_name)
                rule = route.config.pause_after if route is not None else None
                if rule is None or route_name in self.paused:
                    continue
                settled_routes.add(route_name)
                outcome = settlement.action
                if outcome is Action.DELIVERY_FAILED:
                    streak = self._streak[route_name] = self._streak.get(route_name, 0) + 1
                    if rule.failed is not None and streak >= rule.failed:
                        due.append((route_name, f"paused after {streak} consecutive failed tasks"))
                        self.paused.add(route_name)
                elif outcome in (Action.DELIVERED, Action.DELIVERED_WAITING):
                    self._streak[route_name] = 0
            ratio_routes = [r for r in settled_routes if r not in self.paused and self._wants_ratio_check(r)]
        for route_name in ratio_routes:
            reason = self._ratio_reason(route_name)
            if reason is not None:
                with self._lock:
                    self.paused.add(route_name)
                due.append((route_name, reason))
        for route_name, reason in due:
            self._pause(route_name, reason)

    def _wants_ratio_check(self, route_name: str) -> bool:
        route = self.project.routes.get(route_name)
        rule = route.config.pause_after if route is not None else None
        if rule is None or rule.failed_ratio is None:
            return False
        now = time.monotonic()
        if now - self._ratio_checked.get(route_name, 0.0) < RATIO_CHECK_EVERY:
            return False
        self._ratio_checked[route_name] = now
        return True

    def _ratio_reason(self, route_name: str) -> str | None:
        rule = self.project.routes[route_name].config.pause_after
        assert rule is not None and rule.failed_ratio is not None
        since = datetime.now(UTC) - timedelta(seconds=rule.within)
        try:
            minutes = self.store.throughput(since=since, route=route_name)
        except StoreUnavailable:
            return None
        failed = sum(kinds.get("failed", 0) for kinds in minutes.values())
        settled = failed + sum(kinds.get("finished", 0) for kinds in minutes.values())
        if settled < rule.min_tasks or failed / settled < rule.failed_ratio:
            return None
        return (
            f"paused after {failed} of {settled} tasks failed within {_duration(rule.within)} "
            f"(pause_after.failed_ratio {rule.failed_ratio:g})"
        )

    def _pause(self, route_name: str, reason: str) -> None:
        now = datetime.now(UTC)
        text = f"{reason} at {now.strftime('%Y-%m-%d %H:%M:%S')} UTC; activate the route to resume"
        try:
            self.store.set_route_active(route_name, False, now=now, paused_reason=text)
            self.store.record_audit(ACTOR, "route.pause", {"route": route_name}, detail=text, now=now)
        except StoreUnavailable:
            log.warning("route %s should pause (%s) but the database is unavailable", route_name, reason)
            return
        self._reasons[route_name] = text
        log.warning("route %s %s", route_name, text, extra={"data": {"route": route_name, "paused": text}})
        self.store.events.emit(RoutePaused(route_name, text))


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
