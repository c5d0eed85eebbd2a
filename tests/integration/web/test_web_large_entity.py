"""An entity over the display limit: a preview with a marker in the API and on the dashboard, and the whole of it,
redacted, from the download endpoint (bearer token) or its dashboard twin (session cookie)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from webenv import SHOP_TOKEN, Env

from crossdock.web.display import CUT_MARK, DISPLAY_LIMIT

BIG = {"sku": "BIG", "note": f"token {SHOP_TOKEN}", "text": "y" * (DISPLAY_LIMIT + 50_000)}
BIG_BYTES = len(orjson.dumps(BIG))


@pytest.fixture
def big_id(env: Env) -> int:
    path = env.project.root / "data.ndjson"
    path.write_bytes(path.read_bytes() + orjson.dumps(BIG) + b"\n" + b"{not json\n")
    env.run("files", part="incoming")
    items = env.client.get("/api/v1/tasks", params={"route": "files"}, headers=env.auth("viewer")).json()["items"]
    return next(int(t["id"]) for t in items if t["identifier"] == "BIG")


def task_answer(env: Env, task_id: int, **params: Any) -> dict[str, Any]:
    reply = env.client.get(f"/api/v1/tasks/{task_id}", params=params, headers=env.auth("viewer"))
    assert reply.status_code == 200, reply.text
    assert SHOP_TOKEN not in reply.text
    data: dict[str, Any] = reply.json()
    return data


def test_the_api_cuts_a_large_entity_and_says_so(env: Env, big_id: int) -> None:
    data = task_answer(env, big_id)
    assert data["entity"] is None and data["entity_truncated"] is True
    assert data["entity_bytes"] == BIG_BYTES
    assert data["entity_url"] == f"/api/v1/tasks/{big_id}/entity"
    preview = data["entity_preview"]
    assert preview.startswith('{"note":"token ***","sku":"BIG"') and preview.endswith(CUT_MARK)
    assert len(preview) == DISPLAY_LIMIT + len(CUT_MARK)
    assert "token ***" in preview  # redacted before it was cut
    assert len(orjson.dumps(data)) < DISPLAY_LIMIT + 20_000
    whole = task_answer(env, big_id, full="true")
    assert whole["entity_truncated"] is False and whole["entity"]["text"] == BIG["text"]
    assert whole["entity"]["note"] == "token ***"


def test_a_small_entity_comes_whole_with_its_size_and_url(env: Env, big_id: int) -> None:
    items = env.client.get("/api/v1/tasks", params={"route": "files"}, headers=env.auth("viewer")).json()["items"]
    small = next(t for t in items if t["identifier"] == "SKU-A")
    data = task_answer(env, small["id"])
    assert data["entity"] == {"sku": "SKU-A", "name": "item A"}
    assert data["entity_truncated"] is False and "entity_preview" not in data
    assert data["entity_bytes"] == len(orjson.dumps(data["entity"]))
    assert data["entity_url"] == f"/api/v1/tasks/{small['id']}/entity"
    malformed = next(t for t in items if t["identifier"] is None)
    bare = task_answer(env, malformed["id"])
    assert bare["entity"] is None and bare["entity_bytes"] is None and bare["entity_url"] is None
    assert bare["entity_truncated"] is False and bare["raw"] == "{not json"


def test_the_download_gives_the_whole_entity_redacted(env: Env, big_id: int) -> None:
    url = f"/api/v1/tasks/{big_id}/entity"
    assert env.client.get(url).status_code == 401
    reply = env.client.get(url, headers=env.auth("viewer"))
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["content-disposition"] == f'attachment; filename="task-{big_id}-entity.json"'
    assert SHOP_TOKEN not in reply.text
    assert reply.json() == {**BIG, "note": "token ***"}
    missing = env.client.get("/api/v1/tasks/999999/entity", headers=env.auth("viewer"))
    assert missing.status_code == 404 and "no task with id 999999" in missing.text
    items = env.client.get("/api/v1/tasks", params={"route": "files"}, headers=env.auth("viewer")).json()["items"]
    malformed = next(t for t in items if t["identifier"] is None)
    bare = env.client.get(f"/api/v1/tasks/{malformed['id']}/entity", headers=env.auth("viewer"))
    assert bare.status_code == 404 and "has no entity stored" in bare.text


def test_the_dashboard_shows_a_preview_and_links_the_download(env: Env, big_id: int) -> None:
    env.login("viewer")
    page = env.client.get(f"/tasks/{big_id}")
    assert page.status_code == 200
    assert 'data-testid="entity-truncated"' in page.text
    assert f'href="/tasks/{big_id}/entity.json"' in page.text
    assert f"{BIG_BYTES:,} bytes" in page.text
    assert SHOP_TOKEN not in page.text
    assert len(page.content) < DISPLAY_LIMIT + 50_000
    download = env.client.get(f"/tasks/{big_id}/entity.json")
    assert download.status_code == 200 and download.headers["content-disposition"].startswith("attachment")
    assert SHOP_TOKEN not in download.text and download.json()["text"] == BIG["text"]
    assert env.client.get("/tasks/999999/entity.json").status_code == 404
    env.client.cookies.clear()
    anonymous = env.client.get(f"/tasks/{big_id}/entity.json", follow_redirects=False)
    assert anonymous.status_code in (302, 303, 307) and "/login" in anonymous.headers["location"]


def test_the_openapi_describes_the_download(env: Env) -> None:
    spec = env.client.get("/api/openapi.json").json()
    operation = spec["paths"]["/api/v1/tasks/{task_id}/entity"]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["application/json"]
    assert "404" in operation["responses"]
    detail = spec["paths"]["/api/v1/tasks/{task_id}"]["get"]
    assert any(p["name"] == "full" for p in detail["parameters"])
