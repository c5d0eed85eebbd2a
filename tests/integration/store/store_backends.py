"""The store backends under test: one entry each in :data:`BACKENDS`."""

from __future__ import annotations

import os
from collections.abc import Callable
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
