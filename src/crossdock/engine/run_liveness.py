"""A run is either finished, or owned by a live process: heartbeats while it works, ``abandoned`` once it died.

Without this, an import killed with SIGKILL stays ``running`` in ``runs list`` for ever, and nobody can tell a
long run from a dead one. The owner (``host:pid``) of a run on this host is checked directly; a run on another
host counts as dead once its heartbeat is older than :data:`STALE_AFTER`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Collection
from datetime import UTC, datetime

from crossdock.errors import StoreUnavailable
from crossdock.store import Store
from crossdock.store.base import Run

log = logging.getLogger("crossdock.runs")

#: seconds between heartbeats of a running run
HEARTBEAT_EVERY = 30.0
#: a run whose heartbeat is this old is dead, wherever its process was
STALE_AFTER = 600.0


def process_id() -> str:
    """This process as runs and leases name it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def death_of(run: Run, *, now: datetime, host: str | None = None) -> str | None:
    """Why ``run`` cannot be running any more, or None while its process may still be working on it."""
    host = host or socket.gethostname()
    last = run.heartbeat_at or run.started_at
    if run.owner is not None:
        owner_host, _, pid_text = run.owner.rpartition(":")
        if owner_host == host and pid_text.isdigit():
            if _alive(int(pid_text)):
                return None  # on this host the process table is the truth, however old the heartbeat
            return f"abandoned: its process {run.owner} is gone (killed or crashed)"
    if (now - last).total_seconds() > STALE_AFTER:
        who = run.owner or "a process of an earlier version"
        return f"abandoned: no sign of life from {who} since {last.isoformat(timespec='seconds')}"
    return None


def abandon_dead_runs(store: Store, *, now: datetime | None = None) -> int:
    """Mark every dead ``running`` run ``abandoned`` with the reason; return how many."""
    now = now or datetime.now(UTC)
    host = socket.gethostname()
    done = 0
    for run in store.running_runs():
        reason = death_of(run, now=now, host=host)
        if reason is None:
            continue
        if run.part == "incoming":
            reason += "; the source was not told the records were stored, so the next run reads them again"
        if store.abandon_run(run.id, error=reason, now=now):
            done += 1
            log.warning("run %d (%s %s) %s", run.id, run.route, run.part, reason)
    return done


@contextlib.asynccontextmanager
async def heartbeat(store: Store, run_ids: Callable[[], Collection[int]]) -> AsyncIterator[None]:
    """Touch the runs ``run_ids()`` names every :data:`HEARTBEAT_EVERY` seconds while the block runs."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            now = datetime.now(UTC)
            for run_id in list(run_ids()):
                # an outage only delays the heartbeat; STALE_AFTER is long enough to ride it out
                with contextlib.suppress(StoreUnavailable):
                    await asyncio.to_thread(store.touch_run, run_id, now=now)

    task = asyncio.create_task(beat(), name="run heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: alive as far as we can tell
        return True
    return True
