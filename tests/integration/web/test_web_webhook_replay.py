"""Webhook replay protection: signed timestamps (``timestamp_tolerance``) and ``Idempotency-Key`` answers."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from crossdock.connectors.webhook import WebhookSourceOptions, sign_timestamped
from crossdock.engine.project import Project, load_project
from crossdock.errors import CrossdockError
from crossdock.store import Store, TaskFilter, open_store
from crossdock.store.sqlite.store import SQLiteStore
from crossdock.web.app import create_app
from crossdock.web.settings import WebSettings

KEY = "stamp-signing-key-789"
SECRET = "keyed-shared-secret-1"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

CONFIG = """\
database: sqlite:///hooks.db
routes:
  stamped:
    incoming:
      source:
        type: webhook
        hmac_secret: "${STAMP_KEY}"
        signature_header: X-Signature
        timestamp_tolerance: 5m
        idempotency_window: 1h
    identifier: sku
    outgoing:
      target: {type: noop}
  keyed:
    incoming:
      source: {type: webhook, secret: "${KEYED_SECRET}", idempotency_window: 24h}
    identifier: sku
    outgoing:
      target: {type: noop}
  unkeyed:
    incoming:
      source: {type: webhook, secret: "${KEYED_SECRET}"}
    identifier: sku
    outgoing:
      target: {type: noop}
"""


@dataclass
class Hooks:
    project: Project
    store: Store
    app: FastAPI
    client: TestClient
    clock: list[datetime]

    def advance(self, seconds: float) -> None:
        self.clock[0] += timedelta(seconds=seconds)

    def stamped(self, body: bytes, *, at: float = 0.0, headers: dict[str, str] | None = None) -> Any:
        """POST to the timestamped webhook, signed ``at`` seconds from the server's clock."""
        signature = sign_timestamped(KEY, body, int(self.clock[0].timestamp() + at))
        return self.client.post(
            "/api/v1/webhooks/stamped", content=body, headers={"X-Signature": signature, **(headers or {})}
        )

    def keyed(self, body: bytes, key: str | None, client: TestClient | None = None) -> Any:
        headers = {"X-Crossdock-Secret": SECRET, **({"Idempotency-Key": key} if key is not None else {})}
        return (client or self.client).post("/api/v1/webhooks/keyed", content=body, headers=headers)

    def total(self) -> int:
        return int(self.store.stats().total)

    def latest(self, sku: str) -> Any:
        """The entity of the newest task of ``sku``: what would be delivered."""
        tasks, _next = self.store.list_tasks(TaskFilter(identifier=sku), limit=1)
        return tasks[0].entity


def app_with_clock(project: Project, store: Store, clock: list[datetime]) -> FastAPI:
    app = create_app(project, store, settings=WebSettings(token_cache_seconds=0.0))
    app.state.ctx.now = lambda: clock[0]
    return app


@pytest.fixture
def hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooks]:
    monkeypatch.setenv("STAMP_KEY", KEY)
    monkeypatch.setenv("KEYED_SECRET", SECRET)
    monkeypatch.delenv("CROSSDOCK_DB", raising=False)
    (tmp_path / "crossdock.yaml").write_text(CONFIG)
    project = load_project(tmp_path / "crossdock.yaml")
    store = open_store(project.database_url(), base=project.root)
    clock = [T0]
    app = app_with_clock(project, store, clock)
    try:
        with TestClient(app) as client:
            yield Hooks(project, store, app, client, clock)
    finally:
        store.close()


# --- signed timestamps -----------------------------------------------------------------------------


def test_a_fresh_signed_timestamp_is_accepted(hooks: Hooks) -> None:
    reply = hooks.stamped(b'{"sku": "A", "price": 1}')
    assert reply.status_code == 202, reply.text
    assert len(reply.json()["tasks"]) == 1
    # inside the window either way (clock skew)
    assert hooks.stamped(b'{"sku": "B"}', at=-299).status_code == 202
    assert hooks.stamped(b'{"sku": "C"}', at=299).status_code == 202
    assert hooks.total() == 3


