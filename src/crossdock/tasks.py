"""The task status machine. Pure: no I/O. Nothing else decides whether a status may change.

Stores read :data:`TRANSITIONS` to build their guarded updates (``WHERE status IN (...)``), so two workers can
never both win the same change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from crossdock.errors import TransitionRefused


class Status(StrEnum):
    """The status of a task. Lower-case strings everywhere (API, CLI, database)."""

    #: imported, waiting for the outgoing to claim it
    NEW = "new"
    #: claimed by a worker (under a lease) and being delivered
    PROCESSING = "processing"
    #: the target accepted it
    FINISHED = "finished"
    #: a permanent error, or no attempts left; the entity is kept
    FAILED = "failed"
    #: dropped by a filter, unchanged since last sent, superseded, or skipped by a person
    SKIPPED = "skipped"
    #: refused at import: validation, size, missing identifier, parse error
    REJECTED = "rejected"
    #: delivered on a ``waiting: true`` route; a person or system decides finished or failed
    WAITING = "waiting"
    #: a transient error; tried again at ``next_attempt_at``
    RETRY = "retry"

    def __str__(self) -> str:
        return self.value


ALL_STATUSES: tuple[Status, ...] = tuple(Status)


class Action(StrEnum):
    """Every cause of a status change. Each maps to exactly one target status."""

    #: a worker claimed due work (lease)
    CLAIM = "claim"
    #: the target accepted it
    DELIVERED = "delivered"
    #: the target accepted it on a waiting route
    DELIVERED_WAITING = "delivered_waiting"
    #: transient error with attempts left
    SCHEDULE_RETRY = "schedule_retry"
    #: permanent error or no attempts left
    DELIVERY_FAILED = "delivery_failed"
    #: an outgoing filter dropped it
    FILTERED_OUT = "filtered_out"
    #: its lease expired and it had never been tried before this attempt
    LEASE_EXPIRED_NEW = "lease_expired_new"
    #: its lease expired after earlier attempts
    LEASE_EXPIRED_RETRY = "lease_expired_retry"
    #: its lease expired and no attempts are left
    LEASE_EXPIRED_FAILED = "lease_expired_failed"
    #: a newer version of the same record arrived before this one was sent
    SUPERSEDE = "supersede"
    #: manual: send it again
    RETRY = "retry"
    #: manual: do not send it
    SKIP = "skip"
    #: manual: settle a waiting task as finished
    FINISH = "finish"
    #: manual: settle a waiting task as failed
    FAIL = "fail"
    #: a shutting-down worker gives back a task it claimed but never started
    RELEASE = "release"
    #: the same for a task it claimed from retry: it stays a retry, with its attempts and last error
    RELEASE_RETRY = "release_retry"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[Status]
    target: Status


def _t(sources: set[Status], target: Status) -> Transition:
    return Transition(frozenset(sources), target)


S = Status
#: The whole table of DESIGN section 2.
TRANSITIONS: dict[Action, Transition] = {
    Action.CLAIM: _t({S.NEW, S.RETRY}, S.PROCESSING),
    Action.DELIVERED: _t({S.PROCESSING}, S.FINISHED),
    Action.DELIVERED_WAITING: _t({S.PROCESSING}, S.WAITING),
    Action.SCHEDULE_RETRY: _t({S.PROCESSING}, S.RETRY),
    Action.DELIVERY_FAILED: _t({S.PROCESSING}, S.FAILED),
    Action.FILTERED_OUT: _t({S.PROCESSING}, S.SKIPPED),
    Action.LEASE_EXPIRED_NEW: _t({S.PROCESSING}, S.NEW),
    Action.LEASE_EXPIRED_RETRY: _t({S.PROCESSING}, S.RETRY),
    Action.LEASE_EXPIRED_FAILED: _t({S.PROCESSING}, S.FAILED),
    Action.RELEASE: _t({S.PROCESSING}, S.NEW),
    Action.RELEASE_RETRY: _t({S.PROCESSING}, S.RETRY),
    Action.SUPERSEDE: _t({S.NEW, S.RETRY}, S.SKIPPED),
    Action.RETRY: _t({S.FINISHED, S.FAILED, S.SKIPPED}, S.NEW),
    Action.SKIP: _t({S.NEW, S.RETRY, S.FAILED, S.WAITING}, S.SKIPPED),
    Action.FINISH: _t({S.WAITING}, S.FINISHED),
    Action.FAIL: _t({S.WAITING}, S.FAILED),
}

#: Actions a person (CLI, API, dashboard) may take.
MANUAL_ACTIONS: tuple[Action, ...] = (Action.RETRY, Action.SKIP, Action.FINISH, Action.FAIL)

#: Statuses a task may be created in by an import.
IMPORT_STATUSES: frozenset[Status] = frozenset({S.NEW, S.PROCESSING, S.SKIPPED, S.REJECTED})

#: Actions after which the attempt counter starts again.
RESETS_ATTEMPTS: frozenset[Action] = frozenset({Action.RETRY})

#: A worker handing back claims it never started: not a delivery result.
RELEASES: frozenset[Action] = frozenset({Action.RELEASE, Action.RELEASE_RETRY})


def transition(action: Action, current: Status) -> Status:
    """Return the status ``action`` leads to from ``current``, or raise :class:`TransitionRefused`."""
    rule = TRANSITIONS[action]
    if current not in rule.sources:
        raise TransitionRefused(refusal_message(action, current))
    return rule.target


def is_allowed(action: Action, current: Status) -> bool:
    return current in TRANSITIONS[action].sources


def allowed_actions(current: Status, actions: tuple[Action, ...] = MANUAL_ACTIONS) -> list[Action]:
    """The actions that may be taken from ``current`` (by default the manual ones)."""
    return [a for a in actions if current in TRANSITIONS[a].sources]


def refusal_message(action: Action, current: Status) -> str:
    rule = TRANSITIONS[action]
    allowed = allowed_actions(current)
    allowed_text = ", ".join(f"{a.value} (→ {TRANSITIONS[a].target.value})" for a in allowed) or "none"
    sources = ", ".join(sorted(s.value for s in rule.sources))
    return (
        f"cannot {action.value} a task in status {current.value}: {action.value} is allowed from {sources}. "
        f"Allowed from {current.value}: {allowed_text}"
    )


@dataclass(slots=True)
class Task:
    """One entity on one route, with its status, attempts, error and log."""

    id: int
    route: str
    identifier: str | None
    status: Status
    entity: Any
    attempts: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    worker: str | None = None
    error: str | None = None
    fingerprint: str | None = None
    seen_count: int = 1
    last_seen_at: datetime | None = None
    run_id: int | None = None
    #: the newer task that superseded this one, or the task an unchanged record matches
    related_task_id: int | None = None
    priority: int = 0
    result: Any = None
    #: the raw text of a record that could not be parsed
    raw: str | None = None
    #: set by a claim (not stored): the status the task was claimed from, for the export log
    claimed_from: Status | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "identifier": self.identifier,
            "status": self.status.value,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "error": self.error,
            "seen_count": self.seen_count,
            "last_seen_at": iso(self.last_seen_at),
            "related_task_id": self.related_task_id,
            "run_id": self.run_id,
            "result": self.result,
        }


@dataclass(slots=True)
class LogLine:
    """One line of a task's history."""

    at: datetime
    level: str
    phase: str
    message: str
    actor: str | None = None
    from_status: Status | None = None
    to_status: Status | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "level": self.level,
            "phase": self.phase,
            "actor": self.actor,
            "from": self.from_status.value if self.from_status else None,
            "to": self.to_status.value if self.to_status else None,
            "message": self.message,
            "details": self.details,
        }


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a trailing Z, the one timestamp format of the API and CLI."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- import decisions (delta) ---------------------------------------------------------------------


