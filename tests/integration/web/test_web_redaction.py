"""A target that echoes the request's Authorization header into its error body must not leak the basic-auth
password anywhere a person can read: task error and log, API, dashboard, server log, CLI.

The password, its base64 and base64("user:password") (what the ``Basic`` header carries) are checked in every
one of those places after a failed (400) and a retried (500) delivery.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from crossdock.cli import app as cli_app
from crossdock.engine.project import load_project
from crossdock.store import Store, open_store
from crossdock.web.app import create_app
from crossdock.web.auth import issue_token
from crossdock.web.settings import WebSettings
from loopback import Loopback, RawRequest, http_answer, loopback_target

USER = "user"
PASSWORD = "a-planted-secret-pw"


def b64(text: str, *, urlsafe: bool = False) -> str:
    raw = text.encode()
    return (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()


#: every form of the password that must never show
FORBIDDEN = {
    "password": PASSWORD,
    "base64(password)": b64(PASSWORD).rstrip("="),
    "base64url(password)": b64(PASSWORD, urlsafe=True).rstrip("="),
    "base64(user:password)": b64(f"{USER}:{PASSWORD}").rstrip("="),
}

CONFIG = """\
database: sqlite:///redact.db
connections:
  echo:
    type: http
    base_url: "${ECHO_URL}"
    auth: {type: basic, username: user, password: "${ECHO_PASSWORD}"}
    request_log: full
routes:
  to-echo:
    incoming: {source: {type: file, path: items.ndjson}}
    identifier: sku
    outgoing:
      target: {type: http, connection: echo, method: PUT, path: "/items/{sku}"}
    retry: {max_attempts: 3, backoff: 1h}
"""


def echo(request: RawRequest) -> bytes:
    """A badly behaved target: its error body repeats what it was sent, credentials included."""
    header = request.header("Authorization")
    encoded = header.removeprefix("Basic ")
    decoded = base64.b64decode(encoded).decode()
    body = {
        "error": "refused",
        "you_sent": {"authorization": header, "url": f"http://{request.header('Host')}{request.target}"},
        "decoded": decoded,
        "password_base64": b64(decoded.split(":", 1)[1]),
        "password_quoted": quote(decoded.split(":", 1)[1]),
    }
    text = orjson.dumps(body) + f"\nAuthorization: {header}\n".encode()
    return http_answer(500 if request.target.endswith("/B") else 400, text)


@dataclass
class Setup:
    root: Path
    store: Store
    client: TestClient
    viewer: dict[str, str]
    viewer_token: str
    target: Loopback


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[Setup]:
    caplog.set_level(logging.DEBUG)
    with loopback_target(echo) as target:
        monkeypatch.setenv("ECHO_URL", target.url)
        monkeypatch.setenv("ECHO_PASSWORD", PASSWORD)
        monkeypatch.delenv("CROSSDOCK_DB", raising=False)
        (tmp_path / "crossdock.yaml").write_text(CONFIG)
        (tmp_path / "items.ndjson").write_text('{"sku": "A", "n": 1}\n{"sku": "B", "n": 2}\n')
        project = load_project(tmp_path / "crossdock.yaml")
        store = open_store(project.database_url(), base=project.root)
        tokens = {role: issue_token(store, role, role)[1] for role in ("viewer", "operator")}
        app = create_app(project, store, settings=WebSettings(token_cache_seconds=0.0))
        try:
            with TestClient(app) as client:
                ran = client.post(
                    "/api/v1/routes/to-echo/run",
                    params={"wait": "true"},
                    headers={"Authorization": f"Bearer {tokens['operator']}"},
                )
                assert ran.status_code == 200, ran.text
                yield Setup(
                    tmp_path,
                    store,
                    client,
                    {"Authorization": f"Bearer {tokens['viewer']}"},
                    tokens["viewer"],
                    target,
                )
        finally:
            store.close()


def assert_clean(where: str, text: str) -> None:
    for name, form in FORBIDDEN.items():
        assert form not in text, f"{name} shows in {where}"


def test_an_echoed_basic_auth_header_leaks_nowhere(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    # the target did get the credentials and did echo them
    assert setup.target.requests and setup.target.requests[0].header("Authorization").startswith("Basic ")
    tasks = setup.client.get("/api/v1/tasks", headers=setup.viewer)
    assert tasks.status_code == 200
    by_id = {t["identifier"]: t for t in tasks.json()["items"]}
    assert by_id["A"]["status"] == "failed" and by_id["B"]["status"] == "retry"
    assert_clean("GET /api/v1/tasks", tasks.text)
    for sku in ("A", "B"):
        task_id = by_id[sku]["id"]
        error = by_id[sku]["error"]
        assert "refused" in error and "answered" in error  # the echo was read, and masked
        detail = setup.client.get(f"/api/v1/tasks/{task_id}", headers=setup.viewer)
        assert detail.status_code == 200
        assert_clean(f"GET /api/v1/tasks/{task_id}", detail.text)
        download = setup.client.get(f"/api/v1/tasks/{task_id}/entity", headers=setup.viewer)
        assert download.status_code == 200 and download.json() == {"sku": sku, "n": ord(sku) - ord("A") + 1}
        # the task log as stored (what every reader of the history gets)
        stored = setup.store.get_task(task_id)
        assert stored is not None
        assert_clean("the stored task error", stored.error or "")
        logs = setup.store.task_logs(task_id)
        assert any("response" in line.details for line in logs)
        assert_clean("the task log", orjson.dumps([line.to_json() for line in logs]).decode())
        assert_clean("the task log details", orjson.dumps([line.details for line in logs]).decode())
        # the dashboard, as a viewer
        setup.client.cookies.clear()
        login = setup.client.get(f"/login?token={setup.viewer_token}", follow_redirects=False)
        assert login.status_code == 303
        page = setup.client.get(f"/tasks/{task_id}")
        assert page.status_code == 200 and "refused" in page.text
        assert_clean(f"the dashboard page of task {task_id}", page.text)
        assert_clean("the dashboard task list", setup.client.get("/tasks").text)
        # the CLI, reading the same database
        config = str(setup.root / "crossdock.yaml")
        for args in (["tasks", "show", str(task_id), "--json"], ["tasks", "show", str(task_id)]):
            shown = CliRunner().invoke(cli_app, [*args, "-c", config])
            assert shown.exit_code == 0, shown.output
            assert "refused" in shown.output
            assert_clean(f"crossdock {' '.join(args)}", shown.output)
    for args in (["tasks", "list"], ["tasks", "list", "--json"]):
        listed = CliRunner().invoke(cli_app, [*args, "-c", str(setup.root / "crossdock.yaml")])
        assert listed.exit_code == 0, listed.output
        assert_clean(f"crossdock {' '.join(args)}", listed.output)
    # the server's own log output: the request log (full bodies), the exporter, uvicorn's access log
    records = caplog.get_records("setup") + caplog.get_records("call")  # the delivery ran in the fixture
    server_log = "\n".join(logging.Formatter().format(record) for record in records)
    assert "response body" in server_log and "Basic ***" in server_log
    assert_clean("the server log", server_log)