def test_a_replayed_signed_body_outside_the_window_is_401_and_cannot_supersede(hooks: Hooks) -> None:
    """The reported bug: an old, correctly signed price sent again later replaced the newer one."""
    old_body = b'{"sku": "P-1", "price": 10}'
    captured = sign_timestamped(KEY, old_body, int(hooks.clock[0].timestamp()))
    assert (
        hooks.client.post("/api/v1/webhooks/stamped", content=old_body, headers={"X-Signature": captured}).status_code
        == 202
    )
    hooks.advance(60)
    assert hooks.stamped(b'{"sku": "P-1", "price": 12}').status_code == 202
    hooks.advance(300)  # the first signature is now 360 s old
    replay = hooks.client.post("/api/v1/webhooks/stamped", content=old_body, headers={"X-Signature": captured})
    assert replay.status_code == 401
    detail = replay.json()["detail"]
    assert "360 s old" in detail and "timestamp_tolerance" in detail and "300 s" in detail
    assert hooks.latest("P-1") == {"sku": "P-1", "price": 12}
    assert hooks.total() == 2


def test_a_timestamp_too_far_in_the_future_is_401(hooks: Hooks) -> None:
    reply = hooks.stamped(b'{"sku": "F"}', at=301)
    assert reply.status_code == 401
    assert "in the future" in reply.json()["detail"]
    assert hooks.total() == 0


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "t=<unix seconds>,v1="),
        ("{sig}", "t=<unix seconds>,v1="),  # the plain body HMAC is not enough once timestamps are on
        ("t={t}", "t=<unix seconds>,v1="),
        ("v1={sig}", "t=<unix seconds>,v1="),
        ("t=soon,v1={sig}", "not a unix time"),
        ("t={t},v1=" + "0" * 64, "wrong HMAC-SHA256 signature"),
        ("t={t},v1={other}", "wrong HMAC-SHA256 signature"),
    ],
)
def test_bad_signatures_are_401_and_create_nothing(hooks: Hooks, header: str, reason: str) -> None:
    body = b'{"sku": "X"}'
    t = int(hooks.clock[0].timestamp())
    values = {
        "t": t,
        "sig": hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest(),
        "other": sign_timestamped("another-signing-key", body, t).split("v1=")[1],
    }
    reply = hooks.client.post(
        "/api/v1/webhooks/stamped", content=body, headers={"X-Signature": header.format(**values)}
    )
    assert reply.status_code == 401
    assert reason in reply.json()["detail"]
    assert "X-Signature" in reply.json()["detail"]
    assert KEY not in reply.text
    assert hooks.total() == 0


def test_a_signature_of_another_timestamp_is_401(hooks: Hooks) -> None:
    """The timestamp is part of what is signed: moving ``t`` forward breaks the signature."""
    body = b'{"sku": "M"}'
    old = sign_timestamped(KEY, body, int(hooks.clock[0].timestamp()) - 3600)
    moved = "t=" + str(int(hooks.clock[0].timestamp())) + "," + old.split(",")[1]
    reply = hooks.client.post("/api/v1/webhooks/stamped", content=body, headers={"X-Signature": moved})
    assert reply.status_code == 401 and "wrong HMAC-SHA256 signature" in reply.json()["detail"]


def test_several_v1_values_are_accepted_for_secret_rotation(hooks: Hooks) -> None:
    body = b'{"sku": "R"}'
    t = int(hooks.clock[0].timestamp())
    good = sign_timestamped(KEY, body, t).split("v1=")[1]
    old = sign_timestamped("retired-signing-key", body, t).split("v1=")[1]
    header = f"t={t}, v1={old}, v1={good.upper()}, v0=ignored"
    reply = hooks.client.post("/api/v1/webhooks/stamped", content=body, headers={"X-Signature": header})
    assert reply.status_code == 202, reply.text
    too_many = f"t={t}," + ",".join(f"v1={old}" for _ in range(8)) + f",v1={good}"
    refused = hooks.client.post("/api/v1/webhooks/stamped", content=body, headers={"X-Signature": too_many})
    assert refused.status_code == 401 and "at most 8" in refused.json()["detail"]


