"""The Alerts page: the channels and rules, every message with its delivery state, and a test button."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from crossdock.store.base import ALERT_STATUSES
from crossdock.web.api_alerts import alert_config, send_test
from crossdock.web.context import get_ctx
from crossdock.web.pages import form_session, page_session, query_string, redirect, render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 100


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request) -> Response:
    session = page_session(request)
    ctx = get_ctx(request)
    params = request.query_params
    status = params.get("status") if params.get("status") in ALERT_STATUSES else None
    route = params.get("route") or None
    cursor_text = params.get("cursor")
    records = ctx.store.list_alerts(
        limit=PAGE_SIZE + 1,
        cursor=int(cursor_text) if cursor_text and cursor_text.isdigit() else None,
        status=status,
        route=route,
    )
    more = len(records) > PAGE_SIZE
    records = records[:PAGE_SIZE]
    values = {"status": status, "route": route}
    return render(
        request,
        "alerts.html",
        session,
        page="alerts",
        config=alert_config(ctx),
        records=records,
        values=values,
        statuses=ALERT_STATUSES,
        routes=sorted(ctx.project.routes),
        next_url=f"/alerts?{query_string(values, cursor=records[-1].id)}" if more and records else None,
    )


@router.post("/alerts/test")
async def alerts_test_page(request: Request) -> Response:
    principal, form, _csrf = await form_session(request, "operator")
    ctx = get_ctx(request)
    channel = str(form.get("channel") or "") or None
    results = await send_test(ctx, request, principal.actor, channel)
    failed = [f"{r['channel']}: {r['error']}" for r in results if not r["sent"]]
    if failed:
        return redirect("/alerts", "Test message not sent to " + "; ".join(failed))
    return redirect("/alerts", f"Test message sent to {', '.join(r['channel'] for r in results)}.")
