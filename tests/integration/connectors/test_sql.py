"""The SQL source and target on PostgreSQL, MariaDB and SQLite: the same tests, the same config, only the URL differs.

Each test creates and drops its own table. A server that is not reachable skips its tests locally and fails them
under CI (``CI=true``), so a green CI run means all three databases were really used.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from crossdock.connectors.base import ConnectorContext
from crossdock.connectors.sql import CURSOR_STORAGE_PREFIX, SqlSource, SqlSourceOptions, SqlTarget, SqlTargetOptions
from crossdock.engine.importer import Importer
from crossdock.engine.project import load_project
from crossdock.engine.runner import run_once
from crossdock.errors import PermanentError, SourceError, TransientError
from crossdock.store import Store, open_store
from crossdock.tasks import Status, Task

SERVERS = {
    "postgresql": ("postgresql+psycopg://postgres@127.0.0.1:5432/test", 5432),
    "mariadb": ("mysql+pymysql://root@127.0.0.1:3306/test", 3306),
}


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(str(request.param), tmp_path)


@pytest.fixture(params=["postgresql", "mariadb"])
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(str(request.param), tmp_path)


def _url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'external.db'}"
    url, port = SERVERS[backend]
    if not _reachable(port):
        why = f"{backend} is not reachable on 127.0.0.1:{port}"
        if os.environ.get("CI") == "true" or os.environ.get("CROSSDOCK_TEST_REQUIRE_ALL"):
            pytest.fail(why)
        pytest.skip(why)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(db_url)
    yield eng
    eng.dispose()


def products_table(name: str) -> tuple[sa.MetaData, sa.Table]:
    meta = sa.MetaData()
    table = sa.Table(
        name,
        meta,
        sa.Column("sku", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("picture", sa.LargeBinary),
    )
    return meta, table


@pytest.fixture
def table(engine: sa.Engine) -> Iterator[sa.Table]:
    meta, tbl = products_table(f"cd_src_{uuid.uuid4().hex[:10]}")
    meta.create_all(engine)
    yield tbl
    meta.drop_all(engine)


def project_file(tmp_path: Path, source: dict[str, Any], target: dict[str, Any] | None = None) -> Path:
    config = {
        "database": f"sqlite:///{tmp_path / 'crossdock.db'}",
        "routes": {
            "products": {
                "incoming": {"source": source},
                "identifier": "sku",
                "delta": True,
                "outgoing": {"target": target or {"type": "noop"}},
            }
        },
    }
    path = tmp_path / "crossdock.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def crossdock_store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'crossdock.db'}")
    yield store
    store.close()


def incremental_source(url: str, table: str) -> dict[str, Any]:
    return {
        "type": "sql",
        "url": url,
        "query": f"SELECT * FROM {table} WHERE updated_at > :last_value ORDER BY updated_at",
        "cursor": {"column": "updated_at", "initial": "1970-01-01"},
        "chunk_size": 2,
    }


def import_once(path: Path, store: Store) -> dict[str, Any]:
    project = load_project(path)
    store.ensure_routes(project.routes)
    summary = asyncio.run(Importer(project, store).run_route("products"))
    assert summary.status == "ok", summary.error
    return summary.routes["products"].to_json()


def test_incremental_import_reads_only_rows_changed_since_the_last_run(
    engine: sa.Engine, table: sa.Table, tmp_path: Path, crossdock_store: Store, db_url: str
) -> None:
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"sku": "A-1", "name": "anvil", "price": Decimal("10.50"), "updated_at": datetime(2024, 1, 1, 9)},
                {"sku": "B-2", "name": "bolt", "price": Decimal("0.25"), "updated_at": datetime(2024, 1, 1, 10)},
                {"sku": "C-3", "name": "crate", "price": None, "updated_at": datetime(2024, 1, 1, 11)},
            ],
        )
    path = project_file(tmp_path, incremental_source(db_url, table.name))

    first = import_once(path, crossdock_store)
    assert (first["read"], first["new"]) == (3, 3)
    stored = crossdock_store.storage_get(f"{CURSOR_STORAGE_PREFIX}products", "updated_at", now=datetime.now())
    if db_url.startswith("sqlite"):
        # SQLite has no timestamp type: the column holds text, and the cursor is that text
        assert stored == {"type": "str", "value": "2024-01-01 11:00:00.000000"}
    else:
        assert stored == {"type": "datetime", "value": "2024-01-01T11:00:00"}

    with engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.sku == "A-1")
            .values(price=Decimal("11.00"), updated_at=datetime(2024, 1, 2, 8, 30))
        )
        conn.execute(table.insert().values(sku="D-4", name="drill", updated_at=datetime(2024, 1, 2, 9)))

    second = import_once(path, crossdock_store)
    assert second["read"] == 2
    assert second["changed"] == 1
    assert second["by_status"] == {"new": 2}

    third = import_once(path, crossdock_store)
    assert third["read"] == 0


def test_values_become_json_safe(engine: sa.Engine, table: sa.Table, tmp_path: Path, db_url: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            table.insert().values(
                sku="A-1",
                name="anvil",
                price=Decimal("10.50"),
                updated_at=datetime(2024, 3, 4, 5, 6, 7),
                picture=b"\x00\xff",
            )
        )
    options = SqlSourceOptions.model_validate({**incremental_source(db_url, table.name)})
    pages = asyncio.run(_pages(SqlSource(options, ConnectorContext(root=tmp_path))))
    if db_url.startswith("sqlite"):
        # SQLite hands back what it stores: REAL for this numeric column, text for the timestamp
        price, updated_at = 10.5, "2024-03-04 05:06:07.000000"
    else:
        price, updated_at = "10.50", "2024-03-04T05:06:07"
    assert pages == [
        [
            {
                "sku": "A-1",
                "name": "anvil",
                "price": price,
                "updated_at": updated_at,
                "picture": base64.b64encode(b"\x00\xff").decode(),
            }
        ]
    ]


def test_rows_come_in_chunks(engine: sa.Engine, table: sa.Table, tmp_path: Path, db_url: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            table.insert(), [{"sku": f"S-{i}", "name": "x", "updated_at": datetime(2024, 1, 1, 0, i)} for i in range(5)]
        )
    options = SqlSourceOptions.model_validate(incremental_source(db_url, table.name))
    pages = asyncio.run(_pages(SqlSource(options, ConnectorContext(root=tmp_path))))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [r["sku"] for p in pages for r in p] == [f"S-{i}" for i in range(5)]


def test_the_cursor_is_not_saved_when_the_store_write_fails(
    engine: sa.Engine,
    table: sa.Table,
    tmp_path: Path,
    crossdock_store: Store,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with engine.begin() as conn:
        conn.execute(table.insert().values(sku="A-1", name="anvil", updated_at=datetime(2024, 1, 1)))
    path = project_file(tmp_path, incremental_source(db_url, table.name))
    project = load_project(path)
    crossdock_store.ensure_routes(project.routes)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(crossdock_store, "import_batch", broken)
        summary = asyncio.run(Importer(project, crossdock_store).run_route("products"))
    # the run is failed with the cause, and recorded so: {last_run} and the cursor stay where they were
    assert (summary.status, summary.error) == ("failed", "RuntimeError: disk full")
    [run] = crossdock_store.list_runs("products")
    assert (run.status, run.error) == ("failed", "RuntimeError: disk full")
    assert crossdock_store.storage_get(f"{CURSOR_STORAGE_PREFIX}products", "updated_at", now=datetime.now()) is None
    # the next run starts again from the beginning: nothing was lost
    assert import_once(path, crossdock_store)["new"] == 1


def test_a_broken_query_is_a_source_error(tmp_path: Path, db_url: str) -> None:
    options = SqlSourceOptions.model_validate(
        {"type": "sql", "url": db_url, "query": "SELECT * FROM no_such_table_here"}
    )
    with pytest.raises(SourceError, match="no_such_table_here"):
        asyncio.run(_pages(SqlSource(options, ConnectorContext(root=tmp_path))))


def test_an_unreachable_server_is_a_source_error(tmp_path: Path) -> None:
    options = SqlSourceOptions.model_validate(
        {"type": "sql", "url": "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test", "query": "SELECT 1"}
    )
    with pytest.raises(SourceError) as caught:
        asyncio.run(_pages(SqlSource(options, ConnectorContext(root=tmp_path))))
    assert "s3cret" not in caught.value.message


async def _pages(source: SqlSource) -> list[list[Any]]:
    try:
        return [page async for page in source.pages()]
    finally:
        await source.close()


# --- target ----------------------------------------------------------------------------------------------------

#: the one target config for every server: only ``url:`` is added per backend
TARGET: dict[str, Any] = {
    "type": "sql",
    "table": "cd_upsert_products",
    "key": ["sku"],
    "columns": {"sku": "sku", "name": "name", "price": "price.amount", "updated_at": "updated_at"},
}


@pytest.fixture
def target_table(server_url: str) -> Iterator[sa.Table]:
    eng = sa.create_engine(server_url)
    meta, tbl = products_table(TARGET["table"])
    meta.drop_all(eng)
    meta.create_all(eng)
    yield tbl
    meta.drop_all(eng)
    eng.dispose()


def task(n: int) -> Task:
    return Task(id=n, route="products", identifier=f"S-{n}", status=Status.PROCESSING, entity=None)


def entity(n: int, price: str, name: str | None = "thing") -> dict[str, Any]:
    return {"sku": f"S-{n}", "name": name, "price": {"amount": price}, "updated_at": "2024-05-06T07:08:09"}


async def _deliver(options: dict[str, Any], items: list[tuple[Task, Any]]) -> list[Any]:
    target = SqlTarget(SqlTargetOptions.model_validate(options), ConnectorContext())
    await target.open()
    try:
        return await target.deliver_batch(items)
    finally:
        await target.close()


def _rows(url: str, table: sa.Table) -> list[tuple[Any, ...]]:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(table.c.sku, table.c.name, table.c.price).order_by("sku"))]
    finally:
        eng.dispose()


def test_target_upserts_so_a_redelivery_updates_the_row(server_url: str, target_table: sa.Table) -> None:
    options = {**TARGET, "url": server_url}
    outcomes = asyncio.run(_deliver(options, [(task(1), entity(1, "1.00")), (task(2), entity(2, "2.00"))]))
    assert [o.message for o in outcomes] == ["upserted into cd_upsert_products"] * 2
    # the same tasks delivered again (at least once), with a changed price: updated in place
    asyncio.run(_deliver(options, [(task(1), entity(1, "1.50")), (task(2), entity(2, "2.00"))]))
    assert _rows(server_url, target_table) == [("S-1", "thing", Decimal("1.50")), ("S-2", "thing", Decimal("2.00"))]


def test_one_bad_row_fails_only_its_task(server_url: str, target_table: sa.Table) -> None:
    options = {**TARGET, "url": server_url}
    items = [(task(1), entity(1, "1.00")), (task(2), entity(2, "2.00", name=None)), (task(3), entity(3, "3.00"))]
    outcomes = asyncio.run(_deliver(options, items))
    assert not isinstance(outcomes[0], Exception)
    assert isinstance(outcomes[1], PermanentError)
    assert not isinstance(outcomes[2], Exception)
    assert [r[0] for r in _rows(server_url, target_table)] == ["S-1", "S-3"]


@pytest.fixture
def logged_table(db_url: str) -> Iterator[tuple[str, sa.Table, str]]:
    """A fresh products table whose every row insert and update is logged (by a trigger) into a second table, so
    a test sees how often each row was really written; rolled-back writes leave no log line."""
    suffix = uuid.uuid4().hex[:10]
    meta, tbl = products_table(f"cd_up_{suffix}")
    log = f"cd_writes_{suffix}"
    eng = sa.create_engine(db_url)
    meta.create_all(eng)
    with eng.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {log} (sku VARCHAR(32) NOT NULL)")
        if eng.dialect.name == "postgresql":
            conn.exec_driver_sql(
                f"CREATE FUNCTION {log}_f() RETURNS trigger AS $$ BEGIN INSERT INTO {log} VALUES (NEW.sku); "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {log}_t AFTER INSERT OR UPDATE ON {tbl.name} FOR EACH ROW EXECUTE FUNCTION {log}_f()"
            )
        else:
            for event in ("INSERT", "UPDATE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {log}_{event.lower()} AFTER {event} ON {tbl.name} FOR EACH ROW "
                    f"{'BEGIN ' if eng.dialect.name == 'sqlite' else ''}INSERT INTO {log} VALUES (NEW.sku)"
                    f"{'; END' if eng.dialect.name == 'sqlite' else ''}"
                )
    yield db_url, tbl, log
    meta.drop_all(eng)
    with eng.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {log}")
        if eng.dialect.name == "postgresql":
            conn.exec_driver_sql(f"DROP FUNCTION {log}_f()")
    eng.dispose()


def _writes(url: str, log: str) -> dict[str, int]:
    """How many times each SKU was written (committed inserts and updates)."""
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return dict(conn.exec_driver_sql(f"SELECT sku, COUNT(*) FROM {log} GROUP BY sku").all())  # type: ignore[arg-type]
    finally:
        eng.dispose()


def test_bad_rows_are_found_by_halving_and_each_good_row_is_written_once(
    logged_table: tuple[str, sa.Table, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Two bad rows among 1,000: the batch is split in halves until they stand alone. Their tasks fail with the
    database's own error, the 998 others are written exactly once, in a few dozen statements instead of one per
    row, and the driver logs nothing (psycopg used to warn "error ignored terminating <psycopg.Pipeline>")."""
    url, table, log = logged_table
    bad = {300, 700}
    items = [(task(n), entity(n, f"{n}.00", name=None if n in bad else f"n{n}")) for n in range(1, 1001)]
    inserts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", count)
    try:
        with caplog.at_level(logging.WARNING, logger="psycopg"):
            outcomes = asyncio.run(_deliver({**TARGET, "url": url, "table": table.name}, items))
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", count)

    failed = {n for n, outcome in enumerate(outcomes, 1) if isinstance(outcome, Exception)}
    assert failed == bad
    for n in bad:
        error = outcomes[n - 1]
        assert isinstance(error, PermanentError)
        assert error.message.startswith(f"table {table.name}: ")
        assert "name" in error.message and "null" in error.message.lower(), error.message
    writes = _writes(url, log)
    assert len(writes) == 998 and set(writes.values()) == {1}  # every good row once, the bad ones never
    assert f"S-{min(bad)}" not in writes
    assert len(inserts) < 50, len(inserts)  # 39 for these two rows; one per row was 1,001
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []


