"""A mock ERP: a deterministic product catalogue behind every common pagination and auth style.

Sources in the field paginate in five ways and authenticate in six; the HTTP source
connector must handle all of them, and delta detection must notice a changed product.
This ERP generates its catalogue from a seed (the same seed gives the same products on
every machine), lets a test change it while the server runs, and counts requests per
path so a test can assert "the source was asked once per schedule".

Endpoints (all product endpoints take ``updated_since`` (ISO 8601, inclusive) and
``page_size``/``limit``):

- ``GET /products``              ``{"items", "_links": {"next": url|null}, "total"}``
- ``GET /products/link-header``  bare JSON array, ``Link: <url>; rel="next"`` while more remain
- ``GET /products/page?page=N``  ``{"items", "page", "page_size", "total"}``, 1-based, empty page at the end
- ``GET /products/offset?offset=&limit=``  ``{"items", "offset", "limit", "total"}``
- ``GET /products/cursor?cursor=``  ``{"items", "next_cursor": token|null}``, the token is opaque
- ``GET /products.xml``          ``<products total=".."><next>url</next><product>..</product></products>``
- ``GET /products/{sku}``        one product, or 404
- ``POST /oauth/token``          OAuth2 client credentials (form or HTTP basic client auth)
- ``GET /_stats``, ``POST /_reset``, ``GET|POST|DELETE /_failures``; ``POST /_products``,
  ``PATCH|DELETE /_products/{sku}`` change the catalogue over HTTP (for the demo)

Next links and cursors are keyset-based (they carry the last SKU), so a product changed
or added during a listing never makes another one appear twice or vanish.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hmac
import random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from xml.sax.saxutils import escape

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

Product = dict[str, Any]
AuthMode = Literal["none", "bearer", "basic", "api_key_header", "api_key_query", "oauth2"]
AUTH_MODES: tuple[str, ...] = get_args(AuthMode)

#: the first SKU number; SKUs are ``SKU-00001``, ``SKU-00002``...
_FIRST = 1
_ADJECTIVES = (
    "Classic", "Compact", "Deluxe", "Eco", "Ergonomic", "Heavy", "Light", "Modern", "Portable",
    "Premium", "Rugged", "Smart", "Solid", "Sturdy", "Vintage", "Wireless",
)  # fmt: skip
_MATERIALS = (
    "Aluminium",
    "Bamboo",
    "Canvas",
    "Ceramic",
    "Cotton",
    "Glass",
    "Leather",
    "Oak",
    "Steel",
    "Wool",
)
_NOUNS = (
    "Backpack", "Bottle", "Chair", "Clock", "Desk", "Headphones", "Kettle", "Lamp", "Mug", "Notebook",
    "Pen", "Shelf", "Speaker", "Table", "Toolbox", "Umbrella", "Wallet", "Watch",
)  # fmt: skip
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second: the one format the catalogue uses, so strings sort."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> str:
    """Normalise an ``updated_since`` value to the catalogue's format; a naive time is UTC."""
    moment = datetime.fromisoformat(text.strip().replace(" ", "+").replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_timestamp(moment)


def generate_product(number: int, rng: random.Random) -> Product:
    """One plausible product; all randomness comes from ``rng`` so a seed reproduces it."""
    cents = rng.randint(199, 99_999)
    return {
        "sku": f"SKU-{number:05d}",
        "title": f"{rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} {rng.choice(_NOUNS)}",
        "price": f"{cents // 100}.{cents % 100:02d}",
        "currency": "EUR",
        "stock": rng.randint(0, 500),
        "category": rng.choice("ABC"),
        "status": "active" if rng.random() < 0.85 else "inactive",
        "updated_at": format_timestamp(_EPOCH + timedelta(seconds=rng.randint(0, 300 * 86_400))),
    }


class Catalogue:
    """The ERP's products, ordered by SKU; safe to read and change from any thread."""

    def __init__(self, products: int = 1000, seed: int = 1) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._products: dict[str, Product] = {}
        self._order: list[str] = []
        self._next_number = _FIRST
        for _ in range(products):
            self._append(generate_product(self._next_number, self._rng))

    def _append(self, product: Product) -> None:
        sku = str(product["sku"])
        self._products[sku] = product
        bisect.insort(self._order, sku)
        self._next_number += 1

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, sku: object) -> bool:
        return sku in self._products

    def get(self, sku: str) -> Product | None:
        """A copy of one product, or None."""
        with self._lock:
            product = self._products.get(sku)
            return dict(product) if product is not None else None

    def all(self) -> list[Product]:
        """Copies of every product, in SKU order."""
        with self._lock:
            return [dict(self._products[sku]) for sku in self._order]

    def skus(self) -> list[str]:
        with self._lock:
            return list(self._order)

    def update(self, sku: str, **fields: Any) -> Product:
        """Change fields of one product; ``updated_at`` moves to now unless given. Returns a copy."""
        if "sku" in fields and fields["sku"] != sku:
            raise ValueError("a product's sku cannot change; remove it and add a new one")
        with self._lock:
            product = self._products.get(sku)
            if product is None:
                raise KeyError(sku)
            product.update(fields)
            if "updated_at" not in fields:
                product["updated_at"] = format_timestamp(datetime.now(UTC))
            return dict(product)

    def add(self, product: Mapping[str, Any] | None = None, **fields: Any) -> Product:
        """Add a product: generated like the others, with ``product``/``fields`` on top. Returns a copy.

        Without a ``sku`` it gets the next free number, so added SKUs sort after the seeded ones.
        """
        with self._lock:
            while f"SKU-{self._next_number:05d}" in self._products:
                self._next_number += 1
            new = generate_product(self._next_number, self._rng)
            new["updated_at"] = format_timestamp(datetime.now(UTC))
            new.update(product or {})
            new.update(fields)
            sku = str(new["sku"])
            if sku in self._products:
                raise ValueError(f"product {sku} already exists")
            new["sku"] = sku
            self._products[sku] = new
            bisect.insort(self._order, sku)
            if sku == f"SKU-{self._next_number:05d}":
                self._next_number += 1
            return dict(new)

    def remove(self, sku: str) -> Product:
        """Delete a product; returns what it was."""
        with self._lock:
            product = self._products.pop(sku)
            del self._order[bisect.bisect_left(self._order, sku)]
            return product

    def count(self, since: str | None = None) -> int:
        with self._lock:
            if since is None:
                return len(self._order)
            return sum(1 for p in self._products.values() if p["updated_at"] >= since)

    def page_after(self, after: str | None, limit: int, since: str | None = None) -> tuple[list[Product], bool]:
        """Up to ``limit`` products with a SKU after ``after`` (keyset), and whether more remain."""
        with self._lock:
            start = bisect.bisect_right(self._order, after) if after is not None else 0
            items: list[Product] = []
            for index in range(start, len(self._order)):
                product = self._products[self._order[index]]
                if since is not None and product["updated_at"] < since:
                    continue
                if len(items) == limit:
                    return items, True
                items.append(dict(product))
            return items, False

    def page_offset(self, offset: int, limit: int, since: str | None = None) -> tuple[list[Product], int]:
        """Products ``offset`` to ``offset + limit`` of the (filtered) listing, and its total."""
        with self._lock:
            if since is None:
                skus = self._order
            else:
                skus = [s for s in self._order if self._products[s]["updated_at"] >= since]
            return [dict(self._products[s]) for s in skus[offset : offset + limit]], len(skus)


