"""What the ledger tells the rest of crossdock after a write commits: metrics, the audit log and alerts listen
here instead of wrapping store methods."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from crossdock.store.base import ActionResult, Settlement, TaskFilter
from crossdock.tasks import Action, Status

log = logging.getLogger("crossdock.store")


@dataclass(frozen=True, slots=True)
class TasksImported:
    route: str
    #: created tasks per status
    created: dict[str, int]
    superseded: int


@dataclass(frozen=True, slots=True)
class TasksSettled:
    """Delivery results that changed a task, with each task's route."""

    settled: list[tuple[Settlement, str]]


@dataclass(frozen=True, slots=True)
class LeasesRecovered:
    #: (task id, route, where it went)
    recovered: list[tuple[int, str, Status]]


@dataclass(frozen=True, slots=True)
class ActionTaken:
    """A manual action (CLI, API, dashboard), written to the audit log by :class:`Ledger` itself."""

    action: Action
    actor: str
    selection: TaskFilter
    reason: str | None
    result: ActionResult


@dataclass(frozen=True, slots=True)
class TaskEdited:
    """A person replayed a task with a corrected entity (``crossdock tasks edit``, the API, the dashboard); the
    ledger wrote the audit row in the same transaction."""

    actor: str
    route: str
    original_id: int
    task_id: int
    #: the original's status before and after (skipped, or unchanged when no skip applies)
    original_before: Status
    original_after: Status
    #: the paths that changed
    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TasksPruned:
    actor: str
    #: deleted tasks per (route, status)
    deleted: dict[tuple[str, str], int]


@dataclass(frozen=True, slots=True)
class RoutePaused:
    """crossdock switched a route off by itself (``pause_after``)."""

    route: str
    reason: str


@dataclass(frozen=True, slots=True)
class CircuitOpened:
    """A circuit breaker opened: nothing is delivered to its target until ``until``, then one probe goes."""

    key: str
    failures: int
    until: datetime | None
    error: str | None
    #: True when a failed probe opened it again
    reopened: bool = False


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    """A circuit breaker closed: its probe was answered, or a person closed it (``by`` says who)."""

    key: str
    by: str


LedgerEvent = (
    TasksImported
    | TasksSettled
    | LeasesRecovered
    | ActionTaken
    | TaskEdited
    | TasksPruned
    | RoutePaused
    | CircuitOpened
    | CircuitClosed
)


@dataclass
class Events:
    """Subscribers hear an event after its transaction committed; one that raises is logged, never the caller's
    problem (metrics must not take a delivery down)."""

    subscribers: list[Callable[[LedgerEvent], None]] = field(default_factory=list)

    def subscribe(self, subscriber: Callable[[LedgerEvent], None]) -> Callable[[], None]:
        """Add ``subscriber``; returns the call that removes it."""
        self.subscribers.append(subscriber)
        return lambda: self.subscribers.remove(subscriber) if subscriber in self.subscribers else None

    def emit(self, event: LedgerEvent) -> None:
        for subscriber in list(self.subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("a subscriber of %s failed", type(event).__name__)
