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
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from crossdock.errors import CrossdockError, StoreUnavailable
from crossdock.store.base import (
    AlertRecord,
    AuditEntry,
    CacheEntry,
    CircuitState,
    ErrorGroup,
    FailureGroup,
    IdempotencyRecord,
    ImportItem,
    NewAlert,
    RouteState,
    Run,
    Settlement,
    Stats,
    TaskFilter,
    TokenRecord,
    alert_from_row,
    alert_outcome,
    empty_counts,
)
from crossdock.store.filters import WHERE_FUNCTION, where_clause
from crossdock.store.import_plan import DeltaKey, Latest, unkeyed_keys
from crossdock.store.ledger import SETTLE_TARGET, ActionMove, Changes, Ledger, LogRow, NewRow, NewTasks, Recovery
from crossdock.store.payload_filter import payload_filter
from crossdock.store.sqlfiles import load_migrations, load_queries
from crossdock.tasks import POLLED, TOUCH_ON_SAME, LogLine, Status, Task

log = logging.getLogger("crossdock.store")

Q = load_queries("crossdock.store.sqlite")
# the statuses whose latest task an unchanged record touches: the rule is tasks.decide_import's, written into the
# poll shortcut's SQL as literals
for _name in ("touch_unchanged", "latest_untouched"):
    Q[_name] = Q[_name].replace("{touch_on_same}", ", ".join(f"'{s.value}'" for s in sorted(TOUCH_ON_SAME)))
#: touches of a poll are kept in task_seen (migration 0005); a task's count is its own plus those
_TASK_COLUMNS = (
    "id, route, identifier, status, attempts, created_at, updated_at, next_attempt_at, lease_until, worker, "
    "error, fingerprint, "
    "seen_count + COALESCE((SELECT s.seen FROM task_seen s WHERE s.task_id = tasks.id), 0), "
    "COALESCE((SELECT s.last_seen_at FROM task_seen s WHERE s.task_id = tasks.id), last_seen_at), "
    "run_id, related_task_id, priority, entity, raw, result"
)


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


