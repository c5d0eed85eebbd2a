"""SQL databases through SQLAlchemy Core: an incremental query as a source, an upsert as a target.

Drivers are blocking, so each connector runs its database work on one thread of its own (SQLite connections must
stay on the thread that made them; the others do not mind). The source reads with a server-side cursor, one
``chunk_size`` page at a time, and remembers the highest cursor value it handed over only in :meth:`commit`, which
the importer calls once the run's tasks are stored.
"""

from __future__ import annotations

import asyncio
import base64
import decimal
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar, Literal, TypeVar

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, Result

from crossdock.connectors.base import BatchTarget, ConnectorContext, Delivered, Options, Source, UrlOrConnection
from crossdock.errors import ConfigError, PermanentError, SourceError, TransientError
from crossdock.tasks import Task

T = TypeVar("T")

#: storage names starting with this are the engine's own, never a project's ``storages:``
CURSOR_STORAGE_PREFIX = "_cursor:"
#: a failing range of this many rows or fewer is written row by row: halving it saves nothing when one of them is
#: bad, and costs nearly twice the statements when most are (1,000 bad rows: 1,511 statements instead of 1,999)
_ONE_BY_ONE = 4


class SqlConnectionOptions(Options):
    """A database reached by URL, shared by the routes that name it (``connections: {erp-db: {type: sql, ...}}``)."""

    type: Literal["sql"] = "sql"
    #: a SQLAlchemy URL: ``postgresql+psycopg://u@host/db``, ``mysql+pymysql://root@host/db``, ``sqlite:///x.db``
    url: str
    #: seconds to wait for the server before the attempt counts as a transient failure
    connect_timeout: float = 10
    #: connections kept open per process
    pool_size: int = Field(default=5, ge=1)


class _Database(UrlOrConnection):
    """Either ``url:`` or ``connection:`` (a ``type: sql`` connection)."""

    url_kind: ClassVar[str] = "a database URL"
    connection_type: ClassVar[str] = "sql"


class CursorOptions(BaseModel):
    """The column that grows with every change; its highest value read is where the next run starts."""

    model_config = ConfigDict(extra="forbid")
    column: str
    #: the value the first run starts from (e.g. ``"1970-01-01"`` or ``0``)
    initial: Any
    #: the bind parameter the query uses, ``:last_value`` by default
    param: str = "last_value"


class SqlSourceOptions(Options, _Database):
    type: Literal["sql"] = "sql"
    #: e.g. ``SELECT * FROM products WHERE updated_at > :last_value ORDER BY updated_at``
    query: str
    #: more bind parameters for the query
    params: dict[str, Any] = Field(default_factory=dict)
    cursor: CursorOptions | None = None
    #: rows fetched (and handed to the importer) at a time
    chunk_size: int = Field(default=1000, ge=1)


class SqlTargetOptions(Options, _Database):
    type: Literal["sql"] = "sql"
    table: str
    #: schema (PostgreSQL) or database (MariaDB) of the table, if not the default one
    schema_: str | None = Field(default=None, alias="schema")
    #: the columns of a unique key: a row with the same key is updated, not duplicated
    key: list[str] = Field(min_length=1)
    #: column -> entity field (dotted path); omitted = every field of the entity is a column of the same name
    columns: dict[str, str] | None = None


# --- shared: engines, threads, errors --------------------------------------------------------------------------


def _database_url(options: _Database, context: ConnectorContext) -> tuple[str, SqlConnectionOptions | None]:
    if options.url:
        return options.url, None
    conn = context.connection(options.connection or "", SqlConnectionOptions, "sql")
    return conn.url, conn


