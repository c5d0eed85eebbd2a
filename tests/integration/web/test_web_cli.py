"""``crossdock token`` commands (through ``register``) and the ``serve`` building blocks."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import typer
from typer.testing import CliRunner

from crossdock.redact import Redactor
from crossdock.store import open_store
from crossdock.web.auth import hash_token
from crossdock.web.cli_commands import register
from crossdock.web.server import RedactingFilter, first_start_token, login_url


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """crossdock"""

    register(app)
    return app


def test_token_create_prints_once_and_stores_only_the_hash(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    empty = runner.invoke(cli(), ["token", "list", "--db", db])
    assert empty.exit_code == 0 and "no token yet: crossdock token create" in empty.output
    assert "┏" not in empty.output  # a message, not an empty table
    made = runner.invoke(cli(), ["token", "create", "--role", "operator", "--name", "ci", "--db", db, "--json"])
    assert made.exit_code == 0, made.output
    data = orjson.loads(made.output)
    assert data["role"] == "operator" and data["name"] == "ci" and len(data["token"]) >= 40
    store = open_store(db)
    try:
        record = store.find_token(hash_token(data["token"]))
        assert record is not None and record.role == "operator"
        assert store.list_audit()[0].action == "token.create"
    finally:
        store.close()
    listed = runner.invoke(cli(), ["token", "list", "--db", db, "--json"])
    assert listed.exit_code == 0
    assert [t["name"] for t in orjson.loads(listed.output)] == ["ci"]
    assert data["token"] not in listed.output
    text = runner.invoke(cli(), ["token", "list", "--db", db])
    assert "ci" in text.output and "operator" in text.output
    bad = runner.invoke(cli(), ["token", "create", "--role", "root", "--db", db])
    assert bad.exit_code == 2
    revoked = runner.invoke(cli(), ["token", "revoke", str(data["id"]), "--db", db])
    assert revoked.exit_code == 0
    assert runner.invoke(cli(), ["token", "revoke", "999", "--db", db]).exit_code == 1


def test_first_start_creates_one_admin_token(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'first.db'}")
    try:
        token = first_start_token(store)
        assert token is not None
        record = store.find_token(hash_token(token))
        assert record is not None and record.role == "admin"
        assert first_start_token(store) is None  # only on the very first start
    finally:
        store.close()
    assert login_url("127.0.0.1", 8080, "abc") == "http://127.0.0.1:8080/login?token=abc"
    assert login_url("0.0.0.0", 9000, "abc") == "http://127.0.0.1:9000/login?token=abc"


def test_access_log_hides_login_tokens_and_secrets() -> None:
    log_filter = RedactingFilter(Redactor(["very-secret-value"]))
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s" %d',
        ("127.0.0.1", "GET", "/login?token=abcdef&next=/x very-secret-value", 303), None,
    )  # fmt: skip
    assert log_filter.filter(record)
    message = record.getMessage()
    assert "abcdef" not in message and "very-secret-value" not in message and "token=***" in message
