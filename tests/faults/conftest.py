"""Fixtures of the fault-injection suite: projects driven through the real CLI, a private PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import MakeCli, PrivatePostgres, private_postgres

from clirunner import Cli


@pytest.fixture
def cli_factory(tmp_path: Path) -> Iterator[MakeCli]:
    """``make(config, env)``: a project folder with that config; every process it starts is killed afterwards."""
    made: list[Cli] = []

    def make(config: str, env: dict[str, str]) -> Cli:
        (tmp_path / "crossdock.yaml").write_text(config, encoding="utf-8")
        cli = Cli(tmp_path, env)
        made.append(cli)
        return cli

    yield make
    for cli in made:
        cli.close()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this module's own, which tests stop and start."""
    with private_postgres() as server:
        yield server
