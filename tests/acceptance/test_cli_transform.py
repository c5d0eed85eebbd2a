"""`crossdock transform`: the verdict a real run gives (validation and delta included), and the README's tour, run
as written."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

import crossdock

README = Path(__file__).resolve().parents[2] / "README.md"


def records() -> list[Any]:
    return [
        {"sku": "SKU-OK", "title": "Chair", "price": "19.99", "stock": 3, "category": "garden"},
        {"sku": "SKU-OUT", "title": "Lamp", "price": "5.00", "stock": 0},
        {"sku": "SKU-NOPRICE", "title": "No price", "stock": 5},
        {"sku": "SKU-BIG", "title": "x" * 3000, "price": "1.00", "stock": 1},
        {"title": "No identifier", "price": "1.00", "stock": 1},
    ]


def created(project: Any, after: int) -> list[dict[str, Any]]:
    """The tasks made after task ``after``, oldest first."""
    return sorted((t for t in project.tasks() if t["id"] > after), key=lambda t: t["id"])


def test_transform_gives_the_verdict_of_a_real_run(project: Any) -> None:
    project.cli("init", str(project.root), "--force")
    project.write_ndjson("data/products.ndjson", records())
    project.write_ndjson("sample.ndjson", records())

    # no database yet: every record is new, and none is created by the preview
    predicted = project.cli("transform", "products-to-shop", "-i", "sample.ndjson", "--json").json
    assert not project.db_path.exists()
    assert [p["outcome"] for p in predicted] == ["ok", "filtered", "rejected", "rejected", "rejected"]
    assert predicted[2]["reason"] == "validate.schema: at (the record): 'price' is a required property"
    assert predicted[3]["reason"].startswith("validate.max_entity_bytes: entity is ")
    assert predicted[4]["reason"] == "identifier sku is missing or empty in the record"

    project.cli("run", "products-to-shop", "--incoming")
    real = created(project, 0)
    assert [(t["status"], t["error"]) for t in real] == [
        (r["results"][0]["task_status"], r["results"][0]["reason"]) for r in predicted
    ]
    assert [t["identifier"] for t in real] == [r["results"][0]["identifier"] for r in predicted]

    # against what is stored now: one changed price, everything else the same again
    again = records()
    again[0] = {**again[0], "price": "24.99"}
    project.write_ndjson("data/products.ndjson", again)
    project.write_ndjson("sample.ndjson", again)
    db_before = project.db_path.read_bytes()
    predicted = project.cli("transform", "products-to-shop", "-i", "sample.ndjson", "--outgoing", "--json").json
    assert project.db_path.read_bytes() == db_before, "the preview wrote to the database"
    first = predicted[0]["results"][0]
    assert first["delta"]["outcome"] == "changed" and first["delta"]["task"] == real[0]["id"]
    assert first["delta"]["fields"] == [{"path": "price", "old": "19.99", "new": "24.99"}]
    assert first["outgoing"]["output"]["price"] == 2499
    assert first["outgoing"]["request"]["file"] == "out/shop-products.ndjson"
    assert [r["results"][0]["delta"]["outcome"] for r in predicted[1:]] == ["unchanged"] * 4

    last = real[-1]["id"]
    project.cli("run", "products-to-shop", "--incoming")
    made = created(project, last)
    expected = [r["results"][0] for r in predicted if r["results"][0]["task_status"] is not None]
    assert [(t["identifier"], t["status"]) for t in made] == [(e["identifier"], e["task_status"]) for e in expected]
    assert [e["identifier"] for e in expected] == ["SKU-OK"]  # the rest only touch their latest task


def test_transform_text_names_the_verdicts(project: Any) -> None:
    project.cli("init", str(project.root), "--force")
    text = project.cli("transform", "products-to-shop", "-i", "sample.json", "--outgoing", "--trace").stdout
    assert "record 1: ok" in text
    assert "record 2: filtered — incoming products-to-shop: filter: stock > 0" in text
    assert "record 3: rejected — validate.schema: at (the record): 'price' is a required property" in text
    assert "validation: failed (schema schemas/product.json: failed" in text
    assert "delta: new — never seen" in text
    assert '"url": "https://shop.example/p/SKU-00001"' in text


# --- the README's tour, as written ----------------------------------------------------------------


def tour_commands() -> list[str]:
    """The lines of the sh block under "A five-minute tour", comments and all."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## A five-minute tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no sh block in the README's tour"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_tour_works_as_written(tmp_path: Path) -> None:
    lines = tour_commands()
    assert lines[0].startswith(". .venv/bin/activate")
    assert any("transform products-to-shop --input sample.json" in line for line in lines)
    # `.venv/bin/activate` in the folder the tour starts in puts a `crossdock` running this checkout on PATH;
    # the tour's /tmp/shop becomes a folder of this test's own
    start = tmp_path / "start"
    bin_dir = start / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    src = Path(crossdock.__file__).resolve().parent.parent
    shim = bin_dir / "crossdock"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{src}" exec "{sys.executable}" -m crossdock.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"; export PATH\n')
    shop = tmp_path / "shop"
    script = ["set -e"]
    for i, line in enumerate(lines):
        script += [f"echo '=== {i}'", line.replace("/tmp/shop", str(shop))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSDOCK_")}
    env["COLUMNS"] = "200"
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=start, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"the tour stopped:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    outputs = dict(re.findall(r"^=== (\d+)\n(.*?)(?=^=== |\Z)", done.stdout, re.S | re.M))
    said = {lines[int(i)].split("#")[0].strip(): text for i, text in outputs.items()}

    assert "ok (1 route(s), 3 transformer test(s) passed)" in said["crossdock check"]
    assert "SKU-BAD" in said["crossdock tasks list --status rejected"]
    shown = said["crossdock tasks show 21"]
    assert "SKU-BAD" in shown and "rejected" in shown and "'price' is a required property" in shown
    stats = orjson.loads(said["crossdock stats --json"])
    assert stats["by_status"]["finished"] == 18
    assert "changed 1" in said["crossdock tasks retry 22"]
    preview = said["crossdock transform products-to-shop --input sample.json --outgoing --trace"]
    assert "record 1: ok" in preview and "delta: changed — changed since task 22 (new)" in preview
    assert "record 2: filtered" in preview
    # the record the run rejected is rejected here too, with the same reason
    assert "record 3: rejected — validate.schema: at (the record): 'price' is a required property" in preview
