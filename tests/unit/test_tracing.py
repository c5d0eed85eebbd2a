"""crossdock.tracing on its own: when it is on, what it costs when off, and the batch targets' traceparent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crossdock import tracing
from crossdock.store.memory import MemoryStore
from crossdock.tasks import Status, Task


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.shutdown()
    provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_traces_only_when_the_environment_asks(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(environ) is wanted


def test_off_it_imports_no_opentelemetry_and_starts_nothing() -> None:
    code = (
        "import sys, threading\n"
        "import crossdock.engine.importer, crossdock.engine.exporter, crossdock.connectors.http\n"
        "import crossdock.connectors.amqp, crossdock.tracing as t\n"
        "threads = threading.active_count()\n"
        "with t.session() as on:\n"
        "    assert not on and not t.active()\n"
        "    h = {}; t.inject(h); assert h == {}\n"
        "assert threading.active_count() == threads\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_console_exporter_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-sync")
    try:
        assert tracing.setup()
        assert tracing.active()
        assert tracing._provider.resource.attributes["service.name"] == "shop-sync"
    finally:
        tracing.shutdown()
    assert not tracing.active()


def test_batch_targets_get_each_tasks_own_traceparent(spans: InMemorySpanExporter) -> None:
    """AMQP publishes a batch from one call: each message carries its own task's delivery span."""
    store = MemoryStore()
    store.upgrade()
    run_id = store.start_run("r", "incoming", actor="test", now=_now())
    imported = tracing.start_import(store, "r", ["r"], [run_id])
    assert imported is not None
    imported.span.end()
    tracing._detach(imported.token)
    tracing._runs.clear()  # as in another process: the context comes from the store
    tasks = [Task(i, "r", f"SKU-{i}", Status.PROCESSING, {}, attempts=1, run_id=run_id) for i in (1, 2)]
    deliveries = asyncio.run(tracing.deliveries(store, "r", "amqp", tasks, None))
    started = [deliveries.start(t, batch=True) for t in tasks]
    headers = [{} for _ in tasks]
    for h, t in zip(headers, tasks, strict=True):
        tracing.inject(h, t)
    for span, t in zip(started, tasks, strict=True):
        deliveries.end(span, t, None, "finished")
    done = {s.name + str(s.attributes.get("crossdock.task.id", "")): s for s in spans.get_finished_spans()}
    trace_id = done["import r"].context.trace_id
    for h, t in zip(headers, tasks, strict=True):
        span = done[f"deliver r{t.id}"]
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == done["import r"].context.span_id
        assert h["traceparent"].startswith(f"00-{trace_id:032x}-{span.context.span_id:016x}-")
    assert tracing._batch == {}


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)
