"""Maintenance windows (``maintenance:`` on a route or a connection): pure time arithmetic, no I/O.

A window is either recurring (every ``cron`` fire, in UTC like ``schedule:``, for ``duration``) or one-off
(``from`` … ``to``). A time is in a window from its start up to, not including, its end. Windows that overlap or
touch are one: "until" is the end of the whole run of windows covering now, so a person is never told a time at
which deliveries would not in fact resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from croniter import croniter

from crossdock.config import MaintenanceWindow

#: how far ahead "until" is followed through windows that keep touching (a cron every minute lasting two), and
#: through how many of them: past either bound the end found so far is the answer (later than it, not earlier)
HORIZON = timedelta(days=366)
MAX_CHAIN = 500
#: croniter's ``get_prev`` is strictly before its start; a fire exactly at ``at`` covers ``at``
_EPSILON = timedelta(microseconds=1)


def occurrence_end(window: MaintenanceWindow, at: datetime) -> datetime | None:
    """The end of the occurrence of ``window`` that covers ``at`` (the latest, when several do), or None."""
    if window.cron is not None and window.duration is not None:
        start: datetime = croniter(window.cron, at + _EPSILON).get_prev(datetime)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        end = start + timedelta(seconds=window.duration)
        return end if end > at else None
    if window.from_ is not None and window.to is not None and window.from_ <= at < window.to:
        return window.to
    return None


def window_until(windows: Iterable[MaintenanceWindow], now: datetime) -> datetime | None:
    """When the windows covering ``now`` end, merged with every window that starts before (or as) they end; None
    when no window covers ``now``."""
    windows = list(windows)
    if not windows:
        return None
    end: datetime | None = None
    at = now
    for _ in range(MAX_CHAIN):
        ends = [e for w in windows if (e := occurrence_end(w, at)) is not None]
        if not ends:
            return end
        later = max(ends)
        if end is not None and later <= end:
            return end
        end = at = later
        if end - now > HORIZON:
            break
    return end


def maintenance_until(windows: Iterable[MaintenanceWindow], now: datetime) -> datetime | None:
    """Deliveries: every window counts."""
    return window_until(windows, now)


def imports_stopped_until(windows: Iterable[MaintenanceWindow], now: datetime) -> datetime | None:
    """Imports: only the windows with ``imports: false`` count."""
    return window_until((w for w in windows if not w.imports), now)


def when(at: datetime) -> str:
    """How a window's end is shown: UTC, to the second."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
