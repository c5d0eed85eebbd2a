"""The dashboard's pages and form flows, without a browser; and no secret anywhere."""

from __future__ import annotations

import re

from webenv import HOOK_SECRET, SHOP_TOKEN, Env

from crossdock.store import TaskFilter
from crossdock.tasks import Status


def test_every_page_renders_with_the_stylesheet(env: Env) -> None:
    env.run("files")
    env.run("to-shop")
    env.login("admin")
    for path in (
        "/",
        "/tasks",
        "/tasks?status=failed&route=to-shop",
        "/tasks/1",
        "/routes",
        "/audit",
        "/login",
    ):
        reply = env.client.get(path)
        assert reply.status_code == 200, path
        assert '<link rel="stylesheet" href="/static/crossdock.css">' in reply.text
    assert env.client.get("/static/crossdock.css").status_code == 200
    htmx = env.client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:2000]
    missing = env.client.get("/tasks/99999")
    assert missing.status_code == 404 and "crossdock.css" in missing.text


def test_monitor_shows_counts_from_the_counters(env: Env) -> None:
    env.run("files")
    env.run("to-shop")
    env.login("viewer")
    html = env.client.get("/").text
    assert re.search(r'data-testid="total">8<', html)
    assert 'data-testid="count-finished" data-count="7"' in html
    assert 'data-testid="count-failed" data-count="1"' in html
    assert 'data-testid="route-to-shop-failed">1<' in html
    assert "category not found" in html  # top errors
    assert 'hx-get="/fragments/monitor"' in html and "<svg" in html
    fragment = env.client.get("/fragments/monitor").text
    assert "<html" not in fragment and 'data-testid="count-failed" data-count="1"' in fragment


def test_task_list_filters_stay_in_the_url_and_page_by_cursor(env: Env) -> None:
    env.run("files")
    env.run("to-shop")
    env.login("operator")
    html = env.client.get("/tasks?status=failed&status=finished&route=to-shop").text
    assert 'data-testid="matching"><strong>3</strong>' in html
    assert len(re.findall(r'<tr data-task="', html)) == 3
    assert re.search(r'value="failed" checked', html) and re.search(r'value="finished" checked', html)
    assert "Select all 3 matching" in html
    # a failed/finished filter allows retry and skip, never finish or fail
    assert 'value="retry"' in html and 'value="finish"' not in html
    search = env.client.get("/tasks?q=SKU-D").text
    assert len(re.findall(r'<tr data-task="', search)) == 1
    page = env.client.get("/tasks?route=files").text
    assert len(re.findall(r'<tr data-task="', page)) == 5
    assert 'data-testid="older"' not in page


def test_bulk_retry_by_filter_asks_for_confirmation(env: Env) -> None:
    env.run("files")
    csrf = env.login("operator")
    form = {"csrf_token": csrf, "action": "retry", "all": "1", "status": "finished", "route": "files"}
    confirm = env.client.post("/tasks/bulk", data=form)
    assert confirm.status_code == 200
    assert "Retry 5 tasks?" in confirm.text
    assert env.store.stats("files").by_status["finished"] == 5  # nothing changed yet
    done = env.client.post("/tasks/bulk", data={**form, "confirm": "1", "reason": "replay"}, follow_redirects=False)
    assert done.status_code == 303
    assert env.store.stats("files").by_status["new"] == 5
    flash = env.client.get(done.headers["location"]).text
    assert "Retry: 5 task(s) changed" in flash


def test_bulk_by_selected_ids(env: Env) -> None:
    env.run("approvals")
    csrf = env.login("operator")
    ids = [str(t.id) for t in env.store.list_tasks(TaskFilter(route="approvals"), limit=2)[0]]
    base = [("csrf_token", csrf), ("action", "finish"), *[("ids", i) for i in ids]]
    confirm = env.client.post("/tasks/bulk", data=dict(base) | {"ids": ids})
    assert "Mark finished 2 tasks?" in confirm.text
    done = env.client.post("/tasks/bulk", data=dict(base) | {"ids": ids, "confirm": "1"}, follow_redirects=False)
    assert done.status_code == 303
    assert env.store.stats("approvals").by_status["finished"] == 2
    nothing = env.client.post("/tasks/bulk", data={"csrf_token": csrf, "action": "skip"}, follow_redirects=False)
    assert nothing.status_code == 303 and env.store.stats("approvals").by_status["skipped"] == 0


