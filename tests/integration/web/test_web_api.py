"""The REST API of DESIGN section 3, endpoint by endpoint, on SQLite."""

from __future__ import annotations

import json
import socket
import time

import pytest
from webenv import Env

from crossdock.tasks import ALL_STATUSES

STATUSES = {s.value for s in ALL_STATUSES}


def test_health_is_open_and_names_the_backend(env: Env) -> None:
    reply = env.client.get("/api/v1/health")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "database": "sqlite"}


def test_stats_have_every_status_and_route(env: Env) -> None:
    env.run("files")
    data = env.client.get("/api/v1/stats", headers=env.auth("viewer")).json()
    assert set(data) == {"total", "by_status", "by_route"}
    assert set(data["by_status"]) == STATUSES
    assert data["total"] == 5 and data["by_status"]["finished"] == 5
    assert set(data["by_route"]) >= {"files", "to-shop", "hook"}
    only = env.client.get("/api/v1/stats", params={"route": "to-shop"}, headers=env.auth("viewer")).json()
    assert only["total"] == 0


def test_task_list_filters_and_cursor_paging(env: Env) -> None:
    env.run("files")
    env.run("to-shop")
    viewer = env.auth("viewer")
    everything = env.client.get("/api/v1/tasks", params={"limit": 100}, headers=viewer).json()
    assert len(everything["items"]) == 8 and everything["next_cursor"] is None
    ids = [t["id"] for t in everything["items"]]
    assert ids == sorted(ids, reverse=True)

    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = env.client.get("/api/v1/tasks", params=params, headers=viewer).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == ids

    failed = env.client.get("/api/v1/tasks", params={"status": "failed"}, headers=viewer).json()["items"]
    assert [(t["route"], t["identifier"]) for t in failed] == [("to-shop", "SKU-B")]
    two = env.client.get(
        "/api/v1/tasks",
        params=[("status", "failed"), ("status", "finished"), ("route", "to-shop")],
        headers=viewer,
    ).json()["items"]
    assert {t["identifier"] for t in two} == {"SKU-A", "SKU-B", "SKU-C"}
    one = env.client.get("/api/v1/tasks", params={"identifier": "SKU-D"}, headers=viewer).json()["items"]
    assert [t["route"] for t in one] == ["files"]
    later = env.client.get("/api/v1/tasks", params={"created_after": "2999-01-01T00:00:00Z"}, headers=viewer).json()[
        "items"
    ]
    assert later == []
    assert env.client.get("/api/v1/tasks", params={"cursor": "x"}, headers=viewer).status_code == 422
    assert env.client.get("/api/v1/tasks", params={"created_after": "0.5"}, headers=viewer).status_code == 422
    assert env.client.get("/api/v1/tasks", params={"status": "bogus"}, headers=viewer).status_code == 422


def test_task_detail_has_entity_logs_and_allowed_actions(env: Env) -> None:
    env.run("to-shop")
    failed = env.client.get("/api/v1/tasks", params={"status": "failed"}, headers=env.auth("viewer")).json()
    task_id = failed["items"][0]["id"]
    task = env.client.get(f"/api/v1/tasks/{task_id}", headers=env.auth("viewer")).json()
    for key in (
        "id",
        "route",
        "identifier",
        "status",
        "attempts",
        "created_at",
        "updated_at",
        "next_attempt_at",
    ):
        assert key in task
    assert task["entity"] == {"sku": "SKU-B", "price": 2}
    assert "category not found" in task["error"]
    assert task["created_at"].endswith("Z")
    phases = [line["phase"] for line in task["logs"]]
    assert phases[0] == "import" and "export" in phases
    for line in task["logs"]:
        assert {"at", "level", "phase", "message"} <= set(line)
    export = next(line for line in task["logs"] if line["phase"] == "export" and line["to"] == "failed")
    assert export["details"]["status"] == 422
    assert set(task["allowed_actions"]) == {"retry", "skip"}
    assert env.client.get("/api/v1/tasks/999999", headers=env.auth("viewer")).status_code == 404


