"""``POST /api/v1/tasks/{id}/edit``: correct a task's entity and replay it as a new task (engine/task_edit.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossdock.engine.task_edit import EditCheck, EditRefused, apply_changes, check_edit, edit_task
from crossdock.errors import TaskNotFound, TransitionRefused, UsageError
from crossdock.store.base import EditResult
from crossdock.web.api import Ctx, Operator, get_task_or_404, task_detail
from crossdock.web.auth import Principal
from crossdock.web.context import WebContext

router = APIRouter(prefix="/api/v1", tags=["tasks"])


class EditRequest(BaseModel):
    """The whole edited entity, or the fields to change: one of the two."""

    # the schema says what the validator below checks: entity alone, or set and/or unset (not empty)
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "oneOf": [
                {"required": ["entity"], "not": {"anyOf": [{"required": ["set"]}, {"required": ["unset"]}]}},
                {"anyOf": [{"required": ["set"]}, {"required": ["unset"]}], "not": {"required": ["entity"]}},
            ]
        },
    )
    entity: dict[str, Any] | None = Field(
        default=None,
        description="the whole edited entity; a value sent back as the API showed it masked (***) keeps its stored "
        "value",
    )
    set_: dict[str, Any] | None = Field(
        default=None,
        alias="set",
        json_schema_extra={"minProperties": 1},
        description='path → new value (any JSON), paths as the expression language reads them: "category", '
        '"price.amount", "items[0].sku"',
    )
    unset: list[str] | None = Field(default=None, description="paths to remove", json_schema_extra={"minItems": 1})
    reason: str | None = Field(default=None, max_length=2000, description="kept in both timelines and the audit log")

    @model_validator(mode="after")
    def entity_or_fields(self) -> EditRequest:
        if self.entity is not None and (self.set_ or self.unset):
            raise ValueError("give either entity or set/unset, not both")
        if self.entity is None and not self.set_ and not self.unset:
            raise ValueError("give entity (the whole edited entity) or set and/or unset (the fields to change)")
        return self


class FieldChange(BaseModel):
    path: str
    old: str | None = Field(description="the value before, as compact JSON (cut at 200 characters); null: absent")
    new: str | None = Field(description="the value after, as compact JSON; null: removed")


class EditOut(BaseModel):
    original_id: int
    task_id: int = Field(description="the new task, in new, with the edited entity")
    route: str
    original_before: str = Field(description="the original's status before the edit")
    original_after: str = Field(
        description="skipped when a skip applies to it (new, retry, failed, waiting), else unchanged"
    )
    superseded: int = Field(description="older due tasks of the same record skipped, so the edit is what goes out")
    changes: list[FieldChange]
    task: dict[str, Any] = Field(description="the new task, as GET /api/v1/tasks/{id} answers")


class EditInvalidOut(BaseModel):
    """A refused edit: why, and what it would have changed; a body the schema refuses answers FastAPI's list of
    problems as ``detail`` (and no ``changes``), so both shapes are this one."""

    detail: str | list[dict[str, Any]] = Field(description="why the route refuses the edited entity")
    changes: list[FieldChange] | None = Field(default=None, description="what the edit would have changed")


def edit_check(ctx: WebContext, task_id: int, body: EditRequest) -> EditCheck:
    """The verdict on the request's edit; 404, 409 (cannot be edited now), 400 (a path that does not apply)."""
    task = get_task_or_404(ctx, task_id)
    try:
        if body.entity is not None:
            entity: Any = body.entity
        else:
            sets = list((body.set_ or {}).items())
            entity = apply_changes(task.entity, sets, body.unset or [], labels=("set", "unset"))
        return check_edit(ctx.project, task, entity, reason=body.reason)
    except EditRefused as exc:
        raise HTTPException(409, exc.message) from None
    except UsageError as exc:
        raise HTTPException(400, exc.message) from None


def write_edit(ctx: WebContext, who: Principal, check: EditCheck) -> EditResult:
    """Write a valid verdict; 409 when the task changed meanwhile (a worker claimed it), 404 when it is gone."""
    try:
        return edit_task(ctx.store, ctx.project, check, actor=who.actor, now=ctx.now())
    except TransitionRefused as exc:
        raise HTTPException(409, exc.message) from None
    except TaskNotFound as exc:
        raise HTTPException(404, exc.message) from None


@router.post(
    "/tasks/{task_id}/edit",
    response_model=EditOut,
    responses={
        400: {"description": "A set or unset path that does not parse or does not apply to the entity."},
        404: {"description": "No task with this id."},
        409: {
            "description": "The task cannot be edited now: it is processing (a worker is delivering it), or its "
            "route is no longer in the config."
        },
        422: {
            "model": EditInvalidOut,
            "description": "The edited entity fails the route's checks (identifier missing or changed, "
            "validate.max_entity_bytes, validate.schema) or changes nothing; nothing was written. A body that is "
            "neither entity nor set/unset is a 422 too, with FastAPI's list of problems as detail.",
        },
    },
)
def edit(ctx: Ctx, who: Operator, task_id: int, body: EditRequest) -> Any:
    """Correct a task's entity and replay it: a new task (new) with the edited entity, checked like an import
    (identifier, size, schema; not transformed again), linked both ways to the original. The original is skipped
    when a skip applies to its status; a finished one stays finished. Both timelines and the audit log keep the
    diff (redacted). One transaction: on any refusal nothing changes."""
    check = edit_check(ctx, task_id, body)
    if check.problem is not None:
        return JSONResponse({"detail": check.problem, "changes": check.diff}, status_code=422)
    result = write_edit(ctx, who, check)
    replay = get_task_or_404(ctx, result.task_id)
    return {**result.to_json(), "changes": check.diff, "task": task_detail(ctx, replay)}
