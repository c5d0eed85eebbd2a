"""``/api/v1/alerts``: what crossdock told whom, the channels and rules it tells through, a test message."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from crossdock.alerts.service import alerter_for
from crossdock.web.api import Ctx, Operator, Viewer
from crossdock.web.context import WebContext
from crossdock.web.openapi import error

router = APIRouter(prefix="/api/v1", tags=["alerts"])


class AlertOut(BaseModel):
    id: int
    created_at: str
    rule: str
    event: str
    route: str | None
    channel: str
    subject: str
    #: the facts every channel formats: title, text, count, window, top_errors, url
    message: dict[str, Any]
    status: Literal["pending", "sent", "failed"]
    attempts: int
    next_attempt_at: str | None
    sent_at: str | None
    error: str | None


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None = Field(pattern=r"^[0-9]+$")


class ChannelOut(BaseModel):
    name: str
    type: Literal["email", "webhook", "slack"]
    #: where it delivers, secrets masked
    destination: str


class RuleOut(BaseModel):
    name: str
    event: str
    routes: list[str] | None
    channels: list[str]
    digest_s: float
    older_than_s: float | None


class AlertConfigOut(BaseModel):
    channels: list[ChannelOut]
    rules: list[RuleOut]


class TestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: one channel's name; every channel when left out
    channel: str | None = Field(default=None, max_length=200)


class TestResultOut(BaseModel):
    channel: str
    sent: bool
    error: str | None


@router.get("/alerts", response_model=AlertPage)
def alerts(
    ctx: Ctx,
    _: Viewer,
    status: Literal["pending", "sent", "failed"] | None = None,
    route: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]+$", description="the previous page's `next_cursor`")] = None,
) -> dict[str, Any]:
    """Queued messages, newest first, with their delivery state; follow ``next_cursor`` for older ones."""
    records = ctx.store.list_alerts(limit=limit + 1, cursor=int(cursor) if cursor else None, status=status, route=route)
    more = len(records) > limit
    records = records[:limit]
    return {
        "items": [r.to_json() for r in records],
        "next_cursor": str(records[-1].id) if more and records else None,
    }


def alert_config(ctx: WebContext) -> dict[str, Any]:
    config = ctx.project.loaded.config.alerts
    return {
        "channels": [
            {"name": name, "type": ch.type, "destination": ctx.redact(ch.destination())}
            for name, ch in sorted(config.channels.items())
        ],
        "rules": [
            {
                "name": config.rule_key(i),
                "event": rule.event,
                "routes": rule.routes,
                "channels": rule.channels,
                "digest_s": rule.window,
                "older_than_s": rule.older_than,
            }
            for i, rule in enumerate(config.rules)
        ],
    }


@router.get("/alerts/config", response_model=AlertConfigOut)
def alerts_config(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    """The configured channels (secrets masked) and rules."""
    return alert_config(ctx)


async def send_test(ctx: WebContext, request: Request, actor: str, channel: str | None) -> list[dict[str, Any]]:
    channels = ctx.project.loaded.config.alerts.channels
    if channel is not None and channel not in channels:
        raise HTTPException(404, f"no alert channel named {channel!r}")
    if not channels:
        raise HTTPException(409, "no channel is configured under alerts.channels")
    alerter = alerter_for(ctx.project, ctx.store, serve_url=str(request.base_url).rstrip("/"))
    try:
        results = await alerter.send_test(channel, actor=actor)
    finally:
        await alerter.close()
    return [{"channel": r.channel, "sent": r.error is None, "error": r.error} for r in results]


@router.post(
    "/alerts/test",
    response_model=list[TestResultOut],
    responses={404: error("No alert channel of this name."), 409: error("No channel is configured.")},
)
async def alerts_test(request: Request, ctx: Ctx, who: Operator, body: TestRequest | None = None) -> Any:
    """Send a test message now to one channel or all; each result says whether it went out and why not."""
    return await send_test(ctx, request, who.actor, body.channel if body else None)
