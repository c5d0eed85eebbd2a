"""Tracing in the web app: a webhook continues its caller's trace; a realtime route's delivery, made before the
answer, nests under the import of that request; a refused request's span says so."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from webenv import HOOK_SECRET, Env

from crossdock import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.shutdown()
    provider.shutdown()


def test_a_realtime_delivery_nests_under_the_webhook_request(env: Env, spans: InMemorySpanExporter) -> None:
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    reply = env.client.post(
        "/api/v1/webhooks/live-hook",
        content=orjson.dumps([{"sku": "T-1"}, {"sku": "T-2"}]),
        headers={"X-Crossdock-Secret": HOOK_SECRET, "traceparent": f"00-{trace_id}-{caller}-01"},
    )
    assert reply.status_code == 202, reply.text
    done = spans.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in done} == {trace_id}
    (hook,) = [s for s in done if s.kind is SpanKind.SERVER]
    (imported,) = [s for s in done if s.name == "import live-hook"]
    delivered = [s for s in done if s.name == "deliver live-hook"]
    assert hook.parent is not None and f"{hook.parent.span_id:016x}" == caller
    assert hook.attributes is not None and hook.attributes["http.response.status_code"] == 202
    assert imported.parent is not None and imported.parent.span_id == hook.context.span_id
    assert imported.attributes is not None and imported.attributes["crossdock.tasks.new"] == 2
    assert len(delivered) == 2
    for span in delivered:
        assert span.parent is not None and span.parent.span_id == imported.context.span_id
        assert span.attributes is not None and span.attributes["crossdock.task.status"] == "finished"
    assert sorted(s.attributes["crossdock.task.identifier"] for s in delivered if s.attributes) == ["T-1", "T-2"]


def test_a_refused_request_has_a_span_with_its_status(env: Env, spans: InMemorySpanExporter) -> None:
    reply = env.client.post("/api/v1/webhooks/hook", json={"sku": "X"}, headers={"X-Crossdock-Secret": "wrong"})
    assert reply.status_code == 401
    (hook,) = spans.get_finished_spans()
    assert hook.attributes is not None and hook.attributes["http.response.status_code"] == 401
    assert hook.status.status_code is not StatusCode.ERROR  # the caller's mistake, not the server's


def test_tracing_off_changes_nothing(env: Env) -> None:
    assert not tracing.active()
    reply = env.client.post(
        "/api/v1/webhooks/live-hook", json={"sku": "O-1"}, headers={"X-Crossdock-Secret": HOOK_SECRET}
    )
    assert reply.status_code == 202
