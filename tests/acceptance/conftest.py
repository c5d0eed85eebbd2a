"""Fixtures for acceptance tests: the real CLI in a temporary project folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clirunner import Cli


@pytest.fixture
def cli_factory(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], Cli]]:
    made: list[Cli] = []

    def make(config: str, env: dict[str, str]) -> Cli:
        (tmp_path / "crossdock.yaml").write_text(config, encoding="utf-8")
        cli = Cli(tmp_path, env)
        made.append(cli)
        return cli

    yield make
    for cli in made:
        cli.close()
