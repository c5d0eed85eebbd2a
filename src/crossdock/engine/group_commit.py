"""Delivery results written back as they arrive, several per transaction (group commit).

A delivery waits until the transaction that holds its result has committed, and keeps its delivery slot while it
waits. So at any moment a worker has at most one delivered-but-unrecorded task per slot: if it is killed, the
tasks that can reach the target a second time are at most the requests in flight (the route's or worker's
concurrency), not a whole claim batch. Results that arrive while a commit runs go into the next one, so a busy
route still writes many results per transaction and a quiet one writes each at once.

When the database is unavailable the commit is tried again until it answers (see
:func:`crossdock.store.health.wait_for_store`); the deliveries waiting on it hold their slots, so nothing more is
sent to the target while its results could not be recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from crossdock.store import Settlement, Store
from crossdock.store.health import wait_for_store


class GroupCommit:
    """Commits the settlements of one batch of claimed tasks; one commit at a time, arrivals batched behind it."""

    __slots__ = ("_committing", "_failed", "_pending", "_running", "_store", "_waiters", "committed", "submitted")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[Settlement] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._running: asyncio.Task[None] | None = None
        #: the settlements of the transaction being committed right now
        self._committing: list[Settlement] = []
        #: settlements whose commit raised (not an outage: those are retried)
        self._failed: list[Settlement] = []
        #: every settlement handed in, and those known to be committed
        self.submitted: list[Settlement] = []
        self.committed: list[Settlement] = []

    @property
    def uncommitted(self) -> list[Settlement]:
        """Handed in but not known to be committed (the one in progress may still land; settles are guarded)."""
        return [*self._failed, *self._committing, *self._pending]

    async def commit(self, settlements: Sequence[Settlement]) -> None:
        """Return once ``settlements`` are committed; raise what the commit raised."""
        if not settlements:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending += settlements
        self.submitted += settlements
        self._waiters.append(waiter)
        if self._running is None:
            self._running = asyncio.create_task(self._commit_all(), name="group commit")
        await waiter

    async def _commit_all(self) -> None:
        try:
            while self._pending:
                batch, waiters = self._pending, self._waiters
                self._pending, self._waiters = [], []
                self._committing = batch

                def write(store: Store = self._store, batch: list[Settlement] = batch) -> None:
                    store.settle(batch, now=datetime.now(UTC))

                try:
                    await wait_for_store(write)
                except BaseException as exc:
                    self._failed += batch
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                    if not isinstance(exc, Exception):
                        raise
                    continue
                finally:
                    self._committing = []
                self.committed += batch
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self._running = None
