"""``GET /api/v1/tasks/export`` and ``POST /api/v1/routes/{name}/import``: the tasks of a filter out as a file,
records back into a route (``crossdock tasks export`` / ``tasks import``, :mod:`crossdock.task_files`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool

from crossdock.engine.importer import Importer
from crossdock.engine.project import effective_active
from crossdock.task_files import export_chunks, is_export_line
from crossdock.web.api import BAD_WHERE, Ctx, Operator, TaskQuery, Viewer
from crossdock.web.openapi import error

router = APIRouter(prefix="/api/v1")

#: records one import request may carry; bigger files go through ``crossdock tasks import``
MAX_RECORDS = 10_000


@router.get(
    "/tasks/export",
    tags=["tasks"],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One line per task, newest first: id, route, identifier, status, attempts, error, "
            "created_at, updated_at, entity (CSV: the entity as JSON text). Secrets masked.",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        **BAD_WHERE,
    },
)
def export_tasks(
    ctx: Ctx, _: Viewer, selection: TaskQuery, format: Literal["ndjson", "csv"] = "ndjson"
) -> StreamingResponse:
    """The matching tasks as a file, streamed a page at a time (flat memory however many match)."""
    return StreamingResponse(
        iterate_in_threadpool(export_chunks(ctx.store, selection, format, redact=ctx.redact)),
        media_type="text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="crossdock-tasks.{format}"'},
    )


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    #: lines of ``tasks export`` (their entities skip the transforms) or records as the source reads them
    records: list[Any] = Field(min_length=1, max_length=MAX_RECORDS)
    as_: Literal["auto", "record", "entity"] = Field(default="auto", alias="as")


class ImportCountsOut(BaseModel):
    new: int
    changed: int
    unchanged: int
    filtered: int
    rejected: int
    superseded: int


class ImportOut(BaseModel):
    route: str
    status: str
    error: str | None
    read: int
    #: whether the records went through the transforms (records) or not (entities of an export)
    transformed: bool
    counts: ImportCountsOut
    task_ids: list[int]


@router.post(
    "/routes/{name}/import",
    tags=["routes"],
    response_model=ImportOut,
    responses={
        400: error("Export lines and plain records mixed in one request; send them apart or say `as`."),
        404: error("No route with this name."),
        409: error("The route is inactive."),
    },
)
async def import_records(ctx: Ctx, who: Operator, name: str, body: ImportRequest) -> dict[str, Any]:
    """Feed records into a route as if its source had read them: identifier, validation, delta and supersede
    apply (and the transforms, for records); ``crossdock tasks import`` takes files of any size."""
    route = ctx.route(name)
    if not effective_active(route, ctx.store.route_states()):
        raise HTTPException(409, f"route {name} is inactive; activate it first")
    exported = [is_export_line(r) for r in body.records]
    if body.as_ == "auto" and any(exported) and not all(exported):
        raise HTTPException(400, "export lines and plain records in one request; send them apart or say as")
    entities = body.as_ == "entity" or (body.as_ == "auto" and all(exported))
    records = [r["entity"] if is_export_line(r) else r for r in body.records]
    importer = Importer(ctx.project, ctx.store)
    importer.transforms = not entities
    summary = await importer.run_incoming(route.incoming, actor=f"import:{who.actor}", records=records, only={name})
    counts = summary.routes[name].to_json()
    return {
        "route": name,
        "status": summary.status,
        "error": summary.error,
        "read": summary.read,
        "transformed": not entities,
        "counts": {k: counts.get(k, 0) for k in ImportCountsOut.model_fields},
        "task_ids": sorted(summary.routes[name].task_ids),
    }
