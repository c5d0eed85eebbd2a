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
