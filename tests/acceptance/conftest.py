"""Acceptance fixtures: a throw-away project folder, the real CLI as a subprocess, mock servers on loopback.

The CLI always runs as ``python -m crossdock.cli`` in the project folder, with ``CROSSDOCK_CONFIG`` pointing at
the project's ``crossdock.yaml`` and an environment that holds only what the test gives it (plus PATH/HOME).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from clirunner import cli_factory
from crossdock.mock import FailureConfig, RunningShop, start_shop

CLI = [sys.executable, "-m", "crossdock.cli"]

__all__ = ["cli_factory"]  # the fixture lives with the Cli it makes
#: generous: a CLI call that hangs is a failure, not a stuck suite
TIMEOUT = 120


class Result:
    """A finished CLI call: exit code, stdout, stderr, and stdout parsed as JSON on demand."""

    def __init__(self, args: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.args = args
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def json(self) -> Any:
        try:
            return orjson.loads(self.stdout)
        except orjson.JSONDecodeError as exc:
            raise AssertionError(
                f"not JSON ({exc}) from {self.args}:\n{self.stdout}\n--- stderr:\n{self.stderr}"
            ) from None

    def __repr__(self) -> str:
        return (
            f"<crossdock {' '.join(self.args)} -> {self.code}\n"
            f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}>"
        )


class Project:
    """A project folder for one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env: dict[str, str] = {}
        root.mkdir(parents=True, exist_ok=True)

    @property
    def config(self) -> Path:
        return self.root / "crossdock.yaml"

    @property
    def db_path(self) -> Path:
        return self.root / "crossdock.db"

    def write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def write_config(self, text: str) -> Path:
        return self.write("crossdock.yaml", text)

    def write_ndjson(self, relpath: str, records: Iterable[Any]) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            for r in records:
                handle.write(orjson.dumps(r) + b"\n")
        return path

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSDOCK_")}
        env["CROSSDOCK_CONFIG"] = str(self.config)
        env.update(self.env)
        return env

    def cli(self, *args: str, expect: int | None = 0, timeout: float = TIMEOUT) -> Result:
        """Run ``crossdock ARGS``; assert the exit code unless ``expect`` is None."""
        argv = [str(a) for a in args]
        proc = subprocess.run(
            [*CLI, *argv],
            cwd=self.root,
            env=self.process_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = Result(argv, proc)
        if expect is not None:
            assert result.code == expect, f"expected exit {expect}: {result!r}"
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, *[str(a) for a in args]],
            cwd=self.root,
            env=self.process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # --- shortcuts ------------------------------------------------------------------------------

    def run(self, route: str, *flags: str, expect: int | None = 0) -> dict[str, Any]:
        result = self.cli("run", route, "--json", *flags, expect=expect)
        data: dict[str, Any] = result.json
        return data

    def stats(self, *flags: str) -> dict[str, Any]:
        data: dict[str, Any] = self.cli("stats", "--json", *flags).json
        return data

    def tasks(self, *flags: str, limit: int = 10000) -> list[dict[str, Any]]:
        """Every task matching ``flags`` (follows the cursor)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            extra = ["--cursor", cursor] if cursor else []
            page = self.cli("tasks", "list", "--json", "--limit", str(limit), *flags, *extra).json
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items

    def show(self, task_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self.cli("tasks", "show", str(task_id), "--json").json
        return data

    def open_store(self) -> Any:
        from crossdock.store.sqlite.store import SQLiteStore

        return SQLiteStore(self.db_path, create=False)

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def closed_port() -> int:
        """A loopback port nobody listens on (bound, then released)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        return port

    @staticmethod
    def products(n: int, *, start: int = 1, **extra: Any) -> list[dict[str, Any]]:
        return [
            {"sku": f"SKU-{i:06d}", "title": f"Product {i}", "price": f"{i % 1000}.99", "stock": i % 50 + 1, **extra}
            for i in range(start, start + n)
        ]

    @staticmethod
    def route_yaml(
        name: str = "r",
        *,
        source: str = "{type: file, path: data/in.ndjson}",
        target: str = '{type: http, connection: shop, method: PUT, path: "/products/{sku}"}',
        extra: str = "",
        outgoing_extra: str = "",
        incoming_extra: str = "",
        identifier: str = "sku",
        connections: bool = True,
    ) -> str:
        """One route file to ``target``; ``extra`` is more YAML under the route (indent 4)."""
        conn = 'connections:\n  shop: {type: http, base_url: "${SHOP_URL}"}\n' if connections else ""
        return (
            f"{conn}routes:\n"
            f"  {name}:\n"
            f"    incoming:\n"
            f"      source: {source}\n"
            f"{incoming_extra}"
            f"    identifier: {identifier}\n"
            f"    outgoing:\n"
            f"      target: {target}\n"
            f"{outgoing_extra}"
            f"{extra}"
        )

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return False


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "proj")


@pytest.fixture
def shop_factory(project: Project) -> Iterator[Callable[..., RunningShop]]:
    """``shop_factory(fail_times=2)`` starts a mock shop with those failure modes and sets the project's
    ``SHOP_URL`` to it; every shop is stopped after the test."""
    started: list[RunningShop] = []

    def make(**modes: Any) -> RunningShop:
        shop = start_shop(failures=FailureConfig(**modes) if modes else None)
        started.append(shop)
        project.env["SHOP_URL"] = shop.url
        return shop

    yield make
    for shop in started:
        shop.stop()


@pytest.fixture
def shop(shop_factory: Callable[..., RunningShop]) -> RunningShop:
    return shop_factory()