class ImportOutcome(StrEnum):
    """What an import does with one record, once compared with the latest task of its identifier."""

    #: a new task row in the intended status
    CREATE = "create"
    #: a new skipped task: unchanged since the latest (finished) task
    CREATE_UNCHANGED = "create_unchanged"
    #: no new row: the latest task's seen count and last-seen time go up
    TOUCH = "touch"


@dataclass(frozen=True, slots=True)
class ImportDecision:
    outcome: ImportOutcome
    #: the latest task (not yet sent) must be superseded by the new one
    supersede_latest: bool = False


#: what a record that passed validation intends to become (the others are filtered or rejected)
POLLED = frozenset({S.NEW, S.PROCESSING})
#: latest-task statuses for which an identical record adds no row
TOUCH_ON_SAME = frozenset({S.NEW, S.PROCESSING, S.RETRY, S.WAITING, S.SKIPPED})
#: latest-task statuses an identical record is sent again after only when the route's ``resend_failed`` allows it:
#: otherwise the target would get the same refused record once per poll, forever (a resend storm)
RESEND_ON_SAME = frozenset({S.FAILED, S.REJECTED})
# the decisions are immutable: one instance each instead of one per imported record
_CREATE = ImportDecision(ImportOutcome.CREATE)
_CREATE_SUPERSEDING = ImportDecision(ImportOutcome.CREATE, supersede_latest=True)
_CREATE_UNCHANGED = ImportDecision(ImportOutcome.CREATE_UNCHANGED)
_TOUCH = ImportDecision(ImportOutcome.TOUCH)


def decide_import(
    intended: Status,
    latest_status: Status | None,
    same_fingerprint: bool,
    *,
    supersede: bool,
    resend: bool = False,
) -> ImportDecision:
    """Delta rules of DESIGN section 2 and the delta issue, for one record.

    ``intended`` is what validation made of the record: new (or processing on a realtime route), skipped
    (filtered) or rejected. ``latest_status`` is None when the identifier was never seen. ``resend`` says whether
    an identical record whose latest task failed or was rejected gets a new task (the route's ``resend_failed``).
    """
    if latest_status is None:
        return _CREATE
    if intended in POLLED:
        if same_fingerprint:
            if latest_status is S.FINISHED:
                return _CREATE_UNCHANGED
            if latest_status in TOUCH_ON_SAME:
                return _TOUCH
            # failed or rejected (RESEND_ON_SAME): another chance only when the route allows it now
            return _CREATE if resend else _TOUCH
        if supersede and latest_status in TRANSITIONS[Action.SUPERSEDE].sources:
            return _CREATE_SUPERSEDING
        return _CREATE
    # filtered (skipped) or rejected again: one row per distinct version, not one per poll
    if same_fingerprint and latest_status is intended:
        return _TOUCH
    if (
        supersede
        and intended is S.SKIPPED
        and not same_fingerprint
        and latest_status in TRANSITIONS[Action.SUPERSEDE].sources
    ):
        return _CREATE_SUPERSEDING
    return _CREATE
