"""What a route's transformers make of a sample record: for `check` tests and `crossdock transform`."""

from __future__ import annotations

from typing import Any

from crossdock.engine.project import CompiledRoute, Project
from crossdock.transform import Pipeline, compile_steps


def route_pipeline(project: Project, route: CompiledRoute, *, outgoing: bool = False) -> Pipeline:
    """The incoming and route steps as one pipeline (plus the outgoing steps with ``outgoing``)."""
    steps: list[Any] = [*route.incoming.config.transform, *route.config.transform]
    if outgoing:
        steps += route.config.outgoing.transform
    return compile_steps(steps, named=project.loaded.config.transformer_steps(), storages=project.storages)


def parse_samples(raw: bytes) -> list[Any]:
    """A JSON object, a JSON array of objects, or NDJSON."""
    import orjson

    from crossdock.errors import UsageError

    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"the input is neither JSON nor NDJSON: {exc}") from None
    return data if isinstance(data, list) else [data]


def preview_records(
    project: Project, route: CompiledRoute, raw: bytes, *, outgoing: bool, trace: bool
) -> list[dict[str, Any]]:
    from crossdock.errors import RecordFiltered, RecordRejected

    pipeline = route_pipeline(project, route, outgoing=outgoing)
    results: list[dict[str, Any]] = []
    for record in parse_samples(raw):
        result: dict[str, Any] = {"input": record}
        if not isinstance(record, dict):
            results.append({**result, "outcome": "rejected", "reason": "expected a JSON object"})
            continue
        if trace:
            steps = pipeline.trace(record)
            result["trace"] = [[label, entity] for label, entity in steps if not isinstance(entity, Exception)]
        try:
            entities = pipeline.apply(record) if pipeline else [record]
        except RecordFiltered as exc:
            result.update(outcome="filtered", reason=exc.message)
        except RecordRejected as exc:
            result.update(outcome="rejected", reason=exc.message)
        else:
            idents = [route.identifier(e) for e in entities]
            result.update(outcome="ok", entities=entities, identifiers=idents)
            if any(i is None for i in idents):
                result.update(outcome="rejected", reason="identifier is missing or empty")
        results.append(result)
    return results
