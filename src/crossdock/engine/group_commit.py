"""Delivery results written back as they arrive, several per transaction (group commit).

A delivery waits until the transaction that holds its result has committed, and keeps its delivery slot while it
waits. So at any moment a worker has at most one delivered-but-unrecorded task per slot: if it is killed, the
tasks that can reach the target a second time are at most the requests in flight (the route's or worker's
concurrency), not a whole claim batch. Results that arrive while a commit runs go into the next one, so a busy
route still writes many results per transaction and a quiet one writes each at once.

With ``outgoing.settle: batched`` a delivery does not wait: its result is queued and the slot moves on, so
commits are larger and a target that answers in about a millisecond is fed faster, at the price of the bound
above (up to a claim batch may be re-sent after a crash).

A commit runs on the event loop's thread when the store can do it without waiting (``Store.settle_now``: SQLite
with no other writer), else in a thread. When the database is unavailable the commit is tried again until it
answers (see :func:`crossdock.store.health.wait_for_store`); with ``immediate`` the deliveries waiting on it hold
their slots, so nothing more is sent to the target while its results could not be recorded (``batched`` finishes
the claim batch in hand, then claims nothing until the database is back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from crossdock.store import Settlement, Store
from crossdock.store.health import wait_for_store


class GroupCommit:
    """Commits the settlements of one batch of claimed tasks; one commit at a time, arrivals batched behind it."""

    __slots__ = (
        "_committing",
        "_every",
        "_failed",
        "_linger",
        "_pending",
        "_pending_done",
        "_running",
        "_store",
        "committed",
        "submitted",
    )

    def __init__(self, store: Store, *, linger: float = 0.0) -> None:
        self._store = store
        #: seconds a commit waits for more results to join it (``settle: batched``); 0 commits at once
        self._linger = linger
        self._pending: list[Settlement] = []
        #: resolved when the settlements in ``_pending`` are committed: one future for all of them
        self._pending_done: asyncio.Future[None] | None = None
        #: every such future handed out and not yet drained
        self._every: list[asyncio.Future[None]] = []
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
        done = self.submit(settlements)
        if done is not None:
            # not shielded: the waiters are the delivery workers of one batch, cancelled together or not at all
            await done

    def submit(self, settlements: Sequence[Settlement]) -> asyncio.Future[None] | None:
        """Queue ``settlements`` for the next commit without waiting (``outgoing.settle: batched``); the returned
        future resolves when they are committed. :meth:`drain` waits for everything queued."""
        if not settlements:
            return None
        done = self._pending_done
        if done is None:
            done = self._pending_done = asyncio.get_running_loop().create_future()
            self._every.append(done)
        self._pending += settlements
        self.submitted += settlements
        if self._running is None:
            self._running = asyncio.create_task(self._commit_all(), name="group commit")
        return done

    async def drain(self) -> None:
        """Wait until every queued settlement is committed; raise the first error a commit raised."""
        waiting, self._every = self._every, []
        if waiting:
            await asyncio.gather(*waiting)

    async def _commit_all(self) -> None:
        try:
            while self._pending:
                if self._linger:
                    await asyncio.sleep(self._linger)
                batch, done = self._pending, self._pending_done
                self._pending, self._pending_done = [], None
                assert done is not None
                self._committing = batch

                def write(store: Store = self._store, batch: list[Settlement] = batch) -> None:
                    store.settle(batch, now=datetime.now(UTC))

                try:
                    # on this thread when the store can do it without waiting (SQLite, lock free), else in a thread
                    if self._store.settle_now(batch, now=datetime.now(UTC)) is None:
                        await wait_for_store(write)
                except BaseException as exc:
                    self._failed += batch
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                    if not isinstance(exc, Exception):
                        raise
                    continue
                finally:
                    self._committing = []
                self.committed += batch
                if not done.done():
                    done.set_result(None)
        finally:
            self._running = None
