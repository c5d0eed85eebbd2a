"""When to try a delivery again: exponential backoff with jitter, and the target's Retry-After."""

from __future__ import annotations

import random

from crossdock.config import RetryConfig


def next_delay(attempts: int, policy: RetryConfig, retry_after: float | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt.

    A ``Retry-After`` from the target (429, 503) wins over the computed backoff; both are capped at
    ``max_backoff``.
    """
    if retry_after is not None:
        return min(retry_after, policy.max_backoff)
    base = policy.backoff * (2 ** max(attempts - 1, 0))
    base = min(base, policy.max_backoff)
    spread = base * policy.jitter
    return float(max(0.0, min(base + random.uniform(-spread, spread), policy.max_backoff)))
