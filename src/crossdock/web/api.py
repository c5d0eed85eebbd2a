"""The REST API under ``/api/v1`` (DESIGN section 3). JSON in, JSON out, ``Authorization: Bearer TOKEN``."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema

from crossdock.engine.runner import run_once
from crossdock.errors import CrossdockError, StoreUnavailable, UsageError
from crossdock.store import TaskFilter
from crossdock.store.base import AuditEntry
from crossdock.store.payload_filter import payload_filter
from crossdock.task_files import csv_safe
from crossdock.tasks import Action, Status, Task, allowed_actions, is_allowed, iso, refusal_message
from crossdock.timeline import timeline
from crossdock.web.auth import ROLES, Principal, issue_token
from crossdock.web.context import PARTS, WebContext, get_ctx
from crossdock.web.display import bounded_result, bounded_text, entity_download, entity_fields
from crossdock.web.openapi import error

log = logging.getLogger("crossdock.web")

Ctx = Annotated[WebContext, Depends(get_ctx)]


#: API tokens as the OpenAPI document declares them; ``require`` reads the header itself (no auto error), so
#: its 401 and 403 answers stay as documented while each route's security names the role it needs
BEARER_SCHEME = HTTPBearer(
    scheme_name="bearer",
    auto_error=False,
    description="An API token (`crossdock token create`). Roles are ordered viewer < operator < admin; each "
    "operation names the least role it needs in its security requirement.",
)


def require(minimum: str) -> Callable[..., Principal]:
    """A dependency: the bearer token's principal, 401 without a valid token, 403 below ``minimum``."""

    def dependency(
        request: Request,
        _declared: HTTPAuthorizationCredentials | None = Security(BEARER_SCHEME, scopes=[minimum]),
    ) -> Principal:
        ctx = get_ctx(request)
        principal = ctx.auth.from_authorization(request.headers.get("authorization"))
        if principal is None:
            raise HTTPException(
                401, "a valid token is required: Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"}
            )
        if not principal.can(minimum):
            raise HTTPException(403, f"this needs the {minimum} role; your token has {principal.role}")
        return principal

    dependency.__name__ = f"require_{minimum}"
    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]

router = APIRouter(prefix="/api/v1")

#: the largest id asked for: a larger number is refused (422) rather than overflow the database's 64-bit ids, and
#: 2**53 - 1 rather than 2**63 - 1 because JSON tools read integers as doubles (exact only up to 2**53)
MAX_ID = 2**53 - 1
TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _json_integer(value: Any) -> Any:
    """A JSON integer as JSON Schema counts them (``3.0`` is one), never ``true`` nor ``"3"``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


#: an id in a JSON body
JsonId = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_json_integer)]
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?"
)


def _date_time_text(value: Any) -> Any:
    """Only what the document promises: RFC 3339 date-times or dates (Pydantic would also take unix numbers)."""
    if isinstance(value, datetime) or (isinstance(value, str) and _DATE_TIME.fullmatch(value)):
        return value
    raise ValueError("expected an RFC 3339 date-time such as 2026-01-02T03:04:05Z, or a date such as 2026-01-02")


#: a time filter: RFC 3339, with the offset, or a plain date (its midnight)
DateTime = Annotated[
    datetime,
    BeforeValidator(_date_time_text),
    WithJsonSchema({"type": "string", "anyOf": [{"format": "date-time"}, {"format": "date"}]}),
]

#: a page's ``next_cursor`` is digits; anything else is refused (422) before the handler runs
Cursor = Annotated[str | None, Query(pattern=r"^[0-9]*$", description="the previous page's `next_cursor`")]


# --- models ----------------------------------------------------------------------------------------


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: kept in the task log and the audit log
    reason: str | None = Field(default=None, max_length=2000)


#: optional but never null, so the schema says exactly what an empty filter is: no field at all
#: what ``where`` means, in the OpenAPI document
WHERE_HELP = (
    "an expression over the entity in the transformer language, e.g. price > 1000 and category == 'toys'; "
    "400 when it does not parse"
)
BAD_WHERE: dict[int | str, dict[str, Any]] = {400: error("The where expression does not parse; the detail says where.")}

Criterion = Annotated[str, Field(min_length=1)] | SkipJsonSchema[None]


class BulkFilter(BaseModel):
    """At least one criterion, so "act on every task" is never one typo away."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    status: Annotated[list[Status], Field(min_length=1)] | SkipJsonSchema[None] = None
    route: Criterion = None
    identifier: Criterion = None
    search: Annotated[Criterion, Field(description="text in the identifier or the error")] = None
    where: Annotated[Criterion, Field(description=WHERE_HELP)] = None
    created_after: DateTime | SkipJsonSchema[None] = None
    created_before: DateTime | SkipJsonSchema[None] = None

    @model_validator(mode="before")
    @classmethod
    def no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(value is None for value in data.values()):
            raise ValueError("leave a criterion out rather than null")
        return data

    @model_validator(mode="after")
    def not_empty(self) -> BulkFilter:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("the filter is empty; name at least a status or a route")
        return self


