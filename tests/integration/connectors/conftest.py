"""Fixtures for the HTTP connector tests: mock ERP and shop on loopback, a project written to a tmp folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from http_helpers import Harness

from crossdock.mock import RunningErp, RunningShop, start_erp, start_shop


@pytest.fixture
def erp() -> Iterator[RunningErp]:
    with start_erp(products=250, seed=7) as running:
        yield running


@pytest.fixture
def shop() -> Iterator[RunningShop]:
    with start_shop() as running:
        yield running


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()
