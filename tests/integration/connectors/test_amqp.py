"""The AMQP target and source against the machine's RabbitMQ (loopback), through the real importer and exporter.

An unreachable broker is simulated with a closed port, never by stopping the broker. Each test uses its own queues
and exchanges and deletes them. RabbitMQ not running skips these tests locally and fails them under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
import yaml

from crossdock.connectors.amqp import AmqpTarget, AmqpTargetOptions
from crossdock.connectors.base import ConnectorContext
from crossdock.engine.importer import Importer
from crossdock.engine.project import Project, load_project
from crossdock.engine.runner import run_once
from crossdock.errors import TransientError
from crossdock.store import Store, open_store
from crossdock.tasks import Status, Task

BROKER = "amqp://guest:guest@127.0.0.1:5672/"
#: nothing listens here: "connection refused", like a broker that is down
CLOSED = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture(autouse=True)
def rabbitmq() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        why = "RabbitMQ is not reachable on 127.0.0.1:5672"
        if os.environ.get("CI") == "true" or os.environ.get("CROSSDOCK_TEST_REQUIRE_ALL"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"crossdock-test-{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(lambda ch: ch.declare_queue(name, durable=True)))
    yield name
    asyncio.run(_admin(lambda ch: ch.queue_delete(name)))


async def _admin(action: Any) -> Any:
    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        return await action(channel)


def publish(queue: str, bodies: list[bytes]) -> None:
    async def send(channel: Any) -> None:
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)

    asyncio.run(_admin(send))


def drain(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now in the queue (acked: they are gone afterwards)."""

    async def take(channel: Any) -> list[Any]:
        q = await channel.get_queue(queue)
        got = []
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            got.append(message)
        return got

    return list(asyncio.run(_admin(take)))


def ready_count(queue: str) -> int:
    async def count(channel: Any) -> int:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count)

    return int(asyncio.run(_admin(count)))


def write_project(tmp_path: Path, incoming: dict[str, Any], target: dict[str, Any]) -> Project:
    config = {
        "database": f"sqlite:///{tmp_path / 'crossdock.db'}",
        "routes": {
            "orders": {
                "incoming": {"source": incoming},
                "identifier": "id",
                "outgoing": {"target": target},
                "retry": {"max_attempts": 5, "backoff": 0, "jitter": 0},
            }
        },
    }
    (tmp_path / "crossdock.yaml").write_text(yaml.safe_dump(config))
    return load_project(tmp_path / "crossdock.yaml")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'crossdock.db'}")
    yield s
    s.close()


@pytest.fixture
def orders_file(tmp_path: Path) -> dict[str, Any]:
    lines = [orjson.dumps({"id": f"o-{i}", "total": i * 10, "kind": "web"}) for i in range(1, 4)]
    (tmp_path / "orders.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return {"type": "file", "path": "orders.ndjson"}


def statuses(store: Store) -> dict[str, int]:
    return {k: v for k, v in store.stats("orders").by_status.items() if v}


# --- target ----------------------------------------------------------------------------------------------------


def test_broker_down_means_retry_then_delivered_with_confirms(
    tmp_path: Path, store: Store, orders_file: dict[str, Any], queue_name: str
) -> None:
    target = {"type": "amqp", "routing_key": queue_name}
    down = write_project(tmp_path, orders_file, {**target, "url": CLOSED})
    store.ensure_routes(down.routes)
    first = asyncio.run(run_once(down, store, "orders"))
    # backoff 0: a task may come due again within the same pass and be tried twice; each ends in retry
    assert set(first["outgoing"]["by_status"]) == {"retry"}, first
    assert statuses(store) == {"retry": 3}
    task = store.list_tasks(_filter(), limit=1)[0][0]
    assert "cannot reach the AMQP broker" in (task.error or "")

    up = write_project(tmp_path, orders_file, {**target, "url": BROKER})
    second = asyncio.run(run_once(up, store, "orders", incoming=False))
    assert second["outgoing"]["by_status"] == {"finished": 3}
    assert statuses(store) == {"finished": 3}

    messages = drain(queue_name)
    assert sorted(orjson.loads(m.body)["id"] for m in messages) == ["o-1", "o-2", "o-3"]
    ids = {t.identifier: t.id for t in store.list_tasks(_filter(), limit=10)[0]}
    for m in messages:
        body = orjson.loads(m.body)
        assert m.message_id == f"crossdock-orders-{ids[body['id']]}"
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert m.content_type == "application/json"


def test_an_unroutable_message_is_not_finished(tmp_path: Path, store: Store, orders_file: dict[str, Any]) -> None:
    """A returned (mandatory, no binding) message was not delivered: the task goes to retry, never finished."""
    exchange = f"crossdock-test-x-{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(lambda ch: ch.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, auto_delete=False)))
    try:
        project = write_project(
            tmp_path, orders_file, {"type": "amqp", "url": BROKER, "exchange": exchange, "routing_key": "{kind}.new"}
        )
        store.ensure_routes(project.routes)
        result = asyncio.run(run_once(project, store, "orders"))
        assert result["outgoing"]["by_status"] == {"retry": 3}
        assert "returned the message" in (store.list_tasks(_filter(), limit=1)[0][0].error or "")
    finally:
        asyncio.run(_admin(lambda ch: ch.exchange_delete(exchange)))


# when the broker closes the whole connection (a publish raced its closing of the channel), aiormq leaves the
# socket's StreamWriter to the garbage collector; the target reconnects, which is what this test checks
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_missing_exchange_is_not_confirmed_and_the_channel_recovers(queue_name: str) -> None:
    """The broker closes the channel (404): transient; the next delivery opens a fresh channel and succeeds."""
    missing = f"crossdock-no-such-exchange-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[Any]:
        options = AmqpTargetOptions.model_validate(
            {"type": "amqp", "url": BROKER, "exchange": "{ex}", "routing_key": queue_name}
        )
        target = AmqpTarget(options, ConnectorContext())
        await target.open()
        try:
            bad = await target.deliver_batch([(_task(1), {"ex": missing}), (_task(2), {"ex": missing})])
            good = await target.deliver_batch([(_task(3), {"ex": ""})])
            return [*bad, *good]
        finally:
            await target.close()

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, TransientError) for o in outcomes[:2]), outcomes
    assert "NOT_FOUND" in outcomes[0].message or "not_found" in outcomes[0].message.lower()
    assert not isinstance(outcomes[2], Exception), outcomes[2]
    assert len(drain(queue_name)) == 1


