"""``POST /api/v1/webhooks/{name}``: pushed records become tasks on the routes of a webhook incoming.

The sender authenticates with what the source configures (``X-Crossdock-Secret`` and/or an HMAC-SHA256
signature of the body). A source with neither accepts only a bearer token of role operator or above, so a
webhook is never open to the world. The size limit is checked on ``Content-Length`` and again while the body
streams in, so a lying or chunked sender cannot make us buffer more than the limit.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from crossdock.connectors.webhook import PayloadError, WebhookSourceOptions, parse_payload, verify_request
from crossdock.engine.exporter import Exporter
from crossdock.engine.importer import Importer
from crossdock.engine.project import CompiledIncoming, CompiledRoute
from crossdock.web.api import require
from crossdock.web.context import WebContext, get_ctx

router = APIRouter(prefix="/api/v1")


def find_incoming(ctx: WebContext, name: str) -> CompiledIncoming:
    """A route's own webhook incoming, or a shared webhook incoming, by name."""
    route = ctx.project.routes.get(name)
    incoming = route.incoming if route is not None else ctx.project.incomings.get(name)
    if incoming is None:
        raise HTTPException(404, f"no route or incoming named {name!r}")
    if not isinstance(incoming.source_options, WebhookSourceOptions):
        raise HTTPException(404, f"{name!r} does not take webhooks (its source is {incoming.source_options.type})")
    return incoming


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, "Content-Length is not a number") from None
        if size > limit:
            raise HTTPException(413, f"the body is {size} bytes; this webhook takes at most {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPException(413, f"the body is over {limit} bytes, the most this webhook takes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/webhooks/{name}", tags=["webhooks"], status_code=202)
async def webhook(request: Request, name: str) -> JSONResponse:
    """Pushed JSON (object or list), NDJSON or XML → tasks. Answers 202 ``{"tasks": [ids]}``."""
    ctx = get_ctx(request)
    incoming = find_incoming(ctx, name)
    options = incoming.source_options
    assert isinstance(options, WebhookSourceOptions)
    actor = f"webhook:{name}"
    if not options.has_secret:
        actor = require("operator")(request).actor
    body = await read_limited(request, options.max_body_bytes)
    if options.has_secret:
        problem = verify_request(options, request.headers, body)
        if problem is not None:
            raise HTTPException(401, problem)
    routes = [r for r in ctx.project.routes_of(incoming) if ctx.route_active(r.name)]
    if not routes:
        raise HTTPException(409, f"no active route takes records from {name!r}")
    try:
        records = parse_payload(body, request.headers.get("content-type"))
    except PayloadError as exc:
        raise HTTPException(400, str(exc)) from None
    summary = await import_records(ctx, incoming, records, actor)
    if summary.get("status") != "ok":
        raise HTTPException(500, ctx.redact(f"import failed: {summary.get('error')}"))
    return JSONResponse(summary, status_code=202)


async def import_records(ctx: WebContext, incoming: CompiledIncoming, records: list[Any], actor: str) -> dict[str, Any]:
    """Import pushed records; realtime routes deliver the new tasks before we answer."""
    exporter = Exporter(ctx.project, ctx.store)

    async def realtime(route: CompiledRoute, ids: list[int]) -> None:
        await exporter.deliver_claimed(route, ctx.store.get_tasks(ids))

    importer = Importer(ctx.project, ctx.store, worker=exporter.worker, on_realtime=realtime, clients=exporter.clients)
    try:
        summary = await importer.run_incoming(incoming, actor=actor, records=records)
    finally:
        await exporter.close()
    ids = sorted({i for r in summary.routes.values() for i in r.task_ids})
    return {
        "tasks": ids,
        "read": summary.read,
        "status": summary.status,
        "error": summary.error,
        "routes": {n: r.to_json() for n, r in summary.routes.items()},
    }