def test_two_tasks_of_one_key_in_a_batch_both_land_in_order(logged_table: tuple[str, sa.Table, str]) -> None:
    """One multi-row upsert cannot touch a row twice on PostgreSQL: the second task of a key goes in a later
    statement of the same transaction, so both succeed and the later one is what the row holds."""
    url, table, log = logged_table
    first, second = entity(1, "1.00", name="first"), entity(1, "1.50", name="second")
    items = [(task(1), first), (task(2), entity(2, "2.00")), (task(3), second)]
    outcomes = asyncio.run(_deliver({**TARGET, "url": url, "table": table.name}, items))
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert _rows(url, table) == [("S-1", "second", Decimal("1.50")), ("S-2", "thing", Decimal("2.00"))]
    assert _writes(url, log) == {"S-1": 2, "S-2": 1}


def test_a_connection_lost_while_halving_sends_the_unwritten_rows_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What committed stays delivered; what was not written yet is a transient error, never tried again in that
    batch (the server is gone), and nothing is written twice."""
    url = f"sqlite:///{tmp_path / 'external.db'}"
    eng = sa.create_engine(url)
    meta, table = products_table(TARGET["table"])
    meta.create_all(eng)
    calls = []
    upsert = SqlTarget._upsert

    def flaky(self: SqlTarget, conn: sa.Connection, tbl: sa.Table, rows: list[dict[str, Any]]) -> None:
        calls.append(len(rows))
        if len(calls) == 3:  # the whole batch failed (row 900), its first half committed, now the server goes
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        upsert(self, conn, tbl, rows)

    monkeypatch.setattr(SqlTarget, "_upsert", flaky)
    items = [(task(n), entity(n, "1.00", name=None if n == 900 else "thing")) for n in range(1, 1001)]
    outcomes = asyncio.run(_deliver({**TARGET, "url": url}, items))
    assert calls == [1000, 500, 500]
    assert not [o for o in outcomes[:500] if isinstance(o, Exception)]
    assert all(isinstance(o, TransientError) for o in outcomes[500:])
    assert "server closed the connection" in outcomes[999].message
    assert len(_rows(url, table)) == 500
    eng.dispose()


def test_a_server_gone_after_the_table_was_read_is_transient(server_url: str, target_table: sa.Table) -> None:
    async def go() -> list[Any]:
        target = SqlTarget(SqlTargetOptions.model_validate({**TARGET, "url": server_url}), ConnectorContext())
        await target.open()
        try:
            await target.deliver_batch([(task(1), entity(1, "1.00"))])  # connects and reads the table
            assert target._engine is not None
            target._engine.dispose()
            target._engine = sa.create_engine(server_url.replace(":5432/", ":1/").replace(":3306/", ":1/"))
            return await target.deliver_batch([(task(2), entity(2, "2.00")), (task(3), entity(3, "3.00"))])
        finally:
            await target.close()

    outcomes = asyncio.run(go())
    assert all(isinstance(o, TransientError) for o in outcomes), outcomes


def test_a_value_of_the_wrong_type_is_permanent(server_url: str, target_table: sa.Table) -> None:
    bad = {**entity(1, "1.00"), "updated_at": "not a date"}
    [outcome] = asyncio.run(_deliver({**TARGET, "url": server_url}, [(task(1), bad)]))
    assert isinstance(outcome, PermanentError)
    assert "updated_at" in outcome.message


def test_an_unreachable_server_is_transient() -> None:
    options = {**TARGET, "url": "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test"}
    outcomes = asyncio.run(_deliver(options, [(task(1), entity(1, "1.00")), (task(2), entity(2, "2.00"))]))
    assert all(isinstance(o, TransientError) for o in outcomes)
    assert "s3cret" not in outcomes[0].message


def test_route_from_sqlite_into_the_server_through_the_engine(
    server_url: str, target_table: sa.Table, tmp_path: Path, crossdock_store: Store
) -> None:
    """A whole route: rows of an SQLite table become tasks, which the engine upserts into PostgreSQL or MariaDB."""
    source_url = f"sqlite:///{tmp_path / 'erp.db'}"
    src = sa.create_engine(source_url)
    meta, erp = products_table("erp_products")
    meta.create_all(src)
    with src.begin() as conn:
        conn.execute(
            erp.insert(),
            [
                {"sku": f"S-{i}", "name": f"n{i}", "price": Decimal(i), "updated_at": datetime(2024, 1, 1, i)}
                for i in range(1, 4)
            ],
        )
    src.dispose()
    target = {**TARGET, "url": server_url, "columns": None}
    source = {
        **incremental_source(source_url, "erp_products"),
        "query": "SELECT sku, name, price, updated_at FROM "
        "erp_products WHERE updated_at > :last_value ORDER BY updated_at",
    }
    project = load_project(project_file(tmp_path, source, target))
    crossdock_store.ensure_routes(project.routes)
    result = asyncio.run(run_once(project, crossdock_store, "products"))
    assert result["by_status"]["finished"] == 3, result
    assert _rows(server_url, target_table) == [(f"S-{i}", f"n{i}", Decimal(f"{i}.00")) for i in range(1, 4)]