BulkAction = Literal["retry", "skip", "finish", "fail"]
Reason2000 = Annotated[
    Annotated[str, Field(max_length=2000)] | None, Field(description="kept in the task logs and the audit log")
]


class BulkByIds(BaseModel):
    model_config = ConfigDict(extra="forbid", title="BulkByIds")
    action: BulkAction
    ids: list[JsonId] = Field(min_length=1, max_length=100_000)
    reason: Reason2000 = None


class BulkByFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", title="BulkByFilter")
    action: BulkAction
    filter: BulkFilter
    reason: Reason2000 = None


#: ids or a filter, never both, never neither: the schema itself refuses the rest (422)
BulkRequest = Annotated[BulkByIds | BulkByFilter, Body()]


class BulkOut(BaseModel):
    matched: int = Field(description="tasks the ids or filter selected")
    changed: int
    refused: list[str] = Field(description="why the others were left alone")
    superseded: int = Field(description="older due copies of the retried records skipped")


class HealthOut(BaseModel):
    status: Literal["ok"]
    database: str


class HealthDownOut(BaseModel):
    status: Literal["unavailable"]
    database: str
    error: str
    down_since: str | None


class StatsOut(BaseModel):
    total: int
    by_status: dict[str, int]
    by_route: dict[str, dict[str, int]]


class TaskOut(BaseModel):
    """A task; a stored response over 256 KiB comes as ``result: null`` with ``result_truncated`` and the rest."""

    model_config = ConfigDict(extra="allow")
    id: int
    route: str
    identifier: str | None
    status: Status
    attempts: int
    created_at: str | None
    updated_at: str | None
    next_attempt_at: str | None
    error: str | None
    seen_count: int
    last_seen_at: str | None
    related_task_id: int | None
    run_id: int | None
    result: Any = None
    result_truncated: bool | SkipJsonSchema[None] = None
    result_bytes: int | SkipJsonSchema[None] = None
    result_preview: str | SkipJsonSchema[None] = None


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None = Field(pattern=r"^[0-9]+$", description="pass back as `cursor` for older tasks")


class LogLineOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    at: str | None
    level: str
    phase: str
    actor: str | None
    from_: str | None = Field(alias="from")
    to: str | None
    message: str
    details: dict[str, Any]


class TaskDetailOut(TaskOut):
    entity: Any = None
    entity_bytes: int | None
    entity_truncated: bool
    entity_url: str | None
    entity_preview: str | SkipJsonSchema[None] = None
    raw: str | None
    raw_truncated: bool | SkipJsonSchema[None] = None
    logs: list[LogLineOut]
    allowed_actions: list[str]


class RunStartedOut(BaseModel):
    route: str
    parts: list[Literal["incoming", "outgoing"]]
    started_at: str
    status: Literal["started"]


class RouteActiveOut(BaseModel):
    name: str
    active: bool


class RunOut(BaseModel):
    id: int
    route: str
    part: str
    started_at: str | None
    finished_at: str | None
    status: str
    summary: dict[str, Any] | None
    error: str | None
    actor: str | None
    owner: str | None
    heartbeat_at: str | None


class AuditEntryOut(BaseModel):
    id: int
    at: str | None
    actor: str
    action: str
    target: dict[str, Any]
    changed: int | None
    detail: str | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(pattern=r"^[0-9]+$")


