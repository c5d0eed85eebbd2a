"""``GET /metrics``: Prometheus text, read from the store's counters at scrape time.

Task counts, import/delivery totals and queue age come from the store (so every worker's work is counted,
whatever process did it). Delivery latency and errors by class are observed in this process by
:class:`DeliveryObserver`, which hears the ledger's ``TasksSettled`` events (every delivery result this process
commits), so the engine needs no metrics code. Deliveries made by other processes (``crossdock worker``)
only show there if they attach an observer too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from crossdock.engine.delivery_gate import circuit_rows
from crossdock.engine.maintenance import maintenance_until
from crossdock.engine.project import Project
from crossdock.errors import StoreUnavailable
from crossdock.store import Settlement, Store
from crossdock.store.events import LedgerEvent, TasksSettled
from crossdock.tasks import Action

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StoreCollector(Collector):
    """Reads the counters at scrape time; never COUNT(*). With the project, also its delivery gates: circuit
    breakers (from the store, so every process's view) and maintenance windows covering now."""

    def __init__(self, store: Store, routes: Callable[[], Sequence[str]], project: Project | None = None) -> None:
        self.store = store
        self.routes = routes
        self.project = project

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "crossdock_database_up", "1 while the database answers, 0 during an outage (the other metrics pause)."
        )
        try:
            metrics = list(self._from_store())
        except StoreUnavailable:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from metrics

    def _from_store(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("crossdock_tasks", "Tasks by route and status.", labels=["route", "status"])
        for route, counts in sorted(self.store.stats().by_route.items()):
            for status, n in sorted(counts.items()):
                tasks.add_metric([route, status], n)
        yield tasks
        imported = CounterMetricFamily("crossdock_imported", "Records imported as tasks, per route.", labels=["route"])
        delivered = CounterMetricFamily(
            "crossdock_delivered", "Tasks delivered (finished or waiting), per route.", labels=["route"]
        )
        failed = CounterMetricFamily("crossdock_delivery_failed", "Tasks that failed, per route.", labels=["route"])
        totals: dict[str, dict[str, int]] = {}
        for route in self.routes():
            per_kind: dict[str, int] = {}
            for kinds in self.store.throughput(since=_EPOCH, route=route).values():
                for kind, n in kinds.items():
                    per_kind[kind] = per_kind.get(kind, 0) + n
            totals[route] = per_kind
        for route, per_kind in sorted(totals.items()):
            imported.add_metric([route], per_kind.get("imported", 0))
            delivered.add_metric([route], per_kind.get("finished", 0))
            failed.add_metric([route], per_kind.get("failed", 0))
        yield imported
        yield delivered
        yield failed
        age = GaugeMetricFamily(
            "crossdock_queue_age_seconds",
            "Age of the oldest due work per route and status (new, retry, waiting); 0 when none.",
            labels=["route", "status"],
        )
        now = datetime.now(UTC)
        due = self.store.oldest_due()
        for route in self.routes():
            for status in ("new", "retry", "waiting"):
                at = due.get(route, {}).get(status)
                age.add_metric([route, status], max((now - at).total_seconds(), 0.0) if at else 0.0)
        yield age
        if self.project is not None:
            yield from self._gates(now)

    def _gates(self, now: datetime) -> Iterator[Metric]:
        project = self.project
        assert project is not None
        circuit = GaugeMetricFamily(
            "crossdock_circuit_open",
            "1 while a circuit breaker stops deliveries to its target (open or half-open), else 0.",
            labels=["key"],
        )
        for row in circuit_rows(project, self.store):
            circuit.add_metric([row["key"]], 0.0 if row["state"] == "closed" else 1.0)
        yield circuit
        maintenance = GaugeMetricFamily(
            "crossdock_route_in_maintenance",
            "1 while a maintenance window (the route's or its target connection's) covers now, else 0.",
            labels=["route"],
        )
        for name, route in sorted(project.routes.items()):
            maintenance.add_metric([name], 1.0 if maintenance_until(route.maintenance, now) is not None else 0.0)
        yield maintenance


class DeliveryObserver:
    """Counts delivery outcomes and latency from the settlements the exporter hands the store."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "crossdock_delivery_seconds",
            "Time one delivery took (request to answer), per route and outcome.",
            ["route", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "crossdock_delivery_errors",
            "Failed delivery attempts by error class (transient, permanent, internal).",
            ["route", "error_class"],
            registry=registry,
        )
        self._routes: dict[int, str] = {}
        self._lock = threading.Lock()

    def attach(self, store: Store) -> None:
        """Hear the delivery results ``store`` commits (once per observer and store)."""
        if self.on_event in store.events.subscribers:
            return
        store.events.subscribe(self.on_event)

    def on_event(self, event: LedgerEvent) -> None:
        if isinstance(event, TasksSettled):
            self.observe(event.settled)

    def observe(self, settled: Sequence[tuple[Settlement, str]]) -> None:
        for s, route in settled:
            details: dict[str, Any] = s.details or {}
            outcome = _OUTCOME.get(s.action)
            if outcome is None:
                continue
            ms = details.get("duration_ms")
            if isinstance(ms, int | float):
                self.latency.labels(route, outcome).observe(ms / 1000.0)
            error_class = details.get("error_class")
            if outcome != "delivered" and isinstance(error_class, str):
                self.errors.labels(route, error_class).inc()


_OUTCOME = {
    Action.DELIVERED: "delivered",
    Action.DELIVERED_WAITING: "delivered",
    Action.SCHEDULE_RETRY: "retry",
    Action.DELIVERY_FAILED: "failed",
}


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
