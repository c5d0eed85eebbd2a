"""The REST API under ``/api/v1`` (DESIGN section 3). JSON in, JSON out, ``Authorization: Bearer TOKEN``."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crossdock.engine.runner import run_once
from crossdock.errors import CrossdockError, StoreUnavailable
from crossdock.store import TaskFilter
from crossdock.store.base import AuditEntry
from crossdock.tasks import Action, Status, Task, allowed_actions, is_allowed, iso, refusal_message
from crossdock.timeline import timeline
from crossdock.web.auth import ROLES, Principal, issue_token
from crossdock.web.context import PARTS, WebContext, get_ctx
from crossdock.web.display import bounded_result, bounded_text, entity_download, entity_fields

log = logging.getLogger("crossdock.web")

Ctx = Annotated[WebContext, Depends(get_ctx)]


def require(minimum: str) -> Callable[[Request], Principal]:
    """A dependency: the bearer token's principal, 401 without a valid token, 403 below ``minimum``."""

    def dependency(request: Request) -> Principal:
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


# --- models ----------------------------------------------------------------------------------------


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: kept in the task log and the audit log
    reason: str | None = Field(default=None, max_length=2000)


class BulkFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: list[Status] | None = None
    route: str | None = None
    identifier: str | None = None
    search: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["retry", "skip", "finish", "fail"]
    ids: list[int] | None = Field(default=None, max_length=100_000)
    filter: BulkFilter | None = None
    reason: str | None = Field(default=None, max_length=2000)


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
    responses={503: {"description": "The database cannot be used right now: status, error and since when."}},
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


@router.get("/stats", tags=["tasks"])
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
) -> TaskFilter:
    return TaskFilter(
        statuses=status or None,
        route=route or None,
        identifier=identifier or None,
        search=search or None,
        created_after=created_after,
        created_before=created_before,
    )


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit():
        raise HTTPException(400, "cursor must be the next_cursor value of the previous page")
    return int(cursor)


