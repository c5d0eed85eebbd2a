"""The task ledger: what every write to the tasks means, decided once for every backend.

A backend (SQLite, PostgreSQL, memory) supplies storage primitives only: a transaction, the latest fingerprints of
some keys, inserting rows, guarded status moves, claims, and writing counters, timeline lines and throughput. The
ledger decides what to write: which tasks change and how, the counter deltas, the timeline text, the throughput,
the audit row of a manual action, and the events that metrics (and later alerts) subscribe to. A rule lives here
or nowhere, so the backends cannot drift apart.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from crossdock.errors import TaskNotFound, TransitionRefused
from crossdock.store import circuits as circuit_rules
from crossdock.store.base import (
    ActionResult,
    CircuitState,
    CircuitUpdate,
    EditResult,
    ImportCounts,
    ImportItem,
    ImportOptions,
    Settlement,
    Store,
    TaskEdit,
    TaskFilter,
)
from crossdock.store.events import (
    ActionTaken,
    CircuitClosed,
    CircuitOpened,
    LeasesRecovered,
    LedgerEvent,
    TaskEdited,
    TasksImported,
    TasksPruned,
    TasksSettled,
)
from crossdock.store.import_plan import DeltaKey, Latest, PlannedTask, delta_keys, import_plan, resend_candidates
from crossdock.tasks import RELEASES, RESETS_ATTEMPTS, TRANSITIONS, Action, Status, Task, iso, refusal_message

log = logging.getLogger("crossdock.store")

#: tasks changed per transaction by set-based work (actions, lease recovery, prune)
ACTION_BATCH = 5000
#: attempts a task gets when its route is not in the ``max_attempts`` map (a route removed from the config)
DEFAULT_MAX_ATTEMPTS = 3
#: the log message of a released claim
RELEASED_MESSAGE = "released unstarted"
#: statuses a delivery result moves to, and the throughput kind each counts as
THROUGHPUT_OF = {"finished": "finished", "waiting": "finished", "failed": "failed", "retry": "retry"}
#: the delivery results :meth:`Ledger.settle` applies: from processing, not a release
SETTLES = frozenset(a for a in Action if Status.PROCESSING in TRANSITIONS[a].sources and a not in RELEASES)
SETTLE_TARGET = {a: TRANSITIONS[a].target.value for a in SETTLES}

#: statuses whose task an edit skips (the skip action's sources); any other status but processing stays as it is
EDIT_SKIPS = TRANSITIONS[Action.SKIP].sources
#: the audit action of an edit
EDIT_AUDIT = "task.edit"
#: statuses a task is sent from: an action into one of them makes it due again
_DUE = frozenset({Status.NEW, Status.RETRY})
_STATUS = {s.value: s for s in Status}

#: one timeline line: (task id, level, phase, actor, from status, to status, message, details)
LogRow = tuple[int, str, str, str | None, str | None, str | None, str, dict[str, Any] | None]


class Changes:
    """The bookkeeping of one transaction besides the task rows: counters, timeline lines, throughput."""

    __slots__ = ("counters", "logs", "throughput")

    def __init__(self) -> None:
        #: (route, status) -> delta
        self.counters: Counter[tuple[str, str]] = Counter()
        self.logs: list[LogRow] = []
        #: (route, kind) -> n, for the minute of the transaction
        self.throughput: Counter[tuple[str, str]] = Counter()

    def move(self, route: str, before: str, after: str, n: int = 1) -> None:
        counters = self.counters
        counters[(route, before)] -= n
        counters[(route, after)] += n

    def __bool__(self) -> bool:
        return bool(self.counters or self.logs or self.throughput)


@dataclass(frozen=True, slots=True)
class NewTasks:
    """What the rows of one insert share: everything that follows from the status and the batch."""

    route: str
    status: Status
    now: datetime
    attempts: int
    next_attempt_at: datetime | None
    lease_until: datetime | None
    worker: str | None
    run_id: int | None
    priority: int


#: one new task row: (id, identifier, fingerprint or None, seen count, entity, error, related task id, raw)
NewRow = tuple[int, str | None, bytes | None, int, bytes | None, str | None, int | None, str | None]


@dataclass(frozen=True, slots=True)
class ActionMove:
    """What a manual action does to each task it applies to."""

    sources: frozenset[Status]
    target: Status
    error: str | None
    next_attempt_at: datetime | None
    reset_attempts: bool
    now: datetime


@dataclass(frozen=True, slots=True)
class Recovery:
    """A task whose worker's lease ran out, and where it goes."""

    task_id: int
    route: str
    target: Status
    next_attempt_at: datetime | None
    message: str