def _create_engine(url: str, conn: SqlConnectionOptions | None) -> Engine:
    timeout = conn.connect_timeout if conn else 10
    args: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    try:
        backend = sa.make_url(url).get_backend_name()
    except sa_exc.ArgumentError as exc:
        raise ConfigError(f"not a database URL: {exc}", key="url") from None
    if backend == "postgresql":
        args["connect_timeout"] = max(int(timeout), 1)
    elif backend in ("mysql", "mariadb"):
        args["connect_timeout"] = max(int(timeout), 1)
        args["charset"] = "utf8mb4"
    elif backend == "sqlite":
        args["timeout"] = timeout
    if conn is not None and backend != "sqlite":
        kwargs["pool_size"] = conn.pool_size
    try:
        return sa.create_engine(url, connect_args=args, **kwargs)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"cannot use database URL: {exc}", key="url") from None


class _Runner:
    """One thread for a connector's blocking database calls."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def _reason(exc: sa_exc.SQLAlchemyError) -> str:
    """The driver's own message, without SQLAlchemy's statement and parameter dump (rows may be private)."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else str(exc)
    return text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__


def _is_transient(exc: sa_exc.SQLAlchemyError) -> bool:
    """Lost or refused connections and timeouts may pass; constraint, data and SQL errors will not."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


# --- values: JSON-safe on the way in, typed on the way out -----------------------------------------------------


def json_safe(value: Any) -> Any:
    """A database value as JSON: decimals keep their digits (str), times are ISO 8601, bytes are base64."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    return str(value)


_CURSOR_TYPES: dict[str, tuple[type[Any], Callable[[Any], Any], Callable[[Any], Any], Any]] = {
    # tag: (python type, to JSON, from JSON, SQLAlchemy bind type)
    "datetime": (datetime, lambda v: v.isoformat(), datetime.fromisoformat, sa.DateTime()),
    "date": (date, lambda v: v.isoformat(), date.fromisoformat, sa.Date()),
    "decimal": (decimal.Decimal, str, decimal.Decimal, sa.Numeric()),
    "int": (int, int, int, sa.BigInteger()),
    "float": (float, float, float, sa.Float()),
    # text is bound untyped, so the server reads "1970-01-01" as whatever the column is (a timestamp, say)
    "str": (str, str, str, sa.types.NullType()),
}


