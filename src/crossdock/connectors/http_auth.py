"""Auth options of an HTTP connection, and the OAuth2 client-credentials token they may need.

The token lives on the connection's client, so every source and target using the connection shares one token:
it is fetched once, renewed a little before it expires, and renewed at once when the server answers 401.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, model_validator

from crossdock.config.models import Duration
from crossdock.errors import PermanentError, TransientError
from crossdock.redact import basic_pair


class AuthOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["none", "bearer", "basic", "api_key", "oauth2"] = "none"
    token: str | None = None
    username: str | None = None
    password: str | None = None
    #: api_key: the header (or query parameter) name and where it goes
    name: str = "X-Api-Key"
    value: str | None = None
    location: Literal["header", "query"] = "header"
    #: oauth2 (client credentials): where tokens come from, and who we are
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None
    #: oauth2: send the client credentials in the form body (``body``) or as HTTP basic auth (``basic``)
    client_auth: Literal["body", "basic"] = "body"
    #: oauth2: renew the token this long before it expires (at most a quarter of its lifetime)
    refresh_margin: Duration = 30.0

    @model_validator(mode="after")
    def _complete(self) -> AuthOptions:
        needed = {
            "bearer": ["token"],
            "basic": ["username", "password"],
            "api_key": ["value"],
            "oauth2": ["token_url", "client_id", "client_secret"],
        }.get(self.type, [])
        missing = [k for k in needed if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"auth type {self.type} needs {', '.join(missing)}")
        return self

    def secrets(self) -> list[str]:
        """Values that must never show in a log line, whatever key they were configured under.

        Basic auth adds ``user:password`` (the redactor masks its base64, the header a target may echo)."""
        found = [s for s in (self.token, self.password, self.value, self.client_secret) if s]
        if self.type == "basic" and self.password:
            found.append(basic_pair(self.username or "", self.password))
        if self.type == "oauth2" and self.client_secret:
            found.append(basic_pair(self.client_id or "", self.client_secret))
        return found


class OAuth2Token:
    """A client-credentials access token, cached until shortly before it expires.

    Concurrent callers wait on one fetch instead of each asking the token endpoint.
    """

    def __init__(self, options: AuthOptions, timeout: float) -> None:
        assert options.token_url is not None
        self.options = options
        self.timeout = timeout
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        #: how many tokens this connection fetched (for tests and the request log)
        self.fetched = 0

    async def get(self, session: aiohttp.ClientSession) -> str:
        """The current token, fetching a new one only when there is none or it is about to expire."""
        token = self._token
        if token is not None and time.monotonic() < self._renew_at:
            return token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._renew_at:
                return self._token
            return await self._fetch(session)

    async def refresh(self, session: aiohttp.ClientSession, stale: str | None) -> str:
        """After a 401: fetch a new token, unless another request already replaced ``stale``."""
        async with self._lock:
            if self._token is not None and self._token != stale:
                return self._token
            self._token = None
            return await self._fetch(session)

    async def _fetch(self, session: aiohttp.ClientSession) -> str:
        opts = self.options
        url = opts.token_url or ""
        form = {"grant_type": "client_credentials"}
        if opts.scope:
            form["scope"] = opts.scope
        headers = {}
        if opts.client_auth == "basic":
            headers["Authorization"] = basic_authorization(opts.client_id or "", opts.client_secret or "")
        else:
            form["client_id"] = opts.client_id or ""
            form["client_secret"] = opts.client_secret or ""
        try:
            async with session.post(
                url, data=form, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                status, body = resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientError(f"oauth2 token request to {url} failed: {type(exc).__name__}: {exc}") from None
        if status >= 500 or status == 429:
            raise TransientError(f"oauth2 token endpoint {url} answered {status}", status_code=status)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if status != 200 or not isinstance(data, dict) or not data.get("access_token"):
            error = data.get("error") if isinstance(data, dict) else None
            raise PermanentError(
                f"oauth2 token endpoint {url} answered {status} without an access_token"
                + (f" (error: {error})" if error else "")
                + "; check client_id, client_secret and scope",
                status_code=status,
            )
        token = str(data["access_token"])
        now = time.monotonic()
        expires_in = data.get("expires_in")
        if isinstance(expires_in, int | float) and expires_in > 0:
            self._renew_at = now + expires_in - min(opts.refresh_margin, expires_in / 4)
        else:
            self._renew_at = float("inf")  # no lifetime given: keep it until the server answers 401
        self._token = token
        self.fetched += 1
        return token


def basic_authorization(username: str, password: str) -> str:
    """An HTTP basic ``Authorization`` value (built by hand: aiohttp deprecates its BasicAuth helper)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
