"""Failed logins: a per-address rate limit (429) and a throttled audit trail.

Tokens are 256-bit random values, so guessing one is hopeless; the limit is there so a flood of wrong tokens
(a broken client, a scanner) costs little and cannot fill the audit log. Every request that presents a token is
a login attempt: a bearer token on the API or ``/metrics``, ``GET /login?token=``, and the login form's POST.
When an address has used up its failures, its attempts are answered 429 with ``Retry-After`` *before* the token
is looked at, so a blocked address learns nothing from further guesses. Other addresses are never affected.

The state is in memory, per process: several ``serve`` processes each allow the burst. It is bounded (the least
recently seen addresses are forgotten first) and thread-safe.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossdock.web.context import WebContext

#: distinct paths one audit row lists at most
MAX_PATHS = 10
#: the 429 the API routes may answer, as the OpenAPI declares it
TOO_MANY = {
    "description": "too many failed logins from this address: retry after the Retry-After header's seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    "content": {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}},
}


@dataclass(slots=True)
class _Address:
    """One client address: its bucket of allowed failures and the failures not yet in the audit log."""

    tokens: float
    at: float
    #: when the last audit row for this address was written (monotonic seconds)
    audited_at: float = -math.inf
    failures: int = 0
    refused: int = 0
    paths: set[str] = field(default_factory=set)
    flush_pending: bool = False


@dataclass(frozen=True, slots=True)
class FailedLogins:
    """What one audit row reports: failures of one address since the previous row."""

    address: str
    failures: int
    refused: int
    paths: list[str]

    def target(self) -> dict[str, Any]:
        return {"client": self.address, "paths": self.paths, "failures": self.failures, "rate_limited": self.refused}

    def detail(self) -> str:
        if self.failures == 1 and not self.refused:
            return "unknown or revoked token"
        text = f"{self.failures} failed login attempts from {self.address}"
        return text + (f", {self.refused} of them refused with 429 (rate limited)" if self.refused else "")


class LoginLimiter:
    """Token buckets of failed logins per client address, plus the audit throttle. Thread-safe.

    Each address may fail ``burst`` times at once, then ``per_second`` times a second. Attempts refused with 429
    take nothing from the bucket, so waiting ``Retry-After`` always works.
    """

    def __init__(
        self,
        *,
        burst: int = 10,
        per_second: float = 1.0,
        max_addresses: int = 10_000,
        audit_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst > 0 and per_second <= 0:
            raise ValueError("login_failure_rate must be above 0 (set login_failure_burst=0 to turn the limit off)")
        self.burst = burst
        self.per_second = per_second
        self.max_addresses = max_addresses
        self.audit_every = audit_every
        self.clock = clock
        self._lock = threading.Lock()
        self._addresses: OrderedDict[str, _Address] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.burst > 0

    def _entry(self, address: str, now: float) -> _Address:
        """The address's state with its bucket refilled up to now (caller holds the lock)."""
        entry = self._addresses.get(address)
        if entry is None:
            entry = self._addresses[address] = _Address(float(self.burst), now)
            while len(self._addresses) > self.max_addresses:
                self._addresses.popitem(last=False)
        else:
            self._addresses.move_to_end(address)
            entry.tokens = min(float(self.burst), entry.tokens + (now - entry.at) * self.per_second)
            entry.at = now
        return entry

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may try now."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._addresses.get(address)
            if entry is None:
                return None
            entry = self._entry(address, self.clock())
            if entry.tokens >= 1.0:
                return None
            return max(1, math.ceil((1.0 - entry.tokens) / self.per_second))

    def failed(self, address: str, path: str, *, refused: bool) -> FailedLogins | None:
        """Count a failed (or refused) attempt; the audit row to write now, or None while it is held back."""
        with self._lock:
            now = self.clock()
            entry = self._entry(address, now)
            if not refused:
                entry.tokens = max(0.0, entry.tokens - 1.0)
            entry.failures += 1
            entry.refused += refused
            if len(entry.paths) < MAX_PATHS:  # a row stays small whatever paths a flood tries
                entry.paths.add(path[:200])
            if now - entry.audited_at >= self.audit_every:
                return self._take(address, entry, now)
            return None

    def due_in(self, address: str) -> float | None:
        """Seconds until held failures of ``address`` may be written; None when nothing is held or a flush waits."""
        with self._lock:
            entry = self._addresses.get(address)
            if entry is None or not entry.failures or entry.flush_pending:
                return None
            entry.flush_pending = True
            return max(0.0, entry.audited_at + self.audit_every - self.clock())

    def flush(self, address: str) -> FailedLogins | None:
        """The held failures of ``address`` as one row, once ``audit_every`` has passed since the last row."""
        with self._lock:
            entry = self._addresses.get(address)
            if entry is None:
                return None
            entry.flush_pending = False
            now = self.clock()
            if not entry.failures or now - entry.audited_at < self.audit_every:
                return None
            return self._take(address, entry, now)

    def _take(self, address: str, entry: _Address, now: float) -> FailedLogins:
        row = FailedLogins(address, entry.failures, entry.refused, sorted(entry.paths))
        entry.failures = entry.refused = 0
        entry.paths = set()
        entry.audited_at = now
        return row


