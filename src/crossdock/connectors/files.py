"""Local files in and out. Sources read NDJSON, JSON arrays, CSV and XML, streaming, so memory stays flat; targets
write NDJSON, CSV or JSON files atomically, one file per batch (or append NDJSON lines).

The reading and writing parts here are shared with the SFTP connector (:mod:`crossdock.connectors.sftp`), which
downloads a file to a temporary folder, reads it with the same parsers, and uploads what the same renderers make.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import glob
import io
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import ijson
import orjson
import xxhash
from pydantic import model_validator

from crossdock.connectors.base import BatchTarget, ConnectorContext, Delivered, Malformed, Options, Source
from crossdock.connectors.xmlrecords import xml_record_pages
from crossdock.errors import PermanentError, SourceError, TransientError
from crossdock.tasks import Task

log = logging.getLogger("crossdock.connectors.files")

Format = Literal["auto", "ndjson", "json", "csv", "xml"]
OutFormat = Literal["auto", "ndjson", "json", "csv"]
PAGE = 2000
_SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv", ".tsv": "csv", ".xml": "xml"}


# --- reading ---------------------------------------------------------------------------------------------------


class ReadOptions(Options):
    """What the file and SFTP sources share: which files, how to parse them, and what to do after reading."""

    #: a file, or a glob such as ``data/*.ndjson`` (relative to the project folder, or the SFTP login folder)
    path: str
    format: Format = "auto"
    #: text encoding of every format; default UTF-8 (CSV: a UTF-8 byte-order mark is dropped; XML: the
    #: document's own declaration decides unless this is set)
    encoding: str | None = None
    #: CSV only
    delimiter: str = ","
    #: CSV only: False when the file has no header row; then ``columns`` names the fields
    header: bool = True
    columns: list[str] | None = None
    #: JSON only: where the array of records sits, e.g. ``items`` (dotted); empty = the top level
    records: str = ""
    #: XML only: the element holding one record, e.g. ``product``
    record: str | None = None
    #: after the file's records are committed: keep it, delete it, or move it (to ``processed/`` beside it)
    after: Literal["keep", "delete", "move"] = "keep"
    #: with ``after: move``: the folder to move to instead of ``processed/`` beside the file
    move_to: str | None = None
    #: skip files already imported (same content hash). Default: on for a glob (a drop folder), off for one
    #: fixed path (a feed rewritten in place, where delta detection handles unchanged records)
    skip_imported: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ReadOptions:
        if self.move_to is not None and self.after != "move":
            raise ValueError("move_to: needs after: move")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ValueError(f"unknown encoding {self.encoding!r}") from None
        fmt = self.format if self.format != "auto" else _SUFFIXES.get(Path(self.path).suffix.lower())
        if fmt == "xml" and not self.record:
            raise ValueError("XML needs record: ELEMENT, the element that holds one record (e.g. record: product)")
        return self

    @property
    def skips_imported(self) -> bool:
        return self.skip_imported if self.skip_imported is not None else glob.has_magic(self.path)


def format_of(name: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    found = _SUFFIXES.get(os.path.splitext(name)[1].lower())
    if found is None:
        raise SourceError(f"cannot tell the format of {os.path.basename(name)}; set format: ndjson, json, csv or xml")
    return found


def _is_utf8(encoding: str | None) -> bool:
    return encoding is None or codecs.lookup(encoding).name == "utf-8"


def record_pages(path: Path, options: ReadOptions) -> Iterator[list[Any]]:
    """Pages of records (dicts or :class:`Malformed`) from one local file, in any supported format."""
    fmt = format_of(path.name, options.format)
    if fmt == "ndjson":
        if _is_utf8(options.encoding):
            yield from _ndjson_pages(path)
        else:
            yield from _ndjson_text_pages(path, options.encoding or "utf-8")
        return
    if fmt == "xml":
        assert options.record is not None  # checked by the options
        with _open_binary(path) as handle:
            yield from xml_record_pages(handle, path.name, options.record, options.encoding)
        return
    reader = _read_json_array(path, options) if fmt == "json" else _read_csv(path, options)
    page: list[Any] = []
    try:
        for item in reader:
            page.append(item)
            if len(page) >= PAGE:
                yield page
                page = []
    except SourceError:
        if page:  # the records before a truncation or a bad byte are good: they go in, then the run fails
            yield page
        raise
    if page:
        yield page


def _open_binary(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from None


def _ndjson_pages(path: Path, chunk: int = 1 << 20) -> Iterator[list[Any]]:
    """Pages of records, a megabyte of lines at a time: the hot path of big imports, so kept tight."""
    loads = orjson.loads
    handle = _open_binary(path)
    lineno = 0
    try:
        while True:
            lines = handle.readlines(chunk)
            if not lines:
                return
            if lineno == 0 and lines[0].startswith(codecs.BOM_UTF8):
                lines[0] = lines[0][3:]
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


def _ndjson_text_pages(path: Path, encoding: str, chunk: int = 1 << 20) -> Iterator[list[Any]]:
    """NDJSON in another encoding than UTF-8: decoded by Python first (slower than the bytes path)."""
    try:
        handle = open(path, encoding=encoding, newline="")  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from None
    lineno = 0
    try:
        while True:
            lines = handle.readlines(chunk)
            if not lines:
                return
            page: list[Any] = []
            for line in lines:
                lineno += 1
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    if line.strip():
                        page.append(Malformed(line.rstrip("\r\n"), f"{path.name} line {lineno}: invalid JSON ({exc})"))
                    continue
                if type(record) is dict:
                    page.append(record)
                else:
                    page.append(Malformed(line.rstrip("\r\n"), f"{path.name} line {lineno}: expected a JSON object"))
            yield page
    except UnicodeDecodeError as exc:
        problem = f"not {encoding} text after line {lineno} ({exc.reason}); set encoding:"
        raise SourceError(f"{path.name}: {problem}") from None
    finally:
        handle.close()


class _Utf8Reader:
    """A text file seen as UTF-8 bytes, for ijson, which parses bytes."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text

    def read(self, n: int = -1) -> bytes:
        return self._text.read(n).encode("utf-8")


