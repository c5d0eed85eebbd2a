"""One store test suite, run against every backend.

To add a backend, add one entry to ``store_backends.BACKENDS``: a name and a factory ``(tmp_path) -> Store``
that returns an empty, upgraded store. A factory may call ``pytest.skip`` when its service is not reachable
locally (CI sets ``CROSSDOCK_TEST_REQUIRE_ALL=1`` to turn that skip into a failure).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_backends import BACKENDS, SHARED_BACKENDS

from crossdock.store.base import Store
from crossdock.store.sqlite.store import SQLiteStore


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