@dataclass(frozen=True)
class AuthConfig:
    """How the ERP wants callers to authenticate; the defaults are the demo's credentials."""

    mode: AuthMode = "none"
    token: str = "erp-token"
    username: str = "erp"
    password: str = "erp-secret"
    api_key: str = "erp-key"
    client_id: str = "crossdock"
    client_secret: str = "crossdock-secret"
    #: lifetime of OAuth2 access tokens, in seconds (fractions allowed for tests)
    token_ttl: float = 3600.0

    @classmethod
    def parse(cls, value: AuthConfig | str | Mapping[str, Any] | None) -> AuthConfig:
        """Accept a config, a bare mode name (default credentials) or a dict."""
        if value is None:
            return cls()
        if isinstance(value, AuthConfig):
            config = value
        elif isinstance(value, str):
            config = cls(mode=value)  # type: ignore[arg-type]
        else:
            config = cls(**dict(value))
        if config.mode not in AUTH_MODES:
            raise ValueError(f"unknown auth mode {config.mode!r}; choose one of {', '.join(AUTH_MODES)}")
        return config


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Erp:
    """The ERP's state: catalogue, auth, failures and counters. ``app()`` serves it."""

    def __init__(
        self,
        catalogue: Catalogue | None = None,
        *,
        auth: AuthConfig | str | Mapping[str, Any] | None = None,
        failures: FailureConfig | Failures | Mapping[str, Any] | None = None,
        default_page_size: int = 100,
        max_page_size: int = 1000,
    ) -> None:
        self.catalogue = catalogue if catalogue is not None else Catalogue()
        self.auth = AuthConfig.parse(auth)
        self.failures = Failures.of(failures)
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self._lock = threading.Lock()
        self._by_path: dict[str, int] = {}
        self._by_status: dict[int, int] = {}
        self._requests = 0
        self._tokens: dict[str, float] = {}
        self._tokens_issued = 0

    # --- counters ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Requests in total, per path and per status, and OAuth2 tokens issued."""
        with self._lock:
            return {
                "requests": self._requests,
                "by_path": dict(self._by_path),
                "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "tokens_issued": self._tokens_issued,
                "products": len(self.catalogue),
            }

    def requests_to(self, path: str) -> int:
        """How many requests reached ``path`` (without query), whatever their answer."""
        with self._lock:
            return self._by_path.get(path, 0)

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return self._tokens_issued

    def reset_stats(self) -> None:
        with self._lock:
            self._by_path.clear()
            self._by_status.clear()
            self._requests = 0
            self._tokens_issued = 0

    def expire_tokens(self) -> None:
        """Invalidate every issued OAuth2 token, as if their lifetime had passed."""
        with self._lock:
            self._tokens.clear()

    def set_auth(self, auth: AuthConfig | str | Mapping[str, Any] | None) -> None:
        self.auth = AuthConfig.parse(auth)

    # --- app -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count_middleware, self._failure_middleware])
        app[ERP_KEY] = self
        r = app.router
        r.add_get("/products", self._next_link)
        r.add_get("/products.xml", self._xml)
        r.add_get("/products/link-header", self._link_header)
        r.add_get("/products/page", self._page_number)
        r.add_get("/products/offset", self._offset)
        r.add_get("/products/cursor", self._cursor)
        r.add_get("/products/{sku}", self._one)
        r.add_post("/oauth/token", self._oauth_token)
        r.add_get("/_stats", self._stats)
        r.add_post("/_reset", self._reset)
        r.add_route("*", "/_failures", self._failures)
        r.add_post("/_products", self._add_product)
        r.add_route("PATCH", "/_products/{sku}", self._update_product)
        r.add_delete("/_products/{sku}", self._remove_product)
        return app

    @web.middleware
    async def _count_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_"):  # control calls would pollute "asked once" assertions
            return await handler(request)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except DropConnection:
            status = 0
            return drop(request)
        finally:
            with self._lock:
                self._requests += 1
                self._by_path[request.path] = self._by_path.get(request.path, 0) + 1
                self._by_status[status] = self._by_status.get(status, 0) + 1

    @web.middleware
    async def _failure_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        failures = self.failures
        if not failures.active or not failures.applies_to(request.path):
            return await handler(request)
        sku = request.match_info.get("sku")
        early = await failure_before(failures, request, sku)
        if early is not None:
            return early
        return failure_after(failures, await handler(request))

    def _authorize(self, request: web.Request) -> web.Response | None:
        """None when the caller may pass, else the 401 to answer."""
        auth = self.auth
        mode = auth.mode
        if mode == "none":
            return None
        header = request.headers.get("Authorization", "")
        ok = False
        challenge = "Bearer"
        if mode == "bearer":
            ok = _same(header, f"Bearer {auth.token}")
        elif mode == "basic":
            challenge = 'Basic realm="erp"'
            ok = _basic_matches(header, auth.username, auth.password)
        elif mode == "api_key_header":
            challenge = "ApiKey"
            ok = _same(request.headers.get("X-Api-Key", ""), auth.api_key)
        elif mode == "api_key_query":
            challenge = "ApiKey"
            ok = _same(request.query.get("api_key", ""), auth.api_key)
        elif mode == "oauth2":
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token:
                with self._lock:
                    expires = self._tokens.get(token)
                ok = expires is not None and time.monotonic() < expires
                if not ok:
                    challenge = 'Bearer error="invalid_token"'
        if ok:
            return None
        return web.Response(
            status=401,
            body=orjson.dumps({"error": "unauthorized"}),
            content_type="application/json",
            headers={"WWW-Authenticate": challenge},
        )

    def _page_size(self, request: web.Request, name: str = "page_size") -> int:
        raw = request.query.get(name) or request.query.get("limit") or request.query.get("page_size")
        if raw is None:
            return self.default_page_size
        size = _int_param(raw, name)
        if not 1 <= size <= self.max_page_size:
            raise _bad_request(f"{name} must be between 1 and {self.max_page_size}")
        return size

    def _since(self, request: web.Request) -> str | None:
        raw = request.query.get("updated_since")
        if raw is None or raw == "":
            return None
        try:
            return parse_timestamp(raw)
        except ValueError:
            raise _bad_request(f"updated_since is not an ISO 8601 time: {raw!r}") from None

    def _keyset(self, request: web.Request) -> tuple[list[Product], str | None, int]:
        """Shared by next-link, link-header and XML: a page after ``after``, and the next URL."""
        size = self._page_size(request)
        since = self._since(request)
        after = request.query.get("after") or None
        items, more = self.catalogue.page_after(after, size, since)
        next_url = str(request.url.update_query(after=items[-1]["sku"])) if more and items else None
        return items, next_url, self.catalogue.count(since)

    async def _next_link(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        items, next_url, total = self._keyset(request)
        return _json({"items": items, "_links": {"next": next_url}, "total": total})

    async def _link_header(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        items, next_url, total = self._keyset(request)
        headers = {"X-Total-Count": str(total)}
        if next_url is not None:
            headers["Link"] = f'<{next_url}>; rel="next"'
        return _json(items, headers=headers)

    async def _xml(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        items, next_url, total = self._keyset(request)
        parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<products total="{total}">']
        parts.append(f"<next>{escape(next_url)}</next>" if next_url else "<next/>")
        for item in items:
            fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in item.items())
            parts.append(f"<product>{fields}</product>")
        parts.append("</products>\n")
        return web.Response(body="".join(parts).encode(), content_type="application/xml")

    async def _page_number(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        page = _int_param(request.query.get("page", "1"), "page")
        if page < 1:
            raise _bad_request("page starts at 1")
        size = self._page_size(request)
        items, total = self.catalogue.page_offset((page - 1) * size, size, self._since(request))
        return _json({"items": items, "page": page, "page_size": size, "total": total})

    async def _offset(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        offset = _int_param(request.query.get("offset", "0"), "offset")
        if offset < 0:
            raise _bad_request("offset must not be negative")
        limit = self._page_size(request, "limit")
        items, total = self.catalogue.page_offset(offset, limit, self._since(request))
        return _json({"items": items, "offset": offset, "limit": limit, "total": total})

    async def _cursor(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        size = self._page_size(request)
        since = self._since(request)
        after = _decode_cursor(request.query.get("cursor") or None)
        items, more = self.catalogue.page_after(after, size, since)
        next_cursor = _encode_cursor(items[-1]["sku"]) if more and items else None
        return _json({"items": items, "next_cursor": next_cursor})

    async def _one(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        product = self.catalogue.get(request.match_info["sku"])
        if product is None:
            return _json({"error": "product not found"}, status=404)
        return _json(product)

    async def _oauth_token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        client_id = str(form.get("client_id", ""))
        client_secret = str(form.get("client_secret", ""))
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic ") and not client_id:
            client_id, client_secret = _basic_credentials(header) or ("", "")
        if form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, status=400)
        auth = self.auth
        if not (_same(client_id, auth.client_id) and _same(client_secret, auth.client_secret)):
            return _json({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + auth.token_ttl
            self._tokens_issued += 1
        ttl = auth.token_ttl
        expires_in: float = int(ttl) if float(ttl).is_integer() else ttl
        return _json({"access_token": token, "expires_in": expires_in, "token_type": "bearer"})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return _json(self.stats())

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self.reset_stats()
        self.failures.clear()
        return _json({"reset": True})

    async def _failures(self, request: web.Request) -> web.StreamResponse:
        return await failures_endpoint(self.failures, request)

    async def _add_product(self, request: web.Request) -> web.StreamResponse:
        data = await _json_object(request)
        try:
            return _json(self.catalogue.add(data), status=201)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=409)

    async def _update_product(self, request: web.Request) -> web.StreamResponse:
        data = await _json_object(request)
        try:
            return _json(self.catalogue.update(request.match_info["sku"], **data))
        except KeyError:
            return _json({"error": "product not found"}, status=404)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)

    async def _remove_product(self, request: web.Request) -> web.StreamResponse:
        try:
            return _json(self.catalogue.remove(request.match_info["sku"]))
        except KeyError:
            return _json({"error": "product not found"}, status=404)


#: where an app built by :meth:`Erp.app` keeps its :class:`Erp`
ERP_KEY = web.AppKey("crossdock_mock_erp", Erp)


def _json(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=orjson.dumps({"error": message}).decode(), content_type="application/json")


def _int_param(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _bad_request(f"{name} must be an integer") from None


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise _bad_request("body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad_request("expected a JSON object")
    return data


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _basic_matches(header: str, username: str, password: str) -> bool:
    credentials = _basic_credentials(header)
    return credentials is not None and _same(credentials[0], username) & _same(credentials[1], password)


def _encode_cursor(sku: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": sku})).decode().rstrip("=")


def _decode_cursor(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return str(data["after"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _bad_request("cursor is not valid") from None
