"""Tasks out to a file and records back in: ``crossdock tasks export`` and ``crossdock tasks import``.

An export is one line per task (NDJSON, or CSV with the entity as JSON text), written page by page while the
store is read newest first, so memory stays flat however many tasks match. An import reads NDJSON: a line that
``tasks export`` wrote gives its entity, which already went through the transforms, so only identifier,
validation, delta and supersede apply to it; any other line is a record as the route's source would have read it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from crossdock.connectors.base import Malformed
from crossdock.errors import UsageError
from crossdock.store.base import Store, TaskFilter
from crossdock.tasks import Task, iso

ExportFormat = Literal["ndjson", "csv"]
#: the columns of an export, in order
FIELDS = ("id", "route", "identifier", "status", "attempts", "error", "created_at", "updated_at", "entity")
#: tasks read per store call
PAGE = 1000
#: lines handed to the importer at a time
IMPORT_PAGE = 5000


def export_row(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "route": task.route,
        "identifier": task.identifier,
        "status": task.status.value,
        "attempts": task.attempts,
        "error": task.error,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "entity": task.entity,
    }


def export_chunks(
    store: Store, selection: TaskFilter, fmt: ExportFormat, *, redact: Callable[[str], str] | None = None
) -> Iterator[bytes]:
    """The export, a page of tasks per chunk (the CSV header first). ``redact`` masks secrets (the API's)."""
    if fmt == "csv":
        yield _csv_line(FIELDS)
    cursor: int | None = None
    while True:
        tasks, cursor = store.list_tasks(selection, limit=PAGE, cursor=cursor)
        if tasks:
            if fmt == "ndjson":
                chunk = b"".join(orjson.dumps(export_row(t)) + b"\n" for t in tasks)
            else:
                chunk = b"".join(_csv_line(_csv_values(export_row(t))) for t in tasks)
            yield redact(chunk.decode()).encode() if redact is not None else chunk
        if cursor is None:
            return


def _csv_values(row: dict[str, Any]) -> tuple[str, ...]:
    values = []
    for key in FIELDS:
        value = row[key]
        if key == "entity":
            text = orjson.dumps(value).decode() if value is not None else ""
        else:
            text = "" if value is None else str(value)
        values.append(csv_safe(text) if key in ("identifier", "error") else text)
    return tuple(values)


def csv_safe(value: str) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas; quote them as text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") and not value[1:2].isdigit() else value


def _csv_line(values: tuple[str, ...]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode()


def write_export(store: Store, selection: TaskFilter, fmt: ExportFormat, out: BinaryIO) -> int:
    """Write the export to ``out``; returns the number of tasks written."""
    written = 0
    for chunk in export_chunks(store, selection, fmt):
        out.write(chunk)
        written += chunk.count(b"\n")
    return written - (1 if fmt == "csv" else 0)


# --- import --------------------------------------------------------------------------------------


ImportMode = Literal["auto", "record", "entity"]


@dataclass
class ImportFile:
    """What an import file held: how many lines were export lines (entities), how many plain records."""

    path: Path
    mode: ImportMode
    entities: int = 0
    records: int = 0
    #: ``auto``: the first line that parses is a line of ``tasks export``
    export: bool = False

    @property
    def transforms(self) -> bool:
        """Whether the lines go through the transforms (records) or not (entities of an export)."""
        if self.mode != "auto":
            return self.mode == "record"
        return not self.export


def is_export_line(value: Any) -> bool:
    return isinstance(value, dict) and "entity" in value and "route" in value and "status" in value


def sniff(path: Path, mode: ImportMode) -> ImportFile:
    """Decide whether the file is an export (``auto``: its first line that parses says so), and refuse, before
    anything is imported, a file that mixes export lines and plain records: the two need different treatment."""
    found = ImportFile(path, mode)
    if mode != "auto":
        return found
    first: bool | None = None
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                exported = is_export_line(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue
            if first is None:
                first = found.export = exported
            elif exported != first:
                kind = "a line of `tasks export`" if exported else "a plain record"
                other = "plain records" if first is False else "an export"
                raise UsageError(
                    f"{path}:{number}: {kind} in a file of {other}; import them separately, or say how to read "
                    "every line with --as record|entity"
                )
    return found


async def import_pages(found: ImportFile) -> AsyncIterator[list[Any]]:
    """The file's records in pages; a line that does not parse is a :class:`Malformed` record (a rejected task)."""
    page: list[Any] = []
    with open(found.path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                page.append(Malformed(raw.decode("utf-8", "replace").rstrip("\n"), f"line {number}: not JSON: {exc}"))
            else:
                value = _record_of(found, value, number, raw)
                page.append(value)
            if len(page) >= IMPORT_PAGE:
                yield page
                page = []
    if page:
        yield page


def _record_of(found: ImportFile, value: Any, number: int, raw: bytes) -> Any:
    """An export line gives its entity (a record with --as record); a plain line is what it is (:func:`sniff`
    refused a file that mixes both in ``auto`` mode)."""
    exported = is_export_line(value)
    if not exported:
        found.records += 1
        return value
    found.entities += 1
    if value["entity"] is None:
        return Malformed(
            raw.decode("utf-8", "replace").rstrip("\n"), f"line {number}: task {value.get('id')} has no entity"
        )
    return value["entity"]