# --- rules -------------------------------------------------------------------------------------------


def action_error(action: Action, reason: str | None, actor: str) -> str | None:
    """The error column a manual action sets besides the status."""
    if action is Action.FAIL:
        return reason or f"marked failed by {actor}"
    if action is Action.SKIP:
        return reason or f"skipped by {actor}"
    return None


def action_message(action: Action, actor: str, reason: str | None) -> str:
    text = f"{action.value} by {actor}"
    return f"{text}: {reason}" if reason else text


def release_action(task_id: int, retries: Collection[int]) -> Action:
    """How an unstarted claim goes back: to retry if it was claimed from there, else to new."""
    return Action.RELEASE_RETRY if task_id in retries else Action.RELEASE


def lease_recovery(attempts: int, max_attempts: int, worker: str | None) -> tuple[Action, str]:
    """Where a task goes when its worker died holding it. The attempt it was on counts."""
    who = worker or "a worker"
    if attempts >= max_attempts:
        return (
            Action.LEASE_EXPIRED_FAILED,
            f"lease of {who} expired (worker died?) on attempt {attempts} of {max_attempts}; no attempts left",
        )
    if attempts > 1:
        return Action.LEASE_EXPIRED_RETRY, f"lease of {who} expired (worker died?) on attempt {attempts}"
    return Action.LEASE_EXPIRED_NEW, f"lease of {who} expired (worker died?) on attempt {attempts}"


def edited_as_message(new_id: int, actor: str, reason: str | None, stays: Status | None) -> str:
    """The original's timeline line; ``stays`` is its status when no skip applies (a finished task stays
    finished)."""
    text = f"edited as task {new_id} by {actor}"
    if stays is not None:
        text += f"; this task stays {stays.value}"
    return f"{text}: {reason}" if reason else text


def edited_from_message(original_id: int, actor: str, reason: str | None) -> str:
    text = f"edited from task {original_id} by {actor}"
    return f"{text}: {reason}" if reason else text


def edit_refusal(task_id: int, status: Status) -> str | None:
    """Why a task in ``status`` cannot be edited, or None when it can."""
    if status is Status.PROCESSING:
        return (
            f"task {task_id} is processing: a worker is delivering it right now, so it cannot be edited. "
            "Wait until the attempt settles (it moves to finished, failed, retry or waiting), then edit it"
        )
    return None


def diff_text(diff: Sequence[dict[str, Any]]) -> str:
    """The audit detail of an edit: ``path: old → new`` per changed path (``absent`` where there was none)."""

    def shown(value: Any) -> str:
        return "absent" if value is None else str(value)

    return "; ".join(f"{d['path']}: {shown(d['old'])} → {shown(d['new'])}" for d in diff)


def superseded_reason(newer_id: int) -> str:
    return f"superseded by task {newer_id}"


def audit_name(action: Action, selection: TaskFilter) -> tuple[str, dict[str, Any]]:
    """The audit action and target of a manual action: one task is ``task.ACTION``, more or a filter
    ``tasks.bulk_ACTION``."""
    ids = selection.ids
    if ids is not None and len(set(ids)) == 1 and not _narrowed(selection):
        return f"task.{action.value}", {"ids": [ids[0]]}
    return f"tasks.bulk_{action.value}", selection.audit_target()


def _narrowed(selection: TaskFilter) -> bool:
    return bool(selection.statuses or selection.route or selection.identifier or selection.search)


def _new_tasks(route: str, status: Status, run_id: int | None, options: ImportOptions, now: datetime) -> NewTasks:
    processing = status is Status.PROCESSING
    return NewTasks(
        route=route,
        status=status,
        now=now,
        # a task imported in processing (realtime) is on its first delivery attempt, as if claimed
        attempts=1 if processing else 0,
        next_attempt_at=now if status is Status.NEW else None,
        lease_until=options.lease_until if processing else None,
        worker=options.worker if processing else None,
        run_id=run_id,
        priority=options.priority,
    )


def _row(create: PlannedTask) -> NewRow:
    item = create.item
    superseder = create.superseded_by
    return (
        create.task_id,
        item.identifier,
        # only a recorded fingerprint makes the task a candidate for "latest" of its key
        item.fingerprint if create.record_fingerprint else None,
        create.seen_count,
        item.entity,
        create.reason,
        superseder.task_id if superseder is not None else create.related_id,
        item.raw,
    )