def test_task_page_actions_and_timeline(env: Env) -> None:
    env.run("to-shop")
    failed = env.store.list_tasks(TaskFilter(route="to-shop", identifier="SKU-B"))[0][0]
    csrf = env.login("operator")
    html = env.client.get(f"/tasks/{failed.id}").text
    assert "category not found" in html and 'data-testid="timeline"' in html
    assert "<details" in html and "PUT" in html and "422" in html  # export line unfolds
    assert "&#34;sku&#34;: &#34;SKU-B&#34;" in html or '"sku": "SKU-B"' in html
    reply = env.client.post(
        f"/tasks/{failed.id}/action", data={"csrf_token": csrf, "action": "retry"}, follow_redirects=False
    )
    assert reply.status_code == 303
    after = env.client.get(reply.headers["location"]).text
    assert "is now new" in after
    refused = env.client.post(f"/tasks/{failed.id}/action", data={"csrf_token": csrf, "action": "finish"})
    assert "Refused: cannot finish" in refused.text


def test_routes_page_toggle_and_run(env: Env) -> None:
    csrf = env.login("operator")
    html = env.client.get("/routes").text
    assert "*/5 * * * *" in html and "realtime" in html and "waiting" in html and "retry ×3" in html
    off = env.client.post("/routes/files/active", data={"csrf_token": csrf, "active": "0"}, follow_redirects=False)
    assert off.status_code == 303
    assert env.store.route_states()["files"].active is False
    assert "Route files is now inactive" in env.client.get("/routes").text
    refused = env.client.post("/routes/files/run", data={"csrf_token": csrf, "part": "both"})
    assert "Not started" in refused.text
    env.client.post("/routes/files/active", data={"csrf_token": csrf, "active": "1"})
    started = env.client.post("/routes/files/run", data={"csrf_token": csrf, "part": "incoming"})
    assert "Started incoming of files" in started.text


def test_audit_page_filters_and_exports(env: Env) -> None:
    env.run("files")
    csrf = env.login("admin")
    env.client.post("/routes/files/active", data={"csrf_token": csrf, "active": "0"})
    html = env.client.get("/audit?action=route.").text
    assert "route.deactivate" in html and "login</code>" not in html
    csv_text = env.client.get("/audit.csv?action=route.deactivate").text
    assert csv_text.splitlines()[0].startswith("id,at,actor,action")
    assert len(csv_text.strip().splitlines()) == 2


def test_logout_ends_the_session(env: Env) -> None:
    csrf = env.login("viewer")
    assert env.client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert env.client.get("/", follow_redirects=False).status_code == 303


def test_no_secret_in_any_answer(env: Env) -> None:
    """The shop's bearer token (from ${SHOP_TOKEN}) is in the config and in one record's data."""
    env.run("files")
    env.run("to-shop")
    env.client.post(
        "/api/v1/webhooks/hook",
        json={"sku": "W", "note": SHOP_TOKEN},
        headers={"X-Crossdock-Secret": HOOK_SECRET},
    )
    bodies: dict[str, str] = {}
    admin = env.auth("admin")
    ids = [t["id"] for t in env.client.get("/api/v1/tasks", params={"limit": 100}, headers=admin).json()["items"]]
    api_paths = [
        "/api/v1/health", "/api/v1/stats", "/api/v1/tasks?limit=100", "/api/v1/routes", "/api/v1/runs",
        "/api/v1/audit", "/api/v1/audit.csv", "/api/v1/tokens", "/metrics", "/api/openapi.json",
    ]  # fmt: skip
    api_paths += [f"/api/v1/tasks/{i}" for i in ids]
    for path in api_paths:
        bodies[path] = env.client.get(path, headers=admin).text
    env.login("admin")
    pages = ["/", "/fragments/monitor", "/tasks", "/routes", "/audit", "/audit.csv", "/tasks?q=token"]
    pages += [f"/tasks/{i}" for i in ids] + [f"/routes/{name}" for name in env.project.routes]
    for path in pages:
        bodies[path] = env.client.get(path).text
    the_one = next(i for i in ids if "SKU-C" in bodies[f"/api/v1/tasks/{i}"])
    assert "token ***" in bodies[f"/api/v1/tasks/{the_one}"]  # the record was there, masked
    leaks = [path for path, text in bodies.items() if SHOP_TOKEN in text]
    assert leaks == []