def test_single_actions_and_refusals(env: Env) -> None:
    env.run("files")
    op = env.auth("operator")
    task_id = env.client.get("/api/v1/tasks", headers=op).json()["items"][0]["id"]
    refused = env.client.post(f"/api/v1/tasks/{task_id}/finish", headers=op)
    assert refused.status_code == 409
    assert "cannot finish a task in status finished" in refused.json()["detail"]
    assert "retry" in refused.json()["detail"]  # names the allowed transitions

    retried = env.client.post(f"/api/v1/tasks/{task_id}/retry", json={"reason": "resend please"}, headers=op)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "new" and retried.json()["attempts"] == 0
    assert retried.json()["logs"][-1]["message"].count("resend please") == 1
    skipped = env.client.post(f"/api/v1/tasks/{task_id}/skip", headers=op)
    assert skipped.json()["status"] == "skipped"
    assert env.client.post("/api/v1/tasks/424242/retry", headers=op).status_code == 404
    assert env.client.post(f"/api/v1/tasks/{task_id}/fail", json={"bogus": 1}, headers=op).status_code == 422


def test_waiting_tasks_are_finished_or_failed_by_hand(env: Env) -> None:
    env.run("approvals")
    op = env.auth("operator")
    waiting = env.client.get("/api/v1/tasks", params={"status": "waiting"}, headers=op).json()["items"]
    assert len(waiting) == 5
    first, second = waiting[0]["id"], waiting[1]["id"]
    assert env.client.post(f"/api/v1/tasks/{first}/finish", headers=op).json()["status"] == "finished"
    assert env.client.post(f"/api/v1/tasks/{second}/fail", headers=op).json()["status"] == "failed"
    assert env.client.post(f"/api/v1/tasks/{first}/fail", headers=op).status_code == 409


def test_bulk_by_ids_and_by_filter(env: Env) -> None:
    env.run("approvals")
    op = env.auth("operator")
    ids = [t["id"] for t in env.client.get("/api/v1/tasks", headers=op).json()["items"]]
    reply = env.client.post("/api/v1/tasks/bulk", json={"action": "finish", "ids": ids[:2]}, headers=op)
    assert reply.status_code == 200
    assert reply.json()["matched"] == 2 and reply.json()["changed"] == 2
    by_filter = env.client.post(
        "/api/v1/tasks/bulk",
        json={"action": "finish", "filter": {"status": ["waiting", "finished"], "route": "approvals"}},
        headers=op,
    ).json()
    assert by_filter["matched"] == 5 and by_filter["changed"] == 3
    assert by_filter["refused"]  # the two finished ones, with the reason
    stats = env.client.get("/api/v1/stats", params={"route": "approvals"}, headers=op).json()
    assert stats["by_status"]["finished"] == 5
    # neither, an empty filter, both, no ids: the schema itself refuses them (422), as the OpenAPI document says
    assert env.client.post("/api/v1/tasks/bulk", json={"action": "retry"}, headers=op).status_code == 422
    assert env.client.post("/api/v1/tasks/bulk", json={"action": "retry", "filter": {}}, headers=op).status_code == 422
    nulls = {"action": "retry", "filter": {"route": None}}
    assert env.client.post("/api/v1/tasks/bulk", json=nulls, headers=op).status_code == 422
    both = {"action": "retry", "ids": [1], "filter": {"route": "files"}}
    assert env.client.post("/api/v1/tasks/bulk", json=both, headers=op).status_code == 422
    assert env.client.post("/api/v1/tasks/bulk", json={"action": "retry", "ids": []}, headers=op).status_code == 422
    assert env.client.post("/api/v1/tasks/bulk", json={"action": "retry", "ids": [True]}, headers=op).status_code == 422
    assert env.client.post("/api/v1/tasks/bulk", json={"action": "claim", "ids": [1]}, headers=op).status_code == 422


def test_routes_listing(env: Env) -> None:
    env.run("files")
    routes = env.client.get("/api/v1/routes", headers=env.auth("viewer")).json()
    by_name = {r["name"]: r for r in routes}
    assert set(by_name) == set(env.project.routes)
    files = by_name["files"]
    for key in (
        "name", "active", "realtime", "waiting", "counts", "incoming_schedule", "outgoing_schedule",
        "next_incoming", "next_outgoing", "last_runs",
    ):  # fmt: skip
        assert key in files
    assert set(files["counts"]) == STATUSES and files["counts"]["finished"] == 5
    assert files["incoming_schedule"] == "*/5 * * * *" and files["next_incoming"].endswith("Z")
    assert {r["part"] for r in files["last_runs"]} == {"incoming", "outgoing"}
    assert by_name["approvals"]["waiting"] is True and by_name["live-hook"]["realtime"] is True
    assert by_name["approvals"]["next_incoming"] is None