def _read_json_array(path: Path, options: ReadOptions) -> Iterator[Any]:
    records = options.records
    prefix = (records + ".item") if records else "item"
    handle: Any
    if _is_utf8(options.encoding):
        handle = _open_binary(path)
    else:
        try:
            text = open(path, encoding=options.encoding)  # noqa: SIM115
        except OSError as exc:
            raise SourceError(f"cannot open {path}: {exc.strerror}") from None
        handle = _Utf8Reader(text)
        handle.close = text.close
    index = 0
    try:
        for record in ijson.items(handle, prefix, use_float=True):
            index += 1
            if isinstance(record, dict):
                yield record
            else:
                yield Malformed(_text(orjson.dumps(record)), f"{path.name} record {index}: expected a JSON object")
    except ijson.JSONError as exc:
        raise SourceError(f"{path.name}: invalid or truncated JSON after record {index}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path.name}: not {options.encoding} text ({exc.reason}); set encoding:") from None
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


def _read_csv(path: Path, options: ReadOptions) -> Iterator[Any]:
    # utf-8-sig reads plain UTF-8 too, and drops the byte-order mark spreadsheet programs put first
    encoding = options.encoding or "utf-8-sig"
    try:
        handle = open(path, encoding=encoding, newline="")  # noqa: SIM115
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
        raise SourceError(f"{path.name}: not {encoding} text ({exc.reason}); set encoding:") from None
    except csv.Error as exc:
        raise SourceError(f"{path.name}: CSV error: {exc}") from None
    finally:
        handle.close()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r\n")


def file_digest(path: Path) -> str:
    """xxh3-128 of the file's bytes: the identity of a file's content, whatever its name or time stamp."""
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


