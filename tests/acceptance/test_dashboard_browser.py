"""The dashboard in a real browser (Debian's chromium, driven by Playwright), on a store seeded by real runs.

The mock ERP feeds four routes: ``erp-to-shop`` (the shop refuses two SKUs for good), ``erp-approvals``
(a waiting route), ``erp-nightly`` (outgoing at 02:00, with retries) and ``erp-legacy`` (its identifier is in no
record, so every record is rejected). Never downloads a browser: without ``/usr/bin/chromium`` the test skips, or
fails under CI.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from browser_support import ARGS, CHROMIUM, served, shot
from crossdock.engine.project import Project, load_project
from crossdock.engine.runner import run_once
from crossdock.mock import FailureConfig, RunningShop, start_erp, start_shop
from crossdock.store import Store, TaskFilter, open_store
from crossdock.tasks import Action, Status
from crossdock.web.app import create_app
from crossdock.web.auth import issue_token
from crossdock.web.settings import WebSettings

REFUSED = {"SKU-00003": 422, "SKU-00007": 422}

CONFIG = """\
database: sqlite:///browser.db
connections:
  erp: {type: http, base_url: "${ERP_URL}", auth: {type: bearer, token: "${ERP_TOKEN}"}}
  shop: {type: http, base_url: "${SHOP_URL}"}
incomings:
  erp-products:
    source: {type: http, connection: erp, path: /products, query: {page_size: "50"}, records: items,
             pagination: {type: next_link, path: _links.next}}
routes:
  erp-to-shop:
    incoming: erp-products
    identifier: sku
    outgoing:
      target: {type: http, connection: shop, method: PUT, path: "/products/{sku}"}
  erp-approvals:
    incoming: erp-products
    identifier: sku
    waiting: true
    outgoing:
      target: {type: noop}
  erp-nightly:
    incoming: erp-products
    identifier: sku
    retry: {max_attempts: 3, backoff: 1s}
    outgoing:
      target: {type: http, connection: shop, method: PUT, path: "/nightly/{sku}"}
      schedule: "0 2 * * *"
  erp-legacy:
    incoming: erp-products
    identifier: legacy_id
    outgoing:
      target: {type: noop}
