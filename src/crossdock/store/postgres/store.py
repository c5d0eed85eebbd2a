"""The PostgreSQL store: many workers on many machines share one database.

Every write is decided by :mod:`crossdock.store.ledger`, as on SQLite; this module holds its storage primitives
and the reads. What differs is how the work is shared:

- a ``psycopg_pool.ConnectionPool`` makes the synchronous API thread-safe (the engine calls it via
  ``asyncio.to_thread``); each method is one transaction on one pooled connection;
- imports write task rows with binary ``COPY`` after reserving their ids from a sequence in one call;
- claims use ``FOR UPDATE SKIP LOCKED`` on a partial index of due work, so no two workers claim a task;
- counters are sharded per connection (backend pid mod 16) and summed on read: exact, yet no hot row;
- settlements, recoveries and manual actions are set-based (``unnest`` arrays), one statement per batch;
- ``NOTIFY crossdock_new`` wakes idle workers (:meth:`PostgresStore.listen_new`), and a session advisory lock
  elects one scheduler (:meth:`PostgresStore.try_leader_lock`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from crossdock.errors import StoreUnavailable
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
    alert_from_row,
    alert_outcome,
    empty_counts,
)
from crossdock.store.filters import where_clause
from crossdock.store.import_plan import DeltaKey, Latest
from crossdock.store.ledger import SETTLE_TARGET, ActionMove, Changes, Ledger, NewRow, NewTasks, Recovery
from crossdock.store.payload_filter import payload_filter
from crossdock.store.postgres import partitions
from crossdock.store.sqlfiles import load_migrations, load_queries
from crossdock.tasks import LogLine, Status, Task

Q = load_queries("crossdock.store.postgres")
log = logging.getLogger(__name__)
_STATUSES: dict[str, Status] = {s.value: s for s in Status}
#: first key of every advisory lock crossdock takes ("cros"), so they never collide with other applications
LOCK_NAMESPACE = 0x63726F73
#: second key of the migration lock; leader locks hash their name into the same int4 space
MIGRATION_LOCK = 0
#: the migration that partitioned tasks and task_logs (0010)
PARTITIONED_SINCE = 10
#: the channel import_batch notifies with the route name when it creates due work
NEW_WORK_CHANNEL = "crossdock_new"

_TASK_COPY_TYPES = [
    "bigint", "text", "text", "text", "integer", "timestamptz", "timestamptz", "timestamptz", "timestamptz",
    "text", "text", "bytea", "integer", "timestamptz", "bigint", "bigint", "integer", "bytea", "text",
]  # fmt: skip
_LOG_COPY_TYPES = ["bigint", "timestamptz", "text", "text", "text", "text", "text", "text", "jsonb"]


#: seconds a claim waits for its route's claim turn (queries.sql, claim_turn) before it claims without one
CLAIM_TURN_WAIT = 5.0
#: set to 0 to let a route's claims run side by side again (SKIP LOCKED only), to compare on a many-core machine:
#: the turns removed the claims' buffer waits here (2 cores), and serialise one route's claims
CLAIM_TURNS_ENV = "CROSSDOCK_PG_CLAIM_TURNS"

#: seconds a call waits for a pooled connection while the database is known to be down
DOWN_WAIT = 1.0

#: the name this error had before it moved to :mod:`crossdock.errors`
DatabaseUnavailable = StoreUnavailable


def conninfo(url: str) -> str:
    """A libpq URL from a crossdock database URL (``postgresql+psycopg://`` is accepted as well)."""
    if url.startswith("postgresql+psycopg:"):
        return "postgresql:" + url[len("postgresql+psycopg:") :]
    return url


def _task(row: Sequence[Any]) -> Task:
    status = row[3]
    return Task(
        id=row[0],
        route=row[1],
        identifier=row[2],
        status=Status(status),
        attempts=row[4],
        created_at=row[5],
        updated_at=row[6],
        next_attempt_at=row[7] if status in ("retry", "new") else None,
        lease_until=row[8],
        worker=row[9],
        error=row[10],
        fingerprint=row[11].hex() if row[11] else None,
        seen_count=row[12],
        last_seen_at=row[13],
        run_id=row[14],
        related_task_id=row[15],
        priority=row[16],
        entity=orjson.loads(row[17]) if row[17] is not None else None,
        raw=row[18],
        result=orjson.loads(row[19]) if row[19] is not None else None,
    )


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Every pooled connection talks UTC and parses JSON with orjson."""
    set_json_loads(orjson.loads, conn)
    set_json_dumps(orjson.dumps, conn)
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()


#: candidates read per query while a --where expression is checked in Python
NARROW_BATCH = 5000


def _same(at: datetime | None) -> datetime | None:
    return at


def lock_key(name: str) -> int:
    """A stable int4 for a lock name (Python's ``hash`` differs per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True)


def _notify_new(conn: psycopg.Connection[Any], routes: set[str]) -> None:
    """Wake waiting workers, after the import committed, in a transaction of its own (queries.sql, notify_new).
    A wake-up is only a hint (workers poll as well), so one lost to an error is let go."""
    try:
        conn.autocommit = True
        try:
            conn.execute(Q["notify_new"], (sorted(routes),))
        finally:
            conn.autocommit = False
    except psycopg.Error:
        # the connection broke after the commit: the pool replaces it; the workers' next poll finds the tasks
        pass


class _Claimed:
    """A claim's result, its rows converted to Python only after the commit (:meth:`PostgresStore._claimed_tasks`):
    the route's claim turn is not held while 1,000 rows of 20 columns are loaded. The result stays in the cursor,
    client side, when the connection goes back to the pool."""

    __slots__ = ("cursor", "n")

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self.cursor = cursor
        self.n = cursor.rowcount

    def __len__(self) -> int:
        return self.n


def claim_lock_key(route: str) -> int:
    """The int4 of a route's claim lock (a transaction advisory lock; "claim:" keeps it apart from leader locks)."""
    return lock_key(f"claim:{route}")


class PostgresStore(Ledger):
    """A connection pool for the work; two dedicated connections for LISTEN and leader locks."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 10.0,
        read_only: bool = False,
    ) -> None:
        self.url = conninfo(url)
        self._timeout = timeout
        #: a dry run's store: every transaction of its sessions is READ ONLY, so the server refuses any write
        self.read_only = read_only
        self._pool = ConnectionPool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            configure=_configure,
            name="crossdock",
            open=False,
            kwargs={"options": "-c default_transaction_read_only=on"} if read_only else None,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {_redacted(self.url)}: {exc}") from exc
        self._listener: psycopg.Connection[Any] | None = None
        self._listener_lock = threading.Lock()
        self._locker: psycopg.Connection[Any] | None = None
        self._locker_lock = threading.Lock()
        self._leader_locks: set[str] = set()
        #: id of a connection in a transaction -> the routes it announces once committed (each connection is used
        #: by one thread at a time, so its entry is too)
        self._announced: dict[int, set[str]] = {}
        #: a reserved id at or past this makes the store check that partitions reach far enough (partitions.ensure)
        self._grow_at = 0
        if create:
            try:
                self.upgrade()
            except BaseException:
                self._pool.close()
                raise

    # --- plumbing --------------------------------------------------------------------------------

    def _unavailable_reason(self, exc: Exception) -> str | None:
        """Lost or refused connections, a server shutting down or out of disk, a pool with no connection to give:
        the server may come back, so the engine waits."""
        if isinstance(exc, PoolTimeout):
            return f"PostgreSQL at {_redacted(self.url)} gave no connection in time: {exc}"
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return None  # a lock wait ran out (retention's table lock): the server answers
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"PostgreSQL at {_redacted(self.url)}: {first}"
        return None

    def _busy(self, exc: Exception) -> bool:
        """A pool timeout while a fresh connection gets an answer is contention (every pooled connection busy, or
        the pool still refilling after an outage), not an outage: it must not flip the health state, log "database
        unavailable" or make every other call wait a short second."""
        if not isinstance(exc, PoolTimeout) or self.health.down_since is not None:
            return False
        try:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                conn.execute(Q["ping"])
        except psycopg.Error:
            return False
        return True

    def _connection_wait(self) -> float:
        """How long a call waits for a pooled connection: the pool's timeout normally; while the database is known
        to be down, a second, so API answers, health and metrics say so at once instead of each waiting it out
        (the engine's own calls back off and try again anyway)."""
        return self._timeout if self.health.down_since is None else DOWN_WAIT

    def ping(self, timeout: float = 2.0) -> None:
        with self._pool.connection(timeout=timeout) as conn:
            conn.execute(Q["ping"])

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on one pooled connection: committed on success, rolled back on error. Routes the
        transaction announced (:meth:`_announce_new`) are notified once it has committed."""
        with self._pool.connection(timeout=self._connection_wait()) as conn:
            try:
                yield conn
            except BaseException:
                self._announced.pop(id(conn), None)  # rolled back: nothing new to announce
                raise
            routes = self._announced.pop(id(conn), None)
            if routes:
                conn.commit()
                _notify_new(conn, routes)

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._pool.connection(timeout=self._connection_wait()) as conn:
            return conn.execute(sql, params).fetchall()

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        """One read-only transaction: a consistent snapshot, and the server refuses a write in it."""
        with self._tx() as conn:
            conn.execute("SET TRANSACTION READ ONLY")
            yield conn

    def schema_version(self) -> int:
        """The highest migration applied, without migrating (0 when the schema was never created)."""
        rows = self._read("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not rows[0][0]:
            return 0
        return int(self._read("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0])

    def close(self) -> None:
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        with self._locker_lock:
            if self._locker is not None:
                self._locker.close()
                self._locker = None
            self._leader_locks.clear()
        self._pool.close()

    def upgrade(self) -> int:
        """Apply missing migrations in one transaction under an advisory lock: safe when processes race."""
        with self._tx() as conn:
            conn.execute(Q["lock_migrations"], (LOCK_NAMESPACE,))
            conn.execute(Q["create_schema_migrations"])
            applied = {row[0] for row in conn.execute(Q["applied_migrations"])}
            current = max(applied, default=0)
            # the size of the first task partitions, read by migration 0010
            conn.execute("SELECT set_config('crossdock.partition_size', %s, true)", (partitions.size_setting(),))
            for version, name, sql in load_migrations("crossdock.store.postgres"):
                if version in applied:
                    continue
                # no parameters: psycopg runs the whole file (several statements) in one round trip
                conn.execute(sql.encode(), prepare=False)
                conn.execute(Q["record_migration"], (version, name))
                current = max(current, version)
            if current >= PARTITIONED_SINCE:
                self._grow_at = partitions.ensure(conn, partitions.frontier(conn))
            return current

    # --- ledger primitives -----------------------------------------------------------------------

    def _transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._tx()

    def _latest(
        self, tx: psycopg.Connection[Any], route: str, identifiers: list[str], unkeyed: list[bytes]
    ) -> dict[DeltaKey, Latest]:
        latest: dict[DeltaKey, Latest] = {}
        if unkeyed:
            for fp, task_id, status in tx.execute(Q["latest_unkeyed"], (route, unkeyed)):
                latest[fp] = (fp, task_id, _STATUSES[status])
        if identifiers:
            cur = tx.cursor(binary=True)  # binary arrays: no per-element text escaping
            for ident, fp, task_id, status in cur.execute(Q["latest_for_identifiers"], (identifiers, route)):
                latest[ident] = (fp, task_id, _STATUSES[status])
        return latest

    def _created_at(self, tx: psycopg.Connection[Any], ids: list[int]) -> dict[int, datetime]:
        return dict(tx.execute(Q["created_at"], (ids,)).fetchall())

    def _reserve_ids(self, tx: psycopg.Connection[Any], n: int) -> list[int]:
        ids = sorted(r[0] for r in tx.execute(Q["reserve_ids"], (n,)))
        if ids and ids[-1] >= self._grow_at:
            self._grow_at = partitions.ensure(tx, ids[-1])
        return ids

    def _insert_tasks(self, tx: psycopg.Connection[Any], batch: NewTasks, rows: list[NewRow]) -> None:
        route, status, now = batch.route, batch.status._value_, batch.now
        attempts, next_at, lease, worker = batch.attempts, batch.next_attempt_at, batch.lease_until, batch.worker
        run_id, priority = batch.run_id, batch.priority
        with tx.cursor().copy(Q["copy_tasks"]) as copy:
            copy.set_types(_TASK_COPY_TYPES)
            write = copy.write_row
            for task_id, identifier, fingerprint, seen, entity, error, related, raw in rows:
                write((task_id, route, identifier, status, attempts, now, now, next_at, lease, worker, error,
                       fingerprint, seen, now, run_id, related, priority, entity, raw))  # fmt: skip
        # a fingerprinted task is its identifier's newest: point delta_latest at it (the last of a repeat wins)
        latest = {row[1]: row[0] for row in rows if row[2] is not None and row[1] is not None}
        if latest:
            tx.execute(Q["point_latest"], (route, list(latest), list(latest.values())))

    def _touch_tasks(self, tx: psycopg.Connection[Any], seen: dict[int, int], now: datetime) -> None:
        ids = sorted(seen)  # in id order: two transactions lock shared rows alike
        tx.execute(Q["touch_tasks"], (now, ids, [seen[i] for i in ids]))

    def _supersede_tasks(
        self,
        tx: psycopg.Connection[Any],
        moves: list[tuple[int, int, str, Status]],
        sources: Collection[Status],
        now: datetime,
    ) -> dict[int, str]:
        moves = sorted(moves)
        params = {
            "ids": [m[0] for m in moves],
            "newer": [m[1] for m in moves],
            "reasons": [m[2] for m in moves],
            "sources": sorted(s.value for s in sources),
            "now": now,
        }
        return dict(tx.execute(Q["supersede_tasks"], params).fetchall())

    def _announce_new(self, tx: psycopg.Connection[Any], route: str) -> None:
        # sent by _tx once the transaction committed, so a woken worker always finds the rows
        self._announced.setdefault(id(tx), set()).add(route)

    def _begin_claim(self, tx: psycopg.Connection[Any], route: str) -> None:
        if os.environ.get(CLAIM_TURNS_ENV) == "0":
            tx.execute(Q["claim_plan"])
            return
        params = {"wait": str(round(CLAIM_TURN_WAIT * 1000)), "ns": LOCK_NAMESPACE, "key": claim_lock_key(route)}
        try:
            tx.execute(Q["claim_turn"], params)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            # the claim before it has held the turn for CLAIM_TURN_WAIT (or a statement_timeout below it ran out):
            # claim beside it (SKIP LOCKED), as before
            tx.rollback()
            tx.execute(Q["claim_plan"])

    def _claim(
        self,
        tx: psycopg.Connection[Any],
        route: str,
        source: Status,
        limit: int,
        *,
        worker: str,
        lease_until: datetime,
        now: datetime,
    ) -> _Claimed:
        query = Q["claim_retry"] if source is Status.RETRY else Q["claim_new"]
        params = {"route": route, "now": now, "limit": limit, "worker": worker, "lease": lease_until}
        return _Claimed(tx.execute(query, params))

    def _claimed_tasks(
        self, rows: _Claimed, route: str, source: Status, *, worker: str, lease_until: datetime, now: datetime
    ) -> list[Task]:
        claimed = []
        for r in rows.cursor.fetchall():
            task = _task(r)
            task.claimed_from = source
            claimed.append(task)
        return claimed

    def _settle_tasks(
        self, tx: psycopg.Connection[Any], settlements: list[Settlement], now: datetime
    ) -> dict[int, str]:
        dumps = orjson.dumps
        params = (
            now,
            [s.task_id for s in settlements],
            [SETTLE_TARGET[s.action] for s in settlements],
            [s.error for s in settlements],
            [s.next_attempt_at for s in settlements],
            [dumps(s.result) if s.result is not None else None for s in settlements],
            [s.worker for s in settlements],
        )
        return dict(tx.execute(Q["settle_tasks"], params).fetchall())

    def _expired_leases(
        self, tx: psycopg.Connection[Any], now: datetime, route: str | None, limit: int
    ) -> list[tuple[int, str, int, str]]:
        return tx.execute(Q["expired_leases"], {"now": now, "route": route, "limit": limit}).fetchall()

    def _recover_tasks(self, tx: psycopg.Connection[Any], recoveries: list[Recovery], now: datetime) -> set[int]:
        params = (
            now,
            [r.task_id for r in recoveries],
            [r.target.value for r in recoveries],
            [r.next_attempt_at for r in recoveries],
            [r.message for r in recoveries],
            now,
        )
        return {r[0] for r in tx.execute(Q["recover_tasks"], params)}

    def _release_tasks(
        self, tx: psycopg.Connection[Any], backs: list[tuple[int, Status]], worker: str, now: datetime
    ) -> dict[int, str]:
        params = {"now": now, "ids": [b[0] for b in backs], "statuses": [b[1].value for b in backs], "worker": worker}
        return dict(tx.execute(Q["release_tasks"], params).fetchall())

    def _lock_task(self, tx: psycopg.Connection[Any], task_id: int) -> tuple[str, str | None, Status, int] | None:
        row = tx.execute(
            "SELECT route, identifier, status, priority FROM tasks WHERE id = %s FOR UPDATE", (task_id,)
        ).fetchone()
        return (row[0], row[1], _STATUSES[row[2]], row[3]) if row is not None else None

    def _audit(
        self,
        tx: psycopg.Connection[Any],
        actor: str,
        action: str,
        target: dict[str, Any],
        *,
        changed: int | None,
        detail: str | None,
        now: datetime,
    ) -> None:
        tx.execute(Q["record_audit"], (now, actor, action, orjson.dumps(target).decode(), changed, detail))

    def _lock_circuit(
        self, tx: psycopg.Connection[Any], key: str, *, create: bool, now: datetime
    ) -> CircuitState | None:
        if create:
            tx.execute(Q["circuit_create"], (key, now))
        row = tx.execute(Q["circuit_lock"], (key,)).fetchone()
        return CircuitState(*row) if row is not None else None

    def _put_circuit(self, tx: psycopg.Connection[Any], row: CircuitState) -> None:
        tx.execute(
            Q["circuit_put"],
            (
                row.state,
                row.failures,
                row.opened_at,
                row.open_until,
                row.last_error,
                row.probe_owner,
                row.probe_at,
                row.updated_at,
                row.key,
            ),
        )

    def _narrow(self, selection: TaskFilter) -> TaskFilter:
        """A ``where`` expression SQL cannot decide whole (a function call, ``or``): the candidates its SQL
        conditions let through are read in batches and checked in Python; the selection becomes their ids."""
        if not selection.where:
            return selection
        found = payload_filter(selection.where)
        if found.exact:
            return selection
        where, params = _where(selection)
        matched: list[int] = []
        last = 0
        while True:
            rows = self._read(Q["where_candidates"].format(where=where), [*params, last, NARROW_BATCH])
            if not rows:
                break
            matched += [task_id for task_id, entity in rows if found.matches(entity)]
            last = rows[-1][0]
        return replace(selection, ids=matched, where=None)

    def _matched_by_status(self, selection: TaskFilter) -> dict[Status, int]:
        where, params = _where(selection)
        return {Status(status): n for status, n in self._read(Q["action_matched"].format(where=where), params)}

    def _act(
        self,
        tx: psycopg.Connection[Any],
        selection: TaskFilter,
        move: ActionMove,
        *,
        after_id: int,
        limit: int,
    ) -> list[tuple[int, str, str | None, str]]:
        where, params = _where(selection)
        allowed = sorted(s.value for s in move.sources)
        sql = Q["action_batch"].format(where=where, reset=", attempts = 0" if move.reset_attempts else "")
        values = [move.target.value, move.now, move.error, move.next_attempt_at]
        rows = tx.execute(sql, [*params, allowed, after_id, limit, *values, allowed]).fetchall()
        rows.sort()
        return rows

    def _due_of_identifiers(
        self, tx: psycopg.Connection[Any], route: str, identifiers: list[str], statuses: Collection[Status]
    ) -> list[tuple[int, str, str]]:
        params = (route, identifiers, sorted(s.value for s in statuses))
        return tx.execute(Q["tasks_of_identifiers"], params).fetchall()

    def _prunable(
        self,
        tx: psycopg.Connection[Any],
        *,
        cutoffs: Mapping[Status, datetime],
        route: str | None,
        after_id: int,
        until_id: int | None,
        limit: int,
    ) -> list[int]:
        params = {
            "statuses": [s.value for s in cutoffs],
            "befores": list(cutoffs.values()),
            "route": route,
            "after": after_id,
            "until": until_id if until_id is not None else 2**63 - 1,
            "limit": limit,
        }
        return [r[0] for r in tx.execute(Q["prune_batch"], params)]

    def partition_report(self) -> tuple[int, list[partitions.PartitionInfo]]:
        """The size of new partitions and every partition pair with its rows and size (``db partitions``)."""
        with self._reading() as conn:
            return partitions.size(conn), partitions.describe(conn)

    def set_partition_size(self, ids: int) -> None:
        """The size in ids of the partitions created from now on; the existing ones keep theirs."""
        with self._tx() as conn:
            partitions.set_size(conn, ids)
        self._grow_at = 0  # look again at the next reservation

    def _prune_partition(
        self,
        part: partitions.Partition,
        cutoffs: dict[str, datetime],
        route: str | None,
        counters: Callable[[psycopg.Connection[Any], dict[tuple[str, str], int]], None],
    ) -> partitions.Outcome:
        """partitions.prune_partition in its own transaction, tried again while the table lock is not to be had."""
        for attempt in range(partitions.LOCK_TRIES):
            try:
                with self._tx() as tx:
                    return partitions.prune_partition(tx, part, cutoffs, route, counters)
            except psycopg.errors.LockNotAvailable:
                if attempt == partitions.LOCK_TRIES - 1:
                    raise
                time.sleep(partitions.LOCK_PAUSE)
        raise AssertionError("unreachable")

    def _prune_whole(
        self, cutoffs: Mapping[Status, datetime], route: str | None, now: datetime
    ) -> tuple[Counter[tuple[str, str]], list[tuple[int, int | None]]]:
        """Drop or rewrite each old partition where at least as many tasks go as stay (partitions.py); the id
        ranges returned are left to the row-by-row pass: the partitions still taking inserts, and those where
        fewer go than stay."""
        with self._reading() as conn:
            parts = partitions.partitions(conn)
            frontier = partitions.frontier(conn)
        by_value = {s.value: at for s, at in cutoffs.items()}
        gone: Counter[tuple[str, str]] = Counter()
        rows: list[tuple[int, int | None]] = []

        def counters(tx: psycopg.Connection[Any], delta: dict[tuple[str, str], int]) -> None:
            changes = Changes()
            changes.counters.update(delta)
            self._write_changes(tx, changes, now)

        for part in parts:
            if part.hi > frontier:  # still taking inserts
                rows.append((part.lo, None))
                break
            started = time.perf_counter()
            with self._reading() as conn:
                total, named, deleted = partitions.census(conn, part)
            if total and total == named:
                outcome = partitions.Outcome("kept", {})  # every task is its identifier's latest
            elif total and not partitions.worth_rewriting(total - named, named, deleted):
                outcome = partitions.Outcome("rows", {})  # too few can go to rewrite it
            else:
                # looked at without a lock first: a partition of tasks not old enough yet is not locked every night
                with self._reading() as conn:
                    outcome = partitions.sort(conn, part, by_value, route, deleted)
                if outcome.how in ("drop", "rewrite"):
                    outcome = self._prune_partition(part, by_value, route, counters)
            if outcome.how == "rows":
                rows.append((part.lo, part.hi))
            elif outcome.how in ("drop", "rewrite"):
                gone.update(outcome.gone)
            log.info(
                "retention: tasks_%s %s (%s tasks go) in %.2f s",
                part.lo,
                {"drop": "dropped", "rewrite": "rewritten", "rows": "left to row deletes"}.get(outcome.how, "kept"),
                f"{sum(outcome.gone.values()):,}",
                time.perf_counter() - started,
            )
        return gone, rows

    def _delete_tasks(self, tx: psycopg.Connection[Any], ids: list[int]) -> list[tuple[str, str]]:
        tx.execute(Q["prune_logs"], (ids,))
        tx.execute(Q["count_deleted"], (ids,))
        return tx.execute(Q["prune_tasks"], (ids,)).fetchall()

    def _write_changes(self, tx: psycopg.Connection[Any], changes: Changes, now: datetime) -> None:
        # sorted, so two transactions lock shared counter rows in the same order and cannot deadlock
        rows = sorted((route, status, n) for (route, status), n in changes.counters.items() if n)
        if rows:
            tx.execute(Q["add_counters"], ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
        if changes.logs:
            with tx.cursor().copy(Q["copy_logs"]) as copy:
                copy.set_types(_LOG_COPY_TYPES)
                for task_id, level, phase, actor, before, after, message, details in changes.logs:
                    copy.write_row((task_id, now, level, phase, actor, before, after, message,
                                    Jsonb(details) if details else None))  # fmt: skip
        kinds = sorted((route, kind, n) for (route, kind), n in changes.throughput.items() if n)
        if kinds:
            minute = int(now.timestamp() // 60)
            tx.execute(
                Q["add_throughput"], (minute, [k[0] for k in kinds], [k[1] for k in kinds], [k[2] for k in kinds])
            )

    def extend_leases(self, ids: Sequence[int], *, worker: str, lease_until: datetime) -> int:
        if not ids:
            return 0
        with self._tx() as conn:
            return conn.execute(Q["extend_leases"], (lease_until, list(ids), worker)).rowcount

    # --- reads -----------------------------------------------------------------------------------

    def get_task(self, task_id: int) -> Task | None:
        rows = self._read(Q["get_task"], (task_id,))
        return _task(rows[0]) if rows else None

    def get_tasks(self, ids: Sequence[int]) -> list[Task]:
        return [_task(r) for r in self._read(Q["get_tasks"], (list(ids),))]

    def task_logs(self, task_id: int) -> list[LogLine]:
        return [
            LogLine(
                at=at,
                level=level,
                phase=phase,
                actor=actor,
                from_status=Status(fs) if fs else None,
                to_status=Status(to) if to else None,
                message=message,
                details=details or {},
            )
            for at, level, phase, actor, fs, to, message, details in self._read(Q["task_logs"], (task_id,))
        ]

    def list_tasks(
        self, selection: TaskFilter, *, limit: int = 50, cursor: int | None = None
    ) -> tuple[list[Task], int | None]:
        narrowed = self._narrow(selection)
        where, params = _where(narrowed)
        if cursor is not None:
            where += " AND id < %s"
            params.append(cursor)
        with self._reading() as conn:
            if narrowed.ids is None:
                # newest first is a backward walk of the partitions in id order that stops after one page. Right
                # after a burst of imports the newest partition's statistics still say it is nearly empty, and
                # the planner sorted all its rows instead (143 ms for 500,000 new tasks, bench/partition_bench.py)
                conn.execute(Q["list_plan"])
            rows = conn.execute(Q["list_tasks"].format(where=where), [*params, limit + 1]).fetchall()
        tasks = [_task(r) for r in rows[:limit]]
        next_cursor = tasks[-1].id if len(rows) > limit and tasks else None
        return tasks, next_cursor

    def count_tasks(self, selection: TaskFilter) -> int:
        where, params = _where(self._narrow(selection))
        return int(self._read(Q["count_tasks"].format(where=where), params)[0][0])

    def stats(self, route: str | None = None) -> Stats:
        rows = self._read(Q["counters_route"], (route,)) if route else self._read(Q["counters_all"])
        return Stats.from_rows(rows)

    def recount(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for route, status, n in self._read(Q["recount"]):
            out.setdefault(route, empty_counts())[status] = n
        return out

    def counted(self, route: str | None = None) -> tuple[Stats, dict[str, dict[str, int]]]:
        with self._tx() as conn:
            # one snapshot for both reads: the workers' commits in between stay unseen
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            counters = conn.execute(Q["counters_route"], (route,)) if route else conn.execute(Q["counters_all"])
            rows = counters.fetchall()
            recounted = conn.execute(Q["recount"]).fetchall()
        out: dict[str, dict[str, int]] = {}
        for name, status, n in recounted:
            out.setdefault(name, empty_counts())[status] = n
        return Stats.from_rows(rows), out

    def ensure_routes(self, routes: Iterable[str]) -> None:
        names = sorted(set(routes))
        if not names:
            return
        with self._tx() as conn:
            conn.execute(Q["ensure_counters"], (names, list(empty_counts())))

    # --- runs ------------------------------------------------------------------------------------

    def start_run(self, route: str, part: str, *, actor: str | None, now: datetime, owner: str | None = None) -> int:
        with self._tx() as conn:
            params = {"route": route, "part": part, "now": now, "actor": actor, "owner": owner}
            row = conn.execute(Q["start_run"], params).fetchone()
        assert row is not None
        return int(row[0])

    def touch_run(self, run_id: int, *, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(Q["touch_run"], (now, run_id))

    def running_runs(self) -> list[Run]:
        return [_run(r) for r in self._read(Q["running_runs"])]

    def abandon_run(self, run_id: int, *, error: str, now: datetime) -> bool:
        with self._tx() as conn:
            return conn.execute(Q["abandon_run"], (now, error, run_id)).rowcount == 1

    def finish_run(
        self, run_id: int, *, status: str, summary: dict[str, Any], error: str | None, now: datetime
    ) -> None:
        with self._tx() as conn:
            conn.execute(Q["finish_run"], (now, status, orjson.dumps(summary).decode(), error, run_id))

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
        rows = self._read(Q["latest_entities"], (list(identifiers), route, [s.value for s in statuses]))
        return {
            ident: (task_id, _STATUSES[status], orjson.loads(entity) if entity is not None else None)
            for ident, task_id, status, entity in rows
        }

    def cache_show(self, route: str, identifier: str) -> CacheEntry | None:
        rows = self._read(Q["cache_show"], (route, identifier))
        if not rows:
            return None
        r = rows[0]
        return CacheEntry(r[0], r[1], r[2].hex(), r[3], Status(r[4]) if r[4] else None, r[5])

    def cache_clear(self, route: str, identifier: str | None = None) -> int:
        """Forget fingerprints by taking them off the tasks: the next import compares with nothing."""
        with self._tx() as conn:
            if identifier is None:
                cleared = int(conn.execute(Q["cache_count_route"], (route,)).fetchone()[0])  # type: ignore[index]
                conn.execute(Q["cache_clear_route"], {"route": route})
                return cleared
            params = {"route": route, "identifier": identifier}
            return min(conn.execute(Q["cache_clear_identifier"], params).rowcount, 1)

    def storage_get(self, storage: str, key: str, *, now: datetime) -> Any | None:
        rows = self._read(Q["storage_get"], (storage, key, now))
        return rows[0][0] if rows else None

    def storage_put(self, storage: str, key: str, value: Any, *, now: datetime, ttl: float | None = None) -> None:
        expires = datetime.fromtimestamp(now.timestamp() + ttl, UTC) if ttl else None
        with self._tx() as conn:
            conn.execute(Q["storage_put"], (storage, key, orjson.dumps(value).decode(), expires))

    # --- operations: route state, tokens, audit, monitor ------------------------------------------

    def route_states(self) -> dict[str, RouteState]:
        return {row[0]: RouteState(*row) for row in self._read(Q["route_states"])}

    def set_route_active(
        self, route: str, active: bool | None, *, now: datetime, paused_reason: str | None = None
    ) -> None:
        with self._tx() as conn:
            params = {"route": route, "active": active, "reason": paused_reason, "now": now}
            conn.execute(Q["set_route_active"], params)

    def set_next_fire(self, route: str, part: str, at: datetime | None, *, now: datetime) -> None:
        query = {"incoming": "set_incoming_next", "outgoing": "set_outgoing_next"}[part]
        with self._tx() as conn:
            conn.execute(Q[query], (route, at, now))

    def create_token(self, name: str, role: str, token_hash: str, *, now: datetime) -> int:
        with self._tx() as conn:
            row = conn.execute(Q["create_token"], (name, role, token_hash, now)).fetchone()
            assert row is not None
            return int(row[0])

    def find_token(self, token_hash: str, *, now: datetime | None = None) -> TokenRecord | None:
        rows = self._read(Q["find_token"], (token_hash,))
        if not rows:
            return None
        if now is not None:
            with self._tx() as conn:
                conn.execute(Q["touch_token"], (now, rows[0][0]))
        return TokenRecord(*rows[0])

    def list_tokens(self) -> list[TokenRecord]:
        return [TokenRecord(*r) for r in self._read(Q["list_tokens"])]

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
            conn.execute(Q["record_audit"], (now, actor, action, orjson.dumps(target).decode(), changed, detail))

    def list_audit(self, *, limit: int = 100, cursor: int | None = None) -> list[AuditEntry]:
        rows = self._read(Q["list_audit"], (cursor if cursor is not None else 2**62, limit))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4] or {}, r[5], r[6]) for r in rows]

    def claim_idempotency_key(
        self, scope: str, key: str, *, fingerprint: str, now: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        with self._tx() as conn:
            conn.execute(Q["prune_idempotency_keys"], (now,))
            while True:
                # a concurrent claim of the same key waits here for the other transaction, then takes nothing
                if conn.execute(Q["claim_idempotency_key"], (scope, key, fingerprint, now, expires_at)).rowcount:
                    return None
                row = conn.execute(Q["get_idempotency_key"], (scope, key)).fetchone()
                if row is not None:  # else its holder gave it up just now: try again
                    return IdempotencyRecord(row[0], row[1], row[2], row[3])

    def settle_idempotency_key(
        self, scope: str, key: str, *, response: dict[str, Any] | None, expires_at: datetime | None = None
    ) -> None:
        with self._tx() as conn:
            if response is None:
                conn.execute(Q["forget_idempotency_key"], (scope, key))
            else:
                conn.execute(Q["settle_idempotency_key"], (orjson.dumps(response).decode(), expires_at, scope, key))

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
        return [ErrorGroup(*r) for r in self._read(Q["top_errors"], (since, limit))]

    def oldest_due(self) -> dict[str, dict[str, datetime]]:
        out: dict[str, dict[str, datetime]] = {}
        for route, status, at in self._read(Q["oldest_due"]):
            if at is not None:
                out.setdefault(route, {})[status] = at
        return out

    def failure_groups(self, *, since: datetime, until: datetime, route: str | None = None) -> list[FailureGroup]:
        rows = self._read(Q["failure_groups"], {"since": since, "until": until, "route": route})
        return [FailureGroup(*r) for r in rows]

    # --- alerts ----------------------------------------------------------------------------------

    def add_alerts(
        self, alerts: Sequence[NewAlert], *, now: datetime, states: dict[str, dict[str, Any]] | None = None
    ) -> list[int]:
        with self._tx() as conn:
            for key, state in (states or {}).items():
                conn.execute(Q["set_alert_state"], (key, Jsonb(state), now))
            ids: list[int] = []
            for a in alerts:
                row = conn.execute(
                    Q["add_alert"],
                    {
                        "now": now,
                        "rule": a.rule,
                        "event": a.event,
                        "route": a.route,
                        "channel": a.channel,
                        "subject": a.subject,
                        "message": Jsonb(a.message),
                    },
                ).fetchone()
                assert row is not None
                ids.append(row[0])
            return ids

    def due_alerts(self, *, now: datetime, limit: int = 50) -> list[AlertRecord]:
        return [alert_from_row(r, _same, orjson.loads) for r in self._read(Q["due_alerts"], (now, limit))]

    def alert_attempted(
        self, alert_id: int, *, now: datetime, error: str | None = None, retry_at: datetime | None = None
    ) -> None:
        status = alert_outcome(error, retry_at)
        with self._tx() as conn:
            conn.execute(
                Q["alert_attempted"],
                {
                    "id": alert_id,
                    "status": status,
                    "error": error,
                    "next": retry_at if status == "pending" else None,
                    "sent": now if status == "sent" else None,
                },
            )

    def list_alerts(
        self, *, limit: int = 100, cursor: int | None = None, status: str | None = None, route: str | None = None
    ) -> list[AlertRecord]:
        params = {"cursor": cursor if cursor is not None else 2**62, "status": status, "route": route, "limit": limit}
        return [alert_from_row(r, _same, orjson.loads) for r in self._read(Q["list_alerts"], params)]

    def prune_alerts(self, *, before: datetime) -> int:
        with self._tx() as conn:
            return conn.execute(Q["prune_alerts"], (before,)).rowcount

    def alert_state(self, key: str) -> dict[str, Any] | None:
        rows = self._read(Q["alert_state"], (key,))
        return dict(rows[0][0]) if rows else None

    def set_alert_state(self, key: str, state: dict[str, Any], *, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(Q["set_alert_state"], (key, Jsonb(state), now))

    def circuits(self) -> dict[str, CircuitState]:
        return {row[0]: CircuitState(*row) for row in self._read(Q["circuits"])}

    # --- wake-ups and leadership (dedicated connections) ------------------------------------------

    def listen_new(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for imports of due work; return the routes notified (no duplicates).

        The first call starts listening; a worker should call it once before its first claim so no
        notification falls between the claim and the wait.
        """
        with self._listener_lock:
            if self._listener is None or self._listener.closed or self._listener.broken:
                if self._listener is not None:
                    self._listener.close()  # a connection lost in an outage: start listening again on a new one
                    self._listener = None
                self._listener = psycopg.Connection.connect(self.url, autocommit=True, connect_timeout=10)
                self._listener.execute(Q["listen_new"])
            conn = self._listener
            routes: dict[str, None] = {}
            for note in conn.notifies(timeout=timeout, stop_after=1):
                routes[note.payload] = None
            # whatever else already arrived, without waiting again
            for note in conn.notifies(timeout=0.0):
                routes[note.payload] = None
            return list(routes)

    def try_leader_lock(self, name: str) -> bool:
        """Take the session advisory lock ``name`` if free (held until released, or the session ends)."""
        with self._locker_lock:
            if name in self._leader_locks:
                if self._locker_alive():
                    return True
                self._leader_locks.clear()
            conn = self._locker_connection()
            row = conn.execute(Q["try_lock"], (LOCK_NAMESPACE, lock_key(name))).fetchone()
            got = bool(row and row[0])
            if got:
                self._leader_locks.add(name)
            return got

    def release_leader_lock(self, name: str) -> None:
        with self._locker_lock:
            if name not in self._leader_locks:
                return
            self._leader_locks.discard(name)
            if self._locker is not None and not self._locker.closed:
                try:
                    self._locker.execute(Q["unlock"], (LOCK_NAMESPACE, lock_key(name)))
                except psycopg.OperationalError:
                    # the session is gone, and its advisory locks went with it
                    self._locker.close()

    def _locker_connection(self) -> psycopg.Connection[Any]:
        if self._locker is None or self._locker.closed or self._locker.broken:
            if self._locker is not None:
                self._locker.close()
            self._locker = psycopg.Connection.connect(self.url, autocommit=True, connect_timeout=10)
        return self._locker

    def _locker_alive(self) -> bool:
        """A lost session means lost locks: check before telling the caller it still leads."""
        if self._locker is None or self._locker.closed:
            return False
        try:
            self._locker.execute(Q["ping"])
        except psycopg.OperationalError:
            return False
        return True


def _where(selection: TaskFilter) -> tuple[str, list[Any]]:
    """The shared filter, with SQLite's case-insensitive ``LIKE`` spelled ``ILIKE``."""
    where, params = where_clause(selection, placeholder="%s")
    return where.replace(" LIKE ", " ILIKE "), params


def _redacted(url: str) -> str:
    """The URL without a password, for error messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured database"
    host = info.get("host", "localhost")
    return f"{info.get('user', '')}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _run(r: Sequence[Any]) -> Run:
    return Run(
        id=r[0],
        route=r[1],
        part=r[2],
        started_at=r[3],
        finished_at=r[4],
        status=r[5],
        summary=r[6] or {},
        error=r[7],
        actor=r[8],
        owner=r[9],
        heartbeat_at=r[10],
    )
