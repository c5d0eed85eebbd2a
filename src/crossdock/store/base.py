"""The Store interface: the only way the engine, CLI and web touch task data."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from crossdock.redact import NO_SECRETS
from crossdock.store.health import StoreHealth, guard_store_methods
from crossdock.tasks import ALL_STATUSES, Action, LogLine, Status, Task

if TYPE_CHECKING:
    from crossdock.store.events import Events


@dataclass(slots=True)
class ImportItem:
    """One record on its way into a task, after transform and validation."""

    #: new (or processing on a realtime route), skipped (filtered) or rejected
    status: Status
    identifier: str | None
    #: compact JSON of the entity (None when the record could not be parsed)
    entity: bytes | None
    fingerprint: bytes | None = None
    #: why it is skipped or rejected
    reason: str | None = None
    #: the raw text of a record that could not be parsed or was rejected
    raw: str | None = None


@dataclass(slots=True)
class ImportOptions:
    delta: bool = True
    supersede: bool = True
    #: ignore fingerprints this once (still record them)
    full: bool = False
    priority: int = 0
    #: an identical record whose latest task failed or was rejected: True sends it again (a new task), False
    #: touches that task, seconds: a new task when the latest is at least that old
    resend_failed: bool | float = False
    #: realtime imports create processing tasks leased to this worker until ``lease_until``
    worker: str | None = None
    lease_until: datetime | None = None


@dataclass(slots=True)
class ImportCounts:
    """What one import batch did; added up into the run summary."""

    created: dict[str, int] = field(default_factory=dict)
    #: identical records that added no row (seen count went up)
    unchanged: int = 0
    #: identical to the finished latest task: a new skipped task
    unchanged_created: int = 0
    #: new tasks whose identifier was seen before with other data
    changed: int = 0
    superseded: int = 0
    #: ids of created tasks in processing (realtime), for immediate delivery
    processing_ids: list[int] = field(default_factory=list)
    created_ids: list[int] = field(default_factory=list)

    def add(self, other: ImportCounts) -> None:
        for k, v in other.created.items():
            self.created[k] = self.created.get(k, 0) + v
        self.unchanged += other.unchanged
        self.unchanged_created += other.unchanged_created
        self.changed += other.changed
        self.superseded += other.superseded
        self.processing_ids += other.processing_ids


@dataclass(slots=True)
class Settlement:
    """The result of one delivery attempt, applied by :meth:`Store.settle`."""

    task_id: int
    action: Action
    worker: str
    error: str | None = None
    next_attempt_at: datetime | None = None
    result: Any = None
    level: str = "info"
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TaskFilter:
    """Which tasks a listing or a bulk action covers."""

    ids: Sequence[int] | None = None
    statuses: Sequence[Status] | None = None
    route: str | None = None
    identifier: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: substring of identifier or error
    search: str | None = None
    #: an expression over the entity (``price > 1000 and category == "toys"``), see store/payload_filter.py
    where: str | None = None

    def is_empty(self) -> bool:
        return not (
            self.ids
            or self.statuses
            or self.route
            or self.identifier
            or self.created_after
            or self.created_before
            or self.search
            or self.where
        )

    def audit_target(self) -> dict[str, Any]:
        """How the selection appears in the audit log, whoever acted (CLI, API, dashboard)."""
        from crossdock.tasks import iso

        if self.ids is not None:
            return {"ids": list(self.ids)[:1000], "count": len(self.ids)}
        target: dict[str, Any] = {}
        if self.statuses:
            target["status"] = [s.value for s in self.statuses]
        for key in ("route", "identifier", "search", "where"):
            value = getattr(self, key)
            if value:
                target[key] = value
        for key in ("created_after", "created_before"):
            value = getattr(self, key)
            if value:
                target[key] = iso(value)
        return {"filter": target}


@dataclass(slots=True)
class ActionResult:
    matched: int
    changed: int
    #: a human explanation when some matched tasks could not change
    refused: list[str] = field(default_factory=list)
    #: older due tasks of the same records skipped, so one pass sends each record once (its newest task)
    superseded: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "changed": self.changed,
            "refused": self.refused,
            "superseded": self.superseded,
        }


@dataclass(frozen=True, slots=True)
class TaskEdit:
    """A task's entity as a person corrected it, checked against its route (:mod:`crossdock.engine.task_edit`)."""

    #: compact JSON of the edited entity, keys sorted (as an import stores it)
    entity: bytes
    #: xxh3_128 of ``entity``: the new task becomes the latest of its identifier, so delta compares with it
    fingerprint: bytes
    #: the identifier of the edited entity (the task's own; set when the task had none, e.g. rejected without one)
    identifier: str | None
    #: the field-level changes, redacted: ``{"path", "old", "new"}`` with values as compact JSON (absent: None)
    diff: list[dict[str, Any]]
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class EditResult:
    """What :meth:`Store.edit_task` did."""

    original_id: int
    #: the new task, in ``new``, with the edited entity
    task_id: int
    route: str
    #: the original's status before and after (skipped when a skip applied, else unchanged)
    original_before: Status
    original_after: Status
    #: older due tasks of the same record skipped, so the edited version is the one that goes out
    superseded: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "original_id": self.original_id,
            "task_id": self.task_id,
            "route": self.route,
            "original_before": self.original_before.value,
            "original_after": self.original_after.value,
            "superseded": self.superseded,
        }