def _task(n: int) -> Task:
    return Task(id=n, route="orders", identifier=str(n), status=Status.PROCESSING, entity=None)


def _filter() -> Any:
    from crossdock.store import TaskFilter

    return TaskFilter(route="orders")


# --- source ----------------------------------------------------------------------------------------------------


def source_options(queue: str, **more: Any) -> dict[str, Any]:
    return {"type": "amqp", "url": BROKER, "queue": queue, "idle_timeout": 0.3, "page_size": 2, **more}


def test_source_acks_only_after_the_tasks_are_stored(
    tmp_path: Path, store: Store, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(queue_name, [orjson.dumps({"id": f"m-{i}"}) for i in range(4)] + [b"not json"])
    project = write_project(tmp_path, source_options(queue_name), {"type": "noop"})
    store.ensure_routes(project.routes)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the store went away")

    with monkeypatch.context() as patch:
        patch.setattr(store, "import_batch", broken)
        failed = asyncio.run(Importer(project, store).run_route("orders"))
    assert (failed.status, failed.error) == ("failed", "RuntimeError: the store went away")
    # nothing stored, nothing acked: every message is back in the queue
    assert statuses(store) == {}
    assert ready_count(queue_name) == 5

    summary = asyncio.run(Importer(project, store).run_route("orders"))
    assert summary.status == "ok", summary.error
    assert summary.read == 5
    assert statuses(store) == {"new": 4, "rejected": 1}
    assert ready_count(queue_name) == 0


def test_source_run_is_bounded_by_max_messages(tmp_path: Path, store: Store, queue_name: str) -> None:
    publish(queue_name, [orjson.dumps({"id": f"m-{i}"}) for i in range(5)])
    project = write_project(tmp_path, source_options(queue_name, max_messages=3), {"type": "noop"})
    store.ensure_routes(project.routes)
    first = asyncio.run(Importer(project, store).run_route("orders"))
    assert first.read == 3
    assert ready_count(queue_name) == 2
    second = asyncio.run(Importer(project, store).run_route("orders"))
    assert second.read == 2
    assert ready_count(queue_name) == 0
    # an empty queue ends the run after idle_timeout, with nothing read
    assert asyncio.run(Importer(project, store).run_route("orders")).read == 0


def test_source_missing_queue_fails_the_run(tmp_path: Path, store: Store) -> None:
    project = write_project(tmp_path, source_options(f"crossdock-missing-{uuid.uuid4().hex[:8]}"), {"type": "noop"})
    store.ensure_routes(project.routes)
    summary = asyncio.run(Importer(project, store).run_route("orders"))
    assert summary.status == "failed"
    assert "no queue" in (summary.error or "")


def test_source_broker_down_fails_the_run(tmp_path: Path, store: Store) -> None:
    project = write_project(tmp_path, {**source_options("q"), "url": CLOSED}, {"type": "noop"})
    store.ensure_routes(project.routes)
    summary = asyncio.run(Importer(project, store).run_route("orders"))
    assert summary.status == "failed"
    assert "cannot consume" in (summary.error or "")
