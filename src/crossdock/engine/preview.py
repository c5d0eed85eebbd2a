"""The transformer tester: what a real run would make of sample records, for `crossdock transform` and the route
page's "Test the transforms" panel (`POST /api/v1/routes/{name}/test`).

A sample goes through the importer's own per-record work (:class:`SampleRun` is a :class:`DryRun`, which is an
:class:`~crossdock.engine.importer.Importer`): the incoming and route transforms, the identifier, validation
(``validate.max_entity_bytes`` and ``validate.schema``) and the fingerprint, in the importer's code. Its delta is
decided by the ledger's :func:`~crossdock.store.import_plan.import_plan` against the latest task of its identifier
in the store as it is now, as the dry run decides it. Accepted entities then go through the outgoing transform and
the target renders the request it would send (:meth:`Target.preview`). So the verdict (the status the task would
get, and the reason) is the one ``crossdock run`` would give, not a second copy of its rules.

Nothing is written or sent: no task, run, fingerprint or storage (what a ``save`` step stores stays in memory), and
the source is not read. Several samples are decided in order, as one run reading them would decide them: a second
copy of an identifier meets the first one's task.
"""

from __future__ import annotations

from typing import Any

import orjson

from crossdock.connectors.base import Malformed, Target
from crossdock.engine.dry_run import DryRun, DryStorages, field_diff, import_options, isolated_route, redacted
from crossdock.engine.importer import ImportSummary, RouteImportSummary, _RouteState
from crossdock.engine.project import CompiledRoute, Project
from crossdock.errors import RecordFiltered
from crossdock.store import ImportItem, Store
from crossdock.store.import_plan import DeltaKey, ImportPlan, Latest, unkeyed_key
from crossdock.tasks import POLLED, RESEND_ON_SAME, Status
from crossdock.transform import Pipeline, compile_steps
from crossdock.transform.pipeline import deep_copy

#: the most samples one call decides (the route page sends one; a file for `crossdock transform` may hold more)
MAX_SAMPLES = 10_000
WRITTEN = "nothing: no task, run, fingerprint or storage was written and nothing was sent"


def route_pipeline(project: Project, route: CompiledRoute, *, outgoing: bool = False) -> Pipeline:
    """The incoming and route steps as one pipeline (plus the outgoing steps with ``outgoing``): for the ``tests:``
    of a route, which compare what the transforms make of an input, before identifier and validation."""
    steps: list[Any] = [*route.incoming.config.transform, *route.config.transform]
    if outgoing:
        steps += route.config.outgoing.transform
    return compile_steps(steps, named=project.loaded.config.transformer_steps(), storages=project.storages)


def parse_samples(raw: bytes) -> list[Any]:
    """A JSON object, a JSON array of objects, or NDJSON."""
    from crossdock.errors import UsageError

    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"the input is neither JSON nor NDJSON: {exc}") from None
    return data if isinstance(data, list) else [data]


async def evaluate_samples(
    project: Project, store: Store, name: str, records: list[Any], *, outgoing: bool = True, trace: bool = True
) -> list[dict[str, Any]]:
    """What ``crossdock run NAME`` would make of each record, in order, with nothing written or sent (secrets
    masked). One dict per record: ``input``, ``outcome`` (``ok``, ``filtered``, ``rejected``, or ``empty`` when the
    transforms made no entity of it), ``reason``, ``identifiers`` and ``entities`` (as the import would store them),
    ``trace`` (with ``trace``: the entity after each incoming and route step) and ``results``: one per entity,
    with its ``task_status``, ``validation``, ``delta`` and (with ``outgoing``) the ``outgoing`` transform's output
    and the request preview."""
    if len(records) > MAX_SAMPLES:
        from crossdock.errors import UsageError

        raise UsageError(f"{len(records):,} samples; the tester takes at most {MAX_SAMPLES:,} at a time")
    return await SampleRun(project, store).evaluate(name, records, outgoing=outgoing, trace=trace)


