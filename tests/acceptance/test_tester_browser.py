"""The route page's transformer tester in a real browser (Debian's chromium, driven by Playwright), as a viewer.

The project is the one ``crossdock init`` writes, run once for real: 18 products finished, 2 filtered, SKU-BAD
rejected by the schema. Never downloads a browser: without ``/usr/bin/chromium`` the test skips, or fails under CI.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest

from browser_support import ARGS, CHROMIUM, served, shot
from crossdock.engine.project import load_project
from crossdock.engine.runner import run_once
from crossdock.scaffold import write_project
from crossdock.store import Store, TaskFilter, open_store
from crossdock.tasks import Status
from crossdock.web.app import create_app
from crossdock.web.auth import issue_token
from crossdock.web.settings import WebSettings

ROUTE = "products-to-shop"

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but /usr/bin/chromium is missing: apt-get install -y chromium", pytrace=False)
    pytest.skip(
        "no /usr/bin/chromium (apt-get install -y chromium); the browser test needs it", allow_module_level=True
    )

sync_api = pytest.importorskip("playwright.sync_api")


@dataclass
class Site:
    url: str
    store: Store
    viewer_token: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:

    root = tmp_path_factory.mktemp("tester")
    write_project(root)
    saved = os.environ.pop("CROSSDOCK_DB", None)
    project = load_project(root / "crossdock.yaml")
    store = open_store(project.database_url(), base=project.root)
    store.ensure_routes(project.routes)
    seeding = threading.Thread(target=lambda: asyncio.run(run_once(project, store, ROUTE, actor="seed")))
    seeding.start()
    seeding.join(60)
    _id, token = issue_token(store, "viewer", "browser-viewer")
    app = create_app(project, store, settings=WebSettings(token_cache_seconds=0))
    try:
        with served(app) as url:
            yield Site(url, store, token)
    finally:
        store.close()
        if saved is not None:
            os.environ["CROSSDOCK_DB"] = saved


@pytest.fixture
def page(site: Site) -> Iterator[object]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            pg = context.new_page()
            pg.set_default_timeout(10_000)
            pg.goto(f"{site.url}/login")
            pg.fill("#token", site.viewer_token)
            pg.click("button:has-text('Log in')")
            pg.wait_for_url(f"{site.url}/")
            yield pg
        finally:
            browser.close()


def record_box(pg: object, text: str) -> None:
    """Wait until htmx has filled the record box with a task's record (CSP forbids eval: no wait_for_function)."""
    box = pg.locator("#tester-record")  # type: ignore[attr-defined]
    sync_api.expect(box).to_have_value(re.compile(re.escape(text)))


def run_tester(pg: object, expect: str) -> object:
    """Click Run and wait for a verdict of a new result (the old one is cleared first)."""
    pg.evaluate("document.getElementById('tester-result').innerHTML = ''")  # type: ignore[attr-defined]
    pg.click("[data-testid=tester-run]")  # type: ignore[attr-defined]
    verdict = pg.locator(f"[data-testid=tester-verdict][data-outcome={expect}]")  # type: ignore[attr-defined]
    verdict.wait_for()
    return verdict


def test_a_viewer_picks_a_task_runs_it_and_sees_the_verdict(page: object, site: Site) -> None:
    pg = page
    tasks_before = site.store.count_tasks(TaskFilter())
    # the newest finished task (the picker offers the 20 most recent)
    [finished] = site.store.list_tasks(TaskFilter(route=ROUTE, statuses=[Status.FINISHED]), limit=1)[0]
    sku = finished.identifier
    assert sku is not None and finished.entity is not None
    pg.goto(f"{site.url}/routes/{ROUTE}")  # type: ignore[attr-defined]
    assert "Test the transforms" in pg.inner_text("[data-testid=tester]")  # type: ignore[attr-defined]

    # pick the finished task: its entity fills the box
    pg.select_option("[data-testid=tester-pick]", str(finished.id))  # type: ignore[attr-defined]
    record_box(pg, sku)
    assert f"the entity of task {finished.id}" in pg.inner_text("[data-testid=tester-note]")  # type: ignore[attr-defined]
    run_tester(pg, "ok")
    assert pg.inner_text("[data-testid=tester-identifier]") == sku  # type: ignore[attr-defined]
    assert pg.get_attribute("[data-testid=tester-validation]", "data-verdict") == "passed"  # type: ignore[attr-defined]
    assert "schemas/product.json passed" in pg.inner_text("[data-testid=tester-validation]")  # type: ignore[attr-defined]
    delta = pg.locator("[data-testid=tester-delta]")  # type: ignore[attr-defined]
    assert delta.get_attribute("data-outcome") == "unchanged"
    assert f"unchanged since task {finished.id}" in delta.inner_text()
    steps = pg.inner_text("[data-testid=tester-steps]")  # type: ignore[attr-defined]
    assert "step 1 (filter)" in steps
    assert f"https://shop.example/p/{sku}" in pg.inner_text("[data-testid=tester-request]")  # type: ignore[attr-defined]

    # another price: changed, with the field
    changed = {**finished.entity, "price": "1.50"}
    pg.fill("#tester-record", orjson.dumps(changed).decode())  # type: ignore[attr-defined]
    run_tester(pg, "ok")
    assert delta.get_attribute("data-outcome") == "changed"
    diff = pg.inner_text("[data-testid=tester-diff]")  # type: ignore[attr-defined]
    assert "price" in diff and '"1.50"' in diff
    assert '"price": 150' in pg.inner_text("[data-testid=tester-outgoing-steps]")  # type: ignore[attr-defined]
    shot(pg, "tester-changed")

    # a record the schema refuses: rejected, with the run's reason
    pg.fill("#tester-record", '{"sku": "SKU-NEW", "title": "No price", "stock": 2}')  # type: ignore[attr-defined]
    run_tester(pg, "rejected")
    reason = pg.inner_text("[data-testid=tester-reason]")  # type: ignore[attr-defined]
    assert reason == "validate.schema: at (the record): 'price' is a required property"
    assert pg.get_attribute("[data-testid=tester-validation]", "data-verdict") == "failed"  # type: ignore[attr-defined]
    assert "rejected" in pg.inner_text("[data-testid=tester-task]")  # type: ignore[attr-defined]
    assert delta.get_attribute("data-outcome") == "new"
    shot(pg, "tester-rejected")

    # the rejected task of the run: rejected again, for the same reason, and only touched
    [bad] = site.store.list_tasks(TaskFilter(route=ROUTE, statuses=[Status.REJECTED]), limit=1)[0]
    pg.select_option("[data-testid=tester-pick]", str(bad.id))  # type: ignore[attr-defined]
    record_box(pg, "SKU-BAD")
    run_tester(pg, "rejected")
    assert "'price' is a required property" in pg.inner_text("[data-testid=tester-reason]")  # type: ignore[attr-defined]
    assert f"task {bad.id} (rejected) is touched" in delta.inner_text()

    # malformed JSON says so, and nothing was written by any of it
    pg.fill("#tester-record", "{oops")  # type: ignore[attr-defined]
    pg.click("[data-testid=tester-run]")  # type: ignore[attr-defined]
    assert "the record is not JSON" in pg.locator("[data-testid=tester-error]").inner_text()  # type: ignore[attr-defined]
    assert site.store.count_tasks(TaskFilter()) == tasks_before
