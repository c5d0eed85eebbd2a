"""Fan-out: one shared incoming, fetched once, feeds several routes with their own tasks, delta and retries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crossdock.demo import demo_config
from crossdock.engine.project import Project, load_project
from crossdock.engine.runner import run_once
from crossdock.mock import RunningErp, RunningShop, start_erp, start_shop
from crossdock.store import Store, open_store

REPO = Path(__file__).resolve().parents[2]
PRODUCTS = 150


@pytest.fixture
def systems(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningErp, RunningShop]]:
    with start_erp(products=PRODUCTS, auth={"mode": "bearer", "token": "t0ken"}) as erp, start_shop() as shop:
        monkeypatch.setenv("ERP_URL", erp.url)
        monkeypatch.setenv("ERP_TOKEN", "t0ken")
        monkeypatch.setenv("SHOP_URL", shop.url)
        yield erp, shop


@pytest.fixture(params=["sqlite", "postgresql"])
def project(request: pytest.FixtureRequest, tmp_path: Path, systems: Any) -> Iterator[tuple[Project, Store]]:
    """The demo project on each backend (PostgreSQL: a fresh database; skipped locally without a server)."""
    (tmp_path / "crossdock.yaml").write_text(demo_config())
    proj = load_project(tmp_path / "crossdock.yaml")
    if request.param == "postgresql":
        from postgres_support import database_for

        store = open_store(database_for(tmp_path))
    else:
        store = open_store(proj.database_url(), base=proj.root)
    store.ensure_routes(proj.routes)
    yield proj, store
    store.close()


def run(project: Project, store: Store, name: str, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(run_once(project, store, name, **kwargs))


def test_the_example_in_examples_is_the_demo_project() -> None:
    assert (REPO / "examples" / "erp-shop-pim" / "crossdock.yaml").read_text() == demo_config()


def test_one_fetch_feeds_both_routes(project: tuple[Project, Store], systems: Any) -> None:
    proj, store = project
    erp, shop = systems
    active = sum(1 for p in erp.catalogue.all() if p["status"] == "active")
    result = run(proj, store, "erp-products", outgoing=False)
    assert result["incoming"]["read"] == PRODUCTS
    # two pages of 100: the ERP is asked once per page, not once per route
    assert erp.requests_to("/products") == 2
    for route in ("erp-to-shop", "erp-to-pim"):
        summary = result["incoming"]["routes"][route]
        assert summary["new"] == active
        assert summary["filtered"] == PRODUCTS - active
    run(proj, store, "erp-to-shop", incoming=False)
    run(proj, store, "erp-to-pim", incoming=False)
    shop_bodies = shop.bodies("/products")
    pim_bodies = shop.bodies("/pim/products")
    assert len(shop_bodies) == len(pim_bodies) == active
    sample = next(p for p in erp.catalogue.all() if p["status"] == "active")
    sent = shop_bodies[sample["sku"]]
    assert sent["price"] == round(float(sample["price"]) * 100)
    assert "category" not in sent
    mapped = {"A": "apparel", "B": "books", "C": "garden"}[sample["category"]]
    assert pim_bodies[sample["sku"]]["category"] == mapped
    assert store.stats("erp-to-pim").by_status["waiting"] == active


def test_an_inactive_route_gets_nothing_and_picks_up_when_reactivated(
    project: tuple[Project, Store], systems: Any
) -> None:
    proj, store = project
    erp, _shop = systems
    now = datetime.now(UTC)
    store.set_route_active("erp-to-pim", False, now=now)
    result = run(proj, store, "erp-products", outgoing=False)
    assert result["incoming"]["routes"]["erp-to-pim"]["active"] is False
    assert store.stats("erp-to-pim").total == 0
    assert store.stats("erp-to-shop").by_status["new"] > 0
    store.set_route_active("erp-to-pim", True, now=now)
    run(proj, store, "erp-products", outgoing=False)
    active = sum(1 for p in erp.catalogue.all() if p["status"] == "active")
    assert store.stats("erp-to-pim").by_status["new"] == active
    # the shop saw the same data again: nothing new there
    assert store.stats("erp-to-shop").by_status["new"] == active


def test_a_change_only_one_route_carries_creates_a_task_on_that_route_only(
    project: tuple[Project, Store], systems: Any
) -> None:
    proj, store = project
    erp, _shop = systems
    run(proj, store, "erp-products", outgoing=False)
    run(proj, store, "erp-to-shop", incoming=False)
    run(proj, store, "erp-to-pim", incoming=False)
    product = next(p for p in erp.catalogue.all() if p["status"] == "active")
    erp.catalogue.update(product["sku"], category="C" if product["category"] != "C" else "A")
    result = run(proj, store, "erp-products", outgoing=False)
    pim = result["incoming"]["routes"]["erp-to-pim"]
    shop = result["incoming"]["routes"]["erp-to-shop"]
    assert (pim["new"], pim["changed"]) == (1, 1)
    assert shop["new"] == 0
    assert shop["unchanged"] == pim["unchanged"] + 1


def test_a_dead_shop_does_not_hold_up_the_pim(project: tuple[Project, Store], systems: Any) -> None:
    proj, store = project
    _erp, shop = systems
    shop.set_failures(always_status=503, paths=["/products"])
    run(proj, store, "erp-products", outgoing=False)
    run(proj, store, "erp-to-shop", incoming=False)
    run(proj, store, "erp-to-pim", incoming=False)
    shop_counts = store.stats("erp-to-shop").by_status
    pim_counts = store.stats("erp-to-pim").by_status
    assert shop_counts["retry"] > 0 and shop_counts["finished"] == 0
    assert pim_counts["waiting"] == shop_counts["retry"]
