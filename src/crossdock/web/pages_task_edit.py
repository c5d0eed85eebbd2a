"""The dashboard's Edit of a task: a JSON editor, then a preview (the diff and the route's verdict), then the confirmed
edit lands on the new task. Two steps like the bulk actions' confirmation, with the same session and CSRF checks."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from crossdock.engine.task_edit import EditCheck, EditRefused, check_edit, editable
from crossdock.tasks import Task
from crossdock.web import views
from crossdock.web.api_task_edit import write_edit
from crossdock.web.context import WebContext, get_ctx
from crossdock.web.display import shown
from crossdock.web.pages import form_session, page_session, redirect, render

router = APIRouter(include_in_schema=False)


def _editable(request: Request, session: Any, ctx: WebContext, task_id: int) -> Task | Response:
    """The task to edit, or the page that says why there is none to edit (not found, or refused)."""
    task = ctx.store.get_task(task_id)
    if task is None:
        return render(request, "not_found.html", session, status=404, what=f"task {task_id}")
    refusal = _refusal(ctx, task)
    if refusal is not None:
        return redirect(f"/tasks/{task_id}", f"Cannot edit: {refusal}")
    return task


def _refusal(ctx: WebContext, task: Task) -> str | None:
    """Why the dashboard does not offer this edit, or None."""
    try:
        editable(ctx.project, task)
    except EditRefused as exc:
        return exc.message
    if shown(task.entity, ctx.redact).truncated:
        return "the entity is too large to edit in the browser: use crossdock tasks edit (--set, --entity-file)"
    return None


def _page(
    request: Request,
    session: Any,
    task: Task,
    text: str,
    *,
    reason: str = "",
    check: EditCheck | None = None,
    problem: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "task_edit.html",
        session,
        status=status,
        page="tasks",
        task=task,
        text=text,
        reason=reason,
        check=check,
        problem=problem if problem is not None else (check.problem if check is not None else None),
    )


@router.get("/tasks/{task_id}/edit", response_class=HTMLResponse)
def edit_form(request: Request, task_id: int) -> Response:
    session = page_session(request)
    if not session[0].can("operator"):
        raise HTTPException(403, f"editing a task needs the operator role; you are {session[0].role}")
    ctx = get_ctx(request)
    task = _editable(request, session, ctx, task_id)
    if isinstance(task, Response):
        return task
    text = views.pretty_json(task.entity) if task.entity is not None else (task.raw or "{}")
    return _page(request, session, task, text)


@router.post("/tasks/{task_id}/edit", response_class=HTMLResponse)
async def edit_submit(request: Request, task_id: int) -> Response:
    """Without ``confirm`` (or with an entity changed since its preview) it previews; confirmed, it edits."""
    principal, form, csrf = await form_session(request, "operator")
    session = (principal, csrf)
    ctx = get_ctx(request)
    task = _editable(request, session, ctx, task_id)
    if isinstance(task, Response):
        return task
    text = str(form.get("entity") or "")
    reason = str(form.get("reason") or "").strip()
    try:
        entity = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _page(request, session, task, text, reason=reason, problem=f"the entity is not JSON: {exc}", status=422)
    check = check_edit(ctx.project, task, entity, reason=reason or None)
    confirmed = form.get("confirm") == "1" and form.get("previewed") == text
    if not check.valid or not confirmed:
        return _page(request, session, task, text, reason=reason, check=check, status=200 if check.valid else 422)
    try:
        result = write_edit(ctx, principal, check)
    except HTTPException as exc:
        return redirect(f"/tasks/{task_id}", f"Refused: {exc.detail}")
    moved = (
        f"task {task_id} is now {result.original_after.value}"
        if result.original_after is not result.original_before
        else f"task {task_id} stays {result.original_before.value}"
    )
    return redirect(f"/tasks/{result.task_id}", f"Edited task {task_id} as task {result.task_id}; {moved}.")
