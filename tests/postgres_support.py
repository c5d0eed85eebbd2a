"""PostgreSQL for tests: a fresh, empty database per test, dropped afterwards.

The server comes from ``CROSSDOCK_TEST_POSTGRES`` (a URL to any database on it, used to create and drop the
test databases; default ``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached the test
is skipped with the reason, except in CI (``CI=true`` or ``CROSSDOCK_TEST_REQUIRE_ALL=1``), where it fails:
a green CI run must have run the PostgreSQL tests.

``tests/`` is on pytest's ``pythonpath`` (pyproject.toml), so any test module or conftest can use it:

As a fixture (one database per test)::

    from postgres_support import postgres_url  # noqa: F401  (re-export the fixture)

    def test_something(postgres_url: str) -> None:
        store = PostgresStore(postgres_url)
        ...

As a store factory keyed by something per test (the shared store suite keys by ``tmp_path``, so a second
store opened with the same key sees the same data)::

    from postgres_support import database_for

    def _postgresql(tmp_path: Path) -> Store:
        return open_store(database_for(tmp_path))

Databases made by :func:`database_for` are dropped by :func:`drop_databases` (also run at exit).
"""

from __future__ import annotations

import atexit
import os
import threading
import uuid
from collections.abc import Hashable, Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
_created: dict[Hashable, str] = {}
_lock = threading.Lock()
_checked: str | None = None


def server_url() -> str:
    return os.environ.get("CROSSDOCK_TEST_POSTGRES") or DEFAULT_SERVER


def must_run() -> bool:
    """In CI a missing PostgreSQL is a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true" or bool(os.environ.get("CROSSDOCK_TEST_REQUIRE_ALL"))


def unavailable(why: str) -> None:
    """Skip locally, fail in CI."""
    if must_run():
        pytest.fail(f"PostgreSQL is required in CI: {why}", pytrace=False)
    pytest.skip(why)


def require_server() -> str:
    """The server URL, after checking once that it answers (skips or fails the test otherwise)."""
    global _checked
    url = server_url()
    if _checked == url:
        return url
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"no PostgreSQL server at {url} ({str(exc).strip()}); set CROSSDOCK_TEST_POSTGRES")
    _checked = url
    return url


def create_database() -> str:
    """A new empty database on the test server; returns its URL. Drop it with :func:`drop_database`."""
    server = require_server()
    name = f"crossdock_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        # template0: nobody is ever connected to it, so parallel test runs cannot block each other
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return urlsplit(server)._replace(path=f"/{name}").geturl()


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_for(key: Hashable) -> str:
    """One fresh database per ``key`` (e.g. a test's ``tmp_path``): the same key gives the same database."""
    with _lock:
        url = _created.get(key)
        if url is None:
            if not _created:
                atexit.register(drop_databases)
            url = _created[key] = create_database()
        return url


def drop_databases() -> None:
    """Drop every database :func:`database_for` made."""
    with _lock:
        urls = list(_created.values())
        _created.clear()
    for url in urls:
        drop_database(url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database for one test (libpq URL); dropped after the test."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)