@router.get("/tasks", tags=["tasks"])
def list_tasks(
    ctx: Ctx,
    _: Viewer,
    status: Annotated[list[Status] | None, Query(description="repeatable")] = None,
    route: str | None = None,
    identifier: str | None = None,
    search: Annotated[str | None, Query(description="text in the identifier or the error")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next (older) page."""
    selection = task_filter(status, route, identifier, search, created_after, created_before)
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


@router.get("/tasks/{task_id}", tags=["tasks"])
def get_task(
    ctx: Ctx,
    _: Viewer,
    task_id: int,
    full: Annotated[bool, Query(description="the entity whole, whatever its size")] = False,
) -> dict[str, Any]:
    """One task with its entity and its history (``logs``, oldest first).

    An entity over 256 KiB (compact JSON) comes as ``entity: null`` with ``entity_truncated: true``,
    ``entity_bytes``, an ``entity_preview`` and ``entity_url`` (its download); ``full=true`` sends it whole."""
    return task_detail(ctx, get_task_or_404(ctx, task_id), full=full)


@router.get(
    "/tasks/{task_id}/entity",
    tags=["tasks"],
    response_class=Response,
    responses={
        200: {
            "description": "The whole entity as a JSON file (``Content-Disposition: attachment``), redacted.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        404: {"description": "No task with this id, or the task has no entity stored."},
    },
)
def get_task_entity(ctx: Ctx, _: Viewer, task_id: int) -> Response:
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
        ctx: Ctx, who: Operator, task_id: int, body: Annotated[Reason | None, Body()] = None
    ) -> dict[str, Any]:
        task = act_on_task(ctx, who, task_id, action, body.reason if body else None)
        return task_detail(ctx, task)

    endpoint.__name__ = f"task_{action.value}"
    endpoint.__doc__ = f"{action.value.capitalize()} one task. 409 with the allowed transitions when refused."
    router.post(f"/tasks/{{task_id}}/{action.value}", tags=["tasks"])(endpoint)


def bulk_selection(body: BulkRequest) -> TaskFilter:
    if body.ids is not None and body.filter is not None:
        raise HTTPException(400, "give either ids or a filter, not both")
    if body.ids is not None:
        if not body.ids:
            raise HTTPException(400, "ids is empty")
        return TaskFilter(ids=body.ids)
    if body.filter is None:
        raise HTTPException(400, "give ids or a filter")
    f = body.filter
    selection = task_filter(f.status, f.route, f.identifier, f.search, f.created_after, f.created_before)
    if selection.is_empty():
        raise HTTPException(400, "the filter is empty; name at least a status or a route")
    return selection


@router.post("/tasks/bulk", tags=["tasks"])
def bulk(ctx: Ctx, who: Operator, body: BulkRequest) -> dict[str, Any]:
    """One action on many tasks, by ids or by filter; tasks in other statuses are counted but not changed."""
    selection = bulk_selection(body)
    action = Action(body.action)
    result = ctx.store.apply_action(action, selection, actor=who.actor, reason=body.reason, now=ctx.now())
    return result.to_json()


for _action in (Action.RETRY, Action.SKIP, Action.FINISH, Action.FAIL):
    _action_endpoint(_action)


# --- routes and runs -------------------------------------------------------------------------------


@router.get("/routes", tags=["routes"], response_model=list[RouteOut])
def routes(ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    """Every configured route with its counts, schedules, next fire times, last runs, and its gates: a
    maintenance window covering now, and its circuit breaker."""
    return ctx.routes_json()


@router.get("/circuits", tags=["routes"], response_model=list[CircuitOut])
def circuits(ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    """Every circuit breaker: those configured, and any other the database still holds."""
    return ctx.circuits_json()


@router.post("/circuits/{key}/close", tags=["routes"], response_model=CircuitOut)
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


@router.post("/routes/{name}/run", tags=["routes"])
async def run_route(
    request: Request,
    response: Response,
    ctx: Ctx,
    who: Operator,
    name: str,
    part: Annotated[str | None, Query(description="incoming, outgoing or both (default)")] = None,
    wait: Annotated[bool, Query(description="run inline and answer 200 with the summary")] = False,
) -> dict[str, Any]:
    """Run a route now. By default it starts in the background and answers 202 with what started;
    with ``wait=true`` it runs to the end and answers 200 with the run summary."""
    parts = run_parts(part)
    result = await start_run(ctx, who, name, parts, wait=wait)
    if wait:
        data: dict[str, Any] = result
        return data
    response.status_code = 202
    return {"route": name, "parts": list(parts), "started_at": iso(ctx.now()), "status": "started"}


def set_active(ctx: WebContext, who: Principal, name: str, active: bool) -> dict[str, Any]:
    ctx.route(name)
    ctx.store.set_route_active(name, active, now=ctx.now())
    ctx.audit(who, "route.activate" if active else "route.deactivate", {"route": name})
    return {"name": name, "active": ctx.route_active(name)}


@router.post("/routes/{name}/activate", tags=["routes"])
def activate(ctx: Ctx, who: Operator, name: str) -> dict[str, Any]:
    """Switch a route on (overrides the config's ``active`` until deactivated)."""
    return set_active(ctx, who, name, True)


@router.post("/routes/{name}/deactivate", tags=["routes"])
def deactivate(ctx: Ctx, who: Operator, name: str) -> dict[str, Any]:
    """Switch a route off: the scheduler and "run now" leave it alone; its tasks stay."""
    return set_active(ctx, who, name, False)


@router.get("/runs", tags=["routes"])
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
        writer.writerow([_csv_safe(redact(str(v))) for v in row])
    return buf.getvalue()


def _csv_safe(value: str) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas; quote them as text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") and not value[1:2].isdigit() else value


@router.get("/audit", tags=["audit"], response_model=None)
def audit(
    ctx: Ctx,
    _: Viewer,
    actor: str | None = None,
    action: str | None = None,
    search: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    cursor: str | None = None,
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


@router.get("/audit.csv", tags=["audit"], response_class=Response)
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


@router.get("/tokens", tags=["auth"])
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


@router.post("/tokens", tags=["auth"], status_code=201)
def create_token(ctx: Ctx, who: Admin, body: NewToken) -> dict[str, Any]:
    """Create a token; the answer is the only time it is shown."""
    if body.role not in ROLES:  # pragma: no cover - the model already refuses it
        raise HTTPException(400, "unknown role")
    token_id, token = issue_token(ctx.store, body.role, body.name, now=ctx.now())
    ctx.audit(who, "token.create", {"token_id": token_id, "name": body.name, "role": body.role})
    return {"id": token_id, "name": body.name, "role": body.role, "token": token}


@router.delete("/tokens/{token_id}", tags=["auth"])
def revoke(ctx: Ctx, who: Admin, token_id: int) -> dict[str, Any]:
    """Revoke a token; its sessions end within a few seconds."""
    if not ctx.store.revoke_token(token_id):
        raise HTTPException(404, f"no token with id {token_id}")
    ctx.audit(who, "token.revoke", {"token_id": token_id})
    return {"id": token_id, "revoked": True}
