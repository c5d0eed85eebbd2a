"""The Tasks page's payload filter and export buttons (#17 items 3 and 4 in the dashboard)."""

from __future__ import annotations

import orjson
from webenv import Env

from crossdock.store import TaskFilter

__all__ = ["Env"]


def test_the_payload_filter_narrows_the_list_and_the_bulk_form(env: Env) -> None:
    env.run("files")
    env.login("operator")
    html = env.client.get("/tasks", params={"route": "files", "where": "name == 'item C' or name == 'item D'"}).text
    assert "<strong>2</strong> matching" in html
    assert "SKU-C" in html and "SKU-D" in html and "SKU-A" not in html
    assert 'name="where" value="name == &#39;item C&#39; or name == &#39;item D&#39;"' in html  # kept for bulk actions


def test_a_payload_filter_that_does_not_parse_is_explained_not_a_server_error(env: Env) -> None:
    env.login("viewer")
    reply = env.client.get("/tasks", params={"where": "name =="})
    assert reply.status_code == 200
    assert 'data-testid="where-error"' in reply.text and "invalid expression" in reply.text
    assert env.client.get("/tasks/export", params={"where": "name =="}).status_code == 400


def test_export_buttons_download_the_filtered_list(env: Env) -> None:
    env.run("files")
    env.login("viewer")
    html = env.client.get("/tasks", params={"route": "files"}).text
    assert 'href="/tasks/export?route=files&amp;format=ndjson"' in html
    lines = env.client.get("/tasks/export", params={"route": "files", "where": "name != 'item A'"}).content.splitlines()
    exported = [orjson.loads(x) for x in lines]
    assert sorted(x["identifier"] for x in exported) == ["SKU-B", "SKU-C", "SKU-D", "SKU-E"]
    assert exported[0]["entity"]["name"].startswith("item ")
    reply = env.client.get("/tasks/export", params={"route": "files", "format": "csv"})
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.text.splitlines()[0].startswith("id,route,identifier,status")
    assert len(reply.text.splitlines()) == 6


def test_the_api_lists_acts_on_and_exports_by_payload(env: Env) -> None:
    env.run("files")
    viewer, operator = env.auth("viewer"), env.auth("operator")
    page = env.client.get("/api/v1/tasks", params={"route": "files", "where": "name >= 'item D'"}, headers=viewer)
    assert page.status_code == 200, page.text
    assert sorted(t["identifier"] for t in page.json()["items"]) == ["SKU-D", "SKU-E"]
    bad = env.client.get("/api/v1/tasks", params={"where": "name >="}, headers=viewer)
    assert bad.status_code == 400 and bad.json()["detail"].startswith("where: invalid expression")
    bulk = env.client.post(
        "/api/v1/tasks/bulk",
        json={"action": "retry", "filter": {"route": "files", "where": "name == 'item B'"}},
        headers=operator,
    )
    assert bulk.status_code == 200 and bulk.json()["changed"] == 1, bulk.text
    exported = env.client.get("/api/v1/tasks/export", params={"route": "files", "status": "new"}, headers=viewer)
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    assert [orjson.loads(x)["identifier"] for x in exported.content.splitlines()] == ["SKU-B"]


def test_the_api_imports_records_and_fixed_exports(env: Env) -> None:
    env.run("files")
    operator = env.auth("operator")
    line = orjson.loads(env.client.get("/api/v1/tasks/export", params={"identifier": "SKU-A", "route": "files"},
                                       headers=env.auth("viewer")).content.splitlines()[0])  # fmt: skip
    line["entity"]["name"] = "item A, fixed"
    fixed = env.client.post("/api/v1/routes/files/import", json={"records": [line]}, headers=operator)
    assert fixed.status_code == 200, fixed.text
    answer = fixed.json()
    assert (answer["transformed"], answer["counts"]["changed"], len(answer["task_ids"])) == (False, 1, 1)
    plain = env.client.post(
        "/api/v1/routes/files/import", json={"records": [{"sku": "SKU-Z", "name": "z"}]}, headers=operator
    )
    assert plain.json()["transformed"] is True and plain.json()["counts"]["new"] == 1
    mixed = env.client.post("/api/v1/routes/files/import", json={"records": [line, {"sku": "SKU-Y"}]}, headers=operator)
    assert mixed.status_code == 400
    viewer = env.client.post("/api/v1/routes/files/import", json={"records": [line]}, headers=env.auth("viewer"))
    assert viewer.status_code == 403
    assert env.client.post("/api/v1/routes/nope/import", json={"records": [line]}, headers=operator).status_code == 404


def test_the_route_page_runs_a_dry_run_and_shows_what_a_run_would_do(env: Env) -> None:
    env.run("files")
    (env.project.root / "data.ndjson").write_text(
        '{"sku": "SKU-A", "name": "item A, renamed"}\n'
        '{"sku": "SKU-B", "name": "item B"}\n'
        '{"sku": "SKU-F", "name": "new"}\n'
    )
    csrf = env.login("operator")
    page = env.client.get("/routes/files").text
    assert 'data-testid="dry-run-button"' in page and 'data-testid="dry-run-result"' not in page
    before = env.store.count_tasks(TaskFilter())
    reply = env.client.post("/routes/files/dry-run", data={"csrf_token": csrf, "show": "3"})
    assert reply.status_code == 200, reply.text
    html = reply.text
    assert 'data-testid="dry-run-result"' in html
    counts = html.split('data-testid="dry-run-counts">')[1].split("</p>")[0]
    # new counts every task it would create, the changed record's included
    assert " ".join(counts.split()).startswith("read 3: <strong>new 2</strong>, changed 1, unchanged 1,"), counts
    assert "<code>name</code>" in html and "item A, renamed" in html
    assert env.store.count_tasks(TaskFilter()) == before  # nothing written
    [audit] = [a for a in env.store.list_audit() if a.action == "route.dry_run"]
    assert audit.target == {"route": "files"}
    env.login("viewer")
    assert env.client.post("/routes/files/dry-run", data={"csrf_token": csrf}).status_code == 403
