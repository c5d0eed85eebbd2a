"""Building blocks for ``crossdock serve``: the first-start admin token, a uvicorn server, and a log filter.

``serve_web`` runs the app until interrupted; ``build_server`` returns a ``uvicorn.Server`` for callers that
run the scheduler in the same event loop (``await server.serve()``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import uvicorn

from crossdock.engine.project import Project
from crossdock.store import Store
from crossdock.web.app import create_app
from crossdock.web.auth import issue_token
from crossdock.web.settings import WebSettings

DEFAULT_HOST = "127.0.0.1"


def first_start_token(store: Store) -> str | None:
    """On a store without any token, create an admin token and return it (once); else None."""
    if store.list_tokens():
        return None
    _id, token = issue_token(store, "admin", "admin (first start)")
    store.record_audit(
        "serve",
        "token.create",
        {"token_id": _id, "role": "admin"},
        detail="first start",
        now=datetime.now(UTC),
    )
    return token


def login_url(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/login?token={token}"


class RedactingFilter(logging.Filter):
    """Masks secrets and ``?token=`` values in log records, e.g. uvicorn's access log of the login link."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        return True


def build_server(
    project: Project,
    store: Store,
    host: str = DEFAULT_HOST,
    port: int = 8080,
    *,
    settings: WebSettings | None = None,
    log_level: str = "info",
    **uvicorn_options: Any,
) -> uvicorn.Server:
    app = create_app(project, store, settings=settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, **uvicorn_options)
    server = uvicorn.Server(config)
    log_filter = RedactingFilter(project.redact)
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(log_filter)
    return server


def serve_web(
    project: Project,
    store: Store,
    host: str = DEFAULT_HOST,
    port: int = 8080,
    *,
    settings: WebSettings | None = None,
    first_start_banner: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the API and dashboard until interrupted. Binds loopback unless ``host`` says otherwise."""
    server = build_server(project, store, host, port, settings=settings)
    if first_start_banner:
        token = first_start_token(store)
        if token is not None:
            echo(
                "\nNo API token existed, so an admin token was created. Open this link once to log in\n"
                "(it is shown only now; create more with `crossdock token create`):\n\n"
                f"    {login_url(host, port, token)}\n"
            )
    echo(f"crossdock web on http://{host}:{port}/  (API docs: /api/docs)")
    server.run()
