"""The transformer tester: a sample record through a route as a run would take it, with nothing written or sent.

``POST /api/v1/routes/{name}/test`` answers what :func:`crossdock.engine.preview.evaluate_samples` makes of one
record (the report of ``crossdock transform --outgoing --trace --json``); the route page's "Test the transforms"
panel posts its form to ``/routes/{name}/test`` and shows the same, step by step. It only reads (the latest task of
the identifier, the storages), so a viewer may use it; it writes no audit row either.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field, ValidationError

from crossdock.engine.preview import WRITTEN, evaluate_samples
from crossdock.errors import CrossdockError
from crossdock.store import TaskFilter
from crossdock.tasks import Task
from crossdock.web.api import Ctx, Viewer
from crossdock.web.context import WebContext, get_ctx
from crossdock.web.views import pretty_json

#: recent tasks of the route offered as samples
RECENT = 20
#: the largest request body the tester takes (a record is at most ``validate.max_entity_bytes`` anyway)
MAX_BODY = 4 * 1024 * 1024

api_router = APIRouter(prefix="/api/v1", tags=["routes"])
page_router = APIRouter(include_in_schema=False)


# --- the API ---------------------------------------------------------------------------------------


class TesterIn(BaseModel):
    record: dict[str, Any] = Field(description="the record as the route's source would read it (a JSON object)")


class TraceStep(BaseModel):
    #: input, incoming, route or outgoing
    stage: str
    #: "input", "step 1 (filter)", "step 2 (shop-product > 1 (convert))"...
    step: str
    #: the entity after the step (a list of entities after a split); absent where the record stopped
    output: Any = None
    stopped: Literal["filtered", "rejected"] | None = None
    reason: str | None = None


class Validation(BaseModel):
    verdict: Literal["passed", "failed", "not reached"]
    #: the entity's size as compact JSON, as the import measures it
    bytes: int | None
    max_entity_bytes: int
    schema_file: str | None
    schema_verdict: Literal["passed", "failed", "not checked", "none"]
    reason: str | None


class Delta(BaseModel):
    outcome: Literal["new", "changed", "unchanged", "touches_failed", "resend"]
    text: str
    #: the latest task of the identifier it is compared with
    task: int | None
    task_status: str | None
    #: for changed: ``{"path", "old", "new"}`` against the entity of that task
    fields: list[dict[str, Any]] = []
    more_fields: int = 0


class OutgoingPreview(BaseModel):
    #: False when delta sends nothing now (unchanged): the output and request are what it would be
    would_send: bool
    trace: list[TraceStep]
    output: Any
    outcome: Literal["send", "filtered", "failed"]
    #: HTTP: method, url, headers (secrets masked), body; file: file, mode, text; others: target, body
    request: dict[str, Any] | None
    reason: str | None


class EntityResult(BaseModel):
    identifier: str | None
    outcome: Literal["ok", "filtered", "rejected"]
    reason: str | None
    #: the entity as the import would store it (after the incoming and route transforms)
    entity: Any
    #: the status of the task the import would create; None when it creates none (delta touches the latest)
    task_status: str | None
    validation: Validation
    delta: Delta
    outgoing: OutgoingPreview | None = None
    raw: str | None = None


class TesterOut(BaseModel):
    route: str
    input: Any
    outcome: Literal["ok", "filtered", "rejected", "empty"]
    reason: str | None
    identifiers: list[str]
    entities: list[Any]
    trace: list[TraceStep]
    results: list[EntityResult]
    database: str
    written: str


async def run_tester(ctx: WebContext, name: str, record: Any) -> dict[str, Any]:
    """One record through the route (secrets masked), as the API answers it."""
    try:
        [result] = await evaluate_samples(ctx.project, ctx.store, name, [record], outgoing=True, trace=True)
    except CrossdockError as exc:
        raise HTTPException(409, ctx.redact(exc.message)) from None
    return {"route": name, **result, "database": ctx.store.backend, "written": WRITTEN}


@api_router.post(
    "/routes/{name}/test",
    response_model=TesterOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TesterIn.model_json_schema()}},
        }
    },
    responses={400: {"description": 'the body is not JSON, or not {"record": {...}} with an object'}},
)
async def route_test(ctx: Ctx, who: Viewer, name: str, request: Request) -> Any:
    """Test a sample record: the route's incoming and route transforms (each step's output), the identifier,
    validation (``max_entity_bytes`` and the schema), delta against the latest task of its identifier (new,
    changed with the fields, unchanged, or the same as a failed latest task), the outgoing transform and the
    request the target would get (secrets masked). The verdict is a real run's; nothing is written or sent."""
    ctx.route(name)
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"the body is over {MAX_BODY // (1024 * 1024)} MiB")
    try:
        given = TesterIn.model_validate_json(body)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise HTTPException(400, f'expected {{"record": {{...}}}}: {problem["msg"]}') from None
    if not isinstance(given.record, dict):
        raise HTTPException(400, "record must be a JSON object")
    return await run_tester(ctx, name, given.record)


# --- the route page's panel ------------------------------------------------------------------------


def panel(ctx: WebContext, name: str, **shown: Any) -> dict[str, Any]:
    """What the route page's panel shows: recent tasks to start from, the record text, a result or an error."""
    tasks, _cursor = ctx.store.list_tasks(TaskFilter(route=name), limit=RECENT)
    return {"tasks": tasks, "record": "", "note": None, "result": None, "error": None, **shown}


def sample_of(task: Task) -> tuple[str, str]:
    """The record text a task gives the tester, and what it is: its raw record when stored, else its entity."""
    if task.raw is not None:
        return task.raw, f"the raw record of task {task.id}, as the source gave it"
    if task.entity is None:
        return "", f"task {task.id} keeps no entity"
    note = f"the entity of task {task.id} ({task.status.value}): the record after the incoming and route transforms"
    return pretty_json(task.entity), note


def _parsed(text: str) -> tuple[Any, str | None]:
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, f"the record is not JSON: {exc}"
    if not isinstance(record, dict):
        return None, "the record must be a JSON object"
    return record, None


@page_router.get("/routes/{name}/test/sample", response_class=HTMLResponse)
def tester_sample(request: Request, name: str, task: str = "") -> Response:
    """The record box filled from a task (htmx swaps it in when a task is picked)."""
    from crossdock.web.pages import page_session, render

    session = page_session(request)
    ctx = get_ctx(request)
    ctx.route(name)
    found = ctx.store.get_task(int(task)) if task.isdigit() else None
    if found is not None and found.route != name:
        found = None
    text, note = sample_of(found) if found is not None else ("", None)
    return render(request, "_tester_record.html", session, tester={"record": text, "note": note})


@page_router.post("/routes/{name}/test", response_class=HTMLResponse)
async def tester_run(request: Request, name: str) -> Response:
    """The panel's Run: htmx gets the result alone; a plain form post gets the route page with it."""
    from crossdock.web.pages import form_session, render, route_page_response

    principal, form, csrf = await form_session(request, "viewer")
    ctx = get_ctx(request)
    if name not in ctx.project.routes:
        raise HTTPException(404, f"no route named {name!r}")
    text = str(form.get("record") or "")
    record, error = _parsed(text)
    result = None
    if error is None:
        try:
            result = await run_tester(ctx, name, record)
        except HTTPException as exc:
            error = str(exc.detail)
    picked = str(form.get("task") or "")
    shown = {"record": text, "result": result, "error": error, "picked": picked}
    if request.headers.get("HX-Request") == "true":
        return render(request, "_tester_result.html", (principal, csrf), tester=shown)
    return route_page_response(request, name, (principal, csrf), tester=panel(ctx, name, **shown))
