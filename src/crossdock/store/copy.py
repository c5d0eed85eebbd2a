"""``crossdock db copy``: move a whole installation to another database (SQLite to PostgreSQL and back).

Every table the schemas hold is listed in :data:`TABLES` (copied row by row, ids kept) or :data:`DERIVED` (rebuilt
on the target); a table or column the copy does not know stops it before anything is written, so a migration that
adds one cannot be forgotten here (``tests/integration/store/test_db_copy.py`` checks both schemas too).

How it stays correct when interrupted and run again: the source is read from one snapshot (SQLite: one read
transaction; PostgreSQL: one ``REPEATABLE READ`` transaction); every table is written in batches in key order, one
target transaction per batch. Tables keyed by an id resume after the target's highest id (the target holds a
prefix of them); the others go in with ``ON CONFLICT DO NOTHING``. A target holding rows the source does not have
(another installation) is refused unless ``force`` empties it first. Task counters are recounted on the target
from the copied tasks (PostgreSQL shards them), and id sequences are advanced past the source's, so the target
never hands out an id that a log line or an audit entry already names.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from crossdock.errors import CrossdockError
from crossdock.redact import redact_url
from crossdock.store import backend_name, open_store, sqlite_path
from crossdock.store.base import Store
from crossdock.store.sqlfiles import load_migrations


@dataclass(frozen=True)
class Table:
    """One table as both schemas hold it: its columns with their kind, and the key it is copied in order of."""

    name: str
    #: (column, kind): ``int``, ``text``, ``blob`` (BLOB / bytea), ``ts`` (REAL unix seconds / timestamptz),
    #: ``json`` (JSON bytes in a BLOB / jsonb), ``bool`` (INTEGER 0/1 / boolean)
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]

    @property
    def by_id(self) -> bool:
        """Keyed by an integer id: resumed after the target's highest, and its id sequence advanced."""
        return self.key == ("id",)

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]


def _cols(spec: str) -> tuple[tuple[str, str], ...]:
    return tuple((p.split(":")[0], p.split(":")[1]) for p in spec.split())


TABLES: tuple[Table, ...] = (
    Table(
        "tasks",
        _cols(
            "id:int route:text identifier:text status:text attempts:int created_at:ts updated_at:ts "
            "next_attempt_at:ts lease_until:ts worker:text error:text fingerprint:blob seen_count:int "
            "last_seen_at:ts run_id:int related_task_id:int priority:int entity:blob raw:text result:blob"
        ),
        ("id",),
    ),
    Table(
        "task_logs",
        _cols(
            "id:int task_id:int at:ts level:text phase:text actor:text from_status:text to_status:text "
            "message:text details:json"
        ),
        ("id",),
    ),
    Table(
        "runs",
        _cols(
            "id:int route:text part:text started_at:ts finished_at:ts status:text summary:json error:text "
            "actor:text owner:text heartbeat_at:ts"
        ),
        ("id",),
    ),
    Table("storage", _cols("name:text key:text value:json expires_at:ts"), ("name", "key")),
    Table(
        "route_state",
        _cols("route:text active:bool incoming_next:ts outgoing_next:ts updated_at:ts paused_reason:text paused_at:ts"),
        ("route",),
    ),
    Table(
        "tokens",
        _cols("id:int name:text role:text token_hash:text created_at:ts last_used:ts revoked:bool"),
        ("id",),
    ),
    Table("audit", _cols("id:int at:ts actor:text action:text target:json changed:int detail:text"), ("id",)),
    Table("throughput", _cols("minute:int route:text kind:text n:int"), ("minute", "route", "kind")),
    Table(
        "idempotency_keys",
        _cols("scope:text key:text fingerprint:text created_at:ts expires_at:ts response:json"),
        ("scope", "key"),
    ),
    Table(
        "circuits",
        _cols(
            "key:text state:text failures:int opened_at:ts open_until:ts last_error:text probe_owner:text "
            "probe_at:ts updated_at:ts"
        ),
        ("key",),
    ),
    Table(
        "alerts",
        _cols(
            "id:int created_at:ts rule:text event:text route:text channel:text subject:text message:json "
            "status:text attempts:int next_attempt_at:ts sent_at:ts error:text"
        ),
        ("id",),
    ),
    Table("alert_state", _cols("key:text state:json updated_at:ts"), ("key",)),
)
BY_NAME = {t.name: t for t in TABLES}

