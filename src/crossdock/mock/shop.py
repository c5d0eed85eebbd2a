"""A mock target shop: accepts product writes, records them, and counts duplicates.

Exactly-once delivery is the promise crossdock has to keep, so the target must notice
when the same record arrives twice: it counts accepted writes per ``Idempotency-Key``
and keeps the last body per SKU. It is also the far end of the throughput benchmark,
so the request path is one lean handler (no middleware, no logging, orjson) and body
recording can be switched off (``record_bodies=False``) while the counters stay exact.

The shop is generic over *collections* (path prefixes; by default ``/products`` and
``/pim/products``, the second one standing in for a PIM). For a collection ``C``:

- ``PUT|POST|PATCH C/{sku}``  upsert one object; 201 when the SKU is new there, else 200
- ``POST C``                  one object, its SKU taken from the body's ``sku`` (or ``id``) field
- ``POST C/batch``            a JSON array or NDJSON body; answers 200 with
  ``{"results": [{"sku", "status", "id" | "error"}]}`` (per-item ``status_for_skus`` apply)
- ``DELETE C/{sku}``          forget it (200, or 404 if unknown)
- ``GET C/{sku}``             the last body accepted for it (404 if none or not recorded)

Every write answers ``{"id": <int, stable per SKU and collection>, "sku": ...}``.
Control: ``GET /_stats``, ``GET /_received``, ``POST /_reset``, ``GET|POST|DELETE /_failures``.

For throughput runs, serve it in its own process (``python -m crossdock.mock shop
--no-record-bodies``): in a thread it shares the GIL with the client it measures.
On two cores it keeps up with what one aiohttp client process can send (~10k requests/s).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from crossdock.mock.failures import (
    DropConnection,
    FailureConfig,
    Failures,
    drop,
    failure_after,
    failure_before,
    failures_endpoint,
)
from crossdock.mock.processes import SharedCounters

#: collections the shop serves unless told otherwise
DEFAULT_COLLECTIONS = ("/products", "/pim/products")
_JSON = "application/json"
_WRITE_METHODS = frozenset({"PUT", "POST", "PATCH"})


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One accepted write, as the shop saw it."""

    method: str
    path: str
    #: the collection the path belongs to, e.g. ``/products`` or ``/pim/products``
    collection: str
    #: None for a batch (its items are in ``body``)
    sku: str | None
    body: Any
    idempotency_key: str | None
    status: int


