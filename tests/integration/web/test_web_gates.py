"""Delivery gates in the API, the OpenAPI, /metrics and the Routes page: a maintenance window covering now, and a
circuit breaker that opened (as a worker's deliveries would open it) and is closed by hand, audited."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from webenv import csrf_of

from crossdock.engine.project import Project, load_project
from crossdock.mock import RunningShop, start_shop
from crossdock.store import Store, open_store
from crossdock.web.app import create_app
from crossdock.web.auth import issue_token
from crossdock.web.settings import WebSettings


@dataclass
class Gates:
    project: Project
    store: Store
    client: TestClient
    tokens: dict[str, str]
    shop: RunningShop

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def login(self, role: str) -> str:
        self.client.cookies.clear()
        reply = self.client.get(f"/login?token={self.tokens[role]}", follow_redirects=False)
        assert reply.status_code == 303, reply.text
        return csrf_of(self.client.get("/tasks").text)

    def open_breaker(self) -> None:
        """Two transient failures, as a worker delivering to the shop would count them."""
        self.store.record_circuit_failures(
            "shop", 2, threshold=2, cooldown=3600, error="PUT /products/A: 503", now=datetime.now(UTC)
        )


def config(shop_url: str) -> str:
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).isoformat()
    end = (now + timedelta(hours=1)).replace(microsecond=0)
    return f"""\
database: sqlite:///web.db
connections:
  shop:
    type: http
    base_url: "{shop_url}"
    circuit: {{failures: 2, cooldown: 1h}}
routes:
  to-shop:
    incoming: {{source: {{type: file, path: data.ndjson}}}}
    identifier: sku
    outgoing:
      target: {{type: http, connection: shop, method: PUT, path: "/products/{{sku}}"}}
  quiet:
    incoming: {{source: {{type: file, path: data.ndjson}}}}
    identifier: sku
    maintenance:
      - {{from: "{start}", to: "{end.isoformat()}", imports: false}}
    outgoing:
      target: {{type: noop}}
  plain:
    incoming: {{source: {{type: file, path: data.ndjson}}}}
    identifier: sku
    outgoing:
      target: {{type: noop}}
