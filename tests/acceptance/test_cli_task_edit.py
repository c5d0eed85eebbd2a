"""``crossdock tasks edit``: correct a refused record and replay it, through the real CLI (issue #17 item 1)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

SKU = "SKU-000001"
SCHEMA = {
    "type": "object",
    "required": ["sku", "category"],
    "properties": {"category": {"type": "string", "minLength": 2}, "stock": {"type": "integer"}},
}


def audit_log(project: Any) -> list[Any]:
    store = project.open_store()
    try:
        return list(store.list_audit())
    finally:
        store.close()


def refused_by_the_shop(project: Any, shop_factory: Any) -> tuple[Any, int]:
    """One product the shop refuses with 422 (its category does not exist there): a failed task."""
    shop = shop_factory(status_for_skus={SKU: 422}, sku_errors={SKU: "category 'lampz' not found"})
    project.write("schemas/product.json", json.dumps(SCHEMA))
    project.write_ndjson("data/in.ndjson", project.products(1, category="lampz"))
    project.write_config(project.route_yaml(extra="    validate: {schema: schemas/product.json}\n"))
    project.run("r")
    [failed] = project.tasks("--status", "failed")
    return shop, failed["id"]


def test_a_refused_task_edited_with_set_is_delivered_fixed_and_the_original_is_skipped(
    project: Any, shop_factory: Any
) -> None:
    shop, original = refused_by_the_shop(project, shop_factory)
    assert shop.stats()["by_status"] == {"422": 1}
    result = project.cli("tasks", "edit", str(original), "--set", 'category="lamps"', "--reason", "typo")
    assert f"edited task {original} as task" in result.stdout
    assert 'category: "lampz" → "lamps"' in result.stdout
    [replay] = project.tasks("--status", "new")
    new = replay["id"]
    old = project.show(original)
    assert (old["status"], old["related_task_id"]) == ("skipped", new)
    assert old["error"].startswith(f"edited as task {new} by ")
    shown = project.show(new)
    assert shown["entity"]["category"] == "lamps"
    assert shown["related_task_id"] == original
    assert shown["logs"][0]["message"].startswith(f"edited from task {original} by ")
    assert shown["logs"][0]["details"]["changes"] == [{"path": "category", "old": '"lampz"', "new": '"lamps"'}]
    # the shop takes the fixed category (the mock refuses by SKU: the refusal is lifted as the fix would)
    shop.set_failures()
    project.run("r", "--outgoing")
    assert shop.by_sku[SKU]["category"] == "lamps"
    assert project.show(new)["status"] == "finished"
    [entry] = [e for e in audit_log(project) if e.action == "task.edit"]
    assert entry.target["ids"] == [original] and entry.target["edited_as"] == new
    assert entry.detail == 'typo (category: "lampz" → "lamps")'
    assert entry.actor.startswith("cli:")
    # the source still sends the record with the typo: unchanged, so the fix stays and nothing is sent again
    requests = shop.stats()["requests"]
    again = project.run("r")
    assert again["incoming"]["routes"]["r"]["changed"] == 0, again
    assert shop.stats()["requests"] == requests
    assert shop.by_sku[SKU]["category"] == "lamps"


def test_an_edit_that_breaks_the_schema_exits_2_and_changes_nothing(project: Any, shop_factory: Any) -> None:
    _shop, original = refused_by_the_shop(project, shop_factory)
    before = (project.tasks(), project.stats(), audit_log(project))
    bad = project.cli("tasks", "edit", str(original), "--set", 'stock="many"', expect=2)
    assert "invalid edit, nothing changed: validate.schema: at stock: 'many' is not of type 'integer'" in bad.stderr
    gone = project.cli("tasks", "edit", str(original), "--unset", "category", "--json", expect=2)
    assert gone.json["valid"] is False and "'category' is a required property" in gone.json["problem"]
    same_id = project.cli("tasks", "edit", str(original), "--set", 'sku="SKU-9"', expect=2)
    assert "changes the identifier from 'SKU-000001' to 'SKU-9'" in same_id.stderr
    assert (project.tasks(), project.stats(), audit_log(project)) == before
    # usage: a value that is not JSON is explained with the quoting, exit 2 as well
    unquoted = project.cli("tasks", "edit", str(original), "--set", "category=lamps", expect=2)
    assert "is not JSON" in unquoted.stderr and "--set 'category=\"lamps\"'" in unquoted.stderr
    dry = project.cli("tasks", "edit", str(original), "--set", 'category="lamps"', "--dry-run")
    assert "dry run: nothing changed" in dry.stdout
    assert project.tasks() == before[0]


def test_entity_file_and_editor(project: Any, shop_factory: Any) -> None:
    _shop, original = refused_by_the_shop(project, shop_factory)
    entity = project.show(original)["entity"]
    project.write("fixed.json", orjson.dumps({**entity, "category": "lamps", "stock": 7}).decode())
    result = project.cli("tasks", "edit", str(original), "--entity-file", "fixed.json", "--json")
    assert result.json["original_after"] == "skipped"
    assert {c["path"] for c in result.json["changes"]} == {"category", "stock"}
    replay = result.json["task_id"]
    # $EDITOR: a script that rewrites the file it is given, on the replay (new: it is skipped in turn)
    editor = project.write(
        "editor.py",
        "import json, sys\np = sys.argv[1]\ne = json.load(open(p))\ne['category'] = 'desk lamps'\n"
        "json.dump(e, open(p, 'w'))\n",
    )
    project.env["EDITOR"] = f"{sys.executable} {editor}"
    again = project.cli("tasks", "edit", str(replay), "--json")
    assert again.json["original_before"] == "new" and again.json["original_after"] == "skipped"
    assert project.show(again.json["task_id"])["entity"]["category"] == "desk lamps"
    # a processing task is refused before the editor opens
    project.env["EDITOR"] = "false"
    store = project.open_store()
    try:
        now = datetime.now(UTC)
        [claimed] = store.claim_due_tasks("r", 1, worker="w", lease_until=now + timedelta(minutes=5), now=now)
    finally:
        store.close()
    refused = project.cli("tasks", "edit", str(claimed.id), expect=1)
    assert "is processing" in refused.stderr