def _cursor_tag(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    for tag, (kind, *_rest) in _CURSOR_TYPES.items():
        if isinstance(value, kind):
            return tag
    return None


def _typed_bind(param: str, value: Any) -> sa.BindParameter[Any]:
    """Bind the cursor with its own type, so each dialect compares like with like (SQLite stores text)."""
    tag = _cursor_tag(value)
    if tag == "datetime" and value.tzinfo is not None:
        return sa.bindparam(param, value, type_=sa.DateTime(timezone=True))
    return sa.bindparam(param, value, type_=_CURSOR_TYPES[tag][3] if tag else None)


# --- source ----------------------------------------------------------------------------------------------------


class SqlSource(Source):
    """Runs one query per import and yields its rows in chunks; with a cursor, only rows changed since last run."""

    options_model = SqlSourceOptions
    options: SqlSourceOptions

    def __init__(self, options: SqlSourceOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._run = _Runner("crossdock-sql-source")
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        #: highest cursor value handed to the importer this run; saved by :meth:`commit`
        self._high: Any = None

    def describe(self) -> str:
        return f"sql {self.options.connection or _safe_url(self.options.url or '')}"

    @property
    def _storage(self) -> str:
        return CURSOR_STORAGE_PREFIX + (self.context.incoming or "default")

    def last_value(self) -> Any:
        """Where this run starts: the stored cursor, else ``cursor.initial``."""
        cursor = self.options.cursor
        if cursor is None:
            return None
        store = self.context.store
        if store is not None:
            saved = store.storage_get(self._storage, cursor.column, now=datetime.now(UTC))
            if isinstance(saved, dict) and saved.get("type") in _CURSOR_TYPES:
                return _CURSOR_TYPES[saved["type"]][2](saved["value"])
        return cursor.initial

    async def pages(self) -> AsyncIterator[list[Any]]:
        url, conn = _database_url(self.options, self.context)
        self._engine = _create_engine(url, conn)
        statement = sa.text(self.options.query)
        params = dict(self.options.params)
        cursor = self.options.cursor
        if cursor is not None:
            statement = statement.bindparams(_typed_bind(cursor.param, self.last_value()))
        try:
            result = await self._run(self._execute, statement, params)
            keys = list(result.keys())
            if cursor is not None and cursor.column not in keys:
                raise SourceError(f"the query returns no column {cursor.column!r} (cursor.column); it has {keys}")
            column = keys.index(cursor.column) if cursor is not None else -1
            while True:
                rows = await self._run(result.fetchmany, self.options.chunk_size)
                if not rows:
                    break
                page = []
                for row in rows:
                    page.append({key: json_safe(value) for key, value in zip(keys, row, strict=True)})
                    if column >= 0:
                        self._advance(row[column])
                yield page
        except sa_exc.SQLAlchemyError as exc:
            raise SourceError(f"{self.describe()}: {self.context.redact(_reason(exc))}") from None

    def _execute(self, statement: sa.TextClause, params: dict[str, Any]) -> Result[Any]:
        assert self._engine is not None
        self._conn = self._engine.connect()
        streaming = self._conn.execution_options(stream_results=True, yield_per=self.options.chunk_size)
        return streaming.execute(statement, params)

    def _advance(self, value: Any) -> None:
        if value is None:
            return
        if _cursor_tag(value) is None:
            raise SourceError(
                f"the cursor column holds a {type(value).__name__}; use a timestamp, date, number or text column"
            )
        if self._high is None or value > self._high:
            self._high = value

    async def commit(self) -> None:
        """Save the highest cursor value read: the run's tasks are stored, so those rows need not come again."""
        cursor = self.options.cursor
        store = self.context.store
        if cursor is None or store is None or self._high is None:
            return
        tag = _cursor_tag(self._high)
        assert tag is not None
        saved = {"type": tag, "value": _CURSOR_TYPES[tag][1](self._high)}
        await asyncio.to_thread(store.storage_put, self._storage, cursor.column, saved, now=datetime.now(UTC))

    async def close(self) -> None:
        await self._run(self._release)
        self._run.shutdown()

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _safe_url(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<invalid url>"


# --- target ----------------------------------------------------------------------------------------------------


class SqlTarget(BatchTarget):
    """Upserts each entity into a table by its key: a re-delivered task updates its row, never adds one."""

    options_model = SqlTargetOptions
    options: SqlTargetOptions

    def __init__(self, options: SqlTargetOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._run = _Runner("crossdock-sql-target")
        self._engine: Engine | None = None
        self._table: sa.Table | None = None
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"sql table {self.options.table}"

    async def deliver_batch(self, items: list[tuple[Task, Any]]) -> list[Delivered | Exception]:
        """One transaction for the batch; if the database refuses it for its data, halves until the bad rows are
        found (see :meth:`_write`), so only their tasks fail and every good row is written once."""
        async with self._lock:
            try:
                table = await self._ready()
            except TransientError as exc:
                return [exc for _ in items]
            rows: list[dict[str, Any] | Exception] = []
            for _task, entity in items:
                try:
                    rows.append(self._row(table, entity))
                except PermanentError as exc:
                    rows.append(exc)
            good = [r for r in rows if isinstance(r, dict)]
            written = iter(await self._run(self._write, table, good) if good else [])
            outcomes: list[Delivered | Exception] = []
            for row in rows:
                if isinstance(row, Exception):
                    outcomes.append(row)
                else:
                    error = next(written)
                    outcomes.append(error if error is not None else self._delivered(row))
            return outcomes

    def _write(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[Exception | None]:
        """Upsert ``rows``: None for each row written, its task's error for each row that was not.

        A range of rows is one transaction. If the database refuses it because of the data, it is split in halves,
        each again one transaction, until the bad rows stand alone: two bad rows in 1,000 cost about 40 short
        statements, not 1,000. A range that fails is rolled back whole and one that commits is never sent again,
        so no row is written twice and each outcome says what happened to its row. A transient error (the
        connection lost, a timeout) ends the batch: what was not committed yet goes to retry unwritten (a commit
        whose answer was lost may have landed; its retry then updates the same row, as any upsert does).
        """
        assert self._engine is not None
        try:
            connection = self._engine.connect()
        except sa_exc.SQLAlchemyError as exc:
            return [self._error(exc)] * len(rows)
        outcomes: list[Exception | None] = [None] * len(rows)
        pending = [(0, len(rows))]  # ranges [start, end), the next one to write last: rows stay in their order
        with connection as conn:
            while pending:
                start, end = pending.pop()
                try:
                    with conn.begin():
                        self._upsert(conn, table, rows[start:end])
                except sa_exc.SQLAlchemyError as exc:
                    if _is_transient(exc):
                        error = self._error(exc)
                        for first, last in [(start, end), *pending]:
                            outcomes[first:last] = [error] * (last - first)
                        break
                    if end - start == 1:
                        outcomes[start] = self._error(exc)
                    elif end - start <= _ONE_BY_ONE:
                        pending += [(i, i + 1) for i in reversed(range(start, end))]
                    else:
                        middle = (start + end) // 2
                        pending += [(middle, end), (start, middle)]
        return outcomes

    def _error(self, exc: sa_exc.SQLAlchemyError) -> Exception:
        message = f"table {self.options.table}: {self.context.redact(_reason(exc))}"
        return TransientError(message) if _is_transient(exc) else PermanentError(message)

    def _delivered(self, row: dict[str, Any]) -> Delivered:
        key = {k: json_safe(row.get(k)) for k in self.options.key}
        return Delivered(
            details={"table": self.options.table, "key": key}, message=f"upserted into {self.options.table}"
        )

    async def _ready(self) -> sa.Table:
        """Connect and read the table's columns once per run; an unreachable server is a transient failure."""
        if self._table is not None:
            return self._table
        try:
            self._table = await self._run(self._reflect)
        except sa_exc.NoSuchTableError:
            raise TransientError(f"table {self.options.table} does not exist") from None
        except sa_exc.SQLAlchemyError as exc:
            raise TransientError(f"table {self.options.table}: {self.context.redact(_reason(exc))}") from None
        missing = [k for k in [*self.options.key, *(self.options.columns or {})] if k not in self._table.c]
        if missing:
            self._table = None
            raise TransientError(f"table {self.options.table} has no column(s) {', '.join(missing)}")
        return self._table

    def _reflect(self) -> sa.Table:
        if self._engine is None:
            url, conn = _database_url(self.options, self.context)
            self._engine = _create_engine(url, conn)
        return sa.Table(self.options.table, sa.MetaData(), autoload_with=self._engine, schema=self.options.schema_)

    def _row(self, table: sa.Table, entity: Any) -> dict[str, Any]:
        if not isinstance(entity, Mapping):
            raise PermanentError(f"the SQL target needs a JSON object per task, got {type(entity).__name__}")
        if self.options.columns is not None:
            data = {column: _lookup(entity, path) for column, path in self.options.columns.items()}
        else:
            unknown = [k for k in entity if k not in table.c]
            if unknown:
                raise PermanentError(
                    f"table {self.options.table} has no column(s) {', '.join(map(str, unknown))}; "
                    "map fields with columns: or drop them in the outgoing transform"
                )
            data = dict(entity)
        missing = [k for k in self.options.key if data.get(k) is None]
        if missing:
            raise PermanentError(f"key column(s) {', '.join(missing)} have no value in the entity")
        return {name: _to_column(table.c[name], value) for name, value in data.items()}

    def _upsert(self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Multi-row statements in the open transaction: up to 1,000 rows each on PostgreSQL, 1 MB on MariaDB."""
        for same_keys in _rounds(rows, self.options.key):
            for columns, group in _by_columns(same_keys):
                conn.execute(_upsert_statement(conn.dialect.name, table, columns, self.options.key), group)

    async def close(self) -> None:
        await self._run(self._dispose)
        self._run.shutdown()

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _rounds(rows: list[dict[str, Any]], key: list[str]) -> list[list[dict[str, Any]]]:
    """The rows split so that no key occurs twice in one list, in order: the first row of each key, then the second.

    One multi-row ``INSERT ... ON CONFLICT DO UPDATE`` cannot touch the same row twice on PostgreSQL; two tasks
    of one key in a batch are two updates, the later one last, as when each row was its own statement.
    """
    seen: dict[tuple[Any, ...], int] = {}
    rounds: list[list[dict[str, Any]]] = []
    for row in rows:
        values = tuple(row.get(k) for k in key)
        try:
            n = seen.get(values, 0)
        except TypeError:  # a JSON column in the key keeps lists and objects: compare their text
            values = (repr(values),)
            n = seen.get(values, 0)
        seen[values] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(row)
    return rounds


def _by_columns(rows: Iterable[dict[str, Any]]) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """Rows with the same columns go in one executemany; entities need not all carry every field."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return list(groups.items())


def _upsert_statement(dialect: str, table: sa.Table, columns: tuple[str, ...], key: list[str]) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE`` (PostgreSQL, SQLite) or ``ON DUPLICATE KEY UPDATE`` (MariaDB, MySQL)."""
    updates = [c for c in columns if c not in key]
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt: Any = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
        if not updates:
            upsert = stmt.on_conflict_do_nothing(index_elements=key)
        else:
            upsert = stmt.on_conflict_do_update(index_elements=key, set_={c: stmt.excluded[c] for c in updates})
        if dialect == "postgresql":
            # psycopg runs an executemany as one statement per row in an implicit pipeline, and when a row fails
            # there it logs "error ignored terminating <psycopg.Pipeline ...>: pipeline aborted" as it leaves the
            # pipeline, so every such run printed that on stderr. With RETURNING, SQLAlchemy sends multi-row
            # INSERTs instead ("insertmanyvalues": up to 1,000 rows a statement, within the parameter limit):
            # no pipeline, and an error is that statement's own. PyMySQL batches an executemany like that itself.
            upsert = upsert.returning(*(table.c[k] for k in key))
        return upsert
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        my = mysql_insert(table)
        # with nothing to update, "update the key to itself" keeps the row and still succeeds
        return my.on_duplicate_key_update({c: my.inserted[c] for c in (updates or key[:1])})
    raise PermanentError(f"the SQL target cannot upsert on {dialect}; use PostgreSQL, MariaDB/MySQL or SQLite")


def _lookup(entity: Mapping[str, Any], path: str) -> Any:
    value: Any = entity
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _to_column(column: sa.Column[Any], value: Any) -> Any:
    """JSON values into the column's type: ISO text into dates, text into decimals, objects into JSON text."""
    if value is None:
        return None
    try:
        kind = column.type.python_type
    except NotImplementedError:
        kind = object
    try:
        if isinstance(value, str):
            if kind is datetime:
                return datetime.fromisoformat(value)
            if kind is date:
                return date.fromisoformat(value)
            if kind is time:
                return time.fromisoformat(value)
            if kind is decimal.Decimal:
                return decimal.Decimal(value)
        if isinstance(value, dict | list) and kind is not dict and kind is not list:
            return orjson.dumps(value).decode()
    except (ValueError, decimal.InvalidOperation) as exc:
        raise PermanentError(f"column {column.name}: {value!r} is not a valid {kind.__name__} ({exc})") from None
    return value
