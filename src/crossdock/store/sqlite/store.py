"""The embedded SQLite store: WAL mode, one writer transaction per batch, named queries."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sqlite3
import string
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from crossdock.errors import CrossdockError, StoreUnavailable
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
from crossdock.store.filters import where_clause
from crossdock.store.sqlfiles import load_migrations, load_queries
from crossdock.store.transitions import (
    RELEASED_MESSAGE,
    DeltaKey,
    Latest,
    action_fields,
    action_message,
    delta_keys,
    import_plan,
    lease_recovery,
    release_action,
    settles_from_processing,
    unkeyed_keys,
)
from crossdock.tasks import (
    POLLED,
    RESETS_ATTEMPTS,
    TRANSITIONS,
    Action,
    LogLine,
    Status,
    Task,
    refusal_message,
)

log = logging.getLogger("crossdock.store")

Q = load_queries("crossdock.store.sqlite")
#: touches of a poll are kept in task_seen (migration 0005); a task's count is its own plus those
_TASK_COLUMNS = (
    "id, route, identifier, status, attempts, created_at, updated_at, next_attempt_at, lease_until, worker, "
    "error, fingerprint, "
    "seen_count + COALESCE((SELECT s.seen FROM task_seen s WHERE s.task_id = tasks.id), 0), "
    "COALESCE((SELECT s.last_seen_at FROM task_seen s WHERE s.task_id = tasks.id), last_seen_at), "
    "run_id, related_task_id, priority, entity, raw, result"
)
ACTION_BATCH = 5000


def ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _task(row: Sequence[Any]) -> Task:
    entity = row[17]
    raw = row[18]
    return Task(
        id=row[0],
        route=row[1],
        identifier=row[2],
        status=Status(row[3]),
        attempts=row[4],
        created_at=dt(row[5]),
        updated_at=dt(row[6]),
        next_attempt_at=dt(row[7]) if row[3] in ("retry", "new") else None,
        lease_until=dt(row[8]),
        worker=row[9],
        error=row[10],
        fingerprint=row[11].hex() if row[11] else None,
        seen_count=row[12],
        last_seen_at=dt(row[13]),
        run_id=row[14],
        related_task_id=row[15],
        priority=row[16],
        entity=orjson.loads(entity) if entity is not None else None,
        raw=raw,
        result=orjson.loads(row[19]) if row[19] is not None else None,
    )


def _task_id(task: Task) -> int:
    return task.id


def _claimed_tasks(
    rows: list[Any], route: str, source: Status, worker: str, now_ts: float, until_ts: float
) -> list[Task]:
    """Tasks from the rows a claim returned: the claim's own values are not read back, and the import times
    (shared by a whole import batch) are converted once per distinct value."""
    processing = Status.PROCESSING
    updated_at = dt(now_ts)
    lease_until = dt(until_ts)
    stamps: dict[float, datetime] = {}

    def stamp(value: float | None) -> datetime | None:
        if value is None:
            return None
        got = stamps.get(value)
        if got is None:
            got = stamps[value] = datetime.fromtimestamp(value, UTC)
        return got

    loads = orjson.loads
    # positional, in the field order of Task: id, route, identifier, status, entity, attempts, created_at,
    # updated_at, next_attempt_at, lease_until, worker, error, fingerprint, seen_count, last_seen_at, run_id,
    # related_task_id, priority, result, raw, claimed_from
    return [
        Task(
            task_id,
            route,
            identifier,
            processing,
            loads(entity) if entity is not None else None,
            attempts,
            stamp(created),
            updated_at,
            None,
            lease_until,
            worker,
            error,
            fingerprint.hex() if fingerprint else None,
            seen_count,
            stamp(last_seen),
            run_id,
            related,
            priority,
            loads(result) if result is not None else None,
            raw,
            source,
        )
        for (
            task_id,
            identifier,
            attempts,
            created,
            error,
            fingerprint,
            seen_count,
            last_seen,
            run_id,
            related,
            priority,
            entity,
            raw,
            result,
        ) in rows
    ]


#: the beginnings of SQLite's messages that mean "not now" rather than "wrong": they pass when tried again later
_UNAVAILABLE = (
    "database or disk is full",
    "database is locked",
    "database table is locked",
    "disk I/O error",
    "unable to open database file",
    "attempt to write a readonly database",
)


#: how long a writer waits for another process's write lock before the store reports the database unavailable
BUSY_TIMEOUT_MS = 30_000

#: the reserve file beside the database (``crossdock.db-ballast``) and its size
BALLAST_SUFFIX = "-ballast"
BALLAST_BYTES = 1024 * 1024


def _reserve(path: Path | None) -> None:
    """Hold :data:`BALLAST_BYTES` of real disk blocks at ``path`` (not a sparse file), when the disk has room for
    it twice over; on a disk that is nearly full already, go without (the reserve must not be what fills it)."""
    if path is None or path.exists():
        return
    try:
        if shutil.disk_usage(path.parent).free < 2 * BALLAST_BYTES:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return
    try:
        try:
            os.posix_fallocate(fd, 0, BALLAST_BYTES)
        except OSError:
            if os.write(fd, bytes(BALLAST_BYTES)) != BALLAST_BYTES:
                raise OSError("short write") from None
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        return
    os.close(fd)


class SQLiteStore(Store):
    """One connection guarded by a lock; writers take ``BEGIN IMMEDIATE`` so batches never interleave."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        #: space held in reserve beside the database, given up when the disk fills so the failure can be recorded
        self._ballast = Path(self.path + BALLAST_SUFFIX) if self.path != ":memory:" else None
        _reserve(self._ballast)
        #: per route: whether the last import batch was mostly unchanged, so the next tries touch_unchanged first
        self._touch_first: dict[str, bool] = {}
        while True:
            try:
                self._open(create)
                return
            except sqlite3.Error as exc:
                if getattr(self, "_conn", None) is not None:
                    self._conn.close()
                # a full disk cannot even hold the shared-memory file an open needs: the reserve makes room for it,
                # so `stats`, `tasks` and the failed run's record still work until space is freed
                if str(exc).startswith(("database or disk is full", "disk I/O error")) and self._release_ballast():
                    continue
                reason = self._unavailable_reason(exc)
                if reason is not None:
                    raise StoreUnavailable(reason) from exc
                raise CrossdockError(f"cannot open the SQLite database {self.path}: {exc}") from exc

    def _open(self, create: bool) -> None:
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # a new database only (the page size of an existing one stays): 16 KiB pages hold 40 task rows, so a B-tree
        # of a million tasks is a level shallower and an import touches fewer pages
        self._conn.execute("PRAGMA page_size = 16384")
        self._conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        # 16 MiB of page cache: as fast as 64 MiB for imports here, and keeps a big import under 200 MB of RSS
        self._conn.execute("PRAGMA cache_size = -16384")
        self._conn.execute("PRAGMA temp_store = MEMORY")
        # checkpoint every ~40 MB of WAL instead of the default 1,000 pages: a big import or catalogue poll then pays
        # a fraction of the checkpoint syncs (measured: unchanged re-import 60k -> 87k records/s wall)
        page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {max(_WAL_CHECKPOINT_BYTES // page_size, 1000)}")
        if create:
            self.upgrade()

    # --- plumbing --------------------------------------------------------------------------------

    def _unavailable_reason(self, exc: Exception) -> str | None:
        """A full disk, a lock held past ``busy_timeout`` or a file that vanished: the data is safe, try later."""
        if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(_UNAVAILABLE):
            if str(exc).startswith("database or disk is full"):
                self._release_ballast()
            return f"SQLite database {self.path}: {exc}"
        return None

    def _release_ballast(self) -> bool:
        """Free the reserve, so the run that hit the full disk can still be recorded as failed (once per open).
        True if there was a reserve to free."""
        ballast, self._ballast = self._ballast, None
        if ballast is None or not ballast.exists():
            return False
        with contextlib.suppress(OSError):
            ballast.unlink()
            log.warning(
                "the disk of %s is full: released the %d KiB reserve beside it, so this process can still read and "
                "record; free some space (crossdock prune, a bigger disk), then run again",
                self.path,
                BALLAST_BYTES // 1024,
            )
        return True

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def upgrade(self) -> int:
        with self._lock:
            current = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for version, _name, sql in load_migrations("crossdock.store.sqlite"):
                if version <= current:
                    continue
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _split_sql(sql):
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {version}")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                current = version
            return int(current)

    def _add_counters(self, conn: sqlite3.Connection, deltas: Counter[tuple[str, str]]) -> None:
        rows = [(route, status, n) for (route, status), n in deltas.items() if n]
        if rows:
            conn.executemany(Q["add_counter"], rows)

    def _logs(self, conn: sqlite3.Connection, lines: list[tuple[Any, ...]]) -> None:
        if lines:
            conn.executemany(Q["insert_log"], lines)

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
        now_ts = now.timestamp()
        lease_ts = ts(options.lease_until)
        with self._tx() as conn:
            latest: dict[DeltaKey, Latest] = {}
            touched = 0
            unkeyed: list[bytes] = []
            polled = options.delta and not options.full
            if polled and self._touch_first.get(route, True) and (poll := _pollable(items)) is not None:
                touched, items, latest = _touch_unchanged(conn, route, *poll, items, now_ts)
                if not items:
                    self._touch_first[route] = True
                    return ImportCounts(unchanged=touched)
                unkeyed = unkeyed_keys(items)
            elif options.delta:
                idents, unkeyed = delta_keys(items)
                if idents:
                    latest.update(_latest(conn, route, idents))
            if unkeyed:
                latest.update(_latest_unkeyed(conn, route, unkeyed))
            plan = import_plan(route, items, latest, options)
            plan.counts.unchanged += touched
            if polled:
                # the next batch of a catalogue poll likely looks like this one
                self._touch_first[route] = 2 * (touched + len(plan.touches)) >= touched + len(items)
            first_id = 0
            if plan.creates:
                first_id = conn.execute(Q["reserve_ids"], (len(plan.creates),)).fetchone()[0] - len(plan.creates)
            for offset, create in enumerate(plan.creates, first_id):
                create.task_id = offset
            plain: list[tuple[Any, ...]] = []
            noted: list[tuple[Any, ...]] = []
            for create in plan.creates:
                item = create.item
                superseder = create.superseded_by
                related = superseder.task_id if superseder is not None else create.related_id
                reason = create.reason
                row = (
                    create.task_id,
                    item.identifier,
                    create.status._value_,
                    # only a recorded fingerprint makes the task a candidate for "latest" (latest_for_identifiers)
                    item.fingerprint if create.record_fingerprint else None,
                    create.seen_count,
                    item.entity,
                )
                if reason is None and related is None and item.raw is None:
                    plain.append(row)
                else:
                    noted.append((*row, reason, related, item.raw))
            batch = (route, now_ts, run_id, options.priority, lease_ts, options.worker)
            _insert_rows(conn, batch, plain, _PLAIN_ROW)
            _insert_rows(conn, batch, noted, _NOTED_ROW)
            if plan.touches:
                # one set-based statement per distinct count (almost always all 1): a catalogue poll touches every row
                by_count: dict[int, list[int]] = {}
                for task_id, n in Counter(plan.touches).items():
                    by_count.setdefault(n, []).append(task_id)
                for n, ids in by_count.items():
                    conn.execute(Q["touch_tasks"], (n, now_ts, orjson.dumps(ids)))
            deltas: Counter[tuple[str, str]] = Counter()
            for value, n in plan.counts.created.items():
                deltas[(route, value)] += n
            superseded = 0
            logs = []
            for old_id, newer in plan.supersedes:
                reason = f"superseded by task {newer.task_id}"
                row = conn.execute(Q["supersede_task"], (now_ts, reason, newer.task_id, old_id)).fetchone()
                if row is None:
                    continue
                # the old status is not returned by SQLite; the plan knows it
                old_status = plan.latest_status[old_id]
                deltas[(route, old_status.value)] -= 1
                deltas[(route, Status.SKIPPED.value)] += 1
                superseded += 1
                logs.append((old_id, now_ts, "info", "import", "import", old_status.value, "skipped", reason, None))
            self._add_counters(conn, deltas)
            self._logs(conn, logs)
            imported = plan.counts.created.get("new", 0) + plan.counts.created.get("processing", 0)
            if imported:
                conn.execute(Q["add_throughput"], (int(now_ts // 60), route, "imported", imported))
        counts = plan.counts
        counts.superseded += superseded
        counts.processing_ids = [c.task_id for c in plan.creates if c.status is Status.PROCESSING]
        counts.created_ids = [c.task_id for c in plan.creates]
        return counts

    # --- export ----------------------------------------------------------------------------------

    def claim_due_tasks(
        self, route: str, limit: int, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Task]:
        now_ts = now.timestamp()
        until_ts = lease_until.timestamp()
        found: list[tuple[Status, list[Any]]] = []
        with self._tx() as conn:
            deltas: Counter[tuple[str, str]] = Counter()
            want = limit
            for source, query, params in (
                (Status.RETRY, Q["claim_retry"], (worker, until_ts, now_ts, now_ts, route)),
                (Status.NEW, Q["claim_new"], (worker, until_ts, now_ts, route, now_ts)),
            ):
                if want <= 0:
                    break
                rows = conn.execute(query, (*params, want)).fetchall()
                if rows:
                    found.append((source, rows))
                    want -= len(rows)
                    deltas[(route, source.value)] -= len(rows)
                    deltas[(route, Status.PROCESSING.value)] += len(rows)
            self._add_counters(conn, deltas)
        # built after the commit, outside the lock: another thread's settle can run its SQL meanwhile
        claimed: list[Task] = []
        for source, rows in found:
            claimed += _claimed_tasks(rows, route, source, worker, now_ts, until_ts)
        if len(found) > 1:
            claimed.sort(key=_task_id)
        return claimed

    def settle(self, settlements: Sequence[Settlement], *, now: datetime) -> int:
        now_ts = now.timestamp()
        changed = 0
        dumps = orjson.dumps
        # Sorted and encoded before the transaction, so the store's lock is held for the SQL only.
        # Plain successes (no error, result or next attempt) of one worker settle in one set-based statement;
        # each keeps its log line key (level, worker, to, message, details): a batch's lines are mostly alike
        plain: dict[tuple[Action, str], dict[int, _LogKey]] = {}
        others: list[Settlement] = []
        for s in settlements:
            action = s.action
            if action not in _SETTLES:
                continue
            if s.error is None and s.next_attempt_at is None and s.result is None:
                group = plain.get((action, s.worker))
                if group is None:
                    group = plain[(action, s.worker)] = {}
                if s.task_id not in group:
                    to = _TARGETS[action]
                    group[s.task_id] = (s.level, s.worker, to, s.message, dumps(s.details) if s.details else None)
            else:
                others.append(s)
        logs: dict[_LogKey, list[int]] = {}
        deltas: Counter[tuple[str, str]] = Counter()
        per_minute: Counter[tuple[str, str]] = Counter()
        with self._tx() as conn:
            for s in others:
                to = _TARGETS[s.action]
                row = conn.execute(
                    Q["settle_task"],
                    (
                        to,
                        now_ts,
                        s.error,
                        ts(s.next_attempt_at),
                        dumps(s.result) if s.result is not None else None,
                        s.task_id,
                        s.worker,
                    ),
                ).fetchone()
                if row is not None:
                    changed += 1
                    _count_settled(row[0], to, 1, deltas, per_minute)
                    line = (s.level, s.worker, to, s.message, dumps(s.details) if s.details else None)
                    logs.setdefault(line, []).append(s.task_id)
            for (action, worker), by_id in plain.items():
                to = _TARGETS[action]
                rows = conn.execute(Q["settle_many"], (to, now_ts, dumps(list(by_id)), worker)).fetchall()
                changed += len(rows)
                for route, n in Counter(route for _id, route in rows).items():
                    _count_settled(route, to, n, deltas, per_minute)
                for task_id, _route in rows:
                    line = by_id[task_id]
                    ids = logs.get(line)
                    if ids is None:
                        logs[line] = [task_id]
                    else:
                        ids.append(task_id)
            self._add_counters(conn, deltas)
            _insert_export_logs(conn, now_ts, logs)
            minute = int(now_ts // 60)
            if per_minute:
                conn.executemany(Q["add_throughput"], [(minute, r, k, n) for (r, k), n in per_minute.items()])
        return changed

    def settle_now(self, settlements: Sequence[Settlement], *, now: datetime) -> int | None:
        """Settle on the event loop's thread when neither this store's lock nor the file's write lock is held by
        anyone else: a small settle then costs no thread hand-off and no waits for the GIL (group commit waits
        for it with a delivery slot held). Otherwise None, without waiting."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._conn.execute("PRAGMA busy_timeout = 0")
            try:
                return self.settle(settlements, now=now)
            except StoreUnavailable:
                return None  # another process writes: the caller settles in a thread, which may wait
            finally:
                self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        finally:
            self._lock.release()

    def extend_leases(self, ids: Sequence[int], *, worker: str, lease_until: datetime) -> int:
        until = lease_until.timestamp()
        with self._tx() as conn:
            cur = conn.executemany(Q["extend_lease"], [(until, i, worker) for i in ids])
            return cur.rowcount

    def recover_expired_leases(self, *, now: datetime, max_attempts: dict[str, int], route: str | None = None) -> int:
        now_ts = now.timestamp()
        recovered = 0
        while True:
            with self._tx() as conn:
                rows = conn.execute(Q["expired_leases"], (now_ts, route, route, ACTION_BATCH)).fetchall()
                if not rows:
                    return recovered
                deltas: Counter[tuple[str, str]] = Counter()
                logs = []
                for task_id, task_route, attempts, worker in rows:
                    action, message = lease_recovery(attempts, max_attempts.get(task_route, 3), worker)
                    target = TRANSITIONS[action].target
                    cur = conn.execute(
                        Q["recover_task"],
                        (
                            target.value,
                            now_ts,
                            now_ts if target in (Status.NEW, Status.RETRY) else None,
                            message,
                            task_id,
                            now_ts,
                        ),
                    )
                    if cur.rowcount:
                        recovered += 1
                        deltas[(task_route, Status.PROCESSING.value)] -= 1
                        deltas[(task_route, target.value)] += 1
                        logs.append(
                            (
                                task_id,
                                now_ts,
                                "warning",
                                "system",
                                "lease",
                                "processing",
                                target.value,
                                message,
                                None,
                            )
                        )
                self._add_counters(conn, deltas)
                self._logs(conn, logs)
                if len(rows) < ACTION_BATCH:
                    return recovered

    def release(self, ids: Sequence[int], *, worker: str, now: datetime, retries: Collection[int] = ()) -> int:
        now_ts = now.timestamp()
        released = 0
        with self._tx() as conn:
            deltas: Counter[tuple[str, str]] = Counter()
            logs = []
            for task_id in ids:
                back = TRANSITIONS[release_action(task_id, retries)].target.value
                row = conn.execute(Q["release_task"], (back, now_ts, now_ts, task_id, worker)).fetchone()
                if row is None:
                    continue
                released += 1
                deltas[(row[0], "processing")] -= 1
                deltas[(row[0], back)] += 1
                # it goes back to where it was claimed from: the detail the timeline reads for the claim
                claim = orjson.dumps({"claimed_from": back})
                logs.append((task_id, now_ts, "info", "system", worker, "processing", back, RELEASED_MESSAGE, claim))
            self._add_counters(conn, deltas)
            self._logs(conn, logs)
        return released

    # --- actions ---------------------------------------------------------------------------------

    def apply_action(
        self, action: Action, selection: TaskFilter, *, actor: str, reason: str | None, now: datetime
    ) -> ActionResult:
        rule = TRANSITIONS[action]
        target = rule.target
        now_ts = now.timestamp()
        where, params = where_clause(selection, timestamp=ts)
        matched_by_status = {
            Status(status): n
            for status, n in self._read(f"SELECT status, COUNT(*) FROM tasks WHERE {where} GROUP BY status", params)
        }
        matched = sum(matched_by_status.values())
        refused = [
            f"{n} task(s): {refusal_message(action, status)}"
            for status, n in sorted(matched_by_status.items())
            if status not in rule.sources
        ]
        sources = sorted(s.value for s in rule.sources)
        source_sql = ", ".join("?" * len(sources))
        fields = action_fields(action, reason, actor)
        message = action_message(action, actor, reason)
        changed = 0
        last_id = 0
        reset = action in RESETS_ATTEMPTS
        while True:
            with self._tx() as conn:
                rows = conn.execute(
                    f"SELECT id, route, status FROM tasks WHERE {where} AND status IN ({source_sql}) AND id > ? "
                    f"ORDER BY id LIMIT {ACTION_BATCH}",
                    [*params, *sources, last_id],
                ).fetchall()
                if not rows:
                    break
                last_id = rows[-1][0]
                ids = orjson.dumps([r[0] for r in rows])
                conn.execute(
                    "UPDATE tasks SET status = ?, updated_at = ?, error = ?, next_attempt_at = ?, "
                    "lease_until = NULL"
                    + (", attempts = 0" if reset else "")
                    + f" WHERE id IN (SELECT value FROM json_each(?)) AND status IN ({source_sql})",
                    [
                        target.value,
                        now_ts,
                        fields.error,
                        now_ts if target is Status.NEW else None,
                        ids,
                        *sources,
                    ],
                )
                deltas: Counter[tuple[str, str]] = Counter()
                for _id, route, status in rows:
                    deltas[(route, status)] -= 1
                    deltas[(route, target.value)] += 1
                self._add_counters(conn, deltas)
                self._logs(
                    conn,
                    [(r[0], now_ts, "info", "action", actor, r[2], target.value, message, None) for r in rows],
                )
                changed += len(rows)
        return ActionResult(matched=matched, changed=changed, refused=refused)

    # --- reads -----------------------------------------------------------------------------------

    def get_task(self, task_id: int) -> Task | None:
        rows = self._read(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return _task(rows[0]) if rows else None

    def get_tasks(self, ids: Sequence[int]) -> list[Task]:
        rows = self._read(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (orjson.dumps(list(ids)),),
        )
        return [_task(r) for r in rows]

    def task_logs(self, task_id: int) -> list[LogLine]:
        return [
            LogLine(
                at=datetime.fromtimestamp(at, UTC),
                level=level,
                phase=phase,
                actor=actor,
                from_status=Status(fs) if fs else None,
                to_status=Status(to) if to else None,
                message=message,
                details=orjson.loads(details) if details else {},
            )
            for at, level, phase, actor, fs, to, message, details in self._read(Q["task_logs"], (task_id,))
        ]

    def list_tasks(
        self, selection: TaskFilter, *, limit: int = 50, cursor: int | None = None
    ) -> tuple[list[Task], int | None]:
        where, params = _where(selection)
        if cursor is not None:
            where += " AND id < ?"
            params.append(cursor)
        pairs = self._index_ranges(selection)
        if pairs == []:
            return [], None
        if pairs is None:
            sql = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY id DESC LIMIT ?"
            args = [*params, limit + 1]
        else:
            # newest first within each (route, status) range of tasks_route_status_id, merged by id: a page costs
            # len(pairs) short index walks, however many finished tasks lie between the matches
            part = (
                "SELECT id FROM (SELECT id FROM tasks WHERE route = ? AND status = ? "
                f"AND {where} ORDER BY id DESC LIMIT ?)"
            )
            sql = (
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id IN ({' UNION ALL '.join([part] * len(pairs))}) "
                "ORDER BY id DESC LIMIT ?"
            )
            args = [v for route, status in pairs for v in (route, status, *params, limit + 1)] + [limit + 1]
        rows = self._read(sql, args)
        tasks = [_task(r) for r in rows[:limit]]
        next_cursor = tasks[-1].id if len(rows) > limit and tasks else None
        return tasks, next_cursor

    def count_tasks(self, selection: TaskFilter) -> int:
        where, params = _where(selection)
        if selection.statuses and not selection.route and selection.ids is None:
            # lets tasks_route_status_id serve a status filter across routes: one range per (route, status)
            where += " AND route IN (SELECT DISTINCT route FROM counters)"
        return int(self._read(f"SELECT COUNT(*) FROM tasks WHERE {where}", params)[0][0])

    def _index_ranges(self, selection: TaskFilter) -> list[tuple[str, str]] | None:
        """The (route, status) pairs a listing should walk and merge, or None when one plain query is best.

        Plain: no route and no status (the rowid, newest first), ids or an identifier (their own lookups), or a
        single route and status (one range). Pairs with no tasks, by the exact counters, are left out.
        """
        if selection.ids is not None or selection.identifier:
            return None
        if not selection.route and not selection.statuses:
            return None
        if selection.route and selection.statuses and len(selection.statuses) == 1:
            return None
        wanted = {s.value for s in selection.statuses} if selection.statuses else None
        rows = self._read(Q["counters_route"], (selection.route,)) if selection.route else self._read(Q["counters_all"])
        pairs = [(route, status) for route, status, n in rows if n and (wanted is None or status in wanted)]
        # SQLite allows 500 terms in a compound SELECT; hundreds of routes fall back to the plain query
        return pairs if len(pairs) <= _MAX_RANGES else None

    def stats(self, route: str | None = None) -> Stats:
        rows = self._read(Q["counters_route"], (route,)) if route else self._read(Q["counters_all"])
        return Stats.from_rows(rows)

    def recount(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for route, status, n in self._read(Q["recount"]):
            out.setdefault(route, empty_counts())[status] = n
        return out

    def ensure_routes(self, routes: Iterable[str]) -> None:
        with self._tx() as conn:
            conn.executemany(Q["ensure_counter"], [(r, s) for r in routes for s in empty_counts()])

    # --- runs ------------------------------------------------------------------------------------

    def start_run(self, route: str, part: str, *, actor: str | None, now: datetime, owner: str | None = None) -> int:
        at = now.timestamp()
        with self._tx() as conn:
            return int(conn.execute(Q["start_run"], (route, part, at, actor, owner, at)).fetchone()[0])

    def touch_run(self, run_id: int, *, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(Q["touch_run"], (now.timestamp(), run_id))

    def running_runs(self) -> list[Run]:
        return [_run(r) for r in self._read(Q["running_runs"])]

    def abandon_run(self, run_id: int, *, error: str, now: datetime) -> bool:
        with self._tx() as conn:
            return conn.execute(Q["abandon_run"], (now.timestamp(), error, run_id)).rowcount == 1

    def finish_run(
        self, run_id: int, *, status: str, summary: dict[str, Any], error: str | None, now: datetime
    ) -> None:
        with self._tx() as conn:
            conn.execute(Q["finish_run"], (now.timestamp(), status, orjson.dumps(summary), error, run_id))

    def list_runs(self, route: str | None = None, limit: int = 20) -> list[Run]:
        rows = self._read(Q["list_runs_route"], (route, limit)) if route else self._read(Q["list_runs"], (limit,))
        return [_run(r) for r in rows]

    def last_successful_run(self, route: str, part: str) -> Run | None:
        rows = self._read(Q["last_successful_run"], (route, part))
        return _run(rows[0]) if rows else None

    # --- delta cache and storages ----------------------------------------------------------------

    def cache_show(self, route: str, identifier: str) -> CacheEntry | None:
        rows = self._read(Q["cache_show"], (route, identifier))
        if not rows:
            return None
        r = rows[0]
        return CacheEntry(r[0], r[1], r[2].hex(), r[3], Status(r[4]) if r[4] else None, dt(r[5]))

    def cache_clear(self, route: str, identifier: str | None = None) -> int:
        """Forget fingerprints by taking them off the tasks: the next import compares with nothing."""
        with self._tx() as conn:
            if identifier is None:
                cleared = int(conn.execute(Q["cache_count_route"], (route,)).fetchone()[0])
                conn.execute(Q["cache_clear_route"], (route,))
                return cleared
            return min(conn.execute(Q["cache_clear_identifier"], (route, identifier)).rowcount, 1)

    def storage_get(self, storage: str, key: str, *, now: datetime) -> Any | None:
        rows = self._read(Q["storage_get"], (storage, key, now.timestamp()))
        return orjson.loads(rows[0][0]) if rows else None

    def storage_put(self, storage: str, key: str, value: Any, *, now: datetime, ttl: float | None = None) -> None:
        expires = now.timestamp() + ttl if ttl else None
        with self._tx() as conn:
            conn.execute(Q["storage_put"], (storage, key, orjson.dumps(value), expires))

    # --- housekeeping ----------------------------------------------------------------------------

    def prune(
        self,
        *,
        older_than: datetime,
        statuses: Sequence[Status],
        route: str | None = None,
        batch_size: int = 5000,
    ) -> int:
        if not statuses:
            return 0
        status_sql = ", ".join("?" * len(statuses))
        sql = (
            f"SELECT t.id, t.route, t.status FROM tasks t WHERE t.status IN ({status_sql}) AND t.updated_at < ?"
            + (" AND t.route = ?" if route else "")
            # never the latest task of an identifier: the delta cache compares with it
            + " AND NOT (t.fingerprint IS NOT NULL AND t.identifier IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tasks l"
            " WHERE l.route = t.route AND l.identifier = t.identifier AND l.id > t.id AND l.fingerprint IS NOT NULL))"
            " AND t.id > ? ORDER BY t.id LIMIT ?"
        )
        base = [*(s.value for s in statuses), older_than.timestamp(), *([route] if route else [])]
        deleted = 0
        last_id = 0
        while True:
            with self._tx() as conn:
                rows = conn.execute(sql, [*base, last_id, batch_size]).fetchall()
                if not rows:
                    break
                last_id = rows[-1][0]
                ids = orjson.dumps([r[0] for r in rows])
                conn.execute("DELETE FROM task_logs WHERE task_id IN (SELECT value FROM json_each(?))", (ids,))
                conn.execute("DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?))", (ids,))
                conn.execute("DELETE FROM task_seen WHERE task_id IN (SELECT value FROM json_each(?))", (ids,))
                deltas: Counter[tuple[str, str]] = Counter()
                for _id, r, s in rows:
                    deltas[(r, s)] -= 1
                self._add_counters(conn, deltas)
                deleted += len(rows)
        if deleted:
            with self._lock:
                self._conn.execute("PRAGMA incremental_vacuum")
        return deleted

    # --- operations: route state, tokens, audit, monitor ------------------------------------------

    def route_states(self) -> dict[str, RouteState]:
        return {
            r: RouteState(r, None if a is None else bool(a), dt(i), dt(o))
            for r, a, i, o in self._read(Q["route_states"])
        }

    def set_route_active(self, route: str, active: bool | None, *, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(Q["set_route_active"], (route, None if active is None else int(active), now.timestamp()))

    def set_next_fire(self, route: str, part: str, at: datetime | None, *, now: datetime) -> None:
        query = {"incoming": "set_incoming_next", "outgoing": "set_outgoing_next"}[part]
        with self._tx() as conn:
            conn.execute(Q[query], (route, ts(at), now.timestamp()))

    def create_token(self, name: str, role: str, token_hash: str, *, now: datetime) -> int:
        with self._tx() as conn:
            return int(conn.execute(Q["create_token"], (name, role, token_hash, now.timestamp())).fetchone()[0])

    def find_token(self, token_hash: str, *, now: datetime | None = None) -> TokenRecord | None:
        rows = self._read(Q["find_token"], (token_hash,))
        if not rows:
            return None
        if now is not None:
            with self._tx() as conn:
                conn.execute(Q["touch_token"], (now.timestamp(), rows[0][0]))
        return _token(rows[0])

    def list_tokens(self) -> list[TokenRecord]:
        return [_token(r) for r in self._read(Q["list_tokens"])]

    def revoke_token(self, token_id: int) -> bool:
        with self._tx() as conn:
            return conn.execute(Q["revoke_token"], (token_id,)).rowcount > 0

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
        with self._tx() as conn:
            conn.execute(Q["record_audit"], (now.timestamp(), actor, action, orjson.dumps(target), changed, detail))

    def list_audit(self, *, limit: int = 100, cursor: int | None = None) -> list[AuditEntry]:
        rows = self._read(Q["list_audit"], (cursor if cursor is not None else 2**62, limit))
        return [
            AuditEntry(
                r[0],
                datetime.fromtimestamp(r[1], UTC),
                r[2],
                r[3],
                orjson.loads(r[4]) if r[4] else {},
                r[5],
                r[6],
            )
            for r in rows
        ]

    def claim_idempotency_key(
        self, scope: str, key: str, *, fingerprint: str, now: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        with self._tx() as conn:
            conn.execute(Q["prune_idempotency_keys"], (now.timestamp(),))
            taken = conn.execute(
                Q["claim_idempotency_key"], (scope, key, fingerprint, now.timestamp(), expires_at.timestamp())
            ).rowcount
            if taken:
                return None
            f, created, expires, response = conn.execute(Q["get_idempotency_key"], (scope, key)).fetchone()
        return IdempotencyRecord(
            f,
            datetime.fromtimestamp(created, UTC),
            datetime.fromtimestamp(expires, UTC),
            orjson.loads(response) if response is not None else None,
        )

    def settle_idempotency_key(
        self, scope: str, key: str, *, response: dict[str, Any] | None, expires_at: datetime | None = None
    ) -> None:
        with self._tx() as conn:
            if response is None:
                conn.execute(Q["forget_idempotency_key"], (scope, key))
            else:
                conn.execute(Q["settle_idempotency_key"], (orjson.dumps(response), ts(expires_at), scope, key))

    def throughput(self, *, since: datetime, route: str | None = None) -> dict[int, dict[str, int]]:
        minute = int(since.timestamp() // 60)
        rows = (
            self._read(Q["throughput_since_route"], (minute, route))
            if route
            else self._read(Q["throughput_since"], (minute,))
        )
        out: dict[int, dict[str, int]] = {}
        for m, kind, n in rows:
            out.setdefault(m, {})[kind] = n
        return out

    def top_errors(self, *, since: datetime, limit: int = 10) -> list[ErrorGroup]:
        return [ErrorGroup(*r) for r in self._read(Q["top_errors"], (since.timestamp(), limit))]

    def oldest_due(self) -> dict[str, dict[str, datetime]]:
        out: dict[str, dict[str, datetime]] = {}
        for route, status, at in self._read(Q["oldest_due"]):
            if at is not None:
                out.setdefault(route, {})[status] = datetime.fromtimestamp(at, UTC)
        return out

    # --- test and benchmark helpers ----------------------------------------------------------------

    def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        """The query plan of ``sql``, one line per step (used by tests to prove index use)."""
        return [str(r[3]) for r in self._read(f"EXPLAIN QUERY PLAN {sql}", params)]


_THROUGHPUT_STATUSES = {"finished": "finished", "waiting": "finished", "failed": "failed", "retry": "retry"}
#: the delivery results :meth:`SQLiteStore.settle` applies
_SETTLES = frozenset(a for a in Action if settles_from_processing(a))
_TARGETS = {a: TRANSITIONS[a].target.value for a in _SETTLES}
#: an export log line but its task id: (level, worker, to status, message, details)
_LogKey = tuple[str, str, str, str, bytes | None]


def _insert_export_logs(conn: sqlite3.Connection, now_ts: float, logs: dict[_LogKey, list[int]]) -> None:
    """Alike lines (the common case: one message per attempt number) go in one INSERT ... SELECT over their ids,
    ~3x cheaper per line than a row each; lines of their own (durations, errors) go row by row."""
    single: list[tuple[Any, ...]] = []
    for (level, worker, to, message, details), ids in logs.items():
        if len(ids) >= _GROUPED_LOGS:
            conn.execute(Q["insert_export_logs"], (now_ts, level, worker, to, message, details, orjson.dumps(ids)))
        else:
            single += [(i, now_ts, level, "export", worker, "processing", to, message, details) for i in ids]
    if single:
        conn.executemany(Q["insert_log"], single)


#: from this many alike lines on, one INSERT ... SELECT beats a row each
_GROUPED_LOGS = 4


def _count_settled(
    route: str, to: str, n: int, deltas: Counter[tuple[str, str]], per_minute: Counter[tuple[str, str]]
) -> None:
    deltas[(route, Status.PROCESSING.value)] -= n
    deltas[(route, to)] += n
    kind = _THROUGHPUT_STATUSES.get(to)
    if kind is not None:
        per_minute[(route, kind)] += n


def _token(r: Sequence[Any]) -> TokenRecord:
    return TokenRecord(r[0], r[1], r[2], datetime.fromtimestamp(r[3], UTC), dt(r[4]), bool(r[5]))


_MAX_RANGES = 200
_WAL_CHECKPOINT_BYTES = 40 << 20
#: rows per INSERT statement (19 parameters each, under SQLite's 32,766)
_INSERT_ROWS = 500


#: One task row of a multi-row INSERT. ?1-?6 are bound once per statement: route, now, run id, priority, lease
#: until and worker; {0}... are the row's own parameters: id, identifier, status, fingerprint, seen count, entity
#: (and for a noted row: error, related task, raw). What follows from the status (attempts, next attempt, lease)
#: is computed by SQLite, so a row binds 6 or 9 values instead of 19, and fewer NULLs, which the sqlite3 module
#: binds slowly.
_PLAIN_ROW = (
    "({0}, ?1, {1}, {2}, {2} = 'processing', ?2, ?2, CASE {2} WHEN 'new' THEN ?2 END, "
    "CASE {2} WHEN 'processing' THEN ?5 END, CASE {2} WHEN 'processing' THEN ?6 END, NULL, {3}, {4}, ?2, ?3, "
    "NULL, ?4, {5}, NULL)"
)
_NOTED_ROW = (
    "({0}, ?1, {1}, {2}, {2} = 'processing', ?2, ?2, CASE {2} WHEN 'new' THEN ?2 END, "
    "CASE {2} WHEN 'processing' THEN ?5 END, CASE {2} WHEN 'processing' THEN ?6 END, {6}, {3}, {4}, ?2, ?3, "
    "{7}, ?4, {5}, {8})"
)
_BATCH_PARAMS = 6


@functools.lru_cache(maxsize=8)
def _insert_sql(shape: str, n: int) -> str:
    head = Q["insert_task"].rpartition("VALUES")[0]
    width = 1 + max(int(field) for _text, field, _spec, _conv in string.Formatter().parse(shape) if field)
    groups = []
    for row in range(n):
        base = _BATCH_PARAMS + 1 + row * width
        groups.append(shape.format(*(f"?{base + k}" for k in range(width))))
    return f"{head}VALUES {', '.join(groups)}"


def _insert_rows(conn: sqlite3.Connection, batch: tuple[Any, ...], rows: list[tuple[Any, ...]], shape: str) -> None:
    """Insert in statements of many rows.

    Each statement is one step of C work with the GIL released. Row-by-row ``executemany`` releases and re-takes
    the GIL per row, and while the importer's main thread parses the next batch every re-take can wait for the
    interpreter's switch interval (see engine/tuning.py), so the write and the parse could not overlap.
    """
    for start in range(0, len(rows), _INSERT_ROWS):
        chunk = rows[start : start + _INSERT_ROWS]
        conn.execute(_insert_sql(shape, len(chunk)), [*batch, *chain.from_iterable(chunk)])


_STATUSES: dict[str, Status] = {s.value: s for s in Status}


def _latest(
    conn: sqlite3.Connection, route: str, keys: list[str], found: list[list[Any]] | None = None
) -> dict[DeltaKey, Latest]:
    """The latest fingerprinted task of each identifier (fingerprint, id, status); unknown ones are left out.

    ``found`` is latest_for_identifiers' answer for ``keys`` when the caller already has it.
    """
    latest: dict[DeltaKey, Latest] = {}
    fromhex, statuses = bytes.fromhex, _STATUSES
    unrecorded = []
    for query in ("latest_for_identifiers", "latest_with_fingerprint"):
        if found is None:
            found = orjson.loads(conn.execute(Q[query], (route, orjson.dumps(keys))).fetchone()[0])
        for ident, fp, task_id, status in found:
            if fp:  # hex() of NULL is ''
                latest[ident] = (fromhex(fp), task_id, statuses[status])
            elif task_id is not None:
                unrecorded.append(ident)
        if not unrecorded:
            break
        # rare: the newest task has no fingerprint; look further back for these identifiers only
        keys, unrecorded, found = unrecorded, [], None
    return latest


def _latest_unkeyed(conn: sqlite3.Connection, route: str, unkeyed: list[bytes]) -> dict[DeltaKey, Latest]:
    """The latest task without an identifier of each content fingerprint (transitions.unkeyed_keys).

    One statement per batch (a route whose identifier path is wrong sends every record this way). Fingerprints
    are 16 bytes (xxh3-128); one of another length is never found, so its record is a new task each time.
    """
    keys = [k for k in unkeyed if len(k) == 16]
    if not keys:
        return {}
    found = conn.execute(Q["latest_unkeyed"], (route, b"".join(keys), orjson.dumps(list(range(len(keys)))))).fetchone()
    return {keys[n]: (keys[n], task_id, _STATUSES[status]) for n, task_id, status in orjson.loads(found[0])}


def _pollable(items: Sequence[ImportItem]) -> tuple[list[ImportItem], list[str]] | None:
    """The records of a batch that touch_unchanged can decide, and the identifiers of the others; None when the
    import plan must decide the whole batch.

    touch_unchanged decides records intending a task (new or processing) with an identifier and a 16-byte
    fingerprint. A filtered or rejected record is left to the plan. So is every record of a batch that holds an
    identifier twice: a repeat is decided against the record before it in the batch, which only the plan sees.
    """
    keys = []
    eligible = []
    others = []
    for item in items:
        ident = item.identifier
        if ident is None:
            continue
        keys.append(ident)
        fp = item.fingerprint
        if item.status in POLLED and fp is not None and len(fp) == 16:
            eligible.append(item)
        else:
            others.append(ident)
    if not eligible or len(set(keys)) != len(keys):
        return None
    return eligible, others


def _touch_unchanged(
    conn: sqlite3.Connection,
    route: str,
    eligible: list[ImportItem],
    others: list[str],
    items: Sequence[ImportItem],
    now_ts: float,
) -> tuple[int, Sequence[ImportItem], dict[DeltaKey, Latest]]:
    """Touch the unchanged records of a poll (of ``eligible``, see _pollable). Return how many, the records left
    for the import plan (in batch order), and the latest tasks of their identifiers."""
    keys_json = orjson.dumps([item.identifier for item in eligible])
    fps = b"".join([item.fingerprint for item in eligible])  # type: ignore[misc]  # _pollable checked them
    touched: int = conn.execute(Q["touch_unchanged"], (route, keys_json, now_ts, fps)).rowcount
    if touched == len(items):
        return touched, (), {}
    found: list[list[Any]] = []
    if touched < len(eligible):
        found = orjson.loads(conn.execute(Q["latest_untouched"], (route, keys_json, fps)).fetchone()[0])
    if touched + len(found) != len(eligible):
        raise RuntimeError(f"import into {route!r}: {touched} touched and {len(found)} left of {len(eligible)} records")
    rest: Sequence[ImportItem] = items
    if touched:
        done = {item.identifier for item in eligible}.difference(row[0] for row in found)
        rest = [item for item in items if item.identifier not in done]
    latest = _latest(conn, route, [row[0] for row in found], found) if found else {}
    if others:
        latest.update(_latest(conn, route, others))
    return touched, rest, latest


def _where(selection: TaskFilter) -> tuple[str, list[Any]]:
    return where_clause(selection, timestamp=ts)


def _run(r: Sequence[Any]) -> Run:
    return Run(
        id=r[0],
        route=r[1],
        part=r[2],
        started_at=datetime.fromtimestamp(r[3], UTC),
        finished_at=dt(r[4]),
        status=r[5],
        summary=orjson.loads(r[6]) if r[6] else {},
        error=r[7],
        actor=r[8],
        owner=r[9],
        heartbeat_at=dt(r[10]),
    )


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file (comment lines removed first; no ';' inside literals)."""
    text = "\n".join(ln for ln in script.splitlines() if not ln.strip().startswith("--"))
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]
