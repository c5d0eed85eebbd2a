"""What a write does to a circuit breaker, decided once for every backend: each function takes the row as locked
in the write's transaction and returns the row to store, or None to write nothing.

closed --(``threshold`` consecutive transient failures)--> open --(cooldown over, one process takes the probe)-->
half_open --(the probe is answered)--> closed, or --(the probe fails)--> open for another cooldown. A person may
close it from any state.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from crossdock.store.base import CircuitState


def after_failures(
    current: CircuitState,
    count: int,
    *,
    threshold: int,
    cooldown: float,
    error: str | None,
    now: datetime,
    reset: bool,
) -> CircuitState:
    row = replace(current, failures=(0 if reset else current.failures) + count, updated_at=now)
    if error is not None:
        row.last_error = error
    # half-open: the probe failed. Open: it stays open as it was (deliveries in flight when it opened add to the
    # count, but never lengthen the cooldown)
    if current.state == "half_open" or (current.state == "closed" and row.failures >= threshold):
        row.state = "open"
        row.opened_at = now
        row.open_until = now + timedelta(seconds=cooldown)
        row.probe_owner = row.probe_at = None
    return row


def after_answer(current: CircuitState, *, now: datetime, probe_owner: str | None) -> CircuitState | None:
    """The target answered a delivery (accepted it, or refused it for good: either way it is up)."""
    if current.state == "closed":
        return replace(current, failures=0, updated_at=now) if current.failures else None
    if current.state == "half_open" and probe_owner is not None and current.probe_owner == probe_owner:
        return closed(current, now)
    return None  # open: an answer that was in flight when it opened does not close it; only a probe does


def closed(current: CircuitState, now: datetime) -> CircuitState:
    """Closed, counting from zero; the last error stays as history."""
    return replace(
        current, state="closed", failures=0, opened_at=None, open_until=None, probe_owner=None, probe_at=None,
        updated_at=now,
    )  # fmt: skip


def probe_taken(current: CircuitState, *, owner: str, now: datetime, stale_before: datetime) -> CircuitState | None:
    cooled = current.state == "open" and (current.open_until is None or current.open_until <= now)
    abandoned = current.state == "half_open" and (current.probe_at is None or current.probe_at < stale_before)
    if not (cooled or abandoned):
        return None
    return replace(current, state="half_open", probe_owner=owner, probe_at=now, updated_at=now)


def probe_returned(current: CircuitState, *, owner: str, now: datetime) -> CircuitState | None:
    if current.state != "half_open" or current.probe_owner != owner:
        return None
    return replace(current, state="open", open_until=now, probe_owner=None, probe_at=None, updated_at=now)
