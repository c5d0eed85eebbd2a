"""The worker in-process on the memory store: it drains continuous routes, honours active, and stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from crossdock.engine.exporter import Exporter
from crossdock.engine.importer import Importer
from crossdock.engine.project import Project, load_project
from crossdock.engine.worker import Worker
from crossdock.store.base import Settlement
from crossdock.store.memory import MemoryStore
from crossdock.tasks import Action


def setup(tmp_path: Path, n: int) -> tuple[Project, MemoryStore]:
    with (tmp_path / "d.ndjson").open("wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"sku": f"S{i}"}) + b"\n")
    (tmp_path / "crossdock.yaml").write_text(
        "routes:\n  r:\n    incoming: {source: {type: file, path: d.ndjson}}\n    identifier: sku\n"
        "    outgoing: {target: {type: noop}}\n",
        encoding="utf-8",
    )
    project = load_project(tmp_path / "crossdock.yaml")
    store = MemoryStore()
    store.ensure_routes(project.routes)
    return project, store


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_worker_delivers_new_tasks_and_stops(tmp_path: Path) -> None:
    project, store = setup(tmp_path, 40)
    worker = Worker(project, store, concurrency=2, idle_max=0.05)
    runner = asyncio.create_task(worker.run(grace=1))
    await asyncio.sleep(0.05)
    # tasks imported while the worker is running are picked up without a schedule
    await Importer(project, store).run_route("r")
    await _until(lambda: store.stats("r").by_status["finished"] == 40)
    worker.stop()
    report = await asyncio.wait_for(runner, 5)
    await worker.exporter.close()
    assert report.by_status == {"finished": 40}
    assert store.stats("r").by_status["processing"] == 0


async def test_worker_leaves_an_inactive_route_alone(tmp_path: Path) -> None:
    project, store = setup(tmp_path, 5)
    await Importer(project, store).run_route("r")
    store.set_route_active("r", False, now=datetime.now(UTC))
    worker = Worker(project, store, idle_max=0.05)
    runner = asyncio.create_task(worker.run(grace=1))
    await asyncio.sleep(0.3)
    worker.stop()
    report = await asyncio.wait_for(runner, 5)
    await worker.exporter.close()
    assert report.delivered == 0
    assert store.stats("r").by_status["new"] == 5


async def test_a_stopping_exporter_gives_claims_back_where_they_came_from(tmp_path: Path) -> None:
    """Unstarted claims go back to new, and those claimed from retry back to retry with their attempts."""
    project, store = setup(tmp_path, 4)
    await Importer(project, store).run_route("r")
    now = datetime.now(UTC)
    first = store.claim_due_tasks("r", 2, worker="w", lease_until=now + timedelta(minutes=1), now=now)
    store.settle(
        [Settlement(t.id, Action.SCHEDULE_RETRY, "w", error="HTTP 503", next_attempt_at=now) for t in first], now=now
    )
    claimed = store.claim_due_tasks("r", 4, worker="w", lease_until=now + timedelta(minutes=1), now=now)
    assert sorted(t.claimed_from.value for t in claimed) == ["new", "new", "retry", "retry"]  # type: ignore[union-attr]
    exporter = Exporter(project, store, worker="w")
    exporter.stop()
    summary = await exporter.deliver_claimed(project.route("r"), claimed)
    assert summary.released == 4
    back = {t.id: (t.status, t.attempts) for t in store.get_tasks([t.id for t in claimed])}
    assert back == {t.id: (t.claimed_from, t.attempts - 1) for t in claimed}
    assert store.stats("r").by_status["retry"] == 2
