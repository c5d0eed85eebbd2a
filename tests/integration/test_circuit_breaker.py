"""A circuit breaker against a target that really refuses connections (a loopback port nobody listens on), which
then comes back (a mock shop started on that port): the breaker opens after ``failures``, the target sees no
request during the cooldown, no task fails or spends an attempt while it is open, and everything is delivered once
the target is back. A second store object on the same database (SQLite, PostgreSQL) plays a second process."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from crossdock.engine.exporter import Exporter, ExportSummary
from crossdock.engine.importer import Importer
from crossdock.engine.project import Project, load_project
from crossdock.mock import RunningShop, start_shop
from crossdock.store import Store, TaskFilter, open_store
from crossdock.store.events import CircuitClosed, CircuitOpened, LedgerEvent
from crossdock.tasks import Status, Task

TASKS = 20
FAILURES = 3
COOLDOWN = 1.0


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def port() -> int:
    return closed_port()


@pytest.fixture
def project(tmp_path: Path, port: int) -> Project:
    (tmp_path / "in.ndjson").write_bytes(b"".join(orjson.dumps({"sku": f"SKU-{i:03d}"}) + b"\n" for i in range(TASKS)))
    (tmp_path / "crossdock.yaml").write_text(
        f"""\
connections:
  shop:
    type: http
    base_url: http://127.0.0.1:{port}
    connect_timeout: 2s
    circuit: {{failures: {FAILURES}, cooldown: {COOLDOWN}s}}
routes:
  r:
    incoming: {{source: {{type: file, path: in.ndjson}}}}
    identifier: sku
    retry: {{max_attempts: 10, backoff: 1ms, jitter: 0}}
    outgoing:
      target: {{type: http, connection: shop, method: PUT, path: "/products/{{sku}}"}}
      concurrency: 4
