"""A project with file, webhook and HTTP routes, a SQLite store, the app, and one token per role.

A module of its own name, not ``conftest``: test modules import ``Env`` and the constants from here, and a
``from conftest import`` would pick whichever conftest another test folder loaded first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crossdock.engine.project import Project, load_project
from crossdock.mock import FailureConfig, RunningShop, start_shop
from crossdock.store import Store, open_store
from crossdock.web.app import create_app
from crossdock.web.auth import issue_token
from crossdock.web.settings import WebSettings

SHOP_TOKEN = "shop-bearer-s3cr3t-value-XYZ"
HOOK_SECRET = "hook-shared-secret-123"
HMAC_SECRET = "hmac-signing-key-456"

CONFIG = """\
database: sqlite:///web.db
connections:
  shop:
    type: http
    base_url: "${SHOP_URL}"
    auth: {type: bearer, token: "${SHOP_TOKEN}"}
routes:
  files:
    incoming:
      source: {type: file, path: data.ndjson}
      schedule: "*/5 * * * *"
    identifier: sku
    outgoing:
      target: {type: noop}
      schedule: "* * * * *"
  to-shop:
    incoming:
      source: {type: file, path: shop.ndjson}
    identifier: sku
    outgoing:
      target: {type: http, connection: shop, method: PUT, path: "/products/{sku}"}
    retry: {max_attempts: 3, backoff: 1s}
  approvals:
    incoming:
      source: {type: file, path: data.ndjson}
    identifier: sku
    waiting: true
    outgoing:
      target: {type: noop}
  hook:
    incoming:
      source: {type: webhook, secret: "${HOOK_SECRET}"}
    identifier: sku
    outgoing:
      target: {type: noop}
  signed:
    incoming:
      source:
        type: webhook
        hmac_secret: "${HMAC_SECRET}"
        signature_header: X-Signature
        max_body_bytes: 65536
    identifier: sku
    outgoing:
      target: {type: noop}
  open-hook:
    incoming:
      source: {type: webhook}
    identifier: sku
    outgoing:
      target: {type: noop}
  live-hook:
    incoming:
      source: {type: webhook, secret: "${HOOK_SECRET}"}
    identifier: sku
    realtime: true
    outgoing:
      target: {type: noop}
"""


@dataclass
class Env:
    project: Project
    store: Store
    client: TestClient
    tokens: dict[str, str]
    shop: RunningShop

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def login(self, role: str) -> str:
        """Log the client in as ``role``; returns the session's CSRF token (read from a page's form)."""
        self.client.cookies.clear()
        reply = self.client.get(f"/login?token={self.tokens[role]}", follow_redirects=False)
        assert reply.status_code == 303, reply.text
        return csrf_of(self.client.get("/tasks").text)

    def run(self, route: str, **params: Any) -> dict[str, Any]:
        reply = self.client.post(
            f"/api/v1/routes/{route}/run", params={"wait": "true", **params}, headers=self.auth("operator")
        )
        assert reply.status_code == 200, reply.text
        data: dict[str, Any] = reply.json()
        return data


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.fixture
def shop() -> Iterator[RunningShop]:
    # SKU-B is refused for good (422); everything else is accepted
    with start_shop(failures=FailureConfig(status_for_skus={"SKU-B": 422})) as running:
        yield running


def write_project(root: Path) -> Path:
    (root / "data.ndjson").write_text("".join(f'{{"sku": "SKU-{c}", "name": "item {c}"}}\n' for c in "ABCDE"))
    # one record carries the shop's secret in its data: redaction must still keep it out of every answer
    (root / "shop.ndjson").write_text(
        '{"sku": "SKU-A", "price": 1}\n{"sku": "SKU-B", "price": 2}\n'
        f'{{"sku": "SKU-C", "price": 3, "note": "token {SHOP_TOKEN}"}}\n'
    )
    config = root / "crossdock.yaml"
    config.write_text(CONFIG)
    return config


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shop: RunningShop) -> Iterator[Env]:
    monkeypatch.setenv("SHOP_URL", shop.url)
    monkeypatch.setenv("SHOP_TOKEN", SHOP_TOKEN)
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("HMAC_SECRET", HMAC_SECRET)
    monkeypatch.delenv("CROSSDOCK_DB", raising=False)
    project = load_project(write_project(tmp_path))
    store = open_store(project.database_url(), base=project.root)
    tokens = {role: issue_token(store, role, f"{role}-token")[1] for role in ("viewer", "operator", "admin")}
    app = create_app(project, store, settings=WebSettings(token_cache_seconds=0.0))
    try:
        with TestClient(app) as client:
            yield Env(project, store, client, tokens, shop)
    finally:
        store.close()
