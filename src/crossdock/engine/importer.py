"""Incoming → tasks: read the source once, transform, identify, validate, fingerprint, write in batches.

One run of an incoming feeds every active route that uses it. Parsing and the incoming transform happen
once per record; each route then applies its own transform, identifier, validation and delta.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import xxhash

from crossdock import tracing
from crossdock.connectors.base import Malformed
from crossdock.engine.delivery_gate import import_hold
from crossdock.engine.project import CompiledIncoming, CompiledRoute, Project
from crossdock.engine.run_liveness import heartbeat, process_id
from crossdock.errors import (
    CrossdockError,
    RecordFiltered,
    RecordRejected,
    SourceError,
    StoreUnavailable,
    describe_error,
)
from crossdock.store import ImportCounts, ImportItem, ImportOptions, Store
from crossdock.store.health import database_wait, wait_for_store
from crossdock.tasks import Status

log = logging.getLogger("crossdock.importer")

_DUMPS_OPTS = orjson.OPT_SORT_KEYS
RAW_LIMIT = 64 * 1024


@dataclass
class RouteImportSummary:
    """What one import run did for one route."""

    route: str
    run_id: int | None = None
    active: bool = True
    read: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    filtered: int = 0
    rejected: int = 0
    superseded: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    delivered_realtime: int = 0
    #: ids of the tasks this run created, in order (webhooks answer with them); not part of the run summary.
    #: Kept only for pushed records (bounded by the request size): a source run must not grow with its size.
    task_ids: list[int] = field(default_factory=list)
    keep_ids: bool = False

    def add(self, counts: ImportCounts) -> None:
        if self.keep_ids:
            self.task_ids += counts.created_ids
        for status, n in counts.created.items():
            self.by_status[status] = self.by_status.get(status, 0) + n
        self.unchanged += counts.unchanged + counts.unchanged_created
        self.changed += counts.changed
        self.superseded += counts.superseded

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "active": self.active,
            "read": self.read,
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "filtered": self.filtered,
            "rejected": self.rejected,
            "superseded": self.superseded,
            "by_status": self.by_status,
        }


@dataclass
class ImportSummary:
    incoming: str
    read: int = 0
    duration_s: float = 0.0
    status: str = "ok"
    error: str | None = None
    routes: dict[str, RouteImportSummary] = field(default_factory=dict)
    #: what the source reports beyond records, e.g. ``{"files_read": 2, "files_skipped": 1}``
    source: dict[str, Any] = field(default_factory=dict)
    #: why the source was not read: a maintenance window with ``imports: false``
    held: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "incoming": self.incoming,
            "status": self.status,
            "error": self.error,
            "read": self.read,
            "duration_s": round(self.duration_s, 3),
            "records_per_s": round(self.read / self.duration_s) if self.duration_s > 0 else None,
            "source": self.source,
            "held": self.held,
            "routes": {name: r.to_json() for name, r in self.routes.items()},
        }


Progress = Callable[[int], None]


class _Stopped(CrossdockError):
    """The run was asked to stop before the source was read to the end."""


@dataclass
class _RouteState:
    route: CompiledRoute
    summary: RouteImportSummary
    items: list[ImportItem] = field(default_factory=list)
    options: ImportOptions = field(default_factory=ImportOptions)
    #: the batch being written while the next one is parsed (at most one per route, so batches stay in order)
    pending: asyncio.Task[None] | None = None


#: route transform → identifier → validation → fingerprint for one or more routes, compiled once per run
Acceptor = Callable[[dict[str, Any]], None]


class Importer:
    """Runs incomings. Writes are batched: one transaction per ``batch_size`` records per route."""

    def __init__(
        self,
        project: Project,
        store: Store,
        *,
        worker: str = "importer",
        on_realtime: Callable[[CompiledRoute, list[int]], Any] | None = None,
        clients: dict[str, Any] | None = None,
    ) -> None:
        self.project = project
        project.bind_store(store)
        #: shared connection clients (one per connection); whoever passes them in closes them
        self.clients: dict[str, Any] = clients if clients is not None else {}
        self.store = store
        self.worker = worker
        #: called with the ids of tasks created in processing on realtime routes (delivered right away)
        self.on_realtime = on_realtime
        self._stop_reason: str | None = None
        #: False for entities that already went through the transforms (``tasks import`` of an export): identifier,
        #: validation, delta and supersede only
        self.transforms = True

    def stop(self, why: str = "a stop request") -> None:
        """End source runs after the page in hand: what was read is stored, the run is recorded ``failed``."""
        self._stop_reason = why

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.clients.clear()

    async def run_route(
        self, route_name: str, *, full: bool = False, actor: str = "cli", progress: Progress | None = None
    ) -> ImportSummary:
        """Run a route's incoming. A shared incoming feeds all its active routes in the same pass."""
        route = self.project.route(route_name)
        return await self.run_incoming(route.incoming, full=full, actor=actor, progress=progress)

    async def run_incoming(
        self,
        incoming: CompiledIncoming,
        *,
        full: bool = False,
        actor: str = "cli",
        progress: Progress | None = None,
        records: list[Any] | None = None,
        pages: AsyncIterable[list[Any]] | None = None,
        only: Collection[str] | None = None,
    ) -> ImportSummary:
        """Read the source once (or take pushed ``records``, or ``pages`` of them) and feed every active route of the
        incoming (or those named in ``only``)."""
        started = time.perf_counter()
        now = _now()
        summary = ImportSummary(incoming.name)
        states: list[_RouteState] = []
        active = self.project.active_routes(self.store)
        if only is not None:
            active = {name for name in active if name in only}
        fed = [r.name for r in self.project.routes_of(incoming) if r.name in active]
        # pushed records (a webhook) are taken whatever the window: the sender would lose them otherwise
        pushed = records is not None or pages is not None
        hold = import_hold(self.project, incoming, fed, now) if not pushed and fed else None
        if hold is not None:
            summary.held = hold.reason
            summary.routes = {name: RouteImportSummary(name, active=name in active) for name in fed}
            log.info("import %s %s: not read", incoming.name, hold.reason)
            summary.duration_s = time.perf_counter() - started
            return summary
        for route in self.project.routes_of(incoming):
            if only is not None and route.name not in only:
                continue
            rs = RouteImportSummary(route.name, active=route.name in active, keep_ids=records is not None)
            summary.routes[route.name] = rs
            if not rs.active:
                continue
            rs.run_id = self.store.start_run(route.name, "incoming", actor=actor, now=now, owner=process_id())
            options = ImportOptions(
                delta=route.config.delta,
                supersede=route.config.supersede,
                full=full,
                priority=route.priority,
                resend_failed=route.config.resend_failed,
            )
            states.append(_RouteState(route, rs, options=options))
        if not states:
            summary.duration_s = time.perf_counter() - started
            return summary
        batch_size = incoming.config.batch_size
        acceptors = [self._acceptor(group) for group in _same_work(states)]
        source = None
        traced = (
            tracing.start_import(
                self.store, incoming.name, [s.route.name for s in states], [s.summary.run_id or 0 for s in states]
            )
            if tracing.active()
            else None
        )
        try:
            async with heartbeat(self.store, lambda: [s.summary.run_id for s in states if s.summary.run_id]):
                if records is not None:
                    await self._feed(incoming, states, acceptors, records, summary, batch_size)
                elif pages is not None:
                    async for page in pages:
                        await self._feed(incoming, states, acceptors, page, summary, batch_size)
                        if progress is not None:
                            progress(summary.read)
                else:
                    source = incoming.source_class(incoming.source_options, self._context(incoming, full))
                    async for page in source.pages():
                        await self._feed(incoming, states, acceptors, page, summary, batch_size)
                        if progress is not None:
                            progress(summary.read)
                        if self._stop_reason is not None:
                            raise _Stopped(
                                f"stopped by {self._stop_reason} after {summary.read:,} records, before the source "
                                "was read to the end; what was read is stored, and the next run reads from the "
                                "same place"
                            )
                for state in states:
                    await self._flush(state)
                    await self._settle_pending(state)
                if source is not None:
                    # every batch is committed: only now may the source forget what it handed over (ack messages,
                    # save a cursor, move files). A failed run never gets here, so the next run reads them again.
                    await source.commit()
        except SourceError as exc:
            # what was read before the failure is committed in whole batches; nothing is half-written
            summary.status = "failed"
            summary.error = self.project.redact(exc.message)
            try:
                for state in states:
                    await self._flush(state)
                    await self._settle_pending(state)
            except Exception as later:
                summary.error += self.project.redact(f"; then {describe_error(later)}")
        except Exception as exc:
            # anything else (a full disk, a database that stayed away, a bug): the run is failed, so the source's
            # cursor, {last_run}, file moves and acks stay where they were and the next run reads these records again
            summary.status = "failed"
            summary.error = self.project.redact(describe_error(exc))
            log.debug("import of %s failed", incoming.name, exc_info=True)
        except BaseException as exc:  # cancelled or interrupted: recorded, then passed on
            summary.status = "failed"
            summary.error = f"interrupted ({type(exc).__name__}) before every record was stored"
            raise
        finally:
            for state in states:
                if state.pending is not None and not state.pending.done():
                    state.pending.cancel()
            if source is not None:
                summary.source = source.report()
                await source.close()
            summary.duration_s = time.perf_counter() - started
            try:
                await self._finish_runs(incoming, states, summary)
            finally:
                if traced is not None:
                    traced.end(summary)
        return summary

    async def _finish_runs(self, incoming: CompiledIncoming, states: list[_RouteState], summary: ImportSummary) -> None:
        """Record each route's run. A database that stays away leaves the runs ``running``; the next process to
        start marks them abandoned (see :mod:`crossdock.engine.run_liveness`)."""
        end = _now()
        for state in states:
            rs = state.summary
            rs.read = summary.read
            rs.new = rs.by_status.get("new", 0) + rs.by_status.get("processing", 0)
            run_id = rs.run_id
            assert run_id is not None
            run_summary = {
                **rs.to_json(),
                "duration_s": round(summary.duration_s, 3),
                "incoming": incoming.name,
                **({"source": summary.source} if summary.source else {}),
            }

            def finish(run_id: int = run_id, run_summary: dict[str, Any] = run_summary) -> None:
                self.store.finish_run(run_id, status=summary.status, summary=run_summary, error=summary.error, now=end)

            try:
                await wait_for_store(finish, give_up_after=database_wait())
            except StoreUnavailable as exc:
                log.error("cannot record the end of run %d of %s: %s", run_id, rs.route, exc.message)
                if summary.error is None:
                    summary.status, summary.error = "failed", exc.message

    def _context(self, incoming: CompiledIncoming, full: bool) -> Any:
        ctx = self.project.context(self.clients)
        ctx.store, ctx.incoming, ctx.full = self.store, incoming.name, full
        routes = self.project.routes_of(incoming)
        last = self.store.last_successful_run(routes[0].name, "incoming") if routes else None
        ctx.last_run = last.started_at if last else None
        return ctx

    async def _feed(
        self,
        incoming: CompiledIncoming,
        states: list[_RouteState],
        acceptors: list[Acceptor],
        records: list[Any],
        summary: ImportSummary,
        batch_size: int,
    ) -> None:
        """Take a page in slices, so no write transaction holds more than ``batch_size`` records."""
        start = 0
        while start < len(records):
            room = max(batch_size - max(len(s.items) for s in states), 1)
            chunk = records[start : start + room]
            start += len(chunk)
            self._feed_chunk(incoming, states, acceptors, chunk, summary)
            for state in states:
                if len(state.items) >= batch_size:
                    await self._flush(state)

    def _feed_chunk(
        self,
        incoming: CompiledIncoming,
        states: list[_RouteState],
        acceptors: list[Acceptor],
        records: list[Any],
        summary: ImportSummary,
    ) -> None:
        in_pipeline = incoming.pipeline if incoming.pipeline and self.transforms else None
        summary.read += len(records)
        if in_pipeline is None and len(acceptors) == 1:
            # the common shape (no incoming transform, one route or one group of alike routes): a tight loop
            accept = acceptors[0]
            for record in records:
                if isinstance(record, Malformed):
                    self._malformed(states, record)
                else:
                    accept(record)
            return
        for record in records:
            if isinstance(record, Malformed):
                self._malformed(states, record)
                continue
            try:
                entities = in_pipeline.apply(record) if in_pipeline is not None else [record]
            except RecordFiltered as exc:
                for state in states:
                    self._filtered(state, record, f"incoming {incoming.name}: {exc.message}")
                continue
            except RecordRejected as exc:
                for state in states:
                    self._rejected(state, record, f"incoming {incoming.name}: {exc.message}")
                continue
            for entity in entities:
                for accept in acceptors:
                    accept(entity)

    def _malformed(self, states: list[_RouteState], record: Malformed) -> None:
        """A record the source could not parse: a rejected task with the raw text, on every route.

        Its fingerprint is the raw text's, so the same broken line polled again touches that task (delta)."""
        reason = self.project.redact(record.reason)
        digest = xxhash.xxh3_128_digest(record.raw.encode("utf-8", "backslashreplace"))
        item = ImportItem(Status.REJECTED, None, None, digest, reason, record.raw[:RAW_LIMIT])
        for state in states:
            state.summary.rejected += 1
            state.items.append(item)

    def _acceptor(self, group: list[_RouteState]) -> Acceptor:
        """The per-record work of routes that do the same work, as a closure over their compiled config.

        This is the import hot path. Routes of a shared incoming with no transform of their own, the same
        identifier and the same validation get one serialisation and fingerprint per record, and the same item.
        """
        if _is_plain(group[0].route) or (not self.transforms and group[0].route.schema_validator is None):
            return self._plain_acceptor(group)
        state = group[0]
        route = state.route
        summary = state.summary
        pipeline = route.pipeline if route.pipeline and self.transforms else None
        identify = route.identifier
        limit = route.config.validate_.max_entity_bytes
        validator = route.schema_validator
        status = Status.PROCESSING if route.config.realtime else Status.NEW
        dumps, digest, sort_keys = orjson.dumps, xxhash.xxh3_128_digest, _DUMPS_OPTS
        spec = _spec(route.config.identifier)

        def reject(ident: str, data: bytes, reason: str) -> None:
            summary.rejected += 1
            state.items.append(ImportItem(Status.REJECTED, ident, data, digest(data), reason))

        def accept(entity: dict[str, Any]) -> None:
            if pipeline is not None:
                try:
                    results = pipeline.apply(entity)
                except RecordFiltered as exc:
                    self._filtered(state, entity, f"route {route.name}: {exc.message}")
                    return
                except RecordRejected as exc:
                    self._rejected(state, entity, f"route {route.name}: {exc.message}")
                    return
            else:
                results = [entity]
            for result in results:
                ident = identify(result)
                if ident is None:
                    self._rejected(state, result, f"identifier {spec} is missing or empty in the record")
                    continue
                try:
                    data = dumps(result, option=sort_keys)
                except TypeError as exc:
                    self._rejected(state, result, f"the record cannot be stored as JSON: {exc}")
                    continue
                if len(data) > limit:
                    summary.rejected += 1
                    state.items.append(_oversize(ident, data, limit))
                    continue
                if validator is not None:
                    problem = _schema_problem(validator, result)
                    if problem is not None:
                        reject(ident, data, problem)
                        continue
                state.items.append(ImportItem(status, ident, data, digest(data)))

        return accept

    def _plain_acceptor(self, group: list[_RouteState]) -> Acceptor:
        """Routes without a transform or schema of their own (grouped by :func:`_same_work`): one serialisation and
        fingerprint per record for all of them, so a fan-out costs one route's parse work."""
        first = group[0].route
        identify = first.identifier
        limit = first.config.validate_.max_entity_bytes
        status = Status.PROCESSING if first.config.realtime else Status.NEW
        dumps, digest, sort_keys = orjson.dumps, xxhash.xxh3_128_digest, _DUMPS_OPTS
        spec = _spec(first.config.identifier)

        def accept(entity: dict[str, Any]) -> None:
            ident = identify(entity)
            if ident is None:
                for state in group:
                    self._rejected(state, entity, f"identifier {spec} is missing or empty in the record")
                return
            try:
                data = dumps(entity, option=sort_keys)
            except TypeError as exc:
                for state in group:
                    self._rejected(state, entity, f"the record cannot be stored as JSON: {exc}")
                return
            if len(data) > limit:
                rejected = _oversize(ident, data, limit)
                for state in group:
                    state.summary.rejected += 1
                    state.items.append(rejected)
                return
            # the stores only read items, so every route's batch can hold the same one
            item = ImportItem(status, ident, data, digest(data))
            for state in group:  # state.items is replaced at every flush: look it up each time
                state.items.append(item)

        return accept

    def _filtered(self, state: _RouteState, record: Any, reason: str) -> None:
        state.summary.filtered += 1
        data, ident = _best_effort(state.route, record)
        state.items.append(
            ImportItem(Status.SKIPPED, ident, data, xxhash.xxh3_128_digest(data) if data else None, reason)
        )

    def _rejected(self, state: _RouteState, record: Any, reason: str) -> None:
        state.summary.rejected += 1
        data, ident = _best_effort(state.route, record)
        limit = state.route.config.validate_.max_entity_bytes
        if data is not None and len(data) > limit:
            state.items.append(_oversize(ident, data, limit, self.project.redact(reason)))
            return
        state.items.append(
            ImportItem(
                Status.REJECTED,
                ident,
                data,
                xxhash.xxh3_128_digest(data) if data else None,
                self.project.redact(reason),
            )
        )

    async def _flush(self, state: _RouteState) -> None:
        """Start writing the collected batch; the previous batch of this route is awaited first, for order."""
        if not state.items:
            return
        await self._settle_pending(state)
        items, state.items = state.items, []
        state.pending = asyncio.create_task(self._write(state, items))

    async def _settle_pending(self, state: _RouteState) -> None:
        if state.pending is not None:
            pending, state.pending = state.pending, None
            await pending

    async def _write(self, state: _RouteState, items: list[ImportItem]) -> None:
        options = state.options
        if state.route.config.realtime:
            options.worker = self.worker
            options.lease_until = _now() + timedelta(seconds=state.route.config.outgoing.lease)
        store, route = self.store, state.route.name

        def write() -> ImportCounts:
            return store.import_batch(route, items, run_id=state.summary.run_id, options=options, now=_now())

        # a short outage (a restart, a lock held for a while) is waited out; a long one fails the run
        counts = await wait_for_store(write, give_up_after=database_wait())
        state.summary.add(counts)
        if counts.processing_ids and self.on_realtime is not None:
            await self.on_realtime(state.route, counts.processing_ids)