class ImportedFiles:
    """Content hashes of the files an incoming has imported, kept in the store's storage ``_files:<incoming>``.

    A hash is remembered only after the run that read the file has committed its records, so a failed run
    leaves the file importable. A ``--full`` run reads every file again (and remembers them again).
    """

    PREFIX = "_files:"

    def __init__(self, store: Any, incoming: str, *, full: bool = False) -> None:
        self.store = store
        self.storage = self.PREFIX + incoming
        self.full = full
        #: hashes read in this run: the same content twice in one run is read once
        self._this_run: set[str] = set()

    @classmethod
    def of(cls, context: ConnectorContext, options: ReadOptions) -> ImportedFiles | None:
        if not options.skips_imported or context.store is None or not context.incoming:
            return None
        return cls(context.store, context.incoming, full=context.full)

    def already(self, digest: str, name: str) -> bool:
        """True (and a log line) when this content was imported before, or earlier in this run."""
        if digest in self._this_run:
            log.info("%s: skipped, the same content was read earlier in this run (xxh3 %s)", name, digest)
            return True
        self._this_run.add(digest)
        if self.full:
            return False
        seen = self.store.storage_get(self.storage, digest, now=_now())
        if seen is None:
            return False
        log.info("%s: skipped, already imported as %s at %s (xxh3 %s)", name, seen.get("name"), seen.get("at"), digest)
        return True

    def remember(self, digest: str, name: str, size: int) -> None:
        self.store.storage_put(self.storage, digest, {"name": name, "size": size, "at": _now().isoformat()}, now=_now())


@dataclass(slots=True)
class HandledFile:
    """A file a run has dealt with: read (its records go in) or skipped (imported before)."""

    location: str
    name: str
    size: int
    digest: str | None
    read: bool


class FileSourceOptions(ReadOptions):
    type: Literal["file"] = "file"


class FileSource(Source):
    """Local files matching a path or glob. After-read actions and remembered hashes wait for :meth:`commit`."""

    options_model = FileSourceOptions
    options: FileSourceOptions

    def __init__(self, options: FileSourceOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._imported = ImportedFiles.of(context, options)
        self._handled: list[HandledFile] = []

    def files(self) -> list[Path]:
        pattern = str(self.context.root / self.options.path)
        if glob.has_magic(pattern):
            return [Path(m) for m in sorted(glob.glob(pattern)) if os.path.isfile(m)]
        path = Path(pattern)
        if not path.exists():
            if self.options.after != "keep":
                # a fixed path that is moved or deleted after reading is simply absent until the next drop
                log.info("%s: not there; nothing to import", self.options.path)
                return []
            raise SourceError(f"source file {self.options.path} not found (looked in {path.parent.resolve()})")
        return [path]

    def describe(self) -> str:
        return f"file {self.options.path}"

    async def pages(self) -> AsyncIterator[list[Any]]:
        for path in self.files():
            size = path.stat().st_size
            digest = None
            if self._imported is not None:
                digest = await asyncio.to_thread(file_digest, path)
                if self._imported.already(digest, path.name):
                    self._handled.append(HandledFile(str(path), path.name, size, digest, read=False))
                    continue
            for page in record_pages(path, self.options):
                yield page
                await asyncio.sleep(0)
            self._handled.append(HandledFile(str(path), path.name, size, digest, read=True))

    async def commit(self) -> None:
        """The run committed every record: remember the hashes, then delete or move the files."""
        for handled in self._handled:
            if self._imported is not None and handled.digest is not None and handled.read:
                self._imported.remember(handled.digest, handled.name, handled.size)
            try:
                await asyncio.to_thread(self._after, Path(handled.location))
            except OSError as exc:
                raise SourceError(
                    f"{handled.name}: records imported, but after: {self.options.after} failed: {exc.strerror}"
                ) from None

    def _after(self, path: Path) -> None:
        if self.options.after == "delete":
            path.unlink(missing_ok=True)
        elif self.options.after == "move":
            folder = self.context.root / self.options.move_to if self.options.move_to else path.parent / "processed"
            folder.mkdir(parents=True, exist_ok=True)
            dest = free_name(str(folder / path.name), os.path.lexists)
            os.rename(path, dest)
            log.info("%s: moved to %s", path.name, dest)

    def report(self) -> dict[str, Any]:
        return files_report(self._handled)


def files_report(handled: list[HandledFile]) -> dict[str, Any]:
    return {"files_read": sum(h.read for h in handled), "files_skipped": sum(not h.read for h in handled)}


def free_name(path: str, exists: Callable[[str], bool]) -> str:
    """``path``, or ``stem-1.ext``, ``stem-2.ext`` ... when taken: never overwrite a file someone kept."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while exists(candidate):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


# --- writing ---------------------------------------------------------------------------------------------------

_PLACEHOLDERS = ("now", "date", "time", "timestamp", "run", "first_task", "last_task", "count", "route")


class WriteOptions(Options):
    """What the file and SFTP targets share: where each batch's file goes and how it is written."""

    #: the file of a batch, with placeholders: ``{date}``, ``{time}``, ``{timestamp}``, ``{run}`` (unique per
    #: batch), ``{first_task}``, ``{last_task}``, ``{count}``, ``{route}``, ``{now:%Y%m%d}``
    path: str
    format: OutFormat = "auto"
    #: ``file_per_batch`` writes one new file per batch (temp file + rename); ``append`` adds NDJSON lines to
    #: one file. Default: append for an NDJSON path without placeholders (as before), else file_per_batch
    mode: Literal["append", "file_per_batch"] | None = None
    #: CSV only: the columns, in order; default: the first entity's keys
    columns: list[str] | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    #: fsync the file (and its folder) before a task counts as delivered, so it survives a power cut
    fsync: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> WriteOptions:
        try:
            self.path.format_map(_names(datetime(2000, 1, 1, tzinfo=UTC), 1, 2, 3, "r"))
        except (KeyError, ValueError, IndexError) as exc:
            known = ", ".join("{" + p + "}" for p in _PLACEHOLDERS)
            raise ValueError(f"bad placeholder in path ({exc}); known: {known}") from None
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None
        fmt = self.out_format
        if self.mode == "append" and fmt != "ndjson":
            raise ValueError(f"mode: append works for NDJSON only (this is {fmt}); use mode: file_per_batch")
        return self

    @property
    def out_format(self) -> str:
        if self.format != "auto":
            return self.format
        found = _SUFFIXES.get(os.path.splitext(self.path)[1].lower())
        if found is None or found == "xml":
            raise ValueError("cannot tell the format from the path; set format: ndjson, csv or json")
        return found

    @property
    def resolved_mode(self) -> str:
        if self.mode is not None:
            return self.mode
        templated = "{" in self.path
        return "append" if self.out_format == "ndjson" and not templated else "file_per_batch"


def _names(now: datetime, first: int, last: int, count: int, route: str) -> dict[str, Any]:
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond:06d}Z"
    return {
        "now": now,
        "date": now.strftime("%Y-%m-%d"),
        "time": now.strftime("%H%M%S"),
        "timestamp": stamp,
        "run": f"{stamp}-{first}",
        "first_task": first,
        "last_task": last,
        "count": count,
        "route": route,
    }