def login_attempt(request: Request) -> str | None:
    """``"METHOD /path"`` when the request presents a token to be checked, else None."""
    path = request.url.path
    if path == "/login":
        if request.method == "POST" or (request.method == "GET" and request.query_params.get("token")):
            return f"{request.method} {path}"
        return None
    if (path.startswith("/api/") or path == "/metrics") and "authorization" in request.headers:
        return f"{request.method} {path}"
    return None


def client_address(request: Request) -> str:
    """The peer address (uvicorn puts the proxy's ``X-Forwarded-For`` here for ``forwarded_allow_ips``)."""
    return request.client.host if request.client else "unknown"


def install_login_limits(app: FastAPI, ctx: WebContext, limiter: LoginLimiter) -> None:
    """Wrap the app in :class:`LoginLimitMiddleware` and declare its 429 on every API operation."""
    app.state.login_limiter = limiter
    app.add_middleware(LoginLimitMiddleware, ctx=ctx, limiter=limiter)
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, plus the 429 any request carrying a token may get (FastAPI's "extend OpenAPI")."""
        if app.openapi_schema is None:
            schema = plain_openapi()
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/api/") or path == "/metrics":
                    for operation in operations.values():
                        operation.setdefault("responses", {}).setdefault("429", TOO_MANY)
        return app.openapi_schema or plain_openapi()

    app.openapi = openapi  # type: ignore[method-assign]


class LoginLimitMiddleware:
    """Answers 429 to limited addresses and counts failed logins. Plain ASGI: other requests pass untouched.

    A failure is an attempt answered 401: for the API one carrying ``WWW-Authenticate`` (a webhook's wrong
    signature is not a login), for ``/login`` any 401.
    """

    def __init__(self, app: ASGIApp, *, ctx: WebContext, limiter: LoginLimiter) -> None:
        self.app = app
        self.ctx = ctx
        self.limiter = limiter
        #: scheduled audit flushes, kept so they are not garbage-collected before they run
        self._flushes: set[asyncio.Future[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limiter.enabled:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        attempt = login_attempt(request)
        if attempt is None:
            await self.app(scope, receive, send)
            return
        address = client_address(request)
        wait = self.limiter.retry_after(address)
        if wait is not None:
            await self._record(address, attempt, refused=True)
            await too_many(request, wait)(scope, receive, send)
            return
        answer: dict[str, Any] = {}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["challenge"] = any(k.lower() == b"www-authenticate" for k, _v in message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, watch)
        if answer.get("status") == 401 and (request.url.path == "/login" or answer.get("challenge")):
            await self._record(address, attempt, refused=False)

    async def _record(self, address: str, attempt: str, *, refused: bool) -> None:
        row = self.limiter.failed(address, attempt, refused=refused)
        if row is not None:
            await run_in_threadpool(self._write, row)
        self._flush_later(address)

    def _write(self, row: FailedLogins) -> None:
        self.ctx.audit("anonymous", "login.failed", row.target(), detail=row.detail())

    def _flush_later(self, address: str) -> None:
        """Held failures reach the audit log within ``audit_every``, even when the flood stops."""
        delay = self.limiter.due_in(address)
        if delay is not None:
            asyncio.get_running_loop().call_later(delay, self._due, address)

    def _due(self, address: str) -> None:
        row = self.limiter.flush(address)
        if row is None:
            self._flush_later(address)  # a row was written meanwhile: look again when the next one is due
            return
        job = asyncio.ensure_future(run_in_threadpool(self._write, row))
        self._flushes.add(job)
        job.add_done_callback(self._flushes.discard)


def too_many(request: Request, wait: int) -> Response:
    """429: JSON for the API, the error page for the dashboard; ``Retry-After`` on both."""
    message = f"too many failed logins from your address; try again in {wait} s"
    headers = {"Retry-After": str(wait)}
    if request.url.path == "/login":
        from crossdock.web import pages

        page = pages.render(request, "error.html", None, status=429, code=429, message=message)
        page.headers.update(headers)
        return page
    return JSONResponse({"detail": message}, status_code=429, headers=headers)
