"""``crossdock token create|list|revoke``: wired into the main CLI with ``register(app)``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from crossdock.cli_base import WideOpt, cli_actor, cli_user, emit_json, fail, guarded, out, print_rows, store_for
from crossdock.tasks import iso
from crossdock.web.auth import ROLES, issue_token

token_app = typer.Typer(help="API and dashboard tokens.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``token`` command group to the ``crossdock`` command."""
    app.add_typer(token_app, name="token")


def _role(value: str) -> str:
    if value not in ROLES:
        raise typer.BadParameter(f"use one of {', '.join(ROLES)}")
    return value


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.", callback=_role)],
    name: Annotated[str | None, typer.Option("--name", help="Who or what uses it (shown in the audit log).")] = None,
    config: Annotated[
        Path, typer.Option("-c", "--config", envvar="CROSSDOCK_CONFIG", help="Project config file.")
    ] = Path("crossdock.yaml"),
    db: Annotated[str | None, typer.Option("--db", envvar="CROSSDOCK_DB", help="Database URL.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create a token and print it once; only its hash is stored."""
    with guarded():
        store = store_for(config, db)
        try:
            label = name or f"{role} token by {cli_user()}"
            token_id, token = issue_token(store, role, label)
            store.record_audit(
                cli_actor(),
                "token.create",
                {"token_id": token_id, "role": role, "name": label},
                now=datetime.now(UTC),
            )
        finally:
            store.close()
    if json_out:
        emit_json({"id": token_id, "name": label, "role": role, "token": token})
        return
    out.print(f"created {role} token {token_id} ({label}). It is shown only now:\n", markup=False)
    out.print(token, markup=False)
    out.print(
        "\nuse it as `Authorization: Bearer TOKEN`, or paste it into the dashboard's login form.",
        markup=False,
    )


@token_app.command("list")
def token_list(
    config: Annotated[
        Path, typer.Option("-c", "--config", envvar="CROSSDOCK_CONFIG", help="Project config file.")
    ] = Path("crossdock.yaml"),
    db: Annotated[str | None, typer.Option("--db", envvar="CROSSDOCK_DB", help="Database URL.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    wide: WideOpt = False,
) -> None:
    """Every token: id, name, role, created, last used, revoked. Never the token itself."""
    with guarded():
        store = store_for(config, db)
        try:
            tokens = store.list_tokens()
        finally:
            store.close()
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "role": t.role,
            "created_at": iso(t.created_at),
            "last_used": iso(t.last_used),
            "revoked": t.revoked,
        }
        for t in tokens
    ]
    if json_out:
        emit_json(rows)
        return
    print_rows(
        ("id", "name", "role", "created", "last used", "revoked"),
        [
            (
                str(t.id),
                t.name,
                t.role,
                iso(t.created_at) or "",
                iso(t.last_used) or "never",
                "yes" if t.revoked else "",
            )
            for t in tokens
        ],
        wide=wide,
        empty="no token yet: crossdock token create --role admin --name NAME",
    )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID")],
    config: Annotated[
        Path, typer.Option("-c", "--config", envvar="CROSSDOCK_CONFIG", help="Project config file.")
    ] = Path("crossdock.yaml"),
    db: Annotated[str | None, typer.Option("--db", envvar="CROSSDOCK_DB", help="Database URL.")] = None,
) -> None:
    """Revoke a token; API calls and dashboard sessions with it stop within seconds."""
    with guarded():
        store = store_for(config, db)
        try:
            done = store.revoke_token(token_id)
            if done:
                store.record_audit(cli_actor(), "token.revoke", {"token_id": token_id}, now=datetime.now(UTC))
        finally:
            store.close()
    if not done:
        fail(f"no token with id {token_id}")
    out.print(f"revoked token {token_id}")
