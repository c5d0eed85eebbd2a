"""One scheduler at a time: whoever holds the leader lock fires schedules; the others wait to take over.

SQLite is one file on one machine, so an exclusive ``flock`` on a file beside it is enough, and the kernel
drops it when the holder dies (even by SIGKILL). PostgreSQL serves many machines, so its store takes a
session advisory lock, which the server drops when the holder's connection goes.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
from pathlib import Path

from crossdock.store import Store

#: the name of the scheduler's lock (the advisory lock key is derived from it)
SCHEDULER_LOCK = "crossdock-scheduler"


class LeaderLock(abc.ABC):
    """A non-blocking, process-held lock. ``acquire`` may be called again and again by followers."""

    @abc.abstractmethod
    def acquire(self) -> bool:
        """Take the lock if it is free; True if this process holds it (now or already)."""

    @abc.abstractmethod
    def release(self) -> None: ...

    @property
    @abc.abstractmethod
    def held(self) -> bool: ...

    @abc.abstractmethod
    def describe(self) -> str: ...


class FileLeaderLock(LeaderLock):
    """An exclusive ``flock`` on ``path``. Each instance opens its own file, so two in one process exclude."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def describe(self) -> str:
        return f"file lock {self.path}"


class StoreLeaderLock(LeaderLock):
    """The store's own lock (PostgreSQL: a session advisory lock; memory: always granted)."""

    def __init__(self, store: Store, name: str = SCHEDULER_LOCK) -> None:
        self.store = store
        self.name = name
        self._held = False

    def acquire(self) -> bool:
        """Asked every tick, also while held: a store lock can be lost with its session (a restart, a network
        cut), and a leader that did not notice would keep scheduling beside its successor."""
        try:
            self._held = self.store.try_leader_lock(self.name)
        except BaseException:
            self._held = False  # unknown, so not ours: after an outage the lock is taken again before scheduling
            raise
        return self._held

    def release(self) -> None:
        if self._held:
            self.store.release_leader_lock(self.name)
            self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def describe(self) -> str:
        return f"{self.store.backend} lock {self.name!r}"


def leader_lock_for(store: Store, name: str = SCHEDULER_LOCK) -> LeaderLock:
    """A file lock beside a SQLite database file; the store's lock for anything else."""
    path = getattr(store, "path", None)
    if store.backend == "sqlite" and isinstance(path, str) and path != ":memory:":
        return FileLeaderLock(f"{path}.{name}.lock")
    return StoreLeaderLock(store, name)