class SQLiteStore(Ledger):
    """One connection guarded by a lock; writers take ``BEGIN IMMEDIATE`` so batches never interleave."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False) -> None:
        self.path = str(path)
        #: opened ``mode=ro`` (a dry run): no migration, no pragma that writes, no reserve file; any write fails
        self.read_only = read_only
        if self.path != ":memory:" and not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        #: space held in reserve beside the database, given up when the disk fills so the failure can be recorded
        self._ballast = Path(self.path + BALLAST_SUFFIX) if self.path != ":memory:" and not read_only else None
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
        if self.read_only:
            # the main file's bytes stay as they are: a read-only connection never checkpoints the WAL into it
            uri = f"file:{quote(os.path.abspath(self.path))}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA query_only = 1")
            return
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # --where expressions SQL cannot decide are evaluated in Python, row by row, inside the query
        self._conn.create_function(WHERE_FUNCTION, 2, _where_matches, deterministic=True)
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

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A deferred transaction: one snapshot for the reads in it, no write lock taken."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("ROLLBACK")

    def schema_version(self) -> int:
        """The schema version the file is at (``PRAGMA user_version``), without migrating it."""
        return int(self._read("PRAGMA user_version")[0][0])

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

    # --- ledger primitives -----------------------------------------------------------------------

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._tx()

    def _latest(
        self, tx: sqlite3.Connection, route: str, identifiers: list[str], unkeyed: list[bytes]
    ) -> dict[DeltaKey, Latest]:
        latest = _latest(tx, route, identifiers) if identifiers else {}
        if unkeyed:
            latest.update(_latest_unkeyed(tx, route, unkeyed))
        return latest

    def _touch_unchanged(
        self, tx: sqlite3.Connection, route: str, items: Sequence[ImportItem], now: datetime
    ) -> tuple[int, Sequence[ImportItem], dict[DeltaKey, Latest]] | None:
        """Touch unchanged records in SQL, when the route's last batch was mostly unchanged (a catalogue poll)."""
        if not self._touch_first.get(route, True) or (poll := _pollable(items)) is None:
            return None
        touched, rest, latest = _touch_unchanged(tx, route, *poll, items, now.timestamp())
        unkeyed = unkeyed_keys(rest)
        if unkeyed:
            latest.update(_latest_unkeyed(tx, route, unkeyed))
        return touched, rest, latest

    def _import_shape(self, route: str, unchanged: int, records: int) -> None:
        # the next batch of a catalogue poll likely looks like this one
        self._touch_first[route] = 2 * unchanged >= records

    def _created_at(self, tx: sqlite3.Connection, ids: list[int]) -> dict[int, datetime]:
        rows = tx.execute(Q["created_at"], (orjson.dumps(ids),))
        return {task_id: datetime.fromtimestamp(at, UTC) for task_id, at in rows}

    def _reserve_ids(self, tx: sqlite3.Connection, n: int) -> list[int]:
        last = tx.execute(Q["reserve_ids"], (n,)).fetchone()[0]
        return list(range(last - n, last))

    def _insert_tasks(self, tx: sqlite3.Connection, batch: NewTasks, rows: list[NewRow]) -> None:
        shared = (
            batch.route,
            batch.now.timestamp(),
            batch.run_id,
            batch.priority,
            ts(batch.lease_until),
            batch.worker,
            batch.status._value_,
            batch.attempts,
            ts(batch.next_attempt_at),
        )
        plain: list[tuple[Any, ...]] = []
        noted: list[tuple[Any, ...]] = []
        for row in rows:
            if row[5] is None and row[6] is None and row[7] is None:
                plain.append(row[:5])
            else:
                noted.append(row)
        _insert_rows(tx, shared, plain, _PLAIN_ROW)
        _insert_rows(tx, shared, noted, _NOTED_ROW)

    def _touch_tasks(self, tx: sqlite3.Connection, seen: dict[int, int], now: datetime) -> None:
        # one set-based statement per distinct count (almost always all 1): a catalogue poll touches every row
        by_count: dict[int, list[int]] = {}
        for task_id, n in seen.items():
            by_count.setdefault(n, []).append(task_id)
        now_ts = now.timestamp()
        for n, ids in by_count.items():
            tx.execute(Q["touch_tasks"], (n, now_ts, orjson.dumps(ids)))

    def _supersede_tasks(
        self,
        tx: sqlite3.Connection,
        moves: list[tuple[int, int, str, Status]],
        sources: Collection[Status],
        now: datetime,
    ) -> dict[int, str]:
        allowed = orjson.dumps(sorted(s.value for s in sources))
        moved = {}
        now_ts = now.timestamp()
        for old_id, newer_id, reason, seen in moves:
            if tx.execute(Q["supersede_task"], (now_ts, reason, newer_id, old_id, allowed)).fetchone() is not None:
                # SQLite's RETURNING gives the new values; in this write transaction the status is what the plan saw
                moved[old_id] = seen.value
        return moved

    def _claim(
        self,
        tx: sqlite3.Connection,
        route: str,
        source: Status,
        limit: int,
        *,
        worker: str,
        lease_until: datetime,
        now: datetime,
    ) -> list[Any]:
        now_ts = now.timestamp()
        until_ts = lease_until.timestamp()
        if source is Status.RETRY:
            return tx.execute(Q["claim_retry"], (worker, until_ts, now_ts, now_ts, route, limit)).fetchall()
        return tx.execute(Q["claim_new"], (worker, until_ts, now_ts, route, now_ts, limit)).fetchall()

    def _claimed_tasks(
        self, rows: list[Any], route: str, source: Status, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Task]:
        return _claimed_tasks(rows, route, source, worker, now.timestamp(), lease_until.timestamp())

    def _settle_tasks(self, tx: sqlite3.Connection, settlements: list[Settlement], now: datetime) -> dict[int, str]:
        now_ts = now.timestamp()
        dumps = orjson.dumps
        moved: dict[int, str] = {}
        # plain successes (no error, result or next attempt) of one worker settle in one set-based statement
        plain: dict[tuple[str, str], list[int]] = {}
        for s in settlements:
            to = SETTLE_TARGET[s.action]
            if s.error is None and s.next_attempt_at is None and s.result is None:
                ids = plain.get((to, s.worker))
                if ids is None:
                    plain[(to, s.worker)] = [s.task_id]
                else:
                    ids.append(s.task_id)
                continue
            params = (
                to,
                now_ts,
                s.error,
                ts(s.next_attempt_at),
                dumps(s.result) if s.result is not None else None,
                s.task_id,
                s.worker,
            )
            row = tx.execute(Q["settle_task"], params).fetchone()
            if row is not None:
                moved[s.task_id] = row[0]
        for (to, worker), ids in plain.items():
            moved.update(tx.execute(Q["settle_many"], (to, now_ts, dumps(ids), worker)).fetchall())
        return moved

    def _expired_leases(
        self, tx: sqlite3.Connection, now: datetime, route: str | None, limit: int
    ) -> list[tuple[int, str, int, str]]:
        return tx.execute(Q["expired_leases"], (now.timestamp(), route, route, limit)).fetchall()

    def _recover_tasks(self, tx: sqlite3.Connection, recoveries: list[Recovery], now: datetime) -> set[int]:
        now_ts = now.timestamp()
        done = set()
        for r in recoveries:
            params = (r.target.value, now_ts, ts(r.next_attempt_at), r.message, r.task_id, now_ts)
            if tx.execute(Q["recover_task"], params).rowcount:
                done.add(r.task_id)
        return done

    def _release_tasks(
        self, tx: sqlite3.Connection, backs: list[tuple[int, Status]], worker: str, now: datetime
    ) -> dict[int, str]:
        now_ts = now.timestamp()
        moved = {}
        for task_id, back in backs:
            row = tx.execute(Q["release_task"], (back.value, now_ts, now_ts, task_id, worker)).fetchone()
            if row is not None:
                moved[task_id] = row[0]
        return moved

    def _lock_task(self, tx: sqlite3.Connection, task_id: int) -> tuple[str, str | None, Status, int] | None:
        # the write transaction (BEGIN IMMEDIATE) already keeps every other writer out
        row = tx.execute("SELECT route, identifier, status, priority FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return (row[0], row[1], Status(row[2]), row[3]) if row is not None else None

    def _audit(
        self,
        tx: sqlite3.Connection,
        actor: str,
        action: str,
        target: dict[str, Any],
        *,
        changed: int | None,
        detail: str | None,
        now: datetime,
    ) -> None:
        tx.execute(Q["record_audit"], (now.timestamp(), actor, action, orjson.dumps(target), changed, detail))

    def _lock_circuit(self, tx: sqlite3.Connection, key: str, *, create: bool, now: datetime) -> CircuitState | None:
        if create:
            tx.execute(Q["circuit_create"], (key, now.timestamp()))
        row = tx.execute(Q["circuit_lock"], (key,)).fetchone()
        return _circuit(row) if row is not None else None

    def _put_circuit(self, tx: sqlite3.Connection, row: CircuitState) -> None:
        tx.execute(
            Q["circuit_put"],
            (
                row.state,
                row.failures,
                ts(row.opened_at),
                ts(row.open_until),
                row.last_error,
                row.probe_owner,
                ts(row.probe_at),
                ts(row.updated_at),
                row.key,
            ),
        )

    def _matched_by_status(self, selection: TaskFilter) -> dict[Status, int]:
        where, params = _where(selection)
        return {
            Status(status): n
            for status, n in self._read(f"SELECT status, COUNT(*) FROM tasks WHERE {where} GROUP BY status", params)
        }

    def _act(
        self,
        tx: sqlite3.Connection,
        selection: TaskFilter,
        move: ActionMove,
        *,
        after_id: int,
        limit: int,
    ) -> list[tuple[int, str, str | None, str]]:
        where, params = _where(selection)
        allowed = sorted(s.value for s in move.sources)
        source_sql = ", ".join("?" * len(allowed))
        rows: list[tuple[int, str, str | None, str]] = tx.execute(
            f"SELECT id, route, identifier, status FROM tasks WHERE {where} AND status IN ({source_sql}) AND id > ? "
            "ORDER BY id LIMIT ?",
            [*params, *allowed, after_id, limit],
        ).fetchall()
        if rows:
            tx.execute(
                "UPDATE tasks SET status = ?, updated_at = ?, error = ?, next_attempt_at = ?, lease_until = NULL"
                + (", attempts = 0" if move.reset_attempts else "")
                + f" WHERE id IN (SELECT value FROM json_each(?)) AND status IN ({source_sql})",
                [
                    move.target.value,
                    move.now.timestamp(),
                    move.error,
                    ts(move.next_attempt_at),
                    orjson.dumps([r[0] for r in rows]),
                    *allowed,
                ],
            )
        return rows

    def _due_of_identifiers(
        self, tx: sqlite3.Connection, route: str, identifiers: list[str], statuses: Collection[Status]
    ) -> list[tuple[int, str, str]]:
        params = (route, orjson.dumps(identifiers), orjson.dumps(sorted(s.value for s in statuses)))
        return tx.execute(Q["tasks_of_identifiers"], params).fetchall()

    def _prunable(
        self,
        tx: sqlite3.Connection,
        *,
        cutoffs: Mapping[Status, datetime],
        route: str | None,
        after_id: int,
        until_id: int | None,
        limit: int,
    ) -> list[int]:
        ages = " OR ".join(["(t.status = ? AND t.updated_at < ?)"] * len(cutoffs))
        sql = (
            f"SELECT t.id FROM tasks t WHERE ({ages})"
            + (" AND t.route = ?" if route else "")
            # never the latest task of an identifier: the delta cache compares with it
            + " AND NOT (t.fingerprint IS NOT NULL AND t.identifier IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tasks l"
            " WHERE l.route = t.route AND l.identifier = t.identifier AND l.id > t.id AND l.fingerprint IS NOT NULL))"
            " AND t.id > ? AND t.id < ? ORDER BY t.id LIMIT ?"
        )
        until = until_id if until_id is not None else 2**63 - 1
        params = [
            *(v for s, at in cutoffs.items() for v in (s.value, at.timestamp())),
            *([route] if route else []),
            after_id,
            until,
            limit,
        ]
        return [r[0] for r in tx.execute(sql, params)]

    def _delete_tasks(self, tx: sqlite3.Connection, ids: list[int]) -> list[tuple[str, str]]:
        as_json = orjson.dumps(ids)
        tx.execute("DELETE FROM task_logs WHERE task_id IN (SELECT value FROM json_each(?))", (as_json,))
        tx.execute("DELETE FROM task_seen WHERE task_id IN (SELECT value FROM json_each(?))", (as_json,))
        return tx.execute(
            "DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?)) RETURNING route, status", (as_json,)
        ).fetchall()

    def _after_prune(self) -> None:
        with self._lock:
            self._conn.execute("PRAGMA incremental_vacuum")

    def _write_changes(self, tx: sqlite3.Connection, changes: Changes, now: datetime) -> None:
        counters = [(route, status, n) for (route, status), n in sorted(changes.counters.items()) if n]
        if counters:
            tx.executemany(Q["add_counter"], counters)
        if changes.logs:
            _insert_logs(tx, now.timestamp(), changes.logs)
        if changes.throughput:
            minute = int(now.timestamp() // 60)
            tx.executemany(Q["add_throughput"], [(minute, r, k, n) for (r, k), n in changes.throughput.items() if n])

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

    def counted(self, route: str | None = None) -> tuple[Stats, dict[str, dict[str, int]]]:
        with self._lock:
            self._conn.execute("BEGIN")  # one read snapshot (WAL): the writers' commits in between stay unseen
            try:
                counters = (
                    self._conn.execute(Q["counters_route"], (route,))
                    if route
                    else self._conn.execute(Q["counters_all"])
                ).fetchall()
                recounted = self._conn.execute(Q["recount"]).fetchall()
            finally:
                self._conn.execute("COMMIT")
        out: dict[str, dict[str, int]] = {}
        for name, status, n in recounted:
            out.setdefault(name, empty_counts())[status] = n
        return Stats.from_rows(counters), out

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

    def latest_entities(
        self, route: str, identifiers: Sequence[str], statuses: Collection[Status] = (Status.FINISHED,)
    ) -> dict[str, tuple[int, Status, Any]]:
        if not identifiers:
            return {}
        wanted = orjson.dumps([s.value for s in statuses])
        rows = self._read(Q["latest_entities"], (route, orjson.dumps(list(identifiers)), wanted))
        return {
            ident: (task_id, _STATUSES[status], orjson.loads(entity) if entity is not None else None)
            for ident, task_id, status, entity in rows
        }

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

    # --- operations: route state, tokens, audit, monitor ------------------------------------------

    def route_states(self) -> dict[str, RouteState]:
        return {
            r: RouteState(r, None if a is None else bool(a), dt(i), dt(o), reason, dt(at))
            for r, a, i, o, reason, at in self._read(Q["route_states"])
        }

    def set_route_active(
        self, route: str, active: bool | None, *, now: datetime, paused_reason: str | None = None
    ) -> None:
        flag = None if active is None else int(active)
        with self._tx() as conn:
            conn.execute(Q["set_route_active"], (route, flag, paused_reason, now.timestamp()))

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

    def failure_groups(self, *, since: datetime, until: datetime, route: str | None = None) -> list[FailureGroup]:
        bounds = (since.timestamp(), until.timestamp())
        rows = (
            self._read(Q["failure_groups_route"], (*bounds, route))
            if route
            else self._read(Q["failure_groups"], bounds)
        )
        return [FailureGroup(r, e, n, datetime.fromtimestamp(first, UTC), latest) for r, e, n, first, latest in rows]

    # --- alerts ----------------------------------------------------------------------------------

    def add_alerts(
        self, alerts: Sequence[NewAlert], *, now: datetime, states: dict[str, dict[str, Any]] | None = None
    ) -> list[int]:
        at = now.timestamp()
        with self._tx() as conn:
            for key, state in (states or {}).items():
                conn.execute(Q["set_alert_state"], (key, orjson.dumps(state), at))
            return [
                conn.execute(
                    Q["add_alert"], (at, a.rule, a.event, a.route, a.channel, a.subject, orjson.dumps(a.message))
                ).fetchone()[0]
                for a in alerts
            ]

    def due_alerts(self, *, now: datetime, limit: int = 50) -> list[AlertRecord]:
        return [alert_from_row(r, _when, orjson.loads) for r in self._read(Q["due_alerts"], (now.timestamp(), limit))]

    def alert_attempted(
        self, alert_id: int, *, now: datetime, error: str | None = None, retry_at: datetime | None = None
    ) -> None:
        status = alert_outcome(error, retry_at)
        with self._tx() as conn:
            conn.execute(
                Q["alert_attempted"],
                (
                    alert_id,
                    status,
                    error,
                    retry_at.timestamp() if retry_at and status == "pending" else None,
                    now.timestamp() if status == "sent" else None,
                ),
            )

    def list_alerts(
        self, *, limit: int = 100, cursor: int | None = None, status: str | None = None, route: str | None = None
    ) -> list[AlertRecord]:
        rows = self._read(Q["list_alerts"], (cursor if cursor is not None else 2**62, status, route, limit))
        return [alert_from_row(r, _when, orjson.loads) for r in rows]

    def prune_alerts(self, *, before: datetime) -> int:
        with self._tx() as conn:
            return int(conn.execute(Q["prune_alerts"], (before.timestamp(),)).rowcount)

    def alert_state(self, key: str) -> dict[str, Any] | None:
        rows = self._read(Q["alert_state"], (key,))
        return orjson.loads(rows[0][0]) if rows else None

    def set_alert_state(self, key: str, state: dict[str, Any], *, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(Q["set_alert_state"], (key, orjson.dumps(state), now.timestamp()))

    def circuits(self) -> dict[str, CircuitState]:
        return {row[0]: _circuit(row) for row in self._read(Q["circuits"])}

    # --- test and benchmark helpers ----------------------------------------------------------------

    def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        """The query plan of ``sql``, one line per step (used by tests to prove index use)."""
        return [str(r[3]) for r in self._read(f"EXPLAIN QUERY PLAN {sql}", params)]


def _when(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


def _insert_logs(conn: sqlite3.Connection, now_ts: float, lines: list[LogRow]) -> None:
    """Alike lines (the common case: one message per attempt number) go in one INSERT ... SELECT over their task
    ids, ~3x cheaper per line than a row each; lines of their own (durations, errors) go row by row."""
    dumps = orjson.dumps
    alike: dict[tuple[Any, ...], list[int]] = {}
    for task_id, level, phase, actor, before, after, message, details in lines:
        key = (level, phase, actor, before, after, message, dumps(details) if details else None)
        ids = alike.get(key)
        if ids is None:
            alike[key] = [task_id]
        else:
            ids.append(task_id)
    single: list[tuple[Any, ...]] = []
    for key, ids in alike.items():
        if len(ids) >= _GROUPED_LOGS:
            conn.execute(Q["insert_logs_alike"], (now_ts, *key, dumps(ids)))
        else:
            single += [(i, now_ts, *key) for i in ids]
    if single:
        conn.executemany(Q["insert_log"], single)


#: from this many alike lines on, one INSERT ... SELECT beats a row each
_GROUPED_LOGS = 4


def _token(r: Sequence[Any]) -> TokenRecord:
    return TokenRecord(r[0], r[1], r[2], datetime.fromtimestamp(r[3], UTC), dt(r[4]), bool(r[5]))


_MAX_RANGES = 200
_WAL_CHECKPOINT_BYTES = 40 << 20
#: rows per INSERT statement (19 parameters each, under SQLite's 32,766)
_INSERT_ROWS = 500


#: One task row of a multi-row INSERT. ?1-?9 are what the rows share (ledger.NewTasks), bound once per statement:
#: route, now, run id, priority, lease until, worker, status, attempts and next attempt time; {0}... are the row's
#: own values: id, identifier, fingerprint, seen count, entity (and for a noted row: error, related task, raw).
#: A row then binds 5 or 8 values instead of 19, and fewer NULLs, which the sqlite3 module binds slowly.
_PLAIN_ROW = "({0}, ?1, {1}, ?7, ?8, ?2, ?2, ?9, ?5, ?6, NULL, {2}, {3}, ?2, ?3, NULL, ?4, {4}, NULL)"
_NOTED_ROW = "({0}, ?1, {1}, ?7, ?8, ?2, ?2, ?9, ?5, ?6, {5}, {2}, {3}, ?2, ?3, {6}, ?4, {4}, {7})"
_BATCH_PARAMS = 9


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


def _where_matches(source: str, entity: bytes | None) -> int:
    return 1 if payload_filter(source).matches(entity) else 0


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


def _circuit(r: Sequence[Any]) -> CircuitState:
    return CircuitState(r[0], r[1], r[2], dt(r[3]), dt(r[4]), r[5], r[6], dt(r[7]), dt(r[8]))


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file (comment lines removed first; no ';' inside literals)."""
    text = "\n".join(ln for ln in script.splitlines() if not ln.strip().startswith("--"))
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]
