"""Turn a TaskFilter into a SQL WHERE clause, for either placeholder style."""

from __future__ import annotations

from typing import Any

from crossdock.store.base import TaskFilter


def where_clause(selection: TaskFilter, *, placeholder: str = "?", timestamp: Any = None) -> tuple[str, list[Any]]:
    """``(sql, params)``; ``timestamp`` converts datetimes to the backend's column type."""
    conv = timestamp or (lambda d: d)
    parts: list[str] = []
    params: list[Any] = []
    if selection.ids is not None:
        ids = list(selection.ids)
        if not ids:
            return "1 = 0", []
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
    return (" AND ".join(parts) or "1 = 1"), params
