"""Alerts in the API and the dashboard: the channels with secrets masked, a test message, the message list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from webenv import csrf_of

from alert_receivers import HookSink, hook_sink
from crossdock.engine.project import load_project
from crossdock.store import open_store
from crossdock.web.app import create_app
from crossdock.web.auth import issue_token
from crossdock.web.settings import WebSettings

__all__ = ["hook_sink"]

SLACK_URL = "https://hooks.slack.example/services/T000/B000/very-secret-path-123"
SMTP_PASSWORD = "smtp-pass-w0rd-xyz"


@pytest.fixture
def web(tmp_path: Path, hook_sink: HookSink) -> Iterator[tuple[TestClient, dict[str, str]]]:
    (tmp_path / "in.ndjson").write_text("")
    (tmp_path / "crossdock.yaml").write_text(
        "database: sqlite:///web.db\n"
        "routes:\n"
        "  r:\n    incoming: {source: {type: file, path: in.ndjson}}\n    identifier: sku\n"
        "    outgoing: {target: {type: noop}}\n"
        "alerts:\n  channels:\n"
        f"    hook: {{type: webhook, url: '{hook_sink.url}'}}\n"
        f"    chat: {{type: slack, url: '{SLACK_URL}'}}\n"
        "    mail: {type: email, host: 127.0.0.1, port: 9, security: none, username: ops,"
        f" password: {SMTP_PASSWORD}, from: a@example.com, to: ops@example.com}}\n"
        "  rules:\n"
        "    - {name: failures, event: task_failed, routes: [r], digest: 5m, channels: [hook, chat]}\n"
        "    - {event: backlog, older_than: 30m, channels: [mail]}\n"
    )
    project = load_project(tmp_path / "crossdock.yaml")
    store = open_store(project.database_url(), base=project.root)
    tokens = {role: issue_token(store, role, f"{role}-token")[1] for role in ("viewer", "operator")}
    app = create_app(project, store, settings=WebSettings(token_cache_seconds=0.0))
    try:
        with TestClient(app) as client:
            yield client, tokens
    finally:
        store.close()


def bearer(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def test_alert_config_masks_every_secret(web: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = web
    reply = client.get("/api/v1/alerts/config", headers=bearer(tokens, "viewer"))
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert [(c["name"], c["type"]) for c in data["channels"]] == [
        ("chat", "slack"),
        ("hook", "webhook"),
        ("mail", "email"),
    ]
    assert [r["name"] for r in data["rules"]] == ["failures", "backlog#2"]
    assert data["rules"][0]["digest_s"] == 300 and data["rules"][1]["older_than_s"] == 1800
    assert SLACK_URL not in reply.text and "very-secret-path" not in reply.text
    assert SMTP_PASSWORD not in reply.text


def test_a_test_message_is_sent_listed_and_audited(web: tuple[TestClient, dict[str, str]], hook_sink: HookSink) -> None:
    client, tokens = web
    assert (
        client.post("/api/v1/alerts/test", json={"channel": "hook"}, headers=bearer(tokens, "viewer")).status_code
        == 403
    )
    assert (
        client.post("/api/v1/alerts/test", json={"channel": "nope"}, headers=bearer(tokens, "operator")).status_code
        == 404
    )
    reply = client.post("/api/v1/alerts/test", json={"channel": "hook"}, headers=bearer(tokens, "operator"))
    assert reply.status_code == 200, reply.text
    assert reply.json() == [{"channel": "hook", "sent": True, "error": None}]
    [body] = hook_sink.bodies()
    assert body["event"] == "test" and body["subject"] == "[crossdock] Test message"
    # the email channel points at a closed port: the answer says why, with the password nowhere
    reply = client.post("/api/v1/alerts/test", json={"channel": "mail"}, headers=bearer(tokens, "operator"))
    [result] = reply.json()
    assert result["sent"] is False and "127.0.0.1:9" in result["error"]

    listed = client.get("/api/v1/alerts", headers=bearer(tokens, "viewer")).json()
    assert [(a["channel"], a["status"]) for a in listed["items"]] == [("mail", "failed"), ("hook", "sent")]
    assert listed["next_cursor"] is None
    page = client.get("/api/v1/alerts", params={"limit": 1}, headers=bearer(tokens, "viewer")).json()
    assert len(page["items"]) == 1 and page["next_cursor"] is not None
    older = client.get(
        "/api/v1/alerts", params={"limit": 1, "cursor": page["next_cursor"]}, headers=bearer(tokens, "viewer")
    ).json()
    assert [a["channel"] for a in older["items"]] == ["hook"]
    assert [
        a["channel"]
        for a in client.get("/api/v1/alerts", params={"status": "sent"}, headers=bearer(tokens, "viewer")).json()[
            "items"
        ]
    ] == ["hook"]
    reply = client.get("/api/v1/audit", params={"action": "alerts.test"}, headers=bearer(tokens, "viewer"))
    assert reply.status_code == 200, (reply.status_code, reply.text)
    audit = reply.json()
    assert [(e["actor"], e["target"]) for e in audit["items"]] == [
        ("operator-token", {"channels": ["mail"]}),
        ("operator-token", {"channels": ["hook"]}),
    ]


def test_openapi_describes_the_alert_endpoints(web: tuple[TestClient, dict[str, str]]) -> None:
    client, _tokens = web
    spec = client.get("/api/openapi.json").json()
    listing = spec["paths"]["/api/v1/alerts"]["get"]
    schema = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/AlertPage")
    assert "AlertOut" in spec["components"]["schemas"]
    assert {p["name"] for p in listing["parameters"]} >= {"status", "route", "limit", "cursor"}
    assert "/api/v1/alerts/test" in spec["paths"] and "/api/v1/alerts/config" in spec["paths"]


def test_the_alerts_page_lists_channels_and_messages_and_sends_a_test(
    web: tuple[TestClient, dict[str, str]], hook_sink: HookSink
) -> None:
    client, tokens = web
    assert client.get(f"/login?token={tokens['operator']}", follow_redirects=False).status_code == 303
    html = client.get("/alerts").text
    assert 'data-testid="alert-channels"' in html and "incoming webhook" in html
    assert SLACK_URL not in html and SMTP_PASSWORD not in html
    assert "No message was queued yet" in html
    reply = client.post("/alerts/test", data={"channel": "hook", "csrf_token": csrf_of(html)}, follow_redirects=True)
    assert reply.status_code == 200
    assert "Test message sent to hook." in reply.text
    assert len(hook_sink.requests) == 1
    html = client.get("/alerts", params={"status": "sent"}).text
    assert "[crossdock] Test message" in html and 'class="badge alert-sent"' in html
