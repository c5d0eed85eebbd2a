"""``crossdock check --db URL`` never prints the URL's password: unreachable server, refused login, broken URL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from crossdock.cli import app
from crossdock.scaffold import write_project

PASSWORD = "PLANTED-db-PASSWORD-77"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path)
    return tmp_path / "crossdock.yaml"


@pytest.fixture(autouse=True)
def quick_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The pool waits 10 s for a server that is not there; 1 s proves the same."""
    from crossdock.store.postgres import store

    defaults = store.PostgresStore.__init__.__kwdefaults__ or {}
    if "timeout" in defaults:
        monkeypatch.setitem(defaults, "timeout", 1.0)
    yield


def refused_login_url() -> str:
    from postgres_support import server_url

    server = urlsplit(server_url())
    return f"postgresql://crossdock_no_such_role:{PASSWORD}@{server.hostname}:{server.port or 5432}/postgres"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{PASSWORD}@127.0.0.1:1/x",
        f"postgresql://u:{PASSWORD}@127.0.0.1:1/x?sslmode=bogus",
        f"postgresql://u:{PASSWORD.replace('-', ' ')}@[::1/x",
        "refused-login",
    ],
    ids=["unreachable", "bad-option", "unparsable", "refused-login"],
)
@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_check_never_prints_the_database_password(
    project: Path, url: str, json_out: bool, caplog: pytest.LogCaptureFixture
) -> None:
    url = refused_login_url() if url == "refused-login" else url
    caplog.set_level(logging.WARNING)
    args = ["check", "-c", str(project), "--db", url, *(["--json"] if json_out else [])]
    result = CliRunner().invoke(app, args)
    shown = result.output + "\n".join(r.getMessage() for r in caplog.records)
    assert result.exit_code == 2, shown
    assert "cannot open the database" in shown  # it did report the failure
    assert "***@" in shown  # with the URL, its password masked
    for secret in (PASSWORD, PASSWORD.replace("-", " ")):
        assert secret not in shown


@pytest.mark.parametrize(
    "url",
    [f"postgresql://u:{PASSWORD}@127.0.0.1:1/x", f"postgresql://u:{PASSWORD.replace('-', ' ')}@[::1/x"],
    ids=["unreachable", "unparsable"],
)
def test_db_upgrade_never_prints_the_database_password(
    project: Path, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    result = CliRunner().invoke(app, ["db", "upgrade", "-c", str(project), "--db", url])
    shown = result.output + "\n".join(r.getMessage() for r in caplog.records)
    assert result.exit_code == 1 and "cannot connect" in shown, shown
    for secret in (PASSWORD, PASSWORD.replace("-", " ")):
        assert secret not in shown


def test_service_logs_lose_the_projects_secrets_and_any_url_password(capsys: pytest.CaptureFixture[str]) -> None:
    """serve/worker log through one handler: a driver's warning quoting a connection string is masked there."""
    from crossdock.logs import configure_logging, redact_logs_with
    from crossdock.redact import NO_SECRETS, Redactor, url_secrets

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("text")
        pool = logging.getLogger("psycopg.pool")
        pool.error("error connecting: %s", OSError(f"cannot use postgresql://u:{PASSWORD}@db/x"))
        redact_logs_with(Redactor(url_secrets(f"postgresql://u:{PASSWORD}@db/x")))
        pool.error("error connecting: %s", OSError(f'unexpected spaces found in "{PASSWORD}"'))
    finally:
        redact_logs_with(NO_SECRETS)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "postgresql://u:***@db/x" in err and 'unexpected spaces found in "***"' in err
    assert PASSWORD not in err
