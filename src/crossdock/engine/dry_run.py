"""`crossdock run ROUTE --dry-run`: what a run would do, worked out against the store without writing or sending.

The source is read as the import reads it, but never told the records were taken (no :meth:`Source.commit`: no
cursor saved, no file moved, deleted or remembered as imported, no message acknowledged). The records go through
the importer's own per-record work (incoming and route transforms, identifier, validation, fingerprint), and each
batch is decided by :func:`~crossdock.store.import_plan.import_plan`, the function the ledger's real import calls,
fed with the store's read of the latest tasks (:meth:`Ledger.delta_latest`). What an earlier batch of the same dry
run would have written is kept in memory, so a second copy of an identifier is decided as the real run decides it.

Nothing is written: the SQLite file is opened read-only (its bytes stay as they are), PostgreSQL sessions are
read-only, no run is recorded, and what a ``save`` step stores stays in memory. The outgoing transform runs on the
records that would be sent, and the target renders what it would send (:meth:`Target.preview`) without sending.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from crossdock.connectors.base import Target, idempotency_key
from crossdock.engine.delivery_gate import import_hold
from crossdock.engine.importer import Importer, ImportSummary, RouteImportSummary, _RouteState
from crossdock.engine.project import CompiledRoute, Project, StorageBridge, effective_active
from crossdock.errors import CrossdockError, DeliveryError, RecordFiltered, RecordRejected, describe_error
from crossdock.store import ImportItem, ImportOptions, Store, backend_name, sqlite_path
from crossdock.store.import_plan import (
    DeltaKey,
    ImportPlan,
    Latest,
    delta_keys,
    import_plan,
    resend_candidates,
    unkeyed_key,
)
from crossdock.store.ledger import Ledger
from crossdock.tasks import Status, Task
from crossdock.transform import compile_steps

#: records shown when ``--show`` is not given
DEFAULT_SHOW = 10
#: the most changed fields listed per record, and the longest value shown (as compact JSON)
MAX_DIFF_FIELDS = 20
MAX_VALUE_CHARS = 200
#: distinct filtered and rejected reasons listed (by count); the rest are summed as "other reasons"
MAX_REASONS = 10
#: statuses a record is sent from: created in them, a task goes out in this run
_SENT = (Status.NEW, Status.PROCESSING)


# --- opening the database without writing ---------------------------------------------------------


def open_read_only(url: str, *, base: Path | None = None) -> tuple[Store, str | None]:
    """The store at ``url`` opened so it cannot write, and a note when there is nothing to read yet.

    SQLite is opened ``mode=ro`` (no migration, no checkpoint into the main file), PostgreSQL with read-only
    sessions. A database that does not exist yet (or holds no crossdock schema) reads as empty: every record is
    new. One whose schema is older than this crossdock is refused: migrating is a write.
    """
    from crossdock.store.memory import MemoryStore
    from crossdock.store.sqlfiles import load_migrations

    kind = backend_name(url)
    if kind == "memory":
        return MemoryStore(), None
    store: Any
    if kind == "sqlite":
        path = sqlite_path(url, base)
        if not path.exists():
            return MemoryStore(), f"no database at {path} yet: every record counts as never seen"
        from crossdock.store.sqlite.store import SQLiteStore

        store = SQLiteStore(path, create=False, read_only=True)
        package = "crossdock.store.sqlite"
    else:
        from crossdock.store.postgres.store import PostgresStore

        store = PostgresStore(url, create=False, read_only=True, max_size=2)
        package = "crossdock.store.postgres"
    have = store.schema_version()
    want = max(version for version, _name, _sql in load_migrations(package))
    if have == 0:
        store.close()
        return MemoryStore(), "the database holds no crossdock schema yet: every record counts as never seen"
    if have < want:
        store.close()
        raise CrossdockError(
            f"the database schema is at version {have} and this crossdock needs {want}; run `crossdock db upgrade` "
            "first (a dry run writes nothing, so it does not migrate either)"
        )
    return store, None


# --- field-level diff -----------------------------------------------------------------------------


def field_diff(old: Any, new: Any, *, limit: int = MAX_DIFF_FIELDS) -> tuple[list[dict[str, Any]], int]:
    """The changed leaves from ``old`` to ``new``, by path (``price``, ``attributes.color``, ``images[2]``), and how
    many more there were past ``limit``. An added field has no ``old``, a removed one no ``new``."""
    found: list[dict[str, Any]] = []
    _walk(old, new, "", found)
    return found[:limit], max(len(found) - limit, 0)


_MISSING = object()


def _walk(old: Any, new: Any, path: str, found: list[dict[str, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            _walk(old.get(key, _MISSING), new.get(key, _MISSING), _key_path(path, str(key)), found)
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            _walk(old[i] if i < len(old) else _MISSING, new[i] if i < len(new) else _MISSING, f"{path}[{i}]", found)
        return
    if old is _MISSING and new is _MISSING:
        return
    # 1 and 1.0, True and 1 differ on the wire: compare with the type
    if old is not _MISSING and new is not _MISSING and type(old) is type(new) and old == new:
        return
    change: dict[str, Any] = {"path": path or "(the record)"}
    if old is not _MISSING:
        change["old"] = _capped(old)
    if new is not _MISSING:
        change["new"] = _capped(new)
    found.append(change)


def _key_path(path: str, key: str) -> str:
    plain = key and all(c.isalnum() or c in "_-$@" for c in key)
    if plain:
        return f"{path}.{key}" if path else key
    return f"{path}[{orjson.dumps(key).decode()}]"


def _capped(value: Any) -> Any:
    """Scalars as they are (long strings cut); objects and lists as their JSON text when it is too long."""
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    if isinstance(value, dict | list):
        text = orjson.dumps(value).decode()
        return value if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"
    return value


def redacted(value: Any, redact: Any) -> Any:
    """Every string of a JSON-like value (keys included) through the project's redactor."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {(redact(k) if isinstance(k, str) else k): redacted(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v, redact) for v in value]
    return value