class TokenOut(BaseModel):
    id: int
    name: str
    role: Literal["viewer", "operator", "admin"]
    created_at: str | None
    last_used: str | None
    revoked: bool


class NewTokenOut(BaseModel):
    id: int
    name: str
    role: Literal["viewer", "operator", "admin"]
    token: str = Field(description="shown only in this answer")


class RevokedOut(BaseModel):
    id: int
    revoked: Literal[True]


class CircuitOut(BaseModel):
    """A circuit breaker: configured (``circuit:`` on a connection or an outgoing), or left in the database."""

    key: str = Field(description="the target's connection name, or the route's name when it names no connection")
    state: Literal["closed", "open", "half_open"] = Field(
        description="closed: deliveries go out; open: none until `until`; half_open: one probe delivery decides"
    )
    failures: int = Field(description="consecutive transient delivery failures counted")
    failures_to_open: int | None = Field(description="the configured threshold; null when no route uses it now")
    cooldown_s: float | None
    opened_at: str | None
    until: str | None = Field(description="while open: when the cooldown ends and a probe may go")
    last_error: str | None
    probe_owner: str | None = Field(description="while half-open: the process (host:pid) sending the probe")
    probe_at: str | None
    updated_at: str | None
    routes: list[str] = Field(description="the routes whose deliveries it stops")


class RouteOut(BaseModel):
    name: str
    active: bool
    active_in_config: bool
    paused_reason: str | None = Field(description="why crossdock switched the route off itself (pause_after)")
    paused_at: str | None
    maintenance_until: str | None = Field(
        description="a maintenance window covers now: nothing is delivered until then (overlapping windows merged)"
    )
    imports_stopped_until: str | None = Field(description="an imports: false window covers now: nothing is read")
    circuit: CircuitOut | None = Field(description="the route's circuit breaker; null when it has none")
    realtime: bool
    waiting: bool
    retry: dict[str, Any] | None
    incoming: str | None
    incoming_type: str
    outgoing_type: str
    counts: dict[str, int]
    incoming_schedule: str | None
    outgoing_schedule: str | None
    next_incoming: str | None
    next_outgoing: str | None
    running: list[str]
    last_runs: list[dict[str, Any]]


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["viewer", "operator", "admin"]
    name: str = Field(min_length=1, max_length=100)


# --- health and stats ------------------------------------------------------------------------------


@router.get(
    "/health",
    tags=["system"],
    response_model=HealthOut,
    responses={
        503: {
            "model": HealthDownOut,
            "description": "The database cannot be used right now: status, error and since when (`Retry-After: 5`).",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        }
    },
)
def health(request: Request, ctx: Ctx) -> Any:
    """Liveness plus a cheap database read. Open unless ``health_requires_auth`` is set."""
    if ctx.settings.health_requires_auth:
        require("viewer")(request)
    try:
        ctx.store.ping(timeout=2.0)
    except StoreUnavailable as exc:
        # 503 with the reason, so a load balancer takes this process out and a person sees why
        down = ctx.store.health
        body = {
            "status": "unavailable",
            "database": ctx.store.backend,
            "error": ctx.redact(exc.message),
            "down_since": down.down_at.isoformat() if down.down_at else None,
        }
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return {"status": "ok", "database": ctx.store.backend}


@router.get("/stats", tags=["tasks"], response_model=StatsOut)
def stats(ctx: Ctx, _: Viewer, route: str | None = None) -> dict[str, Any]:
    """Counts per status, total and per route, from the counters (the same shape as ``crossdock stats``)."""
    data: dict[str, Any] = ctx.store.stats(route).to_json()
    return data


# --- tasks -----------------------------------------------------------------------------------------


def task_filter(
    status: list[Status] | None,
    route: str | None,
    identifier: str | None,
    search: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    where: str | None = None,
) -> TaskFilter:
    """The selection; a ``where`` expression that does not parse is a 400 that says where it went wrong."""
    if where:
        try:
            payload_filter(where)
        except UsageError as exc:
            raise HTTPException(400, exc.message.replace("--where: ", "where: ", 1)) from None
    return TaskFilter(
        statuses=status or None,
        route=route or None,
        identifier=identifier or None,
        search=search or None,
        created_after=created_after,
        created_before=created_before,
        where=where or None,
    )


