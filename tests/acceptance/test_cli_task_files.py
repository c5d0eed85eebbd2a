"""Search by payload, export and re-import through the real CLI (#17 items 3 and 4): ``--where`` lists and acts on
exactly the matching tasks, an export is one line per task, and importing a fixed export feeds the route with delta
and supersede applying; a plain NDJSON file goes through the route's transforms as its source's records would."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

CONFIG = """\
routes:
  r:
    incoming:
      source: {type: file, path: data/in.ndjson}
      transform:
        - set: {path: name, value: "=upper(title)"}
    identifier: sku
    outgoing:
      target: {type: http, url: "${SHOP_URL}/products/{sku}", method: PUT}
"""


def records(n: int) -> list[dict[str, Any]]:
    return [
        {"sku": f"S{i:03d}", "price": i * 100, "title": f"lamp {i}" if i % 3 == 0 else f"chair {i}",
         "category": "toys" if i % 2 else "home"}
        for i in range(n)
    ]  # fmt: skip


def test_where_lists_and_acts_on_exactly_the_matching_tasks(project: Any, shop_factory: Any) -> None:
    shop_factory(status_for_skus={f"S{i:03d}": 422 for i in range(0, 30, 2)})  # the even ones are refused
    project.write_ndjson("data/in.ndjson", records(30))
    project.write_config(CONFIG)
    project.run("r")
    wanted = {f"S{i:03d}" for i in range(30) if i * 100 > 1000 and i % 2 == 1}
    listed = project.tasks("--where", "price > 1000 and category == 'toys'")
    assert {t["identifier"] for t in listed} == wanted
    lamps = project.tasks("--status", "failed", "--where", "contains(lower(title), 'lamp')")
    assert {t["identifier"] for t in lamps} == {f"S{i:03d}" for i in range(0, 30, 6)}
    retried = project.cli("tasks", "retry", "--status", "failed", "--where", "contains(lower(title), 'lamp')", "--json")
    assert retried.json["changed"] == 5
    assert {t["identifier"] for t in project.tasks("--status", "new")} == {f"S{i:03d}" for i in range(0, 30, 6)}
    bad = project.cli("tasks", "list", "--where", "price >", expect=2)
    assert bad.stderr.startswith("usage error: --where: invalid expression 'price >'")


def test_a_fixed_export_goes_back_in_and_is_delivered(project: Any, shop_factory: Any) -> None:
    shop = shop_factory(status_for_skus={"S004": 422, "S008": 422})
    project.write_ndjson("data/in.ndjson", records(10))
    project.write_config(CONFIG)
    project.run("r")
    exported = project.cli("tasks", "export", "--status", "failed", "-o", "failed.ndjson")
    assert "exported 2 task(s) to failed.ndjson" in exported.stderr
    lines = [orjson.loads(x) for x in (project.root / "failed.ndjson").read_bytes().splitlines()]
    assert [(x["identifier"], x["status"], x["attempts"]) for x in lines] == [
        ("S008", "failed", 1),
        ("S004", "failed", 1),
    ]
    assert lines[0]["entity"]["name"] == "CHAIR 8" and "422" in lines[0]["error"]
    # the operator fixes the data; the shop accepts it now
    shop.set_failures()
    for x in lines:
        x["entity"]["category"] = "lamps"
    (project.root / "fixed.ndjson").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    imported = project.cli("tasks", "import", "fixed.ndjson", "--route", "r", "--json").json
    assert imported["file"] == {"path": "fixed.ndjson", "entities": 2, "records": 0}
    assert (imported["routes"]["r"]["new"], imported["routes"]["r"]["changed"]) == (2, 2)
    assert project.run("r", "--outgoing")["by_status"]["finished"] == 10
    assert (
        shop.by_sku["S004"]["category"] == "lamps" and shop.by_sku["S004"]["name"] == "CHAIR 4"
    )  # not transformed twice
    # the same file again: nothing changed, nothing new
    again = project.cli("tasks", "import", "fixed.ndjson", "--route", "r", "--json").json
    assert (again["routes"]["r"]["new"], again["routes"]["r"]["unchanged"]) == (0, 2)
    # a plain NDJSON file is read as the source's records: through the transforms
    project.write_ndjson("more.ndjson", [{"sku": "S100", "price": 1, "title": "desk", "category": "home"}])
    plain = project.cli("tasks", "import", "more.ndjson", "--route", "r", "--json").json
    assert plain["file"]["records"] == 1 and plain["routes"]["r"]["new"] == 1
    [task] = project.tasks("--identifier", "S100")
    shown = project.cli("tasks", "show", str(task["id"]), "--json").json
    assert shown["entity"]["name"] == "DESK"
    # a file that mixes both is refused with the line, and nothing is imported
    mixed = project.root / "mixed.ndjson"
    mixed.write_bytes(orjson.dumps(lines[0]) + b"\n" + orjson.dumps({"sku": "S200", "title": "x"}) + b"\n")
    refused = project.cli("tasks", "import", "mixed.ndjson", "--route", "r", expect=2)
    assert "mixed.ndjson:2: a plain record in a file of an export" in refused.stderr


def test_export_as_csv_quotes_formulas_and_keeps_the_entity(project: Any, shop_factory: Any) -> None:
    shop_factory()
    project.write_ndjson("data/in.ndjson", [{"sku": "=cmd|calc", "price": 5, "title": "lamp", "category": "toys"}])
    project.write_config(CONFIG)
    project.run("r")
    text = project.cli("tasks", "export", "--format", "csv").stdout
    [header, row] = list(csv.reader(io.StringIO(text)))
    assert header == ["id", "route", "identifier", "status", "attempts", "error", "created_at", "updated_at", "entity"]
    assert row[2] == "'=cmd|calc" and row[3] == "finished"
    assert orjson.loads(row[8])["name"] == "LAMP"