class Shop:
    """The shop's state. ``app()`` serves it; every accessor copies under a lock, so tests may call it."""

    def __init__(
        self,
        *,
        failures: FailureConfig | Failures | Mapping[str, Any] | None = None,
        record_bodies: bool = True,
        collections: Iterable[str] = DEFAULT_COLLECTIONS,
        shared: SharedCounters | None = None,
    ) -> None:
        self.failures = Failures.of(failures)
        #: the counts of every process of a multi-process shop (``--processes``); then this one records nothing else
        self.shared = shared
        self.record_bodies = record_bodies and shared is None
        self.collections = frozenset("/" + c.strip("/") for c in collections)
        self._lock = threading.Lock()
        self._reset_state()

    def _reset_state(self) -> None:
        self._received: list[ReceivedRequest] = []
        self._bodies: dict[str, dict[str, Any]] = {c: {} for c in self.collections}
        self._ids: dict[str, dict[str, int]] = {c: {} for c in self.collections}
        self._next_id = 1
        self._idempotency: dict[str, int] = {}
        self._requests = 0
        self._accepted = 0
        self._by_status: dict[int, int] = {}

    # --- accessors (test thread) ---------------------------------------------------------------

    @property
    def received(self) -> list[ReceivedRequest]:
        """Every accepted write in arrival order (empty when ``record_bodies`` is off)."""
        with self._lock:
            return list(self._received)

    @property
    def by_sku(self) -> dict[str, Any]:
        """The last body accepted per SKU in ``/products``."""
        return self.bodies("/products")

    def bodies(self, collection: str) -> dict[str, Any]:
        """The last body accepted per SKU in one collection, e.g. ``/pim/products``."""
        with self._lock:
            return dict(self._bodies.get("/" + collection.strip("/"), {}))

    @property
    def idempotency_counts(self) -> dict[str, int]:
        """Accepted writes per ``Idempotency-Key``; a count above 1 is a duplicate delivery."""
        with self._lock:
            return dict(self._idempotency)

    def duplicates(self) -> dict[str, int]:
        """Only the keys accepted more than once."""
        with self._lock:
            return {k: n for k, n in self._idempotency.items() if n > 1}

    def stats(self) -> dict[str, Any]:
        """Requests, accepted records, answers per status and duplicate keys (``GET /_stats``); for a
        multi-process shop, the counts of all its processes."""
        if self.shared is not None:
            return self.shared.totals()
        with self._lock:
            duplicates = {k: n for k, n in self._idempotency.items() if n > 1}
            return {
                "requests": self._requests,
                "accepted": self._accepted,
                "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "idempotency_keys": len(self._idempotency),
                "duplicate_keys": len(duplicates),
                "duplicates": duplicates,
                "skus": {c: len(ids) for c, ids in sorted(self._ids.items())},
            }

    def reset(self) -> None:
        """Forget everything received and switch failures off."""
        with self._lock:
            self._reset_state()
        if self.shared is not None:
            self.shared.reset()
        self.failures.clear()

    # --- server side -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app[SHOP_KEY] = self
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_"):
            return await self._control(request)
        failures = self.failures
        try:
            if failures.active and failures.applies_to(path):
                early = await failure_before(failures, request, self._sku_in_path(path))
                if early is not None:
                    self._count(early.status)
                    return early
                return failure_after(failures, await self._serve(request, path))
            return await self._serve(request, path)
        except DropConnection:
            self._count(0)
            return drop(request)

    def _sku_in_path(self, path: str) -> str | None:
        parent, _, last = path.rpartition("/")
        return last if parent in self.collections and last != "batch" else None

    def _count(self, status: int) -> None:
        with self._lock:
            self._requests += 1
            self._by_status[status] = self._by_status.get(status, 0) + 1
        if self.shared is not None:
            self.shared.add(status)

    def _answer(self, status: int, data: Any) -> web.Response:
        self._count(status)
        return web.Response(body=orjson.dumps(data), status=status, content_type=_JSON)

    async def _serve(self, request: web.Request, path: str) -> web.Response:
        method = request.method
        if path in self.collections:
            if method != "POST":
                return self._answer(405, {"error": f"{method} not allowed on a collection"})
            body = await _read_json(request)
            if not isinstance(body, dict):
                return self._answer(400, {"error": "body is not a JSON object"})
            sku = body.get("sku", body.get("id"))
            if sku is None or sku == "":
                return self._answer(400, {"error": "missing sku"})
            return self._write(request, path, str(sku), body)
        collection, _, last = path.rpartition("/")
        if collection not in self.collections or not last:
            return self._answer(404, {"error": f"no collection at {path}"})
        if last == "batch" and method == "POST":
            return await self._batch(request, collection)
        if method in _WRITE_METHODS:
            body = await _read_json(request)
            if not isinstance(body, dict):
                return self._answer(400, {"error": "body is not a JSON object"})
            return self._write(request, collection, last, body)
        if method == "GET":
            with self._lock:
                found = self._bodies[collection].get(last)
            return self._answer(200, found) if found is not None else self._answer(404, {"error": "not found"})
        if method == "DELETE":
            with self._lock:
                known = self._ids[collection].pop(last, None)
                self._bodies[collection].pop(last, None)
            if known is None:
                return self._answer(404, {"error": "not found"})
            return self._answer(200, {"id": known, "sku": last, "deleted": True})
        return self._answer(405, {"error": f"{method} not allowed"})

    def _write(self, request: web.Request, collection: str, sku: str, body: dict[str, Any]) -> web.Response:
        """Accept one object: assign its id, record it, count its idempotency key."""
        rejected = self.failures.sku_failure(sku) if self.failures.active else None
        if rejected is not None:
            status, error, headers = rejected
            self._count(status)
            return web.Response(body=error, status=status, headers=headers)
        key = request.headers.get("Idempotency-Key")
        with self._lock:
            ids = self._ids[collection]
            id_ = ids.get(sku)
            status = 200
            if id_ is None:
                status = 201
                id_ = ids[sku] = self._next_id
                self._next_id += 1
            if self.record_bodies:
                self._bodies[collection][sku] = body
                self._received.append(ReceivedRequest(request.method, request.path, collection, sku, body, key, status))
            if key is not None:
                self._idempotency[key] = self._idempotency.get(key, 0) + 1
            self._accepted += 1
            self._requests += 1
            self._by_status[status] = self._by_status.get(status, 0) + 1
        if self.shared is not None:
            self.shared.add(status, accepted=1)
        return web.Response(body=orjson.dumps({"id": id_, "sku": sku}), status=status, content_type=_JSON)

    async def _batch(self, request: web.Request, collection: str) -> web.Response:
        """Accept many objects; each gets its own result, the request as a whole answers 200."""
        raw = await request.read()
        try:
            items = _parse_batch(raw, request.content_type)
        except ValueError as exc:
            return self._answer(400, {"error": str(exc)})
        key = request.headers.get("Idempotency-Key")
        failures = self.failures
        results: list[dict[str, Any]] = []
        accepted: list[Any] = []
        taken = 0
        with self._lock:
            ids = self._ids[collection]
            bodies = self._bodies[collection]
            for item in items:
                if not isinstance(item, dict):
                    results.append({"sku": None, "status": 400, "error": "expected a JSON object"})
                    continue
                sku_value = item.get("sku", item.get("id"))
                if sku_value is None or sku_value == "":
                    results.append({"sku": None, "status": 400, "error": "missing sku"})
                    continue
                sku = str(sku_value)
                rejected = failures.sku_failure(sku) if failures.active else None
                if rejected is not None:
                    error = orjson.loads(rejected[1])["error"]
                    results.append({"sku": sku, "status": rejected[0], "error": error})
                    continue
                id_ = ids.get(sku)
                status = 200
                if id_ is None:
                    status = 201
                    id_ = ids[sku] = self._next_id
                    self._next_id += 1
                if self.record_bodies:
                    bodies[sku] = item
                    accepted.append(item)
                results.append({"sku": sku, "status": status, "id": id_})
                self._accepted += 1
                taken += 1
            if self.record_bodies:
                self._received.append(
                    ReceivedRequest(request.method, request.path, collection, None, accepted, key, 200)
                )
            if key is not None:
                self._idempotency[key] = self._idempotency.get(key, 0) + 1
            self._requests += 1
            self._by_status[200] = self._by_status.get(200, 0) + 1
        if self.shared is not None:
            self.shared.add(200, accepted=taken)
        return web.Response(body=orjson.dumps({"results": results}), content_type=_JSON)

    async def _control(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_stats":
            return web.Response(body=orjson.dumps(self.stats()), content_type=_JSON)
        if path == "/_reset" and request.method == "POST":
            self.reset()
            return web.Response(body=b'{"reset":true}', content_type=_JSON)
        if path == "/_failures":
            if self.shared is not None and request.method != "GET":
                # the request reaches one process of several: the others would keep their failures
                return web.Response(
                    status=409,
                    body=b'{"error":"a multi-process shop takes its failures at start only (--fail-every, ...)"}',
                    content_type=_JSON,
                )
            return await failures_endpoint(self.failures, request)
        if path == "/_received":
            data = [
                {
                    "method": r.method,
                    "path": r.path,
                    "sku": r.sku,
                    "body": r.body,
                    "idempotency_key": r.idempotency_key,
                }
                for r in self.received
            ]
            return web.Response(body=orjson.dumps(data), content_type=_JSON)
        return web.Response(status=404, body=b'{"error":"no such control endpoint"}', content_type=_JSON)


#: where an app built by :meth:`Shop.app` keeps its :class:`Shop`
SHOP_KEY = web.AppKey("crossdock_mock_shop", Shop)


async def _read_json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _NOT_JSON


#: a sentinel that is not a dict, so "not JSON" and "not an object" share one 400 path
_NOT_JSON: Any = object()


def _parse_batch(raw: bytes, content_type: str) -> list[Any]:
    """A JSON array, or NDJSON (one object per line; chosen by content type or shape)."""
    stripped = raw.lstrip()
    try:
        if stripped.startswith(b"[") and "ndjson" not in content_type:
            data = orjson.loads(stripped)
            if not isinstance(data, list):
                raise ValueError("expected a JSON array")
            return data
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not a JSON array or NDJSON: {exc}") from None
