"""The SQL target through the real CLI: a run of 1,000 tasks with two bad rows, on PostgreSQL and MariaDB.

The bad rows' tasks fail with the database's own error, the others finish, the run stays well under 1.5 s, and
stderr holds nothing but crossdock's own lines (psycopg used to print "error ignored terminating
<psycopg.Pipeline ...>: pipeline aborted" there on every such run).
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

SERVERS = {
    "postgresql": ("postgresql+psycopg://postgres@127.0.0.1:5432/test", 5432, 'null value in column "name"'),
    "mariadb": ("mysql+pymysql://root@127.0.0.1:3306/test", 3306, "Column 'name' cannot be null"),
}
#: a line crossdock's own logging writes (``logs.configure_logging``, text format)
OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +crossdock[\w.]*: ")
BAD = {300, 700}


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """(URL, a fresh table's name, the words of the database's NOT NULL error); skipped locally without the
    server, failing under CI."""
    url, port, words = SERVERS[str(request.param)]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        why = f"{request.param} is not reachable on 127.0.0.1:{port}"
        if os.environ.get("CI") == "true" or os.environ.get("CROSSDOCK_TEST_REQUIRE_ALL"):
            pytest.fail(why)
        pytest.skip(why)
    meta = sa.MetaData()
    table = sa.Table(
        f"cd_cli_{uuid.uuid4().hex[:10]}",
        meta,
        sa.Column("sku", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("price", sa.Numeric(10, 2)),
    )
    engine = sa.create_engine(url)
    meta.create_all(engine)
    try:
        yield url, table.name, words
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_two_bad_rows_among_1000_fail_alone_quickly_and_quietly(project: Any, server: tuple[str, str, str]) -> None:
    url, table, words = server
    records = [
        {"sku": f"S-{i:05d}", "name": None if i in BAD else f"Product {i}", "price": f"{i}.50"} for i in range(1, 1001)
    ]
    project.write_ndjson("data/in.ndjson", records)
    project.write_config(
        project.route_yaml(connections=False, target=f'{{type: sql, url: "{url}", table: {table}, key: [sku]}}')
    )

    started = time.perf_counter()
    result = project.cli("run", "r", "--json")
    wall = time.perf_counter() - started

    summary = result.json
    assert summary["by_status"]["finished"] == 998, summary
    assert summary["by_status"]["failed"] == 2, summary
    took = summary["incoming"]["duration_s"] + summary["outgoing"]["duration_s"]
    assert took < 1.5, f"the run took {took:.2f} s ({wall:.2f} s with the interpreter's start)"
    foreign = [line for line in result.stderr.splitlines() if line.strip() and not OWN_LINE.match(line)]
    assert foreign == [], result.stderr
    failed = project.tasks("--status", "failed")
    assert sorted(t["identifier"] for t in failed) == [f"S-{i:05d}" for i in sorted(BAD)]
    for task in failed:
        assert task["error"].startswith(f"table {table}: ") and words in task["error"], task
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == 998
    finally:
        engine.dispose()