def batch_path(options: WriteOptions, tasks: list[Task]) -> str:
    """The batch's file name from the path template."""
    ids = [t.id for t in tasks]
    return options.path.format_map(_names(_now(), min(ids), max(ids), len(ids), tasks[0].route))


@dataclass
class RenderedBatch:
    """A batch as file content: the bytes, and per item either None (in the file) or why it is not."""

    data: bytes
    outcomes: list[Exception | None]

    @property
    def written(self) -> int:
        return sum(o is None for o in self.outcomes)


def render_batch(options: WriteOptions, items: list[tuple[Task, Any]]) -> RenderedBatch:
    """Serialise the entities in the target's format. An entity that cannot be written fails alone."""
    fmt = options.out_format
    outcomes: list[Exception | None] = []
    if fmt == "csv":
        return _render_csv(options, items)
    parts: list[bytes] = []
    for _task, entity in items:
        try:
            parts.append(orjson.dumps(entity))
        except TypeError as exc:
            outcomes.append(PermanentError(f"entity is not JSON-serialisable: {exc}"))
            continue
        outcomes.append(None)
    data = b"".join(p + b"\n" for p in parts) if fmt == "ndjson" else b"[\n" + b",\n".join(parts) + b"\n]\n"
    if not _is_utf8(options.encoding):
        data = data.decode("utf-8").encode(options.encoding)
    return RenderedBatch(data, outcomes)


