"""``POST /api/v1/routes/{name}/dry-run``: what running the route now would do, with nothing written or sent.

The same report as ``crossdock run ROUTE --dry-run --json`` (see :mod:`crossdock.engine.dry_run`), for the route
page to show. It is a POST (it reads the source, which may cost the source system a full read) for operators,
and audited as ``route.dry_run``; the audit row is the only thing it writes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from crossdock.engine.dry_run import DEFAULT_SHOW, dry_run
from crossdock.errors import CrossdockError
from crossdock.web.api import Ctx, Operator
from crossdock.web.api_task_files import ImportCountsOut

router = APIRouter(prefix="/api/v1", tags=["routes"])


class ReasonCount(BaseModel):
    reason: str
    count: int


class DryRunReasons(BaseModel):
    filtered: list[ReasonCount]
    rejected: list[ReasonCount]


class ChangedRecord(BaseModel):
    identifier: str
    #: the finished task compared with; None when the identifier was never delivered
    delivered_task: int | None
    #: ``{"path": "attributes.color", "old": ..., "new": ...}``; an added field has no old, a removed one no new
    fields: list[dict[str, Any]]
    more_fields: int
    note: str | None = None


class DryRunOutgoing(BaseModel):
    target: str
    #: tasks this import would create in new (or processing, on a realtime route)
    new_tasks: int
    #: tasks already new before it (less those it would supersede): a run sends them too
    queued_new: int
    retry_waiting: int
    would_send: int


class DryRunRequest(BaseModel):
    identifier: str | None
    outcome: Literal["send", "filtered", "failed"]
    #: HTTP: method, url, headers (secrets masked), body; file: file, mode, text; others: target, body
    request: dict[str, Any] | None = None
    reason: str | None = None


class DryRunOut(BaseModel):
    route: str
    dry_run: bool
    status: Literal["ok", "failed"]
    error: str | None
    database: str
    read: int
    source: dict[str, Any]
    counts: ImportCountsOut  # what the import would count
    by_status: dict[str, int]
    reasons: DryRunReasons
    changes: list[ChangedRecord]
    outgoing: DryRunOutgoing
    requests: list[DryRunRequest]
    notes: list[str]
    written: str
    duration_s: float


@router.post("/routes/{name}/dry-run", response_model=DryRunOut)
async def route_dry_run(
    ctx: Ctx,
    who: Operator,
    name: str,
    show: Annotated[int, Query(ge=0, le=1000, description="changed records and requests shown")] = DEFAULT_SHOW,
) -> Any:
    """Read the route's source and decide every record against the database as it is, writing and sending nothing:
    the counts a run would produce, field diffs of changed records against their last delivered version, and the
    first requests as they would go out (secrets masked). Audited as ``route.dry_run``."""
    ctx.route(name)
    try:
        report = await dry_run(ctx.project, ctx.store, name, show=show)
    except CrossdockError as exc:
        raise HTTPException(409, ctx.redact(exc.message)) from None
    c = report["counts"]
    ctx.audit(
        who,
        "route.dry_run",
        {"route": name},
        detail=f"{report['status']}: new {c['new']}, changed {c['changed']}, unchanged {c['unchanged']}, "
        f"filtered {c['filtered']}, rejected {c['rejected']}",
    )
    return report
