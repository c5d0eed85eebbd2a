"""Local files: NDJSON, JSON arrays and CSV in; NDJSON out. Everything streams, so memory stays flat."""

from __future__ import annotations

import asyncio
import csv
import glob
import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import ijson
import orjson

from crossdock.connectors.base import ConnectorContext, Delivered, Malformed, Options, Source, Target
from crossdock.errors import PermanentError, SourceError, TransientError
from crossdock.tasks import Task

Format = Literal["auto", "ndjson", "json", "csv"]
PAGE = 2000


class FileSourceOptions(Options):
    type: Literal["file"] = "file"
    #: a file, or a glob such as ``data/*.ndjson`` (relative to the project folder)
    path: str
    format: Format = "auto"
    encoding: str = "utf-8"
    #: CSV only
    delimiter: str = ","
    #: CSV only: False when the file has no header row; then ``columns`` names the fields
    header: bool = True
    columns: list[str] | None = None
    #: JSON only: where the array of records sits, e.g. ``items`` (dotted); empty = the top level
    records: str = ""


def _format_of(path: Path, fmt: Format) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise SourceError(f"cannot tell the format of {path.name}; set format: ndjson, json or csv")


class FileSource(Source):
    options_model = FileSourceOptions
    options: FileSourceOptions

    def files(self) -> list[Path]:
        pattern = str(self.context.root / self.options.path)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        paths = [Path(m) for m in matches]
        if not glob.has_magic(pattern) and not paths[0].exists():
            raise SourceError(f"source file {self.options.path} not found (looked in {paths[0].parent.resolve()})")
        return paths

    def describe(self) -> str:
        return f"file {self.options.path}"

    async def pages(self) -> AsyncIterator[list[Any]]:
        for path in self.files():
            if _format_of(path, self.options.format) == "ndjson":
                for page in _ndjson_pages(path):
                    yield page
                    await asyncio.sleep(0)
                continue
            reader = self._reader(path)
            while True:
                page = _take(reader, PAGE)
                if not page:
                    break
                yield page
                await asyncio.sleep(0)

    def _reader(self, path: Path) -> Iterator[Any]:
        fmt = _format_of(path, self.options.format)
        if fmt == "json":
            return _read_json_array(path, self.options.records)
        return _read_csv(path, self.options)


def _take(reader: Iterator[Any], n: int) -> list[Any]:
    page = []
    for item in reader:
        page.append(item)
        if len(page) >= n:
            break
    return page


def _ndjson_pages(path: Path, chunk: int = 1 << 20) -> Iterator[list[Any]]:
    """Pages of records, a megabyte of lines at a time: the hot path of big imports, so kept tight."""
    loads = orjson.loads
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed in finally, generator-scoped
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from None
    lineno = 0
    try:
        while True:
            lines = handle.readlines(chunk)
            if not lines:
                return
            page: list[Any] = []
            append = page.append
            for line in lines:
                lineno += 1
                try:
                    record = loads(line)
                except orjson.JSONDecodeError as exc:
                    if line.strip():
                        append(Malformed(_text(line), f"{path.name} line {lineno}: invalid JSON ({exc})"))
                    continue
                if type(record) is dict:
                    append(record)
                else:
                    append(Malformed(_text(line), f"{path.name} line {lineno}: expected a JSON object"))
            yield page
    finally:
        handle.close()


def _read_json_array(path: Path, records: str) -> Iterator[Any]:
    prefix = (records + ".item") if records else "item"
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from None
    index = 0
    try:
        for record in ijson.items(handle, prefix, use_float=True):
            index += 1
            if isinstance(record, dict):
                yield record
            else:
                yield Malformed(_text(orjson.dumps(record)), f"{path.name} record {index}: expected a JSON object")
    except ijson.JSONError as exc:
        raise SourceError(f"{path.name}: invalid JSON after record {index}: {exc}") from None
    finally:
        handle.close()
    if index == 0 and records:
        # ijson finds nothing when the path is wrong; say so rather than import zero records silently
        with open(path, "rb") as check:
            top = next(ijson.parse(check), None)
        if top is not None and top[1] == "start_map":
            with open(path, "rb") as again:
                keys = [k for p, e, k in ijson.parse(again) if p == "" and e == "map_key"]
            if records.split(".")[0] not in keys:
                raise SourceError(
                    f"{path.name}: no records at {records!r}; top-level keys are {', '.join(keys) or 'none'}"
                )


def _read_csv(path: Path, options: FileSourceOptions) -> Iterator[Any]:
    try:
        handle = open(path, encoding=options.encoding, newline="")  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from None
    try:
        delimiter = "\t" if path.suffix.lower() == ".tsv" and options.delimiter == "," else options.delimiter
        reader = csv.reader(handle, delimiter=delimiter)
        if options.header:
            try:
                columns = next(reader)
            except StopIteration:
                return
        elif options.columns:
            columns = options.columns
        else:
            raise SourceError(f"{path.name}: header: false needs columns: [...]")
        width = len(columns)
        for row in reader:
            if not row:
                continue
            if len(row) != width:
                raw = io.StringIO()
                csv.writer(raw, delimiter=delimiter).writerow(row)
                yield Malformed(
                    raw.getvalue().rstrip("\r\n"),
                    f"{path.name} line {reader.line_num}: {len(row)} fields, expected {width}",
                )
                continue
            yield dict(zip(columns, row, strict=True))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path.name}: not {options.encoding} text ({exc.reason}); set encoding:") from None
    except csv.Error as exc:
        raise SourceError(f"{path.name}: CSV error: {exc}") from None
    finally:
        handle.close()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r\n")


class FileTargetOptions(Options):
    type: Literal["file"] = "file"
    #: NDJSON file the entities are appended to (relative to the project folder)
    path: str
    #: call fsync after each batch, so a finished task's line survives a power cut
    fsync: bool = True


class FileTarget(Target):
    """Appends one NDJSON line per entity; a task is finished only after its line is flushed."""

    options_model = FileTargetOptions
    options: FileTargetOptions
    supports_batch = True

    def __init__(self, options: FileTargetOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._path = context.root / options.path
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"file {self.options.path}"

    async def deliver(self, task: Task, entity: Any) -> Delivered:
        outcome = (await self.deliver_batch([(task, entity)]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def deliver_batch(self, items: list[tuple[Task, Any]]) -> list[Delivered | Exception]:
        try:
            lines = b"".join(orjson.dumps(entity) + b"\n" for _task, entity in items)
        except TypeError as exc:
            return [PermanentError(f"entity is not JSON-serialisable: {exc}") for _ in items]
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, lines)
            except OSError as exc:
                return [TransientError(f"cannot write {self.options.path}: {exc.strerror}") for _ in items]
        details = {"file": self.options.path}
        return [Delivered(details=details, message=f"appended to {self.options.path}") for _ in items]

    def _append(self, data: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._path, "ab") as handle:
            handle.write(data)
            handle.flush()
            if self.options.fsync:
                os.fsync(handle.fileno())