"""

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but /usr/bin/chromium is missing: apt-get install -y chromium", pytrace=False)
    pytest.skip(
        "no /usr/bin/chromium (apt-get install -y chromium); the browser test needs it",
        allow_module_level=True,
    )

sync_api = pytest.importorskip("playwright.sync_api")


@dataclass
class Site:
    url: str
    project: Project
    store: Store
    shop: RunningShop
    admin_token: str


def seed(project: Project, store: Store) -> None:
    """Real runs, in a thread of their own: Playwright's sync API owns this thread's event loop."""

    def work() -> None:
        asyncio.run(run_once(project, store, "erp-to-shop", actor="seed"))
        asyncio.run(run_once(project, store, "erp-approvals", incoming=False, actor="seed"))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(60)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:

    root = tmp_path_factory.mktemp("browser")
    (root / "crossdock.yaml").write_text(CONFIG)
    erp_token = "erp-browser-token"
    with (
        start_erp(products=30, auth={"mode": "bearer", "token": erp_token}) as erp,
        start_shop(failures=FailureConfig(status_for_skus=dict(REFUSED))) as shop,
    ):
        saved = {k: os.environ.get(k) for k in ("ERP_URL", "ERP_TOKEN", "SHOP_URL", "CROSSDOCK_DB")}
        os.environ.update({"ERP_URL": erp.url, "ERP_TOKEN": erp_token, "SHOP_URL": shop.url})
        os.environ.pop("CROSSDOCK_DB", None)
        project = load_project(root / "crossdock.yaml")
        store = open_store(project.database_url(), base=project.root)
        store.ensure_routes(project.routes)
        seed(project, store)
        _id, token = issue_token(store, "admin", "browser-admin")
        app = create_app(project, store, settings=WebSettings(refresh_seconds=2, token_cache_seconds=0))
        try:
            with served(app) as url:
                yield Site(url, project, store, shop, token)
        finally:
            store.close()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[object]:
    with sync_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: object, site: Site) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    pg.goto(f"{site.url}/login")
    pg.fill("#token", site.admin_token)
    pg.click("button:has-text('Log in')")
    pg.wait_for_url(f"{site.url}/")
    try:
        yield pg
    finally:
        context.close()


def test_login_page(browser: object, site: Site) -> None:
    context = browser.new_context()  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.goto(f"{site.url}/tasks")
    assert "/login" in pg.url
    shot(pg, "login")
    pg.fill("#token", "wrong-token")
    pg.click("button:has-text('Log in')")
    assert "not valid" in pg.inner_text(".alert")
    context.close()


def test_monitor_shows_the_counts(page: object, site: Site) -> None:
    stats = site.store.stats()
    assert page.inner_text("[data-testid=total]").replace(",", "") == str(stats.total)  # type: ignore[attr-defined]
    for status, n in stats.by_status.items():
        assert page.get_attribute(f"[data-testid=count-{status}]", "data-count") == str(n)  # type: ignore[attr-defined]
    assert stats.by_status["failed"] == len(REFUSED)
    assert stats.by_status["waiting"] == 30
    assert "answered 422" in page.inner_text("[data-testid=top-errors]")  # type: ignore[attr-defined]
    shot(page, "monitor")


def test_filter_failed_open_retry_and_see_it_finish(page: object, site: Site) -> None:
    pg = page
    pg.click("a.tile.st-failed")  # type: ignore[attr-defined]
    pg.wait_for_url(re.compile(r"/tasks\?status=failed"))  # type: ignore[attr-defined]
    rows = pg.locator("tr[data-task]")  # type: ignore[attr-defined]
    assert rows.count() == len(REFUSED)
    assert {pg.locator("tr[data-task]").nth(i).get_attribute("data-status") for i in range(rows.count())} == {"failed"}  # type: ignore[attr-defined]
    shot(pg, "tasks-failed")
    rows.first.locator("td.num a").click()
    pg.wait_for_selector("[data-testid=task-error]")  # type: ignore[attr-defined]
    assert "category not found" in pg.inner_text("[data-testid=task-error]")  # type: ignore[attr-defined]
    pg.click("details.tl-details summary")  # type: ignore[attr-defined]
    assert "422" in pg.inner_text("details.tl-details")  # type: ignore[attr-defined]
    shot(pg, "task-failed")
    task_url = pg.url  # type: ignore[attr-defined]
    site.shop.set_failures(FailureConfig())  # the shop's data problem is fixed
    pg.click("[data-testid=task-actions] button[value=retry]")  # type: ignore[attr-defined]
    assert "is now new" in pg.inner_text(".flash")  # type: ignore[attr-defined]
    pg.goto(site.url + "/routes")  # type: ignore[attr-defined]
    shot(pg, "routes")
    pg.click("section[data-route=erp-to-shop] button[value=outgoing]")  # type: ignore[attr-defined]
    assert "Started outgoing of erp-to-shop" in pg.inner_text(".flash")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 15
    badge = ""
    while time.monotonic() < deadline:
        pg.goto(task_url)  # type: ignore[attr-defined]
        badge = pg.inner_text("[data-testid=task-head] .badge")  # type: ignore[attr-defined]
        if badge == "finished":
            break
        time.sleep(0.3)
    assert badge == "finished"
    shot(pg, "task-finished")


def test_bulk_retry_by_filter(page: object, site: Site) -> None:
    pg = page
    site.shop.set_failures(FailureConfig())
    remaining = site.store.stats("erp-to-shop").by_status["failed"]
    assert remaining >= 1
    pg.goto(f"{site.url}/tasks?status=failed&route=erp-to-shop")  # type: ignore[attr-defined]
    assert pg.is_hidden("[data-testid=bulk-bar]")  # type: ignore[attr-defined]
    pg.locator("input.row-check").first.check()  # type: ignore[attr-defined]
    assert pg.is_visible("[data-testid=bulk-bar]")  # type: ignore[attr-defined]
    pg.check("#select-all-matching")  # type: ignore[attr-defined]
    shot(pg, "tasks-bulk")
    pg.click("[data-testid=bulk-bar] button[value=retry]")  # type: ignore[attr-defined]
    heading = pg.inner_text("[data-testid=confirm] h1")  # type: ignore[attr-defined]
    assert heading == f"Retry {remaining} task{'' if remaining == 1 else 's'}?"
    shot(pg, "confirm")
    pg.click("[data-testid=confirm] button[type=submit]")  # type: ignore[attr-defined]
    assert f"Retry: {remaining} task(s) changed" in pg.inner_text(".flash")  # type: ignore[attr-defined]
    assert site.store.stats("erp-to-shop").by_status["failed"] == 0


def test_finish_a_waiting_task(page: object, site: Site) -> None:
    pg = page
    before = site.store.stats("erp-approvals").by_status
    pg.goto(f"{site.url}/tasks?status=waiting&route=erp-approvals")  # type: ignore[attr-defined]
    pg.locator("tr[data-task] td.num a").first.click()  # type: ignore[attr-defined]
    pg.click("[data-testid=task-actions] button[value=finish]")  # type: ignore[attr-defined]
    assert "is now finished" in pg.inner_text(".flash")  # type: ignore[attr-defined]
    assert pg.inner_text("[data-testid=task-head] .badge") == "finished"  # type: ignore[attr-defined]
    after = site.store.stats("erp-approvals").by_status
    assert after["waiting"] == before["waiting"] - 1 and after["finished"] == before["finished"] + 1
    shot(pg, "task-waiting-finished")


def test_audit_page_lists_what_happened(page: object, site: Site) -> None:
    pg = page
    pg.goto(f"{site.url}/audit")  # type: ignore[attr-defined]
    text = pg.inner_text("[data-testid=audit-table]")  # type: ignore[attr-defined]
    assert "login" in text and "browser-admin" in text
    shot(pg, "audit")


def test_live_counts_refresh_without_reload(page: object, site: Site) -> None:
    pg = page
    before = int(pg.get_attribute("[data-testid=count-skipped]", "data-count"))  # type: ignore[attr-defined]
    pg.locator("h1").evaluate("el => el.setAttribute('data-marker', 'same-page')")  # type: ignore[attr-defined]
    site.store.apply_action(
        Action.SKIP, TaskFilter(route="erp-approvals", identifier="SKU-00010"), actor="test", reason=None,
        now=datetime.now(UTC),
    )  # fmt: skip
    deadline = time.monotonic() + 10
    count = before
    while time.monotonic() < deadline and count == before:
        time.sleep(0.25)
        count = int(pg.get_attribute("[data-testid=count-skipped]", "data-count"))  # type: ignore[attr-defined]
    assert count == before + 1
    assert pg.get_attribute("h1", "data-marker") == "same-page"  # htmx swapped the fragment; no reload  # type: ignore[attr-defined]


# --- #19 item 6: what the dashboard said wrong --------------------------------------------------------------


def in_thread(project: Project, store: Store, route: str, **parts: object) -> None:
    """One run of a route, off the thread whose event loop Playwright owns."""
    worker = threading.Thread(target=lambda: asyncio.run(run_once(project, store, route, actor="test", **parts)))  # type: ignore[arg-type]
    worker.start()
    worker.join(60)


def test_skip_reasons_are_neutral_and_errors_red(page: object, site: Site) -> None:
    pg = page
    in_thread(site.project, site.store, "erp-to-shop", outgoing=False)  # unchanged records: skipped, with a reason
    pg.goto(f"{site.url}/tasks?status=skipped&route=erp-to-shop")  # type: ignore[attr-defined]
    cell = pg.locator("td[data-testid=reason]").first  # type: ignore[attr-defined]
    assert re.fullmatch(r"reason unchanged since task \d+", cell.inner_text(), re.I)
    red = "rgb(153, 27, 27)"
    assert cell.evaluate("el => getComputedStyle(el).color") != red
    assert pg.locator("th", has_text="Last error").count() == 0  # type: ignore[attr-defined]
    shot(pg, "tasks-skipped-reason")
    cell.locator("xpath=..").locator("td.num a").click()
    assert pg.inner_text("[data-testid=task-reason] strong") == "Reason"  # type: ignore[attr-defined]
    assert pg.locator("[data-testid=task-error]").count() == 0  # type: ignore[attr-defined]
    pg.goto(f"{site.url}/tasks?status=rejected&route=erp-legacy")  # type: ignore[attr-defined]
    error = pg.locator("tr[data-task] td.error-text").first  # type: ignore[attr-defined]
    assert "legacy_id" in error.inner_text() and error.evaluate("el => getComputedStyle(el).color") == red


def test_select_all_matching_says_so_in_the_bar(page: object, site: Site) -> None:
    pg = page
    total = site.store.stats("erp-approvals").by_status["waiting"]
    pg.goto(f"{site.url}/tasks?status=waiting&route=erp-approvals")  # type: ignore[attr-defined]
    pg.locator("input.row-check").first.check()  # type: ignore[attr-defined]
    assert pg.inner_text("[data-testid=bulk-count-text]") == "1 selected"  # type: ignore[attr-defined]
    pg.check("#select-all-matching")  # type: ignore[attr-defined]
    assert pg.inner_text("[data-testid=bulk-count-text]") == f"all {total} matching selected"  # type: ignore[attr-defined]
    pg.uncheck("#select-all-matching")  # type: ignore[attr-defined]
    assert pg.inner_text("[data-testid=bulk-count-text]") == "1 selected"  # type: ignore[attr-defined]


def test_a_scheduled_retry_says_which_outgoing_run_takes_it(page: object, site: Site) -> None:
    from croniter import croniter

    pg = page
    site.shop.set_failures(FailureConfig(always_status=503, paths=("/nightly",)))
    try:
        in_thread(site.project, site.store, "erp-nightly", incoming=False, limit=1)
    finally:
        site.shop.set_failures(FailureConfig())
    [task] = site.store.list_tasks(TaskFilter(route="erp-nightly", statuses=[Status.RETRY]))[0]
    pg.goto(f"{site.url}/tasks/{task.id}")  # type: ignore[attr-defined]
    timeline_text = pg.inner_text("[data-testid=timeline]")  # type: ignore[attr-defined]
    assert "next attempt in" not in timeline_text
    fire = croniter("0 2 * * *", datetime.now(UTC)).get_next(datetime)
    assert f"next scheduled outgoing run at {fire:%Y-%m-%d %H:%M:%S} UTC" in timeline_text
    head = pg.locator("[data-testid=next-attempt]")  # type: ignore[attr-defined]
    assert head.locator("time").get_attribute("title") == f"{fire:%Y-%m-%d %H:%M:%S} UTC"
    assert "at 02:00 UTC every day" in head.inner_text()
    shot(pg, "task-scheduled-retry")


def test_routes_page_and_the_route_page(page: object, site: Site) -> None:
    pg = page
    pg.goto(f"{site.url}/routes")  # type: ignore[attr-defined]
    nightly = pg.locator("section[data-route=erp-nightly]")  # type: ignore[attr-defined]
    schedule = nightly.locator("[data-testid=schedule-out-erp-nightly] .sched")
    assert schedule.inner_text() == "at 02:00 UTC every day"
    assert schedule.get_attribute("title") == "cron: 0 2 * * * (UTC)"
    toggle = pg.locator("[data-testid=toggle-erp-to-shop]")  # type: ignore[attr-defined]
    assert toggle.inner_text().strip() == "Active" and toggle.get_attribute("aria-checked") == "true"
    # the seed's outgoing run of erp-to-shop ended "ok" with two tasks refused: not a green ok
    seeded = next(r for r in site.store.list_runs("erp-to-shop", 50) if r.part == "outgoing" and r.actor == "seed")
    outcome = pg.locator(f"section[data-route=erp-to-shop] tr[data-run='{seeded.id}'] [data-testid=outcome]")  # type: ignore[attr-defined]
    assert outcome.inner_text() == "2 failed" and outcome.get_attribute("class") == "run-failed"
    shot(pg, "routes-humanized")
    pg.click("[data-testid=route-link-erp-to-shop]")  # type: ignore[attr-defined]
    pg.wait_for_url(f"{site.url}/routes/erp-to-shop")  # type: ignore[attr-defined]
    config = pg.inner_text("[data-testid=route-config]")  # type: ignore[attr-defined]
    assert "path: /products/{sku}" in config and "erp-browser-token" not in pg.content()  # type: ignore[attr-defined]
    assert "token: '***'" in config  # the ERP connection's bearer token, masked
    counts = site.store.stats("erp-to-shop").by_status
    tile = pg.locator("[data-testid=route-count-finished]")  # type: ignore[attr-defined]
    assert tile.get_attribute("data-count") == str(counts["finished"])
    shot(pg, "route-page")
    tile.click()
    pg.wait_for_url(re.compile(r"/tasks\?route=erp-to-shop&status=finished"))  # type: ignore[attr-defined]
    pg.goto(f"{site.url}/routes/erp-nightly")  # type: ignore[attr-defined]
    fires = pg.locator("[data-testid=next-runs] li time").all_inner_texts()  # type: ignore[attr-defined]
    assert len(fires) == 5 and all(f.endswith(" 02:00") for f in fires)


def test_chart_draws_imported_on_top_and_oldest_work_has_a_count(page: object, site: Site) -> None:
    pg = page
    lines = pg.locator("svg.chart polyline")  # type: ignore[attr-defined]
    last = lines.nth(lines.count() - 1)
    assert last.get_attribute("class") == "s-imported"
    assert last.evaluate("el => getComputedStyle(el).strokeDasharray") not in ("", "none")
    count = pg.inner_text("[data-testid=oldest-count]")  # type: ignore[attr-defined]
    assert re.match(r"[\d,]+ (new|retry|waiting) tasks? on erp-", count)


def test_rejected_hint_and_other_tasks_of_the_record(page: object, site: Site) -> None:
    pg = page
    [rejected] = site.store.list_tasks(TaskFilter(route="erp-legacy", statuses=[Status.REJECTED]), limit=1)[0]
    pg.goto(f"{site.url}/tasks/{rejected.id}")  # type: ignore[attr-defined]
    assert "comes back as a new task" in pg.inner_text("[data-testid=rejected-hint]")  # type: ignore[attr-defined]
    assert pg.locator("[data-testid=task-actions]").count() == 0  # type: ignore[attr-defined]
    task = site.store.list_tasks(TaskFilter(route="erp-to-shop", identifier="SKU-00005"), limit=1)[0][0]
    pg.goto(f"{site.url}/tasks/{task.id}")  # type: ignore[attr-defined]
    link = pg.locator("[data-testid=siblings]")  # type: ignore[attr-defined]
    assert "of SKU-00005 on this route" in link.inner_text()
    link.click()
    pg.wait_for_url(re.compile(r"/tasks\?route=erp-to-shop&identifier=SKU-00005"))  # type: ignore[attr-defined]
    identifiers = pg.locator("tr[data-task] td.mono").all_inner_texts()  # type: ignore[attr-defined]
    assert identifiers and set(identifiers) == {"SKU-00005"}


def test_edit_and_replay_a_task(page: object, site: Site) -> None:
    """Open a task, Edit, change the JSON, see the diff and the route's verdict, confirm, land on the new task."""
    import json

    pg = page
    [waiting] = site.store.list_tasks(TaskFilter(route="erp-approvals", statuses=[Status.WAITING]), limit=1)[0]
    pg.goto(f"{site.url}/tasks/{waiting.id}")  # type: ignore[attr-defined]
    pg.click("[data-testid=edit-task]")  # type: ignore[attr-defined]
    pg.wait_for_url(f"{site.url}/tasks/{waiting.id}/edit")  # type: ignore[attr-defined]
    editor = pg.locator("[data-testid=edit-entity]")  # type: ignore[attr-defined]
    entity = json.loads(editor.input_value())
    assert entity["sku"] == waiting.identifier
    # first an edit the route refuses: without its identifier
    editor.fill(json.dumps({k: v for k, v in entity.items() if k != "sku"}))
    pg.click("[data-testid=edit-preview]")  # type: ignore[attr-defined]
    verdict = pg.locator("[data-testid=edit-verdict]")  # type: ignore[attr-defined]
    assert verdict.get_attribute("data-valid") == "false"
    assert "identifier sku is missing" in verdict.inner_text()
    assert pg.locator("[data-testid=edit-confirm]").count() == 0  # type: ignore[attr-defined]
    # then a valid one: the diff and the verdict before the confirmation
    entity["title"] = "Edited in the browser"
    pg.locator("[data-testid=edit-entity]").fill(json.dumps(entity, indent=2))  # type: ignore[attr-defined]
    pg.click("[data-testid=edit-preview]")  # type: ignore[attr-defined]
    assert pg.get_attribute("[data-testid=edit-verdict]", "data-valid") == "true"  # type: ignore[attr-defined]
    diff = pg.inner_text("[data-testid=edit-diff]")  # type: ignore[attr-defined]
    assert "title" in diff and '"Edited in the browser"' in diff
    shot(pg, "task-edit-preview")
    pg.click("[data-testid=edit-confirm]")  # type: ignore[attr-defined]
    pg.wait_for_url(re.compile(r"/tasks/\d+$"))  # type: ignore[attr-defined]
    new_id = int(pg.url.rsplit("/", 1)[1])  # type: ignore[attr-defined]
    assert new_id != waiting.id
    assert f"Edited task {waiting.id} as task {new_id}" in pg.inner_text(".flash")  # type: ignore[attr-defined]
    assert pg.inner_text("[data-testid=task-head] .badge") == "new"  # type: ignore[attr-defined]
    assert "Edited in the browser" in pg.inner_text("[data-testid=entity]")  # type: ignore[attr-defined]
    assert f"edited from task {waiting.id}" in pg.inner_text("[data-testid=timeline]")  # type: ignore[attr-defined]
    shot(pg, "task-edited")
    pg.click("[data-testid=edited-from]")  # type: ignore[attr-defined]
    pg.wait_for_url(f"{site.url}/tasks/{waiting.id}")  # type: ignore[attr-defined]
    assert pg.inner_text("[data-testid=task-head] .badge") == "skipped"  # type: ignore[attr-defined]
    assert f"edited as task {new_id}" in pg.inner_text("[data-testid=task-reason]")  # type: ignore[attr-defined]
    assert site.store.get_task(new_id).entity["title"] == "Edited in the browser"  # type: ignore[union-attr]
