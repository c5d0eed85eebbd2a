"""Helpers to drive the real ``crossdock`` CLI as subprocesses against mock systems on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import crossdock

#: ``make(config, env)``: a project folder with that config, driven through the real CLI
MakeCli = Callable[[str, dict[str, str]], "Cli"]


class Cli:
    """Runs ``crossdock`` in a project folder; every process it starts is killed at teardown."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}

    def _environ(self, extra: dict[str, str] | None) -> dict[str, str]:
        src = str(Path(crossdock.__file__).resolve().parent.parent)
        env = {**os.environ, **self.env, **(extra or {})}
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "crossdock.cli", *args],
            cwd=self.root,
            env=self._environ(None),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"crossdock {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        return orjson.loads(self.run(*args, "--json").stdout)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.root / f"proc-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "crossdock.cli", *args],
                cwd=self.root,
                env=self._environ(env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self._logs[proc.pid] = log
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self._logs[proc.pid].read_text(encoding="utf-8", errors="replace")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

    def stats(self) -> dict[str, int]:
        by_status: dict[str, int] = self.json("stats")["by_status"]
        return by_status


def write_products(path: Path, n: int) -> None:
    with path.open("wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"sku": f"SKU-{i:05d}", "name": f"product {i}", "price": i}) + b"\n")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


#: an ERP → shop route that imports and exports every 2 seconds (a 6-field cron, seconds last), for serve tests
SCHEDULED = """\
connections:
  erp: {type: http, base_url: "${ERP_URL}"}
  shop: {type: http, base_url: "${SHOP_URL}"}
routes:
  erp-to-shop:
    incoming:
      source:
        type: http
        connection: erp
        path: /products
        query: {page_size: "20"}
        records: items
        pagination: {type: next_link, path: _links.next}
      schedule: "* * * * * */2"
    identifier: sku
    outgoing:
      target: {type: http, connection: shop, method: PUT, path: "/products/{sku}"}
      schedule: "* * * * * */2"
      batch_size: 1000
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def cli_factory(tmp_path: Path) -> Iterator[MakeCli]:
    """A long-running CLI (serve, worker) in a project folder; every process it starts is killed after the test.
    Re-exported by the conftest of each folder that uses it."""
    made: list[Cli] = []

    def make(config: str, env: dict[str, str]) -> Cli:
        (tmp_path / "crossdock.yaml").write_text(config, encoding="utf-8")
        cli = Cli(tmp_path, env)
        made.append(cli)
        return cli

    yield make
    for cli in made:
        cli.close()
