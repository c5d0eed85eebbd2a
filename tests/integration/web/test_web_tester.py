"""The transformer tester: ``POST /api/v1/routes/{name}/test`` and the route page's "Test the transforms" panel.

Viewers may use it (it reads only); it answers a real run's verdict and delta, masks secrets, and writes nothing:
no task, run, audit row, and no request to the target."""

from __future__ import annotations

import html
from typing import Any

from webenv import SHOP_TOKEN, Env

from crossdock.store import TaskFilter


def try_record(env: Env, route: str, body: Any, role: str = "viewer") -> tuple[int, Any]:
    reply = env.client.post(f"/api/v1/routes/{route}/test", json=body, headers=env.auth(role))
    return reply.status_code, reply.json()


def snapshot(env: Env) -> tuple[Any, ...]:
    return (
        env.store.list_tasks(TaskFilter(), limit=1000)[0],
        env.store.list_runs("to-shop"),
        env.store.list_audit(limit=1000),
        env.shop.stats()["requests"],
    )


def test_the_api_gives_a_real_runs_verdict_and_delta_and_writes_nothing(env: Env) -> None:
    env.run("to-shop")  # SKU-A and SKU-C finished, SKU-B refused for good (422): failed
    before = snapshot(env)
    finished = {t.identifier: t.id for t in env.store.list_tasks(TaskFilter(route="to-shop"), limit=10)[0]}

    code, changed = try_record(env, "to-shop", {"record": {"sku": "SKU-A", "price": 5, "tags": ["x"]}})
    assert code == 200, changed
    assert changed["outcome"] == "ok" and changed["identifiers"] == ["SKU-A"]
    assert [s["stage"] for s in changed["trace"]] == ["input"]  # no incoming or route transform
    [result] = changed["results"]
    assert result["task_status"] == "new"
    assert result["validation"]["verdict"] == "passed" and result["validation"]["schema_verdict"] == "none"
    delta = result["delta"]
    assert delta["outcome"] == "changed" and delta["task"] == finished["SKU-A"]
    assert {f["path"]: (f.get("old"), f.get("new")) for f in delta["fields"]} == {
        "price": (1, 5),
        "tags": (None, ["x"]),
    }
    out = result["outgoing"]
    assert out["would_send"] is True and out["outcome"] == "send"
    assert out["request"]["method"] == "PUT" and out["request"]["url"].endswith("/products/SKU-A")
    assert out["request"]["headers"]["Authorization"] == "***"
    assert changed["written"].startswith("nothing")

    code, same = try_record(env, "to-shop", {"record": {"sku": "SKU-A", "price": 1}})
    assert same["results"][0]["delta"]["outcome"] == "unchanged"
    assert same["results"][0]["task_status"] == "skipped"
    assert same["results"][0]["outgoing"]["would_send"] is False

    code, failed = try_record(env, "to-shop", {"record": {"sku": "SKU-B", "price": 2}})
    assert failed["results"][0]["delta"]["outcome"] == "touches_failed"
    assert failed["results"][0]["task_status"] is None
    assert failed["results"][0]["delta"]["task"] == finished["SKU-B"]

    code, missing = try_record(env, "to-shop", {"record": {"price": 3}})
    assert missing["outcome"] == "rejected"
    assert missing["reason"] == "identifier sku is missing or empty in the record"
    assert missing["results"][0]["validation"]["verdict"] == "not reached"

    code, secret = try_record(env, "to-shop", {"record": {"sku": "SKU-N", "note": f"token {SHOP_TOKEN}"}})
    assert code == 200 and secret["results"][0]["delta"]["outcome"] == "new"
    assert SHOP_TOKEN not in str(secret)

    assert snapshot(env) == before, "the tester wrote or sent something"


def test_the_api_refuses_what_is_not_a_record(env: Env) -> None:
    reply = env.client.post(
        "/api/v1/routes/to-shop/test", content=b"{not json", headers={**env.auth("viewer"), "content-type": "x"}
    )
    assert reply.status_code == 400 and "record" in reply.json()["detail"]
    assert try_record(env, "to-shop", {"rec": {}})[0] == 400
    code, body = try_record(env, "to-shop", {"record": [1, 2]})
    assert code == 400 and "should be an object" in body["detail"]
    assert try_record(env, "nope", {"record": {}})[0] == 404
    assert env.client.post("/api/v1/routes/to-shop/test", json={"record": {}}).status_code == 401
    schema = env.client.get("/api/openapi.json").json()["paths"]["/api/v1/routes/{name}/test"]["post"]
    assert "record" in str(schema["requestBody"]) and "400" in schema["responses"]


def test_the_route_page_panel_picks_a_task_and_runs_it(env: Env) -> None:
    env.run("to-shop")
    csrf = env.login("viewer")
    page = env.client.get("/routes/to-shop").text
    assert "Test the transforms" in page
    [task] = env.store.list_tasks(TaskFilter(route="to-shop", identifier="SKU-C"), limit=1)[0]
    assert f'<option value="{task.id}"' in page

    box = env.client.get(f"/routes/to-shop/test/sample?task={task.id}").text
    assert 'id="tester-record"' in box and "SKU-C" in box
    assert SHOP_TOKEN not in box and "***" in box  # the entity's secret is masked in the textarea too
    assert f"the entity of task {task.id}" in box
    # a task of another route (or none) gives an empty box
    assert "SKU-C" not in env.client.get(f"/routes/files/test/sample?task={task.id}").text
    assert "SKU-C" not in env.client.get("/routes/to-shop/test/sample?task=99999").text

    before = snapshot(env)
    form = {"csrf_token": csrf, "record": '{"sku": "SKU-A", "price": 7}', "task": ""}
    partial = env.client.post("/routes/to-shop/test", data=form, headers={"HX-Request": "true"})
    assert partial.status_code == 200
    text = html.unescape(partial.text)
    assert 'data-testid="tester-verdict"' in text and "<html" not in text
    assert 'data-outcome="changed"' in text and "Authorization" in text and SHOP_TOKEN not in text

    bad = env.client.post("/routes/to-shop/test", data={**form, "record": "{oops"}, headers={"HX-Request": "true"})
    assert bad.status_code == 200 and "the record is not JSON" in bad.text

    full = env.client.post("/routes/to-shop/test", data=form)  # without htmx: the route page with the result
    assert full.status_code == 200 and "<html" in full.text and 'data-testid="tester-verdict"' in full.text
    assert "SKU-A" in full.text and "price" in full.text

    assert env.client.post("/routes/to-shop/test", data={**form, "csrf_token": "x"}).status_code == 403
    assert snapshot(env) == before, "the panel wrote or sent something"
