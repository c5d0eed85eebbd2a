"""Fixtures of the fault-injection suite: projects driven through the real CLI, a private PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faultkit import PrivatePostgres, private_postgres

from clirunner import cli_factory

__all__ = ["cli_factory"]  # the fixture lives with the Cli it makes


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this module's own, which tests stop and start."""
    with private_postgres() as server:
        yield server
