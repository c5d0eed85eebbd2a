"""Range partitions of ``tasks`` and ``task_logs`` by task id (#18, migration 0010).

Ids come from one sequence, so an id range is an age range. The newest partition takes every insert; the store
creates the next one while half of the current one is still free, so an insert never finds no partition. Retention
(:meth:`PostgresStore._prune_whole`) drops a partition whose every task is due to go, and rewrites one of which a
third or more is gone or going: both return the space at once, where deleted rows leave holes that only the old
partition's own updates could reuse.

A partition pair is named by its lower bound: ``tasks_<lo>`` and ``task_logs_<lo>`` hold the task ids [lo, hi).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from crossdock.errors import CrossdockError

#: second key of the advisory lock that serialises partition changes (the first is the store's namespace)
PARTITION_LOCK = 1
#: the size in ids of the partitions a new database starts with
SIZE_ENV = "CROSSDOCK_PG_PARTITION_SIZE"
DEFAULT_SIZE = 1_000_000
#: how long retention waits for the table lock (every query on tasks queues behind the wait), how often it tries,
#: and the seconds between tries
LOCK_WAIT = "1s"
LOCK_TRIES = 10
LOCK_PAUSE = 1.0


@dataclass(frozen=True)
class Partition:
    lo: int
    hi: int

    @property
    def tasks(self) -> sql.Identifier:
        return sql.Identifier(f"tasks_{self.lo}")

    @property
    def logs(self) -> sql.Identifier:
        return sql.Identifier(f"task_logs_{self.lo}")


@dataclass(frozen=True)
class PartitionInfo:
    """One partition pair as ``crossdock db partitions`` shows it."""

    lo: int
    hi: int
    tasks: int
    table_bytes: int
    index_bytes: int
    log_bytes: int


def size_setting() -> str:
    """The partition size migration 0010 reads (``SET crossdock.partition_size``), from the environment."""
    raw = os.environ.get(SIZE_ENV, "").strip()
    if raw and (not raw.isdigit() or int(raw) <= 0):
        raise CrossdockError(f"{SIZE_ENV}={raw!r}: give a positive number of task ids, e.g. 1000000")
    return raw


def partitions(conn: psycopg.Connection[Any]) -> list[Partition]:
    return [Partition(lo, hi) for lo, hi in conn.execute("SELECT lo, hi FROM task_partitions ORDER BY lo")]


def size(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT size FROM task_partitioning").fetchone()
    return int(row[0]) if row else DEFAULT_SIZE


def set_size(conn: psycopg.Connection[Any], ids: int) -> None:
    if ids <= 0:
        raise ValueError("the partition size must be a positive number of task ids")
    conn.execute("UPDATE task_partitioning SET size = %s", (ids,))


def frontier(conn: psycopg.Connection[Any]) -> int:
    """The highest task id handed out so far (0 before the first)."""
    row = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tasks_id_seq").fetchone()
    return int(row[0]) if row else 0


def ensure(conn: psycopg.Connection[Any], upto: int) -> int:
    """Make partitions reach past ``upto`` by at least half a partition, in the caller's transaction; returns the
    id from which the caller should call again.

    Each new pair is created on its own and then attached, which takes SHARE UPDATE EXCLUSIVE on the parent: reads
    and writes of tasks go on meanwhile (``CREATE TABLE ... PARTITION OF`` would lock them out).
    """
    current, high = _bounds(conn)
    if high > upto + current // 2:
        return high - current // 2
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_namespace(), PARTITION_LOCK))
    current, high = _bounds(conn)  # another process may have created them while this one waited
    while high <= upto + current // 2:
        create(conn, Partition(high, high + current))
        high += current
    return high - current // 2


def _bounds(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute("SELECT size, (SELECT MAX(hi) FROM task_partitions) FROM task_partitioning").fetchone()
    assert row is not None, "task_partitioning is empty: run crossdock db upgrade"
    return int(row[0]), int(row[1])


def create(conn: psycopg.Connection[Any], part: Partition) -> None:
    for table, name in (("tasks", part.tasks), ("task_logs", part.logs)):
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
                name, sql.Identifier(table)
            )
        )
        conn.execute(_attach(table, name, part))
        _name_indexes(conn, table, f"{table}_{part.lo}")
    conn.execute("INSERT INTO task_partitions (lo, hi) VALUES (%s, %s)", (part.lo, part.hi))


def _name_indexes(conn: psycopg.Connection[Any], table: str, partition: str) -> None:
    """Name a partition's indexes after the parent's (``tasks_due_new`` → ``tasks_<lo>_due_new``) instead of the
    names ATTACH makes up from their columns, so plans read alike for every partition."""
    rows = conn.execute(
        "SELECT c.relname, p.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "JOIN pg_inherits i ON i.inhrelid = x.indexrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE x.indrelid = to_regclass(%s)",
        (partition,),
    ).fetchall()
    for child, parent in rows:
        wanted = f"{partition}_{parent.removeprefix(table + '_')}"
        if child != wanted:
            conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(child), sql.Identifier(wanted)))


def _attach(table: str, name: sql.Identifier, part: Partition) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(table), name, sql.Literal(part.lo), sql.Literal(part.hi)
    )


def _namespace() -> int:
    from crossdock.store.postgres.store import LOCK_NAMESPACE

    return LOCK_NAMESPACE


# --- retention ---------------------------------------------------------------------------------------------

#: per (route, status): how many tasks of a partition go (True) and stay (False). A task goes when retention
#: covers its status, it was last updated before that status's cutoff, it is on the route asked for (if any), and
#: delta_latest does not name it (delta compares new records with it).
_SORT = """
SELECT t.route, t.status,
       (c.before IS NOT NULL AND t.updated_at < c.before
        AND (%(route)s::text IS NULL OR t.route = %(route)s) AND k.task_id IS NULL) AS goes,
       COUNT(*)
