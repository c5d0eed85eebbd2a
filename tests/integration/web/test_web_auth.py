"""Every endpoint refuses a missing token (401) and a role too low (403); form posts need a CSRF token."""

from __future__ import annotations

import time

import pytest
from webenv import Env, csrf_of

from crossdock.web.app import create_app
from crossdock.web.settings import WebSettings

#: (method, path, JSON body, lowest role allowed)
API_MUTATIONS = [
    ("POST", "/api/v1/tasks/1/retry", None, "operator"),
    ("POST", "/api/v1/tasks/1/skip", {"reason": "x"}, "operator"),
    ("POST", "/api/v1/tasks/1/finish", None, "operator"),
    ("POST", "/api/v1/tasks/1/fail", None, "operator"),
    ("POST", "/api/v1/tasks/bulk", {"action": "retry", "ids": [1]}, "operator"),
    ("POST", "/api/v1/routes/files/run", None, "operator"),
    ("POST", "/api/v1/routes/files/activate", None, "operator"),
    ("POST", "/api/v1/routes/files/deactivate", None, "operator"),
    ("POST", "/api/v1/webhooks/open-hook", {"sku": "X"}, "operator"),
    ("POST", "/api/v1/tokens", {"role": "viewer", "name": "n"}, "admin"),
    ("DELETE", "/api/v1/tokens/1", None, "admin"),
]
API_READS = [
    "/api/v1/stats",
    "/api/v1/tasks",
    "/api/v1/tasks/1",
    "/api/v1/routes",
    "/api/v1/runs",
    "/api/v1/audit",
    "/api/v1/audit.csv",
    "/metrics",
]
#: (path, form fields besides the CSRF token, lowest role allowed)
FORM_POSTS = [
    ("/tasks/1/action", {"action": "retry"}, "operator"),
    ("/tasks/bulk", {"action": "retry", "ids": "1"}, "operator"),
    ("/routes/files/run", {"part": "incoming"}, "operator"),
    ("/routes/files/active", {"active": "0"}, "operator"),
    ("/logout", {}, "viewer"),
]
BELOW = {"operator": "viewer", "admin": "operator"}


@pytest.mark.parametrize(("method", "path", "body", "role"), API_MUTATIONS)
def test_api_mutations_need_a_token_and_the_role(env: Env, method: str, path: str, body: object, role: str) -> None:
    assert env.client.request(method, path, json=body).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert env.client.request(method, path, json=body, headers=bad).status_code == 401
    low = env.client.request(method, path, json=body, headers=env.auth(BELOW[role]))
    assert low.status_code == 403
    assert role in low.json()["detail"]
    ok = env.client.request(method, path, json=body, headers=env.auth(role))
    assert ok.status_code not in (401, 403)


@pytest.mark.parametrize("path", API_READS)
def test_api_reads_need_a_token(env: Env, path: str) -> None:
    reply = env.client.get(path)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert env.client.get(path, headers={"Authorization": "Basic abc"}).status_code == 401
    assert env.client.get(path, headers=env.auth("viewer")).status_code in (200, 404)


def test_a_session_cookie_does_not_open_the_api(env: Env) -> None:
    """The API takes bearer tokens only, so a cross-site request riding the cookie gets nowhere."""
    env.login("admin")
    assert env.client.get("/api/v1/stats").status_code == 401
    assert env.client.post("/api/v1/routes/files/deactivate").status_code == 401


@pytest.mark.parametrize(("path", "fields", "role"), FORM_POSTS)
def test_form_posts_need_session_role_and_csrf(env: Env, path: str, fields: dict[str, str], role: str) -> None:
    env.run("files")
    env.client.cookies.clear()
    assert env.client.post(path, data=fields, follow_redirects=False).status_code == 401
    if role in BELOW:
        csrf = env.login(BELOW[role])
        low = env.client.post(path, data={**fields, "csrf_token": csrf}, follow_redirects=False)
        assert low.status_code == 403
    csrf = env.login(role)
    missing = env.client.post(path, data=fields, follow_redirects=False)
    assert missing.status_code == 403 and "CSRF" in missing.text
    wrong = env.client.post(path, data={**fields, "csrf_token": "forged"}, follow_redirects=False)
    assert wrong.status_code == 403
    ok = env.client.post(path, data={**fields, "csrf_token": csrf}, follow_redirects=False)
    assert ok.status_code in (200, 303), ok.text


