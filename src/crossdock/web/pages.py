"""The dashboard (UI.md): server-rendered pages, a signed session cookie, and a CSRF token on every form post.

Pages answer GETs with a redirect to the login form when there is no session; form posts answer 401 without a
session, 403 for a role that is too low or a missing/wrong CSRF token, so a forged cross-site form never acts.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.concurrency import iterate_in_threadpool
from starlette.datastructures import FormData

from crossdock.engine.dry_run import dry_run
from crossdock.errors import CrossdockError, UsageError
from crossdock.store import TaskFilter
from crossdock.store.payload_filter import payload_filter
from crossdock.task_files import ExportFormat, export_chunks
from crossdock.tasks import TRANSITIONS, Action, LogLine, Status, Task, allowed_actions, is_allowed
from crossdock.timeline import timeline
from crossdock.web import views
from crossdock.web.api import (
    act_on_task,
    audit_csv,
    audit_entries,
    close_circuit_by_hand,
    csv_response,
    run_parts,
    set_active,
    start_run,
)
from crossdock.web.auth import CSRF_FIELD, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Principal, csrf_ok
from crossdock.web.context import WebContext, get_ctx, redact_data
from crossdock.web.display import DISPLAY_LIMIT, cut, entity_download, shown

TEMPLATES = Path(__file__).parent / "templates"
FLASH_COOKIE = "crossdock_flash"
BULK_ACTIONS = (Action.RETRY, Action.SKIP, Action.FINISH, Action.FAIL)
ACTION_LABELS = {
    Action.RETRY: "Retry",
    Action.SKIP: "Skip",
    Action.FINISH: "Mark finished",
    Action.FAIL: "Mark failed",
}

router = APIRouter(include_in_schema=False)


def make_templates(ctx: WebContext) -> Jinja2Templates:
    """Every ``{{ value }}`` goes through the project's redactor, so a secret can never reach a page."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    env = templates.env
    redact = ctx.redact

    def finalize(value: Any) -> Any:
        if isinstance(value, Markup):
            return Markup(redact(str(value)))
        if isinstance(value, str):
            return redact(value)
        return value

    env.finalize = finalize
    env.filters.update(
        num=views.num,
        compact=views.compact,
        ago=views.ago,
        exact=views.exact,
        badge=views.badge,
        when=views.time_tag,
        truncate_text=views.truncate,
        pretty=views.pretty_json,
        run_text=views.run_text,
        cron=views.humanize_cron,
        outcome=views.outcome_of,
    )
    env.globals.update(
        STATUS_NAMES=views.STATUS_NAMES,
        ACTION_LABELS={a.value: label for a, label in ACTION_LABELS.items()},
        ERROR_STATUSES=views.ERROR_STATUSES,
        duration=views.duration,
    )
    return templates


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


# --- session helpers ------------------------------------------------------------------------------


def session_of(request: Request) -> tuple[Principal, str] | None:
    return get_ctx(request).auth.read_session(request.cookies.get(SESSION_COOKIE))


class LoginRequired(Exception):
    """Raised by page handlers without a session; the app turns it into a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def page_session(request: Request) -> tuple[Principal, str]:
    found = session_of(request)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return found


async def form_session(request: Request, minimum: str) -> tuple[Principal, FormData, str]:
    """A form post's session, role and CSRF token, checked in that order (401, 403, 403)."""
    found = session_of(request)
    if found is None:
        raise HTTPException(401, "your session has ended; log in again")
    principal, csrf = found
    if not principal.can(minimum):
        raise HTTPException(403, f"this needs the {minimum} role; you are {principal.role}")
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not csrf_ok(csrf, given if isinstance(given, str) else None):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page and try again")
    return principal, form, csrf