@dataclass(slots=True)
class Stats:
    total: int
    by_status: dict[str, int]
    by_route: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "by_status": self.by_status, "by_route": self.by_route}

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> Stats:
        """From ``(route, status, n)`` rows of a store's counters; every status appears, zero or not."""
        by_status = empty_counts()
        by_route: dict[str, dict[str, int]] = {}
        for route, status, n in rows:
            by_route.setdefault(route, empty_counts())[status] = int(n)
            by_status[status] += int(n)
        return cls(total=sum(by_status.values()), by_status=by_status, by_route=by_route)


def empty_counts() -> dict[str, int]:
    return {s.value: 0 for s in ALL_STATUSES}


@dataclass(slots=True)
class Run:
    id: int
    route: str
    part: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    summary: dict[str, Any]
    error: str | None
    actor: str | None
    #: the process that runs it (``host:pid``); None for runs from before owners were recorded
    owner: str | None = None
    #: when that process last showed it was still working on the run
    heartbeat_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        from crossdock.tasks import iso

        return {
            "id": self.id,
            "route": self.route,
            "part": self.part,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "status": self.status,
            "summary": self.summary,
            "error": self.error,
            "actor": self.actor,
            "owner": self.owner,
            "heartbeat_at": iso(self.heartbeat_at),
        }


@dataclass(slots=True)
class CacheEntry:
    route: str
    identifier: str
    fingerprint: str
    task_id: int
    task_status: Status | None
    last_seen_at: datetime | None


@dataclass(slots=True)
class TokenRecord:
    id: int
    name: str
    role: str
    created_at: datetime
    last_used: datetime | None
    revoked: bool


