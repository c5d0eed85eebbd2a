"""The dry run's parts in memory: the field diff, counts equal to the real import across batches, saves kept out of
the store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from crossdock.engine.dry_run import dry_run, field_diff
from crossdock.engine.importer import Importer
from crossdock.engine.project import load_project
from crossdock.store.base import Settlement
from crossdock.store.memory import MemoryStore
from crossdock.tasks import Action

CONFIG = """\
database: sqlite:///unused.db
storages:
  prices: {}
routes:
  r:
    incoming:
      source: {type: file, path: in.ndjson}
      batch_size: 2
    identifier: sku
    transform:
      - filter: "stock > 0"
      - save: {storage: prices, key: sku, value: "=price"}
    outgoing:
      target: {type: file, path: out.ndjson}
"""


def test_field_diff_names_changed_paths_with_old_and_new_values() -> None:
    old = {"price": 1, "attributes": {"color": "red", "size": "M"}, "images": ["a", "b", "c"], "gone": True}
    new = {"price": 2, "attributes": {"color": "blue", "size": "M"}, "images": ["a", "b", "z", "d"], "added": None}
    fields, more = field_diff(old, new)
    assert more == 0
    assert fields == [
        {"path": "price", "old": 1, "new": 2},
        {"path": "attributes.color", "old": "red", "new": "blue"},
        {"path": "images[2]", "old": "c", "new": "z"},
        {"path": "images[3]", "new": "d"},
        {"path": "gone", "old": True},
        {"path": "added", "new": None},
    ]


def test_field_diff_compares_types_quotes_odd_keys_and_caps() -> None:
    assert field_diff({"n": 1}, {"n": 1.0})[0] == [{"path": "n", "old": 1, "new": 1.0}]
    assert field_diff({"n": 1}, {"n": True})[0] == [{"path": "n", "old": 1, "new": True}]
    assert field_diff({"a.b": 1}, {"a.b": 2})[0] == [{"path": '["a.b"]', "old": 1, "new": 2}]
    assert field_diff({"x": {"y": 1}}, {"x": [1]})[0] == [{"path": "x", "old": {"y": 1}, "new": [1]}]
    assert field_diff({"same": [1, {"a": 2}]}, {"same": [1, {"a": 2}]}) == ([], 0)
    many_old = {f"k{i}": i for i in range(30)}
    fields, more = field_diff(many_old, {k: v + 1 for k, v in many_old.items()}, limit=5)
    assert len(fields) == 5 and more == 25
    long = field_diff({"t": "x"}, {"t": "y" * 1000})[0][0]["new"]
    assert len(long) < 300 and long.endswith("…")


def write(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    (tmp_path / "in.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def test_counts_equal_the_real_import_when_an_identifier_repeats_across_batches(tmp_path: Path) -> None:
    (tmp_path / "crossdock.yaml").write_text(CONFIG)
    project = load_project(tmp_path / "crossdock.yaml")
    store = MemoryStore()
    store.ensure_routes(project.routes)
    write(tmp_path, [{"sku": s, "price": 1, "stock": 1} for s in "ABCD"])
    asyncio.run(Importer(project, store).run_route("r"))
    now = datetime.now(UTC)
    for task in store.claim_due_tasks("r", 10, worker="w", lease_until=now + timedelta(minutes=1), now=now):
        store.settle([Settlement(task.id, Action.DELIVERED, "w")], now=now)
    # batch size 2: A changes in the first batch and again in the third, B is the same twice, E is new twice
    write(
        tmp_path,
        [
            {"sku": "A", "price": 2, "stock": 1},
            {"sku": "B", "price": 1, "stock": 1},
            {"sku": "E", "price": 1, "stock": 1},
            {"sku": "C", "price": 1, "stock": 0},
            {"sku": "A", "price": 3, "stock": 1},
            {"sku": "B", "price": 1, "stock": 1},
            {"sku": "E", "price": 5, "stock": 1},
            {"sku": "D", "price": 1},
        ],
    )
    before = [(t.id, t.status, t.seen_count) for t in store.tasks.values()]
    dry = asyncio.run(dry_run(project, store, "r", show=10))
    assert [(t.id, t.status, t.seen_count) for t in store.tasks.values()] == before
    assert store.storage_get("prices", "A", now=store.tasks[1].created_at) == 1, "a save step wrote to the store"

    real = asyncio.run(Importer(project, store).run_route("r")).routes["r"].to_json()
    assert dry["counts"] == {k: real[k] for k in dry["counts"]}
    assert dry["counts"]["superseded"] == 2 and dry["counts"]["changed"] == 3
    assert dry["outgoing"]["new_tasks"] == 2, "A and E once each: their earlier versions are superseded"
    sent = {r["identifier"]: r["request"] for r in dry["requests"]}
    assert set(sent) == {"A", "E"}
    assert orjson.loads(sent["A"]["text"]) == {"sku": "A", "price": 3, "stock": 1}
    # A's delivered version is the first import's task; E was never delivered
    changes = {c["identifier"]: c for c in dry["changes"]}
    assert changes["A"]["delivered_task"] == 1
    assert [c["fields"] for c in dry["changes"] if c["identifier"] == "A"] == [
        [{"path": "price", "old": 1, "new": 2}],
        [{"path": "price", "old": 1, "new": 3}],
    ], "each changed version against the delivered one"
    assert changes["E"]["delivered_task"] is None