class SampleRun(DryRun):
    """A dry run fed with sample records instead of its source."""

    def __init__(self, project: Project, store: Store) -> None:
        super().__init__(project, store, show=0)
        #: the entity of each task this run would have created (negative ids), for the diff of a later sample
        self._planned: dict[int, tuple[int, bytes | None]] = {}
        self._tracer: CompiledRoute | None = None

    async def evaluate(self, name: str, records: list[Any], *, outgoing: bool, trace: bool) -> list[dict[str, Any]]:
        project, store = self.project, self.store
        compiled = project.route(name)
        ttls = dict(project.storages.ttls)
        # the verdict and the trace each run on their own pipelines, so a `save` in one is not seen by the other
        route = isolated_route(project, compiled, DryStorages(ttls, store))
        tracer = isolated_route(project, compiled, DryStorages(ttls, store)) if trace else None
        self._route, self._tracer = route, tracer
        self._options = import_options(route)
        summary = ImportSummary(route.incoming.name)
        state = _RouteState(route, RouteImportSummary(name), options=self._options)
        accept = self._acceptor([state])
        target: Target = route.target_class(route.target_options, project.context(self.clients))
        results: list[dict[str, Any]] = []
        try:
            for number, record in enumerate(records, 1):
                result: dict[str, Any] = {"input": record}
                if tracer is not None:
                    result["trace"] = _trace(tracer, record)
                fed: Any = record
                if not isinstance(record, dict):
                    # as a source does with a record that is not an object: a rejected task keeping the text
                    fed = Malformed(orjson.dumps(record).decode(), f"sample {number}: expected a JSON object")
                self._feed_chunk(route.incoming, [state], [accept], [fed], summary)
                items, state.items = state.items, []
                plan, latest = self._plan(state, items)
                entities = [self._entity(route, target, item, plan, latest, number, outgoing) for item in items]
                result.update(_overall(entities))
                result["results"] = entities
                results.append(result)
        finally:
            await target.close()
            await self.close()
        return redacted(results, project.redact)  # type: ignore[no-any-return]

    def _entity(
        self,
        route: CompiledRoute,
        target: Target,
        item: ImportItem,
        plan: ImportPlan,
        latest: dict[DeltaKey, Latest],
        number: int,
        outgoing: bool,
    ) -> dict[str, Any]:
        """One entity's verdict, validation, delta and outgoing, from the importer's item and the import plan."""
        stored = orjson.loads(item.entity) if item.entity is not None else None
        if item.status in POLLED:
            outcome = "ok"
        elif item.status is Status.SKIPPED:
            outcome = "filtered"
        else:
            outcome = "rejected"
        created = next((c for c in plan.creates if c.item is item), None)
        if created is not None:
            self._planned[created.task_id] = (number, item.entity)
        out: dict[str, Any] = {
            "identifier": item.identifier,
            "outcome": outcome,
            "reason": item.reason,
            "entity": stored,
            "task_status": created.status.value if created is not None else None,
            "validation": _validation(route, item, outcome),
            "delta": self._delta(item, created, plan, latest, stored),
        }
        if item.raw is not None:
            out["raw"] = item.raw
        if outgoing and outcome == "ok":
            request, output = self._request(route, target, item.identifier, stored)
            sent = created is not None and created.status in POLLED
            out["outgoing"] = {
                "would_send": sent,
                "trace": _outgoing_trace(self._tracer, stored) if self._tracer is not None else [],
                "output": output,
                "outcome": request["outcome"],
                "request": request.get("request"),
                "reason": request.get("reason"),
            }
        return out

    def _delta(
        self,
        item: ImportItem,
        created: Any,
        plan: ImportPlan,
        latest: dict[DeltaKey, Latest],
        stored: Any,
    ) -> dict[str, Any]:
        """What delta makes of the entity: new, changed (with the fields), unchanged, or the same as a failed or
        rejected latest task (touched, not sent again), and the task it is compared with."""
        key: DeltaKey | None = item.identifier if item.identifier is not None else unkeyed_key(item)
        seen = latest.get(key) if key is not None else None
        kind = {Status.SKIPPED: "filtered", Status.REJECTED: "rejected"}.get(item.status)
        delta: dict[str, Any] = {"outcome": "new", "task": None, "task_status": None}
        if not self._options.delta:
            return {**delta, "text": "delta is off on this route: every record makes a new task"}
        if seen is None or seen[2] is None:
            status = created.status.value if created is not None else "?"
            text = f"never seen: a new task ({status})" if key is not None else f"a new task ({status})"
            return {**delta, "text": text}
        fingerprint, task_id, status_was = seen[0], seen[1], seen[2]
        compared = self._task_name(task_id, status_was)
        delta.update(task=task_id if task_id > 0 else None, task_status=status_was.value)
        same = fingerprint == item.fingerprint
        if created is None:  # touched: no new row, the latest task counts one more sighting
            if kind is not None:
                text = f"{kind} again, identically: no new task; {compared} is touched"
                return {**delta, "outcome": "unchanged", "text": text}
            if status_was in RESEND_ON_SAME:
                text = (
                    f"identical to {compared}: no new task, nothing is sent again; {compared} is touched "
                    "(`resend_failed` gives an identical record another chance)"
                )
                return {**delta, "outcome": "touches_failed", "text": text}
            text = f"identical to {compared}, not delivered yet: no new task; {compared} is touched"
            return {**delta, "outcome": "unchanged", "text": text}
        status = created.status.value
        superseded = [self._task_name(old, None) for old, newer in plan.supersedes if newer is created]
        tail = f"; it supersedes {', '.join(superseded)}" if superseded else ""
        if same and kind is None and created.status is Status.SKIPPED:
            return {**delta, "outcome": "unchanged", "text": f"unchanged since {compared}: a skipped task{tail}"}
        if same:
            if kind is None:
                text = f"identical to {compared}, sent again (`resend_failed`): a new task ({status}){tail}"
                return {**delta, "outcome": "resend", "text": text}
            return {**delta, "outcome": "unchanged", "text": f"identical to {compared}: a new task ({status}){tail}"}
        fields, more = self._diff(task_id, stored)
        text = f"changed since {compared}: a new task ({status}){tail}"
        return {**delta, "outcome": "changed", "text": text, "fields": fields, "more_fields": more}

    def _task_name(self, task_id: int, status: Status | None) -> str:
        if task_id < 0:
            return f"the task of sample {self._planned.get(task_id, (0, None))[0]}"
        return f"task {task_id}" + (f" ({status.value})" if status is not None else "")

    def _diff(self, task_id: int, stored: Any) -> tuple[list[dict[str, Any]], int]:
        """The changed fields against the entity of the task delta compared with."""
        if task_id < 0:
            data = self._planned.get(task_id, (0, None))[1]
            before = orjson.loads(data) if data is not None else None
        else:
            task = self.store.get_task(task_id)
            before = task.entity if task is not None else None
        if before is None or stored is None:
            return [], 0
        return field_diff(before, stored)


