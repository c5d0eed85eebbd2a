"""Real faults for the fault-injection suite: a private PostgreSQL server to stop and start, a tiny filesystem
that fills up, and the checks every fault test ends with.

Nothing here mocks a fault away. The PostgreSQL server is the test's own (``initdb`` in a temporary folder, its
own port), never the machine's shared one. The small filesystem is a real ``tmpfs`` mount, so SQLite sees the
same ``database or disk is full`` a production disk gives. Both need tools or rights a developer's machine may
lack: then the test is skipped with the reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest

from postgres_support import must_run


def unavailable(why: str) -> None:
    """A fault this machine cannot inject: skip locally, fail in CI (a green CI run must have injected it)."""
    if must_run():
        pytest.fail(f"the fault-injection suite needs this in CI: {why}", pytrace=False)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bindir() -> Path | None:
    """Where initdb and pg_ctl live: ``CROSSDOCK_PG_BINDIR``, PATH, or Debian's versioned folders."""
    configured = os.environ.get("CROSSDOCK_PG_BINDIR")
    if configured:
        return Path(configured)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return Path(folders[-1]) if folders else None


class PrivatePostgres:
    """A PostgreSQL server for one test module: ``stop()`` and ``start()`` make a real outage.

    As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None or not (bindir / "initdb").exists():
            unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found; set CROSSDOCK_PG_BINDIR")
        assert bindir is not None
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="crossdock-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                unavailable("running as root without runuser: cannot start a private PostgreSQL as postgres")
            self._as = [str(runuser), "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{self.tail()}")

    def start(self) -> None:
        # fsync off is safe here: the faults are process crashes, never the machine's. synchronous_commit stays on,
        # as in production: with it off, a crash (stop -m immediate) loses transactions the client saw committed
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session (as a restart does); ``immediate`` is a crash without a shutdown."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        if self.answers():
            with suppress(AssertionError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


class TinyFilesystem:
    """A ``tmpfs`` of a few MiB mounted on a temporary folder; :meth:`resize` frees or takes space."""

    def __init__(self, size_kib: int) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="crossdock-tinyfs-"))
        if os.geteuid() != 0 or shutil.which("mount") is None:
            self.path.rmdir()
            unavailable("mounting a small tmpfs needs root and mount(8)")
        done = self._mount("-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(self.path))
        if done.returncode != 0:
            self.path.rmdir()
            unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    @staticmethod
    def _mount(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mount", *args], capture_output=True, text=True, check=False, timeout=30)

    def resize(self, size_kib: int) -> None:
        done = self._mount("-o", f"remount,size={size_kib}k", str(self.path))
        assert done.returncode == 0, done.stderr

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False, timeout=30)
        shutil.rmtree(self.path, ignore_errors=True)


@contextmanager
def tiny_filesystem(size_kib: int) -> Iterator[TinyFilesystem]:
    fs = TinyFilesystem(size_kib)
    try:
        yield fs
    finally:
        fs.close()


def wait_until(check: object, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check()`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