FROM {part} t
LEFT JOIN unnest(%(statuses)s::text[], %(befores)s::timestamptz[]) AS c(status, before) ON c.status = t.status
LEFT JOIN (SELECT task_id FROM delta_latest WHERE task_id >= %(lo)s AND task_id < %(hi)s) k ON k.task_id = t.id
GROUP BY 1, 2, 3
"""

_STAYING = """
SELECT t.* FROM {part} t
LEFT JOIN unnest(%(statuses)s::text[], %(befores)s::timestamptz[]) AS c(status, before) ON c.status = t.status
LEFT JOIN (SELECT task_id FROM delta_latest WHERE task_id >= %(lo)s AND task_id < %(hi)s) k ON k.task_id = t.id
WHERE NOT (c.before IS NOT NULL AND t.updated_at < c.before
           AND (%(route)s::text IS NULL OR t.route = %(route)s) AND k.task_id IS NULL)
"""


@dataclass
class Outcome:
    """What retention does with one partition: ``how`` is "kept" (nothing goes), "rows" (fewer go than stay: the
    row-by-row pass deletes them), "rewrite" or "drop"; ``gone`` counts what goes per (route, status)."""

    how: str
    gone: dict[tuple[str, str], int]


def sort(
    conn: psycopg.Connection[Any],
    part: Partition,
    cutoffs: Mapping[str, datetime],
    route: str | None,
    deleted: int = 0,
) -> Outcome:
    """Count what would go and what would stay (one scan of the partition) and say what to do: drop it when
    nothing stays, rewrite it when what goes and what was deleted row by row before make a third of it or more,
    else delete row by row."""
    conn.execute("SELECT set_config('work_mem', '256MB', true)")
    params = _params(part, cutoffs, route)
    goes: dict[tuple[str, str], int] = {}
    stays = 0
    for row_route, status, gone, n in conn.execute(sql.SQL(_SORT).format(part=part.tasks), params):
        if gone:
            goes[(row_route, status)] = int(n)
        else:
            stays += int(n)
    going = sum(goes.values())
    if not stays:
        return Outcome("drop", goes)  # an empty old partition goes too
    if not going:
        return Outcome("kept", {})
    if worth_rewriting(going, stays, deleted):
        return Outcome("rewrite", goes)
    return Outcome("rows", {})


def worth_rewriting(going: int, stays: int, deleted: int) -> bool:
    """Copying what stays costs about what deleting what goes does, and leaves no holes: rewrite once a third of
    the partition (counting rows already deleted one by one) is gone or going."""
    return (going + deleted) * 3 >= going + stays + deleted


def census(conn: psycopg.Connection[Any], part: Partition) -> tuple[int, int, int]:
    """The partition's tasks, how many of them delta_latest names (they never go), and how many were deleted row by
    row before: counts from indexes, so retention skips a partition of latest tasks without reading it."""
    total = conn.execute(sql.SQL("SELECT COUNT(*) FROM {}").format(part.tasks)).fetchone()
    named = conn.execute(
        "SELECT COUNT(*) FROM delta_latest WHERE task_id >= %s AND task_id < %s", (part.lo, part.hi)
    ).fetchone()
    deleted = conn.execute("SELECT deleted FROM task_partitions WHERE lo = %s", (part.lo,)).fetchone()
    assert total is not None and named is not None
    return int(total[0]), int(named[0]), int(deleted[0]) if deleted else 0


def _params(part: Partition, cutoffs: Mapping[str, datetime], route: str | None) -> dict[str, Any]:
    return {"statuses": list(cutoffs), "befores": list(cutoffs.values()), "route": route, "lo": part.lo, "hi": part.hi}


def prune_partition(
    conn: psycopg.Connection[Any],
    part: Partition,
    cutoffs: Mapping[str, datetime],
    route: str | None,
    write_counters: Callable[[psycopg.Connection[Any], dict[tuple[str, str], int]], None],
) -> Outcome:
    """Drop or rewrite one partition pair in the caller's transaction, deciding again under the lock (a task may
    have been retried since :func:`sort` looked).

    Takes ACCESS EXCLUSIVE on ``tasks`` and ``task_logs`` first, so reads and writes of tasks wait from the count
    to the commit (a fraction of a second to drop a partition of a million tasks, seconds to rewrite one; see
    bench/partition_bench.py). A weaker lock would have to be raised for the DETACH, and a transaction that read
    tasks and then writes them (an import) would deadlock with it. The wait for the lock is bounded
    (``LOCK_WAIT``): the caller tries again later rather than hold every query behind it.
    """
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_WAIT,))
    conn.execute("LOCK TABLE tasks, task_logs IN ACCESS EXCLUSIVE MODE")
    conn.execute("SELECT set_config('lock_timeout', '0', true)")
    row = conn.execute("SELECT deleted FROM task_partitions WHERE lo = %s", (part.lo,)).fetchone()
    outcome = sort(conn, part, cutoffs, route, int(row[0]) if row else 0)
    if outcome.how == "rewrite":
        _rewrite(conn, part, _params(part, cutoffs, route))
        conn.execute("UPDATE task_partitions SET deleted = 0 WHERE lo = %s", (part.lo,))
    elif outcome.how == "drop":
        for table, name in (("tasks", part.tasks), ("task_logs", part.logs)):
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(table), name))
            conn.execute(sql.SQL("DROP TABLE {}").format(name))
        conn.execute("DELETE FROM task_partitions WHERE lo = %s", (part.lo,))
    else:
        return outcome
    write_counters(conn, {key: -n for key, n in outcome.gone.items()})
    return outcome


def _rewrite(conn: psycopg.Connection[Any], part: Partition, params: dict[str, Any]) -> None:
    """Copy the staying tasks and their logs into a fresh pair and swap it in for the old one."""
    for table, column, old in (("tasks", "id", part.tasks), ("task_logs", "task_id", part.logs)):
        new = sql.Identifier(f"{table}_{part.lo}_new")
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
                new, sql.Identifier(table)
            )
        )
        if table == "tasks":
            conn.execute(sql.SQL("INSERT INTO {} ").format(new) + sql.SQL(_STAYING).format(part=old), params)
        else:
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT l.* FROM {} l WHERE l.task_id IN (SELECT id FROM {})").format(
                    new, old, sql.Identifier(f"tasks_{part.lo}_new")
                )
            )
        # the range as a constraint first: ATTACH trusts it instead of scanning the rows again
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({col} >= {} AND {col} < {})").format(
                new,
                sql.Identifier(f"{table}_{part.lo}_range"),
                sql.Literal(part.lo),
                sql.Literal(part.hi),
                col=sql.Identifier(column),
            )
        )
    for table, old in (("tasks", part.tasks), ("task_logs", part.logs)):
        new = sql.Identifier(f"{table}_{part.lo}_new")
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(table), old))
        conn.execute(sql.SQL("DROP TABLE {}").format(old))
        conn.execute(_attach(table, new, part))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, old))
        _name_indexes(conn, table, f"{table}_{part.lo}")


def describe(conn: psycopg.Connection[Any]) -> list[PartitionInfo]:
    """Every partition pair with its row estimate and size on disk."""
    rows = conn.execute(
        """
        SELECT p.lo, p.hi,
               GREATEST(c.reltuples, 0)::bigint,
               pg_table_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(l.oid)
        FROM task_partitions p
        JOIN pg_class c ON c.oid = to_regclass(format('tasks_%s', p.lo))
        JOIN pg_class l ON l.oid = to_regclass(format('task_logs_%s', p.lo))
        ORDER BY p.lo
        """
    ).fetchall()
    return [PartitionInfo(*map(int, r)) for r in rows]
