"""The delivery gate in the exporter, in memory: an answered delivery writes nothing to the breaker, a batch target
that cannot write opens it once (logged once), realtime tasks wait in new during a window, and closing by hand lets
deliveries resume at once."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from crossdock.engine.exporter import Exporter, ExportSummary
from crossdock.engine.importer import Importer
from crossdock.engine.project import CompiledRoute, Project, load_project
from crossdock.store import TaskFilter
from crossdock.store.memory import MemoryStore
from crossdock.tasks import Status


def project(tmp_path: Path, target: str, extra: str = "", records: int = 20) -> Project:
    (tmp_path / "in.ndjson").write_bytes(b"".join(orjson.dumps({"sku": f"S{i}"}) + b"\n" for i in range(records)))
    (tmp_path / "crossdock.yaml").write_text(
        "routes:\n  r:\n    incoming: {source: {type: file, path: in.ndjson}}\n    identifier: sku\n"
        "    retry: {max_attempts: 5, backoff: 1ms, jitter: 0}\n"
        f"    outgoing:\n      target: {target}\n      circuit: {{failures: 3, cooldown: 1h}}\n{extra}"
    )
    return load_project(tmp_path / "crossdock.yaml")


def run(proj: Project, store: MemoryStore, *, incoming: bool = True) -> ExportSummary:
    async def go() -> ExportSummary:
        exporter = Exporter(proj, store)

        async def realtime(route: CompiledRoute, ids: list[int]) -> None:
            await exporter.deliver_claimed(route, store.get_tasks(ids))

        try:
            if incoming:
                await Importer(proj, store, worker=exporter.worker, on_realtime=realtime).run_route("r")
            return await exporter.run_route("r")
        finally:
            await exporter.close()

    return asyncio.run(go())


class CountingStore(MemoryStore):
    """Counts the breaker writes the engine asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def reset_circuit_failures(self, *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        return super().reset_circuit_failures(*args, **kwargs)

    def record_circuit_failures(self, *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        return super().record_circuit_failures(*args, **kwargs)


def test_answered_deliveries_write_nothing_to_the_breaker(tmp_path: Path) -> None:
    proj = project(tmp_path, "{type: noop}")
    store = CountingStore()
    summary = run(proj, store)
    assert summary.by_status == {"finished": 20} and summary.held is None
    assert store.writes == 0 and store.circuits() == {}, "counting answers is free: no call, no row"


def test_a_target_that_cannot_write_opens_the_breaker_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "blocker").write_text("a file where the target wants a folder")
    proj = project(tmp_path, "{type: file, path: blocker/out.ndjson, mode: append}")
    store = MemoryStore()
    with caplog.at_level(logging.INFO, logger="crossdock"):
        first = run(proj, store)
        second = run(proj, store, incoming=False)
    # one batch of 20: three outcomes counted against their tasks, the others handed back with their attempts
    assert first.by_status == {"retry": 3} and first.released == 17, first
    assert first.held is not None and first.held.startswith("circuit open for r until ")
    assert second.claimed == 0 and second.held == first.held
    tasks = store.list_tasks(TaskFilter(route="r"), limit=100)[0]
    assert sum(t.attempts for t in tasks) == 3
    released = [line for t in tasks for line in store.task_logs(t.id) if line.phase == "system"]
    assert len(released) == 17 and all(
        line.message.startswith("circuit open for r: cannot write ") for line in released
    )
    opened = [r.getMessage() for r in caplog.records if r.getMessage().startswith("circuit r open")]
    assert len(opened) == 1, opened
    # a person closes it: the next run delivers again (and, the target still failing, opens it again)
    assert store.close_circuit("r", now=datetime.now(UTC), by="alice") is not None
    third = run(proj, store, incoming=False)
    assert third.claimed > 0 and third.by_status == {"retry": 3}, third


def test_realtime_tasks_wait_in_new_while_a_window_covers_now(tmp_path: Path) -> None:
    start = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    end = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    proj = project(
        tmp_path,
        "{type: noop}",
        f"    realtime: true\n    maintenance:\n      - {{from: '{start}', to: '{end}'}}\n",
        records=5,
    )
    store = MemoryStore()
    summary = run(proj, store)
    assert summary.claimed == 0 and summary.held is not None and summary.held.startswith("in maintenance until ")
    tasks = store.list_tasks(TaskFilter(route="r"), limit=100)[0]
    assert [(t.status, t.attempts) for t in tasks] == [(Status.NEW, 0)] * 5
    line = store.task_logs(tasks[0].id)[-1]
    assert line.message.startswith("not delivered now: in maintenance until ") and line.to_status is Status.NEW