#: tables not copied row by row, and why
DERIVED: dict[str, str] = {
    "counters": "recounted on the target from the copied tasks (PostgreSQL shards them per connection)",
    "task_seen": "SQLite's poll touches: folded into tasks.seen_count and tasks.last_seen_at",
    "meta": "SQLite's next task id: the target's task id sequence is advanced past it",
    "schema_migrations": "PostgreSQL's applied migrations: the target's own migrations write it",
    "delta_latest": "PostgreSQL's pointer to each identifier's latest task: rebuilt on the target from the tasks",
    "task_partitions": "PostgreSQL's task partitions: the target creates its own for the ids it receives",
    "task_partitioning": "PostgreSQL's partition size: the target keeps its own",
}

#: columns a backend holds beyond the shared ones: PostgreSQL shards throughput (summed on read, shard 0 on write)
EXTRA_COLUMNS: dict[tuple[str, str], dict[str, Any]] = {("postgresql", "throughput"): {"shard": 0}}

#: rows per batch (one target transaction each)
BATCH = 20_000

#: rows a resumed copy compares at each end of a table the target already holds
SAMPLE = 50


def latest_version(backend: str) -> int:
    """The schema version this crossdock migrates ``backend`` to."""
    package = {"sqlite": "crossdock.store.sqlite", "postgresql": "crossdock.store.postgres"}[backend]
    return max(v for v, _, _ in load_migrations(package))


# --- the two backends ---------------------------------------------------------------------------------


def _raw_json(value: Any) -> Any:
    """JSON already serialised (bytes from SQLite, text from PostgreSQL) passes into jsonb without a parse."""
    return value


