"""Failed logins: 429 per client address after a burst, and a throttled audit row with the address and path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from webenv import HMAC_SECRET, Env, csrf_of

from crossdock.web.app import create_app
from crossdock.web.login_limits import LoginLimiter
from crossdock.web.settings import WebSettings

WRONG = {"Authorization": "Bearer not-a-real-token"}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(env: Env) -> Clock:
    fake = Clock()
    limiter(env).clock = fake
    return fake


def limiter(env: Env) -> LoginLimiter:
    found: LoginLimiter = env.client.app.state.login_limiter  # type: ignore[attr-defined]
    return found


@pytest.fixture
def elsewhere(env: Env) -> Iterator[TestClient]:
    """The same app seen from another client address."""
    with TestClient(env.client.app, client=("203.0.113.7", 40000)) as client:
        yield client


def failed_rows(env: Env) -> list[dict[str, Any]]:
    items = env.client.get("/api/v1/audit", params={"limit": 500}, headers=env.auth("admin")).json()["items"]
    return [e for e in items if e["action"] == "login.failed"]


def test_300_wrong_tokens_get_429_and_a_good_token_still_works(env: Env, elsewhere: TestClient) -> None:
    started = time.monotonic()
    codes = [env.client.get("/api/v1/stats", headers=WRONG) for _ in range(300)]
    elapsed = time.monotonic() - started
    unauthorized = [r for r in codes if r.status_code == 401]
    limited = [r for r in codes if r.status_code == 429]
    assert len(unauthorized) + len(limited) == 300
    # a burst of 10, then about one a second
    assert 10 <= len(unauthorized) <= 10 + int(elapsed) + 1, (len(unauthorized), elapsed)
    assert codes[10].status_code == 429
    for reply in limited:
        assert 1 <= int(reply.headers["retry-after"]) <= 2
        assert "too many failed logins" in reply.json()["detail"]
    # another address is not affected, with a good token or a bad one
    assert elsewhere.get("/api/v1/stats", headers=env.auth("viewer")).status_code == 200
    assert elsewhere.get("/api/v1/stats", headers=WRONG).status_code == 401
    # requests without a token are not login attempts: they are answered as before
    assert env.client.get("/api/v1/stats").status_code == 401
    assert env.client.get("/api/v1/health").status_code == 200


def test_a_limited_address_may_try_again_after_retry_after(env: Env, clock: Clock) -> None:
    for _ in range(10):
        assert env.client.get("/api/v1/tasks", headers=WRONG).status_code == 401
    refused = env.client.get("/api/v1/tasks", headers=env.auth("viewer"))
    assert refused.status_code == 429, "a limited address is refused before its token is looked at"
    assert refused.headers["retry-after"] == "1"
    clock.now += 1
    assert env.client.get("/api/v1/tasks", headers=env.auth("viewer")).status_code == 200
    assert env.client.get("/api/v1/tasks", headers=WRONG).status_code == 401
    assert env.client.get("/api/v1/tasks", headers=WRONG).status_code == 429
    clock.now += 5
    assert env.client.get("/metrics", headers=env.auth("viewer")).status_code == 200


def test_refused_attempts_do_not_extend_the_wait(env: Env, clock: Clock) -> None:
    for _ in range(10):
        env.client.get("/api/v1/stats", headers=WRONG)
    for _ in range(50):
        assert env.client.get("/api/v1/stats", headers=WRONG).status_code == 429
    clock.now += 1
    assert env.client.get("/api/v1/stats", headers=env.auth("viewer")).status_code == 200


def test_the_login_link_and_form_are_limited_with_a_page(env: Env, clock: Clock) -> None:
    for _ in range(5):
        assert env.client.get("/login?token=wrong-one").status_code == 401
    csrf = csrf_of(env.client.get("/login").text)
    for _ in range(5):
        reply = env.client.post("/login", data={"token": "nope", "csrf_token": csrf}, follow_redirects=False)
        assert reply.status_code == 401
        csrf = csrf_of(reply.text)
    page = env.client.get(f"/login?token={env.tokens['viewer']}", follow_redirects=False)
    assert page.status_code == 429
    assert page.headers["retry-after"] == "1"
    assert "text/html" in page.headers["content-type"]
    assert "Too many attempts" in page.text and "try again in 1 s" in page.text
    assert page.headers["x-frame-options"] == "DENY", "429 pages carry the security headers"
    form = env.client.post("/login", data={"token": env.tokens["viewer"], "csrf_token": csrf}, follow_redirects=False)
    assert form.status_code == 429
    # the plain form (no token presented) still opens
    assert env.client.get("/login").status_code == 200
    clock.now += 2
    assert env.client.get(f"/login?token={env.tokens['viewer']}", follow_redirects=False).status_code == 303


def test_a_failed_login_link_is_audited_with_address_and_path_but_not_the_token(env: Env) -> None:
    presented = "leaked-guess-Q7xZ"
    assert env.client.get(f"/login?token={presented}").status_code == 401
    [row] = failed_rows(env)
    assert row["actor"] == "anonymous"
    assert row["target"] == {"client": "testclient", "paths": ["GET /login"], "failures": 1, "rate_limited": 0}
    assert row["detail"] == "unknown or revoked token"
    assert presented not in env.client.get("/api/v1/audit.csv", headers=env.auth("admin")).text


def test_a_failed_login_form_and_bearer_token_are_audited_once_each(env: Env, clock: Clock) -> None:
    csrf = csrf_of(env.client.get("/login").text)
    assert env.client.post("/login", data={"token": "nope", "csrf_token": csrf}).status_code == 401
    clock.now += 1
    assert env.client.get("/api/v1/routes", headers=WRONG).status_code == 401
    rows = failed_rows(env)
    assert [r["target"]["paths"] for r in rows] == [["GET /api/v1/routes"], ["POST /login"]]
    assert "not-a-real-token" not in str(rows)


def test_a_flood_writes_about_one_audit_row_a_second_with_counts(env: Env) -> None:
    app = create_app(env.project, env.store, settings=WebSettings(token_cache_seconds=0, failed_login_audit_every=0.3))
    with TestClient(app) as client:
        started = time.monotonic()
        for _ in range(300):
            client.get("/login?token=wrong")
        elapsed = time.monotonic() - started
        time.sleep(0.8)  # the last held failures are written when their interval ends
    rows = failed_rows(env)
    assert sum(r["target"]["failures"] for r in rows) == 300, "every attempt is counted in some row"
    assert len(rows) <= elapsed / 0.3 + 2, (len(rows), elapsed)
    assert sum(r["target"]["rate_limited"] for r in rows) >= 250
    assert {r["target"]["client"] for r in rows} == {"testclient"}
    counted = [r for r in rows if r["target"]["failures"] > 1]
    assert counted and "failed login attempts from testclient" in counted[0]["detail"]


def test_wrong_webhook_signatures_and_missing_tokens_are_not_failed_logins(env: Env) -> None:
    for _ in range(30):
        signed = env.client.post("/api/v1/webhooks/signed", content=b'{"sku": "1"}', headers={"X-Signature": "00"})
        assert signed.status_code == 401
        assert env.client.get("/api/v1/tasks").status_code == 401
    assert env.client.get("/api/v1/tasks", headers=WRONG).status_code == 401
    assert HMAC_SECRET  # the signed route is configured with it
    assert len(failed_rows(env)) == 1


def test_the_limit_can_be_turned_off(env: Env) -> None:
    app = create_app(env.project, env.store, settings=WebSettings(token_cache_seconds=0, login_failure_burst=0))
    with TestClient(app) as client:
        assert {client.get("/api/v1/stats", headers=WRONG).status_code for _ in range(30)} == {401}


def test_the_openapi_declares_429_on_api_routes(env: Env) -> None:
    paths = env.client.get("/api/openapi.json").json()["paths"]
    assert "429" in paths["/api/v1/tasks"]["get"]["responses"]
    assert "Retry-After" in paths["/api/v1/tasks"]["get"]["responses"]["429"]["headers"]
    assert "429" in paths["/api/v1/tokens"]["post"]["responses"]


# --- the limiter on its own --------------------------------------------------------------------------


def test_the_limiter_forgets_the_least_recently_seen_addresses() -> None:
    clock = Clock()
    limits = LoginLimiter(burst=2, per_second=1, max_addresses=3, clock=clock)
    for address in ("a", "b", "c", "d"):
        limits.failed(address, "GET /login", refused=False)
        limits.failed(address, "GET /login", refused=False)
    assert limits.retry_after("d") == 1
    assert limits.retry_after("a") is None, "forgotten: bounded memory"
    assert len(limits._addresses) == 3


def test_the_limiter_is_thread_safe() -> None:
    clock = Clock()
    limits = LoginLimiter(burst=800, per_second=1, audit_every=1000, clock=clock)
    go = threading.Barrier(8)
    rows: list[int] = []

    def work() -> None:
        go.wait()
        for _ in range(100):
            row = limits.failed("x", "GET /login", refused=False)
            if row is not None:
                rows.append(row.failures)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert rows == [1]
    assert limits.retry_after("x") == 1, "all 800 failures were taken from the bucket"
    clock.now += 2000
    row = limits.flush("x")
    assert row is not None and row.failures == 799


def test_an_audit_row_lists_at_most_ten_paths() -> None:
    limits = LoginLimiter(clock=Clock())
    limits.failed("a", "GET /api/v1/tasks/0", refused=False)
    for i in range(1, 50):
        limits.failed("a", f"GET /api/v1/tasks/{i}" + "x" * 500, refused=False)
    limits.clock.now += 1  # type: ignore[attr-defined]
    row = limits.flush("a")
    assert row is not None and row.failures == 49
    assert len(row.paths) == 10 and all(len(p) == 200 for p in row.paths)


def test_a_rate_of_zero_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="login_failure_rate must be above 0"):
        LoginLimiter(per_second=0)
    assert not LoginLimiter(burst=0, per_second=0).enabled
