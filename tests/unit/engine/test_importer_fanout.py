"""Routes of one shared incoming that do the same per-record work share it, and still get their own tasks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from crossdock.engine.importer import Importer
from crossdock.engine.project import load_project
from crossdock.store.base import TaskFilter
from crossdock.store.memory import MemoryStore
from crossdock.tasks import Status

CONFIG = """\
database: sqlite:///unused.db
incomings:
  feed:
    source: {type: file, path: in.ndjson}
    batch_size: 2  # several flushes, so each route's batch list is replaced while records keep coming
routes:
  plain-a:
    incoming: feed
    identifier: sku
    validate: {max_entity_bytes: 200}
    outgoing: {target: {type: noop}}
  plain-b:
    incoming: feed
    identifier: sku
    validate: {max_entity_bytes: 200}
    outgoing: {target: {type: noop}}
  own-transform:
    incoming: feed
    identifier: sku
    transform:
      - set: {path: seen_by, value: own}
    outgoing: {target: {type: noop}}
"""


def test_routes_with_the_same_work_share_it_and_keep_their_own_tasks(tmp_path: Path) -> None:
    (tmp_path / "crossdock.yaml").write_text(CONFIG)
    records = [{"sku": "A", "n": 1}, {"n": 2}, {"sku": "BIG", "text": "x" * 300}, {"sku": "C", "n": 3}]
    records += [{"sku": f"more-{i}"} for i in range(7)]
    (tmp_path / "in.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    project = load_project(tmp_path / "crossdock.yaml")
    store = MemoryStore()
    store.ensure_routes(project.routes)
    summary = asyncio.run(Importer(project, store).run_incoming(project.incomings["feed"]))
    assert summary.read == 11
    for name in ("plain-a", "plain-b"):
        route = summary.routes[name]
        assert route.by_status == {"new": 9, "rejected": 2}, name
        assert store.stats(name).by_status["new"] == 9
        tasks = {t.identifier: t for t in store.list_tasks(TaskFilter(route=name), limit=20)[0]}
        assert tasks["A"].status is Status.NEW and tasks["C"].status is Status.NEW
        assert tasks["BIG"].status is Status.REJECTED
        assert "max_entity_bytes" in (tasks["BIG"].error or "")
        missing = tasks[None]  # type: ignore[index]
        assert missing.status is Status.REJECTED and "identifier sku is missing" in (missing.error or "")
    a = {t.identifier: t for t in store.list_tasks(TaskFilter(route="plain-a"), limit=20)[0]}
    b = {t.identifier: t for t in store.list_tasks(TaskFilter(route="plain-b"), limit=20)[0]}
    assert a["A"].id != b["A"].id and a["A"].fingerprint == b["A"].fingerprint
    # the route with its own transform did its own work: another entity, another fingerprint, no size limit
    own = {t.identifier: t for t in store.list_tasks(TaskFilter(route="own-transform"), limit=20)[0]}
    assert own["A"].entity == {"sku": "A", "n": 1, "seen_by": "own"}
    assert own["A"].fingerprint != a["A"].fingerprint
    assert own["BIG"].status is Status.NEW


def test_only_routes_without_their_own_work_are_grouped(tmp_path: Path) -> None:
    from crossdock.engine.importer import RouteImportSummary, _RouteState, _same_work

    (tmp_path / "crossdock.yaml").write_text(CONFIG)
    project = load_project(tmp_path / "crossdock.yaml")
    states = [_RouteState(r, RouteImportSummary(r.name)) for r in project.routes_of(project.incomings["feed"])]
    groups = [[s.route.name for s in group] for group in _same_work(states)]
    assert sorted(groups) == [["own-transform"], ["plain-a", "plain-b"]]