def _render_csv(options: WriteOptions, items: list[tuple[Task, Any]]) -> RenderedBatch:
    columns = options.columns
    if columns is None:
        first = next((e for _t, e in items if isinstance(e, dict)), None)
        columns = list(first) if first is not None else []
    known = set(columns)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=options.delimiter, lineterminator="\r\n")
    writer.writerow(columns)
    outcomes: list[Exception | None] = []
    for _task, entity in items:
        if not isinstance(entity, dict):
            outcomes.append(PermanentError("a CSV row needs an object entity"))
            continue
        extra = [k for k in entity if k not in known] if options.columns is None else []
        if extra:
            outcomes.append(
                PermanentError(
                    f"fields {', '.join(extra)} are not among the CSV columns (taken from the first entity "
                    f"of the batch: {', '.join(columns)}); set columns: to choose them"
                )
            )
            continue
        try:
            writer.writerow([_cell(entity.get(c)) for c in columns])
        except TypeError as exc:
            outcomes.append(PermanentError(f"entity cannot be written as CSV: {exc}"))
            continue
        outcomes.append(None)
    try:
        data = out.getvalue().encode(options.encoding)
    except UnicodeEncodeError as exc:
        return RenderedBatch(
            b"", [PermanentError(f"a value cannot be written in {options.encoding}: {exc.reason}") for _ in items]
        )
    return RenderedBatch(data, outcomes)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def settle_outcomes(
    rendered: RenderedBatch, error: Exception | None, details: dict[str, Any], message: str
) -> list[Delivered | Exception]:
    """Per item: the entity's own problem, else the write's error, else delivered."""
    results: list[Delivered | Exception] = []
    for outcome in rendered.outcomes:
        if outcome is not None:
            results.append(outcome)
        elif error is not None:
            results.append(error)
        else:
            results.append(Delivered(details=details, message=message))
    return results


class FileTargetOptions(WriteOptions):
    type: Literal["file"] = "file"


class FileTarget(BatchTarget):
    """Writes each batch to a new file atomically (temp file, fsync, rename), or appends NDJSON lines.

    A task is finished only once its file is in place under its final name and fsynced (``fsync: true``).
    """

    options_model = FileTargetOptions
    options: FileTargetOptions

    def __init__(self, options: FileTargetOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"file {self.options.path}"

    def preview(self, task: Task, entity: Any) -> dict[str, Any]:
        """The file and the text this entity would become there (alone: a batch shares one file)."""
        rendered = render_batch(self.options, [(task, entity)])
        if rendered.outcomes and rendered.outcomes[0] is not None:
            raise rendered.outcomes[0]
        append = self.options.resolved_mode == "append"
        where = self.options.path if append else batch_path(self.options, [task])
        text = rendered.data.decode(self.options.encoding, "replace")
        return {"target": self.describe(), "file": where, "mode": "append" if append else "new file", "text": text}

    async def deliver_batch(self, items: list[tuple[Task, Any]]) -> list[Delivered | Exception]:
        rendered = render_batch(self.options, items)
        if not rendered.written:
            return settle_outcomes(rendered, None, {}, "")
        append = self.options.resolved_mode == "append"
        name = self.options.path if append else batch_path(self.options, [t for t, _ in items])
        final = self.context.root / name
        error: Exception | None = None
        try:
            if append:
                async with self._lock:
                    await asyncio.to_thread(self._append, final, rendered.data)
            else:
                final = await asyncio.to_thread(self._publish, final, rendered.data)
        except PermissionError as exc:
            error = PermanentError(f"cannot write {name}: {exc.strerror}")
        except OSError as exc:
            error = TransientError(f"cannot write {name}: {exc.strerror}")
        shown = os.path.relpath(final, self.context.root)
        verb = "appended to" if append else "written to"
        return settle_outcomes(rendered, error, {"file": shown}, f"{verb} {shown}")

    def _append(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(data)
            handle.flush()
            if self.options.fsync:
                os.fsync(handle.fileno())

    def _publish(self, final: Path, data: bytes) -> Path:
        """Temp file in the same folder, fsync, then a hard link under the first free name (never overwrites)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self.options.fsync:
                    os.fsync(handle.fileno())
            dest = _link_free(Path(temp), final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        if self.options.fsync:
            _fsync_dir(final.parent)
        return dest


def _link_free(temp: Path, final: Path) -> Path:
    """Give ``temp`` the first free name among ``final``, ``final-1`` ...; a link fails rather than overwrite."""
    stem, ext = os.path.splitext(final.name)
    n = 0
    while True:
        dest = final if n == 0 else final.with_name(f"{stem}-{n}{ext}")
        try:
            os.link(temp, dest)
            return dest
        except FileExistsError:
            n += 1
        except OSError:
            # no hard links on this file system: check, then rename (a narrow race, on such systems only)
            if dest.exists():
                n += 1
                continue
            os.rename(temp, dest)
            return dest


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> datetime:
    return datetime.now(UTC)
