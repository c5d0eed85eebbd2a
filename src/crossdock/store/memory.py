"""An in-memory store for fast unit tests: dict primitives under the same ledger as the SQL stores, so it cannot
disagree with them on what a write means."""

from __future__ import annotations

import contextlib
import copy
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from crossdock.store.base import (
    AlertRecord,
    AuditEntry,
    CacheEntry,
    CircuitState,
    ErrorGroup,
    FailureGroup,
    IdempotencyRecord,
    NewAlert,
    RouteState,
    Run,
    Settlement,
    Stats,
    TaskFilter,
    TokenRecord,
    alert_outcome,
    empty_counts,
)
from crossdock.store.import_plan import DeltaKey, Latest
from crossdock.store.ledger import ActionMove, Changes, Ledger, NewRow, NewTasks, Recovery
from crossdock.store.payload_filter import payload_filter
from crossdock.tasks import TRANSITIONS, LogLine, Status, Task

_STATUSES: dict[str, Status] = {s.value: s for s in Status}


class MemoryStore(Ledger):
    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.tasks: dict[int, Task] = {}
        self.logs: dict[int, list[LogLine]] = {}
        #: (route, identifier) -> the newest task that recorded a fingerprint (delta compares with it)
        self.latest_ids: dict[tuple[str, str], int] = {}
        self.counters: Counter[tuple[str, str]] = Counter()
        self.routes: set[str] = set()
        self.runs: dict[int, Run] = {}
        self.storage: dict[tuple[str, str], tuple[Any, float | None]] = {}
        self._next_id = 1
        self.route_state: dict[str, RouteState] = {}
        self.tokens: dict[int, tuple[TokenRecord, str]] = {}
        self.audit: list[AuditEntry] = []
        self.alerts: dict[int, AlertRecord] = {}
        self.alert_states: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        self.per_minute: Counter[tuple[int, str, str]] = Counter()
        self.circuit_rows: dict[str, CircuitState] = {}

    def upgrade(self) -> int:
        return 1

    def close(self) -> None:
        pass

    # --- ledger primitives -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            yield None

    def _latest(self, tx: None, route: str, identifiers: list[str], unkeyed: list[bytes]) -> dict[DeltaKey, Latest]:
        latest: dict[DeltaKey, Latest] = {}
        for ident in identifiers:
            task = self._latest_task(route, ident)
            if task is not None and task.fingerprint:
                latest[ident] = (bytes.fromhex(task.fingerprint), task.id, task.status)
        for key in unkeyed:
            # the newest task without an identifier that recorded this content
            hexed = key.hex()
            same = [
                t.id
                for t in self.tasks.values()
                if t.route == route and t.identifier is None and t.fingerprint == hexed
            ]
            if same:
                last = self.tasks[max(same)]
                latest[key] = (key, last.id, last.status)
        return latest

    def _latest_task(self, route: str, identifier: str) -> Task | None:
        task_id = self.latest_ids.get((route, identifier))
        return self.tasks.get(task_id) if task_id is not None else None

    def _created_at(self, tx: None, ids: list[int]) -> dict[int, datetime]:
        return {i: t.created_at for i in ids if (t := self.tasks.get(i)) is not None and t.created_at is not None}

    def _reserve_ids(self, tx: None, n: int) -> list[int]:
        first = self._next_id
        self._next_id += n
        return list(range(first, first + n))

    def _insert_tasks(self, tx: None, batch: NewTasks, rows: list[NewRow]) -> None:
        for task_id, identifier, fingerprint, seen, entity, error, related, raw in rows:
            self.tasks[task_id] = Task(
                id=task_id,
                route=batch.route,
                identifier=identifier,
                status=batch.status,
                entity=orjson.loads(entity) if entity is not None else None,
                attempts=batch.attempts,
                seen_count=seen,
                created_at=batch.now,
                updated_at=batch.now,
                next_attempt_at=batch.next_attempt_at,
                lease_until=batch.lease_until,
                worker=batch.worker,
                error=error,
                fingerprint=fingerprint.hex() if fingerprint is not None else None,
                last_seen_at=batch.now,
                run_id=batch.run_id,
                related_task_id=related,
                priority=batch.priority,
                raw=raw,
            )
            if fingerprint is not None and identifier is not None:
                self.latest_ids[(batch.route, identifier)] = task_id

    def _touch_tasks(self, tx: None, seen: dict[int, int], now: datetime) -> None:
        for task_id, n in seen.items():
            t = self.tasks[task_id]
            t.seen_count += n
            t.last_seen_at = now

    def _supersede_tasks(
        self, tx: None, moves: list[tuple[int, int, str, Status]], sources: Collection[Status], now: datetime
    ) -> dict[int, str]:
        moved = {}
        for old_id, newer_id, reason, _seen in moves:
            t = self.tasks.get(old_id)
            if t is None or t.status not in sources:
                continue
            moved[old_id] = t.status.value
            t.status, t.updated_at, t.error, t.related_task_id = Status.SKIPPED, now, reason, newer_id
            t.next_attempt_at = None
        return moved

    def _claim(
        self, tx: None, route: str, source: Status, limit: int, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Any]:
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
        claimed = []
        for t in due[:limit]:
            t.status, t.updated_at, t.worker, t.lease_until = Status.PROCESSING, now, worker, lease_until
            t.attempts += 1
            t.next_attempt_at = None
            claimed.append(replace(t, claimed_from=source))
        return claimed

    def _claimed_tasks(
        self, rows: list[Any], route: str, source: Status, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Task]:
        return rows  # copies made under the lock

    def _settle_tasks(self, tx: None, settlements: list[Settlement], now: datetime) -> dict[int, str]:
        moved = {}
        for s in settlements:
            t = self.tasks.get(s.task_id)
            if t is None or t.status is not Status.PROCESSING or t.worker != s.worker:
                continue
            t.status, t.updated_at = TRANSITIONS[s.action].target, now
            t.error, t.next_attempt_at, t.lease_until, t.result = s.error, s.next_attempt_at, None, s.result
            moved[t.id] = t.route
        return moved

    def _expired_leases(
        self, tx: None, now: datetime, route: str | None, limit: int
    ) -> list[tuple[int, str, int, str]]:
        expired = [
            (t.id, t.route, t.attempts, t.worker or "")
            for t in self.tasks.values()
            if t.status is Status.PROCESSING
            and t.lease_until is not None
            and t.lease_until < now
            and route in (None, t.route)
        ]
        return sorted(expired)[:limit]

    def _recover_tasks(self, tx: None, recoveries: list[Recovery], now: datetime) -> set[int]:
        done = set()
        for r in recoveries:
            t = self.tasks.get(r.task_id)
            if t is None or t.status is not Status.PROCESSING or t.lease_until is None or t.lease_until >= now:
                continue
            t.status, t.updated_at, t.lease_until = r.target, now, None
            t.error, t.next_attempt_at = r.message, r.next_attempt_at
            done.add(r.task_id)
        return done

    def _release_tasks(self, tx: None, backs: list[tuple[int, Status]], worker: str, now: datetime) -> dict[int, str]:
        moved = {}
        for task_id, back in backs:
            t = self.tasks.get(task_id)
            if t is None or t.status is not Status.PROCESSING or t.worker != worker:
                continue
            t.status, t.updated_at, t.lease_until, t.next_attempt_at = back, now, None, now
            t.attempts = max(t.attempts - 1, 0)
            moved[task_id] = t.route
        return moved

    def _lock_circuit(self, tx: None, key: str, *, create: bool, now: datetime) -> CircuitState | None:
        row = self.circuit_rows.get(key)
        if row is None and create:
            row = self.circuit_rows[key] = CircuitState(key, updated_at=now)
        return replace(row) if row is not None else None

    def _put_circuit(self, tx: None, row: CircuitState) -> None:
        self.circuit_rows[row.key] = replace(row)

    def circuits(self) -> dict[str, CircuitState]:
        with self._lock:
            return {k: replace(v) for k, v in sorted(self.circuit_rows.items())}

    def _matched_by_status(self, selection: TaskFilter) -> dict[Status, int]:
        with self._lock:
            return dict(Counter(t.status for t in self.tasks.values() if _matches(t, selection)))

    def _act(
        self,
        tx: None,
        selection: TaskFilter,
        move: ActionMove,
        *,
        after_id: int,
        limit: int,
    ) -> list[tuple[int, str, str | None, str]]:
        ids = sorted(
            i for i, t in self.tasks.items() if i > after_id and t.status in move.sources and _matches(t, selection)
        )[:limit]
        rows = []
        for i in ids:
            t = self.tasks[i]
            rows.append((i, t.route, t.identifier, t.status.value))
            t.status, t.updated_at, t.error, t.lease_until = move.target, move.now, move.error, None
            t.next_attempt_at = move.next_attempt_at
            if move.reset_attempts:
                t.attempts = 0
        return rows

    def _due_of_identifiers(
        self, tx: None, route: str, identifiers: list[str], statuses: Collection[Status]
    ) -> list[tuple[int, str, str]]:
        wanted = set(identifiers)
        return [
            (t.id, t.identifier, t.status.value)
            for t in self.tasks.values()
            if t.route == route and t.identifier in wanted and t.status in statuses and t.identifier is not None
        ]

    def _prunable(
        self,
        tx: None,
        *,
        cutoffs: Mapping[Status, datetime],
        route: str | None,
        after_id: int,
        until_id: int | None,
        limit: int,
    ) -> list[int]:
        latest = set(self.latest_ids.values())
        ids = sorted(
            t.id
            for t in self.tasks.values()
            if t.id > after_id
            and (until_id is None or t.id < until_id)
            and t.status in cutoffs
            and t.updated_at is not None
            and t.updated_at < cutoffs[t.status]
            and route in (None, t.route)
            and t.id not in latest
        )
        return ids[:limit]

    def _delete_tasks(self, tx: None, ids: list[int]) -> list[tuple[str, str]]:
        gone = []
        for i in ids:
            t = self.tasks.pop(i)
            self.logs.pop(i, None)
            gone.append((t.route, t.status.value))
        return gone

    def _lock_task(self, tx: None, task_id: int) -> tuple[str, str | None, Status, int] | None:
        t = self.tasks.get(task_id)
        return (t.route, t.identifier, t.status, t.priority) if t is not None else None

    def _audit(
        self,
        tx: None,
        actor: str,
        action: str,
        target: dict[str, Any],
        *,
        changed: int | None,
        detail: str | None,
        now: datetime,
    ) -> None:
        self.record_audit(actor, action, target, changed=changed, detail=detail, now=now)

    def _write_changes(self, tx: None, changes: Changes, now: datetime) -> None:
        self.counters.update(changes.counters)
        statuses = _STATUSES
        for task_id, level, phase, actor, before, after, message, details in changes.logs:
            line = LogLine(
                now,
                level,
                phase,
                message,
                actor,
                statuses[before] if before else None,
                statuses[after] if after else None,
                dict(details) if details else {},
            )
            self.logs.setdefault(task_id, []).append(line)
        minute = int(now.timestamp() // 60)
        for (route, kind), n in changes.throughput.items():
            self.per_minute[(minute, route, kind)] += n

    def extend_leases(self, ids: Sequence[int], *, worker: str, lease_until: datetime) -> int:
        n = 0
        with self._lock:
            for i in ids:
                t = self.tasks.get(i)
                if t is not None and t.status is Status.PROCESSING and t.worker == worker:
                    t.lease_until = lease_until
                    n += 1
        return n

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

    def latest_entities(
        self, route: str, identifiers: Sequence[str], statuses: Collection[Status] = (Status.FINISHED,)
    ) -> dict[str, tuple[int, Status, Any]]:
        wanted, found = set(identifiers), {}
        with self._lock:
            for task in sorted(self.tasks.values(), key=lambda t: t.id):
                if task.route == route and task.identifier in wanted and task.status in statuses:
                    found[task.identifier] = (task.id, task.status, copy.deepcopy(task.entity))
        return found

    def cache_show(self, route: str, identifier: str) -> CacheEntry | None:
        t = self._latest_task(route, identifier)
        if t is None or t.fingerprint is None:
            return None
        return CacheEntry(route, identifier, t.fingerprint, t.id, t.status, t.last_seen_at or t.created_at)

    def cache_clear(self, route: str, identifier: str | None = None) -> int:
        """Forget fingerprints by taking them off the tasks, as the SQL stores do."""
        with self._lock:
            keys = [k for k in self.latest_ids if k[0] == route and identifier in (None, k[1])]
            for k in keys:
                del self.latest_ids[k]
            for t in self.tasks.values():
                if t.route == route and (identifier is None or t.identifier == identifier):
                    t.fingerprint = None
            return len(keys)

    def storage_get(self, storage: str, key: str, *, now: datetime) -> Any | None:
        entry = self.storage.get((storage, key))
        if entry is None or (entry[1] is not None and entry[1] <= now.timestamp()):
            return None
        return entry[0]

    def storage_put(self, storage: str, key: str, value: Any, *, now: datetime, ttl: float | None = None) -> None:
        self.storage[(storage, key)] = (value, now.timestamp() + ttl if ttl else None)

    # --- operations: route state, tokens, audit, monitor ------------------------------------------

    def route_states(self) -> dict[str, RouteState]:
        return {k: replace(v) for k, v in self.route_state.items()}

    def set_route_active(
        self, route: str, active: bool | None, *, now: datetime, paused_reason: str | None = None
    ) -> None:
        state = self.route_state.setdefault(route, RouteState(route))
        state.active, state.paused_reason = active, paused_reason
        state.paused_at = now if paused_reason is not None else None

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

    def failure_groups(self, *, since: datetime, until: datetime, route: str | None = None) -> list[FailureGroup]:
        groups: dict[tuple[str, str | None], list[Task]] = {}
        for t in self.tasks.values():
            if (
                t.status is Status.FAILED
                and route in (None, t.route)
                and t.updated_at
                and since < t.updated_at <= until
            ):
                groups.setdefault((t.route, t.error), []).append(t)
        ranked = sorted(groups.items(), key=lambda kv: len(kv[1]), reverse=True)[:1000]
        return [
            FailureGroup(r, e, len(ts), min(t.updated_at for t in ts if t.updated_at), max(t.id for t in ts))
            for (r, e), ts in ranked
        ]

    def add_alerts(
        self, alerts: Sequence[NewAlert], *, now: datetime, states: dict[str, dict[str, Any]] | None = None
    ) -> list[int]:
        ids = []
        with self._lock:
            for key, state in (states or {}).items():
                self.alert_states[key] = copy.deepcopy(state)
            for a in alerts:
                alert_id = max(self.alerts, default=0) + 1
                self.alerts[alert_id] = AlertRecord(
                    alert_id,
                    now,
                    a.rule,
                    a.event,
                    a.route,
                    a.channel,
                    a.subject,
                    a.message,
                    "pending",
                    0,
                    now,
                    None,
                    None,
                )
                ids.append(alert_id)
        return ids

    def due_alerts(self, *, now: datetime, limit: int = 50) -> list[AlertRecord]:
        due = [
            a for a in self.alerts.values() if a.status == "pending" and a.next_attempt_at and a.next_attempt_at <= now
        ]
        return sorted(due, key=lambda a: (a.next_attempt_at or now, a.id))[:limit]

    def alert_attempted(
        self, alert_id: int, *, now: datetime, error: str | None = None, retry_at: datetime | None = None
    ) -> None:
        status = alert_outcome(error, retry_at)
        with self._lock:
            old = self.alerts.get(alert_id)
            if old is not None:
                self.alerts[alert_id] = replace(
                    old,
                    status=status,
                    attempts=old.attempts + 1,
                    error=error,
                    next_attempt_at=retry_at if status == "pending" else None,
                    sent_at=now if status == "sent" else None,
                )

    def list_alerts(
        self, *, limit: int = 100, cursor: int | None = None, status: str | None = None, route: str | None = None
    ) -> list[AlertRecord]:
        found = [
            a
            for _id, a in sorted(self.alerts.items(), reverse=True)
            if (cursor is None or a.id < cursor) and status in (None, a.status) and route in (None, a.route)
        ]
        return found[:limit]

    def prune_alerts(self, *, before: datetime) -> int:
        with self._lock:
            gone = [i for i, a in self.alerts.items() if a.created_at < before and a.status != "pending"]
            for i in gone:
                del self.alerts[i]
        return len(gone)

    def alert_state(self, key: str) -> dict[str, Any] | None:
        found = self.alert_states.get(key)
        return copy.deepcopy(found) if found is not None else None

    def set_alert_state(self, key: str, state: dict[str, Any], *, now: datetime) -> None:
        self.alert_states[key] = copy.deepcopy(state)

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
    if f.where and not payload_filter(f.where).matches(t.entity):
        return False
    if not f.search:
        return True
    # case-insensitive, as SQL LIKE on SQLite
    needle = f.search.lower()
    return needle in (t.identifier or "").lower() or needle in (t.error or "").lower()