def _is_plain(route: CompiledRoute) -> bool:
    """No transform or schema of the route's own: its per-record work is identify, serialise, fingerprint."""
    return not route.pipeline and route.schema_validator is None


def _same_work(states: list[_RouteState]) -> list[list[_RouteState]]:
    """Group routes whose per-record work is identical: no route transform or schema, same identifier, limit and
    realtime flag. Anything else gets its own acceptor."""
    groups: dict[Any, list[_RouteState]] = {}
    alone: list[list[_RouteState]] = []
    for state in states:
        route = state.route
        if not _is_plain(route):
            alone.append([state])
            continue
        key = (
            _spec(route.config.identifier),
            route.config.validate_.max_entity_bytes,
            route.config.realtime,
        )
        groups.setdefault(key, []).append(state)
    return [*groups.values(), *alone]


def _oversize(ident: str | None, data: bytes, limit: int, reason: str | None = None) -> ImportItem:
    """A rejected item for a record over ``validate.max_entity_bytes``: past ``RAW_LIMIT`` only a preview is kept.

    Storing it whole would put what the limit keeps out into the database and onto every page showing the task.
    The fingerprint is the whole record's, so the same record polled again touches this task (delta)."""
    size = f"entity is {len(data)} bytes, over the limit of {limit}"
    why = f"{reason}; validate.max_entity_bytes: {size}" if reason else f"validate.max_entity_bytes: {size}"
    digest = xxhash.xxh3_128_digest(data)
    if len(data) <= RAW_LIMIT:
        return ImportItem(Status.REJECTED, ident, data, digest, why)
    preview = data[:RAW_LIMIT].decode("utf-8", "ignore")
    why += f"; only its first {RAW_LIMIT // 1024} KiB are kept, as the raw record"
    return ImportItem(Status.REJECTED, ident, None, digest, why, preview)


def _best_effort(route: CompiledRoute, record: Any) -> tuple[bytes | None, str | None]:
    """Keep what came in (for the person reading the rejected task), with its identifier if it has one."""
    try:
        data = orjson.dumps(record, option=_DUMPS_OPTS)
    except TypeError:
        return None, None
    ident = route.identifier(record) if isinstance(record, dict) else None
    return data, ident


def _schema_problem(validator: Any, entity: Any) -> str | None:
    error = next(iter(validator.iter_errors(entity)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(the record)"
    return f"validate.schema: at {where}: {error.message[:300]}"


def _spec(identifier: str | list[str]) -> str:
    return identifier if isinstance(identifier, str) else "[" + ", ".join(identifier) + "]"


def _now() -> datetime:
    return datetime.now(UTC)