def _replace_text(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _replace_text(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_text(v, old, new) for v in value]
    return value


# --- storages and pipelines of their own -------------------------------------------------------------


class DryStorages(StorageBridge):
    """Storages as a dry run's transforms see them: what a ``save`` step stores stays here, and reads see it
    first, then the store's."""

    def __init__(self, ttls: dict[str, float | None], store: Any) -> None:
        super().__init__(ttls)
        self.store = store
        self.saved: dict[tuple[str, str], Any] = {}

    def storage_get(self, storage: str, key: str) -> Any | None:
        if (storage, key) in self.saved:
            return self.saved[(storage, key)]
        return super().storage_get(storage, key)

    def storage_put(self, storage: str, key: str, value: Any) -> None:
        self._bound(storage)
        self.saved[(storage, key)] = value


def isolated_route(project: Project, route: CompiledRoute, storages: StorageBridge) -> CompiledRoute:
    """The route with its incoming, route and outgoing pipelines compiled again over ``storages``, so a dry run
    inside ``serve`` never writes the storages the live engine uses."""
    named = project.loaded.config.transformer_steps()

    def compiled(steps: list[Any]) -> Any:
        return compile_steps(steps, named=named, storages=storages)

    incoming = replace(route.incoming, pipeline=compiled(route.incoming.config.transform))
    return replace(
        route,
        incoming=incoming,
        pipeline=compiled(route.config.transform),
        outgoing_pipeline=compiled(route.config.outgoing.transform),
    )


# --- the dry run ------------------------------------------------------------------------------------


@dataclass
class _Plans:
    """What the batches of one dry run would have written, kept in memory."""

    #: per delta key, the task an earlier batch would have made the latest (negative ids: not real tasks)
    overlay: dict[DeltaKey, Latest] = field(default_factory=dict)
    next_id: int = 0
    reasons: dict[str, Counter[str]] = field(default_factory=lambda: {"filtered": Counter(), "rejected": Counter()})
    #: the first changed records: (identifier, entity JSON)
    changed: list[tuple[str, bytes]] = field(default_factory=list)
    #: the first records that would be sent: (id, identifier, entity JSON)
    sending: list[tuple[int, str | None, bytes]] = field(default_factory=list)
    new_tasks: int = 0
    #: tasks already queued before this run that it would supersede
    superseded_queued: int = 0


class DryRun(Importer):
    """One dry run of a route: the importer's per-record work, the ledger's import plan, no writes."""

    def __init__(self, project: Project, store: Store, *, show: int = DEFAULT_SHOW) -> None:
        super().__init__(project, store, worker="dry-run")
        if not isinstance(store, Ledger):
            raise CrossdockError(f"a dry run needs a store that can read its delta state; {store.backend} cannot")
        self.ledger = store
        self.show = show
        self._plans = _Plans()
        self._route: CompiledRoute | None = None
        self._options = ImportOptions()

    async def run(
        self, name: str, *, full: bool = False, requests: bool = True, notes: list[str] | None = None
    ) -> dict[str, Any]:
        """Read the source, decide every record, and report counts, reasons, diffs and the first requests."""
        started = time.perf_counter()
        project, store = self.project, self.store
        storages = DryStorages(dict(project.storages.ttls), store)
        route = isolated_route(project, project.route(name), storages)
        self._route = route
        notes = list(notes or [])
        if not effective_active(project.routes[name], store.route_states()):
            notes.append(
                f"route {name} is inactive: `crossdock run` would import and send nothing; this is what it would do "
                "once activated"
            )
        incoming = route.incoming
        hold = import_hold(project, incoming, [name], datetime.now(UTC))
        if hold is not None:
            notes.append(f"{incoming.name} {hold.reason}: `crossdock run` would not read the source now")
        if incoming.shared:
            others = [r.name for r in project.routes_of(project.incomings[incoming.name]) if r.name != name]
            if others:
                notes.append(
                    f"{incoming.name} is a shared incoming: a real run feeds {', '.join(others)} too (not shown)"
                )
        self._options = import_options(route, full=full)
        summary = ImportSummary(incoming.name)
        rs = RouteImportSummary(name)
        state = _RouteState(route, rs, options=self._options)
        acceptors = [self._acceptor([state])]
        status, error = "ok", None
        target: Target = route.target_class(route.target_options, project.context(self.clients))
        try:
            source = incoming.source_class(incoming.source_options, self._context(incoming, full))
            try:
                async for page in source.pages():
                    await self._feed(incoming, [state], acceptors, page, summary, incoming.config.batch_size)
                await self._flush(state)
            except CrossdockError as exc:
                status, error = "failed", project.redact(exc.message)
            except Exception as exc:
                status, error = "failed", project.redact(describe_error(exc))
            finally:
                summary.source = source.report()
                await source.close()  # never commit(): the source forgets nothing it handed over
            rs.read = summary.read
            rs.new = rs.by_status.get("new", 0) + rs.by_status.get("processing", 0)
            counts = rs.to_json()
            report: dict[str, Any] = {
                "route": name,
                "dry_run": True,
                "status": status,
                "error": error,
                "database": store.backend,
                "read": summary.read,
                "source": summary.source,
                "counts": {k: counts[k] for k in ("new", "changed", "unchanged", "filtered", "rejected", "superseded")},
                "by_status": counts["by_status"],
                "reasons": {kind: _top(c) for kind, c in self._plans.reasons.items()},
                "changes": self._changes(),
                "outgoing": self._outgoing(name, target),
                "requests": await self._requests(route, target) if requests else [],
                "notes": notes,
                "written": "nothing: no task, run, fingerprint or storage was written and nothing was sent",
            }
        finally:
            await target.close()
            await self.close()
        report["duration_s"] = round(time.perf_counter() - started, 3)
        return redacted(report, project.redact)  # type: ignore[no-any-return]

    # --- the import, planned instead of written ---

    async def _flush(self, state: _RouteState) -> None:
        if state.items:
            items, state.items = state.items, []
            self._plan(state, items)

    def _plan(self, state: _RouteState, items: list[ImportItem]) -> tuple[ImportPlan, dict[DeltaKey, Latest]]:
        """Decide a batch as the ledger's import would, and remember what it would have written; the plan and the
        latest tasks it was decided against (negative ids: tasks an earlier batch of this dry run would make)."""
        plans, options, route = self._plans, self._options, state.route.name
        for item in items:
            if item.status is Status.SKIPPED and item.reason:
                plans.reasons["filtered"][item.reason] += 1
            elif item.status is Status.REJECTED and item.reason:
                plans.reasons["rejected"][item.reason] += 1
        latest: dict[DeltaKey, Latest] = {}
        if options.delta:
            idents, unkeyed = delta_keys(items)
            overlay = plans.overlay
            latest = self.ledger.delta_latest(
                route, [i for i in idents if i not in overlay], [k for k in unkeyed if k not in overlay]
            )
            for seen in (*idents, *unkeyed):
                if seen in overlay:
                    latest[seen] = overlay[seen]
        resendable: set[int] = set()
        candidates = [c for c in resend_candidates(latest, options) if c > 0]
        if candidates:
            cutoff = datetime.now(UTC) - timedelta(seconds=float(options.resend_failed))
            resendable = {i for i, at in self.ledger.created_at_of(candidates).items() if at <= cutoff}
        plan = import_plan(route, items, latest, options, resendable)
        counts = plan.counts
        for old_id, _newer in plan.supersedes:
            counts.superseded += 1
            if old_id > 0:
                plans.superseded_queued += 1
            else:  # a task an earlier batch of this dry run would have queued
                plans.new_tasks -= 1
                plans.sending = [s for s in plans.sending if s[0] != old_id]
        state.summary.add(counts)
        use_delta = options.delta and not options.full
        before: dict[DeltaKey, bytes] = {}
        for create in plan.creates:
            plans.next_id -= 1
            create.task_id = plans.next_id
            item = create.item
            key: DeltaKey | None = item.identifier if item.identifier is not None else unkeyed_key(item)
            if create.status in _SENT and item.entity is not None:
                plans.new_tasks += 1
                if len(plans.sending) < self.show:
                    plans.sending.append((create.task_id, item.identifier, item.entity))
                prior = before.get(key) if key is not None else None
                if prior is None and key is not None and key in latest:
                    prior = latest[key][0]
                changed = use_delta and prior is not None and prior != item.fingerprint
                if changed and item.identifier is not None and len(plans.changed) < self.show:
                    plans.changed.append((item.identifier, item.entity))
            if create.record_fingerprint and key is not None and item.fingerprint is not None:
                before[key] = item.fingerprint
                plans.overlay[key] = (item.fingerprint, create.task_id, create.status)
        return plan, latest

    # --- the report ---

    def _changes(self) -> list[dict[str, Any]]:
        """Each changed record (up to ``show``) against the entity of its identifier's last finished task."""
        changed = self._plans.changed
        if not changed or self._route is None:
            return []
        delivered = self.store.latest_entities(self._route.name, list({ident for ident, _ in changed}))
        out: list[dict[str, Any]] = []
        for ident, data in changed:
            entity = orjson.loads(data)
            last = delivered.get(ident)
            if last is None:
                out.append(
                    {
                        "identifier": ident,
                        "delivered_task": None,
                        "fields": [],
                        "more_fields": 0,
                        "note": "never delivered: no finished task of this identifier to compare with",
                    }
                )
                continue
            fields, more = field_diff(last[2], entity)
            out.append({"identifier": ident, "delivered_task": last[0], "fields": fields, "more_fields": more})
        return out

    def _outgoing(self, name: str, target: Target) -> dict[str, Any]:
        plans = self._plans
        queued = self.store.stats(name).by_status
        queued_new = max(queued.get("new", 0) - plans.superseded_queued, 0)
        return {
            "target": self.project.redact(target.describe()),
            "new_tasks": plans.new_tasks,
            "queued_new": queued_new,
            "retry_waiting": queued.get("retry", 0),
            # what `crossdock run` claims: this import's tasks and those already new (retries when due)
            "would_send": plans.new_tasks + queued_new,
        }

    async def _requests(self, route: CompiledRoute, target: Target) -> list[dict[str, Any]]:
        """The first records this run would send, through the outgoing transform, as the target would send them."""
        sending = self._plans.sending[: self.show]
        if not sending:
            return []
        return [self._request(route, target, ident, orjson.loads(data))[0] for _id, ident, data in sending]

    def _request(
        self, route: CompiledRoute, target: Target, ident: str | None, stored: Any
    ) -> tuple[dict[str, Any], Any]:
        """One stored entity through the outgoing transform and the target's preview, as the exporter would send
        it: the request row (``outcome`` send, filtered or failed) and the transformed entity (None if none)."""
        task = Task(0, route.name, ident, Status.PROCESSING, stored)
        row: dict[str, Any] = {"identifier": ident}
        try:
            results = route.outgoing_pipeline.apply(task.entity) if route.outgoing_pipeline else [task.entity]
        except RecordFiltered as exc:
            return {**row, "outcome": "filtered", "reason": f"outgoing filter: {exc.message}"}, None
        except RecordRejected as exc:
            return {**row, "outcome": "failed", "reason": f"outgoing transform: {exc.message}"}, None
        entity = results[0] if len(results) == 1 else results
        try:
            request = target.preview(task, entity)
        except DeliveryError as exc:
            return {**row, "outcome": "failed", "reason": exc.message}, entity
        # the task id is not known before the import: the key names where it goes
        request = _replace_text(request, idempotency_key(task), f"crossdock-{route.name}-<task id>")
        return {**row, "outcome": "send", "request": request}, entity


def import_options(route: CompiledRoute, *, full: bool = False) -> ImportOptions:
    """The import options a run of ``route`` uses (delta, supersede, priority, resend_failed)."""
    return ImportOptions(
        delta=route.config.delta,
        supersede=route.config.supersede,
        full=full,
        priority=route.priority,
        resend_failed=route.config.resend_failed,
    )


def _top(reasons: Counter[str]) -> list[dict[str, Any]]:
    top = [{"reason": reason, "count": n} for reason, n in reasons.most_common(MAX_REASONS)]
    rest = sum(reasons.values()) - sum(n for _reason, n in reasons.most_common(MAX_REASONS))
    if rest:
        top.append({"reason": f"{len(reasons) - MAX_REASONS} other reasons", "count": rest})
    return top


async def dry_run(
    project: Project,
    store: Store,
    name: str,
    *,
    show: int = DEFAULT_SHOW,
    full: bool = False,
    requests: bool = True,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """What ``crossdock run NAME`` would do now, as a JSON-ready report; writes and sends nothing."""
    return await DryRun(project, store, show=show).run(name, full=full, requests=requests, notes=notes)