def test_task_pages_go_older_by_cursor(env: Env) -> None:
    from fastapi.testclient import TestClient

    from crossdock.web.app import create_app
    from crossdock.web.settings import WebSettings

    env.run("files")
    app = create_app(env.project, env.store, settings=WebSettings(page_size=2, token_cache_seconds=0))
    with TestClient(app) as client:
        client.get(f"/login?token={env.tokens['viewer']}")
        seen: list[str] = []
        url: str | None = "/tasks?route=files"
        while url:
            html = client.get(url).text
            seen += re.findall(r'<tr data-task="(\d+)"', html)
            found = re.search(r'href="([^"]+)" data-testid="older"', html)
            url = found.group(1).replace("&amp;", "&") if found else None
            assert url is None or "route=files" in url  # the filter stays in the URL
        assert [int(i) for i in seen] == sorted((int(i) for i in seen), reverse=True) and len(seen) == 5


def test_a_paused_route_shows_why_and_activation_clears_it(env: Env) -> None:
    """pause_after stores why crossdock switched a route off; the Routes page and the API show it."""
    from datetime import UTC, datetime

    reason = "paused after 10 consecutive failed tasks at 2026-12-04 10:31:07 UTC; activate the route to resume"
    env.store.set_route_active("files", False, now=datetime.now(UTC), paused_reason=reason)
    csrf = env.login("operator")
    assert f"Paused by crossdock: {reason}" in env.client.get("/routes").text
    [row] = [r for r in env.client.get("/api/v1/routes", headers=env.auth("viewer")).json() if r["name"] == "files"]
    assert (row["active"], row["paused_reason"]) == (False, reason) and row["paused_at"] is not None
    env.client.post("/routes/files/active", data={"csrf_token": csrf, "active": "1"})
    assert "Paused by crossdock" not in env.client.get("/routes").text
    assert env.store.route_states()["files"].paused_reason is None


def test_a_skip_reason_is_a_neutral_reason_not_a_red_error(env: Env) -> None:
    env.run("files")
    env.run("files")  # the same records again: skipped as unchanged, with the task they match as the reason
    env.login("viewer")
    html = env.client.get("/tasks?status=skipped&route=files").text
    assert "Error or reason" in html and "Last error</th>" not in html
    cells = re.findall(r'<td class="([\w-]+)" title="unchanged since task \d+" data-testid="reason">', html)
    assert cells == ["reason-text"] * 5
    skipped = env.store.list_tasks(TaskFilter(route="files", statuses=[Status.SKIPPED]))[0][0]
    page = env.client.get(f"/tasks/{skipped.id}").text
    assert 'data-testid="task-reason"><strong>Reason</strong> unchanged since task' in page
    assert 'data-testid="task-error"' not in page


def test_a_rejected_task_says_why_it_has_no_actions(env: Env) -> None:
    env.client.post("/api/v1/webhooks/hook", json={"name": "no sku"}, headers={"X-Crossdock-Secret": HOOK_SECRET})
    [rejected] = env.store.list_tasks(TaskFilter(route="hook", statuses=[Status.REJECTED]))[0]
    env.login("operator")
    html = env.client.get(f"/tasks/{rejected.id}").text
    assert 'data-testid="task-error"' in html  # the refusal is an error, in red
    assert 'data-testid="rejected-hint"' in html and "comes back as a new task" in html
    assert 'data-testid="task-actions"' not in html


def test_identifier_filter_and_the_link_to_the_other_tasks_of_a_record(env: Env) -> None:
    env.run("files")
    env.run("files")
    env.login("viewer")
    first = env.store.list_tasks(TaskFilter(route="files", identifier="SKU-C"))[0][-1]
    html = env.client.get(f"/tasks/{first.id}").text
    assert 'href="/tasks?route=files&amp;identifier=SKU-C" data-testid="siblings">1 other task of SKU-C' in html
    listed = env.client.get("/tasks?route=files&identifier=SKU-C").text
    assert len(re.findall(r'<tr data-task="', listed)) == 2
    assert 'data-testid="matching"><strong>2</strong>' in listed
    assert 'name="identifier" value="SKU-C"' in listed  # kept in the filter form and in the bulk form