def test_the_size_limit_comes_before_the_signature(hooks: Hooks) -> None:
    body = b'{"sku": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert hooks.stamped(body).status_code == 413


def test_timestamp_tolerance_needs_hmac_secret() -> None:
    with pytest.raises(ValueError, match="timestamp_tolerance needs hmac_secret"):
        WebhookSourceOptions(secret="shared-secret", timestamp_tolerance=300)
    with pytest.raises(ValueError, match="between 1s and 24h"):
        WebhookSourceOptions(hmac_secret="signing-key", timestamp_tolerance=0)
    with pytest.raises(ValueError, match="idempotency_window must be between"):
        WebhookSourceOptions(secret="shared-secret", idempotency_window=90 * 86400)
    options = WebhookSourceOptions.model_validate({"hmac_secret": "signing-key", "timestamp_tolerance": "5m"})
    assert options.timestamp_tolerance == 300


def test_a_config_error_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "crossdock.yaml").write_text(
        "routes:\n  r:\n    incoming:\n"
        "      source: {type: webhook, secret: long-enough-secret, timestamp_tolerance: 5m}\n"
        "    identifier: sku\n    outgoing:\n      target: {type: noop}\n"
    )
    with pytest.raises(CrossdockError, match=r"routes\.r\.incoming\.source: timestamp_tolerance needs hmac_secret"):
        load_project(tmp_path / "crossdock.yaml")


# --- Idempotency-Key -------------------------------------------------------------------------------


def test_the_same_idempotency_key_twice_imports_once_and_answers_the_same(hooks: Hooks) -> None:
    body = b'[{"sku": "K-1", "price": 5}, {"sku": "K-2", "price": 6}]'
    first = hooks.keyed(body, "order-42")
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    assert len(first.json()["tasks"]) == 2
    hooks.advance(1800)
    again = hooks.keyed(body, "order-42")
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert hooks.total() == 2
    # a request without a key, or with another, is processed as before
    assert hooks.keyed(body, None).json()["routes"]["keyed"]["unchanged"] == 2
    assert "idempotent-replayed" not in hooks.keyed(body, "order-43").headers


def test_a_stale_price_sent_again_with_its_key_does_not_supersede(hooks: Hooks) -> None:
    """Even without a signed timestamp: the replay is answered, not imported, so the newer price stays."""
    stale = b'{"sku": "S-1", "price": 10}'
    assert hooks.keyed(stale, "delivery-1").status_code == 202
    assert hooks.keyed(b'{"sku": "S-1", "price": 12}', "delivery-2").status_code == 202
    assert hooks.keyed(stale, "delivery-1").headers["idempotent-replayed"] == "true"
    assert hooks.latest("S-1") == {"sku": "S-1", "price": 12}
    assert hooks.total() == 2


def test_an_idempotency_key_expires_after_its_window(hooks: Hooks) -> None:
    body = b'{"sku": "E-1"}'
    assert hooks.keyed(body, "k-exp").status_code == 202
    hooks.advance(24 * 3600 - 1)
    assert hooks.keyed(body, "k-exp").headers.get("idempotent-replayed") == "true"
    hooks.advance(2)
    after = hooks.keyed(body, "k-exp")
    assert after.status_code == 202
    assert "idempotent-replayed" not in after.headers
    assert after.json()["routes"]["keyed"]["unchanged"] == 1, "processed again (delta finds it unchanged)"
    assert hooks.keyed(body, "k-exp").headers.get("idempotent-replayed") == "true", "remembered again"


