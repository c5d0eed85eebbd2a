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


def _postgresql(tmp_path: Path) -> Store:
    """A fresh PostgreSQL database per test (the same one for every store a test opens); skipped locally
    without a server, a failure under ``CI=true``."""
    from crossdock.store import open_store
    from postgres_support import database_for

    return open_store(database_for(tmp_path))


def _unavailable(why: str) -> None:
    if os.environ.get("CROSSDOCK_TEST_REQUIRE_ALL"):
        pytest.fail(why)
    pytest.skip(why)


#: name -> factory. Adding PostgreSQL is this one entry: ``"postgresql": _postgresql``.
BACKENDS: dict[str, StoreFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}

#: backends whose instances can share data between several store objects (separate connections)
SHARED_BACKENDS = {"sqlite", "postgresql"}
