"""The OpenAPI document at ``/api/openapi.json`` is the API's contract; this completes what routes cannot say.

Routes declare their own answers (models, 202, 404, 409...) and FastAPI writes each one's bearer security
requirement from its role dependency (``require``), naming the role (OpenAPI 3.1 allows role names for non-OAuth
schemes). What every protected route shares is added here from that requirement, so the document cannot drift
from the code: 401 with
``WWW-Authenticate``, 403 where a role above viewer is needed, 429 from the failed-login limiter, and 503 while
the database is unavailable. ``/health`` stays without security unless ``health_requires_auth`` is set.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

#: the security scheme of API tokens (``crossdock.web.api.BEARER_SCHEME``), and those of webhook senders
BEARER = "bearer"
WEBHOOK_SECRET = "webhook_secret"
WEBHOOK_SIGNATURE = "webhook_signature"


class ErrorOut(BaseModel):
    """Every refusal: a sentence that says why."""

    detail: str


def error(description: str) -> dict[str, Any]:
    """One error answer for a route's ``responses``."""
    return {"model": ErrorOut, "description": description}


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}

WEBHOOK_SCHEMES: dict[str, Any] = {
    WEBHOOK_SECRET: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Crossdock-Secret",
        "description": "The shared `secret:` of a webhook source.",
    },
    WEBHOOK_SIGNATURE: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Crossdock-Signature",
        "description": "Hex HMAC-SHA256 of the raw body with the source's `hmac_secret:` (`sha256=` prefix "
        "accepted), or `t=UNIX,v1=HEX` over `UNIX.body` with `timestamp_tolerance:`. The source's "
        "`signature_header:` may name another header.",
    },
}


def _role(operation: dict[str, Any]) -> str | None:
    """The role an operation's bearer requirement names (FastAPI writes it from ``require``'s scopes)."""
    for requirement in operation.get("security", []):
        if requirement.get(BEARER):
            role: str = requirement[BEARER][0]
            return role
    return None


def complete(spec: dict[str, Any], *, health_open: bool) -> dict[str, Any]:
    """Add the webhook and health security and the shared error answers to FastAPI's document."""
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(WEBHOOK_SCHEMES)
    components.setdefault("schemas", {})["ErrorOut"] = ErrorOut.model_json_schema()
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            _complete_operation(path, operation, health_open=health_open)
    return spec


def _complete_operation(path: str, operation: dict[str, Any], *, health_open: bool) -> None:
    webhook = path.startswith("/api/v1/webhooks/")
    if webhook:
        # the source's secret, its HMAC signature, or (a source with neither) an operator token
        operation["security"] = [{WEBHOOK_SECRET: []}, {WEBHOOK_SIGNATURE: []}, {BEARER: ["operator"]}]
    elif path == "/api/v1/health":
        operation["security"] = [] if health_open else [{BEARER: ["viewer"]}]
    role = _role(operation)
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if role is not None:
        responses.setdefault(
            "401",
            {
                "description": "No valid token (`WWW-Authenticate: Bearer`).",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                "content": _ERROR_REF,
            },
        )
        responses.setdefault(
            "429",
            {
                "description": "Too many failed tokens from this address; wait `Retry-After` seconds.",
                "headers": _RETRY_AFTER,
                "content": _ERROR_REF,
            },
        )
        if role != "viewer":
            responses.setdefault("403", {"description": f"The token's role is below {role}.", "content": _ERROR_REF})
    if "requestBody" in operation:
        responses.setdefault("400", {"description": "The body is not valid JSON.", "content": _ERROR_REF})
    if path.startswith("/api/v1/") and path != "/api/v1/health":
        responses.setdefault(
            "503",
            {
                "description": "The database is unavailable right now; try again after `Retry-After`.",
                "headers": _RETRY_AFTER,
                "content": _ERROR_REF,
            },
        )
    if "security" not in operation:
        operation["security"] = []  # open: say so, rather than leave it to a global default


def install(app: FastAPI, *, health_open: bool) -> None:
    """Serve the completed document (built once, on the first request for it)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate(), health_open=health_open)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