def _overall(entities: list[dict[str, Any]]) -> dict[str, Any]:
    """The record's verdict: its entity's, or for several the worst (rejected, then filtered)."""
    outcomes = {e["outcome"] for e in entities}
    reason: str | None
    if not entities:
        outcome, reason = "empty", "the transforms made no entity of it: no task"
    else:
        outcome = next((o for o in ("rejected", "filtered") if o in outcomes), "ok")
        reason = next((e["reason"] for e in entities if e["outcome"] == outcome), None)
    ok = [e for e in entities if e["outcome"] == "ok"]
    return {
        "outcome": outcome,
        "reason": reason,
        "identifiers": [e["identifier"] for e in ok],
        "entities": [e["entity"] for e in ok],
    }


def _validation(route: CompiledRoute, item: ImportItem, outcome: str) -> dict[str, Any]:
    """The importer's validation verdict, read off its item: the size it measured and the reason it gave."""
    config = route.config.validate_
    reason = item.reason or ""
    schema = config.schema_
    verdict: dict[str, Any] = {
        "verdict": "passed",
        "bytes": len(item.entity) if item.entity is not None else None,
        "max_entity_bytes": config.max_entity_bytes,
        "schema_file": schema,
        "schema_verdict": "passed" if schema else "none",
        "reason": None,
    }
    if outcome == "ok":
        return verdict
    if reason.startswith("validate.max_entity_bytes"):
        return {**verdict, "verdict": "failed", "schema_verdict": "not checked", "reason": reason}
    if reason.startswith("validate.schema"):
        return {**verdict, "verdict": "failed", "schema_verdict": "failed", "reason": reason}
    # filtered or rejected before validation (a transform, a missing identifier, JSON that cannot be stored)
    return {**verdict, "verdict": "not reached", "schema_verdict": "not checked" if schema else "none"}


def _trace(route: CompiledRoute, record: Any) -> list[dict[str, Any]]:
    """The entity after each incoming and route step (each entity's, after a split), and where it stopped."""
    rows: list[dict[str, Any]] = [{"stage": "input", "step": "input", "output": deep_copy(record)}]
    if not isinstance(record, dict):
        return rows
    entities: list[Any] = [record]
    for stage, pipeline in (("incoming", route.incoming.pipeline), ("route", route.pipeline)):
        if not pipeline:
            continue
        rows_of, entities = _traced(stage, pipeline, entities)
        rows += rows_of
    return rows


def _outgoing_trace(route: CompiledRoute, stored: Any) -> list[dict[str, Any]]:
    if not route.outgoing_pipeline or not isinstance(stored, dict):
        return []
    rows, _entities = _traced("outgoing", route.outgoing_pipeline, [stored])
    return rows


def _traced(stage: str, pipeline: Pipeline, entities: list[Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    rows: list[dict[str, Any]] = []
    out: list[Any] = []
    for entity in entities:
        steps = pipeline.trace(entity)
        for label, value in steps[1:]:
            if isinstance(value, Exception):
                stopped = "filtered" if isinstance(value, RecordFiltered) else "rejected"
                rows.append({"stage": stage, "step": label, "stopped": stopped, "reason": str(value)})
            else:
                rows.append({"stage": stage, "step": label, "output": value})
        last = steps[-1][1]
        if not isinstance(last, Exception):
            out += last if isinstance(last, list) else [last]
    return rows, out
