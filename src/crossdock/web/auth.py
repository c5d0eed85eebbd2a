"""Who is calling: API tokens (Bearer), dashboard sessions (signed cookie) and CSRF tokens for form posts.

Tokens are random (``secrets.token_urlsafe(32)``) and stored only as their SHA-256, so a copy of the
database does not hand out access. Roles are ordered: viewer < operator < admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from crossdock.errors import StoreUnavailable
from crossdock.store import Store

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}

SESSION_COOKIE = "crossdock_session"
LOGIN_CSRF_COOKIE = "crossdock_login_csrf"
CSRF_FIELD = "csrf_token"
#: ``last_used`` is written at most this often per token, so reads stay reads
_TOUCH_EVERY = 60.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def role_at_least(role: str, minimum: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[minimum]


def issue_token(store: Store, role: str, name: str, *, now: datetime | None = None) -> tuple[int, str]:
    """Create a token and return ``(id, token)``. The token is shown once; only its hash is kept."""
    if role not in _RANK:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    token = new_token()
    token_id = store.create_token(name, role, hash_token(token), now=now or datetime.now(UTC))
    return token_id, token


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    token_id: int
    name: str
    role: str

    def can(self, minimum: str) -> bool:
        return role_at_least(self.role, minimum)

    @property
    def actor(self) -> str:
        """How the caller appears in task logs and the audit log."""
        return self.name


class Authenticator:
    """Resolves bearer tokens and session cookies to principals; a short cache keeps requests write-free."""

    def __init__(self, store: Store, *, secret_key: str, session_ttl: float, cache_seconds: float) -> None:
        self.store = store
        self.session_ttl = session_ttl
        self.cache_seconds = cache_seconds
        self._serializer = URLSafeTimedSerializer(secret_key, salt="crossdock-session")
        self._login_serializer = URLSafeTimedSerializer(secret_key, salt="crossdock-login")
        self._lock = threading.Lock()
        self._by_hash: dict[str, tuple[float, Principal | None]] = {}
        self._touched: dict[int, float] = {}
        self._live: tuple[float, dict[int, Principal]] = (0.0, {})

    # --- bearer tokens ---------------------------------------------------------------------------

    def from_token(self, token: str) -> Principal | None:
        token = token.strip()
        if not token:
            return None
        digest = hash_token(token)
        clock = time.monotonic()
        with self._lock:
            cached = self._by_hash.get(digest)
        if cached is not None and clock - cached[0] < self.cache_seconds:
            return cached[1]
        try:
            record = self.store.find_token(digest)
        except StoreUnavailable:
            if cached is None:
                raise
            # the last answer stands while the database cannot be asked (a revocation cannot be written then
            # either), so Prometheus can still read crossdock_database_up 0 from /metrics during an outage
            return cached[1]
        principal = None if record is None or record.revoked else Principal(record.id, record.name, record.role)
        if principal is not None and clock - self._touched.get(principal.token_id, -_TOUCH_EVERY) >= _TOUCH_EVERY:
            self.store.find_token(digest, now=datetime.now(UTC))
            self._touched[principal.token_id] = clock
        with self._lock:
            if len(self._by_hash) > 10_000:
                self._by_hash.clear()
            self._by_hash[digest] = (clock, principal)
        return principal

    def from_authorization(self, header: str | None) -> Principal | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.from_token(value)

    def live_token(self, token_id: int) -> Principal | None:
        """The token behind a session, if it is still live (revoking a token ends its sessions)."""
        clock = time.monotonic()
        with self._lock:
            at, live = self._live
        if clock - at >= self.cache_seconds:
            try:
                tokens = self.store.list_tokens()
            except StoreUnavailable:
                if not at:
                    raise
                return live.get(token_id)  # as for bearer tokens: the last answer stands during an outage
            live = {t.id: Principal(t.id, t.name, t.role) for t in tokens if not t.revoked}
            with self._lock:
                self._live = (clock, live)
        return live.get(token_id)

    # --- sessions ----------------------------------------------------------------------------------

    def new_session(self, principal: Principal) -> str:
        """A signed cookie value: the token id and a per-session CSRF token (never the token itself)."""
        return self._serializer.dumps({"t": principal.token_id, "c": secrets.token_urlsafe(24)})

    def read_session(self, cookie: str | None) -> tuple[Principal, str] | None:
        """``(principal, csrf token)`` for a valid, unexpired session of a live token."""
        if not cookie:
            return None
        try:
            data: Any = self._serializer.loads(cookie, max_age=max(int(self.session_ttl), 0))
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t"), int) or not isinstance(data.get("c"), str):
            return None
        principal = self.live_token(data["t"])
        if principal is None:
            return None
        return principal, data["c"]

    # --- CSRF for the login form (before there is a session) ----------------------------------------

    def login_csrf(self) -> tuple[str, str]:
        """``(cookie value, form value)``: the form value must come back with the signed cookie."""
        value = secrets.token_urlsafe(24)
        return self._login_serializer.dumps(value), value

    def check_login_csrf(self, cookie: str | None, form_value: str | None) -> bool:
        if not cookie or not form_value:
            return False
        try:
            value: Any = self._login_serializer.loads(cookie, max_age=3600)
        except BadSignature:
            return False
        return isinstance(value, str) and hmac.compare_digest(value.encode(), form_value.encode())


def csrf_ok(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