class _End:
    """One side of a copy: one connection of its own, the source inside a snapshot."""

    backend: str
    url: str

    def snapshot(self) -> None:
        """Read everything from here on from one consistent state of the database."""
        raise NotImplementedError

    def tables(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def version(self) -> int | None:
        raise NotImplementedError

    def count(self, table: Table) -> int:
        raise NotImplementedError

    def max_id(self, table: Table) -> int:
        raise NotImplementedError

    def rows(self, table: Table, *, after: int | None, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        raise NotImplementedError

    def find(self, table: Table, key: Sequence[Any]) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def ends(self, table: Table, n: int) -> list[tuple[Any, ...]]:
        """The first and last ``n`` rows by key."""
        raise NotImplementedError

    def count_upto(self, table: Table, last_id: int) -> int:
        raise NotImplementedError

    def id_high_water(self, table: Table) -> int:
        """The highest id this database has handed out for ``table`` (pruned rows included, where it knows)."""
        return self.max_id(table)

    def counter_keys(self) -> set[tuple[str, str]]:
        raise NotImplementedError

    def converters(self, table: Table, to: str) -> list[tuple[int, Callable[[Any], Any]]]:
        raise NotImplementedError

    def write(self, table: Table, rows: list[tuple[Any, ...]], *, fresh: bool) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def finish(self, high_water: dict[str, int], counter_keys: set[tuple[str, str]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _comparable(table: Table, row: Sequence[Any]) -> tuple[Any, ...]:
    """A row as both backends agree on it: times to the microsecond, JSON parsed, flags as booleans."""
    out: list[Any] = []
    for (_, kind), value in zip(table.columns, row, strict=True):
        if value is None:
            out.append(None)
        elif kind == "ts":
            out.append(round(_seconds(value) * 1_000_000))
        elif kind == "json":
            out.append(orjson.loads(value))
        elif kind == "bool":
            out.append(bool(value))
        elif kind == "blob":
            out.append(bytes(value))
        else:
            out.append(value)
    return tuple(out)


class _SQLiteEnd(_End):
    backend = "sqlite"

    def __init__(self, url: str, path: Path, *, create: bool) -> None:
        self.url = url
        self.path = path
        if not create and not path.exists():
            raise CrossdockError(
                f"there is no SQLite database at {path.resolve()}; check --db or the config's database:"
            )
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA cache_size = -65536")

    def snapshot(self) -> None:
        # WAL: every read until COMMIT sees the database as it was at the first one
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()

    def tables(self) -> dict[str, list[str]]:
        names = [
            r[0]
            for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: [r[1] for r in self.conn.execute(f'PRAGMA table_info("{n}")')] for n in names}

    def version(self) -> int | None:
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        return version or None

    def _select(self, table: Table) -> str:
        if table.name == "tasks":
            # a task's seen count is its own plus its poll touches (migration 0005)
            cols = [
                "tasks.seen_count + COALESCE(s.seen, 0)"
                if c == "seen_count"
                else "COALESCE(s.last_seen_at, tasks.last_seen_at)"
                if c == "last_seen_at"
                else f"tasks.{c}"
                for c in table.names
            ]
            return f"SELECT {', '.join(cols)} FROM tasks LEFT JOIN task_seen s ON s.task_id = tasks.id"
        return f"SELECT {', '.join(table.names)} FROM {table.name}"

    def count(self, table: Table) -> int:
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table.name}").fetchone()[0])

    def max_id(self, table: Table) -> int:
        return int(self.conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table.name}").fetchone()[0])

    def count_upto(self, table: Table, last_id: int) -> int:
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table.name} WHERE id <= ?", (last_id,)).fetchone()[0])

    def id_high_water(self, table: Table) -> int:
        high = self.max_id(table)
        if table.name == "tasks":
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'next_task_id'").fetchone()
            high = max(high, int(row[0]) - 1 if row else 0)
        return high

    def rows(self, table: Table, *, after: int | None, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        prefix = "tasks." if table.name == "tasks" else ""
        where = f" WHERE {prefix}id > ?" if after is not None else ""
        order = ", ".join(prefix + k for k in table.key)
        cur = self.conn.execute(f"{self._select(table)}{where} ORDER BY {order}", (after,) if after is not None else ())
        while chunk := cur.fetchmany(batch):
            yield chunk

    def find(self, table: Table, key: Sequence[Any]) -> tuple[Any, ...] | None:
        prefix = "tasks." if table.name == "tasks" else ""
        where = " AND ".join(f"{prefix}{k} = ?" for k in table.key)
        row = self.conn.execute(f"{self._select(table)} WHERE {where}", tuple(key)).fetchone()
        return tuple(row) if row is not None else None

    def ends(self, table: Table, n: int) -> list[tuple[Any, ...]]:
        prefix = "tasks." if table.name == "tasks" else ""
        found: list[tuple[Any, ...]] = []
        for direction in ("ASC", "DESC"):
            order = ", ".join(f"{prefix}{k} {direction}" for k in table.key)
            found += self.conn.execute(f"{self._select(table)} ORDER BY {order} LIMIT ?", (n,)).fetchall()
        return found

    def counter_keys(self) -> set[tuple[str, str]]:
        return {(r, s) for r, s in self.conn.execute("SELECT route, status FROM counters")}

    def converters(self, table: Table, to: str) -> list[tuple[int, Callable[[Any], Any]]]:
        if to == "sqlite":
            return []
        from psycopg.types.json import Jsonb

        def stamp(v: float) -> datetime:
            return datetime.fromtimestamp(v, UTC)

        def jsonb(v: bytes | str) -> Jsonb:
            return Jsonb(v, dumps=_raw_json)

        kinds: dict[str, Callable[[Any], Any]] = {"ts": stamp, "json": jsonb, "bool": bool}
        return [(i, kinds[k]) for i, (_, k) in enumerate(table.columns) if k in kinds]

    def write(self, table: Table, rows: list[tuple[Any, ...]], *, fresh: bool) -> None:
        cols = table.names
        sql = (
            f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            "ON CONFLICT DO NOTHING"
        )
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(sql, rows)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def clear(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        for name in [*BY_NAME, "counters", "task_seen"]:
            self.conn.execute(f"DELETE FROM {name}")
        self.conn.execute("COMMIT")

    def finish(self, high_water: dict[str, int], counter_keys: set[tuple[str, str]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("DELETE FROM task_seen")
            self.conn.execute("DELETE FROM counters")
            self.conn.execute(
                "INSERT INTO counters (route, status, n) "
                "SELECT route, status, COUNT(*) FROM tasks GROUP BY route, status"
            )
            self.conn.executemany(
                "INSERT INTO counters (route, status, n) VALUES (?, ?, 0) ON CONFLICT DO NOTHING", sorted(counter_keys)
            )
            # the next task id (SQLite hands task ids out from meta); other tables take MAX(id) + 1 by themselves
            self.conn.execute(
                "UPDATE meta SET value = CAST(MAX(CAST(value AS INTEGER), ?) AS TEXT) WHERE key = 'next_task_id'",
                (max(high_water.get("tasks", 0), self.max_id(BY_NAME["tasks"])) + 1,),
            )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        with suppress(sqlite3.Error):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        self.conn.close()


class _PostgresEnd(_End):
    backend = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        from crossdock.store.postgres.store import conninfo

        self.url = url
        try:
            self.conn = psycopg.connect(conninfo(url), autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CrossdockError(f"cannot connect to {redact_url(url)}: {first}") from None
        self.conn.execute("SET TIME ZONE 'UTC'")
        self._types: dict[str, list[int]] = {}

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        row = self.conn.execute(sql, params).fetchone()
        assert row is not None, sql
        return tuple(row)

    def snapshot(self) -> None:
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self.conn.execute("SELECT 1").fetchone()

    def tables(self) -> dict[str, list[str]]:
        rows = self.conn.execute(
            "SELECT c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "ORDER BY c.relname, a.attnum"
        ).fetchall()
        found: dict[str, list[str]] = {}
        for name, column in rows:
            found.setdefault(name, []).append(column)
        return found

    def version(self) -> int | None:
        if self._one("SELECT to_regclass('schema_migrations')")[0] is None:
            return None
        row = self._one("SELECT MAX(version) FROM schema_migrations")
        return int(row[0]) if row[0] is not None else None

    def _select(self, table: Table) -> str:
        if table.name == "throughput":
            # shards summed: one row per (minute, route, kind), as SQLite keeps it
            return "SELECT minute, route, kind, SUM(n)::bigint FROM throughput GROUP BY minute, route, kind"
        cols = [f"{c}::text" if k == "json" else c for c, k in table.columns]
        return f"SELECT {', '.join(cols)} FROM {table.name}"

    def count(self, table: Table) -> int:
        if table.name == "throughput":
            sql = "SELECT COUNT(*) FROM (SELECT 1 FROM throughput GROUP BY minute, route, kind) g"
        else:
            sql = f"SELECT COUNT(*) FROM {table.name}"
        return int(self._one(sql)[0])

    def max_id(self, table: Table) -> int:
        return int(self._one(f"SELECT COALESCE(MAX(id), 0) FROM {table.name}")[0])

    def count_upto(self, table: Table, last_id: int) -> int:
        return int(self._one(f"SELECT COUNT(*) FROM {table.name} WHERE id <= %s", (last_id,))[0])

    def _sequence(self, table: Table) -> str | None:
        row = self.conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table.name,)).fetchone()
        return row[0] if row else None

    def id_high_water(self, table: Table) -> int:
        high = self.max_id(table)
        seq = self._sequence(table)
        if seq is not None:
            last, called = self._one(f"SELECT last_value, is_called FROM {seq}")
            high = max(high, int(last) if called else int(last) - 1)
        return high

    def _order(self, table: Table, direction: str = "") -> str:
        return ", ".join(f"{k} {direction}" for k in table.key)

    def rows(self, table: Table, *, after: int | None, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        where = " WHERE id > %s" if after is not None else ""
        sql = f"{self._select(table)}{where} ORDER BY {self._order(table)}"
        with self.conn.cursor(name=f"copy_{table.name}", binary=True) as cur:
            cur.itersize = batch
            cur.execute(sql, (after,) if after is not None else None)
            while chunk := cur.fetchmany(batch):
                yield chunk

    def find(self, table: Table, key: Sequence[Any]) -> tuple[Any, ...] | None:
        if table.name == "throughput":
            sql = (
                "SELECT minute, route, kind, SUM(n)::bigint FROM throughput "
                "WHERE minute = %s AND route = %s AND kind = %s GROUP BY minute, route, kind"
            )
        else:
            sql = f"{self._select(table)} WHERE " + " AND ".join(f"{k} = %s" for k in table.key)
        row = self.conn.execute(sql, tuple(key)).fetchone()
        return tuple(row) if row is not None else None

    def ends(self, table: Table, n: int) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        for direction in ("ASC", "DESC"):
            found += self.conn.execute(
                f"{self._select(table)} ORDER BY {self._order(table, direction)} LIMIT %s", (n,)
            ).fetchall()
        return found

    def counter_keys(self) -> set[tuple[str, str]]:
        return {(r, s) for r, s in self.conn.execute("SELECT DISTINCT route, status FROM counters")}

    def converters(self, table: Table, to: str) -> list[tuple[int, Callable[[Any], Any]]]:
        if to == "postgresql":
            from psycopg.types.json import Jsonb

            def jsonb(v: str) -> Jsonb:
                return Jsonb(v, dumps=_raw_json)

            return [(i, jsonb) for i, (_, k) in enumerate(table.columns) if k == "json"]

        def seconds(v: datetime) -> float:
            return v.timestamp()

        def json_bytes(v: str) -> bytes:
            return v.encode()

        kinds: dict[str, Callable[[Any], Any]] = {"ts": seconds, "json": json_bytes, "bool": int}
        return [(i, kinds[k]) for i, (_, k) in enumerate(table.columns) if k in kinds]

    def _columns(self, table: Table) -> tuple[list[str], list[int]]:
        extra = EXTRA_COLUMNS.get((self.backend, table.name), {})
        cols = [*table.names, *extra]
        if table.name not in self._types:
            oids: dict[str, int] = dict(
                self.conn.execute(
                    "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                    "AND NOT attisdropped",
                    (table.name,),
                ).fetchall()
            )
            self._types[table.name] = [int(oids[c]) for c in cols]
        return cols, self._types[table.name]

    def write(self, table: Table, rows: list[tuple[Any, ...]], *, fresh: bool) -> None:
        """Binary COPY: straight into a table keyed by id (the target holds none past the resume point), through
        a temporary table and ``ON CONFLICT DO NOTHING`` into one keyed by its content."""
        cols, types = self._columns(table)
        extra = tuple(EXTRA_COLUMNS.get((self.backend, table.name), {}).values())
        with self.conn.transaction():
            if table.name == "tasks" and rows and self._partitioned():
                from crossdock.store.postgres import partitions

                partitions.ensure(self.conn, max(row[0] for row in rows))
            into = table.name
            if not fresh:
                into = f"copy_stage_{table.name}"
                self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {into} (LIKE {table.name}) ON COMMIT DELETE ROWS")
            with self.conn.cursor().copy(f"COPY {into} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                write = copy.write_row
                if extra:
                    for row in rows:
                        write((*row, *extra))
                else:
                    for row in rows:
                        write(row)
            if not fresh:
                names = ", ".join(cols)
                self.conn.execute(
                    f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {into} ON CONFLICT DO NOTHING"
                )

    def _partitioned(self) -> bool:
        return self._one("SELECT to_regclass('task_partitions') IS NOT NULL")[0] is True

    def clear(self) -> None:
        names = ", ".join([*BY_NAME, "counters", *(["delta_latest"] if self._partitioned() else [])])
        self.conn.execute(f"TRUNCATE {names}")

    def finish(self, high_water: dict[str, int], counter_keys: set[tuple[str, str]]) -> None:
        with self.conn.transaction():
            if self._partitioned():
                # each identifier's newest fingerprinted task, as the source's delta compares with it
                self.conn.execute("DELETE FROM delta_latest")
                self.conn.execute(
                    "INSERT INTO delta_latest (route, identifier, task_id) "
                    "SELECT DISTINCT ON (route, identifier) route, identifier, id FROM tasks "
                    "WHERE identifier IS NOT NULL AND fingerprint IS NOT NULL ORDER BY route, identifier, id DESC"
                )
            self.conn.execute("DELETE FROM counters")
            self.conn.execute(
                "INSERT INTO counters (route, status, shard, n) "
                "SELECT route, status, 0, COUNT(*) FROM tasks GROUP BY route, status"
            )
            keys = sorted(counter_keys)
            self.conn.execute(
                "INSERT INTO counters (route, status, shard, n) SELECT r, s, 0, 0 FROM unnest(%s::text[], %s::text[]) "
                "AS k(r, s) ON CONFLICT DO NOTHING",
                ([k[0] for k in keys], [k[1] for k in keys]),
            )
            # past every id the source handed out: a new task, run or audit entry never takes one already named
            for table in TABLES:
                seq = self._sequence(table) if table.by_id else None
                if seq is None:
                    continue
                high = max(high_water.get(table.name, 0), self.max_id(table))
                if high > 0:
                    self.conn.execute("SELECT setval(%s, GREATEST(%s, (SELECT last_value FROM " + seq + ")))",
                                      (seq, high))  # fmt: skip

    def close(self) -> None:
        self.conn.close()


def _open_end(url: str, base: Path | None, *, target: bool) -> _End:
    kind = backend_name(url)
    if kind == "sqlite":
        return _SQLiteEnd(url, sqlite_path(url, base), create=target)
    if kind == "postgresql":
        return _PostgresEnd(url)
    raise CrossdockError(f"db copy needs a SQLite or PostgreSQL database, not {redact_url(url)}")


# --- the copy -----------------------------------------------------------------------------------------


def schema_problems(tables: dict[str, list[str]], backend: str) -> list[str]:
    """What a schema holds that the copy does not know (or lacks what it expects): empty when it can be copied."""
    problems: list[str] = []
    for name, columns in sorted(tables.items()):
        if name in DERIVED:
            continue
        table = BY_NAME.get(name)
        if table is None:
            problems.append(f"table {name} is not known to db copy")
            continue
        expected = set(table.names) | set(EXTRA_COLUMNS.get((backend, name), {}))
        if set(columns) != expected:
            unknown = sorted(set(columns) - expected)
            missing = sorted(expected - set(columns))
            problems.append(f"table {name}: columns not known to db copy {unknown}, missing {missing}")
    for name in sorted(set(BY_NAME) - set(tables)):
        problems.append(f"table {name} is missing")
    return problems


@dataclass
class TableCopy:
    """One table: rows in the source, rows in the target after the copy, rows this run wrote."""

    name: str
    source: int
    target: int = 0
    copied: int = 0

    @property
    def ok(self) -> bool:
        return self.source == self.target


@dataclass
class CopyReport:
    source: str
    target: str
    tables: list[TableCopy]
    resumed: bool
    forced: bool
    seconds: float = 0.0
    #: target counters minus COUNT(*) per route and status (``stats --verify`` on the target)
    drift: dict[str, dict[str, int]] = field(default_factory=dict)
    #: routes and statuses whose task count differs between the source and the target
    recount_diff: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and not self.drift and not self.recount_diff

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "mismatch",
            "source": self.source,
            "target": self.target,
            "resumed": self.resumed,
            "forced": self.forced,
            "seconds": round(self.seconds, 3),
            "tables": {t.name: {"source": t.source, "target": t.target, "copied": t.copied} for t in self.tables},
            "drift": self.drift,
            "recount_diff": self.recount_diff,
        }


def _check_version(end: _End, *, role: str) -> int | None:
    version = end.version()
    latest = latest_version(end.backend)
    url = redact_url(end.url)
    if version is None:
        if role == "source":
            raise CrossdockError(f"the source {url} holds no crossdock schema; check --db or the config's database:")
        return None
    if version > latest:
        raise CrossdockError(
            f"the {role} {url} has schema version {version}, newer than this crossdock knows ({latest} on "
            f"{end.backend}); run db copy with the crossdock version that wrote it"
        )
    if version < latest:
        flag = "" if role == "source" else f" --db {url}"
        raise CrossdockError(
            f"the {role} {url} has schema version {version}, older than the {latest} this crossdock copies; run "
            f"`crossdock db upgrade{flag}` first (with every crossdock process on it stopped), then copy"
        )
    return version


def _guard_idle(store: Store, *, role: str, url: str, now: datetime) -> Any:
    """Refuse while a scheduler holds the database's leader lock or a live run works on it; return the lock, held
    by this process until the copy ends, so no scheduler starts meanwhile."""
    from crossdock.engine.leader import leader_lock_for
    from crossdock.engine.run_liveness import death_of

    lock = leader_lock_for(store)
    if not lock.acquire():
        raise CrossdockError(
            f"a crossdock scheduler is running on the {role} {redact_url(url)} ({lock.describe()} is held); "
            "stop `crossdock serve` and every `crossdock worker` on it, then copy"
        )
    live = [r for r in store.running_runs() if death_of(r, now=now) is None]
    if live:
        lock.release()
        named = ", ".join(f"{r.id} ({r.route} {r.part}, {r.owner or 'unknown owner'})" for r in live[:5])
        raise CrossdockError(
            f"runs are still running on the {role} {redact_url(url)}: {named}; stop every crossdock process on it "
            "(serve, worker, run), then copy"
        )
    return lock


def _foreign(source: _End, target: _End, table: Table) -> str | None:
    """Why the target's rows of ``table`` are not (a part of) the source's, or None when they are."""
    count = target.count(table)
    if count == 0:
        return None
    if table.by_id:
        last = target.max_id(table)
        if source.count_upto(table, last) != count:
            return f"{table.name}: the target holds {count:,} rows up to id {last}, the source another number"
    elif count > source.count(table):
        return f"{table.name}: the target holds more rows ({count:,}) than the source"
    for row in target.ends(table, SAMPLE):
        key = [row[table.names.index(k)] for k in table.key]
        theirs = source.find(table, key)
        if theirs is None or _comparable(table, theirs) != _comparable(table, row):
            shown = ", ".join(f"{k}={v!r}" for k, v in zip(table.key, key, strict=True))
            return f"{table.name}: the row {shown} differs from the source's"
    return None


def _recount(store: Store) -> dict[str, dict[str, int]]:
    return {route: {s: n for s, n in counts.items() if n} for route, counts in store.recount().items()}


def _difference(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    diff: dict[str, dict[str, int]] = {}
    for route in set(a) | set(b):
        for status in set(a.get(route, {})) | set(b.get(route, {})):
            d = a.get(route, {}).get(status, 0) - b.get(route, {}).get(status, 0)
            if d:
                diff.setdefault(route, {})[status] = d
    return diff


def copy_database(
    source_url: str,
    target_url: str,
    *,
    base: Path | None = None,
    force: bool = False,
    batch: int = BATCH,
    progress: Callable[[str, int, int], None] | None = None,
) -> CopyReport:
    """Copy everything in ``source_url`` into ``target_url`` (created and migrated when empty), then verify.

    ``progress(table, copied, total)`` is called after each committed batch."""
    started = time.monotonic()
    if backend_name(source_url) == "memory" or backend_name(target_url) == "memory":
        raise CrossdockError("db copy needs a SQLite or PostgreSQL database on both sides, not memory:")
    source = _open_end(source_url, base, target=False)
    target: _End | None = None
    stores: list[Store] = []
    locks: list[Any] = []
    try:
        _check_version(source, role="source")
        problems = schema_problems(source.tables(), source.backend)
        if problems:
            raise CrossdockError(
                f"the source {redact_url(source_url)} holds what this crossdock cannot copy ({'; '.join(problems)}); "
                "copy with the crossdock version that created it"
            )
        target = _open_end(target_url, base, target=True)
        if source.backend == target.backend and _same_database(source, target):
            raise CrossdockError("--to names the source database itself; give another database")
        fresh_schema = _check_version(target, role="target") is None
        now = datetime.now(UTC)
        source_store = open_store(source_url, base=base, upgrade=False)
        stores.append(source_store)
        locks.append(_guard_idle(source_store, role="source", url=source_url, now=now))
        target_store = open_store(target_url, base=base, upgrade=fresh_schema)
        stores.append(target_store)
        locks.append(_guard_idle(target_store, role="target", url=target_url, now=now))
        problems = schema_problems(target.tables(), target.backend)
        if problems:
            raise CrossdockError(f"the target {redact_url(target_url)} has another schema ({'; '.join(problems)})")

        source.snapshot()
        held = {t.name for t in TABLES if target.count(t)}
        if held and force:
            target.clear()
            held = set()
        elif held:
            for table in TABLES:
                why = _foreign(source, target, table) if table.name in held else None
                if why is not None:
                    raise CrossdockError(
                        f"the target {redact_url(target_url)} already holds other data ({why}); pass --force to "
                        "replace everything in it with the source's data, or copy into an empty database"
                    )
        report = CopyReport(redact_url(source_url), redact_url(target_url), [], resumed=bool(held), forced=force)
        high_water: dict[str, int] = {}
        for table in TABLES:
            total = source.count(table)
            entry = TableCopy(table.name, total)
            report.tables.append(entry)
            after = target.max_id(table) if table.by_id else None
            if table.by_id:
                high_water[table.name] = source.id_high_water(table)
            convert = source.converters(table, target.backend)
            for chunk in source.rows(table, after=after, batch=batch):
                rows = _converted(chunk, convert)
                target.write(table, rows, fresh=table.by_id)
                entry.copied += len(rows)
                if progress is not None:
                    progress(table.name, entry.copied, total)
        target.finish(high_water, source.counter_keys())
        for entry in report.tables:
            entry.target = target.count(BY_NAME[entry.name])
        stats = target_store.stats()
        report.drift = _difference(
            {r: {s: n for s, n in c.items() if n} for r, c in stats.by_route.items()}, _recount(target_store)
        )
        report.recount_diff = _difference(_recount(source_store), _recount(target_store))
        report.seconds = time.monotonic() - started
        return report
    finally:
        for lock in locks:
            lock.release()
        for store in stores:
            store.close()
        source.close()
        if target is not None:
            target.close()


def _converted(chunk: list[Any], convert: list[tuple[int, Callable[[Any], Any]]]) -> list[tuple[Any, ...]]:
    if not convert:
        return chunk
    out: list[tuple[Any, ...]] = []
    for row in chunk:
        values = list(row)
        for i, fn in convert:
            v = values[i]
            if v is not None:
                values[i] = fn(v)
        out.append(tuple(values))
    return out


def _same_database(a: _End, b: _End) -> bool:
    if isinstance(a, _SQLiteEnd) and isinstance(b, _SQLiteEnd):
        with suppress(OSError):
            return a.path.resolve() == b.path.resolve()
        return False
    if isinstance(a, _PostgresEnd) and isinstance(b, _PostgresEnd):
        info = "SELECT current_database(), inet_server_addr()::text, inet_server_port(), pg_postmaster_start_time()"
        return bool(a.conn.execute(info).fetchone() == b.conn.execute(info).fetchone())
    return False