def test_oldest_waiting_work_gives_its_count(env: Env) -> None:
    env.run("approvals")
    env.login("viewer")
    html = env.client.get("/").text
    assert re.search(r'data-testid="oldest-count"><strong>5</strong> waiting tasks on approvals', html)
    assert re.search(r"waiting 5</a>", html)


def test_schedules_in_words_and_run_outcomes(env: Env) -> None:
    from crossdock.web.views import humanize_cron, run_outcome

    assert humanize_cron("* * * * *") == "every minute"
    assert humanize_cron("*/5 * * * *") == "every 5 minutes"
    assert humanize_cron("0 2 * * *") == "at 02:00 UTC every day"
    assert humanize_cron("30 6 * * 1-5") == "at 06:30 UTC on weekdays"
    assert humanize_cron("0 3 1 * *") == "at 03:00 UTC on the 1st of every month"
    assert humanize_cron("@hourly") == "every hour"
    assert humanize_cron("0 0 * 1 *") == "0 0 * 1 *"  # not a common shape: as written
    assert run_outcome("outgoing", "ok", {"by_status": {"finished": 2, "failed": 1}}).css == "run-failed"
    assert run_outcome("outgoing", "ok", {"by_status": {"retry": 3}}).label == "3 to retry"
    assert run_outcome("incoming", "ok", {"rejected": 2}).label == "2 rejected"
    assert run_outcome("outgoing", "ok", {"by_status": {"finished": 2}}).label == "ok"
    assert run_outcome("outgoing", "failed", {}, "boom").css == "run-failed"
    env.run("to-shop")
    env.login("operator")
    html = env.client.get("/routes").text
    assert 'title="cron: */5 * * * * (UTC)">every 5 minutes</span>' in html
    assert 'title="cron: * * * * * (UTC)">every minute</span>' in html
    outcomes = re.findall(r'<section class="card route-card" data-route="to-shop">.*?</section>', html, re.S)[0]
    assert 'class="run-failed" data-testid="outcome" title="the run ended, 1 task(s) failed">1 failed<' in outcomes
    assert 'href="/routes/to-shop" data-testid="route-link-to-shop"' in html
    toggle = re.search(r'data-testid="toggle-files".*?</button>', html, re.S)
    assert (
        toggle and '<span class="toggle-state">Active</span>' in toggle.group(0) and "Deactivate" not in toggle.group(0)
    )
    assert 'data-testid="last-run-to-shop">✗ 1 failed<' in env.client.get("/").text


def test_the_route_page(env: Env) -> None:
    env.run("to-shop")
    csrf = env.login("operator")
    html = env.client.get("/routes/to-shop").text
    assert "<h1>to-shop</h1>" in html
    assert 'href="/tasks?route=to-shop&status=failed" data-testid="route-count-failed" data-count="1"' in html
    assert 'data-testid="route-count-finished" data-count="2"' in html
    assert 'data-testid="route-errors"' in html and "category not found" in html
    assert 'class="run-failed" data-testid="outcome"' in html
    config = re.search(r'data-testid="route-config">(.*?)</pre>', html, re.S)
    assert config and "path: /products/{sku}" in config.group(1) and "connections:" in config.group(1)
    assert "token: &#39;***&#39;" in config.group(1) or "token: '***'" in config.group(1)
    assert SHOP_TOKEN not in html
    hook = env.client.get("/routes/hook").text
    assert HOOK_SECRET not in hook and "secret: &#39;***&#39;" in hook
    files = env.client.get("/routes/files").text
    fires = re.search(r'data-testid="next-runs">(.*?)</dl>', files, re.S)
    assert fires and fires.group(1).count("<li>") == 10 and "every 5 minutes" in fires.group(1)
    assert env.client.get("/routes/nope").status_code == 404
    back = env.client.post(
        "/routes/files/active",
        data={"csrf_token": csrf, "active": "0", "next": "/routes/files"},
        follow_redirects=False,
    )
    assert back.headers["location"] == "/routes/files"
    away = env.client.post(
        "/routes/files/active",
        data={"csrf_token": csrf, "active": "1", "next": "//evil.example"},
        follow_redirects=False,
    )
    assert away.headers["location"] == "/"
