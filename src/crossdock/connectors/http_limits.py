"""Politeness towards a remote system: a rate limit shared by every route on a connection, and in-call retries.

Both live on the connection's client, not on a route, because the remote side counts requests per client, whoever
sends them.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, ConfigDict, Field

from crossdock.config.models import Duration


class RateLimitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: sustained requests per second
    per_second: float = Field(gt=0)
    #: requests that may go at once after a quiet spell
    burst: int = Field(default=1, ge=1)


class RetryOptions(BaseModel):
    """Retries inside one page fetch or delivery, before the engine's own retry policy sees the error."""

    model_config = ConfigDict(extra="forbid")
    #: extra tries after the first one (0 = no in-call retry)
    attempts: int = Field(default=0, ge=0, le=10)
    #: first wait; doubled after each try
    backoff: Duration = 0.5
    max_backoff: Duration = 10.0
    #: a Retry-After longer than this is not waited for in the call: the error goes to the engine, which
    #: schedules the task's next attempt after it
    max_retry_after: Duration = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Wait before try ``attempt + 1``: exponential backoff, or longer if the server asked for it."""
        wait = min(self.backoff * (1 << attempt), self.max_backoff)
        return max(wait, retry_after) if retry_after is not None else wait


class TokenBucket:
    """A token bucket kept as one "theoretical arrival time" (GCRA), so reserving a slot needs no lock.

    Callers are served in arrival order: each reserves the next free slot and sleeps until it comes.
    """

    def __init__(self, per_second: float, burst: int = 1) -> None:
        self.interval = 1.0 / per_second
        self.tolerance = (burst - 1) * self.interval
        self._tat = 0.0

    def reserve(self) -> float:
        """Take the next slot; returns how long to wait for it (0 when a token is free now)."""
        now = time.monotonic()
        tat = self._tat if self._tat > now else now
        self._tat = tat + self.interval
        wait = tat - self.tolerance - now
        return wait if wait > 0 else 0.0

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
