"""``POST /api/v1/webhooks/{name}``: pushed records become tasks on the routes of a webhook incoming.

The sender authenticates with what the source configures (``X-Crossdock-Secret`` and/or an HMAC-SHA256
signature of the body, optionally over a signed timestamp). A source with neither accepts only a bearer token of
role operator or above, so a webhook is never open to the world. The size limit is checked on ``Content-Length``
and again while the body streams in, so a lying or chunked sender cannot make us buffer more than the limit.

Checks run in this order: the operator token (a source without secrets) or the ``X-Crossdock-Secret`` header
(401), both before a byte of the body is read; the size (413), while reading; the signature and its signed
timestamp (401), which need the whole body; then the ``Idempotency-Key`` (a remembered key answers at once).
Credentials come before the key, so a caller without them can neither read a remembered answer nor take a key.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from crossdock import tracing
from crossdock.connectors.webhook import (
    IDEMPOTENCY_HEADER,
    PayloadError,
    WebhookSourceOptions,
    parse_payload,
    verify_secret_header,
    verify_signature,
)
from crossdock.engine.exporter import Exporter
from crossdock.engine.importer import Importer
from crossdock.engine.project import CompiledIncoming, CompiledRoute
from crossdock.store.base import IdempotencyRecord
from crossdock.web.api import require
from crossdock.web.context import WebContext, get_ctx
from crossdock.web.openapi import error

log = logging.getLogger("crossdock.web")
router = APIRouter(prefix="/api/v1")

#: answer header marking a repeated request answered from the remembered first answer
REPLAYED_HEADER = "Idempotent-Replayed"
#: how long a claimed key waits for its request to finish before another copy may take it (a crashed process)
PENDING_FOR = timedelta(minutes=10)


class WebhookOut(BaseModel):
    """What a push created: the task ids (new, and skipped as unchanged) and each route's summary."""

    tasks: list[int]
    read: int
    status: Literal["ok"]
    error: str | None
    routes: dict[str, dict[str, Any]]


WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "model": WebhookOut,
        "description": "Imported. A repeated Idempotency-Key gets the first answer again, with "
        "`Idempotent-Replayed: true`.",
        "headers": {REPLAYED_HEADER: {"schema": {"type": "string", "enum": ["true"]}}},
    },
    400: error("Empty or unreadable body, a bad Content-Length, or a malformed Idempotency-Key."),
    401: {
        **error(
            "Missing or wrong secret or signature, a signed timestamp outside timestamp_tolerance, "
            "or (a source without secrets) no valid operator token."
        ),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: error("A source without secrets: the bearer token's role is below operator."),
    404: error("No route or shared incoming of this name takes webhooks."),
    409: {
        **error("No route of it is active, or the same Idempotency-Key is still being processed."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    413: error("The body is over max_body_bytes."),
    422: error("The Idempotency-Key was already used with a different body."),
    500: error("The import failed; nothing was remembered for the Idempotency-Key."),
}


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


#: the body as the document shows it; the handler reads it raw, so NDJSON and XML are described in words
WEBHOOK_BODY = {
    "required": True,
    "description": "A JSON object (one record) or a non-empty list (one record per item; non-objects become "
    "rejected tasks). Also taken: NDJSON (`application/x-ndjson`, one object per line) and XML "
    "(`application/xml`, `text/xml`: the root's children when they share one tag, else the root).",
    "content": {"application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "minItems": 1}]}}},
}


@router.post(
    "/webhooks/{name}",
    tags=["webhooks"],
    status_code=202,
    response_model=None,
    responses=WEBHOOK_RESPONSES,
    openapi_extra={"requestBody": WEBHOOK_BODY},
)
async def webhook(request: Request, name: str) -> Response:
    """Pushed JSON (object or list), NDJSON or XML → tasks. Answers 202 ``{"tasks": [ids]}``.

    With ``idempotency_window`` set, a repeated ``Idempotency-Key`` gets the first answer again, marked
    ``Idempotent-Replayed: true``, and imports nothing.

    A ``traceparent`` header is continued: with tracing on, the request's span is the parent of the import of its
    records, whose context their tasks keep for their deliveries (see :mod:`crossdock.tracing`).
    """
    if not tracing.active():
        return await receive(request, name)
    with tracing.webhook_span(name, request.url.path, request.headers) as span:
        answer = await receive(request, name)
        if span is not None:
            span.answered(answer.status_code)
        return answer


async def receive(request: Request, name: str) -> Response:
    """Authenticate, read and import one webhook request (the checks in the order the module docstring gives)."""
    ctx = get_ctx(request)
    incoming = find_incoming(ctx, name)
    options = incoming.source_options
    assert isinstance(options, WebhookSourceOptions)
    actor = f"webhook:{name}"
    if not options.has_secret:
        actor = require("operator")(request).actor
    # a header needs no body: a caller without the shared secret cannot make us buffer up to max_body_bytes
    problem = verify_secret_header(options, request.headers)
    if problem is not None:
        raise HTTPException(401, problem)
    body = await read_limited(request, options.max_body_bytes)
    problem = verify_signature(options, request.headers, body, now=ctx.now().timestamp())
    if problem is not None:
        raise HTTPException(401, problem)
    key = idempotency_key(request, options)
    if key is None:
        return await accept(ctx, incoming, name, body, request.headers.get("content-type"), actor)
    assert options.idempotency_window is not None
    scope = f"webhook:{incoming.name}"
    fingerprint = hashlib.sha256(body).hexdigest()
    now = ctx.now()
    found = ctx.store.claim_idempotency_key(scope, key, fingerprint=fingerprint, now=now, expires_at=now + PENDING_FOR)
    if found is not None:
        return replayed(found, key, fingerprint)
    try:
        answer = await accept(ctx, incoming, name, body, request.headers.get("content-type"), actor)
    except BaseException:
        # a refused or failed request is not remembered: the sender may fix it and send the same key again
        ctx.store.settle_idempotency_key(scope, key, response=None)
        raise
    remembered = {"status_code": answer.status_code, "body": bytes(answer.body).decode()}
    expires = now + timedelta(seconds=options.idempotency_window)
    try:
        ctx.store.settle_idempotency_key(scope, key, response=remembered, expires_at=expires)
    except Exception:
        # the records are imported: say so; a copy sent meanwhile gets 409 until the claim lapses (PENDING_FOR)
        log.warning("could not remember %s %r of webhook %s", IDEMPOTENCY_HEADER, key, name, exc_info=True)
    return answer


async def accept(
    ctx: WebContext, incoming: CompiledIncoming, name: str, body: bytes, content_type: str | None, actor: str
) -> JSONResponse:
    """Parse and import an authenticated body: 202 with the summary, or an HTTPException."""
    routes = [r for r in ctx.project.routes_of(incoming) if ctx.route_active(r.name)]
    if not routes:
        raise HTTPException(409, f"no active route takes records from {name!r}")
    try:
        records = parse_payload(body, content_type)
    except PayloadError as exc:
        raise HTTPException(400, str(exc)) from None
    summary = await import_records(ctx, incoming, records, actor)
    if summary.get("status") != "ok":
        raise HTTPException(500, ctx.redact(f"import failed: {summary.get('error')}"))
    return JSONResponse(summary, status_code=202)


def idempotency_key(request: Request, options: WebhookSourceOptions) -> str | None:
    """The request's ``Idempotency-Key`` when the source remembers keys; 400 when it is not a usable key."""
    if options.idempotency_window is None:
        return None
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all("!" <= c <= "~" for c in key):
        raise HTTPException(
            400, f"the {IDEMPOTENCY_HEADER} header must be 1 to 255 visible ASCII characters (e.g. a UUID)"
        )
    return key


def replayed(found: IdempotencyRecord, key: str, fingerprint: str) -> Response:
    """The answer to a key already seen: the first answer, or why there is none to give."""
    if found.fingerprint != fingerprint:
        raise HTTPException(
            422,
            f"{IDEMPOTENCY_HEADER} {key!r} was already used with a different body; send a new key for a new request",
        )
    if found.response is None:
        raise HTTPException(
            409,
            f"a request with {IDEMPOTENCY_HEADER} {key!r} is still being processed; retry after it is answered",
            {"Retry-After": "1"},
        )
    return Response(
        content=str(found.response["body"]),
        status_code=int(found.response["status_code"]),
        media_type="application/json",
        headers={REPLAYED_HEADER: "true"},
    )


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
