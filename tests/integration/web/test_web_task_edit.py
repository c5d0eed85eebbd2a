"""Edit and replay over HTTP: ``POST /api/v1/tasks/{id}/edit`` and the dashboard's Edit (preview, confirm)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from webenv import SHOP_TOKEN, Env

from crossdock.store.base import ImportItem, ImportOptions
from crossdock.tasks import Status


def failed_task(env: Env) -> dict[str, Any]:
    """SKU-B of to-shop: the shop refused it (422)."""
    env.run("to-shop")
    [failed] = env.client.get("/api/v1/tasks", params={"status": "failed"}, headers=env.auth("viewer")).json()["items"]
    assert failed["identifier"] == "SKU-B"
    task: dict[str, Any] = failed
    return task


def edit(env: Env, task_id: int, body: Any, role: str = "operator") -> Any:
    return env.client.post(f"/api/v1/tasks/{task_id}/edit", json=body, headers=env.auth(role))


def test_set_replays_the_task_and_skips_the_original(env: Env) -> None:
    original = failed_task(env)["id"]
    reply = edit(env, original, {"set": {"price": 20, "dims.w": 3}, "reason": "price fix"})
    assert reply.status_code == 200, reply.text
    data = reply.json()
    new = data["task_id"]
    assert (data["original_id"], data["original_before"], data["original_after"]) == (original, "failed", "skipped")
    assert data["changes"] == [
        {"path": "price", "old": "2", "new": "20"},
        {"path": "dims", "old": None, "new": '{"w":3}'},
    ]
    assert data["task"]["id"] == new and data["task"]["status"] == "new"
    assert data["task"]["entity"] == {"sku": "SKU-B", "price": 20, "dims": {"w": 3}}
    assert data["task"]["logs"][0]["message"].startswith(f"edited from task {original} by ")
    old = env.client.get(f"/api/v1/tasks/{original}", headers=env.auth("viewer")).json()
    assert (old["status"], old["related_task_id"]) == ("skipped", new)
    assert old["logs"][-1]["details"]["edited_as"] == new
    audit = env.client.get("/api/v1/audit", params={"action": "task.edit"}, headers=env.auth("viewer")).json()
    [entry] = audit["items"]
    assert entry["target"] == {"ids": [original], "edited_as": new, "route": "to-shop"}
    assert entry["detail"] == 'price fix (price: 2 → 20; dims: absent → {"w":3})'
    assert entry["actor"] == "operator-token"


def test_refusals_and_their_status_codes(env: Env) -> None:
    original = failed_task(env)["id"]
    before = env.store.stats().to_json()
    assert edit(env, original, {"set": {"price": 3}}, role="viewer").status_code == 403
    assert edit(env, 424242, {"set": {"price": 3}}).status_code == 404
    both = edit(env, original, {"entity": {"sku": "SKU-B"}, "set": {"price": 3}})
    assert both.status_code == 422 and "not both" in str(both.json()["detail"])
    assert edit(env, original, {}).status_code == 422
    assert edit(env, original, {"entity": "text"}).status_code == 422
    bad_path = edit(env, original, {"set": {"items[": 1}})
    assert bad_path.status_code == 400 and bad_path.json()["detail"].startswith("set items[:")
    missing = edit(env, original, {"unset": ["nope"]})
    assert missing.status_code == 400 and missing.json()["detail"] == "unset nope: the entity has nothing at nope"
    other = edit(env, original, {"entity": {"sku": "SKU-Z", "price": 2}})
    assert other.status_code == 422
    assert "changes the identifier from 'SKU-B' to 'SKU-Z'" in other.json()["detail"]
    assert other.json()["changes"] == [{"path": "sku", "old": '"SKU-B"', "new": '"SKU-Z"'}]
    same = edit(env, original, {"entity": {"sku": "SKU-B", "price": 2}})
    assert same.status_code == 422 and same.json()["detail"].startswith("the edit changes nothing")
    # nothing was written by any of them
    assert env.store.stats().to_json() == before
    assert (
        env.client.get("/api/v1/audit", params={"action": "task.edit"}, headers=env.auth("viewer")).json()["items"]
        == []
    )


def test_processing_and_unknown_route_are_conflicts(env: Env) -> None:
    env.run("approvals", part="incoming")
    now = datetime.now(UTC)
    [claimed, *_] = env.store.claim_due_tasks("approvals", 1, worker="w", lease_until=now + timedelta(hours=1), now=now)
    busy = edit(env, claimed.id, {"set": {"name": "x"}})
    assert busy.status_code == 409 and "is processing" in busy.json()["detail"]
    counts = env.store.import_batch(
        "gone",
        [ImportItem(Status.NEW, "k", b'{"sku":"k"}', b"0" * 16)],
        run_id=None,
        options=ImportOptions(delta=False),
        now=now,
    )
    [orphan] = counts.created_ids
    gone = edit(env, orphan, {"set": {"sku": "k", "x": 1}})
    assert gone.status_code == 409 and "which is not in" in gone.json()["detail"]


def test_a_masked_value_sent_back_as_shown_keeps_its_stored_value(env: Env) -> None:
    env.run("to-shop")
    [c] = env.client.get("/api/v1/tasks", params={"identifier": "SKU-C"}, headers=env.auth("viewer")).json()["items"]
    shown = env.client.get(f"/api/v1/tasks/{c['id']}", headers=env.auth("viewer")).json()["entity"]
    assert shown["note"] == "token ***"
    reply = edit(env, c["id"], {"entity": {**shown, "price": 4}})
    assert reply.status_code == 200, reply.text
    assert SHOP_TOKEN not in reply.text
    assert reply.json()["changes"] == [{"path": "price", "old": "3", "new": "4"}]
    stored = env.store.get_task(reply.json()["task_id"])
    assert stored is not None and stored.entity["note"] == f"token {SHOP_TOKEN}"
    assert stored.status is Status.NEW  # the original was finished: it stays so, the replay is new
    assert env.store.get_task(c["id"]).status is Status.FINISHED  # type: ignore[union-attr]


def test_the_openapi_contract_documents_the_endpoint(env: Env) -> None:
    spec = env.client.get("/api/openapi.json").json()
    operation = spec["paths"]["/api/v1/tasks/{task_id}/edit"]["post"]
    assert {"200", "400", "404", "409", "422"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"entity", "set", "unset", "reason"} == set(spec["components"]["schemas"][body]["properties"])


def test_dashboard_previews_then_confirms(env: Env) -> None:
    original = failed_task(env)["id"]
    csrf = env.login("operator")
    page = env.client.get(f"/tasks/{original}").text
    assert f'href="/tasks/{original}/edit"' in page
    form = env.client.get(f"/tasks/{original}/edit")
    assert form.status_code == 200 and 'data-testid="edit-entity"' in form.text
    text = '{"sku": "SKU-B", "price": 25}'
    # a forged form (no CSRF token) never acts
    assert env.client.post(f"/tasks/{original}/edit", data={"entity": text, "confirm": "1"}).status_code == 403
    preview = env.client.post(f"/tasks/{original}/edit", data={"csrf_token": csrf, "entity": text})
    assert preview.status_code == 200
    assert 'data-valid="true"' in preview.text and "edit-confirm" in preview.text
    assert "price" in preview.text and "25" in preview.text
    # changed after the preview: previewed again, not written
    changed = env.client.post(
        f"/tasks/{original}/edit",
        data={"csrf_token": csrf, "entity": '{"sku": "SKU-B", "price": 26}', "previewed": text, "confirm": "1"},
    )
    assert changed.status_code == 200 and "edit-confirm" in changed.text
    assert env.store.get_task(original).status is Status.FAILED  # type: ignore[union-attr]
    invalid = env.client.post(f"/tasks/{original}/edit", data={"csrf_token": csrf, "entity": "{nope"})
    assert invalid.status_code == 422 and "the entity is not JSON" in invalid.text
    done = env.client.post(
        f"/tasks/{original}/edit",
        data={"csrf_token": csrf, "entity": text, "previewed": text, "confirm": "1", "reason": "ok"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    new = int(done.headers["location"].rsplit("/", 1)[1])
    assert env.store.get_task(new).entity == {"sku": "SKU-B", "price": 25}  # type: ignore[union-attr]
    landed = env.client.get(f"/tasks/{new}").text
    assert f"Edited task {original} as task {new}" in landed
    assert 'data-testid="edited-from"' in landed
    # a viewer gets no Edit
    env.login("viewer")
    assert "edit-task" not in env.client.get(f"/tasks/{new}").text
    assert env.client.get(f"/tasks/{new}/edit").status_code == 403