"""


@pytest.fixture
def gates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gates]:
    monkeypatch.delenv("CROSSDOCK_DB", raising=False)
    (tmp_path / "data.ndjson").write_text('{"sku": "A"}\n{"sku": "B"}\n')
    with start_shop() as shop:
        (tmp_path / "crossdock.yaml").write_text(config(shop.url))
        project = load_project(tmp_path / "crossdock.yaml")
        store = open_store(project.database_url(), base=project.root)
        tokens = {role: issue_token(store, role, f"{role}-token")[1] for role in ("viewer", "operator", "admin")}
        app = create_app(project, store, settings=WebSettings(token_cache_seconds=0.0))
        try:
            with TestClient(app) as client:
                yield Gates(project, store, client, tokens, shop)
        finally:
            store.close()


def test_routes_say_which_window_and_which_breaker_holds_them(gates: Gates) -> None:
    routes = {r["name"]: r for r in gates.client.get("/api/v1/routes", headers=gates.auth("viewer")).json()}
    quiet = routes["quiet"]
    until = datetime.fromisoformat(quiet["maintenance_until"].replace("Z", "+00:00"))
    assert timedelta(minutes=55) < until - datetime.now(UTC) <= timedelta(hours=1)
    assert quiet["imports_stopped_until"] == quiet["maintenance_until"] and quiet["circuit"] is None
    assert routes["plain"]["maintenance_until"] is None and routes["plain"]["circuit"] is None
    circuit = routes["to-shop"]["circuit"]
    assert (circuit["key"], circuit["state"], circuit["failures"], circuit["failures_to_open"]) == (
        "shop",
        "closed",
        0,
        2,
    )
    assert circuit["routes"] == ["to-shop"] and circuit["cooldown_s"] == 3600.0
    gates.open_breaker()
    circuit = {r["name"]: r for r in gates.client.get("/api/v1/routes", headers=gates.auth("viewer")).json()}[
        "to-shop"
    ]["circuit"]
    assert (
        circuit["state"] == "open" and circuit["until"] is not None and circuit["last_error"] == "PUT /products/A: 503"
    )


def test_a_run_now_in_maintenance_says_why_and_sends_nothing(gates: Gates) -> None:
    reply = gates.client.post(
        "/api/v1/routes/quiet/run", params={"wait": "true"}, headers=gates.auth("operator")
    ).json()
    assert reply["incoming"]["held"].endswith("(imports: false)") and reply["incoming"]["read"] == 0
    assert reply["outgoing"]["held"].startswith("in maintenance until ") and reply["outgoing"]["claimed"] == 0
    gates.open_breaker()
    shop = gates.client.post("/api/v1/routes/to-shop/run", params={"wait": "true"}, headers=gates.auth("operator"))
    held = shop.json()["outgoing"]
    assert held["held"].startswith("circuit open for shop until ") and held["claimed"] == 0, held
    assert shop.json()["by_status"]["new"] == 2
    assert gates.shop.stats()["requests"] == 0


def test_circuits_are_listed_and_an_operator_closes_one_audited(gates: Gates) -> None:
    gates.open_breaker()
    listed = gates.client.get("/api/v1/circuits", headers=gates.auth("viewer")).json()
    assert [(c["key"], c["state"], c["routes"]) for c in listed] == [("shop", "open", ["to-shop"])]
    assert gates.client.post("/api/v1/circuits/shop/close", headers=gates.auth("viewer")).status_code == 403
    missing = gates.client.post("/api/v1/circuits/nope/close", headers=gates.auth("operator"))
    assert missing.status_code == 404 and "known: shop" in missing.json()["detail"]
    closed = gates.client.post("/api/v1/circuits/shop/close", headers=gates.auth("operator"))
    assert closed.status_code == 200
    assert (closed.json()["state"], closed.json()["failures"], closed.json()["until"]) == ("closed", 0, None)
    [entry] = [e for e in gates.store.list_audit() if e.action == "circuit.close"]
    assert (entry.actor, entry.target, entry.detail) == ("operator-token", {"key": "shop"}, "was open")


def test_metrics_show_open_breakers_and_routes_in_maintenance(gates: Gates) -> None:
    text = gates.client.get("/metrics", headers=gates.auth("viewer")).text
    assert 'crossdock_circuit_open{key="shop"} 0.0' in text
    assert 'crossdock_route_in_maintenance{route="quiet"} 1.0' in text
    assert 'crossdock_route_in_maintenance{route="plain"} 0.0' in text
    gates.open_breaker()
    assert 'crossdock_circuit_open{key="shop"} 1.0' in gates.client.get("/metrics", headers=gates.auth("viewer")).text


def test_the_openapi_describes_the_gates(gates: Gates) -> None:
    spec = gates.client.get("/api/openapi.json").json()
    assert {"/api/v1/circuits", "/api/v1/circuits/{key}/close"} <= set(spec["paths"])
    route = spec["components"]["schemas"]["RouteOut"]["properties"]
    assert {"maintenance_until", "imports_stopped_until", "circuit", "paused_reason"} <= set(route)
    circuit = spec["components"]["schemas"]["CircuitOut"]["properties"]
    assert set(circuit["state"]["enum"]) == {"closed", "open", "half_open"}


def test_the_routes_page_shows_the_window_and_the_breaker_with_a_close_button(gates: Gates) -> None:
    gates.open_breaker()
    gates.login("viewer")
    html = gates.client.get("/routes").text
    assert 'data-testid="maintenance-quiet">In maintenance until ' in html and "or imported" in html
    assert 'data-testid="maintenance-plain"' not in html
    assert 'data-testid="circuit-to-shop"' in html and "circuit open" in html and "PUT /products/A: 503" in html
    assert 'data-testid="close-circuit-shop"' not in html, "viewers cannot close it"
    csrf = gates.login("operator")
    html = gates.client.get("/routes").text
    assert 'data-testid="close-circuit-shop"' in html
    reply = gates.client.post("/circuits/shop/close", data={"csrf_token": csrf}, follow_redirects=False)
    assert reply.status_code == 303
    page = gates.client.get("/routes").text
    assert "Circuit shop is closed; deliveries resume." in page and "circuit closed" in page
    assert gates.store.circuits()["shop"].state == "closed"
    assert gates.client.post("/circuits/shop/close", data={}, follow_redirects=False).status_code in (400, 403)