class Ledger(Store):
    """Every task write, over the storage primitives a backend implements (the ``_`` methods below)."""

    # --- primitives: storage only ------------------------------------------------------------------------

    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        """One write transaction; yields what the other primitives take as ``tx``."""

    @abc.abstractmethod
    def _latest(self, tx: Any, route: str, identifiers: list[str], unkeyed: list[bytes]) -> dict[DeltaKey, Latest]:
        """The latest fingerprinted task of each key: identifiers, and content fingerprints of tasks without one."""

    def _reading(self) -> contextlib.AbstractContextManager[Any]:
        """A transaction that only reads, for the primitives :meth:`delta_latest` calls (default: a write one)."""
        return self._transaction()

    def _touch_unchanged(
        self, tx: Any, route: str, items: Sequence[ImportItem], now: datetime
    ) -> tuple[int, Sequence[ImportItem], dict[DeltaKey, Latest]] | None:
        """Optional fast path of a catalogue poll: touch the latest task of every record whose fingerprint equals
        it and whose status takes a touch, in storage. Returns how many, the records left for the plan, and the
        latest tasks of their keys; None to let the plan decide every record."""
        return None

    @abc.abstractmethod
    def _created_at(self, tx: Any, ids: list[int]) -> dict[int, datetime]:
        """When each of these tasks was created (those that exist)."""

    def _import_shape(self, route: str, unchanged: int, records: int) -> None:
        """What a polled batch was like (``unchanged`` of ``records`` touched), for a backend that picks its
        fast path by the last batch."""

    @abc.abstractmethod
    def _reserve_ids(self, tx: Any, n: int) -> list[int]:
        """``n`` new task ids, ascending."""

    @abc.abstractmethod
    def _insert_tasks(self, tx: Any, batch: NewTasks, rows: list[NewRow]) -> None: ...

    @abc.abstractmethod
    def _touch_tasks(self, tx: Any, seen: dict[int, int], now: datetime) -> None:
        """Add ``seen[id]`` to each task's seen count and make ``now`` its last-seen time."""

    @abc.abstractmethod
    def _supersede_tasks(
        self, tx: Any, moves: list[tuple[int, int, str, Status]], sources: Collection[Status], now: datetime
    ) -> dict[int, str]:
        """Skip each ``(old id, newer id, reason, status the plan saw)`` still in ``sources``, linked to the newer
        task; return the old status of each task moved."""

    def _announce_new(self, tx: Any, route: str) -> None:
        """Tell waiting workers that ``route`` has due tasks, at commit (PostgreSQL: NOTIFY)."""

    def _begin_claim(self, tx: Any, route: str) -> None:
        """Prepare a transaction for claims of ``route`` (PostgreSQL: plan hints for a table whose statistics lag,
        and the route's claim lock, so claims of one route take turns)."""

    @abc.abstractmethod
    def _claim(
        self, tx: Any, route: str, source: Status, limit: int, *, worker: str, lease_until: datetime, now: datetime
    ) -> Sized:
        """Move up to ``limit`` due tasks of ``source`` to processing under the lease, one attempt more; oldest
        due first (new: by id; retry: by next attempt time). Returns what :meth:`_claimed_tasks` turns into tasks,
        its length the number of tasks claimed."""

    @abc.abstractmethod
    def _claimed_tasks(
        self, rows: Any, route: str, source: Status, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Task]:
        """The tasks a claim returned, with ``claimed_from`` set. Called after the commit, so building them does not
        hold the transaction (another thread's settle can write meanwhile)."""

    @abc.abstractmethod
    def _settle_tasks(self, tx: Any, settlements: list[Settlement], now: datetime) -> dict[int, str]:
        """Move each task still in processing under the settlement's worker to its action's status, with the
        error, next attempt time and result, the lease cleared; return the route of each task moved."""

    @abc.abstractmethod
    def _expired_leases(self, tx: Any, now: datetime, route: str | None, limit: int) -> list[tuple[int, str, int, str]]:
        """Processing tasks whose lease ran out before ``now``: (id, route, attempts, worker)."""

    @abc.abstractmethod
    def _recover_tasks(self, tx: Any, recoveries: list[Recovery], now: datetime) -> set[int]:
        """Move each task still in processing with an expired lease to its target (error = message, lease
        cleared); return the ids moved."""

    @abc.abstractmethod
    def _release_tasks(self, tx: Any, backs: list[tuple[int, Status]], worker: str, now: datetime) -> dict[int, str]:
        """Move each task still in processing under ``worker`` back to its status, due now, the claim's attempt
        taken back; return the route of each task moved."""

    @abc.abstractmethod
    def _lock_circuit(self, tx: Any, key: str, *, create: bool, now: datetime) -> CircuitState | None:
        """The breaker row of ``key``, locked until the transaction ends (``create``: a closed row is added first
        when there is none, so two processes never both insert it); None without ``create`` when there is none."""

    @abc.abstractmethod
    def _put_circuit(self, tx: Any, row: CircuitState) -> None:
        """Store every column of an existing breaker row."""

    @abc.abstractmethod
    def _matched_by_status(self, selection: TaskFilter) -> dict[Status, int]: ...

    def _narrow(self, selection: TaskFilter) -> TaskFilter:
        """The selection in a form this backend's SQL decides whole (PostgreSQL: a ``where`` expression SQL cannot
        decide becomes the ids it matches); once per action, not once per batch."""
        return selection

    @abc.abstractmethod
    def _act(
        self,
        tx: Any,
        selection: TaskFilter,
        move: ActionMove,
        *,
        after_id: int,
        limit: int,
    ) -> list[tuple[int, str, str | None, str]]:
        """Apply ``move`` to the first ``limit`` tasks above ``after_id`` that ``selection`` matches and whose status
        is in ``move.sources`` (lease cleared); return (id, route, identifier, old status) of each, in id order."""

    @abc.abstractmethod
    def _due_of_identifiers(
        self, tx: Any, route: str, identifiers: list[str], statuses: Collection[Status]
    ) -> list[tuple[int, str, str]]:
        """(id, identifier, status) of the route's tasks of these identifiers in ``statuses``."""

    @abc.abstractmethod
    def _prunable(
        self,
        tx: Any,
        *,
        cutoffs: Mapping[Status, datetime],
        route: str | None,
        after_id: int,
        until_id: int | None,
        limit: int,
    ) -> list[int]:
        """Ids above ``after_id`` and below ``until_id`` (None: no bound) of tasks in a status of ``cutoffs`` last
        updated before that status's cutoff, never the latest fingerprinted task of an identifier (delta compares
        with it), in id order."""

    @abc.abstractmethod
    def _delete_tasks(self, tx: Any, ids: list[int]) -> list[tuple[str, str]]:
        """Delete the tasks and everything kept per task; return (route, status) of each deleted."""

    def _after_prune(self) -> None:
        """Give space back after deletes (SQLite: incremental vacuum)."""

    @abc.abstractmethod
    def _lock_task(self, tx: Any, task_id: int) -> tuple[str, str | None, Status, int] | None:
        """(route, identifier, status, priority) of the task, its row locked until the transaction ends (PostgreSQL:
        ``FOR UPDATE``); None when there is no such task."""

    @abc.abstractmethod
    def _audit(
        self,
        tx: Any,
        actor: str,
        action: str,
        target: dict[str, Any],
        *,
        changed: int | None,
        detail: str | None,
        now: datetime,
    ) -> None:
        """An audit row inside the transaction, for a write whose audit must commit with it."""

    @abc.abstractmethod
    def _write_changes(self, tx: Any, changes: Changes, now: datetime) -> None:
        """Add the counters (in sorted order: two transactions then lock shared rows alike), insert the timeline
        lines at ``now`` and add the throughput to ``now``'s minute."""

    # --- import ------------------------------------------------------------------------------------------

    def delta_latest(
        self, route: str, identifiers: Sequence[str], unkeyed: Sequence[bytes] = ()
    ) -> dict[DeltaKey, Latest]:
        """What :meth:`import_batch` compares these keys with, read without writing: a dry run feeds it to the
        same :func:`import_plan`, so its counts are the ones the real import would produce."""
        if not identifiers and not unkeyed:
            return {}
        with self._reading() as tx:
            return self._latest(tx, route, list(identifiers), list(unkeyed))

    def created_at_of(self, ids: Sequence[int]) -> dict[int, datetime]:
        """When each of these tasks was created (a dry run's ``resend_failed`` periods), read without writing."""
        if not ids:
            return {}
        with self._reading() as tx:
            return self._created_at(tx, list(ids))

    def import_batch(
        self,
        route: str,
        items: Sequence[ImportItem],
        *,
        run_id: int | None,
        options: ImportOptions,
        now: datetime,
    ) -> ImportCounts:
        records = len(items)
        polled = options.delta and not options.full
        with self._transaction() as tx:
            latest: dict[DeltaKey, Latest] = {}
            touched = 0
            fast = self._touch_unchanged(tx, route, items, now) if polled else None
            if fast is not None:
                touched, items, latest = fast
                if not items:
                    self._import_shape(route, touched, records)
                    return ImportCounts(unchanged=touched)
            elif options.delta:
                idents, unkeyed = delta_keys(items)
                if idents or unkeyed:
                    latest = self._latest(tx, route, idents, unkeyed)
            resendable: set[int] = set()
            if candidates := resend_candidates(latest, options):
                cutoff = now - timedelta(seconds=float(options.resend_failed))
                resendable = {i for i, at in self._created_at(tx, candidates).items() if at <= cutoff}
            plan = import_plan(route, items, latest, options, resendable)
            counts = plan.counts
            counts.unchanged += touched
            if polled:
                self._import_shape(route, touched + len(plan.touches), records)
            creates = plan.creates
            if creates:
                for create, task_id in zip(creates, self._reserve_ids(tx, len(creates)), strict=True):
                    create.task_id = task_id
                by_status: dict[Status, list[NewRow]] = {}
                for create in creates:
                    rows = by_status.get(create.status)
                    if rows is None:
                        rows = by_status[create.status] = []
                    rows.append(_row(create))
                for status, rows in by_status.items():
                    self._insert_tasks(tx, _new_tasks(route, status, run_id, options, now), rows)
            if plan.touches:
                self._touch_tasks(tx, Counter(plan.touches), now)
            changes = Changes()
            for value, n in counts.created.items():
                changes.counters[(route, value)] += n
            superseded = 0
            if plan.supersedes:
                moves = [
                    (old_id, newer.task_id, superseded_reason(newer.task_id), plan.latest_status[old_id])
                    for old_id, newer in plan.supersedes
                ]
                moved = self._supersede_tasks(tx, moves, TRANSITIONS[Action.SUPERSEDE].sources, now)
                skipped = Status.SKIPPED.value
                for old_id, _newer_id, reason, _seen in moves:
                    before = moved.pop(old_id, None)
                    if before is None:
                        continue
                    changes.move(route, before, skipped)
                    changes.logs.append((old_id, "info", "import", "import", before, skipped, reason, None))
                    superseded += 1
            imported = counts.created.get("new", 0) + counts.created.get("processing", 0)
            if imported:
                changes.throughput[(route, "imported")] += imported
            self._write_changes(tx, changes, now)
            if imported:
                self._announce_new(tx, route)
        counts.superseded += superseded
        counts.processing_ids = [c.task_id for c in creates if c.status is Status.PROCESSING]
        counts.created_ids = [c.task_id for c in creates]
        if creates and self.events.subscribers:
            self.events.emit(TasksImported(route, dict(counts.created), counts.superseded))
        return counts

    # --- export ------------------------------------------------------------------------------------------

    def claim_due_tasks(
        self, route: str, limit: int, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Task]:
        found: list[tuple[Status, Sized]] = []
        want = limit
        with self._transaction() as tx:
            self._begin_claim(tx, route)
            changes = Changes()
            for source in (Status.RETRY, Status.NEW):
                if want <= 0:
                    break
                rows = self._claim(tx, route, source, want, worker=worker, lease_until=lease_until, now=now)
                if rows:
                    found.append((source, rows))
                    want -= len(rows)
                    changes.move(route, source.value, Status.PROCESSING.value, len(rows))
            if changes:
                self._write_changes(tx, changes, now)
        claimed: list[Task] = []
        for source, rows in found:
            claimed += self._claimed_tasks(rows, route, source, worker=worker, lease_until=lease_until, now=now)
        if len(found) > 1:
            claimed.sort(key=_task_id)
        return claimed

    def settle(self, settlements: Sequence[Settlement], *, now: datetime) -> int:
        # one settlement per task, the first: a second one would find it settled. Only delivery results leave
        # processing here; a claim or a manual action is never a settlement
        unique: dict[int, Settlement] = {}
        for s in settlements:
            if s.action in SETTLES and s.task_id not in unique:
                unique[s.task_id] = s
        if not unique:
            return 0
        with self._transaction() as tx:
            routes = self._settle_tasks(tx, list(unique.values()), now)
            changes = Changes()
            processing = Status.PROCESSING.value
            moved: Counter[tuple[str, str]] = Counter()
            append = changes.logs.append
            for task_id, route in routes.items():
                s = unique[task_id]
                to = SETTLE_TARGET[s.action]
                moved[(route, to)] += 1
                append((task_id, s.level, "export", s.worker, processing, to, s.message, s.details or None))
            for (route, to), n in moved.items():
                changes.move(route, processing, to, n)
                kind = THROUGHPUT_OF.get(to)
                if kind is not None:
                    changes.throughput[(route, kind)] += n
            self._write_changes(tx, changes, now)
        if routes and self.events.subscribers:
            self.events.emit(TasksSettled([(unique[i], r) for i, r in routes.items()]))
        return len(routes)

    def recover_expired_leases(self, *, now: datetime, max_attempts: dict[str, int], route: str | None = None) -> int:
        recovered: list[tuple[int, str, Status]] = []
        while True:
            with self._transaction() as tx:
                rows = self._expired_leases(tx, now, route, ACTION_BATCH)
                if not rows:
                    break
                plans = []
                for task_id, task_route, attempts, worker in rows:
                    action, message = lease_recovery(
                        attempts, max_attempts.get(task_route, DEFAULT_MAX_ATTEMPTS), worker
                    )
                    target = TRANSITIONS[action].target
                    due = now if target in (Status.NEW, Status.RETRY) else None
                    plans.append(Recovery(task_id, task_route, target, due, message))
                done = self._recover_tasks(tx, plans, now)
                changes = Changes()
                processing = Status.PROCESSING.value
                for p in plans:
                    if p.task_id not in done:
                        continue
                    recovered.append((p.task_id, p.route, p.target))
                    changes.move(p.route, processing, p.target.value)
                    changes.logs.append((p.task_id, "warning", "system", "lease", processing, p.target.value,
                                         p.message, None))  # fmt: skip
                self._write_changes(tx, changes, now)
            if len(rows) < ACTION_BATCH:
                break
        if recovered and self.events.subscribers:
            self.events.emit(LeasesRecovered(recovered))
        return len(recovered)

    def release(
        self,
        ids: Sequence[int],
        *,
        worker: str,
        now: datetime,
        retries: Collection[int] = (),
        message: str | None = None,
    ) -> int:
        if not ids:
            return 0
        backs = [(task_id, TRANSITIONS[release_action(task_id, retries)].target) for task_id in dict.fromkeys(ids)]
        with self._transaction() as tx:
            routes = self._release_tasks(tx, backs, worker, now)
            changes = Changes()
            processing = Status.PROCESSING.value
            for task_id, back in backs:
                route = routes.get(task_id)
                if route is None:
                    continue
                changes.move(route, processing, back.value)
                # it goes back to where it was claimed from: the detail the timeline reads for the claim
                changes.logs.append((task_id, "info", "system", worker, processing, back.value,
                                     message or RELEASED_MESSAGE, {"claimed_from": back.value}))  # fmt: skip
            self._write_changes(tx, changes, now)
        return len(routes)

    # --- actions -----------------------------------------------------------------------------------------

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
        rule = TRANSITIONS[action]
        target = rule.target
        scope = self._narrow(selection)
        matched_by_status = self._matched_by_status(scope)
        refused = [
            f"{n} task(s): {refusal_message(action, status)}"
            for status, n in sorted(matched_by_status.items())
            if status not in rule.sources
        ]
        message = action_message(action, actor, reason)
        move = ActionMove(
            sources=frozenset(rule.sources),
            target=target,
            error=action_error(action, reason, actor),
            next_attempt_at=now if target is Status.NEW else None,
            reset_attempts=action in RESETS_ATTEMPTS,
            now=now,
        )
        changed = 0
        superseded = 0
        last_id = 0
        while True:
            with self._transaction() as tx:
                rows = self._act(tx, scope, move, after_id=last_id, limit=ACTION_BATCH)
                if not rows:
                    break
                last_id = rows[-1][0]
                changes = Changes()
                for task_id, route, _identifier, before in rows:
                    changes.move(route, before, target.value)
                    changes.logs.append((task_id, "info", "action", actor, before, target.value, message, None))
                if target in _DUE:
                    superseded += self._send_newest_only(tx, rows, actor, now, changes)
                self._write_changes(tx, changes, now)
                changed += len(rows)
            if len(rows) < ACTION_BATCH:
                break
        result = ActionResult(
            matched=sum(matched_by_status.values()), changed=changed, refused=refused, superseded=superseded
        )
        who = audit_actor or actor
        name, audit_target = audit_name(action, selection)
        self.record_audit(
            who, name, audit_target, changed=changed, detail=self.redact(reason) if reason else None, now=now
        )
        self.events.emit(ActionTaken(action, who, selection, reason, result))
        return result

    def edit_task(
        self, task_id: int, edit: TaskEdit, *, actor: str, now: datetime, audit_actor: str | None = None
    ) -> EditResult:
        who = audit_actor or actor
        with self._transaction() as tx:
            # every check comes before the first write: the memory backend has no rollback
            found = self._lock_task(tx, task_id)
            if found is None:
                raise TaskNotFound(f"no task with id {task_id}")
            route, identifier, before, priority = found
            refusal = edit_refusal(task_id, before)
            if refusal is not None:
                raise TransitionRefused(refusal)
            new_id = self._reserve_ids(tx, 1)[0]
            changes = Changes()
            details: dict[str, Any] = {"edited_as": new_id, "changes": edit.diff}
            after = before
            if before in EDIT_SKIPS:
                message = edited_as_message(new_id, actor, edit.reason, None)
                # the skip links the original to its edit (related task), as a supersede links it to the newer task
                self._supersede_tasks(tx, [(task_id, new_id, message, before)], EDIT_SKIPS, now)
                after = Status.SKIPPED
                changes.move(route, before.value, after.value)
                changes.logs.append((task_id, "info", "action", actor, before.value, after.value, message, details))
            else:
                message = edited_as_message(new_id, actor, edit.reason, before)
                changes.logs.append((task_id, "info", "action", actor, None, None, message, details))
            identifier = identifier if identifier is not None else edit.identifier
            batch = NewTasks(
                route=route,
                status=Status.NEW,
                now=now,
                attempts=0,
                next_attempt_at=now,
                lease_until=None,
                worker=None,
                run_id=None,
                priority=priority,
            )
            row: NewRow = (new_id, identifier, edit.fingerprint, 1, edit.entity, None, task_id, None)
            self._insert_tasks(tx, batch, [row])
            changes.counters[(route, Status.NEW.value)] += 1
            created = edited_from_message(task_id, actor, edit.reason)
            changes.logs.append((new_id, "info", "action", actor, None, Status.NEW.value, created,
                                 {"edited_from": task_id, "changes": edit.diff}))  # fmt: skip
            # the edited version is the newest due task of its record: an older one still due would send it twice
            due = [(new_id, route, identifier, Status.NEW.value)]
            superseded = self._send_newest_only(tx, due, actor, now, changes)
            self._write_changes(tx, changes, now)
            detail = diff_text(edit.diff)
            if edit.reason:
                detail = f"{edit.reason} ({detail})"
            target = {"ids": [task_id], "edited_as": new_id, "route": route}
            self._audit(tx, who, EDIT_AUDIT, target, changed=1, detail=self.redact(detail), now=now)
            self._announce_new(tx, route)
        result = EditResult(task_id, new_id, route, before, after, superseded)
        self.events.emit(
            TaskEdited(who, route, task_id, new_id, before, after, tuple(str(d["path"]) for d in edit.diff))
        )
        return result

    def _send_newest_only(
        self, tx: Any, rows: list[tuple[int, str, str | None, str]], actor: str, now: datetime, changes: Changes
    ) -> int:
        """After tasks were made due again: of each (route, identifier) among them, only the newest due task stays
        due; the older ones are skipped as superseded by it, so one pass never sends a record twice."""
        by_route: dict[str, set[str]] = {}
        for _id, route, identifier, _before in rows:
            if identifier is not None:
                by_route.setdefault(route, set()).add(identifier)
        sources = TRANSITIONS[Action.SUPERSEDE].sources
        skipped = Status.SKIPPED.value
        superseded = 0
        for route, identifiers in by_route.items():
            due = self._due_of_identifiers(tx, route, sorted(identifiers), sources)
            newest: dict[str, int] = {}
            for task_id, identifier, _status in due:
                if task_id > newest.get(identifier, 0):
                    newest[identifier] = task_id
            moves = [
                (task_id, newest[identifier], superseded_reason(newest[identifier]), _STATUS[status])
                for task_id, identifier, status in due
                if task_id != newest[identifier]
            ]
            if not moves:
                continue
            moved = self._supersede_tasks(tx, moves, sources, now)
            for task_id, _newer, reason, _seen in moves:
                before = moved.get(task_id)
                if before is not None:
                    changes.move(route, before, skipped)
                    changes.logs.append((task_id, "info", "action", actor, before, skipped, reason, None))
                    superseded += 1
        return superseded

    # --- circuit breakers --------------------------------------------------------------------------------

    def _change_circuit(
        self,
        key: str,
        decide: Callable[[CircuitState], CircuitState | None],
        *,
        create: bool,
        now: datetime,
    ) -> CircuitUpdate | None:
        """Lock the row, let ``decide`` (:mod:`crossdock.store.circuits`) say what it becomes, store that: one
        transaction, so concurrent processes see each change whole and in turn."""
        with self._transaction() as tx:
            current = self._lock_circuit(tx, key, create=create, now=now)
            if current is None:
                return None
            after = decide(current)
            if after is None:
                return None
            self._put_circuit(tx, after)
        update = CircuitUpdate(current.state, after)
        return update

    def _announce_circuit(self, update: CircuitUpdate | None, by: str) -> None:
        if update is None:
            return
        after = update.after
        if update.opened:
            self.events.emit(
                CircuitOpened(
                    after.key, after.failures, after.open_until, after.last_error, update.before == "half_open"
                )
            )
        elif update.closed:
            self.events.emit(CircuitClosed(after.key, by))

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
        def decide(row: CircuitState) -> CircuitState:
            return circuit_rules.after_failures(
                row, count, threshold=threshold, cooldown=cooldown, error=error, now=now, reset=reset
            )

        update = self._change_circuit(key, decide, create=True, now=now)
        assert update is not None  # created when missing, and a failure always writes
        self._announce_circuit(update, "probe")
        return update

    def reset_circuit_failures(
        self, key: str, *, now: datetime, probe_owner: str | None = None
    ) -> CircuitUpdate | None:
        update = self._change_circuit(
            key, lambda row: circuit_rules.after_answer(row, now=now, probe_owner=probe_owner), create=False, now=now
        )
        self._announce_circuit(update, "probe")
        return update

    def take_circuit_probe(self, key: str, *, owner: str, now: datetime, stale_before: datetime) -> bool:
        update = self._change_circuit(
            key,
            lambda row: circuit_rules.probe_taken(row, owner=owner, now=now, stale_before=stale_before),
            create=False,
            now=now,
        )
        return update is not None

    def return_circuit_probe(self, key: str, *, owner: str, now: datetime) -> bool:
        update = self._change_circuit(
            key, lambda row: circuit_rules.probe_returned(row, owner=owner, now=now), create=False, now=now
        )
        return update is not None

    def close_circuit(self, key: str, *, now: datetime, by: str = "by hand") -> CircuitUpdate | None:
        update = self._change_circuit(key, lambda row: circuit_rules.closed(row, now), create=False, now=now)
        self._announce_circuit(update, by)
        return update

    # --- housekeeping ------------------------------------------------------------------------------------

    def prune(
        self,
        *,
        older_than: datetime,
        statuses: Sequence[Status],
        route: str | None = None,
        batch_size: int = 5000,
        actor: str = "retention",
    ) -> int:
        return self.prune_ages(dict.fromkeys(statuses, older_than), route=route, batch_size=batch_size, actor=actor)

    def prune_ages(
        self,
        cutoffs: Mapping[Status, datetime],
        *,
        route: str | None = None,
        batch_size: int = 5000,
        actor: str = "retention",
    ) -> int:
        if not cutoffs:
            return 0
        now = datetime.now(UTC)
        deleted, ranges = self._prune_whole(cutoffs, route, now)
        for lo, hi in ranges:
            last_id = lo - 1
            while True:
                with self._transaction() as tx:
                    ids = self._prunable(
                        tx, cutoffs=cutoffs, route=route, after_id=last_id, until_id=hi, limit=batch_size
                    )
                    if not ids:
                        break
                    last_id = ids[-1]
                    changes = Changes()
                    for key in self._delete_tasks(tx, ids):
                        changes.counters[key] -= 1
                        deleted[key] += 1
                    self._write_changes(tx, changes, now)
                if len(ids) < batch_size:
                    break
        total = sum(deleted.values())
        if total:
            self._after_prune()
            target: dict[str, Any] = {"status": [s.value for s in cutoffs]}
            if len(set(cutoffs.values())) == 1:
                target["older_than"] = iso(next(iter(cutoffs.values())))
            else:
                target["older_than"] = {s.value: iso(at) for s, at in cutoffs.items()}
            if route:
                target["route"] = route
            self.record_audit(actor, "tasks.prune", target, changed=total, now=now)
            self.events.emit(TasksPruned(actor, dict(deleted)))
        return total

    def _prune_whole(
        self, cutoffs: Mapping[Status, datetime], route: str | None, now: datetime
    ) -> tuple[Counter[tuple[str, str]], list[tuple[int, int | None]]]:
        """Remove what can go a whole storage unit at a time (PostgreSQL partitions); returns what it removed per
        (route, status) and the id ranges ``[lo, hi)`` (``hi`` None: open) left to the row-by-row pass."""
        return Counter(), [(0, None)]


def _task_id(task: Task) -> int:
    return task.id


@contextlib.contextmanager
def subscribed(ledger: Ledger, subscriber: Callable[[LedgerEvent], None]) -> Iterator[None]:
    """``subscriber`` hears the ledger's events inside the block."""
    remove = ledger.events.subscribe(subscriber)
    try:
        yield
    finally:
        remove()
