"""The task filters every ``tasks`` command shares: status, age, free text and ``--where`` over the entity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from crossdock.config.models import parse_duration
from crossdock.errors import UsageError
from crossdock.store.base import TaskFilter
from crossdock.tasks import Status

StatusOpt = Annotated[
    list[Status] | None,
    typer.Option("--status", "-s", help="Filter by status (repeatable).", case_sensitive=False),
]


def parse_when(value: str | None, what: str) -> datetime | None:
    """An ISO date/time, or an age such as 2h / 7d meaning that long ago."""
    if not value:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{what}: {value!r} is neither an ISO date/time nor an age like 2h or 7d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where",
        help="An expression over the entity, e.g. \"price > 1000 and category == 'toys'\" (the transformer language).",
    ),
]
SearchOpt = Annotated[str | None, typer.Option("--search", help="Text in identifier or error.")]


def checked_where(where: str | None) -> str | None:
    """Parse it now, so a typo is exit 2 with the reason before any database work."""
    if where is not None:
        from crossdock.store.payload_filter import payload_filter

        payload_filter(where)
    return where


def task_selection(
    *,
    status: list[Status] | None,
    route: str | None,
    identifier: str | None,
    search: str | None,
    where: str | None,
    created_after: str | None,
    created_before: str | None,
    ids: list[int] | None = None,
) -> TaskFilter:
    """The filter options of a ``tasks`` command as a selection; ``where`` and the times are checked here, so a
    mistake is a usage error before any database work."""
    return TaskFilter(
        ids=ids or None,
        statuses=status or None,
        route=route,
        identifier=identifier,
        search=search,
        where=checked_where(where),
        created_after=parse_when(created_after, "--created-after"),
        created_before=parse_when(created_before, "--created-before"),
    )