def task_query(
    status: Annotated[list[Status] | None, Query(description="repeatable")] = None,
    route: str | None = None,
    identifier: str | None = None,
    search: Annotated[str | None, Query(description="text in the identifier or the error")] = None,
    where: Annotated[str | None, Query(description=WHERE_HELP)] = None,
    created_after: DateTime | None = None,
    created_before: DateTime | None = None,
) -> TaskFilter:
    """The task filters of a query string, shared by the listing and the export."""
    return task_filter(status, route, identifier, search, created_after, created_before, where)


TaskQuery = Annotated[TaskFilter, Depends(task_query)]


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit():
        raise HTTPException(400, "cursor must be the next_cursor value of the previous page")
    return int(cursor)


@router.get("/tasks", tags=["tasks"], response_model=TaskPage, response_model_exclude_unset=True, responses=BAD_WHERE)
def list_tasks(
    ctx: Ctx,
    _: Viewer,
    selection: TaskQuery,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next (older) page."""
    items, next_cursor = ctx.store.list_tasks(selection, limit=limit, cursor=parse_cursor(cursor))
    answers = [t.to_json() for t in items]
    for answer in answers:
        bounded_result(answer, ctx.redact)
    return {"items": answers, "next_cursor": str(next_cursor) if next_cursor else None}


def task_detail(ctx: WebContext, task: Task, *, full: bool = False) -> dict[str, Any]:
    """The task with its entity and history; past 256 KiB the entity comes as a preview and a download link."""
    data = task.to_json()
    bounded_result(data, ctx.redact)
    data.update(entity_fields(task, ctx.redact, full=full))
    data["raw"] = task.raw
    bounded_text(data, "raw", ctx.redact)
    data["logs"] = [line.to_json() for line in timeline(task, ctx.store.task_logs(task.id))]
    data["allowed_actions"] = [a.value for a in allowed_actions(task.status)]
    return data


def get_task_or_404(ctx: WebContext, task_id: int) -> Task:
    task = ctx.store.get_task(task_id)
    if task is None:
        raise HTTPException(404, f"no task with id {task_id}")
    return task


NO_TASK: dict[int | str, dict[str, Any]] = {404: error("No task with this id.")}


@router.get(
    "/tasks/{task_id:int}",
    tags=["tasks"],
    response_model=TaskDetailOut,
    response_model_exclude_unset=True,
    responses=NO_TASK,
)
def get_task(
    ctx: Ctx,
    _: Viewer,
    task_id: TaskId,
    full: Annotated[bool, Query(description="the entity whole, whatever its size")] = False,
) -> dict[str, Any]:
    """One task with its entity and its history (``logs``, oldest first).

    An entity over 256 KiB (compact JSON) comes as ``entity: null`` with ``entity_truncated: true``,
    ``entity_bytes``, an ``entity_preview`` and ``entity_url`` (its download); ``full=true`` sends it whole."""
    return task_detail(ctx, get_task_or_404(ctx, task_id), full=full)


@router.get(
    "/tasks/{task_id:int}/entity",
    tags=["tasks"],
    response_class=Response,
    responses={
        200: {
            "description": "The whole entity as a JSON file (``Content-Disposition: attachment``), redacted.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        404: error("No task with this id, or the task has no entity stored."),
    },
)
def get_task_entity(ctx: Ctx, _: Viewer, task_id: TaskId) -> Response:
    """Download a task's whole entity, however large; secrets are masked as in every other answer."""
    task = get_task_or_404(ctx, task_id)
    if task.entity is None:
        raise HTTPException(404, f"task {task_id} has no entity stored" + (" (see its raw record)" if task.raw else ""))
    return entity_download(task, ctx.redact)


def act_on_task(ctx: WebContext, who: Principal, task_id: int, action: Action, reason: str | None) -> Task:
    """One manual action; raises 404 for an unknown id and 409 (with the allowed transitions) when refused."""
    task = get_task_or_404(ctx, task_id)
    if not is_allowed(action, task.status):
        raise HTTPException(409, refusal_message(action, task.status))
    # the store audits the action itself, as it does for the CLI and the dashboard
    result = ctx.store.apply_action(action, TaskFilter(ids=[task_id]), actor=who.actor, reason=reason, now=ctx.now())
    if result.changed == 0:
        current = get_task_or_404(ctx, task_id)
        raise HTTPException(409, refusal_message(action, current.status))
    return get_task_or_404(ctx, task_id)


def _action_endpoint(action: Action) -> None:
    def endpoint(
        ctx: Ctx, who: Operator, task_id: TaskId, body: Annotated[Reason | None, Body()] = None
    ) -> dict[str, Any]:
        task = act_on_task(ctx, who, task_id, action, body.reason if body else None)
        return task_detail(ctx, task)

    endpoint.__name__ = f"task_{action.value}"
    endpoint.__doc__ = f"{action.value.capitalize()} one task. 409 with the allowed transitions when refused."
    router.post(
        f"/tasks/{{task_id:int}}/{action.value}",
        tags=["tasks"],
        response_model=TaskDetailOut,
        response_model_exclude_unset=True,
        responses={
            **NO_TASK,
            409: error("The task's status does not allow this action; the message names the allowed transitions."),
        },
    )(endpoint)


def bulk_selection(body: BulkByIds | BulkByFilter) -> TaskFilter:
    """The tasks a bulk request names; the models already refuse both, neither, no ids and an empty filter."""
    if isinstance(body, BulkByIds):
        return TaskFilter(ids=body.ids)
    f = body.filter
    selection = task_filter(f.status, f.route, f.identifier, f.search, f.created_after, f.created_before, f.where)
    if selection.is_empty():  # pragma: no cover - BulkFilter refuses it
        raise HTTPException(422, "the filter is empty; name at least a status or a route")
    return selection


@router.post("/tasks/bulk", tags=["tasks"], response_model=BulkOut, responses=BAD_WHERE)
def bulk(ctx: Ctx, who: Operator, body: BulkRequest) -> dict[str, Any]:
    """One action on many tasks, by ids or by filter; tasks in other statuses are counted but not changed."""
    selection = bulk_selection(body)
    action = Action(body.action)
    result = ctx.store.apply_action(action, selection, actor=who.actor, reason=body.reason, now=ctx.now())
    return result.to_json()


for _action in (Action.RETRY, Action.SKIP, Action.FINISH, Action.FAIL):
    _action_endpoint(_action)


# --- routes and runs -------------------------------------------------------------------------------


NO_ROUTE: dict[int | str, dict[str, Any]] = {404: error("No route with this name.")}


@router.get("/routes", tags=["routes"], response_model=list[RouteOut])
def routes(ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    """Every configured route with its counts, schedules, next fire times, last runs, and its gates: a
    maintenance window covering now, and its circuit breaker."""
    return ctx.routes_json()


@router.get("/circuits", tags=["routes"], response_model=list[CircuitOut])
def circuits(ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    """Every circuit breaker: those configured, and any other the database still holds."""
    return ctx.circuits_json()


@router.post(
    "/circuits/{key}/close",
    tags=["routes"],
    response_model=CircuitOut,
    responses={404: error("No circuit breaker with this key.")},
)
def close_circuit(ctx: Ctx, who: Operator, key: str) -> dict[str, Any]:
    """Close a breaker by hand (the target is known to be back): deliveries resume at once, counting from zero.
    Audited as ``circuit.close``."""
    return close_circuit_by_hand(ctx, who, key)


def close_circuit_by_hand(ctx: WebContext, who: Principal, key: str) -> dict[str, Any]:
    known = {c["key"]: c for c in ctx.circuits_json()}
    if key not in known:
        raise HTTPException(404, f"no circuit breaker {key!r} (known: {', '.join(sorted(known)) or 'none'})")
    update = ctx.store.close_circuit(key, now=ctx.now(), by=who.actor)
    before = update.before if update is not None else "closed"
    ctx.audit(who, "circuit.close", {"key": key}, detail=f"was {before}")
    return {c["key"]: c for c in ctx.circuits_json()}[key]


def run_parts(part: str | None) -> tuple[str, ...]:
    if part is None or part == "both":
        return PARTS
    if part not in PARTS:
        raise HTTPException(400, "part must be incoming, outgoing or both")
    return (part,)


async def start_run(ctx: WebContext, who: Principal, name: str, parts: tuple[str, ...], *, wait: bool) -> Any:
    """Start (or, with ``wait``, run to the end) an import and/or export pass of a route."""
    ctx.route(name)
    if not ctx.route_active(name):
        raise HTTPException(409, f"route {name} is inactive; activate it first")
    busy = [p for p in parts if (name, p) in ctx.running and not ctx.running[(name, p)].done()]
    if busy:
        raise HTTPException(409, f"route {name}: {', '.join(busy)} is already running")
    ctx.audit(who, "route.run", {"route": name, "parts": list(parts)}, detail="wait" if wait else None)
    coro = run_once(
        ctx.project,
        ctx.store,
        name,
        incoming="incoming" in parts,
        outgoing="outgoing" in parts,
        actor=who.actor,
    )
    if wait:
        try:
            return await coro
        except CrossdockError as exc:
            raise HTTPException(409, ctx.redact(exc.message)) from None

    async def background() -> None:
        try:
            await coro
        except Exception:
            log.exception("run of route %s (%s) failed", name, ", ".join(parts))
        finally:
            for p in parts:
                ctx.running.pop((name, p), None)

    job = asyncio.create_task(background(), name=f"run {name} {'+'.join(parts)}")
    for p in parts:
        ctx.running[(name, p)] = job
    return None


@router.post(
    "/routes/{name}/run",
    tags=["routes"],
    status_code=202,
    response_model=None,
    responses={
        202: {"model": RunStartedOut, "description": "The run started in the background."},
        200: {
            "description": "With `wait=true`: the run's summary, as `crossdock run --json` prints it.",
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
        },
        **NO_ROUTE,
        409: error("The route is inactive, that part is already running, or (`wait=true`) the run failed."),
    },
)
async def run_route(
    request: Request,
    response: Response,
    ctx: Ctx,
    who: Operator,
    name: str,
    part: Annotated[Literal["incoming", "outgoing", "both"] | None, Query(description="default: both")] = None,
    wait: Annotated[bool, Query(description="run inline and answer 200 with the summary")] = False,
) -> dict[str, Any]:
    """Run a route now. By default it starts in the background and answers 202 with what started;
    with ``wait=true`` it runs to the end and answers 200 with the run summary."""
    parts = run_parts(part)
    result = await start_run(ctx, who, name, parts, wait=wait)
    if wait:
        response.status_code = 200
        data: dict[str, Any] = result
        return data
    return {"route": name, "parts": list(parts), "started_at": iso(ctx.now()), "status": "started"}


def set_active(ctx: WebContext, who: Principal, name: str, active: bool) -> dict[str, Any]:
    ctx.route(name)
    ctx.store.set_route_active(name, active, now=ctx.now())
    ctx.audit(who, "route.activate" if active else "route.deactivate", {"route": name})
    return {"name": name, "active": ctx.route_active(name)}


@router.post("/routes/{name}/activate", tags=["routes"], response_model=RouteActiveOut, responses=NO_ROUTE)
def activate(ctx: Ctx, who: Operator, name: str) -> dict[str, Any]:
    """Switch a route on (overrides the config's ``active`` until deactivated)."""
    return set_active(ctx, who, name, True)


@router.post("/routes/{name}/deactivate", tags=["routes"], response_model=RouteActiveOut, responses=NO_ROUTE)
def deactivate(ctx: Ctx, who: Operator, name: str) -> dict[str, Any]:
    """Switch a route off: the scheduler and "run now" leave it alone; its tasks stay."""
    return set_active(ctx, who, name, False)


@router.get("/runs", tags=["routes"], response_model=list[RunOut])
def runs(
    ctx: Ctx, _: Viewer, route: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> list[dict[str, Any]]:
    """The latest import and export runs, newest first."""
    return [r.to_json() for r in ctx.store.list_runs(route, limit)]


# --- audit -----------------------------------------------------------------------------------------


def audit_entries(
    ctx: WebContext,
    *,
    actor: str | None,
    action: str | None,
    search: str | None,
    limit: int,
    cursor: int | None,
) -> tuple[list[AuditEntry], int | None]:
    """Newest first, filtered by actor, action prefix or text; scans at most a few pages of the log."""
    found: list[AuditEntry] = []
    scanned = 0
    while len(found) < limit and scanned < 50_000:
        page = ctx.store.list_audit(limit=1000, cursor=cursor)
        if not page:
            cursor = None
            break
        for entry in page:
            cursor = entry.id
            scanned += 1
            if actor and entry.actor != actor:
                continue
            if action and not entry.action.startswith(action):
                continue
            if search and search.lower() not in f"{entry.target} {entry.detail or ''}".lower():
                continue
            found.append(entry)
            if len(found) >= limit:
                break
        if len(page) < 1000 and len(found) < limit:
            cursor = None
            break
    return found, cursor


def audit_csv(entries: list[AuditEntry], redact: Callable[[str], str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "at", "actor", "action", "target", "changed", "detail"])
    for e in entries:
        target = "; ".join(f"{k}={v}" for k, v in e.target.items())
        row = [
            e.id,
            iso(e.at),
            e.actor,
            e.action,
            target,
            "" if e.changed is None else e.changed,
            e.detail or "",
        ]
        writer.writerow([csv_safe(redact(str(v))) for v in row])
    return buf.getvalue()


CSV_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The rows as CSV (`Content-Disposition: attachment`); cells starting with = + - @ are quoted.",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/audit",
    tags=["audit"],
    response_model=None,
    responses={
        200: {
            "model": AuditPage,
            "description": "JSON by default; CSV with `format=csv` (`Content-Disposition: attachment`).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
def audit(
    ctx: Ctx,
    _: Viewer,
    actor: str | None = None,
    action: str | None = None,
    search: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    cursor: Cursor = None,
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | Response:
    """Who did what: newest first. ``format=csv`` (or ``/audit.csv``) downloads the same rows as CSV."""
    entries, next_cursor = audit_entries(
        ctx, actor=actor, action=action, search=search, limit=limit, cursor=parse_cursor(cursor)
    )
    if format == "csv":
        return csv_response(audit_csv(entries, ctx.redact))
    return {"items": [e.to_json() for e in entries], "next_cursor": str(next_cursor) if next_cursor else None}


def csv_response(text: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="crossdock-audit.csv"'},
    )


@router.get("/audit.csv", tags=["audit"], response_class=Response, responses=CSV_ANSWER)
def audit_export(
    ctx: Ctx,
    _: Viewer,
    actor: str | None = None,
    action: str | None = None,
    search: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> Response:
    """The audit log as CSV."""
    entries, _next = audit_entries(ctx, actor=actor, action=action, search=search, limit=limit, cursor=None)
    return csv_response(audit_csv(entries, ctx.redact))


# --- tokens (admin) --------------------------------------------------------------------------------


@router.get("/tokens", tags=["auth"], response_model=list[TokenOut])
def tokens(ctx: Ctx, _: Admin) -> list[dict[str, Any]]:
    """Every token: name, role, created, last used, revoked. Never the token itself."""
    return [
        {
            "id": t.id,
            "name": t.name,
            "role": t.role,
            "created_at": iso(t.created_at),
            "last_used": iso(t.last_used),
            "revoked": t.revoked,
        }
        for t in ctx.store.list_tokens()
    ]


@router.post("/tokens", tags=["auth"], status_code=201, response_model=NewTokenOut)
def create_token(ctx: Ctx, who: Admin, body: NewToken) -> dict[str, Any]:
    """Create a token; the answer is the only time it is shown."""
    if body.role not in ROLES:  # pragma: no cover - the model already refuses it
        raise HTTPException(400, "unknown role")
    token_id, token = issue_token(ctx.store, body.role, body.name, now=ctx.now())
    ctx.audit(who, "token.create", {"token_id": token_id, "name": body.name, "role": body.role})
    return {"id": token_id, "name": body.name, "role": body.role, "token": token}


@router.delete(
    "/tokens/{token_id:int}", tags=["auth"], response_model=RevokedOut, responses={404: error("No token with this id.")}
)
def revoke(ctx: Ctx, who: Admin, token_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> dict[str, Any]:
    """Revoke a token; its sessions end within a few seconds."""
    if not ctx.store.revoke_token(token_id):
        raise HTTPException(404, f"no token with id {token_id}")
    ctx.audit(who, "token.revoke", {"token_id": token_id})
    return {"id": token_id, "revoked": True}