def test_pages_redirect_to_login_without_a_session(env: Env) -> None:
    for path in ("/", "/tasks?status=failed", "/tasks/1", "/routes", "/audit", "/audit.csv"):
        reply = env.client.get(path, follow_redirects=False)
        assert reply.status_code == 303
        assert reply.headers["location"].startswith("/login?next=")
    assert env.client.get("/fragments/monitor").status_code == 401


def test_login_link_sets_a_safe_cookie_and_is_audited(env: Env) -> None:
    reply = env.client.get(f"/login?token={env.tokens['viewer']}&next=/routes", follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/routes"
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "max-age=" in cookie
    assert env.tokens["viewer"] not in reply.headers["set-cookie"]
    assert env.client.get("/routes").status_code == 200
    audit = env.client.get("/api/v1/audit", headers=env.auth("admin")).json()["items"]
    assert audit[0]["action"] == "login" and audit[0]["actor"] == "viewer-token"
    bounced = env.client.get(f"/login?token={env.tokens['viewer']}&next=//evil.example", follow_redirects=False)
    assert bounced.headers["location"] == "/"
    assert env.client.get("/login?token=wrong").status_code == 401


def test_login_form_needs_its_csrf_token(env: Env) -> None:
    page = env.client.get("/login")
    csrf = csrf_of(page.text)
    forged = env.client.post("/login", data={"token": env.tokens["admin"]}, follow_redirects=False)
    assert forged.status_code == 403
    csrf = csrf_of(forged.text)  # every rendering of the form issues a fresh token
    wrong = env.client.post("/login", data={"token": "nope", "csrf_token": csrf}, follow_redirects=False)
    assert wrong.status_code == 401
    stale = env.client.post("/login", data={"token": env.tokens["admin"], "csrf_token": csrf}, follow_redirects=False)
    assert stale.status_code == 403
    csrf = csrf_of(stale.text)
    ok = env.client.post("/login", data={"token": env.tokens["admin"], "csrf_token": csrf}, follow_redirects=False)
    assert ok.status_code == 303
    assert env.client.get("/").status_code == 200


def test_sessions_expire(env: Env) -> None:
    app = create_app(env.project, env.store, settings=WebSettings(session_ttl=3, token_cache_seconds=0))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        client.get(f"/login?token={env.tokens['admin']}")
        assert client.get("/", follow_redirects=False).status_code == 200
        time.sleep(3.5)
        assert client.get("/", follow_redirects=False).status_code == 303


def test_revoking_a_token_ends_its_sessions(env: Env) -> None:
    env.login("operator")
    assert env.client.get("/", follow_redirects=False).status_code == 200
    operator_id = next(t.id for t in env.store.list_tokens() if t.name == "operator-token")
    env.store.revoke_token(operator_id)
    assert env.client.get("/", follow_redirects=False).status_code == 303
    assert env.client.get("/api/v1/stats", headers=env.auth("operator")).status_code == 401


def test_health_can_require_a_token(env: Env) -> None:
    app = create_app(env.project, env.store, settings=WebSettings(health_requires_auth=True))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.get("/api/v1/health").status_code == 401
        assert client.get("/api/v1/health", headers=env.auth("viewer")).status_code == 200


def test_a_viewer_sees_no_action_buttons(env: Env) -> None:
    env.run("to-shop")
    failed_id = env.client.get("/api/v1/tasks", params={"status": "failed"}, headers=env.auth("viewer")).json()[
        "items"
    ][0]["id"]
    env.login("viewer")
    for path in ("/tasks", f"/tasks/{failed_id}", "/routes", "/"):
        html = env.client.get(path).text
        assert 'name="action"' not in html, path
        assert "/run" not in html and 'name="ids"' not in html, path
    env.login("operator")
    html = env.client.get(f"/tasks/{failed_id}").text
    assert 'value="retry"' in html and 'value="skip"' in html and 'value="finish"' not in html
