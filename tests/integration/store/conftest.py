"""One store test suite, run against every backend.

To add a backend, add one entry to :data:`BACKENDS`: a name and a factory ``(tmp_path) -> Store``. A factory
may call ``pytest.skip`` when its service is not reachable locally (CI sets ``CROSSDOCK_TEST_REQUIRE_ALL=1``
to turn that skip into a failure).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crossdock.store.base import Store
from crossdock.store.memory import MemoryStore
from crossdock.store.sqlite.store import SQLiteStore

StoreFactory = Callable[[Path], Store]


def _memory(tmp_path: Path) -> Store:
    return MemoryStore()


def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(tmp_path / "crossdock.db")


def _postgresql(tmp_path: Path) -> Store:  # pragma: no cover - the PostgreSQL store does not exist yet
    """Hook for the PostgreSQL store: a fresh database per test from ``CROSSDOCK_TEST_POSTGRES``."""
    url = os.environ.get("CROSSDOCK_TEST_POSTGRES")
    if not url:
        _unavailable("postgresql: set CROSSDOCK_TEST_POSTGRES=postgresql://user@host/db")
    from crossdock.store import open_store

    return open_store(url)


def _unavailable(why: str) -> None:
    if os.environ.get("CROSSDOCK_TEST_REQUIRE_ALL"):
        pytest.fail(why)
    pytest.skip(why)


#: name -> factory. Adding PostgreSQL is this one entry: ``"postgresql": _postgresql``.
BACKENDS: dict[str, StoreFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
}

#: backends whose instances can share data between several store objects (separate connections)
SHARED_BACKENDS = {"sqlite", "postgresql"}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Store]:
    s = BACKENDS[backend](tmp_path)
    yield s
    s.close()


@pytest.fixture
def open_another(backend: str, tmp_path: Path, store: Store) -> Iterator[Callable[[], Store]]:
    """A second store object on the same data (its own connection), for concurrency tests."""
    opened: list[Store] = []

    def make() -> Store:
        if backend not in SHARED_BACKENDS:
            return store
        s = BACKENDS[backend](tmp_path)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "crossdock.db")
    yield s
    s.close()
