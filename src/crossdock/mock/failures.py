"""Switchable failure modes shared by the mock ERP and the mock shop.

Every failure path of a connector (5xx, 429 with Retry-After, slow answers, HTML
instead of JSON, truncated bodies, dropped connections, per-record rejections) must be
reproducible on demand, so tests can prove the engine maps each one to the right task
status. One :class:`Failures` object holds the active :class:`FailureConfig` plus the
counters the modes need; it can be replaced at runtime from the test thread (Python
API) or over HTTP (``POST /_failures``), and is consulted on the server thread.

Order in which the modes are checked for one request (the first that fires wins):

1. ``slow_ms``          delay, then go on
2. ``drop_connection``  close the socket without an answer; the request is not processed
3. ``always_status``    every request gets this status
4. ``rate_limit``       more than N requests in ``rate_window`` seconds -> 429 + Retry-After
5. ``fail_every``       request number k (k % N == 0) gets ``fail_status``
6. ``fail_times``       the first N requests per key get ``fail_status``, then they succeed
7. ``status_for_skus``  a request about one of these SKUs gets that status and an error body
8. ``html``             an HTML error page with that status (200 or 502), not processed
9. (the real handler runs)
10. ``truncated``       the handler's answer is cut in half (the request *was* processed)

``echo_headers`` changes no decision: the JSON error answers of modes 3 to 7 also carry the request's headers
as ``request_headers``, as servers that quote what they got do (so tests can prove a secret header leaks nowhere).

The "key" of ``fail_times`` is the SKU when the path names one, else the
``Idempotency-Key`` header, else the path with its query string (so each page of a
listing fails N times on its own). Paths starting with ``/_`` (control endpoints) are
never affected; ``paths`` narrows the modes to some path prefixes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import orjson
from aiohttp import web

#: the error message a SKU rejected by ``status_for_skus`` carries, unless ``sku_errors`` says otherwise
DEFAULT_SKU_ERROR = "category not found"

_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>The upstream server did not answer. Please try again later.</p>"
    b"<hr><address>nginx</address></body></html>\n"
)


@dataclass(frozen=True)
class FailureConfig:
    """Which failures a mock server produces. All modes are off by default."""

    #: every Nth request fails with ``fail_status`` (0 = off)
    fail_every: int = 0
    #: status used by ``fail_every`` and ``fail_times``
    fail_status: int = 503
    #: the first N requests per key fail with ``fail_status``, later ones succeed (0 = off)
    fail_times: int = 0
    #: per-SKU status, e.g. ``{"SKU-00003": 400}``; answered with ``{"error": ...}``
    status_for_skus: dict[str, int] = field(default_factory=dict)
    #: per-SKU error message overriding :data:`DEFAULT_SKU_ERROR`
    sku_errors: dict[str, str] = field(default_factory=dict)
    #: every request gets this status (None = off)
    always_status: int | None = None
    #: allow at most N requests per ``rate_window`` seconds, answer 429 beyond (None = off)
    rate_limit: int | None = None
    #: length of the rate-limit window in seconds
    rate_window: float = 1.0
    #: seconds sent in ``Retry-After`` with every 429
    retry_after: int = 1
    #: delay every answer by this many milliseconds
    slow_ms: int = 0
    #: answer an HTML error page with this status, typically 200 or 502 (None = off)
    html: int | None = None
    #: cut every JSON answer in half (after the request was processed)
    truncated: bool = False
    #: close the connection without answering (before the request is processed)
    drop_connection: bool = False
    #: only requests whose path starts with one of these prefixes are affected (None = all)
    paths: tuple[str, ...] | None = None
    #: the JSON error answers (always_status ... status_for_skus) also quote the request's headers
    echo_headers: bool = False

    @property
    def is_off(self) -> bool:
        """True when no mode is on, so the hot path can skip every check."""
        return self == _OFF

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FailureConfig:
        """Build a config from JSON (``POST /_failures``); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown failure mode(s): {', '.join(unknown)}")
        values = dict(data)
        if values.get("html") is True:
            values["html"] = 502
        elif values.get("html") is False:
            values["html"] = None
        if values.get("paths") is not None:
            values["paths"] = tuple(values["paths"])
        for name in ("status_for_skus", "sku_errors"):
            if values.get(name) is None:
                values.pop(name, None)
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as ``GET /_failures`` shows it."""
        data = asdict(self)
        data["paths"] = list(self.paths) if self.paths is not None else None
        return data

    def validate(self) -> None:
        """Refuse values that would make a mode silently misbehave."""
        for name in ("fail_every", "fail_times", "slow_ms", "retry_after"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        if self.rate_limit is not None and self.rate_limit < 0:
            raise ValueError("rate_limit must be a non-negative integer")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")
        statuses = [self.fail_status, self.always_status, self.html, *self.status_for_skus.values()]
        for status in statuses:
            if status is not None and not 100 <= status <= 599:
                raise ValueError(f"not an HTTP status: {status}")


_OFF = FailureConfig()


class DropConnection(Exception):
    """Raised inside a handler to make the server close the socket without an answer."""


class Failures:
    """The active failure config plus its counters, safe to change from any thread."""

    def __init__(self, config: FailureConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or _OFF
        #: cheap flag read on the hot path without taking the lock
        self.active = not self._config.is_off
        self._count = 0
        self._per_key: dict[str, int] = {}
        self._window: deque[float] = deque()

    @classmethod
    def of(cls, value: FailureConfig | Failures | Mapping[str, Any] | None) -> Failures:
        """Accept what the factories take: shared state, a config, a JSON-like dict, or nothing."""
        if isinstance(value, Failures):
            return value
        if isinstance(value, FailureConfig):
            return cls(value)
        return cls(FailureConfig.from_dict(dict(value)) if value else None)

    @property
    def config(self) -> FailureConfig:
        return self._config

    def set(self, config: FailureConfig | None = None, **modes: Any) -> FailureConfig:
        """Replace the whole config (modes not named are switched off) and restart the counters."""
        if config is None:
            config = FailureConfig.from_dict(modes)
        elif modes:
            config = replace(config, **modes)
        config.validate()
        with self._lock:
            self._config = config
            self._count = 0
            self._per_key = {}
            self._window.clear()
            self.active = not config.is_off
        return config

    def clear(self) -> None:
        """Switch every mode off."""
        self.set(_OFF)

    def applies_to(self, path: str) -> bool:
        """Control endpoints are never affected, and ``paths`` narrows the rest."""
        if path.startswith("/_"):
            return False
        prefixes = self._config.paths
        return prefixes is None or path.startswith(prefixes)

    def decide(self, key: str, sku: str | None) -> tuple[int, bytes, dict[str, str]] | None:
        """The failure answer (status, body, headers) for one request, or None to process it.

        Counting happens here, under the lock, so ``fail_every`` and ``fail_times`` are exact
        even when a test changes the config concurrently.
        """
        with self._lock:
            cfg = self._config
            self._count += 1
            if cfg.always_status is not None:
                return _error(cfg.always_status, "mock failure: always_status", cfg)
            if cfg.rate_limit is not None:
                now = time.monotonic()
                window = self._window
                while window and window[0] <= now - cfg.rate_window:
                    window.popleft()
                if len(window) >= cfg.rate_limit:
                    return _error(429, "rate limit exceeded", cfg)
                window.append(now)
            if cfg.fail_every and self._count % cfg.fail_every == 0:
                return _error(cfg.fail_status, "mock failure: fail_every", cfg)
            if cfg.fail_times:
                seen = self._per_key.get(key, 0)
                if seen < cfg.fail_times:
                    self._per_key[key] = seen + 1
                    return _error(cfg.fail_status, "mock failure: fail_times", cfg)
        if sku is not None:
            return self.sku_failure(sku)
        return None

    def sku_failure(self, sku: str) -> tuple[int, bytes, dict[str, str]] | None:
        """The rejection configured for one SKU (also used per item of a batch), or None."""
        cfg = self._config
        status = cfg.status_for_skus.get(sku)
        if status is None:
            return None
        return _error(status, cfg.sku_errors.get(sku, DEFAULT_SKU_ERROR), cfg, sku=sku)


def _error(
    status: int, message: str, cfg: FailureConfig, *, sku: str | None = None
) -> tuple[int, bytes, dict[str, str]]:
    body: dict[str, Any] = {"error": message}
    if sku is not None:
        body["sku"] = sku
    headers = {"Content-Type": "application/json"}
    if status == 429:
        headers["Retry-After"] = str(cfg.retry_after)
    return status, orjson.dumps(body), headers


def request_key(request: web.Request, sku: str | None) -> str:
    """The key ``fail_times`` counts per: SKU, else Idempotency-Key, else path and query."""
    if sku is not None:
        return sku
    return request.headers.get("Idempotency-Key") or request.path_qs


async def failure_before(failures: Failures, request: web.Request, sku: str | None) -> web.Response | None:
    """Apply the modes that act before the handler; a response means: answer this instead."""
    cfg = failures.config
    if cfg.slow_ms:
        await asyncio.sleep(cfg.slow_ms / 1000)
    if cfg.drop_connection:
        raise DropConnection
    decided = failures.decide(request_key(request, sku), sku)
    if decided is not None:
        status, body, headers = decided
        if cfg.echo_headers:
            body = orjson.dumps(
                {**orjson.loads(body), "request_headers": {str(k): v for k, v in request.headers.items()}}
            )
        return web.Response(status=status, body=body, headers=headers)
    if cfg.html is not None:
        return web.Response(status=cfg.html, body=_HTML_PAGE, content_type="text/html")
    return None


def failure_after(failures: Failures, response: web.StreamResponse) -> web.StreamResponse:
    """Apply the modes that spoil an answer the handler already produced."""
    if failures.config.truncated and isinstance(response, web.Response) and response.body is not None:
        body = response.body
        if isinstance(body, bytes | bytearray) and len(body) > 1:
            return web.Response(
                status=response.status,
                body=bytes(body[: len(body) // 2]),
                content_type=response.content_type,
                headers={k: v for k, v in response.headers.items() if k.lower() not in _RECOMPUTED},
            )
    return response


_RECOMPUTED = {"content-length", "content-type"}


def drop(request: web.Request) -> web.Response:
    """Close the socket under the request; the client sees a connection reset / server disconnect."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # aiohttp will fail to write this answer on the closed transport and move on quietly
    return web.Response(status=500)


async def failures_endpoint(failures: Failures, request: web.Request) -> web.Response:
    """``GET|POST|DELETE /_failures``: show, replace or clear the modes at runtime."""
    if request.method == "POST":
        try:
            data = orjson.loads(await request.read() or b"{}")
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            failures.set(FailureConfig.from_dict(data))
        except (ValueError, TypeError) as exc:
            return web.Response(status=400, body=orjson.dumps({"error": str(exc)}), content_type="application/json")
    elif request.method == "DELETE":
        failures.clear()
    return web.Response(body=orjson.dumps(failures.config.to_dict()), content_type="application/json")
