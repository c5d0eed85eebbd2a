"""What an import batch writes, record by record: pure, so the ledger applies it the same way on every backend."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import cast

from crossdock.store.base import ImportCounts, ImportItem, ImportOptions
from crossdock.tasks import POLLED, RESEND_ON_SAME, TOUCH_ON_SAME, ImportOutcome, Status, decide_import


class PlannedTask:
    """A task row an import batch will insert. Its id is assigned by the store."""

    __slots__ = (
        "_reason",
        "item",
        "record_fingerprint",
        "related_id",
        "seen_count",
        "status",
        "superseded_by",
        "task_id",
    )

    def __init__(self, item: ImportItem, status: Status, reason: str | None, related_id: int | None) -> None:
        self.item = item
        self.status = status
        self._reason = reason
        self.related_id = related_id
        self.record_fingerprint = False
        self.superseded_by: PlannedTask | None = None
        self.task_id = 0
        #: identical records later in the same batch count as seen, as they would in a later batch
        self.seen_count = 1

    @property
    def reason(self) -> str | None:
        if self.superseded_by is not None:
            return f"superseded by task {self.superseded_by.task_id}"
        return self._reason

    @property
    def related(self) -> PlannedTask | None:
        return self.superseded_by


@dataclass
class ImportPlan:
    creates: list[PlannedTask] = field(default_factory=list)
    touches: list[int] = field(default_factory=list)
    #: (id of an existing unsent task, the newer planned task that supersedes it)
    supersedes: list[tuple[int, PlannedTask]] = field(default_factory=list)
    #: status of each existing task the plan refers to
    latest_status: dict[int, Status] = field(default_factory=dict)
    counts: ImportCounts = field(default_factory=ImportCounts)


#: what the store knows of an identifier: (fingerprint, latest task id, latest task status or None if gone)
Latest = tuple[bytes, int, Status | None]


#: what delta compares a record by: its identifier, or for a record without one (a malformed line, a missing
#: identifier) its content fingerprint among the route's tasks without an identifier
DeltaKey = str | bytes


def unkeyed_key(item: ImportItem) -> bytes | None:
    """The key in ``latest`` of a record without an identifier: its content fingerprint, when it has content and
    is rejected or filtered (a record without an identifier never intends a task)."""
    if item.identifier is None and item.fingerprint is not None and item.status not in POLLED:
        return item.fingerprint
    return None


def unkeyed_keys(items: Sequence[ImportItem]) -> list[bytes]:
    """The distinct :func:`unkeyed_key` of a batch's records without an identifier."""
    return list({k for it in items if (k := unkeyed_key(it)) is not None})


def delta_keys(items: Sequence[ImportItem]) -> tuple[list[str], list[bytes]]:
    """What a store looks up for a batch: its distinct identifiers, and the content keys of its records without one
    (looked for only when there are such records, which is rare)."""
    idents = {it.identifier for it in items}
    if None not in idents:
        return cast("list[str]", list(idents)), []
    idents.discard(None)
    return cast("list[str]", list(idents)), unkeyed_keys(items)


def import_plan(
    route: str,
    items: Sequence[ImportItem],
    latest: dict[DeltaKey, Latest],
    options: ImportOptions,
    resendable: Collection[int] = (),
) -> ImportPlan:
    """Decide, record by record, what an import batch writes. Pure: the store applies it in one transaction.

    ``latest`` is keyed by identifier, or for a record without one by :func:`unkeyed_key`. ``resendable`` holds
    the failed or rejected latest tasks whose ``resend_failed`` period has passed (see :func:`resend_candidates`).
    """
    plan = ImportPlan()
    counts = plan.counts
    creates = plan.creates
    touches = plan.touches
    pending: dict[DeltaKey, PlannedTask] = {}
    use_delta = options.delta and not options.full
    record = options.delta or options.full
    for item in items:
        ident: DeltaKey | None = item.identifier
        intended = item.status
        if ident is None:
            ident = unkeyed_key(item)
        if ident is None or item.fingerprint is None or not (use_delta or record):
            _create(plan, item, intended, item.reason, None)
            continue
        if ident not in pending and ident not in latest:
            # the common case of a first import: an identifier never seen, nothing to decide
            task = PlannedTask(item, intended, item.reason, None)
            task.record_fingerprint = True
            creates.append(task)
            pending[ident] = task
            continue
        if use_delta and ident not in pending:
            # the common case of a catalogue poll: the same data as a latest task not yet delivered (or skipped as
            # unchanged): no row, the latest task is touched (decide_import's TOUCH, without the call)
            seen = latest[ident]
            if seen[0] == item.fingerprint and intended in POLLED and seen[2] in TOUCH_ON_SAME:
                counts.unchanged += 1
                touches.append(seen[1])
                continue
        prior = pending.get(ident)
        known = latest.get(ident) if use_delta else None
        if prior is not None and use_delta:
            latest_status: Status | None = prior.status
            same = prior.item.fingerprint == item.fingerprint
        elif known is not None and known[2] is not None:
            latest_status = known[2]
            same = known[0] == item.fingerprint
        else:
            latest_status = None
            same = False
        resend = options.resend_failed is True or (known is not None and prior is None and known[1] in resendable)
        decision = decide_import(intended, latest_status, same, supersede=options.supersede, resend=resend)
        if decision.outcome is ImportOutcome.TOUCH:
            # a filtered or rejected record seen again is counted by the importer as filtered or rejected
            if intended in POLLED:
                counts.unchanged += 1
            if prior is not None:
                prior.seen_count += 1
            elif known is not None:
                plan.touches.append(known[1])
            continue
        if decision.outcome is ImportOutcome.CREATE_UNCHANGED:
            related = known[1] if prior is None and known is not None else None
            reason = f"unchanged since task {related}" if related else "unchanged"
            task = _create(plan, item, Status.SKIPPED, reason, related)
            counts.unchanged_created += 1
        else:
            task = _create(plan, item, intended, item.reason, None)
            if latest_status is not None and not same and intended in POLLED:
                counts.changed += 1
        task.record_fingerprint = True
        if decision.supersede_latest:
            if prior is not None:
                prior.superseded_by = task
                prior.status = Status.SKIPPED
                counts.superseded += 1
            elif known is not None and known[2] is not None:
                plan.supersedes.append((known[1], task))
                plan.latest_status[known[1]] = known[2]
        pending[ident] = task
    # counted once at the end, so a task superseded within the batch counts as skipped
    created = counts.created
    for task in creates:
        key = task.status._value_  # the plain attribute: Enum.value is a slow descriptor on this hot path
        created[key] = created.get(key, 0) + 1
    return plan


def resend_candidates(latest: dict[DeltaKey, Latest], options: ImportOptions) -> list[int]:
    """The failed or rejected latest tasks whose age decides whether an identical record is sent again: only with
    ``resend_failed`` set to a period (``True`` always resends, ``False`` never)."""
    if isinstance(options.resend_failed, bool):
        return []
    return [seen[1] for seen in latest.values() if seen[2] in RESEND_ON_SAME]


def _create(plan: ImportPlan, item: ImportItem, status: Status, reason: str | None, related: int | None) -> PlannedTask:
    task = PlannedTask(item, status, reason, related)
    plan.creates.append(task)
    return task