def test_run_in_background_answers_202(env: Env) -> None:
    op = env.auth("operator")
    reply = env.client.post("/api/v1/routes/files/run", params={"part": "incoming"}, headers=op)
    assert reply.status_code == 202
    assert reply.json()["parts"] == ["incoming"] and reply.json()["status"] == "started"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = env.client.get("/api/v1/stats", params={"route": "files"}, headers=op).json()
        if stats["by_status"]["new"] == 5:
            break
        time.sleep(0.05)
    assert stats["by_status"]["new"] == 5  # imported, not exported: only the incoming part ran
    assert env.client.post("/api/v1/routes/files/run", params={"part": "sideways"}, headers=op).status_code == 422
    assert env.client.post("/api/v1/routes/nope/run", headers=op).status_code == 404


def test_activate_and_deactivate(env: Env) -> None:
    op = env.auth("operator")
    off = env.client.post("/api/v1/routes/files/deactivate", headers=op)
    assert off.json() == {"name": "files", "active": False}
    routes = {r["name"]: r for r in env.client.get("/api/v1/routes", headers=op).json()}
    assert routes["files"]["active"] is False
    assert env.client.post("/api/v1/routes/files/run", headers=op).status_code == 409
    assert env.client.post("/api/v1/routes/files/activate", headers=op).json()["active"] is True
    assert env.client.post("/api/v1/routes/nope/activate", headers=op).status_code == 404


def test_runs_and_audit(env: Env) -> None:
    env.run("files")
    op = env.auth("operator")
    runs = env.client.get("/api/v1/runs", params={"route": "files"}, headers=env.auth("viewer")).json()
    assert {r["part"] for r in runs} == {"incoming", "outgoing"}
    task_id = env.client.get("/api/v1/tasks", headers=op).json()["items"][0]["id"]
    env.client.post(f"/api/v1/tasks/{task_id}/retry", json={"reason": "because"}, headers=op)
    env.client.post("/api/v1/routes/files/deactivate", headers=op)
    audit = env.client.get("/api/v1/audit", headers=env.auth("viewer")).json()["items"]
    actions = [e["action"] for e in audit]
    assert actions[:3] == ["route.deactivate", "task.retry", "route.run"]
    retry = audit[1]
    assert retry["actor"] == "operator-token" and retry["target"] == {"ids": [task_id]} and retry["changed"] == 1
    assert retry["detail"] == "because"
    only = env.client.get("/api/v1/audit", params={"action": "task."}, headers=env.auth("viewer")).json()["items"]
    assert [e["action"] for e in only] == ["task.retry"]
    csv_reply = env.client.get("/api/v1/audit", params={"format": "csv"}, headers=env.auth("viewer"))
    assert csv_reply.headers["content-type"].startswith("text/csv")
    lines = csv_reply.text.strip().splitlines()
    assert lines[0] == "id,at,actor,action,target,changed,detail" and len(lines) == len(audit) + 1
    assert env.client.get("/api/v1/audit.csv", headers=env.auth("viewer")).text == csv_reply.text


