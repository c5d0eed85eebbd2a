"""An in-memory store with the same behaviour as the SQL ones, for fast unit tests.

It records which operations ran (``calls``), so tests can check the storage calls without a database.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from crossdock.store.base import (
    ActionResult,
    AuditEntry,
    CacheEntry,
    ErrorGroup,
    IdempotencyRecord,
    ImportCounts,
    ImportItem,
    ImportOptions,
    RouteState,
    Run,
    Settlement,
    Stats,
    Store,
    TaskFilter,
    TokenRecord,
    empty_counts,
)
from crossdock.store.transitions import (
    RELEASED_MESSAGE,
    DeltaKey,
    Latest,
    action_fields,
    action_message,
    import_plan,
    initial_attempts,
    lease_recovery,
    release_action,
    settles_from_processing,
    unkeyed_key,
)
from crossdock.tasks import RESETS_ATTEMPTS, TRANSITIONS, Action, LogLine, Status, Task, refusal_message


class MemoryStore(Store):
    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.tasks: dict[int, Task] = {}
        self.logs: dict[int, list[LogLine]] = {}
        self.fingerprints: dict[tuple[str, str], tuple[bytes, int]] = {}
        self.counters: Counter[tuple[str, str]] = Counter()
        self.routes: set[str] = set()
        self.runs: dict[int, Run] = {}
        self.storage: dict[tuple[str, str], tuple[Any, float | None]] = {}
        self.calls: list[str] = []
        self._next_id = 1
        self.route_state: dict[str, RouteState] = {}
        self.tokens: dict[int, tuple[TokenRecord, str]] = {}
        self.audit: list[AuditEntry] = []
        self.idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        self.per_minute: Counter[tuple[int, str, str]] = Counter()

    def upgrade(self) -> int:
        self.calls.append("upgrade")
        return 1

    def close(self) -> None:
        self.calls.append("close")

    def _move(self, task: Task, to: Status, now: datetime) -> None:
        self.counters[(task.route, task.status.value)] -= 1
        self.counters[(task.route, to.value)] += 1
        task.status = to
        task.updated_at = now

    def _log(self, task_id: int, line: LogLine) -> None:
        self.logs.setdefault(task_id, []).append(line)

    # --- import ----------------------------------------------------------------------------------

    def import_batch(
        self,
        route: str,
        items: Sequence[ImportItem],
        *,
        run_id: int | None,
        options: ImportOptions,
        now: datetime,
    ) -> ImportCounts:
        self.calls.append("import_batch")
        with self._lock:
            latest: dict[DeltaKey, Latest] = {}
            if options.delta:
                for it in items:
                    if it.identifier is not None and (route, it.identifier) in self.fingerprints:
                        fp, task_id = self.fingerprints[(route, it.identifier)]
                        t = self.tasks.get(task_id)
                        latest[it.identifier] = (fp, task_id, t.status if t else None)
                    elif (key := unkeyed_key(it)) is not None and key not in latest:
                        # as the SQL stores: the newest task without an identifier that recorded this content
                        same = [t for t in self.tasks.values() if t.route == route and t.identifier is None]
                        same = [t for t in same if t.fingerprint == key.hex()]
                        if same:
                            last = max(same, key=lambda t: t.id)
                            latest[key] = (key, last.id, last.status)
            plan = import_plan(route, items, latest, options)
            for p in plan.creates:
                p.task_id = self._next_id
                self._next_id += 1
            for p in plan.creates:
                item = p.item
                task = Task(
                    id=p.task_id,
                    route=route,
                    identifier=item.identifier,
                    status=p.status,
                    entity=orjson.loads(item.entity) if item.entity is not None else None,
                    attempts=initial_attempts(p.status),
                    seen_count=p.seen_count,
                    created_at=now,
                    updated_at=now,
                    next_attempt_at=now if p.status is Status.NEW else None,
                    lease_until=options.lease_until if p.status is Status.PROCESSING else None,
                    worker=options.worker if p.status is Status.PROCESSING else None,
                    error=p.reason,
                    # a task without an identifier keeps its content fingerprint only when delta recorded it
                    fingerprint=item.fingerprint.hex()
                    if item.fingerprint and (item.identifier is not None or p.record_fingerprint)
                    else None,
                    last_seen_at=now,
                    run_id=run_id,
                    related_task_id=p.related.task_id if p.related is not None else p.related_id,
                    priority=options.priority,
                    raw=item.raw,
                )
                self.tasks[task.id] = task
                self.counters[(route, task.status.value)] += 1
                if p.record_fingerprint and item.identifier is not None and item.fingerprint is not None:
                    self.fingerprints[(route, item.identifier)] = (item.fingerprint, task.id)
            for task_id in plan.touches:
                t = self.tasks[task_id]
                t.seen_count += 1
                t.last_seen_at = now
            superseded = 0
            for old_id, newer in plan.supersedes:
                old = self.tasks.get(old_id)
                if old is None or old.status not in TRANSITIONS[Action.SUPERSEDE].sources:
                    continue
                reason = f"superseded by task {newer.task_id}"
                before = old.status
                self._move(old, Status.SKIPPED, now)
                old.error = reason
                old.related_task_id = newer.task_id
                old.next_attempt_at = None
                self._log(old_id, LogLine(now, "info", "import", reason, "import", before, Status.SKIPPED))
                superseded += 1
            imported = sum(1 for p in plan.creates if p.status in (Status.NEW, Status.PROCESSING))
            if imported:
                self.per_minute[(int(now.timestamp() // 60), route, "imported")] += imported
        counts = plan.counts
        counts.superseded += superseded
        counts.processing_ids = [p.task_id for p in plan.creates if p.status is Status.PROCESSING]
        counts.created_ids = [p.task_id for p in plan.creates]
        return counts

    # --- export ----------------------------------------------------------------------------------

    def claim_due_tasks(
        self, route: str, limit: int, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Task]:
        self.calls.append("claim_due_tasks")
        with self._lock:
            claimed: list[Task] = []
            for source in (Status.RETRY, Status.NEW):
                due = sorted(
                    (
                        t
                        for t in self.tasks.values()
                        if t.route == route
                        and t.status is source
                        and t.next_attempt_at is not None
                        and t.next_attempt_at <= now
                    ),
                    key=(lambda t: (t.next_attempt_at, t.id)) if source is Status.RETRY else (lambda t: t.id),
                )
                for t in due[: limit - len(claimed)]:
                    self._move(t, Status.PROCESSING, now)
                    t.worker = worker
                    t.lease_until = lease_until
                    t.attempts += 1
                    t.next_attempt_at = None
                    claimed.append(replace(t, claimed_from=source))
            return sorted(claimed, key=lambda t: t.id)

    def settle(self, settlements: Sequence[Settlement], *, now: datetime) -> int:
        self.calls.append("settle")
        changed = 0
        with self._lock:
            for s in settlements:
                t = self.tasks.get(s.task_id)
                if t is None or t.status is not Status.PROCESSING or t.worker != s.worker:
                    continue
                if not settles_from_processing(s.action):
                    continue
                target = TRANSITIONS[s.action].target
                self._move(t, target, now)
                kind = {"finished": "finished", "waiting": "finished", "failed": "failed", "retry": "retry"}
                if target.value in kind:
                    self.per_minute[(int(now.timestamp() // 60), t.route, kind[target.value])] += 1
                t.error = s.error
                t.next_attempt_at = s.next_attempt_at
                t.lease_until = None
                t.result = s.result
                self._log(
                    t.id,
                    LogLine(
                        now,
                        s.level,
                        "export",
                        s.message,
                        s.worker,
                        Status.PROCESSING,
                        target,
                        dict(s.details),
                    ),
                )
                changed += 1
        return changed

    def extend_leases(self, ids: Sequence[int], *, worker: str, lease_until: datetime) -> int:
        n = 0
        with self._lock:
            for i in ids:
                t = self.tasks.get(i)
                if t is not None and t.status is Status.PROCESSING and t.worker == worker:
                    t.lease_until = lease_until
                    n += 1
        return n

    def recover_expired_leases(self, *, now: datetime, max_attempts: dict[str, int], route: str | None = None) -> int:
        self.calls.append("recover_expired_leases")
        n = 0
        with self._lock:
            for t in list(self.tasks.values()):
                if t.status is not Status.PROCESSING or t.lease_until is None or t.lease_until >= now:
                    continue
                if route is not None and t.route != route:
                    continue
                action, message = lease_recovery(t.attempts, max_attempts.get(t.route, 3), t.worker)
                target = TRANSITIONS[action].target
                self._move(t, target, now)
                t.lease_until = None
                t.error = message
                t.next_attempt_at = now if target in (Status.NEW, Status.RETRY) else None
                self._log(t.id, LogLine(now, "warning", "system", message, "lease", Status.PROCESSING, target))
                n += 1
        return n

    def release(self, ids: Sequence[int], *, worker: str, now: datetime, retries: Collection[int] = ()) -> int:
        n = 0
        with self._lock:
            for i in ids:
                t = self.tasks.get(i)
                if t is None or t.status is not Status.PROCESSING or t.worker != worker:
                    continue
                back = TRANSITIONS[release_action(i, retries)].target
                self._move(t, back, now)
                t.lease_until = None
                t.attempts = max(t.attempts - 1, 0)
                t.next_attempt_at = now
                claim = {"claimed_from": back.value}  # it goes back to where it was claimed from
                self._log(i, LogLine(now, "info", "system", RELEASED_MESSAGE, worker, Status.PROCESSING, back, claim))
                n += 1
        return n

    # --- actions ---------------------------------------------------------------------------------

    def apply_action(
        self, action: Action, selection: TaskFilter, *, actor: str, reason: str | None, now: datetime
    ) -> ActionResult:
        self.calls.append("apply_action")
        rule = TRANSITIONS[action]
        fields = action_fields(action, reason, actor)
        message = action_message(action, actor, reason)
        with self._lock:
            matched = [t for t in self.tasks.values() if _matches(t, selection)]
            refused_counts = Counter(t.status for t in matched if t.status not in rule.sources)
            changed = 0
            for t in matched:
                if t.status not in rule.sources:
                    continue
                before = t.status
                self._move(t, rule.target, now)
                t.error = fields.error
                t.lease_until = None
                t.next_attempt_at = now if rule.target is Status.NEW else None
                if action in RESETS_ATTEMPTS:
                    t.attempts = 0
                self._log(t.id, LogLine(now, "info", "action", message, actor, before, rule.target))
                changed += 1
        refused = [f"{n} task(s): {refusal_message(action, s)}" for s, n in sorted(refused_counts.items())]
        return ActionResult(matched=len(matched), changed=changed, refused=refused)

    # --- reads -----------------------------------------------------------------------------------

    def get_task(self, task_id: int) -> Task | None:
        t = self.tasks.get(task_id)
        return replace(t) if t else None

    def get_tasks(self, ids: Sequence[int]) -> list[Task]:
        return [replace(self.tasks[i]) for i in sorted(set(ids)) if i in self.tasks]

    def task_logs(self, task_id: int) -> list[LogLine]:
        return list(self.logs.get(task_id, []))

    def list_tasks(
        self, selection: TaskFilter, *, limit: int = 50, cursor: int | None = None
    ) -> tuple[list[Task], int | None]:
        ids = sorted((i for i, t in self.tasks.items() if _matches(t, selection)), reverse=True)
        if cursor is not None:
            ids = [i for i in ids if i < cursor]
        page = [replace(self.tasks[i]) for i in ids[:limit]]
        return page, (page[-1].id if len(ids) > limit and page else None)

    def count_tasks(self, selection: TaskFilter) -> int:
        return sum(1 for t in self.tasks.values() if _matches(t, selection))

    def stats(self, route: str | None = None) -> Stats:
        by_status = empty_counts()
        by_route: dict[str, dict[str, int]] = {r: empty_counts() for r in self.routes if route in (None, r)}
        for (r, s), n in self.counters.items():
            if route is not None and r != route:
                continue
            by_route.setdefault(r, empty_counts())[s] = n
            by_status[s] += n
        return Stats(total=sum(by_status.values()), by_status=by_status, by_route=by_route)

    def recount(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for t in self.tasks.values():
            out.setdefault(t.route, empty_counts())[t.status.value] += 1
        return out

    def ensure_routes(self, routes: Iterable[str]) -> None:
        self.routes.update(routes)

    # --- runs ------------------------------------------------------------------------------------

    def start_run(self, route: str, part: str, *, actor: str | None, now: datetime, owner: str | None = None) -> int:
        run_id = len(self.runs) + 1
        self.runs[run_id] = Run(run_id, route, part, now, None, "running", {}, None, actor, owner, now)
        return run_id

    def touch_run(self, run_id: int, *, now: datetime) -> None:
        run = self.runs[run_id]
        if run.status == "running":
            run.heartbeat_at = now

    def running_runs(self) -> list[Run]:
        return [r for r in sorted(self.runs.values(), key=lambda r: r.id) if r.status == "running"]

    def abandon_run(self, run_id: int, *, error: str, now: datetime) -> bool:
        run = self.runs.get(run_id)
        if run is None or run.status != "running":
            return False
        run.status, run.finished_at, run.error = "abandoned", now, error
        return True

    def finish_run(
        self, run_id: int, *, status: str, summary: dict[str, Any], error: str | None, now: datetime
    ) -> None:
        run = self.runs[run_id]
        run.finished_at, run.status, run.summary, run.error = now, status, summary, error

    def list_runs(self, route: str | None = None, limit: int = 20) -> list[Run]:
        runs = [r for r in self.runs.values() if route in (None, r.route)]
        return sorted(runs, key=lambda r: r.id, reverse=True)[:limit]

    def last_successful_run(self, route: str, part: str) -> Run | None:
        ok = [r for r in self.runs.values() if r.route == route and r.part == part and r.status == "ok"]
        return max(ok, key=lambda r: r.id) if ok else None

    # --- delta cache and storages ----------------------------------------------------------------

    def cache_show(self, route: str, identifier: str) -> CacheEntry | None:
        entry = self.fingerprints.get((route, identifier))
        if entry is None:
            return None
        t = self.tasks.get(entry[1])
        return CacheEntry(
            route,
            identifier,
            entry[0].hex(),
            entry[1],
            t.status if t else None,
            t.last_seen_at if t else None,
        )

    def cache_clear(self, route: str, identifier: str | None = None) -> int:
        keys = [k for k in self.fingerprints if k[0] == route and identifier in (None, k[1])]
        for k in keys:
            del self.fingerprints[k]
        if identifier is None:
            for t in self.tasks.values():
                if t.route == route and t.identifier is None:
                    t.fingerprint = None
        return len(keys)

    def storage_get(self, storage: str, key: str, *, now: datetime) -> Any | None:
        entry = self.storage.get((storage, key))
        if entry is None or (entry[1] is not None and entry[1] <= now.timestamp()):
            return None
        return entry[0]

    def storage_put(self, storage: str, key: str, value: Any, *, now: datetime, ttl: float | None = None) -> None:
        self.storage[(storage, key)] = (value, now.timestamp() + ttl if ttl else None)

    # --- housekeeping ----------------------------------------------------------------------------

    def prune(
        self,
        *,
        older_than: datetime,
        statuses: Sequence[Status],
        route: str | None = None,
        batch_size: int = 5000,
    ) -> int:
        latest_ids = {task_id for _fp, task_id in self.fingerprints.values()}
        victims = [
            t
            for t in self.tasks.values()
            if t.status in statuses
            and t.updated_at is not None
            and t.updated_at < older_than
            and route in (None, t.route)
            and t.id not in latest_ids
        ]
        for t in victims:
            del self.tasks[t.id]
            self.logs.pop(t.id, None)
            self.counters[(t.route, t.status.value)] -= 1
        return len(victims)

    # --- operations: route state, tokens, audit, monitor ------------------------------------------

    def route_states(self) -> dict[str, RouteState]:
        return {k: replace(v) for k, v in self.route_state.items()}

    def set_route_active(self, route: str, active: bool | None, *, now: datetime) -> None:
        self.route_state.setdefault(route, RouteState(route)).active = active

    def set_next_fire(self, route: str, part: str, at: datetime | None, *, now: datetime) -> None:
        state = self.route_state.setdefault(route, RouteState(route))
        if part == "incoming":
            state.incoming_next = at
        else:
            state.outgoing_next = at

    def create_token(self, name: str, role: str, token_hash: str, *, now: datetime) -> int:
        token_id = len(self.tokens) + 1
        self.tokens[token_id] = (TokenRecord(token_id, name, role, now, None, False), token_hash)
        return token_id

    def find_token(self, token_hash: str, *, now: datetime | None = None) -> TokenRecord | None:
        for record, digest in self.tokens.values():
            if digest == token_hash and not record.revoked:
                if now is not None:
                    record.last_used = now
                return replace(record)
        return None

    def list_tokens(self) -> list[TokenRecord]:
        return [replace(r) for r, _ in self.tokens.values()]

    def revoke_token(self, token_id: int) -> bool:
        if token_id not in self.tokens:
            return False
        self.tokens[token_id][0].revoked = True
        return True

    def record_audit(
        self,
        actor: str,
        action: str,
        target: dict[str, Any],
        *,
        changed: int | None = None,
        detail: str | None = None,
        now: datetime,
    ) -> None:
        self.audit.append(AuditEntry(len(self.audit) + 1, now, actor, action, dict(target), changed, detail))

    def list_audit(self, *, limit: int = 100, cursor: int | None = None) -> list[AuditEntry]:
        entries = [e for e in reversed(self.audit) if cursor is None or e.id < cursor]
        return entries[:limit]

    def claim_idempotency_key(
        self, scope: str, key: str, *, fingerprint: str, now: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        with self._lock:
            for gone in [k for k, r in self.idempotency.items() if r.expires_at <= now]:
                del self.idempotency[gone]
            found = self.idempotency.get((scope, key))
            if found is not None:
                return found
            self.idempotency[(scope, key)] = IdempotencyRecord(fingerprint, now, expires_at, None)
            return None

    def settle_idempotency_key(
        self, scope: str, key: str, *, response: dict[str, Any] | None, expires_at: datetime | None = None
    ) -> None:
        with self._lock:
            found = self.idempotency.get((scope, key))
            if found is None or found.response is not None:
                return
            if response is None:
                del self.idempotency[(scope, key)]
                return
            self.idempotency[(scope, key)] = replace(
                found, response=orjson.loads(orjson.dumps(response)), expires_at=expires_at or found.expires_at
            )

    def throughput(self, *, since: datetime, route: str | None = None) -> dict[int, dict[str, int]]:
        first = int(since.timestamp() // 60)
        out: dict[int, dict[str, int]] = {}
        for (minute, r, kind), n in sorted(self.per_minute.items()):
            if minute >= first and route in (None, r):
                bucket = out.setdefault(minute, {})
                bucket[kind] = bucket.get(kind, 0) + n
        return out

    def top_errors(self, *, since: datetime, limit: int = 10) -> list[ErrorGroup]:
        groups: dict[tuple[str, str, str], list[int]] = {}
        for t in self.tasks.values():
            if t.status in (Status.FAILED, Status.RETRY) and t.error and t.updated_at and t.updated_at >= since:
                groups.setdefault((t.route, t.status.value, t.error), []).append(t.id)
        ranked = sorted(groups.items(), key=lambda kv: len(kv[1]), reverse=True)[:limit]
        return [ErrorGroup(r, s, e, len(ids), max(ids)) for (r, s, e), ids in ranked]

    def oldest_due(self) -> dict[str, dict[str, datetime]]:
        out: dict[str, dict[str, datetime]] = {}
        for t in self.tasks.values():
            if t.status not in (Status.NEW, Status.RETRY, Status.WAITING):
                continue
            at = t.updated_at if t.status is Status.WAITING else t.next_attempt_at
            if at is None:
                continue
            current = out.setdefault(t.route, {}).get(t.status.value)
            if current is None or at < current:
                out[t.route][t.status.value] = at
        return out


def _matches(t: Task, f: TaskFilter) -> bool:
    if f.ids is not None and t.id not in f.ids:
        return False
    if f.statuses and t.status not in f.statuses:
        return False
    if f.route and t.route != f.route:
        return False
    if f.identifier and t.identifier != f.identifier:
        return False
    if f.created_after and (t.created_at is None or t.created_at < f.created_after):
        return False
    if f.created_before and (t.created_at is None or t.created_at >= f.created_before):
        return False
    if not f.search:
        return True
    # case-insensitive, as SQL LIKE on SQLite
    needle = f.search.lower()
    return needle in (t.identifier or "").lower() or needle in (t.error or "").lower()