@dataclass(slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: dict[str, Any]
    changed: int | None
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        from crossdock.tasks import iso

        return {
            "id": self.id,
            "at": iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "changed": self.changed,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed tasks of one route with one error, settled in a period: what an alert counts and quotes."""

    route: str
    error: str | None
    count: int
    #: when the first of them failed
    first_at: datetime
    #: the newest task with this error, to link to
    latest_task_id: int


#: an alert message's states: waiting to be sent (or to be tried again), sent, given up after its attempts
ALERT_STATUSES = ("pending", "sent", "failed")


@dataclass(frozen=True, slots=True)
class NewAlert:
    rule: str
    event: str
    route: str | None
    channel: str
    subject: str
    #: the structured message each channel formats: text, counts, top errors, links
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One message to one channel, kept with its delivery state (``crossdock alerts list``)."""

    id: int
    created_at: datetime
    rule: str
    event: str
    route: str | None
    channel: str
    subject: str
    message: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime | None
    sent_at: datetime | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        from crossdock.tasks import iso

        return {
            "id": self.id,
            "created_at": iso(self.created_at),
            "rule": self.rule,
            "event": self.event,
            "route": self.route,
            "channel": self.channel,
            "subject": self.subject,
            "message": self.message,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at),
            "sent_at": iso(self.sent_at),
            "error": self.error,
        }


def alert_from_row(
    row: Sequence[Any], when: Callable[[Any], datetime | None], loads: Callable[[Any], Any]
) -> AlertRecord:
    """An ``alerts`` row (in the column order both SQL stores select) as a record; ``when`` reads a stored time."""
    created = when(row[1])
    assert created is not None
    message = row[7]
    return AlertRecord(
        id=row[0],
        created_at=created,
        rule=row[2],
        event=row[3],
        route=row[4],
        channel=row[5],
        subject=row[6],
        message=loads(message) if isinstance(message, bytes | str) else message,
        status=row[8],
        attempts=row[9],
        next_attempt_at=when(row[10]),
        sent_at=when(row[11]),
        error=row[12],
    )


def alert_outcome(error: str | None, retry_at: datetime | None) -> str:
    """The status a try leaves a message in."""
    return "sent" if error is None else ("pending" if retry_at is not None else "failed")


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What the store remembers of an ``Idempotency-Key``, so a repeated request is answered, not redone."""

    #: SHA-256 of the first request's body: the same key with another body is a sender's mistake
    fingerprint: str
    created_at: datetime
    expires_at: datetime
    #: the first request's answer; None while that request is still being processed
    response: dict[str, Any] | None


@dataclass(slots=True)
class RouteState:
    """What the database knows of a route beyond its config: an active override and next fire times."""

    route: str
    active: bool | None = None
    incoming_next: datetime | None = None
    outgoing_next: datetime | None = None
    #: why crossdock itself switched the route off (``pause_after``), until a person switches it again
    paused_reason: str | None = None
    paused_at: datetime | None = None


#: the states of a circuit breaker: deliveries go out, none do (cooldown), one probe decides
CIRCUIT_STATES = ("closed", "open", "half_open")


@dataclass(slots=True)
class CircuitState:
    """A circuit breaker as the database holds it, shared by every process delivering to its target."""

    #: the target's connection name, or the route's name when its target names no connection
    key: str
    state: str = "closed"
    #: consecutive transient delivery failures (the count that opens it)
    failures: int = 0
    opened_at: datetime | None = None
    #: while open: when the cooldown ends and a probe may go
    open_until: datetime | None = None
    last_error: str | None = None
    #: while half-open: the process (``host:pid``) sending the probe, and since when
    probe_owner: str | None = None
    probe_at: datetime | None = None
    updated_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        from crossdock.tasks import iso

        return {
            "key": self.key,
            "state": self.state,
            "failures": self.failures,
            "opened_at": iso(self.opened_at),
            "until": iso(self.open_until),
            "last_error": self.last_error,
            "probe_owner": self.probe_owner,
            "probe_at": iso(self.probe_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class CircuitUpdate:
    """What one write did to a breaker: its state before, and the whole row after."""

    before: str
    after: CircuitState

    @property
    def opened(self) -> bool:
        return self.after.state == "open" and self.before != "open"

    @property
    def closed(self) -> bool:
        return self.after.state == "closed" and self.before != "closed"


@dataclass(slots=True)
class ErrorGroup:
    route: str
    status: str
    error: str
    count: int
    #: the newest task with this error, to link to
    latest_task_id: int


#: kinds counted per minute for the throughput chart
THROUGHPUT_KINDS = ("imported", "finished", "failed", "retry")


class Store(abc.ABC):
    """Persistent task storage. Every status change goes through :mod:`crossdock.tasks` and a guarded update."""

    #: "sqlite", "postgresql" or "memory"
    backend: str
    #: masks secrets in the reason an audit row keeps; whoever opens the store for a project sets its redactor
    redact: Callable[[str], str] = staticmethod(NO_SECRETS)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # every backend's public methods report outages the same way (see crossdock.store.health)
        guard_store_methods(cls)

    @property
    def health(self) -> StoreHealth:
        """Whether the database answered the last call, and since when it has not."""
        health: StoreHealth | None = self.__dict__.get("_store_health")
        if health is None:
            health = self.__dict__.setdefault("_store_health", StoreHealth())
        return health

    @property
    def events(self) -> Events:
        """Where the ledger announces committed writes (:mod:`crossdock.store.events`)."""
        events: Events | None = self.__dict__.get("_store_events")
        if events is None:
            from crossdock.store.events import Events

            events = self.__dict__.setdefault("_store_events", Events())
        return events

    def ping(self, timeout: float = 2.0) -> None:
        """Raise :class:`~crossdock.errors.StoreUnavailable` unless the database answers within about ``timeout``
        seconds (health checks must answer quickly during an outage, not wait out a pool's timeout)."""
        self.route_states()

    def _unavailable_reason(self, exc: Exception) -> str | None:
        """The reason when ``exc`` (a driver error) means the database cannot be used right now, else None."""
        return None

    def _busy(self, exc: Exception) -> bool:
        """Whether the unavailable-looking ``exc`` came from this process's own contention (every pooled connection
        in use) while the server answers: worth another try, but no outage to report."""
        return False

    @abc.abstractmethod
    def upgrade(self) -> int:
        """Create or migrate the schema; return the schema version."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # --- import --------------------------------------------------------------------------------

    @abc.abstractmethod
    def import_batch(
        self,
        route: str,
        items: Sequence[ImportItem],
        *,
        run_id: int | None,
        options: ImportOptions,
        now: datetime,
    ) -> ImportCounts:
        """Write a batch of records as tasks in one transaction, with their fingerprints and counters."""

    # --- export --------------------------------------------------------------------------------

    @abc.abstractmethod
    def claim_due_tasks(
        self, route: str, limit: int, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Task]:
        """Move up to ``limit`` due tasks (new, or retry whose time has come) to processing under a lease."""

    @abc.abstractmethod
    def settle(self, settlements: Sequence[Settlement], *, now: datetime) -> int:
        """Apply delivery results in one transaction; return how many tasks changed."""

    def settle_now(self, settlements: Sequence[Settlement], *, now: datetime) -> int | None:
        """:meth:`settle` on the caller's thread if that cannot block (no lock to wait for, no network round trip);
        None when it would, and the caller settles in a thread instead. The default always says None."""
        return None

    @abc.abstractmethod
    def extend_leases(self, ids: Sequence[int], *, worker: str, lease_until: datetime) -> int: ...

    @abc.abstractmethod
    def recover_expired_leases(self, *, now: datetime, max_attempts: dict[str, int], route: str | None = None) -> int:
        """Give back processing tasks whose lease ran out (their worker died). The attempt counts."""

    @abc.abstractmethod
    def release(
        self,
        ids: Sequence[int],
        *,
        worker: str,
        now: datetime,
        retries: Collection[int] = (),
        message: str | None = None,
    ) -> int:
        """Hand back tasks a worker claimed but never started (shutdown), or whose attempt must not count (a circuit
        breaker had opened): due again at once, the claim's attempt not counted. The ids in ``retries`` were claimed
        from retry and go back there; the others go back to new. ``message`` is the timeline line (default
        "released unstarted")."""

    # --- actions -------------------------------------------------------------------------------

    @abc.abstractmethod
    def apply_action(
        self,
        action: Action,
        selection: TaskFilter,
        *,
        actor: str,
        reason: str | None,
        now: datetime,
        audit_actor: str | None = None,
    ) -> ActionResult:
        """A manual action on the tasks ``selection`` matches; set-based, batch by batch. ``actor`` is who the
        timeline names; the audit row names ``audit_actor`` (default ``actor``)."""

    @abc.abstractmethod
    def edit_task(
        self, task_id: int, edit: TaskEdit, *, actor: str, now: datetime, audit_actor: str | None = None
    ) -> EditResult:
        """Replay a task with a corrected entity, in one transaction: a new task (``new``) with ``edit``'s entity and
        fingerprint, linked both ways to the original; the original skipped when a skip applies to its status
        (else it stays as it is); timeline lines on both and an audit row with the diff. Raises
        :class:`~crossdock.errors.TaskNotFound`, or :class:`~crossdock.errors.TransitionRefused` for a task in
        processing; nothing is written then."""

    # --- reads ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def get_task(self, task_id: int) -> Task | None: ...

    @abc.abstractmethod
    def get_tasks(self, ids: Sequence[int]) -> list[Task]:
        """The tasks with these ids that exist, in id order."""

    @abc.abstractmethod
    def task_logs(self, task_id: int) -> list[LogLine]: ...

    @abc.abstractmethod
    def list_tasks(
        self, selection: TaskFilter, *, limit: int = 50, cursor: int | None = None
    ) -> tuple[list[Task], int | None]:
        """Newest first. ``cursor`` is the id to continue below; returns the next cursor or None."""

    @abc.abstractmethod
    def count_tasks(self, selection: TaskFilter) -> int: ...

    @abc.abstractmethod
    def stats(self, route: str | None = None) -> Stats:
        """Counts per status from the counters (never COUNT(*))."""

    @abc.abstractmethod
    def recount(self) -> dict[str, dict[str, int]]:
        """Counts per route and status by COUNT(*), to check the counters."""

    def counted(self, route: str | None = None) -> tuple[Stats, dict[str, dict[str, int]]]:
        """The counters and the COUNT(*) recount read from one snapshot, so a check while workers settle tasks
        compares like with like (the SQL stores read both in one transaction)."""
        return self.stats(route), self.recount()

    @abc.abstractmethod
    def ensure_routes(self, routes: Iterable[str]) -> None:
        """Make sure every configured route has counter rows, so stats list it even when empty."""

    # --- runs ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def start_run(self, route: str, part: str, *, actor: str | None, now: datetime, owner: str | None = None) -> int:
        """Record a run as ``running``, owned by the process ``owner`` (``host:pid``)."""

    @abc.abstractmethod
    def touch_run(self, run_id: int, *, now: datetime) -> None:
        """The owner is still working on the run (its heartbeat)."""

    @abc.abstractmethod
    def running_runs(self) -> list[Run]:
        """Runs still marked ``running``, oldest first: some may belong to processes that died."""

    @abc.abstractmethod
    def abandon_run(self, run_id: int, *, error: str, now: datetime) -> bool:
        """Mark a ``running`` run ``abandoned`` (its process died); False if it had finished meanwhile."""

    @abc.abstractmethod
    def finish_run(
        self, run_id: int, *, status: str, summary: dict[str, Any], error: str | None, now: datetime
    ) -> None: ...

    @abc.abstractmethod
    def list_runs(self, route: str | None = None, limit: int = 20) -> list[Run]: ...

    @abc.abstractmethod
    def last_successful_run(self, route: str, part: str) -> Run | None: ...

    # --- delta cache and storages --------------------------------------------------------------

    @abc.abstractmethod
    def latest_entities(
        self, route: str, identifiers: Sequence[str], statuses: Collection[Status] = (Status.FINISHED,)
    ) -> dict[str, tuple[int, Status, Any]]:
        """The newest task in ``statuses`` of each identifier: ``{identifier: (task id, status, entity)}``, those
        without one left out. Read only, one statement per call; a dry run diffs against the last delivered
        version with it."""

    @abc.abstractmethod
    def cache_show(self, route: str, identifier: str) -> CacheEntry | None: ...

    @abc.abstractmethod
    def cache_clear(self, route: str, identifier: str | None = None) -> int: ...

    @abc.abstractmethod
    def storage_get(self, storage: str, key: str, *, now: datetime) -> Any | None: ...

    @abc.abstractmethod
    def storage_put(self, storage: str, key: str, value: Any, *, now: datetime, ttl: float | None = None) -> None: ...

    # --- housekeeping --------------------------------------------------------------------------

    @abc.abstractmethod
    def prune(
        self,
        *,
        older_than: datetime,
        statuses: Sequence[Status],
        route: str | None = None,
        batch_size: int = 5000,
        actor: str = "retention",
    ) -> int:
        """Delete tasks (with their logs) last updated before ``older_than``, never the latest fingerprinted task of
        an identifier; audited as ``actor``."""

    @abc.abstractmethod
    def prune_ages(
        self,
        cutoffs: Mapping[Status, datetime],
        *,
        route: str | None = None,
        batch_size: int = 5000,
        actor: str = "retention",
    ) -> int:
        """:meth:`prune` with a cutoff per status, in one pass (retention's nightly run): on PostgreSQL a partition
        whose tasks have all reached their status's age goes at once."""

    # --- operations: route state, tokens, audit, monitor ------------------------------------------

    @abc.abstractmethod
    def route_states(self) -> dict[str, RouteState]: ...

    @abc.abstractmethod
    def set_route_active(
        self, route: str, active: bool | None, *, now: datetime, paused_reason: str | None = None
    ) -> None:
        """Override the config's ``active`` (None removes the override). ``paused_reason`` says why crossdock
        paused the route itself; any other switch clears it."""

    @abc.abstractmethod
    def set_next_fire(self, route: str, part: str, at: datetime | None, *, now: datetime) -> None:
        """Store when a route part (``incoming`` or ``outgoing``) is next due on its schedule."""

    @abc.abstractmethod
    def create_token(self, name: str, role: str, token_hash: str, *, now: datetime) -> int: ...

    @abc.abstractmethod
    def find_token(self, token_hash: str, *, now: datetime | None = None) -> TokenRecord | None:
        """The live token with that hash; records its use when ``now`` is given."""

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenRecord]: ...

    @abc.abstractmethod
    def revoke_token(self, token_id: int) -> bool: ...

    @abc.abstractmethod
    def record_audit(
        self,
        actor: str,
        action: str,
        target: dict[str, Any],
        *,
        changed: int | None = None,
        detail: str | None = None,
        now: datetime,
    ) -> None: ...

    @abc.abstractmethod
    def list_audit(self, *, limit: int = 100, cursor: int | None = None) -> list[AuditEntry]: ...

    @abc.abstractmethod
    def claim_idempotency_key(
        self, scope: str, key: str, *, fingerprint: str, now: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        """Take ``key`` in ``scope`` for a request being processed; None when taken, else what is remembered.

        Atomic across processes sharing the database, so two copies of one request never both run. Expired
        keys (of every scope) are pruned on the way. ``expires_at`` bounds the claim until it is settled.
        """

    @abc.abstractmethod
    def settle_idempotency_key(
        self, scope: str, key: str, *, response: dict[str, Any] | None, expires_at: datetime | None = None
    ) -> None:
        """Remember the claimed request's answer until ``expires_at``; ``response=None`` forgets the claim."""

    @abc.abstractmethod
    def throughput(self, *, since: datetime, route: str | None = None) -> dict[int, dict[str, int]]:
        """Per-minute counts since ``since``: {unix minute: {kind: n}} for kinds in THROUGHPUT_KINDS."""

    @abc.abstractmethod
    def top_errors(self, *, since: datetime, limit: int = 10) -> list[ErrorGroup]:
        """The most frequent errors of failed and retry tasks updated since ``since``."""

    @abc.abstractmethod
    def oldest_due(self) -> dict[str, dict[str, datetime]]:
        """Per route, the oldest due time of new, retry and waiting work: {route: {status: time}}."""

    @abc.abstractmethod
    def failure_groups(self, *, since: datetime, until: datetime, route: str | None = None) -> list[FailureGroup]:
        """Tasks that are ``failed`` and were last updated in (``since``, ``until``], grouped by route and error."""

    # --- alerts ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_alerts(
        self, alerts: Sequence[NewAlert], *, now: datetime, states: dict[str, dict[str, Any]] | None = None
    ) -> list[int]:
        """Queue messages (``pending``, due now) and, in the same transaction, save the rule ``states`` that led to
        them (so a crash between the two neither loses nor repeats a message); their ids in order."""

    @abc.abstractmethod
    def due_alerts(self, *, now: datetime, limit: int = 50) -> list[AlertRecord]:
        """Pending messages whose next try is due, oldest first."""

    @abc.abstractmethod
    def alert_attempted(
        self, alert_id: int, *, now: datetime, error: str | None = None, retry_at: datetime | None = None
    ) -> None:
        """Record a try: sent without ``error``; with one, pending again at ``retry_at``, or failed for good."""

    @abc.abstractmethod
    def list_alerts(
        self, *, limit: int = 100, cursor: int | None = None, status: str | None = None, route: str | None = None
    ) -> list[AlertRecord]:
        """Messages newest first; ``cursor`` is the last id of the previous page."""

    @abc.abstractmethod
    def prune_alerts(self, *, before: datetime) -> int:
        """Forget sent and failed messages created before ``before``."""

    @abc.abstractmethod
    def alert_state(self, key: str) -> dict[str, Any] | None:
        """What the alert rule ``key`` remembers between checks (its cursors, the problems it reported)."""

    @abc.abstractmethod
    def set_alert_state(self, key: str, state: dict[str, Any], *, now: datetime) -> None: ...

    # --- circuit breakers (not task data: rows of their own, one per breaker key) ------------------------

    @abc.abstractmethod
    def circuits(self) -> dict[str, CircuitState]:
        """Every breaker the database knows, by key. A key without a row is closed with no failures."""

    @abc.abstractmethod
    def record_circuit_failures(
        self,
        key: str,
        count: int,
        *,
        threshold: int,
        cooldown: float,
        error: str | None,
        now: datetime,
        reset: bool = False,
    ) -> CircuitUpdate:
        """Add ``count`` consecutive transient failures (after an answer, when ``reset``), atomically. A closed breaker
        that reaches ``threshold`` opens for ``cooldown`` seconds; a half-open one (its probe failed) opens again."""

    @abc.abstractmethod
    def reset_circuit_failures(
        self, key: str, *, now: datetime, probe_owner: str | None = None
    ) -> CircuitUpdate | None:
        """The target answered: a closed breaker's count starts again; the half-open breaker whose probe
        ``probe_owner`` sent closes. An open breaker stays open. None when nothing changed (nothing was written)."""

    @abc.abstractmethod
    def take_circuit_probe(self, key: str, *, owner: str, now: datetime, stale_before: datetime) -> bool:
        """Compare-and-set: an open breaker whose cooldown is over (or a half-open one whose probe began before
        ``stale_before``, its prober presumably dead) goes half-open for ``owner``. True for exactly one caller."""

    @abc.abstractmethod
    def return_circuit_probe(self, key: str, *, owner: str, now: datetime) -> bool:
        """``owner`` took the probe but delivered nothing that decides (no due task, a stop): open again with the
        cooldown over, so the next process with work probes at once."""

    @abc.abstractmethod
    def close_circuit(self, key: str, *, now: datetime, by: str = "by hand") -> CircuitUpdate | None:
        """Close a breaker by hand (``by``: who, for the event), whatever its state; None when the database has no
        row for ``key``."""

    # --- coordination between processes (PostgreSQL overrides these) ---------------------------------

    def try_leader_lock(self, name: str) -> bool:
        """Take the lock ``name`` for this process without waiting; True if it is ours.

        The default suits a store only one process uses (memory). SQLite leaves this alone: the runtime
        takes a file lock beside the database instead. PostgreSQL uses a session advisory lock.
        """
        return True

    def release_leader_lock(self, name: str) -> None:
        """Give up the lock ``name`` if this process holds it."""

    def listen_new(self, timeout: float) -> list[str]:
        """Block up to ``timeout`` seconds for routes that got new tasks; return their names.

        The default cannot be told, so it sleeps and returns nothing: workers then poll.
        """
        time.sleep(timeout)
        return []