def test_a_key_with_another_body_is_422(hooks: Hooks) -> None:
    assert hooks.keyed(b'{"sku": "D-1"}', "dup").status_code == 202
    reply = hooks.keyed(b'{"sku": "D-2"}', "dup")
    assert reply.status_code == 422
    assert "Idempotency-Key 'dup' was already used with a different body" in reply.json()["detail"]
    assert hooks.total() == 1


def test_a_refused_request_does_not_use_up_its_key(hooks: Hooks) -> None:
    assert hooks.keyed(b"{not json", "fix-me").status_code == 400
    ok = hooks.keyed(b'{"sku": "Y-1"}', "fix-me")
    assert ok.status_code == 202 and "idempotent-replayed" not in ok.headers


def test_a_key_still_being_processed_is_409(hooks: Hooks) -> None:
    """Another process (or a slow first copy) holds the key: the sender is told to retry, nothing is imported."""
    body = b'{"sku": "W-1"}'
    now = hooks.clock[0]
    claimed = hooks.store.claim_idempotency_key(
        "webhook:keyed",
        "busy",
        fingerprint=hashlib.sha256(body).hexdigest(),
        now=now,
        expires_at=now + timedelta(minutes=10),
    )
    assert claimed is None
    reply = hooks.keyed(body, "busy")
    assert reply.status_code == 409 and reply.headers["retry-after"] == "1"
    assert "still being processed" in reply.json()["detail"]
    assert hooks.total() == 0
    hooks.advance(601)  # the holder died: its claim lapses
    assert hooks.keyed(body, "busy").status_code == 202
    assert hooks.total() == 1


def test_credentials_are_checked_before_the_key(hooks: Hooks) -> None:
    body = b'{"sku": "C-1"}'
    assert hooks.keyed(body, "secret-key").status_code == 202
    sneak = hooks.client.post(
        "/api/v1/webhooks/keyed",
        content=body,
        headers={"Idempotency-Key": "secret-key", "X-Crossdock-Secret": "guess-guess"},
    )
    assert sneak.status_code == 401
    assert "tasks" not in sneak.text


@pytest.mark.parametrize("key", ["", "a" * 256, "with space", "ümlaut"])
def test_a_malformed_key_is_400(hooks: Hooks, key: str) -> None:
    reply = hooks.client.post(
        "/api/v1/webhooks/keyed",
        content=b'{"sku": "M-1"}',
        headers={"X-Crossdock-Secret": SECRET, "Idempotency-Key": key.encode()},
    )
    assert reply.status_code == 400
    assert "Idempotency-Key" in reply.json()["detail"]
    assert hooks.total() == 0


def test_a_source_without_idempotency_window_ignores_the_header(hooks: Hooks) -> None:
    headers = {"X-Crossdock-Secret": SECRET, "Idempotency-Key": "same"}
    first = hooks.client.post("/api/v1/webhooks/unkeyed", content=b'{"sku": "N-1", "v": 1}', headers=headers)
    second = hooks.client.post("/api/v1/webhooks/unkeyed", content=b'{"sku": "N-1", "v": 2}', headers=headers)
    assert first.status_code == second.status_code == 202
    assert "idempotent-replayed" not in second.headers
    assert hooks.total() == 2


def test_keys_survive_a_restart_and_hold_across_processes(hooks: Hooks, tmp_path: Path) -> None:
    body = b'{"sku": "Z-1"}'
    first = hooks.keyed(body, "shared")
    assert first.status_code == 202
    # a second serve process on the same database: its own store connection and app
    other_store = SQLiteStore(tmp_path / "hooks.db")
    try:
        with TestClient(app_with_clock(hooks.project, other_store, hooks.clock)) as other:
            again = hooks.keyed(body, "shared", client=other)
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json() == first.json()
    finally:
        other_store.close()
    assert hooks.total() == 1


def test_the_openapi_declares_the_webhook_answers(hooks: Hooks) -> None:
    spec = hooks.client.get("/api/openapi.json").json()
    answers = spec["paths"]["/api/v1/webhooks/{name}"]["post"]["responses"]
    assert {"202", "400", "401", "409", "413", "422", "429"} <= set(answers)
