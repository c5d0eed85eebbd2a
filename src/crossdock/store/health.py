"""Whether the database answered: one place that notices an outage, logs it once, and notices the recovery.

Every public store method passes through :func:`guard_store_methods`, which turns the backend's "cannot use the
database now" errors into :class:`~crossdock.errors.StoreUnavailable` and keeps a :class:`StoreHealth` up to date.
The engine waits outages out with :func:`wait_for_store`; ``/api/v1/health`` and ``/metrics`` report the state.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from crossdock.errors import StoreUnavailable

log = logging.getLogger("crossdock.store")

T = TypeVar("T")


class StoreHealth:
    """The database's state as this process last saw it. Logs once per change of state, never once per call."""

    __slots__ = ("_lock", "down_at", "down_since", "failures", "reason")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: monotonic time of the first failure of the current outage; None while the database answers
        self.down_since: float | None = None
        #: wall-clock time of the same, for people
        self.down_at: datetime | None = None
        self.reason: str | None = None
        #: calls that failed during the current outage
        self.failures = 0

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, reason: str) -> None:
        with self._lock:
            self.failures += 1
            self.reason = reason
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self.down_at = datetime.now(UTC)
        log.warning("database unavailable: %s", reason)

    def succeeded(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            lasted = time.monotonic() - self.down_since
            failures = self.failures
            self.down_since = self.down_at = self.reason = None
            self.failures = 0
        log.warning("database available again after %.1f s (%d call(s) waited or failed)", lasted, failures)


def guard_store_methods(cls: type, unavailable: str = "_unavailable_reason") -> None:
    """Wrap every public method ``cls`` defines so driver errors that mean "database not usable now" become
    :class:`StoreUnavailable`, and every call tells the store's :class:`StoreHealth` how it went.

    ``cls.<unavailable>(exc)`` returns the reason when ``exc`` means the database is unavailable, else None.
    """
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(member) or inspect.isgeneratorfunction(member):
            continue
        setattr(cls, name, _guarded(member, unavailable))


#: how deep in guarded store calls each thread is: a store method that calls another public one reports once
_depth = threading.local()


def _guarded(fn: Callable[..., Any], unavailable: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        depth: int = getattr(_depth, "n", 0)
        _depth.n = depth + 1
        try:
            result = fn(self, *args, **kwargs)
        except StoreUnavailable as exc:
            if depth == 0:
                self.health.failed(exc.message)
            raise
        except Exception as exc:
            reason = getattr(self, unavailable)(exc)
            if reason is None:
                raise
            if self._busy(exc):
                # the server answers; this process ran out of pooled connections for a moment
                log.debug("database busy: %s", reason)
                raise StoreUnavailable(reason) from exc
            if depth == 0:
                self.health.failed(reason)
            raise StoreUnavailable(reason) from exc
        finally:
            _depth.n = depth
        if depth == 0:
            health = self.health
            if health.down_since is not None:
                health.succeeded()
        return result

    return call


#: the environment variable that says how long a run waits for an unavailable database before it fails
DB_WAIT_ENV = "CROSSDOCK_DB_WAIT"


def database_wait() -> float:
    """Seconds an import or ``crossdock run`` waits out a database outage before the run fails (default 60).

    Long-running deliveries (``serve``, ``worker``) wait for as long as the outage lasts; a run has a caller that
    wants an answer, and its records are read again next time, so it gives up after this long."""
    raw = os.environ.get(DB_WAIT_ENV)
    try:
        return max(float(raw), 0.0) if raw else 60.0
    except ValueError:
        return 60.0


#: waits between tries while the database is unavailable: quick at first, then every few seconds
BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


async def wait_for_store(
    call: Callable[[], T],
    *,
    give_up_after: float | None = None,
    stopping: Callable[[], bool] | None = None,
) -> T:
    """Run the blocking store ``call`` in a thread; while the database is unavailable, wait and try again.

    Gives up (re-raising :class:`StoreUnavailable`) after ``give_up_after`` seconds, at once on a full disk when
    there is such a limit (a run; see ``StoreUnavailable.no_space``), or at once when ``stopping()`` turns true, so
    a stop request is never held up by an outage for longer than one try.
    """
    started = time.monotonic()
    tries = 0
    while True:
        try:
            return await asyncio.to_thread(call)
        except StoreUnavailable as exc:
            waited = time.monotonic() - started
            if (give_up_after is not None and (waited >= give_up_after or exc.no_space)) or (
                stopping is not None and stopping()
            ):
                raise
            delay = BACKOFF[min(tries, len(BACKOFF) - 1)]
            if give_up_after is not None:
                delay = min(delay, max(give_up_after - waited, 0.0))
            tries += 1
            await asyncio.sleep(delay)
