"""The OpenAPI document is the API's contract: schemathesis (every check) finds nothing against a real server.

The server runs on loopback in a thread, on a throw-away project and database of its own (bulk actions, route
switches and token revocations change it at will). Each operation is called with a token of exactly the role
its ``security`` names, so the spec's roles are checked too; the revocation is pinned to a spare token, so the
run's own tokens survive it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from webenv import HMAC_SECRET, HOOK_SECRET, SHOP_TOKEN, write_project

from crossdock.engine.project import load_project
from crossdock.mock import RunningShop
from crossdock.store import open_store
from crossdock.web.app import create_app
from crossdock.web.auth import ROLES, issue_token
from crossdock.web.settings import WebSettings

pytest.importorskip("schemathesis")

SEED = 20260119
EXAMPLES = 4
BEARER = "bearer"


def serve_in_thread(app: Any) -> Iterator[str]:
    """uvicorn on a free loopback port, in a thread; yields the base URL and stops it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def contract_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shop: RunningShop
) -> Iterator[tuple[str, dict[str, str], int]]:
    """``(base URL, token per role, a spare token's id)`` for a server on its own throw-away project."""
    monkeypatch.setenv("SHOP_URL", shop.url)
    monkeypatch.setenv("SHOP_TOKEN", SHOP_TOKEN)
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("HMAC_SECRET", HMAC_SECRET)
    monkeypatch.delenv("CROSSDOCK_DB", raising=False)
    project = load_project(write_project(tmp_path))
    store = open_store(project.database_url(), base=project.root)
    try:
        tokens = {role: issue_token(store, role, f"{role}-token")[1] for role in ROLES}
        spare, _ = issue_token(store, "viewer", "spare (revoked by the run)")
        # the fuzzer sends wrong tokens on purpose: no 429 for the right ones after them
        settings = WebSettings(token_cache_seconds=0.0, login_failure_burst=0)
        app = create_app(project, store, settings=settings)
        for base in serve_in_thread(app):
            # some tasks in every route the fuzzer can act on
            for route in ("files", "approvals"):
                reply = httpx.post(
                    f"{base}/api/v1/routes/{route}/run",
                    params={"wait": "true"},
                    headers={"Authorization": f"Bearer {tokens['operator']}"},
                )
                assert reply.status_code == 200, reply.text
            yield base, tokens, spare
    finally:
        store.close()


def operations_by_role(spec: dict[str, Any]) -> dict[str, list[str]]:
    """``{role: ["GET /api/v1/tasks", ...]}`` from each operation's bearer security requirement."""
    found: dict[str, list[str]] = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for requirement in operation.get("security", []):
                if BEARER in requirement:
                    found.setdefault(requirement[BEARER][0], []).append(f"{method.upper()} {path}")
    return found


def toml_string(value: str) -> str:
    return json.dumps(value)


#: the operations that take a ``where`` expression over the entity
WHERE_OPERATIONS = ("GET /api/v1/tasks", "GET /api/v1/tasks/export", "POST /api/v1/tasks/bulk")


def contract_config(spec: dict[str, Any], tokens: dict[str, str], spare: int) -> str:
    """A schemathesis.toml: every check, a fixed seed, few examples, each operation with its role's token."""
    lines = [
        f"seed = {SEED}",
        "[generation]",
        f"max-examples = {EXAMPLES}",
        "[auth.openapi.webhook_secret]",
        f"api_key = {toml_string(HOOK_SECRET)}",
    ]
    # operation-level auth takes only basic credentials: the role's token goes in as a header
    for role, names in sorted(operations_by_role(spec).items()):
        lines += [
            "[[operations]]",
            f"include-name = [{', '.join(toml_string(n) for n in sorted(names))}]",
            f"headers = {{ Authorization = {toml_string('Bearer ' + tokens[role])} }}",
        ]
    lines += [
        "[[operations]]",
        'include-name = "DELETE /api/v1/tokens/{token_id}"',
        f"parameters = {{ token_id = {spare} }}",
        # `where` is an expression whose grammar no JSON schema can hold: a string that does not parse is the
        # documented 400 (with where it went wrong), not a schema-valid request the server failed to accept
        "[[operations]]",
        f"include-name = [{', '.join(toml_string(n) for n in WHERE_OPERATIONS)}]",
        'checks.positive_data_acceptance.expected-statuses = ["2XX", "3XX", 400, 401, 403, 404, 409, 429, "5XX"]',
        # an edit's paths must exist in that task's entity (400) and the edited entity must pass the route's checks
        # (422 with the diff): both depend on the stored task, which no schema knows
        "[[operations]]",
        'include-name = "POST /api/v1/tasks/{task_id}/edit"',
        'checks.positive_data_acceptance.expected-statuses = ["2XX", "3XX", 400, 401, 403, 404, 409, 422, 429, "5XX"]',
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_schemathesis_finds_nothing(contract_server: tuple[str, dict[str, str], int], tmp_path: Path) -> None:
    base, tokens, spare = contract_server
    spec = httpx.get(f"{base}/api/openapi.json").json()
    config = tmp_path / "schemathesis.toml"
    config.write_text(contract_config(spec, tokens, spare))
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{base}/api/openapi.json",
        "--checks",
        "all",
        "--workers",
        "2",
        "--generation-database",
        "none",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