def test_tokens_are_managed_by_admins(env: Env) -> None:
    admin = env.auth("admin")
    made = env.client.post("/api/v1/tokens", json={"role": "viewer", "name": "grafana"}, headers=admin)
    assert made.status_code == 201
    token = made.json()["token"]
    listed = env.client.get("/api/v1/tokens", headers=admin).json()
    assert "grafana" in [t["name"] for t in listed]
    assert token not in env.client.get("/api/v1/tokens", headers=admin).text
    assert env.client.get("/api/v1/stats", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert env.client.delete(f"/api/v1/tokens/{made.json()['id']}", headers=admin).status_code == 200
    assert env.client.get("/api/v1/stats", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_openapi_docs(env: Env) -> None:
    assert env.client.get("/api/docs").status_code == 200
    spec = env.client.get("/api/openapi.json").json()
    assert "/api/v1/tasks/{task_id}/retry" in spec["paths"] and "/api/v1/webhooks/{name}" in spec["paths"]
    paths = spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert paths["/api/v1/health"]["get"]["security"] == []
    assert paths["/api/v1/tasks"]["get"]["security"] == [{"bearer": ["viewer"]}]
    assert paths["/api/v1/tasks/bulk"]["post"]["security"] == [{"bearer": ["operator"]}]
    assert paths["/api/v1/tokens"]["post"]["security"] == [{"bearer": ["admin"]}]
    assert {"401", "403", "404", "409"} <= set(paths["/api/v1/tasks/{task_id}/retry"]["post"]["responses"])
    assert "202" in paths["/api/v1/routes/{name}/run"]["post"]["responses"]
    assert {"202", "400", "401", "404", "409", "413"} <= set(paths["/api/v1/webhooks/{name}"]["post"]["responses"])
    assert "text/csv" in paths["/api/v1/audit"]["get"]["responses"]["200"]["content"]
    bulk_body = paths["/api/v1/tasks/bulk"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(bulk_body.get("anyOf") or bulk_body["oneOf"]) == 2
    cursor = next(p for p in paths["/api/v1/tasks"]["get"]["parameters"] if p["name"] == "cursor")
    assert "[0-9]" in json.dumps(cursor["schema"])
    for path in ("/api/v1/tasks/bulk", "/api/v1/tokens"):
        reply = env.client.options(path, headers=env.auth("admin"))
        assert reply.status_code == 405
        allowed = {m.strip() for m in reply.headers["allow"].split(",")}
        assert allowed == {m.upper() for m in paths[path]}, (path, allowed)


def test_metrics(env: Env) -> None:
    env.run("files")
    env.run("to-shop")
    assert env.client.get("/metrics").status_code == 401
    reply = env.client.get("/metrics", headers=env.auth("viewer"))
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    assert 'crossdock_tasks{route="files",status="finished"} 5.0' in text
    assert 'crossdock_tasks{route="to-shop",status="failed"} 1.0' in text
    assert 'crossdock_imported_total{route="to-shop"} 3.0' in text
    assert 'crossdock_delivered_total{route="to-shop"} 2.0' in text
    assert 'crossdock_queue_age_seconds{route="files",status="new"} 0.0' in text
    assert 'crossdock_delivery_errors_total{error_class="permanent",route="to-shop"} 1.0' in text
    assert 'crossdock_delivery_seconds_count{outcome="delivered",route="to-shop"} 2.0' in text


def test_cli_task_actions_are_audited_like_the_apis(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """`crossdock tasks retry ID` and a bulk skip by filter from the command line show in GET /api/v1/audit."""
    from typer.testing import CliRunner

    from crossdock.cli import app as cli_app

    env.run("files")  # five finished tasks
    db = f"sqlite:///{env.project.root / 'web.db'}"
    monkeypatch.setenv("CROSSDOCK_ACTOR", "anna")
    task_id = env.client.get("/api/v1/tasks", headers=env.auth("viewer")).json()["items"][0]["id"]
    runner = CliRunner()
    retried = runner.invoke(cli_app, ["tasks", "retry", str(task_id), "--db", db, "--reason", "fixed the shop"])
    assert retried.exit_code == 0, retried.output
    skipped = runner.invoke(cli_app, ["tasks", "skip", "--status", "new", "--route", "files", "--db", db])
    assert skipped.exit_code == 0, skipped.output
    audit = env.client.get("/api/v1/audit", headers=env.auth("viewer")).json()["items"]
    bulk, single = audit[0], audit[1]
    host = socket.gethostname()
    assert (single["actor"], single["action"], single["target"], single["changed"], single["detail"]) == (
        f"cli:anna@{host}",
        "task.retry",
        {"ids": [task_id]},
        1,
        "fixed the shop",
    )
    assert (bulk["actor"], bulk["action"], bulk["changed"]) == (f"cli:anna@{host}", "tasks.bulk_skip", 1)
    assert bulk["target"] == {"filter": {"status": ["new"], "route": "files"}}
