"""What the web layer needs to know beyond the project and the store."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


@dataclass(slots=True)
class WebSettings:
    #: key that signs session cookies; a random one per process means sessions end when the server restarts
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: how long a dashboard session lasts after login, in seconds
    session_ttl: float = 8 * 3600.0
    #: mark cookies Secure (set this when the dashboard is served over HTTPS)
    cookie_secure: bool = False
    #: ``/api/v1/health`` is open by default (load balancers and uptime checks carry no token)
    health_requires_auth: bool = False
    #: how often the monitor's live counts refresh, in seconds
    refresh_seconds: int = 5
    #: tasks per page in the dashboard's task list
    page_size: int = 50
    #: how long a resolved token is trusted before the store is asked again (revocation delay), in seconds
    token_cache_seconds: float = 5.0
    #: failed logins one client address may make at once before it is answered 429 (0 turns the limit off)
    login_failure_burst: int = 10
    #: after the burst, failed logins allowed per second and address (the bucket refills at this rate)
    login_failure_rate: float = 1.0
    #: client addresses the limiter remembers, per process; the least recently seen are forgotten first
    login_limiter_addresses: int = 10_000
    #: failed logins of one address reach the audit log at most once per this many seconds, as one counted row
    failed_login_audit_every: float = 1.0
