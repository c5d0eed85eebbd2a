"""``POST /api/v1/routes/{name}/dry-run``: the run's counts, diffs and requests, for operators, audited, and
nothing written but the audit row or sent."""

from __future__ import annotations

from typing import Any

from webenv import SHOP_TOKEN, Env

from crossdock.store import TaskFilter


def dry(env: Env, route: str, role: str = "operator", **params: str) -> tuple[int, Any]:
    reply = env.client.post(f"/api/v1/routes/{route}/dry-run", params=params, headers=env.auth(role))
    return reply.status_code, reply.json()


def test_dry_run_reports_what_the_next_run_does_and_writes_only_the_audit_row(env: Env) -> None:
    env.run("to-shop")
    sent = env.shop.stats()["requests"]
    (env.project.root / "shop.ndjson").write_text(
        '{"sku": "SKU-A", "price": 10, "tags": ["x", "y"]}\n{"sku": "SKU-B", "price": 2}\n'
        f'{{"sku": "SKU-C", "price": 3, "note": "token {SHOP_TOKEN}"}}\n{{"sku": "SKU-D", "price": 4}}\n'
    )
    tasks_before = env.store.list_tasks(TaskFilter(), limit=1000)[0]
    runs_before = env.store.list_runs("to-shop")

    code, report = dry(env, "to-shop", show="5")
    assert code == 200, report
    assert report["dry_run"] is True and report["status"] == "ok"
    # SKU-B failed (422) before and comes again unchanged: touched, not resent
    assert report["counts"] == {
        "new": 2,
        "changed": 1,
        "unchanged": 2,
        "filtered": 0,
        "rejected": 0,
        "superseded": 0,
    }
    [change] = report["changes"]
    assert change["identifier"] == "SKU-A"
    assert {f["path"] for f in change["fields"]} == {"price", "tags"}
    requests = {r["identifier"]: r["request"] for r in report["requests"]}
    assert set(requests) == {"SKU-A", "SKU-D"}
    assert requests["SKU-D"]["method"] == "PUT"
    assert requests["SKU-D"]["url"].endswith("/products/SKU-D")
    assert requests["SKU-D"]["headers"]["Authorization"] == "***"
    assert SHOP_TOKEN not in str(report)

    assert env.shop.stats()["requests"] == sent, "the dry run sent something"
    assert env.store.list_tasks(TaskFilter(), limit=1000)[0] == tasks_before
    assert env.store.list_runs("to-shop") == runs_before
    [entry] = [e for e in env.store.list_audit(limit=10) if e.action == "route.dry_run"]
    assert entry.target == {"route": "to-shop"} and entry.actor == "operator-token"
    assert "new 2, changed 1" in (entry.detail or "")

    real = env.run("to-shop")["incoming"]["routes"]["to-shop"]
    assert {k: real[k] for k in report["counts"]} == report["counts"]


def test_dry_run_needs_an_operator_and_a_known_route(env: Env) -> None:
    assert dry(env, "to-shop", role="viewer")[0] == 403
    assert env.client.post("/api/v1/routes/to-shop/dry-run").status_code == 401
    assert dry(env, "nope")[0] == 404
    assert dry(env, "to-shop", show="-1")[0] == 422
    assert not [e for e in env.store.list_audit(limit=10) if e.action == "route.dry_run"]


def test_a_failing_source_is_reported_not_raised(env: Env) -> None:
    (env.project.root / "shop.ndjson").unlink()
    code, report = dry(env, "to-shop")
    assert code == 200
    assert report["status"] == "failed" and "shop.ndjson" in report["error"]
    assert report["read"] == 0
