"""``create_app``: the REST API, the webhooks, ``/metrics`` and the dashboard on one FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from crossdock.engine.project import Project
from crossdock.errors import StoreUnavailable
from crossdock.store import Store
from crossdock.web import (
    alerts_page,
    api,
    api_alerts,
    api_dry_run,
    api_task_edit,
    api_task_files,
    openapi,
    pages,
    pages_task_edit,
    tester,
    webhooks,
)
from crossdock.web.auth import Authenticator
from crossdock.web.context import WebContext, redact_data
from crossdock.web.login_limits import LoginLimiter, install_login_limits
from crossdock.web.metrics import CONTENT_TYPE, DeliveryObserver, StoreCollector, render
from crossdock.web.settings import WebSettings

STATIC = Path(__file__).parent / "static"
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # the login link carries a token in its query: never send it on as a Referer
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}
# the OpenAPI page loads its own assets and inline script; it gets a looser policy
_DOCS_CSP = "default-src 'self' https://cdn.jsdelivr.net; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net"


def create_app(project: Project, store: Store, *, settings: WebSettings | None = None) -> FastAPI:
    """One app per project and store. Nothing global: tests can build many side by side."""
    settings = settings or WebSettings()
    registry = CollectorRegistry(auto_describe=True)
    observer = DeliveryObserver(registry)
    ctx = WebContext(
        project=project,
        store=store,
        settings=settings,
        auth=Authenticator(
            store,
            secret_key=settings.secret_key,
            session_ttl=settings.session_ttl,
            cache_seconds=settings.token_cache_seconds,
        ),
        observer=observer,
    )
    store.ensure_routes(project.routes)
    registry.register(StoreCollector(store, lambda: sorted(project.routes), project))
    store.redact = project.redact
    observer.attach(store)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs = {job for job in ctx.running.values() if not job.done()}
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job

    app = FastAPI(
        title="crossdock",
        summary="Tasks, routes, runs and audit of a crossdock project.",
        version="1",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        default_response_class=redacting_json(project.redact),
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.templates = pages.make_templates(ctx)
    app.state.registry = registry
    app.include_router(api.router)
    app.include_router(api_alerts.router)
    app.include_router(api_dry_run.router)
    app.include_router(api_task_files.router)
    app.include_router(tester.api_router)
    app.include_router(api_task_edit.router)
    app.include_router(webhooks.router)
    app.include_router(pages.router)
    app.include_router(alerts_page.router)
    app.include_router(tester.page_router)
    app.include_router(pages_task_edit.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get(
        "/metrics",
        tags=["system"],
        response_class=Response,
        responses={
            200: {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
        },
    )
    def metrics(_: api.Viewer) -> Response:
        """Prometheus text format. Needs a viewer token (Prometheus sends it with ``authorization``)."""
        return Response(project.redact(render(registry).decode()), media_type=CONTENT_TYPE)

    install_handlers(app)
    openapi.install(app, health_open=not settings.health_requires_auth)
    limiter = LoginLimiter(
        burst=settings.login_failure_burst,
        per_second=settings.login_failure_rate,
        max_addresses=settings.login_limiter_addresses,
        audit_every=settings.failed_login_audit_every,
    )
    install_login_limits(app, ctx, limiter)  # inside the security headers below, so 429 pages get them too

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path == "/api/docs":
            response.headers["Content-Security-Policy"] = _DOCS_CSP
        return response

    return app


def redacting_json(redact: Callable[[str], str]) -> type[JSONResponse]:
    """The API's response class: every string of every answer passes the project's redactor."""

    class RedactedJSON(JSONResponse):
        def render(self, content: Any) -> bytes:
            return orjson.dumps(redact_data(content, redact), option=orjson.OPT_NON_STR_KEYS)

    return RedactedJSON


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path == "/metrics" or path.startswith("/static/"))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Any) -> list[str]:
    """Every method some route answers on this path; Starlette's 405 names only the first route's (GET of the
    GET and POST of ``/tokens``)."""
    return [
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    ]


def install_handlers(app: FastAPI) -> None:
    """API errors stay JSON; dashboard errors become a styled page; missing sessions go to the login form."""

    @app.exception_handler(pages.LoginRequired)
    async def login_required(request: Request, exc: pages.LoginRequired) -> Response:
        return RedirectResponse("/login?" + urllib.parse.urlencode({"next": exc.next_url}), status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(app, request.scope))}
        if _wants_html(request):
            session = pages.session_of(request)
            page = pages.render(
                request,
                "error.html",
                session,
                status=exc.status_code,
                code=exc.status_code,
                message=str(exc.detail),
            )
            page.headers.update(headers or {})
            return page
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        # a database outage is not a server bug: 503 with Retry-After, and the process keeps serving
        message = f"the database is unavailable right now; try again shortly ({exc.message})"
        headers = {"Retry-After": "5"}
        if _wants_html(request):
            # no session lookup: it could need the database too
            page = pages.render(request, "error.html", None, status=503, code=503, message=message)
            page.headers.update(headers)
            return page
        return JSONResponse({"detail": message}, status_code=503, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors: Sequence[Any] = exc.errors()
        problems = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors
        ]
        if _wants_html(request):
            text = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
            return pages.render(request, "error.html", pages.session_of(request), status=422, code=422, message=text)
        return JSONResponse({"detail": problems}, status_code=422)