"""
    )
    return load_project(tmp_path / "crossdock.yaml", environ={})


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, project: Project) -> str:
    """Where every store object of the test (every "process") keeps the breaker."""
    if request.param == "sqlite":
        return f"sqlite:///{project.root / 'crossdock.db'}"
    from postgres_support import database_for

    return database_for(project.root)


@pytest.fixture
def store(database: str, project: Project) -> Iterator[Store]:
    s = open_store(database)
    s.ensure_routes(project.routes)
    yield s
    s.close()


def export(project: Project, store: Store) -> ExportSummary:
    async def go() -> ExportSummary:
        exporter = Exporter(project, store)
        try:
            return await exporter.run_route("r")
        finally:
            await exporter.close()

    return asyncio.run(go())


def tasks(store: Store) -> list[Task]:
    return store.list_tasks(TaskFilter(route="r"), limit=1000)[0]


def test_the_breaker_opens_holds_back_every_task_without_spending_attempts_and_closes_once_the_target_is_back(
    project: Project, store: Store, port: int, database: str
) -> None:
    heard: list[LedgerEvent] = []
    store.events.subscribe(heard.append)

    async def load() -> None:
        await Importer(project, store).run_route("r")

    asyncio.run(load())
    first = export(project, store)
    # exactly `failures` deliveries were counted against their tasks; the others never started, or failed after the
    # breaker had opened and went back without the attempt
    assert first.by_status == {"retry": FAILURES}, first
    assert first.held is not None and first.held.startswith("circuit open for shop until "), first.held
    assert first.released == TASKS - FAILURES
    found = tasks(store)
    assert sum(t.attempts for t in found) == FAILURES
    assert {t.status for t in found} == {Status.NEW, Status.RETRY}
    row = store.circuits()["shop"]
    # in-flight deliveries that failed after the open add to the count, never to their tasks' attempts
    assert row.state == "open" and row.failures >= FAILURES
    assert row.last_error is not None and "cannot connect" in row.last_error
    assert row.open_until is not None
    assert [type(e) for e in heard if isinstance(e, CircuitOpened | CircuitClosed)] == [CircuitOpened]

    shop: RunningShop = start_shop(port=port)
    try:
        # the target is back, but the cooldown is not over: nothing is sent to it, by this process or another
        other = open_store(database)
        try:
            held_runs = 0
            # runs take milliseconds: a margin keeps each inside the cooldown it is meant to look at
            while datetime.now(UTC) < row.open_until - timedelta(seconds=0.3):
                for s in (store, other):
                    during = export(project, s)
                    assert during.claimed == 0 and during.held is not None, during
                    assert during.held.startswith("circuit open for shop until "), during.held
                    held_runs += 1
                time.sleep(0.05)
        finally:
            other.close()
        assert held_runs >= 2, "the machine was too slow to look inside the cooldown"
        assert shop.stats()["requests"] == 0
        assert sum(t.attempts for t in tasks(store)) == FAILURES
        # after the cooldown one probe goes; it is answered, so the breaker closes and the rest follow
        time.sleep(max((row.open_until - datetime.now(UTC)).total_seconds(), 0.0))
        last = export(project, store)
        assert last.held is None, last
        assert last.by_status == {"finished": TASKS}, last
        assert shop.stats()["requests"] == TASKS
    finally:
        shop.stop()
    found = tasks(store)
    assert {t.status for t in found} == {Status.FINISHED}
    # one failed attempt each for the tasks the breaker counted, one delivery for everything
    assert sorted(t.attempts for t in found) == [1] * (TASKS - FAILURES) + [2] * FAILURES
    for task in found:
        assert "failed" not in {line.to_status for line in store.task_logs(task.id)}
    row = store.circuits()["shop"]
    assert (row.state, row.failures, row.open_until) == ("closed", 0, None)
    assert [type(e) for e in heard if isinstance(e, CircuitOpened | CircuitClosed)] == [CircuitOpened, CircuitClosed]


def test_a_probe_that_fails_opens_it_again_and_still_no_task_fails(project: Project, store: Store) -> None:
    async def load() -> None:
        await Importer(project, store).run_route("r")

    asyncio.run(load())
    export(project, store)
    opened = store.circuits()["shop"]
    assert opened.open_until is not None
    time.sleep(max((opened.open_until - datetime.now(UTC)).total_seconds(), 0) + 0.05)
    probe = export(project, store)
    assert probe.claimed == 1 and probe.by_status == {"retry": 1}, probe
    assert probe.held is not None and probe.held.startswith("circuit open for shop until ")
    again = store.circuits()["shop"]
    assert again.state == "open" and again.open_until is not None and again.open_until > opened.open_until
    assert sum(t.attempts for t in tasks(store)) == FAILURES + 1
    assert store.stats("r").by_status["failed"] == 0


def test_tasks_released_by_the_breaker_say_why_in_their_timeline(project: Project, store: Store) -> None:
    async def load() -> None:
        await Importer(project, store).run_route("r")

    asyncio.run(load())
    export(project, store)
    lines = [line for t in tasks(store) for line in store.task_logs(t.id) if line.phase == "system"]
    assert lines, "the tasks the breaker held back went back with a line each"
    for line in lines:
        assert line.to_status in ("new", "retry")
        assert line.message == "released unstarted" or line.message.startswith("circuit open for shop: "), line


def switch_to(project: Project, shop: RunningShop) -> Project:
    """The same project, its connection pointing at ``shop``."""
    path = project.root / "crossdock.yaml"
    text = path.read_text()
    old = next(line for line in text.splitlines() if "base_url:" in line)
    path.write_text(text.replace(old, f"    base_url: {shop.url}"))
    return load_project(path, environ={})


def test_once_open_no_further_request_starts(project: Project, store: Store) -> None:
    with start_shop(failures={"always_status": 503}) as shop:
        project = switch_to(project, shop)

        async def load() -> None:
            await Importer(project, store).run_route("r")

        asyncio.run(load())
        first = export(project, store)
        # the 503s that were already on the wire when the third came back are the only others it sees
        assert FAILURES <= shop.stats()["requests"] < FAILURES + 4, shop.stats()
        assert first.by_status == {"retry": FAILURES}
        assert sum(t.attempts for t in tasks(store)) == FAILURES


def test_a_permanent_refusal_is_an_answer_not_a_breaker_failure(project: Project, store: Store) -> None:
    with start_shop(failures={"always_status": 422}) as shop:
        project = switch_to(project, shop)

        async def load() -> None:
            await Importer(project, store).run_route("r")

        asyncio.run(load())
        first = export(project, store)
    assert first.by_status == {"failed": TASKS} and first.held is None, first
    assert store.circuits().get("shop") is None, "nothing counted, nothing written"
