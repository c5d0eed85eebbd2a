"""Finding what to tell: each rule looks at the database from where it stopped looking, so failures settled by any
worker process count once, and a new leader continues where the last one stopped.

Event rules (``task_failed``, ``run_error``, ``route_paused``, ``circuit_open``) count occurrences per route. The
first occurrence after a quiet spell opens the route's digest window; when the window has passed, one message
covers everything in it. ``backlog`` is a condition instead: it is reported when it starts and, for ``recovered``
rules, when it ends, as is every problem another rule reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from crossdock.alerts.messages import TOP_ERRORS, Alert, Links, clip
from crossdock.config.models import AlertRule, AlertsConfig
from crossdock.store.base import CircuitState, RouteState, Run, Store

log = logging.getLogger("crossdock.alerts")

#: seconds the rules look behind the clock: a settle takes its timestamp before it commits, so a check must not
#: move past a moment whose writes may still be on their way
LAG = 5.0
#: run states that mean the run broke
RUN_ERRORS = ("failed", "abandoned")
#: a task_failed problem counts as over when no task of the route failed for this long (or the digest, if longer)
#: and one finished since
QUIET = 60.0
#: runs read per check for run_error rules
RUNS_READ = 500


@dataclass(frozen=True, slots=True)
class Occurrence:
    route: str
    at: datetime
    error: str | None
    count: int = 1
    task_id: int | None = None


@dataclass(slots=True)
class Found:
    """An alert and the rule (by index) whose channels it goes to."""

    rule: int
    alert: Alert


@dataclass(slots=True)
class _Tick:
    """What one check read once and shares between rules."""

    now: datetime
    horizon: datetime
    runs: list[Run] | None = None
    states: dict[str, RouteState] | None = None
    circuits: dict[str, CircuitState] | None = None
    found: list[Found] = field(default_factory=list)
    recovered: list[tuple[str, str, str]] = field(default_factory=list)


class Rules:
    """Evaluate every configured rule against the store; remember per rule what it has seen."""

    def __init__(
        self,
        config: AlertsConfig,
        store: Store,
        routes: Iterable[str],
        links: Links,
        redact: Callable[[str], str],
        circuit_routes: dict[str, list[str]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.routes = list(routes)
        self.links = links
        self.redact = redact
        #: breaker key (a connection's name, or a route's) -> the routes it holds back
        self.circuit_routes = circuit_routes or {}
        #: the breakers as this check read them (for the message of an opening)
        self._circuits_seen: dict[str, CircuitState] = {}

    def state_key(self, index: int) -> str:
        return f"rule:{self.config.rule_key(index)}"

    def check(self, now: datetime) -> tuple[list[Found], dict[str, dict[str, Any]]]:
        """What to send now, and each rule's state to save with it (in one transaction)."""
        tick = _Tick(now=now, horizon=now - timedelta(seconds=LAG))
        states: dict[str, dict[str, Any]] = {}
        for index, rule in enumerate(self.config.rules):
            if rule.event == "recovered":
                continue
            key = self.state_key(index)
            state = self.store.alert_state(key) or {"base": tick.horizon.timestamp(), "since": {}, "open": {}}
            if rule.event == "backlog":
                self._backlog(index, rule, state, tick)
            else:
                self._windowed(index, rule, state, tick)
                self._recoveries(rule, state, tick)
            states[key] = state
        self._recovered_alerts(tick)
        return tick.found, states

    # --- event rules ---------------------------------------------------------------------------------

    def _covers(self, rule: AlertRule, route: str) -> bool:
        """Whether ``route`` (for circuits: the breaker key) is one of the rule's; a breaker is when any route it
        holds back is."""
        if rule.routes is None or route in rule.routes:
            return True
        return rule.event in ("circuit_open", "recovered") and any(
            r in rule.routes for r in self.circuit_routes.get(route, ())
        )

    def _windowed(self, index: int, rule: AlertRule, state: dict[str, Any], tick: _Tick) -> None:
        horizon = tick.horizon.timestamp()
        base: float = state["base"]
        since: dict[str, float] = state["since"]
        lowest = min([base, *since.values()])
        found = [o for o in self._occurrences(rule, lowest, horizon, None, tick) if self._covers(rule, o.route)]
        pending: dict[str, float] = {}
        for route in sorted({o.route for o in found}):
            start = since.get(route, base)
            mine = [o for o in found if o.route == route]
            if start > lowest:
                mine = self._occurrences(rule, start, horizon, route, tick)
            mine = [o for o in mine if o.at.timestamp() > start]
            if not mine:
                continue
            first = min(o.at for o in mine).timestamp()
            end = first + rule.window
            if end > horizon:
                pending[route] = start  # the window is still open
                continue
            window = mine if end >= horizon else self._occurrences(rule, start, end, route, tick)
            window = [o for o in window if start < o.at.timestamp() <= end]
            if sum(o.count for o in window) >= rule.min_count:
                tick.found.append(Found(index, self._alert(rule, index, route, window, first, end)))
                state["open"][route] = {"last": max(o.at for o in window).timestamp()}
            if end < horizon:
                pending[route] = end
        state["base"] = horizon
        state["since"] = pending

    def _occurrences(
        self, rule: AlertRule, since: float, until: float, route: str | None, tick: _Tick
    ) -> list[Occurrence]:
        lo, hi = _at(since), _at(until)
        if rule.event == "task_failed":
            return [
                Occurrence(g.route, g.first_at, g.error, g.count, g.latest_task_id)
                for g in self.store.failure_groups(since=lo, until=hi, route=route)
            ]
        if rule.event == "run_error":
            if tick.runs is None:
                tick.runs = self.store.list_runs(limit=RUNS_READ)
            return [
                Occurrence(r.route, r.finished_at, f"{r.part} run {r.id} {r.status}: {r.error or 'no error text'}")
                for r in tick.runs
                if r.status in RUN_ERRORS
                and r.finished_at is not None
                and lo < r.finished_at <= hi
                and route in (None, r.route)
            ]
        if rule.event == "route_paused":
            return [
                Occurrence(name, s.paused_at, s.paused_reason)
                for name, s in self._route_states(tick).items()
                if s.paused_at is not None and lo < s.paused_at <= hi and route in (None, name)
            ]
        if rule.event == "circuit_open":
            # an open or half-open breaker opened (or re-opened after a failed probe) in the period
            return [
                Occurrence(key, c.opened_at, c.last_error)
                for key, c in self._circuits(tick).items()
                if c.state != "closed" and c.opened_at is not None and lo < c.opened_at <= hi and route in (None, key)
            ]
        return []  # pragma: no cover - the config allows no other event here

    def _route_states(self, tick: _Tick) -> dict[str, RouteState]:
        if tick.states is None:
            tick.states = self.store.route_states()
        return tick.states

    def _circuits(self, tick: _Tick) -> dict[str, CircuitState]:
        if tick.circuits is None:
            tick.circuits = self._circuits_seen = self.store.circuits()
        return tick.circuits

    def _alert(
        self, rule: AlertRule, index: int, route: str, window: list[Occurrence], first: float, end: float
    ) -> Alert:
        count = sum(o.count for o in window)
        errors: dict[str | None, list[int]] = {}
        latest: dict[str | None, int | None] = {}
        for o in window:
            errors.setdefault(o.error, []).append(o.count)
            if o.task_id is not None:
                latest[o.error] = max(o.task_id, latest.get(o.error) or 0)
        ranked = sorted(errors.items(), key=lambda kv: sum(kv[1]), reverse=True)[:TOP_ERRORS]
        top = [
            {
                "error": clip(self.redact(error or "")) if error else clip(None),
                "count": sum(counts),
                "task_id": latest.get(error),
                "url": self.links.task(latest.get(error)),
            }
            for error, counts in ranked
        ]
        span = f"between {_hm(first)} and {_hm(end)} UTC" if rule.window else f"at {_hm(first)} UTC"
        if rule.event == "task_failed":
            title = f"{count} task{'s' if count != 1 else ''} failed on route {route}"
            lines = [f"{count} task(s) of route {route} failed {span}."]
            url = self.links.tasks(route, "failed")
        elif rule.event == "run_error":
            title = f"{count} run{'s' if count != 1 else ''} of {route} failed"
            lines = [f"{count} run(s) of {route} failed or were abandoned {span}."]
            url = self.links.page("/routes")
        elif rule.event == "route_paused":
            title = f"Route {route} was paused"
            lines = [
                self.redact(window[-1].error or "paused by crossdock"),
                "Activate it again once the cause is fixed.",
            ]
            url = self.links.page("/routes")
        else:
            held = self.circuit_routes.get(route) or [route]
            state = self._circuits_seen.get(route)
            until = state.open_until.strftime("%Y-%m-%d %H:%M:%S UTC") if state and state.open_until else "its cooldown"
            title = f"Circuit open for {route}"
            lines = [
                f"Deliveries to {route} stopped after {state.failures if state else 'repeated'} consecutive "
                f"failures ({'route' if len(held) == 1 else 'routes'} {', '.join(held)}); nothing is sent until "
                f"{until}, then one probe decides. Tasks keep their attempts.",
                f"Last error: {self.redact(window[-1].error or 'none recorded')}",
            ]
            url = self.links.page("/routes")
        return Alert(
            event=rule.event,
            rule=self.config.rule_key(index),
            route=route,
            title=title,
            lines=lines,
            count=count,
            window=(_at(first), _at(end)) if rule.window else None,
            top_errors=top if rule.event in ("task_failed", "run_error") else [],
            url=url,
            at=_at(end),
        )

    # --- conditions ----------------------------------------------------------------------------------

    def _backlog(self, index: int, rule: AlertRule, state: dict[str, Any], tick: _Tick) -> None:
        assert rule.older_than is not None
        due = self.store.oldest_due()
        open_: dict[str, Any] = state["open"]
        for route in sorted(set(due) | set(open_)):
            if not self._covers(rule, route):
                continue
            times = list(due.get(route, {}).values())
            oldest = min(times) if times else None
            age = (tick.now - oldest).total_seconds() if oldest is not None else 0.0
            if age >= rule.older_than and route not in open_:
                assert oldest is not None
                open_[route] = {"since": oldest.timestamp()}
                tick.found.append(
                    Found(
                        index,
                        Alert(
                            event="backlog",
                            rule=self.config.rule_key(index),
                            route=route,
                            title=f"Route {route} is backed up: its oldest due task waits for {_age(age)}",
                            lines=[
                                f"The oldest new, retry or waiting task of {route} has been due since "
                                f"{oldest.isoformat(timespec='seconds')} (more than {_age(rule.older_than)})."
                            ],
                            url=self.links.tasks(route),
                            at=tick.now,
                        ),
                    )
                )
            elif age < rule.older_than and route in open_:
                del open_[route]
                tick.recovered.append((route, "backlog", f"its oldest due task now waits {_age(age)}"))

    def _recoveries(self, rule: AlertRule, state: dict[str, Any], tick: _Tick) -> None:
        """Close the problems this rule reported that are over."""
        open_: dict[str, Any] = state["open"]
        for route in list(open_):
            last = float(open_[route].get("last", 0.0))
            if rule.event == "task_failed":
                if route in state["since"]:
                    continue  # failures still counted in an open window
                quiet = max(QUIET, rule.window)
                if tick.horizon.timestamp() - last < quiet or not self._finished_since(route, last):
                    continue
                how = f"tasks finish again and none failed since {_hm(last)} UTC"
            elif rule.event == "run_error":
                runs = self.store.list_runs(route=route, limit=1)
                if not runs or runs[0].status != "finished" or (runs[0].finished_at or tick.now).timestamp() <= last:
                    continue
                how = f"run {runs[0].id} finished without error"
            elif rule.event == "route_paused":
                st = self._route_states(tick).get(route)
                if st is None or not st.active:
                    continue
                how = "the route is active again"
            else:
                breaker = self._circuits(tick).get(route)
                if breaker is not None and breaker.state != "closed":
                    continue
                how = "the circuit closed: deliveries go through again"
            del open_[route]
            tick.recovered.append((route, rule.event, how))

    def _finished_since(self, route: str, since: float) -> bool:
        """Whether a task of ``route`` finished after ``since`` (to the minute: the throughput counters)."""
        minute = int(since // 60)
        counts = self.store.throughput(since=_at(since), route=route)
        return any(m > minute and kinds.get("finished", 0) > 0 for m, kinds in counts.items())

    def _recovered_alerts(self, tick: _Tick) -> None:
        for route, problem, how in tick.recovered:
            for index, rule in enumerate(self.config.rules):
                if rule.event != "recovered" or not self._covers(rule, route):
                    continue
                tick.found.append(
                    Found(
                        index,
                        Alert(
                            event="recovered",
                            rule=self.config.rule_key(index),
                            route=route,
                            title=f"Recovered: {route} ({problem.replace('_', ' ')})",
                            lines=[f"{route}: {how}."],
                            url=self.links.tasks(route),
                            at=tick.now,
                        ),
                    )
                )


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _hm(ts: float) -> str:
    return _at(ts).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"