def render(
    request: Request, name: str, session: tuple[Principal, str] | None, status: int = 200, **data: Any
) -> Response:
    ctx = get_ctx(request)
    flash = request.cookies.get(FLASH_COOKIE)
    context = {
        "user": session[0] if session else None,
        "csrf": session[1] if session else "",
        "can_act": bool(session and session[0].can("operator")),
        "flash": urllib.parse.unquote(flash) if flash else None,
        "refresh": ctx.settings.refresh_seconds,
        "now": ctx.now(),
        **data,
    }
    response = _templates(request).TemplateResponse(request, name, context, status_code=status)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(url: str, flash: str | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(FLASH_COOKIE, urllib.parse.quote(flash[:300]), max_age=60, httponly=True, samesite="lax")
    return response


def safe_next(value: str | None) -> str:
    """Only local paths, so the login form cannot be used to bounce people to another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


# --- login ----------------------------------------------------------------------------------------


def _login_page(request: Request, error: str | None = None, status: int = 200, next_url: str = "/") -> Response:
    ctx = get_ctx(request)
    cookie, value = ctx.auth.login_csrf()
    response = render(request, "login.html", None, status=status, error=error, login_csrf=value, next=next_url)
    response.set_cookie(LOGIN_CSRF_COOKIE, cookie, max_age=3600, httponly=True, samesite="lax", path="/login")
    return response


def _start_session(request: Request, principal: Principal, how: str, next_url: str) -> Response:
    ctx = get_ctx(request)
    ctx.audit(principal, "login", {"token_id": principal.token_id, "role": principal.role}, detail=how)
    response = redirect(safe_next(next_url))
    response.set_cookie(
        SESSION_COOKIE,
        ctx.auth.new_session(principal),
        max_age=int(ctx.settings.session_ttl),
        httponly=True,
        samesite="lax",
        secure=ctx.settings.cookie_secure,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.get("/login")
def login_form(request: Request, token: str | None = None, next: str | None = None) -> Response:
    """The login form; ``?token=`` is the one-time link ``serve`` prints on first start."""
    ctx = get_ctx(request)
    if token:
        principal = ctx.auth.from_token(token)
        if principal is None:
            return _login_page(request, "That login link is not valid (the token is unknown or revoked).", 401)
        return _start_session(request, principal, "login link", next or "/")
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    ctx = get_ctx(request)
    form = await request.form()
    given = form.get(CSRF_FIELD)
    next_url = safe_next(str(form.get("next") or "/"))
    if not ctx.auth.check_login_csrf(request.cookies.get(LOGIN_CSRF_COOKIE), given if isinstance(given, str) else None):
        return _login_page(request, "The form expired; please try again.", 403, next_url)
    token = form.get("token")
    principal = ctx.auth.from_token(token) if isinstance(token, str) else None
    if principal is None:
        # audited (with the address, throttled) and rate-limited by crossdock.web.login_limits
        return _login_page(request, "That token is not valid.", 401, next_url)
    return _start_session(request, principal, "token form", next_url)


@router.post("/logout")
async def logout(request: Request) -> Response:
    principal, _form, _csrf = await form_session(request, "viewer")
    get_ctx(request).audit(principal, "logout", {"token_id": principal.token_id})
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- monitor --------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def monitor(request: Request) -> Response:
    session = page_session(request)
    ctx = get_ctx(request)
    return render(
        request,
        "monitor.html",
        session,
        page="monitor",
        counts=views.monitor_counts(ctx),
        chart=views.throughput_chart(ctx),
        errors=views.top_errors(ctx),
        oldest=views.oldest_work(ctx),
    )


@router.get("/fragments/monitor", response_class=HTMLResponse)
def monitor_fragment(request: Request) -> Response:
    """The live counts, polled by htmx every few seconds."""
    found = session_of(request)
    if found is None:
        return Response(status_code=401, headers={"HX-Redirect": "/login"})
    return render(request, "_counts.html", found, counts=views.monitor_counts(get_ctx(request)))


# --- tasks ----------------------------------------------------------------------------------------


def _date(value: str | None, *, end: bool) -> datetime | None:
    """``2024-05-01`` or ``2024-05-01T10:00``; a bare date as an end bound covers that whole day."""
    if not value:
        return None
    try:
        parsed = views.parse_iso(value)
    except ValueError:
        raise HTTPException(400, f"{value!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    if parsed is not None and end and len(value) == 10:
        parsed += timedelta(days=1)
    return parsed


def filter_from(params: Any) -> tuple[TaskFilter, dict[str, Any]]:
    """The task filter in a query string or a form, and the same values to put back into links."""
    statuses = [s for s in params.getlist("status") if s in views.STATUS_NAMES]
    route = params.get("route") or None
    identifier = (params.get("identifier") or "").strip() or None
    q = (params.get("q") or "").strip() or None
    where = (params.get("where") or "").strip() or None
    created_from = params.get("created_from") or None
    created_to = params.get("created_to") or None
    selection = TaskFilter(
        statuses=[Status(s) for s in statuses] or None,
        route=route,
        identifier=identifier,
        search=q,
        where=where,
        created_after=_date(created_from, end=False),
        created_before=_date(created_to, end=True),
    )
    values = {
        "status": statuses,
        "route": route,
        "identifier": identifier,
        "q": q,
        "where": where,
        "created_from": created_from,
        "created_to": created_to,
    }
    return selection, values


def query_string(values: dict[str, Any], **extra: Any) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in {**values, **extra}.items():
        if isinstance(value, list):
            pairs += [(key, str(v)) for v in value]
        elif value not in (None, ""):
            pairs.append((key, str(value)))
    return urllib.parse.urlencode(pairs)


def bulk_actions_for(statuses: list[Status]) -> list[Action]:
    return [a for a in BULK_ACTIONS if any(s in TRANSITIONS[a].sources for s in statuses)]


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(request: Request) -> Response:
    session = page_session(request)
    ctx = get_ctx(request)
    selection, values = filter_from(request.query_params)
    cursor_text = request.query_params.get("cursor")
    cursor = int(cursor_text) if cursor_text and cursor_text.isdigit() else None
    where_error = None
    try:
        if selection.where:
            payload_filter(selection.where)
        items, next_cursor = ctx.store.list_tasks(selection, limit=ctx.settings.page_size, cursor=cursor)
        total = ctx.matching_count(selection)
    except UsageError as exc:  # a payload expression that does not parse: say why, show nothing
        where_error, items, next_cursor, total = exc.message, [], None, 0
    statuses = (
        list(selection.statuses) if selection.statuses else sorted({t.status for t in items}, key=list(Status).index)
    )
    return render(
        request,
        "tasks.html",
        session,
        page="tasks",
        items=items,
        total=total,
        values=values,
        routes=sorted(ctx.project.routes),
        next_url=f"/tasks?{query_string(values, cursor=next_cursor)}" if next_cursor else None,
        first_url=f"/tasks?{query_string(values)}" if cursor else None,
        filter_qs=query_string(values),
        bulk_actions=bulk_actions_for(statuses),
        where_error=where_error,
    )


@router.get("/tasks/export")
def tasks_export_page(request: Request) -> Response:
    """The filtered list as a file, streamed a page at a time (secrets masked as on every page)."""
    page_session(request)
    ctx = get_ctx(request)
    selection, _values = filter_from(request.query_params)
    fmt: ExportFormat = "csv" if request.query_params.get("format") == "csv" else "ndjson"
    if selection.where:
        try:
            payload_filter(selection.where)
        except UsageError as exc:
            raise HTTPException(400, exc.message) from None
    return StreamingResponse(
        iterate_in_threadpool(export_chunks(ctx.store, selection, fmt, redact=ctx.redact)),
        media_type="text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="crossdock-tasks.{fmt}"'},
    )


@router.post("/tasks/bulk", response_class=HTMLResponse)
async def tasks_bulk(request: Request) -> Response:
    """Step one shows how many tasks will change; the confirmed form (``confirm=1``) acts."""
    principal, form, csrf = await form_session(request, "operator")
    ctx = get_ctx(request)
    try:
        action = Action(str(form.get("action")))
    except ValueError:
        raise HTTPException(400, "unknown action") from None
    if action not in BULK_ACTIONS:
        raise HTTPException(400, "unknown action")
    selection, values = filter_from(form)
    everything = form.get("all") == "1"
    ids = [int(v) for v in form.getlist("ids") if isinstance(v, str) and v.isdigit()]
    if not everything:
        if not ids:
            return redirect(f"/tasks?{query_string(values)}", "Select at least one task first.")
        selection = TaskFilter(ids=ids)
    elif selection.is_empty():
        return redirect("/tasks", "Filter the tasks first: a bulk action on every task is not offered.")
    reason = str(form.get("reason") or "").strip() or None
    if form.get("confirm") != "1":
        matched = len(ids) if not everything else ctx.matching_count(selection)
        if not everything:
            will_change = sum(1 for t in ctx.store.get_tasks(ids) if is_allowed(action, t.status))
        else:
            will_change = ctx.changeable_count(action, selection)
        return render(
            request,
            "confirm.html",
            (principal, csrf),
            page="tasks",
            action=action,
            label=ACTION_LABELS[action],
            target=TRANSITIONS[action].target.value,
            matched=matched,
            will_change=will_change,
            everything=everything,
            ids=ids,
            values=values,
            back=f"/tasks?{query_string(values)}",
        )
    result = ctx.store.apply_action(action, selection, actor=principal.actor, reason=reason, now=ctx.now())
    skipped = result.matched - result.changed
    note = f" ({skipped} not in a status {action.value} applies to)" if skipped else ""
    if result.superseded:
        note += f"; {result.superseded} older task(s) of the same records skipped as superseded, so each goes out once"
    return redirect(
        f"/tasks?{query_string(values)}", f"{ACTION_LABELS[action]}: {result.changed} task(s) changed{note}."
    )


#: how the exporter ends the log line of a delivery that will be tried again
_NEXT_ATTEMPT = re.compile(r"; next attempt in (\d+(?:\.\d+)?) s$")


def _pickup(ctx: WebContext, task: Task) -> tuple[datetime | None, str | None]:
    """When a due task goes out next, and the outgoing schedule that decides it (None: workers send it as soon
    as it is due). On a route with an outgoing schedule a retry waits for the next scheduled run after its
    backoff, so "next attempt in 2.0 s" would be wrong by up to the schedule's interval."""
    if task.status not in (Status.NEW, Status.RETRY):
        return None, None
    route = ctx.project.routes.get(task.route)
    schedule = route.config.outgoing.schedule if route is not None else None
    if schedule is None:
        return task.next_attempt_at, None
    now = ctx.now()
    state = ctx.store.route_states().get(task.route)
    # the scheduler's stored next fire while it is ahead (as the Routes page shows it), else the cron's
    stored = state.outgoing_next if state is not None else None
    next_run = stored if stored is not None and stored > now else views.first_fire_at_or_after(schedule, now)
    fire = views.first_fire_at_or_after(schedule, task.next_attempt_at or now)
    return max(fire, next_run), schedule


def _explain_retries(lines: list[LogLine], schedule: str, last_pickup: datetime | None) -> list[LogLine]:
    """On a route with an outgoing schedule, "next attempt in 2.0 s" becomes the scheduled run that picks it up."""
    marked = [i for i, ln in enumerate(lines) if _NEXT_ATTEMPT.search(ln.message)]
    out = list(lines)
    every = views.humanize_cron(schedule)
    for i in marked:
        line = out[i]
        match = _NEXT_ATTEMPT.search(line.message)
        assert match is not None
        delay = float(match.group(1))
        fire = views.first_fire_at_or_after(schedule, line.at + timedelta(seconds=delay))
        if i == marked[-1] and last_pickup is not None:
            fire = max(fire, last_pickup)
        text = (
            f"; next attempt with the next scheduled outgoing run at {fire.strftime('%Y-%m-%d %H:%M:%S')} UTC "
            f"(backoff {delay:.1f} s; outgoing runs {every})"
        )
        out[i] = replace(line, message=line.message[: match.start()] + text)
    return out


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(request: Request, task_id: int) -> Response:
    session = page_session(request)
    ctx = get_ctx(request)
    task = ctx.store.get_task(task_id)
    if task is None:
        return render(request, "not_found.html", session, status=404, what=f"task {task_id}")
    lines = timeline(task, ctx.store.task_logs(task_id))
    pickup, schedule = _pickup(ctx, task)
    route = ctx.project.routes.get(task.route)
    out_schedule = route.config.outgoing.schedule if route is not None else None
    if out_schedule is not None:
        lines = _explain_retries(lines, out_schedule, pickup if task.status is Status.RETRY else None)
    siblings = (
        ctx.store.count_tasks(TaskFilter(route=task.route, identifier=task.identifier)) - 1
        if task.identifier is not None
        else 0
    )
    entity = shown(task.entity, ctx.redact)
    if entity.truncated:
        entity_text = entity.preview
    else:
        entity_text = views.pretty_json(task.entity) if task.entity is not None else None
    return render(
        request,
        "task.html",
        session,
        page="tasks",
        task=task,
        lines=lines,
        actions=allowed_actions(task.status),
        pickup=pickup,
        pickup_schedule=schedule,
        route_active=ctx.route_active(task.route) if route is not None else None,
        siblings=siblings,
        siblings_url=f"/tasks?{query_string({'route': task.route, 'identifier': task.identifier})}",
        entity=entity_text,
        entity_shown=entity,
        entity_download=f"/tasks/{task.id}/entity.json" if task.entity is not None else None,
        raw=cut(task.raw, ctx.redact) if task.raw is not None and len(task.raw) > DISPLAY_LIMIT else task.raw,
        # Edit (pages_task_edit.py): a task of a configured route, not being delivered, small enough for the browser
        editable=route is not None and task.status is not Status.PROCESSING and not entity.truncated,
    )


@router.get("/tasks/{task_id}/entity.json")
def task_entity_download(request: Request, task_id: int) -> Response:
    """The whole entity as a file, for the dashboard's session (the API's twin needs a bearer token)."""
    session = page_session(request)
    ctx = get_ctx(request)
    task = ctx.store.get_task(task_id)
    if task is None or task.entity is None:
        return render(request, "not_found.html", session, status=404, what=f"entity stored for task {task_id}")
    return entity_download(task, ctx.redact)


@router.post("/tasks/{task_id}/action")
async def task_action(request: Request, task_id: int) -> Response:
    principal, form, _csrf = await form_session(request, "operator")
    ctx = get_ctx(request)
    try:
        action = Action(str(form.get("action")))
    except ValueError:
        raise HTTPException(400, "unknown action") from None
    if action not in BULK_ACTIONS:
        raise HTTPException(400, "unknown action")
    reason = str(form.get("reason") or "").strip() or None
    try:
        task = act_on_task(ctx, principal, task_id, action, reason)
    except HTTPException as exc:
        if exc.status_code == 409:
            return redirect(f"/tasks/{task_id}", f"Refused: {exc.detail}")
        raise
    return redirect(f"/tasks/{task_id}", f"{ACTION_LABELS[action]}: task {task_id} is now {task.status.value}.")


# --- routes ---------------------------------------------------------------------------------------


def _route_rows(ctx: WebContext, only: str | None = None, runs: int = 5) -> list[dict[str, Any]]:
    """``routes_json`` rows with what the route cards show: stored runs and times as datetimes."""
    rows = [row for row in ctx.routes_json() if only is None or row["name"] == only]
    for row in rows:
        row["runs"] = ctx.store.list_runs(row["name"], runs)
        row["next_in"] = views.parse_iso(row["next_incoming"])
        row["next_out"] = views.parse_iso(row["next_outgoing"])
        row["maintenance_at"] = views.parse_iso(row["maintenance_until"])
        row["imports_at"] = views.parse_iso(row["imports_stopped_until"])
        circuit = row["circuit"]
        if circuit is not None:
            circuit["until_at"] = views.parse_iso(circuit["until"])
    return rows


def _back(form: FormData, default: str = "/routes") -> str:
    """Where a route form returns to: the page it was posted from (a local path only)."""
    given = form.get("next")
    return safe_next(given) if isinstance(given, str) and given else default


@router.get("/routes", response_class=HTMLResponse)
def routes_page(request: Request) -> Response:
    session = page_session(request)
    ctx = get_ctx(request)
    return render(request, "routes.html", session, page="routes", rows=_route_rows(ctx))


@router.get("/routes/{name}", response_class=HTMLResponse)
def route_page(request: Request, name: str) -> Response:
    """One route: its card, counts per status, next runs, top errors, throughput and its config (secrets masked)."""
    return route_page_response(request, name, page_session(request))


def route_page_response(request: Request, name: str, session: tuple[Principal, str], **extra: Any) -> Response:
    """The route page; ``extra`` replaces parts of it (the tester panel with a result, after a plain form post)."""
    from crossdock.web.tester import panel

    ctx = get_ctx(request)
    if name not in ctx.project.routes:
        return render(request, "not_found.html", session, status=404, what=f"route {name}")
    [row] = _route_rows(ctx, only=name, runs=20)
    now = ctx.now()
    next_runs = []
    for part, first in (("incoming", row["next_in"]), ("outgoing", row["next_out"])):
        schedule = row[f"{part}_schedule"]
        start = first - timedelta(microseconds=1) if first is not None else now
        next_runs.append((part, schedule, views.next_fires(schedule, start)))
    errors = [e for e in ctx.store.top_errors(since=now - timedelta(hours=24), limit=500) if e.route == name][:10]
    return render(
        request,
        "route.html",
        session,
        page="routes",
        r=row,
        total=sum(row["counts"].values()),
        next_runs=next_runs,
        errors=errors,
        chart=views.throughput_chart(ctx, route=name),
        config=views.route_config_text(ctx, name),
        **{"tester": panel(ctx, name), **extra},
    )


@router.post("/routes/{name}/dry-run")
async def route_dry_run_page(request: Request, name: str) -> Response:
    """The route page with what a run would do now (nothing written, nothing sent); audited like the API's."""
    principal, form, csrf = await form_session(request, "operator")
    ctx = get_ctx(request)
    ctx.route(name)
    text = str(form.get("show") or "5")
    show = min(max(int(text), 0), 100) if text.isdigit() else 5
    try:
        report = await dry_run(ctx.project, ctx.store, name, show=show)
    except CrossdockError as exc:
        return redirect(f"/routes/{urllib.parse.quote(name)}", f"Dry run not possible: {ctx.redact(exc.message)}")
    c = report["counts"]
    ctx.audit(
        principal,
        "route.dry_run",
        {"route": name},
        detail=f"{report['status']}: new {c['new']}, changed {c['changed']}, unchanged {c['unchanged']}, "
        f"filtered {c['filtered']}, rejected {c['rejected']}",
    )
    return route_page_response(request, name, (principal, csrf), dry=redact_data(report, ctx.redact), dry_show=show)


@router.post("/routes/{name}/run")
async def route_run(request: Request, name: str) -> Response:
    principal, form, _csrf = await form_session(request, "operator")
    ctx = get_ctx(request)
    part = str(form.get("part") or "both")
    try:
        await start_run(ctx, principal, name, run_parts(part), wait=False)
    except HTTPException as exc:
        if exc.status_code == 409:
            return redirect(_back(form), f"Not started: {exc.detail}")
        raise
    what = "incoming and outgoing" if part == "both" else part
    return redirect(_back(form), f"Started {what} of {name}; the counts update as it runs.")


@router.post("/routes/{name}/active")
async def route_active(request: Request, name: str) -> Response:
    principal, form, _csrf = await form_session(request, "operator")
    ctx = get_ctx(request)
    active = form.get("active") == "1"
    set_active(ctx, principal, name, active)
    return redirect(_back(form), f"Route {name} is now {'active' if active else 'inactive'}.")


@router.post("/circuits/{key}/close")
async def circuit_close(request: Request, key: str) -> Response:
    principal, form, _csrf = await form_session(request, "operator")
    ctx = get_ctx(request)
    try:
        close_circuit_by_hand(ctx, principal, key)
    except HTTPException as exc:
        if exc.status_code == 404:
            return redirect(_back(form), f"Not closed: {exc.detail}")
        raise
    return redirect(_back(form), f"Circuit {key} is closed; deliveries resume.")


# --- audit ----------------------------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> Response:
    session = page_session(request)
    ctx = get_ctx(request)
    params = request.query_params
    values = {
        "actor": params.get("actor") or None,
        "action": params.get("action") or None,
        "q": params.get("q") or None,
    }
    cursor_text = params.get("cursor")
    entries, next_cursor = audit_entries(
        ctx,
        actor=values["actor"],
        action=values["action"],
        search=values["q"],
        limit=100,
        cursor=int(cursor_text) if cursor_text and cursor_text.isdigit() else None,
    )
    return render(
        request,
        "audit.html",
        session,
        page="audit",
        entries=entries,
        values=values,
        csv_url=f"/audit.csv?{query_string(values)}",
        next_url=f"/audit?{query_string(values, cursor=next_cursor)}" if next_cursor else None,
    )


@router.get("/audit.csv")
def audit_csv_page(request: Request) -> Response:
    page_session(request)
    ctx = get_ctx(request)
    params = request.query_params
    entries, _next = audit_entries(
        ctx,
        actor=params.get("actor") or None,
        action=params.get("action") or None,
        search=params.get("q") or None,
        limit=100_000,
        cursor=None,
    )
    return csv_response(audit_csv(entries, ctx.redact))
