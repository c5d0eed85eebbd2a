"""Turn a TaskFilter into a SQL WHERE clause, for either placeholder style."""

from __future__ import annotations

from typing import Any

from crossdock.store.base import TaskFilter
from crossdock.store.payload_filter import payload_filter, postgres_conditions, sqlite_conditions

#: the SQLite function that evaluates a ``--where`` expression the SQL conditions do not cover (registered by the
#: SQLite store on its connection)
WHERE_FUNCTION = "crossdock_where"


def where_clause(selection: TaskFilter, *, placeholder: str = "?", timestamp: Any = None) -> tuple[str, list[Any]]:
    """``(sql, params)``; ``timestamp`` converts datetimes to the backend's column type.

    A ``where`` expression adds the conditions SQL decides; on SQLite (``?`` placeholders) the rest is evaluated by
    :data:`WHERE_FUNCTION`, on PostgreSQL the store narrows the selection first (``PostgresStore._narrowed``)."""
    conv = timestamp or (lambda d: d)
    parts: list[str] = []
    params: list[Any] = []
    if selection.ids is not None:
        ids = list(selection.ids)
        if not ids:
            return "1 = 0", []
        if placeholder == "%s":  # PostgreSQL: one array parameter, however many ids (a --where may match millions)
            parts.append("id = ANY(%s)")
            params.append(ids)
        else:
            parts.append(f"id IN ({', '.join([placeholder] * len(ids))})")
            params += ids
    if selection.statuses:
        parts.append(f"status IN ({', '.join([placeholder] * len(selection.statuses))})")
        params += [s.value for s in selection.statuses]
    if selection.route:
        parts.append(f"route = {placeholder}")
        params.append(selection.route)
    if selection.identifier:
        parts.append(f"identifier = {placeholder}")
        params.append(selection.identifier)
    if selection.created_after is not None:
        parts.append(f"created_at >= {placeholder}")
        params.append(conv(selection.created_after))
    if selection.created_before is not None:
        parts.append(f"created_at < {placeholder}")
        params.append(conv(selection.created_before))
    if selection.search:
        like = "%" + selection.search.replace("%", r"\%").replace("_", r"\_") + "%"
        parts.append(f"(identifier LIKE {placeholder} ESCAPE '\\' OR error LIKE {placeholder} ESCAPE '\\')")
        params += [like, like]
    if selection.where:
        found = payload_filter(selection.where)
        postgres = placeholder == "%s"
        if found.conditions:
            sql, values = (postgres_conditions if postgres else sqlite_conditions)(found.conditions)
            parts.append(sql)
            params += values
        if not found.exact and not postgres:
            parts.append(f"{WHERE_FUNCTION}(?, entity)")
            params.append(found.source)
    return (" AND ".join(parts) or "1 = 1"), params
