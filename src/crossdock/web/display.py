"""How much of a task's data an answer or a page shows, and the download that gives the rest.

A task page must stay a page: a 10 MB entity would make a 10 MB answer, redacted string by string, and a page
the browser chokes on. Past :data:`DISPLAY_LIMIT` bytes (compact JSON) the API and the dashboard show a preview
with a marker, and link to a download of the whole entity, redacted like everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Response

from crossdock.tasks import Task
from crossdock.web.context import redact_data

Redact = Callable[[str], str]

#: entities, raw records and stored responses larger than this (bytes of compact JSON) are shown cut
DISPLAY_LIMIT = 256 * 1024
#: how far past the cut the text is redacted first, so a secret crossing the cut is masked, not half shown
_REDACT_MARGIN = 64 * 1024
#: what ends a cut text
CUT_MARK = "… [cut]"


@dataclass(frozen=True)
class Shown:
    """One value as an answer shows it: whole, or cut to a preview."""

    value: Any
    size: int
    truncated: bool
    preview: str | None = None


def cut(text: str, redact: Redact, limit: int = DISPLAY_LIMIT) -> str:
    """The first ``limit`` characters of ``text``, redacted, with a marker; a secret across the cut stays masked."""
    return redact(text[: limit + _REDACT_MARGIN])[:limit] + CUT_MARK


def shown(value: Any, redact: Redact, limit: int = DISPLAY_LIMIT) -> Shown:
    """``value`` whole when its compact JSON fits ``limit``, else a preview of that JSON text."""
    if value is None:
        return Shown(None, 0, False)
    data = orjson.dumps(value)
    if len(data) <= limit:
        return Shown(value, len(data), False)
    return Shown(None, len(data), True, cut(data[: limit + _REDACT_MARGIN].decode("utf-8", "ignore"), redact, limit))


def entity_url(task: Task) -> str:
    return f"/api/v1/tasks/{task.id}/entity"


def entity_fields(task: Task, redact: Redact, *, full: bool = False) -> dict[str, Any]:
    """The entity keys of a task answer: ``entity`` (null when cut), its size, whether it was cut, where it is.

    ``entity_preview`` (the first 256 KiB of its JSON text) comes only with ``entity_truncated: true``."""
    if full:
        entity = Shown(task.entity, 0 if task.entity is None else len(orjson.dumps(task.entity)), False)
    else:
        entity = shown(task.entity, redact)
    fields: dict[str, Any] = {
        "entity": entity.value,
        "entity_bytes": entity.size if task.entity is not None else None,
        "entity_truncated": entity.truncated,
        "entity_url": entity_url(task) if task.entity is not None else None,
    }
    if entity.truncated:
        fields["entity_preview"] = entity.preview
    return fields


def bounded_text(data: dict[str, Any], key: str, redact: Redact, limit: int = DISPLAY_LIMIT) -> None:
    """Cut the string ``data[key]`` to ``limit`` in place, saying so in ``{key}_truncated``."""
    value = data.get(key)
    if isinstance(value, str) and len(value) > limit:
        data[key] = cut(value, redact, limit)
        data[f"{key}_truncated"] = True


def bounded_result(data: dict[str, Any], redact: Redact) -> None:
    """A stored response (``store_response``) over the limit becomes null, with its size and a preview."""
    result = shown(data.get("result"), redact)
    if result.truncated:
        data["result"] = None
        data["result_truncated"] = True
        data["result_bytes"] = result.size
        data["result_preview"] = result.preview


def entity_download(task: Task, redact: Redact) -> Response:
    """The whole entity as a JSON file, every string redacted as in any other answer."""
    body = orjson.dumps(redact_data(task.entity, redact), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="task-{task.id}-entity.json"'},
    )
